-- sync_import: the library import behind POST /api/sync/import (DESIGN.md, "Sync contract").
--
--   local prep = sync_import.prepare(body[, text_checked])   -- validation only; raises 422, 413
--   local result = sync_import.run(user_id, jti, prep)        -- one transaction, see below
--   sync_import.record_failure(user_id, message[, warnings])
--
-- prepare(body) checks the envelope ({"titles": [...]}, at most sync_max_titles), validates
-- every item against sync_rules.ITEM (in place: the decoded tables become the rows; or, for
-- a JSON body the C decoder read, prepare_columns takes its columns: see below), skips
-- invalid ones with a warning, keeps one item per ASIN (LIBRARY beats WISHLIST) and sorts
-- them by ASIN. A payload with no valid title is refused (422 no_valid_titles), so a
-- broken client can never empty a library. text_checked: the caller checked the JSON text
-- with validate.text_ok (strings then skip their own UTF-8 / NUL checks).
--
-- run() imports in one transaction:
--   1. the token's row, locked (FOR UPDATE): two requests with one token queue here and the
--      second finds it used (401 token_already_used); the token is marked used at the end,
--      so it is consumed only when the import commits;
--   2. pg_advisory_xact_lock on the user: one sync per user at a time;
--   3. the catalog, shared by every user: a payload may FILL a blank field of a stored
--      title, never overwrite one (refreshing metadata is the enrichment's job, from a
--      provider). Blank is NULL, an empty name list, or a placeholder (sync_rules
--      .PLACEHOLDERS, e.g. the extension's "Unknown Title"), which is never written over a
--      value either. The database says which fields of each stored title are blank (a
--      bitmask, BLANKS_SQL) and Lua meets it with what each item carries, so a title with
--      nothing to fill costs no write, no lock and no read of its values. New ASINs are
--      inserted in ASIN order, 1,000 a statement, each chunk built while the database writes
--      the one before (ON CONFLICT DO NOTHING: a row another sync inserted meanwhile joins
--      the fills); their search rows wait in title_search_pending (sql/009) and are indexed
--      once the answer is sent (lua/title_search.lua). Rows to fill are then locked in ASIN
--      order (two syncs with overlapping titles never deadlock) and read again, so a value
--      written meanwhile (another sync, the enrichment) is never overwritten; the batched
--      upsert writes only the fills
--      (keep_on_null keeps the rest). Name lists (authors, narrators, ...) not filled are left
--      out of the update list: their columns are NOT NULL, so "keep" cannot be a NULL
--      there. Rows are grouped by which lists they fill (usually one statement);
--   4. user_library, read into Lua and compared: new entries inserted, changed ones
--      updated in place by id so they keep it (and the lists referencing them),
--      removed_at cleared (a title brought back gets its old entry back); entries
--      absent from the payload get removed_at = now(), never deleted. A personal field the
--      item lacks keeps its stored value, and a known entry's dateAdded never moves later
--      (the extension sends the time of the scrape; an import with real purchase dates can
--      still move it earlier);
--      MANUAL entries (added by the user, DESIGN.md "Sources") are never marked removed;
--      one the payload also brings becomes a synced entry (its source is overwritten);
--      `hidden` is never written here, so a hidden entry stays hidden across syncs;
--   5. the token marked used and a sync_history row written.
-- After the commit, the titles that need provider metadata are queued for the enrichment
-- (lua/enrichment.lua) in a statement of their own, after the answer is sent
-- (lua/after_response.lua): the sync never waits for it (see import below).
-- A deadlock or serialization failure (which the ordering above should make impossible)
-- retries the transaction, at most twice.
local _M = {}

local db = require("db")
local json = require("json")
local errors = require("errors")
local validate = require("validate")
local rules = require("sync_rules")
local enrichment = require("enrichment")
local title_search = require("title_search")
local after_response = require("after_response")

local config = host.config
local type, ipairs, tostring, pcall, error, setmetatable = type, ipairs, tostring, pcall, error, setmetatable
local format, sub, gsub = string.format, string.sub, string.gsub
local sort, concat = table.sort, table.concat
local clock_ms = host.clock_ms
local floor = math.floor
local summary, is_array = validate.summary, validate.is_array
local null = json.null
local array_mt = json.array_mt

local CHECK_ITEM = validate.checker(rules.ITEM)
local CHECK_ITEM_TEXT_CHECKED = validate.checker(rules.ITEM, { text_checked = true })

-- Advisory lock class for "one sync per user" (pg_advisory_xact_lock(class, hashtext(id))).
_M.LOCK_CLASS = 0x53594e43  -- "SYNC"

-- ---- warnings: at most `cap` lines, then one line counting the rest ----

local function new_warnings()
  return { list = {}, n = 0, extra = 0, cap = config.sync_warning_cap }
end

local function warn(w, fmt, ...)
  if w.n < w.cap then
    w.n = w.n + 1
    w.list[w.n] = format(fmt, ...)
  else
    w.extra = w.extra + 1
  end
end

-- The answer's warning lines: head (the removals) first, then each list's lines, at most
-- cap lines in all, then one line counting the rest.
local function finish_warnings(head, ...)
  local lists = { ... }
  local cap = config.sync_warning_cap
  local out, n, total = setmetatable({}, array_mt), 0, 0
  for _, line in ipairs(head) do
    total = total + 1
    if n < cap then n = n + 1; out[n] = line end
  end
  for _, w in ipairs(lists) do
    total = total + w.n + w.extra
    for i = 1, w.n do
      if n >= cap then break end
      n = n + 1
      out[n] = w.list[i]
    end
  end
  if total > n then
    out[n + 1] = format("... and %d more %s not shown", total - n,
      total - n == 1 and "warning" or "warnings")
  end
  return out
end
_M.finish_warnings = finish_warnings

-- ---- prepare ----

-- What a warning calls an item: its ASIN as sent (shortened), or "no ASIN".
local function label(a)
  if type(a) ~= "string" or a == "" then return "no ASIN" end
  if #a > 24 then a = sub(a, 1, 24) .. "..." end
  return (gsub(a, "%c", "?"))
end

-- The catalog fields a sync sets (sync_rules.CATALOG_FIELDS with a rule): scalars
-- (FIELD[i] in the item, COLUMN[i] in title_catalog) and name lists (AFIELD, ACOLUMN).
local FIELD, COLUMN, AFIELD, ACOLUMN = {}, {}, {}, {}
for _, f in ipairs(rules.CATALOG_FIELDS) do
  if f.rule and f.array then
    AFIELD[#AFIELD + 1], ACOLUMN[#ACOLUMN + 1] = f.json, f.column
  elseif f.rule then
    FIELD[#FIELD + 1], COLUMN[#COLUMN + 1] = f.json, f.column
  end
end
local NSCALARS, NARRAYS = #FIELD, #AFIELD
assert(COLUMN[1] == "title", "sync_rules.CATALOG_FIELDS: title must come first")

-- Placeholders a client sends for what it could not read (sync_rules.PLACEHOLDERS).
local PLACEHOLDER = {}
for _, v in ipairs(rules.PLACEHOLDERS) do PLACEHOLDER[v] = true end

local function blank(v)
  return v == nil or v == null or PLACEHOLDER[v] == true
end

-- True when a name list says nothing: absent, empty, or placeholders only.
local function blank_list(a)
  if a == nil or a == null then return true end
  for i = 1, #a do
    if not PLACEHOLDER[a[i]] then return false end
  end
  return true
end

-- Bits of item.mask: what the item does not know. One per name list (NO_ARRAY[j] for
-- AFIELD[j])...
local NO_ARRAY = {}
for j = 1, NARRAYS do NO_ARRAY[j] = 1 << (j - 1) end
local ARRAYS_MASK = (1 << NARRAYS) - 1
-- ... and the personal fields.
local NO_PROGRESS, NO_RATING, NO_DATE = ARRAYS_MASK + 1, (ARRAYS_MASK + 1) << 1, (ARRAYS_MASK + 1) << 2

local EMPTY = setmetatable({}, array_mt)

local function unprocessable(code, message, details)
  errors.raise(422, code, message, details)
end

local function envelope(body)
  if type(body) ~= "table" or body[1] ~= nil then
    unprocessable("validation_failed", 'the body must be a JSON object {"titles": [...]}',
      { { path = "", message = "must be an object" } })
  end
  local titles = body.titles
  if titles == nil or titles == null then
    unprocessable("validation_failed", 'the body has no "titles" array',
      { { path = "titles", message = "is required" } })
  end
  if not is_array(titles) then
    unprocessable("validation_failed", '"titles" must be an array of titles',
      { { path = "titles", message = "must be an array" } })
  end
  local max = config.sync_max_titles
  if #titles > max then
    -- 413, not 422: too large is what it is, and the extension's "Library Too Large" state
    -- (with its download of the JSON) is the one that helps.
    errors.raise(413, "too_many_titles",
      format("a sync holds at most %d titles; this one has %d", max, #titles),
      { { path = "titles", message = format("must hold at most %d items", max) } })
  end
  return titles
end

-- ---- prepare: from validated columns to the import's rows ----
--
-- A payload reaches prepare_columns as columns over its elements (1-based, payload order):
--   src = {received = n,
--          asin, source, listeningProgress, personalRating, dateAdded = columns ([i] = the
--            cleaned value, nil where absent or the element was refused),
--          present = column of PRESENT masks (bit j-1: PRESENT_FIELDS[j] carries a value
--            that is not blank, see `blank`; nil for a refused element),
--          refused = {[i] = errs}, dropped = {[i] = errs} (validate.lua's problem lists),
--          sent = function(i) -> the element's asin as sent (for a refused one's warning),
--          item = function(i) -> the cleaned element (a table with the payload's names)}
-- Two producers: the C decoder (host.bulk, routes/sync.lua), which never builds a Lua
-- table per element unless asked, and prepare_items below (Lua tables, file imports).

-- The catalog fields a sync sets, in CATALOG_FIELDS order: the bits of `present`.
local PRESENT_FIELDS, PRESENT_BIT = {}, {}
for _, f in ipairs(rules.CATALOG_FIELDS) do
  if f.rule then
    PRESENT_FIELDS[#PRESENT_FIELDS + 1] = f.json
    PRESENT_BIT[f.json] = 1 << (#PRESENT_FIELDS - 1)
  end
end
_M.PRESENT_FIELDS = PRESENT_FIELDS

-- The PRESENT mask of a cleaned item (the Lua producer's; host.bulk computes the same).
local function present_mask(it)
  local p = 0
  for j = 1, NSCALARS do
    if not blank(it[FIELD[j]]) then p = p | PRESENT_BIT[FIELD[j]] end
  end
  for j = 1, NARRAYS do
    if not blank_list(it[AFIELD[j]]) then p = p | PRESENT_BIT[AFIELD[j]] end
  end
  return p
end
_M.present_mask = present_mask

-- The array bits of the item mask (NO_ARRAY: the list says nothing) from a PRESENT mask.
local ARRAY_MASK_OF = {}     -- PRESENT bits of the arrays -> NO_ARRAY bits
do
  local function no_arrays(p)
    local m = 0
    for j = 1, NARRAYS do
      if p & PRESENT_BIT[AFIELD[j]] == 0 then m = m | NO_ARRAY[j] end
    end
    return m
  end
  local arrays_present = 0
  for j = 1, NARRAYS do arrays_present = arrays_present | PRESENT_BIT[AFIELD[j]] end
  setmetatable(ARRAY_MASK_OF, { __index = function(t, p)
    local m = no_arrays(p); t[p] = m; return m
  end })
  _M.ARRAYS_PRESENT = arrays_present
end
local ARRAYS_PRESENT = _M.ARRAYS_PRESENT

-- What a null element is told: the validator calls JSON null "absent" and has no problem
-- to name for it (host.bulk then refuses it with an empty list).
local NOT_AN_OBJECT = { { path = "", message = "must be an object" } }

-- One refused element: a warning, and its problems for a 422 (details, at most cap).
local function refuse_item(w, details, i, sent, errs)
  if errs[1] == nil then errs = NOT_AN_OBJECT end
  warn(w, "titles[%d] (%s): skipped: %s", i - 1, label(sent), summary(errs, 3))
  local cap = w.cap
  local prefix = "titles[" .. (i - 1) .. "]"
  for _, e in ipairs(errs) do
    if #details >= cap then break end
    details[#details + 1] = { path = e.path ~= "" and (prefix .. "." .. e.path) or prefix,
                              message = e.message }
  end
end

-- src: see above. Returns prep = {count, received, invalid, warnings, library, wishlist,
-- and per row k (sorted by ASIN, one per ASIN: LIBRARY beats WISHLIST): asin[k], source[k],
-- progress[k], rating[k], added[k] (nil where the item lacks them), index[k] (the row was
-- titles[index[k]], 0-based), mask[k] (what it does not know, the bits above), present[k]
-- (PRESENT mask), and item(k) (the cleaned item, for a row the catalog must write)}.
-- Raises 422 no_valid_titles.
function _M.prepare_columns(src)
  local received = src.received
  local col_asin, col_source = src.asin, src.source
  local refused, dropped, present = src.refused, src.dropped, src.present
  local w = new_warnings()
  local seen, asins, count, invalid = {}, {}, 0, 0   -- seen: asin -> position in the payload
  local details = {}  -- problems of refused items, for a 422
  local library, wishlist = 0, 0
  for i = 1, received do
    local asin = col_asin[i]
    local errs = refused[i]
    if errs then
      invalid = invalid + 1
      refuse_item(w, details, i, src.sent(i), errs)
    else
      local dropped_errs = dropped[i]
      if dropped_errs then
        warn(w, "titles[%d] (%s): ignored invalid %s", i - 1, asin, summary(dropped_errs, 3))
      end
      local prev = seen[asin]
      if prev == nil then
        count = count + 1
        asins[count] = asin
        seen[asin] = i
        if col_source[i] == "LIBRARY" then library = library + 1 else wishlist = wishlist + 1 end
      elseif col_source[prev] == "WISHLIST" and col_source[i] == "LIBRARY" then
        seen[asin] = i
        library, wishlist = library + 1, wishlist - 1
        warn(w, "titles[%d] (%s): duplicate of titles[%d]; kept this LIBRARY entry", i - 1,
          asin, prev - 1)
      else
        warn(w, "titles[%d] (%s): duplicate of titles[%d]; ignored", i - 1, asin, prev - 1)
      end
    end
  end
  if count == 0 then
    local message = received == 0 and "the upload holds no titles" or
      format("none of the %d titles is valid; nothing was imported", received)
    unprocessable("no_valid_titles", message, details)
  end

  sort(asins)       -- strings in the default order: no Lua comparator call per step
  local col_progress, col_rating, col_added = src.listeningProgress, src.personalRating, src.dateAdded
  local source, progress, rating, added, index, mask, pmask =
    {}, {}, {}, {}, {}, {}, {}
  for k = 1, count do
    local i = seen[asins[k]]
    index[k] = i - 1
    source[k] = col_source[i]
    local p = present[i]
    pmask[k] = p
    local m = ARRAY_MASK_OF[p & ARRAYS_PRESENT]
    local v = col_progress[i]
    if v == nil then m = m | NO_PROGRESS else progress[k] = v end
    v = col_rating[i]
    if v == nil then m = m | NO_RATING else rating[k] = v end
    v = col_added[i]
    if v == nil then m = m | NO_DATE else added[k] = v end
    mask[k] = m
  end
  local item = src.item
  return {
    asin = asins, source = source, progress = progress, rating = rating, added = added,
    index = index, mask = mask, present = pmask,
    item = function(k) return item(index[k] + 1) end,
    count = count, received = received, invalid = invalid, warnings = w,
    library = library, wishlist = wishlist,
  }
end

-- body: the decoded JSON ({"titles": [...]}). Raises 422 (validation_failed,
-- no_valid_titles) and 413 (too_many_titles); returns prepare_columns' prep.
function _M.prepare(body, text_checked)
  return _M.prepare_items(envelope(body), text_checked)
end

-- The same over a list of decoded items (validated here with the Lua checker, in place):
-- the JSON body (prepare above) and lua/import_file.lua's importers; the caller bounds
-- its length.
function _M.prepare_items(titles, text_checked)
  local received = #titles
  local check = text_checked and CHECK_ITEM_TEXT_CHECKED or CHECK_ITEM
  local asin, source, progress, rating, added, present = {}, {}, {}, {}, {}, {}
  local refused, dropped, sent = {}, {}, {}
  for i = 1, received do
    local raw = titles[i]
    sent[i] = type(raw) == "table" and raw.asin or nil
    local it, errs = check(raw)
    if it == nil then
      refused[i] = errs or NOT_AN_OBJECT
    else
      if errs then dropped[i] = errs end
      titles[i] = it
      asin[i], source[i] = it.asin, it.source
      progress[i], rating[i], added[i] = it.listeningProgress, it.personalRating, it.dateAdded
      present[i] = present_mask(it)
    end
  end
  return _M.prepare_columns({
    received = received, asin = asin, source = source, listeningProgress = progress,
    personalRating = rating, dateAdded = added, present = present, refused = refused,
    dropped = dropped, sent = function(i) return sent[i] end,
    item = function(i) return titles[i] end,
  })
end

-- ---- the transaction ----


local CATALOG_COLUMNS = { "asin" }
for i = 1, NSCALARS do CATALOG_COLUMNS[#CATALOG_COLUMNS + 1] = COLUMN[i] end
for j = 1, NARRAYS do CATALOG_COLUMNS[#CATALOG_COLUMNS + 1] = ACOLUMN[j] end
local KEEP_ON_NULL = {}
for i = 2, NSCALARS do KEEP_ON_NULL[#KEEP_ON_NULL + 1] = COLUMN[i] end   -- all but title

-- The update list for each array mask: every scalar, and the arrays the group fills.
local UPDATE_FOR = {}
for m = 0, ARRAYS_MASK do
  local cols = {}
  for i = 1, NSCALARS do cols[#cols + 1] = COLUMN[i] end
  for j = 1, NARRAYS do
    if m & NO_ARRAY[j] == 0 then cols[#cols + 1] = ACOLUMN[j] end
  end
  UPDATE_FOR[m] = cols
end

-- Rows are read in chunks: the Lua heap then holds one chunk of stored rows at a time
-- besides the payload, which bounds a worker's memory on large syncs.
local FETCH_CHUNK = 2000
-- And written in chunks, in key order, so a statement's parameters stay a few MB and its
-- run time well under statement_timeout_ms even for the largest payload.
local WRITE_CHUNK = 5000
-- New catalog titles go in smaller statements: each chunk's rows are built while the
-- database inserts the one before (bench/RESULTS.md, issue 16: pipelined inserts).
local NEW_CHUNK = 1000

-- Entries the user never had: a plain INSERT, one array per column. The stored read ran
-- under the sync's advisory lock, which every path that adds a user's entries takes (the
-- manual add of routes/library.lua too), so none of these rows can exist: no ON CONFLICT
-- (its speculative insertion probes the unique index first) and no RETURNING (nothing
-- reads the ids). A row that did exist would fail the sync with 23505, never be written
-- twice. About a fifth of the insert in PostgreSQL (bench/RESULTS.md, issue 16).
local move = table.move
local INSERT_NEW_ENTRIES = [[
  INSERT INTO user_library (user_id, title_id, source, listening_progress, personal_rating, date_added)
  SELECT $1, n.title_id, n.source, n.listening_progress, n.personal_rating, n.date_added
  FROM unnest($2::uuid[], $3::library_source[], $4::integer[], $5::integer[], $6::timestamptz[])
    AS n(title_id, source, listening_progress, personal_rating, date_added)]]
-- Entries the sync changes (or brings back), by the ids the stored read gave: a plain UPDATE
-- of rows known to differ, where the batched upsert probed the unique index, locked and
-- compared again and answered every row (~50 ms for the 1,000 entries of a 10 %-changed
-- re-sync). The entries are the user's own (user_id = $1 as well).
local UPDATE_ENTRIES = [[
  UPDATE user_library AS l
  SET source = u.source, listening_progress = u.listening_progress,
      personal_rating = u.personal_rating, date_added = u.date_added, removed_at = NULL
  FROM unnest($2::uuid[], $3::library_source[], $4::integer[], $5::integer[], $6::timestamptz[])
    AS u(id, source, listening_progress, personal_rating, date_added)
  WHERE l.id = u.id AND l.user_id = $1]]

-- Appends one entry's five values to cols (see library below).
local function add_entry(cols, a, b, c, d, e)
  local n = cols.n + 1
  cols.n = n
  cols[1][n], cols[2][n], cols[3][n], cols[4][n], cols[5][n] = a, b, c, d, e
end

-- Runs sql over cols in chunks of WRITE_CHUNK (a few MB of parameters each), in the
-- order the entries came: ASIN order. A user's entries are only written under the
-- advisory lock, so that order cannot deadlock.
local function write_entries(sql, user_id, cols)
  local n = cols.n
  for first = 1, n, WRITE_CHUNK do
    local last = first + WRITE_CHUNK - 1
    if last > n then last = n end
    local function part(t) return (first == 1 and last == n) and t or move(t, first, last, 1, {}) end
    db.query(sql, user_id, part(cols[1]), part(cols[2]), part(cols[3]), part(cols[4]), part(cols[5]))
  end
end

local ID_ONLY = { "id" }
local NOTHING = {}

local function token_error(code, message)
  errors.raise(401, code, message)
end
_M.token_error = token_error

-- Sets row's name lists: the item's, or '{}' for those m marks (the columns are NOT NULL;
-- a new row gets no names, an existing one keeps its own: see UPDATE_FOR).
local function set_arrays(row, it, m)
  for j = 1, NARRAYS do
    row[ACOLUMN[j]] = m & NO_ARRAY[j] == 0 and it[AFIELD[j]] or EMPTY
  end
  return row
end

-- The array bits of m (what the item does not know) plus those the stored row ex already
-- has: the arrays the item does not fill.
local function unfilled_arrays(m, ex)
  for j = 1, NARRAYS do
    if m & NO_ARRAY[j] == 0 and not blank_list(ex[ACOLUMN[j]]) then m = m | NO_ARRAY[j] end
  end
  return m & ARRAYS_MASK
end

-- The row that fills the blanks of the stored row ex from the item, and the arrays it
-- does not fill (a mask); nil when the item has nothing to fill. Fields not filled are nil
-- (keep_on_null), except the title, which is NOT NULL and is ex's unless blank there.
local function fill_row(it, m, ex)
  local row
  for i = 1, NSCALARS do
    local v = it[FIELD[i]]
    if v ~= nil and blank(ex[COLUMN[i]]) and not blank(v) then
      row = row or {}
      row[COLUMN[i]] = v
    end
  end
  local um = unfilled_arrays(m, ex)
  if not row and um == ARRAYS_MASK then return nil end
  row = row or {}
  row.asin = it.asin
  row.title = row.title or ex.title
  set_arrays(row, it, um)
  return row, um
end

-- The row the batched upsert writes for a new title. A placeholder is no value (the
-- title, required, is kept: it counts as blank, so the first real one replaces it).
local function catalog_row(it, m)
  local row = { asin = it.asin, title = it.title }
  for i = 2, NSCALARS do
    local v = it[FIELD[i]]
    if not PLACEHOLDER[v] then row[COLUMN[i]] = v end
  end
  return set_arrays(row, it, m)
end

-- The compare happens in the database: the catalog read returns, per stored title, only
-- its id and which of the fields a sync sets are blank there (a PRESENT mask: NULL, an
-- empty name list, or a placeholder; $2 is PLACEHOLDERS). A title has something to fill
-- when the item's PRESENT mask meets it, so an unchanged re-sync reads no catalog values
-- into Lua at all. Dates and numbers never hold a placeholder; the text cast is harmless.
local BLANKS_SQL
do
  local terms = {}
  for _, f in ipairs(rules.CATALOG_FIELDS) do
    if f.rule then
      local c = "c." .. f.column
      local test
      if f.array then
        test = c .. " <@ $2::text[]"
      elseif f.rule.type == "string" then
        test = c .. " IS NULL OR " .. c .. "::text = ANY($2::text[])"
      else
        test = c .. " IS NULL"
      end
      -- (<< and | share one precedence in SQL: every term in its own parentheses)
      terms[#terms + 1] = format("((%s)::int << %d)", test, #terms)
    end
  end
  BLANKS_SQL = concat(terms, "\n         | ")
end

-- (= ANY of the array: an index scan per ASIN whatever the catalog's size or statistics)
local READ_SQL = "SELECT c.asin, c.id, (" .. BLANKS_SQL .. ") AS blanks" ..
  " FROM title_catalog AS c WHERE c.asin = ANY($1::text[])"
local function read_sql_due(due)
  return "SELECT c.asin, c.id, (" .. BLANKS_SQL .. ") AS blanks, (" .. due .. ") AS due" ..
    " FROM title_catalog AS c WHERE c.asin = ANY($1::text[])"
end

-- The rows to fill, locked in ASIN order and read again with every field a sync sets.
local LOCK_SQL
do
  local cols = { "c.asin", "c.id" }
  for i = 1, NSCALARS do cols[#cols + 1] = "c." .. COLUMN[i] end
  for j = 1, NARRAYS do cols[#cols + 1] = "c." .. ACOLUMN[j] end
  LOCK_SQL = "SELECT " .. concat(cols, ", ") ..
    " FROM title_catalog AS c WHERE c.asin = ANY($1::text[]) ORDER BY c.asin FOR NO KEY UPDATE"
end

local PLACEHOLDER_LIST = setmetatable({}, array_mt)
for i, v in ipairs(rules.PLACEHOLDERS) do PLACEHOLDER_LIST[i] = v end

-- asins[first..last] as a list of their own (the whole list when it is all of it).
local function slice(asins, first, last)
  if first == 1 and last == #asins then return asins end
  local part = {}
  for i = first, last do part[i - first + 1] = asins[i] end
  return part
end

-- Fills the blanks of the stored rows at positions (sorted: ASIN order) from their
-- items, with the rows locked and read again, FETCH_CHUNK at a time (the Lua heap then
-- holds one chunk of stored rows). Returns the number of rows rewritten.
local function fill(prep, positions, n)
  local mask, asins = prep.mask, prep.asin
  local groups = {}
  for first = 1, n, FETCH_CHUNK do
    local last = first + FETCH_CHUNK - 1
    if last > n then last = n end
    local part = {}
    for i = first, last do part[i - first + 1] = asins[positions[i]] end
    local locked = db.query(LOCK_SQL, part)
    local by_asin = {}
    for i = 1, #locked do by_asin[locked[i].asin] = locked[i] end
    for i = first, last do
      local k = positions[i]
      local row, um = fill_row(prep.item(k), mask[k], by_asin[asins[k]])
      if row then
        local g = groups[um]
        if not g then g = {}; groups[um] = g end
        g[#g + 1] = row
      end
    end
  end
  local changed = 0
  for um = 0, ARRAYS_MASK do
    local g = groups[um]
    if g then
      local res = db.upsert({ table = "title_catalog", key = { "asin" }, columns = CATALOG_COLUMNS,
                              update = UPDATE_FOR[um], keep_on_null = KEEP_ON_NULL,
                              only_changed = true, returning = ID_ONLY, rows = g,
                              chunk = WRITE_CHUNK })
      for i = 1, #g do
        if res[i].changed then changed = changed + 1 end
      end
    end
  end
  return changed
end

-- A sync reads the catalog in statements of READ_CHUNK ASINs (a few bytes a row).
local READ_CHUNK = 10000

-- Brings the catalog up to date with the items. Returns title_ids (title_ids[k] for
-- row k), the number of new rows and of rewritten rows, and the ASINs of the titles the
-- enrichment may have to queue (inserted ones, and stored ones whose metadata is due).
local function catalog(prep)
  local asins, present, mask, count = prep.asin, prep.present, prep.mask, prep.count
  local due, refresh_days = enrichment.due(3)
  local ids, queue = {}, {}
  local new_pos, nnew = {}, 0
  local fill_pos, nfill = {}, 0
  for first = 1, count, READ_CHUNK do
    local last = first + READ_CHUNK - 1
    if last > count then last = count end
    local part = slice(asins, first, last)
    local found
    if due then
      found = db.query(read_sql_due(due), part, PLACEHOLDER_LIST, refresh_days)
    else
      found = db.query(READ_SQL, part, PLACEHOLDER_LIST)
    end
    local by_asin = {}
    for i = 1, #found do by_asin[found[i].asin] = found[i] end
    for k = first, last do
      local ex = by_asin[asins[k]]
      if ex then
        ids[k] = ex.id
        if ex.due == true then queue[#queue + 1] = ex.asin end
        if present[k] & ex.blanks ~= 0 then
          nfill = nfill + 1
          fill_pos[nfill] = k
        end
      else
        nnew = nnew + 1
        new_pos[nnew] = k
      end
    end
  end

  -- New ASINs: one statement, in ASIN order. A row another sync inserted meanwhile is not
  -- ours to insert (DO NOTHING) and joins the fills instead.
  local new_to_catalog = 0
  if nnew > 0 then
    -- Their search rows wait outside the index until the answer is sent (sql/009).
    title_search.defer()
    -- Rows are built a chunk at a time, while the database inserts the chunk before
    -- (host.pg.upsert's rows function): the two processes work at once.
    local item = prep.item
    local res = db.upsert({ table = "title_catalog", key = { "asin" }, columns = CATALOG_COLUMNS,
                            update = NOTHING, returning = ID_ONLY, count = nnew, chunk = NEW_CHUNK,
                            rows = function(first, last)
                              local rows = {}
                              for i = first, last do
                                local k = new_pos[i]
                                rows[i - first + 1] = catalog_row(item(k), mask[k])
                              end
                              return rows
                            end })
    local raced = false
    for i = 1, nnew do
      local r, k = res[i], new_pos[i]
      ids[k] = r.id
      queue[#queue + 1] = asins[k]   -- (a raced one too: new, so never enriched yet)
      if r.inserted then
        new_to_catalog = new_to_catalog + 1
      else
        nfill = nfill + 1
        fill_pos[nfill] = k
        raced = true
      end
    end
    if raced then sort(fill_pos) end    -- positions follow the ASIN order
  end
  local changed = nfill > 0 and fill(prep, fill_pos, nfill) or 0
  return ids, new_to_catalog, changed, due and queue or {}
end

-- Brings the user's library up to date with the items (title_ids[k] is items[k]'s
-- title). Returns the number of entries active before, and the number removed now.
local function library(user_id, prep, title_ids, now, covers)
  local mask, count = prep.mask, prep.count
  local sources, progresses, ratings, addeds = prep.source, prep.progress, prep.rating, prep.added
  local stored = db.query([[
    SELECT id, title_id, source, listening_progress, personal_rating, date_added,
           removed_at IS NOT NULL AS removed
    FROM user_library WHERE user_id = $1]], user_id)
  local by_title, before = {}, 0
  for i = 1, #stored do
    local s = stored[i]
    by_title[s.title_id] = s
    if not s.removed and covers[s.source] then before = before + 1 end
  end

  local present = {}
  -- New entries and changed ones, as columns (see INSERT_NEW_ENTRIES, UPDATE_ENTRIES).
  local new = { {}, {}, {}, {}, {}, n = 0 }      -- title_id, source, progress, rating, added
  local changed = { {}, {}, {}, {}, {}, n = 0 }  -- id, source, progress, rating, added
  for k = 1, count do
    local source = sources[k]
    local tid = title_ids[k]
    local s = by_title[tid]
    present[tid] = true
    if s and not s.removed and not covers[s.source] and source ~= "LIBRARY" then
      goto continue   -- an entry of a source this import does not cover: only a purchase moves it
    end
    local progress, rating, added = progresses[k], ratings[k], addeds[k]
    local m = mask[k]
    if m >= NO_PROGRESS then      -- a personal field is missing: keep the stored one
      if m & NO_PROGRESS ~= 0 then progress = s and s.listening_progress or 0 end
      if m & NO_RATING ~= 0 then rating = s and s.personal_rating or null end
      if m & NO_DATE ~= 0 then added = s and s.date_added or now end
    end
    if rating == nil then rating = null end
    -- A known entry's date never moves later (canonical UTC strings order as instants).
    if s and s.date_added ~= null and added > s.date_added then added = s.date_added end
    if not s then
      add_entry(new, tid, source, progress, rating, added)
    elseif s.removed or s.source ~= source or s.listening_progress ~= progress
        or s.personal_rating ~= rating or s.date_added ~= added then
      add_entry(changed, s.id, source, progress, rating, added)
    end
    ::continue::
  end
  write_entries(INSERT_NEW_ENTRIES, user_id, new)
  write_entries(UPDATE_ENTRIES, user_id, changed)

  local gone, ngone = {}, 0
  for i = 1, #stored do
    local s = stored[i]
    if not s.removed and not present[s.title_id] and covers[s.source] then
      ngone = ngone + 1
      gone[ngone] = s.id
    end
  end
  if ngone > 0 then
    db.query("UPDATE user_library SET removed_at = now() WHERE id = ANY($1::uuid[])", gone)
  end
  return before, ngone
end

local function removal_warning(removed, before)
  if removed == 0 then return nil end
  if removed * 4 > before then
    return format("WARNING: %d of your %d titles (%d%%) were not in this upload and were removed " ..
      "from your library. If the upload was incomplete (a page failed to load), sync again: " ..
      "titles that come back keep their place in your lists.",
      removed, before, floor(removed * 100 / before + 0.5))
  end
  return format("%d %s not in this upload %s removed from your library", removed,
    removed == 1 and "title" or "titles", removed == 1 and "was" or "were")
end

-- The sources a sync replaces; a file import says which it covers (opts.covers).
local SYNC_COVERS = { LIBRARY = true, WISHLIST = true }

local function import_tx(user_id, jti, prep, opts)
  local tok
  if jti then
    tok = db.one([[SELECT id, user_id, used, expires_at <= now() AS expired
                   FROM sync_tokens WHERE jti = $1 FOR UPDATE]], jti)
    if not tok or tok.user_id ~= user_id then
      token_error("token_invalid", "this sync token is not valid")
    end
    if tok.used then
      token_error("token_already_used", "this sync token was already used; start a new sync")
    end
    if tok.expired then
      token_error("token_expired", "this sync token has expired; start a new sync")
    end
  end
  local now = db.one([[SELECT pg_advisory_xact_lock($1, hashtext($2)) AS locked,
                              now() AS now]], _M.LOCK_CLASS, user_id).now

  local count = prep.count
  local t0 = clock_ms()
  local ids, new_to_catalog, changed, queue = catalog(prep)
  local t1 = clock_ms()
  local before, removed = library(user_id, prep, ids, now, opts.covers or SYNC_COVERS)
  local t2 = clock_ms()

  local head = {}
  head[#head + 1] = removal_warning(removed, before)
  if prep.invalid > 0 then
    head[#head + 1] = format("%d of %d titles were invalid and skipped", prep.invalid, prep.received)
  end
  -- Only what the user can act on: removals, skipped and ignored items. Metadata the
  -- catalog still lacks is the enrichment's to find, not a warning.
  local warnings = finish_warnings(head, prep.warnings)

  if tok then
    db.query("UPDATE sync_tokens SET used = true, used_at = now() WHERE id = $1", tok.id)
  end
  local h = db.one([[
    INSERT INTO sync_history (user_id, synced_at, titles_imported, new_to_catalog, library_count,
                              wishlist_count, warnings, success)
    VALUES ($1, clock_timestamp(), $2, $3, $4, $5, $6, true)
    RETURNING id]], user_id, count, new_to_catalog, prep.library, prep.wishlist, warnings)
  local res = {
    sync_id = h.id, imported = count, new_to_catalog = new_to_catalog, changed = changed,
    removed = removed, library = prep.library, wishlist = prep.wishlist, warnings = warnings,
    catalog_ms = t1 - t0, library_ms = t2 - t1, queue_asins = queue,
  }
  if opts.dry_run then error({ dry_run = res }, 0) end   -- db.tx rolls back
  return res
end

-- Deadlock and serialization failure: worth running the whole transaction again.
local RETRYABLE = { ["40P01"] = true, ["40001"] = true }

local function retryable(err)
  return type(err) == "table" and RETRYABLE[err.sqlstate] == true
end

-- The titles a committed sync found due or inserted, queued for the enrichment once the
-- sync's answer is sent (the answer says nothing of them). Logs its count and time.
local function enqueue_later(user_id, sync_id, asins)
  local t = clock_ms()
  local n = enrichment.enqueue(user_id, asins)
  host.log("info", format("sync %s: %d titles queued for the enrichment after the answer " ..
    "(%d due or new); ms: queue %d", tostring(sync_id), n, #asins, clock_ms() - t))
end

local function import(user_id, jti, prep, opts)
  local attempt = 1
  while true do
    local ok, res = pcall(db.tx, import_tx, user_id, jti, prep, opts)
    if ok then
      if res.new_to_catalog > 0 then title_search.later() end   -- index them once answered
      -- Queued after the answer, on this worker (60-140 ms for 10,000 new titles). Safe:
      -- the enrichment is background work, and one lost here (the process dies first, or
      -- the statement fails) is rebuilt by the next sync of those titles: its catalog read
      -- returns every title never enriched (metadata_checked_at IS NULL, enrichment.due)
      -- and queues it. Added only after the commit: a rolled-back sync queues nothing.
      local asins = res.queue_asins
      res.queue_asins = nil
      if asins[1] then
        after_response.add("enqueue " .. tostring(res.sync_id),
          function() enqueue_later(user_id, res.sync_id, asins) end)
      end
      return res
    end
    if type(res) == "table" and res.dry_run then return res.dry_run end   -- rolled back
    if attempt >= 3 or not retryable(res) then error(res, 0) end
    host.log("warn", "sync import for user " .. user_id .. " retried after: " .. tostring(res))
    attempt = attempt + 1
  end
end

-- Imports prep for user_id with the token jti (nil: a file import, no token). Returns
-- {sync_id, imported, new_to_catalog, changed, removed, library, wishlist, warnings}; the
-- enrichment's queue is filled after the answer (import above). Raises 401 (token errors
-- found under the row lock), 503, or a database error; nothing is written then. While it
-- runs, this instance's metadata fetcher starts nothing new (host.enrichment.hold): the
-- sync a user waits for goes first, the background work after. opts (optional):
-- covers = {SOURCE = true, ...}, the sources this import replaces (default LIBRARY and
-- WISHLIST; MANUAL never): only active entries of those sources that it lacks are
-- removed, and an entry of another source is left as it is unless the item is a LIBRARY
-- one (a purchase); dry_run = true: everything is done and then rolled back, the answer
-- is what it would have been (nothing queued).
function _M.run(user_id, jti, prep, opts)
  opts = opts or NOTHING
  local hold = host.enrichment.hold
  hold(true)
  local ok, res = pcall(import, user_id, jti, prep, opts)
  hold(false)
  if not ok then error(res, 0) end
  return res
end

-- Writes the sync_history row of a failed attempt (outside any transaction: the failed
-- one has been rolled back). Never raises: a database that is down loses the row, and
-- the caller's error is what the client must see.
function _M.record_failure(user_id, message, warnings)
  local ok, err = pcall(db.query, [[
    INSERT INTO sync_history (user_id, synced_at, success, error_message, warnings)
    VALUES ($1, clock_timestamp(), false, $2, $3)]], user_id, message, warnings or EMPTY)
  if not ok then
    host.log("warn", "sync history row for a failed import of user " .. tostring(user_id) ..
      " not written: " .. tostring(err))
  end
end

-- The details of a refused payload as history warning lines ("titles[3].asin: ..."),
-- capped like any warnings.
function _M.details_as_warnings(details)
  local w = new_warnings()
  for _, d in ipairs(details or EMPTY) do
    warn(w, "%s: %s", d.path ~= "" and d.path or "body", d.message)
  end
  return finish_warnings({}, w)
end

return _M
