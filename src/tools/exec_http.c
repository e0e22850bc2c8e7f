/* The "http" executor (see exec_http.h).
 *
 * compile() turns the configuration into an http_tool; start() makes a job that runs one guarded
 * fetch (net/ssrf.h) and maps its result to a tool output. Each job owns a uv_timer_t used only
 * to deliver the callback from the loop: every ending, also a failure found inside start, goes
 * through job_finish(), which arms it. close() cancels the jobs, waits until the last one's
 * handle is closed, then closes the executor's own HTTP client and only then reports done. */
#include "tools/exec_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/json.h"
#include "base/log.h"
#include "net/http_client.h"
#include "net/ssrf.h"
#include "tools/html_text.h"

#define DEFAULT_TIMEOUT_MS 30000u
#define MAX_TIMEOUT_MS 600000
#define DEFAULT_MAX_RESPONSE ((size_t)1 << 20)
#define MAX_RESPONSE ((long long)64 << 20)
#define DEFAULT_MAX_OUTPUT ((size_t)256 << 10)
#define MAX_HEADERS 32
#define MAX_HEADER_VALUE 8192
#define MAX_POINTER 1024
#define ERROR_EXCERPT 1024

typedef struct http_header {
  char *name;
  char *value; /* a static value, or the prefix of an environment one */
  char *env;   /* NULL for a static value */
} http_header;

typedef struct http_tool {
  char *url;
  char *method;
  http_header *headers;
  size_t n_headers;
  uint64_t timeout_ms; /* 0 = the call's or env's */
  size_t max_response;
  char *pointer; /* NULL: the body */
} http_tool;

typedef struct exec_http {
  ag_executor base;
  const ag_tool_env *env;
  ag_http_client *http; /* guarded requests only */
  ag_ssrf_policy policy;
  ag_tool_job *jobs;
  size_t n_jobs;
  bool closing;
  void (*done)(void *ud);
  void *done_ud;
} exec_http;

struct ag_tool_job {
  exec_http *ex;
  ag_tool_job *prev, *next;
  uv_timer_t timer;
  ag_ssrf_fetch *fetch;
  ag_tool_output *out;
  int err;
  bool finishing;
  char *pointer;
  size_t max_response;
  uint64_t timeout_ms;
  uint64_t started;
  char *session_id;
  char *tool_name;
  ag_tool_done_fn cb;
  void *ud;
};

/* ---- configuration ---- */

static void tool_free(http_tool *t) {
  if (!t) return;
  free(t->url);
  free(t->method);
  for (size_t i = 0; i < t->n_headers; i++) {
    free(t->headers[i].name);
    free(t->headers[i].value);
    free(t->headers[i].env);
  }
  free(t->headers);
  free(t->pointer);
  free(t);
}

static bool is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool valid_header_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64) return false;
  for (size_t i = 0; i < n; i++)
    if (!is_tchar((unsigned char)s[i])) return false;
  return true;
}

/* Framing and hop-by-hop headers are agentd's (and curl's) to write. */
static bool reserved_header(const char *s) {
  static const char *const names[] = {
      "host", "content-length", "transfer-encoding", "connection",          "content-type",    "expect", "upgrade",
      "te",   "trailer",        "keep-alive",        "proxy-authorization", "proxy-connection"};
  for (size_t i = 0; i < AG_ARRAY_LEN(names); i++)
    if (ag_slice_ieq_cstr(ag_slice_cstr(s), names[i])) return true;
  return false;
}

static bool valid_header_value(const char *s, size_t len) {
  if (len > MAX_HEADER_VALUE) return false;
  for (size_t i = 0; i < len; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return false;
  return true;
}

static bool valid_env_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 128 || (s[0] >= '0' && s[0] <= '9')) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

/* RFC 6901: "" or "/a/b", with "~" only as "~0" or "~1". */
static bool valid_pointer(const char *p) {
  if (strlen(p) > MAX_POINTER || (*p && *p != '/')) return false;
  for (; *p; p++)
    if (*p == '~' && p[1] != '0' && p[1] != '1') return false;
  return true;
}

#define CFG_FAIL(...)                                                                                                  \
  do {                                                                                                                 \
    snprintf(err, errlen, __VA_ARGS__);                                                                                \
    goto fail;                                                                                                         \
  } while (0)

