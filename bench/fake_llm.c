/* A fast fake OpenAI-compatible upstream for the benchmarks (../shared/BENCH.md), on agentd's own
 * HTTP server. POST /v1/chat/completions (or /chat/completions) answers with the reference task of
 * ref_task.h, chosen from the request:
 *   - tools name lookup_order and no message has role "tool": a lookup_order call whose arguments
 *     come in AG_REF_TOOL_FRAGMENTS fragments;
 *   - else tools name clarification_tool and no tool message: a clarification_tool call (4 fragments);
 *   - else the text AG_REF_ANSWER in --deltas content deltas.
 * With stream:true it is OpenAI's chat.completion.chunk SSE (role chunk, the pieces, a finish chunk,
 * a usage chunk, [DONE]); otherwise one chat.completion. GET /healthz ("ok") and GET /v1/models too.
 *
 *   fake_llm [--port N (0 = any)] [--host H] [--delay-ms D] [--deltas N] [--gap-ms G]
 *            [--max-connections M] [--per-event]
 *
 * prints "LISTENING <port>" once listening; SIGTERM/SIGINT close the server and exit 0. --delay-ms
 * waits before the response headers. --gap-ms G > 0 streams with ag_http_sse_* (chunked): the
 * pieces after the first chunk one per G ms, the finish, usage and [DONE] right after the last
 * piece. With G = 0 the whole stream goes out as ONE text/event-stream body with a Content-Length
 * (the same bytes as the events, one write instead of ~200: per-event writes cost ~9 us each on
 * loopback, 30x the rest of the work); --per-event sends those events one by one with
 * ag_http_sse_send instead, stopping when the socket is not writable and resuming on drain.
 *
 * Speed: each chunk is a per-request head ({"id":...,"object":...,"created":...,"model":...,) and a
 * tail from "choices" on. Every tail that does not depend on the request is rendered once at
 * start-up; per request the head is built once at the front of one buffer and each tail is copied
 * after it in turn, so a chunk costs a memcpy (and, per event, a write). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/util.h"
#include "net/http_server.h"
#include "ref_task.h"

#define CLARIFY_TOOL "clarification_tool"
#define CLARIFY_ARGS                                                                                                   \
  "{\"reasoning\":\"The order is not named.\",\"unclear_terms\":[\"order\"],\"assumptions\":[\"a recent order\"],"     \
  "\"questions\":[\"Which order do you mean?\"]}"
#define CLARIFY_FRAGMENTS 4
#define DEFAULT_MODEL "fake-model"
#define MAX_CHUNK_BYTES (1u << 20)  /* head (with the request's model) + one tail */
#define MAX_BODY_BYTES (256u << 20) /* a coalesced stream */
#define KEEP_BODY_BYTES (1u << 20)

/* Owned bytes rendered at start-up. */
typedef struct piece {
  char *p;
  size_t n;
} piece;

/* Text around a per-request number (the tool call's "call_<n>"): a, the number, b. Without b
 * (b.p NULL) there is no number: a is the whole text. */
typedef struct split {
  piece a, b;
} split;

enum { ANS_TEXT, ANS_LOOKUP, ANS_CLARIFY, ANS_COUNT };

/* One of the three answers, pre-rendered. */
typedef struct answer {
  const char *tool; /* NULL: the text answer */
  size_t text_len;  /* bytes of the content or the arguments (completion tokens) */
  size_t npieces;
  piece *tails; /* [npieces]: the chunk tail of each content delta / argument fragment */
  split first;  /* stream: the role chunk's tail (with the tool call's id) */
  piece finish; /* stream: the tail of the chunk with finish_reason */
  split whole;  /* no stream: "choices":[...], of the chat.completion */
} answer;

typedef struct fake_req {
  ag_http_req *req; /* NULL once finished */
  const answer *ans;
  bool stream;
  bool sse; /* ag_http_sse_begin was called */
  bool has_timer;
  unsigned long long n; /* chatcmpl-fake-<n>, call_<n> */
  long long prompt_tokens;
  size_t pos, limit, total; /* stream items: next to send, allowed by now (gap mode), in all */
  size_t head_len;
  ag_buf buf; /* [0, head_len) the head, then the tail being sent */
  uv_timer_t timer;
} fake_req;

