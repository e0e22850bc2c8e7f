/* Lua 5.4 patterns (reference manual, section 6.4.1) for the script sandbox: string.find,
 * string.match, string.gmatch and string.gsub, matched by a backtracking matcher that counts its
 * steps and charges them to the run's budget (ag__luasb_charge), because the standard one cannot
 * be interrupted: string.find(("a"):rep(30), ("a*"):rep(30) .. "b") runs for longer than the
 * universe, and no instruction hook runs inside it. Semantics and error messages follow the
 * standard library; a unit test (test_strlib_matches_standard) compares the two on many
 * patterns. Outside a sandbox (that test's plain state) nothing is charged. */
#include "tools/lua_pattern.h"

#include <ctype.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tools/lua_sandbox.h"

#define PAT_MAXCAPTURES 32 /* LUA_MAXCAPTURES */
#define PAT_MAXDEPTH 200   /* MAXCCALLS in lstrlib.c: recursion limit of the matcher */
#define PAT_TICKS 4096u    /* steps counted before they are charged */
#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)
#define PAT_SPECIALS "^$*+?.([%-"

typedef struct pat_state {
  const char *src_init, *src_end, *p_end;
  lua_State *L;
  uint64_t ticks;
  int depth; /* recursion left */
  int level; /* captures open or closed so far */
  struct {
    const char *init;
    ptrdiff_t len;
  } capture[PAT_MAXCAPTURES];
} pat_state;

static void pat_flush(pat_state *ms) {
  uint64_t n = ms->ticks;
  ms->ticks = 0;
  if (n) ag__luasb_charge(ms->L, n);
}

static void pat_tick(pat_state *ms, uint64_t n) {
  ms->ticks += n;
  if (ms->ticks >= PAT_TICKS) pat_flush(ms);
}

static void pat_init(pat_state *ms, lua_State *L, const char *s, size_t ls, const char *p, size_t lp) {
  ms->L = L;
  ms->src_init = s;
  ms->src_end = s + ls;
  ms->p_end = p + lp;
  ms->ticks = 0;
}

static void pat_reset(pat_state *ms) {
  ms->level = 0;
  ms->depth = PAT_MAXDEPTH;
}

static const char *pat_match(pat_state *ms, const char *s, const char *p);

/* The end of the single-character class starting at p. */
static const char *pat_class_end(pat_state *ms, const char *p) {
  char c = *p++;
  if (c == '%') {
    if (p >= ms->p_end) luaL_error(ms->L, "malformed pattern (ends with '%%')");
    return p + 1;
  }
  if (c != '[') return p;
  if (p < ms->p_end && *p == '^') p++;
  /* The first character of a set is literal, so "[]]" and "[^]]" are sets holding ']'. */
  for (;;) {
    if (p >= ms->p_end) luaL_error(ms->L, "malformed pattern (missing ']')");
    c = *p++;
    if (c == '%' && p < ms->p_end) p++;
    if (p < ms->p_end && *p == ']') return p + 1;
  }
}

/* Whether c is in the class %cl. */
static bool pat_class_has(int c, int cl) {
  bool r;
  switch (tolower(cl)) {
  case 'a': r = isalpha(c); break;
  case 'c': r = iscntrl(c); break;
  case 'd': r = isdigit(c); break;
  case 'g': r = isgraph(c); break;
  case 'l': r = islower(c); break;
  case 'p': r = ispunct(c); break;
  case 's': r = isspace(c); break;
  case 'u': r = isupper(c); break;
  case 'w': r = isalnum(c); break;
  case 'x': r = isxdigit(c); break;
  case 'z': r = c == 0; break; /* deprecated, still accepted by Lua 5.4 */
  default: return cl == c;
  }
  return isupper(cl) ? !r : r;
}

/* Whether c is in the set [...] from p (at '[') to ec (at the closing ']'). */
static bool pat_set_has(int c, const char *p, const char *ec) {
  bool want = true;
  p++;
  if (*p == '^') {
    want = false;
    p++;
  }
  for (; p < ec; p++) {
    if (*p == '%') {
      p++;
      if (pat_class_has(c, (unsigned char)*p)) return want;
    } else if (p[1] == '-' && p + 2 < ec) {
      if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2]) return want;
      p += 2;
    } else if ((unsigned char)*p == c) {
      return want;
    }
  }
  return !want;
}

static bool pat_single(pat_state *ms, const char *s, const char *p, const char *ep) {
  if (s >= ms->src_end) return false;
  int c = (unsigned char)*s;
  switch (*p) {
  case '.': return true;
  case '%': return pat_class_has(c, (unsigned char)p[1]);
  case '[': return pat_set_has(c, p, ep - 1);
  default: return (unsigned char)*p == c;
  }
}

