/* Small helpers with no better home: time and random identifiers. */
#ifndef AG_BASE_UTIL_H
#define AG_BASE_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Monotonic milliseconds, for timeouts and durations. */
uint64_t ag_now_ms(void);
/* Wall-clock Unix time in seconds / milliseconds, for records. */
int64_t ag_unix_s(void);
int64_t ag_unix_ms(void);
/* Writes a random RFC 4122 version-4 UUID, 36 chars + NUL. */
void ag_uuid4(char out[37]);
/* Fills buf with random bytes from the kernel. */
void ag_random_bytes(void *buf, size_t len);
/* Uniform-ish random in [0, n). */
uint32_t ag_random_below(uint32_t n);

#endif
