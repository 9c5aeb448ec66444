/*
** host.c: assembles the `host` table that Lua code sees.
*/
#include "host.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "reload.h"
#include "vm.h"

/* host.log(level, message): level is "debug" | "info" | "warn" | "error". */
static int l_log(lua_State *L)
{
    static const char *const names[] = {"debug", "info", "warn", "error", NULL};
    int lvl = luaL_checkoption(L, 1, NULL, names);
    log_msg((enum log_level)lvl, "%s", luaL_checkstring(L, 2));
    return 0;
}

/* host.routes_status() -> {generation = n, lastError = "file:line: msg" | nil} */
static int l_routes_status(lua_State *L)
{
    char err[1024];
    reload_last_error(err, sizeof err);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)reload_generation());
    lua_setfield(L, -2, "generation");
    if (*err) {
        lua_pushstring(L, err);
        lua_setfield(L, -2, "lastError");
    }
    return 1;
}

/* host.now_ms(): wall clock in milliseconds; host.clock_ms(): monotonic, for durations. */
static int push_clock(lua_State *L, clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    return 1;
}

/* host.metrics() -> Prometheus text of the process's request metrics */
static int l_metrics(lua_State *L)
{
    char *text = metrics_render();
    if (!text)
        return luaL_error(L, "metrics: out of memory");
    lua_pushstring(L, text);
    free(text);
    return 1;
}

static int l_now_ms(lua_State *L) { return push_clock(L, CLOCK_REALTIME); }
static int l_clock_ms(lua_State *L) { return push_clock(L, CLOCK_MONOTONIC); }

static void set_binding(lua_State *L, const char *name, int (*open)(lua_State *))
{
    open(L);
    lua_setfield(L, -2, name);
}

/*
** JSON numbers decode as floats: the config's whole numbers (every numeric key is declared
** a whole number in conf.c) become integers again, so Lua code reads them as conf_load
** checked them (an integer count, `%d`-formattable, a valid table index).
*/
static void config_integers(lua_State *L)
{
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_Integer n;
        if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) &&
            lua_numbertointeger(lua_tonumber(L, -1), &n)) {
            lua_pushvalue(L, -2);
            lua_pushinteger(L, n);
            lua_rawset(L, -5); /* replacing an existing key's value is safe during lua_next */
        }
        lua_pop(L, 1);
    }
}

void host_push(lua_State *L, const char *config_json)
{
    luaL_newmetatable(L, VM_ARRAY_MT);
    lua_pop(L, 1);
    lua_newtable(L);
    set_binding(L, "json", json_luaopen);
    set_binding(L, "crypto", crypto_luaopen);
    set_binding(L, "pg", pg_luaopen);
    set_binding(L, "jwt", jwt_luaopen);
    set_binding(L, "http", httpc_luaopen);
    set_binding(L, "gzip", gzip_luaopen);
    set_binding(L, "enrichment", enrich_luaopen);
    set_binding(L, "upload", upload_luaopen);
    set_binding(L, "text", text_luaopen);
    set_binding(L, "bulk", bulk_luaopen);
    luaL_getmetatable(L, VM_ARRAY_MT);
    lua_setfield(L, -2, "array_mt");

    static const luaL_Reg funcs[] = {
        {"log", l_log},       {"traceback", vm_traceback}, {"routes_status", l_routes_status},
        {"now_ms", l_now_ms}, {"clock_ms", l_clock_ms},    {"metrics", l_metrics},
        {NULL, NULL}};
    luaL_setfuncs(L, funcs, 0);

    if (config_json) {
        lua_getfield(L, -1, "json");
        lua_getfield(L, -1, "decode");
        lua_pushstring(L, config_json);
        lua_call(L, 1, 1);              /* produced by cjson itself: cannot fail */
        config_integers(L);
        lua_setfield(L, -3, "config");
        lua_pop(L, 1);
    }
}
