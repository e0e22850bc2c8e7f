/* Server wiring and lifecycle (see server.h).
 *
 * Start-up: templates, store (migrations), upstream provider (or the offline demo model), runtime,
 * the listener, then the sessions a crash or a stop left running are resumed; /readyz turns 200
 * once all of that is up. Shutdown on SIGTERM/SIGINT: stop accepting, refuse new sessions, let
 * running sessions finish for up to shutdown_timeout_ms, then cancel what is left (those stay in
 * the store at their last committed step), close everything and return 0. */
#include "app/server.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "agent/delegate.h"
#include "agent/pool.h"
#include "agent/session.h"
#include "agent/template.h"
#include "agent/template_cache.h"
#include "api/api.h"
#include "app/retention.h"
#include "app/template_files.h"
#include "bus/bus.h"
#include "search/tool_index.h"
#include "base/log.h"
#include "base/util.h"
#include "llm/llm.h"
#include "net/http_client.h"
#include "net/http_server.h"
#include "store/catalog.h"
#include "store/store.h"
#include "tools/exec_http.h"
#include "tools/exec_script.h"
#include "tools/exec_subprocess.h"
#include "tools/mcp.h"
#include "tools/executor.h"
#include "tools/registry.h"
#include "tools/web.h"

#define SHUTDOWN_POLL_MS 20
#define SHUTDOWN_HARD_EXTRA_MS 3000 /* after the grace period: drop client connections */
#define SHUTDOWN_GIVE_UP_MS 15000   /* after the grace period: exit(1) rather than hang */

/* The server struct: everything the process holds, in one place. */
typedef struct ag_server {
  const ag_config *cfg;
  uv_loop_t *loop;
  ag_bus *bus;
  ag_template_cache *templates;
  ag_pool *pool;
  ag_store *store;
  ag_retention *retention; /* NULL when retention is off */
  ag_http_client *http_client;
  ag_llm_provider *provider;
  ag_tool_env tool_env;
  ag_tool_registry *tools;
  ag_tool_index *search; /* tool search over the registry */
  ag_runtime *runtime;
  ag_http_server *http;
  ag_api_ctx api;
  uv_signal_t sigterm, sigint;
  uv_timer_t shutdown_timer;
  uv_timer_t recovery_timer; /* the periodic recovery sweep */
  bool sweeping;             /* a sweep is listing or starting sessions */
  uint64_t shutdown_started;
  bool cancelled_runs;
  bool http_closed;
  int lock_fd; /* SQLite: exclusive lock on <db>.lock for the life of the process, or -1 */
  int closing; /* handles still closing */
  int exit_code;
} ag_server;

static void on_recovered(int err, size_t n, void *ud) {
  (void)ud;
  if (err < 0)
    ag_log_error(NULL, "could not list the sessions to resume: %s", ag_strerror(err));
  else if (n)
    ag_log_info(NULL, "resuming %zu session(s) interrupted by the last stop", n);
}

static void on_swept(int err, size_t n, void *ud) {
  ag_server *srv = ud;
  srv->sweeping = false;
  if (err < 0)
    ag_log_warn(NULL, "recovery sweep: could not list running sessions: %s", ag_strerror(err));
  else if (n)
    ag_log_info(NULL, "recovery sweep: resuming %zu session(s) left running (a database outage?)", n);
}

/* A session whose step could not be committed because the database was out of reach stays
 * "running" at its last committed step with no run attached in this process. The sweep resumes
 * such sessions, as start-up recovery does; live ones are skipped. (One agentd per database, as
 * for start-up recovery: several processes on one PostgreSQL database coordinate through the bus,
 * a later issue.) */
static void on_recovery_tick(uv_timer_t *t) {
  ag_server *srv = t->data;
  if (srv->sweeping || srv->shutdown_started) return;
  if (ag_runtime_recover(srv->runtime, 1000, on_swept, srv) == 0) srv->sweeping = true;
}

