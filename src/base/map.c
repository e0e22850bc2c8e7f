/* String-keyed open-addressing hash map (see map.h). */
#include "base/map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct ag_map_slot {
  char *key; /* NULL: empty; TOMB: deleted */
  void *value;
  uint64_t hash;
};

static char tomb_marker;
#define TOMB (&tomb_marker)

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

void ag_map_init(ag_map *m) { memset(m, 0, sizeof *m); }

void ag_map_deinit(ag_map *m) {
  for (size_t i = 0; i < m->cap; i++)
    if (m->slots[i].key && m->slots[i].key != TOMB) free(m->slots[i].key);
  free(m->slots);
  memset(m, 0, sizeof *m);
}

static ag_map_slot *find(const ag_map *m, const char *key, uint64_t h) {
  if (!m->cap) return NULL;
  for (size_t i = h & (m->cap - 1), n = 0; n < m->cap; i = (i + 1) & (m->cap - 1), n++) {
    ag_map_slot *s = &m->slots[i];
    if (!s->key) return NULL;
    if (s->key != TOMB && s->hash == h && strcmp(s->key, key) == 0) return s;
  }
  return NULL;
}

static int grow(ag_map *m) {
  size_t ncap = m->cap ? m->cap * 2 : 16;
  if (m->len * 4 < m->cap) ncap = m->cap; /* mostly tombstones: rehash in place size */
  ag_map_slot *ns = calloc(ncap, sizeof *ns);
  if (!ns) return AG_ENOMEM;
  for (size_t i = 0; i < m->cap; i++) {
    ag_map_slot *s = &m->slots[i];
    if (!s->key || s->key == TOMB) continue;
    size_t j = s->hash & (ncap - 1);
    while (ns[j].key)
      j = (j + 1) & (ncap - 1);
    ns[j] = *s;
  }
  free(m->slots);
  m->slots = ns;
  m->cap = ncap;
  m->used = m->len;
  return 0;
}

void *ag_map_get(const ag_map *m, const char *key) {
  ag_map_slot *s = find(m, key, hash_str(key));
  return s ? s->value : NULL;
}

int ag_map_put(ag_map *m, const char *key, void *value) {
  uint64_t h = hash_str(key);
  ag_map_slot *s = find(m, key, h);
  if (s) {
    s->value = value;
    return 0;
  }
  if ((m->used + 1) * 4 > m->cap * 3) {
    int rc = grow(m);
    if (rc < 0) return rc;
  }
  char *k = strdup(key);
  if (!k) return AG_ENOMEM;
  size_t i = h & (m->cap - 1);
  while (m->slots[i].key && m->slots[i].key != TOMB)
    i = (i + 1) & (m->cap - 1);
  if (!m->slots[i].key) m->used++;
  m->slots[i] = (ag_map_slot){k, value, h};
  m->len++;
  return 0;
}

void *ag_map_del(ag_map *m, const char *key) {
  ag_map_slot *s = find(m, key, hash_str(key));
  if (!s) return NULL;
  void *v = s->value;
  free(s->key);
  s->key = TOMB;
  s->value = NULL;
  m->len--;
  return v;
}

void *ag_map_next(const ag_map *m, size_t *pos, const char **key) {
  for (; *pos < m->cap; (*pos)++) {
    ag_map_slot *s = &m->slots[*pos];
    if (s->key && s->key != TOMB) {
      (*pos)++;
      if (key) *key = s->key;
      return s->value;
    }
  }
  return NULL;
}
