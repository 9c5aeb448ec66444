-- The production shape: Debian's nginx with docker/nginx/shelfsync.conf (the file compose
-- mounts; only its addresses are rewritten) in front of shelfsync, over TLS on loopback.
-- The framing attacks are replayed through it, and a sync goes through it.
local h = require("spec.support.helpers")

local CONF = h.root .. "/docker/nginx/shelfsync.conf"

-- The shipped file with the test's addresses: each rewrite must apply exactly once, so a
-- change to the file that the spec would no longer cover fails here.
local function rewrite(text, app_port, http_port, tls_port, dir)
  local rules = {
    { "server app:8080;", "server 127.0.0.1:" .. app_port .. ";" },
    { "listen 80;", "listen 127.0.0.1:" .. http_port .. ";" },
    { "listen 443 ssl http2;", "listen 127.0.0.1:" .. tls_port .. " ssl http2;" },
    { "/etc/nginx/tls/fullchain.pem", dir .. "/tls/fullchain.pem" },
    { "/etc/nginx/tls/privkey.pem", dir .. "/tls/privkey.pem" },
  }
  for _, r in ipairs(rules) do
    local from = r[1]:gsub("%p", "%%%0")
    local n
    text, n = text:gsub(from, (r[2]:gsub("%%", "%%%%")))
    assert(n == 1, "docker/nginx/shelfsync.conf: expected one `" .. r[1] .. "`, found " .. n)
  end
  return text
end

local function start_nginx(srv)
  local dir = h.test_dir .. "/nginx-" .. tostring(h.host.clock_ms())
  local p1, p2 = h.free_port(), h.free_port()
  assert(h.exec("mkdir -p " .. dir .. "/tls " .. dir .. "/tmp"))
  local code, out = h.run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost"
    .. " -keyout " .. dir .. "/tls/privkey.pem -out " .. dir .. "/tls/fullchain.pem")
  assert(code == 0, out)
  h.write_file(dir .. "/shelfsync.conf", rewrite(assert(h.read_file(CONF)), srv.port, p1, p2, dir))
  h.write_file(dir .. "/nginx.conf", ([[
daemon off;
worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path DIR/tmp/body;
  proxy_temp_path DIR/tmp/proxy;
  include DIR/shelfsync.conf;
}
]]):gsub("DIR", dir))
  -- nginx's workers run as nobody when started by root.
  assert(h.exec("chmod -R a+rwX " .. dir))
  h.exec("nginx -p " .. dir .. " -c " .. dir .. "/nginx.conf >" .. dir .. "/stderr 2>&1 &")
  local ngx = { dir = dir, tls_port = p2, http_port = p1 }
  local ok = pcall(h.wait_until, function() return h.read_file(dir .. "/nginx.pid") end, 10)
  assert(ok, "nginx did not start: " .. (h.read_file(dir .. "/stderr") or "") .. (h.read_file(dir .. "/error.log") or ""))
  function ngx.stop()
    local pid = (h.read_file(dir .. "/nginx.pid") or ""):match("%d+")
    if pid then h.exec("kill -QUIT " .. pid) end
  end
  return ngx
end

-- Raw bytes over TLS (openssl s_client), until nginx closes or 6 s pass.
local function tls_raw(ngx, bytes)
  local file = ngx.dir .. "/req-" .. tostring(h.host.clock_ms())
  h.write_file(file, bytes)
  local _, out = h.run("timeout 6 openssl s_client -quiet -connect 127.0.0.1:" .. ngx.tls_port
    .. " -servername localhost < " .. file .. " 2>/dev/null")
  local statuses = {}
  for code in out:gmatch("HTTP/1%.1 (%d%d%d)") do statuses[#statuses + 1] = tonumber(code) end
  return { text = out, statuses = statuses, json = h.host.json.decode(out:match("\r\n\r\n(%b{})") or "null") }
end

local function curl(args)
  local code, out = h.run("curl -sk --max-time 20 -w '\\n%{http_code}' " .. args)
  assert(code == 0, out)
  local body, status = out:match("^(.*)\n(%d+)$")
  return tonumber(status), body
end

describe("behind nginx (docker/nginx/shelfsync.conf)", function()
  local srv, ngx
  setup(function()
    h.reset_db()
    srv = h.start_server{ env = { SHELFSYNC_TRUSTED_PROXIES = "127.0.0.1" } }
    ngx = start_nginx(srv)
    h.wait_until(function()
      local ok, status = pcall(curl, "https://127.0.0.1:" .. ngx.tls_port .. "/healthz")
      return ok and status == 200
    end, 10, "nginx to proxy /healthz")
  end)
  teardown(function()
    if ngx then ngx.stop() end
    if srv then srv:stop() end
  end)

  local SMUGGLED = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
  local function post(fields, rest)
    return "POST /api/me HTTP/1.1\r\nHost: x\r\n" .. table.concat(fields, "\r\n") .. "\r\n\r\n" .. rest
  end

  it("refuses the framing attacks before they reach shelfsync, in the API's error shape", function()
    for _, case in ipairs({
      { post({ "Content-Length: 40", "Transfer-Encoding: chunked" }, "0\r\n\r\n" .. SMUGGLED), 400, "bad_request" },
      { post({ "Content-Length: 0", "Content-Length: 35" }, SMUGGLED), 400, "bad_request" },
      { post({ "Content-Length : 35" }, SMUGGLED), 400, "bad_request" },
      { post({ "Transfer-Encoding: gzip" }, "abc"), 501, "unsupported_transfer_encoding" },
      { "GET /healthz%00/x HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request" },
    }) do
      local res = tls_raw(ngx, case[1])
      assert.same({ case[2] }, res.statuses, res.text)
      assert.equal(case[3], res.json and res.json.error, res.text)
    end
  end)

  it("refuses a body over the route's limit with a JSON 413 of its own", function()
    local big = ngx.dir .. "/big.json"
    h.write_file(big, string.rep("x", 2 * 1024 * 1024))
    local status, body = curl("-X POST --data-binary @" .. big .. " -H 'Content-Type: application/json' https://127.0.0.1:"
      .. ngx.tls_port .. "/api/lists")
    assert.equal(413, status)
    assert.equal("payload_too_large", h.host.json.decode(body).error)
  end)

  it("carries a sync: token from shelfsync, import through the proxy, library written", function()
    local c = h.login(srv, "proxied@example.com", "Proxied")
    local token = c:post("/api/sync/token", {}).json.token
    local items = {}
    for i = 1, 3000 do
      items[i] = { asin = string.format("B0%08d", i), title = "Title " .. i, source = "LIBRARY",
                   authors = { "Author " .. (i % 50) }, summary = string.rep("s", 200) }
    end
    local file = ngx.dir .. "/sync.json"
    h.write_file(file, h.host.json.encode({ titles = items }))   -- ~1.3 MB: over the default body limit
    local status, body = curl("-X POST --data-binary @" .. file .. " -H 'Content-Type: application/json'"
      .. " -H 'Authorization: Bearer " .. token .. "' https://127.0.0.1:" .. ngx.tls_port .. "/api/sync/import")
    assert.equal(200, status, body)
    assert.equal(3000, h.host.json.decode(body).imported)
    assert.equal(3000, h.one("SELECT count(*) AS n FROM user_library WHERE user_id = $1", c.user.id).n)
  end)

  it("forwards plain HTTP to HTTPS, except the health probe", function()
    local status = curl("http://127.0.0.1:" .. ngx.http_port .. "/api/me")
    assert.equal(308, status)
    status = curl("http://127.0.0.1:" .. ngx.http_port .. "/healthz")
    assert.equal(200, status)
  end)
end)
