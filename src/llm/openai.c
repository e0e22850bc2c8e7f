/* The OpenAI-compatible chat provider: POST {base_url}/chat/completions over the shared
 * ag_http_client, streamed (SSE) or not, with retries (see llm.h and docs/llm-client.md).
 *
 * The file has three parts. The codecs turn an ag_chat_request into request JSON and a
 * chat.completion body into an ag_chat_result. The stream assembler turns the SSE body, chunk by
 * chunk, into deltas for the caller and, at the end, into the same ag_chat_result. The provider
 * drives attempts: one ag_http_call per attempt, a uv timer for the backoff between attempts, and
 * a retry only while nothing has been shown to the caller yet, since a retried stream would
 * repeat text the user has already seen. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "base/util.h"
#include "llm/llm.h"
#include "llm/openai_internal.h"
#include "llm/sse.h"
#include "net/http_client.h"

#define DEFAULT_CONNECT_MS 10000u
#define DEFAULT_FIRST_BYTE_MS 120000u
#define DEFAULT_IDLE_MS 120000u
#define DEFAULT_TOTAL_MS 600000u
#define DEFAULT_MAX_RETRIES 3
#define DEFAULT_RETRY_BASE_MS 500u
#define DEFAULT_RETRY_MAX_MS 30000u
#define DEFAULT_MAX_RESPONSE ((size_t)16 << 20)
/* One SSE event is one chunk object: a few hundred bytes normally, more only when a server sends
 * a whole tool call at once. */
#define MAX_SSE_EVENT ((size_t)4 << 20)
#define MAX_REQUEST_BYTES ((size_t)64 << 20)
/* An error body is only read for its message. */
#define MAX_ERROR_BODY ((size_t)64 << 10)
#define MAX_ERROR_TEXT 400

/* ---- text helpers ---- */

/* Length of the valid UTF-8 sequence at s (at most n bytes available), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF)
    len = 2, cp = c & 0x1Fu;
  else if (c >= 0xE0 && c <= 0xEF)
    len = 3, cp = c & 0x0Fu;
  else if (c >= 0xF0 && c <= 0xF4)
    len = 4, cp = c & 0x07u;
  else
    return 0;
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3Fu);
  }
  if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
  if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
  return len;
}

/* Appends text fit for a one-line message: valid UTF-8 only, control characters as spaces, never
 * more than max bytes in total and never cutting a character in half. */
static void append_clean(ag_buf *b, const char *s, size_t len, size_t max) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < len;) {
    size_t n = utf8_seq(u + i, len - i);
    const char *out = n ? s + i : "?";
    size_t outlen = n ? n : 1;
    if (n == 1 && (u[i] < 0x20 || u[i] == 0x7f)) out = " ";
    if (b->len + outlen > max || ag_buf_append(b, out, outlen) < 0) return;
    i += n ? n : 1;
  }
}

/* A JSON string from text that should be UTF-8 but may not be (a tool's output, say): invalid
 * bytes become U+FFFD rather than failing the whole request. */
static ag_json *json_string_lossy(const char *s) {
  ag_json *j = ag_json_string_new(s);
  if (j || !s) return j;
  ag_buf b;
  ag_buf_init(&b, SIZE_MAX / 2);
  const unsigned char *u = (const unsigned char *)s;
  size_t len = strlen(s);
  for (size_t i = 0; i < len;) {
    size_t n = utf8_seq(u + i, len - i);
    if (ag_buf_append(&b, n ? s + i : "\xEF\xBF\xBD", n ? n : 3) < 0) break;
    i += n ? n : 1;
  }
  j = ag_json_string_new(ag_buf_cstr(&b));
  ag_buf_deinit(&b);
  return j;
}

void ag__openai_error_message(const char *body, size_t len, char *out, size_t outlen) {
  if (!outlen) return;
  out[0] = '\0';
  ag_buf b;
  ag_buf_init(&b, outlen - 1);
  ag_json *j = len ? ag_json_parse(body, len, NULL, 0) : NULL;
  ag_json *e = ag_json_get(j, "error");
  const char *msg = ag_json_get_str(e, "message");
  if (!msg) msg = ag_json_str(e);                /* {"error": "text"} */
  if (!msg) msg = ag_json_get_str(j, "message"); /* {"message": "text"} */
  if (!msg) msg = ag_json_get_str(j, "detail");  /* FastAPI-style servers */
  if (msg)
    append_clean(&b, msg, strlen(msg), outlen - 1);
  else if (!j)
    append_clean(&b, body, len, outlen - 1);
  ag_json_free(j);
  /* Trim the spaces that a cleaned-up multi-line body leaves behind. */
  while (b.len && b.ptr[b.len - 1] == ' ')
    b.len--;
  if (b.len) memcpy(out, b.ptr, b.len);
  out[b.len] = '\0';
  ag_buf_deinit(&b);
}

/* ---- request codec ---- */

static int set_str(ag_json *o, const char *key, const char *v) {
  return ag_json_set_take(o, key, json_string_lossy(v));
}

static ag_json *parse_schema(const char *text) {
  ag_json *j = ag_json_parse(text, strlen(text), NULL, 0);
  if (j && !ag_json_is(j, AG_JSON_OBJECT)) {
    ag_json_free(j);
    return NULL;
  }
  return j;
}

/* Every node is attached to its parent right after it is made, so that freeing the root on any
 * failure frees everything. */
