-- One catalog-field table (lua/sync_rules.lua CATALOG_FIELDS, issue 10): a field added as
-- one row there (and a column) is validated, stored, filled-not-overwritten and shown by
-- the API, with no other file touched. The spec adds a test-only column to the run's
-- database and the row to a private copy of the script tree.
local h = require("spec.support.helpers")

local ROW = '  { json = "testNote", column = "test_note", rule = optional { type = "string", max_len = 20 } },\n'

describe("a catalog field added as one row of sync_rules.CATALOG_FIELDS", function()
  local srv

  setup(function()
    h.reset_db()
    assert(h.db().query("ALTER TABLE title_catalog ADD COLUMN test_note text"))
    local rules = h.read_file(h.root .. "/lua/sync_rules.lua")
    local patched, n = rules:gsub("(_M%.CATALOG_FIELDS = {\n.-\n)(}\n)", "%1" .. ROW:gsub("%%", "%%%%") .. "%2")
    assert(n == 1, "CATALOG_FIELDS not found in lua/sync_rules.lua")
    srv = h.start_server({ root = h.temp_root({ ["lua/sync_rules.lua"] = patched }) })
  end)

  teardown(function()
    if srv then srv:stop() end
    h.reset_db()
    assert(h.db().query("ALTER TABLE title_catalog DROP COLUMN test_note"))
  end)

  local function sync(c, items)
    local token = c:post("/api/sync/token", {}).json.token
    return h.request("POST", srv.url .. "/api/sync/import", { json = { titles = items },
      headers = { Authorization = "Bearer " .. token } })
  end

  it("flows from the sync payload to every API answer, under its rule", function()
    local ann = h.login(srv, "ann@example.com")
    local res = sync(ann, {
      { asin = "B0FIELD001", title = "Noted", source = "LIBRARY", testNote = "hello" },
      { asin = "B0FIELD002", title = "Too long", source = "LIBRARY", testNote = string.rep("x", 21) },
    })
    assert.are.same({ 200, { "titles[1] (B0FIELD002): ignored invalid testNote: must be at most 20 characters" } },
      { res.status, res.json.warnings })
    assert.are.same({ "hello", "hello", h.null },
      { ann:get("/api/library/B0FIELD001").json.title.testNote, ann:get("/api/titles/B0FIELD001").json.testNote,
        ann:get("/api/library/B0FIELD002").json.title.testNote })
    local page = ann:get("/api/library?sort=title&order=asc").json.items
    assert.are.same({ "hello", h.null }, { page[1].title.testNote, page[2].title.testNote })
  end)

  it("fills a blank, never overwrites a value, like every catalog field", function()
    local bob = h.login(srv, "bob@example.com")
    assert.are.equal(200, sync(bob, {
      { asin = "B0FIELD001", title = "Noted", source = "LIBRARY", testNote = "defaced" },
      { asin = "B0FIELD002", title = "Too long", source = "LIBRARY", testNote = "filled" },
    }).status)
    assert.are.same({ { asin = "B0FIELD001", test_note = "hello" }, { asin = "B0FIELD002", test_note = "filled" } },
      h.rows("SELECT asin, test_note FROM title_catalog ORDER BY asin"))
  end)
end)
