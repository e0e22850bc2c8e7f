/* agentd: one binary serving LLM agents to any OpenAI-compatible client.
 * Subcommands: serve (default), migrate, prune, templates, version, help. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/config.h"
#include "app/server.h"
#include "base/log.h"
#include "search/eval.h"
#include "tools/exec_subprocess.h"

#define AGENTD_VERSION "0.1.0"

static void usage(FILE *out) {
  fprintf(out,
          "agentd %s: a self-hosted agent platform with an OpenAI-compatible API\n\n"
          "Usage: agentd [COMMAND] [OPTIONS]\n\n"
          "Commands:\n"
          "  serve      run the server (the default)\n"
          "  migrate    apply database migrations and exit; `migrate status` only reports\n"
          "  prune      delete sessions older than --older-than SECONDS (or AGENTD_RETENTION_MAX_AGE_S)\n"
          "  eval-tools rank a tool catalog's queries with the tool search (`eval-tools --help`)\n"
          "  templates  `templates import PATH...` adds or updates agent templates from template\n"
          "             documents (*.json) or sgr-agent-core configuration (*.yaml); `templates\n"
          "             export` prints every active template as a JSON array\n"
          "  version    print the version\n"
          "  help       this text; `agentd serve --help` lists every setting\n",
          AGENTD_VERSION);
}

static void serve_usage(FILE *out) {
  fprintf(out,
          "Usage: agentd serve|migrate [status]|prune [--config FILE] [--listen HOST:PORT] [--db URL]\n"
          "                    [--templates DIR] [--log-level LEVEL] [--older-than SECONDS (prune)]\n\n"
          "Options override environment variables, which override the config file (JSON, also\n"
          "AGENTD_CONFIG), which overrides the built-in defaults.\n\n%s",
          ag_config_help());
}

static int set_opt(char **dst, const char *v) {
  char *p = strdup(v);
  if (!p) return -1;
  free(*dst);
  *dst = p;
  return 0;
}

int main(int argc, char **argv) {
  /* agentd runs subprocess tools through itself (limits set before exec); not a command. */
  if (argc > 1 && strcmp(argv[1], AG_EXEC_SUBPROCESS_LAUNCHER) == 0)
    return ag_exec_subprocess_launcher_main(argc, argv);
  const char *cmd = "serve";
  int i = 1;
  if (argc > 1 && argv[1][0] != '-') cmd = argv[i++];
  if (strcmp(cmd, "help") == 0 || (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "eval-tools") == 0) return ag_search_eval_main(argc - 1, argv + 1);
  if (strcmp(cmd, "version") == 0 || (argc > 1 && strcmp(argv[1], "--version") == 0)) {
    printf("agentd %s\n", AGENTD_VERSION);
    return 0;
  }
  if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "migrate") != 0 && strcmp(cmd, "prune") != 0 &&
      strcmp(cmd, "templates") != 0) {
    fprintf(stderr, "agentd: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
  }

  bool migrate_apply = true;
  uint64_t older_than = 0;
  const char *tpl_action = NULL;
  const char *tpl_paths[64];
  size_t n_tpl_paths = 0;
  if (strcmp(cmd, "templates") == 0) {
    if (i >= argc || (strcmp(argv[i], "import") != 0 && strcmp(argv[i], "export") != 0)) {
      fprintf(stderr, "agentd templates: say import PATH... or export\n");
      return 2;
    }
    tpl_action = argv[i++];
    while (i < argc && argv[i][0] != '-' && n_tpl_paths < AG_ARRAY_LEN(tpl_paths))
      tpl_paths[n_tpl_paths++] = argv[i++];
    if (strcmp(tpl_action, "import") == 0 && n_tpl_paths == 0) {
      fprintf(stderr, "agentd templates import: give a folder or file to import\n");
      return 2;
    }
  }
  if (strcmp(cmd, "migrate") == 0 && i < argc && argv[i][0] != '-') {
    if (strcmp(argv[i], "status") == 0) {
      migrate_apply = false;
    } else if (strcmp(argv[i], "apply") != 0) {
      fprintf(stderr, "agentd migrate: unknown action '%s' (apply or status)\n", argv[i]);
      return 2;
    }
    i++;
  }

  const char *config_path = getenv("AGENTD_CONFIG");
  for (int k = i; k < argc; k++)
    if (strcmp(argv[k], "--config") == 0 && k + 1 < argc) config_path = argv[k + 1];

  ag_config cfg;
  ag_config_defaults(&cfg);
  char err[512] = "";
  if (ag_config_load(&cfg, config_path, err, sizeof err) < 0) {
    fprintf(stderr, "agentd: %s\n", err);
    ag_config_deinit(&cfg);
    return 2;
  }
  /* Every option takes a value: step over both. */
  for (; i < argc; i += 2) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int rc = 0;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      serve_usage(stdout);
      ag_config_deinit(&cfg);
      return 0;
    }
    if (!v) {
      rc = -1;
    } else if (strcmp(a, "--config") == 0) {
      /* handled above */
    } else if (strcmp(a, "--listen") == 0) {
      rc = ag_config_set_listen(&cfg, v);
    } else if (strcmp(a, "--db") == 0) {
      rc = set_opt(&cfg.db, v);
    } else if (strcmp(a, "--templates") == 0) {
      rc = set_opt(&cfg.templates_dir, v);
    } else if (strcmp(a, "--older-than") == 0 && strcmp(cmd, "prune") == 0) {
      char *end = NULL;
      errno = 0;
      unsigned long long n = strtoull(v, &end, 10);
      rc = errno || !end || *end || v[0] == '-' || n == 0 ? -1 : 0;
      older_than = n;
    } else if (strcmp(a, "--log-level") == 0) {
      rc = (cfg.log_level = ag_log_parse_level(v)) < 0 ? -1 : 0;
    } else {
      rc = -1;
    }
    if (rc < 0) {
      fprintf(stderr, "agentd: bad option '%s'%s%s\n\n", a, v ? " " : "", v ? v : "");
      serve_usage(stderr);
      ag_config_deinit(&cfg);
      return 2;
    }
  }
  ag_log_set_level(cfg.log_level);
  int code = strcmp(cmd, "migrate") == 0     ? ag_server_migrate(&cfg, migrate_apply)
             : strcmp(cmd, "prune") == 0     ? ag_server_prune(&cfg, older_than)
             : strcmp(cmd, "templates") == 0 ? ag_server_templates(&cfg, tpl_action, tpl_paths, n_tpl_paths)
                                             : ag_server_run(&cfg);
  ag_config_deinit(&cfg);
  return code;
}
