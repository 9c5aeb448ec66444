/*
** crypto: host.crypto, the small cryptographic toolbox Lua code needs (sessions, PKCE,
** signed cookies, tokens). The primitives come from the kernel (getrandom) and OpenSSL.
**
** Lua side (all strings are byte strings):
**   host.crypto.random(n)          -> n bytes from getrandom(2); 0 <= n <= 1 MiB
**   host.crypto.sha256(s)          -> 32-byte digest
**   host.crypto.sha256_hex(s)      -> 64 lowercase hex digits
**   host.crypto.hmac_sha256(k, s)  -> 32-byte HMAC-SHA256 of s keyed with k
**   host.crypto.b64url_encode(s)   -> base64url without padding
**   host.crypto.b64url_decode(s)   -> bytes | nil, "invalid base64url" (strict: no padding,
**                                     no other alphabet, canonical trailing bits)
**   host.crypto.hex(s)             -> lowercase hex of s
**   host.crypto.equal(a, b)        -> boolean; constant time in the contents (CRYPTO_memcmp)
**   host.crypto.uuid()             -> random version 4 UUID, "xxxxxxxx-xxxx-4xxx-Nxxx-..."
** Misuse (wrong argument types, n out of range) raises; so does a failing kernel CSPRNG,
** which no caller can handle sensibly.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "crypto.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define CRYPTO_RANDOM_MAX (1 << 20)

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int crypto_random(void *buf, size_t n) {
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

void crypto_sha256(const void *data, size_t len, unsigned char out[CRYPTO_SHA256_LEN]) {
    unsigned int outlen = 0;
    int ok = EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL);
    assert(ok == 1 && outlen == CRYPTO_SHA256_LEN);
    (void)ok;
}

static void hex_encode(const unsigned char *src, size_t len, char *dst) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        dst[2 * i] = digits[src[i] >> 4];
        dst[2 * i + 1] = digits[src[i] & 0x0f];
    }
    dst[2 * len] = '\0';
}

void crypto_sha256_hex(const void *data, size_t len, char out[2 * CRYPTO_SHA256_LEN + 1]) {
    unsigned char digest[CRYPTO_SHA256_LEN];
    crypto_sha256(data, len, digest);
    hex_encode(digest, sizeof digest, out);
}

void crypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                        unsigned char out[CRYPTO_SHA256_LEN]) {
    static const unsigned char empty = 0;
    unsigned int outlen = 0;
    /* HMAC() wants a non-NULL key pointer even for an empty key. */
    unsigned char *r = HMAC(EVP_sha256(), keylen ? key : &empty, (int)keylen,
                            data, len, out, &outlen);
    assert(r != NULL && outlen == CRYPTO_SHA256_LEN);
    (void)r;
}

size_t crypto_b64url_encode(const void *src, size_t len, char *dst) {
    const unsigned char *s = src;
    size_t i = 0, o = 0;
    for (; i + 3 <= len; i += 3) {
        unsigned long v = ((unsigned long)s[i] << 16) | ((unsigned long)s[i + 1] << 8) | s[i + 2];
        dst[o++] = b64url_alphabet[(v >> 18) & 63];
        dst[o++] = b64url_alphabet[(v >> 12) & 63];
        dst[o++] = b64url_alphabet[(v >> 6) & 63];
        dst[o++] = b64url_alphabet[v & 63];
    }
    if (len - i == 1) {
        unsigned long v = (unsigned long)s[i] << 16;
        dst[o++] = b64url_alphabet[(v >> 18) & 63];
        dst[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (len - i == 2) {
        unsigned long v = ((unsigned long)s[i] << 16) | ((unsigned long)s[i + 1] << 8);
        dst[o++] = b64url_alphabet[(v >> 18) & 63];
        dst[o++] = b64url_alphabet[(v >> 12) & 63];
        dst[o++] = b64url_alphabet[(v >> 6) & 63];
    }
    dst[o] = '\0';
    return o;
}

static int b64url_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

long crypto_b64url_decode(const char *src, size_t len, unsigned char *dst) {
    size_t o = 0;
    unsigned long acc = 0;
    int bits = 0;
    if (len % 4 == 1) return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)src[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (unsigned long)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            dst[o++] = (unsigned char)((acc >> bits) & 0xff);
        }
    }
    /* Leftover bits (2 or 4) must be zero, or two encodings would decode alike. */
    if (bits > 0 && (acc & ((1UL << bits) - 1)) != 0) return -1;
    return (long)o;
}

