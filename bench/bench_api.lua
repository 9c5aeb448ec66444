-- bench_api: the library read API under load (make bench-api, see scripts/bench-api.sh).
--
-- For one user with BENCH_TITLES (5,000) generated titles, each endpoint is driven by wrk
-- for BENCH_SECONDS (15) with the user's session cookie, and the statement the endpoint
-- runs is driven by pgbench for as long, on the same database, with as many connections
-- as the server has workers: that is the ceiling the database alone allows, and the ratio
-- says how much of it the whole server (HTTP, session lookup, Lua, the JSON answer) keeps.
--
-- "The statement the endpoint runs" is not retyped here: the route's handler is run
-- in-process against the bench database with a spy on host.pg.query, and the statement and
-- parameters it sends are what pgbench replays (pgbench -M extended sends them as
-- parameters, as libpq's PQexecParams in core/pg.c does).
--
-- Environment: BENCH_ROOT, BENCH_URL, BENCH_WORK, DATABASE_URL, BENCH_WORKERS (the server's),
-- BENCH_TITLES, BENCH_SECONDS, BENCH_CONNECTIONS (wrk).
local ROOT = assert(os.getenv("BENCH_ROOT"))
package.path = ROOT .. "/lua/?.lua;" .. ROOT .. "/?.lua;" .. package.path
package.cpath = ROOT .. "/build/?.so;" .. package.cpath

local host = require("host")
rawset(_G, "host", setmetatable({ config = { secret = "bench-api" } }, { __index = host }))
local fx = require("spec.support.library_fixture")

local URL = assert(os.getenv("BENCH_URL"))
local WORK = assert(os.getenv("BENCH_WORK"))
local DB = assert(os.getenv("DATABASE_URL"))
local TITLES = tonumber(os.getenv("BENCH_TITLES") or "5000")
local SECONDS = tonumber(os.getenv("BENCH_SECONDS") or "15")
local WORKERS = tonumber(os.getenv("BENCH_WORKERS") or "4")
-- As many wrk connections as the server has workers, and as many pgbench clients: both
-- sides run at the same concurrency, every worker (every database connection) busy, no
-- queue in front of them inflating the latencies.
local CONNECTIONS = tonumber(os.getenv("BENCH_CONNECTIONS") or tostring(WORKERS))
local format = string.format

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  if not ok then error("command failed: " .. cmd .. "\n" .. out) end
  return out
end

-- ---- the user, the session, the library ----

local pg = host.pg
assert(pg.connect(DB))

local login = assert(host.http.request{
  method = "POST", url = URL .. "/auth/dev/login",
  headers = { ["Content-Type"] = "application/json", Origin = URL },
  body = '{"email":"bench@example.com","name":"Bench"}',
})
assert(login.status == 200, "dev login: " .. login.status .. " " .. login.body)
local cookie
for _, raw in ipairs(login.cookies or {}) do
  local name, value = raw:match("^%s*([^=;]+)=([^;]*)")
  if name == "shelfsync_session" then cookie = name .. "=" .. value end
end
assert(cookie, "no session cookie")
local user_id = assert(pg.query("SELECT id FROM users WHERE lower(email) = 'bench@example.com'"))[1].id

local t0 = host.clock_ms()
fx.insert(pg, user_id, fx.generate{ count = TITLES, seed = 2024, asin_prefix = "A0" })
for i = 1, 5 do
  assert(pg.query([[INSERT INTO sync_history (user_id, synced_at, titles_imported, new_to_catalog,
                      library_count, wishlist_count, success)
                    VALUES ($1, now() - make_interval(days => $2), $3, 0, $3, 0, true)]],
    user_id, i, TITLES))
end
assert(pg.query("VACUUM ANALYZE"))
print(format("bench-api: %d titles for one user seeded in %d ms", TITLES, host.clock_ms() - t0))

-- ---- the statement behind an endpoint ----

-- Runs the route's handler in-process (same code, same database) and returns the one
-- statement it sent, with its parameters.
local function statement_of(route_file, path, query)
  local routes = dofile(ROOT .. "/routes/" .. route_file)
  local handler
  for _, r in ipairs(routes) do
    if r.path == path and r.method == "GET" then handler = r.handler end
  end
  assert(handler, "no route " .. path)
  local calls, real = {}, pg.query
  pg.query = function(sql, ...)
    calls[#calls + 1] = { sql = sql, args = table.pack(...) }
    return real(sql, ...)
  end
  local ok, resp = pcall(handler, { req = { headers = {} }, query = query, user = { id = user_id }, params = {} })
  pg.query = real
  assert(ok, tostring(resp))
  assert(resp.status == 200, "handler answered " .. tostring(resp.status))
  assert(#calls == 1, path .. " sent " .. #calls .. " statements")
  return calls[1], #resp.body
end

-- pgbench script + -D options for a statement: $n become :pn variables.
local function pgbench_script(name, stmt)
  local file = WORK .. "/" .. name .. ".sql"
  local f = assert(io.open(file, "w"))
  f:write((stmt.sql:gsub("%$(%d+)", ":p%1"):gsub("%s+", " ")), "\n")
  f:close()
  local defs = {}
  for i = 1, stmt.args.n do defs[#defs + 1] = "-D " .. sh_quote("p" .. i .. "=" .. tostring(stmt.args[i])) end
  return file, table.concat(defs, " ")
end

-- ---- measuring ----

local function to_ms(v, unit)
  v = tonumber(v)
  if unit == "us" then return v / 1000 end
  if unit == "s" then return v * 1000 end
  return v
end

local function wrk(path, base)
  local url = (base or URL) .. path
  local header = "-H " .. sh_quote("Cookie: " .. cookie)
  run(format("wrk -t1 -c%d -d2s %s %s", CONNECTIONS, header, sh_quote(url)))     -- warm-up
  local out = run(format("wrk -t1 -c%d -d%ds --latency %s %s", CONNECTIONS, SECONDS, header, sh_quote(url)))
  if out:find("Non%-2xx") then error("wrk saw errors on " .. path .. ":\n" .. out) end
  local r = { rps = tonumber(out:match("Requests/sec:%s*([%d%.]+)")) }
  r.p50 = to_ms(out:match("\n%s*50%%%s+([%d%.]+)(%a+)"))
  r.p99 = to_ms(out:match("\n%s*99%%%s+([%d%.]+)(%a+)"))
  assert(r.rps and r.p50 and r.p99, "cannot read wrk output:\n" .. out)
  return r
end

local function pgbench(file, defs)
  local cmd = format("pgbench -n -M extended -c %d -j 1 -T %d -f %s %s %s", WORKERS, SECONDS,
    sh_quote(file), defs, sh_quote(DB))
  local out = run(cmd)
  local tps = tonumber(out:match("tps = ([%d%.]+)"))
  local lat = tonumber(out:match("latency average = ([%d%.]+) ms"))
  local failed = tonumber(out:match("number of failed transactions: (%d+)") or "0")
  assert(tps and lat and failed == 0, "cannot read pgbench output:\n" .. out)
  return { tps = tps, latency = lat }
end

local CASES = {
  { name = "library page", path = "/api/library?limit=50", file = "library.lua", route = "/api/library",
    query = { limit = "50" } },
  { name = "search q=sanderson", path = "/api/library?q=sanderson", file = "library.lua",
    route = "/api/library", query = { q = "sanderson" } },
  { name = "search q=sandersen (typo)", path = "/api/library?q=sandersen", file = "library.lua",
    route = "/api/library", query = { q = "sandersen" } },
  { name = "dashboard", path = "/api/dashboard", file = "dashboard.lua", route = "/api/dashboard",
    query = {} },
}

-- ---- A/B: the same endpoints on a second server (BENCH_URL_B, another configuration) ----

local URL_B = os.getenv("BENCH_URL_B") or ""
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "5")

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

-- wrk on A and B in turn, ROUNDS times per endpoint: medians of req/s and p99, and each
-- round's B/A ratio of req/s (the ratio of one round is measured under one load).
if URL_B ~= "" then
  print(format("bench-api A/B: A %s, B %s, %d rounds of %d s per endpoint (load average %s before)",
    URL, URL_B, ROUNDS, SECONDS, io.open("/proc/loadavg"):read("l"):match("^(%S+)")))
  print("| endpoint | A req/s | A p99 | B req/s | B p99 | A / B req/s (median of rounds) |")
  print("|---|---:|---:|---:|---:|---:|")
  for _, c in ipairs(CASES) do
    local ar, ap, br, bp, ratio = {}, {}, {}, {}, {}
    for i = 1, ROUNDS do
      local a, b
      if i % 2 == 1 then a = wrk(c.path); b = wrk(c.path, URL_B) else b = wrk(c.path, URL_B); a = wrk(c.path) end
      ar[i], ap[i], br[i], bp[i], ratio[i] = a.rps, a.p99, b.rps, b.p99, a.rps / b.rps
    end
    print(format("| `GET %s` | %.0f | %.2f ms | %.0f | %.2f ms | %.2f |", c.path, median(ar), median(ap),
      median(br), median(bp), median(ratio)))
  end
  print(format("(load average %s after)", io.open("/proc/loadavg"):read("l"):match("^(%S+)")))
  os.exit(0)
end

local results = {}
local LOAD_BEFORE
do
  local f = io.open("/proc/loadavg")
  LOAD_BEFORE = f and f:read("l"):match("^(%S+)") or "?"
  if f then f:close() end
end
for i, c in ipairs(CASES) do
  local stmt, bytes = statement_of(c.file, c.route, c.query)
  local file, defs = pgbench_script("case" .. i, stmt)
  local w = wrk(c.path)
  local p = pgbench(file, defs)
  results[i] = { case = c, w = w, p = p, bytes = bytes }
  print(format("  %-27s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms | pgbench %8.0f tps (avg %5.2f ms) | %3.0f%%",
    c.name, w.rps, w.p50, w.p99, p.tps, p.latency, 100 * w.rps / p.tps))
end

-- ---- markdown for bench/RESULTS.md ----

local function loadavg()
  local f = io.open("/proc/loadavg")
  if not f then return "?" end
  local l = f:read("l"):match("^(%S+)")
  f:close()
  return l
end

local pgv = run("pgbench --version"):match("([%d%.]+)")
local cpu = run("grep -m1 'model name' /proc/cpuinfo || true"):match(":%s*(.-)%s*$") or "unknown CPU"
print()
print(format("#### %s, %s, %d cores, PostgreSQL %s, %d workers, wrk -t1 -c%d, pgbench -c%d, %d s each"
  .. " (load average %s before, %s after)", os.date("!%Y-%m-%d %H:%M UTC"), cpu, tonumber(run("nproc")),
  pgv, WORKERS, CONNECTIONS, WORKERS, SECONDS, LOAD_BEFORE, loadavg()))
print()
print("| endpoint (5,000-title library) | body | req/s | p50 | p99 | pgbench tps, same SQL | server / pgbench |")
print("|---|---:|---:|---:|---:|---:|---:|")
for _, r in ipairs(results) do
  print(format("| `GET %s` | %.1f KiB | %.0f | %.2f ms | %.2f ms | %.0f | %.0f%% |", r.case.path,
    r.bytes / 1024, r.w.rps, r.w.p50, r.w.p99, r.p.tps, 100 * r.w.rps / r.p.tps))
end
