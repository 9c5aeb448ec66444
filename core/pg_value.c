/*
** pg_value.c: values between PostgreSQL's text forms and Lua, for host.pg.
**
** Results: int2/4/8/oid -> integer; float4/8/numeric -> number; bool ->
** boolean; timestamptz -> "YYYY-MM-DDTHH:MM:SS.sssZ" (UTC, milliseconds, the
** offset applied, so the answer does not depend on the session zone);
** arrays -> tables (elements typed alike) carrying the "shelfsync.array"
** metatable; everything else -> its text. Other types (enums, domains, their
** arrays) are looked up in pg_type once per connection.
**
** Parameters: nil / null -> NULL, boolean -> t/f, integer, float (%.17g),
** string (a NUL byte is refused), array table -> array literal.
*/
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pg_private.h"

/* ---------------------------------------------------------------- types */

static int builtin_type(Oid oid, struct pg_type *t)
{
    t->oid = oid;
    t->elem = V_TEXT;
    t->delim = ',';
    switch (oid) {
    case 16: t->kind = V_BOOL; return 1;
    case 20: case 21: case 23: case 26: t->kind = V_INT; return 1;
    case 700: case 701: case 1700: t->kind = V_FLOAT; return 1;
    case 1184: t->kind = V_TSTZ; return 1;
    case 25: case 1043: case 1042: case 1082: case 114: case 3802: case 2950:
    case 1114: case 19: case 18:
        t->kind = V_TEXT; return 1;
    case 1000: t->kind = V_ARRAY; t->elem = V_BOOL; return 1;
    case 1005: case 1007: case 1016: case 1028: t->kind = V_ARRAY; t->elem = V_INT; return 1;
    case 1021: case 1022: case 1231: t->kind = V_ARRAY; t->elem = V_FLOAT; return 1;
    case 1185: t->kind = V_ARRAY; t->elem = V_TSTZ; return 1;
    case 1009: case 1015: case 1014: case 1182: case 2951: case 199: case 3807:
    case 1115: case 1003:
        t->kind = V_ARRAY; t->elem = V_TEXT; return 1;
    default:
        return 0;
    }
}

/*
** How values of oid read back. Builtins are known; other types (enums,
** domains, their arrays) are looked up in pg_type once per connection, so an
** array of an enum still comes back as a table. A failed lookup reads as text.
*/
void pg_type_resolve(struct pg_conn *c, Oid oid, struct pg_type *t)
{
    static const char *const sql =
        "SELECT t.typcategory = 'A', e.oid, e.typdelim FROM pg_catalog.pg_type t "
        "LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem WHERE t.oid = $1";
    char oidbuf[16];
    const char *vals[1] = {oidbuf};
    struct pg_error e;
    PGresult *res;

    if (builtin_type(oid, t))
        return;
    for (size_t i = 0; i < c->ntypes; i++)
        if (c->types[i].oid == oid) {
            *t = c->types[i];
            return;
        }
    t->oid = oid;
    t->kind = V_TEXT;
    t->elem = V_TEXT;
    t->delim = ',';
    snprintf(oidbuf, sizeof(oidbuf), "%u", (unsigned)oid);
    res = pg_exec(c, sql, 1, vals, EXEC_READ | EXEC_NO_RECONNECT, &e);
    if (res == NULL)
        return;
    if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        struct pg_type et;
        t->kind = V_ARRAY;
        if (builtin_type((Oid)strtoul(PQgetvalue(res, 0, 1), NULL, 10), &et) &&
            et.kind != V_ARRAY)
            t->elem = et.kind;
        t->delim = PQgetvalue(res, 0, 2)[0] ? PQgetvalue(res, 0, 2)[0] : ',';
    }
    PQclear(res);
    if (c->ntypes == c->captypes) {
        size_t cap = c->captypes ? c->captypes * 2 : 16;
        struct pg_type *nt = realloc(c->types, cap * sizeof(*nt));
        if (nt == NULL)
            return;
        c->types = nt;
        c->captypes = cap;
    }
    c->types[c->ntypes++] = *t;
}

