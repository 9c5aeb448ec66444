-- The host itself: HTTP framing, limits, gzip, errors, CORS, sandbox, hot reload, shutdown.
-- Runs the real binary on a private copy of the script tree with test-only routes added.
local h = require("spec.support.helpers")

local FIXTURE = h.read_file(h.root .. "/spec/fixtures/routes/zz_test.lua")
local VERSION_ROUTE = [[
return { { method = "GET", path = "/test/version", auth = "none",
           handler = function() return 200, { version = %d } end } }
]]

local function curl(args)
  local code, out = h.run("curl -s -S --max-time 20 " .. args)
  return code, out
end

describe("the HTTP host", function()
  local srv, root

  setup(function()
    -- app.handle fails outside its pcall for /test/c500, so C answers the 500 itself.
    local app = h.read_file(h.root .. "/lua/app.lua")
    local failing, n = app:gsub("(function _M%.handle%(req%)\n)",
      '%1  if req.path == "/test/c500" then error("handle failed outside its pcall") end\n')
    assert(n == 1, "app.handle not found")
    root = h.temp_root({ ["routes/zz_test.lua"] = FIXTURE,
                         ["routes/zz_version.lua"] = VERSION_ROUTE:format(0),
                         ["lua/app.lua"] = failing })
    srv = h.start_server({ root = root, env = {
      SHELFSYNC_MAX_BODY_BYTES = "100000",
      SHELFSYNC_CORS_ORIGINS = "chrome-extension://shelfsync-test",
      SHELFSYNC_INSTRUCTION_LIMIT = "20000000",
    } })
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("answers /healthz with the database and routes status", function()
    local res = h.request("GET", srv.url .. "/healthz")
    assert.are.equal(200, res.status)
    assert.are.same({ status = "ok", db = "ok", routes = { generation = 1, lastError = h.null },
                       enrichment = "disabled" }, res.json)
  end)

  it("answers an unknown path with a JSON 404", function()
    local res = h.request("GET", srv.url .. "/no/such/thing")
    assert.are.equal(404, res.status)
    assert.are.equal("application/json; charset=utf-8", res.headers["content-type"])
    assert.are.same({ "not_found", "no such endpoint" }, { res.json.error, res.json.message })
  end)

  it("answers a known path with the wrong method 405 and an Allow header", function()
    local res = h.request("DELETE", srv.url .. "/healthz")
    assert.are.equal(405, res.status)
    assert.are.equal("GET", res.headers["allow"])
    assert.are.equal("method_not_allowed", res.json.error)
  end)

  it("echoes a valid X-Request-Id and generates one otherwise", function()
    local res = h.request("GET", srv.url .. "/healthz", { headers = { ["X-Request-Id"] = "trace-42.a_b" } })
    assert.are.equal("trace-42.a_b", res.headers["x-request-id"])
    res = h.request("GET", srv.url .. "/healthz", { headers = { ["X-Request-Id"] = "bad id\1" } })
    assert.matches("^%x+$", res.headers["x-request-id"])
  end)

  it("passes a JSON body to the route", function()
    local res = h.request("POST", srv.url .. "/test/echo", { json = { hello = "wörld", n = 3 } })
    assert.are.equal(200, res.status)
    assert.are.same({ hello = "wörld", n = 3 }, res.json.body)
  end)

  it("refuses malformed JSON with 400 and the position", function()
    local res = h.request("POST", srv.url .. "/test/echo", { body = '{"a": tru}',
      headers = { ["Content-Type"] = "application/json" } })
    assert.are.equal(400, res.status)
    assert.are.equal("malformed_json", res.json.error)
    assert.matches("character", res.json.message)
  end)

  it("refuses a Content-Length over the route's limit with 413 before reading the body", function()
    local res = h.request("POST", srv.url .. "/test/echo", { body = string.rep("x", 100001) })
    assert.are.equal(413, res.status)
    assert.are.equal("payload_too_large", res.json.error)
  end)

  it("cuts off a chunked body that grows past the limit with 413", function()
    local file = h.test_dir .. "/chunked.bin"
    h.write_file(file, string.rep("y", 150000))
    local _, out = curl("-o /dev/null -w '%{http_code}' -H 'Transfer-Encoding: chunked' -H 'Content-Type: application/json' --data-binary @"
      .. file .. " " .. srv.url .. "/test/echo")
    assert.are.equal("413", out)
  end)

  describe("a route's own body limit", function()
    local function post(path, bytes, headers)
      local body = '{"pad":"' .. string.rep("x", bytes - 10) .. '"}'
      assert(#body == bytes)
      return h.request("POST", srv.url .. path, { body = body, headers = headers or
        { ["Content-Type"] = "application/json" } })
    end

    it("applies whatever the spelling of the path", function()
      local got = {}
      for _, path in ipairs({ "/test/small/1", "/test/small/1/", "//test//small/1//" }) do
        got[#got + 1] = { path, post(path, 64).status, post(path, 65).status }
      end
      assert.are.same({ { "/test/small/1", 200, 413 }, { "/test/small/1/", 200, 413 },
                        { "//test//small/1//", 200, 413 } }, got)
    end)

    it("is the one of the route the router picks: a literal segment over a param", function()
      assert.are.same({ 200, 413 }, { post("/test/small/big", 4096).status, post("/test/small/big/", 4097).status })
      assert.are.equal(200, post("/test/echo", 4097).status)           -- the default (max_body_bytes)
    end)

    it("holds after inflating a gzip body", function()
      local body = '{"pad":"' .. string.rep("x", 90) .. '"}'
      local res = h.request("POST", srv.url .. "/test/small/2", { body = h.host.gzip.compress(body),
        headers = { ["Content-Encoding"] = "gzip", ["Content-Type"] = "application/json" } })
      assert.are.same({ 413, "payload_too_large" }, { res.status, res.json.error })
    end)
  end)

  it("inflates a gzip body", function()
    local body = h.host.json.encode({ titles = { "a", "b" } })
    local res = h.request("POST", srv.url .. "/test/echo", { body = h.host.gzip.compress(body),
      headers = { ["Content-Encoding"] = "gzip", ["Content-Type"] = "application/json" } })
    assert.are.equal(200, res.status)
    assert.are.same({ titles = { "a", "b" } }, res.json.body)
    assert.are.equal(#body, res.json.bytes)
  end)

  it("refuses a gzip bomb with 413 without inflating it whole", function()
    local bomb = h.host.gzip.compress(string.rep("\0", 50 * 1024 * 1024))
    assert.is_true(#bomb < 100000)
    local res = h.request("POST", srv.url .. "/test/echo", { body = bomb,
      headers = { ["Content-Encoding"] = "gzip", ["Content-Type"] = "application/json" } })
    assert.are.equal(413, res.status)
    assert.are.equal("payload_too_large", res.json.error)
    assert.are.equal(200, h.request("GET", srv.url .. "/healthz").status)
  end)

  it("refuses a corrupt gzip body with 400 and an unknown encoding with 415", function()
    local res = h.request("POST", srv.url .. "/test/echo", { body = "not gzip at all",
      headers = { ["Content-Encoding"] = "gzip" } })
    assert.are.same({ 400, "malformed_body" }, { res.status, res.json.error })
    res = h.request("POST", srv.url .. "/test/echo", { body = "x", headers = { ["Content-Encoding"] = "br" } })
    assert.are.same({ 415, "unsupported_encoding" }, { res.status, res.json.error })
  end)

  it("gzips a large JSON response for a client that accepts it", function()
    local raw = h.request("GET", srv.url .. "/test/big", { decode = false, headers = { ["Accept-Encoding"] = "gzip" } })
    assert.are.equal("gzip", raw.headers["content-encoding"])
    local plain = h.request("GET", srv.url .. "/test/big")
    assert.are.same(h.host.json.decode(plain.body), h.host.json.decode(h.host.gzip.decompress(raw.body)))
    local identity = h.request("GET", srv.url .. "/test/big", { decode = false })
    assert.is_nil(identity.headers["content-encoding"])
  end)

  it("turns a Lua error into a 500 carrying the request id, and keeps serving", function()
    local res = h.request("GET", srv.url .. "/test/boom", { headers = { ["X-Request-Id"] = "boom-1" } })
    assert.are.equal(500, res.status)
    assert.are.same({ "internal_error", "boom-1" }, { res.json.error, res.json.requestId })
    assert.is_nil(res.body:find("zz_test.lua", 1, true))   -- no stack trace to the client
    assert.matches("zz_test.lua:%d+: attempt to index", srv:log())
    assert.are.equal(200, h.request("GET", srv.url .. "/healthz").status)
  end)

  it("logs a database error as its SQLSTATE and where it was raised, and answers a plain 500", function()
    local res = h.request("GET", srv.url .. "/test/db-boom", { headers = { ["X-Request-Id"] = "db-boom-1" } })
    assert.are.same({ 500, "internal_error" }, { res.status, res.json.error })
    assert.is_nil(res.body:find("SQLSTATE", 1, true))
    local log = srv:log()
    local line = log:match("request db%-boom%-1 GET /test/db%-boom: [^\n]*")
    assert.is_not_nil(line, log)
    assert.matches("database error: division by zero (SQLSTATE 22012)", line, 1, true)
    assert.matches("stack traceback:.-zz_test%.lua:%d+", line)
  end)

  it("skips response headers whose name or value is not a string, and keeps serving", function()
    local res = h.request("GET", srv.url .. "/test/odd-headers")
    assert.are.same({ 200, "yes", nil }, { res.status, res.headers["x-kept"], res.headers["x-count"] })
    assert.are.equal(200, h.request("GET", srv.url .. "/healthz").status)
  end)

  it("stops a runaway handler with a 500 instead of losing the worker", function()
    for _ = 1, 6 do   -- more than the 4 workers: each must come back
      assert.are.equal(500, h.request("GET", srv.url .. "/test/spin").status)
    end
    assert.matches("instruction limit exceeded", srv:log())
    assert.are.equal(200, h.request("GET", srv.url .. "/healthz").status)
  end)

  it("runs scripts in a sandbox", function()
    local function probe(what)
      return h.request("GET", srv.url .. "/test/sandbox?what=" .. what).json
    end
    assert.matches("unknown global 'io'", probe("io").result)
    assert.are.same({ ok = true, result = "nil" }, probe("os_execute"))
    assert.matches("host is read%-only", probe("host_write").result)
    assert.matches("unknown global 'load'", probe("load").result)
    assert.matches("module 'os' not found", probe("require_os").result)
    assert.matches("unknown global 'debug'", probe("debug").result)
    assert.matches("assignment to undeclared global 'leaked'", probe("new_global").result)
  end)

  it("counts requests by route template and status in /metrics", function()
    for _ = 1, 3 do h.request("GET", srv.url .. "/healthz") end
    h.request("POST", srv.url .. "/test/echo", { body = "{" , headers = { ["Content-Type"] = "application/json" } })
    local res = h.request("GET", srv.url .. "/metrics")
    assert.are.equal(200, res.status)
    assert.matches("^text/plain", res.headers["content-type"])
    local n = tonumber(res.body:match('shelfsync_requests_total{method="GET",route="/healthz",status="200"} (%d+)'))
    assert.is_true(n >= 3)
    local bad = tonumber(res.body:match('shelfsync_requests_total{method="POST",route="/test/echo",status="400"} (%d+)'))
    assert.is_true(bad >= 1)
    assert.is_nil(res.body:find("/test/echo?", 1, true))   -- templates, never raw paths
    assert.truthy(res.body:find('shelfsync_request_duration_ms_bucket{method="GET",route="/healthz",status="200",le="+Inf"}', 1, true))
    assert.truthy(res.body:find("shelfsync_db_up 1", 1, true))
    assert.truthy(res.body:find("shelfsync_workers 4", 1, true))
  end)

  describe("CORS", function()
    it("answers a preflight from a configured origin", function()
      local res = h.request("OPTIONS", srv.url .. "/test/echo", { headers = {
        Origin = "chrome-extension://shelfsync-test", ["Access-Control-Request-Method"] = "POST",
        ["Access-Control-Request-Headers"] = "authorization, content-type" } })
      assert.are.equal(204, res.status)
      assert.are.equal("chrome-extension://shelfsync-test", res.headers["access-control-allow-origin"])
      assert.matches("POST", res.headers["access-control-allow-methods"])
      assert.matches("Authorization", res.headers["access-control-allow-headers"])
    end)

    it("refuses a preflight from any other origin", function()
      local res = h.request("OPTIONS", srv.url .. "/test/echo", { headers = {
        Origin = "https://evil.example", ["Access-Control-Request-Method"] = "POST" } })
      assert.are.same({ 403, "cors_rejected" }, { res.status, res.json.error })
      assert.is_nil(res.headers["access-control-allow-origin"])
    end)

    it("puts the route's CORS headers on the answers C builds itself, 500 and 413 alike", function()
      local function cors_of(res) return { res.status, res.json and res.json.error,
        res.headers["access-control-allow-origin"], res.headers["access-control-expose-headers"] } end
      local from = { Origin = "https://anywhere.example", ["Content-Type"] = "application/json" }
      assert.are.same({ 500, "internal_error", "*", "X-Request-Id, ETag" },
        cors_of(h.request("POST", srv.url .. "/test/c500", { body = "{}", headers = from })))
      assert.matches("handle failed outside its pcall", srv:log())
      assert.are.same({ 413, "payload_too_large", nil, nil },      -- a listed route, origin not listed
        cors_of(h.request("POST", srv.url .. "/test/small/1", { body = string.rep(" ", 65), headers = from })))
      from.Origin = "chrome-extension://shelfsync-test"
      assert.are.same({ 413, "payload_too_large", "chrome-extension://shelfsync-test", "X-Request-Id, ETag" },
        cors_of(h.request("POST", srv.url .. "/test/small/1", { body = string.rep(" ", 65), headers = from })))
    end)

    it("adds the allow-origin header to real responses for a configured origin only", function()
      local ok = h.request("GET", srv.url .. "/test/big", { headers = { Origin = "chrome-extension://shelfsync-test" } })
      assert.are.equal("chrome-extension://shelfsync-test", ok.headers["access-control-allow-origin"])
      local other = h.request("GET", srv.url .. "/test/big", { headers = { Origin = "https://evil.example" } })
      assert.is_nil(other.headers["access-control-allow-origin"])
    end)
  end)

  describe("hot reload", function()
    local function version()
      local res = h.request("GET", srv.url .. "/test/version")
      return res.status == 200 and res.json.version
    end

    it("serves an edited route without a restart, dropping no request under load", function()
      local out = h.test_dir .. "/reload-load"
      h.exec("mkdir -p " .. out)
      -- Four clients, each 300 sequential requests, while the route is rewritten 20 times.
      for i = 1, 4 do
        h.exec(string.format(
          "(for n in $(seq 300); do curl -s -o /dev/null -w '%%{http_code}\\n' --max-time 10 %s/test/version; done > %s/client%d.txt; touch %s/done%d) &",
          srv.url, out, i, out, i))
      end
      for v = 1, 20 do
        h.write_file(root .. "/routes/zz_version.lua.tmp", VERSION_ROUTE:format(v))
        os.rename(root .. "/routes/zz_version.lua.tmp", root .. "/routes/zz_version.lua")
        h.sleep(0.15)
      end
      h.wait_until(function()
        for i = 1, 4 do if not h.read_file(out .. "/done" .. i) then return false end end
        return true
      end, 120, "the load clients")
      local codes = {}
      for i = 1, 4 do
        for code in h.read_file(out .. "/client" .. i .. ".txt"):gmatch("%d+") do
          codes[code] = (codes[code] or 0) + 1
        end
      end
      assert.are.same({ ["200"] = 1200 }, codes)
      h.wait_until(function() return version() == 20 end, 5, "version 20")
      local health = h.request("GET", srv.url .. "/healthz").json
      assert.is_true(health.routes.generation > 1)
      assert.are.equal(h.null, health.routes.lastError)
    end)

    it("refuses a broken route file whole, keeps the last good code and reports file:line", function()
      local before = version()
      h.write_file(root .. "/routes/zz_version.lua", "return { { method = 'GET', path = '/test/version',\n handler = function() return 200, {} end }\n")
      local health = h.wait_until(function()
        local j = h.request("GET", srv.url .. "/healthz").json
        return j.routes.lastError ~= h.null and j
      end, 5, "lastError")
      assert.matches("^routes/zz_version.lua:%d+: ", health.routes.lastError)
      assert.are.equal("degraded", health.status)
      for _ = 1, 8 do assert.are.equal(before, version()) end
      assert.matches("reload refused", srv:log())

      h.write_file(root .. "/routes/zz_version.lua", VERSION_ROUTE:format(99))
      h.wait_until(function() return version() == 99 end, 5, "the fixed route")
      assert.are.equal(h.null, h.request("GET", srv.url .. "/healthz").json.routes.lastError)
    end)

    it("reloads on SIGHUP", function()
      local g = h.request("GET", srv.url .. "/healthz").json.routes.generation
      srv:signal("HUP")
      h.wait_until(function()
        return h.request("GET", srv.url .. "/healthz").json.routes.generation == g + 1
      end, 5, "a new generation")
    end)
  end)
end)

describe("/metrics with a token", function()
  it("answers only a scraper that presents the configured token", function()
    local srv = h.start_server({ env = { SHELFSYNC_METRICS_TOKEN = "scrape-token-123" } })
    local denied = h.request("GET", srv.url .. "/metrics")
    local wrong = h.request("GET", srv.url .. "/metrics", { headers = { Authorization = "Bearer nope" } })
    local ok = h.request("GET", srv.url .. "/metrics", { headers = { Authorization = "Bearer scrape-token-123" } })
    srv:stop()
    assert.are.same({ 403, "forbidden" }, { denied.status, denied.json.error })
    assert.are.equal(403, wrong.status)
    assert.are.equal(200, ok.status)
  end)

  it("needs the token whenever the public URL is not loopback (a proxy makes every client local)", function()
    local srv = h.start_server({ env = { SHELFSYNC_PUBLIC_URL = "https://shelfsync.example" } })
    local res = h.request("GET", srv.url .. "/metrics")
    srv:stop()
    assert.are.same({ 403, "forbidden" }, { res.status, res.json.error })
  end)
end)

describe("shelfsync check", function()
  it("passes on the real tree", function()
    local code, out = h.run("cd " .. h.root .. " && " .. h.binary .. " check")
    assert.are.equal(0, code, out)
  end)

  it("refuses a route whose metadata is wrong, naming it", function()
    local function check(route)
      local root = h.temp_root({ ["routes/zz_bad.lua"] = "return { " .. route .. " }" })
      local code, out = h.run("cd " .. root .. " && SHELFSYNC_ROOT=" .. root .. " " .. h.binary .. " check")
      return { code, out:match("routes%.zz_bad entry 1: [^\n]*") }
    end
    local handler = "handler = function() return 200, {} end"
    assert.are.same({ 1, 'routes.zz_bad entry 1: cors = "public" needs auth = "bearer" or "none" (cookies stay same-origin)' },
      check('{ method = "GET", path = "/x", auth = "session", cors = "public", ' .. handler .. ' }'))
    assert.are.same({ 1, "routes.zz_bad entry 1: body_limit must be a positive whole number of bytes" },
      check('{ method = "POST", path = "/x", auth = "none", body_limit = 0, ' .. handler .. ' }'))
    assert.are.same({ 1, "routes.zz_bad entry 1: cors must be listed or public" },
      check('{ method = "POST", path = "/x", auth = "none", cors = "any", ' .. handler .. ' }'))
    local no_audience = 'routes.zz_bad entry 1: auth = "bearer" needs an audience (the aud of its tokens): '
      .. "1 to 128 printable ASCII characters, no space, quote or backslash"
    assert.are.same({ 1, no_audience },
      check('{ method = "POST", path = "/x", auth = "bearer", ' .. handler .. ' }'))
    assert.are.same({ 1, no_audience },
      check('{ method = "POST", path = "/x", auth = "bearer", audience = "a b", ' .. handler .. ' }'))
    assert.are.same({ 1, no_audience },
      check('{ method = "POST", path = "/x", auth = "bearer", audience = "' .. string.rep("a", 129) .. '", ' .. handler .. ' }'))
    assert.are.same({ 1, 'routes.zz_bad entry 1: audience is for auth = "bearer" routes only' },
      check('{ method = "POST", path = "/x", auth = "session", audience = "x", ' .. handler .. ' }'))
  end)

  it("keeps the server from starting when app.routes() hands C a bearer route without an audience", function()
    local app, n = h.read_file(h.root .. "/lua/app.lua"):gsub(", audience = r%.audience", "")
    assert(n == 1, "lua/app.lua no longer exports the audience as this spec edits it")
    local ok, err = pcall(h.start_server, { root = h.temp_root({ ["lua/app.lua"] = app }) })
    if ok then err:stop() end
    assert.is_false(ok, "the server started")
    assert.matches("app.routes(): route POST /api/sync/import has auth = bearer but no valid audience", err, 1, true)
  end)

  it("fails with file:line on a broken file, even one nothing requires", function()
    local root = h.temp_root({ ["lua/unused.lua"] = "local x = \nreturn {" })
    local code, out = h.run("cd " .. root .. " && SHELFSYNC_ROOT=" .. root .. " " .. h.binary .. " check")
    assert.are.equal(1, code)
    assert.matches("lua/unused.lua:2: ", out)
  end)
end)

describe("graceful shutdown", function()
  it("finishes in-flight requests on SIGTERM, refuses new ones and exits 0", function()
    local root = h.temp_root({ ["routes/zz_test.lua"] = FIXTURE })
    local srv = h.start_server({ root = root })
    local out = h.test_dir .. "/slow-" .. srv.port
    h.exec(string.format("(curl -s -o %s.body -w '%%{http_code}' --max-time 20 %s/test/slow?s=1.5 > %s.code) &",
      out, srv.url, out))
    h.sleep(0.5)
    srv:signal("TERM")
    h.sleep(0.3)
    local refused = h.host.http.request({ url = srv.url .. "/healthz", connect_timeout_ms = 500, timeout_ms = 1000 })
    assert.is_nil(refused)
    h.wait_until(function() return not srv:alive() end, 10, "the server to exit")
    assert.are.equal("200", h.read_file(out .. ".code"))
    assert.are.same({ slept = true }, h.host.json.decode(h.read_file(out .. ".body")))
    assert.are.equal(0, srv:exit_code())
  end)
end)
