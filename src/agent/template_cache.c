/* The template cache (see template_cache.h).
 *
 * Two maps of references: `active` (name -> its active version) and `versions` ("name@N" ->
 * versions fetched for pinned sessions). Every store operation is an `op` on a list, so that
 * freeing the cache can abandon them: their callbacks then only free the op. A reload is
 * applied only if no later invalidation of the same name was asked for meanwhile (`gens`). */
#include "agent/template_cache.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/template_doc.h"
#include "base/json.h"
#include "base/log.h"
#include "base/map.h"
#include "bus/bus.h"
#include "search/agent_dir.h"
#include "store/catalog.h"

/* Fetched versions kept at most; past it, those no session holds are dropped. */
#define VERSIONS_KEEP 256

enum op_kind { OP_LOAD, OP_RELOAD, OP_FETCH };

typedef struct op {
  struct op *prev, *next;
  ag_template_cache *c; /* NULL once abandoned */
  int kind;
  char *name;
  int version;
  uint64_t gen;
  ag_template_fn cb;
  ag_template_load_fn load_cb;
  void (*reload_cb)(void *ud);
  void *ud;
  /* OP_LOAD: the templates of the page being read, one by one. */
  ag_template_rec *recs;
  size_t n_recs, next_rec, offset, loaded;
} op;

struct ag_template_cache {
  ag_store *store;
  ag_bus *bus;
  ag_bus_sub *sub;
  ag_map active, versions, gens;
  ag_agent_dir *dir;   /* the active templates, searchable by what they do */
  ag_template **order; /* active templates by name */
  size_t n_order, cap_order;
  uint64_t gen;
  op *ops;
};

static void version_key(const char *name, int version, char *out, size_t len) {
  snprintf(out, len, "%s@%d", name, version);
}

/* ---------- the sorted list of active templates ---------- */

static int cmp_tpl(const void *a, const void *b) {
  return strcmp((*(ag_template *const *)a)->name, (*(ag_template *const *)b)->name);
}

static void rebuild_order(ag_template_cache *c) {
  size_t n = c->active.len;
  if (n > c->cap_order) {
    ag_template **p = realloc(c->order, n * sizeof *p);
    if (!p) {
      c->n_order = 0; /* listings are empty until the next change; lookups still work */
      return;
    }
    c->order = p;
    c->cap_order = n;
  }
  size_t pos = 0, k = 0;
  const char *key;
  ag_template *t;
  while ((t = ag_map_next(&c->active, &pos, &key)) && k < n)
    c->order[k++] = t;
  c->n_order = k;
  qsort(c->order, k, sizeof *c->order, cmp_tpl);
}

/* The directory entry of an active template: name, description, display name, tags. */
static void dir_put(ag_template_cache *c, const ag_template *t) {
  ag_json *meta = t->meta ? ag_json_parse(t->meta, strlen(t->meta), NULL, 0) : NULL;
  if (ag_agent_dir_put(c->dir, t->name, t->description, ag_json_get_str(meta, "display_name"),
                       (const char *const *)t->tags, t->n_tags) < 0)
    ag_log_warn(NULL, "templates: %s is not in the agent directory (out of memory)", t->name);
  ag_json_free(meta);
}

static int set_active(ag_template_cache *c, ag_template *t) {
  ag_template *old = ag_map_get(&c->active, t->name);
  if (old == t) return 0;
  int rc = ag_map_put(&c->active, t->name, ag_template_ref(t));
  if (rc < 0) {
    ag_template_unref(t);
    return rc;
  }
  ag_template_unref(old);
  rebuild_order(c);
  dir_put(c, t);
  return 0;
}

static void drop_active(ag_template_cache *c, const char *name) {
  ag_template *old = ag_map_del(&c->active, name);
  if (!old) return;
  ag_template_unref(old);
  rebuild_order(c);
  ag_agent_dir_remove(c->dir, name);
}

