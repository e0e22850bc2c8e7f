/* Routing: method + path to a handler, with the right 404/405 answers (see api.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "base/buf.h"
#include "base/json.h"
#include "net/http_server.h"

void ag_api_verror(ag_http_req *req, int status, const char *headers, const char *type, const char *code,
                   const char *param, const char *fmt, va_list ap) {
  char msg[1024];
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  size_t len = n < 0 ? 0 : (size_t)n < sizeof msg ? (size_t)n : ag_utf8_cut(msg, sizeof msg - 1);
  ag_buf b;
  ag_buf_init(&b, 4096);
  int rc = ag_buf_append_str(&b, "{\"error\":{\"message\":\"");
  if (rc == 0) rc = ag_buf_append_json_escaped(&b, msg, len);
  if (rc == 0) rc = ag_buf_appendf(&b, "\",\"type\":\"%s\",\"code\":", type);
  if (rc == 0) rc = code ? ag_buf_appendf(&b, "\"%s\"", code) : ag_buf_append_str(&b, "null");
  if (rc == 0) rc = ag_buf_append_str(&b, ",\"param\":");
  if (rc == 0) rc = param ? ag_buf_appendf(&b, "\"%s\"", param) : ag_buf_append_str(&b, "null");
  if (rc == 0) rc = ag_buf_append_str(&b, "}}");
  if (rc < 0) {
    ag_buf_reset(&b);
    rc = ag_buf_append_str(
        &b, "{\"error\":{\"message\":\"error\",\"type\":\"server_error\",\"code\":null,\"param\":null}}");
  }
  (void)ag_http_respond(req, status, "application/json", headers, b.ptr, b.len);
  ag_buf_deinit(&b);
}

void ag_api_error(ag_http_req *req, int status, const char *type, const char *code, const char *param, const char *fmt,
                  ...) {
  va_list ap;
  va_start(ap, fmt);
  ag_api_verror(req, status, NULL, type, code, param, fmt, ap);
  va_end(ap);
}

void ag_api_error_h(ag_http_req *req, int status, const char *headers, const char *type, const char *code,
                    const char *param, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ag_api_verror(req, status, headers, type, code, param, fmt, ap);
  va_end(ap);
}

static void respond_json_text(ag_http_req *req, int status, const char *text) {
  (void)ag_http_respond(req, status, "application/json", NULL, text, strlen(text));
}

/* Matches "/agents/<id>" and "/agents/<id>/<suffix>"; copies the id (no '/', bounded). */
static bool match_agent(ag_slice path, const char *suffix, char *id, size_t idlen) {
  static const char prefix[] = "/agents/";
  if (!ag_slice_starts_with(path, prefix)) return false;
  const char *p = path.ptr + sizeof prefix - 1, *end = path.ptr + path.len;
  const char *slash = memchr(p, '/', (size_t)(end - p));
  const char *id_end = slash ? slash : end;
  size_t n = (size_t)(id_end - p);
  if (n == 0 || n >= idlen) return false;
  if (suffix) {
    if (!slash || (size_t)(end - slash - 1) != strlen(suffix) || memcmp(slash + 1, suffix, strlen(suffix)) != 0)
      return false;
  } else if (slash) {
    return false;
  }
  memcpy(id, p, n);
  id[n] = '\0';
  return true;
}

/* Matches "/agents/<id>/artifacts/<aid>"; copies both (no '/', bounded). */
static bool match_agent_artifact(ag_slice path, char *id, size_t idlen, char *aid, size_t aidlen) {
  static const char prefix[] = "/agents/", mid[] = "/artifacts/";
  if (!ag_slice_starts_with(path, prefix)) return false;
  const char *p = path.ptr + sizeof prefix - 1, *end = path.ptr + path.len;
  const char *slash = memchr(p, '/', (size_t)(end - p));
  if (!slash || slash == p || (size_t)(slash - p) >= idlen) return false;
  size_t ml = sizeof mid - 1;
  if ((size_t)(end - slash) <= ml || memcmp(slash, mid, ml) != 0) return false;
  const char *a = slash + ml;
  size_t an = (size_t)(end - a);
  if (an == 0 || an >= aidlen || memchr(a, '/', an)) return false;
  memcpy(id, p, (size_t)(slash - p));
  id[slash - p] = '\0';
  memcpy(aid, a, an);
  aid[an] = '\0';
  return true;
}

