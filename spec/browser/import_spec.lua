-- The /import page in headless Chromium against the real binary and PostgreSQL (issue 14):
-- spec/browser/import.mjs previews every format fixture, imports one, shows a refused
-- file's error and runs axe-core; each of its steps is one test here.
local h = require("spec.support.helpers")

describe("the import page in a browser", function()
  h.reset_db()
  local srv = h.start_server()
  local code, output, steps = h.browser_steps("import.mjs", srv.url, h.root .. "/spec/fixtures/formats")
  srv:stop()
  h.step_tests(it, "runs to its end", code, output, steps, 14)
end)