/* Drops fetched versions that no session holds any more (of one name, or of all with NULL). */
static void trim_versions(ag_template_cache *c, const char *name) {
  size_t pos = 0;
  const char *key;
  ag_template *t;
  char **dead = NULL;
  size_t n = 0;
  while ((t = ag_map_next(&c->versions, &pos, &key))) {
    if (t->refs > 1 || (name && strcmp(t->name, name) != 0)) continue;
    char **p = realloc(dead, (n + 1) * sizeof *p);
    if (!p) break;
    dead = p;
    if (!(dead[n] = strdup(key))) break;
    n++;
  }
  for (size_t i = 0; i < n; i++) {
    ag_template_unref(ag_map_del(&c->versions, dead[i]));
    free(dead[i]);
  }
  free(dead);
}

/* ---------- ops ---------- */

static op *op_new(ag_template_cache *c, int kind, const char *name) {
  op *o = calloc(1, sizeof *o);
  if (!o) return NULL;
  if (name && !(o->name = strdup(name))) {
    free(o);
    return NULL;
  }
  o->c = c;
  o->kind = kind;
  o->next = c->ops;
  if (c->ops) c->ops->prev = o;
  c->ops = o;
  return o;
}

static void op_free(op *o) {
  if (o->c) {
    if (o->prev)
      o->prev->next = o->next;
    else
      o->c->ops = o->next;
    if (o->next) o->next->prev = o->prev;
  }
  ag_template_recs_free(o->recs, o->n_recs);
  free(o->name);
  free(o);
}

static ag_template *build(const ag_template_rec *tr, const ag_template_version_rec *v) {
  ag_template *t = NULL;
  char err[512];
  if (ag_template_from_version_rec(tr, v, &t, err, sizeof err) < 0) {
    ag_log_error(NULL, "templates: %s", err);
    return NULL;
  }
  return t;
}

/* ---------- load ---------- */

static void load_next(op *o);

static void load_finish(op *o, int err) {
  ag_template_load_fn cb = o->load_cb;
  void *ud = o->ud;
  size_t n = o->loaded;
  bool live = o->c != NULL;
  op_free(o);
  if (live) cb(err, n, ud);
}

static void on_load_version(int err, ag_template_version_rec *v, void *ud) {
  op *o = ud;
  if (!o->c) {
    ag_template_version_rec_free(v);
    op_free(o);
    return;
  }
  const ag_template_rec *tr = &o->recs[o->next_rec - 1];
  if (err == 0) {
    ag_template *t = build(tr, v);
    if (t) {
      if (set_active(o->c, t) == 0) o->loaded++;
      ag_template_unref(t);
    }
  } else if (err != AG_ENOTFOUND) {
    ag_template_version_rec_free(v);
    load_finish(o, err);
    return;
  }
  ag_template_version_rec_free(v);
  load_next(o);
}

static void on_load_page(int err, ag_template_rec *recs, size_t n, void *ud);

static void load_next(op *o) {
  int rc = 0;
  if (o->next_rec < o->n_recs) {
    const ag_template_rec *tr = &o->recs[o->next_rec++];
    rc = ag_store_template_version_get(o->c->store, tr->id, 0, on_load_version, o);
  } else if (o->n_recs == AG_CATALOG_PAGE_MAX) {
    o->offset += o->n_recs;
    ag_template_recs_free(o->recs, o->n_recs);
    o->recs = NULL;
    o->n_recs = o->next_rec = 0;
    rc = ag_store_template_list(o->c->store, AG_CATALOG_PAGE_MAX, o->offset, on_load_page, o);
  } else {
    load_finish(o, 0);
    return;
  }
  if (rc < 0) load_finish(o, rc);
}

static void on_load_page(int err, ag_template_rec *recs, size_t n, void *ud) {
  op *o = ud;
  if (!o->c || err < 0) {
    ag_template_recs_free(recs, n);
    if (!o->c)
      op_free(o);
    else
      load_finish(o, err);
    return;
  }
  o->recs = recs;
  o->n_recs = n;
  load_next(o);
}

