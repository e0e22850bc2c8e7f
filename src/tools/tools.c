/* Built-in tools (see tools.h). */
#include "tools/tools.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/json.h"

#define STR_ARRAY "{\"type\":\"array\",\"items\":{\"type\":\"string\"}}"

static int exec_current_time(const char *args, size_t len, ag_buf *out) {
  (void)args;
  (void)len;
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  char when[64];
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return ag_buf_appendf(out, "{\"utc\":\"%s\",\"unix\":%lld}", when, (long long)now);
}

static int exec_text_stats(const char *args, size_t len, ag_buf *out) {
  ag_json *j = ag_json_parse(args, len, NULL, 0);
  const char *text = ag_json_get_str(j, "text");
  if (!text) {
    ag_json_free(j);
    int rc = ag_buf_append_str(out, "error: argument \"text\" (string) is required");
    return rc < 0 ? rc : AG_EINVAL;
  }
  size_t n = ag_json_str_len(ag_json_get(j, "text"));
  size_t words = 0, lines = n ? 1 : 0, chars = 0;
  int in_word = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)text[i];
    if ((c & 0xC0) != 0x80) chars++; /* count UTF-8 code points, not bytes */
    if (c == '\n') lines++;
    if (isspace(c)) {
      in_word = 0;
    } else if (!in_word) {
      in_word = 1;
      words++;
    }
  }
  ag_json_free(j);
  return ag_buf_appendf(out, "{\"characters\":%zu,\"words\":%zu,\"lines\":%zu}", chars, words, lines);
}

/* The planning tools of sgr-agent-core's research agents. They change nothing: the plan is
 * recorded in the conversation (the tool call and this result), which is where the model looks
 * for it on later steps. The arguments are checked here as well as by the registry's schema, so
 * a caller that skips the schema still gets a clear error. */
typedef struct arg_spec {
  const char *key;
  bool is_list;                /* an array of strings, else a string */
  size_t min_items, max_items; /* for lists; max 0 = no cap */
} arg_spec;

static int bad_args(ag_buf *out, const char *fmt, ...) AG_PRINTF(2, 3);
static int bad_args(ag_buf *out, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = ag_buf_append_str(out, "error: ");
  if (rc == 0) rc = ag_buf_vappendf(out, fmt, ap);
  va_end(ap);
  return rc == AG_ENOMEM ? rc : AG_EINVAL;
}

/* Parses args into *obj and checks it has exactly the fields of spec. On failure out says why. */
static int check_args(const char *args, size_t len, const arg_spec *spec, size_t n, ag_json **obj, ag_buf *out) {
  *obj = NULL;
  ag_json *j = ag_json_parse(args, len, NULL, 0);
  if (!ag_json_is(j, AG_JSON_OBJECT)) {
    ag_json_free(j);
    return bad_args(out, "the arguments must be a JSON object");
  }
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const ag_json *v = ag_json_get(j, spec[i].key);
    if (!spec[i].is_list) {
      if (!ag_json_is(v, AG_JSON_STRING)) rc = bad_args(out, "argument \"%s\" (string) is required", spec[i].key);
      continue;
    }
    size_t items = ag_json_len(v);
    if (!ag_json_is(v, AG_JSON_ARRAY)) {
      rc = bad_args(out, "argument \"%s\" (array of strings) is required", spec[i].key);
    } else if (items < spec[i].min_items || (spec[i].max_items && items > spec[i].max_items)) {
      rc = bad_args(out, "argument \"%s\" must have %zu to %zu items, not %zu", spec[i].key, spec[i].min_items,
                    spec[i].max_items, items);
    } else {
      for (size_t k = 0; rc == 0 && k < items; k++)
        if (!ag_json_is(ag_json_at(v, k), AG_JSON_STRING))
          rc = bad_args(out, "argument \"%s\": item %zu must be a string", spec[i].key, k);
    }
  }
  for (void *it = ag_json_iter(j); rc == 0 && it; it = ag_json_iter_next(j, it)) {
    const char *k = ag_json_iter_key(it);
    size_t i = 0;
    while (i < n && strcmp(spec[i].key, k) != 0)
      i++;
    if (i == n) rc = bad_args(out, "unknown argument \"%.64s\"", k);
  }
  if (rc < 0) {
    ag_json_free(j);
    return rc;
  }
  *obj = j;
  return 0;
}

