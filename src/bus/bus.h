/* The message bus: topics, publish, subscribe.
 *
 * Every agentd process has one bus. The in-process backend (ag_bus_local_new) delivers within
 * the process; a Redis backend (scale-out) delivers to every process sharing the Redis server,
 * this one included, behind the same interface. The bus carries notices, not data: cache
 * invalidations ("template research_agent changed") whose receivers read the truth from the
 * store, so a lost or repeated message costs a reload, never a wrong answer.
 *
 * Delivery is asynchronous: ag_bus_publish copies the message and returns; subscribers run
 * later, on the loop, in publish order per topic, never from inside ag_bus_publish. A
 * subscriber may publish, subscribe and unsubscribe (itself included) from its callback.
 * Loop thread only. */
#ifndef AG_BUS_BUS_H
#define AG_BUS_BUS_H

#include <stddef.h>

#include "base/err.h"

typedef struct uv_loop_s uv_loop_t;
typedef struct ag_bus ag_bus;
typedef struct ag_bus_sub ag_bus_sub;

/* Topics of agentd's own notices. Messages are short UTF-8 texts (a name, an id). */
#define AG_TOPIC_TEMPLATES "config.templates" /* a template's name: its versions or activation changed */
#define AG_TOPIC_TOOLS "config.tools"         /* a tool's name: its catalog row changed */

/* Largest message, and longest topic name, accepted (AG_ETOOBIG above). */
#define AG_BUS_MSG_MAX 4096
#define AG_BUS_TOPIC_MAX 128

/* msg is NUL-terminated (len excludes the NUL) and borrowed for the call. */
typedef void (*ag_bus_fn)(const char *topic, const char *msg, size_t len, void *ud);

typedef struct ag_bus_vtable {
  int (*publish)(ag_bus *b, const char *topic, const char *msg, size_t len);
  int (*subscribe)(ag_bus *b, const char *topic, ag_bus_fn fn, void *ud, ag_bus_sub **out);
  void (*unsubscribe)(ag_bus *b, ag_bus_sub *sub);
  void (*close)(ag_bus *b, void (*done)(void *ud), void *ud);
} ag_bus_vtable;

struct ag_bus {
  const ag_bus_vtable *vt;
};

/* The in-process bus on `loop`. */
AG_MUST_CHECK int ag_bus_local_new(uv_loop_t *loop, ag_bus **out);

AG_MUST_CHECK int ag_bus_publish(ag_bus *b, const char *topic, const char *msg, size_t len);
/* Publishes a NUL-terminated message. */
AG_MUST_CHECK int ag_bus_publish_str(ag_bus *b, const char *topic, const char *msg);
/* Messages published on `topic` from now on reach fn(…, ud) until ag_bus_unsubscribe. */
AG_MUST_CHECK int ag_bus_subscribe(ag_bus *b, const char *topic, ag_bus_fn fn, void *ud, ag_bus_sub **out);
/* No more calls of that subscription, from the moment this returns. */
void ag_bus_unsubscribe(ag_bus *b, ag_bus_sub *sub);
/* Undelivered messages are dropped, subscriptions end; done(ud) from the loop once the bus is
 * freed (may be NULL). */
void ag_bus_close(ag_bus *b, void (*done)(void *ud), void *ud);

#endif
