/*
** pg_upsert.c: host.pg.upsert, the batched upsert (contract above pg_l_upsert).
**
** Table and column names are checked against the catalog, cached per
** connection (pg_schema_forget drops the cache with the connection); values
** never become SQL text.
*/
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_private.h"

/* ---------------------------------------------------------- schema cache */

static void table_free(struct pg_table *t)
{
    if (t == NULL)
        return;
    for (int i = 0; i < t->ncols; i++) {
        free(t->cols[i].name);
        free(t->cols[i].type);
    }
    free(t->cols);
    free(t->name);
    free(t);
}

void pg_schema_forget(struct pg_conn *c)
{
    struct pg_table *t = c->tables, *next;
    for (; t; t = next) {
        next = t->next;
        table_free(t);
    }
    c->tables = NULL;
}


/*
** Looks up (and caches per connection) the columns of a table visible on the
** search path. Returns NULL with e filled when the lookup failed or there is
** no such table (kind "query", sqlstate 42P01).
*/
static struct pg_table *schema_table(struct pg_conn *c, const char *name, struct pg_error *e)
{
    static const char *const sql =
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, NULL), t.typcategory = 'A' "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = (SELECT r.oid FROM pg_catalog.pg_class r "
        "  WHERE r.relname = $1 AND r.relkind IN ('r', 'p') "
        "  AND pg_catalog.pg_table_is_visible(r.oid) LIMIT 1) "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";
    const char *vals[1] = {name};
    struct pg_table *t;
    PGresult *res;
    int n;

    for (t = c->tables; t; t = t->next)
        if (strcmp(t->name, name) == 0)
            return t;
    res = pg_exec(c, sql, 1, vals, EXEC_READ, e);
    if (res == NULL)
        return NULL;
    n = PQntuples(res);
    if (n == 0) {
        PQclear(res);
        pg_err_set(e, PG_KIND_QUERY, "42P01", "");
        snprintf(e->msg, sizeof(e->msg), "upsert: no table \"%s\"", name);
        return NULL;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL || (t->name = strdup(name)) == NULL ||
        (t->cols = calloc((size_t)n, sizeof(*t->cols))) == NULL)
        goto oom;
    for (int i = 0; i < n; i++, t->ncols++) {
        t->cols[i].name = strdup(PQgetvalue(res, i, 0));
        t->cols[i].type = strdup(PQgetvalue(res, i, 1));
        t->cols[i].is_array = strcmp(PQgetvalue(res, i, 2), "t") == 0;
        if (t->cols[i].name == NULL || t->cols[i].type == NULL) {
            t->ncols++;
            goto oom;
        }
    }
    PQclear(res);
    t->next = c->tables;
    c->tables = t;
    return t;
oom:
    PQclear(res);
    table_free(t);
    pg_err_set(e, PG_KIND_QUERY, "53200", "out of memory");
    return NULL;
}

static void schema_forget_table(struct pg_conn *c, const char *name)
{
    struct pg_table **pp = &c->tables, *t;
    while ((t = *pp) != NULL) {
        if (strcmp(t->name, name) == 0) {
            *pp = t->next;
            table_free(t);
            return;
        }
        pp = &t->next;
    }
}

#define UPSERT_MAX_COLS 128

/* A parsed upsert spec; column entries index into the table's columns. */
struct upsert {
    const char *table;
    struct pg_table *t;
    int ncols, nkey, nupd, nret;
    int cols[UPSERT_MAX_COLS];     /* table column index of columns[i] */
    int key[UPSERT_MAX_COLS];      /* position in cols[] of each key column */
    int upd[UPSERT_MAX_COLS];      /* position in cols[] of each updated column */
    int keep[UPSERT_MAX_COLS];     /* per cols[] position: keep_on_null */
    int ret[UPSERT_MAX_COLS];      /* table column index of each returning column */
    int only_changed;
    int names;                     /* stack index of the first pushed column name */
    int rows;                      /* stack index of spec.rows */
    int rows_is_fn;                /* spec.rows is a function (chunked, see pg_l_upsert) */
    lua_Integer count;             /* rows in all: #spec.rows, or spec.count */
    lua_Integer chunk;             /* rows per statement with a rows function */
};

struct ukey;

/* The rows of one statement. */
struct batch {
    int rows;          /* stack index of the rows table */
    lua_Integer first; /* rows[1] answers results[first + 1] */
    lua_Integer nrows;
    lua_Integer nuniq;             /* rows sent: one per distinct key */
    lua_Integer *order;            /* [nuniq] row numbers sent, in key order */
    lua_Integer *slot;             /* [nrows] index into order[] answering each row */
    struct ukey *uk;               /* [nuniq] the keys sent, sorted */
};

static int table_col(const struct pg_table *t, const char *name)
{
    for (int i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, name) == 0)
            return i;
    return -1;
}

