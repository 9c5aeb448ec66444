/*
** bulk.c: host.bulk, the sync import's body ({"titles": [item, ...]}) decoded and validated
** in C, by rules compiled from the same validate.lua rule tables (sync_rules.ITEM): the rules
** stay Lua data that operators edit and hot-reload; only their execution moves here.
**
**   local spec, why = host.bulk.compile(rule, opts)
**       rule: a validate.lua object rule; opts.fields: names whose presence goes into the
**       per-item mask (bit j-1 for fields[j]); opts.blank: strings that count as absent there.
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
*/
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "host.h"
#include "vm.h"

#define SPEC_MT "shelfsync.bulk.spec"
#define BULK_MT "shelfsync.bulk"
#define MAX_DEPTH 64               /* lua-cjson's decode_max_depth (json.c) */
#define MAX_INT 9007199254740992LL /* validate.lua's MAX_INT, 2^53 */
#define MAX_BITS 63

/* ---- Lua numbers, compared as Lua compares them (an integer and a float exactly) ---- */

struct num {
    int is_int;
    lua_Integer i;
    double d;
};

static struct num num_int(lua_Integer i)
{
    struct num n = {1, i, 0};
    return n;
}

static struct num num_flt(double d)
{
    struct num n = {0, 0, d};
    return n;
}

static int int_fits_float(lua_Integer i)
{
    return i >= -MAX_INT && i <= MAX_INT;
}

/* A float with an integral value in lua_Integer's range, as lua_numbertointeger. */
static int flt_to_int(double d, lua_Integer *out)
{
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || floor(d) != d)
        return 0;
    *out = (lua_Integer)d;
    return 1;
}

/* i < f and i <= f (lvm.c LTintfloat / LEintfloat) */
static int lt_int_flt(lua_Integer i, double f, int or_equal)
{
    if (int_fits_float(i))
        return or_equal ? (double)i <= f : (double)i < f;
    if (isnan(f))
        return 0;
    double g = or_equal ? floor(f) : ceil(f);
    if (g >= -9223372036854775808.0 && g < 9223372036854775808.0)
        return or_equal ? i <= (lua_Integer)g : i < (lua_Integer)g;
    return f > 0;
}

/* f < i and f <= i (lvm.c LTfloatint / LEfloatint) */
static int lt_flt_int(double f, lua_Integer i, int or_equal)
{
    if (int_fits_float(i))
        return or_equal ? f <= (double)i : f < (double)i;
    if (isnan(f))
        return 0;
    double g = or_equal ? ceil(f) : floor(f);
    if (g >= -9223372036854775808.0 && g < 9223372036854775808.0)
        return or_equal ? (lua_Integer)g <= i : (lua_Integer)g < i;
    return f < 0;
}

static int num_lt(struct num a, struct num b)
{
    if (a.is_int && b.is_int)
        return a.i < b.i;
    if (!a.is_int && !b.is_int)
        return a.d < b.d;
    return a.is_int ? lt_int_flt(a.i, b.d, 0) : lt_flt_int(a.d, b.i, 0);
}

static int num_eq(struct num a, struct num b)
{
    if (a.is_int && b.is_int)
        return a.i == b.i;
    if (!a.is_int && !b.is_int)
        return a.d == b.d;
    lua_Integer i;
    return a.is_int ? flt_to_int(b.d, &i) && i == a.i : flt_to_int(a.d, &i) && i == b.i;
}

static void push_num(lua_State *L, struct num n)
{
    if (n.is_int)
        lua_pushinteger(L, n.i);
    else
        lua_pushnumber(L, n.d);
}

/* ---- compiled rules ---- */

enum rkind { R_STRING, R_INTEGER, R_NUMBER, R_BOOLEAN, R_ARRAY };
enum rformat { FMT_NONE, FMT_DATE, FMT_DATETIME, FMT_URL, FMT_UUID };
enum kind { K_NONE, K_STR, K_NUM, K_BOOL }; /* a scalar constant of a rule */

struct konst {
    int t;
    char *s;
    size_t len;
    struct num n;
    int b;
};

struct rule {
    int kind;
    int required, drop;
    struct konst def, null_if;
    char *message;              /* the rule's `message` (custom), or NULL */
    int check;                  /* index of `check` in the spec's uservalue, 0 = none */
    int trim, keep_empty, fold; /* fold: 1 upper, 2 lower */
    int has_len, has_min_len, has_max_len;
    struct num len, min_len, max_len;
    char *len_msg, *min_len_msg, *max_len_msg;
    char **enums;
    size_t *enum_lens;
    int n_enum;
    char *enum_msg;
    int format;
    int has_min, has_max, coerce, round;
    struct num min, max;
    char *range_msg;
    struct rule *items;
    int has_min_items, has_max_items, compact, unique;
    struct num min_items, max_items;
    char *min_items_msg, *max_items_msg;
    uint32_t keep_items; /* elements worth reading: past max_items the count alone matters */
};

struct field {
    char *name;
    size_t len;
    struct rule r;
};

struct spec {
    int nfields;
    struct field *fields; /* sorted by name, as validate.lua checks them */
    int required, in_place;
    int nbits;
    int bit_field[MAX_BITS];
    int nblank;
    char **blank;
    size_t *blank_lens;
    int nchecks;
    int sent; /* opts.sent: a field index, or -1 */
};

static void rule_free(struct rule *r)
{
    free(r->def.s);
    free(r->null_if.s);
    free(r->message);
    free(r->len_msg);
    free(r->min_len_msg);
    free(r->max_len_msg);
    for (int i = 0; i < r->n_enum; i++)
        free(r->enums[i]);
    free(r->enums);
    free(r->enum_lens);
    free(r->enum_msg);
    free(r->range_msg);
    free(r->min_items_msg);
    free(r->max_items_msg);
    if (r->items) {
        rule_free(r->items);
        free(r->items);
    }
}

static int spec_gc(lua_State *L)
{
    struct spec *s = luaL_checkudata(L, 1, SPEC_MT);
    for (int i = 0; i < s->nfields; i++) {
        free(s->fields[i].name);
        rule_free(&s->fields[i].r);
    }
    free(s->fields);
    for (int i = 0; i < s->nblank; i++)
        free(s->blank[i]);
    free(s->blank);
    free(s->blank_lens);
    memset(s, 0, sizeof *s);
    return 0;
}

/* Compilation: the rule table at index `rt`; the spec's uservalue (check functions) at
** index `uv`. Returns NULL, or the reason the rule cannot run here. */
struct compiler {
    lua_State *L;
    struct spec *s;
    int uv;
    char why[256];
};

static char *dup_top(lua_State *L) /* the string at the top, copied; pops it */
{
    size_t n;
    const char *p = lua_tolstring(L, -1, &n);
    char *s = malloc(n + 1);
    if (!s)
        luaL_error(L, "bulk: out of memory");
    memcpy(s, p, n + 1);
    lua_pop(L, 1);
    return s;
}

/* validate.lua's messages, built by Lua's own `..` so numbers read as Lua writes them. */
static char *concat_msg(lua_State *L, const char *a, int value_idx, const char *b)
{
    lua_pushstring(L, a);
    lua_pushvalue(L, value_idx);
    lua_pushstring(L, b);
    lua_concat(L, 3);
    return dup_top(L);
}

static int refuse(struct compiler *c, const char *path, const char *what)
{
    snprintf(c->why, sizeof c->why, "%s: %s", path, what);
    return -1;
}

static const char *const COMMON_KEYS[] = {"type",    "required", "default", "as", "invalid",
                                          "null_if", "message",  "check",   NULL};
static const char *const STRING_KEYS[] = {"trim",    "empty",   "upper", "lower",  "len",
                                          "min_len", "max_len", "enum",  "format", NULL};
static const char *const NUMBER_KEYS[] = {"min", "max", "coerce", NULL};
static const char *const INTEGER_KEYS[] = {"min", "max", "coerce", "round", NULL};
static const char *const ARRAY_KEYS[] = {"items",   "min_items", "max_items",
                                         "compact", "unique",    NULL};
static const char *const OBJECT_KEYS[] = {"type",    "fields",   "in_place",
                                          "unknown", "required", NULL};

static int in_list(const char *const *list, const char *k)
{
    for (; list && *list; list++)
        if (!strcmp(*list, k))
            return 1;
    return 0;
}

/* Every key of the table at idx is in one of the lists (a key this runner does not know is a
** refusal, never skipped). */
static int keys_known(struct compiler *c, int idx, const char *path, const char *const *a,
                      const char *const *b)
{
    lua_State *L = c->L;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            return refuse(c, path, "a key that is not a string");
        }
        const char *k = lua_tostring(L, -1);
        if (!in_list(a, k) && !in_list(b, k)) {
            snprintf(c->why, sizeof c->why, "%s: rule key %s is not supported", path, k);
            lua_pop(L, 1);
            return -1;
        }
    }
    return 0;
}

