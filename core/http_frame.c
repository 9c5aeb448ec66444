/*
** http_frame.c: request framing and target checks; see http_frame.h.
*/
#include "http_frame.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int refuse(struct http_frame_verdict *v, int status, const char *code, const char *msg,
                  int close)
{
    v->status = status;
    v->code = code;
    v->message = msg;
    v->close = close;
    return -1;
}

int http_frame_check_target(const char *target, const struct http_frame_limits *lim,
                            struct http_frame_verdict *v)
{
    size_t len = strlen(target);
    if (len > lim->max_target_bytes)
        return refuse(v, 414, "uri_too_long",
                      "the request target is longer than this server accepts", 0);
    /* libmicrohttpd decodes %00 into a NUL that silently ends the path or the value. */
    for (const char *p = target; (p = strchr(p, '%')); p++)
        if (p[1] == '0' && p[2] == '0')
            return refuse(v, 400, "bad_request", "the path or query contains a NUL byte (%00)", 0);
    const char *q = strchr(target, '?');
    size_t params = 0;
    for (const char *p = q; p && *p; p++)
        if (*p == '&' || *p == '?' || *p == ';')
            params++;
    if (params > lim->max_query_params)
        return refuse(v, 400, "too_many_parameters",
                      "the query has more parameters than this server accepts", 0);
    return 0;
}

/* RFC 9110 token characters: what a field name may hold. */
static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

void http_frame_add_field(struct http_frame_fields *f, const char *name, const char *value)
{
    f->count++;
    f->bytes += strlen(name) + strlen(value ? value : "");
    if (!*name)
        f->bad_name = 1;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (!is_tchar(*p))
            f->bad_name = 1;
    if (!strcasecmp(name, "Content-Length")) {
        if (f->content_lengths++ == 0)
            snprintf(f->first_cl, sizeof f->first_cl, "%s", value ? value : "");
        else if (strcmp(f->first_cl, value ? value : "") != 0)
            f->cl_differ = 1;
    } else if (!strcasecmp(name, "Transfer-Encoding")) {
        f->transfer_encodings++;
        if (!value || strcasecmp(value, "chunked") != 0)
            f->te_not_chunked = 1;
    }
}

int http_frame_check_fields(const struct http_frame_fields *f, const struct http_frame_limits *lim,
                            struct http_frame_verdict *v)
{
    if (f->bad_name)
        return refuse(v, 400, "malformed_header",
                      "a header field name is not a valid token (whitespace before the colon?)", 1);
    if (f->transfer_encodings && f->content_lengths)
        return refuse(v, 400, "ambiguous_framing",
                      "Content-Length and Transfer-Encoding must not both be sent", 1);
    if (f->cl_differ)
        return refuse(v, 400, "ambiguous_framing",
                      "Content-Length is sent more than once with different values", 1);
    if (f->transfer_encodings > 1 || f->te_not_chunked)
        return refuse(v, 501, "unsupported_transfer_encoding",
                      "the only Transfer-Encoding accepted is chunked", 1);
    if (f->count > lim->max_headers || f->bytes > lim->max_header_bytes)
        return refuse(v, 431, "headers_too_large",
                      "the request's header fields are larger than this server accepts", 1);
    return 0;
}
