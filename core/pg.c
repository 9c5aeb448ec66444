/*
** pg.c: host.pg, the libpq binding.
**
** Lua contract (every function works on the state's connection: the one the
** worker attached with pg_attach, or the one host.pg.connect opened):
**
**   host.pg.connect(conninfo[, statement_timeout_ms[, statement_cache]]) -> true | nil, err
**       Only in a state without an attached connection (specs, CLI tools). The
**       connection then belongs to the state (closed when the state is).
**       statement_cache: prepared statements kept (default 256; 0: none, see below).
**   host.pg.query(sql, ...) -> rows | nil, err
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
**       "shelfsync.array".
**   host.pg.upsert(spec) -> results | nil, err
**       The batched upsert, see pg_upsert.c.
**   host.pg.begin() / commit() / rollback() -> true | nil, err
**   host.pg.in_tx() -> boolean       host.pg.ping() -> true | nil, msg
**   host.pg.null                      the NULL value
**
**   err, a failure as data: {message =, sqlstate = (when known), kind =
**   "connection" (the database is unreachable or the connection died) or
**   "query", and detail, hint, constraint, table, column, position where the
**   server said so}; tostring(err) is "database error: <message> (SQLSTATE
**   <sqlstate>)". Never send detail to a client: it quotes row values.
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
** Prepared statements. A statement host.pg.query or upsert runs (one the server
** plans: SELECT, INSERT, UPDATE, DELETE, WITH, VALUES, TABLE, MERGE) is prepared on
** its second use on a connection and then only bound and executed: see pg_stmt.c for
** the cache (bounded, least recently used evicted) and run_statement for how a
** statement the session lost or whose result type changed is handled. A statement
** whose parameters exceed 8 KiB (arrays of thousands of keys) runs unnamed, planned for
** its values (params_are_large). Off with a
** statement cache of 0: the one setting that works behind a transaction-mode pooler,
** which may run each statement on another server session.
**
** Every session is set to TimeZone UTC and DateStyle ISO; pg_value.c reads
** the text forms (offsets applied to timestamps). Text results were chosen
** over binary ones: numeric and arrays read simply and exactly from text, and
** the conversion cost is small next to the round trip.
*/
#define _POSIX_C_SOURCE 200809L

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "pg_private.h"

#define CONN_MT "shelfsync.pg.conn"
/* Client-side deadlines, so that a database that stops answering (a frozen host, a
** partition) costs a request a bounded wait and a 503, never a worker: connecting is
** bounded by connect_timeout (libpq's floor is 2 s), a dead TCP peer is noticed by
** keepalives and tcp_user_timeout, and every statement by the statement timeout itself,
** enforced here (see wait_result), not only by the server. */
#define CONNECT_TIMEOUT "3"
#define TCP_USER_TIMEOUT_MS "10000"
/* The client's deadline is the statement timeout plus this: a live server cancels first
** (a query error, as before), only a server that does not answer at all meets it. */
#define DEADLINE_GRACE_MS 1000
/* Cancels sent for statements past their deadline, each from its own thread (PQcancel
** blocks until the server answers, which a frozen server never does); past this many
** still waiting, no more are sent: the dropped connection ends the statement anyway. */
#define MAX_PENDING_CANCELS 8
#define MAX_PARAMS 65535
/* Parameters of more bytes than this make a statement run unnamed (params_are_large). */
#define PG_STMT_MAX_PARAM_BYTES 8192

static char CONN_KEY;   /* registry[&CONN_KEY]  = lightuserdata struct pg_conn * */
static char OWNED_KEY;  /* registry[&OWNED_KEY] = box of a connection the state owns */

/* ---------------------------------------------------------------- errors */

void pg_err_set(struct pg_error *e, enum pg_kind kind, const char *sqlstate, const char *msg)
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

/* tostring(err): reads like the message database errors always logged. */
static int error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "sqlstate");
    if (lua_isstring(L, -1))
        lua_pushfstring(L, "database error: %s (SQLSTATE %s)", lua_tostring(L, -2),
                        lua_tostring(L, -1));
    else
        lua_pushfstring(L, "database error: %s", luaL_optstring(L, -2, "?"));
    return 1;
}

