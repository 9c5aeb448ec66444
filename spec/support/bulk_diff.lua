-- bulk_diff: host.bulk (core/bulk.c) compared with the Lua path it replaces (lua-cjson, then
-- validate.checker on each element), for spec/unit/bulk_spec.lua and fuzz/fuzz_bulk.c.
--
--   local problem, b, kind = bulk_diff.compare(spec, text[, max[, rule[, key]]])
--
-- problem is nil when both agree on text: the envelope, the count, and for each element its
-- cleaned value (b:item, b:column), its problems (b:refused / b:dropped, same paths,
-- messages and order) and, for sync_rules.ITEM (compiled with opts.fields = FIELDS and
-- opts.sent = "asin"), the presence mask (b:present) and a refused element's asin as sent
-- (b:sent). Numbers must agree in subtype too (an integer is not a float).
local _M = {}

local validate = require("validate")
local rules = require("sync_rules")
local json = require("json")

local cjson = host.json
local type, pairs, tostring, getmetatable, pcall = type, pairs, tostring, getmetatable, pcall
local mtype, format = math.type, string.format

-- The fields whose presence the sync import reads (any order works; this one is the lead's).
_M.FIELDS = { "asin", "source", "listeningProgress", "personalRating", "dateAdded", "authors",
  "narrators", "categories", "title", "subtitle", "rating", "coverImageUrl" }

function _M.bit(name)
  for j, f in ipairs(_M.FIELDS) do
    if f == name then return j end
  end
end

local function show(v)
  if type(v) == "string" then return format("%q", v) end
  if type(v) == "number" then return (mtype(v) or "") .. " " .. tostring(v) end
  return tostring(v)
end

-- nil when a and b are the same value (numbers: same subtype; tables: same metatable).
local function diff(a, b, path)
  path = path or ""
  if type(a) ~= type(b) then return format("%s: %s vs %s", path, show(a), show(b)) end
  if type(a) == "number" then
    if mtype(a) ~= mtype(b) or a ~= b then return format("%s: %s vs %s", path, show(a), show(b)) end
    return nil
  end
  if type(a) ~= "table" then
    if a ~= b then return format("%s: %s vs %s", path, show(a), show(b)) end
    return nil
  end
  if getmetatable(a) ~= getmetatable(b) then return path .. ": metatables differ" end
  for k, v in pairs(a) do
    local p = diff(v, b[k], path .. "." .. tostring(k))
    if p then return p end
  end
  for k, v in pairs(b) do
    if a[k] == nil then return format("%s.%s: missing vs %s", path, tostring(k), show(v)) end
  end
  return nil
end
_M.diff = diff

local BLANK = {}
for _, v in ipairs(rules.PLACEHOLDERS) do BLANK[v] = true end

local function lua_mask(it)
  local mask = 0
  for j, name in ipairs(_M.FIELDS) do
    local v = it[name]
    local present
    if type(v) == "table" then
      present = false
      for i = 1, #v do
        if not BLANK[v[i]] then present = true end
      end
    else
      present = v ~= nil and v ~= json.null and not BLANK[v]
    end
    if present then mask = mask | (1 << (j - 1)) end
  end
  return mask
end

local function envelope(body, key)
  if type(body) ~= "table" or body[1] ~= nil then return "must be an object" end
  local t = body[key]
  if t == nil or t == json.null then return "is required" end
  if not validate.is_array(t) then return "must be an array" end
end

local function elements(b, titles, rule, check, is_item)
  local refused, dropped, present = b:refused(), b:dropped(), b:present()
  local columns = {}
  for name in pairs(rule.fields) do columns[name] = b:column(name) end
  for i = 1, #titles do
    local raw = titles[i]
    local sent
    if type(raw) == "table" and type(raw.asin) ~= "table" then sent = raw.asin end
    local it, errs = check(raw)
    local at = "element " .. i
    local p
    if it == nil then
      p = diff(errs or {}, refused[i], at .. " refused")
      if not p and (dropped[i] ~= nil or b:item(i) ~= nil or present[i] ~= nil) then
        p = at .. ": refused by Lua, not by C"
      end
      if not p and is_item then p = diff(sent, b:sent(i), at .. " sent") end
      for name, col in pairs(columns) do
        if not p and col[i] ~= nil then p = at .. ": column " .. name .. " of a refused element" end
      end
    else
      if refused[i] ~= nil then
        p = at .. ": refused by C: " .. validate.summary(refused[i])
      end
      p = p or diff(errs, dropped[i], at .. " dropped")
      local want = {}
      for name in pairs(rule.fields) do want[name] = it[name] end
      p = p or diff(want, b:item(i), at .. " item")
      for name, col in pairs(columns) do
        p = p or diff(it[name], col[i], at .. " column " .. name)
      end
      if not p and is_item and present[i] ~= lua_mask(it) then
        p = format("%s: present %s vs %s", at, tostring(lua_mask(it)), tostring(present[i]))
      end
    end
    if p then return p end
  end
  for _, map in ipairs({ refused, dropped, present }) do
    for k in pairs(map) do
      if type(k) ~= "number" or k < 1 or k > #titles then return "stray key " .. tostring(k) end
    end
  end
end

-- opts.cjson_only: host.bulk may answer "json" for a text lua-cjson reads (its leniencies,
-- which the route hands to cjson); without it, that is a disagreement.
function _M.compare(spec, text, max, rule, key, opts)
  rule, key = rule or rules.ITEM, key or "titles"
  local b, kind, message = host.bulk.decode(spec, text, key, max)
  local ok, body = pcall(cjson.decode, text)
  if not ok then
    if b or kind ~= "json" then return "cjson refuses the text, bulk answers " .. tostring(kind), b, kind end
    return nil, b, kind
  end
  if kind == "json" then
    if opts and opts.cjson_only then return nil, b, kind end
    return "cjson reads the text, bulk says: " .. tostring(message), b, kind
  end
  local want = envelope(body, key)
  if want then
    if kind ~= "envelope" or message ~= want then
      return format("envelope %s, bulk answers %s %s", want, tostring(kind), tostring(message)), b, kind
    end
    return nil, b, kind
  end
  local titles = body[key]
  if max and #titles > max then
    if kind ~= "too_many" or message ~= #titles then
      return format("%d titles, bulk answers %s %s", #titles, tostring(kind), tostring(message)), b, kind
    end
    return nil, b, kind
  end
  if not b then return "bulk answers " .. tostring(kind) .. " " .. tostring(message), b, kind end
  if b:received() ~= #titles then
    return format("%d titles, bulk received %d", #titles, b:received()), b, kind
  end
  local problem = elements(b, titles, rule, validate.checker(rule), rule == rules.ITEM)
  return problem, b, kind
end

return _M
