-- The signed-in user:
--   GET /api/me
--     {"user":{"id","email","name","image","createdAt"},"counts":{"library","wishlist","manual"},
--      "profile":{"username","visibility"},"marketplace":"us","enrichment":{"pending":n}}
--   PUT /api/users/me/marketplace {"marketplace":"uk"} -> 200 {"marketplace":"uk"}
-- Counts, by source, leave out entries a sync marked removed and entries the user hid
-- (lq.COUNTED, as the dashboard and the stats). profile is the public handle (null until
-- claimed with PUT /api/users/me/username) and the profile's visibility, PRIVATE | PUBLIC.
-- marketplace is the Audible store whose metadata the user's titles get (the configured
-- metadata_marketplace until they choose); enrichment.pending counts the user's titles
-- still waiting for the metadata provider.
local db = require("db")
local lq = require("library_query")
local errors = require("errors")
local session = require("session")
local json = require("json")
local validate = require("validate")
local enrichment = require("enrichment")

local tonumber, tointeger = tonumber, math.tointeger

local function count(v) return tointeger(tonumber(v)) or 0 end

local function me(ctx)
  local row = db.one([[
    SELECT count(*) FILTER (WHERE source = 'LIBRARY')  AS library,
           count(*) FILTER (WHERE source = 'WISHLIST') AS wishlist,
           count(*) FILTER (WHERE source = 'MANUAL')   AS manual,
           (SELECT profile_visibility::text FROM users WHERE id = $1) AS visibility
    FROM user_library AS ul
    WHERE ul.user_id = $1 AND ]] .. lq.COUNTED, ctx.user.id)
  return 200, {
    user = session.user_json(ctx.user),
    counts = { library = count(row.library), wishlist = count(row.wishlist), manual = count(row.manual) },
    profile = { username = ctx.user.username or json.null, visibility = row.visibility },
    marketplace = enrichment.user_region(ctx.user.id),
    enrichment = { pending = enrichment.pending(ctx.user.id) },
  }
end

local MARKETPLACE = validate.compile{
  type = "object", unknown = "reject",
  fields = {
    marketplace = { type = "string", required = true, lower = true, enum = enrichment.REGIONS,
                    message = "must be one of " .. table.concat(enrichment.REGIONS, ", ") },
  },
}

local function set_marketplace(ctx)
  local body, errs = validate.check(MARKETPLACE, ctx:json_body())
  if not body then
    errors.raise(422, "validation_failed", "invalid marketplace: " .. validate.summary(errs), errs)
  end
  db.query("UPDATE users SET marketplace = $2 WHERE id = $1", ctx.user.id, body.marketplace)
  return 200, { marketplace = body.marketplace }
end

return {
  { method = "GET", path = "/api/me",                     auth = "session", handler = me },
  { method = "PUT", path = "/api/users/me/marketplace",   auth = "session", handler = set_marketplace },
}
