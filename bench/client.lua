-- bench/client.lua: what the bench scripts say to a running server over HTTP.
--
--   local client = require("bench.client")(url)
--   local cookie = client.login("a@bench.example")   -- a dev-login session cookie
--   local ms, answer = client.sync(cookie, body)      -- one timed import (token fetched first)
--   local res = client.request("GET", "/api/me", {headers = ...})
local host = require("host")

local encode, decode = host.json.encode, host.json.decode

return function(url)
  local client = {}

  function client.request(method, path, opts)
    opts = opts or {}
    local res, err = host.http.request{
      method = method, url = url .. path, headers = opts.headers or {}, body = opts.body,
      timeout_ms = 120000,
    }
    assert(res, err)
    return res
  end
  local request = client.request

  function client.login(email)
    local res = request("POST", "/auth/dev/login", {
      headers = { ["Content-Type"] = "application/json", Origin = url },
      body = encode({ email = email, name = email:match("^[^@]+") }),
    })
    assert(res.status == 200, "dev login failed: " .. res.status .. " " .. res.body)
    for _, c in ipairs(res.cookies or {}) do
      local name, value = c:match("^%s*([^=;]+)=([^;]*)")
      if name == "shelfsync_session" then return name .. "=" .. value end
    end
    error("no session cookie")
  end

  function client.token(cookie)
    local res = request("POST", "/api/sync/token", { headers = { Cookie = cookie, Origin = url } })
    assert(res.status == 200, "token: " .. res.status .. " " .. res.body)
    return decode(res.body).token
  end

  -- One timed import, from the request's first byte to the answer's last; returns ms and
  -- the decoded answer.
  function client.sync(cookie, body)
    local tok = client.token(cookie)
    local t0 = host.clock_ms()
    local res = request("POST", "/api/sync/import", {
      headers = { Authorization = "Bearer " .. tok, ["Content-Type"] = "application/json" },
      body = body,
    })
    local ms = host.clock_ms() - t0
    assert(res.status == 200, "import: " .. res.status .. " " .. res.body:sub(1, 500))
    return ms, decode(res.body)
  end

  return client
end