int crypto_equal(const void *a, size_t alen, const void *b, size_t blen) {
    if (alen != blen) return 0;
    if (alen == 0) return 1;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

int crypto_uuid(char out[CRYPTO_UUID_LEN + 1]) {
    unsigned char b[16];
    char hex[33];
    if (crypto_random(b, sizeof b) != 0) return -1;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);   /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
    hex_encode(b, sizeof b, hex);
    memcpy(out, hex, 8);
    out[8] = '-';
    memcpy(out + 9, hex + 8, 4);
    out[13] = '-';
    memcpy(out + 14, hex + 12, 4);
    out[18] = '-';
    memcpy(out + 19, hex + 16, 4);
    out[23] = '-';
    memcpy(out + 24, hex + 20, 12);
    out[36] = '\0';
    return 0;
}

/* ---- Lua bindings ---------------------------------------------------------------- */

static int l_crypto_random(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_Buffer b;
    luaL_argcheck(L, n >= 0 && n <= CRYPTO_RANDOM_MAX, 1, "out of range (0 .. 1048576)");
    char *p = luaL_buffinitsize(L, &b, (size_t)n);
    if (crypto_random(p, (size_t)n) != 0)
        return luaL_error(L, "getrandom failed: %s", strerror(errno));
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

static int l_crypto_sha256(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char digest[CRYPTO_SHA256_LEN];
    crypto_sha256(s, len, digest);
    lua_pushlstring(L, (const char *)digest, sizeof digest);
    return 1;
}

static int l_crypto_sha256_hex(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char hex[2 * CRYPTO_SHA256_LEN + 1];
    crypto_sha256_hex(s, len, hex);
    lua_pushlstring(L, hex, 2 * CRYPTO_SHA256_LEN);
    return 1;
}

static int l_crypto_hmac_sha256(lua_State *L) {
    size_t keylen, len;
    const char *key = luaL_checklstring(L, 1, &keylen);
    const char *s = luaL_checklstring(L, 2, &len);
    unsigned char mac[CRYPTO_SHA256_LEN];
    crypto_hmac_sha256(key, keylen, s, len, mac);
    lua_pushlstring(L, (const char *)mac, sizeof mac);
    return 1;
}

static int l_crypto_b64url_encode(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    luaL_argcheck(L, len <= ((size_t)1 << 40), 1, "too long");
    char *dst = luaL_buffinitsize(L, &b, CRYPTO_B64URL_ENCODED_LEN(len) + 1);
    size_t n = crypto_b64url_encode(s, len, dst);
    luaL_pushresultsize(&b, n);
    return 1;
}

static int l_crypto_b64url_decode(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    unsigned char *dst = (unsigned char *)luaL_buffinitsize(L, &b, len * 3 / 4 + 1);
    long n = crypto_b64url_decode(s, len, dst);
    if (n < 0) {
        luaL_pushresultsize(&b, 0);
        lua_pushnil(L);
        lua_pushliteral(L, "invalid base64url");
        return 2;
    }
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

static int l_crypto_hex(lua_State *L) {
    size_t len;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    char *dst = luaL_buffinitsize(L, &b, 2 * len + 1);
    hex_encode(s, len, dst);
    luaL_pushresultsize(&b, 2 * len);
    return 1;
}

static int l_crypto_equal(lua_State *L) {
    size_t alen, blen;
    const char *a = luaL_checklstring(L, 1, &alen);
    const char *b = luaL_checklstring(L, 2, &blen);
    lua_pushboolean(L, crypto_equal(a, alen, b, blen));
    return 1;
}

static int l_crypto_uuid(lua_State *L) {
    char uuid[CRYPTO_UUID_LEN + 1];
    if (crypto_uuid(uuid) != 0)
        return luaL_error(L, "getrandom failed: %s", strerror(errno));
    lua_pushlstring(L, uuid, CRYPTO_UUID_LEN);
    return 1;
}

static const luaL_Reg crypto_funcs[] = {
    {"random", l_crypto_random},
    {"sha256", l_crypto_sha256},
    {"sha256_hex", l_crypto_sha256_hex},
    {"hmac_sha256", l_crypto_hmac_sha256},
    {"b64url_encode", l_crypto_b64url_encode},
    {"b64url_decode", l_crypto_b64url_decode},
    {"hex", l_crypto_hex},
    {"equal", l_crypto_equal},
    {"uuid", l_crypto_uuid},
    {NULL, NULL}
};

int crypto_luaopen(lua_State *L) {
    luaL_newlib(L, crypto_funcs);
    return 1;
}
