/*
** vm: Lua states for operator scripts. A VM is a fresh lua_State holding a sandboxed
** environment, the read-only `host` table and the framework loaded from lua/ and routes/.
** Hot reload never patches a VM: it builds a new one and drops the old.
*/
#ifndef SHELFSYNC_VM_H
#define SHELFSYNC_VM_H

#include <lua.h>
#include <stddef.h>

struct conf;
struct scripts;

/*
** Builds a VM from a snapshot of the scripts: sandbox, host table, require("app"),
** app.init(). The VM takes its own reference to scripts. Returns the state (owned by the
** caller, release with vm_close) or NULL with "file:line: message" in err.
*/
lua_State *vm_new(const struct conf *c, struct scripts *scripts, char *err, size_t errlen);
void vm_close(lua_State *L);

/*
** The one entry into Lua: pcall of the function below nargs arguments with vm_traceback as
** the handler. Returns LUA_OK with nres results pushed, or an error status with the error
** value pushed and its text (a string with its traceback, or a table's `message`) copied
** into err.
*/
int vm_call(lua_State *L, int nargs, int nres, char *err, size_t errlen);

/*
** The one traceback handler (vm_call's, and host.traceback for xpcall in Lua). A string
** error gets the traceback appended. A table passes through unchanged, so errors as data
** keep their fields; one that is not an intentional HTTP error (no `status`) and has no
** `traceback` yet gets one as its `traceback` field. Other values become a message naming
** their type, with the traceback.
*/
int vm_traceback(lua_State *L);

/*
** The instruction budget. A count hook slows every Lua instruction down, so it is not on
** while a request runs normally: the worker's watchdog arms it once a request has run a
** while (vm_budget_arm, safe from another thread, as lua.c's SIGINT handler relies on),
** and from then on the request may run conf->instruction_limit more instructions. The
** budget is always armed while a VM loads its scripts.
*/
void vm_budget_arm(lua_State *L);
void vm_budget_disarm(lua_State *L);

/* Sets the budget of the next call on L (the worker's thread, before vm_call) and starts
   its count again: a request's work grows with its body, so http_server gives a large
   import a larger one, and the work it leaves for after its answer gets its own. */
void vm_budget_limit(lua_State *L, long limit);

/*
** Pushes app.<name> for a call through vm_call. Returns 0, or -1 when the app has no such
** function (nothing pushed).
*/
int vm_push_app_fn(lua_State *L, const char *name);

/*
** Compiles every .lua file under root/lua and root/routes (text only, not run) and then
** builds a full VM from them. Returns 0, or -1 with "file:line: message" in err.
*/
int vm_check(const struct conf *c, char *err, size_t errlen);

/* The registry name of the metatable that marks a Lua table as a JSON array. */
#define VM_ARRAY_MT "shelfsync.array"

#endif
