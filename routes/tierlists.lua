-- Tier lists (DESIGN.md, API):
--   GET    /api/tierlists                  signed in: {"tierLists":[SUMMARY]} of the caller's
--                                          tier lists, most recently changed first
--   POST   /api/tierlists                  signed in: {"title", "description"?, "visibility"?,
--                                          "tierLabels"? (S A B C D F), "assignments"?}
--                                          -> 201 TIERLIST, Location: /api/tierlists/<id>
--   GET    /api/tierlists/:id              anyone, per visibility -> TIERLIST
--   PATCH  /api/tierlists/:id              owner: only the fields given -> TIERLIST
--   DELETE /api/tierlists/:id              owner -> 204
--   PUT    /api/tierlists/:id/assignments  owner: [{"asin","tier","position"}] replaces the
--                                          assignments -> TIERLIST
-- TIERLIST = {"id","title","description","visibility","assignmentCount","createdAt",
--   "updatedAt","tierLabels":[...],"owner":{"username"},"isOwner","assignments":[{"asin",
--   "tier","position","inLibrary","title":{catalog fields}}]}, assignments in label order,
--   then by position; "version" as for lists. SUMMARY = the same without owner, isOwner and
--   assignments, with "covers" (the first four titles, from the first tier down). Writes take
--   If-Match as lists' do (412 version_mismatch).
--
-- Rules: 1 to 20 labels of 1 to 50 characters (surrounding spaces trimmed), no label twice
-- (case matters: "S" and "s" are two labels). At most 500 assignments, each an ASIN of the
-- owner's library (a title a sync removed stays, "inLibrary": false, but is not added
-- anew), no ASIN twice, a tier that is one of the labels, a position >= 1 that no other
-- title of the same tier holds. A PATCH that drops or renames a label still used by
-- assignments is refused (422 tier_in_use) unless it sends the new "assignments" too: both
-- then apply in one transaction, which is how a tier is renamed.
local db = require("db")
local json = require("json")
local validate = require("validate")
local errors = require("errors")
local lc = require("lists_common")

local ipairs, tostring, format, concat = ipairs, tostring, string.format, table.concat
local null = json.null

local KIND = lc.KINDS.tierlist
local LIMITS = lc.LIMITS
local DEFAULT_LABELS = { "S", "A", "B", "C", "D", "F" }

-- ---- rules ----

local LABELS = { type = "array", min_items = 1, max_items = LIMITS.labels,
  items = { type = "string", max_len = LIMITS.label } }

local ASSIGNMENTS = { type = "array", max_items = LIMITS.items, items = {
  type = "object",
  fields = {
    asin = lc.ASIN,
    tier = { type = "string", required = true, max_len = LIMITS.label },
    position = { type = "integer", required = true, min = 1, max = LIMITS.position },
  },
} }

local CREATE = {
  type = "object", unknown = "reject",
  fields = {
    title = { type = "string", required = true, max_len = LIMITS.title },
    description = lc.DESCRIPTION,
    visibility = { type = "string", upper = true, enum = lc.VISIBILITIES, default = "PRIVATE" },
    tierLabels = LABELS,
    assignments = ASSIGNMENTS,
  },
}

local PATCH = {
  type = "object", unknown = "reject",
  fields = {
    title = lc.TITLE,
    description = lc.DESCRIPTION,
    visibility = lc.VISIBILITY,
    tierLabels = LABELS,
    assignments = ASSIGNMENTS,
  },
}
local PATCHABLE = { "title", "description", "visibility", "tierLabels" }
local NOT_NULL = { title = true, visibility = true, tierLabels = true }

-- Compiled at load time: a broken rule fails the reload, not a request.
for _, rule in ipairs{ LABELS, ASSIGNMENTS, CREATE, PATCH } do validate.compile(rule) end

local function root_path(i) return "[" .. (i - 1) .. "]" end
local function assignments_path(i) return "assignments[" .. (i - 1) .. "]" end

-- ---- SQL ----

local INSERT_TIERLIST = [[
  INSERT INTO tier_lists (user_id, title, description, visibility, tier_labels)
  VALUES ($1, $2, $3, $4::visibility_level, $5::text[]) RETURNING id]]

