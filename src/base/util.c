/* Time and identifiers (see util.h). */
#include "base/util.h"

#include <stdio.h>
#include <sys/random.h>
#include <time.h>

uint64_t ag_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t ag_unix_s(void) { return (int64_t)time(NULL); }

int64_t ag_unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ag_random_bytes(void *buf, size_t len) {
  unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n <= 0) continue; /* EINTR; getrandom never fails once the pool is initialised */
    p += n;
    len -= (size_t)n;
  }
}

uint32_t ag_random_below(uint32_t n) {
  uint32_t r;
  ag_random_bytes(&r, sizeof r);
  return n ? r % n : 0;
}

void ag_uuid4(char out[37]) {
  unsigned char b[16];
  ag_random_bytes(b, sizeof b);
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
           b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}