int ag_template_cache_load(ag_template_cache *c, ag_template_load_fn done, void *ud) {
  if (!c || !c->store || !done) return AG_EINVAL;
  op *o = op_new(c, OP_LOAD, NULL);
  if (!o) return AG_ENOMEM;
  o->load_cb = done;
  o->ud = ud;
  int rc = ag_store_template_list(c->store, AG_CATALOG_PAGE_MAX, 0, on_load_page, o);
  if (rc < 0) op_free(o);
  return rc;
}

/* ---------- reload and fetch: template by name, then one version ---------- */

static void fetch_done(op *o, int err, ag_template *t) {
  ag_template_fn cb = o->cb;
  void *ud = o->ud;
  bool live = o->c != NULL;
  op_free(o);
  if (live)
    cb(err, t, ud);
  else
    ag_template_unref(t);
}

static bool reload_current(const op *o) {
  return o->c && (uint64_t)(uintptr_t)ag_map_get(&o->c->gens, o->name) == o->gen;
}

static void reload_apply(op *o, int err, ag_template *t) {
  if (reload_current(o)) {
    if (t) {
      if (set_active(o->c, t) < 0) ag_log_error(NULL, "templates: out of memory reloading %s", o->name);
      ag_log_info(NULL, "templates: %s is now at version %d", t->name, t->version);
    } else if (err == AG_ENOTFOUND) {
      drop_active(o->c, o->name);
      ag_log_info(NULL, "templates: %s has no active version any more", o->name);
    } else {
      ag_log_warn(NULL, "templates: cannot reload %s: %s (the cached version stays)", o->name, ag_strerror(err));
    }
    trim_versions(o->c, o->name);
  }
  ag_template_unref(t);
  void (*cb)(void *) = o->c ? o->reload_cb : NULL;
  void *ud = o->ud;
  op_free(o);
  if (cb) cb(ud);
}

static void on_version(int err, ag_template_version_rec *v, void *ud) {
  op *o = ud;
  ag_template *t = NULL;
  if (err == 0 && o->c) {
    ag_template_rec tr = {.id = v->template_id, .name = o->name};
    if (!(t = build(&tr, v))) err = AG_EINVAL;
  }
  ag_template_version_rec_free(v);
  if (o->kind == OP_RELOAD) {
    reload_apply(o, err, t);
    return;
  }
  if (t && o->c) {
    char key[AG_TEMPLATE_NAME_MAX + 16];
    version_key(t->name, t->version, key, sizeof key);
    if (o->c->versions.len >= VERSIONS_KEEP) trim_versions(o->c, NULL);
    ag_template *had = ag_map_get(&o->c->versions, key);
    if (had) {
      /* Fetched twice at once: keep the first, hand it out. */
      ag_template_unref(t);
      t = ag_template_ref(had);
    } else if (ag_map_put(&o->c->versions, key, ag_template_ref(t)) < 0) {
      ag_template_unref(t); /* not kept; the caller's reference is still good */
    }
  }
  fetch_done(o, err, t);
}

static void on_template(int err, ag_template_rec *tr, void *ud) {
  op *o = ud;
  if (!o->c) {
    ag_template_rec_free(tr);
    op_free(o);
    return;
  }
  int rc = err == 0 ? ag_store_template_version_get(o->c->store, tr->id, o->version, on_version, o) : err;
  ag_template_rec_free(tr);
  if (rc == 0) return;
  if (o->kind == OP_RELOAD)
    reload_apply(o, rc, NULL);
  else
    fetch_done(o, rc, NULL);
}

int ag_template_cache_fetch(ag_template_cache *c, const char *name, int version, ag_template_fn cb, void *ud) {
  if (!c || !name || !cb || version < 0) return AG_EINVAL;
  if (!c->store) return AG_ENOTFOUND;
  op *o = op_new(c, OP_FETCH, name);
  if (!o) return AG_ENOMEM;
  o->version = version;
  o->cb = cb;
  o->ud = ud;
  int rc = ag_store_template_get_by_name(c->store, name, on_template, o);
  if (rc < 0) op_free(o);
  return rc;
}

