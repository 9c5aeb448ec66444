-- Library sync, end to end (DESIGN.md "Sync contract", issue 4): the real binary, real
-- PostgreSQL, HTTP over loopback. Payloads come from spec/fixtures/library.lua.
local h = require("spec.support.helpers")
local lib = require("spec.fixtures.library")

local host = h.host
local json = host.json
local null = json.null

local SECRET = "test-secret-0123456789abcdef0123456789abcdef"   -- what h.start_server sets
local AUD = "shelfsync-sync"

-- ---- helpers ----

local rows, one = h.rows, h.one

local function b64url(s)
  return (host.crypto.b64url_encode(s))
end

local function claims_of(token)
  local payload = token:match("^[^.]+%.([^.]+)%.")
  return json.decode(host.crypto.b64url_decode(payload))
end

local function token_for(c)
  local res = c:post("/api/sync/token", {})
  assert(res.status == 200, "token: " .. res.status .. " " .. res.body)
  return res.json.token, res.json
end

local function body_of(items)
  if type(items) == "string" then return items end
  return lib.payload(items, json.encode)
end

-- POST /api/sync/import with a bearer token; items: a list of ITEM tables or JSON text.
local function import(srv, token, items, opts)
  opts = opts or {}
  local headers = { ["Content-Type"] = "application/json" }
  if token then headers.Authorization = "Bearer " .. token end
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  return assert(h.request("POST", srv.url .. "/api/sync/import", {
    headers = headers, body = opts.raw or body_of(items),
  }))
end

-- The error part of an answer, for one assert.same over status and code.
local function err(res)
  return { status = res.status, error = res.json and res.json.error }
end

local parallel_imports = h.parallel_imports

-- The user's active library as asin -> entry row.
local function library_of(user_id)
  local out = {}
  for _, r in ipairs(rows([[
      SELECT c.asin, ul.id, ul.source::text AS source, ul.listening_progress, ul.personal_rating,
             ul.removed_at
      FROM user_library ul JOIN title_catalog c ON c.id = ul.title_id
      WHERE ul.user_id = $1]], user_id)) do
    out[r.asin] = r
  end
  return out
end

local function count_active(user_id)
  return one("SELECT count(*)::int AS n FROM user_library WHERE user_id = $1 AND removed_at IS NULL",
    user_id).n
end

local function small(n, salt)
  return lib.generate(n, { seed = salt or 1, salt = salt or 1 })
end

-- ---- specs ----

