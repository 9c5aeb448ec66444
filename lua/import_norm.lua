-- import_norm: the normalisation rules every library-file importer shares
-- (../shared/formats/audible-formats.md, section 6). Each turns one raw value into what
-- a sync item carries, or nil when the value means "unknown"; lua/sync_rules.lua still
-- validates the result, so these only reshape, they never have to refuse.
local _M = {}

local json = require("json")

local nfc, plain = host.text.nfc, host.text.plain
local type, tonumber, tostring, ipairs = type, tonumber, tostring, ipairs
local find, match, gsub, sub, lower, upper, format, char, byte =
  string.find, string.match, string.gsub, string.sub, string.lower, string.upper,
  string.format, utf8.char, string.byte
local floor = math.floor
local null = json.null
local array_mt = json.array_mt
local setmetatable, pairs = setmetatable, pairs

-- The text between the first and the last non-blank byte ("%s+$" would rescan the tail
-- from every blank: quadratic on long texts).
local function trim(v)
  local a = find(v, "%S")
  if not a then return nil end
  local b = #v
  while true do
    local c = byte(v, b)
    if c ~= 32 and (c < 9 or c > 13) then break end
    b = b - 1
  end
  if a == 1 and b == #v then return v end
  return sub(v, a, b)
end

-- A string with its blanks trimmed, or nil when nothing is left (or v is not a string /
-- number).
local function text(v)
  if type(v) == "number" then return tostring(v) end
  if type(v) ~= "string" then return nil end
  return trim(v)
end
_M.text = text

-- A person's or category's name: trimmed, single-spaced, NFC.
local function name(v)
  v = text(v)
  if not v then return nil end
  v = gsub(v, "%s+", " ")
  return nfc(v) or v
end
_M.name = name

-- A list of names from an array of strings or {name = ...} objects, or a string joined
-- with `sep` (", " by default: a name holding ", " is split wrongly, as every tool that
-- joins them accepts). Duplicates dropped, order kept. nil when no name is known.
function _M.names(v, sep)
  local out, seen, n = {}, {}, 0
  local function add(x)
    if type(x) == "table" then x = x.name end
    x = name(x)
    if x and not seen[x] then
      seen[x] = true
      n = n + 1
      out[n] = x
    end
  end
  if type(v) == "table" then
    for _, x in ipairs(v) do add(x) end
  elseif type(v) == "string" then
    sep = sep or ", "
    local start = 1
    while true do
      local a, b = find(v, sep, start, true)
      if not a then add(sub(v, start)) break end
      add(sub(v, start, a - 1))
      start = b + 1
    end
  end
  if n == 0 then return nil end
  return setmetatable(out, array_mt)
end

-- ASIN: trimmed, upper case (the validator checks its shape).
function _M.asin(v)
  v = text(v)
  return v and upper(v)
end

-- The first number in free text: "2.5", "1-3" -> 1, "Book 2" -> 2, "2, Dramatized
-- Adaptation" -> 2, ".5" -> 0.5; nil when there is none. Full-width digits count too.
function _M.position(v)
  if type(v) == "number" then return v end
  v = text(v)
  if not v then return nil end
  v = gsub(v, "\239\188([\144-\153])", function(d) return char(d:byte() - 144 + 48) end)
  local n = match(v, "%d*%.?%d+")
  return n and tonumber(n)
end

-- A number from a number or a string ("4.7", "'4.7" as spreadsheets write it, "4,7" in
-- comma-decimal cultures); nil for "-", "" and anything else.
local function number(v)
  if type(v) == "number" then return v end
  v = text(v)
  if not v then return nil end
  v = gsub(gsub(v, "^'", ""), ",", ".")
  return tonumber(v)
end
_M.number = number

-- A community rating: nil when nobody rated (a rating with no ratings is none, and 0.0
-- is how Audible writes "unrated"), else rounded to 2 decimals.
function _M.rating(avg, count)
  avg, count = number(avg), number(count)
  if not avg or avg <= 0 or count == 0 then return nil end
  return floor(avg * 100 + 0.5) / 100
end

-- A personal rating 1..5 (0 or missing: none).
function _M.stars(v)
  v = number(v)
  if not v or v < 1 then return nil end
  return floor(v + 0.5)
end

-- Progress 0..100 from a percentage (finished wins).
function _M.progress(pct, finished)
  if finished == true or (type(finished) == "string" and lower(finished) == "true") then
    return 100
  end
  pct = number(pct)
  if not pct then return nil end
  if pct < 0 then pct = 0 elseif pct > 100 then pct = 100 end
  return pct
end

-- Minutes from "11h 3m", "45m", "1 hr and 3 mins", or a number of minutes.
function _M.minutes(v)
  if type(v) == "number" then return v > 0 and v or nil end
  v = text(v)
  if not v then return nil end
  local n = tonumber(v)
  if n then return n > 0 and n or nil end
  local h = tonumber(match(v, "(%d+)%s*h")) or 0
  local m = tonumber(match(v, "(%d+)%s*m")) or 0
  local total = h * 60 + m
  return total > 0 and total or nil
