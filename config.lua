-- shelfsync configuration. Every key can be overridden by the environment as
-- SHELFSYNC_<UPPER_SNAKE> (lists as comma-separated values, booleans as 1/0);
-- database_url also answers to DATABASE_URL. Empty strings mean "not set".
return {
  -- HTTP
  listen = "127.0.0.1:8080",
  workers = 0,                    -- 0: 2 x cores
  import_workers = 2,             -- imports (large-body routes) run on these, at most this many at once
  connection_limit = 1000,
  connection_timeout_s = 30,
  max_body_bytes = 1048576,       -- a route's default body_limit (a gzip body: after inflating too)
  max_import_bytes = 67108864,    -- the body_limit of POST /api/sync/import (routes/sync.lua)
  import_file_max_bytes = 268435456, -- the body_limit of POST /api/import (routes/import.lua): a library
                                  -- file, counted once inflated (gzip is read as a stream)
  max_url_bytes = 8192,           -- request target as sent: over it, 414 (256..32768)
  max_header_bytes = 32768,       -- all header names + values: over it, 431 (1024..65536)
  drain_max_bytes = 16777216,     -- a body over its limit is read and dropped up to this much more,
  drain_timeout_s = 10,           -- for at most this long, so that the client reads its 413
  max_buffered_bytes = 268435456, -- request bodies held at once, all connections: over it, 503
  max_connections_per_address = 64, -- per client address (behind a trusted proxy: requests in flight)
  trusted_proxies = {},           -- e.g. {"127.0.0.1", "172.16.0.0/12"}: their X-Forwarded-For names the client
  header_timeout_s = 15,          -- a request's header fields, and an idle kept-alive connection
  min_body_rate = 1024,           -- bytes/s a request body must average after its first 5 s
  shutdown_grace_s = 20,          -- SIGTERM: how long in-flight requests may take to finish
  cors_origins = {},              -- cookie routes' cross-origin callers, e.g. {"https://app.example"};
                                  -- the import (Bearer token) is open to every origin without this
  log_level = "info",

  -- Web app (served from disk by the host; see doc/ARCHITECTURE.md)
  web_root = "web",               -- relative to the checkout; missing: app paths get the JSON 404
  cover_image_hosts = {           -- img-src of the app's Content-Security-Policy, besides 'self' data:
    "https://m.media-amazon.com", "https://images-na.ssl-images-amazon.com",
  },

  -- Lua
  instruction_limit = 200000000,  -- VM instructions one request may run before it is stopped,
  instructions_per_body_byte = 32, -- plus this many per byte of its (inflated) body: every
                                  -- payload within max_import_bytes completes

  -- PostgreSQL
  database_url = "",              -- empty: the embedded cluster under var/ (make run / make test)
  statement_timeout_ms = 15000,
  prepared_statements = 256,      -- per connection: a statement run twice is prepared once and
                                  -- reused (least recently used beyond this many: deallocated).
                                  -- 0: off, which a transaction-mode pooler (pgbouncer
                                  -- pool_mode = transaction) needs: it may run each statement
                                  -- on another server session, which lacks the prepared ones
  migrate_on_start = true,

  -- Secrets and identity
  secret = "",                    -- required outside local mode; signs sync tokens and cookies
  public_url = "http://127.0.0.1:8080",
  local_mode = false,             -- set by `make run` / `make test`: embedded database, generated secret

  -- Sign-in
  dev_login = false,              -- POST /auth/dev/login; `make run` turns it on when no Google client is set
  google_client_id = "",
  google_client_secret = "",
  oidc_discovery_url = "https://accounts.google.com/.well-known/openid-configuration",
  oidc_issuers = {"https://accounts.google.com", "accounts.google.com"},
  http_connect_timeout_ms = 3000,
  http_timeout_ms = 10000,
  session_ttl_days = 30,

  -- Sync
  audible_library_url = "https://www.audible.com/library/titles",
  sync_token_ttl_s = 900,
  sync_max_unused_tokens = 10,
  sync_max_titles = 100000,
  sync_warning_cap = 100,
  import_file_max_items = 100000, -- titles one library file may hold (POST /api/import, `shelfsync import`)
  sync_max_failures = 10,         -- failed imports per user within sync_failure_window_s; then 429
  sync_failure_window_s = 300,

  -- Title metadata (issue 12): an Audnexus-compatible provider fills the shared catalog in
  -- the background (GET <url>/books/<asin>?region=<marketplace>). Empty: no enrichment.
  metadata_provider_url = "https://api.audnex.us",
  metadata_marketplace = "us",    -- region of users who chose none: us uk de fr ca au it es jp in
  metadata_refresh_days = 30,     -- a title's metadata older than this is fetched again
  metadata_concurrency = 4,       -- fetches in flight per instance
  metadata_rate_per_s = 5,        -- fetches started per second per instance
  metadata_timeout_ms = 10000,    -- one background fetch
  metadata_lookup_timeout_ms = 4000, -- GET /api/lookup/:asin and POST /api/library ask the provider
  metadata_max_bytes = 1048576,   -- a larger answer is refused (and retried like a failure)
  metadata_max_attempts = 5,      -- failed fetches before a title waits for its refresh date
  metadata_backoff_ms = 30000,    -- first retry delay after a failure; doubles per attempt, with jitter
  metadata_circuit_failures = 5,  -- consecutive failures that stop calls to the provider...
  metadata_circuit_open_ms = 60000, -- ...for this long, then one probe decides
  metadata_poll_ms = 2000,        -- how often an idle instance looks at the queue
  metadata_lease_s = 300,         -- how long a claimed title is kept from other instances

  -- Housekeeping
  cleanup_interval_s = 3600,      -- expired tokens and sessions

  -- Operators
  metrics_token = "",             -- GET /metrics needs "Authorization: Bearer <token>"; empty: loopback only
}