describe("Library sync", function()
  local srv

  setup(function()
    h.reset_db()
    srv = h.start_server{ env = {
      SHELFSYNC_CORS_ORIGINS = "chrome-extension://abcdefghijklmnop",
    } }
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  describe("POST /api/sync/token", function()
    it("answers a signed single-use token, its expiry and the Audible URL carrying it", function()
      local c = h.login(srv, "token-shape@example.com")
      local res = c:post("/api/sync/token", {})
      assert.same(200, res.status)
      local t = res.json
      assert.is_true(t.success)
      assert.same("https://www.audible.com/library/titles#token=" .. t.token, t.audibleUrl)
      assert.is_false(t.hasSyncedBefore)
      assert.same(null, t.lastSyncedAt)
      local claims = assert(host.jwt.verify_hs256(t.token, SECRET, { aud = AUD }))
      assert.same(c.user.id, claims.sub)
      assert.same(900, claims.exp - claims.iat)
      assert.same(os.date("!%Y-%m-%dT%H:%M:%S.000Z", claims.exp), t.expiresAt)
      local row = one("SELECT user_id, used, used_at FROM sync_tokens WHERE jti = $1", claims.jti)
      assert.same({ user_id = c.user.id, used = false, used_at = null }, row)
    end)

    it("needs a signed-in user", function()
      local res = h.request("POST", srv.url .. "/api/sync/token", { headers = { Origin = srv.url } })
      assert.same({ status = 401, error = "unauthenticated" }, err(res))
    end)

    it("refuses an 11th unused token with 429 and Retry-After", function()
      local c = h.login(srv, "token-limit@example.com")
      for _ = 1, 10 do token_for(c) end
      local res = c:post("/api/sync/token", {})
      assert.same({ status = 429, error = "too_many_tokens" }, err(res))
      local wait = tonumber(res.headers["retry-after"])
      assert.is_true(wait >= 1 and wait <= 900)
    end)

    it("says when the user last synced", function()
      local c = h.login(srv, "token-last@example.com")
      assert.same(200, import(srv, token_for(c), small(3, 9001)).status)
      local _, t = token_for(c)
      local last = one("SELECT max(synced_at) AS at FROM sync_history WHERE user_id = $1", c.user.id).at
      assert.is_true(t.hasSyncedBefore)
      assert.same(last, t.lastSyncedAt)
    end)
  end)

  describe("POST /api/sync/import", function()
    it("imports a full library, answers the counts and records the sync", function()
      local c = h.login(srv, "full-flow@example.com")
      local items = small(40, 101)
      items[7].source, items[9].source = "WISHLIST", "WISHLIST"
      local wish = 0
      for _, it in ipairs(items) do if it.source == "WISHLIST" then wish = wish + 1 end end
      local res = import(srv, token_for(c), items)
      assert.same(200, res.status)
      local a = res.json
      assert.same({ success = true, imported = 40, newToCatalog = 40, libraryCount = 40 - wish,
                    wishlistCount = wish, warnings = {} },
                  { success = a.success, imported = a.imported, newToCatalog = a.newToCatalog,
                    libraryCount = a.libraryCount, wishlistCount = a.wishlistCount,
                    warnings = a.warnings })
      assert.same({ id = a.syncId, user_id = c.user.id, titles_imported = 40, new_to_catalog = 40,
                    library_count = 40 - wish, wishlist_count = wish, success = true,
                    error_message = null },
                  one([[SELECT id, user_id, titles_imported, new_to_catalog, library_count,
                        wishlist_count, success, error_message FROM sync_history WHERE id = $1]],
                      a.syncId))
      assert.same(40, count_active(c.user.id))
      assert.same(1, one("SELECT count(*)::int AS n FROM sync_tokens WHERE user_id = $1 AND used",
        c.user.id).n)
    end)

    it("accepts the exact payload of the audioshlf extension (empty names, rating 0)", function()
      local c = h.login(srv, "extension@example.com")
      local body = [[{"titles":[
        {"asin":"B0EXT00001","title":"The Way of Kings","authors":[],"narrators":[],
         "source":"LIBRARY","listeningProgress":42,"personalRating":0,
         "dateAdded":"2023-04-05T06:07:08.000Z"},
        {"asin":"B0EXT00002","title":"Project Hail Mary","authors":[],"narrators":[],
         "source":"WISHLIST","listeningProgress":0,"personalRating":0,
         "dateAdded":"2024-01-02T00:00:00.000Z"}]}]]
      local res = import(srv, token_for(c), body)
      assert.same(200, res.status)
      assert.same({ 2, 2, 1, 1 }, { res.json.imported, res.json.newToCatalog,
                                    res.json.libraryCount, res.json.wishlistCount })
      -- missing metadata is no warning: the user cannot act on it
      assert.same({}, res.json.warnings)
      assert.same({
        { asin = "B0EXT00001", authors = {}, narrators = {}, source = "LIBRARY",
          listening_progress = 42, personal_rating = null, date_added = "2023-04-05T06:07:08.000Z" },
        { asin = "B0EXT00002", authors = {}, narrators = {}, source = "WISHLIST",
          listening_progress = 0, personal_rating = null, date_added = "2024-01-02T00:00:00.000Z" },
      }, rows([[SELECT c.asin, c.authors, c.narrators, ul.source::text AS source,
                      ul.listening_progress, ul.personal_rating, ul.date_added
               FROM user_library ul JOIN title_catalog c ON c.id = ul.title_id
               WHERE ul.user_id = $1 ORDER BY c.asin]], c.user.id))
    end)

    it("never lets the extension's empty author and narrator lists erase known ones", function()
      local c = h.login(srv, "keep-names@example.com")
      local full = small(5, 102)
      assert.same(200, import(srv, token_for(c), full).status)
      local res = import(srv, token_for(c), lib.extension_items(full))
      assert.same(200, res.status)
      for _, it in ipairs(full) do
        local row = one("SELECT authors, narrators, title, summary FROM title_catalog WHERE asin = $1",
          it.asin)
        assert.same({ authors = it.authors, narrators = it.narrators, title = it.title,
                      summary = it.summary }, row)
      end
      -- and the catalog knows their names, so no "no authors" warning
      assert.same({}, res.json.warnings)
    end)

    it("keeps the stored summary when a sync leaves it out", function()
      local c = h.login(srv, "keep-summary@example.com")
      local items = small(3, 103)
      assert.same(200, import(srv, token_for(c), items).status)
      local again = {}
      for i, it in ipairs(items) do
        again[i] = lib.copy(it)
        again[i].summary = nil
      end
      again[2].summary = json.null    -- null is "not known" too
      assert.same(200, import(srv, token_for(c), again).status)
      for _, it in ipairs(items) do
        assert.same({ summary = it.summary },
          one("SELECT summary FROM title_catalog WHERE asin = $1", it.asin))
      end
    end)

    it("keeps every entry's id across a re-sync that changes it", function()
      local c = h.login(srv, "keep-ids@example.com")
      local items = small(30, 104)
      assert.same(200, import(srv, token_for(c), items).status)
      local before = library_of(c.user.id)
      local changed = lib.mutate(items, 0.5, { seed = 7 })
      local res = import(srv, token_for(c), changed)
      assert.same(200, res.status)
      assert.same(0, res.json.newToCatalog)
      local after = library_of(c.user.id)
      for _, it in ipairs(changed) do
        assert.same(before[it.asin].id, after[it.asin].id)
        assert.same(it.listeningProgress, after[it.asin].listening_progress)
      end
    end)

    it("rewrites a changed entry's every personal field: unrated again, bought, listened", function()
      local c = h.login(srv, "rewrite@example.com")
      local items = small(3, 116)
      items[2].source, items[2].personalRating, items[2].listeningProgress = "WISHLIST", 4, 0
      assert.same(200, import(srv, token_for(c), items).status)
      local before = library_of(c.user.id)[items[2].asin]
      assert.same({ "WISHLIST", 4, 0 }, { before.source, before.personal_rating, before.listening_progress })
      items[2].source, items[2].personalRating, items[2].listeningProgress = "LIBRARY", 0, 55
      assert.same(200, import(srv, token_for(c), items).status)
      local after = library_of(c.user.id)[items[2].asin]
      assert.same({ before.id, "LIBRARY", null, 55 },
        { after.id, after.source, after.personal_rating, after.listening_progress })
      -- the other two were equal: not rewritten (updated_at stays at the first sync's)
      assert.same(1, one([[SELECT count(*)::int AS n FROM user_library
                           WHERE user_id = $1 AND updated_at > created_at]], c.user.id).n)
    end)

    it("marks titles left out of a sync removed, and a later sync restores the same entry", function()
      local c = h.login(srv, "drop-restore@example.com")
      local items = small(10, 105)
      assert.same(200, import(srv, token_for(c), items).status)
      local entry = library_of(c.user.id)[items[4].asin]
      -- a list holding the entry, as the lists feature would create it
      local list = one([[INSERT INTO recommendation_lists (user_id, title) VALUES ($1, 'Favourites')
                         RETURNING id]], c.user.id).id
      assert(h.db().query([[INSERT INTO list_items (list_id, user_id, user_library_id, position)
                           VALUES ($1, $2, $3, 1)]], list, c.user.id, entry.id))

      local fewer = {}
      for i, it in ipairs(items) do if i ~= 4 then fewer[#fewer + 1] = it end end
      local res = import(srv, token_for(c), fewer)
      assert.same(200, res.status)
      assert.same("1 title not in this upload was removed from your library", res.json.warnings[1])
      local gone = library_of(c.user.id)[items[4].asin]
      assert.same(entry.id, gone.id)
      assert.is_not.same(null, gone.removed_at)
      assert.same(9, count_active(c.user.id))
      assert.same(1, one("SELECT count(*)::int AS n FROM list_items WHERE user_library_id = $1",
        entry.id).n)

      assert.same(200, import(srv, token_for(c), items).status)
      local back = library_of(c.user.id)[items[4].asin]
      assert.same({ id = entry.id, removed_at = null }, { id = back.id, removed_at = back.removed_at })
      assert.same(10, count_active(c.user.id))
    end)

    it("warns prominently when a sync removes more than a quarter of the library", function()
      local c = h.login(srv, "big-removal@example.com")
      local items = small(8, 106)
      assert.same(200, import(srv, token_for(c), items).status)
      local res = import(srv, token_for(c), { items[1], items[2], items[3], items[4], items[5] })
      assert.same(200, res.status)
      assert.matches("^WARNING: 3 of your 8 titles %(38%%%) were not in this upload", res.json.warnings[1])
    end)

    it("keeps one entry per ASIN, the LIBRARY one, and warns about the duplicates", function()
      local c = h.login(srv, "duplicates@example.com")
      local items = small(3, 107)
      local dup = lib.copy(items[2])
      items[2].source, dup.source = "WISHLIST", "LIBRARY"
      local again = lib.copy(items[1])
      items[#items + 1] = dup       -- titles[3]
      items[#items + 1] = again     -- titles[4]
      local res = import(srv, token_for(c), items)
      assert.same(200, res.status)
      assert.same({ 3, 3, 0 }, { res.json.imported, res.json.libraryCount, res.json.wishlistCount })
      assert.same({
        string.format("titles[3] (%s): duplicate of titles[1]; kept this LIBRARY entry", dup.asin),
        string.format("titles[4] (%s): duplicate of titles[0]; ignored", again.asin),
      }, res.json.warnings)
      assert.same("LIBRARY", library_of(c.user.id)[dup.asin].source)
    end)

    it("skips invalid titles with a warning naming index, ASIN and reason, and imports the rest", function()
      local c = h.login(srv, "invalid-items@example.com")
      local items = small(4, 108)
      items[2].asin = "NOT-AN-ASIN"
      items[3].source = nil
      items[4].rating = 9        -- an invalid optional field: dropped, the title stays
      items[5] = "not an object"
      local res = import(srv, token_for(c), items)
      assert.same(200, res.status)
      assert.same(2, res.json.imported)
      assert.same({
        "3 of 5 titles were invalid and skipped",
        "titles[1] (NOT-AN-ASIN): skipped: asin: must be an ASIN: 10 letters or digits, or 13 digits",
        string.format("titles[2] (%s): skipped: source: is required", items[3].asin),
        string.format("titles[3] (%s): ignored invalid rating: must be between 0 and 5", items[4].asin),
        "titles[4] (no ASIN): skipped: must be an object",
      }, res.json.warnings)
      assert.same(null, one("SELECT rating FROM title_catalog WHERE asin = $1", items[4].asin).rating)
    end)

    it("caps the warnings and counts the rest in one line", function()
      local c = h.login(srv, "warning-cap@example.com")
      local items = small(130, 109)
      for _, it in ipairs(items) do it.rating = 9 end     -- dropped, with a warning each
      local res = import(srv, token_for(c), items)
      assert.same(200, res.status)
      assert.same(101, #res.json.warnings)
      assert.same("... and 30 more warnings not shown", res.json.warnings[101])
      local stored = one("SELECT warnings FROM sync_history WHERE id = $1", res.json.syncId).warnings
      assert.same(res.json.warnings, stored)
    end)

    it("refuses a payload with no valid title, changes nothing and keeps the token", function()
      local c = h.login(srv, "no-valid@example.com")
      local token = token_for(c)
      local res = import(srv, token, { { asin = "bad", title = "x", source = "LIBRARY" } })
      assert.same({ status = 422, error = "no_valid_titles" }, err(res))
      assert.same({ { path = "titles[0].asin",
                      message = "must be an ASIN: 10 letters or digits, or 13 digits" } },
                  res.json.details)
      local empty = import(srv, token, '{"titles":[]}')
      assert.same({ status = 422, error = "no_valid_titles" }, err(empty))
      assert.same(0, one("SELECT count(*)::int AS n FROM user_library WHERE user_id = $1", c.user.id).n)
      -- the token still works
      assert.same(200, import(srv, token, small(2, 110)).status)
    end)

    it("never empties a library because of a broken upload", function()
      local c = h.login(srv, "no-empty@example.com")
      assert.same(200, import(srv, token_for(c), small(5, 111)).status)
      local res = import(srv, token_for(c), '{"titles":[]}')
      assert.same({ status = 422, error = "no_valid_titles" }, err(res))
      assert.same(5, count_active(c.user.id))
    end)

    it("answers 400 for a body that is not JSON and 422 naming the path of a bad envelope", function()
      local c = h.login(srv, "envelope@example.com")
      local token = token_for(c)
      assert.same({ status = 400, error = "malformed_json" }, err(import(srv, token, "{titles:")))
      local res = import(srv, token, '{"books":[]}')
      assert.same({ status = 422, error = "validation_failed" }, err(res))
      assert.same({ { path = "titles", message = "is required" } }, res.json.details)
      res = import(srv, token, '{"titles":{"asin":"B000000001"}}')
      assert.same({ { path = "titles", message = "must be an array" } }, res.json.details)
      res = import(srv, token, '[1, 2]')
      assert.same({ { path = "", message = "must be an object" } }, res.json.details)
    end)

    it("answers what only lua-cjson reads as it always has (host.bulk hands such bodies back)", function()
      local c = h.login(srv, "lenient@example.com")
      local token = token_for(c)
      local res = import(srv, token, "{titles:")
      assert.same("the request body is not valid JSON: Expected object key string but found " ..
        "invalid token at character 2", res.json.message)
      local items = small(2, 112)
      -- 0x1A and a raw tab in a string: lua-cjson reads them, yajl does not
      local text = body_of(items):gsub('"listeningProgress":%d+', '"listeningProgress":0x1A', 1)
        :gsub('"title":"', '"title":"\t', 1)
      res = import(srv, token, text)
      assert.same(200, res.status)
      assert.same(2, res.json.imported)
      assert.same(26, library_of(c.user.id)[items[1].asin].listening_progress)
    end)

    it("skips a null title as not an object, on either decoder", function()
      local c = h.login(srv, "nulls@example.com")
      local items = small(1, 113)
      local text = body_of(items):gsub('"titles":%[', '"titles":[null,', 1)
      local res = import(srv, token_for(c), text)     -- host.bulk
      assert.same(200, res.status)
      assert.same({ "1 of 2 titles were invalid and skipped",
                    "titles[0] (no ASIN): skipped: must be an object" }, res.json.warnings)
      res = import(srv, token_for(c), (text:gsub('"title":"', '"title":"\t', 1)))  -- lua-cjson
      assert.same(200, res.status)
      assert.same({ "1 of 2 titles were invalid and skipped",
                    "titles[0] (no ASIN): skipped: must be an object" }, res.json.warnings)
    end)

    it("takes a gzip body", function()
      local c = h.login(srv, "gzip@example.com")
      local items = small(25, 112)
      local res = import(srv, token_for(c), nil, {
        raw = host.gzip.compress(body_of(items)), headers = { ["Content-Encoding"] = "gzip" },
      })
      assert.same(200, res.status)
      assert.same(25, res.json.imported)
      assert.same(25, count_active(c.user.id))
    end)

    it("round-trips 1,000 realistic titles field by field through GET /api/library", function()
      local c = h.login(srv, "roundtrip@example.com")
      local items = lib.generate(1000, { seed = 113, salt = 113 })
      local res = import(srv, token_for(c), items)
      assert.same(200, res.status)
      local got, cursor = {}, nil
      repeat
        local page = c:get("/api/library?limit=200" .. (cursor and ("&cursor=" .. cursor) or ""))
        assert.same(200, page.status)
        for _, e in ipairs(page.json.items) do got[e.asin] = e end
        cursor = page.json.nextCursor ~= null and page.json.nextCursor or nil
      until not cursor
      local n = 0
      for _, it in ipairs(items) do
        n = n + 1
        local e = got[it.asin]
        local function opt(v) if v == nil then return null end return v end
        assert.same({
          asin = it.asin, source = it.source, listeningProgress = it.listeningProgress,
          personalRating = it.personalRating == 0 and null or it.personalRating,
          dateAdded = it.dateAdded, hidden = false,
          title = {
            asin = it.asin, title = it.title, subtitle = opt(it.subtitle), authors = it.authors,
            narrators = it.narrators, seriesName = opt(it.seriesName),
            seriesPosition = opt(it.seriesPosition), seriesSequence = opt(it.seriesSequence),
            duration = it.duration,
            coverImageUrl = it.coverImageUrl, summary = it.summary, rating = it.rating,
            ratingCount = it.ratingCount, publisher = it.publisher, releaseDate = it.releaseDate,
            language = it.language, categories = it.categories,
          },
        }, e)
      end
      assert.same(1000, n)
    end)

    it("imports 10,000 titles in one request", function()
      local c = h.login(srv, "ten-thousand@example.com")
      local items = lib.generate(10000, { seed = 114, salt = 114 })
      local res = import(srv, token_for(c), items)
      assert.same(200, res.status)
      assert.same({ 10000, 10000 }, { res.json.imported, res.json.newToCatalog })
      assert.same(10000, count_active(c.user.id))
      -- and an unchanged re-sync writes nothing
      local before = one("SELECT max(updated_at) AS at FROM title_catalog").at
      local again = import(srv, token_for(c), items)
      assert.same(200, again.status)
      assert.same(0, again.json.newToCatalog)
      assert.same(before, one("SELECT max(updated_at) AS at FROM title_catalog").at)
    end)

    it("refuses more titles than sync_max_titles, and a body over max_import_bytes", function()
      local limited = h.start_server{ env = { SHELFSYNC_SYNC_MAX_TITLES = "5",
                                              SHELFSYNC_MAX_IMPORT_BYTES = "20000" } }
      local ok, e = pcall(function()
        local c = h.login(limited, "limits@example.com")
        local token = token_for(c)
        local res = import(limited, token, small(6, 115))
        assert.same({ status = 413, error = "too_many_titles" }, err(res))
        res = import(limited, token, nil, { raw = '{"titles":[' .. string.rep(" ", 20001) .. ']}' })
        assert.same(413, res.status)
        assert.same(200, import(limited, token, small(5, 115)).status)
      end)
      limited:stop()
      assert(ok, e)
    end)

    it("answers a CORS preflight from any origin: the token alone authorises", function()
      local res = assert(h.request("OPTIONS", srv.url .. "/api/sync/import", { headers = {
        Origin = "https://www.audible.co.uk",
        ["Access-Control-Request-Method"] = "POST",
        ["Access-Control-Request-Headers"] = "authorization, content-type, content-encoding",
      } }))
      assert.same(204, res.status)
      assert.same("*", res.headers["access-control-allow-origin"])
      assert.matches("Authorization", res.headers["access-control-allow-headers"])
    end)
  end)

  describe("the upload token", function()
    local c

    setup(function()
      c = h.login(srv, "tokens@example.com")
    end)

    -- (`code`: the import's 401s spell a used token's `error` in words; routes/sync.lua)
    local function invalid(res)
      return { status = res.status, error = res.json and res.json.code,
               www = res.headers["www-authenticate"] ~= nil }
    end

    it("is required", function()
      assert.same({ status = 401, error = "token_invalid", www = true },
        invalid(import(srv, nil, small(1, 120))))
    end)

    it("cannot be replayed once used", function()
      local token = token_for(c)
      assert.same(200, import(srv, token, small(2, 121)).status)
      local res = import(srv, token, small(2, 121))
      assert.same({ status = 401, error = "token_already_used", www = true }, invalid(res))
      assert.same("token already used", res.json.error)
    end)

    it("expires when its row's expires_at has passed, even while the JWT's exp has not", function()
      local token = token_for(c)
      assert(h.db().query([[UPDATE sync_tokens SET created_at = now() - interval '1 minute',
            expires_at = now() - interval '1 second' WHERE jti = $1]],
        claims_of(token).jti))
      assert.same({ status = 401, error = "token_expired", www = true },
        invalid(import(srv, token, small(1, 131))))
    end)

    it("expires after sync_token_ttl_s", function()
      local short = h.start_server{ env = { SHELFSYNC_SYNC_TOKEN_TTL_S = "1" } }
      local ok, e = pcall(function()
        local u = h.login(short, "expiry@example.com")
        local token = token_for(u)
        local claims = claims_of(token)
        assert.same(1, claims.exp - claims.iat)
        h.wait_until(function() return os.time() >= claims.exp + 1 end, 5, "token expiry")
        assert.same({ status = 401, error = "token_expired", www = true },
          invalid(import(short, token, small(1, 122))))
      end)
      short:stop()
      assert(ok, e)
    end)

    it("is refused with a forged signature", function()
      local token = token_for(c)
      local head, payload, sig = token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
      local flipped = (sig:sub(1, 1) == "A" and "B" or "A") .. sig:sub(2)
      assert.same({ status = 401, error = "token_invalid", www = true },
        invalid(import(srv, head .. "." .. payload .. "." .. flipped, small(1, 123))))
      -- the real token was not consumed
      assert.same(200, import(srv, token, small(1, 123)).status)
    end)

    it("is refused with alg none", function()
      local token = token_for(c)
      local payload = token:match("^[^.]+%.([^.]+)%.")
      local none = b64url('{"alg":"none","typ":"JWT"}') .. "." .. payload .. "."
      assert.same({ status = 401, error = "token_invalid", www = true },
        invalid(import(srv, none, small(1, 124))))
    end)

    it("is refused when signed with another secret", function()
      local claims = claims_of(token_for(c))
      local other = host.jwt.sign_hs256(claims, "another-secret-0123456789abcdef0123456789")
      assert.same({ status = 401, error = "token_invalid", www = true },
        invalid(import(srv, other, small(1, 125))))
    end)

    it("is refused for another audience", function()
      local claims = claims_of(token_for(c))
      claims.aud = "shelfsync-session"
      assert.same({ status = 401, error = "token_invalid", www = true },
        invalid(import(srv, host.jwt.sign_hs256(claims, SECRET), small(1, 126))))
    end)

    it("of user A never touches user B's library", function()
      local a = h.login(srv, "owner-a@example.com")
      local b = h.login(srv, "owner-b@example.com")
      assert.same(200, import(srv, token_for(b), small(3, 127)).status)
      local b_before = library_of(b.user.id)
      -- A's genuine token imports into A's library only
      assert.same(200, import(srv, token_for(a), small(4, 128)).status)
      assert.same(b_before, library_of(b.user.id))
      assert.same(4, count_active(a.user.id))
      -- A's jti under B's user id, validly signed: the row says A, so it is refused
      local claims = claims_of(token_for(a))
      claims.sub = b.user.id
      assert.same({ status = 401, error = "token_invalid", www = true },
        invalid(import(srv, host.jwt.sign_hs256(claims, SECRET), small(1, 129))))
      -- a jti the server never issued
      claims = claims_of(token_for(b))
      claims.jti = host.crypto.uuid()
      assert.same({ status = 401, error = "token_invalid", www = true },
        invalid(import(srv, host.jwt.sign_hs256(claims, SECRET), small(1, 129))))
      assert.same(b_before, library_of(b.user.id))
    end)

    it("sent twice at once yields exactly one import", function()
      local u = h.login(srv, "twice@example.com")
      local token = token_for(u)
      local body = body_of(small(300, 130))
      local res = parallel_imports(srv, { { token = token, body = body }, { token = token, body = body } })
      local statuses = { res[1].status, res[2].status }
      table.sort(statuses)
      assert.same({ 200, 401 }, statuses)
      local refused = res[1].status == 401 and res[1] or res[2]
      assert.same("token_already_used", refused.json.code)
      assert.same(1, one([[SELECT count(*)::int AS n FROM sync_history
                           WHERE user_id = $1 AND success]], u.user.id).n)
      assert.same(300, count_active(u.user.id))
    end)
  end)

  describe("concurrent syncs", function()
    it("of two users with overlapping catalogs never deadlock or lose a row (20 rounds)", function()
      local a = h.login(srv, "concurrent-a@example.com")
      local b = h.login(srv, "concurrent-b@example.com")
      local shared = lib.generate(200, { seed = 140, salt = 140 })
      local only_a = lib.generate(50, { seed = 141, salt = 141 })
      local only_b = lib.generate(50, { seed = 142, salt = 142 })
      for round = 1, 20 do
        local pa, pb = {}, {}
        for i, it in ipairs(shared) do
          local x, y = lib.copy(it), lib.copy(it)
          x.rating, y.rating = (round % 5) + 0.1, (round % 5) + 0.2
          -- different items know different arrays, so each sync runs several update groups
          if i % 2 == 0 then x.authors = {} else y.authors = {} end
          if i % 3 == 0 then x.categories = {} end
          if i % 5 == 0 then y.narrators = {} end
          pa[#pa + 1], pb[#pb + 1] = x, y
        end
        for _, it in ipairs(only_a) do pa[#pa + 1] = it end
        for _, it in ipairs(only_b) do pb[#pb + 1] = it end
        local res = parallel_imports(srv, {
          { token = token_for(a), body = body_of(pa) },
          { token = token_for(b), body = body_of(pb) },
        })
        assert.same({ 200, 200 }, { res[1].status, res[2].status }, "round " .. round)
      end
      assert.same(250, count_active(a.user.id))
      assert.same(250, count_active(b.user.id))
      local asins = {}
      for _, it in ipairs(shared) do asins[#asins + 1] = it.asin end
      for _, it in ipairs(only_a) do asins[#asins + 1] = it.asin end
      for _, it in ipairs(only_b) do asins[#asins + 1] = it.asin end
      assert.same(300, one("SELECT count(*)::int AS n FROM title_catalog WHERE asin = ANY($1::text[])",
        asins).n)
      -- no name was lost on the way: every shared title still has its authors
      assert.same(0, one([[SELECT count(*)::int AS n FROM title_catalog
                           WHERE asin = ANY($1::text[]) AND cardinality(authors) = 0]], asins).n)
      assert.is_nil((srv:log() or ""):find("deadlock", 1, true))
    end)

    it("runs the import again when its transaction fails with SQLSTATE 40P01, and answers 200", function()
      local c = h.login(srv, "retry-40p01@example.com")
      -- A real 40P01 from the server on the first attempt only (a sequence is not rolled
      -- back with the failed transaction).
      h.rows("CREATE SEQUENCE spec_retry_seq")
      h.rows([[CREATE FUNCTION spec_fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                 IF nextval('spec_retry_seq') = 1 THEN
                   RAISE EXCEPTION 'spec: forced lock failure' USING ERRCODE = '40P01';
                 END IF;
                 RETURN NEW;
               END $$]])
      h.rows([[CREATE TRIGGER spec_fail_once BEFORE INSERT ON sync_history
               FOR EACH ROW EXECUTE FUNCTION spec_fail_once()]])
      finally(function()
        h.rows("DROP TRIGGER spec_fail_once ON sync_history")
        h.rows("DROP FUNCTION spec_fail_once()")
        h.rows("DROP SEQUENCE spec_retry_seq")
      end)
      local res = import(srv, token_for(c), lib.generate(5, { seed = 150, salt = 150 }))
      assert.same({ 200, 5 }, { res.status, res.json and res.json.imported })
      assert.same({ 2, 5 }, { one("SELECT last_value::int AS n FROM spec_retry_seq").n,
                              count_active(c.user.id) })
      assert.matches("retried after: database error: spec: forced lock failure (SQLSTATE 40P01)",
        srv:log(), 1, true)
    end)
  end)

  describe("sync history", function()
    it("records failed attempts with their reason, outside the failed transaction", function()
      local c = h.login(srv, "history-failures@example.com")
      local token = token_for(c)
      assert.same(422, import(srv, token, { { asin = "short", title = "t", source = "LIBRARY" } }).status)
      assert.same(200, import(srv, token, small(2, 150)).status)
      assert.same(401, import(srv, token, small(2, 150)).status)
      local hist = rows([[SELECT success, error_message, warnings, titles_imported
                          FROM sync_history WHERE user_id = $1 ORDER BY synced_at]], c.user.id)
      assert.same({
        { success = false, error_message = "none of the 1 titles is valid; nothing was imported",
          warnings = { "titles[0].asin: must be an ASIN: 10 letters or digits, or 13 digits" },
          titles_imported = 0 },
        { success = true, error_message = null, warnings = {}, titles_imported = 2 },
        { success = false, error_message = "this sync token was already used; start a new sync",
          warnings = {}, titles_imported = 0 },
      }, hist)
    end)

    it("lists the newest syncs first, 5 by default and at most 100", function()
      local c = h.login(srv, "history-list@example.com")
      for i = 1, 7 do   -- each sync a superset of the previous one (same seed)
        assert.same(200, import(srv, token_for(c), small(i, 160)).status)
      end
      local res = c:get("/api/sync/history")
      assert.same(200, res.status)
      assert.same(5, #res.json)
      assert.same({ 7, 6, 5, 4, 3 }, {
        res.json[1].titlesImported, res.json[2].titlesImported, res.json[3].titlesImported,
        res.json[4].titlesImported, res.json[5].titlesImported })
      local first = res.json[1]
      local row = one([[SELECT id, synced_at FROM sync_history WHERE user_id = $1
                        ORDER BY synced_at DESC LIMIT 1]], c.user.id)
      assert.same({ id = row.id, syncedAt = row.synced_at, titlesImported = 7, newToCatalog = 1,
                    libraryCount = first.libraryCount, wishlistCount = 7 - first.libraryCount,
                    warnings = {}, success = true, errorMessage = null }, first)
      assert.same(7, #c:get("/api/sync/history?limit=100").json)
      assert.same(2, #c:get("/api/sync/history?limit=2").json)
    end)

    it("answers 400 naming the parameter for a bad limit", function()
      local c = h.login(srv, "history-limit@example.com")
      for _, bad in ipairs({ "0", "101", "abc", "2.5" }) do
        local res = c:get("/api/sync/history?limit=" .. bad)
        assert.same({ status = 400, error = "invalid_parameter" }, err(res))
        assert.same("limit", res.json.details[1].path)
      end
    end)

    it("shows only the signed-in user's syncs", function()
      local a = h.login(srv, "history-a@example.com")
      local b = h.login(srv, "history-b@example.com")
      assert.same(200, import(srv, token_for(a), small(2, 170)).status)
      assert.same({}, b:get("/api/sync/history").json)
      assert.same(1, #a:get("/api/sync/history").json)
    end)
  end)

  describe("cleanup", function()
    local function seed_tokens(user_id)
      for _, age in ipairs({ 25, 23 }) do
        assert(h.db().query([[
          INSERT INTO sync_tokens (jti, user_id, created_at, expires_at)
          VALUES ($1, $2, now() - make_interval(hours => $3) - interval '15 minutes',
                  now() - make_interval(hours => $3))]], host.crypto.uuid(), user_id, age))
      end
    end

    local function ages(user_id)
      local out = {}
      for _, r in ipairs(rows([[SELECT round(extract(epoch FROM now() - expires_at) / 3600)::int AS h
                                FROM sync_tokens WHERE user_id = $1 AND NOT used ORDER BY 1]], user_id)) do
        out[#out + 1] = r.h
      end
      return out
    end

    it("deletes tokens expired for more than 24 hours when `shelfsync cleanup` runs", function()
      local c = h.login(srv, "cleanup-cli@example.com")
      seed_tokens(c.user.id)
      token_for(c)
      local cmd = string.format("cd %s && env DATABASE_URL=%s SHELFSYNC_SECRET=%s %s cleanup 2>&1",
        h.shell_quote(h.root), h.shell_quote(os.getenv("DATABASE_URL")), h.shell_quote(SECRET),
        h.shell_quote(h.binary))
      local code, out = h.run(cmd)
      assert(code == 0, out)
      assert.same({ 0, 23 }, ages(c.user.id))
    end)

    it("deletes them from the server's housekeeping timer too", function()
      local timer = h.start_server{ env = { SHELFSYNC_CLEANUP_INTERVAL_S = "1" } }
      local ok, e = pcall(function()
        local c = h.login(timer, "cleanup-timer@example.com")
        seed_tokens(c.user.id)
        h.wait_until(function() return #ages(c.user.id) == 1 end, 10, "the cleanup timer")
        assert.same({ 23 }, ages(c.user.id))
      end)
      timer:stop()
      assert(ok, e)
    end)
  end)
end)

-- routes/sync.lua's AUDIENCE is the import route's `audience`: the C server checks a token
-- against what the route says before reading the body, so an edit there is what both C and
-- the handler enforce, and the realm of every 401.
describe("The import route's audience", function()
  local EDITED = "shelfsync-edited"
  local srv

  setup(function()
    local text, n = h.read_file(h.root .. "/routes/sync.lua")
      :gsub('\nlocal AUDIENCE = "shelfsync%-sync"\n', '\nlocal AUDIENCE = "' .. EDITED .. '"\n')
    assert(n == 1, "routes/sync.lua no longer defines AUDIENCE as this spec edits it")
    srv = h.start_server{ root = h.temp_root{ ["routes/sync.lua"] = text } }
  end)
  teardown(function() srv:stop() end)

  local function signed_for(aud)
    local now = os.time()
    return host.jwt.sign_hs256({ sub = host.crypto.uuid(), jti = host.crypto.uuid(), aud = aud,
      iat = now, exp = now + 60 }, SECRET)
  end

  -- The head of an import that waits for 100-continue before sending its body: the server
  -- answers at once only when it refuses the request before reading the body.
  local function head(token, length)
    return "POST /api/sync/import HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      .. "Authorization: Bearer " .. token .. "\r\nContent-Length: " .. length
      .. "\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
  end

  it("refuses a token for the old audience before the body, with today's 401 under the edited realm", function()
    local res = h.raw(srv, head(signed_for(AUD), 100000))
    assert.same({ 401 }, res.statuses, res.text)
    assert.is_true(res.closed)
    assert.matches('\r\nWWW%-Authenticate: Bearer realm="shelfsync%-edited", error="invalid_token"\r\n', res.text)
    assert.is_string(res.json.requestId)
    assert.same({ error = "token_invalid", code = "token_invalid", message = "this sync token is not valid",
                  details = {}, requestId = res.json.requestId }, res.json)
  end)

  it("lets a token for the edited audience past the check before the body", function()
    local s = h.raw_connect(srv)
    s:send(head(signed_for(EDITED), 2))
    local first = s:receive("*l")
    s:send("{}")
    local text = s:receive("*a")
    s:close()
    assert.equal("HTTP/1.1 100 Continue", first)
    -- The handler's own check: no such jti, refused with the same realm.
    assert.matches("HTTP/1.1 401", text, 1, true)
    assert.matches('WWW-Authenticate: Bearer realm="shelfsync-edited", error="invalid_token"', text, 1, true)
    assert.matches('"code":"token_invalid"', text, 1, true)
  end)

  it("signs the tokens it issues for the edited audience, and imports with them", function()
    local c = h.login(srv, "audience-edited@example.com")
    local token = token_for(c)
    assert.equal(EDITED, claims_of(token).aud)
    local res = import(srv, token, small(2, 140))
    assert.equal(200, res.status, res.body)
    assert.equal(2, res.json.imported)
  end)
end)