static ag_json *add_obj(ag_json *parent, const char *key) {
  ag_json *o = ag_json_object_new();
  int rc = key ? ag_json_set_take(parent, key, o) : ag_json_push_take(parent, o);
  return rc < 0 ? NULL : o;
}

static ag_json *add_arr(ag_json *parent, const char *key) {
  ag_json *a = ag_json_array_new();
  return ag_json_set_take(parent, key, a) < 0 ? NULL : a;
}

static int build_message(const ag_msg *m, ag_json *msgs) {
  ag_json *o = add_obj(msgs, NULL);
  if (!o || set_str(o, "role", ag_role_name(m->role)) < 0) return AG_ENOMEM;
  bool has_calls = m->role == AG_ROLE_ASSISTANT && m->n_tool_calls > 0;
  /* OpenAI requires content on every message except an assistant message that carries tool calls. */
  int rc;
  if (m->content)
    rc = set_str(o, "content", m->content);
  else
    rc = ag_json_set_take(o, "content", has_calls ? ag_json_null_new() : ag_json_string_new(""));
  if (rc < 0) return rc;
  if (has_calls) {
    ag_json *arr = add_arr(o, "tool_calls");
    if (!arr) return AG_ENOMEM;
    for (size_t i = 0; i < m->n_tool_calls; i++) {
      const ag_llm_tool_call *tc = &m->tool_calls[i];
      ag_json *t = add_obj(arr, NULL), *fn = t ? add_obj(t, "function") : NULL;
      if (!fn || set_str(t, "id", tc->id ? tc->id : "") < 0 || set_str(t, "type", "function") < 0 ||
          set_str(fn, "name", tc->name ? tc->name : "") < 0 ||
          set_str(fn, "arguments", tc->arguments && tc->arguments[0] ? tc->arguments : "{}") < 0)
        return AG_ENOMEM;
    }
  }
  if (m->role == AG_ROLE_TOOL) {
    if (set_str(o, "tool_call_id", m->tool_call_id ? m->tool_call_id : "") < 0) return AG_ENOMEM;
    if (m->name && set_str(o, "name", m->name) < 0) return AG_ENOMEM;
  }
  return 0;
}

static int build_tools(const ag_chat_request *req, ag_json *root) {
  ag_json *arr = add_arr(root, "tools");
  if (!arr) return AG_ENOMEM;
  for (size_t i = 0; i < req->n_tools; i++) {
    const ag_tool_def *td = &req->tools[i];
    if (!td->name) return AG_EINVAL;
    static const char empty[] = "{\"type\":\"object\",\"properties\":{}}";
    ag_json *params = td->parameters ? parse_schema(td->parameters) : ag_json_parse(empty, sizeof empty - 1, NULL, 0);
    if (!params) return td->parameters ? AG_EINVAL : AG_ENOMEM;
    ag_json *t = add_obj(arr, NULL), *fn = t ? add_obj(t, "function") : NULL;
    if (!fn || set_str(t, "type", "function") < 0 || set_str(fn, "name", td->name) < 0 ||
        (td->description && set_str(fn, "description", td->description) < 0)) {
      ag_json_free(params);
      return AG_ENOMEM;
    }
    if (ag_json_set_take(fn, "parameters", params) < 0) return AG_ENOMEM;
    if (td->strict && ag_json_set_take(fn, "strict", ag_json_bool_new(true)) < 0) return AG_ENOMEM;
  }
  switch (req->tool_choice) {
  case AG_TOOL_CHOICE_NONE: return set_str(root, "tool_choice", "none");
  case AG_TOOL_CHOICE_REQUIRED: return set_str(root, "tool_choice", "required");
  case AG_TOOL_CHOICE_NAMED: {
    if (!req->tool_choice_name || !req->tool_choice_name[0]) return AG_EINVAL;
    ag_json *choice = add_obj(root, "tool_choice"), *fn = choice ? add_obj(choice, "function") : NULL;
    if (!fn || set_str(choice, "type", "function") < 0 || set_str(fn, "name", req->tool_choice_name) < 0)
      return AG_ENOMEM;
    return 0;
  }
  default: return set_str(root, "tool_choice", "auto");
  }
}

static int build_response_format(const ag_chat_request *req, ag_json *root) {
  ag_json *schema = parse_schema(req->response_schema);
  if (!schema) return AG_EINVAL;
  const char *name = req->response_schema_name && req->response_schema_name[0] ? req->response_schema_name : "response";
  ag_json *rf = add_obj(root, "response_format"), *js = rf ? add_obj(rf, "json_schema") : NULL;
  if (!js || set_str(rf, "type", "json_schema") < 0 || set_str(js, "name", name) < 0 ||
      ag_json_set_take(js, "strict", ag_json_bool_new(true)) < 0) {
    ag_json_free(schema);
    return AG_ENOMEM;
  }
  return ag_json_set_take(js, "schema", schema);
}

