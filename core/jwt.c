/*
** jwt: host.jwt on libjwt 1.10 (Debian 12).
**
** libjwt 1.10 takes the algorithm from the token's own header, verifies no signature when
** the key is NULL or empty, happily HMACs with an RSA public key when a token says HS256,
** and validates no claim. So every verification here:
**   1. splits the token itself (exactly three base64url segments, at most
**      JWT_MAX_TOKEN_LEN bytes) and parses the header with jansson (duplicate keys refused);
**   2. requires the header's alg to be exactly the expected one ("HS256" or "RS256") and
**      refuses a "crit" header, before libjwt sees the token;
**   3. calls jwt_decode() with a non-empty key, always, and checks jwt_get_alg() after;
**   4. checks the claims by hand from the payload it parsed (duplicate keys refused).
** For HS256 the MAC is also compared here in constant time before libjwt runs, since 1.10
** compares it with strcmp.
**
** Lua side:
**   host.jwt.sign_hs256(claims, secret) -> token
**       claims: table of string keys -> string | integer | boolean. secret: non-empty
**       string. Misuse (other value types, empty secret) raises. Nothing is added: pass
**       iat / exp / aud yourself.
**   host.jwt.verify_hs256(token, secret, {aud = s, leeway = seconds (default 0)})
**       -> claims | nil, code, message
**       Requires: alg HS256, a valid MAC, exp (a number, expired when now >= exp + leeway),
**       iat (a number, not after now + leeway), nbf if present, and aud equal to opts.aud
**       (or an array holding it). secret and opts.aud are required (raise when missing).
**   host.jwt.verify_rs256(token, jwks_json, {iss = s | {s, ...}, aud = s, nonce = s,
**                         leeway = seconds (default 60)}) -> claims | nil, code, message
**       An OpenID Connect ID token: alg RS256, the key picked from the JWKS by the header's
**       kid (a token without kid is accepted only when the set holds exactly one usable RSA
**       key; usable = kty RSA, use absent or "sig", alg absent or "RS256", modulus of at
**       least 2048 bits), then iss in opts.iss, aud (azp too, when present) = opts.aud,
**       exp, iat, nbf as above, a non-empty sub, and nonce = opts.nonce when given.
**       opts.iss and opts.aud are required.
** Codes: "token_invalid" (malformed, wrong alg, bad signature, any claim but exp),
** "token_expired" (the signature was good but exp has passed), "unknown_kid" (no key of
** the set has the token's kid: the caller may refetch the JWKS once and retry) and
** "jwks_invalid" (the key set itself is not a JWKS or holds a key OpenSSL refuses).
** Claims come back as a Lua table: JSON integers as integers, other numbers as floats,
** null as host.json.null, arrays marked with the "shelfsync.array" metatable.
*/
#include "jwt.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <jwt.h>
#include <lauxlib.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "crypto.h"
#include "vm.h"

#define JWT_WORK_MT "shelfsync.jwt_work"
#define JWT_MIN_RSA_BITS 2048
#define JWT_MAX_LEEWAY (24 * 3600)

/*
** Every C resource a binding call holds lives in this userdata, so a Lua error raised
** while results are being built (out of memory, misuse) leaks nothing: __gc releases it.
** On the normal paths work_release() runs before returning.
*/
struct jwt_work {
    jwt_t *jwt;
    json_t *header;
    json_t *claims;
    json_t *jwks;
    char *pem;
    char *encoded;
};

struct jwt_parts {
    const char *seg[3];
    size_t len[3];
};

struct jwt_checks {
    const char *aud;
    const char *nonce;
    size_t nonce_len;
    lua_Integer leeway;
    int iss_index;            /* stack index of the accepted issuers, 0: no issuer check */
    int require_sub;
};

static void work_release(struct jwt_work *w) {
    if (w->jwt) jwt_free(w->jwt);
    if (w->header) json_decref(w->header);
    if (w->claims) json_decref(w->claims);
    if (w->jwks) json_decref(w->jwks);
    free(w->pem);
    free(w->encoded);
    memset(w, 0, sizeof *w);
}

