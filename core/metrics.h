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

/* Renders everything as Prometheus text. Returns a malloc'd string (caller frees) or NULL. */
char *metrics_render(void);

#endif
