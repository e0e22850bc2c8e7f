/* Values between JSON and the script sandbox (tools/lua_json.h): the call's arguments become a
 * Lua table, the script's result becomes the result text, and the sandbox's json table
 * (json.null, json.array) says what a script cannot say with plain Lua values.
 *
 * Values. Arguments (a JSON object) become a table: objects -> tables, arrays -> sequences
 * (1-based, no `n`), null -> json.null (a unique light userdata, also in arrays so they keep
 * their length), integers -> Lua integers, other numbers -> floats. The result: a string is
 * the result text as is (valid UTF-8 required); nil or nothing gives "null"; anything else is
 * JSON: a table whose keys are exactly 1..n is an array, an empty table is {} unless marked
 * with json.array(t) (argument arrays are marked, so [] round-trips), other tables are objects
 * with string or integer keys, written in sorted key order so the text is stable; integers
 * stay integers, floats keep a decimal point, NaN/inf, functions and other types are refused,
 * as are invalid UTF-8, cycles and nesting past 100 levels. `return nil, "message"` is a tool
 * error with that message. The text is capped at the call's max_output, cut at a UTF-8
 * boundary with a note saying so. */
#include "tools/lua_json.h"

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "tools/lua_sandbox.h"

#define MAX_DEPTH 100 /* nesting of arguments and results */

/* ------------------------------------------------------------------ json.array */

/* json.array(t): marks t to be written as a JSON array even when empty. The marks live in a
 * weak-keyed registry table, so they are invisible to the script and never keep t alive. */
static const char marks_key = 'm';

static void mark_array(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &marks_key);
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

static bool is_marked(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &marks_key);
  lua_pushvalue(L, idx);
  bool marked = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return marked;
}

static int json_array(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  mark_array(L, 1);
  return 1;
}

void ag__luajson_open(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_pushcfunction(L, json_array);
  lua_setfield(L, -2, "array");
  lua_setglobal(L, "json");

  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &marks_key);
}

/* ------------------------------------------------------------------ JSON to Lua */

