/*
** http_server.c: libmicrohttpd front end; see http_server.h for the shape.
*/
#include "http_server.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <malloc.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "gzip.h"
#include "health.h"
#include "http_frame.h"
#include "http_peer.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "reload.h"
#include "routes.h"
#include "scripts.h"
#include "vm.h"
#include "web_static.h"
#include "worker.h"

#define GZIP_MIN_BYTES 1024
/* After a request this large, the worker collects its garbage and hands memory back to
   the system, so one big import does not keep a worker's heap at its peak. */
#define BIG_REQUEST_BYTES (1 << 20)
/* libmicrohttpd's per-connection memory: the request line, the header fields and their
   index must fit, or it answers by itself (HTML) or not at all. Sized well above our own
   limits (conf: max_url_bytes, max_header_bytes), so that our code decides. */
#define MHD_POOL_BYTES(c) (2 * ((c)->max_url_bytes + (c)->max_header_bytes) + 64 * 1024)
#define RETRY_AFTER_S "5"
#define MAX_HEADER_FIELDS 100
#define MAX_QUERY_PARAMS 200

#define EXPOSE_HEADERS "X-Request-Id, ETag"

struct http_server {
    const struct conf *conf;
    struct worker_pool *pool;
    struct MHD_Daemon *daemon;
    struct web_static *web;
    struct http_frame_limits limits;
    struct http_peers *peers;
    atomic_size_t buffered; /* request body bytes held, all connections together */
    atomic_int inflight;
    int port;
};

struct kv {
    char *key, *val;
};

struct kvlist {
    struct kv *items;
    size_t n, cap;
};

/* One request, from the first callback to MHD's "completed" notification. */
struct request {
    struct job job;                 /* first: the worker pool queues &req->job */
    struct http_server *srv;
    struct MHD_Connection *conn;
    struct http_peer *peer; /* the connection's record; NULL if untracked */
    char method[16];
    char *path;
    char request_id[65];
    char route[96];                 /* the matched route template, from Lua; "" if none */
    char remote[INET6_ADDRSTRLEN];
    struct kvlist headers, query, cookies;
    char *body;
    size_t len, cap, limit, seen;   /* limit: the route's body_limit (core/routes.h) */
    enum routes_auth auth;          /* the route's authentication */
    char audience[ROUTES_AUDIENCE_MAX + 1]; /* a bearer route's token audience (and realm) */
    int routed;                     /* a Lua route matches: the static files do not answer */
    char *allow_origin;             /* owned: its CORS Access-Control-Allow-Origin, or NULL */
    int started, dispatched, health;
    int web;                        /* the web app's files may answer, once the body is read */
    struct http_frame_verdict refusal; /* status != 0: the target was refused */
    struct http_frame_verdict pending; /* status != 0: the body is dropped, then this answers */
    size_t drain_cap;                  /* ... unless more than this many body bytes come */
    size_t reserved;                   /* body bytes counted in srv->buffered, until completion */
    long drain_until_ms;               /* ... or they take longer than this */
    int raw_body;                   /* the route's raw_body: gzip handed to Lua as sent */
    struct MHD_Response *resp;      /* built by the worker */
    int status;
    size_t resp_bytes;
    struct timespec t0;
};

/* ---- small helpers ---- */

static int kv_add(struct kvlist *l, const char *key, const char *val)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct kv *items = realloc(l->items, cap * sizeof *items);
        if (!items)
            return -1;
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n].key = strdup(key ? key : "");
    l->items[l->n].val = strdup(val ? val : "");
    if (!l->items[l->n].key || !l->items[l->n].val) {
        free(l->items[l->n].key);
        free(l->items[l->n].val);
        return -1;
    }
    l->n++;
    return 0;
}

static void kv_free(struct kvlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].key);
        free(l->items[i].val);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

static enum MHD_Result collect(void *cls, enum MHD_ValueKind kind, const char *key, const char *val)
{
    (void)kind;
    return kv_add(cls, key, val) == 0 ? MHD_YES : MHD_NO;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

static int valid_request_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= 64 || !((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
                         (s[n] >= '0' && s[n] <= '9') || s[n] == '-' || s[n] == '_' || s[n] == '.'))
            return 0;
    return n > 0;
}

