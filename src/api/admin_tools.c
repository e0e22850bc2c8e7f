/* The tool catalog's admin API: /admin/tools (list, create), /admin/tools/{id} (get, PATCH,
 * DELETE), /admin/tools/{id}/activate and /deactivate. A definition is checked in full before it
 * is stored (the registry compiles its input schema and its executor configuration, so a 400 says
 * exactly which field is wrong), and every accepted change goes into the running registry at once:
 * the next step of every session sees it (hot-load). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "bus/bus.h"
#include "net/http_server.h"
#include "store/catalog.h"
#include "tools/mcp.h"
#include "tools/registry.h"

#define MAX_DEF_BYTES (1u << 20)

static void store_failed(ag_http_req *req, int err, const char *what) {
  switch (err) {
  case AG_ENOTFOUND: ag_api_error(req, 404, "invalid_request_error", "tool_not_found", NULL, "no such tool"); return;
  case AG_EEXIST:
    ag_api_error(req, 409, "invalid_request_error", "tool_exists", "name", "an active tool with this name exists");
    return;
  case AG_ESTATE:
    ag_api_error(req, 409, "invalid_request_error", "version_conflict", "version",
                 "the tool changed since that version was read (or it is deleted); read it again");
    return;
  case AG_EINVAL:
    ag_api_error(req, 400, "invalid_request_error", "invalid_tool", NULL, "the database refused the definition");
    return;
  default: ag__api_storage_error(req, err, what); return;
  }
}

/* A stored JSON text as a JSON value (the catalog stores documents as text). */
static ag_json *doc(const char *text) {
  ag_json *j = text ? ag_json_parse(text, strlen(text), NULL, 0) : NULL;
  return j ? j : ag_json_null_new();
}

static ag_json *tool_json(const ag_tool_rec *t) {
  ag_json *o = ag_json_object_new(), *tags = ag_json_array_new();
  int rc = o && tags ? 0 : AG_ENOMEM;
  for (size_t i = 0; rc == 0 && i < t->n_tags; i++)
    rc = ag_json_push_take(tags, ag_json_string_new(t->tags[i]));
  if (rc == 0) rc = ag_json_set_take(o, "id", ag_json_int_new(t->id));
  if (rc == 0) rc = ag_json_set_take(o, "name", ag_json_string_new(t->name));
  if (rc == 0) rc = ag_json_set_take(o, "version", ag_json_int_new(t->version));
  if (rc == 0) rc = ag_json_set_take(o, "description", ag_json_string_new(t->description ? t->description : ""));
  if (rc == 0) rc = ag_json_set_take(o, "input_schema", doc(t->input_schema));
  if (rc == 0) rc = ag_json_set_take(o, "executor", ag_json_string_new(t->executor));
  if (rc == 0) rc = ag_json_set_take(o, "executor_config", doc(t->executor_config));
  if (rc == 0) rc = ag_json_set_take(o, "risk", ag_json_string_new(t->risk ? t->risk : "low"));
  if (rc == 0) {
    rc = ag_json_set_take(o, "tags", tags);
    tags = NULL;
  }
  if (rc == 0) rc = ag_json_set_take(o, "is_system", ag_json_bool_new(t->is_system));
  if (rc == 0) rc = ag_json_set_take(o, "idempotent", ag_json_bool_new(t->idempotent));
  if (rc == 0) rc = ag_json_set_take(o, "active", ag_json_bool_new(t->active));
  if (rc == 0) rc = ag_json_set_take(o, "deleted", ag_json_bool_new(t->deleted_at != 0));
  if (rc == 0) rc = ag_json_set_take(o, "deleted_at", ag__api_iso_time(t->deleted_at));
  if (rc == 0) rc = ag_json_set_take(o, "created_at", ag__api_iso_time(t->created_at));
  if (rc == 0) rc = ag_json_set_take(o, "updated_at", ag__api_iso_time(t->updated_at));
  ag_json_free(tags);
  if (rc < 0) {
    ag_json_free(o);
    return NULL;
  }
  return o;
}

/* ---- reading a definition from a request body ------------------------------------------------ */

static const char *const known_fields[] = {"name", "description", "input_schema", "executor", "executor_config",
                                           "risk", "tags",        "idempotent",   "active",   "version"};

