/*
** conf.c: config.lua + environment -> struct conf.
**
** config.lua is run in a scratch Lua state; its table is then overridden key by key from
** SHELFSYNC_<UPPER_SNAKE> (coerced to the type of the default), resolved (secret, workers),
** checked, and serialized to JSON so that every worker VM sees the same table as host.config.
*/
#include "conf.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <lua-cjson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* Copies of strings read from the table; NULL when absent. */
static char *dup_field(lua_State *L, const char *key)
{
    lua_getfield(L, -1, key);
    const char *s = lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL;
    char *copy = s ? strdup(s) : NULL;
    lua_pop(L, 1);
    return copy;
}

static long int_field(lua_State *L, const char *key, long dflt)
{
    lua_getfield(L, -1, key);
    long v = lua_isinteger(L, -1) ? (long)lua_tointeger(L, -1)
           : lua_isnumber(L, -1) ? (long)lua_tonumber(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

static int bool_field(lua_State *L, const char *key)
{
    lua_getfield(L, -1, key);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* The list at key joined by spaces (CSP sources): NULL with err when an item is not a plain
   source expression, so a config value can never add a directive to the policy. */
static char *csp_sources(lua_State *L, const char *key, char *err, size_t errlen)
{
    lua_getfield(L, -1, key);
    if (!lua_istable(L, -1) && !lua_isnil(L, -1)) {
        snprintf(err, errlen, "config: %s must be a list", key);
        lua_pop(L, 1);
        return NULL;
    }
    size_t n = lua_istable(L, -1) ? lua_rawlen(L, -1) : 0, len = 0;
    char *out = calloc(1, 1);
    for (size_t i = 1; out && i <= n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i);
        size_t slen = 0;
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &slen) : "";
        int ok = slen > 0;
        for (size_t k = 0; k < slen; k++)
            ok = ok && s[k] > 0x20 && s[k] < 0x7f && !strchr(";,'\"", s[k]);
        char *grown = ok ? realloc(out, len + slen + 2) : NULL;
        if (!grown) {
            snprintf(err, errlen, "config: %s[%zu] must be a source such as https://img.example.com", key, i);
            free(out);
            out = NULL;
        } else {
            out = grown;
            len += (size_t)sprintf(out + len, "%s%s", len ? " " : "", s);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return out;
}

/* A folder from the table, made absolute against root. */
static char *root_path(lua_State *L, const char *key, const char *dflt, const char *root)
{
    char *rel = dup_field(L, key);
    const char *p = rel && *rel ? rel : dflt;
    size_t n = strlen(root) + strlen(p) + 2;
    char *abs = malloc(n);
    if (abs && p[0] == '/')
        snprintf(abs, n, "%s", p);
    else if (abs)
        snprintf(abs, n, "%s/%s", root, p);
    free(rel);
    return abs;
}

/* "database_url" -> "SHELFSYNC_DATABASE_URL" */
static void env_name(const char *key, char *out, size_t outlen)
{
    size_t n = (size_t)snprintf(out, outlen, "SHELFSYNC_");
    for (const char *p = key; *p && n + 1 < outlen; p++)
        out[n++] = (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

/* Pushes the env value coerced to the type of the value at the top (the default). */
static int push_override(lua_State *L, const char *val, char *err, size_t errlen, const char *name)
{
    switch (lua_type(L, -1)) {
    case LUA_TNUMBER: {
        char *end;
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (errno || *end || end == val) {
            snprintf(err, errlen, "%s=%s: expected a whole number", name, val);
            return -1;
        }
        lua_pushinteger(L, (lua_Integer)v);
        return 0;
    }
    case LUA_TBOOLEAN:
        if (!strcmp(val, "1") || !strcmp(val, "true") || !strcmp(val, "yes") || !strcmp(val, "on"))
            lua_pushboolean(L, 1);
        else if (!strcmp(val, "0") || !strcmp(val, "false") || !strcmp(val, "no") || !strcmp(val, "off") || !*val)
            lua_pushboolean(L, 0);
        else {
            snprintf(err, errlen, "%s=%s: expected 1 or 0", name, val);
            return -1;
        }
        return 0;
    case LUA_TTABLE: {
        lua_newtable(L);
        int i = 1;
        const char *p = val;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            while (len && isspace((unsigned char)*p)) { p++; len--; }
            while (len && isspace((unsigned char)p[len - 1])) len--;
            if (len) {
                lua_pushlstring(L, p, len);
                lua_rawseti(L, -2, i++);
            }
            if (!comma) break;
            p = comma + 1;
        }
        return 0;
    }
    default:
        lua_pushstring(L, val);
        return 0;
    }
}

/* Applies SHELFSYNC_* (and DATABASE_URL) to the table at the top of the stack. */
static int apply_env(lua_State *L, char *err, size_t errlen)
{
    lua_newtable(L);                          /* the keys, collected first: no insertion while iterating */
    int keys = lua_gettop(L), n = 0;
    lua_pushnil(L);
    while (lua_next(L, keys - 1)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            lua_pushvalue(L, -1);
            lua_rawseti(L, keys, ++n);
        }
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, keys, i);
        const char *key = lua_tostring(L, -1);
        char name[128];
        env_name(key, name, sizeof name);
        const char *val = getenv(name);
        if (!val && !strcmp(key, "database_url")) {
            val = getenv("DATABASE_URL");
            snprintf(name, sizeof name, "DATABASE_URL");
        }
        if (val) {
            lua_getfield(L, keys - 1, key);   /* the default decides the type */
            if (push_override(L, val, err, errlen, name) < 0)
                return -1;
            lua_setfield(L, keys - 1, key);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

/* Local mode keeps one generated secret under var/ so sessions survive restarts. */
static char *local_secret(const char *root, char *err, size_t errlen)
{
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/var", root);
    snprintf(path, sizeof path, "%s/secret", dir);
    char buf[129] = {0};
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
        if (n >= 32)
            return strdup(buf);
    }
    unsigned char raw[32];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        snprintf(err, errlen, "getrandom failed: %s", strerror(errno));
        return NULL;
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(buf + 2 * i, 3, "%02x", raw[i]);
    mkdir(dir, 0755);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, buf, 64) != 64) {
        snprintf(err, errlen, "cannot keep the local secret in %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    close(fd);
    return strdup(buf);
}

static int parse_listen(struct conf *c, const char *listen, char *err, size_t errlen)
{
    const char *colon = strrchr(listen, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    size_t hostlen = colon ? (size_t)(colon - listen) : 0;
    if (!colon || *end || port < 0 || port > 65535 || hostlen == 0 || hostlen >= sizeof c->listen_host) {
        snprintf(err, errlen, "listen=%s: expected host:port, e.g. 127.0.0.1:8080", listen);
        return -1;
    }
    memcpy(c->listen_host, listen, hostlen);
    c->listen_host[hostlen] = '\0';
    c->listen_port = (int)port;
    return 0;
}

/* Reads the resolved table (at the top of L) into c. */
static int read_table(lua_State *L, struct conf *c, char *err, size_t errlen)
{
    char *listen = dup_field(L, "listen");
    int rc = parse_listen(c, listen ? listen : "", err, errlen);
    free(listen);
    if (rc < 0)
        return -1;
    c->workers = (int)int_field(L, "workers", 0);
    if (c->workers <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = (int)(cores > 0 ? 2 * cores : 4);
    }
    c->connection_limit = (int)int_field(L, "connection_limit", 1000);
    c->connection_timeout_s = (int)int_field(L, "connection_timeout_s", 30);
    c->max_body_bytes = (size_t)int_field(L, "max_body_bytes", 1 << 20);
    c->max_import_bytes = (size_t)int_field(L, "max_import_bytes", 64 << 20);
    c->instruction_limit = int_field(L, "instruction_limit", 200000000);
    c->statement_timeout_ms = (int)int_field(L, "statement_timeout_ms", 15000);
    c->shutdown_grace_s = (int)int_field(L, "shutdown_grace_s", 20);
    c->cleanup_interval_s = (int)int_field(L, "cleanup_interval_s", 3600);
    c->migrate_on_start = bool_field(L, "migrate_on_start");
    c->local_mode = bool_field(L, "local_mode");
    c->dev_login = bool_field(L, "dev_login");
    c->database_url = dup_field(L, "database_url");
    c->secret = dup_field(L, "secret");
    c->public_url = dup_field(L, "public_url");
    c->log_level = dup_field(L, "log_level");
    c->web_root = root_path(L, "web_root", "web", c->root);
    if (!(c->cover_image_hosts = csp_sources(L, "cover_image_hosts", err, errlen)))
        return -1;
    if (!c->database_url || !c->secret || !c->public_url || !c->log_level || !c->web_root) {
        snprintf(err, errlen, "config: database_url, secret, public_url and log_level must be strings");
        return -1;
    }
    if (c->workers > 256 || c->max_body_bytes == 0 || c->max_import_bytes == 0 || c->instruction_limit <= 0) {
        snprintf(err, errlen, "config: workers must be 1..256 and limits positive");
        return -1;
    }
    return 0;
}

/* Fills in what local mode derives: the secret, and dev login when no Google client is set. */
static int resolve(lua_State *L, struct conf *c, int flags, char *err, size_t errlen)
{
    if (!*c->secret && c->local_mode) {
        free(c->secret);
        if (!(c->secret = local_secret(c->root, err, errlen)))
            return -1;
        lua_pushstring(L, c->secret);
        lua_setfield(L, -2, "secret");
    } else if (!*c->secret && (flags & CONF_NO_SECRET)) {
        /* nothing will be signed */
    } else if (!*c->secret) {
        snprintf(err, errlen, "no secret configured: set SHELFSYNC_SECRET (at least 32 characters) "
                 "or secret in config.lua; only local mode (make run) generates one");
        return -1;
    } else if (strlen(c->secret) < 32) {
        snprintf(err, errlen, "the secret is too short: use at least 32 characters");
        return -1;
    }
    lua_getfield(L, -1, "google_client_id");
    int has_google = lua_isstring(L, -1) && lua_rawlen(L, -1) > 0;
    lua_pop(L, 1);
    if (c->local_mode && !has_google && !getenv("SHELFSYNC_DEV_LOGIN") && !c->dev_login) {
        c->dev_login = 1;
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "dev_login");
        log_warn("no Google client configured: dev login is on (POST /auth/dev/login); "
                 "never expose this instance to the internet");
    }
    return 0;
}

static int encode_json(lua_State *L, struct conf *c, char *err, size_t errlen)
{
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    lua_getfield(L, -1, "encode");
    lua_pushvalue(L, -3);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        snprintf(err, errlen, "config cannot be encoded: %s", lua_tostring(L, -1));
        return -1;
    }
    c->json = strdup(lua_tostring(L, -1));
    lua_pop(L, 2);
    return c->json ? 0 : -1;
}

int conf_load(struct conf *c, const char *path, int flags, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    const char *root = getenv("SHELFSYNC_ROOT");
    char cwd[4096];
    if (!root)
        root = getcwd(cwd, sizeof cwd) ? cwd : ".";
    c->root = strdup(root);
    char dflt[4200];
    snprintf(dflt, sizeof dflt, "%s/config.lua", c->root);
    if (!path)
        path = getenv("SHELFSYNC_CONFIG") ? getenv("SHELFSYNC_CONFIG") : dflt;

    lua_State *L = luaL_newstate();
    if (!L || !c->root) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    luaL_openlibs(L);
    if (luaL_loadfilex(L, path, "t") != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
        snprintf(err, errlen, "config: %s", lua_tostring(L, -1));
        goto fail;
    }
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "config: %s must return a table", path);
        goto fail;
    }
    if (apply_env(L, err, errlen) < 0 || read_table(L, c, err, errlen) < 0 ||
        resolve(L, c, flags, err, errlen) < 0 || encode_json(L, c, err, errlen) < 0)
        goto fail;
    lua_close(L);
    return 0;
fail:
    if (L)
        lua_close(L);
    conf_free(c);
    return -1;
}

void conf_free(struct conf *c)
{
    free(c->database_url);
    free(c->secret);
    free(c->public_url);
    free(c->root);
    free(c->log_level);
    free(c->web_root);
    free(c->cover_image_hosts);
    free(c->json);
    memset(c, 0, sizeof *c);
}
