-- validate: the one validator. Rules are data; one function checks a value against a rule
-- and returns the cleaned value and a list of {path, message} problems.
--
--   local cleaned, errs = validate.check(rule, value[, path])
--   local check = validate.checker(rule[, {text_checked = true}])   -- for hot loops
--   local cleaned, errs = check(value[, path])
--
-- cleaned is nil when value was refused (errs then says why). An object field whose rule
-- says `invalid = "drop"` is dropped when invalid: the object is still accepted, and errs
-- carries the dropped field's problem, so a caller can report it as a warning. errs is nil
-- when there is nothing to report. Paths look like JSON access: `titles[3].asin`, with
-- 0-based array indexes (what a JavaScript client sees); `path` names the root (nil: none).
--
-- Rule keys (every rule):
--   type      "string" | "integer" | "number" | "boolean" | "array" | "object" | "any"
--   required  true: an object field that is absent (nil or JSON null) is an error
--   default   value used for an absent object field (scalars only)
--   as        the key the cleaned value gets in the cleaned object (default: the field name)
--   invalid   "drop": an invalid value of this object field is dropped, not fatal
--   null_if   a value that means "explicitly nothing": cleaned to validate.null (JSON null),
--             unlike an absent field, which is left out (e.g. personalRating 0 = unrated)
--   message   replaces the message of a failed constraint (length, pattern, enum, format,
--             check), so a rule can say what it wants ("must be 10 letters or digits")
--   check     fn(cleaned) -> value | nil, message: a rule data cannot say (a Lua pattern has
--             no alternation), run on a present value after the type's checks; the value
--             it returns is the cleaned one. lua/types.lua holds the shared ones;
--             validate.shape_check builds one from data (host.bulk runs those in C).
-- string:  trim (default true: surrounding whitespace removed), empty ("absent" (default):
--          "" counts as absent, an error when required; "keep"), upper / lower (case
--          folding before the checks), len / min_len / max_len (in characters), pattern
--          (a Lua pattern), enum (list of allowed values), format ("http_url", "date",
--          "datetime", "uuid"). Strings must be valid UTF-8 without NUL characters.
--          "date" cleans to YYYY-MM-DD (from a date or an ISO-8601 date-time); "datetime"
--          cleans to UTC, YYYY-MM-DDTHH:MM:SS.mmmZ (more fraction digits are kept; a date
--          alone is midnight UTC; no zone means UTC), the form the database binding
--          returns, so equal instants compare equal as strings.
-- integer / number: min, max, coerce (true: numeric strings are accepted), round (integer:
--          a fractional number is rounded instead of refused). NaN and infinities never pass.
-- array:   items (rule for the elements), min_items, max_items, compact (true: null and
--          empty-string elements are dropped), unique (true: repeated elements dropped).
--          An array nothing was changed in is returned as it came; an empty or rebuilt one
--          is marked as a JSON array.
-- object:  fields = {name = rule, ...}, unknown ("ignore" (default) | "reject"), in_place
--          (true: the cleaned object is the input table itself, each field replaced by its
--          cleaned value (renamed by `as`, absent ones removed, unknown ones left): no new
--          table per object, for bulk input; the input is modified even when refused),
--          checks (list of fn(cleaned object) -> nil | field, message: rules across fields,
--          run once every field passed; the named field is dropped when its rule says
--          invalid = "drop" (errs carries the message), else the object is refused).
--
-- text_checked: a caller that validated the JSON text as a whole (validate.text_ok: valid
-- UTF-8, no \u0000 escape) may say so, and strings decoded from it skip the per-string
-- UTF-8 and NUL checks (the JSON decoder only produces valid UTF-8 from valid UTF-8 text,
-- and a NUL only from \u0000).
--
-- Rules are compiled once (cached by identity; edit a rule table and reload to change it),
-- so checking thousands of values allocates no closures and rebuilds no lookup tables.
local _M = {}

local json = require("json")

local type, pairs, ipairs, next, tostring, tonumber, error, setmetatable =
  type, pairs, ipairs, next, tostring, tonumber, error, setmetatable
local byte, find, match, sub, upper, lower, format =
  string.byte, string.find, string.match, string.sub, string.upper, string.lower, string.format
