/*
** host: the table of C bindings that Lua code sees as `host`.
*/
#ifndef SHELFSYNC_HOST_H
#define SHELFSYNC_HOST_H

#include <lua.h>

int json_luaopen(lua_State *L);    /* host.json   (json.c)   */
int crypto_luaopen(lua_State *L);  /* host.crypto (crypto.c) */
int pg_luaopen(lua_State *L);      /* host.pg     (pg.c)     */
int jwt_luaopen(lua_State *L);     /* host.jwt    (jwt.c)    */
int httpc_luaopen(lua_State *L);   /* host.http   (httpc.c)  */
int gzip_luaopen(lua_State *L);    /* host.gzip   (gzip.c)   */
int enrich_luaopen(lua_State *L);  /* host.enrichment (enrich.c) */
int upload_luaopen(lua_State *L);  /* host.upload (upload.c) */
int text_luaopen(lua_State *L);    /* host.text   (text.c)   */
int bulk_luaopen(lua_State *L);    /* host.bulk   (bulk.c)   */

/*
** Pushes a new `host` table: every binding above, plus host.config (decoded from
** config_json, may be NULL), host.log, host.traceback, host.routes_status, host.now_ms and
** host.clock_ms (vm.c adds host.route_files). Creates the VM_ARRAY_MT metatable first. The table is writable;
** the sandbox wraps it read-only.
*/
void host_push(lua_State *L, const char *config_json);

#endif