static void handle_closed(void *ud) {
  ag_server *srv = ud;
  srv->closing--;
}

static void close_http_server(ag_server *srv) {
  if (srv->http_closed) return;
  srv->http_closed = true;
  ag_http_server_close(srv->http, handle_closed, srv);
}

static void on_pool_closed(void *ud) {
  ag_server *srv = ud;
  srv->pool = NULL;
  ag_template_cache_free(srv->templates);
  srv->templates = NULL;
  ag_bus_close(srv->bus, NULL, NULL);
  srv->bus = NULL;
  ag_store_close(srv->store, handle_closed, srv);
}

/* Only once no run and no upstream call is left (their owners' contracts require it). */
static void begin_close(ag_server *srv) {
  uv_timer_stop(&srv->shutdown_timer);
  srv->closing = srv->retention ? 4 : 3;
  close_http_server(srv);
  /* The tools' executors use the HTTP client: they go first, and the client's close waits for
   * the calls they cancel. */
  if (srv->tools) {
    srv->closing++;
    ag_tool_registry_close(srv->tools, handle_closed, srv);
    srv->tools = NULL;
  }
  ag_http_client_close(srv->http_client, handle_closed, srv);
  /* Before the store: a prune in flight still gets its callback while the store drains. */
  if (srv->retention) ag_retention_stop(srv->retention, handle_closed, srv);
  srv->retention = NULL;
  /* The pool writes its instances' last rows: the store closes after it. */
  ag_pool_close(srv->pool, on_pool_closed, srv);
  uv_close((uv_handle_t *)&srv->sigterm, NULL);
  uv_close((uv_handle_t *)&srv->sigint, NULL);
  uv_close((uv_handle_t *)&srv->shutdown_timer, NULL);
  uv_close((uv_handle_t *)&srv->recovery_timer, NULL);
}

static void on_shutdown_tick(uv_timer_t *t) {
  ag_server *srv = t->data;
  uint64_t elapsed = ag_now_ms() - srv->shutdown_started;
  size_t runs = ag_runtime_active(srv->runtime);
  size_t reqs = ag_http_server_active_requests(srv->http);
  size_t calls = ag_http_client_active(srv->http_client);
  if (runs == 0 && calls == 0 && (reqs == 0 || srv->http_closed)) {
    begin_close(srv);
    return;
  }
  if (!srv->cancelled_runs && elapsed >= srv->cfg->shutdown_timeout_ms) {
    ag_log_warn(NULL, "shutdown grace period over: stopping %zu running session(s) at their last committed step", runs);
    srv->cancelled_runs = true;
    ag_runtime_shutdown(srv->runtime);
  }
  if (!srv->http_closed && elapsed >= srv->cfg->shutdown_timeout_ms + SHUTDOWN_HARD_EXTRA_MS) {
    ag_log_error(NULL, "shutdown: %zu request(s) still open after the grace period; closing their connections", reqs);
    close_http_server(srv);
  }
  if (elapsed >= srv->cfg->shutdown_timeout_ms + SHUTDOWN_GIVE_UP_MS) {
    /* Something (a stuck store write) keeps a run alive: do not hang the host's shutdown. */
    ag_log_error(NULL, "shutdown: %zu session(s) and %zu upstream call(s) still busy; exiting without cleanup", runs,
                 calls);
    _exit(1);
  }
}

static void on_signal(uv_signal_t *h, int signum) {
  ag_server *srv = h->data;
  if (srv->shutdown_started) {
    ag_log_warn(NULL, "second signal: stopping now");
    ag_runtime_shutdown(srv->runtime);
    return;
  }
  ag_log_info(NULL, "signal %d: shutting down (grace period %llu ms)", signum,
              (unsigned long long)srv->cfg->shutdown_timeout_ms);
  srv->shutdown_started = ag_now_ms();
  ag_runtime_stop_wakeups(srv->runtime); /* no new escalations while draining */
  srv->api.draining = true;
  srv->api.ready = false;
  ag_http_server_stop_accepting(srv->http);
  uv_timer_start(&srv->shutdown_timer, on_shutdown_tick, 0, SHUTDOWN_POLL_MS);
}

