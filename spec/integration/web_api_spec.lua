-- The endpoints the web app added (issue 11): GET /api/stats, GET /api/library/:asin/lists,
-- GET /auth/providers and the profile in GET /api/me, against the real binary and
-- PostgreSQL; every expected figure is computed here from the generated fixture.
local h = require("spec.support.helpers")
local fx = require("spec.support.library_fixture")

local top = fx.top_counts

-- The owned entries' figures as GET /api/stats states them (fx.owned: synced or added by
-- hand, not hidden).
local function expected_stats(items)
  local owned, years, hours, series = {}, {}, {}, {}
  local finished, started = 0, 0
  for _, it in ipairs(items) do
    if fx.owned(it) then
      owned[#owned + 1] = it
      local y = tonumber(it.dateAdded:sub(1, 4))
      years[y] = (years[y] or 0) + 1
      for _, c in ipairs(it.categories or {}) do
        local e = hours[c] or { name = c, minutes = 0, count = 0 }
        e.minutes, e.count = e.minutes + (it.duration or 0), e.count + 1
        hours[c] = e
      end
      if it.seriesName then
        local s = series[it.seriesName] or { name = it.seriesName, owned = 0, finished = 0 }
        s.owned = s.owned + 1
        if it.listeningProgress == 100 then s.finished = s.finished + 1 end
        series[it.seriesName] = s
      end
      if it.listeningProgress == 100 then finished = finished + 1
      elseif it.listeningProgress > 0 then started = started + 1 end
    end
  end
  local per_year = {}
  for y, n in pairs(years) do per_year[#per_year + 1] = { year = y, count = n } end
  table.sort(per_year, function(a, b) return a.year < b.year end)
  local by_cat = {}
  for _, e in pairs(hours) do
    -- Hours to one decimal, rounded half up, in tenths with integers.
    by_cat[#by_cat + 1] = { name = e.name, tenths = (e.minutes * 10 + 30) // 60, count = e.count }
  end
  table.sort(by_cat, function(a, b)
    if a.tenths ~= b.tenths then return a.tenths > b.tenths end
    return fx.collate_less(a.name, b.name)
  end)
  while #by_cat > 10 do by_cat[#by_cat] = nil end
  local by_series = {}
  for _, s in pairs(series) do by_series[#by_series + 1] = s end
  table.sort(by_series, function(a, b)
    if a.owned ~= b.owned then return a.owned > b.owned end
    return fx.collate_less(a.name, b.name)
  end)
  while #by_series > 10 do by_series[#by_series] = nil end
  return {
    addedPerYear = per_year,
    hoursByCategory = by_cat,
    topAuthors = top(owned, function(it) return it.authors end, 10),
    topNarrators = top(owned, function(it) return it.narrators end, 10),
    progress = { finished = finished, inProgress = started, notStarted = #owned - finished - started },
    seriesCompletion = by_series,
  }
end

describe("web app endpoints", function()
  local srv, pg, alice, bob, anon, items

  setup(function()
    local w = h.fresh_world{ "alice", "bob" }
    srv, pg, alice, bob, anon = w.srv, w.pg, w.alice, w.bob, w.anon
    items = fx.generate{ count = 600, seed = 31, asin_prefix = "S1" }
    fx.insert(pg, alice.user.id, items)
    fx.insert_removed(pg, alice.user.id, fx.generate{ count = 20, seed = 32, asin_prefix = "S9" })
    -- Bob owns Alice's first 40 titles (same seed): her lists must never show for him.
    fx.insert(pg, bob.user.id, fx.generate{ count = 40, seed = 31, asin_prefix = "S1" })
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  describe("GET /api/stats", function()
    it("draws the owned library: years, hours by category, tops, progress, series", function()
      local want = expected_stats(items)
      local res = alice:get("/api/stats")
      assert.are.equal(200, res.status)
      local s = res.json
      assert.are.same(want.addedPerYear, s.addedPerYear)
      assert.are.same(want.topAuthors, s.topAuthors)
      assert.are.same(want.topNarrators, s.topNarrators)
      assert.are.same(want.progress, s.progress)
      assert.are.same(want.seriesCompletion, s.seriesCompletion)
      local got = {}
      for i, c in ipairs(s.hoursByCategory) do
        got[i] = { name = c.name, tenths = math.floor(c.hours * 10 + 0.5), count = c.count }
      end
      assert.are.same(want.hoursByCategory, got)
    end)

    it("counts titles added by hand and leaves hidden ones out", function()
      local dave = h.login(srv, "dave@example.com", "Dave")
      local mine = fx.generate{ count = 300, seed = 33, asin_prefix = "S5" }
      fx.insert_manual_and_hidden(pg, dave, mine)
      local res = dave:get("/api/stats")
      assert.are.equal(200, res.status)
      local want, s = expected_stats(mine), res.json
      local years = 0
      for _, y in ipairs(s.addedPerYear) do years = years + y.count end
      local owned = 0
      for _, it in ipairs(mine) do if fx.owned(it) then owned = owned + 1 end end
      assert.are.equal(owned, years)
      assert.are.same(want.addedPerYear, s.addedPerYear)
      assert.are.same(want.progress, s.progress)
      assert.are.same(want.topAuthors, s.topAuthors)
      assert.are.same(want.seriesCompletion, s.seriesCompletion)
    end)

    it("answers empty pictures for an empty library", function()
      local carol = h.login(srv, "carol@example.com", "Carol")
      local res = carol:get("/api/stats")
      assert.are.equal(200, res.status)
      assert.are.same({ finished = 0, inProgress = 0, notStarted = 0 }, res.json.progress)
      for _, key in ipairs{ "addedPerYear", "hoursByCategory", "topAuthors", "topNarrators", "seriesCompletion" } do
        assert.is_truthy(res.body:find('"' .. key .. '":[]', 1, true), key)
      end
    end)

    it("answers 304 to If-None-Match, and 401 without a session", function()
      local first = alice:get("/api/stats")
      assert.are.equal(304, alice:get("/api/stats", { headers = { ["If-None-Match"] = first.headers["etag"] } }).status)
      assert.are.same({ status = 401, error = "unauthenticated" }, h.error_of(anon:get("/api/stats")))
    end)
  end)

  describe("GET /api/library/:asin/lists", function()
    local owned_asin, other_asin

    setup(function()
      for _, it in ipairs(items) do
        if it.source == "LIBRARY" then
          if not owned_asin then owned_asin = it.asin elseif not other_asin then other_asin = it.asin break end
        end
      end
    end)

    it("names the lists and tier lists holding the title, by title, with position and tier", function()
      local l1 = alice:post("/api/lists", { title = "Zebra picks", items = { { asin = other_asin }, { asin = owned_asin } } })
      assert.are.equal(201, l1.status, l1.body)
      local l2 = alice:post("/api/lists", { title = "Autumn", visibility = "PUBLIC", items = { { asin = owned_asin } } })
      assert.are.equal(201, l2.status, l2.body)
      assert.are.equal(201, alice:post("/api/lists", { title = "Without it", items = { { asin = other_asin } } }).status)
      local t = alice:post("/api/tierlists", { title = "Best of",
        assignments = { { asin = owned_asin, tier = "A", position = 1 } } })
      assert.are.equal(201, t.status, t.body)
      local res = alice:get("/api/library/" .. owned_asin:lower() .. "/lists")
      assert.are.equal(200, res.status, res.body)
      assert.are.same({
        lists = {
          { id = l2.json.id, title = "Autumn", visibility = "PUBLIC", position = 1 },
          { id = l1.json.id, title = "Zebra picks", visibility = "PRIVATE", position = 2 },
        },
        tierLists = { { id = t.json.id, title = "Best of", visibility = "PRIVATE", tier = "A" } },
      }, res.json)
    end)

    it("answers empty lists for a title in no list, 404 for a title not in the library, 400 for a bad ASIN", function()
      local res = alice:get("/api/library/" .. items[#items].asin .. "/lists")
      assert.are.equal(200, res.status)
      assert.is_truthy(res.body:find('"lists":[]', 1, true))
      assert.is_truthy(res.body:find('"tierLists":[]', 1, true))
      local bobs = bob:get("/api/library/" .. owned_asin .. "/lists")
      assert.are.equal(200, bobs.status)
      assert.are.same({ lists = {}, tierLists = {} }, bobs.json)
      assert.are.same({ status = 404, error = "not_found" }, h.error_of(bob:get("/api/library/S900000001/lists")))
      assert.are.same({ status = 404, error = "not_found" }, h.error_of(alice:get("/api/library/ZZ00000000/lists")))
      assert.are.same({ status = 400, error = "invalid_parameter" }, h.error_of(alice:get("/api/library/short/lists")))
      assert.are.same({ status = 401, error = "unauthenticated" }, h.error_of(anon:get("/api/library/" .. owned_asin .. "/lists")))
    end)
  end)

  describe("GET /auth/providers and the profile in GET /api/me", function()
    it("says which sign-ins the server offers", function()
      local res = anon:get("/auth/providers")
      assert.are.equal(200, res.status)
      assert.are.same({ google = false, devLogin = true }, res.json)
      local off = h.start_server{ env = { SHELFSYNC_DEV_LOGIN = "0", SHELFSYNC_GOOGLE_CLIENT_ID = "id.apps",
        SHELFSYNC_GOOGLE_CLIENT_SECRET = "shh" } }
      local other = h.request("GET", off.url .. "/auth/providers")
      off:stop()
      assert.are.same({ google = true, devLogin = false }, other.json)
    end)

    it("answers the handle and the profile's visibility", function()
      local dora = h.login(srv, "dora@example.com", "Dora")
      assert.are.same({ username = h.null, visibility = "PRIVATE" }, dora:get("/api/me").json.profile)
      assert.are.equal(200, dora:put("/api/users/me/username", { username = "Dora_Reads" }).status)
      assert.are.same({ username = "Dora_Reads", visibility = "PUBLIC" }, dora:get("/api/me").json.profile)
    end)
  end)
end)