static int compile_header(http_header *h, const char *name, ag_json *v, char *err, size_t errlen) {
  if (!valid_header_name(name)) {
    snprintf(err, errlen, "executor_config.headers: \"%.64s\" is not a valid header name", name);
    return AG_EINVAL;
  }
  if (reserved_header(name)) {
    snprintf(err, errlen, "executor_config.headers.%s: is set by agentd and cannot be configured", name);
    return AG_EINVAL;
  }
  if (!(h->name = ag_strdup(name))) return AG_ENOMEM;
  if (ag_json_is(v, AG_JSON_STRING)) {
    if (!valid_header_value(ag_json_str(v), ag_json_str_len(v))) {
      snprintf(err, errlen, "executor_config.headers.%s: must be one line of at most %d bytes", name, MAX_HEADER_VALUE);
      return AG_EINVAL;
    }
    return (h->value = ag_strdup(ag_json_str(v))) ? 0 : AG_ENOMEM;
  }
  if (!ag_json_is(v, AG_JSON_OBJECT)) {
    snprintf(err, errlen, "executor_config.headers.%s: must be a string or {\"from_env\": NAME, \"prefix\": ...}",
             name);
    return AG_EINVAL;
  }
  for (void *it = ag_json_iter(v); it; it = ag_json_iter_next(v, it)) {
    const char *k = ag_json_iter_key(it);
    if (strcmp(k, "from_env") != 0 && strcmp(k, "prefix") != 0) {
      snprintf(err, errlen, "executor_config.headers.%s.%.64s: unknown key", name, k);
      return AG_EINVAL;
    }
  }
  ag_json *env = ag_json_get(v, "from_env"), *prefix = ag_json_get(v, "prefix");
  const char *var = ag_json_str(env);
  if (!var || !valid_env_name(var)) {
    snprintf(err, errlen, "executor_config.headers.%s.from_env: must be the name of an environment variable", name);
    return AG_EINVAL;
  }
  /* A tool's configuration must not be a way to mail agentd's own settings (its database URL
   * among them) to an arbitrary server. */
  if (strncmp(var, "AGENTD_", 7) == 0) {
    snprintf(err, errlen, "executor_config.headers.%s.from_env: AGENTD_* variables are agentd's own settings", name);
    return AG_EINVAL;
  }
  if (!getenv(var)) {
    snprintf(err, errlen, "executor_config.headers.%s.from_env: environment variable %s is not set", name, var);
    return AG_EINVAL;
  }
  if (prefix &&
      (!ag_json_is(prefix, AG_JSON_STRING) || !valid_header_value(ag_json_str(prefix), ag_json_str_len(prefix)))) {
    snprintf(err, errlen, "executor_config.headers.%s.prefix: must be a one-line string", name);
    return AG_EINVAL;
  }
  h->env = ag_strdup(var);
  h->value = ag_strdup(prefix ? ag_json_str(prefix) : "");
  return h->env && h->value ? 0 : AG_ENOMEM;
}

