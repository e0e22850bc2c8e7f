/* Chat message helpers shared by every provider and by the agent loop (see llm.h). */
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "llm/llm.h"

static const char *const role_names[] = {"system", "user", "assistant", "tool"};

const char *ag_role_name(int role) { return role >= 0 && role < 4 ? role_names[role] : "user"; }

int ag_role_parse(const char *name) {
  for (int i = 0; name && i < 4; i++)
    if (strcmp(name, role_names[i]) == 0) return i;
  return -1;
}

void ag_tool_call_deinit(ag_llm_tool_call *tc) {
  free(tc->id);
  free(tc->name);
  free(tc->arguments);
  tc->id = tc->name = tc->arguments = NULL;
}

void ag_msg_deinit(ag_msg *m) {
  if (!m) return;
  free(m->content);
  for (size_t i = 0; i < m->n_tool_calls; i++)
    ag_tool_call_deinit(&m->tool_calls[i]);
  free(m->tool_calls);
  free(m->tool_call_id);
  free(m->name);
  memset(m, 0, sizeof *m);
}

static int dup_opt(char **dst, const char *src) {
  *dst = NULL;
  if (!src) return 0;
  *dst = strdup(src);
  return *dst ? 0 : AG_ENOMEM;
}

int ag_msg_copy(ag_msg *dst, const ag_msg *src) {
  memset(dst, 0, sizeof *dst);
  dst->role = src->role;
  if (dup_opt(&dst->content, src->content) < 0 || dup_opt(&dst->tool_call_id, src->tool_call_id) < 0 ||
      dup_opt(&dst->name, src->name) < 0)
    goto fail;
  if (src->n_tool_calls) {
    dst->tool_calls = calloc(src->n_tool_calls, sizeof *dst->tool_calls);
    if (!dst->tool_calls) goto fail;
    dst->n_tool_calls = src->n_tool_calls;
    for (size_t i = 0; i < src->n_tool_calls; i++) {
      const ag_llm_tool_call *s = &src->tool_calls[i];
      ag_llm_tool_call *d = &dst->tool_calls[i];
      if (dup_opt(&d->id, s->id) < 0 || dup_opt(&d->name, s->name) < 0 || dup_opt(&d->arguments, s->arguments) < 0)
        goto fail;
    }
  }
  return 0;
fail:
  ag_msg_deinit(dst);
  return AG_ENOMEM;
}

static ag_json *tool_call_json(const ag_llm_tool_call *call) {
  ag_json *tc = ag_json_object_new(), *fn = ag_json_object_new();
  if (!tc || !fn || ag_json_set_take(fn, "name", ag_json_string_new(call->name)) < 0 ||
      ag_json_set_take(fn, "arguments", ag_json_string_new(call->arguments ? call->arguments : "{}")) < 0 ||
      ag_json_set_take(tc, "id", ag_json_string_new(call->id)) < 0 ||
      ag_json_set_take(tc, "type", ag_json_string_new("function")) < 0) {
    ag_json_free(tc);
    ag_json_free(fn);
    return NULL;
  }
  if (ag_json_set_take(tc, "function", fn) < 0) { /* consumed fn */
    ag_json_free(tc);
    return NULL;
  }
  return tc;
}

char *ag_tool_calls_to_json(const ag_llm_tool_call *calls, size_t n) {
  ag_json *arr = ag_json_array_new();
  if (!arr) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (ag_json_push_take(arr, tool_call_json(&calls[i])) < 0) { /* consumes, NULL-safe */
      ag_json_free(arr);
      return NULL;
    }
  }
  char *s = ag_json_dumps(arr);
  ag_json_free(arr);
  return s;
}

int ag_tool_calls_from_json(const char *json, ag_llm_tool_call **calls, size_t *n) {
  *calls = NULL;
  *n = 0;
  ag_json *arr = ag_json_parse(json, strlen(json), NULL, 0);
  if (!ag_json_is(arr, AG_JSON_ARRAY)) {
    ag_json_free(arr);
    return AG_EINVAL;
  }
  size_t cnt = ag_json_len(arr);
  ag_llm_tool_call *out = cnt ? calloc(cnt, sizeof *out) : NULL;
  if (cnt && !out) {
    ag_json_free(arr);
    return AG_ENOMEM;
  }
  for (size_t i = 0; i < cnt; i++) {
    ag_json *tc = ag_json_at(arr, i), *fn = ag_json_get(tc, "function");
    const char *id = ag_json_get_str(tc, "id"), *name = ag_json_get_str(fn, "name");
    const char *args = ag_json_get_str(fn, "arguments");
    out[i].id = strdup(id ? id : "");
    out[i].name = strdup(name ? name : "");
    out[i].arguments = strdup(args ? args : "{}");
    if (!out[i].id || !out[i].name || !out[i].arguments) {
      for (size_t k = 0; k <= i; k++)
        ag_tool_call_deinit(&out[k]);
      free(out);
      ag_json_free(arr);
      return AG_ENOMEM;
    }
  }
  ag_json_free(arr);
  *calls = out;
  *n = cnt;
  return 0;
}

void ag_chat_result_free(ag_chat_result *r) {
  if (!r) return;
  ag_msg_deinit(&r->message);
  free(r->finish_reason);
  free(r->model);
  free(r);
}
