/* POST /v1/chat/completions and POST /agents/{id}/provide_clarification.
 *
 * Parses the OpenAI request into typed messages, starts or resumes a session, and renders the
 * run's events in the chosen stream format:
 *   openai  delta.content carries only the answer text; progress goes to delta.reasoning_content.
 *   sgr     sgr-agent-core's format: reasoning and actions as tool-call chunks with ids
 *           "<step>-reasoning" / "<step>-action", tool results as content, and the final chunk
 *           carrying the answer with finish_reason "stop".
 * Every chunk's `model` is the session id, and the response has X-Agent-ID. Without stream:true
 * one chat.completion is returned when the run ends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/pool.h"
#include "agent/session.h"
#include "agent/template.h"
#include "agent/template_cache.h"
#include "api/api.h"
#include "api/chat_request.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"
#include "net/http_server.h"

#define MAX_CHUNK_BYTES (8u << 20)

typedef struct chat {
  ag_api_ctx *ctx;
  ag_http_req *req;
  ag_session *session;
  bool stream;
  int format; /* enum ag_stream_format, or -1 = the session's */
  bool include_usage;
  bool headers_sent;
  bool done; /* the HTTP request is finished */
  char *session_id;
  char *template_name;
  char completion_id[48];
  int64_t created;
  ag_buf chunk; /* scratch for one SSE payload */
  ag_buf head;  /* every chunk's beginning (id, created, model), built once the session id is known */
} chat;

static void chat_free(chat *c) {
  free(c->session_id);
  free(c->template_name);
  ag_buf_deinit(&c->chunk);
  ag_buf_deinit(&c->head);
  free(c);
}

/* ---------- rendering ---------- */

/* Returns false when `c` has been freed (the client was dropped); callers must stop then. */
static bool send_payload(chat *c) {
  if (c->done) return true;
  if (ag_http_sse_send(c->req, c->chunk.ptr, c->chunk.len) < 0) return true; /* gone: on_close cleans up */
  if (ag_http_req_pending_bytes(c->req) > c->ctx->max_stream_buffer) {
    /* The client reads far slower than the agent writes: drop it rather than buffer forever. */
    ag_log_warn(c->session_id, "client too slow (%zu bytes pending); closing the stream",
                ag_http_req_pending_bytes(c->req));
    if (c->session) ag_session_detach(c->session);
    c->session = NULL;
    c->done = true;
    (void)ag_http_sse_end(c->req);
    chat_free(c);
    return false;
  }
  return true;
}

/* Starts a chunk in c->chunk. Its beginning is the same for every chunk of the response, so it is
 * formatted once (a streamed answer has hundreds of chunks). */
static int chunk_head(chat *c) {
  ag_buf_reset(&c->chunk);
  int rc = 0;
  if (c->head.len == 0) {
    rc = ag_buf_appendf(&c->head, "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":\"",
                        c->completion_id, (long long)c->created);
    if (rc == 0) rc = ag_buf_append_json_escaped(&c->head, c->session_id, strlen(c->session_id));
    if (rc == 0) rc = ag_buf_append_str(&c->head, "\",\"choices\":[{\"index\":0,\"delta\":{");
    if (rc < 0) ag_buf_reset(&c->head);
  }
  if (rc == 0) rc = ag_buf_append(&c->chunk, c->head.ptr, c->head.len);
  return rc;
}

static int chunk_tail(chat *c, const char *finish) {
  if (!finish) return ag_buf_append_str(&c->chunk, "},\"finish_reason\":null}]}");
  return ag_buf_appendf(&c->chunk, "},\"finish_reason\":\"%s\"}]}", finish);
}

/* One chunk with a single string field in the delta ("content", "reasoning_content"). */
/* Returns false when `c` has been freed. */
static bool send_text(chat *c, const char *field, const char *text, size_t len) {
  int rc = chunk_head(c);
  if (rc == 0) rc = ag_buf_append_char(&c->chunk, '"');
  if (rc == 0) rc = ag_buf_append_str(&c->chunk, field);
  if (rc == 0) rc = ag_buf_append(&c->chunk, "\":\"", 3);
  if (rc == 0) rc = ag_buf_append_json_escaped(&c->chunk, text, len);
  if (rc == 0) rc = ag_buf_append_char(&c->chunk, '"');
  if (rc == 0) rc = chunk_tail(c, NULL);
  return rc < 0 || send_payload(c);
}

