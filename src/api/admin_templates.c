/* The templates' admin API (docs/templates.md):
 *
 *   GET    /admin/templates                    templates (not deleted), by name
 *   POST   /admin/templates                    a template document -> template + version 1, active
 *   GET    /admin/templates/{t}                the template and its active version's document
 *   DELETE /admin/templates/{t}                soft delete
 *   GET    /admin/templates/{t}/versions       every version, newest first
 *   POST   /admin/templates/{t}/versions       a merge patch on the newest (or "base_version")
 *                                              version -> the next version ("activate": true)
 *   GET    /admin/templates/{t}/versions/{n}   one version
 *   POST   /admin/templates/{t}/activate       {"version": n}
 *
 * {t} is a template's id or its name. A document is validated in full before it is stored (the
 * 400 names the field), its tools must be in the registry now, and every change that alters what
 * new sessions get is announced on the bus (AG_TOPIC_TEMPLATES) so the template caches reload. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/template.h"
#include "agent/template_cache.h"
#include "agent/template_doc.h"
#include "api/api.h"
#include "base/json.h"
#include "base/log.h"
#include "bus/bus.h"
#include "net/http_server.h"
#include "search/agent_dir.h"
#include "store/catalog.h"
#include "tools/registry.h"

typedef struct op op;
typedef void (*op_step)(op *o, ag_template_rec *t);

struct op {
  ag_api_ctx *ctx;
  ag_http_req *req;
  op_step next;  /* what to do once the template {t} is found */
  ag_json *body; /* the request body, when there is one */
  int version;   /* a version number from the path or the body */
  bool activate; /* POST versions: make the new version active */
  char *name;    /* the template's name, for the bus notice */
  int64_t tid;
  ag_json *reply; /* the answer, held until this process's cache has the change */
  int reply_status;
};

static op *op_new(ag_api_ctx *ctx, ag_http_req *req) {
  op *o = calloc(1, sizeof *o);
  if (!o) ag_api_error(req, 500, "server_error", NULL, NULL, "out of memory");
  if (o) *o = (op){.ctx = ctx, .req = req};
  return o;
}

static void op_free(op *o) {
  ag_json_free(o->body);
  ag_json_free(o->reply);
  free(o->name);
  free(o);
}

static void store_failed(ag_http_req *req, int err, const char *what) {
  switch (err) {
  case AG_ENOTFOUND:
    ag_api_error(req, 404, "invalid_request_error", "template_not_found", NULL, "no such template or version");
    return;
  case AG_EEXIST:
    ag_api_error(req, 409, "invalid_request_error", "template_exists", "name",
                 "a template with this name exists (or existed: names of deleted templates are not reused)");
    return;
  case AG_ESTATE:
    ag_api_error(req, 409, "invalid_request_error", "template_deleted", NULL, "the template is deleted");
    return;
  case AG_EINVAL:
    ag_api_error(req, 400, "invalid_request_error", "invalid_template", "tools",
                 "the database refused the version: a tool it links is not in the catalog or not active");
    return;
  default: ag__api_storage_error(req, err, what); return;
  }
}

static void on_cache_reloaded(void *ud) {
  op *o = ud;
  ag__api_respond_json(o->req, o->reply_status, o->reply);
  o->reply = NULL;
  op_free(o);
}

/* The change is stored: every agentd on the bus reloads the template, and the answer goes out
 * once this process has (a client reads its own write: /v1/models and new sessions see it).
 * Takes `reply` and frees `o`. */
static void announce_and_reply(op *o, const char *name, int status, ag_json *reply) {
  o->reply = reply;
  o->reply_status = status;
  if (o->ctx->bus && ag_bus_publish_str(o->ctx->bus, AG_TOPIC_TEMPLATES, name) < 0)
    ag_log_warn(NULL, "templates: could not announce the change of %s to other processes", name);
  if (!o->ctx->templates || ag_template_cache_reload(o->ctx->templates, name, on_cache_reloaded, o) < 0)
    on_cache_reloaded(o);
}