static const char *pat_balance(pat_state *ms, const char *s, const char *p) {
  if (p + 1 >= ms->p_end) luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
  if (s >= ms->src_end || *s != p[0]) return NULL;
  const char *start = s;
  char open = p[0], close = p[1];
  int depth = 1;
  while (++s < ms->src_end) {
    if (*s == close) {
      if (--depth == 0) {
        pat_tick(ms, (uint64_t)(s - start));
        return s + 1;
      }
    } else if (*s == open) {
      depth++;
    }
  }
  pat_tick(ms, (uint64_t)(s - start));
  return NULL;
}

static const char *pat_max_expand(pat_state *ms, const char *s, const char *p, const char *ep) {
  ptrdiff_t i = 0;
  while (pat_single(ms, s + i, p, ep))
    i++;
  pat_tick(ms, (uint64_t)i);
  /* Try the longest repetition first, then shorter ones. */
  for (; i >= 0; i--) {
    const char *r = pat_match(ms, s + i, ep + 1);
    if (r) return r;
  }
  return NULL;
}

static const char *pat_min_expand(pat_state *ms, const char *s, const char *p, const char *ep) {
  for (;;) {
    const char *r = pat_match(ms, s, ep + 1);
    if (r) return r;
    if (!pat_single(ms, s, p, ep)) return NULL;
    s++;
  }
}

static const char *pat_open(pat_state *ms, const char *s, const char *p, ptrdiff_t what) {
  if (ms->level >= PAT_MAXCAPTURES) luaL_error(ms->L, "too many captures");
  ms->capture[ms->level].init = s;
  ms->capture[ms->level].len = what;
  ms->level++;
  const char *r = pat_match(ms, s, p);
  if (!r) ms->level--;
  return r;
}

static const char *pat_close(pat_state *ms, const char *s, const char *p) {
  int l = ms->level - 1;
  while (l >= 0 && ms->capture[l].len != CAP_UNFINISHED)
    l--;
  if (l < 0) luaL_error(ms->L, "invalid pattern capture");
  ms->capture[l].len = s - ms->capture[l].init;
  const char *r = pat_match(ms, s, p);
  if (!r) ms->capture[l].len = CAP_UNFINISHED;
  return r;
}

static int pat_capture_index(pat_state *ms, int c) {
  int l = c - '1';
  if (l < 0 || l >= ms->level || ms->capture[l].len == CAP_UNFINISHED)
    return luaL_error(ms->L, "invalid capture index %%%d", l + 1);
  return l;
}

static const char *pat_backref(pat_state *ms, const char *s, int c) {
  int l = pat_capture_index(ms, c);
  ptrdiff_t len = ms->capture[l].len;
  if (len < 0) return NULL; /* a position capture matches no text */
  pat_tick(ms, (uint64_t)len / 16);
  if (ms->src_end - s >= len && memcmp(ms->capture[l].init, s, (size_t)len) == 0) return s + len;
  return NULL;
}

static const char *pat_match(pat_state *ms, const char *s, const char *p) {
  if (ms->depth-- == 0) luaL_error(ms->L, "pattern too complex");
  pat_tick(ms, 1);
  for (;;) {
    if (p == ms->p_end) break;
    switch (*p) {
    case '(':
      if (p + 1 < ms->p_end && p[1] == ')')
        s = pat_open(ms, s, p + 2, CAP_POSITION);
      else
        s = pat_open(ms, s, p + 1, CAP_UNFINISHED);
      goto out;
    case ')': s = pat_close(ms, s, p + 1); goto out;
    case '$':
      if (p + 1 == ms->p_end) {
        if (s != ms->src_end) s = NULL;
        goto out;
      }
      break; /* a '$' elsewhere is an ordinary character */
    case '%':
      if (p + 1 >= ms->p_end) break; /* pat_class_end reports it */
      if (p[1] == 'b') {
        s = pat_balance(ms, s, p + 2);
        if (!s) goto out;
        p += 4;
        continue;
      }
      if (p[1] == 'f') {
        p += 2;
        if (p >= ms->p_end || *p != '[') luaL_error(ms->L, "missing '[' after '%%f' in pattern");
        const char *ep = pat_class_end(ms, p);
        int prev = s == ms->src_init ? 0 : (unsigned char)s[-1];
        int cur = s < ms->src_end ? (unsigned char)*s : 0;
        if (pat_set_has(prev, p, ep - 1) || !pat_set_has(cur, p, ep - 1)) {
          s = NULL;
          goto out;
        }
        p = ep;
        continue;
      }
      if (isdigit((unsigned char)p[1])) {
        s = pat_backref(ms, s, (unsigned char)p[1]);
        if (!s) goto out;
        p += 2;
        continue;
      }
      break;
    default: break;
    }
    /* A single-character class, perhaps with a repetition suffix. */
    const char *ep = pat_class_end(ms, p);
    char suffix = ep < ms->p_end ? *ep : '\0';
    if (!pat_single(ms, s, p, ep)) {
      if (suffix == '*' || suffix == '?' || suffix == '-') {
        p = ep + 1; /* zero repetitions are fine */
        continue;
      }
      s = NULL;
      goto out;
    }
    switch (suffix) {
    case '?': {
      const char *r = pat_match(ms, s + 1, ep + 1);
      if (r) {
        s = r;
        goto out;
      }
      p = ep + 1;
      continue;
    }
    case '+': s = pat_max_expand(ms, s + 1, p, ep); goto out;
    case '*': s = pat_max_expand(ms, s, p, ep); goto out;
    case '-': s = pat_min_expand(ms, s, p, ep); goto out;
    default:
      s++;
      p = ep;
      continue;
    }
  }
out:
  ms->depth++;
  return s;
}

