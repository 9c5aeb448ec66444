/*
** bulk_check.c: compiled rules run on the values bulk_json.c read, as validate.checker(rule)
** runs them on what lua-cjson decodes: each field of an element against its rule (strings,
** numbers, booleans, arrays of strings, a rule's Lua `check`), then the element against the
** object rule (required fields, defaults, invalid = "drop"). Problems go into the element's
** errs table ({path =, message =}, validate.lua's paths and messages, in its order).
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bulk_private.h"
#include "vm.h"

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
    if (!msg) {
        lua_remove(L, top);
        if (b->errs_idx > top) /* opened above the message: it moved down with the removal */
            b->errs_idx--;
    }
}

/* Keeps a cleaned string: a range of the text stays there, anything else goes to the arena. */
static void keep_str(struct bulk *b, struct val *v)
{
    if (v->where == IN_SCRATCH) {
        v->off = bulk_buf_add(b->L, &b->arena, b->scratch.p + v->off, v->len);
        v->where = IN_ARENA;
    }
}

static void set_new_str(struct bulk *b, struct val *v, const char *p, size_t n)
{
    v->t = V_STR;
    v->off = bulk_buf_add(b->L, &b->arena, p, n);
    v->len = n;
    v->where = IN_ARENA;
}

/* ---- the checks: each returns 1 (valid: *out, V_ABSENT for nil) or 0 (refused, problem
** added under field / index) ---- */

static int run_rule(struct bulk *b, const struct rule *r, const struct val *raw, const char *field,
                    long index, struct val *out);

static int check_string(struct bulk *b, const struct rule *r, const struct val *raw,
                        const char *field, long index, struct val *out)
{
    if (raw->t != V_STR) {
        add_err(b, field, index, "must be a string");
        return 0;
    }
    *out = *raw;
    const char *p = bulk_str_of(b, raw);
    size_t n = raw->len;
    int tc = bulk_text_check((const unsigned char *)p, n);
    if (tc != TEXT_OK) {
        add_err(b, field, index,
                tc == TEXT_NUL ? "must not contain NUL characters" : "must be valid UTF-8");
        return 0;
    }
    if (r->trim && n > 0 && ((unsigned char)p[0] <= 32 || (unsigned char)p[n - 1] <= 32)) {
        size_t off = 0;
        bulk_text_trim(p, &off, &n);
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
        struct num nc = num_int((lua_Integer)bulk_text_utf8_len((const unsigned char *)p, n));
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
    if (r->format == FMT_URL && !bulk_format_http_url(p, n)) {
        add_err(b, field, index, r->message ? r->message : "must be an http(s) URL");
        return 0;
    } else if (r->format == FMT_UUID) {
        if (!bulk_format_uuid(p, n)) {
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
        int m = r->format == FMT_DATE ? bulk_format_date(p, n, tmp, &msg)
                                      : bulk_format_datetime(p, n, tmp, &msg);
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
    const char *p = bulk_str_of(b, raw);
    size_t off = 0, len = raw->len;
    bulk_text_trim(p, &off, &len);
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
           !memcmp(bulk_str_of(b, x), bulk_str_of(b, y), x->len);
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
            *bulk_vec_add(b->L, &b->elems) = c;
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
    bulk_push_val(b, out, 0);
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
        if (!(out->t == V_STR && out->len == n && !memcmp(bulk_str_of(b, out), s, n))) {
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

/* A check validate.shape_check made, run here on the cleaned string as its function runs. */
static int run_shapes(struct bulk *b, const struct rule *r, const char *field, long index,
                      const struct val *out)
{
    const unsigned char *p = (const unsigned char *)bulk_str_of(b, out);
    size_t n = out->len;
    for (int i = 0; i < r->nshapes; i++) {
        const struct shape *sh = &r->shapes[i];
        if ((sh->has_len && sh->len != (lua_Integer)n) || (sh->plus && n == 0))
            continue;
        size_t k = 0;
        while (k < n && (sh->set[p[k] >> 3] >> (p[k] & 7) & 1))
            k++;
        if (k == n)
            return 1;
    }
    add_err(b, field, index,
            r->message     ? r->message
            : r->shape_msg ? r->shape_msg
                           : "is not valid");
    return 0;
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
        ok = r->shapes ? run_shapes(b, r, field, index, out) : call_check(b, r, field, index, out);
    if (ok && out->t == V_STR)
        keep_str(b, out);
    return ok;
}

void bulk_push_val(struct bulk *b, const struct val *v, int extras)
{
    lua_State *L = b->L;
    switch (v->t) {
    case V_NULL:
        lua_pushlightuserdata(L, NULL); /* cjson.null */
        break;
    case V_STR:
        lua_pushlstring(L, bulk_str_of(b, v), v->len);
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
            bulk_push_val(b, &b->elems.v[v->off + i], extras);
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
    const char *p = bulk_str_of(b, v);
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

/* A refused element's opts.sent field as it was sent (a scalar), for the caller's warning. */
static void keep_sent(struct bulk *b, const struct val *raw, size_t i)
{
    lua_State *L = b->L;
    if (raw->t == V_STR)
        lua_pushlstring(L, bulk_str_of(b, raw), raw->len);
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

void bulk_check_begin(struct bulk *b)
{
    memset(b->raw, 0, (size_t)b->spec->nfields * sizeof *b->raw);
    b->relems.n = 0;
    b->scratch.n = 0;
}

int bulk_check_element(struct bulk *b, int kind)
{
    const struct spec *s = b->spec;
    lua_State *L = b->L;
    size_t i = (size_t)b->count, nf = (size_t)s->nfields;
    b->rows = bulk_grow(L, b->rows, &b->rows_cap, i, nf * sizeof *b->rows);
    b->present = bulk_grow(L, b->present, &b->present_cap, i, sizeof *b->present);
    b->refused = bulk_grow(L, b->refused, &b->refused_cap, i, 1);
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
