/* Incremental Server-Sent Events parser (the text/event-stream format of the WHATWG HTML spec).
 *
 * Bytes go in as they arrive from the socket, split anywhere (inside a field name, inside a
 * "\r\n" pair); complete events come out through a callback. Lines may end in LF, CRLF or CR.
 * `data:` lines are joined with "\n", comments (":...") are skipped, `event:` and `id:` are
 * exposed, a blank line dispatches. Everything an event accumulates is capped, so a peer that
 * never sends a blank line cannot grow memory without bound (AG_ETOOBIG).
 *
 * The parser struct is caller-owned (init/deinit); its fields are private. */
#ifndef AG_LLM_SSE_H
#define AG_LLM_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"

typedef struct ag_sse_event {
  ag_slice event; /* the `event:` field, empty if none was given (the spec's default is "message") */
  ag_slice data;  /* the data lines joined with "\n"; borrowed, valid during the callback only */
  ag_slice id;    /* the last event id seen on this stream (it persists across events), or empty */
} ag_sse_event;

/* Return 0 to go on; a negative AG_E* stops the parser and is returned by ag_sse_feed. */
typedef int (*ag_sse_cb)(const ag_sse_event *ev, void *ud);

typedef struct ag_sse_parser {
  /* private */
  ag_buf line;  /* the current, incomplete line */
  ag_buf data;  /* data of the event being built */
  ag_buf event; /* event type of the event being built */
  ag_buf id;    /* last event id */
  ag_sse_cb cb;
  void *ud;
  int err;       /* sticky: once the parser failed, it stays failed */
  bool has_data; /* a data field was seen (so an empty `data:` still dispatches) */
  bool last_cr;  /* the previous chunk ended in CR: a leading LF belongs to that line end */
  bool started;  /* first line processed (a UTF-8 BOM is stripped before it) */
} ag_sse_parser;

/* max_event_bytes caps the data of one event (0 = 1 MiB); the current line may be a little
 * longer to hold the field name. */
void ag_sse_init(ag_sse_parser *p, size_t max_event_bytes, ag_sse_cb cb, void *ud);
void ag_sse_deinit(ag_sse_parser *p); /* NULL-safe, safe twice */
/* Parses a chunk. Returns 0, AG_ETOOBIG, AG_ENOMEM or the callback's error; after an error the
 * parser is spent and returns the same error again. The callback must not feed or deinit p. */
AG_MUST_CHECK int ag_sse_feed(ag_sse_parser *p, const char *data, size_t len);
/* True if bytes of an event are pending that no blank line has dispatched yet. At the end of a
 * stream the spec says to drop them; the caller can use this to say the stream was truncated. */
bool ag_sse_has_partial(const ag_sse_parser *p);

#endif