/* Appends the strings of a list, one per line, numbered ("1. ") or bulleted ("- "). */
static int append_list(ag_buf *out, const ag_json *list, bool numbered) {
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < ag_json_len(list); i++) {
    const char *s = ag_json_str(ag_json_at(list, i));
    rc = numbered ? ag_buf_appendf(out, "\n%zu. %s", i + 1, s) : ag_buf_appendf(out, "\n- %s", s);
  }
  return rc;
}

/* Moves the text built in `text` to out. A result longer than out's cap is cut (on a character
 * boundary) rather than failed: its start says what matters. */
static int emit_text(ag_buf *out, ag_buf *text, int rc) {
  if (rc == 0 || rc == AG_ETOOBIG) {
    size_t room = out->max > out->len ? out->max - out->len : 0;
    size_t n = text->len <= room ? text->len : ag_utf8_cut(ag_buf_cstr(text), room);
    rc = ag_buf_append(out, ag_buf_cstr(text), n);
  }
  ag_buf_deinit(text);
  return rc == AG_ETOOBIG ? 0 : rc;
}

/* Big enough for any plan the schemas allow to be useful; a longer one is cut by emit_text. */
#define PLAN_TEXT_MAX (64u * 1024)

static const arg_spec plan_args[] = {
    {"reasoning", false, 0, 0},
    {"research_goal", false, 0, 0},
    {"planned_steps", true, 1, 8},
    {"search_strategies", true, 0, 5},
};

static int exec_generate_plan(const char *args, size_t len, ag_buf *out) {
  ag_json *j;
  int rc = check_args(args, len, plan_args, AG_ARRAY_LEN(plan_args), &j, out);
  if (rc < 0) return rc;
  ag_buf text;
  ag_buf_init(&text, PLAN_TEXT_MAX);
  rc = ag_buf_appendf(&text, "Plan recorded: %s", ag_json_get_str(j, "research_goal"));
  if (rc == 0) rc = append_list(&text, ag_json_get(j, "planned_steps"), true);
  const ag_json *strategies = ag_json_get(j, "search_strategies");
  if (rc == 0 && ag_json_len(strategies) > 0) rc = ag_buf_append_str(&text, "\nSearch strategies:");
  if (rc == 0) rc = append_list(&text, strategies, false);
  ag_json_free(j);
  return emit_text(out, &text, rc);
}

static const arg_spec adapt_args[] = {
    {"reasoning", false, 0, 0},   {"original_goal", false, 0, 0}, {"new_goal", false, 0, 0},
    {"plan_changes", true, 0, 0}, {"next_steps", true, 0, 0},
};

static int exec_adapt_plan(const char *args, size_t len, ag_buf *out) {
  ag_json *j;
  int rc = check_args(args, len, adapt_args, AG_ARRAY_LEN(adapt_args), &j, out);
  if (rc < 0) return rc;
  ag_buf text;
  ag_buf_init(&text, PLAN_TEXT_MAX);
  const char *from = ag_json_get_str(j, "original_goal"), *to = ag_json_get_str(j, "new_goal");
  if (strcmp(from, to) == 0)
    rc = ag_buf_appendf(&text, "Plan adapted; the goal is still: %s", to);
  else
    rc = ag_buf_appendf(&text, "Plan adapted. Goal was: %s\nGoal now: %s", from, to);
  const ag_json *changes = ag_json_get(j, "plan_changes"), *next = ag_json_get(j, "next_steps");
  if (rc == 0 && ag_json_len(changes) > 0) rc = ag_buf_append_str(&text, "\nChanges:");
  if (rc == 0) rc = append_list(&text, changes, false);
  if (rc == 0 && ag_json_len(next) > 0) rc = ag_buf_append_str(&text, "\nNext steps:");
  if (rc == 0) rc = append_list(&text, next, true);
  ag_json_free(j);
  return emit_text(out, &text, rc);
}

