-- enrichment: the title metadata queue and the provider -> catalog merge (issue 12).
--
-- The background fetcher (core/enrich.c) runs on its own thread with its own VM and calls,
-- through lua/app.lua:
--   claim(n, owner)                 -> {{asin, url}, ...}: up to n due titles, leased to owner
--   done(results)                   -> {outcome, ...}: results[i] = {asin, status, body,
--                                      error, retry_after, ms} of finished fetches
--   release(asins, delay_ms, owner) -> hands leased titles back, due after delay_ms
-- Request handlers call:
--   enqueue(user_id, title_ids)     after a sync committed (its own statement, never raises)
--   ensure(asin, user_id)           the catalog row of asin, asking the provider now when
--                                   the catalog lacks it: title id | nil (unknown to both);
--                                   raises 503 provider_unavailable
--   pending(user_id)                titles of the user still waiting for details
--   region(user), user_region(id)   the user's marketplace, else the configured default
--
-- Queue rules: a fetched title leaves the queue in the transaction that writes it. A 404
-- parks it (status not_found) until metadata_refresh_days have passed; a 429 makes it due
-- again after Retry-After without counting an attempt; any other failure (5xx, timeout,
-- dropped connection, malformed or oversize answer) counts an attempt and retries after
-- metadata_backoff_ms * 2^(attempts-1) with +-50 % jitter, and after metadata_max_attempts
-- parks it (status failed) until its refresh date.
--
-- Merge rules: a field the provider gives replaces the catalog's (fills a blank one,
-- updates a stale one); a field it lacks (absent, null, empty list, or refused by the
-- sync's validation rules) keeps the catalog's. The region the metadata came from is
-- stored in metadata_region.
local _M = {}

local db = require("db")
local json = require("json")
local errors = require("errors")
local validate = require("validate")
local rules = require("sync_rules")
local provider = require("providers.audnexus")

local config = host.config
local type, ipairs, pairs, tostring, tonumber, pcall, sort =
  type, ipairs, pairs, tostring, tonumber, pcall, table.sort
local concat = table.concat
local floor, random = math.floor, math.random
local format = string.format

local REGIONS = { "us", "uk", "de", "fr", "ca", "au", "it", "es", "jp", "in" }
_M.REGIONS = REGIONS

local function setting(name, default)
  local v = tonumber(config[name])
  if not v or v < 0 then return default end
  return v
end

local function base_url()
  local u = config.metadata_provider_url
  return type(u) == "string" and u ~= "" and u or nil
end

function _M.enabled()
  return base_url() ~= nil
end

-- ---- validation: the sync's own rules, every field optional ----

local FIELDS = {}
for name, rule in pairs(rules.ITEM.fields) do
  if name ~= "asin" and name ~= "source" and name ~= "listeningProgress" and
     name ~= "personalRating" and name ~= "dateAdded" then
    local r = {}
    for k, v in pairs(rule) do r[k] = v end
    r.required, r.invalid = nil, "drop"
    FIELDS[name] = r
  end
end
local CHECK = validate.checker({ type = "object", fields = FIELDS })

-- The mapped, validated item of a provider answer, or nil and why.
local function parse(body)
  local doc, err = json.decode(body or "")
  if doc == nil then return nil, "malformed JSON: " .. tostring(err) end
  local item, why = provider.map(doc)
  if not item then return nil, why end
  local region = item.region
  local clean = CHECK(item)
  if not clean then return nil, "the answer holds no usable field" end
  clean.region = region
  return clean
end
_M.parse = parse

-- ---- the merge ----

local SCALARS = rules.CATALOG_SCALARS          -- {column, item field}
local ARRAYS = rules.CATALOG_ARRAYS            -- column = item field

-- UPDATE title_catalog: each column keeps its value when the parameter is NULL (or an
-- empty array). $1 asin, $2 region, then one parameter per field in SCALARS, ARRAYS order.
local MERGE_SQL
do
  local sets, n = {}, 2
  for _, s in ipairs(SCALARS) do
    n = n + 1
    sets[#sets + 1] = format("%s = COALESCE($%d, %s)", s[1], n, s[1])
  end
  for _, col in ipairs(ARRAYS) do
    n = n + 1
    sets[#sets + 1] = format("%s = CASE WHEN cardinality($%d::text[]) > 0 THEN $%d::text[] ELSE %s END",
      col, n, n, col)
  end
  MERGE_SQL = "UPDATE title_catalog SET " .. concat(sets, ", ") ..
    ", metadata_region = $2, metadata_checked_at = now(), metadata_status = 'ok'" ..
    " WHERE asin = $1 RETURNING id"
end

local null = db.null

local function merge_args(asin, region, item)
  local args, n = { asin, region }, 2
  for _, s in ipairs(SCALARS) do
    n = n + 1
    local v = item[s[2]]
    if v == nil then v = null end
    args[n] = v
  end
  for _, col in ipairs(ARRAYS) do
    n = n + 1
    args[n] = item[col] or json.array({})
  end
  return args, n
end

-- Writes item into the catalog row of asin (which must exist). Returns its id or nil.
local function merge(asin, region, item)
  local args, n = merge_args(asin, region, item)
  local row = db.one(MERGE_SQL, table.unpack(args, 1, n))
  return row and row.id
end

-- The regions the provider may answer for; another (or none) means the one asked.
local function answered_region(item, asked)
  for _, r in ipairs(REGIONS) do
    if item.region == r then return r end
  end
  return asked
end

-- ---- the queue (background fetcher) ----

function _M.claim(n, owner)
  local base = base_url()
  if not base then return json.array({}) end
  local rows = db.query([[
    WITH c AS (
      SELECT asin FROM enrich_queue
      WHERE next_attempt_at <= now() AND (leased_until IS NULL OR leased_until < now())
      ORDER BY next_attempt_at, asin
      LIMIT $1
      FOR UPDATE SKIP LOCKED)
    UPDATE enrich_queue AS q
    SET leased_until = now() + make_interval(secs => $2), leased_by = $3
    FROM c WHERE q.asin = c.asin
    RETURNING q.asin, q.region]], n, setting("metadata_lease_s", 300), owner)
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = { asin = r.asin, url = provider.url(base, r.asin, r.region) }
  end
  return out
end

function _M.release(asins, delay_ms, owner)
  db.query([[
    UPDATE enrich_queue
    SET leased_until = NULL, leased_by = NULL,
        next_attempt_at = greatest(next_attempt_at, now() + make_interval(secs => $2))
    WHERE asin = ANY($1::text[]) AND leased_by = $3]], asins, (delay_ms or 0) / 1000, owner)
end

-- Parks asin until its refresh date: out of the queue, checked now, with status.
local function park(asin, status)
  db.query("DELETE FROM enrich_queue WHERE asin = $1", asin)
  db.query([[UPDATE title_catalog SET metadata_checked_at = now(), metadata_status = $2
             WHERE asin = $1]], asin, status)
end

-- A failed fetch: retried with backoff, or parked after metadata_max_attempts.
local function failed(r, outcome, why)
  local q = db.one("SELECT attempts FROM enrich_queue WHERE asin = $1", r.asin)
  if not q then return outcome end
  local attempts = q.attempts + 1
  local max = setting("metadata_max_attempts", 5)
  if attempts >= max then
    host.log("warn", format("enrichment: %s parked after %d failed fetches (%s)", r.asin, attempts, why))
    park(r.asin, "failed")
    return outcome
  end
  local delay = setting("metadata_backoff_ms", 30000) * 2 ^ (attempts - 1) * (0.5 + random())
  db.query([[
    UPDATE enrich_queue
    SET attempts = $2, last_error = $3, leased_until = NULL, leased_by = NULL,
        next_attempt_at = now() + make_interval(secs => $4)
    WHERE asin = $1]], r.asin, attempts, why, floor(delay) / 1000)
  return outcome
end

local function fetched(r, region_of)
  if r.error then return failed(r, r.error, r.error) end
  local status = r.status
  if status == 404 then
    park(r.asin, "not_found")
    return "not_found"
  end
  if status == 429 then
    db.query([[
      UPDATE enrich_queue
      SET leased_until = NULL, leased_by = NULL, last_error = 'rate limited',
          next_attempt_at = now() + make_interval(secs => $2)
      WHERE asin = $1]], r.asin, r.retry_after or 1)
    return "rate_limited"
  end
  if status ~= 200 then
    return failed(r, status >= 500 and "error" or "refused",
      format("HTTP %d %s", status, provider.describe(r.body)))
  end
  local item, why = parse(r.body)
  if not item then return failed(r, "invalid", why) end
  merge(r.asin, answered_region(item, region_of[r.asin]), item)
  db.query("DELETE FROM enrich_queue WHERE asin = $1", r.asin)
  return "ok"
end

-- The regions the results were asked for (read before any change).
local function regions_of(results)
  local asins = {}
  for i, r in ipairs(results) do asins[i] = r.asin end
  local out = {}
  for _, row in ipairs(db.query("SELECT asin, region FROM enrich_queue WHERE asin = ANY($1::text[])", asins)) do
    out[row.asin] = row.region
  end
  return out
end

-- One transaction for the round, rows in ASIN order (the order a sync locks catalog rows
-- in, so the two never deadlock). Should it fail, each result gets its own transaction,
-- and one that fails again counts as an invalid answer: nothing of it is written.
function _M.done(results)
  sort(results, function(a, b) return a.asin < b.asin end)
  local outcomes = {}
  local ok, err = pcall(db.tx, function()
    local region_of = regions_of(results)
    for i, r in ipairs(results) do outcomes[i] = fetched(r, region_of) end
  end)
  if ok then return outcomes end
  host.log("warn", "enrichment: a batch of " .. #results .. " failed (" .. tostring(err) ..
    "); writing each on its own")
  for i, r in ipairs(results) do
    local one_ok, one = pcall(db.tx, function() return fetched(r, regions_of({ r })) end)
    if one_ok then
      outcomes[i] = one
    else
      host.log("error", "enrichment: " .. r.asin .. ": " .. tostring(one))
      outcomes[i] = db.tx(failed, { asin = r.asin }, "invalid", "not written: " .. tostring(one))
    end
  end
  return outcomes
end

-- ---- request side ----

function _M.region(user)
  local m = user and user.marketplace
  if type(m) == "string" and m ~= "" then return m end
  local d = config.metadata_marketplace
  return type(d) == "string" and d ~= "" and d or "us"
end

-- After a sync committed: queue the titles that never had provider metadata, or whose
-- metadata is older than metadata_refresh_days. One statement (its own transaction);
-- logs and returns on failure, as the sync has already succeeded.
function _M.enqueue(user_id, title_ids)
  if not base_url() or not title_ids or not title_ids[1] then return 0 end
  local ok, res = pcall(db.query, [[
    INSERT INTO enrich_queue (asin, region)
    SELECT c.asin, COALESCE((SELECT u.marketplace FROM users AS u WHERE u.id = $2), $3)
    FROM title_catalog AS c
    WHERE c.id = ANY($1::uuid[])
      AND (c.metadata_checked_at IS NULL
           OR c.metadata_checked_at < now() - make_interval(days => $4))
    ORDER BY c.asin
    ON CONFLICT (asin) DO NOTHING]], title_ids, user_id, _M.region(nil),
    floor(setting("metadata_refresh_days", 30)))
  if not ok then
    host.log("warn", "enrichment: titles of a sync for user " .. tostring(user_id) ..
      " not queued: " .. tostring(res))
    return 0
  end
  return res.affected
end

function _M.pending(user_id)
  local row = db.one([[
    SELECT count(*) AS n
    FROM user_library AS ul
    JOIN title_catalog AS c ON c.id = ul.title_id
    JOIN enrich_queue AS q ON q.asin = c.asin
    WHERE ul.user_id = $1 AND ul.removed_at IS NULL]], user_id)
  return math.tointeger(tonumber(row.n)) or 0
end

local function unavailable(message)
  errors.raise(503, "provider_unavailable", message)
end

-- Asks the provider for asin now (the caller waits, metadata_lookup_timeout_ms at most).
-- Returns the item, or nil when the provider does not know the title; raises 503.
local function ask(asin, region)
  local base = base_url()
  if not base then unavailable("no metadata provider is configured, and the catalog does not know this title") end
  if host.enrichment.state() == "open" then
    unavailable("the metadata provider is failing; try again in a minute")
  end
  local res, err = host.http.request{
    url = provider.url(base, asin, region), headers = { Accept = "application/json" },
    timeout_ms = floor(setting("metadata_lookup_timeout_ms", 4000)),
    connect_timeout_ms = floor(setting("metadata_lookup_timeout_ms", 4000)),
    max_bytes = floor(setting("metadata_max_bytes", 1048576)),
  }
  if not res then
    host.log("warn", "lookup of " .. asin .. " failed: " .. tostring(err))
    unavailable("the metadata provider did not answer; try again in a minute")
  end
  if res.status == 404 then return nil end
  if res.status ~= 200 then
    host.log("warn", format("lookup of %s: HTTP %d %s", asin, res.status, provider.describe(res.body)))
    unavailable("the metadata provider could not answer; try again in a minute")
  end
  local item, why = parse(res.body)
  if not item or not item.title then
    host.log("warn", "lookup of " .. asin .. ": unusable answer: " .. tostring(why or "no title"))
    unavailable("the metadata provider gave an unusable answer; try again later")
  end
  return item
end

-- Stores a looked-up item: a new catalog row with the title, then the merge (one
-- transaction, so a failure leaves nothing). The row may have appeared meanwhile.
local function store(asin, region, item)
  db.tx(function()
    db.query([[INSERT INTO title_catalog (asin, title) VALUES ($1, $2)
               ON CONFLICT (asin) DO NOTHING]], asin, item.title)
    merge(asin, answered_region(item, region), item)
    db.query("DELETE FROM enrich_queue WHERE asin = $1", asin)
  end)
end

-- The user's marketplace, else the configured default.
function _M.user_region(user_id)
  local row = db.one("SELECT marketplace FROM users WHERE id = $1", user_id)
  local m = row and row.marketplace
  return _M.region({ marketplace = m ~= null and m or nil })
end

-- Makes sure the catalog has asin, asking the provider in the user's region when it does
-- not. Returns the title id, or nil when neither knows the title; raises 503.
function _M.ensure(asin, user_id)
  local row = db.one("SELECT id FROM title_catalog WHERE asin = $1", asin)
  if row then return row.id end
  local region = _M.user_region(user_id)
  local item = ask(asin, region)
  if not item then return nil end
  store(asin, region, item)
  row = db.one("SELECT id FROM title_catalog WHERE asin = $1", asin)
  return row and row.id
end

return _M
