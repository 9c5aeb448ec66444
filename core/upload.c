/*
** upload.c: host.upload, reading an uploaded library file (POST /api/import) that may be
** far larger than what the import keeps. The file is a byte range of a Lua string, raw or
** gzip (sniffed from its magic bytes, whatever the headers said), inflated in 64 KiB
** steps with a cap on the inflated size, so a gzip bomb costs one step past the cap.
**
**   host.upload.json(s, first, last, opts) -> reader; opts = {limit = bytes inflated,
**       keep = {name = true | KEEP, ...} (an item's keys to keep: true keeps the value
**       whole, a table filters the objects inside it the same way, through arrays too;
**       nil keeps everything), depth = max nesting (64), values = max values per item
**       (100000)}
**   reader:next() -> key, item | nil (end of document) | nil, message, code
**   host.upload.head(s, first, last, n) -> the first n bytes (inflated) | nil, message
**   host.upload.text(s, first, last, limit) -> every byte (inflated) | nil, message, code
**
** The JSON reader (yajl, a push parser) never builds the document: an "item" is an
** element of the top-level array, an element of an array that is a member of the
** top-level object (key = that member's name), or any other member of the top-level
** object (key = its name). Only items become Lua values, one at a time, and in an item
** object only the keys in `keep` (the fields some importer reads: an Audible API item
** is mostly fields nobody imports), down to the nested keys it names; dropped values are
** parsed and thrown away. So the
** reader's memory is one chunk plus the items the caller keeps.
**
** Errors: code "malformed" (bad JSON or gzip, with "line L, column C" and the item being
** read), "too_large" (past limit once inflated), "too_deep" (nesting or values per item).
** They are sticky: every later next() repeats them.
*/
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>
#include <yajl/yajl_parse.h>
#include <zlib.h>

#include "host.h"
#include "vm.h"

#define UPLOAD_MT "shelfsync.upload.json"
#define CHUNK 65536
#define HARD_DEPTH 256
#define QUEUE_IDX 2     /* next()'s stack: 1 reader, 2 queue, 3 keep set, then partial values */
#define KEEP_IDX 3      /* keep tables by id, and ids by table (1 = the item's own) */
#define BASE_IDX 3

enum frame_kind { F_ENVELOPE, F_LIST, F_OBJ, F_ARR };

struct frame {
    unsigned char kind;
    int keep;                   /* F_OBJ / F_ARR: the keep table's id, 0 = keep all */
    lua_Integer n;              /* F_ARR: elements so far */
};

struct source {
    const unsigned char *p;     /* into the Lua string the reader holds as uservalue 1 */
    size_t pos, end;
    z_stream z;
    int gz, z_live, z_end;
    size_t out_total, limit;
    unsigned char buf[CHUNK];
};

struct reader {
    struct source src;
    yajl_handle h;
    lua_State *L;               /* the state running next(), while it runs */
    struct frame fr[HARD_DEPTH + 1];
    int nframes, level, max_depth;
    int skip;                   /* > 0: inside a dropped value */
    int drop_next;              /* the object's next value is dropped */
    int next_keep;              /* the keep id of the object's next value */
    int has_keep;
    char key[128];              /* the top-level member being read */
    int has_key;
    long index;                 /* items read from that member */
    long values, max_values;    /* values in the item being built */
    lua_Integer qhead, qtail;   /* queue: [qhead..qtail) pairs key, item */
    int nsaved;                 /* partial values kept between calls (uservalue 4) */
    long long line, col;        /* position of the start of the current chunk */
    int busy, done;
    const char *code;
    char err[512];
};

/* ---- the byte source: raw or gzip ---- */

