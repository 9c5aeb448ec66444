/*
** scripts.c: snapshots of the script tree.
*/
#include "scripts.h"

#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "routes.h"

#define MAX_DEPTH 4

static int add_file(struct scripts *s, size_t *cap, const char *path, const char *rel,
                    char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read", rel);
        return -1;
    }
    char *text = NULL;
    size_t len = 0, tcap = 0, n;
    char buf[16384];
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (len + n > tcap) {
            tcap = (len + n) * 2;
            char *grown = realloc(text, tcap);
            if (!grown)
                goto oom;
            text = grown;
        }
        memcpy(text + len, buf, n);
        len += n;
    }
    fclose(f);
    f = NULL;
    if (s->n == *cap) {
        *cap = *cap ? *cap * 2 : 32;
        struct scripts_file *grown = realloc(s->files, *cap * sizeof *grown);
        if (!grown)
            goto oom;
        s->files = grown;
    }
    s->files[s->n].rel = strdup(rel);
    s->files[s->n].text = text;
    s->files[s->n].len = len;
    if (!s->files[s->n].rel)
        goto oom;
    s->n++;
    return 0;
oom:
    if (f)
        fclose(f);
    free(text);
    snprintf(err, errlen, "out of memory reading %s", rel);
    return -1;
}

static int walk(struct scripts *s, size_t *cap, const char *root, const char *rel, int depth,
                char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    DIR *d = opendir(path);
    if (!d)
        return 0;           /* a missing routes/ is an empty one */
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char sub[1024], full[4200];
        snprintf(sub, sizeof sub, "%s/%s", rel, e->d_name);
        snprintf(full, sizeof full, "%s/%s", root, sub);
        struct stat st;
        if (stat(full, &st) != 0)
            continue;
        size_t n = strlen(e->d_name);
        if (S_ISDIR(st.st_mode) && depth < MAX_DEPTH)
            rc = walk(s, cap, root, sub, depth + 1, err, errlen);
        else if (S_ISREG(st.st_mode) && n > 4 && !strcmp(e->d_name + n - 4, ".lua"))
            rc = add_file(s, cap, full, sub, err, errlen);
    }
    closedir(d);
    return rc;
}

static int by_rel(const void *a, const void *b)
{
    return strcmp(((const struct scripts_file *)a)->rel, ((const struct scripts_file *)b)->rel);
}

struct scripts *scripts_load(const char *root, char *err, size_t errlen)
{
    struct scripts *s = calloc(1, sizeof *s);
    size_t cap = 0;
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->refs = 1;
    if (walk(s, &cap, root, "lua", 0, err, errlen) < 0 ||
        walk(s, &cap, root, "routes", 0, err, errlen) < 0) {
        scripts_unref(s);
        return NULL;
    }
    if (s->n)
        qsort(s->files, s->n, sizeof *s->files, by_rel);
    return s;
}

const struct scripts_file *scripts_find(const struct scripts *s, const char *rel)
{
    struct scripts_file key = {.rel = (char *)rel};
    return s->n ? bsearch(&key, s->files, s->n, sizeof key, by_rel) : NULL;
}

void scripts_ref(struct scripts *s)
{
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_SEQ_CST);
}

void scripts_unref(struct scripts *s)
{
    if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_SEQ_CST) > 0)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->files[i].rel);
        free(s->files[i].text);
    }
    free(s->files);
    routes_table_free(s->routes);
    free(s);
}
