/*
** conf.c: config.lua + environment -> struct conf.
**
** config.lua is run in a scratch Lua state; every key declared in conf_keys is then
** overridden from SHELFSYNC_<UPPER_SNAKE> (coerced to the declared type), checked and read
** into struct conf; what C derives (listen address, workers, the local secret) is resolved,
** and the table is serialized to JSON so that every worker VM sees the same, already checked
** table as host.config.
*/
#include "conf.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <lua-cjson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/*
** Every key config.lua may hold, declared once (Redis's config table is the model). One
** loop (read_keys) applies each key's SHELFSYNC_<UPPER_SNAKE> override, checks the value
** (type, range) and copies it into struct conf when C reads it; NO_FIELD keys are read by
** Lua only (host.config.<name>) or by derive(). Defaults and comments live in config.lua,
** which must hold every key; a key config.lua has and this table lacks is refused, so a
** typo cannot pass silently.
*/
enum conf_type { CONF_STRING, CONF_INT, CONF_LONG, CONF_SIZE, CONF_BOOL, CONF_LIST };

struct conf_key {
    const char *name;
    enum conf_type type;
    int offset;         /* offsetof(struct conf, field), or NO_FIELD: only Lua (or derive) reads it */
    long long min, max; /* numbers: the accepted range */
    int secret;         /* never printed by `shelfsync config` */
};

#define NO_FIELD -1
#define AT(field) (int)offsetof(struct conf, field)
#define STR(name, at, secret) {name, CONF_STRING, at, 0, 0, secret}
#define NUM(name, type, at, min, max) {name, type, at, min, max, 0}
#define BOOL(name, at) {name, CONF_BOOL, at, 0, 1, 0}
#define LIST(name) {name, CONF_LIST, NO_FIELD, 0, 0, 0}

static const struct conf_key conf_keys[] = {
    /* HTTP */
    STR("listen", NO_FIELD, 0),                    /* parsed into listen_host and listen_port */
    NUM("workers", CONF_INT, AT(workers), 0, 256), /* 0: 2 x cores */
    NUM("import_workers", CONF_INT, AT(import_workers), 0, 64),
    NUM("connection_limit", CONF_INT, AT(connection_limit), 1, 1000000),
    NUM("connection_timeout_s", CONF_INT, AT(connection_timeout_s), 0, 86400),
    NUM("max_body_bytes", CONF_SIZE, AT(max_body_bytes), 1, 1LL << 32),
    NUM("max_import_bytes", CONF_SIZE, NO_FIELD, 1, 1LL << 32),
    NUM("import_file_max_bytes", CONF_SIZE, NO_FIELD, 1, 1LL << 34),
    /* libmicrohttpd's per-connection buffer holds the target and the header fields */
    NUM("max_url_bytes", CONF_SIZE, AT(max_url_bytes), 256, 32768),
    NUM("max_header_bytes", CONF_SIZE, AT(max_header_bytes), 1024, 65536),
    NUM("drain_max_bytes", CONF_SIZE, AT(drain_max_bytes), 0, 1LL << 32),
    NUM("drain_timeout_s", CONF_INT, AT(drain_timeout_s), 0, 3600),
    NUM("max_buffered_bytes", CONF_SIZE, AT(max_buffered_bytes), 1, 1LL << 40),
    NUM("max_connections_per_address", CONF_INT, AT(max_connections_per_address), 0,
        1000000),            /* 0: off */
    LIST("trusted_proxies"), /* joined into trusted_proxies by derive() */
    NUM("header_timeout_s", CONF_INT, AT(header_timeout_s), 0, 3600), /* 0: off */
    NUM("min_body_rate", CONF_SIZE, AT(min_body_rate), 0, 1LL << 32), /* 0: off */
    NUM("shutdown_grace_s", CONF_INT, AT(shutdown_grace_s), 0, 3600),
    LIST("cors_origins"),
    STR("log_level", AT(log_level), 0),
    /* Web app */
    STR("web_root", NO_FIELD, 0), /* made absolute into web_root by derive() */
    LIST("cover_image_hosts"),    /* checked and joined into cover_image_hosts by derive() */
    /* Lua */
    NUM("instruction_limit", CONF_LONG, AT(instruction_limit), 1000, 1LL << 40),
    NUM("instructions_per_body_byte", CONF_LONG, AT(instructions_per_body_byte), 0, 1000),
    /* PostgreSQL */
    STR("database_url", AT(database_url), 1) /* may hold a password */,
    NUM("statement_timeout_ms", CONF_INT, AT(statement_timeout_ms), 0, 86400000),
    NUM("prepared_statements", CONF_INT, AT(prepared_statements), 0, 100000), /* 0: off */
    BOOL("migrate_on_start", AT(migrate_on_start)),
    /* Secrets and identity */
    STR("secret", AT(secret), 1),
    STR("public_url", AT(public_url), 0),
    BOOL("local_mode", AT(local_mode)),
    /* Sign-in */
    BOOL("dev_login", AT(dev_login)),
    STR("google_client_id", NO_FIELD, 0),
    STR("google_client_secret", NO_FIELD, 1),
    STR("oidc_discovery_url", NO_FIELD, 0),
    LIST("oidc_issuers"),
    NUM("http_connect_timeout_ms", CONF_INT, NO_FIELD, 1, 600000),
    NUM("http_timeout_ms", CONF_INT, NO_FIELD, 1, 3600000),
    NUM("session_ttl_days", CONF_INT, NO_FIELD, 1, 3650),
    /* Sync */
    STR("audible_library_url", NO_FIELD, 0),
    NUM("sync_token_ttl_s", CONF_INT, NO_FIELD, 1, 86400),
    NUM("sync_max_unused_tokens", CONF_INT, NO_FIELD, 1, 10000),
    NUM("sync_max_titles", CONF_INT, NO_FIELD, 1, 10000000),
    NUM("sync_warning_cap", CONF_INT, NO_FIELD, 1, 100000),
    NUM("import_file_max_items", CONF_INT, NO_FIELD, 1, 10000000),
    NUM("sync_max_failures", CONF_INT, NO_FIELD, 1, 100000),
    NUM("sync_failure_window_s", CONF_INT, NO_FIELD, 1, 86400),
    /* Housekeeping */
    NUM("cleanup_interval_s", CONF_INT, AT(cleanup_interval_s), 0, 604800), /* 0: off */
    /* Operators */
    STR("metrics_token", NO_FIELD, 1),
    /* Title metadata (core/enrich.c, lua/enrichment.lua) */
    STR("metadata_provider_url", AT(metadata_provider_url), 0), /* "": no enrichment */
    STR("metadata_marketplace", NO_FIELD, 0),
    NUM("metadata_refresh_days", CONF_INT, NO_FIELD, 1, 3650),
    NUM("metadata_concurrency", CONF_INT, AT(metadata_concurrency), 1, 64),
    NUM("metadata_rate_per_s", CONF_INT, AT(metadata_rate_per_s), 1, 1000000),
    NUM("metadata_timeout_ms", CONF_INT, AT(metadata_timeout_ms), 1, 600000),
    NUM("metadata_lookup_timeout_ms", CONF_INT, NO_FIELD, 1, 600000),
    NUM("metadata_max_bytes", CONF_SIZE, AT(metadata_max_bytes), 1, 1LL << 30),
    NUM("metadata_max_attempts", CONF_INT, NO_FIELD, 1, 1000),
    NUM("metadata_backoff_ms", CONF_INT, NO_FIELD, 1, 86400000),
    NUM("metadata_circuit_failures", CONF_INT, AT(metadata_circuit_failures), 1, 1000000),
    NUM("metadata_circuit_open_ms", CONF_INT, AT(metadata_circuit_open_ms), 1, 86400000),
    NUM("metadata_poll_ms", CONF_INT, AT(metadata_poll_ms), 1, 3600000),
    NUM("metadata_lease_s", CONF_INT, AT(metadata_lease_s), 1, 86400),
};

#define NKEYS (sizeof conf_keys / sizeof conf_keys[0])

static const struct conf_key *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(conf_keys[i].name, name) == 0)
            return &conf_keys[i];
    return NULL;
}

