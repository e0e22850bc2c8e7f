/* Names for the error codes in err.h. */
#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>

const char *ag_strerror(int err) {
  switch (err) {
  case AG_OK: return "success";
  case AG_ENOMEM: return "out of memory";
  case AG_EINVAL: return "invalid argument";
  case AG_ETOOBIG: return "too large";
  case AG_ENOTFOUND: return "not found";
  case AG_EEXIST: return "already exists";
  case AG_EIO: return "i/o error";
  case AG_ETIMEDOUT: return "timed out";
  case AG_EPROTO: return "protocol error";
  case AG_ECANCELED: return "cancelled";
  case AG_ESTATE: return "wrong state";
  case AG_EUPSTREAM: return "upstream error";
  case AG_EDB: return "storage error";
  case AG_ELIMIT: return "limit reached";
  case AG_ECONNECT: return "connection failed";
  case AG_ESHUTDOWN: return "shutting down";
  case AG_EUNAVAIL: return "temporarily unavailable";
  case AG_EBUSY: return "busy";
  }
  return "unknown error";
}

int ag_errbuf_set(ag_errbuf *e, const char *fmt, ...) {
  if (e && e->buf && e->len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->buf, e->len, fmt, ap);
    va_end(ap);
  }
  return AG_EINVAL;
}
