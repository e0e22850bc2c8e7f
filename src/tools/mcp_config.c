/* MCP server configuration: the "server" object of an mcp tool, checked field by field.
 *
 * Every mistake is refused with a sentence that names the field ("executor_config.server.args[2]:
 * must be a string"), and unknown keys are refused too, since a misspelt "idle_timout_ms" would
 * otherwise be silently ignored. Secrets stay references ({"from_env": "VAR"}) until a session
 * opens; the session manager's key is built from the references, never from their values, so a
 * secret never ends up in a map key or a log line. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/json.h"
#include "tools/mcp_internal.h"

#define MAX_ARGS 256
#define MAX_VARS 128
#define MAX_STRING 8192

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

static void vars_free(ag__mcp_var *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(v[i].name);
    free(v[i].value);
    free(v[i].from_env);
  }
  free(v);
}

static void cfg_free(ag__mcp_server_cfg *c) {
  free(c->name);
  free(c->command);
  for (size_t i = 0; i < c->n_args; i++)
    free(c->args[i]);
  free(c->args);
  free(c->cwd);
  vars_free(c->env, c->n_env);
  free(c->url);
  vars_free(c->headers, c->n_headers);
  free(c->key);
  free(c);
}

ag__mcp_server_cfg *ag__mcp_server_cfg_ref(ag__mcp_server_cfg *c) {
  if (c) c->refs++;
  return c;
}

void ag__mcp_server_cfg_unref(ag__mcp_server_cfg *c) {
  if (c && --c->refs == 0) cfg_free(c);
}

static bool has_ctl(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f) return true;
  return false;
}

/* A string field: present and a string of 1..MAX_STRING bytes (no control characters when
 * `plain`). *out is owned. Absent is fine unless `required`. */
static int get_string(const ag_json *obj, const char *key, const char *field, bool required, bool plain, char **out,
                      char *err, size_t errlen) {
  *out = NULL;
  ag_json *v = ag_json_get(obj, key);
  if (!v) return required ? fail(err, errlen, "%s.%s: is required", field, key) : 0;
  const char *s = ag_json_str(v);
  if (!s) return fail(err, errlen, "%s.%s: must be a string", field, key);
  size_t len = ag_json_str_len(v);
  if (len == 0) return fail(err, errlen, "%s.%s: must not be empty", field, key);
  if (len > MAX_STRING || strlen(s) != len) return fail(err, errlen, "%s.%s: is too long or holds a NUL", field, key);
  if (plain && has_ctl(s)) return fail(err, errlen, "%s.%s: must not contain control characters", field, key);
  *out = ag_strdup(s);
  return *out ? 0 : AG_ENOMEM;
}

static int get_ms(const ag_json *obj, const char *key, const char *field, uint64_t min, uint64_t max, uint64_t def,
                  uint64_t *out, char *err, size_t errlen) {
  *out = def;
  ag_json *v = ag_json_get(obj, key);
  if (!v) return 0;
  if (!ag_json_is(v, AG_JSON_INT) || ag_json_int(v) < (long long)min || ag_json_int(v) > (long long)max)
    return fail(err, errlen, "%s.%s: must be an integer from %llu to %llu", field, key, (unsigned long long)min,
                (unsigned long long)max);
  *out = (uint64_t)ag_json_int(v);
  return 0;
}

static bool is_env_name(const char *s) {
  if (!*s || !(isalpha((unsigned char)*s) || *s == '_')) return false;
  for (; *s; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_')) return false;
  return true;
}

/* RFC 9110 token characters, for header names. */
static bool is_token(const char *s) {
  if (!*s) return false;
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (!(isalnum(ch) || strchr("!#$%&'*+-.^_`|~", ch))) return false;
  }
  return true;
}

