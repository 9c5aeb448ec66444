-- json: host.json (lua-cjson) with two additions: decode returns nil, message instead of
-- raising, and tables marked with json.array() encode as [] even when empty (cjson alone
-- cannot tell an empty array from an empty object).
local _M = {}

local cjson = host.json
local array_mt = host.array_mt
local pcall, type, next, pairs, getmetatable, setmetatable = pcall, type, next, pairs, getmetatable, setmetatable
local gsub = string.gsub

_M.null = cjson.null
_M.array_mt = array_mt

-- Marks t (or a new table) as a JSON array.
function _M.array(t)
  return setmetatable(t or {}, array_mt)
end

function _M.is_array(t)
  return getmetatable(t) == array_mt
end

function _M.decode(s)
  local ok, v = pcall(cjson.decode, s)
  if ok then return v end
  return nil, (gsub(tostring(v), "^.-: ", ""))
end

-- A marker no real data contains (strings carrying NUL never reach the database).
local EMPTY = "\0shelfsync_empty_array\0"
local EMPTY_JSON = '"\\u0000shelfsync_empty_array\\u0000"'

-- Returns v with marked empty arrays replaced by EMPTY, copying only what changes.
local function prep(v)
  if type(v) ~= "table" then return v, false end
  if next(v) == nil then
    if getmetatable(v) == array_mt then return EMPTY, true end
    return v, false
  end
  local copy, changed = nil, false
  for k, child in pairs(v) do
    local nv, c = prep(child)
    if c then
      if not copy then
        copy = {}
        for k2, v2 in pairs(v) do copy[k2] = v2 end
      end
      copy[k] = nv
      changed = true
    end
  end
  return copy or v, changed
end

function _M.encode(v)
  local p, changed = prep(v)
  local s = cjson.encode(p)
  if changed then
    s = gsub(s, EMPTY_JSON, "[]")
  end
  return s
end

return _M