static bool method_is(ag_http_req *req, const char *m) { return ag_slice_eq_cstr(ag_http_req_method(req), m); }

static void wrong_method(ag_http_req *req, const char *allowed) {
  char allow[64];
  snprintf(allow, sizeof allow, "Allow: %s\r\n", allowed);
  ag_api_error_h(req, 405, allow, "invalid_request_error", "method_not_allowed", NULL,
                 "method %.*s is not allowed here; use %s", (int)ag_http_req_method(req).len,
                 ag_http_req_method(req).ptr, allowed);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void ag__api_query(ag_http_req *req, const char *name, char *out, size_t outlen) {
  if (!outlen) return;
  out[0] = '\0';
  ag_slice q = ag_http_req_query(req);
  size_t nlen = strlen(name);
  for (size_t i = 0; i < q.len;) {
    size_t end = i;
    while (end < q.len && q.ptr[end] != '&')
      end++;
    if (end - i >= nlen + 1 && memcmp(q.ptr + i, name, nlen) == 0 && q.ptr[i + nlen] == '=') {
      size_t k = 0;
      for (size_t p = i + nlen + 1; p < end && k + 1 < outlen; p++) {
        char c = q.ptr[p];
        if (c == '+') {
          c = ' ';
        } else if (c == '%' && p + 2 < end && hexval(q.ptr[p + 1]) >= 0 && hexval(q.ptr[p + 2]) >= 0) {
          c = (char)(hexval(q.ptr[p + 1]) * 16 + hexval(q.ptr[p + 2]));
          p += 2;
        }
        out[k++] = c;
      }
      out[k] = '\0';
      return;
    }
    i = end + 1;
  }
}

size_t ag__api_query_num(ag_http_req *req, const char *name, size_t dflt, size_t max) {
  char v[32];
  ag__api_query(req, name, v, sizeof v);
  if (!v[0]) return dflt;
  size_t n = 0;
  for (const char *p = v; *p; p++) {
    if (*p < '0' || *p > '9') return dflt;
    n = n * 10 + (size_t)(*p - '0');
    if (n > max) return max;
  }
  return n;
}

/* "<prefix>" or "<prefix>/<rest>": the rest, bounded, or false. */
static bool match_admin(ag_slice path, const char *prefix, char *rest, size_t restlen) {
  size_t pl = strlen(prefix);
  if (path.len < pl || memcmp(path.ptr, prefix, pl) != 0) return false;
  if (path.len == pl) {
    rest[0] = '\0';
    return true;
  }
  if (path.ptr[pl] != '/' || path.len - pl - 1 >= restlen) return false;
  memcpy(rest, path.ptr + pl + 1, path.len - pl - 1);
  rest[path.len - pl - 1] = '\0';
  return true;
}

void ag_api_handle(ag_http_req *req, void *ud) {
  ag_api_ctx *ctx = ud;
  ag_slice path = ag_http_req_path(req);
  char id[256];

  if (ag_slice_eq_cstr(path, "/metrics")) {
    if (!method_is(req, "GET")) {
      wrong_method(req, "GET");
      return;
    }
    ag__api_metrics(ctx, req);
    return;
  }
  if (ag_slice_eq_cstr(path, "/healthz") || ag_slice_eq_cstr(path, "/health")) {
    if (!method_is(req, "GET")) {
      wrong_method(req, "GET");
      return;
    }
    {
      respond_json_text(req, 200, "{\"status\":\"ok\"}");
      return;
    }
  }
  if (ag_slice_eq_cstr(path, "/readyz")) {
    if (!method_is(req, "GET")) {
      wrong_method(req, "GET");
      return;
    }
    if (ctx->ready && !ctx->draining) {
      respond_json_text(req, 200, "{\"status\":\"ready\"}");
      return;
    }
    {
      respond_json_text(req, 503, "{\"status\":\"not ready\"}");
      return;
    }
  }
  if (ag_slice_eq_cstr(path, "/v1/chat/completions") || ag_slice_eq_cstr(path, "/chat/completions")) {
    if (!method_is(req, "POST")) {
      wrong_method(req, "POST");
      return;
    }
    {
      ag__api_chat_completions(ctx, req);
      return;
    }
  }
  if (ag_slice_eq_cstr(path, "/v1/models") || ag_slice_eq_cstr(path, "/models")) {
    if (!method_is(req, "GET")) {
      wrong_method(req, "GET");
      return;
    }
    {
      ag__api_models(ctx, req);
      return;
    }
  }
  if (ag_slice_eq_cstr(path, "/agents") || ag_slice_eq_cstr(path, "/v1/agents")) {
    if (!method_is(req, "GET")) {
      wrong_method(req, "GET");
      return;
    }
    {
      ag__api_list_agents(ctx, req);
      return;
    }
  }
  if (match_agent(path, "state", id, sizeof id)) {
    if (!method_is(req, "GET")) {
      wrong_method(req, "GET");
      return;
    }
    {
      ag__api_agent_state(ctx, req, id);
      return;
    }
  }
  if (match_agent(path, "provide_clarification", id, sizeof id)) {
    if (!method_is(req, "POST")) {
      wrong_method(req, "POST");
      return;
    }
    {
      ag__api_provide_clarification(ctx, req, id);
      return;
    }
  }
  char rest[256];
  if (ag_slice_eq_cstr(path, "/admin/mcp/import")) {
    ag__api_admin_mcp_import(ctx, req);
    return;
  }
  if (match_admin(path, "/admin/templates", rest, sizeof rest)) {
    ag__api_admin_templates(ctx, req, rest);
    return;
  }
  if (ag_slice_eq_cstr(path, "/admin/instances")) {
    ag__api_admin_instances(ctx, req);
    return;
  }
  if (ag_slice_eq_cstr(path, "/admin/sessions")) {
    ag__api_admin_sessions(ctx, req);
    return;
  }
  if (match_admin(path, "/admin/tools", rest, sizeof rest)) {
    ag__api_admin_tools(ctx, req, rest);
    return;
  }
  if (match_agent(path, "steps", id, sizeof id)) {
    if (!method_is(req, "GET")) {
      wrong_method(req, "GET");
      return;
    }
    ag__api_agent_steps(ctx, req, id);
    return;
  }
  if (match_agent(path, "sources", id, sizeof id)) {
    if (!method_is(req, "GET")) {
      wrong_method(req, "GET");
      return;
    }
    ag__api_agent_sources(ctx, req, id);
    return;
  }
  if (match_agent(path, "artifacts", id, sizeof id)) {
    if (!method_is(req, "GET")) {
      wrong_method(req, "GET");
      return;
    }
    ag__api_agent_artifacts(ctx, req, id, NULL);
    return;
  }
  if (match_agent_artifact(path, id, sizeof id, rest, sizeof rest)) {
    if (!method_is(req, "GET")) {
      wrong_method(req, "GET");
      return;
    }
    ag__api_agent_artifacts(ctx, req, id, rest);
    return;
  }
  if (match_agent(path, NULL, id, sizeof id)) {
    if (!method_is(req, "DELETE")) {
      wrong_method(req, "DELETE");
      return;
    }
    {
      ag__api_cancel_agent(ctx, req, id);
      return;
    }
  }
  ag_api_error(req, 404, "invalid_request_error", "not_found", NULL, "no route for %.*s %.*s",
               (int)ag_http_req_method(req).len, ag_http_req_method(req).ptr, (int)(path.len > 200 ? 200 : path.len),
               path.ptr);
}
