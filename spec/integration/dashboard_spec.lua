-- GET /api/dashboard against the real binary and PostgreSQL; every expected figure is
-- computed here from the generated fixture.
local h = require("spec.support.helpers")
local fx = require("spec.support.library_fixture")

local null = h.null

local top = fx.top_counts

describe("GET /api/dashboard", function()
  local srv, pg, alice, bob, items

  setup(function()
    local w = h.fresh_world{ "alice", "bob" }
    srv, pg, alice, bob = w.srv, w.pg, w.alice, w.bob
    items = fx.generate{ count = 1000, seed = 21, asin_prefix = "H1" }
    fx.insert(pg, alice.user.id, items)
    fx.insert_removed(pg, alice.user.id, fx.generate{ count = 40, seed = 22, asin_prefix = "H9" })
    -- Bob owns some of the same titles: none of his entries may count for Alice.
    fx.insert(pg, bob.user.id, fx.generate{ count = 50, seed = 21, asin_prefix = "H1" })
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("sums up the library: counts, progress, hours and the top authors, narrators, series", function()
    local owned = {}
    local wishlist, minutes = 0, 0
    local finished, started, fresh = 0, 0, 0
    for _, it in ipairs(items) do
      if it.source == "LIBRARY" then
        owned[#owned + 1] = it
        minutes = minutes + (it.duration or 0)
        if it.listeningProgress == 100 then finished = finished + 1
        elseif it.listeningProgress > 0 then started = started + 1
        else fresh = fresh + 1 end
      else
        wishlist = wishlist + 1
      end
    end
    local res = alice:get("/api/dashboard")
    assert.are.equal(200, res.status)
    local d = res.json
    assert.are.same({ library = #owned, wishlist = wishlist, total = #items }, d.counts)
    assert.are.same({ finished = finished, inProgress = started, notStarted = fresh }, d.progress)
    -- Hours to one decimal, rounded half up: computed in tenths with integers.
    local tenths = (minutes * 10 + 30) // 60
    assert.is_true(math.abs(d.listeningHours - tenths / 10) < 1e-9, d.listeningHours .. " vs " .. tenths / 10)
    assert.are.same(top(owned, function(it) return it.authors end, 5), d.topAuthors)
    assert.are.same(top(owned, function(it) return it.narrators end, 5), d.topNarrators)
    assert.are.same(top(owned, function(it) return { it.seriesName } end, 5), d.topSeries)
    assert.are.same({}, d.recentSyncs)
  end)

  it("lists the last five syncs, newest first, with their figures", function()
    local rows = {
      { "2025-03-01T10:00:00.000Z", 10, 2, 8, 2, { "missing cover for B0X" }, true, nil },
      { "2025-03-02T10:00:00.000Z", 12, 0, 9, 3, {}, true, nil },
      { "2025-03-03T10:00:00.000Z", 0, 0, 0, 0, {}, false, "no valid titles" },
      { "2025-03-04T10:00:00.123Z", 13, 1, 10, 3, { "a", "b" }, true, nil },
      { "2025-03-05T10:00:00.000Z", 14, 1, 11, 3, {}, true, nil },
      { "2025-03-06T10:00:00.000Z", 15, 1, 12, 3, {}, true, nil },
      { "2025-03-07T10:00:00.000Z", 16, 1, 12, 4, {}, true, nil },
    }
    local ids = {}
    for i, r in ipairs(rows) do
      ids[i] = assert(pg.query([[
        INSERT INTO sync_history (user_id, synced_at, titles_imported, new_to_catalog,
                                  library_count, wishlist_count, warnings, success, error_message)
        VALUES ($1, $2::timestamptz, $3, $4, $5, $6, $7, $8, $9) RETURNING id]],
        alice.user.id, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]))[1].id
    end
    assert(pg.query([[INSERT INTO sync_history (user_id, synced_at, titles_imported, success)
                      VALUES ($1, '2030-01-01', 99, true)]], bob.user.id))
    local want = {}
    for i = 7, 3, -1 do
      local r = rows[i]
      want[#want + 1] = {
        id = ids[i], syncedAt = r[1], titlesImported = r[2], newToCatalog = r[3],
        libraryCount = r[4], wishlistCount = r[5], warnings = r[6], success = r[7],
        errorMessage = r[8] == nil and null or r[8],
      }
    end
    local res = alice:get("/api/dashboard")
    assert.are.equal(200, res.status)
    assert.are.same(want, res.json.recentSyncs)
  end)

  it("counts titles added by hand as owned and leaves hidden entries out, as /api/me and the Status filter do", function()
    local dave = h.login(srv, "dave@example.com", "Dave")
    local mine = fx.generate{ count = 300, seed = 23, asin_prefix = "H5" }
    fx.insert_manual_and_hidden(pg, dave, mine)
    local owned, shown = {}, { LIBRARY = 0, MANUAL = 0, WISHLIST = 0 }
    local minutes, progress = 0, { finished = 0, inProgress = 0, notStarted = 0 }
    for _, it in ipairs(mine) do
      if not it.hidden then shown[it.source] = shown[it.source] + 1 end
      if fx.owned(it) then
        owned[#owned + 1] = it
        minutes = minutes + (it.duration or 0)
        local p = it.listeningProgress
        local k = p == 100 and "finished" or p > 0 and "inProgress" or "notStarted"
        progress[k] = progress[k] + 1
      end
    end
    assert.is_true(shown.MANUAL > 0 and shown.WISHLIST > 0 and #owned < #mine, "the fixture mixes sources and hides some")
    local d = dave:get("/api/dashboard").json
    assert.are.same({ library = #owned, wishlist = shown.WISHLIST, total = #owned + shown.WISHLIST }, d.counts)
    assert.are.same(progress, d.progress)
    local tenths = (minutes * 10 + 30) // 60
    assert.is_true(math.abs(d.listeningHours - tenths / 10) < 1e-9, d.listeningHours .. " vs " .. tenths / 10)
    assert.are.same(top(owned, function(it) return it.authors end, 5), d.topAuthors)
    assert.are.same({ library = shown.LIBRARY, wishlist = shown.WISHLIST, manual = shown.MANUAL },
      dave:get("/api/me").json.counts)
    -- The Library tab's Status filter finds as many titles as the dashboard counts.
    for state, key in pairs{ finished = "finished", in_progress = "inProgress", not_started = "notStarted" } do
      local res = dave:get("/api/library?limit=1&source=LIBRARY,MANUAL&progress=" .. state)
      assert.are.equal(progress[key], res.json.total, state)
    end
  end)

  it("answers zeros and empty lists for an empty library", function()
    local carol = h.login(srv, "carol@example.com", "Carol")
    local res = carol:get("/api/dashboard")
    assert.are.equal(200, res.status)
    assert.are.same({ library = 0, wishlist = 0, total = 0 }, res.json.counts)
    assert.are.same({ finished = 0, inProgress = 0, notStarted = 0 }, res.json.progress)
    assert.are.equal(0, res.json.listeningHours)
    for _, key in ipairs{ "topAuthors", "topNarrators", "topSeries", "recentSyncs" } do
      assert.is_truthy(res.body:find('"' .. key .. '":[]', 1, true), key)
    end
  end)

  it("counts only the user's own library and syncs", function()
    local mine = fx.generate{ count = 50, seed = 21, asin_prefix = "H1" }
    local library = 0
    for _, it in ipairs(mine) do if it.source == "LIBRARY" then library = library + 1 end end
    local res = bob:get("/api/dashboard")
    assert.are.equal(200, res.status)
    assert.are.same({ library = library, wishlist = 50 - library, total = 50 }, res.json.counts)
    assert.are.equal(1, #res.json.recentSyncs)
    assert.are.equal(99, res.json.recentSyncs[1].titlesImported)
  end)

  it("answers 304 to If-None-Match until the library changes", function()
    local first = alice:get("/api/dashboard")
    local tag = first.headers["etag"]
    assert.is_truthy(first.headers["cache-control"]:find("private", 1, true))
    assert.are.equal(304, alice:get("/api/dashboard", { headers = { ["If-None-Match"] = tag } }).status)
    assert(pg.query([[UPDATE user_library SET listening_progress = 100
                      WHERE user_id = $1 AND listening_progress = 0 AND source = 'LIBRARY'
                        AND id = (SELECT id FROM user_library WHERE user_id = $1
                                  AND listening_progress = 0 AND source = 'LIBRARY'
                                  AND removed_at IS NULL LIMIT 1)]], alice.user.id))
    local after = alice:get("/api/dashboard", { headers = { ["If-None-Match"] = tag } })
    assert.are.equal(200, after.status)
    assert.are.equal(first.json.progress.finished + 1, after.json.progress.finished)
  end)

  it("answers 401 without a session", function()
    local res = h.request("GET", srv.url .. "/api/dashboard")
    assert.are.equal(401, res.status)
    assert.are.equal("unauthenticated", res.json.error)
  end)
end)
