/*
** metrics: process-wide request counters and latency histograms, rendered as Prometheus
** text for GET /metrics. Keys are route templates ("/api/lists/:id"), never raw paths, so
** the number of series stays bounded by the route table.
*/
#ifndef SHELFSYNC_METRICS_H
#define SHELFSYNC_METRICS_H

#include <stddef.h>

/* Records one finished request. route may be NULL (answered before routing). Thread-safe. */
void metrics_observe(const char *method, const char *route, int status, double ms);

/* Sets a gauge shown as shelfsync_<name> (e.g. "workers"). Thread-safe. */
void metrics_set_gauge(const char *name, double value);

/* Adds n to the counter shelfsync_<name>{<label>="<value>"}. Thread-safe. */
void metrics_count(const char *name, const char *label, const char *value, double n);
/* Records one observation in the histogram shelfsync_<name> (the request latency buckets,
   milliseconds). Thread-safe. */
void metrics_histogram(const char *name, double ms);
/* Renders everything as Prometheus text. Returns a malloc'd string (caller frees) or NULL. */
char *metrics_render(void);

#endif
