/* The built-in web tools (see web.h).
 *
 * Jobs follow the same shape as in exec_http.c: one uv_timer_t per job only to deliver the
 * callback from the loop, one guarded fetch at most in flight, close() waits for every job's
 * handle and then for the executor's own client. create_report needs no I/O: its output is built
 * inside start and delivered from the loop like any other. */
#include "tools/web.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/json.h"
#include "base/log.h"
#include "net/http_client.h"
#include "net/ssrf.h"
#include "tools/html_text.h"

#define DEFAULT_MAX_OUTPUT ((size_t)256 << 10)
#define DEFAULT_TIMEOUT_MS 20000u
#define MAX_TIMEOUT_MS 600000
#define SEARCH_MAX_BYTES ((size_t)2 << 20)
#define MAX_QUERY 2000
#define MAX_TITLE 300
#define MAX_URL 8192
#define ERROR_EXCERPT 300

enum web_fn { FN_SEARCH, FN_EXTRACT, FN_REPORT };

typedef struct web_tool {
  int fn;
  unsigned max_results;
  size_t snippet_bytes;
  uint64_t timeout_ms;
  size_t max_download;
  size_t max_text;
  unsigned max_redirects;
  size_t max_report;
} web_tool;

typedef struct exec_web {
  ag_executor base;
  const ag_tool_env *env;
  ag_http_client *http; /* guarded fetches only */
  ag_ssrf_policy policy;
  ag_ssrf_policy trusted; /* the search endpoint: agentd's own configuration */
  ag_tool_job *jobs;
  size_t n_jobs;
  bool closing;
  void (*done)(void *ud);
  void *done_ud;
} exec_web;

struct ag_tool_job {
  exec_web *ex;
  ag_tool_job *prev, *next;
  uv_timer_t timer;
  ag_ssrf_fetch *fetch;
  ag_tool_output *out;
  int err;
  bool finishing;
  web_tool cfg;
  uint64_t timeout_ms;
  char *query;
  char *url;
  unsigned want;
  char **known; /* the session's source URLs, numbered 1..n_known */
  size_t n_known;
  char *session_id;
  char why[160]; /* why check_page refused a response */
  ag_tool_done_fn cb;
  void *ud;
};

/* ---- tool definitions ---- */

static const ag_web_tool_def defs[] = {
    {"web_search",
     "Search the web. Returns numbered results with title, URL and a snippet; cite them as [n] with these "
     "numbers. Read a promising result in full with extract_page_content.",
     "{\"type\":\"object\",\"properties\":{"
     "\"query\":{\"type\":\"string\",\"description\":\"The search query, as you would type it into a search engine\"},"
     "\"max_results\":{\"type\":\"integer\",\"description\":\"How many results to return, 1 to 10\"}},"
     "\"required\":[\"query\",\"max_results\"],\"additionalProperties\":false}",
     "{\"tool\":\"web_search\"}", true, true},
    {"extract_page_content",
     "Fetch a web page and return its readable text (HTML turned into text, cut at a size limit), with the page's "
     "source number for citations.",
     "{\"type\":\"object\",\"properties\":{"
     "\"url\":{\"type\":\"string\",\"description\":\"The http or https URL of the page\"}},"
     "\"required\":[\"url\"],\"additionalProperties\":false}",
     "{\"tool\":\"extract_page_content\"}", false, true},
    {"create_report",
     "Write the final report as a Markdown document. Cite sources in the content as [n] with the numbers of the "
     "search results; a Sources section listing the cited sources is added for you.",
     "{\"type\":\"object\",\"properties\":{"
     "\"title\":{\"type\":\"string\",\"description\":\"The report's title\"},"
     "\"content\":{\"type\":\"string\",\"description\":\"The report in Markdown, with [n] citations\"}},"
     "\"required\":[\"title\",\"content\"],\"additionalProperties\":false}",
     "{\"tool\":\"create_report\"}", false, false},
};

const ag_web_tool_def *ag_web_tools(size_t *n) {
  *n = AG_ARRAY_LEN(defs);
  return defs;
}

/* ---- configuration ---- */

typedef struct num_key {
  const char *name;
  long long min, max;
} num_key;

static int compile_num(ag_json *j, const num_key *k, long long *v, char *err, size_t errlen) {
  ag_json *x = ag_json_get(j, k->name);
  if (!x) return 0;
  long long n = ag_json_is(x, AG_JSON_INT) ? ag_json_int(x) : k->min - 1;
  if (n < k->min || n > k->max) {
    snprintf(err, errlen, "executor_config.%s: must be an integer from %lld to %lld", k->name, k->min, k->max);
    return AG_EINVAL;
  }
  *v = n;
  return 0;
}

