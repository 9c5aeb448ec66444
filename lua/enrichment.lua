-- enrichment: the title metadata queue and the provider -> catalog merge (issue 12).
--
-- The background fetcher (core/enrich.c) runs on its own thread with its own VM and calls,
-- through lua/app.lua:
--   claim(n, owner)                 -> {{asin, url}, ...}: up to n due titles, leased to owner
--   done(results)                   -> {outcome, ...}: results[i] = {asin, status, body,
--                                      error, retry_after, ms} of finished fetches
--   release(asins, delay_ms, owner) -> hands leased titles back, due after delay_ms
-- Request handlers call:
--   due(n)                          for a sync's catalog read: SQL of "metadata due" ($n), $n
--   enqueue(user_id, asins)         after a sync's answer (its own statement, never raises)
--   ensure(asin, user_id)           the catalog row of asin, asking the provider now when
--                                   the catalog lacks it: title id | nil (unknown to both);
--                                   raises 503 provider_unavailable
--   pending(user_id)                titles of the user still waiting for details
--   user_region(user_id)            the user's marketplace, else the configured default
--
-- Queue rules: a fetched title leaves the queue in the transaction that writes it. A 404
-- parks it (status not_found) until metadata_refresh_days have passed; a 429 makes it due
-- again after Retry-After without counting an attempt; any other failure (5xx, timeout,
-- dropped connection, malformed or oversize answer) counts an attempt and retries after
-- metadata_backoff_ms * 2^(attempts-1) with +-50 % jitter, and after metadata_max_attempts
-- parks it (status failed) until its refresh date.
--
-- Merge rules: a field the provider gives replaces the catalog's (fills a blank one,
-- updates a stale one); a field it lacks (absent, null, empty list, or refused by its rule
-- in sync_rules.CATALOG_FIELDS) keeps the catalog's. The region the metadata came from is
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

local null = db.null

local REGIONS = { "us", "uk", "de", "fr", "ca", "au", "it", "es", "jp", "in" }
_M.REGIONS = REGIONS

local function base_url()
  local u = config.metadata_provider_url
  return type(u) == "string" and u ~= "" and u or nil
end

-- ---- the catalog's fields (sync_rules.CATALOG_FIELDS) ----

local CATALOG_FIELDS = rules.CATALOG_FIELDS

-- What a provider's item may set: every catalog field with a rule, checked by it (`provider`,
-- else the sync's `rule`), none required, an invalid value dropped (so it keeps the
-- catalog's). A field with neither is never written by the enrichment.
local function provider_rule(f) return f.provider or f.rule end

local FIELDS = {}
for _, f in ipairs(CATALOG_FIELDS) do
  if provider_rule(f) then
    local r = {}
    for k, v in pairs(provider_rule(f)) do r[k] = v end
    r.required, r.invalid = nil, "drop"
    FIELDS[f.json] = r
  end
end
local CHECK = validate.checker({ type = "object", fields = FIELDS })

-- The SQL type a field's value has in the merge's jsonb_to_recordset.
local function sql_type(f)
  if f.array then return "jsonb" end
  local r = provider_rule(f)
  if r.type == "number" then return "float8" end
  if r.type == "integer" then return "bigint" end
  if r.format == "date" then return "date" end
  return "text"
end

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