local UPDATE_TIERLIST = [[
  UPDATE tier_lists SET
    title       = CASE WHEN $2::boolean THEN $3::text ELSE title END,
    description = CASE WHEN $4::boolean THEN $5::text ELSE description END,
    visibility  = CASE WHEN $6::boolean THEN $7::visibility_level ELSE visibility END,
    tier_labels = CASE WHEN $8::boolean THEN $9::text[] ELSE tier_labels END
  WHERE id = $1]]

-- Labels the given ones leave out that assignments still use, with how many use them.
local ORPHANED_TIERS = [[
  SELECT a.tier, count(*)::int AS n
  FROM tier_assignments AS a
  WHERE a.tier_list_id = $1 AND NOT (a.tier = ANY ($2::text[]))
  GROUP BY a.tier ORDER BY a.tier]]

local CURRENT_ASSIGNMENTS = [[
  SELECT user_library_id, tier, position FROM tier_assignments WHERE tier_list_id = $1]]

local INSERT_ASSIGNMENTS = [[
  INSERT INTO tier_assignments (tier_list_id, user_id, user_library_id, tier, position)
  SELECT $1, $2, x.entry, x.tier, x.pos
  FROM unnest($3::uuid[], $4::text[], $5::int[]) AS x(entry, tier, pos)]]

-- ---- checks on the body alone ----

-- Labels named twice (case matters, as in the schema).
local function check_labels(labels, details)
  if not labels then return end
  local seen = {}
  for i, label in ipairs(labels) do
    if seen[label] then
      details[#details + 1] = { path = "tierLabels[" .. (i - 1) .. "]",
        message = format('"%s" is already tierLabels[%d]', label, seen[label] - 1) }
    else
      seen[label] = i
    end
  end
end

-- Assignments against `labels`: ASINs twice, tiers that are not labels, a position
-- taken twice within one tier.
local function check_assignments(assignments, labels, path, details)
  lc.duplicates(assignments, path, details)
  local is_label = {}
  for _, label in ipairs(labels) do is_label[label] = true end
  local taken = {}
  for i, a in ipairs(assignments) do
    if not is_label[a.tier] then
      details[#details + 1] = { path = path(i) .. ".tier",
        message = format('"%s" is not one of the labels (%s)', a.tier, concat(labels, ", ")) }
    else
      local key = a.tier .. "\0" .. a.position
      if taken[key] then
        details[#details + 1] = { path = path(i) .. ".position",
          message = format('position %d of tier "%s" is already taken by %s', a.position, a.tier,
            path(taken[key])) }
      else
        taken[key] = i
      end
    end
  end
end

-- ---- work ----

local function unchanged(current, ids, assignments)
  if #current ~= #ids then return false end
  local by_entry = {}
  for _, r in ipairs(current) do by_entry[r.user_library_id] = r end
  for i, id in ipairs(ids) do
    local r = by_entry[id]
    if not r or r.tier ~= assignments[i].tier or r.position ~= assignments[i].position then
      return false
    end
  end
  return true
end

-- Inside db.tx, the tier list locked and the assignments checked against its labels: the
-- assignments become `assignments`. A change marks the tier list updated.
local function replace_assignments(owner_id, list_id, assignments, path)
  local asins, tiers, positions = {}, json.array(), json.array()
  for i, a in ipairs(assignments) do
    asins[i], tiers[i], positions[i] = a.asin, a.tier, a.position
  end
  local ids = json.array(lc.resolve(KIND, owner_id, list_id, asins, path))
  if unchanged(db.query(CURRENT_ASSIGNMENTS, list_id), ids, assignments) then return false end
  db.query("DELETE FROM tier_assignments WHERE tier_list_id = $1", list_id)
  if #ids > 0 then
    local ok, err = db.try(INSERT_ASSIGNMENTS, list_id, owner_id, ids, tiers, positions)
    if not ok then lc.map_write_error(err, ids, path) end
  end
  db.query("UPDATE tier_lists SET items_revision = items_revision + 1 WHERE id = $1", list_id)
  return true
end

-- Inside db.tx: refuses new labels that leave assignments without their tier.
local function check_orphans(list_id, labels)
  local rows = db.query(ORPHANED_TIERS, list_id, json.array(labels))
  if #rows == 0 then return end
  local details = {}
  for _, r in ipairs(rows) do
    details[#details + 1] = { path = "tierLabels", message = format(
      '"%s" still holds %d %s: send "assignments" that move them in the same request',
      r.tier, r.n, r.n == 1 and "title" or "titles") }
  end
  errors.raise(422, "tier_in_use",
    "the new labels leave out tiers that assignments use: " .. validate.summary(details), details)
