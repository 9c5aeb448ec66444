/*
** luamod.c: the bindings as a Lua C module, so specs test the same C code the server runs:
**   package.cpath = "build/?.so;" .. package.cpath; local host = require("host")
*/
#include <lauxlib.h>
#include <lua.h>

#include "host.h"

int luaopen_host(lua_State *L);

int luaopen_host(lua_State *L)
{
    host_push(L, NULL);
    return 1;
}
