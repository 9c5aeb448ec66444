-- audible-cli's `library export` and `wishlist export`, as JSON (an array of flat
-- objects), CSV or TSV (the same names as header). Contributors and genres arrive
-- joined with ", "; every column is optional (older versions have fewer); the file
-- does not say whether it is a library or a wishlist. Reference: audible-formats.md,
-- section 2.
local norm = require("import_norm")

local type, ipairs = type, ipairs
local text = norm.text

local _M = {
  format = "audible-cli",
  flat = true,
  json = { lists = { [""] = "file" } },
  fields = {
    "asin", "title", "subtitle", "extended_product_description", "authors", "narrators",
    "series_title", "series_sequence", "genres", "runtime_length_min", "is_finished",
    "percent_complete", "rating", "num_ratings", "date_added", "release_date", "cover_url",
    "purchase_date",
  },
}

-- Names only audible-cli uses, besides asin.
local OWN = { "series_title", "series_sequence", "genres", "cover_url", "runtime_length_min",
              "num_ratings", "date_added", "purchase_date", "extended_product_description" }

local function has_own(has)
  for _, k in ipairs(OWN) do
    if has(k) then return true end
  end
  return false
end

function _M.json.match(key, item)
  if key ~= "" or type(item) ~= "table" or item.asin == nil then return false end
  return type(item.authors) == "string" or has_own(function(k) return item[k] ~= nil end)
end

_M.csv = {}
function _M.csv.match(columns)
  return columns.asin and columns.title and has_own(function(k) return columns[norm.key(k)] end)
end

-- Only a library export has these filled (a wishlist has no progress and no purchase).
function _M.evidence(it)
  return text(it.purchasedate) ~= nil or text(it.isfinished) ~= nil or
    text(it.percentcomplete) ~= nil or text(it.extendedproductdescription) ~= nil
end

function _M.convert(it)
  local seq = text(it.seriessequence)
  return {
    asin = norm.asin(it.asin),
    title = norm.name(it.title),
    subtitle = norm.name(it.subtitle),
    authors = norm.names(it.authors),
    narrators = norm.names(it.narrators),
    seriesName = norm.name(it.seriestitle),
    seriesPosition = norm.position(seq),
    seriesSequence = seq,
    duration = norm.minutes(it.runtimelengthmin),
    coverImageUrl = norm.cover(it.coverurl),
    summary = norm.plain(it.extendedproductdescription),
    rating = norm.rating(it.rating, it.numratings),
    ratingCount = norm.number(it.numratings),
    releaseDate = text(it.releasedate),
    categories = norm.names(it.genres),
    listeningProgress = norm.progress(it.percentcomplete, it.isfinished),
    dateAdded = norm.datetime(it.dateadded) or norm.datetime(it.purchasedate),
  }
end

return _M