static const ag_tool builtin_tools[] = {
    {"reasoning_tool", "Record your reasoning: the situation, the plan, and whether enough data has been gathered.",
     "{\"type\":\"object\",\"properties\":{"
     "\"reasoning_steps\":" STR_ARRAY ",\"current_situation\":{\"type\":\"string\"},"
     "\"plan_status\":{\"type\":\"string\"},\"enough_data\":{\"type\":\"boolean\"},"
     "\"remaining_steps\":" STR_ARRAY ",\"task_completed\":{\"type\":\"boolean\"}},"
     "\"required\":[\"reasoning_steps\",\"current_situation\",\"plan_status\",\"enough_data\","
     "\"remaining_steps\",\"task_completed\"],\"additionalProperties\":false}",
     AG_TOOL_REASONING, false, true, NULL},
    {"final_answer_tool", "Give the final answer to the user and finish the task.",
     "{\"type\":\"object\",\"properties\":{\"reasoning\":{\"type\":\"string\"},"
     "\"completed_steps\":" STR_ARRAY ",\"answer\":{\"type\":\"string\"},"
     "\"status\":{\"type\":\"string\",\"enum\":[\"completed\",\"failed\"]}},"
     "\"required\":[\"reasoning\",\"completed_steps\",\"answer\",\"status\"],\"additionalProperties\":false}",
     AG_TOOL_FINAL_ANSWER, false, true, NULL},
    {"clarification_tool",
     "Ask the user clarifying questions when the request is ambiguous; the task pauses "
     "until the user answers.",
     "{\"type\":\"object\",\"properties\":{\"reasoning\":{\"type\":\"string\"},"
     "\"unclear_terms\":" STR_ARRAY ",\"assumptions\":" STR_ARRAY ",\"questions\":" STR_ARRAY "},"
     "\"required\":[\"reasoning\",\"unclear_terms\",\"assumptions\",\"questions\"],\"additionalProperties\":false}",
     AG_TOOL_CLARIFICATION, false, true, NULL},
    {"current_time", "Get the current date and time in UTC.",
     "{\"type\":\"object\",\"properties\":{},\"required\":[],\"additionalProperties\":false}", AG_TOOL_PLAIN, false,
     true, exec_current_time},
    {"text_stats", "Count the characters, words and lines of a text.",
     "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\",\"description\":\"The text to measure\"}},"
     "\"required\":[\"text\"],\"additionalProperties\":false}",
     AG_TOOL_PLAIN, false, true, exec_text_stats},
    {"generate_plan_tool",
     "Write down a research plan before you start: the goal, up to eight concrete steps in order, and the "
     "search strategies you mean to use. If the plan has to change later, use adapt_plan_tool.",
     "{\"type\":\"object\",\"properties\":{\"reasoning\":{\"type\":\"string\",\"description\":\"Why this plan fits "
     "the request\"},\"research_goal\":{\"type\":\"string\",\"description\":\"What the research must establish\"},"
     "\"planned_steps\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"minItems\":1,\"maxItems\":8},"
     "\"search_strategies\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":5}},"
     "\"required\":[\"reasoning\",\"research_goal\",\"planned_steps\",\"search_strategies\"],"
     "\"additionalProperties\":false}",
     AG_TOOL_PLAIN, false, true, exec_generate_plan},
    {"adapt_plan_tool",
     "Revise the research plan when what you found changes the direction: the goal you had, the goal you have "
     "now, what changes in the plan, and the next steps.",
     "{\"type\":\"object\",\"properties\":{\"reasoning\":{\"type\":\"string\",\"description\":\"What was found "
     "that calls for a change\"},\"original_goal\":{\"type\":\"string\"},\"new_goal\":{\"type\":\"string\"},"
     "\"plan_changes\":" STR_ARRAY ",\"next_steps\":" STR_ARRAY "},"
     "\"required\":[\"reasoning\",\"original_goal\",\"new_goal\",\"plan_changes\",\"next_steps\"],"
     "\"additionalProperties\":false}",
     AG_TOOL_PLAIN, false, true, exec_adapt_plan},
};

const ag_tool *ag_tools_all(size_t *n) {
  *n = AG_ARRAY_LEN(builtin_tools);
  return builtin_tools;
}