static void send_tool_call(chat *c, const char *id, const char *name, const char *args) {
  int rc = chunk_head(c);
  if (rc == 0) rc = ag_buf_append_str(&c->chunk, "\"tool_calls\":[{\"index\":0,\"id\":\"");
  if (rc == 0) rc = ag_buf_append_json_escaped(&c->chunk, id, strlen(id));
  if (rc == 0) rc = ag_buf_append_str(&c->chunk, "\",\"type\":\"function\",\"function\":{\"name\":\"");
  if (rc == 0) rc = ag_buf_append_json_escaped(&c->chunk, name, strlen(name));
  if (rc == 0) rc = ag_buf_append_str(&c->chunk, "\",\"arguments\":\"");
  if (rc == 0) rc = ag_buf_append_json_escaped(&c->chunk, args ? args : "{}", args ? strlen(args) : 2);
  if (rc == 0) rc = ag_buf_append_str(&c->chunk, "\"}}]");
  if (rc == 0) rc = chunk_tail(c, NULL);
  if (rc == 0) send_payload(c);
}

static int append_usage(ag_buf *b, const ag_usage *u) {
  return ag_buf_appendf(b, "\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld}",
                        (long long)u->prompt_tokens, (long long)u->completion_tokens, (long long)u->total_tokens);
}

static int error_status(int err, const char **type, const char **code) {
  switch (err) {
  case AG_EUPSTREAM:
  case AG_ECONNECT:
  case AG_EPROTO:
    *type = "upstream_error";
    *code = "upstream_error";
    return 502;
  case AG_ETIMEDOUT:
    *type = "upstream_error";
    *code = "upstream_timeout";
    return 504;
  case AG_ELIMIT:
    *type = "agent_error";
    *code = "agent_limit_reached";
    return 500;
  case AG_ESHUTDOWN:
    *type = "server_error";
    *code = "shutting_down";
    return 503;
  case AG_EUNAVAIL:
    *type = "server_error";
    *code = "storage_unavailable";
    return 503;
  case AG_ENOTFOUND:
    *type = "invalid_request_error";
    *code = "session_not_found";
    return 404;
  case AG_ESTATE:
    *type = "invalid_request_error";
    *code = "session_not_waiting";
    return 409;
  case AG_ECANCELED:
    *type = "invalid_request_error";
    *code = "cancelled";
    return 409;
  case AG_EBUSY:
    *type = "rate_limit_error";
    *code = "instances_busy";
    return 429;
  default:
    *type = "server_error";
    *code = "internal_error";
    return 500;
  }
}

static void on_start(const char *session_id, const char *template_name, int stream_format, void *ud) {
  chat *c = ud;
  c->format = stream_format;
  c->session_id = ag_strdup(session_id);
  c->template_name = ag_strdup(template_name);
  if (!c->session_id || !c->template_name || !c->stream) return;
  char headers[640];
  snprintf(headers, sizeof headers, "X-Agent-ID: %s\r\nX-Agent-Model: %s\r\n", session_id, template_name);
  if (ag_http_sse_begin(c->req, 200, headers) < 0) return;
  c->headers_sent = true;
  /* OpenAI streams open with the role. */
  int rc = chunk_head(c);
  if (rc == 0) rc = ag_buf_append_str(&c->chunk, "\"role\":\"assistant\",\"content\":\"\"");
  if (rc == 0) rc = chunk_tail(c, NULL);
  if (rc == 0) send_payload(c);
}

static void on_answer(const char *text, size_t len, void *ud) {
  chat *c = ud;
  if (c->stream && c->headers_sent && c->format == AG_FORMAT_OPENAI) send_text(c, "content", text, len);
}

static void on_progress(const char *text, size_t len, void *ud) {
  chat *c = ud;
  if (c->stream && c->headers_sent && c->format == AG_FORMAT_OPENAI) send_text(c, "reasoning_content", text, len);
}

