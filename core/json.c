/*
** json.c: host.json is lua-cjson (Debian's liblua5.4-cjson, linked into the binary).
** Nesting is capped so a hostile body cannot recurse deep; lua/json.lua adds the
** "nil, message" decode and the empty-array marker on top.
*/
#include <lauxlib.h>
#include <lua.h>
#include <lua-cjson.h>

#include "host.h"

#define JSON_MAX_DEPTH 64

static void call_setting(lua_State *L, const char *name, int value)
{
    lua_getfield(L, -1, name);
    lua_pushinteger(L, value);
    lua_call(L, 1, 0);
}

int json_luaopen(lua_State *L)
{
    luaopen_cjson(L);
    call_setting(L, "decode_max_depth", JSON_MAX_DEPTH);
    call_setting(L, "encode_max_depth", JSON_MAX_DEPTH);
    /* Big sparse tables are a bug in our code, not data: refuse rather than emit objects. */
    lua_getfield(L, -1, "encode_sparse_array");
    lua_pushboolean(L, 0);
    lua_pushinteger(L, 2);
    lua_pushinteger(L, 10);
    lua_call(L, 3, 0);
    return 1;
}