static bool known_field(const char *k) {
  for (size_t i = 0; i < AG_ARRAY_LEN(known_fields); i++)
    if (strcmp(k, known_fields[i]) == 0) return true;
  return false;
}

static int set_text(char **dst, const char *v) {
  char *p = ag_strdup(v);
  if (v && !p) return AG_ENOMEM;
  free(*dst);
  *dst = p;
  return 0;
}

/* Applies the fields present in `body` to `t` (a new definition, or the stored one for PATCH).
 * On a bad field: AG_EINVAL, and *param / err say which and why. */
static int apply_fields(const ag_json *body, ag_tool_rec *t, const char **param, char *err, size_t errlen) {
  for (void *it = ag_json_iter(body); it; it = ag_json_iter_next(body, it)) {
    const char *k = ag_json_iter_key(it);
    if (!known_field(k)) {
      *param = k;
      snprintf(err, errlen, "%.64s: unknown field", k);
      return AG_EINVAL;
    }
  }
  const ag_json *v;
  int rc = 0;
#define WANT_STRING(key)                                                                                               \
  if ((v = ag_json_get(body, key)) && !ag_json_is(v, AG_JSON_STRING)) {                                                \
    *param = key;                                                                                                      \
    snprintf(err, errlen, "%s: must be a string", key);                                                                \
    return AG_EINVAL;                                                                                                  \
  }
  WANT_STRING("name")
  if (v) rc = set_text(&t->name, ag_json_str(v));
  WANT_STRING("description")
  if (rc == 0 && v) rc = set_text(&t->description, ag_json_str(v));
  WANT_STRING("executor")
  if (rc == 0 && v) rc = set_text(&t->executor, ag_json_str(v));
  WANT_STRING("risk")
  if (rc == 0 && v) {
    const char *r = ag_json_str(v);
    if (strcmp(r, "low") && strcmp(r, "medium") && strcmp(r, "high") && strcmp(r, "critical")) {
      *param = "risk";
      snprintf(err, errlen, "risk: must be one of \"low\", \"medium\", \"high\", \"critical\"");
      return AG_EINVAL;
    }
    rc = set_text(&t->risk, r);
  }
#undef WANT_STRING
  static const char *const docs[] = {"input_schema", "executor_config"};
  for (size_t d = 0; rc == 0 && d < 2; d++) {
    if (!(v = ag_json_get(body, docs[d]))) continue;
    if (!ag_json_is(v, AG_JSON_OBJECT)) {
      *param = docs[d];
      snprintf(err, errlen, "%s: must be a JSON object", docs[d]);
      return AG_EINVAL;
    }
    char *text = ag_json_dumps(v);
    if (!text) return AG_ENOMEM;
    free(d == 0 ? t->input_schema : t->executor_config);
    *(d == 0 ? &t->input_schema : &t->executor_config) = text;
  }
  static const char *const flags[] = {"idempotent", "active"};
  for (size_t f = 0; rc == 0 && f < 2; f++) {
    if (!(v = ag_json_get(body, flags[f]))) continue;
    if (!ag_json_is(v, AG_JSON_BOOL)) {
      *param = flags[f];
      snprintf(err, errlen, "%s: must be true or false", flags[f]);
      return AG_EINVAL;
    }
    *(f == 0 ? &t->idempotent : &t->active) = ag_json_bool(v);
  }
  if (rc == 0 && (v = ag_json_get(body, "tags"))) {
    if (!ag_json_is(v, AG_JSON_ARRAY) || ag_json_len(v) > AG_CATALOG_MAX_TAGS) {
      *param = "tags";
      snprintf(err, errlen, "tags: must be an array of at most %d strings", AG_CATALOG_MAX_TAGS);
      return AG_EINVAL;
    }
    for (size_t i = 0; i < t->n_tags; i++)
      free(t->tags[i]);
    free(t->tags);
    t->tags = NULL;
    t->n_tags = 0;
    size_t n = ag_json_len(v);
    if (n && !(t->tags = calloc(n, sizeof *t->tags))) return AG_ENOMEM;
    for (size_t i = 0; i < n; i++) {
      const char *tag = ag_json_str(ag_json_at(v, i));
      if (!tag || !tag[0] || strlen(tag) > 64) {
        *param = "tags";
        snprintf(err, errlen, "tags[%zu]: must be a string of 1 to 64 characters", i);
        return AG_EINVAL;
      }
      if (!(t->tags[t->n_tags] = ag_strdup(tag))) return AG_ENOMEM;
      t->n_tags++;
    }
  }
  return rc;
}

