-- Library browsing for the web UI (DESIGN.md, API):
--   GET /api/library          filtered, sorted, searched, keyset-paginated entries
--   GET /api/library/facets   authors, narrators, series, categories, languages with counts
--   GET /api/library/:asin    one entry of the signed-in user's library (hidden or not; 404 otherwise)
--   GET /api/library/:asin/lists   the user's lists and tier lists holding that entry:
--                             {"lists":[{"id","title","visibility","position"}],
--                              "tierLists":[{"id","title","visibility","tier"}]}, by title
--                             (404 when the title was never in the library; a title a
--                             sync removed still answers: lists keep it)
--   GET /api/lookup/:asin     a title's metadata: the catalog's, else the provider's (asked
--                             now, metadata_lookup_timeout_ms at most, and kept in the
--                             catalog); 404 title_not_found, 503 provider_unavailable
--   POST /api/library {"asin"}         adds the title as a MANUAL entry: 201 ENTRY; 404
--                             title_not_found; 409 already_in_library; 503 provider_unavailable
--                             (nothing added). An entry a sync had removed comes back (same
--                             id, so lists keep it) as MANUAL and shown.
--   DELETE /api/library/:asin removes a MANUAL entry (204); a synced one is 409 not_manual
--                             (hide it instead: the next sync would bring it back). Removal
--                             is the sync's soft removal, so lists keep the title flagged
--                             "inLibrary": false, and adding it again restores the entry.
--   PATCH /api/library/:asin {"hidden": true|false}   hides or shows an entry: 200 ENTRY.
--                             A hidden entry stays hidden across syncs until shown again.
-- Every read is scoped to the session's user and leaves out entries a sync removed.
-- Library reads and facets leave hidden entries out unless hidden=true (only hidden ones)
-- or hidden=any (both).
-- Answers carry an ETag (If-None-Match -> 304) and Cache-Control: private, no-cache; the C
-- core gzips them for clients that accept it. The SQL lives in lua/library_query.lua.
--
-- GET /api/library parameters (an empty value is the same as an absent one; any other
-- parameter is a 400, so a misspelt filter never silently shows the whole library):
--   source    LIBRARY | WISHLIST | MANUAL, or several joined by commas (LIBRARY,MANUAL)
--   q         search in title, subtitle, authors, narrators and series name: case- and
--             accent-insensitive, typo-tolerant (pg_trgm word similarity), %, _ and \
--             literal; best matches first unless another sort is asked for
--   author, narrator, category   exact, case-insensitive match on one element of the list
--   series, language             exact, case-insensitive
--   finished  true (progress 100) | false (anything less)
--   progress  finished (100) | in_progress (above 0, below 100) | not_started (0): the
--             dashboard's and the stats' split (lq.progress_counts), so their counts
--             match the filtered totals
--   hidden    false (default: entries shown) | true (only hidden ones) | any
--   sort      dateAdded (default; newest first) | title | author | releaseDate | rating |
--             duration | progress | series (name, then position 1, 2, 2.5, 3, 10) |
--             relevance (the default with q)
--   order     asc | desc. Defaults: desc for dateAdded, releaseDate, rating, progress and
--             relevance; asc for the others. Entries without the sorted value (no rating,
--             no series, ...) come last in both orders; ties go by entry id.
--   limit     1..200, default 50
--   cursor    nextCursor of the previous page (same sort and order)
-- Answer: {"items":[ENTRY],"nextCursor":string|null,"total":n}.
-- Facets take the same filters and limit (1..1000, default 100) values per facet:
-- {"authors":[{"name","count"}],"narrators":[...],"series":[...],"categories":[...],
--  "languages":[...],"total":n}.
local lq = require("library_query")
local response = require("response")
local errors = require("errors")
local db = require("db")
local validate = require("validate")
local types = require("types")
local enrichment = require("enrichment")
local sync_import = require("sync_import")

local function list(ctx)
  local p = lq.params(lq.LIST_PARAMS, ctx.query)
  local rows = lq.run(lq.page_sql(ctx.user.id, p))
  return response.conditional(ctx, lq.page_body(p, rows))
end

local function facets(ctx)
  local p = lq.params(lq.FACET_PARAMS, ctx.query)
  local rows = lq.run(lq.facets_sql(ctx.user.id, p))
  return response.conditional(ctx, rows[1].body)
end

local function holders(select_sql)
  return [[(SELECT COALESCE(array_agg(row_to_json(x) ORDER BY x.title COLLATE library_order, x.id), '{}')
      FROM (]] .. select_sql .. [[) AS x)]]
end

local LISTS_SQL = [[
  SELECT row_to_json(d)::text AS body
  FROM user_library AS ul JOIN title_catalog AS c ON c.id = ul.title_id
  CROSS JOIN LATERAL (SELECT
    ]] .. holders([[
      SELECT l.id, l.title, l.visibility, li.position
      FROM list_items AS li JOIN recommendation_lists AS l ON l.id = li.list_id
      WHERE li.user_id = $1 AND li.user_library_id = ul.id]]) .. [[ AS lists,
    ]] .. holders([[
      SELECT t.id, t.title, t.visibility, ta.tier
      FROM tier_assignments AS ta JOIN tier_lists AS t ON t.id = ta.tier_list_id
      WHERE ta.user_id = $1 AND ta.user_library_id = ul.id]]) .. [[ AS "tierLists"
  ) AS d
  WHERE ul.user_id = $1 AND c.asin = $2]]

