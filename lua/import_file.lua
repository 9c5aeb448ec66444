-- import_file: a library file (POST /api/import, `shelfsync import`) imported like a sync.
--
--   local res = import_file.run(user_id, body, first, last, opts)
--     body:sub(first, last) is the file, raw or gzip (sniffed from its bytes);
--     opts = {source = "auto" | "LIBRARY" | "WISHLIST", marketplace = "us", dry_run = bool}
--     res = sync_import.run's answer plus format, covers (the sources replaced), marketplace
--   local prep, imp, covers = import_file.prepare(body, first, last, opts)
--     the same up to the database: the file read and validated, nothing written
--
-- The format is sniffed from the content, never the file name: JSON ("{" or "[" first)
-- is read item by item by host.upload.json, keeping only the fields some importer reads;
-- anything else is read as CSV/TSV (lua/csv.lua). Each format is an importer module in
-- lua/importers/ (hot-reloaded; an operator adds one by dropping a file there):
--
--   return {
--     format = "name",                 -- what the answer's `format` says
--     json = { lists = {items = "LIBRARY", products = "WISHLIST", [""] = "file"},
--              match = function(key, first_item) -> bool },
--       -- lists: the top-level members holding items ("" = a top-level array) and the
--       -- source of their items; "file": the request says, else evidence decides
--     csv = { match = function(columns) -> bool },   -- columns: set of norm.key(header)
--     fields = {"asin", rating = {"num_ratings"}},  -- the JSON item keys convert reads:
--                                      -- a name keeps the value whole, name = {...} only
--                                      -- those keys of the objects in it
--     flat = true,                     -- keys reach convert as norm.key(key), as CSV's do
--     convert = function(raw, ctx) -> item,   -- sync wire names (lua/sync_rules.lua);
--       -- ctx = {kind = "json" | "csv", list_source =, marketplace =}
--     evidence = function(raw) -> bool,  -- (optional) this row can only be a LIBRARY one
--     default_source = "LIBRARY",      -- (optional) a "file" list without evidence
--   }
--
-- Then lua/sync_import.lua does the rest, the same validation, upserts and transaction
-- as a sync, with covers = the sources the file holds: a wishlist file replaces the
-- wishlist only, and manual entries are never removed.
local _M = {}

local errors = require("errors")
local csv = require("csv")
local norm = require("import_norm")
local sync_import = require("sync_import")

local upload = host.upload
local config = host.config
local type, pairs, ipairs, tonumber, require = type, pairs, ipairs, tonumber, require
local format, find, byte, sub = string.format, string.find, string.byte, string.sub
local floor = math.floor
local clock_ms = host.clock_ms
local null = host.json.null

local SOURCES = { LIBRARY = true, WISHLIST = true }

local function setting(name, default)
  local v = tonumber(config[name])
  if not v or v < 1 then return default end
  return floor(v)
end

-- ---- the importers ----

local function check_importer(name, imp)
  local function bad(why) error(name .. ": " .. why, 0) end
  if type(imp) ~= "table" then bad("must return a table") end
  if type(imp.format) ~= "string" then bad("needs a format name") end
  if type(imp.convert) ~= "function" then bad("needs convert(raw, ctx)") end
  if imp.json and (type(imp.json.lists) ~= "table" or type(imp.json.match) ~= "function") then
    bad("json needs lists and match(key, item)")
  end
  if imp.csv and type(imp.csv.match) ~= "function" then bad("csv needs match(columns)") end
end