static int web_compile(ag_executor *base, const char *config, void **out, char *err, size_t errlen) {
  (void)base;
  *out = NULL;
  char perr[200];
  ag_json *j = ag_json_parse(config ? config : "", config ? strlen(config) : 0, perr, sizeof perr);
  if (!j) {
    snprintf(err, errlen, "executor_config: not valid JSON (%s)", perr);
    return AG_EINVAL;
  }
  int rc = AG_EINVAL;
  web_tool t = {.max_results = 10,
                .snippet_bytes = 600,
                .timeout_ms = DEFAULT_TIMEOUT_MS,
                .max_download = (size_t)2 << 20,
                .max_text = 24000,
                .max_redirects = 5,
                .max_report = (size_t)1 << 20};
  static const num_key search_keys[] = {
      {"max_results", 1, 20}, {"snippet_bytes", 50, 10000}, {"timeout_ms", 1, MAX_TIMEOUT_MS}};
  static const num_key extract_keys[] = {{"max_download_bytes", 1024, 64 << 20},
                                         {"max_text_bytes", 256, 4 << 20},
                                         {"timeout_ms", 1, MAX_TIMEOUT_MS},
                                         {"max_redirects", 0, 10}};
  static const num_key report_keys[] = {{"max_bytes", 1024, 16 << 20}};
  const num_key *keys = NULL;
  size_t n_keys = 0;
  const char *tool = ag_json_get_str(j, "tool");
  if (!ag_json_is(j, AG_JSON_OBJECT)) {
    snprintf(err, errlen, "executor_config: must be a JSON object");
    goto done;
  }
  if (tool && strcmp(tool, "web_search") == 0) {
    t.fn = FN_SEARCH, keys = search_keys, n_keys = AG_ARRAY_LEN(search_keys);
  } else if (tool && strcmp(tool, "extract_page_content") == 0) {
    t.fn = FN_EXTRACT, keys = extract_keys, n_keys = AG_ARRAY_LEN(extract_keys);
  } else if (tool && strcmp(tool, "create_report") == 0) {
    t.fn = FN_REPORT, keys = report_keys, n_keys = AG_ARRAY_LEN(report_keys);
  } else {
    snprintf(err, errlen,
             "executor_config.tool: must be \"web_search\", \"extract_page_content\" or \"create_report\"");
    goto done;
  }
  for (void *it = ag_json_iter(j); it; it = ag_json_iter_next(j, it)) {
    const char *k = ag_json_iter_key(it);
    bool known = strcmp(k, "tool") == 0;
    for (size_t i = 0; i < n_keys; i++)
      known |= strcmp(k, keys[i].name) == 0;
    if (!known) {
      snprintf(err, errlen, "executor_config.%.64s: unknown key for %s", k, tool);
      goto done;
    }
  }
  for (size_t i = 0; i < n_keys; i++) {
    long long v = -1;
    if (compile_num(j, &keys[i], &v, err, errlen) < 0) goto done;
    if (v < 0) continue;
    const char *k = keys[i].name;
    if (strcmp(k, "max_results") == 0) t.max_results = (unsigned)v;
    if (strcmp(k, "snippet_bytes") == 0) t.snippet_bytes = (size_t)v;
    if (strcmp(k, "timeout_ms") == 0) t.timeout_ms = (uint64_t)v;
    if (strcmp(k, "max_download_bytes") == 0) t.max_download = (size_t)v;
    if (strcmp(k, "max_text_bytes") == 0) t.max_text = (size_t)v;
    if (strcmp(k, "max_redirects") == 0) t.max_redirects = (unsigned)v;
    if (strcmp(k, "max_bytes") == 0) t.max_report = (size_t)v;
  }
  web_tool *c = malloc(sizeof *c);
  if (!c) {
    snprintf(err, errlen, "out of memory");
    rc = AG_ENOMEM;
    goto done;
  }
  *c = t;
  *out = c;
  rc = 0;
done:
  ag_json_free(j);
  return rc;
}

static void web_release(ag_executor *base, void *compiled) {
  (void)base;
  free(compiled);
}

/* ---- text helpers ---- */

/* Appends s[0..len) with whitespace runs collapsed to one space and trimmed, cut at max bytes at
 * a character boundary (with "..." when cut). s is valid UTF-8. */
static int append_collapsed(ag_buf *b, const char *s, size_t len, size_t max) {
  size_t start = b->len, i = 0;
  bool space = false;
  while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
    i++;
  for (; i < len; i++) {
    char c = s[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      space = true;
      continue;
    }
    if (b->len - start >= max) {
      size_t keep = ag_utf8_cut(b->ptr + start, max > 3 ? max - 3 : max);
      b->len = start + keep;
      b->ptr[b->len] = '\0';
      return ag_buf_append_str(b, "...");
    }
    if (space && b->len > start) {
      int rc = ag_buf_append_char(b, ' ');
      if (rc < 0) return rc;
    }
    space = false;
    int rc = ag_buf_append_char(b, c);
    if (rc < 0) return rc;
  }
  return 0;
}

/* A JSON string field as valid, collapsed UTF-8 text (owned), or NULL if absent or empty. */
static char *clean_field(const ag_json *obj, const char *key, size_t max) {
  ag_json *v = ag_json_get(obj, key);
  if (!ag_json_is(v, AG_JSON_STRING) || ag_json_str_len(v) == 0) return NULL;
  ag_buf u, c;
  ag_buf_init(&u, ag_json_str_len(v) * 3 + 1);
  ag_buf_init(&c, max + 8);
  char *out = NULL;
  if (ag_html_to_utf8(ag_json_str(v), ag_json_str_len(v), AG_CHARSET_UTF8, &u) == 0 &&
      append_collapsed(&c, ag_buf_cstr(&u), u.len, max) == 0 && c.len)
    out = ag_buf_take(&c);
  ag_buf_deinit(&u);
  ag_buf_deinit(&c);
  return out;
}