static int http_compile(ag_executor *base, const char *config, void **out, char *err, size_t errlen) {
  exec_http *ex = (exec_http *)base;
  *out = NULL;
  int rc = AG_EINVAL;
  char perr[200];
  ag_json *j = ag_json_parse(config ? config : "", config ? strlen(config) : 0, perr, sizeof perr);
  http_tool *t = calloc(1, sizeof *t);
  if (!t) {
    ag_json_free(j);
    snprintf(err, errlen, "out of memory");
    return AG_ENOMEM;
  }
  if (!j) CFG_FAIL("executor_config: not valid JSON (%s)", perr);
  if (!ag_json_is(j, AG_JSON_OBJECT)) CFG_FAIL("executor_config: must be a JSON object");
  static const char *const keys[] = {"url", "method", "headers", "timeout_ms", "max_response_bytes", "result"};
  for (void *it = ag_json_iter(j); it; it = ag_json_iter_next(j, it)) {
    const char *k = ag_json_iter_key(it);
    bool known = false;
    for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++)
      known |= strcmp(k, keys[i]) == 0;
    if (!known) CFG_FAIL("executor_config.%.64s: unknown key", k);
  }

  const char *url = ag_json_get_str(j, "url");
  if (!url) CFG_FAIL("executor_config.url: is required (a string)");
  char uerr[256];
  rc = ag_ssrf_check_url(&ex->policy, url, uerr, sizeof uerr);
  if (rc < 0) {
    if (rc == AG_ENOMEM) goto oom;
    rc = AG_EINVAL;
    CFG_FAIL("executor_config.url: %s", uerr);
  }
  rc = AG_EINVAL;
  if (!(t->url = ag_strdup(url))) goto oom;

  ag_json *m = ag_json_get(j, "method");
  const char *method = "POST";
  if (m) {
    const char *s = ag_json_str(m);
    static const char *const methods[] = {"POST", "PUT", "PATCH"};
    method = NULL;
    for (size_t i = 0; s && i < AG_ARRAY_LEN(methods); i++)
      if (ag_slice_ieq_cstr(ag_slice_cstr(s), methods[i])) method = methods[i];
    if (!method) CFG_FAIL("executor_config.method: must be \"POST\", \"PUT\" or \"PATCH\"");
  }
  if (!(t->method = ag_strdup(method))) goto oom;

  ag_json *h = ag_json_get(j, "headers");
  if (h) {
    if (!ag_json_is(h, AG_JSON_OBJECT)) CFG_FAIL("executor_config.headers: must be an object of header names");
    if (ag_json_len(h) > MAX_HEADERS) CFG_FAIL("executor_config.headers: at most %d headers", MAX_HEADERS);
    if (!(t->headers = calloc(ag_json_len(h) + 1, sizeof *t->headers))) goto oom;
    for (void *it = ag_json_iter(h); it; it = ag_json_iter_next(h, it)) {
      rc = compile_header(&t->headers[t->n_headers++], ag_json_iter_key(it), ag_json_iter_value(it), err, errlen);
      if (rc == AG_ENOMEM) goto oom;
      if (rc < 0) goto fail;
    }
  }

  ag_json *v = ag_json_get(j, "timeout_ms");
  if (v) {
    long long ms = ag_json_is(v, AG_JSON_INT) ? ag_json_int(v) : 0;
    if (ms < 1 || ms > MAX_TIMEOUT_MS)
      CFG_FAIL("executor_config.timeout_ms: must be an integer from 1 to %d", MAX_TIMEOUT_MS);
    t->timeout_ms = (uint64_t)ms;
  }
  t->max_response = DEFAULT_MAX_RESPONSE;
  if ((v = ag_json_get(j, "max_response_bytes"))) {
    long long n = ag_json_is(v, AG_JSON_INT) ? ag_json_int(v) : 0;
    if (n < 1 || n > MAX_RESPONSE)
      CFG_FAIL("executor_config.max_response_bytes: must be an integer from 1 to %lld", MAX_RESPONSE);
    t->max_response = (size_t)n;
  }

  if ((v = ag_json_get(j, "result"))) {
    if (ag_json_is(v, AG_JSON_STRING) && strcmp(ag_json_str(v), "body") == 0) {
      /* the default */
    } else if (ag_json_is(v, AG_JSON_OBJECT)) {
      for (void *it = ag_json_iter(v); it; it = ag_json_iter_next(v, it))
        if (strcmp(ag_json_iter_key(it), "json_pointer") != 0)
          CFG_FAIL("executor_config.result.%.64s: unknown key", ag_json_iter_key(it));
      const char *p = ag_json_get_str(v, "json_pointer");
      if (!p || !valid_pointer(p))
        CFG_FAIL("executor_config.result.json_pointer: must be a JSON pointer such as \"/data/0/text\"");
      if (!(t->pointer = ag_strdup(p))) goto oom;
    } else {
      CFG_FAIL("executor_config.result: must be \"body\" or {\"json_pointer\": \"/...\"}");
    }
  }
  ag_json_free(j);
  *out = t;
  return 0;
oom:
  snprintf(err, errlen, "out of memory");
  rc = AG_ENOMEM;
fail:
  ag_json_free(j);
  tool_free(t);
  return rc < 0 ? rc : AG_EINVAL;
}

static void http_release(ag_executor *base, void *compiled) {
  (void)base;
  tool_free(compiled);
}

/* ---- results ---- */

/* Replaces the output's text with s (valid UTF-8), cut to the cap with a note when too long. */
static void output_text(ag_tool_output *o, const char *s, size_t len) {
  ag_buf_reset(&o->text);
  size_t max = o->text.max;
  if (len <= max) {
    if (ag_buf_append(&o->text, s, len) < 0) ag_tool_output_fail(o, "error: out of memory");
    return;
  }
  char note[96];
  size_t reserve = sizeof note;
  size_t cut = ag_utf8_cut(s, max > reserve ? max - reserve : max);
  if (ag_buf_append(&o->text, s, cut) < 0) {
    ag_tool_output_fail(o, "error: out of memory");
    return;
  }
  if (max > reserve) {
    int n = snprintf(note, sizeof note, "\n[truncated: the first %zu of %zu bytes]", cut, len);
    if (n > 0 && ag_buf_append(&o->text, note, (size_t)n) < 0) ag_buf_reset(&o->text);
  }
}

