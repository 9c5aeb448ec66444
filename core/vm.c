/*
** vm.c: sandboxed Lua states for the operator's scripts.
**
** Scripts see an allow-listed environment: no io, no os beyond clocks, no debug, no load
** of bytecode, and a `require` that only loads text files from lua/ and routes/. Reading
** or writing an unknown global raises, so a typo fails loudly instead of reading nil.
** A count hook enforces the instruction budget, so an endless loop in a route
** costs one 500 instead of a worker.
*/
#include "vm.h"

#include <dirent.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "host.h"
#include "scripts.h"
#include "web_static.h"

#define HOOK_EVERY 1000
#define REG_APP "shelfsync.app"
#define REG_ENV "shelfsync.env"

/* Lives in the state's extra space, so the hook finds it without a lookup. */
struct vm_budget {
    long limit;
    long used;
    struct scripts *scripts;    /* the sources this VM was built from (one reference) */
};

static struct vm_budget *budget_of(lua_State *L)
{
    return *(struct vm_budget **)lua_getextraspace(L);
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct vm_budget *b = budget_of(L);
    b->used += HOOK_EVERY;
    if (b->used > b->limit)
        luaL_error(L, "instruction limit exceeded (%I): the handler was stopped",
                   (lua_Integer)b->limit);
}

/* Pushes error[key] without metamethods: a handler that raised would lose the error. */
static int rawget_field(lua_State *L, const char *key)
{
    lua_pushstring(L, key);
    return lua_rawget(L, 1);
}

int vm_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL && lua_type(L, 1) == LUA_TTABLE) {
        /* An error as data keeps its identity: callers test its fields (err.sqlstate). An
        ** intentional HTTP error (a status) needs no traceback; any other table gets one. */
        if (rawget_field(L, "status") == LUA_TNIL && rawget_field(L, "traceback") == LUA_TNIL) {
            lua_pushliteral(L, "traceback");
            luaL_traceback(L, L, "", 1);
            lua_rawset(L, 1);
        }
        lua_settop(L, 1);
        return 1;
    }
    if (msg == NULL)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int vm_call(lua_State *L, int nargs, int nres, char *err, size_t errlen)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, vm_traceback);
    lua_insert(L, base);
    int rc = lua_pcall(L, nargs, nres, base);
    lua_remove(L, base);
    if (rc != LUA_OK && err) {
        int top = lua_gettop(L); /* the error value */
        const char *m = lua_tostring(L, top);
        if (m == NULL && lua_istable(L, top)) { /* errors as data carry their message */
            lua_pushstring(L, "message");
            if (lua_rawget(L, top) == LUA_TSTRING)
                m = lua_tostring(L, -1);
        }
        snprintf(err, errlen, "%s", m ? m : "(error object is not a string)");
        lua_settop(L, top);
    }
    return rc;
}

/* ---- the sandboxed require ---- */

static int valid_module_name(const char *name)
{
    if (!*name || name[0] == '.')
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || (*p == '.' && p[1] != '.' && p[1] != '\0')))
            return 0;
    return 1;
}

/* Loads <rel> from the VM's snapshot as text into a function whose _ENV is the sandbox.
   The chunk is named by its relative path, so errors read "routes/sync.lua:12: ...". */
static int load_script(lua_State *L, const char *rel)
{
    char chunk[512];
    const struct scripts_file *f = scripts_find(budget_of(L)->scripts, rel);
    if (!f)
        return LUA_ERRFILE;
    snprintf(chunk, sizeof chunk, "@%s", rel);
    int rc = luaL_loadbufferx(L, f->text, f->len, chunk, "t");
    if (rc != LUA_OK)
        return rc;
    lua_getfield(L, LUA_REGISTRYINDEX, REG_ENV);
    lua_setupvalue(L, -2, 1);
    return LUA_OK;
}

/* require(name): "router" -> lua/router.lua; "routes.auth" -> routes/auth.lua. */
static int l_require(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_getfield(L, lua_upvalueindex(1), name);
    if (!lua_isnil(L, -1))
        return 1;
    lua_pop(L, 1);
    luaL_argcheck(L, valid_module_name(name), 1, "invalid module name");
    char rel[512];
    size_t n = (size_t)snprintf(rel, sizeof rel, "lua/%s", name);
    for (size_t i = 4; i < n; i++)
        if (rel[i] == '.')
            rel[i] = '/';
    snprintf(rel + n, sizeof rel - n, ".lua");
    int rc = load_script(L, rel);
    if (rc == LUA_ERRFILE) {
        n = (size_t)snprintf(rel, sizeof rel, "%s", name);
        for (size_t i = 0; i < n; i++)
            if (rel[i] == '.')
                rel[i] = '/';
        snprintf(rel + n, sizeof rel - n, ".lua");
        rc = load_script(L, rel);
    }
    if (rc == LUA_ERRFILE)
        return luaL_error(L, "module '%s' not found in lua/ or routes/", name);
    if (rc != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, name);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, lua_upvalueindex(1), name);
    return 1;
}

