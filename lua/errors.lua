-- errors: intentional HTTP errors and their JSON shape.
-- A handler raises errors.raise(422, "validation_failed", "...", details[, headers[, fields]]);
-- the framework turns it into {"error","message","details"} with that status and headers.
-- Anything else is a 500, logged with errors.describe.
local _M = {}

local error, type, pairs, setmetatable, getmetatable, tostring =
  error, type, pairs, setmetatable, getmetatable, tostring

local http_error_mt = {
  __tostring = function(e) return e.status .. " " .. e.code .. ": " .. e.message end,
}

-- details: list of {path = "titles[3].asin", message = "..."} (optional); headers: response
-- headers the answer carries, e.g. {["WWW-Authenticate"] = ...} (optional); fields: more
-- members of the JSON body, for a client that reads one (optional).
function _M.raise(status, code, message, details, headers, fields)
  error(setmetatable({ status = status, code = code, message = message, details = details,
                       headers = headers, fields = fields }, http_error_mt), 0)
end

function _M.is_http(e)
  return type(e) == "table" and getmetatable(e) == http_error_mt
end

-- An unexpected error as one log text: its tostring (a database error names its SQLSTATE)
-- and the traceback host.traceback attached where it was raised.
function _M.describe(e)
  local tb = type(e) == "table" and e.traceback
  return tostring(e) .. (type(tb) == "string" and tb or "")
end

-- The JSON body for an http error (details always an array), with fields added.
function _M.body(status_code, message, details, request_id, fields)
  local json = require("json")
  local body = {
    error = status_code,
    message = message,
    details = json.array(details or {}),
    requestId = request_id,
  }
  for k, v in pairs(fields or {}) do
    if body[k] == nil then body[k] = v end
  end
  return body
end

-- Shorthands used across routes.
function _M.not_found(what) _M.raise(404, "not_found", (what or "resource") .. " not found") end
function _M.bad_request(code, message, details) _M.raise(400, code, message, details) end
function _M.unprocessable(code, message, details) _M.raise(422, code, message, details) end

return _M
