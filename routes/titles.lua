-- The shared title catalog: GET /api/titles/:asin (any signed-in user).
-- Answers the catalog title (the "title" object of a library ENTRY) whether or not the
-- user owns it, or 404; ETag / If-None-Match like the library reads.
local lq = require("library_query")
local response = require("response")
local errors = require("errors")

local function title(ctx)
  local asin = lq.asin(ctx.params.asin)
  local rows = lq.run(lq.TITLE_SQL, { n = 1, asin })
  if not rows[1] then errors.not_found("title") end
  return response.conditional(ctx, rows[1].body)
end

return {
  { method = "GET", path = "/api/titles/:asin", auth = "session", handler = title },
}
