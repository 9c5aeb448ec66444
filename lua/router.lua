-- router: method + path -> route and path params.
-- Paths are literal segments and ":name" params ("/api/lists/:id"). A literal segment
-- beats a param at the same place, so "/api/library/facets" wins over "/api/library/:asin".
local _M = {}
local mt = { __index = _M }

local gmatch, sub, byte, concat, sort = string.gmatch, string.sub, string.byte, table.concat, table.sort
local COLON = byte(":")

local function split(path)
  local segs = {}
  for seg in gmatch(path, "[^/]+") do segs[#segs + 1] = seg end
  return segs
end

function _M.new()
  return setmetatable({ by_len = {}, count = 0 }, mt)
end

-- route: any table; route.method and route.path are required.
function _M:add(route)
  local segs = split(route.path)
  local pattern = {}
  for i, seg in ipairs(segs) do
    if byte(seg, 1) == COLON then
      pattern[i] = { param = sub(seg, 2) }
    else
      pattern[i] = { literal = seg }
    end
  end
  local list = self.by_len[#segs]
  if not list then
    list = {}
    self.by_len[#segs] = list
  end
  for _, other in ipairs(list) do
    if other.route.method == route.method and other.route.path == route.path then
      error("duplicate route " .. route.method .. " " .. route.path, 2)
    end
  end
  -- Specificity: literal segments earlier in the path rank first.
  local rank = {}
  for i, p in ipairs(pattern) do rank[i] = p.literal and "0" or "1" end
  list[#list + 1] = { route = route, pattern = pattern, rank = concat(rank) }
  sort(list, function(a, b) return a.rank < b.rank end)
  self.count = self.count + 1
end

-- Every route, in the order match() tries them (path length, then specificity).
function _M:list()
  local out, lens = {}, {}
  for n in pairs(self.by_len) do lens[#lens + 1] = n end
  sort(lens)
  for _, n in ipairs(lens) do
    for _, entry in ipairs(self.by_len[n]) do out[#out + 1] = entry.route end
  end
  return out
end

local function match_pattern(pattern, segs)
  local params = {}
  for i, p in ipairs(pattern) do
    local seg = segs[i]
    if p.literal then
      if p.literal ~= seg then return nil end
    else
      params[p.param] = seg
    end
  end
  return params
end

-- Returns route, params; or nil, "not_found"; or nil, "method_not_allowed", allowed ("GET, POST").
function _M:match(method, path)
  local segs = split(path)
  local list = self.by_len[#segs]
  if not list then return nil, "not_found" end
  local allowed, seen_path = {}, nil
  for _, entry in ipairs(list) do
    local params = match_pattern(entry.pattern, segs)
    if params then
      local m = entry.route.method
      if m == method or (method == "HEAD" and m == "GET") then
        return entry.route, params
      end
      -- Only the most specific matching path counts for 405.
      if seen_path == nil or seen_path == entry.route.path then
        seen_path = entry.route.path
        allowed[#allowed + 1] = m
      end
    end
  end
  if #allowed == 0 then return nil, "not_found" end
  sort(allowed)
  return nil, "method_not_allowed", concat(allowed, ", ")
end

return _M