static void set_string(lua_State *L, const char *key, const char *value)
{
    if (value[0] == '\0')
        return;
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

int pg_push_error(lua_State *L, const struct pg_error *e)
{
    lua_pushnil(L);
    lua_createtable(L, 0, 9);
    set_string(L, "message", e->msg);
    set_string(L, "sqlstate", e->sqlstate);
    set_string(L, "kind", e->kind == PG_KIND_CONNECTION ? "connection" : "query");
    set_string(L, "detail", e->detail);
    set_string(L, "hint", e->hint);
    set_string(L, "constraint", e->constraint);
    set_string(L, "table", e->table);
    set_string(L, "column", e->column);
    if (e->position > 0) {
        lua_pushinteger(L, e->position);
        lua_setfield(L, -2, "position");
    }
    if (luaL_newmetatable(L, PG_ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
    return 2;
}

/* ------------------------------------------------------------ connection */

static void notice_ignore(void *arg, const PGresult *res)
{
    (void)arg;
    (void)res;
}


static void conn_drop(struct pg_conn *c)
{
    if (c->conn)
        PQfinish(c->conn);
    c->conn = NULL;
    c->in_tx = 0;
    c->inflight = 0;
    c->ntypes = 0;  /* type OIDs can change when the server or database does */
    pg_schema_forget(c);
    pg_stmt_forget(c); /* a new session has no prepared statements */
}

static atomic_int pending_cancels;

static void *cancel_thread(void *arg)
{
    char buf[256];
    PQcancel(arg, buf, sizeof buf);
    PQfreeCancel(arg);
    atomic_fetch_sub(&pending_cancels, 1);
    return NULL;
}

/* Asks the server to cancel c's statement without waiting for the answer. */
static void cancel_async(struct pg_conn *c)
{
    PGcancel *cancel = PQgetCancel(c->conn);
    pthread_t t;
    pthread_attr_t attr;
    if (!cancel)
        return;
    if (atomic_fetch_add(&pending_cancels, 1) >= MAX_PENDING_CANCELS) {
        atomic_fetch_sub(&pending_cancels, 1);
        PQfreeCancel(cancel);
        return;
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, cancel_thread, cancel) != 0) {
        atomic_fetch_sub(&pending_cancels, 1);
        PQfreeCancel(cancel);
    }
    pthread_attr_destroy(&attr);
}

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for the socket until the deadline (-1: none). 0 when ready, -1 on timeout. */
static int wait_socket(PGconn *conn, short events, long deadline)
{
    struct pollfd p = {.fd = PQsocket(conn), .events = events};
    for (;;) {
        long left = deadline < 0 ? -1 : deadline - mono_ms();
        if (deadline >= 0 && left <= 0)
            return -1;
        int n = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
        if (n > 0 || (n < 0 && errno != EINTR))
            return 0; /* ready, or an error libpq will report */
        if (n == 0)
            return -1;
    }
}

/*
** The result of the statement just sent, within the statement timeout plus
** DEADLINE_GRACE_MS (measured here, so a server that stopped answering is caught too).
** Like PQexec: the last result, or NULL. Past the deadline the statement is cancelled, the
** connection dropped and e says so (kind connection: the caller answers 503).
*/
static PGresult *wait_result(struct pg_conn *c, struct pg_error *e)
{
    long deadline =
        c->statement_timeout_ms > 0 ? mono_ms() + c->statement_timeout_ms + DEADLINE_GRACE_MS : -1;
    PGresult *last = NULL, *res;
    while (PQflush(c->conn) == 1)
        if (wait_socket(c->conn, POLLOUT | POLLIN, deadline) < 0)
            goto late;
    for (;;) {
        while (PQisBusy(c->conn)) {
            if (wait_socket(c->conn, POLLIN, deadline) < 0)
                goto late;
            if (!PQconsumeInput(c->conn))
                break; /* connection trouble: PQgetResult reports it */
        }
        if (!(res = PQgetResult(c->conn)))
            return last;
        PQclear(last);
        last = res;
    }
late:
    PQclear(last);
    cancel_async(c);
    conn_drop(c);
    pg_err_set(e, PG_KIND_CONNECTION, "57014", "");
    snprintf(e->msg, sizeof(e->msg), "the database did not answer within %d ms",
             c->statement_timeout_ms + DEADLINE_GRACE_MS);
    return NULL;
}

/* Opens c->conn. Returns 0, or -1 with e filled (kind connection). */
static int conn_open(struct pg_conn *c, struct pg_error *e)
{
    /* Later keywords win: the caller's conninfo may override the timeout and
    ** application name, never the encoding we parse results with. */
    const char *keys[] = {"connect_timeout",           "keepalives",
                          "keepalives_idle",           "keepalives_interval",
                          "keepalives_count",          "tcp_user_timeout",
                          "fallback_application_name", "dbname",
                          "client_encoding",           NULL};
    const char *vals[] = {CONNECT_TIMEOUT,     "1",         "5",         "2",    "3",
                          TCP_USER_TIMEOUT_MS, "shelfsync", c->conninfo, "UTF8", NULL};
    char setup[160];
    PGresult *res;

    assert(c->conn == NULL);
    c->conn = PQconnectdbParams(keys, vals, 1);
    if (c->conn == NULL) {
        pg_err_set(e, PG_KIND_CONNECTION, "08001", "out of memory while connecting");
        return -1;
    }
    if (PQstatus(c->conn) != CONNECTION_OK) {
        char line[900];
        first_line(line, sizeof(line), PQerrorMessage(c->conn));
        pg_err_set(e, PG_KIND_CONNECTION, "08001", "");
        snprintf(e->msg, sizeof(e->msg), "cannot connect to the database: %s", line);
        conn_drop(c);
        return -1;
    }
    PQsetNoticeReceiver(c->conn, notice_ignore, NULL);
    PQsetnonblocking(c->conn, 1); /* sending, too, must not outlast the deadline */
    snprintf(setup, sizeof(setup),
             "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET statement_timeout = %d",
             c->statement_timeout_ms > 0 ? c->statement_timeout_ms : 0);
    res = PQsendQuery(c->conn, setup) ? wait_result(c, e) : NULL;
    if (c->conn == NULL)
        return -1; /* past the deadline: e says so */
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
    pg_err_set(e, PG_KIND_CONNECTION, "08006", "");
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

PGresult *pg_send_wait(struct pg_conn *c, const char *sql, const char *name, int nparams,
                       const char *const *values, const int *lengths, const int *formats,
                       struct pg_error *e)
{
    int sent =
        name == NULL  ? PQsendQueryParams(c->conn, sql, nparams, NULL, values, lengths, formats, 0)
        : sql == NULL ? PQsendQueryPrepared(c->conn, name, nparams, values, lengths, formats, 0)
                      : PQsendPrepare(c->conn, name, sql, 0, NULL);
    return sent ? wait_result(c, e) : NULL;
}

PGresult *pg_wait(struct pg_conn *c, struct pg_error *e)
{
    return wait_result(c, e);
}

/* True for a statement the server plans (the ones worth preparing); not for DDL, SET, ... */
static int sql_is_planned(const char *sql)
{
    static const char *const words[] = {"select", "insert", "update", "delete", "with",
                                        "values", "table",  "merge",  NULL};
    const char *p = sql;
    size_t n;

    while (isspace((unsigned char)*p) || *p == '(')
        p++;
    for (n = 0; isalpha((unsigned char)p[n]); n++)
        ;
    for (int i = 0; words[i]; i++)
        if (n == strlen(words[i]) && strncasecmp(p, words[i], n) == 0)
            return 1;
    return 0;
}

/*
** True when the parameters total more than PG_STMT_MAX_PARAM_BYTES. Such a statement runs
** unnamed, planned for the values at hand: its parameters are arrays of thousands of keys
** or rows (the sync's catalog read and upserts, the enrichment enqueue), for which a generic
** plan assumes a handful of elements and picks index probes and nested loops where the
** custom plan hashes (the enqueue of 10,000 ids: 34 ms against 13 + 13 ms planning), and
** planning is small beside the work anyway.
*/
static int params_are_large(int nparams, const char *const *values, const int *lengths,
                            const int *formats)
{
    size_t total = 0;

    for (int i = 0; i < nparams && total <= PG_STMT_MAX_PARAM_BYTES; i++)
        if (values[i])
            total += formats && formats[i] && lengths
                         ? (size_t)lengths[i]
                         : strnlen(values[i], PG_STMT_MAX_PARAM_BYTES + 1);
    return total > PG_STMT_MAX_PARAM_BYTES;
}

/*
** Runs sql once on the open connection, as a cached prepared statement when flags allow
** (pg_stmt.c) and its parameters are not large (params_are_large), and as an unnamed one
** otherwise; results as pg_send_wait's. A cached statement
** the session no longer has (26000: DISCARD ALL, a pooler) or whose result type changed
** (0A000: a migration altered a table under a `SELECT *`) is forgotten and, outside a
** transaction block, run once more: it failed at Bind, before doing anything. Inside a
** block the failure aborted the transaction, so it is the caller's error like any other.
*/
static PGresult *run_statement(struct pg_conn *c, const char *sql, int nparams,
                               const char *const *values, const int *lengths, const int *formats,
                               int flags, struct pg_error *e)
{
    for (int attempt = 0;; attempt++) {
        PGresult *res = NULL;
        const char *name = NULL;
        const char *state;

        if ((flags & EXEC_PREPARE) && c->max_stmts > 0 &&
            !params_are_large(nparams, values, lengths, formats))
            name = pg_stmt_name(c, sql, &res, e);
        if (res != NULL || c->conn == NULL)
            return res; /* preparing failed: the statement's own error, or no answer */
        if (name == NULL)
            return pg_send_wait(c, sql, NULL, nparams, values, lengths, formats, e);
        res = pg_send_wait(c, NULL, name, nparams, values, lengths, formats, e);
        if (res == NULL || PQresultStatus(res) != PGRES_FATAL_ERROR)
            return res;
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state == NULL || (strcmp(state, "0A000") != 0 && strcmp(state, "26000") != 0))
            return res;
        pg_stmt_invalidate(c, name, state);
        if (attempt > 0 || PQtransactionStatus(c->conn) != PQTRANS_IDLE)
            return res;
        PQclear(res);
    }
}

/* True (e filled) when c's transaction was lost and not yet rolled back: nothing runs then. */
static int refused_while_lost(const struct pg_conn *c, struct pg_error *e)
{
    if (!c->tx_lost)
        return 0;
    pg_err_set(e, PG_KIND_CONNECTION, "08006",
               "database connection lost inside a transaction; roll it back first");
    return 1;
}

/* lose_tx with the cause e already says (a deadline passed, the connection broke). */
static void lose_tx_from(struct pg_conn *c, struct pg_error *e)
{
    char what[sizeof(e->msg)];
    snprintf(what, sizeof(what), "%s", e->msg);
    lose_tx(c, e, what);
}

/*
** A statement's result on a connection that answered: a success is returned; a failure
** fills e and gives NULL, with *broken set when the connection itself is gone (the caller
** drops it and decides what that means for the transaction). Keeps c->in_tx current.
*/
static PGresult *settle_result(struct pg_conn *c, PGresult *res, int *broken, struct pg_error *e)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

    *broken = 0;
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
    *broken = 1;
    return NULL;
}

/* The single retry of reads and the lost-transaction state: see the top comment. */
PGresult *pg_execp(struct pg_conn *c, const char *sql, int nparams, const char *const *values,
                   const int *lengths, const int *formats, int flags, struct pg_error *e)
{
    int retried = 0;

    pg_drain(c);
    if (!(flags & EXEC_IGNORE_LOST) && refused_while_lost(c, e))
        return NULL;
    for (;;) {
        int was_in_tx = c->in_tx, broken;
        PGresult *res;

        if (c->conn && !conn_alive(c)) {
            conn_drop(c);
            if (was_in_tx && !c->tx_lost) {
                lose_tx(c, e, "found closed");
                return NULL;
            }
        }
        if (c->conn == NULL) {
            if (flags & EXEC_NO_RECONNECT) {
                pg_err_set(e, PG_KIND_CONNECTION, "08003", "no database connection");
                return NULL;
            }
            if (conn_open(c, e) < 0)
                return NULL;
        }
        res = run_statement(c, sql, nparams, values, lengths, formats, flags, e);
        if (c->conn == NULL) { /* past the deadline: never retried, it would wait again */
            if (was_in_tx && !c->tx_lost)
                lose_tx_from(c, e);
            return NULL;
        }
        res = settle_result(c, res, &broken, e);
        if (res != NULL || !broken)
            return res;
        conn_drop(c);
        if (was_in_tx) {
            if (!c->tx_lost)
                lose_tx_from(c, e);
            return NULL;
        }
        if (!(flags & EXEC_READ) || retried)
            return NULL;
        retried = 1;
    }
}

int pg_sendp(struct pg_conn *c, const char *sql, int nparams, const char *const *values,
             const int *lengths, const int *formats, struct pg_error *e)
{
    pg_drain(c);
    if (refused_while_lost(c, e))
        return -1;
    if (c->conn == NULL || !c->in_tx) {
        pg_err_set(e, PG_KIND_QUERY, "25P01", "a statement sent ahead needs an open transaction");
        return -1;
    }
    if (!PQsendQueryParams(c->conn, sql, nparams, NULL, values, lengths, formats, 0)) {
        char what[sizeof(e->msg)];
        first_line(what, sizeof(what), PQerrorMessage(c->conn));
        conn_drop(c);
        lose_tx(c, e, what);
        return -1;
    }
    c->inflight = 1;
    return 0;
}

PGresult *pg_collect(struct pg_conn *c, struct pg_error *e)
{
    PGresult *res;
    int broken;

    if (!c->inflight) {
        pg_err_set(e, PG_KIND_QUERY, "XX000", "pg_collect: nothing was sent");
        return NULL;
    }
    c->inflight = 0;
    res = wait_result(c, e);
    if (c->conn == NULL) { /* past the deadline: the connection was dropped */
        lose_tx_from(c, e);
        return NULL;
    }
    res = settle_result(c, res, &broken, e);
    if (res == NULL && broken) { /* sent inside a transaction (pg_sendp): it is gone */
        conn_drop(c);
        lose_tx_from(c, e);
    }
    return res;
}

void pg_drain(struct pg_conn *c)
{
    struct pg_error e;
    if (c->inflight)
        PQclear(pg_collect(c, &e));
}

PGresult *pg_exec(struct pg_conn *c, const char *sql, int nparams, const char *const *values,
                  int flags, struct pg_error *e)
{
    return pg_execp(c, sql, nparams, values, NULL, NULL, flags, e);
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
    c->max_stmts = PG_STATEMENT_CACHE_DEFAULT;
    return c;
}

void pg_conn_set_statement_cache(struct pg_conn *c, int max)
{
    pg_stmt_forget(c);
    c->max_stmts = max > 0 ? max : 0;
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
    PGresult *res = pg_exec(c, "SELECT 1", 0, NULL, EXEC_READ | EXEC_IGNORE_LOST, &e);
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
    res = pg_exec(c, "ROLLBACK", 0, NULL, EXEC_NO_RECONNECT, &e);
    PQclear(res);
    c->in_tx = 0;
}

/* ------------------------------------------------------------ Lua API */

struct pg_conn *pg_check_conn(lua_State *L)
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

/* host.pg.connect(conninfo[, statement_timeout_ms[, statement_cache]]) */
static int l_connect(lua_State *L)
{
    const char *conninfo = luaL_checkstring(L, 1);
    int timeout = (int)luaL_optinteger(L, 2, 0);
    lua_Integer cache = luaL_optinteger(L, 3, PG_STATEMENT_CACHE_DEFAULT);
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
    pg_conn_set_statement_cache(*box, cache > INT32_MAX ? INT32_MAX : (int)cache);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &OWNED_KEY);  /* the previous one is collected */
    lua_pushlightuserdata(L, *box);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CONN_KEY);
    if (conn_open(*box, &e) < 0)
        return pg_push_error(L, &e);
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
    if (pg_encode_params(L, first, n, values, &e) < 0)
        return pg_push_error(L, &e);
    if (sql_is_read(sql))
        flags |= EXEC_READ;
    if (sql_is_planned(sql))
        flags |= EXEC_PREPARE;
    res = pg_exec(c, sql, n, values, flags, &e);
    if (res == NULL)
        return pg_push_error(L, &e);
    pg_result_box(L, res);
    pg_push_rows(L, c, res);
    PQclear(res);
    *(PGresult **)lua_touserdata(L, -2) = NULL;
    return 1;
}

