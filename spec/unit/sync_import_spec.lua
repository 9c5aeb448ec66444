-- lua/sync_import.lua without a database: what prepare() makes of a payload, and how
-- warnings are capped. The transaction is covered by spec/integration/sync_spec.lua.
local h = require("spec.support.helpers")
local sync_import = require("sync_import")
local errors = require("errors")

local null = h.host.json.null

-- The HTTP error prepare() raises, as {status, code, details}.
local function refusal(body)
  local ok, e = pcall(sync_import.prepare, body)
  assert(not ok, "prepare accepted the body")
  assert(errors.is_http(e), tostring(e))
  return { status = e.status, code = e.code, details = e.details }
end

describe("sync_import.prepare", function()
  it("sorts valid items by ASIN and keeps the LIBRARY copy of a duplicate", function()
    local prep = sync_import.prepare({ titles = {
      { asin = "B000000003", title = "c", source = "WISHLIST" },
      { asin = "B000000001", title = "a", source = "LIBRARY", authors = { "Ann" } },
      { asin = "B000000003", title = "c2", source = "LIBRARY" },
      { asin = "B000000002", title = "b", source = "WISHLIST", listeningProgress = 10,
        personalRating = 0, dateAdded = "2024-01-01" },
    } })
    local titles = {}
    for k = 1, prep.count do titles[k] = prep.item(k).title end
    assert.same({ "B000000001", "B000000002", "B000000003" }, prep.asin)
    assert.same({ "a", "b", "c2" }, titles)
    assert.same({ 1, 3, 2 }, prep.index)
    assert.same({ 3, 2, 1 }, { prep.count, prep.library, prep.wishlist })
    -- mask bits: 1 authors, 2 narrators, 4 categories unknown; 8 progress, 16 rating, 32 date absent
    assert.same({ 2 + 4 + 8 + 16 + 32, 1 + 2 + 4, 1 + 2 + 4 + 8 + 16 + 32 }, prep.mask)
    assert.same(null, prep.item(2).personalRating)
    assert.same(null, prep.rating[2])
    assert.same({ "LIBRARY", "WISHLIST", "LIBRARY" }, prep.source)
    -- present bits (sync_import.PRESENT_FIELDS): title 1, authors 4
    assert.same({ 1 + 4, 1, 1 }, prep.present)
    assert.same({ "titles[2] (B000000003): duplicate of titles[0]; kept this LIBRARY entry" },
      prep.warnings.list)
  end)

  it("skips invalid items with a warning and counts them", function()
    local prep = sync_import.prepare({ titles = {
      { asin = "B000000001", title = "a", source = "LIBRARY" },
      { asin = "B000000002", source = "LIBRARY" },
      42,
    } })
    assert.same({ 1, 2, 3 }, { prep.count, prep.invalid, prep.received })
    assert.same({
      "titles[1] (B000000002): skipped: title: is required",
      "titles[2] (no ASIN): skipped: must be an object",
    }, prep.warnings.list)
  end)

  it("skips a null element as not an object", function()
    local prep = sync_import.prepare({ titles = {
      null, { asin = "B000000001", title = "a", source = "LIBRARY" },
    } })
    assert.same({ 1, 1, 2 }, { prep.count, prep.invalid, prep.received })
    assert.same({ "titles[0] (no ASIN): skipped: must be an object" }, prep.warnings.list)
  end)

  it("refuses a payload without a valid title, naming each problem", function()
    assert.same({ status = 422, code = "no_valid_titles", details = {
      { path = "titles[0].asin", message = "must be an ASIN: 10 letters or digits, or 13 digits" },
      { path = "titles[0].source", message = "is required" },
    } }, refusal({ titles = { { asin = "x", title = "t" } } }))
    assert.same({ status = 422, code = "no_valid_titles", details = {} }, refusal({ titles = {} }))
  end)

  it("refuses a bad envelope with the path of the fault", function()
    assert.same({ status = 422, code = "validation_failed",
                  details = { { path = "titles", message = "is required" } } }, refusal({}))
    assert.same({ status = 422, code = "validation_failed",
                  details = { { path = "titles", message = "must be an array" } } },
      refusal({ titles = "all of them" }))
    assert.same({ status = 422, code = "validation_failed",
                  details = { { path = "", message = "must be an object" } } }, refusal({ 1, 2 }))
  end)

  it("refuses more titles than sync_max_titles", function()
    local saved = host.config.sync_max_titles
    host.config.sync_max_titles = 2
    local ok, e = pcall(refusal, { titles = { {}, {}, {} } })
    host.config.sync_max_titles = saved
    assert(ok, e)
    assert.same({ status = 413, code = "too_many_titles",
                  details = { { path = "titles", message = "must hold at most 2 items" } } }, e)
  end)
end)

describe("sync_import.finish_warnings", function()
  local function warnings(n, extra)
    local w = { list = {}, n = n, extra = extra or 0 }
    for i = 1, n do w.list[i] = "w" .. i end
    return w
  end

  it("puts the head lines first and keeps at most sync_warning_cap lines", function()
    local saved = host.config.sync_warning_cap
    host.config.sync_warning_cap = 3
    local out = sync_import.finish_warnings({ "removed" }, warnings(2), warnings(2, 5))
    host.config.sync_warning_cap = saved
    assert.same({ "removed", "w1", "w2", "... and 7 more warnings not shown" }, out)
  end)

  it("adds no count line when nothing was left out", function()
    assert.same({ "w1" }, sync_import.finish_warnings({}, warnings(1)))
  end)
end)
