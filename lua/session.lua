-- session: database sessions behind the shelfsync_session cookie, and the CSRF origin check.
--
-- The cookie holds a random 256-bit token (base64url, 43 characters); the sessions table
-- holds only its SHA-256 (session_token_hash), so a database leak yields no usable cookie.
-- A session lives session_ttl_days (30) and is renewed to a full lifetime by the first
-- request made after half of it has passed; the renewed cookie goes out through
-- _M.decorate(req, resp), which the framework calls on every response.
--
-- Called by the framework (lua/app.lua) for auth = "session" / "optional" routes:
--   session.authenticate(req) -> user, session | nil
--   session.check_csrf(req)   raises 403 csrf_rejected unless Origin (else Referer)
--                             names the public URL's origin
--   session.decorate(req, resp) adds a pending Set-Cookie (renewal) to resp
-- Called by routes/auth.lua: create, destroy, cookie, clear_cookie, user_json.
-- Housekeeping: session.cleanup() deletes expired rows (routes/auth.lua exports it as the
-- route file's cleanup, which the server's timer and `shelfsync cleanup` run).
local _M = {}

local db = require("db")
local errors = require("errors")
local json = require("json")

local crypto = host.crypto
local config = host.config
local type, tonumber, concat = type, tonumber, table.concat
local lower, match, find = string.lower, string.match, string.find

_M.COOKIE = "shelfsync_session"

local DAY = 86400
local TOKEN_BYTES = 32
local TOKEN_PATTERN = "^[A-Za-z0-9_-]+$"
local TOKEN_LEN = 43                       -- base64url of 32 bytes, unpadded

local STATE_CHANGING = { POST = true, PUT = true, PATCH = true, DELETE = true }

-- The select list of a user row under table alias `a` (see _M.user_json for the shape
-- answers use); host.pg answers created_at as an ISO-8601 UTC string.
function _M.user_columns(a)
  return (string.gsub("$.id, $.email, $.name, $.image, $.status, $.username, $.created_at", "%$", a))
end
local USER_COLUMNS_U = _M.user_columns("u")

function _M.ttl_s()
  local days = config.session_ttl_days
  return math.floor(days * DAY)
end

-- scheme://host[:port] of the public URL, lowercased, default ports dropped: what a
-- browser sends as Origin for pages of this site.
local function origin_of(url)
  if type(url) ~= "string" then return nil end
  local scheme, authority = match(url, "^(%a[%w+.-]*)://([^/?#]+)")
  if not scheme then return nil end
  scheme, authority = lower(scheme), lower(authority)
  if scheme == "https" then authority = authority:gsub(":443$", "")
  elseif scheme == "http" then authority = authority:gsub(":80$", "") end
  return scheme .. "://" .. authority
end
_M.origin_of = origin_of

local function secure()
  return lower(config.public_url):sub(1, 8) == "https://"
end

