/*
** bulk_json.c: the body parsed by yajl, its events routed by the frame they arrive in (the
** root object, the titles array, an element, a field's array, anything skipped). Only what
** a rule reads is kept: field values of elements, as offsets into the text or, when yajl
** unescaped them, into a scratch buffer; each element is checked (bulk_check.c) as it ends.
** A text yajl and lua-cjson read differently is answered BULK_JSON_BAD before parsing.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulk_private.h"

static int isd(char c)
{
    return c >= '0' && c <= '9';
}

static void reset_results(struct bulk *b)
{
    lua_State *L = b->L;
    b->count = 0;
    b->elems.n = 0;
    b->arena.n = 0;
    b->nextras = 0;
    lua_newtable(L);
    lua_replace(L, S_REFUSED);
    lua_newtable(L);
    lua_replace(L, S_DROPPED);
    lua_newtable(L);
    lua_replace(L, S_EXTRAS);
    lua_newtable(L);
    lua_replace(L, S_SENT);
}

enum vk { VK_SCALAR, VK_MAP, VK_ARRAY };

static int push_frame(struct bulk *b, int frame, int field)
{
    if (b->depth >= MAX_DEPTH) {
        b->too_deep = 1;
        return 0;
    }
    b->frame_field[b->depth] = field;
    b->frames[b->depth++] = (unsigned char)frame;
    return 1;
}

static int top_frame(const struct bulk *b)
{
    return b->depth ? b->frames[b->depth - 1] : -1;
}

/* Whether a scalar arriving now is kept (so its bytes must be read). */
static int wanted(const struct bulk *b)
{
    int top = top_frame(b);
    return (top == F_ELEM_OBJ && b->pending_field >= 0) || top == F_FIELD_ARR ||
           (top == F_ROOT_OBJ && b->pending_titles) || top == F_TITLES || top == -1;
}

static void root_done(struct bulk *b)
{
    b->root_end = b->completing ? b->text_len : yajl_get_bytes_consumed(b->h);
}

static int on_value(struct bulk *b, int vk, const struct val *sv)
{
    int top = top_frame(b), push = F_SKIP, field = -1;
    switch (top) {
    case -1:
        if (vk == VK_SCALAR)
            root_done(b);
        b->root = vk == VK_MAP ? ROOT_OBJECT : vk == VK_ARRAY ? ROOT_EMPTY_ARRAY : ROOT_OTHER;
        push = vk == VK_MAP ? F_ROOT_OBJ : F_ROOT_ARR;
        break;
    case F_ROOT_ARR:
        b->root = ROOT_OTHER;
        break;
    case F_ROOT_OBJ:
        if (!b->pending_titles)
            break;
        b->pending_titles = 0;
        reset_results(b);
        if (vk == VK_ARRAY)
            b->titles = T_ARRAY, push = F_TITLES;
        else if (vk == VK_MAP)
            b->titles = T_EMPTY_OBJ, push = F_TITLES_OBJ;
        else
            b->titles = sv->t == V_NULL ? T_ABSENT : T_NOT_ARRAY;
        break;
    case F_TITLES:
        b->count++;
        if (b->max_items >= 0 && b->count > b->max_items)
            break;
        if (vk == VK_SCALAR)
            return bulk_check_element(b, sv->t == V_NULL ? E_NULL : E_NOT_OBJECT);
        bulk_check_begin(b);
        push = vk == VK_MAP ? F_ELEM_OBJ : F_ELEM_ARR;
        b->last_field = 0;
        b->elem_nonempty = 0;
        break;
    case F_ELEM_ARR:
        b->elem_nonempty = 1;
        break;
    case F_ELEM_OBJ: {
        int f = b->pending_field;
        b->pending_field = -1;
        if (f < 0)
            break;
        struct val *raw = &b->raw[f];
        memset(raw, 0, sizeof *raw);
        if (vk == VK_SCALAR) {
            *raw = *sv;
        } else if (vk == VK_MAP) {
            raw->t = V_TABLE;
            push = F_FIELD_OBJ, field = f;
        } else if (b->spec->fields[f].r.kind == R_ARRAY) {
            raw->t = V_ARR;
            raw->off = b->relems.n;
            push = F_FIELD_ARR, field = f;
        } else {
            raw->t = V_TABLE, raw->nonempty = 1;
        }
        break;
    }
    case F_FIELD_ARR: {
        int f = b->frame_field[b->depth - 1];
        if (b->raw[f].n++ >= b->spec->fields[f].r.keep_items)
            break; /* refused for its length before any element is read */
        struct val *e = bulk_vec_add(b->L, &b->relems);
        if (vk == VK_SCALAR)
            *e = *sv;
        else
            e->t = V_TABLE;
        break;
    }
    default:
        break;
    }
    return vk == VK_SCALAR ? 1 : push_frame(b, push, field);
}

