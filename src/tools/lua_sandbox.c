/* The sandbox a script tool runs in (tools/lua_sandbox.h): the allocator and the count hook
 * that enforce one run's limits, the replacements for the library functions that could escape
 * them, and the opening of the libraries. The executor (exec_script.c) makes one such state
 * per call; the pattern functions are in lua_pattern.c, the json table and value conversion in
 * lua_json.c.
 *
 * The sandbox holds: the base functions except dofile, loadfile, warn; load for text chunks
 * only, in the sandbox (a binary chunk can corrupt memory); print, whose output goes to the
 * debug log (capped); collectgarbage for collect/count/step/isrunning only (stop would only
 * make the memory cap bite sooner, but there is no reason to offer it); setmetatable refusing
 * __gc (finalizers run with hooks switched off, so a __gc loop would escape every limit);
 * string without dump; table; math; utf8; coroutine (new coroutines inherit the hook, and the
 * budget is counted per state, not per coroutine, so they cannot escape it; coroutine.close is
 * wrapped because deep nesting of it overflows the C stack in Lua 5.4.4); os with clock, date,
 * difftime and time only (read-only clocks; os.date uses localtime_r/gmtime_r in a POSIX build
 * and validates its format). No io, os.execute/getenv/exit/remove..., package, require,
 * debug. The state is created with lua_newstate, so no warning function writes to stderr.
 *
 * Limits. memory_bytes is enforced by the allocator (it refuses to grow past it). instructions
 * by a count hook every HOOK_EVERY VM instructions, which also checks the wall clock
 * (timeout_ms) and the cancel flag; once a limit is hit the hook fires on every instruction
 * and fails it, so a script that catches the error with pcall cannot carry on. Some library
 * functions loop in C where no hook runs: the pattern functions (find, match, gmatch, gsub:
 * backtracking can take exponential time on a short string, and unanchored searches are
 * quadratic), string.rep of an empty string, table.insert/remove/move over a huge __len or
 * range, table.sort's C comparisons, utf8.len/offset scans. The sandbox has its own versions
 * of these that charge their steps to the same budget (the pattern matcher in lua_pattern.c is a
 * re-implementation of Lua 5.4's pattern semantics that counts its steps; the rest charge
 * their loop counts up front). Large and refused allocations check the clock too, so string
 * building cannot run far past the deadline. What is left unbounded between two hook calls is
 * at most HOOK_EVERY operations on values within memory_bytes (such as comparing two long
 * strings), a few milliseconds. */
#include "tools/lua_sandbox.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "base/err.h"
#include "tools/lua_pattern.h"

/* VM instructions between hook calls. Any count hook makes Lua 5.4 trap every instruction
 * (luaG_traceexec), which costs about 2x on tight loops whatever the interval; measured, 100
 * costs 5-10% more than 1000 and bounds the time between clock checks ten times tighter. */
#define HOOK_EVERY 100
#define CHECK_EVERY 1000u      /* charged steps between budget checks */
#define ALLOC_CHECK (1u << 20) /* bytes allocated between clock checks */
#define CLOSE_DEPTH_MAX 32     /* nested coroutine.close calls */

/* ------------------------------------------------------------------ the budget */

void ag__luasb_init(ag__luasb *c, size_t mem, uint64_t steps, uint64_t deadline_ns, const atomic_int *cancel) {
  memset(c, 0, sizeof *c);
  c->mem_limit = mem;
  c->max_steps = steps;
  c->next_check = CHECK_EVERY;
  c->deadline_ns = deadline_ns;
  c->cancel = cancel;
}

static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
static void sb_hook(lua_State *L, lua_Debug *ar);

/* The run of the state L, or NULL when L is not a sandbox (the strlib test entry point). */
static ag__luasb *ctx_of(lua_State *L) {
  void *ud = NULL;
  return lua_getallocf(L, &ud) == sb_alloc ? ud : NULL;
}

const char *ag__luasb_kill_reason(int kill) {
  switch (kill) {
  case AG__LUASB_KILL_CANCEL: return "the call was cancelled";
  case AG__LUASB_KILL_TIME: return "time limit reached";
  default: return "instruction limit reached";
  }
}

