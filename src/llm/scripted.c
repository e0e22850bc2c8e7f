/* The offline scripted model: a labelled demo and test aid, never presented as an LLM.
 *
 * With no upstream configured, agentd still has to show a newcomer the whole flow. This provider
 * answers every request shape the agent kinds send (structured output, a forced tool, a required
 * tool choice, plain chat) by following a fixed script over the conversation so far:
 *   1. if the task contains the word "clarify" and no clarification was asked yet: ask one;
 *   2. if a reasoning tool is offered (or forced) and no reasoning happened since the last user
 *      or tool turn: reason;
 *   3. if a plain tool is offered and none has run yet: call the first one;
 *   4. otherwise: give the final answer, which says plainly that it comes from this script.
 * Answers stream in small deltas on a timer so the streaming path is exercised too. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "base/json.h"
#include "llm/llm.h"
#include "llm/sgr.h"

#define DELTA_INTERVAL_MS 2
#define N_DELTAS 8

typedef struct scripted_provider {
  ag_llm_provider base;
  uv_loop_t *loop;
} scripted_provider;

struct ag_llm_call {
  uv_timer_t timer;
  ag_chat_callbacks cbs;
  ag_chat_result *result;
  bool is_tool; /* deltas are tool-call argument fragments (else content) */
  char *text;   /* the content or the arguments to stream */
  size_t len, pos;
  int step; /* deltas sent */
  bool cancelled;
  bool done;
};

static bool ci_contains(const char *hay, const char *needle) {
  if (!hay) return false;
  size_t n = strlen(needle);
  for (; *hay; hay++)
    if (strncasecmp(hay, needle, n) == 0) return true;
  return false;
}

/* What a tool is for, judged from its name alone: llm/ sits below tools/ and cannot ask the
 * catalog, and the script only needs the three system tools told apart from the rest. */
enum { ROLE_PLAIN, ROLE_REASONING, ROLE_FINAL, ROLE_CLARIFY };

static int tool_role(const char *name) {
  char norm[128];
  size_t k = 0;
  for (const char *p = name ? name : ""; *p && k + 1 < sizeof norm; p++)
    if (*p != '_' && *p != '-') norm[k++] = (char)tolower((unsigned char)*p);
  norm[k] = '\0';
  if (strncmp(norm, "reasoning", 9) == 0) return ROLE_REASONING;
  if (strncmp(norm, "finalanswer", 11) == 0) return ROLE_FINAL;
  if (strncmp(norm, "clarification", 13) == 0) return ROLE_CLARIFY;
  return ROLE_PLAIN;
}

/* Facts about the conversation the script needs. */
typedef struct convo {
  const char *task;      /* first user message */
  const char *last_user; /* latest user message */
  bool asked_clarification;
  bool reasoned_since_turn; /* a reasoning call after the latest user or plain-tool turn */
  bool ran_plain_tool;
  const char *tool_name; /* latest plain tool that ran */
  const char *tool_result;
} convo;

static void read_convo(const ag_chat_request *req, convo *c) {
  memset(c, 0, sizeof *c);
  for (size_t i = 0; i < req->n_messages; i++) {
    const ag_msg *m = &req->messages[i];
    if (m->role == AG_ROLE_USER) {
      if (!c->task) c->task = m->content;
      c->last_user = m->content;
      c->reasoned_since_turn = false;
    } else if (m->role == AG_ROLE_ASSISTANT) {
      for (size_t k = 0; k < m->n_tool_calls; k++) {
        int r = tool_role(m->tool_calls[k].name);
        if (r == ROLE_CLARIFY) c->asked_clarification = true;
        if (r == ROLE_REASONING) c->reasoned_since_turn = true;
      }
    } else if (m->role == AG_ROLE_TOOL && tool_role(m->name) == ROLE_PLAIN) {
      c->ran_plain_tool = true;
      c->tool_name = m->name;
      c->tool_result = m->content;
      c->reasoned_since_turn = false;
    }
  }
}

/* Arguments for a plain tool, from its schema: every string property gets the task text. */
static ag_json *args_from_schema(const ag_json *schema, const char *task) {
  ag_json *args = ag_json_object_new();
  ag_json *props = ag_json_get(schema, "properties");
  for (void *it = ag_json_iter(props); args && it; it = ag_json_iter_next(props, it)) {
    const char *key = ag_json_iter_key(it);
    if (strcmp(key, AG_SGR_DISCRIMINATOR) == 0) continue;
    const char *type = ag_json_get_str(ag_json_iter_value(it), "type");
    ag_json *v = NULL;
    if (type && strcmp(type, "string") == 0)
      v = ag_json_string_new(task ? task : "");
    else if (type && (strcmp(type, "integer") == 0 || strcmp(type, "number") == 0))
      v = ag_json_int_new(1);
    else if (type && strcmp(type, "boolean") == 0)
      v = ag_json_bool_new(true);
    else if (type && strcmp(type, "array") == 0)
      v = ag_json_array_new();
    else
      v = ag_json_null_new();
    if (ag_json_set_take(args, key, v) < 0) {
      ag_json_free(args);
      return NULL;
    }
  }
  return args;
}