static void set_request_id(struct request *r)
{
    const char *given = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Request-Id");
    if (given && valid_request_id(given)) {
        snprintf(r->request_id, sizeof r->request_id, "%s", given);
        return;
    }
    unsigned char raw[12];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        memset(raw, 0, sizeof raw);
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(r->request_id + 2 * i, 3, "%02x", raw[i]);
}

static void set_remote(struct request *r)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    r->remote[0] = '\0';
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->remote, sizeof r->remote);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->remote, sizeof r->remote);
}

/* Every answer, Lua's or C's, carries the CORS headers of its route's policy, unless Lua
   set them itself (a preflight). */
static void add_cors(struct MHD_Response *resp, const struct request *r)
{
    if (!r->allow_origin || MHD_get_response_header(resp, "Access-Control-Allow-Origin"))
        return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->allow_origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", EXPOSE_HEADERS);
    if (strcmp(r->allow_origin, "*") != 0)
        MHD_add_response_header(resp, "Vary", "Origin");
}

/* A JSON error built in C, for failures that never reach Lua. `code` repeats `error`, as the
   import's 401s from Lua carry it (routes/sync.lua). */
static struct MHD_Response *error_response(const struct request *r, const char *code, const char *msg)
{
    char body[1024];
    int n = snprintf(
        body, sizeof body,
        "{\"error\":\"%s\",\"code\":\"%s\",\"message\":\"%s\",\"details\":[],\"requestId\":\"%s\"}",
        code, code, msg, r->request_id);
    struct MHD_Response *resp = MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
    if (resp) {
        MHD_add_response_header(resp, "Content-Type", "application/json");
        MHD_add_response_header(resp, "X-Request-Id", r->request_id);
        MHD_add_response_header(resp, "Cache-Control", "no-store");
        web_static_api_headers(resp);
        add_cors(resp, r);
    }
    return resp;
}

/* ---- Lua side (runs on a worker) ---- */

static void push_kv(lua_State *L, const struct kvlist *l, int lower)
{
    lua_createtable(L, 0, (int)l->n);
    for (size_t i = 0; i < l->n; i++) {
        if (lower) {
            char name[256];
            size_t k = 0;
            for (; l->items[i].key[k] && k + 1 < sizeof name; k++)
                name[k] = (char)((l->items[i].key[k] >= 'A' && l->items[i].key[k] <= 'Z')
                                 ? l->items[i].key[k] + 32 : l->items[i].key[k]);
            name[k] = '\0';
            lua_pushstring(L, name);
        } else {
            lua_pushstring(L, l->items[i].key);
        }
        lua_pushstring(L, l->items[i].val);
        lua_rawset(L, -3);
    }
}

/* Pushes the req table (see doc/ARCHITECTURE.md); the body buffer is released after copy. */
static void push_request(lua_State *L, struct request *r)
{
    lua_createtable(L, 0, 10);
    lua_pushstring(L, r->method);
    lua_setfield(L, -2, "method");
    lua_pushstring(L, r->path);
    lua_setfield(L, -2, "path");
    push_kv(L, &r->query, 0);
    lua_setfield(L, -2, "query");
    push_kv(L, &r->headers, 1);
    lua_setfield(L, -2, "headers");
    push_kv(L, &r->cookies, 0);
    lua_setfield(L, -2, "cookies");
    lua_pushlstring(L, r->body ? r->body : "", r->len);
    lua_setfield(L, -2, "body");
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
    lua_pushstring(L, r->remote);
    lua_setfield(L, -2, "remote_addr");
    lua_pushstring(L, r->request_id);
    lua_setfield(L, -2, "request_id");
}

static int accepts_gzip(const struct request *r)
{
    for (size_t i = 0; i < r->headers.n; i++)
        if (!strcasecmp(r->headers.items[i].key, "Accept-Encoding"))
            return strstr(r->headers.items[i].val, "gzip") != NULL;
    return 0;
}

