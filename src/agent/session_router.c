/* The router kind (seed 001's "secretary"; see session_internal.h): one LLM call picks, among
 * the agent directory's best matches for the task, the agent that should do it; the session is
 * then handed over to a child session of that template, whose answer streams to the router's
 * client as it comes and whose end is the router's end (one stream for the client).
 *
 * The choice is a forced call of a synthetic tool, route_to_agent, whose "agent" argument is an
 * enum of the candidates. An invalid choice (or none) falls back to meta.router.default, else to
 * the directory's first candidate. The choice is committed (the assistant's call and a tool
 * message naming the agent) before the child starts. A child that asks for a clarification makes
 * the router wait with its question; the user's answer to the router goes down to the child. A
 * router resumed that way, or recovered after a restart, finds its choice committed and goes on
 * with the child it had started (adopting it), so neither the choice nor the child is repeated. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/session_internal.h"
#include "agent/template_cache.h"
#include "base/json.h"
#include "base/log.h"
#include "search/agent_dir.h"

#define ROUTE_TOOL "route_to_agent"
#define MAX_CANDIDATES 20

/* ---- the child's events, forwarded ---- */

static void child_start(const char *id, const char *tpl, int fmt, void *ud) {
  (void)fmt;
  ag_session *s = ud;
  ag__session_emit_progress(s, "Handed over to %s (session %s).", tpl, id);
}

static void child_answer(const char *text, size_t len, void *ud) { ag__session_emit_answer(ud, text, len); }

static void child_progress(const char *text, size_t len, void *ud) {
  ag_session *s = ud;
  if (!s->detached && s->ev.on_progress) s->ev.on_progress(text, len, s->ev.ud);
}

static void child_end(const ag_run_end *end, void *ud) {
  ag_session *s = ud;
  s->route_child = NULL;
  if (ag__session_child_ended(s, end)) return;
  if (end->state == AG_SESSION_COMPLETED) {
    ag__session_set_str(&s->result, end->text ? end->text : "");
    ag__session_complete_answer(s, s->result ? s->result : "");
    ag__session_finish(s, AG_SESSION_COMPLETED, 0, NULL);
  } else if (end->state == AG_SESSION_WAITING) {
    /* The child's question is the router's: the answer will go down to it. */
    ag__session_set_str(&s->result, end->text ? end->text : "");
    s->await_child = true;
    ag__session_finish(s, AG_SESSION_WAITING, 0, NULL);
  } else {
    const char *why = end->error_message ? end->error_message : "the agent did not complete";
    ag__session_set_str(&s->result, end->text);
    ag__session_finish(s, end->state == AG_SESSION_CANCELLED ? AG_SESSION_CANCELLED : AG_SESSION_FAILED,
                       end->err ? end->err : AG_EUPSTREAM, why);
  }
}

void ag__session_route_cancel(ag_session *s) {
  if (!s->route_child) return;
  ag_session_detach(s->route_child); /* the child is cancelled; its events stop */
  s->route_child = NULL;
  s->pending--;
  ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
}

/* ---- the hand-over ---- */

/* After the choice is committed. */
static void hand_over(ag_session *s) {
  ag_template *tpl = s->route_to ? ag_template_cache_active(s->rt->cfg.templates, s->route_to) : NULL;
  if (!tpl) {
    ag__session_finish(s, AG_SESSION_ERROR, AG_ENOTFOUND, "the chosen agent is not available any more");
    return;
  }
  ag_run_events ev = {child_start, child_answer, child_progress, NULL, child_end, s};
  int rc = ag_session_start_child(s->rt, tpl, s->id, s->task ? s->task : "", &ev, &s->route_child);
  if (rc < 0) {
    ag__session_finish(s, AG_SESSION_ERROR, rc,
                       rc == AG_EEXIST ? "the chosen agent is already up the delegation chain"
                                       : "the chosen agent could not be started");
    return;
  }
  s->pending++;
  s->phase = PH_TOOL;
}

typedef struct cands {
  const char *names[MAX_CANDIDATES];
  size_t n;
} cands;

static bool is_candidate(const cands *c, const char *name) {
  for (size_t i = 0; name && i < c->n; i++)
    if (strcmp(c->names[i], name) == 0) return true;
  return false;
}

