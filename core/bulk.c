/*
** bulk.c: host.bulk, the sync import's body ({"titles": [item, ...]}) decoded and validated
** in C, by rules compiled from the same validate.lua rule tables (sync_rules.ITEM): the rules
** stay Lua data that operators edit and hot-reload; only their execution moves here.
**
**   local spec, why = host.bulk.compile(rule, opts)
**       rule: a validate.lua object rule; opts.fields: names whose presence goes into the
**       per-item mask (bit j-1 for fields[j]); opts.blank: strings that count as absent there.
**       opts.shapes: validate.shapes, so a check validate.shape_check made runs here, from
**       its data, instead of a call into Lua per value (one whose patterns this runner does
**       not read is called, as any other check).
**       nil, reason when the rule uses a key or value this runner does not implement (the
**       caller keeps the Lua path): nothing a rule says is ever skipped.
**   local b, kind, message = host.bulk.decode(spec, text, key, max_items)
**       kind "json" (not JSON as yajl reads it, or beyond what lua-cjson would accept: the
**       caller decodes with cjson again for today's exact answer), "envelope" (message: the
**       problem, "must be an object" | "is required" | "must be an array"), "too_many"
**       (message: the element count).
**       opts.sent: a field kept as sent for refused elements (b:sent(i), for warnings).
**   b:received(), b:column(name), b:present(), b:refused(), b:dropped(), b:item(i), b:sent(i)
**
** Semantics are validate.checker(rule)'s on what lua-cjson decodes (lua/validate.lua is the
** reference; spec/unit/bulk_spec.lua compares the two on hostile payloads). What lua-cjson
** decodes and yajl does not (cjson 2.1.0 reads 0x10, 01, +1, NaN, Infinity, raw control
** characters in strings, a NUL as the end of the text) is answered "json", and so is what
** yajl reads and cjson refuses (\f and \v as whitespace, unpaired surrogate escapes, nesting
** past json.c's 64): both go to the caller's cjson path, so no text gets a new answer.
**
** Values are kept in C (strings as offsets into the text or an arena) and become Lua values
** only when asked for: a re-sync of unchanged titles reads a few columns, not every item.
** Elements past max_items are parsed (the count must be right, and a later "titles" key
** replaces the array, as in cjson) but not validated.
**
** This file is the Lua API; the rest is in bulk_rules.c, bulk_json.c, bulk_check.c,
** bulk_text.c, bulk_format.c and bulk_buf.c (bulk_private.h says which does what).
*/
#include <stdlib.h>
#include <string.h>

#include "bulk_private.h"
#include "host.h"

static int spec_gc(lua_State *L)
{
    bulk_spec_free(luaL_checkudata(L, 1, SPEC_MT));
    return 0;
}

/* host.bulk.compile(rule, opts) -> spec | nil, reason */
static int l_compile(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    struct spec *s = lua_newuserdatauv(L, sizeof *s, 1);
    memset(s, 0, sizeof *s);
    s->sent = -1;
    luaL_setmetatable(L, SPEC_MT);
    lua_newtable(L); /* the check functions, by index */
    char why[256];
    if (bulk_rules_compile(L, s, 1, 2, lua_gettop(L), why, sizeof why) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    lua_setiuservalue(L, 3, 1);
    bulk_rules_opts(L, s, 2);
    lua_settop(L, 3);
    return 1;
}

static void bulk_free(struct bulk *b)
{
    if (b->h)
        yajl_free(b->h);
    b->h = NULL;
    free(b->raw);
    free(b->next_field);
    free(b->relems.v);
    free(b->scratch.p);
    free(b->rows);
    free(b->elems.v);
    free(b->arena.p);
    free(b->present);
    free(b->refused);
    b->raw = b->rows = NULL;
    b->next_field = NULL;
    b->relems.v = b->elems.v = NULL;
    b->scratch.p = b->arena.p = NULL;
    b->present = NULL;
    b->refused = NULL;
}

static int bulk_gc(lua_State *L)
{
    bulk_free(luaL_checkudata(L, 1, BULK_MT));
    return 0;
}

static int fail(lua_State *L, struct bulk *b, const char *kind, const char *msg)
{
    bulk_free(b);
    lua_pushnil(L);
    lua_pushstring(L, kind);
    lua_pushstring(L, msg);
    return 3;
}

/* host.bulk.decode(spec, text, key, max_items) -> b | nil, kind, message (see the top) */
static int l_decode(lua_State *L)
{
    struct spec *s = luaL_checkudata(L, 1, SPEC_MT);
    size_t len, klen;
    const char *text = luaL_checklstring(L, 2, &len);
    const char *key = luaL_checklstring(L, 3, &klen);
    lua_Integer max = luaL_optinteger(L, 4, -1);
    lua_settop(L, 4);
    struct bulk *b = lua_newuserdatauv(L, sizeof *b, 6);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, BULK_MT);
    lua_newtable(L);            /* S_REFUSED */
    lua_newtable(L);            /* S_DROPPED */
    lua_getiuservalue(L, 1, 1); /* S_CHECKS */
    lua_newtable(L);            /* S_EXTRAS */
    lua_newtable(L);            /* S_SENT */
    lua_pushnil(L);             /* S_ERROR: a check's error */
    b->spec = s, b->L = L, b->text = text, b->text_len = len, b->key = key, b->key_len = klen;
    b->max_items = max < 0 ? -1 : max;
    b->pending_field = -1;
    if (!(b->raw = calloc((size_t)s->nfields + 1, sizeof *b->raw)) ||
        !(b->next_field = calloc((size_t)s->nfields + 1, sizeof *b->next_field)))
        return luaL_error(L, "bulk: out of memory");
    char why[256];
    int rc = bulk_json_parse(b, why, sizeof why);
    if (rc == BULK_JSON_BAD)
        return fail(L, b, "json", why);
    if (rc == BULK_JSON_RAISED) {
        bulk_free(b);
        lua_pushvalue(L, S_ERROR);
        return lua_error(L);
    }
    if (b->root != ROOT_OBJECT)
        return fail(L, b, "envelope",
                    b->root == ROOT_EMPTY_ARRAY ? "is required" : "must be an object");
    if (b->titles == T_ABSENT)
        return fail(L, b, "envelope", "is required");
    if (b->titles == T_NOT_ARRAY)
        return fail(L, b, "envelope", "must be an array");
    if (b->max_items >= 0 && b->count > b->max_items) {
        bulk_free(b);
        lua_pushnil(L);
        lua_pushliteral(L, "too_many");
        lua_pushinteger(L, b->count);
        return 3;
    }
    free(b->raw);
    free(b->next_field);
    free(b->relems.v);
    free(b->scratch.p);
    b->raw = NULL, b->next_field = NULL, b->relems.v = NULL, b->scratch.p = NULL;
    b->relems.n = b->relems.cap = b->scratch.n = b->scratch.cap = 0;
    b->L = NULL;
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, S_BULK, 1);
    lua_pushvalue(L, S_REFUSED);
    lua_setiuservalue(L, S_BULK, 2);
    lua_pushvalue(L, S_DROPPED);
    lua_setiuservalue(L, S_BULK, 3);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, S_BULK, 4);
    lua_pushvalue(L, S_EXTRAS);
    lua_setiuservalue(L, S_BULK, 5);
    lua_pushvalue(L, S_SENT);
    lua_setiuservalue(L, S_BULK, 6);
    lua_settop(L, S_BULK);
    return 1;
}