/* The number the session gives url: a known one keeps its number; a new one gets the next. */
static size_t source_number(ag_tool_job *job, const char *url, bool *is_new) {
  *is_new = false;
  for (size_t i = 0; i < job->n_known; i++)
    if (strcmp(job->known[i], url) == 0) return i + 1;
  for (size_t i = 0; i < job->out->n_sources; i++)
    if (strcmp(job->out->sources[i].url, url) == 0) return job->n_known + i + 1;
  *is_new = true;
  return job->n_known + job->out->n_sources + 1;
}

static bool http_url(const char *u) { return u && (strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0); }

/* ---- jobs ---- */

static void job_timer_fired(uv_timer_t *t);

static void job_finish(ag_tool_job *job, int err) {
  if (job->finishing) return;
  job->finishing = true;
  job->err = err;
  uv_timer_start(&job->timer, job_timer_fired, 0, 0);
}

static void close_client_if_idle(exec_web *ex);

static void job_free_fields(ag_tool_job *job) {
  for (size_t i = 0; i < job->n_known; i++)
    free(job->known[i]);
  free(job->known);
  free(job->query);
  free(job->url);
  free(job->session_id);
}

static void job_closed(uv_handle_t *h) {
  ag_tool_job *job = h->data;
  exec_web *ex = job->ex;
  if (job->prev)
    job->prev->next = job->next;
  else
    ex->jobs = job->next;
  if (job->next) job->next->prev = job->prev;
  ex->n_jobs--;
  job_free_fields(job);
  free(job);
  close_client_if_idle(ex);
}

static void job_timer_fired(uv_timer_t *t) {
  ag_tool_job *job = t->data;
  ag_tool_output *out = job->out;
  job->out = NULL;
  int err = job->err;
  if (!out && err == 0) err = AG_ENOMEM;
  job->cb(err, out, job->ud);
  uv_close((uv_handle_t *)&job->timer, job_closed);
}

/* Common fetch failures, in words for the model. Returns the err code to report. */
static int fetch_failed(ag_tool_job *job, const ag_ssrf_result *r, const char *what) {
  ag_tool_output *o = job->out;
  switch (r->err) {
  case AG_ECANCELED: ag_tool_output_fail(o, "error: the call was cancelled"); break;
  case AG_ETIMEDOUT:
    ag_tool_output_fail(o, "error: %s did not answer within %llu ms", what, (unsigned long long)job->timeout_ms);
    break;
  default: ag_tool_output_fail(o, "error: %s: %s", what, r->message); break;
  }
  return r->err;
}

static void status_failed(ag_tool_job *job, const ag_ssrf_result *r, const char *what) {
  ag_buf u;
  ag_buf_init(&u, ERROR_EXCERPT);
  int rc = ag_html_to_utf8(r->body.ptr, r->body.len, AG_CHARSET_UTF8, &u);
  ag_buf c;
  ag_buf_init(&c, ERROR_EXCERPT + 8);
  if (append_collapsed(&c, ag_buf_cstr(&u), u.len, ERROR_EXCERPT) < 0) ag_buf_reset(&c);
  ag_tool_output_fail(job->out, "error: %s answered HTTP %ld%s%s%s", what, r->status, c.len ? ": " : "",
                      ag_buf_cstr(&c), rc == AG_ETOOBIG ? "..." : "");
  ag_buf_deinit(&u);
  ag_buf_deinit(&c);
}

/* ---- web_search ---- */

static void on_search_done(const ag_ssrf_result *r, void *ud) {
  ag_tool_job *job = ud;
  job->fetch = NULL;
  ag_tool_output *o = job->out;
  if (r->err) {
    job_finish(job, fetch_failed(job, r, "the search service"));
    return;
  }
  if (r->status < 200 || r->status >= 300) {
    status_failed(job, r, "the search service");
    job_finish(job, 0);
    return;
  }
  char perr[160];
  ag_json *doc = ag_json_parse(r->body.ptr, r->body.len, perr, sizeof perr);
  ag_json *results = ag_json_get(doc, "results");
  if (!ag_json_is(results, AG_JSON_ARRAY)) {
    ag_tool_output_fail(o, "error: the search service's answer has no results list");
    ag_json_free(doc);
    job_finish(job, AG_EPROTO);
    return;
  }
  ag_buf *t = &o->text;
  ag_buf_reset(t);
  int rc = ag_buf_appendf(t, "Search results for \"%s\":\n", job->query);
  unsigned shown = 0;
  for (size_t i = 0; i < ag_json_len(results) && shown < job->want && rc == 0; i++) {
    ag_json *res = ag_json_at(results, i);
    const char *url = ag_json_get_str(res, "url");
    if (!http_url(url) || strlen(url) > MAX_URL) continue;
    char *title = clean_field(res, "title", MAX_TITLE);
    char *snippet = clean_field(res, "content", job->cfg.snippet_bytes);
    bool is_new;
    size_t n = source_number(job, url, &is_new);
    /* A result that does not fit the output is not shown, and so not numbered either. */
    size_t mark = t->len;
    rc = ag_buf_appendf(t, "\n[%zu] %s\n%s\n%s%s", n, title ? title : "(untitled)", url, snippet ? snippet : "",
                        snippet ? "\n" : "");
    if (rc == 0 && is_new) rc = ag_tool_output_add_source(o, url, title, snippet);
    if (rc == AG_ETOOBIG) {
      t->len = mark;
      t->ptr[mark] = '\0';
    }
    free(title);
    free(snippet);
    if (rc == 0) shown++;
  }
  ag_json_free(doc);
  if (rc == AG_ENOMEM) {
    ag_tool_output_fail(o, "error: out of memory");
    job_finish(job, AG_ENOMEM);
    return;
  }
  if (shown == 0) {
    ag_buf_reset(t);
    if (ag_buf_appendf(t, "No results for \"%s\".", job->query) < 0) ag_buf_reset(t);
  }
  job_finish(job, 0);
}