/* host.route_files() -> {"routes.auth", "routes.health", ...}: the snapshot's route files. */
static int l_route_files(lua_State *L)
{
    const struct scripts *s = budget_of(L)->scripts;
    lua_newtable(L);
    int n = 0;
    for (size_t i = 0; i < s->n; i++) {
        const char *rel = s->files[i].rel;
        size_t len = strlen(rel);
        if (!strncmp(rel, "routes/", 7) && !strchr(rel + 7, '/')) {
            lua_pushfstring(L, "routes.%s", rel + 7);
            lua_pushlstring(L, lua_tostring(L, -1), len - 4);
            lua_remove(L, -2);
            lua_rawseti(L, -2, ++n);
        }
    }
    return 1;
}

/* host.web_index() -> the text of the web root's index.html, or nil, "message" */
static int l_web_index(lua_State *L)
{
    size_t len = 0;
    char *text = web_static_index(lua_tostring(L, lua_upvalueindex(1)), &len);
    if (!text) {
        lua_pushnil(L);
        lua_pushstring(L, "the web app's index.html cannot be read");
        return 2;
    }
    lua_pushlstring(L, text, len);
    free(text);
    return 1;
}

/* host.modules("importers") -> {"importers.audible_api", ...}: the snapshot's lua/<dir>/NAME.lua
   as module names, sorted; how a plug-in directory (lua/importers/) is discovered. */
static int l_modules(lua_State *L)
{
    const struct scripts *s = budget_of(L)->scripts;
    size_t dlen;
    const char *dir = luaL_checklstring(L, 1, &dlen);
    luaL_argcheck(L, valid_module_name(dir) && !strchr(dir, '.'), 1, "invalid directory name");
    lua_newtable(L);
    int n = 0;
    for (size_t i = 0; i < s->n; i++) {
        const char *rel = s->files[i].rel;
        size_t len = strlen(rel);
        if (!strncmp(rel, "lua/", 4) && !strncmp(rel + 4, dir, dlen) && rel[4 + dlen] == '/' &&
            !strchr(rel + 5 + dlen, '/')) {
            lua_pushfstring(L, "%s.%s", dir, rel + 5 + dlen);
            lua_pushlstring(L, lua_tostring(L, -1), dlen + 1 + (len - 5 - dlen) - 4);
            lua_remove(L, -2);
            lua_rawseti(L, -2, ++n);
        }
    }
    return 1;
}

/* ---- the environment ---- */

static const char *const safe_globals[] = {
    "assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget", "rawlen",
    "rawset", "select", "setmetatable", "getmetatable", "tonumber", "tostring", "type",
    "xpcall", "_VERSION", NULL};
static const char *const safe_libs[] = {"string", "table", "math", "utf8", "coroutine", NULL};
static const char *const safe_os[] = {"time", "clock", "date", "difftime", NULL};

static int strict_index(lua_State *L)
{
    return luaL_error(L, "unknown global '%s'", lua_tostring(L, 2));
}

static int strict_newindex(lua_State *L)
{
    return luaL_error(L, "assignment to undeclared global '%s' (use local)", lua_tostring(L, 2));
}

static int readonly_newindex(lua_State *L)
{
    return luaL_error(L, "host is read-only (tried to set '%s')", lua_tostring(L, 2));
}

/* Replaces the table at the top by a read-only proxy of it (and of its sub-tables). */
static void make_readonly(lua_State *L, int depth)
{
    if (depth > 0) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -1) == LUA_TTABLE && !lua_getmetatable(L, -1)) {
                lua_pushvalue(L, -2);
                lua_insert(L, -2);
                make_readonly(L, depth - 1);
                lua_rawset(L, -4);
            } else if (lua_type(L, -1) == LUA_TTABLE) {
                lua_pop(L, 2);          /* leave tables with their own metatable alone */
            } else {
                lua_pop(L, 1);
            }
        }
    }
    lua_newtable(L);                    /* proxy */
    lua_newtable(L);                    /* its metatable */
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_remove(L, -2);
}

static void copy_field(lua_State *L, int from, const char *name)
{
    lua_getfield(L, from, name);
    lua_setfield(L, -2, name);
}

