/*
** log: one JSON object per line on stderr. Thread-safe (one write(2) per line).
*/
#ifndef SHELFSYNC_LOG_H
#define SHELFSYNC_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(const char *name);          /* "debug" | "info" | "warn" | "error" */
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/* The access log line: time, request id, method, path, status, ms, bytes. */
void log_request(const char *request_id, const char *method, const char *path,
                 int status, double ms, size_t bytes);

/* Appends s as a JSON string literal (quotes included) to buf; returns the new length,
   never writing past cap (truncates). */
size_t log_json_str(char *buf, size_t len, size_t cap, const char *s);

#endif
