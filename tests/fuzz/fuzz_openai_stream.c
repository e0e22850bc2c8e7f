/* libFuzzer target for the OpenAI stream assembler (llm/openai_internal.h): arbitrary bytes as a
 * streamed /chat/completions body, fed in input-chosen pieces, then assembled into a result. The
 * callbacks check what the provider promises its callers about deltas. The input is also read as
 * one chunk by the fast path, which must agree with the full JSON parser whenever it accepts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "llm/openai_internal.h"

typedef struct seen {
  size_t content;
  size_t args;
} seen;

static void on_content(const char *d, size_t len, void *ud) {
  seen *s = ud;
  if (!d || len == 0) abort(); /* empty content is never delivered */
  s->content += len;
}

static void on_tool(size_t index, const char *id, const char *name, const char *args, size_t len, void *ud) {
  seen *s = ud;
  if (index >= AG__OPENAI_MAX_TOOL_CALLS || !args) abort();
  if (!id && !name && len == 0) abort(); /* a delta always carries something */
  s->args += len;
}

static void on_done(int err, ag_chat_result *r, const ag_llm_error *e, void *ud) { abort(); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* What the fast path accepted is a plain content chunk to jansson too, with the same content. */
static void check_fast(const uint8_t *data, size_t size) {
  char buf[4096];
  ag__openai_chunk fc = {.content = buf, .cap = sizeof buf};
  if (ag__openai_chunk_fast((const char *)data, size, &fc) != 1) return;
  ag_json *j = ag_json_parse((const char *)data, size, NULL, 0);
  if (!ag_json_is(j, AG_JSON_OBJECT) || ag_json_get(j, "error")) abort();
  ag_json *choices = ag_json_get(j, "choices");
  if (ag_json_len(choices) != 1) abort();
  ag_json *ch = ag_json_at(choices, 0), *delta = ag_json_get(ch, "delta");
  if (ag_json_get(delta, "tool_calls") || ag_json_get_str(ch, "finish_reason")) abort();
  ag_json *u = ag_json_get(j, "usage");
  if (u && !ag_json_is(u, AG_JSON_NULL)) abort();
  ag_json *content = ag_json_get(delta, "content");
  size_t want = ag_json_str_len(content);
  if (fc.content_len != want || (want && memcmp(fc.content, ag_json_str(content), want) != 0)) abort();
  const char *model = ag_json_get_str(j, "model");
  if (fc.model_len && (!model || strlen(model) != fc.model_len || memcmp(model, fc.model, fc.model_len) != 0)) abort();
  ag_json_free(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_fast(data, size);
  seen s = {0, 0};
  ag_chat_callbacks cbs = {on_content, on_tool, on_done, &s};
  ag__openai_stream st;
  ag__openai_stream_init(&st, 1 << 16, &cbs);
  unsigned pieces = size ? data[0] : 0;
  size_t at = 0;
  int rc = 0;
  while (at < size && rc == 0) {
    size_t piece = 1 + (pieces = pieces * 1103515245u + 12345u) % 64;
    if (piece > size - at) piece = size - at;
    rc = ag__openai_stream_feed(&st, (const char *)data + at, piece);
    at += piece;
  }
  ag_chat_result *res = NULL;
  int frc = ag__openai_stream_finish(&st, &res);
  if ((frc == 0) != (res != NULL)) abort();
  if (res) {
    /* Everything delivered is in the result, in full. */
    size_t content = res->message.content ? strlen(res->message.content) : 0, args = 0;
    if (content > s.content) abort();
    for (size_t i = 0; i < res->message.n_tool_calls; i++) {
      ag_llm_tool_call *tc = &res->message.tool_calls[i];
      if (!tc->id || !tc->name || !tc->arguments) abort();
      args += strlen(tc->arguments);
    }
    (void)args;
    ag_chat_result_free(res);
  }
  ag__openai_stream_deinit(&st);

  /* The non-streaming parser on the same bytes. */
  char msg[128];
  if (ag__openai_parse_response((const char *)data, size, &res, msg, sizeof msg) == 0) ag_chat_result_free(res);
  ag__openai_error_message((const char *)data, size, msg, sizeof msg);
  if (strlen(msg) >= sizeof msg) abort();
  return 0;
}