static int compressible(const char *ctype)
{
    return ctype && (strstr(ctype, "json") || !strncmp(ctype, "text/", 5) || strstr(ctype, "javascript"));
}

/* Adds resp.headers (string values, or arrays of strings for repeated headers). */
static void add_headers(lua_State *L, struct MHD_Response *resp, int idx)
{
    lua_getfield(L, idx, "headers");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            /* Only a string key is read: lua_tostring on a number key would convert it in
               place and break lua_next (an error outside any pcall: a panic). */
            const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            if (name && lua_type(L, -1) == LUA_TTABLE) {
                lua_Integer n = luaL_len(L, -1);
                for (lua_Integer i = 1; i <= n; i++) {
                    lua_rawgeti(L, -1, i);
                    if (lua_type(L, -1) == LUA_TSTRING)
                        MHD_add_response_header(resp, name, lua_tostring(L, -1));
                    lua_pop(L, 1);
                }
            } else if (name && lua_type(L, -1) == LUA_TSTRING) {
                MHD_add_response_header(resp, name, lua_tostring(L, -1));
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* Turns the resp table at the top of L into an MHD response (gzip'd when it pays). */
static struct MHD_Response *build_response(lua_State *L, struct request *r)
{
    int idx = lua_gettop(L);
    lua_getfield(L, idx, "route");
    if (lua_type(L, -1) == LUA_TSTRING)
        snprintf(r->route, sizeof r->route, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, idx, "status");
    lua_Integer status = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 500;
    lua_pop(L, 1);
    r->status = (status >= 100 && status <= 599) ? (int)status : 500;

    size_t len = 0;
    lua_getfield(L, idx, "body");
    const char *body = lua_isstring(L, -1) ? lua_tolstring(L, -1, &len) : "";
    lua_getfield(L, idx, "headers");
    const char *ctype = NULL, *cenc = NULL;
    if (lua_istable(L, -1)) {
        /* Strings only: a number would be converted into a new string on the stack, which
           the pop below would leave unreferenced while ctype still points into it. */
        if (lua_getfield(L, -1, "Content-Type") == LUA_TSTRING)
            ctype = lua_tostring(L, -1);
        if (lua_getfield(L, -2, "Content-Encoding") == LUA_TSTRING)
            cenc = lua_tostring(L, -1);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);

    struct MHD_Response *resp = NULL;
    int zipped = 0;
    char *gz = NULL;
    size_t gzlen = 0;
    if (len >= GZIP_MIN_BYTES && !cenc && compressible(ctype) && accepts_gzip(r) &&
        gzip_deflate(body, len, &gz, &gzlen) == 0) {
        resp = MHD_create_response_from_buffer(gzlen, gz, MHD_RESPMEM_MUST_FREE);
        if (!resp)
            free(gz);
        zipped = 1;
        r->resp_bytes = gzlen;
    } else {
        resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
        r->resp_bytes = len;
    }
    lua_pop(L, 1);                      /* body */
    if (!resp)
        return NULL;
    add_headers(L, resp, idx);
    if (zipped)
        MHD_add_response_header(resp, "Content-Encoding", "gzip");
    if (compressible(ctype))
        MHD_add_response_header(resp, "Vary", "Accept-Encoding");
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    if (ctype && !strncmp(ctype, "text/html", 9))
        web_static_page_headers(r->srv->web, resp);
    web_static_api_headers(resp);
    add_cors(resp, r);
    return resp;
}

static const char *header_value(const struct request *r, const char *name)
{
    for (size_t i = 0; i < r->headers.n; i++)
        if (!strcasecmp(r->headers.items[i].key, name))
            return r->headers.items[i].val;
    return NULL;
}

/* Inflates a gzip body in place, on the worker (not the polling thread, which serves
   every connection). Returns 0, or -1 with the answer's status, code and message. */
static int inflate_body(struct request *r, int *status, const char **code, const char **msg)
{
    const char *enc = header_value(r, "Content-Encoding");
    if (!enc || !*enc || !strcasecmp(enc, "identity"))
        return 0;
    if (strcasecmp(enc, "gzip") != 0) {
        *status = 415, *code = "unsupported_encoding", *msg = "Content-Encoding must be gzip or identity";
        return -1;
    }
    if (r->raw_body)
        return 0;       /* the route inflates as it reads (host.upload), to its limit */
    char *out;
    size_t outlen;
    int rc = gzip_inflate(r->body ? r->body : "", r->len, r->limit, &out, &outlen);
    if (rc == GZIP_ERR_LIMIT) {
        *status = 413, *code = "payload_too_large", *msg = "the inflated request body is over this route's limit";
        return -1;
    }
    if (rc != 0) {
        *status = 400, *code = "malformed_body", *msg = "the request body is not valid gzip";
        return -1;
    }
    free(r->body);
    r->body = out;
    r->len = outlen;
    r->cap = outlen + 1;
    return 0;
}

static void run_request(struct worker *w, struct job *job)
{
    struct request *r = (struct request *)job;
    lua_State *L = w->L;
    int top = lua_gettop(L);
    int big = r->len >= BIG_REQUEST_BYTES;
    char err[2048];
    struct MHD_Response *resp = NULL;
    int status;
    const char *code, *msg;
    const struct conf *c = r->srv->conf;
    int answered = 0; /* app.handle built the answer: the work it left for later may run */
    if (inflate_body(r, &status, &code, &msg) < 0) {
        r->status = status;
        resp = error_response(r, code, msg);
    } else if (vm_push_app_fn(L, "handle") == 0) {
        big = big || r->len >= BIG_REQUEST_BYTES;
        vm_budget_limit(L, c->instruction_limit + (long)r->len * c->instructions_per_body_byte);
        push_request(L, r);
        if (vm_call(L, 1, 1, err, sizeof err) == LUA_OK && lua_istable(L, -1))
            resp = build_response(L, r);
        else
            log_error("request %s %s %s failed in Lua: %s", r->request_id, r->method, r->path,
                      lua_isstring(L, -1) ? err : "handle() returned no response table");
        answered = resp != NULL;
    }
    lua_settop(L, top);
    if (!resp) {
        r->status = 500;
        resp = error_response(r, "internal_error", "the server failed to handle this request");
    }
    r->resp = resp;
    char request_id[sizeof r->request_id];
    snprintf(request_id, sizeof request_id, "%s", r->request_id);
    MHD_resume_connection(r->conn);     /* r belongs to the polling thread from here on */
    /* Housekeeping after the answer is on its way, not before: first the heap (a large
       request's garbage is not kept while the rest runs), then the work the request left
       for after its answer (app.after_response, lua/after_response.lua: e.g. a sync's
       enrichment queue). A request whose handler failed leaves none that runs: app.handle
       drops it, and a handle() that raised is not followed by after_response at all (what
       it left is dropped when this VM's next request starts). The worker takes its next
       job once this returns, so the work costs this worker's next request, not this one. */
    if (big) {
        lua_gc(L, LUA_GCCOLLECT, 0);
        malloc_trim(0);
    } else {
        lua_gc(L, LUA_GCSTEP, 0);
    }
    if (answered && vm_push_app_fn(L, "after_response") == 0) {
        vm_budget_limit(L, c->instruction_limit);
        if (vm_call(L, 0, 0, err, sizeof err) != LUA_OK)
            log_error("request %s: after_response failed in Lua: %s", request_id, err);
        lua_settop(L, top);
    }
}

/* ---- MHD callbacks (polling thread) ---- */

/* What the published route table says of this request, learnt before its body arrives:
   body limit, whether C inflates a gzip body, authentication, CORS. A preflight takes the policy of the method it asks
   about. Returns 0, or -1 when out of memory. */
static int apply_route(struct request *r)
{
    const char *method = r->method;
    if (!strcmp(method, "OPTIONS")) {
        method = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Access-Control-Request-Method");
        if (!method)
            method = "GET";
    }
    struct scripts *s = reload_current();
    const struct routes_table *t = s ? s->routes : NULL;
    const struct routes_route *rt = routes_match(t, method, r->path);
    r->limit = rt ? rt->body_limit : r->srv->conf->max_body_bytes;
    r->raw_body = rt ? rt->raw_body : 0;
    r->auth = rt ? rt->auth : ROUTES_AUTH_SESSION;
    /* Copied: the snapshot, and its table, may be gone before the request is answered. */
    if (rt && rt->auth == ROUTES_AUTH_BEARER)
        memcpy(r->audience, rt->audience, sizeof r->audience);
    r->routed = rt != NULL;
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    const char *allow = routes_allow_origin(t, rt ? rt->cors : ROUTES_CORS_LISTED, origin);
    r->allow_origin = allow ? strdup(allow) : NULL;
    scripts_unref(s);
    return allow && !r->allow_origin ? -1 : 0;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
** libmicrohttpd's URI log callback: the first sight of a request, with its target as sent
** (before %-decoding). The request is born here so that the target can be judged raw.
** A refused target's query is cut off in libmicrohttpd's line buffer (which it edits in
** place itself right after this call) so that it never indexes thousands of parameters.
*/
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct http_server *s = cls;
    struct request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->srv = s;
    r->conn = conn;
    r->job.run = run_request;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->peer = ci ? ci->socket_context : NULL;
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    atomic_fetch_add(&s->inflight, 1);
    if (http_frame_check_target(uri, &s->limits, &r->refusal) < 0) {
        char *q = strchr(uri, '?');
        if (q)
            q[1] = '\0';
    }
    return r;
}

/* The access handler's first call: method and decoded path are known. */
static int request_begin(struct request *r, const char *method, const char *url)
{
    if (!(r->path = strdup(url)))
        return -1;
    r->started = 1;
    snprintf(r->method, sizeof r->method, "%s", method);
    set_request_id(r);
    set_remote(r);
    return apply_route(r);
}

static enum MHD_Result send_refusal(struct request *r, const struct http_frame_verdict *v)
{
    struct MHD_Response *resp = error_response(r, v->code, v->message);
    if (!resp)
        return MHD_NO;
    if (v->close)
        MHD_add_response_header(resp, "Connection", "close");
    if (v->status == 401) {
        char challenge[sizeof r->audience + 64];
        snprintf(challenge, sizeof challenge, "Bearer realm=\"%s\", error=\"invalid_token\"",
                 r->audience);
        MHD_add_response_header(resp, "WWW-Authenticate", challenge);
    } else if (v->status == 503 || v->status == 429)
        MHD_add_response_header(resp, "Retry-After", RETRY_AFTER_S);
    r->status = v->status;
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)v->status, resp);
    MHD_destroy_response(resp);
    return ok;
}

static enum MHD_Result scan_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *val)
{
    (void)kind;
    http_frame_add_field(cls, key, val);
    return MHD_YES;
}

