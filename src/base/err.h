/* Error codes shared by every layer. Functions that can fail return 0 on success or one of these
 * negative values; ag_strerror() names them. Callers test `< 0`, never a specific positive value. */
#ifndef AG_BASE_ERR_H
#define AG_BASE_ERR_H

#include <stddef.h>

enum ag_err {
  AG_OK = 0,
  AG_ENOMEM = -1,     /* allocation failed */
  AG_EINVAL = -2,     /* bad argument or malformed input */
  AG_ETOOBIG = -3,    /* input exceeds a configured cap */
  AG_ENOTFOUND = -4,  /* no such object */
  AG_EEXIST = -5,     /* object already exists / duplicate */
  AG_EIO = -6,        /* I/O error (socket, file) */
  AG_ETIMEDOUT = -7,  /* an external call took longer than its timeout */
  AG_EPROTO = -8,     /* peer violated its protocol (malformed HTTP, SSE, JSON) */
  AG_ECANCELED = -9,  /* operation cancelled (client gone, shutdown) */
  AG_ESTATE = -10,    /* object is in the wrong state for this operation */
  AG_EUPSTREAM = -11, /* upstream answered with an error status */
  AG_EDB = -12,       /* storage backend error */
  AG_ELIMIT = -13,    /* a hard limit (steps, clarifications) was reached */
  AG_ECONNECT = -14,  /* could not connect */
  AG_ESHUTDOWN = -15, /* the server is shutting down */
  AG_EUNAVAIL = -16,  /* a service agentd depends on (the database) is out of reach for now */
  AG_EBUSY = -17,     /* every slot is taken and the wait queue is full: retry later */
};

/* Static, never NULL. */
const char *ag_strerror(int err);

#if defined(__GNUC__)
#define AG_MUST_CHECK __attribute__((warn_unused_result))
#define AG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define AG_MUST_CHECK
#define AG_PRINTF(a, b)
#endif

#define AG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Where a validator writes the sentence saying what is wrong (buf may be NULL or len 0: none). */
typedef struct ag_errbuf {
  char *buf;
  size_t len;
} ag_errbuf;

/* Formats the sentence into e and returns AG_EINVAL, so validators can `return ag_errbuf_set(...)`. */
int ag_errbuf_set(ag_errbuf *e, const char *fmt, ...) AG_PRINTF(2, 3);

#endif
