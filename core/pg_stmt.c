/*
** pg_stmt.c: the per-connection cache of prepared statements.
**
** A statement the Lua code runs again and again (the library page, the sync's catalog
** read, the upsert) is parsed and planned by the server each time when sent as an unnamed
** statement. Here such a statement is prepared once per connection under a name of its own
** (s1, s2, ...) and then only bound and executed.
**
** Only a statement seen a second time on the connection is prepared: a text sent once
** (SQL built per call, DDL in a tool) never costs the extra round trip of preparing nor a
** place in the cache. The texts seen are remembered as hashes only, in a small
** direct-mapped table where a newcomer simply overwrites (the worst a collision does is
** prepare a statement one use early, or one use late).
**
** The cache holds at most max statements; past that the least recently used one is
** dropped, and DEALLOCATEd before the next statement that runs outside a transaction
** block. Names are never reused on a connection, so a DEALLOCATE that could not run
** leaves a server-side statement behind but no wrong answer.
** Everything is forgotten with the connection (pg_stmt_forget, from conn_drop): a new
** session has no prepared statements.
*/
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_private.h"

/* Entries of the seen table; a power of two. */
#define SEEN_SLOTS 1024
/* Room for "s" and a 32-bit sequence number. */
#define PG_STMT_NAME_MAX 16
/* Dropped statements awaiting their DEALLOCATE (flush_gone). */
#define GONE_MAX 32

struct pg_stmt {
    uint64_t hash;
    uint64_t used; /* c->stmt_tick at the last use: the least recent is evicted */
    char *sql;
    char name[PG_STMT_NAME_MAX];
};

/* FNV-1a: the texts are short and hashed once per statement run. */
static uint64_t sql_hash(const char *sql)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h;
}

void pg_stmt_forget(struct pg_conn *c)
{
    for (int i = 0; i < c->nstmts; i++)
        free(c->stmts[i].sql);
    free(c->stmts);
    free(c->stmt_seen);
    free(c->stmt_gone);
    c->stmts = NULL;
    c->stmt_seen = NULL;
    c->stmt_gone = NULL;
    c->nstmts = 0;
    c->ngone = 0;
    c->stmt_seq = 0;
    c->stmt_tick = 0;
}

static struct pg_stmt *find(struct pg_conn *c, uint64_t h, const char *sql)
{
    for (int i = 0; i < c->nstmts; i++)
        if (c->stmts[i].hash == h && strcmp(c->stmts[i].sql, sql) == 0)
            return &c->stmts[i];
    return NULL;
}

/* True when sql was seen before; remembers it for next time otherwise. */
static int seen_before(struct pg_conn *c, uint64_t h)
{
    uint64_t *slot;

    if (c->stmt_seen == NULL && (c->stmt_seen = calloc(SEEN_SLOTS, sizeof(uint64_t))) == NULL)
        return 0;
    slot = &c->stmt_seen[h & (SEEN_SLOTS - 1)];
    if (*slot == h)
        return 1;
    *slot = h;
    return 0;
}

/*
** Removes the entry at i. Its DEALLOCATE waits for flush_gone: sent inside the caller's
** transaction block, a DEALLOCATE that fails (the session lost the statement already)
** would abort the caller's transaction. A name that does not fit in the queue is left on
** the server: names are never reused, so a leftover is harmless.
*/
static void drop_entry(struct pg_conn *c, int i)
{
    if (c->ngone < GONE_MAX &&
        (c->stmt_gone != NULL || (c->stmt_gone = malloc(GONE_MAX * PG_STMT_NAME_MAX)) != NULL))
        memcpy(c->stmt_gone + (size_t)c->ngone++ * PG_STMT_NAME_MAX, c->stmts[i].name,
               PG_STMT_NAME_MAX);
    free(c->stmts[i].sql);
    c->stmts[i] = c->stmts[--c->nstmts];
}

