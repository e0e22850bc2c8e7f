/* The in-process bus: asynchronous delivery in publish order, only to subscribers of the topic,
 * subscribing and unsubscribing from inside a callback, and close. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "bus/bus.h"

typedef struct rx {
  char log[512];
  int calls;
  ag_bus *bus;
  ag_bus_sub *self;
  bool unsubscribe_self;
  bool publish_again;
} rx;

static void on_msg(const char *topic, const char *msg, size_t len, void *ud) {
  rx *r = ud;
  assert_int_equal(strlen(msg), len);
  size_t n = strlen(r->log);
  snprintf(r->log + n, sizeof r->log - n, "%s:%s;", topic, msg);
  r->calls++;
  if (r->unsubscribe_self) ag_bus_unsubscribe(r->bus, r->self);
  if (r->publish_again) {
    r->publish_again = false;
    assert_int_equal(ag_bus_publish_str(r->bus, "t", "again"), 0);
  }
}

static void drain(uv_loop_t *loop) {
  for (int i = 0; i < 20; i++)
    uv_run(loop, UV_RUN_NOWAIT);
}

static void test_delivery(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  ag_bus *bus = NULL;
  assert_int_equal(ag_bus_local_new(&loop, &bus), 0);
  rx a = {.bus = bus}, b = {.bus = bus};
  assert_int_equal(ag_bus_publish_str(bus, "t", "before"), 0); /* nobody listens yet */
  drain(&loop);
  assert_int_equal(ag_bus_subscribe(bus, "t", on_msg, &a, &a.self), 0);
  assert_int_equal(ag_bus_subscribe(bus, "u", on_msg, &b, &b.self), 0);
  assert_int_equal(ag_bus_publish_str(bus, "t", "1"), 0);
  assert_int_equal(ag_bus_publish_str(bus, "u", "x"), 0);
  assert_int_equal(ag_bus_publish_str(bus, "t", "2"), 0);
  assert_int_equal(a.calls, 0); /* never from inside publish */
  drain(&loop);
  assert_string_equal(a.log, "t:1;t:2;");
  assert_string_equal(b.log, "u:x;");

  /* A subscriber publishing: delivered in the next round, not lost. */
  a.publish_again = true;
  assert_int_equal(ag_bus_publish_str(bus, "t", "3"), 0);
  drain(&loop);
  assert_string_equal(a.log, "t:1;t:2;t:3;t:again;");

  /* Unsubscribing itself from its callback: the rest of the queue does not reach it. */
  a.unsubscribe_self = true;
  assert_int_equal(ag_bus_publish_str(bus, "t", "4"), 0);
  assert_int_equal(ag_bus_publish_str(bus, "t", "5"), 0);
  drain(&loop);
  assert_string_equal(a.log, "t:1;t:2;t:3;t:again;t:4;");

  /* Limits. */
  char big[AG_BUS_MSG_MAX + 2];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(ag_bus_publish_str(bus, "t", big), AG_ETOOBIG);
  assert_int_equal(ag_bus_publish_str(bus, "", "m"), AG_EINVAL);
  assert_int_equal(ag_bus_subscribe(bus, "t", NULL, NULL, NULL), AG_EINVAL);

  /* Close: queued messages are dropped, the loop ends. */
  assert_int_equal(ag_bus_publish_str(bus, "u", "dropped"), 0);
  ag_bus_close(bus, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_string_equal(b.log, "u:x;");
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_delivery)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