static ag_json *strings(const char *a, const char *b) {
  ag_json *arr = ag_json_array_new();
  if (arr && ((a && ag_json_push_take(arr, ag_json_string_new(a)) < 0) ||
              (b && ag_json_push_take(arr, ag_json_string_new(b)) < 0))) {
    ag_json_free(arr);
    arr = NULL;
  }
  return arr;
}

static char *final_text(const convo *c) {
  ag_buf b;
  ag_buf_init(&b, 64 * 1024);
  int rc = ag_buf_appendf(&b,
                          "[offline demo] This answer comes from agentd's scripted demo model, not from an LLM. "
                          "Your request was: \"%.300s\".",
                          c->task ? c->task : "");
  if (rc == 0 && c->asked_clarification && c->last_user && c->last_user != c->task)
    rc = ag_buf_appendf(&b, " Your clarification: \"%.300s\".", c->last_user);
  if (rc == 0 && c->ran_plain_tool)
    rc = ag_buf_appendf(&b, " The tool %s returned: %.300s.", c->tool_name ? c->tool_name : "?",
                        c->tool_result ? c->tool_result : "");
  if (rc == 0) rc = ag_buf_append_str(&b, " Set OPENAI_BASE_URL to use a real model.");
  if (rc < 0) {
    ag_buf_deinit(&b);
    return NULL;
  }
  return ag_buf_take(&b);
}

/* Arguments for a system or plain tool, chosen by its role. */
static ag_json *make_args(int role, const ag_json *schema, const convo *c) {
  ag_json *a = ag_json_object_new();
  if (!a) return NULL;
  int rc = 0;
  switch (role) {
  case ROLE_REASONING:
    rc = ag_json_set_take(a, "reasoning_steps",
                          strings("Read the request.", c->ran_plain_tool ? "A tool has run." : "Plan one tool call.")) |
         ag_json_set_take(a, "current_situation",
                          ag_json_string_new(c->ran_plain_tool ? "The tool result is in." : "Starting the task.")) |
         ag_json_set_take(a, "plan_status",
                          ag_json_string_new(c->ran_plain_tool ? "ready to answer" : "gathering data")) |
         ag_json_set_take(a, "enough_data", ag_json_bool_new(c->ran_plain_tool)) |
         ag_json_set_take(a, "remaining_steps",
                          strings(c->ran_plain_tool ? "Give the final answer." : "Call a tool.", NULL)) |
         ag_json_set_take(a, "task_completed", ag_json_bool_new(false));
    break;
  case ROLE_CLARIFY:
    rc = ag_json_set_take(a, "reasoning", ag_json_string_new("The request asks for a clarification first.")) |
         ag_json_set_take(a, "unclear_terms", strings("clarify", NULL)) |
         ag_json_set_take(a, "assumptions", strings("The user wants to see the clarification flow.", NULL)) |
         ag_json_set_take(a, "questions", strings("[offline demo] What exactly should I clarify?", NULL));
    break;
  case ROLE_FINAL: {
    char *text = final_text(c);
    rc = ag_json_set_take(a, "reasoning", ag_json_string_new("The script has reached its answer.")) |
         ag_json_set_take(a, "completed_steps",
                          strings("Reasoned about the request.", c->ran_plain_tool ? "Called a tool." : NULL)) |
         ag_json_set_take(a, "answer", text ? ag_json_string_new(text) : NULL) |
         ag_json_set_take(a, "status", ag_json_string_new("completed"));
    free(text);
    break;
  }
  default: ag_json_free(a); return args_from_schema(schema, c->task);
  }
  if (rc != 0) {
    ag_json_free(a);
    return NULL;
  }
  return a;
}

typedef struct choice {
  const char *name;
  const ag_json *schema; /* borrowed from `owner` */
  int role;
} choice;

