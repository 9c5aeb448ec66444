-- Library browsing: GET /api/library, /api/library/facets, /api/library/:asin,
-- /api/titles/:asin against the real binary and PostgreSQL.
--
-- Every expected answer is computed here, in Lua, from the generated fixture (filters by
-- plain comparisons, orders by comparators that state the promised order, search by
-- substring tests on the folded text), never by asking the database.
local h = require("spec.support.helpers")
local fx = require("spec.support.library_fixture")

local null = h.null
local format, concat = string.format, table.concat

-- ---- helpers ----

local function url_encode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return format("%%%02X", c:byte()) end))
end

local function query_string(params)
  local keys = {}
  for k in pairs(params) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = url_encode(k) .. "=" .. url_encode(params[k]) end
  return concat(parts, "&")
end

local function copy(t)
  local c = {}
  for k, v in pairs(t or {}) do c[k] = v end
  return c
end

-- Follows nextCursor from the first page to the last; returns the ASINs in order, the
-- totals every page reported, and the number of pages. after_page(n) runs between pages.
local function walk(client, params, after_page)
  local asins, totals, pages = {}, {}, 0
  local cursor
  repeat
    local q = copy(params)
    q.cursor = cursor
    local res = client:get("/api/library?" .. query_string(q))
    assert(res.status == 200, "page " .. (pages + 1) .. ": " .. res.status .. " " .. res.body)
    pages = pages + 1
    totals[#totals + 1] = res.json.total
    for _, e in ipairs(res.json.items) do asins[#asins + 1] = e.asin end
    cursor = res.json.nextCursor
    if cursor == null then cursor = nil end
    if cursor and after_page then after_page(pages) end
    assert(pages < 1000, "pagination does not end")
  until not cursor
  return asins, totals, pages
end

local function asins_of(list)
  local out = {}
  for i, it in ipairs(list) do out[i] = it.asin end
  return out
end

local function filter(list, pred)
  local out = {}
  for _, it in ipairs(list) do if pred(it) then out[#out + 1] = it end end
  return out
end

local function sorted_set(list)
  local c = copy(list)
  table.sort(c)
  return c
end

-- A comparator from sort keys. Key: {get = fn(item) -> value or nil, text = true (compare
-- in library_order), nulls_last = true (items without the value come after the others in
-- both orders)}. order: "asc" | "desc", applied to every key.
local function comparator(keys, order)
  local function less_value(k, va, vb)
    if k.text then return fx.collate_less(va, vb) end
    return va < vb
  end
  return function(a, b)
    for _, k in ipairs(keys) do
      local va, vb = k.get(a), k.get(b)
      if k.nulls_last and (va == nil) ~= (vb == nil) then
        return vb == nil
      end
      if va ~= nil and va ~= vb then
        if order == "asc" then return less_value(k, va, vb) end
        return less_value(k, vb, va)
      end
    end
    return false
  end
end

local function sorted(list, keys, order)
  local c = copy(list)
  table.sort(c, comparator(keys, order))
  return c
end

local function lower_ascii(s) return s and s:lower() end

local function has_element(list, value)
  for _, v in ipairs(list or {}) do
    if lower_ascii(v) == lower_ascii(value) then return true end
  end
  return false
end

-- The text q searches, folded as the database folds it.
local function search_text(it)
  local parts = { it.title, it.subtitle or "" }
  for _, a in ipairs(it.authors) do parts[#parts + 1] = a end
  for _, n in ipairs(it.narrators) do parts[#parts + 1] = n end
  parts[#parts + 1] = it.seriesName or ""
  return fx.fold(concat(parts, " "))
end

local function contains(haystack, needle)
  return haystack:find(needle, 1, true) ~= nil
end

-- A hand-made catalog item for the search and isolation specs.
local function item(asin, title, extra)
  local it = {
    asin = asin, title = title, authors = { "Test Author" }, narrators = { "Test Narrator" },
    categories = { "Testing" }, language = "en", source = "LIBRARY", listeningProgress = 0,
    dateAdded = "2020-01-01T00:00:00.000000Z",
  }
  for k, v in pairs(extra or {}) do it[k] = v end
  return it
end

-- ---- the seeded world ----

local srv, pg
local alice, bob, carol, mallory
local items, ids, removed, by_asin

local function id_of(it) return assert(ids[it.asin], "no entry id for " .. it.asin) end

-- asin -> user_library.id of a user's entries (the tie-breaker of every order).
local function entry_ids(user_id)
  local out = {}
  for _, r in ipairs(assert(pg.query([[
      SELECT c.asin, ul.id FROM user_library AS ul JOIN title_catalog AS c ON c.id = ul.title_id
      WHERE ul.user_id = $1]], user_id))) do
    out[r.asin] = r.id
  end
  return out
end

-- Sort keys as the API documents them; the entry id breaks every tie.
local ID_KEY = { get = id_of }
local TITLE_KEY = { get = function(it) return it.title end, text = true }
local SORT_KEYS = {
  dateAdded = { { get = function(it) return it.dateAdded end }, ID_KEY },
  title = { TITLE_KEY, ID_KEY },
  author = { { get = function(it) return it.authors[1] end, text = true, nulls_last = true },
             TITLE_KEY, ID_KEY },
  releaseDate = { { get = function(it) return it.releaseDate end, nulls_last = true }, ID_KEY },
  rating = { { get = function(it) return it.rating end, nulls_last = true }, ID_KEY },
  duration = { { get = function(it) return it.duration end, nulls_last = true }, ID_KEY },
  progress = { { get = function(it) return it.listeningProgress end }, ID_KEY },
  series = { { get = function(it) return it.seriesName end, text = true, nulls_last = true },
             { get = function(it) return it.seriesPosition end, nulls_last = true },
             TITLE_KEY, ID_KEY },
}
local DEFAULT_ORDER = { dateAdded = "desc", title = "asc", author = "asc", releaseDate = "desc",
  rating = "desc", duration = "asc", progress = "desc", series = "asc" }

local function newest_first(list)
  return asins_of(sorted(list, SORT_KEYS.dateAdded, "desc"))
end

describe("library browsing", function()
  setup(function()
    local w = h.fresh_world{ "alice", "bob", "carol", "mallory" }
    srv, pg, alice, bob, carol, mallory = w.srv, w.pg, w.alice, w.bob, w.carol, w.mallory

    items = fx.generate{ count = 1000, seed = 42, asin_prefix = "B1" }
    -- Twenty more that a later sync no longer listed: they must never show.
    removed = fx.generate{ count = 20, seed = 43, asin_prefix = "B8" }
    local all = copy(items)
    for _, it in ipairs(removed) do all[#all + 1] = it end
    ids = fx.insert(pg, alice.user.id, all)
    assert(pg.query([[UPDATE user_library SET removed_at = now()
                      WHERE user_id = $1 AND title_id IN
                        (SELECT id FROM title_catalog WHERE asin LIKE 'B8%')]], alice.user.id))
    assert(pg.query("ANALYZE"))
    by_asin = {}
    for _, it in ipairs(items) do by_asin[it.asin] = it end

    -- The comparators model ICU's first level only: make sure the data never needs more.
    local primary = {}
    for _, it in ipairs(items) do
      for _, s in ipairs{ it.title, it.authors[1], it.seriesName } do
        local k = fx.collate_key(s)
        assert(primary[k] == nil or primary[k] == s,
          "two fixture strings differ only in case or accents: " .. s .. " / " .. tostring(primary[k]))
        primary[k] = s
      end
    end
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  describe("the fixture", function()
    it("holds the cases the sorts must get right", function()
      local positions, no_author, no_rating, bulk, micro = {}, 0, 0, {}, 0
      for _, it in ipairs(items) do
        if it.seriesPosition then positions[it.seriesPosition] = true end
        if #it.authors == 0 then no_author = no_author + 1 end
        if not it.rating then no_rating = no_rating + 1 end
        bulk[it.dateAdded] = (bulk[it.dateAdded] or 0) + 1
        if not it.dateAdded:find("%.000000Z$") then micro = micro + 1 end
      end
      local shared = 0
      for _, n in pairs(bulk) do if n > 1 then shared = shared + 1 end end
      for _, p in ipairs{ 0, 0.5, 1, 2, 2.5, 3, 10, 14 } do
        assert.is_true(positions[p], "series position " .. p)
      end
      assert.is_true(no_author > 0 and no_rating > 0 and shared > 0 and micro > 0)
    end)
  end)

  describe("GET /api/library", function()
    it("answers the newest 50 entries first, with the total and a cursor", function()
      local res = alice:get("/api/library")
      assert.are.equal(200, res.status)
      assert.are.equal(1000, res.json.total)
      local got = {}
      for i, e in ipairs(res.json.items) do got[i] = e.asin end
      assert.are.same({ table.unpack(newest_first(items), 1, 50) }, got)
      assert.are.equal("string", type(res.json.nextCursor))
    end)

    it("answers each entry as DESIGN.md's ENTRY, the catalog title nested", function()
      local it = items[1]
      local res = alice:get("/api/library/" .. it.asin)
      assert.are.equal(200, res.status)
      local function opt(v) if v == nil then return null end return v end
      assert.are.same({
        asin = it.asin, source = it.source, listeningProgress = it.listeningProgress,
        personalRating = opt(it.personalRating),
        dateAdded = it.dateAdded:sub(1, 23) .. "Z",           -- milliseconds, as every timestamp
        hidden = false,
        title = {
          asin = it.asin, title = it.title, subtitle = opt(it.subtitle), authors = it.authors,
          narrators = it.narrators, seriesName = opt(it.seriesName),
          seriesPosition = opt(it.seriesPosition), seriesSequence = opt(it.seriesSequence),
          duration = opt(it.duration),
          coverImageUrl = it.coverImageUrl, summary = it.summary, rating = opt(it.rating),
          ratingCount = opt(it.ratingCount), publisher = it.publisher,
          releaseDate = opt(it.releaseDate), language = it.language, categories = it.categories,
        },
      }, res.json)
      -- Key order is part of the answer being the same bytes everywhere (see the ETag specs).
      assert.is_truthy(res.body:find('^{"asin":"' .. it.asin .. '","source":'))
    end)

    it("writes empty arrays as [] and absent values as null", function()
      local bare = item("E000000001", "Bare", { authors = {}, narrators = {}, categories = {} })
      bare.language = nil
      fx.insert(pg, mallory.user.id, { bare })
      local res = mallory:get("/api/library/E000000001")
      assert.are.equal(200, res.status)
      assert.is_truthy(res.body:find('"authors":[]', 1, true))
      assert.is_truthy(res.body:find('"narrators":[]', 1, true))
      assert.is_truthy(res.body:find('"categories":[]', 1, true))
      assert.is_truthy(res.body:find('"language":null', 1, true))
    end)

    for _, sort in ipairs{ "dateAdded", "title", "author", "releaseDate", "rating", "duration",
                           "progress", "series" } do
      for _, order in ipairs{ "asc", "desc" } do
        it("walks every entry exactly once in " .. sort .. " " .. order .. " order", function()
          local got, totals = walk(alice, { sort = sort, order = order, limit = 97 })
          assert.are.same(asins_of(sorted(items, SORT_KEYS[sort], order)), got)
          for _, t in ipairs(totals) do assert.are.equal(1000, t) end
        end)
      end
      it("uses " .. DEFAULT_ORDER[sort] .. " as the default order of " .. sort, function()
        local res = alice:get("/api/library?sort=" .. sort .. "&limit=30")
        local want = asins_of(sorted(items, SORT_KEYS[sort], DEFAULT_ORDER[sort]))
        local got = {}
        for i, e in ipairs(res.json.items) do got[i] = e.asin end
        assert.are.same({ table.unpack(want, 1, 30) }, got)
      end)
    end

    it("orders a series by position as a number: 1, 2, 2.5, 3, 10", function()
      local got = walk(alice, { sort = "series", series = "The Stormlight Archive", limit = 200 })
      local positions = {}
      for _, asin in ipairs(got) do
        local p = by_asin[asin].seriesPosition
        if p and positions[#positions] ~= p then positions[#positions + 1] = p end
      end
      assert.are.same({ 1, 2, 2.5, 3, 3.5, 4, 5 }, positions)
      local wot = walk(alice, { sort = "series", series = "the wheel of time", limit = 200 })
      local seen = {}
      for _, asin in ipairs(wot) do
        local p = by_asin[asin].seriesPosition
        if p and seen[#seen] ~= p then seen[#seen + 1] = p end
      end
      assert.are.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 }, seen)
    end)

    local FILTERS = {
      { name = "source LIBRARY", params = { source = "LIBRARY" },
        pred = function(it) return it.source == "LIBRARY" end },
      { name = "source wishlist (any case)", params = { source = "wishlist" },
        pred = function(it) return it.source == "WISHLIST" end },
      { name = "an author, any case", params = { author = "bRANDON sANDERSON" },
        pred = function(it) return has_element(it.authors, "Brandon Sanderson") end },
      { name = "an author with an accent", params = { author = "Friedrich Dürrenmatt" },
        pred = function(it) return has_element(it.authors, "Friedrich Dürrenmatt") end },
      { name = "an author with an apostrophe", params = { author = "patrick o'brian" },
        pred = function(it) return has_element(it.authors, "Patrick O'Brian") end },
      { name = "a narrator", params = { narrator = "michael kramer" },
        pred = function(it) return has_element(it.narrators, "Michael Kramer") end },
      { name = "a series", params = { series = "DISCWORLD" },
        pred = function(it) return it.seriesName == "Discworld" end },
      { name = "a category", params = { category = "epic fantasy" },
        pred = function(it) return has_element(it.categories, "Epic Fantasy") end },
      { name = "a language", params = { language = "DE" },
        pred = function(it) return it.language == "de" end },
      { name = "finished", params = { finished = "true" },
        pred = function(it) return it.listeningProgress == 100 end },
      { name = "unfinished", params = { finished = "false" },
        pred = function(it) return it.listeningProgress < 100 end },
      { name = "progress finished", params = { progress = "finished" },
        pred = function(it) return it.listeningProgress == 100 end },
      { name = "progress in_progress (any case)", params = { progress = "In_Progress" },
        pred = function(it) return it.listeningProgress > 0 and it.listeningProgress < 100 end },
      { name = "progress not_started", params = { progress = "not_started" },
        pred = function(it) return it.listeningProgress == 0 end },
      { name = "progress in_progress, sorted by progress, small pages",
        params = { progress = "in_progress", sort = "progress", order = "asc", limit = 7 },
        pred = function(it) return it.listeningProgress > 0 and it.listeningProgress < 100 end,
        order = { "progress", "asc" } },
      { name = "several at once", params = { narrator = "Kate Reading", source = "LIBRARY", finished = "false" },
        pred = function(it)
          return has_element(it.narrators, "Kate Reading") and it.source == "LIBRARY"
            and it.listeningProgress < 100
        end },
    }
    for _, f in ipairs(FILTERS) do
      it("filters by " .. f.name, function()
        local want = filter(items, f.pred)
        assert.is_true(#want > 0 and #want < #items, "the filter must select something, not everything")
        local got, totals = walk(alice, f.params)
        if f.order then
          assert.are.same(asins_of(sorted(want, SORT_KEYS[f.order[1]], f.order[2])), got)
        else
          assert.are.same(newest_first(want), got)
        end
        assert.are.equal(#want, totals[1])
      end)
    end

    it("matches filter values exactly, not as patterns or prefixes", function()
      for _, params in ipairs{ { author = "Brandon" }, { author = "%" }, { author = "Brandon_Sanderson" },
                               { series = "Disc%" }, { category = "_pic Fantasy" } } do
        local res = alice:get("/api/library?" .. query_string(params))
        assert.are.equal(200, res.status)
        assert.are.equal(0, res.json.total, query_string(params))
      end
    end)

    it("treats an empty parameter as absent", function()
      local res = alice:get("/api/library?q=&author=&source=&sort=&limit=5")
      assert.are.equal(200, res.status)
      assert.are.equal(1000, res.json.total)
    end)

    it("never shows entries a sync removed", function()
      local got = walk(alice, { limit = 200 })
      local removed_set = {}
      for _, it in ipairs(removed) do removed_set[it.asin] = true end
      for _, asin in ipairs(got) do assert.is_nil(removed_set[asin]) end
      assert.are.equal(404, alice:get("/api/library/" .. removed[1].asin).status)
    end)

    it("returns every entry once while new ones are being added", function()
      local base = fx.generate{ count = 300, seed = 7, asin_prefix = "C1" }
      local carol_ids = fx.insert(pg, carol.user.id, base)
      local extra = fx.generate{ count = 200, seed = 8, asin_prefix = "C2" }
      local next_extra = 1
      local got = walk(carol, { limit = 25 }, function()
        -- Between pages: five more entries, dated anywhere (before and after the walk's
        -- position), as a sync landing during the walk would add them.
        fx.insert(pg, carol.user.id, { table.unpack(extra, next_extra, next_extra + 4) })
        next_extra = next_extra + 5
      end)
      assert.is_true(next_extra > 50, "entries were added during the walk")
      local seen = {}
      for _, asin in ipairs(got) do
        assert.is_nil(seen[asin], "returned twice: " .. asin)
        seen[asin] = true
      end
      for asin in pairs(carol_ids) do
        if asin:sub(1, 2) == "C1" then assert.is_true(seen[asin], "missing: " .. asin) end
      end
      -- Entries added behind the position are read later; none ahead of it are: the order holds.
      local dates = {}
      for i, asin in ipairs(got) do
        local it = by_asin[asin]
        if not it then
          for _, e in ipairs(base) do if e.asin == asin then it = e end end
          for _, e in ipairs(extra) do if e.asin == asin then it = e end end
        end
        dates[i] = it.dateAdded
      end
      for i = 2, #dates do assert.is_true(dates[i - 1] >= dates[i]) end
    end)

    describe("search (q)", function()
      local function search(client, q, limit)
        local got = walk(client, { q = q, limit = limit or 200 })
        return got
      end

      it("is accent- and case-insensitive: durrenmatt finds Dürrenmatt", function()
        local want = filter(items, function(it) return contains(search_text(it), "durrenmatt") end)
        assert.is_true(#want > 10)
        -- Literal hits all rank alike, so they come newest first.
        assert.are.same(newest_first(want), search(alice, "durrenmatt"))
        assert.are.same(newest_first(want), search(alice, "DÜRRENMATT"))
      end)

      it("tolerates typos: sandersen finds Sanderson", function()
        local want = filter(items, function(it) return contains(search_text(it), "sanderson") end)
        assert.is_true(#want > 10)
        assert.are.same(sorted_set(asins_of(want)), sorted_set(search(alice, "sandersen")))
      end)

      it("searches narrators and series names too", function()
        local kramer = filter(items, function(it) return contains(search_text(it), "kramer") end)
        assert.is_true(#kramer > 10)
        assert.are.same(newest_first(kramer), search(alice, "Kramer"))
        local wayfarers = filter(items, function(it) return contains(search_text(it), "wayfarers") end)
        assert.is_true(#wayfarers > 3)
        assert.are.same(newest_first(wayfarers), search(alice, "wayfarers"))
      end)

      it("ranks literal matches above fuzzy ones", function()
        -- "murderbot" is in the Murderbot Diaries' series name, and close enough to
        -- "murder" (6 of its 10 trigrams) to find "Murder on the Orient Express" too.
        local literal = filter(items, function(it) return contains(search_text(it), "murderbot") end)
        local got = search(alice, "murderbot")
        assert.is_true(#got > #literal)
        assert.are.same(newest_first(literal), { table.unpack(got, 1, #literal) })
        for i = #literal + 1, #got do
          local text = search_text(by_asin[got[i]])
          assert.is_false(contains(text, "murderbot"))
          assert.is_true(contains(text, "murder"))
        end
      end)

      it("puts the best matches first", function()
        fx.insert(pg, mallory.user.id, {
          item("S000000001", "The Way of Kinks", { dateAdded = "2024-01-01T00:00:00.000000Z" }),
          item("S000000002", "The Way of Kings", { dateAdded = "2020-01-01T00:00:00.000000Z" }),
          item("S000000003", "Unrelated Title", { dateAdded = "2025-01-01T00:00:00.000000Z" }),
        })
        local got = search(mallory, "way of kings")
        assert.are.same({ "S000000002", "S000000001" }, got)
      end)

      it("searches %, _, backslash and SQL metacharacters literally", function()
        fx.insert(pg, mallory.user.id, {
          item("M000000001", "100% Pure_Joy"),
          item("M000000002", "1000 Pure Joy"),
          item("M000000003", "Under_score"),
          item("M000000004", [[C:\Path\Book]]),
          item("M000000005", "Robert'); DROP TABLE title_catalog;--"),
        })
        assert.are.same({ "M000000001" }, search(mallory, "%"))
        assert.are.same(sorted_set{ "M000000001", "M000000003", "M000000005" },   -- title_catalog
          sorted_set(search(mallory, "_")))
        assert.are.same({ "M000000004" }, search(mallory, [[\]]))
        assert.are.same("M000000001", search(mallory, "100%")[1])
        assert.are.same({ "M000000005" }, search(mallory, "'); DROP TABLE title_catalog;--"))
        assert.are.same({ "M000000001" }, search(mallory, "e_j"))    -- not "e j": _ is no wildcard
        assert.are.same({}, search(mallory, "zz%zz"))
        assert.is_true(pg.query("SELECT count(*) AS n FROM title_catalog")[1].n > 1000)
      end)

      it("counts every match in total, and pages through them by relevance", function()
        local want = filter(items, function(it) return contains(search_text(it), "pratchett") end)
        local got, totals = walk(alice, { q = "pratchett", limit = 33 })
        assert.are.same(newest_first(want), got)
        assert.are.equal(#want, totals[1])
      end)

      it("combines q with filters and another sort", function()
        local want = filter(items, function(it)
          return contains(search_text(it), "sanderson") and it.source == "LIBRARY"
        end)
        local got = walk(alice, { q = "sanderson", source = "LIBRARY", sort = "title", limit = 60 })
        assert.are.same(asins_of(sorted(want, SORT_KEYS.title, "asc")), got)
      end)
    end)

    describe("cursors", function()
      local function first_cursor(params)
        local res = alice:get("/api/library?" .. query_string(params))
        assert.are.equal(200, res.status)
        return res.json.nextCursor
      end

      local function assert_bad_cursor(res)
        assert.are.equal(400, res.status)
        assert.are.equal("invalid_parameter", res.json.error)
        assert.are.equal("cursor", res.json.details[1].path)
      end

      it("refuses a cursor with any byte changed", function()
        local cursor = first_cursor{ limit = 10 }
        for _, pos in ipairs{ 1, 12, #cursor // 2, #cursor - 1 } do
          local ch = cursor:sub(pos, pos)
          local tampered = cursor:sub(1, pos - 1) .. (ch == "A" and "B" or "A") .. cursor:sub(pos + 1)
          assert_bad_cursor(alice:get("/api/library?limit=10&cursor=" .. tampered))
        end
      end)

      it("refuses garbage and truncated cursors", function()
        local cursor = first_cursor{ limit = 10 }
        for _, bad in ipairs{ "x", "!!!!", cursor:sub(1, 20), cursor .. "AA", ("A"):rep(300) } do
          assert_bad_cursor(alice:get("/api/library?limit=10&cursor=" .. url_encode(bad)))
        end
      end)

      it("refuses a cursor of another sort or order", function()
        local cursor = first_cursor{ sort = "title", limit = 10 }
        assert_bad_cursor(alice:get("/api/library?sort=rating&cursor=" .. cursor))
        assert_bad_cursor(alice:get("/api/library?sort=title&order=desc&cursor=" .. cursor))
        assert.are.equal(200, alice:get("/api/library?sort=title&cursor=" .. cursor).status)
      end)

      it("resumes exactly after keys that differ in the last digit or microsecond", function()
        local erin = h.login(srv, "erin@example.com", "Erin")
        local close = {}
        for i = 1, 12 do
          close[i] = item(format("K%09d", i), "Close " .. i, {
            rating = 4.123456789012345 + ((i * 7) % 12) * 2 ^ -50,   -- neighbouring doubles
            dateAdded = format("2021-06-01T12:00:00.0000%02dZ", (i * 5) % 12),
          })
        end
        fx.insert(pg, erin.user.id, close)
        for _, it in ipairs(close) do   -- the fixture's JSON keeps 14 digits: set all 17
          assert(pg.query("UPDATE title_catalog SET rating = $2 WHERE asin = $1", it.asin, it.rating))
        end
        for asin, id in pairs(entry_ids(erin.user.id)) do ids[asin] = id end
        assert.are.same(asins_of(sorted(close, SORT_KEYS.rating, "desc")),
          (walk(erin, { sort = "rating", limit = 1 })))
        assert.are.same(asins_of(sorted(close, SORT_KEYS.dateAdded, "asc")),
          (walk(erin, { sort = "dateAdded", order = "asc", limit = 1 })))
      end)

      it("answers nextCursor null on the last page", function()
        local res = alice:get("/api/library?limit=200&source=WISHLIST&language=de")
        assert.are.equal(200, res.status)
        assert.is_true(res.json.total <= 200)
        assert.are.equal(null, res.json.nextCursor)
      end)
    end)

    describe("bad parameters", function()
      local CASES = {
        { "limit=0", "limit" }, { "limit=10000", "limit" }, { "limit=ten", "limit" },
        { "limit=1.5", "limit" }, { "sort=popularity", "sort" }, { "order=sideways", "order" },
        { "source=SHELF", "source" }, { "finished=maybe", "finished" },
        { "progress=halfway", "progress" }, { "progress=true", "progress" },
        { "sort=relevance", "sort" }, { "q=" .. ("x"):rep(201), "q" },
        { "author=" .. ("x"):rep(201), "author" }, { "colour=red", "colour" },
        { "q=%FF%FE", "q" },
      }
      for _, case in ipairs(CASES) do
        it("answers 400 naming " .. case[2] .. " for " .. case[1]:sub(1, 30), function()
          local res = alice:get("/api/library?" .. case[1])
          assert.are.equal(400, res.status)
          assert.are.equal("invalid_parameter", res.json.error)
          assert.are.equal(case[2], res.json.details[1].path)
          assert.is_truthy(res.json.message:find(case[2], 1, true))
        end)
      end

      it("answers 400 naming asin for a malformed ASIN", function()
        local res = alice:get("/api/library/not-an-asin")
        assert.are.equal(400, res.status)
        assert.are.equal("asin", res.json.details[1].path)
      end)
    end)
  end)

  describe("GET /api/library/facets", function()
    local expected_facet = fx.top_counts

    local function one(v) return v and { v } or {} end

    it("counts authors, narrators, series, categories and languages of the matches", function()
      local want_items = filter(items, function(it) return it.language == "en" and it.source == "LIBRARY" end)
      local res = alice:get("/api/library/facets?language=en&source=LIBRARY")
      assert.are.equal(200, res.status)
      assert.are.same({
        authors = expected_facet(want_items, function(it) return it.authors end, 100),
        narrators = expected_facet(want_items, function(it) return it.narrators end, 100),
        series = expected_facet(want_items, function(it) return one(it.seriesName) end, 100),
        categories = expected_facet(want_items, function(it) return it.categories end, 100),
        languages = expected_facet(want_items, function(it) return one(it.language) end, 100),
        total = #want_items,
      }, res.json)
    end)

    it("narrows as filters are chosen, search included", function()
      local want_items = filter(items, function(it) return contains(search_text(it), "durrenmatt") end)
      local res = alice:get("/api/library/facets?q=durrenmatt&limit=3")
      assert.are.equal(200, res.status)
      assert.are.same(expected_facet(want_items, function(it) return it.narrators end, 3), res.json.narrators)
      assert.are.same(expected_facet(want_items, function(it) return one(it.language) end, 3), res.json.languages)
      assert.are.equal(#want_items, res.json.total)
    end)

    it("answers 400 naming the parameter for a bad limit or a sort", function()
      for _, case in ipairs{ { "limit=0", "limit" }, { "limit=1001", "limit" }, { "sort=title", "sort" } } do
        local res = alice:get("/api/library/facets?" .. case[1])
        assert.are.equal(400, res.status)
        assert.are.equal(case[2], res.json.details[1].path)
      end
    end)
  end)

  describe("user isolation", function()
    local bob_items

    setup(function()
      bob_items = fx.generate{ count = 30, seed = 5, asin_prefix = "D1" }
      -- One title both own: the catalog row is shared, the entries are not.
      local shared = copy(items[2])
      shared.listeningProgress = (items[2].listeningProgress + 37) % 101
      shared.source = "LIBRARY"
      bob_items[#bob_items + 1] = shared
      fx.insert(pg, bob.user.id, bob_items)
    end)

    it("lists only the user's own entries", function()
      local got, totals = walk(bob, { limit = 200 })
      assert.are.same(sorted_set(asins_of(bob_items)), sorted_set(got))
      assert.are.equal(31, totals[1])
    end)

    it("answers 404 for another user's ASIN and the user's own values for a shared one", function()
      local res = bob:get("/api/library/" .. items[1].asin)
      assert.are.equal(404, res.status)
      assert.are.equal("not_found", res.json.error)
      local mine = bob:get("/api/library/" .. items[2].asin)
      assert.are.equal(200, mine.status)
      assert.are.equal(bob_items[#bob_items].listeningProgress, mine.json.listeningProgress)
      assert.are.equal(items[2].listeningProgress, alice:get("/api/library/" .. items[2].asin).json.listeningProgress)
    end)

    it("searches, filters and counts facets in the user's own library only", function()
      local mine = {}
      for _, it in ipairs(bob_items) do mine[it.asin] = true end
      for _, params in ipairs{ { q = "sanderson" }, { q = "durrenmatt" }, { language = "de" },
                               { author = "Terry Pratchett" }, { source = "WISHLIST" } } do
        local got = walk(bob, params)
        for _, asin in ipairs(got) do assert.is_true(mine[asin], asin) end
      end
      local facets = bob:get("/api/library/facets").json
      assert.are.equal(31, facets.total)
      local authors = 0
      for _, a in ipairs(facets.authors) do authors = authors + a.count end
      local want = 0
      for _, it in ipairs(bob_items) do want = want + #it.authors end
      assert.are.equal(want, authors)
    end)

    it("lets any signed-in user read a catalog title", function()
      local res = bob:get("/api/titles/" .. items[1].asin:lower())
      assert.are.equal(200, res.status)
      assert.are.equal(items[1].title, res.json.title)
      assert.are.equal(items[1].asin, res.json.asin)
      assert.are.equal(404, bob:get("/api/titles/Z999999999").status)
    end)

    it("answers 401 without a session", function()
      for _, path in ipairs{ "/api/library", "/api/library/facets", "/api/library/" .. items[1].asin,
                             "/api/titles/" .. items[1].asin } do
        local res = h.request("GET", srv.url .. path)
        assert.are.equal(401, res.status)
        assert.are.equal("unauthenticated", res.json.error)
      end
    end)
  end)

  describe("caching and compression", function()
    it("answers 304 to If-None-Match with the current ETag, private to the user", function()
      for _, path in ipairs{ "/api/library?limit=20", "/api/library/facets",
                             "/api/library/" .. items[3].asin, "/api/titles/" .. items[3].asin } do
        local first = alice:get(path)
        assert.are.equal(200, first.status)
        local tag = first.headers["etag"]
        assert.is_truthy(tag and tag:match('^W/"%x+"$'), path)
        assert.is_truthy(first.headers["cache-control"]:find("private", 1, true))
        local again = alice:get(path, { headers = { ["If-None-Match"] = tag } })
        assert.are.equal(304, again.status, path)
        assert.are.equal("", again.body)
        assert.are.equal(tag, again.headers["etag"])
        local listed = alice:get(path, { headers = { ["If-None-Match"] = 'W/"0000", ' .. tag } })
        assert.are.equal(304, listed.status)
      end
    end)

    it("gives the same ETag from every worker", function()
      local tags = {}
      for _ = 1, 12 do tags[alice:get("/api/library?sort=author&limit=40").headers["etag"]] = true end
      local n = 0
      for _ in pairs(tags) do n = n + 1 end
      assert.are.equal(1, n)
    end)

    it("answers 200 with a new ETag once the data changed", function()
      local first = alice:get("/api/library?limit=5")
      local asin = first.json.items[1].asin
      assert(pg.query([[UPDATE user_library SET listening_progress = (listening_progress + 1) % 101
                        WHERE user_id = $1 AND title_id = (SELECT id FROM title_catalog WHERE asin = $2)]],
        alice.user.id, asin))
      local again = alice:get("/api/library?limit=5", { headers = { ["If-None-Match"] = first.headers["etag"] } })
      assert.are.equal(200, again.status)
      assert.are_not.equal(first.headers["etag"], again.headers["etag"])
      assert(pg.query([[UPDATE user_library SET listening_progress = $3
                        WHERE user_id = $1 AND title_id = (SELECT id FROM title_catalog WHERE asin = $2)]],
        alice.user.id, asin, by_asin[asin].listeningProgress))
    end)

    it("gzips a large answer for a client that accepts it, to the same JSON", function()
      local plain = alice:get("/api/library?limit=50", { decode = false })
      assert.is_nil(plain.headers["content-encoding"])
      local zipped = alice:get("/api/library?limit=50", { decode = false, headers = { ["Accept-Encoding"] = "gzip" } })
      assert.are.equal(200, zipped.status)
      assert.are.equal("gzip", zipped.headers["content-encoding"])
      assert.is_true(#zipped.body < #plain.body / 3)
      assert.are.equal(plain.body, h.host.gzip.decompress(zipped.body))
      assert.are.same(h.host.json.decode(plain.body), h.host.json.decode(h.host.gzip.decompress(zipped.body)))
    end)

    it("leaves an answer under 1 KiB uncompressed", function()
      local res = alice:get("/api/library?limit=1&source=WISHLIST&author=nobody", { decode = false,
        headers = { ["Accept-Encoding"] = "gzip" } })
      assert.are.equal(200, res.status)
      assert.is_true(#res.body < 1024)
      assert.is_nil(res.headers["content-encoding"])
    end)
  end)

  describe("seeded through POST /api/sync/import", function()
    local function import(client, titles)
      local tok = client:post("/api/sync/token", {})
      assert.are.equal(200, tok.status, tok.body)
      local res = h.request("POST", srv.url .. "/api/sync/import", {
        headers = { Authorization = "Bearer " .. tok.json.token }, json = { titles = titles } })
      assert.are.equal(200, res.status, res.body)
      return res.json
    end

    it("browses what a sync imported, and drops what the next sync left out", function()
      local dave = h.login(srv, "dave@example.com", "Dave")
      local batch = fx.generate{ count = 120, seed = 11, asin_prefix = "F1" }
      import(dave, batch)
      for asin, id in pairs(entry_ids(dave.user.id)) do ids[asin] = id end
      local got, totals = walk(dave, { limit = 50 })
      assert.are.same(newest_first(batch), got)
      assert.are.equal(120, totals[1])
      local sample = batch[17]
      local e = dave:get("/api/library/" .. sample.asin).json
      assert.are.equal(sample.title, e.title.title)
      assert.are.same(sample.authors, e.title.authors)
      assert.are.equal(sample.listeningProgress, e.listeningProgress)

      import(dave, { table.unpack(batch, 1, 100) })
      local after = walk(dave, { limit = 200 })
      assert.are.same(newest_first({ table.unpack(batch, 1, 100) }), after)
      assert.are.equal(404, dave:get("/api/library/" .. batch[110].asin).status)
      assert.are.equal(100, dave:get("/api/library/facets").json.total)
    end)
  end)
end)

describe("one statement per library page", function()
  -- In-process: the route's handler with the real database module, counting the
  -- statements it sends (a spy on host.pg.query, which still runs each one).
  local user_id

  setup(function()
    h.reset_db()
    user_id = h.create_user("solo@example.com", "Solo")
    fx.insert(h.db(), user_id, fx.generate{ count = 400, seed = 3, asin_prefix = "G1" })
  end)

  it("reads a page of 200 entries, its total and its cursor with one query", function()
    local routes = dofile(h.root .. "/routes/library.lua")
    local list
    for _, r in ipairs(routes) do
      if r.method == "GET" and r.path == "/api/library" then list = r.handler end
    end
    local real = h.host.pg.query
    local count = 0
    h.host.pg.query = function(...)
      count = count + 1
      return real(...)
    end
    local ok, resp = pcall(list, { req = { headers = {} }, query = { limit = "200", sort = "title" },
                                   user = { id = user_id }, params = {} })
    h.host.pg.query = real
    assert(ok, tostring(resp))
    assert.are.equal(200, resp.status)
    local body = h.host.json.decode(resp.body)
    assert.are.equal(200, #body.items)
    assert.are.equal(400, body.total)
    assert.are.equal(1, count)
  end)
end)