static int work_gc(lua_State *L) {
    work_release(luaL_checkudata(L, 1, JWT_WORK_MT));
    return 0;
}

static struct jwt_work *work_new(lua_State *L) {
    struct jwt_work *w = lua_newuserdatauv(L, sizeof *w, 0);
    memset(w, 0, sizeof *w);
    luaL_setmetatable(L, JWT_WORK_MT);
    return w;
}

/* Releases w and returns nil, code, message to Lua. */
static int fail(lua_State *L, struct jwt_work *w, const char *code, const char *msg) {
    work_release(w);
    lua_pushnil(L);
    lua_pushstring(L, code);
    lua_pushstring(L, msg);
    return 3;
}

static int is_b64url_char(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* Splits a compact JWS into its three segments. Returns 0, or -1 when malformed. */
static int split_token(const char *tok, size_t len, struct jwt_parts *p) {
    int n = 0;
    size_t start = 0;
    if (len == 0 || len > JWT_MAX_TOKEN_LEN) return -1;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || tok[i] == '.') {
            if (n == 3) return -1;
            p->seg[n] = tok + start;
            p->len[n] = i - start;
            n++;
            start = i + 1;
        } else if (!is_b64url_char((unsigned char)tok[i])) {
            return -1;
        }
    }
    if (n != 3 || p->len[0] == 0 || p->len[1] == 0) return -1;
    return 0;
}

/* Decodes a base64url segment holding a JSON object. Returns a new reference or NULL. */
static json_t *segment_json(const char *seg, size_t len) {
    json_error_t jerr;
    json_t *j = NULL;
    unsigned char *buf = malloc(len * 3 / 4 + 1);
    if (buf == NULL) return NULL;
    long n = crypto_b64url_decode(seg, len, buf);
    if (n >= 0) j = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    free(buf);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* Returns NULL when the header is acceptable for alg, else the reason. */
static const char *check_header(json_t *header, const char *alg) {
    const char *a = json_string_value(json_object_get(header, "alg"));
    json_t *typ = json_object_get(header, "typ");
    if (a == NULL || strcmp(a, alg) != 0) return alg[0] == 'H'
        ? "token algorithm must be HS256" : "token algorithm must be RS256";
    if (json_object_get(header, "crit") != NULL) return "token has critical header parameters";
    if (typ != NULL && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0))
        return "token type must be JWT";
    return NULL;
}

static int aud_matches(json_t *aud, const char *want) {
    size_t i;
    json_t *v;
    if (json_is_string(aud)) return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud)) return 0;
    json_array_foreach(aud, i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0) return 1;
    }
    return 0;
}

static int iss_accepted(lua_State *L, int idx, const char *iss) {
    if (lua_type(L, idx) == LUA_TSTRING) return strcmp(lua_tostring(L, idx), iss) == 0;
    lua_Integer n = luaL_len(L, idx);
    for (lua_Integer i = 1; i <= n; i++) {
        int match = lua_rawgeti(L, idx, i) == LUA_TSTRING && strcmp(lua_tostring(L, -1), iss) == 0;
        lua_pop(L, 1);
        if (match) return 1;
    }
    return 0;
}