/* Reads spec[field] as a list of column names of u->t (misuse raises). */
static int read_names(lua_State *L, struct upsert *u, const char *field, int *out,
                      int required)
{
    lua_Integer n;
    int cnt = 0;

    if (lua_getfield(L, 1, field) == LUA_TNIL) {
        lua_pop(L, 1);
        if (required)
            luaL_error(L, "upsert: spec.%s is required", field);
        return -1;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "upsert: spec.%s must be a list of column names", field);
    n = (lua_Integer)lua_rawlen(L, -1);
    if (n > UPSERT_MAX_COLS)
        luaL_error(L, "upsert: spec.%s has too many columns", field);
    for (lua_Integer i = 1; i <= n; i++) {
        const char *name;
        int col;
        lua_rawgeti(L, -1, i);
        name = lua_tostring(L, -1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "upsert: spec.%s[%d] is not a column name", field, (int)i);
        col = table_col(u->t, name);
        if (col < 0)
            luaL_error(L, "upsert: table \"%s\" has no column \"%s\"", u->table, name);
        for (int k = 0; k < cnt; k++)
            if (out[k] == col)
                luaL_error(L, "upsert: column \"%s\" is listed twice in spec.%s", name, field);
        out[cnt++] = col;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return cnt;
}

static int pos_in_cols(const struct upsert *u, int col)
{
    for (int i = 0; i < u->ncols; i++)
        if (u->cols[i] == col)
            return i;
    return -1;
}

static void add_ident(luaL_Buffer *B, const char *name)
{
    luaL_addchar(B, '"');
    for (const char *p = name; *p; p++) {
        if (*p == '"')
            luaL_addchar(B, '"');
        luaL_addchar(B, *p);
    }
    luaL_addchar(B, '"');
}

static const char *colname(const struct upsert *u, int pos)
{
    return u->t->cols[u->cols[pos]].name;
}

/* The new value of updated column pos as the SET and the change test see it. */
static void add_new_value(luaL_Buffer *B, const struct upsert *u, int pos)
{
    if (u->keep[pos]) {
        luaL_addstring(B, "COALESCE(EXCLUDED.");
        add_ident(B, colname(u, pos));
        luaL_addstring(B, ", t.");
        add_ident(B, colname(u, pos));
        luaL_addchar(B, ')');
    } else {
        luaL_addstring(B, "EXCLUDED.");
        add_ident(B, colname(u, pos));
    }
}

/*
** spec.rows (left on the stack): a list of row tables, or a function with spec.count;
** spec.chunk, rows per statement (required with a function; with a list, the whole list
** when absent). More than one statement needs an open transaction (see pg_l_upsert).
** Misuse raises.
*/
static void parse_rows(lua_State *L, const struct pg_conn *c, struct upsert *u)
{
    int t = lua_getfield(L, 1, "rows");
    u->rows = lua_gettop(L);
    if (t != LUA_TTABLE && t != LUA_TFUNCTION)
        luaL_error(L, "upsert: spec.rows must be a list of row tables or a function");
    u->rows_is_fn = t == LUA_TFUNCTION;
    lua_getfield(L, 1, "count");
    u->count = u->rows_is_fn ? lua_tointeger(L, -1) : (lua_Integer)lua_rawlen(L, u->rows);
    if (u->rows_is_fn && (!lua_isinteger(L, -1) || u->count < 0))
        luaL_error(L, "upsert: spec.count must be a non-negative integer with a rows function");
    if (lua_getfield(L, 1, "chunk") == LUA_TNIL && !u->rows_is_fn) {
        u->chunk = u->count > 0 ? u->count : 1;
    } else {
        u->chunk = lua_tointeger(L, -1);
        if (!lua_isinteger(L, -1) || u->chunk < 1)
            luaL_error(L, "upsert: spec.chunk must be a positive integer");
    }
    lua_pop(L, 2);
    if ((u->rows_is_fn || u->count > u->chunk) && !c->in_tx)
        luaL_error(L, "upsert: rows in chunks need an open transaction (one statement a chunk)");
}

/* Parses the spec at stack index 1 into u (misuse raises). */
static int upsert_parse(lua_State *L, struct pg_conn *c, struct upsert *u, struct pg_error *e)
{
    int upd_cols[UPSERT_MAX_COLS], keep_cols[UPSERT_MAX_COLS], key_cols[UPSERT_MAX_COLS];
    int nkeep;

    memset(u, 0, sizeof(*u));
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "table");
    u->table = lua_tostring(L, -1);
    if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "upsert: spec.table must be a table name");
    lua_pop(L, 1);  /* the spec table keeps the string alive */
    u->t = schema_table(c, u->table, e);
    if (u->t == NULL)
        return -1;

    u->ncols = read_names(L, u, "columns", u->cols, 1);
    u->nkey = read_names(L, u, "key", key_cols, 1);
    if (u->nkey == 0 || u->ncols == 0)
        return luaL_error(L, "upsert: spec.key and spec.columns must not be empty");
    for (int i = 0; i < u->nkey; i++) {
        u->key[i] = pos_in_cols(u, key_cols[i]);
        if (u->key[i] < 0)
            return luaL_error(L, "upsert: key column \"%s\" is not in spec.columns",
                              u->t->cols[key_cols[i]].name);
    }
    u->nupd = read_names(L, u, "update", upd_cols, 0);
    if (u->nupd < 0) {  /* default: every non-key column */
        u->nupd = 0;
        for (int i = 0; i < u->ncols; i++) {
            int is_key = 0;
            for (int k = 0; k < u->nkey; k++)
                is_key |= u->key[k] == i;
            if (!is_key)
                u->upd[u->nupd++] = i;
        }
    } else {
        for (int i = 0; i < u->nupd; i++) {
            u->upd[i] = pos_in_cols(u, upd_cols[i]);
            if (u->upd[i] < 0)
                return luaL_error(L, "upsert: updated column \"%s\" is not in spec.columns",
                                  u->t->cols[upd_cols[i]].name);
            for (int k = 0; k < u->nkey; k++)
                if (u->key[k] == u->upd[i])
                    return luaL_error(L, "upsert: key column \"%s\" cannot be updated",
                                      u->t->cols[upd_cols[i]].name);
        }
    }
    nkeep = read_names(L, u, "keep_on_null", keep_cols, 0);
    for (int i = 0; i < nkeep; i++) {
        int pos = pos_in_cols(u, keep_cols[i]), found = 0;
        for (int k = 0; k < u->nupd; k++)
            found |= u->upd[k] == pos;
        if (!found)
            return luaL_error(L, "upsert: keep_on_null column \"%s\" is not updated",
                              u->t->cols[keep_cols[i]].name);
        u->keep[pos] = 1;
    }
    u->nret = read_names(L, u, "returning", u->ret, 0);
    if (u->nret < 0) {
        int id = table_col(u->t, "id");
        if (id < 0)
            return luaL_error(L, "upsert: table \"%s\" has no id column: give spec.returning",
                              u->table);
        u->ret[0] = id;
        u->nret = 1;
    }
    for (int i = 0; i < u->nret; i++) {
        const char *n = u->t->cols[u->ret[i]].name;
        if (strcmp(n, "inserted") == 0 || strcmp(n, "changed") == 0)
            return luaL_error(L, "upsert: cannot return a column named \"%s\"", n);
    }
    lua_getfield(L, 1, "only_changed");
    u->only_changed = lua_toboolean(L, -1);
    lua_pop(L, 1);
    parse_rows(L, c, u);
    luaL_checkstack(L, u->ncols + 8, "upsert columns");
    u->names = lua_gettop(L) + 1;
    for (int i = 0; i < u->ncols; i++)
        lua_pushstring(L, colname(u, i));
    return 0;
}

