-- Library files (POST /api/import and `shelfsync import`, issue 14), end to end: the real
-- binary and PostgreSQL over loopback. The files are spec/fixtures/formats/: copies of the
-- reference fixtures (../shared/formats/fixtures) and hand-made nasty variants; the
-- hostile ones are generated here.
local h = require("spec.support.helpers")

local host = h.host
local json = host.json
local null = json.null

local FIXTURES = "spec/fixtures/formats/"

local function fixture(name) return h.read_file(FIXTURES .. name) end

-- POST /api/import with the file as the raw body.
local function upload(c, body, query, headers)
  return c:request("POST", "/api/import" .. (query or ""), { body = body, headers = headers or {} })
end

-- A user's library entries with their catalog rows, by ASIN.
local ENTRY_SQL = [[
  SELECT c.asin, c.title, c.subtitle, c.authors, c.narrators, c.series_name,
         c.series_position, c.series_sequence, c.duration, c.cover_image_url, c.summary,
         c.rating::float8 AS rating, c.rating_count, c.publisher, c.release_date::text AS release_date,
         c.language, c.categories, ul.source::text AS source, ul.listening_progress,
         ul.personal_rating, ul.date_added, ul.removed_at IS NOT NULL AS removed
  FROM user_library ul JOIN title_catalog c ON c.id = ul.title_id
  WHERE ul.user_id = $1]]

local function entries(c)
  local out = {}
  for _, r in ipairs(h.rows(ENTRY_SQL, c.user.id)) do
    for k, v in pairs(r) do
      if type(v) == "table" then r[k] = { table.unpack(v) } end   -- plain arrays
    end
    out[r.asin] = r
  end
  return out
end

local function count_entries(c)
  return h.one("SELECT count(*)::int AS n FROM user_library WHERE user_id = $1", c.user.id).n
end

local function active(c)
  local out = {}
  for asin, e in pairs(entries(c)) do
    if not e.removed then out[asin] = e.source end
  end
  return out
end

-- An entry as ENTRY_SQL reads it; fields absent from t are NULL (arrays empty).
local function entry(t)
  local e = {
    subtitle = null, authors = {}, narrators = {}, series_name = null, series_position = null,
    series_sequence = null, duration = null, cover_image_url = null, summary = null,
    rating = null, rating_count = null, publisher = null, release_date = null, language = null,
    categories = {}, listening_progress = 0, personal_rating = null, removed = false,
  }
  for k, v in pairs(t) do e[k] = v end
  return e
end

local function assert_ok(res, format)
  assert(res.status == 200, "import: " .. res.status .. " " .. res.body)
  assert.equal(format, res.json.format)
  return res.json
end

local COVER = "https://m.media-amazon.com/images/I/%s._SL500_.jpg"

-- The fixtures share ASINs and the catalog is shared: each format starts from an empty
-- catalog, so that what is asserted is what its own file says.
local function clear_catalog()
  assert(h.db().query("DELETE FROM user_library"))
  assert(h.db().query("DELETE FROM title_catalog"))
end

