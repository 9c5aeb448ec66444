-- after_response: work a request leaves for after its answer is sent. The worker that
-- answered runs it next (core/http_server.c, run_request, through app.after_response),
-- while the client already has the answer; the worker's next request waits for it.
--
--   after_response.start(label)    -- app.handle, as a request starts: drops anything left
--   after_response.add(key, fn)    -- during the request; one piece per key (the first)
--   after_response.drop()          -- app.handle, when the handler raised: none of it runs
--   after_response.run()           -- app.after_response; a CLI command calls it itself
--
-- Only the request that added a piece can run it: start() empties the list, a handler that
-- raised has its pieces dropped, and C calls after_response only after a handle() that
-- answered. Each piece runs protected: a failure is logged with the request's label and
-- does not stop the others, the worker or the next request.
--
-- A piece is lost if the process dies (or its statement fails) before it runs, so only
-- work that something else redoes belongs here: the sync's enrichment queue, for one,
-- which the next sync of those titles rebuilds (see sync_import.import).
local _M = {}

local errors = require("errors")

local xpcall, ipairs, tostring = xpcall, ipairs, tostring

local pending, order = {}, {}
local label = "request"

function _M.start(what)
  pending, order = {}, {}
  label = what or "request"
end

function _M.add(key, fn)
  if pending[key] then return end
  pending[key] = fn
  order[#order + 1] = key
end

function _M.drop()
  pending, order = {}, {}
end

function _M.run()
  if not order[1] then return end
  local keys, fns = order, pending
  pending, order = {}, {}
  for _, key in ipairs(keys) do
    local ok, err = xpcall(fns[key], host.traceback)
    if not ok then
      host.log("error", label .. ": after the answer, " .. tostring(key) .. " failed: " .. errors.describe(err))
    end
  end
end

return _M
