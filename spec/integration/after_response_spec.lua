-- Work a request leaves for after its answer (lua/after_response.lua, core/http_server.c
-- run_request): it runs on the worker that answered, once the answer is sent; a failing
-- piece is logged and harms nothing else; a failed request's pieces never run; a sync's
-- enrichment queue is filled that way, and `shelfsync import` fills it before it exits.
-- Pieces that block on a lock the spec holds show "after the answer" without a clock.
local h = require("spec.support.helpers")
local fake = require("spec.support.audnexus.provider")

local one = h.one

-- Test-only endpoints: GET /test/later/:tag[/:how] adds a piece that logs "later: ran <tag>"
-- (after an advisory lock the spec may hold: "wait"), then answers or fails as `how` says.
local LATER_ROUTES = [[
local after_response = require("after_response")
local errors = require("errors")
local db = require("db")

local function mark(tag, wait)
  return function()
    if wait then db.query("SELECT pg_advisory_xact_lock(4242)") end
    host.log("info", "later: ran " .. tag)
  end
end

local function later(ctx)
  local tag, how = ctx.params.tag, ctx.params.how
  if how == "fail" then
    after_response.add("boom " .. tag, function() error("piece failed on purpose") end)
  elseif how == "spin" then
    after_response.add("spin " .. tag, function() while true do end end)
  end
  after_response.add("mark " .. tag, mark(tag, how == "wait"))
  if how == "raise" then error("handler failed after adding a piece") end
  if how == "refuse" then errors.raise(409, "refused", "refused after adding a piece") end
  return 200, { tag = tag }
end

return {
  { method = "GET", path = "/test/later/:tag", auth = "none", handler = later },
  { method = "GET", path = "/test/later/:tag/:how", auth = "none", handler = later },
}
]]

local function ran(srv, tag)
  return (srv:log() or ""):find('"msg":"later: ran ' .. tag .. '"', 1, true) ~= nil
end

local function get(srv, path)
  return assert(h.request("GET", srv.url .. path))
end