static int source_init(struct source *s, const char *p, size_t first, size_t last, size_t limit)
{
    memset(s, 0, offsetof(struct source, buf));
    s->p = (const unsigned char *)p;
    s->pos = first;
    s->end = last;
    s->limit = limit;
    if (last - first >= 2 && s->p[first] == 0x1f && s->p[first + 1] == 0x8b) {
        if (inflateInit2(&s->z, 15 + 16) != Z_OK)
            return -1;
        s->gz = s->z_live = 1;
    }
    return 0;
}

static void source_free(struct source *s)
{
    if (s->z_live)
        inflateEnd(&s->z);
    s->z_live = 0;
}

/* The next bytes: *out, *n (0 at the end). Returns 0, or -1 with *msg and *code. */
static int source_read(struct source *s, const unsigned char **out, size_t *n, const char **msg,
                       const char **code)
{
    *n = 0;
    if (!s->gz) {
        size_t left = s->end - s->pos, take = left < CHUNK ? left : CHUNK;
        *out = s->p + s->pos;
        s->pos += take;
        *n = take;
    } else {
        while (!s->z_end && *n == 0) {
            if (s->pos == s->end) {
                *msg = "the gzip stream is truncated", *code = "malformed";
                return -1;
            }
            size_t left = s->end - s->pos;
            s->z.next_in = (Bytef *)s->p + s->pos;
            s->z.avail_in = left > (1u << 30) ? (1u << 30) : (uInt)left;
            s->z.next_out = s->buf;
            s->z.avail_out = CHUNK;
            int z = inflate(&s->z, Z_NO_FLUSH);
            s->pos = (size_t)((const unsigned char *)s->z.next_in - s->p);
            *n = CHUNK - s->z.avail_out;
            if (z == Z_STREAM_END) {
                s->z_end = 1;
                if (s->pos != s->end) {
                    *msg = "there are bytes after the end of the gzip stream", *code = "malformed";
                    return -1;
                }
            } else if (z != Z_OK && !(z == Z_BUF_ERROR && *n > 0)) {
                *msg = "the gzip stream is corrupt", *code = "malformed";
                return -1;
            }
        }
        *out = s->buf;
    }
    s->out_total += *n;
    if (s->out_total > s->limit) {
        *msg = "the file is over the size limit", *code = "too_large";
        return -1;
    }
    return 0;
}

/* ---- yajl callbacks: build items on the running state's stack ---- */

static int fail(struct reader *r, const char *code, const char *msg)
{
    r->code = code;
    snprintf(r->err, sizeof r->err, "%s", msg);
    return 0;   /* cancels the parse */
}

/* Called with a value ready on top of the stack: hands it to its container or queue. */
static void attach(struct reader *r)
{
    lua_State *L = r->L;
    struct frame *f = &r->fr[r->nframes - 1];
    if (f->kind == F_OBJ) {
        lua_rawset(L, -3);
    } else if (f->kind == F_ARR) {
        lua_rawseti(L, -2, ++f->n);
    } else {
        if (r->has_key)
            lua_pushstring(L, r->key);
        else
            lua_pushboolean(L, 0);      /* an element of a top-level array */
        lua_rawseti(L, QUEUE_IDX, r->qtail++);
        lua_rawseti(L, QUEUE_IDX, r->qtail++);
        r->index++;
    }
}

/* Before a value: 1 when it is kept, 0 when dropped, -1 when over a limit. */
static int begin_value(struct reader *r)
{
    if (r->skip || r->drop_next) {
        r->drop_next = 0;
        return 0;
    }
    if (r->nframes > 0 && r->fr[r->nframes - 1].kind <= F_LIST)
        r->values = 0;          /* a new item */
    if (++r->values > r->max_values)
        return fail(r, "too_deep", "an item holds too many values") - 1;
    luaL_checkstack(r->L, 4, "upload: nesting");
    return 1;
}

static int scalar_done(struct reader *r, int kept)
{
    if (kept <= 0)
        return kept == 0;
    if (r->nframes == 0)
        return fail(r, "malformed", "the file is a single value, not a library");
    attach(r);
    return 1;
}

