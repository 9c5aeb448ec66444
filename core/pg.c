/*
** pg.c: host.pg, the libpq binding.
**
** Lua contract (every function works on the state's connection: the one the
** worker attached with pg_attach, or the one host.pg.connect opened):
**
**   host.pg.connect(conninfo[, statement_timeout_ms]) -> true | nil, msg, sqlstate, "connection"
**       Only in a state without an attached connection (specs, CLI tools). The
**       connection then belongs to the state (closed when the state is).
**   host.pg.query(sql, ...) -> rows | nil, msg, sqlstate, kind, info
**       One statement; the varargs are $1..$n, sent as text parameters:
**       nil / null -> NULL, boolean -> t/f, integer, float (%.17g), string
**       (a NUL byte is refused), array table -> array literal (elements quoted,
**       null elements -> NULL, nested tables -> nested arrays). rows is an array
**       of row tables (column name -> value) with rows.affected. Values come back
**       typed: int2/4/8/oid -> integer; float4/8/numeric -> number; bool ->
**       boolean; timestamptz -> "YYYY-MM-DDTHH:MM:SS.sssZ" (UTC, milliseconds);
**       date -> "YYYY-MM-DD"; arrays -> tables (elements typed alike); NULL ->
**       null (lightuserdata NULL, == cjson.null); json/jsonb and everything
**       else -> their text. rows and every array carry the registry metatable
**       "shelfsync.array". kind is "connection" (the database is unreachable
**       or the connection died) or "query"; info = {detail=, hint=,
**       constraint=, table=, column=, position=} where the server said so.
**   host.pg.upsert(spec) -> results | nil, msg, sqlstate, kind, info
**       The batched upsert, see the comment above l_upsert.
**   host.pg.begin() / commit() / rollback() -> true | nil, msg, sqlstate, kind
**   host.pg.in_tx() -> boolean       host.pg.ping() -> true | nil, msg
**   host.pg.null                      the NULL value
**
** Connection handling. The connection is opened on first use and reopened on
** the next use after a loss. Before each statement an idle connection is
** probed without blocking (poll + PQconsumeInput), so a connection the server
** closed (restart, idle timeout) is found dead before anything is sent; the
** statement then simply runs on a fresh connection. A statement that was sent
** and lost with its connection is retried once only if it is a read (SELECT,
** VALUES, TABLE, SHOW, or WITH, and no INSERT/UPDATE/DELETE/MERGE/COPY/INTO/
** CALL word anywhere in it) and no transaction was open; a write is never
** retried. When the connection dies inside a transaction, the transaction is
** gone: every statement is refused (kind "connection") until the caller calls
** rollback(), so no statement of that transaction can run outside it on a new
** connection; commit() reports the loss.
**
** Timestamps: every session is set to TimeZone UTC and DateStyle ISO, and the
** text form is converted (offset applied) to the ISO-8601 "Z" form, so the
** result does not depend on the session zone even if a caller changes it.
** Text results were chosen over binary ones: numeric and arrays read simply
** and exactly from text, and the conversion cost is small next to the round
** trip.
*/
#define _POSIX_C_SOURCE 200809L

#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>
#include <libpq-fe.h>
#include <lua.h>

#include "pg.h"

#define ARRAY_MT "shelfsync.array"
#define CONN_MT "shelfsync.pg.conn"
#define RESULT_MT "shelfsync.pg.result"

#define CONNECT_TIMEOUT "10"
#define MAX_PARAMS 65535

enum pg_kind { PG_KIND_NONE = 0, PG_KIND_QUERY, PG_KIND_CONNECTION };

/* An error copied out of libpq, so no PGresult has to outlive the call. */
struct pg_error {
    enum pg_kind kind;
    char sqlstate[6];
    char msg[1024];
    char detail[512];
    char hint[256];
    char constraint[128];
    char table[128];
    char column[128];
    int position;
};

/* How a value of one type is turned into Lua. */
enum pg_vkind { V_TEXT = 0, V_INT, V_FLOAT, V_BOOL, V_TSTZ, V_ARRAY };

struct pg_type {
    Oid oid;
    unsigned char kind;  /* enum pg_vkind */
    unsigned char elem;  /* element kind when kind == V_ARRAY */
    char delim;          /* element delimiter when kind == V_ARRAY */
};

struct pg_column {
    char *name;
    char *type;     /* format_type without typmod: the cast target */
    int is_array;
};

struct pg_table {
    struct pg_table *next;
    char *name;
    int ncols;
    struct pg_column *cols;
};

struct pg_conn {
    char *conninfo;
    int statement_timeout_ms;
    PGconn *conn;
    int in_tx;     /* a transaction block was open after the last statement */
    int tx_lost;   /* the connection died inside a transaction not yet ended */
    struct pg_type *types;   /* non-builtin type OIDs seen on this connection */
    size_t ntypes, captypes;
    struct pg_table *tables; /* upsert schema cache for this connection */
};

/* Flags for conn_exec. */
#define EXEC_READ 1          /* may be retried once after a loss mid-statement */
#define EXEC_NO_RECONNECT 2  /* must run on the current connection (COMMIT/ROLLBACK) */
#define EXEC_IGNORE_LOST 4   /* runs even while a lost transaction awaits rollback */

static char CONN_KEY;   /* registry[&CONN_KEY]  = lightuserdata struct pg_conn * */
static char OWNED_KEY;  /* registry[&OWNED_KEY] = box of a connection the state owns */

/* ---------------------------------------------------------------- errors */

static void err_set(struct pg_error *e, enum pg_kind kind, const char *sqlstate,
                    const char *msg)
{
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    snprintf(e->sqlstate, sizeof(e->sqlstate), "%s", sqlstate ? sqlstate : "");
    snprintf(e->msg, sizeof(e->msg), "%s", msg);
}

/* libpq messages end with a newline and may carry a second, hint-like line. */
static void first_line(char *dst, size_t dstlen, const char *src)
{
    size_t n = strcspn(src, "\n");
    if (n >= dstlen)
        n = dstlen - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void copy_field(char *dst, size_t dstlen, const PGresult *res, int field)
{
    const char *v = res ? PQresultErrorField(res, field) : NULL;
    snprintf(dst, dstlen, "%s", v ? v : "");
}

static int sqlstate_is_connection(const char *s)
{
    return strncmp(s, "08", 2) == 0 || strcmp(s, "57P01") == 0 ||
           strcmp(s, "57P02") == 0 || strcmp(s, "57P03") == 0;
}

/* Fills e from a failed result (res may be NULL: the error is the connection's). */
static void err_from_result(struct pg_error *e, PGconn *conn, const PGresult *res)
{
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *pos;
    int dead = conn == NULL || PQstatus(conn) == CONNECTION_BAD;

    memset(e, 0, sizeof(*e));
    if (primary)
        snprintf(e->msg, sizeof(e->msg), "%s", primary);
    else
        first_line(e->msg, sizeof(e->msg),
                   res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res)
                   : conn ? PQerrorMessage(conn) : "no connection");
    if (e->msg[0] == '\0')
        snprintf(e->msg, sizeof(e->msg), "%s", "unknown database error");
    snprintf(e->sqlstate, sizeof(e->sqlstate), "%s", state ? state : dead ? "08006" : "");
    e->kind = dead || sqlstate_is_connection(e->sqlstate) ? PG_KIND_CONNECTION : PG_KIND_QUERY;
    copy_field(e->detail, sizeof(e->detail), res, PG_DIAG_MESSAGE_DETAIL);
    copy_field(e->hint, sizeof(e->hint), res, PG_DIAG_MESSAGE_HINT);
    copy_field(e->constraint, sizeof(e->constraint), res, PG_DIAG_CONSTRAINT_NAME);
    copy_field(e->table, sizeof(e->table), res, PG_DIAG_TABLE_NAME);
    copy_field(e->column, sizeof(e->column), res, PG_DIAG_COLUMN_NAME);
    pos = res ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
    e->position = pos ? atoi(pos) : 0;
}