static ag_json *parse_body(ag_http_req *req) { return ag__api_json_body(req, MAX_DEF_BYTES, "a tool definition"); }

/* ---- operations -------------------------------------------------------------------------------- */

typedef struct op {
  ag_api_ctx *ctx;
  ag_http_req *req;
  int status; /* for the success response */
  int64_t id;
  ag_json *patch; /* PATCH: the body, applied to the stored row */
  int expected_version;
  char *old_name; /* PATCH: the name before, to unload it if the tool was renamed; DELETE: the name */
} op;

static op *op_new(ag_api_ctx *ctx, ag_http_req *req, int status) {
  op *o = calloc(1, sizeof *o);
  if (!o) {
    ag_api_error(req, 500, "server_error", NULL, NULL, "out of memory");
    return NULL;
  }
  *o = (op){.ctx = ctx, .req = req, .status = status};
  return o;
}

static void op_free(op *o) {
  ag_json_free(o->patch);
  free(o->old_name);
  free(o);
}

/* Other agentd processes on the bus reload the tool of that name from the store (this one has
 * put it into its registry already; its own reload of the notice finds the same row). */
static void announce(ag_api_ctx *ctx, const char *name) {
  if (ctx->bus && name && ag_bus_publish_str(ctx->bus, AG_TOPIC_TOOLS, name) < 0)
    ag_log_warn(NULL, "tools: could not announce the change of %s", name);
}

/* A stored row came back: put it into the registry (hot-load) and answer with it. */
static void on_tool_written(int err, ag_tool_rec *t, void *ud) {
  op *o = ud;
  if (err < 0) {
    store_failed(o->req, err, "could not store the tool");
  } else {
    char why[512] = "";
    /* Renamed: the old name must stop running this tool. */
    if (o->old_name && strcmp(o->old_name, t->name) != 0) ag_tool_registry_remove(o->ctx->tools, o->old_name);
    if (ag_tool_registry_put(o->ctx->tools, t, why, sizeof why) < 0)
      /* Checked before it was stored, so only memory (or a race with another write) can fail
       * here; the row is stored and the next start loads it. */
      ag_log_error(NULL, "tools: %s stored but not loaded: %s", t->name, why);
    if (o->old_name && strcmp(o->old_name, t->name) != 0) announce(o->ctx, o->old_name);
    announce(o->ctx, t->name);
    ag__api_respond_json(o->req, o->status, tool_json(t));
  }
  ag_tool_rec_free(t);
  op_free(o);
}

static bool check_def(ag_api_ctx *ctx, ag_http_req *req, const ag_tool_rec *t) {
  char why[512] = "";
  int rc = ag_tool_registry_check(ctx->tools, t, why, sizeof why);
  if (rc == 0) return true;
  if (rc == AG_EEXIST) {
    ag_api_error(req, 409, "invalid_request_error", "tool_exists", "name", "%s", why);
    return false;
  }
  /* The field is the text before the first ':' or '.' ("executor_config.url: ..."). */
  char param[64];
  size_t k = strcspn(why, ":.[");
  snprintf(param, sizeof param, "%.*s", (int)(k < sizeof param ? k : sizeof param - 1), why);
  ag_api_error(req, 400, "invalid_request_error", "invalid_tool", param, "%s", why);
  return false;
}

