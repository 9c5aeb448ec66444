/*
** bulk_rules.c: validate.lua rule tables (an object rule and its fields) compiled into the
** struct spec host.bulk runs. A key or value this runner does not implement is a refusal
** with its reason, never skipped: the caller then keeps the Lua path. Messages are built
** here once, by Lua's own `..`, so numbers in them read as validate.lua writes them.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulk_private.h"

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
    free(r->shapes);
    free(r->shape_msg);
    if (r->items) {
        rule_free(r->items);
        free(r->items);
    }
}

/* Compilation: the spec being filled, the table its check functions go to (index uv), the
** reason a rule cannot run here. */
struct compiler {
    lua_State *L;
    struct spec *s;
    int uv;
    int shapes; /* opts.shapes (validate.shapes), or 0 */
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

static void set_range(unsigned char *set, unsigned char lo, unsigned char hi)
{
    for (unsigned k = lo; k <= hi; k++)
        set[k >> 3] |= (unsigned char)(1u << (k & 7));
}

/* A Lua pattern ^X+$ or ^X*$, X a %d or a [set] of characters, ranges and %d, into sh: 1, or
** 0 for any other pattern (the check is then called, as ever). */
static int read_pattern(const char *p, size_t n, struct shape *sh)
{
    if (n < 4 || p[0] != '^' || p[n - 1] != '$' || (p[n - 2] != '+' && p[n - 2] != '*'))
        return 0;
    sh->plus = p[n - 2] == '+';
    const char *q = p + 1, *e = p + n - 2; /* the item */
    if (e - q == 2 && q[0] == '%' && q[1] == 'd') {
        set_range(sh->set, '0', '9');
        return 1;
    }
    if (e - q < 3 || q[0] != '[' || e[-1] != ']')
        return 0;
    q++, e--; /* the set's body: Lua ends it at its first ']', so one inside is not read */
    if (*q == '^' || memchr(q, ']', (size_t)(e - q)))
        return 0;
    while (q < e) {
        if (*q == '%' && e - q >= 2 && q[1] == 'd') {
            set_range(sh->set, '0', '9');
            q += 2;
        } else if (*q == '%' || *q == '[' || *q == ']') {
            return 0;
        } else if (e - q > 2 && q[1] == '-') { /* a range, as Lua's matchbracketclass */
            set_range(sh->set, (unsigned char)q[0], (unsigned char)q[2]);
            q += 3;
        } else {
            set_range(sh->set, (unsigned char)q[0], (unsigned char)q[0]);
            q++;
        }
    }
    return 1;
}

/* One {len =, pattern =} at the top into sh: 1, or 0 when this runner cannot read it. */
static int read_shape(lua_State *L, struct shape *sh)
{
    int t = lua_getfield(L, -1, "len"), ok = t == LUA_TNIL || lua_isinteger(L, -1);
    sh->has_len = t != LUA_TNIL;
    sh->len = ok && sh->has_len ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    size_t n;
    if (lua_getfield(L, -1, "pattern") != LUA_TSTRING)
        ok = 0;
    const char *p = lua_tolstring(L, -1, &n);
    ok = ok && read_pattern(p, n, sh);
    lua_pop(L, 1);
    return ok;
}

/* The check function at the top, when validate.shape_check made it (opts.shapes[fn]) and its
** shapes are ones this runner reads: they go into r, and the check runs here. Otherwise r is
** left as it was: the function is called. */
static void read_shapes(struct compiler *c, struct rule *r)
{
    lua_State *L = c->L;
    int top = lua_gettop(L);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, c->shapes) != LUA_TTABLE)
        goto done;
    int mt = lua_getfield(L, top + 1, "message");
    if ((mt != LUA_TSTRING && mt != LUA_TNIL) || lua_getfield(L, top + 1, "shapes") != LUA_TTABLE)
        goto done;
    int n = (int)lua_rawlen(L, -1);
    struct shape *sh = calloc((size_t)n + 1, sizeof *sh);
    if (!sh)
        luaL_error(L, "bulk: out of memory");
    for (int i = 1; i <= n; i++) {
        int ok = lua_rawgeti(L, top + 3, i) == LUA_TTABLE && read_shape(L, &sh[i - 1]);
        lua_pop(L, 1);
        if (!ok) {
            free(sh);
            goto done;
        }
    }
    r->shapes = sh;
    r->nshapes = n;
    if (mt == LUA_TSTRING) {
        lua_pushvalue(L, top + 2);
        r->shape_msg = dup_top(L);
    }
done:
    lua_settop(L, top);
}

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
        if (c->shapes && !strcmp(type, "string"))
            read_shapes(c, r);
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

int bulk_field_index(const struct spec *s, const char *name, size_t len)
{
    for (int i = 0; i < s->nfields; i++)
        if (s->fields[i].len == len && (!len || s->fields[i].name[0] == name[0]) &&
            !memcmp(s->fields[i].name, name, len))
            return i;
    return -1;
}

int bulk_rules_opts(lua_State *L, struct spec *s, int idx)
{
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
            int fi = bulk_field_index(s, name, len);
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
        if ((s->sent = bulk_field_index(s, name, len)) < 0)
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

int bulk_rules_compile(lua_State *L, struct spec *s, int rule, int opts, int uv, char *why,
                       size_t whylen)
{
    struct compiler c = {L, s, uv, 0, ""};
    int top = lua_gettop(L);
    if (lua_istable(L, opts) && lua_getfield(L, opts, "shapes") != LUA_TNIL) {
        luaL_argcheck(L, lua_istable(L, -1), opts, "opts.shapes must be a table");
        c.shapes = lua_gettop(L);
    }
    int rc = compile_fields(&c, rule);
    lua_settop(L, top);
    if (rc < 0)
        snprintf(why, whylen, "%s", c.why);
    return rc;
}

void bulk_spec_free(struct spec *s)
{
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
}
