-- oidc: the OpenID Connect authorization code flow with PKCE against Google (or any
-- provider with a discovery document), as routes/auth.lua drives it.
--
--   oidc.configured()            -> true when a client id and secret are set
--   oidc.discovery()             -> the provider's discovery document (cached per worker)
--   oidc.start(return_to)        -> location, flow_cookie: the authorization URL and the
--                                   Set-Cookie value binding state, nonce and verifier to
--                                   this browser
--   oidc.read_flow(req)          -> flow | nil (cookie missing, forged or expired)
--   oidc.finish(code, flow)      -> claims of the verified ID token (raises HTTP errors)
--   oidc.clear_flow_cookie()     -> Set-Cookie value removing the flow cookie
--   oidc.safe_return_to(path)    -> true when path is a relative path on this site
--
-- The flow state lives in a short-lived cookie (HttpOnly, SameSite=Lax, scoped to the
-- callback path, 10 minutes) signed with HMAC-SHA256 under a key derived from the server
-- secret: nothing is written to the database before the provider has vouched for the
-- browser, so anonymous hits on the login URL cost no row and no cleanup, and any
-- instance behind a load balancer can finish a flow another one started.
--
-- The ID token is verified in C (host.jwt.verify_rs256): RS256 only, against the JWKS
-- (cached per worker state, refetched once when a token names an unknown kid), iss, aud,
-- exp, iat and nonce. Accepted issuers: the discovery document's issuer, plus the other
-- names config.oidc_issuers lists when the discovery issuer is one of them (Google signs
-- with both "https://accounts.google.com" and "accounts.google.com").
local _M = {}

local json = require("json")
local errors = require("errors")

local http, crypto, jwt = host.http, host.crypto, host.jwt
local config = host.config
local type, ipairs, tostring = type, ipairs, tostring
local format, byte, gsub, find, match, sub = string.format, string.byte, string.gsub, string.find, string.match, string.sub
local concat = table.concat

_M.FLOW_COOKIE = "shelfsync_oidc"
_M.CALLBACK_PATH = "/auth/google/callback"
_M.SCOPE = "openid email profile"

local FLOW_TTL_S = 600
local DISCOVERY_TTL_S = 3600
local JWKS_TTL_S = 3600
local MAX_RESPONSE_BYTES = 1024 * 1024
local RETURN_TO_MAX = 2048

-- Per worker state: rebuilt with the state on a reload, which is fine.
local cache = {}

local function now_s()
  return host.now_ms() // 1000
end

local function provider_error(message)
  errors.raise(502, "provider_unavailable", message)
end

-- RFC 3986 unreserved characters stay; everything else is percent-encoded.
local function encode(s)
  return (gsub(s, "[^%w%-%._~]", function(c) return format("%%%02X", byte(c)) end))
end