int ag__openai_build_request(const ag_chat_request *req, ag_buf *out) {
  ag_json *root = ag_json_object_new();
  if (!root) return AG_ENOMEM;
  int rc = AG_ENOMEM;
  ag_json *msgs;
  if (req->model && set_str(root, "model", req->model) < 0) goto done;
  if (!(msgs = add_arr(root, "messages"))) goto done;
  for (size_t i = 0; i < req->n_messages; i++)
    if ((rc = build_message(&req->messages[i], msgs)) < 0) goto done;
  if (req->n_tools && (rc = build_tools(req, root)) < 0) goto done;
  if (req->response_schema && (rc = build_response_format(req, root)) < 0) goto done;
  rc = AG_ENOMEM;
  if (req->temperature >= 0 && ag_json_set_take(root, "temperature", ag_json_real_new(req->temperature)) < 0) goto done;
  if (req->max_tokens > 0 && ag_json_set_take(root, "max_tokens", ag_json_int_new(req->max_tokens)) < 0) goto done;
  if (req->stream) {
    ag_json *so;
    if (ag_json_set_take(root, "stream", ag_json_bool_new(true)) < 0 || !(so = add_obj(root, "stream_options")) ||
        ag_json_set_take(so, "include_usage", ag_json_bool_new(true)) < 0)
      goto done;
  }
  if (req->extra) {
    ag_json *extra = ag_json_parse(req->extra, strlen(req->extra), NULL, 0);
    for (void *it = ag_json_iter(extra); it; it = ag_json_iter_next(extra, it)) {
      const char *k = ag_json_iter_key(it);
      if (ag_json_get(root, k)) continue;
      if (ag_json_set_take(root, k, ag_json_ref(ag_json_iter_value(it))) < 0) {
        ag_json_free(extra);
        goto done;
      }
    }
    ag_json_free(extra);
  }
  rc = ag_json_dump(root, out);
done:
  ag_json_free(root);
  return rc;
}

/* ---- response codec ---- */

static void parse_usage(const ag_json *u, ag_usage *out) {
  long long v;
  if (!ag_json_is(u, AG_JSON_OBJECT)) return;
  if (ag_json_get_int(u, "prompt_tokens", &v)) out->prompt_tokens = v;
  if (ag_json_get_int(u, "completion_tokens", &v)) out->completion_tokens = v;
  if (ag_json_get_int(u, "total_tokens", &v))
    out->total_tokens = v;
  else
    out->total_tokens = out->prompt_tokens + out->completion_tokens;
}

/* Arguments are a JSON string per the spec; a few servers send the object itself. */
static char *arguments_text(const ag_json *a) {
  if (ag_json_is(a, AG_JSON_STRING)) return ag_strndup(ag_json_str(a), ag_json_str_len(a));
  if (a && !ag_json_is(a, AG_JSON_NULL)) return ag_json_dumps(a);
  return ag_strdup("");
}

/* A tool call without an id (some local servers omit it) gets one, so the tool result can refer
 * to it. */
static char *make_call_id(const char *id, size_t index) {
  if (id && id[0]) return ag_strdup(id);
  char uuid[37], buf[64];
  ag_uuid4(uuid);
  snprintf(buf, sizeof buf, "call_%zu_%.8s", index, uuid);
  return ag_strdup(buf);
}

/* Model-produced empty arguments mean "no arguments"; "{}" keeps downstream JSON parsing simple. */
static int fix_empty_args(char **args) {
  if (*args && (*args)[0]) return 0;
  free(*args);
  *args = ag_strdup("{}");
  return *args ? 0 : AG_ENOMEM;
}

static int upstream_error_object(const ag_json *j, char *errmsg, size_t errlen) {
  ag_json *e = ag_json_get(j, "error");
  if (!e || ag_json_is(e, AG_JSON_NULL)) return 0;
  char *txt = ag_json_dumps(j);
  char msg[MAX_ERROR_TEXT];
  ag__openai_error_message(txt ? txt : "", txt ? strlen(txt) : 0, msg, sizeof msg);
  free(txt);
  snprintf(errmsg, errlen, "upstream error: %s", msg[0] ? msg : "(no message)");
  return AG_EUPSTREAM;
}

int ag__openai_parse_response(const char *body, size_t len, ag_chat_result **out, char *errmsg, size_t errlen) {
  *out = NULL;
  int rc = AG_EPROTO;
  ag_chat_result *r = NULL;
  ag_json *j = ag_json_parse(body, len, NULL, 0);
  if (!ag_json_is(j, AG_JSON_OBJECT)) {
    snprintf(errmsg, errlen, "upstream sent a malformed response (not a JSON object)");
    goto fail;
  }
  if ((rc = upstream_error_object(j, errmsg, errlen)) < 0) goto fail;
  rc = AG_EPROTO;
  ag_json *choice = ag_json_at(ag_json_get(j, "choices"), 0), *msg = ag_json_get(choice, "message");
  if (!ag_json_is(msg, AG_JSON_OBJECT)) {
    snprintf(errmsg, errlen, "upstream response has no choices[0].message");
    goto fail;
  }
  rc = AG_ENOMEM;
  snprintf(errmsg, errlen, "out of memory");
  if (!(r = calloc(1, sizeof *r))) goto fail;
  r->message.role = AG_ROLE_ASSISTANT;
  ag_json *content = ag_json_get(msg, "content");
  if (ag_json_is(content, AG_JSON_STRING) &&
      !(r->message.content = ag_strndup(ag_json_str(content), ag_json_str_len(content))))
    goto fail;
  ag_json *calls = ag_json_get(msg, "tool_calls");
  size_t n = ag_json_is(calls, AG_JSON_ARRAY) ? ag_json_len(calls) : 0;
  if (n > AG__OPENAI_MAX_TOOL_CALLS) {
    rc = AG_EPROTO;
    snprintf(errmsg, errlen, "upstream response has too many tool calls");
    goto fail;
  }
  if (n && !(r->message.tool_calls = calloc(n, sizeof *r->message.tool_calls))) goto fail;
  for (size_t i = 0; i < n; i++) {
    ag_json *tc = ag_json_at(calls, i), *fn = ag_json_get(tc, "function");
    ag_llm_tool_call *d = &r->message.tool_calls[i];
    r->message.n_tool_calls = i + 1;
    const char *name = ag_json_get_str(fn, "name");
    d->id = make_call_id(ag_json_get_str(tc, "id"), i);
    d->name = ag_strdup(name ? name : "");
    d->arguments = arguments_text(ag_json_get(fn, "arguments"));
    if (!d->id || !d->name || fix_empty_args(&d->arguments) < 0) goto fail;
  }
  const char *fr = ag_json_get_str(choice, "finish_reason"), *model = ag_json_get_str(j, "model");
  if ((fr && !(r->finish_reason = ag_strdup(fr))) || (model && !(r->model = ag_strdup(model)))) goto fail;
  parse_usage(ag_json_get(j, "usage"), &r->usage);
  ag_json_free(j);
  errmsg[0] = '\0';
  *out = r;
  return 0;
fail:
  ag_chat_result_free(r);
  ag_json_free(j);
  return rc;
}

