/*
** bulk_private.h: what the parts of host.bulk share (not for the rest of the host, which sees
** bulk_luaopen in host.h):
**   bulk.c         the Lua API: compile, decode, the b: methods, the userdata's lifetimes
**   bulk_rules.c   validate.lua rule tables compiled into struct spec / struct rule
**   bulk_json.c    the yajl events of the body routed to the element being read
**   bulk_check.c   a compiled rule run on a read value, an element on the object rule
**   bulk_text.c    byte-level string tests (strict UTF-8, NUL, %s trimming)
**   bulk_format.c  validate.lua's FORMATS (date, datetime, http_url, uuid)
**   bulk_buf.c     the growable buffers values are kept in
*/
#ifndef SHELFSYNC_BULK_PRIVATE_H
#define SHELFSYNC_BULK_PRIVATE_H

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_parse.h>

#define SPEC_MT "shelfsync.bulk.spec"
#define BULK_MT "shelfsync.bulk"
#define MAX_DEPTH 64               /* lua-cjson's decode_max_depth (json.c) */
#define MAX_INT 9007199254740992LL /* validate.lua's MAX_INT, 2^53 */
#define MAX_BITS 63

/* ---- Lua numbers, compared as Lua compares them (an integer and a float exactly) ---- */

struct num {
    int is_int;
    lua_Integer i;
    double d;
};

static inline struct num num_int(lua_Integer i)
{
    struct num n = {1, i, 0};
    return n;
}

static inline struct num num_flt(double d)
{
    struct num n = {0, 0, d};
    return n;
}

static inline int int_fits_float(lua_Integer i)
{
    return i >= -MAX_INT && i <= MAX_INT;
}

/* A float with an integral value in lua_Integer's range, as lua_numbertointeger. */
static inline int flt_to_int(double d, lua_Integer *out)
{
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || floor(d) != d)
        return 0;
    *out = (lua_Integer)d;
    return 1;
}

/* i < f and i <= f (lvm.c LTintfloat / LEintfloat) */
static inline int lt_int_flt(lua_Integer i, double f, int or_equal)
{
    if (int_fits_float(i))
        return or_equal ? (double)i <= f : (double)i < f;
    if (isnan(f))
        return 0;
    double g = or_equal ? floor(f) : ceil(f);
    if (g >= -9223372036854775808.0 && g < 9223372036854775808.0)
        return or_equal ? i <= (lua_Integer)g : i < (lua_Integer)g;
    return f > 0;
}

/* f < i and f <= i (lvm.c LTfloatint / LEfloatint) */
static inline int lt_flt_int(double f, lua_Integer i, int or_equal)
{
    if (int_fits_float(i))
        return or_equal ? f <= (double)i : f < (double)i;
    if (isnan(f))
        return 0;
    double g = or_equal ? ceil(f) : floor(f);
    if (g >= -9223372036854775808.0 && g < 9223372036854775808.0)
        return or_equal ? (lua_Integer)g <= i : (lua_Integer)g < i;
    return f < 0;
}

static inline int num_lt(struct num a, struct num b)
{
    if (a.is_int && b.is_int)
        return a.i < b.i;
    if (!a.is_int && !b.is_int)
        return a.d < b.d;
    return a.is_int ? lt_int_flt(a.i, b.d, 0) : lt_flt_int(a.d, b.i, 0);
}

static inline int num_eq(struct num a, struct num b)
{
    if (a.is_int && b.is_int)
        return a.i == b.i;
    if (!a.is_int && !b.is_int)
        return a.d == b.d;
    lua_Integer i;
    return a.is_int ? flt_to_int(b.d, &i) && i == a.i : flt_to_int(a.d, &i) && i == b.i;
}

static inline void push_num(lua_State *L, struct num n)
{
    if (n.is_int)
        lua_pushinteger(L, n.i);
    else
        lua_pushnumber(L, n.d);
}

/* ---- compiled rules ---- */

enum rkind { R_STRING, R_INTEGER, R_NUMBER, R_BOOLEAN, R_ARRAY };
enum rformat { FMT_NONE, FMT_DATE, FMT_DATETIME, FMT_URL, FMT_UUID };
enum kind { K_NONE, K_STR, K_NUM, K_BOOL }; /* a scalar constant of a rule */

struct konst {
    int t;
    char *s;
    size_t len;
    struct num n;
    int b;
};

/* One shape of a check made by validate.shape_check: #v == len (when has_len) and v matches
** ^[set]+$ (or ^[set]*$, plus = 0), set as a bitmap of bytes. */
struct shape {
    int has_len, plus;
    lua_Integer len;
    unsigned char set[32];
};

