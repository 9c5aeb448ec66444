-- The /import page in headless Chromium against the real binary and PostgreSQL (issue 14):
-- spec/browser/import.mjs previews every format fixture, imports one, shows a refused
-- file's error and runs axe-core; each of its steps is one test here.
local h = require("spec.support.helpers")

local json = h.host.json

describe("the import page in a browser", function()
  h.reset_db()
  local srv = h.start_server()
  local out_file = h.test_dir .. "/import-page-results.json"
  os.remove(out_file)
  local code, output = h.run(string.format("node %s/spec/browser/import.mjs %s %s %s",
    h.shell_quote(h.root), h.shell_quote(srv.url), h.shell_quote(h.root .. "/spec/fixtures/formats"),
    h.shell_quote(out_file)))
  srv:stop()
  local text = h.read_file(out_file)
  local results = text and json.decode(text) or { steps = {} }

  it("runs to its end", function()
    assert.are.equal(0, code, output)
    assert.is_true(#results.steps >= 14, "steps reported: " .. #results.steps .. "\n" .. output)
  end)

  for _, s in ipairs(results.steps) do
    it(s.name, function()
      assert(s.ok, s.error)
    end)
  end
end)
