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
#define MAX_COUNTERS 32
#define MAX_HISTOGRAMS 4
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

struct counter {
    char name[48];
    char label[24];
    char value[32];
    double value_n;
};

struct histogram {
    char name[48];
    unsigned long count;
    double sum_ms;
    unsigned long buckets[NBUCKETS];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct series series[MAX_SERIES];
static size_t nseries;
static unsigned long dropped;
static struct gauge gauges[MAX_GAUGES];
static size_t ngauges;
static struct counter counters[MAX_COUNTERS];
static size_t ncounters;
static struct histogram histograms[MAX_HISTOGRAMS];
static size_t nhistograms;

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

void metrics_count(const char *name, const char *label, const char *value, double n)
{
    pthread_mutex_lock(&lock);
    size_t i = 0;
    while (i < ncounters && (strcmp(counters[i].name, name) || strcmp(counters[i].label, label) ||
                             strcmp(counters[i].value, value)))
        i++;
    if (i == ncounters && ncounters < MAX_COUNTERS) {
        struct counter *c = &counters[ncounters++];
        snprintf(c->name, sizeof c->name, "%s", name);
        snprintf(c->label, sizeof c->label, "%s", label);
        snprintf(c->value, sizeof c->value, "%s", value);
        for (char *p = c->value; *p; p++)       /* label values must not close their quotes */
            if (*p == '"' || *p == '\\' || *p == '\n')
                *p = '_';
    }
    if (i < ncounters)
        counters[i].value_n += n;
    else
        dropped++;
    pthread_mutex_unlock(&lock);
}

void metrics_histogram(const char *name, double ms)
{
    pthread_mutex_lock(&lock);
    size_t i = 0;
    while (i < nhistograms && strcmp(histograms[i].name, name))
        i++;
    if (i == nhistograms && nhistograms < MAX_HISTOGRAMS)
        snprintf(histograms[nhistograms++].name, sizeof histograms[0].name, "%s", name);
    if (i < nhistograms) {
        struct histogram *h = &histograms[i];
        h->count++;
        h->sum_ms += ms;
        for (size_t b = 0; b < NBUCKETS; b++)
            if (ms <= buckets_ms[b])
                h->buckets[b]++;
    } else {
        dropped++;
    }
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
    for (size_t i = 0; i < ncounters; i++) {     /* one block per name, in first-seen order */
        size_t first = 0;
        while (strcmp(counters[first].name, counters[i].name))
            first++;
        if (first != i)
            continue;
        put(&o, "# TYPE shelfsync_%s counter\n", counters[i].name);
        for (size_t j = i; j < ncounters; j++) {
            const struct counter *c = &counters[j];
            if (!strcmp(c->name, counters[i].name))
                put(&o, "shelfsync_%s{%s=\"%s\"} %g\n", c->name, c->label, c->value, c->value_n);
        }
    }
    for (size_t i = 0; i < nhistograms; i++) {
        const struct histogram *h = &histograms[i];
        put(&o, "# TYPE shelfsync_%s histogram\n", h->name);
        for (size_t b = 0; b < NBUCKETS; b++)
            put(&o, "shelfsync_%s_bucket{le=\"%g\"} %lu\n", h->name, buckets_ms[b], h->buckets[b]);
        put(&o, "shelfsync_%s_bucket{le=\"+Inf\"} %lu\nshelfsync_%s_sum %.3f\nshelfsync_%s_count %lu\n",
            h->name, h->count, h->name, h->sum_ms, h->name, h->count);
    }
    for (size_t i = 0; i < ngauges; i++)
        put(&o, "# TYPE shelfsync_%s gauge\nshelfsync_%s %g\n", gauges[i].name, gauges[i].name, gauges[i].value);
    pthread_mutex_unlock(&lock);
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    return o.buf;
}
