/* Configuration loading (see config.h). */
#include "app/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"

void ag_config_defaults(ag_config *c) {
  memset(c, 0, sizeof *c);
  c->listen_host = strdup("127.0.0.1");
  c->listen_port = 8080;
  c->db = strdup("var/agentd.db");
  c->templates_dir = strdup("templates");
  c->model = strdup("gpt-4o-mini");
  c->log_level = AG_LOG_INFO;
  c->upstream_connect_timeout_ms = 10000;
  c->upstream_first_byte_timeout_ms = 120000;
  c->upstream_idle_timeout_ms = 120000;
  c->upstream_total_timeout_ms = 600000;
  c->upstream_max_retries = 3;
  c->upstream_retry_base_ms = 500;
  c->max_body_bytes = 4u << 20;
  c->max_header_bytes = 16u << 10;
  c->request_timeout_ms = 30000;
  c->idle_timeout_ms = 60000;
  c->shutdown_timeout_ms = 5000;
  c->migrate_on_start = true;
  c->db_pool_size = 4;
  c->db_connect_timeout_ms = 5000;
  c->db_query_timeout_ms = 30000;
  c->retention_max_age_s = 0;
  c->retention_interval_s = 3600;
  c->recovery_interval_s = 30;
  c->wake_interval_ms = 1000;
  c->tool_timeout_ms = 30000;
  c->tool_max_output_bytes = 256u << 10;
  c->pool_max_instances = 64;
  c->pool_max_per_template = 16;
  c->pool_queue_max = 256;
  c->pool_queue_timeout_ms = 30000;
  c->pool_idle_timeout_s = 300;
  c->pool_heartbeat_s = 10;
}

void ag_config_deinit(ag_config *c) {
  free(c->listen_host);
  free(c->db);
  free(c->templates_dir);
  free(c->openai_base_url);
  free(c->openai_api_key);
  free(c->model);
  free(c->search_kind);
  free(c->search_url);
  free(c->search_api_key);
  memset(c, 0, sizeof *c);
}

int ag_config_set_listen(ag_config *c, const char *hostport) {
  const char *colon = strrchr(hostport, ':');
  if (!colon || colon == hostport) return AG_EINVAL;
  char *end;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (errno || *end || port < 0 || port > 65535 || end == colon + 1) return AG_EINVAL;
  char *host = ag_strndup(hostport, (size_t)(colon - hostport));
  if (!host) return AG_ENOMEM;
  /* Accept "[::1]:8080". */
  if (host[0] == '[' && host[strlen(host) - 1] == ']') {
    memmove(host, host + 1, strlen(host));
    host[strlen(host) - 1] = '\0';
  }
  free(c->listen_host);
  c->listen_host = host;
  c->listen_port = (int)port;
  return 0;
}

static int set_string(char **dst, const char *v) {
  char *p = strdup(v);
  if (!p) return AG_ENOMEM;
  free(*dst);
  *dst = p;
  return 0;
}

static int parse_u64(const char *v, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (errno || *end || end == v || v[0] == '-') return AG_EINVAL;
  *out = n;
  return 0;
}

/* One setting by its environment name; the file uses the same names in lowercase without the
 * AGENTD_ prefix (see ag_config_help). */
typedef struct setting {
  const char *env;
  const char *key;
  int type; /* 0 string, 1 u64, 2 int, 3 size, 4 log level, 5 listen, 6 bool */
  size_t off;
} setting;

