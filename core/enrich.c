/*
** enrich.c: the metadata fetcher thread (see enrich.h).
**
** The loop: rebuild the VM when the scripts moved; let the circuit breaker look at the
** clock; after a sync ended, let Lua tidy the database (app.enrich_tidy); claim a batch
** from the queue when nothing is pending (app.enrich_claim, which leases rows FOR UPDATE
** SKIP LOCKED); start pending fetches while the concurrency and the start-rate limit
** allow; run libcurl; hand every finished fetch of this round to Lua in one call
** (app.enrich_done: mapping, merge and queue bookkeeping in one transaction);
** wait on curl_multi_poll. Lua calls run on this thread with their own PostgreSQL
** connection, so no request worker ever waits for the provider.
**
** Failures that say the provider is unwell (5xx, timeouts, refused or dropped connections)
** count towards the circuit: after metadata_circuit_failures in a row it opens, claimed but
** unstarted titles are handed back (app.enrich_release), and nothing is fetched for
** metadata_circuit_open_ms; then one probe runs (half open) and its outcome closes or
** reopens it. A 429 pauses every start for its Retry-After (1 s when absent, at most the
** lease) and hands the pending titles back with that delay.
*/
#include "enrich.h"

#include <curl/curl.h>
#include <lauxlib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf.h"
#include "crypto.h"
#include "httpc.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "reload.h"
#include "scripts.h"
#include "vm.h"

#define ENRICH_MAX_BATCH 256
#define ENRICH_ASIN_MAX 32
#define ENRICH_MAX_WAIT_MS 1000
/* Finished fetches wait up to this long for others, so that one transaction (whose round
   trips pause every transfer of the thread) writes several titles. */
#define ENRICH_FLUSH_MS 25
/* A sync holds the fetcher (no new fetch, no write) for at most this long at a stretch, so
   an instance that is always syncing still enriches. */
#define ENRICH_HOLD_MAX_MS 10000

struct enrich_fetch {                  /* one transfer in flight */
    CURL *curl;
    char asin[ENRICH_ASIN_MAX];
    char *body;
    size_t len, cap, max;
    int too_large, oom;
    long started_ms;
};

struct enrich_item {                   /* claimed, not started */
    char asin[ENRICH_ASIN_MAX];
    char *url;                         /* owned */
};

struct enrich {
    const struct conf *conf;
    pthread_t thread;
    atomic_int stop;
    CURLM *multi;
    lua_State *L;
    unsigned long generation;
    struct pg_conn *pg;
    char owner[CRYPTO_UUID_LEN + 1];   /* this process, in the queue's leased_by */
    struct enrich_fetch *fetches;      /* conf->metadata_concurrency slots */
    int inflight;
    struct enrich_item pending[ENRICH_MAX_BATCH];
    int npending, next_pending;
    double next_start_ms;              /* rate limit: the earliest next start */
    long next_claim_ms;
    long pause_until_ms;               /* 429 */
    int failures;                      /* consecutive, for the circuit */
    long open_until_ms;
    int results_ref;                   /* finished fetches not yet written: a table in L's
                                          registry, or LUA_NOREF */
    int nresults;
    long results_since_ms;
};

static struct enrich *running;
static atomic_int state = ENRICH_DISABLED;
static atomic_int holds;               /* syncs running in this process (enrich_hold) */
static atomic_long hold_since_ms;
static atomic_int tidy_due; /* a sync ended since the last app.enrich_tidy */

static const char *const state_names[] = {"disabled", "closed", "open", "half_open"};

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum enrich_state enrich_state(void)
{
    return (enum enrich_state)atomic_load(&state);
}

void enrich_hold(int on)
{
    if (!on) {
        atomic_store(&tidy_due, 1);
        atomic_fetch_sub(&holds, 1);
        return;
    }
    if (atomic_fetch_add(&holds, 1) == 0)
        atomic_store(&hold_since_ms, now_ms());
}

static int held(long now)
{
    return atomic_load(&holds) > 0 && now - atomic_load(&hold_since_ms) < ENRICH_HOLD_MAX_MS;
}

static void set_state(enum enrich_state s)
{
    atomic_store(&state, (int)s);
    metrics_set_gauge("enrichment_circuit_open", s == ENRICH_OPEN ? 1 : s == ENRICH_HALF_OPEN ? 0.5 : 0);
}

/* ---- Lua ---- */

static void flush(struct enrich *e);

