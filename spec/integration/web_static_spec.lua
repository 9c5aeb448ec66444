-- The web app's files, served by the host from a private web root (config web_root): MIME
-- types, ETag/304, gzip and .gz siblings, HEAD, the SPA fallback, confinement to the root,
-- security headers, and edits that show on the next request.
local h = require("spec.support.helpers")

local gzip = h.host.gzip

local SECRET = "TOP SECRET outside the web root"
local INDEX = "<!doctype html><html><head><title>shelfsync</title>"
  .. '<script type="module" src="/app.js"></script></head><body><main id="app"></main>'
  .. string.rep("<!-- padding so that gzip pays -->", 10) .. "</body></html>\n"
local APP_JS = "export const answer = 42;\n" .. string.rep("console.log('shelfsync web app');\n", 40)
local CSP = "default-src 'self'; script-src 'self'; style-src 'self'; "
  .. "img-src 'self' data: https://covers.example.com https://img.example.org; connect-src 'self'; "
  .. "font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"

-- A file per type the app ships, with the Content-Type each must be served with.
local TYPES = {
  ["page.html"] = "text/html; charset=utf-8",
  ["mod.mjs"] = "text/javascript; charset=utf-8",
  ["app.js"] = "text/javascript; charset=utf-8",
  ["style.css"] = "text/css; charset=utf-8",
  ["logo.svg"] = "image/svg+xml",
  ["cover.png"] = "image/png",
  ["cover.jpg"] = "image/jpeg",
  ["cover.webp"] = "image/webp",
  ["favicon.ico"] = "image/x-icon",
  ["data.json"] = "application/json; charset=utf-8",
  ["font.woff2"] = "font/woff2",
  ["robots.txt"] = "text/plain; charset=utf-8",
  ["app.webmanifest"] = "application/manifest+json",
  ["app.js.map"] = "application/json; charset=utf-8",
  ["blob.bin"] = "application/octet-stream",
}

local function sh(cmd)
  local code, out = h.run(cmd)
  assert(code == 0, cmd .. ": " .. out)
  return out
end

-- GET a path exactly as written (no dot-segment squashing): status and body.
local function raw_get(srv, path)
  local out = sh("curl -s -S --path-as-is --max-time 10 -w '\\n%{http_code}' " .. h.shell_quote(srv.url .. path))
  local body, status = out:match("^(.*)\n(%d+)$")
  return tonumber(status), body
end

local function get(srv, path, headers, method)
  return assert(h.request(method or "GET", srv.url .. path, { headers = headers, decode = false }))
end

