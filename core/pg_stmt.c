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
** DEALLOCATEd. Names are never reused on a connection, so a DEALLOCATE that could not run
** (an aborted transaction) leaves a server-side statement behind but no wrong answer.
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

struct pg_stmt {
    uint64_t hash;
    uint64_t used; /* c->stmt_tick at the last use: the least recent is evicted */
    char *sql;
    char name[16];
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
    c->stmts = NULL;
    c->stmt_seen = NULL;
    c->nstmts = 0;
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
** Removes the entry at i, DEALLOCATEing it on the server when asked and the session can
** take a command (not in an aborted transaction). A DEALLOCATE that fails is not an error
** of the caller's statement: names are never reused, so the leftover is harmless. When the
** connection is dropped meanwhile (past the deadline), e says so.
*/
static void drop_entry(struct pg_conn *c, int i, int deallocate, struct pg_error *e)
{
    char sql[32];

    snprintf(sql, sizeof(sql), "DEALLOCATE %s", c->stmts[i].name);
    free(c->stmts[i].sql);
    c->stmts[i] = c->stmts[--c->nstmts];
    if (deallocate && c->conn && PQtransactionStatus(c->conn) != PQTRANS_INERROR)
        PQclear(pg_send_wait(c, sql, NULL, 0, NULL, NULL, NULL, e));
}

void pg_stmt_invalidate(struct pg_conn *c, const char *name, const char *sqlstate,
                        struct pg_error *e)
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
            drop_entry(c, i, 1, e);
            return;
        }
}

/*
** Prepares sql as a new entry (evicting the least recently used one when full). Returns the
** entry, or NULL: with *res set to the failed PREPARE's result (the statement's own error,
** which the caller reports as if it had run it); with c->conn dropped and e filled (past
** the deadline); or with neither (out of memory, or the PREPARE could not be sent: the
** caller sends the statement unnamed, which reports a broken connection as usual).
*/
static struct pg_stmt *prepare(struct pg_conn *c, uint64_t h, const char *sql, PGresult **res,
                               struct pg_error *e)
{
    struct pg_stmt *s;
    char name[16];
    char *copy;

    *res = NULL;
    if (c->nstmts == c->max_stmts) {
        int lru = 0;
        for (int i = 1; i < c->nstmts; i++)
            if (c->stmts[i].used < c->stmts[lru].used)
                lru = i;
        drop_entry(c, lru, 1, e);
        if (c->conn == NULL)
            return NULL; /* dropped while deallocating: e says why */
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
    h = sql_hash(sql);
    s = find(c, h, sql);
    if (s == NULL && seen_before(c, h))
        s = prepare(c, h, sql, res, e);
    if (s == NULL)
        return NULL;
    s->used = ++c->stmt_tick;
    return s->name;
}
