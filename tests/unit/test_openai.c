/* Unit tests for llm/openai and net/http_client against a fake upstream that runs inside the test:
 * a plain libuv TCP server on 127.0.0.1 that plays scripted raw HTTP responses (writes, pauses,
 * abrupt closes, stalls) and records every request it receives. Everything runs on one loop;
 * timeouts and backoffs are shortened so that each test takes well under a second. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <uv.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/util.h"
#include "llm/llm.h"
#include "llm/openai_internal.h"
#include "net/http_client.h"

/* ---- the fake upstream ---- */

enum { S_WRITE, S_DELAY, S_CLOSE, S_END, S_STALL };
typedef struct step {
  int kind;
  char *data;
  size_t len;
  uint64_t ms;
} step;
typedef struct resp {
  step steps[48];
  int n;
} resp;

#define MAX_RESP 8
#define MAX_REQ 8

typedef struct conn conn;
typedef struct srv {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int port;
  resp resps[MAX_RESP];
  int n_resps, next;
  char *req_head[MAX_REQ];
  char *req_body[MAX_REQ];
  int n_req;
  int connections;
  conn *conns;
} srv;

struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t sd;
  srv *s;
  ag_buf in;
  resp *r;
  int step;
  int open_handles;
  bool closed, busy;
  conn *next;
};

static void conn_handle_closed(uv_handle_t *h) {
  conn *c = h->data;
  if (--c->open_handles == 0) {
    ag_buf_deinit(&c->in);
    free(c);
  }
}

static void conn_close(conn *c) {
  if (c->closed) return;
  c->closed = true;
  for (conn **pp = &c->s->conns; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

typedef struct wr {
  uv_write_t req;
  char data[];
} wr;

static void on_written(uv_write_t *req, int status) { free(req); }

static void conn_write(conn *c, const char *data, size_t len) {
  wr *w = malloc(sizeof *w + len);
  assert_non_null(w);
  memcpy(w->data, data, len);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) free(w);
}

static void on_shutdown(uv_shutdown_t *req, int status) { conn_close(req->data); }

static void try_request(conn *c);
static void on_delay(uv_timer_t *t);

static void run_steps(conn *c) {
  while (!c->closed && c->r && c->step < c->r->n) {
    step *st = &c->r->steps[c->step];
    switch (st->kind) {
    case S_WRITE:
      conn_write(c, st->data, st->len);
      c->step++;
      break;
    case S_DELAY:
      c->step++;
      uv_timer_start(&c->timer, on_delay, st->ms, 0);
      return;
    case S_CLOSE:
      /* Shut down first so the bytes already queued reach the client before the close. */
      c->step++;
      c->sd.data = c;
      if (uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, on_shutdown) < 0) conn_close(c);
      return;
    case S_END:
      c->step++;
      c->busy = false;
      c->r = NULL;
      try_request(c);
      return;
    default: return; /* S_STALL: say nothing more, keep the connection open */
    }
  }
}

static void on_delay(uv_timer_t *t) { run_steps(t->data); }

static void try_request(conn *c) {
  if (c->busy || c->closed) return;
  const char *p = ag_buf_cstr(&c->in);
  const char *end = strstr(p, "\r\n\r\n");
  if (!end) return;
  size_t head = (size_t)(end - p) + 4, clen = 0;
  const char *cl = strcasestr(p, "\r\ncontent-length:");
  if (cl && cl < end) clen = strtoul(cl + 17, NULL, 10);
  if (c->in.len < head + clen) return;
  srv *s = c->s;
  if (s->n_req < MAX_REQ) {
    s->req_head[s->n_req] = ag_strndup(p, head);
    s->req_body[s->n_req] = ag_strndup(p + head, clen);
  }
  s->n_req++;
  ag_buf_consume(&c->in, head + clen);
  assert_true(s->next < s->n_resps); /* the test scripted too few responses */
  c->r = &s->resps[s->next++];
  c->step = 0;
  c->busy = true;
  run_steps(c);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  static char buf[65536]; /* one loop thread, consumed at once in on_read */
  *b = uv_buf_init(buf, sizeof buf);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  conn *c = st->data;
  if (n < 0) {
    conn_close(c);
    return;
  }
  assert_int_equal(ag_buf_append(&c->in, b->base, (size_t)n), 0);
  try_request(c);
}

