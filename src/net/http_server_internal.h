/* Internals of net/http_server shared with its fuzz target: the socket-free request parser (one
 * per connection, reused for every request on it) and the response-head builders. Nothing outside
 * net/http_server.c and tests/fuzz/fuzz_http_request.c includes this. */
#ifndef AG_NET_HTTP_SERVER_INTERNAL_H
#define AG_NET_HTTP_SERVER_INTERNAL_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "net/http_server.h"

/* One header, as offsets into ag__http_parse.head (the buffer may move while it grows). */
typedef struct ag__http_hdr {
  size_t name_off, name_len, val_off, val_len;
} ag__http_hdr;

/* What ag__http_parse_feed stopped on. */
enum {
  AG__HTTP_MORE = 0,     /* every byte consumed; the request (if any) is incomplete */
  AG__HTTP_COMPLETE = 1, /* a whole request is ready; call ag__http_parse_next when done with it */
  AG__HTTP_ERROR = 2,    /* the stream is broken; err_status says how to answer */
};

typedef struct ag__http_parse {
  http_parser parser;
  size_t max_head, max_body;
  unsigned max_headers;
  ag_buf head; /* URL, then header names and values, back to back */
  ag_buf body; /* de-chunked body, capped at max_body */
  ag__http_hdr *hdrs;
  unsigned nhdrs, hdrs_cap;
  unsigned nfields;             /* header and trailer lines seen, counted against max_headers */
  size_t url_len;               /* the URL is head[0, url_len) */
  size_t head_bytes;            /* counted against max_head */
  ag_slice method, path, query; /* valid from headers-complete until ag__http_parse_next */
  int err_status;               /* 400/413/431/500 once an error is seen */
  bool started;                 /* first byte of a request seen */
  bool in_field;                /* last header callback was a field name */
  bool headers_done;            /* later header callbacks are chunked trailers: counted, not stored */
  bool complete;
  bool keep_alive;      /* valid once complete */
  bool http10;          /* request is HTTP/1.0 (no chunked responses) */
  bool expect_continue; /* client waits for "100 Continue" before sending its body */
} ag__http_parse;

void ag__http_parse_init(ag__http_parse *ps, const ag_http_server_config *cfg);
void ag__http_parse_deinit(ag__http_parse *ps);
/* Parses up to len bytes; *consumed says how many were used. Stops right after a complete request
 * (the parser pauses) or at the first error. */
int ag__http_parse_feed(ag__http_parse *ps, const char *data, size_t len, size_t *consumed);
/* Forgets the finished request and lets the parser go on with the next one on the stream. */
void ag__http_parse_next(ag__http_parse *ps);
bool ag__http_parse_header(const ag__http_parse *ps, const char *name, ag_slice *value);

/* Flags for ag__http_build_head. */
enum {
  AG__HEAD_KEEP_ALIVE = 1, /* "Connection: keep-alive", else "close" */
  AG__HEAD_CHUNKED = 2,    /* "Transfer-Encoding: chunked" */
  AG__HEAD_SSE = 4,        /* event-stream content type and the no-cache / no-buffering headers */
};
/* Appends a response head. content_length < 0 sends no Content-Length; date may be NULL; extra
 * headers are copied verbatim ("Name: value\r\n" lines). */
int ag__http_build_head(ag_buf *out, int status, const char *content_type, const char *extra_headers,
                        long long content_length, unsigned flags, const char *date);
/* Appends a complete server-generated error response (OpenAI error JSON, Connection: close). */
int ag__http_build_error(ag_buf *out, int status, const char *message, const char *date);

#endif
