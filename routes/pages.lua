-- App pages shared by link, answered with the web app's index.html whose head carries link
-- preview tags (Open Graph, Twitter card, canonical URL), for crawlers that run no script:
--   GET /lists/:id       a recommendation list
--   GET /tierlists/:id   a tier list
--   GET /u/:username     a public profile
-- Every other app path is a static file (core/web_static.c). A Lua route that matches a GET
-- comes first there (core/http_server.c), which is how these three reach this file; the
-- HTML answer gets the app's CSP from C like the static page. The page itself is the same
-- app: the tags only change what a crawler reads.
--
-- Tags are written only for what anyone may see: a PUBLIC or UNLISTED list, a PUBLIC
-- profile. A PRIVATE list is the plain page for its owner (200) and a 404 for anyone else,
-- as its API read is; so is an unknown one. Every text from a user is escaped.
local lc = require("lists_common")
local json = require("json")
local config = host.config

local gsub, format, concat = string.gsub, string.format, table.concat
local ipairs, min = ipairs, math.min
local null = json.null

local SITE = "shelfsync"
local IMAGES = 4            -- og:image tags at most (the first covers)

local ESCAPES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }
local function esc(s) return (gsub(s, "[&<>\"']", ESCAPES)) end

local function plural(n, one, many) return format("%d %s", n, n == 1 and one or many) end

-- The head tags for {title, description, url, images}.
local function tags(p)
  local out = {
    format("<title>%s · %s</title>", esc(p.title), SITE),
    format('<meta name="description" content="%s">', esc(p.description)),
    format('<link rel="canonical" href="%s">', esc(p.url)),
    format('<meta property="og:site_name" content="%s">', SITE),
    '<meta property="og:type" content="website">',
    format('<meta property="og:title" content="%s">', esc(p.title)),
    format('<meta property="og:description" content="%s">', esc(p.description)),
    format('<meta property="og:url" content="%s">', esc(p.url)),
    -- Covers are square: the small card shows them whole.
    '<meta name="twitter:card" content="summary">',
    format('<meta name="twitter:title" content="%s">', esc(p.title)),
    format('<meta name="twitter:description" content="%s">', esc(p.description)),
  }
  for i = 1, min(#p.images, IMAGES) do
    out[#out + 1] = format('<meta property="og:image" content="%s">', esc(p.images[i]))
  end
  if p.images[1] then
    out[#out + 1] = format('<meta name="twitter:image" content="%s">', esc(p.images[1]))
  end
  return concat(out, "\n  ")
end

local function canonical(path)
  return (gsub(config.public_url or "", "/+$", "")) .. path
end

local function cover_images(covers)
  local out = {}
  for _, c in ipairs(covers or {}) do
    if c.coverImageUrl and c.coverImageUrl ~= null then out[#out + 1] = c.coverImageUrl end
  end
  return out
end

-- "5 audiobooks by @ada: Dune, Emma, Ulysses…" when the owner has no description.
local function list_description(s, count, noun)
  if s.description and s.description ~= null and s.description ~= "" then return s.description end
  local names = {}
  for i, c in ipairs(s.covers or {}) do if i <= 3 then names[i] = c.title end end
  local by = s.owner and s.owner.username and s.owner.username ~= null and (" by @" .. s.owner.username) or ""
  local text = format("A %s of %s%s", noun, plural(count, "audiobook", "audiobooks"), by)
  if #names > 0 then text = text .. ": " .. concat(names, ", ") .. (count > #names and "…" or "") end
  return text
end

-- The answer: index.html with `head` put in place of its <title> (nil: as it is).
local function page(status, head)
  local html, err = host.web_index()
  if not html then
    return 404, { error = "not_found", message = err, details = json.array() }
  end
  if head then
    local n
    html, n = gsub(html, "<title>[^<]*</title>", function() return head end, 1)
    if n == 0 then html = gsub(html, "</head>", function() return head .. "\n</head>" end, 1) end
  end
  return { status = status, body = html, headers = {
    ["Content-Type"] = "text/html; charset=utf-8",
    -- The answer depends on who asks (an owner's PRIVATE list is a page, for others a 404).
    ["Cache-Control"] = "private, no-cache",
  } }
end

local function list_page(kind, noun, count_field, path)
  return function(ctx)
    local s, row = lc.summary(kind, ctx.params.id, ctx.user)
    if not s then return page(404) end
    if row.visibility == "PRIVATE" then return page(200) end
    return page(200, tags{
      title = s.title,
      description = list_description(s, s[count_field], noun),
      url = canonical(path .. s.id),
      images = cover_images(s.covers),
    })
  end
end

local function profile_page(ctx)
  local user = lc.public_profile(ctx.params.username)
  if not user then return page(404) end
  local lists = json.decode(lc.summaries(lc.KINDS.list, user.id, true))
  local tiers = json.decode(lc.summaries(lc.KINDS.tierlist, user.id, true))
  local images = {}
  for _, set in ipairs{ lists, tiers } do
    for _, s in ipairs(set) do
      for _, url in ipairs(cover_images(s.covers)) do images[#images + 1] = url end
    end
  end
  return page(200, tags{
    title = "@" .. user.username,
    description = format("%s and %s by @%s on %s", plural(#lists, "list", "lists"),
      plural(#tiers, "tier list", "tier lists"), user.username, SITE),
    url = canonical("/u/" .. user.username),
    images = images,
  })
end

local list = list_page(lc.KINDS.list, "list", "itemCount", "/lists/")
local tierlist = list_page(lc.KINDS.tierlist, "tier list", "assignmentCount", "/tierlists/")

return {
  { method = "GET", path = "/lists/:id",     auth = "optional", handler = list },
  { method = "GET", path = "/tierlists/:id", auth = "optional", handler = tierlist },
  { method = "GET", path = "/u/:username",   auth = "none",     handler = profile_page },
}