static bool unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

static int start_search(ag_tool_job *job, const char *args) {
  exec_web *ex = job->ex;
  const ag_tool_env *env = ex->env;
  ag_tool_output *o = job->out;
  ag_json *a = ag_json_parse(args, strlen(args), NULL, 0);
  const char *q = ag_json_get_str(a, "query");
  long long want = 5;
  (void)ag_json_get_int(a, "max_results", &want);
  if (want < 1) want = 1;
  if (want > (long long)job->cfg.max_results) want = job->cfg.max_results;
  job->want = (unsigned)want;
  ag_buf qb;
  ag_buf_init(&qb, MAX_QUERY + 8);
  if (q && append_collapsed(&qb, q, ag_json_str_len(ag_json_get(a, "query")), MAX_QUERY) < 0) ag_buf_reset(&qb);
  ag_json_free(a);
  if (qb.len == 0) {
    ag_buf_deinit(&qb);
    ag_tool_output_fail(o, "error: the argument \"query\" must be a non-empty string");
    return AG_EINVAL;
  }
  job->query = ag_buf_take(&qb);
  if (!job->query) return AG_ENOMEM;
  bool tavily = env->search_kind && strcmp(env->search_kind, "tavily") == 0;
  bool searxng = env->search_kind && strcmp(env->search_kind, "searxng") == 0;
  if ((!tavily && !searxng) || !env->search_url || !env->http) {
    ag_tool_output_fail(o, "error: web search is not configured on this server");
    return AG_EINVAL;
  }
  ag_buf url, body, auth;
  ag_buf_init(&url, MAX_URL + MAX_QUERY * 3 + 64);
  ag_buf_init(&body, MAX_QUERY * 6 + 4096);
  ag_buf_init(&auth, 4096);
  const char *headers[4] = {"Accept: application/json", NULL, NULL, NULL};
  int rc;
  if (tavily) {
    const char *key = env->search_api_key ? env->search_api_key : "";
    rc = ag_buf_append_str(&url, env->search_url);
    if (rc == 0) rc = ag_buf_append_str(&body, "{\"api_key\":\"");
    if (rc == 0) rc = ag_buf_append_json_escaped(&body, key, strlen(key));
    if (rc == 0) rc = ag_buf_append_str(&body, "\",\"query\":\"");
    if (rc == 0) rc = ag_buf_append_json_escaped(&body, job->query, strlen(job->query));
    if (rc == 0)
      rc = ag_buf_appendf(&body,
                          "\",\"max_results\":%u,\"search_depth\":\"basic\",\"include_answer\":false,"
                          "\"include_raw_content\":false}",
                          job->want);
    headers[1] = "Content-Type: application/json";
    if (rc == 0 && *key) {
      rc = ag_buf_appendf(&auth, "Authorization: Bearer %s", key);
      headers[2] = ag_buf_cstr(&auth);
    }
  } else {
    rc = ag_buf_appendf(&url, "%s%sq=", env->search_url, strchr(env->search_url, '?') ? "&" : "?");
    for (const char *p = job->query; *p && rc == 0; p++)
      rc = unreserved((unsigned char)*p) ? ag_buf_append_char(&url, *p)
                                         : ag_buf_appendf(&url, "%%%02X", (unsigned)(unsigned char)*p);
    if (rc == 0) rc = ag_buf_append_str(&url, "&format=json");
  }
  if (rc == 0) {
    ag_ssrf_fetch_opts f = {
        .method = tavily ? "POST" : "GET",
        .url = ag_buf_cstr(&url),
        .headers = headers,
        .body = tavily ? ag_buf_cstr(&body) : NULL,
        .body_len = tavily ? body.len : 0,
        .timeout_ms = job->timeout_ms,
        .max_bytes = SEARCH_MAX_BYTES,
        .max_redirects = 3,
        .policy = &ex->trusted,
        .on_done = on_search_done,
        .ud = job,
    };
    rc = ag_ssrf_fetch_start(env->loop, env->http, &f, &job->fetch);
  }
  /* Both may hold the API key. */
  if (auth.ptr) explicit_bzero(auth.ptr, auth.len);
  if (body.ptr) explicit_bzero(body.ptr, body.len);
  ag_buf_deinit(&url);
  ag_buf_deinit(&body);
  ag_buf_deinit(&auth);
  if (rc < 0) {
    job->fetch = NULL;
    ag_tool_output_fail(o, "error: could not start the search: %s", ag_strerror(rc));
  }
  return rc;
}

