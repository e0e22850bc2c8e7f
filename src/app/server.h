/* The server: the one documented piece of process state. It owns the event loop and everything
 * hanging off it (HTTP server, upstream HTTP client, LLM provider, store, templates, runtime) and
 * runs them from start-up to a graceful shutdown. */
#ifndef AG_APP_SERVER_H
#define AG_APP_SERVER_H

#include "app/config.h"

/* Runs `agentd serve` until SIGTERM/SIGINT; returns the process exit code. */
int ag_server_run(const ag_config *cfg);
/* Runs `agentd migrate`: opens the database, applies migrations, reports, exits. */
int ag_server_migrate(const ag_config *cfg);

#endif