/* ---- stream assembler ---- */

static int stream_fail(ag__openai_stream *s, int err, const char *fmt, ...) AG_PRINTF(3, 4);
static int stream_fail(ag__openai_stream *s, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
  va_end(ap);
  return err;
}

static ag__openai_tool_acc *tool_slot(ag__openai_stream *s, size_t idx) {
  if (idx >= s->n_tools) {
    ag__openai_tool_acc *t = realloc(s->tools, (idx + 1) * sizeof *t);
    if (!t) return NULL;
    for (size_t i = s->n_tools; i <= idx; i++) {
      memset(&t[i], 0, sizeof t[i]);
      ag_buf_init(&t[i].args, s->max_bytes);
    }
    s->tools = t;
    s->n_tools = idx + 1;
  }
  return &s->tools[idx];
}

static int stream_tool_delta(ag__openai_stream *s, const ag_json *tc) {
  const char *id = ag_json_get_str(tc, "id");
  long long idx;
  if (!ag_json_get_int(tc, "index", &idx)) {
    /* No index (some servers): a new id starts a new call, otherwise it continues the last one. */
    bool fresh = id && (s->n_tools == 0 || !s->tools[s->n_tools - 1].id || strcmp(id, s->tools[s->n_tools - 1].id));
    idx = fresh ? (long long)s->n_tools : (s->n_tools ? (long long)s->n_tools - 1 : 0);
  }
  if (idx < 0 || idx >= AG__OPENAI_MAX_TOOL_CALLS)
    return stream_fail(s, AG_EPROTO, "upstream sent tool call index %lld (limit %d)", idx, AG__OPENAI_MAX_TOOL_CALLS);
  ag__openai_tool_acc *acc = tool_slot(s, (size_t)idx);
  if (!acc) return stream_fail(s, AG_ENOMEM, "out of memory");
  acc->used = true;
  ag_json *fn = ag_json_get(tc, "function");
  const char *name = ag_json_get_str(fn, "name");
  if (id && id[0] && !acc->id && !(acc->id = ag_strdup(id))) return stream_fail(s, AG_ENOMEM, "out of memory");
  if (name && name[0] && !acc->name && !(acc->name = ag_strdup(name)))
    return stream_fail(s, AG_ENOMEM, "out of memory");
  ag_json *a = ag_json_get(fn, "arguments");
  char *owned = NULL;
  const char *args = NULL;
  size_t args_len = 0;
  if (ag_json_is(a, AG_JSON_STRING)) {
    args = ag_json_str(a);
    args_len = ag_json_str_len(a);
  } else if (a && !ag_json_is(a, AG_JSON_NULL)) {
    if (!(owned = ag_json_dumps(a))) return stream_fail(s, AG_ENOMEM, "out of memory");
    args = owned;
    args_len = strlen(owned);
  }
  int rc = ag_buf_append(&acc->args, args ? args : "", args_len);
  if (rc == 0 && (id || name || args_len) && s->on_tool_call_delta) {
    s->delivered = true;
    s->on_tool_call_delta((size_t)idx, id, name, args ? args : "", args_len, s->ud);
  }
  free(owned);
  if (rc == AG_ETOOBIG) return stream_fail(s, rc, "upstream tool call arguments exceed %zu bytes", s->max_bytes);
  if (rc < 0) return stream_fail(s, rc, "out of memory");
  return 0;
}

static int stream_content(ag__openai_stream *s, const char *text, size_t len) {
  if (!len) return 0;
  if (ag_buf_append(&s->content, text, len) < 0)
    return stream_fail(s, AG_ETOOBIG, "upstream content exceeds %zu bytes", s->max_bytes);
  if (s->on_content) {
    s->delivered = true;
    s->on_content(text, len, s->ud);
  }
  return s->halt ? AG_ECANCELED : 0;
}

static int stream_choice(ag__openai_stream *s, const ag_json *choice) {
  long long idx = 0;
  if (ag_json_get_int(choice, "index", &idx) && idx != 0) return 0; /* we ask for n=1 */
  ag_json *delta = ag_json_get(choice, "delta");
  ag_json *content = ag_json_get(delta, "content");
  int crc = stream_content(s, ag_json_str(content), ag_json_str_len(content));
  if (crc < 0) return crc;
  ag_json *calls = ag_json_get(delta, "tool_calls");
  for (size_t i = 0; i < ag_json_len(calls); i++) {
    int rc = stream_tool_delta(s, ag_json_at(calls, i));
    if (rc < 0) return rc;
    if (s->halt) return AG_ECANCELED;
  }
  const char *fr = ag_json_get_str(choice, "finish_reason");
  if (fr && fr[0]) {
    free(s->finish_reason);
    if (!(s->finish_reason = ag_strdup(fr))) return stream_fail(s, AG_ENOMEM, "out of memory");
  }
  return 0;
}

