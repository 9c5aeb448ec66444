-- The web app in headless Chromium against the real binary and PostgreSQL: the listener's
-- journey of issue 11, axe-core in both themes, screenshots to build/screenshots/.
-- spec/browser/journey.mjs drives the browser (puppeteer-core) and reports one result per
-- step; each step is one test here, so the closing "N passed, N failed" counts them.
local h = require("spec.support.helpers")
local fx = require("spec.support.library_fixture")

-- The two uploads (JSON text): a library of 400 titles (one with markup in its summary,
-- which the title page must show as text), then the same without three titles.
local function uploads()
  local first = fx.generate{ count = 400, seed = 11, asin_prefix = "W1" }
  for _, it in ipairs(first) do
    if it.source == "LIBRARY" and #it.authors > 0 and #it.narrators > 0 and it.publisher and it.releaseDate then
      it.summary = "<b>Bold</b> claims & <img src=x onerror=alert(1)>\n\nA second paragraph."
      break
    end
  end
  local second, dropped = {}, 0
  for _, it in ipairs(first) do
    if dropped < 3 and it.summary:sub(1, 1) ~= "<" then dropped = dropped + 1 else second[#second + 1] = it end
  end
  return '{"first":' .. fx.wire(first) .. ',"second":' .. fx.wire(second) .. "}"
end

describe("the web app in a browser", function()
  h.reset_db()
  local srv = h.start_server()
  local lib_file = h.test_dir .. "/journey-library.json"
  h.write_file(lib_file, uploads())
  local code, output, steps = h.browser_steps("journey.mjs", srv.url, lib_file)
  srv:stop()
  h.step_tests(it, "runs the journey to its end", code, output, steps, 15)
end)
