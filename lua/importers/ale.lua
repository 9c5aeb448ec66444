-- Audible Library Extractor (a browser extension that scrapes the store's pages): its
-- raw data JSON ({"books": [...], "wishlist": [...], ...}) and its spreadsheet CSV
-- (startCase headers, "Google Sheets" cells like =HYPERLINK("url";"Title") and '4.7).
-- ALE has no real date added. Reference: audible-formats.md, section 4.
local norm = require("import_norm")

local type, ipairs, tostring = type, ipairs, tostring
local match, gsub, lower, find = string.match, string.gsub, string.lower, string.find
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

-- The item from the fields both exports have, once read from either shape.
local function book(f)
  local minutes = norm.minutes(f.length)
  local seq = text(f.seq)
  local count = norm.number(f.ratings)
  return {
    asin = norm.asin(f.asin),
    title = norm.name(f.titleShort) or norm.name(f.title),
    subtitle = norm.name(f.subtitle),
    authors = norm.names(f.authors),
    narrators = norm.names(f.narrators),
    seriesName = norm.name(f.series),
    seriesPosition = seq ~= "∞" and norm.position(seq) or nil,
    seriesSequence = seq,
    duration = minutes,
    coverImageUrl = norm.cover(f.cover),
    summary = norm.plain(f.summary) or norm.plain(f.blurb),
    rating = norm.rating(f.rating, count),
    ratingCount = count,
    publisher = norm.name(f.publisher),
    releaseDate = text(f.releaseDate),
    language = norm.language(f.language),
    categories = norm.names(f.categories, " > "),
    listeningProgress = progress(f.progress, minutes),
    personalRating = norm.stars(f.myRating),
  }
end

local function from_json(it)
  local sname, seq = json_series(value(it.series))
  local publishers = names_of(value(it.publishers))
  return book {
    asin = value(it.asin), title = value(it.title), titleShort = value(it.titleShort),
    subtitle = value(it.subtitle), authors = value(it.authors), narrators = value(it.narrators),
    series = sname, seq = seq, length = value(it.length), cover = value(it.cover),
    summary = value(it.summary), blurb = value(it.blurb), rating = value(it.rating),
    ratings = value(it.ratings), publisher = publishers and publishers[1],
    releaseDate = value(it.releaseDate), language = value(it.language),
    categories = names_of(value(it.categories)), progress = value(it.progress),
    myRating = value(it.myRating),
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
  local sname, seq = csv_series(it.series, it.booknumbers)
  local summary = cell(it.summary)
  if summary then summary = gsub(summary, "undefined", "\n") end   -- ALE's lost newlines
  local publishers = cell(it.publishers)
  return book {
    asin = cell(it.asin), title = cell(it.title), titleShort = cell(it.titleshort),
    subtitle = cell(it.subtitle), authors = cell(it.authors), narrators = cell(it.narrators),
    series = sname, seq = seq, length = cell(it.length), cover = cell(it.cover),
    summary = summary, blurb = cell(it.blurb), rating = cell(it.rating), ratings = cell(it.ratings),
    publisher = publishers and match(publishers, "^([^,]+)"), releaseDate = cell(it.releasedate),
    language = cell(it.language), categories = cell(it.categories), progress = cell(it.progress),
    myRating = cell(it.myrating),
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
