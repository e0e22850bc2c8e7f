/* Unit tests for api/chat_request: typed parsing of request bodies and the errors it reports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "agent/template.h"
#include "api/chat_request.h"

static int parse(const char *body, bool chat, ag_chat_input *in, ag_api_err *err) {
  return ag__chat_request_parse(body, strlen(body), chat, in, err);
}

static void test_valid_chat(void **state) {
  (void)state;
  ag_chat_input in;
  ag_api_err err;
  const char *body =
      "{\"model\":\"m\",\"stream\":true,\"stream_format\":\"sgr\",\"stream_options\":{\"include_usage\":true},"
      "\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},"
      "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"image_url\"},"
      "{\"type\":\"text\",\"text\":\"b\"}]},{\"role\":\"tool\",\"content\":\"x\"},"
      "{\"role\":\"assistant\",\"content\":null},{\"role\":\"user\",\"content\":\"last\"}]}";
  assert_int_equal(parse(body, true, &in, &err), 0);
  assert_string_equal(in.model, "m");
  assert_true(in.stream && in.stream_set && in.include_usage);
  assert_int_equal(in.format, AG_FORMAT_SGR);
  assert_int_equal(in.n, 4); /* the tool turn is dropped */
  assert_int_equal(in.msgs[0].role, AG_ROLE_SYSTEM);
  assert_string_equal(in.msgs[1].content, "a\nb");
  assert_null(in.msgs[2].content);
  assert_string_equal(ag__chat_last_user_text(&in), "last");
  ag__chat_input_deinit(&in);
}

static void expect_error(const char *body, bool chat, int status, const char *param) {
  ag_chat_input in;
  ag_api_err err;
  assert_int_equal(parse(body, chat, &in, &err), AG_EINVAL);
  assert_int_equal(err.status, status);
  if (param)
    assert_string_equal(err.param, param);
  else
    assert_null(err.param);
  assert_true(strlen(err.message) > 0);
  ag__chat_input_deinit(&in);
}

static void test_errors(void **state) {
  (void)state;
  expect_error("{", true, 400, NULL);
  expect_error("[]", true, 400, NULL);
  expect_error("{\"model\":\"m\"} x", true, 400, NULL);
  expect_error("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", true, 400, "model");
  expect_error("{\"model\":7,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", true, 400, "model");
  expect_error("{\"model\":\"a\\u0000b\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", true, 400, "model");
  expect_error("{\"model\":\"m\"}", true, 400, "messages");
  expect_error("{\"model\":\"m\",\"messages\":[]}", true, 400, "messages");
  expect_error("{\"model\":\"m\",\"messages\":{}}", true, 400, "messages");
  expect_error("{\"model\":\"m\",\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", true, 400, "messages");
  expect_error("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}", true, 400, "messages");
  expect_error("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", true, 400, "messages");
  expect_error("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"x\"}]}]}", true, 400,
               "messages");
  expect_error("{\"model\":\"m\",\"stream\":\"yes\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", true, 400,
               "stream");
  expect_error("{\"model\":\"m\",\"stream_format\":\"xml\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", true,
               400, "stream_format");
  expect_error("{\"messages\":5}", false, 400, "messages");
}

static void test_clarification_forms(void **state) {
  (void)state;
  ag_chat_input in;
  ag_api_err err;
  assert_int_equal(parse("{\"clarifications\":\"yes\"}", false, &in, &err), 0);
  assert_string_equal(in.clarifications, "yes");
  assert_false(in.stream_set);
  ag__chat_input_deinit(&in);
  assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"m\"}]}", false, &in, &err), 0);
  assert_null(in.clarifications);
  assert_string_equal(ag__chat_last_user_text(&in), "m");
  ag__chat_input_deinit(&in);
  assert_int_equal(
      parse("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", false, &in, &err), 0);
  assert_null(ag__chat_last_user_text(&in)); /* no text at all is no clarification */
  ag__chat_input_deinit(&in);
  assert_int_equal(parse("{}", false, &in, &err), 0);
  assert_null(ag__chat_last_user_text(&in));
  ag__chat_input_deinit(&in);
}

static void test_session_ids(void **state) {
  (void)state;
  assert_true(ag__chat_is_session_id("sgr_agent_0c0d0952-787d-4f60-ae13-86c0e4f28e6c"));
  assert_false(ag__chat_is_session_id("sgr_agent"));
  assert_false(ag__chat_is_session_id("sgr_agent-0c0d0952-787d-4f60-ae13-86c0e4f28e6c"));
  assert_false(ag__chat_is_session_id("sgr_agent_0C0D0952-787d-4f60-ae13-86c0e4f28e6c"));
  assert_false(ag__chat_is_session_id("_0c0d0952-787d-4f60-ae13-86c0e4f28e6c"));
  assert_false(ag__chat_is_session_id("x\r\nSet-Cookie: a_0c0d0952-787d-4f60-ae13-86c0e4f28e6c"));
  char longname[200];
  memset(longname, 'a', 65);
  strcpy(longname + 65, "_0c0d0952-787d-4f60-ae13-86c0e4f28e6c");
  assert_false(ag__chat_is_session_id(longname));
  assert_true(ag__chat_is_session_id(longname + 1));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_chat),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_clarification_forms),
      cmocka_unit_test(test_session_ids),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
