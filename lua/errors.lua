-- errors: intentional HTTP errors and their JSON shape.
-- A handler raises errors.raise(422, "validation_failed", "...", details); the framework
-- turns it into {"error","message","details"} with that status. Anything else is a 500.
local _M = {}

local error, type, setmetatable = error, type, setmetatable

local http_error_mt = {
  __tostring = function(e) return e.status .. " " .. e.code .. ": " .. e.message end,
}

-- details: list of {path = "titles[3].asin", message = "..."} (optional)
function _M.raise(status, code, message, details)
  error(setmetatable({ status = status, code = code, message = message, details = details }, http_error_mt), 0)
end

function _M.is_http(e)
  return type(e) == "table" and getmetatable(e) == http_error_mt
end

-- The JSON body for an http error (details always an array).
function _M.body(status_code, message, details, request_id)
  local json = require("json")
  return {
    error = status_code,
    message = message,
    details = json.array(details or {}),
    requestId = request_id,
  }
end

-- Shorthands used across routes.
function _M.not_found(what) _M.raise(404, "not_found", (what or "resource") .. " not found") end
function _M.bad_request(code, message, details) _M.raise(400, code, message, details) end
function _M.unprocessable(code, message, details) _M.raise(422, code, message, details) end

return _M
