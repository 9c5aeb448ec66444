-- library_fixture: a deterministic generator of realistic library entries, for the library
-- specs (1,000 entries) and the API benchmark (5,000).
--
--   local fixture = require("spec.support.library_fixture")
--   local items = fixture.generate{ count = 1000, seed = 7, asin_prefix = "B1" }
--   local ids = fixture.insert(pg, user_id, items)   -- asin -> user_library.id
--   fixture.fold("Friedrich Dürrenmatt")             -- "friedrich durrenmatt"
--
-- Items use the sync ITEM names (asin, title, authors, seriesName, dateAdded, ...); an
-- absent value is nil, so a generated item is also a valid POST /api/sync/import item.
-- The data is shaped to exercise what the library endpoints promise:
--   authors with accents and apostrophes (Dürrenmatt, Nesbø, O'Brian), co-authored titles,
--   a few titles with no author at all (the author sort puts them last);
--   series positions 0, 0.5, 1, 2, 2.5, 3 ... 14 and a few series books with no position
--   (a numeric sort must put 10 after 3, a text sort would not);
--   titles that start with an accented or a lower-case letter (the title sort folds both);
--   missing ratings, durations and release dates (those sorts put them last);
--   progress 0, partial and 100; LIBRARY and WISHLIST; several languages;
--   bulk purchases: runs of entries sharing one dateAdded to the microsecond, and dates
--   with microseconds, so keyset pagination must break ties and keep full precision.
-- Words were chosen so that no fuzzy (trigram) neighbour of "sanderson", "durrenmatt" or
-- "kramer" occurs: a search for a misspelling finds exactly the intended entries.
local _M = {}

local format = string.format

-- ---- a small deterministic PRNG (64-bit LCG; independent of math.random) ----

local function new_rng(seed)
  local s = (seed or 1) * 2654435761 + 1
  local r = {}
  -- integer in 1..n
  function r.int(n)
    s = s * 6364136223846793005 + 1442695040888963407
    return ((s >> 33) % n) + 1
  end
  function r.chance(p) return r.int(1000000) <= p * 1000000 end
  function r.pick(list) return list[r.int(#list)] end
  return r
end

-- ---- folding: what search_norm() does to the characters this fixture uses ----

-- Every non-ASCII character the fixture writes, mapped as PostgreSQL's unaccent + lower
-- map it. fold() refuses any other, so a new word cannot silently break the specs.
local FOLD = {
  ["á"] = "a", ["à"] = "a", ["â"] = "a", ["ä"] = "a", ["å"] = "a", ["Á"] = "a", ["Ä"] = "a",
  ["é"] = "e", ["è"] = "e", ["ê"] = "e", ["É"] = "e", ["È"] = "e",
  ["í"] = "i", ["î"] = "i", ["ó"] = "o", ["ö"] = "o", ["ø"] = "o", ["Ö"] = "o", ["Ø"] = "o",
  ["ú"] = "u", ["ü"] = "u", ["Ü"] = "u", ["ñ"] = "n", ["ç"] = "c", ["ł"] = "l", ["Ł"] = "l",
  ["ź"] = "z", ["ß"] = "ss", ["æ"] = "ae", ["Æ"] = "ae",
}

-- lower(unaccent(s)) for the fixture's alphabet (ASCII + FOLD).
function _M.fold(s)
  if s == nil then return nil end
  local out = s:gsub("[\xC2-\xF4][\x80-\xBF]*", function(ch)
    local f = FOLD[ch]
    if not f then error("library_fixture.fold: no folding for " .. ch, 2) end
    return f
  end)
  return (out:lower())
end

-- ---- collation: the order the API promises for text sorts (ICU root, "library_order") ----

-- ICU's root collation compares letters first (case and accents only break ties), and
-- ranks spaces and punctuation before digits before letters, in this order. For the
-- fixture's alphabet the first (primary) level is: fold the string, then compare these
-- weights. collate_key(s) is a byte string whose byte order is that primary order.
local PUNCT_ORDER = { " ", "_", "-", ",", ";", ":", "!", "?", ".", "'", '"', "(", ")", "&" }
local WEIGHT = {}
for i, ch in ipairs(PUNCT_ORDER) do WEIGHT[ch] = string.char(i) end
for d = 0, 9 do WEIGHT[tostring(d)] = string.char(32 + d) end
for b = string.byte("a"), string.byte("z") do
  WEIGHT[string.char(b)] = string.char(64 + b - string.byte("a"))
end

function _M.collate_key(s)
  return (_M.fold(s):gsub(".", function(ch)
    local w = WEIGHT[ch]
    if not w then error("library_fixture.collate_key: no weight for " .. ch, 3) end
    return w
  end))
end

-- a < b in library_order, for strings of the fixture's alphabet whose primary keys differ
-- or that are equal (the specs check that no two distinct strings share a primary key,
-- where ICU would look at accents and case, which this function does not model).
function _M.collate_less(a, b)
  local ka, kb = _M.collate_key(a), _M.collate_key(b)
  if ka ~= kb then return ka < kb end
  return a < b
end

-- Expected counts for a facet or a "top n" list, computed here independently of the
-- server: {name, count} most frequent first, ties in collation order, at most n.
function _M.top_counts(list, values_of, n)
  local counts = {}
  for _, it in ipairs(list) do
    for _, v in ipairs(values_of(it)) do counts[v] = (counts[v] or 0) + 1 end
  end
  local out = {}
  for name, count in pairs(counts) do out[#out + 1] = { name = name, count = count } end
  table.sort(out, function(a, b)
    if a.count ~= b.count then return a.count > b.count end
    return _M.collate_less(a.name, b.name)
  end)
  while #out > n do out[#out] = nil end
  return out
end

-- ---- vocabulary ----

local function range(from, to)
  local t = {}
  for i = from, to do t[#t + 1] = i end
  return t
end

-- Each profile: authors (the first is the lead), narrators, language, categories,
-- publisher, series {name, positions}, known titles used first.
local PROFILES = {
  { authors = { "Brandon Sanderson" }, narrators = { "Michael Kramer", "Kate Reading" },
    language = "en", categories = { "Science Fiction & Fantasy", "Epic Fantasy" },
    publisher = "Macmillan Audio", weight = 6,
    series = {
      { name = "The Stormlight Archive", positions = { 1, 2, 2.5, 3, 3.5, 4, 5 } },
      { name = "Mistborn", positions = { 1, 2, 3, 3.5, 4, 5, 6, 7 } },
    },
    titles = { "The Way of Kings", "Words of Radiance", "Edgedancer", "Oathbringer",
               "The Final Empire", "The Well of Ascension", "Elantris", "Warbreaker",
               "Tress of the Emerald Sea" } },
  { authors = { "Robert Jordan", "Brandon Sanderson" }, narrators = { "Michael Kramer", "Kate Reading" },
    language = "en", categories = { "Science Fiction & Fantasy", "Epic Fantasy" },
    publisher = "Macmillan Audio", weight = 3,
    series = { { name = "The Wheel of Time", positions = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 } } },
    titles = { "New Spring", "The Eye of the World", "The Great Hunt", "The Gathering Storm",
               "Towers of Midnight", "A Memory of Light" } },
  { authors = { "Friedrich Dürrenmatt" }, narrators = { "Hans Korte", "Gert Westphal" },
    language = "de", categories = { "Literatur & Belletristik", "Krimis & Thriller" },
    publisher = "Der Hörverlag", weight = 2,
    titles = { "Der Richter und sein Henker", "Der Verdacht", "Das Versprechen", "Die Physiker",
               "Der Besuch der alten Dame", "Grieche sucht Griechin" } },
  { authors = { "Terry Pratchett" }, narrators = { "Nigel Planer", "Stephen Briggs" },
    language = "en", categories = { "Science Fiction & Fantasy", "Humour" },
    publisher = "Penguin Audio", weight = 5,
    series = { { name = "Discworld", positions = range(1, 41) } },
    titles = { "The Colour of Magic", "The Light Fantastic", "Equal Rites", "Mort", "Sourcery",
               "Wyrd Sisters", "Pyramids", "Guards! Guards!", "Small Gods" } },
  { authors = { "Dennis E. Taylor" }, narrators = { "Ray Porter" },
    language = "en", categories = { "Science Fiction & Fantasy", "Hard Science Fiction" },
    publisher = "Audible Studios", weight = 2,
    series = { { name = "Bobiverse", positions = { 1, 2, 3, 4, 5 } } },
    titles = { "We Are Legion (We Are Bob)", "For We Are Many", "All These Worlds",
               "Heaven's River", "Not Till We Are Lost" } },
  { authors = { "Martha Wells" }, narrators = { "Kevin R. Free" },
    language = "en", categories = { "Science Fiction & Fantasy", "Space Opera" },
    publisher = "Recorded Books", weight = 2,
    series = { { name = "The Murderbot Diaries", positions = { 1, 2, 3, 4, 5, 6, 6.5, 7 } } },
    titles = { "All Systems Red", "Artificial Condition", "Rogue Protocol", "Exit Strategy",
               "Network Effect", "Fugitive Telemetry" } },
  { authors = { "Andrzej Sapkowski" }, narrators = { "Peter Kenny" },
    language = "en", categories = { "Science Fiction & Fantasy", "Dark Fantasy" },
    publisher = "Hachette Audio", weight = 2,
    series = { { name = "The Witcher", positions = { 0.5, 1, 2, 3, 4, 5, 6, 7, 8 } } },
    titles = { "The Last Wish", "Sword of Destiny", "Blood of Elves", "Time of Contempt",
               "Baptism of Fire", "Łódź Nights" } },
  { authors = { "Patrick O'Brian" }, narrators = { "Simon Vance" },
    language = "en", categories = { "Literature & Fiction", "Historical Fiction" },
    publisher = "Blackstone Audio", weight = 3,
    series = { { name = "Aubrey-Maturin", positions = range(1, 20) } },
    titles = { "Master and Commander", "Post Captain", "H.M.S. Surprise", "The Mauritius Command",
               "Desolation Island" } },
  { authors = { "Isaac Asimov" }, narrators = { "Scott Brick" },
    language = "en", categories = { "Science Fiction & Fantasy", "Classics" },
    publisher = "Random House Audio", weight = 2,
    series = { { name = "Foundation", positions = { 1, 2, 3, 4, 5, 6, 7 } } },
    titles = { "Foundation", "Foundation and Empire", "Second Foundation", "i, Robot",
               "The End of Eternity" } },
  { authors = { "Gabriel García Márquez" }, narrators = { "Armando Durán" },
    language = "es", categories = { "Literatura y ficción" },
    publisher = "Penguin Random House Grupo Editorial", weight = 2,
    titles = { "Cien años de soledad", "El amor en los tiempos del cólera",
               "Crónica de una muerte anunciada", "El otoño del patriarca" } },
  { authors = { "Jo Nesbø" }, narrators = { "Sean Barrett" },
    language = "en", categories = { "Mystery, Thriller & Suspense", "Nordic Noir" },
    publisher = "Random House Audio", weight = 2,
    series = { { name = "Harry Hole", positions = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 } } },
    titles = { "The Bat", "Cockroaches", "The Redbreast", "Nemesis", "The Snowman" } },
  { authors = { "Émile Zola" }, narrators = { "Éric Herson-Macarel" },
    language = "fr", categories = { "Littérature", "Classiques" },
    publisher = "Audiolib", weight = 1,
    series = { { name = "Les Rougon-Macquart", positions = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 } } },
    titles = { "La Fortune des Rougon", "La Curée", "Le Ventre de Paris", "Germinal", "L'Assommoir" } },
  { authors = { "Ursula K. Le Guin" }, narrators = { "Rob Inglis" },
    language = "en", categories = { "Science Fiction & Fantasy", "Classics" },
    publisher = "Recorded Books", weight = 2,
    series = { { name = "Earthsea", positions = { 1, 2, 3, 4, 5, 6 } } },
    titles = { "A Wizard of Earthsea", "The Tombs of Atuan", "The Farthest Shore", "Tehanu",
               "The Left Hand of Darkness" } },
  { authors = { "Naomi Novik" }, narrators = { "Simon Vance" },
    language = "en", categories = { "Science Fiction & Fantasy", "Historical Fantasy" },
    publisher = "Books on Tape", weight = 2,
    series = { { name = "Temeraire", positions = { 1, 2, 3, 4, 5, 6, 7, 8, 9 } } },
    titles = { "His Majesty's Dragon", "Throne of Jade", "Black Powder War", "Uprooted",
               "Spinning Silver" } },
  { authors = { "Fredrik Backman" }, narrators = { "Joan Walker" },
    language = "en", categories = { "Literature & Fiction", "Contemporary" },
    publisher = "Simon & Schuster Audio", weight = 2,
    titles = { "A Man Called Ove", "Beartown", "Anxious People", "Britt-Marie Was Here" } },
  { authors = { "Stefan Zweig" }, narrators = { "Ulrich Tukur" },
    language = "de", categories = { "Literatur & Belletristik", "Klassiker" },
    publisher = "Der Hörverlag", weight = 1,
    titles = { "Schachnovelle", "Die Welt von Gestern", "Brief einer Unbekannten",
               "Ungeduld des Herzens", "Sternstunden der Menschheit" } },
  { authors = { "Agatha Christie" }, narrators = { "Hugh Fraser" },
    language = "en", categories = { "Mystery, Thriller & Suspense", "Cozy Mysteries" },
    publisher = "HarperCollins", weight = 3,
    series = { { name = "Hercule Poirot", positions = range(1, 39) } },
    titles = { "The Mysterious Affair at Styles", "Murder on the Orient Express",
               "Death on the Nile", "And Then There Were None" } },
  { authors = { "Haruki Murakami" }, narrators = { "Kirby Heyborne" },
    language = "en", categories = { "Literature & Fiction", "Magical Realism" },
    publisher = "Random House Audio", weight = 2,
    titles = { "Kafka on the Shore", "Norwegian Wood", "1Q84", "The Wind-Up Bird Chronicle" } },
  { authors = { "Becky Chambers" }, narrators = { "Rachel Dulude" },
    language = "en", categories = { "Science Fiction & Fantasy", "Space Opera" },
    publisher = "HarperAudio", weight = 2,
    series = { { name = "Wayfarers", positions = { 1, 2, 3, 4 } } },
    titles = { "The Long Way to a Small, Angry Planet", "A Closed and Common Orbit",
               "Record of a Spaceborn Few", "The Galaxy, and the Ground Within" } },
  { authors = { "Joe Abercrombie" }, narrators = { "Steven Pacey" },
    language = "en", categories = { "Science Fiction & Fantasy", "Dark Fantasy" },
    publisher = "Recorded Books", weight = 2,
    series = { { name = "The First Law", positions = { 1, 2, 3 } } },
    titles = { "The Blade Itself", "Before They Are Hanged", "Last Argument of Kings",
               "Best Served Cold" } },
  { authors = { "Frank Herbert" }, narrators = { "Scott Brick", "Simon Vance" },
    language = "en", categories = { "Science Fiction & Fantasy", "Classics" },
    publisher = "Macmillan Audio", weight = 2,
    series = { { name = "Dune", positions = { 1, 2, 3, 4, 5, 6 } } },
    titles = { "Dune", "Dune Messiah", "Children of Dune", "God Emperor of Dune" } },
  { authors = { "Yuval Noah Harari" }, narrators = { "Derek Perkins" },
    language = "en", categories = { "History", "Science" },
    publisher = "HarperAudio", weight = 1,
    titles = { "Sapiens", "Homo Deus", "21 Lessons for the 21st Century" } },
  { authors = { "Mary Beard" }, narrators = { "Phyllida Nash" },
    language = "en", categories = { "History", "Ancient" },
    publisher = "Blackstone Audio", weight = 1,
    titles = { "SPQR", "Women & Power", "Twelve Caesars" } },
}

-- Words for generated titles beyond the known ones.
local ADJECTIVES = { "Silent", "Broken", "Crimson", "Hollow", "Golden", "Iron", "Last", "Burning",
  "Quiet", "Distant", "Forgotten", "Hidden", "Shattered", "Winter", "Northern", "Endless",
  "Bitter", "Pale", "Restless", "Wandering", "Émigré", "Ætheric", "Über" }
local NOUNS = { "Crown", "Tide", "Harbour", "Garden", "Empire", "Covenant", "Lantern", "Orchard",
  "Citadel", "Archive", "Voyage", "Compass", "Meridian", "Labyrinth", "Reckoning", "Sparrow",
  "Kingdom", "Engine", "Atlas", "Mirror", "Niño", "Öresund", "Straße", "Café" }
local PLACES = { "Ash", "Glass", "Bone", "Salt", "Stars", "Thorns", "Ember", "Rain", "Dust", "Gold",
  "Zürich", "Kraków", "Bergen", "Málaga", "Provence" }
local SUBTITLES = { "A Novel", "A Thriller", "Book One", "The Complete Collection", "Unabridged",
  "A Memoir", "Roman", "Kriminalroman", "Novela" }
local SUMMARY_BITS = { "A sweeping story of loyalty and loss.", "Nothing is what it seems.",
  "An unforgettable journey across a world on the brink.", "Told with wit and warmth.",
  "The award-winning bestseller.", "A gripping tale of ambition and betrayal.",
  "Performed in full by the narrator.", "Includes an exclusive afterword." }

local function title_case_pattern(rng)
  local k = rng.int(6)
  if k == 1 then return "The " .. rng.pick(ADJECTIVES) .. " " .. rng.pick(NOUNS) end
  if k == 2 then return rng.pick(NOUNS) .. " of " .. rng.pick(PLACES) end
  if k == 3 then return "The " .. rng.pick(NOUNS) .. " of " .. rng.pick(PLACES) end
  if k == 4 then return rng.pick(ADJECTIVES) .. " " .. rng.pick(NOUNS) end
  if k == 5 then return "a " .. rng.pick(NOUNS):lower() .. " in " .. rng.pick(PLACES) end
  return rng.pick(ADJECTIVES) .. " " .. rng.pick(PLACES)
end

-- ---- dates ----

-- Civil date from days since 1970-01-01 (proleptic Gregorian): the validator's own.
local civil = require("validate").civil_from_days
_M.civil = civil

local BASE_DAY = 16071           -- 2014-01-01
local SPAN_DAYS = 4380           -- twelve years of purchases

-- ISO-8601 UTC with microseconds, fixed width: string order is time order.
local function timestamp(day, second, micro)
  local y, m, d = civil(day)
  return format("%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", y, m, d,
    second // 3600, (second // 60) % 60, second % 60, micro)
end

-- ---- the generator ----

local function weighted(rng, profiles, total)
  local n = rng.int(total)
  for _, p in ipairs(profiles) do
    n = n - p.weight
    if n <= 0 then return p end
  end
  return profiles[#profiles]
end

-- opts: count (1000), seed (1), asin_prefix ("B0": two characters), start (1: the first
-- number of the ASIN counter, so two batches can be made disjoint).
function _M.generate(opts)
  opts = opts or {}
  local count = opts.count or 1000
  local rng = new_rng(opts.seed or 1)
  local prefix = opts.asin_prefix or "B0"
  assert(#prefix == 2 and prefix:match("^[A-Z0-9]+$"), "asin_prefix: two characters A-Z0-9")
  local start = opts.start or 1

  local total_weight = 0
  for _, p in ipairs(PROFILES) do total_weight = total_weight + p.weight end
  -- Per profile: next known title, per series: next position index.
  local next_title, next_pos = {}, {}

  local items = {}
  local bulk_left, bulk_stamp = 0, nil
  for i = 1, count do
    local p = weighted(rng, PROFILES, total_weight)
    local item = { asin = format("%s%08d", prefix, start + i - 1) }

    -- Title: the profile's known titles first, then generated ones.
    local ti = (next_title[p] or 0) + 1
    next_title[p] = ti
    item.title = p.titles[ti] or title_case_pattern(rng)
    if rng.chance(0.25) then item.subtitle = rng.pick(SUBTITLES) end

    -- Authors: the profile's lead (plus co-authors), sometimes a guest; rarely none.
    if rng.chance(0.015) then
      item.authors = {}
    else
      item.authors = { table.unpack(p.authors) }
      if rng.chance(0.05) then
        local other = weighted(rng, PROFILES, total_weight).authors[1]
        if other ~= item.authors[1] then item.authors[#item.authors + 1] = other end
      end
    end
    item.narrators = {}
    for _, n in ipairs(p.narrators) do
      if #item.narrators == 0 or rng.chance(0.5) then item.narrators[#item.narrators + 1] = n end
    end
    if rng.chance(0.03) then item.narrators = {} end

    -- Series: about two thirds of a series profile's titles belong to its series.
    if p.series and rng.chance(0.66) then
      local s = p.series[rng.int(#p.series)]
      local pi = (next_pos[s] or 0) + 1
      next_pos[s] = pi
      item.seriesName = s.name
      if rng.chance(0.04) then
        item.seriesPosition = nil                   -- unnumbered (a companion, a box set)
      else
        item.seriesPosition = s.positions[(pi - 1) % #s.positions + 1]
      end
    end

    if not rng.chance(0.05) then item.duration = 60 + rng.int(2400) end
    if not rng.chance(0.08) then
      item.rating = (25 + rng.int(25)) / 10          -- 2.6 .. 5.0, one decimal
      item.ratingCount = rng.int(90000)
    end
    if not rng.chance(0.04) then
      local y, m, d = civil(-7300 + rng.int(27000))  -- 1950 .. 2023
      item.releaseDate = format("%04d-%02d-%02d", y, m, d)
    end
    item.language = p.language
    item.categories = { table.unpack(p.categories) }
    if rng.chance(0.1) then item.categories = { p.categories[1] } end
    item.publisher = p.publisher
    item.coverImageUrl = "https://m.media-amazon.com/images/I/" .. item.asin .. "._SL500_.jpg"
    item.summary = rng.pick(SUMMARY_BITS) .. " " .. rng.pick(SUMMARY_BITS)

    item.source = rng.chance(0.8) and "LIBRARY" or "WISHLIST"
    if item.source == "WISHLIST" then
      item.listeningProgress = 0
    else
      local k = rng.int(10)
      item.listeningProgress = (k <= 4) and 0 or (k <= 7 and 100 or rng.int(99))
    end
    if item.source == "LIBRARY" and rng.chance(0.4) then item.personalRating = rng.int(5) end

    -- dateAdded: runs of up to 12 entries share one instant (a bulk purchase); the rest
    -- spread over twelve years, some with microseconds.
    if bulk_left > 0 then
      bulk_left = bulk_left - 1
      item.dateAdded = bulk_stamp
    else
      local micro = rng.chance(0.3) and rng.int(999999) or 0
      item.dateAdded = timestamp(BASE_DAY + rng.int(SPAN_DAYS), rng.int(86400) - 1, micro)
      if rng.chance(0.02) then
        bulk_left = rng.int(11)
        bulk_stamp = item.dateAdded
      end
    end
    items[i] = item
  end
  return items
end

-- ---- seeding through SQL ----

local host = require("host")
local jsonenc = host.json.encode

-- The catalog's fields (lua/sync_rules.lua CATALOG_FIELDS): how items map to columns
-- here, and what a title looks like in the API.
local CATALOG_FIELDS = require("sync_rules").CATALOG_FIELDS

-- The catalog title an item shows in the API: asin and every shown field (absent: null).
function _M.title_of(it)
  local t = { asin = it.asin }
  for _, f in ipairs(CATALOG_FIELDS) do
    if f.api ~= false then
      local v = it[f.json]
      if v == nil then v = host.json.null end
      t[f.json] = v
    end
  end
  return t
end

-- Encodes items as title_catalog rows (column names) for jsonb_populate_recordset, with
-- the entry's fields beside them. Empty arrays are left out (cjson alone would write them
-- as {}) and a missing name list is then '{}' (the column's default).
local function encode(items)
  local rows = {}
  for i, it in ipairs(items) do
    local r = { asin = it.asin, source = it.source, listeningProgress = it.listeningProgress,
                personalRating = it.personalRating, dateAdded = it.dateAdded }
    for _, f in ipairs(CATALOG_FIELDS) do
      local v = it[f.json]
      if type(v) ~= "table" or #v > 0 then r[f.column] = v end
    end
    rows[i] = r
  end
  return jsonenc(rows)
end

local CATALOG_SQL
do
  local cols, vals = { "asin" }, { "x.asin" }
  for _, f in ipairs(CATALOG_FIELDS) do
    cols[#cols + 1] = f.column
    vals[#vals + 1] = f.array and ("COALESCE(x." .. f.column .. ", '{}')") or ("x." .. f.column)
  end
  CATALOG_SQL = "INSERT INTO title_catalog (" .. table.concat(cols, ", ") .. ") SELECT " ..
    table.concat(vals, ", ") .. " FROM jsonb_populate_recordset(NULL::title_catalog, $1::jsonb) AS x" ..
    " ON CONFLICT (asin) DO NOTHING"
end

local ENTRY_SQL = [[
  INSERT INTO user_library (user_id, title_id, source, listening_progress, personal_rating,
                            date_added)
  SELECT $1, c.id, x.source::library_source, COALESCE(x."listeningProgress", 0),
         x."personalRating", COALESCE(x."dateAdded"::timestamptz, now())
  FROM jsonb_to_recordset($2::jsonb) AS x(
         asin text, source text, "listeningProgress" int, "personalRating" int, "dateAdded" text)
  JOIN title_catalog AS c ON c.asin = x.asin
  ON CONFLICT (user_id, title_id) DO UPDATE
     SET source = EXCLUDED.source, listening_progress = EXCLUDED.listening_progress,
         personal_rating = EXCLUDED.personal_rating, date_added = EXCLUDED.date_added,
         removed_at = NULL]]

-- Inserts the catalog rows (existing ASINs are kept as they are) and the user's entries,
-- in batches of 2,000. Returns asin -> user_library.id for the user's whole library.
function _M.insert(pg, user_id, items)
  for first = 1, #items, 2000 do
    local batch = { table.unpack(items, first, math.min(#items, first + 1999)) }
    local doc = encode(batch)
    assert(pg.query(CATALOG_SQL, doc))
    assert(pg.query(ENTRY_SQL, user_id, doc))
  end
  local ids = {}
  for _, r in ipairs(assert(pg.query([[
      SELECT c.asin, ul.id FROM user_library AS ul JOIN title_catalog AS c ON c.id = ul.title_id
      WHERE ul.user_id = $1]], user_id))) do
    ids[r.asin] = r.id
  end
  return ids
end

-- Inserts items as entries a later sync no longer listed (removed_at set): reads and counts
-- must never show them.
function _M.insert_removed(pg, user_id, items)
  _M.insert(pg, user_id, items)
  local asins = {}
  for i, it in ipairs(items) do asins[i] = it.asin end
  assert(pg.query([[UPDATE user_library SET removed_at = now()
                    WHERE user_id = $1 AND title_id IN
                      (SELECT id FROM title_catalog WHERE asin = ANY($2::text[]))]],
    user_id, "{" .. table.concat(asins, ",") .. "}"))
end

-- Inserts items for a user with every 4th synced title made MANUAL (added by hand) and
-- every 9th entry (any source) hidden through PATCH /api/library/:asin as `client`;
-- items are marked to match (source, hidden). The figures must count the MANUAL ones as
-- owned and leave the hidden ones out.
function _M.insert_manual_and_hidden(pg, client, items)
  for i, it in ipairs(items) do
    if it.source == "LIBRARY" and i % 4 == 0 then it.source = "MANUAL" end
  end
  _M.insert(pg, client.user.id, items)
  for i, it in ipairs(items) do
    if i % 9 == 0 then
      local res = client:patch("/api/library/" .. it.asin, { hidden = true })
      assert(res.status == 200, res.body)
      it.hidden = true
    end
  end
end

-- Whether an entry counts as owned in the figures (lq.OWNED): not wishlist, not hidden.
function _M.owned(it)
  return it.source ~= "WISHLIST" and not it.hidden
end

-- Encodes items as the "titles" array of a POST /api/sync/import (the wire's camelCase
-- names; empty arrays left out, as cjson alone would write them as {}).
function _M.wire(items)
  local rows = {}
  for i, it in ipairs(items) do
    local r = {}
    for k, v in pairs(it) do
      if type(v) ~= "table" or #v > 0 then r[k] = v end
    end
    rows[i] = r
  end
  return jsonenc(rows)
end

_M.new_rng = new_rng

-- The "covers" of a list or tier list summary, from the members of its full answer (items
-- or assignments, in their order): the first four as {asin, title, coverImageUrl}.
function _M.covers(members)
  local out = {}
  for i = 1, math.min(4, #members) do
    local m = members[i]
    out[i] = { asin = m.asin, title = m.title.title, coverImageUrl = m.title.coverImageUrl }
  end
  return out
end

return _M
