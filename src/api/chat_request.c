/* Chat request parsing (see chat_request.h). */
#include "api/chat_request.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/template.h"
#include "base/buf.h"
#include "base/json.h"

#define MAX_TEXT_BYTES (4u << 20)

static int fail(ag_api_err *err, int status, const char *code, const char *param, const char *fmt, ...) AG_PRINTF(5, 6);
static int fail(ag_api_err *err, int status, const char *code, const char *param, const char *fmt, ...) {
  err->status = status;
  err->type = status >= 500 ? "server_error" : "invalid_request_error";
  err->code = code;
  err->param = param;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
  return status >= 500 ? AG_ENOMEM : AG_EINVAL;
}

void ag__chat_input_deinit(ag_chat_input *in) {
  for (size_t i = 0; i < in->n; i++)
    ag_msg_deinit(&in->msgs[i]);
  free(in->msgs);
  free(in->model);
  free(in->clarifications);
  memset(in, 0, sizeof *in);
  in->format = -1;
}

/* Content may be a string, or an array of parts of which the text parts count. */
static int content_text(const ag_json *v, char **out) {
  *out = NULL;
  if (ag_json_is(v, AG_JSON_STRING)) {
    *out = ag_strndup(ag_json_str(v), ag_json_str_len(v));
    return *out ? 0 : AG_ENOMEM;
  }
  if (!ag_json_is(v, AG_JSON_ARRAY)) return AG_EINVAL;
  ag_buf b;
  ag_buf_init(&b, MAX_TEXT_BYTES);
  for (size_t i = 0; i < ag_json_len(v); i++) {
    ag_json *part = ag_json_at(v, i);
    const char *type = ag_json_get_str(part, "type");
    ag_json *text = ag_json_get(part, "text");
    if (!type) {
      ag_buf_deinit(&b);
      return AG_EINVAL;
    }
    if (strcmp(type, "text") != 0 || !ag_json_is(text, AG_JSON_STRING)) continue; /* images: not yet */
    if ((b.len && ag_buf_append_char(&b, '\n') < 0) ||
        ag_buf_append(&b, ag_json_str(text), ag_json_str_len(text)) < 0) {
      ag_buf_deinit(&b);
      return AG_ETOOBIG;
    }
  }
  *out = ag_buf_take(&b);
  return *out ? 0 : AG_ENOMEM;
}

static int parse_messages(const ag_json *arr, ag_chat_input *in, ag_api_err *err) {
  if (!ag_json_is(arr, AG_JSON_ARRAY))
    return fail(err, 400, "missing_required_parameter", "messages", "'messages' is required and must be an array");
  size_t n = ag_json_len(arr);
  if (n == 0 || n > AG_CHAT_MAX_MESSAGES)
    return fail(err, 400, "invalid_value", "messages", "'messages' must hold between 1 and %d messages",
                AG_CHAT_MAX_MESSAGES);
  in->msgs = calloc(n, sizeof *in->msgs);
  if (!in->msgs) return fail(err, 500, NULL, NULL, "out of memory");
  for (size_t i = 0; i < n; i++) {
    ag_json *m = ag_json_at(arr, i);
    const char *role = ag_json_get_str(m, "role");
    int r = role && strcmp(role, "developer") == 0 ? AG_ROLE_SYSTEM : ag_role_parse(role);
    if (r < 0)
      return fail(err, 400, "invalid_value", "messages",
                  "messages[%zu]: 'role' must be one of system, developer, user, assistant, tool", i);
    if (r == AG_ROLE_TOOL) continue; /* client-side tool results have no place in a server-side agent */
    ag_json *content = ag_json_get(m, "content");
    bool absent = !content || ag_json_is(content, AG_JSON_NULL);
    /* Only an assistant turn (one that called tools) may come without content. */
    if (absent && r != AG_ROLE_ASSISTANT)
      return fail(err, 400, "missing_required_parameter", "messages", "messages[%zu]: 'content' is required", i);
    ag_msg *dst = &in->msgs[in->n];
    dst->role = r;
    int rc = absent ? 0 : content_text(content, &dst->content);
    if (rc == AG_ENOMEM) return fail(err, 500, NULL, NULL, "out of memory");
    if (rc == AG_ETOOBIG)
      return fail(err, 400, "invalid_value", "messages", "messages[%zu]: the text is larger than %u bytes", i,
                  MAX_TEXT_BYTES);
    if (rc < 0)
      return fail(err, 400, "invalid_value", "messages",
                  "messages[%zu]: 'content' must be a string or an array of content parts", i);
    in->n++;
  }
  return 0;
}

