/*
** conf: the one configuration, read from config.lua and overridden by the environment.
** Every key is declared once, in conf.c's conf_keys (type, bounds, whether C reads it,
** whether it is secret); its default and comment are in config.lua. Every key can be
** overridden by SHELFSYNC_<UPPER_SNAKE>; database_url also answers to DATABASE_URL.
*/
#ifndef SHELFSYNC_CONF_H
#define SHELFSYNC_CONF_H

#include <stddef.h>

struct conf {
    char listen_host[64];
    int listen_port;
    int workers;
    int import_workers; /* a lane of their own for large-body routes (imports) */
    int connection_limit;
    int connection_timeout_s;
    size_t max_body_bytes;        /* a route's default body_limit (a path no route has) */
    size_t max_url_bytes;         /* request target as sent (414 over it) */
    size_t max_header_bytes;      /* all header names + values (431 over it) */
    size_t drain_max_bytes;       /* a refused body is read and dropped up to this past its limit */
    int drain_timeout_s;          /* ... and for at most this long, then the answer (or a cut) */
    size_t max_buffered_bytes;    /* request bodies held at once, all connections: over it, 503 */
    int max_connections_per_address; /* behind a trusted proxy: requests in flight per client */
    int header_timeout_s; /* a request's header fields (or a kept-alive connection's next request) */
    size_t min_body_rate;         /* bytes/s a body must average past its first seconds */
    long instruction_limit;       /* Lua VM instructions per request */
    long instructions_per_body_byte; /* ... plus this many per byte of (inflated) body */
    int statement_timeout_ms;
    int prepared_statements; /* per database connection; 0: none (transaction-mode pooler) */
    int shutdown_grace_s;
    int cleanup_interval_s;
    int migrate_on_start;
    int local_mode;
    int dev_login;
    char *database_url;           /* owned */
    char *secret;                 /* owned */
    char *public_url;             /* owned */
    char *root;                   /* owned: folder holding lua/, routes/, sql/ */
    char *log_level;              /* owned */
    char *web_root;               /* owned: absolute; the web app's files (may not exist) */
    char *cover_image_hosts;      /* owned: space-separated CSP sources for img-src */
    char *trusted_proxies;        /* owned: comma-separated addresses / CIDR blocks, "" for none */
    char *json;                   /* owned: the whole resolved table as JSON, for host.config */
    char *json_redacted;          /* owned: the same with every secret replaced by "(set)" */
    /* Title metadata enrichment (core/enrich.c); every metadata_* key is in conf.c's conf_keys. */
    char *metadata_provider_url;  /* owned; "" disables enrichment */
    int metadata_concurrency;     /* fetches in flight per instance */
    int metadata_rate_per_s;      /* fetches started per second per instance */
    int metadata_timeout_ms;      /* one fetch, in total */
    size_t metadata_max_bytes;    /* a larger answer is refused */
    int metadata_circuit_failures;/* consecutive failures that open the circuit */
    int metadata_circuit_open_ms; /* how long it stays open before one probe */
    int metadata_poll_ms;         /* how often an idle fetcher looks at the queue */
    int metadata_lease_s;         /* how long a claimed title is kept from other instances */
};

/*
** Load config from `path` (NULL: <root>/config.lua), apply env overrides, resolve the secret
** (generated once under var/ in local mode) and check what the server needs.
** Returns 0 and fills *c (release with conf_free), or -1 with a message in err.
*/
#define CONF_NO_SECRET 1   /* flags: a command that signs nothing (check, migrate) */
int conf_load(struct conf *c, const char *path, int flags, char *err, size_t errlen);
void conf_free(struct conf *c);

#endif
