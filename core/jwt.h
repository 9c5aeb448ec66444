/*
** jwt: host.jwt, JSON Web Tokens on libjwt 1.10 (Debian 12) with the checks that version
** leaves out: the header's algorithm is pinned before libjwt sees the token, a key is
** always passed, and every claim is checked here. The Lua contract is in jwt.c.
*/
#ifndef SHELFSYNC_JWT_H
#define SHELFSYNC_JWT_H

#include <lua.h>

/* Longest token accepted for verification, in bytes; longer ones are token_invalid. */
#define JWT_MAX_TOKEN_LEN 16384

/* Pushes the host.jwt table. */
int jwt_luaopen(lua_State *L);

#endif