static int truthy(lua_State *L, int idx, const char *k)
{
    lua_getfield(L, idx, k);
    int t = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return t;
}

/* An optional number key: 1 set, 0 absent, -1 not a number. */
static int get_num(lua_State *L, int idx, const char *k, struct num *out)
{
    int t = lua_getfield(L, idx, k);
    int rc = 0;
    if (t == LUA_TNUMBER) {
        *out = lua_isinteger(L, -1) ? num_int(lua_tointeger(L, -1)) : num_flt(lua_tonumber(L, -1));
        rc = 1;
    } else if (t != LUA_TNIL) {
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

/* A scalar constant (default, null_if): 0, or -1 for a value this runner cannot hold. */
static int get_konst(lua_State *L, int idx, const char *k, struct konst *out)
{
    int t = lua_getfield(L, idx, k), rc = 0;
    if (t == LUA_TSTRING) {
        out->t = K_STR;
        out->len = lua_rawlen(L, -1);
        out->s = dup_top(L);
        return 0;
    } else if (t == LUA_TNUMBER) {
        out->t = K_NUM;
        out->n =
            lua_isinteger(L, -1) ? num_int(lua_tointeger(L, -1)) : num_flt(lua_tonumber(L, -1));
    } else if (t == LUA_TBOOLEAN) {
        out->t = K_BOOL;
        out->b = lua_toboolean(L, -1);
    } else if (t != LUA_TNIL) {
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

/* "must be at least 3 characters": validate.lua's plural() on a limit at index vi. */
static char *limit_msg(lua_State *L, const char *head, struct num n, const char *one,
                       const char *many)
{
    push_num(L, n);
    char *m = concat_msg(L, head, lua_gettop(L), num_eq(n, num_int(1)) ? one : many);
    lua_pop(L, 1);
    return m;
}

static int compile_rule(struct compiler *c, int idx, const char *path, int is_item, struct rule *r);

static int compile_string(struct compiler *c, int idx, const char *path, struct rule *r)
{
    lua_State *L = c->L;
    r->kind = R_STRING;
    lua_getfield(L, idx, "trim");
    r->trim = !(lua_isboolean(L, -1) && !lua_toboolean(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, idx, "empty");
    r->keep_empty = lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "keep");
    lua_pop(L, 1);
    r->fold = truthy(L, idx, "upper") ? 1 : truthy(L, idx, "lower") ? 2 : 0;
    if ((r->has_len = get_num(L, idx, "len", &r->len)) < 0 ||
        (r->has_min_len = get_num(L, idx, "min_len", &r->min_len)) < 0 ||
        (r->has_max_len = get_num(L, idx, "max_len", &r->max_len)) < 0)
        return refuse(c, path, "a length that is not a number");
    if (r->has_len)
        r->len_msg = limit_msg(L, "must be exactly ", r->len, " character", " characters");
    if (r->has_min_len)
        r->min_len_msg = limit_msg(L, "must be at least ", r->min_len, " character", " characters");
    if (r->has_max_len)
        r->max_len_msg = limit_msg(L, "must be at most ", r->max_len, " character", " characters");
    lua_getfield(L, idx, "format");
    if (!lua_isnil(L, -1)) {
        const char *f = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
        r->format = !strcmp(f, "date")       ? FMT_DATE
                    : !strcmp(f, "datetime") ? FMT_DATETIME
                    : !strcmp(f, "http_url") ? FMT_URL
                    : !strcmp(f, "uuid")     ? FMT_UUID
                                             : FMT_NONE;
        if (r->format == FMT_NONE) {
            lua_pop(L, 1);
            return refuse(c, path, "unknown format");
        }
    }
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "enum") != LUA_TNIL) {
        int e = lua_gettop(L);
        if (!lua_istable(L, e)) {
            lua_pop(L, 1);
            return refuse(c, path, "enum is not a list");
        }
        int n = (int)luaL_len(L, e);
        r->enums = calloc((size_t)n + 1, sizeof *r->enums);
        r->enum_lens = calloc((size_t)n + 1, sizeof *r->enum_lens);
        if (!r->enums || !r->enum_lens)
            return luaL_error(L, "bulk: out of memory");
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addstring(&b, "must be one of ");
        for (int i = 1; i <= n; i++) {
            if (lua_rawgeti(L, e, i) != LUA_TSTRING) {
                lua_pop(L, 1);
                luaL_pushresult(&b);
                lua_pop(L, 2);
                return refuse(c, path, "an enum value that is not a string");
            }
            r->enum_lens[r->n_enum] = lua_rawlen(L, -1);
            r->enums[r->n_enum++] = dup_top(L);
            if (i > 1)
                luaL_addstring(&b, ", ");
            luaL_addlstring(&b, r->enums[i - 1], r->enum_lens[i - 1]);
        }
        luaL_pushresult(&b);
        r->enum_msg = dup_top(L);
    }
    lua_pop(L, 1);
    return 0;
}

static int compile_number(struct compiler *c, int idx, const char *path, int integer,
                          struct rule *r)
{
    lua_State *L = c->L;
    r->kind = integer ? R_INTEGER : R_NUMBER;
    if ((r->has_min = get_num(L, idx, "min", &r->min)) < 0 ||
        (r->has_max = get_num(L, idx, "max", &r->max)) < 0)
        return refuse(c, path, "a bound that is not a number");
    r->coerce = truthy(L, idx, "coerce");
    r->round = integer && truthy(L, idx, "round");
    lua_getfield(L, idx, "min");
    lua_getfield(L, idx, "max");
    int lo = lua_gettop(L) - 1, hi = lo + 1;
    if (r->has_min && r->has_max) {
        lua_pushstring(L, "must be between ");
        lua_pushvalue(L, lo);
        lua_pushstring(L, " and ");
        lua_pushvalue(L, hi);
        lua_concat(L, 4);
        r->range_msg = dup_top(L);
    } else if (r->has_min) {
        r->range_msg = concat_msg(L, "must be at least ", lo, "");
    } else if (r->has_max) {
        r->range_msg = concat_msg(L, "must be at most ", hi, "");
    }
    lua_pop(L, 2);
    return 0;
}

static int compile_array(struct compiler *c, int idx, const char *path, struct rule *r)
{
    lua_State *L = c->L;
    r->kind = R_ARRAY;
    if ((r->has_min_items = get_num(L, idx, "min_items", &r->min_items)) < 0 ||
        (r->has_max_items = get_num(L, idx, "max_items", &r->max_items)) < 0)
        return refuse(c, path, "an item count that is not a number");
    if (r->has_min_items)
        r->min_items_msg = limit_msg(L, "must hold at least ", r->min_items, " item", " items");
    r->keep_items = UINT32_MAX;
    if (r->has_max_items) {
        r->max_items_msg = limit_msg(L, "must hold at most ", r->max_items, " item", " items");
        double m = r->max_items.is_int ? (double)r->max_items.i : floor(r->max_items.d);
        r->keep_items = !(m >= 0) ? 0 : m >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)m + 1;
    }
    r->compact = truthy(L, idx, "compact");
    r->unique = truthy(L, idx, "unique");
    if (lua_getfield(L, idx, "items") != LUA_TTABLE) {
        lua_pop(L, 1);
        return refuse(c, path, "an array without an items rule");
    }
    if (!(r->items = calloc(1, sizeof *r->items)))
        return luaL_error(L, "bulk: out of memory");
    char sub[200];
    snprintf(sub, sizeof sub, "%s[]", path);
    int rc = compile_rule(c, lua_gettop(L), sub, 1, r->items);
    lua_pop(L, 1);
    if (rc == 0 && r->items->kind != R_STRING)
        return refuse(c, sub, "array items other than strings are not supported");
    return rc;
}

/* One field's rule (or an array's items rule, is_item) at idx. */
static int compile_rule(struct compiler *c, int idx, const char *path, int is_item, struct rule *r)
{
    lua_State *L = c->L;
    lua_getfield(L, idx, "type");
    const char *t = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    const char *const *extra = !strcmp(t, "string")    ? STRING_KEYS
                               : !strcmp(t, "integer") ? INTEGER_KEYS
                               : !strcmp(t, "number")  ? NUMBER_KEYS
                               : !strcmp(t, "array")   ? ARRAY_KEYS
                               : !strcmp(t, "boolean") ? NULL
                                                       : (const char *const *)COMMON_KEYS;
    int known_type = extra != COMMON_KEYS;
    char type[16];
    snprintf(type, sizeof type, "%s", t);
    lua_pop(L, 1);
    if (!known_type)
        return refuse(c, path, "type not supported (string, integer, number, boolean, array)");
    if (keys_known(c, idx, path, COMMON_KEYS, extra) < 0)
        return -1;
    if (is_item) {
        static const char *const item_keys[] = {"default", "as", "invalid", "null_if", NULL};
        for (int i = 0; item_keys[i]; i++) {
            lua_getfield(L, idx, item_keys[i]);
            int set = !lua_isnil(L, -1);
            lua_pop(L, 1);
            if (set && strcmp(item_keys[i], "null_if") == 0)
                return refuse(c, path, "null_if on array items is not supported");
        }
    }
    r->required = truthy(L, idx, "required");
    lua_getfield(L, idx, "invalid");
    r->drop = lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "drop");
    lua_pop(L, 1);
    if (get_konst(L, idx, "default", &r->def) < 0 || get_konst(L, idx, "null_if", &r->null_if) < 0)
        return refuse(c, path, "a default or null_if that is not a string, number or boolean");
    int mt = lua_getfield(L, idx, "message");
    if (mt == LUA_TSTRING) {
        r->message = dup_top(L);
    } else {
        lua_pop(L, 1);
        if (mt != LUA_TNIL)
            return refuse(c, path, "a message that is not a string");
    }
    int ct = lua_getfield(L, idx, "check");
    if (ct == LUA_TFUNCTION) {
        r->check = ++c->s->nchecks;
        lua_rawseti(L, c->uv, r->check);
    } else {
        lua_pop(L, 1);
        if (ct != LUA_TNIL)
            return refuse(c, path, "check is not a function");
    }
    if (!strcmp(type, "string"))
        return compile_string(c, idx, path, r);
    if (!strcmp(type, "integer") || !strcmp(type, "number"))
        return compile_number(c, idx, path, !strcmp(type, "integer"), r);
    if (!strcmp(type, "boolean")) {
        r->kind = R_BOOLEAN;
        return 0;
    }
    if (r->check || r->null_if.t != K_NONE || r->def.t != K_NONE || r->message)
        return refuse(c, path, "check, null_if, default or message on an array");
    return compile_array(c, idx, path, r);
}

