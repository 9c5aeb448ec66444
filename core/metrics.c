/*
** metrics.c: a small locked table of series. Requests are counted when MHD reports them
** complete; a lock per observation costs far less than the request itself.
*/
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define MAX_SERIES 512
#define MAX_GAUGES 16
static const double buckets_ms[] = {1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
#define NBUCKETS (sizeof buckets_ms / sizeof buckets_ms[0])

struct series {
    char method[8];
    char route[96];
    int status;
    unsigned long count;
    double sum_ms;
    unsigned long buckets[NBUCKETS];
};

struct gauge {
    char name[48];
    double value;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct series series[MAX_SERIES];
static size_t nseries;
static unsigned long dropped;
static struct gauge gauges[MAX_GAUGES];
static size_t ngauges;

static struct series *find(const char *method, const char *route, int status)
{
    for (size_t i = 0; i < nseries; i++)
        if (series[i].status == status && !strcmp(series[i].route, route) && !strcmp(series[i].method, method))
            return &series[i];
    if (nseries == MAX_SERIES)
        return NULL;
    struct series *s = &series[nseries++];
    snprintf(s->method, sizeof s->method, "%s", method);
    snprintf(s->route, sizeof s->route, "%s", route);
    for (char *p = s->route; *p; p++)       /* label values must not close their quotes */
        if (*p == '"' || *p == '\\' || *p == '\n')
            *p = '_';
    s->status = status;
    return s;
}

void metrics_observe(const char *method, const char *route, int status, double ms)
{
    pthread_mutex_lock(&lock);
    struct series *s = find(method ? method : "", route ? route : "(unrouted)", status);
    if (s) {
        s->count++;
        s->sum_ms += ms;
        for (size_t b = 0; b < NBUCKETS; b++)
            if (ms <= buckets_ms[b])
                s->buckets[b]++;
    } else {
        dropped++;
    }
    pthread_mutex_unlock(&lock);
}

void metrics_set_gauge(const char *name, double value)
{
    pthread_mutex_lock(&lock);
    size_t i = 0;
    while (i < ngauges && strcmp(gauges[i].name, name))
        i++;
    if (i == ngauges && ngauges < MAX_GAUGES)
        snprintf(gauges[ngauges++].name, sizeof gauges[0].name, "%s", name);
    if (i < ngauges)
        gauges[i].value = value;
    pthread_mutex_unlock(&lock);
}

struct out {
    char *buf;
    size_t len, cap;
    int failed;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    if (o->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap + (size_t)n) * 2;
        char *grown = realloc(o->buf, cap);
        if (!grown) {
            o->failed = 1;
            return;
        }
        o->buf = grown;
        o->cap = cap;
    }
}

char *metrics_render(void)
{
    struct out o = {malloc(16384), 0, 16384, 0};
    if (!o.buf)
        return NULL;
    o.buf[0] = '\0';
    pthread_mutex_lock(&lock);
    put(&o, "# HELP shelfsync_requests_total Requests answered, by method, route and status.\n"
            "# TYPE shelfsync_requests_total counter\n");
    for (size_t i = 0; i < nseries; i++)
        put(&o, "shelfsync_requests_total{method=\"%s\",route=\"%s\",status=\"%d\"} %lu\n",
            series[i].method, series[i].route, series[i].status, series[i].count);
    put(&o, "# HELP shelfsync_request_duration_ms Request latency in milliseconds.\n"
            "# TYPE shelfsync_request_duration_ms histogram\n");
    for (size_t i = 0; i < nseries; i++) {
        const struct series *s = &series[i];
        for (size_t b = 0; b < NBUCKETS; b++)
            put(&o, "shelfsync_request_duration_ms_bucket{method=\"%s\",route=\"%s\",status=\"%d\",le=\"%g\"} %lu\n",
                s->method, s->route, s->status, buckets_ms[b], s->buckets[b]);
        put(&o, "shelfsync_request_duration_ms_bucket{method=\"%s\",route=\"%s\",status=\"%d\",le=\"+Inf\"} %lu\n",
            s->method, s->route, s->status, s->count);
        put(&o, "shelfsync_request_duration_ms_sum{method=\"%s\",route=\"%s\",status=\"%d\"} %.3f\n",
            s->method, s->route, s->status, s->sum_ms);
        put(&o, "shelfsync_request_duration_ms_count{method=\"%s\",route=\"%s\",status=\"%d\"} %lu\n",
            s->method, s->route, s->status, s->count);
    }
    put(&o, "# HELP shelfsync_series_dropped_total Observations not recorded: the series table is full.\n"
            "# TYPE shelfsync_series_dropped_total counter\nshelfsync_series_dropped_total %lu\n", dropped);
    for (size_t i = 0; i < ngauges; i++)
        put(&o, "# TYPE shelfsync_%s gauge\nshelfsync_%s %g\n", gauges[i].name, gauges[i].name, gauges[i].value);
    pthread_mutex_unlock(&lock);
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    return o.buf;
}