static void refresh_vm(struct enrich *e)
{
    if (e->L && reload_generation() == e->generation)
        return;
    flush(e);                          /* the results table belongs to the old VM */
    struct scripts *s = reload_current();
    if (!s)
        return;
    if (!e->L || s->generation != e->generation) {
        char err[1024];
        lua_State *L = vm_new(e->conf, s, err, sizeof err);
        if (L) {
            pg_attach(L, e->pg);
            vm_close(e->L);
            e->L = L;
        } else {
            log_error("enrichment keeps generation %lu: %s", e->generation, err);
        }
        e->generation = s->generation;
    }
    scripts_unref(s);
}

/* Calls app.<fn> with the nargs values pushed above it and the owner id appended; leaves
   one result. The instruction budget is armed throughout: a mapping that loops costs one
   batch, not the thread. Returns 0, or -1 (logged, nothing left on the stack). */
static int call_app(struct enrich *e, const char *fn, int nargs)
{
    lua_State *L = e->L;
    if (vm_push_app_fn(L, fn) < 0) {
        lua_pop(L, nargs);
        log_error("enrichment: lua/app.lua has no %s", fn);
        return -1;
    }
    lua_insert(L, -nargs - 1);
    lua_pushstring(L, e->owner);
    char err[2048];
    vm_budget_arm(L);
    int rc = vm_call(L, nargs + 1, 1, err, sizeof err);
    vm_budget_disarm(L);
    pg_conn_reset(e->pg);
    if (rc != LUA_OK) {
        lua_pop(L, 1);
        log_error("enrichment: %s failed: %s", fn, err);
        return -1;
    }
    return 0;
}

static void drop_pending(struct enrich *e)
{
    for (int i = e->next_pending; i < e->npending; i++)
        free(e->pending[i].url);
    e->npending = e->next_pending = 0;
}

/* Hands the claimed, unstarted titles back to the queue, due again after delay_ms. */
static void release_pending(struct enrich *e, long delay_ms)
{
    if (e->next_pending >= e->npending || !e->L)
        return drop_pending(e);
    lua_State *L = e->L;
    lua_createtable(L, e->npending - e->next_pending, 0);
    for (int i = e->next_pending, n = 1; i < e->npending; i++, n++) {
        lua_pushstring(L, e->pending[i].asin);
        lua_rawseti(L, -2, n);
    }
    lua_pushinteger(L, delay_ms);
    if (call_app(e, "enrich_release", 2) == 0)
        lua_pop(L, 1);
    drop_pending(e);
}

/* Copies the claim's {asin, url} rows into pending. */
static void take_claimed(struct enrich *e)
{
    lua_State *L = e->L;
    int n = lua_istable(L, -1) ? (int)lua_rawlen(L, -1) : 0;
    for (int i = 1; i <= n && e->npending < ENRICH_MAX_BATCH; i++) {
        lua_rawgeti(L, -1, i);
        lua_getfield(L, -1, "asin");
        lua_getfield(L, -2, "url");
        const char *asin = lua_tostring(L, -2), *url = lua_tostring(L, -1);
        if (asin && url && strlen(asin) < ENRICH_ASIN_MAX) {
            struct enrich_item *it = &e->pending[e->npending];
            snprintf(it->asin, sizeof it->asin, "%s", asin);
            if ((it->url = strdup(url)))
                e->npending++;
        }
        lua_pop(L, 3);
    }
    lua_pop(L, 1);
}

/* A batch that the rate limit lets start within a few seconds, so leases stay fresh. */
static int batch_size(const struct enrich *e)
{
    int n = 4 * e->conf->metadata_concurrency;
    if (n > 2 * e->conf->metadata_rate_per_s)
        n = 2 * e->conf->metadata_rate_per_s;
    return n < 1 ? 1 : n > ENRICH_MAX_BATCH ? ENRICH_MAX_BATCH : n;
}

static void claim(struct enrich *e, long now)
{
    drop_pending(e);
    lua_pushinteger(e->L, batch_size(e));
    if (call_app(e, "enrich_claim", 1) < 0) {
        e->next_claim_ms = now + e->conf->metadata_poll_ms;
        return;
    }
    take_claimed(e);
    if (e->npending == 0)
        e->next_claim_ms = now + e->conf->metadata_poll_ms;
}

