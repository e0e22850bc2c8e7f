/* The script executor: a tool whose behaviour is a Lua 5.4 function stored with the tool
 * (executor_config.source), run in-process in a sandbox (tools/exec_script.h).
 *
 * Where a script runs. On a libuv thread-pool thread (uv_queue_work), not on the loop. A script
 * is CPU-bound and short, but "short" is only as short as its limits, and a loop blocked for a
 * tool's whole budget (up to 10 s here) would stall every session and the HTTP server; on the
 * pool the loop never waits. The pool is shared with getaddrinfo and file work, so this
 * executor runs at most half of it at once (UV_THREADPOOL_SIZE / 2, at least 1) and queues the
 * rest itself. The worker reads only the job and the immutable compiled program; the loop
 * writes nothing a worker reads except the job's atomic cancel flag, which the instruction hook
 * polls, so cancel and close stop a running script within about one hook interval.
 *
 * A fresh lua_State per call. Measured: a fresh sandbox (state + libraries + loading the kept
 * bytecode) costs tens of microseconds, small next to the thread hop and next to any real
 * script. Reusing one state per tool with a clean environment per call would save part of that
 * but leaks between calls (the string metatable and the library tables are shared by every
 * environment of a state, and so are upvalues of the returned function), cannot account
 * memory per call, and needs one state per worker thread anyway. A fresh state is isolation by
 * construction: everything a call did is gone when lua_close returns.
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
 * of these that charge their steps to the same budget (the pattern matcher below is a
 * re-implementation of Lua 5.4's pattern semantics that counts its steps; the rest charge
 * their loop counts up front). Large and refused allocations check the clock too, so string
 * building cannot run far past the deadline. What is left unbounded between two hook calls is
 * at most HOOK_EVERY operations on values within memory_bytes (such as comparing two long
 * strings), a few milliseconds.
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
#include "tools/exec_script.h"

#include <ctype.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"

/* Configuration bounds (executor_config). */
#define SOURCE_MAX (256u << 10)
#define TIMEOUT_DEFAULT 1000u
#define TIMEOUT_MAX 10000u
#define INSTR_DEFAULT 10000000u
#define INSTR_MIN 1000u
#define INSTR_MAX 1000000000u
#define MEM_DEFAULT (16u << 20)
#define MEM_MIN (256u << 10)
#define MEM_MAX (256u << 20)
/* compile() runs the chunk's top level on the loop thread, so it gets a shorter clock. */
#define COMPILE_PROBE_MS 100u
#define CODE_MAX (16u << 20)

/* Sandbox internals. */
/* VM instructions between hook calls. Any count hook makes Lua 5.4 trap every instruction
 * (luaG_traceexec), which costs about 2x on tight loops whatever the interval; measured, 100
 * costs 5-10% more than 1000 and bounds the time between clock checks ten times tighter. */
#define HOOK_EVERY 100
#define CHECK_EVERY 1000u      /* charged steps between budget checks */
#define ALLOC_CHECK (1u << 20) /* bytes allocated between clock checks */
#define MAX_DEPTH 100          /* nesting of arguments and results */
#define PRINT_MAX 2000u        /* print() output kept per call (for the log) */
#define MSG_MAX 4096u          /* an error message kept for the model */
#define CLOSE_DEPTH_MAX 32     /* nested coroutine.close calls */
#define NS_PER_MS 1000000ull

/* ------------------------------------------------------------------ compiled programs */

/* What compile() makes of a configuration: the chunk's bytecode (with line information) and
 * the limits. Immutable once made, except the reference count: a job holds a reference, so the
 * program outlives a release() that comes while a worker still runs it. */
typedef struct script_prog {
  atomic_int refs;
  char *code;
  size_t code_len;
  uint64_t timeout_ms;
  uint64_t instructions;
  size_t memory_bytes;
} script_prog;

static void prog_unref(script_prog *p) {
  if (p && atomic_fetch_sub(&p->refs, 1) == 1) {
    free(p->code);
    free(p);
  }
}

/* ------------------------------------------------------------------ one run of the sandbox */

enum kill { K_NONE, K_CANCEL, K_TIME, K_STEPS };
enum fail { F_NONE, F_SYNTAX, F_TOPLEVEL, F_NOTFN, F_ARGS, F_SCRIPT, F_RETURNED, F_RESULT, F_MEMORY, F_INTERNAL };
enum stage { ST_SETUP, ST_LOAD, ST_TOP, ST_ARGS, ST_CALL, ST_RESULT };

/* Everything one sandboxed run needs and produces; it lives on the C stack of the thread that
 * runs the state, outside the state, so that what it owns survives a Lua error. */