/* --------------------------------------------------------- timestamps */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t era;
    unsigned doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int read_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/*
** Converts timestamptz text output (DateStyle ISO: "2024-01-02 03:04:05.678+02")
** to "2024-01-02T01:04:05.678Z". Returns -1 for forms it leaves as text
** (infinity, BC dates).
*/
static int tstz_to_iso(const char *s, char *out, size_t outlen)
{
    const char *p = s;
    int64_t year = 0, secs, days;
    int ndig = 0, mon, day, hh, mi, ss, ms = 0, oh = 0, om = 0, os = 0, sign;
    unsigned m2, d2;

    while (isdigit((unsigned char)*p) && ndig < 9) {
        year = year * 10 + (*p++ - '0');
        ndig++;
    }
    if (ndig < 4 || *p++ != '-' || read_digits(&p, 2, &mon) || *p++ != '-' ||
        read_digits(&p, 2, &day) || *p++ != ' ' || read_digits(&p, 2, &hh) ||
        *p++ != ':' || read_digits(&p, 2, &mi) || *p++ != ':' || read_digits(&p, 2, &ss))
        return -1;
    if (*p == '.') {
        int scale = 100;
        for (p++; isdigit((unsigned char)*p); p++) {
            ms += (*p - '0') * scale;
            scale /= 10;
        }
    }
    if (*p != '+' && *p != '-')
        return -1;
    sign = *p++ == '+' ? 1 : -1;
    if (read_digits(&p, 2, &oh))
        return -1;
    if (*p == ':' && (p++, read_digits(&p, 2, &om)))
        return -1;
    if (*p == ':' && (p++, read_digits(&p, 2, &os)))
        return -1;
    if (*p != '\0' || mon < 1 || mon > 12 || day < 1 || day > 31)
        return -1;
    secs = days_from_civil(year, (unsigned)mon, (unsigned)day) * 86400 + hh * 3600 +
           mi * 60 + ss - sign * (oh * 3600 + om * 60 + os);
    days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    secs -= days * 86400;
    civil_from_days(days, &year, &m2, &d2);
    snprintf(out, outlen, "%04lld-%02u-%02uT%02d:%02d:%02d.%03dZ", (long long)year, m2, d2,
             (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60), ms);
    return 0;
}

/* ------------------------------------------------------- results to Lua */

void pg_push_array_mt(lua_State *L)
{
    if (luaL_getmetatable(L, PG_ARRAY_MT) == LUA_TNIL) {
        lua_pop(L, 1);
        luaL_newmetatable(L, PG_ARRAY_MT);
    }
}

/* Pushes the scalar s (n bytes, NUL-terminated) read as kind. */
static void push_scalar(lua_State *L, const char *s, size_t n, int kind)
{
    char iso[48];
    char *end;

    switch (kind) {
    case V_INT: {
        long long v = strtoll(s, &end, 10);
        if (end == s + n) {
            lua_pushinteger(L, (lua_Integer)v);
            return;
        }
        break;
    }
    case V_FLOAT: {
        double v = strtod(s, &end);
        if (end == s + n) {
            lua_pushnumber(L, (lua_Number)v);
            return;
        }
        break;
    }
    case V_BOOL:
        lua_pushboolean(L, s[0] == 't');
        return;
    case V_TSTZ:
        if (tstz_to_iso(s, iso, sizeof(iso)) == 0) {
            lua_pushstring(L, iso);
            return;
        }
        break;
    default:
        break;
    }
    lua_pushlstring(L, s, n);
}

struct arr_parse {
    const char *p, *end;
    char *scratch;  /* at least as long as the whole literal */
    char delim;
    int elem;
    int mt;         /* stack index of the array metatable */
};

static void skip_ws(struct arr_parse *a)
{
    while (a->p < a->end && isspace((unsigned char)*a->p))
        a->p++;
}

