-- spec helpers: one place that knows how to reach the database, start the real binary on
-- a free loopback port, and speak HTTP to it (through host.http, i.e. libcurl).
--
--   local h = require("spec.support.helpers")
--   local srv = h.start_server{ env = { SHELFSYNC_SYNC_TOKEN_TTL_S = "2" } }
--   local c = h.login(srv, "ada@example.com")
--   local res = c:get("/api/me")          -- {status, headers, body, json, cookies}
--   srv:stop()
local _M = {}

local ROOT = os.getenv("PWD")
local BUILD = os.getenv("SHELFSYNC_BUILD") or "build"
local TEST_DIR = os.getenv("SHELFSYNC_TEST_DIR") or (ROOT .. "/var/test-adhoc")
os.execute("unset LD_PRELOAD; mkdir -p '" .. TEST_DIR .. "'")

package.path = ROOT .. "/lua/?.lua;" .. ROOT .. "/?.lua;" .. package.path
package.cpath = ROOT .. "/" .. BUILD .. "/?.so;" .. package.cpath

local host = require("host")
_M.host = host
_M.root = ROOT
_M.build = BUILD
_M.test_dir = TEST_DIR
_M.binary = ROOT .. "/" .. BUILD .. "/shelfsync"
_M.null = host.json.null

-- Lua modules under lua/ expect a global `host` with a config, as in the server.
if rawget(_G, "host") == nil then
  local config = dofile(ROOT .. "/config.lua")
  config.secret = string.rep("s", 40)
  config.public_url = "http://127.0.0.1:8080"
  rawset(_G, "host", setmetatable({ config = config }, { __index = host }))
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
_M.shell_quote = shell_quote

-- Runs a shell command like os.execute. Under make test-asan the interpreter is started
-- with the sanitizer runtime preloaded; tools it starts (curl hangs under it) must not
-- inherit it, so every spec starts its commands through exec() or run().
function _M.exec(cmd)
  return os.execute("unset LD_PRELOAD; " .. cmd)
end

function _M.sleep(seconds)
  _M.exec("sleep " .. string.format("%.3f", seconds))
end

-- Polls fn() until it returns a truthy value or timeout seconds pass; returns that value.
function _M.wait_until(fn, timeout, what)
  local deadline = host.clock_ms() + (timeout or 10) * 1000
  repeat
    local v = fn()
    if v then return v end
    _M.sleep(0.05)
  until host.clock_ms() > deadline
  error("timed out waiting for " .. (what or "condition"), 2)
end

function _M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function _M.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- ---- database ----

local db_connected = false

-- host.pg connected to the run's throwaway database.
function _M.db()
  if not db_connected then
    assert(host.pg.connect((assert(os.getenv("DATABASE_URL"), "DATABASE_URL not set: run through make test"))))
    db_connected = true
  end
  return host.pg
end

