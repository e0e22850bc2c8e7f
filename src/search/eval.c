/* Tool-retrieval evaluation (see eval.h): loading the JSONL files, running the queries through
 * the index, the ranking metrics, and the `eval-tools` command line. */
#include "search/eval.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/json.h"
#include "base/map.h"

#define TOP_K 10

static void set_err(char *err, size_t errlen, const char *fmt, ...) AG_PRINTF(3, 4);
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Reads a whole file as a NUL-terminated heap string. */
static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    set_err(err, errlen, "%s: %s", path, strerror(errno));
    return AG_EIO;
  }
  ag_buf b;
  ag_buf_init(&b, AG_SEARCH_EVAL_MAX_FILE);
  char chunk[65536];
  size_t n;
  int rc = 0;
  while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
    rc = ag_buf_append(&b, chunk, n);
  if (rc == 0 && ferror(f)) rc = AG_EIO;
  fclose(f);
  if (rc < 0) {
    set_err(err, errlen, "%s: %s", path, rc == AG_ETOOBIG ? "file too big" : ag_strerror(rc));
    ag_buf_deinit(&b);
    return rc;
  }
  *len = b.len;
  *out = ag_buf_take(&b);
  if (!*out) return AG_ENOMEM;
  return 0;
}

typedef int (*line_fn)(void *ud, const ag_json *j, size_t lineno, char *err, size_t errlen);

/* Calls fn for each non-blank line of the file, parsed as JSON. */
static int each_line(const char *path, line_fn fn, void *ud, char *err, size_t errlen) {
  char *text;
  size_t len;
  int rc = read_file(path, &text, &len, err, errlen);
  if (rc < 0) return rc;
  size_t lineno = 0;
  for (char *p = text, *end = text + len; p < end && rc == 0;) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
    lineno++;
    size_t k = 0;
    while (k < n && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r'))
      k++;
    if (k < n) {
      char jerr[160];
      ag_json *j = ag_json_parse(p, n, jerr, sizeof jerr);
      if (!j) {
        set_err(err, errlen, "%s:%zu: %s", path, lineno, jerr);
        rc = AG_EINVAL;
      } else {
        rc = fn(ud, j, lineno, err, errlen);
        if (rc < 0 && err && errlen && !err[0]) set_err(err, errlen, "%s:%zu: %s", path, lineno, ag_strerror(rc));
        ag_json_free(j);
      }
    }
    p += n + 1;
  }
  free(text);
  return rc;
}

typedef struct load_ctx {
  ag_search_eval_set *set;
  size_t cap;
  ag_map names; /* tool name -> index + 1 */
  const char *path;
} load_ctx;

static int add_tool(void *ud, const ag_json *j, size_t lineno, char *err, size_t errlen) {
  load_ctx *c = ud;
  ag_search_eval_set *s = c->set;
  const char *name = ag_json_get_str(j, "name");
  const char *desc = ag_json_get_str(j, "description");
  if (!name || !*name) {
    set_err(err, errlen, "%s:%zu: a tool needs a \"name\"", c->path, lineno);
    return AG_EINVAL;
  }
  if (ag_map_get(&c->names, name)) {
    set_err(err, errlen, "%s:%zu: duplicate tool name %s", c->path, lineno, name);
    return AG_EINVAL;
  }
  if (s->ntools == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 256;
    ag_search_eval_tool *t = realloc(s->tools, cap * sizeof *t);
    if (!t) return AG_ENOMEM;
    s->tools = t;
    c->cap = cap;
  }
  ag_search_eval_tool *t = &s->tools[s->ntools];
  const ag_json *params = ag_json_get(j, "parameters");
  *t = (ag_search_eval_tool){.name = ag_strdup(name),
                             .description = ag_strdup(desc ? desc : ""),
                             .schema = params ? ag_json_dumps(params) : ag_strdup("{}")};
  s->ntools++; /* counted now so that deinit frees whatever was allocated */
  if (!t->name || !t->description || !t->schema) return AG_ENOMEM;
  return ag_map_put(&c->names, name, (void *)(uintptr_t)s->ntools);
}

static int add_query(void *ud, const ag_json *j, size_t lineno, char *err, size_t errlen) {
  load_ctx *c = ud;
  ag_search_eval_set *s = c->set;
  const char *id = ag_json_get_str(j, "id");
  const char *text = ag_json_get_str(j, "query");
  const ag_json *rel = ag_json_get(j, "relevant");
  if (!id || !text || !ag_json_is(rel, AG_JSON_ARRAY) || ag_json_len(rel) == 0) {
    set_err(err, errlen, "%s:%zu: a query needs \"id\", \"query\" and a non-empty \"relevant\"", c->path, lineno);
    return AG_EINVAL;
  }
  if (s->nqueries == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 256;
    ag_search_eval_query *q = realloc(s->queries, cap * sizeof *q);
    if (!q) return AG_ENOMEM;
    s->queries = q;
    c->cap = cap;
  }
  ag_search_eval_query *q = &s->queries[s->nqueries++];
  *q = (ag_search_eval_query){.id = ag_strdup(id), .text = ag_strdup(text)};
  q->relevant = malloc(ag_json_len(rel) * sizeof *q->relevant);
  if (!q->id || !q->text || !q->relevant) return AG_ENOMEM;
  for (size_t i = 0; i < ag_json_len(rel); i++) {
    const char *name = ag_json_str(ag_json_at(rel, i));
    uintptr_t v = name ? (uintptr_t)ag_map_get(&c->names, name) : 0;
    if (!v) {
      set_err(err, errlen, "%s:%zu: relevant tool %s is not in the catalog", c->path, lineno, name ? name : "?");
      return AG_EINVAL;
    }
    bool dup = false;
    for (size_t k = 0; k < q->nrelevant; k++)
      dup = dup || q->relevant[k] == (uint32_t)(v - 1);
    if (!dup) q->relevant[q->nrelevant++] = (uint32_t)(v - 1);
  }
  return 0;
}