static struct {
  uv_loop_t *loop;
  ag_http_server *srv;
  uv_signal_t sigterm, sigint;
  bool stopping;
  bool per_event; /* --per-event: with gap 0 too, one ag_http_sse_send per chunk */
  uint64_t delay_ms, gap_ms;
  unsigned long long next_n;
  answer ans[ANS_COUNT];
  ag_buf body; /* scratch for a whole coalesced stream (one request at a time: single thread) */
} g;

/* ---------- start-up rendering ---------- */

static int take(ag_buf *b, int rc, piece *out) {
  out->n = b->len;
  out->p = rc == 0 ? ag_buf_take(b) : NULL;
  ag_buf_deinit(b);
  return out->p ? 0 : AG_ENOMEM;
}

static int render(piece *out, const char *a, const char *esc, size_t esc_len, const char *b) {
  ag_buf buf;
  ag_buf_init(&buf, MAX_CHUNK_BYTES);
  int rc = ag_buf_append_str(&buf, a);
  if (rc == 0 && esc) rc = ag_buf_append_json_escaped(&buf, esc, esc_len);
  if (rc == 0 && b) rc = ag_buf_append_str(&buf, b);
  return take(&buf, rc, out);
}

/* Splits text into npieces nearly equal byte ranges (the texts are ASCII) and renders every tail. */
static int answer_init(answer *a, const char *tool, const char *text, size_t npieces) {
  size_t len = strlen(text);
  if (npieces > len) npieces = len; /* no empty deltas */
  *a = (answer){.tool = tool, .text_len = len, .npieces = npieces};
  a->tails = calloc(npieces, sizeof *a->tails);
  if (!a->tails) return AG_ENOMEM;
  const char *pre =
      tool ? "\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\""
           : "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"";
  const char *post = tool ? "\"}}]},\"finish_reason\":null}]}" : "\"},\"finish_reason\":null}]}";
  int rc = 0;
  for (size_t i = 0; i < npieces && rc == 0; i++) {
    size_t lo = i * len / npieces, hi = (i + 1) * len / npieces;
    rc = render(&a->tails[i], pre, text + lo, hi - lo, post);
  }
  if (rc < 0) return rc;
  if (!tool) {
    rc = render(&a->first.a,
                "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                "\"finish_reason\":null}]}",
                NULL, 0, NULL);
    if (rc == 0)
      rc = render(&a->finish, "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}", NULL, 0, NULL);
    if (rc == 0)
      rc = render(&a->whole.a, "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"", text,
                  len, "\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],");
    return rc;
  }
  rc = render(&a->first.a,
              "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":"
              "0,\"id\":\"call_",
              NULL, 0, NULL);
  if (rc == 0)
    rc = render(&a->first.b, "\",\"type\":\"function\",\"function\":{\"name\":\"", tool, strlen(tool),
                "\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}");
  if (rc == 0)
    rc =
        render(&a->finish, "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}", NULL, 0, NULL);
  if (rc == 0)
    rc =
        render(&a->whole.a,
               "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
               "\"call_",
               NULL, 0, NULL);
  if (rc == 0) {
    ag_buf b;
    ag_buf_init(&b, MAX_CHUNK_BYTES);
    rc = ag_buf_append_str(&b, "\",\"type\":\"function\",\"function\":{\"name\":\"");
    if (rc == 0) rc = ag_buf_append_json_escaped(&b, tool, strlen(tool));
    if (rc == 0) rc = ag_buf_append_str(&b, "\",\"arguments\":\"");
    if (rc == 0) rc = ag_buf_append_json_escaped(&b, text, len);
    if (rc == 0) rc = ag_buf_append_str(&b, "\"}}]},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],");
    rc = take(&b, rc, &a->whole.b);
  }
  return rc;
}