static bool is_blank(ag_slice d) {
  for (size_t i = 0; i < d.len; i++)
    if (d.ptr[i] != ' ' && d.ptr[i] != '\t' && d.ptr[i] != '\r' && d.ptr[i] != '\n') return false;
  return true;
}

static int on_sse_event(const ag_sse_event *ev, void *ud) {
  ag__openai_stream *s = ud;
  if (s->halt) return AG_ECANCELED;
  if (s->done || is_blank(ev->data)) return 0;
  ag_slice d = ev->data;
  while (d.len && (d.ptr[d.len - 1] == ' ' || d.ptr[d.len - 1] == '\r'))
    d.len--;
  if (ag_slice_eq_cstr(d, "[DONE]")) {
    s->done = true;
    return 0;
  }
  /* Most chunks are one content delta: read those without building a tree. */
  char cbuf[4096];
  ag__openai_chunk fc = {.content = cbuf, .cap = sizeof cbuf};
  if (!ag_slice_eq_cstr(ev->event, "error") && ag__openai_chunk_fast(d.ptr, d.len, &fc) == 1) {
    if (fc.model_len && !s->model && !(s->model = ag_strndup(fc.model, fc.model_len)))
      return stream_fail(s, AG_ENOMEM, "out of memory");
    return fc.have_content ? stream_content(s, fc.content, fc.content_len) : 0;
  }
  char jerr[160];
  ag_json *j = ag_json_parse(ev->data.ptr, ev->data.len, jerr, sizeof jerr);
  if (!ag_json_is(j, AG_JSON_OBJECT)) {
    ag_json_free(j);
    return stream_fail(s, AG_EPROTO, "upstream sent a malformed stream chunk: %s", j ? "not an object" : jerr);
  }
  int rc = upstream_error_object(j, s->errmsg, sizeof s->errmsg);
  if (rc == 0 && ag_slice_eq_cstr(ev->event, "error"))
    rc = stream_fail(s, AG_EUPSTREAM, "upstream error event in stream");
  if (rc < 0) goto done;
  const char *model = ag_json_get_str(j, "model");
  if (model && model[0] && !s->model && !(s->model = ag_strdup(model))) {
    rc = stream_fail(s, AG_ENOMEM, "out of memory");
    goto done;
  }
  parse_usage(ag_json_get(j, "usage"), &s->usage);
  ag_json *choices = ag_json_get(j, "choices");
  for (size_t i = 0; rc == 0 && i < ag_json_len(choices); i++)
    rc = stream_choice(s, ag_json_at(choices, i));
done:
  ag_json_free(j);
  return rc;
}

void ag__openai_stream_init(ag__openai_stream *s, size_t max_bytes, const ag_chat_callbacks *cbs) {
  memset(s, 0, sizeof *s);
  s->max_bytes = max_bytes ? max_bytes : DEFAULT_MAX_RESPONSE;
  ag_sse_init(&s->sse, s->max_bytes < MAX_SSE_EVENT ? s->max_bytes : MAX_SSE_EVENT, on_sse_event, s);
  ag_buf_init(&s->content, s->max_bytes);
  if (cbs) {
    s->on_content = cbs->on_content;
    s->on_tool_call_delta = cbs->on_tool_call_delta;
    s->ud = cbs->ud;
  }
}

void ag__openai_stream_deinit(ag__openai_stream *s) {
  if (!s) return;
  ag_sse_deinit(&s->sse);
  ag_buf_deinit(&s->content);
  for (size_t i = 0; i < s->n_tools; i++) {
    free(s->tools[i].id);
    free(s->tools[i].name);
    ag_buf_deinit(&s->tools[i].args);
  }
  free(s->tools);
  free(s->finish_reason);
  free(s->model);
  s->tools = NULL;
  s->n_tools = 0;
  s->finish_reason = s->model = NULL;
}

int ag__openai_stream_feed(ag__openai_stream *s, const char *data, size_t len) {
  if (s->err) return s->err;
  int rc = ag_sse_feed(&s->sse, data, len);
  if (rc < 0) {
    if (!s->errmsg[0]) {
      if (rc == AG_ETOOBIG)
        snprintf(s->errmsg, sizeof s->errmsg, "upstream stream event exceeds the size cap");
      else
        snprintf(s->errmsg, sizeof s->errmsg, "%s", ag_strerror(rc));
    }
    s->err = rc;
  }
  return rc;
}