/*
** Rows that share a key are sent once (the last of them wins, as row-by-row
** upserts would have it), and the rows sent are ordered by key, so two
** transactions upserting overlapping keys lock them in the same order and
** cannot deadlock on each other. A key is compared as Lua values: a single
** string key as itself, other keys through a canonical encoding. NULL keys
** never conflict in PostgreSQL, so each such row stands alone. (Keys that are
** different Lua values but equal for PostgreSQL, like 42 and "42" for a text
** column, both reach the statement, which then fails with SQLSTATE 21000.)
*/
struct ukey {
    const char *s;     /* canonical key bytes, anchored in the keys table */
    size_t len;
    lua_Integer row;
};

static int cmp_ukey(const void *a, const void *b)
{
    const struct ukey *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c != 0)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* Pushes row r's value of cols[pos] (raw, may be nil). */
static int get_cell(lua_State *L, const struct upsert *u, const struct batch *b, lua_Integer r,
                    int pos)
{
    int t;
    if (lua_rawgeti(L, b->rows, r) != LUA_TTABLE)
        luaL_error(L, "upsert: spec.rows[%d] is not a table", (int)r);
    lua_pushvalue(L, u->names + pos);
    t = lua_gettable(L, -2);  /* honours __index, like any Lua reader would */
    lua_remove(L, -2);
    return t;
}

/* Pushes row r's key as a string (see above). -1 with e filled for a table key. */
static int push_row_key(lua_State *L, const struct upsert *u, const struct batch *b, lua_Integer r,
                        struct pg_error *e)
{
    luaL_Buffer B;
    char num[80];

    if (u->nkey == 1 && get_cell(L, u, b, r, u->key[0]) == LUA_TSTRING)
        return 0;  /* the common case: the string is its own key */
    if (u->nkey == 1)
        lua_pop(L, 1);
    luaL_buffinit(L, &B);
    luaL_addchar(&B, '\0');  /* no real string key starts with NUL (they are refused) */
    for (int k = 0; k < u->nkey; k++) {
        int t = get_cell(L, u, b, r, u->key[k]);
        const char *str = NULL;
        size_t len = 0;

        switch (t) {
        case LUA_TSTRING:
            str = lua_tolstring(L, -1, &len);  /* anchored by the row table */
            lua_pop(L, 1);
            snprintf(num, sizeof(num), "s%zu:", len);
            luaL_addstring(&B, num);
            luaL_addlstring(&B, str, len);
            break;
        case LUA_TNUMBER: {
            lua_Integer i = 0;
            if (lua_isinteger(L, -1))
                i = lua_tointeger(L, -1);
            if (lua_isinteger(L, -1) || lua_numbertointeger(lua_tonumber(L, -1), &i)) {
                snprintf(num, sizeof(num), "i%lld;", (long long)i);
            } else {
                snprintf(num, sizeof(num), "f%.17g;", (double)lua_tonumber(L, -1));
            }
            lua_pop(L, 1);
            luaL_addstring(&B, num);
            break;
        }
        case LUA_TBOOLEAN:
            luaL_addstring(&B, lua_toboolean(L, -1) ? "bt" : "bf");
            lua_pop(L, 1);
            break;
        case LUA_TNIL:
        case LUA_TLIGHTUSERDATA:
            lua_pop(L, 1);
            snprintf(num, sizeof(num), "n%lld;", (long long)(b->first + r));
            luaL_addstring(&B, num);
            break;
        default:
            lua_pop(L, 1);
            pg_err_set(e, PG_KIND_QUERY, "22P02", "");
            snprintf(e->msg, sizeof(e->msg), "upsert: rows[%lld].%.63s: a key must be a scalar",
                     (long long)(b->first + r), colname(u, u->key[k]));
            return -1;
        }
    }
    luaL_pushresult(&B);
    return 0;
}