int ag__chat_request_parse(const char *body, size_t len, bool need_model, ag_chat_input *in, ag_api_err *err) {
  memset(in, 0, sizeof *in);
  in->format = -1;
  char jerr[160];
  ag_json *root = ag_json_parse(body, len, jerr, sizeof jerr);
  int rc = 0;
  if (!root) {
    rc = fail(err, 400, "invalid_json", NULL, "the request body is not valid JSON: %s", jerr);
    goto done;
  }
  if (!ag_json_is(root, AG_JSON_OBJECT)) {
    rc = fail(err, 400, "invalid_json", NULL, "the request body must be a JSON object");
    goto done;
  }
  ag_json *model = ag_json_get(root, "model");
  if (model && !ag_json_is(model, AG_JSON_STRING)) {
    rc = fail(err, 400, "invalid_type", "model", "'model' must be a string: a template name or a session id");
    goto done;
  }
  if (model && !(in->model = ag_strndup(ag_json_str(model), ag_json_str_len(model)))) {
    rc = fail(err, 500, NULL, NULL, "out of memory");
    goto done;
  }
  if (need_model && (!in->model || !*in->model || strlen(in->model) != ag_json_str_len(model))) {
    rc = fail(err, 400, "missing_required_parameter", "model", "'model' is required: a template name or a session id");
    goto done;
  }
  ag_json *stream = ag_json_get(root, "stream");
  if (stream && !ag_json_is(stream, AG_JSON_BOOL) && !ag_json_is(stream, AG_JSON_NULL)) {
    rc = fail(err, 400, "invalid_type", "stream", "'stream' must be a boolean");
    goto done;
  }
  in->stream = ag_json_bool(stream);
  in->stream_set = ag_json_is(stream, AG_JSON_BOOL);
  bool iu = false;
  in->include_usage = ag_json_get_bool(ag_json_get(root, "stream_options"), "include_usage", &iu) && iu;
  ag_json *fmt = ag_json_get(root, "stream_format");
  if (fmt && (in->format = ag_stream_format_parse(ag_json_str(fmt))) < 0) {
    rc = fail(err, 400, "invalid_value", "stream_format", "'stream_format' must be \"openai\" or \"sgr\"");
    goto done;
  }
  ag_json *cl = ag_json_get(root, "clarifications");
  if (cl && ag_json_is(cl, AG_JSON_STRING) && !(in->clarifications = ag_strdup(ag_json_str(cl)))) {
    rc = fail(err, 500, NULL, NULL, "out of memory");
    goto done;
  }
  ag_json *msgs = ag_json_get(root, "messages");
  /* A clarification may come as "clarifications" alone; a chat request always has messages. */
  if (need_model || (msgs && !in->clarifications)) rc = parse_messages(msgs, in, err);
done:
  ag_json_free(root);
  return rc;
}

const char *ag__chat_last_user_text(const ag_chat_input *in) {
  for (size_t i = in->n; i > 0; i--)
    if (in->msgs[i - 1].role == AG_ROLE_USER && in->msgs[i - 1].content && in->msgs[i - 1].content[0])
      return in->msgs[i - 1].content;
  return NULL;
}

bool ag__chat_is_session_id(const char *s) {
  /* "<template name>_<uuid>": the name as templates allow it (1-64 of [A-Za-z0-9_.-]), then a
   * lowercase canonical UUID. Checked in full because ids end up in response headers. */
  size_t n = strlen(s);
  if (n < 38 || n > 64 + 37 || s[n - 37] != '_') return false;
  for (size_t i = 0; i < n - 37; i++) {
    char ch = s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' ||
          ch == '.'))
      return false;
  }
  for (size_t i = 0; i < 36; i++) {
    char ch = s[n - 36 + i];
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? ch != '-' : !((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
  }
  return true;
}
