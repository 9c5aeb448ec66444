/*
** worker.c: the Lua worker pool.
*/
#include "worker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "pg.h"
#include "reload.h"
#include "scripts.h"
#include "vm.h"

struct worker_pool {
    const struct conf *conf;
    pthread_t watchdog;
    int watchdog_running;
    pthread_mutex_t lock;
    pthread_cond_t ready[WORKER_LANES];
    struct job *head[WORKER_LANES], *tail[WORKER_LANES];
    int stopping;
    int n;     /* threads started */
    int total; /* workers: conf->workers general + conf->import_workers heavy */
    struct worker *workers;
    pthread_t *threads;
};

/* At a job boundary: swap in a VM built from the newest published snapshot. */
static void refresh_vm(struct worker_pool *p, struct worker *w)
{
    if (reload_generation() == w->generation)
        return;
    struct scripts *s = reload_current();
    if (!s)
        return;
    char err[1024];
    lua_State *L = s->generation == w->generation ? NULL : vm_new(p->conf, s, err, sizeof err);
    if (L) {
        pg_attach(L, w->pg);
        vm_close(w->L);
        w->L = L;
    } else if (s->generation != w->generation) {
        log_error("worker %d keeps generation %lu: %s", w->id, w->generation, err);
    }
    w->generation = s->generation;
    scripts_unref(s);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Arms the instruction budget of jobs that have run WORKER_ARM_MS. */
static void *watch(void *arg)
{
    struct worker_pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        int stopping = p->stopping;
        pthread_mutex_unlock(&p->lock);
        if (stopping)
            return NULL;
        long now = now_ms();
        for (int i = 0; i < p->n; i++) {
            struct worker *w = &p->workers[i];
            pthread_mutex_lock(&w->watch_lock);
            if (w->job_started_ms && !w->armed && now - w->job_started_ms >= WORKER_ARM_MS) {
                vm_budget_arm(w->L);
                w->armed = 1;
            }
            pthread_mutex_unlock(&w->watch_lock);
        }
        usleep(WORKER_ARM_MS * 1000 / 2);
    }
}

static void job_begin(struct worker *w)
{
    pthread_mutex_lock(&w->watch_lock);
    w->job_started_ms = now_ms();
    w->armed = 0;
    pthread_mutex_unlock(&w->watch_lock);
}

static void job_end(struct worker *w)
{
    pthread_mutex_lock(&w->watch_lock);
    w->job_started_ms = 0;
    if (w->armed)
        vm_budget_disarm(w->L);
    w->armed = 0;
    pthread_mutex_unlock(&w->watch_lock);
}

struct worker_arg {
    struct worker_pool *pool;
    struct worker *w;
};

static void *run(void *arg)
{
    struct worker_pool *p = ((struct worker_arg *)arg)->pool;
    struct worker *w = ((struct worker_arg *)arg)->w;
    free(arg);
    int lane = w->lane;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (!p->head[lane] && !p->stopping)
            pthread_cond_wait(&p->ready[lane], &p->lock);
        struct job *job = p->head[lane];
        if (!job) {                      /* stopping and drained */
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        p->head[lane] = job->next;
        if (!p->head[lane])
            p->tail[lane] = NULL;
        pthread_mutex_unlock(&p->lock);
        refresh_vm(p, w);
        job_begin(w);
        job->run(w, job);
        job_end(w);
        pg_conn_reset(w->pg);
    }
}

struct worker_pool *worker_pool_start(const struct conf *c, char *err, size_t errlen)
{
    struct worker_pool *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->conf = c;
    p->total = c->workers + c->import_workers;
    pthread_mutex_init(&p->lock, NULL);
    for (int l = 0; l < WORKER_LANES; l++)
        pthread_cond_init(&p->ready[l], NULL);
    p->workers = calloc((size_t)p->total, sizeof *p->workers);
    p->threads = calloc((size_t)p->total, sizeof *p->threads);
    if (!p->workers || !p->threads) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = 0; i < p->total; i++) /* all of them, so a failed start can destroy all */
        pthread_mutex_init(&p->workers[i].watch_lock, NULL);
    for (int i = 0; i < p->total; i++) {
        struct worker *w = &p->workers[i];
        w->id = i;
        w->lane = i < c->workers ? WORKER_LANE_GENERAL : WORKER_LANE_HEAVY;
        struct scripts *s = reload_current();
        w->L = s ? vm_new(c, s, err, errlen) : NULL;
        w->generation = s ? s->generation : 0;
        scripts_unref(s);
        if (!w->L)
            goto fail;
        w->pg = pg_conn_new(c->database_url, c->statement_timeout_ms);
        if (!w->pg) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        pg_conn_set_statement_cache(w->pg, c->prepared_statements);
        pg_attach(w->L, w->pg);
    }
    for (int i = 0; i < p->total; i++) {
        struct worker_arg *a = malloc(sizeof *a);
        if (!a) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        a->pool = p;
        a->w = &p->workers[i];
        if (pthread_create(&p->threads[i], NULL, run, a) != 0) {
            free(a);
            snprintf(err, errlen, "cannot start worker threads");
            goto fail;
        }
        p->n++;
    }
    if (pthread_create(&p->watchdog, NULL, watch, p) != 0) {
        snprintf(err, errlen, "cannot start the watchdog thread");
        goto fail;
    }
    p->watchdog_running = 1;
    return p;
fail:
    worker_pool_stop(p);
    return NULL;
}

void worker_pool_submit(struct worker_pool *p, struct job *job)
{
    int lane = job->lane == WORKER_LANE_HEAVY && p->total > p->conf->workers ? WORKER_LANE_HEAVY
                                                                             : WORKER_LANE_GENERAL;
    job->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->tail[lane])
        p->tail[lane]->next = job;
    else
        p->head[lane] = job;
    p->tail[lane] = job;
    pthread_cond_signal(&p->ready[lane]);
    pthread_mutex_unlock(&p->lock);
}

void worker_pool_stop(struct worker_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    for (int l = 0; l < WORKER_LANES; l++)
        pthread_cond_broadcast(&p->ready[l]);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    if (p->watchdog_running)
        pthread_join(p->watchdog, NULL);
    for (int i = 0; p->workers && i < p->total; i++) {
        vm_close(p->workers[i].L);
        pthread_mutex_destroy(&p->workers[i].watch_lock);
        if (p->workers[i].pg)
            pg_conn_free(p->workers[i].pg);
    }
    pthread_mutex_destroy(&p->lock);
    for (int l = 0; l < WORKER_LANES; l++)
        pthread_cond_destroy(&p->ready[l]);
    free(p->workers);
    free(p->threads);
    free(p);
}
