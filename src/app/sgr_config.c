/* sgr-agent-core configuration import (see sgr_config.h).
 *
 * The global configuration and each agent are read as a "level": the sections it has (llm and
 * its old spelling openai, search, execution and its old spelling context, prompts, mcp), the
 * folder its prompt files are relative to, and how messages name it. A mapped value is taken
 * from the first level, and the first section of that level, that sets it (null means "not
 * set"), so agent values override global ones key by key. Warnings come from the level where a
 * key is written, so a global api_key is reported once, not once per agent. */
#include "app/sgr_config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/yaml_json.h"
#include "base/buf.h"
#include "base/map.h"

#define SOURCE_NAME "sgr-agent-core"
#define ACCEPTED_CLASSES                                                                                               \
  "accepted: SGRAgent, ToolCallingAgent, SGRToolCallingAgent, SGRAutoToolCallingAgent, SGRSOToolCallingAgent, "        \
  "each also with \"Research\" in the name (ResearchSGRAgent, SGRToolCallingResearchAgent, ...) and with or "          \
  "without a module path"

typedef struct level {
  const ag_json *llm, *openai, *search, *execution, *context, *prompts, *mcp; /* NULL when absent */
  const char *dir; /* prompt files are relative to it; NULL: prompt files are refused */
  const char *who; /* "agent X", or the label of the global configuration */
} level;

typedef struct conv {
  ag_json *docs, *warnings;
  size_t n_warnings;
  ag_map names; /* agent names seen so far */
  level global; /* all sections NULL when there is no global configuration */
  const char *global_label;
  char *err;
  size_t errlen;
} conv;

/* A key of a section: note NULL means the value is imported, otherwise it is reported with the
 * note ("llm.base_url <note>"). */
typedef struct known_key {
  const char *key;
  const char *note;
} known_key;

#define NOTE_SEARCH "is not imported: agentd's search tools are configured on the server"
#define NOTE_FOLDER "is not imported: agentd records every step of a session in its database"

static const known_key llm_keys[] = {
    {"model", NULL},
    {"temperature", NULL},
    {"max_tokens", NULL},
    {"api_key", "is a server setting in agentd (OPENAI_API_KEY); not imported"},
    {"base_url", "is a server setting in agentd (OPENAI_BASE_URL); not imported"},
    {"proxy", "is not imported: agentd has no per-agent proxy setting"},
};
static const known_key search_keys[] = {
    {"max_searches", NULL},
    {"tavily_api_key", "is a server setting in agentd (AGENTD_SEARCH_API_KEY); not imported"},
    {"tavily_api_base_url", NOTE_SEARCH},
    {"max_results", NOTE_SEARCH},
    {"max_pages", NOTE_SEARCH},
    {"content_limit", NOTE_SEARCH},
};
static const known_key execution_keys[] = {
    {"max_iterations", NULL},
    {"max_clarifications", NULL},
    {"max_searches", NULL},
    {"max_steps", "is not imported: agentd caps LLM calls itself (limits.max_steps defaults to 2 * "
                  "max_iterations + 4)"},
    {"mcp_context_limit", "has no per-agent equivalent in agentd; not imported"},
    {"logs_dir", NOTE_FOLDER},
    {"reports_dir", NOTE_FOLDER},
};
static const known_key context_keys[] = {
    {"max_iterations", NULL},
    {"max_clarifications", NULL},
    {"max_searches", NULL},
};
static const known_key prompt_keys[] = {
    {"system_prompt_file", NULL},         {"system_prompt_str", NULL},        {"system_prompt", NULL},
    {"initial_user_request_file", NULL},  {"initial_user_request_str", NULL}, {"clarification_response_file", NULL},
    {"clarification_response_str", NULL},
};

static const char *const global_keys[] = {"llm",     "openai",  "search", "execution",
                                          "context", "prompts", "mcp",    "agents"};
static const char *const agent_keys[] = {"base_class", "llm", "openai", "search",       "execution",   "context",
                                         "prompts",    "mcp", "tools",  "display_name", "description", "name"};

static bool in_list(const char *s, const char *const *list, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(s, list[i]) == 0) return true;
  return false;
}

/* Outside text shown in a message: at most max bytes, never ending inside a UTF-8 sequence. Use
 * as "%.*s", SHOW(s). */
static int show_len(const char *s, size_t max) {
  size_t n = strlen(s);
  return (int)(n > max ? ag_utf8_cut(s, max) : n);
}
#define SHOW(s) show_len((s), 64), (s)
#define SHOW_LONG(s) show_len((s), 300), (s)

static int cfail(conv *c, int rc, const char *fmt, ...) AG_PRINTF(3, 4);
static int cfail(conv *c, int rc, const char *fmt, ...) {
  if (c->err && c->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    c->err[ag_utf8_cut(c->err, strlen(c->err))] = '\0';
  }
  return rc;
}

