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
-- h.start_node starts it (the pid file in the run's folder, so scripts/test.sh kills a
-- provider a crashed spec left behind).
local h = require("spec.support.helpers")

local _M = {}

local Provider = {}
Provider.__index = Provider

local DIR = h.root .. "/spec/support/oidc"

function _M.start()
  if not h.read_file(DIR .. "/node_modules/oauth2-mock-server/package.json") then
    error("spec/support/oidc/node_modules is missing: run `make deps` (npm ci there)")
  end
  local p = h.start_node(DIR, "provider.js", "", "the OpenID provider")
  local info = p.info
  return setmetatable({
    pid = p.pid, pidfile = p.pidfile, out = p.out, port = info.port, url = info.issuer,
    discovery_url = info.issuer .. "/.well-known/openid-configuration",
  }, Provider)
end

local function call(self, method, path, body)
  return h.control(self.url, method, path, body)
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
  h.stop_node(self, "the OpenID provider")
end

return _M
