/*
** routes.c: the route table read from the Lua router; see routes.h.
*/
#include "routes.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vm.h"

static const char *const cors_names[] = {"listed", "public", NULL};
static const char *const auth_names[] = {"session", "optional", "none", "bearer", NULL};

static int name_index(const char *const names[], const char *s)
{
    for (int i = 0; s && names[i]; i++)
        if (!strcmp(names[i], s))
            return i;
    return -1;
}

/* Splits a template into its non-empty segments. */
static int split_path(struct routes_route *rt)
{
    size_t cap = 1;
    for (const char *p = rt->path; *p; p++)
        cap += *p == '/';
    rt->segs = calloc(cap, sizeof *rt->segs);
    if (!rt->segs)
        return -1;
    for (const char *p = rt->path; *p;) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if (!len)
            break;
        if (!(rt->segs[rt->nsegs] = strndup(p, len)))
            return -1;
        rt->nsegs++;
        p += len;
    }
    return 0;
}

/* Fits a token audience and the realm of a quoted-string challenge alike. */
static int audience_ok(const char *s, size_t len)
{
    if (!s || len < 1 || len > ROUTES_AUDIENCE_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e || s[i] == '"' || s[i] == '\\')
            return 0;
    return 1;
}

/*
** A bearer route's audience (the route table at the top of L) into rt: what C checks its
** tokens against before the body. Returns 0, or -1 with a message in err.
*/
static int read_audience(lua_State *L, struct routes_route *rt, char *err, size_t errlen)
{
    size_t len = 0;
    lua_getfield(L, -1, "audience");
    const char *aud = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    int rc = 0;
    if (rt->auth != ROUTES_AUTH_BEARER)
        rt->audience[0] = '\0';
    else if (audience_ok(aud, len))
        memcpy(rt->audience, aud, len + 1);
    else {
        snprintf(err, errlen, "app.routes(): route %s %s has auth = bearer but no valid audience",
                 rt->method, rt->path);
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

/* Reads the route table at the top of L into rt. */
static int read_route(lua_State *L, struct routes_route *rt, char *err, size_t errlen)
{
    lua_getfield(L, -1, "method");
    lua_getfield(L, -2, "path");
    lua_getfield(L, -3, "body_limit");
    lua_getfield(L, -4, "cors");
    lua_getfield(L, -5, "auth");
    lua_getfield(L, -6, "raw_body");
    int raw_body = lua_toboolean(L, -1);
    lua_pop(L, 1);
    const char *method = lua_tostring(L, -5), *path = lua_tostring(L, -4);
    lua_Integer limit = lua_isinteger(L, -3) ? lua_tointeger(L, -3) : 0;
    int cors = name_index(cors_names, lua_tostring(L, -2));
    int auth = name_index(auth_names, lua_tostring(L, -1));
    int rc = -1;
    if (!method || strlen(method) >= sizeof rt->method || !path || limit < 1 || cors < 0 || auth < 0)
        snprintf(err, errlen, "app.routes(): route %s %s has no valid method, path, body_limit, cors or auth",
                 method ? method : "?", path ? path : "?");
    else if (!(rt->path = strdup(path)) || split_path(rt) < 0)
        snprintf(err, errlen, "out of memory");
    else {
        snprintf(rt->method, sizeof rt->method, "%s", method);
        rt->body_limit = (size_t)limit;
        rt->raw_body = raw_body;
        rt->cors = (enum routes_cors)cors;
        rt->auth = (enum routes_auth)auth;
        rc = 0;
    }
    lua_pop(L, 5);
    return rc < 0 ? rc : read_audience(L, rt, err, errlen);
}

/* Reads the array at t[field] (t at the top of L): each element through `each`. */
static int read_array(lua_State *L, const char *field, size_t size, void **items, size_t *n,
                      int (*each)(lua_State *L, void *item, char *err, size_t errlen),
                      char *err, size_t errlen)
{
    int rc = -1;
    if (lua_getfield(L, -1, field) != LUA_TTABLE) {
        snprintf(err, errlen, "app.routes(): %s must be a list", field);
        goto fail;
    }
    size_t len = (size_t)luaL_len(L, -1);
    if (!(*items = calloc(len ? len : 1, size))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < len; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        int ok = each(L, (char *)*items + i * size, err, errlen);
        lua_pop(L, 1);
        (*n)++;                         /* counted either way, so the free sees it */
        if (ok < 0)
            goto fail;
    }
    rc = 0;
fail:
    lua_pop(L, 1);
    return rc;
}

static int each_route(lua_State *L, void *item, char *err, size_t errlen)
{
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "app.routes(): every route must be a table");
        return -1;
    }
    return read_route(L, item, err, errlen);
}

static int each_origin(lua_State *L, void *item, char *err, size_t errlen)
{
    if (lua_type(L, -1) != LUA_TSTRING) {
        snprintf(err, errlen, "app.routes(): cors_origins must be strings");
        return -1;
    }
    if (!(*(char **)item = strdup(lua_tostring(L, -1)))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int routes_table_read(lua_State *L, struct routes_table **out, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    struct routes_table *t = calloc(1, sizeof *t);
    *out = NULL;
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (vm_push_app_fn(L, "routes") < 0) {
        snprintf(err, errlen, "lua/app.lua has no routes() function");
        goto fail;
    }
    if (vm_call(L, 0, 1, err, errlen) != LUA_OK)
        goto fail;
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "app.routes() must return a table");
        goto fail;
    }
    if (read_array(L, "routes", sizeof *t->items, (void **)&t->items, &t->n, each_route, err, errlen) < 0 ||
        read_array(L, "cors_origins", sizeof *t->origins, (void **)&t->origins, &t->norigins,
                   each_origin, err, errlen) < 0)
        goto fail;
    lua_settop(L, top);
    *out = t;
    return 0;
fail:
    lua_settop(L, top);
    routes_table_free(t);
    return -1;
}

void routes_table_free(struct routes_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++) {
        for (size_t j = 0; j < t->items[i].nsegs; j++)
            free(t->items[i].segs[j]);
        free(t->items[i].segs);
        free(t->items[i].path);
    }
    for (size_t i = 0; i < t->norigins; i++)
        free(t->origins[i]);
    free(t->items);
    free(t->origins);
    free(t);
}

/* Does path (empty segments ignored) fit rt's segments? */
static int path_fits(const struct routes_route *rt, const char *path)
{
    size_t i = 0;
    for (const char *p = path; *p;) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if (!len)
            break;
        if (i == rt->nsegs)
            return 0;
        const char *seg = rt->segs[i++];
        if (seg[0] != ':' && (strlen(seg) != len || memcmp(seg, p, len) != 0))
            return 0;
        p += len;
    }
    return i == rt->nsegs;
}

const struct routes_route *routes_match(const struct routes_table *t, const char *method, const char *path)
{
    if (!strcmp(method, "HEAD"))
        method = "GET";
    for (size_t i = 0; t && i < t->n; i++)
        if (!strcmp(t->items[i].method, method) && path_fits(&t->items[i], path))
            return &t->items[i];
    return NULL;
}

const char *routes_allow_origin(const struct routes_table *t, enum routes_cors cors, const char *origin)
{
    if (cors == ROUTES_CORS_PUBLIC)
        return "*";
    for (size_t i = 0; origin && t && i < t->norigins; i++)
        if (!strcmp(t->origins[i], origin) || !strcmp(t->origins[i], "*"))
            return origin;
    return NULL;
}
