-- The Audible API's own pages: GET /1.0/library ({"items": [...]}, one item per title)
-- and GET /1.0/wishlist ({"products": [...]}), with any response groups; what audible-cli,
-- Libation and the a2a captures save raw. Reference: audible-formats.md, section 1.
local norm = require("import_norm")

local type, ipairs = type, ipairs
local value, text = norm.value, norm.text

local _M = {
  format = "audible-api",
  json = { lists = { items = "LIBRARY", products = "WISHLIST" } },
  fields = {
    "asin", "title", "subtitle", "runtime_length_min", "product_images", "publisher_summary",
    "extended_product_description", "merchandising_summary", "publisher_name", "release_date",
    "issue_date", "publication_datetime", "language", "purchase_date", "percent_complete",
    "is_finished", "added_timestamp",
    authors = { "name" }, narrators = { "name" }, series = { "title", "sequence" },
    relationships = { "relationship_type", "relationship_to_product", "title", "sequence", "sort" },
    rating = { overall_distribution = { "average_rating", "display_average_rating", "num_ratings" } },
    category_ladders = { ladder = { "name" } },
    library_status = { "date_added" }, listening_status = { "percent_complete", "is_finished" },
    provided_review = { ratings = { "overall_rating" } },
  },
}

-- An API item has an ASIN and structured (array) contributors or Audible-only keys;
-- audible-cli's export has the same names with contributors joined into strings.
function _M.json.match(key, item)
  if type(item) ~= "table" or item.asin == nil then return false end
  if key == "items" or key == "products" then return true end
  return false
end

-- series[1] (the first is usually the book's own series), else the series parent in
-- relationships (the wishlist often has series: null but a relationship).
local function series(it)
  local s = value(it.series)
  if type(s) == "table" and type(s[1]) == "table" then
    return s[1].title, s[1].sequence
  end
  local rel = value(it.relationships)
  if type(rel) == "table" then
    for _, r in ipairs(rel) do
      if type(r) == "table" and r.relationship_type == "series" and
          (r.relationship_to_product == nil or r.relationship_to_product == "parent") then
        return r.title, r.sequence or r.sort
      end
    end
  end
  return nil
end

local function summary(it)
  return norm.plain(value(it.publisher_summary)) or
    norm.plain(value(it.extended_product_description)) or
    norm.plain(value(it.merchandising_summary))
end

local function progress(it)
  local ls = value(it.listening_status)
  local pct, finished = nil, value(it.is_finished)
  if type(ls) == "table" then
    pct = value(ls.percent_complete)
    if value(ls.is_finished) == true then finished = true end
  end
  if pct == nil then pct = value(it.percent_complete) end
  return norm.progress(pct, finished)
end

local function added(it, source)
  if source == "WISHLIST" then return text(value(it.added_timestamp)) end
  local ls = value(it.library_status)
  local d = type(ls) == "table" and value(ls.date_added) or nil
  return text(d) or text(value(it.purchase_date)) or text(value(it.added_timestamp))
end

function _M.convert(it, ctx)
  local sname, seq = series(it)
  local r = value(it.rating)
  local overall = type(r) == "table" and value(r.overall_distribution) or nil
  local rating, count
  if type(overall) == "table" then
    count = value(overall.num_ratings)
    rating = norm.rating(value(overall.average_rating) or value(overall.display_average_rating), count)
  end
  local review = value(it.provided_review)
  local ratings = type(review) == "table" and value(review.ratings) or nil
  local source = ctx.list_source
  return {
    asin = norm.asin(it.asin),
    title = norm.name(value(it.title)),
    subtitle = norm.name(value(it.subtitle)),
    authors = norm.names(value(it.authors)),
    narrators = norm.names(value(it.narrators)),
    seriesName = norm.name(sname),
    seriesPosition = norm.position(seq),
    seriesSequence = text(seq),
    duration = norm.minutes(value(it.runtime_length_min)),
    coverImageUrl = norm.largest_image(value(it.product_images)),
    summary = summary(it),
    rating = rating,
    ratingCount = count ~= nil and norm.number(count) or nil,
    publisher = norm.name(value(it.publisher_name)),
    releaseDate = text(value(it.release_date)) or text(value(it.issue_date)) or
      text(value(it.publication_datetime)),
    language = norm.language(value(it.language)),
    categories = norm.ladders(value(it.category_ladders)),
    listeningProgress = source ~= "WISHLIST" and progress(it) or nil,
    personalRating = type(ratings) == "table" and norm.stars(value(ratings.overall_rating)) or nil,
    dateAdded = added(it, source),
  }
end

return _M
