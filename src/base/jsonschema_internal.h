/* Internal interface of the JSON Schema module (jsonschema.h), shared by its files and by nothing
 * else: the compiled form (the arena, `node` and its keyword tables), the compile context, and the
 * helpers that more than one file uses. jsonschema.c holds the small helpers, the public entry
 * points and compilation; jsonschema_ref.c resolves $id and $ref; jsonschema_regex.c translates
 * ECMA-262 patterns to POSIX EREs; jsonschema_format.c checks `format`; jsonschema_validate.c
 * walks a compiled schema over an instance; jsonschema_strict.c is the OpenAI strict-mode check.
 * Cross-file functions are ag__js_*; type names are unprefixed, as they have no linkage. */
#ifndef AG_BASE_JSONSCHEMA_INTERNAL_H
#define AG_BASE_JSONSCHEMA_INTERNAL_H

#include <locale.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/jsonschema.h"

#define MAX_DEPTH AG_JSONSCHEMA_MAX_DEPTH
#define PATTERN_WEIGHT 20000u         /* regcomp() size of one pattern, in repeated atoms */
#define TOTAL_PATTERN_WEIGHT 200000ul /* the same, summed over a schema (regcomp() time) */
/* glibc's regexec() slows down quadratically with the subject length on patterns whose DFA has
 * many states (measured: 0.3 s for 16 KB, 5 s for 64 KB with "(a|b)*a(a|b){20}c"), so the text
 * matched in one validation is budgeted as the sum of squared lengths: one string of the maximum
 * length, or many shorter ones. */
#define RX_BUDGET                                                                                                      \
  ((unsigned long long)(AG_JSONSCHEMA_MAX_PATTERN_SUBJECT + 16) * (AG_JSONSCHEMA_MAX_PATTERN_SUBJECT + 16))
#define MAX_GROUPS 64    /* nesting of groups in one pattern */
#define MSG_CAP 4096     /* bytes of error text collected by one validation */
#define SUB_MSG_CAP 1024 /* the same for one alternative of anyOf/oneOf */