typedef struct run_ctx {
  size_t mem_limit, mem_used, alloc_since_check;
  uint64_t max_steps, steps, next_check;
  uint64_t deadline_ns, limit_ms;
  const atomic_int *cancel; /* NULL at compile time */
  int kill, fail, stage, close_depth;
  bool mem_refused;
  /* What to run: Lua text (compile) or our own bytecode (a call) with its arguments. */
  const char *source, *code;
  size_t source_len, code_len;
  const ag_json *args;
  /* What came out. */
  ag_buf *text; /* the result text, capped (a call) */
  bool truncated;
  ag_buf msg;     /* an error message, capped at MSG_MAX */
  ag_buf *prints; /* print() output, NULL = dropped */
  bool prints_cut;
  ag_buf *dump; /* compile: the bytecode */
  char returned[32];
} run_ctx;

static void ctx_init(run_ctx *c, size_t mem, uint64_t steps, uint64_t deadline_ns, uint64_t limit_ms,
                     const atomic_int *cancel) {
  memset(c, 0, sizeof *c);
  c->mem_limit = mem;
  c->max_steps = steps;
  c->next_check = CHECK_EVERY;
  c->deadline_ns = deadline_ns;
  c->limit_ms = limit_ms;
  c->cancel = cancel;
  ag_buf_init(&c->msg, MSG_MAX);
}

static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
static void sb_hook(lua_State *L, lua_Debug *ar);

/* The run of the state L, or NULL when L is not a sandbox (the strlib test entry point). */
static run_ctx *ctx_of(lua_State *L) {
  void *ud = NULL;
  return lua_getallocf(L, &ud) == sb_alloc ? ud : NULL;
}

static const char *kill_reason(int kill) {
  switch (kill) {
  case K_CANCEL: return "the call was cancelled";
  case K_TIME: return "time limit reached";
  default: return "instruction limit reached";
  }
}

static bool cancelled(const run_ctx *c) { return c->cancel && atomic_load_explicit(c->cancel, memory_order_relaxed); }

/* Stops the script if a limit is reached. From then on the hook fires on every instruction and
 * fails it, so a script that catches the error cannot go on. */
static void budget_check(lua_State *L, run_ctx *c) {
  if (c->kill == K_NONE) {
    if (cancelled(c))
      c->kill = K_CANCEL;
    else if (c->steps > c->max_steps)
      c->kill = K_STEPS;
    else if (uv_hrtime() >= c->deadline_ns)
      c->kill = K_TIME;
  }
  if (c->kill != K_NONE) {
    lua_sethook(L, sb_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "%s", kill_reason(c->kill));
  }
}

/* Charges n steps of work done in C (pattern matching, loops over tables) to the budget. */
static void charge(lua_State *L, uint64_t n) {
  run_ctx *c = ctx_of(L);
  if (!c) return;
  c->steps = n > UINT64_MAX - c->steps ? UINT64_MAX : c->steps + n;
  if (c->steps >= c->next_check) {
    c->next_check = c->steps > UINT64_MAX - CHECK_EVERY ? UINT64_MAX : c->steps + CHECK_EVERY;
    budget_check(L, c);
  }
}

static void sb_hook(lua_State *L, lua_Debug *ar) {
  (void)ar; /* a count event */
  run_ctx *c = ctx_of(L);
  if (!c) return;
  c->steps += HOOK_EVERY;
  budget_check(L, c);
}

/* The allocator enforces memory_bytes. It also looks at the clock every ALLOC_CHECK bytes, so
 * that C functions building big strings (where no hook runs) cannot run far past the deadline:
 * refusing the allocation makes Lua raise a memory error, and the kill makes the report say
 * why. A refused allocation is always safe for Lua. */
static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  run_ctx *c = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    c->mem_used -= old;
    return NULL;
  }
  if (nsize > old) {
    size_t more = nsize - old;
    if (c->kill != K_NONE) return NULL;
    if (more > c->mem_limit - c->mem_used) {
      /* Each refusal costs Lua a full emergency collection, and a script can provoke one per
       * instruction (pcall(string.rep, "x", 1e9) in a loop), so refusals look at the clock. */
      c->mem_refused = true;
      if (cancelled(c))
        c->kill = K_CANCEL;
      else if (uv_hrtime() >= c->deadline_ns)
        c->kill = K_TIME;
      return NULL;
    }
    c->alloc_since_check += more;
    if (c->alloc_since_check >= ALLOC_CHECK) {
      c->alloc_since_check = 0;
      if (cancelled(c))
        c->kill = K_CANCEL;
      else if (uv_hrtime() >= c->deadline_ns)
        c->kill = K_TIME;
      if (c->kill != K_NONE) return NULL;
    }
  }
  void *p = realloc(ptr, nsize);
  if (!p) return NULL;
  c->mem_used = c->mem_used - old + nsize;
  return p;
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

static bool utf8_valid(const char *s, size_t len) { return utf8_valid_prefix(s, len) == len; }

