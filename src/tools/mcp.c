/* The `mcp` executor (see mcp.h): compiled tool configurations, the session manager, calls,
 * tools/list import, and the translation of a tools/call result into a tool output.
 *
 * The manager is a map from a server configuration's key (mcp_config.c) to its session, so two
 * tools naming the same server share one process or HTTP session, whichever agentd session calls
 * them. A session leaves the map when it has been idle too long (it is then closed) or when the
 * executor closes; a later call simply opens a new one. Jobs are thin: the session's request
 * already keeps the callback contract (never synchronous, exactly once, AG_ECANCELED after
 * cancel), so a job only turns the JSON-RPC result into an output. */
#include "tools/mcp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/json.h"
#include "base/log.h"
#include "base/map.h"
#include "tools/executor.h"
#include "tools/mcp_internal.h"

#define DEFAULT_TIMEOUT_MS 30000u
#define MAX_TOOL_NAME 256
#define MAX_LIST_PAGES 100
#define MAX_LIST_TOOLS 10000
#define TRUNCATION_NOTE_MAX 96

typedef struct mcp_exec {
  ag_executor base;
  const ag_tool_env *env;
  ag_map sessions; /* key -> ag__mcp_session */
  size_t sessions_closing;
  size_t ops;       /* calls and listings whose callback has not run */
  uv_timer_t timer; /* closed last: its close callback ends close() */
  bool closing, finishing;
  void (*done)(void *ud);
  void *done_ud;
} mcp_exec;

typedef struct mcp_compiled {
  ag__mcp_server_cfg *server;
  char *tool;
} mcp_compiled;

typedef struct mcp_job {
  mcp_exec *ex;
  ag__mcp_req *req;
  ag_tool_output *out;
  ag_tool_done_fn cb;
  void *ud;
  char *server_name;
} mcp_job;

static const struct ag_executor_vtbl mcp_vtbl;

static int fail(char *err, size_t errlen, const char *fmt, ...) AG_PRINTF(3, 4);
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return AG_EINVAL;
}

/* ---- the session manager ---- */

static void on_final(uv_handle_t *h) {
  mcp_exec *ex = h->data;
  void (*done)(void *) = ex->done;
  void *ud = ex->done_ud;
  ag_map_deinit(&ex->sessions);
  free(ex);
  if (done) done(ud);
}

static void maybe_finish(mcp_exec *ex) {
  if (!ex->closing || ex->finishing || ex->ops > 0 || ex->sessions_closing > 0) return;
  ex->finishing = true;
  uv_close((uv_handle_t *)&ex->timer, on_final);
}

static void on_session_closed(void *ud) {
  mcp_exec *ex = ud;
  ex->sessions_closing--;
  maybe_finish(ex);
}

static void close_session(mcp_exec *ex, ag__mcp_session *s) {
  ex->sessions_closing++;
  ag__mcp_session_close(s, on_session_closed, ex);
}

static void on_session_idle(ag__mcp_session *s, void *ud) {
  mcp_exec *ex = ud;
  ag_map_del(&ex->sessions, ag__mcp_session_cfg(s)->key);
  close_session(ex, s);
}

static int get_session(mcp_exec *ex, ag__mcp_server_cfg *cfg, ag__mcp_session **out) {
  ag__mcp_session *s = ag_map_get(&ex->sessions, cfg->key);
  if (!s) {
    int rc = ag__mcp_session_new(ex->env->loop, ex->env->http, cfg, on_session_idle, ex, &s);
    if (rc < 0) return rc;
    if ((rc = ag_map_put(&ex->sessions, cfg->key, s)) < 0) {
      close_session(ex, s);
      return rc;
    }
  }
  *out = s;
  return 0;
}

/* ---- compile ---- */