static int cwarn(conv *c, const char *fmt, ...) AG_PRINTF(2, 3);
static int cwarn(conv *c, const char *fmt, ...) {
  if (c->n_warnings > AG_SGR_MAX_WARNINGS) return 0;
  char text[1024];
  if (c->n_warnings == AG_SGR_MAX_WARNINGS) {
    snprintf(text, sizeof text, "(more warnings not shown)");
  } else {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
  }
  ag_json *s = ag_json_stringn_new(text, ag_utf8_cut(text, strlen(text)));
  if (!s) return cfail(c, AG_ENOMEM, "out of memory");
  if (ag_json_push_take(c->warnings, s) < 0) return cfail(c, AG_ENOMEM, "out of memory");
  c->n_warnings++;
  return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Sections */

static int get_section(conv *c, const char *who, const ag_json *obj, const char *key, const ag_json **out) {
  const ag_json *v = ag_json_get(obj, key);
  *out = NULL;
  if (!v || ag_json_is(v, AG_JSON_NULL)) return 0;
  if (!ag_json_is(v, AG_JSON_OBJECT)) return cfail(c, AG_EINVAL, "%s: %s must be a mapping", who, key);
  *out = v;
  return 0;
}

static int level_init(conv *c, level *lv, const ag_json *obj, const char *who, const char *dir) {
  memset(lv, 0, sizeof *lv);
  lv->who = who;
  lv->dir = dir;
  int rc = get_section(c, who, obj, "llm", &lv->llm);
  if (rc == 0) rc = get_section(c, who, obj, "openai", &lv->openai);
  if (rc == 0) rc = get_section(c, who, obj, "search", &lv->search);
  if (rc == 0) rc = get_section(c, who, obj, "execution", &lv->execution);
  if (rc == 0) rc = get_section(c, who, obj, "context", &lv->context);
  if (rc == 0) rc = get_section(c, who, obj, "prompts", &lv->prompts);
  if (rc == 0) rc = get_section(c, who, obj, "mcp", &lv->mcp);
  return rc;
}

/* Reports the keys of one section that are not imported. */
static int warn_section(conv *c, const char *who, const char *name, const ag_json *sec, const known_key *keys,
                        size_t nkeys) {
  int rc = 0;
  for (void *it = ag_json_iter(sec); rc == 0 && it; it = ag_json_iter_next(sec, it)) {
    const char *k = ag_json_iter_key(it);
    if (ag_json_is(ag_json_iter_value(it), AG_JSON_NULL)) continue; /* not set */
    size_t i = 0;
    while (i < nkeys && strcmp(keys[i].key, k) != 0)
      i++;
    if (i == nkeys)
      rc = cwarn(c, "%s: %s.%.*s is not a known setting; not imported", who, name, SHOW(k));
    else if (keys[i].note)
      rc = cwarn(c, "%s: %s.%s %s", who, name, k, keys[i].note);
  }
  return rc;
}

static int warn_mcp(conv *c, const char *who, const ag_json *mcp) {
  int rc = 0;
  for (void *it = ag_json_iter(mcp); rc == 0 && it; it = ag_json_iter_next(mcp, it)) {
    const char *k = ag_json_iter_key(it);
    ag_json *v = ag_json_iter_value(it);
    if (ag_json_is(v, AG_JSON_NULL)) continue;
    if (strcmp(k, "mcpServers") != 0) {
      rc = cwarn(c, "%s: mcp.%.*s is not a known setting; not imported", who, SHOW(k));
      continue;
    }
    if (!ag_json_is(v, AG_JSON_OBJECT)) {
      rc = cwarn(c, "%s: mcp.mcpServers is not a mapping of name to server; not imported", who);
      continue;
    }
    if (ag_json_len(v) == 0) continue;
    char names[800];
    size_t used = 0, shown = 0;
    names[0] = '\0';
    for (void *s = ag_json_iter(v); s; s = ag_json_iter_next(v, s), shown++) {
      const char *name = ag_json_iter_key(s);
      if (shown == 8) {
        snprintf(names + used, sizeof names - used, ", ...");
        break;
      }
      int w = snprintf(names + used, sizeof names - used, "%s%.*s", shown ? ", " : "", SHOW(name));
      if (w > 0) used += (size_t)w;
    }
    rc = cwarn(c,
               "%s: the MCP servers of mcp.mcpServers (%s) are not imported with the agent; import them with "
               "POST /admin/mcp/import",
               who, names);
  }
  return rc;
}

static int warn_level(conv *c, const level *lv) {
  const char *w = lv->who;
  int rc = warn_section(c, w, "llm", lv->llm, llm_keys, AG_ARRAY_LEN(llm_keys));
  if (rc == 0) rc = warn_section(c, w, "openai", lv->openai, llm_keys, AG_ARRAY_LEN(llm_keys));
  if (rc == 0) rc = warn_section(c, w, "search", lv->search, search_keys, AG_ARRAY_LEN(search_keys));
  if (rc == 0) rc = warn_section(c, w, "execution", lv->execution, execution_keys, AG_ARRAY_LEN(execution_keys));
  if (rc == 0) rc = warn_section(c, w, "context", lv->context, context_keys, AG_ARRAY_LEN(context_keys));
  if (rc == 0) rc = warn_section(c, w, "prompts", lv->prompts, prompt_keys, AG_ARRAY_LEN(prompt_keys));
  if (rc == 0) rc = warn_mcp(c, w, lv->mcp);
  return rc;
}

/* ------------------------------------------------------------------------------------------------
 * Values: the first section (agent level first) that sets the key wins */

typedef struct source {
  const ag_json *sec;
  const char *name; /* section name for messages */
  const level *lv;
} source;

static const ag_json *pick(const source *s, size_t n, const char *key, const source **from) {
  for (size_t i = 0; i < n; i++) {
    const ag_json *v = ag_json_get(s[i].sec, key);
    if (v && !ag_json_is(v, AG_JSON_NULL)) {
      *from = &s[i];
      return v;
    }
  }
  return NULL;
}

static int put(conv *c, ag_json *obj, const char *key, ag_json *v) {
  return ag_json_set_take(obj, key, v) < 0 ? cfail(c, AG_ENOMEM, "out of memory") : 0;
}

static int map_llm(conv *c, const level *a, ag_json *doc) {
  const source s[] = {{a->llm, "llm", a},
                      {a->openai, "openai", a},
                      {c->global.llm, "llm", &c->global},
                      {c->global.openai, "openai", &c->global}};
  ag_json *llm = ag_json_object_new();
  if (!llm) return cfail(c, AG_ENOMEM, "out of memory");
  const source *from = NULL;
  int rc = 0;
  const ag_json *v = pick(s, AG_ARRAY_LEN(s), "model", &from);
  if (v && !ag_json_is(v, AG_JSON_STRING))
    rc = cfail(c, AG_EINVAL, "%s: %s.model must be a string", from->lv->who, from->name);
  else if (v)
    rc = put(c, llm, "model", ag_json_copy(v));
  v = rc == 0 ? pick(s, AG_ARRAY_LEN(s), "temperature", &from) : NULL;
  if (v && !ag_json_is(v, AG_JSON_INT) && !ag_json_is(v, AG_JSON_REAL))
    rc = cfail(c, AG_EINVAL, "%s: %s.temperature must be a number", from->lv->who, from->name);
  else if (v)
    rc = put(c, llm, "temperature", ag_json_real_new(ag_json_num(v)));
  v = rc == 0 ? pick(s, AG_ARRAY_LEN(s), "max_tokens", &from) : NULL;
  if (v && (!ag_json_is(v, AG_JSON_INT) || ag_json_int(v) < 1 || ag_json_int(v) > INT_MAX))
    rc = cfail(c, AG_EINVAL, "%s: %s.max_tokens must be a positive integer", from->lv->who, from->name);
  else if (v)
    rc = put(c, llm, "max_tokens", ag_json_int_new(ag_json_int(v)));
  if (rc == 0 && ag_json_len(llm) > 0) return put(c, doc, "llm", llm);
  ag_json_free(llm);
  return rc;
}

static int map_limits(conv *c, const level *a, ag_json *doc) {
  const level *g = &c->global;
  /* max_searches may also sit in search (as in sgr-agent-core's own example config); the other
   * limits may not. */
  const source s[] = {{a->execution, "execution", a},
                      {a->context, "context", a},
                      {g->execution, "execution", g},
                      {g->context, "context", g}};
  const source with_search[] = {{a->execution, "execution", a}, {a->context, "context", a}, {a->search, "search", a},
                                {g->execution, "execution", g}, {g->context, "context", g}, {g->search, "search", g}};
  static const char *const keys[] = {"max_iterations", "max_clarifications", "max_searches"};
  ag_json *limits = ag_json_object_new();
  if (!limits) return cfail(c, AG_ENOMEM, "out of memory");
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < AG_ARRAY_LEN(keys); i++) {
    const source *from = NULL;
    const ag_json *v = i == 2 ? pick(with_search, AG_ARRAY_LEN(with_search), keys[i], &from)
                              : pick(s, AG_ARRAY_LEN(s), keys[i], &from);
    if (!v) continue;
    if (!ag_json_is(v, AG_JSON_INT) || ag_json_int(v) < 0 || ag_json_int(v) > INT_MAX)
      rc = cfail(c, AG_EINVAL, "%s: %s.%s must be a non-negative integer", from->lv->who, from->name, keys[i]);
    else
      rc = put(c, limits, keys[i], ag_json_int_new(ag_json_int(v)));
  }
  if (rc == 0 && ag_json_len(limits) > 0) return put(c, doc, "limits", limits);
  ag_json_free(limits);
  return rc;
}

