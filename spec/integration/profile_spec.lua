-- Public handles and profiles: PUT /api/users/me/username and GET /api/users/:username/lists
-- against the real binary and PostgreSQL.
local h = require("spec.support.helpers")
local fx = require("spec.support.library_fixture")

local null = h.null

describe("usernames and public profiles", function()
  local srv, pg, alice, bob, anon, titles

  local function claim(client, body)
    return client:put("/api/users/me/username", body)
  end

  local function stored(user_id)
    return assert(pg.query("SELECT username, profile_visibility::text AS v FROM users WHERE id = $1", user_id))[1]
  end

  setup(function()
    local w = h.fresh_world{ "alice", "bob" }
    srv, pg, alice, bob, anon = w.srv, w.pg, w.alice, w.bob, w.anon
    titles = fx.generate{ count = 3, seed = 51, asin_prefix = "P1" }
    fx.insert(pg, alice.user.id, titles)
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  describe("PUT /api/users/me/username", function()
    it("claims a handle, which publishes the profile", function()
      local res = claim(alice, { username = "Alice_Reads" })
      assert.are.equal(200, res.status, res.body)
      assert.are.same({ username = "Alice_Reads", profileVisibility = "PUBLIC" }, res.json)
      assert.are.same({ username = "Alice_Reads", v = "PUBLIC" }, stored(alice.user.id))
    end)

    it("refuses a handle another user holds in any case with 409 username_taken", function()
      for _, name in ipairs{ "Alice_Reads", "alice_reads", "ALICE_READS" } do
        local res = claim(bob, { username = name })
        assert.are.equal(409, res.status, res.body)
        assert.are.same({ error = "username_taken", message = "the username " .. name .. " is already taken",
          details = { { path = "username", message = "is already taken" } }, requestId = res.json.requestId }, res.json)
      end
      assert.are.same({ username = null, v = "PRIVATE" }, stored(bob.user.id))
    end)

    it("lets the owner change the case of their own handle, keeping the visibility", function()
      local res = claim(alice, { username = "alice_reads" })
      assert.are.equal(200, res.status, res.body)
      assert.are.same({ username = "alice_reads", profileVisibility = "PUBLIC" }, res.json)
    end)

    it("hides and shows the profile on request, and a later claim keeps the choice", function()
      local res = claim(alice, { username = "alice_reads", profileVisibility = "private" })
      assert.are.same({ username = "alice_reads", profileVisibility = "PRIVATE" }, res.json)
      res = claim(alice, { username = "alice_books" })
      assert.are.same({ username = "alice_books", profileVisibility = "PRIVATE" }, res.json)
      res = claim(alice, { username = "alice_reads", profileVisibility = "PUBLIC" })
      assert.are.same({ username = "alice_reads", profileVisibility = "PUBLIC" }, res.json)
    end)

    it("frees a handle given up, for anyone", function()
      local carol = h.login(srv, "carol@example.com")
      assert.are.equal(200, claim(carol, { username = "reader_one" }).status)
      assert.are.equal(200, claim(carol, { username = "reader_two" }).status)
      local res = claim(bob, { username = "Reader_One" })
      assert.are.equal(200, res.status, res.body)
      assert.are.same({ username = "Reader_One", profileVisibility = "PUBLIC" }, res.json)
    end)

    it("refuses reserved names in any case with 422 username_reserved", function()
      for _, name in ipairs{ "Admin", "API", "shelfsync", "USERS" } do
        local res = claim(bob, { username = name })
        assert.are.equal(422, res.status, res.body)
        assert.are.same({ error = "username_reserved", message = "the username " .. name .. " is reserved",
          details = { { path = "username", message = "is reserved" } }, requestId = res.json.requestId }, res.json)
      end
    end)

    it("refuses handles outside 3 to 30 letters, digits and underscores, and bad bodies", function()
      local rule = "must be 3 to 30 letters, digits or underscores"
      for _, name in ipairs{ "ab", string.rep("a", 31), "has space", "dash-ed", "ünïcode", "K\u{212A}lvin" } do
        local res = claim(bob, { username = name })
        assert.are.equal(422, res.status, name .. ": " .. res.body)
        assert.are.same({ { path = "username", message = rule } }, res.json.details, name)
      end
      local cases = {
        { {}, { { path = "username", message = "is required" } } },
        { { username = 42 }, { { path = "username", message = "must be a string" } } },
        { { username = "bobby", profileVisibility = "UNLISTED" },
          { { path = "profileVisibility", message = "must be one of PRIVATE, PUBLIC" } } },
        { { username = "bobby", bio = "hi" }, { { path = "bio", message = "is not an allowed field" } } },
      }
      for _, c in ipairs(cases) do
        local res = claim(bob, c[1])
        assert.are.equal(422, res.status, res.body)
        assert.are.equal("validation_failed", res.json.error)
        assert.are.same(c[2], res.json.details)
      end
      assert.are.same({ username = "Reader_One", v = "PUBLIC" }, stored(bob.user.id))
    end)

    it("needs a session", function()
      local res = claim(anon, { username = "nobody_here" })
      assert.are.equal(401, res.status)
      assert.are.equal("unauthenticated", res.json.error)
    end)
  end)

  describe("GET /api/users/:username/lists", function()
    local made = {}

    local function list_summary(l, count)
      return { id = l.id, title = l.title, description = l.description, visibility = l.visibility,
        itemCount = count, createdAt = l.createdAt, updatedAt = l.updatedAt, version = l.version,
        covers = fx.covers(l.items) }
    end

    local function tier_summary(l, count)
      return { id = l.id, title = l.title, description = l.description, visibility = l.visibility,
        tierLabels = l.tierLabels, assignmentCount = count, createdAt = l.createdAt, updatedAt = l.updatedAt,
        version = l.version, covers = fx.covers(l.assignments) }
    end

    setup(function()
      for _, v in ipairs{ "PRIVATE", "UNLISTED", "PUBLIC" } do
        local res = alice:post("/api/lists", { title = "List " .. v, visibility = v,
          items = { { asin = titles[1].asin }, { asin = titles[2].asin } } })
        assert(res.status == 201, res.body)
        made["list " .. v] = res.json
        res = alice:post("/api/tierlists", { title = "Tiers " .. v, visibility = v,
          assignments = { { asin = titles[3].asin, tier = "S", position = 1 } } })
        assert(res.status == 201, res.body)
        made["tier " .. v] = res.json
      end
      local res = alice:post("/api/lists", { title = "Second public", description = "more", visibility = "PUBLIC" })
      made["list PUBLIC 2"] = res.json
    end)

    it("shows anyone the PUBLIC lists and tier lists only, newest change first, by handle", function()
      local want = {
        user = { username = "alice_reads" },
        lists = { list_summary(made["list PUBLIC 2"], 0), list_summary(made["list PUBLIC"], 2) },
        tierLists = { tier_summary(made["tier PUBLIC"], 1) },
      }
      for _, client in ipairs{ anon, bob, alice } do
        local res = client:get("/api/users/alice_reads/lists")
        assert.are.equal(200, res.status, res.body)
        assert.are.same(want, res.json)
      end
      -- Any case of the handle finds it; the answer names it as stored.
      assert.are.same(want, anon:get("/api/users/ALICE_Reads/lists").json)
    end)

    it("answers empty arrays for a public profile without public lists", function()
      local res = anon:get("/api/users/reader_one/lists")
      assert.are.equal(200, res.status, res.body)
      assert.are.equal('{"user":{"username":"Reader_One"},"lists":[],"tierLists":[]}', res.body)
    end)

    it("answers 404 alike for unknown and malformed handles, PRIVATE profiles and deactivated accounts", function()
      local dave = h.login(srv, "dave@example.com")
      assert.are.equal(200, claim(dave, { username = "dave_hidden", profileVisibility = "PRIVATE" }).status)
      local erin = h.login(srv, "erin@example.com")
      assert.are.equal(200, claim(erin, { username = "erin_gone" }).status)
      assert.are.equal(200, anon:get("/api/users/erin_gone/lists").status)
      assert(pg.query("UPDATE users SET status = 'deactivated', deactivated_at = now() WHERE id = $1", erin.user.id))
      for _, name in ipairs{ "nobody_at_all", "no", "bad-name!", "dave_hidden", "erin_gone", "me" } do
        local res = anon:get("/api/users/" .. name .. "/lists")
        assert.are.equal(404, res.status, name)
        assert.are.same({ error = "not_found", message = "user not found", details = {},
          requestId = res.json.requestId }, res.json, name)
      end
      -- The owner gets the same 404 for their own hidden profile.
      assert.are.equal(404, dave:get("/api/users/dave_hidden/lists").status)
    end)

    it("drops a list from the profile when it stops being PUBLIC", function()
      local res = alice:patch("/api/lists/" .. made["list PUBLIC 2"].id, { visibility = "UNLISTED" })
      assert.are.equal(200, res.status, res.body)
      local got = anon:get("/api/users/alice_reads/lists").json
      assert.are.same({ list_summary(made["list PUBLIC"], 2) }, got.lists)
    end)
  end)
end)
