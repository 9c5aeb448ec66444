-- The /import page in headless Chromium against the real binary and PostgreSQL (issue 14):
-- spec/browser/import.mjs previews every format fixture, imports one, shows a refused
-- file's error and runs axe-core; each of its steps is one test here.
local h = require("spec.support.helpers")
local browser = require("spec.support.browser")

describe("the import page in a browser", function()
  h.reset_db()
  local fixtures = { path = h.root .. "/spec/fixtures/formats" }
  for _, t in ipairs(browser.journey("spec/browser/import.mjs", h.start_server(), fixtures, 14)) do
    it(t.name, t.fn)
  end
end)
