-- `shelfsync migrate` (core/migrate.c) against fresh databases of the test cluster: the real
-- sql/ files, and temporary migration folders (SHELFSYNC_SQL_DIR) for the failure cases.
local h = require("spec.support.helpers")
local host = h.host

local DATABASE_URL = assert(os.getenv("DATABASE_URL"), "DATABASE_URL not set: run through make test")
local ADMIN_URL = assert(os.getenv("SHELFSYNC_PG_ADMIN_URL"), "SHELFSYNC_PG_ADMIN_URL not set: run through make test")
local PGBIN = os.getenv("SHELFSYNC_PGBIN")
  or select(2, h.run("ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1")):match("%S+")

local function psql(url, sql)
  local code, out = h.run(PGBIN .. "/psql -X -q -v ON_ERROR_STOP=1 "
    .. h.shell_quote(url) .. " -c " .. h.shell_quote(sql))
  assert(code == 0, out)
end

-- A URL for database `name` on the run's server: DATABASE_URL with the name swapped.
local function url_for(name)
  local u, n = DATABASE_URL:gsub("^(postgres[a-z]*://[^/]*/)[^?]*", "%1" .. name)
  assert(n == 1, "cannot derive a database URL from " .. DATABASE_URL)
  return u
end

local seq = 0
local function fresh_db()
  seq = seq + 1
  local name = "shelfsync_migrate_" .. host.crypto.hex(host.crypto.random(4)) .. "_" .. seq
  psql(ADMIN_URL, "CREATE DATABASE " .. name)
  return name, url_for(name)
end

local function drop_db(name)
  psql(ADMIN_URL, "DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE)")
end