static void push_json(lua_State *L, const ag_json *j, int depth) {
  if (depth >= MAX_DEPTH) luaL_error(L, "nested deeper than %d levels", MAX_DEPTH);
  luaL_checkstack(L, 4, "nested too deeply");
  switch (ag_json_type(j)) {
  case AG_JSON_BOOL: lua_pushboolean(L, ag_json_bool(j)); break;
  case AG_JSON_INT: lua_pushinteger(L, (lua_Integer)ag_json_int(j)); break;
  case AG_JSON_REAL: lua_pushnumber(L, (lua_Number)ag_json_num(j)); break;
  case AG_JSON_STRING: lua_pushlstring(L, ag_json_str(j), ag_json_str_len(j)); break;
  case AG_JSON_ARRAY: {
    size_t n = ag_json_len(j);
    lua_createtable(L, n < (size_t)INT32_MAX ? (int)n : INT32_MAX, 0);
    for (size_t i = 0; i < n; i++) {
      push_json(L, ag_json_at(j, i), depth + 1);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    mark_array(L, -1);
    break;
  }
  case AG_JSON_OBJECT: {
    size_t n = ag_json_len(j);
    lua_createtable(L, 0, n < (size_t)INT32_MAX ? (int)n : INT32_MAX);
    for (void *it = ag_json_iter(j); it; it = ag_json_iter_next(j, it)) {
      lua_pushstring(L, ag_json_iter_key(it));
      push_json(L, ag_json_iter_value(it), depth + 1);
      lua_rawset(L, -3);
    }
    break;
  }
  default: lua_pushlightuserdata(L, NULL); break; /* json.null */
  }
}

void ag__luajson_push(lua_State *L, const ag_json *j) { push_json(L, j, 0); }

/* ------------------------------------------------------------------ Lua to JSON */

/* The result is written straight into the capped output text (never through a JSON tree: a
 * table that refers to one table twice, 40 levels deep, stands for 2^40 values), and writing
 * stops as soon as the cap is reached. */
typedef struct enc {
  lua_State *L;
  ag_buf *out;
  int visiting; /* stack index of a table: tables being written -> true */
  bool full;
  char path[128]; /* where we are, for error messages: $.a[2].b */
  size_t plen;
} enc;

static void enc_put(enc *e, const char *s, size_t len) {
  if (e->full) return;
  size_t room = e->out->max > e->out->len ? e->out->max - e->out->len : 0;
  if (len > room) {
    e->full = true;
    len = room;
  }
  if (len && ag_buf_append(e->out, s, len) < 0) e->full = true;
}

static int enc_fail(enc *e, const char *what) {
  lua_pushfstring(e->L, "at $%s: %s", e->path, what);
  return lua_error(e->L);
}

static size_t path_push_key(enc *e, const char *s, size_t len) {
  size_t mark = e->plen;
  bool cut = len > 24;
  if (cut) len = ag_utf8_cut(s, 24);
  int n = snprintf(e->path + e->plen, sizeof e->path - e->plen, ".%.*s%s", (int)len, s, cut ? "..." : "");
  if (n > 0) e->plen = e->plen + (size_t)n < sizeof e->path ? e->plen + (size_t)n : sizeof e->path - 1;
  return mark;
}

static size_t path_push_index(enc *e, lua_Integer i) {
  size_t mark = e->plen;
  int n = snprintf(e->path + e->plen, sizeof e->path - e->plen, "[%lld]", (long long)i);
  if (n > 0) e->plen = e->plen + (size_t)n < sizeof e->path ? e->plen + (size_t)n : sizeof e->path - 1;
  return mark;
}

static void path_pop(enc *e, size_t mark) {
  e->plen = mark;
  e->path[mark] = '\0';
}

static void enc_escaped(enc *e, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  size_t run = 0;
  for (size_t i = 0; i < len && !e->full; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    enc_put(e, s + run, i - run);
    char esc[6] = {'\\', 0, 0, 0, 0, 0};
    size_t n = 2;
    switch (c) {
    case '"': esc[1] = '"'; break;
    case '\\': esc[1] = '\\'; break;
    case '\n': esc[1] = 'n'; break;
    case '\r': esc[1] = 'r'; break;
    case '\t': esc[1] = 't'; break;
    case '\b': esc[1] = 'b'; break;
    case '\f': esc[1] = 'f'; break;
    default: esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[c >> 4], esc[5] = hex[c & 15]; n = 6;
    }
    enc_put(e, esc, n);
    run = i + 1;
  }
  enc_put(e, s + run, len - run);
}

static void enc_string(enc *e, const char *s, size_t len) {
  if (!ag__luasb_utf8_valid(s, len)) enc_fail(e, "a string that is not valid UTF-8");
  enc_put(e, "\"", 1);
  enc_escaped(e, s, len);
  enc_put(e, "\"", 1);
}

static void enc_number(enc *e, int idx) {
  char num[48];
  int n;
  if (lua_isinteger(e->L, idx)) {
    n = snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(e->L, idx));
  } else {
    double d = (double)lua_tonumber(e->L, idx);
    if (!isfinite(d)) enc_fail(e, isnan(d) ? "NaN has no JSON form" : "an infinite number has no JSON form");
    /* The shortest of %.15g..%.17g that reads back as the same double. */
    n = 0;
    for (int prec = 15; prec <= 17; prec++) {
      n = snprintf(num, sizeof num, "%.*g", prec, d);
      if (strtod(num, NULL) == d) break;
    }
    /* Keep a float a float, as Lua prints it: 2.0, not 2. */
    if (n > 0 && (size_t)n + 2 < sizeof num && !strpbrk(num, ".eE")) {
      num[n++] = '.';
      num[n++] = '0';
      num[n] = '\0';
    }
  }
  if (n > 0) enc_put(e, num, (size_t)n);
}

typedef struct okey {
  const char *s; /* the key's bytes (NULL: an integer key, in digits) */
  size_t len;
  lua_Integer vi; /* index of the value in the scratch table */
  char digits[24];
} okey;

static const char *okey_str(const okey *k) { return k->s ? k->s : k->digits; }

static int okey_cmp(const void *a, const void *b) {
  const okey *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int r = memcmp(okey_str(x), okey_str(y), n);
  if (r) return r;
  return x->len < y->len ? -1 : x->len > y->len;
}

static void enc_value(enc *e, int idx, int depth);

static void enc_array(enc *e, int idx, lua_Integer n, int depth) {
  enc_put(e, "[", 1);
  for (lua_Integer i = 1; i <= n && !e->full; i++) {
    if (i > 1) enc_put(e, ",", 1);
    size_t mark = path_push_index(e, i - 1);
    lua_rawgeti(e->L, idx, i);
    enc_value(e, -1, depth + 1);
    lua_pop(e->L, 1);
    path_pop(e, mark);
  }
  enc_put(e, "]", 1);
}