/*
** DEALLOCATEs the dropped entries in one round trip, outside any transaction block. Its
** outcome is not the caller's: a failure leaves a harmless leftover (see drop_entry). When
** the connection is dropped meanwhile (past the deadline), e says so.
*/
static void flush_gone(struct pg_conn *c, struct pg_error *e)
{
    char sql[GONE_MAX * (PG_STMT_NAME_MAX + 12) + 1];
    size_t n = 0;

    for (int i = 0; i < c->ngone; i++)
        n += (size_t)snprintf(sql + n, sizeof(sql) - n, "DEALLOCATE %s;",
                              c->stmt_gone + (size_t)i * PG_STMT_NAME_MAX);
    c->ngone = 0;
    if (PQsendQuery(c->conn, sql))
        PQclear(pg_wait(c, e));
}

void pg_stmt_invalidate(struct pg_conn *c, const char *name, const char *sqlstate)
{
    if (strcmp(sqlstate, "26000") == 0) {
        /* Gone on the server (DISCARD ALL, DEALLOCATE ALL, a pooler's reset): the others
        ** most likely too. Their names are not reused (stmt_seq goes on). */
        for (int i = 0; i < c->nstmts; i++)
            free(c->stmts[i].sql);
        c->nstmts = 0;
        return;
    }
    for (int i = 0; i < c->nstmts; i++)
        if (strcmp(c->stmts[i].name, name) == 0) {
            drop_entry(c, i);
            return;
        }
}

/*
** Prepares sql as a new entry (evicting the least recently used one when full). Returns the
** entry, or NULL: with *res set to the failed PREPARE's result (the statement's own error,
** which the caller reports as if it had run it); with c->conn dropped and e filled (no
** answer in time); or with neither (out of memory, or the PREPARE could not be sent: the
** caller sends the statement unnamed, which reports a broken connection as usual).
*/
static struct pg_stmt *prepare(struct pg_conn *c, uint64_t h, const char *sql, PGresult **res,
                               struct pg_error *e)
{
    struct pg_stmt *s;
    char name[PG_STMT_NAME_MAX];
    char *copy;

    *res = NULL;
    if (c->nstmts == c->max_stmts) {
        int lru = 0;
        for (int i = 1; i < c->nstmts; i++)
            if (c->stmts[i].used < c->stmts[lru].used)
                lru = i;
        drop_entry(c, lru);
    }
    if (c->stmts == NULL && (c->stmts = calloc((size_t)c->max_stmts, sizeof(*c->stmts))) == NULL)
        return NULL;
    if ((copy = strdup(sql)) == NULL)
        return NULL;
    snprintf(name, sizeof(name), "s%u", ++c->stmt_seq);
    *res = pg_send_wait(c, sql, name, 0, NULL, NULL, NULL, e);
    if (*res == NULL || PQresultStatus(*res) != PGRES_COMMAND_OK) {
        free(copy); /* never cached: the next use prepares again (or fails again) */
        return NULL;
    }
    PQclear(*res);
    *res = NULL;
    s = &c->stmts[c->nstmts++];
    s->hash = h;
    s->sql = copy;
    snprintf(s->name, sizeof(s->name), "%s", name);
    return s;
}

const char *pg_stmt_name(struct pg_conn *c, const char *sql, PGresult **res, struct pg_error *e)
{
    uint64_t h;
    struct pg_stmt *s;

    *res = NULL;
    if (c->max_stmts <= 0 || c->conn == NULL ||
        PQtransactionStatus(c->conn) == PQTRANS_INERROR) /* it would only fail: say so as before */
        return NULL;
    if (c->ngone > 0 && PQtransactionStatus(c->conn) == PQTRANS_IDLE) {
        flush_gone(c, e);
        if (c->conn == NULL)
            return NULL;
    }
    h = sql_hash(sql);
    s = find(c, h, sql);
    if (s == NULL && seen_before(c, h))
        s = prepare(c, h, sql, res, e);
    if (s == NULL)
        return NULL;
    s->used = ++c->stmt_tick;
    return s->name;
}