/* ------------------------------------------------------------------------------------------------
 * Prompts */

typedef struct prompt_kind {
  const char *doc_key; /* in the template document */
  const char *str_key, *alt_key, *file_key;
} prompt_kind;

static const prompt_kind prompt_kinds[] = {
    {"system", "system_prompt_str", "system_prompt", "system_prompt_file"},
    {"initial_request", "initial_user_request_str", NULL, "initial_user_request_file"},
    {"clarification_response", "clarification_response_str", NULL, "clarification_response_file"},
};

/* Reads at most cap bytes of a file into an owned, NUL-terminated buffer. */
static int read_capped(const char *path, size_t cap, char **out, size_t *len, int *sys_errno) {
  *out = NULL;
  *len = 0;
  *sys_errno = 0;
  FILE *f = fopen(path, "rb");
  if (!f) {
    *sys_errno = errno;
    return errno == ENOENT || errno == ENOTDIR ? AG_ENOTFOUND : AG_EIO;
  }
  ag_buf b;
  ag_buf_init(&b, cap);
  char chunk[8192];
  int rc = 0;
  for (;;) {
    size_t n = fread(chunk, 1, sizeof chunk, f);
    if (n > 0) rc = ag_buf_append(&b, chunk, n);
    if (rc < 0 || n < sizeof chunk) break;
  }
  if (rc == 0 && ferror(f)) {
    *sys_errno = errno;
    rc = AG_EIO;
  }
  fclose(f);
  if (rc < 0) {
    ag_buf_deinit(&b);
    return rc;
  }
  *len = b.len;
  *out = ag_buf_take(&b);
  return *out ? 0 : AG_ENOMEM;
}

