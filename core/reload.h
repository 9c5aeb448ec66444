/*
** reload: hot reload of lua/ and routes/. A change (inotify) or reload_request() (SIGHUP)
** builds a scratch VM from the files on disk; only if that succeeds is the generation
** bumped. Workers compare generations at request boundaries and build their own new VM.
** A refused change leaves the generation alone and records its error for /healthz.
*/
#ifndef SHELFSYNC_RELOAD_H
#define SHELFSYNC_RELOAD_H

#include <stddef.h>

struct conf;
struct scripts;

/* Snapshots and checks the tree (a broken tree fails the start), starts the watcher. */
int reload_start(const struct conf *c, char *err, size_t errlen);
void reload_stop(void);
void reload_request(void);                      /* async-signal-safe */
unsigned long reload_generation(void);
struct scripts *reload_current(void);           /* the published snapshot, with a reference for the caller */
void reload_last_error(char *buf, size_t len);  /* "" when the last check passed */
void reload_set_error(const char *msg);         /* a worker's own failed rebuild */

#endif
