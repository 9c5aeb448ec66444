-- response: the answers a handler returns, built the same way everywhere (the framework's
-- own errors, plain JSON answers, and conditional GETs).
--   response.json(status, body[, headers])  -> resp: body a table (encoded) or JSON text;
--                                              Content-Type JSON, Cache-Control no-store
--                                              unless headers say otherwise
--   response.conditional(ctx, text)          -> 200 with an ETag, or 304 when the request's
--                                              If-None-Match names it (see below)
--   response.etag(text), response.matches(if_none_match, tag)
local _M = {}

local json = require("json")

local type, sub, find, gsub = type, string.sub, string.find, string.gsub
local crypto = host.crypto

local JSON_TYPE = "application/json; charset=utf-8"
local CONDITIONAL_CACHE = "private, no-cache"

function _M.json(status, body, headers)
  headers = headers or {}
  headers["Content-Type"] = headers["Content-Type"] or JSON_TYPE
  headers["Cache-Control"] = headers["Cache-Control"] or "no-store"
  local text = ""
  if status ~= 204 and status ~= 304 and body ~= nil then
    text = type(body) == "string" and body or json.encode(body)
  end
  return { status = status, headers = headers, body = text }
end

-- An entity tag for text: weak (W/), because the C core may send the same JSON gzipped,
-- and a strong tag would have to differ between the two encodings.
function _M.etag(text)
  return 'W/"' .. sub(crypto.sha256_hex(text), 1, 32) .. '"'
end

-- True when an If-None-Match header value names tag (weak comparison, RFC 9110 13.1.2).
function _M.matches(header, tag)
  if not header then return false end
  if find(header, "^%s*%*%s*$") then return true end
  local opaque = sub(tag, 3)                      -- without W/
  for candidate in header:gmatch("[^,]+") do
    candidate = gsub(gsub(candidate, "^%s+", ""), "%s+$", "")
    if sub(candidate, 1, 2) == "W/" then candidate = sub(candidate, 3) end
    if candidate == opaque then return true end
  end
  return false
end

-- The answer to a read: 200 with the JSON text, an ETag and Cache-Control private
-- (no-cache: the browser revalidates each time, and gets a 304 when nothing changed), or
-- 304 with no body when If-None-Match names the current ETag.
function _M.conditional(ctx, text)
  local tag = _M.etag(text)
  local headers = { ETag = tag, ["Cache-Control"] = CONDITIONAL_CACHE }
  if _M.matches(ctx.req.headers["if-none-match"], tag) then
    return _M.json(304, nil, headers)
  end
  return _M.json(200, text, headers)
end

return _M