/* Appends what fits under b's cap, cut at a character boundary; false if not all of it did. */
static bool append_capped(ag_buf *b, const char *s, size_t len) {
  size_t room = b->max > b->len ? b->max - b->len : 0;
  if (len <= room) return ag_buf_append(b, s, len) == 0;
  size_t cut = ag_utf8_cut(s, room);
  if (cut && ag_buf_append(b, s, cut) < 0) return false;
  return false;
}

/* Appends text of unknown origin (an error message, print output): invalid bytes become
 * U+FFFD, so what reaches the model and the log is always UTF-8. */
static bool append_text(ag_buf *b, const char *s, size_t len) {
  while (len > 0) {
    size_t ok = utf8_valid_prefix(s, len);
    if (!append_capped(b, s, ok)) return false;
    if (ok == len) break;
    if (!append_capped(b, "\xEF\xBF\xBD", 3)) return false;
    s += ok + 1;
    len -= ok + 1;
  }
  return true;
}

/* Keeps the error value at idx as the run's message. */
static void keep_message(run_ctx *c, lua_State *L, int idx) {
  ag_buf_reset(&c->msg);
  int t = lua_type(L, idx);
  if (t == LUA_TSTRING || t == LUA_TNUMBER) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    (void)append_text(&c->msg, s, len);
  } else {
    char what[64];
    int n = snprintf(what, sizeof what, "(an error value of type %s)", luaL_typename(L, idx));
    (void)append_text(&c->msg, what, (size_t)n);
  }
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
  run_ctx *c = ctx_of(L);
  int n = lua_gettop(L);
  for (int i = 1; i <= n; i++) {
    size_t len;
    const char *s = luaL_tolstring(L, i, &len);
    if (c && c->prints && !c->prints_cut &&
        ((i > 1 && !append_capped(c->prints, "\t", 1)) || !append_text(c->prints, s, len)))
      c->prints_cut = true;
    lua_pop(L, 1);
  }
  if (c && c->prints && !c->prints_cut && !append_capped(c->prints, "\n", 1)) c->prints_cut = true;
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
  run_ctx *c = ctx_of(L);
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
  run_ctx *c = ctx_of(L);
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
  run_ctx *c = ctx_of(L);
  size_t limit = c ? c->mem_limit : (size_t)PTRDIFF_MAX;
  if (l + lsep < l || l + lsep > limit / (lua_Unsigned)n) return luaL_error(L, "resulting string too large");
  size_t total = (size_t)n * l + (size_t)(n - 1) * lsep;
  charge(L, total / 64);
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
    charge(L, (lua_Unsigned)e - (lua_Unsigned)pos);
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
  if (pos < size) charge(L, (lua_Unsigned)size - (lua_Unsigned)pos);
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
    charge(L, (lua_Unsigned)n);
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
  charge(L, lua_isnoneornil(L, 2) ? 2 * n * log2n : n);
  return call_upvalue(L);
}

/* utf8.len and utf8.offset scan their string in C without allocating: charged by its length. */
static int sb_charge_scan(lua_State *L) {
  size_t len = 0;
  if (lua_type(L, 1) == LUA_TSTRING) (void)lua_tolstring(L, 1, &len);
  charge(L, len / 16);
  return call_upvalue(L);
}

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

static int sb_json_array(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  mark_array(L, 1);
  return 1;
}

/* ------------------------------------------------------------------ patterns */

/* Lua 5.4 patterns (reference manual, section 6.4.1), matched by a backtracking matcher that
 * counts its steps and charges them to the budget, because the standard one cannot be
 * interrupted: string.find(("a"):rep(30), ("a*"):rep(30) .. "b") runs for longer than the
 * universe. Semantics and error messages follow the standard library; a unit test compares the
 * two on many patterns. */

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
  if (n) charge(ms->L, n);
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
    charge(L, (ls - init) / 64);
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

static int sb_find(lua_State *L) { return pat_find_aux(L, true); }
static int sb_match(lua_State *L) { return pat_find_aux(L, false); }

typedef struct gmatch_state {
  const char *src, *p, *lastmatch;
  pat_state ms;
} gmatch_state;

