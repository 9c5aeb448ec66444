-- lists_common: what recommendation lists (routes/lists.lua) and tier lists
-- (routes/tierlists.lua) share: limits and field rules, body reading, who may see or change
-- a list, resolving ASINs to the owner's library entries, and the JSON the database builds.
--
--   local lc = require("lists_common")
--   local kind = lc.KINDS.list                       -- or lc.KINDS.tierlist
--   local b = lc.check("invalid list", rule, lc.object_body(ctx))  -- 400 / 415 / 422 otherwise
--   local row = lc.for_read(kind, ctx.params.id, ctx.user)        -- 404 unless visible
--   db.tx(function() local row = lc.for_write(kind, id, ctx.user) ... end)  -- 404 / 403
--   local entries = lc.resolve(kind, user_id, list_id, asins, paths)  -- 422 naming items
--
-- Visibility (DESIGN.md): PRIVATE is seen by its owner alone, and answers 404 to anyone
-- else, so its existence does not leak. UNLISTED is seen by anyone holding its id, PUBLIC
-- by anyone (and listed on the owner's public profile). A list of a deactivated account is
-- seen by no one else. Changing a list is for its owner: a list the caller may not see
-- answers 404, one the caller may see (UNLISTED, PUBLIC) answers 403 forbidden, as the
-- caller already knows it exists.
--
-- JSON is built by PostgreSQL (json_build_object, row_to_json), as the library reads do:
-- titles use library_query.title_fields, so a title in a list is byte for byte the title
-- of a library entry, and the body is a function of the data alone (stable ETags).
local _M = {}

local db = require("db")
local json = require("json")
local errors = require("errors")
local validate = require("validate")
local response = require("response")
local lq = require("library_query")

local type, ipairs, concat = type, ipairs, table.concat
local find, match, format = string.find, string.match, string.format
local null = json.null

-- ---- limits and field rules (an operator changes a rule here) ----

_M.LIMITS = {
  title = 200,            -- characters, as the schema checks them
  description = 2000,
  note = 2000,
  items = 500,            -- items of a list, assignments of a tier list
  labels = 20,            -- tier labels of a tier list
  label = 50,             -- characters of a tier label
  position = 2147483647,  -- a tier position is an integer column
}
local LIMITS = _M.LIMITS

_M.VISIBILITIES = { "PRIVATE", "UNLISTED", "PUBLIC" }

_M.TITLE = { type = "string", max_len = LIMITS.title }
_M.DESCRIPTION = { type = "string", max_len = LIMITS.description }
_M.VISIBILITY = { type = "string", upper = true, enum = _M.VISIBILITIES }
_M.ASIN = require("types").ASIN
_M.HANDLE = require("types").HANDLE

-- ---- the two kinds: fixed SQL names, never taken from a request ----

_M.KINDS = {
  list = {
    name = "list", table = "recommendation_lists", members = "list_items",
    member_fk = "list_id",
  },
  tierlist = {
    name = "tier list", table = "tier_lists", members = "tier_assignments",
    member_fk = "tier_list_id",
  },
}

-- ---- request bodies ----

local function first_char(body)
  local _, _, c = find(body or "", "^%s*(%S)")
  return c
end

-- The decoded JSON body, which must be an object ({...}): 400 malformed_json, 415, or 422.
-- (The decoder answers the same empty table for {} and [], so the text decides.)
function _M.object_body(ctx)
  local body = ctx:json_body()
  if type(body) ~= "table" or first_char(ctx.req.body) ~= "{" then
    errors.raise(422, "validation_failed", "the body must be a JSON object",
      { { path = "", message = "must be an object" } })
  end
  return body
end

-- The decoded JSON body, which must be an array ([...]).
function _M.array_body(ctx)
  local body = ctx:json_body()
  if type(body) ~= "table" or first_char(ctx.req.body) ~= "[" then
    errors.raise(422, "validation_failed", "the body must be a JSON array",
      { { path = "", message = "must be an array" } })
  end
  return body
end

-- Raises 422 validation_failed with details (a list of {path, message}) when there are any.
function _M.refuse(what, details)
  if details and #details > 0 then
    errors.raise(422, "validation_failed", what .. ": " .. validate.summary(details), details)
  end
end

-- validate.check(rule, value, path), raising 422 (prefixed by `what`) when refused.
function _M.check(what, rule, value, path)
  local cleaned, errs = validate.check(rule, value, path)
  if cleaned == nil and errs then _M.refuse(what, errs) end
  return cleaned
end

-- PATCH: for each name of `fields` present in raw (JSON null included), whether it is set
-- and its cleaned value (nil = NULL). Fields in `not_null` refuse null and "".
function _M.patch_fields(raw, cleaned, fields, not_null, details)
  local set = {}
  for _, name in ipairs(fields) do
    if raw[name] ~= nil then
      local v = cleaned[name]
      if v == nil and not_null[name] then
        details[#details + 1] = { path = name, message = "must not be null or empty" }
      end
      set[name] = { value = v }
    end
  end
  return set
end

-- ---- ids and access ----

-- The path's id as a UUID, or 404 (a malformed id names no list).
function _M.id_or_404(kind, id)
  local v = type(id) == "string" and validate.formats.uuid(id)
  if not v then errors.not_found(kind.name) end
  return v
end

local function visible_to(row, user)
  if user and row.user_id == user.id then return true end
  return row.visibility ~= "PRIVATE" and row.owner_status == "active"
end

-- A list's version: moves with every change of its fields (updated_at) or its members
-- (items_revision), so a writer that read version v can ask "only if it is still v".
local function version_sql(alias)
  return alias .. ".items_revision || '.' || floor(extract(epoch FROM " .. alias
    .. ".updated_at) * 1000000)::bigint"
end

local function access_sql(kind, lock)
  return "SELECT l.id, l.user_id, l.visibility::text AS visibility, u.status AS owner_status, "
    .. version_sql("l") .. " AS version"
    .. " FROM " .. kind.table .. " AS l JOIN users AS u ON u.id = l.user_id WHERE l.id = $1"
    .. (lock and " FOR UPDATE OF l" or "")
end

-- The list row {id, user_id, visibility} when `user` (nil: anonymous) may see it, else 404.
function _M.for_read(kind, id, user)
  id = _M.id_or_404(kind, id)
  local row = db.one(access_sql(kind, false), id)
  if not row or not visible_to(row, user) then errors.not_found(kind.name) end
  return row
end

-- The version an If-Match header names ('"v"', W/"v" or v), nil without one; "*" matches
-- any version.
local function wanted_version(header)
  if not header then return nil end
  local v = match(header, '^%s*W?/?"([^"]*)"%s*$') or match(header, "^%s*(%S+)%s*$")
  return v or header
end

-- Inside db.tx: the list row, locked, when `user` owns it; 404 when they may not see it,
-- 403 when they may see it but not change it. The lock serializes writers of one list.
-- if_match (the request's If-Match header, optional) names the version the writer read:
-- another version answers 412 version_mismatch, so an edit made elsewhere (another tab) is
-- never overwritten unknowingly. Its details carry the current version.
function _M.for_write(kind, id, user, if_match)
  id = _M.id_or_404(kind, id)
  local row = db.one(access_sql(kind, true), id)
  if not row or not visible_to(row, user) then errors.not_found(kind.name) end
  if row.user_id ~= user.id then
    errors.raise(403, "forbidden", "only the owner of this " .. kind.name .. " can change it")
  end
  local wanted = wanted_version(if_match)
  if wanted and wanted ~= "*" and wanted ~= row.version then
    errors.raise(412, "version_mismatch", "this " .. kind.name .. " changed since it was read"
      .. " (version " .. wanted .. ", now " .. row.version .. "): reload it, or send the current"
      .. " version to overwrite", { { path = "If-Match", message = "current version is " .. row.version } })
  end
  return row
end

-- The user row {id, username} behind a public profile, or nil: an unknown handle, a
-- PRIVATE profile and a deactivated account are told apart by no one.
local PROFILE_SQL = [[
  SELECT id, username FROM users
  WHERE lower(username) = lower($1) AND profile_visibility = 'PUBLIC' AND status = 'active']]

function _M.public_profile(username)
  if type(username) ~= "string" or not validate.check(_M.HANDLE, username) then return nil end
  return db.one(PROFILE_SQL, username)
end

-- ---- items: ASINs -> the owner's library entries ----

-- Duplicate ASINs in a cleaned list of items (item.asin), as details naming the later
-- occurrence: path(i) gives the path of item i ("[2]", "items[2]").
function _M.duplicates(items, path, details)
  local seen = {}
  for i, it in ipairs(items) do
    local first = seen[it.asin]
    if first then
      details[#details + 1] = { path = path(i) .. ".asin",
        message = it.asin .. " is already at " .. path(first) }
    else
      seen[it.asin] = i
    end
  end
end

-- Inside db.tx. The user's library entry id for each ASIN (in order). An entry a sync
-- removed (removed_at set) is accepted only when the list already holds it, so a list keeps
-- its removed titles across a reorder but cannot gain new ones. Raises 422
-- title_not_in_library naming every refused item (path(i) .. ".asin").
function _M.resolve(kind, user_id, list_id, asins, path)
  if #asins == 0 then return {} end
  local rows = db.query([[
    SELECT x.i, ul.id AS entry_id, ul.removed_at IS NOT NULL AS removed,
           EXISTS (SELECT 1 FROM ]] .. kind.members .. [[ AS m
                   WHERE m.]] .. kind.member_fk .. [[ = $3 AND m.user_library_id = ul.id) AS held
    FROM unnest($2::text[]) WITH ORDINALITY AS x(asin, i)
    LEFT JOIN title_catalog AS c ON c.asin = x.asin
    LEFT JOIN user_library AS ul ON ul.title_id = c.id AND ul.user_id = $1
    ORDER BY x.i]], user_id, json.array(asins), list_id or null)
  local ids, details = {}, {}
  for _, r in ipairs(rows) do
    local i = r.i
    if r.entry_id == null then
      details[#details + 1] = { path = path(i) .. ".asin",
        message = asins[i] .. " is not in your library" }
    elseif r.removed and not r.held then
      details[#details + 1] = { path = path(i) .. ".asin",
        message = asins[i] .. " was removed from your library by a sync: it stays in the lists"
          .. " that already hold it, but cannot be added to others" }
    else
      ids[i] = r.entry_id
    end
  end
  if #details > 0 then
    errors.raise(422, "title_not_in_library",
      format("%d %s not in your library: %s", #details, #details == 1 and "title is" or "titles are",
        validate.summary(details)), details)
  end
  return ids
end

-- Inside db.tx, after the writes: runs the deferred checks now (the unique position, the
-- tier label triggers), so a violation becomes a clean answer instead of a failed commit.
-- The Lua checks make this a backstop; it maps what the schema enforces.
function _M.check_constraints()
  local ok, err = db.try("SET CONSTRAINTS ALL IMMEDIATE")
  if ok then return end
  _M.map_write_error(err)
end

-- Raises the answer for a failed write of members (err: db.try's error table): 23503 (an
-- entry that is not the owner's) -> 422 title_not_in_library, naming the item when the key
-- in the detail is one of `ids` (the entry ids written, in item order; path(i) as for
-- resolve); 23514 tier not in labels -> 422 tier_in_use; anything else -> err itself (500).
-- The Lua checks come first, so this only answers what a concurrent change let through them.
function _M.map_write_error(err, ids, path)
  local sqlstate, constraint = err.sqlstate, err.constraint or ""
  if sqlstate == "23503" and find(constraint, "entry_owner", 1, true) then
    local entry = match(err.detail or "", "=%([%x-]+, ([%x-]+)%)")
    local details = {}
    for i, id in ipairs(ids or {}) do
      if id == entry then
        details[1] = { path = path(i) .. ".asin", message = "is not in your library" }
        break
      end
    end
    errors.raise(422, "title_not_in_library", "a title is not in your library", details)
  elseif sqlstate == "23514" and constraint == "tier_assignments_tier_in_labels" then
    errors.raise(422, "tier_in_use", "an assignment names a tier that is not one of the labels",
      { { path = "tierLabels", message = "a label that assignments still use was removed" } })
  end
  error(err, 0)
end

-- ---- JSON ----
--
-- row_to_json over rows whose columns carry the API's names (compact, keys in column order);
-- arrays of rows are array_agg(row_to_json(...)), which the outer row_to_json writes as a
-- JSON array ('{}' when empty: an empty array).

local iso = lq.iso

-- The title object of a member row whose catalog row is `c`.
local TITLE_JSON = "(SELECT row_to_json(t) FROM (SELECT " .. lq.title_fields("c") .. ") AS t)"

-- Who owns a list, as others may see it: the handle only, and only when the owner made
-- their profile public (a PRIVATE profile has no public identity).
local OWNER_JSON = [[(SELECT row_to_json(o) FROM (SELECT
    CASE WHEN u.profile_visibility = 'PUBLIC' THEN u.username END AS username) AS o)]]

local LIST_COUNT = [[(SELECT count(*) FROM list_items AS i WHERE i.list_id = l.id) AS "itemCount"]]
local TIER_COUNT = [[(SELECT count(*) FROM tier_assignments AS a
    WHERE a.tier_list_id = l.id) AS "assignmentCount"]]

-- The columns every list and tier list answer starts with.
local function common_columns(count)
  return "l.id, l.title, l.description, l.visibility, " .. count .. ", "
    .. iso("l.created_at") .. ' AS "createdAt", ' .. iso("l.updated_at") .. ' AS "updatedAt", '
    .. version_sql("l") .. " AS version"
end

-- An aggregate of JSON objects in a given order, as json[]: rows of `from_where` each give
-- object `obj` (a scalar subquery yielding json) and the sort keys `keys` (SQL over the
-- same rows, in ORDER BY form). Sort keys stay out of the objects.
local function agg(obj, keys, from_where)
  local ks, order = {}, {}
  for i, k in ipairs(keys) do
    ks[i] = k[1] .. " AS k" .. i
    order[i] = "m.k" .. i .. (k[2] and (" " .. k[2]) or "")
  end
  return "(SELECT COALESCE(array_agg(m.j ORDER BY " .. concat(order, ", ") .. "), '{}')"
    .. " FROM (SELECT " .. obj .. " AS j, " .. concat(ks, ", ") .. " " .. from_where .. ") AS m)"
end

local LIST_ITEMS = agg([[(SELECT row_to_json(r) FROM (SELECT i.position, c.asin, i.note,
      ul.removed_at IS NULL AS "inLibrary", ]] .. TITLE_JSON .. [[ AS title) AS r)]],
  { { "i.position" } }, [[
    FROM list_items AS i
    JOIN user_library AS ul ON ul.id = i.user_library_id
    JOIN title_catalog AS c ON c.id = ul.title_id
    WHERE i.list_id = l.id]])

local TIER_ASSIGNMENTS = agg([[(SELECT row_to_json(r) FROM (SELECT c.asin, a.tier, a.position,
      ul.removed_at IS NULL AS "inLibrary", ]] .. TITLE_JSON .. [[ AS title) AS r)]],
  { { "array_position(l.tier_labels, a.tier)" }, { "a.position" }, { "c.asin" } }, [[
    FROM tier_assignments AS a
    JOIN user_library AS ul ON ul.id = a.user_library_id
    JOIN title_catalog AS c ON c.id = ul.title_id
    WHERE a.tier_list_id = l.id]])

-- One list, whole: $1 = list id, $2 = the viewer's user id (NULL: anonymous).
_M.LIST_SQL = [[
  SELECT row_to_json(x)::text AS body FROM (
    SELECT ]] .. common_columns(LIST_COUNT) .. [[,
      ]] .. OWNER_JSON .. [[ AS owner,
      COALESCE(l.user_id = $2::uuid, false) AS "isOwner",
      ]] .. LIST_ITEMS .. [[ AS items
    FROM recommendation_lists AS l JOIN users AS u ON u.id = l.user_id
    WHERE l.id = $1) AS x]]

-- One tier list, whole. Assignments in label order, then by position (then ASIN).
_M.TIERLIST_SQL = [[
  SELECT row_to_json(x)::text AS body FROM (
    SELECT ]] .. common_columns(TIER_COUNT) .. [[,
      l.tier_labels AS "tierLabels",
      ]] .. OWNER_JSON .. [[ AS owner,
      COALESCE(l.user_id = $2::uuid, false) AS "isOwner",
      ]] .. TIER_ASSIGNMENTS .. [[ AS assignments
    FROM tier_lists AS l JOIN users AS u ON u.id = l.user_id
    WHERE l.id = $1) AS x]]

-- Summaries of a user's lists, most recently changed first: $1 = user id, $2 = true for
-- PUBLIC ones only (a profile), false for all (the owner's index). The JSON array's text.
local function summaries_sql(from, columns)
  return "SELECT array_to_json(" .. agg("(SELECT row_to_json(r) FROM (SELECT " .. columns .. ") AS r)",
    { { "l.updated_at", "DESC" }, { "l.id", "DESC" } },
    "FROM " .. from .. " AS l WHERE l.user_id = $1 AND (NOT $2::boolean OR l.visibility = 'PUBLIC')")
    .. ")::text AS body"
end

-- A summary's cover strip: its first COVERS members as {"asin","title","coverImageUrl"}
-- (a list in its order, a tier list from its first tier down).
local COVERS = 4
local function covers_sql(members, where, order)
  return "(SELECT COALESCE(json_agg(json_build_object('asin', m.asin, 'title', m.title,"
    .. " 'coverImageUrl', m.cover_image_url) ORDER BY m.o), '[]') FROM (SELECT c.asin, c.title,"
    .. " c.cover_image_url, " .. order .. " AS o FROM " .. members .. " AS i"
    .. " JOIN user_library AS ul ON ul.id = i.user_library_id"
    .. " JOIN title_catalog AS c ON c.id = ul.title_id"
    .. " WHERE " .. where .. " ORDER BY 4 LIMIT " .. COVERS .. ") AS m) AS covers"
end

local LIST_SUMMARY = common_columns(LIST_COUNT) .. ", "
  .. covers_sql("list_items", "i.list_id = l.id", "i.position")
local TIERLIST_SUMMARY = common_columns(TIER_COUNT) .. ', l.tier_labels AS "tierLabels", '
  .. covers_sql("tier_assignments", "i.tier_list_id = l.id",
    "array_position(l.tier_labels, i.tier) * 2147483648::bigint + i.position")

_M.LIST_SUMMARIES_SQL = summaries_sql("recommendation_lists", LIST_SUMMARY)
_M.TIERLIST_SUMMARIES_SQL = summaries_sql("tier_lists", TIERLIST_SUMMARY)

-- One summary with its owner (as others see it): $1 = id.
local function summary_sql(from, columns)
  return "SELECT row_to_json(r)::text AS body FROM (SELECT " .. columns .. ", " .. OWNER_JSON
    .. " AS owner FROM " .. from .. " AS l JOIN users AS u ON u.id = l.user_id WHERE l.id = $1) AS r"
end
local SUMMARY_SQL = {
  [_M.KINDS.list] = summary_sql("recommendation_lists", LIST_SUMMARY),
  [_M.KINDS.tierlist] = summary_sql("tier_lists", TIERLIST_SUMMARY),
}

-- The summary (decoded, with "owner") of the list `id` when `viewer` (nil: anonymous) may
-- see it, else nil: what a link preview shows (routes/pages.lua).
function _M.summary(kind, id, viewer)
  local ok, row = pcall(_M.for_read, kind, id, viewer)
  if not ok then
    if type(row) == "table" and row.status == 404 then return nil end
    error(row, 0)
  end
  return json.decode(db.one(SUMMARY_SQL[kind], row.id).body), row
end

-- The JSON text of one list or tier list as `viewer` (nil: anonymous) sees it.
function _M.body(kind, id, viewer)
  local sql = kind == _M.KINDS.list and _M.LIST_SQL or _M.TIERLIST_SQL
  local row = db.one(sql, id, viewer and viewer.id or null)
  if not row then errors.not_found(kind.name) end
  return row.body
end

-- The JSON text ([...]) of the summaries of a user's lists or tier lists (PUBLIC ones only
-- when public_only), most recently changed first.
function _M.summaries(kind, user_id, public_only)
  local sql = kind == _M.KINDS.list and _M.LIST_SUMMARIES_SQL or _M.TIERLIST_SUMMARIES_SQL
  return db.one(sql, user_id, public_only and true or false).body
end

-- Joins JSON texts into an object text: pairs = {{"key", "json text"}, ...}, in order.
function _M.object_text(pairs_list)
  local parts = {}
  for i, p in ipairs(pairs_list) do parts[i] = json.encode(p[1]) .. ":" .. p[2] end
  return "{" .. concat(parts, ",") .. "}"
end

-- A read answer (ETag, 304) and a write answer (no-store).
_M.respond = response.conditional

function _M.written(status, body, location)
  return response.json(status, body, location and { Location = location } or nil)
end

return _M