/*
** Checks the registered claims. Returns NULL when they pass, else the code and, through
** *msg, the reason.
*/
static const char *check_claims(lua_State *L, json_t *claims, const struct jwt_checks *c,
                                const char **msg) {
    double now = (double)time(NULL);
    double leeway = (double)c->leeway;
    json_t *exp = json_object_get(claims, "exp");
    json_t *iat = json_object_get(claims, "iat");
    json_t *nbf = json_object_get(claims, "nbf");
    json_t *azp = json_object_get(claims, "azp");

    if (c->iss_index) {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (iss == NULL || !iss_accepted(L, c->iss_index, iss)) {
            *msg = "token issuer is not accepted";
            return "token_invalid";
        }
    }
    if (!aud_matches(json_object_get(claims, "aud"), c->aud)) {
        *msg = "token audience does not match";
        return "token_invalid";
    }
    if (azp != NULL && (!json_is_string(azp) || strcmp(json_string_value(azp), c->aud) != 0)) {
        *msg = "token authorized party does not match";
        return "token_invalid";
    }
    if (!json_is_number(exp) || !json_is_number(iat)) {
        *msg = "token lacks exp or iat";
        return "token_invalid";
    }
    if (nbf != NULL && (!json_is_number(nbf) || json_number_value(nbf) > now + leeway)) {
        *msg = "token is not valid yet";
        return "token_invalid";
    }
    if (json_number_value(iat) > now + leeway) {
        *msg = "token was issued in the future";
        return "token_invalid";
    }
    if (c->require_sub) {
        const char *sub = json_string_value(json_object_get(claims, "sub"));
        if (sub == NULL || sub[0] == '\0') {
            *msg = "token lacks a subject";
            return "token_invalid";
        }
    }
    if (c->nonce != NULL) {
        json_t *nonce = json_object_get(claims, "nonce");
        if (!json_is_string(nonce) ||
            !crypto_equal(json_string_value(nonce), json_string_length(nonce),
                          c->nonce, c->nonce_len)) {
            *msg = "token nonce does not match";
            return "token_invalid";
        }
    }
    if (now >= json_number_value(exp) + leeway) {
        *msg = "token has expired";
        return "token_expired";
    }
    return NULL;
}

/* Pushes j as a Lua value (see the contract above). */
static void push_json(lua_State *L, json_t *j) {
    luaL_checkstack(L, 4, "token claims nested too deeply");
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *v;
        lua_createtable(L, 0, (int)json_object_size(j));
        json_object_foreach(j, key, v) {
            push_json(L, v);
            lua_setfield(L, -2, key);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        lua_createtable(L, (int)json_array_size(j), 0);
        json_array_foreach(j, i, v) {
            push_json(L, v);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        if (luaL_getmetatable(L, VM_ARRAY_MT) == LUA_TTABLE) lua_setmetatable(L, -2);
        else lua_pop(L, 1);
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(j));
        break;
    case JSON_REAL:
        lua_pushnumber(L, (lua_Number)json_real_value(j));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    case JSON_NULL:
    default:
        lua_pushlightuserdata(L, NULL);
        break;
    }
}

/*
** Reads the options table at idx into c; the strings it points to stay on the stack
** (pushed here), so they outlive any change to the table. Raises on misuse.
*/
static void read_checks(lua_State *L, int idx, struct jwt_checks *c, lua_Integer leeway,
                        int want_iss) {
    memset(c, 0, sizeof *c);
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "aud");
    luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) > 0, idx,
                  "opts.aud must be a non-empty string");
    c->aud = lua_tostring(L, -1);
    if (lua_getfield(L, idx, "leeway") != LUA_TNIL) {
        leeway = luaL_checkinteger(L, -1);
        luaL_argcheck(L, leeway >= 0 && leeway <= JWT_MAX_LEEWAY, idx,
                      "opts.leeway out of range");
    }
    c->leeway = leeway;
    if (lua_getfield(L, idx, "nonce") != LUA_TNIL) {
        luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, idx, "opts.nonce must be a string");
        c->nonce = lua_tolstring(L, -1, &c->nonce_len);
    }
    if (want_iss) {
        int t = lua_getfield(L, idx, "iss");
        luaL_argcheck(L, t == LUA_TSTRING || t == LUA_TTABLE, idx,
                      "opts.iss must be a string or a list of strings");
        c->iss_index = lua_gettop(L);
        c->require_sub = 1;
    }
}

/* ---- HS256 ------------------------------------------------------------------------ */