static int on_null(void *ctx)
{
    struct reader *r = ctx;
    int k = begin_value(r);
    if (k > 0)
        lua_pushlightuserdata(r->L, NULL);
    return scalar_done(r, k);
}

static int on_boolean(void *ctx, int b)
{
    struct reader *r = ctx;
    int k = begin_value(r);
    if (k > 0)
        lua_pushboolean(r->L, b);
    return scalar_done(r, k);
}

static int on_number(void *ctx, const char *s, size_t len)
{
    struct reader *r = ctx;
    int k = begin_value(r);
    if (k > 0) {
        char tmp[64];
        if (len >= sizeof tmp)
            return fail(r, "malformed", "a number is too long");
        memcpy(tmp, s, len);
        tmp[len] = '\0';
        if (lua_stringtonumber(r->L, tmp) == 0)
            return fail(r, "malformed", "a number is not valid");
    }
    return scalar_done(r, k);
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    struct reader *r = ctx;
    int k = begin_value(r);
    if (k > 0)
        lua_pushlstring(r->L, (const char *)s, len);
    return scalar_done(r, k);
}

static int open_container(struct reader *r, int is_map)
{
    if (++r->level > r->max_depth)
        return fail(r, "too_deep", "the JSON is nested too deep");
    if (r->skip) {
        r->skip++;
        return 1;
    }
    if (r->nframes == 0) {      /* the document itself: never built */
        r->fr[r->nframes++] = (struct frame){.kind = is_map ? F_ENVELOPE : F_LIST};
        return 1;
    }
    struct frame *top = &r->fr[r->nframes - 1];
    if (!is_map && top->kind == F_ENVELOPE && !r->drop_next) {
        r->fr[r->nframes++] = (struct frame){.kind = F_LIST};   /* a list of items */
        r->index = 0;
        return 1;
    }
    int k = begin_value(r);
    if (k < 0)
        return 0;
    if (k == 0) {
        r->skip = 1;
        return 1;
    }
    int keep = top->kind <= F_LIST ? r->has_keep : top->kind == F_OBJ ? r->next_keep : top->keep;
    lua_newtable(r->L);
    if (!is_map)
        luaL_setmetatable(r->L, VM_ARRAY_MT);
    r->fr[r->nframes++] = (struct frame){.kind = is_map ? F_OBJ : F_ARR, .keep = keep};
    return 1;
}

static int close_container(struct reader *r)
{
    r->level--;
    if (r->skip) {
        r->skip--;
        return 1;
    }
    struct frame f = r->fr[--r->nframes];
    if (f.kind == F_OBJ || f.kind == F_ARR)
        attach(r);
    return 1;
}

static int on_start_map(void *ctx) { return open_container(ctx, 1); }
static int on_start_array(void *ctx) { return open_container(ctx, 0); }
static int on_end(void *ctx) { return close_container(ctx); }

static int on_map_key(void *ctx, const unsigned char *s, size_t len)
{
    struct reader *r = ctx;
    if (r->skip)
        return 1;
    struct frame *f = &r->fr[r->nframes - 1];
    if (f->kind == F_ENVELOPE) {
        size_t n = len < sizeof r->key - 1 ? len : sizeof r->key - 1;
        memcpy(r->key, s, n);
        r->key[n] = '\0';
        r->has_key = 1;
        r->index = 0;
        return 1;
    }
    lua_State *L = r->L;
    lua_pushlstring(L, (const char *)s, len);
    r->next_keep = 0;
    if (f->keep) {
        lua_rawgeti(L, KEEP_IDX, f->keep);
        lua_pushvalue(L, -2);
        int t = lua_rawget(L, -2);
        if (t == LUA_TNIL) {
            lua_pop(L, 3);          /* the value, its keep table, the key */
            r->drop_next = 1;
        } else {
            if (t == LUA_TTABLE && lua_rawget(L, KEEP_IDX) == LUA_TNUMBER)
                r->next_keep = (int)lua_tointeger(L, -1);
            lua_pop(L, 2);
        }
    }
    return 1;
}

