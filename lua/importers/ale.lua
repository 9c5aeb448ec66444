-- Audible Library Extractor (a browser extension that scrapes the store's pages): its
-- raw data JSON ({"books": [...], "wishlist": [...], ...}) and its spreadsheet CSV
-- (startCase headers, "Google Sheets" cells like =HYPERLINK("url";"Title") and '4.7).
-- ALE has no real date added. Reference: audible-formats.md, section 4.
local norm = require("import_norm")

local type, ipairs, tostring = type, ipairs, tostring
local match, gsub, lower, find, sub = string.match, string.gsub, string.lower, string.find, string.sub
local text, value = norm.text, norm.value

local _M = {
  format = "ale",
  json = { lists = { books = "LIBRARY", wishlist = "WISHLIST" } },
  fields = {
    "asin", "title", "titleShort", "subtitle", "authors", "narrators", "series", "length",
    "progress", "myRating", "rating", "ratings", "releaseDate", "publishers", "categories",
    "language", "summary", "blurb", "cover", "bookNumbers",
  },
}

function _M.json.match(key, item)
  return (key == "books" or key == "wishlist") and type(item) == "table" and item.asin ~= nil
end

_M.csv = {}
function _M.csv.match(columns)
  return columns.asin ~= nil and (columns.booknumbers ~= nil or columns.titleshort ~= nil)
end

-- A spreadsheet cell's value: =HYPERLINK("url";"text") -> text, '4.7 -> 4.7.
local function cell(v)
  v = text(v)
  if not v then return nil end
  if find(v, "^=") then
    local last
    for s in string.gmatch(v, '"([^"]*)"') do last = s end
    return text(last)
  end
  return (gsub(v, "^'", ""))
end

-- Progress from "Finished", "5h 12m left" and the length, or a number.
local function progress(p, minutes)
  p = value(p)
  if type(p) == "number" then return norm.progress(p) end
  p = cell(p)
  if not p then return nil end
  if lower(p) == "finished" then return 100 end
  local left = find(lower(p), "left", 1, true) and norm.minutes(p)
  if left and minutes and minutes > 0 then
    return norm.progress((minutes - left) * 100 / minutes)
  end
  return nil
end

local function json_series(list)
  if type(list) ~= "table" or type(list[1]) ~= "table" then return nil end
  local s = list[1]
  local nums = value(s.bookNumbers)
  local seq = type(nums) == "table" and nums[1] or nums
  return s.name, seq ~= nil and tostring(seq) or nil
end

local function names_of(list)
  if type(list) ~= "table" then return nil end
  local out = {}
  for _, x in ipairs(list) do out[#out + 1] = type(x) == "table" and x.name or x end
  return out
end

local function from_json(it)
  local minutes = norm.minutes(value(it.length))
  local sname, seq = json_series(value(it.series))
  local publishers = names_of(value(it.publishers))
  local rating = norm.number(value(it.rating))
  local count = norm.number(value(it.ratings))
  return {
    asin = norm.asin(value(it.asin)),
    title = norm.name(value(it.titleShort)) or norm.name(value(it.title)),
    subtitle = norm.name(value(it.subtitle)),
    authors = norm.names(value(it.authors)),
    narrators = norm.names(value(it.narrators)),
    seriesName = norm.name(sname),
    seriesPosition = seq ~= "∞" and norm.position(seq) or nil,
    seriesSequence = text(seq),
    duration = minutes,
    coverImageUrl = norm.cover(value(it.cover)),
    summary = norm.plain(value(it.summary)) or norm.plain(value(it.blurb)),
    rating = norm.rating(rating, count),
    ratingCount = count,
    publisher = publishers and norm.name(publishers[1]) or nil,
    releaseDate = text(value(it.releaseDate)),
    language = norm.language(value(it.language)),
    categories = norm.names(names_of(value(it.categories))),
    listeningProgress = progress(it.progress, minutes),
    personalRating = norm.stars(value(it.myRating)),
  }
end

-- "Name (book 1, 2), Other" -> "Name"; Book Numbers "1, 2" -> "1".
local function csv_series(series, numbers)
  series = cell(series)
  local name = series and (match(series, "^(.-)%s*%(") or match(series, "^([^,]+)")) or nil
  numbers = cell(numbers)
  local seq = numbers and (match(numbers, "^([^,]+)") or numbers) or nil
  return name, seq
end

local function from_csv(it)
  local minutes = norm.minutes(cell(it.length))
  local sname, seq = csv_series(it.series, it.booknumbers)
  local summary = cell(it.summary)
  if summary then summary = gsub(summary, "undefined", "\n") end   -- ALE's lost newlines
  local count = norm.number(cell(it.ratings))
  local publishers = cell(it.publishers)
  return {
    asin = norm.asin(cell(it.asin)),
    title = norm.name(cell(it.titleshort)) or norm.name(cell(it.title)),
    subtitle = norm.name(cell(it.subtitle)),
    authors = norm.names(cell(it.authors)),
    narrators = norm.names(cell(it.narrators)),
    seriesName = norm.name(sname),
    seriesPosition = seq ~= "∞" and norm.position(seq) or nil,
    seriesSequence = text(seq),
    duration = minutes,
    coverImageUrl = norm.cover(cell(it.cover)),
    summary = norm.plain(summary) or norm.plain(cell(it.blurb)),
    rating = norm.rating(cell(it.rating), count),
    ratingCount = count,
    publisher = publishers and norm.name(match(publishers, "^([^,]+)")) or nil,
    releaseDate = cell(it.releasedate),
    language = norm.language(cell(it.language)),
    categories = norm.names(cell(it.categories), " > "),
    listeningProgress = progress(it.progress, minutes),
    personalRating = norm.stars(cell(it.myrating)),
  }
end

function _M.convert(it, ctx)
  if ctx.kind == "csv" then return from_csv(it) end
  return from_json(it)
end

-- A spreadsheet does not say library or wishlist; progress or a rating of one's own
-- only exists in a library.
function _M.evidence(it)
  return text(it.progress) ~= nil and text(it.progress) ~= "0" or text(it.myrating) ~= nil
end
_M.default_source = "LIBRARY"

return _M
