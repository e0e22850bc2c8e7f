/* Template helpers and the template set (see template.h). */
#include "agent/template.h"

#include <stdlib.h>
#include <string.h>

#include "base/map.h"

static const char *const kind_names[] = {"sgr", "tool_calling", "sgr_tool_calling"};
static const char *const format_names[] = {"openai", "sgr"};

const char *ag_agent_kind_name(int kind) { return kind >= 0 && kind < 3 ? kind_names[kind] : "unknown"; }

int ag_agent_kind_parse(const char *s) {
  for (int i = 0; s && i < 3; i++)
    if (strcmp(s, kind_names[i]) == 0) return i;
  return -1;
}

const char *ag_stream_format_name(int f) { return f >= 0 && f < 2 ? format_names[f] : "openai"; }

int ag_stream_format_parse(const char *s) {
  for (int i = 0; s && i < 2; i++)
    if (strcmp(s, format_names[i]) == 0) return i;
  return -1;
}

void ag_template_free(ag_template *t) {
  if (!t) return;
  free(t->name);
  free(t->description);
  free(t->system_prompt);
  free(t->model);
  for (size_t i = 0; i < t->n_tools; i++)
    free(t->tools[i]);
  free(t->tools);
  free(t);
}

void ag_template_apply_defaults(ag_template *t) {
  if (t->max_iterations <= 0) t->max_iterations = 10;
  if (t->max_clarifications < 0) t->max_clarifications = 3;
  if (t->max_searches < 0) t->max_searches = 4;
  if (t->max_steps <= 0) t->max_steps = 2 * t->max_iterations + 4;
  if (t->max_steps > AG_MAX_STEPS_CEILING) t->max_steps = AG_MAX_STEPS_CEILING;
  if (t->version <= 0) t->version = 1;
}

struct ag_template_set {
  ag_template **items;
  size_t n, cap;
  ag_map by_name;
};

int ag_template_set_new(ag_template_set **out) {
  ag_template_set *s = calloc(1, sizeof *s);
  if (!s) return AG_ENOMEM;
  ag_map_init(&s->by_name);
  *out = s;
  return 0;
}

int ag_template_set_add_take(ag_template_set *set, ag_template *t) {
  if (ag_map_get(&set->by_name, t->name)) {
    ag_template_free(t);
    return AG_EEXIST;
  }
  if (set->n == set->cap) {
    size_t ncap = set->cap ? set->cap * 2 : 8;
    ag_template **p = realloc(set->items, ncap * sizeof *p);
    if (!p) {
      ag_template_free(t);
      return AG_ENOMEM;
    }
    set->items = p;
    set->cap = ncap;
  }
  if (ag_map_put(&set->by_name, t->name, t) < 0) {
    ag_template_free(t);
    return AG_ENOMEM;
  }
  set->items[set->n++] = t;
  return 0;
}

const ag_template *ag_template_set_find(const ag_template_set *set, const char *name) {
  return ag_map_get(&set->by_name, name);
}

size_t ag_template_set_count(const ag_template_set *set) { return set->n; }
const ag_template *ag_template_set_at(const ag_template_set *set, size_t i) {
  return i < set->n ? set->items[i] : NULL;
}

void ag_template_set_free(ag_template_set *set) {
  if (!set) return;
  for (size_t i = 0; i < set->n; i++)
    ag_template_free(set->items[i]);
  free(set->items);
  ag_map_deinit(&set->by_name);
  free(set);
}
