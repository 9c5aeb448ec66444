-- Tier lists: /api/tierlists and /api/tierlists/:id(/assignments) against the real binary
-- and PostgreSQL. Libraries are seeded with SQL; expected answers are built from the seed.
local h = require("spec.support.helpers")
local fx = require("spec.support.library_fixture")

local null = h.null

local ISO = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"
local DEFAULT_LABELS = { "S", "A", "B", "C", "D", "F" }
local title_of = fx.title_of

local function send(client, method, path, text) return client:send(method, path, text) end

describe("tier lists", function()
  local srv, pg, alice, bob, anon
  local mine, theirs = {}, {}

  -- The expected TIERLIST for an answer `got`; assignments {item, tier, position[, inLibrary]}
  -- in the order the answer must have them.
  local function expected(got, fields, assignments, is_owner)
    local out = {
      id = got.id, createdAt = got.createdAt, updatedAt = got.updatedAt, version = got.version,
      title = fields.title, description = fields.description == nil and null or fields.description,
      visibility = fields.visibility or "PRIVATE", tierLabels = fields.tierLabels or DEFAULT_LABELS,
      owner = { username = null }, isOwner = is_owner ~= false,
      assignmentCount = #assignments, assignments = {},
    }
    for i, a in ipairs(assignments) do
      out.assignments[i] = { asin = a[1].asin, tier = a[2], position = a[3],
        inLibrary = a[4] ~= false, title = title_of(a[1]) }
    end
    return out
  end

  local function create(client, body)
    local res = client:post("/api/tierlists", body)
    assert(res.status == 201, res.status .. " " .. res.body)
    return res.json
  end

  local function assign(it, tier, position)
    return { asin = it.asin, tier = tier, position = position }
  end

  setup(function()
    local w = h.fresh_world{ "alice", "bob" }
    srv, pg, alice, bob, anon = w.srv, w.pg, w.alice, w.bob, w.anon
    mine = fx.generate{ count = 12, seed = 41, asin_prefix = "T1" }
    theirs = fx.generate{ count = 3, seed = 42, asin_prefix = "T2" }
    fx.insert(pg, alice.user.id, mine)
    fx.insert(pg, bob.user.id, theirs)
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  describe("POST /api/tierlists", function()
    it("creates a tier list with the default labels S A B C D F and no assignments", function()
      local res = alice:post("/api/tierlists", { title = "Fantasy ranked" })
      assert.are.equal(201, res.status, res.body)
      local got = res.json
      assert.are.equal("/api/tierlists/" .. got.id, res.headers["location"])
      assert.matches(ISO, got.createdAt)
      assert.are.same(expected(got, { title = "Fantasy ranked" }, {}), got)
      assert.is_truthy(res.body:find('"assignments":[]', 1, true))
    end)

    it("creates one with its own labels and assignments, answered in label order then position", function()
      local got = create(alice, {
        title = "Narrators", description = "voices", visibility = "public",
        tierLabels = { " God tier ", "Great", "Fine" },
        assignments = { assign(mine[1], "Fine", 1), assign(mine[2], "God tier", 2),
          assign(mine[3], "God tier", 1), assign(mine[4], "Great", 7) },
      })
      assert.are.same(expected(got, { title = "Narrators", description = "voices", visibility = "PUBLIC",
        tierLabels = { "God tier", "Great", "Fine" } }, {
        { mine[3], "God tier", 1 }, { mine[2], "God tier", 2 }, { mine[4], "Great", 7 }, { mine[1], "Fine", 1 },
      }), got)
      assert.are.same(got, alice:get("/api/tierlists/" .. got.id).json)
    end)

    it("refuses bad labels with 422 and their paths", function()
      local many = {}
      for i = 1, 21 do many[i] = "T" .. i end
      local cases = {
        { { title = "x", tierLabels = {} }, { { path = "tierLabels", message = "must hold at least 1 item" } } },
        { { title = "x", tierLabels = many }, { { path = "tierLabels", message = "must hold at most 20 items" } } },
        { { title = "x", tierLabels = { "S", "  " } }, { { path = "tierLabels[1]", message = "must not be empty" } } },
        { { title = "x", tierLabels = { "S", string.rep("x", 51) } },
          { { path = "tierLabels[1]", message = "must be at most 50 characters" } } },
        { { title = "x", tierLabels = { "S", "A", "S" } },
          { { path = "tierLabels[2]", message = '"S" is already tierLabels[0]' } } },
        { { title = "x", tierLabels = { "S", 3 } }, { { path = "tierLabels[1]", message = "must be a string" } } },
        { { title = "x", tierLabels = "S,A,B" }, { { path = "tierLabels", message = "must be an array" } } },
      }
      for _, c in ipairs(cases) do
        local res = alice:post("/api/tierlists", c[1])
        assert.are.equal(422, res.status, res.body)
        assert.are.equal("validation_failed", res.json.error)
        assert.are.same(c[2], res.json.details)
      end
    end)

    it("refuses assignments to a tier that is not a label", function()
      local res = alice:post("/api/tierlists", { title = "x", tierLabels = { "Yes", "No" },
        assignments = { assign(mine[1], "Yes", 1), assign(mine[2], "Maybe", 1) } })
      assert.are.equal(422, res.status, res.body)
      assert.are.same({ { path = "assignments[1].tier", message = '"Maybe" is not one of the labels (Yes, No)' } },
        res.json.details)
    end)
  end)

  describe("PUT /api/tierlists/:id/assignments", function()
    local list

    before_each(function()
      list = create(alice, { title = "Sci-fi", tierLabels = { "S", "A", "B" },
        assignments = { assign(mine[1], "S", 1) } })
    end)

    local function put(body)
      return alice:put("/api/tierlists/" .. list.id .. "/assignments", body)
    end

    it("replaces the assignments", function()
      local res = put{ assign(mine[5], "B", 1), assign(mine[1], "A", 2), assign(mine[6], "A", 1) }
      assert.are.equal(200, res.status, res.body)
      assert.are.same(expected(res.json, { title = "Sci-fi", tierLabels = { "S", "A", "B" } },
        { { mine[6], "A", 1 }, { mine[1], "A", 2 }, { mine[5], "B", 1 } }), res.json)
      assert.are.same(res.json, alice:get("/api/tierlists/" .. list.id).json)
      assert.is_true(res.json.updatedAt > list.updatedAt)
    end)

    it("empties them with []", function()
      local res = send(alice, "PUT", "/api/tierlists/" .. list.id .. "/assignments", "[]")
      assert.are.equal(200, res.status, res.body)
      assert.are.same(expected(res.json, { title = "Sci-fi", tierLabels = { "S", "A", "B" } }, {}), res.json)
    end)

    it("refuses a tier that is not one of the labels, changing nothing", function()
      local res = put{ assign(mine[2], "S", 1), assign(mine[3], "Z", 1), assign(mine[4], "s", 1) }
      assert.are.equal(422, res.status, res.body)
      assert.are.same({
        { path = "[1].tier", message = '"Z" is not one of the labels (S, A, B)' },
        { path = "[2].tier", message = '"s" is not one of the labels (S, A, B)' },
      }, res.json.details)
      assert.are.same(list, alice:get("/api/tierlists/" .. list.id).json)
    end)

    it("refuses a title twice and a position taken twice within a tier", function()
      local res = put{ assign(mine[2], "S", 1), assign(mine[3], "S", 1), assign(mine[2], "A", 1) }
      assert.are.equal(422, res.status, res.body)
      assert.are.same({
        { path = "[2].asin", message = mine[2].asin .. " is already at [0]" },
        { path = "[1].position", message = 'position 1 of tier "S" is already taken by [0]' },
      }, res.json.details)
    end)

    it("refuses malformed assignments with their paths", function()
      local res = put{ { asin = mine[2].asin, tier = "S", position = 0 }, { asin = mine[3].asin, position = 1.5 },
        { tier = "A", position = "1" } }
      assert.are.equal(422, res.status, res.body)
      assert.are.same({
        { path = "[0].position", message = "must be between 1 and 2147483647" },
        { path = "[1].position", message = "must be a whole number" },
        { path = "[1].tier", message = "is required" },
        { path = "[2].asin", message = "is required" },
        { path = "[2].position", message = "must be a whole number" },
      }, res.json.details)
      res = send(alice, "PUT", "/api/tierlists/" .. list.id .. "/assignments", '{"S":[]}')
      assert.are.equal(422, res.status)
      assert.are.same({ { path = "", message = "must be an array" } }, res.json.details)
    end)

    it("refuses a title from another user's library, changing nothing", function()
      local res = put{ assign(mine[2], "S", 1), assign(theirs[1], "A", 1) }
      assert.are.equal(422, res.status, res.body)
      assert.are.equal("title_not_in_library", res.json.error)
      assert.are.same({ { path = "[1].asin", message = theirs[1].asin .. " is not in your library" } },
        res.json.details)
      assert.are.same(list, alice:get("/api/tierlists/" .. list.id).json)
    end)

    it("keeps a title a re-sync removed, flagged inLibrary false", function()
      assert(pg.query([[UPDATE user_library SET removed_at = now() WHERE user_id = $1 AND title_id =
        (SELECT id FROM title_catalog WHERE asin = $2)]], alice.user.id, mine[1].asin))
      local got = alice:get("/api/tierlists/" .. list.id).json
      assert.are.same(expected(got, { title = "Sci-fi", tierLabels = { "S", "A", "B" } },
        { { mine[1], "S", 1, false } }), got)
      local res = put{ assign(mine[1], "B", 1), assign(mine[2], "S", 1) }
      assert.are.equal(200, res.status, res.body)
      assert.are.same(expected(res.json, { title = "Sci-fi", tierLabels = { "S", "A", "B" } },
        { { mine[2], "S", 1 }, { mine[1], "B", 1, false } }), res.json)
      assert(pg.query("UPDATE user_library SET removed_at = NULL WHERE user_id = $1", alice.user.id))
    end)
  end)

  describe("PATCH /api/tierlists/:id", function()
    it("changes only the fields given, and adds or reorders labels freely", function()
      local list = create(alice, { title = "Moods", description = "d", tierLabels = { "Love", "Like" },
        assignments = { assign(mine[1], "Like", 1) } })
      local res = alice:patch("/api/tierlists/" .. list.id, { tierLabels = { "Like", "Love", "Meh" } })
      assert.are.equal(200, res.status, res.body)
      assert.are.same(expected(res.json, { title = "Moods", description = "d", tierLabels = { "Like", "Love", "Meh" } },
        { { mine[1], "Like", 1 } }), res.json)
      res = alice:patch("/api/tierlists/" .. list.id,
        { title = "Moods 2", description = null, visibility = "UNLISTED" })
      assert.are.equal(200, res.status, res.body)
      assert.are.same(expected(res.json, { title = "Moods 2", visibility = "UNLISTED",
        tierLabels = { "Like", "Love", "Meh" } }, { { mine[1], "Like", 1 } }), res.json)
    end)

    it("refuses labels that leave assignments without their tier", function()
      local list = create(alice, { title = "Strict", tierLabels = { "Top", "Low" },
        assignments = { assign(mine[1], "Top", 1), assign(mine[2], "Top", 2), assign(mine[3], "Low", 1) } })
      local res = alice:patch("/api/tierlists/" .. list.id, { tierLabels = { "Low" }, title = "renamed" })
      assert.are.equal(422, res.status, res.body)
      assert.are.same({
        error = "tier_in_use",
        message = 'the new labels leave out tiers that assignments use: tierLabels: "Top" still holds 2 titles:'
          .. ' send "assignments" that move them in the same request',
        details = { { path = "tierLabels",
          message = '"Top" still holds 2 titles: send "assignments" that move them in the same request' } },
        requestId = res.json.requestId,
      }, res.json)
      assert.are.same(list, alice:get("/api/tierlists/" .. list.id).json)
    end)

    it("renames a tier in one request when the assignments come along", function()
      local list = create(alice, { title = "Rename", tierLabels = { "Top", "Low" },
        assignments = { assign(mine[1], "Top", 1), assign(mine[2], "Low", 1) } })
      local res = alice:patch("/api/tierlists/" .. list.id, { tierLabels = { "Best", "Low" },
        assignments = { assign(mine[1], "Best", 1), assign(mine[2], "Low", 1) } })
      assert.are.equal(200, res.status, res.body)
      assert.are.same(expected(res.json, { title = "Rename", tierLabels = { "Best", "Low" } },
        { { mine[1], "Best", 1 }, { mine[2], "Low", 1 } }), res.json)
      -- Assignments checked against the new labels, not the old ones.
      res = alice:patch("/api/tierlists/" .. list.id, { tierLabels = { "X" },
        assignments = { assign(mine[1], "Best", 1) } })
      assert.are.equal(422, res.status, res.body)
      assert.are.same({ { path = "assignments[0].tier", message = '"Best" is not one of the labels (X)' } },
        res.json.details)
    end)

    it("refuses null labels and unknown fields", function()
      local list = create(alice, { title = "Nulls" })
      local res = alice:patch("/api/tierlists/" .. list.id, { tierLabels = null })
      assert.are.equal(422, res.status, res.body)
      assert.are.same({ { path = "tierLabels", message = "must not be null or empty" } }, res.json.details)
      res = alice:patch("/api/tierlists/" .. list.id, { tiers = { "S" } })
      assert.are.equal(422, res.status, res.body)
      assert.are.same({ { path = "tiers", message = "is not an allowed field" } }, res.json.details)
    end)
  end)

  describe("GET /api/tierlists", function()
    it("lists the caller's tier lists, most recently changed first, with counts and labels", function()
      local carol = h.login(srv, "carol@example.com", "Carol")
      fx.insert(pg, carol.user.id, { mine[1], mine[2] })
      local a = create(carol, { title = "A", tierLabels = { "Hi", "Lo" }, assignments = { assign(mine[1], "Lo", 1) } })
      local b = create(carol, { title = "B", visibility = "PUBLIC" })
      local function summary(list, title, vis, labels, count, now)
        now = now or list
        return { id = list.id, title = title, description = null, visibility = vis, tierLabels = labels,
          assignmentCount = count, createdAt = list.createdAt, updatedAt = now.updatedAt,
          version = now.version, covers = fx.covers(now.assignments) }
      end
      local res = carol:get("/api/tierlists")
      assert.are.equal(200, res.status, res.body)
      assert.are.same({ tierLists = { summary(b, "B", "PUBLIC", DEFAULT_LABELS, 0),
        summary(a, "A", "PRIVATE", { "Hi", "Lo" }, 1) } }, res.json)
      local put = carol:put("/api/tierlists/" .. a.id .. "/assignments",
        { assign(mine[1], "Lo", 1), assign(mine[2], "Hi", 1) })
      assert.are.equal(200, put.status, put.body)
      res = carol:get("/api/tierlists")
      assert.are.same({ tierLists = { summary(a, "A", "PRIVATE", { "Hi", "Lo" }, 2, put.json),
        summary(b, "B", "PUBLIC", DEFAULT_LABELS, 0) } }, res.json)
      assert.are.equal('{"tierLists":[]}', h.login(srv, "dave@example.com"):get("/api/tierlists").body)
      assert.are.equal(401, anon:get("/api/tierlists").status)
    end)
  end)

  describe("DELETE /api/tierlists/:id", function()
    it("deletes the tier list and its assignments", function()
      local list = create(alice, { title = "Doomed", assignments = { assign(mine[1], "S", 1) } })
      assert.are.equal(204, alice:delete("/api/tierlists/" .. list.id).status)
      assert.are.equal(404, alice:get("/api/tierlists/" .. list.id).status)
      assert.are.equal(0, assert(pg.query(
        "SELECT count(*)::int AS n FROM tier_assignments WHERE tier_list_id = $1", list.id))[1].n)
    end)
  end)

  describe("visibility", function()
    local lists = {}

    setup(function()
      for _, v in ipairs{ "PRIVATE", "UNLISTED", "PUBLIC" } do
        lists[v] = create(alice, { title = "Seen " .. v, visibility = v, assignments = { assign(mine[7], "A", 1) } })
      end
    end)

    it("lets the owner read every tier list, others UNLISTED and PUBLIC ones, and hides PRIVATE ones (404)", function()
      local want = { alice = { 200, 200, 200 }, bob = { 404, 200, 200 }, anon = { 404, 200, 200 } }
      for who, client in pairs{ alice = alice, bob = bob, anon = anon } do
        for i, v in ipairs{ "PRIVATE", "UNLISTED", "PUBLIC" } do
          local res = client:get("/api/tierlists/" .. lists[v].id)
          assert.are.equal(want[who][i], res.status, who .. " reading " .. v)
          if res.status == 200 then
            assert.are.same(expected(res.json, { title = "Seen " .. v, visibility = v },
              { { mine[7], "A", 1 } }, who == "alice"), res.json)
          else
            assert.are.same({ error = "not_found", message = "tier list not found", details = {},
              requestId = res.json.requestId }, res.json)
          end
        end
      end
    end)

    it("lists them in the owner's index only", function()
      local got = {}
      for _, l in ipairs(alice:get("/api/tierlists").json.tierLists) do got[l.id] = l.visibility end
      for v, l in pairs(lists) do assert.are.equal(v, got[l.id]) end
      for _, l in ipairs(bob:get("/api/tierlists").json.tierLists) do
        for _, own in pairs(lists) do assert.are_not.equal(own.id, l.id) end
      end
    end)

    it("refuses writes by others: 404 for PRIVATE, 403 for UNLISTED and PUBLIC, 401 anonymously", function()
      local want = { bob = { 404, 403, 403 }, anon = { 401, 401, 401 } }
      for who, client in pairs{ bob = bob, anon = anon } do
        for i, v in ipairs{ "PRIVATE", "UNLISTED", "PUBLIC" } do
          local base = "/api/tierlists/" .. lists[v].id
          for _, res in ipairs{
            client:patch(base, { title = "mine now" }),
            send(client, "PUT", base .. "/assignments", "[]"),
            client:delete(base),
          } do
            assert.are.equal(want[who][i], res.status, who .. " writing " .. v .. ": " .. res.body)
          end
        end
      end
      for v, l in pairs(lists) do
        assert.are.same(expected(l, { title = "Seen " .. v, visibility = v }, { { mine[7], "A", 1 } }),
          alice:get("/api/tierlists/" .. l.id).json)
      end
    end)
  end)

  describe("If-Match", function()
    it("refuses assignments and labels sent against an older version with 412, changing nothing", function()
      local list = create(alice, { title = "Versions", assignments = { assign(mine[1], "S", 1) } })
      local path = "/api/tierlists/" .. list.id
      local old = { headers = { ["If-Match"] = '"' .. list.version .. '"' } }
      local res = alice:put(path .. "/assignments", { assign(mine[1], "A", 1) }, old)
      assert.are.equal(200, res.status, res.body)
      local now = res.json
      res = alice:put(path .. "/assignments", { assign(mine[1], "B", 1) }, old)
      assert.are.equal(412, res.status, res.body)
      assert.are.equal("version_mismatch", res.json.error)
      res = alice:patch(path, { tierLabels = { "A", "Z" } }, old)
      assert.are.equal(412, res.status, res.body)
      assert.are.same(now, alice:get(path).json)
      res = alice:patch(path, { tierLabels = { "A", "Z" } }, { headers = { ["If-Match"] = '"' .. now.version .. '"' } })
      assert.are.equal(200, res.status, res.body)
    end)
  end)
end)
