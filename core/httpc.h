/*
** httpc: host.http, outbound HTTP(S) requests on libcurl. The Lua contract is in httpc.c.
*/
#ifndef SHELFSYNC_HTTPC_H
#define SHELFSYNC_HTTPC_H

#include <lua.h>

#define HTTPC_DEFAULT_TIMEOUT_MS 10000
#define HTTPC_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define HTTPC_DEFAULT_MAX_BYTES (64L * 1024 * 1024)

/*
** Initializes libcurl once per process (thread-safe; httpc_luaopen calls it too, so a
** caller need not). Returns 0, or -1 when curl_global_init failed.
*/
int httpc_global_init(void);

/* Pushes the host.http table. */
int httpc_luaopen(lua_State *L);

#endif