/* The list at key (read_keys checked: strings only) joined by commas; NULL when out of memory. */
static char *joined_list(lua_State *L, const char *key)
{
    lua_getfield(L, -1, key);
    size_t n = lua_istable(L, -1) ? lua_rawlen(L, -1) : 0, len = 0;
    char *out = calloc(1, 1);
    for (size_t i = 1; out && i <= n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i);
        size_t slen;
        const char *s = lua_tolstring(L, -1, &slen);
        char *grown = realloc(out, len + slen + 2);
        if (grown)
            len += (size_t)sprintf(grown + len, "%s%s", len ? "," : "", s);
        else
            free(out);
        out = grown;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return out;
}

/* The list at key (a checked list of strings) joined by spaces, as CSP sources: NULL with
   err when an item is not a plain source expression, so a config value can never add a
   directive to the policy. */
static char *csp_sources(lua_State *L, const char *key, char *err, size_t errlen)
{
    lua_getfield(L, -1, key);
    size_t n = lua_rawlen(L, -1), len = 0;
    char *out = calloc(1, 1);
    for (size_t i = 1; out && i <= n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i);
        size_t slen;
        const char *s = lua_tolstring(L, -1, &slen);
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

/* A folder from the table (a checked string), made absolute against root. */
static char *root_path(lua_State *L, const char *key, const char *dflt, const char *root)
{
    lua_getfield(L, -1, key);
    const char *p = *lua_tostring(L, -1) ? lua_tostring(L, -1) : dflt;
    size_t n = strlen(root) + strlen(p) + 2;
    char *abs = malloc(n);
    if (abs && p[0] == '/')
        snprintf(abs, n, "%s", p);
    else if (abs)
        snprintf(abs, n, "%s/%s", root, p);
    lua_pop(L, 1);
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

/* Pushes the environment value val coerced to k's type. */
static int push_env(lua_State *L, const struct conf_key *k, const char *name, const char *val,
                    char *err, size_t errlen)
{
    switch (k->type) {
    case CONF_INT:
    case CONF_LONG:
    case CONF_SIZE: {
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
    case CONF_BOOL:
        if (!strcmp(val, "1") || !strcmp(val, "true") || !strcmp(val, "yes") || !strcmp(val, "on"))
            lua_pushboolean(L, 1);
        else if (!strcmp(val, "0") || !strcmp(val, "false") || !strcmp(val, "no") || !strcmp(val, "off") || !*val)
            lua_pushboolean(L, 0);
        else {
            snprintf(err, errlen, "%s=%s: expected 1 or 0", name, val);
            return -1;
        }
        return 0;
    case CONF_LIST: {
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
    case CONF_STRING:
        lua_pushstring(L, val);
        return 0;
    }
    return 0;
}

/* Replaces t[k] (t at index t) with its environment override, if one is set. */
static int apply_env(lua_State *L, int t, const struct conf_key *k, char *err, size_t errlen)
{
    char name[128];
    env_name(k->name, name, sizeof name);
    const char *val = getenv(name);
    if (!val && !strcmp(k->name, "database_url")) {
        val = getenv("DATABASE_URL");
        snprintf(name, sizeof name, "DATABASE_URL");
    }
    if (!val)
        return 0;
    if (push_env(L, k, name, val, err, errlen) < 0)
        return -1;
    lua_setfield(L, t, k->name);
    return 0;
}

/* True when the value on top is a list of strings. */
static int is_string_list(lua_State *L)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1), count = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        int ok = lua_type(L, -1) == LUA_TSTRING && lua_isinteger(L, -2) &&
                 lua_tointeger(L, -2) >= 1 && lua_tointeger(L, -2) <= n;
        lua_pop(L, 1);
        if (!ok) {
            lua_pop(L, 1);
            return 0;
        }
        count++;
    }
    return count == n;
}

/* Checks t[k] (pushed on top) against k; a whole float is stored back as an integer. */
static int check_value(lua_State *L, int t, const struct conf_key *k, char *err, size_t errlen)
{
    static const char *const want[] = {"a string", "a whole number", "a whole number",
                                       "a whole number", "true or false", "a list of strings"};
    lua_Integer v = 0;
    int ok;

    switch (k->type) {
    case CONF_STRING: ok = lua_type(L, -1) == LUA_TSTRING; break;
    case CONF_BOOL: ok = lua_type(L, -1) == LUA_TBOOLEAN; break;
    case CONF_LIST: ok = lua_type(L, -1) == LUA_TTABLE && is_string_list(L); break;
    default:
        ok = lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) == floor(lua_tonumber(L, -1)) &&
             lua_numbertointeger(lua_tonumber(L, -1), &v);
        if (lua_isinteger(L, -1)) {
            v = lua_tointeger(L, -1);
            ok = 1;
        }
        if (ok && (v < k->min || v > k->max)) {
            snprintf(err, errlen, "config: %s = %lld is out of range (%lld to %lld)", k->name,
                     (long long)v, k->min, k->max);
            return -1;
        }
        if (ok) {
            lua_pushinteger(L, v);
            lua_setfield(L, t, k->name);
        }
    }
    if (!ok && lua_isnil(L, -1)) {
        snprintf(err, errlen, "config: %s is missing (config.lua declares every key)", k->name);
        return -1;
    }
    if (!ok) {
        snprintf(err, errlen, "config: %s must be %s", k->name, want[k->type]);
        return -1;
    }
    return 0;
}

