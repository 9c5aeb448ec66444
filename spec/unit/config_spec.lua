-- config.lua + environment overrides, through the binary's `config` command (the same
-- code the server runs at start).
local h = require("spec.support.helpers")

local function config(env)
  local parts = { "env -u DATABASE_URL" }
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. h.shell_quote(v) end
  local code, out = h.run(table.concat(parts, " ") .. " " .. h.binary .. " config")
  local ok, decoded = pcall(h.host.json.decode, out)
  return code, ok and decoded or nil, out
end

describe("configuration", function()
  it("takes config.lua's defaults", function()
    local code, c = config()
    assert.are.equal(0, code)
    assert.are.equal("127.0.0.1:8080", c.listen)
    assert.are.equal(1048576, c.max_body_bytes)
    assert.are.equal(false, c.dev_login)
  end)

  it("overrides any key from SHELFSYNC_<UPPER_SNAKE>, coerced to the default's type", function()
    local code, c = config({
      SHELFSYNC_LISTEN = "127.0.0.1:9999", SHELFSYNC_WORKERS = "3", SHELFSYNC_DEV_LOGIN = "1",
      SHELFSYNC_CORS_ORIGINS = "chrome-extension://abc, https://app.example",
      SHELFSYNC_AUDIBLE_LIBRARY_URL = "https://www.audible.co.uk/library/titles",
    })
    assert.are.equal(0, code)
    assert.are.same({ "127.0.0.1:9999", 3, true, { "chrome-extension://abc", "https://app.example" },
      "https://www.audible.co.uk/library/titles" },
      { c.listen, c.workers, c.dev_login, c.cors_origins, c.audible_library_url })
  end)

  it("reads DATABASE_URL for database_url, and never prints it (it may hold a password)", function()
    local _, c, out = config({ DATABASE_URL = "postgresql://u:hunter2@db.internal/shelfsync" })
    assert.are.equal("(set)", c.database_url)
    assert.is_nil(out:find("hunter2", 1, true))
  end)

  it("never prints secrets", function()
    local _, c, out = config({ SHELFSYNC_SECRET = "a-very-secret-value-that-is-long-enough" })
    assert.are.equal("(set)", c.secret)
    assert.is_nil(out:find("a-very-secret-value", 1, true))
  end)

  it("refuses a value of the wrong type, naming the variable", function()
    local code, _, out = config({ SHELFSYNC_WORKERS = "many" })
    assert.are.equal(1, code)
    assert.matches("SHELFSYNC_WORKERS=many: expected a whole number", out, 1, true)
  end)

  it("refuses a value out of its declared range, naming the key", function()
    local code, _, out = config({ SHELFSYNC_WORKERS = "300" })
    assert.are.equal(1, code)
    assert.matches("config: workers = 300 is out of range (0 to 256)", out, 1, true)
    code, _, out = config({ SHELFSYNC_SYNC_MAX_TITLES = "0" })
    assert.are.equal(1, code)
    assert.matches("config: sync_max_titles = 0 is out of range", out, 1, true)
  end)

  -- A config file edited by an operator: the same keys, one changed.
  local function config_file(from, to)
    local dir = h.temp_root()
    local text = h.read_file(dir .. "/config.lua")
    local changed = text:gsub(from, to, 1)
    assert.are_not.equal(text, changed)
    h.write_file(dir .. "/config.lua", changed)
    return h.run("env -u DATABASE_URL SHELFSYNC_ROOT=" .. dir .. " " .. h.binary .. " config")
  end

  it("refuses a key config.lua holds but nothing declares (a typo), naming it", function()
    local code, out = config_file("\n  session_ttl_days = 30,", "\n  session_ttl_days = 30,\n  sesion_ttl_days = 7,")
    assert.are.equal(1, code)
    assert.matches("config: unknown key sesion_ttl_days", out, 1, true)
  end)

  it("refuses a value of the wrong type in config.lua, naming the key", function()
    local code, out = config_file("session_ttl_days = 30", 'session_ttl_days = "a month"')
    assert.are.equal(1, code)
    assert.matches("config: session_ttl_days must be a whole number", out, 1, true)
    code, out = config_file("session_ttl_days = 30", "session_ttl_days = 30.5")
    assert.are.equal(1, code)
    assert.matches("config: session_ttl_days must be a whole number", out, 1, true)
    code, out = config_file("cors_origins = {}", "cors_origins = { 42 }")
    assert.are.equal(1, code)
    assert.matches("config: cors_origins must be a list of strings", out, 1, true)
  end)

  it("refuses a config.lua that lacks a declared key, naming it", function()
    local code, out = config_file("\n  sync_warning_cap = 100,", "")
    assert.are.equal(1, code)
    assert.matches("config: sync_warning_cap is missing", out, 1, true)
  end)

  it("refuses to serve without a secret outside local mode, saying why", function()
    local code, out = h.run("env -u SHELFSYNC_SECRET SHELFSYNC_LISTEN=127.0.0.1:0 " .. h.binary .. " serve")
    assert.are.equal(1, code)
    assert.matches("no secret configured", out, 1, true)
  end)

  it("generates and keeps a secret under var/ in local mode", function()
    local dir = h.temp_root()
    local cmd = "cd " .. dir .. " && SHELFSYNC_LOCAL_MODE=1 SHELFSYNC_ROOT=" .. dir .. " " .. h.binary .. " config"
    local code = h.run(cmd)
    assert.are.equal(0, code)
    local first = h.read_file(dir .. "/var/secret")
    assert.are.equal(64, #first)
    h.run(cmd)
    assert.are.equal(first, h.read_file(dir .. "/var/secret"))
  end)
end)