/* ---- extract_page_content ---- */

enum doc_kind { DOC_REFUSED, DOC_HTML, DOC_TEXT };

static int doc_kind(const char *ctype) {
  if (!ctype || !*ctype) return DOC_TEXT; /* decided by a look at the body */
  ag_slice t = ag_slice_cstr(ctype);
  size_t n = 0;
  while (n < t.len && t.ptr[n] != ';' && t.ptr[n] != ' ')
    n++;
  ag_slice mt = {t.ptr, n};
  if (ag_slice_ieq_cstr(mt, "text/html") || ag_slice_ieq_cstr(mt, "application/xhtml+xml") ||
      ag_slice_ieq_cstr(mt, "application/xml") || ag_slice_ieq_cstr(mt, "text/xml") ||
      (n > 4 && ag_slice_ieq_cstr((ag_slice){mt.ptr + n - 4, 4}, "+xml")))
    return DOC_HTML;
  if ((n > 5 && ag_slice_ieq_cstr((ag_slice){mt.ptr, 5}, "text/")) || ag_slice_ieq_cstr(mt, "application/json") ||
      (n > 5 && ag_slice_ieq_cstr((ag_slice){mt.ptr + n - 5, 5}, "+json")))
    return DOC_TEXT;
  return DOC_REFUSED;
}

static const char *check_page(long status, const char *ctype, void *ud) {
  ag_tool_job *job = ud;
  if (status < 200 || status >= 300 || doc_kind(ctype) != DOC_REFUSED) return NULL;
  snprintf(job->why, sizeof job->why, "the page is %.100s, not text, HTML or JSON", ctype);
  return job->why;
}

static void on_page_done(const ag_ssrf_result *r, void *ud) {
  ag_tool_job *job = ud;
  job->fetch = NULL;
  ag_tool_output *o = job->out;
  if (r->err) {
    job_finish(job, fetch_failed(job, r, "fetching the page"));
    return;
  }
  if (r->status < 200 || r->status >= 300) {
    status_failed(job, r, "the page's server");
    job_finish(job, 0);
    return;
  }
  int kind = doc_kind(r->content_type);
  if (!r->content_type || !*r->content_type) {
    size_t i = 0;
    while (i < r->body.len && (r->body.ptr[i] == ' ' || r->body.ptr[i] == '\n' || r->body.ptr[i] == '\r'))
      i++;
    if (i < r->body.len && r->body.ptr[i] == '<') kind = DOC_HTML;
  }
  int cs = ag_html_detect_charset(r->content_type, r->body.ptr, r->body.len, kind == DOC_HTML);
  ag_buf u, text, title;
  ag_buf_init(&u, r->body.len * 3 + 1);
  ag_buf_init(&text, job->cfg.max_text);
  ag_buf_init(&title, MAX_TITLE);
  int rc = ag_html_to_utf8(r->body.ptr, r->body.len, cs, &u);
  bool cut = false;
  if (rc == 0 && kind == DOC_HTML) {
    rc = ag_html_text(ag_buf_cstr(&u), u.len, &text, &title, &cut);
  } else if (rc == 0) {
    rc = ag_html_to_utf8(ag_buf_cstr(&u), u.len, AG_CHARSET_UTF8, &text);
    if (rc == AG_ETOOBIG) rc = 0, cut = true;
  }
  if (rc < 0) {
    ag_tool_output_fail(o, "error: out of memory");
    job_finish(job, AG_ENOMEM);
    goto done;
  }
  /* The number: the URL asked for if the session has it (a search result that redirects keeps its
   * number), else the page's final URL. */
  const char *final_url = r->url && http_url(r->url) ? r->url : job->url;
  bool is_new;
  size_t n = source_number(job, job->url, &is_new);
  if (is_new) n = source_number(job, final_url, &is_new);
  char *ctitle = NULL;
  if (title.len) {
    ag_buf c;
    ag_buf_init(&c, MAX_TITLE + 8);
    if (append_collapsed(&c, title.ptr, title.len, MAX_TITLE) == 0) ctitle = ag_buf_take(&c);
    ag_buf_deinit(&c);
  }
  if (is_new) {
    ag_buf snip;
    ag_buf_init(&snip, 208);
    if (append_collapsed(&snip, ag_buf_cstr(&text), text.len, 200) < 0) ag_buf_reset(&snip);
    rc = ag_tool_output_add_source(o, final_url, ctitle, snip.len ? ag_buf_cstr(&snip) : NULL);
    ag_buf_deinit(&snip);
  }
  ag_buf *t = &o->text;
  ag_buf_reset(t);
  if (rc == 0)
    rc = ag_buf_appendf(t, "[%zu] %s\nURL: %s\n%s%s\n", n, ctitle ? ctitle : "(untitled)", final_url,
                        r->truncated ? "(the page was longer than the download limit; only its start was read)\n" : "",
                        cut ? "(the text was cut at the size limit)\n" : "");
  free(ctitle);
  if (rc == 0) {
    const char *body = text.len ? ag_buf_cstr(&text) : "(the page has no readable text)";
    size_t len = text.len ? text.len : strlen(body);
    size_t room = t->max - t->len;
    if (len > room) {
      len = ag_utf8_cut(body, room);
    }
    rc = ag_buf_append(t, body, len);
  }
  if (rc == AG_ENOMEM) {
    ag_tool_output_fail(o, "error: out of memory");
    job_finish(job, AG_ENOMEM);
    goto done;
  }
  job_finish(job, 0);
done:
  ag_buf_deinit(&u);
  ag_buf_deinit(&text);
  ag_buf_deinit(&title);
}