static int parse_server(mcp_exec *ex, const ag_json *server, const char *field, ag__mcp_server_cfg **out, char *err,
                        size_t errlen) {
  int rc = ag__mcp_server_cfg_parse(server, field, ex->env->allow_private_hosts, out, err, errlen);
  if (rc < 0) return rc;
  /* A referenced secret that is not set is a configuration mistake worth reporting now; should
   * it vanish later, opening the session fails and says so. */
  const ag__mcp_server_cfg *c = *out;
  for (int pass = 0; pass < 2; pass++) {
    const ag__mcp_var *v = pass ? c->headers : c->env;
    size_t n = pass ? c->n_headers : c->n_env;
    for (size_t i = 0; i < n; i++)
      if (v[i].from_env && !getenv(v[i].from_env)) {
        fail(err, errlen, "%s.%s.%s.from_env: the environment variable %s is not set", field, pass ? "headers" : "env",
             v[i].name, v[i].from_env);
        ag__mcp_server_cfg_unref(*out);
        *out = NULL;
        return AG_EINVAL;
      }
  }
  return 0;
}

static int mcp_compile(ag_executor *base, const char *config, void **out, char *err, size_t errlen) {
  mcp_exec *ex = (mcp_exec *)base;
  *out = NULL;
  char jerr[160];
  ag_json *root = ag_json_parse(config ? config : "", config ? strlen(config) : 0, jerr, sizeof jerr);
  if (!root) return fail(err, errlen, "executor_config: not valid JSON (%s)", jerr);
  int rc = 0;
  mcp_compiled *c = NULL;
  if (!ag_json_is(root, AG_JSON_OBJECT)) {
    rc = fail(err, errlen, "executor_config: must be an object");
    goto done;
  }
  for (void *it = ag_json_iter(root); it; it = ag_json_iter_next(root, it)) {
    const char *k = ag_json_iter_key(it);
    if (strcmp(k, "server") != 0 && strcmp(k, "tool") != 0) {
      rc = fail(err, errlen, "executor_config.%.64s: unknown key", k);
      goto done;
    }
  }
  ag_json *server = ag_json_get(root, "server");
  if (!server) {
    rc = fail(err, errlen, "executor_config.server: is required");
    goto done;
  }
  ag_json *tool = ag_json_get(root, "tool");
  if (!tool) {
    rc = fail(err, errlen, "executor_config.tool: is required");
    goto done;
  }
  if (!ag_json_str(tool) || ag_json_str_len(tool) == 0 || ag_json_str_len(tool) > MAX_TOOL_NAME ||
      strlen(ag_json_str(tool)) != ag_json_str_len(tool)) {
    rc = fail(err, errlen, "executor_config.tool: must be a tool name (a string of 1 to %d bytes)", MAX_TOOL_NAME);
    goto done;
  }
  if (!(c = calloc(1, sizeof *c)) || !(c->tool = ag_strdup(ag_json_str(tool)))) {
    rc = AG_ENOMEM;
    goto done;
  }
  rc = parse_server(ex, server, "executor_config.server", &c->server, err, errlen);
done:
  ag_json_free(root);
  if (rc < 0) {
    if (c) free(c->tool);
    free(c);
    return rc;
  }
  *out = c;
  return 0;
}

static void mcp_release(ag_executor *base, void *compiled) {
  (void)base;
  mcp_compiled *c = compiled;
  if (!c) return;
  ag__mcp_server_cfg_unref(c->server);
  free(c->tool);
  free(c);
}

/* ---- results ---- */

static int append_block(ag_buf *b, const ag_json *block) {
  const char *type = ag_json_get_str(block, "type");
  if (!type) return ag_buf_append_str(b, "[a content block without a type]");
  if (strcmp(type, "text") == 0) {
    const ag_json *t = ag_json_get(block, "text");
    return ag_json_str(t) ? ag_buf_append(b, ag_json_str(t), ag_json_str_len(t)) : 0;
  }
  if (strcmp(type, "image") == 0 || strcmp(type, "audio") == 0) {
    const char *mime = ag_json_get_str(block, "mimeType");
    return ag_buf_appendf(b, "[%s: %s, %zu bytes of base64 not shown]", type, mime ? mime : "unknown type",
                          ag_json_str_len(ag_json_get(block, "data")));
  }
  if (strcmp(type, "resource_link") == 0) {
    const char *uri = ag_json_get_str(block, "uri"), *name = ag_json_get_str(block, "name");
    return ag_buf_appendf(b, "[resource link: %s%s%s%s]", uri ? uri : "?", name ? " (" : "", name ? name : "",
                          name ? ")" : "");
  }
  if (strcmp(type, "resource") == 0) {
    const ag_json *r = ag_json_get(block, "resource");
    const char *uri = ag_json_get_str(r, "uri"), *mime = ag_json_get_str(r, "mimeType");
    const ag_json *text = ag_json_get(r, "text");
    if (ag_json_str(text)) {
      int rc = ag_buf_appendf(b, "[resource %s]\n", uri ? uri : "?");
      return rc < 0 ? rc : ag_buf_append(b, ag_json_str(text), ag_json_str_len(text));
    }
    return ag_buf_appendf(b, "[resource %s: %s, %zu bytes of base64 not shown]", uri ? uri : "?",
                          mime ? mime : "binary", ag_json_str_len(ag_json_get(r, "blob")));
  }
  return ag_buf_appendf(b, "[%.40s content not shown]", type);
}