static int l_jwt_sign_hs256(lua_State *L) {
    size_t keylen;
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *key = luaL_checklstring(L, 2, &keylen);
    luaL_argcheck(L, keylen > 0 && keylen <= INT_MAX, 2, "secret must be a non-empty string");
    lua_settop(L, 2);
    struct jwt_work *w = work_new(L);
    if (jwt_new(&w->jwt) != 0) return luaL_error(L, "jwt_new: out of memory");

    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        int rc, isint;
        size_t vlen;
        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_error(L, "sign_hs256: claim names must be strings");
        const char *name = lua_tostring(L, -2);
        switch (lua_type(L, -1)) {
        case LUA_TSTRING: {
            const char *v = lua_tolstring(L, -1, &vlen);
            if (strlen(v) != vlen)
                return luaL_error(L, "sign_hs256: claim '%s' holds a NUL byte", name);
            rc = jwt_add_grant(w->jwt, name, v);
            break;
        }
        case LUA_TNUMBER: {
            lua_Integer v = lua_tointegerx(L, -1, &isint);
            if (!isint || v < LONG_MIN || v > LONG_MAX)
                return luaL_error(L, "sign_hs256: claim '%s' must be an integer", name);
            rc = jwt_add_grant_int(w->jwt, name, (long)v);
            break;
        }
        case LUA_TBOOLEAN:
            rc = jwt_add_grant_bool(w->jwt, name, lua_toboolean(L, -1));
            break;
        default:
            return luaL_error(L, "sign_hs256: claim '%s' must be a string, integer or boolean",
                              name);
        }
        if (rc != 0) return luaL_error(L, "sign_hs256: cannot add claim '%s'", name);
        lua_pop(L, 1);
    }
    if (jwt_set_alg(w->jwt, JWT_ALG_HS256, (const unsigned char *)key, (int)keylen) != 0)
        return luaL_error(L, "sign_hs256: jwt_set_alg failed");
    w->encoded = jwt_encode_str(w->jwt);
    if (w->encoded == NULL) return luaL_error(L, "sign_hs256: jwt_encode_str failed");
    lua_pushstring(L, w->encoded);
    work_release(w);
    return 1;
}

/* 1 when sig (base64url) is HMAC-SHA256(key, signing input), compared in constant time. */
static int hs256_mac_ok(const char *key, size_t keylen, const char *tok,
                        const struct jwt_parts *p) {
    unsigned char mac[CRYPTO_SHA256_LEN], given[CRYPTO_SHA256_LEN + 3];
    size_t input_len = p->len[0] + 1 + p->len[1];
    if (p->len[2] != CRYPTO_B64URL_ENCODED_LEN(CRYPTO_SHA256_LEN)) return 0;
    if (crypto_b64url_decode(p->seg[2], p->len[2], given) != CRYPTO_SHA256_LEN) return 0;
    crypto_hmac_sha256(key, keylen, tok, input_len, mac);
    return CRYPTO_memcmp(mac, given, CRYPTO_SHA256_LEN) == 0;
}

/*
** The first steps of every verification: split the token, parse its header and require
** exactly `alg` (before libjwt ever sees the token). Returns NULL, or the reason the token
** is invalid; w->header is set on success.
*/
static const char *read_header(struct jwt_work *w, const char *tok, size_t toklen,
                               struct jwt_parts *p, const char *alg) {
    if (split_token(tok, toklen, p) != 0)
        return "token is malformed";
    w->header = segment_json(p->seg[0], p->len[0]);
    if (w->header == NULL)
        return "token header is malformed";
    return check_header(w->header, alg);
}

/*
** The last steps of every verification, once our own checks passed: libjwt verifies the
** signature with the key we chose, its view of the algorithm must be ours, then the
** claims are checked by hand (libjwt 1.10 checks none) and pushed. Releases w.
*/
static int finish(lua_State *L, struct jwt_work *w, const char *tok, const char *key, size_t keylen,
                  jwt_alg_t alg, const struct jwt_parts *p, const struct jwt_checks *c) {
    const char *why = NULL, *code;
    if (jwt_decode(&w->jwt, tok, (const unsigned char *)key, (int)keylen) != 0)
        return fail(L, w, "token_invalid", "token signature is invalid");
    if (jwt_get_alg(w->jwt) != alg)
        return fail(L, w, "token_invalid", alg == JWT_ALG_HS256 ? "token algorithm must be HS256"
                                                               : "token algorithm must be RS256");
    w->claims = segment_json(p->seg[1], p->len[1]);
    if (w->claims == NULL) return fail(L, w, "token_invalid", "token payload is malformed");
    if ((code = check_claims(L, w->claims, c, &why)) != NULL) return fail(L, w, code, why);
    push_json(L, w->claims);
    work_release(w);
    return 1;
}

