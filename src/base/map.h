/* A string-keyed hash map of borrowed pointers (open addressing, linear probing, tombstones).
 * Keys are copied; values are not owned. Used for live sessions and registries. */
#ifndef AG_BASE_MAP_H
#define AG_BASE_MAP_H

#include <stddef.h>

#include "base/err.h"

typedef struct ag_map_slot ag_map_slot;

typedef struct ag_map {
  ag_map_slot *slots;
  size_t cap;  /* power of two, or 0 */
  size_t len;  /* live entries */
  size_t used; /* live + tombstones */
} ag_map;

void ag_map_init(ag_map *m);
void ag_map_deinit(ag_map *m);
void *ag_map_get(const ag_map *m, const char *key);
/* Inserts or replaces. */
AG_MUST_CHECK int ag_map_put(ag_map *m, const char *key, void *value);
/* Returns the removed value or NULL. */
void *ag_map_del(ag_map *m, const char *key);
/* Iteration: pos starts at 0; returns NULL at the end. */
void *ag_map_next(const ag_map *m, size_t *pos, const char **key);

#endif