/* host.pg.query(sql, ...) */
static int l_query(lua_State *L)
{
    struct pg_conn *c = pg_check_conn(L);
    const char *sql = luaL_checkstring(L, 1);
    return run_query(L, c, sql, 2, 0);
}

/* host.pg.ping() -> true | nil, msg */
static int l_ping(lua_State *L)
{
    struct pg_conn *c = pg_check_conn(L);
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
    struct pg_conn *c = pg_check_conn(L);
    lua_pushboolean(L, c->in_tx || c->tx_lost);
    return 1;
}

static int simple_cmd(lua_State *L, struct pg_conn *c, const char *sql, int flags)
{
    struct pg_error e;
    PGresult *res = pg_exec(c, sql, 0, NULL, flags, &e);
    if (res == NULL)
        return pg_push_error(L, &e);
    PQclear(res);
    lua_pushboolean(L, 1);
    return 1;
}

/* host.pg.begin() */
static int l_begin(lua_State *L)
{
    struct pg_conn *c = pg_check_conn(L);
    struct pg_error e;
    if (c->in_tx || c->tx_lost) {
        pg_err_set(&e, PG_KIND_QUERY, "25001", "a transaction is already open");
        return pg_push_error(L, &e);
    }
    /* BEGIN has no effect of its own, so it may run on a fresh connection. */
    return simple_cmd(L, c, "BEGIN", EXEC_READ);
}

