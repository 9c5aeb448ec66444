-- The browser extension's own files: the sync wire format ({"titles": [ITEM, ...]}, what
-- POST /api/sync/import takes) and its "download the JSON file" fallback
-- ({"titleCatalog": [...], "summary": {...}}), whose items use the wire names plus
-- status, progress, userRating and timeLeft. The download's exact shape is not in the
-- reference, so each of those is read both ways: status is a source ("LIBRARY",
-- "WISHLIST") or a listening state ("Finished"); progress a number or "37%"; timeLeft
-- ("5h 12m left") gives progress when the duration is known.
local norm = require("import_norm")

local type, upper, lower, match = type, string.upper, string.lower, string.match
local value, text = norm.value, norm.text

local _M = {
  format = "extension",
  json = { lists = { titles = "file", titleCatalog = "file" } },
  fields = {
    "asin", "title", "subtitle", "authors", "narrators", "seriesName", "seriesPosition",
    "seriesSequence", "duration", "length", "coverImageUrl", "summary", "rating",
    "ratingCount", "publisher", "releaseDate", "language", "categories", "source",
    "listeningProgress", "personalRating", "dateAdded", "status", "progress", "userRating",
    "timeLeft",
  },
}

function _M.json.match(key, item)
  return (key == "titles" or key == "titleCatalog") and type(item) == "table"
end

local SOURCES = { LIBRARY = "LIBRARY", WISHLIST = "WISHLIST" }

local function progress(it, minutes)
  local status = text(value(it.status))
  if status and (lower(status) == "finished" or lower(status) == "completed") then return 100 end
  local p = value(it.listeningProgress)
  if p == nil then p = value(it.progress) end
  if type(p) == "string" then p = match(p, "^%s*([%d%.]+)%s*%%?%s*$") end
  p = norm.progress(p)
  if p then return p end
  local left = norm.minutes(value(it.timeLeft))
  if left and minutes and minutes > 0 then
    return norm.progress((minutes - left) * 100 / minutes)
  end
  return nil
end

function _M.convert(it)
  local status = text(value(it.status))
  local source = text(value(it.source))
  source = SOURCES[source and upper(source) or ""] or SOURCES[status and upper(status) or ""]
  local minutes = norm.minutes(value(it.duration)) or norm.minutes(value(it.length))
  local seq = value(it.seriesSequence)
  local pos = value(it.seriesPosition)
  if seq == nil and type(pos) == "string" then seq = pos end
  local rating = norm.number(value(it.rating))
  return {
    asin = norm.asin(value(it.asin)),
    title = norm.name(value(it.title)),
    subtitle = norm.name(value(it.subtitle)),
    authors = norm.names(value(it.authors)),
    narrators = norm.names(value(it.narrators)),
    seriesName = norm.name(value(it.seriesName)),
    seriesPosition = norm.position(pos),
    seriesSequence = text(seq),
    duration = minutes,
    coverImageUrl = norm.cover(value(it.coverImageUrl)),
    summary = norm.plain(value(it.summary)),
    rating = rating and rating > 0 and rating or nil,
    ratingCount = norm.number(value(it.ratingCount)),
    publisher = norm.name(value(it.publisher)),
    releaseDate = text(value(it.releaseDate)),
    language = norm.language(value(it.language)),
    categories = norm.names(value(it.categories)),
    source = source,
    listeningProgress = progress(it, minutes),
    personalRating = norm.stars(value(it.personalRating) or value(it.userRating)),
    dateAdded = norm.datetime(value(it.dateAdded)),
  }
end

return _M