/* The JSON value at an RFC 6901 pointer, borrowed from doc; NULL if there is none. */
static ag_json *json_at_pointer(ag_json *doc, const char *p) {
  ag_json *cur = doc;
  char tok[MAX_POINTER + 1];
  while (cur && *p == '/') {
    p++;
    size_t n = 0;
    for (; *p && *p != '/'; p++) {
      char c = *p;
      if (c == '~') c = *++p == '1' ? '/' : '~';
      if (n < MAX_POINTER) tok[n++] = c;
    }
    tok[n] = '\0';
    if (ag_json_is(cur, AG_JSON_OBJECT)) {
      cur = ag_json_get(cur, tok);
    } else if (ag_json_is(cur, AG_JSON_ARRAY)) {
      if (n == 0 || n > 9 || (tok[0] == '0' && n > 1)) return NULL;
      size_t idx = 0;
      for (size_t i = 0; i < n; i++) {
        if (tok[i] < '0' || tok[i] > '9') return NULL;
        idx = idx * 10 + (size_t)(tok[i] - '0');
      }
      cur = ag_json_at(cur, idx);
    } else {
      return NULL;
    }
  }
  return cur;
}

/* Sets the text from a response body: decoded to valid UTF-8, capped. */
static void output_body(ag_tool_output *o, const char *body, size_t len) {
  ag_buf u;
  /* Replacements can triple the size; one byte past the cap is enough to know it is cut. */
  size_t cap = len * 3 + 1;
  ag_buf_init(&u, cap);
  int rc = ag_html_to_utf8(body, len, AG_CHARSET_UTF8, &u);
  if (rc == AG_ENOMEM)
    ag_tool_output_fail(o, "error: out of memory");
  else
    output_text(o, ag_buf_cstr(&u), u.len);
  ag_buf_deinit(&u);
}

static void map_success(ag_tool_job *job, const ag_ssrf_result *r) {
  ag_tool_output *o = job->out;
  if (r->body.len == 0) {
    ag_buf_reset(&o->text);
    if (ag_buf_appendf(&o->text, "(no content; HTTP %ld)", r->status) < 0) ag_buf_reset(&o->text);
    return;
  }
  if (!job->pointer) {
    output_body(o, r->body.ptr, r->body.len);
    return;
  }
  char perr[160];
  ag_json *doc = ag_json_parse(r->body.ptr, r->body.len, perr, sizeof perr);
  if (!doc) {
    ag_tool_output_fail(o, "error: the tool's response is not JSON (%s)", perr);
    return;
  }
  ag_json *v = json_at_pointer(doc, job->pointer);
  if (!v) {
    ag_tool_output_fail(o, "error: the tool's response has no value at %s", job->pointer);
  } else if (ag_json_is(v, AG_JSON_STRING)) {
    output_body(o, ag_json_str(v), ag_json_str_len(v));
  } else {
    char *s = ag_json_dumps(v);
    if (s)
      output_text(o, s, strlen(s));
    else
      ag_tool_output_fail(o, "error: out of memory");
    free(s);
  }
  ag_json_free(doc);
}

static void map_http_error(ag_tool_job *job, const ag_ssrf_result *r) {
  ag_tool_output *o = job->out;
  ag_buf u;
  ag_buf_init(&u, ERROR_EXCERPT);
  int rc = ag_html_to_utf8(r->body.ptr, r->body.len, AG_CHARSET_UTF8, &u);
  ag_tool_output_fail(o, "error: HTTP %ld from the tool's server%s%s%s", r->status, u.len ? ": " : "", ag_buf_cstr(&u),
                      rc == AG_ETOOBIG ? " [...]" : "");
  ag_buf_deinit(&u);
}

/* ---- jobs ---- */

static void job_timer_fired(uv_timer_t *t);

static void job_finish(ag_tool_job *job, int err) {
  if (job->finishing) return;
  job->finishing = true;
  job->err = err;
  uv_timer_start(&job->timer, job_timer_fired, 0, 0);
}