static int read_prompt_file(conv *c, const char *agent, const level *lv, const char *key, const char *file, char **text,
                            size_t *len) {
  const char *from = lv == &c->global ? " (from the global prompts)" : "";
  if (!lv->dir) return cfail(c, AG_EINVAL, "%s: prompts.%s%s: prompt files are not available here", agent, key, from);
  if (!*file) return cfail(c, AG_EINVAL, "%s: prompts.%s%s is empty", agent, key, from);
  ag_buf path;
  ag_buf_init(&path, PATH_MAX);
  int rc = file[0] == '/' ? ag_buf_append_str(&path, file) : ag_buf_appendf(&path, "%s/%s", lv->dir, file);
  if (rc < 0) {
    ag_buf_deinit(&path);
    return cfail(c, rc == AG_ENOMEM ? rc : AG_EINVAL, "%s: prompts.%s%s: the path is too long", agent, key, from);
  }
  int e = 0;
  rc = read_capped(ag_buf_cstr(&path), AG_SGR_PROMPT_FILE_MAX, text, len, &e);
  if (rc == AG_ETOOBIG)
    rc = cfail(c, rc, "%s: prompts.%s%s: \"%.*s\" is larger than %u KiB", agent, key, from,
               SHOW_LONG(ag_buf_cstr(&path)), AG_SGR_PROMPT_FILE_MAX >> 10);
  else if (rc == AG_ENOMEM)
    rc = cfail(c, rc, "out of memory");
  else if (rc < 0)
    rc = cfail(c, rc, "%s: prompts.%s%s: cannot read \"%.*s\": %s", agent, key, from, SHOW_LONG(ag_buf_cstr(&path)),
               strerror(e));
  else if (memchr(*text, '\0', *len))
    rc = cfail(c, AG_EINVAL, "%s: prompts.%s%s: \"%.*s\" contains a NUL byte", agent, key, from,
               SHOW_LONG(ag_buf_cstr(&path)));
  if (rc < 0) {
    free(*text);
    *text = NULL;
  }
  ag_buf_deinit(&path);
  return rc;
}

