-- sql/009_title_search.sql and lua/title_search.lua (issue 16): every catalog title has one
-- search row, in title_search or, between a sync's commit and the move after its answer, in
-- title_search_pending; searches read both, so what they find and how they rank it never
-- depends on where the row is. The sync leaves its new titles pending, the worker that
-- answered moves them, and the cleanup takes what a crash left.
local h = require("spec.support.helpers")

local q = h.rows

local function n(sql, ...) return q(sql, ...)[1].n end

-- Where each title's search row is: {asin = "indexed" | "pending" | "both" | "none"}.
local function places()
  local out = {}
  for _, r in ipairs(q([[
      SELECT c.asin,
             CASE WHEN s.title_id IS NOT NULL AND p.title_id IS NOT NULL THEN 'both'
                  WHEN s.title_id IS NOT NULL THEN 'indexed'
                  WHEN p.title_id IS NOT NULL THEN 'pending' ELSE 'none' END AS place
      FROM title_catalog AS c
      LEFT JOIN title_search AS s ON s.title_id = c.id
      LEFT JOIN title_search_pending AS p ON p.title_id = c.id]])) do
    out[r.asin] = r.place
  end
  return out
end

local function text_of(asin)
  return q([[SELECT s.search_text FROM title_search_all AS s JOIN title_catalog AS c ON c.id = s.title_id
             WHERE c.asin = $1]], asin)[1].search_text
end

-- Inserts titles as a sync does (their search rows pending) in a committed transaction
-- whose move never runs: what a sync that died before its answer leaves.
local function insert_pending(rows_sql)
  q("BEGIN")
  q("SELECT set_config('shelfsync.search_pending', 'on', true)")
  q(rows_sql)
  q("COMMIT")
end

local TITLES = [[
  INSERT INTO title_catalog (asin, title, authors, narrators, series_name) VALUES
    ('B0TS000001', 'Die Physiker', ARRAY['Friedrich Dürrenmatt'], ARRAY['Hans Korte'], NULL),
    ('B0TS000002', 'The Way of Kings', ARRAY['Brandon Sanderson'], ARRAY['Michael Kramer'], 'Stormlight'),
    ('B0TS000003', 'Der Richter und sein Henker', ARRAY['Friedrich Dürrenmatt'], ARRAY['Gert Westphal'], NULL)]]

