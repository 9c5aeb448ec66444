-- Sign in with Google, end to end: the real binary, real PostgreSQL, and a real OpenID
-- provider on loopback (spec/support/oidc/provider.js: oauth2-mock-server made strict like
-- Google). A cookie-jar client walks the browser's path:
--   GET /auth/google/login -> provider /authorize -> GET /auth/google/callback -> /api/me
local h = require("spec.support.helpers")
local provider_mod = require("spec.support.oidc.provider")

local crypto = h.host.crypto

local CLIENT_ID = "shelfsync-test.apps.googleusercontent.com"
local CLIENT_SECRET = "GOCSPX-test-secret"
local DEFAULT_SUB = "109876543210987654321"

local function enc(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

local function query_of(url)
  local q = {}
  for k, v in (url:match("%?(.*)$") or ""):gmatch("([^&=]+)=([^&]*)") do
    q[k] = v:gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end)
  end
  return q
end

local cookie, error_of, rows = h.cookie, h.error_of, h.rows

describe("Sign in with Google", function()
  local provider, srv

  setup(function()
    h.reset_db()
    provider = provider_mod.start()
    -- One worker, so the JWKS cache the specs observe is the only one.
    srv = h.start_server{ env = {
      SHELFSYNC_WORKERS = "1",
      SHELFSYNC_GOOGLE_CLIENT_ID = CLIENT_ID,
      SHELFSYNC_GOOGLE_CLIENT_SECRET = CLIENT_SECRET,
      SHELFSYNC_OIDC_DISCOVERY_URL = provider.discovery_url,
    } }
    provider:register(CLIENT_ID, CLIENT_SECRET, { srv.url .. "/auth/google/callback" })
  end)

  teardown(function()
    if srv then srv:stop() end
    if provider then provider:stop() end
  end)

  before_each(function()
    h.reset_db()
  end)

  -- Starts the flow in client c; returns the login answer and the provider's answer.
  local function authorize(c, return_to, profile)
    if profile then provider:next(profile) end
    local login = c:get("/auth/google/login?returnTo=" .. enc(return_to or "/library"))
    assert.equal(302, login.status, login.body)
    local authz = assert(h.request("GET", login.headers.location))
    assert.equal(302, authz.status, authz.body)
    return login, authz
  end

  -- The whole browser flow; returns the callback's answer.
  local function sign_in(c, return_to, profile)
    local _, authz = authorize(c, return_to, profile)
    return c:get(authz.headers.location)
  end

  it("walks the whole flow: login, provider, callback, /api/me", function()
    local c = h.client(srv)
    local login, authz = authorize(c, "/library?source=WISHLIST")

    local q = query_of(login.headers.location)
    assert.equal(provider.url .. "/authorize", login.headers.location:match("^[^?]+"))
    assert.same({
      response_type = "code", client_id = CLIENT_ID, redirect_uri = srv.url .. "/auth/google/callback",
      scope = "openid email profile", code_challenge_method = "S256",
    }, { response_type = q.response_type, client_id = q.client_id, redirect_uri = q.redirect_uri,
         scope = q.scope, code_challenge_method = q.code_challenge_method })
    assert.equal(43, #q.state)
    assert.equal(43, #q.nonce)
    assert.equal(43, #q.code_challenge)
    local flow = cookie(login, "shelfsync_oidc")
    assert.truthy(flow:find("HttpOnly", 1, true))
    assert.truthy(flow:find("SameSite=Lax", 1, true))
    assert.truthy(flow:find("Path=/auth/google/callback", 1, true))

    local cb = c:get(authz.headers.location)
    assert.equal(302, cb.status, cb.body)
    assert.equal("/library?source=WISHLIST", cb.headers.location)
    local sess = cookie(cb, "shelfsync_session")
    assert.truthy(sess:match("^shelfsync_session=[A-Za-z0-9_-]+;"), sess)
    for _, attr in ipairs{ "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=2592000" } do
      assert.truthy(sess:find(attr, 1, true), attr)
    end
    assert.falsy(sess:find("Secure", 1, true))     -- the public URL is http here
    assert.truthy(cookie(cb, "shelfsync_oidc"):find("Max-Age=0", 1, true))

    local me = c:get("/api/me")
    assert.equal(200, me.status, me.body)
    assert.equal("listener@example.com", me.json.user.email)
    assert.equal("Test Listener", me.json.user.name)
    assert.equal("https://lh3.googleusercontent.com/a/test-listener", me.json.user.image)
    assert.truthy(me.json.user.createdAt:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"))
    assert.same({ library = 0, wishlist = 0, manual = 0 }, me.json.counts)

    -- The token request carried the client secret and the PKCE verifier.
    local last = provider:state().token_requests
    local form = query_of("?" .. last[#last].body)
    assert.is_true(last[#last].ok)
    assert.equal(CLIENT_SECRET, form.client_secret)
    assert.equal(q.code_challenge, crypto.b64url_encode(crypto.sha256(form.code_verifier)))

    local user = rows("SELECT id, google_id, email FROM users")[1]
    assert.same({ id = me.json.user.id, google_id = DEFAULT_SUB, email = "listener@example.com" }, user)
    local accounts = rows([[
      SELECT user_id, type, provider, provider_account_id,
             access_token IS NULL AND refresh_token IS NULL AND id_token IS NULL AS no_tokens
      FROM accounts]])
    assert.same({ { user_id = user.id, type = "oauth", provider = "google",
                    provider_account_id = DEFAULT_SUB, no_tokens = true } }, accounts)
  end)

  it("signs the same Google account into the same user and refreshes its profile", function()
    local first = h.client(srv)
    assert.equal(302, sign_in(first).status)
    local id = first:get("/api/me").json.user.id
    local again = h.client(srv)
    local res = sign_in(again, "/", { claims = { name = "Renamed Listener", email = "new@example.com",
      picture = "https://lh3.googleusercontent.com/a/new" } })
    assert.equal(302, res.status, res.body)
    local me = again:get("/api/me").json.user
    assert.same({ id = id, email = "new@example.com", name = "Renamed Listener",
                  image = "https://lh3.googleusercontent.com/a/new" },
                { id = me.id, email = me.email, name = me.name, image = me.image })
    local n = rows("SELECT count(*)::int AS users, (SELECT count(*)::int FROM accounts) AS accounts FROM users")[1]
    assert.same({ users = 1, accounts = 1 }, n)
  end)

  it("links a Google sign-in to the existing account with that email", function()
    local dev = h.login(srv, "Listener@Example.com", "Dev Name")
    assert.equal(302, sign_in(h.client(srv)).status)
    local row = rows("SELECT id, google_id FROM users")
    assert.same({ { id = dev.user.id, google_id = DEFAULT_SUB } }, row)
  end)

  it("refuses a callback whose state differs from the one bound to the browser", function()
    local c = h.client(srv)
    local _, authz = authorize(c)
    local forged = authz.headers.location:gsub("state=[^&]+", "state=" .. crypto.b64url_encode(crypto.random(32)))
    local res = c:get(forged)
    assert.same({ status = 400, error = "invalid_state" }, error_of(res))
    assert.is_nil(cookie(res, "shelfsync_session"))
  end)

  it("refuses a callback without state, or in a browser that never started the flow", function()
    local c = h.client(srv)
    local _, authz = authorize(c)
    local stateless = authz.headers.location:gsub("&?state=[^&]+", "")
    assert.same({ status = 400, error = "invalid_state" }, error_of(c:get(stateless)))
    -- The victim of a login CSRF: a callback URL made in the attacker's browser.
    assert.same({ status = 400, error = "invalid_state" }, error_of(h.client(srv):get(authz.headers.location)))
  end)

  it("refuses a flow cookie that was tampered with", function()
    local c = h.client(srv)
    local _, authz = authorize(c)
    local payload, mac = c.jar.shelfsync_oidc:match("^([^.]+)%.(.+)$")
    local flow = h.host.json.decode(crypto.b64url_decode(payload))
    flow.r = "/elsewhere"
    c.jar.shelfsync_oidc = crypto.b64url_encode(h.host.json.encode(flow)) .. "." .. mac
    assert.same({ status = 400, error = "invalid_state" }, error_of(c:get(authz.headers.location)))
  end)

  it("cannot redeem an authorization code twice", function()
    local c = h.client(srv)
    local _, authz = authorize(c)
    local flow_cookie = c.jar.shelfsync_oidc
    assert.equal(302, c:get(authz.headers.location).status)
    -- Replay the same callback with the same flow cookie: the provider refuses the code.
    local replay = h.client(srv)
    replay.jar.shelfsync_oidc = flow_cookie
    local res = replay:get(authz.headers.location)
    assert.same({ status = 401, error = "sign_in_failed" }, error_of(res))
    assert.truthy(res.json.message:find("invalid_grant", 1, true))
    assert.is_nil(replay.jar.shelfsync_session)
  end)

  local refused = {
    { "wrong_nonce", 401, "id_token_invalid", "nonce" },
    { "foreign_key", 401, "id_token_invalid", "signature" },
    { "unknown_kid", 401, "id_token_invalid", "key id" },
    { "expired", 401, "id_token_invalid", "expired" },
    { "future_iat", 401, "id_token_invalid", "future" },
    { "wrong_aud", 401, "id_token_invalid", "audience" },
    { "wrong_iss", 401, "id_token_invalid", "issuer" },
    { "alg_none", 401, "id_token_invalid", "RS256" },
    { "hs256_pubkey", 401, "id_token_invalid", "RS256" },
    { "email_unverified", 403, "email_unverified", "verified" },
    { "deny", 401, "sign_in_failed", "access_denied" },
    { "token_server_error", 502, "provider_unavailable", "500" },
  }
  for _, case in ipairs(refused) do
    local misbehave, status, code, words = case[1], case[2], case[3], case[4]
    it("refuses to sign in when the provider answers with " .. misbehave, function()
      local c = h.client(srv)
      local res = sign_in(c, "/", { misbehave = misbehave })
      assert.same({ status = status, error = code }, error_of(res))
      assert.truthy(res.json.message:find(words, 1, true), res.json.message)
      assert.is_nil(c.jar.shelfsync_session)
      assert.equal(401, c:get("/api/me").status)
      assert.same({ { n = 0 } }, rows("SELECT count(*)::int AS n FROM sessions"))
    end)
  end

  it("refuses an ID token issued by Google's issuer name when the provider is another", function()
    local res = sign_in(h.client(srv), "/", { claims = { iss = "https://accounts.google.com" } })
    assert.same({ status = 401, error = "id_token_invalid" }, error_of(res))
  end)

  it("refuses an email_verified claim that is anything but true", function()
    for _, v in ipairs{ "false", 0 } do
      local res = sign_in(h.client(srv), "/", { claims = { email_verified = v } })
      assert.same({ status = 403, error = "email_unverified" }, error_of(res))
    end
  end)

  it("picks up a rotated signing key with one JWKS refetch, and caches keys otherwise", function()
    assert.equal(302, sign_in(h.client(srv)).status)           -- the key set is cached now
    local before = provider:state().jwks_fetches
    assert.equal(302, sign_in(h.client(srv)).status)
    assert.equal(before, provider:state().jwks_fetches)         -- served from the cache
    provider:rotate{ retire_old = true }
    local res = sign_in(h.client(srv))
    assert.equal(302, res.status, res.body)
    assert.equal(before + 1, provider:state().jwks_fetches)
    -- A kid the provider never published: one refetch, then refused.
    local bad = sign_in(h.client(srv), "/", { misbehave = "unknown_kid" })
    assert.same({ status = 401, error = "id_token_invalid" }, error_of(bad))
    assert.equal(before + 2, provider:state().jwks_fetches)
  end)

  it("refuses returnTo values that leave the site", function()
    local c = h.client(srv)
    for _, target in ipairs{ "https://evil.example", "//evil.example", "/\\evil.example",
                             "\\\\evil.example", "/\t/evil.example", "http:evil.example",
                             "javascript:alert(1)", " /library", "/li brary" } do
      local res = c:get("/auth/google/login?returnTo=" .. enc(target))
      assert.same({ status = 400, error = "invalid_return_to" }, error_of(res), target)
      assert.is_nil(res.headers.location)
    end
  end)

  it("sends the browser home when no returnTo is given", function()
    local c = h.client(srv)
    local login = c:get("/auth/google/login")
    assert.equal(302, login.status)
    local authz = h.request("GET", login.headers.location)
    assert.equal("/", c:get(authz.headers.location).headers.location)
  end)

  it("refuses a deactivated user, who keeps no way in", function()
    local c = h.client(srv)
    assert.equal(302, sign_in(c).status)
    assert.equal(200, c:get("/api/me").status)
    h.db().query("UPDATE users SET status = 'deactivated', deactivated_at = now()")
    assert.same({ status = 401, error = "unauthenticated" }, error_of(c:get("/api/me")))
    local again = sign_in(h.client(srv))
    assert.same({ status = 403, error = "account_deactivated" }, error_of(again))
  end)

  it("keeps no raw session token in the database", function()
    local c = h.client(srv)
    assert.equal(302, sign_in(c).status)
    local token = c.jar.shelfsync_session
    assert.equal(43, #token)
    local tables = rows(
      "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    for _, t in ipairs(tables) do
      -- table names come from the catalog, quoted as identifiers
      local ident = '"' .. t.tablename:gsub('"', '""') .. '"'
      local hit = rows("SELECT count(*)::int AS n FROM " .. ident .. " AS t WHERE strpos(t::text, $1) > 0", token)
      assert.equal(0, hit[1].n, t.tablename)
    end
    local stored = rows("SELECT encode(session_token_hash, 'hex') AS hash FROM sessions")
    assert.same({ { hash = crypto.sha256_hex(token) } }, stored)
  end)
end)

describe("Sign in with Google when no client is configured", function()
  local srv

  setup(function()
    srv = h.start_server{ env = { SHELFSYNC_GOOGLE_CLIENT_ID = "", SHELFSYNC_GOOGLE_CLIENT_SECRET = "" } }
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("answers 503 sign_in_not_configured instead of redirecting", function()
    local res = h.client(srv):get("/auth/google/login?returnTo=/")
    assert.same({ status = 503, error = "sign_in_not_configured" }, error_of(res))
  end)
end)

describe("Sign in with Google when the provider cannot be used", function()
  local servers = {}

  local function start(discovery_url)
    local srv = h.start_server{ env = {
      SHELFSYNC_GOOGLE_CLIENT_ID = CLIENT_ID,
      SHELFSYNC_GOOGLE_CLIENT_SECRET = CLIENT_SECRET,
      SHELFSYNC_OIDC_DISCOVERY_URL = discovery_url,
      SHELFSYNC_HTTP_CONNECT_TIMEOUT_MS = "500",
    } }
    servers[#servers + 1] = srv
    return srv
  end

  teardown(function()
    for _, srv in ipairs(servers) do srv:stop() end
  end)

  it("answers 502 provider_unavailable when the provider does not answer", function()
    local srv = start("http://127.0.0.1:1/.well-known/openid-configuration")
    local res = h.client(srv):get("/auth/google/login?returnTo=/")
    assert.same({ status = 502, error = "provider_unavailable" }, error_of(res))
    assert.is_nil(res.headers.location)
  end)

  it("never talks to a provider over plain http off loopback", function()
    local srv = start("http://accounts.example/.well-known/openid-configuration")
    local res = h.client(srv):get("/auth/google/login?returnTo=/")
    assert.same({ status = 502, error = "provider_unavailable" }, error_of(res))
    assert.truthy(res.json.message:find("https", 1, true))
  end)
end)
