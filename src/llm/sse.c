/* Incremental Server-Sent Events parser (see sse.h).
 *
 * Complete lines are processed straight from the caller's chunk; only a line cut by a chunk
 * boundary is copied into p->line, so the common case (a socket read holding whole events) costs
 * one copy, into the event's data buffer. A CR at the very end of a chunk leaves `last_cr` set so
 * that an LF opening the next chunk is taken as the second half of that CRLF, not as an empty line
 * (which would dispatch an event too early). */
#include "llm/sse.h"

#include <string.h>

#define DEFAULT_MAX_EVENT (1u << 20)
/* Room for a field name and its colon on top of the data cap. */
#define LINE_SLACK 64
#define MAX_EVENT_TYPE 256
#define MAX_ID 1024

void ag_sse_init(ag_sse_parser *p, size_t max_event_bytes, ag_sse_cb cb, void *ud) {
  size_t max = max_event_bytes ? max_event_bytes : DEFAULT_MAX_EVENT;
  memset(p, 0, sizeof *p);
  ag_buf_init(&p->line, max + LINE_SLACK);
  ag_buf_init(&p->data, max);
  ag_buf_init(&p->event, MAX_EVENT_TYPE);
  ag_buf_init(&p->id, MAX_ID);
  p->cb = cb;
  p->ud = ud;
}

void ag_sse_deinit(ag_sse_parser *p) {
  if (!p) return;
  ag_buf_deinit(&p->line);
  ag_buf_deinit(&p->data);
  ag_buf_deinit(&p->event);
  ag_buf_deinit(&p->id);
}

bool ag_sse_has_partial(const ag_sse_parser *p) { return p->has_data || p->line.len > 0; }

static int dispatch(ag_sse_parser *p) {
  int rc = 0;
  /* Per the spec an event without any data field is not dispatched, and its type is forgotten. */
  if (p->has_data) {
    ag_sse_event ev = {ag_buf_slice(&p->event), ag_buf_slice(&p->data), ag_buf_slice(&p->id)};
    rc = p->cb ? p->cb(&ev, p->ud) : 0;
    if (rc > 0) rc = AG_ECANCELED; /* a callback that says "stop" with a positive value */
  }
  ag_buf_reset(&p->data);
  ag_buf_reset(&p->event);
  p->has_data = false;
  return rc;
}

static int process_line(ag_sse_parser *p, ag_slice line) {
  if (!p->started) {
    p->started = true;
    if (ag_slice_starts_with(line, "\xEF\xBB\xBF")) {
      line.ptr += 3;
      line.len -= 3;
    }
  }
  if (line.len == 0) return dispatch(p);
  if (line.ptr[0] == ':') return 0; /* comment, often used as a keep-alive */

  const char *colon = memchr(line.ptr, ':', line.len);
  ag_slice name = line, value = {"", 0};
  if (colon) {
    name.len = (size_t)(colon - line.ptr);
    value.ptr = colon + 1;
    value.len = line.len - name.len - 1;
    if (value.len && value.ptr[0] == ' ') {
      value.ptr++;
      value.len--;
    }
  }

  int rc = 0;
  if (ag_slice_eq_cstr(name, "data")) {
    if (p->has_data) rc = ag_buf_append_char(&p->data, '\n');
    if (rc == 0) rc = ag_buf_append(&p->data, value.ptr, value.len);
    p->has_data = true;
  } else if (ag_slice_eq_cstr(name, "event")) {
    ag_buf_reset(&p->event);
    rc = ag_buf_append(&p->event, value.ptr, value.len);
  } else if (ag_slice_eq_cstr(name, "id")) {
    /* The spec ignores ids containing NUL. */
    if (!memchr(value.ptr, '\0', value.len)) {
      ag_buf_reset(&p->id);
      rc = ag_buf_append(&p->id, value.ptr, value.len);
    }
  }
  /* "retry" and unknown fields are ignored: reconnection is the caller's business. */
  return rc;
}

static size_t find_eol(const char *s, size_t from, size_t len) {
  for (size_t i = from; i < len; i++)
    if (s[i] == '\n' || s[i] == '\r') return i;
  return len;
}

int ag_sse_feed(ag_sse_parser *p, const char *data, size_t len) {
  if (p->err) return p->err;
  size_t i = 0;
  if (p->last_cr && len > 0) {
    p->last_cr = false;
    if (data[0] == '\n') i = 1;
  }
  int rc = 0;
  while (i < len) {
    size_t j = find_eol(data, i, len);
    if (j == len) {
      rc = ag_buf_append(&p->line, data + i, len - i);
      break;
    }
    ag_slice line;
    if (p->line.len) {
      rc = ag_buf_append(&p->line, data + i, j - i);
      if (rc < 0) break;
      line = ag_buf_slice(&p->line);
    } else if (j - i > p->line.max) {
      /* Same cap as a line that had to be buffered, so the result never depends on the split. */
      rc = AG_ETOOBIG;
      break;
    } else {
      line = (ag_slice){data + i, j - i};
    }
    if (data[j] == '\r') {
      if (j + 1 == len)
        p->last_cr = true;
      else if (data[j + 1] == '\n')
        j++;
    }
    i = j + 1;
    rc = process_line(p, line);
    ag_buf_reset(&p->line);
    if (rc < 0) break;
  }
  if (rc < 0) p->err = rc;
  return rc;
}