static int cb_null(void *ctx)
{
    struct val v = {.t = V_NULL};
    return on_value(ctx, VK_SCALAR, &v);
}

static int cb_boolean(void *ctx, int boolean)
{
    struct val v = {.t = V_BOOL, .u.b = boolean};
    return on_value(ctx, VK_SCALAR, &v);
}

static int cb_number(void *ctx, const char *s, size_t n)
{
    struct bulk *b = ctx;
    struct val v = {.t = V_FLT};
    size_t neg = n > 0 && s[0] == '-', i = neg;
    uint64_t whole = 0;
    while (i < n && i - neg < 16 && isd(s[i]))
        whole = whole * 10 + (uint64_t)(s[i++] - '0');
    if (i == n && n > neg) {
        /* up to 16 digits: converted exactly rounded, as strtod does (-0 included) */
        v.u.d = neg ? -(double)whole : (double)whole;
    } else if (wanted(b)) {
        /* lua-cjson reads a number with strtod: so do we, on a terminated copy */
        char small[64], *p = n < sizeof small ? small : malloc(n + 1);
        if (!p)
            return luaL_error(b->L, "bulk: out of memory");
        memcpy(p, s, n);
        p[n] = 0;
        v.u.d = strtod(p, NULL);
        if (p != small)
            free(p);
    }
    return on_value(b, VK_SCALAR, &v);
}

static int cb_string(void *ctx, const unsigned char *s, size_t n)
{
    struct bulk *b = ctx;
    struct val v = {.t = V_STR, .len = n};
    const char *p = (const char *)s;
    if (p >= b->text && p + n <= b->text + b->text_len) {
        v.where = IN_TEXT;
        v.off = (size_t)(p - b->text);
    } else if (wanted(b)) {
        v.where = IN_SCRATCH; /* unescaped by yajl into its own buffer */
        v.off = bulk_buf_add(b->L, &b->scratch, p, n);
    }
    return on_value(b, VK_SCALAR, &v);
}

static int cb_start_map(void *ctx)
{
    return on_value(ctx, VK_MAP, NULL);
}
static int cb_start_array(void *ctx)
{
    return on_value(ctx, VK_ARRAY, NULL);
}

/* An element key's field index, or -1. Clients send every element's keys in the same order:
** the field that followed the previous key last time is tried first. */
static int element_key(struct bulk *b, const char *s, size_t n)
{
    const struct spec *sp = b->spec;
    int g = b->next_field[b->last_field] - 1, f;
    if (g >= 0 && sp->fields[g].len == n && !memcmp(sp->fields[g].name, s, n))
        f = g;
    else if ((f = bulk_field_index(sp, s, n)) < 0)
        return -1;
    b->next_field[b->last_field] = f + 1;
    b->last_field = f + 1;
    return f;
}

static int cb_map_key(void *ctx, const unsigned char *s, size_t n)
{
    struct bulk *b = ctx;
    switch (top_frame(b)) {
    case F_ROOT_OBJ:
        b->pending_titles = n == b->key_len && !memcmp(s, b->key, n);
        break;
    case F_TITLES_OBJ:
        b->titles = T_NOT_ARRAY;
        break;
    case F_ELEM_OBJ:
        b->pending_field = element_key(b, (const char *)s, n);
        break;
    case F_FIELD_OBJ:
        b->raw[b->frame_field[b->depth - 1]].nonempty = 1;
        break;
    default:
        break;
    }
    return 1;
}

