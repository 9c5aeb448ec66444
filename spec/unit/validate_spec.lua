-- lua/validate.lua: rules as data, one check function, cleaned values and {path, message}.
local h = require("spec.support.helpers")
local validate = require("validate")

local null = h.host.json.null
local check = validate.check

-- The value and the problems of one check, for one assert.same.
local function result(rule, value, path)
  local v, errs = check(rule, value, path)
  return { value = v, errs = errs }
end

local function refused(path, message)
  return { value = nil, errs = { { path = path, message = message } } }
end

describe("validate", function()
  describe("strings", function()
    local ASIN = { type = "string", pattern = "^[A-Z0-9]+$", len = 10 }

    it("accepts a value matching the rule and returns it", function()
      assert.same({ value = "B00ABC1234" }, result(ASIN, "B00ABC1234"))
    end)

    it("refuses a value of another type", function()
      assert.same(refused("asin", "must be a string"), result(ASIN, 1234567890, "asin"))
    end)

    it("counts lengths in characters, not bytes", function()
      local r = { type = "string", max_len = 3 }
      assert.same({ value = "äöü" }, result(r, "äöü"))
      assert.same(refused("", "must be at most 3 characters"), result(r, "äöüß"))
      assert.same(refused("", "must be exactly 10 characters"), result(ASIN, "B00"))
      assert.same(refused("", "must be at least 2 characters"),
        result({ type = "string", min_len = 2 }, "x"))
    end)

    it("trims surrounding whitespace unless told not to", function()
      assert.same({ value = "Dune" }, result({ type = "string" }, "  Dune\n"))
      assert.same({ value = " Dune " }, result({ type = "string", trim = false }, " Dune "))
    end)

    it("treats an empty string as absent, and refuses it when required", function()
      assert.same({ value = nil }, result({ type = "string" }, "   "))
      assert.same({ value = "" }, result({ type = "string", empty = "keep" }, ""))
      assert.same({ value = nil, errs = { { path = "title", message = "must not be empty" } } },
        result({ type = "object", fields = { title = { type = "string", required = true } } },
          { title = "" }))
    end)

    it("folds case before checking", function()
      local r = { type = "string", upper = true, enum = { "LIBRARY", "WISHLIST" } }
      assert.same({ value = "WISHLIST" }, result(r, "wishlist"))
      assert.same(refused("", "must be one of LIBRARY, WISHLIST"), result(r, "shelf"))
      assert.same({ value = "abc" }, result({ type = "string", lower = true }, "ABC"))
    end)

    it("says what a rule's message says for any failed constraint", function()
      local r = { type = "string", pattern = "^%d+$", len = 4, message = "must be a 4-digit PIN" }
      assert.same(refused("", "must be a 4-digit PIN"), result(r, "12a4"))
      assert.same(refused("", "must be a 4-digit PIN"), result(r, "123"))
      assert.same(refused("", "must match ^%d+$"), result({ type = "string", pattern = "^%d+$" }, "x"))
    end)

    it("refuses NUL characters and invalid UTF-8", function()
      assert.same(refused("", "must not contain NUL characters"), result({ type = "string" }, "a\0b"))
      assert.same(refused("", "must be valid UTF-8"), result({ type = "string" }, "caf\xe9"))
      assert.same(refused("", "must be valid UTF-8"), result({ type = "string" }, "\xed\xa0\x80"))
    end)

    it("skips the per-string UTF-8 check for text checked as a whole", function()
      local fast = validate.checker({ type = "string", max_len = 3 }, { text_checked = true })
      assert.same({ "äöü" }, { fast("äöü") })
      local v, errs = fast("äöüß")
      assert.same({ nil, { { path = "", message = "must be at most 3 characters" } } }, { v, errs })
      assert.is_true(validate.text_ok('{"a":"äöü"}'))
      assert.is_false(validate.text_ok('{"a":"caf\xe9"}'))
      assert.is_false(validate.text_ok('{"a":"x\\u0000y"}'))
    end)

    it("maps a null_if value to JSON null", function()
      assert.same({ value = null }, result({ type = "string", null_if = "n/a" }, "n/a"))
    end)
  end)

  describe("formats", function()
    local DATE = { type = "string", format = "date" }
    local DATETIME = { type = "string", format = "datetime" }
    local URL = { type = "string", format = "http_url" }

    it("reads ISO-8601 dates, leap days included, and refuses impossible ones", function()
      assert.same({ value = "2024-02-29" }, result(DATE, "2024-02-29"))
      assert.same({ value = "2021-06-01" }, result(DATE, "2021-06-01T23:00:00-05:00"))
      for _, bad in ipairs({ "2023-02-29", "2023-13-01", "2023-00-10", "2023-04-31", "0000-01-01",
                             "23-01-01", "2023/01/01", "01-15-23", "2023-01-01T25:00:00Z" }) do
        assert.same(refused("", "must be an ISO-8601 date (YYYY-MM-DD)"), result(DATE, bad), bad)
      end
    end)

    it("cleans date-times to UTC with milliseconds", function()
      for input, want in pairs({
        ["2023-01-02T03:04:05.678Z"] = "2023-01-02T03:04:05.678Z",
        ["2023-01-02"] = "2023-01-02T00:00:00.000Z",
        ["2023-01-02T03:04:05Z"] = "2023-01-02T03:04:05.000Z",
        ["2023-01-02T03:04Z"] = "2023-01-02T03:04:00.000Z",
        ["2023-01-02 03:04:05"] = "2023-01-02T03:04:05.000Z",
        ["2023-01-02T03:04:05.5+02:00"] = "2023-01-02T01:04:05.500Z",
        ["2023-12-31T23:30:00-01:00"] = "2024-01-01T00:30:00.000Z",
        ["2024-03-01T00:30:00+0100"] = "2024-02-29T23:30:00.000Z",
        ["2023-01-02T03:04:05.123456Z"] = "2023-01-02T03:04:05.123456Z",
      }) do
        assert.same({ value = want }, result(DATETIME, input), input)
      end
      for _, bad in ipairs({ "2023-01-02T24:00:00Z", "2023-01-02T03:04:05+15:00", "yesterday",
                             "2023-01-02T03:04:05.Z", "2023-02-30T00:00:00.000Z" }) do
        assert.same(refused("", "must be an ISO-8601 date or date-time"), result(DATETIME, bad), bad)
      end
    end)

    it("accepts http and https URLs only, without whitespace", function()
      assert.same({ value = "https://m.media-amazon.com/images/I/x.jpg" },
        result(URL, "https://m.media-amazon.com/images/I/x.jpg"))
      assert.same({ value = "HTTP://example.com" }, result(URL, "HTTP://example.com"))
      for _, bad in ipairs({ "javascript:alert(1)", "ftp://example.com/x", "https://", "//example.com",
                             "https://exa mple.com", "https://example.com/\tx", "data:image/png;base64,AA" }) do
        assert.same(refused("", "must be an http(s) URL"), result(URL, bad), bad)
      end
    end)

    it("lower-cases UUIDs", function()
      assert.same({ value = "0f8fad5b-d9cb-469f-a165-70867728950e" },
        result({ type = "string", format = "uuid" }, "0F8FAD5B-D9CB-469F-A165-70867728950E"))
      assert.same(refused("", "must be a UUID"), result({ type = "string", format = "uuid" }, "0f8fad5b"))
    end)
  end)

  describe("numbers", function()
    it("turns a whole float into an integer", function()
      local v = check({ type = "integer" }, 12.0)
      assert.same({ 12, "integer" }, { v, math.type(v) })
    end)

    it("refuses fractions unless told to round", function()
      assert.same(refused("", "must be a whole number"), result({ type = "integer" }, 12.5))
      assert.same({ value = 13 }, result({ type = "integer", round = true }, 12.5))
    end)

    it("checks ranges", function()
      local r = { type = "number", min = 0, max = 5 }
      assert.same({ value = 4.5 }, result(r, 4.5))
      assert.same(refused("", "must be between 0 and 5"), result(r, 5.1))
      assert.same(refused("", "must be at least 1"), result({ type = "integer", min = 1 }, 0))
      assert.same(refused("", "must be at most 9"), result({ type = "integer", max = 9 }, 10))
    end)

    it("never lets NaN or an infinity through, bounded or not", function()
      for _, r in ipairs({ { type = "number" }, { type = "number", min = 0, max = 5 },
                           { type = "integer" }, { type = "integer", min = 1 } }) do
        assert.same(refused("", "must be a finite number"), result(r, 0 / 0))
        assert.same(refused("", "must be a finite number"), result(r, math.huge))
        assert.same(refused("", "must be a finite number"), result(r, -math.huge))
      end
    end)

    it("takes numeric strings only when told to coerce", function()
      assert.same(refused("", "must be a number"), result({ type = "number" }, "4.5"))
      assert.same({ value = 4.5 }, result({ type = "number", coerce = true }, " 4.5 "))
      assert.same(refused("", "must be a whole number"), result({ type = "integer", coerce = true }, "four"))
    end)

    it("maps a null_if value to JSON null before the range check", function()
      local r = { type = "integer", min = 1, max = 5, null_if = 0 }
      assert.same({ value = null }, result(r, 0))
      assert.same({ value = 3 }, result(r, 3))
      assert.same(refused("", "must be between 1 and 5"), result(r, 6))
    end)

    it("refuses integers a float cannot hold exactly", function()
      assert.same(refused("", "must be a whole number of at most 2^53"), result({ type = "integer" }, 2 ^ 60))
    end)
  end)

  describe("booleans", function()
    it("accept true and false only", function()
      assert.same({ value = false }, result({ type = "boolean" }, false))
      assert.same(refused("", "must be true or false"), result({ type = "boolean" }, "true"))
    end)
  end)

  describe("arrays", function()
    local NAMES = { type = "array", items = { type = "string", max_len = 5 }, max_items = 3 }

    it("return an array they changed nothing in as it came", function()
      local t = { "Ann", "Bob" }
      assert.equal(t, (check(NAMES, t)))
    end)

    it("refuse objects and report element problems with 0-based paths", function()
      assert.same(refused("authors", "must be an array"), result(NAMES, { name = "Ann" }, "authors"))
      assert.same(refused("authors[1]", "must be at most 5 characters"),
        result(NAMES, { "Ann", "Roberta" }, "authors"))
      assert.same(refused("authors[0]", "must not be null"), result(NAMES, { null }, "authors"))
      assert.same(refused("authors", "must hold at most 3 items"), result(NAMES, { "a", "b", "c", "d" }, "authors"))
    end)

    it("drop null, empty and repeated elements when compact and unique", function()
      local r = { type = "array", items = { type = "string" }, compact = true, unique = true }
      local v = check(r, { " Ann ", null, "", "Bob", "Ann" })
      assert.same({ "Ann", "Bob" }, v)
      -- an emptied array still encodes as an array
      assert.same("[]", require("json").encode((check(r, { "", null }))))
    end)

    it("deduplicate long arrays too", function()
      local r = { type = "array", unique = true }
      local input = {}
      for i = 1, 40 do input[i] = i % 20 end
      local v = check(r, input)
      assert.same(20, #v)
    end)

    it("clean arrays of names the same way when the text was checked as a whole", function()
      local r = { type = "array", items = { type = "string", max_len = 5 }, compact = true, unique = true }
      local fast = validate.checker(r, { text_checked = true })
      local t = { "Ann", "Bob" }
      assert.equal(t, (fast(t)))
      assert.same({ "Ann", "Bob" }, (fast({ " Ann", "Bob", "", "Ann", null })))
      local v, errs = fast({ "Ann", "Roberta" }, "authors")
      assert.same({ nil, { { path = "authors[1]", message = "must be at most 5 characters" } } },
        { v, errs })
      v, errs = fast({ "Ann", 7 }, "authors")
      assert.same({ nil, { { path = "authors[1]", message = "must be a string" } } }, { v, errs })
      assert.same({ nil, { { path = "authors", message = "must be an array" } } },
        { fast({ a = "Ann" }, "authors") })
    end)

    it("require a minimum when told", function()
      assert.same(refused("", "must hold at least 1 item"),
        result({ type = "array", min_items = 1 }, {}))
    end)

    it("accept a sequence built in Lua with keys in any order", function()
      local t = { [3] = "c", [1] = "a", [2] = "b" }
      assert.same({ "a", "b", "c" }, (check({ type = "array" }, t)))
      assert.is_false(validate.is_array({ "a", x = 1 }))
    end)
  end)

  describe("objects", function()
    local ITEM = {
      type = "object",
      fields = {
        asin = { type = "string", required = true, len = 10 },
        rating = { type = "number", min = 0, max = 5, invalid = "drop" },
        seriesName = { type = "string", as = "series_name" },
        source = { type = "string", default = "LIBRARY" },
        tags = { type = "array", items = { type = "string" } },
      },
    }

    it("clean every field, rename with `as` and fill defaults", function()
      assert.same({ value = { asin = "B00ABC1234", series_name = "Dune", source = "LIBRARY", rating = 4 } },
        result(ITEM, { asin = " B00ABC1234", seriesName = "Dune", rating = 4, unknown = 1 }))
    end)

    it("report every problem, with paths under the given root", function()
      assert.same({ value = nil, errs = {
        { path = "titles[3].asin", message = "is required" },
        { path = "titles[3].tags[1]", message = "must be a string" },
      } }, result(ITEM, { tags = { "a", 2 } }, "titles[3]"))
    end)

    it("drop an invalid field marked invalid = drop, keep the object and report the field", function()
      assert.same({ value = { asin = "B00ABC1234", source = "LIBRARY" },
                    errs = { { path = "rating", message = "must be between 0 and 5" } } },
        result(ITEM, { asin = "B00ABC1234", rating = 7 }))
    end)

    it("treat JSON null as absent", function()
      assert.same({ value = { asin = "B00ABC1234", source = "LIBRARY" } },
        result(ITEM, { asin = "B00ABC1234", rating = null, seriesName = null }))
      assert.same(refused("", "is required"), result({ type = "string", required = true }, null))
    end)

    it("refuse unknown fields when told", function()
      local strict = { type = "object", unknown = "reject", fields = { a = { type = "string" } } }
      assert.same(refused("b", "is not an allowed field"), result(strict, { a = "x", b = 1 }))
    end)

    it("refuse arrays and scalars", function()
      assert.same(refused("", "must be an object"), result(ITEM, { 1, 2 }))
      assert.same(refused("", "must be an object"), result(ITEM, "B00ABC1234"))
    end)

    it("clean in place when told, leaving a refused required value for the caller", function()
      local r = { type = "object", in_place = true, fields = {
        asin = { type = "string", required = true, len = 10, upper = true },
        seriesName = { type = "string", as = "series_name" },
        rating = { type = "number", max = 5, invalid = "drop" },
      } }
      local t = { asin = "b00abc1234", seriesName = " Dune ", rating = 9, extra = true }
      local v, errs = check(r, t)
      assert.equal(t, v)
      assert.same({ asin = "B00ABC1234", series_name = "Dune", extra = true }, t)
      assert.same({ { path = "rating", message = "must be at most 5" } }, errs)
      local bad = { asin = "short" }
      assert.is_nil((check(r, bad)))
      assert.same({ asin = "short" }, bad)
    end)
  end)

  describe("rules", function()
    it("are refused when they use an unknown key or type", function()
      assert.has_error(function() validate.compile({ type = "string", maxlen = 3 }) end,
        "validate: unknown rule key maxlen")
      assert.has_error(function() validate.compile({ type = "text" }) end, "validate: unknown type text")
      assert.has_error(function() validate.compile({ type = "string", format = "email" }) end,
        "validate: unknown format email")
    end)

    it("are compiled once per rule table", function()
      local r = { type = "string" }
      local c1 = validate.checker(r)
      assert.same({ "x" }, { c1("x") })
      -- editing the table after compilation does not change a compiled checker: a reload does
      r.max_len = 0
      assert.same({ "x" }, { c1("x") })
    end)
  end)

  describe("summary", function()
    it("joins at most max problems and counts the rest", function()
      local errs = { { path = "a", message = "x" }, { path = "", message = "y" }, { path = "c", message = "z" } }
      assert.same("a: x; y; and 1 more", validate.summary(errs, 2))
      assert.same("", validate.summary(nil))
    end)
  end)
end)

describe("sync_rules.ITEM", function()
  local rules = require("sync_rules")

  it("accepts the audioshlf extension's item as sent", function()
    local v, errs = check(rules.ITEM, {
      asin = "B0EXT00001", title = "The Way of Kings", authors = {}, narrators = {},
      source = "LIBRARY", listeningProgress = 42, personalRating = 0,
      dateAdded = "2023-04-05T06:07:08.000Z",
    })
    assert.is_nil(errs)
    assert.same({ asin = "B0EXT00001", title = "The Way of Kings", authors = {}, narrators = {},
                  source = "LIBRARY", listeningProgress = 42, personalRating = null,
                  dateAdded = "2023-04-05T06:07:08.000Z" }, v)
  end)

  it("accepts a digit-only ISBN-10 as an ASIN and folds lower case", function()
    assert.same("0765326353", (check(rules.ITEM, { asin = "0765326353", title = "t", source = "LIBRARY" })).asin)
    assert.same("B00ABC1234", (check(rules.ITEM, { asin = "b00abc1234", title = "t", source = "library" })).asin)
  end)

  it("is at least as strict as the database's checks", function()
    local base = { asin = "B00ABC1234", title = "t", source = "LIBRARY" }
    local function field_error(field, value)
      local item = {}
      for k, v in pairs(base) do item[k] = v end
      item[field] = value
      local _, errs = check(rules.ITEM, item)
      return errs and errs[1].path
    end
    assert.same("title", field_error("title", string.rep("x", 501)))
    assert.same("authors[0]", field_error("authors", { string.rep("x", 201) }))
    assert.same("duration", field_error("duration", 0))
    assert.same("rating", field_error("rating", 5.5))
    assert.same("ratingCount", field_error("ratingCount", -1))
    assert.same("seriesPosition", field_error("seriesPosition", -1))
    assert.same("coverImageUrl", field_error("coverImageUrl", "ftp://x/y.jpg"))
    assert.same("listeningProgress", field_error("listeningProgress", 101))
    assert.same("personalRating", field_error("personalRating", 6))
    assert.same("asin", field_error("asin", "B00ABC123!"))
  end)
end)

describe("validate hooks", function()
  local function upper_only(v)
    if v:find("%l") then return nil, "must be upper case" end
    return v
  end

  it("runs a field's check on every path, the fast ones included", function()
    local plain = { type = "string", max_len = 20, check = upper_only }
    -- (arrays of plain strings are checked inline in text checked as a whole)
    local names = { type = "array", items = plain, compact = true, unique = true }
    local short = { type = "array", items = { type = "string" }, compact = true, unique = true,
                    check = function(a) if #a > 2 then return nil, "too many" end return a end }
    local item = { type = "object", in_place = true, fields = { name = plain, tags = names, few = short } }
    for _, opts in ipairs({ {}, { text_checked = true } }) do
      local c = validate.checker(item, opts)
      local v, errs = c({ name = "abc", tags = { "A", "b" }, few = { "a", "b", "c" } }, "it")
      assert.same({ nil, { { path = "it.few", message = "too many" },
                           { path = "it.name", message = "must be upper case" },
                           { path = "it.tags[1]", message = "must be upper case" } } }, { v, errs })
      assert.same({ name = "ABC", tags = { "A" }, few = { "a" } },
        (c({ name = "ABC", tags = { "A" }, few = { "a" } })))
    end
  end)

  it("lets a field's check clean the value", function()
    local trimmed = { type = "string", check = function(v) return (v:gsub("%-", "")) end }
    assert.same({ value = "978014", errs = nil }, result(trimmed, "978-014"))
  end)

  it("runs an object's checks once its fields pass: drops a droppable field, else refuses", function()
    local function no_wishlist_progress(o)
      if o.source == "WISHLIST" and o.progress ~= nil then return "progress", "must be absent on a wishlist title" end
    end
    local function needs_title(o)
      if o.title == "" then return "title", "must not be blank" end
    end
    local rule = { type = "object", in_place = true, checks = { no_wishlist_progress, needs_title }, fields = {
      source = { type = "string", required = true },
      title = { type = "string", empty = "keep" },
      progress = { type = "integer", invalid = "drop" },
    } }
    assert.same({ value = { source = "WISHLIST", title = "t" },
                  errs = { { path = "progress", message = "must be absent on a wishlist title" } } },
      result(rule, { source = "WISHLIST", title = "t", progress = 40 }))
    assert.same({ value = { source = "LIBRARY", title = "t", progress = 40 }, errs = nil },
      result(rule, { source = "LIBRARY", title = "t", progress = 40 }))
    assert.same(refused("title", "must not be blank"), result(rule, { source = "LIBRARY", title = "" }))
  end)

  it("refuses a hook that is not a function when the rule compiles", function()
    assert.has_error(function() validate.compile({ type = "string", check = "upper" }) end,
      "validate: check must be a function")
    assert.has_error(function() validate.compile({ type = "string", checks = {} }) end,
      "validate: checks is for object rules")
  end)
end)

describe("types", function()
  local types = require("types")

  it("takes the ids real exports carry as an ASIN, with one message for the rest", function()
    local got = {}
    for _, id in ipairs({ "B00ABC1234", "b00abc1234", "014312854X", "9780143128540",
                          "978014312854", "97801431285400", "978014312854X", "B00ABC123", "B00ABC1234X" }) do
      local v, errs = check(types.ASIN, id, "asin")
      got[#got + 1] = v or errs[1].message
    end
    local bad = "must be an ASIN: 10 letters or digits, or 13 digits"
    assert.same({ "B00ABC1234", "B00ABC1234", "014312854X", "9780143128540", bad, bad, bad, bad, bad }, got)
  end)

  it("checks UUIDs and handles", function()
    assert.same({ true, false, false }, { types.is_uuid("0b9b9d3e-4c2a-4f53-9b0e-3f1f1c2d7a10"),
      types.is_uuid("0b9b9d3e"), types.is_uuid(nil) })
    assert.same({ value = "ada_99" }, result(types.HANDLE, "ada_99"))
    assert.same(refused("", "must be 3 to 30 letters, digits or underscores"), result(types.HANDLE, "a!"))
  end)
end)