static int l_jwt_verify_hs256(lua_State *L) {
    size_t toklen, keylen;
    struct jwt_parts p;
    struct jwt_checks c;
    const char *why = NULL;
    const char *tok = luaL_checklstring(L, 1, &toklen);
    const char *key = luaL_checklstring(L, 2, &keylen);
    luaL_argcheck(L, keylen > 0 && keylen <= INT_MAX, 2, "secret must be a non-empty string");
    lua_settop(L, 3);
    read_checks(L, 3, &c, 0, 0);
    struct jwt_work *w = work_new(L);

    if ((why = read_header(w, tok, toklen, &p, "HS256")) != NULL) return fail(L, w, "token_invalid", why);
    if (!hs256_mac_ok(key, keylen, tok, &p))
        return fail(L, w, "token_invalid", "token signature is invalid");
    return finish(L, w, tok, key, keylen, JWT_ALG_HS256, &p, &c);
}

const char *jwt_check_hs256(const char *tok, size_t toklen, const char *key, size_t keylen,
                            const char *aud, const char **msg)
{
    struct jwt_work w = {0};
    struct jwt_parts p;
    struct jwt_checks c = {.aud = aud};
    const char *code = "token_invalid";
    if ((*msg = read_header(&w, tok, toklen, &p, "HS256")) != NULL)
        goto done;
    if (!hs256_mac_ok(key, keylen, tok, &p)) {
        *msg = "token signature is invalid";
        goto done;
    }
    if (!(w.claims = segment_json(p.seg[1], p.len[1]))) {
        *msg = "token payload is malformed";
        goto done;
    }
    code = check_claims(NULL, w.claims, &c, msg); /* no issuer check: L is not used */
done:
    work_release(&w);
    return code;
}

/* ---- RS256 ------------------------------------------------------------------------ */

static int jwk_usable(json_t *k) {
    const char *kty = json_string_value(json_object_get(k, "kty"));
    json_t *use = json_object_get(k, "use"), *alg = json_object_get(k, "alg");
    return kty != NULL && strcmp(kty, "RSA") == 0 &&
           (use == NULL || (json_is_string(use) && strcmp(json_string_value(use), "sig") == 0)) &&
           (alg == NULL || (json_is_string(alg) && strcmp(json_string_value(alg), "RS256") == 0));
}

/*
** Picks the key for kid (NULL: the only usable key). Returns it (borrowed) or NULL with
** the code and reason.
*/
static json_t *jwks_find(json_t *jwks, const char *kid, const char **code, const char **why) {
    json_t *keys = json_object_get(jwks, "keys"), *k, *found = NULL;
    size_t i, usable = 0;
    if (!json_is_array(keys)) {
        *code = "jwks_invalid";
        *why = "key set has no keys array";
        return NULL;
    }
    json_array_foreach(keys, i, k) {
        if (!json_is_object(k)) continue;
        if (kid == NULL) {
            if (jwk_usable(k)) {
                usable++;
                found = k;
            }
        } else {
            const char *id = json_string_value(json_object_get(k, "kid"));
            if (id != NULL && strcmp(id, kid) == 0) {
                if (!jwk_usable(k)) {
                    *code = "token_invalid";
                    *why = "token key is not an RS256 signing key";
                    return NULL;
                }
                return k;
            }
        }
    }
    if (kid == NULL && usable == 1) return found;
    *code = kid == NULL ? "token_invalid" : "unknown_kid";
    *why = kid == NULL ? "token has no kid and the key set is ambiguous"
                       : "token key id is not in the key set";
    return NULL;
}