static const yajl_callbacks callbacks = {
    on_null, on_boolean, NULL, NULL, on_number, on_string,
    on_start_map, on_map_key, on_end, on_start_array, on_end,
};

/* ---- the reader ---- */

static struct reader *check_reader(lua_State *L)
{
    return luaL_checkudata(L, 1, UPLOAD_MT);
}

/* Advances line/col over bytes. */
static void count_lines(struct reader *r, const unsigned char *p, size_t n)
{
    const unsigned char *end = p + n, *nl;
    while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        r->line++;
        r->col = 0;
        p = nl + 1;
    }
    r->col += end - p;
}

static void parse_error(struct reader *r, const unsigned char *chunk, size_t n)
{
    size_t used = chunk ? yajl_get_bytes_consumed(r->h) : 0;
    if (used > n)
        used = n;
    if (chunk)
        count_lines(r, chunk, used);
    char why[200] = "";
    if (r->code) {
        snprintf(why, sizeof why, "%.190s", r->err);
    } else {
        unsigned char *e = yajl_get_error(r->h, 0, chunk, n);
        snprintf(why, sizeof why, "%.190s", e ? (const char *)e : "parse error");
        yajl_free_error(r->h, e);
        why[strcspn(why, "\n")] = '\0';
        r->code = "malformed";
    }
    char where[180] = "";
    if (r->nframes > 1 || (r->nframes == 1 && r->fr[0].kind == F_LIST))
        snprintf(where, sizeof where, " in %s[%ld]", r->has_key ? r->key : "", r->index);
    snprintf(r->err, sizeof r->err, "line %lld, column %lld%s: %s", r->line + 1, r->col + 1, where, why);
}

/* Feeds chunks until an item is queued, the document ends, or an error. */
static void feed(struct reader *r)
{
    while (r->qhead == r->qtail && !r->done) {
        const unsigned char *chunk = NULL;
        size_t n = 0;
        const char *msg, *code;
        if (source_read(&r->src, &chunk, &n, &msg, &code) < 0) {
            r->code = code;
            snprintf(r->err, sizeof r->err, "%s", msg);
            r->done = 1;
            return;
        }
        if (r->src.out_total == n && n >= 3 && !memcmp(chunk, "\xef\xbb\xbf", 3)) {
            chunk += 3;        /* a UTF-8 byte order mark */
            n -= 3;
        }
        yajl_status st = n ? yajl_parse(r->h, chunk, n) : yajl_complete_parse(r->h);
        if (st != yajl_status_ok) {
            parse_error(r, n ? chunk : NULL, n);
            r->done = 1;
            return;
        }
        if (n == 0)
            r->done = 1;
        else
            count_lines(r, chunk, n);
    }
}

/* Restores the partial values saved by the last call above BASE_IDX, and back. */
static void restore_partial(lua_State *L, struct reader *r)
{
    lua_getiuservalue(L, 1, 4);
    for (int i = 1; i <= r->nsaved; i++)
        lua_rawgeti(L, BASE_IDX + 1, i);
    lua_remove(L, BASE_IDX + 1);
}

static void save_partial(lua_State *L, struct reader *r)
{
    int top = lua_gettop(L), n = top - BASE_IDX;
    lua_getiuservalue(L, 1, 4);
    for (int i = n; i >= 1; i--) {
        lua_pushvalue(L, BASE_IDX + i);
        lua_rawseti(L, -2, i);
    }
    for (int i = n + 1; i <= r->nsaved; i++) {
        lua_pushnil(L);
        lua_rawseti(L, -2, i);
    }
    r->nsaved = n;
    lua_settop(L, BASE_IDX);
}