/* host.pg.commit(): never runs on a new connection; a lost or failed transaction is reported. */
static int l_commit(lua_State *L)
{
    struct pg_conn *c = pg_check_conn(L);
    struct pg_error e;
    int n;

    pg_drain(c); /* a chunk sent ahead and never collected: its failure aborts the commit */
    if (c->tx_lost) {
        c->tx_lost = 0;
        pg_err_set(&e, PG_KIND_CONNECTION, "08006",
                "database connection lost inside the transaction; nothing was committed");
        return pg_push_error(L, &e);
    }
    if (!c->in_tx) {
        pg_err_set(&e, PG_KIND_QUERY, "25P01", "no transaction is open");
        return pg_push_error(L, &e);
    }
    if (c->conn && PQtransactionStatus(c->conn) == PQTRANS_INERROR) {
        /* COMMIT would silently roll back: say so instead of returning true. */
        PQclear(pg_exec(c, "ROLLBACK", 0, NULL, EXEC_NO_RECONNECT, &e));
        c->in_tx = 0;
        c->tx_lost = 0;
        pg_err_set(&e, PG_KIND_QUERY, "25P02",
                "the transaction had failed and was rolled back");
        return pg_push_error(L, &e);
    }
    n = simple_cmd(L, c, "COMMIT", EXEC_NO_RECONNECT);
    if (c->tx_lost) {  /* lost while committing: the outcome is unknown */
        c->tx_lost = 0;
        lua_pop(L, n);
        pg_err_set(&e, PG_KIND_CONNECTION, "08007",
                "database connection lost during COMMIT; the outcome is unknown");
        return pg_push_error(L, &e);
    }
    return n;
}

