/* Internal entry points of the OpenAI-compatible provider (openai.c), for its unit tests and fuzz
 * targets: the stream assembler and the response/request codecs run here without any socket.
 * Not part of the public API; nothing outside llm/ and tests/ should include this header. */
#ifndef AG_LLM_OPENAI_INTERNAL_H
#define AG_LLM_OPENAI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "llm/llm.h"
#include "llm/sse.h"

/* Hard limit on tool calls in one answer; an index beyond it is a protocol error (it would
 * otherwise let one delta allocate an arbitrary array). */
#define AG__OPENAI_MAX_TOOL_CALLS 128

typedef struct ag__openai_tool_acc {
  char *id;
  char *name;
  ag_buf args;
  bool used;
} ag__openai_tool_acc;

/* Assembles a streamed chat completion (SSE of chat.completion.chunk objects) into a result,
 * forwarding deltas to the callbacks as they are parsed. Caller-owned; fields are private except
 * `delivered` and `halt`. */
typedef struct ag__openai_stream {
  ag_sse_parser sse;
  ag_buf content;
  ag__openai_tool_acc *tools;
  size_t n_tools;
  char *finish_reason;
  char *model;
  ag_usage usage;
  size_t max_bytes;
  bool done; /* "data: [DONE]" seen; later events are ignored */
  int err;   /* sticky */
  char errmsg[256];
  void (*on_content)(const char *delta, size_t len, void *ud);
  void (*on_tool_call_delta)(size_t index, const char *id, const char *name, const char *args, size_t args_len,
                             void *ud);
  void *ud;
  /* public */
  bool delivered; /* at least one delta reached a callback */
  bool halt;      /* set by the owner (e.g. on cancel) to stop delivering at once: feed fails AG_ECANCELED */
} ag__openai_stream;

/* The fast path for the common chunk (openai_chunk.c): one choice, index 0, a delta with at most
 * role and content, no finish reason, no usage. Returns 1 and fills *o when the chunk is exactly
 * that (content decoded into o->content, at most o->cap bytes; model points into p, undecoded),
 * 0 when the chunk must be parsed in full. */
typedef struct ag__openai_chunk {
  char *content; /* caller's buffer */
  size_t cap;
  size_t content_len;
  bool have_content;
  const char *model;
  size_t model_len;
} ag__openai_chunk;
int ag__openai_chunk_fast(const char *p, size_t n, ag__openai_chunk *o);

/* max_bytes caps the assembled content and each call's arguments (0 = 16 MiB). cbs may be NULL;
 * only its delta callbacks and ud are used. */
void ag__openai_stream_init(ag__openai_stream *s, size_t max_bytes, const ag_chat_callbacks *cbs);
void ag__openai_stream_deinit(ag__openai_stream *s); /* NULL-safe, safe twice */
/* Feeds raw body bytes. 0, or AG_EPROTO (malformed chunk), AG_EUPSTREAM (an error object in the
 * stream), AG_ETOOBIG, AG_ENOMEM, AG_ECANCELED (halt); s->errmsg then says why. Sticky. */
AG_MUST_CHECK int ag__openai_stream_feed(ag__openai_stream *s, const char *data, size_t len);
/* At the end of the body: the assembled result (owned by the caller), or AG_EPROTO if the stream
 * stopped before [DONE] and before any finish_reason ("upstream stream ended early"). */
AG_MUST_CHECK int ag__openai_stream_finish(ag__openai_stream *s, ag_chat_result **out);

/* Parses a non-streamed chat.completion body. Errors as for the stream, message in errmsg. */
AG_MUST_CHECK int ag__openai_parse_response(const char *body, size_t len, ag_chat_result **out, char *errmsg,
                                            size_t errlen);
/* Writes the /chat/completions request JSON for req into out. AG_EINVAL if a schema text does
 * not parse or a named tool choice has no name. */
AG_MUST_CHECK int ag__openai_build_request(const ag_chat_request *req, ag_buf *out);
/* Extracts a human-readable message from an upstream error body (JSON error.message, or a
 * cleaned-up snippet of the text) into out; never longer than outlen - 1. */
void ag__openai_error_message(const char *body, size_t len, char *out, size_t outlen);

#endif
