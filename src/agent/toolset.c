/* The prepared tool set (see toolset.h). */
#include "agent/toolset.h"

#include <stdlib.h>
#include <string.h>

#include "llm/sgr.h"

#define SCHEMA_SLOTS 8
#define SCRATCH_KEEP (64u << 10)

typedef struct schema_slot {
  uint64_t key;
  char *text;
  uint64_t used; /* tick of the last use (LRU) */
} schema_slot;

struct ag_toolset {
  const ag_template *tpl;
  ag_tool_registry *reg;
  uint64_t gen;
  bool resolved;
  const ag_tool *tools[AG_TEMPLATE_MAX_TOOLS];
  bool required[AG_TEMPLATE_MAX_TOOLS];
  size_t n;
  schema_slot slots[SCHEMA_SLOTS];
  uint64_t tick, built;
  ag_buf scratch;
};

ag_toolset *ag_toolset_new(const ag_template *tpl, ag_tool_registry *reg) {
  ag_toolset *ts = calloc(1, sizeof *ts);
  if (!ts) return NULL;
  ts->tpl = tpl;
  ts->reg = reg;
  ag_buf_init(&ts->scratch, 1u << 20);
  return ts;
}

static void drop_tools(ag_toolset *ts) {
  for (size_t i = 0; i < ts->n; i++)
    ag_tool_release(ts->tools[i]);
  ts->n = 0;
}

static void drop_schemas(ag_toolset *ts) {
  for (size_t i = 0; i < SCHEMA_SLOTS; i++) {
    free(ts->slots[i].text);
    ts->slots[i] = (schema_slot){0};
  }
}

void ag_toolset_free(ag_toolset *ts) {
  if (!ts) return;
  drop_tools(ts);
  drop_schemas(ts);
  ag_buf_deinit(&ts->scratch);
  free(ts);
}

void ag_toolset_reset(ag_toolset *ts) {
  if (!ts) return;
  if (ts->scratch.cap > SCRATCH_KEEP)
    ag_buf_deinit(&ts->scratch);
  else
    ag_buf_reset(&ts->scratch);
}

static bool matches(const ag_tool *t, char *const *list, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const char *e = list[i];
    if (strncmp(e, "tag:", 4) == 0 ? ag_tool_has_tag(t, e + 4) : strcmp(e, t->name) == 0) return true;
  }
  return false;
}

bool ag_toolset_allows(const ag_toolset *ts, const ag_tool *t) {
  const ag_template *tpl = ts->tpl;
  if (ag_tool_risk(t) > tpl->max_risk) return false;
  if (matches(t, tpl->deny, tpl->n_deny)) return false;
  return tpl->n_allow == 0 || matches(t, tpl->allow, tpl->n_allow);
}

static void resolve(ag_toolset *ts) {
  drop_tools(ts);
  drop_schemas(ts);
  const ag_template *tpl = ts->tpl;
  for (size_t i = 0; i < tpl->n_tools && ts->n < AG_TEMPLATE_MAX_TOOLS; i++) {
    const ag_tool *t = ag_tool_registry_find(ts->reg, tpl->tools[i]);
    if (!t) continue;
    /* A required tool is offered whatever the lists say (the document refuses a denied one). */
    if (!tpl->tool_required[i] && !ag_toolset_allows(ts, t)) continue;
    ag_tool_hold(t);
    ts->required[ts->n] = tpl->tool_required[i];
    ts->tools[ts->n++] = t;
  }
  ts->gen = ag_tool_registry_generation(ts->reg);
  ts->resolved = true;
}

size_t ag_toolset_tools(ag_toolset *ts, const ag_tool *const **tools, const bool **required) {
  if (!ts->resolved || ts->gen != ag_tool_registry_generation(ts->reg)) resolve(ts);
  *tools = ts->tools;
  if (required) *required = ts->required;
  return ts->n;
}

const char *ag_toolset_sgr_schema(ag_toolset *ts, uint64_t key, const char *reasoning, const ag_tool_def *defs,
                                  size_t n) {
  if (!ts->resolved || ts->gen != ag_tool_registry_generation(ts->reg)) resolve(ts);
  ts->tick++;
  schema_slot *victim = &ts->slots[0];
  for (size_t i = 0; i < SCHEMA_SLOTS; i++) {
    schema_slot *sl = &ts->slots[i];
    if (sl->text && sl->key == key) {
      sl->used = ts->tick;
      return sl->text;
    }
    if (!sl->text || sl->used < victim->used) victim = sl;
    if (!sl->text) break;
  }
  ag_buf b;
  ag_buf_init(&b, 1u << 20);
  if (ag_sgr_build_schema(reasoning, defs, n, &b) < 0) {
    ag_buf_deinit(&b);
    return NULL;
  }
  char *text = ag_buf_take(&b);
  ag_buf_deinit(&b);
  if (!text) return NULL;
  free(victim->text);
  *victim = (schema_slot){key, text, ts->tick};
  ts->built++;
  return text;
}

ag_buf *ag_toolset_scratch(ag_toolset *ts) { return &ts->scratch; }

uint64_t ag_toolset_schemas_built(const ag_toolset *ts) { return ts->built; }