/* Copies text into the output, cut at its cap (at a UTF-8 boundary) with a note saying so. */
static void set_text(ag_tool_output *out, const char *text, size_t len) {
  ag_buf_reset(&out->text);
  size_t max = out->text.max;
  int rc;
  if (len <= max) {
    rc = ag_buf_append(&out->text, text, len);
  } else if (max > 2 * TRUNCATION_NOTE_MAX) {
    size_t cut = ag_utf8_cut(text, max - TRUNCATION_NOTE_MAX);
    rc = ag_buf_append(&out->text, text, cut);
    if (rc == 0) rc = ag_buf_appendf(&out->text, "\n[output truncated: %zu of %zu bytes shown]", cut, len);
  } else {
    rc = ag_buf_append(&out->text, text, ag_utf8_cut(text, max));
  }
  if (rc < 0) ag_buf_reset(&out->text);
}

/* The tools/call result (a CallToolResult) as the model will see it. */
static int format_result(const ag_json *result, ag_tool_output *out, const char *server) {
  if (!ag_json_is(result, AG_JSON_OBJECT)) {
    ag_tool_output_fail(out, "error: MCP server \"%s\" answered tools/call with something other than a result object",
                        server);
    return AG_EPROTO;
  }
  bool is_error = false;
  if (!ag_json_get_bool(result, "isError", &is_error)) is_error = false;
  ag_buf b;
  ag_buf_init(&b, (size_t)256 << 20);
  int rc = 0;
  const ag_json *structured = ag_json_get(result, "structuredContent");
  if (!is_error && structured && !ag_json_is(structured, AG_JSON_NULL)) {
    rc = ag_json_dump(structured, &b);
  } else {
    const ag_json *content = ag_json_get(result, "content");
    size_t n = ag_json_len(content);
    for (size_t i = 0; i < n && rc == 0; i++) {
      if (i) rc = ag_buf_append_char(&b, '\n');
      if (rc == 0) rc = append_block(&b, ag_json_at(content, i));
    }
    if (rc == 0 && b.len == 0) rc = ag_buf_append_str(&b, is_error ? "the tool failed" : "(no content)");
  }
  if (rc < 0) {
    ag_buf_deinit(&b);
    ag_tool_output_fail(out, "error: the result of MCP server \"%s\" could not be rendered: %s", server,
                        ag_strerror(rc));
    return rc;
  }
  set_text(out, ag_buf_cstr(&b), b.len);
  out->is_error = is_error;
  ag_buf_deinit(&b);
  return 0;
}

/* ---- calls ---- */

static void on_call_reply(int err, const ag_json *result, const char *msg, void *ud) {
  mcp_job *j = ud;
  mcp_exec *ex = j->ex;
  if (err == 0) {
    err = format_result(result, j->out, j->server_name);
  } else {
    ag_tool_output_fail(j->out, "error: %s", msg);
  }
  j->cb(err, j->out, j->ud);
  free(j->server_name);
  free(j);
  ex->ops--;
  maybe_finish(ex);
}