static bool is_ident_start(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_'; }
static bool is_ident(char ch) { return is_ident_start(ch) || (ch >= '0' && ch <= '9'); }

/* Rewrites a prompt's Python str.format variables for agentd: {clarification_needed} becomes
 * {clarifications}; the other known names and the {{ }} escapes are the same in both. An unknown
 * {name} is kept and reported. */
static int convert_prompt(conv *c, const char *agent, const char *doc_key, const char *s, size_t n, ag_json **out) {
  static const char *const known[] = {"current_date", "available_tools", "task", "user_request", "clarifications"};
  *out = NULL;
  if (memchr(s, '\0', n)) return cfail(c, AG_EINVAL, "%s: prompts.%s contains a NUL character", agent, doc_key);
  ag_buf b;
  ag_buf_init(&b, (size_t)AG_SGR_PROMPT_FILE_MAX * 2);
  int rc = 0;
  size_t i = 0, unknown = 0;
  if (n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) i = 3; /* a UTF-8 byte order mark is not text */
  while (rc == 0 && i < n) {
    if (s[i] == '{' && i + 1 < n && s[i + 1] == '{') {
      rc = ag_buf_append(&b, "{{", 2);
      i += 2;
      continue;
    }
    size_t j = i + 1;
    if (s[i] == '{' && j < n && is_ident_start(s[j])) {
      while (j < n && is_ident(s[j]))
        j++;
      if (j < n && s[j] == '}') {
        size_t len = j - i - 1;
        const char *name = s + i + 1;
        bool ok = false;
        for (size_t k = 0; k < AG_ARRAY_LEN(known) && !ok; k++)
          ok = strlen(known[k]) == len && memcmp(known[k], name, len) == 0;
        if (len == strlen("clarification_needed") && memcmp(name, "clarification_needed", len) == 0) {
          rc = ag_buf_append_str(&b, "{clarifications}");
        } else {
          if (!ok && unknown++ < 5)
            rc = cwarn(c,
                       "%s: prompts.%s uses {%.*s}, which agentd does not know (it knows {current_date}, "
                       "{available_tools}, {task}, {user_request}, {clarifications}); kept as written",
                       agent, doc_key, len > 64 ? 64 : (int)len, name);
          if (rc == 0) rc = ag_buf_append(&b, s + i, len + 2);
        }
        i = j + 1;
        continue;
      }
    }
    rc = ag_buf_append_char(&b, s[i]);
    i++;
  }
  if (rc == AG_ETOOBIG)
    rc = cfail(c, rc, "%s: prompts.%s is too long", agent, doc_key);
  else if (rc == AG_ENOMEM)
    rc = cfail(c, rc, "out of memory");
  if (rc == 0) {
    *out = ag_json_stringn_new(ag_buf_cstr(&b), b.len);
    if (!*out) rc = cfail(c, AG_EINVAL, "%s: prompts.%s is not valid UTF-8 text", agent, doc_key);
  }
  ag_buf_deinit(&b);
  return rc;
}

/* One prompt: the agent level first, then the global one; at a level the string wins over the
 * file. *out is NULL when neither level sets it. */
static int resolve_prompt(conv *c, const char *agent, const level *a, const prompt_kind *pk, ag_json **out) {
  const level *lvls[2] = {a, &c->global};
  *out = NULL;
  for (size_t l = 0; l < 2; l++) {
    const level *lv = lvls[l];
    const char *from = l == 1 ? " (from the global prompts)" : "";
    const ag_json *sv = ag_json_get(lv->prompts, pk->str_key);
    const char *skey = pk->str_key;
    if ((!sv || ag_json_is(sv, AG_JSON_NULL)) && pk->alt_key) {
      sv = ag_json_get(lv->prompts, pk->alt_key);
      skey = pk->alt_key;
    }
    if (sv && ag_json_is(sv, AG_JSON_NULL)) sv = NULL;
    const ag_json *fv = ag_json_get(lv->prompts, pk->file_key);
    if (fv && ag_json_is(fv, AG_JSON_NULL)) fv = NULL;
    if (!sv && !fv) continue;
    if (sv) {
      if (!ag_json_is(sv, AG_JSON_STRING))
        return cfail(c, AG_EINVAL, "%s: prompts.%s%s must be a string", agent, skey, from);
      int rc = 0;
      if (fv && l == 0) rc = cwarn(c, "%s: prompts.%s is ignored: %s is set", agent, pk->file_key, skey);
      if (rc == 0) rc = convert_prompt(c, agent, pk->doc_key, ag_json_str(sv), ag_json_str_len(sv), out);
      return rc;
    }
    if (!ag_json_is(fv, AG_JSON_STRING))
      return cfail(c, AG_EINVAL, "%s: prompts.%s%s must be a string (a file path)", agent, pk->file_key, from);
    char *text = NULL;
    size_t len = 0;
    int rc = read_prompt_file(c, agent, lv, pk->file_key, ag_json_str(fv), &text, &len);
    if (rc == 0) rc = convert_prompt(c, agent, pk->doc_key, text, len, out);
    free(text);
    return rc;
  }
  return 0;
}

static int map_prompts(conv *c, const char *agent, const level *a, ag_json *doc) {
  ag_json *prompts = ag_json_object_new();
  if (!prompts) return cfail(c, AG_ENOMEM, "out of memory");
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < AG_ARRAY_LEN(prompt_kinds); i++) {
    ag_json *p = NULL;
    rc = resolve_prompt(c, agent, a, &prompt_kinds[i], &p);
    if (rc == 0 && p) rc = put(c, prompts, prompt_kinds[i].doc_key, p);
  }
  if (rc == 0 && ag_json_len(prompts) > 0) return put(c, doc, "prompts", prompts);
  ag_json_free(prompts);
  return rc;
}

/* ------------------------------------------------------------------------------------------------
 * Agents */

static bool valid_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64) return false;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (!is_ident(ch) && ch != '.' && ch != '-') return false;
  }
  return true;
}

/* The agentd kind of a base_class, or NULL; *variant says it is one of the tool-calling variants
 * (Auto, SO) that agentd runs as its one sgr_tool_calling loop. */
static const char *kind_of(const char *base_class, bool *variant) {
  const char *dot = strrchr(base_class, '.');
  const char *cls = dot ? dot + 1 : base_class;
  char low[128];
  size_t n = 0;
  *variant = false;
  for (const char *p = cls; *p; p++) {
    if (n + 1 >= sizeof low) return NULL;
    low[n++] = (char)((*p >= 'A' && *p <= 'Z') ? *p - 'A' + 'a' : *p);
  }
  low[n] = '\0';
  char *r;
  while ((r = strstr(low, "research")) != NULL)
    memmove(r, r + 8, strlen(r + 8) + 1);
  if (strcmp(low, "sgragent") == 0) return "sgr";
  if (strcmp(low, "toolcallingagent") == 0) return "tool_calling";
  if (strcmp(low, "sgrtoolcallingagent") == 0) return "sgr_tool_calling";
  if (strcmp(low, "sgrautotoolcallingagent") == 0 || strcmp(low, "sgrsotoolcallingagent") == 0) {
    *variant = true;
    return "sgr_tool_calling";
  }
  return NULL;
}