static void create_tool(ag_api_ctx *ctx, ag_http_req *req) {
  ag_json *body = parse_body(req);
  if (!body) return;
  ag_tool_rec t = {.active = true};
  const char *param = NULL;
  char why[512] = "";
  int rc = apply_fields(body, &t, &param, why, sizeof why);
  if (rc == 0) {
    static const char *const required[] = {"name", "input_schema", "executor"};
    for (size_t i = 0; i < AG_ARRAY_LEN(required); i++) {
      if (ag_json_get(body, required[i])) continue;
      param = required[i];
      snprintf(why, sizeof why, "%s: required", required[i]);
      rc = AG_EINVAL;
      break;
    }
  }
  /* param may point into the body: the body goes after the answer. */
  if (rc == AG_ENOMEM) {
    ag_api_error(req, 500, "server_error", NULL, NULL, "out of memory");
  } else if (rc < 0) {
    ag_api_error(req, 400, "invalid_request_error", "invalid_tool", param, "%s", why);
  } else if (check_def(ctx, req, &t)) {
    op *o = op_new(ctx, req, 201);
    if (o && (rc = ag_store_tool_create(ctx->store, &t, on_tool_written, o)) < 0) {
      store_failed(req, rc, "could not store the tool");
      op_free(o);
    }
  }
  ag_json_free(body);
  ag_tool_rec_deinit(&t);
}

static void on_tool_read(int err, ag_tool_rec *t, void *ud) {
  op *o = ud;
  if (err < 0)
    store_failed(o->req, err, "could not read the tool");
  else
    ag__api_respond_json(o->req, 200, tool_json(t));
  ag_tool_rec_free(t);
  op_free(o);
}

/* PATCH: the stored row, with the body's fields over it, checked and written back at the version
 * that was read (or the one the client names), so concurrent edits do not overwrite each other. */
static void on_patch_base(int err, ag_tool_rec *t, void *ud) {
  op *o = ud;
  if (err < 0) {
    store_failed(o->req, err, "could not read the tool");
    goto done;
  }
  if (t->is_system) {
    ag_api_error(o->req, 403, "invalid_request_error", "system_tool", NULL, "system tools cannot be changed");
    goto done;
  }
  const char *param = NULL;
  char why[512] = "", old_name[160];
  snprintf(old_name, sizeof old_name, "%s", t->name);
  int rc = apply_fields(o->patch, t, &param, why, sizeof why);
  if (rc == AG_ENOMEM) {
    ag_api_error(o->req, 500, "server_error", NULL, NULL, "out of memory");
    goto done;
  }
  if (rc < 0) {
    ag_api_error(o->req, 400, "invalid_request_error", "invalid_tool", param, "%s", why);
    goto done;
  }
  if (!check_def(o->ctx, o->req, t)) goto done;
  int expected = o->expected_version ? o->expected_version : t->version;
  free(o->old_name);
  o->old_name = o->patch ? ag_strdup(old_name) : NULL;
  o->status = 200;
  /* A definition change only; activation has its own route (see patch_tool). */
  rc = ag_store_tool_update(o->ctx->store, t, expected, on_tool_written, o);
  if (rc < 0) {
    store_failed(o->req, rc, "could not store the tool");
    goto done;
  }
  ag_tool_rec_free(t);
  return;
done:
  ag_tool_rec_free(t);
  op_free(o);
}

static void patch_tool(ag_api_ctx *ctx, ag_http_req *req, int64_t id) {
  ag_json *body = parse_body(req);
  if (!body) return;
  long long ver = 0;
  const ag_json *v = ag_json_get(body, "version");
  if (v && (!ag_json_get_int(body, "version", &ver) || ver < 1 || ver > INT32_MAX)) {
    ag_api_error(req, 400, "invalid_request_error", "invalid_tool", "version", "version: must be a positive integer");
    ag_json_free(body);
    return;
  }
  if (ag_json_get(body, "active")) {
    ag_api_error(req, 400, "invalid_request_error", "invalid_tool", "active",
                 "active: use POST /admin/tools/{id}/activate or /deactivate");
    ag_json_free(body);
    return;
  }
  op *o = op_new(ctx, req, 200);
  if (!o) {
    ag_json_free(body);
    return;
  }
  o->patch = body;
  o->expected_version = (int)ver;
  int rc = ag_store_tool_get(ctx->store, id, on_patch_base, o);
  if (rc < 0) {
    store_failed(req, rc, "could not read the tool");
    op_free(o);
  }
}

static void on_deleted(int err, void *ud) {
  op *o = ud;
  if (err < 0) {
    store_failed(o->req, err, "could not delete the tool");
    op_free(o);
    return;
  }
  if (o->old_name) ag_tool_registry_remove(o->ctx->tools, o->old_name);
  announce(o->ctx, o->old_name);
  char body[96];
  snprintf(body, sizeof body, "{\"id\":%lld,\"deleted\":true}", (long long)o->id);
  (void)ag_http_respond(o->req, 200, "application/json", NULL, body, strlen(body));
  op_free(o);
}