/* The directory's best matches for the task: active, not a router, not this one. */
static void candidates(const ag_session *s, cands *c) {
  c->n = 0;
  size_t want = s->tpl->route_top_k > 0 ? (size_t)s->tpl->route_top_k : 5;
  ag_agent_hit hits[MAX_CANDIDATES * 2];
  size_t n = ag_agent_dir_search(ag_template_cache_directory(s->rt->cfg.templates), s->task ? s->task : "", hits,
                                 AG_ARRAY_LEN(hits));
  for (size_t i = 0; i < n && c->n < want && c->n < MAX_CANDIDATES; i++) {
    const ag_template *t = ag_template_cache_active(s->rt->cfg.templates, hits[i].name);
    if (!t || t->kind == AG_KIND_ROUTER || strcmp(t->name, s->tpl->name) == 0) continue;
    c->names[c->n++] = t->name;
  }
  const char *dflt = s->tpl->route_default;
  if (dflt && !is_candidate(c, dflt) && c->n < MAX_CANDIDATES && ag_template_cache_active(s->rt->cfg.templates, dflt))
    c->names[c->n++] = dflt;
}

static void on_route_done(int err, ag_chat_result *res, const ag_llm_error *lerr, void *ud);

/* The agent a committed choice named: the conversation ends with the routing tool's message. */
static const char *committed_choice(const ag_session *s) {
  const ag_msg *last = s->n_msgs ? &s->msgs[s->n_msgs - 1] : NULL;
  return last && last->role == AG_ROLE_TOOL && last->name && strcmp(last->name, ROUTE_TOOL) == 0 ? last->content : NULL;
}

/* The child the committed choice started, if there is one (it was given the router's task). */
static void on_route_child(ag_session *s, ag_session_rec *child) {
  char *answer = s->call_answer;
  s->call_answer = NULL;
  if (s->cancel) {
    ag__session_finish(s, AG_SESSION_CANCELLED, AG_ECANCELED, "cancelled");
  } else if (child && child->task && strcmp(child->task, s->task ? s->task : "") == 0) {
    ag_run_events ev = {child_start, child_answer, child_progress, NULL, child_end, s};
    bool waiting = ag_session_state_parse(child->state) == AG_SESSION_WAITING;
    int rc = answer && waiting ? ag_session_resume(s->rt, child->id, answer, -1, &ev, &s->route_child)
                               : ag_session_adopt(s->rt, child->id, &ev, &s->route_child);
    if (rc < 0) {
      ag__session_finish(s, AG_SESSION_ERROR, rc, "the chosen agent's session could not go on");
    } else {
      s->pending++;
      s->phase = PH_TOOL;
    }
  } else {
    hand_over(s); /* the choice was committed, the child never started */
  }
  free(answer);
  ag_session_rec_free(child);
}

void ag__session_route(ag_session *s) {
  const char *chosen = committed_choice(s);
  if (chosen) {
    ag__session_set_str(&s->route_to, chosen);
    if (!s->route_to) {
      ag__session_finish(s, AG_SESSION_ERROR, AG_ENOMEM, "out of memory");
      return;
    }
    if (ag__session_find_child(s, on_route_child) < 0) on_route_child(s, NULL);
    return;
  }
  cands c;
  candidates(s, &c);
  if (c.n == 0) {
    ag__session_finish(s, AG_SESSION_FAILED, AG_ENOTFOUND,
                       "no agent matches the request, and the router has no default");
    return;
  }
  /* The tool: one enum argument, the candidates described in its description. */
  ag_buf desc, params;
  ag_buf_init(&desc, 1u << 20); /* up to 20 descriptions of 4 KiB */
  ag_buf_init(&params, 64u << 10);
  int rc = ag_buf_append_str(&desc, "Hand the request over to the agent best suited to do it. The agents:");
  for (size_t i = 0; rc == 0 && i < c.n; i++) {
    const ag_template *t = ag_template_cache_active(s->rt->cfg.templates, c.names[i]);
    rc = ag_buf_appendf(&desc, "\n- %s: %s", c.names[i], t && t->description ? t->description : "");
  }
  if (rc == 0)
    rc = ag_buf_append_str(&params, "{\"type\":\"object\",\"properties\":{\"agent\":{\"type\":\"string\",\"enum\":[");
  for (size_t i = 0; rc == 0 && i < c.n; i++) {
    rc = ag_buf_append_str(&params, i ? ",\"" : "\"");
    if (rc == 0) rc = ag_buf_append_json_escaped(&params, c.names[i], strlen(c.names[i]));
    if (rc == 0) rc = ag_buf_append_char(&params, '"');
  }
  if (rc == 0)
    rc = ag_buf_append_str(&params, "]},\"reason\":{\"type\":\"string\"}},\"required\":[\"agent\",\"reason\"],"
                                    "\"additionalProperties\":false}");
  if (rc < 0) {
    ag_buf_deinit(&desc);
    ag_buf_deinit(&params);
    ag__session_finish(s, AG_SESSION_ERROR, AG_ENOMEM, "out of memory");
    return;
  }
  ag_tool_def def = {ROUTE_TOOL, ag_buf_cstr(&desc), ag_buf_cstr(&params), true};
  const ag_template *t = s->tpl;
  ag_chat_request req = {0};
  req.model = t->model ? t->model : s->rt->cfg.default_model;
  req.messages = s->msgs;
  req.n_messages = s->n_msgs;
  req.temperature = t->temperature;
  req.max_tokens = t->max_tokens;
  req.stream = s->rt->cfg.stream_upstream;
  req.extra = t->llm_params;
  req.session_id = s->id;
  req.tools = &def;
  req.n_tools = 1;
  req.tool_choice = AG_TOOL_CHOICE_NAMED;
  req.tool_choice_name = ROUTE_TOOL;
  ag_chat_callbacks cbs = {NULL, NULL, on_route_done, s};
  int lrc = ag_llm_start(s->rt->cfg.provider, &req, &cbs, &s->call);
  ag_buf_deinit(&desc);
  ag_buf_deinit(&params);
  if (lrc < 0) {
    ag__session_finish(s, AG_SESSION_ERROR, lrc, "could not start the upstream request");
    return;
  }
  s->llm_calls++;
  s->pending++;
  s->phase = PH_LLM;
}

