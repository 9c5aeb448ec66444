-- The deployment files: no Docker engine runs here, but the compose file must parse and
-- the Dockerfile must ship what the server needs at run time.
local h = require("spec.support.helpers")

describe("docker/", function()
  it("has a compose file that docker-compose accepts, wiring the app to postgres:15", function()
    local code, out = h.run("cd " .. h.root .. " && SHELFSYNC_SECRET=x docker-compose -f docker/compose.yml config")
    assert.are.equal(0, code, out)
    assert.matches("image: postgres:15", out, 1, true)
    assert.matches("DATABASE_URL: postgresql://shelfsync:shelfsync@db:5432/shelfsync", out, 1, true)
  end)

  it("puts nginx with docker/nginx/shelfsync.conf in front, the app trusting only its network", function()
    local code, out = h.run("cd " .. h.root .. " && SHELFSYNC_SECRET=x docker-compose -f docker/compose.yml config")
    assert.are.equal(0, code, out)
    assert.matches("docker/nginx/shelfsync.conf:/etc/nginx/conf.d/default.conf:ro", out, 1, true)
    assert.matches("SHELFSYNC_TRUSTED_PROXIES: 172.28.0.0/24", out, 1, true)
    assert.matches("subnet: 172.28.0.0/24", out, 1, true)
    assert.is_nil(out:find("8080:8080", 1, true), "the app must not be published past nginx")
  end)

  it("refuses to compose without a secret", function()
    local code, out = h.run("cd " .. h.root .. " && env -u SHELFSYNC_SECRET docker-compose -f docker/compose.yml config")
    assert.are_not.equal(0, code)
    assert.matches("SHELFSYNC_SECRET", out, 1, true)
  end)

  it("builds in one stage and runs as a non-root user with the scripts and migrations", function()
    local text = h.read_file(h.root .. "/docker/Dockerfile")
    assert.matches("FROM debian:12%-slim AS build", text)
    assert.matches("\nUSER shelfsync\n", text)
    for _, dir in ipairs({ "lua", "routes", "sql" }) do
      assert.matches("COPY " .. dir .. " ./" .. dir, text, 1, true)
    end
    -- The web app, with the UI library scripts/web-vendor.sh copies (web/vendor is not
    -- committed).
    assert.matches("RUN bash scripts/web-vendor.sh", text, 1, true)
    assert.matches("COPY --from=web /src/web ./web", text, 1, true)
  end)
end)
