/* libFuzzer target: arbitrary bytes as a chat-completion / clarification request body. The first
 * byte picks the mode (chat or clarification). Must never crash or leak; on success the typed
 * input must be consistent. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "api/chat_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  bool chat = data[0] & 1;
  ag_chat_input in;
  ag_api_err err;
  int rc = ag__chat_request_parse((const char *)data + 1, size - 1, chat, &in, &err);
  if (rc == 0) {
    if (chat) assert(in.model && *in.model); /* n may be 0: tool turns are dropped */
    for (size_t i = 0; i < in.n; i++)
      assert(in.msgs[i].role >= 0 && in.msgs[i].role != AG_ROLE_TOOL);
    const char *t = ag__chat_last_user_text(&in);
    if (t) (void)strlen(t);
    if (in.model) (void)ag__chat_is_session_id(in.model);
  } else {
    assert(err.status >= 400 && err.status < 600 && err.message[0]);
  }
  ag__chat_input_deinit(&in);
  return 0;
}