/* The framing and size checks every request passes before anything reads its body. */
static int check_fields(struct request *r, struct http_frame_verdict *v)
{
    struct http_frame_fields f = {0};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, scan_field, &f);
    return http_frame_check_fields(&f, &r->srv->limits, v);
}

/* /healthz, answered here from the host's own state: never queued behind a worker. */
static enum MHD_Result send_health(struct request *r)
{
    char body[2048];
    struct MHD_Response *resp;
    int status = 405;
    if (!strcmp(r->method, "GET") || !strcmp(r->method, "HEAD")) {
        status = health_render(body, sizeof body);
        r->resp_bytes = strlen(body);
        if ((resp = MHD_create_response_from_buffer(r->resp_bytes, body, MHD_RESPMEM_MUST_COPY))) {
            MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
            MHD_add_response_header(resp, "Cache-Control", "no-store");
            MHD_add_response_header(resp, "X-Request-Id", r->request_id);
            web_static_api_headers(resp);
            add_cors(resp, r);
        }
    } else {
        if ((resp = error_response(r, "method_not_allowed", "only GET is allowed here")))
            MHD_add_response_header(resp, "Allow", "GET");
    }
    if (!resp)
        return MHD_NO;
    snprintf(r->route, sizeof r->route, "/healthz");
    r->status = status;
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ok;
}

