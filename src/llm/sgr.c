/* SGR schema building and answer parsing (see sgr.h). */
#include "llm/sgr.h"

#include <stdlib.h>
#include <string.h>

#include "base/json.h"

static ag_json *parse_object(const char *s) {
  ag_json *j = s ? ag_json_parse(s, strlen(s), NULL, 0) : NULL;
  if (j && !ag_json_is(j, AG_JSON_OBJECT)) {
    ag_json_free(j);
    j = NULL;
  }
  return j;
}

/* {"type":"object","description":..,"properties":{"tool_name_discriminator":{const},..},..} */
static ag_json *alternative(const ag_tool_def *t) {
  ag_json *params = parse_object(t->parameters);
  ag_json *alt = ag_json_object_new(), *props = ag_json_object_new(), *req = ag_json_array_new();
  ag_json *disc = ag_json_object_new();
  if (!params || !alt || !props || !req || !disc) goto fail;
  if (ag_json_set_take(disc, "type", ag_json_string_new("string")) < 0 ||
      ag_json_set_take(disc, "const", ag_json_string_new(t->name)) < 0)
    goto fail;
  if (ag_json_set_take(props, AG_SGR_DISCRIMINATOR, disc) < 0) {
    disc = NULL;
    goto fail;
  }
  disc = NULL;
  ag_json *pp = ag_json_get(params, "properties");
  for (void *it = ag_json_iter(pp); it; it = ag_json_iter_next(pp, it))
    if (ag_json_set_take(props, ag_json_iter_key(it), ag_json_ref(ag_json_iter_value(it))) < 0) goto fail;
  if (ag_json_push_take(req, ag_json_string_new(AG_SGR_DISCRIMINATOR)) < 0) goto fail;
  ag_json *pr = ag_json_get(params, "required");
  for (size_t i = 0; i < ag_json_len(pr); i++)
    if (ag_json_push_take(req, ag_json_ref(ag_json_at(pr, i))) < 0) goto fail;
  if (ag_json_set_take(alt, "type", ag_json_string_new("object")) < 0 ||
      (t->description && ag_json_set_take(alt, "description", ag_json_string_new(t->description)) < 0) ||
      ag_json_set_take(alt, "properties", props) < 0) {
    props = NULL;
    goto fail;
  }
  props = NULL;
  if (ag_json_set_take(alt, "required", req) < 0) {
    req = NULL;
    goto fail;
  }
  req = NULL;
  if (ag_json_set_take(alt, "additionalProperties", ag_json_bool_new(false)) < 0) goto fail;
  ag_json_free(params);
  return alt;
fail:
  ag_json_free(params);
  ag_json_free(alt);
  ag_json_free(props);
  ag_json_free(req);
  ag_json_free(disc);
  return NULL;
}

int ag_sgr_build_schema(const char *reasoning, const ag_tool_def *tools, size_t n_tools, ag_buf *out) {
  ag_json *root = parse_object(reasoning);
  if (!root) return AG_EINVAL;
  int rc = AG_ENOMEM;
  ag_json *props = ag_json_get(root, "properties");
  ag_json *req = ag_json_get(root, "required");
  ag_json *any = ag_json_array_new(), *fn = ag_json_object_new();
  if (!ag_json_is(props, AG_JSON_OBJECT) || !ag_json_is(req, AG_JSON_ARRAY) || !any || !fn) {
    rc = any && fn ? AG_EINVAL : AG_ENOMEM;
    ag_json_free(any);
    ag_json_free(fn);
    goto done;
  }
  for (size_t i = 0; i < n_tools; i++) {
    ag_json *alt = alternative(&tools[i]);
    if (!alt) {
      rc = AG_EINVAL;
      ag_json_free(any);
      ag_json_free(fn);
      goto done;
    }
    if (ag_json_push_take(any, alt) < 0) {
      ag_json_free(any);
      ag_json_free(fn);
      goto done;
    }
  }
  if (ag_json_set_take(fn, "anyOf", any) < 0) {
    ag_json_free(fn);
    goto done;
  }
  if (ag_json_set_take(props, "function", fn) < 0 || ag_json_push_take(req, ag_json_string_new("function")) < 0 ||
      ag_json_set_take(root, "additionalProperties", ag_json_bool_new(false)) < 0)
    goto done;
  rc = ag_json_dump(root, out);
done:
  ag_json_free(root);
  return rc;
}

int ag_sgr_parse(const char *content, size_t len, char **reasoning, char **tool_name, char **args) {
  *reasoning = *tool_name = *args = NULL;
  ag_json *root = ag_json_parse(content, len, NULL, 0);
  ag_json *fn = ag_json_get(root, "function");
  const char *name = ag_json_get_str(fn, AG_SGR_DISCRIMINATOR);
  if (!ag_json_is(fn, AG_JSON_OBJECT) || !name) {
    ag_json_free(root);
    return AG_EPROTO;
  }
  *tool_name = strdup(name);
  ag_json *a = ag_json_copy(fn);
  ag_json *r = ag_json_copy(root);
  if (a) (void)ag_json_del(a, AG_SGR_DISCRIMINATOR);
  if (r) (void)ag_json_del(r, "function");
  *args = a ? ag_json_dumps(a) : NULL;
  *reasoning = r ? ag_json_dumps(r) : NULL;
  ag_json_free(a);
  ag_json_free(r);
  ag_json_free(root);
  if (!*tool_name || !*args || !*reasoning) {
    free(*tool_name);
    free(*args);
    free(*reasoning);
    *reasoning = *tool_name = *args = NULL;
    return AG_ENOMEM;
  }
  return 0;
}