static bool cancelled(const ag__luasb *c) { return c->cancel && atomic_load_explicit(c->cancel, memory_order_relaxed); }

/* Stops the script if a limit is reached. From then on the hook fires on every instruction and
 * fails it, so a script that catches the error cannot go on. */
static void budget_check(lua_State *L, ag__luasb *c) {
  if (c->kill == AG__LUASB_KILL_NONE) {
    if (cancelled(c))
      c->kill = AG__LUASB_KILL_CANCEL;
    else if (c->steps > c->max_steps)
      c->kill = AG__LUASB_KILL_STEPS;
    else if (uv_hrtime() >= c->deadline_ns)
      c->kill = AG__LUASB_KILL_TIME;
  }
  if (c->kill != AG__LUASB_KILL_NONE) {
    lua_sethook(L, sb_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "%s", ag__luasb_kill_reason(c->kill));
  }
}

/* Charges n steps of work done in C (pattern matching, loops over tables) to the budget. */
void ag__luasb_charge(lua_State *L, uint64_t n) {
  ag__luasb *c = ctx_of(L);
  if (!c) return;
  c->steps = n > UINT64_MAX - c->steps ? UINT64_MAX : c->steps + n;
  if (c->steps >= c->next_check) {
    c->next_check = c->steps > UINT64_MAX - CHECK_EVERY ? UINT64_MAX : c->steps + CHECK_EVERY;
    budget_check(L, c);
  }
}

static void sb_hook(lua_State *L, lua_Debug *ar) {
  (void)ar; /* a count event */
  ag__luasb *c = ctx_of(L);
  if (!c) return;
  c->steps += HOOK_EVERY;
  budget_check(L, c);
}

/* The allocator enforces memory_bytes. It also looks at the clock every ALLOC_CHECK bytes, so
 * that C functions building big strings (where no hook runs) cannot run far past the deadline:
 * refusing the allocation makes Lua raise a memory error, and the kill makes the report say
 * why. A refused allocation is always safe for Lua. */
static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  ag__luasb *c = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    c->mem_used -= old;
    return NULL;
  }
  if (nsize > old) {
    size_t more = nsize - old;
    if (c->kill != AG__LUASB_KILL_NONE) return NULL;
    if (more > c->mem_limit - c->mem_used) {
      /* Each refusal costs Lua a full emergency collection, and a script can provoke one per
       * instruction (pcall(string.rep, "x", 1e9) in a loop), so refusals look at the clock. */
      c->mem_refused = true;
      if (cancelled(c))
        c->kill = AG__LUASB_KILL_CANCEL;
      else if (uv_hrtime() >= c->deadline_ns)
        c->kill = AG__LUASB_KILL_TIME;
      return NULL;
    }
    c->alloc_since_check += more;
    if (c->alloc_since_check >= ALLOC_CHECK) {
      c->alloc_since_check = 0;
      if (cancelled(c))
        c->kill = AG__LUASB_KILL_CANCEL;
      else if (uv_hrtime() >= c->deadline_ns)
        c->kill = AG__LUASB_KILL_TIME;
      if (c->kill != AG__LUASB_KILL_NONE) return NULL;
    }
  }
  void *p = realloc(ptr, nsize);
  if (!p) return NULL;
  c->mem_used = c->mem_used - old + nsize;
  return p;
}

lua_State *ag__luasb_newstate(ag__luasb *c) {
  lua_State *L = lua_newstate(sb_alloc, c);
  if (L) lua_sethook(L, sb_hook, LUA_MASKCOUNT, HOOK_EVERY);
  return L;
}

/* ------------------------------------------------------------------ text helpers */

/* The length of the longest valid UTF-8 prefix of s (no overlongs, surrogates or values past
 * U+10FFFF). */
static size_t utf8_valid_prefix(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    unsigned c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t n;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return i;
    }
    if (len - i <= n) return i;
    for (size_t k = 1; k <= n; k++) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += n + 1;
  }
  return len;
}

bool ag__luasb_utf8_valid(const char *s, size_t len) { return utf8_valid_prefix(s, len) == len; }