static void answer_deinit(answer *a) {
  for (size_t i = 0; a->tails && i < a->npieces; i++)
    free(a->tails[i].p);
  free(a->tails);
  free(a->first.a.p);
  free(a->first.b.p);
  free(a->finish.p);
  free(a->whole.a.p);
  free(a->whole.b.p);
}

/* ---------- requests ---------- */

static void respond_error(ag_http_req *req, int status, const char *message) {
  char body[256]; /* messages are constant ASCII without quotes */
  int n = snprintf(body, sizeof body,
                   "{\"error\":{\"message\":\"%s\",\"type\":\"invalid_request_error\",\"code\":null,\"param\":null}}",
                   message);
  (void)ag_http_respond(req, status, "application/json", NULL, body, (size_t)n);
}

static void on_timer_closed(uv_handle_t *h) {
  fake_req *f = h->data;
  ag_buf_deinit(&f->buf);
  free(f);
}

/* Frees f (through the timer's close callback when it has one); the request is already finished. */
static void release(fake_req *f) {
  if (f->has_timer) {
    uv_close((uv_handle_t *)&f->timer, on_timer_closed); /* also stops it */
  } else {
    ag_buf_deinit(&f->buf);
    free(f);
  }
}

/* Finishes the request (a no-op that frees it when the client is gone) and releases f. */
static void finish(fake_req *f) {
  ag_http_req *req = f->req;
  f->req = NULL;
  if (f->sse)
    (void)ag_http_sse_end(req);
  else
    (void)ag_http_respond(req, 499, "application/json", NULL, "{}", 2);
  release(f);
}

static void on_client_close(ag_http_req *req, void *ud) { finish(ud); }

/* Puts tail after the head, with the request's number between its halves. */
static int set_tail(fake_req *f, const split *s) {
  f->buf.len = f->head_len;
  int rc = ag_buf_append(&f->buf, s->a.p, s->a.n);
  if (rc == 0 && s->b.p) rc = ag_buf_appendf(&f->buf, "%llu", f->n);
  if (rc == 0 && s->b.p) rc = ag_buf_append(&f->buf, s->b.p, s->b.n);
  return rc;
}

static int append_usage(fake_req *f) {
  long long c = (long long)(f->ans->text_len / 4 + 1);
  return ag_buf_appendf(&f->buf, "\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld}}",
                        f->prompt_tokens, c, f->prompt_tokens + c);
}

/* Renders stream item i into *out: 0 the role chunk, 1..npieces the pieces, then finish, usage and
 * [DONE]. Chunks are rendered in f->buf (head, then the item's tail). */
static int render_item(fake_req *f, size_t i, ag_slice *out) {
  const answer *a = f->ans;
  int rc;
  if (i == 0) {
    rc = set_tail(f, &a->first);
  } else if (i <= a->npieces) {
    rc = set_tail(f, &(split){a->tails[i - 1], {0}});
  } else if (i == a->npieces + 1) {
    rc = set_tail(f, &(split){a->finish, {0}});
  } else if (i == a->npieces + 2) {
    f->buf.len = f->head_len;
    rc = ag_buf_append_str(&f->buf, "\"choices\":[],");
    if (rc == 0) rc = append_usage(f);
  } else {
    *out = AG_SLICE_LIT("[DONE]");
    return 0;
  }
  *out = ag_buf_slice(&f->buf);
  return rc;
}

static int send_item(fake_req *f, size_t i) {
  ag_slice s;
  int rc = render_item(f, i, &s);
  return rc < 0 ? rc : ag_http_sse_send(f->req, s.ptr, s.len);
}

/* The whole stream as one body in g.body: what the per-event path would send, without its
 * chunked framing. ag_http_respond writes it or copies what the socket did not take. */
