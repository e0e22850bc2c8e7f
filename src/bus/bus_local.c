/* The in-process bus (see bus.h): a FIFO of copied messages drained by a zero-delay timer, and a
 * list of subscriptions. Unsubscribing marks a subscription dead; dead ones are swept when no
 * delivery is running, so a callback may unsubscribe anything, itself included. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "bus/bus.h"

typedef struct msg {
  struct msg *next;
  char *topic;
  char *text;
  size_t len;
} msg;

struct ag_bus_sub {
  struct ag_bus_sub *next;
  char *topic;
  ag_bus_fn fn;
  void *ud;
  bool dead;
};

typedef struct local_bus {
  ag_bus base;
  uv_timer_t drain;
  msg *head, *tail;
  ag_bus_sub *subs;
  int delivering;
  bool closing;
  void (*done)(void *ud);
  void *done_ud;
} local_bus;

static void msg_free(msg *m) {
  free(m->topic);
  free(m->text);
  free(m);
}

static void sweep(local_bus *lb) {
  for (ag_bus_sub **pp = &lb->subs; *pp;) {
    ag_bus_sub *s = *pp;
    if (s->dead) {
      *pp = s->next;
      free(s->topic);
      free(s);
    } else {
      pp = &s->next;
    }
  }
}

static void on_drain(uv_timer_t *t) {
  local_bus *lb = t->data;
  /* Only what is queued now: messages published by subscribers go in the next round. */
  msg *m = lb->head, *end = lb->tail;
  lb->head = lb->tail = NULL;
  lb->delivering++;
  while (m) {
    msg *next = m == end ? NULL : m->next;
    for (ag_bus_sub *s = lb->subs; s && !lb->closing; s = s->next)
      if (!s->dead && strcmp(s->topic, m->topic) == 0) s->fn(m->topic, m->text, m->len, s->ud);
    msg_free(m);
    m = next;
  }
  lb->delivering--;
  sweep(lb);
}

static void arm(local_bus *lb) {
  if (!uv_is_active((uv_handle_t *)&lb->drain)) uv_timer_start(&lb->drain, on_drain, 0, 0);
}

static int local_publish(ag_bus *b, const char *topic, const char *text, size_t len) {
  local_bus *lb = (local_bus *)b;
  if (lb->closing) return AG_ESHUTDOWN;
  msg *m = calloc(1, sizeof *m);
  if (!m) return AG_ENOMEM;
  m->topic = strdup(topic);
  m->text = ag_strndup(text, len);
  m->len = len;
  if (!m->topic || !m->text) {
    msg_free(m);
    return AG_ENOMEM;
  }
  if (lb->tail)
    lb->tail->next = m;
  else
    lb->head = m;
  lb->tail = m;
  arm(lb);
  return 0;
}

static int local_subscribe(ag_bus *b, const char *topic, ag_bus_fn fn, void *ud, ag_bus_sub **out) {
  local_bus *lb = (local_bus *)b;
  if (lb->closing) return AG_ESHUTDOWN;
  ag_bus_sub *s = calloc(1, sizeof *s);
  if (!s || !(s->topic = strdup(topic))) {
    free(s);
    return AG_ENOMEM;
  }
  s->fn = fn;
  s->ud = ud;
  /* At the end: subscribers are called in the order they subscribed. */
  ag_bus_sub **pp = &lb->subs;
  while (*pp)
    pp = &(*pp)->next;
  *pp = s;
  if (out) *out = s;
  return 0;
}

static void local_unsubscribe(ag_bus *b, ag_bus_sub *sub) {
  local_bus *lb = (local_bus *)b;
  sub->dead = true;
  if (!lb->delivering) sweep(lb);
}

static void on_closed(uv_handle_t *h) {
  local_bus *lb = h->data;
  void (*done)(void *) = lb->done;
  void *ud = lb->done_ud;
  free(lb);
  if (done) done(ud);
}

static void local_close(ag_bus *b, void (*done)(void *ud), void *ud) {
  local_bus *lb = (local_bus *)b;
  if (lb->closing) return;
  lb->closing = true;
  lb->done = done;
  lb->done_ud = ud;
  for (msg *m = lb->head; m;) {
    msg *next = m->next;
    msg_free(m);
    m = next;
  }
  lb->head = lb->tail = NULL;
  for (ag_bus_sub *s = lb->subs; s; s = s->next)
    s->dead = true;
  if (!lb->delivering) sweep(lb);
  uv_timer_stop(&lb->drain);
  uv_close((uv_handle_t *)&lb->drain, on_closed);
}

static const ag_bus_vtable local_vt = {local_publish, local_subscribe, local_unsubscribe, local_close};

int ag_bus_local_new(uv_loop_t *loop, ag_bus **out) {
  local_bus *lb = calloc(1, sizeof *lb);
  if (!lb) return AG_ENOMEM;
  lb->base.vt = &local_vt;
  if (uv_timer_init(loop, &lb->drain) != 0) {
    free(lb);
    return AG_EIO;
  }
  lb->drain.data = lb;
  *out = &lb->base;
  return 0;
}
