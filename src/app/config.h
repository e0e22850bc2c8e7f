/* Configuration: built-in defaults, then a JSON config file, then environment variables, then
 * command-line flags, each overriding the one before. The environment names are a contract that
 * tests and operators rely on; `agentd serve --help` lists them all. */
#ifndef AG_APP_CONFIG_H
#define AG_APP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct ag_config {
  char *listen_host;
  int listen_port;
  char *db; /* SQLite path, sqlite://path or postgres://... */
  char *templates_dir;
  char *openai_base_url; /* NULL/empty: the offline scripted demo model */
  char *openai_api_key;
  char *model; /* upstream model name */
  int log_level;
  uint64_t upstream_connect_timeout_ms;
  uint64_t upstream_first_byte_timeout_ms;
  uint64_t upstream_idle_timeout_ms;
  uint64_t upstream_total_timeout_ms;
  int upstream_max_retries;
  uint64_t upstream_retry_base_ms;
  size_t max_body_bytes;
  size_t max_header_bytes;
  uint64_t request_timeout_ms;
  uint64_t idle_timeout_ms;
  uint64_t shutdown_timeout_ms;
  bool sqlite_sync_full;
  bool migrate_on_start; /* apply pending migrations at start (default); off: refuse to start */
  int db_pool_size;      /* PostgreSQL connections */
  uint64_t db_connect_timeout_ms;
  uint64_t db_query_timeout_ms;
  uint64_t retention_max_age_s;   /* prune sessions idle longer than this; 0 = keep forever */
  uint64_t retention_interval_s;  /* how often the server prunes */
  uint64_t recovery_interval_s;   /* how often orphaned running sessions are resumed; 0 = only at start */
  uint64_t wake_interval_ms;      /* how often waits past their deadline are escalated (workflows) */
  uint64_t tool_timeout_ms;       /* default per tool call */
  size_t tool_max_output_bytes;   /* default cap on a tool result */
  bool allow_private_hosts;       /* let http/web tools reach loopback/private addresses (tests) */
  size_t pool_max_instances;      /* agent instances at most, all templates */
  size_t pool_max_per_template;   /* per template unless its limits.max_instances says */
  size_t pool_queue_max;          /* sessions waiting for an instance at most (then 429) */
  uint64_t pool_queue_timeout_ms; /* longest wait for an instance (then 503) */
  uint64_t pool_idle_timeout_s;   /* idle instances stop after */
  uint64_t pool_heartbeat_s;      /* instance heartbeat period */
  char *search_kind;              /* web_search backend: "tavily" or "searxng" */
  char *search_url;
  char *search_api_key;
} ag_config;

void ag_config_defaults(ag_config *c);
void ag_config_deinit(ag_config *c);
/* Loads the file (if path is non-NULL) then applies the environment. err says what is wrong. */
AG_MUST_CHECK int ag_config_load(ag_config *c, const char *path, char *err, size_t errlen);
AG_MUST_CHECK int ag_config_apply_env(ag_config *c, char *err, size_t errlen);
/* Parses "host:port" into the config. */
AG_MUST_CHECK int ag_config_set_listen(ag_config *c, const char *hostport);
/* The help text for the options and environment variables. */
const char *ag_config_help(void);

#endif
