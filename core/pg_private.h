/*
** pg_private.h: what pg.c (connection, query, transactions, the Lua API),
** pg_value.c (types, timestamps, arrays, parameters) and pg_upsert.c (the
** batched upsert) share. Not for the rest of the host: it sees pg.h.
*/
#ifndef SHELFSYNC_PG_PRIVATE_H
#define SHELFSYNC_PG_PRIVATE_H

#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <libpq-fe.h>
#include <lua.h>

#include "pg.h"

#define PG_ARRAY_MT "shelfsync.array"
#define PG_RESULT_MT "shelfsync.pg.result"
#define PG_ERROR_MT "shelfsync.pg.error"

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
    int inflight;  /* a statement was sent by pg_sendp and its result not yet collected */
    int tx_lost;   /* the connection died inside a transaction not yet ended */
    struct pg_type *types;   /* non-builtin type OIDs seen on this connection */
    size_t ntypes, captypes;
    struct pg_table *tables; /* upsert schema cache for this connection */
    struct pg_stmt *stmts;   /* prepared statements of this session (pg_stmt.c) */
    int nstmts, max_stmts;   /* max_stmts <= 0: nothing is prepared */
    unsigned stmt_seq;       /* the last statement name handed out (s<seq>) */
    uint64_t stmt_tick;      /* use counter: orders the entries by last use */
    uint64_t *stmt_seen;     /* hashes of texts seen once (pg_stmt.c) */
    char *stmt_gone;         /* names dropped, awaiting DEALLOCATE (pg_stmt.c) */
    int ngone;
};

/* ------------------------------------------------------------------ pg.c */

/* Flags for pg_exec / pg_execp. */
#define EXEC_READ 1          /* may be retried once after a loss mid-statement */
#define EXEC_NO_RECONNECT 2  /* must run on the current connection (COMMIT/ROLLBACK) */
#define EXEC_IGNORE_LOST 4   /* runs even while a lost transaction awaits rollback */
#define EXEC_PREPARE 8       /* may run as a cached prepared statement (pg_stmt.c) */

/* Resets e to an error of kind with sqlstate (may be NULL) and msg. */
void pg_err_set(struct pg_error *e, enum pg_kind kind, const char *sqlstate, const char *msg);

/*
** Runs one statement on c (parameters in text, or as formats[] says).
** Returns the successful result (the caller PQclears it) or NULL with e
** filled. Handles lazy (re)connection, the lost-transaction state and the
** single retry of reads (see pg.c's top comment).
*/
PGresult *pg_execp(struct pg_conn *c, const char *sql, int nparams, const char *const *values,
                   const int *lengths, const int *formats, int flags, struct pg_error *e);

/*
** One round trip on c->conn, waited for within the statement timeout plus a grace: with
** name NULL, sql runs as an unnamed statement with the parameters; with sql NULL, the
** prepared statement name runs with them; with both, sql is prepared as name. Returns the
** last result (the caller PQclears it), or NULL: with c->conn dropped and e filled when the
** server did not answer in time, else the connection's error message says why.
*/
PGresult *pg_send_wait(struct pg_conn *c, const char *sql, const char *name, int nparams,
                       const char *const *values, const int *lengths, const int *formats,
                       struct pg_error *e);

/*
** A statement sent without waiting for it, so that the caller can prepare the next one while
** the server runs this one (pg_upsert.c's chunked form). Only on an open connection inside a
** transaction: never retried, never reconnected. pg_sendp returns 0, or -1 with e filled;
** pg_collect then returns its result as pg_execp would (NULL with e filled on failure). A
** result left uncollected (a Lua error between the two) is read and dropped by the next
** statement on c (pg_drain), so the connection never stays busy.
*/
int pg_sendp(struct pg_conn *c, const char *sql, int nparams, const char *const *values,
             const int *lengths, const int *formats, struct pg_error *e);
PGresult *pg_collect(struct pg_conn *c, struct pg_error *e);
/* Reads and drops the result of a statement pg_sendp sent and nobody collected. */
void pg_drain(struct pg_conn *c);
/* The result of what was just sent on c->conn (PQsendQuery ...), as pg_send_wait's. */
PGresult *pg_wait(struct pg_conn *c, struct pg_error *e);

