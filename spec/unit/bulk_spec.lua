-- host.bulk (core/bulk.c) against the Lua path it replaces: lua-cjson + validate.checker
-- (sync_rules.ITEM), element by element, on generated and hostile payloads; then a few
-- concrete answers, the envelope, and what compile refuses.
local h = require("spec.support.helpers")
local lib = require("spec.fixtures.library")
local bulk_diff = require("spec.support.bulk_diff")

local bulk = h.host.bulk
local rules = require("sync_rules")
local json = require("json")

local FIELDS = bulk_diff.FIELDS
local validate = require("validate")
local SPEC = assert(bulk.compile(rules.ITEM, { fields = FIELDS, blank = rules.PLACEHOLDERS, sent = "asin",
  shapes = validate.shapes }))

local concat, format, rep = table.concat, string.format, string.rep

-- Asserts C == Lua on text; returns the decoded bulk (or nil, kind) for further checks.
local function same(text, max)
  local problem, b, kind = bulk_diff.compare(SPEC, text, max)
  assert(problem == nil, problem)
  return b, kind
end

local function payload(elements)
  return '{"titles":[' .. concat(elements, ",") .. "]}"
end

-- A valid item as JSON text, with field values replaced by the raw JSON in `with`
-- (false: left out).
local BASE = {
  asin = '"B000000001"', title = '"A Title"', source = '"LIBRARY"', authors = '["Ann"]',
  narrators = '["Ned"]', listeningProgress = "50", personalRating = "4",
  dateAdded = '"2024-01-02T03:04:05.000Z"', releaseDate = '"2020-05-06"', rating = "4.5",
  ratingCount = "120", duration = "600", seriesPosition = "2", subtitle = '"Sub"',
  coverImageUrl = '"https://example.com/c.jpg"', categories = '["Fantasy"]', language = '"English"',
}
local BASE_KEYS = {}
for k in pairs(BASE) do BASE_KEYS[#BASE_KEYS + 1] = k end
table.sort(BASE_KEYS)

local function item(with)
  local parts = {}
  for _, k in ipairs(BASE_KEYS) do
    local v = BASE[k]
    if with and with[k] ~= nil then v = with[k] end
    if v then parts[#parts + 1] = format("%q:%s", k, v) end
  end
  return "{" .. concat(parts, ",") .. "}"
end

local LONG = rep("x", 201)
local STRINGS = {
  '"x"', '""', '"  "', '" a "', '"\\t a\\n"', '"\\u000b a \\u000c"', '"\\u0000"', '"a\\u0000b"',
  '"\255"', '"\195\169"', '"\195"', '"\237\160\128"', '"\244\144\128\128"', '"\192\128"',
  '"\240\159\152\128"', '"\\ud83d\\ude00"', '"\\u00e9"', '"Unknown"', '"Unknown Title"',
  '" Unknown Author "', '"unknown"', '"' .. LONG .. '"', '"' .. rep("\195\169", 200) .. '"',
  '"' .. rep("\195\169", 201) .. '"', '"' .. rep("x", 500) .. '"', '"' .. rep("x", 501) .. '"',
  '"\\"quoted\\\\"', '"a\\/b"', '"\\u0041"', '"\\u0001\\u001f"', '"\127"',
}
local NUMBERS = {
  "0", "-0", "1", "1.0", "1e2", "1E2", "-1", "0.5", "2.5", "3.5", "4.5", "4.49", "5", "5.0000001",
  "1e400", "-1e400", "1e-400", "100", "101", "99.5", "100.4", "100.5", "-0.4", "-0.5",
  "9007199254740993", "123456789012345678901234567890", "2147483647", "2147483648",
  "1000000", "1000000.4", "1000000.5", "0.49999999999999994", "1e15", "9999999999999999",
  "-9007199254740993", "18446744073709551617", "0.1", "-0.0", "1000000000000000000000",
}
local NUMERIC_STRINGS = {
  '"5"', '" 5 "', '"0x10"', '"1e2"', '"5."', '".5"', '"inf"', '"nan"', '"1e400"', '"0x1p4"',
  '"  "', '"-0"', '"0"', '"\\u00005"', '"5\\u0000"', '"0xffffffffffffffff"', '"0x7fffffffffffffff"',
  '"9223372036854775808"', '"9007199254740993"', '"1 2"', '"\\u000b5"', '"\\f5\\r"', '"4.5"',
  '"2.5"', '"100.5"', '"-1"', '"five"', '"5e"', '"\255"', '"1,5"', '"0b1"', '"1_0"',
}
local OTHERS = { "true", "false", "null", "[]", "{}", "[1]", '{"a":1}', "[[]]", '[{"a":[1,{"b":null}]}]' }
local DATES = {
  '"2024-01-01"', '"2024-02-29"', '"2023-02-29"', '"2024-13-01"', '"2024-00-10"', '"2024-01-32"',
  '"0000-01-01"', '"0001-01-01"', '"2024-01-01T10:00:00Z"', '"2024-01-01T10:00:00.123Z"',
  '"2024-01-01T10:00:00.123456789+02:00"', '"2024-01-01t10:00:00-0530"', '"2024-01-01 10:00"',
  '"2024-01-01T10:00+14:00"', '"2024-01-01T10:00+15:00"', '"2024-01-01T10:00:0012"',
  '"2024-01-01T10:00:00."', '"2024-01-01T10:00:00.5"', '"2024-01-01T24:00:00Z"',
  '"2024-01-01T23:59:60Z"', '"0001-01-01T00:00:00+01:00"', '"9999-12-31T23:00:00-01:00"',
  '"9999-12-31T23:00:00-00:59"', '"2024-01-01T10:00:00Zjunk"', '"2024-01-01T10"',
  '"2024-1-01"', '" 2024-01-01 "', '"2024-01-01T10:00:00+0530"', '"2024-01-01T10:00:00+05"',
  '"2024-01-01T10:00:00z"', '"2024-01-01T10:00:001234"', '"2024-01-01T10:00:00.1234567890Z"',
  '"2024-01-01T10:00:00+05:60"', '"2024-01-01T10:00:00-00:00"', '"2024-01-01T10:00:00.12+01"',
  '"2024-03-01T00:30:00+01:00"', '"2024-01-01T00:00:00.000Z"', '"2024-02-30T00:00:00.000Z"',
  '"2024-01-01T10:00:00.000z"', '"2024-01-01T10:00:00.000Z "', '"2024-01-01X10:00"',
  '"2000-02-29T23:30:00-01:00"', '"1900-02-28T23:30:00-01:00"', '"2024-12-31T23:59:59-14:00"',
  '"2024-01-01T10:00:1"', '"2024-01-01T10:00:12345678"', '"2024-01-01T09:60:00Z"',
}
local URLS = {
  '"http://x"', '"https://example.com/a b"', '"HTTPS://x"', '"HtTp://x/y?z#w"', '"ftp://x"',
  '"http:///x"', '"http://"', '"http://x\\u007f"', '"http://\195\169"', '"https://?x"',
  '"https://#"', '"http:/x"', '"httpss://x"', '" http://x "', '"http://x\\ty"',
  '"https://' .. rep("a", 2040) .. '"', '"https://' .. rep("a", 2041) .. '"',
}
local ARRAYS = {
  "[]", '["a"]', '["a","a"]', '[" a ","a"]', '["a"," a"]', '["a",null]', "[null]", '[""]',
  '["  "]', '["a",1]', '[{"x":1}]', "[[]]", "{}", '{"a":1}', '"a"', "5", '["b","a","b"]',
  '["Unknown Author"]', '["Unknown Author","x"]', '["Unknown"," Unknown "]',
  '["' .. LONG .. '"]', '["' .. LONG .. '","' .. LONG .. '"]', '["ok","' .. LONG .. '"]',
  '["\\u0000"]', '["\255"]', '["a","\255","\\u0000"]', '[true]', '[null,null]', '["",""]',
}
do
  local seq, dup, big = {}, {}, {}
  for i = 1, 17 do seq[i] = format('"n%d"', i); dup[i] = format('"n%d"', i % 5) end
  for i = 1, 101 do big[i] = format('"n%d"', i) end
  ARRAYS[#ARRAYS + 1] = "[" .. concat(seq, ",") .. "]"
  ARRAYS[#ARRAYS + 1] = "[" .. concat(dup, ",") .. "]"
  ARRAYS[#ARRAYS + 1] = "[" .. concat(big, ",") .. "]"
  local spaced = {}
  for i = 1, 20 do spaced[i] = format('" n%d "', i % 7) end
  ARRAYS[#ARRAYS + 1] = "[" .. concat(spaced, ",") .. "]"
  local hundred = {}
  for i = 1, 100 do hundred[i] = '"same"' end
  ARRAYS[#ARRAYS + 1] = "[" .. concat(hundred, ",") .. "]"
end
local ASINS = {
  '"b000000001"', '" B000000001 "', '"B00000000"', '"1234567890123"', '"123456789012X"',
  '"123456789x"', '"B0000000011"', '"B00000000\195\169"', '"ÄBCDEFGHIJ"', '"b00000000\\u0000"',
}
local SOURCES = { '"library"', '"Wishlist"', '" LIBRARY "', '"OTHER"', '""', '"LIBRARY\\u0000"' }

local function join_lists(...)
  local out = {}
  for _, l in ipairs({ ... }) do
    for _, v in ipairs(l) do out[#out + 1] = v end
  end
  return out
end

-- The values tried for each field: its own edges plus every other kind of value.
local GENERAL = join_lists(OTHERS, { '"x"', "5", '""' })
local BY_FIELD = {
  asin = join_lists(ASINS, STRINGS, GENERAL),
  source = join_lists(SOURCES, GENERAL),
  title = join_lists(STRINGS, GENERAL, NUMBERS),
  subtitle = join_lists(STRINGS, GENERAL),
  seriesName = join_lists(STRINGS, GENERAL),
  seriesSequence = join_lists(STRINGS, GENERAL),
  summary = join_lists(STRINGS, GENERAL),
  publisher = join_lists(STRINGS, GENERAL),
  language = join_lists(STRINGS, GENERAL),
  authors = join_lists(ARRAYS, GENERAL),
  narrators = join_lists(ARRAYS, GENERAL),
  categories = join_lists(ARRAYS, GENERAL),
  listeningProgress = join_lists(NUMBERS, NUMERIC_STRINGS, GENERAL),
  personalRating = join_lists(NUMBERS, NUMERIC_STRINGS, GENERAL),
  rating = join_lists(NUMBERS, NUMERIC_STRINGS, GENERAL),
  ratingCount = join_lists(NUMBERS, NUMERIC_STRINGS, GENERAL),
  duration = join_lists(NUMBERS, NUMERIC_STRINGS, GENERAL),
  seriesPosition = join_lists(NUMBERS, NUMERIC_STRINGS, GENERAL),
  dateAdded = join_lists(DATES, STRINGS, GENERAL),
  releaseDate = join_lists(DATES, STRINGS, GENERAL),
  coverImageUrl = join_lists(URLS, STRINGS, GENERAL),
}
local ALL_FIELDS = {}
for k in pairs(BY_FIELD) do ALL_FIELDS[#ALL_FIELDS + 1] = k end
table.sort(ALL_FIELDS)

describe("host.bulk against lua-cjson + validate.lua", function()
  it("agrees on the fixture library, full and as the extension sends it", function()
    local items = lib.generate(300, { seed = 11 })
    local b = same(lib.payload(items, h.host.json.encode))
    assert.are.equal(300, b:received())
    same(lib.payload(lib.extension_items(items), h.host.json.encode))
    same(lib.payload(lib.mutate(items, 0.3, { seed = 5 }), h.host.json.encode))
  end)

  it("agrees on every edge value of every field", function()
    for _, name in ipairs(ALL_FIELDS) do
      local elements = {}
      for _, v in ipairs(BY_FIELD[name]) do elements[#elements + 1] = item({ [name] = v }) end
      elements[#elements + 1] = item({ [name] = false })
      same(payload(elements))
    end
  end)

  it("agrees on random mixes of edge values", function()
    local rng = lib.rng(42)
    for _ = 1, 20 do
      local elements = {}
      for _ = 1, 100 do
        local with = {}
        for _, name in ipairs(ALL_FIELDS) do
          local r = rng()
          if r < 0.25 then
            local list = BY_FIELD[name]
            with[name] = list[rng(1, #list)]
          elseif r < 0.35 then
            with[name] = false
          end
        end
        elements[#elements + 1] = item(with)
      end
      same(payload(elements))
    end
  end)

  it("agrees on elements that are not objects, and on odd objects", function()
    same(payload({
      "5", '"x"', "null", "true", "false", "[]", "[1]", "[null]", "[[]]", "{}", '{"asin":"B000000001"}',
      '{"asin":"x","asin":"B000000001","title":"t","source":"LIBRARY"}',
      '{"asin":"B000000001","title":"t","source":"LIBRARY","source":"NOPE"}',
      '{"as\\u0069n":"B000000001","title":"t","source":"wishlist"}',
      '{"junk":{"a":[1,2,{"b":null}],"asin":"nope"},"asin":"B000000002","title":"t","source":"LIBRARY"}',
      '{"asin":"B000000003","title":"t","source":"LIBRARY","authors":["a"],"authors":"x"}',
      '{"asin":"B000000003","title":"t","source":"LIBRARY","authors":{"x":["y"]}}',
      '{"asin":"B000000003","title":"t","source":"LIBRARY","authors":[["nested"],{"o":1},"ok"]}',
      ' { "asin" :\n"B000000004" ,\r\n\t"title": "t" , "source" : "LIBRARY" } ',
      '{"asin":null,"title":null,"source":null,"personalRating":null,"authors":null}',
      '{"asin":"B000000005","title":"t","source":"LIBRARY","personalRating":0}',
      '{"asin":"B000000005","title":"t","source":"LIBRARY","personalRating":"0"}',
      '{"asin":"B000000005","title":"t","source":"LIBRARY","personalRating":-0}',
      '{"":1,"asin":"B000000006","title":"t","source":"LIBRARY"}',
      '{"asin":"B000000007","title":"t","source":"LIBRARY","\\u0000":"x","asin\\u0000":"y"}',
    }))
  end)

  it("agrees on whole bodies: empty, padded, nested junk, duplicate titles keys", function()
    for _, text in ipairs({
      '{"titles":[]}', ' \n{ "titles" : [ ] }\r\n', '{"titles":{}}',
      '{"other":[1,{"a":[]}],"titles":[' .. item() .. '],"more":{"x":null}}',
      '{"titles":[' .. item() .. '],"titles":[' .. item({ asin = '"B000000009"' }) .. ']}',
      '{"titles":{"a":1},"titles":[' .. item() .. ']}',
      '{"titles":[' .. item() .. '],"titles":{}}',
    }) do
      same(text)
    end
  end)
end)

describe("host.bulk.decode", function()
  it("cleans values the way validate.lua does", function()
    local b = same(payload({
      item({ asin = '" b000000001 "', source = '"wishlist"', personalRating = "0",
        listeningProgress = '"49.5"', dateAdded = '"2024-01-01T01:30:00+02:00"',
        authors = '[" Ann ","Ann","Unknown Author"]', title = '"  T  "', rating = "4.5" }),
      item({ asin = '"nope"' }),
      item({ rating = "7", narrators = '["' .. LONG .. '"]' }),
    }))
    local it = b:item(1)
    assert.are.equal("B000000001", it.asin)
    assert.are.equal("WISHLIST", it.source)
    assert.are.equal(json.null, it.personalRating)
    assert.are.equal(50, it.listeningProgress)
    assert.are.equal("integer", math.type(it.listeningProgress))
    assert.are.equal("2023-12-31T23:30:00.000Z", it.dateAdded)
    assert.same({ "Ann", "Unknown Author" }, it.authors)
    assert.are.equal(json.array_mt, getmetatable(it.authors))
    assert.are.equal("T", it.title)
    assert.are.equal(4.5, it.rating)
    assert.same({ [2] = { { path = "asin", message = "must be an ASIN: 10 letters or digits, or 13 digits" } } },
      b:refused())
    assert.same({ [3] = {
      { path = "narrators[0]", message = "must be at most 200 characters" },
      { path = "rating", message = "must be between 0 and 5" },
    } }, b:dropped())
    assert.is_nil(b:item(2))
    assert.are.equal("nope", b:sent(2))
    assert.same({ "B000000001", nil, "B000000001" }, b:column("asin"))
    -- present bits follow FIELDS; authors counts (one real name), personalRating 0 does not
    local mask = b:present()[1]
    for j, name in ipairs(FIELDS) do
      local want = ({ authors = true, title = true, subtitle = true, listeningProgress = true,
        dateAdded = true, rating = true })[name]
      if want ~= nil then assert.are.equal(want, mask & (1 << (j - 1)) ~= 0, name) end
    end
    assert.are.equal(0, b:present()[1] & (1 << (bulk_diff.bit("personalRating") - 1)))
  end)

  it("keeps a whole number as lua-cjson decoded it (a float), as validate.lua in place does", function()
    local b = same(payload({ item({ listeningProgress = "50", duration = '"600"' }) }))
    assert.are.equal("float", math.type(b:item(1).listeningProgress))
    assert.are.equal("integer", math.type(b:item(1).duration))
  end)

  it("answers a body that is not the envelope with the problem", function()
    for text, want in pairs({
      ["5"] = "must be an object", ['"x"'] = "must be an object", ["null"] = "must be an object",
      ["[1]"] = "must be an object", ["[]"] = "is required", ["{}"] = "is required",
      ['{"titles":null}'] = "is required", ['{"titles":5}'] = "must be an array",
      ['{"titles":{"a":[]}}'] = "must be an array", ['{"titles":[],"titles":"x"}'] = "must be an array",
      ['{"Titles":[]}'] = "is required",
    }) do
      local b, kind, message = bulk.decode(SPEC, text, "titles", 10)
      assert.same({ nil, "envelope", want }, { b, kind, message }, text)
      same(text, 10)
    end
  end)

  it("counts every element of a body with too many, and only then refuses it", function()
    local elements = {}
    for i = 1, 12 do elements[i] = i % 2 == 0 and item() or "null" end
    assert.same({ nil, "too_many", 12 }, { bulk.decode(SPEC, payload(elements), "titles", 11) })
    assert.are.equal(12, bulk.decode(SPEC, payload(elements), "titles", 12):received())
    -- a later "titles" replaces the first, as in cjson
    local text = '{"titles":[' .. concat(elements, ",") .. '],"titles":[' .. item() .. "]}"
    assert.are.equal(1, bulk.decode(SPEC, text, "titles", 11):received())
  end)

  it("answers json for what lua-cjson refuses, and for what yajl reads differently", function()
    local deep = rep("[", 62) .. rep("]", 62)
    for _, text in ipairs({
      '{"titles":[', '{"titles":[1,]}', "", "  ", '{"titles":["\\ud800"]}',
      '{"titles":["\\udc00"]}', '{"titles":["\\ud800\\u0041"]}', '{"titles":[1,\f2]}',
      '{"titles":[1\v]}', '{"titles":[' .. rep("[", 63) .. rep("]", 63) .. "]}",
      '{"titles":[]} x', '{"titles":["\\x"]}', '2"rr:', '{"titles":[]} "abc', '{"titles":[]} [',
      -- lua-cjson reads these (the caller's cjson path then answers as today)
      '{"titles":[0x10]}', '{"titles":[NaN]}', '{"titles":[01]}', '{"titles":["a\nb"]}',
      '{"titles":[]}\0',
    }) do
      local b, kind = bulk.decode(SPEC, text, "titles", 10)
      assert.same({ nil, "json" }, { b, kind }, text)
    end
    -- the deepest nesting cjson reads: the body, titles, an element, 61 more
    same('{"titles":[' .. deep .. "]}")
    same('{"titles":["\\ud83d\\ude00",{"asin":"\\uD83D\\uDE00"}]}')
  end)

  it("runs the rule's Lua check, and raises what it raises", function()
    local rule = { type = "object", fields = { code = { type = "string", check = function(v)
      if v == "boom" then error("check exploded") end
      if v == "swap" then return 42 end
      return #v == 3 and v or nil, "must be three"
    end } } }
    local spec = assert(bulk.compile(rule))
    local b = bulk.decode(spec, '{"t":[{"code":"abc"},{"code":"ab"},{"code":"swap"}]}', "t")
    assert.same({ code = "abc" }, b:item(1))
    assert.same({ [2] = { { path = "code", message = "must be three" } } }, b:refused())
    assert.same({ code = 42 }, b:item(3))
    local ok, err = pcall(bulk.decode, spec, '{"t":[{"code":"boom"}]}', "t")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("check exploded", 1, true))
  end)
end)

describe("host.bulk with opts.shapes", function()
  local CODES = { "abc", "ABC", "a1", "", "  x ", "12345", "1234567890", "123456789012", "1234567890123",
    "B00ABC123X", "b00abc123x", "B00ABC123-", "-", "a-c", "]", "%d", "\\u00e9", "caf\\u00e9", "0123456789012",
    "A", "Z0", "zz" }

  local function codes_body()
    local items = {}
    for i, c in ipairs(CODES) do items[i] = format('{"code":"%s"}', c) end
    return '{"t":[' .. concat(items, ",") .. "]}"
  end

  it("runs a check made by validate.shape_check as its Lua function does, patterns it reads or not", function()
    local checks = {
      validate.shape_check("must be short", { { len = 3, pattern = "^[a-c0-9]+$" }, { pattern = "^%d*$" } }),
      validate.shape_check(nil, { { pattern = "^[A-]+$" }, { len = 1, pattern = "^[%]]+$" } }),
      validate.shape_check("none", {}),
      validate.shape_check("letters", { { pattern = "^%a+$" } }),          -- not read: called
      validate.shape_check("x", { { len = 10.0, pattern = "^[A-Z0-9]+$" } }), -- float len: called
    }
    for _, check in ipairs(checks) do
      for _, extra in ipairs({ {}, { message = "custom" }, { upper = true }, { empty = "keep" } }) do
        local r = { type = "string", check = check }
        for k, v in pairs(extra) do r[k] = v end
        local rule = { type = "object", fields = { code = r, tags = { type = "array", items = r } } }
        local spec = assert(bulk.compile(rule, { shapes = validate.shapes }))
        local problem = bulk_diff.compare(spec, codes_body(), nil, rule, "t")
        assert(problem == nil, problem)
        problem = bulk_diff.compare(spec, '{"t":[{"tags":["abc","x","12"]},{"tags":["ab1"]}]}', nil, rule, "t")
        assert(problem == nil, problem)
      end
    end
  end)

  it("runs the shapes in C, not the function, when it reads every pattern", function()
    local called = 0
    local function check(v)
      called = called + 1
      return v
    end
    local registry = { [check] = { message = "must be digits", shapes = { { len = 2, pattern = "^%d+$" } } } }
    local rule = { type = "object", fields = { code = { type = "string", check = check } } }
    local b = bulk.decode(assert(bulk.compile(rule, { shapes = registry })), '{"t":[{"code":"12"},{"code":"1x"}]}', "t")
    assert.same({ code = "12" }, b:item(1))
    assert.same({ [2] = { { path = "code", message = "must be digits" } } }, b:refused())
    assert.are.equal(0, called)
    registry[check].shapes[1].pattern = "^%w+$"
    b = bulk.decode(assert(bulk.compile(rule, { shapes = registry })), '{"t":[{"code":"12"},{"code":"1x"}]}', "t")
    assert.same({ code = "1x" }, b:item(2))
    assert.are.equal(2, called)
  end)
end)

describe("host.bulk.compile", function()
  it("refuses a rule key it does not run, and a value it does not support", function()
    local s, why = bulk.compile({ type = "object", fields = { a = { type = "string", pattern = "^x" } } })
    assert.is_nil(s)
    assert.are.equal("a: rule key pattern is not supported", why)
    s, why = bulk.compile({ type = "object", fields = { a = { type = "string", shiny = true } } })
    assert.is_nil(s)
    assert.are.equal("a: rule key shiny is not supported", why)
    s, why = bulk.compile({ type = "object", fields = { a = { type = "string", format = "ipv6" } } })
    assert.is_nil(s)
    assert.are.equal("a: unknown format", why)
    s, why = bulk.compile({ type = "object", fields = { a = { type = "any" } } })
    assert.is_nil(s)
    assert.truthy(why:find("type not supported", 1, true))
    s, why = bulk.compile({ type = "object", checks = { function() end }, fields = {} })
    assert.is_nil(s)
    assert.are.equal("rule: rule key checks is not supported", why)
    s, why = bulk.compile({ type = "object", fields = { a = { type = "array", items = { type = "integer" } } } })
    assert.is_nil(s)
    assert.are.equal("a[]: array items other than strings are not supported", why)
    s, why = bulk.compile({ type = "object", unknown = "reject", fields = {} })
    assert.is_nil(s)
    assert.truthy(why:find("reject", 1, true))
  end)

  it("runs another rule table the same way: defaults, lower, uuid, min_len, booleans", function()
    local rule = { type = "object", fields = {
      id = { type = "string", format = "uuid", required = true },
      name = { type = "string", lower = true, min_len = 3, len = 4, default = "none", invalid = "drop" },
      flag = { type = "boolean", null_if = false, default = true },
      tags = { type = "array", items = { type = "string", empty = "keep", max_len = 3 }, min_items = 2 },
      n = { type = "number", coerce = true, max = 10 },
    } }
    local spec = assert(bulk.compile(rule))
    local texts = {
      '{"t":[{"id":"0F8FAD5B-D9CB-469F-A165-70867728950E","name":"ABCD","flag":false,"tags":["a",""],"n":"0x0A"}]}',
      '{"t":[{"id":"nope","name":"\195\169\195\169","tags":["a"]},{"id":"0f8fad5b-d9cb-469f-a165-70867728950e","tags":[" a ","b"],"n":11}]}',
      '{"t":[{"id":"0f8fad5b-d9cb-469f-a165-70867728950e","name":"  ","flag":true,"tags":[null,"a"],"n":1e400}]}',
    }
    for _, text in ipairs(texts) do
      local problem = bulk_diff.compare(spec, text, nil, rule, "t")
      assert(problem == nil, problem)
    end
  end)
end)