/* Appends what fits under b's cap, cut at a character boundary; false if not all of it did. */
bool ag__luasb_append_capped(ag_buf *b, const char *s, size_t len) {
  size_t room = b->max > b->len ? b->max - b->len : 0;
  if (len <= room) return ag_buf_append(b, s, len) == 0;
  size_t cut = ag_utf8_cut(s, room);
  if (cut && ag_buf_append(b, s, cut) < 0) return false;
  return false;
}

/* Appends text of unknown origin (an error message, print output): invalid bytes become
 * U+FFFD, so what reaches the model and the log is always UTF-8. */
bool ag__luasb_append_text(ag_buf *b, const char *s, size_t len) {
  while (len > 0) {
    size_t ok = utf8_valid_prefix(s, len);
    if (!ag__luasb_append_capped(b, s, ok)) return false;
    if (ok == len) break;
    if (!ag__luasb_append_capped(b, "\xEF\xBF\xBD", 3)) return false;
    s += ok + 1;
    len -= ok + 1;
  }
  return true;
}

/* ------------------------------------------------------------------ sandbox functions */

/* Calls upvalue 1 (the standard function being wrapped) with this call's arguments. */
static int call_upvalue(lua_State *L) {
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, n, LUA_MULTRET);
  return lua_gettop(L);
}

static int sb_print(lua_State *L) {
  ag__luasb *c = ctx_of(L);
  int n = lua_gettop(L);
  for (int i = 1; i <= n; i++) {
    size_t len;
    const char *s = luaL_tolstring(L, i, &len);
    if (c && c->prints && !c->prints_cut &&
        ((i > 1 && !ag__luasb_append_capped(c->prints, "\t", 1)) || !ag__luasb_append_text(c->prints, s, len)))
      c->prints_cut = true;
    lua_pop(L, 1);
  }
  if (c && c->prints && !c->prints_cut && !ag__luasb_append_capped(c->prints, "\n", 1)) c->prints_cut = true;
  return 0;
}

static int sb_collectgarbage(lua_State *L) {
  static const char *const allowed[] = {"collect", "count", "step", "isrunning"};
  const char *opt = luaL_optstring(L, 1, "collect");
  bool ok = false;
  for (size_t i = 0; i < AG_ARRAY_LEN(allowed); i++)
    if (strcmp(opt, allowed[i]) == 0) ok = true;
  if (!ok) return luaL_error(L, "collectgarbage: option '%s' is not available in the sandbox", opt);
  int n = call_upvalue(L);
  /* A full collection is one instruction for the hook but costs as much as the heap. */
  ag__luasb *c = ctx_of(L);
  if (c) budget_check(L, c);
  return n;
}

/* Finalizers run with hooks switched off (lgc.c, GCTM), so a __gc metamethod could loop past
 * every limit, also inside lua_close. Lua marks an object for finalization only if its
 * metatable has a __gc field when setmetatable is called, so refusing that is enough. */
static int sb_setmetatable(lua_State *L) {
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    int t = lua_rawget(L, 2);
    lua_pop(L, 1);
    if (t != LUA_TNIL) return luaL_error(L, "setmetatable: __gc metamethods are not available in the sandbox");
  }
  return call_upvalue(L);
}

/* load(chunk [, chunkname [, mode [, env]]]) for text chunks given as strings; mode is always
 * "t" and env defaults to the sandbox's globals. */
static int sb_load(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  const char *name = luaL_optstring(L, 2, s);
  int env = !lua_isnone(L, 4) ? 4 : 0;
  if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
    luaL_pushfail(L);
    lua_insert(L, -2);
    return 2;
  }
  if (env) {
    lua_pushvalue(L, env);
    if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
  }
  return 1;
}

/* coroutine.close: Lua 5.4.4 does not count nested closes against its C-stack limit, and a few
 * thousand nested ones (a __close handler closing another coroutine...) crash the process. */
static int sb_coclose(lua_State *L) {
  ag__luasb *c = ctx_of(L);
  if (!c) return call_upvalue(L);
  if (c->close_depth >= CLOSE_DEPTH_MAX) return luaL_error(L, "coroutine.close: nested too deeply");
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  c->close_depth++;
  int st = lua_pcall(L, n, LUA_MULTRET, 0);
  c->close_depth--;
  if (st != LUA_OK) return lua_error(L);
  return lua_gettop(L);
}

