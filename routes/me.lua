-- The signed-in user: GET /api/me
--   {"user":{"id","email","name","image","createdAt"},"counts":{"library","wishlist"},
--    "profile":{"username","visibility"}}
-- Counts leave out entries a sync marked removed. profile is the public handle (null until
-- claimed with PUT /api/users/me/username) and the profile's visibility, PRIVATE | PUBLIC.
local db = require("db")
local session = require("session")
local json = require("json")

local tonumber, tointeger = tonumber, math.tointeger

local function me(ctx)
  local row = db.one([[
    SELECT count(*) FILTER (WHERE source = 'LIBRARY')  AS library,
           count(*) FILTER (WHERE source = 'WISHLIST') AS wishlist,
           (SELECT profile_visibility::text FROM users WHERE id = $1) AS visibility
    FROM user_library
    WHERE user_id = $1 AND removed_at IS NULL]], ctx.user.id)
  return 200, {
    user = session.user_json(ctx.user),
    counts = { library = tointeger(tonumber(row.library)) or 0, wishlist = tointeger(tonumber(row.wishlist)) or 0 },
    profile = { username = ctx.user.username or json.null, visibility = row.visibility },
  }
end

return {
  { method = "GET", path = "/api/me", auth = "session", handler = me },
}