/* Pushes capture i (or the whole match s..e when there are no captures and i is 0). */
static void pat_push_capture(pat_state *ms, int i, const char *s, const char *e) {
  if (i >= ms->level) {
    if (i != 0) luaL_error(ms->L, "invalid capture index %%%d", i + 1);
    lua_pushlstring(ms->L, s, (size_t)(e - s));
    return;
  }
  ptrdiff_t l = ms->capture[i].len;
  if (l == CAP_UNFINISHED) luaL_error(ms->L, "unfinished capture");
  if (l == CAP_POSITION)
    lua_pushinteger(ms->L, (lua_Integer)(ms->capture[i].init - ms->src_init) + 1);
  else
    lua_pushlstring(ms->L, ms->capture[i].init, (size_t)l);
}

static int pat_push_captures(pat_state *ms, const char *s, const char *e) {
  int n = (ms->level == 0 && s) ? 1 : ms->level;
  luaL_checkstack(ms->L, n, "too many captures");
  for (int i = 0; i < n; i++)
    pat_push_capture(ms, i, s, e);
  return n;
}

/* A start position as string.find takes it: 1-based, negative from the end. */
static size_t pat_start(lua_Integer pos, size_t len) {
  if (pos > 0) return (size_t)pos;
  if (pos == 0 || pos < -(lua_Integer)len) return 1;
  return len + (size_t)pos + 1;
}

static bool pat_plain(const char *p, size_t lp) {
  for (size_t i = 0; i < lp; i++)
    if (p[i] && strchr(PAT_SPECIALS, p[i])) return false;
  return true;
}

static int pat_find_aux(lua_State *L, bool find) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = pat_start(luaL_optinteger(L, 3, 1), ls) - 1;
  if (init > ls) {
    luaL_pushfail(L);
    return 1;
  }
  if (find && (lua_toboolean(L, 4) || pat_plain(p, lp))) {
    /* memmem is linear; the naive search of lstrlib.c is not. */
    ag__luasb_charge(L, (ls - init) / 64);
    const char *r = memmem(s + init, ls - init, p, lp);
    if (r) {
      lua_pushinteger(L, (lua_Integer)(r - s) + 1);
      lua_pushinteger(L, (lua_Integer)(r - s) + (lua_Integer)lp);
      return 2;
    }
    luaL_pushfail(L);
    return 1;
  }
  pat_state ms;
  bool anchor = lp > 0 && *p == '^';
  if (anchor) {
    p++;
    lp--;
  }
  pat_init(&ms, L, s, ls, p, lp);
  const char *s1 = s + init;
  do {
    pat_reset(&ms);
    const char *e = pat_match(&ms, s1, p);
    if (e) {
      pat_flush(&ms);
      if (find) {
        lua_pushinteger(L, (lua_Integer)(s1 - s) + 1);
        lua_pushinteger(L, (lua_Integer)(e - s));
        return pat_push_captures(&ms, NULL, NULL) + 2;
      }
      return pat_push_captures(&ms, s1, e);
    }
  } while (s1++ < ms.src_end && !anchor);
  pat_flush(&ms);
  luaL_pushfail(L);
  return 1;
}

int ag__luapat_find(lua_State *L) { return pat_find_aux(L, true); }
int ag__luapat_match(lua_State *L) { return pat_find_aux(L, false); }