struct rule {
    int kind;
    int required, drop;
    struct konst def, null_if;
    char *message;        /* the rule's `message` (custom), or NULL */
    int check;            /* index of `check` in the spec's uservalue, 0 = none */
    struct shape *shapes; /* the check's shapes when it runs here, or NULL (called) */
    int nshapes;
    char *shape_msg;            /* the message the check answers, or NULL */
    int trim, keep_empty, fold; /* fold: 1 upper, 2 lower */
    int has_len, has_min_len, has_max_len;
    struct num len, min_len, max_len;
    char *len_msg, *min_len_msg, *max_len_msg;
    char **enums;
    size_t *enum_lens;
    int n_enum;
    char *enum_msg;
    int format;
    int has_min, has_max, coerce, round;
    struct num min, max;
    char *range_msg;
    struct rule *items;
    int has_min_items, has_max_items, compact, unique;
    struct num min_items, max_items;
    char *min_items_msg, *max_items_msg;
    uint32_t keep_items; /* elements worth reading: past max_items the count alone matters */
};

struct field {
    char *name;
    size_t len;
    struct rule r;
};

struct spec {
    int nfields;
    struct field *fields; /* sorted by name, as validate.lua checks them */
    int required, in_place;
    int nbits;
    int bit_field[MAX_BITS];
    int nblank;
    char **blank;
    size_t *blank_lens;
    int nchecks;
    int sent; /* opts.sent: a field index, or -1 */
};

/* ---- decoded values ---- */

enum vtype { V_ABSENT, V_NULL, V_STR, V_INT, V_FLT, V_BOOL, V_ARR, V_TABLE, V_REF };
enum where { IN_TEXT, IN_SCRATCH, IN_ARENA };

/* A raw value (as cjson would have decoded it) or a cleaned one. */
struct val {
    unsigned char t, where, mt, nonempty; /* mt: a rebuilt array (json.array_mt) */
    uint32_t n;                           /* V_ARR: elements */
    size_t off, len;                      /* V_STR: bytes; V_ARR: first element */
    union {
        lua_Integer i;
        double d;
        int b;
        int ref; /* V_REF: index in the extras table */
    } u;
};

struct vec {
    struct val *v;
    size_t n, cap;
};

struct buf {
    char *p;
    size_t n, cap;
};

enum frame {
    F_ROOT_OBJ,
    F_ROOT_ARR,
    F_TITLES,
    F_TITLES_OBJ,
    F_ELEM_OBJ,
    F_ELEM_ARR,
    F_FIELD_ARR,
    F_FIELD_OBJ,
    F_SKIP
};
enum titles_state { T_ABSENT, T_ARRAY, T_EMPTY_OBJ, T_NOT_ARRAY };
enum root_state { ROOT_NONE, ROOT_OBJECT, ROOT_EMPTY_ARRAY, ROOT_OTHER };

/* Stack slots of decode(): 1 spec, 2 text, 3 key, 4 max_items, then these. */
#define S_BULK 5
#define S_REFUSED 6
#define S_DROPPED 7
#define S_CHECKS 8
#define S_EXTRAS 9
#define S_SENT 10
#define S_ERROR 11

struct bulk {
    const struct spec *spec;
    lua_State *L; /* while decoding */
    const char *text;
    size_t text_len;
    const char *key;
    size_t key_len;
    lua_Integer max_items;
    yajl_handle h;
    /* parse state */
    unsigned char frames[MAX_DEPTH + 1];
    int depth;
    int pending_titles; /* the root object's current key is `key` */
    int pending_field;  /* the element's current key: a field index, or -1 */
    int last_field;     /* the element's previous known key: a field index + 1, 0 at its start */
    int *next_field;    /* [last_field]: the field index + 1 whose key came next last time */
    int frame_field[MAX_DEPTH + 1];
    int root, titles;
    int too_deep, check_failed;
    int completing;    /* inside yajl_complete_parse: the text is consumed */
    size_t root_end;   /* where the root value ended */
    lua_Integer count; /* elements of the current titles array */
    int elem_nonempty; /* an element that is an array has elements */
    /* the element being read: raw field values, their array elements, escaped strings */
    struct val *raw;
    struct vec relems;
    struct buf scratch;
    /* results, per element: cleaned fields (rows of nfields), array elements, strings */
    struct val *rows;
    size_t rows_cap, present_cap, refused_cap; /* elements */
    struct vec elems;
    struct buf arena;
    lua_Integer *present;
    unsigned char *refused;
    int nextras;
    int has_errs; /* an errs table is on top of the stack */
    int errs_idx;
};