/* ---- JSON out ---------------------------------------------------------------------------------- */

static ag_json *template_json(const ag_template_rec *t) {
  ag_json *o = ag_json_object_new();
  int rc = o ? 0 : AG_ENOMEM;
  if (rc == 0) rc = ag_json_set_take(o, "id", ag_json_int_new(t->id));
  if (rc == 0) rc = ag_json_set_take(o, "name", ag_json_string_new(t->name));
  if (rc == 0) rc = ag_json_set_take(o, "description", ag_json_string_new(t->description ? t->description : ""));
  if (rc == 0)
    rc = ag_json_set_take(o, "active_version",
                          t->active_version ? ag_json_int_new(t->active_version) : ag_json_null_new());
  if (rc == 0) rc = ag_json_set_take(o, "deleted", ag_json_bool_new(t->deleted_at != 0));
  if (rc == 0) rc = ag_json_set_take(o, "created_at", ag__api_iso_time(t->created_at));
  if (rc == 0) rc = ag_json_set_take(o, "updated_at", ag__api_iso_time(t->updated_at));
  if (rc < 0) {
    ag_json_free(o);
    return NULL;
  }
  return o;
}

/* {"version", "active", "created_at", "template": <document>} */
static ag_json *version_json(const char *name, const ag_template_version_rec *v) {
  ag_template_rec tr = {.id = v->template_id, .name = (char *)name};
  ag_template *t = NULL;
  char why[512];
  ag_json *doc = NULL;
  if (ag_template_from_version_rec(&tr, v, &t, why, sizeof why) == 0) {
    doc = ag_template_doc_json(t);
  } else {
    ag_log_error(NULL, "templates: %s", why);
    doc = ag_json_string_new(why);
  }
  ag_template_unref(t);
  ag_json *o = ag_json_object_new();
  int rc = o && doc ? 0 : AG_ENOMEM;
  if (rc == 0) rc = ag_json_set_take(o, "version", ag_json_int_new(v->version));
  if (rc == 0) rc = ag_json_set_take(o, "active", ag_json_bool_new(v->is_active));
  if (rc == 0) rc = ag_json_set_take(o, "created_at", ag__api_iso_time(v->created_at));
  if (rc == 0) {
    rc = ag_json_set_take(o, "template", doc);
    doc = NULL;
  }
  ag_json_free(doc);
  if (rc < 0) {
    ag_json_free(o);
    return NULL;
  }
  return o;
}

/* ---- a document in ----------------------------------------------------------------------------- */

/* Parses a document and checks its tools against the running registry (built-in spellings become
 * the canonical names). NULL after answering 400. */
