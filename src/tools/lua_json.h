/* Values between JSON and the script sandbox: a call's JSON arguments as a Lua table, the
 * script's result as the call's result text, and the sandbox's json table (json.null,
 * json.array). The mapping is described at the top of lua_json.c. Internal to tools/ (used by
 * exec_script.c); the prefix is ag__luajson_. Every function here may raise a Lua error (out of
 * memory, a value with no JSON form), so each runs inside lua_pcall. */
#ifndef AG_TOOLS_LUA_JSON_H
#define AG_TOOLS_LUA_JSON_H

#include <stdbool.h>

typedef struct lua_State lua_State;
typedef struct ag_buf ag_buf;
typedef struct json_t ag_json;

/* Sets the global json = {null = <light userdata NULL>, array = <function>} in L, and the
 * registry table that records which tables json.array marked. Call it once per state, before
 * ag__luajson_push or ag__luajson_encode_result. */
void ag__luajson_open(lua_State *L);

/* Pushes j (borrowed) as a Lua value: objects as tables, arrays as marked sequences, null as
 * json.null. Raises an error past 100 levels of nesting. */
void ag__luajson_push(lua_State *L, const ag_json *j);

/* Writes the value at idx (0: no value) as the result text into out (borrowed, capped): a
 * string as is, anything else as JSON. Returns true when the text was cut at out's cap. Raises
 * an error, naming where in the value, when the value has no JSON form. */
bool ag__luajson_encode_result(lua_State *L, int idx, ag_buf *out);

#endif