static int cmp_field(const void *a, const void *b)
{
    const struct field *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* Reads the field rules of the object rule at idx into c->s. */
static int compile_fields(struct compiler *c, int idx)
{
    lua_State *L = c->L;
    struct spec *s = c->s;
    lua_getfield(L, idx, "type");
    int is_object = lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "object");
    lua_pop(L, 1);
    if (!is_object)
        return refuse(c, "rule", "not an object rule");
    if (keys_known(c, idx, "rule", OBJECT_KEYS, NULL) < 0)
        return -1;
    lua_getfield(L, idx, "unknown");
    int reject = lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "reject");
    lua_pop(L, 1);
    if (reject)
        return refuse(c, "rule", "unknown = \"reject\" is not supported");
    s->required = truthy(L, idx, "required");
    s->in_place = truthy(L, idx, "in_place");
    if (lua_getfield(L, idx, "fields") != LUA_TTABLE) {
        lua_pop(L, 1);
        return refuse(c, "rule", "an object rule without fields");
    }
    int f = lua_gettop(L), n = 0;
    lua_pushnil(L);
    while (lua_next(L, f)) {
        lua_pop(L, 1);
        n++;
    }
    if (!(s->fields = calloc((size_t)n + 1, sizeof *s->fields)))
        return luaL_error(L, "bulk: out of memory");
    lua_pushnil(L);
    while (lua_next(L, f)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TTABLE) {
            lua_pop(L, 3);
            return refuse(c, "fields",
                          "a field name that is not a string or a rule that is not a table");
        }
        struct field *fd = &s->fields[s->nfields++];
        fd->len = lua_rawlen(L, -2);
        lua_pushvalue(L, -2);
        fd->name = dup_top(L);
        if (compile_rule(c, lua_gettop(L), fd->name, 0, &fd->r) < 0) {
            lua_pop(L, 3);
            return -1;
        }
        lua_getfield(L, -1, "as");
        int renamed = !lua_isnil(L, -1) &&
                      !(lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), fd->name));
        lua_pop(L, 2);
        if (renamed) {
            lua_pop(L, 2);
            return refuse(c, fd->name, "as (a renamed field) is not supported");
        }
    }
    lua_pop(L, 1);
    qsort(s->fields, (size_t)s->nfields, sizeof *s->fields, cmp_field);
    return 0;
}

static int field_index(const struct spec *s, const char *name, size_t len)
{
    for (int i = 0; i < s->nfields; i++)
        if (s->fields[i].len == len && (!len || s->fields[i].name[0] == name[0]) &&
            !memcmp(s->fields[i].name, name, len))
            return i;
    return -1;
}

static int compile_opts(struct compiler *c, int idx)
{
    lua_State *L = c->L;
    struct spec *s = c->s;
    if (lua_isnoneornil(L, idx))
        return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    if (lua_getfield(L, idx, "fields") == LUA_TTABLE) {
        int n = (int)luaL_len(L, -1);
        if (n > MAX_BITS)
            return luaL_error(L, "bulk.compile: at most %d fields in opts.fields", MAX_BITS);
        for (int j = 1; j <= n; j++) {
            size_t len;
            lua_rawgeti(L, -1, j);
            const char *name = luaL_checklstring(L, -1, &len);
            int fi = field_index(s, name, len);
            if (fi < 0)
                return luaL_error(L, "bulk.compile: opts.fields names %s, not a field of the rule",
                                  name);
            s->bit_field[s->nbits++] = fi;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "sent") != LUA_TNIL) {
        size_t len;
        const char *name = luaL_checklstring(L, -1, &len);
        if ((s->sent = field_index(s, name, len)) < 0)
            return luaL_error(L, "bulk.compile: opts.sent names %s, not a field of the rule", name);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "blank") == LUA_TTABLE) {
        int n = (int)luaL_len(L, -1);
        s->blank = calloc((size_t)n + 1, sizeof *s->blank);
        s->blank_lens = calloc((size_t)n + 1, sizeof *s->blank_lens);
        if (!s->blank || !s->blank_lens)
            return luaL_error(L, "bulk: out of memory");
        for (int j = 1; j <= n; j++) {
            lua_rawgeti(L, -1, j);
            luaL_checkstring(L, -1);
            s->blank_lens[s->nblank] = lua_rawlen(L, -1);
            s->blank[s->nblank++] = dup_top(L);
        }
    }
    lua_pop(L, 1);
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
    struct compiler c = {L, s, lua_gettop(L), ""};
    if (compile_fields(&c, 1) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, c.why);
        return 2;
    }
    lua_setiuservalue(L, 3, 1);
    compile_opts(&c, 2);
    lua_settop(L, 3);
    return 1;
}

/* ---- decoded values ---- */

enum vtype { V_ABSENT, V_NULL, V_STR, V_INT, V_FLT, V_BOOL, V_ARR, V_TABLE, V_REF };
enum where { IN_TEXT, IN_SCRATCH, IN_ARENA };

/* A raw value (as cjson would have decoded it) or a cleaned one. */
struct val {
    unsigned char t, where, mt, nonempty; /* mt: a rebuilt array (json.array_mt) */
    uint32_t n;                           /* V_ARR: elements */
    size_t off, len;                      /* V_STR: bytes; V_ARR: first element */
    union {
        lua_Integer i;
        double d;
        int b;
        int ref; /* V_REF: index in the extras table */
    } u;
};

struct vec {
    struct val *v;
    size_t n, cap;
};

struct buf {
    char *p;
    size_t n, cap;
};

enum frame {
    F_ROOT_OBJ,
    F_ROOT_ARR,
    F_TITLES,
    F_TITLES_OBJ,
    F_ELEM_OBJ,
    F_ELEM_ARR,
    F_FIELD_ARR,
    F_FIELD_OBJ,
    F_SKIP
};
enum titles_state { T_ABSENT, T_ARRAY, T_EMPTY_OBJ, T_NOT_ARRAY };
enum root_state { ROOT_NONE, ROOT_OBJECT, ROOT_EMPTY_ARRAY, ROOT_OTHER };

/* Stack slots of decode(): 1 spec, 2 text, 3 key, 4 max_items, then these. */
#define S_BULK 5
#define S_REFUSED 6
#define S_DROPPED 7
#define S_CHECKS 8
#define S_EXTRAS 9
#define S_SENT 10
#define S_ERROR 11

struct bulk {
    const struct spec *spec;
    lua_State *L; /* while decoding */
    const char *text;
    size_t text_len;
    const char *key;
    size_t key_len;
    lua_Integer max_items;
    yajl_handle h;
    /* parse state */
    unsigned char frames[MAX_DEPTH + 1];
    int depth;
    int pending_titles; /* the root object's current key is `key` */
    int pending_field;  /* the element's current key: a field index, or -1 */
    int frame_field[MAX_DEPTH + 1];
    int root, titles;
    int too_deep, check_failed;
    int completing;    /* inside yajl_complete_parse: the text is consumed */
    size_t root_end;   /* where the root value ended */
    lua_Integer count; /* elements of the current titles array */
    int elem_nonempty; /* an element that is an array has elements */
    /* the element being read: raw field values, their array elements, escaped strings */
    struct val *raw;
    struct vec relems;
    struct buf scratch;
    /* results, per element: cleaned fields (rows of nfields), array elements, strings */
    struct val *rows;
    size_t rows_cap, present_cap, refused_cap; /* elements */
    struct vec elems;
    struct buf arena;
    lua_Integer *present;
    unsigned char *refused;
    int nextras;
    int has_errs; /* an errs table is on top of the stack */
    int errs_idx;
};

