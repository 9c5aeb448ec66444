-- The local OpenID provider (provider.js) from specs.
--
--   local provider = require("spec.support.oidc.provider")
--   local p = provider.start()                 -- node provider.js on a free 127.0.0.1 port
--   p.url, p.discovery_url
--   p:register(client_id, secret, {redirect_uri, ...})
--   p:next{claims = {...}, misbehave = "wrong_nonce"}   -- for the next /authorize
--   p:rotate{retire_old = true}                -- a new signing key and kid
--   p:state()                                  -- {jwks_fetches, token_requests, ...}
--   p:reset()
--   p:stop()
-- The pid file lives in the test run's folder, so scripts/test.sh kills a provider a
-- crashed spec left behind.
local h = require("spec.support.helpers")

local _M = {}

local Provider = {}
Provider.__index = Provider

local DIR = h.root .. "/spec/support/oidc"
-- h.exec keeps an ASan run's LD_PRELOAD away from node and the shell tools.
local exec = h.exec

function _M.start()
  if not h.read_file(DIR .. "/node_modules/oauth2-mock-server/package.json") then
    error("spec/support/oidc/node_modules is missing: run `make deps` (npm ci there)")
  end
  local id = h.host.crypto.hex(h.host.crypto.random(4))
  local out = h.test_dir .. "/oidc-" .. id .. ".out"
  local pidfile = h.test_dir .. "/oidc-" .. id .. ".pid"
  exec(string.format("cd %s && node provider.js >%s 2>&1 & echo $! > %s",
    h.shell_quote(DIR), h.shell_quote(out), h.shell_quote(pidfile)))
  -- The shell creates the file before writing the pid: wait for the digits.
  local pid = h.wait_until(function() return (h.read_file(pidfile) or ""):match("%d+") end, 5, "provider pid")
  local line = h.wait_until(function()
    local text = h.read_file(out) or ""
    if text:find("^Error") or text:find("\nError") then error("provider failed:\n" .. text) end
    return text:match("^(%b{})\n")
  end, 15, "the OpenID provider to listen")
  local info = h.host.json.decode(line)
  return setmetatable({
    pid = pid, pidfile = pidfile, out = out, port = info.port, url = info.issuer,
    discovery_url = info.issuer .. "/.well-known/openid-configuration",
  }, Provider)
end

local function call(self, method, path, body)
  local res = assert(h.request(method, self.url .. path, body and { json = body } or nil))
  assert(res.status < 300, method .. " " .. path .. ": " .. res.status .. " " .. res.body)
  return res.json
end

function Provider:register(client_id, secret, redirect_uris)
  call(self, "POST", "/control/client",
    { client_id = client_id, client_secret = secret, redirect_uris = redirect_uris })
end

function Provider:next(profile)
  call(self, "POST", "/control/next", profile)
end

function Provider:rotate(opts)
  return call(self, "POST", "/control/rotate", opts or {})
end

function Provider:state()
  return call(self, "GET", "/control/state")
end

function Provider:reset()
  call(self, "POST", "/control/reset", {})
end

function Provider:log()
  return h.read_file(self.out)
end

function Provider:stop()
  exec("kill " .. self.pid .. " 2>/dev/null")
  h.wait_until(function() return exec("kill -0 " .. self.pid .. " 2>/dev/null") ~= true end, 5,
    "the OpenID provider to exit")
  os.remove(self.pidfile)
end

return _M