/* base64url member of a JWK as a new BIGNUM, or NULL. */
static BIGNUM *jwk_bignum(json_t *k, const char *name) {
    const char *s = json_string_value(json_object_get(k, name));
    BIGNUM *bn = NULL;
    if (s == NULL) return NULL;
    size_t len = strlen(s);
    if (len == 0 || len > 2048) return NULL;
    unsigned char *buf = malloc(len * 3 / 4 + 1);
    if (buf == NULL) return NULL;
    long n = crypto_b64url_decode(s, len, buf);
    if (n > 0) bn = BN_bin2bn(buf, (int)n, NULL);
    free(buf);
    return bn;
}

/*
** Turns an RSA JWK (n, e) into a SubjectPublicKeyInfo PEM string (malloc'd, NUL-ended)
** with OpenSSL 3's provider API. Returns 0 with *pem and *bits, or -1 with *why.
*/
static int jwk_to_pem(json_t *k, char **pem, int *bits, const char **why) {
    int rc = -1;
    BIGNUM *n = jwk_bignum(k, "n"), *e = jwk_bignum(k, "e");
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    BIO *bio = NULL;
    char *data;
    long len;

    *why = "key set holds a malformed RSA key";
    if (n == NULL || e == NULL) goto fail;
    if ((bld = OSSL_PARAM_BLD_new()) == NULL) goto fail;
    if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
        goto fail;
    if ((params = OSSL_PARAM_BLD_to_param(bld)) == NULL) goto fail;
    if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL) goto fail;
    if (EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        goto fail;
    *bits = EVP_PKEY_get_bits(pkey);
    if ((bio = BIO_new(BIO_s_mem())) == NULL || PEM_write_bio_PUBKEY(bio, pkey) != 1) goto fail;
    len = BIO_get_mem_data(bio, &data);
    if (len <= 0 || (*pem = malloc((size_t)len + 1)) == NULL) goto fail;
    memcpy(*pem, data, (size_t)len);
    (*pem)[len] = '\0';
    rc = 0;
fail:
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return rc;
}

static int l_jwt_verify_rs256(lua_State *L) {
    size_t toklen, jwkslen;
    struct jwt_parts p;
    struct jwt_checks c;
    json_error_t jerr;
    json_t *key, *kid;
    const char *why = NULL, *code = NULL;
    int bits = 0;
    const char *tok = luaL_checklstring(L, 1, &toklen);
    const char *jwks = luaL_checklstring(L, 2, &jwkslen);
    lua_settop(L, 3);
    read_checks(L, 3, &c, 60, 1);
    struct jwt_work *w = work_new(L);

    if ((why = read_header(w, tok, toklen, &p, "RS256")) != NULL) return fail(L, w, "token_invalid", why);
    kid = json_object_get(w->header, "kid");
    if (kid != NULL && !json_is_string(kid))
        return fail(L, w, "token_invalid", "token key id is not a string");

    w->jwks = json_loadb(jwks, jwkslen, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(w->jwks)) return fail(L, w, "jwks_invalid", "key set is not a JSON object");
    if ((key = jwks_find(w->jwks, json_string_value(kid), &code, &why)) == NULL)
        return fail(L, w, code, why);
    if (jwk_to_pem(key, &w->pem, &bits, &why) != 0) return fail(L, w, "jwks_invalid", why);
    if (bits < JWT_MIN_RSA_BITS)
        return fail(L, w, "token_invalid", "token key is shorter than 2048 bits");

    assert(w->pem != NULL && w->pem[0] != '\0');
    return finish(L, w, tok, w->pem, strlen(w->pem), JWT_ALG_RS256, &p, &c);
}

static const luaL_Reg jwt_funcs[] = {
    {"sign_hs256", l_jwt_sign_hs256},
    {"verify_hs256", l_jwt_verify_hs256},
    {"verify_rs256", l_jwt_verify_rs256},
    {NULL, NULL}
};

int jwt_luaopen(lua_State *L) {
    luaL_newmetatable(L, JWT_WORK_MT);
    lua_pushcfunction(L, work_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newlib(L, jwt_funcs);
    return 1;
}
