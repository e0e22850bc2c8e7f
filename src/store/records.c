/* Ownership helpers for the storage records of store.h: NULL-safe releases and deep copies. A
 * record owns every non-NULL string it points at; a copy duplicates all of them or, on failure,
 * leaves the destination zeroed so the caller has nothing to clean up. */
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "store/store.h"

/* Duplicates an optional string: NULL stays NULL, anything else must be copied. */
static int dup_opt(char **dst, const char *src) {
  *dst = NULL;
  if (!src) return 0;
  *dst = ag_strdup(src);
  return *dst ? 0 : AG_ENOMEM;
}

void ag_session_rec_deinit(ag_session_rec *s) {
  if (!s) return;
  free(s->id);
  free(s->template_name);
  free(s->state);
  free(s->task);
  free(s->stream_format);
  free(s->parent_id);
  free(s->thread_id);
  free(s->stage);
  free(s->checkpoint);
  free(s->current_step_reasoning);
  free(s->result);
  free(s->error);
  memset(s, 0, sizeof *s);
}

void ag_session_rec_free(ag_session_rec *s) {
  if (!s) return;
  ag_session_rec_deinit(s);
  free(s);
}

void ag_session_recs_free(ag_session_rec *recs, size_t n) {
  if (!recs) return;
  for (size_t i = 0; i < n; i++)
    ag_session_rec_deinit(&recs[i]);
  free(recs);
}

void ag_message_rec_deinit(ag_message_rec *m) {
  if (!m) return;
  free(m->role);
  free(m->content);
  free(m->tool_calls);
  free(m->tool_call_id);
  free(m->name);
  memset(m, 0, sizeof *m);
}

void ag_message_recs_free(ag_message_rec *msgs, size_t n) {
  if (!msgs) return;
  for (size_t i = 0; i < n; i++)
    ag_message_rec_deinit(&msgs[i]);
  free(msgs);
}

int ag_session_rec_copy(ag_session_rec *dst, const ag_session_rec *src) {
  if (!dst || !src) return AG_EINVAL;
  /* Scalars first, then each string over the top, so a half-done copy is always safe to deinit. */
  *dst = *src;
  dst->id = dst->template_name = dst->state = dst->task = dst->stream_format = dst->parent_id = NULL;
  dst->thread_id = dst->stage = dst->checkpoint = NULL;
  dst->current_step_reasoning = dst->result = dst->error = NULL;
  int rc;
  if ((rc = dup_opt(&dst->id, src->id)) < 0) goto fail;
  if ((rc = dup_opt(&dst->template_name, src->template_name)) < 0) goto fail;
  if ((rc = dup_opt(&dst->state, src->state)) < 0) goto fail;
  if ((rc = dup_opt(&dst->task, src->task)) < 0) goto fail;
  if ((rc = dup_opt(&dst->stream_format, src->stream_format)) < 0) goto fail;
  if ((rc = dup_opt(&dst->parent_id, src->parent_id)) < 0) goto fail;
  if ((rc = dup_opt(&dst->thread_id, src->thread_id)) < 0) goto fail;
  if ((rc = dup_opt(&dst->stage, src->stage)) < 0) goto fail;
  if ((rc = dup_opt(&dst->current_step_reasoning, src->current_step_reasoning)) < 0) goto fail;
  if ((rc = dup_opt(&dst->result, src->result)) < 0) goto fail;
  if ((rc = dup_opt(&dst->error, src->error)) < 0) goto fail;
  if ((rc = dup_opt(&dst->checkpoint, src->checkpoint)) < 0) goto fail;
  return 0;
fail:
  ag_session_rec_deinit(dst);
  return rc;
}

int ag_message_rec_copy(ag_message_rec *dst, const ag_message_rec *src) {
  if (!dst || !src) return AG_EINVAL;
  *dst = *src;
  dst->role = dst->content = dst->tool_calls = dst->tool_call_id = dst->name = NULL;
  int rc;
  if ((rc = dup_opt(&dst->role, src->role)) < 0) goto fail;
  if ((rc = dup_opt(&dst->content, src->content)) < 0) goto fail;
  if ((rc = dup_opt(&dst->tool_calls, src->tool_calls)) < 0) goto fail;
  if ((rc = dup_opt(&dst->tool_call_id, src->tool_call_id)) < 0) goto fail;
  if ((rc = dup_opt(&dst->name, src->name)) < 0) goto fail;
  return 0;
fail:
  ag_message_rec_deinit(dst);
  return rc;
}
