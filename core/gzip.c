/*
** gzip.c: bounded inflate and plain deflate on zlib.
*/
#include "gzip.h"

#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <stdlib.h>
#include <zlib.h>

#include "host.h"

int gzip_inflate(const char *in, size_t inlen, size_t limit, char **out, size_t *outlen)
{
    z_stream zs = {0};
    char *buf = NULL;
    size_t cap = inlen * 4 + 1024, len = 0;
    int rc = GZIP_ERR_DATA;
    if (inlen > UINT_MAX || inflateInit2(&zs, 15 + 32) != Z_OK)   /* +32: gzip or zlib header */
        return GZIP_ERR_DATA;
    if (cap > limit + 1)
        cap = limit + 1;
    if (!(buf = malloc(cap + 1))) {
        rc = GZIP_ERR_NOMEM;
        goto fail;
    }
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)inlen;
    for (;;) {
        if (len == cap) {
            if (cap > limit) {
                rc = GZIP_ERR_LIMIT;
                goto fail;
            }
            size_t ncap = cap * 2 > limit + 1 ? limit + 1 : cap * 2;
            char *grown = realloc(buf, ncap + 1);
            if (!grown) {
                rc = GZIP_ERR_NOMEM;
                goto fail;
            }
            buf = grown;
            cap = ncap;
        }
        size_t room = cap - len > UINT_MAX ? UINT_MAX : cap - len;
        zs.next_out = (Bytef *)buf + len;
        zs.avail_out = (uInt)room;
        int z = inflate(&zs, Z_NO_FLUSH);
        len += room - zs.avail_out;
        if (len > limit) {
            rc = GZIP_ERR_LIMIT;
            goto fail;
        }
        if (z == Z_STREAM_END)
            break;
        if (z != Z_OK && !(z == Z_BUF_ERROR && zs.avail_out == 0))
            goto fail;               /* corrupt, or truncated (no progress possible) */
        if (zs.avail_in == 0 && zs.avail_out != 0)
            goto fail;               /* input ended before the stream did */
    }
    inflateEnd(&zs);
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
fail:
    inflateEnd(&zs);
    free(buf);
    return rc;
}

int gzip_deflate(const char *in, size_t inlen, char **out, size_t *outlen)
{
    z_stream zs = {0};
    if (inlen > UINT_MAX || deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return GZIP_ERR_DATA;
    size_t cap = deflateBound(&zs, (uLong)inlen);
    char *buf = malloc(cap);
    if (!buf) {
        deflateEnd(&zs);
        return GZIP_ERR_NOMEM;
    }
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)inlen;
    zs.next_out = (Bytef *)buf;
    zs.avail_out = (uInt)cap;
    int z = deflate(&zs, Z_FINISH);
    *outlen = zs.total_out;
    deflateEnd(&zs);
    if (z != Z_STREAM_END) {
        free(buf);
        return GZIP_ERR_DATA;
    }
    *out = buf;
    return 0;
}

/* host.gzip.compress(s) -> gzip bytes */
static int l_compress(lua_State *L)
{
    size_t len, outlen;
    const char *s = luaL_checklstring(L, 1, &len);
    char *out;
    if (gzip_deflate(s, len, &out, &outlen) != 0)
        return luaL_error(L, "gzip: cannot compress");
    lua_pushlstring(L, out, outlen);
    free(out);
    return 1;
}

/* host.gzip.decompress(s[, limit]) -> bytes | nil, "corrupt" | "too large" */
static int l_decompress(lua_State *L)
{
    size_t len, outlen;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer limit = luaL_optinteger(L, 2, 256 << 20);
    luaL_argcheck(L, limit > 0, 2, "limit must be positive");
    char *out;
    int rc = gzip_inflate(s, len, (size_t)limit, &out, &outlen);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, rc == GZIP_ERR_LIMIT ? "too large" : rc == GZIP_ERR_NOMEM ? "out of memory" : "corrupt");
        return 2;
    }
    lua_pushlstring(L, out, outlen);
    free(out);
    return 1;
}

int gzip_luaopen(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"compress", l_compress}, {"decompress", l_decompress}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
