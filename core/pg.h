/*
** pg.h: host.pg, the libpq binding (params-only queries, typed results,
** transactions, batched upsert). See the contract comment at the top of pg.c.
*/
#ifndef SHELFSYNC_PG_H
#define SHELFSYNC_PG_H

#include <stddef.h>
#include <lua.h>

/* One per worker: owns a PGconn, connects lazily, reconnects after a loss. */
struct pg_conn;

/*
** Creates a connection handle for conninfo (libpq URI or key=value string);
** statement_timeout_ms <= 0 leaves the server default. Does not connect yet.
** Returns NULL only when out of memory. The caller owns it (pg_conn_free).
*/
struct pg_conn *pg_conn_new(const char *conninfo, int statement_timeout_ms);

/* Prepared statements a connection keeps unless told otherwise (pg_conn_set_statement_cache). */
#define PG_STATEMENT_CACHE_DEFAULT 256

/*
** Keeps at most max prepared statements on c (0: none, every statement runs unnamed, as a
** transaction-mode pooler needs). Call before c is used: it forgets what c has cached.
*/
void pg_conn_set_statement_cache(struct pg_conn *c, int max);

/* Closes the connection (if any) and frees c. NULL is accepted. */
void pg_conn_free(struct pg_conn *c);

/*
** Checks that the database answers (connecting if needed, `SELECT 1`).
** Returns 0 when it does, <0 with a message in err otherwise.
*/
int pg_conn_ping(struct pg_conn *c, char *err, size_t errlen);

/*
** Request boundary: rolls back a transaction a caller left open and forgets
** a transaction lost with its connection, so the next request starts clean.
** Cheap when there is nothing to do (no round trip).
*/
void pg_conn_reset(struct pg_conn *c);

/*
** Makes L use c for host.pg. c is not owned by L and must outlive it;
** host.pg.connect() is refused in a state with an attached connection.
*/
void pg_attach(lua_State *L, struct pg_conn *c);

/* Pushes the host.pg table. */
int pg_luaopen(lua_State *L);

#endif
