-- GET /api/stats: the pictures of the stats page, in one statement.
--   {"addedPerYear":[{"year","count"}]                       oldest year first,
--    "hoursByCategory":[{"name","hours","count"}]            most hours first (10),
--    "topAuthors":[{"name","count"}], "topNarrators":[...]   most titles first (10 each),
--    "progress":{"finished","inProgress","notStarted"},
--    "seriesCompletion":[{"name","owned","finished"}]        most owned first (10)}
-- Like the dashboard's figures, everything covers what the user owns (source LIBRARY or
-- MANUAL; neither removed nor hidden: lq.OWNED): a wishlist title is neither listened to
-- nor added. A title in several categories counts its hours in each (the bars show
-- where the time goes, not a partition). Years are UTC years of dateAdded. Ties go by name (or year) in
-- library_order. Same ETag / 304 behaviour as the library reads.
local lq = require("library_query")
local response = require("response")

local function list(select_sql, order)
  return "(SELECT COALESCE(array_agg(row_to_json(x) ORDER BY " .. order .. "), '{}') FROM ("
    .. select_sql .. ") AS x)"
end

local STATS_SQL = [[
  WITH lib AS MATERIALIZED (
    SELECT ul.listening_progress AS progress, ul.date_added, c.duration, c.authors,
           c.narrators, c.series_name, c.categories
    FROM user_library AS ul JOIN title_catalog AS c ON c.id = ul.title_id
    WHERE ul.user_id = $1 AND ]] .. lq.OWNED .. [[
  )
  SELECT row_to_json(d)::text AS body FROM (SELECT
    ]] .. list([[
      SELECT extract(year FROM date_added AT TIME ZONE 'UTC')::int AS year, count(*) AS count
      FROM lib GROUP BY 1]], "x.year") .. [[ AS "addedPerYear",
    ]] .. list([[
      SELECT cat AS name, round(COALESCE(sum(duration), 0) / 60.0, 1) AS hours, count(*) AS count
      FROM lib CROSS JOIN LATERAL unnest(categories) AS cat
      GROUP BY cat ORDER BY 2 DESC, cat COLLATE library_order LIMIT 10]],
      "x.hours DESC, x.name COLLATE library_order") .. [[ AS "hoursByCategory",
    ]] .. lq.facet("SELECT unnest(authors) AS v FROM lib", 10) .. [[ AS "topAuthors",
    ]] .. lq.facet("SELECT unnest(narrators) AS v FROM lib", 10) .. [[ AS "topNarrators",
    ]] .. lq.progress_counts("lib") .. [[ AS progress,
    ]] .. list([[
      SELECT series_name AS name, count(*) AS owned,
             count(*) FILTER (WHERE progress >= 100) AS finished
      FROM lib WHERE series_name IS NOT NULL
      GROUP BY series_name ORDER BY 2 DESC, series_name COLLATE library_order LIMIT 10]],
      "x.owned DESC, x.name COLLATE library_order") .. [[ AS "seriesCompletion"
  ) AS d]]

local function stats(ctx)
  local rows = lq.run(STATS_SQL, { n = 1, ctx.user.id })
  return response.conditional(ctx, rows[1].body)
end

return {
  { method = "GET", path = "/api/stats", auth = "session", handler = stats },
}
