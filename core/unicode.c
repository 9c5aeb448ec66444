/*
** unicode.c: host.unicode, Unicode normalisation (utf8proc). Names in library files come
** decomposed as often as composed ("S\u0323o\u0323..." in Audible's own data); the
** catalog stores them NFC so one name is one string.
**
**   host.unicode.nfc(s) -> s in NFC | nil, "invalid UTF-8"   (ASCII returns s itself)
*/
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <utf8proc.h>

#include "host.h"

static int is_ascii(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    return 1;
}

static int l_nfc(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    if (is_ascii(s, len)) {
        lua_settop(L, 1);
        return 1;
    }
    utf8proc_uint8_t *out = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &out,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0) {
        lua_pushnil(L);
        lua_pushstring(L, "invalid UTF-8");
        return 2;
    }
    lua_pushlstring(L, (const char *)out, (size_t)n);
    free(out);
    return 1;
}

int unicode_luaopen(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"nfc", l_nfc}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