/* ---- the decoded body ---- */

static struct bulk *check_bulk(lua_State *L)
{
    struct bulk *b = luaL_checkudata(L, 1, BULK_MT);
    b->L = L;
    return b;
}

/* b:received() -> the array's element count */
static int l_received(lua_State *L)
{
    lua_pushinteger(L, check_bulk(L)->count);
    return 1;
}

/* b:column(name) -> {[i] = cleaned value of field name in element i} (nil: absent, refused) */
static int l_column(lua_State *L)
{
    struct bulk *b = check_bulk(L);
    size_t n;
    const char *name = luaL_checklstring(L, 2, &n);
    int f = bulk_field_index(b->spec, name, n);
    luaL_argcheck(L, f >= 0, 2, "not a field of the rule");
    lua_getiuservalue(L, 1, 5);
    int extras = lua_gettop(L);
    size_t nf = (size_t)b->spec->nfields;
    lua_createtable(L, (int)b->count, 0);
    for (lua_Integer i = 1; i <= b->count; i++) {
        const struct val *v = &b->rows[(size_t)(i - 1) * nf + (size_t)f];
        if (b->refused[i - 1] || v->t == V_ABSENT)
            continue;
        bulk_push_val(b, v, extras);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

/* b:present() -> {[i] = presence mask} for the accepted elements */
static int l_present(lua_State *L)
{
    struct bulk *b = check_bulk(L);
    lua_createtable(L, (int)b->count, 0);
    for (lua_Integer i = 1; i <= b->count; i++) {
        if (b->refused[i - 1])
            continue;
        lua_pushinteger(L, b->present[i - 1]);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

/* b:refused() / b:dropped() -> {[i] = errs} (the same table on every call) */
static int l_refused(lua_State *L)
{
    check_bulk(L);
    lua_getiuservalue(L, 1, 2);
    return 1;
}

static int l_dropped(lua_State *L)
{
    check_bulk(L);
    lua_getiuservalue(L, 1, 3);
    return 1;
}

/* b:sent(i) -> refused element i's opts.sent field as sent (a string, number, boolean or
** JSON null; nil when absent or an array or object) */
static int l_sent(lua_State *L)
{
    check_bulk(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    lua_getiuservalue(L, 1, 6);
    lua_rawgeti(L, -1, i);
    return 1;
}

/* b:item(i) -> a new table: element i's rule fields as validate.lua cleans them | nil */
static int l_item(lua_State *L)
{
    struct bulk *b = check_bulk(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    if (i < 1 || i > b->count || b->refused[i - 1]) {
        lua_pushnil(L);
        return 1;
    }
    lua_getiuservalue(L, 1, 5);
    int extras = lua_gettop(L);
    const struct spec *s = b->spec;
    const struct val *row = &b->rows[(size_t)(i - 1) * (size_t)s->nfields];
    lua_createtable(L, 0, s->nfields);
    for (int f = 0; f < s->nfields; f++) {
        if (row[f].t == V_ABSENT)
            continue;
        bulk_push_val(b, &row[f], extras);
        lua_setfield(L, -2, s->fields[f].name);
    }
    return 1;
}

int bulk_luaopen(lua_State *L)
{
    if (luaL_newmetatable(L, SPEC_MT)) {
        lua_pushcfunction(L, spec_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, BULK_MT)) {
        static const luaL_Reg methods[] = {{"received", l_received}, {"column", l_column},
                                           {"present", l_present},   {"refused", l_refused},
                                           {"dropped", l_dropped},   {"item", l_item},
                                           {"sent", l_sent},         {NULL, NULL}};
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, bulk_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = {{"compile", l_compile}, {"decode", l_decode}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