/* ------------------------------------------------------------ connection */

static void notice_ignore(void *arg, const PGresult *res)
{
    (void)arg;
    (void)res;
}

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

static void schema_forget(struct pg_conn *c)
{
    struct pg_table *t = c->tables, *next;
    for (; t; t = next) {
        next = t->next;
        table_free(t);
    }
    c->tables = NULL;
}

static void conn_drop(struct pg_conn *c)
{
    if (c->conn)
        PQfinish(c->conn);
    c->conn = NULL;
    c->in_tx = 0;
    c->ntypes = 0;  /* type OIDs can change when the server or database does */
    schema_forget(c);
}

/* Opens c->conn. Returns 0, or -1 with e filled (kind connection). */
static int conn_open(struct pg_conn *c, struct pg_error *e)
{
    /* Later keywords win: the caller's conninfo may override the timeout and
    ** application name, never the encoding we parse results with. */
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname",
                          "client_encoding", NULL};
    const char *vals[] = {CONNECT_TIMEOUT, "shelfsync", c->conninfo, "UTF8", NULL};
    char setup[160];
    PGresult *res;

    assert(c->conn == NULL);
    c->conn = PQconnectdbParams(keys, vals, 1);
    if (c->conn == NULL) {
        err_set(e, PG_KIND_CONNECTION, "08001", "out of memory while connecting");
        return -1;
    }
    if (PQstatus(c->conn) != CONNECTION_OK) {
        char line[900];
        first_line(line, sizeof(line), PQerrorMessage(c->conn));
        err_set(e, PG_KIND_CONNECTION, "08001", "");
        snprintf(e->msg, sizeof(e->msg), "cannot connect to the database: %s", line);
        conn_drop(c);
        return -1;
    }
    PQsetNoticeReceiver(c->conn, notice_ignore, NULL);
    snprintf(setup, sizeof(setup),
             "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET statement_timeout = %d",
             c->statement_timeout_ms > 0 ? c->statement_timeout_ms : 0);
    res = PQexec(c->conn, setup);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        err_from_result(e, c->conn, res);
        e->kind = PG_KIND_CONNECTION;
        PQclear(res);
        conn_drop(c);
        return -1;
    }
    PQclear(res);
    c->in_tx = 0;
    return 0;
}

/*
** True when the idle connection is still usable. Reads whatever the server
** sent meanwhile without blocking: a server that shut down or killed the
** session has sent an error and closed the socket, which this notices before
** a statement is sent into a dead socket.
*/
static int conn_alive(struct pg_conn *c)
{
    struct pollfd p;
    PGnotify *n;

    if (c->conn == NULL || PQstatus(c->conn) != CONNECTION_OK)
        return 0;
    p.fd = PQsocket(c->conn);
    p.events = POLLIN;
    p.revents = 0;
    if (p.fd < 0)
        return 0;
    /* A server going down sends an error (which libpq, idle, takes as a notice)
    ** and then closes: the close is only seen by a second read. */
    for (int i = 0; i < 8 && poll(&p, 1, 0) > 0; i++) {
        if (!PQconsumeInput(c->conn) || PQstatus(c->conn) != CONNECTION_OK)
            return 0;
        while ((n = PQnotifies(c->conn)) != NULL)
            PQfreemem(n);
        p.revents = 0;
    }
    return 1;
}

/* The transaction was lost with the connection: remember it until rollback. */
static void lose_tx(struct pg_conn *c, struct pg_error *e, const char *what)
{
    c->tx_lost = 1;
    err_set(e, PG_KIND_CONNECTION, "08006", "");
    snprintf(e->msg, sizeof(e->msg),
             "database connection lost inside a transaction (%.900s); the transaction was rolled back",
             what);
}

/* True when sql is a read by the rule in the contract comment. */
static int sql_is_read(const char *sql)
{
    static const char *const first[] = {"select", "values", "table", "show", "with", NULL};
    static const char *const writes[] = {"insert", "update", "delete", "merge", "copy",
                                         "into", "call", NULL};
    const char *p = sql, *w;
    size_t n;
    int ok = 0;

    for (;;) {  /* skip blanks and comments before the first word */
        while (isspace((unsigned char)*p) || *p == '(')
            p++;
        if (p[0] == '-' && p[1] == '-') {
            p += strcspn(p, "\n");
        } else if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            if (end == NULL)
                return 0;
            p = end + 2;
        } else {
            break;
        }
    }
    for (n = 0; isalpha((unsigned char)p[n]); n++)
        ;
    for (int i = 0; first[i]; i++)
        if (n == strlen(first[i]) && strncasecmp(p, first[i], n) == 0)
            ok = 1;
    if (!ok)
        return 0;
    for (w = sql; *w; ) {
        if (isalpha((unsigned char)*w) || *w == '_') {
            const char *s = w;
            while (isalnum((unsigned char)*w) || *w == '_' || *w == '$')
                w++;
            for (int i = 0; writes[i]; i++)
                if ((size_t)(w - s) == strlen(writes[i]) &&
                    strncasecmp(s, writes[i], (size_t)(w - s)) == 0)
                    return 0;
        } else {
            w++;
        }
    }
    return 1;
}