end

local LANGUAGES = {
  english = "en", german = "de", deutsch = "de", french = "fr", ["français"] = "fr",
  francais = "fr", spanish = "es", ["español"] = "es", espanol = "es", italian = "it",
  italiano = "it", japanese = "ja", ["日本語"] = "ja", portuguese = "pt", ["português"] = "pt",
  dutch = "nl", nederlands = "nl", swedish = "sv", danish = "da", norwegian = "no",
  finnish = "fi", polish = "pl", russian = "ru", chinese = "zh", mandarin_chinese = "zh",
  korean = "ko", hindi = "hi", arabic = "ar", turkish = "tr", hebrew = "he", czech = "cs",
  hungarian = "hu", greek = "el", catalan = "ca", romanian = "ro", ukrainian = "uk",
  tamil = "ta", afrikaans = "af", icelandic = "is", irish = "ga", welsh = "cy",
}

-- An ISO 639-1 code from a language name in English or its own language ("english",
-- "English", "Deutsch") or a code ("en", "en-US" -> "en"); unknown names kept as sent.
function _M.language(v)
  v = text(v)
  if not v then return nil end
  local l = gsub(lower(v), " ", "_")
  if LANGUAGES[l] then return LANGUAGES[l] end
  local code = match(l, "^(%a%a)$") or match(l, "^(%a%a)[-_]%a%a$")
  return code or v
end

-- Plain text from an HTML summary (host.text.plain: </p> and <br> become line breaks,
-- other tags go, entities are decoded, blanks collapse). nil when nothing is left.
function _M.plain(v)
  if type(v) ~= "string" then return nil end
  return plain(v)
end

local COVER = "https://m.media-amazon.com/images/I/%s._SL500_.jpg"

-- A cover URL from a URL, or from a bare picture id ("51pZyUM49GL", as Libation and ALE
-- keep it); "-" and blanks are none.
function _M.cover(v)
  v = text(v)
  if not v or v == "-" then return nil end
  if find(v, "^[Hh][Tt][Tt][Pp][Ss]?://") then return v end
  if find(v, "^[%w%-%+_]+$") then return format(COVER, v) end
  return nil
end

-- The largest image of an Audible `product_images` object ({"500": url, "1215": url}).
function _M.largest_image(images)
  if type(images) ~= "table" then return nil end
  if images["500"] then return text(images["500"]) end
  local best, size = nil, -1
  for k, url in pairs(images) do
    local n = tonumber(k)
    if n and n > size and type(url) == "string" then best, size = url, n end
  end
  return text(best)
end

-- A date-time the validator reads: ISO-8601 passes through; culture-formatted ones
-- (Libation's CSV: "21.05.2025 05:42:18", "5/21/2025 5:42:18 AM") become ISO (UTC).
function _M.datetime(v)
  v = text(v)
  if not v then return nil end
  if find(v, "^%d%d%d%d%-") then return v end
  local d, m, y, rest = match(v, "^(%d%d?)%.(%d%d?)%.(%d%d%d%d)(.*)$")
  if not d then
    m, d, y, rest = match(v, "^(%d%d?)/(%d%d?)/(%d%d%d%d)(.*)$")
    if m and tonumber(m) > 12 then d, m = m, d end   -- d/m/y cultures
  end
  if not d then return v end
  local hh, mm, ss, ampm = match(rest, "^%s+(%d%d?):(%d%d):?(%d?%d?)%s*([AaPp]?)")
  hh, mm, ss = tonumber(hh) or 0, tonumber(mm) or 0, tonumber(ss) or 0
  ampm = ampm and lower(ampm) or ""
  if ampm == "p" and hh < 12 then hh = hh + 12 elseif ampm == "a" and hh == 12 then hh = 0 end
  return format("%04d-%02d-%02dT%02d:%02d:%02dZ", tonumber(y), tonumber(m), tonumber(d), hh, mm, ss)
end

-- A release date: ISO dates pass, date-times are cut to their date by the validator.
_M.date = _M.datetime

-- Flattened category names from Audible's category_ladders, de-duplicated in order.
function _M.ladders(ladders)
  if type(ladders) ~= "table" then return nil end
  local names = {}
  for _, l in ipairs(ladders) do
    if type(l) == "table" and type(l.ladder) == "table" then
      for _, step in ipairs(l.ladder) do names[#names + 1] = step end
    end
  end
  return _M.names(names)
end

-- A column or key name as importers match it: lower case, letters and digits only
-- ("Date Added to library" -> "dateaddedtolibrary", "series_title" -> "seriestitle").
function _M.key(v)
  return (gsub(lower(v), "[^%w]", ""))
end

-- v unless it is JSON null.
function _M.value(v)
  if v == null then return nil end
  return v
end

return _M
