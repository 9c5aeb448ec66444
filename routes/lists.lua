-- Recommendation lists (DESIGN.md, API):
--   GET    /api/lists            signed in: {"lists":[SUMMARY]} of the caller's lists, every
--                                visibility, most recently changed first
--   POST   /api/lists            signed in: {"title", "description"?, "visibility"?, "items"?}
--                                -> 201 LIST, Location: /api/lists/<id>
--   GET    /api/lists/:id        anyone, per visibility (lua/lists_common.lua) -> LIST
--   PATCH  /api/lists/:id        owner: only the fields given ("description": null clears
--                                it; "items" replaces the items as PUT does) -> LIST
--   DELETE /api/lists/:id        owner -> 204
--   PUT    /api/lists/:id/items  owner: [{"asin", "note"?}] replaces the items, in this
--                                order (positions 1..n) -> LIST
-- LIST = {"id","title","description","visibility","itemCount","createdAt","updatedAt",
--         "version","owner":{"username"},"isOwner","items":[{"position","asin","note",
--         "inLibrary","title":{catalog fields}}]}; SUMMARY = the same without owner, isOwner
--         and items, with "covers": the first four titles as {"asin","title","coverImageUrl"}.
--
-- Writes (PATCH, PUT, DELETE) may send `If-Match: "<version>"`: when the list has changed
-- since that version was read, they answer 412 version_mismatch and change nothing.
--
-- Items: at most 500, each an ASIN of the owner's library (a title a sync removed stays,
-- with "inLibrary": false, but cannot be added anew), no ASIN twice, notes of at most 2,000
-- characters ("" or null: no note). Other fields of an item are ignored, so a client may
-- send back the items it read, reordered. Every write is one transaction under a lock on
-- the list row; a PUT that changes nothing leaves updatedAt alone.
local db = require("db")
local json = require("json")
local lc = require("lists_common")
local validate = require("validate")

local ipairs = ipairs
local null = json.null

local KIND = lc.KINDS.list
local LIMITS = lc.LIMITS

-- ---- rules ----

local ITEMS = { type = "array", max_items = LIMITS.items, items = {
  type = "object",
  fields = {
    asin = lc.ASIN,
    note = { type = "string", max_len = LIMITS.note },
  },
} }

local CREATE = {
  type = "object", unknown = "reject",
  fields = {
    title = { type = "string", required = true, max_len = LIMITS.title },
    description = lc.DESCRIPTION,
    visibility = { type = "string", upper = true, enum = lc.VISIBILITIES, default = "PRIVATE" },
    items = ITEMS,
  },
}

local PATCH = {
  type = "object", unknown = "reject",
  fields = {
    title = lc.TITLE,
    description = lc.DESCRIPTION,
    visibility = lc.VISIBILITY,
    items = ITEMS,
  },
}
local PATCHABLE = { "title", "description", "visibility" }
local NOT_NULL = { title = true, visibility = true }

-- Compiled at load time: a broken rule fails the reload, not a request.
for _, rule in ipairs{ ITEMS, CREATE, PATCH } do validate.compile(rule) end

local function root_path(i) return "[" .. (i - 1) .. "]" end
local function items_path(i) return "items[" .. (i - 1) .. "]" end

-- ---- SQL ----

local INSERT_LIST = [[
  INSERT INTO recommendation_lists (user_id, title, description, visibility)
  VALUES ($1, $2, $3, $4::visibility_level) RETURNING id]]

local UPDATE_LIST = [[
  UPDATE recommendation_lists SET
    title       = CASE WHEN $2::boolean THEN $3::text ELSE title END,
    description = CASE WHEN $4::boolean THEN $5::text ELSE description END,
    visibility  = CASE WHEN $6::boolean THEN $7::visibility_level ELSE visibility END
  WHERE id = $1]]

local CURRENT_ITEMS = [[
  SELECT user_library_id, note, position FROM list_items WHERE list_id = $1 ORDER BY position]]

local INSERT_ITEMS = [[
  INSERT INTO list_items (list_id, user_id, user_library_id, position, note)
  SELECT $1, $2, x.entry, x.pos, x.note
  FROM unnest($3::uuid[], $4::text[]) WITH ORDINALITY AS x(entry, note, pos)]]

-- ---- work ----

