-- Lists, tier lists, public profiles and shared pages in headless Chromium against the real
-- binary and PostgreSQL (issue 15): the editors by mouse and keyboard, the two-tab conflict,
-- titles a sync removes, visibility for a signed-out visitor, axe-core in both themes,
-- screenshots to build/screenshots/. spec/browser/lists.mjs drives the browser; each of its
-- steps is one test here (spec/support/browser.lua).
local h = require("spec.support.helpers")
local fx = require("spec.support.library_fixture")
local browser = require("spec.support.browser")

describe("lists and shared pages in a browser", function()
  h.reset_db()
  local titles = fx.generate{ count = 60, seed = 15, asin_prefix = "Q1" }
  for _, t in ipairs(browser.journey("spec/browser/lists.mjs", h.start_server(),
      '{"titles":' .. fx.wire(titles) .. "}", 14)) do
    it(t.name, t.fn)
  end
end)
