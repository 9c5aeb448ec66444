-- host.pg (core/pg.c) and lua/db.lua against the real PostgreSQL: typed results, parameters,
-- transactions, reconnection (on a private throwaway cluster, so restarting it disturbs no
-- other test run) and the batched upsert.
local h = require("spec.support.helpers")
local host = h.host
local null = h.null
local db = require("db")

local DATABASE_URL = assert(os.getenv("DATABASE_URL"), "DATABASE_URL not set: run through make test")

local function pg() return h.db() end

-- Runs fn with host.pg connected to url, then reconnects to the run's database whatever happens.
local function with_connection(url, fn)
  local ok, err = pcall(function()
    assert(host.pg.connect(url))
    fn()
  end)
  assert(host.pg.connect(DATABASE_URL))
  if not ok then error(err, 0) end
end

local function count(sql, ...)
  return assert(pg().query(sql, ...))[1].n
end

describe("host.pg.query", function()
  it("returns every type typed: integers, numbers, booleans, ISO-8601 UTC timestamps, dates, json text, arrays and null", function()
    local rows = assert(pg().query([==[
      SELECT 1::int2 AS i2, -2::int4 AS i4, 9007199254740993::int8 AS i8, 1.5::float4 AS f4,
             0.1::float8 AS f8, 12345.678::numeric AS num, true AS yes, false AS no,
             '2024-01-02 03:04:05.678+02'::timestamptz AS ts, '2024-02-29'::date AS day,
             '{"a": [1, 2]}'::json AS j, '{"b": null}'::jsonb AS jb, 'héllo ✓ 日本'::text AS uni,
             ''::text AS empty, NULL::text AS nothing, 'B0ABCDEF12'::varchar AS vc,
             ARRAY[1, NULL, 3]::int[] AS ints, ARRAY['a', NULL, '']::text[] AS texts,
             ARRAY[[1, 2], [3, 4]] AS matrix, '[0:1]={7,8}'::int[] AS bounded,
             ARRAY[true, false] AS bools, ARRAY[1.25]::numeric[] AS nums,
             ARRAY['2024-06-01 12:00:00+00']::timestamptz[] AS stamps,
             '{}'::text[] AS none, 'infinity'::timestamptz AS forever,
             '00000000-0000-0000-0000-000000000001'::uuid AS id,
             'WISHLIST'::library_source AS source,
             ARRAY['LIBRARY', 'WISHLIST']::library_source[] AS sources]==]))
    assert.same({
      i2 = 1, i4 = -2, i8 = 9007199254740993, f4 = 1.5, f8 = 0.1, num = 12345.678, yes = true, no = false,
      ts = "2024-01-02T01:04:05.678Z", day = "2024-02-29", j = '{"a": [1, 2]}', jb = '{"b": null}',
      uni = "héllo ✓ 日本", empty = "", nothing = null, vc = "B0ABCDEF12",
      ints = { 1, null, 3 }, texts = { "a", null, "" }, matrix = { { 1, 2 }, { 3, 4 } }, bounded = { 7, 8 },
      bools = { true, false }, nums = { 1.25 }, stamps = { "2024-06-01T12:00:00.000Z" }, none = {},
      forever = "infinity", id = "00000000-0000-0000-0000-000000000001", source = "WISHLIST",
      sources = { "LIBRARY", "WISHLIST" },
    }, rows[1])
    assert.is_true(math.type(rows[1].i8) == "integer")
    assert.is_true(math.type(rows[1].f8) == "float")
    assert.equal(1, rows.affected)
  end)

  it("marks the rows table and every array with the shelfsync.array metatable", function()
    local rows = assert(pg().query("SELECT ARRAY[ARRAY[1]] AS a, '{}'::text[] AS b"))
    local mt = debug.getregistry()["shelfsync.array"]
    assert.is_table(mt)
    assert.equal(mt, getmetatable(rows))
    assert.equal(mt, getmetatable(rows[1].a))
    assert.equal(mt, getmetatable(rows[1].a[1]))
    assert.equal(mt, getmetatable(rows[1].b))
    assert.is_nil(getmetatable(rows[1]))
  end)

  it("converts timestamps to UTC whatever the session time zone", function()
    assert(pg().query("SET TimeZone = 'Asia/Kolkata'"))
    local rows = assert(pg().query("SELECT '2024-03-10 23:59:59.999+00'::timestamptz AS t, now()::text AS local"))
    assert(pg().query("SET TimeZone = 'UTC'"))
    assert.equal("2024-03-10T23:59:59.999Z", rows[1].t)
    assert.matches("%+05:30$", rows[1]["local"])
  end)

  it("round-trips parameters of every kind, including unicode, empty strings and 1 MiB of text", function()
    local big = string.rep("0123456789abcdé", 70000):sub(1, 1048576)
    local rows = assert(pg().query(
      "SELECT $1::text AS s, $2::text AS e, $3::int8 AS i, $4::float8 AS f, $5::bool AS b, $6::text AS n, "
      .. "$7::text AS big, length($7) AS len, $8::float8 AS tiny, $9::int8 AS maxi",
      "zwölf 🎧 \"quoted\" 'single' \\", "", -42, 0.1, false, null, big, 5e-324, math.maxinteger))
    assert.same({ s = "zwölf 🎧 \"quoted\" 'single' \\", e = "", i = -42, f = 0.1, b = false, n = null,
                  big = big, len = utf8.len(big), tiny = 5e-324, maxi = math.maxinteger }, rows[1])
  end)

  it("round-trips arrays holding quotes, commas, braces, backslashes, NULL, \"NULL\", empty strings and unicode", function()
    local nasty = { 'say "hi"', "a,b", "{braces}", "back\\slash", null, "NULL", "", "  spaced  ", "ünï ✓", "}{\\\"," }
    local rows = assert(pg().query(
      "SELECT $1::text[] AS t, cardinality($1::text[]) AS n, $1::text[] IS NULL AS isnull, "
      .. "$2::int[] AS ints, $3::text[] AS empty, $4::int[] AS nested, $5::float8[] AS floats",
      nasty, { 1, null, -3 }, {}, { { 1, 2 }, { 3, 4 } }, { 0.1, 1e300 }))
    assert.same({ t = nasty, n = #nasty, isnull = false, ints = { 1, null, -3 }, empty = {},
                  nested = { { 1, 2 }, { 3, 4 } }, floats = { 0.1, 1e300 } }, rows[1])
    -- the server sees the same elements, one by one
    local elems = assert(pg().query("SELECT e, e IS NULL AS isnull FROM unnest($1::text[]) WITH ORDINALITY u(e, o) ORDER BY o", nasty))
    for i, v in ipairs(nasty) do
      assert.same(v == null and { e = null, isnull = true } or { e = v, isnull = false }, elems[i])
    end
  end)

  it("counts trailing nil parameters as NULL", function()
    local rows = assert(pg().query("SELECT $1::text IS NULL AS a, $2::int IS NULL AS b", nil, nil))
    assert.same({ a = true, b = true }, rows[1])
  end)

  it("refuses a string with a NUL byte and a table that is not an array, without sending them", function()
    local r1, e1 = pg().query("SELECT $1::text", "a\0b")
    local r2, e2 = pg().query("SELECT $1::text[]", { a = 1 })
    local r3, e3 = pg().query("SELECT $1::text[]", { "ok", "bad\0" })
    assert.same({ nil, "parameter $1 contains a NUL byte", "22021", "query" },
                { r1, e1.message, e1.sqlstate, e1.kind })
    assert.is_nil(r2)
    assert.equal("query", e2.kind)
    assert.matches("must be an array", e2.message)
    assert.is_nil(r3)
    assert.matches("NUL byte", e3.message)
  end)

  it("raises on a parameter that cannot be a value (misuse)", function()
    assert.has_error(function() pg().query("SELECT $1", print) end)
  end)

  it("answers nil and an error table (sqlstate, kind, message, constraint) for a failing statement", function()
    h.reset_db()
    local rows, err = pg().query("INSERT INTO title_catalog (asin, title) VALUES ($1, $2)", "bad", "T")
    assert.is_nil(rows)
    assert.matches("title_catalog_asin_format", err.message)
    assert.same({ "23514", "query", "title_catalog_asin_format", "title_catalog" },
                { err.sqlstate, err.kind, err.constraint, err.table })
    assert.equal("database error: " .. err.message .. " (SQLSTATE 23514)", tostring(err))
  end)

  it("applies the statement timeout given to connect, as a query error", function()
    local ok, err = pcall(function()
      assert(host.pg.connect(DATABASE_URL, 200))
      local rows, err = host.pg.query("SELECT pg_sleep(2)")
      assert.same({ nil, "canceling statement due to statement timeout", "57014", "query" },
                  { rows, err.message, err.sqlstate, err.kind })
      assert.equal(1, assert(host.pg.query("SELECT 1 AS x"))[1].x)
    end)
    assert(host.pg.connect(DATABASE_URL))
    assert(ok, err)
  end)

  it("reports the affected row count of writes", function()
    h.reset_db()
    local rows = assert(pg().query("INSERT INTO title_catalog (asin, title) VALUES ('B000000001', 'a'), ('B000000002', 'b')"))
    assert.equal(2, rows.affected)
    assert.equal(0, #rows)
    assert.equal(2, assert(pg().query("UPDATE title_catalog SET title = 'c'")).affected)
  end)
end)

describe("db (lua/db.lua)", function()
  before_each(function() h.reset_db() end)

  it("db.one returns the first row or nil", function()
    assert.same({ x = 1 }, db.one("SELECT 1 AS x UNION ALL SELECT 2 ORDER BY 1"))
    assert.is_nil(db.one("SELECT 1 AS x WHERE false"))
  end)

  it("db.query raises the error table for a SQL error (its tostring names the SQLSTATE), db.try returns it", function()
    local ok, err = pcall(db.query, "SELECT 1/0")
    assert.is_false(ok)
    assert.same({ "22012", "query" }, { err.sqlstate, err.kind })
    assert.matches("division by zero %(SQLSTATE 22012%)", tostring(err))
    local rows
    rows, err = db.try("INSERT INTO title_catalog (asin, title) VALUES ('B000000001', '')")
    assert.same({ nil, "23514", "title_catalog_title_length" }, { rows, err.sqlstate, err.constraint })
    assert.matches("title_catalog_title_length", err.message)
  end)

  it("db.tx commits what fn wrote and returns fn's results", function()
    local a, b = db.tx(function(x)
      db.query("INSERT INTO title_catalog (asin, title) VALUES ('B000000001', $1)", x)
      return "done", 2
    end, "kept")
    assert.same({ "done", 2 }, { a, b })
    assert.equal("kept", db.one("SELECT title FROM title_catalog").title)
    assert.is_false(db.in_tx())
  end)

  it("db.tx rolls everything back on an error and re-raises the very same error value", function()
    local raised = setmetatable({ status = 409, code = "conflict" }, { __tostring = function() return "409" end })
    local ok, err = pcall(db.tx, function()
      db.query("INSERT INTO title_catalog (asin, title) VALUES ('B000000001', 'gone')")
      error(raised)
    end)
    assert.is_false(ok)
    assert.equal(raised, err)
    assert.equal(0, count("SELECT count(*) AS n FROM title_catalog"))
    assert.is_false(db.in_tx())
  end)

  it("db.tx rolls back when a statement inside fails", function()
    local ok, err = pcall(db.tx, function()
      db.query("INSERT INTO title_catalog (asin, title) VALUES ('B000000001', 'gone')")
      db.query("INSERT INTO title_catalog (asin, title) VALUES ('B000000001', 'duplicate')")
    end)
    assert.is_false(ok)
    assert.matches("23505", err)
    assert.equal(0, count("SELECT count(*) AS n FROM title_catalog"))
  end)

  it("db.tx refuses to commit a transaction in which a statement failed, even if fn caught it", function()
    local ok, err = pcall(db.tx, function()
      db.query("INSERT INTO title_catalog (asin, title) VALUES ('B000000001', 'gone')")
      assert.is_nil(db.try("INSERT INTO title_catalog (asin, title) VALUES ('bad', 'x')"))
    end)
    assert.is_false(ok)
    assert.matches("25P02", err)
    assert.equal(0, count("SELECT count(*) AS n FROM title_catalog"))
    assert.is_false(db.in_tx())
  end)

  it("db.tx refuses nesting and leaves the outer transaction to roll back", function()
    local ok, err = pcall(db.tx, function()
      db.query("INSERT INTO title_catalog (asin, title) VALUES ('B000000001', 'gone')")
      db.tx(function() end)
    end)
    assert.is_false(ok)
    assert.matches("nested transactions are not supported", err)
    assert.equal(0, count("SELECT count(*) AS n FROM title_catalog"))
  end)
end)

describe("the embedded cluster (scripts/pg.sh)", function()
  it("listens on a port below the ephemeral range, so no outgoing connection can hold it", function()
    local code, out = h.run("cd " .. h.root .. " && scripts/pg.sh status")
    local port = tonumber(out:match("running on port (%d+)"))
    local lo = tonumber((h.read_file("/proc/sys/net/ipv4/ip_local_port_range") or "32768"):match("%d+"))
    assert.are.same({ 0, true, true }, { code, port ~= nil and port >= 15432 and port <= 15631, port ~= nil and port < lo })
  end)
end)

describe("host.pg after the connection is lost", function()
  local cluster

  setup(function() cluster = h.new_cluster() end)
  teardown(function()
    assert(host.pg.connect(DATABASE_URL))
    if cluster then cluster:destroy() end
  end)

  local function pid() return db.one("SELECT pg_backend_pid() AS pid").pid end

  it("reconnects on the next use after the server restarted", function()
    with_connection(cluster.url, function()
      local before = pid()
      cluster:restart()
      local after = pid()
      assert.is_number(after)
      assert.are_not.equal(before, after)
    end)
  end)

  it("runs a write on a fresh connection when the old one was found closed before sending", function()
    with_connection(cluster.url, function()
      db.query("CREATE TABLE IF NOT EXISTS w (v int)")
      db.query("TRUNCATE w")
      cluster:restart()
      assert.equal(1, db.query("INSERT INTO w VALUES (1)").affected)
      assert.equal(1, db.one("SELECT count(*) AS n FROM w").n)
    end)
  end)

  it("retries a read once when its connection dies mid-statement", function()
    with_connection(cluster.url, function()
      local before = pid()
      cluster:kill_later("spec-marker-read", 0.5)
      local t0 = host.clock_ms()
      local rows = assert(host.pg.query(
        "SELECT pid, 42 AS answer FROM (SELECT pg_backend_pid() AS pid, pg_sleep(1.5)) s /* spec-marker-read */"))
      assert.equal(42, rows[1].answer)
      assert.are_not.equal(before, rows[1].pid)
      assert.is_true(host.clock_ms() - t0 >= 1800, "the read ran twice")
    end)
  end)

  it("never retries a write that died mid-statement and reports kind \"connection\"", function()
    with_connection(cluster.url, function()
      db.query("CREATE TABLE IF NOT EXISTS w (v int)")
      db.query("TRUNCATE w")
      cluster:kill_later("spec-marker-write", 0.5)
      local rows, err = host.pg.query("INSERT INTO w SELECT 7 FROM pg_sleep(1.5) /* spec-marker-write */")
      assert.is_nil(rows)
      assert.is_string(err.message)
      assert.equal("connection", err.kind)
      assert.is_string(err.sqlstate)
      assert.equal(0, db.one("SELECT count(*) AS n FROM w").n)
    end)
  end)

  it("loses a transaction with its connection: no later statement of it runs, db.tx raises 503 and nothing is kept", function()
    with_connection(cluster.url, function()
      db.query("CREATE TABLE IF NOT EXISTS w (v int)")
      db.query("TRUNCATE w")
      local reached = false
      local ok, err = pcall(db.tx, function()
        db.query("INSERT INTO w VALUES (1)")
        cluster:restart()
        db.query("INSERT INTO w VALUES (2)")
        reached = true
      end)
      assert.is_false(ok)
      assert.same({ 503, "database_unavailable" }, { err.status, err.code })
      assert.is_false(reached)
      assert.is_false(db.in_tx())
      assert.equal(0, db.one("SELECT count(*) AS n FROM w").n)
    end)
  end)

  it("raises 503 database_unavailable while the server is down and works again once it is back", function()
    with_connection(cluster.url, function()
      pid()
      cluster:stop()
      local ok, err = pcall(db.query, "SELECT 1")
      local up, why = host.pg.ping()
      cluster:start()
      assert.is_false(ok)
      assert.same({ 503, "database_unavailable" }, { err.status, err.code })
      assert.is_nil(up)
      assert.is_string(why)
      assert.equal(1, db.one("SELECT 1 AS x").x)
      assert.is_true(host.pg.ping())
    end)
  end)
end)

-- ---- the batched upsert ----

local CATALOG = { "asin", "title", "subtitle", "authors", "narrators", "series_name", "series_position",
                  "duration", "summary", "rating", "rating_count", "release_date", "categories" }

local function asin(i) return string.format("B%09d", i) end

local function title_row(i, tag)
  return {
    asin = asin(i), title = "Title " .. i .. (tag or ""), subtitle = i % 4 == 0 and null or "A subtitle",
    authors = { "Author " .. i, 'Q"uote, {b}\\' }, narrators = i % 5 == 0 and {} or { "Narrator" },
    series_name = i % 2 == 0 and "Series" or nil, series_position = i % 2 == 0 and 2.5 or nil,
    duration = 600 + i, summary = string.rep("s", 200), rating = 4.5, rating_count = i,
    release_date = "2020-01-02", categories = { "Fantasy", "Epic" },
  }
end

local function rows_of(from, to, tag)
  local t = {}
  for i = from, to do t[#t + 1] = title_row(i, tag) end
  return t
end

local function catalog_spec(rows, extra)
  local spec = { table = "title_catalog", key = { "asin" }, columns = CATALOG, rows = rows,
                 only_changed = true, keep_on_null = { "subtitle" } }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return spec
end

local function flags(res)
  local t = {}
  for i, r in ipairs(res) do t[i] = (r.inserted and "i" or "-") .. (r.changed and "c" or "-") end
  return table.concat(t)
end

describe("host.pg.upsert", function()
  before_each(function() h.reset_db() end)

  local upsert = db.upsert

  it("upserts 10,000 rows in one call, every one flagged inserted, with the ids the table holds", function()
    local rows = rows_of(1, 10000)
    local res = upsert(catalog_spec(rows))
    assert.equal(10000, #res)
    local ids, asins = {}, {}
    for i, r in ipairs(res) do
      assert.is_true(r.inserted and r.changed, "row " .. i)
      ids[i], asins[i] = r.id, rows[i].asin
    end
    assert.equal(10000, count("SELECT count(*) AS n FROM title_catalog"))
    assert.equal(10000, count([[SELECT count(*) AS n FROM title_catalog t
      JOIN unnest($1::uuid[], $2::text[]) u(id, asin) ON t.id = u.id AND t.asin = u.asin]], ids, asins))
    local r = db.one("SELECT * FROM title_catalog WHERE asin = $1", asin(20))
    assert.same({ "Title 20", null, { "Author 20", 'Q"uote, {b}\\' }, {}, "Series", 2.5, 620, "2020-01-02",
                  { "Fantasy", "Epic" } },
                { r.title, r.subtitle, r.authors, r.narrators, r.series_name, r.series_position, r.duration,
                  r.release_date, r.categories })
  end)

  it("re-sending 10,000 unchanged rows writes nothing and still answers every id", function()
    local first = upsert(catalog_spec(rows_of(1, 10000)))
    local stamp = db.one("SELECT max(updated_at) AS t, sum(xmin::text::bigint) AS x FROM title_catalog")
    local again = upsert(catalog_spec(rows_of(1, 10000)))
    assert.equal(string.rep("--", 10000), flags(again))
    for i = 1, 10000 do assert.equal(first[i].id, again[i].id) end
    assert.same(stamp, db.one("SELECT max(updated_at) AS t, sum(xmin::text::bigint) AS x FROM title_catalog"))
  end)

  it("with only_changed rewrites only the rows that differ and inserts the new ones, flagging each", function()
    upsert(catalog_spec(rows_of(1, 6)))
    local rows = rows_of(1, 8)
    rows[2].title = "Renamed"
    rows[5].authors = { "Someone Else" }
    local res = upsert(catalog_spec(rows))
    assert.equal("---c-----c--icic", flags(res))
    assert.same({ "Renamed", { "Someone Else" } },
      { db.one("SELECT title FROM title_catalog WHERE asin = $1", asin(2)).title,
        db.one("SELECT authors FROM title_catalog WHERE asin = $1", asin(5)).authors })
  end)

  it("keep_on_null keeps the stored value for a NULL and takes any other value", function()
    upsert(catalog_spec({ { asin = asin(1), title = "T", subtitle = "kept" }, { asin = asin(2), title = "T", subtitle = "old" } },
      { columns = { "asin", "title", "subtitle" } }))
    local res = upsert(catalog_spec({ { asin = asin(1), title = "T", subtitle = null }, { asin = asin(2), title = "T", subtitle = "new" } },
      { columns = { "asin", "title", "subtitle" } }))
    assert.equal("---c", flags(res))
    assert.same({ { asin = asin(1), subtitle = "kept" }, { asin = asin(2), subtitle = "new" } },
      { table.unpack(db.query("SELECT asin, subtitle FROM title_catalog ORDER BY asin")) })
  end)

  it("without only_changed rewrites every existing row and flags it changed", function()
    upsert(catalog_spec(rows_of(1, 3)))
    local res = upsert(catalog_spec(rows_of(1, 4), { only_changed = false }))
    assert.equal("-c-c-cic", flags(res))
  end)

  it("lets the last of several rows with one key win, and gives them one answer", function()
    local rows = { title_row(1, " first"), title_row(2), title_row(1, " last") }
    local res = upsert(catalog_spec(rows))
    assert.equal(2, count("SELECT count(*) AS n FROM title_catalog"))
    assert.equal("Title 1 last", db.one("SELECT title FROM title_catalog WHERE asin = $1", asin(1)).title)
    assert.equal(res[1].id, res[3].id)
    assert.are_not.equal(res[1].id, res[2].id)
  end)

  it("with update = {} leaves existing rows alone and still answers their ids", function()
    local first = upsert(catalog_spec(rows_of(1, 2)))
    local res = upsert(catalog_spec(rows_of(1, 3, " new"), { update = {}, keep_on_null = {} }))
    assert.equal("----ic", flags(res))
    assert.same({ first[1].id, first[2].id }, { res[1].id, res[2].id })
    assert.equal("Title 1", db.one("SELECT title FROM title_catalog WHERE asin = $1", asin(1)).title)
  end)

  it("returns the requested columns, answers an empty batch without a round trip", function()
    local res = upsert(catalog_spec(rows_of(1, 1), { returning = { "id", "asin", "created_at" } }))
    assert.equal(asin(1), res[1].asin)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", res[1].created_at)
    assert.same({}, upsert(catalog_spec({})))
  end)

  it("runs inside the caller's transaction and is rolled back with it", function()
    local ok = pcall(db.tx, function()
      upsert(catalog_spec(rows_of(1, 5)))
      error("abort")
    end)
    assert.is_false(ok)
    assert.equal(0, count("SELECT count(*) AS n FROM title_catalog"))
  end)

  it("flags a row inserted earlier in the same transaction as updated when the upsert rewrites it", function()
    db.tx(function()
      upsert(catalog_spec(rows_of(1, 1)))
      local res = upsert(catalog_spec(rows_of(1, 2, " v2")))
      assert.equal("-cic", flags(res))
    end)
  end)

  it("upserts on a composite key with enum, timestamptz and NULL-able columns (user_library)", function()
    local user = h.create_user("upsert@example.com")
    local titles = upsert(catalog_spec(rows_of(1, 3)))
    local function entry(i, source, progress)
      return { user_id = user, title_id = titles[i].id, source = source, listening_progress = progress,
               personal_rating = null, date_added = "2024-01-0" .. i .. "T10:00:00.250Z", removed_at = null }
    end
    local spec = { table = "user_library", key = { "user_id", "title_id" }, only_changed = true,
                   columns = { "user_id", "title_id", "source", "listening_progress", "personal_rating", "date_added", "removed_at" } }
    spec.rows = { entry(1, "LIBRARY", 0), entry(2, "WISHLIST", 0), entry(3, "LIBRARY", 100) }
    local first = upsert(spec)
    assert.equal("icicic", flags(first))
    db.query("UPDATE user_library SET removed_at = now() WHERE title_id = $1", titles[3].id)
    spec.rows = { entry(1, "LIBRARY", 0), entry(2, "LIBRARY", 0), entry(3, "LIBRARY", 100) }
    local again = upsert(spec)
    assert.equal("---c-c", flags(again))
    assert.same({ first[1].id, first[2].id, first[3].id }, { again[1].id, again[2].id, again[3].id })
    local rows = db.query([[SELECT source, date_added, removed_at FROM user_library WHERE user_id = $1
                             ORDER BY date_added]], user)
    assert.same({ { source = "LIBRARY", date_added = "2024-01-01T10:00:00.250Z", removed_at = null },
                  { source = "LIBRARY", date_added = "2024-01-02T10:00:00.250Z", removed_at = null },
                  { source = "LIBRARY", date_added = "2024-01-03T10:00:00.250Z", removed_at = null } },
                { table.unpack(rows) })
  end)

  it("refuses a value of the wrong shape for a column, naming the row and column", function()
    local rows = rows_of(1, 2)
    rows[2].authors = "not an array"
    local res, err = host.pg.upsert(catalog_spec(rows))
    assert.same({ nil, "22P02", "query" }, { res, err.sqlstate, err.kind })
    assert.matches("rows%[2%]%.authors", err.message)
    rows[2].authors, rows[2].title = { "ok" }, { "a table" }
    res, err = host.pg.upsert(catalog_spec(rows))
    assert.is_nil(res)
    assert.matches("rows%[2%]%.title", err.message)
    assert.equal(0, count("SELECT count(*) AS n FROM title_catalog"))
  end)
end)

-- The chunked form: rows from a function, one statement per chunk, the next chunk built while
-- the database runs the one before (core/pg_upsert.c upsert_chunks).
describe("host.pg.upsert with a rows function", function()
  before_each(function() h.reset_db() end)

  local function chunked(rows, chunk, extra)
    local calls = {}
    local spec = catalog_spec(nil, extra)
    spec.count, spec.chunk = #rows, chunk
    spec.rows = function(first, last)
      calls[#calls + 1] = first .. "-" .. last
      return { table.unpack(rows, first, last) }
    end
    return spec, calls
  end

  it("answers every row as the list form does, asking for the chunks in order", function()
    db.upsert(catalog_spec(rows_of(3, 5)))            -- three rows already there
    local rows = rows_of(1, 2500)
    rows[4].title = "Renamed"
    local res = db.tx(function()
      local spec, calls = chunked(rows, 1000)
      local out = db.upsert(spec)
      assert.same({ "1-1000", "1001-2000", "2001-2500" }, calls)
      return out
    end)
    assert.equal(2500, #res)
    assert.equal("icic---c--" .. string.rep("ic", 2495), flags(res))
    for i = 1, 2500 do
      assert.equal(db.one("SELECT id FROM title_catalog WHERE asin = $1", asin(i)).id, res[i].id, "row " .. i)
    end
    assert.equal("Renamed", db.one("SELECT title FROM title_catalog WHERE asin = $1", asin(4)).title)
    assert.equal(2500, count("SELECT count(*) AS n FROM title_catalog"))
  end)

  it("answers rows a DO NOTHING chunk left alone with the ids the table holds", function()
    local before = db.upsert(catalog_spec({ title_row(1500) }))
    local res = db.tx(function()
      return db.upsert((chunked(rows_of(1, 2000), 700, { update = {}, keep_on_null = {} })))
    end)
    assert.equal(before[1].id, res[1500].id)
    assert.same({ false, false }, { res[1500].inserted, res[1500].changed })
    assert.is_true(res[1499].inserted and res[1501].inserted)
  end)

  it("takes a list in chunks too: the same answers, in key order or refused", function()
    db.upsert(catalog_spec(rows_of(2, 2)))
    local res = db.tx(function() return db.upsert(catalog_spec(rows_of(1, 7), { chunk = 3 })) end)
    assert.equal("ic--" .. string.rep("ic", 5), flags(res))
    for i = 1, 7 do
      assert.equal(db.one("SELECT id FROM title_catalog WHERE asin = $1", asin(i)).id, res[i].id)
    end
    local rows = rows_of(11, 16)
    rows[1], rows[6] = rows[6], rows[1]
    local ok, err = pcall(db.tx, function() db.upsert(catalog_spec(rows, { chunk = 3 })) end)
    assert.is_false(ok)
    assert.matches("chunks in key order", tostring(err))
    -- a list that fits one chunk needs no transaction: one statement
    assert.equal(2, #db.upsert(catalog_spec(rows_of(21, 22), { chunk = 5 })))
  end)

  it("answers an empty count without calling the function", function()
    local spec, calls = chunked({}, 10)
    assert.same({}, db.tx(function() return db.upsert(spec) end))
    assert.same({}, calls)
  end)

  it("needs an open transaction, a count and a chunk size (misuse raises)", function()
    local spec = chunked(rows_of(1, 3), 2)
    assert.has_error(function() host.pg.upsert(spec) end,
      "upsert: rows in chunks need an open transaction (one statement a chunk)")
    db.tx(function()
      spec.chunk = 0
      assert.has_error(function() host.pg.upsert(spec) end)
      spec.chunk, spec.count = 2, nil
      assert.has_error(function() host.pg.upsert(spec) end)
    end)
    assert.equal(0, count("SELECT count(*) AS n FROM title_catalog"))
  end)

  it("refuses chunks out of key order, and a chunk of the wrong length, leaving the connection usable", function()
    local rows = rows_of(1, 6)
    rows[1], rows[6] = rows[6], rows[1]     -- the first chunk's keys come after the second's
    local ok, err = pcall(db.tx, function() db.upsert((chunked(rows, 3))) end)
    assert.is_false(ok)
    assert.matches("chunks in key order", tostring(err))
    local spec = chunked(rows_of(1, 6), 3)
    spec.rows = function(first, last) return rows_of(first, last - 1) end
    ok, err = pcall(db.tx, function() db.upsert(spec) end)
    assert.is_false(ok)
    assert.matches("must return a list of 3 row tables", tostring(err))
    assert.equal(0, count("SELECT count(*) AS n FROM title_catalog"))
    assert.equal(1, db.one("SELECT 1 AS one").one)
  end)

  it("rolls back every chunk when the function raises while a chunk is in flight", function()
    local spec = chunked(rows_of(1, 30), 10)
    local inner = spec.rows
    spec.rows = function(first, last)
      if first == 21 then error("the caller failed") end
      return inner(first, last)
    end
    local ok, err = pcall(db.tx, function() db.upsert(spec) end)
    assert.is_false(ok)
    assert.matches("the caller failed", tostring(err))
    assert.equal(0, count("SELECT count(*) AS n FROM title_catalog"))
    -- the connection answers the next statement (the chunk in flight was read and dropped)
    assert.equal(2, db.tx(function() return db.one("SELECT 2 AS two").two end))
  end)

  it("reports a chunk's failure with the row's number in the whole list, and writes nothing", function()
    local rows = rows_of(1, 25)
    rows[17].authors = "not an array"
    local res, err
    local ok = pcall(db.tx, function()
      res, err = host.pg.upsert((chunked(rows, 10)))
      error("stop")
    end)
    assert.is_false(ok)
    assert.same({ nil, "22P02" }, { res, err.sqlstate })
    assert.matches("rows%[17%]%.authors", err.message)
    rows[17].authors = { "ok" }
    rows[23].asin = "lowercase!"          -- the CHECK on asin fails in the third statement
    ok = pcall(db.tx, function()
      res, err = host.pg.upsert((chunked(rows, 10)))
      error("stop")
    end)
    assert.is_false(ok)
    assert.same({ nil, "23514" }, { res, err.sqlstate })
    assert.equal(0, count("SELECT count(*) AS n FROM title_catalog"))
  end)
end)

describe("host.pg.upsert names", function()
  it("refuses a table or column the schema does not have (names are never taken from input)", function()
    assert.has_error(function()
      host.pg.upsert({ table = "title_catalog", key = { "asin" }, columns = { "asin", "title; DROP TABLE users" }, rows = { {} } })
    end, 'upsert: table "title_catalog" has no column "title; DROP TABLE users"')
    local res, err = host.pg.upsert({ table = "nope", key = { "asin" }, columns = { "asin" }, rows = { {} } })
    assert.same({ nil, 'upsert: no table "nope"', "42P01" }, { res, err.message, err.sqlstate })
  end)
end)

describe("the xmax = 0 trick the upsert relies on (undocumented PostgreSQL behaviour)", function()
  before_each(function() h.reset_db() end)

  it("is true for a row the statement inserted and false for one it updated", function()
    db.query("INSERT INTO title_catalog (asin, title) VALUES ('B000000001', 'old')")
    local rows = db.query([[
      INSERT INTO title_catalog AS t (asin, title) VALUES ('B000000001', 'new'), ('B000000002', 'new')
      ON CONFLICT (asin) DO UPDATE SET title = EXCLUDED.title
      RETURNING t.asin, (t.xmax = 0) AS inserted]])
    table.sort(rows, function(a, b) return a.asin < b.asin end)
    assert.same({ { asin = "B000000001", inserted = false }, { asin = "B000000002", inserted = true } },
                { rows[1], rows[2] })
  end)
end)

describe("host.pg.upsert racing another transaction", function()
  before_each(function() h.reset_db() end)

  it("answers the id of a row another transaction inserted while the upsert waited for it", function()
    local ready = h.test_dir .. "/upsert-race-" .. host.clock_ms()
    local script = h.test_dir .. "/upsert-race-" .. host.clock_ms() .. ".lua"
    h.write_file(script, string.format([[
      package.cpath = %q .. "/?.so;" .. package.cpath
      local pg = require("host").pg
      assert(pg.connect(%q))
      assert(pg.begin())
      local row = assert(pg.query("INSERT INTO title_catalog (asin, title) VALUES ('B000000001', 'T') RETURNING id"))[1]
      io.open(%q, "w"):write(row.id):close()
      assert(pg.query("SELECT pg_sleep(1)"))
      assert(pg.commit())
    ]], h.root .. "/" .. h.build, DATABASE_URL, ready))
    -- os.execute, not h.exec: this interpreter loads host.so and, under test-asan, needs
    -- the sanitizer runtime preloaded like busted's.
    os.execute("lua5.4 " .. script .. " >" .. script .. ".log 2>&1 &")
    local other_id = h.wait_until(function() local s = h.read_file(ready) return s ~= "" and s end, 10, "the other transaction")
    local res = db.upsert({ table = "title_catalog", key = { "asin" }, columns = { "asin", "title" },
                            rows = { { asin = "B000000001", title = "T" } }, only_changed = true })
    assert.same({ { id = other_id, inserted = false, changed = false } }, { table.unpack(res) })
  end)
end)

-- ---- the prepared-statement cache (core/pg_stmt.c) ----

describe("host.pg prepared statements", function()
  -- What this session has prepared, by statement text; read with a text never run twice,
  -- so the reading itself is never prepared.
  local reads = 0
  local function prepared()
    reads = reads + 1
    local rows = assert(host.pg.query("SELECT name, statement, generic_plans + custom_plans AS runs "
      .. "FROM pg_prepared_statements /* read " .. reads .. " */"))
    local by_text = {}
    for _, r in ipairs(rows) do by_text[r.statement] = r end
    return by_text, #rows
  end

  -- A fresh connection with the given cache size (nil: the default), for fn.
  local function fresh(cache, fn)
    local ok, err = pcall(function()
      assert(host.pg.connect(DATABASE_URL, 0, cache))
      fn()
    end)
    assert(host.pg.connect(DATABASE_URL))
    if not ok then error(err, 0) end
  end

  before_each(function()
    assert(pg().query("DROP TABLE IF EXISTS ps_t"))
    assert(pg().query("CREATE TABLE ps_t (a int)"))
  end)
  teardown(function() assert(pg().query("DROP TABLE IF EXISTS ps_t")) end)

  it("prepares a statement on its second use and reuses that one statement afterwards", function()
    fresh(nil, function()
      local sql = "SELECT $1::int + 1 AS n"
      local got = { assert(host.pg.query(sql, 1))[1].n }
      local after_first = select(2, prepared())
      for i = 2, 4 do got[i] = assert(host.pg.query(sql, i))[1].n end
      local by_text, n = prepared()
      assert.same({ { 2, 3, 4, 5 }, 0, 1, 3 }, { got, after_first, n, by_text[sql] and by_text[sql].runs })
    end)
  end)

  it("never prepares a text run once, nor DDL run twice", function()
    fresh(nil, function()
      assert(host.pg.query("SELECT 'once' AS x"))
      assert(host.pg.query("CREATE TEMP TABLE ps_tmp (a int)"))
      assert(host.pg.query("DROP TABLE ps_tmp"))
      assert(host.pg.query("CREATE TEMP TABLE ps_tmp (a int)"))
      assert.equal(0, select(2, prepared()))
    end)
  end)

  it("prepares the batched upsert's statements and reuses them for the next batch", function()
    fresh(nil, function()
      h.reset_db()
      for i = 1, 3 do
        assert(host.pg.upsert(catalog_spec(rows_of(1, 5, "v" .. i), { update = {}, keep_on_null = {} })))
      end
      local runs = {}
      for text, r in pairs(prepared()) do
        if text:find("INSERT INTO \"title_catalog\"", 1, true) then runs.upsert = r.runs end
        if text:find("^SELECT k.ss_ord") then runs.missing = r.runs end
      end
      assert.same({ upsert = 2, missing = 1 }, runs)  -- batch 1 inserts, 2 and 3 find every row
    end)
  end)

  it("runs a SELECT * again transparently after ALTER TABLE ADD COLUMN changed its result type", function()
    fresh(nil, function()
      assert(host.pg.query("INSERT INTO ps_t VALUES (1)"))
      local sql = "SELECT * FROM ps_t"
      assert(host.pg.query(sql))
      assert.same({ a = 1 }, assert(host.pg.query(sql))[1])
      assert(host.pg.query("ALTER TABLE ps_t ADD COLUMN b int DEFAULT 7"))
      local rows, err = host.pg.query(sql)
      assert.same({ { a = 1, b = 7 }, nil }, { rows and rows[1], err })
      assert.equal(1, prepared()[sql].runs)  -- prepared anew, and that one ran once
    end)
  end)

  it("inside a transaction reports the changed result type and retries nothing in the aborted transaction", function()
    fresh(nil, function()
      local sql = "SELECT * FROM ps_t"
      assert(host.pg.query(sql))
      assert(host.pg.query(sql))
      assert(host.pg.query("ALTER TABLE ps_t ADD COLUMN b int"))
      assert(host.pg.begin())
      local rows, err = host.pg.query(sql)
      local again, err2 = host.pg.query(sql)
      assert(host.pg.rollback())
      assert.same({ nil, "0A000", nil, "25P02" }, { rows, err.sqlstate, again, err2.sqlstate })
      assert.equal(0, #assert(host.pg.query(sql)))
    end)
  end)

  it("runs a write once more, once, when the session lost its prepared statements (DEALLOCATE ALL)", function()
    fresh(nil, function()
      local sql = "INSERT INTO ps_t VALUES ($1)"
      assert(host.pg.query(sql, 1))
      assert(host.pg.query(sql, 2))
      assert(host.pg.query("DEALLOCATE ALL"))
      local rows, err = host.pg.query(sql, 3)
      assert.same({ 1, nil }, { rows and rows.affected, err })
      local got = {}
      for i, r in ipairs(assert(host.pg.query("SELECT a FROM ps_t ORDER BY a"))) do got[i] = r.a end
      assert.same({ 1, 2, 3 }, got)
    end)
  end)

  it("does not cache a statement that fails to prepare, and prepares it once it can be", function()
    fresh(nil, function()
      local sql = "SELECT b FROM ps_t"
      for _ = 1, 3 do
        local rows, err = host.pg.query(sql)
        assert.same({ nil, "42703" }, { rows, err.sqlstate })
      end
      assert.is_nil(prepared()[sql])
      assert(host.pg.query("ALTER TABLE ps_t ADD COLUMN b int"))
      assert(host.pg.query(sql))
      assert(host.pg.query(sql))
      assert.equal(2, prepared()[sql].runs)  -- seen before: prepared on its first success
    end)
  end)

  it("starts over on a new connection: nothing cached is used on the new session", function()
    fresh(nil, function()
      local sql = "SELECT $1::int AS v"
      assert(host.pg.query(sql, 1))
      assert(host.pg.query(sql, 2))
      assert.is_table(prepared()[sql])
      local pid = assert(host.pg.query("SELECT pg_backend_pid() AS pid"))[1].pid
      local code, out = h.run(h.pgbin .. "/psql -X -q " .. h.shell_quote(DATABASE_URL)
        .. " -c 'SELECT pg_terminate_backend(" .. pid .. ")'")
      assert.equal(0, code, out)
      h.wait_until(function() return host.pg.ping() end, 5, "the reconnection")
      local rows, err = host.pg.query(sql, 3)
      assert.same({ 3, nil }, { rows and rows[1].v, err })
      -- the first use on the new session ran unnamed: the old name was neither executed nor
      -- prepared again on the way
      assert.same({ 0 }, { select(2, prepared()) })
    end)
  end)

  it("keeps at most the configured number, evicting the least recently used", function()
    fresh(3, function()
      local function q(i) return "SELECT " .. i .. " AS v, $1::int AS w" end
      for i = 1, 5 do
        assert(host.pg.query(q(i), i))
        assert(host.pg.query(q(i), i))
      end
      assert(host.pg.query(q(3), 0))  -- 3 is now more recent than 4 and 5
      assert(host.pg.query(q(1), 0))  -- 1 comes back, evicting 4
      local by_text, n = prepared()
      assert.same({ 3, true, true, true, false },
                  { n, by_text[q(1)] ~= nil, by_text[q(3)] ~= nil, by_text[q(5)] ~= nil, by_text[q(4)] ~= nil })
      assert.equal(7, assert(host.pg.query(q(4), 7))[1].w)
    end)
  end)

  it("evicts inside a transaction without touching it, even when the session lost the evicted statement", function()
    fresh(2, function()
      local function q(i) return "SELECT " .. i .. " AS v, $1::int AS w" end
      for i = 1, 2 do
        assert(host.pg.query(q(i), i))
        assert(host.pg.query(q(i), i))
      end
      assert(host.pg.query("DEALLOCATE ALL"))
      assert(host.pg.begin())
      assert(host.pg.query(q(3), 3))
      assert(host.pg.query(q(3), 3))  -- prepared now, evicting q(1)
      local rows, err = host.pg.query(q(3), 3)
      local ok, cerr = host.pg.commit()
      assert.same({ 3, nil, true, nil }, { rows and rows[1].w, err, ok, cerr })
      assert.equal(4, assert(host.pg.query(q(2), 4))[1].w)  -- lost too: run again, once
      assert.equal(5, assert(host.pg.query(q(3), 5))[1].w)
    end)
  end)

  it("runs a statement with more than 8 KiB of parameters unnamed, planned for its values", function()
    fresh(nil, function()
      local sql = "SELECT count(*) AS n FROM unnest($1::text[]) AS u(v)"
      local many, few = {}, { "a", "b" }
      for i = 1, 2000 do many[i] = string.format("B%09d", i) end
      for _ = 1, 3 do assert.equal(2000, assert(host.pg.query(sql, many))[1].n) end
      local big_prepared = prepared()[sql]
      for _ = 1, 2 do assert.equal(2, assert(host.pg.query(sql, few))[1].n) end
      assert.same({ false, 1 }, { big_prepared ~= nil, prepared()[sql].runs })
    end)
  end)

  it("prepares nothing when the cache is off (0)", function()
    fresh(0, function()
      h.reset_db()
      for i = 1, 3 do
        assert.equal(i, assert(host.pg.query("SELECT $1::int AS v", i))[1].v)
        assert(host.pg.upsert(catalog_spec(rows_of(1, 5), { update = {}, keep_on_null = {} })))
      end
      assert.equal(0, select(2, prepared()))
    end)
  end)
end)