static void enc_object(enc *e, int idx, lua_Integer n, int depth) {
  lua_State *L = e->L;
  if (n == 0) {
    enc_put(e, "{}", 2);
    return;
  }
  /* Keys are sorted so that the same table always gives the same text (Lua's traversal order
   * depends on a per-state random hash seed). The key array is a userdata and the values go to
   * a scratch table, so that a Lua error anywhere leaks nothing. */
  okey *keys = lua_newuserdatauv(L, (size_t)n * sizeof *keys, 0);
  lua_createtable(L, (int)(n < INT32_MAX ? n : INT32_MAX), 0);
  int vals = lua_gettop(L);
  lua_Integer i = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    okey *k = &keys[i];
    if (lua_type(L, -2) == LUA_TSTRING) {
      k->s = lua_tolstring(L, -2, &k->len);
      if (!ag__luasb_utf8_valid(k->s, k->len)) enc_fail(e, "a key that is not valid UTF-8");
    } else if (lua_isinteger(L, -2)) {
      k->s = NULL;
      k->len = (size_t)snprintf(k->digits, sizeof k->digits, "%lld", (long long)lua_tointeger(L, -2));
    } else {
      char what[80];
      snprintf(what, sizeof what, "a key of type %s (JSON object keys are strings)", luaL_typename(L, -2));
      enc_fail(e, what);
    }
    k->vi = ++i;
    lua_rawseti(L, vals, i);
  }
  qsort(keys, (size_t)n, sizeof *keys, okey_cmp);
  for (lua_Integer j = 1; j < n; j++)
    if (okey_cmp(&keys[j - 1], &keys[j]) == 0) {
      char what[80];
      snprintf(what, sizeof what, "two keys are both \"%.32s\" (an integer and a string)", okey_str(&keys[j]));
      enc_fail(e, what);
    }
  enc_put(e, "{", 1);
  for (lua_Integer j = 0; j < n && !e->full; j++) {
    if (j) enc_put(e, ",", 1);
    enc_string(e, okey_str(&keys[j]), keys[j].len);
    enc_put(e, ":", 1);
    size_t mark = path_push_key(e, okey_str(&keys[j]), keys[j].len);
    lua_rawgeti(L, vals, keys[j].vi);
    enc_value(e, -1, depth + 1);
    lua_pop(L, 1);
    path_pop(e, mark);
  }
  enc_put(e, "}", 1);
  lua_pop(L, 2);
}

static void enc_table(enc *e, int idx, int depth) {
  lua_State *L = e->L;
  idx = lua_absindex(L, idx);
  if (depth >= MAX_DEPTH) enc_fail(e, "nested deeper than 100 levels");
  luaL_checkstack(L, 8, NULL);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->visiting) != LUA_TNIL) enc_fail(e, "the table contains itself (a cycle)");
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, e->visiting);
  /* An array has exactly the keys 1..n; an empty table is an array only when marked. */
  lua_Integer n = 0, top = 0;
  bool seq = true;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    n++;
    if (seq && lua_isinteger(L, -2)) {
      lua_Integer k = lua_tointeger(L, -2);
      if (k < 1)
        seq = false;
      else if (k > top)
        top = k;
    } else {
      seq = false;
    }
    lua_pop(L, 1);
  }
  if (seq && top == n && (n > 0 || is_marked(L, idx)))
    enc_array(e, idx, n, depth);
  else
    enc_object(e, idx, n, depth);
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, e->visiting);
}

static void enc_value(enc *e, int idx, int depth) {
  lua_State *L = e->L;
  if (e->full) return;
  switch (lua_type(L, idx)) {
  case LUA_TNIL: enc_put(e, "null", 4); return;
  case LUA_TBOOLEAN: lua_toboolean(L, idx) ? enc_put(e, "true", 4) : enc_put(e, "false", 5); return;
  case LUA_TNUMBER: enc_number(e, idx); return;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    enc_string(e, s, len);
    return;
  }
  case LUA_TTABLE: enc_table(e, idx, depth); return;
  case LUA_TLIGHTUSERDATA:
    if (!lua_touserdata(L, idx)) {
      enc_put(e, "null", 4); /* json.null */
      return;
    }
    break;
  default: break;
  }
  char what[80];
  snprintf(what, sizeof what, "a %s value (it has no JSON form)", luaL_typename(L, idx));
  enc_fail(e, what);
}

bool ag__luajson_encode_result(lua_State *L, int idx, ag_buf *out) {
  enc e = {.L = L, .out = out};
  if (idx == 0 || lua_isnil(L, idx)) {
    enc_put(&e, "null", 4);
  } else if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (!ag__luasb_utf8_valid(s, len)) enc_fail(&e, "the string is not valid UTF-8");
    enc_put(&e, s, len);
  } else {
    lua_newtable(L);
    e.visiting = lua_gettop(L);
    enc_value(&e, idx, 0);
  }
  return e.full;
}