static int sb_gmatch_step(lua_State *L) {
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

static int sb_gmatch(lua_State *L) {
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
  lua_pushcclosure(L, sb_gmatch_step, 3);
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

static int sb_gsub(lua_State *L) {
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

static const luaL_Reg strlib_funcs[] = {
    {"find", sb_find}, {"match", sb_match}, {"gmatch", sb_gmatch}, {"gsub", sb_gsub}, {"rep", sb_rep}, {NULL, NULL},
};

int ag__exec_script_push_strlib(lua_State *L) {
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

static void sandbox_open(lua_State *L) {
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

  lua_createtable(L, 0, 2);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_pushcfunction(L, sb_json_array);
  lua_setfield(L, -2, "array");
  lua_setfield(L, g, "json");

  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &marks_key);
  lua_pop(L, 1);
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
  if (!utf8_valid(s, len)) enc_fail(e, "a string that is not valid UTF-8");
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
      if (!utf8_valid(k->s, k->len)) enc_fail(e, "a key that is not valid UTF-8");
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

/* Writes the function's first result (idx, or 0 for none) as the result text. */
static void encode_result(lua_State *L, run_ctx *c, int idx) {
  enc e = {.L = L, .out = c->text};
  if (idx == 0 || lua_isnil(L, idx)) {
    enc_put(&e, "null", 4);
  } else if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (!utf8_valid(s, len)) enc_fail(&e, "the string is not valid UTF-8");
    enc_put(&e, s, len);
  } else {
    lua_newtable(L);
    e.visiting = lua_gettop(L);
    enc_value(&e, idx, 0);
  }
  c->truncated = e.full;
}

/* ------------------------------------------------------------------ running the sandbox */

typedef struct code_reader {
  const char *p;
  size_t len;
} code_reader;

static const char *read_code(lua_State *L, void *ud, size_t *size) {
  (void)L;
  code_reader *r = ud;
  const char *p = r->p;
  *size = r->len;
  r->p = NULL;
  r->len = 0;
  return p;
}

static int write_code(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  return ag_buf_append(ud, p, sz) < 0;
}

/* Runs inside lua_pcall: builds the sandbox, loads the chunk, runs its top level, and (for a
 * call) converts the arguments, calls the function and writes its result. Script errors are
 * caught by the inner pcalls and recorded; anything else (memory, a bad argument or result)
 * unwinds to run_sandbox, which reads c->stage. */
static int sandbox_main(lua_State *L) {
  run_ctx *c = lua_touserdata(L, 1);
  lua_settop(L, 0);
  c->stage = ST_SETUP;
  sandbox_open(L);

  c->stage = ST_LOAD;
  int st;
  if (c->source) {
    st = luaL_loadbufferx(L, c->source, c->source_len, "=script", "t");
  } else {
    /* Bytecode that compile() made with lua_dump in this process, never bytes from outside. */
    code_reader r = {c->code, c->code_len};
    st = lua_load(L, read_code, &r, "=script", "b");
  }
  if (st != LUA_OK) {
    c->fail = st == LUA_ERRMEM ? F_MEMORY : F_SYNTAX;
    keep_message(c, L, -1);
    return 0;
  }
  if (c->dump && lua_dump(L, write_code, c->dump, 0) != 0) {
    c->fail = F_INTERNAL;
    (void)append_text(&c->msg, "the compiled script is too large", 32);
    return 0;
  }

  c->stage = ST_TOP;
  st = lua_pcall(L, 0, 1, 0);
  if (st != LUA_OK) {
    c->fail = st == LUA_ERRMEM ? F_MEMORY : F_TOPLEVEL;
    keep_message(c, L, -1);
    return 0;
  }
  if (lua_type(L, -1) != LUA_TFUNCTION) {
    c->fail = F_NOTFN;
    snprintf(c->returned, sizeof c->returned, "%s", lua_isnil(L, -1) ? "nothing" : luaL_typename(L, -1));
    return 0;
  }
  if (!c->args) return 0; /* compile: that was the check */

  c->stage = ST_ARGS;
  push_json(L, c->args, 0);

  c->stage = ST_CALL;
  int base = lua_gettop(L) - 2;
  st = lua_pcall(L, 1, LUA_MULTRET, 0);
  if (st != LUA_OK) {
    c->fail = st == LUA_ERRMEM ? F_MEMORY : F_SCRIPT;
    keep_message(c, L, -1);
    return 0;
  }
  int nres = lua_gettop(L) - base;

  c->stage = ST_RESULT;
  if (nres >= 2 && lua_isnil(L, base + 1) && !lua_isnil(L, base + 2)) {
    c->fail = F_RETURNED;
    keep_message(c, L, base + 2);
    return 0;
  }
  encode_result(L, c, nres > 0 ? base + 1 : 0);
  return 0;
}

static void run_sandbox(run_ctx *c) {
  lua_State *L = lua_newstate(sb_alloc, c);
  if (!L) {
    c->fail = F_MEMORY;
    return;
  }
  lua_sethook(L, sb_hook, LUA_MASKCOUNT, HOOK_EVERY);
  /* Neither push can fail (no allocation), so nothing runs unprotected. */
  lua_pushcfunction(L, sandbox_main);
  lua_pushlightuserdata(L, c);
  int st = lua_pcall(L, 1, 0, 0);
  if (st != LUA_OK && c->fail == F_NONE) {
    if (st == LUA_ERRMEM) {
      c->fail = F_MEMORY;
    } else {
      c->fail = c->stage == ST_ARGS ? F_ARGS : c->stage == ST_RESULT ? F_RESULT : F_INTERNAL;
      keep_message(c, L, -1);
    }
  }
  lua_close(L);
}

/* Cuts a result that hit the cap and says so, within the cap. */
static void note_truncation(ag_buf *t) {
  char note[96];
  int n = snprintf(note, sizeof note, "\n[output truncated: the result is longer than %zu bytes]", t->max);
  size_t keep = t->max > (size_t)n ? t->max - (size_t)n : 0;
  if (t->len > keep) {
    t->len = ag_utf8_cut(t->ptr, keep);
    t->ptr[t->len] = '\0';
  }
  (void)append_capped(t, note, (size_t)n);
}

/* Turns a finished run into the call's outcome: the error code, and the output text. */
static int conclude(const run_ctx *c, ag_tool_output *o) {
  const char *msg = ag_buf_cstr(&c->msg);
  switch (c->kill) {
  case K_CANCEL: ag_tool_output_fail(o, "error: the call was cancelled"); return AG_ECANCELED;
  case K_TIME:
    ag_tool_output_fail(o, "error: the script did not finish within its time limit (%llu ms)",
                        (unsigned long long)c->limit_ms);
    return AG_ETIMEDOUT;
  case K_STEPS:
    ag_tool_output_fail(o, "error: the script exceeded its instruction limit (%llu)", (unsigned long long)c->max_steps);
    return AG_ELIMIT;
  default: break;
  }
  switch (c->fail) {
  case F_NONE:
    if (c->truncated) note_truncation(&o->text);
    o->is_error = false;
    return 0;
  case F_MEMORY:
    ag_tool_output_fail(o, "error: the script ran out of memory (limit %zu bytes)", c->mem_limit);
    return AG_ELIMIT;
  case F_ARGS: ag_tool_output_fail(o, "error: the arguments cannot be given to the script: %s", msg); return AG_EINVAL;
  case F_RETURNED: ag_tool_output_fail(o, "%s", c->msg.len ? msg : "error: the tool failed"); return 0;
  case F_RESULT: ag_tool_output_fail(o, "error: the result cannot be converted to JSON: %s", msg); return 0;
  case F_SCRIPT:
  case F_TOPLEVEL: ag_tool_output_fail(o, "error: %s", msg); return 0;
  case F_NOTFN:
    ag_tool_output_fail(o, "error: the script did not return a function (it returned %s)", c->returned);
    return 0;
  default: ag_tool_output_fail(o, "error: the script could not run: %s", msg); return AG_EIO;
  }
}

/* ------------------------------------------------------------------ the executor */

enum job_state { J_WAITING, J_RUNNING, J_FINISHED };

typedef struct sjob sjob;
typedef struct sexec sexec;

struct sjob {
  uv_work_t work;
  sexec *ex;
  sjob *prev, *next; /* in ex->waiting, ex->running or ex->finished */
  int state;
  script_prog *prog; /* a reference */
  char *args, *session_id, *tool_name;
  uint64_t call_deadline_ns; /* 0: none */
  ag_tool_done_fn cb;
  void *ud;
  atomic_int cancel;
  /* Written by the worker, read on the loop once the work is done. */
  int err;
  ag_tool_output *out;
  ag_buf prints;
  bool prints_cut;
};

typedef struct jlist {
  sjob *head, *tail;
  size_t n;
} jlist;

struct sexec {
  ag_executor base;
  const ag_tool_env *env;
  jlist waiting, running, finished;
  size_t max_running;
  uv_timer_t kick; /* delivers finished jobs from the loop, never from inside start/cancel */
  bool closing, close_started;
  void (*done)(void *ud);
  void *done_ud;
};

static void jl_push(jlist *l, sjob *j) {
  j->next = NULL;
  j->prev = l->tail;
  if (l->tail)
    l->tail->next = j;
  else
    l->head = j;
  l->tail = j;
  l->n++;
}

static void jl_remove(jlist *l, sjob *j) {
  if (j->prev)
    j->prev->next = j->next;
  else
    l->head = j->next;
  if (j->next)
    j->next->prev = j->prev;
  else
    l->tail = j->prev;
  j->prev = j->next = NULL;
  l->n--;
}

static sjob *jl_pop(jlist *l) {
  sjob *j = l->head;
  if (j) jl_remove(l, j);
  return j;
}

static void job_free(sjob *j) {
  if (!j) return;
  prog_unref(j->prog);
  free(j->args);
  free(j->session_id);
  free(j->tool_name);
  ag_buf_deinit(&j->prints);
  ag_tool_output_free(j->out);
  free(j);
}

static void job_cancelled(sjob *j) {
  j->err = AG_ECANCELED;
  ag_tool_output_fail(j->out, "error: the call was cancelled");
}

/* The worker: runs the script. Touches only the job and the program. */
static void work_run(uv_work_t *w) {
  sjob *j = w->data;
  const script_prog *p = j->prog;
  ag_tool_output *o = j->out;
  uint64_t now = uv_hrtime();
  uint64_t deadline = now + p->timeout_ms * NS_PER_MS;
  if (j->call_deadline_ns && j->call_deadline_ns < deadline) deadline = j->call_deadline_ns;
  if (atomic_load(&j->cancel)) {
    job_cancelled(j);
    return;
  }
  if (now >= deadline) {
    j->err = AG_ETIMEDOUT;
    ag_tool_output_fail(o, "error: the call timed out before the script could start");
    return;
  }
  char perr[160] = "";
  ag_json *args = ag_json_parse(j->args, strlen(j->args), perr, sizeof perr);
  if (!ag_json_is(args, AG_JSON_OBJECT)) {
    j->err = AG_EINVAL;
    ag_tool_output_fail(o, "error: the arguments are not a JSON object%s%s", args ? "" : ": ", args ? "" : perr);
    ag_json_free(args);
    return;
  }
  run_ctx c;
  ctx_init(&c, p->memory_bytes, p->instructions, deadline, (deadline - now) / NS_PER_MS, &j->cancel);
  c.code = p->code;
  c.code_len = p->code_len;
  c.args = args;
  c.text = &o->text;
  c.prints = &j->prints;
  run_sandbox(&c);
  j->err = conclude(&c, o);
  j->prints_cut = c.prints_cut;
  ag_buf_deinit(&c.msg);
  ag_json_free(args);
}

/* Hands a job's result to its caller; the job is gone before the callback runs, so the
 * callback may start, cancel or close anything. */
static void deliver(sjob *j) {
  if (j->prints.len)
    ag_log_debug(j->session_id, "script tool %s printed%s: %s", j->tool_name, j->prints_cut ? " (cut)" : "",
                 ag_buf_cstr(&j->prints));
  ag_tool_done_fn cb = j->cb;
  void *ud = j->ud;
  int err = j->err;
  ag_tool_output *out = j->out;
  j->out = NULL;
  job_free(j);
  cb(err, out, ud);
}

static void on_kick_closed(uv_handle_t *h) {
  sexec *ex = h->data;
  void (*done)(void *) = ex->done;
  void *ud = ex->done_ud;
  free(ex);
  if (done) done(ud);
}

static void maybe_closed(sexec *ex) {
  if (!ex->closing || ex->close_started || ex->waiting.n || ex->running.n || ex->finished.n) return;
  ex->close_started = true;
  uv_close((uv_handle_t *)&ex->kick, on_kick_closed);
}

static void on_kick(uv_timer_t *t);

static void finish_later(sexec *ex, sjob *j) {
  j->state = J_FINISHED;
  jl_push(&ex->finished, j);
  uv_timer_start(&ex->kick, on_kick, 0, 0);
}

static void on_work_done(uv_work_t *w, int status);

static int submit(sexec *ex, sjob *j) {
  j->work.data = j;
  int rc = uv_queue_work(ex->env->loop, &j->work, work_run, on_work_done);
  if (rc != 0) return AG_EIO;
  j->state = J_RUNNING;
  jl_push(&ex->running, j);
  return 0;
}

/* Starts waiting jobs while the executor's share of the thread pool has room. */
static void pump(sexec *ex) {
  while (!ex->closing && ex->running.n < ex->max_running && ex->waiting.head) {
    sjob *j = jl_pop(&ex->waiting);
    if (submit(ex, j) < 0) {
      j->err = AG_EIO;
      ag_tool_output_fail(j->out, "error: the script could not be scheduled");
      finish_later(ex, j);
    }
  }
}

static void on_work_done(uv_work_t *w, int status) {
  sjob *j = w->data;
  sexec *ex = j->ex;
  jl_remove(&ex->running, j);
  if (status == UV_ECANCELED) job_cancelled(j); /* cancelled before a worker took it */
  deliver(j);
  pump(ex);
  maybe_closed(ex);
}

static void on_kick(uv_timer_t *t) {
  sexec *ex = t->data;
  for (sjob *j = jl_pop(&ex->finished); j; j = jl_pop(&ex->finished))
    deliver(j);
  pump(ex);
  maybe_closed(ex);
}

/* executor_config.<key>: an optional integer in [min, max]. */
static bool get_limit(const ag_json *cfg, const char *key, uint64_t def, uint64_t min, uint64_t max, uint64_t *out,
                      char *err, size_t errlen) {
  const ag_json *v = ag_json_get(cfg, key);
  if (!v) {
    *out = def;
    return true;
  }
  long long x = ag_json_is(v, AG_JSON_INT) ? ag_json_int(v) : -1;
  if (x < 0 || (uint64_t)x < min || (uint64_t)x > max) {
    snprintf(err, errlen, "executor_config.%s: must be an integer from %llu to %llu", key, (unsigned long long)min,
             (unsigned long long)max);
    return false;
  }
  *out = (uint64_t)x;
  return true;
}

static int s_compile(ag_executor *base, const char *config, void **out, char *err, size_t errlen) {
  (void)base;
  static const char *const keys[] = {"source", "timeout_ms", "memory_bytes", "instructions"};
  *out = NULL;
  int rc = AG_EINVAL;
  script_prog *p = NULL;
  ag_buf code;
  ag_buf_init(&code, CODE_MAX);
  run_ctx c;
  ctx_init(&c, 0, 0, 0, 0, NULL);
  ag_json *j = config ? ag_json_parse(config, strlen(config), NULL, 0) : NULL;
  if (!ag_json_is(j, AG_JSON_OBJECT)) {
    snprintf(err, errlen,
             "executor_config: must be a JSON object like {\"source\": \"return function(args) ... end\"}");
    goto done;
  }
  for (void *it = ag_json_iter(j); it; it = ag_json_iter_next(j, it)) {
    const char *k = ag_json_iter_key(it);
    bool known = false;
    for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++)
      if (strcmp(k, keys[i]) == 0) known = true;
    if (!known) {
      snprintf(err, errlen,
               "executor_config.%.64s: unknown key (the keys are source, timeout_ms, memory_bytes, instructions)", k);
      goto done;
    }
  }
  const ag_json *src = ag_json_get(j, "source");
  if (!src) {
    snprintf(err, errlen, "executor_config.source: required, Lua source that returns the tool's function");
    goto done;
  }
  if (!ag_json_is(src, AG_JSON_STRING)) {
    snprintf(err, errlen, "executor_config.source: must be a string of Lua source");
    goto done;
  }
  size_t src_len = ag_json_str_len(src);
  if (src_len == 0 || src_len > SOURCE_MAX) {
    snprintf(err, errlen, "executor_config.source: must be 1 to %u bytes long", SOURCE_MAX);
    goto done;
  }
  uint64_t timeout, instr, mem;
  if (!get_limit(j, "timeout_ms", TIMEOUT_DEFAULT, 1, TIMEOUT_MAX, &timeout, err, errlen) ||
      !get_limit(j, "instructions", INSTR_DEFAULT, INSTR_MIN, INSTR_MAX, &instr, err, errlen) ||
      !get_limit(j, "memory_bytes", MEM_DEFAULT, MEM_MIN, MEM_MAX, &mem, err, errlen))
    goto done;

  /* Compile, and run the top level once to see that it returns a function. This runs on the
   * caller's (loop) thread, so its clock is capped at COMPILE_PROBE_MS. */
  uint64_t probe_ms = timeout < COMPILE_PROBE_MS ? timeout : COMPILE_PROBE_MS;
  ctx_init(&c, (size_t)mem, instr, uv_hrtime() + probe_ms * NS_PER_MS, probe_ms, NULL);
  c.source = ag_json_str(src);
  c.source_len = src_len;
  c.dump = &code;
  run_sandbox(&c);
  const char *msg = ag_buf_cstr(&c.msg);
  if (c.kill != K_NONE) {
    snprintf(err, errlen, "executor_config.source: the top level did not finish within the limits (%s; %llu ms here)",
             kill_reason(c.kill), (unsigned long long)probe_ms);
    goto done;
  }
  switch (c.fail) {
  case F_NONE: break;
  case F_SYNTAX: snprintf(err, errlen, "executor_config.source: does not compile: %s", msg); goto done;
  case F_TOPLEVEL: snprintf(err, errlen, "executor_config.source: the top level failed: %s", msg); goto done;
  case F_NOTFN:
    snprintf(err, errlen,
             "executor_config.source: must return a function, like \"return function(args) ... end\" "
             "(it returned %s)",
             c.returned);
    goto done;
  case F_MEMORY:
    snprintf(err, errlen, "executor_config.source: ran out of memory at the top level (memory_bytes is %llu)",
             (unsigned long long)mem);
    goto done;
  default: snprintf(err, errlen, "executor_config.source: %s", msg); goto done;
  }

  p = calloc(1, sizeof *p);
  if (!p) {
    rc = AG_ENOMEM;
    snprintf(err, errlen, "executor_config: out of memory");
    goto done;
  }
  atomic_init(&p->refs, 1);
  p->code_len = code.len;
  p->code = ag_buf_take(&code);
  if (!p->code) {
    free(p);
    p = NULL;
    rc = AG_ENOMEM;
    snprintf(err, errlen, "executor_config: out of memory");
    goto done;
  }
  p->timeout_ms = timeout;
  p->instructions = instr;
  p->memory_bytes = (size_t)mem;
  *out = p;
  rc = 0;
done:
  ag_buf_deinit(&c.msg);
  ag_buf_deinit(&code);
  ag_json_free(j);
  return rc;
}

static void s_release(ag_executor *base, void *compiled) {
  (void)base;
  prog_unref(compiled);
}

static int s_start(ag_executor *base, const ag_tool_call *call, ag_tool_done_fn cb, void *ud, ag_tool_job **job) {
  sexec *ex = (sexec *)base;
  if (ex->closing) return AG_ESHUTDOWN;
  if (!call || !call->compiled || !cb) return AG_EINVAL;
  sjob *j = calloc(1, sizeof *j);
  if (!j) return AG_ENOMEM;
  ag_buf_init(&j->prints, PRINT_MAX);
  atomic_init(&j->cancel, 0);
  j->args = ag_strdup(call->args ? call->args : "{}");
  j->session_id = ag_strdup(call->session_id);
  j->tool_name = ag_strdup(call->tool_name ? call->tool_name : "(unnamed)");
  j->out = ag_tool_output_new(call->max_output ? call->max_output : ex->env->max_output);
  if (!j->args || !j->tool_name || (call->session_id && !j->session_id) || !j->out) {
    job_free(j);
    return AG_ENOMEM;
  }
  /* The compiled program is shared and immutable but for its reference count. */
  j->prog = (script_prog *)call->compiled;
  atomic_fetch_add(&j->prog->refs, 1);
  uint64_t timeout = call->timeout_ms ? call->timeout_ms : ex->env->timeout_ms;
  if (timeout > UINT32_MAX) timeout = UINT32_MAX;
  j->call_deadline_ns = timeout ? uv_hrtime() + timeout * NS_PER_MS : 0;
  j->ex = ex;
  j->cb = cb;
  j->ud = ud;
  if (ex->running.n < ex->max_running) {
    if (submit(ex, j) < 0) {
      job_free(j);
      return AG_EIO;
    }
  } else {
    j->state = J_WAITING;
    jl_push(&ex->waiting, j);
  }
  if (job) *job = (ag_tool_job *)j;
  return 0;
}

static void s_cancel(ag_executor *base, ag_tool_job *job) {
  sexec *ex = (sexec *)base;
  sjob *j = (sjob *)job;
  if (!j) return;
  switch (j->state) {
  case J_WAITING:
    jl_remove(&ex->waiting, j);
    job_cancelled(j);
    finish_later(ex, j);
    break;
  case J_RUNNING:
    /* The hook sees the flag within HOOK_EVERY instructions; a job still in libuv's queue is
     * taken out and comes back with UV_ECANCELED. */
    atomic_store(&j->cancel, 1);
    (void)uv_cancel((uv_req_t *)&j->work);
    break;
  default: break; /* finished: the callback is on its way */
  }
}

static void s_close(ag_executor *base, void (*done)(void *ud), void *ud) {
  sexec *ex = (sexec *)base;
  if (ex->closing) return;
  ex->closing = true;
  ex->done = done;
  ex->done_ud = ud;
  for (sjob *j = jl_pop(&ex->waiting); j; j = jl_pop(&ex->waiting)) {
    job_cancelled(j);
    finish_later(ex, j);
  }
  for (sjob *j = ex->running.head; j; j = j->next) {
    atomic_store(&j->cancel, 1);
    (void)uv_cancel((uv_req_t *)&j->work);
  }
  maybe_closed(ex);
}

static const struct ag_executor_vtbl script_vtbl = {
    .kind = "script",
    .compile = s_compile,
    .release = s_release,
    .start = s_start,
    .cancel = s_cancel,
    .close = s_close,
};

/* Half of libuv's thread pool (which reads UV_THREADPOOL_SIZE: default 4, at most 1024). */
static size_t pool_share(void) {
  long n = 4;
  const char *v = getenv("UV_THREADPOOL_SIZE");
  if (v && *v) {
    char *end;
    long x = strtol(v, &end, 10);
    if (*end == '\0' && x > 0) n = x > 1024 ? 1024 : x;
  }
  return n >= 2 ? (size_t)n / 2 : 1;
}

int ag_exec_script_new(const ag_tool_env *env, ag_executor **out) {
  *out = NULL;
  if (!env || !env->loop) return AG_EINVAL;
  sexec *ex = calloc(1, sizeof *ex);
  if (!ex) return AG_ENOMEM;
  ex->base.vt = &script_vtbl;
  ex->env = env;
  ex->max_running = pool_share();
  if (uv_timer_init(env->loop, &ex->kick) != 0) {
    free(ex);
    return AG_EIO;
  }
  ex->kick.data = ex;
  *out = &ex->base;
  return 0;
}
