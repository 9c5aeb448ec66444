-- bench_sync: end-to-end HTTP syncs against a running server (scripts/bench-sync.sh starts
-- it on a throwaway database and passes its URL and pid).
--
--   lua5.4 bench/bench_sync.lua            (env: BENCH_URL, BENCH_PID, DATABASE_URL,
--                                           BENCH_SIZES="1000,10000", BENCH_RUNS=3,
--                                           BENCH_SEED=0 leaves out the seed's pattern)
--
-- For each size and each payload shape (full metadata; the extension's own fields): a first sync into an empty catalog ("cold"), a first sync of another user
-- whose titles the catalog already holds ("warm"), an unchanged re-sync, and a re-sync with
-- 10% of titles changed. Each is timed from the request's first byte to the answer's last
-- (the JSON body is encoded beforehand, as the extension would have it ready), BENCH_RUNS
-- times; the median is reported with items/s and the server's peak RSS (VmHWM) so far.
-- After each shape's four, the seed stack's pattern (two statements per title) runs the
-- same four scenarios once, and the ratio is printed at the end.
-- Then the Lua VM instructions one 10,000-title import runs (prepare + transaction) are
-- counted in-process against the same database, for comparison with instruction_limit.
package.path = "./?.lua;./lua/?.lua;" .. package.path
package.cpath = "./build/?.so;" .. package.cpath

local host = require("host")
local lib = require("spec.fixtures.library")

local URL = assert(os.getenv("BENCH_URL"), "BENCH_URL not set: run scripts/bench-sync.sh")
local PID = os.getenv("BENCH_PID")
local RUNS = tonumber(os.getenv("BENCH_RUNS") or "3")
local SEED = os.getenv("BENCH_SEED") ~= "0"   -- the seed's pattern side by side (slow)
local SIZES = {}
for n in (os.getenv("BENCH_SIZES") or "1000,10000"):gmatch("%d+") do SIZES[#SIZES + 1] = tonumber(n) end

local encode = host.json.encode

local function vmhwm_mib()
  if not PID then return nil end
  local f = io.open("/proc/" .. PID .. "/status")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local kb = s:match("VmHWM:%s*(%d+) kB")
  return kb and tonumber(kb) / 1024 or nil
end

-- In-process access to the bench's database, as the server's Lua sees it (host.config,
-- one connection), for the seed's pattern and the instruction count below.
local function in_process()
  if rawget(_G, "host") then return end
  local config = dofile("./config.lua")
  rawset(_G, "host", setmetatable({ config = config, log = function() end }, { __index = host }))
  assert(host.pg.connect(assert(os.getenv("DATABASE_URL"))))
end

local client = require("bench.client")(URL)
local login = client.login

-- The work a sync leaves for after its answer (its new titles indexed for search, sql/009;
-- the enrichment queue) runs on the server while the next request may already come. Each
-- timed sync here starts on a settled server, as a user's next sync would find it: no search
-- row pending and no other statement running on the bench's database, five polls in a row.
-- Returns the ms waited (printed after the first syncs: what that work costs).
local function settle()
  in_process()
  local t0, quiet = host.clock_ms(), 0
  while quiet < 5 and host.clock_ms() - t0 < 30000 do
    local r = assert(host.pg.query([[
      SELECT (SELECT count(*) FROM title_search_pending) AS pending,
             (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                AND pid <> pg_backend_pid() AND state = 'active') AS active]]))[1]
    quiet = (r.pending == 0 and r.active == 0) and quiet + 1 or 0
    os.execute("sleep 0.02")
  end
  return host.clock_ms() - t0
end

local settled = {}   -- scenario label -> ms waited after each of its syncs
local function sync(cookie, body, label)
  settle()
  local ms, answer = client.sync(cookie, body)
  if label then
    settled[label] = settled[label] or {}
    table.insert(settled[label], settle())
  end
  return ms, answer
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

local results = {}
local function report(scenario, n, times, answer)
  local ms = median(times)
  local row = {
    scenario = scenario, n = n, ms = ms, rate = n / (ms / 1000), rss = vmhwm_mib(),
    new = answer.newToCatalog, runs = #times,
  }
  results[#results + 1] = row
  print(string.format("%-48s %6d titles  %7.0f ms  %8.0f items/s  new %6d  peak RSS %s",
    scenario, n, ms, row.rate, answer.newToCatalog,
    row.rss and string.format("%.1f MiB", row.rss) or "?"))
end

-- The payload shapes: full metadata, and what the audioshlf extension itself sends (asin,
-- title, source, listeningProgress, personalRating, dateAdded, empty authors/narrators).
local SHAPES = {
  { name = "", items = function(items) return items end },
  { name = " (extension)", items = lib.extension_items },
}

-- The seed stack's import (shared/seeds/000, "Import transaction"), side by side: in one
-- transaction, delete the user's library entries, then per title one catalog upsert
-- (INSERT ... ON CONFLICT (asin) DO UPDATE ... RETURNING id) and one library insert, then
-- the history row: two round trips per title, against the same database server. It runs
-- in-process with the JSON already decoded, so it leaves out the seed's HTTP, parsing and
-- ORM costs: the ratio printed understates the difference.
local seed_sql
local function seed_statements()
  if seed_sql then return seed_sql end
  in_process()
  local cols, json_of, ph, set, arrays = { "asin" }, { "asin" }, { "$1" }, {}, {}
  for _, f in ipairs(require("sync_rules").CATALOG_FIELDS) do
    cols[#cols + 1], json_of[#json_of + 1] = f.column, f.json
    arrays[#cols] = f.array
    ph[#ph + 1] = "$" .. #cols
    set[#set + 1] = f.column .. " = EXCLUDED." .. f.column
  end
  seed_sql = {
    json = json_of, arrays = arrays,
    catalog = "INSERT INTO title_catalog (" .. table.concat(cols, ", ") .. ") VALUES (" ..
      table.concat(ph, ", ") .. ") ON CONFLICT (asin) DO UPDATE SET " .. table.concat(set, ", ") ..
      " RETURNING id",
    library = [[INSERT INTO user_library (user_id, title_id, source, listening_progress,
      personal_rating, date_added) VALUES ($1, $2, $3, $4, $5, $6)]],
  }
  return seed_sql
end

local function seed_import(user_id, items)
  local q = seed_statements()
  local pg, null = host.pg, host.pg.null
  local t0 = host.clock_ms()
  assert(pg.begin())
  assert(pg.query("DELETE FROM user_library WHERE user_id = $1", user_id))
  local args = {}
  for _, it in ipairs(items) do
    for i, k in ipairs(q.json) do
      local v = it[k]
      if v == nil then v = q.arrays[i] and {} or null end
      args[i] = v
    end
    local id = assert(pg.query(q.catalog, table.unpack(args, 1, #q.json)))[1].id
    local rating = it.personalRating
    assert(pg.query(q.library, user_id, id, it.source, it.listeningProgress or 0,
      rating and rating > 0 and rating or null, it.dateAdded or null))
  end
  assert(pg.query([[INSERT INTO sync_history (user_id, synced_at, titles_imported, new_to_catalog,
    library_count, wishlist_count, success) VALUES ($1, now(), $2, 0, 0, 0, true)]], user_id, #items))
  assert(pg.commit())
  return host.clock_ms() - t0
end

local seed_rows = {}
local function seed_user(email)
  in_process()
  return host.pg.query("INSERT INTO users (email) VALUES ($1) RETURNING id", email)[1].id
end

local salt = 1
local function scenarios(shape, n)
  local cold, warm, same, changed = {}, {}, {}, {}
  local answer
  local base_items, base_user
  local tag = shape.name:gsub("%W", "")
  local function label(s) return s .. shape.name end
  for run = 1, RUNS do
    -- cold: a catalog that has none of these titles (a new ASIN range each run)
    salt = salt + 1
    local items = lib.generate(n, { seed = salt, salt = salt * 1000 })
    local body = lib.payload(shape.items(items), encode)
    local user = login(string.format("cold%s-%d-%d@bench.example", tag, n, run))
    cold[run], answer = sync(user, body, label("first sync, empty catalog"))
    assert(answer.newToCatalog == n, "cold sync found titles in the catalog")
    if run == 1 then
      base_items, base_user = items, user
      report(label("first sync, empty catalog") .. " (run 1)", n, { cold[1] }, answer)
    end
  end
  report(label("first sync, empty catalog"), n, cold, answer)

  local body = lib.payload(shape.items(base_items), encode)
  for run = 1, RUNS do
    local user = login(string.format("warm%s-%d-%d@bench.example", tag, n, run))
    warm[run], answer = sync(user, body)
  end
  report(label("first sync, titles already known"), n, warm, answer)

  for run = 1, RUNS do
    same[run], answer = sync(base_user, body)
  end
  report(label("unchanged re-sync"), n, same, answer)

  -- (the extension's shape keeps only the listening progress of what mutate changes)
  local current = base_items
  for run = 1, RUNS do
    local mutated = lib.mutate(current, 0.10, { seed = 100 + run })
    changed[run], answer = sync(base_user, lib.payload(shape.items(mutated), encode))
    current = mutated
  end
  report(label("re-sync, 10% of titles changed"), n, changed, answer)

  -- The seed's pattern, once per scenario, right after ours (same data shapes).
  if SEED then
    local su = seed_user(string.format("seed%s-%d@bench.example", tag, n))
    salt = salt + 1
    local fresh = shape.items(lib.generate(n, { seed = salt, salt = salt * 1000 }))
    local seed_base = shape.items(base_items)
    local rows = {
      { "first sync, empty catalog", seed_import(su, fresh), cold },
      { "first sync, titles already known",
        seed_import(seed_user(string.format("seedw%s-%d@bench.example", tag, n)), seed_base), warm },
    }
    local known = seed_user(string.format("seedr%s-%d@bench.example", tag, n))
    seed_import(known, seed_base)
    rows[#rows + 1] = { "unchanged re-sync", seed_import(known, seed_base), same }
    rows[#rows + 1] = { "re-sync, 10% of titles changed",
      seed_import(known, shape.items(lib.mutate(base_items, 0.10, { seed = 100 }))), changed }
    for _, r in ipairs(rows) do
      seed_rows[#seed_rows + 1] = { scenario = label(r[1]), n = n, seed = r[2], ours = median(r[3]) }
      print(string.format("%-48s %6d titles  %7.0f ms  (seed's pattern, 1 run)", label(r[1]), n, r[2]))
    end
  end
end

for _, n in ipairs(SIZES) do
  for _, shape in ipairs(SHAPES) do scenarios(shape, n) end
end
for name, waits in pairs(settled) do
  local parts = {}
  for i, w in ipairs(waits) do parts[i] = string.format("%.0f", w) end
  print(string.format("after the answer, %s: server busy %s ms (search rows indexed, queue filled)",
    name, table.concat(parts, ", ")))
end

-- Instructions: the same import in-process (no HTTP), counted by a hook every 1000
-- instructions, as the server's budget counts them.
local function count_instructions(n)
  in_process()
  local validate = require("validate")
  local si = require("sync_import")
  local user = host.pg.query("INSERT INTO users (email) VALUES ($1) RETURNING id",
    "count-" .. n .. "@bench.example")[1].id
  local jti = host.crypto.uuid()
  host.pg.query("INSERT INTO sync_tokens (jti, user_id, expires_at) VALUES ($1, $2, now() + interval '1 hour')",
    jti, user)
  local text = lib.payload(lib.generate(n, { seed = 4242, salt = 4242000 }), encode)
  local body = host.json.decode(text)
  local count = 0
  debug.sethook(function() count = count + 1000 end, "", 1000)
  local prep = si.prepare(body, validate.text_ok(text))
  local mid = count
  si.run(user, jti, prep)
  debug.sethook()
  return mid, count
end

local n = SIZES[#SIZES]
local prep_i, total_i = count_instructions(n)
print(string.format("Lua instructions for one %d-title import: %.1f M (validation %.1f M), " ..
  "%.0f%% of instruction_limit", n, total_i / 1e6, prep_i / 1e6,
  total_i * 100 / (dofile("./config.lua").instruction_limit)))

-- Markdown rows for bench/RESULTS.md
-- Issue 16's aims for 10,000 titles with full metadata, end to end (ms).
local AIMS = {
  ["first sync, empty catalog"] = 1000, ["first sync, titles already known"] = 400,
  ["unchanged re-sync"] = 250, ["re-sync, 10% of titles changed"] = 350,
}
local function aim_of(r)
  local aim = r.n == 10000 and AIMS[r.scenario]
  if not aim then return "" end
  return string.format("≤ %d: %s", aim, r.ms <= aim and "met" or "not met")
end

print()
print("| scenario | titles | ms (median of " .. RUNS .. ") | items/s | server peak RSS | aim |")
print("|---|---:|---:|---:|---:|---|")
for _, r in ipairs(results) do
  if r.runs > 1 then
    print(string.format("| %s | %d | %.0f | %.0f | %s | %s |", r.scenario, r.n,
      r.ms, r.rate, r.rss and string.format("%.0f MiB", r.rss) or "?", aim_of(r)))
  end
end

-- The extension's shape against full metadata, per scenario (issue 16 aims at <= 60 %).
print()
print("| scenario | titles | full ms | extension ms | extension / full (aim ≤ 60 %) |")
print("|---|---:|---:|---:|---:|")
local full = {}
for _, r in ipairs(results) do
  if r.runs > 1 and not r.scenario:find(SHAPES[2].name, 1, true) then full[r.scenario .. r.n] = r end
end
for _, r in ipairs(results) do
  local base = r.runs > 1 and r.scenario:gsub(SHAPES[2].name:gsub("%p", "%%%0"), "")
  local f = base and base ~= r.scenario and full[base .. r.n]
  if f then
    print(string.format("| %s | %d | %.0f | %.0f | %.0f %% |", base, r.n, f.ms, r.ms, r.ms * 100 / f.ms))
  end
end

-- The seed's pattern against ours (issue 16 aims: >= 50x on a first sync into an empty
-- catalog, >= 150x on an unchanged re-sync). Ours is end to end over HTTP, the seed's
-- in-process.
if seed_rows[1] then
  print()
  print("| scenario | titles | seed's pattern ms (1 run) | shelfsync ms (median) | seed / shelfsync |")
  print("|---|---:|---:|---:|---:|")
  for _, r in ipairs(seed_rows) do
    print(string.format("| %s | %d | %.0f | %.0f | %.1fx |", r.scenario, r.n, r.seed, r.ours, r.seed / r.ours))
  end
end