static inline bool is_digit(int c) { return c >= '0' && c <= '9'; }
static inline bool is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static inline bool is_hex(int c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static inline int hex_val(int c) { return is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10; }

/* ------------------------------------------------------------------------------------------------
 * Arena: everything a compiled schema points to, freed at once. */

typedef struct chunk {
  struct chunk *next;
  size_t used, cap;
  size_t pad; /* keeps the data that follows 16-byte aligned */
} chunk;

typedef struct rx {
  regex_t re;
  struct rx *next;
} rx;

struct ag_jsonschema {
  chunk *chunks;
  ag_json *doc;  /* the schema document (owned) */
  ag_json *meta; /* the draft-07 meta-schema, when referenced (owned) */
  struct node *root;
  rx *regexes; /* for regfree() */
  locale_t c_locale;
  bool v2020; /* $ref with siblings: evaluated (2019-09/2020-12) or overriding (draft-07) */
};

/* ------------------------------------------------------------------------------------------------
 * Formats (jsonschema_format.c) */

enum {
  F_NONE,
  F_DATETIME,
  F_DATE,
  F_TIME,
  F_DURATION,
  F_EMAIL,
  F_IDN_EMAIL,
  F_HOSTNAME,
  F_IPV4,
  F_IPV6,
  F_URI,
  F_URIREF,
  F_IRI,
  F_IRIREF,
  F_URITEMPLATE,
  F_UUID,
  F_JSONPTR,
  F_RELJSONPTR,
  F_REGEX,
};

/* ------------------------------------------------------------------------------------------------
 * The compiled form */

enum { T_NULL = 1, T_BOOL = 2, T_INT = 4, T_NUM = 8, T_STR = 16, T_ARR = 32, T_OBJ = 64 };
extern const char *const ag__js_type_names[7];

typedef struct jnum {
  bool is_int;
  long long i;
  double d;
} jnum;

enum { K_SCHEMA, K_TRUE, K_FALSE };
enum { C_BASE64 = 1, C_JSON = 2 };

enum {
  H_MULTIPLE = 1u << 0,
  H_MAX = 1u << 1,
  H_XMAX = 1u << 2,
  H_MIN = 1u << 3,
  H_XMIN = 1u << 4,
  H_MAXLEN = 1u << 5,
  H_MINLEN = 1u << 6,
  H_MAXITEMS = 1u << 7,
  H_MINITEMS = 1u << 8,
  H_MAXPROPS = 1u << 9,
  H_MINPROPS = 1u << 10,
  H_ENUM = 1u << 11,
  H_CONST = 1u << 12,
  H_UNIQUE = 1u << 13,
  H_MINCONT = 1u << 14,
  H_MAXCONT = 1u << 15,
};

typedef struct node node;

typedef struct prop {
  const char *key;
  size_t klen;
  node *schema;
} prop;

typedef struct pprop {
  rx *re;
  node *schema;
} pprop;

typedef struct strlist {
  const char **s;
  size_t *len;
  size_t n;
} strlist;

typedef struct dep {
  const char *key;
  size_t klen;
  node *schema; /* dependentSchemas / schema form of dependencies */
  strlist req;  /* dependentRequired / array form of dependencies */
} dep;

typedef struct nodelist {
  node **v;
  size_t n;
} nodelist;

struct node {
  uint8_t kind;     /* K_* */
  uint8_t types;    /* T_* bits of "type"; 0 when absent */
  uint8_t format;   /* F_* */
  uint8_t content;  /* C_*: draft-07 contentEncoding/contentMediaType assertions */
  uint8_t state;    /* in-place walk: 0 new, 1 on the stack, 2 done */
  uint32_t has;     /* H_* */
  unsigned height;  /* longest chain of in-place edges below this node */
  const char *path; /* schema location, for compile-time messages */
  node *ref;
  const ag_json *enum_v, *const_v; /* borrowed from the document */
  jnum multiple, max, xmax, min, xmin;
  size_t maxlen, minlen, maxitems, minitems, maxprops, minprops, mincont, maxcont;
  rx *pattern;
  const char *pattern_src;
  node *items;     /* every item, when there is no tuple form */
  nodelist prefix; /* tuple form: items array (draft-07) or prefixItems */
  node *rest;      /* items after the tuple: additionalItems (draft-07) or items (2020-12) */
  node *contains;
  prop *props; /* sorted by key */
  size_t nprops;
  pprop *pprops;
  size_t npprops;
  node *addl;
  strlist required;
  dep *deps;
  size_t ndeps;
  node *names;
  node *if_, *then_, *else_, *not_;
  nodelist all, any, one;
};

/* ------------------------------------------------------------------------------------------------
 * Compilation */

typedef struct res {
  const char *uri; /* absolute URI without fragment, or with "#name" for an anchor */
  const ag_json *json;
  const char *pbase; /* the base URI around it (ag__js_compile() applies its own $id) */
  const char *path;
} res;

typedef struct pend {
  node *from;
  const char *uri; /* the resolved reference */
  const char *ref; /* as written */
  const char *path;
} pend;

typedef struct cc {
  ag_jsonschema *s;
  const void **mkeys; /* ag_json * -> node *, open addressing */
  node **mvals;
  size_t mcap, mlen;
  res *res;
  size_t nres, capres;
  size_t *rtab; /* hash of res by uri: index + 1, open addressing */
  size_t rcap;
  pend *pend;
  size_t npend, cappend;
  node **all;
  size_t nall, capall;
  ag_buf path;
  char *err;
  size_t errlen;
  int rc;
  unsigned long weight;
} cc;

/* ------------------------------------------------------------------------------------------------
 * Cross-file functions, by the file that defines them */

/* jsonschema.c */
void ag__js_set_msg(char *err, size_t errlen, const char *s, size_t n);
void ag__js_set_msgf(char *err, size_t errlen, const char *fmt, ...) AG_PRINTF(3, 4);
void ag__js_msg_mem(ag_buf *b, const char *s, size_t n);
void ag__js_msg_str(ag_buf *b, const char *s);
void ag__js_msg_chr(ag_buf *b, char ch);
void ag__js_msg_vfmt(ag_buf *b, const char *fmt, va_list ap) AG_PRINTF(2, 0);
void ag__js_msg_fmt(ag_buf *b, const char *fmt, ...) AG_PRINTF(2, 3);
size_t ag__js_utf8_dec(const unsigned char *s, size_t n, uint32_t *cp);
size_t ag__js_utf8_enc(uint32_t cp, unsigned char out[4]);
size_t ag__js_utf8_count(const char *s, size_t n);
const ag_json *ag__js_obj_getn(const ag_json *o, const char *k, size_t klen);
size_t ag__js_iter_key_len(void *it);
ag_json *ag__js_parse_json(const char *s, size_t len, char *err, size_t errlen);
int ag__js_append_seg(ag_buf *b, const char *k, size_t n, size_t cut);
void ag__js_append_value(ag_buf *b, const ag_json *v, size_t cap);
void ag__js_append_quoted(ag_buf *b, const char *s, size_t n, size_t cap);
uint64_t ag__js_mix64(uint64_t h);
uint64_t ag__js_hash_bytes(const char *s, size_t n);
char *ag__js_ar_strndup(ag_jsonschema *s, const char *p, size_t n);
int ag__js_cerr(cc *c, int rc, const char *fmt, ...) AG_PRINTF(3, 4);
size_t ag__js_path_push(cc *c, const char *k, size_t n);
void *ag__js_grow(cc *c, void *p, size_t *cap, size_t need, size_t elem);
const char *ag__js_schema_base(cc *c, const ag_json *j, const char *base);
int ag__js_scan(cc *c, const ag_json *j, const char *base, int depth);
int ag__js_cmp_keys(const char *a, size_t an, const char *b, size_t bn);
const char *ag__js_json_type_name(const ag_json *v);
node *ag__js_compile(cc *c, const ag_json *j, const char *base, int depth);

/* jsonschema_ref.c */
char *ag__js_uri_resolve(cc *c, const char *base, const char *ref);
const char *ag__js_uri_nofrag(cc *c, const char *uri);
int ag__js_res_add(cc *c, const char *uri, const ag_json *j, const char *pbase);
void ag__js_resolve_pending(cc *c);

/* jsonschema_regex.c */
int ag__js_rx_translate(const char *src, size_t len, ag_buf *out, unsigned long *weight, char *why, size_t whylen);
int ag__js_rx_compile(ag_jsonschema *s, const char *src, size_t len, rx **out, unsigned long *weight, char *why,
                      size_t whylen);
bool ag__js_rx_exec(const ag_jsonschema *s, const rx *r, const char *str, size_t len);

/* jsonschema_format.c */
int ag__js_format_lookup(const char *name);
bool ag__js_format_ok(int f, const char *s, size_t n);
const char *ag__js_format_hint(int f); /* for messages, e.g. "date such as \"2024-01-31\"" */

#endif