#define OFF(f) offsetof(ag_config, f)
static const setting settings[] = {
    {"AGENTD_LISTEN", "listen", 5, 0},
    {"AGENTD_DB", "db", 0, OFF(db)},
    {"AGENTD_TEMPLATES", "templates", 0, OFF(templates_dir)},
    {"OPENAI_BASE_URL", "openai_base_url", 0, OFF(openai_base_url)},
    {"OPENAI_API_KEY", "openai_api_key", 0, OFF(openai_api_key)},
    {"AGENTD_MODEL", "model", 0, OFF(model)},
    {"AGENTD_LOG_LEVEL", "log_level", 4, OFF(log_level)},
    {"AGENTD_UPSTREAM_CONNECT_TIMEOUT_MS", "upstream_connect_timeout_ms", 1, OFF(upstream_connect_timeout_ms)},
    {"AGENTD_UPSTREAM_FIRST_BYTE_TIMEOUT_MS", "upstream_first_byte_timeout_ms", 1, OFF(upstream_first_byte_timeout_ms)},
    {"AGENTD_UPSTREAM_IDLE_TIMEOUT_MS", "upstream_idle_timeout_ms", 1, OFF(upstream_idle_timeout_ms)},
    {"AGENTD_UPSTREAM_TOTAL_TIMEOUT_MS", "upstream_total_timeout_ms", 1, OFF(upstream_total_timeout_ms)},
    {"AGENTD_UPSTREAM_MAX_RETRIES", "upstream_max_retries", 2, OFF(upstream_max_retries)},
    {"AGENTD_UPSTREAM_RETRY_BASE_MS", "upstream_retry_base_ms", 1, OFF(upstream_retry_base_ms)},
    {"AGENTD_MAX_BODY_BYTES", "max_body_bytes", 3, OFF(max_body_bytes)},
    {"AGENTD_MAX_HEADER_BYTES", "max_header_bytes", 3, OFF(max_header_bytes)},
    {"AGENTD_REQUEST_TIMEOUT_MS", "request_timeout_ms", 1, OFF(request_timeout_ms)},
    {"AGENTD_IDLE_TIMEOUT_MS", "idle_timeout_ms", 1, OFF(idle_timeout_ms)},
    {"AGENTD_SHUTDOWN_TIMEOUT_MS", "shutdown_timeout_ms", 1, OFF(shutdown_timeout_ms)},
    {"AGENTD_SQLITE_SYNC_FULL", "sqlite_sync_full", 6, OFF(sqlite_sync_full)},
    {"AGENTD_MIGRATE_ON_START", "migrate_on_start", 6, OFF(migrate_on_start)},
    {"AGENTD_DB_POOL_SIZE", "db_pool_size", 2, OFF(db_pool_size)},
    {"AGENTD_DB_CONNECT_TIMEOUT_MS", "db_connect_timeout_ms", 1, OFF(db_connect_timeout_ms)},
    {"AGENTD_DB_QUERY_TIMEOUT_MS", "db_query_timeout_ms", 1, OFF(db_query_timeout_ms)},
    {"AGENTD_RETENTION_MAX_AGE_S", "retention_max_age_s", 1, OFF(retention_max_age_s)},
    {"AGENTD_RETENTION_INTERVAL_S", "retention_interval_s", 1, OFF(retention_interval_s)},
    {"AGENTD_RECOVERY_INTERVAL_S", "recovery_interval_s", 1, OFF(recovery_interval_s)},
    {"AGENTD_WAKE_INTERVAL_MS", "wake_interval_ms", 1, OFF(wake_interval_ms)},
    {"AGENTD_TOOL_TIMEOUT_MS", "tool_timeout_ms", 1, OFF(tool_timeout_ms)},
    {"AGENTD_TOOL_MAX_OUTPUT_BYTES", "tool_max_output_bytes", 3, OFF(tool_max_output_bytes)},
    {"AGENTD_ALLOW_PRIVATE_HOSTS", "allow_private_hosts", 6, OFF(allow_private_hosts)},
    {"AGENTD_SEARCH_KIND", "search_kind", 0, OFF(search_kind)},
    {"AGENTD_SEARCH_URL", "search_url", 0, OFF(search_url)},
    {"AGENTD_SEARCH_API_KEY", "search_api_key", 0, OFF(search_api_key)},
    {"AGENTD_POOL_MAX_INSTANCES", "pool_max_instances", 3, OFF(pool_max_instances)},
    {"AGENTD_POOL_MAX_PER_TEMPLATE", "pool_max_per_template", 3, OFF(pool_max_per_template)},
    {"AGENTD_POOL_QUEUE_MAX", "pool_queue_max", 3, OFF(pool_queue_max)},
    {"AGENTD_POOL_QUEUE_TIMEOUT_MS", "pool_queue_timeout_ms", 1, OFF(pool_queue_timeout_ms)},
    {"AGENTD_POOL_IDLE_TIMEOUT_S", "pool_idle_timeout_s", 1, OFF(pool_idle_timeout_s)},
    {"AGENTD_POOL_HEARTBEAT_S", "pool_heartbeat_s", 1, OFF(pool_heartbeat_s)},
};