int ag_template_cache_reload(ag_template_cache *c, const char *name, void (*done)(void *ud), void *ud) {
  if (!c || !name) return AG_EINVAL;
  if (!c->store) return AG_ENOTFOUND;
  uint64_t gen = ++c->gen;
  op *o = op_new(c, OP_RELOAD, name);
  if (!o) return AG_ENOMEM;
  if (ag_map_put(&c->gens, name, (void *)(uintptr_t)gen) < 0) {
    op_free(o);
    return AG_ENOMEM;
  }
  o->gen = gen;
  o->reload_cb = done;
  o->ud = ud;
  int rc = ag_store_template_get_by_name(c->store, name, on_template, o);
  if (rc < 0) op_free(o);
  return rc;
}

void ag_template_cache_invalidate(ag_template_cache *c, const char *name) {
  if (!c || !c->store) return;
  int rc = ag_template_cache_reload(c, name, NULL, NULL);
  if (rc < 0) ag_log_warn(NULL, "templates: cannot reload %s: %s", name ? name : "(null)", ag_strerror(rc));
}

static void on_notice(const char *topic, const char *msg, size_t len, void *ud) {
  (void)topic;
  (void)len;
  ag_template_cache_invalidate(ud, msg);
}

/* ---------- the rest ---------- */

int ag_template_cache_new(ag_store *store, ag_bus *bus, ag_template_cache **out) {
  ag_template_cache *c = calloc(1, sizeof *c);
  if (!c) return AG_ENOMEM;
  c->store = store;
  c->bus = bus;
  if (!(c->dir = ag_agent_dir_new())) {
    free(c);
    return AG_ENOMEM;
  }
  ag_map_init(&c->active);
  ag_map_init(&c->versions);
  ag_map_init(&c->gens);
  if (bus) {
    int rc = ag_bus_subscribe(bus, AG_TOPIC_TEMPLATES, on_notice, c, &c->sub);
    if (rc < 0) {
      ag_agent_dir_free(c->dir);
      free(c);
      return rc;
    }
  }
  *out = c;
  return 0;
}

static void unref_all(ag_map *m) {
  size_t pos = 0;
  const char *key;
  ag_template *t;
  while ((t = ag_map_next(m, &pos, &key)))
    ag_template_unref(t);
  ag_map_deinit(m);
}

void ag_template_cache_free(ag_template_cache *c) {
  if (!c) return;
  if (c->sub) ag_bus_unsubscribe(c->bus, c->sub);
  for (op *o = c->ops; o; o = o->next)
    o->c = NULL;
  unref_all(&c->active);
  unref_all(&c->versions);
  ag_map_deinit(&c->gens);
  ag_agent_dir_free(c->dir);
  free(c->order);
  free(c);
}

ag_template *ag_template_cache_active(const ag_template_cache *c, const char *name) {
  return c && name ? ag_map_get(&c->active, name) : NULL;
}

size_t ag_template_cache_count(const ag_template_cache *c) { return c ? c->n_order : 0; }

ag_template *ag_template_cache_at(const ag_template_cache *c, size_t i) {
  return c && i < c->n_order ? c->order[i] : NULL;
}

ag_template *ag_template_cache_lookup(const ag_template_cache *c, const char *name, int version) {
  ag_template *a = ag_template_cache_active(c, name);
  if (a && (version == 0 || a->version == version)) return a;
  if (!c || !name || version <= 0) return NULL;
  char key[AG_TEMPLATE_NAME_MAX + 16];
  version_key(name, version, key, sizeof key);
  return ag_map_get(&c->versions, key);
}

const ag_agent_dir *ag_template_cache_directory(const ag_template_cache *c) { return c ? c->dir : NULL; }

int ag_template_cache_put(ag_template_cache *c, ag_template *t) {
  if (!c || !t || !t->name) return AG_EINVAL;
  return set_active(c, t);
}