describe("the search text in its own table (sql/009)", function()
  before_each(function() h.reset_db() end)

  it("gives a title inserted outside a sync its indexed row at once", function()
    q(TITLES)
    assert.same({ B0TS000001 = "indexed", B0TS000002 = "indexed", B0TS000003 = "indexed" }, places())
    assert.equal("die physiker friedrich durrenmatt hans korte", text_of("B0TS000001"))
  end)

  it("keeps a sync's titles pending until moved, then indexed, one row each at every step", function()
    insert_pending(TITLES)
    assert.same({ B0TS000001 = "pending", B0TS000002 = "pending", B0TS000003 = "pending" }, places())
    assert.equal(0, n("SELECT count(*) AS n FROM title_search"))
    -- an update of a pending title rewrites its pending row
    q("UPDATE title_catalog SET subtitle = 'Eine Komödie' WHERE asin = 'B0TS000001'")
    assert.same({ "pending", "die physiker eine komodie friedrich durrenmatt hans korte" },
      { places().B0TS000001, text_of("B0TS000001") })
    -- an update that leaves the searched columns alone leaves the row alone
    q("UPDATE title_catalog SET duration = 60 WHERE asin = 'B0TS000002'")
    assert.equal("pending", places().B0TS000002)
    assert.equal(3, require("title_search").move())
    assert.same({ B0TS000001 = "indexed", B0TS000002 = "indexed", B0TS000003 = "indexed" }, places())
    assert.equal("die physiker eine komodie friedrich durrenmatt hans korte", text_of("B0TS000001"))
    assert.equal(0, n("SELECT count(*) AS n FROM title_search_pending"))
    -- and an indexed one is rewritten in title_search
    q("UPDATE title_catalog SET narrators = ARRAY['Kate Reading'] WHERE asin = 'B0TS000002'")
    assert.same({ "indexed", "the way of kings brandon sanderson kate reading stormlight" },
      { places().B0TS000002, text_of("B0TS000002") })
  end)

  it("drops a pending row with its title, and an indexed one by its foreign key", function()
    insert_pending(TITLES)
    q("INSERT INTO title_catalog (asin, title) VALUES ('B0TS000009', 'Indexed one')")
    q("DELETE FROM title_catalog WHERE asin IN ('B0TS000001', 'B0TS000009')")
    assert.same({ B0TS000002 = "pending", B0TS000003 = "pending" }, places())
    assert.same({ 2, 0 }, { n("SELECT count(*) AS n FROM title_search_pending"),
                            n("SELECT count(*) AS n FROM title_search") })
  end)

  it("finds and ranks a pending title exactly as an indexed one, through the API", function()
    local w = h.fresh_world({ "alice" })
    local ok, err = pcall(function()
      insert_pending(TITLES)
      local user = q("SELECT id FROM users WHERE email = 'alice@example.com'")[1].id
      q([[INSERT INTO user_library (user_id, title_id, source)
          SELECT $1, id, 'LIBRARY' FROM title_catalog]], user)
      local queries = { "durrenmatt", "sandersen", "stormlight", "richter henker", "kramer", "zzzqqq" }
      local function answers()
        local out = {}
        for _, s in ipairs(queries) do
          local res = w.alice:get("/api/library?sort=relevance&q=" .. s:gsub(" ", "%%20"))
          assert.equal(200, res.status, res.body)
          local found = {}
          for i, e in ipairs(res.json.items) do found[i] = e.asin end
          out[s] = found
        end
        local by_author = w.alice:get("/api/library?author=friedrich%20d%C3%BCrrenmatt")
        out.author = #by_author.json.items
        return out
      end
      local pending = answers()
      local durrenmatt = { table.unpack(pending.durrenmatt) }
      table.sort(durrenmatt)
      assert.same({ "B0TS000001", "B0TS000003" }, durrenmatt)
      assert.same({ "B0TS000002" }, pending.sandersen)
      assert.equal(2, pending.author)
      assert.same({}, pending.zzzqqq)
      assert.equal(3, require("title_search").move())
      assert.same(pending, answers())
    end)
    w.srv:stop()
    assert(ok, err)
  end)

  it("moves a sync's new titles after its answer, and they are found before and after", function()
    local w = h.fresh_world({ "bob" })
    local ok, err = pcall(function()
      local items = {}
      for i = 1, 30 do
        items[i] = { asin = ("B0MV%06d"):format(i), title = "Moved title " .. i, authors = { "Ann Author" },
                     narrators = {}, source = "LIBRARY", listeningProgress = 0, personalRating = 0 }
      end
      items[7].title = "Zebra crossing"
      local res = h.sync_items(w.srv, w.bob, items)
      assert.equal(200, res.status, res.body)
      -- found the moment the answer came, wherever its row is by now
      local found = w.bob:get("/api/library?q=zebra")
      assert.same({ 200, "B0MV000007" }, { found.status, found.json.items[1] and found.json.items[1].asin })
      h.wait_until(function() return n("SELECT count(*) AS n FROM title_search_pending") == 0 end, 10,
        "the move after the answer")
      local where = places()
      for i = 1, 30 do assert.equal("indexed", where[("B0MV%06d"):format(i)]) end
      found = w.bob:get("/api/library?q=zebra")
      assert.same({ 200, "B0MV000007" }, { found.status, found.json.items[1] and found.json.items[1].asin })
      -- a re-sync inserts nothing and leaves nothing pending
      assert.equal(200, h.sync_items(w.srv, w.bob, items).status)
      assert.equal(0, n("SELECT count(*) AS n FROM title_search_pending"))
    end)
    w.srv:stop()
    assert(ok, err)
  end)

  local function cleanup_cli()
    local cmd = string.format("cd %s && env DATABASE_URL=%s SHELFSYNC_SECRET=%s %s cleanup 2>&1",
      h.shell_quote(h.root), h.shell_quote(os.getenv("DATABASE_URL")), h.shell_quote(("s"):rep(40)),
      h.shell_quote(h.binary))
    local code, out = h.run(cmd)
    assert(code == 0, out)
  end

  it("indexes what a sync that died before its answer left pending when `shelfsync cleanup` runs", function()
    insert_pending(TITLES)
    cleanup_cli()
    assert.same({ B0TS000001 = "indexed", B0TS000002 = "indexed", B0TS000003 = "indexed" }, places())
  end)

  it("never waits for a row another transaction holds: it moves the others and leaves that one", function()
    insert_pending(TITLES)
    q("BEGIN")
    -- as a sync filling that title holds it: its pending row rewritten, not yet committed
    q("UPDATE title_catalog SET subtitle = 'Held' WHERE asin = 'B0TS000002'")
    local ok, err = pcall(cleanup_cli)     -- another process: it would hang here if it waited
    q("COMMIT")
    assert(ok, err)
    assert.same({ B0TS000001 = "indexed", B0TS000002 = "pending", B0TS000003 = "indexed" }, places())
    assert.equal(1, require("title_search").move())
    assert.same({ "indexed", "the way of kings held brandon sanderson michael kramer stormlight" },
      { places().B0TS000002, text_of("B0TS000002") })
  end)

  it("rolls back a sync's pending rows with the sync (a dry run, a failed import)", function()
    q("BEGIN")
    q("SELECT set_config('shelfsync.search_pending', 'on', true)")
    q(TITLES)
    q("ROLLBACK")
    assert.same({ 0, 0 }, { n("SELECT count(*) AS n FROM title_search_pending"),
                            n("SELECT count(*) AS n FROM title_catalog") })
    -- and the setting ends with its transaction: the next insert is indexed at once
    q(TITLES)
    assert.equal("indexed", places().B0TS000002)
  end)
end)