local function entry_lists(ctx)
  local asin = lq.asin(ctx.params.asin)
  local rows = lq.run(LISTS_SQL, { n = 2, ctx.user.id, asin })
  if not rows[1] then errors.not_found("library entry") end
  return response.conditional(ctx, rows[1].body)
end

local function entry(ctx)
  local asin = lq.asin(ctx.params.asin)
  local rows = lq.run(lq.ENTRY_SQL, { n = 2, ctx.user.id, asin })
  if not rows[1] then errors.not_found("library entry") end
  return response.conditional(ctx, rows[1].body)
end

local function unknown_title(asin)
  errors.raise(404, "title_not_found", "no title with ASIN " .. asin ..
    " is known to the catalog or the metadata provider")
end

local function lookup(ctx)
  local asin = lq.asin(ctx.params.asin)
  if not enrichment.ensure(asin, ctx.user.id) then unknown_title(asin) end
  local rows = lq.run(lq.TITLE_SQL, { n = 1, asin })
  return response.conditional(ctx, rows[1].body)
end

local function body_of(ctx, rule)
  local body, errs = validate.check(rule, ctx:json_body())
  if not body then
    errors.raise(422, "validation_failed", "invalid body: " .. validate.summary(errs), errs)
  end
  return body
end

local function entry_body(user_id, asin)
  return lq.run(lq.ENTRY_SQL, { n = 2, user_id, asin })[1].body
end

-- The user's entry of a title (removed or not), under the sync's lock on the user.
local function locked_entry(user_id, asin)
  db.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", sync_import.LOCK_CLASS, user_id)
  return db.one([[
    SELECT ul.id, ul.source::text AS source, ul.removed_at IS NOT NULL AS removed
    FROM user_library AS ul JOIN title_catalog AS c ON c.id = ul.title_id
    WHERE ul.user_id = $1 AND c.asin = $2]], user_id, asin)
end

local function already(asin)
  errors.raise(409, "already_in_library", "ASIN " .. asin .. " is already in your library")
end

local ADD = validate.compile{ type = "object", unknown = "reject",
                              fields = { asin = types.ASIN } }

local function add(ctx)
  local asin = body_of(ctx, ADD).asin
  local user_id = ctx.user.id
  local e = db.one([[SELECT 1 FROM user_library AS ul JOIN title_catalog AS c ON c.id = ul.title_id
                     WHERE ul.user_id = $1 AND c.asin = $2 AND ul.removed_at IS NULL]], user_id, asin)
  if e then already(asin) end
  local title_id = enrichment.ensure(asin, user_id)
  if not title_id then unknown_title(asin) end
  db.tx(function()
    local ex = locked_entry(user_id, asin)
    if ex and not ex.removed then already(asin) end
    if ex then
      db.query([[UPDATE user_library SET source = 'MANUAL', removed_at = NULL, hidden = false,
                 date_added = now() WHERE id = $1]], ex.id)
    else
      db.query([[INSERT INTO user_library (user_id, title_id, source) VALUES ($1, $2, 'MANUAL')]],
        user_id, title_id)
    end
  end)
  return 201, entry_body(user_id, asin), { Location = "/api/library/" .. asin }
end

local function remove(ctx)
  local asin = lq.asin(ctx.params.asin)
  db.tx(function()
    local ex = locked_entry(ctx.user.id, asin)
    if not ex or ex.removed then errors.not_found("library entry") end
    if ex.source ~= "MANUAL" then
      errors.raise(409, "not_manual", "only titles added by hand can be removed; this one comes " ..
        "from a sync (" .. ex.source .. "): hide it instead")
    end
    db.query("UPDATE user_library SET removed_at = now() WHERE id = $1", ex.id)
  end)
  return 204
end

local HIDE = validate.compile{ type = "object", unknown = "reject",
                               fields = { hidden = { type = "boolean", required = true } } }

local function set_hidden(ctx)
  local asin = lq.asin(ctx.params.asin)
  local hidden = body_of(ctx, HIDE).hidden
  local row = db.one([[
    UPDATE user_library AS ul SET hidden = $3
    FROM title_catalog AS c
    WHERE c.id = ul.title_id AND ul.user_id = $1 AND c.asin = $2 AND ul.removed_at IS NULL
    RETURNING ul.id]], ctx.user.id, asin, hidden)
  if not row then errors.not_found("library entry") end
  return 200, entry_body(ctx.user.id, asin)
end

return {
  { method = "GET",    path = "/api/library",        auth = "session", handler = list },
  { method = "POST",   path = "/api/library",        auth = "session", handler = add },
  { method = "GET",    path = "/api/library/facets", auth = "session", handler = facets },
  { method = "GET",    path = "/api/library/:asin",  auth = "session", handler = entry },
  { method = "GET",    path = "/api/library/:asin/lists", auth = "session", handler = entry_lists },
  { method = "DELETE", path = "/api/library/:asin",  auth = "session", handler = remove },
  { method = "PATCH",  path = "/api/library/:asin",  auth = "session", handler = set_hidden },
  { method = "GET",    path = "/api/lookup/:asin",   auth = "session", handler = lookup },
}