/* Copies the checked value on top into c when C reads this key. */
static int store_value(lua_State *L, struct conf *c, const struct conf_key *k)
{
    char *field = (char *)c + k->offset;

    if (k->offset == NO_FIELD)
        return 0;
    switch (k->type) {
    case CONF_STRING:
        return (*(char **)field = strdup(lua_tostring(L, -1))) ? 0 : -1;
    case CONF_INT: *(int *)field = (int)lua_tointeger(L, -1); return 0;
    case CONF_LONG: *(long *)field = (long)lua_tointeger(L, -1); return 0;
    case CONF_SIZE: *(size_t *)field = (size_t)lua_tointeger(L, -1); return 0;
    case CONF_BOOL: *(int *)field = lua_toboolean(L, -1); return 0;
    case CONF_LIST: return 0;
    }
    return 0;
}

/* Refuses a key of the table at t that conf_keys does not declare. */
static int check_unknown(lua_State *L, int t, char *err, size_t errlen)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING || !find_key(lua_tostring(L, -1))) {
            snprintf(err, errlen, "config: unknown key %s (declare it in core/conf.c's conf_keys)",
                     lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(not a name)");
            lua_pop(L, 1);
            return -1;
        }
    }
    return 0;
}

/* The one loop: every declared key overridden, checked and read into c. */
static int read_keys(lua_State *L, struct conf *c, char *err, size_t errlen)
{
    int t = lua_gettop(L);

    if (check_unknown(L, t, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct conf_key *k = &conf_keys[i];
        if (apply_env(L, t, k, err, errlen) < 0)
            return -1;
        lua_getfield(L, t, k->name);
        int rc = check_value(L, t, k, err, errlen);
        lua_settop(L, t);
        lua_getfield(L, t, k->name);  /* check_value may have normalised it */
        if (rc == 0 && store_value(L, c, k) < 0) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        }
        lua_settop(L, t);
        if (rc < 0)
            return -1;
    }
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

/* What C derives from the checked keys: the listen address, the default worker count, the
** web root made absolute, the CSP image sources. */
static int derive(lua_State *L, struct conf *c, char *err, size_t errlen)
{
    lua_getfield(L, -1, "listen");
    int rc = parse_listen(c, lua_tostring(L, -1), err, errlen);
    lua_pop(L, 1);
    if (rc < 0)
        return -1;
    if (c->workers == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = (int)(cores > 0 ? 2 * cores : 4);
    }
    c->web_root = root_path(L, "web_root", "web", c->root);
    if (c->web_root == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!(c->trusted_proxies = joined_list(L, "trusted_proxies"))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->cover_image_hosts = csp_sources(L, "cover_image_hosts", err, errlen);
    return c->cover_image_hosts ? 0 : -1;
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

/* The table at t as JSON (a copy the caller owns), or NULL with err set. */
static char *encode_json(lua_State *L, int t, char *err, size_t errlen)
{
    char *json;

    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    lua_getfield(L, -1, "encode");
    lua_pushvalue(L, t);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        snprintf(err, errlen, "config cannot be encoded: %s", lua_tostring(L, -1));
        lua_settop(L, t);
        return NULL;
    }
    json = strdup(lua_tostring(L, -1));
    lua_settop(L, t);
    if (json == NULL)
        snprintf(err, errlen, "out of memory");
    return json;
}

/* c->json for host.config, and c->json_redacted with every secret replaced by "(set)". */
static int encode(lua_State *L, struct conf *c, char *err, size_t errlen)
{
    int t = lua_gettop(L);

    if ((c->json = encode_json(L, t, err, errlen)) == NULL)
        return -1;
    for (size_t i = 0; i < NKEYS; i++) {
        if (!conf_keys[i].secret)
            continue;
        lua_getfield(L, t, conf_keys[i].name);
        lua_pushstring(L, lua_rawlen(L, -1) > 0 ? "(set)" : "");
        lua_setfield(L, t, conf_keys[i].name);
        lua_pop(L, 1);
    }
    c->json_redacted = encode_json(L, t, err, errlen);
    return c->json_redacted ? 0 : -1;
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
    if (read_keys(L, c, err, errlen) < 0 || derive(L, c, err, errlen) < 0 ||
        resolve(L, c, flags, err, errlen) < 0 || encode(L, c, err, errlen) < 0)
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
    free(c->trusted_proxies);
    free(c->json);
    free(c->json_redacted);
    free(c->metadata_provider_url);
    memset(c, 0, sizeof *c);
}
