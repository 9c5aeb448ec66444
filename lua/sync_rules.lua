-- sync_rules: what POST /api/sync/import accepts, as validate.lua rules. Edit a rule here
-- and the running server takes it on its next request (hot reload).
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
-- payload's names; CATALOG_COLUMNS maps them to title_catalog's columns.
local _M = {}

local types = require("types")

local function optional(rule)
  rule.invalid = "drop"
  return rule
end

local NAME = { type = "string", max_len = 200 }      -- one author / narrator
local CATEGORY = { type = "string", max_len = 200 }

_M.ITEM = {
  type = "object",
  in_place = true,      -- thousands per upload: cleaned in the decoded table, no copy
  fields = {
    -- An ASIN, ISBN-10 or 13-digit id (lua/types.lua); lower case is folded.
    asin = types.ASIN,
    title = { type = "string", required = true, max_len = 500 },
    source = { type = "string", required = true, upper = true, enum = { "LIBRARY", "WISHLIST" } },

    subtitle = optional { type = "string", max_len = 500 },
    authors = optional { type = "array", items = NAME, max_items = 100, compact = true, unique = true },
    narrators = optional { type = "array", items = NAME, max_items = 100, compact = true, unique = true },
    seriesName = optional { type = "string", max_len = 500 },
    seriesPosition = optional { type = "number", min = 0, max = 1000000, coerce = true },
    duration = optional { type = "integer", min = 1, max = 1000000, coerce = true, round = true },
    coverImageUrl = optional { type = "string", format = "http_url", max_len = 2048 },  -- types.URL
    summary = optional { type = "string", max_len = 50000 },
    rating = optional { type = "number", min = 0, max = 5, coerce = true },
    ratingCount = optional { type = "integer", min = 0, max = 2147483647, coerce = true },
    publisher = optional { type = "string", max_len = 500 },
    releaseDate = optional { type = "string", format = "date" },
    language = optional { type = "string", max_len = 50 },
    categories = optional { type = "array", items = CATEGORY, max_items = 100, compact = true,
                            unique = true },

    listeningProgress = optional { type = "integer", min = 0, max = 100, coerce = true,
                                   round = true },
    personalRating = optional { type = "integer", min = 1, max = 5, null_if = 0, coerce = true },
    dateAdded = optional { type = "string", format = "datetime" },
  },
}

-- The scalar columns of title_catalog an item sets: {column, item field}. A missing value
-- never erases a stored one (keep_on_null) except title, which is required anyway. The
-- arrays (authors, narrators, categories: same names) are handled by lua/sync_import.lua.
_M.CATALOG_SCALARS = {
  { "title", "title" }, { "subtitle", "subtitle" }, { "series_name", "seriesName" },
  { "series_position", "seriesPosition" }, { "duration", "duration" },
  { "cover_image_url", "coverImageUrl" }, { "summary", "summary" }, { "rating", "rating" },
  { "rating_count", "ratingCount" }, { "publisher", "publisher" },
  { "release_date", "releaseDate" }, { "language", "language" },
}
_M.CATALOG_ARRAYS = { "authors", "narrators", "categories" }

-- What clients send for a field they could not read (the extension sends "Unknown Title"
-- when it misses a row's title markup): never stored over a value, replaced by the first
-- real one. Compared exactly, after trimming.
_M.PLACEHOLDERS = { "Unknown Title", "Unknown Author", "Unknown Narrator", "Unknown" }

return _M
