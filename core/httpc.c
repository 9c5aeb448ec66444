/*
** httpc: host.http, outbound HTTP(S) on libcurl, for the OpenID Connect flow (token
** endpoint, discovery, JWKS) and for the spec harness, which drives the server through
** it over loopback. Kept general: any method, a body on any method, raw or decoded
** bodies, redirects never followed (the caller sees the 3xx).
**
** Lua side:
**   host.http.request{
**       url = "https://...",              -- required; http and https only
**       method = "GET",                   -- any token; default GET
**       headers = {Name = "value"},       -- optional; CR, LF or NUL in them raises
**       body = "...",                     -- optional, on any method
**       timeout_ms = 10000,               -- total, default HTTPC_DEFAULT_TIMEOUT_MS
**       connect_timeout_ms = 5000,        -- default HTTPC_DEFAULT_CONNECT_TIMEOUT_MS
**       decode = true,                    -- true: offer and undo gzip/deflate/br/zstd
**                                         -- false: bytes as received, no Accept-Encoding
**       max_bytes = 67108864,             -- response bodies beyond fail ("too_large")
**   }
**   -> {status = 200, headers = {["content-type"] = "..."}, cookies = {"a=b; Path=/", ...},
**       body = "..."}
**   | nil, message, kind   with kind "timeout", "connect", "tls", "too_large" or "failed".
** Response header names are lowercased; a repeated header's values are joined with ", ",
** except Set-Cookie: every value is kept in order in `cookies`, and headers["set-cookie"]
** holds the last one. Interim 1xx responses are dropped.
** TLS peer and host verification are always on. Each call uses its own easy handle and
** connection: the server's outbound calls are rare (a sign-in, a key refresh) and a
** shared handle would tie a connection to one lua_State across hot reloads for no gain.
** Misuse (missing url, wrong types, bad header characters, out-of-range timeouts) raises.
*/
#include "httpc.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <lauxlib.h>

#define HTTPC_CALL_MT "shelfsync.httpc_call"
#define HTTPC_MAX_TIMEOUT_MS (10 * 60 * 1000)

struct buf {
    char *data;
    size_t len, cap;
};

/* One request's C resources: a userdata, so a Lua error never leaks them (see __gc). */
struct httpc_call {
    CURL *curl;
    struct curl_slist *req_headers;
    struct buf body;
    struct buf resp_headers;      /* raw header lines of the last (final) response */
    size_t max_bytes;
    int too_large;
    int oom;
};

static pthread_once_t httpc_once = PTHREAD_ONCE_INIT;
static CURLcode httpc_init_rc = CURLE_FAILED_INIT;

static void httpc_do_init(void) {
    httpc_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int httpc_global_init(void) {
    pthread_once(&httpc_once, httpc_do_init);
    return httpc_init_rc == CURLE_OK ? 0 : -1;
}

static int buf_append(struct buf *b, const char *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = realloc(b->data, cap);
        if (d == NULL) return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static void call_release(struct httpc_call *c) {
    if (c->curl) curl_easy_cleanup(c->curl);
    curl_slist_free_all(c->req_headers);
    free(c->body.data);
    free(c->resp_headers.data);
    memset(c, 0, sizeof *c);
}

static int call_gc(lua_State *L) {
    call_release(luaL_checkudata(L, 1, HTTPC_CALL_MT));
    return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    struct httpc_call *c = ud;
    size_t len = size * n;
    if (c->body.len + len > c->max_bytes) {
        c->too_large = 1;
        return 0;
    }
    if (buf_append(&c->body, p, len) != 0) {
        c->oom = 1;
        return 0;
    }
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    struct httpc_call *c = ud;
    size_t len = size * n;
    /* A new status line starts a new response (1xx interim ones come first). */
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) c->resp_headers.len = 0;
    if (c->resp_headers.len + len > 1024 * 1024) {
        c->too_large = 1;
        return 0;
    }
    if (buf_append(&c->resp_headers, p, len) != 0) {
        c->oom = 1;
        return 0;
    }
    return len;
}

static int is_token(const char *s, size_t len) {
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (len == 0) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && (ch == '\0' || strchr(extra, ch) == NULL)) return 0;
    }
    return 1;
}