static void on_connection(uv_stream_t *l, int status) {
  srv *s = l->data;
  assert_int_equal(status, 0);
  conn *c = calloc(1, sizeof *c);
  assert_non_null(c);
  c->s = s;
  ag_buf_init(&c->in, 1 << 20);
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  c->next = s->conns;
  s->conns = c;
  s->connections++;
  assert_int_equal(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void srv_start(srv *s, uv_loop_t *loop) {
  memset(s, 0, sizeof *s);
  s->loop = loop;
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  assert_int_equal(uv_tcp_init(loop, &s->listener), 0);
  s->listener.data = s;
  assert_int_equal(uv_tcp_bind(&s->listener, (struct sockaddr *)&a, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 16, on_connection), 0);
  struct sockaddr_in got;
  int len = sizeof got;
  assert_int_equal(uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len), 0);
  s->port = ntohs(got.sin_port);
}

static void srv_stop(srv *s) {
  while (s->conns)
    conn_close(s->conns);
  uv_close((uv_handle_t *)&s->listener, NULL);
}

static void srv_free(srv *s) {
  for (int i = 0; i < s->n_resps; i++)
    for (int k = 0; k < s->resps[i].n; k++)
      free(s->resps[i].steps[k].data);
  for (int i = 0; i < s->n_req && i < MAX_REQ; i++) {
    free(s->req_head[i]);
    free(s->req_body[i]);
  }
}

/* Script builders. */
static resp *srv_resp(srv *s) {
  assert_true(s->n_resps < MAX_RESP);
  return &s->resps[s->n_resps++];
}

static step *r_step(resp *r, int kind) {
  assert_true(r->n < (int)AG_ARRAY_LEN(r->steps));
  step *st = &r->steps[r->n++];
  memset(st, 0, sizeof *st);
  st->kind = kind;
  return st;
}

static void r_raw(resp *r, const char *data) {
  step *st = r_step(r, S_WRITE);
  st->data = ag_strdup(data);
  st->len = strlen(data);
}

/* One HTTP/1.1 chunk of a chunked body. */
static void r_chunk(resp *r, const char *data) {
  ag_buf b;
  ag_buf_init(&b, 1 << 20);
  assert_int_equal(ag_buf_appendf(&b, "%zx\r\n%s\r\n", strlen(data), data), 0);
  step *st = r_step(r, S_WRITE);
  st->len = b.len;
  st->data = ag_buf_take(&b);
}

static void r_delay(resp *r, uint64_t ms) { r_step(r, S_DELAY)->ms = ms; }
static void r_close(resp *r) { r_step(r, S_CLOSE); }
static void r_end(resp *r) { r_step(r, S_END); }
static void r_stall(resp *r) { r_step(r, S_STALL); }

static void r_full(resp *r, const char *status_line, const char *extra_headers, const char *body) {
  char head[512];
  snprintf(head, sizeof head, "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n",
           status_line, strlen(body), extra_headers ? extra_headers : "");
  r_raw(r, head);
  r_raw(r, body);
  r_end(r);
}

static void r_stream_head(resp *r) {
  r_raw(r, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
}

static void r_stream_end(resp *r) {
  r_raw(r, "0\r\n\r\n");
  r_end(r);
}

/* SSE events in OpenAI's format. */
static void ev_content(resp *r, const char *text) {
  char b[1024];
  snprintf(b, sizeof b,
           "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-test\",\"choices\":"
           "[{\"index\":0,\"delta\":{\"content\":\"%s\"},\"finish_reason\":null}]}\n\n",
           text);
  r_chunk(r, b);
}

static void ev_finish(resp *r, const char *reason) {
  char b[512];
  snprintf(b, sizeof b,
           "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-test\",\"choices\":"
           "[{\"index\":0,\"delta\":{},\"finish_reason\":\"%s\"}]}\n\n",
           reason);
  r_chunk(r, b);
}

static void ev_usage_done(resp *r) {
  r_chunk(r, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-test\",\"choices\":[],"
             "\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,\"total_tokens\":18}}\n\n");
  r_chunk(r, "data: [DONE]\n\n");
}

static void script_ok_stream(srv *s, const char *text) {
  resp *r = srv_resp(s);
  r_stream_head(r);
  ev_content(r, text);
  ev_finish(r, "stop");
  ev_usage_done(r);
  r_stream_end(r);
}

/* ---- the fixture ---- */

typedef struct fx {
  uv_loop_t loop;
  srv s;
  ag_http_client *http;
  ag_llm_provider *prov;
  ag_llm_call *call;
  ag_buf content;
  int n_content;
  ag_buf tools_log;
  int n_tool_deltas;
  int done;
  int err;
  ag_chat_result *res;
  ag_llm_error error;
  int cancel_after_deltas; /* cancel from inside the n-th delta callback; 0 = never */
  bool http_closed;
} fx;

static fx *fx_new(const ag_openai_config *tweak) {
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  srv_start(&f->s, &f->loop);
  assert_int_equal(ag_http_client_new(&f->loop, &f->http), 0);
  ag_buf_init(&f->content, 1 << 20);
  ag_buf_init(&f->tools_log, 1 << 20);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/", f->s.port);
  ag_openai_config cfg = tweak ? *tweak : (ag_openai_config){0};
  cfg.base_url = url;
  if (!cfg.api_key) cfg.api_key = "sk-test-secret-123";
  if (!cfg.retry_base_ms) cfg.retry_base_ms = 1;
  if (!cfg.retry_max_ms) cfg.retry_max_ms = 20;
  if (!cfg.idle_timeout_ms) cfg.idle_timeout_ms = 2000;
  if (!cfg.first_byte_timeout_ms) cfg.first_byte_timeout_ms = 2000;
  assert_int_equal(ag_openai_provider_new(&f->loop, f->http, &cfg, &f->prov), 0);
  return f;
}

static void on_http_closed(void *ud) { ((fx *)ud)->http_closed = true; }

static void fx_free(fx *f) {
  ag_llm_provider_free(f->prov);
  ag_http_client_close(f->http, on_http_closed, f);
  srv_stop(&f->s);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_true(f->http_closed);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  assert_true(f->done <= 1); /* never twice, even after everything drained */
  srv_free(&f->s);
  ag_chat_result_free(f->res);
  ag_buf_deinit(&f->content);
  ag_buf_deinit(&f->tools_log);
  free(f);
}

static void maybe_cancel(fx *f) {
  if (f->cancel_after_deltas && f->n_content + f->n_tool_deltas == f->cancel_after_deltas) {
    ag_llm_cancel(f->prov, f->call);
    ag_llm_cancel(f->prov, f->call); /* twice is harmless */
  }
}

static void on_content(const char *d, size_t len, void *ud) {
  fx *f = ud;
  assert_int_equal(f->done, 0);
  f->n_content++;
  assert_int_equal(ag_buf_append(&f->content, d, len), 0);
  maybe_cancel(f);
}

static void on_tool_delta(size_t index, const char *id, const char *name, const char *args, size_t len, void *ud) {
  fx *f = ud;
  assert_int_equal(f->done, 0);
  f->n_tool_deltas++;
  assert_int_equal(
      ag_buf_appendf(&f->tools_log, "%zu|%s|%s|%.*s;", index, id ? id : "-", name ? name : "-", (int)len, args), 0);
  maybe_cancel(f);
}

static void on_done(int err, ag_chat_result *res, const ag_llm_error *e, void *ud) {
  fx *f = ud;
  f->done++;
  f->err = err;
  if (err) {
    assert_null(res);
    assert_non_null(e);
    assert_int_equal(e->code, err);
    f->error = *e;
    /* The key never leaks into a message a client could see. */
    assert_null(strstr(e->message, "sk-test-secret-123"));
  } else {
    assert_non_null(res);
    f->res = res;
  }
  if (f->call) ag_llm_cancel(f->prov, f->call); /* cancel from inside on_done is a no-op */
}

static void on_watchdog(uv_timer_t *t) { *(bool *)t->data = true; }

/* Runs the loop until *flag is set, failing after `ms`. */
static void run_until(uv_loop_t *loop, int *flag, uint64_t ms) {
  bool expired = false;
  uv_timer_t wd;
  uv_timer_init(loop, &wd);
  wd.data = &expired;
  uv_timer_start(&wd, on_watchdog, ms, 0);
  while (!*flag && !expired)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&wd, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  if (!*flag) fail_msg("timed out waiting for the call to finish");
}

static void fx_call(fx *f, bool stream) {
  ag_msg msg = {.role = AG_ROLE_USER, .content = "Hello"};
  ag_chat_request req = {.model = "gpt-test", .messages = &msg, .n_messages = 1, .temperature = -1, .stream = stream};
  ag_chat_callbacks cbs = {on_content, on_tool_delta, on_done, f};
  assert_int_equal(ag_llm_start(f->prov, &req, &cbs, &f->call), 0);
  assert_int_equal(f->done, 0); /* never synchronously */
  run_until(&f->loop, &f->done, 5000);
  f->call = NULL;
}

/* ---- tests ---- */

static void test_stream_text(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  resp *r = srv_resp(&f->s);
  r_stream_head(r);
  /* The first chunk carries only the role and an empty content, as OpenAI sends it. */
  r_chunk(r, "data: {\"object\":\"chat.completion.chunk\",\"model\":\"gpt-test\",\"choices\":[{\"index\":0,\"delta\":"
             "{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n");
  ev_content(r, "Hel");
  r_delay(r, 5);
  ev_content(r, "lo, ");
  r_chunk(r, ": keep-alive comment\n\n");
  ev_content(r, "world");
  ev_finish(r, "stop");
  ev_usage_done(r);
  r_stream_end(r);
  fx_call(f, true);
  assert_int_equal(f->err, 0);
  assert_int_equal(f->n_content, 3);
  assert_string_equal(ag_buf_cstr(&f->content), "Hello, world");
  assert_string_equal(f->res->message.content, "Hello, world");
  assert_int_equal(f->res->message.role, AG_ROLE_ASSISTANT);
  assert_int_equal(f->res->message.n_tool_calls, 0);
  assert_string_equal(f->res->finish_reason, "stop");
  assert_string_equal(f->res->model, "gpt-test");
  assert_int_equal(f->res->usage.prompt_tokens, 11);
  assert_int_equal(f->res->usage.completion_tokens, 7);
  assert_int_equal(f->res->usage.total_tokens, 18);
  assert_int_equal(f->s.n_req, 1);
  assert_non_null(strstr(f->s.req_head[0], "POST /v1/chat/completions HTTP/1.1\r\n"));
  fx_free(f);
}

static void test_stream_tool_calls(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  resp *r = srv_resp(&f->s);
  r_stream_head(r);
  r_chunk(r,
          "data: {\"model\":\"gpt-test\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,"
          "\"tool_calls\":[{\"index\":0,\"id\":\"call_A\",\"type\":\"function\",\"function\":{\"name\":\"get_"
          "weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n");
  /* {"city": "Paris", "unit": "celsius"} in 8 fragments. */
  static const char *frags[8] = {"{\\\"",    "city",           "\\\": \\\"",  "Par",
                                 "is\\\", ", "\\\"unit\\\": ", "\\\"celsius", "\\\"}"};
  for (int i = 0; i < 8; i++) {
    char b[512];
    snprintf(b, sizeof b,
             "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
             "\"%s\"}}]},\"finish_reason\":null}]}\n\n",
             frags[i]);
    r_chunk(r, b);
    if (i == 3) r_delay(r, 3);
  }
  /* A second call, in one delta. */
  r_chunk(r, "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_B\",\"type\":"
             "\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n");
  ev_finish(r, "tool_calls");
  ev_usage_done(r);
  r_stream_end(r);
  fx_call(f, true);
  assert_int_equal(f->err, 0);
  assert_int_equal(f->n_content, 0);
  assert_int_equal(f->n_tool_deltas, 10);
  assert_string_equal(ag_buf_cstr(&f->tools_log), "0|call_A|get_weather|;0|-|-|{\";0|-|-|city;0|-|-|\": \";0|-|-|Par;"
                                                  "0|-|-|is\", ;0|-|-|\"unit\": ;0|-|-|\"celsius;0|-|-|\"};"
                                                  "1|call_B|get_time|{};");
  ag_msg *m = &f->res->message;
  assert_null(m->content);
  assert_int_equal(m->n_tool_calls, 2);
  assert_string_equal(m->tool_calls[0].id, "call_A");
  assert_string_equal(m->tool_calls[0].name, "get_weather");
  assert_string_equal(m->tool_calls[0].arguments, "{\"city\": \"Paris\", \"unit\": \"celsius\"}");
  assert_string_equal(m->tool_calls[1].id, "call_B");
  assert_string_equal(m->tool_calls[1].name, "get_time");
  assert_string_equal(m->tool_calls[1].arguments, "{}");
  assert_string_equal(f->res->finish_reason, "tool_calls");
  assert_int_equal(f->res->usage.total_tokens, 18);
  fx_free(f);
}

static void test_request_body_structured_output(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  script_ok_stream(&f->s, "{}");
  ag_llm_tool_call tc = {"call_1", "lookup", "{\"q\":\"x\"}"};
  ag_msg msgs[4] = {
      {.role = AG_ROLE_SYSTEM, .content = "be brief"},
      {.role = AG_ROLE_USER, .content = "hi \xff there"}, /* invalid UTF-8 is replaced, not fatal */
      {.role = AG_ROLE_ASSISTANT, .tool_calls = &tc, .n_tool_calls = 1},
      {.role = AG_ROLE_TOOL, .content = "result", .tool_call_id = "call_1", .name = "lookup"},
  };
  ag_tool_def tools[2] = {
      {"lookup", "Looks things up", "{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\"}}}", false},
      {"strict_one", "Strict",
       "{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\"}},\"required\":[\"q\"],"
       "\"additionalProperties\":false}",
       true}};
  ag_chat_request req = {
      .model = "gpt-test",
      .messages = msgs,
      .n_messages = 4,
      .tools = tools,
      .n_tools = 2,
      .tool_choice = AG_TOOL_CHOICE_NAMED,
      .tool_choice_name = "lookup",
      .response_schema =
          "{\"type\":\"object\",\"properties\":{\"answer\":{\"type\":\"string\"}},\"required\":[\"answer\"]}",
      .response_schema_name = "final_answer",
      .temperature = 0.25,
      .max_tokens = 100,
      .stream = true,
      .session_id = "sess-1",
  };
  ag_chat_callbacks cbs = {on_content, on_tool_delta, on_done, f};
  assert_int_equal(ag_llm_start(f->prov, &req, &cbs, &f->call), 0);
  run_until(&f->loop, &f->done, 5000);
  f->call = NULL;
  assert_int_equal(f->err, 0);
  assert_int_equal(f->s.n_req, 1);

  const char *head = f->s.req_head[0];
  assert_non_null(strstr(head, "\r\nContent-Type: application/json\r\n"));
  assert_non_null(strstr(head, "\r\nAuthorization: Bearer sk-test-secret-123\r\n"));
  assert_non_null(strstr(head, "\r\nAccept: text/event-stream\r\n"));
  assert_null(strcasestr(head, "\r\nExpect:"));

  const char *body = f->s.req_body[0];
  ag_json *j = ag_json_parse(body, strlen(body), NULL, 0);
  assert_non_null(j);
  assert_string_equal(ag_json_get_str(j, "model"), "gpt-test");
  bool b = false;
  assert_true(ag_json_get_bool(j, "stream", &b) && b);
  assert_true(ag_json_get_bool(ag_json_get(j, "stream_options"), "include_usage", &b) && b);
  double t = 0;
  assert_true(ag_json_get_num(j, "temperature", &t));
  assert_true(t > 0.24 && t < 0.26);
  long long mt = 0;
  assert_true(ag_json_get_int(j, "max_tokens", &mt) && mt == 100);

  ag_json *rf = ag_json_get(j, "response_format"), *js = ag_json_get(rf, "json_schema");
  assert_string_equal(ag_json_get_str(rf, "type"), "json_schema");
  assert_string_equal(ag_json_get_str(js, "name"), "final_answer");
  assert_true(ag_json_get_bool(js, "strict", &b) && b);
  ag_json *schema = ag_json_get(js, "schema");
  assert_string_equal(ag_json_get_str(schema, "type"), "object");
  assert_string_equal(ag_json_str(ag_json_at(ag_json_get(schema, "required"), 0)), "answer");

  ag_json *m = ag_json_get(j, "messages");
  assert_int_equal(ag_json_len(m), 4);
  assert_string_equal(ag_json_get_str(ag_json_at(m, 0), "role"), "system");
  assert_string_equal(ag_json_get_str(ag_json_at(m, 1), "content"), "hi \xEF\xBF\xBD there");
  ag_json *asst = ag_json_at(m, 2);
  assert_string_equal(ag_json_get_str(asst, "role"), "assistant");
  assert_true(ag_json_is(ag_json_get(asst, "content"), AG_JSON_NULL));
  ag_json *tc0 = ag_json_at(ag_json_get(asst, "tool_calls"), 0);
  assert_string_equal(ag_json_get_str(tc0, "id"), "call_1");
  assert_string_equal(ag_json_get_str(tc0, "type"), "function");
  assert_string_equal(ag_json_get_str(ag_json_get(tc0, "function"), "name"), "lookup");
  assert_string_equal(ag_json_get_str(ag_json_get(tc0, "function"), "arguments"), "{\"q\":\"x\"}");
  ag_json *tool = ag_json_at(m, 3);
  assert_string_equal(ag_json_get_str(tool, "role"), "tool");
  assert_string_equal(ag_json_get_str(tool, "tool_call_id"), "call_1");
  assert_string_equal(ag_json_get_str(tool, "name"), "lookup");

  ag_json *fn = ag_json_get(ag_json_at(ag_json_get(j, "tools"), 0), "function");
  assert_string_equal(ag_json_get_str(ag_json_at(ag_json_get(j, "tools"), 0), "type"), "function");
  assert_string_equal(ag_json_get_str(fn, "name"), "lookup");
  assert_string_equal(ag_json_get_str(fn, "description"), "Looks things up");
  assert_string_equal(ag_json_get_str(ag_json_get(fn, "parameters"), "type"), "object");
  assert_null(ag_json_get(fn, "strict")); /* only where the schema allows it */
  ag_json *fn2 = ag_json_get(ag_json_at(ag_json_get(j, "tools"), 1), "function");
  bool strict = false;
  assert_true(ag_json_get_bool(fn2, "strict", &strict));
  assert_true(strict);
  ag_json *choice = ag_json_get(j, "tool_choice");
  assert_string_equal(ag_json_get_str(choice, "type"), "function");
  assert_string_equal(ag_json_get_str(ag_json_get(choice, "function"), "name"), "lookup");
  ag_json_free(j);

  /* Bad inputs fail at start, with no callback. */
  req.response_schema = "{not json";
  assert_int_equal(ag_llm_start(f->prov, &req, &cbs, &f->call), AG_EINVAL);
  req.response_schema = NULL;
  req.tool_choice_name = NULL;
  assert_int_equal(ag_llm_start(f->prov, &req, &cbs, &f->call), AG_EINVAL);
  req.tool_choice = AG_TOOL_CHOICE_REQUIRED;
  ag_buf out;
  ag_buf_init(&out, 1 << 16);
  assert_int_equal(ag__openai_build_request(&req, &out), 0);
  assert_non_null(strstr(ag_buf_cstr(&out), "\"tool_choice\":\"required\""));
  assert_null(strstr(ag_buf_cstr(&out), "response_format"));
  ag_buf_deinit(&out);
  assert_int_equal(f->done, 1);
  fx_free(f);
}

static void test_retry_500_then_200(void **state) {
  (void)state;
  fx *f = fx_new(&(ag_openai_config){.max_retries = 2});
  r_full(srv_resp(&f->s), "500 Internal Server Error", NULL, "{\"error\":{\"message\":\"boom\"}}");
  script_ok_stream(&f->s, "recovered");
  fx_call(f, true);
  assert_int_equal(f->err, 0);
  assert_string_equal(f->res->message.content, "recovered");
  assert_int_equal(f->s.n_req, 2);
  assert_string_equal(f->s.req_body[0], f->s.req_body[1]);
  fx_free(f);
}

static void test_retry_429_retry_after(void **state) {
  (void)state;
  /* Retry-After: 0 retries at once; Retry-After: 10 is honoured only up to retry_max_ms (60). */
  fx *f = fx_new(&(ag_openai_config){.max_retries = 3, .retry_max_ms = 60});
  r_full(srv_resp(&f->s), "429 Too Many Requests", "Retry-After: 0\r\n", "{\"error\":{\"message\":\"slow down\"}}");
  r_full(srv_resp(&f->s), "429 Too Many Requests", "Retry-After: 10\r\n", "{\"error\":{\"message\":\"slow down\"}}");
  script_ok_stream(&f->s, "ok");
  uint64_t t0 = ag_now_ms();
  fx_call(f, true);
  uint64_t took = ag_now_ms() - t0;
  assert_int_equal(f->err, 0);
  assert_int_equal(f->s.n_req, 3);
  assert_true(took >= 55);
  assert_true(took < 1000);
  fx_free(f);
}

static void test_retries_exhausted_and_4xx(void **state) {
  (void)state;
  fx *f = fx_new(&(ag_openai_config){.max_retries = 1});
  r_full(srv_resp(&f->s), "503 Service Unavailable", NULL, "{\"error\":{\"message\":\"overloaded\"}}");
  r_full(srv_resp(&f->s), "503 Service Unavailable", NULL, "{\"error\":{\"message\":\"overloaded\"}}");
  /* A 401 is not retried; the upstream echoing our key must not leak it. */
  r_full(srv_resp(&f->s), "401 Unauthorized", NULL,
         "{\"error\":{\"message\":\"Incorrect API key provided: sk-test-secret-123\"}}");
  r_full(srv_resp(&f->s), "400 Bad Request", NULL, "plain text\nerror\n");
  fx_call(f, true);
  assert_int_equal(f->err, AG_EUPSTREAM);
  assert_int_equal(f->error.http_status, 503);
  assert_string_equal(f->error.message, "upstream returned 503: overloaded");
  assert_int_equal(f->s.n_req, 2);

  f->done = 0;
  fx_call(f, false);
  assert_int_equal(f->err, AG_EUPSTREAM);
  assert_int_equal(f->error.http_status, 401);
  assert_string_equal(f->error.message, "upstream returned 401: Incorrect API key provided: ***");
  assert_int_equal(f->s.n_req, 3);

  f->done = 0;
  fx_call(f, false);
  assert_int_equal(f->error.http_status, 400);
  assert_string_equal(f->error.message, "upstream returned 400: plain text error");
  assert_int_equal(f->s.n_req, 4);
  /* All four requests on one kept-alive connection. */
  assert_int_equal(f->s.connections, 1);
  f->done = 1;
  fx_free(f);
}

static void test_stream_cut_not_retried(void **state) {
  (void)state;
  fx *f = fx_new(&(ag_openai_config){.max_retries = 3});
  resp *r = srv_resp(&f->s);
  r_raw(r, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
  r_raw(r, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial \"}}]}\n\n");
  r_raw(r, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"answ\"}}]}\n\ndata: {\"choi");
  r_close(r);
  fx_call(f, true);
  assert_int_equal(f->err, AG_EPROTO);
  assert_string_equal(f->error.message, "upstream stream ended early");
  assert_string_equal(ag_buf_cstr(&f->content), "partial answ");
  assert_int_equal(f->s.n_req, 1);

  /* The same cut inside a chunked body: curl reports the truncation, still no retry. */
  r = srv_resp(&f->s);
  r_stream_head(r);
  ev_content(r, "abc");
  r_raw(r, "40\r\ndata: {\"cho");
  r_close(r);
  f->done = 0;
  fx_call(f, true);
  assert_int_equal(f->err, AG_EPROTO);
  assert_non_null(strstr(f->error.message, "upstream stream ended early"));
  assert_int_equal(f->s.n_req, 2);
  fx_free(f);
}

static void test_cut_before_any_delta_is_retried(void **state) {
  (void)state;
  fx *f = fx_new(&(ag_openai_config){.max_retries = 1});
  resp *r = srv_resp(&f->s);
  r_stream_head(r);
  r_raw(r, "10\r\ndata: {");
  r_close(r);
  script_ok_stream(&f->s, "second try");
  fx_call(f, true);
  assert_int_equal(f->err, 0);
  assert_string_equal(ag_buf_cstr(&f->content), "second try");
  assert_int_equal(f->s.n_req, 2);
  fx_free(f);
}

static void test_idle_timeout(void **state) {
  (void)state;
  fx *f = fx_new(&(ag_openai_config){.max_retries = 2, .idle_timeout_ms = 150});
  resp *r = srv_resp(&f->s);
  r_stream_head(r);
  ev_content(r, "first");
  r_stall(r);
  uint64_t t0 = ag_now_ms();
  fx_call(f, true);
  uint64_t took = ag_now_ms() - t0;
  assert_int_equal(f->err, AG_ETIMEDOUT);
  assert_int_equal(f->s.n_req, 1); /* a delta was delivered: no retry */
  assert_true(took >= 140);
  assert_true(took < 1000);
  fx_free(f);
}

static void test_first_byte_timeout_retried(void **state) {
  (void)state;
  fx *f = fx_new(&(ag_openai_config){.max_retries = 1, .first_byte_timeout_ms = 100});
  r_stall(srv_resp(&f->s));
  resp *r = srv_resp(&f->s);
  r_stream_head(r);
  r_stall(r); /* headers, then silence: still the first-byte timeout */
  uint64_t t0 = ag_now_ms();
  fx_call(f, true);
  uint64_t took = ag_now_ms() - t0;
  assert_int_equal(f->err, AG_ETIMEDOUT);
  assert_int_equal(f->s.n_req, 2);
  assert_true(took >= 190);
  assert_true(took < 1500);
  fx_free(f);
}

static void test_malformed_chunk(void **state) {
  (void)state;
  fx *f = fx_new(&(ag_openai_config){.max_retries = 3});
  resp *r = srv_resp(&f->s);
  r_stream_head(r);
  ev_content(r, "ok so far");
  r_chunk(r, "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}]]}\n\n");
  r_stall(r);
  fx_call(f, true);
  assert_int_equal(f->err, AG_EPROTO);
  assert_non_null(strstr(f->error.message, "malformed stream chunk"));
  assert_int_equal(f->s.n_req, 1);
  fx_free(f);
}

static void test_error_object_in_stream(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  resp *r = srv_resp(&f->s);
  r_stream_head(r);
  r_chunk(r, "data: {\"error\":{\"message\":\"context length exceeded\",\"type\":\"invalid_request_error\"}}\n\n");
  r_stream_end(r);
  fx_call(f, true);
  assert_int_equal(f->err, AG_EUPSTREAM);
  assert_string_equal(f->error.message, "upstream error: context length exceeded");
  fx_free(f);
}

static void test_cancel_mid_stream(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  f->cancel_after_deltas = 1;
  resp *r = srv_resp(&f->s);
  r_stream_head(r);
  /* Two deltas in one write: the cancel inside the first must stop the second. */
  r_raw(r, "80\r\n");
  r_raw(r, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"one\"}}]}\n\n"
           "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"two\"}}]}\n\n");
  r_raw(r, "\r\n");
  r_stall(r);
  fx_call(f, true);
  assert_int_equal(f->err, AG_ECANCELED);
  assert_int_equal(f->n_content, 1);
  assert_string_equal(ag_buf_cstr(&f->content), "one");
  fx_free(f); /* asserts on_done ran exactly once after the loop drained */
}

static void test_cancel_during_backoff(void **state) {
  (void)state;
  fx *f = fx_new(&(ag_openai_config){.max_retries = 3, .retry_base_ms = 10000, .retry_max_ms = 10000});
  r_full(srv_resp(&f->s), "503 Service Unavailable", "Retry-After: 5\r\n", "{}");
  ag_msg msg = {.role = AG_ROLE_USER, .content = "Hello"};
  ag_chat_request req = {.model = "m", .messages = &msg, .n_messages = 1, .temperature = -1, .stream = true};
  ag_chat_callbacks cbs = {on_content, on_tool_delta, on_done, f};
  assert_int_equal(ag_llm_start(f->prov, &req, &cbs, &f->call), 0);
  /* Once the HTTP call is over the provider sits in its 5 s backoff. */
  while (f->s.n_req < 1 || ag_http_client_active(f->http) > 0)
    uv_run(&f->loop, UV_RUN_ONCE);
  uint64_t t0 = ag_now_ms();
  ag_llm_cancel(f->prov, f->call);
  assert_int_equal(f->done, 0);
  run_until(&f->loop, &f->done, 2000);
  f->call = NULL;
  assert_true(ag_now_ms() - t0 < 500);
  assert_int_equal(f->err, AG_ECANCELED);
  assert_int_equal(f->s.n_req, 1);
  fx_free(f);
}

static void test_connect_error(void **state) {
  (void)state;
  /* A port that was just free: nothing listens there. */
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_tcp_t t;
  uv_tcp_init(&loop, &t);
  struct sockaddr_in a, got;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_bind(&t, (struct sockaddr *)&a, 0);
  int len = sizeof got;
  uv_tcp_getsockname(&t, (struct sockaddr *)&got, &len);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);

  fx *f = fx_new(&(ag_openai_config){.max_retries = 2});
  ag_llm_provider_free(f->prov);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", ntohs(got.sin_port));
  ag_openai_config cfg = {.base_url = url, .max_retries = 2, .retry_base_ms = 1, .retry_max_ms = 5};
  assert_int_equal(ag_openai_provider_new(&f->loop, f->http, &cfg, &f->prov), 0);
  fx_call(f, false);
  assert_int_equal(f->err, AG_ECONNECT);
  assert_int_equal(f->error.http_status, 0);
  assert_string_equal(f->error.message, "could not connect to upstream");
  fx_free(f);
}

static void test_non_streaming(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  r_full(srv_resp(&f->s), "200 OK", NULL,
         "{\"id\":\"x\",\"object\":\"chat.completion\",\"model\":\"gpt-test-2\",\"choices\":[{\"index\":0,"
         "\"message\":{\"role\":\"assistant\",\"content\":\"Let me check.\",\"tool_calls\":[{\"id\":\"call_9\","
         "\"type\":\"function\",\"function\":{\"name\":\"search\",\"arguments\":\"{\\\"q\\\":1}\"}}]},"
         "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,"
         "\"total_tokens\":7}}");
  r_full(srv_resp(&f->s), "200 OK", NULL, "{\"choices\":[]}");
  fx_call(f, false);
  assert_int_equal(f->err, 0);
  assert_int_equal(f->n_content + f->n_tool_deltas, 0);
  assert_string_equal(f->res->message.content, "Let me check.");
  assert_int_equal(f->res->message.n_tool_calls, 1);
  assert_string_equal(f->res->message.tool_calls[0].id, "call_9");
  assert_string_equal(f->res->message.tool_calls[0].name, "search");
  assert_string_equal(f->res->message.tool_calls[0].arguments, "{\"q\":1}");
  assert_string_equal(f->res->finish_reason, "tool_calls");
  assert_string_equal(f->res->model, "gpt-test-2");
  assert_int_equal(f->res->usage.total_tokens, 7);
  assert_non_null(strstr(f->s.req_head[0], "\r\nAccept: application/json\r\n"));
  assert_null(strstr(f->s.req_body[0], "\"stream\""));

  f->done = 0;
  fx_call(f, false);
  assert_int_equal(f->err, AG_EPROTO);
  f->done = 1;
  fx_free(f);
}

/* ---- the HTTP client on its own ---- */

typedef struct hx {
  int done, err, n_data;
  long status, hdr_status;
  int64_t retry_after;
  size_t bytes;
  int abort_at; /* on_data returns non-zero at this chunk */
  ag_http_call *call;
  bool cancel_in_headers;
} hx;

static void hx_headers(long status, int64_t ra, void *ud) {
  hx *h = ud;
  h->hdr_status = status;
  h->retry_after = ra;
  if (h->cancel_in_headers) ag_http_call_cancel(h->call);
}

static int hx_data(const char *d, size_t len, void *ud) {
  hx *h = ud;
  h->n_data++;
  h->bytes += len;
  return h->abort_at && h->n_data == h->abort_at;
}

static void hx_done(int err, long status, void *ud) {
  hx *h = ud;
  h->done++;
  h->err = err;
  h->status = status;
}

static void hx_run(fx *f, hx *h, size_t max_bytes) {
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/x", f->s.port);
  ag_http_call_opts o = {.method = "GET",
                         .url = url,
                         .max_response_bytes = max_bytes,
                         .first_byte_timeout_ms = 2000,
                         .on_headers = hx_headers,
                         .on_data = hx_data,
                         .on_done = hx_done,
                         .ud = h};
  h->retry_after = -2;
  assert_int_equal(ag_http_call_start(f->http, &o, &h->call), 0);
  assert_int_equal(ag_http_client_active(f->http), 1);
  run_until(&f->loop, &h->done, 3000);
  assert_int_equal(ag_http_client_active(f->http), 0);
}

static void test_http_client(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  /* Retry-After as an HTTP date about 5 s ahead. */
  char hdr[128], date[64];
  time_t when = time(NULL) + 5;
  struct tm tm;
  gmtime_r(&when, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  snprintf(hdr, sizeof hdr, "Retry-After: %s\r\n", date);
  r_full(srv_resp(&f->s), "503 Service Unavailable", hdr, "{}");
  r_full(srv_resp(&f->s), "200 OK", "Retry-After: 7\r\n", "0123456789012345678901234567890123456789");
  r_full(srv_resp(&f->s), "200 OK", NULL, "0123456789012345678901234567890123456789");
  resp *r = srv_resp(&f->s);
  r_stream_head(r);
  r_chunk(r, "a");
  r_delay(r, 5);
  r_chunk(r, "b");
  r_delay(r, 5);
  r_chunk(r, "c");
  r_stall(r);
  r_full(srv_resp(&f->s), "200 OK", NULL, "never read");
  r_stall(srv_resp(&f->s));

  hx h = {0};
  hx_run(f, &h, 0);
  assert_int_equal(h.err, 0);
  assert_int_equal(h.status, 503);
  assert_int_equal(h.hdr_status, 503);
  assert_true(h.retry_after >= 3000 && h.retry_after <= 6000);

  hx h2 = {0};
  hx_run(f, &h2, 0);
  assert_int_equal(h2.status, 200);
  assert_int_equal(h2.retry_after, 7000);
  assert_int_equal(h2.bytes, 40);

  hx h3 = {0}; /* the cap */
  hx_run(f, &h3, 10);
  assert_int_equal(h3.err, AG_ETOOBIG);

  hx h4 = {.abort_at = 2}; /* on_data asks to stop */
  hx_run(f, &h4, 0);
  assert_int_equal(h4.err, AG_ECANCELED);
  assert_int_equal(h4.n_data, 2);
  assert_int_equal(h4.status, 200);

  hx hc = {.cancel_in_headers = true}; /* cancel from inside on_headers */
  hx_run(f, &hc, 0);
  assert_int_equal(hc.err, AG_ECANCELED);
  assert_int_equal(hc.hdr_status, 200);
  assert_int_equal(hc.n_data, 0);

  hx h5 = {0};
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/x", f->s.port);
  ag_http_call_opts o = {.url = url, .on_done = hx_done, .ud = &h5};
  assert_int_equal(ag_http_call_start(f->http, &o, &h5.call), 0);
  ag_http_call_cancel(h5.call); /* cancelled before it even started */
  ag_http_call_cancel(h5.call);
  assert_int_equal(h5.done, 0);
  run_until(&f->loop, &h5.done, 1000);
  assert_int_equal(h5.err, AG_ECANCELED);
  assert_int_equal(h5.status, 0);

  hx h6 = {0};
  o.ud = &h6;
  o.first_byte_timeout_ms = 50;
  assert_int_equal(ag_http_call_start(f->http, &o, &h6.call), 0);
  run_until(&f->loop, &h6.done, 1000);
  assert_int_equal(h6.err, AG_ETIMEDOUT);

  ag_http_call *bad;
  o.url = NULL;
  assert_int_equal(ag_http_call_start(f->http, &o, &bad), AG_EINVAL);
  o.url = "ftp://example.invalid/";
  o.ud = &h6;
  h6.done = 0;
  assert_int_equal(ag_http_call_start(f->http, &o, &bad), 0);
  run_until(&f->loop, &h6.done, 1000);
  assert_true(h6.err < 0);
  fx_free(f);
}

static void test_parse_helpers(void **state) {
  (void)state;
  char msg[32];
  ag__openai_error_message("{\"error\":{\"message\":\"a very long message that will not fit here\"}}", 66, msg,
                           sizeof msg);
  assert_int_equal(strlen(msg), 31);
  ag__openai_error_message("{\"detail\":\"Not Found\"}", 22, msg, sizeof msg);
  assert_string_equal(msg, "Not Found");
  ag__openai_error_message("\xce\xbb\xce\xbb\xce\xbb", 6, msg, 6);
  assert_string_equal(msg, "\xce\xbb\xce\xbb"); /* never half a character */

  /* A stream that only has a finish_reason (no [DONE]) is complete; one with neither is not. */
  ag__openai_stream s;
  ag__openai_stream_init(&s, 0, NULL);
  const char *txt =
      "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"length\"}]}\r\n\r\n";
  assert_int_equal(ag__openai_stream_feed(&s, txt, strlen(txt)), 0);
  ag_chat_result *res = NULL;
  assert_int_equal(ag__openai_stream_finish(&s, &res), 0);
  assert_string_equal(res->message.content, "hi");
  assert_string_equal(res->finish_reason, "length");
  ag_chat_result_free(res);
  ag__openai_stream_deinit(&s);

  ag__openai_stream_init(&s, 0, NULL);
  /* Tool call index beyond the limit, and a missing index with a fresh id. */
  txt = "data: "
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}"
        "]}}]}\n\n"
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"b\",\"function\":{\"name\":\"g\"}}]}}]}\n\n"
        "data: [DONE]\n\n";
  assert_int_equal(ag__openai_stream_feed(&s, txt, strlen(txt)), 0);
  assert_int_equal(ag__openai_stream_finish(&s, &res), 0);
  assert_null(res->message.content);
  assert_int_equal(res->message.n_tool_calls, 2);
  assert_string_equal(res->message.tool_calls[0].arguments, "{\"x\":1}");
  assert_string_equal(res->message.tool_calls[1].name, "g");
  assert_string_equal(res->message.tool_calls[1].arguments, "{}");
  ag_chat_result_free(res);
  ag__openai_stream_deinit(&s);

  ag__openai_stream_init(&s, 0, NULL);
  txt = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":100000,\"id\":\"a\"}]}}]}\n\n";
  assert_int_equal(ag__openai_stream_feed(&s, txt, strlen(txt)), AG_EPROTO);
  assert_int_equal(ag__openai_stream_finish(&s, &res), AG_EPROTO);
  ag__openai_stream_deinit(&s);

  ag__openai_stream_init(&s, 0, NULL);
  assert_int_equal(ag__openai_stream_feed(&s, "data: {}\n\n", 10), 0);
  assert_int_equal(ag__openai_stream_finish(&s, &res), AG_EPROTO);
  assert_string_equal(s.errmsg, "upstream stream ended early");
  ag__openai_stream_deinit(&s);
  ag__openai_stream_deinit(&s);
}

/* The fast chunk reader takes the plain content chunk, decoded, and leaves anything else to the
 * full parser. */
static void test_fast_chunk(void **state) {
  (void)state;
  char buf[64];
  ag__openai_chunk c = {.content = buf, .cap = sizeof buf};
  const char *plain = "{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":17,\"model\":\"gpt\","
                      "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"a\\\"b\\u00e9\\n\"},"
                      "\"finish_reason\":null}]}";
  assert_int_equal(ag__openai_chunk_fast(plain, strlen(plain), &c), 1);
  assert_true(c.have_content);
  assert_int_equal(c.content_len, 6);
  assert_memory_equal(c.content, "a\"b\xc3\xa9\n", 6);
  assert_int_equal(c.model_len, 3);
  assert_memory_equal(c.model, "gpt", 3);
  const char *not_mine[] = {
      "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[]},\"finish_reason\":null}]}",
      "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}",
      "{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"x\"}}]}",
      "{\"choices\":[],\"usage\":{\"total_tokens\":3}}",
      "{\"error\":{\"message\":\"no\"}}",
      "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\ud800\"}}]}",
      "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]} trailing",
      "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\",\"content\":\"y\"}}]}",
      "{\"model\":\"a\\u0062\",\"choices\":[{\"index\":0,\"delta\":{}}]}",
  };
  for (size_t i = 0; i < sizeof not_mine / sizeof not_mine[0]; i++)
    if (ag__openai_chunk_fast(not_mine[i], strlen(not_mine[i]), &c) != 0) fail_msg("accepted case %zu", i);
  /* Content longer than the buffer: the full parser's too. */
  char big[400];
  int n = snprintf(big, sizeof big, "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%080d%080d\"}}]}", 0, 0);
  assert_int_equal(ag__openai_chunk_fast(big, (size_t)n, &c), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fast_chunk),
      cmocka_unit_test(test_stream_text),
      cmocka_unit_test(test_stream_tool_calls),
      cmocka_unit_test(test_request_body_structured_output),
      cmocka_unit_test(test_retry_500_then_200),
      cmocka_unit_test(test_retry_429_retry_after),
      cmocka_unit_test(test_retries_exhausted_and_4xx),
      cmocka_unit_test(test_stream_cut_not_retried),
      cmocka_unit_test(test_cut_before_any_delta_is_retried),
      cmocka_unit_test(test_idle_timeout),
      cmocka_unit_test(test_first_byte_timeout_retried),
      cmocka_unit_test(test_malformed_chunk),
      cmocka_unit_test(test_error_object_in_stream),
      cmocka_unit_test(test_cancel_mid_stream),
      cmocka_unit_test(test_cancel_during_backoff),
      cmocka_unit_test(test_connect_error),
      cmocka_unit_test(test_non_streaming),
      cmocka_unit_test(test_http_client),
      cmocka_unit_test(test_parse_helpers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
