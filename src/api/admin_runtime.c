/* The live picture, for operators:
 *
 *   GET /admin/instances?state=&node=&limit=&offset=    agent instances (every node on this database)
 *   GET /admin/sessions?state=&template=&limit=&offset= sessions, newest first
 *
 * Both read the store, the truth shared by every agentd on the database; the pool mirrors each
 * instance's state there as it changes (agent/pool.h), and the counters of this process's pool
 * come along under "pool". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/pool.h"
#include "agent/session.h"
#include "agent/template.h"
#include "agent/template_cache.h"
#include "api/api.h"
#include "base/json.h"
#include "net/http_server.h"
#include "store/runtime.h"
#include "store/store.h"

typedef struct listing {
  ag_api_ctx *ctx;
  ag_http_req *req;
} listing;

static bool only_get(ag_http_req *req) {
  if (ag_slice_eq_cstr(ag_http_req_method(req), "GET")) return true;
  ag_api_error_h(req, 405, "Allow: GET\r\n", "invalid_request_error", "method_not_allowed", NULL, "use GET");
  return false;
}

static ag_json *pool_json(const ag_pool *p) {
  ag_pool_stats st;
  ag_pool_get_stats(p, &st);
  ag_json *o = ag_json_object_new();
  int rc = o ? 0 : AG_ENOMEM;
  const struct {
    const char *k;
    long long v;
  } f[] = {{"instances", (long long)st.instances},
           {"idle", (long long)st.idle},
           {"busy", (long long)st.busy},
           {"waiting", (long long)st.waiting},
           {"created", (long long)st.created},
           {"stopped", (long long)st.stopped},
           {"acquired", (long long)st.acquired},
           {"queued", (long long)st.queued},
           {"rejected_full", (long long)st.rejected_full},
           {"timed_out", (long long)st.timed_out}};
  for (size_t i = 0; rc == 0 && i < AG_ARRAY_LEN(f); i++)
    rc = ag_json_set_take(o, f[i].k, ag_json_int_new(f[i].v));
  if (rc < 0) {
    ag_json_free(o);
    return NULL;
  }
  return o;
}

static ag_json *instance_json(const ag_api_ctx *ctx, const ag_instance_rec *r) {
  (void)ctx;
  ag_json *o = ag_json_object_new();
  int rc = o ? 0 : AG_ENOMEM;
  if (rc == 0) rc = ag_json_set_take(o, "id", ag_json_string_new(r->id));
  if (rc == 0) rc = ag_json_set_take(o, "template", ag__api_str_or_null(r->template_name));
  if (rc == 0)
    rc = ag_json_set_take(o, "template_version",
                          r->template_name ? ag_json_int_new(r->template_version) : ag_json_null_new());
  if (rc == 0) rc = ag_json_set_take(o, "template_version_id", ag_json_int_new(r->template_version_id));
  if (rc == 0) rc = ag_json_set_take(o, "state", ag_json_string_new(r->state));
  if (rc == 0) rc = ag_json_set_take(o, "node", ag_json_string_new(r->node ? r->node : ""));
  if (rc == 0) rc = ag_json_set_take(o, "pid", ag_json_int_new(r->pid));
  if (rc == 0) rc = ag_json_set_take(o, "session_id", ag__api_str_or_null(r->session_id));
  if (rc == 0) rc = ag_json_set_take(o, "sessions_served", ag_json_int_new(r->sessions_served));
  if (rc == 0) rc = ag_json_set_take(o, "heartbeat_at", ag__api_iso_time(r->heartbeat_at));
  if (rc == 0) rc = ag_json_set_take(o, "created_at", ag__api_iso_time(r->created_at));
  if (rc == 0) rc = ag_json_set_take(o, "updated_at", ag__api_iso_time(r->updated_at));
  if (rc < 0) {
    ag_json_free(o);
    return NULL;
  }
  return o;
}

static void on_instances(int err, ag_instance_rec *recs, size_t n, void *ud) {
  listing *l = ud;
  if (err < 0) {
    ag__api_storage_error(l->req, err, "could not list the instances");
  } else {
    ag_json *arr = ag_json_array_new();
    for (size_t i = 0; arr && i < n; i++)
      (void)ag__api_push(&arr, instance_json(l->ctx, &recs[i]));
    ag_json *root = ag__api_list_body("instances", arr);
    if (root && l->ctx->pool && ag_json_set_take(root, "pool", pool_json(l->ctx->pool)) < 0) {
      ag_json_free(root);
      root = NULL;
    }
    ag__api_respond_json(l->req, 200, root);
  }
  ag_instance_recs_free(recs, n);
  free(l);
}

void ag__api_admin_instances(ag_api_ctx *ctx, ag_http_req *req) {
  if (!only_get(req)) return;
  char state[32], node[256];
  ag__api_query(req, "state", state, sizeof state);
  ag__api_query(req, "node", node, sizeof node);
  if (state[0] && !ag_instance_state_valid(state)) {
    ag_api_error(req, 400, "invalid_request_error", "invalid_value", "state",
                 "state must be one of starting, idle, busy, resetting, stopped");
    return;
  }
  listing *l = malloc(sizeof *l);
  if (!l) {
    ag_api_error(req, 500, "server_error", NULL, NULL, "out of memory");
    return;
  }
  *l = (listing){ctx, req};
  ag_instance_filter f = {.state = state[0] ? state : NULL,
                          .node = node[0] ? node : NULL,
                          .limit = ag__api_query_num(req, "limit", 100, AG_STORE_PAGE_MAX),
                          .offset = ag__api_query_num(req, "offset", 0, SIZE_MAX / 2)};
  int rc = ag_store_instance_list(ctx->store, &f, on_instances, l);
  if (rc < 0) {
    free(l);
    ag__api_storage_error(req, rc, "could not list the instances");
  }
}

static ag_json *session_json(const ag_api_ctx *ctx, const ag_session_rec *r) {
  ag_json *o = ag_json_object_new();
  int rc = o ? 0 : AG_ENOMEM;
  if (rc == 0) rc = ag_json_set_take(o, "id", ag_json_string_new(r->id));
  if (rc == 0) rc = ag_json_set_take(o, "template", ag_json_string_new(r->template_name));
  if (rc == 0) rc = ag_json_set_take(o, "template_version", ag_json_int_new(r->template_version));
  if (rc == 0) rc = ag_json_set_take(o, "state", ag_json_string_new(r->state));
  if (rc == 0) rc = ag_json_set_take(o, "live", ag_json_bool_new(ag_runtime_is_live(ctx->runtime, r->id)));
  if (rc == 0) rc = ag_json_set_take(o, "task", ag__api_str_or_null(r->task));
  if (rc == 0) rc = ag_json_set_take(o, "iteration", ag_json_int_new(r->iteration));
  if (rc == 0) rc = ag_json_set_take(o, "parent_id", ag__api_str_or_null(r->parent_id));
  if (rc == 0) rc = ag_json_set_take(o, "total_tokens", ag_json_int_new(r->total_tokens));
  if (rc == 0) rc = ag_json_set_take(o, "error", ag__api_str_or_null(r->error));
  if (rc == 0) rc = ag_json_set_take(o, "created_at", ag__api_iso_time(r->created_at));
  if (rc == 0) rc = ag_json_set_take(o, "updated_at", ag__api_iso_time(r->updated_at));
  if (rc < 0) {
    ag_json_free(o);
    return NULL;
  }
  return o;
}

static void on_sessions(int err, ag_session_rec *recs, size_t n, void *ud) {
  listing *l = ud;
  if (err < 0) {
    ag__api_storage_error(l->req, err, "could not list the sessions");
  } else {
    ag_json *arr = ag_json_array_new();
    for (size_t i = 0; arr && i < n; i++)
      (void)ag__api_push(&arr, session_json(l->ctx, &recs[i]));
    ag__api_respond_json(l->req, 200, ag__api_list_body("sessions", arr));
  }
  ag_session_recs_free(recs, n);
  free(l);
}

void ag__api_admin_sessions(ag_api_ctx *ctx, ag_http_req *req) {
  if (!only_get(req)) return;
  char state[40], tpl[160];
  ag__api_query(req, "state", state, sizeof state);
  ag__api_query(req, "template", tpl, sizeof tpl);
  if (state[0] && ag_session_state_parse(state) < 0) {
    ag_api_error(req, 400, "invalid_request_error", "invalid_value", "state",
                 "state must be one of inited, running, waiting_for_clarification, completed, failed, cancelled, "
                 "error");
    return;
  }
  listing *l = malloc(sizeof *l);
  if (!l) {
    ag_api_error(req, 500, "server_error", NULL, NULL, "out of memory");
    return;
  }
  *l = (listing){ctx, req};
  ag_session_filter f = {.state = state[0] ? state : NULL,
                         .template_name = tpl[0] ? tpl : NULL,
                         .limit = ag__api_query_num(req, "limit", 100, 1000),
                         .offset = ag__api_query_num(req, "offset", 0, SIZE_MAX / 2)};
  int rc = ag_store_list_sessions_by(ctx->store, &f, on_sessions, l);
  if (rc < 0) {
    free(l);
    ag__api_storage_error(req, rc, "could not list the sessions");
  }
}
