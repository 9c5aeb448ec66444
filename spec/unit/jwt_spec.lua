-- host.jwt (core/jwt.c), in-process through build/host.so. RS256 tokens are signed here
-- with the openssl command line tool, independently of the code under test.
local h = require("spec.support.helpers")
local jwt = h.host.jwt
local crypto = h.host.crypto
local cjson = h.host.json

local b64 = crypto.b64url_encode
local SECRET = "0123456789abcdef0123456789abcdef"
local AUD = "shelfsync-sync"

local function now() return os.time() end

-- A compact token from a header and claims, signed by sign(input) (or unsigned).
local function compact(header, claims, sign)
  local input = b64(type(header) == "string" and header or cjson.encode(header)) .. "." ..
    b64(type(claims) == "string" and claims or cjson.encode(claims))
  return input .. "." .. (sign and b64(sign(input)) or "")
end

local function hs256(key)
  return function(input) return crypto.hmac_sha256(key, input) end
end

local function sync_claims(over)
  local c = { sub = "user-1", jti = crypto.uuid(), aud = AUD, iat = now(), exp = now() + 900 }
  for k, v in pairs(over or {}) do c[k] = v end
  return c
end

describe("host.jwt HS256", function()
  it("signs claims that verify back with their types", function()
    local token = jwt.sign_hs256(sync_claims{ admin = false, n = 7 }, SECRET)
    local claims = assert(jwt.verify_hs256(token, SECRET, { aud = AUD }))
    assert.equal("user-1", claims.sub)
    assert.equal(AUD, claims.aud)
    assert.equal("integer", math.type(claims.exp))
    assert.equal(7, claims.n)
    assert.is_false(claims.admin)
    local header = cjson.decode(crypto.b64url_decode(token:match("^([^.]+)")))
    assert.equal("HS256", header.alg)
  end)

  it("refuses a token signed with another secret", function()
    local token = jwt.sign_hs256(sync_claims(), "another secret entirely")
    assert.same({ nil, "token_invalid", "token signature is invalid" },
      { jwt.verify_hs256(token, SECRET, { aud = AUD }) })
  end)

  it("refuses a token whose payload was changed after signing", function()
    local token = jwt.sign_hs256(sync_claims(), SECRET)
    local head, _, sig = token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
    local forged = head .. "." .. b64(cjson.encode(sync_claims{ sub = "user-2" })) .. "." .. sig
    assert.same({ nil, "token_invalid", "token signature is invalid" },
      { jwt.verify_hs256(forged, SECRET, { aud = AUD }) })
  end)

  it("refuses alg none, even with the claims intact", function()
    for _, alg in ipairs{ "none", "None", "NONE" } do
      local token = compact({ alg = alg, typ = "JWT" }, sync_claims())
      local v, code = jwt.verify_hs256(token, SECRET, { aud = AUD })
      assert.is_nil(v)
      assert.equal("token_invalid", code)
    end
  end)

  it("refuses any algorithm but HS256, even with a correct HMAC", function()
    for _, alg in ipairs{ "HS384", "HS512", "RS256", "hs256" } do
      local token = compact({ alg = alg, typ = "JWT" }, sync_claims(), hs256(SECRET))
      assert.same({ nil, "token_invalid", "token algorithm must be HS256" },
        { jwt.verify_hs256(token, SECRET, { aud = AUD }) })
    end
  end)

  it("accepts a token made elsewhere with the same secret", function()
    local token = compact({ alg = "HS256", typ = "JWT" }, sync_claims(), hs256(SECRET))
    assert.equal("user-1", assert(jwt.verify_hs256(token, SECRET, { aud = AUD })).sub)
  end)

  it("refuses a header with a duplicate alg or a crit parameter", function()
    local dup = compact('{"alg":"HS256","alg":"none"}', sync_claims(), hs256(SECRET))
    assert.same({ nil, "token_invalid", "token header is malformed" },
      { jwt.verify_hs256(dup, SECRET, { aud = AUD }) })
    local crit = compact({ alg = "HS256", crit = { "exp" }, exp = 1 }, sync_claims(), hs256(SECRET))
    assert.same({ nil, "token_invalid", "token has critical header parameters" },
      { jwt.verify_hs256(crit, SECRET, { aud = AUD }) })
  end)

  it("refuses malformed tokens", function()
    local good = jwt.sign_hs256(sync_claims(), SECRET)
    for _, bad in ipairs{ "", "abc", "a.b", good .. ".x", good .. "=", good:gsub("%.", "..", 1),
                          "e30.e30.", "!!!.e30.e30", string.rep("a", 20000) .. good } do
      local v, code = jwt.verify_hs256(bad, SECRET, { aud = AUD })
      assert.is_nil(v, bad)
      assert.equal("token_invalid", code)
    end
  end)

  it("tells an expired token apart, honouring the leeway", function()
    local token = jwt.sign_hs256(sync_claims{ iat = now() - 100, exp = now() - 10 }, SECRET)
    assert.same({ nil, "token_expired", "token has expired" },
      { jwt.verify_hs256(token, SECRET, { aud = AUD }) })
    assert.truthy(jwt.verify_hs256(token, SECRET, { aud = AUD, leeway = 30 }))
  end)

  it("refuses a token issued in the future or not valid yet", function()
    local future = jwt.sign_hs256(sync_claims{ iat = now() + 600, exp = now() + 1200 }, SECRET)
    assert.same({ nil, "token_invalid", "token was issued in the future" },
      { jwt.verify_hs256(future, SECRET, { aud = AUD }) })
    local nbf = jwt.sign_hs256(sync_claims{ nbf = now() + 600 }, SECRET)
    assert.same({ nil, "token_invalid", "token is not valid yet" },
      { jwt.verify_hs256(nbf, SECRET, { aud = AUD }) })
  end)

  it("refuses a token without exp or iat", function()
    local c = sync_claims()
    c.exp = nil
    assert.same({ nil, "token_invalid", "token lacks exp or iat" },
      { jwt.verify_hs256(jwt.sign_hs256(c, SECRET), SECRET, { aud = AUD }) })
  end)

  it("checks the audience", function()
    local other = jwt.sign_hs256(sync_claims{ aud = "someone-else" }, SECRET)
    assert.same({ nil, "token_invalid", "token audience does not match" },
      { jwt.verify_hs256(other, SECRET, { aud = AUD }) })
    local list = compact({ alg = "HS256" }, sync_claims{ aud = { "x", AUD } }, hs256(SECRET))
    assert.truthy(jwt.verify_hs256(list, SECRET, { aud = AUD }))
  end)

  it("raises on misuse: empty secret, missing aud, unsupported claim values", function()
    local token = jwt.sign_hs256(sync_claims(), SECRET)
    assert.has_error(function() jwt.verify_hs256(token, "", { aud = AUD }) end)
    assert.has_error(function() jwt.verify_hs256(token, SECRET, {}) end)
    assert.has_error(function() jwt.verify_hs256(token, SECRET) end)
    assert.has_error(function() jwt.sign_hs256(sync_claims(), "") end)
    assert.has_error(function() jwt.sign_hs256({ roles = { "a" } }, SECRET) end)
    assert.has_error(function() jwt.sign_hs256({ ratio = 0.5 }, SECRET) end)
  end)
end)