int ag__openai_stream_finish(ag__openai_stream *s, ag_chat_result **out) {
  *out = NULL;
  if (s->err) return s->err;
  if (!s->done && !s->finish_reason) {
    s->err = stream_fail(s, AG_EPROTO, "upstream stream ended early");
    return s->err;
  }
  ag_chat_result *r = calloc(1, sizeof *r);
  if (!r) goto oom;
  r->message.role = AG_ROLE_ASSISTANT;
  size_t n = 0;
  for (size_t i = 0; i < s->n_tools; i++)
    n += s->tools[i].used;
  if (s->content.len || !n) {
    if (!(r->message.content = ag_strndup(ag_buf_cstr(&s->content), s->content.len))) goto oom;
  }
  if (n && !(r->message.tool_calls = calloc(n, sizeof *r->message.tool_calls))) goto oom;
  for (size_t i = 0, k = 0; i < s->n_tools; i++) {
    ag__openai_tool_acc *acc = &s->tools[i];
    if (!acc->used) continue;
    ag_llm_tool_call *d = &r->message.tool_calls[k++];
    r->message.n_tool_calls = k;
    d->id = make_call_id(acc->id, i);
    d->name = ag_strdup(acc->name ? acc->name : "");
    d->arguments = ag_strndup(ag_buf_cstr(&acc->args), acc->args.len);
    if (!d->id || !d->name || fix_empty_args(&d->arguments) < 0) goto oom;
  }
  if (s->finish_reason && !(r->finish_reason = ag_strdup(s->finish_reason))) goto oom;
  if (s->model && !(r->model = ag_strdup(s->model))) goto oom;
  r->usage = s->usage;
  *out = r;
  return 0;
oom:
  ag_chat_result_free(r);
  s->err = stream_fail(s, AG_ENOMEM, "out of memory");
  return s->err;
}

/* ---- the provider ---- */

typedef struct openai_provider {
  ag_llm_provider base;
  uv_loop_t *loop;
  ag_http_client *http;
  char *url;
  char *api_key;     /* kept only to scrub it out of any message */
  char *auth_header; /* "Authorization: Bearer ..." or NULL */
  uint64_t connect_ms, first_byte_ms, idle_ms, total_ms, retry_base_ms, retry_max_ms;
  int max_retries;
  size_t max_response;
  size_t refs; /* the provider itself + one per live call, so free() may come before the calls end */
} openai_provider;

enum { ST_ATTEMPT, ST_BACKOFF, ST_DONE };

struct ag_llm_call {
  openai_provider *p;
  ag_chat_callbacks cbs;
  char *body;
  size_t body_len;
  char *session;
  bool stream;
  int state;
  int attempt; /* 0 for the first */
  bool canceled;
  ag_http_call *http; /* the attempt in flight, NULL during a backoff */
  uv_timer_t timer;   /* backoff, and the deferred end of a call cancelled during a backoff */
  /* per attempt */
  long status;
  int64_t retry_after_ms;
  ag_buf body_in; /* the non-streamed body, or an error body */
  ag__openai_stream st;
  int parse_err;
};

static void provider_unref(openai_provider *p) {
  if (--p->refs) return;
  free(p->url);
  if (p->api_key) memset(p->api_key, 0, strlen(p->api_key));
  if (p->auth_header) memset(p->auth_header, 0, strlen(p->auth_header));
  free(p->api_key);
  free(p->auth_header);
  free(p);
}

static void call_free(ag_llm_call *call) {
  openai_provider *p = call->p;
  free(call->body);
  free(call->session);
  ag_buf_deinit(&call->body_in);
  ag__openai_stream_deinit(&call->st);
  free(call);
  provider_unref(p);
}

static void call_closed(uv_handle_t *h) { call_free(h->data); }

/* Removes every occurrence of the API key: an upstream may echo it back in an error. */
static void scrub_key(const openai_provider *p, char *msg) {
  size_t klen = p->api_key ? strlen(p->api_key) : 0;
  if (klen < 4) return;
  char *at;
  while ((at = strstr(msg, p->api_key))) {
    memcpy(at, "***", 3);
    memmove(at + 3, at + klen, strlen(at + klen) + 1);
  }
}

static void call_end(ag_llm_call *call, int err, ag_chat_result *res, long status, const char *fmt, ...)
    AG_PRINTF(5, 6);
static void call_end(ag_llm_call *call, int err, ag_chat_result *res, long status, const char *fmt, ...) {
  ag_llm_error e = {err, status, ""};
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    scrub_key(call->p, e.message);
    ag_log_debug(call->session, "llm call failed after %d attempt(s): %s", call->attempt + 1, e.message);
  } else {
    ag_log_debug(call->session, "llm call done: finish=%s prompt=%lld completion=%lld",
                 res->finish_reason ? res->finish_reason : "-", (long long)res->usage.prompt_tokens,
                 (long long)res->usage.completion_tokens);
  }
  call->state = ST_DONE;
  call->cbs.on_done(err, err ? NULL : res, err ? &e : NULL, call->cbs.ud);
  uv_close((uv_handle_t *)&call->timer, call_closed);
}

static void on_http_headers(long status, int64_t retry_after_ms, void *ud) {
  ag_llm_call *call = ud;
  call->status = status;
  call->retry_after_ms = retry_after_ms;
  ag_log_debug(call->session, "llm upstream status %ld (attempt %d)", status, call->attempt + 1);
}

static bool ok_status(long s) { return s >= 200 && s < 300; }

static int on_http_data(const char *data, size_t len, void *ud) {
  ag_llm_call *call = ud;
  if (call->canceled) return 1;
  if (!ok_status(call->status)) {
    /* Only the start of an error body is kept: it is read for its message, nothing more. */
    size_t room = call->body_in.max - call->body_in.len;
    if (ag_buf_append(&call->body_in, data, len < room ? len : room) < 0) return 1;
    return 0;
  }
  int rc = call->stream ? ag__openai_stream_feed(&call->st, data, len) : ag_buf_append(&call->body_in, data, len);
  if (rc < 0 && !call->canceled) call->parse_err = rc;
  return rc < 0;
}

/* Rate limits, server-side failures and transport failures are transient; other 4xx, protocol
 * errors and oversize answers would fail the same way again. */
