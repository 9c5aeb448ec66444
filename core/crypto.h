/*
** crypto: random bytes, SHA-256, HMAC-SHA256, base64url, constant-time comparison, UUIDs.
** The C functions below are for other C files; Lua sees them as host.crypto (crypto.c's
** contract comment lists the Lua side).
*/
#ifndef SHELFSYNC_CRYPTO_H
#define SHELFSYNC_CRYPTO_H

#include <lua.h>
#include <stddef.h>

#define CRYPTO_SHA256_LEN 32
#define CRYPTO_UUID_LEN 36            /* without the terminating NUL */

/* Bytes needed to base64url-encode n bytes without padding (NUL not included). */
#define CRYPTO_B64URL_ENCODED_LEN(n) (((n) / 3) * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))

/*
** Fills buf with n bytes from the kernel CSPRNG (getrandom(2), retried on EINTR and on
** short reads). Returns 0, or -1 with errno set; buf is then unusable.
*/
int crypto_random(void *buf, size_t n);

/* out receives the 32-byte SHA-256 digest of data[0..len). */
void crypto_sha256(const void *data, size_t len, unsigned char out[CRYPTO_SHA256_LEN]);

/* out receives the digest as 64 lowercase hex digits and a NUL. */
void crypto_sha256_hex(const void *data, size_t len, char out[2 * CRYPTO_SHA256_LEN + 1]);

/* out receives HMAC-SHA256(key, data). key may be empty (keylen 0). */
void crypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                        unsigned char out[CRYPTO_SHA256_LEN]);

/*
** Writes the base64url encoding (RFC 4648 section 5, no padding) of src[0..len) to dst,
** which must hold CRYPTO_B64URL_ENCODED_LEN(len) + 1 bytes, and NUL-terminates it.
** Returns the encoded length.
*/
size_t crypto_b64url_encode(const void *src, size_t len, char *dst);

/*
** Decodes unpadded base64url src[0..len) into dst, which must hold len * 3 / 4 + 1 bytes.
** Strict: padding, characters outside the alphabet, a length of 4k+1 and non-zero unused
** trailing bits are refused, so every byte string has exactly one accepted encoding.
** Returns the decoded length, or -1.
*/
long crypto_b64url_decode(const char *src, size_t len, unsigned char *dst);

/* 1 when a[0..alen) equals b[0..blen), else 0; time depends on the lengths only. */
int crypto_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Writes a random (version 4) UUID in lowercase canonical form plus a NUL. Returns 0 or -1. */
int crypto_uuid(char out[CRYPTO_UUID_LEN + 1]);

/* Pushes the host.crypto table. */
int crypto_luaopen(lua_State *L);

#endif