/* Delete: the registry forgets the tool first (so no new call starts), then the row is marked. */
static void on_delete_base(int err, ag_tool_rec *t, void *ud) {
  op *o = ud;
  if (err < 0) {
    store_failed(o->req, err, "could not read the tool");
    ag_tool_rec_free(t);
    op_free(o);
    return;
  }
  if (t->is_system) {
    ag_api_error(o->req, 403, "invalid_request_error", "system_tool", NULL, "system tools cannot be deleted");
    ag_tool_rec_free(t);
    op_free(o);
    return;
  }
  /* Unloaded once the row is marked (on_deleted): a failed delete leaves the tool running, as
   * the database still says it is active. */
  if (t->active) o->old_name = ag_strdup(t->name);
  ag_tool_rec_free(t);
  int rc = ag_store_tool_delete(o->ctx->store, o->id, on_deleted, o);
  if (rc < 0) {
    store_failed(o->req, rc, "could not delete the tool");
    op_free(o);
  }
}

static void on_deactivate_base(int err, ag_tool_rec *t, void *ud) {
  op *o = ud;
  if (err < 0) {
    store_failed(o->req, err, "could not read the tool");
  } else if (t->is_system) {
    ag_api_error(o->req, 403, "invalid_request_error", "system_tool", NULL, "system tools cannot be switched off");
  } else {
    int rc = ag_store_tool_set_active(o->ctx->store, o->id, false, on_tool_written, o);
    if (rc == 0) {
      ag_tool_rec_free(t);
      return;
    }
    store_failed(o->req, rc, "could not store the tool");
  }
  ag_tool_rec_free(t);
  op_free(o);
}

/* Activation checks the definition against this server first: a tool that cannot be loaded
 * (an executor this server lacks) is not switched on. */
static void on_activate_base(int err, ag_tool_rec *t, void *ud) {
  op *o = ud;
  if (err < 0) {
    store_failed(o->req, err, "could not read the tool");
  } else if (t->deleted_at) {
    ag_api_error(o->req, 409, "invalid_request_error", "tool_deleted", NULL, "the tool is deleted");
  } else if (t->is_system) {
    ag__api_respond_json(o->req, 200, tool_json(t)); /* always on */
  } else if (check_def(o->ctx, o->req, t)) {
    int rc = ag_store_tool_set_active(o->ctx->store, o->id, true, on_tool_written, o);
    if (rc == 0) {
      ag_tool_rec_free(t);
      return;
    }
    store_failed(o->req, rc, "could not store the tool");
  }
  ag_tool_rec_free(t);
  op_free(o);
}

static void list_tools(ag_api_ctx *ctx, ag_http_req *req, const ag_tool_filter *f);