static void *grow(lua_State *L, void *p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return p;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(p, c * size);
    if (!q)
        luaL_error(L, "bulk: out of memory");
    *cap = c;
    return q;
}

/* Appends n bytes (p may point into b itself); returns their offset. */
static size_t buf_add(lua_State *L, struct buf *b, const char *p, size_t n)
{
    uintptr_t at = (uintptr_t)p, base = (uintptr_t)b->p;
    int inside = b->p && at >= base && at < base + b->cap;
    b->p = grow(L, b->p, &b->cap, b->n + n + 1, 1);
    if (inside)
        p = b->p + (at - base);
    size_t off = b->n;
    if (n)
        memcpy(b->p + off, p, n);
    b->n += n;
    return off;
}

static struct val *vec_add(lua_State *L, struct vec *v)
{
    v->v = grow(L, v->v, &v->cap, v->n + 1, sizeof *v->v);
    struct val *e = &v->v[v->n++];
    memset(e, 0, sizeof *e);
    return e;
}

static const char *str_of(const struct bulk *b, const struct val *v)
{
    const char *base = v->where == IN_TEXT      ? b->text
                       : v->where == IN_SCRATCH ? b->scratch.p
                                                : b->arena.p;
    return base + v->off;
}

static void bulk_free(struct bulk *b)
{
    if (b->h)
        yajl_free(b->h);
    b->h = NULL;
    free(b->raw);
    free(b->relems.v);
    free(b->scratch.p);
    free(b->rows);
    free(b->elems.v);
    free(b->arena.p);
    free(b->present);
    free(b->refused);
    b->raw = b->rows = NULL;
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

/* ---- problems: {path =, message =} appended to the element's errs table ---- */

static void errs_open(struct bulk *b)
{
    if (!b->has_errs) {
        lua_newtable(b->L);
        b->errs_idx = lua_gettop(b->L);
        b->has_errs = 1;
    }
}

/* path: field, field[index-1] (index > 0) or "" (field NULL); the message is msg, or the
** value on top of the stack (msg NULL), which is popped. */
static void add_err(struct bulk *b, const char *field, long index, const char *msg)
{
    lua_State *L = b->L;
    int top = lua_gettop(L);
    errs_open(b);
    lua_createtable(L, 0, 2);
    if (!field)
        lua_pushliteral(L, "");
    else if (index > 0)
        lua_pushfstring(L, "%s[%d]", field, (int)(index - 1));
    else
        lua_pushstring(L, field);
    lua_setfield(L, -2, "path");
    if (msg)
        lua_pushstring(L, msg);
    else
        lua_pushvalue(L, top);
    lua_setfield(L, -2, "message");
    lua_rawseti(L, b->errs_idx, (lua_Integer)lua_rawlen(L, b->errs_idx) + 1);
    if (!msg)
        lua_remove(L, top);
}

/* ---- strings ---- */

/* Strict UTF-8 as Lua's utf8.len reads it: no overlongs, surrogates or code points past
** U+10FFFF. */
enum text_check { TEXT_OK, TEXT_NUL, TEXT_BAD_UTF8 };

/* validate.lua's string checks in one pass: a NUL anywhere first, then strict UTF-8. */
static int text_check(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            uint64_t w;
            /* ASCII without NUL, eight bytes at a time (the zero-byte test of a word) */
            while (n - i >= 8 && (memcpy(&w, s + i, 8), !(w & 0x8080808080808080ULL)) &&
                   !((w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL))
                i += 8;
            while (i < n && s[i] < 0x80) {
                if (!s[i])
                    return TEXT_NUL;
                i++;
            }
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF)
            k = 1, cp = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF)
            k = 2, cp = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4)
            k = 3, cp = c & 0x07, min = 0x10000;
        else
            goto bad;
        if (n - i <= k)
            goto bad;
        for (size_t j = 1; j <= k; j++) {
            unsigned cc = s[i + j];
            if ((cc & 0xC0) != 0x80)
                goto bad;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            goto bad;
        i += k + 1;
    }
    return TEXT_OK;
bad:
    return memchr(s + i, 0, n - i) ? TEXT_NUL : TEXT_BAD_UTF8;
}

static size_t utf8_count(const unsigned char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += (s[i] & 0xC0) != 0x80;
    return c;
}

static int is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* validate.trim: the Lua %s class at both ends. */
static void trim(const char *p, size_t *off, size_t *len)
{
    size_t a = *off, e = *off + *len;
    while (a < e && is_space((unsigned char)p[a]))
        a++;
    while (e > a && is_space((unsigned char)p[e - 1]))
        e--;
    *off = a;
    *len = e - a;
}

/* Keeps a cleaned string: a range of the text stays there, anything else goes to the arena. */
static void keep_str(struct bulk *b, struct val *v)
{
    if (v->where == IN_SCRATCH) {
        v->off = buf_add(b->L, &b->arena, b->scratch.p + v->off, v->len);
        v->where = IN_ARENA;
    }
}

static void set_new_str(struct bulk *b, struct val *v, const char *p, size_t n)
{
    v->t = V_STR;
    v->off = buf_add(b->L, &b->arena, p, n);
    v->len = n;
    v->where = IN_ARENA;
}

/* ---- dates (validate.lua's parse_iso and FORMATS, ported exactly) ---- */

static int isd(char c)
{
    return c >= '0' && c <= '9';
}
static int d2(const char *p)
{
    return (p[0] - '0') * 10 + (p[1] - '0');
}

static int valid_ymd(long y, long m, long d)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || m < 1 || m > 12 || d < 1)
        return 0;
    long dim = days[m - 1];
    if (m == 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        dim = 29;
    return d <= dim;
}