-- One UPDATE for many titles: $1 is a JSON array of rows {asin, region, <column> = value};
-- a column absent from a row (or an empty array) keeps the catalog's value. The region is
-- the row's, else the one its queue row asked for.
local MERGE_SQL
do
  local defs, sets = { "asin text", "region text" }, {}
  for _, f in ipairs(CATALOG_FIELDS) do
    local col = f.column
    if FIELDS[f.json] then
      defs[#defs + 1] = col .. " " .. sql_type(f)
      if f.array then
        sets[#sets + 1] = format("%s = CASE WHEN jsonb_array_length(j.%s) > 0 " ..
          "THEN ARRAY(SELECT jsonb_array_elements_text(j.%s)) ELSE c.%s END", col, col, col, col)
      else
        sets[#sets + 1] = format("%s = COALESCE(j.%s, c.%s)", col, col, col)
      end
    end
  end
  MERGE_SQL = "UPDATE title_catalog AS c SET " .. concat(sets, ", ") ..
    ", metadata_region = COALESCE(j.region, q.region, c.metadata_region)" ..
    ", metadata_checked_at = now(), metadata_status = 'ok'" ..
    " FROM jsonb_to_recordset($1::jsonb) AS j(" .. concat(defs, ", ") .. ")" ..
    " LEFT JOIN enrich_queue AS q ON q.asin = j.asin" ..
    " WHERE c.asin = j.asin"
end

local function valid_region(r)
  for _, x in ipairs(REGIONS) do
    if r == x then return r end
  end
  return nil
end

-- The merge row of a validated item (columns named as in title_catalog).
local function merge_row(asin, item, region)
  local row = { asin = asin, region = valid_region(item.region) or region }
  for _, f in ipairs(CATALOG_FIELDS) do row[f.column] = item[f.json] end
  return row
end

-- Writes the rows (sorted by ASIN) into the catalog. The rows are locked first in ASIN
-- order, the order a sync locks catalog rows in, so the two never deadlock.
local function merge(rows)
  if not rows[1] then return end
  local asins = {}
  for i, r in ipairs(rows) do asins[i] = r.asin end
  db.query([[SELECT 1 FROM title_catalog WHERE asin = ANY($1::text[])
             ORDER BY asin FOR NO KEY UPDATE]], asins)
  db.query(MERGE_SQL, json.encode(json.array(rows)))
end

-- ---- the queue (background fetcher) ----

-- The fetcher's own transactions commit without waiting for the WAL flush: a write lost
-- in a crash costs one more fetch (its lease runs out and the title is claimed again), and
-- the fetcher is one thread, so every flush it waits for is a pause of all its transfers.
local function async_commit()
  db.query("SET LOCAL synchronous_commit = off")
end

local function claim_tx(n, owner)
  async_commit()
  return db.query([[
    WITH c AS (
      SELECT asin FROM enrich_queue
      WHERE next_attempt_at <= now() AND (leased_until IS NULL OR leased_until < now())
      ORDER BY next_attempt_at, asin
      LIMIT $1
      FOR UPDATE SKIP LOCKED)
    UPDATE enrich_queue AS q
    SET leased_until = now() + make_interval(secs => $2), leased_by = $3
    FROM c WHERE q.asin = c.asin
    RETURNING q.asin, q.region]], n, config.metadata_lease_s, owner)
end

function _M.claim(n, owner)
  local base = base_url()
  if not base then return json.array({}) end
  local rows = db.tx(claim_tx, n, owner)
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

-- Parks titles until their refresh date: out of the queue, checked now, with status.
local function park(asins, status)
  if not asins[1] then return end
  db.query("DELETE FROM enrich_queue WHERE asin = ANY($1::text[])", asins)
  db.query([[UPDATE title_catalog SET metadata_checked_at = now(), metadata_status = $2
             WHERE asin = ANY($1::text[])]], asins, status)
end

-- A failed fetch: retried with backoff, or parked after metadata_max_attempts.
local function failed(asin, why)
  local q = db.one("SELECT attempts FROM enrich_queue WHERE asin = $1", asin)
  if not q then return end
  local attempts = q.attempts + 1
  if attempts >= config.metadata_max_attempts then
    host.log("warn", format("enrichment: %s parked after %d failed fetches (%s)", asin, attempts, why))
    return park({ asin }, "failed")
  end
  local delay = config.metadata_backoff_ms * 2 ^ (attempts - 1) * (0.5 + random())
  db.query([[
    UPDATE enrich_queue
    SET attempts = $2, last_error = $3, leased_until = NULL, leased_by = NULL,
        next_attempt_at = now() + make_interval(secs => $4)
    WHERE asin = $1]], asin, attempts, why, floor(delay) / 1000)
end

-- What a finished fetch means: {outcome, item | why}. No database work.
local function classify(r)
  if r.error then return r.error, r.error end
  local status = r.status
  if status == 200 then
    local item, why = parse(r.body)
    if item then return "ok", item end
    return "invalid", why
  end
  if status == 404 then return "not_found" end
  if status == 429 then return "rate_limited" end
  return status >= 500 and "error" or "refused",
    format("HTTP %d %s", status, provider.describe(r.body))
end

-- Writes a round: merged titles, parked unknown ones, rescheduled and failed ones.
local function write(results, outcomes, details)
  async_commit()
  local rows, gone, missing = {}, {}, {}
  for i, r in ipairs(results) do
    local o = outcomes[i]
    if o == "ok" then
      rows[#rows + 1] = merge_row(r.asin, details[i], nil)
      gone[#gone + 1] = r.asin
    elseif o == "not_found" then
      missing[#missing + 1] = r.asin
    elseif o == "rate_limited" then
      db.query([[
        UPDATE enrich_queue
        SET leased_until = NULL, leased_by = NULL, last_error = 'rate limited',
            next_attempt_at = now() + make_interval(secs => $2)
        WHERE asin = $1]], r.asin, r.retry_after or 1)
    else
      failed(r.asin, details[i])
    end
  end
  merge(rows)
  if gone[1] then db.query("DELETE FROM enrich_queue WHERE asin = ANY($1::text[])", gone) end
  park(missing, "not_found")
end

-- One transaction for the round, ASINs in order. Should it fail, each result gets its
-- own, and one that fails again counts as a failed attempt: nothing of it is written.
function _M.done(results)
  sort(results, function(a, b) return a.asin < b.asin end)
  local outcomes, details = {}, {}
  for i, r in ipairs(results) do outcomes[i], details[i] = classify(r) end
  local ok, err = pcall(db.tx, write, results, outcomes, details)
  if ok then return outcomes end
  host.log("warn", "enrichment: a round of " .. #results .. " failed (" .. tostring(err) ..
    "); writing each on its own")
  for i, r in ipairs(results) do
    local one_ok, one_err = pcall(db.tx, write, { r }, { outcomes[i] }, { details[i] })
    if not one_ok then
      host.log("error", "enrichment: " .. r.asin .. ": " .. tostring(one_err))
      outcomes[i] = "invalid"
      db.tx(failed, r.asin, "not written: " .. tostring(one_err))
    end
  end
  return outcomes
end

-- ---- request side ----

-- The region of users who chose none: metadata_marketplace when it is one, else "us".
local function default_region()
  return valid_region(config.metadata_marketplace) or "us"
end

-- Whether the title c's metadata is due: it never had provider metadata, or it is older
-- than metadata_refresh_days ($n).
local function due_sql(n)
  return format("c.metadata_checked_at IS NULL OR c.metadata_checked_at < now() - " ..
    "make_interval(days => $%d)", n)
end

-- For a sync's catalog read (a title_catalog AS c row already in hand): the SQL of "this
-- title's metadata is due" with its parameter's number n, and that parameter; nil when no
-- provider is configured. A sync passes to enqueue only the titles it says yes for (and
-- those it inserted), so a re-sync of enriched titles makes no queue statement at all. A
-- title never enriched stays due (metadata_checked_at IS NULL), so an enqueue that never
-- happened (it runs after the sync's answer and fails or dies alone) is made good by the
-- next sync that brings the title.
-- (Probing the queue here too was measured: per title it cost the full-metadata re-sync's
-- catalog read ~60 ms, more than the enqueue it saves; as NOT EXISTS it is planned as a
-- scan of the whole queue per chunk.)
function _M.due(n)
  if not base_url() then return nil end
  return due_sql(n), config.metadata_refresh_days
end

-- After a sync committed and answered (sync_import, through after_response): queue the
-- titles it found due (the sync's catalog read said so, see due above) or inserted. One
-- statement (its own transaction); logs and returns on failure, as the sync has already
-- succeeded. By ASIN, the queue's key, so the statement touches the queue alone (by title
-- id it probed the catalog too: 10,000 queued titles took ~23 ms against ~6 ms,
-- PostgreSQL alone). The anti-join leaves out a title queued already in one pass (ON
-- CONFLICT alone took ~21 ms of execution for 10,000 queued titles); ON CONFLICT settles
-- one another sync queued meanwhile.
local ENQUEUE_SQL = [[
    INSERT INTO enrich_queue (asin, region)
    SELECT a.asin, COALESCE((SELECT u.marketplace FROM users AS u WHERE u.id = $2), $3)
    FROM unnest($1::text[]) AS a(asin)
    WHERE NOT EXISTS (SELECT 1 FROM enrich_queue AS q WHERE q.asin = a.asin)
    ORDER BY a.asin
    ON CONFLICT (asin) DO NOTHING]]

function _M.enqueue(user_id, asins)
  if not base_url() or not asins or not asins[1] then return 0 end
  local ok, res = pcall(db.query, ENQUEUE_SQL, asins, user_id, default_region())
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
    timeout_ms = config.metadata_lookup_timeout_ms,
    connect_timeout_ms = config.metadata_lookup_timeout_ms,
    max_bytes = config.metadata_max_bytes,
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
    merge({ merge_row(asin, item, region) })
    db.query("DELETE FROM enrich_queue WHERE asin = $1", asin)
  end)
end

-- The user's marketplace, else the configured default.
function _M.user_region(user_id)
  local row = db.one("SELECT marketplace FROM users WHERE id = $1", user_id)
  local m = row and row.marketplace
  return m ~= nil and m ~= null and m or default_region()
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
