-- The signed-in user: GET /api/me
--   {"user":{"id","email","name","image","createdAt"},"counts":{"library","wishlist"}}
-- Counts leave out entries a sync marked removed.
local db = require("db")
local session = require("session")

local tonumber, tointeger = tonumber, math.tointeger

local function me(ctx)
  local counts = db.one([[
    SELECT count(*) FILTER (WHERE source = 'LIBRARY')  AS library,
           count(*) FILTER (WHERE source = 'WISHLIST') AS wishlist
    FROM user_library
    WHERE user_id = $1 AND removed_at IS NULL]], ctx.user.id)
  return 200, {
    user = session.user_json(ctx.user),
    counts = { library = tointeger(tonumber(counts.library)) or 0, wishlist = tointeger(tonumber(counts.wishlist)) or 0 },
  }
end

return {
  { method = "GET", path = "/api/me", auth = "session", handler = me },
}
