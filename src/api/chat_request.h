/* Parsing of chat-completion and clarification request bodies into typed input, with no I/O, so
 * it can be fuzzed: every byte of these bodies comes from the outside. On error the result says
 * the HTTP status and the OpenAI error fields to answer with. */
#ifndef AG_API_CHAT_REQUEST_H
#define AG_API_CHAT_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "llm/llm.h"

#define AG_CHAT_MAX_MESSAGES 1024

typedef struct ag_api_err {
  int status;
  const char *type;  /* static */
  const char *code;  /* static, may be NULL */
  const char *param; /* static, may be NULL */
  char message[512];
} ag_api_err;

typedef struct ag_chat_input {
  char *model;  /* owned; NULL when absent (allowed for clarifications) */
  ag_msg *msgs; /* owned; only system/user/assistant turns (client tool results are dropped) */
  size_t n;
  bool stream;
  bool stream_set; /* "stream" was present */
  int format;      /* enum ag_stream_format, or -1 = not given */
  bool include_usage;
  char *clarifications; /* owned; provide_clarification's {"clarifications": "..."} */
} ag_chat_input;

/* Parses a POST /v1/chat/completions body (need_model) or a provide_clarification body. Returns 0
 * or AG_EINVAL/AG_ENOMEM with `err` filled; `in` is always safe to deinit afterwards. */
AG_MUST_CHECK int ag__chat_request_parse(const char *body, size_t len, bool need_model, ag_chat_input *in,
                                         ag_api_err *err);
void ag__chat_input_deinit(ag_chat_input *in);
/* The latest user message's text, or NULL. Borrowed. */
const char *ag__chat_last_user_text(const ag_chat_input *in);
/* True for "<template>_<uuid>": a session id rather than a template name. */
bool ag__chat_is_session_id(const char *s);

#endif
