/* LLM providers: typed chat requests in, streamed deltas and a typed result out.
 *
 * JSON stops here: a provider turns an ag_chat_request into its wire format and the wire answer
 * into ag_chat_result. Providers sit behind a table of functions: "openai" (any OpenAI-compatible
 * HTTP endpoint, openai.c) and "scripted" (the labelled offline demo model, scripted.c).
 *
 * Callback contract for ag_llm_start: if it returns an error, no callback is ever called;
 * otherwise on_done is called exactly once (after ag_llm_cancel with AG_ECANCELED), never from
 * inside ag_llm_start or ag_llm_cancel. Delta callbacks come only before on_done. */
#ifndef AG_LLM_LLM_H
#define AG_LLM_LLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_http_client ag_http_client;

enum ag_role { AG_ROLE_SYSTEM, AG_ROLE_USER, AG_ROLE_ASSISTANT, AG_ROLE_TOOL };
const char *ag_role_name(int role);
int ag_role_parse(const char *name); /* -1 if unknown */

typedef struct ag_llm_tool_call {
  char *id;
  char *name;
  char *arguments; /* JSON text as the model produced it (may be invalid JSON) */
} ag_llm_tool_call;

typedef struct ag_msg {
  int role;                     /* enum ag_role */
  char *content;                /* NULL when absent */
  ag_llm_tool_call *tool_calls; /* assistant only */
  size_t n_tool_calls;
  char *tool_call_id; /* tool only */
  char *name;         /* tool only: the tool's name */
} ag_msg;

void ag_msg_deinit(ag_msg *m);
AG_MUST_CHECK int ag_msg_copy(ag_msg *dst, const ag_msg *src);
void ag_tool_call_deinit(ag_llm_tool_call *tc);

/* Serialises tool calls as an OpenAI JSON array (owned string) and back; used to persist them. */
char *ag_tool_calls_to_json(const ag_llm_tool_call *calls, size_t n);
AG_MUST_CHECK int ag_tool_calls_from_json(const char *json, ag_llm_tool_call **calls, size_t *n);

typedef struct ag_tool_def {
  const char *name;
  const char *description;
  const char *parameters; /* JSON Schema text of the arguments object */
  bool strict;            /* the schema follows OpenAI's strict-mode rules: send "strict": true */
} ag_tool_def;

enum ag_tool_choice { AG_TOOL_CHOICE_AUTO, AG_TOOL_CHOICE_NONE, AG_TOOL_CHOICE_REQUIRED, AG_TOOL_CHOICE_NAMED };

typedef struct ag_chat_request {
  const char *model;
  const ag_msg *messages;
  size_t n_messages;
  const ag_tool_def *tools;
  size_t n_tools;
  int tool_choice;              /* enum ag_tool_choice; ignored without tools */
  const char *tool_choice_name; /* for AG_TOOL_CHOICE_NAMED */
  const char *response_schema;  /* JSON Schema text for response_format json_schema (strict), or NULL */
  const char *response_schema_name;
  double temperature;     /* < 0: not sent */
  int max_tokens;         /* <= 0: not sent */
  bool stream;            /* stream from upstream (deltas arrive as they come) */
  const char *extra;      /* JSON object of further request fields (top_p, seed, ...), or NULL;
                             fields set above win over it */
  const char *session_id; /* for logs only */
} ag_chat_request;

typedef struct ag_usage {
  int64_t prompt_tokens;
  int64_t completion_tokens;
  int64_t total_tokens;
} ag_usage;

typedef struct ag_chat_result {
  ag_msg message;      /* role assistant: content and/or tool_calls */
  char *finish_reason; /* "stop", "tool_calls", "length", ... or NULL */
  char *model;         /* model name reported by upstream, or NULL */
  ag_usage usage;
} ag_chat_result;

void ag_chat_result_free(ag_chat_result *r);

typedef struct ag_llm_error {
  int code;          /* AG_E* */
  long http_status;  /* upstream status, 0 if none */
  char message[512]; /* human-readable, safe to show to a client (never contains the API key) */
} ag_llm_error;

typedef struct ag_chat_callbacks {
  /* Text content as it streams. */
  void (*on_content)(const char *delta, size_t len, void *ud);
  /* A tool-call delta: index of the call; id and name non-NULL only in the delta that carries
   * them; args is a fragment of the arguments JSON text (may be empty). */
  void (*on_tool_call_delta)(size_t index, const char *id, const char *name, const char *args, size_t args_len,
                             void *ud);
  /* Exactly once. On success err == 0 and `result` is owned by the receiver
   * (ag_chat_result_free); on failure result is NULL and `error` describes it. */
  void (*on_done)(int err, ag_chat_result *result, const ag_llm_error *error, void *ud);
  void *ud;
} ag_chat_callbacks;

typedef struct ag_llm_provider ag_llm_provider;
typedef struct ag_llm_call ag_llm_call;

struct ag_llm_provider_vtbl {
  const char *kind;
  int (*start)(ag_llm_provider *p, const ag_chat_request *req, const ag_chat_callbacks *cbs, ag_llm_call **out);
  void (*cancel)(ag_llm_call *call);
  void (*free)(ag_llm_provider *p);
};

struct ag_llm_provider {
  const struct ag_llm_provider_vtbl *vt;
};

/* Everything in req is copied before start returns. */
static inline AG_MUST_CHECK int ag_llm_start(ag_llm_provider *p, const ag_chat_request *req,
                                             const ag_chat_callbacks *cbs, ag_llm_call **out) {
  return p->vt->start(p, req, cbs, out);
}
static inline void ag_llm_cancel(ag_llm_provider *p, ag_llm_call *call) { p->vt->cancel(call); }
static inline void ag_llm_provider_free(ag_llm_provider *p) {
  if (p) p->vt->free(p);
}

/* ---- the OpenAI-compatible HTTP provider (openai.c) ---- */
typedef struct ag_openai_config {
  const char *base_url;           /* e.g. "https://api.openai.com/v1" (".../chat/completions" is appended) */
  const char *api_key;            /* may be NULL/empty (local servers) */
  uint64_t connect_timeout_ms;    /* 0 = 10 s */
  uint64_t first_byte_timeout_ms; /* 0 = 120 s */
  uint64_t idle_timeout_ms;       /* 0 = 120 s: longest silence inside a stream */
  uint64_t total_timeout_ms;      /* 0 = 10 min */
  int max_retries;                /* attempts after the first, on 429/5xx/connect errors/timeouts before any
                                     delta was delivered; default 3 (negative = 0) */
  uint64_t retry_base_ms;         /* first backoff; doubled each time, with full jitter; 0 = 500 ms */
  uint64_t retry_max_ms;          /* cap on one backoff (and on Retry-After honoured); 0 = 30 s */
  size_t max_response_bytes;      /* 0 = 16 MiB */
} ag_openai_config;

/* The http client is borrowed and must outlive the provider. */
AG_MUST_CHECK int ag_openai_provider_new(uv_loop_t *loop, ag_http_client *http, const ag_openai_config *cfg,
                                         ag_llm_provider **out);

/* ---- the offline scripted model (scripted.c): a labelled demo and test aid, not an LLM ---- */
AG_MUST_CHECK int ag_scripted_provider_new(uv_loop_t *loop, ag_llm_provider **out);
#define AG_SCRIPTED_MODEL_NAME "agentd-offline-scripted-demo"

#endif