/* Parses one {...} level at a->p into a new table pushed on L. -1 if malformed. */
static int parse_array(lua_State *L, struct arr_parse *a, int level)
{
    lua_Integer n = 0;

    if (level > 8 || a->p >= a->end || *a->p != '{')
        return -1;
    a->p++;
    luaL_checkstack(L, 4, "array nesting");
    lua_newtable(L);
    lua_pushvalue(L, a->mt);
    lua_setmetatable(L, -2);
    skip_ws(a);
    if (a->p < a->end && *a->p == '}') {
        a->p++;
        return 0;
    }
    for (;;) {
        skip_ws(a);
        if (a->p >= a->end)
            return -1;
        if (*a->p == '{') {
            if (parse_array(L, a, level + 1) < 0)
                return -1;
        } else if (*a->p == '"') {
            char *o = a->scratch;
            for (a->p++; a->p < a->end && *a->p != '"'; a->p++) {
                if (*a->p == '\\' && ++a->p >= a->end)
                    return -1;
                *o++ = *a->p;
            }
            if (a->p >= a->end)
                return -1;
            a->p++;
            *o = '\0';
            push_scalar(L, a->scratch, (size_t)(o - a->scratch), a->elem);
        } else {
            const char *s = a->p;
            size_t len;
            while (a->p < a->end && *a->p != a->delim && *a->p != '}')
                a->p++;
            len = (size_t)(a->p - s);
            while (len > 0 && isspace((unsigned char)s[len - 1]))
                len--;
            if (len == 0)
                return -1;
            if (len == 4 && strncasecmp(s, "NULL", 4) == 0) {
                lua_pushlightuserdata(L, NULL);
            } else {
                memcpy(a->scratch, s, len);
                a->scratch[len] = '\0';
                push_scalar(L, a->scratch, len, a->elem);
            }
        }
        lua_rawseti(L, -2, ++n);
        skip_ws(a);
        if (a->p < a->end && *a->p == a->delim) {
            a->p++;
            continue;
        }
        if (a->p < a->end && *a->p == '}') {
            a->p++;
            return 0;
        }
        return -1;
    }
}

/* Pushes an array value's text as a Lua table (or the text if unparsable). */
static void push_array(lua_State *L, const char *s, size_t n, const struct pg_type *t, int mt)
{
    struct arr_parse a;
    int top = lua_gettop(L);

    a.p = s;
    a.end = s + n;
    if (*s == '[') {  /* explicit bounds: "[0:1]={a,b}" */
        const char *eq = memchr(s, '=', n);
        if (eq)
            a.p = eq + 1;
    }
    a.scratch = lua_newuserdatauv(L, n + 1, 0);
    a.delim = t->delim;
    a.elem = t->elem;
    a.mt = mt;
    if (parse_array(L, &a, 0) < 0) {
        lua_settop(L, top);
        lua_pushlstring(L, s, n);
        return;
    }
    lua_remove(L, top + 1);  /* the scratch buffer */
}

void pg_push_value(lua_State *L, const char *s, size_t n, const struct pg_type *t, int mt)
{
    if (t->kind == V_ARRAY)
        push_array(L, s, n, t, mt);
    else
        push_scalar(L, s, n, t->kind);
}

/* A PGresult held by a userdata, so a Lua error while converting cannot leak it. */
static int result_gc(lua_State *L)
{
    PGresult **box = luaL_checkudata(L, 1, PG_RESULT_MT);
    PQclear(*box);
    *box = NULL;
    return 0;
}

