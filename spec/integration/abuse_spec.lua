-- Abuse: what a hostile or broken client sends at the socket level, and what light requests
-- get while the server is saturated or its database hangs. Every loop here stops by itself
-- within seconds; everything stays on loopback.
local h = require("spec.support.helpers")

local SMUGGLED = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

local function post_head(path, fields)
  return "POST " .. path .. " HTTP/1.1\r\nHost: x\r\n" .. table.concat(fields, "\r\n") .. "\r\n\r\n"
end

-- The one answer a refused request gets: its status, its JSON error code, and the
-- connection closed behind it (a hidden second request is never answered).
local function assert_refused(res, status, code)
  assert.same({ status }, res.statuses, res.text)
  assert.equal(code, res.json and res.json.error, res.text)
  assert.is_string(res.json.message)
  assert.is_true(res.closed, "the connection stays open after " .. status)
end

describe("request framing", function()
  local srv
  setup(function() srv = h.start_server() end)
  teardown(function() srv:stop() end)

  it("refuses Content-Length together with Transfer-Encoding, and serves nothing hidden behind it", function()
    local res = h.raw(srv, post_head("/api/me", { "Content-Length: 40", "Transfer-Encoding: chunked" })
      .. "0\r\n\r\n" .. SMUGGLED)
    assert_refused(res, 400, "ambiguous_framing")
  end)

  it("refuses two different Content-Length values", function()
    local res = h.raw(srv, post_head("/api/me", { "Content-Length: 0", "Content-Length: 35" }) .. SMUGGLED)
    assert_refused(res, 400, "ambiguous_framing")
  end)

  it("refuses a header name with a space before its colon", function()
    local res = h.raw(srv, post_head("/api/me", { "Content-Length : 35" }) .. SMUGGLED)
    assert_refused(res, 400, "malformed_header")
  end)

  it("answers an unknown Transfer-Encoding with 501 instead of waiting for the body", function()
    local res = h.raw(srv, post_head("/api/me", { "Transfer-Encoding: gzip" }) .. "abc")
    assert_refused(res, 501, "unsupported_transfer_encoding")
  end)

  it("still serves a chunked body, and the next request on the same connection", function()
    local body = '{"email":"chunk@example.com","name":"Chunk"}'
    local res = h.raw(srv, post_head("/auth/dev/login", { "Transfer-Encoding: chunked", "Content-Type: application/json",
      "Origin: " .. srv.url }) .. string.format("%x\r\n%s\r\n0\r\n\r\n", #body, body)
      .. "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert.same({ 200, 200 }, res.statuses, res.text)
  end)

  it("leaves a malformed Content-Length to libmicrohttpd, which refuses it and closes (README)", function()
    local res = h.raw(srv, post_head("/api/me", { "Content-Length: abc" }) .. SMUGGLED)
    assert.equal(400, res.status)
    assert.is_nil(res.text:find("200 OK", 1, true))
    assert.is_true(res.closed)
  end)
end)

describe("request targets and header sizes", function()
  local srv
  setup(function() srv = h.start_server() end)
  teardown(function() srv:stop() end)

  local function get(target, fields)
    return h.raw(srv, "GET " .. target .. " HTTP/1.1\r\nHost: x\r\n" .. table.concat(fields or {}, "\r\n")
      .. (fields and "\r\n" or "") .. "\r\n")
  end

  it("refuses %00 in the path instead of cutting the path there", function()
    assert_refused(get("/healthz%00/x"), 400, "bad_request")
  end)

  it("refuses %00 in a query value", function()
    assert_refused(get("/api/library?q=a%00b"), 400, "bad_request")
  end)

  it("answers a query with too many parameters with a JSON 400", function()
    local params = {}
    for i = 1, 500 do params[i] = "p" .. i .. "=1" end
    assert_refused(get("/api/library?" .. table.concat(params, "&")), 400, "too_many_parameters")
  end)

  it("answers a target over max_url_bytes with a JSON 414", function()
    assert_refused(get("/api/library?q=" .. string.rep("a", 9000)), 414, "uri_too_long")
  end)

  it("answers header fields over max_header_bytes with a JSON 431", function()
    local fields = {}
    for i = 1, 40 do fields[i] = "X-Filler-" .. i .. ": " .. string.rep("v", 1000) end
    assert_refused(get("/api/me", fields), 431, "headers_too_large")
  end)
end)

describe("a body over its limit", function()
  local srv
  setup(function() srv = h.start_server{ env = { SHELFSYNC_MAX_BODY_BYTES = "65536" } } end)
  teardown(function() srv:stop() end)

  it("is drained, so a client that writes all of it before reading still reads its 413", function()
    local body = string.rep("x", 4 * 1024 * 1024)
    local res = h.raw(srv, post_head("/api/lists", { "Content-Length: " .. #body, "Content-Type: application/json" }) .. body)
    assert.is_nil(res.send_error)
    assert_refused(res, 413, "payload_too_large")
  end)

  it("is drained when it comes chunked, too", function()
    local chunk = string.format("%x\r\n%s\r\n", 32768, string.rep("y", 32768))
    local res = h.raw(srv, post_head("/api/lists", { "Transfer-Encoding: chunked" }) .. string.rep(chunk, 8) .. "0\r\n\r\n")
    assert.is_nil(res.send_error)
    assert_refused(res, 413, "payload_too_large")
  end)

  it("is refused at once when the client waits for 100-continue", function()
    local res = h.raw(srv, post_head("/api/lists", { "Content-Length: 1000000", "Expect: 100-continue" }))
    assert_refused(res, 413, "payload_too_large")
  end)
end)

describe("/healthz", function()
  it("keeps the connection open for the next probe", function()
    local srv = h.start_server()
    local ok, err = pcall(function()
      local res = h.raw(srv, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert.same({ 200, 200 }, res.statuses, res.text)
    end)
    srv:stop()
    assert(ok, err)
  end)

  it("answers while every worker is busy", function()
    local root = h.temp_root{ ["routes/zz_test.lua"] = h.read_file(h.root .. "/spec/fixtures/routes/zz_test.lua") }
    local srv = h.start_server{ root = root, env = { SHELFSYNC_WORKERS = "2" } }
    local ok, err = pcall(function()
      for _ = 1, 2 do
        h.exec("curl -s -o /dev/null --max-time 10 '" .. srv.url .. "/test/slow?s=4' &")
      end
      h.wait_until(function()
        return h.one("SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE '%pg_sleep($1%' AND pid <> pg_backend_pid()").n >= 2
      end, 5, "both workers in the slow route")
      local res = assert(h.request("GET", srv.url .. "/healthz", { timeout_ms = 2000 }))
      assert.equal(200, res.status)
      assert.equal("ok", res.json.db)
    end)
    srv:stop()
    assert(ok, err)
  end)

  it("reports a frozen database within about a second, answers 503 past the statement timeout, and recovers", function()
    local cluster = h.new_cluster()
    local srv
    local ok, err = pcall(function()
      srv = h.start_server{ env = { DATABASE_URL = cluster.url, SHELFSYNC_STATEMENT_TIMEOUT_MS = "1000" } }
      local c = h.login(srv, "frozen@example.com", "Frozen")
      assert.equal("ok", h.request("GET", srv.url .. "/healthz").json.db)
      cluster:signal("STOP")
      local ok_frozen, err_frozen = pcall(function()
        local res = h.wait_until(function()
          local r = h.request("GET", srv.url .. "/healthz", { timeout_ms = 2000 })
          return r and r.status == 503 and r
        end, 5, "/healthz to report the frozen database")
        assert.same({ "degraded", "unavailable" }, { res.json.status, res.json.db })
        -- The client's own deadline (statement timeout + 1 s) answers, well before this one.
        local me = c:get("/api/me", { timeout_ms = 10000 })
        assert.same({ 503, "database_unavailable" }, { me.status, me.json.error })
      end)
      cluster:signal("CONT")
      assert(ok_frozen, err_frozen)
      h.wait_until(function()
        local r = h.request("GET", srv.url .. "/healthz", { timeout_ms = 2000 })
        return r and r.status == 200
      end, 10, "/healthz to see the database again")
      h.wait_until(function() return c:get("/api/me").status == 200 end, 10, "/api/me to work again")
    end)
    cluster:signal("CONT")
    if srv then srv:stop() end
    cluster:destroy()
    assert(ok, err)
  end)
end)

describe("connections per address", function()
  local srv
  setup(function()
    srv = h.start_server{ env = { SHELFSYNC_MAX_CONNECTIONS_PER_ADDRESS = "4", SHELFSYNC_HEADER_TIMEOUT_S = "1" } }
  end)
  teardown(function() srv:stop() end)

  -- True when the server answers a request on the socket; false when it closes it unanswered.
  local function answered(s)
    s:send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local line = s:receive("*l")
    s:close()
    return line ~= nil and line:find("200", 1, true) ~= nil
  end

  it("refuses one address more than its share while another address is still served", function()
    local held = {}
    for i = 1, 4 do held[i] = h.raw_connect(srv, "127.0.0.2") end
    local ok, err = pcall(function()
      h.sleep(0.2)
      assert.is_false(answered(h.raw_connect(srv, "127.0.0.2")))
      assert.is_true(answered(h.raw_connect(srv, "127.0.0.3")))
    end)
    for _, s in ipairs(held) do s:close() end
    assert(ok, err)
    h.wait_until(function() return answered(h.raw_connect(srv, "127.0.0.2")) end, 5, "the address's share back")
  end)

  it("cuts off a client that sends its header fields too slowly", function()
    local s = h.raw_connect(srv, "127.0.0.4", 10)
    s:send("GET /healthz HTTP/1.1\r\n")
    local cut = false
    for _ = 1, 40 do               -- one header byte every 250 ms: never idle, never done
      h.sleep(0.25)
      local _, err = s:send("X")
      if err then cut = true break end
      s:settimeout(0)
      local _, rerr = s:receive(1)
      s:settimeout(10)
      if rerr == "closed" then cut = true break end
    end
    s:close()
    assert.is_true(cut, "the trickling client was never cut off")
  end)
end)

describe("behind a trusted proxy", function()
  local srv, root
  setup(function()
    root = h.temp_root{ ["routes/zz_test.lua"] = h.read_file(h.root .. "/spec/fixtures/routes/zz_test.lua") }
    srv = h.start_server{ root = root, env = { SHELFSYNC_MAX_CONNECTIONS_PER_ADDRESS = "2",
                                               SHELFSYNC_TRUSTED_PROXIES = "127.0.0.1", SHELFSYNC_WORKERS = "4" } }
  end)
  teardown(function() srv:stop() end)


  it("limits requests in flight per forwarded client, not per proxy connection", function()
    local held = {}
    for i = 1, 2 do
      held[i] = h.raw_connect(srv, nil, 10)
      held[i]:send("GET /test/slow?s=3 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.7, 203.0.113.9\r\n\r\n")
    end
    local ok, err = pcall(function()
      h.wait_until(function()
        return h.one("SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE '%pg_sleep($1%' AND pid <> pg_backend_pid()").n >= 2
      end, 5, "both slow requests in flight")
      local res = h.request("GET", srv.url .. "/api/me", { headers = { ["X-Forwarded-For"] = "203.0.113.9" } })
      assert.same({ 429, "too_many_connections" }, { res.status, res.json.error })
      res = h.request("GET", srv.url .. "/api/me", { headers = { ["X-Forwarded-For"] = "203.0.113.10" } })
      assert.equal(401, res.status)
    end)
    for _, s in ipairs(held) do s:close() end
    assert(ok, err)
  end)
end)

describe("imports that push the limits", function()
  -- A payload of n titles with `names` authors, narrators and categories each, as JSON text.
  -- The titles hold a raw tab, which lua-cjson reads and yajl does not: host.bulk hands the
  -- body to the cjson + validate.lua path, whose instructions grow with the body.
  local function heavy_payload(n, names)
    local list = {}
    for j = 1, names do list[j] = '"Name number ' .. j .. '"' end
    local arr = "[" .. table.concat(list, ",") .. "]"
    local items = {}
    for i = 1, n do
      items[i] = string.format('{"asin":"B%09d","title":"Title\t%d","source":"LIBRARY","authors":%s,"narrators":%s,"categories":%s}',
        i, i, arr, arr, arr)
    end
    return '{"titles":[' .. table.concat(items, ",") .. "]}"
  end

  local function import(srv, token, body)
    return assert(h.request("POST", srv.url .. "/api/sync/import", { body = body,
      headers = { ["Content-Type"] = "application/json", Authorization = "Bearer " .. token } }))
  end

  -- 3,000 titles with 100 names in each list (~12 MB) need far more than a million Lua
  -- instructions after the watchdog arms the budget (250 ms in): the flat budget alone
  -- stops them, the budget that grows with the body lets them finish.
  it("completes a heavy payload within every limit, however small the flat instruction budget", function()
    h.reset_db()
    local body = heavy_payload(3000, 100)
    for _, case in ipairs({ { per_byte = "0", status = 500 }, { per_byte = "32", status = 200 } }) do
      local srv = h.start_server{ env = { SHELFSYNC_INSTRUCTION_LIMIT = "1000000",
                                          SHELFSYNC_INSTRUCTIONS_PER_BODY_BYTE = case.per_byte } }
      local ok, err = pcall(function()
        local c = h.login(srv, "heavy@example.com", "Heavy")
        local res = import(srv, c:post("/api/sync/token", {}).json.token, body)
        assert.equal(case.status, res.status, res.body:sub(1, 300))
        if case.status == 200 then assert.equal(3000, res.json.imported) end
      end)
      srv:stop()
      assert(ok, err)
    end
  end)

  it("answers 429 to a user whose imports keep failing, without spending the token", function()
    h.reset_db()
    local srv = h.start_server{ env = { SHELFSYNC_SYNC_MAX_FAILURES = "3" } }
    local ok, err = pcall(function()
      local c = h.login(srv, "replay@example.com", "Replay")
      local token = c:post("/api/sync/token", {}).json.token
      local bad = '{"titles":[{"asin":"nope","title":"x","source":"LIBRARY"}]}'
      for _ = 1, 3 do
        local res = import(srv, token, bad)
        assert.same({ 422, "no_valid_titles" }, { res.status, res.json.error })
      end
      local res = import(srv, token, bad)
      assert.same({ 429, "too_many_failed_imports" }, { res.status, res.json.error })
      assert.matches("^%d+$", res.headers["retry-after"])
      -- Refused up front: neither a fourth failure in the history nor a spent token.
      assert.equal(3, h.one("SELECT count(*) AS n FROM sync_history WHERE user_id = $1", c.user.id).n)
      assert.is_false(h.one("SELECT used FROM sync_tokens WHERE user_id = $1", c.user.id).used)
    end)
    srv:stop()
    assert(ok, err)
  end)
end)

describe("bodies from strangers", function()
  local srv
  setup(function()
    h.reset_db()
    srv = h.start_server{ env = { SHELFSYNC_MAX_BUFFERED_BYTES = "3000000" } }
  end)
  teardown(function() srv:stop() end)

  local SECRET = "test-secret-0123456789abcdef0123456789abcdef"   -- helpers' server secret

  local function import_head(token, length)
    return "POST /api/sync/import HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      .. "Authorization: Bearer " .. token .. "\r\nContent-Length: " .. length .. "\r\n\r\n"
  end

  local function rss_kb()
    return tonumber((h.read_file("/proc/" .. srv.pid .. "/status") or ""):match("VmRSS:%s*(%d+)"))
  end

  it("refuses a forged token with 401 before keeping the body, and the client that wrote it all reads it", function()
    local body = string.rep("x", 4 * 1024 * 1024)
    local forged = h.host.jwt.sign_hs256({ sub = "x", jti = "y", aud = "shelfsync-sync", iat = os.time(),
      exp = os.time() + 60 }, string.rep("z", 40))
    local res = h.raw(srv, import_head(forged, #body) .. body)
    assert.is_nil(res.send_error)
    assert_refused(res, 401, "token_invalid")
    assert.matches('WWW%-Authenticate: Bearer realm="shelfsync%-sync"', res.text)
  end)

  it("refuses an expired token with 401 token_expired before the body", function()
    local expired = h.host.jwt.sign_hs256({ sub = "x", jti = "y", aud = "shelfsync-sync", iat = os.time() - 100,
      exp = os.time() - 10 }, SECRET)
    assert_refused(h.raw(srv, import_head(expired, 10) .. "0123456789"), 401, "token_expired")
  end)

  it("keeps the server's memory flat while ten strangers send 8 MB each at once", function()
    local before = rss_kb()
    local chunk = string.rep("x", 256 * 1024)
    local socks = {}
    for i = 1, 10 do
      socks[i] = h.raw_connect(srv, nil, 10)
      socks[i]:send(import_head("not.a.token", 8 * 1024 * 1024))
    end
    local peak = before
    for _ = 1, 32 do                 -- interleaved, so all ten bodies are in flight together
      for _, s in ipairs(socks) do s:send(chunk) end
      peak = math.max(peak, rss_kb())
    end
    local statuses = {}
    for i, s in ipairs(socks) do
      statuses[i] = (s:receive("*l") or ""):match("HTTP/1%.1 (%d+)")
      s:close()
    end
    assert.same({ "401", "401", "401", "401", "401", "401", "401", "401", "401", "401" }, statuses)
    assert.is_true(peak - before < 30 * 1024, "RSS grew by " .. (peak - before) .. " kB")
  end)

  it("answers 503 with Retry-After when the bodies held at once would pass max_buffered_bytes", function()
    local c = h.login(srv, "busy@example.com", "Busy")
    local token = c:post("/api/sync/token", {}).json.token
    local body = string.rep(" ", 3500000)
    local res = h.raw(srv, import_head(token, #body) .. body)
    assert_refused(res, 503, "server_busy")
    assert.matches("Retry%-After: %d+", res.text)
    assert.is_false(h.one("SELECT used FROM sync_tokens WHERE user_id = $1", c.user.id).used)
  end)
end)

describe("imports in a lane of their own", function()
  it("runs at most import_workers at once, and another user's reads never wait behind them", function()
    h.reset_db()
    local srv = h.start_server{ env = { SHELFSYNC_WORKERS = "2", SHELFSYNC_IMPORT_WORKERS = "1" } }
    local alice = h.login(srv, "lane-alice@example.com", "Alice")
    local bob = h.login(srv, "lane-bob@example.com", "Bob")
    -- Alice's imports wait for her sync lock, held here, so they stay in flight.
    local LOCK = "SELECT pg_advisory_lock(1398361667, hashtext($1))"
    assert(h.db().query(LOCK, alice.user.id))
    local waiting = "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'"
    local ok, err = pcall(function()
      local body = h.test_dir .. "/lane-body.json"
      h.write_file(body, '{"titles":[{"asin":"B000000001","title":"A","source":"LIBRARY"}]}')
      for i = 1, 3 do
        local token = alice:post("/api/sync/token", {}).json.token
        h.exec(string.format("curl -s -o %s/lane-%d.out -w '%%{http_code}' --max-time 20 -H 'Authorization: Bearer %s'"
          .. " -H 'Content-Type: application/json' --data-binary @%s %s/api/sync/import > %s/lane-%d.code &",
          h.test_dir, i, token, body, srv.url, h.test_dir, i))
      end
      h.wait_until(function() return h.one(waiting).n >= 1 end, 5, "an import waiting for the lock")
      h.sleep(0.5)
      assert.equal(1, h.one(waiting).n)         -- the other two queue in their lane
      local res = bob:get("/api/me", { timeout_ms = 3000 })
      assert.equal(200, res.status)
      assert.equal(200, assert(h.request("GET", srv.url .. "/healthz", { timeout_ms = 2000 })).status)
    end)
    h.db().query("SELECT pg_advisory_unlock(1398361667, hashtext($1))", alice.user.id)
    if ok then
      for i = 1, 3 do
        h.wait_until(function() return (h.read_file(h.test_dir .. "/lane-" .. i .. ".code") or "") ~= "" end, 15, "import " .. i)
        assert.equal("200", h.read_file(h.test_dir .. "/lane-" .. i .. ".code"))
      end
    end
    srv:stop()
    assert(ok, err)
  end)
end)