enum elem { E_OBJECT, E_NULL, E_NOT_OBJECT };

static inline const char *bulk_str_of(const struct bulk *b, const struct val *v)
{
    const char *base = v->where == IN_TEXT      ? b->text
                       : v->where == IN_SCRATCH ? b->scratch.p
                                                : b->arena.p;
    return base + v->off;
}

/* ---- bulk_rules.c ---- */

/*
** Compiles the object rule at index rule into s (zeroed by the caller, s->sent = -1), its
** check functions into the table at index uv; opts (index, nil allowed) for opts.shapes. Returns 0, or -1 with the reason the rule
** cannot run in C in why (s then holds what was compiled so far: bulk_spec_free frees it).
** Raises only for out of memory.
*/
int bulk_rules_compile(lua_State *L, struct spec *s, int rule, int opts, int uv, char *why,
                       size_t whylen);

/* Reads compile()'s opts (index idx, nil allowed) into s: 0; misuse raises. */
int bulk_rules_opts(lua_State *L, struct spec *s, int idx);

/* Frees what s owns (not s itself, a userdata) and zeroes it. */
void bulk_spec_free(struct spec *s);

/* The index of field name in s->fields, or -1. */
int bulk_field_index(const struct spec *s, const char *name, size_t len);

/* ---- bulk_buf.c ---- */

/* p grown to hold need elements of size (capacity doubling from 16); raises on out of memory. */
void *bulk_grow(lua_State *L, void *p, size_t *cap, size_t need, size_t size);

/* Appends n bytes (p may point into b itself); returns their offset. */
size_t bulk_buf_add(lua_State *L, struct buf *b, const char *p, size_t n);

/* A new zeroed value at the end of v (valid until v grows again). */
struct val *bulk_vec_add(lua_State *L, struct vec *v);

/* ---- bulk_text.c ---- */

/* Strict UTF-8 as Lua's utf8.len reads it: no overlongs, surrogates or code points past
** U+10FFFF. */
enum text_check { TEXT_OK, TEXT_NUL, TEXT_BAD_UTF8 };

/* validate.lua's string checks in one pass: a NUL anywhere first, then strict UTF-8. */
int bulk_text_check(const unsigned char *s, size_t n);

/* The characters of valid UTF-8 s. */
size_t bulk_text_utf8_len(const unsigned char *s, size_t n);

/* validate.trim: the Lua %s class off both ends of p[*off, *off + *len). */
void bulk_text_trim(const char *p, size_t *off, size_t *len);

/* ---- bulk_format.c ---- */

/* s (n bytes) cleaned into out (at least 64 bytes): its length, or -1 with *msg. */
int bulk_format_date(const char *s, size_t n, char *out, const char **msg);
int bulk_format_datetime(const char *s, size_t n, char *out, const char **msg);

/* Whether s (n bytes) is an http(s) URL / a UUID as validate.lua's formats read them. */
int bulk_format_http_url(const char *s, size_t n);
int bulk_format_uuid(const char *s, size_t n);

/* ---- bulk_check.c ---- */

/* Clears the raw fields before an element of the titles array is read. */
void bulk_check_begin(struct bulk *b);

/*
** Validates element b->count (its raw fields read, kind an enum elem) as validate.lua's object
** checker: its cleaned row, presence mask, or problems in the refused / dropped tables.
** Returns 1, or 0 when a rule's check raised (b->check_failed, its error in slot S_ERROR).
*/
int bulk_check_element(struct bulk *b, int kind);

/* Pushes a cleaned value as validate.lua would hold it (extras: the V_REF table's index). */
void bulk_push_val(struct bulk *b, const struct val *v, int extras);

/* ---- bulk_json.c ---- */

enum bulk_json_status { BULK_JSON_OK, BULK_JSON_BAD, BULK_JSON_RAISED };

/*
** Parses b->text (b set up by decode()), each element of the titles array checked as it ends.
** Returns BULK_JSON_OK; BULK_JSON_BAD with the reason in why (a text yajl and lua-cjson may
** read differently, or not JSON); BULK_JSON_RAISED when a rule's check raised (its error in
** slot S_ERROR). Raises only for out of memory. The yajl handle lives in b->h while it runs
** (so the bulk's __gc frees it after a raise) and is freed before returning.
*/
int bulk_json_parse(struct bulk *b, char *why, size_t whylen);

#endif
