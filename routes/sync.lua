-- Library sync (DESIGN.md, "Sync contract"):
--   POST /api/sync/token      signed in: a single-use upload token for the extension
--   POST /api/sync/import     Authorization: Bearer <token>: {"titles": [ITEM, ...]}
--   GET  /api/sync/history    signed in: the last syncs, newest first (?limit=1..100, 5)
-- and the route file's cleanup: sync tokens expired for more than 24 hours are deleted, and
-- search texts a sync left pending are indexed (lua/title_search.lua).
--
-- The token is a JWT (HS256 with the server secret; sub = user id, jti = uuid, aud =
-- AUDIENCE, iat, exp = iat + sync_token_ttl_s) with a row in sync_tokens. AUDIENCE is also
-- the import route's `audience` (its metadata, below): the C server refuses a token for
-- another audience before reading the body (doc/ARCHITECTURE.md, "Before the body"), and
-- it is the realm of every 401's WWW-Authenticate, C's and this file's. Editing it here
-- changes all of them (tokens issued before then stop working).
-- The import checks it in C (host.jwt.verify_hs256: alg, MAC, exp, iat, aud), then its row:
-- unknown jti or another user's -> 401 token_invalid, used -> 401 token_already_used,
-- the row's expires_at passed -> 401 token_expired (the JWT's exp and the row's expires_at
-- are the same instant, and either one having passed expires the token). The row is
-- checked again under a lock inside the import transaction, which also marks it used, so
-- a token yields at most one import and a refused payload does not consume it.
--
-- The import's 401 bodies carry `code`, the stable machine-readable code (token_invalid,
-- token_expired, token_already_used), besides `error`. `error` is the same code, except
-- for a used token: "token already used", because the audioshlf extension decides what to
-- show by looking for the words "expired" and "already used" in `error` (token_expired
-- already reads "expired"). Every other route's `error` is the code, as everywhere.
-- The import is cors = "public" (any origin, no credentials: the token alone authorises)
-- and declares body_limit = max_import_bytes (doc/ARCHITECTURE.md, "Route metadata").
-- Since a refused payload can be replayed, a user with sync_max_failures failed imports
-- in the last sync_failure_window_s gets 429 (Retry-After) before the body is decoded.
local db = require("db")
local json = require("json")
local errors = require("errors")
local validate = require("validate")
local sync_import = require("sync_import")
local sync_rules = require("sync_rules")
local types = require("types")

local config = host.config
local jwt, crypto, bulk = host.jwt, host.crypto, host.bulk
local type, tostring, xpcall, error = type, tostring, xpcall, error
local match, gsub, format = string.match, string.gsub, string.format
local os_time, os_date = os.time, os.date
local clock_ms = host.clock_ms

local AUDIENCE = "shelfsync-sync"
local TOKEN_LOCK_CLASS = 0x53594e54     -- "SYNT": token creation, one at a time per user
-- The same challenge as C's before the body (core/http_server.c, send_refusal).
local UNAUTHORIZED_HEADERS = { ["WWW-Authenticate"] = format('Bearer realm="%s", error="invalid_token"', AUDIENCE) }

local LIMIT_RULE = validate.compile{ type = "integer", min = 1, max = 100, coerce = true }
local DEFAULT_HISTORY = 5

local function iso(t)
  return os_date("!%Y-%m-%dT%H:%M:%S.000Z", t)
end

-- ---- POST /api/sync/token ----

local function issue_token(user_id)
  db.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", TOKEN_LOCK_CLASS, user_id)
  local live = db.one([[
    SELECT count(*)::int AS n,
           ceil(extract(epoch FROM min(expires_at) - now()))::int AS wait_s
    FROM sync_tokens WHERE user_id = $1 AND NOT used AND expires_at > now()]], user_id)
  local max = config.sync_max_unused_tokens
  if live.n >= max then
    return nil, live.wait_s
  end
  local iat = os_time()
  local exp = iat + config.sync_token_ttl_s
  local jti = crypto.uuid()
  local token = jwt.sign_hs256({ sub = user_id, jti = jti, aud = AUDIENCE, iat = iat, exp = exp },
    config.secret)
  db.query("INSERT INTO sync_tokens (jti, user_id, expires_at) VALUES ($1, $2, to_timestamp($3))",
    jti, user_id, exp)
  return token, exp
end

local function audible_url(token)
  local base = gsub(config.audible_library_url, "#.*$", "")
  return base .. "#token=" .. token
end

local function create_token(ctx)
  local user_id = ctx.user.id
  local token, exp = db.tx(issue_token, user_id)
  if not token then
    local wait = (type(exp) == "number" and exp > 0) and exp or 1
    errors.raise(429, "too_many_tokens",
      format("at most %d unused sync tokens at a time; use one or wait until one expires",
        config.sync_max_unused_tokens), nil, { ["Retry-After"] = tostring(wait) })
  end
  local last = db.one([[SELECT max(synced_at) AS at FROM sync_history
                        WHERE user_id = $1 AND success]], user_id).at
  return 200, {
    success = true,
    token = token,
    expiresAt = iso(exp),
    audibleUrl = audible_url(token),
    hasSyncedBefore = last ~= json.null and last ~= nil,
    lastSyncedAt = last or json.null,
  }