-- Refuses a body whose items name an ASIN twice (before any database work).
local function check_items(items, path)
  local details = {}
  if items then lc.duplicates(items, path, details) end
  lc.refuse("invalid items", details)
end

local function unchanged(current, ids, notes)
  if #current ~= #ids then return false end
  for i, r in ipairs(current) do
    if r.user_library_id ~= ids[i] or r.note ~= notes[i] or r.position ~= i then return false end
  end
  return true
end

-- Inside db.tx, the list locked: the list's items become `items` (cleaned), in order.
-- Returns whether anything changed; a change marks the list updated.
local function replace_items(owner_id, list_id, items, path)
  local asins, notes = {}, json.array()
  for i, it in ipairs(items) do
    asins[i] = it.asin
    notes[i] = it.note or null
  end
  local ids = json.array(lc.resolve(KIND, owner_id, list_id, asins, path))
  if unchanged(db.query(CURRENT_ITEMS, list_id), ids, notes) then return false end
  db.query("DELETE FROM list_items WHERE list_id = $1", list_id)
  if #ids > 0 then
    local ok, err = db.try(INSERT_ITEMS, list_id, owner_id, ids, notes)
    if not ok then lc.map_write_error(err, ids, path) end
  end
  db.query("UPDATE recommendation_lists SET items_revision = items_revision + 1 WHERE id = $1", list_id)
  lc.check_constraints()
  return true
end

-- ---- handlers ----

local function index(ctx)
  return lc.respond(ctx, lc.object_text{ { "lists", lc.summaries(KIND, ctx.user.id, false) } })
end

local function create(ctx)
  local b = lc.check("invalid list", CREATE, lc.object_body(ctx))
  check_items(b.items, items_path)
  local user = ctx.user
  local id, body = db.tx(function()
    local list_id = db.one(INSERT_LIST, user.id, b.title, b.description or null, b.visibility).id
    if b.items then replace_items(user.id, list_id, b.items, items_path) end
    return list_id, lc.body(KIND, list_id, user)
  end)
  return lc.written(201, body, "/api/lists/" .. id)
end

local function show(ctx)
  local row = lc.for_read(KIND, ctx.params.id, ctx.user)
  return lc.respond(ctx, lc.body(KIND, row.id, ctx.user))
end

local function update(ctx)
  local raw = lc.object_body(ctx)
  local b = lc.check("invalid list", PATCH, raw)
  local details = {}
  local set = lc.patch_fields(raw, b, PATCHABLE, NOT_NULL, details)
  lc.refuse("invalid list", details)
  check_items(b.items, items_path)
  local user = ctx.user
  local body = db.tx(function()
    local row = lc.for_write(KIND, ctx.params.id, user, ctx.req.headers["if-match"])
    local t, d, v = set.title, set.description, set.visibility
    db.query(UPDATE_LIST, row.id,
      t ~= nil, t and t.value or null,
      d ~= nil, d and d.value or null,
      v ~= nil, v and v.value or null)
    if b.items then replace_items(user.id, row.id, b.items, items_path) end
    return lc.body(KIND, row.id, user)
  end)
  return lc.written(200, body)
end

local function destroy(ctx)
  db.tx(function()
    local row = lc.for_write(KIND, ctx.params.id, ctx.user, ctx.req.headers["if-match"])
    db.query("DELETE FROM recommendation_lists WHERE id = $1", row.id)
  end)
  return 204
end

local function put_items(ctx)
  local items = lc.check("invalid items", ITEMS, lc.array_body(ctx))
  check_items(items, root_path)
  local user = ctx.user
  local body = db.tx(function()
    local row = lc.for_write(KIND, ctx.params.id, user, ctx.req.headers["if-match"])
    replace_items(user.id, row.id, items, root_path)
    return lc.body(KIND, row.id, user)
  end)
  return lc.written(200, body)
end

return {
  { method = "GET",    path = "/api/lists",           auth = "session",  handler = index },
  { method = "POST",   path = "/api/lists",           auth = "session",  handler = create },
  { method = "GET",    path = "/api/lists/:id",       auth = "optional", handler = show },
  { method = "PATCH",  path = "/api/lists/:id",       auth = "session",  handler = update },
  { method = "DELETE", path = "/api/lists/:id",       auth = "session",  handler = destroy },
  { method = "PUT",    path = "/api/lists/:id/items", auth = "session",  handler = put_items },
}
