-- The unmodified audioshlf extension, played exactly (issue 9), against a server with the
-- default configuration (no cors_origins). Its content script runs on the Audible library
-- page, so its fetches carry that page's origin; Chromium sends a preflight first (the
-- request has Authorization and a JSON Content-Type) and hides any answer whose
-- Access-Control-Allow-Origin does not let the page read it. What the overlay then shows
-- follows the extension's decision rules, transcribed in `state_of` below.
local h = require("spec.support.helpers")
local lib = require("spec.fixtures.library")

local host = h.host
local json = host.json

local ORIGIN = "https://www.audible.com"
local SECRET = "test-secret-0123456789abcdef0123456789abcdef"   -- what h.start_server sets
local MAX_IMPORT = 200000

-- Chromium's CORS check: may the page read this answer?
local function readable(res)
  local allow = res.headers["access-control-allow-origin"]
  return allow == "*" or allow == ORIGIN
end

-- The preflight passes when it is 2xx, readable, and allows POST with both headers.
local function preflight_passes(res)
  if not res or res.status < 200 or res.status > 299 or not readable(res) then return false end
  local methods = (res.headers["access-control-allow-methods"] or ""):lower()
  local headers = (res.headers["access-control-allow-headers"] or ""):lower()
  return methods:find("post", 1, true) ~= nil and headers:find("authorization", 1, true) ~= nil
    and headers:find("content-type", 1, true) ~= nil
end

-- The extension's overlay state for an answer (nil: the fetch failed or was hidden).
local function state_of(res)
  if not res or not readable(res) then return "Connection Failed" end
  if res.status >= 200 and res.status <= 299 and res.json and res.json.success then return "Success" end
  local e = res.json and type(res.json.error) == "string" and res.json.error or ""
  if res.status == 413 then return "Library Too Large" end
  if e:find("expired", 1, true) then return "Token Expired" end
  if e:find("already used", 1, true) then return "Token Already Used" end
  if res.status == 401 or res.status == 403 then return "Authentication Error" end
  return "Sync Failed"
end

-- Preflight + POST, as the content script's fetch does. opts.path, opts.headers, opts.body.
local function sync(srv, token, body, opts)
  opts = opts or {}
  local url = srv.url .. (opts.path or "/api/sync/import")
  local pre = h.request("OPTIONS", url, { headers = { Origin = ORIGIN,
    ["Access-Control-Request-Method"] = "POST",
    ["Access-Control-Request-Headers"] = "authorization,content-type" } })
  if not preflight_passes(pre) then return nil, pre end
  local headers = { Origin = ORIGIN, Authorization = "Bearer " .. token,
                    ["Content-Type"] = "application/json" }
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  return h.request("POST", url, { headers = headers, body = body })
end

local function payload(n, seed)
  return lib.payload(lib.extension_items(lib.generate(n, { seed = seed, salt = seed })), json.encode)
end

local function claims_of(token)
  return json.decode(host.crypto.b64url_decode(token:match("^[^.]+%.([^.]+)%.")))
end

