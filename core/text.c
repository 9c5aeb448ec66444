/*
** text.c: host.text, text clean-up that runs on every title of a library file, where
** Lua's pattern passes cost too much (a 2 KB HTML summary took six passes, ~130 us).
**
**   host.text.nfc(s)   -> s in Unicode NFC (utf8proc) | nil, "invalid UTF-8"; ASCII is
**                         returned as is. Names come decomposed as often as composed
**                         ("S\u0323o\u0323..." in Audible's own data).
**   host.text.plain(s) -> s as plain text | nil when nothing is left: </p> and <br> become
**                         line breaks, other tags go, entities (named, &#N;, &#xH;) are
**                         decoded, blank runs become one space (one line break when they
**                         hold one), leading and trailing blanks go.
*/
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <utf8proc.h>

#include "host.h"

static int is_ascii(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    return 1;
}

static int l_nfc(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    if (is_ascii(s, len)) {
        lua_settop(L, 1);
        return 1;
    }
    utf8proc_uint8_t *out = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &out,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0) {
        lua_pushnil(L);
        lua_pushstring(L, "invalid UTF-8");
        return 2;
    }
    lua_pushlstring(L, (const char *)out, (size_t)n);
    free(out);
    return 1;
}

/* ---- plain ---- */

static const struct {
    const char *name;
    unsigned cp;
} entities[] = {
    {"amp", '&'},       {"lt", '<'},        {"gt", '>'},        {"quot", '"'},
    {"apos", '\''},     {"nbsp", ' '},      {"mdash", 0x2014},  {"ndash", 0x2013},
    {"hellip", 0x2026}, {"rsquo", 0x2019},  {"lsquo", 0x2018},  {"rdquo", 0x201D},
    {"ldquo", 0x201C},  {"copy", 0xA9},     {"reg", 0xAE},      {"trade", 0x2122},
    {NULL, 0}};

/* The code point of the entity body e[0..n) ("amp", "#233", "#xE9"); 0 when unknown or
   not a valid scalar value. */
static unsigned entity_cp(const char *e, size_t n)
{
    if (n >= 2 && e[0] == '#') {
        char tmp[12];
        int hex = e[1] == 'x' || e[1] == 'X';
        size_t start = hex ? 2 : 1;
        if (n - start == 0 || n - start >= sizeof tmp)
            return 0;
        memcpy(tmp, e + start, n - start);
        tmp[n - start] = '\0';
        char *end;
        unsigned long cp = strtoul(tmp, &end, hex ? 16 : 10);
        if (*end || cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        return (unsigned)cp;
    }
    for (int i = 0; entities[i].name; i++)
        if (strlen(entities[i].name) == n && !strncasecmp(entities[i].name, e, n))
            return entities[i].cp;
    return 0;
}

struct plain {
    luaL_Buffer *b;
    int started, space, line;   /* text written; a blank / a line break is pending */
};

static void put_pending(struct plain *p)
{
    if (p->started && (p->line || p->space))
        luaL_addchar(p->b, p->line ? '\n' : ' ');
    p->space = p->line = 0;
    p->started = 1;
}

static void put_cp(struct plain *p, unsigned cp)
{
    if (cp == ' ') {
        p->space = 1;
        return;
    }
    put_pending(p);
    char u[4];
    utf8proc_ssize_t n = utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)u);
    luaL_addlstring(p->b, u, (size_t)n);
}

/* A tag at s[i] ('<'): returns the index after it, or i when it is not a tag. */
static size_t tag(struct plain *p, const char *s, size_t len, size_t i)
{
    char first = i + 1 < len ? s[i + 1] : ' ';
    if (!(first == '/' || first == '!' || (first >= 'a' && first <= 'z') || (first >= 'A' && first <= 'Z')))
        return i;                       /* "3 < 5" is text */
    const char *end = memchr(s + i, '>', len - i);
    if (!end)
        return i;
    const char *name = s + i + 1;
    int closing = *name == '/';
    name += closing;
    size_t n = strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");
    if (name + n > end)
        n = (size_t)(end - name);
    if ((n == 2 && !strncasecmp(name, "br", 2)) || (closing && n == 1 && (*name == 'p' || *name == 'P')))
        p->line = 1;
    return (size_t)(end - s) + 1;
}

static int l_plain(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    struct plain p = {.b = &b};
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        if (c == '<') {
            size_t next = tag(&p, s, len, i);
            if (next != i) {
                i = next;
                continue;
            }
        } else if (c == '&') {
            const char *semi = memchr(s + i + 1, ';', len - i - 1 < 12 ? len - i - 1 : 12);
            unsigned cp = semi ? entity_cp(s + i + 1, (size_t)(semi - s - i - 1)) : 0;
            if (cp) {
                put_cp(&p, cp);
                i = (size_t)(semi - s) + 1;
                continue;
            }
        } else if (c == '\n') {
            p.line = 1, i++;
            continue;
        } else if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
            p.space = 1, i++;
            continue;
        }
        put_pending(&p);
        luaL_addchar(&b, (char)c);
        i++;
    }
    luaL_pushresult(&b);
    if (lua_rawlen(L, -1) == 0)
        lua_pushnil(L);
    return 1;
}

int text_luaopen(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"nfc", l_nfc}, {"plain", l_plain}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