/*
** Refuses the request once its body has been read and dropped (bounded by drain_max_bytes
** past what the route would take, and drain_timeout_s): a client that writes its whole
** body before reading would otherwise lose the answer to a reset (nginx's lingering
** close). A client that asked for 100-continue, or a body too large to drain, is answered
** at once.
*/
static enum MHD_Result refuse_after_body(struct request *r, const struct http_frame_verdict *v,
                                         unsigned long long declared, int has_body)
{
    const struct conf *c = r->srv->conf;
    const char *expect = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Expect");
    r->pending = *v;
    r->pending.close = 1;
    r->drain_cap = (v->status == 413 ? r->limit : 0) + c->drain_max_bytes;
    r->drain_until_ms = now_ms() + 1000L * c->drain_timeout_s;
    if (has_body && ((expect && !strcasecmp(expect, "100-continue")) || declared > r->drain_cap))
        return send_refusal(r, &r->pending);
    return MHD_YES;
}

/*
** A Bearer route's token, checked before a byte of the body is kept: signature, the
** audience its route declares (routes/sync.lua's route table) and expiry
** (jwt_check_hs256). The handler still checks everything again, and the token's row.
** Returns 0, or -1 with the 401 (its realm the same audience) in *v.
*/
static int check_bearer(struct request *r, struct http_frame_verdict *v)
{
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    const char *conf_secret = r->srv->conf->secret;
    *v = (struct http_frame_verdict){401, "token_invalid",
                                     "send the sync token as Authorization: Bearer <token>", 1};
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return -1;
    for (h += 7; *h == ' '; h++)
        ;
    size_t len = strcspn(h, " ");
    const char *why;
    const char *code = jwt_check_hs256(h, len, conf_secret, strlen(conf_secret), r->audience, &why);
    if (!code)
        return 0;
    v->code = code;
    v->message = strcmp(code, "token_expired") == 0
                     ? "this sync token has expired; start a new sync"
                     : "this sync token is not valid";
    return -1;
}

