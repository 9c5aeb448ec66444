-- types: the identifiers the whole API shares, each defined once, as validate.lua rules
-- (for bodies) and predicates (for path parameters and tokens), with one message each.
--
--   asin = types.ASIN                    -- a rule: required, upper-cased, checked
--   if not types.is_asin(s) then ...     -- s already upper-cased
--
-- ASIN: the ids real exports carry for a title: a 10-character ASIN (B0... letters and
-- digits, or an ISBN-10, digits ending in a digit or X) or a 13-digit one (ISBN-13 /
-- EAN). Anything else is refused. sql/005_asin_13.sql keeps the catalog's CHECK in step.
local _M = {}

local validate = require("validate")
local uuid_format = validate.formats.uuid
local type = type

local ASIN_MESSAGE = "must be an ASIN: 10 letters or digits, or 13 digits"
local HANDLE_MESSAGE = "must be 3 to 30 letters, digits or underscores"

-- The ASIN rule's check (validate.lua): v, or nil and the message. Data, so host.bulk runs
-- it in C (validate.shape_check).
local asin_check = validate.shape_check(ASIN_MESSAGE, {
  { len = 10, pattern = "^[A-Z0-9]+$" },
  { len = 13, pattern = "^%d+$" },
})

-- s (upper-cased) is an ASIN.
function _M.is_asin(s)
  return asin_check(s) ~= nil
end

function _M.is_uuid(s)
  return type(s) == "string" and uuid_format(s) ~= nil
end

_M.ASIN_MESSAGE = ASIN_MESSAGE
_M.ASIN = { type = "string", required = true, upper = true, check = asin_check, message = ASIN_MESSAGE }
_M.HANDLE = { type = "string", required = true, min_len = 3, max_len = 30,
  pattern = "^[A-Za-z0-9_]+$", message = HANDLE_MESSAGE }
_M.URL = { type = "string", format = "http_url", max_len = 2048 }

return _M
