-- app: the framework's entry points, called from C.
--   init()        loads every routes/*.lua into the router (a VM is built whole or not at all)
--   handle(req)   one request -> one response table (see doc/ARCHITECTURE.md)
--   cleanup()     periodic housekeeping: every route file's `cleanup` function
--   routes()      what C needs to know of each route before its body arrives (below)
--   enrich_claim(n, owner), enrich_done(results), enrich_release(asins, delay_ms, owner)
--                 the metadata fetcher's calls (core/enrich.c), see lua/enrichment.lua
--   enrich_tidy() the fetcher's call once no sync of its process runs: the search index's
--                 pending list merged (lua/title_search.lua, merge)
--   after_response()  the worker's call once a request's answer is sent (lua/after_response.lua)
local _M = {}

local json = require("json")
local errors = require("errors")
local router = require("router")
local cors = require("cors")
local response = require("response")
local after_response = require("after_response")

local host, type, ipairs, xpcall, tostring, tointeger = host, type, ipairs, xpcall, tostring, math.tointeger
local config = host.config

-- "bearer": the handler authenticates an `Authorization: Bearer` token and no cookie is
-- read, so such a route may be called cross-origin from anywhere (cors = "public"). Such a
-- route names its tokens' `audience`: C refuses a token for another one before the body
-- is read, and the audience is the realm of the 401's WWW-Authenticate (core/routes.c).
local AUTH_MODES = { none = true, session = true, optional = true, bearer = true }
-- "listed": only config.cors_origins; "public": any origin, never with credentials.
local CORS_POLICIES = { listed = true, public = true }
local COOKIELESS = { none = true, bearer = true }
local STATE_CHANGING = { POST = true, PUT = true, PATCH = true, DELETE = true }
local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true }
-- What core/routes.c takes as an audience: printable ASCII but '"' and '\' (it goes into a
-- quoted string), 1 to 128 characters.
local AUDIENCE_MAX = 128
local function audience_ok(aud)
  return type(aud) == "string" and #aud >= 1 and #aud <= AUDIENCE_MAX
    and not aud:find('[^!-~]') and not aud:find('["\\]')
end

local routes            -- the router, built by init()
local cleanups = {}     -- {name, fn}

local function check_route(file, i, r)
  local where = file .. " entry " .. i
  if type(r) ~= "table" then error(where .. ": expected a table", 0) end
  if not METHODS[r.method] then error(where .. ": bad method " .. tostring(r.method), 0) end
  if type(r.path) ~= "string" or r.path:sub(1, 1) ~= "/" then error(where .. ": path must start with /", 0) end
  if type(r.handler) ~= "function" then error(where .. ": handler must be a function", 0) end
  r.auth = r.auth or "session"
  if not AUTH_MODES[r.auth] then error(where .. ": auth must be none, session, optional or bearer", 0) end
  -- A route may write its limit as a float (1e6): a whole number is accepted as one.
  r.body_limit = tointeger(r.body_limit or config.max_body_bytes)
  if not r.body_limit or r.body_limit < 1 then
    error(where .. ": body_limit must be a positive whole number of bytes", 0)
  end
  if r.raw_body ~= nil and type(r.raw_body) ~= "boolean" then
    error(where .. ": raw_body must be true or false", 0)
  end
  if r.auth == "bearer" then
    if not audience_ok(r.audience) then
      error(where .. ': auth = "bearer" needs an audience (the aud of its tokens): 1 to 128 '
        .. "printable ASCII characters, no space, quote or backslash", 0)
    end
  elseif r.audience ~= nil then
    error(where .. ': audience is for auth = "bearer" routes only', 0)
  end
  r.cors = r.cors or "listed"
  if not CORS_POLICIES[r.cors] then error(where .. ": cors must be listed or public", 0) end
  if r.cors == "public" and not COOKIELESS[r.auth] then
    error(where .. ": cors = \"public\" needs auth = \"bearer\" or \"none\" (cookies stay same-origin)", 0)
  end
end

function _M.init()
  routes = router.new()
  for _, name in ipairs(host.route_files()) do
    local list = require(name)
    if type(list) ~= "table" then error(name .. " must return a list of endpoints", 0) end
    for i, r in ipairs(list) do
      check_route(name, i, r)
      routes:add(r)
    end
    if type(list.cleanup) == "function" then
      cleanups[#cleanups + 1] = { name = name, fn = list.cleanup }
    end
  end
end

-- ---- responses ----

local json_response = response.json

local function error_response(req, status, code, message, details, headers, fields)
  return json_response(status, errors.body(code, message, details, req.request_id, fields), headers)
end

-- ---- the request context handed to handlers ----

local ctx_mt = { __index = {} }

-- ctx:json_text() -> the body's text, checked as json_body checks it before decoding (415
-- for another content type, 400 malformed_json when empty): for a caller with its own
-- decoder (routes/sync.lua's host.bulk)
function ctx_mt.__index.json_text(ctx)
  local ctype = ctx.req.headers["content-type"]
  if ctype and not ctype:find("json", 1, true) then
    errors.raise(415, "unsupported_media_type", "send the body as application/json")
  end
  if ctx.req.body == "" then
    errors.raise(400, "malformed_json", "the request body is empty; expected JSON")
  end
  return ctx.req.body
end

-- ctx:json_body() -> the decoded JSON body (400 malformed_json / 415 otherwise)
function ctx_mt.__index.json_body(ctx)
  if ctx._json ~= nil then return ctx._json end
  local v, err = json.decode(ctx:json_text())
  if v == nil then
    errors.raise(400, "malformed_json", "the request body is not valid JSON: " .. err)
  end
  ctx._json = v
  return v
end

local function authenticate(ctx, route)
  if route.auth == "none" then return end
  local session = require("session")
  local user, sess = session.authenticate(ctx.req)
  if user then
    ctx.user, ctx.session = user, sess
  elseif route.auth == "session" then
    errors.raise(401, "unauthenticated", "sign in first")
  end
  if user and STATE_CHANGING[ctx.req.method] then
    session.check_csrf(ctx.req)
  end
end

local function run(ctx, route)
  authenticate(ctx, route)
  local status, body, headers = route.handler(ctx)
  if type(status) == "table" then return status end      -- a full response
  return json_response(status or 200, body, headers)
end

function _M.handle(req)
  after_response.start("request " .. req.request_id)
  local method = req.method
  if method == "OPTIONS" then
    return cors.preflight(req, routes, config) or
      error_response(req, 404, "not_found", "no such endpoint")
  end
  local route, params, allowed = routes:match(method, req.path)
  local resp
  if not route then
    if params == "method_not_allowed" then
      resp = error_response(req, 405, "method_not_allowed", method .. " is not allowed here",
        nil, { Allow = allowed })
    else
      resp = error_response(req, 404, "not_found", "no such endpoint")
    end
  else
    local ctx = setmetatable({ req = req, params = params, query = req.query, route = route }, ctx_mt)
    local ok, res = xpcall(run, host.traceback, ctx, route)
    if not ok then after_response.drop() end    -- a failed handler's later work is not done
    if ok then
      resp = res
    elseif errors.is_http(res) then
      resp = error_response(req, res.status, res.code, res.message, res.details, res.headers, res.fields)
    else
      host.log("error", "request " .. req.request_id .. " " .. method .. " " .. req.path .. ": " .. errors.describe(res))
      resp = error_response(req, 500, "internal_error",
        "the server failed to handle this request (request id " .. req.request_id .. ")")
    end
  end
  resp.route = route and route.path      -- for the C side's per-route metrics
  -- A session renewed by session.authenticate sends its cookie again (lua/session.lua).
  if req.set_cookies then require("session").decorate(req, resp) end
  return resp
end

function _M.cleanup()
  for _, c in ipairs(cleanups) do
    local ok, err = xpcall(c.fn, host.traceback)
    if not ok then host.log("error", "cleanup in " .. c.name .. " failed: " .. errors.describe(err)) end
  end
end

-- The route table C reads each time a snapshot of the scripts is published (core/routes.c;
-- doc/ARCHITECTURE.md, "Route metadata"): every route in the router's match order, with what
-- the C server applies before Lua sees the request, and the origins the "listed" policy allows.
function _M.routes()
  local list = {}
  for i, r in ipairs(routes:list()) do
    list[i] = { method = r.method, path = r.path, body_limit = r.body_limit, cors = r.cors, auth = r.auth,
                raw_body = r.raw_body == true, audience = r.audience }
  end
  return { routes = list, cors_origins = config.cors_origins }
end

function _M.enrich_claim(n, owner)
  return require("enrichment").claim(n, owner)
end

function _M.enrich_done(results)
  return require("enrichment").done(results)
end

function _M.enrich_release(asins, delay_ms, owner)
  return require("enrichment").release(asins, delay_ms, owner)
end

function _M.enrich_tidy()
  return require("title_search").merge()
end

function _M.after_response()
  return after_response.run()
end

-- `shelfsync import --user EMAIL [--source S] [--marketplace M] FILE`: the route's own
-- import (routes/import.lua) for an operator. Returns the answer as JSON, or nil and the
-- error as JSON (or a message).
function _M.import_file(email, source, marketplace, body)
  local db = require("db")
  after_response.start("shelfsync import")
  local ok, res = xpcall(function()
    local user = db.one([[SELECT id, email FROM users
                          WHERE lower(email) = lower($1) AND status = 'active']], email)
    if not user then errors.raise(404, "not_found", "no active user has the email " .. email) end
    local params = { source = source, marketplace = marketplace }
    return require("routes.import").import_for(user, body, 1, #body, params, "cli")
  end, host.traceback)
  -- No answer to send first: the command does the import's later work before it returns.
  if ok then after_response.run() else after_response.drop() end
  if ok then return json.encode(res) end
  if errors.is_http(res) then
    return nil, json.encode(errors.body(res.code, res.message, res.details))
  end
  return nil, tostring(res)
end

return _M