static int mcp_start(ag_executor *base, const ag_tool_call *call, ag_tool_done_fn cb, void *ud, ag_tool_job **job) {
  mcp_exec *ex = (mcp_exec *)base;
  if (job) *job = NULL;
  if (ex->closing) return AG_ESHUTDOWN;
  const mcp_compiled *c = call->compiled;
  if (!c || !cb) return AG_EINVAL;
  const char *args = call->args && *call->args ? call->args : "{}";
  ag_json *arguments = ag_json_parse(args, strlen(args), NULL, 0);
  if (!ag_json_is(arguments, AG_JSON_OBJECT)) {
    ag_json_free(arguments);
    return AG_EINVAL;
  }
  ag_json *params = ag_json_object_new();
  int rc = params ? 0 : AG_ENOMEM;
  if (rc == 0) rc = ag_json_set_take(params, "name", ag_json_string_new(c->tool));
  if (rc == 0)
    rc = ag_json_set_take(params, "arguments", arguments);
  else
    ag_json_free(arguments);
  mcp_job *j = rc == 0 ? calloc(1, sizeof *j) : NULL;
  if (j) {
    j->out = ag_tool_output_new(call->max_output ? call->max_output : ex->env->max_output);
    j->server_name = ag_strdup(c->server->name);
  }
  ag__mcp_session *s = NULL;
  if (!j || !j->out || !j->server_name) rc = AG_ENOMEM;
  if (rc == 0) rc = get_session(ex, c->server, &s);
  if (rc < 0) {
    ag_json_free(params);
    goto fail;
  }
  uint64_t timeout = call->timeout_ms      ? call->timeout_ms
                     : ex->env->timeout_ms ? ex->env->timeout_ms
                                           : DEFAULT_TIMEOUT_MS;
  j->ex = ex;
  j->cb = cb;
  j->ud = ud;
  ag_log_debug(call->session_id, "mcp call %s: %s on %s", call->call_id ? call->call_id : "-", c->tool,
               c->server->name);
  rc = ag__mcp_request(s, "tools/call", params, timeout, on_call_reply, j, &j->req);
  if (rc < 0) goto fail;
  ex->ops++;
  if (job) *job = (ag_tool_job *)j;
  return 0;
fail:
  if (j) {
    ag_tool_output_free(j->out);
    free(j->server_name);
  }
  free(j);
  return rc;
}

static void mcp_cancel(ag_executor *base, ag_tool_job *job) {
  (void)base;
  mcp_job *j = (mcp_job *)job;
  if (j) ag__mcp_cancel(j->req);
}

static void mcp_close(ag_executor *base, void (*done)(void *ud), void *ud) {
  mcp_exec *ex = (mcp_exec *)base;
  if (ex->closing) return;
  ex->closing = true;
  ex->done = done;
  ex->done_ud = ud;
  /* Closing a session does not touch the map (only an idle session removes itself). */
  size_t pos = 0;
  const char *key;
  ag__mcp_session *s;
  while ((s = ag_map_next(&ex->sessions, &pos, &key)))
    close_session(ex, s);
  ag_map_deinit(&ex->sessions);
  ag_map_init(&ex->sessions);
  maybe_finish(ex);
}

static const struct ag_executor_vtbl mcp_vtbl = {
    .kind = "mcp",
    .compile = mcp_compile,
    .release = mcp_release,
    .start = mcp_start,
    .cancel = mcp_cancel,
    .close = mcp_close,
};

int ag_exec_mcp_new(const ag_tool_env *env, ag_executor **out) {
  *out = NULL;
  if (!env || !env->loop) return AG_EINVAL;
  mcp_exec *ex = calloc(1, sizeof *ex);
  if (!ex) return AG_ENOMEM;
  if (uv_timer_init(env->loop, &ex->timer) < 0) {
    free(ex);
    return AG_ENOMEM;
  }
  ex->timer.data = ex;
  ex->base.vt = &mcp_vtbl;
  ex->env = env;
  ag_map_init(&ex->sessions);
  *out = &ex->base;
  return 0;
}

/* ---- tools/list ---- */

typedef struct list_op {
  mcp_exec *ex;
  ag__mcp_session *s;
  ag_mcp_list_fn cb;
  void *ud;
  ag_json *tools; /* array of the tool objects of every page so far */
  int pages;
} list_op;

static int tri(const ag_json *annotations, const char *key) {
  bool v;
  return ag_json_get_bool(annotations, key, &v) ? (int)v : -1;
}