void ag__api_admin_tools(ag_api_ctx *ctx, ag_http_req *req, const char *rest) {
  ag_slice m = ag_http_req_method(req);
  if (!ctx->tools) {
    ag_api_error(req, 503, "server_error", "not_ready", NULL, "the tool registry is not available");
    return;
  }
  if (!rest[0]) {
    if (ag_slice_eq_cstr(m, "GET")) {
      char tag[80] = "", exec[32] = "", active[8] = "", deleted[8] = "";
      ag__api_query(req, "tag", tag, sizeof tag);
      ag__api_query(req, "executor", exec, sizeof exec);
      ag__api_query(req, "active", active, sizeof active);
      ag__api_query(req, "include_deleted", deleted, sizeof deleted);
      ag_tool_filter f = {.tag = tag[0] ? tag : NULL,
                          .executor = exec[0] ? exec : NULL,
                          .active = strcmp(active, "true") == 0    ? AG_TOOLS_ACTIVE
                                    : strcmp(active, "false") == 0 ? AG_TOOLS_INACTIVE
                                                                   : AG_TOOLS_ANY,
                          .include_deleted = strcmp(deleted, "true") == 0,
                          .limit = ag__api_query_num(req, "limit", 100, AG_CATALOG_PAGE_MAX),
                          .offset = ag__api_query_num(req, "offset", 0, (size_t)1 << 40)};
      list_tools(ctx, req, &f);
    } else if (ag_slice_eq_cstr(m, "POST")) {
      create_tool(ctx, req);
    } else {
      ag_api_error_h(req, 405, "Allow: GET, POST\r\n", "invalid_request_error", "method_not_allowed", NULL,
                     "use GET or POST");
    }
    return;
  }
  char *end = NULL;
  long long id = strtoll(rest, &end, 10);
  if (id <= 0 || !end || (*end && *end != '/')) {
    ag_api_error(req, 404, "invalid_request_error", "tool_not_found", NULL, "no such tool");
    return;
  }
  const char *sub = *end == '/' ? end + 1 : "";
  op *o = NULL;
  int rc = 0;
  if (!sub[0] && ag_slice_eq_cstr(m, "GET")) {
    if ((o = op_new(ctx, req, 200))) rc = ag_store_tool_get(ctx->store, id, on_tool_read, o);
  } else if (!sub[0] && ag_slice_eq_cstr(m, "PATCH")) {
    patch_tool(ctx, req, id);
    return;
  } else if (!sub[0] && ag_slice_eq_cstr(m, "DELETE")) {
    if ((o = op_new(ctx, req, 200))) {
      o->id = id;
      rc = ag_store_tool_get(ctx->store, id, on_delete_base, o);
    }
  } else if (!sub[0]) {
    ag_api_error_h(req, 405, "Allow: GET, PATCH, DELETE\r\n", "invalid_request_error", "method_not_allowed", NULL,
                   "use GET, PATCH or DELETE");
    return;
  } else if (strcmp(sub, "activate") == 0 || strcmp(sub, "deactivate") == 0) {
    if (!ag_slice_eq_cstr(m, "POST")) {
      ag_api_error_h(req, 405, "Allow: POST\r\n", "invalid_request_error", "method_not_allowed", NULL, "use POST");
      return;
    }
    if ((o = op_new(ctx, req, 200))) {
      o->id = id;
      rc = ag_store_tool_get(ctx->store, id, sub[0] == 'a' ? on_activate_base : on_deactivate_base, o);
    }
  } else {
    ag_api_error(req, 404, "invalid_request_error", "not_found", NULL, "no such route");
    return;
  }
  if (o && rc < 0) {
    store_failed(req, rc, "could not reach the catalog");
    op_free(o);
  }
}

/* ---- GET /admin/tools ---------------------------------------------------------------------------- */

static void on_listed(int err, ag_tool_rec *recs, size_t n, void *ud) {
  ag_http_req *req = ud;
  if (err < 0) {
    store_failed(req, err, "could not list the tools");
    return;
  }
  ag_json *root = ag_json_object_new(), *arr = ag_json_array_new();
  int rc = root && arr ? 0 : AG_ENOMEM;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    ag_json *t = tool_json(&recs[i]);
    rc = t ? ag_json_push_take(arr, t) : AG_ENOMEM;
  }
  ag_tool_recs_free(recs, n);
  if (rc == 0) rc = ag_json_set_take(root, "object", ag_json_string_new("list"));
  if (rc == 0) {
    rc = ag_json_set_take(root, "data", arr);
    arr = NULL;
  }
  ag_json_free(arr);
  if (rc < 0) {
    ag_json_free(root);
    root = NULL;
  }
  ag__api_respond_json(req, 200, root);
}

static void list_tools(ag_api_ctx *ctx, ag_http_req *req, const ag_tool_filter *f) {
  int rc = ag_store_tool_list(ctx->store, f, on_listed, req);
  if (rc < 0) store_failed(req, rc, "could not list the tools");
}

/* ---- POST /admin/mcp/import: a server's tools into the catalog --------------------------------- */

/* {"server": {...mcp server config...}, "prefix": "everything", "tools": ["echo"] (optional),
 * "active": true (default)}: lists the server's tools and creates one catalog tool per remote tool,
 * named prefix__remote, run by the mcp executor; a name already taken is reported, not replaced. */
