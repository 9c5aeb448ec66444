-- bench/bench_db.lua: the catalog upsert of a sync, batched (host.pg.upsert) against one
-- INSERT ... ON CONFLICT per row inside one transaction (the seed's import pattern).
--
--   lua5.4 bench/bench_db.lua SOCKET_URL TCP_URL      (scripts/bench-db.sh sets it up)
--
-- Each database must be migrated; title_catalog is truncated between runs. Every figure is
-- the median of several runs, in milliseconds, for 10,000 realistic rows.
local host = require("host")
local pg = host.pg
local null = host.json.null

local N = tonumber(os.getenv("BENCH_ROWS") or "") or 10000
local RUNS = tonumber(os.getenv("BENCH_RUNS") or "") or 5
local PER_ROW_RUNS = tonumber(os.getenv("BENCH_PER_ROW_RUNS") or "") or 3

-- ---- realistic rows (deterministic) ----

local seed = 12345
local function rnd(n)  -- 1..n
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n + 1
end
local function pick(list) return list[rnd(#list)] end

local WORDS = { "Shadow", "Empire", "Stone", "River", "Night", "Crown", "Last", "Iron", "Silent", "Garden",
  "Winter", "Fire", "Glass", "Storm", "Dragon", "Kingdom", "Memory", "Ocean", "Star", "Road", "Ash",
  "Wolf", "Clockwork", "Salt", "Mirror", "Harbor", "Dust", "Ember", "Raven", "Lantern" }
local FIRST = { "Brandon", "Ursula", "Terry", "Octavia", "Neil", "N. K.", "Robin", "Joe", "Naomi", "Liu",
  "Friedrich", "Agatha", "Jules", "Haruki", "Chimamanda", "Arkady", "Zoë", "Søren", "Amélie", "José" }
local LAST = { "Sanderson", "Le Guin", "Pratchett", "Butler", "Gaiman", "Jemisin", "Hobb", "Abercrombie",
  "Novik", "Cixin", "Dürrenmatt", "Christie", "Verne", "Murakami", "Adichie", "Strugatsky", "O'Brien",
  "Kierkegaard", "Nothomb", "Saramago" }
local CATS = { "Science Fiction & Fantasy", "Fantasy", "Epic", "Literature & Fiction", "Mystery, Thriller & Suspense",
  "Historical", "Biographies & Memoirs", "Science", "Classics", "Humor", "Horror", "Romance" }
local LANGS = { "english", "german", "french", "spanish" }
local PUBS = { "Tor Books", "Audible Studios", "Penguin Audio", "Random House Audio", "Macmillan Audio" }
local LOREM = "The quick brown fox jumps over the lazy dog while a storm gathers over the harbor; "
  .. "an old map, a broken crown and a promise made in winter pull three strangers into a war "
  .. "none of them chose. Narrated with warmth and wit, this is a story about memory, loss, "
  .. "and the roads we take home. "

local function person() return pick(FIRST) .. " " .. pick(LAST) end

local function asin_of(i)
  return string.format("B0%08X", i * 2654435761 % 4294967296)
end

local function catalog_row(i)
  local authors, narrators, cats = {}, {}, {}
  for k = 1, rnd(3) do authors[k] = person() end
  for k = 1, rnd(2) do narrators[k] = person() end
  for k = 1, rnd(3) do cats[k] = CATS[(i + k * 5) % #CATS + 1] end
  local series = rnd(2) == 1
  local len = 200 + rnd(400)
  local summary = string.rep(LOREM, 3):sub(rnd(100), rnd(100) + len)
  return {
    asin = asin_of(i),
    title = pick(WORDS) .. " of the " .. pick(WORDS) .. " " .. i,
    subtitle = rnd(3) == 1 and ("Book " .. rnd(9) .. " of the " .. pick(WORDS) .. " Cycle") or null,
    authors = authors, narrators = narrators,
    series_name = series and ("The " .. pick(WORDS) .. " Saga") or null,
    series_position = series and (rnd(12) + (rnd(4) == 1 and 0.5 or 0)) or null,
    duration = 120 + rnd(2400),
    cover_image_url = "https://m.media-amazon.com/images/I/" .. asin_of(i) .. "._SL500_.jpg",
    summary = summary,
    rating = (rnd(40) + 10) / 10,
    rating_count = rnd(90000),
    publisher = pick(PUBS),
    release_date = string.format("%04d-%02d-%02d", 1990 + rnd(35), rnd(12), rnd(28)),
    language = pick(LANGS),
    categories = cats,
  }
end

local ROWS = {}
for i = 1, N do ROWS[i] = catalog_row(i) end

local COLUMNS = { "asin", "title", "subtitle", "authors", "narrators", "series_name", "series_position",
  "duration", "cover_image_url", "summary", "rating", "rating_count", "publisher", "release_date",
  "language", "categories" }
-- What a sync sends: fields an item lacks keep what the catalog knows.
local KEEP = { "subtitle", "series_name", "series_position", "duration", "cover_image_url", "summary",
  "rating", "rating_count", "publisher", "release_date", "language" }

-- The table under test: the real title_catalog, or a bare copy of its columns (keys only:
-- no search column, GIN index, CHECKs or trigger) that shows what the binding itself costs.
local TABLE = "title_catalog"

local function spec()
  return { table = TABLE, key = { "asin" }, columns = COLUMNS, rows = ROWS,
           only_changed = true, keep_on_null = KEEP }
end

-- ---- timing ----

local function now() return host.clock_ms() end

local function median(list)
  table.sort(list)
  local n = #list
  return n % 2 == 1 and list[(n + 1) / 2] or (list[n / 2] + list[n / 2 + 1]) / 2
end

local function must(ok, msg, ...)
  if not ok then error(tostring(msg) .. " " .. table.concat({ ... }, " "), 2) end
  return ok
end

local function truncate()
  must(pg.query("TRUNCATE " .. TABLE .. " CASCADE"))
  must(pg.query("VACUUM ANALYZE " .. TABLE))
end

-- Checks an answer: N rows, the expected number inserted, every id present.
local function check(res, inserted)
  assert(#res == N, "expected " .. N .. " answers, got " .. #res)
  local n = 0
  for _, r in ipairs(res) do
    assert(r.id ~= nil and r.id ~= null, "an answer without id")
    if r.inserted then n = n + 1 end
  end
  assert(n == inserted, "expected " .. inserted .. " inserted, got " .. n)
end

local function batched()
  local first, again = {}, {}
  for _ = 1, RUNS do
    truncate()
    local t0 = now()
    check(must(pg.upsert(spec())), N)
    first[#first + 1] = now() - t0
    t0 = now()
    check(must(pg.upsert(spec())), 0)
    again[#again + 1] = now() - t0
  end
  return median(first), median(again)
end

-- One statement per row, same semantics and the same answers (id, inserted) as the batch.
local function per_row_sql()
  local set, old, new = {}, {}, {}
  local keep = {}
  for _, c in ipairs(KEEP) do keep[c] = true end
  for _, c in ipairs(COLUMNS) do
    if c ~= "asin" then
      local v = keep[c] and ("COALESCE(EXCLUDED." .. c .. ", t." .. c .. ")") or ("EXCLUDED." .. c)
      set[#set + 1] = c .. " = " .. v
      old[#old + 1] = "t." .. c
      new[#new + 1] = v
    end
  end
  local ph = {}
  for i = 1, #COLUMNS do ph[i] = "$" .. i end
  return "INSERT INTO " .. TABLE .. " AS t (" .. table.concat(COLUMNS, ", ") .. ") VALUES ("
    .. table.concat(ph, ", ") .. ") ON CONFLICT (asin) DO UPDATE SET " .. table.concat(set, ", ")
    .. " WHERE (" .. table.concat(old, ", ") .. ") IS DISTINCT FROM (" .. table.concat(new, ", ") .. ")"
    .. " RETURNING id, (xmax = 0) AS inserted"
end


local function per_row_once()
  local res, sql = {}, per_row_sql()
  must(pg.begin())
  for i, row in ipairs(ROWS) do
    local args = {}
    for k, c in ipairs(COLUMNS) do args[k] = row[c] end
    local r = must(pg.query(sql, table.unpack(args, 1, #COLUMNS)))
    if r[1] then
      res[i] = { id = r[1].id, inserted = r[1].inserted }
    else  -- unchanged: a second round trip for the id
      res[i] = { id = must(pg.query("SELECT id FROM " .. TABLE .. " WHERE asin = $1", row.asin))[1].id, inserted = false }
    end
  end
  must(pg.commit())
  return res
end

local function per_row()
  local first, again = {}, {}
  for _ = 1, PER_ROW_RUNS do
    truncate()
    local t0 = now()
    check(per_row_once(), N)
    first[#first + 1] = now() - t0
    t0 = now()
    check(per_row_once(), 0)
    again[#again + 1] = now() - t0
  end
  return median(first), median(again)
end

-- ---- alternatives the batched design was chosen against (the first design of pg.c):
-- text[] parameters built in Lua, a wide input CTE deduplicated by DISTINCT ON, ids of the
-- rows left alone by a join in the same statement or by a second SELECT, array columns as
-- array literals or as JSON text. host.pg.query encodes the parameters (in C).

local function literal(list)  -- a Lua array of strings as a PostgreSQL array literal
  local parts = {}
  for i, s in ipairs(list) do parts[i] = '"' .. s:gsub('[\\"]', "\\%0") .. '"' end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function json_list(list) return host.json.encode(list) end

local ARRAY_COLS = { authors = true, narrators = true, categories = true }

local function column_params(array_encoding)
  local params = {}
  for k, c in ipairs(COLUMNS) do
    local col = {}
    for i, row in ipairs(ROWS) do
      local v = row[c]
      if ARRAY_COLS[c] then v = array_encoding(v) end
      col[i] = v
    end
    params[k] = col
  end
  return params
end

local TYPES = { asin = "text", title = "text", subtitle = "text", authors = "text[]", narrators = "text[]",
  series_name = "text", series_position = "double precision", duration = "integer",
  cover_image_url = "text", summary = "text", rating = "double precision", rating_count = "integer",
  publisher = "text", release_date = "date", language = "text", categories = "text[]" }

-- The upsert statement; `tail` picks how unchanged rows get their ids.
local function variant_sql(json_arrays, join_ids)
  local sel, ps, set, old, new, keep = {}, {}, {}, {}, {}, {}
  for _, c in ipairs(KEEP) do keep[c] = true end
  for k, c in ipairs(COLUMNS) do
    ps[k] = "$" .. k .. "::text[]"
    if ARRAY_COLS[c] and json_arrays then
      sel[k] = "ARRAY(SELECT jsonb_array_elements_text(u.p" .. k .. "::jsonb)) AS " .. c
    else
      sel[k] = "u.p" .. k .. "::" .. TYPES[c] .. " AS " .. c
    end
    if c ~= "asin" then
      local v = keep[c] and ("COALESCE(EXCLUDED." .. c .. ", t." .. c .. ")") or ("EXCLUDED." .. c)
      set[#set + 1] = c .. " = " .. v
      old[#old + 1] = "t." .. c
      new[#new + 1] = v
    end
  end
  local names = {}
  for k = 1, #COLUMNS do names[k] = "p" .. k end
  local sql = "WITH input AS (SELECT u.ord, " .. table.concat(sel, ", ") .. " FROM unnest(" .. table.concat(ps, ", ")
    .. ") WITH ORDINALITY AS u(" .. table.concat(names, ", ") .. ", ord)), upserted AS (INSERT INTO title_catalog AS t ("
    .. table.concat(COLUMNS, ", ") .. ") SELECT DISTINCT ON (asin) " .. table.concat(COLUMNS, ", ")
    .. " FROM input ORDER BY asin, ord DESC ON CONFLICT (asin) DO UPDATE SET " .. table.concat(set, ", ")
    .. " WHERE (" .. table.concat(old, ", ") .. ") IS DISTINCT FROM (" .. table.concat(new, ", ") .. ")"
    .. " RETURNING t.asin, t.id, (t.xmax = 0) AS inserted) "
  if join_ids then
    return sql .. "SELECT CASE WHEN r.inserted IS NULL THEN t.id ELSE r.id END AS id, "
      .. "COALESCE(r.inserted, false) AS inserted FROM input i LEFT JOIN upserted r ON r.asin = i.asin "
      .. "LEFT JOIN title_catalog t ON r.inserted IS NULL AND t.asin = i.asin ORDER BY i.ord"
  end
  return sql .. "SELECT asin, id, inserted FROM upserted"
end

-- Runs a variant once; returns the answers in input order.
local function run_variant(sql, params, join_ids)
  local rows = must(pg.query(sql, table.unpack(params, 1, #COLUMNS)))
  if join_ids then return rows end
  local by_asin = {}
  for _, r in ipairs(rows) do by_asin[r.asin] = r end
  local missing = {}
  for _, row in ipairs(ROWS) do
    if not by_asin[row.asin] then missing[#missing + 1] = row.asin end
  end
  if #missing > 0 then
    for _, r in ipairs(must(pg.query("SELECT asin, id FROM title_catalog WHERE asin = ANY($1::text[])", missing))) do
      by_asin[r.asin] = { id = r.id, inserted = false }
    end
  end
  local res = {}
  for i, row in ipairs(ROWS) do res[i] = by_asin[row.asin] end
  return res
end

local function variant(json_arrays, join_ids)
  local params = column_params(json_arrays and json_list or literal)
  local sql = variant_sql(json_arrays, join_ids)
  local first, again = {}, {}
  for _ = 1, RUNS do
    truncate()
    local t0 = now()
    check(run_variant(sql, params, join_ids), N)
    first[#first + 1] = now() - t0
    t0 = now()
    check(run_variant(sql, params, join_ids), 0)
    again[#again + 1] = now() - t0
  end
  return median(first), median(again)
end

-- ---- main ----

local targets = { { "unix socket", arg[1] }, { "TCP 127.0.0.1", arg[2] } }

local function line(label, first, again, base)
  print(string.format("  %-56s first insert %8.1f ms   unchanged re-run %8.1f ms%s", label, first, again,
    base and string.format("   (per-row / this: %.1fx, %.1fx)", base[1] / first, base[2] / again) or ""))
end

print(string.format("bench-db: %d catalog rows, medians of %d batched and %d per-row runs", N, RUNS, PER_ROW_RUNS))
local BARE = [[CREATE TABLE IF NOT EXISTS bench_bare (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), asin text NOT NULL UNIQUE, title text NOT NULL,
  subtitle text, authors text[] NOT NULL DEFAULT '{}', narrators text[] NOT NULL DEFAULT '{}',
  series_name text, series_position double precision, duration integer, cover_image_url text,
  summary text, rating double precision, rating_count integer, publisher text, release_date date,
  language text, categories text[] NOT NULL DEFAULT '{}')]]

local verdict = {}
for _, t in ipairs(targets) do
  local name, url = t[1], t[2]
  if url and url ~= "" then
    must(pg.connect(url))
    must(pg.query(BARE))
    for _, tbl in ipairs({ "title_catalog", "bench_bare" }) do
      TABLE = tbl
      print(name .. ", " .. (tbl == "bench_bare" and "bare copy of the columns (keys only)" or "title_catalog (full schema)") .. ":")
      local pf, pa = per_row()
      line("per row (one INSERT ... ON CONFLICT each, 1 tx)", pf, pa)
      local bf, ba = batched()
      line("batched host.pg.upsert (unnest)", bf, ba, { pf, pa })
      if tbl == "title_catalog" and os.getenv("BENCH_VARIANTS") ~= "0" then
        local vf, va = variant(false, true)
        line("  alt: text params, wide CTE + DISTINCT ON, ids by join", vf, va)
        local wf, wa = variant(false, false)
        line("  alt: text params, wide CTE + DISTINCT ON, 2nd SELECT", wf, wa)
        local jf, ja = variant(true, true)
        line("  alt: as the first, arrays as JSON text", jf, ja)
      end
      verdict[#verdict + 1] = { name = name .. ", " .. tbl, ratio = pf / bf, first = bf }
    end
    must(pg.query("DROP TABLE bench_bare"))
  end
end
for _, v in ipairs(verdict) do
  print(string.format("%s: batched first insert %.1f ms (aim < 150 ms: %s), %.1fx faster than per row (aim >= 8x: %s)",
    v.name, v.first, v.first < 150 and "met" or "NOT met", v.ratio, v.ratio >= 8 and "met" or "NOT met"))
end