end

-- ---- handlers ----

local function index(ctx)
  return lc.respond(ctx, lc.object_text{ { "tierLists", lc.summaries(KIND, ctx.user.id, false) } })
end

local function create(ctx)
  local b = lc.check("invalid tier list", CREATE, lc.object_body(ctx))
  local labels = b.tierLabels or DEFAULT_LABELS
  local details = {}
  check_labels(b.tierLabels, details)
  if b.assignments then check_assignments(b.assignments, labels, assignments_path, details) end
  lc.refuse("invalid tier list", details)
  local user = ctx.user
  local id, body = db.tx(function()
    local list_id = db.one(INSERT_TIERLIST, user.id, b.title, b.description or null, b.visibility,
      json.array(labels)).id
    if b.assignments then replace_assignments(user.id, list_id, b.assignments, assignments_path) end
    lc.check_constraints()
    return list_id, lc.body(KIND, list_id, user)
  end)
  return lc.written(201, body, "/api/tierlists/" .. tostring(id))
end

local function show(ctx)
  local row = lc.for_read(KIND, ctx.params.id, ctx.user)
  return lc.respond(ctx, lc.body(KIND, row.id, ctx.user))
end

local function update(ctx)
  local raw = lc.object_body(ctx)
  local b = lc.check("invalid tier list", PATCH, raw)
  local details = {}
  local set = lc.patch_fields(raw, b, PATCHABLE, NOT_NULL, details)
  check_labels(b.tierLabels, details)
  lc.refuse("invalid tier list", details)
  local user = ctx.user
  local body = db.tx(function()
    local row = lc.for_write(KIND, ctx.params.id, user, ctx.req.headers["if-match"])
    local labels = b.tierLabels or
      db.one("SELECT tier_labels FROM tier_lists WHERE id = $1", row.id).tier_labels
    if b.assignments then
      check_assignments(b.assignments, labels, assignments_path, details)
      lc.refuse("invalid tier list", details)
    elseif b.tierLabels then
      check_orphans(row.id, labels)
    end
    local t, d, v, l = set.title, set.description, set.visibility, set.tierLabels
    db.query(UPDATE_TIERLIST, row.id,
      t ~= nil, t and t.value or null,
      d ~= nil, d and d.value or null,
      v ~= nil, v and v.value or null,
      l ~= nil, l and json.array(l.value) or null)
    if b.assignments then replace_assignments(user.id, row.id, b.assignments, assignments_path) end
    lc.check_constraints()
    return lc.body(KIND, row.id, user)
  end)
  return lc.written(200, body)
end

local function destroy(ctx)
  db.tx(function()
    local row = lc.for_write(KIND, ctx.params.id, ctx.user, ctx.req.headers["if-match"])
    db.query("DELETE FROM tier_lists WHERE id = $1", row.id)
  end)
  return 204
end

local function put_assignments(ctx)
  local assignments = lc.check("invalid assignments", ASSIGNMENTS, lc.array_body(ctx))
  local details = {}
  local user = ctx.user
  local body = db.tx(function()
    local row = lc.for_write(KIND, ctx.params.id, user, ctx.req.headers["if-match"])
    local labels = db.one("SELECT tier_labels FROM tier_lists WHERE id = $1", row.id).tier_labels
    check_assignments(assignments, labels, root_path, details)
    lc.refuse("invalid assignments", details)
    replace_assignments(user.id, row.id, assignments, root_path)
    lc.check_constraints()
    return lc.body(KIND, row.id, user)
  end)
  return lc.written(200, body)
end

return {
  { method = "GET",    path = "/api/tierlists",                 auth = "session",  handler = index },
  { method = "POST",   path = "/api/tierlists",                 auth = "session",  handler = create },
  { method = "GET",    path = "/api/tierlists/:id",             auth = "optional", handler = show },
  { method = "PATCH",  path = "/api/tierlists/:id",             auth = "session",  handler = update },
  { method = "DELETE", path = "/api/tierlists/:id",             auth = "session",  handler = destroy },
  { method = "PUT",    path = "/api/tierlists/:id/assignments", auth = "session",  handler = put_assignments },
}
