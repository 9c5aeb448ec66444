-- Link previews (routes/pages.lua): a shared list, tier list or profile URL fetched without
-- JavaScript answers the web app's index.html with Open Graph and Twitter tags in its head,
-- every user text escaped; PRIVATE lists get none (the same 404 as their API read).
local h = require("spec.support.helpers")
local fx = require("spec.support.library_fixture")

local TITLE = [[Best <script>alert("x")</script> & 'quotes' "here"]]
local ESCAPED = "Best &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quotes&#39; &quot;here&quot;"

-- {property or name -> {content, ...}} of the preview <meta> tags (og:*, twitter:*,
-- description) of an HTML text.
local function metas(html)
  local out = {}
  for _, key, content in html:gmatch('<meta (%a+)="([^"]+)" content="([^"]*)">') do
    if key:find("^og:") or key:find("^twitter:") or key == "description" then
      out[key] = out[key] or {}
      table.insert(out[key], content)
    end
  end
  return out
end

describe("link previews of shared pages", function()
  local srv, pg, alice, bob, anon, titles
  local lists = {}

  setup(function()
    local w = h.fresh_world{ "alice", "bob" }
    srv, pg, alice, bob, anon = w.srv, w.pg, w.alice, w.bob, w.anon
    titles = fx.generate{ count = 6, seed = 71, asin_prefix = "P1" }
    for i, t in ipairs(titles) do t.coverImageUrl = "https://m.media-amazon.com/images/I/" .. t.asin .. ".jpg?a=1&b=" .. i end
    fx.insert(pg, alice.user.id, titles)
    assert.are.equal(200, alice:put("/api/users/me/username", { username = "alice_reads" }).status)
    local items = {}
    for i = 1, 5 do items[i] = { asin = titles[i].asin } end
    for _, v in ipairs{ "PUBLIC", "UNLISTED", "PRIVATE" } do
      local res = alice:post("/api/lists", { title = TITLE, visibility = v, items = items })
      assert(res.status == 201, res.body)
      lists[v] = res.json
    end
    local res = alice:post("/api/tierlists", { title = "Tiers <b>", visibility = "PUBLIC", description = "mine & yours",
      assignments = { { asin = titles[2].asin, tier = "A", position = 1 } } })
    assert(res.status == 201, res.body)
    lists.tier = res.json
  end)

  teardown(function() if srv then srv:stop() end end)

  local function page(client, path)
    local res = client:get(path, { headers = { Accept = "text/html" } })
    return res, metas(res.body)
  end

  it("gives a crawler the PUBLIC list's tags, its title escaped, its first covers as images", function()
    local res, m = page(anon, "/lists/" .. lists.PUBLIC.id)
    assert.are.equal(200, res.status)
    assert.matches("^text/html", res.headers["content-type"])
    -- The app's own page, with its CSP: the preview changes only the head.
    assert.matches("script%-src 'self'", res.headers["content-security-policy"])
    assert.truthy(res.body:find('<script type="module" src="/js/main.js"></script>', 1, true))
    assert.is_nil(res.body:find("<script>alert", 1, true))
    local url = srv.url .. "/lists/" .. lists.PUBLIC.id
    local covers = {}
    for i = 1, 4 do covers[i] = (titles[i].coverImageUrl:gsub("&", "&amp;")) end
    local words = {}
    for i = 1, 3 do
      words[i] = titles[i].title:gsub("&", "&amp;"):gsub("'", "&#39;"):gsub('"', "&quot;")
    end
    local description = "A list of 5 audiobooks by @alice_reads: " .. table.concat(words, ", ") .. "…"
    assert.are.same({
      description = { description },
      ["og:site_name"] = { "shelfsync" }, ["og:type"] = { "website" },
      ["og:title"] = { ESCAPED }, ["og:description"] = { description }, ["og:url"] = { url },
      ["og:image"] = covers,
      ["twitter:card"] = { "summary" }, ["twitter:title"] = { ESCAPED },
      ["twitter:description"] = { description }, ["twitter:image"] = { covers[1] },
    }, m)
    assert.truthy(res.body:find("<title>" .. ESCAPED .. " · shelfsync</title>", 1, true))
    assert.truthy(res.body:find('<link rel="canonical" href="' .. url .. '">', 1, true))
  end)

  it("previews an UNLISTED list (its link is the share) and a PUBLIC tier list", function()
    local res, m = page(anon, "/lists/" .. lists.UNLISTED.id)
    assert.are.equal(200, res.status)
    assert.are.same({ ESCAPED }, m["og:title"])
    res, m = page(bob, "/tierlists/" .. lists.tier.id)
    assert.are.equal(200, res.status)
    assert.are.same({ "Tiers &lt;b&gt;" }, m["og:title"])
    assert.are.same({ "mine &amp; yours" }, m["og:description"])
    assert.are.same({ (titles[2].coverImageUrl:gsub("&", "&amp;")) }, m["og:image"])
  end)

  it("answers a PRIVATE list with the plain page: 404 and no tags for others, 200 for its owner", function()
    for _, client in ipairs{ anon, bob } do
      local res, m = page(client, "/lists/" .. lists.PRIVATE.id)
      assert.are.equal(404, res.status)
      assert.are.same({}, m)
      assert.truthy(res.body:find("<title>shelfsync</title>", 1, true))
    end
    local res, m = page(alice, "/lists/" .. lists.PRIVATE.id)
    assert.are.equal(200, res.status)
    assert.are.same({}, m)
    assert.truthy(res.body:find('src="/js/main.js"', 1, true))
  end)

  it("answers unknown and malformed ids with the plain page and 404", function()
    for _, path in ipairs{ "/lists/00000000-0000-4000-8000-000000000000", "/lists/nope", "/tierlists/x",
      "/u/nobody_here", "/u/a" } do
      local res, m = page(anon, path)
      assert.are.equal(404, res.status, path)
      assert.are.same({}, m, path)
      assert.matches("^text/html", res.headers["content-type"], path)
    end
  end)

  it("previews a public profile with its public lists' covers, and leaves /lists to the static app", function()
    local res, m = page(anon, "/u/ALICE_reads")
    assert.are.equal(200, res.status)
    assert.are.same({ "@alice_reads" }, m["og:title"])
    assert.are.same({ "1 list and 1 tier list by @alice_reads on shelfsync" }, m["og:description"])
    assert.are.same({ srv.url .. "/u/alice_reads" }, m["og:url"])
    -- The index of one's lists is no shared page: the static index.html, with its ETag.
    res = anon:get("/lists", { headers = { Accept = "text/html" } })
    assert.are.equal(200, res.status)
    assert.truthy(res.headers["etag"])
    assert.truthy(res.body:find("<title>shelfsync</title>", 1, true))
  end)
end)
