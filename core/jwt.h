/*
** jwt: host.jwt, JSON Web Tokens on libjwt 1.10 (Debian 12) with the checks that version
** leaves out: the header's algorithm is pinned before libjwt sees the token, a key is
** always passed, and every claim is checked here. The Lua contract is in jwt.c.
*/
#ifndef SHELFSYNC_JWT_H
#define SHELFSYNC_JWT_H

#include <lua.h>
#include <stddef.h>

/* Longest token accepted for verification, in bytes; longer ones are token_invalid. */
#define JWT_MAX_TOKEN_LEN 16384

/*
** The checks of host.jwt.verify_hs256 that need no Lua and no database, for a caller in C
** that must refuse a forged or expired token before it reads a body: header (alg HS256,
** no crit), the MAC (constant time), aud, iat, nbf and exp. Returns NULL when they pass,
** else "token_invalid" or "token_expired" with the reason in *msg. libjwt is not involved:
** whoever accepts the token still verifies it with host.jwt.verify_hs256.
*/
const char *jwt_check_hs256(const char *tok, size_t toklen, const char *key, size_t keylen,
                            const char *aud, const char **msg);

/* Pushes the host.jwt table. */
int jwt_luaopen(lua_State *L);

#endif
