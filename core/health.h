/*
** health: what GET /healthz reports, kept by the host itself. A prober thread owns one
** PostgreSQL connection and runs `SELECT 1` every 250 ms with a client-side deadline
** under a second; the routes' state comes from reload. The polling thread answers
** /healthz from this, so a load balancer gets an answer while every worker is busy or
** the database hangs.
*/
#ifndef SHELFSYNC_HEALTH_H
#define SHELFSYNC_HEALTH_H

#include <stddef.h>

/* Probes once, then starts the prober on conninfo. 0, or -1 with err. */
int health_start(const char *conninfo, char *err, size_t errlen);
void health_stop(void);

/* 1 when the last probe, finished within the last 1.5 s, reached the database. */
int health_db_ok(void);

/* Writes the /healthz JSON body into out; returns its status (200, or 503 without a database). */
int health_render(char *out, size_t len);

#endif
