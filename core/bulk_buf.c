/*
** bulk_buf.c: the growable arrays host.bulk keeps values in (a byte buffer for strings, a
** vector of values). Each belongs to the struct bulk that holds it; bulk.c frees them.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bulk_private.h"

void *bulk_grow(lua_State *L, void *p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return p;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(p, c * size);
    if (!q)
        luaL_error(L, "bulk: out of memory");
    *cap = c;
    return q;
}

size_t bulk_buf_add(lua_State *L, struct buf *b, const char *p, size_t n)
{
    uintptr_t at = (uintptr_t)p, base = (uintptr_t)b->p;
    int inside = b->p && at >= base && at < base + b->cap;
    b->p = bulk_grow(L, b->p, &b->cap, b->n + n + 1, 1);
    if (inside)
        p = b->p + (at - base);
    size_t off = b->n;
    if (n)
        memcpy(b->p + off, p, n);
    b->n += n;
    return off;
}

struct val *bulk_vec_add(lua_State *L, struct vec *v)
{
    v->v = bulk_grow(L, v->v, &v->cap, v->n + 1, sizeof *v->v);
    struct val *e = &v->v[v->n++];
    memset(e, 0, sizeof *e);
    return e;
}