local function form(pairs_list)
  local out = {}
  for i = 1, #pairs_list, 2 do
    out[#out + 1] = encode(pairs_list[i]) .. "=" .. encode(pairs_list[i + 1])
  end
  return concat(out, "&")
end

-- Only https endpoints, except on loopback (the specs' local provider): the client
-- secret and the ID token must never cross a network in clear.
local function endpoint_ok(url)
  if type(url) ~= "string" then return false end
  if find(url, "^https://[^/]") then return true end
  return find(url, "^http://127%.0%.0%.1[:/]") or find(url, "^http://localhost[:/]") or
    find(url, "^http://%[::1%][:/]") or false
end

local function timeouts(t)
  t.timeout_ms = config.http_timeout_ms
  t.connect_timeout_ms = config.http_connect_timeout_ms
  t.max_bytes = MAX_RESPONSE_BYTES
  return t
end

local function get_json(url, what)
  local res, err = http.request(timeouts{ url = url, headers = { Accept = "application/json" } })
  if not res then provider_error("cannot fetch the provider's " .. what .. ": " .. err) end
  if res.status ~= 200 then
    provider_error("the provider's " .. what .. " answered HTTP " .. res.status)
  end
  return res.body, json.decode(res.body)
end

function _M.configured()
  local id, secret = config.google_client_id, config.google_client_secret
  return type(id) == "string" and id ~= "" and type(secret) == "string" and secret ~= ""
end

function _M.redirect_uri()
  return (gsub(config.public_url, "/+$", "")) .. _M.CALLBACK_PATH
end

function _M.discovery()
  local url = config.oidc_discovery_url
  local c = cache.discovery
  if c and c.url == url and now_s() - c.at < DISCOVERY_TTL_S then return c.doc end
  if not endpoint_ok(url) then provider_error("oidc_discovery_url must be an https URL") end
  local _, doc = get_json(url, "discovery document")
  if type(doc) ~= "table" or type(doc.issuer) ~= "string" then
    provider_error("the provider's discovery document is not valid")
  end
  -- OpenID Connect Discovery 1.0, section 4.3: the issuer is the discovery URL's prefix.
  if (gsub(doc.issuer, "/$", "")) .. "/.well-known/openid-configuration" ~= url then
    provider_error("the discovery document's issuer does not match its URL")
  end
  for _, k in ipairs{ "authorization_endpoint", "token_endpoint", "jwks_uri" } do
    if not endpoint_ok(doc[k]) then provider_error("the discovery document's " .. k .. " is not an https URL") end
  end
  cache.discovery = { url = url, at = now_s(), doc = doc }
  return doc
end

-- The JWKS text, from cache unless force or stale.
local function jwks(doc, force)
  local c = cache.jwks
  if not force and c and c.uri == doc.jwks_uri and now_s() - c.at < JWKS_TTL_S then return c.body end
  local body, decoded = get_json(doc.jwks_uri, "key set")
  if type(decoded) ~= "table" or type(decoded.keys) ~= "table" then
    provider_error("the provider's key set is not a JWKS")
  end
  cache.jwks = { uri = doc.jwks_uri, at = now_s(), body = body }
  return body
end

function _M.accepted_issuers(doc)
  local list = { doc.issuer }
  local aliases = config.oidc_issuers
  if type(aliases) == "string" then aliases = { aliases } end
  if type(aliases) ~= "table" then return list end
  local member = false
  for _, a in ipairs(aliases) do
    if a == doc.issuer then member = true end
  end
  if member then
    for _, a in ipairs(aliases) do
      if a ~= doc.issuer then list[#list + 1] = a end
    end
  end
  return list
end

function _M.safe_return_to(path)
  if type(path) ~= "string" or #path == 0 or #path > RETURN_TO_MAX then return false end
  if sub(path, 1, 1) ~= "/" then return false end
  -- "//host" and "/\host" are other sites to a browser; so is anything a browser would
  -- first strip or rewrite (controls, whitespace, backslashes) and non-ASCII bytes.
  local second = sub(path, 2, 2)
  if second == "/" or second == "\\" then return false end
  if find(path, "[^\33-\126]") or find(path, "\\", 1, true) then return false end
  return true
end

-- ---- the signed flow cookie ----

local function flow_key()
  local secret = config.secret
  if type(secret) ~= "string" or secret == "" then
    error("config.secret is not set: cannot sign the sign-in flow cookie", 0)
  end
  return crypto.hmac_sha256(secret, "shelfsync oidc flow cookie v1")
end

local function flow_mac(payload)
  return crypto.b64url_encode(crypto.hmac_sha256(flow_key(), _M.FLOW_COOKIE .. "=" .. payload))
end

local function flow_cookie_attrs(value, max_age)
  local parts = { _M.FLOW_COOKIE .. "=" .. value, "Path=" .. _M.CALLBACK_PATH, "Max-Age=" .. max_age,
    "HttpOnly", "SameSite=Lax" }
  if config.public_url:lower():sub(1, 8) == "https://" then parts[#parts + 1] = "Secure" end
  return concat(parts, "; ")
end

function _M.clear_flow_cookie()
  return flow_cookie_attrs("", 0)
end

function _M.read_flow(req)
  local raw = req.cookies and req.cookies[_M.FLOW_COOKIE]
  if type(raw) ~= "string" or #raw > 4096 then return nil end
  local payload, mac = match(raw, "^([%w_-]+)%.([%w_-]+)$")
  if not payload or not crypto.equal(mac, flow_mac(payload)) then return nil end
  local text = crypto.b64url_decode(payload)
  local flow = text and json.decode(text)
  if type(flow) ~= "table" or type(flow.e) ~= "number" or flow.e <= now_s() then return nil end
  for _, k in ipairs{ "s", "n", "v", "r" } do
    if type(flow[k]) ~= "string" then return nil end
  end
  if not _M.safe_return_to(flow.r) then return nil end
  return { state = flow.s, nonce = flow.n, verifier = flow.v, return_to = flow.r }
end

-- ---- the flow ----

local function random_token()
  return crypto.b64url_encode(crypto.random(32))
end

function _M.start(return_to)
  local doc = _M.discovery()
  local flow = { s = random_token(), n = random_token(), v = random_token(), r = return_to,
    e = now_s() + FLOW_TTL_S }
  local payload = crypto.b64url_encode(json.encode(flow))
  local cookie = flow_cookie_attrs(payload .. "." .. flow_mac(payload), FLOW_TTL_S)
  local challenge = crypto.b64url_encode(crypto.sha256(flow.v))
  local query = form{
    "response_type", "code",
    "client_id", config.google_client_id,
    "redirect_uri", _M.redirect_uri(),
    "scope", _M.SCOPE,
    "state", flow.s,
    "nonce", flow.n,
    "code_challenge", challenge,
    "code_challenge_method", "S256",
  }
  local sep = find(doc.authorization_endpoint, "?", 1, true) and "&" or "?"
  return doc.authorization_endpoint .. sep .. query, cookie
end

-- Redeems the code at the token endpoint; returns the ID token (a string).
local function exchange(doc, code, flow)
  local res, err = http.request(timeouts{
    method = "POST",
    url = doc.token_endpoint,
    headers = { ["Content-Type"] = "application/x-www-form-urlencoded", Accept = "application/json" },
    body = form{
      "grant_type", "authorization_code",
      "code", code,
      "redirect_uri", _M.redirect_uri(),
      "client_id", config.google_client_id,
      "client_secret", config.google_client_secret,
      "code_verifier", flow.verifier,
    },
  })
  if not res then provider_error("cannot reach the provider's token endpoint: " .. err) end
  local body = json.decode(res.body)
  if res.status == 200 and type(body) == "table" and type(body.id_token) == "string" then
    return body.id_token
  end
  if res.status >= 400 and res.status < 500 then
    local reason = type(body) == "table" and type(body.error) == "string" and body.error or ("HTTP " .. res.status)
    errors.raise(401, "sign_in_failed", "the provider refused the authorization code (" .. reason .. ")")
  end
  provider_error("the provider's token endpoint answered HTTP " .. res.status .. " without an ID token")
end

local function verify(doc, id_token, nonce)
  local opts = { iss = _M.accepted_issuers(doc), aud = config.google_client_id, nonce = nonce }
  local claims, code, message = jwt.verify_rs256(id_token, jwks(doc, false), opts)
  if not claims and code == "unknown_kid" then
    claims, code, message = jwt.verify_rs256(id_token, jwks(doc, true), opts)
  end
  if claims then return claims end
  if code == "jwks_invalid" then provider_error("the provider's key set is unusable: " .. message) end
  errors.raise(401, "id_token_invalid", "the provider's ID token was refused: " .. tostring(message))
end

function _M.finish(code, flow)
  local doc = _M.discovery()
  local id_token = exchange(doc, code, flow)
  return verify(doc, id_token, flow.nonce)
end

-- For specs: forget the cached discovery document and key set.
function _M.reset_cache()
  cache = {}
end

return _M