static void on_step(const ag_step_event *ev, void *ud) {
  chat *c = ud;
  if (!c->stream || !c->headers_sent || c->format != AG_FORMAT_SGR) return;
  char id[48];
  switch (ev->type) {
  case AG_STEP_REASONING:
    snprintf(id, sizeof id, "%d-reasoning", ev->iteration);
    send_tool_call(c, id, ev->tool_name, ev->arguments);
    break;
  case AG_STEP_ACTION:
    snprintf(id, sizeof id, "%d-action", ev->iteration);
    send_tool_call(c, id, ev->tool_name, ev->arguments);
    break;
  default: {
    size_t n = strlen(ev->result ? ev->result : "");
    ag_buf b;
    ag_buf_init(&b, MAX_CHUNK_BYTES);
    if (ag_buf_append(&b, ev->result ? ev->result : "", n) == 0 && ag_buf_append_char(&b, '\n') == 0)
      send_text(c, "content", b.ptr, b.len);
    ag_buf_deinit(&b);
  }
  }
}

/* Returns false when `c` has been freed. */
static bool end_stream(chat *c, const ag_run_end *end) {
  if (end->err) {
    const char *type, *code;
    (void)error_status(end->err, &type, &code);
    const char *msg = end->error_message ? end->error_message : ag_strerror(end->err);
    ag_buf_reset(&c->chunk);
    int rc = ag_buf_append_str(&c->chunk, "{\"error\":{\"message\":\"");
    if (rc == 0) rc = ag_buf_append_json_escaped(&c->chunk, msg, strlen(msg));
    if (rc == 0) rc = ag_buf_appendf(&c->chunk, "\",\"type\":\"%s\",\"code\":\"%s\",\"param\":null}}", type, code);
    if (rc == 0 && !send_payload(c)) return false;
  } else {
    const char *text = end->text ? end->text : "";
    bool waiting = end->state == AG_SESSION_WAITING;
    int rc = 0;
    if (c->format == AG_FORMAT_OPENAI) {
      if (waiting && !send_text(c, "content", text, strlen(text))) return false;
      rc = chunk_head(c);
    } else {
      /* sgr: the final chunk carries the answer (or the questions) as content. */
      rc = chunk_head(c);
      if (rc == 0) rc = ag_buf_append_str(&c->chunk, "\"content\":\"");
      if (rc == 0) rc = ag_buf_append_json_escaped(&c->chunk, text, strlen(text));
      if (rc == 0) rc = ag_buf_append_char(&c->chunk, '"');
    }
    if (rc == 0) rc = chunk_tail(c, "stop");
    if (rc == 0 && !send_payload(c)) return false;
    if (c->include_usage) {
      /* As OpenAI does: one more chunk with no choices and the usage of the whole run. */
      ag_buf_reset(&c->chunk);
      rc =
          ag_buf_appendf(&c->chunk, "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":\"",
                         c->completion_id, (long long)c->created);
      if (rc == 0) rc = ag_buf_append_json_escaped(&c->chunk, c->session_id, strlen(c->session_id));
      if (rc == 0) rc = ag_buf_append_str(&c->chunk, "\",\"choices\":[],");
      if (rc == 0) rc = append_usage(&c->chunk, &end->usage);
      if (rc == 0) rc = ag_buf_append_char(&c->chunk, '}');
      if (rc == 0 && !send_payload(c)) return false;
    }
    ag_buf_reset(&c->chunk);
    if (ag_buf_append_str(&c->chunk, "[DONE]") == 0 && !send_payload(c)) return false;
  }
  c->done = true;
  (void)ag_http_sse_end(c->req);
  return true;
}