static bool retryable(int err, long status, bool http_error) {
  if (http_error) return status == 429 || (status >= 500 && status < 600);
  return err == AG_ETIMEDOUT || err == AG_ECONNECT || err == AG_EIO;
}

static void on_timer(uv_timer_t *t);
static int start_attempt(ag_llm_call *call);

static void schedule_retry(ag_llm_call *call, int err) {
  openai_provider *p = call->p;
  uint64_t delay;
  if (call->retry_after_ms >= 0) {
    delay = (uint64_t)call->retry_after_ms < p->retry_max_ms ? (uint64_t)call->retry_after_ms : p->retry_max_ms;
  } else {
    /* Full jitter: uniform in [0, min(cap, base * 2^attempt)], so that clients that failed
     * together do not come back together. */
    int shift = call->attempt < 30 ? call->attempt : 30;
    uint64_t ceil = p->retry_base_ms << shift;
    if (ceil > p->retry_max_ms || ceil >> shift != p->retry_base_ms) ceil = p->retry_max_ms;
    delay = ag_random_below((uint32_t)(ceil < UINT32_MAX ? ceil + 1 : UINT32_MAX));
  }
  ag_log_debug(call->session, "llm upstream attempt %d failed (status %ld, %s), retrying in %llu ms", call->attempt + 1,
               call->status, ag_strerror(err), (unsigned long long)delay);
  call->attempt++;
  call->state = ST_BACKOFF;
  uv_timer_start(&call->timer, on_timer, delay, 0);
}

static void on_http_done(int err, long status, void *ud) {
  ag_llm_call *call = ud;
  openai_provider *p = call->p;
  call->http = NULL;
  if (status) call->status = status;
  status = call->status;

  if (call->canceled) {
    call_end(call, AG_ECANCELED, NULL, 0, "request cancelled");
    return;
  }
  if (call->parse_err) {
    int pe = call->parse_err;
    if (!call->stream)
      call_end(call, pe, NULL, status, "reading the upstream response: %s", ag_strerror(pe));
    else
      call_end(call, pe, NULL, pe == AG_EUPSTREAM ? status : 0, "%s", call->st.errmsg);
    return;
  }
  bool streamed = call->stream && ok_status(status);
  /* A connection that breaks or stalls after a complete stream costs nothing: keep the answer. */
  if ((err == AG_EIO || err == AG_ETIMEDOUT) && streamed && (call->st.done || call->st.finish_reason)) err = 0;

  bool http_error = status && !ok_status(status);
  /* Retry only while the caller has seen nothing of this answer: after a delta, a second attempt
   * would show the user a second, different beginning. */
  if (!call->st.delivered && call->attempt < p->max_retries && retryable(err, status, http_error)) {
    schedule_retry(call, err);
    return;
  }
  if (http_error) {
    char msg[MAX_ERROR_TEXT];
    ag__openai_error_message(ag_buf_cstr(&call->body_in), call->body_in.len, msg, sizeof msg);
    call_end(call, AG_EUPSTREAM, NULL, status, "upstream returned %ld%s%s", status, msg[0] ? ": " : "", msg);
    return;
  }
  switch (err) {
  case 0: break;
  case AG_ETIMEDOUT: call_end(call, err, NULL, status, "upstream timed out"); return;
  case AG_ECONNECT: call_end(call, err, NULL, 0, "could not connect to upstream"); return;
  case AG_ETOOBIG: call_end(call, err, NULL, status, "upstream response exceeds %zu bytes", p->max_response); return;
  case AG_EIO:
    if (streamed)
      call_end(call, AG_EPROTO, NULL, status, "upstream stream ended early (connection lost)");
    else
      call_end(call, err, NULL, status, "upstream connection failed");
    return;
  default: call_end(call, err, NULL, status, "upstream request failed: %s", ag_strerror(err)); return;
  }

  ag_chat_result *res = NULL;
  int rc;
  if (call->stream) {
    rc = ag__openai_stream_finish(&call->st, &res);
    if (rc < 0) {
      call_end(call, rc, NULL, 0, "%s", call->st.errmsg);
      return;
    }
  } else {
    char emsg[256] = "";
    rc = ag__openai_parse_response(ag_buf_cstr(&call->body_in), call->body_in.len, &res, emsg, sizeof emsg);
    if (rc < 0) {
      call_end(call, rc, NULL, rc == AG_EUPSTREAM ? status : 0, "%s", emsg);
      return;
    }
  }
  call_end(call, 0, res, status, "ok");
}

static void on_timer(uv_timer_t *t) {
  ag_llm_call *call = t->data;
  if (call->canceled) {
    call_end(call, AG_ECANCELED, NULL, 0, "request cancelled");
    return;
  }
  int rc = start_attempt(call);
  if (rc < 0) call_end(call, rc, NULL, 0, "could not start the upstream request: %s", ag_strerror(rc));
}