static int apply(ag_config *c, const setting *s, const char *v, char *err, size_t errlen) {
  char *base = (char *)c;
  int rc = 0;
  uint64_t u = 0;
  switch (s->type) {
  case 0: rc = set_string((char **)(base + s->off), v); break;
  case 1:
    rc = parse_u64(v, &u);
    if (rc == 0) *(uint64_t *)(base + s->off) = u;
    break;
  case 2:
    rc = parse_u64(v, &u);
    if (rc == 0 && u > 1000) rc = AG_EINVAL;
    if (rc == 0) *(int *)(base + s->off) = (int)u;
    break;
  case 3:
    rc = parse_u64(v, &u);
    if (rc == 0 && (u == 0 || u > ((uint64_t)1 << 32))) rc = AG_EINVAL;
    if (rc == 0) *(size_t *)(base + s->off) = (size_t)u;
    break;
  case 4: {
    int lvl = ag_log_parse_level(v);
    if (lvl < 0)
      rc = AG_EINVAL;
    else
      *(int *)(base + s->off) = lvl;
    break;
  }
  case 5: rc = ag_config_set_listen(c, v); break;
  case 6:
    if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)
      *(bool *)(base + s->off) = true;
    else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0)
      *(bool *)(base + s->off) = false;
    else
      rc = AG_EINVAL;
    break;
  }
  if (rc < 0) snprintf(err, errlen, "invalid value for %s: '%s'", s->env, v);
  return rc;
}

int ag_config_apply_env(ag_config *c, char *err, size_t errlen) {
  for (size_t i = 0; i < AG_ARRAY_LEN(settings); i++) {
    const char *v = getenv(settings[i].env);
    if (!v) continue;
    int rc = apply(c, &settings[i], v, err, errlen);
    if (rc < 0) return rc;
  }
  return 0;
}

int ag_config_load(ag_config *c, const char *path, char *err, size_t errlen) {
  if (!path) return ag_config_apply_env(c, err, errlen);
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "cannot open config file %s: %s", path, strerror(errno));
    return AG_EIO;
  }
  ag_buf b;
  ag_buf_init(&b, 1u << 20);
  char chunk[4096];
  size_t n;
  int rc = 0;
  while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
    rc = ag_buf_append(&b, chunk, n);
  fclose(f);
  if (rc < 0) {
    snprintf(err, errlen, "config file %s is too large (1 MiB at most)", path);
    ag_buf_deinit(&b);
    return rc;
  }
  char jerr[160];
  ag_json *root = ag_json_parse(ag_buf_cstr(&b), b.len, jerr, sizeof jerr);
  ag_buf_deinit(&b);
  if (!ag_json_is(root, AG_JSON_OBJECT)) {
    snprintf(err, errlen, "config file %s: %s", path, root ? "must hold a JSON object" : jerr);
    ag_json_free(root);
    return AG_EINVAL;
  }
  for (void *it = ag_json_iter(root); rc == 0 && it; it = ag_json_iter_next(root, it)) {
    const char *key = ag_json_iter_key(it);
    ag_json *v = ag_json_iter_value(it);
    const setting *s = NULL;
    for (size_t i = 0; i < AG_ARRAY_LEN(settings); i++)
      if (strcmp(settings[i].key, key) == 0) s = &settings[i];
    if (!s) {
      snprintf(err, errlen, "config file %s: unknown setting '%s'", path, key);
      rc = AG_EINVAL;
      break;
    }
    char num[32];
    const char *text = ag_json_str(v);
    if (!text && ag_json_is(v, AG_JSON_INT)) {
      snprintf(num, sizeof num, "%lld", ag_json_int(v));
      text = num;
    } else if (!text && ag_json_is(v, AG_JSON_BOOL)) {
      text = ag_json_bool(v) ? "true" : "false";
    }
    if (!text) {
      snprintf(err, errlen, "config file %s: '%s' must be a string or a number", path, key);
      rc = AG_EINVAL;
      break;
    }
    rc = apply(c, s, text, err, errlen);
  }
  ag_json_free(root);
  if (rc < 0) return rc;
  return ag_config_apply_env(c, err, errlen);
}

