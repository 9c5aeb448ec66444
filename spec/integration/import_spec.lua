-- Library files (POST /api/import, issue 14): every format, end to end.
local h = require("spec.support.helpers")

local host = h.host
local json = host.json
local null = json.null

local FIXTURES = "spec/fixtures/formats/"

local function fixture(name) return h.read_file(FIXTURES .. name) end

-- POST /api/import with a raw body.
local function upload(c, body, query, headers)
  return c:request("POST", "/api/import" .. (query or ""), { body = body, headers = headers or {} })
end

describe("POST /api/import", function()
  local w
  setup(function() w = h.fresh_world({ "alice", "bob" }) end)
  teardown(function() w.srv:stop() end)

  it("smoke", function()
    for _, f in ipairs({ "audible-api-library.json", "audible-cli-library.json", "audible-cli-library.tsv" }) do
      local res = upload(w.alice, fixture(f))
      print(f, res.status, res.body)
    end
  end)
end)
