/* The script sandbox's own string.find, string.match, string.gmatch and string.gsub: Lua 5.4
 * pattern semantics, but every step of the matcher is charged to the run's budget so that a
 * pathological pattern stops at the instruction or time limit instead of running in C for ever
 * (see lua_pattern.c). Internal to tools/: lua_sandbox.c installs them in the sandbox's string
 * table. They are lua_CFunctions with the standard library's arguments and results. */
#ifndef AG_TOOLS_LUA_PATTERN_H
#define AG_TOOLS_LUA_PATTERN_H

typedef struct lua_State lua_State;

int ag__luapat_find(lua_State *L);
int ag__luapat_match(lua_State *L);
int ag__luapat_gmatch(lua_State *L);
int ag__luapat_gsub(lua_State *L);

#endif
