-- cors: answers CORS preflights by the route's policy (its `cors` field):
--   "listed" (the default): only the origins in config.cors_origins (a separately hosted
--            web UI); preflights from other origins get 403.
--   "public": any origin, without credentials; only for routes that read no cookie
--            (auth "bearer" or "none"), such as the extension's import, whose fetch carries
--            the Audible page's origin.
-- The headers of actual answers (Lua's and the C-built errors alike) are added in C from
-- the same policy (core/routes.c, routes_cors_headers), so no answer goes without them.
local _M = {}

local ipairs, concat = ipairs, table.concat

local ALLOW_HEADERS = "Authorization, Content-Type, Content-Encoding, X-Request-Id, If-None-Match"
local MAX_AGE = "600"

local function listed(origin, config)
  if not origin then return false end
  for _, o in ipairs(config.cors_origins) do
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
  local public = route and route.cors == "public"
  if not public and not listed(origin, config) then
    local errors, json = require("errors"), require("json")
    return { status = 403, headers = { ["Content-Type"] = "application/json; charset=utf-8" },
             body = json.encode(errors.body("cors_rejected", "origin not allowed", nil, req.request_id)) }
  end
  if not route then
    return { status = 204, headers = { Allow = methods }, body = "" }
  end
  return { status = 204, body = "", headers = {
    ["Access-Control-Allow-Origin"] = public and "*" or origin,
    ["Access-Control-Allow-Methods"] = concat({ want, "OPTIONS" }, ", "),
    ["Access-Control-Allow-Headers"] = ALLOW_HEADERS,
    ["Access-Control-Max-Age"] = MAX_AGE,
    Vary = "Origin",
  } }
end

return _M
