-- GET /api/dashboard: the signed-in user's library at a glance, in one statement.
--   {"counts":{"library","wishlist","total"},
--    "progress":{"finished","inProgress","notStarted"},
--    "listeningHours": total duration of the library in hours, one decimal,
--    "topAuthors":[{"name","count"}], "topNarrators":[...], "topSeries":[...]   (5 each),
--    "recentSyncs":[{"id","syncedAt","titlesImported","newToCatalog","libraryCount",
--                    "wishlistCount","warnings","success","errorMessage"}]      (newest 5)}
-- counts.library is what the user owns (source LIBRARY or MANUAL: the Library tab's
-- titles), counts.wishlist the wishlist, total both. Progress, hours and the top lists
-- cover what the user owns: a title added by hand is listened to like a synced one; a
-- wishlist title is neither started nor part of the listening time. Removed and hidden
-- entries count nowhere (lq.COUNTED, lq.OWNED). Top lists: most titles first, then by
-- name in library_order. Same ETag / 304 behaviour as the library reads.
local lq = require("library_query")
local response = require("response")

-- lib: the owned entries, materialized once (the five aggregates below read it); the
-- counts by source come from user_library alone.
local DASHBOARD_SQL = [[
  WITH lib AS MATERIALIZED (
    SELECT ul.listening_progress AS progress, c.duration, c.authors, c.narrators, c.series_name
    FROM user_library AS ul JOIN title_catalog AS c ON c.id = ul.title_id
    WHERE ul.user_id = $1 AND ]] .. lq.OWNED .. [[
  )
  SELECT row_to_json(d)::text AS body FROM (SELECT
    (SELECT row_to_json(x) FROM (
       SELECT count(*) FILTER (WHERE ul.source <> 'WISHLIST') AS library,
              count(*) FILTER (WHERE ul.source = 'WISHLIST') AS wishlist,
              count(*) AS total
       FROM user_library AS ul WHERE ul.user_id = $1 AND ]] .. lq.COUNTED .. [[) AS x) AS counts,
    ]] .. lq.progress_counts("lib") .. [[ AS progress,
    (SELECT round(COALESCE(sum(duration), 0) / 60.0, 1) FROM lib) AS "listeningHours",
    ]] .. lq.facet("SELECT unnest(authors) AS v FROM lib", 5) .. [[ AS "topAuthors",
    ]] .. lq.facet("SELECT unnest(narrators) AS v FROM lib", 5) .. [[ AS "topNarrators",
    ]] .. lq.facet("SELECT series_name AS v FROM lib", 5) .. [[ AS "topSeries",
    (SELECT COALESCE(array_agg(row_to_json(x) ORDER BY s.synced_at DESC, s.id DESC), '{}')
     FROM (SELECT * FROM sync_history WHERE user_id = $1
           ORDER BY synced_at DESC, id DESC LIMIT 5) AS s
     CROSS JOIN LATERAL (
       SELECT s.id, ]] .. lq.iso("s.synced_at") .. [[ AS "syncedAt",
              s.titles_imported AS "titlesImported", s.new_to_catalog AS "newToCatalog",
              s.library_count AS "libraryCount", s.wishlist_count AS "wishlistCount",
              s.warnings, s.success, s.error_message AS "errorMessage") AS x) AS "recentSyncs"
  ) AS d]]

local function dashboard(ctx)
  local rows = lq.run(DASHBOARD_SQL, { n = 1, ctx.user.id })
  return response.conditional(ctx, rows[1].body)
end

return {
  { method = "GET", path = "/api/dashboard", auth = "session", handler = dashboard },
}