/* ---- transfers ---- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct enrich_fetch *f = ud;
    size_t len = size * n;
    if (f->len + len > f->max) {
        f->too_large = 1;
        return 0;
    }
    if (f->len + len + 1 > f->cap) {
        size_t cap = f->cap ? f->cap : 8192;
        while (cap < f->len + len + 1)
            cap *= 2;
        char *grown = realloc(f->body, cap);
        if (!grown) {
            f->oom = 1;
            return 0;
        }
        f->body = grown;
        f->cap = cap;
    }
    memcpy(f->body + f->len, p, len);
    f->len += len;
    return len;
}

static struct enrich_fetch *free_slot(struct enrich *e)
{
    for (int i = 0; i < e->conf->metadata_concurrency; i++)
        if (!e->fetches[i].curl)
            return &e->fetches[i];
    return NULL;
}

static void fetch_reset(struct enrich *e, struct enrich_fetch *f)
{
    if (f->curl) {
        curl_multi_remove_handle(e->multi, f->curl);
        curl_easy_cleanup(f->curl);
        e->inflight--;
    }
    free(f->body);
    memset(f, 0, sizeof *f);
}

static int start_fetch(struct enrich *e, const struct enrich_item *it, long now)
{
    struct enrich_fetch *f = free_slot(e);
    CURL *h = f ? curl_easy_init() : NULL;
    if (!h)
        return -1;
    f->curl = h;
    f->max = e->conf->metadata_max_bytes;
    f->started_ms = now;
    snprintf(f->asin, sizeof f->asin, "%s", it->asin);
    curl_easy_setopt(h, CURLOPT_URL, it->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)e->conf->metadata_timeout_ms);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "shelfsync");
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(h, CURLOPT_PRIVATE, f);
    if (curl_multi_add_handle(e->multi, h) != CURLM_OK) {
        curl_easy_cleanup(h);
        f->curl = NULL;
        return -1;
    }
    e->inflight++;
    return 0;
}

static int may_start(const struct enrich *e, long now)
{
    if (now < e->pause_until_ms || held(now))
        return 0;
    enum enrich_state s = enrich_state();
    if (s == ENRICH_OPEN)
        return 0;
    int limit = s == ENRICH_HALF_OPEN ? 1 : e->conf->metadata_concurrency;
    return e->inflight < limit;
}

static void start_due(struct enrich *e, long now)
{
    double interval = 1000.0 / e->conf->metadata_rate_per_s;
    while (e->next_pending < e->npending && may_start(e, now) && now >= e->next_start_ms) {
        struct enrich_item *it = &e->pending[e->next_pending];
        if (start_fetch(e, it, now) < 0)
            break;
        free(it->url);
        e->next_pending++;
        e->next_start_ms = (e->next_start_ms < now ? now : e->next_start_ms) + interval;
    }
}

/* ---- outcomes ---- */

static const char *error_kind(CURLcode rc, const struct enrich_fetch *f)
{
    if (f->too_large || rc == CURLE_FILESIZE_EXCEEDED)
        return "too_large";
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
        return "connect";
    default:
        return "failed";
    }
}

/* The circuit after one fetch: unwell = a 5xx or a transport failure other than size. */
static void circuit_observe(struct enrich *e, int unwell, long now)
{
    enum enrich_state s = enrich_state();
    if (!unwell) {
        e->failures = 0;
        if (s == ENRICH_HALF_OPEN) {
            log_info("enrichment: the provider answers again; circuit closed");
            set_state(ENRICH_CLOSED);
        }
        return;
    }
    e->failures++;
    if (s == ENRICH_HALF_OPEN || (s == ENRICH_CLOSED && e->failures >= e->conf->metadata_circuit_failures)) {
        log_warn("enrichment: %d failed fetches in a row; circuit open for %d ms", e->failures,
                 e->conf->metadata_circuit_open_ms);
        e->open_until_ms = now + e->conf->metadata_circuit_open_ms;
        set_state(ENRICH_OPEN);
        release_pending(e, e->conf->metadata_circuit_open_ms);
    }
}

static void circuit_tick(struct enrich *e, long now)
{
    if (enrich_state() == ENRICH_OPEN && now >= e->open_until_ms && e->inflight == 0)
        set_state(ENRICH_HALF_OPEN);
}

/* Pushes {asin, status, body, error, retry_after, ms} for a finished fetch. Returns its
   circuit verdict and the Retry-After seconds of a 429 (else 0). */
