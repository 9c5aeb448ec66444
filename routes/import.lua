-- Library files (DESIGN.md, "Title metadata", and issue 14):
--   POST /api/import?source=auto|LIBRARY|WISHLIST&marketplace=us&dryRun=1   signed in
-- The body is the file itself (any Content-Type; gzip by Content-Encoding or as a .gz
-- file: the bytes say) or multipart/form-data with a `file` part, whose `source`,
-- `marketplace` and `dryRun` parts count like the query's. The format is sniffed from
-- the content (lua/import_file.lua). Answers like POST /api/sync/import, plus
-- `format`, `covers` (the sources the file replaced), `marketplace` and `dryRun`.
-- dryRun runs the whole import and rolls it back: the counts and warnings a commit
-- would give, for the web page's preview; it writes nothing, not even history.
--
-- The body reaches Lua as sent (raw_body: core/http_server.c leaves its gzip alone; at
-- most body_limit = import_file_max_bytes): host.upload inflates it while reading, to
-- that same limit, so a large file is never held inflated. Refused files answer 400
-- malformed_file (with the line and item), 413 payload_too_large / too_many_titles, 415
-- unsupported_format / unsupported_encoding, 422 no_valid_titles, and write a failed
-- sync_history row like a sync.
local db = require("db")
local errors = require("errors")
local import_file = require("import_file")
local sync_import = require("sync_import")

local ipairs, xpcall, error, tostring, setmetatable = ipairs, xpcall, error, tostring, setmetatable
local find, match, sub, lower, format = string.find, string.match, string.sub, string.lower,
  string.format
local clock_ms = host.clock_ms

local MARKETPLACES = { us = true, uk = true, de = true, fr = true, ca = true, it = true,
                       au = true, ["in"] = true, jp = true, es = true, br = true }
local SOURCES = { auto = "auto", library = "LIBRARY", wishlist = "WISHLIST" }
local TRUE = { ["1"] = true, ["true"] = true, yes = true }
local DEFAULT_MARKETPLACE = "us"

local function bad_parameter(name, message)
  errors.raise(400, "invalid_parameter", message, { { path = name, message = message } })
end

-- ---- multipart/form-data: part boundaries found in place, the file never copied ----

-- Returns {name = {first, last}} for every part, or raises 400.
local function form_parts(body, ctype)
  local boundary = match(ctype, 'boundary="([^"]+)"') or match(ctype, "boundary=([^;%s]+)")
  if not boundary or #boundary > 200 then
    errors.raise(400, "malformed_body", "multipart/form-data needs a boundary")
  end
  local delim = "--" .. boundary
  local a, b = find(body, delim, 1, true)
  local parts = {}
  while a do
    if sub(body, b + 1, b + 2) == "--" then return parts end
    local hstart = b + 3                          -- after the boundary's CRLF
    local hend = find(body, "\r\n\r\n", hstart, true)
    if not hend or hend - hstart > 4096 then break end
    local headers = sub(body, hstart, hend - 1)
    local name = match(headers, '[Nn][Aa][Mm][Ee]="([^"]*)"')
    local data = hend + 4
    a, b = find(body, "\r\n" .. delim, data, true)
    if not a then break end
    if name and not parts[name] then parts[name] = { data, a - 1 } end
  end
  errors.raise(400, "malformed_body", "the multipart/form-data body is cut short or malformed")
end

-- The request's file (body, first, last) and its parameters.
local function request_file(req)
  local body, params = req.body or "", {}
  local q = req.query or {}
  params.source, params.marketplace, params.dryRun = q.source, q.marketplace, q.dryRun
  local first, last = 1, #body
  local ctype = lower(req.headers["content-type"] or "")
  if find(ctype, "^multipart/form%-data") then
    local parts = form_parts(body, ctype)
    local f = parts.file
    if not f then
      errors.raise(400, "invalid_parameter", "the form has no `file` field",
        { { path = "file", message = "is required" } })
    end
    for _, k in ipairs({ "source", "marketplace", "dryRun" }) do
      local p = parts[k]
      if p and params[k] == nil and p[2] - p[1] < 64 then params[k] = sub(body, p[1], p[2]) end
    end
    first, last = f[1], f[2]
  end
  local enc = lower(req.headers["content-encoding"] or "identity")
  if enc ~= "identity" and enc ~= "gzip" and enc ~= "" then
    errors.raise(415, "unsupported_encoding", "Content-Encoding must be gzip or identity")
  end
  return body, first, last, params
end

local function options(user, params)
  local source = SOURCES[lower(params.source or "auto")]
  if not source then bad_parameter("source", "source must be LIBRARY, WISHLIST or auto") end
  local market = params.marketplace
  if market == nil then
    local row = db.one("SELECT marketplace FROM users WHERE id = $1", user.id)
    market = row and row.marketplace ~= db.null and row.marketplace or DEFAULT_MARKETPLACE
  end
  market = lower(market)
  if not MARKETPLACES[market] then
    bad_parameter("marketplace", "marketplace must be one of us, uk, de, fr, ca, it, au, in, jp, es, br")
  end
  return { source = source ~= "auto" and source or nil, marketplace = market,
           dry_run = TRUE[lower(params.dryRun or "")] == true }
end

local function answer(r, dry_run)
  return {
    success = true, syncId = not dry_run and r.sync_id or nil, imported = r.imported,
    newToCatalog = r.new_to_catalog, libraryCount = r.library, wishlistCount = r.wishlist,
    removed = r.removed, warnings = r.warnings, format = r.format,
    covers = setmetatable(r.covers, host.array_mt), marketplace = r.marketplace,
    dryRun = dry_run,
  }
end

-- Imports for user (a users row); shared by the route and `shelfsync import`.
local function import_for(user, body, first, last, params, request_id)
  local opts = options(user, params)
  local t0 = clock_ms()
  local ok, r = xpcall(import_file.run, host.traceback, user.id, body, first, last, opts)
  if not ok then
    if not opts.dry_run then
      local msg = errors.is_http(r) and r.message or
        ("the server failed to import this file (request id " .. tostring(request_id) .. ")")
      local warnings = errors.is_http(r) and r.status == 422 and
        sync_import.details_as_warnings(r.details) or nil
      sync_import.record_failure(user.id, msg, warnings)
    end
    error(r, 0)
  end
  host.log("info", format("file import %s: user %s, format %s, %d titles (%d new to the " ..
    "catalog, %d removed)%s; ms: read %d, validate %d, catalog %d, library %d, total %d",
    tostring(r.sync_id), user.id, r.format, r.imported, r.new_to_catalog, r.removed,
    opts.dry_run and ", dry run" or "", r.read_ms, r.validate_ms, r.catalog_ms, r.library_ms,
    clock_ms() - t0))
  return answer(r, opts.dry_run)
end

local function import(ctx)
  local body, first, last, params = request_file(ctx.req)
  return 200, import_for(ctx.user, body, first, last, params, ctx.req.request_id)
end

return {
  { method = "POST", path = "/api/import", auth = "session", handler = import,
    body_limit = host.config.import_file_max_bytes, raw_body = true },
  import_for = import_for,
}
