-- sync_rules: what POST /api/sync/import accepts, as validate.lua rules, and the catalog's
-- fields. Edit a rule here and the running server takes it on its next request (hot
-- reload). The import runs ITEM in C (host.bulk, core/bulk.c, compiled from this table on
-- its first request after a reload); a rule key or value the C runner does not implement
-- is logged ("the Lua validator runs ITEM") and the import keeps validate.lua, so an edit
-- here never needs C.
--
-- Taken from the data model (../shared/seeds/000_*.txt, "Validation Rules") and kept at
-- least as strict as the CHECK constraints of sql/001_init.sql, so an item that passes
-- here can never fail the import statement (which would fail the whole sync).
--
-- Policy (DESIGN.md, "Sync contract"):
--   * asin, title and source are required: an item without a valid one is skipped with a
--     warning naming its index, ASIN and reason.
--   * every other field is optional, and `invalid = "drop"`: a bad value (a rating of 7, a
--     malformed date) is dropped with a warning and the title is still imported. Skipping
--     the whole title instead would mark its library entry removed, a far worse outcome
--     for one unreadable field.
--   * the catalog is shared: a payload fills a blank field of a stored title, never
--     overwrites one (lua/sync_import.lua); an absent field (or null, or "") never erases
--     what the catalog knows. PLACEHOLDERS below count as blank, on both sides.
--   * authors / narrators / categories arrive as arrays; empty ones mean "unknown" (the
--     extension sends [] when a page does not show them) and keep the stored ones.
--   * personalRating 0 means "not rated" (stored as NULL); listeningProgress is 0..100,
--     a fractional percentage is rounded.
-- Items are cleaned in place (in_place: thousands per upload, no copy) and keep the
-- payload's names; CATALOG_FIELDS maps them to title_catalog's columns.
local _M = {}

local types = require("types")

local ipairs, pairs = ipairs, pairs

-- A copy of rule whose invalid value is dropped, not fatal (shared rules stay untouched).
local function optional(rule)
  local copy = { invalid = "drop" }
  for k, v in pairs(rule) do
    if k ~= "invalid" then copy[k] = v end
  end
  return copy
end

local NAME = { type = "string", max_len = 200 }      -- one author / narrator
local CATEGORY = { type = "string", max_len = 200 }
local function names(item) return { type = "array", items = item, max_items = 100, compact = true, unique = true } end

-- ---- the catalog's fields: the one place a catalog column is named ----
--
-- One row per title_catalog column besides asin and id, in the API's order:
--   json    the name in sync payloads and API answers ("seriesName")
--   column  the column of title_catalog ("series_name")
--   rule    what a sync accepts for it (validate.lua); nil: a sync never sets it (a field
--           only the enrichment fills)
--   provider what the enrichment accepts from the metadata provider (default: rule); the
--           enrichment's merge (lua/enrichment.lua) writes every field that has one of the two
--   array   true for a list of names (a NOT NULL text[] column; empty means unknown)
--   api     false: left out of API answers (default: shown)
-- From this table come the item rules (ITEM below), the import's columns, row builder and
-- comparisons (lua/sync_import.lua), and the title every API answer shows
-- (lua/library_query.lua title_fields / ENTRY_COLUMNS). Adding a catalog column is a
-- migration and one row here (README, "Adding a catalog field").
_M.CATALOG_FIELDS = {
  { json = "title", column = "title", rule = { type = "string", required = true, max_len = 500 } },
  { json = "subtitle", column = "subtitle", rule = optional { type = "string", max_len = 500 } },
  { json = "authors", column = "authors", array = true, rule = optional(names(NAME)) },
  { json = "narrators", column = "narrators", array = true, rule = optional(names(NAME)) },
  { json = "seriesName", column = "series_name", rule = optional { type = "string", max_len = 500 } },
  { json = "seriesPosition", column = "series_position",
    rule = optional { type = "number", min = 0, max = 1000000, coerce = true } },
  -- the position as the source wrote it ("1-3", "Book 2"): seriesPosition is read from it
  { json = "seriesSequence", column = "series_sequence", rule = optional { type = "string", max_len = 100 } },
  { json = "duration", column = "duration",
    rule = optional { type = "integer", min = 1, max = 1000000, coerce = true, round = true } },
  { json = "coverImageUrl", column = "cover_image_url", rule = optional(types.URL) },
  { json = "summary", column = "summary", rule = optional { type = "string", max_len = 50000 } },
  { json = "rating", column = "rating", rule = optional { type = "number", min = 0, max = 5, coerce = true } },
  { json = "ratingCount", column = "rating_count",
    rule = optional { type = "integer", min = 0, max = 2147483647, coerce = true } },
  { json = "publisher", column = "publisher", rule = optional { type = "string", max_len = 500 } },
  { json = "releaseDate", column = "release_date", rule = optional { type = "string", format = "date" } },
  { json = "language", column = "language", rule = optional { type = "string", max_len = 50 } },
  { json = "categories", column = "categories", array = true, rule = optional(names(CATEGORY)) },
}

-- ---- one uploaded title ----

-- The library entry's own fields (user_library), besides the catalog's.
local ENTRY_FIELDS = {
  listeningProgress = optional { type = "integer", min = 0, max = 100, coerce = true, round = true },
  personalRating = optional { type = "integer", min = 1, max = 5, null_if = 0, coerce = true },
  dateAdded = optional { type = "string", format = "datetime" },
}

local function item_rule()
  local fields = {
    -- An ASIN, ISBN-10 or 13-digit id (lua/types.lua); lower case is folded.
    asin = types.ASIN,
    source = { type = "string", required = true, upper = true, enum = { "LIBRARY", "WISHLIST" } },
  }
  for name, rule in pairs(ENTRY_FIELDS) do fields[name] = rule end
  for _, f in ipairs(_M.CATALOG_FIELDS) do
    if f.rule then fields[f.json] = f.rule end
  end
  return {
    type = "object",
    in_place = true,    -- thousands per upload: cleaned in the decoded table, no copy
    fields = fields,
  }
end
_M.ITEM = item_rule()

-- What clients send for a field they could not read (the extension sends "Unknown Title"
-- when it misses a row's title markup): never stored over a value, replaced by the first
-- real one. Compared exactly, after trimming.
_M.PLACEHOLDERS = { "Unknown Title", "Unknown Author", "Unknown Narrator", "Unknown" }

return _M