const char *ag_config_help(void) {
  return "Settings (environment variable / config-file key, default):\n"
         "  AGENTD_LISTEN / listen                    host:port to serve on (127.0.0.1:8080)\n"
         "  AGENTD_DB / db                            SQLite path, sqlite://path or postgres://... (var/agentd.db)\n"
         "  AGENTD_TEMPLATES / templates              folder of agent template JSON files (templates)\n"
         "  OPENAI_BASE_URL / openai_base_url         upstream OpenAI-compatible API, e.g. https://api.openai.com/v1;\n"
         "                                            unset: the offline scripted demo model (not an LLM)\n"
         "  OPENAI_API_KEY / openai_api_key           upstream API key (never logged)\n"
         "  AGENTD_MODEL / model                      upstream model name (gpt-4o-mini)\n"
         "  AGENTD_LOG_LEVEL / log_level              error|warn|info|debug (info)\n"
         "  AGENTD_UPSTREAM_CONNECT_TIMEOUT_MS        upstream connect timeout (10000)\n"
         "  AGENTD_UPSTREAM_FIRST_BYTE_TIMEOUT_MS     wait for the first response byte (120000)\n"
         "  AGENTD_UPSTREAM_IDLE_TIMEOUT_MS           longest silence inside a stream (120000)\n"
         "  AGENTD_UPSTREAM_TOTAL_TIMEOUT_MS          whole upstream call (600000)\n"
         "  AGENTD_UPSTREAM_MAX_RETRIES               retries on 429/5xx/connect errors (3)\n"
         "  AGENTD_UPSTREAM_RETRY_BASE_MS             first backoff, doubled each retry, jittered (500)\n"
         "  AGENTD_MAX_BODY_BYTES                     largest request body (4194304)\n"
         "  AGENTD_MAX_HEADER_BYTES                   largest request head (16384)\n"
         "  AGENTD_REQUEST_TIMEOUT_MS                 time to send a whole request (30000)\n"
         "  AGENTD_IDLE_TIMEOUT_MS                    idle keep-alive connection timeout (60000)\n"
         "  AGENTD_SHUTDOWN_TIMEOUT_MS                grace period for running sessions on SIGTERM (5000)\n"
         "  AGENTD_SQLITE_SYNC_FULL                   1: synchronous=FULL instead of NORMAL (0)\n"
         "  AGENTD_MIGRATE_ON_START                   apply pending migrations at start; 0: refuse to start (1)\n"
         "  AGENTD_DB_POOL_SIZE                       PostgreSQL connections (4)\n"
         "  AGENTD_DB_CONNECT_TIMEOUT_MS              PostgreSQL connect timeout (5000)\n"
         "  AGENTD_DB_QUERY_TIMEOUT_MS                longest database operation (30000)\n"
         "  AGENTD_RETENTION_MAX_AGE_S                prune sessions not updated for this long; 0 keeps all (0)\n"
         "  AGENTD_RETENTION_INTERVAL_S               how often the server prunes (3600)\n"
         "  AGENTD_RECOVERY_INTERVAL_S                how often sessions left running by a database outage are\n"
         "                                            resumed; 0: only at start (30)\n"
         "  AGENTD_TOOL_TIMEOUT_MS                    default limit of one tool call (30000)\n"
         "  AGENTD_TOOL_MAX_OUTPUT_BYTES              default cap on a tool result (262144)\n"
         "  AGENTD_ALLOW_PRIVATE_HOSTS                1: http and web tools may reach loopback, private and\n"
         "                                            link-local addresses (off: refused, the SSRF guard) (0)\n"
         "  AGENTD_SEARCH_KIND / AGENTD_SEARCH_URL    web_search backend: tavily or searxng, and its endpoint\n"
         "  AGENTD_SEARCH_API_KEY                     web_search API key (Tavily; never logged)\n"
         "Config-file keys for the AGENTD_* settings are the lowercase names without the prefix.\n";
}