static int render_all(fake_req *f) {
  ag_buf_reset(&g.body);
  int rc = 0;
  for (size_t i = 0; i < f->total && rc == 0; i++) {
    ag_slice s;
    rc = render_item(f, i, &s);
    if (rc == 0) rc = ag_buf_append(&g.body, "data: ", 6);
    if (rc == 0) rc = ag_buf_append(&g.body, s.ptr, s.len);
    if (rc == 0) rc = ag_buf_append(&g.body, "\n\n", 2);
  }
  return rc;
}

/* Sends what is allowed while the socket takes it; ends the stream after the last item. */
static void pump(fake_req *f) {
  while (f->pos < f->limit) {
    if (!ag_http_req_writable(f->req)) return; /* on_drain (or on_close) comes */
    if (send_item(f, f->pos) < 0) {
      finish(f);
      return;
    }
    f->pos++;
  }
  if (f->pos == f->total) finish(f);
}

static void on_drain(ag_http_req *req, void *ud) { pump(ud); }

static void on_gap(uv_timer_t *t) {
  fake_req *f = t->data;
  /* One more piece per tick; once every piece is allowed, so are finish, usage and [DONE]. */
  if (++f->limit > f->ans->npieces) {
    f->limit = f->total;
    uv_timer_stop(t);
  }
  pump(f);
}

/* The response proper: headers now (after any delay). */
static void respond(fake_req *f) {
  if (!f->stream) {
    int rc = set_tail(f, &f->ans->whole);
    if (rc == 0) rc = append_usage(f);
    ag_http_req *req = f->req;
    f->req = NULL;
    if (rc < 0)
      respond_error(req, 500, "out of memory");
    else
      (void)ag_http_respond(req, 200, "application/json", NULL, f->buf.ptr, f->buf.len);
    release(f);
    return;
  }
  f->total = f->ans->npieces + 4;
  if (!g.gap_ms && !g.per_event) {
    /* One write instead of ~200 (see the top of the file): a back-to-back stream reaches the
     * client as one burst anyway. */
    ag_http_req *req = f->req;
    f->req = NULL;
    if (render_all(f) < 0)
      respond_error(req, 500, "out of memory");
    else
      (void)ag_http_respond(req, 200, "text/event-stream", "Cache-Control: no-cache\r\n", g.body.ptr, g.body.len);
    if (g.body.cap > KEEP_BODY_BYTES) ag_buf_deinit(&g.body); /* a huge --deltas: do not keep it */
    release(f);
    return;
  }
  f->sse = true; /* from here only ag_http_sse_end finishes it */
  if (ag_http_sse_begin(f->req, 200, NULL) < 0) {
    finish(f);
    return;
  }
  f->limit = g.gap_ms ? 1 : f->total;
  if (g.gap_ms) uv_timer_start(&f->timer, on_gap, g.gap_ms, g.gap_ms);
  pump(f);
}

static void on_delay(uv_timer_t *t) { respond(t->data); }

/* Reads the body once: picks the answer, counts the prompt, renders the head. NULL on success, else
 * the message of a 400. */
