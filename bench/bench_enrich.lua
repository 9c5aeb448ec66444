-- bench_enrich: the metadata fetcher against the local Audnexus stand-in, and a large sync
-- while it runs (scripts/bench-enrich.sh starts the provider and the servers).
--
--   BENCH_MODE=enrich lua5.4 bench/bench_enrich.lua   queue BENCH_TITLES titles, time until
--       the queue is empty: titles/s and the server's CPU time per title (utime + stime of
--       BENCH_PID from /proc; PostgreSQL's own time is not in it)
--   BENCH_MODE=sync   lua5.4 bench/bench_enrich.lua   BENCH_RUNS first syncs of BENCH_TITLES
--       new extension-shaped titles (a new user and ASIN range each); prints the median ms.
--       With BENCH_BACKGROUND=1, BENCH_TITLES more titles are queued first, and each sync
--       runs while the fetcher works through them (the script checks it still is).
-- env: BENCH_URL, BENCH_PID, DATABASE_URL, BENCH_TITLES (10000), BENCH_RUNS (3), BENCH_SALT.
package.path = "./?.lua;./lua/?.lua;" .. package.path
package.cpath = "./build/?.so;" .. package.cpath

local host = require("host")
local lib = require("spec.fixtures.library")

local URL = assert(os.getenv("BENCH_URL"), "BENCH_URL not set: run scripts/bench-enrich.sh")
local PID = assert(os.getenv("BENCH_PID"))
local MODE = os.getenv("BENCH_MODE") or "enrich"
local N = tonumber(os.getenv("BENCH_TITLES") or "10000")
local RUNS = tonumber(os.getenv("BENCH_RUNS") or "3")
local SALT = tonumber(os.getenv("BENCH_SALT") or "1")
local encode = host.json.encode

assert(host.pg.connect(assert(os.getenv("DATABASE_URL"))))
local function q(sql, ...) return assert(host.pg.query(sql, ...)) end

local TICK = tonumber(io.popen("getconf CLK_TCK"):read("l")) or 100

local function cpu_s()
  local f = assert(io.open("/proc/" .. PID .. "/stat"))
  local s = f:read("a")
  f:close()
  local rest = s:match("%) (.*)$")
  local fields = {}
  for v in rest:gmatch("%S+") do fields[#fields + 1] = v end
  return (tonumber(fields[12]) + tonumber(fields[13])) / TICK      -- utime, stime
end

local function sleep(s) os.execute("sleep " .. s) end

local function depth() return q("SELECT count(*) AS n FROM enrich_queue")[1].n end

-- n new catalog rows (bare, as an extension sync leaves them) queued for the fetcher.
local function queue(n, prefix)
  q([[WITH c AS (INSERT INTO title_catalog (asin, title)
                 SELECT a, 'Title ' || a
                 FROM (SELECT $2 || lpad(i::text, 10 - length($2), '0') AS a
                       FROM generate_series(1, $1) AS i) AS s
                 RETURNING asin)
      INSERT INTO enrich_queue (asin, region) SELECT asin, 'us' FROM c]], n, prefix)
end

local client = require("bench.client")(URL)

if MODE == "enrich" then
  queue(N, "E" .. SALT)
  local c0, t0 = cpu_s(), host.clock_ms()
  local last, stalled = depth(), 0
  repeat
    sleep(0.2)
    local d = depth()
    if d == last then stalled = stalled + 1 else stalled = 0 end
    last = d
    assert(stalled < 150, "the queue stopped moving at " .. d)
  until d == 0
  local s, cpu = (host.clock_ms() - t0) / 1000, cpu_s() - c0
  local ok = q("SELECT count(*) AS n FROM title_catalog WHERE asin LIKE $1 AND metadata_status = 'ok'",
    "E" .. SALT .. "%")[1].n
  print(string.format("enrich: %d titles in %.1f s: %.0f titles/s, server CPU %.2f s = %.2f ms per title (%d enriched ok)",
    N, s, N / s, cpu, cpu * 1000 / N, ok))
else
  local background = os.getenv("BENCH_BACKGROUND") == "1"
  if background then
    queue(N, "Q" .. SALT)
    sleep(1)
  end
  local times = {}
  for run = 1, RUNS do
    local salt = SALT * 100 + run
    local items = lib.extension_items(lib.generate(N, { seed = salt, salt = salt * 1000 }))
    local body = lib.payload(items, encode)
    local user = client.login(string.format("sync-%d-%d@bench.example", SALT, run))
    times[run] = client.sync(user, body)
    if background then assert(depth() > 0, "the fetcher finished before the sync: queue more titles") end
  end
  table.sort(times)
  print(string.format("sync: %d new titles, %s: median %d ms of %d (%s)", N,
    background and "while the fetcher runs" or "fetcher idle", times[(#times + 1) // 2], RUNS,
    table.concat(times, ", ")))
end
