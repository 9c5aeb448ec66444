-- Browser specs: runs a driver script of spec/browser/ (node, puppeteer-core + Chromium)
-- against a server and turns each step it reports into one busted test, so the closing
-- "N passed, N failed" counts them.
--
--   local browser = require("spec.support.browser")
--   for _, t in ipairs(browser.journey("spec/browser/lists.mjs", srv, input_text, 10)) do
--     it(t.name, t.fn)
--   end
--
-- The script is called as `node <script> <server url> <input file> <results file>` and
-- writes {"steps": [{"name", "ok", "error"}]} to the results file.
local h = require("spec.support.helpers")

local _M = {}

-- Runs the script now and stops srv; returns the tests {name, fn}: one that the script ran
-- to its end with at least min_steps steps, then one per step. input is the text the
-- script reads (written to a file first), or {path = "..."} to hand it a path as it is.
function _M.journey(script, srv, input, min_steps)
  local name = script:match("([^/]+)%.mjs$")
  local input_file = type(input) == "table" and input.path or (h.test_dir .. "/" .. name .. "-input.json")
  local out_file = h.test_dir .. "/" .. name .. "-results.json"
  if type(input) ~= "table" then h.write_file(input_file, input) end
  os.remove(out_file)
  local code, output = h.run(string.format("node %s/%s %s %s %s", h.shell_quote(h.root), script,
    h.shell_quote(srv.url), h.shell_quote(input_file), h.shell_quote(out_file)))
  srv:stop()
  local text = h.read_file(out_file)
  local results = text and h.host.json.decode(text) or { steps = {} }

  local tests = { { name = "runs " .. name .. " to its end", fn = function()
    if code ~= 0 then error("exit " .. tostring(code) .. "\n" .. output, 0) end
    if #results.steps < min_steps then error("steps reported: " .. #results.steps .. "\n" .. output, 0) end
  end } }
  for _, s in ipairs(results.steps) do
    tests[#tests + 1] = { name = s.name, fn = function() if not s.ok then error(s.error, 0) end end }
  end
  return tests
end

return _M