static long floor_div(long a, long b)
{
    long q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static long floor_mod(long a, long b)
{
    return a - floor_div(a, b) * b;
}

static long days_from_civil(long y, long m, long d)
{
    if (m <= 2)
        y = y - 1;
    long era = floor_div(y >= 0 ? y : y - 399, 400);
    long yoe = y - era * 400;
    long mp = floor_mod(m + 9, 12);
    long doy = floor_div(153 * mp + 2, 5) + d - 1;
    long doe = yoe * 365 + floor_div(yoe, 4) - floor_div(yoe, 100) + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(long z, long *py, long *pm, long *pd)
{
    z = z + 719468;
    long era = floor_div(z >= 0 ? z : z - 146096, 146097);
    long doe = z - era * 146097;
    long yoe =
        floor_div(doe - floor_div(doe, 1460) + floor_div(doe, 36524) - floor_div(doe, 146096), 365);
    long y = yoe + era * 400;
    long doy = doe - (365 * yoe + floor_div(yoe, 4) - floor_div(yoe, 100));
    long mp = floor_div(5 * doy + 2, 153);
    long d = doy - floor_div(153 * mp + 2, 5) + 1;
    long m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y = y + 1;
    *py = y, *pm = m, *pd = d;
}

struct iso {
    long y, m, d, secs, offset;
    int has_time, has_offset;
    const char *frac;
    size_t flen;
};

static int parse_iso(const char *s, size_t n, struct iso *o)
{
    memset(o, 0, sizeof *o);
    if (n < 10 || !isd(s[0]) || !isd(s[1]) || !isd(s[2]) || !isd(s[3]) || s[4] != '-' ||
        !isd(s[5]) || !isd(s[6]) || s[7] != '-' || !isd(s[8]) || !isd(s[9]))
        return 0;
    o->y = d2(s) * 100 + d2(s + 2), o->m = d2(s + 5), o->d = d2(s + 8);
    if (!valid_ymd(o->y, o->m, o->d))
        return 0;
    const char *r = s + 10;
    size_t rn = n - 10, zoff;
    if (rn == 0)
        return 1;
    if (r[0] != 'T' && r[0] != 't' && r[0] != ' ')
        return 0;
    long hh, mi, ss;
    if (rn >= 9 && isd(r[1]) && isd(r[2]) && r[3] == ':' && isd(r[4]) && isd(r[5]) && r[6] == ':' &&
        isd(r[7]) && isd(r[8])) {
        hh = d2(r + 1), mi = d2(r + 4), ss = d2(r + 7);
        size_t p = 9;
        if (p < rn && r[p] == '.')
            p++;
        while (p < rn && isd(r[p]))
            p++;
        o->frac = r + 9, o->flen = p - 9;
        zoff = p;
    } else if (rn >= 6 && isd(r[1]) && isd(r[2]) && r[3] == ':' && isd(r[4]) && isd(r[5])) {
        hh = d2(r + 1), mi = d2(r + 4), ss = 0;
        o->frac = "", o->flen = 0;
        zoff = 6;
    } else {
        return 0;
    }
    if (hh > 23 || mi > 59 || ss > 59 || (o->flen == 1 && o->frac[0] == '.'))
        return 0;
    if (o->flen > 7)
        o->flen = 7;
    const char *z = r + zoff;
    size_t zn = rn - zoff;
    if (zn == 1 && (z[0] == 'Z' || z[0] == 'z')) {
        o->has_offset = 1;
    } else if (zn > 0) {
        long zh, zm;
        if (z[0] != '+' && z[0] != '-')
            return 0;
        if (zn == 6 && isd(z[1]) && isd(z[2]) && z[3] == ':' && isd(z[4]) && isd(z[5]))
            zh = d2(z + 1), zm = d2(z + 4);
        else if (zn == 5 && isd(z[1]) && isd(z[2]) && isd(z[3]) && isd(z[4]))
            zh = d2(z + 1), zm = d2(z + 3);
        else if (zn == 3 && isd(z[1]) && isd(z[2]))
            zh = d2(z + 1), zm = 0;
        else
            return 0;
        if (zh > 14 || zm > 59)
            return 0;
        o->has_offset = 1;
        o->offset = (zh * 60 + zm) * (z[0] == '-' ? -1 : 1);
    }
    o->has_time = 1;
    o->secs = hh * 3600 + mi * 60 + ss;
    return 1;
}

static const char DATE_MSG[] = "must be an ISO-8601 date (YYYY-MM-DD)";
static const char DATETIME_MSG[] = "must be an ISO-8601 date or date-time";

/* Cleans s into out (at least 64 bytes): its length, or -1 with *msg. */
static int format_date(const char *s, size_t n, char *out, const char **msg)
{
    struct iso o;
    int ok = parse_iso(s, n, &o);
    if (ok && n == 10) { /* YYYY-MM-DD: already clean */
        memcpy(out, s, n);
        return (int)n;
    }
    if (!ok) {
        *msg = DATE_MSG;
        return -1;
    }
    return snprintf(out, 64, "%04ld-%02ld-%02ld", o.y, o.m, o.d);
}

/* YYYY-MM-DDTHH:MM:SS.mmmZ: the form the datetime format cleans to (and what the extension
** sends), which parse_iso would give back unchanged. */
static int canonical_datetime(const char *s, size_t n)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (n != 24)
        return 0;
    for (size_t i = 0; i < 24; i++)
        if (shape[i] == 'd' ? !isd(s[i]) : s[i] != shape[i])
            return 0;
    return 1;
}

static int format_datetime(const char *s, size_t n, char *out, const char **msg)
{
    struct iso o;
    if (canonical_datetime(s, n) && parse_iso(s, n, &o)) {
        memcpy(out, s, n);
        return (int)n;
    }
    if (!parse_iso(s, n, &o)) {
        *msg = DATETIME_MSG;
        return -1;
    }
    long y = o.y, mo = o.m, d = o.d, secs = o.secs;
    if (o.has_offset && o.offset != 0) {
        secs = secs - o.offset * 60;
        long days = days_from_civil(y, mo, d) + floor_div(secs, 86400);
        secs = floor_mod(secs, 86400);
        civil_from_days(days, &y, &mo, &d);
        if (y < 1 || y > 9999) {
            *msg = DATETIME_MSG;
            return -1;
        }
    }
    char frac[16];
    if (o.flen < 4) {
        /* "." .. sub(sub(frac, 2) .. "000", 1, 3) */
        char tail[8] = "";
        if (o.flen > 1)
            memcpy(tail, o.frac + 1, o.flen - 1);
        strcat(tail, "000");
        snprintf(frac, sizeof frac, ".%.3s", tail);
    } else {
        snprintf(frac, sizeof frac, "%.*s", (int)o.flen, o.frac);
    }
    return snprintf(out, 64, "%04ld-%02ld-%02ldT%02ld:%02ld:%02ld%sZ", y, mo, d, secs / 3600,
                    secs % 3600 / 60, secs % 60, frac);
}

/* ^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\0-\32\127][^\0-\32\127]*$ */
static int http_url_ok(const char *s, size_t n)
{
    size_t p = 4;
    if (n < 4 || (s[0] | 32) != 'h' || (s[1] | 32) != 't' || (s[2] | 32) != 't' ||
        (s[3] | 32) != 'p')
        return 0;
    if (p < n && (s[p] | 32) == 's')
        p++;
    if (n - p < 4 || memcmp(s + p, "://", 3))
        return 0;
    p += 3;
    unsigned char c = (unsigned char)s[p];
    if (c == '/' || c == '?' || c == '#')
        return 0;
    for (; p < n; p++) {
        c = (unsigned char)s[p];
        if (c <= 32 || c == 127)
            return 0;
    }
    return 1;
}

static int is_hex(char c)
{
    return isd(c) || ((c | 32) >= 'a' && (c | 32) <= 'f');
}

static int uuid_ok(const char *s, size_t n)
{
    if (n != 36)
        return 0;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23 ? s[i] != '-' : !is_hex(s[i]))
            return 0;
    }
    return 1;
}

/* ---- the checks: each returns 1 (valid: *out, V_ABSENT for nil) or 0 (refused, problem
** added under field / index) ---- */

static int run_rule(struct bulk *b, const struct rule *r, const struct val *raw, const char *field,
                    long index, struct val *out);

static void push_val(struct bulk *b, const struct val *v, int kept_idx);

static int check_string(struct bulk *b, const struct rule *r, const struct val *raw,
                        const char *field, long index, struct val *out)
{
    if (raw->t != V_STR) {
        add_err(b, field, index, "must be a string");
        return 0;
    }
    *out = *raw;
    const char *p = str_of(b, raw);
    size_t n = raw->len;
    int tc = text_check((const unsigned char *)p, n);
    if (tc != TEXT_OK) {
        add_err(b, field, index,
                tc == TEXT_NUL ? "must not contain NUL characters" : "must be valid UTF-8");
        return 0;
    }
    if (r->trim && n > 0 && ((unsigned char)p[0] <= 32 || (unsigned char)p[n - 1] <= 32)) {
        size_t off = 0;
        trim(p, &off, &n);
        out->off += off;
        out->len = n;
        p += off;
    }
    if (n == 0 && !r->keep_empty) {
        if (r->required) {
            add_err(b, field, index, "must not be empty");
            return 0;
        }
        out->t = V_ABSENT;
        return 1;
    }
    if (r->null_if.t == K_STR && r->null_if.len == n && !memcmp(r->null_if.s, p, n)) {
        out->t = V_NULL;
        return 1;
    }
    if (r->fold) {
        size_t i = 0;
        for (; i < n; i++)
            if (r->fold == 1 ? (p[i] >= 'a' && p[i] <= 'z') : (p[i] >= 'A' && p[i] <= 'Z'))
                break;
        if (i < n) {
            set_new_str(b, out, p, n);
            char *q = b->arena.p + out->off;
            for (; i < n; i++)
                if (r->fold == 1 ? (q[i] >= 'a' && q[i] <= 'z') : (q[i] >= 'A' && q[i] <= 'Z'))
                    q[i] ^= 32;
            p = q;
        }
    }
    struct num nb = num_int((lua_Integer)n);
    if ((r->has_len && !num_eq(nb, r->len)) || (r->has_min_len && num_lt(nb, r->min_len)) ||
        (r->has_max_len && num_lt(r->max_len, nb))) {
        struct num nc = num_int((lua_Integer)utf8_count((const unsigned char *)p, n));
        const char *m = NULL;
        if (r->has_len && !num_eq(nc, r->len))
            m = r->len_msg;
        else if (r->has_min_len && num_lt(nc, r->min_len))
            m = r->min_len_msg;
        else if (r->has_max_len && num_lt(r->max_len, nc))
            m = r->max_len_msg;
        if (m) {
            add_err(b, field, index, r->message ? r->message : m);
            return 0;
        }
    }
    if (r->n_enum) {
        int i = 0;
        for (; i < r->n_enum; i++)
            if (r->enum_lens[i] == n && !memcmp(r->enums[i], p, n))
                break;
        if (i == r->n_enum) {
            add_err(b, field, index, r->message ? r->message : r->enum_msg);
            return 0;
        }
    }
    if (r->format == FMT_URL && !http_url_ok(p, n)) {
        add_err(b, field, index, r->message ? r->message : "must be an http(s) URL");
        return 0;
    } else if (r->format == FMT_UUID) {
        if (!uuid_ok(p, n)) {
            add_err(b, field, index, r->message ? r->message : "must be a UUID");
            return 0;
        }
        size_t i = 0;
        while (i < n && !(p[i] >= 'A' && p[i] <= 'Z'))
            i++;
        if (i < n) {
            set_new_str(b, out, p, n);
            char *q = b->arena.p + out->off;
            for (; i < n; i++)
                if (q[i] >= 'A' && q[i] <= 'Z')
                    q[i] ^= 32;
        }
    } else if (r->format == FMT_DATE || r->format == FMT_DATETIME) {
        char tmp[64];
        const char *msg = NULL;
        int m =
            r->format == FMT_DATE ? format_date(p, n, tmp, &msg) : format_datetime(p, n, tmp, &msg);
        if (m < 0) {
            add_err(b, field, index, r->message ? r->message : msg);
            return 0;
        }
        if ((size_t)m != n || memcmp(tmp, p, n))
            set_new_str(b, out, tmp, (size_t)m);
    }
    return 1;
}