static int start_attempt(ag_llm_call *call) {
  openai_provider *p = call->p;
  call->status = 0;
  call->retry_after_ms = -1;
  call->parse_err = 0;
  ag_buf_deinit(&call->body_in);
  ag_buf_init(&call->body_in, call->stream ? MAX_ERROR_BODY : p->max_response);
  ag__openai_stream_deinit(&call->st);
  ag__openai_stream_init(&call->st, p->max_response, &call->cbs);

  const char *headers[4];
  size_t nh = 0;
  headers[nh++] = "Content-Type: application/json";
  headers[nh++] = call->stream ? "Accept: text/event-stream" : "Accept: application/json";
  if (p->auth_header) headers[nh++] = p->auth_header;
  headers[nh] = NULL;
  ag_http_call_opts o = {
      .method = "POST",
      .url = p->url,
      .headers = headers,
      .body = call->body,
      .body_len = call->body_len,
      .connect_timeout_ms = p->connect_ms,
      .first_byte_timeout_ms = p->first_byte_ms,
      .idle_timeout_ms = p->idle_ms,
      .total_timeout_ms = p->total_ms,
      .max_response_bytes = p->max_response,
      .on_headers = on_http_headers,
      .on_data = on_http_data,
      .on_done = on_http_done,
      .ud = call,
  };
  ag_log_debug(call->session, "llm request attempt %d (stream=%d, %zu bytes)", call->attempt + 1, call->stream,
               call->body_len);
  int rc = ag_http_call_start(p->http, &o, &call->http);
  if (rc == 0) call->state = ST_ATTEMPT;
  return rc;
}

static int openai_start(ag_llm_provider *base, const ag_chat_request *req, const ag_chat_callbacks *cbs,
                        ag_llm_call **out) {
  openai_provider *p = (openai_provider *)base;
  if (!out) return AG_EINVAL;
  *out = NULL;
  if (!req || !cbs || !cbs->on_done || (req->n_messages && !req->messages) || (req->n_tools && !req->tools))
    return AG_EINVAL;
  ag_buf body;
  ag_buf_init(&body, MAX_REQUEST_BYTES);
  int rc = ag__openai_build_request(req, &body);
  if (rc < 0) {
    ag_buf_deinit(&body);
    return rc;
  }
  ag_llm_call *call = calloc(1, sizeof *call);
  if (!call) {
    ag_buf_deinit(&body);
    return AG_ENOMEM;
  }
  call->p = p;
  call->cbs = *cbs;
  call->stream = req->stream;
  call->body_len = body.len;
  call->body = ag_buf_take(&body);
  call->session = ag_strdup(req->session_id);
  ag_buf_init(&call->body_in, MAX_ERROR_BODY);
  ag__openai_stream_init(&call->st, p->max_response, cbs);
  p->refs++;
  if (!call->body || (req->session_id && !call->session) || uv_timer_init(p->loop, &call->timer) < 0) {
    call_free(call);
    return AG_ENOMEM;
  }
  call->timer.data = call;
  if ((rc = start_attempt(call)) < 0) {
    /* No callback may run: closing the timer frees the call quietly. */
    uv_close((uv_handle_t *)&call->timer, call_closed);
    return rc;
  }
  *out = call;
  return 0;
}

static void openai_cancel(ag_llm_call *call) {
  if (!call || call->state == ST_DONE || call->canceled) return;
  call->canceled = true;
  call->st.halt = true;
  if (call->http) {
    ag_http_call_cancel(call->http);
  } else {
    uv_timer_start(&call->timer, on_timer, 0, 0);
  }
}

static void openai_free(ag_llm_provider *base) { provider_unref((openai_provider *)base); }

static const struct ag_llm_provider_vtbl openai_vtbl = {
    .kind = "openai",
    .start = openai_start,
    .cancel = openai_cancel,
    .free = openai_free,
};

int ag_openai_provider_new(uv_loop_t *loop, ag_http_client *http, const ag_openai_config *cfg, ag_llm_provider **out) {
  *out = NULL;
  if (!loop || !http || !cfg || !cfg->base_url || !cfg->base_url[0]) return AG_EINVAL;
  openai_provider *p = calloc(1, sizeof *p);
  if (!p) return AG_ENOMEM;
  p->base.vt = &openai_vtbl;
  p->loop = loop;
  p->http = http;
  p->refs = 1;
  p->connect_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : DEFAULT_CONNECT_MS;
  p->first_byte_ms = cfg->first_byte_timeout_ms ? cfg->first_byte_timeout_ms : DEFAULT_FIRST_BYTE_MS;
  p->idle_ms = cfg->idle_timeout_ms ? cfg->idle_timeout_ms : DEFAULT_IDLE_MS;
  p->total_ms = cfg->total_timeout_ms ? cfg->total_timeout_ms : DEFAULT_TOTAL_MS;
  p->max_retries = cfg->max_retries < 0 ? 0 : cfg->max_retries;
  p->retry_base_ms = cfg->retry_base_ms ? cfg->retry_base_ms : DEFAULT_RETRY_BASE_MS;
  p->retry_max_ms = cfg->retry_max_ms ? cfg->retry_max_ms : DEFAULT_RETRY_MAX_MS;
  p->max_response = cfg->max_response_bytes ? cfg->max_response_bytes : DEFAULT_MAX_RESPONSE;

  ag_buf b;
  ag_buf_init(&b, 8192);
  size_t blen = strlen(cfg->base_url);
  while (blen && cfg->base_url[blen - 1] == '/')
    blen--;
  if (ag_buf_append(&b, cfg->base_url, blen) < 0 || ag_buf_append_str(&b, "/chat/completions") < 0) goto fail;
  if (!(p->url = ag_buf_take(&b))) goto fail;
  if (cfg->api_key && cfg->api_key[0]) {
    if (ag_buf_appendf(&b, "Authorization: Bearer %s", cfg->api_key) < 0) goto fail;
    if (!(p->auth_header = ag_buf_take(&b)) || !(p->api_key = ag_strdup(cfg->api_key))) goto fail;
  }
  ag_buf_deinit(&b);
  *out = &p->base;
  return 0;
fail:
  ag_buf_deinit(&b);
  provider_unref(p);
  return AG_ENOMEM;
}
