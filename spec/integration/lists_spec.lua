-- Recommendation lists: /api/lists and /api/lists/:id(/items) against the real binary and
-- PostgreSQL. Libraries are seeded with SQL (spec/support/library_fixture.lua); every
-- expected answer is built here from the seeded items.
local h = require("spec.support.helpers")
local fx = require("spec.support.library_fixture")

local null = h.null

local ISO = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"
local title_of = fx.title_of

local function rep(s, n) return string.rep(s, n) end

local function send(client, method, path, text) return client:send(method, path, text) end

describe("recommendation lists", function()
  local srv, pg, alice, bob, anon
  local mine, theirs = {}, {}

  -- The expected LIST for an answer `got`, with items {item, note} (id and times from got).
  local function expected(got, fields, items, viewer_is_owner)
    local out = {
      id = got.id, createdAt = got.createdAt, updatedAt = got.updatedAt, version = got.version,
      title = fields.title, description = fields.description == nil and null or fields.description,
      visibility = fields.visibility or "PRIVATE",
      owner = { username = fields.username or null },
      isOwner = viewer_is_owner ~= false,
      itemCount = #items, items = {},
    }
    for i, e in ipairs(items) do
      out.items[i] = { position = i, asin = e[1].asin, note = e[2] == nil and null or e[2],
        inLibrary = e[3] ~= false, title = title_of(e[1]) }
    end
    return out
  end

  local function asins(list)
    local out = {}
    for i, it in ipairs(list.items) do out[i] = it.asin end
    return out
  end

  local function create(client, body)
    local res = client:post("/api/lists", body)
    assert(res.status == 201, res.status .. " " .. res.body)
    return res.json
  end

  setup(function()
    local w = h.fresh_world{ "alice", "bob" }
    srv, pg, alice, bob, anon = w.srv, w.pg, w.alice, w.bob, w.anon
    mine = fx.generate{ count = 16, seed = 31, asin_prefix = "L1" }
    theirs = fx.generate{ count = 4, seed = 32, asin_prefix = "L2" }
    fx.insert(pg, alice.user.id, mine)
    fx.insert(pg, bob.user.id, theirs)
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  describe("POST /api/lists", function()
    it("creates a list with items and answers it whole, with its location", function()
      local res = alice:post("/api/lists", {
        title = "  Best of space opera  ", description = "Start here", visibility = "unlisted",
        items = { { asin = mine[3].asin, note = "  the classic  " }, { asin = mine[1].asin:lower() } },
      })
      assert.are.equal(201, res.status, res.body)
      local got = res.json
      assert.are.equal("/api/lists/" .. got.id, res.headers["location"])
      assert.matches(ISO, got.createdAt)
      assert.are.equal(got.createdAt, got.updatedAt)
      assert.are.same(expected(got, { title = "Best of space opera", description = "Start here",
        visibility = "UNLISTED" }, { { mine[3], "the classic" }, { mine[1] } }), got)
      assert.are.same(got, alice:get("/api/lists/" .. got.id).json)
    end)

    it("defaults to a PRIVATE list with no description and no items", function()
      local got = create(alice, { title = "Later" })
      assert.are.same(expected(got, { title = "Later" }, {}), got)
      assert.is_truthy(alice:get("/api/lists/" .. got.id).body:find('"items":[]', 1, true))
    end)

    it("refuses bad bodies with 422 and the path of every problem", function()
      local cases = {
        { {}, { { path = "title", message = "is required" } } },
        { { title = "   " }, { { path = "title", message = "must not be empty" } } },
        { { title = rep("x", 201) }, { { path = "title", message = "must be at most 200 characters" } } },
        { { title = "ok", description = rep("é", 2001) },
          { { path = "description", message = "must be at most 2000 characters" } } },
        { { title = "ok", visibility = "SECRET" },
          { { path = "visibility", message = "must be one of PRIVATE, UNLISTED, PUBLIC" } } },
        { { title = "ok", colour = "red" }, { { path = "colour", message = "is not an allowed field" } } },
        { { title = "ok", items = { { note = "x" }, { asin = "B0" } } }, {
          { path = "items[0].asin", message = "is required" },
          { path = "items[1].asin", message = "must be an ASIN: 10 letters or digits, or 13 digits" } } },
        { { title = "ok", items = { { asin = mine[1].asin, note = rep("n", 2001) } } },
          { { path = "items[0].note", message = "must be at most 2000 characters" } } },
        { { title = "ok", items = { { asin = mine[1].asin }, { asin = mine[2].asin }, { asin = mine[1].asin } } },
          { { path = "items[2].asin", message = mine[1].asin .. " is already at items[0]" } } },
      }
      for _, c in ipairs(cases) do
        local res = alice:post("/api/lists", c[1])
        assert.are.equal(422, res.status, res.body)
        assert.are.equal("validation_failed", res.json.error)
        assert.are.same(c[2], res.json.details)
      end
      local res = send(alice, "POST", "/api/lists", "{nope")
      assert.are.equal(400, res.status)
      assert.are.equal("malformed_json", res.json.error)
      res = send(alice, "POST", "/api/lists", "[]")
      assert.are.equal(422, res.status)
      assert.are.same({ { path = "", message = "must be an object" } }, res.json.details)
    end)

    it("refuses a title from another user's library and creates nothing", function()
      local before = #alice:get("/api/lists").json.lists
      local res = alice:post("/api/lists", { title = "Sneaky",
        items = { { asin = mine[1].asin }, { asin = theirs[1].asin }, { asin = "ZZZZZZZZZZ" } } })
      assert.are.equal(422, res.status, res.body)
      assert.are.same({
        error = "title_not_in_library",
        message = "2 titles are not in your library: items[1].asin: " .. theirs[1].asin ..
          " is not in your library; items[2].asin: ZZZZZZZZZZ is not in your library",
        details = {
          { path = "items[1].asin", message = theirs[1].asin .. " is not in your library" },
          { path = "items[2].asin", message = "ZZZZZZZZZZ is not in your library" },
        },
        requestId = res.json.requestId,
      }, res.json)
      assert.are.equal(before, #alice:get("/api/lists").json.lists)
    end)

    it("needs a session", function()
      local res = anon:post("/api/lists", { title = "x" })
      assert.are.equal(401, res.status)
      assert.are.equal("unauthenticated", res.json.error)
    end)

    it("refuses a cross-site write (CSRF origin check)", function()
      local res = alice:post("/api/lists", { title = "x" }, { headers = { Origin = "https://evil.example" } })
      assert.are.equal(403, res.status)
      assert.are.equal("csrf_rejected", res.json.error)
    end)
  end)

  describe("PUT /api/lists/:id/items", function()
    it("replaces the items in the given order, positions 1..n", function()
      local list = create(alice, { title = "Order", items = {
        { asin = mine[1].asin, note = "one" }, { asin = mine[2].asin }, { asin = mine[3].asin } } })
      local res = alice:put("/api/lists/" .. list.id .. "/items", {
        { asin = mine[3].asin, note = "now first" }, { asin = mine[1].asin, note = "one" },
        { asin = mine[4].asin, note = "" } })
      assert.are.equal(200, res.status, res.body)
      assert.are.same(expected(res.json, { title = "Order" }, {
        { mine[3], "now first" }, { mine[1], "one" }, { mine[4] } }), res.json)
      assert.are.same(res.json, alice:get("/api/lists/" .. list.id).json)
    end)

    it("takes back the items it answered (reordered), ignoring their other fields", function()
      local list = create(alice, { title = "Round trip", items = {
        { asin = mine[5].asin, note = "a" }, { asin = mine[6].asin, note = "b" } } })
      local items = list.items
      items[1], items[2] = items[2], items[1]
      local res = alice:put("/api/lists/" .. list.id .. "/items", items)
      assert.are.equal(200, res.status, res.body)
      assert.are.same(expected(res.json, { title = "Round trip" },
        { { mine[6], "b" }, { mine[5], "a" } }), res.json)
    end)

    it("empties a list with []", function()
      local list = create(alice, { title = "Emptied", items = { { asin = mine[1].asin } } })
      local res = send(alice, "PUT", "/api/lists/" .. list.id .. "/items", "[]")
      assert.are.equal(200, res.status, res.body)
      assert.are.same(expected(res.json, { title = "Emptied" }, {}), res.json)
    end)

    it("refuses a duplicate ASIN, naming its index, and changes nothing", function()
      local list = create(alice, { title = "Dupes", items = { { asin = mine[1].asin } } })
      local res = alice:put("/api/lists/" .. list.id .. "/items", {
        { asin = mine[2].asin }, { asin = mine[3].asin }, { asin = mine[2].asin:lower() } })
      assert.are.equal(422, res.status)
      assert.are.same({ { path = "[2].asin", message = mine[2].asin .. " is already at [0]" } },
        res.json.details)
      assert.are.same({ mine[1].asin }, asins(alice:get("/api/lists/" .. list.id).json))
    end)

    it("refuses a title from another user's library atomically, naming the item", function()
      local list = create(alice, { title = "Atomic", items = { { asin = mine[1].asin } } })
      local res = alice:put("/api/lists/" .. list.id .. "/items", {
        { asin = mine[2].asin }, { asin = theirs[2].asin } })
      assert.are.equal(422, res.status)
      assert.are.equal("title_not_in_library", res.json.error)
      assert.are.same({ { path = "[1].asin", message = theirs[2].asin .. " is not in your library" } },
        res.json.details)
      assert.are.same({ mine[1].asin }, asins(alice:get("/api/lists/" .. list.id).json))
    end)

    it("refuses bad bodies: not an array, bad items, more than 500 items", function()
      local list = create(alice, { title = "Bad bodies" })
      local path = "/api/lists/" .. list.id .. "/items"
      local res = send(alice, "PUT", path, '{"asin":"X"}')
      assert.are.equal(422, res.status)
      assert.are.same({ { path = "", message = "must be an array" } }, res.json.details)
      res = alice:put(path, { { asin = "B0-1234567" }, "B000000000", { asin = mine[1].asin, note = 7 } })
      assert.are.equal(422, res.status)
      assert.are.same({
        { path = "[0].asin", message = "must be an ASIN: 10 letters or digits, or 13 digits" },
        { path = "[1]", message = "must be an object" },
        { path = "[2].note", message = "must be a string" },
      }, res.json.details)
      local many = {}
      for i = 1, 501 do many[i] = { asin = string.format("L1%08d", i) } end
      res = alice:put(path, many)
      assert.are.equal(422, res.status)
      assert.are.same({ { path = "", message = "must hold at most 500 items" } }, res.json.details)
      res = send(alice, "PUT", path, "")
      assert.are.equal(400, res.status)
      assert.are.equal("malformed_json", res.json.error)
    end)

    it("keeps a title a re-sync removed, flagged inLibrary false, but refuses adding one anew", function()
      local gone, also_gone = mine[14], mine[15]
      local list = create(alice, { title = "Survivors", items = {
        { asin = gone.asin, note = "loved it" }, { asin = mine[1].asin } } })
      assert(pg.query([[UPDATE user_library SET removed_at = now() WHERE user_id = $1 AND title_id IN
        (SELECT id FROM title_catalog WHERE asin = ANY ($2::text[]))]], alice.user.id, { gone.asin, also_gone.asin }))
      local got = alice:get("/api/lists/" .. list.id).json
      assert.are.same(expected(got, { title = "Survivors" },
        { { gone, "loved it", false }, { mine[1] } }), got)
      -- It leaves the library reads.
      assert.are.equal(404, alice:get("/api/library/" .. gone.asin).status)
      -- A reorder keeps it.
      local res = alice:put("/api/lists/" .. list.id .. "/items", {
        { asin = mine[1].asin }, { asin = gone.asin, note = "loved it" } })
      assert.are.equal(200, res.status, res.body)
      assert.are.same(expected(res.json, { title = "Survivors" },
        { { mine[1] }, { gone, "loved it", false } }), res.json)
      -- A removed title this list does not hold cannot be added.
      res = alice:put("/api/lists/" .. list.id .. "/items", { { asin = also_gone.asin } })
      assert.are.equal(422, res.status)
      assert.are.equal("title_not_in_library", res.json.error)
      assert.are.same({ { path = "[0].asin", message = also_gone.asin .. " was removed from your library"
        .. " by a sync: it stays in the lists that already hold it, but cannot be added to others" } },
        res.json.details)
      -- A later sync that brings it back restores inLibrary.
      assert(pg.query([[UPDATE user_library SET removed_at = NULL WHERE user_id = $1]], alice.user.id))
      got = alice:get("/api/lists/" .. list.id).json
      assert.is_true(got.items[2].inLibrary)
    end)
  end)

  describe("PATCH /api/lists/:id", function()
    it("changes only the fields given; null clears the description", function()
      local list = create(alice, { title = "Draft", description = "words", visibility = "PUBLIC",
        items = { { asin = mine[7].asin } } })
      local res = alice:patch("/api/lists/" .. list.id, { title = "Final" })
      assert.are.equal(200, res.status, res.body)
      assert.are.same(expected(res.json, { title = "Final", description = "words", visibility = "PUBLIC" },
        { { mine[7] } }), res.json)
      res = alice:patch("/api/lists/" .. list.id, { description = null, visibility = "private" })
      assert.are.equal(200, res.status, res.body)
      assert.are.same(expected(res.json, { title = "Final" }, { { mine[7] } }), res.json)
      res = alice:patch("/api/lists/" .. list.id, {})
      assert.are.equal(200, res.status)
      assert.are.same(expected(res.json, { title = "Final" }, { { mine[7] } }), res.json)
    end)

    it("refuses null or empty titles, unknown fields and bad visibilities, changing nothing", function()
      local list = create(alice, { title = "Stable" })
      local cases = {
        { { title = null }, { { path = "title", message = "must not be null or empty" } } },
        { { title = "" }, { { path = "title", message = "must not be null or empty" } } },
        { { visibility = null }, { { path = "visibility", message = "must not be null or empty" } } },
        { { visibility = "FRIENDS" },
          { { path = "visibility", message = "must be one of PRIVATE, UNLISTED, PUBLIC" } } },
        { { id = "x", title = "y" }, { { path = "id", message = "is not an allowed field" } } },
      }
      for _, c in ipairs(cases) do
        local res = alice:patch("/api/lists/" .. list.id, c[1])
        assert.are.equal(422, res.status, res.body)
        assert.are.same(c[2], res.json.details)
      end
      assert.are.same(list, alice:get("/api/lists/" .. list.id).json)
    end)
  end)

  describe("GET /api/lists", function()
    it("lists the caller's lists, most recently changed first, with item counts", function()
      local carol = h.login(srv, "carol@example.com", "Carol")
      local ids = fx.insert(pg, carol.user.id, { mine[1], mine[2], mine[3] })
      assert(ids[mine[1].asin])
      local a = create(carol, { title = "A", items = { { asin = mine[1].asin }, { asin = mine[2].asin } } })
      local b = create(carol, { title = "B", visibility = "PUBLIC", description = "bee" })
      local c = create(carol, { title = "C", visibility = "UNLISTED" })
      local function index()
        local res = carol:get("/api/lists")
        assert.are.equal(200, res.status, res.body)
        return res.json.lists
      end
      local got = index()
      local function summary(list, fields, count, now)
        now = now or list
        return { id = list.id, title = fields[1], description = fields[2] or null,
          visibility = fields[3], itemCount = count, createdAt = list.createdAt,
          updatedAt = now.updatedAt, version = now.version, covers = fx.covers(now.items) }
      end
      assert.are.same({ summary(c, { "C", nil, "UNLISTED" }, 0), summary(b, { "B", "bee", "PUBLIC" }, 0),
        summary(a, { "A", nil, "PRIVATE" }, 2) }, got)
      -- Replacing the items of A is a change: A comes first.
      local res = carol:put("/api/lists/" .. a.id .. "/items", { { asin = mine[3].asin } })
      assert.are.equal(200, res.status, res.body)
      assert.is_true(res.json.updatedAt > a.updatedAt)
      got = index()
      assert.are.same({ summary(a, { "A", nil, "PRIVATE" }, 1, res.json),
        summary(c, { "C", nil, "UNLISTED" }, 0), summary(b, { "B", "bee", "PUBLIC" }, 0) }, got)
      -- The same items again change nothing: the order stays.
      local again = carol:put("/api/lists/" .. a.id .. "/items", { { asin = mine[3].asin } })
      assert.are.equal(res.json.updatedAt, again.json.updatedAt)
      -- A PATCH of B moves it up.
      res = carol:patch("/api/lists/" .. b.id, { description = "buzz" })
      got = index()
      assert.are.same({ b.id, a.id, c.id }, { got[1].id, got[2].id, got[3].id })
      assert.are.equal(res.json.updatedAt, got[1].updatedAt)
      -- Nobody else's lists appear; an empty index is an empty array.
      local dave = h.login(srv, "dave@example.com", "Dave")
      local empty = dave:get("/api/lists")
      assert.are.equal(200, empty.status)
      assert.are.equal('{"lists":[]}', empty.body)
    end)

    it("needs a session", function()
      assert.are.equal(401, anon:get("/api/lists").status)
    end)
  end)

  describe("DELETE /api/lists/:id", function()
    it("deletes the list and its items", function()
      local list = create(alice, { title = "Doomed", items = { { asin = mine[8].asin } } })
      local res = alice:delete("/api/lists/" .. list.id)
      assert.are.equal(204, res.status)
      assert.are.equal("", res.body)
      assert.are.equal(404, alice:get("/api/lists/" .. list.id).status)
      assert.are.equal(404, alice:delete("/api/lists/" .. list.id).status)
      assert.are.equal(0, assert(pg.query(
        "SELECT count(*)::int AS n FROM list_items WHERE list_id = $1", list.id))[1].n)
      -- The library entry itself stays.
      assert.are.equal(200, alice:get("/api/library/" .. mine[8].asin).status)
    end)
  end)

  describe("the schema backstop", function()
    it("maps the owner-library foreign key violation to a 422 naming the item", function()
      local lc = require("lists_common")
      local errors = require("errors")
      local list = create(alice, { title = "Backstop" })
      local entry = assert(pg.query([[SELECT ul.id FROM user_library AS ul JOIN title_catalog AS c
        ON c.id = ul.title_id WHERE ul.user_id = $1 AND c.asin = $2]], bob.user.id, theirs[1].asin))[1].id
      -- What the route would write if a concurrent change slipped past its checks.
      local ok, failure = pg.query([[INSERT INTO list_items (list_id, user_id, user_library_id, position)
        VALUES ($1, $2, $3, 1)]], list.id, alice.user.id, entry)
      assert.is_nil(ok)
      assert.are.equal("23503", failure.sqlstate)
      local raised
      local pok, err = pcall(lc.map_write_error, failure,
        { "00000000-0000-4000-8000-000000000000", entry }, function(i) return "[" .. (i - 1) .. "]" end)
      assert.is_false(pok)
      assert.is_true(errors.is_http(err))
      raised = { status = err.status, code = err.code, details = err.details }
      assert.are.same({ status = 422, code = "title_not_in_library",
        details = { { path = "[1].asin", message = "is not in your library" } } }, raised)
    end)
  end)

  describe("visibility", function()
    local lists = {}

    setup(function()
      for _, v in ipairs{ "PRIVATE", "UNLISTED", "PUBLIC" } do
        lists[v] = create(alice, { title = "Seen " .. v, visibility = v,
          items = { { asin = mine[9].asin, note = "n" } } })
      end
    end)

    it("lets the owner read every list, others UNLISTED and PUBLIC ones, and hides PRIVATE ones (404)", function()
      local want = { alice = { 200, 200, 200 }, bob = { 404, 200, 200 }, anon = { 404, 200, 200 } }
      for who, client in pairs{ alice = alice, bob = bob, anon = anon } do
        for i, v in ipairs{ "PRIVATE", "UNLISTED", "PUBLIC" } do
          local res = client:get("/api/lists/" .. lists[v].id)
          assert.are.equal(want[who][i], res.status, who .. " reading " .. v)
          if res.status == 200 then
            assert.are.same(expected(res.json, { title = "Seen " .. v, visibility = v },
              { { mine[9], "n" } }, who == "alice"), res.json)
          else
            assert.are.same({ error = "not_found", message = "list not found", details = {},
              requestId = res.json.requestId }, res.json)
          end
        end
      end
    end)

    it("answers the same 404 for a PRIVATE list, an unknown id and a malformed id", function()
      for _, id in ipairs{ lists.PRIVATE.id, "00000000-0000-4000-8000-000000000000", "not-a-uuid" } do
        local res = bob:get("/api/lists/" .. id)
        assert.are.equal(404, res.status)
        assert.are.equal("list not found", res.json.message)
      end
    end)

    it("lists them in the owner's index only", function()
      local got = {}
      for _, l in ipairs(alice:get("/api/lists").json.lists) do got[l.id] = l.visibility end
      for v, l in pairs(lists) do assert.are.equal(v, got[l.id]) end
      for _, l in ipairs(bob:get("/api/lists").json.lists) do
        for _, mine_l in pairs(lists) do assert.are_not.equal(mine_l.id, l.id) end
      end
    end)

    it("refuses writes by others: 404 for PRIVATE, 403 for UNLISTED and PUBLIC, 401 anonymously", function()
      local want = { bob = { 404, 403, 403 }, anon = { 401, 401, 401 } }
      for who, client in pairs{ bob = bob, anon = anon } do
        for i, v in ipairs{ "PRIVATE", "UNLISTED", "PUBLIC" } do
          local base = "/api/lists/" .. lists[v].id
          for _, res in ipairs{
            client:patch(base, { title = "mine now" }),
            send(client, "PUT", base .. "/items", "[]"),
            client:delete(base),
          } do
            assert.are.equal(want[who][i], res.status, who .. " writing " .. v .. ": " .. res.body)
            local code = ({ [401] = "unauthenticated", [403] = "forbidden", [404] = "not_found" })[res.status]
            assert.are.equal(code, res.json.error)
          end
        end
      end
      for v, l in pairs(lists) do
        assert.are.same(expected(l, { title = "Seen " .. v, visibility = v }, { { mine[9], "n" } }),
          alice:get("/api/lists/" .. l.id).json)
      end
    end)

    it("shows the owner's handle only once their profile is public", function()
      local res = alice:put("/api/users/me/username", { username = "alice_reads", profileVisibility = "PRIVATE" })
      assert.are.equal(200, res.status, res.body)
      assert.are.same({ username = null }, bob:get("/api/lists/" .. lists.PUBLIC.id).json.owner)
      res = alice:put("/api/users/me/username", { username = "alice_reads", profileVisibility = "PUBLIC" })
      assert.are.equal(200, res.status, res.body)
      assert.are.same({ username = "alice_reads" }, anon:get("/api/lists/" .. lists.UNLISTED.id).json.owner)
    end)

    it("hides the lists of a deactivated account from everyone else", function()
      local erin = h.login(srv, "erin@example.com", "Erin")
      fx.insert(pg, erin.user.id, { mine[1] })
      local list = create(erin, { title = "Erin's", visibility = "PUBLIC" })
      assert.are.equal(200, anon:get("/api/lists/" .. list.id).status)
      assert(pg.query("UPDATE users SET status = 'deactivated', deactivated_at = now() WHERE id = $1", erin.user.id))
      assert.are.equal(404, anon:get("/api/lists/" .. list.id).status)
      assert.are.equal(404, bob:get("/api/lists/" .. list.id).status)
    end)

    it("answers an ETag and 304 when the list has not changed", function()
      local res = anon:get("/api/lists/" .. lists.PUBLIC.id)
      local tag = res.headers["etag"]
      assert.is_truthy(tag)
      local again = anon:get("/api/lists/" .. lists.PUBLIC.id, { headers = { ["If-None-Match"] = tag } })
      assert.are.equal(304, again.status)
    end)
  end)

  describe("If-Match", function()
    it("writes when the version is the one read, refuses another with 412 and changes nothing", function()
      local list = create(alice, { title = "Versions", items = { { asin = mine[1].asin } } })
      local path = "/api/lists/" .. list.id
      local v1 = list.version
      -- Tab one saves new items against the version it read: accepted, a new version.
      local res = alice:put(path .. "/items", { { asin = mine[2].asin } }, { headers = { ["If-Match"] = '"' .. v1 .. '"' } })
      assert.are.equal(200, res.status, res.body)
      local v2 = res.json.version
      assert.are_not.equal(v1, v2)
      -- Tab two still holds v1: its items, title and delete are refused, naming the current version.
      for _, try in ipairs{
        function(hd) return alice:put(path .. "/items", { { asin = mine[3].asin } }, hd) end,
        function(hd) return alice:patch(path, { title = "Other" }, hd) end,
        function(hd) return alice:delete(path, hd) end,
      } do
        res = try({ headers = { ["If-Match"] = '"' .. v1 .. '"' } })
        assert.are.same({ error = "version_mismatch", message = "this list changed since it was read (version "
          .. v1 .. ", now " .. v2 .. "): reload it, or send the current version to overwrite",
          details = { { path = "If-Match", message = "current version is " .. v2 } },
          requestId = res.json.requestId }, res.json)
        assert.are.equal(412, res.status)
      end
      local now = alice:get(path).json
      assert.are.same(expected(now, { title = "Versions", username = now.owner.username }, { { mine[2] } }), now)
      assert.are.equal(v2, now.version)
      -- Overwriting: the current version (or *) is accepted; a rename is a new version too.
      res = alice:patch(path, { title = "Renamed" }, { headers = { ["If-Match"] = 'W/"' .. v2 .. '"' } })
      assert.are.equal(200, res.status, res.body)
      assert.are_not.equal(v2, res.json.version)
      res = alice:put(path .. "/items", { { asin = mine[3].asin } }, { headers = { ["If-Match"] = "*" } })
      assert.are.equal(200, res.status, res.body)
    end)
  end)
end)
