-- Sign-in: Google (OpenID Connect, see lua/oidc.lua), dev login, logout.
--
--   GET  /auth/google/login?returnTo=/path   302 to the provider
--   GET  /auth/google/callback               302 to returnTo with the session cookie
--   POST /auth/dev/login {"email","name"}    only when config.dev_login (404 otherwise)
--   GET  /auth/providers                     {"google":bool,"devLogin":bool}: the ways to
--                                            sign in this server offers (the web app's
--                                            sign-in page shows only those)
--   POST /auth/logout                        204; idempotent: the cookie is cleared even
--                                            when its session is already gone
--
-- Errors: 400 invalid_return_to, 400 invalid_state (flow cookie missing, forged, expired
-- or another state), 400 invalid_callback (no code), 401 sign_in_failed (the provider
-- refused or the code was refused), 401 id_token_invalid, 403 email_unverified,
-- 403 account_deactivated, 409 email_conflict (the email belongs to another Google
-- account), 502 provider_unavailable, 503 sign_in_not_configured, 403 csrf_rejected.
local db = require("db")
local errors = require("errors")
local json = require("json")
local oidc = require("oidc")
local session = require("session")

local config = host.config
local type, utf8len, utf8offset = type, utf8.len, utf8.offset
local find, sub = string.find, string.sub

local EMAIL_MAX = 254
local NAME_MAX = 200
local IMAGE_MAX = 2048

local function valid_email(s)
  return type(s) == "string" and #s <= EMAIL_MAX and utf8len(s) ~= nil and
    find(s, "^[^@%s]+@[^@%s]+$") ~= nil
end

