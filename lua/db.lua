-- db: how Lua code talks to PostgreSQL, over host.pg (core/pg.c).
--
--   db.query(sql, ...)  -> rows (array of row tables, rows.affected). Parameters are $1..$n;
--                          nil and db.null are NULL. Raises 503 database_unavailable when the
--                          database cannot be reached, and the error table (a 500) for any
--                          other SQL error: {message, sqlstate, kind, constraint, detail, ...}
--                          (core/pg.c), so a caller that catches it tests err.sqlstate.
--   db.try(sql, ...)    -> rows | nil, err (that table): for callers that map an expected
--                          failure (23505 unique_violation, ...) to an answer. An
--                          unreachable database still raises 503.
--   db.one(sql, ...)    -> the first row, or nil
--   db.tx(fn, ...)      -> fn's results. BEGIN, fn(...), COMMIT; on any error ROLLBACK and
--                          re-raise the same error value. Nesting is refused (an error).
--   db.upsert(spec)     -> one answer per input row, see host.pg.upsert in core/pg_upsert.c
--   db.in_tx()          -> true inside db.tx
--   db.ping()           -> true | nil, message
--   db.null             -> the NULL value (== host.json.null)
--
-- A failed statement inside db.tx aborts the transaction: after db.try returned an error
-- there, every later statement fails and the commit is refused, so recover by raising.
local _M = {}

local errors = require("errors")

local error, type, pcall = error, type, pcall
local unpack, pack = table.unpack, table.pack

-- In the server `host` is a global of the sandbox; in specs and tools it is require("host").
local host = rawget(_ENV, "host") or require("host")
local pg = host.pg

_M.null = pg.null

local function unavailable()
  errors.raise(503, "database_unavailable", "the database is unavailable; try again shortly")
end

-- Raises for a failed host.pg call: 503 when the database is unreachable, else the error
-- table itself (its tostring names the SQLSTATE; logged with the request id, answered as a
-- 500; the traceback handler adds where it was raised).
local function fail(err)
  if err.kind == "connection" then unavailable() end
  error(err, 0)
end

function _M.query(sql, ...)
  local rows, err = pg.query(sql, ...)
  if not rows then fail(err) end
  return rows
end

function _M.try(sql, ...)
  local rows, err = pg.query(sql, ...)
  if rows then return rows end
  if err.kind == "connection" then unavailable() end
  return nil, err
end

function _M.one(sql, ...)
  local rows, err = pg.query(sql, ...)
  if not rows then fail(err) end
  return rows[1]
end

function _M.upsert(spec)
  local res, err = pg.upsert(spec)
  if not res then fail(err) end
  return res
end

function _M.in_tx()
  return pg.in_tx()
end

function _M.ping()
  return pg.ping()
end

function _M.tx(fn, ...)
  if type(fn) ~= "function" then error("db.tx: expected a function", 2) end
  if pg.in_tx() then error("db.tx: nested transactions are not supported", 2) end
  local ok, err = pg.begin()
  if not ok then fail(err) end
  local res = pack(pcall(fn, ...))
  if not res[1] then
    pg.rollback()  -- ends the transaction whatever state it is in; never fails on a lost one
    error(res[2], 0)
  end
  ok, err = pg.commit()
  if not ok then
    pg.rollback()
    fail(err)
  end
  return unpack(res, 2, res.n)
end

return _M
