/* The Lua sandbox of the script executor (tools/exec_script.c): a lua_State whose allocator and
 * instruction hook enforce one run's limits on memory, instructions, wall-clock time and
 * cancellation, and whose globals hold only what a tool script may use. What the sandbox holds
 * and how each limit is enforced is described at the top of lua_sandbox.c. Internal to tools/
 * (exec_script.c, lua_pattern.c, lua_json.c); the prefix is ag__luasb_. */
#ifndef AG_TOOLS_LUA_SANDBOX_H
#define AG_TOOLS_LUA_SANDBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lua_State lua_State;
typedef struct ag_buf ag_buf;

/* Why a run was stopped (ag__luasb.kill). */
enum { AG__LUASB_KILL_NONE, AG__LUASB_KILL_CANCEL, AG__LUASB_KILL_TIME, AG__LUASB_KILL_STEPS };

/* The limits of one run and what it has used so far. The caller owns it and keeps it outside
 * the state (on the C stack of the thread that runs the state), so that it survives a Lua error;
 * it must outlive the state. Set it up with ag__luasb_init, then set prints if wanted; the
 * other fields are the sandbox's and are only read by the caller once the run is over. */
typedef struct ag__luasb {
  size_t mem_limit, mem_used, alloc_since_check;
  uint64_t max_steps, steps, next_check;
  uint64_t deadline_ns;     /* uv_hrtime() clock */
  const atomic_int *cancel; /* borrowed; NULL: the run cannot be cancelled (compile time) */
  int kill;                 /* AG__LUASB_KILL_*: set once a limit is hit, and then kept */
  int close_depth;          /* nested coroutine.close calls running */
  bool mem_refused;
  ag_buf *prints; /* borrowed; print() output goes here, capped; NULL: dropped */
  bool prints_cut;
} ag__luasb;

/* Clears sb and sets its limits: mem bytes, steps instructions (and charged steps), the
 * deadline on the uv_hrtime() clock, and the cancel flag (borrowed, may be NULL). */
void ag__luasb_init(ag__luasb *sb, size_t mem, uint64_t steps, uint64_t deadline_ns, const atomic_int *cancel);

/* A new, empty state whose allocator and hook enforce sb (borrowed, must outlive the state).
 * NULL when even the state does not fit in memory. Close it with lua_close. */
lua_State *ag__luasb_newstate(ag__luasb *sb);

/* Opens the sandbox's libraries and globals in L (a state from ag__luasb_newstate). Raises a Lua
 * error when out of memory, so it runs inside lua_pcall. The json table is lua_json.c's. */
void ag__luasb_open(lua_State *L);

/* Charges n steps of work done in C (pattern matching, loops over tables) to the budget of L's
 * run, and raises the limit's error if one is reached. Does nothing when L is not a sandbox. */
void ag__luasb_charge(lua_State *L, uint64_t n);

/* A sentence for a kill reason ("time limit reached"); a static string. */
const char *ag__luasb_kill_reason(int kill);

/* For tests: pushes a table {find, match, gmatch, gsub, rep} holding the sandbox's own versions
 * of those string functions, the ones that count their steps. Returns 1. */
int ag__luasb_push_strlib(lua_State *L);

/* Text helpers. Whether s is valid UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
bool ag__luasb_utf8_valid(const char *s, size_t len);
/* Appends what fits under b's cap, cut at a character boundary; false if not all of it did. */
bool ag__luasb_append_capped(ag_buf *b, const char *s, size_t len);
/* Appends text of unknown origin (an error message, print output) like append_capped, but with
 * invalid bytes replaced by U+FFFD, so what reaches the model and the log is always UTF-8. */
bool ag__luasb_append_text(ag_buf *b, const char *s, size_t len);

#endif