/* string.rep, without the loop over an empty string (string.rep("", 1e15) loops in C for ever)
 * and refusing up front a result larger than the memory limit. */
static int sb_rep(lua_State *L) {
  size_t l, lsep;
  const char *s = luaL_checklstring(L, 1, &l);
  lua_Integer n = luaL_checkinteger(L, 2);
  const char *sep = luaL_optlstring(L, 3, "", &lsep);
  if (n <= 0 || (l == 0 && lsep == 0)) {
    lua_pushliteral(L, "");
    return 1;
  }
  ag__luasb *c = ctx_of(L);
  size_t limit = c ? c->mem_limit : (size_t)PTRDIFF_MAX;
  if (l + lsep < l || l + lsep > limit / (lua_Unsigned)n) return luaL_error(L, "resulting string too large");
  size_t total = (size_t)n * l + (size_t)(n - 1) * lsep;
  ag__luasb_charge(L, total / 64);
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, total);
  for (lua_Integer i = 0; i < n; i++) {
    memcpy(p, s, l);
    p += l;
    if (lsep && i + 1 < n) {
      memcpy(p, sep, lsep);
      p += lsep;
    }
  }
  luaL_pushresultsize(&b, total);
  return 1;
}

/* table.insert, table.remove and table.move as in Lua 5.4, but charging their loops (whose
 * length comes from __len or from the arguments) to the budget before running them. They
 * accept tables only. */
static int sb_tinsert(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer e = (lua_Integer)((lua_Unsigned)luaL_len(L, 1) + 1u); /* first empty slot */
  lua_Integer pos;
  switch (lua_gettop(L)) {
  case 2: pos = e; break;
  case 3:
    pos = luaL_checkinteger(L, 2);
    luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
    ag__luasb_charge(L, (lua_Unsigned)e - (lua_Unsigned)pos);
    for (lua_Integer i = e; i > pos; i--) {
      lua_geti(L, 1, i - 1);
      lua_seti(L, 1, i);
    }
    break;
  default: return luaL_error(L, "wrong number of arguments to 'insert'");
  }
  lua_seti(L, 1, pos);
  return 0;
}

static int sb_tremove(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer size = luaL_len(L, 1);
  lua_Integer pos = luaL_optinteger(L, 2, size);
  if (pos != size) luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 2, "position out of bounds");
  lua_geti(L, 1, pos);
  if (pos < size) ag__luasb_charge(L, (lua_Unsigned)size - (lua_Unsigned)pos);
  for (; pos < size; pos++) {
    lua_geti(L, 1, pos + 1);
    lua_seti(L, 1, pos);
  }
  lua_pushnil(L);
  lua_seti(L, 1, pos);
  return 1;
}

static int sb_tmove(lua_State *L) {
  lua_Integer f = luaL_checkinteger(L, 2);
  lua_Integer e = luaL_checkinteger(L, 3);
  lua_Integer t = luaL_checkinteger(L, 4);
  int tt = !lua_isnoneornil(L, 5) ? 5 : 1;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, tt, LUA_TTABLE);
  if (e >= f) {
    luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
    lua_Integer n = e - f + 1;
    luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
    ag__luasb_charge(L, (lua_Unsigned)n);
    if (t > e || t <= f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ))) {
      for (lua_Integer i = 0; i < n; i++) {
        lua_geti(L, 1, f + i);
        lua_seti(L, tt, t + i);
      }
    } else {
      for (lua_Integer i = n - 1; i >= 0; i--) {
        lua_geti(L, 1, f + i);
        lua_seti(L, tt, t + i);
      }
    }
  }
  lua_pushvalue(L, tt);
  return 1;
}

/* table.sort: the default comparison runs in C, n log n of them, with no hook in between
 * (sorting a million numbers takes most of a second), so they are charged up front. With a Lua
 * comparator the comparisons are instructions and counted as such. The estimate uses the raw
 * length: elements past it come through __index, which is Lua code or runs out at once. */