static bool ends_with_ci(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

static bool contains_ci(const char *s, const char *needle) {
  for (size_t m = strlen(needle); *s; s++)
    if (strncasecmp(s, needle, m) == 0) return true;
  return false;
}

/* Names whose value is a secret, which must then be given by reference (as for subprocess). */
static bool looks_secret(const char *name, bool header) {
  if (header)
    return strcasecmp(name, "authorization") == 0 || strcasecmp(name, "proxy-authorization") == 0 ||
           strcasecmp(name, "cookie") == 0 || contains_ci(name, "token") || contains_ci(name, "secret") ||
           contains_ci(name, "key") || contains_ci(name, "password");
  static const char *const suffixes[] = {"TOKEN", "SECRET", "PASSWORD", "KEY", "CREDENTIALS"};
  for (size_t i = 0; i < AG_ARRAY_LEN(suffixes); i++)
    if (ends_with_ci(name, suffixes[i])) return true;
  return false;
}

static int cmp_var(const void *a, const void *b) {
  return strcasecmp(((const ag__mcp_var *)a)->name, ((const ag__mcp_var *)b)->name);
}

/* The headers the transport itself sets: a configuration may not replace them. */
static const char *const reserved_headers[] = {"accept",        "content-type",   "content-length",
                                               "host",          "mcp-session-id", "mcp-protocol-version",
                                               "last-event-id", "expect",         "transfer-encoding"};

/* "env" or "headers": an object of name -> "literal" | {"from_env": "VAR"}. */
static int get_vars(const ag_json *obj, const char *key, const char *field, bool headers, ag__mcp_var **out,
                    size_t *n_out, char *err, size_t errlen) {
  *out = NULL;
  *n_out = 0;
  ag_json *o = ag_json_get(obj, key);
  if (!o) return 0;
  if (!ag_json_is(o, AG_JSON_OBJECT)) return fail(err, errlen, "%s.%s: must be an object", field, key);
  size_t n = ag_json_len(o);
  if (n > MAX_VARS) return fail(err, errlen, "%s.%s: at most %d entries", field, key, MAX_VARS);
  if (n == 0) return 0;
  ag__mcp_var *v = calloc(n, sizeof *v);
  if (!v) return AG_ENOMEM;
  size_t i = 0;
  int rc = 0;
  for (void *it = ag_json_iter(o); it && i < n; it = ag_json_iter_next(o, it), i++) {
    const char *name = ag_json_iter_key(it);
    ag_json *val = ag_json_iter_value(it);
    if (headers ? !is_token(name) : !is_env_name(name)) {
      rc = fail(err, errlen, "%s.%s: \"%.64s\" is not a valid %s name", field, key, name,
                headers ? "header" : "environment variable");
      break;
    }
    for (size_t k = 0; headers && k < AG_ARRAY_LEN(reserved_headers); k++)
      if (strcasecmp(name, reserved_headers[k]) == 0) {
        rc = fail(err, errlen, "%s.%s.%s: is set by the MCP transport and cannot be configured", field, key, name);
        break;
      }
    if (rc < 0) break;
    if (!(v[i].name = ag_strdup(name))) {
      rc = AG_ENOMEM;
      break;
    }
    if (ag_json_str(val)) {
      const char *s = ag_json_str(val);
      if (strlen(s) != ag_json_str_len(val) || ag_json_str_len(val) > MAX_STRING || (headers && has_ctl(s))) {
        rc = fail(err, errlen, "%s.%s.%s: must be a string without %s", field, key, name,
                  headers ? "control characters" : "NUL bytes");
        break;
      }
      if (looks_secret(name, headers)) {
        rc = fail(err, errlen, "%s.%s.%s: looks like a secret: give it by reference, {\"from_env\": \"VARIABLE\"}",
                  field, key, name);
        break;
      }
      if (!(v[i].value = ag_strdup(s))) rc = AG_ENOMEM;
    } else if (ag_json_is(val, AG_JSON_OBJECT) && ag_json_len(val) == 1 && ag_json_get_str(val, "from_env")) {
      const char *ref = ag_json_get_str(val, "from_env");
      if (!is_env_name(ref)) {
        rc = fail(err, errlen, "%s.%s.%s.from_env: must name an environment variable", field, key, name);
        break;
      }
      if (!(v[i].from_env = ag_strdup(ref))) rc = AG_ENOMEM;
    } else {
      rc = fail(err, errlen, "%s.%s.%s: must be a string or {\"from_env\": \"VARIABLE\"}", field, key, name);
    }
    if (rc < 0) break;
  }
  if (rc == 0) {
    qsort(v, n, sizeof *v, cmp_var);
    for (size_t k = 1; k < n; k++)
      if (strcasecmp(v[k - 1].name, v[k].name) == 0) {
        rc = fail(err, errlen, "%s.%s: \"%.64s\" is given twice", field, key, v[k].name);
        break;
      }
  }
  if (rc < 0) {
    vars_free(v, n);
    return rc;
  }
  *out = v;
  *n_out = n;
  return 0;
}

static int get_args(const ag_json *obj, const char *field, ag__mcp_server_cfg *c, char *err, size_t errlen) {
  ag_json *a = ag_json_get(obj, "args");
  if (!a) return 0;
  if (!ag_json_is(a, AG_JSON_ARRAY)) return fail(err, errlen, "%s.args: must be an array of strings", field);
  size_t n = ag_json_len(a);
  if (n > MAX_ARGS) return fail(err, errlen, "%s.args: at most %d arguments", field, MAX_ARGS);
  if (n == 0) return 0;
  if (!(c->args = calloc(n, sizeof *c->args))) return AG_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    ag_json *s = ag_json_at(a, i);
    if (!ag_json_str(s) || strlen(ag_json_str(s)) != ag_json_str_len(s) || ag_json_str_len(s) > MAX_STRING)
      return fail(err, errlen, "%s.args[%zu]: must be a string", field, i);
    if (!(c->args[i] = ag_strdup(ag_json_str(s)))) return AG_ENOMEM;
    c->n_args = i + 1;
  }
  return 0;
}