/* Reads opts[name] as an integer within [lo, hi], or def when absent. Raises otherwise. */
static long opt_integer(lua_State *L, const char *name, long def, long lo, long hi) {
    long v = def;
    if (lua_getfield(L, 1, name) != LUA_TNIL) {
        int ok;
        lua_Integer i = lua_tointegerx(L, -1, &ok);
        if (!ok || i < lo || i > hi) luaL_error(L, "request: %s must be an integer in [%ld, %ld]",
                                                name, lo, hi);
        v = (long)i;
    }
    lua_pop(L, 1);
    return v;
}

/* Adds the caller's headers (opts.headers) to c->req_headers. Raises on misuse. */
static void add_request_headers(lua_State *L, struct httpc_call *c) {
    if (lua_getfield(L, 1, "headers") == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    luaL_argcheck(L, lua_istable(L, -1), 1, "headers must be a table");
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        size_t nlen, vlen;
        luaL_Buffer b;
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "request: header names must be strings");
        const char *name = lua_tolstring(L, -2, &nlen);
        if (!is_token(name, nlen)) luaL_error(L, "request: invalid header name '%s'", name);
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "request: header '%s' must be a string", name);
        const char *value = lua_tolstring(L, -1, &vlen);
        if (strlen(value) != vlen || strpbrk(value, "\r\n") != NULL)
            luaL_error(L, "request: header '%s' holds CR, LF or NUL", name);
        luaL_buffinit(L, &b);
        luaL_addlstring(&b, name, nlen);
        /* curl drops "Name:" with an empty value; "Name;" sends it empty. */
        luaL_addstring(&b, vlen ? ": " : ";");
        luaL_addlstring(&b, value, vlen);
        luaL_pushresult(&b);
        struct curl_slist *l = curl_slist_append(c->req_headers, lua_tostring(L, -1));
        if (l == NULL) luaL_error(L, "request: out of memory");
        c->req_headers = l;
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
}

/* Pushes {headers, cookies} parsed from the raw header block, leaving them at -2, -1. */
static void push_response_headers(lua_State *L, struct httpc_call *c) {
    int cookies_n = 0;
    lua_newtable(L);                          /* headers */
    lua_newtable(L);                          /* cookies */
    const char *p = c->resp_headers.data, *end = p ? p + c->resp_headers.len : NULL;
    while (p != NULL && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon != NULL && colon > p && memcmp(p, "HTTP/", 5) != 0) {
            const char *v = colon + 1, *ve = line_end;
            luaL_Buffer b;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            luaL_buffinit(L, &b);
            for (const char *q = p; q < colon; q++) luaL_addchar(&b, (char)tolower((unsigned char)*q));
            luaL_pushresult(&b);              /* name */
            if (strcmp(lua_tostring(L, -1), "set-cookie") == 0) {
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_pushvalue(L, -1);
                lua_rawseti(L, -4, ++cookies_n);
                lua_setfield(L, -4, "set-cookie");
                lua_pop(L, 1);
            } else {
                lua_pushvalue(L, -1);
                if (lua_rawget(L, -4) == LUA_TSTRING) {
                    lua_pushliteral(L, ", ");
                    lua_pushlstring(L, v, (size_t)(ve - v));
                    lua_concat(L, 3);
                } else {
                    lua_pop(L, 1);
                    lua_pushlstring(L, v, (size_t)(ve - v));
                }
                lua_rawset(L, -4);
            }
        }
        p = eol ? eol + 1 : end;
    }
}

static const char *error_kind(CURLcode rc, const struct httpc_call *c) {
    if (c->too_large) return "too_large";
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return "connect";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
        return "tls";
    default:
        return "failed";
    }
}

