-- bench_bulk: the sync body's decode and validation in-process (issue 16), the Lua path the
-- route had (lua-cjson, then validate.lua per item) against host.bulk (core/bulk.c), on the
-- fixture library: 10,000 titles with full metadata (~9.5 MB) and as the extension sends
-- them (~1.8 MB). No server, no database: `make bench-bulk`.
--
--   lua5.4 bench/bench_bulk.lua      (env: BENCH_SIZE=10000, BENCH_RUNS=9)
--
-- Each run times, back to back on the same text: cjson decode; the Lua validation the
-- route ran (validate.text_ok over the text, then validate.checker(ITEM, text_checked) on
-- each decoded item); host.bulk.decode (decode and validation); the columns the import
-- reads (asin, source, listeningProgress, personalRating, dateAdded, present); and the two
-- prepares (sync_import.prepare on cjson's tables, prepare_columns on host.bulk's columns).
-- Medians in ms, with the load average (the machine is shared: compare within one run).
package.path = "./?.lua;./lua/?.lua;" .. package.path
package.cpath = "./build/?.so;" .. package.cpath

local host_mod = require("host")
if rawget(_G, "host") == nil then
  local config = dofile("./config.lua")
  rawset(_G, "host", setmetatable({ config = config, log = function() end }, { __index = host_mod }))
end

local lib = require("spec.fixtures.library")
local validate = require("validate")
local rules = require("sync_rules")
local sync_import = require("sync_import")

local SIZE = tonumber(os.getenv("BENCH_SIZE") or "10000")
local RUNS = tonumber(os.getenv("BENCH_RUNS") or "9")
local clock = os.clock
local cjson = host.json
local bulk = host.bulk
local COLUMNS = { "asin", "source", "listeningProgress", "personalRating", "dateAdded" }

assert(SIZE <= host.config.sync_max_titles, "BENCH_SIZE is above sync_max_titles")
local SPEC = assert(bulk.compile(rules.ITEM, { fields = sync_import.PRESENT_FIELDS,
  blank = rules.PLACEHOLDERS, sent = "asin", shapes = validate.shapes }))
local CHECK = validate.checker(rules.ITEM, { text_checked = true })

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

local function ms(f)
  collectgarbage()
  local t = clock()
  local r = f()
  return (clock() - t) * 1000, r
end

local function columns_of(b)
  local src = { received = b:received(), present = b:present(), refused = b:refused(),
    dropped = b:dropped(), sent = function(i) return b:sent(i) end,
    item = function(i) return b:item(i) end }
  for _, c in ipairs(COLUMNS) do src[c] = b:column(c) end
  return src
end

local function bench(name, text)
  local t = { cjson = {}, lua_validate = {}, bulk = {}, columns = {}, prepare_lua = {},
    prepare_columns = {} }
  for _ = 1, RUNS do
    local d, body = ms(function() return cjson.decode(text) end)
    t.cjson[#t.cjson + 1] = d
    t.lua_validate[#t.lua_validate + 1] = ms(function()
      local checked = validate.text_ok(text)
      assert(checked)
      local titles = body.titles
      for i = 1, #titles do titles[i] = CHECK(titles[i]) end
    end)
    body = cjson.decode(text)
    t.prepare_lua[#t.prepare_lua + 1] = ms(function() return sync_import.prepare(body, true) end)
    local b
    t.bulk[#t.bulk + 1], b = ms(function() return assert(bulk.decode(SPEC, text, "titles", SIZE)) end)
    local src
    t.columns[#t.columns + 1], src = ms(function() return columns_of(b) end)
    t.prepare_columns[#t.prepare_columns + 1] = ms(function() return sync_import.prepare_columns(src) end)
  end
  local m = {}
  for k, v in pairs(t) do m[k] = median(v) end
  print(string.format("%-10s %5.1f MB | cjson %6.1f  + Lua validate %6.1f  = %6.1f | host.bulk %6.1f" ..
    "  + columns %5.1f  = %6.1f | prepare: Lua %6.1f, columns %6.1f", name, #text / 1e6, m.cjson,
    m.lua_validate, m.cjson + m.lua_validate, m.bulk, m.columns, m.bulk + m.columns, m.prepare_lua,
    m.prepare_columns))
end

local f = io.open("/proc/loadavg")
local load = f and f:read("l") or "?"
if f then f:close() end
print(string.format("bench-bulk: %d titles, median of %d runs, ms (load %s)", SIZE, RUNS, load))
local items = lib.generate(SIZE, { seed = 7 })
bench("full", lib.payload(items, cjson.encode))
bench("extension", lib.payload(lib.extension_items(items), cjson.encode))
