/*
** health.c: the state GET /healthz reports, kept by the host so that the answer never
** waits for a Lua worker or for the database; see health.h.
*/
#include "health.h"

#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "enrich.h"
#include "log.h"
#include "reload.h"

/* One probe (connect if needed, then SELECT 1) must finish within this, or the database
   counts as unavailable: /healthz must see a hung database within a second. */
#define PROBE_DEADLINE_MS 800
#define PROBE_INTERVAL_MS 250
/* A probe result older than this is stale (the prober itself is stuck): unavailable. */
#define PROBE_STALE_MS 1500

static struct {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int running, stopping;
    char *conninfo;
    PGconn *conn;
    atomic_int db_ok;
    atomic_long probed_ms; /* monotonic time of the last finished probe */
} H = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until the connection's socket is ready for `events` or the deadline passes. */
static int wait_socket(PGconn *conn, short events, long deadline)
{
    long left = deadline - now_ms();
    if (left <= 0)
        return -1;
    struct pollfd p = {.fd = PQsocket(conn), .events = events};
    if (p.fd < 0)
        return -1;
    return poll(&p, 1, (int)left) == 1 ? 0 : -1;
}

/* Non-blocking connect bounded by the deadline (libpq's connect_timeout counts whole
   seconds, with a floor of 2). */
static int probe_connect(long deadline)
{
    if (H.conn && PQstatus(H.conn) == CONNECTION_OK)
        return 0;
    if (H.conn)
        PQfinish(H.conn);
    if (!(H.conn = PQconnectStart(H.conninfo)) || PQstatus(H.conn) == CONNECTION_BAD)
        return -1;
    for (;;) {
        PostgresPollingStatusType st = PQconnectPoll(H.conn);
        if (st == PGRES_POLLING_OK)
            return PQsetnonblocking(H.conn, 1);
        if (st == PGRES_POLLING_FAILED)
            return -1;
        if (wait_socket(H.conn, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline) < 0)
            return -1;
    }
}

static int probe_query(long deadline)
{
    if (!PQsendQuery(H.conn, "SELECT 1"))
        return -1;
    while (PQflush(H.conn) == 1)
        if (wait_socket(H.conn, POLLOUT, deadline) < 0)
            return -1;
    int ok = 0;
    for (;;) {
        while (PQisBusy(H.conn)) {
            if (wait_socket(H.conn, POLLIN, deadline) < 0 || !PQconsumeInput(H.conn))
                return -1;
        }
        PGresult *res = PQgetResult(H.conn);
        if (!res)
            return ok ? 0 : -1;
        ok = ok || PQresultStatus(res) == PGRES_TUPLES_OK;
        PQclear(res);
    }
}

static void probe_once(void)
{
    long deadline = now_ms() + PROBE_DEADLINE_MS;
    int ok = probe_connect(deadline) == 0 && probe_query(deadline) == 0;
    if (!ok && H.conn) {
        /* A connection that missed its deadline may be stuck mid-protocol: start over. */
        PQfinish(H.conn);
        H.conn = NULL;
    }
    if (atomic_exchange(&H.db_ok, ok) != ok)
        log_msg(ok ? LOG_INFO : LOG_WARN, "health: database %s",
                ok ? "answers again" : "does not answer");
    atomic_store(&H.probed_ms, now_ms());
}

static void *probe_loop(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&H.lock);
    while (!H.stopping) {
        pthread_mutex_unlock(&H.lock);
        probe_once();
        pthread_mutex_lock(&H.lock);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += PROBE_INTERVAL_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        if (!H.stopping)
            pthread_cond_timedwait(&H.wake, &H.lock, &until);
    }
    pthread_mutex_unlock(&H.lock);
    return NULL;
}

int health_start(const char *conninfo, char *err, size_t errlen)
{
    if (!(H.conninfo = strdup(conninfo))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    probe_once(); /* the first /healthz already knows */
    if (pthread_create(&H.thread, NULL, probe_loop, NULL) != 0) {
        snprintf(err, errlen, "cannot start the health prober");
        return -1;
    }
    H.running = 1;
    return 0;
}

void health_stop(void)
{
    if (H.running) {
        pthread_mutex_lock(&H.lock);
        H.stopping = 1;
        pthread_cond_signal(&H.wake);
        pthread_mutex_unlock(&H.lock);
        pthread_join(H.thread, NULL);
        H.running = 0;
    }
    if (H.conn)
        PQfinish(H.conn);
    H.conn = NULL;
    free(H.conninfo);
    H.conninfo = NULL;
}

int health_db_ok(void)
{
    return atomic_load(&H.db_ok) && now_ms() - atomic_load(&H.probed_ms) <= PROBE_STALE_MS;
}

/* Appends s to out as a JSON string literal (quotes included). */
static size_t json_string(char *out, size_t len, const char *s)
{
    size_t n = 0;
#define PUT(c)                                                                                     \
    do {                                                                                           \
        if (n + 1 < len)                                                                           \
            out[n] = (c);                                                                          \
        n++;                                                                                       \
    } while (0)
    PUT('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            PUT('\\');
            PUT((char)c);
        } else if (c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", c);
            for (const char *e = esc; *e; e++)
                PUT(*e);
        } else {
            PUT((char)c);
        }
    }
    PUT('"');
#undef PUT
    if (len)
        out[n < len ? n : len - 1] = '\0';
    return n;
}

int health_render(char *out, size_t len)
{
    char lasterr[1024], quoted[2200];
    reload_last_error(lasterr, sizeof lasterr);
    if (*lasterr)
        json_string(quoted, sizeof quoted, lasterr);
    else
        snprintf(quoted, sizeof quoted, "null");
    int db = health_db_ok();
    /* The metadata fetcher's circuit: "degraded" while the provider keeps failing; syncs and
       reads are unaffected, so the status does not change for it. */
    enum enrich_state es = enrich_state();
    const char *enrichment = es == ENRICH_DISABLED ? "disabled"
                             : es == ENRICH_CLOSED ? "ok"
                                                   : "degraded";
    /* degraded: the database is down, or the last edit of a script was refused (the old
       code still serves). Only a dead database makes this instance unfit for traffic. */
    snprintf(out, len,
             "{\"status\":\"%s\",\"db\":\"%s\",\"routes\":{\"generation\":%lu,\"lastError\":%s},"
             "\"enrichment\":\"%s\"}",
             (db && !*lasterr) ? "ok" : "degraded", db ? "ok" : "unavailable", reload_generation(),
             quoted, enrichment);
    return db ? 200 : 503;
}