-- Set-Cookie value for a session token valid max_age seconds.
function _M.cookie(token, max_age)
  local parts = { _M.COOKIE .. "=" .. token, "Path=/", "Max-Age=" .. max_age, "HttpOnly", "SameSite=Lax" }
  if secure() then parts[#parts + 1] = "Secure" end
  return concat(parts, "; ")
end

-- Set-Cookie value that removes the session cookie.
function _M.clear_cookie()
  local parts = { _M.COOKIE .. "=", "Path=/", "Max-Age=0", "HttpOnly", "SameSite=Lax" }
  if secure() then parts[#parts + 1] = "Secure" end
  return concat(parts, "; ")
end

-- The user as the API shows it ({"id","email","name","image","createdAt"}).
function _M.user_json(u)
  local null = json.null
  return {
    id = u.id,
    email = u.email,
    name = u.name == nil and null or u.name,
    image = u.image == nil and null or u.image,
    createdAt = u.created_at,
  }
end

local function token_of(req)
  local token = req.cookies and req.cookies[_M.COOKIE]
  if type(token) ~= "string" or #token ~= TOKEN_LEN or not find(token, TOKEN_PATTERN) then
    return nil
  end
  return token
end

-- Creates a session for user_id. Returns the Set-Cookie value carrying its token.
function _M.create(user_id)
  local token = crypto.b64url_encode(crypto.random(TOKEN_BYTES))
  local ttl = _M.ttl_s()
  db.query([[
    INSERT INTO sessions (session_token_hash, user_id, expires)
    VALUES (decode($1, 'hex'), $2, now() + make_interval(secs => $3))]],
    crypto.sha256_hex(token), user_id, ttl)
  return _M.cookie(token, ttl)
end

-- Deletes the session the request's cookie names, if any. Returns true when one was deleted.
function _M.destroy(req)
  local token = token_of(req)
  if not token then return false end
  local res = db.query("DELETE FROM sessions WHERE session_token_hash = decode($1, 'hex')",
    crypto.sha256_hex(token))
  return res.affected > 0
end

-- The signed-in user of req, or nil. A session of a deactivated user counts as none.
-- user: {id, email, name, image, status, username, created_at}; session: {id, expires_in}.
function _M.authenticate(req)
  local token = token_of(req)
  if not token then return nil end
  local row = db.one([[
    SELECT s.id AS session_id,
           extract(epoch FROM s.expires - now())::float8 AS remaining_s,
           ]] .. USER_COLUMNS_U .. [[
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE s.session_token_hash = decode($1, 'hex')
      AND s.expires > now()
      AND u.status = 'active']], crypto.sha256_hex(token))
  if not row then return nil end
  local ttl = _M.ttl_s()
  local remaining = tonumber(row.remaining_s) or 0
  if remaining < ttl / 2 then
    db.query("UPDATE sessions SET expires = now() + make_interval(secs => $2) WHERE id = $1",
      row.session_id, ttl)
    remaining = ttl
    req.set_cookies = req.set_cookies or {}
    req.set_cookies[#req.set_cookies + 1] = _M.cookie(token, ttl)
  end
  local user = {
    id = row.id, email = row.email, name = row.name, image = row.image, status = row.status,
    username = row.username, created_at = row.created_at,
  }
  return user, { id = row.session_id, expires_in = remaining }
end

-- Raises 403 csrf_rejected when a state-changing request does not come from a page of
-- the public URL: its Origin must match, or, without Origin, its Referer.
function _M.check_csrf(req)
  if not STATE_CHANGING[req.method] then return end
  local want = origin_of(config.public_url)
  local origin = req.headers.origin
  local got
  if origin ~= nil then
    got = origin_of(origin)
  elseif req.headers.referer ~= nil then
    got = origin_of(req.headers.referer)
  end
  if want == nil or got ~= want then
    errors.raise(403, "csrf_rejected",
      "cross-site request refused: the Origin or Referer header must name " .. tostring(want))
  end
end

-- Adds the Set-Cookie values queued on req (a session renewal) to resp.
function _M.decorate(req, resp)
  local pending = req.set_cookies
  if not pending or #pending == 0 then return resp end
  resp.headers = resp.headers or {}
  local existing = resp.headers["Set-Cookie"]
  local list = {}
  if type(existing) == "string" then list[1] = existing
  elseif type(existing) == "table" then for i = 1, #existing do list[i] = existing[i] end end
  -- A handler that set the session cookie itself (sign-in, sign-out) has the last word.
  local prefix = _M.COOKIE .. "="
  for i = 1, #list do
    if list[i]:sub(1, #prefix) == prefix then return resp end
  end
  for i = 1, #pending do list[#list + 1] = pending[i] end
  resp.headers["Set-Cookie"] = #list == 1 and list[1] or list
  return resp
end

-- Deletes expired sessions. Returns how many.
function _M.cleanup()
  local res = db.query("DELETE FROM sessions WHERE expires <= now()")
  return res.affected
end

return _M
