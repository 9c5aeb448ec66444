-- Title metadata enrichment (issue 12), end to end: the real binary, real PostgreSQL, and a
-- local Audnexus stand-in (spec/support/audnexus) with faults on demand. Intervals are
-- shortened through the config so that retries, backoff and the circuit run in
-- milliseconds.
local h = require("spec.support.helpers")
local fake = require("spec.support.audnexus.provider")

local json = h.host.json
local null = json.null
local one = h.one

-- The server settings every enrichment spec uses; extra overrides.
local function env(provider, extra)
  local e = {
    SHELFSYNC_WORKERS = "2",
    SHELFSYNC_METADATA_PROVIDER_URL = provider.url,
    SHELFSYNC_METADATA_CONCURRENCY = "4",
    SHELFSYNC_METADATA_RATE_PER_S = "200",
    SHELFSYNC_METADATA_POLL_MS = "50",
    SHELFSYNC_METADATA_BACKOFF_MS = "50",
    SHELFSYNC_METADATA_MAX_ATTEMPTS = "3",
    SHELFSYNC_METADATA_TIMEOUT_MS = "700",
    SHELFSYNC_METADATA_LOOKUP_TIMEOUT_MS = "700",
    SHELFSYNC_METADATA_MAX_BYTES = "262144",
    SHELFSYNC_METADATA_CIRCUIT_FAILURES = "50",
    SHELFSYNC_METADATA_CIRCUIT_OPEN_MS = "600",
  }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