/* Builds the sandbox environment, leaves it in the registry (REG_ENV). */
static void build_env(lua_State *L, const struct conf *c)
{
    lua_newtable(L);
    int env = lua_gettop(L);
    lua_pushglobaltable(L);
    int g = lua_gettop(L);
    lua_pushvalue(L, env);
    for (const char *const *p = safe_globals; *p; p++)
        copy_field(L, g, *p);
    for (const char *const *p = safe_libs; *p; p++)
        copy_field(L, g, *p);
    lua_newtable(L);
    lua_getfield(L, g, "os");
    for (const char *const *p = safe_os; *p; p++) {
        lua_getfield(L, -1, *p);
        lua_setfield(L, -3, *p);
    }
    lua_pop(L, 1);
    lua_setfield(L, -2, "os");
    lua_pop(L, 2);                      /* the copy of env, _G */

    host_push(L, c->json);
    lua_pushcfunction(L, l_route_files);
    lua_setfield(L, -2, "route_files");
    lua_pushstring(L, c->web_root);
    lua_pushcclosure(L, l_web_index, 1);
    lua_setfield(L, -2, "web_index");
    lua_pushcfunction(L, l_modules);
    lua_setfield(L, -2, "modules");
    make_readonly(L, 1);
    lua_setfield(L, env, "host");

    lua_newtable(L);                    /* the module cache: one per VM */
    lua_pushcclosure(L, l_require, 1);
    lua_setfield(L, env, "require");

    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");
    lua_newtable(L);
    lua_pushcfunction(L, strict_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, strict_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, env);
    lua_setfield(L, LUA_REGISTRYINDEX, REG_ENV);
}

lua_State *vm_new(const struct conf *c, struct scripts *scripts, char *err, size_t errlen)
{
    lua_State *L = luaL_newstate();
    struct vm_budget *b = calloc(1, sizeof *b);
    if (!L || !b) {
        snprintf(err, errlen, "out of memory");
        free(b);
        if (L)
            lua_close(L);
        return NULL;
    }
    b->limit = c->instruction_limit;
    b->scripts = scripts;
    scripts_ref(scripts);
    *(struct vm_budget **)lua_getextraspace(L) = b;
    luaL_openlibs(L);
    build_env(L, c);
    vm_budget_arm(L);           /* a route file that loops at load time must not hang a reload */

    /* require("app"), then app.init(): every route file is loaded now, not on first use. */
    lua_getfield(L, LUA_REGISTRYINDEX, REG_ENV);
    lua_getfield(L, -1, "require");
    lua_remove(L, -2);
    lua_pushstring(L, "app");
    if (vm_call(L, 1, 1, err, errlen) != LUA_OK || !lua_istable(L, -1)) {
        if (lua_isstring(L, -1) == 0)
            snprintf(err, errlen, "lua/app.lua must return a table");
        vm_close(L);
        return NULL;
    }
    lua_setfield(L, LUA_REGISTRYINDEX, REG_APP);
    if (vm_push_app_fn(L, "init") == 0 && vm_call(L, 0, 0, err, errlen) != LUA_OK) {
        vm_close(L);
        return NULL;
    }
    vm_budget_disarm(L);
    return L;
}

void vm_budget_arm(lua_State *L)
{
    budget_of(L)->used = 0;
    lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

void vm_budget_limit(lua_State *L, long limit)
{
    struct vm_budget *b = budget_of(L);
    b->limit = limit;
    b->used = 0; /* a call after the request (app.after_response) gets a budget of its own */
}

void vm_budget_disarm(lua_State *L)
{
    lua_sethook(L, NULL, 0, 0);
}

int vm_push_app_fn(lua_State *L, const char *name)
{
    lua_getfield(L, LUA_REGISTRYINDEX, REG_APP);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return -1;
    }
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

void vm_close(lua_State *L)
{
    if (!L)
        return;
    struct vm_budget *b = budget_of(L);
    lua_close(L);
    scripts_unref(b->scripts);
    free(b);
}

/* ---- check ---- */

int vm_check(const struct conf *c, char *err, size_t errlen)
{
    struct scripts *s = scripts_load(c->root, err, errlen);
    if (!s)
        return -1;
    lua_State *L = luaL_newstate();
    struct vm_budget b = {.scripts = s};
    int rc = L ? 0 : -1;
    if (!L)
        snprintf(err, errlen, "out of memory");
    else
        *(struct vm_budget **)lua_getextraspace(L) = &b;
    /* Every file compiles (even one no route requires), then the whole tree loads. */
    for (size_t i = 0; rc == 0 && i < s->n; i++) {
        lua_newtable(L);
        lua_setfield(L, LUA_REGISTRYINDEX, REG_ENV);
        if (load_script(L, s->files[i].rel) != LUA_OK) {
            snprintf(err, errlen, "%s", lua_tostring(L, -1));
            rc = -1;
        }
        lua_settop(L, 0);
    }
    if (L)
        lua_close(L);
    if (rc == 0) {
        lua_State *vm = vm_new(c, s, err, errlen);
        if (vm)
            vm_close(vm);
        else
            rc = -1;
    }
    scripts_unref(s);
    return rc;
}