static int l_httpc_request(lua_State *L) {
    char errbuf[CURL_ERROR_SIZE];
    size_t bodylen = 0;
    const char *body = NULL;
    long status = 0;
    CURLcode rc;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (httpc_global_init() != 0) return luaL_error(L, "request: curl_global_init failed");

    lua_getfield(L, 1, "url");                                      /* 2 */
    luaL_argcheck(L, lua_type(L, 2) == LUA_TSTRING, 1, "url must be a string");
    const char *url = lua_tostring(L, 2);
    luaL_argcheck(L, strlen(url) == lua_rawlen(L, 2), 1, "url holds a NUL byte");
    lua_getfield(L, 1, "method");                                   /* 3 */
    if (lua_isnil(L, 3)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "GET");
    }
    luaL_argcheck(L, lua_type(L, 3) == LUA_TSTRING && is_token(lua_tostring(L, 3), lua_rawlen(L, 3)),
                  1, "method must be an HTTP token");
    const char *method = lua_tostring(L, 3);
    if (lua_getfield(L, 1, "body") != LUA_TNIL) {                   /* 4 */
        luaL_argcheck(L, lua_type(L, 4) == LUA_TSTRING, 1, "body must be a string");
        body = lua_tolstring(L, 4, &bodylen);
    }
    long timeout = opt_integer(L, "timeout_ms", HTTPC_DEFAULT_TIMEOUT_MS, 1, HTTPC_MAX_TIMEOUT_MS);
    long ctimeout = opt_integer(L, "connect_timeout_ms", HTTPC_DEFAULT_CONNECT_TIMEOUT_MS, 1,
                                HTTPC_MAX_TIMEOUT_MS);
    long max_bytes = opt_integer(L, "max_bytes", HTTPC_DEFAULT_MAX_BYTES, 0, 1L << 34);
    lua_getfield(L, 1, "decode");
    int decode = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);

    struct httpc_call *c = lua_newuserdatauv(L, sizeof *c, 0);      /* 5 */
    memset(c, 0, sizeof *c);
    luaL_setmetatable(L, HTTPC_CALL_MT);
    c->max_bytes = (size_t)max_bytes;
    if ((c->curl = curl_easy_init()) == NULL) return luaL_error(L, "request: curl_easy_init failed");
    add_request_headers(L, c);
    /* No "Expect: 100-continue" round trip before bodies. */
    struct curl_slist *l = curl_slist_append(c->req_headers, "Expect:");
    if (l == NULL) return luaL_error(L, "request: out of memory");
    c->req_headers = l;

    CURL *h = c->curl;
    errbuf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, ctimeout);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "shelfsync");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->req_headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    if (decode) curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");

    if (strcmp(method, "HEAD") == 0 && body == NULL) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (body != NULL || strcmp(method, "POST") == 0) {
        /* The body is the Lua string at index 4 (or ""), alive until we return. */
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)bodylen);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body != NULL ? body : "");
        if (strcmp(method, "POST") != 0) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }

    rc = curl_easy_perform(h);
    if (rc != CURLE_OK || c->oom) {
        const char *kind = c->oom ? "failed" : error_kind(rc, c);
        lua_pushnil(L);
        if (c->too_large) lua_pushfstring(L, "response body larger than %I bytes", (lua_Integer)max_bytes);
        else if (c->oom) lua_pushliteral(L, "out of memory reading the response");
        else lua_pushfstring(L, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
        lua_pushstring(L, kind);
        call_release(c);
        return 3;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);

    lua_createtable(L, 0, 4);                                       /* result */
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    push_response_headers(L, c);
    lua_setfield(L, -3, "cookies");
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, c->body.data ? c->body.data : "", c->body.len);
    lua_setfield(L, -2, "body");
    call_release(c);
    return 1;
}

static const luaL_Reg httpc_funcs[] = {
    {"request", l_httpc_request},
    {NULL, NULL}
};

int httpc_luaopen(lua_State *L) {
    httpc_global_init();
    luaL_newmetatable(L, HTTPC_CALL_MT);
    lua_pushcfunction(L, call_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newlib(L, httpc_funcs);
    return 1;
}