static int map_tools(conv *c, const char *who, const ag_json *tools, ag_json *doc) {
  if (!tools || ag_json_is(tools, AG_JSON_NULL)) return 0;
  if (!ag_json_is(tools, AG_JSON_ARRAY)) return cfail(c, AG_EINVAL, "%s: tools must be a list of tool names", who);
  ag_json *arr = ag_json_array_new();
  if (!arr) return cfail(c, AG_ENOMEM, "out of memory");
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < ag_json_len(tools); i++) {
    const ag_json *t = ag_json_at(tools, i);
    if (!ag_json_is(t, AG_JSON_STRING) || ag_json_str_len(t) == 0)
      rc = cfail(c, AG_EINVAL, "%s: tools[%zu] must be a tool name (a non-empty string)", who, i);
    else if (ag_json_push_take(arr, ag_json_copy(t)) < 0)
      rc = cfail(c, AG_ENOMEM, "out of memory");
  }
  if (rc == 0) return put(c, doc, "tools", arr);
  ag_json_free(arr);
  return rc;
}

static int map_meta(conv *c, const char *who, const ag_json *a, const char *base_class, ag_json *doc) {
  ag_json *meta = ag_json_object_new();
  if (!meta) return cfail(c, AG_ENOMEM, "out of memory");
  int rc = 0;
  const ag_json *dn = ag_json_get(a, "display_name");
  if (dn && !ag_json_is(dn, AG_JSON_NULL) && !ag_json_is(dn, AG_JSON_STRING))
    rc = cfail(c, AG_EINVAL, "%s: display_name must be a string", who);
  else if (ag_json_is(dn, AG_JSON_STRING))
    rc = put(c, meta, "display_name", ag_json_copy(dn));
  if (rc == 0) rc = put(c, meta, "source", ag_json_string_new(SOURCE_NAME));
  if (rc == 0) rc = put(c, meta, "base_class", ag_json_string_new(base_class));
  if (rc == 0) return put(c, doc, "meta", meta);
  ag_json_free(meta);
  return rc;
}

static int build_doc(conv *c, const char *name, const char *who, const ag_json *a, const level *lv, ag_json *doc) {
  const ag_json *bc = ag_json_get(a, "base_class");
  if (!ag_json_is(bc, AG_JSON_STRING))
    return cfail(c, AG_EINVAL, "%s: base_class %s (%s)", who,
                 bc && !ag_json_is(bc, AG_JSON_NULL) ? "must be a string" : "is missing", ACCEPTED_CLASSES);
  const char *base_class = ag_json_str(bc);
  bool variant = false;
  const char *kind = kind_of(base_class, &variant);
  if (!kind)
    return cfail(c, AG_EINVAL, "%s: base_class \"%.*s\" has no agentd equivalent (%s)", who, SHOW_LONG(base_class),
                 ACCEPTED_CLASSES);
  int rc = 0;
  if (variant)
    rc = cwarn(c,
               "%s: base_class \"%.*s\" runs as kind sgr_tool_calling (a reasoning tool call, then a required "
               "tool call)",
               who, SHOW_LONG(base_class));
  const ag_json *desc = ag_json_get(a, "description");
  if (rc == 0 && desc && !ag_json_is(desc, AG_JSON_NULL) && !ag_json_is(desc, AG_JSON_STRING))
    rc = cfail(c, AG_EINVAL, "%s: description must be a string", who);
  if (rc == 0) rc = put(c, doc, "name", ag_json_string_new(name));
  if (rc == 0) {
    if (ag_json_is(desc, AG_JSON_STRING)) {
      rc = put(c, doc, "description", ag_json_copy(desc));
    } else {
      const char *dot = strrchr(base_class, '.');
      char text[300];
      snprintf(text, sizeof text, "Imported from " SOURCE_NAME " (%.*s)", SHOW_LONG(dot ? dot + 1 : base_class));
      rc = put(c, doc, "description", ag_json_stringn_new(text, ag_utf8_cut(text, strlen(text))));
    }
  }
  if (rc == 0) rc = put(c, doc, "kind", ag_json_string_new(kind));
  if (rc == 0) rc = put(c, doc, "stream_format", ag_json_string_new("openai"));
  if (rc == 0) rc = map_prompts(c, who, lv, doc);
  if (rc == 0) rc = map_llm(c, lv, doc);
  if (rc == 0) rc = map_limits(c, lv, doc);
  if (rc == 0) rc = map_tools(c, who, ag_json_get(a, "tools"), doc);
  if (rc == 0) rc = map_meta(c, who, a, base_class, doc);
  return rc;
}

