-- Sessions, dev login, logout, CSRF and /api/me against the real binary and PostgreSQL.
local h = require("spec.support.helpers")

local crypto = h.host.crypto

local cookie, error_of = h.cookie, h.error_of

local function session_rows()
  return h.rows([[
    SELECT encode(session_token_hash, 'hex') AS hash,
           round(extract(epoch FROM expires - now()) / 86400)::int AS days_left
    FROM sessions ORDER BY created_at]])
end

describe("sessions", function()
  local srv

  setup(function()
    srv = h.start_server()
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  before_each(function()
    h.reset_db()
  end)

  describe("dev login", function()
    it("creates the user, a 30-day session and answers the user", function()
      local c = h.client(srv)
      local res = c:post("/auth/dev/login", { email = "ada@example.com", name = "Ada" })
      assert.equal(200, res.status, res.body)
      local keys = {}
      for k in pairs(res.json.user) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.same({ "createdAt", "email", "id", "image", "name" }, keys)
      assert.equal("ada@example.com", res.json.user.email)
      assert.equal(h.null, res.json.user.image)
      local set = cookie(res, "shelfsync_session")
      for _, attr in ipairs{ "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=2592000" } do
        assert.truthy(set:find(attr, 1, true), attr)
      end
      assert.same({ { hash = crypto.sha256_hex(c.jar.shelfsync_session), days_left = 30 } }, session_rows())
    end)

    it("signs the same email (in any case) into the same user", function()
      local a = h.login(srv, "ada@example.com", "Ada")
      local b = h.login(srv, "ADA@example.COM", "Ada L.")
      assert.equal(a.user.id, b.user.id)
      assert.equal("Ada L.", b:get("/api/me").json.user.name)
    end)

    it("validates the request", function()
      local c = h.client(srv)
      local res = c:post("/auth/dev/login", { email = "not an email", name = string.rep("x", 201) })
      assert.same({ status = 422, error = "validation_failed" }, error_of(res))
      assert.same({ "email", "name" }, { res.json.details[1].path, res.json.details[2].path })
      assert.same({ status = 400, error = "malformed_json" },
        error_of(c:request("POST", "/auth/dev/login", { body = "{", headers = { ["Content-Type"] = "application/json" } })))
    end)

    it("refuses a cross-site request", function()
      local c = h.client(srv, { origin = "https://evil.example" })
      local res = c:post("/auth/dev/login", { email = "ada@example.com" })
      assert.same({ status = 403, error = "csrf_rejected" }, error_of(res))
      assert.same({}, session_rows())
    end)
  end)

  describe("GET /api/me", function()
    it("answers 401 unauthenticated without a session", function()
      local res = h.client(srv):get("/api/me")
      assert.same({ status = 401, error = "unauthenticated" }, error_of(res))
      local forged = h.client(srv)
      forged.jar.shelfsync_session = crypto.b64url_encode(crypto.random(32))
      assert.same({ status = 401, error = "unauthenticated" }, error_of(forged:get("/api/me")))
    end)

    it("counts library and wishlist entries, leaving removed ones out", function()
      local c = h.login(srv, "ada@example.com", "Ada")
      local pg = h.db()
      for i, src in ipairs{ "LIBRARY", "LIBRARY", "LIBRARY", "WISHLIST" } do
        local asin = string.format("B0000000%02d", i)
        local t = assert(pg.query("INSERT INTO title_catalog (asin, title, authors) VALUES ($1, $2, '{Someone}') RETURNING id",
          asin, "Title " .. i))[1]
        assert(pg.query([[INSERT INTO user_library (user_id, title_id, source, removed_at)
                          VALUES ($1, $2, $3::library_source, CASE WHEN $4 THEN now() END)]],
          c.user.id, t.id, src, i == 3))
      end
      local res = c:get("/api/me")
      assert.equal(200, res.status, res.body)
      assert.same({ library = 2, wishlist = 1, manual = 0 }, res.json.counts)
      assert.same(c.user, res.json.user)
    end)
  end)

  describe("lifetime", function()
    it("refuses an expired session", function()
      local c = h.login(srv, "ada@example.com")
      h.db().query("UPDATE sessions SET created_at = now() - interval '31 days', expires = now() - interval '1 second'")
      assert.same({ status = 401, error = "unauthenticated" }, error_of(c:get("/api/me")))
    end)

    it("renews a session past half its life, cookie included", function()
      local c = h.login(srv, "ada@example.com")
      local token = c.jar.shelfsync_session
      h.db().query("UPDATE sessions SET created_at = now() - interval '20 days', expires = now() + interval '10 days'")
      local res = c:get("/api/me")
      assert.equal(200, res.status)
      local set = cookie(res, "shelfsync_session")
      assert.truthy(set, "no renewed cookie")
      assert.truthy(set:find("shelfsync_session=" .. token, 1, true))
      assert.truthy(set:find("Max-Age=2592000", 1, true))
      assert.same({ { hash = crypto.sha256_hex(token), days_left = 30 } }, session_rows())
      -- A fresh session is left alone.
      assert.is_nil(cookie(c:get("/api/me"), "shelfsync_session"))
    end)

    it("lets `shelfsync cleanup` delete expired sessions only", function()
      local keep = h.login(srv, "ada@example.com")
      h.login(srv, "bob@example.com")
      h.db().query([[UPDATE sessions SET created_at = now() - interval '31 days', expires = now() - interval '1 day'
                     WHERE user_id <> $1]], keep.user.id)
      local cmd = string.format("cd %s && DATABASE_URL=%s SHELFSYNC_SECRET=%s %s cleanup >/dev/null 2>&1",
        h.shell_quote(h.root), h.shell_quote(os.getenv("DATABASE_URL")), string.rep("k", 40), h.shell_quote(h.binary))
      assert.is_true(h.exec(cmd))
      assert.same({ { hash = crypto.sha256_hex(keep.jar.shelfsync_session), days_left = 30 } }, session_rows())
      assert.equal(200, keep:get("/api/me").status)
    end)
  end)

  describe("logout", function()
    it("deletes the session and clears the cookie", function()
      local c = h.login(srv, "ada@example.com")
      local other = h.login(srv, "ada@example.com")    -- another browser, same user
      local token = c.jar.shelfsync_session
      local res = c:post("/auth/logout")
      assert.equal(204, res.status)
      assert.equal("", res.body)
      assert.truthy(cookie(res, "shelfsync_session"):find("Max-Age=0", 1, true))
      assert.is_nil(c.jar.shelfsync_session)
      local stale = h.client(srv)
      stale.jar.shelfsync_session = token
      assert.same({ status = 401, error = "unauthenticated" }, error_of(stale:get("/api/me")))
      assert.equal(200, other:get("/api/me").status)
      assert.equal(1, #session_rows())
    end)

    it("answers 204 again once the session is gone", function()
      local c = h.client(srv)
      assert.equal(204, c:post("/auth/logout").status)
    end)

    it("refuses a cross-site logout and keeps the session", function()
      local c = h.login(srv, "ada@example.com")
      local res = c:post("/auth/logout", nil, { headers = { Origin = "https://evil.example" } })
      assert.same({ status = 403, error = "csrf_rejected" }, error_of(res))
      assert.equal(200, c:get("/api/me").status)
    end)
  end)

  describe("CSRF origin check", function()
    local function post_logout(c, headers)
      c.origin = nil
      return c:request("POST", "/auth/logout", { headers = headers })
    end

    it("accepts the public URL's origin, or its Referer when there is no Origin", function()
      assert.equal(204, post_logout(h.login(srv, "a@example.com"), { Origin = srv.url }).status)
      assert.equal(204, post_logout(h.login(srv, "b@example.com"), { Referer = srv.url .. "/library?x=1" }).status)
    end)

    it("refuses other origins, look-alikes, null and requests naming no origin at all", function()
      local c = h.login(srv, "a@example.com")
      for _, headers in ipairs{
        { Origin = "https://evil.example" },
        { Origin = srv.url .. ".evil.example" },
        { Origin = "null" },
        { Origin = srv.url:gsub("^http:", "https:") },
        { Referer = "https://evil.example/" .. srv.url },
        { Origin = "https://evil.example", Referer = srv.url .. "/" },
        {},
      } do
        assert.same({ status = 403, error = "csrf_rejected" }, error_of(post_logout(c, headers)))
      end
      assert.equal(200, c:get("/api/me").status)
    end)
  end)

  it("shuts a deactivated user's existing sessions and dev login", function()
    local c = h.login(srv, "ada@example.com")
    h.db().query("UPDATE users SET status = 'deactivated', deactivated_at = now()")
    assert.same({ status = 401, error = "unauthenticated" }, error_of(c:get("/api/me")))
    local res = h.client(srv):post("/auth/dev/login", { email = "ada@example.com" })
    assert.same({ status = 403, error = "account_deactivated" }, error_of(res))
  end)

  it("keeps no raw session token in the database", function()
    local c = h.login(srv, "ada@example.com")
    local token = c.jar.shelfsync_session
    local pg = h.db()
    for _, t in ipairs(assert(pg.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))) do
      -- table names come from the catalog, quoted as identifiers
      local ident = '"' .. t.tablename:gsub('"', '""') .. '"'
      local hit = assert(pg.query("SELECT count(*)::int AS n FROM " .. ident .. " AS t WHERE strpos(t::text, $1) > 0", token))
      assert.equal(0, hit[1].n, t.tablename)
    end
  end)
end)

describe("sessions behind an https public URL", function()
  local srv

  setup(function()
    h.reset_db()
    srv = h.start_server{ env = { SHELFSYNC_PUBLIC_URL = "https://shelfsync.example" } }
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("marks the session cookie Secure and checks Origin against that URL", function()
    local c = h.client(srv, { origin = "https://shelfsync.example" })
    local res = c:post("/auth/dev/login", { email = "ada@example.com" })
    assert.equal(200, res.status, res.body)
    assert.truthy(cookie(res, "shelfsync_session"):find("; Secure", 1, true))
    local wrong = h.client(srv)       -- Origin: the loopback URL, not the public one
    assert.same({ status = 403, error = "csrf_rejected" },
      error_of(wrong:post("/auth/dev/login", { email = "ada@example.com" })))
  end)
end)

describe("dev login when turned off", function()
  local srv

  setup(function()
    srv = h.start_server{ env = { SHELFSYNC_DEV_LOGIN = "0" } }
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("does not exist: 404 not_found", function()
    local res = h.client(srv):post("/auth/dev/login", { email = "ada@example.com", name = "Ada" })
    assert.same({ status = 404, error = "not_found" }, error_of(res))
    assert.is_nil(cookie(res, "shelfsync_session"))
  end)
end)
