/* Built-in tools (see tools.h). */
#include "tools/tools.h"

#include <ctype.h>
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