PGresult **pg_result_box(lua_State *L, PGresult *res)
{
    PGresult **box = lua_newuserdatauv(L, sizeof(*box), 0);
    *box = res;
    if (luaL_newmetatable(L, PG_RESULT_MT)) {
        lua_pushcfunction(L, result_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return box;
}

void pg_push_rows(lua_State *L, struct pg_conn *c, PGresult *res)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    int base = lua_gettop(L), mt, names, rows;
    struct pg_type *types = lua_newuserdatauv(L, sizeof(*types) * (size_t)(ncols + 1), 0);

    for (int j = 0; j < ncols; j++)
        pg_type_resolve(c, PQftype(res, j), &types[j]);
    luaL_checkstack(L, ncols + 8, "too many result columns");
    pg_push_array_mt(L);
    mt = lua_gettop(L);
    names = mt + 1;
    for (int j = 0; j < ncols; j++)
        lua_pushstring(L, PQfname(res, j));
    lua_createtable(L, nrows, 1);
    rows = lua_gettop(L);
    lua_pushvalue(L, mt);
    lua_setmetatable(L, rows);
    for (int i = 0; i < nrows; i++) {
        lua_createtable(L, 0, ncols);
        for (int j = 0; j < ncols; j++) {
            lua_pushvalue(L, names + j);
            if (PQgetisnull(res, i, j)) {
                lua_pushlightuserdata(L, NULL);
            } else {
                pg_push_value(L, PQgetvalue(res, i, j), (size_t)PQgetlength(res, i, j),
                              &types[j], mt);
            }
            lua_rawset(L, -3);
        }
        lua_rawseti(L, rows, i + 1);
    }
    lua_pushinteger(L, (lua_Integer)strtoll(PQcmdTuples(res), NULL, 10));
    lua_setfield(L, rows, "affected");
    lua_copy(L, rows, base + 1);
    lua_settop(L, base + 1);
}

/* --------------------------------------------------- parameters to text */

/*
** Array literals may be nested inside other quoted text (the batched upsert
** sends each row's array as one element of a text[]), so characters are
** written at a quoting depth: at depth d a backslash becomes 2^d backslashes
** and a double quote (2^d - 1) backslashes and the quote.
**
** A luaL_Buffer's box must stay on top of the stack (and, in Lua 5.4, is a
** to-be-closed slot that must not move), so a table being written cannot sit
** above it while buffer operations run. Arrays being written are parked in
** slots reserved below the buffer instead: slot 0 for a row's cell, slot k for
** the sub-array at nesting level k.
*/
/* Reserves the scratch slots (before luaL_buffinit); returns the first index. */
int pg_sink_reserve(lua_State *L)
{
    luaL_checkstack(L, PG_SINK_SCRATCH + 4, "array parameter");
    for (int i = 0; i < PG_SINK_SCRATCH; i++)
        lua_pushnil(L);
    return lua_gettop(L) - PG_SINK_SCRATCH + 1;
}

static void sink_raw(struct pg_sink *s, const char *p, size_t n)
{
    luaL_addlstring(s->B, p, n);
}

static void sink_backslashes(struct pg_sink *s, int count)
{
    static const char bs[] = "\\\\\\\\\\\\\\\\";
    while (count > 0) {
        int k = count > 8 ? 8 : count;
        sink_raw(s, bs, (size_t)k);
        count -= k;
    }
}

static void sink_text(struct pg_sink *s, const char *p, size_t n, int depth)
{
    size_t i, run = 0;

    if (depth == 0) {
        sink_raw(s, p, n);
        return;
    }
    for (i = 0; i < n; i++) {
        if (p[i] != '"' && p[i] != '\\')
            continue;
        sink_raw(s, p + run, i - run);
        sink_backslashes(s, (1 << depth) - 1);
        sink_raw(s, p + i, 1);
        run = i + 1;
    }
    sink_raw(s, p + run, n - run);
}

static void sink_quote(struct pg_sink *s, int depth)
{
    sink_text(s, "\"", 1, depth);
}

/* Formats a number as PostgreSQL reads it back exactly. */
size_t pg_format_number(lua_State *L, int idx, char *buf, size_t len)
{
    if (lua_isinteger(L, idx))
        return (size_t)snprintf(buf, len, "%lld", (long long)lua_tointeger(L, idx));
    {
        double d = (double)lua_tonumber(L, idx);
        if (isnan(d))
            return (size_t)snprintf(buf, len, "NaN");
        if (isinf(d))
            return (size_t)snprintf(buf, len, "%s", d > 0 ? "Infinity" : "-Infinity");
        return (size_t)snprintf(buf, len, "%.17g", d);
    }
}

/* True when the table at idx is a sequence 1..n (n may be 0) and nothing else. */
static int table_is_array(lua_State *L, int idx, lua_Integer *len)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0;

    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 ||
            lua_tointeger(L, -1) > n) {
            lua_pop(L, 1);
            return 0;
        }
        count++;
    }
    *len = n;
    return count == n;
}

/*
** Writes the Lua array at idx as an array literal at quoting depth `depth`.
** Returns 0, or -1 with a message in e (not an array, NUL byte, bad element).
*/
static int sink_array(lua_State *L, struct pg_sink *s, int idx, int depth, int level,
                      struct pg_error *e)
{
    lua_Integer n;
    char num[64];