void ag_tools_normalize(const char *name, char *out, size_t outlen) {
  size_t k = 0;
  for (const char *p = name; *p && k + 1 < outlen; p++) {
    if (*p == '_' || *p == '-' || *p == ' ') continue;
    out[k++] = (char)tolower((unsigned char)*p);
  }
  out[k] = '\0';
  if (k > 4 && strcmp(out + k - 4, "tool") == 0) out[k - 4] = '\0';
}

const ag_tool *ag_tools_find(const char *name) {
  if (!name) return NULL;
  char want[128], have[128];
  ag_tools_normalize(name, want, sizeof want);
  for (size_t i = 0; i < AG_ARRAY_LEN(builtin_tools); i++) {
    ag_tools_normalize(builtin_tools[i].name, have, sizeof have);
    if (strcmp(want, have) == 0) return &builtin_tools[i];
  }
  return NULL;
}

static ag_json *parse_obj(const char *args) {
  ag_json *j = args ? ag_json_parse(args, strlen(args), NULL, 0) : NULL;
  if (j && !ag_json_is(j, AG_JSON_OBJECT)) {
    ag_json_free(j);
    return NULL;
  }
  return j;
}

char *ag_tools_arg_string(const char *args, const char *key) {
  ag_json *j = parse_obj(args);
  char *v = ag_strdup(ag_json_get_str(j, key));
  ag_json_free(j);
  return v;
}

int ag_tools_parse_final_answer(const char *args, ag_final_answer *out) {
  memset(out, 0, sizeof *out);
  ag_json *j = parse_obj(args);
  if (!j) return AG_EINVAL;
  const char *answer = ag_json_get_str(j, "answer");
  const char *status = ag_json_get_str(j, "status");
  int rc = AG_EINVAL;
  if (answer) {
    out->answer = strdup(answer);
    out->failed = status && strcmp(status, "failed") == 0;
    rc = out->answer ? 0 : AG_ENOMEM;
  }
  ag_json_free(j);
  return rc;
}

void ag_final_answer_deinit(ag_final_answer *fa) {
  free(fa->answer);
  fa->answer = NULL;
}

int ag_tools_parse_clarification(const char *args, char **questions) {
  *questions = NULL;
  ag_json *j = parse_obj(args);
  if (!j) return AG_EINVAL;
  ag_json *qs = ag_json_get(j, "questions");
  ag_buf b;
  ag_buf_init(&b, 64 * 1024);
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < ag_json_len(qs); i++) {
    const char *q = ag_json_str(ag_json_at(qs, i));
    if (!q) continue;
    if (b.len) rc = ag_buf_append_char(&b, '\n');
    if (rc == 0) rc = ag_buf_append_str(&b, q);
  }
  if (rc == 0 && b.len == 0) {
    /* A question-less clarification still has to tell the user something. */
    const char *r = ag_json_get_str(j, "reasoning");
    rc = ag_buf_append_str(&b, r && *r ? r : "Could you clarify your request?");
  }
  ag_json_free(j);
  if (rc < 0) {
    ag_buf_deinit(&b);
    return rc;
  }
  *questions = ag_buf_take(&b);
  return *questions ? 0 : AG_ENOMEM;
}

char *ag_tools_reasoning_summary(const char *args) {
  ag_json *j = parse_obj(args);
  if (!j) return ag_strdup(args ? args : "");
  ag_buf b;
  ag_buf_init(&b, 16 * 1024);
  const char *sit = ag_json_get_str(j, "current_situation");
  const char *plan = ag_json_get_str(j, "plan_status");
  ag_json *steps = ag_json_get(j, "remaining_steps");
  int rc = 0;
  if (sit && *sit) rc = ag_buf_append_str(&b, sit);
  if (rc == 0 && plan && *plan) rc = ag_buf_appendf(&b, "%s%s", b.len ? " | plan: " : "plan: ", plan);
  for (size_t i = 0; rc == 0 && i < ag_json_len(steps); i++) {
    const char *s = ag_json_str(ag_json_at(steps, i));
    if (s) rc = ag_buf_appendf(&b, "%s%s", i == 0 ? (b.len ? " | next: " : "next: ") : "; ", s);
  }
  ag_json_free(j);
  if (rc < 0) {
    ag_buf_deinit(&b);
    return ag_strdup("(reasoning)");
  }
  return ag_buf_take(&b);
}