static const char *parse(fake_req *f, ag_slice body) {
  ag_json *j = ag_json_parse(body.ptr, body.len, NULL, 0);
  ag_json *msgs = ag_json_get(j, "messages");
  if (!ag_json_is(j, AG_JSON_OBJECT) || !ag_json_is(msgs, AG_JSON_ARRAY)) {
    ag_json_free(j);
    return "the body must be a JSON object with a messages array";
  }
  bool stream = false, has_tool_msg = false, lookup = false, clarify = false;
  (void)ag_json_get_bool(j, "stream", &stream);
  size_t content = 0;
  for (size_t i = 0, n = ag_json_len(msgs); i < n; i++) {
    ag_json *m = ag_json_at(msgs, i);
    const char *role = ag_json_get_str(m, "role");
    if (role && strcmp(role, "tool") == 0) has_tool_msg = true;
    ag_json *c = ag_json_get(m, "content");
    if (ag_json_is(c, AG_JSON_STRING)) content += ag_json_str_len(c);
    for (size_t k = 0, np = ag_json_len(c); ag_json_is(c, AG_JSON_ARRAY) && k < np; k++) /* content parts */
      content += ag_json_str_len(ag_json_get(ag_json_at(c, k), "text"));
  }
  ag_json *tools = ag_json_get(j, "tools");
  for (size_t i = 0, n = ag_json_len(tools); ag_json_is(tools, AG_JSON_ARRAY) && i < n; i++) {
    const char *name = ag_json_get_str(ag_json_get(ag_json_at(tools, i), "function"), "name");
    if (name && strcmp(name, AG_REF_TOOL) == 0) lookup = true;
    if (name && strcmp(name, CLARIFY_TOOL) == 0) clarify = true;
  }
  f->stream = stream;
  f->ans = &g.ans[lookup && !has_tool_msg ? ANS_LOOKUP : clarify && !has_tool_msg ? ANS_CLARIFY : ANS_TEXT];
  f->prompt_tokens = (long long)(content / 4 + 10);
  f->n = g.next_n++;
  ag_json *model = ag_json_get(j, "model");
  const char *mp = ag_json_is(model, AG_JSON_STRING) ? ag_json_str(model) : DEFAULT_MODEL;
  size_t ml = ag_json_is(model, AG_JSON_STRING) ? ag_json_str_len(model) : strlen(DEFAULT_MODEL);
  int rc = ag_buf_appendf(&f->buf, "{\"id\":\"chatcmpl-fake-%llu\",\"object\":\"%s\",\"created\":%lld,\"model\":\"",
                          f->n, stream ? "chat.completion.chunk" : "chat.completion", (long long)ag_unix_s());
  if (rc == 0) rc = ag_buf_append_json_escaped(&f->buf, mp, ml);
  if (rc == 0) rc = ag_buf_append_str(&f->buf, "\",");
  f->head_len = f->buf.len;
  ag_json_free(j);
  return rc < 0 ? "the model name is too long" : NULL;
}

static void chat(ag_http_req *req) {
  fake_req *f = calloc(1, sizeof *f);
  if (!f) {
    respond_error(req, 500, "out of memory");
    return;
  }
  ag_buf_init(&f->buf, MAX_CHUNK_BYTES);
  const char *err = parse(f, ag_http_req_body(req));
  if (err) {
    respond_error(req, 400, err);
    release(f);
    return;
  }
  f->req = req;
  ag_http_req_on_close(req, on_client_close, f);
  ag_http_req_on_drain(req, on_drain, f);
  if (g.delay_ms || (g.gap_ms && f->stream)) {
    uv_timer_init(g.loop, &f->timer);
    f->timer.data = f;
    f->has_timer = true;
  }
  if (g.delay_ms)
    uv_timer_start(&f->timer, on_delay, g.delay_ms, 0);
  else
    respond(f);
}

static void handle(ag_http_req *req, void *ud) {
  static const char models[] = "{\"object\":\"list\",\"data\":[{\"id\":\"" DEFAULT_MODEL
                               "\",\"object\":\"model\",\"created\":0,\"owned_by\":\"fake\"}]}";
  ag_slice method = ag_http_req_method(req), path = ag_http_req_path(req);
  if (ag_slice_eq_cstr(method, "POST") &&
      (ag_slice_eq_cstr(path, "/v1/chat/completions") || ag_slice_eq_cstr(path, "/chat/completions")))
    chat(req);
  else if (ag_slice_eq_cstr(method, "GET") && ag_slice_eq_cstr(path, "/healthz"))
    (void)ag_http_respond(req, 200, "text/plain", NULL, "ok", 2);
  else if (ag_slice_eq_cstr(method, "GET") &&
           (ag_slice_eq_cstr(path, "/v1/models") || ag_slice_eq_cstr(path, "/models")))
    (void)ag_http_respond(req, 200, "application/json", NULL, models, sizeof models - 1);
  else
    respond_error(req, 404, "not found");
}

/* ---------- main ---------- */

static void on_server_closed(void *ud) {
  ag_http_server_free(g.srv);
  g.srv = NULL;
}

