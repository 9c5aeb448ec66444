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

  -- One extension sync of items (tables) for a fresh listener (or `who`); the answer.
  local function sync_items(items, who)
    local c = who or h.login(w.srv, "listener-items-" .. host.crypto.uuid() .. "@example.com")
    local t = c:post("/api/sync/token", {}).json.token
    local res = sync(w.srv, t, json.encode({ titles = items }))
    assert(res and res.status == 200, res and res.body)
    return res, c
  end

  local function catalog_row(asin)
    return h.one([[SELECT title, summary, authors, narrators, rating FROM title_catalog
                   WHERE asin = $1]], asin)
  end

  describe("the shared catalog", function()
    it("takes a listener's metadata only where it is blank, never over another's", function()
      local first = { asin = "B0DEFACE01", title = "The Real Title", authors = { "A. Author" },
                      narrators = {}, summary = nil, rating = 4.5, source = "LIBRARY" }
      sync_items({ first })
      sync_items({ { asin = "B0DEFACE01", title = "DEFACED", authors = { "Vandal" },
                     narrators = { "N. Arrator" }, summary = "A summary at last.", rating = 1,
                     source = "LIBRARY" } })
      assert.are.same({ title = "The Real Title", summary = "A summary at last.",
                        authors = { "A. Author" }, narrators = { "N. Arrator" }, rating = 4.5 },
        catalog_row("B0DEFACE01"))
    end)

    it("counts the extension's placeholders as blank: never stored over a value, filled later", function()
      sync_items({ { asin = "B0DEFACE02", title = "Unknown Title", authors = { "Unknown Author" },
                     narrators = {}, seriesName = "Unknown", source = "LIBRARY" } })
      assert.are.same({ title = "Unknown Title", authors = {}, series_name = h.null },
        h.one("SELECT title, authors, series_name FROM title_catalog WHERE asin = $1", "B0DEFACE02"))
      sync_items({ { asin = "B0DEFACE02", title = "Found At Last", authors = { "Real Author" },
                     narrators = {}, source = "LIBRARY" } })
      sync_items({ { asin = "B0DEFACE02", title = "Unknown Title", authors = { "Unknown Author" },
                     narrators = {}, source = "LIBRARY" } })
      assert.are.same({ title = "Found At Last", authors = { "Real Author" } },
        h.one("SELECT title, authors FROM title_catalog WHERE asin = $1", "B0DEFACE02"))
    end)
  end)

  describe("the listener's library", function()
    local function date_of(c, asin)
      return c:get("/api/library/" .. asin).json.dateAdded
    end

    it("keeps a known entry's dateAdded: a later scrape never moves it, an earlier date does", function()
      local function item(date) return { asin = "B0DATEADD1", title = "Dated", authors = {}, narrators = {},
                                         source = "LIBRARY", personalRating = 0, dateAdded = date } end
      local _, c = sync_items({ item("2023-05-01T10:00:00.000Z") })
      sync_items({ item("2026-11-29T02:00:00.000Z") }, c)          -- the next scrape
      local kept = date_of(c, "B0DATEADD1")
      sync_items({ item("2021-01-02T03:04:05.000Z") }, c)          -- a real purchase date
      assert.are.same({ "2023-05-01T10:00:00.000Z", "2021-01-02T03:04:05.000Z" },
        { kept, date_of(c, "B0DATEADD1") })
    end)

    it("takes 10-character, ISBN-10 and 13-digit ids, and refuses the rest with a warning", function()
      local function item(asin) return { asin = asin, title = "Id " .. asin, authors = {}, narrators = {},
                                         source = "LIBRARY" } end
      local res, c = sync_items({ item("9780143128540"), item("014312854x"), item("B0IDS00001"),
                                  item("978014312854") })
      assert.are.same({ 3, { "1 of 4 titles were invalid and skipped",
                             "titles[3] (978014312854): skipped: asin: must be an ASIN: 10 letters or digits, or 13 digits" } },
        { res.json.imported, res.json.warnings })
      assert.are.same({ 200, "9780143128540", 200 }, { c:get("/api/library/9780143128540").status,
        c:get("/api/titles/9780143128540").json.asin, c:get("/api/library/014312854X").status })
    end)

    it("answers a first sync of titles without authors or covers with no warning at all", function()
      local res = sync_items(lib.extension_items(lib.generate(50, { seed = 11, salt = 11 })))
      assert.are.same({ 50, 50, {} }, { res.json.imported, res.json.newToCatalog, res.json.warnings })
    end)
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
