-- Operators: Prometheus metrics. With config.metrics_token set, a scraper sends
-- "Authorization: Bearer <token>". Without one, only loopback clients are answered, and
-- only while the public URL is a loopback one too: behind a reverse proxy on the same
-- host every client looks like 127.0.0.1, so a public instance needs the token.
local db = require("db")
local errors = require("errors")

local config = host.config
local LOOPBACK = { ["127.0.0.1"] = true, ["::1"] = true }

local LOCAL_URL = { ["127.0.0.1"] = true, localhost = true, ["[::1]"] = true }
local public_host = config.public_url:match("^https?://([^/:]+)") or
                    config.public_url:match("^https?://(%[[^%]]+%])")

local function authorized(req)
  local token = config.metrics_token
  if token == nil or token == "" then
    return LOOPBACK[req.remote_addr] == true and LOCAL_URL[public_host] == true
  end
  local given = (req.headers.authorization or ""):match("^Bearer%s+(.+)$")
  return given ~= nil and host.crypto.equal(given, token)
end

local function metrics(ctx)
  if not authorized(ctx.req) then errors.raise(403, "forbidden", "metrics are for operators") end
  local routes = host.routes_status()
  -- The queue is shared by every instance: its depth is the database's, not this process's.
  -- (Left out while the database is down: metrics still answer then.)
  local ok, q = pcall(db.one, [[SELECT count(*) AS depth, count(*) FILTER (WHERE next_attempt_at <= now()) AS due
                                FROM enrich_queue]])
  local queue = ok and table.concat({
    "# HELP shelfsync_enrichment_queue_depth Titles waiting for the metadata provider (all instances).",
    "# TYPE shelfsync_enrichment_queue_depth gauge",
    "shelfsync_enrichment_queue_depth " .. q.depth,
    "# TYPE shelfsync_enrichment_queue_due gauge",
    "shelfsync_enrichment_queue_due " .. q.due, "" }, "\n") or ""
  local extra = queue .. table.concat({
    "# TYPE shelfsync_db_up gauge",
    "shelfsync_db_up " .. (db.ping() and 1 or 0),
    "# TYPE shelfsync_routes_generation gauge",
    "shelfsync_routes_generation " .. routes.generation,
    "# TYPE shelfsync_routes_reload_failed gauge",
    "shelfsync_routes_reload_failed " .. (routes.lastError and 1 or 0),
    "",
  }, "\n")
  return { status = 200, body = host.metrics() .. extra, headers = {
    ["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8", ["Cache-Control"] = "no-store" } }
end

return {
  { method = "GET", path = "/metrics", auth = "none", handler = metrics },
}
