/*
** http_frame: checks a request's raw target and header fields before anything acts on
** them, so that no request whose framing two parsers could read differently (request
** smuggling behind a proxy) and no request libmicrohttpd would silently rewrite (a %00
** cutting the path) is served. Pure functions: no libmicrohttpd, no allocation.
*/
#ifndef SHELFSYNC_HTTP_FRAME_H
#define SHELFSYNC_HTTP_FRAME_H

#include <stddef.h>

struct http_frame_limits {
    size_t max_target_bytes; /* path + query as sent */
    size_t max_query_params;
    size_t max_header_bytes; /* names + values, all fields */
    size_t max_headers;
};

/* The refusal: status, snake_case code, message; connection must close when `close`. */
struct http_frame_verdict {
    int status;
    const char *code, *message;
    int close;
};

/*
** Checks the request target exactly as the client sent it (before percent-decoding).
** Returns 0, or -1 with *v filled (414 target too long, 400 NUL byte, 400 too many
** query parameters).
*/
int http_frame_check_target(const char *target, const struct http_frame_limits *lim,
                            struct http_frame_verdict *v);

/* Header fields, fed one at a time, then judged once. Start from a zeroed struct. */
struct http_frame_fields {
    size_t count, bytes;
    int bad_name; /* a name with whitespace or a non-token character */
    int content_lengths, cl_differ, transfer_encodings, te_not_chunked;
    char first_cl[32];
};

void http_frame_add_field(struct http_frame_fields *f, const char *name, const char *value);

/*
** Judges the fields: 400 (ambiguous framing, malformed name; close), 501 (a
** Transfer-Encoding other than one "chunked"; close) or 431 (too many / too large).
** Returns 0, or -1 with *v filled.
*/
int http_frame_check_fields(const struct http_frame_fields *f, const struct http_frame_limits *lim,
                            struct http_frame_verdict *v);

#endif