-- A fake provider and a fresh world whose server uses it (for a describe's setup), and
-- their end (for its teardown).
local function start_world(names, extra)
  local provider = fake.start()
  return provider, h.fresh_world(names, { env = env(provider, extra) })
end

local function stop_world(provider, w)
  if w then w.srv:stop() end
  if provider then provider:stop() end
end

-- What the audioshlf extension sends: ASIN, title, source, progress; empty name lists.
local function ext_item(asin, extra)
  local it = { asin = asin, title = "Title " .. asin, source = "LIBRARY", authors = {},
               narrators = {}, listeningProgress = 10, personalRating = 0 }
  for k, v in pairs(extra or {}) do it[k] = v end
  return it
end

local function sync(srv, c, items)
  local res = h.sync_items(srv, c, items)
  assert(res.status == 200, "sync: " .. res.status .. " " .. res.body)
  return res.json
end

local function queued(asin)
  return one("SELECT attempts, leased_by, last_error FROM enrich_queue WHERE asin = $1", asin)
end

-- The database's clock, for wait_done's `since`.
local function db_now()
  return one("SELECT clock_timestamp()::text AS t").t
end

-- Waits until the provider has answered for every title of asins (metadata_checked_at set,
-- at or after `since` when given: a database time taken before the sync) and none of them
-- waits in the queue. An empty queue alone is no outcome: a sync's titles are queued just
-- after its answer, so right after a sync the queue may not have them yet.
local function wait_done(asins, timeout, since)
  h.wait_until(function()
    return one([[SELECT count(*) AS n FROM title_catalog AS c
                 WHERE c.asin = ANY($1::text[]) AND c.metadata_checked_at >= $2::timestamptz
                   AND NOT EXISTS (SELECT 1 FROM enrich_queue AS q WHERE q.asin = c.asin)]],
      asins, since or "-infinity").n == #asins
  end, timeout or 15, "the provider's answers for " .. #asins .. " titles")
end

local function catalog(asin)
  return one([[SELECT title, subtitle, authors, narrators, series_name, series_position, duration,
                      cover_image_url, summary, rating, publisher, release_date::text AS release_date,
                      language, categories, metadata_region, metadata_status,
                      metadata_checked_at IS NOT NULL AS checked
               FROM title_catalog WHERE asin = $1]], asin)
end

local function asins(prefix, n)
  local out = {}
  for i = 1, n do out[i] = string.format("%s%04d", prefix, i) end
  return out
end

local function plain(t)                 -- host.pg arrays carry a metatable; compare contents
  local out = {}
  for i, v in ipairs(t) do out[i] = v end
  return out
end

describe("enrichment", function()
  local provider, w

  setup(function() provider, w = start_world({ "alice", "bob" }) end)
  teardown(function() stop_world(provider, w) end)

  before_each(function() provider:reset() end)

  it("fills authors, cover, length, series and categories of an extension sync, which then searches, facets and counts hours", function()
    local list = asins("B0EXTA", 3)
    local items = {}
    for i, a in ipairs(list) do items[i] = ext_item(a) end
    local t0 = h.host.clock_ms()
    local res = sync(w.srv, w.alice, items)
    assert.is_true(h.host.clock_ms() - t0 < 5000)
    assert.same({ imported = 3, newToCatalog = 3 }, { imported = res.imported, newToCatalog = res.newToCatalog })
    wait_done(list)

    local c = catalog(list[1])
    assert.same({
      title = "Title B0EXTA0001", authors = true, narrators = true, series_name = true, cover = true, duration_positive = true,
      categories = { "Science Fiction & Fantasy" }, language = "English", region = "us",
      status = "ok", release_date = "2020-03-04", publisher = "Fake House", rating = 4.5,
      summary = "The story of B0EXTA0001.\n\nSecond & last paragraph.",
    }, {
      title = c.title, authors = #c.authors == 1 and c.authors[1]:match("^Author %d+$") ~= nil,
      narrators = #c.narrators == 1 and c.narrators[1]:match("^Narrator %d+$") ~= nil,
      series_name = c.series_name:match("^Series %d$") ~= nil, cover = c.cover_image_url:match("^https://") ~= nil,
      duration_positive = c.duration > 0, categories = plain(c.categories), language = c.language,
      region = c.metadata_region, status = c.metadata_status, release_date = c.release_date,
      publisher = c.publisher, rating = c.rating, summary = c.summary,
    })

    local author = c.authors[1]
    local found = w.alice:get("/api/library?author=" .. author:gsub(" ", "%%20"))
    assert.equals(200, found.status)
    assert.is_true(found.json.total >= 1)
    for _, e in ipairs(found.json.items) do assert.same({ author }, plain(e.title.authors)) end
    local searched = w.alice:get("/api/library?q=" .. author:gsub(" ", "%%20"))
    assert.is_true(searched.json.total >= 1)

    local facets = w.alice:get("/api/library/facets").json
    assert.is_true(#facets.authors >= 1 and #facets.series >= 1 and #facets.categories >= 1)
    local dash = w.alice:get("/api/dashboard").json
    assert.is_true(dash.listeningHours > 0)
    assert.equals(0, w.alice:get("/api/me").json.enrichment.pending)
    for _, a in ipairs(list) do assert.equals(1, provider:requests(a)) end
  end)

  it("erases nothing and fetches nothing again on a second minimal sync", function()
    local list = asins("B0EXTB", 2)
    sync(w.srv, w.alice, { ext_item(list[1]), ext_item(list[2]) })
    wait_done(list)
    local before = { catalog(list[1]), catalog(list[2]) }
    local again = sync(w.srv, w.alice, { ext_item(list[1]), ext_item(list[2]) })
    assert.equals(0, again.newToCatalog)
    h.sleep(0.3)                        -- (time for a queueing after the answer, were there one)
    assert.is_nil(queued(list[1]))
    assert.same(before, { catalog(list[1]), catalog(list[2]) })
    assert.same({ 1, 1 }, { provider:requests(list[1]), provider:requests(list[2]) })
  end)

  it("answers the sync at once and tells the user how many titles wait for details", function()
    provider:latency(400)
    local list = asins("B0EXTC", 6)
    local items = {}
    for i, a in ipairs(list) do items[i] = ext_item(a) end
    sync(w.srv, w.bob, items)
    -- (queued just after the answer; each fetch then takes 400 ms)
    local pending = h.wait_until(function()
      local n = w.bob:get("/api/me").json.enrichment.pending
      return n > 0 and n
    end, 10, "titles waiting for details")
    assert.is_true(pending <= 6)
    wait_done(list)
    assert.equals(0, w.bob:get("/api/me").json.enrichment.pending)
  end)

  it("stores summaries as plain text: tags and scripts gone, entities decoded, paragraphs as blank lines", function()
    local a = "B0HTML0001"
    provider:book(a, { asin = a, title = "Title " .. a, authors = { { name = "Ann Leckie" } },
      summary = "<p>First <i>para</i>&nbsp;&amp; more&#33;</p><script>alert('x')</script>" ..
                "<p onclick=\"evil()\">Second<br>line &lt;b&gt; &#x263A;</p><style>p{}</style><!-- c -->" })
    sync(w.srv, w.alice, { ext_item(a) })
    wait_done({ a })
    assert.equals("First para\194\160& more!\n\nSecond\nline <b> \226\152\186", catalog(a).summary)
  end)

  it("keeps what the catalog has for fields the provider leaves out", function()
    local a = "B0MISS0001"
    provider:book(a, { asin = a, title = "Title " .. a, authors = { { name = "Only Author" } },
                       image = null, runtimeLengthMin = 0, genres = {} })
    sync(w.srv, w.alice, { ext_item(a, { coverImageUrl = "https://img.example/c.jpg", duration = 321,
                                         categories = { "Kept" }, summary = "Kept summary" }) })
    wait_done({ a })
    local c = catalog(a)
    assert.same({ { "Only Author" }, "https://img.example/c.jpg", 321, { "Kept" }, "Kept summary", "ok" },
      { plain(c.authors), c.cover_image_url, c.duration, plain(c.categories), c.summary, c.metadata_status })
  end)

  it("parks an unknown ASIN (404) until its refresh date: syncs before it do not queue it, one after it does", function()
    local a = "B0NOTF0001"
    provider:fault(a, "not_found")
    sync(w.srv, w.alice, { ext_item(a) })
    wait_done({ a })
    assert.same({ status = "not_found", title = "Title " .. a, authors = {} },
      { status = catalog(a).metadata_status, title = catalog(a).title, authors = plain(catalog(a).authors) })
    sync(w.srv, w.alice, { ext_item(a) })
    h.sleep(0.3)                        -- (time for a queueing after the answer, were there one)
    assert.is_nil(queued(a))
    assert.equals(1, provider:requests(a))
    -- past its refresh date (metadata_refresh_days, 30), the next sync asks again
    assert(h.db().query([[UPDATE title_catalog SET metadata_checked_at = now() - interval '31 days'
                          WHERE asin = $1]], a))
    provider:reset()
    local since = db_now()
    sync(w.srv, w.alice, { ext_item(a) })
    wait_done({ a }, nil, since)
    assert.same({ 1, "ok", 1 }, { provider:requests(a), catalog(a).metadata_status, #catalog(a).authors })
  end)

  it("waits out a 429 for its Retry-After, then fetches", function()
    local a = "B0RATE0001"
    provider:fault(a, "rate_limit", { times = 1, retry_after = 1 })
    local t0 = h.host.clock_ms()
    sync(w.srv, w.alice, { ext_item(a) })
    wait_done({ a })
    assert.is_true(h.host.clock_ms() - t0 >= 900)
    assert.same({ 2, "ok" }, { provider:requests(a), catalog(a).metadata_status })
  end)

  for _, case in ipairs{
    { "server errors", "server_error", "B0FSERV001" },
    { "an answer slower than the timeout", "slow", "B0FSLOW001", { delay_ms = 1500 } },
    { "malformed JSON", "malformed", "B0FMALF001" },
    { "a body over the size limit", "oversize", "B0FSIZE001" },
    { "a dropped connection", "drop", "B0FDROP001" },
  } do
    it("retries after " .. case[1] .. " and then writes the title whole", function()
      local a, opts = case[3], case[4] or {}
      opts.times = 2
      provider:fault(a, case[2], opts)
      local res = sync(w.srv, w.alice, { ext_item(a) })
      assert.equals(1, res.imported)
      wait_done({ a }, 20)
      local c = catalog(a)
      assert.same({ 3, "ok", 1, "The story of " .. a .. ".\n\nSecond & last paragraph." },
        { provider:requests(a), c.metadata_status, #c.authors, c.summary })
    end)
  end

  it("parks a title after the allowed attempts, leaving its row as it was", function()
    local a = "B0FAIL0001"
    provider:fault(a, "server_error")
    sync(w.srv, w.alice, { ext_item(a) })
    wait_done({ a }, 20)
    local c = catalog(a)
    assert.same({ 3, "failed", {}, null, "Title " .. a },
      { provider:requests(a), c.metadata_status, plain(c.authors), c.cover_image_url, c.title })
  end)

  it("uses the user's marketplace as the region and stores the region it came from", function()
    local res = w.bob:put("/api/users/me/marketplace", { marketplace = "UK" })
    assert.same({ 200, "uk" }, { res.status, res.json.marketplace })
    assert.equals("uk", w.bob:get("/api/me").json.marketplace)
    local bad = w.bob:put("/api/users/me/marketplace", { marketplace = "mars" })
    assert.same({ status = 422, error = "validation_failed" }, h.error_of(bad))
    local a = "B0REGN0001"
    sync(w.srv, w.bob, { ext_item(a) })
    wait_done({ a })
    assert.same({ "uk", "uk" }, { provider:state().regions[a], catalog(a).metadata_region })
  end)

  it("merges the trigram index's pending list once a sync has ended (sql/008)", function()
    one("CREATE EXTENSION IF NOT EXISTS pgstattuple")
    finally(function() one("DROP EXTENSION IF EXISTS pgstattuple") end)
    local function pending_pages()
      return one("SELECT pending_pages FROM pgstatginindex('title_search_text_trgm_idx')").pending_pages
    end
    -- titles written outside a sync stay in the pending list: nothing merges it yet
    one([[INSERT INTO title_catalog (asin, title, authors)
          SELECT 'B0TIDY' || lpad(i::text, 4, '0'), 'Tidy title ' || i, ARRAY['Author ' || i]
          FROM generate_series(1, 200) AS i]])
    h.sleep(0.3)
    assert.is_true(pending_pages() >= 5)
    -- (the enrichment then writes the synced title, which may leave one page for later)
    sync(w.srv, w.bob, { ext_item("B0TIDY9999") })
    h.wait_until(function() return pending_pages() <= 1 end, 10, "the pending list to be merged")
    local found = w.bob:get("/api/library?q=b0tidy9999")
    assert.same({ 200, "B0TIDY9999" }, { found.status, found.json.items[1] and found.json.items[1].asin })
  end)

  it("counts fetches by outcome, provider latency, the queue and the circuit in /metrics", function()
    local text = w.anon:get("/metrics").body
    assert.truthy(text:find('shelfsync_enrichment_fetches_total{outcome="ok"} %d'))
    assert.truthy(text:find('shelfsync_enrichment_fetches_total{outcome="not_found"} %d'))
    assert.truthy(text:find("shelfsync_enrichment_provider_latency_ms_count %d"))
    assert.truthy(text:find("shelfsync_enrichment_queue_depth %d"))
    assert.truthy(text:find("shelfsync_enrichment_circuit_open 0"))
    assert.same({ status = "ok", enrichment = "ok" },
      { status = w.anon:get("/healthz").json.status, enrichment = w.anon:get("/healthz").json.enrichment })
  end)
end)

describe("titles by ASIN, manual and hidden entries", function()
  local provider, w

  setup(function() provider, w = start_world({ "dave", "erin" }, { SHELFSYNC_METADATA_MAX_ATTEMPTS = "1" }) end)
  teardown(function() stop_world(provider, w) end)

  before_each(function() provider:reset() end)

  local function entry_row(user, asin)
    return one([[SELECT ul.id, ul.source::text AS source, ul.hidden, ul.removed_at IS NULL AS active
                 FROM user_library AS ul JOIN title_catalog AS c ON c.id = ul.title_id
                 WHERE ul.user_id = $1 AND c.asin = $2]], user.user.id, asin)
  end

  local function library_asins(c, query)
    local out = {}
    for _, e in ipairs(c:get("/api/library" .. (query or "")).json.items) do out[#out + 1] = e.asin end
    table.sort(out)
    return out
  end

  it("previews a title from the catalog, else from the provider, else says it is unknown", function()
    sync(w.srv, w.dave, { ext_item("B0LOOK0001") })
    local known = w.dave:get("/api/lookup/b0look0001")
    assert.same({ 200, "B0LOOK0001" }, { known.status, known.json.asin })

    local fresh = w.dave:get("/api/lookup/B0LOOK0002")
    assert.same({ 200, "Title B0LOOK0002", 1 }, { fresh.status, fresh.json.title, #fresh.json.authors })
    assert.equals("ok", catalog("B0LOOK0002").metadata_status)

    provider:fault("B0LOOK0003", "not_found")
    local unknown = w.dave:get("/api/lookup/B0LOOK0003")
    assert.same({ status = 404, error = "title_not_found" }, h.error_of(unknown))
    assert.truthy(unknown.json.message:find("B0LOOK0003", 1, true))
    assert.is_nil(catalog("B0LOOK0003"))
  end)

  it("adds a title by ASIN as a MANUAL entry with the provider's details", function()
    local res = w.dave:post("/api/library", { asin = "b0addd0001" })
    assert.same({ 201, "B0ADDD0001", "MANUAL", false, "Title B0ADDD0001", 1 },
      { res.status, res.json.asin, res.json.source, res.json.hidden, res.json.title.title,
        #res.json.title.authors })
    assert.equals(1, w.dave:get("/api/me").json.counts.manual)
    assert.same({ "B0ADDD0001" }, library_asins(w.dave, "?source=MANUAL"))
    assert.same({ "B0ADDD0001", "B0LOOK0001" }, library_asins(w.dave, "?source=library,MANUAL"))
    assert.same({ status = 400, error = "invalid_parameter" },
      h.error_of(w.dave:get("/api/library?source=LIBRARY,NOPE")))
  end)

  it("refuses a title already in the library (409), an unknown one (404) and a bad body (422)", function()
    w.dave:post("/api/library", { asin = "B0ADDD0002" })
    assert.same({ status = 409, error = "already_in_library" },
      h.error_of(w.dave:post("/api/library", { asin = "B0ADDD0002" })))
    provider:fault("B0ADDD0003", "not_found")
    assert.same({ status = 404, error = "title_not_found" },
      h.error_of(w.dave:post("/api/library", { asin = "B0ADDD0003" })))
    assert.is_nil(catalog("B0ADDD0003"))
    assert.same({ status = 422, error = "validation_failed" },
      h.error_of(w.dave:post("/api/library", { asin = "nope" })))
    assert.same({ status = 422, error = "validation_failed" },
      h.error_of(w.dave:post("/api/library", { asin = "B0ADDD0004", extra = 1 })))
  end)

  it("adds nothing when the provider is down (503)", function()
    local before = one("SELECT count(*) AS n FROM user_library WHERE user_id = $1", w.dave.user.id).n
    for _, kind in ipairs{ "server_error", "drop", "malformed" } do
      provider:fault("B0DOWN0001", kind)
      local res = w.dave:post("/api/library", { asin = "B0DOWN0001" })
      assert.same({ status = 503, error = "provider_unavailable" }, h.error_of(res))
    end
    provider:fault("B0DOWN0001", "slow", { delay_ms = 1500 })
    assert.same({ status = 503, error = "provider_unavailable" },
      h.error_of(w.dave:post("/api/library", { asin = "B0DOWN0001" })))
    assert.is_nil(catalog("B0DOWN0001"))
    assert.equals(before, one("SELECT count(*) AS n FROM user_library WHERE user_id = $1", w.dave.user.id).n)
  end)

  it("keeps manual entries across syncs, and a sync that brings one makes it synced", function()
    w.erin:post("/api/library", { asin = "B0MANU0001" })
    w.erin:post("/api/library", { asin = "B0MANU0002" })
    local id2 = entry_row(w.erin, "B0MANU0002").id
    sync(w.srv, w.erin, { ext_item("B0SYNC0001") })
    assert.same({ "B0MANU0001", "B0MANU0002", "B0SYNC0001" }, library_asins(w.erin))
    sync(w.srv, w.erin, { ext_item("B0SYNC0001"), ext_item("B0MANU0002") })
    assert.same({ id = id2, source = "LIBRARY", hidden = false, active = true }, entry_row(w.erin, "B0MANU0002"))
    sync(w.srv, w.erin, { ext_item("B0SYNC0001") })
    assert.same({ "B0MANU0001", "B0SYNC0001" }, library_asins(w.erin))
  end)

  it("removes only manual entries", function()
    w.erin:post("/api/library", { asin = "B0MANU0003" })
    sync(w.srv, w.erin, { ext_item("B0SYNC0002"), ext_item("B0SYNC0001") })
    assert.same({ status = 409, error = "not_manual" }, h.error_of(w.erin:delete("/api/library/B0SYNC0002")))
    assert.equals(204, w.erin:delete("/api/library/B0MANU0003").status)
    assert.is_false(entry_row(w.erin, "B0MANU0003").active)
    assert.same({ status = 404, error = "not_found" }, h.error_of(w.erin:delete("/api/library/B0MANU0003")))
    assert.same({ status = 404, error = "not_found" }, h.error_of(w.dave:delete("/api/library/B0SYNC0002")))
    -- adding it again brings the same entry back
    local id = entry_row(w.erin, "B0MANU0003").id
    assert.equals(201, w.erin:post("/api/library", { asin = "B0MANU0003" }).status)
    assert.same({ id = id, source = "MANUAL", hidden = false, active = true }, entry_row(w.erin, "B0MANU0003"))
  end)

  it("hides an entry from library reads until shown again, across syncs", function()
    sync(w.srv, w.erin, { ext_item("B0HIDE0001"), ext_item("B0HIDE0002") })
    local res = w.erin:patch("/api/library/B0HIDE0001", { hidden = true })
    assert.same({ 200, true }, { res.status, res.json.hidden })
    assert.same({ "B0HIDE0002" }, library_asins(w.erin, "?source=LIBRARY"))
    assert.same({ "B0HIDE0001" }, library_asins(w.erin, "?source=LIBRARY&hidden=true"))
    assert.same({ "B0HIDE0001", "B0HIDE0002" }, library_asins(w.erin, "?source=LIBRARY&hidden=any"))
    assert.same({ 1, 2 }, { w.erin:get("/api/library/facets?source=LIBRARY").json.total,
                            w.erin:get("/api/library/facets?source=LIBRARY&hidden=any").json.total })
    sync(w.srv, w.erin, { ext_item("B0HIDE0001"), ext_item("B0HIDE0002") })
    assert.is_true(entry_row(w.erin, "B0HIDE0001").hidden)
    assert.equals(200, w.erin:get("/api/library/B0HIDE0001").status)
    assert.same({ status = 422, error = "validation_failed" },
      h.error_of(w.erin:patch("/api/library/B0HIDE0001", { hidden = "yes" })))
    assert.same({ status = 404, error = "not_found" },
      h.error_of(w.dave:patch("/api/library/B0HIDE0001", { hidden = false })))
    assert.is_true(entry_row(w.erin, "B0HIDE0001").hidden)
    w.erin:patch("/api/library/B0HIDE0001", { hidden = false })
    assert.same({ "B0HIDE0001", "B0HIDE0002" }, library_asins(w.erin, "?source=LIBRARY"))
  end)
end)

describe("enrichment circuit breaker", function()
  local provider, w

  setup(function() provider, w = start_world({ "carol" }, {
      SHELFSYNC_METADATA_CIRCUIT_FAILURES = "3", SHELFSYNC_METADATA_MAX_ATTEMPTS = "50",
      SHELFSYNC_METADATA_CONCURRENCY = "1" }) end)
  teardown(function() stop_world(provider, w) end)

  it("stops calling a failing provider, shows degraded, keeps syncs working, and recovers", function()
    provider:fault("*", "server_error")
    local list = asins("B0CIRC", 5)
    local items = {}
    for i, a in ipairs(list) do items[i] = ext_item(a) end
    sync(w.srv, w.carol, items)
    h.wait_until(function() return w.anon:get("/healthz").json.enrichment == "degraded" end, 10, "degraded")
    local calls = provider:state().total
    h.sleep(0.3)
    assert.equals(calls, provider:state().total)        -- open: nobody calls it
    assert.equals(200, w.anon:get("/healthz").status)
    assert.truthy(w.anon:get("/metrics").body:find("shelfsync_enrichment_circuit_open 1"))
    -- the sync path does not care
    local again = sync(w.srv, w.carol, { ext_item("B0CIRC0100") })
    assert.equals(1, again.newToCatalog)
    -- the lookup does not wait for a provider known to fail
    local look = w.carol:get("/api/lookup/B0CIRC0200")
    assert.same({ status = 503, error = "provider_unavailable" }, h.error_of(look))

    provider:fault("*", "none")
    list[#list + 1] = "B0CIRC0100"
    wait_done(list, 20)
    assert.equals("ok", w.anon:get("/healthz").json.enrichment)
    for _, a in ipairs(list) do assert.equals("ok", catalog(a).metadata_status) end
  end)
end)

describe("enrichment with two instances", function()
  local provider, servers = nil, {}

  setup(function()
    h.reset_db()
    provider = fake.start()
  end)

  teardown(function()
    for _, s in ipairs(servers) do s:stop() end
    if provider then provider:stop() end
  end)

  it("enriches 1,000 queued titles with no title fetched twice", function()
    local list = asins("B0TWO", 1000)
    for i, a in ipairs(list) do list[i] = (a .. "0"):sub(1, 10) end
    -- both instances up first, so that both look at the queue when it fills
    local e = env(provider, { SHELFSYNC_METADATA_RATE_PER_S = "1000", SHELFSYNC_METADATA_CONCURRENCY = "8" })
    servers[1] = h.start_server{ env = e }
    servers[2] = h.start_server{ env = e }
    assert(h.db().query([[
      WITH c AS (INSERT INTO title_catalog (asin, title)
                 SELECT a, 'Title ' || a FROM unnest($1::text[]) AS a RETURNING asin)
      INSERT INTO enrich_queue (asin, region) SELECT asin, 'us' FROM c]], list))
    wait_done(list, 60)
    local st = provider:state()
    local twice = {}
    for _, a in ipairs(list) do
      if st.requests[a] ~= 1 then twice[#twice + 1] = a .. "=" .. tostring(st.requests[a]) end
    end
    assert.same({}, twice)
    assert.equals(1000, st.total)
    assert.equals(1000, one("SELECT count(*) AS n FROM title_catalog WHERE metadata_status = 'ok' AND cardinality(authors) > 0").n)
    -- both did a share of it
    for _, srv in ipairs(servers) do
      local text = assert(h.request("GET", srv.url .. "/metrics")).body
      local n = tonumber(text:match('shelfsync_enrichment_fetches_total{outcome="ok"} (%d+)'))
      assert.is_true(n ~= nil and n > 0 and n < 1000)
    end
  end)
end)