static int start_extract(ag_tool_job *job, const char *args) {
  exec_web *ex = job->ex;
  ag_tool_output *o = job->out;
  ag_json *a = ag_json_parse(args, strlen(args), NULL, 0);
  const char *url = ag_json_get_str(a, "url");
  bool given = url && *url;
  job->url = given ? ag_strdup(url) : NULL;
  ag_json_free(a);
  if (!given) {
    ag_tool_output_fail(o, "error: the argument \"url\" must be an http or https URL");
    return AG_EINVAL;
  }
  if (!job->url) return AG_ENOMEM;
  ag_ssrf_fetch_opts f = {
      .method = "GET",
      .url = job->url,
      .headers = (const char *const[]){"Accept: text/html, application/xhtml+xml, text/plain;q=0.9, "
                                       "application/json;q=0.8, */*;q=0.1",
                                       "User-Agent: Mozilla/5.0 (compatible; agentd)", NULL},
      .timeout_ms = job->timeout_ms,
      .max_bytes = job->cfg.max_download,
      .truncate = true,
      .max_redirects = job->cfg.max_redirects,
      .policy = &ex->policy,
      .check_response = check_page,
      .on_done = on_page_done,
      .ud = job,
  };
  int rc = ag_ssrf_fetch_start(ex->env->loop, ex->http, &f, &job->fetch);
  if (rc < 0) {
    job->fetch = NULL;
    ag_tool_output_fail(o, "error: could not start the request: %s", ag_strerror(rc));
  }
  return rc;
}

/* ---- create_report ---- */

/* Where a final "## Sources" (or "## References") section the model wrote starts, or len. */
static size_t own_sources_at(const char *s, size_t len) {
  size_t at = len;
  for (size_t i = 0; i < len; i++) {
    if (i > 0 && s[i - 1] != '\n') continue;
    ag_slice line = {s + i, 0};
    while (i + line.len < len && s[i + line.len] != '\n')
      line.len++;
    while (line.len &&
           (line.ptr[line.len - 1] == ' ' || line.ptr[line.len - 1] == '\r' || line.ptr[line.len - 1] == ':'))
      line.len--;
    if (ag_slice_ieq_cstr(line, "## sources") || ag_slice_ieq_cstr(line, "## references") ||
        ag_slice_ieq_cstr(line, "# sources") || ag_slice_ieq_cstr(line, "# references"))
      at = i;
  }
  return at;
}

/* Marks the numbers cited as [n] or [n, m, ...]; numbers past n_sources go to bad (up to 16). */
static void find_citations(const char *s, size_t len, bool *cited, size_t n_sources, size_t *bad, size_t *n_bad) {
  for (size_t i = 0; i < len; i++) {
    if (s[i] != '[') continue;
    size_t j = i + 1;
    size_t nums[32], k = 0;
    bool ok = false;
    for (;;) {
      size_t v = 0, d = 0;
      while (j < len && s[j] >= '0' && s[j] <= '9' && d < 7) {
        v = v * 10 + (size_t)(s[j] - '0');
        j++, d++;
      }
      if (d == 0 || (j < len && s[j] >= '0' && s[j] <= '9')) break;
      if (k < AG_ARRAY_LEN(nums)) nums[k++] = v;
      while (j < len && s[j] == ' ')
        j++;
      if (j < len && s[j] == ']') {
        ok = true;
        break;
      }
      if (j < len && s[j] == ',') {
        j++;
        while (j < len && s[j] == ' ')
          j++;
        continue;
      }
      break;
    }
    if (!ok) continue;
    /* "[1](https://...)" is a Markdown link whose text is a number: a citation all the same. */
    for (size_t m = 0; m < k; m++) {
      if (nums[m] >= 1 && nums[m] <= n_sources) {
        cited[nums[m] - 1] = true;
      } else {
        bool seen = false;
        for (size_t b = 0; b < *n_bad; b++)
          seen |= bad[b] == nums[m];
        if (!seen && *n_bad < 16) bad[(*n_bad)++] = nums[m];
      }
    }
    i = j;
  }
}

/* "market-report-2024.md" from a title: ASCII letters and digits, runs of anything else as one
 * dash, at most 60 characters. */
static void report_name(const char *title, char *out, size_t outlen) {
  size_t n = 0;
  bool dash = false;
  for (const unsigned char *p = (const unsigned char *)title; *p && n + 4 < outlen && n < 60; p++) {
    unsigned char c = *p;
    if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      if (dash && n) out[n++] = '-';
      dash = false;
      out[n++] = (char)c;
    } else {
      dash = true;
    }
  }
  if (n == 0) {
    snprintf(out, outlen, "report.md");
    return;
  }
  snprintf(out + n, outlen - n, ".md");
}

