-- sql/008_write_cost.sql and the sync's plain INSERT of new entries (issue 16): the cheaper
-- forms mean what the old ones meant. The name-list CHECKs answer as text_array_fits on every
-- shape of array, set_updated_at still tells a real change from a rewrite of equal values, a
-- title a sync brings is found by search the moment the sync answers (its index entries sit in
-- the trigram index's pending list then), and the enrichment thread merges that list after
-- the sync.
local h = require("spec.support.helpers")

local CHECK, UNIQUE = "23514", "23505"

local pg

local function q(sql, ...)
  local rows, err = pg.query(sql, ...)
  if not rows then error(("statement failed: %s\n%s"):format(tostring(err), sql), 2) end
  return rows
end

local function refuses(state, constraint, sql, ...)
  local rows, err = pg.query(sql, ...)
  assert(rows == nil, "expected " .. state .. " from " .. constraint .. ", the statement succeeded")
  assert.same({ state = state, named = true },
    { state = err.sqlstate, named = tostring(err):find(constraint, 1, true) ~= nil }, tostring(err))
end

local sync = h.sync_items

local function asins_of(res)
  local out = {}
  for i, e in ipairs(res.json.items) do out[i] = e.asin end
  return out
end

describe("write cost (sql/008)", function()
  setup(function() pg = h.db() end)
  before_each(function() h.reset_db() end)

  describe("name-list CHECKs", function()
    -- Every shape an array can take: dimensions, bounds, NULL elements, quoting characters,
    -- and lengths on both sides of the limit in one-, two- and four-byte characters.
    local ARRAYS = {
      "NULL::text[]", "'{}'::text[]", "ARRAY['']", "ARRAY['a']", "ARRAY['a', NULL]",
      "ARRAY[NULL]::text[]", "ARRAY[['a'], ['b']]", "ARRAY[[NULL], ['b']]::text[]",
      "'[2:3]={a,b}'::text[]", "'[2:3]={a,NULL}'::text[]", "ARRAY['NULL', '', ' ']",
      [=[ARRAY['a,b', '{c}', '"q"', E'back\\slash']]=],
      "ARRAY[repeat('x', 200)]", "ARRAY[repeat('x', 201)]",
      "ARRAY[repeat('é', 200)]", "ARRAY[repeat('é', 201)]",
      "ARRAY[repeat('🎧', 200), 'b']", "ARRAY['b', repeat('🎧', 201)]",
      "ARRAY[repeat('x', 100), repeat('y', 100)]", "ARRAY[repeat('x', 150), repeat('y', 150)]",
      "ARRAY[repeat('x', 150), repeat('y', 201)]", "ARRAY[repeat('x', 150), NULL]",
    }

    it("answer as text_array_fits for every shape of array and every limit", function()
      local values = {}
      for i, a in ipairs(ARRAYS) do values[i] = ("(%d, %s)"):format(i, a) end
      local rows = q(([[
        SELECT v.i, m.max_chars, text_array_fits(v.a, m.max_chars) AS slow,
               text_array_fits_inline(v.a, m.max_chars) AS fast
        FROM (VALUES %s) AS v(i, a)
        CROSS JOIN (VALUES (200), (1), (0), (NULL::integer)) AS m(max_chars)
        ORDER BY v.i, m.max_chars]]):format(table.concat(values, ", ")))
      assert.are.equal(#ARRAYS * 4, #rows)
      local differ, at_200 = {}, {}
      for _, r in ipairs(rows) do
        if r.slow ~= r.fast then differ[#differ + 1] = ARRAYS[r.i] .. " / " .. tostring(r.max_chars) end
        if r.max_chars == 200 then at_200[r.i] = r.fast end
      end
      assert.same({}, differ)
      local null = h.null
      assert.same({ null, true, true, true, false, false, false, false, true, false, true, true,
                    true, false, true, false, true, false, true, true, false, false }, at_200)
    end)

    it("stand in the catalog's constraints under their names, which still refuse", function()
      local defs = q([[SELECT conname::text AS name, pg_get_constraintdef(oid) AS def FROM pg_constraint
                       WHERE conrelid = 'title_catalog'::regclass
                         AND conname IN ('title_catalog_authors_valid', 'title_catalog_narrators_valid',
                                         'title_catalog_categories_valid') ORDER BY 1]])
      assert.same({ "CHECK (text_array_fits_inline(authors, 200))",
                    "CHECK (text_array_fits_inline(categories, NULL::integer))",
                    "CHECK (text_array_fits_inline(narrators, 200))" },
        { defs[1].def, defs[2].def, defs[3].def })
      local ins = "INSERT INTO title_catalog (asin, title, %s) VALUES ($1, 'T', %s)"
      refuses(CHECK, "title_catalog_authors_valid", ins:format("authors", "ARRAY[repeat('é', 201)]"), "B000000001")
      refuses(CHECK, "title_catalog_narrators_valid",
        ins:format("narrators", "ARRAY[repeat('x', 150), repeat('y', 201)]"), "B000000002")
      refuses(CHECK, "title_catalog_categories_valid", ins:format("categories", "ARRAY[[NULL], ['b']]::text[]"),
        "B000000003")
      q(ins:format("authors", "ARRAY[repeat('é', 200), repeat('🎧', 200)]"), "B000000004")
      q(ins:format("categories", "ARRAY[repeat('c', 5000)]"), "B000000005")
    end)
  end)

  describe("updated_at of title_catalog", function()
    local function stamped(asin)
      return q([[INSERT INTO title_catalog (asin, title, subtitle, authors, narrators, categories,
                   series_name, series_position, duration, rating, release_date, created_at, updated_at)
                 VALUES ($1, 'Die Physiker', 'Eine Komödie', ARRAY['Friedrich Dürrenmatt'],
                   ARRAY['Hans Korte', 'Gert Westphal'], '{}', 'Werke', 1, 90, 4.5, '1962-02-21',
                   now() - interval '1 day', now() - interval '1 day')
                 RETURNING id]], asin)[1].id
    end

    local function fresh(id)
      return q("SELECT updated_at > now() - interval '1 hour' AS fresh FROM title_catalog WHERE id = $1",
        id)[1].fresh
    end

    it("stays on a rewrite of equal values, arrays and numbers included", function()
      local id = stamped("B000000011")
      q([[UPDATE title_catalog SET title = 'Die ' || 'Physiker', subtitle = subtitle,
            authors = ARRAY['Friedrich Dürrenmatt'], narrators = string_to_array('Hans Korte,Gert Westphal', ','),
            categories = ARRAY[]::text[], series_position = 1.0, duration = 90, rating = 4.50,
            release_date = '1962-02-21', summary = NULL WHERE id = $1]], id)
      assert.is_false(fresh(id))
    end)

    it("moves on a change of any one column, and the search text follows", function()
      local changes = {
        "subtitle = 'Komödie'", "authors = ARRAY['Friedrich Durrenmatt']",
        "narrators = ARRAY['Gert Westphal', 'Hans Korte']", "categories = ARRAY['Drama']",
        "series_position = 1.5", "rating = 4.4", "release_date = '1962-02-22'",
        "metadata_checked_at = now()", "summary = ''",
      }
      for i, set in ipairs(changes) do
        local id = stamped(("B0000001%02d"):format(i))
        q("UPDATE title_catalog SET " .. set .. " WHERE id = $1", id)
        assert.is_true(fresh(id), set)
      end
      local id = stamped("B000000199")
      q("UPDATE title_catalog SET subtitle = 'Zwei Akte' WHERE id = $1", id)
      assert.same({ search_text = "die physiker zwei akte friedrich durrenmatt hans korte gert westphal werke",
                    fresh = true },
        q([[SELECT s.search_text, c.updated_at > now() - interval '1 hour' AS fresh
            FROM title_catalog AS c JOIN title_search_all AS s ON s.title_id = c.id
            WHERE c.id = $1]], id)[1])
    end)
  end)

  describe("a sync's new titles and entries", function()
    local w
    before_each(function() w = h.fresh_world({ "alice" }) end)
    after_each(function() if w then w.srv:stop() end end)

    local function items()
      return {
        { asin = "B0WC000001", title = "Der Richter und sein Henker", authors = { "Friedrich Dürrenmatt" },
          narrators = {}, source = "LIBRARY", listeningProgress = 40, personalRating = 0,
          dateAdded = "2024-01-02T03:04:05.000Z" },
        { asin = "B0WC000002", title = "Élan Vital", authors = {}, narrators = { "Zoë Ölmann" },
          seriesName = "Çà et là", source = "WISHLIST", listeningProgress = 0, personalRating = 4 },
      }
    end

    it("are found by search the moment the sync answers, and then through the trigram index", function()
      local res = sync(w.srv, w.alice, items())
      assert.are.equal(200, res.status, res.body)
      assert.same({ "B0WC000001" }, asins_of(w.alice:get("/api/library?q=durrenmatt")))
      assert.same({ "B0WC000002" }, asins_of(w.alice:get("/api/library?q=zoe%20olmann")))
      assert.same({ "B0WC000002" }, asins_of(w.alice:get("/api/library?q=ca%20et%20la")))
      -- the same through the index alone (its pending list included), once the worker that
      -- answered has moved the texts there (sql/009, lua/title_search.lua)
      h.wait_until(function()
        return q("SELECT count(*) AS n FROM title_search_pending")[1].n == 0
      end)
      q("SET enable_seqscan = off")
      local ok, rows = pcall(q, [[SELECT c.asin FROM title_catalog AS c
                                  JOIN title_search AS s ON s.title_id = c.id
                                  WHERE search_norm($1) <% s.search_text ORDER BY c.asin]], "elan vital")
      q("RESET enable_seqscan")
      assert(ok, rows)
      local got = {}
      for i, r in ipairs(rows) do got[i] = r.asin end
      assert.same({ "B0WC000002" }, got)
    end)

    it("become entries with the item's fields, and a second sync updates them in place", function()
      assert.are.equal(200, sync(w.srv, w.alice, items()).status)
      local function entries()
        return q([[SELECT c.asin, ul.source::text AS source, ul.listening_progress AS progress,
                          ul.personal_rating AS rating, ul.date_added > now() - interval '1 hour' AS added_now,
                          ul.removed_at IS NULL AS active, ul.id
                   FROM user_library ul JOIN title_catalog c ON c.id = ul.title_id ORDER BY c.asin]])
      end
      local first = entries()
      assert.same({ { "B0WC000001", "LIBRARY", 40, h.null, false, true },
                    { "B0WC000002", "WISHLIST", 0, 4, true, true } },
        { { first[1].asin, first[1].source, first[1].progress, first[1].rating, first[1].added_now, first[1].active },
          { first[2].asin, first[2].source, first[2].progress, first[2].rating, first[2].added_now, first[2].active } })
      local changed = items()
      changed[1].listeningProgress = 80
      assert.are.equal(200, sync(w.srv, w.alice, changed).status)
      local second = entries()
      assert.same({ 80, first[1].id, first[2].id }, { second[1].progress, second[1].id, second[2].id })
    end)

    it("refuse a second entry for a user and title at the database, whatever the insert", function()
      assert.are.equal(200, sync(w.srv, w.alice, items()).status)
      local e = q([[SELECT user_id, title_id FROM user_library LIMIT 1]])[1]
      refuses(UNIQUE, "user_library_user_id_title_id_key", [[
        INSERT INTO user_library (user_id, title_id, source, listening_progress, personal_rating, date_added)
        SELECT $1, n.title_id, 'LIBRARY', 0, NULL, now() FROM unnest($2::uuid[]) AS n(title_id)]],
        e.user_id, { e.title_id })
    end)
  end)
end)
