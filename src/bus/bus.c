/* The bus front (see bus.h): argument checks, then the backend. */
#include "bus/bus.h"

#include <string.h>

static int check_topic(const char *topic) {
  if (!topic || !*topic) return AG_EINVAL;
  return strlen(topic) > AG_BUS_TOPIC_MAX ? AG_ETOOBIG : 0;
}

int ag_bus_publish(ag_bus *b, const char *topic, const char *msg, size_t len) {
  int rc = b ? check_topic(topic) : AG_EINVAL;
  if (rc == 0 && !msg && len) rc = AG_EINVAL;
  if (rc == 0 && len > AG_BUS_MSG_MAX) rc = AG_ETOOBIG;
  return rc < 0 ? rc : b->vt->publish(b, topic, msg ? msg : "", len);
}

int ag_bus_publish_str(ag_bus *b, const char *topic, const char *msg) {
  return ag_bus_publish(b, topic, msg, msg ? strlen(msg) : 0);
}

int ag_bus_subscribe(ag_bus *b, const char *topic, ag_bus_fn fn, void *ud, ag_bus_sub **out) {
  int rc = b && fn ? check_topic(topic) : AG_EINVAL;
  return rc < 0 ? rc : b->vt->subscribe(b, topic, fn, ud, out);
}

void ag_bus_unsubscribe(ag_bus *b, ag_bus_sub *sub) {
  if (b && sub) b->vt->unsubscribe(b, sub);
}

void ag_bus_close(ag_bus *b, void (*done)(void *ud), void *ud) {
  if (b) b->vt->close(b, done, ud);
}