/* Lua's tonumber(trim(s)) for a coerced string: 1 with *n, or 0. */
static int coerce_num(struct bulk *b, const struct val *raw, struct num *n)
{
    const char *p = str_of(b, raw);
    size_t off = 0, len = raw->len;
    trim(p, &off, &len);
    if (memchr(p + off, 0, len))
        return 0;
    char small[64], *s = len < sizeof small ? small : malloc(len + 1);
    if (!s)
        luaL_error(b->L, "bulk: out of memory");
    memcpy(s, p + off, len);
    s[len] = 0;
    size_t used = lua_stringtonumber(b->L, s);
    if (s != small)
        free(s);
    if (used != len + 1) {
        if (used)
            lua_pop(b->L, 1);
        return 0;
    }
    *n = lua_isinteger(b->L, -1) ? num_int(lua_tointeger(b->L, -1))
                                 : num_flt(lua_tonumber(b->L, -1));
    lua_pop(b->L, 1);
    return 1;
}

static int check_number(struct bulk *b, const struct rule *r, const struct val *raw,
                        const char *field, long index, struct val *out)
{
    int integer = r->kind == R_INTEGER;
    struct num v;
    if (raw->t == V_FLT) {
        v = num_flt(raw->u.d);
    } else if (!(r->coerce && raw->t == V_STR && coerce_num(b, raw, &v))) {
        add_err(b, field, index, integer ? "must be a whole number" : "must be a number");
        return 0;
    }
    if (!v.is_int && (isnan(v.d) || isinf(v.d))) {
        add_err(b, field, index, "must be a finite number");
        return 0;
    }
    if (integer && !v.is_int && floor(v.d) != v.d) {
        if (!r->round) {
            add_err(b, field, index, "must be a whole number");
            return 0;
        }
        double f = floor(v.d + 0.5);
        lua_Integer i;
        v = flt_to_int(f, &i) ? num_int(i) : num_flt(f);
    }
    memset(out, 0, sizeof *out);
    if (r->null_if.t == K_NUM && num_eq(v, r->null_if.n)) {
        out->t = V_NULL;
        return 1;
    }
    if ((r->has_min && num_lt(v, r->min)) || (r->has_max && num_lt(r->max, v))) {
        add_err(b, field, index, r->range_msg);
        return 0;
    }
    if (integer) {
        if (num_lt(v, num_int(-MAX_INT)) || num_lt(num_int(MAX_INT), v)) {
            add_err(b, field, index, "must be a whole number of at most 2^53");
            return 0;
        }
        if (!v.is_int)
            v = num_int((lua_Integer)v.d);
    }
    if (v.is_int)
        out->t = V_INT, out->u.i = v.i;
    else
        out->t = V_FLT, out->u.d = v.d;
    return 1;
}

static int same_str(const struct bulk *b, const struct val *x, const struct val *y)
{
    return x->t == V_STR && y->t == V_STR && x->len == y->len &&
           !memcmp(str_of(b, x), str_of(b, y), x->len);
}

static int check_array(struct bulk *b, const struct rule *r, const struct val *raw,
                       const char *field, struct val *out)
{
    memset(out, 0, sizeof *out);
    if (raw->t != V_ARR && !(raw->t == V_TABLE && !raw->nonempty)) {
        add_err(b, field, 0, "must be an array");
        return 0;
    }
    uint32_t n = raw->t == V_ARR ? raw->n : 0;
    if (r->has_max_items && num_lt(r->max_items, num_int(n))) {
        add_err(b, field, 0, r->max_items_msg);
        return 0;
    }
    out->t = V_ARR;
    out->off = b->elems.n;
    if (n == 0) {
        if (r->has_min_items && num_lt(num_int(0), r->min_items)) {
            add_err(b, field, 0, r->min_items_msg);
            return 0;
        }
        out->mt = 1;
        return 1;
    }
    int ok = 1, changed = 0;
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct val *e = &b->relems.v[raw->off + i];
        struct val c;
        memset(&c, 0, sizeof c);
        if (e->t == V_NULL) {
            if (!r->compact) {
                add_err(b, field, (long)i + 1, "must not be null");
                ok = 0;
            }
        } else if (!run_rule(b, r->items, e, field, (long)i + 1, &c)) {
            if (b->check_failed)
                return 0;
            ok = 0;
            c.t = V_ABSENT;
        } else if (c.t == V_ABSENT && !r->compact) {
            add_err(b, field, (long)i + 1, "must not be empty");
            ok = 0;
        }
        if (c.t != V_ABSENT && r->unique) {
            for (uint32_t k = 0; k < m; k++)
                if (same_str(b, &b->elems.v[out->off + k], &c)) {
                    c.t = V_ABSENT;
                    break;
                }
        }
        if (!same_str(b, &c, e))
            changed = 1;
        if (c.t != V_ABSENT) {
            *vec_add(b->L, &b->elems) = c;
            m++;
        }
    }
    if (!ok) {
        b->elems.n = out->off;
        return 0;
    }
    if (changed && r->has_min_items && num_lt(num_int(m), r->min_items)) {
        b->elems.n = out->off;
        add_err(b, field, 0, r->min_items_msg);
        return 0;
    }
    out->n = m;
    out->mt = (unsigned char)changed;
    return 1;
}

/* The rule's `check` (a Lua function) on a cleaned value: validate.lua's with_check. */
static int call_check(struct bulk *b, const struct rule *r, const char *field, long index,
                      struct val *out)
{
    lua_State *L = b->L;
    lua_rawgeti(L, S_CHECKS, r->check);
    push_val(b, out, 0);
    if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
        b->check_failed = 1;
        lua_replace(L, S_ERROR); /* decode() raises it once yajl is out of the way */
        return 0;
    }
    int t = lua_type(L, -2);
    if (t == LUA_TNIL) {
        if (r->message) {
            lua_pop(L, 2);
            add_err(b, field, index, r->message);
        } else if (lua_isnil(L, -1)) {
            lua_pop(L, 2);
            add_err(b, field, index, "is not valid");
        } else {
            lua_remove(L, -2);
            add_err(b, field, index, NULL);
        }
        return 0;
    }
    if (t == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -2, &n);
        if (!(out->t == V_STR && out->len == n && !memcmp(str_of(b, out), s, n))) {
            memset(out, 0, sizeof *out);
            set_new_str(b, out, s, n);
        }
    } else if (t == LUA_TNUMBER) {
        memset(out, 0, sizeof *out);
        if (lua_isinteger(L, -2))
            out->t = V_INT, out->u.i = lua_tointeger(L, -2);
        else
            out->t = V_FLT, out->u.d = lua_tonumber(L, -2);
    } else if (t == LUA_TBOOLEAN) {
        memset(out, 0, sizeof *out);
        out->t = V_BOOL, out->u.b = lua_toboolean(L, -2);
    } else if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -2) == NULL) {
        memset(out, 0, sizeof *out);
        out->t = V_NULL;
    } else {
        memset(out, 0, sizeof *out);
        out->t = V_REF;
        out->u.ref = ++b->nextras;
        lua_pushvalue(L, -2);
        lua_rawseti(L, S_EXTRAS, out->u.ref);
    }
    lua_pop(L, 2);
    return 1;
}

/* One present value (not nil, not JSON null) against its rule. */
static int run_rule(struct bulk *b, const struct rule *r, const struct val *raw, const char *field,
                    long index, struct val *out)
{
    int ok;
    switch (r->kind) {
    case R_STRING:
        ok = check_string(b, r, raw, field, index, out);
        break;
    case R_INTEGER:
    case R_NUMBER:
        ok = check_number(b, r, raw, field, index, out);
        break;
    case R_BOOLEAN:
        memset(out, 0, sizeof *out);
        if (raw->t != V_BOOL) {
            add_err(b, field, index, "must be true or false");
            return 0;
        }
        if (r->null_if.t == K_BOOL && !r->null_if.b == !raw->u.b)
            out->t = V_NULL;
        else
            out->t = V_BOOL, out->u.b = raw->u.b;
        ok = 1;
        break;
    default:
        return check_array(b, r, raw, field, out);
    }
    if (ok && r->check && out->t != V_ABSENT && out->t != V_NULL)
        ok = call_check(b, r, field, index, out);
    if (ok && out->t == V_STR)
        keep_str(b, out);
    return ok;
}