end

-- ---- POST /api/sync/import ----

-- What the extension reads in `error`, where the code alone does not say it (see above).
local ERROR_WORDS = { token_already_used = "token already used" }

local function unauthorized(code, message)
  errors.raise(401, ERROR_WORDS[code] or code, message, nil, UNAUTHORIZED_HEADERS, { code = code })
end

-- Returns the verified claims, or nil and the 401's code and message, plus the claims when
-- the token is authentic and names its user (the failure then goes to sync history).
local function check_token(req)
  local header = req.headers.authorization
  local token = type(header) == "string" and match(header, "^[Bb][Ee][Aa][Rr][Ee][Rr] +([%w%-_%.]+) *$")
  if not token then
    return nil, "token_invalid", "send the sync token as Authorization: Bearer <token>"
  end
  local claims, code = jwt.verify_hs256(token, config.secret, { aud = AUDIENCE })
  if not claims then
    if code == "token_expired" then
      return nil, "token_expired", "this sync token has expired; start a new sync"
    end
    return nil, "token_invalid", "this sync token is not valid"
  end
  local sub, jti = claims.sub, claims.jti
  if not types.is_uuid(sub) or not types.is_uuid(jti) then
    return nil, "token_invalid", "this sync token is not valid"
  end
  local row = db.one([[
    SELECT t.user_id, t.used, t.expires_at <= now() AS expired, u.status
    FROM sync_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.jti = $1]], jti)
  if not row or row.user_id ~= sub then
    return nil, "token_invalid", "this sync token is not valid"
  end
  if row.status ~= "active" then
    return nil, "token_invalid", "the account of this sync token is deactivated"
  end
  if row.used then
    return nil, "token_already_used", "this sync token was already used; start a new sync", claims
  end
  if row.expired then
    return nil, "token_expired", "this sync token has expired; start a new sync", claims
  end
  return claims
end

