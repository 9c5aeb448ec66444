-- Public handles and profiles (DESIGN.md, API):
--   PUT /api/users/me/username      signed in: {"username", "profileVisibility"?}
--                                   -> 200 {"username","profileVisibility"}
--   GET /api/users/:username/lists  anyone: {"user":{"username"},"lists":[SUMMARY],
--                                   "tierLists":[SUMMARY]}, PUBLIC ones only, most recently
--                                   changed first (summaries as in GET /api/lists)
--
-- A username is 3 to 30 ASCII letters, digits or underscores (the schema's rule), unique
-- in any case ("Ada" and "ada" are one handle: 409 username_taken), and none of RESERVED
-- (422 username_reserved), which are words of the site's own paths and roles. The owner
-- may change the case of their own handle; a handle given up is free for others at once.
--
-- Profiles: a username exists to be a public handle, so the first claim makes the profile
-- PUBLIC unless the body says "profileVisibility": "PRIVATE"; later calls keep the current
-- visibility unless they say otherwise (PUT the same username with "PRIVATE" hides the
-- profile). Users have no other way to publish one, so without this the profile read could
-- never answer. A profile answers 404 for an unknown handle, a PRIVATE profile and a
-- deactivated account alike, so none can be told from the others. It shows the handle
-- only: name, email and avatar come from the sign-in provider and stay private.
local db = require("db")
local json = require("json")
local errors = require("errors")
local validate = require("validate")
local lc = require("lists_common")

local ipairs, lower = ipairs, string.lower

local RESERVED = {}
for _, name in ipairs{
  "me", "admin", "administrator", "api", "auth", "root", "system", "support", "help",
  "settings", "account", "accounts", "login", "logout", "signin", "signup", "register",
  "shelfsync", "null", "undefined", "anonymous", "moderator", "staff", "official", "www",
  "about", "healthz", "metrics", "users", "user", "lists", "tierlists", "library", "sync",
  "dashboard", "titles", "public", "private", "unlisted", "security", "abuse", "postmaster",
} do RESERVED[name] = true end

local USERNAME = lc.HANDLE

local CLAIM = validate.compile{
  type = "object", unknown = "reject",
  fields = {
    username = USERNAME,
    profileVisibility = { type = "string", upper = true, enum = { "PRIVATE", "PUBLIC" } },
  },
}

local TAKEN_SQL = "SELECT 1 FROM users WHERE lower(username) = lower($1) AND id <> $2"

-- The first claim publishes the profile; later ones keep the visibility unless asked.
local CLAIM_SQL = [[
  UPDATE users SET
    username = $2,
    profile_visibility = COALESCE($3::visibility_level,
      CASE WHEN username IS NULL THEN 'PUBLIC'::visibility_level ELSE profile_visibility END)
  WHERE id = $1
  RETURNING username, profile_visibility::text AS profile_visibility]]

local function taken(username)
  errors.raise(409, "username_taken", "the username " .. username .. " is already taken",
    { { path = "username", message = "is already taken" } })
end

local function claim(ctx)
  local b = lc.check("invalid username", CLAIM, lc.object_body(ctx))
  if RESERVED[lower(b.username)] then
    errors.raise(422, "username_reserved", "the username " .. b.username .. " is reserved",
      { { path = "username", message = "is reserved" } })
  end
  local user = ctx.user
  if db.one(TAKEN_SQL, b.username, user.id) then taken(b.username) end
  -- The unique index has the last word when two users claim one name at the same time.
  local rows, err = db.try(CLAIM_SQL, user.id, b.username, b.profileVisibility)
  if not rows then
    if err.sqlstate == "23505" and err.constraint == "users_username_lower_key" then
      taken(b.username)
    end
    error(err, 0)
  end
  local row = rows[1]
  return 200, { username = row.username, profileVisibility = row.profile_visibility }
end

local function profile(ctx)
  local row = lc.public_profile(ctx.params.username)
  if not row then errors.not_found("user") end
  return lc.respond(ctx, lc.object_text{
    { "user", lc.object_text{ { "username", json.encode(row.username) } } },
    { "lists", lc.summaries(lc.KINDS.list, row.id, true) },
    { "tierLists", lc.summaries(lc.KINDS.tierlist, row.id, true) },
  })
end

return {
  { method = "PUT", path = "/api/users/me/username",    auth = "session", handler = claim },
  { method = "GET", path = "/api/users/:username/lists", auth = "none",    handler = profile },
}