/*
** Runs one statement (parameters in text, or as formats[] says). Returns the
** successful result (caller PQclears) or NULL with e filled. Handles lazy
** (re)connection, the lost-transaction state and the single retry of reads
** (see the top comment).
*/
static PGresult *conn_execp(struct pg_conn *c, const char *sql, int nparams,
                            const char *const *values, const int *lengths,
                            const int *formats, int flags, struct pg_error *e)
{
    int retried = 0;

    if (c->tx_lost && !(flags & EXEC_IGNORE_LOST)) {
        err_set(e, PG_KIND_CONNECTION, "08006",
                "database connection lost inside a transaction; roll it back first");
        return NULL;
    }
    for (;;) {
        int was_in_tx = c->in_tx;
        PGresult *res;
        ExecStatusType st;

        if (c->conn && !conn_alive(c)) {
            conn_drop(c);
            if (was_in_tx && !c->tx_lost) {
                lose_tx(c, e, "found closed");
                return NULL;
            }
        }
        if (c->conn == NULL) {
            if (flags & EXEC_NO_RECONNECT) {
                err_set(e, PG_KIND_CONNECTION, "08003", "no database connection");
                return NULL;
            }
            if (conn_open(c, e) < 0)
                return NULL;
        }
        res = PQexecParams(c->conn, sql, nparams, NULL, values, lengths, formats, 0);
        st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            c->in_tx = PQtransactionStatus(c->conn) != PQTRANS_IDLE;
            return res;
        }
        err_from_result(e, c->conn, res);
        PQclear(res);
        if (PQstatus(c->conn) != CONNECTION_BAD && e->kind != PG_KIND_CONNECTION) {
            c->in_tx = PQtransactionStatus(c->conn) != PQTRANS_IDLE;
            return NULL;
        }
        conn_drop(c);
        if (was_in_tx) {
            if (!c->tx_lost) {
                char what[sizeof(e->msg)];
                snprintf(what, sizeof(what), "%s", e->msg);
                lose_tx(c, e, what);
            }
            return NULL;
        }
        if (!(flags & EXEC_READ) || retried)
            return NULL;
        retried = 1;
    }
}

/* conn_execp with text parameters. */
static PGresult *conn_exec(struct pg_conn *c, const char *sql, int nparams,
                           const char *const *values, int flags, struct pg_error *e)
{
    return conn_execp(c, sql, nparams, values, NULL, NULL, flags, e);
}

struct pg_conn *pg_conn_new(const char *conninfo, int statement_timeout_ms)
{
    struct pg_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->conninfo = strdup(conninfo ? conninfo : "");
    if (c->conninfo == NULL) {
        free(c);
        return NULL;
    }
    c->statement_timeout_ms = statement_timeout_ms;
    return c;
}

void pg_conn_free(struct pg_conn *c)
{
    if (c == NULL)
        return;
    conn_drop(c);
    free(c->types);
    free(c->conninfo);
    free(c);
}

int pg_conn_ping(struct pg_conn *c, char *err, size_t errlen)
{
    struct pg_error e;
    PGresult *res = conn_exec(c, "SELECT 1", 0, NULL, EXEC_READ | EXEC_IGNORE_LOST, &e);
    if (res == NULL) {
        if (err && errlen)
            snprintf(err, errlen, "%s", e.msg);
        return -1;
    }
    PQclear(res);
    return 0;
}

void pg_conn_reset(struct pg_conn *c)
{
    struct pg_error e;
    PGresult *res;

    c->tx_lost = 0;
    if (!c->in_tx)
        return;
    res = conn_exec(c, "ROLLBACK", 0, NULL, EXEC_NO_RECONNECT, &e);
    PQclear(res);
    c->in_tx = 0;
}

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
static void type_resolve(struct pg_conn *c, Oid oid, struct pg_type *t)
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
    res = conn_exec(c, sql, 1, vals, EXEC_READ | EXEC_NO_RECONNECT, &e);
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

