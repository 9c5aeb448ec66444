/*
** enrich: the background fetcher that fills the title catalog from an Audnexus-compatible
** metadata provider (issue 12). One thread per process drives libcurl's multi interface:
** bounded concurrency, a start-rate limit, 429 pauses and a circuit breaker live here; the
** queue (claims, retries, parking) and the provider's JSON -> catalog mapping are Lua
** (lua/enrichment.lua, lua/providers/), run in the thread's own VM, rebuilt from the
** published scripts snapshot when the reload generation moves, like a worker's.
*/
#ifndef SHELFSYNC_ENRICH_H
#define SHELFSYNC_ENRICH_H
#include <lua.h>
#include <stddef.h>

struct conf;

/* The circuit as /healthz and /metrics see it. */
enum enrich_state { ENRICH_DISABLED, ENRICH_CLOSED, ENRICH_OPEN, ENRICH_HALF_OPEN };

/*
** Starts the fetcher thread when c->metadata_provider_url is set (else does nothing and the
** state stays ENRICH_DISABLED). c must outlive enrich_stop. Returns 0, or -1 with err.
*/
int enrich_start(const struct conf *c, char *err, size_t errlen);
/* Stops the thread: transfers in flight are abandoned and their leases released. */
void enrich_stop(void);
enum enrich_state enrich_state(void);
/*
** A sync of this process begins (on = 1) or ends (on = 0): while any runs, the fetcher
** starts no fetch, claims nothing and defers its writes (for at most 10 s at a stretch).
** Once none runs, it calls app.enrich_tidy (the database's deferred upkeep) once per end.
** Thread-safe; every begin must be matched by one end.
*/
void enrich_hold(int on);
/* Pushes the host.enrichment table: state() -> "disabled" | "closed" | "open" | "half_open",
   hold(boolean) -> enrich_hold. */
int enrich_luaopen(lua_State *L);
#endif