/* Fills b->order, b->slot, b->uk and b->nuniq; they and the keys are left on the stack. */
static int upsert_dedupe(lua_State *L, const struct upsert *u, struct batch *b, struct pg_error *e)
{
    lua_Integer n = b->nrows, nu = 0;
    struct ukey *uk;
    int keys, seen;

    lua_createtable(L, (int)n, 0);
    keys = lua_gettop(L);
    lua_createtable(L, 0, (int)n);
    seen = lua_gettop(L);
    for (lua_Integer r = 1; r <= n; r++) {
        if (push_row_key(L, u, b, r, e) < 0)
            return -1;
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, r);
        lua_pushinteger(L, r);
        lua_rawset(L, seen);       /* the last row of a key wins */
    }
    uk = lua_newuserdatauv(L, sizeof(*uk) * (size_t)n, 0);
    b->uk = uk;
    b->slot = lua_newuserdatauv(L, sizeof(*b->slot) * (size_t)n, 0);
    b->order = lua_newuserdatauv(L, sizeof(*b->order) * (size_t)n, 0);
    for (lua_Integer r = 1; r <= n; r++) {
        lua_rawgeti(L, keys, r);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, seen) == LUA_TNUMBER && lua_tointeger(L, -1) == r) {
            uk[nu].s = lua_tolstring(L, -2, &uk[nu].len);
            uk[nu].row = r;
            nu++;
        }
        lua_pop(L, 2);
    }
    qsort(uk, (size_t)nu, sizeof(*uk), cmp_ukey);
    for (lua_Integer j = 0; j < nu; j++) {
        b->order[j] = uk[j].row;
        lua_rawgeti(L, keys, uk[j].row);
        lua_pushinteger(L, j);
        lua_rawset(L, seen);       /* now: key -> position in order[] */
    }
    for (lua_Integer r = 1; r <= n; r++) {
        lua_rawgeti(L, keys, r);
        lua_rawget(L, seen);
        b->slot[r - 1] = lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    b->nuniq = nu;
    return 0;
}

/* ------------------------------------------------------- the statement */

static void add_fmt(luaL_Buffer *B, const char *fmt, int n)
{
    char tmp[64];
    snprintf(tmp, sizeof(tmp), fmt, n);
    luaL_addstring(B, tmp);
}

static void add_col_list(luaL_Buffer *B, const struct upsert *u)
{
    for (int i = 0; i < u->ncols; i++) {
        if (i)
            luaL_addstring(B, ", ");
        add_ident(B, colname(u, i));
    }
}

/*
** Pushes the statement. Rows come from unnest($1::text[], ...) of the binary
** text[] parameters, one per column, cast to the column types. The answer has one row per row sent, in order: the
** returning columns and ss_inserted, NULL when the row was left alone (then
** a second statement fetches its returning columns: a join to the table here
** would see the statement's snapshot, which misses a row another transaction
** inserted meanwhile, and could scan a large table).
*/
static void push_upsert_sql(lua_State *L, const struct upsert *u)
{
    luaL_Buffer B;
    luaL_buffinit(L, &B);

    luaL_addstring(&B, "WITH upserted AS (INSERT INTO ");
    add_ident(&B, u->table);
    luaL_addstring(&B, " AS t (");
    add_col_list(&B, u);
    luaL_addstring(&B, ") SELECT ");
    for (int i = 0; i < u->ncols; i++) {
        add_fmt(&B, i ? ", u.ss_p%d::" : "u.ss_p%d::", i + 1);
        luaL_addstring(&B, u->t->cols[u->cols[i]].type);
    }
    luaL_addstring(&B, " FROM unnest(");
    for (int i = 0; i < u->ncols; i++)
        add_fmt(&B, i ? ", $%d::text[]" : "$%d::text[]", i + 1);
    luaL_addstring(&B, ") AS u(");
    for (int i = 0; i < u->ncols; i++)
        add_fmt(&B, i ? ", ss_p%d" : "ss_p%d", i + 1);
    luaL_addchar(&B, ')');
    luaL_addstring(&B, " ON CONFLICT (");
    for (int k = 0; k < u->nkey; k++) {
        if (k)
            luaL_addstring(&B, ", ");
        add_ident(&B, colname(u, u->key[k]));
    }
    if (u->nupd == 0) {
        luaL_addstring(&B, ") DO NOTHING");
    } else {
        luaL_addstring(&B, ") DO UPDATE SET ");
        for (int i = 0; i < u->nupd; i++) {
            if (i)
                luaL_addstring(&B, ", ");
            add_ident(&B, colname(u, u->upd[i]));
            luaL_addstring(&B, " = ");
            add_new_value(&B, u, u->upd[i]);
        }
        if (u->only_changed) {
            luaL_addstring(&B, " WHERE (");
            for (int i = 0; i < u->nupd; i++) {
                if (i)
                    luaL_addstring(&B, ", ");
                luaL_addstring(&B, "t.");
                add_ident(&B, colname(u, u->upd[i]));
            }
            luaL_addstring(&B, u->nupd == 1 ? ", NULL) IS DISTINCT FROM (" : ") IS DISTINCT FROM (");
            for (int i = 0; i < u->nupd; i++) {
                if (i)
                    luaL_addstring(&B, ", ");
                add_new_value(&B, u, u->upd[i]);
            }
            luaL_addstring(&B, u->nupd == 1 ? ", NULL)" : ")");
        }
    }
    /* xmax = 0 only on a tuple this statement inserted: an updated row carries
    ** the updating transaction's id in xmax (undocumented; pinned by a spec). */
    luaL_addstring(&B, " RETURNING ");
    for (int k = 0; k < u->nkey; k++) {
        luaL_addstring(&B, "t.");
        add_ident(&B, colname(u, u->key[k]));
        add_fmt(&B, " AS ss_k%d, ", k + 1);
    }
    for (int i = 0; i < u->nret; i++) {
        luaL_addstring(&B, "t.");
        add_ident(&B, u->t->cols[u->ret[i]].name);
        add_fmt(&B, " AS ss_r%d, ", i + 1);
    }
    luaL_addstring(&B, "(t.xmax = 0) AS ss_inserted) SELECT ");
    for (int i = 0; i < u->nret; i++)
        add_fmt(&B, "r.ss_r%d, ", i + 1);
    luaL_addstring(&B, "r.ss_inserted FROM unnest(");
    for (int k = 0; k < u->nkey; k++)
        add_fmt(&B, k ? ", $%d::text[]" : "$%d::text[]", u->key[k] + 1);
    luaL_addstring(&B, ") WITH ORDINALITY AS i(");
    for (int k = 0; k < u->nkey; k++)
        add_fmt(&B, "ss_k%d, ", k + 1);
    luaL_addstring(&B, "ss_ord) LEFT JOIN upserted r ON ");
    for (int k = 0; k < u->nkey; k++) {
        add_fmt(&B, k ? " AND r.ss_k%d = " : "r.ss_k%d = ", k + 1);
        add_fmt(&B, "i.ss_k%d::", k + 1);
        luaL_addstring(&B, u->t->cols[u->cols[u->key[k]]].type);
    }
    luaL_addstring(&B, " ORDER BY i.ss_ord");
    luaL_pushresult(&B);
}