-- A display name cut to NAME_MAX characters (the column's limit), or nil.
local function clean_name(s)
  if type(s) ~= "string" or utf8len(s) == nil then return nil end
  s = s:gsub("^%s+", ""):gsub("%s+$", "")
  if s == "" then return nil end
  if utf8len(s) > NAME_MAX then s = sub(s, 1, utf8offset(s, NAME_MAX + 1) - 1) end
  return s
end

local function clean_image(s)
  if type(s) ~= "string" or #s > IMAGE_MAX or not find(s, "^[Hh][Tt][Tt][Pp][Ss]?://%S+$") then
    return nil
  end
  return s
end

local function refuse_deactivated(row)
  if row.status ~= "active" then
    errors.raise(403, "account_deactivated", "this account is deactivated")
  end
end

local function email_taken(email, except_id)
  return db.one("SELECT 1 AS taken FROM users WHERE lower(email) = lower($1) AND id <> $2",
    email, except_id) ~= nil
end

local function conflict()
  errors.raise(409, "email_conflict",
    "this email address already belongs to another account; ask an operator to merge them")
end

-- Finds or creates the user of a verified Google identity and links the accounts row.
-- Returns the user id. Order: by googleId (sub), then by email for an account that has
-- no Google link yet (a dev-login account), else a new user.
local function upsert_google_user(profile)
  return db.tx(function()
    local row = db.one("SELECT id, status FROM users WHERE google_id = $1 FOR UPDATE", profile.sub)
    if row then
      refuse_deactivated(row)
      if email_taken(profile.email, row.id) then conflict() end
      db.query([[UPDATE users SET email = $2, name = COALESCE($3, name), image = COALESCE($4, image)
                 WHERE id = $1]], row.id, profile.email, profile.name, profile.image)
    else
      row = db.one([[SELECT id, status, google_id FROM users WHERE lower(email) = lower($1)
                     FOR UPDATE]], profile.email)
      if row then
        refuse_deactivated(row)
        if row.google_id ~= nil and row.google_id ~= json.null then conflict() end
        db.query([[UPDATE users SET google_id = $2, email = $3, name = COALESCE($4, name),
                   image = COALESCE($5, image) WHERE id = $1]],
          row.id, profile.sub, profile.email, profile.name, profile.image)
      else
        row = db.one([[INSERT INTO users (google_id, email, name, image) VALUES ($1, $2, $3, $4)
                       ON CONFLICT DO NOTHING RETURNING id, status]],
          profile.sub, profile.email, profile.name, profile.image)
        if not row then
          -- A concurrent sign-in of the same person won the insert, or the email was
          -- taken meanwhile.
          row = db.one("SELECT id, status FROM users WHERE google_id = $1", profile.sub)
          if not row then conflict() end
          refuse_deactivated(row)
        end
      end
    end
    db.query([[INSERT INTO accounts (user_id, type, provider, provider_account_id)
               VALUES ($1, 'oauth', 'google', $2)
               ON CONFLICT (provider, provider_account_id) DO NOTHING]], row.id, profile.sub)
    return row.id
  end)
end

-- ---- handlers ----

local function google_login(ctx)
  local return_to = ctx.query.returnTo
  if return_to == nil or return_to == "" then return_to = "/" end
  if not oidc.safe_return_to(return_to) then
    errors.raise(400, "invalid_return_to", "returnTo must be a path on this site, such as /library")
  end
  if not oidc.configured() then
    errors.raise(503, "sign_in_not_configured", "Google sign-in is not configured on this server")
  end
  local location, cookie = oidc.start(return_to)
  return { status = 302, headers = { Location = location, ["Set-Cookie"] = cookie,
    ["Cache-Control"] = "no-store" }, body = "" }
end

local function google_callback(ctx)
  local q = ctx.query
  local flow = oidc.read_flow(ctx.req)
  if not flow or type(q.state) ~= "string" or not host.crypto.equal(q.state, flow.state) then
    errors.raise(400, "invalid_state",
      "the sign-in state is missing, expired or does not match: start again from /auth/google/login")
  end
  if q.error ~= nil then
    errors.raise(401, "sign_in_failed", "the provider did not sign you in (" .. tostring(q.error) .. ")")
  end
  if type(q.code) ~= "string" or q.code == "" then
    errors.raise(400, "invalid_callback", "the provider sent no authorization code")
  end
  if not oidc.configured() then
    errors.raise(503, "sign_in_not_configured", "Google sign-in is not configured on this server")
  end

  local claims = oidc.finish(q.code, flow)
  if claims.email_verified ~= true and claims.email_verified ~= "true" then
    errors.raise(403, "email_unverified", "the Google account's email address is not verified")
  end
  if not valid_email(claims.email) then
    errors.raise(401, "id_token_invalid", "the provider's ID token carries no usable email address")
  end
  local user_id = upsert_google_user{
    sub = claims.sub,
    email = claims.email,
    name = clean_name(claims.name),
    image = clean_image(claims.picture),
  }
  local cookie = session.create(user_id)
  return { status = 302, headers = { Location = flow.return_to,
    ["Set-Cookie"] = { cookie, oidc.clear_flow_cookie() }, ["Cache-Control"] = "no-store" }, body = "" }
end

local function dev_login(ctx)
  session.check_csrf(ctx.req)
  local body = ctx:json_body()
  local details = {}
  if type(body) ~= "table" then
    errors.raise(422, "validation_failed", "expected an object {\"email\", \"name\"}")
  end
  if not valid_email(body.email) then
    details[#details + 1] = { path = "email", message = "must be an email address of at most 254 characters" }
  end
  if body.name ~= nil and body.name ~= json.null and
     (type(body.name) ~= "string" or utf8len(body.name) == nil or utf8len(body.name) > NAME_MAX) then
    details[#details + 1] = { path = "name", message = "must be a string of at most 200 characters" }
  end
  if #details > 0 then errors.raise(422, "validation_failed", "invalid sign-in request", details) end

  local user = db.one([[
    INSERT INTO users (email, name) VALUES ($1, $2)
    ON CONFLICT ((lower(email))) DO UPDATE SET name = COALESCE(EXCLUDED.name, users.name)
    RETURNING ]] .. session.user_columns("users"), body.email, clean_name(body.name))
  refuse_deactivated(user)
  local cookie = session.create(user.id)
  return 200, { user = session.user_json(user) }, { ["Set-Cookie"] = cookie }
end

local function logout(ctx)
  session.check_csrf(ctx.req)
  session.destroy(ctx.req)
  return 204, nil, { ["Set-Cookie"] = session.clear_cookie() }
end

local dev = config.dev_login
dev = dev == true or dev == 1 or dev == "1" or dev == "true"

local function providers()
  return 200, { google = oidc.configured(), devLogin = dev }
end

local endpoints = {
  { method = "GET",  path = "/auth/providers",       auth = "none", handler = providers },
  { method = "GET",  path = "/auth/google/login",    auth = "none", handler = google_login },
  { method = "GET",  path = oidc.CALLBACK_PATH,      auth = "none", handler = google_callback },
  { method = "POST", path = "/auth/logout",          auth = "none", handler = logout },
}
if dev then
  endpoints[#endpoints + 1] = { method = "POST", path = "/auth/dev/login", auth = "none", handler = dev_login }
end

-- Run by the server's housekeeping timer and `shelfsync cleanup` (app.cleanup).
endpoints.cleanup = session.cleanup

return endpoints
