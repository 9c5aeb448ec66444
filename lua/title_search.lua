-- title_search: the search texts a sync leaves pending (sql/009_title_search.sql), moved
-- to the indexed table once the sync has answered.
--
--   title_search.defer()   in a sync's transaction, before it inserts new titles: their
--                          search rows go to title_search_pending, not to the index
--   title_search.later()   after that transaction committed: move them once the answer is
--                          sent (lua/after_response.lua)
--   title_search.move()    move every pending row now; returns how many
--   title_search.merge()   merge the trigram index's pending list (see below)
--
-- Searches read both tables (title_search_all), so a pending title is found like any other:
-- the move changes how fast a search reaches it, never whether. Every move takes every
-- pending row, not only one sync's, so what a crash left behind is taken by the next sync's
-- move or by the hourly cleanup (routes/sync.lua).
--
-- A move and an UPDATE of the same title (the enrichment, a sync's fill) end with the new
-- text in title_search whatever their order: the update trigger rewrites a pending row in
-- place, or upserts in title_search once the row is gone from pending, and a move skips a
-- pending row another transaction holds (MOVE_SQL) and takes its text along otherwise.
local _M = {}

local db = require("db")
local after_response = require("after_response")

local BATCH = 5000
-- A pass stops after this many batches, so rows that keep coming cannot hold a worker.
local MAX_BATCHES = 40

-- The move never waits for a row lock (SKIP LOCKED on both tables), so it cannot deadlock
-- with a writer that locks them in the other order: a sync whose update rewrites a pending
-- row (sql/009), or a DELETE of catalog titles. A row it skips is moved by the next pass.
-- Its catalog row is locked as the foreign key check of the insert would lock it.
local MOVE_SQL = [[
  WITH batch AS (
    SELECT p.title_id FROM title_search_pending AS p
    JOIN title_catalog AS c ON c.id = p.title_id
    ORDER BY p.title_id LIMIT $1
    FOR UPDATE OF p SKIP LOCKED FOR KEY SHARE OF c SKIP LOCKED
  ), moved AS (
    DELETE FROM title_search_pending AS p USING batch AS b WHERE p.title_id = b.title_id
    RETURNING p.title_id, p.search_text)
  INSERT INTO title_search (title_id, search_text)
  SELECT title_id, search_text FROM moved ORDER BY title_id
  ON CONFLICT (title_id) DO UPDATE SET search_text = EXCLUDED.search_text]]

function _M.defer()
  db.query("SELECT set_config('shelfsync.search_pending', 'on', true)")
end

-- A move lost in a crash leaves its rows pending, to be moved again: no need to wait for
-- the WAL flush.
local function batch_tx()
  db.query("SET LOCAL synchronous_commit = off")
  return db.query(MOVE_SQL, BATCH).affected
end

function _M.move()
  local total = 0
  for _ = 1, MAX_BATCHES do
    local n = db.tx(batch_tx)
    total = total + n
    if n < BATCH then break end
  end
  return total
end

-- The trigram index takes new entries into a pending list first (sql/008, 009): merging it
-- right after a sync's move keeps searches and the next sync's insert from paying for it.
-- Cheap when the list is empty. A role that does not own the index may not merge it
-- (autovacuum still does): that is logged once, not raised.
local TRGM_INDEX = "title_search_text_trgm_idx"
local merge_refused = false

function _M.merge()
  if merge_refused then return end
  local ok, err = pcall(db.query, "SELECT gin_clean_pending_list($1::regclass)", TRGM_INDEX)
  if not ok then
    merge_refused = type(err) == "table" and err.sqlstate == "42501"
    host.log("warn", "search index pending list not merged: " .. tostring(err))
  end
end

local function move_and_merge()
  local t0 = host.clock_ms()
  local n = _M.move()
  if n == 0 then return end
  local t1 = host.clock_ms()
  _M.merge()
  host.log("info", string.format("title_search: %d search texts indexed in %d ms, list merged in %d ms",
    n, t1 - t0, host.clock_ms() - t1))
end

function _M.later()
  after_response.add("title_search", move_and_merge)
end

return _M
