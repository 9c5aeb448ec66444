/*
** bulk_text.c: the byte-level string tests of host.bulk, each one pass over the bytes: a NUL
** and strict UTF-8 (as validate.text_ok and Lua's utf8.len), the character count, and the
** Lua %s class trimmed off both ends (validate.trim).
*/
#include <stdint.h>
#include <string.h>

#include "bulk_private.h"

int bulk_text_check(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            uint64_t w;
            /* ASCII without NUL, eight bytes at a time (the zero-byte test of a word) */
            while (n - i >= 8 && (memcpy(&w, s + i, 8), !(w & 0x8080808080808080ULL)) &&
                   !((w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL))
                i += 8;
            while (i < n && s[i] < 0x80) {
                if (!s[i])
                    return TEXT_NUL;
                i++;
            }
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF)
            k = 1, cp = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF)
            k = 2, cp = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4)
            k = 3, cp = c & 0x07, min = 0x10000;
        else
            goto bad;
        if (n - i <= k)
            goto bad;
        for (size_t j = 1; j <= k; j++) {
            unsigned cc = s[i + j];
            if ((cc & 0xC0) != 0x80)
                goto bad;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            goto bad;
        i += k + 1;
    }
    return TEXT_OK;
bad:
    return memchr(s + i, 0, n - i) ? TEXT_NUL : TEXT_BAD_UTF8;
}

size_t bulk_text_utf8_len(const unsigned char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += (s[i] & 0xC0) != 0x80;
    return c;
}

static int is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

void bulk_text_trim(const char *p, size_t *off, size_t *len)
{
    size_t a = *off, e = *off + *len;
    while (a < e && is_space((unsigned char)p[a]))
        a++;
    while (e > a && is_space((unsigned char)p[e - 1]))
        e--;
    *off = a;
    *len = e - a;
}