/* reader:next() -> key, item | nil | nil, message, code */
static int l_next(lua_State *L)
{
    struct reader *r = check_reader(L);
    lua_settop(L, 1);
    if (r->busy) {
        lua_pushnil(L);
        lua_pushstring(L, "the reader failed earlier");
        lua_pushstring(L, "malformed");
        return 3;
    }
    lua_getiuservalue(L, 1, 2);
    lua_getiuservalue(L, 1, 3);
    if (r->qhead == r->qtail && !r->done) {
        restore_partial(L, r);
        r->busy = 1;
        r->L = L;
        feed(r);
        r->L = NULL;
        r->busy = 0;
        save_partial(L, r);
    }
    if (r->qhead < r->qtail) {
        lua_rawgeti(L, QUEUE_IDX, r->qhead);
        lua_rawgeti(L, QUEUE_IDX, r->qhead + 1);
        lua_pushnil(L);
        lua_rawseti(L, QUEUE_IDX, r->qhead);
        lua_pushnil(L);
        lua_rawseti(L, QUEUE_IDX, r->qhead + 1);
        r->qhead += 2;
        if (r->qhead == r->qtail)
            r->qhead = r->qtail = 1;
        if (!lua_toboolean(L, -2)) {
            lua_pushnil(L);
            lua_replace(L, -3);
        }
        return 2;
    }
    lua_pushnil(L);
    if (!r->code)
        return 1;
    lua_pushstring(L, r->err);
    lua_pushstring(L, r->code);
    return 3;
}

static int l_gc(lua_State *L)
{
    struct reader *r = luaL_checkudata(L, 1, UPLOAD_MT);
    if (r->h)
        yajl_free(r->h);
    r->h = NULL;
    source_free(&r->src);
    return 0;
}

/* The byte range [first, last] (1-based, inclusive, like string.sub) of argument 1. */
static const char *check_range(lua_State *L, size_t *first, size_t *last)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer i = luaL_optinteger(L, 2, 1), j = luaL_optinteger(L, 3, (lua_Integer)len);
    luaL_argcheck(L, i >= 1 && (size_t)i <= len + 1, 2, "out of range");
    luaL_argcheck(L, j >= i - 1 && (size_t)j <= len, 3, "out of range");
    *first = (size_t)i - 1;
    *last = (size_t)j;
    return s;
}

static lua_Integer opt_field(lua_State *L, int idx, const char *name, lua_Integer def)
{
    lua_getfield(L, idx, name);
    lua_Integer v = luaL_optinteger(L, -1, def);
    lua_pop(L, 1);
    return v;
}

/* Gives the keep table at index t, and every table inside it, an id in ids (ids[n] =
   table, ids[table] = n); the first gets 1. */
static void number_keeps(lua_State *L, int t, int ids, int *next, int depth)
{
    if (depth > HARD_DEPTH)
        luaL_error(L, "upload: keep is nested too deep");
    lua_pushvalue(L, t);
    if (lua_rawget(L, ids) != LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    ++*next;
    lua_pushvalue(L, t);
    lua_rawseti(L, ids, *next);
    lua_pushvalue(L, t);
    lua_pushinteger(L, *next);
    lua_rawset(L, ids);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_istable(L, -1))
            number_keeps(L, lua_gettop(L), ids, next, depth + 1);
        lua_pop(L, 1);
    }
}