static int check_url(const char *url, const char *field, char *err, size_t errlen) {
  size_t skip = 0;
  if (strncasecmp(url, "http://", 7) == 0)
    skip = 7;
  else if (strncasecmp(url, "https://", 8) == 0)
    skip = 8;
  else
    return fail(err, errlen, "%s.url: must be an http or https URL", field);
  if (!url[skip] || url[skip] == '/' || strpbrk(url, " \t"))
    return fail(err, errlen, "%s.url: must be an http or https URL with a host", field);
  return 0;
}

static const char *const known_keys[] = {"transport",
                                         "name",
                                         "command",
                                         "args",
                                         "env",
                                         "cwd",
                                         "url",
                                         "headers",
                                         "startup_timeout_ms",
                                         "idle_timeout_ms",
                                         "shutdown_grace_ms",
                                         "max_message_bytes"};

/* The manager's key: every field in a fixed order, JSON-escaped, references as references. */
static int build_key(ag__mcp_server_cfg *c) {
  ag_buf b;
  ag_buf_init(&b, (size_t)1 << 20);
  int rc = ag_buf_appendf(&b, "%d|%llu|%llu|%llu|%zu|%d|", c->transport, (unsigned long long)c->startup_timeout_ms,
                          (unsigned long long)c->idle_timeout_ms, (unsigned long long)c->shutdown_grace_ms,
                          c->max_message_bytes, c->allow_private_hosts);
  const char *strs[] = {c->command, c->cwd, c->url};
  for (size_t i = 0; rc == 0 && i < AG_ARRAY_LEN(strs); i++) {
    if (rc == 0) rc = ag_buf_append_char(&b, '"');
    if (rc == 0 && strs[i]) rc = ag_buf_append_json_escaped(&b, strs[i], strlen(strs[i]));
    if (rc == 0) rc = ag_buf_append_str(&b, "\",");
  }
  for (size_t i = 0; rc == 0 && i < c->n_args; i++) {
    rc = ag_buf_append_str(&b, "a\"");
    if (rc == 0) rc = ag_buf_append_json_escaped(&b, c->args[i], strlen(c->args[i]));
    if (rc == 0) rc = ag_buf_append_str(&b, "\",");
  }
  for (int pass = 0; pass < 2; pass++) {
    const ag__mcp_var *v = pass ? c->headers : c->env;
    size_t n = pass ? c->n_headers : c->n_env;
    for (size_t i = 0; rc == 0 && i < n; i++) {
      const char *val = v[i].value ? v[i].value : v[i].from_env;
      rc = ag_buf_appendf(&b, "%c\"", pass ? 'h' : 'e');
      if (rc == 0) rc = ag_buf_append_json_escaped(&b, v[i].name, strlen(v[i].name));
      if (rc == 0) rc = ag_buf_append_str(&b, v[i].value ? "\"=\"" : "\"$\"");
      if (rc == 0) rc = ag_buf_append_json_escaped(&b, val, strlen(val));
      if (rc == 0) rc = ag_buf_append_str(&b, "\",");
    }
  }
  if (rc == 0) rc = (c->key = ag_buf_take(&b)) ? 0 : AG_ENOMEM;
  ag_buf_deinit(&b);
  return rc;
}

