/*
** fuzz_jwt: token verification (host.jwt.verify_hs256 and verify_rs256 against a fixed
** JWKS). Every input must come back as claims or nil + one of the documented codes; a
** forged input must never verify.
*/
#include <stdint.h>

#include "fuzz_lua.h"

static const char *INIT =
    "local jwt = host.jwt\n"
    "local SECRET = string.rep('k', 40)\n"
    /* a real 2048-bit RSA public key, so the signature check itself is reached */
    "local JWKS = '{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"k1\",\"e\":\"AQAB\",\"n\":\""
    "rpTNNsv0hzwyOMv_BPd4GbWg4-hqAXoJMw-kcnAyplgz4dT_XABN93BhSSmdiVzDFq9fixmVivq_T3NV"
    "utdQ-G2OYz5EVg65xxBNHlQnpiahVcNMMcPioGfhFdL47m_VQtu5Kp0aoT_A91Sdm85bH6-JLtO-xmyl"
    "ppJUwq05sI5CDWymsGfJQQJL9dyG9t6_7hqABMAb1h9wQJ2NbamQnu4-updGN5J5Ys_KOCZZgJ6lyqJQ"
    "Ob26_LGI1PyCmapiUURh8iHr4Rsfmu_41KNXBPVAdFKwiNXlTadwJ3HyHFMrwzeJiKnlCW2Dw0Oe5nEk"
    "LtG3wA1QXZyVTiHLeVPdhQ"
    "\"}]}'\n"
    "local CODES = {token_invalid = true, token_expired = true, unknown_kid = true, jwks_invalid = true}\n"
    "local function judge(claims, code)\n"
    "  if claims ~= nil then error('a token no one signed verified', 0) end\n"
    "  if not CODES[code] then error('undocumented code ' .. tostring(code), 0) end\n"
    "end\n"
    "function fuzz(token)\n"
    "  judge(jwt.verify_hs256(token, SECRET, {aud = 'shelfsync-sync'}))\n"
    "  judge(jwt.verify_rs256(token, JWKS, {iss = 'https://issuer.example', aud = 'client'}))\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_call(INIT, data, size);
    return 0;
}
