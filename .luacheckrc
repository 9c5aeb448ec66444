-- luacheck (make lint): the Lua as it is written here. Scripts run in the host's sandbox,
-- where `host` is the one global of ours (read-only); long lines are left to the reader.
std = "lua54"
read_globals = { "host" }
max_line_length = false
exclude_files = { "spec/support/oidc/node_modules/", "node_modules/", "var/", "build/", "build-asan/" }

-- Specs run under busted and may change host.config for a module under test.
files["spec/"] = { std = "+busted", globals = { "host" } }
-- The sandbox probes write a global and host on purpose; `missing` is nil on purpose.
files["spec/fixtures/routes/zz_test.lua"] = { ignore = { "111", "121", "122", "221" } }