typedef struct import_op {
  ag_api_ctx *ctx;
  ag_http_req *req;
  char *server; /* the server config, JSON text */
  char *prefix;
  ag_json *only; /* array of remote names, or NULL */
  bool active;
  ag_tool_rec *recs; /* what to create */
  size_t n, next;
  ag_json *imported, *skipped;
} import_op;

static void import_free(import_op *o) {
  free(o->server);
  free(o->prefix);
  ag_json_free(o->only);
  for (size_t i = 0; i < o->n; i++)
    ag_tool_rec_deinit(&o->recs[i]);
  free(o->recs);
  ag_json_free(o->imported);
  ag_json_free(o->skipped);
  free(o);
}

static void import_skip(import_op *o, const char *name, const char *why) {
  ag_json *s = ag_json_object_new();
  if (!s) return;
  if (ag_json_set_take(s, "name", ag_json_string_new(name)) < 0 ||
      ag_json_set_take(s, "reason", ag_json_string_new(why)) < 0 || ag_json_push_take(o->skipped, s) < 0)
    ag_json_free(s);
}

static void import_next(import_op *o);

static void on_imported(int err, ag_tool_rec *t, void *ud) {
  import_op *o = ud;
  const ag_tool_rec *want = &o->recs[o->next - 1];
  if (err == AG_EEXIST) {
    import_skip(o, want->name, "an active tool with this name exists");
  } else if (err < 0) {
    import_skip(o, want->name, ag_strerror(err));
  } else {
    char why[512] = "";
    if (ag_tool_registry_put(o->ctx->tools, t, why, sizeof why) < 0)
      ag_log_error(NULL, "tools: %s stored but not loaded: %s", t->name, why);
    announce(o->ctx, t->name);
    ag_json *j = tool_json(t);
    if (j && ag_json_push_take(o->imported, j) < 0) ag_json_free(j);
  }
  ag_tool_rec_free(t);
  import_next(o);
}

static void import_next(import_op *o) {
  while (o->next < o->n) {
    ag_tool_rec *r = &o->recs[o->next++];
    char why[512] = "";
    if (ag_tool_registry_check(o->ctx->tools, r, why, sizeof why) < 0) {
      import_skip(o, r->name, why);
      continue;
    }
    int rc = ag_store_tool_create(o->ctx->store, r, on_imported, o);
    if (rc == 0) return;
    import_skip(o, r->name, ag_strerror(rc));
  }
  ag_json *root = ag_json_object_new();
  if (root && ag_json_set_take(root, "imported", o->imported) == 0) {
    o->imported = NULL;
    if (ag_json_set_take(root, "skipped", o->skipped) == 0) o->skipped = NULL;
  }
  ag__api_respond_json(o->req, 200, root);
  import_free(o);
}

static bool wanted(const import_op *o, const char *remote) {
  if (!o->only) return true;
  for (size_t i = 0; i < ag_json_len(o->only); i++) {
    const char *n = ag_json_str(ag_json_at(o->only, i));
    if (n && strcmp(n, remote) == 0) return true;
  }
  return false;
}