static void on_route_done(int err, ag_chat_result *res, const ag_llm_error *lerr, void *ud) {
  ag_session *s = ud;
  if (ag__session_llm_ended(s, err, res, lerr)) return;
  ag__session_record_usage(s, res);
  /* The choice, checked against the candidates of now (the directory may have moved: recompute). */
  cands c;
  candidates(s, &c);
  const ag_llm_tool_call *tc = res->message.n_tool_calls ? &res->message.tool_calls[0] : NULL;
  ag_json *args = tc && tc->arguments ? ag_json_parse(tc->arguments, strlen(tc->arguments), NULL, 0) : NULL;
  const char *pick = ag_json_get_str(args, "agent");
  const char *name = is_candidate(&c, pick)                                             ? pick
                     : s->tpl->route_default && is_candidate(&c, s->tpl->route_default) ? s->tpl->route_default
                     : c.n                                                              ? c.names[0]
                                                                                        : NULL;
  if (!name) {
    ag_json_free(args);
    ag_chat_result_free(res);
    ag__session_finish(s, AG_SESSION_FAILED, AG_ENOTFOUND, "no agent to hand the request over to");
    return;
  }
  if (pick && name != pick)
    ag_log_warn(s->id, "router: the model chose %s, not a candidate; routing to %s", pick, name);
  ag__session_emit_progress(s, "Routing to %s.", name);
  /* Journal: the assistant's call and a tool message naming the agent, then the hand-over. */
  char call_id[48];
  snprintf(call_id, sizeof call_id, "%d-route", s->iteration);
  ag_msg am = {0};
  am.role = AG_ROLE_ASSISTANT;
  am.tool_calls = calloc(1, sizeof *am.tool_calls);
  ag_msg tm = {0};
  tm.role = AG_ROLE_TOOL;
  int rc = am.tool_calls ? 0 : AG_ENOMEM;
  if (rc == 0) {
    am.n_tool_calls = 1;
    am.tool_calls[0].id = strdup(call_id);
    am.tool_calls[0].name = strdup(ROUTE_TOOL);
    am.tool_calls[0].arguments = ag_strdup(tc && tc->arguments ? tc->arguments : "{}");
    tm.tool_call_id = strdup(call_id);
    tm.name = strdup(ROUTE_TOOL);
    tm.content = strdup(name);
    if (!am.tool_calls[0].id || !am.tool_calls[0].name || !am.tool_calls[0].arguments || !tm.tool_call_id || !tm.name ||
        !tm.content)
      rc = AG_ENOMEM;
  }
  if (rc == 0) rc = ag__session_push_msg(s, &am);
  if (rc == 0) rc = ag__session_push_msg(s, &tm);
  ag_msg_deinit(&am);
  ag_msg_deinit(&tm);
  if (rc == 0) ag__session_set_str(&s->route_to, name);
  ag_json_free(args);
  ag_chat_result_free(res);
  if (rc < 0 || !s->route_to || ag__session_commit(s, hand_over) < 0)
    ag__session_finish(s, AG_SESSION_ERROR, rc < 0 ? rc : AG_EDB, "could not record the routing");
}
