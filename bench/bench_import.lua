-- bench_import: POST /api/import of a generated Audible API library file against a running
-- server (scripts/bench-sync.sh starts a fresh one, so its peak RSS is this bench's).
--
--   lua5.4 bench/bench_import.lua     (env: BENCH_URL, BENCH_PID, BENCH_IMPORT_TITLES=10000)
--
-- The file is what `GET /1.0/library?response_groups=<all>` pages glued together would
-- be: every response group the reference lists, ~250 distribution_rights_region codes and
-- social media images per item (about 12 KB an item, as in the a2a capture), sent gzipped.
-- Timed from the request's first byte to the answer's last: a first import (empty
-- catalog), then the same file again (nothing changes), then the server's peak RSS.
package.path = "./?.lua;./lua/?.lua;" .. package.path
package.cpath = "./build/?.so;" .. package.cpath

local host = require("host")

local URL = assert(os.getenv("BENCH_URL"), "BENCH_URL not set: run scripts/bench-sync.sh")
local PID = os.getenv("BENCH_PID")
local client = require("bench.client")(URL)
local request, login = client.request, client.login

local function vmhwm_mib()
  local f = PID and io.open("/proc/" .. PID .. "/status")
  if not f then return nil end
  local kb = f:read("a"):match("VmHWM:%s*(%d+) kB")
  f:close()
  return kb and tonumber(kb) / 1024
end
local N = tonumber(os.getenv("BENCH_IMPORT_TITLES") or "10000")
local format, rep, concat = string.format, string.rep, table.concat

-- ---- the file ----

local REGIONS = {}
for i = 1, 250 do REGIONS[i] = format('"%s%s"', string.char(65 + i % 26), string.char(65 + (i * 7) % 26)) end
REGIONS = "[" .. concat(REGIONS, ",") .. "]"

local DIST = '{"average_rating": %.3f, "display_average_rating": "%.1f", "display_stars": 4.5, ' ..
  '"num_five_star_ratings": 3901, "num_four_star_ratings": 802, "num_one_star_ratings": 67, ' ..
  '"num_ratings": %d, "num_three_star_ratings": 260, "num_two_star_ratings": 90}'

local SUMMARY = rep("<p>A long publisher summary with <b>bold</b> and <i>italic</i> text &amp; " ..
  "entities, as the API sends it.</p> ", 18)

local function item(i)
  local asin = format("B0%08d", i)
  local rating = 3 + (i % 200) / 100
  return format([[{"asin": "%s", "asset_details": [], "authors": [{"asin": "B0A%07d", "name": "Author %d"}, {"asin": null, "name": "Co Writer %d"}],
"available_codecs": [{"enhanced_codec": "LC_128_44100_stereo", "format": "Enhanced", "is_kindle_enhanced": true, "name": "aax_44_128"}, {"enhanced_codec": "LC_64_22050_stereo", "format": "Enhanced", "is_kindle_enhanced": true, "name": "aax_22_64"}, {"enhanced_codec": "format4", "format": "Format4", "is_kindle_enhanced": false, "name": "format4"}],
"category_ladders": [{"ladder": [{"id": "18580606011", "name": "Science Fiction & Fantasy"}, {"id": "18580607011", "name": "Fantasy"}, {"id": "18580617011", "name": "Epic"}], "root": "Genres"}, {"ladder": [{"id": "18572091011", "name": "Teen & Young Adult"}, {"id": "18572094011", "name": "Science Fiction & Fantasy"}], "root": "Genres"}],
"content_delivery_type": "SinglePartBook", "content_type": "Product", "customer_rights": {"is_consumable": true, "is_consumable_indefinitely": true, "is_consumable_offline": true, "is_consumable_until": null},
"distribution_rights_region": %s, "extended_product_description": "%s", "format_type": "unabridged", "has_children": false, "is_adult_product": false, "is_ayce": false, "is_finished": %s, "is_listenable": true, "is_purchasability_suppressed": false, "is_removable_by_parent": true, "is_returnable": true, "issue_date": "2021-03-04", "language": "english",
"library_status": {"date_added": "2021-0%d-1%dT05:58:44.120Z", "is_pending": false, "is_preordered": null, "is_removable": null, "is_visible": true},
"listening_status": {"finished_at_timestamp": null, "is_finished": false, "percent_complete": %.1f, "time_remaining_seconds": 69057},
"merchandising_summary": "<p>A short merchandising summary....</p> <p></p>", "narrators": [{"asin": null, "name": "Narrator %d"}], "origin_asin": "%s", "origin_id": "b4f0c2a0-0000-4000-8000-%012d", "origin_marketplace": "AF2M0KC94RCEA", "origin_type": "Purchase", "percent_complete": %.1f,
"plans": [{"end_date": "2099-12-31T23:59:59.99999Z", "plan_name": "US Minerva", "start_date": "1970-01-01T00:00:00.00000Z"}, {"end_date": "2099-12-31T23:59:59.99999Z", "plan_name": "Radio", "start_date": "1970-01-01T00:00:00.00000Z"}],
"product_images": {"500": "https://m.media-amazon.com/images/I/51x%07dL._SL500_.jpg", "1215": "https://m.media-amazon.com/images/I/51x%07dL._SL1215_.jpg"},
"provided_review": {"asin": "%s", "format": "Freeform", "ratings": {"overall_rating": %d, "performance_rating": 5, "story_rating": 4}, "submission_date": "2024-05-11T09:40:00.000Z"},
"publication_datetime": "2021-03-04T08:00:00Z", "publisher_name": "Publisher %d", "publisher_summary": "%s", "purchase_date": "2021-01-07T05:58:44.120Z",
"rating": {"num_reviews": 388, "overall_distribution": ]] .. DIST .. [[, "performance_distribution": ]] .. DIST .. [[, "story_distribution": ]] .. DIST .. [[},
"relationships": [{"asin": "B0S%07d", "relationship_to_product": "parent", "relationship_type": "series", "sequence": "%d", "sku": "SE_RIES_%d", "sku_lite": "SE_RIES_%d", "sort": "%d", "title": "Series %d", "url": "/pd/Series-Audiobook/B0S%07d"}],
"release_date": "2021-03-04", "runtime_length_min": %d,
"series": [{"asin": "B0S%07d", "sequence": "Book %d", "title": "Series %d", "url": "/pd/Series-Audiobook/B0S%07d"}],
"sku": "BK_TEST_%06d", "sku_lite": "BK_TEST_%06d",
"social_media_images": {"facebook": "https://m.media-amazon.com/images/I/51x%07dL._SL10_UR1200,800_CR200,50,1024,512_SX1024_.jpg", "twitter": "https://m.media-amazon.com/images/I/51x%07dL._SL10_UR1200,800_CR200,50,1024,512_SX1024_.jpg", "ig_bg": "https://m.media-amazon.com/images/I/51x%07dL._SL10_.jpg"},
"status": "Active", "subtitle": "Subtitle %d", "thesaurus_subject_keywords": ["literature-and-fiction", "science_fiction", "fantasy_epic"], "title": "Generated Title %d"}]],
    asin, i, i, i, REGIONS, SUMMARY, i % 10 == 0 and "true" or "false", 1 + i % 9, i % 10,
    (i % 1000) / 10, i, asin, i, (i % 1000) / 10, i, i, asin, 1 + i % 5,
    i, SUMMARY,
    rating, rating, 100 + i, rating, rating, 100 + i, rating, rating, 100 + i,
    i % 500, 1 + i % 12, i % 500, i % 500, 1 + i % 12, i % 500, i % 500,
    60 + i % 900,
    i % 500, 1 + i % 12, i % 500, i % 500,
    i, i, i, i, i, i, i)
end

local parts = {}
for i = 1, N do parts[i] = item(i) end
local text = '{"items": [' .. concat(parts, ",\n") .. '], "response_groups": ["contributors", "media", ' ..
  '"product_attrs", "product_desc", "product_extended_attrs", "rating", "series", "relationships", ' ..
  '"category_ladders", "percent_complete", "is_finished", "listening_status", "provided_review", ' ..
  '"origin_asin", "customer_rights", "sku"]}'
parts = nil -- luacheck: ignore 311 (dropped for the collector)
assert(host.json.decode(text).items[N].asin == format("B0%08d", N), "the generated file is not valid JSON")
local gz = host.gzip.compress(text)
local raw_mb, gz_mb = #text / 1048576, #gz / 1048576
text = nil -- luacheck: ignore 311 (dropped for the collector)
collectgarbage()

-- ---- the imports ----

-- The server process's CPU seconds so far (user + system): with other work on the
-- machine, wall time varies far more than this.
local function server_cpu_s()
  local f = os.getenv("BENCH_PID") and io.open("/proc/" .. os.getenv("BENCH_PID") .. "/stat")
  if not f then return 0 end
  local stat = f:read("a")
  f:close()
  local fields = {}
  for x in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100     -- utime, stime (clock ticks)
end

local cookie = login("import-bench@example.com")
local function import(label)
  local cpu0 = server_cpu_s()
  local t0 = host.clock_ms()
  local res = request("POST", "/api/import", { headers = { Cookie = cookie, Origin = URL,
    ["Content-Type"] = "application/json", ["Content-Encoding"] = "gzip" }, body = gz })
  local ms = host.clock_ms() - t0
  assert(res.status == 200, "import: " .. res.status .. " " .. res.body:sub(1, 300))
  local ans = host.json.decode(res.body)
  assert(ans.imported == N and ans.format == "audible-api")
  local cpu = server_cpu_s() - cpu0
  print(format("%-28s %6d titles  %7.0f ms  %8.0f items/s  new %6d  server CPU %.2f s  peak RSS %.0f MiB",
    label, N, ms, N * 1000 / ms, ans.newToCatalog, cpu, vmhwm_mib() or -1))
  return ms, cpu
end

print(format("file: %d titles, %.1f MB JSON, %.1f MB gzipped", N, raw_mb, gz_mb))
local cold, cold_cpu = import("import, empty catalog")
local warm, warm_cpu = import("import again, unchanged")
print()
print("| scenario | titles | file (JSON / gzip) | ms | items/s | server CPU | server peak RSS |")
print("|---|---:|---:|---:|---:|---:|---:|")
print(format("| API library file, empty catalog | %d | %.0f / %.1f MB | %.0f | %.0f | %.2f s | %.0f MiB |",
  N, raw_mb, gz_mb, cold, N * 1000 / cold, cold_cpu, vmhwm_mib() or -1))
print(format("| the same file again | %d | | %.0f | %.0f | %.2f s | |", N, warm, N * 1000 / warm, warm_cpu))