-- The body is decoded and validated in C (host.bulk, core/bulk.c) by sync_rules.ITEM
-- compiled once per VM: the compiled rule is kept with the rule table it came from, so a
-- reload that brings a new table compiles it again. A rule the C runner cannot run
-- (compile's nil) keeps the Lua path below, and so does every body host.bulk does not
-- accept (not JSON as yajl reads it, a bad envelope, too many titles): lua-cjson and
-- sync_import.prepare then answer it exactly as they always have, at the cost of a second
-- parse on a request that fails anyway (or that only cjson's leniencies accept).
local compiled = { rule = nil, spec = nil }

local function item_spec()
  local rule = sync_rules.ITEM
  if compiled.rule ~= rule then
    local spec, why = bulk.compile(rule, { fields = sync_import.PRESENT_FIELDS,
      blank = sync_rules.PLACEHOLDERS, sent = "asin", shapes = validate.shapes })
    if not spec then host.log("warn", "sync import: the Lua validator runs ITEM: " .. why) end
    compiled.rule, compiled.spec = rule, spec
  end
  return compiled.spec
end

-- The payload as host.bulk columns (sync_import.prepare_columns' src), or nil.
local function decode_columns(ctx)
  local spec = item_spec()
  local text = spec and ctx:json_text()
  if type(text) ~= "string" then return nil end
  local b = bulk.decode(spec, text, "titles", config.sync_max_titles)
  if not b then return nil end
  return {
    received = b:received(), asin = b:column("asin"), source = b:column("source"),
    listeningProgress = b:column("listeningProgress"),
    personalRating = b:column("personalRating"), dateAdded = b:column("dateAdded"),
    present = b:present(), refused = b:refused(), dropped = b:dropped(),
    sent = function(i) return b:sent(i) end,
    item = function(i) return b:item(i) end,
  }
end

-- Phases in the log line: decode is the JSON decode (with host.bulk: decode and
-- validation in C), validate the Lua prepare.
local function prepare(ctx)
  local src = decode_columns(ctx)
  if src then
    ctx.req.body = nil   -- the decoded body keeps its own reference to the text
    return clock_ms(), sync_import.prepare_columns(src), "host.bulk"
  end
  local body = ctx:json_body()
  -- One scan of the text spares a UTF-8 / NUL check per string (validate.text_ok).
  local text_checked = validate.text_ok(ctx.req.body)
  -- The text is no longer needed: let the collector have it (up to max_import_bytes)
  -- while the import runs.
  ctx.req.body = nil
  local t1 = clock_ms()
  return t1, sync_import.prepare(body, text_checked), "cjson"
end

local function do_import(ctx, claims)
  local t0 = clock_ms()
  local t1, prep, decoder = prepare(ctx)
  local t2 = clock_ms()
  local r = sync_import.run(claims.sub, claims.jti, prep)
  -- (the enrichment's queue is filled after the answer and logs its own line, "sync <id>:
  -- N titles queued ...; ms: queue M")
  host.log("info", format("sync import %s: user %s, %d titles (%d new to the catalog, %d " ..
    "rewritten, %d skipped, %d removed from the library); ms: decode %d (%s), validate %d, " ..
    "catalog %d, library %d, total %d", r.sync_id, claims.sub, r.imported,
    r.new_to_catalog, r.changed, prep.invalid, r.removed, t1 - t0, decoder, t2 - t1, r.catalog_ms,
    r.library_ms, clock_ms() - t0))
  return {
    success = true,
    syncId = r.sync_id,
    imported = r.imported,
    newToCatalog = r.new_to_catalog,
    libraryCount = r.library,
    wishlistCount = r.wishlist,
    warnings = r.warnings,
  }
end

-- What the failed attempt's history row says.
local function failure_of(err, request_id)
  if errors.is_http(err) then
    local warnings = err.status == 422 and sync_import.details_as_warnings(err.details) or nil
    return err.message, warnings
  end
  return "the server failed to import this sync (request id " .. tostring(request_id) .. ")"
end

-- Seconds until the user may try again, or nil. The history already records every failed
-- attempt, so it is the counter (shared by every instance).
local function failures_wait(user_id)
  local window = config.sync_failure_window_s
  local row = db.one([[
    SELECT count(*) AS n, extract(epoch FROM min(synced_at) + make_interval(secs => $2) - now())::int AS wait
    FROM (SELECT synced_at FROM sync_history
          WHERE user_id = $1 AND NOT success AND synced_at > now() - make_interval(secs => $2)
          ORDER BY synced_at DESC LIMIT $3) recent]], user_id, window, config.sync_max_failures)
  if row.n >= config.sync_max_failures then
    return row.wait > 0 and row.wait or 1
  end
end

local function import(ctx)
  local claims, code, message, authentic = check_token(ctx.req)
  if not claims then
    if authentic then sync_import.record_failure(authentic.sub, message) end
    unauthorized(code, message)
  end
  local wait = failures_wait(claims.sub)
  if wait then
    return 429, errors.body("too_many_failed_imports",
      format("%d failed imports in the last %d seconds; fix the payload and try again later",
        config.sync_max_failures, config.sync_failure_window_s), nil, ctx.req.request_id),
      { ["Retry-After"] = tostring(wait) }
  end
  local ok, res = xpcall(do_import, host.traceback, ctx, claims)
  if ok then return 200, res end
  local msg, warnings = failure_of(res, ctx.req.request_id)
  sync_import.record_failure(claims.sub, msg, warnings)
  if errors.is_http(res) and res.status == 401 then unauthorized(res.code, res.message) end
  error(res, 0)
end

-- ---- GET /api/sync/history ----

local function history(ctx)
  local limit = DEFAULT_HISTORY
  local raw = ctx.query and ctx.query.limit
  if raw ~= nil then
    local v, errs = validate.check(LIMIT_RULE, raw, "limit")
    if v == nil then
      errors.raise(400, "invalid_parameter", "limit must be a whole number from 1 to 100",
        errs or { { path = "limit", message = "must be a whole number from 1 to 100" } })
    end
    limit = v
  end
  local rows = db.query([[
    SELECT id, synced_at, titles_imported, new_to_catalog, library_count, wishlist_count,
           warnings, success, error_message
    FROM sync_history WHERE user_id = $1
    ORDER BY synced_at DESC, id DESC
    LIMIT $2]], ctx.user.id, limit)
  local out = json.array()
  for i = 1, #rows do
    local r = rows[i]
    out[i] = {
      id = r.id,
      syncedAt = r.synced_at,
      titlesImported = r.titles_imported,
      newToCatalog = r.new_to_catalog,
      libraryCount = r.library_count,
      wishlistCount = r.wishlist_count,
      warnings = json.array(r.warnings),
      success = r.success,
      errorMessage = r.error_message,
    }
  end
  return 200, out
end

-- ---- housekeeping ----

-- Deletes sync tokens expired for more than 24 hours, and indexes the search texts a sync
-- left pending (one that died before its answer was sent: lua/title_search.lua). Returns
-- how many tokens it deleted.
local function cleanup()
  local res = db.query("DELETE FROM sync_tokens WHERE expires_at < now() - interval '24 hours'")
  if res.affected > 0 then
    host.log("info", "sync: deleted " .. res.affected .. " expired sync tokens")
  end
  local moved = require("title_search").move()
  if moved > 0 then
    host.log("info", "sync: indexed " .. moved .. " search texts an earlier sync left pending")
  end
  return res.affected
end

return {
  { method = "POST", path = "/api/sync/token",   auth = "session", handler = create_token },
  -- The extension posts from the Audible page (its Origin); only the token authorises.
  { method = "POST", path = "/api/sync/import",  auth = "bearer",  handler = import,
    audience = AUDIENCE, cors = "public", body_limit = config.max_import_bytes },
  { method = "GET",  path = "/api/sync/history", auth = "session", handler = history },
  cleanup = cleanup,
}
