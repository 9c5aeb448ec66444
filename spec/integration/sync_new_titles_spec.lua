-- New catalog titles of a sync (issue 16: inserted column-wise, name lists as array
-- literals): what reaches title_catalog for awkward names, placeholders and empty lists,
-- and two syncs racing to insert the same new titles. Real server and database.
local h = require("spec.support.helpers")
local lib = require("spec.fixtures.library")

local json = h.host.json

local function item(asin, fields)
  local it = { asin = asin, source = "LIBRARY", title = "Title " .. asin }
  for k, v in pairs(fields or {}) do it[k] = v end
  return it
end

local function stored(asin)
  return h.one([[SELECT title, subtitle, series_name, series_position::text AS series_position,
                        duration, rating::text AS rating, publisher, language,
                        release_date::text AS release_date, authors, narrators, categories
                 FROM title_catalog WHERE asin = $1]], asin)
end

-- A name list as a plain Lua list (empty ones too), for assert.same.
local function list(a)
  local out = {}
  for i = 1, #a do out[i] = a[i] end
  return out
end

describe("sync of new catalog titles", function()
  local srv, c

  setup(function()
    h.reset_db()
    srv = h.start_server()
    c = h.login(srv, "new-titles@example.com")
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("stores names with quotes, backslashes, commas, braces, NULL-ish text and unicode as sent", function()
    local odd = { 'He said "hi"', [[back\slash]], [[\"both\"]], "Last, First", "{braces}", "}{",
      "NULL", "null", "Zoë Ørsted", "東京 太郎", "emoji 📚", "'single'", "a; b" }
    local res = h.sync_items(srv, c, {
      item("B0NEWODD01", { authors = odd, narrators = { "NULL" }, categories = { "{}", "," } }),
    })
    assert.same(200, res.status, res.body)
    assert.same(1, res.json.newToCatalog)
    local r = stored("B0NEWODD01")
    assert.same(odd, list(r.authors))
    assert.same({ "NULL" }, list(r.narrators))
    assert.same({ "{}", "," }, list(r.categories))
    assert.same(1, h.one("SELECT cardinality(narrators) AS n FROM title_catalog WHERE asin = $1",
      "B0NEWODD01").n)
    assert.is_false(h.one("SELECT narrators[1] IS NULL AS n FROM title_catalog WHERE asin = $1",
      "B0NEWODD01").n)
  end)

  it("stores '{}' for empty, absent and placeholder-only lists, and keeps placeholders inside real lists", function()
    local res = h.sync_items(srv, c, {
      item("B0NEWLST01", { authors = {}, narrators = json.null }),
      item("B0NEWLST02", { authors = { "Unknown Author" }, narrators = { "Unknown Narrator", "Unknown" },
        categories = { "Unknown" } }),
      item("B0NEWLST03", { authors = { "Real Author", "Unknown Author" } }),
    })
    assert.same(200, res.status, res.body)
    assert.same(3, res.json.newToCatalog)
    for _, asin in ipairs({ "B0NEWLST01", "B0NEWLST02" }) do
      local r = stored(asin)
      assert.same({ {}, {}, {} }, { list(r.authors), list(r.narrators), list(r.categories) }, asin)
    end
    local r = stored("B0NEWLST03")
    assert.same({ "Real Author", "Unknown Author" }, list(r.authors))
    assert.same({}, list(r.categories))
  end)

  it("stores no value for a placeholder in a scalar of a brand-new title, but keeps a placeholder title", function()
    local res = h.sync_items(srv, c, {
      item("B0NEWPLC01", { title = "Unknown Title", subtitle = "Unknown", seriesName = "Unknown",
        publisher = "Unknown", language = "Unknown", summary = "Unknown",
        seriesPosition = 2.5, duration = 61, rating = 4.7, releaseDate = "2020-02-29" }),
    })
    assert.same(200, res.status, res.body)
    local r = stored("B0NEWPLC01")
    assert.same("Unknown Title", r.title)
    assert.same({ json.null, json.null, json.null, json.null },
      { r.subtitle, r.series_name, r.publisher, r.language })
    assert.same({ "2.5", 61, "4.7", "2020-02-29" },
      { r.series_position, r.duration, r.rating, r.release_date })
    -- the placeholder title is blank: the next real one replaces it
    res = h.sync_items(srv, c, { item("B0NEWPLC01", { title = "The Real Title", publisher = "Pub" }) })
    assert.same(200, res.status, res.body)
    r = stored("B0NEWPLC01")
    assert.same({ "The Real Title", "Pub" }, { r.title, r.publisher })
  end)

  it("lets two syncs race for the same new titles: both succeed, one inserts, the other fills", function()
    local a = h.login(srv, "race-a@example.com")
    local b = h.login(srv, "race-b@example.com")
    local base = lib.generate(120, { seed = 160, salt = 160 })
    local pa, pb = {}, {}
    for i, it in ipairs(base) do
      local x, y = lib.copy(it), lib.copy(it)
      -- each knows what the other does not: whichever inserts, the other has to fill
      x.narrators, y.authors = {}, {}
      x.publisher, y.publisher = nil, "Race Pub " .. i
      pa[i], pb[i] = x, y
    end
    -- Both syncs read the catalog before either inserts: the insert statements wait.
    h.rows([[CREATE FUNCTION spec_slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$]])
    h.rows([[CREATE TRIGGER spec_slow_insert BEFORE INSERT ON title_catalog
             FOR EACH STATEMENT EXECUTE FUNCTION spec_slow_insert()]])
    finally(function()
      h.rows("DROP TRIGGER IF EXISTS spec_slow_insert ON title_catalog")
      h.rows("DROP FUNCTION IF EXISTS spec_slow_insert()")
    end)
    local co = {}
    for i, job in ipairs({ { a, pa }, { b, pb } }) do
      local tok = job[1]:post("/api/sync/token", {})
      assert.same(200, tok.status)
      co[i] = { token = tok.json.token, body = json.encode({ titles = job[2] }) }
    end
    local results = h.parallel_imports(srv, co)
    assert.same({ 200, 200 }, { results[1].status, results[2].status })
    local news = { results[1].json.newToCatalog, results[2].json.newToCatalog }
    table.sort(news)
    assert.same({ 0, 120 }, news)
    local asins = {}
    for i, it in ipairs(base) do asins[i] = it.asin end
    local r = h.one([[SELECT count(*)::int AS n,
                             count(*) FILTER (WHERE cardinality(authors) > 0
                               AND cardinality(narrators) > 0)::int AS both_lists,
                             count(*) FILTER (WHERE publisher LIKE 'Race Pub %')::int AS pub
                      FROM title_catalog WHERE asin = ANY($1::text[])]], asins)
    local with_authors = 0
    for _, it in ipairs(base) do
      if #(it.authors or {}) > 0 and #(it.narrators or {}) > 0 then with_authors = with_authors + 1 end
    end
    assert.same({ 120, with_authors, 120 }, { r.n, r.both_lists, r.pub })
    for _, u in ipairs({ a, b }) do
      assert.same(120, h.one([[SELECT count(*)::int AS n FROM user_library
                                WHERE user_id = $1 AND removed_at IS NULL]], u.user.id).n)
    end
  end)
end)