/* Markdown for a title inside a list item: brackets escaped, one line. */
static int append_md_title(ag_buf *b, const char *s) {
  int rc = 0;
  for (; *s && rc == 0; s++) {
    if (*s == '[' || *s == ']' || *s == '*' || *s == '_' || *s == '`' || *s == '\\') rc = ag_buf_append_char(b, '\\');
    if (rc == 0) rc = ag_buf_append_char(b, *s == '\n' || *s == '\r' ? ' ' : *s);
  }
  return rc;
}

static int run_report(ag_tool_job *job, const ag_tool_call *call) {
  ag_tool_output *o = job->out;
  ag_json *a = ag_json_parse(call->args, strlen(call->args), NULL, 0);
  ag_json *tv = ag_json_get(a, "title"), *cv = ag_json_get(a, "content");
  int rc = AG_EINVAL;
  ag_buf title, content, md;
  ag_buf_init(&title, MAX_TITLE + 8);
  ag_buf_init(&content, job->cfg.max_report);
  ag_buf_init(&md, job->cfg.max_report);
  bool *cited = NULL;
  if (ag_json_is(tv, AG_JSON_STRING)) {
    ag_buf u;
    ag_buf_init(&u, ag_json_str_len(tv) * 3 + 1);
    if (ag_html_to_utf8(ag_json_str(tv), ag_json_str_len(tv), AG_CHARSET_UTF8, &u) == 0 &&
        append_collapsed(&title, ag_buf_cstr(&u), u.len, MAX_TITLE) < 0)
      ag_buf_reset(&title);
    ag_buf_deinit(&u);
  }
  if (title.len == 0) {
    ag_tool_output_fail(o, "error: the argument \"title\" must be a non-empty string");
    goto done;
  }
  if (!ag_json_is(cv, AG_JSON_STRING) || ag_json_str_len(cv) == 0) {
    ag_tool_output_fail(o, "error: the argument \"content\" must be a non-empty string");
    goto done;
  }
  int crc = ag_html_to_utf8(ag_json_str(cv), ag_json_str_len(cv), AG_CHARSET_UTF8, &content);
  if (crc == AG_ETOOBIG) {
    ag_tool_output_fail(o, "error: the report is larger than %zu bytes; shorten it", job->cfg.max_report);
    rc = AG_ETOOBIG;
    goto done;
  }
  if (crc < 0) goto oom;
  if (content.len == 0) {
    ag_tool_output_fail(o, "error: the argument \"content\" must be a non-empty string");
    goto done;
  }
  size_t clen = own_sources_at(content.ptr, content.len);
  while (clen && (content.ptr[clen - 1] == '\n' || content.ptr[clen - 1] == ' ' || content.ptr[clen - 1] == '\r'))
    clen--;
  size_t start = 0;
  while (start < clen && (content.ptr[start] == '\n' || content.ptr[start] == '\r'))
    start++;

  size_t n_src = call->n_sources;
  cited = calloc(n_src + 1, sizeof *cited);
  if (!cited) goto oom;
  size_t bad[16], n_bad = 0, n_cited = 0;
  find_citations(content.ptr + start, clen - start, cited, n_src, bad, &n_bad);

  bool has_h1 = clen - start >= 2 && content.ptr[start] == '#' && content.ptr[start + 1] == ' ';
  rc = 0;
  if (!has_h1) rc = ag_buf_appendf(&md, "# %s\n\n", ag_buf_cstr(&title));
  if (rc == 0) rc = ag_buf_append(&md, content.ptr + start, clen - start);
  if (rc == 0) rc = ag_buf_append_char(&md, '\n');
  for (size_t i = 0; i < n_src && rc == 0; i++) {
    if (!cited[i]) continue;
    const ag_tool_source *s = &call->sources[i];
    if (n_cited++ == 0) rc = ag_buf_append_str(&md, "\n## Sources\n\n");
    if (rc == 0) rc = ag_buf_appendf(&md, "- [%zu] ", i + 1);
    if (rc == 0 && s->title && *s->title) {
      rc = append_md_title(&md, s->title);
      if (rc == 0) rc = ag_buf_append_str(&md, " - ");
    }
    bool plain = strpbrk(s->url, " <>") != NULL;
    if (rc == 0) rc = ag_buf_appendf(&md, "%s%s%s\n", plain ? "" : "<", s->url, plain ? "" : ">");
  }
  if (rc == AG_ETOOBIG) {
    ag_tool_output_fail(o, "error: the report with its sources is larger than %zu bytes; shorten it",
                        job->cfg.max_report);
    goto done;
  }
  if (rc < 0) goto oom;
  char name[80];
  report_name(ag_buf_cstr(&title), name, sizeof name);
  if ((rc = ag_tool_output_add_artifact(o, name, "text/markdown", ag_buf_cstr(&md))) < 0) goto oom;
  ag_buf *t = &o->text;
  ag_buf_reset(t);
  rc = ag_buf_appendf(t, "Report \"%s\" created: %s (%zu bytes, cites %zu of %zu sources).", ag_buf_cstr(&title), name,
                      md.len, n_cited, n_src);
  if (rc == 0 && n_cited == 0 && n_src > 0)
    rc = ag_buf_appendf(t, " It cites no sources; [1] to [%zu] are available.", n_src);
  for (size_t b = 0; b < n_bad && rc == 0; b++)
    rc = ag_buf_appendf(t, "%s[%zu]%s", b ? ", " : " No source has the number ", bad[b], b + 1 == n_bad ? "." : "");
  if (rc < 0) ag_buf_reset(t); /* the artifact exists; a shorter message would still be true */
  rc = 0;
  goto done;
oom:
  ag_tool_output_fail(o, "error: out of memory");
  rc = AG_ENOMEM;
done:
  free(cited);
  ag_json_free(a);
  ag_buf_deinit(&title);
  ag_buf_deinit(&content);
  ag_buf_deinit(&md);
  return rc;
}

