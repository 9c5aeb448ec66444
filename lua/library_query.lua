-- library_query: the SQL behind the library reads (routes/library.lua, routes/titles.lua,
-- routes/dashboard.lua): query parameters, filters, sorts and the keyset cursor. The
-- answer goes out through response.conditional (ETag / If-None-Match, lua/response.lua).
--
--   local lq = require("library_query")
--   local p = lq.params(lq.LIST_PARAMS, ctx.query)    -- cleaned, or raises 400
--   local sql, args = lq.page_sql(user_id, p)           -- one statement per page
--   local body = lq.page_body(p, lq.run(sql, args))
--   return response.conditional(ctx, body)               -- 200 with ETag, or 304
--
-- Rules of this file:
-- * Every value from the request travels as a $n parameter. Identifiers and SQL text
--   (sort columns, directions, operators) come only from the fixed tables below, chosen by
--   a parameter that was checked against the same tables.
-- * The database builds the JSON (row_to_json over rows whose columns carry the API's
--   camelCase names). The body is then byte-for-byte a function of the data: the same in
--   every worker (cjson's key order follows the Lua hash seed, which differs per state), so
--   an ETag computed from it means the same thing whichever worker answers, and a page of
--   50 entries costs Lua one string concatenation instead of a table walk.
-- * Library reads never see removed entries (user_library.removed_at IS NULL).
local _M = {}

local json = require("json")
local errors = require("errors")
local validate = require("validate")
local db = require("db")
local types = require("types")

local crypto = host.crypto
local config = host.config
local type, pairs, ipairs, tostring, tonumber, tointeger =
  type, pairs, ipairs, tostring, tonumber, math.tointeger
local concat, unpack = table.concat, table.unpack
local find, sub, gsub, upper = string.find, string.sub, string.gsub, string.upper
local null = json.null

-- ---- query parameters ----

-- The three states of listening progress, as SQL over a progress column (@): the
-- progress=... filter and progress_counts (the dashboard's and the stats' split) share
-- them, so an entry counted "in progress" is the one the filter shows.
local PROGRESS = {
  finished    = "@ >= 100",
  in_progress = "@ > 0 AND @ < 100",
  not_started = "@ <= 0",
}
local function progress_is(state, column)
  return "(" .. gsub(PROGRESS[state], "@", column) .. ")"
end

local NAME = { type = "string", max_len = 200 }

-- source: one of the entry sources, or several joined by commas ("LIBRARY,MANUAL": what
-- the listener has), cleaned to the list.
local SOURCES = { LIBRARY = true, WISHLIST = true, MANUAL = true }
local function sources(v)
  local list = {}
  for part in string.gmatch(v, "[^,]+") do
    part = gsub(part, "^%s*(.-)%s*$", "%1")
    if not SOURCES[part] then return nil end
    list[#list + 1] = part
  end
  if not list[1] then return nil end
  return list
end

-- The filters shared by GET /api/library and GET /api/library/facets. An empty value
-- ("author=") means no filter, as a form that sends every field would have it.
local FILTER_FIELDS = {
  source   = { type = "string", upper = true, check = sources,
               message = "must be LIBRARY, WISHLIST or MANUAL, or several of them joined by commas" },
  hidden   = { type = "string", lower = true, enum = { "false", "true", "any" } },
  q        = { type = "string", max_len = 200 },
  author   = NAME,
  narrator = NAME,
  series   = NAME,
  category = NAME,
  language = { type = "string", max_len = 50 },
  finished = { type = "string", lower = true, enum = { "true", "false" } },
  progress = { type = "string", lower = true, enum = { "finished", "in_progress", "not_started" } },
}

-- sort name -> keys, default order. A key is {expr = SQL, cast = its cursor value's type};
-- flag keys are "(x IS NULL)", always ascending, so entries without the value come last in
-- both orders. order=asc|desc applies to every other key, the entry id (the tie-breaker)
-- included. expr may be a function of the q placeholder (the relevance rank).
local function nulls_last(expr) return { expr = "(" .. expr .. " IS NULL)", cast = "boolean", flag = true } end
local ID = { expr = "ul.id", cast = "uuid" }
local DATE_ADDED = { expr = "ul.date_added", cast = "timestamptz" }
local TITLE = { expr = "c.title COLLATE library_order", cast = "text" }

-- Relevance: a literal substring hit ranks 2, above any trigram word similarity
-- (0.6 .. 1 for anything the q filter lets through). Computing it only for non-literal
-- candidates keeps a correctly spelled search cheap (word_similarity costs ~12 us a row).
-- The patterns are scalar subqueries, computed once per statement: the statement is
-- prepared (core/pg_stmt.c), and in a generic plan search_like($n) would be evaluated
-- again for every row it filters or ranks (f_unaccent per row: -15..-25 % on a search
-- under pgbench -M prepared, measured for issue 16), where a custom plan folds it.
local function like_of(q) return "(SELECT search_like(" .. q .. "))" end
local function norm_of(q) return "(SELECT search_norm(" .. q .. "))" end

local function rank_expr(q)
  return "(CASE WHEN ts.search_text LIKE " .. like_of(q) .. " THEN 2::real"
    .. " ELSE word_similarity(" .. norm_of(q) .. ", ts.search_text) END)"
end

local SORTS = {
  dateAdded   = { order = "desc", row_compare = true, keys = { DATE_ADDED, ID } },
  title       = { order = "asc", keys = { TITLE, ID } },
  author      = { order = "asc", keys = { nulls_last("c.authors[1]"),
                    { expr = "c.authors[1] COLLATE library_order", cast = "text" }, TITLE, ID } },
  releaseDate = { order = "desc", keys = { nulls_last("c.release_date"),
                    { expr = "c.release_date", cast = "date" }, ID } },
  rating      = { order = "desc", keys = { nulls_last("c.rating"),
                    { expr = "c.rating", cast = "float8" }, ID } },
  duration    = { order = "asc", keys = { nulls_last("c.duration"),
                    { expr = "c.duration", cast = "integer" }, ID } },
  progress    = { order = "desc", row_compare = true, keys = {
                    { expr = "ul.listening_progress", cast = "integer" }, ID } },
  series      = { order = "asc", keys = { nulls_last("c.series_name"),
                    { expr = "c.series_name COLLATE library_order", cast = "text" },
                    nulls_last("c.series_position"),
                    { expr = "c.series_position", cast = "float8" }, TITLE, ID } },
  relevance   = { order = "desc", needs_q = true, row_compare = true, keys = {
                    { expr = rank_expr, cast = "real" }, DATE_ADDED, ID } },
}
_M.SORTS = SORTS

local SORT_NAMES = { "dateAdded", "title", "author", "releaseDate", "rating", "duration",
  "progress", "series", "relevance" }

local function with_filters(extra)
  local fields = {}
  for k, v in pairs(FILTER_FIELDS) do fields[k] = v end
  for k, v in pairs(extra) do fields[k] = v end
  return validate.compile{ type = "object", unknown = "reject", fields = fields }
end

_M.LIST_PARAMS = with_filters{
  sort   = { type = "string", enum = SORT_NAMES },
  order  = { type = "string", lower = true, enum = { "asc", "desc" } },
  limit  = { type = "integer", coerce = true, min = 1, max = 200, default = 50 },
  cursor = { type = "string", max_len = 2048 },
}

_M.FACET_PARAMS = with_filters{
  limit = { type = "integer", coerce = true, min = 1, max = 1000, default = 100 },
}

local function bad_param(name, message)
  errors.raise(400, "invalid_parameter", name .. " " .. message, { { path = name, message = message } })
end

-- Cleans ctx.query against a rule above; raises 400 invalid_parameter naming every bad
-- parameter (details[].path is the parameter's name).
function _M.params(rule, query)
  local p, errs = validate.check(rule, query or {})
  if not p then
    errors.raise(400, "invalid_parameter", "invalid query parameter: " .. validate.summary(errs), errs)
  end
  if p.finished then p.finished = (p.finished == "true") end
  if rule == _M.LIST_PARAMS then
    if p.sort and SORTS[p.sort].needs_q and not p.q then
      bad_param("sort", p.sort .. " needs a search (q)")
    end
    p.sort = p.sort or (p.q and "relevance" or "dateAdded")
    p.order = p.order or SORTS[p.sort].order
  end
  return p
end

-- ---- SQL building ----

-- A statement under construction: SQL text pieces and the $n arguments.
local Builder = {}
Builder.__index = Builder

local function builder()
  return setmetatable({ args = { n = 0 } }, Builder)
end

-- Adds a value as the next parameter; returns its placeholder ("$3").
function Builder:arg(v)
  local args = self.args
  args.n = args.n + 1
  args[args.n] = v
  return "$" .. args.n
end

local FROM = "user_library AS ul JOIN title_catalog AS c ON c.id = ul.title_id"
-- Each title has one row in title_search_all (sql/009): the join keeps every title.
local FROM_SEARCH = FROM .. " JOIN title_search_all AS ts ON ts.title_id = c.id"

-- True when an element of the array column equals the placeholder's value, ignoring case.
local function has_element(column, ref)
  return "EXISTS (SELECT 1 FROM unnest(" .. column .. ") AS x(v) WHERE lower(x.v) = lower(" .. ref .. "))"
end

-- The WHERE conditions for p's filters; whether they read title_catalog (c); and the FROM
-- of the library with its catalog titles they need: FROM_SEARCH when they read the search
-- text (title_search_all AS ts, sql/009).
-- Author and narrator: exact, case-insensitive, on any element; the LIKE on search_text
-- (which holds every author and narrator, normalised) is implied by it and lets the
-- planner select through the trigram index when that is cheaper than reading the library.
local function filters(b, user_id, p)
  local w = { "ul.user_id = " .. b:arg(user_id), "ul.removed_at IS NULL" }
  local catalog, search = false, false
  if p.source then w[#w + 1] = "ul.source = ANY(" .. b:arg(p.source) .. "::library_source[])" end
  -- Hidden entries (PATCH /api/library/:asin) only when asked for.
  if p.hidden == "true" then
    w[#w + 1] = "ul.hidden"
  elseif p.hidden ~= "any" then
    w[#w + 1] = "NOT ul.hidden"
  end
  if p.finished == true then
    w[#w + 1] = "ul.listening_progress = 100"
  elseif p.finished == false then
    w[#w + 1] = "ul.listening_progress < 100"
  end
  if p.progress then w[#w + 1] = progress_is(p.progress, "ul.listening_progress") end
  if p.q then
    local q = b:arg(p.q)
    b.q_ref = q
    w[#w + 1] = "(ts.search_text LIKE " .. like_of(q) .. " OR " .. norm_of(q) .. " <% ts.search_text)"
    search = true
  end
  for _, f in ipairs{ { "author", "authors" }, { "narrator", "narrators" } } do
    local v = p[f[1]]
    if v then
      local a = b:arg(v)
      w[#w + 1] = "ts.search_text LIKE " .. like_of(a)
      w[#w + 1] = has_element("c." .. f[2], a)
      search = true
    end
  end
  if p.category then
    w[#w + 1] = has_element("c.categories", b:arg(p.category))
    catalog = true
  end
  if p.series then
    w[#w + 1] = "lower(c.series_name) = lower(" .. b:arg(p.series) .. ")"
    catalog = true
  end
  if p.language then
    w[#w + 1] = "lower(c.language) = lower(" .. b:arg(p.language) .. ")"
    catalog = true
  end
  return concat(w, " AND "), catalog or search, search and FROM_SEARCH or FROM
end

local function key_expr(key, b)
  local e = key.expr
  if type(e) == "function" then return e(b.q_ref) end
  return e
end

-- Keys whose cursor value travels as PostgreSQL's own text: a timestamp as a typed result
-- is cut to milliseconds, and a float written by cjson keeps 14 digits, not always enough
-- to name the same double again. Text is exact, and the cast takes it back.
local AS_TEXT = { timestamptz = true, float8 = true, real = true }

-- The key's value as the cursor keeps it: exact, and castable back with key.cast.
local function cursor_value(expr, key)
  if AS_TEXT[key.cast] then return expr .. "::text" end
  return expr
end

local function direction(key, order)
  if key.flag then return "ASC" end
  return order == "asc" and "ASC" or "DESC"
end

-- "Comes after the cursor's row in this order", for keys k1..kn (SQL expressions in
-- exprs) and the cursor's values v1..vn: (k1 > v1) OR (k1 = v1 AND k2 > v2) OR ..., with >
-- or < per key direction and NULL-safe equality (a key that is NULL in both rows is a tie,
-- settled by the next key). When all keys share one direction and are never NULL, the row
-- comparison (k1, k2) < (v1, v2) says the same and lets an index on (k1, k2) serve it.
local function after(b, spec, order, exprs, values)
  local refs = {}
  for i, key in ipairs(spec.keys) do
    local v = values[i]
    if v == null then v = nil end
    refs[i] = b:arg(v) .. "::" .. key.cast
  end
  if spec.row_compare then
    local op = order == "asc" and " > " or " < "
    return "(" .. concat(exprs, ", ") .. ")" .. op .. "(" .. concat(refs, ", ") .. ")"
  end
  local terms = {}
  for i, key in ipairs(spec.keys) do
    local parts = {}
    for j = 1, i - 1 do
      parts[j] = exprs[j] .. " IS NOT DISTINCT FROM " .. refs[j]
    end
    local op = direction(key, order) == "ASC" and " > " or " < "
    parts[i] = exprs[i] .. op .. refs[i]
    terms[i] = "(" .. concat(parts, " AND ") .. ")"
  end
  return "(" .. concat(terms, " OR ") .. ")"
end

-- ---- JSON projections ----

-- A timestamptz as the API writes timestamps: ISO-8601 UTC with milliseconds. The colons
-- are quoted literals (":") so that no ":name" appears in the SQL text: pgbench, which
-- make bench-api feeds these very statements, would take ":MI" for one of its variables.
local function iso(expr)
  return "to_char(" .. expr .. " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\":\"MI\":\"SS.MS\"Z\"')"
end
_M.iso = iso

-- The catalog title the API shows: asin, then every sync_rules.CATALOG_FIELDS row not
-- marked api = false, under its JSON name, read from a row alias (@) that has the columns
-- of title_catalog. title_fields(alias) is exported so that other routes showing a title
-- (lists) answer the same shape:
--   SELECT row_to_json(t) FROM (SELECT <title_fields("c")> FROM title_catalog AS c) AS t
local TITLE_FIELDS, CATALOG_COLUMNS = "@.asin", "c.asin"
for _, f in ipairs(require("sync_rules").CATALOG_FIELDS) do
  if f.api ~= false then
    TITLE_FIELDS = TITLE_FIELDS .. ", @." .. f.column ..
      (f.json ~= f.column and (' AS "' .. f.json .. '"') or "")
    CATALOG_COLUMNS = CATALOG_COLUMNS .. ", c." .. f.column
  end
end

function _M.title_fields(alias)
  return (gsub(TITLE_FIELDS, "@", alias))
end

-- What a subquery must select (from user_library AS ul JOIN title_catalog AS c) for
-- ENTRY_LATERAL to build an entry from it.
local ENTRY_COLUMNS = "ul.source, ul.listening_progress, ul.personal_rating, ul.date_added, ul.hidden, " ..
  CATALOG_COLUMNS

-- ENTRY (DESIGN.md): {"asin","source","listeningProgress","personalRating","dateAdded",
-- "hidden","title":{catalog fields}}, as row e over a subquery s that selected ENTRY_COLUMNS.
local ENTRY_LATERAL = [[
  CROSS JOIN LATERAL (
    SELECT s.asin, s.source, s.listening_progress AS "listeningProgress",
           s.personal_rating AS "personalRating", ]] .. iso("s.date_added") .. [[ AS "dateAdded",
           s.hidden, t AS title
    FROM (SELECT ]] .. _M.title_fields("s") .. [[) AS t
  ) AS e]]


-- ---- the cursor ----
-- base64url(mac16 .. payload), payload = JSON [1, sort, order, key values...] of the last
-- entry of the page, mac16 = the first 16 bytes of HMAC-SHA256(secret, payload). The MAC
-- makes any edit a 400 (a forged position could not leak anything, but a silently wrong
-- page is worse than a clear error); binding sort and order makes a cursor of another
-- sort a 400 too, instead of a position in the wrong key space.

local CURSOR_VERSION = 1
local MAC_LEN = 16

local function mac(payload)
  return sub(crypto.hmac_sha256(config.secret, "library-cursor\0" .. payload), 1, MAC_LEN)
end

local function encode_cursor(p, values)
  local t = { CURSOR_VERSION, p.sort, p.order }
  for i, v in ipairs(values) do t[3 + i] = v end
  local payload = json.encode(json.array(t))
  return crypto.b64url_encode(mac(payload) .. payload)
end

local function bad_cursor(message)
  bad_param("cursor", message or "is not a cursor this server gave out; start again without it")
end

local CAST_CHECK = {
  boolean = function(v) return type(v) == "boolean" end,
  integer = function(v) return type(v) == "number" and tointeger(v) ~= nil end,
  float8 = function(v) return type(v) == "string" and tonumber(v) ~= nil end,
  real = function(v) return type(v) == "string" and tonumber(v) ~= nil end,
  text = function(v) return type(v) == "string" end,
  date = function(v) return type(v) == "string" and find(v, "^%d%d%d%d%-%d%d%-%d%d$") ~= nil end,
  timestamptz = function(v) return type(v) == "string" and find(v, "^%d%d%d%d%-%d%d%-%d%d %d") ~= nil end,
  uuid = function(v) return type(v) == "string" and find(v, "^%x+%-%x+%-%x+%-%x+%-%x+$") ~= nil end,
}

-- The cursor's key values for p's sort, or a 400 naming `cursor`.
local function decode_cursor(p, token)
  local raw = crypto.b64url_decode(token)
  if not raw or #raw <= MAC_LEN then bad_cursor() end
  local payload = sub(raw, MAC_LEN + 1)
  if not crypto.equal(sub(raw, 1, MAC_LEN), mac(payload)) then bad_cursor() end
  local t = json.decode(payload)
  if type(t) ~= "table" or t[1] ~= CURSOR_VERSION then bad_cursor() end
  if t[2] ~= p.sort or t[3] ~= p.order then
    bad_cursor("belongs to another sort or order (" .. tostring(t[2]) .. " " .. tostring(t[3])
      .. "); start again without it")
  end
  local keys = SORTS[p.sort].keys
  local values = {}
  for i, key in ipairs(keys) do
    local v = t[3 + i]
    -- Only a key that follows a NULLs-last flag may itself be NULL.
    local nullable = i > 1 and keys[i - 1].flag
    if v == null and nullable then
      values[i] = null
    elseif v == nil or not CAST_CHECK[key.cast](v) then
      bad_cursor()
    else
      values[i] = key.cast == "integer" and tointeger(v) or v
    end
  end
  if t[3 + #keys + 1] ~= nil then bad_cursor() end
  return values
end

-- ---- GET /api/library ----

-- One statement, one row: the total of matches, the page's entries as JSON joined with
-- commas (items), whether another page follows (more: the page is read with limit + 1
-- rows), and the sort key values k1..kn of its last entry, for the next cursor. The
-- database does the joining, so Lua only wraps the result; and the answer is a single
-- row whatever the page size.
--
-- Two shapes feed it. Without q, the count and the page each read the library directly:
-- the default page is then an index scan on (user_id, date_added, id) that stops after
-- limit + 1 rows, and the count an index-only scan. With q, the matches are computed once
-- (a MATERIALIZED CTE holding ids and sort keys) and both the count and the page read
-- them: the trigram test and the rank cost ~12 us a row, too much to pay twice.
function _M.page_sql(user_id, p)
  local b = builder()
  local spec = SORTS[p.sort]
  local where, catalog, from = filters(b, user_id, p)
  local values = p.cursor and decode_cursor(p, p.cursor)
  local limit = b:arg(p.limit)
  local sk, last = {}, {}
  for i = 1, #spec.keys do
    sk[i] = "s.k" .. i
    last[i] = "(array_agg(p.k" .. i .. ") FILTER (WHERE p.n = " .. limit .. "))[1] AS k" .. i
  end

  local with, count, page = ""
  if not p.q then
    local exprs, keys, order = {}, {}, {}
    for i, key in ipairs(spec.keys) do
      exprs[i] = key_expr(key, b)
      keys[i] = cursor_value(exprs[i], key) .. " AS k" .. i
      order[i] = exprs[i] .. " " .. direction(key, p.order)
    end
    local page_where = where
    if values then page_where = where .. " AND " .. after(b, spec, p.order, exprs, values) end
    count = "SELECT count(*) AS total FROM " .. (catalog and from or "user_library AS ul")
      .. " WHERE " .. where
    page = [[
        SELECT row_number() OVER () AS n, row_to_json(e)::text AS entry, ]] .. concat(sk, ", ") .. [[
        FROM (SELECT ]] .. ENTRY_COLUMNS .. ", " .. concat(keys, ", ") .. [[
              FROM ]] .. from .. [[
              WHERE ]] .. page_where .. [[
              ORDER BY ]] .. concat(order, ", ") .. [[
              LIMIT ]] .. limit .. [[ + 1) AS s
        ]] .. ENTRY_LATERAL
  else
    local defs, mk, order, out = {}, {}, {}, {}
    for i, key in ipairs(spec.keys) do
      defs[i] = key_expr(key, b) .. " AS k" .. i
      mk[i] = "m.k" .. i
      order[i] = mk[i] .. " " .. direction(key, p.order)
      out[i] = cursor_value("x.k" .. i, key) .. " AS k" .. i
    end
    local page_where = values and ("WHERE " .. after(b, spec, p.order, mk, values)) or ""
    with = [[
      WITH m AS MATERIALIZED (
        SELECT ul.id, ul.title_id, ]] .. concat(defs, ", ") .. [[
        FROM ]] .. from .. [[ WHERE ]] .. where .. [[)]]
    count = "SELECT count(*) AS total FROM m"
    page = [[
        SELECT s.n, row_to_json(e)::text AS entry, ]] .. concat(sk, ", ") .. [[
        FROM (SELECT x.n, ]] .. ENTRY_COLUMNS .. ", " .. concat(out, ", ") .. [[
              FROM (SELECT row_number() OVER () AS n, m.*
                    FROM (SELECT * FROM m ]] .. page_where .. [[
                          ORDER BY ]] .. concat(order, ", ") .. [[
                          LIMIT ]] .. limit .. [[ + 1) AS m) AS x
              JOIN user_library AS ul ON ul.id = x.id
              JOIN title_catalog AS c ON c.id = x.title_id) AS s
        ]] .. ENTRY_LATERAL
  end
  local sql = with .. [[
    SELECT t.total,
           string_agg(p.entry, ',' ORDER BY p.n) FILTER (WHERE p.n <= ]] .. limit .. [[) AS items,
           count(p.n) > ]] .. limit .. [[ AS more,
           ]] .. concat(last, ", ") .. [[
    FROM (]] .. count .. [[) AS t
    LEFT JOIN (]] .. page .. [[
    ) AS p ON true
    GROUP BY t.total]]
  return sql, b.args
end

-- The response body of a page from page_sql's row.
function _M.page_body(p, rows)
  local r = rows[1]
  local items = r.items
  if items == null then items = "" end
  local next_cursor = "null"
  if r.more then
    local values = {}
    for i = 1, #SORTS[p.sort].keys do values[i] = r["k" .. i] end
    next_cursor = '"' .. encode_cursor(p, values) .. '"'
  end
  return '{"items":[' .. items .. '],"nextCursor":' .. next_cursor
    .. ',"total":' .. tostring(tointeger(r.total) or r.total) .. "}"
end

-- ---- GET /api/library/:asin and GET /api/titles/:asin ----

-- The ASIN from the path, upper-cased; 400 naming `asin` when it cannot be one.
function _M.asin(v)
  v = upper(v or "")
  if not types.is_asin(v) then bad_param("asin", types.ASIN_MESSAGE) end
  return v
end

_M.ENTRY_SQL = [[
  SELECT row_to_json(e)::text AS body
  FROM (SELECT ]] .. ENTRY_COLUMNS .. [[
        FROM ]] .. FROM .. [[
        WHERE ul.user_id = $1 AND c.asin = $2 AND ul.removed_at IS NULL) AS s
  ]] .. ENTRY_LATERAL

_M.TITLE_SQL = [[
  SELECT row_to_json(t)::text AS body
  FROM (SELECT ]] .. _M.title_fields("c") .. [[ FROM title_catalog AS c WHERE c.asin = $1) AS t]]

-- ---- GET /api/library/facets ----

-- One facet: values with the number of matching entries holding them, most first, then
-- by name in library_order; at most `lim` of them. values: SQL yielding one column v per
-- value (unnest in the select list: a ProjectSet, a third cheaper than a lateral
-- function scan per row).
local function facet(values, lim)
  return [[(SELECT COALESCE(array_agg(row_to_json(f) ORDER BY f.count DESC, f.name COLLATE library_order), '{}')
      FROM (SELECT v AS name, count(*) AS count FROM (]] .. values .. [[) AS x
            WHERE v IS NOT NULL
            GROUP BY v ORDER BY count(*) DESC, v COLLATE library_order LIMIT ]] .. lim .. [[) AS f)]]
end
_M.facet = facet

-- The entries every figure counts (GET /api/me, the dashboard, the stats): not removed by
-- a sync and not hidden by the user (PATCH /api/library/:asin): a hidden entry is one the
-- user put out of sight, so it leaves the counts as it leaves the library page. Over
-- user_library AS ul.
_M.COUNTED = "ul.removed_at IS NULL AND NOT ul.hidden"
-- Of those, what the user owns: synced from the library or added by hand (MANUAL): the
-- Library tab's titles, the ones that have progress and listening time. A wishlist title
-- is neither.
_M.OWNED = _M.COUNTED .. " AND ul.source IN ('LIBRARY', 'MANUAL')"

-- {"finished","inProgress","notStarted"} over the rows of `from` (which has a progress
-- column): the dashboard's and the stats' split of the library.
function _M.progress_counts(from)
  return [[(SELECT row_to_json(x) FROM (
       SELECT count(*) FILTER (WHERE ]] .. progress_is("finished", "progress") .. [[) AS finished,
              count(*) FILTER (WHERE ]] .. progress_is("in_progress", "progress") .. [[) AS "inProgress",
              count(*) FILTER (WHERE ]] .. progress_is("not_started", "progress") .. [[) AS "notStarted"
       FROM ]] .. from .. [[) AS x)]]
end

function _M.facets_sql(user_id, p)
  local b = builder()
  local where, _, from = filters(b, user_id, p)
  local lim = b:arg(p.limit)
  local sql = [[
    WITH m AS MATERIALIZED (
      SELECT c.authors, c.narrators, c.series_name, c.categories, c.language
      FROM ]] .. from .. [[ WHERE ]] .. where .. [[)
    SELECT row_to_json(d)::text AS body FROM (SELECT
      ]] .. facet("SELECT unnest(authors) AS v FROM m", lim) .. [[ AS authors,
      ]] .. facet("SELECT unnest(narrators) AS v FROM m", lim) .. [[ AS narrators,
      ]] .. facet("SELECT series_name AS v FROM m", lim) .. [[ AS series,
      ]] .. facet("SELECT unnest(categories) AS v FROM m", lim) .. [[ AS categories,
      ]] .. facet("SELECT language AS v FROM m", lim) .. [[ AS languages,
      (SELECT count(*) FROM m) AS total
    ) AS d]]
  return sql, b.args
end

-- Runs a statement built here.
function _M.run(sql, args)
  return db.query(sql, unpack(args, 1, args.n))
end

return _M