/* One agentd per SQLite database: a second process would resume the first one's running sessions
 * and run them twice. (PostgreSQL deployments coordinate through the bus, a later issue.) */
static int lock_database(const char *db, int *fd_out) {
  *fd_out = -1;
  if (strncmp(db, "postgres://", 11) == 0 || strncmp(db, "postgresql://", 13) == 0 || strcmp(db, ":memory:") == 0)
    return 0;
  const char *path = strncmp(db, "sqlite://", 9) == 0 ? db + 9 : strncmp(db, "sqlite:", 7) == 0 ? db + 7 : db;
  char lock[4096];
  if (snprintf(lock, sizeof lock, "%s.lock", path) >= (int)sizeof lock) return AG_EINVAL;
  int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return 0; /* the directory may not exist yet: the store creates it and reports errors */
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    close(fd);
    if (e == EWOULDBLOCK) {
      ag_log_error(NULL, "another agentd is already using the database %s (lock %s)", path, lock);
      return AG_EEXIST;
    }
    return 0;
  }
  *fd_out = fd;
  return 0;
}

static void store_options(const ag_config *cfg, ag_store_options *so) {
  *so = (ag_store_options){
      .url = cfg->db,
      .synchronous_full = cfg->sqlite_sync_full,
      .busy_timeout_ms = 5000,
      .migrate = cfg->migrate_on_start ? AG_MIGRATE_AUTO : AG_MIGRATE_REFUSE,
      .pool_size = cfg->db_pool_size,
      .connect_timeout_ms = cfg->db_connect_timeout_ms > INT32_MAX ? INT32_MAX : (int)cfg->db_connect_timeout_ms,
      .query_timeout_ms = cfg->db_query_timeout_ms > INT32_MAX ? INT32_MAX : (int)cfg->db_query_timeout_ms,
  };
}

static int open_store(const ag_config *cfg, uv_loop_t *loop, ag_store **out) {
  char err[512] = "";
  ag_store_options so;
  store_options(cfg, &so);
  int rc = ag_store_open(loop, &so, out, err, sizeof err);
  if (rc < 0) ag_log_error(NULL, "cannot open the database %s: %s", cfg->db, err[0] ? err : ag_strerror(rc));
  return rc;
}

