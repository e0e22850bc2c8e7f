/* libFuzzer target for the HTTP request parser of net/http_server: arbitrary bytes are fed as a
 * client's request stream, split into reads at points the input chooses, through the same
 * socket-free parser the server uses (http_server_internal.h). Every complete request is read
 * through the accessors and answered into a buffer, then the stream goes on (pipelining) until
 * it ends, breaks a limit or asks to close. Limits are small so that 413/431 paths are hit. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/buf.h"
#include "net/http_server.h"
#include "net/http_server_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void use_request(const ag__http_parse *ps, ag_buf *out) {
  ag_slice v;
  size_t sum = ps->method.len + ps->path.len + ps->query.len + ps->body.len;
  if (ag__http_parse_header(ps, "host", &v)) sum += v.len;
  if (ag__http_parse_header(ps, "Content-Type", &v)) sum += v.len;
  for (unsigned i = 0; i < ps->nhdrs; i++)
    sum += ps->hdrs[i].name_len + ps->hdrs[i].val_len;
  /* Touch every byte the slices claim, so an out-of-range slice trips ASan. */
  unsigned char acc = 0;
  for (size_t i = 0; i < ps->path.len; i++)
    acc ^= (unsigned char)ps->path.ptr[i];
  for (size_t i = 0; i < ps->query.len; i++)
    acc ^= (unsigned char)ps->query.ptr[i];
  ag_slice body = ag_buf_slice(&ps->body);
  for (size_t i = 0; i < body.len; i++)
    acc ^= (unsigned char)body.ptr[i];
  ag_buf_reset(out);
  (void)ag__http_build_head(out, 200 + (int)(sum % 300), "text/plain", acc & 1 ? "X-A: b\r\n" : NULL,
                            (long long)body.len, ps->keep_alive ? AG__HEAD_KEEP_ALIVE : 0, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ag_http_server_config cfg;
  ag_http_server_config_default(&cfg);
  cfg.max_header_bytes = 2048;
  cfg.max_headers = 16;
  cfg.max_body_bytes = 4096;
  ag__http_parse ps;
  ag__http_parse_init(&ps, &cfg);
  ag_buf out;
  ag_buf_init(&out, 1 << 16);
  /* The first byte picks the read size, so request boundaries fall anywhere in a read. */
  size_t step = size ? (size_t)data[0] % 64 + 1 : 1;
  const char *p = (const char *)data + (size ? 1 : 0);
  size_t left = size ? size - 1 : 0;
  bool done = false;
  while (left && !done) {
    size_t n = left < step ? left : step;
    size_t off = 0;
    while (off < n && !done) {
      size_t used = 0;
      int ev = ag__http_parse_feed(&ps, p + off, n - off, &used);
      if (ev == AG__HTTP_MORE && used != n - off) __builtin_trap(); /* MORE means all consumed */
      off += used;
      if (ev == AG__HTTP_COMPLETE) {
        use_request(&ps, &out);
        if (!ps.keep_alive)
          done = true;
        else
          ag__http_parse_next(&ps);
      } else if (ev == AG__HTTP_ERROR) {
        ag_buf_reset(&out);
        (void)ag__http_build_error(&out, ps.err_status, "fuzz", "Thu, 01 Jan 1970 00:00:00 GMT");
        done = true;
      }
    }
    p += n;
    left -= n;
  }
  ag_buf_deinit(&out);
  ag__http_parse_deinit(&ps);
  return 0;
}