local utf8len = utf8.len
local floor, mtype, huge = math.floor, math.type, math.huge
local sort, concat = table.sort, table.concat

local null = json.null
local array_mt = json.array_mt
_M.null = null

-- Returned by a compiled checker for a refused value (nil is a legitimate "absent").
local INVALID = setmetatable({}, { __tostring = function() return "INVALID" end })

-- ---- paths and problems (only built when something is wrong) ----

local function join(parent, key)
  if key == nil then return parent end
  if type(key) == "number" then
    return (parent or "") .. "[" .. (key - 1) .. "]"
  end
  if parent == nil or parent == "" then return key end
  return parent .. "." .. key
end
_M.join = join

local function add(errs, parent, key, message)
  errs = errs or {}
  errs[#errs + 1] = { path = join(parent, key) or "", message = message }
  return errs
end

-- ---- text ----

local function trim(s)
  local from = match(s, "^%s*()")
  if from > #s then return "" end
  return match(s, ".*%S", from)
end
_M.trim = trim

-- True when a JSON text is valid UTF-8 and holds no \u0000 escape (see text_checked). A
-- text that fails is not necessarily wrong ("\\u0000" is an escaped backslash before
-- "u0000"): its strings are then checked one by one.
function _M.text_ok(text)
  return utf8len(text) ~= nil and not find(text, "\\u0000", 1, true) and
    not find(text, "\0", 1, true)
end

-- ---- dates ----

local DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

local function valid_ymd(y, m, d)
  if y < 1 or m < 1 or m > 12 or d < 1 then return false end
  local dim = DAYS[m]
  if m == 2 and (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) then dim = 29 end
  return d <= dim
end

-- Days since 1970-01-01 of a civil date, and back (Howard Hinnant's algorithms), so a
-- date-time with an offset is moved to UTC without the platform's time_t.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = (z >= 0 and z or z - 146096) // 146097
  local doe = z - era * 146097
  local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  local mp = (5 * doy + 2) // 153
  local d = doy - (153 * mp + 2) // 5 + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m, d
end
_M.days_from_civil, _M.civil_from_days = days_from_civil, civil_from_days

-- Parses an ISO-8601 date or date-time. Returns y, m, d and, for a date-time, the
-- seconds of the day, the fraction ("" or ".ddd...") and the zone offset in minutes (nil:
-- no zone given). nil when s is not one.
local function parse_iso(s)
  local ys, ms, ds, rest = match(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not ys then return nil end
  local y, m, d = tonumber(ys), tonumber(ms), tonumber(ds)
  if not valid_ymd(y, m, d) then return nil end
  if rest == "" then return y, m, d end
  local hh, mi, ss, frac, zone = match(rest, "^[Tt ](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not hh then
    hh, mi, zone = match(rest, "^[Tt ](%d%d):(%d%d)(.*)$")
    if not hh then return nil end
    ss, frac = "00", ""
  end
  hh, mi, ss = tonumber(hh), tonumber(mi), tonumber(ss)
  if hh > 23 or mi > 59 or ss > 59 or frac == "." then return nil end
  if #frac > 7 then frac = sub(frac, 1, 7) end       -- PostgreSQL keeps microseconds
  local offset
  if zone == "Z" or zone == "z" then
    offset = 0
  elseif zone ~= "" then
    local sign, zh, zm = match(zone, "^([+-])(%d%d):?(%d%d)$")
    if not sign then
      sign, zh = match(zone, "^([+-])(%d%d)$")
      zm = "00"
    end
    if not sign or tonumber(zh) > 14 or tonumber(zm) > 59 then return nil end
    offset = (tonumber(zh) * 60 + tonumber(zm)) * (sign == "-" and -1 or 1)
  end
  return y, m, d, hh * 3600 + mi * 60 + ss, frac, offset
end
_M.parse_iso = parse_iso

local DATE_MSG = "must be an ISO-8601 date (YYYY-MM-DD)"
local DATETIME_MSG = "must be an ISO-8601 date or date-time"

local FORMATS = {}

-- The canonical forms are recognised by one anchored pattern and their numbers read
-- from one string.byte call: few VM instructions per value (a sync checks thousands).
local DATE_SHAPE = "^%d%d%d%d%-%d%d%-%d%d$"
local DATETIME_SHAPE = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"

-- Digits are read as bytes: "YYYY" is a*1000 + b*100 + c*10 + d - 53328 (48 * 1111) and
-- "MM" f*10 + g - 528 (48 * 11). Days up to 28 exist in every month.
FORMATS.date = function(s)
  if find(s, DATE_SHAPE) then
    local a, b, c, d, _, f, g, _, i, j = byte(s, 1, 10)
    local y, m, dd = a * 1000 + b * 100 + c * 10 + d - 53328, f * 10 + g - 528, i * 10 + j - 528
    if y >= 1 and m >= 1 and m <= 12 and dd >= 1 and (dd <= 28 or valid_ymd(y, m, dd)) then
      return s
    end
    return nil, DATE_MSG
  end
  local y, m, d = parse_iso(s)
  if not y then return nil, DATE_MSG end
  return format("%04d-%02d-%02d", y, m, d)
end

FORMATS.datetime = function(s)
  if find(s, DATETIME_SHAPE) then                   -- already YYYY-MM-DDTHH:MM:SS.mmmZ
    local a, b, c, d, _, f, g, _, i, j, _, k, l, _, m, n, _, o, p = byte(s, 1, 19)
    local y, mo, dd = a * 1000 + b * 100 + c * 10 + d - 53328, f * 10 + g - 528, i * 10 + j - 528
    if y >= 1 and mo >= 1 and mo <= 12 and dd >= 1 and (dd <= 28 or valid_ymd(y, mo, dd))
        and k * 10 + l <= 551 and m * 10 + n <= 587 and o * 10 + p <= 587 then
      return s      -- 551 = "23", 587 = "59" as two digit bytes (48 * 11 = 528 + value)
    end
    return nil, DATETIME_MSG
  end
  local y, mo, d, secs, frac, offset = parse_iso(s)
  if not y then return nil, DATETIME_MSG end
  secs = secs or 0
  if offset and offset ~= 0 then
    secs = secs - offset * 60
    local days = days_from_civil(y, mo, d) + secs // 86400
    secs = secs % 86400
    y, mo, d = civil_from_days(days)
    if y < 1 or y > 9999 then return nil, DATETIME_MSG end
  end
  frac = frac or ""
  if #frac < 4 then frac = "." .. sub(sub(frac, 2) .. "000", 1, 3) end
  return format("%04d-%02d-%02dT%02d:%02d:%02d%sZ", y, mo, d, secs // 3600, secs % 3600 // 60,
    secs % 60, frac)
end

-- A scheme, a non-empty authority, and no whitespace or control character anywhere
-- (never valid in a URL; they break logs and HTML). One C call over byte ranges.
FORMATS.http_url = function(s)
  if find(s, "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\0-\32\127][^\0-\32\127]*$") then return s end
  return nil, "must be an http(s) URL"
end

FORMATS.uuid = function(s)
  if not find(s, "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") then
    return nil, "must be a UUID"
  end
  return lower(s)
end

_M.formats = FORMATS

-- ---- checks from data ----

-- shapes[fn] = {message =, shapes = {{len =, pattern =}, ...}} for each check shape_check
-- made: the data host.bulk.compile (opts.shapes) runs in C instead of calling fn.
local shapes = setmetatable({}, { __mode = "k" })
_M.shapes = shapes

-- A `check` for string rules from data: v passes when one of the shapes holds (#v == len,
-- when len is set, and v matches pattern), else nil, message. A pattern has no
-- alternation: ASINs are 10 letters or digits or 13 digits, two shapes.
function _M.shape_check(message, list)
  local own = {}
  for i, s in ipairs(list) do own[i] = { len = s.len, pattern = s.pattern } end
  local n_shapes = #own
  local function check(v)
    local n = #v
    for i = 1, n_shapes do
      local s = own[i]
      if (s.len == nil or n == s.len) and find(v, s.pattern) then return v end
    end
    return nil, message
  end
  shapes[check] = { message = message, shapes = own }
  return check
end

-- ---- compilation ----
--
-- Each rule compiles to a checker fn(v, parent, key, errs) -> cleaned | INVALID, errs,
-- called only for a present value. The hot paths avoid C calls where they can (on the
-- server's machine one costs as much as a dozen VM instructions) and per-value tables:
-- canonical dates are read from one string.byte call, arrays nothing changed in are
-- returned as they came, small arrays are deduplicated without a lookup table, and
-- in_place objects are cleaned without a new table.

local compile   -- forward

local KNOWN = {
  type = true, required = true, default = true, as = true, invalid = true, null_if = true,
  message = true, trim = true, empty = true, upper = true, lower = true, len = true,
  min_len = true, max_len = true, pattern = true, enum = true, format = true, min = true,
  max = true, coerce = true, round = true, items = true, min_items = true, max_items = true,
  compact = true, unique = true, fields = true, unknown = true, in_place = true,
  check = true, checks = true,
}

-- The keys each fast path handles. A rule with any other key takes the general path, so
-- a key added to KNOWN can never be skipped by a fast path that does not know it.
local function only(r, allowed)
  for k in pairs(r) do
    if not allowed[k] then return false end
  end
  return true
end
local PLAIN_STRING_KEYS = { type = true, trim = true, required = true, max_len = true,
  message = true, invalid = true, as = true, default = true }
local INLINE_ARRAY_KEYS = { type = true, items = true, max_items = true, compact = true,
  unique = true, message = true, invalid = true, as = true, default = true, required = true }
local BULK_OBJECT_KEYS = { type = true, fields = true, in_place = true, unknown = true,
  message = true, invalid = true, as = true, default = true, required = true }

local function plural(n, one, many)
  return n == 1 and one or many
end

-- True for a string rule with nothing but trim, required and max_len: the common case,
-- checked by a shorter closure (and inline by arrays of them).
local function plain_string(r)
  return r.type == "string" and only(r, PLAIN_STRING_KEYS)
end

local function compile_string(r, text_checked)
  local do_trim = r.trim ~= false
  local keep_empty = r.empty == "keep"
  local required = r.required
  local fold = r.upper and upper or (r.lower and lower or nil)
  local len, min_len, max_len = r.len, r.min_len, r.max_len
  local pattern, fmt, custom = r.pattern, nil, r.message
  local null_if = r.null_if
  if r.format then
    fmt = FORMATS[r.format]
    if not fmt then error("validate: unknown format " .. tostring(r.format), 0) end
  end
  local enum_set, enum_text
  if r.enum then
    enum_set = {}
    local list = {}
    for i, v in ipairs(r.enum) do enum_set[v] = true; list[i] = v end
    enum_text = "must be one of " .. concat(list, ", ")
  end
  local count_chars = len or min_len or max_len
  local len_msg = custom or (len and ("must be exactly " .. len .. plural(len, " character", " characters")))
  local min_msg = custom or (min_len and ("must be at least " .. min_len .. plural(min_len, " character", " characters")))
  local max_msg = custom or (max_len and ("must be at most " .. max_len .. plural(max_len, " character", " characters")))
  local pat_msg = custom or (pattern and ("must match " .. pattern))

  if plain_string(r) then
    -- The common plain string (at most a maximum length): the same checks, minus the
    -- tests for options it does not have.
    return function(v, parent, key, errs)
      if type(v) ~= "string" then
        return INVALID, add(errs, parent, key, "must be a string")
      end
      if not text_checked then
        if find(v, "\0", 1, true) then
          return INVALID, add(errs, parent, key, "must not contain NUL characters")
        end
        if not utf8len(v) then
          return INVALID, add(errs, parent, key, "must be valid UTF-8")
        end
      end
      local n = #v
      if n > 0 and do_trim then
        local b1, b2 = byte(v, 1), byte(v, n)
        if b1 <= 32 or b2 <= 32 then
          v = trim(v)
          n = #v
        end
      end
      if n == 0 then
        if required then return INVALID, add(errs, parent, key, "must not be empty") end
        return nil, errs
      end
      if max_len and n > max_len and utf8len(v) > max_len then
        return INVALID, add(errs, parent, key, max_msg)
      end
      return v, errs
    end
  end

  return function(v, parent, key, errs)
    if type(v) ~= "string" then
      return INVALID, add(errs, parent, key, "must be a string")
    end
    if not text_checked then
      -- utf8.len and a memchr-backed plain find are the fastest scans (a character class
      -- in a pattern costs several times more per byte).
      if find(v, "\0", 1, true) then
        return INVALID, add(errs, parent, key, "must not contain NUL characters")
      end
      if not utf8len(v) then
        return INVALID, add(errs, parent, key, "must be valid UTF-8")
      end
    end
    local n = #v      -- bytes; characters are counted only when a limit could be passed
    if do_trim and n > 0 then
      local b1, b2 = byte(v, 1), byte(v, n)
      if b1 <= 32 or b2 <= 32 then   -- maybe whitespace at an end (controls are rare)
        v = trim(v)
        n = #v
      end
    end
    if n == 0 and not keep_empty then
      if required then return INVALID, add(errs, parent, key, "must not be empty") end
      return nil, errs
    end
    if null_if ~= nil and v == null_if then return null, errs end
    if fold then v = fold(v) end
    -- Bytes >= characters: count characters only when the byte count could fail a limit.
    if count_chars and ((len and n ~= len) or (min_len and n < min_len) or (max_len and n > max_len)) then
      n = utf8len(v)
      if len and n ~= len then return INVALID, add(errs, parent, key, len_msg) end
      if min_len and n < min_len then return INVALID, add(errs, parent, key, min_msg) end
      if max_len and n > max_len then return INVALID, add(errs, parent, key, max_msg) end
    end
    if enum_set and not enum_set[v] then
      return INVALID, add(errs, parent, key, custom or enum_text)
    end
    if pattern and not find(v, pattern) then
      return INVALID, add(errs, parent, key, pat_msg)
    end
    if fmt then
      local out, msg = fmt(v)
      if out == nil then return INVALID, add(errs, parent, key, custom or msg) end
      v = out
    end
    return v, errs
  end
end

local MAX_INT = 9007199254740992   -- 2^53: beyond it a float no longer holds every integer

local function compile_number(r, integer)
  local min, max, coerce, round, null_if = r.min, r.max, r.coerce, r.round, r.null_if
  local kind = integer and "a whole number" or "a number"
  local range_msg
  if min and max then
    range_msg = "must be between " .. tostring(min) .. " and " .. tostring(max)
  elseif min then
    range_msg = "must be at least " .. tostring(min)
  elseif max then
    range_msg = "must be at most " .. tostring(max)
  end
  local lo, hi = min or -huge, max or huge
  -- Finite bounds for the fast path: a number inside them is neither NaN nor infinite.
  local flo, fhi = min or -1e308, max or 1e308
  if integer then
    if flo < -MAX_INT then flo = -MAX_INT end
    if fhi > MAX_INT then fhi = MAX_INT end
  end
  return function(v, parent, key, errs)
    -- The common case in a few instructions: a number in range (and whole, for an
    -- integer) that is not the null_if value. Anything else takes the full path below.
    if type(v) == "number" and v >= flo and v <= fhi and v ~= null_if then
      if not integer then return v, errs end
      if v % 1 == 0 then return v | 0, errs end
    end
    if type(v) ~= "number" then
      if coerce and type(v) == "string" then v = tonumber(trim(v)) end
      if type(v) ~= "number" then
        return INVALID, add(errs, parent, key, "must be " .. kind)
      end
    end
    if v ~= v or v == huge or v == -huge then
      return INVALID, add(errs, parent, key, "must be a finite number")
    end
    if integer and v % 1 ~= 0 then
      if not round then return INVALID, add(errs, parent, key, "must be a whole number") end
      v = floor(v + 0.5)
    end
    if null_if ~= nil and v == null_if then return null, errs end
    if v < lo or v > hi then return INVALID, add(errs, parent, key, range_msg) end
    if integer then
      if v < -MAX_INT or v > MAX_INT then
        return INVALID, add(errs, parent, key, "must be a whole number of at most 2^53")
      end
      v = v | 0   -- an integer-valued float becomes an integer (a VM operation, no call)
    end
    return v, errs
  end
end

local function compile_boolean(r)
  local null_if = r.null_if
  return function(v, parent, key, errs)
    if type(v) ~= "boolean" then return INVALID, add(errs, parent, key, "must be true or false") end
    if null_if ~= nil and v == null_if then return null, errs end
    return v, errs
  end
end

-- True when t holds exactly the keys 1..#t (what a decoded JSON array holds).
local function is_sequence(t)
  local n = #t
  local count = 0
  for k in pairs(t) do
    if mtype(k) ~= "integer" or k < 1 or k > n then return false end
    count = count + 1
  end
  return count == n
end
_M.is_sequence = is_sequence

-- The same, in one C call for the tables a JSON decoder builds (elements in the array
-- part, so nothing follows key n); any other table takes the full check.
local function is_array(t, n)
  if n == 0 then return next(t) == nil end
  if next(t, n) == nil then return true end
  return is_sequence(t)
end
_M.is_array = function(t) return type(t) == "table" and is_array(t, #t) end

local function compile_array(r, text_checked)
  local item = r.items and compile(r.items, text_checked) or nil
  local min_items, max_items, compact, unique = r.min_items, r.max_items, r.compact, r.unique
  local min_msg = min_items and ("must hold at least " .. min_items .. plural(min_items, " item", " items"))
  local max_msg = max_items and ("must hold at most " .. max_items .. plural(max_items, " item", " items"))
  -- Arrays of plain strings (names, categories) that are compact and unique, in text
  -- checked as a whole: the element checks inline, and the array comes back as it came
  -- unless an element needs trimming, is empty or repeats (then the general path runs).
  local inline = text_checked and r.items and plain_string(r.items) and r.items.trim ~= false
    and compact and unique and only(r, INLINE_ARRAY_KEYS)
  local item_max = inline and r.items.max_len
  local item_max_msg = item_max and ("must be at most " .. item_max .. plural(item_max, " character", " characters"))
  local general
  if inline then
    -- The same rule through the general path (compiled without text_checked, which only
    -- adds checks and keeps this branch from recursing).
    general = compile_array(setmetatable({ items = r.items }, { __index = r }), false)
  end
  return function(v, parent, key, errs)
    if inline and type(v) == "table" then
      local n = #v
      if n > 0 and n <= 16 and (not max_items or n <= max_items) and next(v, n) == nil then
        local clean = true
        for i = 1, n do
          local e = v[i]
          if type(e) ~= "string" then clean = false; break end
          local len = #e
          if len == 0 or byte(e, 1) <= 32 or byte(e, len) <= 32 then clean = false; break end
          if item_max and len > item_max and utf8len(e) > item_max then
            return INVALID, add(errs, join(parent, key), i, item_max_msg)
          end
          for k = 1, i - 1 do
            if v[k] == e then clean = false; break end
          end
          if not clean then break end
        end
        if clean then return v, errs end
      end
      return general(v, parent, key, errs)
    end
    if type(v) ~= "table" then
      return INVALID, add(errs, parent, key, "must be an array")
    end
    local n = #v
    if not is_array(v, n) then
      return INVALID, add(errs, parent, key, "must be an array")
    end
    if max_items and n > max_items then return INVALID, add(errs, parent, key, max_msg) end
    if n == 0 then
      if min_items and min_items > 0 then return INVALID, add(errs, parent, key, min_msg) end
      return setmetatable({}, array_mt), errs
    end
    -- out stays nil (v is returned as it came) until an element changes or is dropped.
    local path = join(parent, key)
    local out, m, ok, seen = nil, 0, true, nil
    for i = 1, n do
      local e = v[i]
      local c = e
      if e == null then
        c = nil
        if not compact then errs = add(errs, path, i, "must not be null"); ok = false end
      elseif item then
        c, errs = item(e, path, i, errs)
        if c == INVALID then
          ok = false
          c = nil
        elseif c == nil and not compact then
          errs = add(errs, path, i, "must not be empty")
          ok = false
        end
      end
      if c ~= nil and unique then
        if n <= 16 then
          -- Small arrays (names, categories) are scanned: no table per array.
          local src = out or v
          for k = 1, (out and m or i - 1) do
            if src[k] == c then c = nil; break end
          end
        else
          seen = seen or {}
          if seen[c] then c = nil else seen[c] = true end
        end
      end
      if c ~= e and not out then
        out = setmetatable({}, array_mt)
        for k = 1, i - 1 do out[k] = v[k] end
        m = i - 1
      end
      if out and c ~= nil then
        m = m + 1
        out[m] = c
      end
    end
    if not ok then return INVALID, errs end
    if not out then return v, errs end
    if min_items and m < min_items then return INVALID, add(errs, parent, key, min_msg) end
    return out, errs
  end
end

local function compile_object(r, text_checked)
  local names = {}
  for name in pairs(r.fields or {}) do names[#names + 1] = name end
  sort(names)
  local n = #names
  local f_name, f_as, f_check, f_required, f_default, f_drop = {}, {}, {}, {}, {}, {}
  for i = 1, n do
    local fr = r.fields[names[i]]
    f_name[i] = names[i]
    f_as[i] = fr.as or names[i]
    f_check[i] = compile(fr, text_checked)
    f_required[i] = fr.required and true or false
    f_default[i] = fr.default
    f_drop[i] = fr.invalid == "drop"
  end
  local reject_unknown = r.unknown == "reject"
  local in_place = r.in_place
  local known = {}
  for i = 1, n do known[f_name[i]] = true end
  local renames = false
  for i = 1, n do
    if f_as[i] ~= f_name[i] then
      renames = true
      if in_place and known[f_as[i]] then
        error("validate: field " .. f_name[i] .. " is renamed to another field's name", 0)
      end
    end
  end
  if in_place and not renames and not reject_unknown and only(r, BULK_OBJECT_KEYS) then
    -- The bulk case (sync items): a present value the checker returns unchanged costs a
    -- lookup, a call and a comparison; the table is written only where a value changed.
    return function(v, parent, key, errs)
      if type(v) ~= "table" or (v[1] ~= nil) then
        return INVALID, add(errs, parent, key, "must be an object")
      end
      local path = join(parent, key)
      local ok = true
      for i = 1, n do
        local name = f_name[i]
        local fv = v[name]
        if fv ~= nil and fv ~= null then
          local c
          c, errs = f_check[i](fv, path, name, errs)
          if c ~= fv then
            if c == INVALID then
              if f_required[i] or not f_drop[i] then
                ok = false              -- a refused value stays, for the caller's message
              else
                v[name] = f_default[i]
              end
            else
              if c == nil then
                c = f_default[i]
                if c == nil and f_required[i] then
                  errs = add(errs, path, name, "is required")
                  ok = false
                end
              end
              v[name] = c
            end
          end
        elseif f_required[i] then
          errs = add(errs, path, name, "is required")
          ok = false
        else
          v[name] = f_default[i]        -- JSON null: absent
        end
      end
      if not ok then return INVALID, errs end
      return v, errs
    end
  end
  return function(v, parent, key, errs)
    if type(v) ~= "table" or (v[1] ~= nil) then
      return INVALID, add(errs, parent, key, "must be an object")
    end
    local path = join(parent, key)
    local out, ok = in_place and v or {}, true
    for i = 1, n do
      local name = f_name[i]
      local fv = v[name]
      local c, bad
      if fv ~= nil and fv ~= null then
        c, errs = f_check[i](fv, path, name, errs)
        if c == INVALID then
          c, bad = nil, true
          if f_required[i] or not f_drop[i] then ok = false end
        elseif c == nil and f_required[i] then
          errs = add(errs, path, name, "is required")
          ok = false
        end
      elseif f_required[i] then
        errs = add(errs, path, name, "is required")
        ok = false
      end
      if c == nil then c = f_default[i] end
      if in_place then
        local as = f_as[i]
        if as ~= name then
          if fv ~= nil then v[name] = nil end
          if c ~= nil then v[as] = c end
        elseif c ~= fv and not (bad and f_required[i]) then
          v[name] = c     -- a refused required value stays, for the caller's message
        end
      elseif c ~= nil then
        out[f_as[i]] = c
      end
    end
    if reject_unknown then
      for k in pairs(v) do
        if not known[k] then
          errs = add(errs, path, tostring(k), "is not an allowed field")
          ok = false
        end
      end
    end
    if not ok then return INVALID, errs end
    return out, errs
  end
end

local function compile_any()
  return function(v, _, _, errs) return v, errs end
end

-- Wraps a compiled checker with the rule's `check` hook.
local function with_check(c, check, custom)
  if type(check) ~= "function" then error("validate: check must be a function", 0) end
  return function(v, parent, key, errs)
    local out
    out, errs = c(v, parent, key, errs)
    if out == INVALID or out == nil or out == null then return out, errs end
    local fixed, msg = check(out)
    if fixed == nil then
      return INVALID, add(errs, parent, key, custom or msg or "is not valid")
    end
    return fixed, errs
  end
end

-- Wraps a compiled object checker with the rule's `checks` (rules across fields).
local function with_checks(c, r)
  local checks, fields = r.checks, r.fields or {}
  for i = 1, #checks do
    if type(checks[i]) ~= "function" then error("validate: checks must be a list of functions", 0) end
  end
  return function(v, parent, key, errs)
    local out
    out, errs = c(v, parent, key, errs)
    if out == INVALID then return out, errs end
    local path
    for i = 1, #checks do
      local field, msg = checks[i](out)
      if field ~= nil then
        path = path or join(parent, key)
        errs = add(errs, path, field, msg or "is not valid")
        local fr = fields[field]
        if not fr or fr.required or fr.invalid ~= "drop" then return INVALID, errs end
        out[fr.as or field] = nil
      end
    end
    return out, errs
  end
end

local caches = {
  [false] = setmetatable({}, { __mode = "k" }),
  [true] = setmetatable({}, { __mode = "k" }),
}

function compile(r, text_checked)
  text_checked = text_checked and true or false
  local cache = caches[text_checked]
  local c = cache[r]
  if c then return c end
  if type(r) ~= "table" then error("validate: a rule must be a table", 0) end
  for k in pairs(r) do
    if not KNOWN[k] then error("validate: unknown rule key " .. tostring(k), 0) end
  end
  local t = r.type
  if t == "string" then c = compile_string(r, text_checked)
  elseif t == "integer" then c = compile_number(r, true)
  elseif t == "number" then c = compile_number(r, false)
  elseif t == "boolean" then c = compile_boolean(r)
  elseif t == "array" then c = compile_array(r, text_checked)
  elseif t == "object" then c = compile_object(r, text_checked)
  elseif t == "any" then c = compile_any()
  else error("validate: unknown type " .. tostring(t), 0) end
  if r.check ~= nil then c = with_check(c, r.check, r.message) end
  if r.checks ~= nil then
    if t ~= "object" then error("validate: checks is for object rules", 0) end
    c = with_checks(c, r)
  end
  cache[r] = c
  return c
end

-- Compiles rule (and every rule inside it) now; raises on a malformed rule. Optional:
-- check() compiles on first use. Route files call it at load time so a broken rule
-- table is refused by the reload instead of failing requests.
function _M.compile(rule)
  compile(rule, false)
  return rule
end

local function run(c, rule, value, path)
  if value == nil or value == null then
    if rule.required then return nil, add(nil, path, nil, "is required") end
    return rule.default, nil
  end
  local out, errs = c(value, path, nil, nil)
  if out == INVALID then return nil, errs end
  return out, errs
end

-- validate.check(rule, value[, path]) -> cleaned | nil, errs | nil
-- An absent value (nil or JSON null) is refused when rule.required, else cleaned to nil
-- (or rule.default).
function _M.check(rule, value, path)
  return run(caches[false][rule] or compile(rule, false), rule, value, path)
end

-- validate.checker(rule[, opts]) -> function(value[, path]) -> cleaned | nil, errs | nil,
-- the same as check() without the per-call rule lookup. opts.text_checked: see the top.
function _M.checker(rule, opts)
  local c = compile(rule, opts and opts.text_checked)
  return function(value, path) return run(c, rule, value, path) end
end

-- The problems as one line ("titles[2].asin: is required; ..."), at most `max` of them.
function _M.summary(errs, max)
  if not errs or #errs == 0 then return "" end
  max = max or 5
  local parts = {}
  for i = 1, (#errs < max and #errs or max) do
    local e = errs[i]
    parts[i] = (e.path ~= "" and (e.path .. ": ") or "") .. e.message
  end
  if #errs > max then parts[#parts + 1] = format("and %d more", #errs - max) end
  return concat(parts, "; ")
end

return _M
