/*
** log.c: JSON-lines logging. Each line is built in a stack buffer and written with one
** write(2), so lines from concurrent workers never interleave.
*/
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_INFO;
static const char *level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, level_names[i]))
            min_level = (enum log_level)i;
}

size_t log_json_str(char *buf, size_t len, size_t cap, const char *s)
{
    if (len + 2 >= cap)
        return len;
    buf[len++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p && len + 8 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            buf[len++] = '\\';
            buf[len++] = (char)*p;
        } else if (*p < 0x20) {
            len += (size_t)snprintf(buf + len, cap - len, "\\u%04x", *p);
        } else {
            buf[len++] = (char)*p;
        }
    }
    buf[len++] = '"';
    buf[len] = '\0';
    return len;
}

static size_t put_time(char *buf, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, cap, "{\"time\":\"%Y-%m-%dT%H:%M:%S", &tm);
    return n + (size_t)snprintf(buf + n, cap - n, ".%03ldZ\"", ts.tv_nsec / 1000000);
}

static void emit(char *buf, size_t len, size_t cap)
{
    if (len + 2 > cap)
        len = cap - 2;
    buf[len++] = '}';
    buf[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, buf, len);
    (void)w;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    if (lvl < min_level)
        return;
    char msg[4096], buf[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = put_time(buf, sizeof buf);
    n += (size_t)snprintf(buf + n, sizeof buf - n, ",\"level\":\"%s\",\"msg\":", level_names[lvl]);
    n = log_json_str(buf, n, sizeof buf - 4, msg);
    emit(buf, n, sizeof buf);
}

void log_request(const char *request_id, const char *method, const char *path,
                 int status, double ms, size_t bytes)
{
    char buf[4096];
    size_t n = put_time(buf, sizeof buf);
    n += (size_t)snprintf(buf + n, sizeof buf - n, ",\"level\":\"info\",\"requestId\":");
    n = log_json_str(buf, n, sizeof buf - 128, request_id ? request_id : "");
    n += (size_t)snprintf(buf + n, sizeof buf - n, ",\"method\":");
    n = log_json_str(buf, n, sizeof buf - 128, method ? method : "");
    n += (size_t)snprintf(buf + n, sizeof buf - n, ",\"path\":");
    n = log_json_str(buf, n, sizeof buf - 100, path ? path : "");
    n += (size_t)snprintf(buf + n, sizeof buf - n, ",\"status\":%d,\"ms\":%.2f,\"bytes\":%zu",
                          status, ms, bytes);
    emit(buf, n, sizeof buf);
}