-- The log messages of a run (the binary logs JSON lines), one per line.
local function messages(out)
  local msgs = {}
  for line in out:gmatch("[^\n]+") do
    local ok, v = pcall(host.json.decode, line)
    msgs[#msgs + 1] = ok and type(v) == "table" and v.msg or line
  end
  return table.concat(msgs, "\n")
end

-- Runs `shelfsync migrate` against url; returns its exit status and log messages.
local function migrate(url, sql_dir)
  local code, out = h.run(string.format("env DATABASE_URL=%s %s %s migrate", h.shell_quote(url),
    sql_dir and ("SHELFSYNC_SQL_DIR=" .. h.shell_quote(sql_dir)) or "", h.shell_quote(h.binary)))
  return code, messages(out)
end

-- Runs fn with host.pg connected to url, then back on the run's database.
local function with_connection(url, fn)
  local ok, err = pcall(function()
    assert(host.pg.connect(url))
    return fn(host.pg)
  end)
  assert(host.pg.connect(DATABASE_URL))
  if not ok then error(err, 0) end
  return err
end

local function query(url, sql, ...)
  local args = table.pack(...)
  return with_connection(url, function(pg) return assert(pg.query(sql, table.unpack(args, 1, args.n))) end)
end

local dir_seq = 0
local function sql_dir(files)
  dir_seq = dir_seq + 1
  local dir = h.test_dir .. "/sql-" .. dir_seq .. "-" .. host.clock_ms()
  assert(h.exec("mkdir -p " .. h.shell_quote(dir)))
  for name, text in pairs(files) do h.write_file(dir .. "/" .. name, text) end
  return dir
end

local function list_sql_files()
  local names = {}
  local _, out = h.run("ls " .. h.shell_quote(h.root .. "/sql"))
  for name in out:gmatch("[^\n]+") do
    if name:match("^%d%d%d_.*%.sql$") then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

describe("shelfsync migrate", function()
  local created = {}
  local function db_for_test()
    local name, url = fresh_db()
    created[#created + 1] = name
    return url
  end
  teardown(function()
    for _, name in ipairs(created) do drop_db(name) end
  end)

  it("applies every sql/ file to an empty database and records each with its sha256", function()
    local url = db_for_test()
    local code, out = migrate(url)
    assert.equal(0, code, out)
    local expected = {}
    for _, name in ipairs(list_sql_files()) do
      expected[#expected + 1] = { filename = name, checksum = host.crypto.sha256_hex(h.read_file(h.root .. "/sql/" .. name)) }
    end
    assert.is_true(#expected >= 1)
    assert.same(expected, { table.unpack(query(url, "SELECT filename, checksum FROM schema_migrations ORDER BY filename")) })
    local tables = query(url, [[SELECT count(*) AS n FROM information_schema.tables
      WHERE table_schema = 'public' AND table_name = ANY($1)]],
      { "users", "title_catalog", "user_library", "sync_tokens", "sync_history", "accounts", "sessions",
        "verification_tokens", "recommendation_lists", "list_items", "tier_lists", "tier_assignments" })
    assert.equal(12, tables[1].n)
  end)

  it("applies nothing on a second run, and succeeds", function()
    local url = db_for_test()
    assert.equal(0, (migrate(url)))
    local before = query(url, "SELECT filename, applied_at FROM schema_migrations ORDER BY filename")
    local code, out = migrate(url)
    assert.equal(0, code, out)
    assert.matches("up to date", out)
    assert.same({ table.unpack(before) },
      { table.unpack(query(url, "SELECT filename, applied_at FROM schema_migrations ORDER BY filename")) })
  end)

  it("refuses to run when an applied migration has changed, and applies nothing after it", function()
    local url = db_for_test()
    local dir = sql_dir({ ["001_a.sql"] = "CREATE TABLE a (id int);\n" })
    assert.equal(0, (migrate(url, dir)))
    h.write_file(dir .. "/001_a.sql", "CREATE TABLE a (id bigint);\n")
    h.write_file(dir .. "/002_b.sql", "CREATE TABLE b (id int);\n")
    local code, out = migrate(url, dir)
    assert.equal(1, code)
    assert.matches("migration 001_a.sql was changed after it was applied", out, 1, true)
    assert.equal(0, query(url, "SELECT count(*) AS n FROM pg_tables WHERE tablename = 'b'")[1].n)
  end)

  -- What the database records and which tables it has, for the ordering cases below.
  local function applied_and_tables(url)
    return query(url, [[SELECT
      (SELECT array_agg(filename ORDER BY filename) FROM schema_migrations) AS applied,
      (SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public') AS tables]])[1]
  end

  it("refuses a pending migration numbered below the highest applied one, and applies nothing of that run", function()
    local url = db_for_test()
    local dir = sql_dir({ ["001_a.sql"] = "CREATE TABLE a (id int);\n", ["003_c.sql"] = "CREATE TABLE c (id int);\n" })
    assert.equal(0, (migrate(url, dir)))
    -- 004 would be fine alone; 002 is the file that would run in two orders.
    h.write_file(dir .. "/002_b.sql", "CREATE TABLE b (id int);\n")
    h.write_file(dir .. "/004_d.sql", "CREATE TABLE d (id int);\n")
    local code, out = migrate(url, dir)
    assert.equal(1, code)
    assert.matches("migration 002_b.sql is pending but not numbered above 003_c.sql, the highest migration "
      .. "applied to this database: it would run last here and in number order on a fresh database (two "
      .. "orders for one schema, see sql/README.md); give it the next free number, 005; nothing was applied", out, 1, true)
    assert.same({ applied = { "001_a.sql", "003_c.sql" }, tables = { "a", "c", "schema_migrations" } },
      applied_and_tables(url))
  end)

  it("refuses a pending migration that takes the number of an applied one under another name", function()
    local url = db_for_test()
    local dir = sql_dir({ ["001_a.sql"] = "CREATE TABLE a (id int);\n" })
    assert.equal(0, (migrate(url, dir)))
    assert(os.rename(dir .. "/001_a.sql", dir .. "/001_renamed.sql"))
    local code, out = migrate(url, dir)
    assert.equal(1, code)
    assert.matches("migration 001_renamed.sql is pending but not numbered above 001_a.sql", out, 1, true)
    assert.same({ applied = { "001_a.sql" }, tables = { "a", "schema_migrations" } }, applied_and_tables(url))
  end)

  it("still applies a pending migration numbered above every applied one, across a number never written", function()
    local url = db_for_test()
    local dir = sql_dir({ ["001_a.sql"] = "CREATE TABLE a (id int);\n", ["003_c.sql"] = "CREATE TABLE c (id int);\n" })
    assert.equal(0, (migrate(url, dir)))
    h.write_file(dir .. "/004_d.sql", "CREATE TABLE d (id int);\n")
    local code, out = migrate(url, dir)
    assert.equal(0, code, out)
    assert.matches("migration 004_d.sql applied", out, 1, true)
    assert.same({ applied = { "001_a.sql", "003_c.sql", "004_d.sql" }, tables = { "a", "c", "d", "schema_migrations" } },
      applied_and_tables(url))
  end)

  it("applies a new file after the real sql/ on a database migrated without any 002", function()
    local url = db_for_test()
    assert.equal(0, (migrate(url)))
    local names = list_sql_files()
    local files = {}
    for _, name in ipairs(names) do files[name] = h.read_file(h.root .. "/sql/" .. name) end
    local next_name = string.format("%03d_next.sql", tonumber(names[#names]:sub(1, 3)) + 1)
    files[next_name] = "CREATE TABLE next_one (id int);\n"
    local code, out = migrate(url, sql_dir(files))
    assert.equal(0, code, out)
    assert.matches("migration " .. next_name .. " applied", out, 1, true)
    assert.equal(0, query(url, "SELECT count(*) AS n FROM schema_migrations WHERE filename LIKE '002%'")[1].n)
    assert.equal(1, query(url, "SELECT count(*) AS n FROM pg_tables WHERE tablename = 'next_one'")[1].n)
  end)

  it("keeps serve from starting when a pending migration is numbered below an applied one", function()
    local url = db_for_test()
    local dir = sql_dir({ ["001_a.sql"] = "CREATE TABLE a (id int);\n", ["003_c.sql"] = "CREATE TABLE c (id int);\n" })
    assert.equal(0, (migrate(url, dir)))
    h.write_file(dir .. "/002_b.sql", "CREATE TABLE b (id int);\n")
    local ok, err = pcall(h.start_server, { env = { DATABASE_URL = url, SHELFSYNC_SQL_DIR = dir,
      SHELFSYNC_MIGRATE_ON_START = "1" } })
    if ok then err:stop() end
    assert.is_false(ok, "the server started")
    assert.matches("server exited at start", err, 1, true)
    assert.matches("migration 002_b.sql is pending but not numbered above 003_c.sql", err, 1, true)
    assert.same({ applied = { "001_a.sql", "003_c.sql" }, tables = { "a", "c", "schema_migrations" } },
      applied_and_tables(url))
  end)

  it("names the file, line and statement of a failing migration and leaves the schema as it was", function()
    local url = db_for_test()
    local dir = sql_dir({
      ["001_ok.sql"] = "CREATE TABLE kept (id int);\n",
      ["002_bad.sql"] = table.concat({
        "-- a comment; with a semicolon",
        "CREATE TABLE half (id int);",
        "INSERT INTO kept VALUES (1);",
        "CREATE TABLE broken (",
        "    id int,",
        "    x no_such_type",
        ");",
        "CREATE TABLE never (id int);",
      }, "\n"),
      ["003_later.sql"] = "CREATE TABLE later (id int);\n",
    })
    local code, out = migrate(url, dir)
    assert.equal(1, code)
    assert.matches('migration 002_bad.sql failed at line 6 (statement 3, line 4: "CREATE TABLE broken ( id int, x no_such_type );"): '
      .. 'type "no_such_type" does not exist [SQLSTATE 42704]; nothing from 002_bad.sql was applied', out, 1, true)
    local state = query(url, [[SELECT
      (SELECT array_agg(filename ORDER BY filename) FROM schema_migrations) AS applied,
      (SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public') AS tables,
      (SELECT count(*) FROM kept) AS kept_rows]])[1]
    assert.same({ applied = { "001_ok.sql" }, tables = { "kept", "schema_migrations" }, kept_rows = 0 }, state)
  end)

  it("refuses transaction control inside a migration, since each file already runs in its own transaction", function()
    local url = db_for_test()
    local dir = sql_dir({ ["001_tx.sql"] = "CREATE TABLE t1 (id int);\nCOMMIT;\nCREATE TABLE t2 (id int);\n" })
    local code, out = migrate(url, dir)
    assert.equal(1, code)
    assert.matches("migration 001_tx.sql line 2: transaction control (commit) is not allowed", out, 1, true)
    assert.equal(0, query(url, "SELECT count(*) AS n FROM pg_tables WHERE tablename IN ('t1', 't2')")[1].n)
  end)

  it("splits statements correctly around strings, quoted names, dollar quotes, comments and BEGIN ATOMIC bodies", function()
    local url = db_for_test()
    local dir = sql_dir({ ["001_tricky.sql"] = [==[
/* a block comment; /* nested; */ still comment; */
CREATE TABLE "semi;colon" (v text); -- trailing comment; here
INSERT INTO "semi;colon" VALUES ('it''s; fine'), (E'back\\slash\'; quote'), ($$dollar; $inner$ text$$),
  ($tag$tagged; $$ not the end $tag$);
CREATE FUNCTION plus_one(i int) RETURNS int LANGUAGE plpgsql AS $body$
BEGIN
  RETURN i + 1; -- a semicolon inside the body
END;
$body$;
CREATE FUNCTION sign_word(i int) RETURNS text LANGUAGE sql
BEGIN ATOMIC
  SELECT CASE WHEN i > 0 THEN 'positive' ELSE 'not positive' END;
END;
INSERT INTO "semi;colon" VALUES (sign_word(plus_one(0)))
]==] })
    local code, out = migrate(url, dir)
    assert.equal(0, code, out)
    local rows = query(url, [[SELECT v FROM "semi;colon" ORDER BY v]])
    local got = {}
    for i, r in ipairs(rows) do got[i] = r.v end
    assert.same({ "back\\slash'; quote", "dollar; $inner$ text", "it's; fine", "positive", "tagged; $$ not the end " }, got)
  end)

  it("lets two concurrent runs both succeed while the migrations are applied exactly once", function()
    local url = db_for_test()
    local dir = sql_dir({
      ["001_slow.sql"] = "CREATE TABLE slow (id int);\nSELECT pg_sleep(1);\nINSERT INTO slow VALUES (1);\n",
      ["002_next.sql"] = "INSERT INTO slow VALUES (2);\n",
    })
    local outs = {}
    for i = 1, 2 do
      outs[i] = h.test_dir .. "/migrate-race-" .. i .. "-" .. host.clock_ms()
      h.exec(string.format("(env DATABASE_URL=%s SHELFSYNC_SQL_DIR=%s %s migrate >%s 2>&1; echo \"exit=$?\" >>%s) &",
        h.shell_quote(url), h.shell_quote(dir), h.shell_quote(h.binary), outs[i], outs[i]))
    end
    local logs = {}
    for i = 1, 2 do
      logs[i] = h.wait_until(function()
        local s = h.read_file(outs[i]) or ""
        return s:find("exit=%d") and s
      end, 30, "migrate run " .. i)
    end
    assert.matches("exit=0", logs[1])
    assert.matches("exit=0", logs[2])
    local applied = 0
    for i = 1, 2 do
      local _, n = logs[i]:gsub("migration 00%d_%a+%.sql applied", "")
      applied = applied + n
    end
    assert.equal(2, applied)
    assert.same({ { id = 1 }, { id = 2 } }, { table.unpack(query(url, "SELECT id FROM slow ORDER BY id")) })
    assert.equal(2, query(url, "SELECT count(*) AS n FROM schema_migrations")[1].n)
  end)
end)