/* ---- the executor ---- */

static int web_start(ag_executor *base, const ag_tool_call *call, ag_tool_done_fn cb, void *ud, ag_tool_job **out) {
  exec_web *ex = (exec_web *)base;
  *out = NULL;
  if (!call || !call->compiled || !cb) return AG_EINVAL;
  if (ex->closing) return AG_ESHUTDOWN;
  const web_tool *t = call->compiled;
  ag_tool_job *job = calloc(1, sizeof *job);
  if (!job) return AG_ENOMEM;
  job->ex = ex;
  job->cb = cb;
  job->ud = ud;
  job->cfg = *t;
  job->timeout_ms = t->timeout_ms;
  if (call->timeout_ms && call->timeout_ms < job->timeout_ms) job->timeout_ms = call->timeout_ms;
  size_t max_output = call->max_output      ? call->max_output
                      : ex->env->max_output ? ex->env->max_output
                                            : DEFAULT_MAX_OUTPUT;
  job->out = ag_tool_output_new(max_output);
  job->session_id = ag_strdup(call->session_id);
  bool oom = !job->out || (call->session_id && !job->session_id);
  /* The session's sources are borrowed for start() only; the numbering needs their URLs later. */
  if (!oom && t->fn != FN_REPORT && call->n_sources) {
    job->known = calloc(call->n_sources, sizeof *job->known);
    oom = !job->known;
    for (size_t i = 0; !oom && i < call->n_sources; i++) {
      job->known[i] = ag_strdup(call->sources[i].url ? call->sources[i].url : "");
      oom = !job->known[i];
      job->n_known += !oom;
    }
  }
  if (oom || uv_timer_init(ex->env->loop, &job->timer) < 0) {
    ag_tool_output_free(job->out);
    job_free_fields(job);
    free(job);
    return AG_ENOMEM;
  }
  job->timer.data = job;
  job->next = ex->jobs;
  if (ex->jobs) ex->jobs->prev = job;
  ex->jobs = job;
  ex->n_jobs++;
  *out = job;

  const char *args = call->args && *call->args ? call->args : "{}";
  int rc;
  switch (t->fn) {
  case FN_SEARCH: rc = start_search(job, args); break;
  case FN_EXTRACT: rc = start_extract(job, args); break;
  default: {
    ag_tool_call c = *call;
    c.args = args;
    rc = run_report(job, &c);
    job_finish(job, rc);
    return 0;
  }
  }
  if (rc < 0) {
    if (rc == AG_ENOMEM && !job->out->is_error) ag_tool_output_fail(job->out, "error: out of memory");
    job_finish(job, rc);
  }
  ag_log_debug(call->session_id, "web tool %s started", call->tool_name ? call->tool_name : "?");
  return 0;
}

static void web_cancel(ag_executor *base, ag_tool_job *job) {
  (void)base;
  if (!job || job->finishing) return;
  if (job->fetch) ag_ssrf_fetch_cancel(job->fetch);
}

static void client_closed(void *ud) {
  exec_web *ex = ud;
  void (*done)(void *) = ex->done;
  void *done_ud = ex->done_ud;
  free(ex);
  if (done) done(done_ud);
}

static void close_client_if_idle(exec_web *ex) {
  if (!ex->closing || ex->n_jobs > 0 || !ex->http) return;
  ag_http_client *c = ex->http;
  ex->http = NULL;
  ag_http_client_close(c, client_closed, ex);
}

static void web_close(ag_executor *base, void (*done)(void *ud), void *ud) {
  exec_web *ex = (exec_web *)base;
  if (!ex) return;
  ex->closing = true;
  ex->done = done;
  ex->done_ud = ud;
  for (ag_tool_job *j = ex->jobs; j; j = j->next)
    web_cancel(base, j);
  close_client_if_idle(ex);
}

static const struct ag_executor_vtbl web_vtbl = {
    .kind = "builtin-web",
    .compile = web_compile,
    .release = web_release,
    .start = web_start,
    .cancel = web_cancel,
    .close = web_close,
};

int ag_exec_web_new(const ag_tool_env *env, ag_executor **out) {
  *out = NULL;
  if (!env || !env->loop) return AG_EINVAL;
  exec_web *ex = calloc(1, sizeof *ex);
  if (!ex) return AG_ENOMEM;
  ex->base.vt = &web_vtbl;
  ex->env = env;
  ex->policy.allow_private = env->allow_private_hosts;
  ex->trusted.allow_private = true;
  int rc = ag_http_client_new(env->loop, &ex->http);
  if (rc < 0) {
    free(ex);
    return rc;
  }
  *out = &ex->base;
  return 0;
}
