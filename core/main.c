/*
** main.c: the shelfsync command line.
**
**   shelfsync serve [--config FILE]   run the HTTP server
**   shelfsync migrate [--config FILE] apply sql/NNN_*.sql
**   shelfsync check [--config FILE]   compile every Lua file; exit 1 with file:line on error
**   shelfsync cleanup [--config FILE] delete expired tokens and sessions once
**   shelfsync config [--config FILE]  print the resolved configuration (secrets redacted)
**   shelfsync import --user EMAIL [--source S] [--marketplace M] [--config FILE] FILE
**                                     import a library file for a user, as POST /api/import
**   shelfsync version
*/
#include <lauxlib.h>
#include <lualib.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "enrich.h"
#include "health.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "pg.h"
#include "reload.h"
#include "scripts.h"
#include "vm.h"
#include "worker.h"

#define SHELFSYNC_VERSION "0.1.0"

static int usage(void)
{
    fprintf(stderr, "usage: shelfsync serve|migrate|check|cleanup|config|version [--config FILE]\n"
                    "       shelfsync import --user EMAIL [--source S] [--marketplace M] [--config FILE] FILE\n");
    return 2;
}

static int load_conf(struct conf *c, const char *path, int flags)
{
    char err[1024];
    if (conf_load(c, path, flags, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    log_set_level(c->log_level);
    return 0;
}

static int run_migrations(const struct conf *c)
{
    char dir[4200], err[2048];
    const char *env = getenv("SHELFSYNC_SQL_DIR");
    snprintf(dir, sizeof dir, "%s", env ? env : "");
    if (!env)
        snprintf(dir, sizeof dir, "%s/sql", c->root);
    if (!*c->database_url) {
        log_error("no database: set DATABASE_URL (make run / make test start the embedded one)");
        return -1;
    }
    if (migrate_run(c->database_url, dir, err, sizeof err) < 0) {
        log_error("migration failed: %s", err);
        return -1;
    }
    return 0;
}

/* Runs app.cleanup() in L; used by `cleanup` and by the server's timer. */
static int call_cleanup(lua_State *L)
{
    char err[2048];
    if (vm_push_app_fn(L, "cleanup") < 0)
        return 0;
    if (vm_call(L, 0, 0, err, sizeof err) != LUA_OK) {
        lua_pop(L, 1);
        log_error("cleanup failed: %s", err);
        return -1;
    }
    return 0;
}

static int cmd_cleanup(const struct conf *c)
{
    char err[2048];
    struct scripts *s = scripts_load(c->root, err, sizeof err);
    lua_State *L = s ? vm_new(c, s, err, sizeof err) : NULL;
    scripts_unref(s);
    if (!L) {
        log_error("%s", err);
        return 1;
    }
    struct pg_conn *pg = pg_conn_new(c->database_url, c->statement_timeout_ms);
    if (!pg) {
        log_error("out of memory");
        vm_close(L);
        return 1;
    }
    pg_conn_set_statement_cache(pg, c->prepared_statements);
    pg_attach(L, pg);
    int rc = call_cleanup(L);
    vm_close(L);
    pg_conn_free(pg);
    return rc < 0 ? 1 : 0;
}

struct import_args {
    const char *user, *source, *marketplace, *file;
};

/* Reads a whole file into a malloc'd buffer (*len bytes). NULL with errno on failure. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f)
        return NULL;
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 1 << 20;
            char *grown = realloc(buf, ncap);
            if (!grown)
                goto fail;
            buf = grown;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f))
        goto fail;
    fclose(f);
    *len = n;
    return buf;
fail:
    fclose(f);
    free(buf);
    return NULL;
}

/* Runs app.import_file(email, source, marketplace, bytes): the route's own import. Prints
   the answer on stdout (0) or the error on stderr (1). */
static int cmd_import(const struct conf *c, const struct import_args *a)
{
    char err[2048];
    size_t len = 0;
    int rc = 1;
    lua_State *L = NULL;
    struct pg_conn *pg = NULL;
    char *bytes = read_file(a->file, &len);
    if (!bytes) {
        log_error("cannot read %s", a->file);
        return 1;
    }
    struct scripts *s = scripts_load(c->root, err, sizeof err);
    L = s ? vm_new(c, s, err, sizeof err) : NULL;
    scripts_unref(s);
    if (!L) {
        log_error("%s", err);
        goto fail;
    }
    pg = pg_conn_new(c->database_url, c->statement_timeout_ms);
    if (!pg) {
        log_error("out of memory");
        goto fail;
    }
    pg_conn_set_statement_cache(pg, c->prepared_statements);
    pg_attach(L, pg);
    if (vm_push_app_fn(L, "import_file") < 0) {
        log_error("lua/app.lua has no import_file");
        goto fail;
    }
    lua_pushstring(L, a->user);
    lua_pushstring(L, a->source);
    lua_pushstring(L, a->marketplace);
    lua_pushlstring(L, bytes, len);
    free(bytes);
    bytes = NULL;
    if (vm_call(L, 4, 2, err, sizeof err) != LUA_OK) {
        log_error("import failed: %s", err);
        goto fail;
    }
    if (lua_isstring(L, -2)) {
        printf("%s\n", lua_tostring(L, -2));
        rc = 0;
    } else {
        fprintf(stderr, "%s\n", lua_isstring(L, -1) ? lua_tostring(L, -1) : "import failed");
    }
fail:
    free(bytes);
    if (L)
        vm_close(L);
    if (pg)
        pg_conn_free(pg);
    return rc;
}

/* ---- serve ---- */

struct cleanup_job {
    struct job job;
    atomic_int busy;            /* set by the main thread, cleared by the worker */
};

static void run_cleanup_job(struct worker *w, struct job *job)
{
    call_cleanup(w->L);
    atomic_store(&((struct cleanup_job *)job)->busy, 0);
}

static void write_port_file(int port)
{
    const char *path = getenv("SHELFSYNC_PORT_FILE");
    if (!path)
        return;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "%d\n", port);
    fclose(f);
    rename(tmp, path);
}

/* Signals are taken synchronously by the main thread; every other thread blocks them. */
static void block_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void drain_inflight(struct http_server *srv, int grace_s)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (http_server_inflight(srv) > 0) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec >= grace_s) {
            log_warn("shutdown: %d request(s) still running after %d s", http_server_inflight(srv), grace_s);
            break;
        }
        usleep(10000);
    }
}

