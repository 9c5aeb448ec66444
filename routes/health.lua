-- Health: what a load balancer and an operator look at.
local db = require("db")

local ENRICHMENT = { disabled = "disabled", closed = "ok" }

local function healthz()
  local ok = db.ping()
  local routes = host.routes_status()
  local body = {
    -- degraded: the database is down, or the last edit of a script was refused (the old
    -- code still serves). Only a dead database makes this instance unfit for traffic.
    status = (ok and not routes.lastError) and "ok" or "degraded",
    db = ok and "ok" or "unavailable",
    routes = { generation = routes.generation, lastError = routes.lastError or require("json").null },
    -- The metadata fetcher: "degraded" while its circuit is open (the provider keeps
    -- failing); syncs and reads are unaffected, so the status above does not change.
    enrichment = ENRICHMENT[host.enrichment.state()] or "degraded",
  }
  return ok and 200 or 503, body
end

return {
  { method = "GET", path = "/healthz", auth = "none", handler = healthz },
}