-- Adds an importer's fields to the reader's keep tree: "name" keeps the value whole,
-- name = {...} only the parts of it listed the same way (host.upload.json's keep).
local function merge_keep(into, fields)
  for k, v in pairs(fields) do
    if type(k) == "number" then
      into[v] = true
    elseif into[k] ~= true then
      into[k] = into[k] or {}
      merge_keep(into[k], v)
    end
  end
end

-- Loaded once per VM (a VM is rebuilt when a file under lua/ changes).
local IMPORTERS, KEEP, LISTED = {}, {}, {}
for _, name in ipairs(host.modules and host.modules("importers") or {}) do
  local imp = require(name)
  check_importer(name, imp)
  IMPORTERS[#IMPORTERS + 1] = imp
  merge_keep(KEEP, imp.fields or {})
  for key in pairs(imp.json and imp.json.lists or {}) do LISTED[key] = true end
end
_M.importers = IMPORTERS

-- ---- errors ----

local function refuse(status, code, message, path)
  errors.raise(status, code, message, { { path = path or "file", message = message } })
end

local READ_ERRORS = {
  malformed = { 400, "malformed_file" },
  too_deep = { 400, "malformed_file" },
  too_large = { 413, "payload_too_large" },
}

local function read_error(message, code)
  local e = READ_ERRORS[code] or READ_ERRORS.malformed
  refuse(e[1], e[2], "the file could not be read: " .. message)
end

local function unrecognised(why)
  refuse(415, "unsupported_format", "the file's format was not recognised (" .. why .. "); " ..
    "expected an Audible API page, an audible-cli, Libation or Audible Library Extractor " ..
    "export, or the extension's download")
end

-- ---- collecting items ----

-- The state of one import while items arrive.
local function new_run(opts)
  return {
    items = {}, n = 0, max = setting("import_file_max_items", 100000),
    wanted = opts.source,            -- LIBRARY | WISHLIST | nil (auto)
    skipped = 0,                     -- items of the other source when one was asked for
    evidence = false,                -- some "file" row can only be a library one
    file_rows = {},                  -- items whose source the file does not say
    covers = {},
    ctx = { marketplace = opts.marketplace },
  }
end

local function flatten(raw)
  local out = {}
  for k, v in pairs(raw) do
    if v ~= null then out[norm.key(k)] = v end
  end
  return out
end

-- One raw item from list `key` (whose source is list_source) into the run.
local function add(run, imp, raw, list_source)
  if imp.flat and type(raw) == "table" then raw = flatten(raw) end
  run.ctx.list_source = list_source ~= "file" and list_source or nil
  local item = type(raw) == "table" and imp.convert(raw, run.ctx) or raw
  if type(item) == "table" then
    local source = item.source or run.ctx.list_source
    if run.wanted and source and source ~= run.wanted then
      run.skipped = run.skipped + 1
      return
    end
    if not source then
      run.file_rows[#run.file_rows + 1] = item
      if imp.evidence and not run.evidence and imp.evidence(raw) then run.evidence = true end
    end
    item.source = source
  end
  if run.n >= run.max then
    refuse(413, "too_many_titles", format("a file holds at most %d titles", run.max))
  end
  run.n = run.n + 1
  run.items[run.n] = item
end

-- Items whose source the file does not say: the request's, else the evidence's.
local function settle_sources(run, imp)
  local source = run.wanted
  if not source then
    source = run.evidence and "LIBRARY" or imp.default_source or
      (imp.evidence and "WISHLIST" or "LIBRARY")
  end
  for _, item in ipairs(run.file_rows) do item.source = source end
  for i = 1, run.n do
    local it = run.items[i]
    if type(it) == "table" and SOURCES[it.source] then run.covers[it.source] = true end
  end
end

-- The importer whose JSON list `key` holds items like `item`.
local function json_importer(key, item)
  for _, imp in ipairs(IMPORTERS) do
    if imp.json and imp.json.lists[key] and imp.json.match(key, item) then return imp end
  end
  return nil
end

local function read_json(run, body, first, last)
  local reader = upload.json(body, first, last, { limit = setting("import_file_max_bytes", 268435456),
                                                  keep = KEEP })
  local imp
  while true do
    local key, raw, code = reader:next()
    if code then read_error(raw, code) end
    if raw == nil then break end
    key = key or ""
    if not imp and LISTED[key] and type(raw) == "table" then
      imp = json_importer(key, raw)
      if not imp then
        unrecognised(key == "" and "a JSON array of unknown items" or
          format('a JSON object whose "%s" holds unknown items', sub(key, 1, 40)))
      end
    end
    local list_source = imp and imp.json.lists[key]
    if list_source then add(run, imp, raw, list_source) end
  end
  if not imp then unrecognised("a JSON document with no list of titles") end
  return imp
end

local function read_csv(run, body, first, last)
  local text, msg, code = upload.text(body, first, last, setting("import_file_max_bytes", 268435456))
  if not text then read_error(msg, code) end
  if not utf8.len(text) then
    refuse(400, "malformed_file", "the file is neither JSON nor UTF-8 text")
  end
  local rows = csv.reader(text, { max_columns = 1000 })
  local header = rows()
  if rows.error then read_error(rows.error, "malformed") end
  if not header then unrecognised("an empty file") end
  local columns, keys = {}, {}
  for i, h in ipairs(header) do
    keys[i] = norm.key(h)
    columns[keys[i]] = i
  end
  local imp
  for _, cand in ipairs(IMPORTERS) do
    if cand.csv and cand.csv.match(columns) then imp = cand break end
  end
  if not imp then unrecognised("a CSV/TSV file with unknown columns") end
  run.ctx.kind = "csv"
  local list_source = imp.csv.source or "file"
  for row in rows do
    local raw = {}
    for i, v in ipairs(row) do
      local k = keys[i]
      if k and v ~= "" then raw[k] = v end
    end
    add(run, imp, raw, list_source)
  end
  if rows.error then read_error(rows.error, "malformed") end
  return imp
end

-- True when the bytes (after a BOM and blanks) start like JSON.
local function looks_json(head)
  local i = 1
  if sub(head, 1, 3) == "\239\187\191" then i = 4 end
  local _, e = find(head, "^%s*", i)
  local c = byte(head, e + 1)
  return c == 123 or c == 91     -- { [
end

-- The file read, sourced and validated, without the database: sync_import.prepare_items'
-- answer (with the skipped-source warning), the importer, the sources the file covers, and
-- the read and validation times. Raises the errors the route answers (400, 413, 415, 422).
-- The library-file fuzz target (fuzz/fuzz_import.c) drives this.
function _M.prepare(body, first, last, opts)
  if last < first then refuse(400, "malformed_file", "the file is empty") end
  local head, err = upload.head(body, first, last, 4096)
  if not head then read_error(err, "malformed") end
  local run = new_run(opts)
  local t0 = clock_ms()
  local imp
  if looks_json(head) then
    run.ctx.kind = "json"
    imp = read_json(run, body, first, last)
  else
    imp = read_csv(run, body, first, last)
  end
  settle_sources(run, imp)
  local t1 = clock_ms()
  local prep = sync_import.prepare_items(run.items)
  run.items = nil
  if run.skipped > 0 then
    local w = prep.warnings      -- (sync_import's warning list: lines, then a count)
    if w.n < w.cap then
      w.n = w.n + 1
      w.list[w.n] = format("%d %s of the other source skipped: only %s was asked for",
        run.skipped, run.skipped == 1 and "title" or "titles", run.wanted)
    else
      w.extra = w.extra + 1
    end
  end
  return prep, imp, run.covers, t1 - t0, clock_ms() - t1
end

-- See the header.
function _M.run(user_id, body, first, last, opts)
  local prep, imp, covers, read_ms, validate_ms = _M.prepare(body, first, last, opts)
  local res = sync_import.run(user_id, nil, prep, { covers = covers, dry_run = opts.dry_run })
  local list = {}
  for s in pairs(covers) do list[#list + 1] = s end
  table.sort(list)
  res.format, res.covers, res.marketplace, res.invalid = imp.format, list, opts.marketplace, prep.invalid
  res.read_ms, res.validate_ms = read_ms, validate_ms
  return res
end

return _M
