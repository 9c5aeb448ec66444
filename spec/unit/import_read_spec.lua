-- Reading library files in-process: host.upload (core/upload.c), lua/csv.lua and the
-- normalisation rules of lua/import_norm.lua. The whole import is covered end to end by
-- spec/integration/import_spec.lua.
local h = require("spec.support.helpers")
local csv = require("csv")
local norm = require("import_norm")

local host = h.host
local null = host.json.null

-- Every (key, item) the reader yields, then its error (message, code) if any.
local function read_all(text, opts)
  local r = host.upload.json(text, 1, #text, opts or {})
  local out = {}
  while true do
    local key, item, code = r:next()
    if code then return out, item, code end
    if item == nil then return out end
    out[#out + 1] = { key or "", item }
  end
end

describe("host.upload.json", function()
  it("yields the items of each top-level list, and other members whole", function()
    local items = read_all('{"items": [{"asin": "A"}, {"asin": "B"}], "total": 2, ' ..
      '"meta": {"x": [1, null, true]}}')
    assert.same({ { "items", { asin = "A" } }, { "items", { asin = "B" } }, { "total", 2 },
                  { "meta", { x = { 1, null, true } } } }, items)
  end)

  it("yields a top-level array's elements with no key, and marks arrays", function()
    local items = read_all('[{"a": []}, "s", 1.5]')
    assert.same({ { "", { a = {} } }, { "", "s" }, { "", 1.5 } }, items)
    assert.equal(host.array_mt, getmetatable(items[1][2].a))
  end)

  it("keeps only the item keys asked for, whatever the dropped values hold", function()
    local items = read_all('{"items": [{"asin": "A", "big": {"deep": [[1, {"x": 2}]]}, ' ..
      '"rating": {"n": 3}, "junk": [1, 2, 3], "title": "T"}]}', { keep = { asin = true, rating = true, title = true } })
    assert.same({ { "items", { asin = "A", rating = { n = 3 }, title = "T" } } }, items)
  end)

  it("filters nested objects by a nested keep, through arrays", function()
    local items = read_all('{"items": [{"asin": "A", "rating": {"overall": {"n": 3, "x": 1}, "story": {"n": 2}}, ' ..
      '"ladders": [{"ladder": [{"id": "1", "name": "Fantasy"}], "root": "Genres"}], "images": {"500": "u"}}]}',
      { keep = { asin = true, images = true, rating = { overall = { n = true } },
                 ladders = { ladder = { name = true } } } })
    assert.same({ { "items", { asin = "A", rating = { overall = { n = 3 } }, images = { ["500"] = "u" },
                                ladders = { { ladder = { { name = "Fantasy" } } } } } } }, items)
  end)

  it("reads gzip (by its magic bytes) and a UTF-8 byte order mark", function()
    local gz = host.gzip.compress('\239\187\191[{"a": 1}]')
    assert.same({ { "", { a = 1 } } }, read_all(gz))
  end)

  it("reads items that straddle its 64 KiB steps", function()
    local parts = {}
    for i = 1, 3000 do parts[i] = string.format('{"asin": "B%09d", "pad": "%s"}', i, string.rep("x", 50)) end
    local items = read_all(host.gzip.compress("[" .. table.concat(parts, ",\n") .. "]"), { keep = { asin = true } })
    assert.equal(3000, #items)
    assert.same({ "", { asin = "B000002999" } }, items[2999])
  end)

  it("names the line, column and item of malformed JSON", function()
    local _, msg, code = read_all('{"items": [\n{"asin": "A"},\n{"asin": tru}]}')
    assert.same({ "line 3, column 13 in items[1]: lexical error: invalid string in json text.", "malformed" },
      { msg, code })
  end)

  it("refuses nesting past its depth and items past their value count", function()
    local _, msg, code = read_all(string.rep("[", 100) .. string.rep("]", 100))
    assert.same({ "too_deep", true }, { code, msg:find("nested too deep", 1, true) ~= nil })
    _, msg, code = read_all('[[' .. string.rep("1,", 200) .. '1]]', { values = 100 })
    assert.same({ "too_deep", true }, { code, msg:find("too many values", 1, true) ~= nil })
  end)

  it("stops a gzip bomb at the limit", function()
    local bomb = host.gzip.compress("[" .. string.rep(" ", 4 * 1024 * 1024) .. "]")
    local _, msg, code = read_all(bomb, { limit = 1024 * 1024 })
    assert.same({ "the file is over the size limit", "too_large" }, { msg, code })
  end)

  it("keeps failing once failed", function()
    local r = host.upload.json("[1, x]", 1, 6, {})
    assert.equal(1, select(2, r:next()))
    local _, _, code = r:next()
    assert.equal("malformed", code)
    assert.equal("malformed", select(3, r:next()))
  end)
end)

describe("host.upload.text and head", function()
  it("inflate gzip to the limit and pass plain bytes through", function()
    local gz = host.gzip.compress("a,b\r\n1,2\r\n")
    assert.equal("a,b\r\n1,2\r\n", host.upload.text(gz, 1, #gz, 100))
    assert.same({ nil, "the file is over the size limit", "too_large" }, { host.upload.text(gz, 1, #gz, 5) })
    assert.equal("a,b", host.upload.head(gz, 1, #gz, 3))
    assert.equal("xyz", host.upload.text("..xyz..", 3, 5, 10))
  end)
end)

-- Every row of a CSV text, then the reader's error.
local function rows_of(text, opts)
  local rows = csv.reader(text, opts)
  local out = {}
  for row in rows do out[#out + 1] = row end
  return out, rows.error, rows.delimiter
end

describe("csv.reader", function()
  it("reads RFC 4180 quoting: delimiters, doubled quotes and line breaks inside quotes", function()
    local rows, err, delim = rows_of('a,b,c\r\n"x, y","say ""hi""","two\r\nlines"\r\n\r\nlast,,\n')
    assert.same({ { "a", "b", "c" }, { "x, y", 'say "hi"', "two\r\nlines" }, { "last", "", "" } }, rows)
    assert.same({ nil, "," }, { err, delim })
  end)

  it("takes the delimiter the header uses most: tab, ';' or ','", function()
    local _, _, tab = rows_of("asin\ttitle\tsub, title\r\n")
    local _, _, semi = rows_of("\239\187\191Account;Title;Authors, Narrators\n")
    assert.same({ "\t", ";" }, { tab, semi })
    assert.same({ { "asin", "title" } }, rows_of("\239\187\191asin;title\n"))
  end)

  it("counts lines across quoted line breaks when it reports", function()
    local _, err = rows_of('a,b\n"1\n2",x\n"open,y\n')
    assert.equal("line 4: a quoted field is never closed", err)
    _, err = rows_of("a,b,c,d\n", { max_columns = 3 })
    assert.equal("line 1: more than 3 columns", err)
  end)
end)

describe("import_norm", function()
  it("reads a series position from free text", function()
    local got = {}
    for i, s in ipairs({ "1", "2.5", "1-3", "Book 2", "2, Dramatized Adaptation", ".5", "", "Prequel",
                         "＜物語＞シリーズ , Book ３" }) do
      got[i] = norm.position(s) or "none"
    end
    assert.same({ 1, 2.5, 1, 2, 2, 0.5, "none", "none", 3 }, got)
  end)

  it("maps languages to codes and keeps what it does not know", function()
    assert.same({ "en", "de", "de", "fr", "pt", "en", "klingon" },
      { norm.language("english"), norm.language("German"), norm.language("Deutsch"),
        norm.language("français"), norm.language("pt-BR"), norm.language("EN"), norm.language("klingon") })
  end)

  it("flattens HTML summaries", function()
    assert.equal("Bold & bright.\nLine\ntwo\nÉ <ok>",
      norm.plain("<p><b>Bold</b> &amp; bright.</p>  <p>Line<br/>two</p><p>&#201; &lt;ok&gt;</p>"))
    assert.is_nil(norm.plain("<p> </p>"))
    assert.equal("3 < 5 & 6 > 4 &bogus; &#0; ok", norm.plain(" 3 < 5 &amp; 6 &gt; 4 &bogus; &#0;\t\tok "))
  end)

  it("treats a rating nobody gave as none, and finds covers from ids", function()
    assert.same({ 4.57, nil, nil, 4.7 }, { norm.rating(4.5712, 10), norm.rating("0.0", 0),
      norm.rating("-", "-"), norm.rating("'4,7") })
    assert.same({ "https://m.media-amazon.com/images/I/51pZyUM49GL._SL500_.jpg", nil, "https://x/y.jpg" },
      { norm.cover("51pZyUM49GL"), norm.cover("-"), norm.cover("https://x/y.jpg") })
  end)

  it("splits joined names, drops duplicates and composes Unicode", function()
    assert.same({ "Anne", "Zoë" }, norm.names("Anne, Zoe\u{0308}, Anne"))
    assert.same({ "Bo Li" }, norm.names({ { name = " Bo  Li " }, { name = "" } }))
    assert.is_nil(norm.names(""))
  end)

  it("turns culture-formatted dates into ISO ones", function()
    assert.same({ "2025-05-21T05:42:18Z", "2025-05-21T17:42:18Z", "2025-05-21T05:42:18Z", "2024-01-02T03:04:05Z" },
      { norm.datetime("21.05.2025 05:42:18"), norm.datetime("5/21/2025 5:42:18 PM"),
        norm.datetime("21/05/2025 05:42:18"), norm.datetime("2024-01-02T03:04:05Z") })
  end)

  it("reads lengths like '11h 3m' and progress", function()
    assert.same({ 663, 45, 60, nil }, { norm.minutes("11h 3m "), norm.minutes("45m"), norm.minutes(60), norm.minutes("") })
    assert.same({ 100, 37.5, 100, 0 }, { norm.progress(10, true), norm.progress("37.5"), norm.progress(150),
      norm.progress(-3) })
  end)
end)