static void on_listed_remote(int err, const char *errmsg, const ag_mcp_tool *tools, size_t n, void *ud) {
  import_op *o = ud;
  if (err < 0) {
    ag_api_error(o->req, 502, "upstream_error", "mcp_error", "server", "the MCP server's tools could not be listed: %s",
                 errmsg && errmsg[0] ? errmsg : ag_strerror(err));
    import_free(o);
    return;
  }
  o->recs = n ? calloc(n, sizeof *o->recs) : NULL;
  if (n && !o->recs) {
    ag_api_error(o->req, 500, "server_error", NULL, NULL, "out of memory");
    import_free(o);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const ag_mcp_tool *mt = &tools[i];
    if (!mt->name || !wanted(o, mt->name)) continue;
    char name[AG_MCP_CATALOG_NAME_MAX + 1];
    if (ag_mcp_catalog_name(o->prefix, mt->name, name) < 0) {
      import_skip(o, mt->name, "no valid catalog name can be made of it");
      continue;
    }
    ag_buf cfg;
    ag_buf_init(&cfg, 1 << 20);
    int rc = ag_buf_appendf(&cfg, "{\"server\":%s,\"tool\":\"", o->server);
    if (rc == 0) rc = ag_buf_append_json_escaped(&cfg, mt->name, strlen(mt->name));
    if (rc == 0) rc = ag_buf_append_str(&cfg, "\"}");
    ag_tool_rec *r = &o->recs[o->n];
    char *tags[2] = {"mcp", o->prefix && o->prefix[0] ? o->prefix : "mcp"};
    r->name = ag_strdup(name);
    r->description = ag_strdup(mt->description ? mt->description : (mt->title ? mt->title : ""));
    r->input_schema = ag_strdup(mt->input_schema ? mt->input_schema : "{\"type\":\"object\"}");
    r->executor = ag_strdup("mcp");
    r->executor_config = rc == 0 ? ag_buf_take(&cfg) : NULL;
    r->risk = ag_strdup(mt->destructive_hint == 1 ? "high" : mt->read_only_hint == 1 ? "low" : "medium");
    r->idempotent = mt->idempotent_hint == 1 || mt->read_only_hint == 1;
    r->active = o->active;
    r->tags = calloc(2, sizeof *r->tags);
    ag_buf_deinit(&cfg);
    if (r->tags) {
      r->tags[0] = ag_strdup(tags[0]);
      r->tags[1] = strcmp(tags[0], tags[1]) ? ag_strdup(tags[1]) : NULL;
      r->n_tags = r->tags[1] ? 2 : 1;
    }
    o->n++;
    if (!r->name || !r->description || !r->input_schema || !r->executor || !r->executor_config || !r->risk ||
        !r->tags || !r->tags[0]) {
      ag_api_error(o->req, 500, "server_error", NULL, NULL, "out of memory");
      import_free(o);
      return;
    }
  }
  import_next(o);
}

void ag__api_admin_mcp_import(ag_api_ctx *ctx, ag_http_req *req) {
  if (!ag_slice_eq_cstr(ag_http_req_method(req), "POST")) {
    ag_api_error_h(req, 405, "Allow: POST\r\n", "invalid_request_error", "method_not_allowed", NULL, "use POST");
    return;
  }
  ag_executor *mcp = ctx->tools ? ag_tool_registry_executor(ctx->tools, "mcp") : NULL;
  if (!mcp) {
    ag_api_error(req, 503, "server_error", "not_available", NULL, "the mcp executor is not available");
    return;
  }
  ag_json *body = parse_body(req);
  if (!body) return;
  const ag_json *server = ag_json_get(body, "server"), *only = ag_json_get(body, "tools");
  const char *prefix = ag_json_get_str(body, "prefix");
  bool active = true;
  const char *bad = !ag_json_is(server, AG_JSON_OBJECT)        ? "server: required, an MCP server configuration object"
                    : ag_json_get(body, "prefix") && !prefix   ? "prefix: must be a string"
                    : only && !ag_json_is(only, AG_JSON_ARRAY) ? "tools: must be an array of remote tool names"
                    : ag_json_get(body, "active") && !ag_json_get_bool(body, "active", &active)
                        ? "active: must be true or false"
                        : NULL;
  if (bad) {
    char param[16];
    snprintf(param, sizeof param, "%.*s", (int)strcspn(bad, ":"), bad);
    ag_api_error(req, 400, "invalid_request_error", "invalid_import", param, "%s", bad);
    ag_json_free(body);
    return;
  }
  import_op *o = calloc(1, sizeof *o);
  if (o) {
    o->ctx = ctx;
    o->req = req;
    o->server = ag_json_dumps(server);
    o->prefix = ag_strdup(prefix ? prefix : "");
    o->only = only ? ag_json_ref((ag_json *)only) : NULL;
    o->active = active;
    o->imported = ag_json_array_new();
    o->skipped = ag_json_array_new();
  }
  ag_json_free(body);
  if (!o || !o->server || !o->prefix || !o->imported || !o->skipped) {
    ag_api_error(req, 500, "server_error", NULL, NULL, "out of memory");
    if (o) import_free(o);
    return;
  }
  char err[512] = "";
  int rc = ag_mcp_list_tools(mcp, o->server, on_listed_remote, o, err, sizeof err);
  if (rc < 0) {
    ag_api_error(req, 400, "invalid_request_error", "invalid_import", "server", "%s", err[0] ? err : ag_strerror(rc));
    import_free(o);
  }
}