static int convert_agent(conv *c, const char *name, const ag_json *a, const char *dir) {
  if (!valid_name(name))
    return cfail(c, AG_EINVAL,
                 "agent \"%.*s%s\": the name must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.' and '-'", SHOW(name),
                 strlen(name) > 64 ? "..." : "");
  char who[80];
  snprintf(who, sizeof who, "agent %s", name);
  if (ag_map_get(&c->names, name)) return cfail(c, AG_EEXIST, "%s is defined twice (agent names must be unique)", who);
  if (ag_json_len(c->docs) >= AG_SGR_MAX_AGENTS)
    return cfail(c, AG_ETOOBIG, "more than %d agents; import them in parts", AG_SGR_MAX_AGENTS);
  if (!ag_json_is(a, AG_JSON_OBJECT))
    return cfail(c, AG_EINVAL, "%s: %s", who,
                 ag_json_is(a, AG_JSON_NULL) ? "has no settings (base_class is required)" : "must be a mapping");
  level lv;
  int rc = level_init(c, &lv, a, who, dir);
  for (void *it = ag_json_iter(a); rc == 0 && it; it = ag_json_iter_next(a, it)) {
    const char *k = ag_json_iter_key(it);
    if (!in_list(k, agent_keys, AG_ARRAY_LEN(agent_keys)))
      rc = cwarn(c, "%s: unknown key \"%.*s\"; not imported", who, SHOW(k));
  }
  const char *own = ag_json_get_str(a, "name");
  if (rc == 0 && own && strcmp(own, name) != 0)
    rc = cwarn(c, "%s: its name \"%.*s\" differs from its key; the key is used", who, SHOW(own));
  if (rc == 0) rc = warn_level(c, &lv);
  ag_json *doc = rc == 0 ? ag_json_object_new() : NULL;
  if (rc == 0 && !doc) rc = cfail(c, AG_ENOMEM, "out of memory");
  if (rc == 0) rc = build_doc(c, name, who, a, &lv, doc);
  if (rc == 0 && ag_map_put(&c->names, name, (void *)c) < 0) rc = cfail(c, AG_ENOMEM, "out of memory");
  if (rc == 0) {
    if (ag_json_push_take(c->docs, doc) < 0) rc = cfail(c, AG_ENOMEM, "out of memory");
    doc = NULL;
  }
  ag_json_free(doc);
  return rc;
}

/* The `agents` of one root: a mapping (v0.5+) or a list (the older form). */
static int convert_agents(conv *c, const ag_json *root, const char *label, bool is_global, const char *dir) {
  if (!ag_json_is(root, AG_JSON_OBJECT)) return cfail(c, AG_EINVAL, "%s: the YAML root must be a mapping", label);
  int rc = 0;
  if (!is_global) {
    for (void *it = ag_json_iter(root); rc == 0 && it; it = ag_json_iter_next(root, it)) {
      const char *k = ag_json_iter_key(it);
      if (strcmp(k, "agents") == 0 || ag_json_is(ag_json_iter_value(it), AG_JSON_NULL)) continue;
      if (in_list(k, global_keys, AG_ARRAY_LEN(global_keys)))
        rc = c->global_label
                 ? cwarn(c, "%s: the %s section is ignored here (the global settings come from %s)", label, k,
                         c->global_label)
                 : cwarn(c, "%s: the %s section is ignored here (no global configuration was given)", label, k);
      else
        rc = cwarn(c, "%s: unknown key \"%.*s\"; not imported", label, SHOW(k));
    }
  }
  const ag_json *agents = ag_json_get(root, "agents");
  if (rc < 0 || !agents || ag_json_is(agents, AG_JSON_NULL)) return rc;
  if (ag_json_is(agents, AG_JSON_OBJECT)) {
    for (void *it = ag_json_iter(agents); rc == 0 && it; it = ag_json_iter_next(agents, it))
      rc = convert_agent(c, ag_json_iter_key(it), ag_json_iter_value(it), dir);
    return rc;
  }
  if (!ag_json_is(agents, AG_JSON_ARRAY))
    return cfail(c, AG_EINVAL, "%s: agents must be a mapping of name to agent (or, in the older form, a list)", label);
  for (size_t i = 0; rc == 0 && i < ag_json_len(agents); i++) {
    const ag_json *a = ag_json_at(agents, i);
    const ag_json *name = ag_json_get(a, "name");
    if (!ag_json_is(a, AG_JSON_OBJECT))
      rc = cfail(c, AG_EINVAL, "%s: agents[%zu] must be a mapping", label, i);
    else if (!ag_json_is(name, AG_JSON_STRING))
      rc = cfail(c, AG_EINVAL, "%s: agents[%zu]: name %s", label, i, name ? "must be a string" : "is missing");
    else if (memchr(ag_json_str(name), '\0', ag_json_str_len(name)))
      rc = cfail(c, AG_EINVAL, "%s: agents[%zu]: the name must not contain a NUL character", label, i);
    else
      rc = convert_agent(c, ag_json_str(name), a, dir);
  }
  return rc;
}

static int convert_global(conv *c, const ag_json *global, const char *label, const char *dir) {
  if (!ag_json_is(global, AG_JSON_OBJECT)) return cfail(c, AG_EINVAL, "%s: the YAML root must be a mapping", label);
  c->global_label = label;
  int rc = level_init(c, &c->global, global, label, dir);
  for (void *it = ag_json_iter(global); rc == 0 && it; it = ag_json_iter_next(global, it)) {
    const char *k = ag_json_iter_key(it);
    if (!in_list(k, global_keys, AG_ARRAY_LEN(global_keys)) && !ag_json_is(ag_json_iter_value(it), AG_JSON_NULL))
      rc = cwarn(c, "%s: unknown key \"%.*s\"; not imported", label, SHOW(k));
  }
  if (rc == 0) rc = warn_level(c, &c->global);
  return rc;
}