static void close_client_if_idle(exec_http *ex);

static void job_closed(uv_handle_t *h) {
  ag_tool_job *job = h->data;
  exec_http *ex = job->ex;
  if (job->prev)
    job->prev->next = job->next;
  else
    ex->jobs = job->next;
  if (job->next) job->next->prev = job->prev;
  ex->n_jobs--;
  free(job->pointer);
  free(job->session_id);
  free(job->tool_name);
  free(job);
  close_client_if_idle(ex);
}

static void job_timer_fired(uv_timer_t *t) {
  ag_tool_job *job = t->data;
  ag_tool_output *out = job->out;
  job->out = NULL;
  int err = job->err;
  if (!out && err == 0) err = AG_ENOMEM;
  ag_log_debug(job->session_id, "http tool %s: %s in %llu ms", job->tool_name ? job->tool_name : "?",
               err             ? ag_strerror(err)
               : out->is_error ? "is_error"
                               : "ok",
               (unsigned long long)(uv_now(t->loop) - job->started));
  job->cb(err, out, job->ud);
  uv_close((uv_handle_t *)&job->timer, job_closed);
}

static void on_fetched(const ag_ssrf_result *r, void *ud) {
  ag_tool_job *job = ud;
  job->fetch = NULL;
  ag_tool_output *o = job->out;
  int err = r->err;
  if (!o) {
    job_finish(job, AG_ENOMEM);
    return;
  }
  switch (err) {
  case 0:
    if (r->status >= 200 && r->status < 300)
      map_success(job, r);
    else
      map_http_error(job, r);
    break;
  case AG_ECANCELED: ag_tool_output_fail(o, "error: the call was cancelled"); break;
  case AG_ETOOBIG:
    ag_tool_output_fail(o, "error: the tool's response is larger than max_response_bytes (%zu bytes)",
                        job->max_response);
    break;
  case AG_ETIMEDOUT:
    ag_tool_output_fail(o, "error: the tool's server did not answer within %llu ms",
                        (unsigned long long)job->timeout_ms);
    break;
  default: ag_tool_output_fail(o, "error: calling the tool failed: %s", r->message); break;
  }
  job_finish(job, err);
}

static void free_headers(char **h) {
  if (!h) return;
  for (char **p = h; *p; p++) {
    explicit_bzero(*p, strlen(*p)); /* some carry secrets */
    free(*p);
  }
  free(h);
}

/* The request headers, secrets read from the environment now. NULL with a sentence in o on a
 * misconfiguration, or NULL and *oom. */
static char **build_headers(const http_tool *t, ag_tool_output *o, bool *oom) {
  *oom = false;
  char **h = calloc(t->n_headers + 4, sizeof *h);
  if (!h) goto oom;
  size_t n = 0;
  if (!(h[n++] = ag_strdup("Content-Type: application/json"))) goto oom;
  if (!(h[n++] = ag_strdup("Accept: application/json, text/plain;q=0.9, */*;q=0.5"))) goto oom;
  if (!(h[n++] = ag_strdup("User-Agent: agentd"))) goto oom;
  for (size_t i = 0; i < t->n_headers; i++) {
    const http_header *c = &t->headers[i];
    const char *v = "";
    if (c->env) {
      v = getenv(c->env);
      if (!v) {
        ag_tool_output_fail(o, "error: the tool is misconfigured: environment variable %s is not set", c->env);
        free_headers(h);
        return NULL;
      }
      if (!valid_header_value(v, strlen(v))) {
        ag_tool_output_fail(o, "error: the tool is misconfigured: environment variable %s is not one line", c->env);
        free_headers(h);
        return NULL;
      }
    }
    ag_buf b;
    ag_buf_init(&b, 2 * MAX_HEADER_VALUE + 128);
    if (ag_buf_appendf(&b, "%s: %s%s", c->name, c->value, v) < 0) {
      ag_buf_deinit(&b);
      goto oom;
    }
    if (!(h[n++] = ag_buf_take(&b))) goto oom;
  }
  return h;
oom:
  free_headers(h);
  *oom = true;
  return NULL;
}

