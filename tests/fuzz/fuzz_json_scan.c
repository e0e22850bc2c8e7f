/* libFuzzer target: arbitrary bytes into the streaming JSON scanner, split at a position taken
 * from the first input byte. It must never read out of bounds, crash or leak. */
#include <stddef.h>
#include <stdint.h>

#include "base/json_scan.h"

static void on_str(const char *const *path, size_t depth, const char *frag, size_t len, bool done, void *ud) {
  size_t *total = ud;
  for (size_t i = 0; i < depth; i++)
    if (path[i]) (void)path[i][0];
  if (len) *total += (unsigned char)frag[len - 1];
  (void)done;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  size_t split = data[0] % size;
  size_t total = 0;
  ag_json_scan s;
  ag_json_scan_init(&s, on_str, &total);
  (void)ag_json_scan_feed(&s, (const char *)data + 1, split ? split - 1 : 0);
  (void)ag_json_scan_feed(&s, (const char *)data + (split ? split : 1), size - (split ? split : 1));
  return 0;
}
