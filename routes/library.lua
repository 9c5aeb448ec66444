-- Library browsing for the web UI (DESIGN.md, API):
--   GET /api/library          filtered, sorted, searched, keyset-paginated entries
--   GET /api/library/facets   authors, narrators, series, categories, languages with counts
--   GET /api/library/:asin    one entry of the signed-in user's library (404 otherwise)
--   GET /api/library/:asin/lists   the user's lists and tier lists holding that entry:
--                             {"lists":[{"id","title","visibility","position"}],
--                              "tierLists":[{"id","title","visibility","tier"}]}, by title
--                             (404 when the title was never in the library; a title a
--                             sync removed still answers: lists keep it)
-- Every read is scoped to the session's user and leaves out entries a sync removed.
-- Answers carry an ETag (If-None-Match -> 304) and Cache-Control: private, no-cache; the C
-- core gzips them for clients that accept it. The SQL lives in lua/library_query.lua.
--
-- GET /api/library parameters (an empty value is the same as an absent one; any other
-- parameter is a 400, so a misspelt filter never silently shows the whole library):
--   source    LIBRARY | WISHLIST
--   q         search in title, subtitle, authors, narrators and series name: case- and
--             accent-insensitive, typo-tolerant (pg_trgm word similarity), %, _ and \
--             literal; best matches first unless another sort is asked for
--   author, narrator, category   exact, case-insensitive match on one element of the list
--   series, language             exact, case-insensitive
--   finished  true (progress 100) | false (anything less)
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
local errors = require("errors")

local function list(ctx)
  local p = lq.params(lq.LIST_PARAMS, ctx.query)
  local rows = lq.run(lq.page_sql(ctx.user.id, p))
  return lq.respond(ctx, lq.page_body(p, rows))
end

local function facets(ctx)
  local p = lq.params(lq.FACET_PARAMS, ctx.query)
  local rows = lq.run(lq.facets_sql(ctx.user.id, p))
  return lq.respond(ctx, rows[1].body)
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
  return lq.respond(ctx, rows[1].body)
end

local function entry(ctx)
  local asin = lq.asin(ctx.params.asin)
  local rows = lq.run(lq.ENTRY_SQL, { n = 2, ctx.user.id, asin })
  if not rows[1] then errors.not_found("library entry") end
  return lq.respond(ctx, rows[1].body)
end

return {
  { method = "GET", path = "/api/library",        auth = "session", handler = list },
  { method = "GET", path = "/api/library/facets", auth = "session", handler = facets },
  { method = "GET", path = "/api/library/:asin",  auth = "session", handler = entry },
  { method = "GET", path = "/api/library/:asin/lists", auth = "session", handler = entry_lists },
}