/* pg_execp with text parameters. */
PGresult *pg_exec(struct pg_conn *c, const char *sql, int nparams, const char *const *values,
                  int flags, struct pg_error *e);

/* The connection of L's host.pg (raises when there is none). */
struct pg_conn *pg_check_conn(lua_State *L);

/* Pushes nil and e as an error table (see pg.c's contract); returns 2. */
int pg_push_error(lua_State *L, const struct pg_error *e);

/* ------------------------------------------------------------ pg_value.c */

/*
** Fills t with how values of oid read back. Builtins are known; other types
** are looked up in pg_type once per connection (a failed lookup reads as text).
*/
void pg_type_resolve(struct pg_conn *c, Oid oid, struct pg_type *t);

/* Pushes the "shelfsync.array" metatable (creating it if needed). */
void pg_push_array_mt(lua_State *L);

/* Pushes one non-NULL value's text s (n bytes) read as type t; mt: the array metatable's index. */
void pg_push_value(lua_State *L, const char *s, size_t n, const struct pg_type *t, int mt);

/*
** Pushes a userdata owning res (PQclear on collection), so a Lua error while
** converting cannot leak it. Returns the box: set *box = NULL once freed.
*/
PGresult **pg_result_box(lua_State *L, PGresult *res);

/*
** Replaces the result box on top of the stack with res read as the rows table
** (see pg.c's contract). Unknown column types are resolved first, which may
** query pg_type on c. The caller still frees res.
*/
void pg_push_rows(lua_State *L, struct pg_conn *c, PGresult *res);

/*
** Converts the Lua values at stack slots first..first+n-1 to text parameters;
** values[] point into Lua strings kept on the stack. Returns 0, or -1 with e
** filled. Misuse (a function, a coroutine, a foreign userdata) raises.
*/
int pg_encode_params(lua_State *L, int first, int n, const char **values, struct pg_error *e);

/*
** Writing array literals into a luaL_Buffer. A buffer's box must stay on top of
** the stack, so tables being written are parked in PG_SINK_SCRATCH slots
** reserved below it (pg_sink_reserve, before luaL_buffinit).
*/
#define PG_SINK_SCRATCH 8

struct pg_sink {
    luaL_Buffer *B;
    int scratch;  /* stack index of the first scratch slot */
};

/* Reserves the scratch slots; returns the index of the first. */
int pg_sink_reserve(lua_State *L);

/*
** Writes the Lua array at idx (a scratch slot) as an array literal. Returns 0,
** or -1 with a message in e (not an array, NUL byte, bad element).
*/
int pg_sink_array(lua_State *L, struct pg_sink *s, int idx, struct pg_error *e);

/* Formats the number at idx as PostgreSQL reads it back exactly; returns the length. */
size_t pg_format_number(lua_State *L, int idx, char *buf, size_t len);

/* ------------------------------------------------------------- pg_stmt.c */

/*
** The name of sql's prepared statement on c, preparing it when this is its second use;
** NULL when it is to run unnamed (cache off, first use, an aborted transaction, out of
** memory). When preparing failed, NULL with *res set to the failed result (the
** statement's own error), or with c->conn dropped and e filled (no answer in time).
*/
const char *pg_stmt_name(struct pg_conn *c, const char *sql, PGresult **res, struct pg_error *e);

/*
** A cached statement failed with sqlstate 0A000 (its result type changed: forgotten, and
** DEALLOCATEd later) or 26000 (the session lost it: every entry is forgotten).
*/
void pg_stmt_invalidate(struct pg_conn *c, const char *name, const char *sqlstate);

/* Frees every entry and forgets the texts seen: the connection is gone. */
void pg_stmt_forget(struct pg_conn *c);

/* ----------------------------------------------------------- pg_upsert.c */

/* Frees the upsert schema cache of c (its tables may differ on a new connection). */
void pg_schema_forget(struct pg_conn *c);

/* host.pg.upsert(spec): see the contract comment in pg_upsert.c. */
int pg_l_upsert(lua_State *L);

#endif