-- ---- RS256: keys and signatures made with the openssl tool ----

local dir = h.test_dir .. "/jwt_spec_" .. crypto.hex(crypto.random(4))

local function sh(cmd)
  local code, out = h.run(cmd)
  assert(code == 0, cmd .. ": " .. out)
  return out
end

local function unhex(s)
  return (s:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

local function new_key(name, bits)
  local path = dir .. "/" .. name .. ".pem"
  sh(string.format("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:%d -out %s", bits or 2048, path))
  local modulus = sh("openssl rsa -in " .. path .. " -noout -modulus"):match("Modulus=(%x+)")
  local pem = sh("openssl pkey -in " .. path .. " -pubout")
  return { path = path, n = b64(unhex(modulus)), e = "AQAB", pem = pem }
end

local function rs256(key)
  return function(input)
    local inp = dir .. "/input"
    h.write_file(inp, input)
    sh(string.format("openssl dgst -sha256 -sign %s -out %s.sig %s", key.path, inp, inp))
    return h.read_file(inp .. ".sig")
  end
end

local function jwk(key, kid, extra)
  local k = { kty = "RSA", kid = kid, n = key.n, e = key.e, alg = "RS256", use = "sig" }
  for name, v in pairs(extra or {}) do k[name] = v end
  return k
end

local function jwks(...)
  return cjson.encode({ keys = { ... } })
end

local ISS = "https://accounts.google.com"
local CLIENT = "client-123.apps.googleusercontent.com"

local function id_claims(over)
  local c = {
    iss = ISS, aud = CLIENT, azp = CLIENT, sub = "10769150350006150715113082367",
    email = "jsmith@example.com", email_verified = true, name = "J Smith",
    nonce = "n-0S6_WzA2Mj", iat = now(), exp = now() + 3600,
  }
  for k, v in pairs(over or {}) do c[k] = v end
  return c
end

local function opts(over)
  local o = { iss = { ISS, "accounts.google.com" }, aud = CLIENT, nonce = "n-0S6_WzA2Mj" }
  for k, v in pairs(over or {}) do o[k] = v end
  return o
end

describe("host.jwt RS256 ID tokens", function()
  local key, other, set

  setup(function()
    sh("mkdir -p " .. dir)
    key = new_key("a")
    other = new_key("b")
    set = jwks(jwk(key, "key-a"), jwk(other, "key-b", { use = "sig" }))
  end)

  teardown(function()
    sh("rm -rf '" .. dir .. "'")
  end)

  local function token(claims, kid, signer, header)
    local hd = header or { alg = "RS256", typ = "JWT", kid = kid or "key-a" }
    return compact(hd, claims or id_claims(), signer or rs256(key))
  end

  it("verifies a token signed by the key its kid names and returns its claims", function()
    local claims = assert(jwt.verify_rs256(token(), set, opts()))
    assert.equal("10769150350006150715113082367", claims.sub)
    assert.equal("jsmith@example.com", claims.email)
    assert.is_true(claims.email_verified)
    local by_b = assert(jwt.verify_rs256(token(nil, "key-b", rs256(other)), set, opts()))
    assert.equal("J Smith", by_b.name)
  end)

  it("accepts every issuer in the list, and only those", function()
    assert.truthy(jwt.verify_rs256(token(id_claims{ iss = "accounts.google.com" }), set, opts()))
    assert.same({ nil, "token_invalid", "token issuer is not accepted" },
      { jwt.verify_rs256(token(id_claims{ iss = "https://evil.example" }), set, opts()) })
    assert.same({ nil, "token_invalid", "token issuer is not accepted" },
      { jwt.verify_rs256(token(), set, opts{ iss = "https://other.example" }) })
  end)

  it("refuses a signature by a key that is not the one its kid names", function()
    assert.same({ nil, "token_invalid", "token signature is invalid" },
      { jwt.verify_rs256(token(nil, "key-a", rs256(other)), set, opts()) })
  end)

  it("reports a kid missing from the key set as unknown_kid", function()
    assert.same({ nil, "unknown_kid", "token key id is not in the key set" },
      { jwt.verify_rs256(token(nil, "key-c"), set, opts()) })
  end)

  it("takes a token without kid only when the set has one usable key", function()
    local hd = { alg = "RS256", typ = "JWT" }
    assert.truthy(jwt.verify_rs256(token(nil, nil, nil, hd), jwks(jwk(key, "only")), opts()))
    assert.same({ nil, "token_invalid", "token has no kid and the key set is ambiguous" },
      { jwt.verify_rs256(token(nil, nil, nil, hd), set, opts()) })
  end)

  it("refuses alg none and HS256 keyed with the public key's PEM", function()
    local none = compact({ alg = "none", kid = "key-a" }, id_claims())
    assert.same({ nil, "token_invalid", "token algorithm must be RS256" },
      { jwt.verify_rs256(none, set, opts()) })
    -- The key confusion attack: libjwt 1.10 alone would check this HMAC with the PEM we
    -- hand it and accept the token.
    local confused = compact({ alg = "HS256", typ = "JWT", kid = "key-a" }, id_claims(), hs256(key.pem))
    assert.same({ nil, "token_invalid", "token algorithm must be RS256" },
      { jwt.verify_rs256(confused, set, opts()) })
  end)

  it("refuses RS384 and PS256 headers even with a valid RS256 signature", function()
    for _, alg in ipairs{ "RS384", "PS256", "rs256" } do
      local t = compact({ alg = alg, kid = "key-a" }, id_claims(), rs256(key))
      assert.same({ nil, "token_invalid", "token algorithm must be RS256" },
        { jwt.verify_rs256(t, set, opts()) })
    end
  end)

  it("checks audience, authorized party and nonce", function()
    assert.same({ nil, "token_invalid", "token audience does not match" },
      { jwt.verify_rs256(token(id_claims{ aud = "other-client" }), set, opts()) })
    assert.same({ nil, "token_invalid", "token authorized party does not match" },
      { jwt.verify_rs256(token(id_claims{ azp = "other-client" }), set, opts()) })
    assert.same({ nil, "token_invalid", "token nonce does not match" },
      { jwt.verify_rs256(token(), set, opts{ nonce = "another nonce" }) })
    local no_nonce = id_claims()
    no_nonce.nonce = nil
    assert.same({ nil, "token_invalid", "token nonce does not match" },
      { jwt.verify_rs256(token(no_nonce), set, opts()) })
  end)

  it("tells an expired token apart and refuses one issued in the future", function()
    assert.same({ nil, "token_expired", "token has expired" },
      { jwt.verify_rs256(token(id_claims{ iat = now() - 7200, exp = now() - 3600 }), set, opts()) })
    -- the default leeway is 60 s
    assert.truthy(jwt.verify_rs256(token(id_claims{ iat = now() - 7200, exp = now() - 30 }), set, opts()))
    assert.same({ nil, "token_invalid", "token was issued in the future" },
      { jwt.verify_rs256(token(id_claims{ iat = now() + 600 }), set, opts()) })
  end)

  it("refuses a token without a subject", function()
    assert.same({ nil, "token_invalid", "token lacks a subject" },
      { jwt.verify_rs256(token(id_claims{ sub = "" }), set, opts()) })
  end)

  it("refuses keys that are not RS256 signing keys of at least 2048 bits", function()
    local enc = jwks(jwk(key, "key-a", { use = "enc" }))
    assert.same({ nil, "token_invalid", "token key is not an RS256 signing key" },
      { jwt.verify_rs256(token(), enc, opts()) })
    local small = new_key("small", 1024)
    assert.same({ nil, "token_invalid", "token key is shorter than 2048 bits" },
      { jwt.verify_rs256(token(nil, "s", rs256(small)), jwks(jwk(small, "s")), opts()) })
  end)

  it("reports a key set that is not a JWKS as jwks_invalid", function()
    for _, bad in ipairs{ "not json", "[]", '{"keys":{}}',
                          jwks({ kty = "RSA", kid = "key-a", n = "!!", e = "AQAB" }) } do
      local v, code = jwt.verify_rs256(token(), bad, opts())
      assert.is_nil(v)
      assert.equal("jwks_invalid", code, bad)
    end
  end)

  it("returns JSON null and arrays the way host.json does", function()
    local claims = assert(jwt.verify_rs256(token(id_claims{ groups = { "a", "b" }, hd = cjson.null }), set, opts()))
    assert.same({ "a", "b" }, { claims.groups[1], claims.groups[2] })
    assert.equal(cjson.null, claims.hd)
  end)

  it("raises when the issuer or audience to check is missing", function()
    assert.has_error(function() jwt.verify_rs256(token(), set, { aud = CLIENT }) end)
    assert.has_error(function() jwt.verify_rs256(token(), set, { iss = ISS }) end)
  end)
end)
