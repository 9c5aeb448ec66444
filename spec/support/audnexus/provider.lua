-- The local Audnexus stand-in (provider.mjs) from specs and benchmarks.
--
--   local fake = require("spec.support.audnexus.provider")
--   local p = fake.start{ latency_ms = 0, generate = true }   -- node provider.mjs, free port
--   p.url                                      -- metadata_provider_url for the server
--   p:book(asin, {...})                        -- answer this JSON for asin
--   p:fault(asin_or_star, "server_error", {times = 2, retry_after = 1, delay_ms = 3000})
--   p:latency(ms)
--   p:state()                                  -- {requests = {asin = n}, total, regions, max_in_flight}
--   p:reset()
--   p:stop()
local h = require("spec.support.helpers")

local _M = {}

local Provider = {}
Provider.__index = Provider

local DIR = h.root .. "/spec/support/audnexus"

function _M.start(opts)
  opts = opts or {}
  local flags = "--latency-ms " .. tostring(opts.latency_ms or 0)
  if opts.generate == false then flags = flags .. " --no-generate" end
  local p = h.start_node(DIR, "provider.mjs", flags, "the fake metadata provider")
  return setmetatable({ pid = p.pid, pidfile = p.pidfile, out = p.out, port = p.info.port,
                        url = p.info.url }, Provider)
end

local function call(self, method, path, body)
  return h.control(self.url, method, path, body)
end

function Provider:book(asin, book)
  call(self, "POST", "/control/book", { asin = asin, book = book })
end

function Provider:fault(asin, kind, opts)
  local body = { asin = asin, kind = kind }
  for k, v in pairs(opts or {}) do body[k] = v end
  call(self, "POST", "/control/fault", body)
end

function Provider:latency(ms)
  call(self, "POST", "/control/latency", { ms = ms })
end

function Provider:state()
  return call(self, "GET", "/control/state")
end

function Provider:requests(asin)
  return self:state().requests[asin] or 0
end

function Provider:reset()
  call(self, "POST", "/control/reset", {})
end

function Provider:stop()
  h.stop_node(self, "the fake metadata provider")
end

return _M