/* The first call for a request: judge everything known before the body. */
static enum MHD_Result on_headers(struct request *r, const char *method, const char *url)
{
    if (request_begin(r, method, url) < 0)
        return MHD_NO;
    struct http_frame_verdict v;
    if (r->refusal.status) {
        /* A body may follow that nobody will read: close after the answer. */
        r->refusal.close = 1;
        return send_refusal(r, &r->refusal);
    }
    if (check_fields(r, &v) < 0)
        return send_refusal(r, &v);
    const char *xff = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Forwarded-For");
    if (http_peer_begin(r->srv->peers, r->peer, xff, r->remote, sizeof r->remote) < 0) {
        v = (struct http_frame_verdict){429, "too_many_connections",
                                        "this client has too many requests in flight", 0};
        r->peer = NULL; /* counted for nobody: nothing to end */
        return send_refusal(r, &v);
    }
    /* Answered once the (empty) body is in: an answer queued now would close the connection. */
    r->health = !strcmp(r->path, "/healthz");
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
    int has_body =
        declared > 0 || MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Transfer-Encoding");
    /* A preflight carries no credentials: only the request it announces does. */
    if (r->auth == ROUTES_AUTH_BEARER && strcmp(r->method, "OPTIONS") != 0 &&
        check_bearer(r, &v) < 0)
        return refuse_after_body(r, &v, declared, has_body);
    if (declared > r->limit) {
        v = (struct http_frame_verdict){413, "payload_too_large",
                                        "the request body is over this route's limit", 1};
        return refuse_after_body(r, &v, declared, has_body);
    }
    if (declared + atomic_load(&r->srv->buffered) > r->srv->conf->max_buffered_bytes) {
        v = (struct http_frame_verdict){
            503, "server_busy", "the server holds as many request bodies as it can; retry shortly",
            1};
        return refuse_after_body(r, &v, declared, has_body);
    }
    /* A Lua route comes first: the app pages whose head a route fills (routes/pages.lua). The
       file itself is answered once the (empty) body has been read: an answer queued with the
       headers makes libmicrohttpd close the connection, one TCP connection per asset. */
    r->web = !r->routed;
    return MHD_YES;
}