/* Picks the next tool among the offered ones following the script. */
static bool pick(const convo *c, const choice *offered, size_t n, choice *out) {
  const choice *by_role[4] = {NULL, NULL, NULL, NULL};
  for (size_t i = 0; i < n; i++)
    if (offered[i].role >= 0 && offered[i].role < 4 && !by_role[offered[i].role])
      by_role[offered[i].role] = &offered[i];
  const choice *ch = NULL;
  if (ci_contains(c->task, "clarify") && !c->asked_clarification && by_role[ROLE_CLARIFY])
    ch = by_role[ROLE_CLARIFY];
  else if (by_role[ROLE_REASONING] && !c->reasoned_since_turn)
    ch = by_role[ROLE_REASONING];
  else if (!c->ran_plain_tool && by_role[ROLE_PLAIN])
    ch = by_role[ROLE_PLAIN];
  else if (by_role[ROLE_FINAL])
    ch = by_role[ROLE_FINAL];
  else if (n)
    ch = &offered[0];
  if (!ch) return false;
  *out = *ch;
  return true;
}

static void on_timer(uv_timer_t *t);

static void close_cb(uv_handle_t *h) {
  ag_llm_call *call = h->data;
  ag_chat_result_free(call->result);
  free(call->text);
  free(call);
}

static void finish_call(ag_llm_call *call, int err) {
  call->done = true;
  uv_timer_stop(&call->timer);
  if (err == 0) {
    ag_chat_result *r = call->result;
    call->result = NULL;
    call->cbs.on_done(0, r, NULL, call->cbs.ud);
  } else {
    ag_llm_error e = {err, 0, "cancelled"};
    call->cbs.on_done(err, NULL, &e, call->cbs.ud);
  }
  uv_close((uv_handle_t *)&call->timer, close_cb);
}

static void on_timer(uv_timer_t *t) {
  ag_llm_call *call = t->data;
  if (call->cancelled) {
    finish_call(call, AG_ECANCELED);
    return;
  }
  if (call->pos >= call->len) {
    finish_call(call, 0);
    return;
  }
  size_t piece = call->len / N_DELTAS + 1;
  size_t n = call->len - call->pos < piece ? call->len - call->pos : piece;
  /* Do not split a UTF-8 sequence. */
  while (call->pos + n < call->len && ((unsigned char)call->text[call->pos + n] & 0xC0) == 0x80)
    n++;
  if (call->is_tool) {
    const ag_llm_tool_call *tc = &call->result->message.tool_calls[0];
    call->cbs.on_tool_call_delta(0, call->step == 0 ? tc->id : NULL, call->step == 0 ? tc->name : NULL,
                                 call->text + call->pos, n, call->cbs.ud);
  } else {
    call->cbs.on_content(call->text + call->pos, n, call->cbs.ud);
  }
  call->pos += n;
  call->step++;
  uv_timer_start(&call->timer, on_timer, DELTA_INTERVAL_MS, 0);
}