static int http_start(ag_executor *base, const ag_tool_call *call, ag_tool_done_fn cb, void *ud, ag_tool_job **out) {
  exec_http *ex = (exec_http *)base;
  *out = NULL;
  if (!call || !call->compiled || !cb) return AG_EINVAL;
  if (ex->closing) return AG_ESHUTDOWN;
  const http_tool *t = call->compiled;
  ag_tool_job *job = calloc(1, sizeof *job);
  if (!job) return AG_ENOMEM;
  job->ex = ex;
  job->cb = cb;
  job->ud = ud;
  job->max_response = t->max_response;
  size_t max_output = call->max_output      ? call->max_output
                      : ex->env->max_output ? ex->env->max_output
                                            : DEFAULT_MAX_OUTPUT;
  uint64_t timeout = t->timeout_ms;
  if (call->timeout_ms && (!timeout || call->timeout_ms < timeout)) timeout = call->timeout_ms;
  if (!timeout) timeout = ex->env->timeout_ms ? ex->env->timeout_ms : DEFAULT_TIMEOUT_MS;
  job->timeout_ms = timeout;
  job->out = ag_tool_output_new(max_output);
  job->session_id = ag_strdup(call->session_id);
  job->tool_name = ag_strdup(call->tool_name);
  job->pointer = ag_strdup(t->pointer);
  if (!job->out || (t->pointer && !job->pointer) || uv_timer_init(ex->env->loop, &job->timer) < 0) {
    ag_tool_output_free(job->out);
    free(job->session_id);
    free(job->tool_name);
    free(job->pointer);
    free(job);
    return AG_ENOMEM;
  }
  job->timer.data = job;
  job->started = uv_now(ex->env->loop);
  job->next = ex->jobs;
  if (ex->jobs) ex->jobs->prev = job;
  ex->jobs = job;
  ex->n_jobs++;
  *out = job;

  bool oom;
  char **headers = build_headers(t, job->out, &oom);
  if (!headers) {
    job_finish(job, oom ? AG_ENOMEM : AG_EINVAL);
    return 0;
  }
  const char *args = call->args && *call->args ? call->args : "{}";
  ag_ssrf_fetch_opts o = {
      .method = t->method,
      .url = t->url,
      .headers = (const char *const *)headers,
      .body = args,
      .body_len = strlen(args),
      .timeout_ms = timeout,
      .max_bytes = t->max_response,
      .policy = &ex->policy,
      .on_done = on_fetched,
      .ud = job,
  };
  int rc = ag_ssrf_fetch_start(ex->env->loop, ex->http, &o, &job->fetch);
  free_headers(headers);
  if (rc < 0) {
    job->fetch = NULL;
    ag_tool_output_fail(job->out, "error: could not start the request: %s", ag_strerror(rc));
    job_finish(job, rc);
  }
  return 0;
}

static void http_cancel(ag_executor *base, ag_tool_job *job) {
  (void)base;
  if (!job || job->finishing) return;
  if (job->fetch) ag_ssrf_fetch_cancel(job->fetch);
}

static void client_closed(void *ud) {
  exec_http *ex = ud;
  void (*done)(void *) = ex->done;
  void *done_ud = ex->done_ud;
  free(ex);
  if (done) done(done_ud);
}

static void close_client_if_idle(exec_http *ex) {
  if (!ex->closing || ex->n_jobs > 0 || !ex->http) return;
  ag_http_client *c = ex->http;
  ex->http = NULL;
  ag_http_client_close(c, client_closed, ex);
}

static void http_close(ag_executor *base, void (*done)(void *ud), void *ud) {
  exec_http *ex = (exec_http *)base;
  if (!ex) return;
  ex->closing = true;
  ex->done = done;
  ex->done_ud = ud;
  for (ag_tool_job *j = ex->jobs; j; j = j->next)
    http_cancel(base, j);
  close_client_if_idle(ex);
}

static const struct ag_executor_vtbl http_vtbl = {
    .kind = "http",
    .compile = http_compile,
    .release = http_release,
    .start = http_start,
    .cancel = http_cancel,
    .close = http_close,
};

int ag_exec_http_new(const ag_tool_env *env, ag_executor **out) {
  *out = NULL;
  if (!env || !env->loop) return AG_EINVAL;
  exec_http *ex = calloc(1, sizeof *ex);
  if (!ex) return AG_ENOMEM;
  ex->base.vt = &http_vtbl;
  ex->env = env;
  ex->policy.allow_private = env->allow_private_hosts;
  int rc = ag_http_client_new(env->loop, &ex->http);
  if (rc < 0) {
    free(ex);
    return rc;
  }
  *out = &ex->base;
  return 0;
}
