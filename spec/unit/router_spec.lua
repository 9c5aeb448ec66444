require("spec.support.helpers")  -- sets the global `host` the modules expect
local router = require("router")

describe("router", function()
  local r
  before_each(function()
    r = router.new()
    r:add({ method = "GET", path = "/api/library", name = "list" })
    r:add({ method = "GET", path = "/api/library/facets", name = "facets" })
    r:add({ method = "GET", path = "/api/library/:asin", name = "entry" })
    r:add({ method = "GET", path = "/api/lists/:id", name = "get_list" })
    r:add({ method = "PATCH", path = "/api/lists/:id", name = "patch_list" })
    r:add({ method = "DELETE", path = "/api/lists/:id", name = "delete_list" })
    r:add({ method = "PUT", path = "/api/lists/:id/items", name = "put_items" })
  end)

  it("matches a literal path", function()
    local route, params = r:match("GET", "/api/library")
    assert.are.equal("list", route.name)
    assert.are.same({}, params)
  end)

  it("extracts path params", function()
    local route, params = r:match("PUT", "/api/lists/42/items")
    assert.are.equal("put_items", route.name)
    assert.are.same({ id = "42" }, params)
  end)

  it("prefers a literal segment over a param at the same place", function()
    assert.are.equal("facets", (r:match("GET", "/api/library/facets")).name)
    assert.are.equal("entry", (r:match("GET", "/api/library/B00TEST123")).name)
  end)

  it("answers HEAD with the GET route", function()
    assert.are.equal("list", (r:match("HEAD", "/api/library")).name)
  end)

  it("tells not found from method not allowed, listing the allowed methods", function()
    assert.are.same({ nil, "not_found" }, { r:match("GET", "/api/nothing") })
    assert.are.same({ nil, "not_found" }, { r:match("GET", "/api/lists/1/items/2") })
    assert.are.same({ nil, "method_not_allowed", "DELETE, GET, PATCH" }, { r:match("POST", "/api/lists/7") })
  end)

  it("ignores repeated and trailing slashes", function()
    assert.are.equal("get_list", (r:match("GET", "/api//lists/9/")).name)
  end)

  it("refuses a duplicate route", function()
    assert.has_error(function() r:add({ method = "GET", path = "/api/library" }) end,
      "duplicate route GET /api/library")
  end)
end)
