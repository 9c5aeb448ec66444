/*
** routes: what the C server knows of each route before Lua sees a request. Each time a
** snapshot of the scripts is published (reload.c), the snapshot's scratch VM is asked for
** app.routes() and the answer is kept with the snapshot (struct scripts.routes). The HTTP
** server matches every request against it on the polling thread to learn the route's body
** limit, CORS policy and authentication before reading the body; the contract is in
** doc/ARCHITECTURE.md, "Route metadata".
*/
#ifndef SHELFSYNC_ROUTES_H
#define SHELFSYNC_ROUTES_H

#include <lua.h>
#include <stddef.h>

enum routes_cors {
    ROUTES_CORS_LISTED,     /* only the origins in config.cors_origins */
    ROUTES_CORS_PUBLIC      /* any origin, without credentials */
};

enum routes_auth {
    ROUTES_AUTH_SESSION,  /* a session cookie is required */
    ROUTES_AUTH_OPTIONAL, /* a session cookie is read when present */
    ROUTES_AUTH_NONE,     /* nothing is read */
    ROUTES_AUTH_BEARER    /* an Authorization: Bearer token for the route's audience */
};

/* A bearer route's token audience: printable ASCII but '"' and backslash, at most this long
   (it is also the realm of the WWW-Authenticate challenge, a quoted string). */
#define ROUTES_AUDIENCE_MAX 128

struct routes_route {
    char method[8];
    char *path;             /* the template, "/api/lists/:id" */
    char **segs;            /* its segments; a ":name" one matches any segment */
    size_t nsegs;
    size_t body_limit;      /* bytes, after inflating a gzip body too */
    int raw_body;           /* a gzip body reaches Lua as sent (the route inflates it) */
    enum routes_cors cors;
    enum routes_auth auth;
    char audience[ROUTES_AUDIENCE_MAX + 1]; /* bearer: the aud its tokens carry; else "" */
};

struct routes_table {
    struct routes_route *items;     /* in the Lua router's match order */
    size_t n;
    char **origins;                 /* config.cors_origins ("*" allows every origin) */
    size_t norigins;
};

/*
** Calls app.routes() in L (through vm_call) and copies its answer into a new table.
** Returns 0 with *out owned by the caller (release with routes_table_free), or -1 with a
** message in err (an answer of the wrong shape is refused like a script that fails to load).
*/
int routes_table_read(lua_State *L, struct routes_table **out, char *err, size_t errlen);
void routes_table_free(struct routes_table *t);     /* NULL is fine */

/*
** The route a request reaches, as the Lua router would pick it: empty segments are
** ignored (so "/api/sync/import/" is "/api/sync/import"), HEAD reaches GET. NULL when no
** route has that method and path (then Lua answers 404 or 405). t may be NULL.
*/
const struct routes_route *routes_match(const struct routes_table *t, const char *method, const char *path);

/*
** The Access-Control-Allow-Origin value an answer to `origin` carries under `cors`: "*"
** for a public route, the origin itself when listed, NULL when it gets no CORS headers.
** The result points into origin or a constant.
*/
const char *routes_allow_origin(const struct routes_table *t, enum routes_cors cors, const char *origin);

#endif