static int conv_init(conv *c, char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  c->err = err;
  c->errlen = errlen;
  if (err && errlen) err[0] = '\0';
  ag_map_init(&c->names);
  c->docs = ag_json_array_new();
  c->warnings = ag_json_array_new();
  return c->docs && c->warnings ? 0 : cfail(c, AG_ENOMEM, "out of memory");
}

/* Hands the results out on success, frees them otherwise. */
static int conv_finish(conv *c, int rc, ag_json **docs, ag_json **warnings) {
  ag_map_deinit(&c->names);
  if (rc == 0) {
    *docs = c->docs;
    *warnings = c->warnings;
    return 0;
  }
  ag_json_free(c->docs);
  ag_json_free(c->warnings);
  return rc;
}

int ag_sgr_config_convert(const ag_json *global, const ag_json *agents_root, const char *base_dir, ag_json **docs,
                          ag_json **warnings, char *err, size_t errlen) {
  *docs = NULL;
  *warnings = NULL;
  conv c;
  int rc = conv_init(&c, err, errlen);
  if (rc == 0 && !agents_root) rc = cfail(&c, AG_EINVAL, "no agents configuration");
  if (rc == 0 && global) rc = convert_global(&c, global, "config", base_dir);
  if (rc == 0)
    rc = convert_agents(&c, agents_root, agents_root == global ? "config" : "agents file", agents_root == global,
                        base_dir);
  if (rc == 0 && ag_json_len(c.docs) == 0) rc = cwarn(&c, "no agents found (the agents: section is missing or empty)");
  return conv_finish(&c, rc, docs, warnings);
}

/* ------------------------------------------------------------------------------------------------
 * Files */

static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return ag_strdup(".");
  if (slash == path) return ag_strdup("/");
  return ag_strndup(path, (size_t)(slash - path));
}

static bool has_global_sections(const ag_json *root) {
  static const char *const keys[] = {"llm", "openai", "execution", "prompts", "search"};
  for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++) {
    const ag_json *v = ag_json_get(root, keys[i]);
    if (v && !ag_json_is(v, AG_JSON_NULL)) return true;
  }
  return false;
}

int ag_sgr_config_convert_files(const char *const *paths, size_t n, ag_json **docs, ag_json **warnings, char *err,
                                size_t errlen) {
  *docs = NULL;
  *warnings = NULL;
  conv c;
  int rc = conv_init(&c, err, errlen);
  ag_json **roots = n ? calloc(n, sizeof *roots) : NULL;
  char **dirs = n ? calloc(n, sizeof *dirs) : NULL;
  if (rc == 0 && n == 0) rc = cfail(&c, AG_EINVAL, "no files to import");
  if (rc == 0 && (!roots || !dirs)) rc = cfail(&c, AG_ENOMEM, "out of memory");
  size_t global = n;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    char *text = NULL;
    size_t len = 0;
    int e = 0;
    rc = read_capped(paths[i], AG_YAML_MAX_INPUT, &text, &len, &e);
    if (rc == AG_ETOOBIG)
      rc = cfail(&c, rc, "%s: larger than %u bytes", paths[i], AG_YAML_MAX_INPUT);
    else if (rc == AG_ENOMEM)
      rc = cfail(&c, rc, "out of memory");
    else if (rc < 0)
      rc = cfail(&c, rc, "%s: cannot read: %s", paths[i], strerror(e));
    char yerr[300];
    if (rc == 0) {
      rc = ag_yaml_to_json(text, len, &roots[i], yerr, sizeof yerr);
      if (rc < 0) rc = cfail(&c, rc, "%s: %s", paths[i], yerr);
    }
    free(text);
    if (rc == 0 && !ag_json_is(roots[i], AG_JSON_OBJECT))
      rc = cfail(&c, AG_EINVAL, "%s: the YAML root must be a mapping", paths[i]);
    if (rc == 0) {
      dirs[i] = dir_of(paths[i]);
      if (!dirs[i]) rc = cfail(&c, AG_ENOMEM, "out of memory");
    }
    if (rc == 0 && global == n && has_global_sections(roots[i])) global = i;
  }
  if (rc == 0 && global < n) rc = convert_global(&c, roots[global], paths[global], dirs[global]);
  for (size_t i = 0; rc == 0 && i < n; i++)
    rc = convert_agents(&c, roots[i], paths[i], i == global, dirs[i]);
  if (rc == 0 && ag_json_len(c.docs) == 0) {
    rc = cfail(&c, AG_EINVAL, "no agents found in %s%s (no file has an agents: section)", paths[0],
               n > 1 ? " and the other files" : "");
  }
  for (size_t i = 0; i < n && roots; i++)
    ag_json_free(roots[i]);
  for (size_t i = 0; i < n && dirs; i++)
    free(dirs[i]);
  free(roots);
  free(dirs);
  return conv_finish(&c, rc, docs, warnings);
}