static void respond_completion(chat *c, const ag_run_end *end) {
  ag_buf b;
  ag_buf_init(&b, MAX_CHUNK_BYTES);
  const char *text = end->text ? end->text : "";
  int rc = ag_buf_appendf(&b, "{\"id\":\"%s\",\"object\":\"chat.completion\",\"created\":%lld,\"model\":\"",
                          c->completion_id, (long long)c->created);
  if (rc == 0) rc = ag_buf_append_json_escaped(&b, c->session_id, strlen(c->session_id));
  if (rc == 0)
    rc = ag_buf_append_str(&b, "\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"");
  if (rc == 0) rc = ag_buf_append_json_escaped(&b, text, strlen(text));
  if (rc == 0) rc = ag_buf_append_str(&b, "\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}],");
  if (rc == 0) rc = append_usage(&b, &end->usage);
  if (rc == 0) rc = ag_buf_appendf(&b, ",\"agent_state\":\"%s\"}", ag_session_state_name(end->state));
  char headers[640];
  snprintf(headers, sizeof headers, "X-Agent-ID: %s\r\nX-Agent-Model: %s\r\n", c->session_id,
           c->template_name ? c->template_name : "");
  if (rc == 0)
    (void)ag_http_respond(c->req, 200, "application/json", headers, b.ptr, b.len);
  else
    ag_api_error(c->req, 500, "server_error", NULL, NULL, "the answer is too large to send");
  ag_buf_deinit(&b);
}

static void on_end(const ag_run_end *end, void *ud) {
  chat *c = ud;
  c->session = NULL;
  if (c->done) { /* already finished (slow client dropped) */
    chat_free(c);
    return;
  }
  if (!end->started && (end->err == AG_ETIMEDOUT || end->err == AG_EBUSY)) {
    /* The run never got an agent instance: the pool stayed full. */
    char hdr[64];
    snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n", ag_pool_retry_after_s(c->ctx->pool));
    c->done = true;
    ag_api_error_h(c->req, end->err == AG_EBUSY ? 429 : 503, hdr,
                   end->err == AG_EBUSY ? "rate_limit_error" : "server_error", "instances_busy", NULL, "%s",
                   end->error_message ? end->error_message : "every agent instance is busy");
  } else if (!end->started || !c->session_id) {
    const char *type, *code;
    int status = error_status(end->err ? end->err : AG_EDB, &type, &code);
    c->done = true;
    ag_api_error(c->req, status, type, code, status == 404 ? "model" : NULL, "%s",
                 end->error_message ? end->error_message : "the session could not be started");
  } else if (c->stream && c->headers_sent) {
    if (!end_stream(c, end)) return; /* c was freed: the client was dropped */
  } else if (c->stream) {
    c->done = true;
    ag_api_error(c->req, 500, "server_error", NULL, NULL, "the stream could not be started");
  } else if (end->err) {
    /* The session exists: say which, so the client can inspect it. */
    const char *type, *code;
    int status = error_status(end->err, &type, &code);
    char headers[640];
    snprintf(headers, sizeof headers, "X-Agent-ID: %s\r\n", c->session_id);
    c->done = true;
    ag_api_error_h(c->req, status, headers, type, code, NULL, "%s",
                   end->error_message ? end->error_message : ag_strerror(end->err));
  } else {
    c->done = true;
    respond_completion(c, end);
  }
  chat_free(c);
}

static void on_client_close(ag_http_req *req, void *ud) {
  chat *c = ud;
  (void)req;
  if (c->done) return;
  c->done = true;
  if (c->session) ag_session_detach(c->session); /* no more events, not even on_end */
  c->session = NULL;
  if (c->headers_sent)
    (void)ag_http_sse_end(c->req);
  else
    (void)ag_http_respond(c->req, 499, "application/json", NULL, "{}", 2);
  chat_free(c);
}

static chat *chat_new(ag_api_ctx *ctx, ag_http_req *req, const ag_chat_input *in) {
  chat *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->ctx = ctx;
  c->req = req;
  c->stream = in->stream;
  c->format = in->format;
  c->include_usage = in->include_usage;
  c->created = ag_unix_s();
  char uuid[37];
  ag_uuid4(uuid);
  snprintf(c->completion_id, sizeof c->completion_id, "chatcmpl-%s", uuid);
  ag_buf_init(&c->chunk, MAX_CHUNK_BYTES);
  ag_buf_init(&c->head, 4096);
  return c;
}

/* Starts (template name) or resumes (session id) and wires the events to `c`. */
static void run(ag_api_ctx *ctx, ag_http_req *req, ag_chat_input *in, const char *model, const char *clarification) {
  if (ctx->draining) {
    ag_api_error(req, 503, "server_error", "shutting_down", NULL, "the server is shutting down");
    return;
  }
  ag_template *tpl = clarification ? NULL : ag_template_cache_active(ctx->templates, model);
  chat *c = chat_new(ctx, req, in);
  if (!c) {
    ag_api_error(req, 500, "server_error", NULL, NULL, "out of memory");
    return;
  }
  ag_run_events ev = {on_start, on_answer, on_progress, on_step, on_end, c};
  int rc;
  if (tpl) {
    if (c->format < 0) c->format = tpl->stream_format;
    rc = ag_session_start(ctx->runtime, tpl, in->msgs, in->n, c->format, &ev, &c->session);
  } else {
    rc = ag_session_resume(ctx->runtime, model, clarification, c->format, &ev, &c->session);
  }
  if (rc < 0) {
    chat_free(c);
    if (rc == AG_ESTATE) {
      ag_api_error(req, 409, "invalid_request_error", "session_busy", "model",
                   "session %s is running; wait for it to finish", model);
    } else if (rc == AG_EBUSY) {
      char hdr[64];
      snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n", ag_pool_retry_after_s(ctx->pool));
      ag_api_error_h(req, 429, hdr, "rate_limit_error", "instances_busy", NULL,
                     "every agent instance is busy and the wait queue is full: retry later");
    } else
      ag_api_error(req, 500, "server_error", NULL, NULL, "could not start the session: %s", ag_strerror(rc));
    return;
  }
  ag_http_req_on_close(req, on_client_close, c);
}

static void reply_error(ag_http_req *req, const ag_api_err *e) {
  ag_api_error(req, e->status, e->type, e->code, e->param, "%s", e->message);
}

void ag__api_chat_completions(ag_api_ctx *ctx, ag_http_req *req) {
  ag_slice body = ag_http_req_body(req);
  ag_chat_input in;
  ag_api_err err;
  if (ag__chat_request_parse(body.ptr, body.len, true, &in, &err) < 0) {
    reply_error(req, &err);
    ag__chat_input_deinit(&in);
    return;
  }
  const char *text = ag__chat_last_user_text(&in);
  bool is_template = ag_template_cache_active(ctx->templates, in.model) != NULL;
  if (!is_template && !ag__chat_is_session_id(in.model)) {
    ag_api_error(req, 404, "invalid_request_error", "model_not_found", "model",
                 "the model '%s' does not exist: use a template name from /v1/models or a session id", in.model);
  } else if (!text) {
    ag_api_error(req, 400, "invalid_request_error", "invalid_value", "messages",
                 is_template ? "'messages' must contain a user message with text"
                             : "continuing a session needs a user message with the clarification");
  } else {
    run(ctx, req, &in, in.model, is_template ? NULL : text);
  }
  ag__chat_input_deinit(&in);
}

void ag__api_provide_clarification(ag_api_ctx *ctx, ag_http_req *req, const char *id) {
  ag_slice body = ag_http_req_body(req);
  ag_chat_input in;
  ag_api_err err;
  if (ag__chat_request_parse(body.ptr, body.len, false, &in, &err) < 0) {
    reply_error(req, &err);
    ag__chat_input_deinit(&in);
    return;
  }
  if (!in.stream_set) in.stream = true; /* sgr-agent-core streams by default here */
  const char *text = in.clarifications ? in.clarifications : ag__chat_last_user_text(&in);
  if (!text) {
    ag_api_error(req, 400, "invalid_request_error", "missing_required_parameter", "clarifications",
                 "give the answer as {\"clarifications\": \"...\"} or {\"messages\": [{\"role\": \"user\", ...}]}");
  } else if (!ag__chat_is_session_id(id)) {
    ag_api_error(req, 404, "invalid_request_error", "session_not_found", NULL, "no such session: %s", id);
  } else {
    run(ctx, req, &in, id, text);
  }
  ag__chat_input_deinit(&in);
}