describe("the audioshlf extension with the default configuration", function()
  local w

  setup(function()
    w = h.fresh_world({ "ann" }, { env = {
      SHELFSYNC_MAX_BODY_BYTES = "4096",
      SHELFSYNC_MAX_IMPORT_BYTES = tostring(MAX_IMPORT),
      SHELFSYNC_SYNC_MAX_TITLES = "300",
    } })
  end)

  teardown(function()
    if w then w.srv:stop() end
  end)

  -- A fresh listener's token each time (at most 10 unused ones per user).
  local listeners = 0
  local function token()
    listeners = listeners + 1
    local res = h.login(w.srv, "listener" .. listeners .. "@example.com"):post("/api/sync/token", {})
    assert(res.status == 200, res.body)
    return res.json.token
  end

  it("syncs from the Audible page's origin: preflight and POST are readable", function()
    local res, pre = sync(w.srv, token(), payload(5, 1))
    assert.are.same({ "Success", 5 }, { state_of(res), res and res.json.imported }, pre and pre.body)
    assert.are.equal("*", res.headers["access-control-allow-origin"])
    assert.is_nil(res.headers["access-control-allow-credentials"])
  end)

  it("keeps the cookie routes closed to the Audible origin", function()
    local pre = h.request("OPTIONS", w.srv.url .. "/api/sync/token", { headers = { Origin = ORIGIN,
      ["Access-Control-Request-Method"] = "POST" } })
    assert.are.same({ 403, "cors_rejected" }, { pre.status, pre.json.error })
    local res = w.ann:get("/api/me", { headers = { Origin = ORIGIN } })
    assert.are.same({ 200, nil }, { res.status, res.headers["access-control-allow-origin"] })
  end)

  it("reaches the import and its body limit whatever the spelling of the path", function()
    local body = payload(60, 2)
    assert.is_true(#body > 4096)          -- over the default limit, under the import's
    for _, path in ipairs({ "/api/sync/import/", "//api/sync//import" }) do
      assert.are.equal("Success", state_of(sync(w.srv, token(), body, { path = path })), path)
    end
  end)

  -- Every error the import can answer, and the overlay state it must land in.
  describe("lands every error in the state the extension has for it", function()
    local function forged(claims, secret) return host.jwt.sign_hs256(claims, secret or SECRET) end

    local cases = {
      { "a body over the limit (Content-Length, refused in C before reading)", 413, "payload_too_large",
        "Library Too Large", function() return token(), string.rep(" ", MAX_IMPORT + 1) end },
      { "a gzip body that inflates past the limit (refused in C on the worker)", 413, "payload_too_large",
        "Library Too Large", function()
          return token(), host.gzip.compress('{"titles":[' .. string.rep(" ", MAX_IMPORT) .. ']}'),
            { ["Content-Encoding"] = "gzip" }
        end },
      { "more titles than sync_max_titles", 413, "too_many_titles", "Library Too Large",
        function() return token(), payload(301, 3) end },
      { "a corrupt gzip body (C)", 400, "malformed_body", "Sync Failed",
        function() return token(), "not gzip", { ["Content-Encoding"] = "gzip" } end },
      { "an encoding the server does not take (C)", 415, "unsupported_encoding", "Sync Failed",
        function() return token(), payload(1, 4), { ["Content-Encoding"] = "br" } end },
      { "a body that is not JSON", 400, "malformed_json", "Sync Failed",
        function() return token(), '{"titles": [' end },
      { "no valid title", 422, "no_valid_titles", "Sync Failed",
        function() return token(), '{"titles":[{"asin":"nope"}]}' end },
      { "an expired token", 401, "token_expired", "Token Expired", function()
          local c = claims_of(token())
          c.iat, c.exp = os.time() - 1000, os.time() - 100
          return forged(c), payload(1, 5)
        end },
      { "a token whose row expired", 401, "token_expired", "Token Expired", function()
          local t = token()
          assert(h.db().query([[UPDATE sync_tokens SET created_at = now() - interval '1 minute',
            expires_at = now() - interval '1 second' WHERE jti = $1]],
            claims_of(t).jti))
          return t, payload(1, 6)
        end },
      { "a used token", 401, "token already used", "Token Already Used", function()
          local t = token()
          assert.are.equal("Success", state_of(sync(w.srv, t, payload(3, 7))))
          return t, payload(3, 7)
        end },
      { "a token signed with another secret", 401, "token_invalid", "Authentication Error",
        function() return forged(claims_of(token()), "another-secret-0123456789abcdef0123456789"), payload(1, 8) end },
      { "a token that is not a JWT", 401, "token_invalid", "Authentication Error",
        function() return "not-a-token", payload(1, 9) end },
    }

    for _, case in ipairs(cases) do
      local what, status, code, state, make = case[1], case[2], case[3], case[4], case[5]
      it(what .. ": " .. status .. " -> " .. state, function()
        local t, body, headers = make()
        local res, pre = sync(w.srv, t, body, { headers = headers })
        assert(res, "preflight refused: " .. tostring(pre and pre.status))
        assert.are.same({ status, code, state },
          { res.status, res.json and res.json.error, state_of(res) })
      end)
    end

    it("and the import's 401s keep a stable code for other clients", function()
      local t = token()
      assert.are.equal("Success", state_of(sync(w.srv, t, payload(2, 10))))
      local res = sync(w.srv, t, payload(2, 10))
      assert.are.same({ 401, "token already used", "token_already_used" },
        { res.status, res.json.error, res.json.code })
    end)
  end)
end)