describe("POST /api/import", function()
  local w
  setup(function() w = h.fresh_world({ "alice", "bob", "carol", "dave", "erin", "frank" }) end)
  teardown(function() w.srv:stop() end)

  describe("the Audible API library page", function()
    local res, got
    setup(function()
      clear_catalog()
      res = assert_ok(upload(w.alice, fixture("audible-api-library.json")), "audible-api")
      got = entries(w.alice)
    end)

    it("answers like a sync, with the format and the sources it replaced", function()
      assert.same({ true, 6, 6, 6, 0, 0, { "LIBRARY" }, "us", false },
        { res.success, res.imported, res.newToCatalog, res.libraryCount, res.wishlistCount,
          res.removed, res.covers, res.marketplace, res.dryRun })
      assert.is_string(res.syncId)
      local hist = h.one("SELECT titles_imported, success FROM sync_history WHERE id = $1", res.syncId)
      assert.same({ titles_imported = 6, success = true }, hist)
    end)

    it("imports a book in progress with a decimal series position and its own rating", function()
      assert.same(entry {
        asin = "B0CZK9TQ2V", title = "The Lantern Keeper's Daughter",
        subtitle = "A Novella of the Saltmarsh Cycle", authors = { "Imogen Varga" },
        narrators = { "Theo Nakamura-Fisk" }, series_name = "The Saltmarsh Cycle",
        series_position = 2.5, series_sequence = "2.5", duration = 287,
        cover_image_url = COVER:format("51kR8vQe2TL"),
        summary = "Between book two and book three, one winter.\nWenna Tallis has kept the " ..
          "harbour lantern for eleven years. This is the winter it nearly goes out.",
        rating = 4.57, rating_count = 1893, publisher = "Brackwater Audio",
        release_date = "2024-03-19", language = "en",
        categories = { "Science Fiction & Fantasy", "Fantasy", "Historical" },
        source = "LIBRARY", listening_progress = 38, personal_rating = 4,
        date_added = "2024-04-02T18:22:07.413Z",
      }, got.B0CZK9TQ2V)
    end)

    it("imports an omnibus: a range position, finished, two ladders merged, HTML flattened", function()
      assert.same(entry {
        asin = "B0D4MXRW7P", title = "Cindervale", subtitle = "The Complete Trilogy (Books 1-3)",
        authors = { "R. T. Okonkwo-Hale", "Mara Lindqvist" }, narrators = { "Dela Ambrose", "Full Cast" },
        series_name = "Cindervale", series_position = 1, series_sequence = "1-3", duration = 2471,
        cover_image_url = COVER:format("61Hc2pZk0wL"),
        summary = "Three novels & a bonus story.\nBook 1: Ashfall\nBook 2: Emberwake\nBook 3: Cindervale",
        rating = 4.81, rating_count = 10234, publisher = "Larkspur Studios",
        release_date = "2023-10-31", language = "en",
        categories = { "Science Fiction & Fantasy", "Fantasy", "Epic", "Teen & Young Adult" },
        source = "LIBRARY", listening_progress = 100, date_added = "2023-11-25T09:14:51.880Z",
      }, got.B0D4MXRW7P)
    end)

    it("imports a podcast: no length, no people, and a rating nobody gave is none", function()
      assert.same(entry {
        asin = "B0B9XJ2HQL", title = "Night Shift at the Observatory",
        cover_image_url = COVER:format("71tQ0bWnY3L"),
        summary = "Weekly conversations from the graveyard shift of a mountaintop observatory.",
        rating_count = 0, publisher = "Pale Blue Audio Originals", release_date = "2022-05-02",
        language = "en", categories = { "Science & Engineering", "Astronomy & Space Science" },
        source = "LIBRARY", date_added = "2022-06-30T03:41:12.000Z",
      }, got.B0B9XJ2HQL)
    end)

    it("imports a German title: ISBN-like ASIN, language code, entities, no cover", function()
      assert.same(entry {
        asin = "3869741152", title = "Die Vermessung der Stille", subtitle = "Die Nordlicht-Chroniken 1",
        authors = { "Henrike Aalto", "Jonas Breuer - Übersetzer" }, narrators = { "Friederike Söllner" },
        series_name = "Die Nordlicht-Chroniken", series_position = 1, series_sequence = "1",
        duration = 658,
        summary = "Ein Dorf am Rand des Eismeers, ein Vermesser, der zu viel hört – und ein " ..
          "Winter, der nicht enden will.",
        rating = 4.3, rating_count = 96, publisher = "Hörwerk Lindau", release_date = "2021-09-15",
        language = "de", categories = { "Literatur & Belletristik", "Gegenwartsliteratur" },
        source = "LIBRARY", date_added = "2023-02-11T20:05:33.000Z",
      }, got["3869741152"])
    end)

    it("prefers listening_status over a disagreeing percent_complete", function()
      assert.same(entry {
        asin = "1649014325", title = "Iron Tide [Dramatized Adaptation]",
        authors = { "Colm Abernathy" }, narrators = { "Wren Castellanos", "Obi Marchetti", "Full Cast" },
        series_name = "Tidewar Chronicles", series_position = 2,
        series_sequence = "2, Dramatized Adaptation", duration = 412,
        cover_image_url = COVER:format("41Vb7nKq9sL"),
        summary = "The second Tidewar novel, adapted for audio with a full cast.",
        rating = 4.39, rating_count = 688, publisher = "Soundforge Drama",
        release_date = "2022-08-09", language = "en",
        categories = { "Science Fiction & Fantasy", "Science Fiction", "Military" },
        source = "LIBRARY", listening_progress = 62, date_added = "2022-09-01T12:00:07.000Z",
      }, got["1649014325"])
    end)

    it("reads 'Book 1' as 1, and null images and ladders as unknown", function()
      assert.same(entry {
        asin = "B08PQ4LZ3N", title = "Hollow Crown: Book One", subtitle = "A LitRPG Adventure",
        authors = { "Sable Ironwood" }, narrators = { "Jess Harlow-Pryce" },
        series_name = "Hollow Crown", series_position = 1, series_sequence = "Book 1",
        duration = 1189,
        summary = '"Respawn is a privilege, not a right."\nKai wakes up in a dungeon & the ' ..
          "tutorial has already ended.",
        rating = 4.69, rating_count = 5120, publisher = "Gatehouse Audio",
        release_date = "2020-12-15", language = "en", source = "LIBRARY", listening_progress = 3,
        date_added = "2021-01-07T05:58:44.120Z",
      }, got.B08PQ4LZ3N)
    end)
  end)

  describe("audible-cli exports", function()
    before_each(clear_catalog)

    it("reads the JSON export, whose joined names are split and whose '-' means none", function()
      local res = assert_ok(upload(w.bob, fixture("audible-cli-library.json")), "audible-cli")
      assert.same({ 6, { "LIBRARY" } }, { res.imported, res.covers })
      local got = entries(w.bob)
      assert.same(entry {
        asin = "3869741152", title = "Die Vermessung der Stille", subtitle = "Die Nordlicht-Chroniken 1",
        authors = { "Henrike Aalto", "Jonas Breuer - Übersetzer" }, narrators = { "Friederike Söllner" },
        series_name = "Die Nordlicht-Chroniken", series_position = 1, series_sequence = "1",
        duration = 658, rating = 4.3, rating_count = 96, release_date = "2021-09-15",
        categories = { "Literatur & Belletristik", "Gegenwartsliteratur" },
        source = "LIBRARY", date_added = "2023-02-11T20:05:33.000Z",
      }, got["3869741152"])
      assert.same(entry {
        asin = "B0D4MXRW7P", title = "Cindervale", subtitle = "The Complete Trilogy (Books 1-3)",
        authors = { "R. T. Okonkwo-Hale", "Mara Lindqvist" }, narrators = { "Dela Ambrose", "Full Cast" },
        series_name = "Cindervale", series_position = 1, series_sequence = "1-3", duration = 2471,
        cover_image_url = COVER:format("61Hc2pZk0wL"), rating = 4.8, rating_count = 10234, release_date = "2023-10-31",
        categories = { "Science Fiction & Fantasy", "Fantasy", "Epic", "Teen & Young Adult" },
        source = "LIBRARY", listening_progress = 100, date_added = "2023-11-25T09:14:51.880Z",
      }, got.B0D4MXRW7P)
    end)

    it("reads the TSV export (CRLF, a quoted multi-line cell with a tab) as the same rows", function()
      assert_ok(upload(w.bob, fixture("audible-cli-library.json")), "audible-cli")
      local from_json = entries(w.bob)
      clear_catalog()
      local res = assert_ok(upload(w.carol, fixture("audible-cli-library.tsv")), "audible-cli")
      assert.same({ 6, 6 }, { res.imported, res.newToCatalog })
      assert.same(from_json, entries(w.carol))
      assert.equal('"Respawn is a privilege, not a right."\nKai wakes up in a dungeon & the ' ..
        "tutorial has already ended.", entries(w.carol).B08PQ4LZ3N.summary)
    end)

    it("reads a nasty CSV: BOM, CRLF, quoted delimiters, quotes and newlines, extra and missing columns", function()
      local res = assert_ok(upload(w.dave, fixture("audible-cli-library-nasty.csv")), "audible-cli")
      assert.same({ 2, { "LIBRARY" } }, { res.imported, res.covers })
      local got = entries(w.dave)
      assert.same(entry {
        asin = "B0CSVNASTY", title = 'Commas, "Quotes" and Lines', authors = { "Anna Bell", "Cole Dunn" },
        narrators = { "Full Cast" }, series_name = "Box Sets", series_position = 1,
        series_sequence = "1-3", duration = 600, rating = 4.5, rating_count = 12,
        release_date = "2023-12-01", source = "LIBRARY", listening_progress = 100,
        date_added = "2024-01-02T03:04:05.000Z",
      }, got.B0CSVNASTY)
      assert.same(entry {
        asin = "B0PODCAST1", title = "A Podcast", source = "LIBRARY",
        date_added = "2022-06-30T03:41:12.000Z",
      }, got.B0PODCAST1)
    end)
  end)

  describe("the Audible API wishlist page", function()
    before_each(clear_catalog)

    it("imports pre-orders, decomposed names in NFC, and the series from relationships", function()
      local c = h.login(w.srv, "wish@example.com")
      local res = assert_ok(upload(c, fixture("audible-api-wishlist.json")), "audible-api")
      assert.same({ 2, 0, 2, { "WISHLIST" } }, { res.imported, res.libraryCount, res.wishlistCount, res.covers })
      local got = entries(c)
      assert.same(entry {
        asin = "B0FAKEPRE1", title = "The Third Harbour", authors = { "Nnéka Obí" },
        narrators = { "Ṣọpẹ́ Dìrísù" }, series_name = "The Harbour Books", series_position = 3,
        series_sequence = "3", cover_image_url = "https://m.media-amazon.com/images/I/81preorderX._SL500_.jpg",
        summary = "Coming soon....", rating_count = 0, publisher = "Harbour Lights",
        release_date = "2026-03-01", language = "en", categories = { "Literature & Fiction" },
        source = "WISHLIST", date_added = "2025-10-09T02:12:30.000Z",
      }, got.B0FAKEPRE1)
      assert.equal("Ṣọpẹ́ Dìrísù", host.text.nfc("S\u{0323}o\u{0323}pe\u{0323}\u{0301} Di\u{0300}ri\u{0301}su\u{0300}"))
      assert.same({ "WISHLIST", "2025-09-30T11:00:00.000Z" },
        { got.B0CZK9TQ2V.source, got.B0CZK9TQ2V.date_added })
    end)
  end)

  describe("Libation exports", function()
    before_each(clear_catalog)

    it("reads a ';' CSV with culture dates and decimals and every series in one cell", function()
      local res = assert_ok(upload(w.erin, fixture("libation-library-de.csv")), "libation")
      assert.same({ 2, { "LIBRARY" } }, { res.imported, res.covers })
      local got = entries(w.erin)
      assert.same(entry {
        asin = "B0LIBATION", title = "Die Stille", authors = { "Henrike Aalto" },
        narrators = { "Friederike Söllner" }, series_name = "Die Nordlicht-Chroniken",
        series_position = 1, series_sequence = "1", duration = 658,
        cover_image_url = COVER:format("51pZyUM49GL"), summary = "Ein Dorf – ein Winter.",
        rating = 4.3, publisher = "Hörwerk Lindau", release_date = "2021-09-15", language = "de",
        categories = { "Literatur & Belletristik", "Gegenwartsliteratur" }, source = "LIBRARY",
        listening_progress = 100, personal_rating = 5, date_added = "2025-05-21T05:42:18.000Z",
      }, got.B0LIBATION)
      assert.same(entry {
        asin = "B0LIBATIO2", title = "Ohne Serie", subtitle = "Ein Untertitel",
        authors = { "A. Autor", "B. Autorin" }, language = "en", source = "LIBRARY",
        date_added = "2024-02-01T10:00:00.000Z",
      }, got.B0LIBATIO2)
    end)

    it("reads the JSON export by its property names", function()
      local c = h.login(w.srv, "libjson@example.com")
      assert_ok(upload(c, fixture("libation-library.json")), "libation")
      assert.same(entry {
        asin = "B0CZK9TQ2V", title = "The Lantern Keeper's Daughter",
        subtitle = "A Novella of the Saltmarsh Cycle", authors = { "Imogen Varga" },
        narrators = { "Theo Nakamura-Fisk" }, series_name = "The Saltmarsh Cycle",
        series_position = 2.5, series_sequence = "2.5", duration = 287,
        cover_image_url = COVER:format("51kR8vQe2TL"), summary = "One winter.",
        rating = 4.57, publisher = "Brackwater Audio",
        release_date = "2024-03-19", language = "en", categories = { "Historical" },
        source = "LIBRARY", personal_rating = 4, date_added = "2024-04-02T18:22:07.000Z",
      }, entries(c).B0CZK9TQ2V)
    end)
  end)

  describe("Audible Library Extractor exports", function()
    before_each(clear_catalog)

    it("reads the data JSON: books to the library, wishlist to the wishlist", function()
      local c = h.login(w.srv, "ale@example.com")
      local res = assert_ok(upload(c, fixture("ale-data.json")), "ale")
      assert.same({ 3, 2, 1, { "LIBRARY", "WISHLIST" } },
        { res.imported, res.libraryCount, res.wishlistCount, res.covers })
      local got = entries(c)
      local book1 = got.B0ALEBOOK1
      assert.is_string(book1.date_added)      -- ALE has no date: the import's
      book1.date_added = nil
      assert.same(entry {
        asin = "B0ALEBOOK1", title = "Ashfall", authors = { "R. T. Okonkwo-Hale" },
        narrators = { "Dela Ambrose" }, series_name = "Cindervale", series_position = 1,
        series_sequence = "1", duration = 663, cover_image_url = COVER:format("61Hc2pZk0wL"),
        summary = "Ash & embers.", rating = 4.7, rating_count = 1200, publisher = "Larkspur Studios",
        release_date = "2021-03-04", language = "en", categories = { "Science Fiction & Fantasy", "Fantasy" },
        source = "LIBRARY", listening_progress = 53, personal_rating = 4, date_added = nil,
      }, book1)
      assert.same({ "Cindervale", null, "∞", 45, 100 }, { got.B0ALEBOOK2.series_name,
        got.B0ALEBOOK2.series_position, got.B0ALEBOOK2.series_sequence, got.B0ALEBOOK2.duration,
        got.B0ALEBOOK2.listening_progress })
      assert.same({ "Low Water", "WISHLIST", null, 0 }, { got.B0ALEWISH1.title, got.B0ALEWISH1.source,
        got.B0ALEWISH1.rating, got.B0ALEWISH1.rating_count })
    end)

    it("reads the spreadsheet CSV with its formulas and quoted numbers", function()
      local c = h.login(w.srv, "alecsv@example.com")
      assert_ok(upload(c, fixture("ale-library.csv")), "ale")
      local e = entries(c).B0ALECSV01
      e.date_added = nil
      assert.same(entry {
        asin = "B0ALECSV01", title = "Ashfall", authors = { "R. T. Okonkwo-Hale", "Mara Lindqvist" },
        narrators = { "Dela Ambrose" }, series_name = "Cindervale", series_position = 1,
        series_sequence = "1", duration = 663, cover_image_url = COVER:format("61Hc2pZk0wL"),
        summary = "First line.\nSecond line.", rating = 4.7, rating_count = 1200,
        publisher = "Larkspur Studios", release_date = "2021-03-04", language = "en",
        categories = { "Science Fiction & Fantasy", "Fantasy" }, source = "LIBRARY",
        listening_progress = 100, personal_rating = 5, date_added = nil,
      }, e)
    end)
  end)

  describe("the extension's files", function()
    before_each(clear_catalog)

    it("reads its download: status, progress text, userRating and a length", function()
      local c = h.login(w.srv, "extdl@example.com")
      local res = assert_ok(upload(c, fixture("extension-download.json")), "extension")
      assert.same({ 3, 2, 1 }, { res.imported, res.libraryCount, res.wishlistCount })
      local got = entries(c)
      assert.same(entry {
        asin = "B0EXTDL001", title = "Downloaded Book", authors = { "Ext Author" },
        series_name = "Ext Series", series_position = 2, series_sequence = "Book 2", duration = 300,
        cover_image_url = "https://m.media-amazon.com/images/I/ext1._SL500_.jpg",
        source = "LIBRARY", listening_progress = 40, personal_rating = 5,
        date_added = "2025-01-02T03:04:05.000Z",
      }, got.B0EXTDL001)
      assert.same({ "LIBRARY", 100, 150, null }, { got.B0EXTDL002.source,
        got.B0EXTDL002.listening_progress, got.B0EXTDL002.duration, got.B0EXTDL002.personal_rating })
      assert.equal("WISHLIST", got.B0EXTDL003.source)
    end)

    it("reads the sync wire format, sent gzipped", function()
      local c = h.login(w.srv, "wire@example.com")
      local body = json.encode({ titles = {
        { asin = "B0WIRE0001", title = "Wire One", source = "LIBRARY", authors = { "W. Riter" },
          listeningProgress = 12, seriesPosition = 4 },
        { asin = "B0WIRE0002", title = "Wire Two", source = "WISHLIST" },
      } })
      local res = assert_ok(upload(c, host.gzip.compress(body), nil,
        { ["Content-Type"] = "application/json", ["Content-Encoding"] = "gzip" }), "extension")
      assert.same({ 2, { "LIBRARY", "WISHLIST" } }, { res.imported, res.covers })
      local got = entries(c)
      assert.same({ "LIBRARY", 12, { "W. Riter" }, 4 }, { got.B0WIRE0001.source,
        got.B0WIRE0001.listening_progress, got.B0WIRE0001.authors, got.B0WIRE0001.series_position })
    end)
  end)

  describe("scope of removals", function()
    local c
    setup(function()
      clear_catalog()
      c = h.login(w.srv, "scope@example.com")
      assert_ok(upload(c, fixture("audible-api-library.json")), "audible-api")
      -- a title the user added by hand (POST /api/library makes these)
      local t = h.one([[INSERT INTO title_catalog (asin, title) VALUES ('B0MANUAL01', 'By Hand')
                        RETURNING id]])
      h.one([[INSERT INTO user_library (user_id, title_id, source) VALUES ($1, $2, 'MANUAL')
              RETURNING id]], c.user.id, t.id)
    end)

    after_each(function()
      assert.equal("MANUAL", active(c).B0MANUAL01, "the manual entry survives every file")
    end)

    it("a wishlist file leaves the library untouched, and an owned title stays owned", function()
      local before = entries(c)
      local res = assert_ok(upload(c, fixture("audible-api-wishlist.json")), "audible-api")
      assert.same({ 0, { "WISHLIST" } }, { res.removed, res.covers })
      local after = entries(c)
      assert.same("WISHLIST", after.B0FAKEPRE1.source)
      after.B0FAKEPRE1 = nil
      -- B0CZK9TQ2V is in both files: the library entry keeps its source and progress
      assert.same(before, after)
    end)

    it("a library file replaces the library and leaves the wishlist", function()
      local res = assert_ok(upload(c, fixture("audible-cli-library-nasty.csv")), "audible-cli")
      assert.same({ 6, { "LIBRARY" } }, { res.removed, res.covers })
      assert.same({ B0CSVNASTY = "LIBRARY", B0PODCAST1 = "LIBRARY", B0FAKEPRE1 = "WISHLIST",
                    B0MANUAL01 = "MANUAL" }, active(c))
    end)

    it("a title that comes back in a later file gets its old entry back", function()
      local id = h.one([[SELECT ul.id FROM user_library ul JOIN title_catalog t ON t.id = ul.title_id
                         WHERE ul.user_id = $1 AND t.asin = 'B0D4MXRW7P']], c.user.id).id
      assert_ok(upload(c, fixture("audible-api-library.json")), "audible-api")
      local again = h.one([[SELECT ul.id, ul.removed_at FROM user_library ul JOIN title_catalog t
                            ON t.id = ul.title_id WHERE ul.user_id = $1 AND t.asin = 'B0D4MXRW7P']], c.user.id)
      assert.same({ id = id, removed_at = null }, again)
      assert.equal("WISHLIST", active(c).B0FAKEPRE1)
    end)

    it("source=WISHLIST takes only the wishlist part of a file that has both", function()
      local d = h.login(w.srv, "scope2@example.com")
      assert_ok(upload(d, fixture("ale-data.json"), "?source=LIBRARY"), "ale")
      assert.same({ B0ALEBOOK1 = "LIBRARY", B0ALEBOOK2 = "LIBRARY" }, active(d))
      local res = assert_ok(upload(d, fixture("ale-data.json"), "?source=wishlist"), "ale")
      assert.same({ 1, 0, { "WISHLIST" } }, { res.imported, res.removed, res.covers })
      assert.matches("2 titles of the other source skipped", res.warnings[1], 1, true)
      assert.same({ B0ALEBOOK1 = "LIBRARY", B0ALEBOOK2 = "LIBRARY", B0ALEWISH1 = "WISHLIST" }, active(d))
    end)

    it("a file whose source the content cannot tell follows ?source=", function()
      local d = h.login(w.srv, "scope3@example.com")
      local res = assert_ok(upload(d, fixture("audible-cli-library.json"), "?source=WISHLIST"), "audible-cli")
      assert.same({ 0, 6, { "WISHLIST" } }, { res.libraryCount, res.wishlistCount, res.covers })
    end)
  end)

  describe("dry run", function()
    it("answers what the import would do and writes nothing, not even history", function()
      clear_catalog()
      local c = h.login(w.srv, "dry@example.com")
      local n_catalog = h.one("SELECT count(*)::int AS n FROM title_catalog").n
      local dry = assert_ok(upload(c, fixture("audible-api-library.json"), "?dryRun=1"), "audible-api")
      assert.same({ true, 6, 6, nil }, { dry.dryRun, dry.imported, dry.newToCatalog, dry.syncId })
      assert.same({ 0, n_catalog, 0 }, { count_entries(c),
        h.one("SELECT count(*)::int AS n FROM title_catalog").n,
        h.one("SELECT count(*)::int AS n FROM sync_history WHERE user_id = $1", c.user.id).n })
      local real = assert_ok(upload(c, fixture("audible-api-library.json")), "audible-api")
      assert.same({ dry.imported, dry.newToCatalog, dry.warnings }, { real.imported, real.newToCatalog, real.warnings })
    end)
  end)

  describe("the request", function()
    local function multipart(parts)
      local b = "----shelfsync" .. host.crypto.uuid()
      local out = {}
      for _, p in ipairs(parts) do
        out[#out + 1] = "--" .. b .. "\r\nContent-Disposition: form-data; name=\"" .. p[1] .. "\"" ..
          (p[3] and ('; filename="' .. p[3] .. '"\r\nContent-Type: application/octet-stream') or "") ..
          "\r\n\r\n" .. p[2] .. "\r\n"
      end
      return table.concat(out) .. "--" .. b .. "--\r\n", "multipart/form-data; boundary=" .. b
    end

    it("takes a browser form's `file` field, gzip inside, with its source field", function()
      local c = h.login(w.srv, "form@example.com")
      local body, ctype = multipart({ { "source", "WISHLIST" },
        { "file", host.gzip.compress(fixture("audible-cli-library.tsv")), "library.tsv.gz" } })
      local res = assert_ok(upload(c, body, nil, { ["Content-Type"] = ctype }), "audible-cli")
      assert.same({ 6, { "WISHLIST" } }, { res.wishlistCount, res.covers })
    end)

    it("refuses a form without a file, and bad parameters", function()
      local c = h.login(w.srv, "form2@example.com")
      local body, ctype = multipart({ { "source", "LIBRARY" } })
      assert.same({ status = 400, error = "invalid_parameter" },
        h.error_of(upload(c, body, nil, { ["Content-Type"] = ctype })))
      assert.same({ status = 400, error = "invalid_parameter" },
        h.error_of(upload(c, fixture("audible-cli-library.tsv"), "?source=SHELF")))
      assert.same({ status = 400, error = "invalid_parameter" },
        h.error_of(upload(c, fixture("audible-cli-library.tsv"), "?marketplace=mars")))
      assert.same({ status = 415, error = "unsupported_encoding" },
        h.error_of(upload(c, fixture("audible-cli-library.tsv"), nil, { ["Content-Encoding"] = "br" })))
      assert.equal(0, count_entries(c))
    end)

    it("takes the user's marketplace unless the request names one", function()
      local c = h.login(w.srv, "market@example.com")
      h.one("UPDATE users SET marketplace = 'de' WHERE id = $1 RETURNING id", c.user.id)
      assert.equal("de", assert_ok(upload(c, fixture("libation-library.json"), "?dryRun=1"), "libation").marketplace)
      assert.equal("uk", assert_ok(upload(c, fixture("libation-library.json"), "?dryRun=1&marketplace=UK"),
        "libation").marketplace)
    end)

    it("needs a session and a same-origin request", function()
      assert.same({ status = 401, error = "unauthenticated" },
        h.error_of(upload(w.anon, fixture("audible-cli-library.tsv"))))
      local c = h.login(w.srv, "csrf@example.com")
      c.origin = "https://evil.example"
      assert.same({ status = 403, error = "csrf_rejected" },
        h.error_of(upload(c, fixture("audible-cli-library.tsv"))))
      assert.equal(0, count_entries(c))
    end)
  end)

  describe("hostile files", function()
    local c
    setup(function()
      c = h.login(w.srv, "hostile@example.com")
      assert_ok(upload(c, fixture("libation-library.json")), "libation")
    end)

    -- A refused file: status and code, the message, and nothing changed.
    local function refused(body, status, code, headers)
      local before = entries(c)
      local res = upload(c, body, nil, headers)
      assert.same({ status = status, error = code }, h.error_of(res))
      assert.same(before, entries(c))
      local health = assert(h.request("GET", w.srv.url .. "/healthz"))
      assert.equal(200, health.status)
      return res.json.message
    end

    it("a truncated JSON file names the line and the item", function()
      local text = fixture("audible-api-library.json")
      local msg = refused(text:sub(1, 9000), 400, "malformed_file")
      local lines = select(2, text:sub(1, 9000):gsub("\n", "")) + 1
      assert.matches("line " .. lines .. ", column %d+ in items%[1%]: parse error: premature EOF", msg)
    end)

    it("a truncated gzip file", function()
      local gz = host.gzip.compress(fixture("audible-api-library.json"))
      assert.matches("gzip stream is truncated", refused(gz:sub(1, #gz // 2), 400, "malformed_file"), 1, true)
    end)

    it("bad bytes inside a string", function()
      local msg = refused('[{"AudibleProductId": "B0BAD00001", "Title": "\255\254"}]', 400, "malformed_file")
      assert.matches("line 1, column %d+ in %[0%]: lexical error: invalid bytes in UTF8 string", msg)
    end)

    it("binary data", function()
      local bytes = {}
      for i = 1, 4096 do bytes[i] = string.char((i * 7919 + 13) % 256) end
      refused(table.concat(bytes), 400, "malformed_file")
    end)

    it("an unknown format", function()
      refused('{"books_i_like": [{"isbn": "123"}]}', 415, "unsupported_format")
      refused("name,age\r\nann,3\r\n", 415, "unsupported_format")
    end)

    it("a file with no valid title", function()
      local msg = refused('{"titles": [{"asin": "nope", "title": "x", "source": "LIBRARY"}]}', 422, "no_valid_titles")
      assert.matches("none of the 1 titles is valid", msg, 1, true)
      refused('{"items": []}', 415, "unsupported_format")
    end)

    it("JSON nested 10,000 deep", function()
      local deep = '{"items": [' .. string.rep("[", 10000) .. string.rep("]", 10000) .. "]}"
      assert.matches("nested too deep", refused(deep, 400, "malformed_file"), 1, true)
      local deep_obj = '{"items": [{"asin": "B0DEEP0001", "series": ' .. string.rep('{"a":', 10000) ..
        "1" .. string.rep("}", 10000) .. "}]}"
      refused(deep_obj, 400, "malformed_file")
    end)

    it("a CSV with a million columns", function()
      local wide = "asin,title,series_title," .. string.rep("x,", 1000000) .. "\r\nB0WIDE0001,t,s\r\n"
      assert.matches("line 1: more than 1000 columns", refused(wide, 400, "malformed_file"), 1, true)
    end)

    it("a CSV with a quote never closed", function()
      local msg = refused('asin,title,series_title\r\nB0OPEN0001,"never closed,x\r\n', 400, "malformed_file")
      assert.matches("line 2: a quoted field is never closed", msg, 1, true)
    end)

    it("a 2 GB gzip bomb is stopped at the size limit", function()
      local path = h.test_dir .. "/bomb.json.gz"
      assert(h.exec(string.format(
        "(printf '{\"items\": ['; head -c 2147483648 /dev/zero | tr '\\0' ' ') | gzip -1 > %s",
        h.shell_quote(path))))
      local bomb = h.read_file(path)
      assert.is_true(#bomb < 16 * 1024 * 1024)
      local msg = refused(bomb, 413, "payload_too_large", { ["Content-Encoding"] = "gzip" })
      assert.matches("over the size limit", msg, 1, true)
      local rss = tonumber(h.read_file("/proc/" .. w.srv.pid .. "/status"):match("VmHWM:%s*(%d+) kB"))
      assert.is_true(rss < 200 * 1024, "server peak RSS " .. rss .. " kB")
    end)
  end)

  describe("limits", function()
    it("refuses a file with more titles than import_file_max_items, writing nothing", function()
      local srv = h.start_server({ env = { SHELFSYNC_IMPORT_FILE_MAX_ITEMS = "5" } })
      local c = h.login(srv, "limits@example.com")
      local res = c:request("POST", "/api/import", { body = fixture("audible-cli-library.tsv") })
      srv:stop()
      assert.same({ status = 413, error = "too_many_titles" }, h.error_of(res))
      assert.equal("a file holds at most 5 titles", res.json.message)
      assert.equal(0, count_entries(c))
    end)

    it("keeps the LIBRARY copy of a title listed in both the library and the wishlist", function()
      local c = h.login(w.srv, "dupes@example.com")
      local res = assert_ok(upload(c, json.encode({ titleCatalog = {
        { asin = "B0DUPE0001", title = "Wanted", status = "WISHLIST" },
        { asin = "B0DUPE0001", title = "Bought", status = "LIBRARY" },
      } })), "extension")
      assert.same({ 1, 1, 0 }, { res.imported, res.libraryCount, res.wishlistCount })
      assert.matches("duplicate of titles[0]; kept this LIBRARY entry", res.warnings[1], 1, true)
      assert.same({ B0DUPE0001 = "LIBRARY" }, active(c))
    end)
  end)

  describe("importers are plug-ins", function()
    it("an operator's new module in lua/importers/ is used without recompiling", function()
      local root = h.temp_root({ ["lua/importers/reading_log.lua"] = [[
        local norm = require("import_norm")
        return {
          format = "reading-log",
          csv = { match = function(cols) return cols.isbn10 ~= nil and cols.booktitle ~= nil end },
          convert = function(row)
            return { asin = norm.asin(row.isbn10), title = norm.name(row.booktitle), source = "LIBRARY" }
          end,
        }]] })
      local srv = h.start_server({ root = root })
      local c = h.login(srv, "plugin@example.com")
      local res = c:request("POST", "/api/import", { body = "ISBN-10\tBook Title\r\n0358578396\tA Found Book\r\n" })
      srv:stop()
      assert.same({ 200, "reading-log", 1 }, { res.status, res.json.format, res.json.imported })
      assert.same({ "A Found Book", "LIBRARY" }, { entries(c)["0358578396"].title, entries(c)["0358578396"].source })
    end)
  end)

  describe("shelfsync import", function()
    it("imports a file for a user through the same path, and says why it cannot", function()
      clear_catalog()
      local c = h.login(w.srv, "cli@example.com")
      local env = "DATABASE_URL=" .. h.shell_quote(os.getenv("DATABASE_URL")) .. " "
      local code, out = h.run(env .. h.shell_quote(h.binary) .. " import --user CLI@example.com " ..
        "--source WISHLIST " .. FIXTURES .. "audible-cli-library.tsv")
      assert.equal(0, code, out)
      local res = json.decode(out:match("(%b{})%s*$"))
      assert.same({ "audible-cli", 6, 6, { "WISHLIST" } }, { res.format, res.imported, res.wishlistCount, res.covers })
      assert.equal("WISHLIST", entries(c).B08PQ4LZ3N.source)
      code, out = h.run(env .. h.shell_quote(h.binary) .. " import --user nobody@example.com " ..
        FIXTURES .. "audible-cli-library.tsv")
      assert.equal(1, code)
      assert.matches('"error":"not_found"', out, 1, true)
    end)
  end)
end)