/* host.upload.json(s, first, last, opts) -> reader */
static int l_json(lua_State *L)
{
    size_t first, last;
    const char *s = check_range(L, &first, &last);
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_Integer limit = opt_field(L, 4, "limit", 256 << 20);
    lua_Integer depth = opt_field(L, 4, "depth", 64);
    lua_Integer values = opt_field(L, 4, "values", 100000);
    luaL_argcheck(L, limit > 0 && depth >= 2 && depth <= HARD_DEPTH && values > 0, 4, "bad limits");
    struct reader *r = lua_newuserdatauv(L, sizeof *r, 4);
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, UPLOAD_MT);
    r->max_depth = (int)depth;
    r->max_values = (long)values;
    r->qhead = r->qtail = 1;
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);    /* the bytes stay alive as long as the reader */
    lua_newtable(L);
    lua_setiuservalue(L, -2, 2);
    lua_getfield(L, 4, "keep");
    if (lua_istable(L, -1)) {
        int next = 0;
        lua_newtable(L);
        number_keeps(L, lua_gettop(L) - 1, lua_gettop(L), &next, 0);
        r->has_keep = 1;
        lua_replace(L, -2);
    } else {
        lua_pop(L, 1);
        lua_pushnil(L);
    }
    lua_setiuservalue(L, -2, 3);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 4);
    if (source_init(&r->src, s, first, last, (size_t)limit) < 0)
        return luaL_error(L, "upload: zlib init failed");
    if (!(r->h = yajl_alloc(&callbacks, NULL, r)))
        return luaL_error(L, "upload: out of memory");
    return 1;
}

/* Reads the whole range (inflated) into a buffer; 0, or -1 with msg and code. */
static int read_all(lua_State *L, const char *s, size_t first, size_t last, size_t limit,
                    luaL_Buffer *b, const char **msg, const char **code)
{
    struct source *src = lua_newuserdatauv(L, sizeof *src, 0);   /* the buffer is big */
    int rc = 0;
    if (source_init(src, s, first, last, limit) < 0)
        return luaL_error(L, "upload: zlib init failed");
    luaL_buffinit(L, b);
    for (;;) {
        const unsigned char *p;
        size_t n;
        if (source_read(src, &p, &n, msg, code) < 0) {
            rc = -1;
            goto fail;
        }
        if (n == 0)
            break;
        luaL_addlstring(b, (const char *)p, n);
    }
fail:
    source_free(src);
    return rc;
}

/* host.upload.text(s, first, last, limit) -> string | nil, message, code */
static int l_text(lua_State *L)
{
    size_t first, last;
    const char *s = check_range(L, &first, &last);
    lua_Integer limit = luaL_checkinteger(L, 4);
    luaL_argcheck(L, limit > 0, 4, "limit must be positive");
    if (!(last - first >= 2 && s[first] == '\x1f' && s[first + 1] == '\x8b')) {
        if (last - first > (size_t)limit) {
            lua_pushnil(L);
            lua_pushstring(L, "the file is over the size limit");
            lua_pushstring(L, "too_large");
            return 3;
        }
        lua_pushlstring(L, s + first, last - first);
        return 1;
    }
    luaL_Buffer b;
    const char *msg, *code;
    if (read_all(L, s, first, last, (size_t)limit, &b, &msg, &code) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, msg);
        lua_pushstring(L, code);
        return 3;
    }
    luaL_pushresult(&b);
    return 1;
}

/* host.upload.head(s, first, last, n) -> the first n bytes (inflated) | nil, message */
static int l_head(lua_State *L)
{
    size_t first, last;
    const char *s = check_range(L, &first, &last);
    lua_Integer want = luaL_checkinteger(L, 4);
    luaL_argcheck(L, want > 0 && want <= CHUNK, 4, "1 to 65536 bytes");
    struct source *src = lua_newuserdatauv(L, sizeof *src, 0);
    if (source_init(src, s, first, last, (size_t)-1) < 0)
        return luaL_error(L, "upload: zlib init failed");
    const unsigned char *p;
    size_t n;
    const char *msg, *code;
    int rc = source_read(src, &p, &n, &msg, &code);
    source_free(src);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, msg);
        return 2;
    }
    lua_pushlstring(L, (const char *)p, n < (size_t)want ? n : (size_t)want);
    return 1;
}

int upload_luaopen(lua_State *L)
{
    static const luaL_Reg methods[] = {{"next", l_next}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"json", l_json}, {"text", l_text}, {"head", l_head}, {NULL, NULL}};
    if (luaL_newmetatable(L, UPLOAD_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}