static ag_template *admit(op *o, const ag_json *doc) {
  ag_template *t = NULL;
  char why[512];
  if (ag_template_doc_parse(doc, &t, why, sizeof why) < 0) {
    ag_api_error(o->req, 400, "invalid_request_error", "invalid_template", NULL, "%s", why);
    return NULL;
  }
  for (size_t i = 0; i < t->n_tools; i++) {
    const ag_tool *tool = ag_tool_registry_find(o->ctx->tools, t->tools[i]);
    if (!tool) {
      ag_api_error(o->req, 400, "invalid_request_error", "unknown_tool", "tools",
                   "tools[%zu]: no tool '%s' (not a built-in, not an active catalog tool)", i, t->tools[i]);
      ag_template_unref(t);
      return NULL;
    }
    if (strcmp(tool->name, t->tools[i]) != 0) {
      char *c = strdup(tool->name);
      if (!c) {
        ag_template_unref(t);
        ag_api_error(o->req, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
      }
      free(t->tools[i]);
      t->tools[i] = c;
    }
  }
  return t;
}

/* ---- list, create ------------------------------------------------------------------------------ */

static void on_listed(int err, ag_template_rec *recs, size_t n, void *ud) {
  op *o = ud;
  if (err < 0) {
    store_failed(o->req, err, "could not list the templates");
  } else {
    ag_json *arr = ag_json_array_new();
    for (size_t i = 0; arr && i < n; i++)
      (void)ag__api_push(&arr, template_json(&recs[i]));
    ag__api_respond_json(o->req, 200, ag__api_list_body("templates", arr));
  }
  ag_template_recs_free(recs, n);
  op_free(o);
}

static void on_created(int err, ag_template_version_rec *v, void *ud) {
  op *o = ud;
  if (err < 0) {
    store_failed(o->req, err, "could not store the template");
  } else {
    ag_json *res = version_json(o->name, v);
    if (res && ag_json_set_take(res, "template_id", ag_json_int_new(v->template_id)) < 0) {
      ag_json_free(res);
      res = NULL;
    }
    ag_template_version_rec_free(v);
    announce_and_reply(o, o->name, 201, res);
    return;
  }
  ag_template_version_rec_free(v);
  op_free(o);
}

static void create(op *o) {
  ag_template *t = admit(o, o->body);
  if (!t) {
    op_free(o);
    return;
  }
  ag_template_version_rec v;
  int rc = ag_template_to_version_rec(t, NULL, &v);
  if (rc == 0 && !(o->name = strdup(t->name))) rc = AG_ENOMEM;
  if (rc == 0) rc = ag_store_template_create_with_version(o->ctx->store, t->name, t->description, &v, on_created, o);
  if (rc == 0) {
    ag_template_version_rec_deinit(&v);
    ag_template_unref(t);
    return;
  }
  ag_template_version_rec_deinit(&v);
  ag_template_unref(t);
  store_failed(o->req, rc, "could not store the template");
  op_free(o);
}

/* ---- one template ------------------------------------------------------------------------------ */

static void on_active_version(int err, ag_template_version_rec *v, void *ud);

static void show(op *o, ag_template_rec *t) {
  o->tid = t->id;
  o->name = strdup(t->name);
  o->body = template_json(t);
  int rc = o->name && o->body ? 0 : AG_ENOMEM;
  if (rc == 0 && t->active_version)
    rc = ag_store_template_version_get(o->ctx->store, t->id, t->active_version, on_active_version, o);
  else if (rc == 0)
    on_active_version(AG_ENOTFOUND, NULL, o);
  if (rc < 0) {
    store_failed(o->req, rc, "could not read the template");
    op_free(o);
  }
}

static void on_active_version(int err, ag_template_version_rec *v, void *ud) {
  op *o = ud;
  if (err < 0 && err != AG_ENOTFOUND) {
    store_failed(o->req, err, "could not read the active version");
  } else {
    ag_json *res = o->body;
    o->body = NULL;
    ag_json *doc = v ? version_json(o->name, v) : ag_json_null_new();
    if (!doc || ag_json_set_take(res, "active", doc) < 0) {
      ag_json_free(res);
      res = NULL;
    }
    ag__api_respond_json(o->req, 200, res);
  }
  ag_template_version_rec_free(v);
  op_free(o);
}

static void on_deleted(int err, void *ud) {
  op *o = ud;
  if (err < 0) {
    store_failed(o->req, err, "could not delete the template");
  } else {
    ag_json *res = ag_json_object_new();
    if (res && (ag_json_set_take(res, "id", ag_json_int_new(o->tid)) < 0 ||
                ag_json_set_take(res, "name", ag_json_string_new(o->name)) < 0 ||
                ag_json_set_take(res, "deleted", ag_json_bool_new(true)) < 0)) {
      ag_json_free(res);
      res = NULL;
    }
    announce_and_reply(o, o->name, 200, res);
    return;
  }
  op_free(o);
}

static void delete_template(op *o, ag_template_rec *t) {
  o->tid = t->id;
  o->name = strdup(t->name);
  int rc = o->name ? ag_store_template_delete(o->ctx->store, t->id, on_deleted, o) : AG_ENOMEM;
  if (rc < 0) {
    store_failed(o->req, rc, "could not delete the template");
    op_free(o);
  }
}

/* ---- versions ---------------------------------------------------------------------------------- */

static void on_versions(int err, ag_template_version_rec *recs, size_t n, void *ud) {
  op *o = ud;
  if (err < 0) {
    store_failed(o->req, err, "could not list the versions");
  } else {
    ag_json *arr = ag_json_array_new();
    for (size_t i = 0; arr && i < n; i++)
      (void)ag__api_push(&arr, version_json(o->name, &recs[i]));
    ag_json *root = ag__api_list_body("versions", arr);
    if (root && (ag_json_set_take(root, "template_id", ag_json_int_new(o->tid)) < 0 ||
                 ag_json_set_take(root, "name", ag_json_string_new(o->name)) < 0)) {
      ag_json_free(root);
      root = NULL;
    }
    ag__api_respond_json(o->req, 200, root);
  }
  ag_template_version_recs_free(recs, n);
  op_free(o);
}

static void list_versions(op *o, ag_template_rec *t) {
  o->tid = t->id;
  o->name = strdup(t->name);
  size_t limit = ag__api_query_num(o->req, "limit", 100, AG_CATALOG_PAGE_MAX);
  size_t offset = ag__api_query_num(o->req, "offset", 0, SIZE_MAX / 2);
  int rc = o->name ? ag_store_template_versions_list(o->ctx->store, t->id, limit, offset, on_versions, o) : AG_ENOMEM;
  if (rc < 0) {
    store_failed(o->req, rc, "could not list the versions");
    op_free(o);
  }
}

static void on_one_version(int err, ag_template_version_rec *v, void *ud) {
  op *o = ud;
  if (err < 0)
    store_failed(o->req, err, "could not read the version");
  else
    ag__api_respond_json(o->req, 200, version_json(o->name, v));
  ag_template_version_rec_free(v);
  op_free(o);
}

static void get_version(op *o, ag_template_rec *t) {
  o->name = strdup(t->name);
  int rc = o->name ? ag_store_template_version_get(o->ctx->store, t->id, o->version, on_one_version, o) : AG_ENOMEM;
  if (rc < 0) {
    store_failed(o->req, rc, "could not read the version");
    op_free(o);
  }
}

static void on_version_added(int err, ag_template_version_rec *v, void *ud) {
  op *o = ud;
  if (err < 0) {
    store_failed(o->req, err, "could not store the version");
  } else {
    ag_json *res = version_json(o->name, v);
    ag_template_version_rec_free(v);
    if (o->activate) {
      announce_and_reply(o, o->name, 201, res);
      return;
    }
    ag__api_respond_json(o->req, 201, res);
    op_free(o);
    return;
  }
  ag_template_version_rec_free(v);
  op_free(o);
}

/* Copy-on-write: the base version's document, with the body merged in (RFC 7386), is the next
 * version. */
static void on_base_version(int err, ag_template_version_rec *recs, size_t n, void *ud) {
  op *o = ud;
  const ag_template_version_rec *base = NULL;
  for (size_t i = 0; i < n && !base; i++)
    if (o->version == 0 || recs[i].version == o->version) base = &recs[i];
  if (err < 0 || !base) {
    store_failed(o->req, err < 0 ? err : AG_ENOTFOUND, "could not read the base version");
    ag_template_version_recs_free(recs, n);
    op_free(o);
    return;
  }
  ag_template_rec tr = {.id = o->tid, .name = o->name};
  ag_template *bt = NULL;
  char why[512];
  int rc = ag_template_from_version_rec(&tr, base, &bt, why, sizeof why);
  ag_template_version_recs_free(recs, n);
  ag_json *doc = rc == 0 ? ag_template_doc_json(bt) : NULL;
  ag_template_unref(bt);
  if (!doc) {
    ag_api_error(o->req, 500, "server_error", NULL, NULL, "the base version does not read back: %s",
                 rc < 0 ? why : "out of memory");
    op_free(o);
    return;
  }
  ag_json_del(doc, "version");
  ag_json *merged = ag_template_doc_merge(doc, o->body);
  ag_json_free(doc);
  ag_template *t = NULL;
  if (!merged) {
    ag_api_error(o->req, 500, "server_error", NULL, NULL, "out of memory");
  } else if (!ag_json_get_str(merged, "name") || strcmp(ag_json_get_str(merged, "name"), o->name) != 0) {
    ag_api_error(o->req, 400, "invalid_request_error", "invalid_template", "name",
                 "name: a version cannot rename its template (create a new template instead)");
  } else {
    t = admit(o, merged);
  }
  ag_json_free(merged);
  if (!t) {
    op_free(o);
    return;
  }
  ag_template_version_rec v;
  rc = ag_template_to_version_rec(t, NULL, &v);
  if (rc == 0) rc = ag_store_template_version_add(o->ctx->store, o->tid, &v, o->activate, on_version_added, o);
  ag_template_version_rec_deinit(&v);
  ag_template_unref(t);
  if (rc < 0) {
    store_failed(o->req, rc, "could not store the version");
    op_free(o);
  }
}

static void add_version(op *o, ag_template_rec *t) {
  o->tid = t->id;
  o->name = strdup(t->name);
  /* The body is the patch; these two steer the operation and are not part of it. */
  ag_json *act = ag_json_get(o->body, "activate"), *base = ag_json_get(o->body, "base_version");
  if (act && !ag_json_is(act, AG_JSON_BOOL)) {
    ag_api_error(o->req, 400, "invalid_request_error", "invalid_value", "activate", "activate must be true or false");
    op_free(o);
    return;
  }
  if (base && (!ag_json_is(base, AG_JSON_INT) || ag_json_int(base) < 1 || ag_json_int(base) > 1000000000)) {
    ag_api_error(o->req, 400, "invalid_request_error", "invalid_value", "base_version",
                 "base_version must be a version number");
    op_free(o);
    return;
  }
  o->activate = act && ag_json_bool(act);
  o->version = base ? (int)ag_json_int(base) : 0;
  ag_json_del(o->body, "activate");
  ag_json_del(o->body, "base_version");
  ag_json_del(o->body, "version");
  /* The newest version when no base is named; the page is long enough to hold the base. */
  int rc = !o->name ? AG_ENOMEM
           : o->version
               ? ag_store_template_versions_list(o->ctx->store, t->id, AG_CATALOG_PAGE_MAX, 0, on_base_version, o)
               : ag_store_template_versions_list(o->ctx->store, t->id, 1, 0, on_base_version, o);
  if (rc < 0) {
    store_failed(o->req, rc, "could not read the versions");
    op_free(o);
  }
}

static void on_activated(int err, ag_template_rec *t, void *ud) {
  op *o = ud;
  if (err < 0) {
    store_failed(o->req, err, "could not activate the version");
  } else {
    ag_json *res = template_json(t);
    char *name = strdup(t->name);
    ag_template_rec_free(t);
    if (name) {
      announce_and_reply(o, name, 200, res);
      free(name);
      return;
    }
    ag__api_respond_json(o->req, 200, res);
    op_free(o);
    return;
  }
  ag_template_rec_free(t);
  op_free(o);
}

static void activate(op *o, ag_template_rec *t) {
  ag_json *v = ag_json_get(o->body, "version");
  if (!ag_json_is(v, AG_JSON_INT) || ag_json_int(v) < 1 || ag_json_int(v) > 1000000000) {
    ag_api_error(o->req, 400, "invalid_request_error", "invalid_value", "version",
                 "the body must be {\"version\": <a version number>}");
    op_free(o);
    return;
  }
  int rc = ag_store_template_activate(o->ctx->store, t->id, (int)ag_json_int(v), on_activated, o);
  if (rc < 0) {
    store_failed(o->req, rc, "could not activate the version");
    op_free(o);
  }
}

static bool has_tag(const ag_template *t, const char *tag) {
  for (size_t i = 0; i < t->n_tags; i++)
    if (strcmp(t->tags[i], tag) == 0) return true;
  return false;
}

/* GET /admin/templates?q=...&kind=&tag=&limit=: the active templates ranked for a task by the
 * agent directory (name, description, display name, tags), filtered by kind and tag. */
static void search_directory(ag_api_ctx *ctx, ag_http_req *req, const char *q) {
  size_t top_k = ag__api_query_num(req, "limit", 10, 64);
  char kind[32], tag[128];
  ag__api_query(req, "kind", kind, sizeof kind);
  ag__api_query(req, "tag", tag, sizeof tag);
  if (kind[0] && ag_agent_kind_parse(kind) < 0) {
    ag_api_error(req, 400, "invalid_request_error", "invalid_value", "kind",
                 "kind must be one of sgr, tool_calling, sgr_tool_calling, router, workflow");
    return;
  }
  /* Filters apply to the directory's best 256; the answer is the first top_k that pass. */
  ag_agent_hit hits[256];
  size_t n = ag_agent_dir_search(ag_template_cache_directory(ctx->templates), q, hits, AG_ARRAY_LEN(hits));
  ag_json *arr = ag_json_array_new();
  for (size_t i = 0, shown = 0; arr && i < n && shown < top_k; i++) {
    const ag_template *t = ag_template_cache_active(ctx->templates, hits[i].name);
    if (t && kind[0] && t->kind != ag_agent_kind_parse(kind)) continue;
    if (t && tag[0] && !has_tag(t, tag)) continue;
    shown++;
    ag_json *o = ag_json_object_new();
    int rc = o && t ? 0 : AG_ENOMEM;
    if (rc == 0) rc = ag_json_set_take(o, "name", ag_json_string_new(t->name));
    if (rc == 0) rc = ag_json_set_take(o, "score", ag_json_real_new(hits[i].score));
    if (rc == 0) rc = ag_json_set_take(o, "description", ag_json_string_new(t->description ? t->description : ""));
    if (rc == 0) rc = ag_json_set_take(o, "kind", ag_json_string_new(ag_agent_kind_name(t->kind)));
    if (rc == 0) rc = ag_json_set_take(o, "version", ag_json_int_new(t->version));
    ag_json *tags = o ? ag_json_array_new() : NULL;
    for (size_t k = 0; rc == 0 && tags && k < t->n_tags; k++)
      rc = ag_json_push_take(tags, ag_json_string_new(t->tags[k]));
    if (rc == 0)
      rc = ag_json_set_take(o, "tags", tags ? tags : ag_json_array_new());
    else
      ag_json_free(tags);
    if (rc < 0) {
      ag_json_free(o);
      o = NULL;
    }
    (void)ag__api_push(&arr, o);
  }
  ag_json *root = ag__api_list_body("templates", arr);
  if (root && ag_json_set_take(root, "query", ag_json_string_new(q)) < 0) {
    ag_json_free(root);
    root = NULL;
  }
  ag__api_respond_json(req, 200, root);
}

/* ---- routing ----------------------------------------------------------------------------------- */

static void on_found(int err, ag_template_rec *t, void *ud) {
  op *o = ud;
  if (err < 0) {
    store_failed(o->req, err, "could not read the template");
    op_free(o);
  } else if (t->deleted_at && o->next != show) {
    /* By id a deleted template is still found; only reading it makes sense. */
    ag_api_error(o->req, o->next == delete_template ? 404 : 409, "invalid_request_error", "template_deleted", NULL,
                 "the template is deleted");
    op_free(o);
  } else {
    o->next(o, t);
  }
  ag_template_rec_free(t);
}

static bool all_digits(const char *s) {
  if (!*s) return false;
  for (; *s; s++)
    if (!isdigit((unsigned char)*s)) return false;
  return true;
}

static void method_not_allowed(ag_http_req *req, const char *allow) {
  char hdr[64];
  snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
  ag_api_error_h(req, 405, hdr, "invalid_request_error", "method_not_allowed", NULL, "use %s here", allow);
}

void ag__api_admin_templates(ag_api_ctx *ctx, ag_http_req *req, const char *rest) {
  ag_slice m = ag_http_req_method(req);
  bool get = ag_slice_eq_cstr(m, "GET"), post = ag_slice_eq_cstr(m, "POST"), del = ag_slice_eq_cstr(m, "DELETE");
  if (!rest[0]) {
    if (!get && !post) {
      method_not_allowed(req, "GET, POST");
      return;
    }
    op *o = op_new(ctx, req);
    if (!o) return;
    if (post) {
      if (!(o->body = ag__api_json_body(req, AG_TEMPLATE_DOC_MAX, "a template document"))) {
        op_free(o);
        return;
      }
      create(o);
      return;
    }
    char q[1024];
    ag__api_query(req, "q", q, sizeof q);
    if (q[0]) {
      op_free(o);
      search_directory(ctx, req, q);
      return;
    }
    size_t limit = ag__api_query_num(req, "limit", 100, AG_CATALOG_PAGE_MAX);
    size_t offset = ag__api_query_num(req, "offset", 0, SIZE_MAX / 2);
    int rc = ag_store_template_list(ctx->store, limit, offset, on_listed, o);
    if (rc < 0) {
      store_failed(req, rc, "could not list the templates");
      op_free(o);
    }
    return;
  }
  /* {t}[/versions[/{n}] | /activate] */
  char ref[160], sub[32] = "", num[16] = "";
  const char *slash = strchr(rest, '/');
  size_t rl = slash ? (size_t)(slash - rest) : strlen(rest);
  if (rl == 0 || rl >= sizeof ref) {
    ag_api_error(req, 404, "invalid_request_error", "not_found", NULL, "no such template");
    return;
  }
  memcpy(ref, rest, rl);
  ref[rl] = '\0';
  if (slash) {
    const char *s2 = strchr(slash + 1, '/');
    size_t sl = s2 ? (size_t)(s2 - slash - 1) : strlen(slash + 1);
    if (sl >= sizeof sub || (s2 && strlen(s2 + 1) >= sizeof num)) {
      ag_api_error(req, 404, "invalid_request_error", "not_found", NULL, "no such route");
      return;
    }
    memcpy(sub, slash + 1, sl);
    sub[sl] = '\0';
    if (s2) snprintf(num, sizeof num, "%s", s2 + 1);
  }
  op_step next = NULL;
  bool needs_body = false;
  const char *allow = NULL;
  if (!sub[0]) {
    next = get ? show : del ? delete_template : NULL;
    allow = "GET, DELETE";
  } else if (strcmp(sub, "versions") == 0 && !num[0]) {
    next = get ? list_versions : post ? add_version : NULL;
    needs_body = post;
    allow = "GET, POST";
  } else if (strcmp(sub, "versions") == 0 && all_digits(num) && strlen(num) < 10) {
    next = get ? get_version : NULL;
    allow = "GET";
  } else if (strcmp(sub, "activate") == 0 && !num[0]) {
    next = post ? activate : NULL;
    needs_body = true;
    allow = "POST";
  } else {
    ag_api_error(req, 404, "invalid_request_error", "not_found", NULL, "no such route");
    return;
  }
  if (!next) {
    method_not_allowed(req, allow);
    return;
  }
  op *o = op_new(ctx, req);
  if (!o) return;
  o->next = next;
  if (num[0]) o->version = (int)strtol(num, NULL, 10); /* all digits, fewer than 10 */
  if (needs_body && !(o->body = ag__api_json_body(req, AG_TEMPLATE_DOC_MAX, "a template document"))) {
    op_free(o);
    return;
  }
  int rc = all_digits(ref) && strlen(ref) < 19 ? ag_store_template_get(ctx->store, strtoll(ref, NULL, 10), on_found, o)
                                               : ag_store_template_get_by_name(ctx->store, ref, on_found, o);
  if (rc < 0) {
    store_failed(req, rc, "could not read the template");
    op_free(o);
  }
}
