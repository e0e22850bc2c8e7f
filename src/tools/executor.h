/* Tool executors: how a tool call really runs.
 *
 * A tool in the catalog names an executor kind (builtin, http, subprocess, script, mcp) and holds
 * that executor's configuration as JSON. One executor object per kind serves every tool of that
 * kind: it compiles a tool's configuration once (when the tool is loaded or changed; a bad
 * configuration is refused with a sentence naming the field), and then starts calls with it.
 *
 * A call is asynchronous and always bounded: it has a timeout and a cap on the output it may
 * produce, and it can be cancelled. Callback contract: if start returns an error the callback is
 * never called; otherwise it is called exactly once, on the loop thread, never from inside start
 * (also when the call fails at once, or is cancelled). After cancel the callback still comes, with
 * AG_ECANCELED. The output belongs to the callee.
 *
 * Tool arguments are JSON written by the model, already validated against the tool's input
 * schema by the caller; executors parse them (tools/ is an edge, like api/ and llm/). */
#ifndef AG_TOOLS_EXECUTOR_H
#define AG_TOOLS_EXECUTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_http_client ag_http_client;

/* A numbered citation a tool found (web_search); the session numbers them. Owned strings. */
typedef struct ag_tool_source {
  char *url;
  char *title;   /* may be NULL */
  char *snippet; /* may be NULL */
} ag_tool_source;

/* A file a tool produced (create_report). Owned strings. */
typedef struct ag_tool_artifact {
  char *name;
  char *mime_type;
  char *content;
} ag_tool_artifact;

/* What a call produced. `text` is what the model sees next (capped at the call's max_output;
 * executors cut at a UTF-8 boundary and say so in the text). is_error: the tool ran but failed,
 * and text says why, for the model (a non-zero exit, an HTTP 500, an invalid answer). */
typedef struct ag_tool_output {
  ag_buf text;
  bool is_error;
  ag_tool_source *sources;
  size_t n_sources;
  ag_tool_artifact *artifacts;
  size_t n_artifacts;
  /* LLM tokens the call spent on agentd's behalf (an agent used as a tool): the calling session
   * adds them to its own usage. */
  int64_t prompt_tokens, completion_tokens, total_tokens;
  /* A delegated agent that asks the user a question before it can go on: its session id (owned),
   * with the questions as the text. The calling session then waits too, and the user's answer
   * goes down to that session (ag_tool_call.child_answer). NULL otherwise. */
  char *awaiting_session;
} ag_tool_output;

/* A fresh output whose text buffer is capped at max_bytes. NULL on OOM. */
ag_tool_output *ag_tool_output_new(size_t max_bytes);
void ag_tool_output_free(ag_tool_output *o); /* NULL-safe */
/* Appends a source / an artifact (strings copied; title, snippet may be NULL). */
AG_MUST_CHECK int ag_tool_output_add_source(ag_tool_output *o, const char *url, const char *title, const char *snippet);
AG_MUST_CHECK int ag_tool_output_add_artifact(ag_tool_output *o, const char *name, const char *mime_type,
                                              const char *content);
/* Replaces the text with a formatted error message and sets is_error (for executors). */
void ag_tool_output_fail(ag_tool_output *o, const char *fmt, ...) AG_PRINTF(2, 3);

/* One call. Everything is borrowed for the duration of start() only: executors copy what they
 * keep. */
typedef struct ag_tool_call {
  const char *session_id; /* for logs; may be NULL */
  const char *call_id;    /* the model's tool call id; may be NULL */
  const char *tool_name;  /* the catalog name */
  const void *compiled;   /* what compile() made of the tool's configuration */
  const char *args;       /* the arguments, a JSON object text */
  uint64_t timeout_ms;    /* the whole call; 0 = the executor's default */
  size_t max_output;      /* cap on output text bytes; 0 = the executor's default */
  /* The session's sources so far, numbered 1..n (create_report cites them). */
  const ag_tool_source *sources;
  size_t n_sources;
  /* Progress the call reports while it runs (a delegated agent's steps), one line each; may be
   * NULL. Called from the loop until the call's callback, never after. */
  void (*progress)(const char *text, size_t len, void *ud);
  void *progress_ud;
  /* Agent tools only: the call continues the stored child session `child_session` that an
   * earlier run of the same call started, instead of starting one: with `child_answer` the child
   * waits for a clarification and gets this answer; without, it is adopted as it is (a run a
   * restart interrupted goes on; a child that already ended gives its stored outcome). */
  const char *child_session;
  const char *child_answer;
} ag_tool_call;

/* err: 0 and the output (which may say is_error), or a negative code when the call could not
 * complete (AG_ETIMEDOUT, AG_ECANCELED, AG_ETOOBIG, ...) with the output's text saying why for the
 * model. `out` is owned by the callee and never NULL unless err is AG_ENOMEM. */
typedef void (*ag_tool_done_fn)(int err, ag_tool_output *out, void *ud);

typedef struct ag_executor ag_executor;
typedef struct ag_tool_job ag_tool_job;

struct ag_executor_vtbl {
  const char *kind; /* "builtin", "http", "subprocess", "script", "mcp" */
  /* Parses and checks a tool's configuration (a JSON object text). On success *out is the
   * executor's own compiled form, released with release(). On failure err names the field and
   * what is wrong, e.g. "executor_config.url: must be an http or https URL". */
  int (*compile)(ag_executor *ex, const char *config, void **out, char *err, size_t errlen);
  void (*release)(ag_executor *ex, void *compiled);
  /* Starts a call; *job identifies it for cancel (valid until the callback). */
  int (*start)(ag_executor *ex, const ag_tool_call *call, ag_tool_done_fn cb, void *ud, ag_tool_job **job);
  /* Stops a call in flight: its callback comes soon after with AG_ECANCELED (processes are
   * killed, requests aborted). Harmless after the callback has been queued. */
  void (*cancel)(ag_executor *ex, ag_tool_job *job);
  /* Cancels every call, releases everything, frees the executor; done(ud) from the loop once
   * all callbacks have run and all handles are closed. */
  void (*close)(ag_executor *ex, void (*done)(void *ud), void *ud);
};

struct ag_executor {
  const struct ag_executor_vtbl *vt;
};

/* What every executor may use. Borrowed; outlives the executors. */
typedef struct ag_tool_env {
  uv_loop_t *loop;
  ag_http_client *http;     /* net/http_client.h: upstream-style HTTP on the loop */
  uint64_t timeout_ms;      /* default per call (30 s) */
  size_t max_output;        /* default cap on a result (256 KiB) */
  bool allow_private_hosts; /* SSRF guard off for loopback/private/link-local (tests) */
  /* web_search: a Tavily-compatible endpoint or a SearXNG JSON endpoint. */
  const char *search_kind; /* "tavily" or "searxng"; NULL = not configured */
  const char *search_url;
  const char *search_api_key;
} ag_tool_env;

#endif
