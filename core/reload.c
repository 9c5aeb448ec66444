/*
** reload.c: the watcher thread behind hot reload.
*/
#include "reload.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>
#include <lua.h>

#include "conf.h"
#include "log.h"
#include "routes.h"
#include "scripts.h"
#include "vm.h"

#define DEBOUNCE_MS 100
#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE)

static atomic_ulong generation = 1;
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct scripts *current;        /* the last snapshot that passed its check */
static char last_error[1024];
static const struct conf *conf;
static int inotify_fd = -1, wake_fd = -1;
static atomic_int stopping;
static pthread_t thread;
static int running;

unsigned long reload_generation(void)
{
    return atomic_load(&generation);
}

void reload_last_error(char *buf, size_t len)
{
    pthread_mutex_lock(&err_lock);
    snprintf(buf, len, "%s", last_error);
    pthread_mutex_unlock(&err_lock);
}

void reload_set_error(const char *msg)
{
    pthread_mutex_lock(&err_lock);
    snprintf(last_error, sizeof last_error, "%s", msg ? msg : "");
    pthread_mutex_unlock(&err_lock);
}

struct scripts *reload_current(void)
{
    pthread_mutex_lock(&current_lock);
    struct scripts *s = current;
    if (s)
        scripts_ref(s);
    pthread_mutex_unlock(&current_lock);
    return s;
}

static void publish(struct scripts *s)
{
    pthread_mutex_lock(&current_lock);
    struct scripts *old = current;
    current = s;
    pthread_mutex_unlock(&current_lock);
    scripts_unref(old);
}

void reload_request(void)
{
    uint64_t one = 1;
    if (wake_fd >= 0) {
        ssize_t w = write(wake_fd, &one, sizeof one);
        (void)w;
    }
}

/* Builds a scratch VM from s and keeps the route table it answers in s. */
static int check_snapshot(struct scripts *s, char *err, size_t errlen)
{
    lua_State *L = vm_new(conf, s, err, errlen);
    if (!L)
        return -1;
    int rc = routes_table_read(L, &s->routes, err, errlen);
    vm_close(L);
    return rc;
}

/* Snapshots the tree, checks it, publishes it if it loads. */
static int check_now(void)
{
    char err[1024];
    struct scripts *s = scripts_load(conf->root, err, sizeof err);
    if (!s || check_snapshot(s, err, sizeof err) < 0) {
        /* Keep only the first line: the traceback belongs in the log, not in /healthz. */
        log_error("reload refused, workers keep the last good code: %s", err);
        char *nl = strchr(err, '\n');
        if (nl)
            *nl = '\0';
        reload_set_error(err);
        scripts_unref(s);
        return -1;
    }
    s->generation = atomic_fetch_add(&generation, 1) + 1;
    publish(s);
    reload_set_error("");
    log_info("routes reloaded: generation %lu", s->generation);
    return 0;
}

static void drain(int fd)
{
    char buf[8192];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

static void *watch_loop(void *arg)
{
    (void)arg;
    struct pollfd fds[2] = {{inotify_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    while (!atomic_load(&stopping)) {
        int n = poll(fds, 2, 500);
        if (n <= 0)
            continue;
        /* Editors write in bursts (temp file, rename, chmod): settle before compiling. */
        do {
            if (fds[0].revents & POLLIN) drain(inotify_fd);
            if (fds[1].revents & POLLIN) drain(wake_fd);
        } while (poll(fds, 2, DEBOUNCE_MS) > 0 && !atomic_load(&stopping));
        if (!atomic_load(&stopping))
            check_now();
    }
    return NULL;
}

int reload_start(const struct conf *c, char *err, size_t errlen)
{
    conf = c;
    struct scripts *s = scripts_load(c->root, err, errlen);
    if (!s)
        return -1;
    if (check_snapshot(s, err, errlen) < 0) {
        scripts_unref(s);
        return -1;
    }
    s->generation = atomic_load(&generation);
    publish(s);
    inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (inotify_fd < 0 || wake_fd < 0) {
        snprintf(err, errlen, "inotify/eventfd: %s", strerror(errno));
        return -1;
    }
    const char *dirs[] = {"lua", "routes"};
    for (size_t i = 0; i < 2; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", c->root, dirs[i]);
        if (inotify_add_watch(inotify_fd, path, WATCH_MASK) < 0) {
            snprintf(err, errlen, "cannot watch %s: %s", path, strerror(errno));
            return -1;
        }
    }
    if (pthread_create(&thread, NULL, watch_loop, NULL) != 0) {
        snprintf(err, errlen, "cannot start the reload thread");
        return -1;
    }
    running = 1;
    return 0;
}

void reload_stop(void)
{
    atomic_store(&stopping, 1);
    if (running)
        pthread_join(thread, NULL);
    running = 0;
    if (inotify_fd >= 0) close(inotify_fd);
    if (wake_fd >= 0) close(wake_fd);
    inotify_fd = wake_fd = -1;
    publish(NULL);
}
