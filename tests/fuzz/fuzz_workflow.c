/* libFuzzer target for workflow graphs (agent/workflow.c): the "workflow" section of a template
 * document and a run's stored checkpoint, both read from outside (admin API bodies, template
 * files, database rows). The input is a section, optionally followed by a NUL byte and a
 * checkpoint. A section that compiles must re-compile from its own text; a run driven through it
 * with texts taken from the input must stay within max_transitions; every checkpoint that loads
 * must dump to a text that loads to the same dump. Must never crash or leak. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/workflow.h"
#include "base/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_roundtrip(const ag_workflow *wf, const ag_wf_run *r) {
  char *a = ag_wf_run_dump(wf, r);
  if (!a) return;
  ag_wf_run back;
  char err[256];
  int rc = ag_wf_run_load(wf, a, &back, err, sizeof err);
  assert(rc == 0 || rc == AG_ENOMEM);
  if (rc == 0) {
    char *b = ag_wf_run_dump(wf, &back);
    assert(!b || strcmp(a, b) == 0);
    free(b);
    ag_wf_run_deinit(&back);
  }
  free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *nul = memchr(data, 0, size);
  size_t slen = nul ? (size_t)(nul - data) : size;
  ag_json *section = ag_json_parse((const char *)data, slen, NULL, 0);
  if (!section) return 0;
  ag_workflow *wf = NULL;
  char err[512] = "";
  int rc = ag_workflow_compile(section, &wf, err, sizeof err);
  ag_json_free(section);
  if (rc < 0) {
    assert(!wf);
    assert(rc == AG_ENOMEM || err[0]); /* a refusal always says why */
    return 0;
  }
  /* Its own text compiles again, to the same text. */
  const char *text = ag_workflow_text(wf);
  ag_json *again = ag_json_parse(text, strlen(text), NULL, 0);
  ag_workflow *wf2 = NULL;
  if (again && ag_workflow_compile(again, &wf2, err, sizeof err) == 0) {
    assert(strcmp(ag_workflow_text(wf2), text) == 0);
    ag_workflow_free(wf2);
  }
  ag_json_free(again);

  if (nul) {
    /* A stored checkpoint. */
    char *ck = malloc(size - slen);
    if (ck) {
      memcpy(ck, nul + 1, size - slen - 1);
      ck[size - slen - 1] = '\0';
      ag_wf_run r;
      if (ag_wf_run_load(wf, ck, &r, err, sizeof err) == 0) {
        check_roundtrip(wf, &r);
        ag_wf_run_deinit(&r);
      }
      free(ck);
    }
  } else {
    /* Drive a run: each node's text is a slice of the input. */
    ag_wf_run r;
    if (ag_wf_run_init(wf, &r) == 0) {
      size_t pos = 0;
      for (int step = 0; step < AG_WF_MAX_TRANSITIONS + 2 && r.node != AG_WF_END; step++) {
        const ag_wf_node *n = ag_workflow_node(wf, r.node);
        assert(n);
        size_t len = size ? (size_t)data[pos % size] % 64 : 0;
        char *piece = calloc(1, len + 1);
        if (!piece) break;
        for (size_t i = 0; i < len && size; i++)
          piece[i] = (char)data[(pos + 1 + i) % size];
        pos += len + 1;
        bool builtin = n->kind == AG_WF_CONDITION || n->kind == AG_WF_MERGE || n->kind == AG_WF_SET;
        char *in = ag_wf_render(n->input ? n->input : "{task}", "the task", &r);
        char *args = ag_wf_render_args(n, "the task", &r);
        free(in);
        free(args);
        rc = ag_wf_node_done(wf, &r, "the task", builtin ? NULL : piece, err, sizeof err);
        free(piece);
        if (rc < 0) {
          if (n->timeout_s > 0 && ag_wf_escalate(wf, &r) == 0) continue;
          break;
        }
        if (ag_wf_advance(wf, &r, err, sizeof err) < 0) break;
        assert(r.transitions <= ag_workflow_max_transitions(wf));
      }
      check_roundtrip(wf, &r);
      char *answer = ag_wf_answer(wf, &r, "the task");
      free(answer);
      ag_wf_run_deinit(&r);
    }
  }
  ag_workflow_free(wf);
  return 0;
}