int ag_search_eval_load(ag_search_eval_set *set, const char *catalog_path, const char *queries_path, char *err,
                        size_t errlen) {
  memset(set, 0, sizeof *set);
  if (err && errlen) err[0] = '\0';
  load_ctx c = {.set = set, .path = catalog_path};
  ag_map_init(&c.names);
  int rc = each_line(catalog_path, add_tool, &c, err, errlen);
  if (rc == 0) {
    c.cap = 0;
    c.path = queries_path;
    rc = each_line(queries_path, add_query, &c, err, errlen);
  }
  ag_map_deinit(&c.names);
  return rc;
}

void ag_search_eval_set_deinit(ag_search_eval_set *set) {
  for (size_t i = 0; i < set->ntools; i++) {
    free(set->tools[i].name);
    free(set->tools[i].description);
    free(set->tools[i].schema);
  }
  for (size_t i = 0; i < set->nqueries; i++) {
    free(set->queries[i].id);
    free(set->queries[i].text);
    free(set->queries[i].relevant);
  }
  free(set->tools);
  free(set->queries);
  memset(set, 0, sizeof *set);
}

int ag_search_eval_index(const ag_search_eval_set *set, ag_bm25 *ix) {
  for (size_t i = 0; i < set->ntools; i++) {
    const ag_search_eval_tool *t = &set->tools[i];
    ag_bm25_tool_doc td;
    int rc = ag_bm25_tool_doc_init(&td, t->name, t->description, t->schema, strlen(t->schema), NULL, 0);
    if (rc == 0) rc = ag_bm25_put(ix, i, &td.doc);
    ag_bm25_tool_doc_deinit(&td);
    if (rc < 0) return rc;
  }
  return 0;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double percentile_us(uint64_t *ns, size_t n, double pct) {
  if (!n) return 0;
  size_t i = (size_t)ceil(pct / 100.0 * (double)n);
  i = i ? i - 1 : 0;
  return (double)ns[i < n ? i : n - 1] / 1000.0;
}

int ag_search_eval_run(const ag_search_eval_set *set, const ag_bm25_params *p, size_t stride,
                       ag_search_eval_result *res) {
  memset(res, 0, sizeof *res);
  if (stride == 0) stride = 1;
  ag_bm25 *ix = ag_bm25_new(p);
  if (!ix) return p ? AG_EINVAL : AG_ENOMEM;
  uint64_t *lat = malloc((set->nqueries / stride + 1) * sizeof *lat);
  if (!lat) {
    ag_bm25_free(ix);
    return AG_ENOMEM;
  }
  uint64_t t0 = now_ns();
  int rc = ag_search_eval_index(set, ix);
  res->build_ms = (double)(now_ns() - t0) / 1e6;
  res->tools = set->ntools;
  res->bytes_per_tool = set->ntools ? (double)ag_bm25_memory(ix) / (double)set->ntools : 0;
  for (size_t qi = 0; rc == 0 && qi < set->nqueries; qi += stride) {
    const ag_search_eval_query *q = &set->queries[qi];
    ag_bm25_hit hits[TOP_K];
    uint64_t s0 = now_ns();
    size_t n = ag_bm25_search(ix, q->text, NULL, NULL, hits, TOP_K);
    lat[res->queries++] = now_ns() - s0;
    size_t found5 = 0, found10 = 0;
    double dcg = 0, idcg = 0;
    for (size_t r = 0; r < n; r++) {
      bool rel = false;
      for (size_t k = 0; k < q->nrelevant && !rel; k++)
        rel = hits[r].doc_id == q->relevant[k];
      if (!rel) continue;
      found10++;
      if (r < 5) found5++;
      dcg += 1.0 / log2((double)r + 2);
    }
    for (size_t r = 0; r < q->nrelevant && r < TOP_K; r++)
      idcg += 1.0 / log2((double)r + 2);
    res->recall5 += (double)found5 / (double)q->nrelevant;
    res->recall10 += (double)found10 / (double)q->nrelevant;
    res->ndcg10 += dcg / idcg;
    res->complete10 += found10 == q->nrelevant;
  }
  if (res->queries) {
    double nq = (double)res->queries;
    res->recall5 /= nq;
    res->recall10 /= nq;
    res->ndcg10 /= nq;
    res->complete10 /= nq;
    qsort(lat, res->queries, sizeof *lat, cmp_u64);
    res->p50_us = percentile_us(lat, res->queries, 50);
    res->p99_us = percentile_us(lat, res->queries, 99);
  }
  free(lat);
  ag_bm25_free(ix);
  return rc;
}

/* ---- command line ---- */

static void usage(FILE *f) {
  fputs("usage: eval-tools --catalog FILE --queries FILE [options]\n"
        "  --k1 X               BM25 term-frequency saturation, > 0\n"
        "  --b X                length normalisation, 0..1\n"
        "  --weights N,D,P,T    field weights: name, description, parameters, tags\n"
        "  --no-stem            no suffix stripping\n"
        "  --no-stop-words      keep stop words\n"
        "  --stride N           run every N-th query only\n",
        f);
  ag_bm25_params p;
  ag_bm25_params_default(&p);
  fprintf(f, "defaults: k1 %g, b %g, weights %g,%g,%g,%g, stemming %s, stop words %s\n", p.k1, p.b, p.weight[0],
          p.weight[1], p.weight[2], p.weight[3], p.tok.stem ? "on" : "off", p.tok.stop_words ? "on" : "off");
}

static bool parse_num(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v)) return false;
  *out = v;
  return true;
}

