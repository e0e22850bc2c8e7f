/* The parts of the executor contract every executor shares: tool outputs (tools/executor.h). */
#include "tools/executor.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

ag_tool_output *ag_tool_output_new(size_t max_bytes) {
  ag_tool_output *o = calloc(1, sizeof *o);
  if (!o) return NULL;
  ag_buf_init(&o->text, max_bytes ? max_bytes : 256u << 10);
  return o;
}

void ag_tool_output_free(ag_tool_output *o) {
  if (!o) return;
  ag_buf_deinit(&o->text);
  free(o->awaiting_session);
  for (size_t i = 0; i < o->n_sources; i++) {
    free(o->sources[i].url);
    free(o->sources[i].title);
    free(o->sources[i].snippet);
  }
  free(o->sources);
  for (size_t i = 0; i < o->n_artifacts; i++) {
    free(o->artifacts[i].name);
    free(o->artifacts[i].mime_type);
    free(o->artifacts[i].content);
  }
  free(o->artifacts);
  free(o);
}

int ag_tool_output_add_source(ag_tool_output *o, const char *url, const char *title, const char *snippet) {
  if (!url) return AG_EINVAL;
  ag_tool_source *p = realloc(o->sources, (o->n_sources + 1) * sizeof *p);
  if (!p) return AG_ENOMEM;
  o->sources = p;
  ag_tool_source *s = &p[o->n_sources];
  s->url = ag_strdup(url);
  s->title = ag_strdup(title);
  s->snippet = ag_strdup(snippet);
  if (!s->url || (title && !s->title) || (snippet && !s->snippet)) {
    free(s->url);
    free(s->title);
    free(s->snippet);
    return AG_ENOMEM;
  }
  o->n_sources++;
  return 0;
}

int ag_tool_output_add_artifact(ag_tool_output *o, const char *name, const char *mime_type, const char *content) {
  if (!name || !content) return AG_EINVAL;
  ag_tool_artifact *p = realloc(o->artifacts, (o->n_artifacts + 1) * sizeof *p);
  if (!p) return AG_ENOMEM;
  o->artifacts = p;
  ag_tool_artifact *a = &p[o->n_artifacts];
  a->name = ag_strdup(name);
  a->mime_type = ag_strdup(mime_type ? mime_type : "text/markdown");
  a->content = ag_strdup(content);
  if (!a->name || !a->mime_type || !a->content) {
    free(a->name);
    free(a->mime_type);
    free(a->content);
    return AG_ENOMEM;
  }
  o->n_artifacts++;
  return 0;
}

void ag_tool_output_fail(ag_tool_output *o, const char *fmt, ...) {
  ag_buf_reset(&o->text);
  va_list ap;
  va_start(ap, fmt);
  int rc = ag_buf_vappendf(&o->text, fmt, ap);
  va_end(ap);
  if (rc < 0) {
    /* The message itself did not fit the cap: keep a cut of it rather than nothing. */
    ag_buf_reset(&o->text);
    if (ag_buf_append_str(&o->text, "error: the tool failed (message too long)") < 0) ag_buf_reset(&o->text);
  }
  o->is_error = true;
}
