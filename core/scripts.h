/*
** scripts: an immutable, reference-counted snapshot of the Lua sources under lua/ and
** routes/. The reload watcher reads the tree once, builds a VM from the snapshot to check
** it, and only then publishes it; workers build their VMs from the published snapshot, so
** a worker can never load a file that changed (or broke) after the check.
*/
#ifndef SHELFSYNC_SCRIPTS_H
#define SHELFSYNC_SCRIPTS_H

#include <stddef.h>

struct scripts_file {
    char *rel;          /* "routes/sync.lua" */
    char *text;
    size_t len;
};

struct routes_table;

struct scripts {
    unsigned long generation;
    struct routes_table *routes;    /* owned; set by reload.c once the snapshot passed its check */
    int refs;           /* guarded by scripts_ref / scripts_unref */
    size_t n;
    struct scripts_file *files;     /* sorted by rel */
};

/* Reads root/lua and root/routes (recursively, *.lua). NULL with err on failure.
   The result has one reference, owned by the caller. */
struct scripts *scripts_load(const char *root, char *err, size_t errlen);

/* The file with that relative path, or NULL. */
const struct scripts_file *scripts_find(const struct scripts *s, const char *rel);

void scripts_ref(struct scripts *s);
void scripts_unref(struct scripts *s);   /* frees on the last reference; NULL is fine */

#endif
