-- Libation's library export, as JSON (C# property names) or CSV (its [Name] headers,
-- delimited by the OS list separator: "," or ";", with culture-formatted dates and
-- decimals). Library only; progress is only "finished" or unknown. Reference:
-- audible-formats.md, section 3. Headers are matched case- and punctuation-blind, so
-- "Is Finished?", "IsFinished" and "isfinished" are one column.
local norm = require("import_norm")

local type, find, sub, match = type, string.find, string.sub, string.match
local text = norm.text

local _M = {
  format = "libation",
  flat = true,
  json = { lists = { [""] = "LIBRARY" } },
  fields = {
    "AudibleProductId", "Title", "Subtitle", "AuthorNames", "NarratorNames", "LengthInMinutes",
    "Description", "Publisher", "SeriesNames", "SeriesOrder", "CommunityRatingOverall",
    "PictureId", "DatePublished", "CategoriesNames", "MyRatingOverall", "Language",
    "IsFinished", "DateAdded", "Locale",
  },
}

function _M.json.match(key, item)
  return key == "" and type(item) == "table" and item.AudibleProductId ~= nil
end

_M.csv = {}
function _M.csv.match(columns)
  return columns.audibleproductid ~= nil
end

-- "2.5 : The Saltmarsh Cycle, 1 : Other" -> "The Saltmarsh Cycle", "2.5". Names may hold
-- ", ", so the first entry ends where the next "<sequence> : " begins.
local function first_series(order, names)
  order = text(order)
  if order then
    local seq, rest = match(order, "^(.-)%s+:%s+(.+)$")
    if seq then
      local cut = find(rest, ", [^,:]- : ")
      return cut and sub(rest, 1, cut - 1) or rest, seq
    end
  end
  names = text(names)
  if names then
    local cut = find(names, ", ", 1, true)
    return cut and sub(names, 1, cut - 1) or names, nil
  end
  return nil
end

function _M.convert(it)
  local sname, seq = first_series(it.seriesorder, it.seriesnames)
  local rating = norm.number(it.communityratingoverall)
  return {
    asin = norm.asin(it.audibleproductid),
    title = norm.name(it.title),
    subtitle = norm.name(it.subtitle),
    authors = norm.names(it.authornames or it.authors),
    narrators = norm.names(it.narratornames or it.narrators),
    seriesName = norm.name(sname),
    seriesPosition = norm.position(seq),
    seriesSequence = text(seq),
    duration = norm.minutes(it.lengthinminutes),
    coverImageUrl = norm.cover(it.pictureid or it.coverid),
    summary = norm.plain(it.description),
    rating = rating and rating > 0 and norm.rating(rating) or nil,
    publisher = norm.name(it.publisher),
    releaseDate = norm.date(it.datepublished),
    language = norm.language(it.language),
    categories = norm.names(it.categoriesnames or it.categories, "; "),
    listeningProgress = norm.progress(nil, it.isfinished),
    personalRating = norm.stars(it.myratingoverall),
    dateAdded = norm.datetime(it.dateadded or it.dateaddedtolibrary),
  }
end

return _M
