-- cors: cross-origin access for the origins listed in config.cors_origins (the browser
-- extension, a separately hosted web UI). Preflights from other origins get 403; simple
-- responses to them get no CORS headers, so the browser keeps them from the page.
local _M = {}

local ipairs, concat = ipairs, table.concat

local ALLOW_HEADERS = "Authorization, Content-Type, Content-Encoding, X-Request-Id, If-None-Match"
local EXPOSE_HEADERS = "X-Request-Id, ETag"
local MAX_AGE = "600"

local function allowed(origin, config)
  if not origin then return false end
  for _, o in ipairs(config.cors_origins or {}) do
    if o == origin or o == "*" then return true end
  end
  return false
end

-- OPTIONS: answers a CORS preflight (or a plain OPTIONS) for a path the router knows.
function _M.preflight(req, routes, config)
  local want = req.headers["access-control-request-method"] or "GET"
  local route, _, allow = routes:match(want, req.path)
  if not route and not allow then return nil end
  local methods = allow or want
  if route then methods = want end
  local origin = req.headers.origin
  if not req.headers["access-control-request-method"] then
    return { status = 204, headers = { Allow = methods }, body = "" }
  end
  if not allowed(origin, config) then
    local errors, json = require("errors"), require("json")
    return { status = 403, headers = { ["Content-Type"] = "application/json; charset=utf-8" },
             body = json.encode(errors.body("cors_rejected", "origin not allowed", nil, req.request_id)) }
  end
  if not route then
    return { status = 204, headers = { Allow = methods }, body = "" }
  end
  return { status = 204, body = "", headers = {
    ["Access-Control-Allow-Origin"] = origin,
    ["Access-Control-Allow-Methods"] = concat({ want, "OPTIONS" }, ", "),
    ["Access-Control-Allow-Headers"] = ALLOW_HEADERS,
    ["Access-Control-Max-Age"] = MAX_AGE,
    Vary = "Origin",
  } }
end

-- Adds CORS headers to a response for an allowed origin.
function _M.decorate(req, resp, config)
  local origin = req.headers.origin
  if resp.headers["Access-Control-Allow-Origin"] or not allowed(origin, config) then return end
  resp.headers["Access-Control-Allow-Origin"] = origin
  resp.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
  resp.headers.Vary = resp.headers.Vary and (resp.headers.Vary .. ", Origin") or "Origin"
end

return _M
