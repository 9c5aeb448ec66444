require("spec.support.helpers")  -- sets the global `host` the modules expect
local json = require("json")
local errors = require("errors")

describe("json", function()
  it("encodes arrays marked with json.array as [] even when empty", function()
    assert.are.equal('{"items":[]}', json.encode({ items = json.array({}) }))
    assert.are.equal('[[],{}]', json.encode(json.array({ json.array(), {} })))
  end)

  it("does not change the table it encodes", function()
    local t = { a = json.array() }
    json.encode(t)
    assert.is_true(json.is_array(t.a))
  end)

  it("round-trips null", function()
    local v = json.decode('{"a":null}')
    assert.are.equal(json.null, v.a)
    assert.are.equal('{"a":null}', json.encode(v))
  end)

  it("returns nil and the position for malformed JSON", function()
    local v, err = json.decode('{"a": [1, 2,, 3]}')
    assert.is_nil(v)
    assert.matches("character 13", err)
  end)

  it("refuses nesting deeper than 64 levels", function()
    local deep = string.rep("[", 65) .. string.rep("]", 65)
    local v, err = json.decode(deep)
    assert.is_nil(v)
    assert.matches("too many nested", err)
    assert.is_not_nil(json.decode(string.rep("[", 60) .. string.rep("]", 60)))
  end)

  it("keeps unicode text intact", function()
    assert.are.equal("Dürrenmatt — 日本語", json.decode(json.encode({ s = "Dürrenmatt — 日本語" })).s)
  end)
end)

describe("errors", function()
  it("builds the DESIGN.md error shape with details as an array", function()
    local text = json.encode(errors.body("not_found", "list not found"))
    assert.are.same({ error = "not_found", message = "list not found", details = {} }, json.decode(text))
    assert.truthy(text:find('"details":[]', 1, true))
    local body = errors.body("validation_failed", "bad", { { path = "titles[3].asin", message = "required" } }, "r1")
    assert.are.same({ error = "validation_failed", message = "bad", requestId = "r1",
      details = { { path = "titles[3].asin", message = "required" } } }, json.decode(json.encode(body)))
  end)

  it("raises http errors as tables the framework recognizes", function()
    local ok, e = pcall(errors.raise, 422, "no_valid_titles", "nothing to import")
    assert.is_false(ok)
    assert.is_true(errors.is_http(e))
    assert.are.same({ 422, "no_valid_titles", "nothing to import" }, { e.status, e.code, e.message })
    assert.is_false(errors.is_http("plain string"))
  end)
end)