static void list_end(list_op *op, int err, const char *msg) {
  mcp_exec *ex = op->ex;
  size_t n = ag_json_len(op->tools);
  ag_mcp_tool *tools = NULL;
  char **texts = NULL;
  if (err == 0 && n) {
    tools = calloc(n, sizeof *tools);
    texts = calloc(2 * n, sizeof *texts);
    if (!tools || !texts) {
      err = AG_ENOMEM;
      msg = "out of memory";
    }
  }
  for (size_t i = 0; err == 0 && i < n; i++) {
    const ag_json *t = ag_json_at(op->tools, i);
    const ag_json *schema = ag_json_get(t, "inputSchema"), *osch = ag_json_get(t, "outputSchema");
    const ag_json *ann = ag_json_get(t, "annotations");
    texts[2 * i] = ag_json_is(schema, AG_JSON_OBJECT) ? ag_json_dumps(schema) : ag_strdup("{\"type\":\"object\"}");
    texts[2 * i + 1] = ag_json_is(osch, AG_JSON_OBJECT) ? ag_json_dumps(osch) : NULL;
    if (!texts[2 * i] || (ag_json_is(osch, AG_JSON_OBJECT) && !texts[2 * i + 1])) {
      err = AG_ENOMEM;
      msg = "out of memory";
      break;
    }
    tools[i] = (ag_mcp_tool){
        .name = ag_json_get_str(t, "name"),
        .title = ag_json_get_str(t, "title") ? ag_json_get_str(t, "title") : ag_json_get_str(ann, "title"),
        .description = ag_json_get_str(t, "description"),
        .input_schema = texts[2 * i],
        .output_schema = texts[2 * i + 1],
        .read_only_hint = tri(ann, "readOnlyHint"),
        .idempotent_hint = tri(ann, "idempotentHint"),
        .destructive_hint = tri(ann, "destructiveHint"),
        .open_world_hint = tri(ann, "openWorldHint"),
    };
  }
  if (err < 0)
    op->cb(err, msg ? msg : ag_strerror(err), NULL, 0, op->ud);
  else
    op->cb(0, NULL, tools, n, op->ud);
  for (size_t i = 0; texts && i < 2 * n; i++)
    free(texts[i]);
  free(texts);
  free(tools);
  ag_json_free(op->tools);
  free(op);
  ex->ops--;
  maybe_finish(ex);
}

static int list_page(list_op *op, const char *cursor);

static void on_list_reply(int err, const ag_json *result, const char *msg, void *ud) {
  list_op *op = ud;
  char buf[256];
  const char *name = ag__mcp_session_cfg(op->s)->name;
  if (err < 0) {
    list_end(op, err, msg);
    return;
  }
  const ag_json *tools = ag_json_get(result, "tools");
  if (!ag_json_is(tools, AG_JSON_ARRAY)) {
    snprintf(buf, sizeof buf, "MCP server \"%s\" answered tools/list without a tools array", name);
    list_end(op, AG_EPROTO, buf);
    return;
  }
  for (size_t i = 0; i < ag_json_len(tools); i++) {
    ag_json *t = ag_json_at(tools, i);
    const char *tn = ag_json_get_str(t, "name");
    if (!tn || !*tn) {
      snprintf(buf, sizeof buf, "MCP server \"%s\" listed a tool without a name (tools[%zu])", name, i);
      list_end(op, AG_EPROTO, buf);
      return;
    }
    if (ag_json_len(op->tools) >= MAX_LIST_TOOLS) {
      snprintf(buf, sizeof buf, "MCP server \"%s\" lists more than %d tools", name, MAX_LIST_TOOLS);
      list_end(op, AG_ELIMIT, buf);
      return;
    }
    if (ag_json_push_take(op->tools, ag_json_ref(t)) < 0) {
      list_end(op, AG_ENOMEM, "out of memory");
      return;
    }
  }
  const char *cursor = ag_json_get_str(ag_json_is(result, AG_JSON_OBJECT) ? result : NULL, "nextCursor");
  if (!cursor || !*cursor) {
    list_end(op, 0, NULL);
    return;
  }
  if (++op->pages >= MAX_LIST_PAGES) {
    snprintf(buf, sizeof buf, "MCP server \"%s\" gave more than %d pages of tools", name, MAX_LIST_PAGES);
    list_end(op, AG_ELIMIT, buf);
    return;
  }
  int rc = list_page(op, cursor);
  if (rc < 0) list_end(op, rc, ag_strerror(rc));
}