-- Empties every table but schema_migrations (one statement, so foreign keys never object).
function _M.reset_db()
  local pg = _M.db()
  local rows = assert(pg.query([[
    SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') AS list
    FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations']]))
  if rows[1] and rows[1].list ~= host.json.null and rows[1].list then
    assert(pg.query("TRUNCATE " .. rows[1].list .. " CASCADE"))
  end
end

-- Rows of a statement that must succeed, as plain tables (without host.pg's `affected`
-- count), for assert.same; one() is the first of them.
function _M.rows(sql, ...)
  local res = assert(_M.db().query(sql, ...))
  local plain = {}
  for i, r in ipairs(res) do plain[i] = r end
  return plain
end

function _M.one(sql, ...)
  return _M.rows(sql, ...)[1]
end

-- Creates a user directly in the database (no session); returns its id.
function _M.create_user(email, name)
  local pg = _M.db()
  local rows = assert(pg.query(
    "INSERT INTO users (email, name) VALUES ($1, $2) RETURNING id", email, name or email))
  return rows[1].id
end

-- ---- HTTP ----

function _M.request(method, url, opts)
  opts = opts or {}
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  local body = opts.body
  if opts.json ~= nil then
    body = host.json.encode(opts.json)
    headers["Content-Type"] = headers["Content-Type"] or "application/json"
  end
  local res, err = host.http.request{
    method = method, url = url, headers = headers, body = body,
    timeout_ms = opts.timeout_ms or 60000, decode = opts.decode ~= false,
  }
  if not res then return nil, err end
  local ctype = res.headers["content-type"] or ""
  if ctype:find("json", 1, true) and res.body ~= "" and opts.decode ~= false then
    local ok, v = pcall(host.json.decode, res.body)
    if ok then res.json = v end
  end
  return res
end

-- ---- servers ----

local Server = {}
Server.__index = Server

local function port_is_free(port)
  local res = host.http.request{ url = "http://127.0.0.1:" .. port .. "/", connect_timeout_ms = 200, timeout_ms = 500 }
  return res == nil
end

-- 20000-31999: below Linux's ephemeral range (32768-60999), where an outgoing connection's
-- port (TIME_WAIT included) could make the bind fail.
local function random_port()
  local b = host.crypto and host.crypto.random(2) or tostring(os.time())
  local n = (b:byte(1) * 256 + b:byte(2)) % 12000
  return 20000 + n
end

-- A loopback port nothing listens on now.
function _M.free_port()
  for _ = 1, 50 do
    local port = random_port()
    if port_is_free(port) then return port end
  end
  error("no free port")
end

-- opts.env: extra environment; opts.root: another checkout root (for reload specs).
-- Returns a Server: srv.url, srv.port, srv.pid, srv:stop(), srv:kill(), srv:log().
function _M.start_server(opts)
  opts = opts or {}
  for _ = 1, 20 do
    local srv = _M.try_start(_M.free_port(), opts)
    if srv then return srv end
  end
  error("could not start the server on a free port")
end

function _M.try_start(port, opts)
  local id = tostring(port) .. "-" .. tostring(host.clock_ms())
  local log = TEST_DIR .. "/server-" .. id .. ".log"
  local pidfile = TEST_DIR .. "/server-" .. id .. ".pid"
  local url = "http://127.0.0.1:" .. port
  local env = {
    SHELFSYNC_LISTEN = "127.0.0.1:" .. port,
    SHELFSYNC_PUBLIC_URL = url,
    SHELFSYNC_SECRET = "test-secret-0123456789abcdef0123456789abcdef",
    SHELFSYNC_DEV_LOGIN = "1",
    SHELFSYNC_WORKERS = "4",
    SHELFSYNC_LOG_LEVEL = "info",
    SHELFSYNC_ROOT = opts.root or ROOT,
    DATABASE_URL = os.getenv("DATABASE_URL"),
    -- No enrichment unless a spec points the server at the fake provider.
    SHELFSYNC_METADATA_PROVIDER_URL = "",
  }
  if os.getenv("SHELFSYNC_ASAN") == "1" then
    env.ASAN_OPTIONS = "detect_leaks=1:log_path=" .. TEST_DIR .. "/server-asan"
    env.UBSAN_OPTIONS = "print_stacktrace=1:log_path=" .. TEST_DIR .. "/server-asan"
  end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local parts = {}
  for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. shell_quote(v) end
  local exitfile = TEST_DIR .. "/server-" .. id .. ".exit"
  -- The subshell waits for the server so that its exit status can be read afterwards.
  local cmd = string.format("(cd %s && env %s %s serve >%s 2>&1 & echo $! > %s; wait $!; echo $? > %s) >/dev/null 2>&1 &",
    shell_quote(opts.root or ROOT), table.concat(parts, " "), shell_quote(_M.binary),
    shell_quote(log), shell_quote(pidfile), shell_quote(exitfile))
  _M.exec(cmd)
  local pid = _M.wait_until(function() return (_M.read_file(pidfile) or ""):match("%d+") end, 5, "server pid")
  local srv = setmetatable({ port = port, url = url, pid = pid, log_path = log, pidfile = pidfile,
                             exitfile = exitfile }, Server)
  local deadline = host.clock_ms() + 20000
  while host.clock_ms() < deadline do
    local res = host.http.request{ url = url .. "/healthz", timeout_ms = 2000, connect_timeout_ms = 500 }
    if res then return srv end
    if not srv:alive() then
      if (srv:log() or ""):find("cannot listen", 1, true) then return nil end
      error("server exited at start:\n" .. (srv:log() or ""))
    end
    _M.sleep(0.05)
  end
  srv:kill()
  error("server did not answer /healthz:\n" .. (srv:log() or ""))
end

function Server:alive()
  return _M.exec("kill -0 " .. self.pid .. " 2>/dev/null") == true
end

function Server:signal(sig)
  _M.exec("kill -" .. sig .. " " .. self.pid .. " 2>/dev/null")
end

-- SIGTERM and wait for the exit; returns true when it exited within timeout seconds.
function Server:stop(timeout)
  if not self:alive() then os.remove(self.pidfile) return true end
  self:signal("TERM")
  local deadline = host.clock_ms() + (timeout or 15) * 1000
  while host.clock_ms() < deadline do
    if not self:alive() then os.remove(self.pidfile) return true end
    _M.sleep(0.05)
  end
  self:kill()
  return false
end

function Server:kill()
  self:signal("KILL")
  os.remove(self.pidfile)
end

function Server:log()
  return _M.read_file(self.log_path)
end

-- The exit status once the process has ended (waits up to a second for it to be written).
function Server:exit_code()
  local ok, v = pcall(_M.wait_until, function() return _M.read_file(self.exitfile) end, 1, "exit status")
  return ok and tonumber(v:match("%d+")) or nil
end

-- ---- local stand-ins for outside services (node scripts under spec/support) ----

-- Starts `node <script> <args>` in dir; the script prints one JSON line when it listens.
-- Returns {pid, pidfile, out, info = that line decoded}. The pid file lives in the run's
-- folder, so scripts/test.sh kills a stand-in a crashed spec left behind.
function _M.start_node(dir, script, args, what)
  local id = host.crypto.hex(host.crypto.random(4))
  local name = script:gsub("%.m?js$", "")
  local out = TEST_DIR .. "/" .. name .. "-" .. id .. ".out"
  local pidfile = TEST_DIR .. "/" .. name .. "-" .. id .. ".pid"
  _M.exec(string.format("cd %s && node %s %s >%s 2>&1 & echo $! > %s", shell_quote(dir),
    shell_quote(script), args or "", shell_quote(out), shell_quote(pidfile)))
  -- The shell creates the file before writing the pid: wait for the digits.
  local pid = _M.wait_until(function() return (_M.read_file(pidfile) or ""):match("%d+") end, 5, what .. " pid")
  local line = _M.wait_until(function()
    local text = _M.read_file(out) or ""
    if text:find("^Error") or text:find("\nError") then error(what .. " failed:\n" .. text) end
    return text:match("^(%b{})\n")
  end, 15, what .. " to listen")
  return { pid = pid, pidfile = pidfile, out = out, info = host.json.decode(line) }
end

-- A stand-in's control endpoint (JSON in and out); any answer of 300 or more raises.
function _M.control(base, method, path, body)
  local res = assert(_M.request(method, base .. path, body and { json = body } or nil))
  assert(res.status < 300, method .. " " .. path .. ": " .. res.status .. " " .. res.body)
  return res.json
end

-- Stops a stand-in start_node started, and waits for it to exit.
function _M.stop_node(p, what)
  _M.exec("kill " .. p.pid .. " 2>/dev/null")
  _M.wait_until(function() return _M.exec("kill -0 " .. p.pid .. " 2>/dev/null") ~= true end, 5,
    what .. " to exit")
  os.remove(p.pidfile)
end

-- ---- a private copy of the script tree, for specs that edit or extend it ----

local root_seq = 0

-- Copies lua/, routes/, sql/ and config.lua to a fresh folder; extra = {["routes/x.lua"] = text}.
function _M.temp_root(extra)
  root_seq = root_seq + 1
  local dir = TEST_DIR .. "/root-" .. root_seq .. "-" .. tostring(host.clock_ms())
  assert(_M.exec(string.format("mkdir -p %s && cp -r %s/lua %s/routes %s/sql %s/config.lua %s/",
    shell_quote(dir), ROOT, ROOT, ROOT, ROOT, shell_quote(dir))))
  for rel, text in pairs(extra or {}) do _M.write_file(dir .. "/" .. rel, text) end
  return dir
end

-- Runs a shell command; returns its exit status and combined output.
function _M.run(cmd)
  local p = assert(io.popen("unset LD_PRELOAD; " .. cmd .. " 2>&1; echo \"__exit=$?\""))
  local out = p:read("a")
  p:close()
  local code = tonumber(out:match("__exit=(%d+)%s*$"))
  return code, (out:gsub("__exit=%d+%s*$", ""))
end

-- ---- a private PostgreSQL cluster that a spec may restart, stop or freeze ----

local PGBIN = os.getenv("SHELFSYNC_PGBIN")
  or select(2, _M.run("ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1")):match("%S+")
_M.pgbin = PGBIN
local IS_ROOT = select(2, _M.run("id -u")):match("%d+") == "0"

-- PostgreSQL refuses to run as root.
local function pg_cmd(cmd)
  return (IS_ROOT and "runuser -u postgres -- " or "") .. cmd
end

local Cluster = {}
Cluster.__index = Cluster

-- initdb + start under /tmp; c.url reaches its "postgres" database, c:url_for(db) another.
function _M.new_cluster()
  local dir = "/tmp/shelfsync-pgspec-" .. host.crypto.hex(host.crypto.random(6))
  assert(_M.exec("mkdir -p " .. dir .. (IS_ROOT and (" && chown postgres: " .. dir) or "")))
  local c = setmetatable({ dir = dir, data = dir .. "/data" }, Cluster)
  local code, out = _M.run(pg_cmd(PGBIN .. "/initdb -D " .. c.data .. " -U shelfsync --auth=trust -E UTF8 --locale=C.UTF-8"))
  assert(code == 0, out)
  c:start()
  c.url = c:url_for("postgres")
  return c
end

function Cluster:url_for(db)
  return "postgresql://shelfsync@/" .. db .. "?host=" .. self.dir .. "&port=5432"
end

function Cluster:ctl(args)
  local code, out = _M.run(pg_cmd(PGBIN .. "/pg_ctl -D " .. self.data .. " -w -t 60 " .. args))
  assert(code == 0, out)
end

function Cluster:start()
  -- unix socket only, in the private directory: no port to collide on
  self:ctl("-l " .. self.dir .. "/log -o \"-c listen_addresses='' -c unix_socket_directories='"
    .. self.dir .. "' -c port=5432\" start")
end

-- -l again: pg_ctl does not remember the log file, and a server writing to our pipe would
-- keep h.run waiting forever.
function Cluster:restart() self:ctl("-l " .. self.dir .. "/log -m fast restart") end
function Cluster:stop() self:ctl("-m fast stop") end

function Cluster:destroy()
  self:signal("CONT")
  _M.run(pg_cmd(PGBIN .. "/pg_ctl -D " .. self.data .. " -m immediate -w stop"))
  _M.exec("rm -rf " .. self.dir)
end

-- Sends sig to this cluster's postmaster and every backend it forked, by process id
-- (STOP freezes the database as a hung host would; CONT thaws it).
function Cluster:signal(sig)
  local pid = (_M.read_file(self.data .. "/postmaster.pid") or ""):match("^(%d+)")
  if not pid then return end
  _M.exec(string.format("kill -%s %s $(pgrep -P %s) 2>/dev/null", sig, pid, pid))
end

-- Terminates, after `delay` seconds and from another session, the backends running a query
-- that contains marker.
function Cluster:kill_later(marker, delay)
  _M.exec(string.format(
    "(sleep %s; %s -X -q %s -c \"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    .. "WHERE query LIKE '%%%s%%' AND pid <> pg_backend_pid()\") >/dev/null 2>&1 &",
    delay, PGBIN .. "/psql", _M.shell_quote(self.url), marker))
end

-- ---- raw HTTP over one TCP connection (LuaSocket), for what libcurl will not send ----

local socket = require("socket")

-- Writes `bytes` to srv in one go (all of it before reading, as a naive client does), then
-- reads until the server closes or opts.timeout (default 5) seconds pass.
-- Returns {text, statuses = {n, ...} (every status line seen), closed = bool, send_error}.
-- An open TCP connection to srv, from source address `from` (default 127.0.0.1; any
-- 127.x.y.z works on Linux loopback, so specs can be several clients).
function _M.raw_connect(srv, from, timeout)
  local s = assert(socket.tcp())
  s:settimeout(timeout or 5)
  if from then assert(s:bind(from, 0)) end
  assert(s:connect("127.0.0.1", srv.port))
  return s
end

-- opts.from: source address; opts.timeout: seconds.
function _M.raw(srv, bytes, opts)
  opts = opts or {}
  local s = _M.raw_connect(srv, opts.from, opts.timeout)
  local _, send_err = s:send(bytes)
  local chunks, closed = {}, false
  while true do
    local data, err, partial = s:receive(65536)
    data = data or partial
    if data and #data > 0 then chunks[#chunks + 1] = data end
    if err == "closed" then closed = true break end
    if err then break end
  end
  s:close()
  local text = table.concat(chunks)
  local res = { text = text, statuses = {}, closed = closed, send_error = send_err }
  for code in text:gmatch("HTTP/1%.1 (%d%d%d)") do res.statuses[#res.statuses + 1] = tonumber(code) end
  res.status = res.statuses[1]
  local body = text:match("\r\n\r\n(.*)$")
  if body and body:sub(1, 1) == "{" then
    local ok, v = pcall(host.json.decode, body)
    if ok then res.json = v end
  end
  return res
end

-- ---- a browser-like client with a cookie jar ----

local Client = {}
Client.__index = Client

function _M.client(srv, opts)
  return setmetatable({ srv = srv, jar = {}, origin = (opts and opts.origin) or srv.url }, Client)
end

function Client:cookie_header()
  local parts = {}
  for name, value in pairs(self.jar) do parts[#parts + 1] = name .. "=" .. value end
  table.sort(parts)
  return #parts > 0 and table.concat(parts, "; ") or nil
end

function Client:store(res)
  for _, raw in ipairs(res.cookies or {}) do
    local name, value = raw:match("^%s*([^=;]+)=([^;]*)")
    if name then
      local lower = raw:lower()
      if value == "" or lower:find("max%-age=0") or lower:find("expires=thu, 01 jan 1970") then
        self.jar[name] = nil
      else
        self.jar[name] = value
      end
    end
  end
end

function Client:request(method, path, opts)
  opts = opts or {}
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  headers.Cookie = headers.Cookie or self:cookie_header()
  if method ~= "GET" and method ~= "HEAD" and headers.Origin == nil and self.origin then
    headers.Origin = self.origin
  end
  opts.headers = headers
  local url = path:match("^https?://") and path or (self.srv.url .. path)
  local res = assert(_M.request(method, url, opts))
  self:store(res)
  return res
end

function Client:get(path, opts) return self:request("GET", path, opts) end
-- A request with a raw JSON text body (the encoder above writes an empty table as {}).
function Client:send(method, path, text)
  return self:request(method, path, { body = text, headers = { ["Content-Type"] = "application/json" } })
end
function Client:delete(path, opts) return self:request("DELETE", path, opts) end
function Client:post(path, body, opts)
  opts = opts or {}
  opts.json = body
  return self:request("POST", path, opts)
end
function Client:put(path, body, opts)
  opts = opts or {}
  opts.json = body
  return self:request("PUT", path, opts)
end
function Client:patch(path, body, opts)
  opts = opts or {}
  opts.json = body
  return self:request("PATCH", path, opts)
end

-- The raw Set-Cookie value for name in a response, or nil.
function _M.cookie(res, name)
  for _, raw in ipairs(res.cookies or {}) do
    if raw:sub(1, #name + 1) == name .. "=" then return raw end
  end
  return nil
end

-- {status, error code} of a response, for one assert.same on a refusal.
function _M.error_of(res)
  return { status = res.status, error = res.json and res.json.error }
end

-- A client signed in through dev login (on in every test server).
function _M.login(srv, email, name)
  local c = _M.client(srv)
  local res = c:post("/auth/dev/login", { email = email, name = name or email:match("^[^@]+") })
  assert(res.status == 200, "dev login failed: " .. res.status .. " " .. res.body)
  c.user = res.json.user
  return c
end

-- The signed-in client c syncs items ({asin =, title =, source =, ...}) the way the
-- extension does: a fresh upload token, then POST /api/sync/import. Returns the response.
function _M.sync_items(srv, c, items)
  local tok = c:post("/api/sync/token", {})
  assert(tok.status == 200, tok.body)
  return assert(_M.request("POST", srv.url .. "/api/sync/import", {
    headers = { Authorization = "Bearer " .. tok.json.token },
    json = { titles = items },
  }))
end

-- Several sync imports at once (curl processes started together). jobs: {token=, body=}
-- (the JSON text). Returns {status=, json=} per job.
function _M.parallel_imports(srv, jobs)
  local dir = _M.test_dir .. "/parallel-" .. _M.host.crypto.uuid()
  _M.exec("mkdir -p " .. _M.shell_quote(dir))
  local cmds = {}
  for i, job in ipairs(jobs) do
    _M.write_file(dir .. "/body" .. i, job.body)
    cmds[#cmds + 1] = string.format(
      "curl -s -o %s -w '%%{http_code}' -H %s -H 'Content-Type: application/json' " ..
      "--data-binary @%s %s > %s &",
      _M.shell_quote(dir .. "/out" .. i), _M.shell_quote("Authorization: Bearer " .. job.token),
      _M.shell_quote(dir .. "/body" .. i), _M.shell_quote(srv.url .. "/api/sync/import"),
      _M.shell_quote(dir .. "/status" .. i))
  end
  _M.exec(table.concat(cmds, " ") .. " wait")
  local out = {}
  for i = 1, #jobs do
    local body = _M.read_file(dir .. "/out" .. i) or ""
    local ok, decoded = pcall(_M.host.json.decode, body)
    out[i] = { status = tonumber(_M.read_file(dir .. "/status" .. i)), json = ok and decoded or nil }
  end
  _M.exec("rm -rf " .. _M.shell_quote(dir))
  return out
end

-- An empty database, a server, an anonymous client and a signed-in client for each name
-- ("alice" signs in as alice@example.com, "Alice"): w.srv, w.pg, w.anon, w.alice, ...
function _M.fresh_world(names, server_opts)
  _M.reset_db()
  local srv = _M.start_server(server_opts)
  local w = { srv = srv, pg = _M.db(), anon = _M.client(srv) }
  for _, name in ipairs(names) do
    w[name] = _M.login(srv, name .. "@example.com", name:sub(1, 1):upper() .. name:sub(2))
  end
  return w
end

return _M