describe("the web app's static files", function()
  local srv, web, outside

  setup(function()
    local base = h.test_dir .. "/web-static-" .. tostring(h.host.clock_ms())
    web = base .. "/web"
    outside = base .. "/outside.txt"
    sh("mkdir -p " .. h.shell_quote(web .. "/sub/deeper"))
    h.write_file(outside, SECRET)
    h.write_file(web .. "/index.html", INDEX)
    h.write_file(web .. "/app.js", APP_JS)
    for name in pairs(TYPES) do
      if not h.read_file(web .. "/" .. name) then h.write_file(web .. "/" .. name, "content of " .. name .. "\n") end
    end
    h.write_file(web .. "/sub/deeper/note.txt", "deep note\n")
    h.write_file(web .. "/.env", SECRET)
    h.write_file(web .. "/empty.txt", "")
    -- A precompressed sibling (gzip -9, so its size differs from the host's own deflate).
    h.write_file(web .. "/big.css", string.rep("body { color: #222; }\n", 200))
    sh("gzip -k -9 " .. h.shell_quote(web .. "/big.css"))
    -- A .gz older than its file: an edit made without recompressing.
    h.write_file(web .. "/stale.css", string.rep(".old { }\n", 100))
    sh("gzip -k " .. h.shell_quote(web .. "/stale.css"))
    h.write_file(web .. "/stale.css", string.rep(".new { }\n", 100))
    sh("touch -d '1 hour ago' " .. h.shell_quote(web .. "/stale.css.gz"))
    -- Symlinks: one inside the tree (fine), three that leave it.
    sh("cd " .. h.shell_quote(web) .. " && ln -s app.js alias.js && ln -s ../outside.txt out.txt"
      .. " && ln -s " .. h.shell_quote(outside) .. " abs.txt && ln -s .. up")
    srv = h.start_server({ env = {
      SHELFSYNC_WEB_ROOT = web,
      SHELFSYNC_COVER_IMAGE_HOSTS = "https://covers.example.com, https://img.example.org",
    } })
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  describe("files", function()
    it("serves every file type with its Content-Type and body", function()
      for name, ctype in pairs(TYPES) do
        local res = get(srv, "/" .. name)
        assert.are.same({ 200, ctype, h.read_file(web .. "/" .. name) },
                        { res.status, res.headers["content-type"], res.body }, name)
      end
    end)

    it("serves / and nested files, and an empty file", function()
      assert.are.same({ 200, INDEX }, { get(srv, "/").status, get(srv, "/").body })
      assert.are.same({ 200, "deep note\n" }, { get(srv, "/sub/deeper/note.txt").status, get(srv, "/sub/deeper/note.txt").body })
      local empty = get(srv, "/empty.txt")
      assert.are.same({ 200, "", "0" }, { empty.status, empty.body, empty.headers["content-length"] })
    end)

    it("keeps the connection open across files, so a page's assets share one", function()
      -- curl says how many connections each transfer opened: 0 when it reused the last one.
      local out = sh("curl -s -o /dev/null -o /dev/null -o /dev/null -w '%{http_code}:%{num_connects} ' " ..
        h.shell_quote(srv.url .. "/") .. " " .. h.shell_quote(srv.url .. "/app.js") .. " " ..
        h.shell_quote(srv.url .. "/missing.js"))
      assert.are.equal("200:1 200:0 404:0 ", out)
    end)

    it("follows a symlink that stays inside the root", function()
      local res = get(srv, "/alias.js")
      assert.are.same({ 200, APP_JS }, { res.status, res.body })
    end)

    it("answers HEAD with the GET headers and no body", function()
      local g, hd = get(srv, "/app.js"), get(srv, "/app.js", nil, "HEAD")
      assert.are.same({ 200, "", tostring(#APP_JS), g.headers["etag"], g.headers["content-type"] },
        { hd.status, hd.body, hd.headers["content-length"], hd.headers["etag"], hd.headers["content-type"] })
    end)
  end)

  describe("caching", function()
    it("answers a matching If-None-Match with 304 and no body", function()
      local first = get(srv, "/app.js")
      local etag = first.headers["etag"]
      assert.matches('^"[%x%-]+"$', etag)
      assert.are.equal("no-cache", first.headers["cache-control"])
      for _, inm in ipairs({ etag, "W/" .. etag, '"other", ' .. etag, "*" }) do
        local res = get(srv, "/app.js", { ["If-None-Match"] = inm })
        assert.are.same({ 304, "", etag }, { res.status, res.body, res.headers["etag"] }, inm)
      end
      assert.are.equal(200, get(srv, "/app.js", { ["If-None-Match"] = '"other"' }).status)
    end)

    it("gives the gzip variant its own ETag", function()
      local plain = get(srv, "/app.js")
      local zipped = get(srv, "/app.js", { ["Accept-Encoding"] = "gzip" })
      assert.are_not.equal(plain.headers["etag"], zipped.headers["etag"])
      assert.are.equal(200, get(srv, "/app.js", { ["If-None-Match"] = plain.headers["etag"],
                                                  ["Accept-Encoding"] = "gzip" }).status)
      assert.are.equal(304, get(srv, "/app.js", { ["If-None-Match"] = zipped.headers["etag"],
                                                  ["Accept-Encoding"] = "gzip" }).status)
    end)
  end)

  describe("gzip", function()
    it("compresses a text file for a client that accepts gzip", function()
      local res = get(srv, "/app.js", { ["Accept-Encoding"] = "deflate, gzip;q=0.8" })
      assert.are.same({ 200, "gzip", "Accept-Encoding" },
                      { res.status, res.headers["content-encoding"], res.headers["vary"] })
      assert.is_true(#res.body < #APP_JS)
      assert.are.equal(APP_JS, gzip.decompress(res.body))
    end)

    it("sends the bytes as they are without Accept-Encoding gzip, or with q=0", function()
      for _, ae in ipairs({ "identity", "gzip;q=0", "br" }) do
        local res = get(srv, "/app.js", { ["Accept-Encoding"] = ae })
        assert.are.same({ 200, APP_JS, nil, "Accept-Encoding" },
                        { res.status, res.body, res.headers["content-encoding"], res.headers["vary"] }, ae)
      end
    end)

    it("never compresses images or fonts", function()
      local res = get(srv, "/cover.png", { ["Accept-Encoding"] = "gzip" })
      assert.are.same({ 200, nil, nil, h.read_file(web .. "/cover.png") },
        { res.status, res.headers["content-encoding"], res.headers["vary"], res.body })
    end)

    it("sends a precompressed .gz sibling as it is", function()
      local gz = h.read_file(web .. "/big.css.gz")
      local res = get(srv, "/big.css", { ["Accept-Encoding"] = "gzip" })
      assert.are.same({ 200, "gzip", "text/css; charset=utf-8", gz },
        { res.status, res.headers["content-encoding"], res.headers["content-type"], res.body })
      assert.are.equal(h.read_file(web .. "/big.css"), gzip.decompress(res.body))
    end)

    it("ignores a .gz sibling older than its file", function()
      local res = get(srv, "/stale.css", { ["Accept-Encoding"] = "gzip" })
      assert.are.equal("gzip", res.headers["content-encoding"])
      assert.are.equal(string.rep(".new { }\n", 100), gzip.decompress(res.body))
    end)
  end)

  describe("the SPA fallback", function()
    it("answers index.html for every app path that is not a file", function()
      for _, path in ipairs({ "/dashboard", "/library/B00TEST123", "/library?source=WISHLIST",
                              "/u/ada/lists", "/sub", "/sub/", "/apiary", "/authors" }) do
        local res = get(srv, path)
        assert.are.same({ 200, "text/html; charset=utf-8", INDEX, "no-cache" },
          { res.status, res.headers["content-type"], res.body, res.headers["cache-control"] }, path)
      end
    end)

    it("answers 404 for a missing file with an extension, not index.html", function()
      for _, path in ipairs({ "/app/missing.js", "/missing.css", "/sub/nope.png" }) do
        local res = get(srv, path)
        assert.are.same({ 404, "not_found" }, { res.status, h.host.json.decode(res.body).error }, path)
      end
    end)

    it("leaves /api, /auth, /healthz and /metrics to the routes", function()
      local api = get(srv, "/api/no/such")
      assert.are.same({ 404, "not_found", "no such endpoint" },
        { api.status, h.host.json.decode(api.body).error, h.host.json.decode(api.body).message })
      assert.are.equal("unauthenticated", h.host.json.decode(get(srv, "/api/me").body).error)
      -- empty segments do not hide an API path from the router (it ignores them too)
      assert.are.equal("unauthenticated", h.host.json.decode(get(srv, "//api/me").body).error)
      assert.are.equal(404, get(srv, "/auth/nothing").status)
      assert.are.equal("ok", h.host.json.decode(get(srv, "/healthz").body).status)
    end)

    it("leaves other methods on app paths to the routes", function()
      local res = get(srv, "/dashboard", nil, "POST")
      assert.are.same({ 404, "not_found" }, { res.status, h.host.json.decode(res.body).error })
    end)
  end)

  describe("confinement to the root", function()
    local attempts = {
      "/../outside.txt", "/sub/../../outside.txt", "/%2e%2e/outside.txt", "/%2E%2E/outside.txt",
      "/..%2foutside.txt", "/sub%2f..%2f..%2foutside.txt", "/sub/%2e%2e%2f%2e%2e%2foutside.txt",
      "/out.txt", "/abs.txt", "/up/outside.txt", "/up/web/app.js",
      "/.env", "/sub/../.env", "/%2eenv", "/./app.js",
    }
    it("answers 404 to every attempt to leave it, raw or encoded", function()
      for _, path in ipairs(attempts) do
        local status, body = raw_get(srv, path)
        assert.are.same({ 404, false }, { status, body:find(SECRET, 1, true) ~= nil }, path)
        assert.are.equal("not_found", h.host.json.decode(body).error, path)
      end
    end)

    it("refuses a %00 anywhere in the path with 400 before any file is looked at", function()
      for _, path in ipairs({ "/index.html%00.png", "/app.js%00", "/%00" }) do
        local status, body = raw_get(srv, path)
        assert.are.same({ 400, false }, { status, body:find(SECRET, 1, true) ~= nil }, path)
        assert.are.equal("bad_request", h.host.json.decode(body).error, path)
      end
    end)

    it("never lists a folder", function()
      local res = get(srv, "/sub/deeper/")
      assert.are.same({ 200, INDEX }, { res.status, res.body })
    end)
  end)

  describe("security headers", function()
    it("puts a strict CSP, nosniff and a referrer policy on the app's answers", function()
      for _, path in ipairs({ "/", "/dashboard", "/app.js", "/logo.svg", "/missing.js" }) do
        local res = get(srv, path)
        assert.are.same({ CSP, "nosniff", "strict-origin-when-cross-origin" },
          { res.headers["content-security-policy"], res.headers["x-content-type-options"],
            res.headers["referrer-policy"] }, path)
      end
    end)

    it("puts nosniff and a deny-all CSP on the API's JSON", function()
      for _, path in ipairs({ "/healthz", "/api/me", "/api/no/such" }) do
        local res = get(srv, path)
        assert.are.same({ "default-src 'none'; frame-ancestors 'none'", "nosniff", "strict-origin-when-cross-origin" },
          { res.headers["content-security-policy"], res.headers["x-content-type-options"],
            res.headers["referrer-policy"] }, path)
      end
    end)
  end)

  describe("configuration", function()
    it("serves <root>/web by default", function()
      local root = h.temp_root()
      sh("mkdir -p " .. h.shell_quote(root .. "/web"))
      h.write_file(root .. "/web/index.html", INDEX)
      local own = h.start_server({ root = root })
      local ok, res = pcall(get, own, "/library")
      own:stop()
      assert.is_true(ok, res)
      assert.are.same({ 200, INDEX }, { res.status, res.body })
    end)

    it("refuses a cover host that would inject a directive", function()
      local code, out = h.run("env SHELFSYNC_COVER_IMAGE_HOSTS=" .. h.shell_quote("https://a.example; script-src *")
        .. " " .. h.shell_quote(h.binary) .. " config")
      assert.are_not.equal(0, code)
      assert.matches("cover_image_hosts%[1%]", out)
    end)
  end)

  describe("hot edits", function()
    it("shows an edited, added or removed file on the next request", function()
      local before = get(srv, "/app.js")
      h.write_file(web .. "/app.js", "export const answer = 43;\n")
      local after = get(srv, "/app.js", { ["If-None-Match"] = before.headers["etag"] })
      assert.are.same({ 200, "export const answer = 43;\n" }, { after.status, after.body })
      assert.are_not.equal(before.headers["etag"], after.headers["etag"])

      h.write_file(web .. "/fresh.js", "export default 1;\n")
      assert.are.equal("export default 1;\n", get(srv, "/fresh.js").body)
      os.remove(web .. "/fresh.js")
      assert.are.equal(404, get(srv, "/fresh.js").status)

      h.write_file(web .. "/index.html", "<!doctype html><title>v2</title>\n")
      assert.are.equal("<!doctype html><title>v2</title>\n", get(srv, "/settings").body)
      h.write_file(web .. "/index.html", INDEX)
    end)

    it("leaves every path to the routes while the web root is missing", function()
      sh("mv " .. h.shell_quote(web) .. " " .. h.shell_quote(web .. ".away"))
      local ok, res = pcall(get, srv, "/")
      sh("mv " .. h.shell_quote(web .. ".away") .. " " .. h.shell_quote(web))
      assert.is_true(ok, res)
      assert.are.same({ 404, "no such endpoint" }, { res.status, h.host.json.decode(res.body).message })
      assert.are.equal(INDEX, get(srv, "/").body)
    end)
  end)
end)