static int list_page(list_op *op, const char *cursor) {
  ag_json *params = NULL;
  if (cursor) {
    params = ag_json_object_new();
    if (!params || ag_json_set_take(params, "cursor", ag_json_string_new(cursor)) < 0) {
      ag_json_free(params);
      return AG_ENOMEM;
    }
  }
  uint64_t timeout = op->ex->env->timeout_ms ? op->ex->env->timeout_ms : DEFAULT_TIMEOUT_MS;
  return ag__mcp_request(op->s, "tools/list", params, timeout, on_list_reply, op, NULL);
}

int ag_mcp_list_tools(ag_executor *base, const char *server_config, ag_mcp_list_fn cb, void *ud, char *err,
                      size_t errlen) {
  if (!base || base->vt != &mcp_vtbl || !cb) return fail(err, errlen, "not an mcp executor");
  mcp_exec *ex = (mcp_exec *)base;
  if (ex->closing) return AG_ESHUTDOWN;
  char jerr[160];
  ag_json *root =
      ag_json_parse(server_config ? server_config : "", server_config ? strlen(server_config) : 0, jerr, sizeof jerr);
  if (!root) return fail(err, errlen, "server: not valid JSON (%s)", jerr);
  ag__mcp_server_cfg *cfg = NULL;
  int rc = parse_server(ex, root, "server", &cfg, err, errlen);
  ag_json_free(root);
  if (rc < 0) return rc;
  list_op *op = calloc(1, sizeof *op);
  rc = op && (op->tools = ag_json_array_new()) ? 0 : AG_ENOMEM;
  if (rc == 0) rc = get_session(ex, cfg, &op->s);
  ag__mcp_server_cfg_unref(cfg);
  if (rc == 0) {
    op->ex = ex;
    op->cb = cb;
    op->ud = ud;
    rc = list_page(op, NULL);
  }
  if (rc < 0) {
    if (op) ag_json_free(op->tools);
    free(op);
    return rc;
  }
  ex->ops++;
  return 0;
}

bool ag__mcp_exec_stats(ag_executor *base, const char *server_config, ag__mcp_stats *out) {
  memset(out, 0, sizeof *out);
  if (!base || base->vt != &mcp_vtbl) return false;
  mcp_exec *ex = (mcp_exec *)base;
  ag_json *root = ag_json_parse(server_config, strlen(server_config), NULL, 0);
  ag__mcp_server_cfg *cfg = NULL;
  int rc = root ? ag__mcp_server_cfg_parse(root, "server", ex->env->allow_private_hosts, &cfg, NULL, 0) : AG_EINVAL;
  ag_json_free(root);
  if (rc < 0) return false;
  ag__mcp_session *s = ag_map_get(&ex->sessions, cfg->key);
  ag__mcp_server_cfg_unref(cfg);
  if (!s) return false;
  ag__mcp_session_stats(s, out);
  return true;
}

/* ---- catalog names ---- */

int ag_mcp_catalog_name(const char *prefix, const char *remote, char out[AG_MCP_CATALOG_NAME_MAX + 1]) {
  out[0] = '\0';
  if (!remote || !*remote) return AG_EINVAL;
  char full[AG_MCP_CATALOG_NAME_MAX + 1];
  size_t n = 0, total = 0;
  uint32_t h = 2166136261u; /* FNV-1a over the uncut, unsanitised name */
  const char *parts[3] = {prefix && *prefix ? prefix : NULL, prefix && *prefix ? "__" : NULL, remote};
  for (size_t p = 0; p < 3; p++) {
    for (const char *c = parts[p]; c && *c; c++) {
      h = (h ^ (unsigned char)*c) * 16777619u;
      unsigned char ch = (unsigned char)*c;
      bool ok =
          (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
      if (n < AG_MCP_CATALOG_NAME_MAX) full[n++] = ok ? (char)ch : '_';
      total++;
    }
  }
  if (total <= AG_MCP_CATALOG_NAME_MAX) {
    memcpy(out, full, n);
    out[n] = '\0';
    return 0;
  }
  snprintf(out, AG_MCP_CATALOG_NAME_MAX + 1, "%.55s_%08x", full, (unsigned)h);
  return 0;
}
