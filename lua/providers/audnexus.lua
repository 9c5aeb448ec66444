-- providers/audnexus: the Audnexus book JSON (GET <base>/books/<asin>?region=<region>) as a
-- catalog item. Edit and save: the background fetcher and the lookup routes take the new
-- mapping on their next call (hot reload), like any file under lua/.
--
-- map(doc) returns an item in the sync payload's names (title, authors, seriesName, ...),
-- the names lua/sync_rules.lua validates and lua/enrichment.lua writes; a field the
-- provider lacks is left out (nil), so it never erases what the catalog has. Values are
-- not trusted here: enrichment validates the item with the sync's own rules and drops
-- what fails them.
local _M = {}

local type, ipairs, tonumber = type, ipairs, tonumber
local gsub, match, upper, sub, lower, find =
  string.gsub, string.match, string.upper, string.sub, string.lower, string.find
local utf8char = utf8.char

-- The book URL of asin in region. base has no trailing slash requirement.
function _M.url(base, asin, region)
  return (gsub(base, "/+$", "")) .. "/books/" .. asin .. "?region=" .. region
end

-- ---- HTML summary -> plain text ----

local NAMED = {
  amp = "&", lt = "<", gt = ">", quot = '"', apos = "'", nbsp = "\194\160", ndash = "–",
  mdash = "—", hellip = "…", lsquo = "‘", rsquo = "’", ldquo = "“", rdquo = "”",
  copy = "©", reg = "®", trade = "™", eacute = "é", egrave = "è", aacute = "á",
  agrave = "à", ouml = "ö", uuml = "ü", auml = "ä", szlig = "ß", ccedil = "ç",
  laquo = "«", raquo = "»", iacute = "í", oacute = "ó", uacute = "ú", ntilde = "ñ",
  bull = "•", middot = "·", shy = "", deg = "°", euro = "€", pound = "£",
}

local function entity(name)
  local hex = match(name, "^#[xX](%x+)$")
  local code = hex and tonumber(hex, 16) or tonumber(match(name, "^#(%d+)$") or "")
  if code then
    -- Controls, surrogates and out-of-range code points become U+FFFD, as browsers do.
    if code == 0 or code > 0x10FFFF or (code >= 0xD800 and code <= 0xDFFF) or
       (code < 32 and code ~= 9 and code ~= 10) then
      return "\239\191\189"
    end
    return utf8char(code)
  end
  return NAMED[name]
end

-- Tags that end a paragraph (a blank line) or a line.
local PARAGRAPH = { p = true, div = true, ul = true, ol = true, blockquote = true,
                    h1 = true, h2 = true, h3 = true, h4 = true, h5 = true, h6 = true }
local LINE = { br = true, li = true, tr = true }

-- html: the provider's summary. Returns plain text: script, style and comments removed
-- with their content, every other tag removed, entities decoded, paragraphs separated by
-- one blank line, runs of spaces folded, no leading or trailing blank. nil for nothing.
function _M.plain_text(html)
  if type(html) ~= "string" then return nil end
  local s = gsub(html, "<!%-%-.-%-%->", "")
  for _, tag in ipairs{ "script", "style", "template", "iframe", "noscript" } do
    -- case-insensitive tag names without building a pattern from input
    local name = gsub(tag, "%a", function(c) return "[" .. c .. upper(c) .. "]" end)
    s = gsub(s, "<%s*" .. name .. "[^>]*>.-<%s*/%s*" .. name .. "%s*>", "")
    s = gsub(s, "<%s*" .. name .. "[^>]*>.*$", "")   -- an unclosed one hides all after it
  end
  s = gsub(s, "\r\n?", "\n")
  s = gsub(s, "[ \t\n]+", " ")                 -- HTML whitespace is not layout
  s = gsub(s, "<%s*(/?)%s*(%a%w*)[^>]*>", function(_, name)
    name = lower(name)
    if PARAGRAPH[name] then return "\n\n" end
    if LINE[name] then return "\n" end
    return ""
  end)
  s = gsub(s, "<[^>]*>", "")                  -- anything tag-like left (<!DOCTYPE>, </ >)
  s = gsub(s, "<", "")                         -- a stray < of a cut tag
  s = gsub(s, "&(#?%w+);", function(name) return entity(name) end)
  s = gsub(s, "[ \t]*\n[ \t]*", "\n")
  s = gsub(s, "[ \t]+", " ")
  s = gsub(s, "\n\n\n+", "\n\n")
  s = gsub(gsub(s, "^%s+", ""), "%s+$", "")
  if s == "" then return nil end
  return s
end

-- ---- the mapping ----

local function names(list)
  if type(list) ~= "table" then return nil end
  local out = {}
  for _, v in ipairs(list) do
    local name = type(v) == "table" and v.name or nil
    if type(name) == "string" and name ~= "" then out[#out + 1] = name end
  end
  return out[1] and out or nil
end

-- Genres of type "genre" (Audible's categories); the finer "tag" ones only when a book has
-- no genre.
local function categories(genres)
  if type(genres) ~= "table" then return nil end
  local g, t = {}, {}
  for _, v in ipairs(genres) do
    if type(v) == "table" and type(v.name) == "string" and v.name ~= "" then
      if v.type == "tag" then t[#t + 1] = v.name else g[#g + 1] = v.name end
    end
  end
  if g[1] then return g end
  return t[1] and t or nil
end

local function str(v)
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

-- "1", "1.5", "1-3", "Book 2": the leading number.
local function position(v)
  if type(v) == "number" then return v end
  if type(v) ~= "string" then return nil end
  return tonumber(match(v, "%d+%.?%d*") or "")
end

local function language(v)
  v = str(v)
  if not v then return nil end
  return upper(sub(v, 1, 1)) .. sub(v, 2)
end

-- doc: the decoded book. Returns the item, or nil and a reason when doc is no book.
function _M.map(doc)
  if type(doc) ~= "table" then return nil, "the answer is not a JSON object" end
  if doc.asin ~= nil and type(doc.asin) ~= "string" then return nil, "asin is not a string" end
  local series = type(doc.seriesPrimary) == "table" and doc.seriesPrimary or {}
  return {
    title = str(doc.title),
    subtitle = str(doc.subtitle),
    authors = names(doc.authors),
    narrators = names(doc.narrators),
    seriesName = str(series.name),
    seriesPosition = series.name and position(series.position) or nil,
    duration = tonumber(doc.runtimeLengthMin) ~= 0 and tonumber(doc.runtimeLengthMin) or nil,
    coverImageUrl = str(doc.image),
    summary = _M.plain_text(doc.summary) or _M.plain_text(doc.description),
    publisher = str(doc.publisherName),
    releaseDate = str(doc.releaseDate),
    language = language(doc.language),
    categories = categories(doc.genres),
    rating = tonumber(doc.rating),
    region = str(doc.region),
  }
end

-- For a log line: what a provider error body says, shortened.
function _M.describe(body)
  if type(body) ~= "string" then return "" end
  local s = gsub(sub(body, 1, 200), "%c", " ")
  return find(s, "%S") and s or ""
end

return _M