/* ------------------------------------------------------------ the rows */

static void buf_int32(luaL_Buffer *B, uint32_t v)
{
    char b[4] = {(char)(v >> 24), (char)(v >> 16), (char)(v >> 8), (char)v};
    luaL_addlstring(B, b, 4);
}

static void buf_patch32(luaL_Buffer *B, size_t off, uint32_t v)
{
    char *p = luaL_buffaddr(B) + off;
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

/*
** Writes row r's value of cols[pos] into s as an element of a binary text[]
** (int32 length, -1 for NULL, then the bytes). An array column's value is its
** array literal. Returns 0, or -1 with e filled for a value of the wrong shape.
*/
static int put_cell(lua_State *L, struct pg_sink *s, const struct upsert *u, const struct batch *b,
                    lua_Integer r, int pos, int *has_null, struct pg_error *e)
{
    const struct pg_column *col = &u->t->cols[u->cols[pos]];
    int t = get_cell(L, u, b, r, pos);
    char num[64];
    size_t len = 0;
    const char *str = NULL;

    if (t == LUA_TNIL || (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL)) {
        lua_pop(L, 1);
        buf_int32(s->B, 0xFFFFFFFFu);
        *has_null = 1;
        return 0;
    }
    if (col->is_array != (t == LUA_TTABLE)) {
        lua_pop(L, 1);
        pg_err_set(e, PG_KIND_QUERY, "22P02", "");
        snprintf(e->msg, sizeof(e->msg), "upsert: rows[%lld].%.63s must be %s",
                 (long long)(b->first + r), col->name,
                 col->is_array ? "an array table or null" : "a scalar or null");
        return -1;
    }
    switch (t) {
    case LUA_TBOOLEAN:
        str = lua_toboolean(L, -1) ? "t" : "f";
        len = 1;
        break;
    case LUA_TNUMBER:
        len = pg_format_number(L, -1, num, sizeof(num));
        str = num;
        break;
    case LUA_TSTRING:
        str = lua_tolstring(L, -1, &len);  /* anchored by the row table */
        if (memchr(str, '\0', len)) {
            lua_pop(L, 1);
            pg_err_set(e, PG_KIND_QUERY, "22021", "");
            snprintf(e->msg, sizeof(e->msg), "upsert: rows[%lld].%.63s contains a NUL byte",
                     (long long)(b->first + r), col->name);
            return -1;
        }
        break;
    case LUA_TTABLE: {
        size_t at = luaL_bufflen(s->B);
        lua_replace(L, s->scratch);  /* parked below the buffer (see PG_SINK_SCRATCH) */
        buf_int32(s->B, 0);          /* the length, patched below */
        if (pg_sink_array(L, s, s->scratch, e) < 0) {
            char m[sizeof(e->msg)];
            snprintf(m, sizeof(m), "%s", e->msg);
            snprintf(e->msg, sizeof(e->msg), "upsert: rows[%lld].%.63s: %.900s",
                     (long long)(b->first + r), col->name, m);
            return -1;
        }
        buf_patch32(s->B, at, (uint32_t)(luaL_bufflen(s->B) - at - 4));
        return 0;
    }
    default:
        lua_pop(L, 1);
        pg_err_set(e, PG_KIND_QUERY, "22P02", "");
        snprintf(e->msg, sizeof(e->msg), "upsert: rows[%lld].%.63s has an unsupported type (%s)",
                 (long long)(b->first + r), col->name, lua_typename(L, t));
        return -1;
    }
    lua_pop(L, 1);  /* str stays valid: anchored by the row table, or in num */
    buf_int32(s->B, (uint32_t)len);
    luaL_addlstring(s->B, str, len);
    return 0;
}

/*
** Pushes one binary text[] parameter per listed column (positions into
** cols[]), holding the rows listed in which[] (row numbers). values[j] and
** lengths[j] point at the pushed strings.
*/
static int push_column_params(lua_State *L, const struct upsert *u, const struct batch *b,
                              const int *positions, int npos, const lua_Integer *which,
                              lua_Integer count, const char **values, int *lengths,
                              struct pg_error *e)
{
    int scratch;

    luaL_checkstack(L, npos + 8, "upsert columns");
    scratch = pg_sink_reserve(L);
    for (int j = 0; j < npos; j++) {
        luaL_Buffer B;
        struct pg_sink s = {&B, scratch};
        int has_null = 0;
        size_t len;

        luaL_buffinit(L, &B);
        buf_int32(&B, count > 0 ? 1 : 0);   /* dimensions */
        buf_int32(&B, 0);                   /* has NULLs, patched below */
        buf_int32(&B, 25);                  /* element type: text */
        if (count > 0) {
            buf_int32(&B, (uint32_t)count);
            buf_int32(&B, 1);               /* lower bound */
        }
        for (lua_Integer i = 0; i < count; i++)
            if (put_cell(L, &s, u, b, which[i], positions[j], &has_null, e) < 0)
                return -1;
        if (has_null)
            buf_patch32(&B, 4, 1);
        luaL_pushresult(&B);
        values[j] = lua_tolstring(L, -1, &len);
        if (len > INT32_MAX) {
            pg_err_set(e, PG_KIND_QUERY, "54000", "upsert: a column's values exceed 2 GiB");
            return -1;
        }
        lengths[j] = (int)len;
    }
    return 0;
}

/* Sets the returning columns of row i of res (from column `first` on) into the table on top. */
static void set_returning(lua_State *L, const struct upsert *u, PGresult *res, int i, int first,
                          const struct pg_type *types, int mt)
{
    for (int k = 0; k < u->nret; k++) {
        if (PQgetisnull(res, i, first + k)) {
            lua_pushlightuserdata(L, NULL);
        } else {
            pg_push_value(L, PQgetvalue(res, i, first + k),
                          (size_t)PQgetlength(res, i, first + k), &types[k], mt);
        }
        lua_setfield(L, -2, u->t->cols[u->ret[k]].name);
    }
}

/*
** The rows left alone by the upsert (unchanged, or DO NOTHING, or inserted by
** another transaction after the statement's snapshot): a new statement looks
** their returning columns up by key. missing[] holds positions in b->order;
** the answers are the tables ans[position + 1].
*/
static int upsert_fill_missing(lua_State *L, struct pg_conn *c, const struct upsert *u,
                               const struct batch *b, const lua_Integer *missing,
                               lua_Integer nmissing, int ans, int mt, struct pg_error *e)
{
    int top = lua_gettop(L);
    const char **values = lua_newuserdatauv(L, sizeof(*values) * (size_t)u->nkey, 0);
    int *lengths = lua_newuserdatauv(L, sizeof(*lengths) * (size_t)u->nkey, 0);
    int *formats = lua_newuserdatauv(L, sizeof(*formats) * (size_t)u->nkey, 0);
    lua_Integer *rows = lua_newuserdatauv(L, sizeof(*rows) * (size_t)nmissing, 0);
    struct pg_type *types = lua_newuserdatauv(L, sizeof(*types) * (size_t)u->nret, 0);
    luaL_Buffer B;
    PGresult *res;
    int box;

    for (lua_Integer m = 0; m < nmissing; m++)
        rows[m] = b->order[missing[m]];
    for (int k = 0; k < u->nkey; k++)
        formats[k] = 1;
    if (push_column_params(L, u, b, u->key, u->nkey, rows, nmissing, values, lengths, e) < 0)
        return -1;
    luaL_buffinit(L, &B);
    luaL_addstring(&B, "SELECT k.ss_ord");
    for (int i = 0; i < u->nret; i++) {
        luaL_addstring(&B, ", t.");
        add_ident(&B, u->t->cols[u->ret[i]].name);
    }
    luaL_addstring(&B, " FROM unnest(");
    for (int k = 0; k < u->nkey; k++)
        add_fmt(&B, k ? ", $%d::text[]" : "$%d::text[]", k + 1);
    luaL_addstring(&B, ") WITH ORDINALITY AS k(");
    for (int k = 0; k < u->nkey; k++)
        add_fmt(&B, "ss_k%d, ", k + 1);
    luaL_addstring(&B, "ss_ord) JOIN ");
    add_ident(&B, u->table);
    luaL_addstring(&B, " t ON ");
    for (int k = 0; k < u->nkey; k++) {
        const struct pg_column *col = &u->t->cols[u->cols[u->key[k]]];
        if (k)
            luaL_addstring(&B, " AND ");
        luaL_addstring(&B, "t.");
        add_ident(&B, col->name);
        add_fmt(&B, " = k.ss_k%d::", k + 1);
        luaL_addstring(&B, col->type);
    }
    luaL_pushresult(&B);
    res = pg_execp(c, lua_tostring(L, -1), u->nkey, values, lengths, formats,
                   EXEC_NO_RECONNECT | EXEC_PREPARE, e);
    if (res == NULL) {
        lua_settop(L, top);
        return -1;
    }
    pg_result_box(L, res);
    box = lua_gettop(L);
    for (int k = 0; k < u->nret; k++)
        pg_type_resolve(c, PQftype(res, k + 1), &types[k]);
    for (int i = 0; i < PQntuples(res); i++) {
        lua_Integer ord = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        if (ord < 1 || ord > nmissing)
            continue;
        lua_rawgeti(L, ans, missing[ord - 1] + 1);
        set_returning(L, u, res, i, 1, types, mt);
        lua_pop(L, 1);
    }
    PQclear(res);
    *(PGresult **)lua_touserdata(L, box) = NULL;
    lua_settop(L, top);
    return 0;
}

/* A statement's parameters: every column of the rows sent, one binary text[] each. */
struct params {
    const char **values;
    int *lengths;
    int *formats;
};

/*
** Pushes batch b's parameters: the arrays in userdata, the values in strings, all
** on the stack. Returns 0, or -1 with e filled.
*/
static int upsert_params(lua_State *L, const struct upsert *u, const struct batch *b,
                         struct params *p, struct pg_error *e)
{
    int positions[UPSERT_MAX_COLS];

    p->values = lua_newuserdatauv(L, sizeof(*p->values) * (size_t)u->ncols, 0);
    p->lengths = lua_newuserdatauv(L, sizeof(*p->lengths) * (size_t)u->ncols, 0);
    p->formats = lua_newuserdatauv(L, sizeof(*p->formats) * (size_t)u->ncols, 0);
    for (int i = 0; i < u->ncols; i++) {
        positions[i] = i;
        p->formats[i] = 1;
    }
    return push_column_params(L, u, b, positions, u->ncols, b->order, b->nuniq, p->values,
                              p->lengths, e);
}

/*
** Reads the statement's answer for batch b into results[b->first + r] (r = 1..nrows),
** looking up the rows it left alone (upsert_fill_missing). Consumes res. 0, or -1 with e.
*/
static int upsert_answer(lua_State *L, struct pg_conn *c, const struct upsert *u,
                         const struct batch *b, PGresult *res, int results, int mt,
                         struct pg_error *e)
{
    int top = lua_gettop(L), box, ans;
    lua_Integer *missing, nmissing = 0;
    struct pg_type *types;

    pg_result_box(L, res);
    box = lua_gettop(L);
    if (PQntuples(res) != b->nuniq || PQnfields(res) != u->nret + 1) {
        pg_err_set(e, PG_KIND_QUERY, "XX000", "upsert: unexpected result shape");
        return -1;
    }
    types = lua_newuserdatauv(L, sizeof(*types) * (size_t)u->nret, 0);
    missing = lua_newuserdatauv(L, sizeof(*missing) * (size_t)b->nuniq, 0);
    for (int k = 0; k < u->nret; k++)
        pg_type_resolve(c, PQftype(res, k), &types[k]);
    lua_createtable(L, (int)b->nuniq, 0);
    ans = lua_gettop(L);
    for (int j = 0; j < (int)b->nuniq; j++) {
        int left_alone = PQgetisnull(res, j, u->nret);
        lua_createtable(L, 0, u->nret + 2);
        set_returning(L, u, res, j, 0, types, mt);
        lua_pushboolean(L, !left_alone && PQgetvalue(res, j, u->nret)[0] == 't');
        lua_setfield(L, -2, "inserted");
        lua_pushboolean(L, !left_alone);
        lua_setfield(L, -2, "changed");
        lua_rawseti(L, ans, j + 1);
        if (left_alone)
            missing[nmissing++] = j;
    }
    PQclear(res);
    *(PGresult **)lua_touserdata(L, box) = NULL;
    if (nmissing > 0 && upsert_fill_missing(L, c, u, b, missing, nmissing, ans, mt, e) < 0)
        return -1;
    for (lua_Integer r = 0; r < b->nrows; r++) {
        lua_rawgeti(L, ans, b->slot[r] + 1);
        lua_rawseti(L, results, b->first + r + 1);
    }
    lua_settop(L, top);
    return 0;
}

/* One statement for every row of the list spec.rows. */
static int upsert_list(lua_State *L, struct pg_conn *c, const struct upsert *u, int sqlidx,
                       int results, int mt, struct pg_error *e)
{
    struct batch b = {.rows = u->rows, .first = 0, .nrows = u->count};
    struct params p;
    PGresult *res;

    if (upsert_dedupe(L, u, &b, e) < 0 || upsert_params(L, u, &b, &p, e) < 0)
        return -1;
    res = pg_execp(c, lua_tostring(L, sqlidx), u->ncols, p.values, p.lengths, p.formats,
                   EXEC_PREPARE, e);
    return res ? upsert_answer(L, c, u, &b, res, results, mt, e) : -1;
}

/*
** Prepares the chunk of rows first+1 .. first+n from the rows function: its rows
** table at slot rows_at, everything else it needs anchored in a table at slot
** hold_at (so the previous chunk's stays alive below). 0, or -1 with e filled.
*/
static int chunk_prepare(lua_State *L, const struct upsert *u, struct batch *b, lua_Integer first,
                         lua_Integer n, int rows_at, int hold_at, struct params *p,
                         struct pg_error *e)
{
    int top = lua_gettop(L);

    if (u->rows_is_fn) {
        lua_pushvalue(L, u->rows);
        lua_pushinteger(L, first + 1);
        lua_pushinteger(L, first + n);
        lua_call(L, 2, 1);
    } else { /* a slice of the list */
        lua_createtable(L, (int)n, 0);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, u->rows, first + i);
            lua_rawseti(L, -2, i);
        }
    }
    if (!lua_istable(L, -1) || (lua_Integer)lua_rawlen(L, -1) != n)
        luaL_error(L, "upsert: spec.rows(%d, %d) must return a list of %d row tables",
                   (int)(first + 1), (int)(first + n), (int)n);
    lua_replace(L, rows_at);
    *b = (struct batch){.rows = rows_at, .first = first, .nrows = n};
    if (upsert_dedupe(L, u, b, e) < 0 || upsert_params(L, u, b, p, e) < 0)
        return -1;
    lua_createtable(L, lua_gettop(L) - top, 0);
    for (int i = top + 1; i < lua_gettop(L); i++) {
        lua_pushvalue(L, i);
        lua_rawseti(L, -2, i - top);
    }
    lua_replace(L, hold_at);
    lua_settop(L, top);
    return 0;
}

