/*
** fuzz_lua.h: the one embedded Lua state the Lua-backed fuzz targets share: the standard
** libraries, the host bindings as the global `host` (host.config = config.lua), lua/ on
** package.path, and the target's init chunk, which defines the global function `fuzz`.
** Run from the repository root (make fuzz does).
*/
#ifndef SHELFSYNC_FUZZ_LUA_H
#define SHELFSYNC_FUZZ_LUA_H

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

#include "../core/host.h"

/* The target's state, built on its first input. */
static lua_State *fuzz_lua_state(const char *init)
{
    static lua_State *built;
    if (built)
        return built;
    lua_State *L = luaL_newstate();
    if (!L)
        abort();
    luaL_openlibs(L);
    host_push(L, NULL);
    lua_setglobal(L, "host");
    if (luaL_dostring(L, "package.path = 'lua/?.lua;' .. package.path; host.config = dofile('config.lua')") != LUA_OK ||
        luaL_dostring(L, init) != LUA_OK) {
        fprintf(stderr, "fuzz init: %s\n", lua_tostring(L, -1));
        abort();
    }
    return built = L;
}

/* Calls the init chunk's fuzz(input); an error the target did not expect is a finding: abort. */
static void fuzz_lua_call(const char *init, const unsigned char *data, size_t size)
{
    lua_State *L = fuzz_lua_state(init);
    lua_getglobal(L, "fuzz");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "fuzz: %s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(error object)");
        abort();
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCSTEP, 0);
}

#endif