static int push_result(lua_State *L, struct enrich_fetch *f, CURLcode rc, long now, long *retry_after)
{
    long status = 0;
    curl_off_t ra = 0;
    lua_createtable(L, 0, 6);
    lua_pushstring(L, f->asin);
    lua_setfield(L, -2, "asin");
    lua_pushinteger(L, now - f->started_ms);
    lua_setfield(L, -2, "ms");
    *retry_after = 0;
    if (rc != CURLE_OK || f->oom) {
        lua_pushstring(L, f->oom ? "failed" : error_kind(rc, f));
        lua_setfield(L, -2, "error");
        return !f->too_large && rc != CURLE_FILESIZE_EXCEEDED;
    }
    curl_easy_getinfo(f->curl, CURLINFO_RESPONSE_CODE, &status);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, f->body ? f->body : "", f->len);
    lua_setfield(L, -2, "body");
    if (status == 429) {
        curl_easy_getinfo(f->curl, CURLINFO_RETRY_AFTER, &ra);
        *retry_after = ra > 0 ? (long)ra : 1;
        lua_pushinteger(L, *retry_after);
        lua_setfield(L, -2, "retry_after");
    }
    return status >= 500;
}

/* The outcome names Lua returned, counted by outcome. */
static void count_outcomes(lua_State *L, int n)
{
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const char *o = lua_tostring(L, -1);
        metrics_count("enrichment_fetches_total", "outcome", o ? o : "unknown", 1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* Writes the finished fetches held in results_ref: one app.enrich_done call. */
static void flush(struct enrich *e)
{
    if (e->nresults == 0)
        return;
    lua_State *L = e->L;
    int n = e->nresults;
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->results_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, e->results_ref);
    e->results_ref = LUA_NOREF;
    e->nresults = 0;
    if (call_app(e, "enrich_done", 1) == 0)
        count_outcomes(L, n);
}

/* Adds the result of f to the results table (created on the first one). */
static int hold_result(struct enrich *e, struct enrich_fetch *f, CURLcode rc, long now, long *retry_after)
{
    lua_State *L = e->L;
    if (e->nresults == 0) {
        lua_newtable(L);
        e->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        e->results_since_ms = now;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->results_ref);
    int unwell = push_result(L, f, rc, now, retry_after);
    lua_rawseti(L, -2, ++e->nresults);
    lua_pop(L, 1);
    return unwell;
}

/* Takes every fetch that finished; writes them when enough have gathered, the oldest has
   waited ENRICH_FLUSH_MS, or nothing else is in flight. */
static void collect(struct enrich *e, long now)
{
    CURLMsg *m;
    int left;
    long pause_s = 0;
    while ((m = curl_multi_info_read(e->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct enrich_fetch *f = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&f);
        long ra;
        int unwell = hold_result(e, f, m->data.result, now, &ra);
        metrics_histogram("enrichment_provider_latency_ms", (double)(now - f->started_ms));
        if (ra > pause_s)
            pause_s = ra;
        fetch_reset(e, f);
        circuit_observe(e, unwell, now);
    }
    int enough = e->nresults >= (e->conf->metadata_concurrency + 1) / 2;
    int due = enough || e->inflight == 0 || now - e->results_since_ms >= ENRICH_FLUSH_MS;
    if (e->nresults && due && (!held(now) || e->nresults >= ENRICH_MAX_BATCH))
        flush(e);
    if (pause_s > 0) {
        long max = (long)e->conf->metadata_lease_s;
        if (pause_s > max)
            pause_s = max;
        e->pause_until_ms = now + pause_s * 1000;
        log_warn("enrichment: the provider asks to wait %ld s (429)", pause_s);
        release_pending(e, pause_s * 1000);
    }
}

/* ---- the thread ---- */

static long later(long a, long b) { return a > b ? a : b; }

/* How long to wait for sockets before the loop has something else to do: the next start
   (or claim), never before a 429 pause or an open circuit ends, and the results' flush. */
static long wait_ms(const struct enrich *e, long now)
{
    long next = now + ENRICH_MAX_WAIT_MS;    /* a finished transfer wakes the poll anyway */
    enum enrich_state s = enrich_state();
    long gate = later(e->pause_until_ms, s == ENRICH_OPEN ? e->open_until_ms : 0);
    int free_slot = e->inflight < (s == ENRICH_HALF_OPEN ? 1 : e->conf->metadata_concurrency);
    if (free_slot && e->next_pending < e->npending)
        next = later((long)e->next_start_ms, gate);
    else if (free_slot)
        next = later(e->next_claim_ms, gate);
    if (next > now + ENRICH_MAX_WAIT_MS)
        next = now + ENRICH_MAX_WAIT_MS;
    if (e->nresults && e->results_since_ms + ENRICH_FLUSH_MS < next)
        next = e->results_since_ms + ENRICH_FLUSH_MS;
    if (held(now) && next > now + ENRICH_FLUSH_MS)
        next = now + ENRICH_FLUSH_MS;          /* look again soon: the sync may be over */
    return next - now < 1 ? 1 : next - now;
}

/* After a sync, once none runs: app.enrich_tidy merges what the sync left for later in the
   database (the search index's pending list, sql/008) on this thread's connection, so
   neither the request nor the next sync's insert pays for it. */
static void tidy(struct enrich *e, long now)
{
    if (!e->L || held(now) || !atomic_exchange(&tidy_due, 0))
        return;
    if (call_app(e, "enrich_tidy", 0) == 0)
        lua_pop(e->L, 1);
}

static int may_claim(const struct enrich *e, long now)
{
    return e->L && !held(now) && e->next_pending >= e->npending && now >= e->next_claim_ms &&
           now >= e->pause_until_ms && enrich_state() != ENRICH_OPEN &&
           e->inflight < e->conf->metadata_concurrency;
}

static void *enrich_run(void *arg)
{
    struct enrich *e = arg;
    while (!atomic_load(&e->stop)) {
        refresh_vm(e);
        long now = now_ms();
        circuit_tick(e, now);
        tidy(e, now);
        if (may_claim(e, now))
            claim(e, now);
        start_due(e, now);
        int still;
        curl_multi_perform(e->multi, &still);
        if (e->L)
            collect(e, now_ms());
        curl_multi_poll(e->multi, NULL, 0, (int)wait_ms(e, now_ms()), NULL);
    }
    if (e->L)
        flush(e);
    /* Abandoned transfers and unstarted titles go back to the queue at once. */
    for (int i = 0; i < e->conf->metadata_concurrency; i++) {
        struct enrich_fetch *f = &e->fetches[i];
        if (f->curl && e->npending < ENRICH_MAX_BATCH) {
            struct enrich_item *it = &e->pending[e->npending];
            snprintf(it->asin, sizeof it->asin, "%s", f->asin);
            it->url = NULL;
            e->npending++;
        }
        fetch_reset(e, f);
    }
    release_pending(e, 0);
    return NULL;
}

static void enrich_free(struct enrich *e)
{
    if (!e)
        return;
    drop_pending(e);
    if (e->fetches)
        for (int i = 0; i < e->conf->metadata_concurrency; i++)
            fetch_reset(e, &e->fetches[i]);
    free(e->fetches);
    if (e->multi)
        curl_multi_cleanup(e->multi);
    vm_close(e->L);
    pg_conn_free(e->pg);
    free(e);
}

int enrich_start(const struct conf *c, char *err, size_t errlen)
{
    if (!c->metadata_provider_url || !*c->metadata_provider_url)
        return 0;
    struct enrich *e = calloc(1, sizeof *e);
    if (!e || httpc_global_init() < 0 || crypto_uuid(e->owner) < 0) {
        snprintf(err, errlen, "enrichment: cannot initialise");
        goto fail;
    }
    e->conf = c;
    e->results_ref = LUA_NOREF;
    e->fetches = calloc((size_t)c->metadata_concurrency, sizeof *e->fetches);
    e->multi = curl_multi_init();
    e->pg = pg_conn_new(c->database_url, c->statement_timeout_ms);
    if (!e->fetches || !e->multi || !e->pg) {
        snprintf(err, errlen, "enrichment: out of memory");
        goto fail;
    }
    pg_conn_set_statement_cache(e->pg, c->prepared_statements);
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)c->metadata_concurrency);
    set_state(ENRICH_CLOSED);
    if (pthread_create(&e->thread, NULL, enrich_run, e) != 0) {
        snprintf(err, errlen, "enrichment: cannot start its thread");
        set_state(ENRICH_DISABLED);
        goto fail;
    }
    running = e;
    log_info("enrichment: fetching title metadata from %s (%d at a time, %d/s)",
             c->metadata_provider_url, c->metadata_concurrency, c->metadata_rate_per_s);
    return 0;
fail:
    enrich_free(e);
    return -1;
}

void enrich_stop(void)
{
    struct enrich *e = running;
    if (!e)
        return;
    atomic_store(&e->stop, 1);
    curl_multi_wakeup(e->multi);
    pthread_join(e->thread, NULL);
    running = NULL;
    set_state(ENRICH_DISABLED);
    enrich_free(e);
}

/* host.enrichment.state() */
static int l_state(lua_State *L)
{
    lua_pushstring(L, state_names[enrich_state()]);
    return 1;
}

/* host.enrichment.hold(true | false) */
static int l_hold(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    enrich_hold(lua_toboolean(L, 1));
    return 0;
}

int enrich_luaopen(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"state", l_state}, {"hold", l_hold}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