/*
** The rows function's form: one statement per chunk, and while the database runs
** one the next is built (the caller's Lua) and encoded here, so the two processes
** work at once. Chunks must come in key order: a key is in one chunk only.
*/
static int upsert_chunks(lua_State *L, struct pg_conn *c, const struct upsert *u, int sqlidx,
                         int results, int mt, struct pg_error *e)
{
    struct batch cur, prev;
    struct params p;
    int slots = lua_gettop(L) + 1; /* rows and anchors of the current, then the previous */
    int have_prev = 0;

    luaL_checkstack(L, 8, "upsert chunks");
    lua_settop(L, slots + 3);
    for (lua_Integer first = 0; first < u->count; first += u->chunk) {
        lua_Integer n = u->count - first < u->chunk ? u->count - first : u->chunk;
        if (chunk_prepare(L, u, &cur, first, n, slots, slots + 1, &p, e) < 0)
            goto drain;
        if (have_prev && cur.nuniq > 0 && prev.nuniq > 0 &&
            cmp_ukey(&prev.uk[prev.nuniq - 1], &cur.uk[0]) >= 0) {
            pg_drain(c);
            return luaL_error(L, "upsert: spec.rows must give its chunks in key order");
        }
        if (have_prev) {
            PGresult *res = pg_collect(c, e);
            if (res == NULL || upsert_answer(L, c, u, &prev, res, results, mt, e) < 0)
                return -1;
        }
        if (pg_sendp(c, lua_tostring(L, sqlidx), u->ncols, p.values, p.lengths, p.formats, e) < 0)
            return -1;
        lua_copy(L, slots, slots + 2);
        lua_copy(L, slots + 1, slots + 3);
        prev = cur;
        prev.rows = slots + 2;
        have_prev = 1;
    }
    if (have_prev) {
        PGresult *res = pg_collect(c, e);
        if (res == NULL || upsert_answer(L, c, u, &prev, res, results, mt, e) < 0)
            return -1;
    }
    return 0;
drain:
    pg_drain(c);
    return -1;
}