static bool parse_weights(const char *s, double w[AG_BM25_NFIELDS]) {
  char tmp[128];
  if (strlen(s) >= sizeof tmp) return false;
  memcpy(tmp, s, strlen(s) + 1);
  char *save = NULL, *tok = strtok_r(tmp, ",", &save);
  for (int f = 0; f < AG_BM25_NFIELDS; f++, tok = strtok_r(NULL, ",", &save))
    if (!tok || !parse_num(tok, &w[f])) return false;
  return tok == NULL;
}

int ag_search_eval_main(int argc, char **argv) {
  const char *catalog = NULL, *queries = NULL;
  ag_bm25_params p;
  ag_bm25_params_default(&p);
  double stride = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    bool ok = true;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "--no-stem") == 0) {
      p.tok.stem = false;
      continue;
    } else if (strcmp(a, "--no-stop-words") == 0) {
      p.tok.stop_words = false;
      continue;
    } else if (!v) {
      ok = false;
    } else if (strcmp(a, "--catalog") == 0) {
      catalog = v;
    } else if (strcmp(a, "--queries") == 0) {
      queries = v;
    } else if (strcmp(a, "--k1") == 0) {
      ok = parse_num(v, &p.k1);
    } else if (strcmp(a, "--b") == 0) {
      ok = parse_num(v, &p.b);
    } else if (strcmp(a, "--weights") == 0) {
      ok = parse_weights(v, p.weight);
    } else if (strcmp(a, "--stride") == 0) {
      ok = parse_num(v, &stride) && stride >= 1 && stride <= 1e9;
    } else {
      ok = false;
    }
    if (!ok) {
      fprintf(stderr, "eval-tools: bad argument %s%s%s\n", a, v ? " " : "", v ? v : "");
      usage(stderr);
      return 2;
    }
    i++;
  }
  if (!catalog || !queries) {
    usage(stderr);
    return 2;
  }
  ag_bm25 *probe = ag_bm25_new(&p);
  if (!probe) {
    fprintf(stderr, "eval-tools: parameters out of range (k1 in (0,1000], b in [0,1], weights in [0,1000])\n");
    return 2;
  }
  ag_bm25_free(probe);
  char err[512];
  ag_search_eval_set set;
  int rc = ag_search_eval_load(&set, catalog, queries, err, sizeof err);
  if (rc < 0) {
    fprintf(stderr, "eval-tools: %s\n", err[0] ? err : ag_strerror(rc));
    ag_search_eval_set_deinit(&set);
    return 1;
  }
  ag_search_eval_result r;
  rc = ag_search_eval_run(&set, &p, (size_t)stride, &r);
  ag_search_eval_set_deinit(&set);
  if (rc < 0) {
    fprintf(stderr, "eval-tools: %s\n", ag_strerror(rc));
    return 1;
  }
  printf("params: k1 %g, b %g, weights name %g, description %g, parameters %g, tags %g, stemming %s, "
         "stop words %s\n",
         p.k1, p.b, p.weight[0], p.weight[1], p.weight[2], p.weight[3], p.tok.stem ? "on" : "off",
         p.tok.stop_words ? "on" : "off");
  printf("tools %zu, queries %zu, build %.1f ms, index %.0f bytes/tool\n", r.tools, r.queries, r.build_ms,
         r.bytes_per_tool);
  printf("Recall@5 %.3f  Recall@10 %.3f  nDCG@10 %.3f  Complete@10 %.3f\n", r.recall5, r.recall10, r.ndcg10,
         r.complete10);
  printf("latency p50 %.1f us  p99 %.1f us\n", r.p50_us, r.p99_us);
  return 0;
}