int ag_server_migrate(const ag_config *cfg, bool apply) {
  ag_store_options so;
  store_options(cfg, &so);
  char err[512] = "";
  ag_migration_status *st = NULL;
  size_t n = 0;
  int rc = ag_store_migrate(&so, apply, &st, &n, err, sizeof err);
  if (rc < 0) {
    fprintf(stderr, "agentd migrate: %s: %s\n", cfg->db, err[0] ? err : ag_strerror(rc));
    return 1;
  }
  printf("database %s\n", cfg->db);
  for (size_t i = 0; i < n; i++) {
    printf("  %04d  %-24s  %s  %s", st[i].version, st[i].name, st[i].checksum, st[i].applied ? "applied" : "pending");
    if (st[i].applied) {
      time_t t = (time_t)(st[i].applied_at / 1000);
      struct tm tm;
      char when[32] = "";
      if (gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
      printf(" %s", when);
    }
    printf("\n");
  }
  printf(rc == 0 ? "up to date\n" : "%d pending\n", rc);
  free(st);
  return 0;
}

/* ---- tools ------------------------------------------------------------------------------- */

typedef struct catalog_load {
  ag_server *srv;
  bool done;
  int err;
  size_t offset, loaded, refused;
} catalog_load;

static int load_catalog_page(catalog_load *cl);

static void on_catalog_page(int err, ag_tool_rec *recs, size_t n, void *ud) {
  catalog_load *cl = ud;
  for (size_t i = 0; err == 0 && i < n; i++) {
    char why[512] = "";
    if (ag_tool_registry_put(cl->srv->tools, &recs[i], why, sizeof why) < 0) {
      /* One bad row must not keep the server from starting: it is left out, loudly. */
      ag_log_error(NULL, "tools: %s (id %lld) is not loaded: %s", recs[i].name, (long long)recs[i].id, why);
      cl->refused++;
    } else {
      cl->loaded++;
    }
  }
  ag_tool_recs_free(recs, n);
  if (err < 0 || n < AG_CATALOG_PAGE_MAX) {
    cl->err = err;
    cl->done = true;
    return;
  }
  cl->offset += n;
  if ((cl->err = load_catalog_page(cl)) < 0) cl->done = true;
}

static int load_catalog_page(catalog_load *cl) {
  ag_tool_filter f = {.active = AG_TOOLS_ACTIVE, .limit = AG_CATALOG_PAGE_MAX, .offset = cl->offset};
  return ag_store_tool_list(cl->srv->store, &f, on_catalog_page, cl);
}

/* The tool registry with its executors, and every active catalog tool in it, before the server
 * takes requests (start-up is synchronous by design). */
static int open_tools(ag_server *srv) {
  const ag_config *cfg = srv->cfg;
  srv->tool_env = (ag_tool_env){.loop = srv->loop,
                                .http = srv->http_client,
                                .timeout_ms = cfg->tool_timeout_ms,
                                .max_output = cfg->tool_max_output_bytes,
                                .allow_private_hosts = cfg->allow_private_hosts,
                                .search_kind = cfg->search_kind,
                                .search_url = cfg->search_url,
                                .search_api_key = cfg->search_api_key};
  int rc = ag_tool_registry_new(&srv->tool_env, &srv->tools);
  if (rc < 0) {
    ag_log_error(NULL, "cannot create the tool registry: %s", ag_strerror(rc));
    return rc;
  }
  /* The executors; one that cannot start here (a missing /proc, say) leaves its kind out, and
   * tools of that kind are refused with a clear message, but the server still runs. */
  static const struct {
    const char *kind;
    int (*make)(const ag_tool_env *env, ag_executor **out);
  } kinds[] = {
      {"subprocess", ag_exec_subprocess_new}, {"http", ag_exec_http_new},
      {"builtin-web", ag_exec_web_new},       {"mcp", ag_exec_mcp_new},
      {"script", ag_exec_script_new},         {"agent", ag_exec_agent_new},
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(kinds); i++) {
    ag_executor *ex = NULL;
    int erc = kinds[i].make(&srv->tool_env, &ex);
    if (erc == 0) erc = ag_tool_registry_add_executor(srv->tools, ex);
    if (erc < 0) ag_log_warn(NULL, "tools: the %s executor is not available: %s", kinds[i].kind, ag_strerror(erc));
  }
  size_t nweb;
  const ag_web_tool_def *web = ag_web_tools(&nweb);
  for (size_t i = 0; ag_tool_registry_executor(srv->tools, "builtin-web") && i < nweb; i++) {
    rc = ag_tool_registry_add_builtin(srv->tools, web[i].name, web[i].description, web[i].parameters, "builtin-web",
                                      web[i].executor_config, web[i].is_search, web[i].idempotent);
    if (rc < 0) {
      ag_log_error(NULL, "tools: cannot add the built-in %s: %s", web[i].name, ag_strerror(rc));
      return rc;
    }
  }
  char err[512] = "";
  if ((rc = ag_builtin_rows_seed(srv->loop, srv->store, err, sizeof err)) < 0) {
    ag_log_error(NULL, "%s", err);
    return rc;
  }
  catalog_load cl = {.srv = srv};
  if ((rc = load_catalog_page(&cl)) < 0) {
    ag_log_error(NULL, "cannot read the tool catalog: %s", ag_strerror(rc));
    return rc;
  }
  while (!cl.done)
    uv_run(srv->loop, UV_RUN_ONCE);
  if (cl.err < 0) {
    ag_log_error(NULL, "cannot read the tool catalog: %s", ag_strerror(cl.err));
    return cl.err;
  }
  ag_log_info(NULL, "tools: %zu catalog tool(s) loaded%s", cl.loaded, cl.refused ? " (some refused, see above)" : "");
  return 0;
}

static void set_flag(void *ud) { *(bool *)ud = true; }

static void print_line(const char *line, void *ud) {
  (void)ud;
  printf("%s\n", line);
}

int ag_server_templates(const ag_config *cfg, const char *action, const char *const *paths, size_t n_paths) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return 1;
  ag_store *st = NULL;
  int rc = open_store(cfg, &loop, &st);
  char err[1024] = "";
  if (rc == 0) rc = ag_builtin_rows_seed(&loop, st, err, sizeof err);
  if (rc == 0 && strcmp(action, "export") == 0) {
    rc = ag_templates_export(&loop, st, stdout, err, sizeof err);
  } else if (rc == 0) {
    ag_import_report rep = {0};
    rc = ag_templates_import(&loop, st, paths, n_paths, true, &rep, print_line, NULL, err, sizeof err);
    if (rc == 0)
      printf("%zu created, %zu updated, %zu unchanged, %zu skipped\n", rep.created, rep.updated, rep.unchanged,
             rep.skipped);
  }
  if (rc < 0) fprintf(stderr, "agentd templates %s: %s\n", action, err[0] ? err : ag_strerror(rc));
  if (st) ag_store_close(st, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return rc < 0 ? 1 : 0;
}

static void on_templates_loaded(int err, size_t n, void *ud) {
  int *out = ud;
  *out = err < 0 ? err : (int)n;
}

/* A tool's catalog row changed (AG_TOPIC_TOOLS, maybe in another agentd): its registry entry is
 * read again from the store. */
typedef struct tool_reload {
  ag_server *srv;
  char *name;
} tool_reload;

static void on_tool_reloaded(int err, ag_tool_rec *t, void *ud) {
  tool_reload *r = ud;
  if (r->srv->tools) {
    char why[512] = "";
    if (err == 0 && ag_tool_registry_put(r->srv->tools, t, why, sizeof why) < 0)
      ag_log_error(NULL, "tools: %s changed but does not load: %s", t->name, why);
    else if (err == AG_ENOTFOUND)
      ag_tool_registry_remove(r->srv->tools, r->name);
    else if (err < 0)
      ag_log_warn(NULL, "tools: cannot reload %s: %s", r->name, ag_strerror(err));
  }
  ag_tool_rec_free(t);
  free(r->name);
  free(r);
}

static void on_tool_notice(const char *topic, const char *msg, size_t len, void *ud) {
  (void)topic;
  (void)len;
  ag_server *srv = ud;
  tool_reload *r = calloc(1, sizeof *r);
  if (r) *r = (tool_reload){srv, strdup(msg)};
  if (!r || !r->name || ag_store_tool_get_by_name(srv->store, msg, on_tool_reloaded, r) < 0) {
    if (r) free(r->name);
    free(r);
    ag_log_warn(NULL, "tools: cannot reload %s", msg);
  }
}

static void log_import(const char *line, void *ud) {
  (void)ud;
  if (strncmp(line, "skipped ", 8) == 0) return; /* every start after the first */
  ag_log_info(NULL, "templates: %s", line);
}

/* The bus and the template cache: the files of templates/ whose names the database has never
 * seen are imported first (the first start, and templates added to the folder later), then every
 * active version is loaded. */
static int open_templates(ag_server *srv) {
  const ag_config *cfg = srv->cfg;
  char err[1024] = "";
  ag_import_report rep = {0};
  int rc = ag_bus_local_new(srv->loop, &srv->bus);
  if (rc == 0 && cfg->templates_dir && *cfg->templates_dir) {
    struct stat sb;
    if (stat(cfg->templates_dir, &sb) == 0) {
      const char *dirs[1] = {cfg->templates_dir};
      rc = ag_templates_import(srv->loop, srv->store, dirs, 1, false, &rep, log_import, NULL, err, sizeof err);
      if (rc < 0) {
        ag_log_error(NULL, "cannot import the templates of %s: %s", cfg->templates_dir, err);
        return rc;
      }
      if (rep.created) ag_log_info(NULL, "templates: %zu imported from %s", rep.created, cfg->templates_dir);
    }
  }
  if (rc == 0) rc = ag_bus_subscribe(srv->bus, AG_TOPIC_TOOLS, on_tool_notice, srv, NULL);
  if (rc == 0) rc = ag_template_cache_new(srv->store, srv->bus, &srv->templates);
  int loaded = INT32_MIN;
  if (rc == 0) rc = ag_template_cache_load(srv->templates, on_templates_loaded, &loaded);
  while (rc == 0 && loaded == INT32_MIN)
    uv_run(srv->loop, UV_RUN_ONCE);
  if (rc == 0 && loaded < 0) rc = loaded;
  if (rc < 0) {
    ag_log_error(NULL, "cannot load the templates: %s", ag_strerror(rc));
    return rc;
  }
  if (loaded == 0) {
    ag_log_error(NULL, "no active templates (import some from %s, or with agentd templates import): nothing to serve",
                 cfg->templates_dir ? cfg->templates_dir : "templates/");
    return AG_EINVAL;
  }
  return 0;
}

int ag_server_prune(const ag_config *cfg, uint64_t older_than_s) {
  if (older_than_s == 0) older_than_s = cfg->retention_max_age_s;
  if (older_than_s == 0) {
    fprintf(stderr, "agentd prune: say how old: --older-than SECONDS, or set AGENTD_RETENTION_MAX_AGE_S\n");
    return 2;
  }
  if (older_than_s > INT64_MAX / 1000) older_than_s = INT64_MAX / 1000;
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return 1;
  ag_store *st = NULL;
  int rc = open_store(cfg, &loop, &st);
  size_t n = 0;
  if (rc == 0) {
    rc = ag_retention_prune_now(&loop, st, ag_unix_ms() - (int64_t)older_than_s * 1000, &n);
    if (rc < 0)
      fprintf(stderr, "agentd prune: %s\n", ag_strerror(rc));
    else
      printf("pruned %zu session(s) not updated for %llu s\n", n, (unsigned long long)older_than_s);
    ag_store_close(st, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_loop_close(&loop);
  return rc < 0 ? 1 : 0;
}

int ag_server_run(const ag_config *cfg) {
  ag_server srv;
  memset(&srv, 0, sizeof srv);
  srv.cfg = cfg;
  srv.lock_fd = -1;
  srv.loop = uv_default_loop();
  signal(SIGPIPE, SIG_IGN);
  int rc;
  uint64_t t0 = ag_now_ms();

  if ((rc = open_store(cfg, srv.loop, &srv.store)) < 0) goto fail;
  if ((rc = lock_database(cfg->db, &srv.lock_fd)) < 0) goto fail;
  if (cfg->retention_max_age_s > 0) {
    if ((rc = ag_retention_start(srv.loop, srv.store, cfg->retention_max_age_s, cfg->retention_interval_s,
                                 &srv.retention)) < 0) {
      ag_log_error(NULL, "cannot start the retention job: %s", ag_strerror(rc));
      goto fail;
    }
    ag_log_info(NULL, "retention: sessions idle for more than %llu s are pruned every %llu s",
                (unsigned long long)cfg->retention_max_age_s, (unsigned long long)cfg->retention_interval_s);
  }
  if ((rc = ag_http_client_new(srv.loop, &srv.http_client)) < 0) goto fail;

  bool offline = !cfg->openai_base_url || !*cfg->openai_base_url;
  if (offline) {
    rc = ag_scripted_provider_new(srv.loop, &srv.provider);
    ag_log_warn(NULL,
                "OPENAI_BASE_URL is not set: using the OFFLINE SCRIPTED DEMO MODEL (%s). Its answers are "
                "scripted, not generated by an LLM.",
                AG_SCRIPTED_MODEL_NAME);
  } else {
    ag_openai_config oc = {0};
    oc.base_url = cfg->openai_base_url;
    oc.api_key = cfg->openai_api_key;
    oc.connect_timeout_ms = cfg->upstream_connect_timeout_ms;
    oc.first_byte_timeout_ms = cfg->upstream_first_byte_timeout_ms;
    oc.idle_timeout_ms = cfg->upstream_idle_timeout_ms;
    oc.total_timeout_ms = cfg->upstream_total_timeout_ms;
    oc.max_retries = cfg->upstream_max_retries;
    oc.retry_base_ms = cfg->upstream_retry_base_ms;
    rc = ag_openai_provider_new(srv.loop, srv.http_client, &oc, &srv.provider);
    ag_log_info(NULL, "upstream: %s, model %s", cfg->openai_base_url, cfg->model);
  }
  if (rc < 0) goto fail;

  if ((rc = open_tools(&srv)) < 0) goto fail;
  if ((rc = open_templates(&srv)) < 0) goto fail;
  if (!(srv.search = ag_tool_index_new(srv.tools, NULL))) {
    rc = AG_ENOMEM;
    goto fail;
  }
  ag_pool_config pc = {.loop = srv.loop,
                       .store = srv.store,
                       .max_instances = cfg->pool_max_instances,
                       .max_per_template = cfg->pool_max_per_template,
                       .queue_max = cfg->pool_queue_max,
                       .queue_timeout_ms = cfg->pool_queue_timeout_ms,
                       .idle_timeout_ms = cfg->pool_idle_timeout_s * 1000,
                       .heartbeat_ms = cfg->pool_heartbeat_s * 1000};
  ag_runtime_pool_hooks(srv.tools, &pc.hooks);
  if ((rc = ag_pool_new(&pc, &srv.pool)) < 0) {
    ag_log_error(NULL, "cannot start the instance pool: %s", ag_strerror(rc));
    goto fail;
  }

  ag_runtime_config rcfg = {.loop = srv.loop,
                            .provider = srv.provider,
                            .store = srv.store,
                            .templates = srv.templates,
                            .pool = srv.pool,
                            .tools = srv.tools,
                            .search = srv.search,
                            .default_model = offline ? AG_SCRIPTED_MODEL_NAME : cfg->model,
                            .stream_upstream = true};
  if ((rc = ag_runtime_new(&rcfg, &srv.runtime)) < 0) goto fail;
  /* Agents as tools run their children on this runtime. */
  ag_executor *agent_ex = ag_tool_registry_executor(srv.tools, "agent");
  if (agent_ex) ag_exec_agent_bind(agent_ex, srv.runtime, srv.templates);

  srv.api.runtime = srv.runtime;
  srv.api.store = srv.store;
  srv.api.templates = srv.templates;
  srv.api.pool = srv.pool;
  srv.api.bus = srv.bus;
  srv.api.tools = srv.tools;
  srv.api.upstream_model = offline ? AG_SCRIPTED_MODEL_NAME : cfg->model;
  srv.api.offline = offline;
  srv.api.max_stream_buffer = 8u << 20;

  /* Sessions a crash or a stop left running go on from their last committed step. */
  if ((rc = ag_runtime_recover(srv.runtime, 100000, on_recovered, &srv)) < 0) {
    ag_log_error(NULL, "start-up recovery failed: %s", ag_strerror(rc));
    goto fail;
  }

  /* Waits past their deadline (a workflow's human step) escalate. */
  if ((rc = ag_runtime_start_wakeups(srv.runtime, cfg->wake_interval_ms ? cfg->wake_interval_ms : 1000)) < 0) {
    ag_log_error(NULL, "cannot start the escalation sweep: %s", ag_strerror(rc));
    goto fail;
  }

  ag_http_server_config hc;
  ag_http_server_config_default(&hc);
  hc.host = cfg->listen_host;
  hc.port = cfg->listen_port;
  hc.max_body_bytes = cfg->max_body_bytes;
  hc.max_header_bytes = cfg->max_header_bytes;
  hc.request_timeout_ms = cfg->request_timeout_ms;
  hc.idle_timeout_ms = cfg->idle_timeout_ms;
  if ((rc = ag_http_server_new(srv.loop, &hc, ag_api_handle, &srv.api, &srv.http)) < 0) {
    ag_log_error(NULL, "cannot listen on %s:%d: %s", cfg->listen_host, cfg->listen_port, ag_strerror(rc));
    goto fail;
  }

  uv_signal_init(srv.loop, &srv.sigterm);
  uv_signal_init(srv.loop, &srv.sigint);
  uv_timer_init(srv.loop, &srv.shutdown_timer);
  uv_timer_init(srv.loop, &srv.recovery_timer);
  srv.sigterm.data = srv.sigint.data = srv.shutdown_timer.data = srv.recovery_timer.data = &srv;
  if (cfg->recovery_interval_s > 0 && cfg->recovery_interval_s < UINT64_MAX / 1000) {
    uint64_t every = cfg->recovery_interval_s * 1000;
    uv_timer_start(&srv.recovery_timer, on_recovery_tick, every, every);
  }
  uv_unref((uv_handle_t *)&srv.recovery_timer);
  uv_signal_start(&srv.sigterm, on_signal, SIGTERM);
  uv_signal_start(&srv.sigint, on_signal, SIGINT);

  srv.api.ready = true;
  ag_log_info(NULL, "agentd listening on http://%s:%d (%zu templates, database %s, ready in %llu ms)", cfg->listen_host,
              ag_http_server_port(srv.http), ag_template_cache_count(srv.templates), cfg->db,
              (unsigned long long)(ag_now_ms() - t0));

  uv_run(srv.loop, UV_RUN_DEFAULT);

  ag_http_server_free(srv.http);
  ag_runtime_free(srv.runtime);
  ag_tool_index_free(srv.search);
  ag_llm_provider_free(srv.provider);
  rc = uv_loop_close(srv.loop);
  if (rc != 0) ag_log_warn(NULL, "event loop closed with handles still open");
  if (srv.lock_fd >= 0) close(srv.lock_fd);
  ag_log_info(NULL, "agentd stopped");
  return 0;

fail:
  /* Start-up failed: release what was built, in reverse. */
  if (srv.runtime) {
    ag_runtime_shutdown(srv.runtime);
    while (ag_runtime_active(srv.runtime))
      uv_run(srv.loop, UV_RUN_ONCE);
    ag_runtime_free(srv.runtime);
  }
  ag_tool_index_free(srv.search);
  ag_llm_provider_free(srv.provider);
  if (srv.tools) ag_tool_registry_close(srv.tools, NULL, NULL);
  if (srv.http_client) ag_http_client_close(srv.http_client, NULL, NULL);
  if (srv.retention) ag_retention_stop(srv.retention, NULL, NULL);
  if (srv.pool) {
    bool closed = false;
    ag_pool_close(srv.pool, set_flag, &closed);
    while (!closed)
      uv_run(srv.loop, UV_RUN_ONCE);
  }
  ag_template_cache_free(srv.templates);
  if (srv.bus) ag_bus_close(srv.bus, NULL, NULL);
  if (srv.store) ag_store_close(srv.store, NULL, NULL);
  uv_run(srv.loop, UV_RUN_DEFAULT);
  uv_loop_close(srv.loop);
  if (srv.lock_fd >= 0) close(srv.lock_fd);
  return 1;
}