    if (level > 6) {
        pg_err_set(e, PG_KIND_QUERY, "54000", "array nested too deeply");
        return -1;
    }
    if (!table_is_array(L, idx, &n)) {
        pg_err_set(e, PG_KIND_QUERY, "22P02",
                "a table parameter must be an array (use null for NULL elements)");
        return -1;
    }
    luaL_checkstack(L, 4, "array parameter");
    sink_raw(s, "{", 1);
    for (lua_Integer i = 1; i <= n; i++) {
        int t, rc = 0;
        const char *str;
        size_t len;

        /* Buffer operations need the buffer's box on top of the stack: write before
        ** pushing the element, and pop every element before writing it. */
        if (i > 1)
            sink_raw(s, ",", 1);
        t = lua_rawgeti(L, idx, i);
        switch (t) {
        case LUA_TLIGHTUSERDATA:
            if (lua_touserdata(L, -1) != NULL)
                goto bad;
            lua_pop(L, 1);
            sink_raw(s, "NULL", 4);
            break;
        case LUA_TBOOLEAN:
            str = lua_toboolean(L, -1) ? "t" : "f";
            lua_pop(L, 1);
            sink_raw(s, str, 1);
            break;
        case LUA_TNUMBER:
            len = pg_format_number(L, -1, num, sizeof(num));
            lua_pop(L, 1);
            sink_raw(s, num, len);
            break;
        case LUA_TSTRING:
            str = lua_tolstring(L, -1, &len);  /* anchored by the table */
            lua_pop(L, 1);
            if (memchr(str, '\0', len)) {
                pg_err_set(e, PG_KIND_QUERY, "22021", "a string contains a NUL byte");
                return -1;
            }
            sink_quote(s, depth);
            sink_text(s, str, len, depth + 1);
            sink_quote(s, depth);
            break;
        case LUA_TTABLE: {
            int sub = s->scratch + level + 1;
            if (level + 1 >= PG_SINK_SCRATCH) {
                lua_pop(L, 1);
                pg_err_set(e, PG_KIND_QUERY, "54000", "array nested too deeply");
                return -1;
            }
            lua_replace(L, sub);  /* parked below the buffer (see PG_SINK_SCRATCH) */
            rc = sink_array(L, s, sub, depth, level + 1, e);
            if (rc < 0)
                return -1;
            break;
        }
        default:
            goto bad;
        }
        continue;
bad:
        lua_pop(L, 1);
        pg_err_set(e, PG_KIND_QUERY, "22P02", "an array element is not a string, number, boolean, null or array");
        return -1;
    }
    sink_raw(s, "}", 1);
    return 0;
}

int pg_sink_array(lua_State *L, struct pg_sink *s, int idx, struct pg_error *e)
{
    return sink_array(L, s, idx, 0, 0, e);
}

int pg_encode_params(lua_State *L, int first, int n, const char **values,
                         struct pg_error *e)
{
    luaL_checkstack(L, n + 4, "too many parameters");
    for (int i = 0; i < n; i++) {
        int idx = first + i;
        char num[64];
        size_t len;
        const char *str;

        switch (lua_type(L, idx)) {
        case LUA_TNIL:
        case LUA_TNONE:
            values[i] = NULL;
            break;
        case LUA_TLIGHTUSERDATA:
            luaL_argcheck(L, lua_touserdata(L, idx) == NULL, idx, "not the null value");
            values[i] = NULL;
            break;
        case LUA_TBOOLEAN:
            values[i] = lua_toboolean(L, idx) ? "t" : "f";
            break;
        case LUA_TNUMBER:
            len = pg_format_number(L, idx, num, sizeof(num));
            values[i] = lua_pushlstring(L, num, len);
            break;
        case LUA_TSTRING:
            str = lua_tolstring(L, idx, &len);
            if (memchr(str, '\0', len)) {
                pg_err_set(e, PG_KIND_QUERY, "22021", "");
                snprintf(e->msg, sizeof(e->msg), "parameter $%d contains a NUL byte", i + 1);
                return -1;
            }
            values[i] = str;
            break;
        case LUA_TTABLE: {
            luaL_Buffer B;
            struct pg_sink s = {&B, 0};
            s.scratch = pg_sink_reserve(L);
            luaL_buffinit(L, &B);
            if (pg_sink_array(L, &s, idx, e) < 0) {
                char m[sizeof(e->msg)];
                snprintf(m, sizeof(m), "%s", e->msg);
                snprintf(e->msg, sizeof(e->msg), "parameter $%d: %.900s", i + 1, m);
                return -1;
            }
            luaL_pushresult(&B);
            lua_replace(L, s.scratch);    /* the literal takes the scratch slots' place */
            lua_settop(L, s.scratch);
            values[i] = lua_tostring(L, -1);
            break;
        }
        default:
            return luaL_argerror(L, idx, "a parameter must be nil, null, a boolean, a number, a string or an array");
        }
    }
    return 0;
}