/* The web app's file for r, if it has one: 1 answered, 0 not a file of the app, -1 failed. */
static int serve_web(struct request *r)
{
    r->web = 0;
    int web = web_static_serve(r->srv->web, r->conn, r->method, r->path, &r->status, &r->resp_bytes);
    if (web)
        snprintf(r->route, sizeof r->route, "(web)");
    return web;
}

/* Stops keeping the body: it is dropped from now on and v answers once it has ended. */
static void drop_body(struct request *r, struct http_frame_verdict v)
{
    r->pending = v;
    r->drain_cap = r->seen + r->srv->conf->drain_max_bytes;
    r->drain_until_ms = now_ms() + 1000L * r->srv->conf->drain_timeout_s;
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
    atomic_fetch_sub(&r->srv->buffered, r->reserved);
    r->reserved = 0;
}

/* Grows the body buffer to hold need bytes, within the budget all connections share. */
static int grow_body(struct request *r, size_t need)
{
    size_t cap = r->cap ? r->cap : 16384;
    while (cap < need)
        cap *= 2;
    size_t more = cap - r->cap;
    if (atomic_fetch_add(&r->srv->buffered, more) + more > r->srv->conf->max_buffered_bytes) {
        atomic_fetch_sub(&r->srv->buffered, more);
        return 1;
    }
    char *grown = realloc(r->body, cap);
    if (!grown) {
        atomic_fetch_sub(&r->srv->buffered, more);
        return -1;
    }
    r->body = grown;
    r->cap = cap;
    r->reserved += more;
    return 0;
}

static int append_body(struct request *r, const char *data, size_t n)
{
    r->seen += n;
    http_peer_body(r->srv->peers, r->peer, n);
    if (!r->pending.status && r->len + n > r->limit)
        drop_body(r, (struct http_frame_verdict){413, "payload_too_large",
                                                 "the request body is over this route's limit", 1});
    if (!r->pending.status && r->len + n + 1 > r->cap) {
        const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
        size_t declared = cl ? (size_t)strtoull(cl, NULL, 10) : 0;
        int rc = grow_body(r, declared > r->len + n ? declared + 1 : r->len + n + 1);
        if (rc < 0)
            return -1;
        if (rc > 0)
            drop_body(r,
                      (struct http_frame_verdict){
                          503, "server_busy",
                          "the server holds as many request bodies as it can; retry shortly", 1});
    }
    if (r->pending.status) /* dropped; past the drain bounds the connection is cut */
        return r->seen > r->drain_cap || now_ms() > r->drain_until_ms ? -1 : 0;
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return 0;
}