/* Pushes a cleaned value as validate.lua would hold it (extras: the V_REF table's index). */
static void push_val(struct bulk *b, const struct val *v, int extras)
{
    lua_State *L = b->L;
    switch (v->t) {
    case V_NULL:
        lua_pushlightuserdata(L, NULL); /* cjson.null */
        break;
    case V_STR:
        lua_pushlstring(L, str_of(b, v), v->len);
        break;
    case V_INT:
        lua_pushinteger(L, v->u.i);
        break;
    case V_FLT:
        lua_pushnumber(L, v->u.d);
        break;
    case V_BOOL:
        lua_pushboolean(L, v->u.b);
        break;
    case V_ARR:
        lua_createtable(L, (int)v->n, 0);
        for (uint32_t i = 0; i < v->n; i++) {
            push_val(b, &b->elems.v[v->off + i], extras);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        if (v->mt) {
            luaL_getmetatable(L, VM_ARRAY_MT);
            lua_setmetatable(L, -2);
        }
        break;
    case V_REF:
        lua_rawgeti(L, extras, v->u.ref);
        break;
    default:
        lua_pushnil(L);
    }
}

static void konst_val(struct bulk *b, const struct konst *k, struct val *out)
{
    memset(out, 0, sizeof *out);
    if (k->t == K_STR)
        set_new_str(b, out, k->s, k->len);
    else if (k->t == K_NUM && k->n.is_int)
        out->t = V_INT, out->u.i = k->n.i;
    else if (k->t == K_NUM)
        out->t = V_FLT, out->u.d = k->n.d;
    else if (k->t == K_BOOL)
        out->t = V_BOOL, out->u.b = k->b;
}

static int is_blank(const struct bulk *b, const struct val *v)
{
    const struct spec *s = b->spec;
    if (v->t != V_STR)
        return v->t == V_ABSENT || v->t == V_NULL;
    const char *p = str_of(b, v);
    for (int i = 0; i < s->nblank; i++)
        if (s->blank_lens[i] == v->len && !memcmp(s->blank[i], p, v->len))
            return 1;
    return 0;
}

static lua_Integer present_mask(const struct bulk *b, const struct val *row)
{
    const struct spec *s = b->spec;
    lua_Integer mask = 0;
    for (int j = 0; j < s->nbits; j++) {
        const struct val *v = &row[s->bit_field[j]];
        int present = !is_blank(b, v);
        if (v->t == V_ARR) {
            present = 0;
            for (uint32_t i = 0; i < v->n && !present; i++)
                present = !is_blank(b, &b->elems.v[v->off + i]);
        }
        if (present)
            mask |= (lua_Integer)1 << j;
    }
    return mask;
}

enum elem { E_OBJECT, E_NULL, E_NOT_OBJECT };

/* A refused element's opts.sent field as it was sent (a scalar), for the caller's warning. */
static void keep_sent(struct bulk *b, const struct val *raw, size_t i)
{
    lua_State *L = b->L;
    if (raw->t == V_STR)
        lua_pushlstring(L, str_of(b, raw), raw->len);
    else if (raw->t == V_FLT)
        lua_pushnumber(L, raw->u.d);
    else if (raw->t == V_BOOL)
        lua_pushboolean(L, raw->u.b);
    else if (raw->t == V_NULL)
        lua_pushlightuserdata(L, NULL);
    else
        return;
    lua_rawseti(L, S_SENT, (lua_Integer)i);
}

static void begin_element(struct bulk *b)
{
    memset(b->raw, 0, (size_t)b->spec->nfields * sizeof *b->raw);
    b->relems.n = 0;
    b->scratch.n = 0;
}

/* Validates element b->count (its raw fields read), as validate.lua's object checker. */
static int finish_element(struct bulk *b, int kind)
{
    const struct spec *s = b->spec;
    lua_State *L = b->L;
    size_t i = (size_t)b->count, nf = (size_t)s->nfields;
    b->rows = grow(L, b->rows, &b->rows_cap, i, nf * sizeof *b->rows);
    b->present = grow(L, b->present, &b->present_cap, i, sizeof *b->present);
    b->refused = grow(L, b->refused, &b->refused_cap, i, 1);
    struct val *row = &b->rows[(i - 1) * nf];
    memset(row, 0, nf * sizeof *row);
    size_t elems_mark = b->elems.n, arena_mark = b->arena.n;
    int ok = 1;
    b->has_errs = 0;
    if (kind == E_NULL) {
        ok = 0; /* validate.lua's run(): nil (or "is required"), no object */
        if (s->required)
            add_err(b, NULL, 0, "is required");
    } else if (kind == E_NOT_OBJECT) {
        ok = 0;
        add_err(b, NULL, 0, "must be an object");
    }
    for (size_t f = 0; kind == E_OBJECT && f < nf; f++) {
        const struct field *fd = &s->fields[f];
        const struct rule *r = &fd->r;
        const struct val *raw = &b->raw[f];
        struct val c;
        memset(&c, 0, sizeof c);
        if (raw->t == V_ABSENT || raw->t == V_NULL) {
            if (r->required) {
                add_err(b, fd->name, 0, "is required");
                ok = 0;
            } else {
                konst_val(b, &r->def, &c);
            }
        } else if (!run_rule(b, r, raw, fd->name, 0, &c)) {
            if (b->check_failed)
                return 0;
            if (r->required || !r->drop)
                ok = 0;
            konst_val(b, &r->def, &c);
        } else if (c.t == V_ABSENT) {
            konst_val(b, &r->def, &c);
            if (c.t == V_ABSENT && r->required) {
                add_err(b, fd->name, 0, "is required");
                ok = 0;
            }
        } else if (s->in_place && raw->t == V_FLT && (c.t == V_INT || c.t == V_FLT) &&
                   num_eq(c.t == V_INT ? num_int(c.u.i) : num_flt(c.u.d), num_flt(raw->u.d))) {
            c = *raw; /* in place, an equal value is not written: cjson's float stays */
        }
        row[f] = c;
    }
    b->refused[i - 1] = (unsigned char)!ok;
    if (!ok) {
        memset(row, 0, nf * sizeof *row);
        b->elems.n = elems_mark;
        b->arena.n = arena_mark;
        if (!b->has_errs)
            lua_newtable(L);
        lua_rawseti(L, S_REFUSED, (lua_Integer)i);
        if (kind == E_OBJECT && s->sent >= 0)
            keep_sent(b, &b->raw[s->sent], i);
    } else {
        b->present[i - 1] = present_mask(b, row);
        if (b->has_errs)
            lua_rawseti(L, S_DROPPED, (lua_Integer)i);
    }
    b->has_errs = 0;
    return 1;
}

/* ---- the parser: yajl events routed by the frame they arrive in ---- */

static void reset_results(struct bulk *b)
{
    lua_State *L = b->L;
    b->count = 0;
    b->elems.n = 0;
    b->arena.n = 0;
    b->nextras = 0;
    lua_newtable(L);
    lua_replace(L, S_REFUSED);
    lua_newtable(L);
    lua_replace(L, S_DROPPED);
    lua_newtable(L);
    lua_replace(L, S_EXTRAS);
    lua_newtable(L);
    lua_replace(L, S_SENT);
}

enum vk { VK_SCALAR, VK_MAP, VK_ARRAY };

static int push_frame(struct bulk *b, int frame, int field)
{
    if (b->depth >= MAX_DEPTH) {
        b->too_deep = 1;
        return 0;
    }
    b->frame_field[b->depth] = field;
    b->frames[b->depth++] = (unsigned char)frame;
    return 1;
}

static int top_frame(const struct bulk *b)
{
    return b->depth ? b->frames[b->depth - 1] : -1;
}

/* Whether a scalar arriving now is kept (so its bytes must be read). */
static int wanted(const struct bulk *b)
{
    int top = top_frame(b);
    return (top == F_ELEM_OBJ && b->pending_field >= 0) || top == F_FIELD_ARR ||
           (top == F_ROOT_OBJ && b->pending_titles) || top == F_TITLES || top == -1;
}

static void root_done(struct bulk *b)
{
    b->root_end = b->completing ? b->text_len : yajl_get_bytes_consumed(b->h);
}

static int on_value(struct bulk *b, int vk, const struct val *sv)
{
    int top = top_frame(b), push = F_SKIP, field = -1;
    switch (top) {
    case -1:
        if (vk == VK_SCALAR)
            root_done(b);
        b->root = vk == VK_MAP ? ROOT_OBJECT : vk == VK_ARRAY ? ROOT_EMPTY_ARRAY : ROOT_OTHER;
        push = vk == VK_MAP ? F_ROOT_OBJ : F_ROOT_ARR;
        break;
    case F_ROOT_ARR:
        b->root = ROOT_OTHER;
        break;
    case F_ROOT_OBJ:
        if (!b->pending_titles)
            break;
        b->pending_titles = 0;
        reset_results(b);
        if (vk == VK_ARRAY)
            b->titles = T_ARRAY, push = F_TITLES;
        else if (vk == VK_MAP)
            b->titles = T_EMPTY_OBJ, push = F_TITLES_OBJ;
        else
            b->titles = sv->t == V_NULL ? T_ABSENT : T_NOT_ARRAY;
        break;
    case F_TITLES:
        b->count++;
        if (b->max_items >= 0 && b->count > b->max_items)
            break;
        if (vk == VK_SCALAR)
            return finish_element(b, sv->t == V_NULL ? E_NULL : E_NOT_OBJECT);
        begin_element(b);
        push = vk == VK_MAP ? F_ELEM_OBJ : F_ELEM_ARR;
        b->elem_nonempty = 0;
        break;
    case F_ELEM_ARR:
        b->elem_nonempty = 1;
        break;
    case F_ELEM_OBJ: {
        int f = b->pending_field;
        b->pending_field = -1;
        if (f < 0)
            break;
        struct val *raw = &b->raw[f];
        memset(raw, 0, sizeof *raw);
        if (vk == VK_SCALAR) {
            *raw = *sv;
        } else if (vk == VK_MAP) {
            raw->t = V_TABLE;
            push = F_FIELD_OBJ, field = f;
        } else if (b->spec->fields[f].r.kind == R_ARRAY) {
            raw->t = V_ARR;
            raw->off = b->relems.n;
            push = F_FIELD_ARR, field = f;
        } else {
            raw->t = V_TABLE, raw->nonempty = 1;
        }
        break;
    }
    case F_FIELD_ARR: {
        int f = b->frame_field[b->depth - 1];
        if (b->raw[f].n++ >= b->spec->fields[f].r.keep_items)
            break; /* refused for its length before any element is read */
        struct val *e = vec_add(b->L, &b->relems);
        if (vk == VK_SCALAR)
            *e = *sv;
        else
            e->t = V_TABLE;
        break;
    }
    default:
        break;
    }
    return vk == VK_SCALAR ? 1 : push_frame(b, push, field);
}

static int cb_null(void *ctx)
{
    struct val v = {.t = V_NULL};
    return on_value(ctx, VK_SCALAR, &v);
}

static int cb_boolean(void *ctx, int boolean)
{
    struct val v = {.t = V_BOOL, .u.b = boolean};
    return on_value(ctx, VK_SCALAR, &v);
}

static int cb_number(void *ctx, const char *s, size_t n)
{
    struct bulk *b = ctx;
    struct val v = {.t = V_FLT};
    size_t neg = n > 0 && s[0] == '-', i = neg;
    uint64_t whole = 0;
    while (i < n && i - neg < 16 && isd(s[i]))
        whole = whole * 10 + (uint64_t)(s[i++] - '0');
    if (i == n && n > neg) {
        /* up to 16 digits: converted exactly rounded, as strtod does (-0 included) */
        v.u.d = neg ? -(double)whole : (double)whole;
    } else if (wanted(b)) {
        /* lua-cjson reads a number with strtod: so do we, on a terminated copy */
        char small[64], *p = n < sizeof small ? small : malloc(n + 1);
        if (!p)
            return luaL_error(b->L, "bulk: out of memory");
        memcpy(p, s, n);
        p[n] = 0;
        v.u.d = strtod(p, NULL);
        if (p != small)
            free(p);
    }
    return on_value(b, VK_SCALAR, &v);
}

static int cb_string(void *ctx, const unsigned char *s, size_t n)
{
    struct bulk *b = ctx;
    struct val v = {.t = V_STR, .len = n};
    const char *p = (const char *)s;
    if (p >= b->text && p + n <= b->text + b->text_len) {
        v.where = IN_TEXT;
        v.off = (size_t)(p - b->text);
    } else if (wanted(b)) {
        v.where = IN_SCRATCH; /* unescaped by yajl into its own buffer */
        v.off = buf_add(b->L, &b->scratch, p, n);
    }
    return on_value(b, VK_SCALAR, &v);
}

static int cb_start_map(void *ctx)
{
    return on_value(ctx, VK_MAP, NULL);
}
static int cb_start_array(void *ctx)
{
    return on_value(ctx, VK_ARRAY, NULL);
}

static int cb_map_key(void *ctx, const unsigned char *s, size_t n)
{
    struct bulk *b = ctx;
    switch (top_frame(b)) {
    case F_ROOT_OBJ:
        b->pending_titles = n == b->key_len && !memcmp(s, b->key, n);
        break;
    case F_TITLES_OBJ:
        b->titles = T_NOT_ARRAY;
        break;
    case F_ELEM_OBJ:
        b->pending_field = field_index(b->spec, (const char *)s, n);
        break;
    case F_FIELD_OBJ:
        b->raw[b->frame_field[b->depth - 1]].nonempty = 1;
        break;
    default:
        break;
    }
    return 1;
}

static int cb_end(void *ctx)
{
    struct bulk *b = ctx;
    int frame = b->frames[--b->depth];
    if (b->depth == 0)
        root_done(b);
    if (frame == F_ELEM_OBJ || (frame == F_ELEM_ARR && !b->elem_nonempty))
        return finish_element(b, E_OBJECT);
    if (frame == F_ELEM_ARR)
        return finish_element(b, E_NOT_OBJECT);
    return 1;
}

static const yajl_callbacks CALLBACKS = {cb_null,   cb_boolean,     NULL,         NULL,
                                         cb_number, cb_string,      cb_start_map, cb_map_key,
                                         cb_end,    cb_start_array, cb_end};

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = isd(c) ? c - '0' : ((c | 32) >= 'a' && (c | 32) <= 'f') ? (c | 32) - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Text yajl reads differently from lua-cjson: \f or \v anywhere (cjson: not whitespace;
** yajl refuses them raw in strings anyway), and a surrogate escape that is not a high one
** followed by a low one (cjson refuses it, yajl makes up a character). */
static const char *text_suspect(const char *s, size_t n)
{
    if (memchr(s, '\f', n) || memchr(s, '\v', n))
        return "\\f or \\v in the text";
    const char *p = s, *end = s + n;
    while ((p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
        if (end - p >= 6 && p[1] == 'u') {
            int cp = hex4(p + 2);
            if (cp >= 0 && (cp & 0xF800) == 0xD800) {
                if ((cp & 0x400) || end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
                    (hex4(p + 8) & 0xFC00) != 0xDC00 || hex4(p + 8) < 0)
                    return "invalid unicode escape code";
                p += 12;
                continue;
            }
            p += 6;
        } else {
            p += 2;
        }
        if (p >= end)
            break;
    }
    return NULL;
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
    if (!(b->raw = calloc((size_t)s->nfields + 1, sizeof *b->raw)))
        return luaL_error(L, "bulk: out of memory");
    const char *suspect = text_suspect(text, len);
    if (suspect)
        return fail(L, b, "json", suspect);
    if (!(b->h = yajl_alloc(&CALLBACKS, NULL, b)))
        return luaL_error(L, "bulk: out of memory");
    yajl_config(b->h, yajl_dont_validate_strings, 1);
    yajl_status st = yajl_parse(b->h, (const unsigned char *)text, len);
    b->completing = 1;
    if (st == yajl_status_ok)
        st = yajl_complete_parse(b->h);
    /* yajl lets an unfinished token after the value pass (2"x): cjson does not */
    while (st == yajl_status_ok && b->root_end < len && strchr(" \t\r\n", text[b->root_end]) &&
           text[b->root_end])
        b->root_end++;
    if (st == yajl_status_ok && b->root_end < len)
        return fail(L, b, "json", "trailing garbage");
    if (b->check_failed) {
        bulk_free(b);
        lua_pushvalue(L, S_ERROR);
        return lua_error(L);
    }
    if (st != yajl_status_ok) {
        if (b->too_deep)
            return fail(L, b, "json", "too many nested data structures");
        unsigned char *e = yajl_get_error(b->h, 0, (const unsigned char *)text, len);
        lua_pushstring(L, e ? (const char *)e : "not valid JSON");
        if (e)
            yajl_free_error(b->h, e);
        const char *m = lua_tostring(L, -1);
        size_t ml = strcspn(m, "\n");
        lua_pushlstring(L, m, ml);
        return fail(L, b, "json", lua_tostring(L, -1));
    }
    yajl_free(b->h);
    b->h = NULL;
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
    free(b->relems.v);
    free(b->scratch.p);
    b->raw = NULL, b->relems.v = NULL, b->scratch.p = NULL;
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
    int f = field_index(b->spec, name, n);
    luaL_argcheck(L, f >= 0, 2, "not a field of the rule");
    lua_getiuservalue(L, 1, 5);
    int extras = lua_gettop(L);
    size_t nf = (size_t)b->spec->nfields;
    lua_createtable(L, (int)b->count, 0);
    for (lua_Integer i = 1; i <= b->count; i++) {
        const struct val *v = &b->rows[(size_t)(i - 1) * nf + (size_t)f];
        if (b->refused[i - 1] || v->t == V_ABSENT)
            continue;
        push_val(b, v, extras);
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
        push_val(b, &row[f], extras);
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
