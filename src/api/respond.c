/* Response helpers every handler of api/ shares: a JSON body, the ISO-8601 time fields, and the
 * answer to a store call that failed for storage reasons (see api.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "base/json.h"
#include "net/http_server.h"

void ag__api_respond_json(ag_http_req *req, int status, ag_json *body) {
  char *text = body ? ag_json_dumps(body) : NULL;
  if (!text)
    ag_api_error(req, 500, "server_error", NULL, NULL, "out of memory");
  else
    (void)ag_http_respond(req, status, "application/json", NULL, text, strlen(text));
  free(text);
  ag_json_free(body);
}

ag_json *ag__api_str_or_null(const char *s) { return s ? ag_json_string_new(s) : ag_json_null_new(); }

ag_json *ag__api_iso_time(int64_t unix_ms) {
  if (!unix_ms) return ag_json_null_new();
  time_t t = (time_t)(unix_ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  char b[96];
  snprintf(b, sizeof b, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
           tm.tm_min, tm.tm_sec, (int)(unix_ms % 1000));
  return ag_json_string_new(b);
}

void ag__api_storage_error(ag_http_req *req, int err, const char *what) {
  switch (err) {
  case AG_ECONNECT:
  case AG_ETIMEDOUT:
  case AG_EUNAVAIL:
    ag_api_error(req, 503, "server_error", "storage_unavailable", NULL, "%s: the database is unreachable", what);
    return;
  case AG_ESHUTDOWN:
    ag_api_error(req, 503, "server_error", "shutting_down", NULL, "%s: the server is shutting down", what);
    return;
  default: ag_api_error(req, 500, "server_error", "storage_error", NULL, "%s", what); return;
  }
}

ag_json *ag__api_json_body(ag_http_req *req, size_t max, const char *what) {
  /* A web page the operator visits can send a "simple" cross-site POST to 127.0.0.1 (text/plain,
   * no preflight); application/json cannot be sent that way, so admin writes require it. */
  ag_slice ct = {0};
  if (!ag_http_req_header(req, "content-type", &ct) || !ag_slice_starts_with(ct, "application/json")) {
    ag_api_error(req, 415, "invalid_request_error", "unsupported_media_type", NULL,
                 "admin requests must be sent with Content-Type: application/json");
    return NULL;
  }
  ag_slice b = ag_http_req_body(req);
  if (b.len > max) {
    ag_api_error(req, 413, "invalid_request_error", "body_too_large", NULL, "%s is at most %zu bytes", what, max);
    return NULL;
  }
  char perr[160] = "";
  ag_json *j = ag_json_parse(b.ptr, b.len, perr, sizeof perr);
  if (!j || !ag_json_is(j, AG_JSON_OBJECT)) {
    ag_api_error(req, 400, "invalid_request_error", "invalid_json", NULL, "the body must be a JSON object%s%s",
                 perr[0] ? ": " : "", perr);
    ag_json_free(j);
    return NULL;
  }
  return j;
}

ag_json *ag__api_list_body(const char *key, ag_json *arr) {
  ag_json *root = arr ? ag_json_object_new() : NULL;
  size_t n = ag_json_len(arr);
  if (!root || ag_json_set_take(root, "total", ag_json_int_new((long long)n)) < 0 ||
      ag_json_set_take(root, key, arr) < 0) {
    ag_json_free(root);
    if (!root) ag_json_free(arr);
    return NULL;
  }
  return root;
}

int ag__api_push(ag_json **arr, ag_json *item) {
  if (*arr && ag_json_push_take(*arr, item) == 0) return 0;
  ag_json_free(*arr);
  *arr = NULL;
  return AG_ENOMEM;
}