static int collect_all(struct request *r)
{
    if (MHD_get_connection_values(r->conn, MHD_HEADER_KIND, collect, &r->headers) < 0 ||
        MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, collect, &r->query) < 0 ||
        MHD_get_connection_values(r->conn, MHD_COOKIE_KIND, collect, &r->cookies) < 0)
        return -1;
    return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    (void)cls;
    struct request *r = *con_cls;
    if (!r) /* on_uri ran out of memory */
        return MHD_NO;
    if (!r->started)
        return on_headers(r, method, url);
    if (*upload_size) {
        int rc = append_body(r, upload, *upload_size);
        *upload_size = 0;
        return rc == 0 ? MHD_YES : MHD_NO;
    }
    if (r->resp) {                      /* resumed: the worker has answered */
        enum MHD_Result ok = MHD_queue_response(conn, (unsigned)r->status, r->resp);
        MHD_destroy_response(r->resp);
        r->resp = NULL;
        return ok;
    }
    if (r->dispatched || r->status)
        return MHD_YES;
    int web = r->web ? serve_web(r) : 0;
    if (web)
        return web < 0 ? MHD_NO : MHD_YES;
    if (r->health)
        return send_health(r);
    if (r->pending.status)
        return send_refusal(r, &r->pending);
    if (collect_all(r) < 0)
        return MHD_NO;
    r->dispatched = 1;
    http_peer_dispatched(r->srv->peers, r->peer);
    MHD_suspend_connection(conn);
    /* A route that takes more than the default body is an import: its own lane. */
    r->job.lane = r->limit > r->srv->conf->max_body_bytes ? WORKER_LANE_HEAVY : WORKER_LANE_GENERAL;
    worker_pool_submit(r->srv->pool, &r->job);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    struct http_server *s = cls;
    struct request *r = *con_cls;
    if (!r)
        return;
    int status = r->status ? r->status : (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? 200 : 499);
    double ms = ms_since(&r->t0);
    log_request(r->request_id, r->method, r->path ? r->path : "", status, ms, r->resp_bytes);
    metrics_observe(r->method, r->route[0] ? r->route : NULL, status, ms);
    http_peer_end(s->peers, r->peer);
    if (r->resp)
        MHD_destroy_response(r->resp);
    kv_free(&r->headers);
    kv_free(&r->query);
    kv_free(&r->cookies);
    free(r->body);
    atomic_fetch_sub(&s->buffered, r->reserved);
    free(r->path);
    free(r->allow_origin);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&s->inflight, 1);
}

static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addrlen;
    struct http_server *s = cls;
    return http_peers_admit(s->peers, addr) ? MHD_YES : MHD_NO;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        http_peers_close(s->peers, *socket_context);
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *addr =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    *socket_context =
        (addr && fd) ? http_peers_open(s->peers, addr->client_addr, fd->connect_fd) : NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    log_msg(LOG_DEBUG, "microhttpd: %s", msg);
}

struct http_server *http_server_start(const struct conf *c, struct worker_pool *pool,
                                      char *err, size_t errlen)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->listen_port)};
    if (inet_pton(AF_INET, c->listen_host, &sin.sin_addr) != 1) {
        snprintf(err, errlen, "listen host %s: expected an IPv4 address", c->listen_host);
        return NULL;
    }
    struct http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->conf = c;
    s->pool = pool;
    s->limits = (struct http_frame_limits){.max_target_bytes = c->max_url_bytes,
                                           .max_query_params = MAX_QUERY_PARAMS,
                                           .max_header_bytes = c->max_header_bytes,
                                           .max_headers = MAX_HEADER_FIELDS};
    struct http_peer_conf pc = {.max_per_address = c->max_connections_per_address,
                                .trusted_proxies = c->trusted_proxies,
                                .header_timeout_s = c->header_timeout_s,
                                .min_body_rate = c->min_body_rate};
    if (!(s->peers = http_peers_new(&pc, err, errlen)))
        goto fail;
    if (!(s->web = web_static_new(c))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
            MHD_USE_ERROR_LOG,
        (uint16_t)c->listen_port, on_accept, s, on_request, s, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&sin, MHD_OPTION_CONNECTION_LIMIT, (unsigned)c->connection_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)c->connection_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MHD_POOL_BYTES(c), MHD_OPTION_URI_LOG_CALLBACK,
        on_uri, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_UNESCAPE_CALLBACK,
        web_static_unescape, NULL, MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(err, errlen, "cannot listen on %s:%d (in use?)", c->listen_host, c->listen_port);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : c->listen_port;
    return s;
fail:
    web_static_free(s->web);
    http_peers_free(s->peers);
    free(s);
    return NULL;
}

int http_server_port(const struct http_server *s)
{
    return s->port;
}

void http_server_quiesce(struct http_server *s)
{
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

int http_server_inflight(const struct http_server *s)
{
    return atomic_load(&s->inflight);
}

void http_server_stop(struct http_server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->daemon);
    web_static_free(s->web);
    http_peers_free(s->peers);
    free(s);
}