static int build(const ag_chat_request *req, ag_llm_call *call) {
  convo c;
  read_convo(req, &c);
  ag_json *owner = NULL; /* parsed schemas the choices point into */
  choice offered[64];
  size_t n = 0;
  int rc = AG_ENOMEM;
  ag_chat_result *r = calloc(1, sizeof *r);
  if (!r) return AG_ENOMEM;
  r->message.role = AG_ROLE_ASSISTANT;
  r->model = strdup(AG_SCRIPTED_MODEL_NAME);
  r->finish_reason = strdup("stop");

  if (req->response_schema) {
    owner = ag_json_parse(req->response_schema, strlen(req->response_schema), NULL, 0);
    ag_json *any = ag_json_get(ag_json_get(ag_json_get(owner, "properties"), "function"), "anyOf");
    for (size_t i = 0; i < ag_json_len(any) && n < 64; i++) {
      ag_json *alt = ag_json_at(any, i);
      const char *name = ag_json_get_str(ag_json_get(ag_json_get(alt, "properties"), AG_SGR_DISCRIMINATOR), "const");
      if (name) offered[n++] = (choice){name, alt, tool_role(name)};
    }
    choice ch;
    if (!pick(&c, offered, n, &ch)) {
      rc = AG_EINVAL;
      goto fail;
    }
    ag_json *fn = ag_json_object_new(), *root = ag_json_object_new();
    ag_json *args = make_args(ch.role, ch.schema, &c);
    ag_json *reason = make_args(ROLE_REASONING, NULL, &c);
    int e = (!fn || !root || !args || !reason) ? -1 : 0;
    if (e == 0) e = ag_json_set_take(fn, AG_SGR_DISCRIMINATOR, ag_json_string_new(ch.name));
    for (void *it = ag_json_iter(args); e == 0 && it; it = ag_json_iter_next(args, it))
      e = ag_json_set_take(fn, ag_json_iter_key(it), ag_json_ref(ag_json_iter_value(it)));
    for (void *it = ag_json_iter(reason); e == 0 && it; it = ag_json_iter_next(reason, it))
      e = ag_json_set_take(root, ag_json_iter_key(it), ag_json_ref(ag_json_iter_value(it)));
    if (e == 0) {
      e = ag_json_set_take(root, "function", fn);
      fn = NULL;
    }
    ag_json_free(args);
    ag_json_free(reason);
    ag_json_free(fn);
    r->message.content = e == 0 ? ag_json_dumps(root) : NULL;
    ag_json_free(root);
    if (!r->message.content) goto fail;
    call->text = strdup(r->message.content);
  } else if (req->n_tools) {
    for (size_t i = 0; i < req->n_tools && i < 64; i++) {
      if (req->tool_choice == AG_TOOL_CHOICE_NAMED &&
          (!req->tool_choice_name || strcmp(req->tool_choice_name, req->tools[i].name) != 0))
        continue;
      offered[n++] = (choice){req->tools[i].name, NULL, tool_role(req->tools[i].name)};
    }
    choice ch;
    if (!pick(&c, offered, n, &ch)) {
      rc = AG_EINVAL;
      goto fail;
    }
    const ag_tool_def *def = NULL;
    for (size_t i = 0; i < req->n_tools; i++)
      if (strcmp(req->tools[i].name, ch.name) == 0) def = &req->tools[i];
    owner = def && def->parameters ? ag_json_parse(def->parameters, strlen(def->parameters), NULL, 0) : NULL;
    ag_json *args = make_args(ch.role, owner, &c);
    char *text = args ? ag_json_dumps(args) : NULL;
    ag_json_free(args);
    r->message.tool_calls = calloc(1, sizeof *r->message.tool_calls);
    if (!text || !r->message.tool_calls) {
      free(text);
      goto fail;
    }
    r->message.n_tool_calls = 1;
    char id[48];
    snprintf(id, sizeof id, "call_offline_%zu", req->n_messages);
    r->message.tool_calls[0].id = strdup(id);
    r->message.tool_calls[0].name = strdup(ch.name);
    r->message.tool_calls[0].arguments = text;
    free(r->finish_reason);
    r->finish_reason = strdup("tool_calls");
    call->text = strdup(text);
    call->is_tool = true;
  } else {
    r->message.content = final_text(&c);
    if (!r->message.content) goto fail;
    call->text = strdup(r->message.content);
  }
  if (!call->text) goto fail;
  call->len = strlen(call->text);
  /* Rough token counts so usage is never zero in the demo. */
  size_t in = 0;
  for (size_t i = 0; i < req->n_messages; i++)
    in += req->messages[i].content ? strlen(req->messages[i].content) : 0;
  r->usage.prompt_tokens = (int64_t)(in / 4 + 1);
  r->usage.completion_tokens = (int64_t)(call->len / 4 + 1);
  r->usage.total_tokens = r->usage.prompt_tokens + r->usage.completion_tokens;
  call->result = r;
  ag_json_free(owner);
  return 0;
fail:
  ag_json_free(owner);
  ag_chat_result_free(r);
  return rc;
}

static int scripted_start(ag_llm_provider *p, const ag_chat_request *req, const ag_chat_callbacks *cbs,
                          ag_llm_call **out) {
  scripted_provider *sp = (scripted_provider *)p;
  ag_llm_call *call = calloc(1, sizeof *call);
  if (!call) return AG_ENOMEM;
  call->cbs = *cbs;
  int rc = build(req, call);
  if (rc < 0) {
    free(call->text);
    free(call);
    return rc;
  }
  uv_timer_init(sp->loop, &call->timer);
  call->timer.data = call;
  uv_timer_start(&call->timer, on_timer, 0, 0);
  *out = call;
  return 0;
}

static void scripted_cancel(ag_llm_call *call) {
  if (call->done || call->cancelled) return;
  call->cancelled = true;
  /* on_done comes from the timer, never from inside cancel. */
  uv_timer_start(&call->timer, on_timer, 0, 0);
}

static void scripted_free(ag_llm_provider *p) { free(p); }

static const struct ag_llm_provider_vtbl scripted_vtbl = {"scripted", scripted_start, scripted_cancel, scripted_free};

int ag_scripted_provider_new(uv_loop_t *loop, ag_llm_provider **out) {
  scripted_provider *p = calloc(1, sizeof *p);
  if (!p) return AG_ENOMEM;
  p->base.vt = &scripted_vtbl;
  p->loop = loop;
  *out = &p->base;
  return 0;
}
