/*
** fuzz_pg_array: PostgreSQL's array text format as pg_value.c reads it from a result
** (every element kind, nested, quoted, explicit bounds). Whatever the text, the result is
** a table or the text itself.
*/
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/pg_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    if (!L) {
        L = luaL_newstate();
        luaL_openlibs(L);
    }
    if (size < 1)
        return 0;
    static const unsigned char kinds[] = {V_TEXT, V_INT, V_FLOAT, V_BOOL, V_TSTZ};
    struct pg_type t = {.oid = 1009, .kind = V_ARRAY, .elem = kinds[data[0] % 5],
                        .delim = (data[0] & 0x80) ? ';' : ','};
    char *text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';          /* libpq's values are NUL-terminated */
    pg_push_array_mt(L);
    int mt = lua_gettop(L);
    pg_push_value(L, text, size - 1, &t, mt);
    if (!lua_istable(L, -1) && !lua_isstring(L, -1))
        abort();
    lua_settop(L, 0);
    lua_gc(L, LUA_GCSTEP, 0);
    free(text);
    return 0;
}
