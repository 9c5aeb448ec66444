/*
** worker: the pool of threads that run Lua. Each worker owns one VM (rebuilt when the
** reload generation moves, at a job boundary) and one PostgreSQL connection that outlives
** its VMs. Jobs are FIFO per lane; a job runs start to finish on one worker.
** Two lanes: conf->workers general workers, and conf->import_workers that only run heavy
** jobs (requests with large bodies: imports), so that at most that many imports run at
** once and reads never queue behind them. Without import workers, heavy jobs run in the
** general lane.
*/
#ifndef SHELFSYNC_WORKER_H
#define SHELFSYNC_WORKER_H

#include <lua.h>
#include <pthread.h>

struct conf;
struct pg_conn;

enum worker_lane { WORKER_LANE_GENERAL, WORKER_LANE_HEAVY, WORKER_LANES };

struct worker {
    int id;
    enum worker_lane lane;
    lua_State *L;                  /* owned; never NULL while running jobs */
    unsigned long generation;      /* of L */
    struct pg_conn *pg;            /* owned */
    /* Watchdog state, guarded by watch_lock: when the running job began (0: idle) and
       whether the instruction budget has been armed on L for it. */
    pthread_mutex_t watch_lock;
    long job_started_ms;
    int armed;
};

#define WORKER_ARM_MS 250

struct job {
    void (*run)(struct worker *w, struct job *job);   /* must not free job while queued */
    enum worker_lane lane;
    struct job *next;
};

struct worker_pool;

/*
** Starts c->workers threads, each with a VM built now (a broken script tree fails the
** start, with the error in err). Returns the pool (release with worker_pool_stop) or NULL.
*/
struct worker_pool *worker_pool_start(const struct conf *c, char *err, size_t errlen);

/* Queues a job; it runs on the next free worker. Thread-safe. */
void worker_pool_submit(struct worker_pool *p, struct job *job);

/* Lets queued jobs finish, joins the threads, frees every VM and connection. */
void worker_pool_stop(struct worker_pool *p);

#endif