static int sb_tsort(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  uint64_t n = (uint64_t)lua_rawlen(L, 1), log2n = 1;
  while (log2n < 64 && (n >> log2n) != 0)
    log2n++;
  ag__luasb_charge(L, lua_isnoneornil(L, 2) ? 2 * n * log2n : n);
  return call_upvalue(L);
}

/* utf8.len and utf8.offset scan their string in C without allocating: charged by its length. */
static int sb_charge_scan(lua_State *L) {
  size_t len = 0;
  if (lua_type(L, 1) == LUA_TSTRING) (void)lua_tolstring(L, 1, &len);
  ag__luasb_charge(L, len / 16);
  return call_upvalue(L);
}

static const luaL_Reg strlib_funcs[] = {
    {"find", ag__luapat_find},
    {"match", ag__luapat_match},
    {"gmatch", ag__luapat_gmatch},
    {"gsub", ag__luapat_gsub},
    {"rep", sb_rep},
    {NULL, NULL},
};

int ag__luasb_push_strlib(lua_State *L) {
  lua_createtable(L, 0, 5);
  luaL_setfuncs(L, strlib_funcs, 0);
  return 1;
}

/* ------------------------------------------------------------------ the sandbox */

/* Replaces t[name] with f, which gets the old value as upvalue 1. */
static void wrap_field(lua_State *L, int t, const char *name, lua_CFunction f) {
  lua_getfield(L, t, name);
  lua_pushcclosure(L, f, 1);
  lua_setfield(L, t, name);
}

void ag__luasb_open(lua_State *L) {
  static const luaL_Reg libs[] = {
      {LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string}, {LUA_TABLIBNAME, luaopen_table},
      {LUA_MATHLIBNAME, luaopen_math}, {LUA_UTF8LIBNAME, luaopen_utf8},  {LUA_COLIBNAME, luaopen_coroutine},
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(libs); i++) {
    luaL_requiref(L, libs[i].name, libs[i].func, 1);
    lua_pop(L, 1);
  }
  lua_pushglobaltable(L);
  int g = lua_gettop(L);

  static const char *const dropped[] = {"dofile", "loadfile", "warn"};
  for (size_t i = 0; i < AG_ARRAY_LEN(dropped); i++) {
    lua_pushnil(L);
    lua_setfield(L, g, dropped[i]);
  }
  lua_pushcfunction(L, sb_load);
  lua_setfield(L, g, "load");
  lua_pushcfunction(L, sb_print);
  lua_setfield(L, g, "print");
  wrap_field(L, g, "collectgarbage", sb_collectgarbage);
  wrap_field(L, g, "setmetatable", sb_setmetatable);

  /* os: the clocks only. The full library stays out of reach in the registry. */
  static const char *const clocks[] = {"clock", "date", "difftime", "time"};
  luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
  lua_createtable(L, 0, (int)AG_ARRAY_LEN(clocks));
  for (size_t i = 0; i < AG_ARRAY_LEN(clocks); i++) {
    lua_getfield(L, -2, clocks[i]);
    lua_setfield(L, -2, clocks[i]);
  }
  lua_setfield(L, g, "os");
  lua_pop(L, 1);

  /* string: this table is also the __index of the string metatable, so ("").dump is gone too. */
  lua_getfield(L, g, "string");
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  luaL_setfuncs(L, strlib_funcs, 0);
  lua_pop(L, 1);

  static const luaL_Reg tablib[] = {{"insert", sb_tinsert}, {"remove", sb_tremove}, {"move", sb_tmove}, {NULL, NULL}};
  lua_getfield(L, g, "table");
  luaL_setfuncs(L, tablib, 0);
  wrap_field(L, lua_gettop(L), "sort", sb_tsort);
  lua_pop(L, 1);

  lua_getfield(L, g, "utf8");
  wrap_field(L, lua_gettop(L), "len", sb_charge_scan);
  wrap_field(L, lua_gettop(L), "offset", sb_charge_scan);
  lua_pop(L, 1);

  lua_getfield(L, g, "coroutine");
  wrap_field(L, lua_gettop(L), "close", sb_coclose);
  lua_pop(L, 1);

  lua_pop(L, 1); /* the globals */
}