static void on_signal(uv_signal_t *h, int signum) {
  if (g.stopping) return;
  g.stopping = true;
  uv_close((uv_handle_t *)&g.sigterm, NULL);
  uv_close((uv_handle_t *)&g.sigint, NULL);
  /* Unfinished requests get on_close, finish and close their timers; then the loop runs dry. */
  ag_http_server_close(g.srv, on_server_closed, NULL);
}

static bool num_arg(const char *s, long long lo, long long hi, long long *out) {
  char *end;
  long long v = s ? strtoll(s, &end, 10) : 0;
  if (!s || !*s || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static int usage(void) {
  fprintf(stderr, "usage: fake_llm [--port N] [--host H] [--delay-ms D] [--deltas N] [--gap-ms G] "
                  "[--max-connections M] [--per-event]\n");
  return 2;
}

int main(int argc, char **argv) {
  ag_http_server_config cfg;
  ag_http_server_config_default(&cfg);
  cfg.port = 0;
  cfg.max_body_bytes = 8u << 20;
  cfg.max_connections = 20000;
  long long port = 0, delay = 0, gap = 0, deltas = AG_REF_DELTAS, maxc = 20000;
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i];
    if (strcmp(o, "--per-event") == 0) {
      g.per_event = true;
      continue;
    }
    const char *v = i + 1 < argc ? argv[++i] : NULL; /* every other option takes a value */
    bool ok;
    if (strcmp(o, "--host") == 0)
      ok = (cfg.host = v) != NULL;
    else if (strcmp(o, "--port") == 0)
      ok = num_arg(v, 0, 65535, &port);
    else if (strcmp(o, "--delay-ms") == 0)
      ok = num_arg(v, 0, 86400000, &delay);
    else if (strcmp(o, "--gap-ms") == 0)
      ok = num_arg(v, 0, 86400000, &gap);
    else if (strcmp(o, "--deltas") == 0)
      ok = num_arg(v, 1, 1000000, &deltas);
    else if (strcmp(o, "--max-connections") == 0)
      ok = num_arg(v, 1, 10000000, &maxc);
    else
      ok = false;
    if (!ok) return usage();
  }
  cfg.port = (int)port;
  cfg.max_connections = (size_t)maxc;
  g.delay_ms = (uint64_t)delay;
  g.gap_ms = (uint64_t)gap;
  g.next_n = 1;
  ag_buf_init(&g.body, MAX_BODY_BYTES);
  signal(SIGPIPE, SIG_IGN);

  if (answer_init(&g.ans[ANS_TEXT], NULL, AG_REF_ANSWER, (size_t)deltas) < 0 ||
      answer_init(&g.ans[ANS_LOOKUP], AG_REF_TOOL, AG_REF_TOOL_ARGS, AG_REF_TOOL_FRAGMENTS) < 0 ||
      answer_init(&g.ans[ANS_CLARIFY], CLARIFY_TOOL, CLARIFY_ARGS, CLARIFY_FRAGMENTS) < 0) {
    fprintf(stderr, "fake_llm: out of memory\n");
    return 1;
  }
  g.loop = uv_default_loop();
  int rc = ag_http_server_new(g.loop, &cfg, handle, NULL, &g.srv);
  if (rc < 0) {
    fprintf(stderr, "fake_llm: cannot listen on %s:%d: %s\n", cfg.host, cfg.port, ag_strerror(rc));
    return 1;
  }
  uv_signal_init(g.loop, &g.sigterm);
  uv_signal_init(g.loop, &g.sigint);
  uv_signal_start(&g.sigterm, on_signal, SIGTERM);
  uv_signal_start(&g.sigint, on_signal, SIGINT);
  printf("LISTENING %d\n", ag_http_server_port(g.srv));
  fflush(stdout);

  uv_run(g.loop, UV_RUN_DEFAULT);
  uv_loop_close(g.loop);
  for (int i = 0; i < ANS_COUNT; i++)
    answer_deinit(&g.ans[i]);
  ag_buf_deinit(&g.body);
  return 0;
}