static int cmd_serve(struct conf *c)
{
    char err[2048];
    sigset_t set;
    /* glibc gives each thread its own arena, each keeping the high-water mark of the
       largest import it served; two arenas bound that without measurable contention. */
    mallopt(M_ARENA_MAX, 2);
    block_signals(&set);
    if (c->migrate_on_start && run_migrations(c) < 0)
        return 1;
    if (reload_start(c, err, sizeof err) < 0) {
        log_error("%s", err);
        return 1;
    }
    struct worker_pool *pool = worker_pool_start(c, err, sizeof err);
    if (!pool) {
        log_error("cannot start: %s", err);
        reload_stop();
        return 1;
    }
    struct http_server *srv = NULL;
    if (health_start(c->database_url, err, sizeof err) < 0 ||
        !(srv = http_server_start(c, pool, err, sizeof err))) {
        log_error("%s", err);
        health_stop();
        worker_pool_stop(pool);
        reload_stop();
        return 1;
    }
    if (enrich_start(c, err, sizeof err) < 0)
        log_error("%s; serving without title enrichment", err);
    write_port_file(http_server_port(srv));
    metrics_set_gauge("workers", c->workers);
    log_info("shelfsync %s listening on http://%s:%d with %d workers (+%d for imports)",
             SHELFSYNC_VERSION, c->listen_host, http_server_port(srv), c->workers,
             c->import_workers);

    struct cleanup_job cleanup = {.job = {.run = run_cleanup_job}};
    time_t next_cleanup = time(NULL) + c->cleanup_interval_s;
    struct timespec tick = {1, 0};
    for (;;) {
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGHUP) {
            log_info("SIGHUP: reloading routes");
            reload_request();
        } else if (sig == SIGTERM || sig == SIGINT) {
            break;
        }
        if (c->cleanup_interval_s > 0 && time(NULL) >= next_cleanup && !atomic_load(&cleanup.busy)) {
            atomic_store(&cleanup.busy, 1);
            worker_pool_submit(pool, &cleanup.job);
            next_cleanup = time(NULL) + c->cleanup_interval_s;
        }
    }
    log_info("shutting down: no new connections, finishing in-flight requests");
    http_server_quiesce(srv);
    drain_inflight(srv, c->shutdown_grace_s);
    enrich_stop();
    worker_pool_stop(pool);     /* answers anything still queued and resumes it */
    http_server_stop(srv);
    health_stop();
    reload_stop();
    log_info("stopped");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *cmd = argv[1], *config = NULL;
    struct import_args imp = {0};
    int is_import = !strcmp(cmd, "import");
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[++i];
        else if (is_import && !strcmp(argv[i], "--user") && i + 1 < argc)
            imp.user = argv[++i];
        else if (is_import && !strcmp(argv[i], "--source") && i + 1 < argc)
            imp.source = argv[++i];
        else if (is_import && !strcmp(argv[i], "--marketplace") && i + 1 < argc)
            imp.marketplace = argv[++i];
        else if (is_import && argv[i][0] != '-' && !imp.file)
            imp.file = argv[i];
        else
            return usage();
    }
    if (is_import && (!imp.user || !imp.file))
        return usage();
    if (!strcmp(cmd, "version")) {
        printf("shelfsync %s\n", SHELFSYNC_VERSION);
        return 0;
    }
    struct conf c;
    int rc;
    if (!strcmp(cmd, "serve")) {
        if (load_conf(&c, config, 0) < 0)
            return 1;
        rc = cmd_serve(&c);
    } else if (!strcmp(cmd, "migrate")) {
        if (load_conf(&c, config, CONF_NO_SECRET) < 0)
            return 1;
        rc = run_migrations(&c) < 0 ? 1 : 0;
        if (rc == 0)
            log_info("migrations applied");
    } else if (!strcmp(cmd, "check")) {
        char err[2048];
        if (load_conf(&c, config, CONF_NO_SECRET) < 0)
            return 1;
        rc = vm_check(&c, err, sizeof err) < 0 ? 1 : 0;
        if (rc)
            fprintf(stderr, "%s\n", err);
        else
            printf("ok: lua/ and routes/ compile and load\n");
    } else if (!strcmp(cmd, "config")) {
        if (load_conf(&c, config, CONF_NO_SECRET) < 0)
            return 1;
        rc = printf("%s\n", c.json_redacted) < 0;
    } else if (!strcmp(cmd, "cleanup")) {
        if (load_conf(&c, config, CONF_NO_SECRET) < 0)
            return 1;
        rc = cmd_cleanup(&c);
    } else if (is_import) {
        if (load_conf(&c, config, CONF_NO_SECRET) < 0)
            return 1;
        rc = cmd_import(&c, &imp);
    } else {
        return usage();
    }
    conf_free(&c);
    return rc;
}