/* host.pg.rollback(): ends the transaction whatever state it is in. */
static int l_rollback(lua_State *L)
{
    struct pg_conn *c = pg_check_conn(L);
    struct pg_error e;
    PGresult *res;

    if (c->tx_lost || !c->in_tx) {
        c->tx_lost = 0;
        lua_pushboolean(L, 1);
        return 1;
    }
    res = pg_exec(c, "ROLLBACK", 0, NULL, EXEC_NO_RECONNECT, &e);
    c->tx_lost = 0;  /* a connection lost during ROLLBACK rolled back anyway */
    if (res == NULL && e.kind != PG_KIND_CONNECTION)
        return pg_push_error(L, &e);
    PQclear(res);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---------------------------------------------------------------- open */

static const luaL_Reg pg_funcs[] = {
    {"connect", l_connect},
    {"query", l_query},
    {"upsert", pg_l_upsert},
    {"ping", l_ping},
    {"in_tx", l_in_tx},
    {"begin", l_begin},
    {"commit", l_commit},
    {"rollback", l_rollback},
    {NULL, NULL},
};

int pg_luaopen(lua_State *L)
{
    pg_push_array_mt(L);  /* make sure it exists in states built without host_open */
    lua_pop(L, 1);
    luaL_newlib(L, pg_funcs);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