/*
** host.pg.upsert(spec) -> results | nil, err
**
** spec = {table = "title_catalog", key = {"asin"}, columns = {...},
**         rows = {{asin = ..., ...}, ...}, update = {...}, only_changed = true,
**         keep_on_null = {...}, returning = {"id"}}
**
** One statement for all rows: the rows travel as one binary text[] parameter
** per column (an array column's values as array literals), unnested, cast to
** the column types and inserted with ON CONFLICT (key) DO UPDATE SET the
** `update` columns (default: every non-key column; an empty list means DO
** NOTHING), with COALESCE(new, old) for keep_on_null columns and, with
** only_changed, a WHERE that skips rows whose updated columns would not
** change. Rows sharing a key are sent once, the last one winning, in key
** order (see upsert_dedupe). Rows the statement left alone get their
** returning columns from a second statement.
**
** Or in chunks, inside a transaction: chunk = rows per statement, with rows a
** list, or rows = function(first, last) -> the list of rows first..last and
** count = the number of rows. The next chunk is built (the function called, the
** rows encoded) while the statement of the one before runs (upsert_chunks); the
** chunks must be in key order with no key in two of them and no NULL in a key
** (checked: misuse raises).
**
** results[i] answers row i: {<returning columns, default id>, inserted =
** true when the row was created, changed = true when it was created or
** rewritten}; rows that share a key share one answer table. Runs inside the
** caller's transaction if one is open; misuse of the spec raises.
*/
int pg_l_upsert(lua_State *L)
{
    struct pg_conn *c = pg_check_conn(L);
    struct upsert u;
    struct pg_error e;
    int sql, results, mt, rc;

    lua_settop(L, 1);
    if (upsert_parse(L, c, &u, &e) < 0)
        return pg_push_error(L, &e);
    pg_push_array_mt(L);
    mt = lua_gettop(L);
    lua_createtable(L, (int)u.count, 0);
    results = lua_gettop(L);
    lua_pushvalue(L, mt);
    lua_setmetatable(L, results);
    if (u.count == 0)
        return 1;
    push_upsert_sql(L, &u);
    sql = lua_gettop(L);
    rc = u.count > u.chunk || u.rows_is_fn ? upsert_chunks(L, c, &u, sql, results, mt, &e)
                                           : upsert_list(L, c, &u, sql, results, mt, &e);
    if (rc < 0) {
        if (e.kind == PG_KIND_QUERY && strncmp(e.sqlstate, "42", 2) == 0)
            schema_forget_table(c, u.table); /* the schema may have changed under the cache */
        return pg_push_error(L, &e);
    }
    lua_settop(L, results);
    return 1;
}