static int cb_end(void *ctx)
{
    struct bulk *b = ctx;
    int frame = b->frames[--b->depth];
    if (b->depth == 0)
        root_done(b);
    if (frame == F_ELEM_OBJ || (frame == F_ELEM_ARR && !b->elem_nonempty))
        return bulk_check_element(b, E_OBJECT);
    if (frame == F_ELEM_ARR)
        return bulk_check_element(b, E_NOT_OBJECT);
    return 1;
}

static const yajl_callbacks CALLBACKS = {cb_null,   cb_boolean,     NULL,         NULL,
                                         cb_number, cb_string,      cb_start_map, cb_map_key,
                                         cb_end,    cb_start_array, cb_end};

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = isd(c) ? c - '0' : ((c | 32) >= 'a' && (c | 32) <= 'f') ? (c | 32) - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Text yajl reads differently from lua-cjson: \f or \v anywhere (cjson: not whitespace;
** yajl refuses them raw in strings anyway), and a surrogate escape that is not a high one
** followed by a low one (cjson refuses it, yajl makes up a character). */
static const char *text_suspect(const char *s, size_t n)
{
    if (memchr(s, '\f', n) || memchr(s, '\v', n))
        return "\\f or \\v in the text";
    const char *p = s, *end = s + n;
    while ((p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
        if (end - p >= 6 && p[1] == 'u') {
            int cp = hex4(p + 2);
            if (cp >= 0 && (cp & 0xF800) == 0xD800) {
                if ((cp & 0x400) || end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
                    (hex4(p + 8) & 0xFC00) != 0xDC00 || hex4(p + 8) < 0)
                    return "invalid unicode escape code";
                p += 12;
                continue;
            }
            p += 6;
        } else {
            p += 2;
        }
        if (p >= end)
            break;
    }
    return NULL;
}

static int bad(char *why, size_t whylen, const char *msg, size_t len)
{
    snprintf(why, whylen, "%.*s", (int)len, msg);
    return BULK_JSON_BAD;
}

static int parse_error(struct bulk *b, char *why, size_t whylen)
{
    if (b->too_deep)
        return bad(why, whylen, "too many nested data structures", 31);
    unsigned char *e = yajl_get_error(b->h, 0, (const unsigned char *)b->text, b->text_len);
    const char *m = e ? (const char *)e : "not valid JSON";
    int rc = bad(why, whylen, m, strcspn(m, "\n"));
    if (e)
        yajl_free_error(b->h, e);
    return rc;
}

int bulk_json_parse(struct bulk *b, char *why, size_t whylen)
{
    const char *text = b->text;
    size_t len = b->text_len;
    const char *suspect = text_suspect(text, len);
    if (suspect)
        return bad(why, whylen, suspect, strlen(suspect));
    if (!(b->h = yajl_alloc(&CALLBACKS, NULL, b)))
        return luaL_error(b->L, "bulk: out of memory");
    yajl_config(b->h, yajl_dont_validate_strings, 1);
    yajl_status st = yajl_parse(b->h, (const unsigned char *)text, len);
    b->completing = 1;
    if (st == yajl_status_ok)
        st = yajl_complete_parse(b->h);
    /* yajl lets an unfinished token after the value pass (2"x): cjson does not */
    while (st == yajl_status_ok && b->root_end < len && strchr(" \t\r\n", text[b->root_end]) &&
           text[b->root_end])
        b->root_end++;
    int rc = BULK_JSON_OK;
    if (st == yajl_status_ok && b->root_end < len)
        rc = bad(why, whylen, "trailing garbage", 16);
    else if (b->check_failed)
        rc = BULK_JSON_RAISED;
    else if (st != yajl_status_ok)
        rc = parse_error(b, why, whylen);
    yajl_free(b->h);
    b->h = NULL;
    return rc;
}