static void push_array_mt(lua_State *L)
{
    if (luaL_getmetatable(L, ARRAY_MT) == LUA_TNIL) {
        lua_pop(L, 1);
        luaL_newmetatable(L, ARRAY_MT);
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

/* A PGresult held by a userdata, so a Lua error while converting cannot leak it. */
static int result_gc(lua_State *L)
{
    PGresult **box = luaL_checkudata(L, 1, RESULT_MT);
    PQclear(*box);
    *box = NULL;
    return 0;
}

static PGresult **result_box(lua_State *L, PGresult *res)
{
    PGresult **box = lua_newuserdatauv(L, sizeof(*box), 0);
    *box = res;
    if (luaL_newmetatable(L, RESULT_MT)) {
        lua_pushcfunction(L, result_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return box;
}

/*
** Pushes res as the rows table. res is owned by a result box already on the
** stack (the caller frees it); the unknown column types are resolved first,
** which may query pg_type on c.
*/
static void push_rows(lua_State *L, struct pg_conn *c, PGresult *res)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    int base = lua_gettop(L), mt, names, rows;
    struct pg_type *types = lua_newuserdatauv(L, sizeof(*types) * (size_t)(ncols + 1), 0);

    for (int j = 0; j < ncols; j++)
        type_resolve(c, PQftype(res, j), &types[j]);
    luaL_checkstack(L, ncols + 8, "too many result columns");
    push_array_mt(L);
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
                const char *v = PQgetvalue(res, i, j);
                size_t n = (size_t)PQgetlength(res, i, j);
                if (types[j].kind == V_ARRAY)
                    push_array(L, v, n, &types[j], mt);
                else
                    push_scalar(L, v, n, types[j].kind);
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

/* Pushes nil, msg, sqlstate, kind[, info]; returns the count. */
static int push_error_info(lua_State *L, const struct pg_error *e, int with_info)
{
    lua_pushnil(L);
    lua_pushstring(L, e->msg);
    if (e->sqlstate[0])
        lua_pushstring(L, e->sqlstate);
    else
        lua_pushnil(L);
    lua_pushstring(L, e->kind == PG_KIND_CONNECTION ? "connection" : "query");
    if (!with_info)
        return 4;
    lua_createtable(L, 0, 6);
#define INFO_FIELD(f)                          \
    if (e->f[0]) {                         \
        lua_pushstring(L, e->f);       \
        lua_setfield(L, -2, #f);       \
    }
    INFO_FIELD(detail)
    INFO_FIELD(hint)
    INFO_FIELD(constraint)
    INFO_FIELD(table)
    INFO_FIELD(column)
#undef INFO_FIELD
    if (e->position > 0) {
        lua_pushinteger(L, e->position);
        lua_setfield(L, -2, "position");
    }
    return 5;
}

static int push_error(lua_State *L, const struct pg_error *e)
{
    return push_error_info(L, e, 1);
}

/* --------------------------------------------------- parameters to text */

/*
** Array literals may be nested inside other quoted text (the batched upsert
** sends each row's array as one element of a text[]), so characters are
** written at a quoting depth: at depth d a backslash becomes 2^d backslashes
** and a double quote (2^d - 1) backslashes and the quote. A COPY sink further
** escapes backslash, tab, newline and carriage return for COPY's text format.
*/
struct sink {
    luaL_Buffer *B;
    int copy;
    int scratch;  /* stack index of SINK_SCRATCH slots pushed before the buffer */
};

/*
** A luaL_Buffer's box must stay on top of the stack (and, in Lua 5.4, is a
** to-be-closed slot that must not move), so a table being written cannot sit
** above it while buffer operations run. Arrays being written are parked in
** slots reserved below the buffer instead: slot 0 for a row's cell, slot k for
** the sub-array at nesting level k.
*/
#define SINK_SCRATCH 8

/* Reserves the scratch slots (before luaL_buffinit); returns the first index. */
static int sink_reserve(lua_State *L)
{
    luaL_checkstack(L, SINK_SCRATCH + 4, "array parameter");
    for (int i = 0; i < SINK_SCRATCH; i++)
        lua_pushnil(L);
    return lua_gettop(L) - SINK_SCRATCH + 1;
}

static void sink_raw(struct sink *s, const char *p, size_t n)
{
    size_t i, run = 0;

    if (!s->copy) {
        luaL_addlstring(s->B, p, n);
        return;
    }
    for (i = 0; i < n; i++) {
        char c = p[i], esc = c == '\\' ? '\\' : c == '\t' ? 't' : c == '\n' ? 'n'
                           : c == '\r' ? 'r' : 0;
        if (!esc)
            continue;
        luaL_addlstring(s->B, p + run, i - run);
        luaL_addchar(s->B, '\\');
        luaL_addchar(s->B, esc);
        run = i + 1;
    }
    luaL_addlstring(s->B, p + run, n - run);
}

static void sink_backslashes(struct sink *s, int count)
{
    static const char bs[] = "\\\\\\\\\\\\\\\\";
    while (count > 0) {
        int k = count > 8 ? 8 : count;
        sink_raw(s, bs, (size_t)k);
        count -= k;
    }
}

static void sink_text(struct sink *s, const char *p, size_t n, int depth)
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

static void sink_quote(struct sink *s, int depth)
{
    sink_text(s, "\"", 1, depth);
}

/* Formats a number as PostgreSQL reads it back exactly. */
static size_t format_number(lua_State *L, int idx, char *buf, size_t len)
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
static int sink_array(lua_State *L, struct sink *s, int idx, int depth, int level,
                      struct pg_error *e)
{
    lua_Integer n;
    char num[64];

    if (level > 6) {
        err_set(e, PG_KIND_QUERY, "54000", "array nested too deeply");
        return -1;
    }
    if (!table_is_array(L, idx, &n)) {
        err_set(e, PG_KIND_QUERY, "22P02",
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
            len = format_number(L, -1, num, sizeof(num));
            lua_pop(L, 1);
            sink_raw(s, num, len);
            break;
        case LUA_TSTRING:
            str = lua_tolstring(L, -1, &len);  /* anchored by the table */
            lua_pop(L, 1);
            if (memchr(str, '\0', len)) {
                err_set(e, PG_KIND_QUERY, "22021", "a string contains a NUL byte");
                return -1;
            }
            sink_quote(s, depth);
            sink_text(s, str, len, depth + 1);
            sink_quote(s, depth);
            break;
        case LUA_TTABLE: {
            int sub = s->scratch + level + 1;
            if (level + 1 >= SINK_SCRATCH) {
                lua_pop(L, 1);
                err_set(e, PG_KIND_QUERY, "54000", "array nested too deeply");
                return -1;
            }
            lua_replace(L, sub);  /* parked below the buffer (see SINK_SCRATCH) */
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
        err_set(e, PG_KIND_QUERY, "22P02", "an array element is not a string, number, boolean, null or array");
        return -1;
    }
    sink_raw(s, "}", 1);
    return 0;
}

/*
** Converts the Lua values at stack slots first..first+n-1 to text parameters.
** values[] point into Lua strings kept on the stack (pushed by this function
** for numbers and arrays). Returns 0, or -1 with e filled. Misuse (a function,
** a coroutine, a foreign userdata) raises.
*/
static int encode_params(lua_State *L, int first, int n, const char **values,
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
            len = format_number(L, idx, num, sizeof(num));
            values[i] = lua_pushlstring(L, num, len);
            break;
        case LUA_TSTRING:
            str = lua_tolstring(L, idx, &len);
            if (memchr(str, '\0', len)) {
                err_set(e, PG_KIND_QUERY, "22021", "");
                snprintf(e->msg, sizeof(e->msg), "parameter $%d contains a NUL byte", i + 1);
                return -1;
            }
            values[i] = str;
            break;
        case LUA_TTABLE: {
            luaL_Buffer B;
            struct sink s = {&B, 0, 0};
            s.scratch = sink_reserve(L);
            luaL_buffinit(L, &B);
            if (sink_array(L, &s, idx, 0, 0, e) < 0) {
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

/* ------------------------------------------------------------ Lua API */

static struct pg_conn *check_conn(lua_State *L)
{
    struct pg_conn *c;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &CONN_KEY);
    c = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (c == NULL)
        luaL_error(L, "host.pg: no database connection (call host.pg.connect first)");
    return c;
}

static int conn_box_gc(lua_State *L)
{
    struct pg_conn **box = luaL_checkudata(L, 1, CONN_MT);
    pg_conn_free(*box);
    *box = NULL;
    return 0;
}

void pg_attach(lua_State *L, struct pg_conn *c)
{
    lua_pushlightuserdata(L, c);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CONN_KEY);
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &OWNED_KEY);
}

/* host.pg.connect(conninfo[, statement_timeout_ms]) */
static int l_connect(lua_State *L)
{
    const char *conninfo = luaL_checkstring(L, 1);
    int timeout = (int)luaL_optinteger(L, 2, 0);
    struct pg_conn **box;
    struct pg_error e;

    lua_rawgetp(L, LUA_REGISTRYINDEX, &CONN_KEY);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &OWNED_KEY);
    if (lua_touserdata(L, -2) != NULL && lua_isnil(L, -1))
        return luaL_error(L, "host.pg.connect: this state's connection is managed by the host");
    lua_pop(L, 2);

    box = lua_newuserdatauv(L, sizeof(*box), 0);
    *box = NULL;
    if (luaL_newmetatable(L, CONN_MT)) {
        lua_pushcfunction(L, conn_box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    *box = pg_conn_new(conninfo, timeout);
    if (*box == NULL)
        return luaL_error(L, "host.pg.connect: out of memory");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &OWNED_KEY);  /* the previous one is collected */
    lua_pushlightuserdata(L, *box);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CONN_KEY);
    if (conn_open(*box, &e) < 0)
        return push_error_info(L, &e, 0);  /* no info table for connect */
    lua_pushboolean(L, 1);
    return 1;
}

/* Runs sql with the params at stack slots first..top; pushes rows or the error. */
static int run_query(lua_State *L, struct pg_conn *c, const char *sql, int first, int flags)
{
    int n = lua_gettop(L) - first + 1;
    const char **values;
    struct pg_error e;
    PGresult *res;

    if (n < 0)
        n = 0;
    luaL_argcheck(L, n <= MAX_PARAMS, first, "too many parameters");
    values = lua_newuserdatauv(L, sizeof(*values) * (size_t)(n + 1), 0);
    if (encode_params(L, first, n, values, &e) < 0)
        return push_error(L, &e);
    if (sql_is_read(sql))
        flags |= EXEC_READ;
    res = conn_exec(c, sql, n, values, flags, &e);
    if (res == NULL)
        return push_error(L, &e);
    result_box(L, res);
    push_rows(L, c, res);
    PQclear(res);
    *(PGresult **)lua_touserdata(L, -2) = NULL;
    return 1;
}

/* host.pg.query(sql, ...) */
static int l_query(lua_State *L)
{
    struct pg_conn *c = check_conn(L);
    const char *sql = luaL_checkstring(L, 1);
    return run_query(L, c, sql, 2, 0);
}

/* host.pg.ping() -> true | nil, msg */
static int l_ping(lua_State *L)
{
    struct pg_conn *c = check_conn(L);
    char err[512];
    if (pg_conn_ping(c, err, sizeof(err)) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* host.pg.in_tx() -> true while a transaction is open (or lost and not rolled back) */
static int l_in_tx(lua_State *L)
{
    struct pg_conn *c = check_conn(L);
    lua_pushboolean(L, c->in_tx || c->tx_lost);
    return 1;
}

static int simple_cmd(lua_State *L, struct pg_conn *c, const char *sql, int flags)
{
    struct pg_error e;
    PGresult *res = conn_exec(c, sql, 0, NULL, flags, &e);
    if (res == NULL)
        return push_error_info(L, &e, 0);
    PQclear(res);
    lua_pushboolean(L, 1);
    return 1;
}

/* host.pg.begin() */
static int l_begin(lua_State *L)
{
    struct pg_conn *c = check_conn(L);
    struct pg_error e;
    if (c->in_tx || c->tx_lost) {
        err_set(&e, PG_KIND_QUERY, "25001", "a transaction is already open");
        return push_error_info(L, &e, 0);
    }
    /* BEGIN has no effect of its own, so it may run on a fresh connection. */
    return simple_cmd(L, c, "BEGIN", EXEC_READ);
}

/* host.pg.commit(): never runs on a new connection; a lost or failed transaction is reported. */
static int l_commit(lua_State *L)
{
    struct pg_conn *c = check_conn(L);
    struct pg_error e;
    int n;

    if (c->tx_lost) {
        c->tx_lost = 0;
        err_set(&e, PG_KIND_CONNECTION, "08006",
                "database connection lost inside the transaction; nothing was committed");
        return push_error_info(L, &e, 0);
    }
    if (!c->in_tx) {
        err_set(&e, PG_KIND_QUERY, "25P01", "no transaction is open");
        return push_error_info(L, &e, 0);
    }
    if (c->conn && PQtransactionStatus(c->conn) == PQTRANS_INERROR) {
        /* COMMIT would silently roll back: say so instead of returning true. */
        PQclear(conn_exec(c, "ROLLBACK", 0, NULL, EXEC_NO_RECONNECT, &e));
        c->in_tx = 0;
        c->tx_lost = 0;
        err_set(&e, PG_KIND_QUERY, "25P02",
                "the transaction had failed and was rolled back");
        return push_error_info(L, &e, 0);
    }
    n = simple_cmd(L, c, "COMMIT", EXEC_NO_RECONNECT);
    if (c->tx_lost) {  /* lost while committing: the outcome is unknown */
        c->tx_lost = 0;
        lua_pop(L, n);
        err_set(&e, PG_KIND_CONNECTION, "08007",
                "database connection lost during COMMIT; the outcome is unknown");
        return push_error_info(L, &e, 0);
    }
    return n;
}

/* host.pg.rollback(): ends the transaction whatever state it is in. */
static int l_rollback(lua_State *L)
{
    struct pg_conn *c = check_conn(L);
    struct pg_error e;
    PGresult *res;

    if (c->tx_lost || !c->in_tx) {
        c->tx_lost = 0;
        lua_pushboolean(L, 1);
        return 1;
    }
    res = conn_exec(c, "ROLLBACK", 0, NULL, EXEC_NO_RECONNECT, &e);
    c->tx_lost = 0;  /* a connection lost during ROLLBACK rolled back anyway */
    if (res == NULL && e.kind != PG_KIND_CONNECTION)
        return push_error_info(L, &e, 0);
    PQclear(res);
    lua_pushboolean(L, 1);
    return 1;
}

/* ------------------------------------------------------ batched upsert */

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
    res = conn_exec(c, sql, 1, vals, EXEC_READ, e);
    if (res == NULL)
        return NULL;
    n = PQntuples(res);
    if (n == 0) {
        PQclear(res);
        err_set(e, PG_KIND_QUERY, "42P01", "");
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
    err_set(e, PG_KIND_QUERY, "53200", "out of memory");
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
    int use_copy;
    int rows;                      /* stack index of spec.rows */
    int names;                     /* stack index of the first pushed column name */
    lua_Integer nrows;
    lua_Integer nuniq;             /* rows sent: one per distinct key */
    lua_Integer *order;            /* [nuniq] row numbers sent, in key order */
    lua_Integer *slot;             /* [nrows] index into order[] answering each row */
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
    lua_getfield(L, 1, "method");
    if (!lua_isnil(L, -1)) {
        const char *m = lua_tostring(L, -1);
        if (m && strcmp(m, "copy") == 0)
            u->use_copy = 1;
        else if (m == NULL || strcmp(m, "unnest") != 0)
            return luaL_error(L, "upsert: spec.method must be \"unnest\" or \"copy\"");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "rows") != LUA_TTABLE)
        return luaL_error(L, "upsert: spec.rows must be a list of row tables");
    u->rows = lua_gettop(L);
    u->nrows = (lua_Integer)lua_rawlen(L, u->rows);
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
static int get_cell(lua_State *L, const struct upsert *u, lua_Integer r, int pos)
{
    int t;
    if (lua_rawgeti(L, u->rows, r) != LUA_TTABLE)
        luaL_error(L, "upsert: spec.rows[%d] is not a table", (int)r);
    lua_pushvalue(L, u->names + pos);
    t = lua_gettable(L, -2);  /* honours __index, like any Lua reader would */
    lua_remove(L, -2);
    return t;
}

/* Pushes row r's key as a string (see above). -1 with e filled for a table key. */
static int push_row_key(lua_State *L, const struct upsert *u, lua_Integer r, struct pg_error *e)
{
    luaL_Buffer B;
    char num[80];

    if (u->nkey == 1 && get_cell(L, u, r, u->key[0]) == LUA_TSTRING)
        return 0;  /* the common case: the string is its own key */
    if (u->nkey == 1)
        lua_pop(L, 1);
    luaL_buffinit(L, &B);
    luaL_addchar(&B, '\0');  /* no real string key starts with NUL (they are refused) */
    for (int k = 0; k < u->nkey; k++) {
        int t = get_cell(L, u, r, u->key[k]);
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
            snprintf(num, sizeof(num), "n%lld;", (long long)r);
            luaL_addstring(&B, num);
            break;
        default:
            lua_pop(L, 1);
            err_set(e, PG_KIND_QUERY, "22P02", "");
            snprintf(e->msg, sizeof(e->msg), "upsert: rows[%lld].%.63s: a key must be a scalar",
                     (long long)r, colname(u, u->key[k]));
            return -1;
        }
    }
    luaL_pushresult(&B);
    return 0;
}

/* Fills u->order, u->slot and u->nuniq; the arrays are userdata left on the stack. */
static int upsert_dedupe(lua_State *L, struct upsert *u, struct pg_error *e)
{
    lua_Integer n = u->nrows, nu = 0;
    struct ukey *uk;
    int keys, seen;

    lua_createtable(L, (int)n, 0);
    keys = lua_gettop(L);
    lua_createtable(L, 0, (int)n);
    seen = lua_gettop(L);
    for (lua_Integer r = 1; r <= n; r++) {
        if (push_row_key(L, u, r, e) < 0)
            return -1;
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, r);
        lua_pushinteger(L, r);
        lua_rawset(L, seen);       /* the last row of a key wins */
    }
    uk = lua_newuserdatauv(L, sizeof(*uk) * (size_t)n, 0);
    u->slot = lua_newuserdatauv(L, sizeof(*u->slot) * (size_t)n, 0);
    u->order = lua_newuserdatauv(L, sizeof(*u->order) * (size_t)n, 0);
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
        u->order[j] = uk[j].row;
        lua_rawgeti(L, keys, uk[j].row);
        lua_pushinteger(L, j);
        lua_rawset(L, seen);       /* now: key -> position in order[] */
    }
    for (lua_Integer r = 1; r <= n; r++) {
        lua_rawgeti(L, keys, r);
        lua_rawget(L, seen);
        u->slot[r - 1] = lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    u->nuniq = nu;
    return 0;
}

/* ------------------------------------------------------- the statement */

static void add_fmt(luaL_Buffer *B, const char *fmt, int n)
{
    char tmp[64];
    snprintf(tmp, sizeof(tmp), fmt, n);
    luaL_addstring(B, tmp);
}

static void add_col_list(luaL_Buffer *B, const struct upsert *u, const char *prefix)
{
    for (int i = 0; i < u->ncols; i++) {
        if (i)
            luaL_addstring(B, ", ");
        luaL_addstring(B, prefix);
        add_ident(B, colname(u, i));
    }
}

/* The key columns of the input row `i`: typed columns of the COPY table, or casts. */
static void add_input_key(luaL_Buffer *B, const struct upsert *u, int k)
{
    if (u->use_copy) {
        luaL_addstring(B, "i.");
        add_ident(B, colname(u, u->key[k]));
    } else {
        add_fmt(B, "i.ss_k%d::", k + 1);
        luaL_addstring(B, u->t->cols[u->cols[u->key[k]]].type);
    }
}

/*
** Pushes the statement. Rows come from unnest($1::text[], ...) of the binary
** text[] parameters, one per column, cast to the column types, or from the
** COPY temp table. The answer has one row per row sent, in order: the
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
    add_col_list(&B, u, "");
    luaL_addstring(&B, ") SELECT ");
    if (u->use_copy) {
        add_col_list(&B, u, "");
        luaL_addstring(&B, " FROM pg_temp.ss_upsert");
    } else {
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
    }
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
    luaL_addstring(&B, "r.ss_inserted FROM ");
    if (u->use_copy) {
        luaL_addstring(&B, "pg_temp.ss_upsert i");
    } else {
        luaL_addstring(&B, "unnest(");
        for (int k = 0; k < u->nkey; k++)
            add_fmt(&B, k ? ", $%d::text[]" : "$%d::text[]", u->key[k] + 1);
        luaL_addstring(&B, ") WITH ORDINALITY AS i(");
        for (int k = 0; k < u->nkey; k++)
            add_fmt(&B, "ss_k%d, ", k + 1);
        luaL_addstring(&B, "ss_ord)");
    }
    luaL_addstring(&B, " LEFT JOIN upserted r ON ");
    for (int k = 0; k < u->nkey; k++) {
        add_fmt(&B, k ? " AND r.ss_k%d = " : "r.ss_k%d = ", k + 1);
        add_input_key(&B, u, k);
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
** Writes row r's value of cols[pos] into s: as an element of a binary text[]
** (int32 length, -1 for NULL, then the bytes) or, for a COPY sink, as a COPY
** text field (\N for NULL). An array column's value is its array literal.
** Returns 0, or -1 with e filled for a value of the wrong shape.
*/
static int put_cell(lua_State *L, struct sink *s, const struct upsert *u, lua_Integer r,
                    int pos, int binary, int *has_null, struct pg_error *e)
{
    const struct pg_column *col = &u->t->cols[u->cols[pos]];
    int t = get_cell(L, u, r, pos);
    char num[64];
    size_t len = 0;
    const char *str = NULL;

    if (t == LUA_TNIL || (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL)) {
        lua_pop(L, 1);
        if (binary) {
            buf_int32(s->B, 0xFFFFFFFFu);
            *has_null = 1;
        } else {
            luaL_addstring(s->B, "\\N");
        }
        return 0;
    }
    if (col->is_array != (t == LUA_TTABLE)) {
        lua_pop(L, 1);
        err_set(e, PG_KIND_QUERY, "22P02", "");
        snprintf(e->msg, sizeof(e->msg), "upsert: rows[%lld].%.63s must be %s", (long long)r,
                 col->name, col->is_array ? "an array table or null" : "a scalar or null");
        return -1;
    }
    switch (t) {
    case LUA_TBOOLEAN:
        str = lua_toboolean(L, -1) ? "t" : "f";
        len = 1;
        break;
    case LUA_TNUMBER:
        len = format_number(L, -1, num, sizeof(num));
        str = num;
        break;
    case LUA_TSTRING:
        str = lua_tolstring(L, -1, &len);  /* anchored by the row table */
        if (memchr(str, '\0', len)) {
            lua_pop(L, 1);
            err_set(e, PG_KIND_QUERY, "22021", "");
            snprintf(e->msg, sizeof(e->msg), "upsert: rows[%lld].%.63s contains a NUL byte",
                     (long long)r, col->name);
            return -1;
        }
        break;
    case LUA_TTABLE: {
        size_t at = luaL_bufflen(s->B);
        lua_replace(L, s->scratch);  /* parked below the buffer (see SINK_SCRATCH) */
        if (binary)
            buf_int32(s->B, 0);      /* the length, patched below */
        if (sink_array(L, s, s->scratch, 0, 0, e) < 0) {
            char m[sizeof(e->msg)];
            snprintf(m, sizeof(m), "%s", e->msg);
            snprintf(e->msg, sizeof(e->msg), "upsert: rows[%lld].%.63s: %.900s", (long long)r,
                     col->name, m);
            return -1;
        }
        if (binary)
            buf_patch32(s->B, at, (uint32_t)(luaL_bufflen(s->B) - at - 4));
        return 0;
    }
    default:
        lua_pop(L, 1);
        err_set(e, PG_KIND_QUERY, "22P02", "");
        snprintf(e->msg, sizeof(e->msg), "upsert: rows[%lld].%.63s has an unsupported type (%s)",
                 (long long)r, col->name, lua_typename(L, t));
        return -1;
    }
    lua_pop(L, 1);  /* str stays valid: anchored by the row table, or in num */
    if (binary) {
        buf_int32(s->B, (uint32_t)len);
        luaL_addlstring(s->B, str, len);
    } else {
        sink_raw(s, str, len);
    }
    return 0;
}

/*
** Pushes one binary text[] parameter per listed column (positions into
** cols[]), holding the rows listed in which[] (row numbers). values[j] and
** lengths[j] point at the pushed strings.
*/
static int push_column_params(lua_State *L, const struct upsert *u, const int *positions,
                              int npos, const lua_Integer *which, lua_Integer count,
                              const char **values, int *lengths, struct pg_error *e)
{
    int scratch;

    luaL_checkstack(L, npos + 8, "upsert columns");
    scratch = sink_reserve(L);
    for (int j = 0; j < npos; j++) {
        luaL_Buffer B;
        struct sink s = {&B, 0, scratch};
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
            if (put_cell(L, &s, u, which[i], positions[j], 1, &has_null, e) < 0)
                return -1;
        if (has_null)
            buf_patch32(&B, 4, 1);
        luaL_pushresult(&B);
        values[j] = lua_tolstring(L, -1, &len);
        if (len > INT32_MAX) {
            err_set(e, PG_KIND_QUERY, "54000", "upsert: a column's values exceed 2 GiB");
            return -1;
        }
        lengths[j] = (int)len;
    }
    return 0;
}

/* Pushes the COPY text-format data of the rows sent: ss_ord, then the columns. */
static int push_copy_data(lua_State *L, const struct upsert *u, struct pg_error *e)
{
    luaL_Buffer B;
    struct sink s = {&B, 1, 0};
    char num[32];
    int unused;

    s.scratch = sink_reserve(L);
    luaL_buffinit(L, &B);
    for (lua_Integer j = 0; j < u->nuniq; j++) {
        int n = snprintf(num, sizeof(num), "%lld", (long long)(j + 1));
        luaL_addlstring(&B, num, (size_t)n);
        for (int c = 0; c < u->ncols; c++) {
            luaL_addchar(&B, '\t');
            if (put_cell(L, &s, u, u->order[j], c, 0, &unused, e) < 0)
                return -1;
        }
        luaL_addchar(&B, '\n');
    }
    luaL_pushresult(&B);
    lua_replace(L, s.scratch);    /* the data takes the scratch slots' place */
    lua_settop(L, s.scratch);
    return 0;
}

/* COPY path: a temp table filled by COPY FROM STDIN, in the caller's transaction. */
static int copy_input(lua_State *L, struct pg_conn *c, const struct upsert *u, struct pg_error *e)
{
    luaL_Buffer B;
    PGresult *res;
    const char *data;
    size_t len;
    int ok;

    luaL_buffinit(L, &B);
    luaL_addstring(&B, "DROP TABLE IF EXISTS pg_temp.ss_upsert; "
                       "CREATE TEMP TABLE ss_upsert (ss_ord int8");
    for (int i = 0; i < u->ncols; i++) {
        luaL_addstring(&B, ", ");
        add_ident(&B, colname(u, i));
        luaL_addchar(&B, ' ');
        luaL_addstring(&B, u->t->cols[u->cols[i]].type);
    }
    luaL_addstring(&B, ") ON COMMIT DROP");
    luaL_pushresult(&B);
    /* PQexec (simple protocol) for the two statements; the connection was just
    ** used by BEGIN, so it is alive. */
    res = PQexec(c->conn, lua_tostring(L, -1));
    lua_pop(L, 1);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        err_from_result(e, c->conn, res);
        PQclear(res);
        return -1;
    }
    PQclear(res);
    if (push_copy_data(L, u, e) < 0)
        return -1;
    data = lua_tolstring(L, -1, &len);
    res = PQexec(c->conn, "COPY pg_temp.ss_upsert FROM STDIN");
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        err_from_result(e, c->conn, res);
        PQclear(res);
        lua_pop(L, 1);
        return -1;
    }
    PQclear(res);
    ok = len <= INT32_MAX && PQputCopyData(c->conn, data, (int)len) == 1;
    ok = PQputCopyEnd(c->conn, ok ? NULL : "client error") == 1 && ok;
    lua_pop(L, 1);
    res = PQgetResult(c->conn);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        ok = 0;
    if (!ok)
        err_from_result(e, c->conn, res);
    PQclear(res);
    while ((res = PQgetResult(c->conn)) != NULL)
        PQclear(res);
    return ok ? 0 : -1;
}

/* Sets the returning columns of row i of res (from column `first` on) into the table on top. */
static void set_returning(lua_State *L, const struct upsert *u, PGresult *res, int i, int first,
                          const struct pg_type *types, int mt)
{
    for (int k = 0; k < u->nret; k++) {
        if (PQgetisnull(res, i, first + k)) {
            lua_pushlightuserdata(L, NULL);
        } else {
            const char *v = PQgetvalue(res, i, first + k);
            size_t n = (size_t)PQgetlength(res, i, first + k);
            if (types[k].kind == V_ARRAY)
                push_array(L, v, n, &types[k], mt);
            else
                push_scalar(L, v, n, types[k].kind);
        }
        lua_setfield(L, -2, u->t->cols[u->ret[k]].name);
    }
}

/*
** The rows left alone by the upsert (unchanged, or DO NOTHING, or inserted by
** another transaction after the statement's snapshot): a new statement looks
** their returning columns up by key. missing[] holds positions in u->order;
** the answers are the tables ans[position + 1].
*/
static int upsert_fill_missing(lua_State *L, struct pg_conn *c, const struct upsert *u,
                               const lua_Integer *missing, lua_Integer nmissing, int ans,
                               int mt, struct pg_error *e)
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
        rows[m] = u->order[missing[m]];
    for (int k = 0; k < u->nkey; k++)
        formats[k] = 1;
    if (push_column_params(L, u, u->key, u->nkey, rows, nmissing, values, lengths, e) < 0)
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
    res = conn_execp(c, lua_tostring(L, -1), u->nkey, values, lengths, formats,
                     EXEC_NO_RECONNECT, e);
    if (res == NULL) {
        lua_settop(L, top);
        return -1;
    }
    result_box(L, res);
    box = lua_gettop(L);
    for (int k = 0; k < u->nret; k++)
        type_resolve(c, PQftype(res, k + 1), &types[k]);
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

/*
** host.pg.upsert(spec) -> results | nil, msg, sqlstate, kind, info
**
** spec = {table = "title_catalog", key = {"asin"}, columns = {...},
**         rows = {{asin = ..., ...}, ...}, update = {...}, only_changed = true,
**         keep_on_null = {...}, returning = {"id"}, method = "unnest"|"copy"}
**
** One statement for all rows: the rows travel as one binary text[] parameter
** per column (an array column's values as array literals), unnested, cast to
** the column types and inserted with ON CONFLICT (key) DO UPDATE SET the
** `update` columns (default: every non-key column; an empty list means DO
** NOTHING), with COALESCE(new, old) for keep_on_null columns and, with
** only_changed, a WHERE that skips rows whose updated columns would not
** change. Rows sharing a key are sent once, the last one winning, in key
** order (see upsert_dedupe). Rows the statement left alone get their
** returning columns from a second statement. Table and column names are
** checked against the catalog (cached per connection); values never become
** SQL text.
**
** results[i] answers rows[i]: {<returning columns, default id>, inserted =
** true when the row was created, changed = true when it was created or
** rewritten}; rows that share a key share one answer table. method "copy"
** loads the rows with COPY into a temp table and merges from there
** (bench/RESULTS.md compares the two). Runs inside the caller's transaction
** if one is open; misuse of the spec raises.
*/
static int l_upsert(lua_State *L)
{
    struct pg_conn *c = check_conn(L);
    struct upsert u;
    struct pg_error e, e2;
    PGresult *res = NULL;
    lua_Integer *missing, nmissing = 0;
    int out, ans, box, mt, own_tx = 0, sqlidx;
    struct pg_type *types;

    lua_settop(L, 1);
    if (upsert_parse(L, c, &u, &e) < 0)
        return push_error(L, &e);
    push_array_mt(L);
    mt = lua_gettop(L);
    if (u.nrows == 0) {
        lua_newtable(L);
        lua_pushvalue(L, mt);
        lua_setmetatable(L, -2);
        return 1;
    }
    if (upsert_dedupe(L, &u, &e) < 0)
        return push_error(L, &e);
    push_upsert_sql(L, &u);
    sqlidx = lua_gettop(L);
    if (u.use_copy) {
        if (!c->in_tx && !c->tx_lost) {
            PGresult *b = conn_exec(c, "BEGIN", 0, NULL, EXEC_READ, &e);
            if (b == NULL)
                return push_error(L, &e);
            PQclear(b);
            own_tx = 1;
        }
        if (c->tx_lost || c->conn == NULL) {
            err_set(&e, PG_KIND_CONNECTION, "08006",
                    "database connection lost inside a transaction; roll it back first");
            goto fail;
        }
        if (copy_input(L, c, &u, &e) < 0)
            goto fail;
        res = conn_exec(c, lua_tostring(L, sqlidx), 0, NULL, EXEC_NO_RECONNECT, &e);
    } else {
        const char **values = lua_newuserdatauv(L, sizeof(*values) * (size_t)u.ncols, 0);
        int *lengths = lua_newuserdatauv(L, sizeof(*lengths) * (size_t)u.ncols, 0);
        int *formats = lua_newuserdatauv(L, sizeof(*formats) * (size_t)u.ncols, 0);
        int positions[UPSERT_MAX_COLS];
        for (int i = 0; i < u.ncols; i++) {
            positions[i] = i;
            formats[i] = 1;
        }
        if (push_column_params(L, &u, positions, u.ncols, u.order, u.nuniq, values, lengths,
                               &e) < 0)
            return push_error(L, &e);
        res = conn_execp(c, lua_tostring(L, sqlidx), u.ncols, values, lengths, formats, 0, &e);
    }
    if (res == NULL)
        goto fail;
    result_box(L, res);
    box = lua_gettop(L);
    if (PQntuples(res) != u.nuniq || PQnfields(res) != u.nret + 1) {
        err_set(&e, PG_KIND_QUERY, "XX000", "upsert: unexpected result shape");
        goto fail;
    }
    types = lua_newuserdatauv(L, sizeof(*types) * (size_t)u.nret, 0);
    missing = lua_newuserdatauv(L, sizeof(*missing) * (size_t)u.nuniq, 0);
    for (int k = 0; k < u.nret; k++)
        type_resolve(c, PQftype(res, k), &types[k]);
    lua_createtable(L, (int)u.nuniq, 0);
    ans = lua_gettop(L);
    for (int j = 0; j < (int)u.nuniq; j++) {
        int left_alone = PQgetisnull(res, j, u.nret);
        lua_createtable(L, 0, u.nret + 2);
        set_returning(L, &u, res, j, 0, types, mt);
        lua_pushboolean(L, !left_alone && PQgetvalue(res, j, u.nret)[0] == 't');
        lua_setfield(L, -2, "inserted");
        lua_pushboolean(L, !left_alone);
        lua_setfield(L, -2, "changed");
        lua_rawseti(L, ans, j + 1);
        if (left_alone)
            missing[nmissing++] = j;
    }
    PQclear(res);
    *(PGresult **)lua_touserdata(L, box) = NULL;
    if (nmissing > 0 && upsert_fill_missing(L, c, &u, missing, nmissing, ans, mt, &e) < 0)
        goto fail;
    if (own_tx) {
        PGresult *cm = conn_exec(c, "COMMIT", 0, NULL, EXEC_NO_RECONNECT, &e);
        c->tx_lost = 0;
        if (cm == NULL)
            return push_error(L, &e);
        PQclear(cm);
    }
    lua_createtable(L, (int)u.nrows, 0);
    out = lua_gettop(L);
    lua_pushvalue(L, mt);
    lua_setmetatable(L, out);
    for (lua_Integer r = 0; r < u.nrows; r++) {
        lua_rawgeti(L, ans, u.slot[r] + 1);
        lua_rawseti(L, out, r + 1);
    }
    return 1;
fail:
    if (e.kind == PG_KIND_QUERY && strncmp(e.sqlstate, "42", 2) == 0)
        schema_forget_table(c, u.table);  /* the schema may have changed under the cache */
    if (own_tx) {
        PQclear(conn_exec(c, "ROLLBACK", 0, NULL, EXEC_NO_RECONNECT | EXEC_IGNORE_LOST, &e2));
        c->tx_lost = 0;
    }
    return push_error(L, &e);
}

/* ---------------------------------------------------------------- open */

static const luaL_Reg pg_funcs[] = {
    {"connect", l_connect},
    {"query", l_query},
    {"upsert", l_upsert},
    {"ping", l_ping},
    {"in_tx", l_in_tx},
    {"begin", l_begin},
    {"commit", l_commit},
    {"rollback", l_rollback},
    {NULL, NULL},
};

int pg_luaopen(lua_State *L)
{
    push_array_mt(L);  /* make sure it exists in states built without host_open */
    lua_pop(L, 1);
    luaL_newlib(L, pg_funcs);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