int ag__mcp_server_cfg_parse(const ag_json *server, const char *field, bool allow_private_hosts,
                             ag__mcp_server_cfg **out, char *err, size_t errlen) {
  *out = NULL;
  if (!ag_json_is(server, AG_JSON_OBJECT)) return fail(err, errlen, "%s: must be an object", field);
  for (void *it = ag_json_iter(server); it; it = ag_json_iter_next(server, it)) {
    const char *k = ag_json_iter_key(it);
    bool known = false;
    for (size_t i = 0; i < AG_ARRAY_LEN(known_keys) && !known; i++)
      known = strcmp(k, known_keys[i]) == 0;
    if (!known) return fail(err, errlen, "%s.%.64s: unknown key", field, k);
  }
  ag__mcp_server_cfg *c = calloc(1, sizeof *c);
  if (!c) return AG_ENOMEM;
  c->refs = 1;
  c->allow_private_hosts = allow_private_hosts;
  char *transport = NULL;
  int rc = get_string(server, "transport", field, true, true, &transport, err, errlen);
  if (rc < 0) goto done;
  if (strcmp(transport, "stdio") == 0) {
    c->transport = AG__MCP_STDIO;
  } else if (strcmp(transport, "http") == 0) {
    c->transport = AG__MCP_HTTP;
  } else {
    rc = fail(err, errlen, "%s.transport: must be \"stdio\" or \"http\"", field);
    goto done;
  }
  bool stdio = c->transport == AG__MCP_STDIO;
  static const char *const stdio_only[] = {"command", "args", "env", "cwd", "shutdown_grace_ms"};
  static const char *const http_only[] = {"url", "headers"};
  const char *const *other = stdio ? http_only : stdio_only;
  size_t n_other = stdio ? AG_ARRAY_LEN(http_only) : AG_ARRAY_LEN(stdio_only);
  for (size_t i = 0; i < n_other; i++)
    if (ag_json_get(server, other[i])) {
      rc = fail(err, errlen, "%s.%s: is not used by the %s transport", field, other[i], transport);
      goto done;
    }

  if ((rc = get_string(server, "name", field, false, true, &c->name, err, errlen)) < 0) goto done;
  if (stdio) {
    if ((rc = get_string(server, "command", field, true, true, &c->command, err, errlen)) < 0) goto done;
    if ((rc = get_args(server, field, c, err, errlen)) < 0) goto done;
    if ((rc = get_vars(server, "env", field, false, &c->env, &c->n_env, err, errlen)) < 0) goto done;
    if ((rc = get_string(server, "cwd", field, false, true, &c->cwd, err, errlen)) < 0) goto done;
    if (c->cwd && c->cwd[0] != '/') {
      rc = fail(err, errlen, "%s.cwd: must be an absolute path", field);
      goto done;
    }
  } else {
    if ((rc = get_string(server, "url", field, true, true, &c->url, err, errlen)) < 0) goto done;
    if ((rc = check_url(c->url, field, err, errlen)) < 0) goto done;
    if ((rc = get_vars(server, "headers", field, true, &c->headers, &c->n_headers, err, errlen)) < 0) goto done;
  }
  uint64_t max_msg = 0;
  if ((rc = get_ms(server, "startup_timeout_ms", field, 100, 600000, AG__MCP_DEFAULT_STARTUP_MS, &c->startup_timeout_ms,
                   err, errlen)) < 0 ||
      (rc = get_ms(server, "idle_timeout_ms", field, 100, 86400000, AG__MCP_DEFAULT_IDLE_MS, &c->idle_timeout_ms, err,
                   errlen)) < 0 ||
      (rc = get_ms(server, "shutdown_grace_ms", field, 0, 60000, AG__MCP_DEFAULT_GRACE_MS, &c->shutdown_grace_ms, err,
                   errlen)) < 0 ||
      (rc = get_ms(server, "max_message_bytes", field, 1024, (uint64_t)64 << 20, AG__MCP_DEFAULT_MAX_MESSAGE, &max_msg,
                   err, errlen)) < 0)
    goto done;
  c->max_message_bytes = (size_t)max_msg;
  if (!c->name) {
    /* The URL without credentials, query or fragment: names end up in logs and messages. */
    const char *u = stdio ? c->command : c->url;
    size_t n = strcspn(u, "?#");
    const char *host = stdio ? NULL : strstr(u, "://");
    const char *auth = host ? host + 3 : NULL;
    const char *at = auth ? memchr(auth, '@', strcspn(auth, "/?#")) : NULL;
    ag_buf b;
    ag_buf_init(&b, MAX_STRING);
    if (at)
      rc = ag_buf_appendf(&b, "%.*s%.*s", (int)(host + 3 - u), u, (int)(n - (size_t)(at + 1 - u)), at + 1);
    else
      rc = ag_buf_append(&b, u, n);
    c->name = rc == 0 ? ag_buf_take(&b) : NULL;
    ag_buf_deinit(&b);
    if (!c->name) {
      rc = AG_ENOMEM;
      goto done;
    }
  }
  rc = build_key(c);
done:
  free(transport);
  if (rc < 0) {
    cfg_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

int ag__mcp_var_resolve(const ag__mcp_var *v, const char *field, char **out, char *err, size_t errlen) {
  *out = NULL;
  if (v->value) {
    *out = ag_strdup(v->value);
    return *out ? 0 : AG_ENOMEM;
  }
  const char *val = getenv(v->from_env);
  if (!val) {
    if (err && errlen)
      snprintf(err, errlen, "%s.%s: the environment variable %s is not set", field, v->name, v->from_env);
    return AG_ENOTFOUND;
  }
  *out = ag_strdup(val);
  return *out ? 0 : AG_ENOMEM;
}