describe("work after the answer", function()
  local srv

  setup(function()
    -- app.handle fails outside its pcall, after the handler, for .../outside: C answers 500.
    local app = h.read_file(h.root .. "/lua/app.lua")
    local failing, n = app:gsub("\n(  resp%.route = route and route%.path)",
      '\n  if req.path:find("/outside$") then error("handle failed after its handler") end\n%1')
    assert(n == 1, "app.handle's end not found")
    local root = h.temp_root({ ["routes/zz_later.lua"] = LATER_ROUTES, ["lua/app.lua"] = failing })
    -- One general worker: requests run one after another on one VM, so once a request's
    -- piece has run, every piece of the requests before it has run (or never will).
    srv = h.start_server({ root = root, env = { SHELFSYNC_WORKERS = "1",
                                                SHELFSYNC_INSTRUCTION_LIMIT = "20000000" } })
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("runs a piece once the answer is sent, on the worker that answered", function()
    assert(h.db().query("BEGIN"))
    finally(function() h.db().query("ROLLBACK") end)
    assert(h.db().query("SELECT pg_advisory_xact_lock(4242)"))
    -- the piece waits for the lock the spec holds, and the answer arrives all the same
    local res = get(srv, "/test/later/W1/wait")
    assert.same({ 200, "W1" }, { res.status, res.json.tag })
    assert.is_false(ran(srv, "W1"))
    assert(h.db().query("COMMIT"))
    h.wait_until(function() return ran(srv, "W1") end, 10, "the piece to run")
  end)

  it("logs a failing piece, runs the others, and the worker answers the next request", function()
    local res = get(srv, "/test/later/F1/fail")
    assert.equal(200, res.status)
    local id = res.headers["x-request-id"]
    assert.equal(200, get(srv, "/test/later/N1").status)
    h.wait_until(function() return ran(srv, "N1") end, 10, "the next request's piece")
    assert.truthy(srv:log():find("request " .. id .. ": after the answer, boom F1 failed: ", 1, true))
    assert.truthy(srv:log():find("piece failed on purpose", 1, true))
    assert.is_true(ran(srv, "F1"))
  end)

  it("stops a piece that loops at the instruction limit, and the worker goes on", function()
    local res = get(srv, "/test/later/S1/spin")
    assert.equal(200, res.status)
    local id = res.headers["x-request-id"]
    assert.equal(200, get(srv, "/test/later/N2").status)
    h.wait_until(function() return ran(srv, "N2") end, 20, "the next request's piece")
    local stopped = false
    for line in srv:log():gmatch("[^\n]+") do
      if line:find(id, 1, true) and line:find("instruction limit exceeded", 1, true) then stopped = true end
    end
    assert.is_true(stopped)
    assert.equal(200, get(srv, "/healthz").status)
  end)

  it("never runs the pieces of a request that failed", function()
    assert.equal(500, get(srv, "/test/later/R1/raise").status)
    assert.equal(409, get(srv, "/test/later/R2/refuse").status)
    assert.equal(500, get(srv, "/test/later/R3/outside").status)     -- failed outside handle's pcall
    assert.truthy(srv:log():find("handle failed after its handler", 1, true))
    assert.equal(200, get(srv, "/test/later/OK4").status)
    h.wait_until(function() return ran(srv, "OK4") end, 10, "the last request's piece")
    assert.same({ false, false, false }, { ran(srv, "R1"), ran(srv, "R2"), ran(srv, "R3") })
  end)
end)

-- The extension's minimal item.
local function ext_item(asin)
  return { asin = asin, title = "Title " .. asin, source = "LIBRARY", authors = {}, narrators = {},
           listeningProgress = 10, personalRating = 0 }
end

describe("a sync's enrichment queue", function()
  local provider, w, env

  setup(function()
    provider = fake.start()
    env = { SHELFSYNC_METADATA_PROVIDER_URL = provider.url, SHELFSYNC_METADATA_POLL_MS = "50",
            SHELFSYNC_METADATA_RATE_PER_S = "200" }
    w = h.fresh_world({ "alice" }, { env = env })
  end)

  local function enriched(asins)
    return one([[SELECT count(*) AS n FROM title_catalog
                 WHERE asin = ANY($1::text[]) AND metadata_status = 'ok']], asins).n == #asins
  end

  teardown(function()
    if w then w.srv:stop() end
    if provider then provider:stop() end
  end)

  it("is filled after the sync's answer, and the titles are then enriched", function()
    local asins = { "B0LATE0001", "B0LATE0002", "B0LATE0003" }
    local items = {}
    for i, a in ipairs(asins) do items[i] = ext_item(a) end
    local pg = h.db()
    assert(pg.query("BEGIN"))
    finally(function() pg.query("ROLLBACK") end)
    -- No queue row can be written while the spec holds this (a sync reads no queue).
    assert(pg.query("LOCK TABLE enrich_queue IN SHARE MODE"))
    local res = h.sync_items(w.srv, w.alice, items)
    assert.same({ 200, 3 }, { res.status, res.json.newToCatalog })
    assert.equal(0, one("SELECT count(*) AS n FROM enrich_queue WHERE asin = ANY($1::text[])", asins).n)
    assert(pg.query("COMMIT"))
    local line = 'sync ' .. res.json.syncId .. ': 3 titles queued for the enrichment after the answer (3 due or new)'
    h.wait_until(function() return w.srv:log():find(line, 1, true) end, 10, "the queue's log line")
    h.wait_until(function() return enriched(asins) end, 15, "the titles' details")
    assert.equal(0, one("SELECT count(*) AS n FROM enrich_queue WHERE asin = ANY($1::text[])", asins).n)
    -- the route's phase line has no queueing phase: none of the request's time was spent on it
    local route_line = "sync import " .. tostring(res.json.syncId):gsub("%p", "%%%0") ..
      ": .-catalog %d+, library %d+, total %d+"
    assert.truthy(w.srv:log():find(route_line))
  end)

  it("is made good by the next sync of the titles when the process died before queueing", function()
    local asins = { "B0LOST0001", "B0LOST0002" }
    local items = { ext_item(asins[1]), ext_item(asins[2]) }
    local pg = h.db()
    assert(pg.query("BEGIN"))
    finally(function() pg.query("ROLLBACK") end)
    assert(pg.query("LOCK TABLE enrich_queue IN SHARE MODE"))
    assert.equal(200, h.sync_items(w.srv, w.alice, items).status)
    -- the process dies while its queueing waits: the statement dies with its connection
    w.srv:kill()
    h.wait_until(function() return not w.srv:alive() end, 10, "the server to die")
    assert(pg.query([[SELECT pg_terminate_backend(pid) FROM pg_locks
                      WHERE relation = 'enrich_queue'::regclass AND NOT granted]]))
    assert(pg.query("COMMIT"))
    assert.same({ queued = 0, never_checked = 2 }, one([[
      SELECT (SELECT count(*) FROM enrich_queue WHERE asin = ANY($1::text[])) AS queued,
             (SELECT count(*) FROM title_catalog
              WHERE asin = ANY($1::text[]) AND metadata_checked_at IS NULL) AS never_checked]], asins))
    w.srv = h.start_server({ env = env })
    w.alice = h.login(w.srv, "alice@example.com")
    local again = h.sync_items(w.srv, w.alice, items)
    assert.same({ 200, 0 }, { again.status, again.json.newToCatalog })
    h.wait_until(function() return enriched(asins) end, 15, "the titles' details")
  end)
end)

describe("shelfsync import", function()
  setup(function() h.reset_db() end)

  it("queues the file's titles for the enrichment before it exits", function()
    local user = h.create_user("cli-later@example.com", "CLI")
    local env = "DATABASE_URL=" .. h.shell_quote(os.getenv("DATABASE_URL")) ..
      " SHELFSYNC_LOG_LEVEL=info SHELFSYNC_METADATA_PROVIDER_URL=http://127.0.0.1:9 "
    local code, out = h.run(env .. h.shell_quote(h.binary) ..
      " import --user cli-later@example.com spec/fixtures/formats/audible-cli-library.tsv")
    assert.equal(0, code, out)
    assert.truthy(out:find("6 titles queued for the enrichment after the answer (6 due or new)", 1, true), out)
    -- no server runs: the command itself queued them, before it returned
    assert.same({ queued = 6, of_user = 6 }, one([[
      SELECT count(*) AS queued,
             count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM user_library AS ul JOIN title_catalog AS c ON c.id = ul.title_id
               WHERE ul.user_id = $1 AND c.asin = q.asin)) AS of_user
      FROM enrich_queue AS q]], user))
  end)
end)