typedef struct gmatch_state {
  const char *src, *p, *lastmatch;
  pat_state ms;
} gmatch_state;

static int gmatch_step(lua_State *L) {
  gmatch_state *gm = lua_touserdata(L, lua_upvalueindex(3));
  gm->ms.L = L; /* the iterator may run in another coroutine than the one that made it */
  for (const char *src = gm->src; src <= gm->ms.src_end; src++) {
    pat_reset(&gm->ms);
    const char *e = pat_match(&gm->ms, src, gm->p);
    if (e && e != gm->lastmatch) {
      gm->src = gm->lastmatch = e;
      pat_flush(&gm->ms);
      return pat_push_captures(&gm->ms, src, e);
    }
  }
  gm->src = gm->ms.src_end + 1;
  pat_flush(&gm->ms);
  return 0;
}

int ag__luapat_gmatch(lua_State *L) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = pat_start(luaL_optinteger(L, 3, 1), ls) - 1;
  lua_settop(L, 2); /* the strings stay alive as upvalues of the iterator */
  gmatch_state *gm = lua_newuserdatauv(L, sizeof *gm, 0);
  if (init > ls) init = ls + 1; /* past the end: no match */
  pat_init(&gm->ms, L, s, ls, p, lp);
  gm->src = s + init;
  gm->p = p;
  gm->lastmatch = NULL;
  lua_pushcclosure(L, gmatch_step, 3);
  return 1;
}

/* Appends the replacement string (argument 3) for the match s..e, expanding %0-%9 and %%. */
static void pat_add_string(pat_state *ms, luaL_Buffer *b, const char *s, const char *e) {
  lua_State *L = ms->L;
  size_t l;
  const char *r = lua_tolstring(L, 3, &l);
  const char *end = r + l;
  pat_tick(ms, l / 16);
  for (;;) {
    const char *pc = memchr(r, '%', (size_t)(end - r));
    if (!pc) break;
    luaL_addlstring(b, r, (size_t)(pc - r));
    pc++;
    if (pc < end && *pc == '%') {
      luaL_addchar(b, '%');
    } else if (pc < end && *pc == '0') {
      luaL_addlstring(b, s, (size_t)(e - s));
    } else if (pc < end && isdigit((unsigned char)*pc)) {
      pat_push_capture(ms, *pc - '1', s, e);
      luaL_tolstring(L, -1, NULL);
      lua_remove(L, -2);
      luaL_addvalue(b);
    } else {
      luaL_error(L, "invalid use of '%c' in replacement string", '%');
    }
    r = pc + 1;
  }
  luaL_addlstring(b, r, (size_t)(end - r));
}

/* Appends the replacement for the match s..e; false if the match is kept as it was. */
static bool pat_add_value(pat_state *ms, luaL_Buffer *b, const char *s, const char *e, int tr) {
  lua_State *L = ms->L;
  switch (tr) {
  case LUA_TFUNCTION: {
    lua_pushvalue(L, 3);
    int n = pat_push_captures(ms, s, e);
    lua_call(L, n, 1);
    break;
  }
  case LUA_TTABLE:
    pat_push_capture(ms, 0, s, e);
    lua_gettable(L, 3);
    break;
  default: pat_add_string(ms, b, s, e); return true;
  }
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    luaL_addlstring(b, s, (size_t)(e - s));
    return false;
  }
  if (!lua_isstring(L, -1)) return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  luaL_addvalue(b);
  return true;
}

int ag__luapat_gsub(lua_State *L) {
  size_t srcl, lp;
  const char *src = luaL_checklstring(L, 1, &srcl);
  const char *p = luaL_checklstring(L, 2, &lp);
  const char *lastmatch = NULL;
  int tr = lua_type(L, 3);
  lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)srcl + 1);
  luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
                   "string/function/table");
  bool anchor = lp > 0 && *p == '^';
  if (anchor) {
    p++;
    lp--;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  pat_state ms;
  pat_init(&ms, L, src, srcl, p, lp);
  lua_Integer n = 0;
  bool changed = false;
  while (n < max_s) {
    pat_reset(&ms);
    const char *e = pat_match(&ms, src, p);
    if (e && e != lastmatch) {
      n++;
      if (pat_add_value(&ms, &b, src, e, tr)) changed = true;
      src = lastmatch = e;
    } else if (src < ms.src_end) {
      luaL_addchar(&b, *src++);
    } else {
      break;
    }
    if (anchor) break;
  }
  pat_flush(&ms);
  if (!changed) {
    lua_pushvalue(L, 1);
  } else {
    luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
    luaL_pushresult(&b);
  }
  lua_pushinteger(L, n);
  return 2;
}
