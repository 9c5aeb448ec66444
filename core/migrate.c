/*
** migrate.c: applies sql/NNN_*.sql migrations.
**
** The runner owns schema_migrations (filename text primary key, checksum text:
** the SHA-256 of the file's bytes in hex, applied_at timestamptz). A run:
**   1. takes pg_advisory_lock(MIGRATE_LOCK_KEY) on its own connection, so a
**      second instance starting at the same time waits, then finds nothing to do;
**   2. lists sql_dir/[0-9][0-9][0-9]_*.sql in name order (two files with one
**      number are refused);
**   3. refuses to go on if a file already applied has a different checksum now
**      (an applied migration must never change: add a new file instead);
**   4. refuses to go on if a pending file is numbered at or below the highest
**      applied one (it would run last here, in number order on a fresh database:
**      two orders for one schema, sql/README.md), so nothing of such a run is
**      applied; a number nobody ever wrote (002) is no such file;
**   5. applies each pending file in its own transaction, together with its
**      schema_migrations row: all of it or nothing.
**
** A file is split into statements by a small lexer that knows quotes, E''
** strings, quoted identifiers, dollar quotes, nested comments and BEGIN ATOMIC
** bodies, and the statements are sent one by one inside BEGIN ... COMMIT. So a
** failure names the exact statement, and its line is the statement's first
** line plus the server's error position when the server gives one. A file may
** not contain transaction control (BEGIN, COMMIT, ...): it would end the
** runner's transaction early and break the all-or-nothing rule.
*/
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <libpq-fe.h>

#include "crypto.h"
#include "log.h"
#include "migrate.h"

/* "shlfsync" as a 64-bit integer: one lock shared by every shelfsync instance. */
#define MIGRATE_LOCK_KEY "8316015899219422819"
#define MIGRATE_MAX_FILE (64u << 20)

struct stmt {
    size_t start, len;   /* the statement's bytes, from its first token to its ';' */
    int line;            /* 1-based line of its first token */
    char word[2][16];    /* its first two words, lowercased ("" if none) */
};

struct stmts {
    struct stmt *v;
    size_t n, cap;
};

struct migration {
    char name[256];
    char checksum[2 * CRYPTO_SHA256_LEN + 1];
    char *text;          /* the file's bytes, NUL-terminated */
    size_t len;
    int applied;         /* recorded in schema_migrations */
};

/* ---------------------------------------------------------- splitting */

static int ident_start(unsigned char c)
{
    return isalpha(c) || c == '_' || c >= 0x80;
}

static int ident_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '$' || c >= 0x80;
}

static int stmts_push(struct stmts *out, const struct stmt *s)
{
    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 64;
        struct stmt *v = realloc(out->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        out->v = v;
        out->cap = cap;
    }
    out->v[out->n++] = *s;
    return 0;
}

/* True when the statement so far starts CREATE [OR REPLACE] FUNCTION|PROCEDURE. */
static int is_routine(char words[4][16], int nwords)
{
    if (nwords < 2 || strcmp(words[0], "create") != 0)
        return 0;
    if (!strcmp(words[1], "function") || !strcmp(words[1], "procedure"))
        return 1;
    return nwords >= 4 && !strcmp(words[1], "or") && !strcmp(words[2], "replace") &&
           (!strcmp(words[3], "function") || !strcmp(words[3], "procedure"));
}

/*
** Splits s[0..n) into statements. Returns 0, or -1 with a message in err
** (an unterminated quote or comment, or out of memory).
*/
static int split_sql(const char *s, size_t n, struct stmts *out, char *err, size_t errlen)
{
    size_t i = 0;
    int line = 1, paren = 0, begin = 0, nwords = 0, have = 0;
    char words[4][16];
    struct stmt cur;

    memset(&cur, 0, sizeof(cur));
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        int open_line = line;

        if (c == '\n') {
            line++;
            i++;
            continue;
        }
        if (isspace(c)) {
            i++;
            continue;
        }
        if (c == '-' && i + 1 < n && s[i + 1] == '-') {
            while (i < n && s[i] != '\n')
                i++;
            continue;
        }
        if (c == '/' && i + 1 < n && s[i + 1] == '*') {
            int depth = 1;
            for (i += 2; i < n && depth > 0;) {
                if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
                    depth++;
                    i += 2;
                } else if (s[i] == '*' && i + 1 < n && s[i + 1] == '/') {
                    depth--;
                    i += 2;
                } else {
                    line += s[i++] == '\n';
                }
            }
            if (depth > 0) {
                snprintf(err, errlen, "unterminated /* comment starting at line %d", open_line);
                return -1;
            }
            continue;
        }
        if (!have) {  /* the first token of a statement */
            memset(&cur, 0, sizeof(cur));
            cur.start = i;
            cur.line = line;
            have = 1;
        }
        if (c == ';') {
            i++;
            if (paren > 0 || begin > 0)
                continue;
            cur.len = i - cur.start;
            if (stmts_push(out, &cur) < 0)
                goto oom;
            have = 0;
            paren = begin = nwords = 0;
            continue;
        }
        if (c == '(' || c == ')') {
            paren += c == '(' ? 1 : (paren > 0 ? -1 : 0);
            i++;
            continue;
        }
        if (c == '\'' || c == '"') {
            for (i++; i < n; i++) {
                if (s[i] == (char)c) {
                    if (i + 1 < n && s[i + 1] == (char)c) {
                        i++;
                        continue;
                    }
                    break;
                }
                line += s[i] == '\n';
            }
            if (i >= n) {
                snprintf(err, errlen, "unterminated %s starting at line %d",
                         c == '"' ? "quoted identifier" : "string", open_line);
                return -1;
            }
            i++;
            continue;
        }
        if (c == '$') {
            size_t j = i + 1, taglen;
            const char *close = NULL;
            if (j < n && ident_start((unsigned char)s[j]) && !isdigit((unsigned char)s[j]))
                while (j < n && ident_char((unsigned char)s[j]) && s[j] != '$')
                    j++;
            if (j >= n || s[j] != '$') {  /* $1 and the like */
                i++;
                continue;
            }
            taglen = j + 1 - i;
            for (size_t k = j + 1; k + taglen <= n; k++) {
                if (s[k] == '$' && memcmp(s + k, s + i, taglen) == 0) {
                    close = s + k;
                    break;
                }
            }
            if (close == NULL) {
                snprintf(err, errlen, "unterminated dollar-quoted string starting at line %d",
                         open_line);
                return -1;
            }
            for (const char *p = s + j + 1; p < close; p++)
                line += *p == '\n';
            i = (size_t)(close - s) + taglen;
            continue;
        }
        if (ident_start(c)) {
            size_t j = i, wl;
            char w[16];
            while (j < n && ident_char((unsigned char)s[j]))
                j++;
            wl = j - i;
            if (wl == 1 && (c == 'E' || c == 'e') && j < n && s[j] == '\'') {
                /* E'...': backslash escapes, and '' too */
                for (i = j + 1; i < n; i++) {
                    if (s[i] == '\\' && i + 1 < n) {
                        line += s[++i] == '\n';
                        continue;
                    }
                    if (s[i] == '\'') {
                        if (i + 1 < n && s[i + 1] == '\'') {
                            i++;
                            continue;
                        }
                        break;
                    }
                    line += s[i] == '\n';
                }
                if (i >= n) {
                    snprintf(err, errlen, "unterminated string starting at line %d", open_line);
                    return -1;
                }
                i++;
                continue;
            }
            for (size_t k = 0; k < sizeof(w); k++)
                w[k] = k < wl && k < sizeof(w) - 1 ? (char)tolower((unsigned char)s[i + k]) : '\0';
            if (wl >= sizeof(w))
                w[0] = '\0';  /* too long to be a keyword we look for */
            if (nwords < 2)
                memcpy(cur.word[nwords], w, sizeof(w));
            if (nwords < 4)
                memcpy(words[nwords], w, sizeof(w));
            nwords++;
            /* BEGIN ATOMIC ... END bodies of SQL functions hold semicolons;
            ** CASE ... END inside them nests. */
            if (paren == 0 && is_routine(words, nwords < 4 ? nwords : 4)) {
                if (!strcmp(w, "begin"))
                    begin++;
                else if (!strcmp(w, "case") && begin > 0)
                    begin++;
                else if (!strcmp(w, "end") && begin > 0)
                    begin--;
            }
            i = j;
            continue;
        }
        i++;  /* numbers, operators, other punctuation */
    }
    if (have) {
        cur.len = n - cur.start;
        if (stmts_push(out, &cur) < 0)
            goto oom;
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

/* Transaction control in a migration would end the runner's transaction. */
static int is_tx_control(const struct stmt *st)
{
    static const char *const words[] = {"begin", "start", "commit", "end", "abort", NULL};
    for (int i = 0; words[i]; i++)
        if (!strcmp(st->word[0], words[i]))
            return 1;
    return !strcmp(st->word[0], "rollback") && strcmp(st->word[1], "to") != 0;
}

/* The statement with blanks collapsed, cut to about 100 bytes, for messages. */
static void excerpt(const char *s, size_t len, char *out, size_t outlen)
{
    size_t o = 0, limit = outlen > 104 ? 100 : outlen - 4;
    int space = 0;

    for (size_t i = 0; i < len && o < limit; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isspace(c)) {
            space = o > 0;
            continue;
        }
        if (space && o < limit)
            out[o++] = ' ';
        space = 0;
        out[o++] = (char)c;
    }
    if (o >= limit) {
        while (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0x80)
            o--;  /* do not cut a UTF-8 sequence */
        if (o > 0 && (unsigned char)out[o - 1] >= 0xC0)
            o--;
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* The file line of the server's error position (1-based characters into st). */
static int position_line(const char *text, const struct stmt *st, int position)
{
    int line = st->line, chars = 0;
    for (size_t i = st->start; i < st->start + st->len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c & 0xC0) != 0x80 && ++chars >= position)
            break;
        line += c == '\n';
    }
    return line;
}

/* ------------------------------------------------------------- files */

static int migration_name_ok(const char *name)
{
    size_t n = strlen(name);
    return n > 8 && isdigit((unsigned char)name[0]) && isdigit((unsigned char)name[1]) &&
           isdigit((unsigned char)name[2]) && name[3] == '_' &&
           strcmp(name + n - 4, ".sql") == 0 && n < sizeof(((struct migration *)0)->name);
}

/* A valid migration name's number, its first three digits. */
static int migration_number(const char *name)
{
    return (name[0] - '0') * 100 + (name[1] - '0') * 10 + (name[2] - '0');
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(((const struct migration *)a)->name, ((const struct migration *)b)->name);
}

static void migrations_free(struct migration *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(m[i].text);
    free(m);
}

static int read_file(const char *path, struct migration *m, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    long size = -1;

    if (f == NULL) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        (unsigned long)size > MIGRATE_MAX_FILE) {
        snprintf(err, errlen, "cannot read %s: %s", path,
                 size > 0 ? "larger than 64 MiB" : strerror(errno));
        fclose(f);
        return -1;
    }
    m->text = malloc((size_t)size + 1);
    if (m->text == NULL || fread(m->text, 1, (size_t)size, f) != (size_t)size) {
        snprintf(err, errlen, "cannot read %s: %s", path, m->text ? strerror(errno) : "out of memory");
        fclose(f);
        return -1;
    }
    fclose(f);
    m->text[size] = '\0';
    m->len = (size_t)size;
    crypto_sha256_hex(m->text, m->len, m->checksum);
    return 0;
}

/* Reads every migration file of dir, sorted by name. */
static int list_migrations(const char *dir, struct migration **out, size_t *count, char *err,
                           size_t errlen)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    struct migration *m = NULL;
    size_t n = 0, cap = 0;
    char path[4096];

    if (d == NULL) {
        snprintf(err, errlen, "cannot open the migrations directory %s: %s", dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (!migration_name_ok(de->d_name))
            continue;
        if (n == cap) {
            struct migration *nm = realloc(m, (cap = cap ? cap * 2 : 16) * sizeof(*m));
            if (nm == NULL) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
            m = nm;
        }
        memset(&m[n], 0, sizeof(m[n]));
        snprintf(m[n].name, sizeof(m[n].name), "%s", de->d_name);
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        n++;
        if (read_file(path, &m[n - 1], err, errlen) < 0)
            goto fail;
    }
    closedir(d);
    d = NULL;
    if (n > 0)
        qsort(m, n, sizeof(*m), cmp_names);
    for (size_t i = 1; i < n; i++) {
        if (memcmp(m[i].name, m[i - 1].name, 3) == 0) {
            snprintf(err, errlen, "two migrations share the number %.3s: %s and %s", m[i].name,
                     m[i - 1].name, m[i].name);
            goto fail;
        }
    }
    *out = m;
    *count = n;
    return 0;
fail:
    if (d)
        closedir(d);
    migrations_free(m, n);
    return -1;
}

/*
** Every pending file must come after the highest migration the database records, as it
** would on a fresh database: one checked before anything is applied. Returns 0, or -1
** with a message in err naming the first such file.
*/
static int check_order(const struct migration *files, size_t n, const PGresult *applied, char *err,
                       size_t errlen)
{
    const char *highest = NULL;
    int top, next;

    for (int r = 0; r < PQntuples(applied); r++) {
        const char *name = PQgetvalue(applied, r, 0);
        if (migration_name_ok(name) &&
            (highest == NULL || migration_number(name) > migration_number(highest)))
            highest = name;
    }
    if (highest == NULL)
        return 0;
    top = migration_number(highest);
    next = top + 1;
    for (size_t i = 0; i < n; i++)
        if (migration_number(files[i].name) >= next)
            next = migration_number(files[i].name) + 1;
    for (size_t i = 0; i < n; i++) {
        if (files[i].applied || migration_number(files[i].name) > top)
            continue;
        snprintf(err, errlen,
                 "migration %s is pending but not numbered above %s, the highest migration "
                 "applied to this database: it would run last here and in number order on a "
                 "fresh database (two orders for one schema, see sql/README.md); give it the "
                 "next free number, %03d; nothing was applied",
                 files[i].name, highest, next);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ database */

static const char *current_file = "";

static void notice_log(void *arg, const PGresult *res)
{
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    (void)arg;
    if (sev && msg && strcmp(sev, "NOTICE") != 0 && strcmp(sev, "DEBUG") != 0 &&
        strcmp(sev, "LOG") != 0 && strcmp(sev, "INFO") != 0)
        log_warn("migration %s: %s: %s", current_file, sev, msg);
}

/* Runs sql (no parameters); 0, or -1 with "what: message" in err. */
static int exec_ok(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        char line[512];
        if (m == NULL) {
            size_t k = strcspn(PQerrorMessage(conn), "\n");
            snprintf(line, sizeof(line), "%.*s", (int)(k < 500 ? k : 500), PQerrorMessage(conn));
            m = line;
        }
        snprintf(err, errlen, "%s: %s", what, m);
        PQclear(res);
        return -1;
    }
    PQclear(res);
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/*
** Applies one file in its own transaction. On failure the transaction is
** rolled back and err says where and why.
*/
static int apply(PGconn *conn, struct migration *m, char *err, size_t errlen)
{
    struct stmts st = {NULL, 0, 0};
    char split_err[256];
    const char *vals[2] = {m->name, m->checksum};
    PGresult *res = NULL;
    double t0 = now_ms();
    int rc = -1;

    if (split_sql(m->text, m->len, &st, split_err, sizeof(split_err)) < 0) {
        snprintf(err, errlen, "migration %s: %s; nothing was applied", m->name, split_err);
        goto out;
    }
    for (size_t i = 0; i < st.n; i++) {
        if (is_tx_control(&st.v[i])) {
            snprintf(err, errlen,
                     "migration %s line %d: transaction control (%s) is not allowed: each "
                     "migration already runs in its own transaction; nothing was applied",
                     m->name, st.v[i].line, st.v[i].word[0]);
            goto out;
        }
    }
    current_file = m->name;
    if (exec_ok(conn, "BEGIN", "BEGIN", err, errlen) < 0)
        goto out;
    for (size_t i = 0; i < st.n; i++) {
        struct stmt *s = &st.v[i];
        char saved = m->text[s->start + s->len], ex[128];
        ExecStatusType status;

        m->text[s->start + s->len] = '\0';
        res = PQexec(conn, m->text + s->start);
        m->text[s->start + s->len] = saved;
        status = PQresultStatus(res);
        if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
            PQclear(res);
            res = NULL;
            continue;
        }
        {
            const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
            const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
            int line = pos ? position_line(m->text, s, atoi(pos)) : s->line;
            char connmsg[256];

            if (msg == NULL) {
                size_t k = strcspn(PQerrorMessage(conn), "\n");
                snprintf(connmsg, sizeof(connmsg), "%.*s", (int)(k < 250 ? k : 250),
                         PQerrorMessage(conn));
                msg = connmsg;
            }
            excerpt(m->text + s->start, s->len, ex, sizeof(ex));
            snprintf(err, errlen,
                     "migration %s failed at line %d (statement %zu, line %d: \"%s\"): %s "
                     "[SQLSTATE %s]%s%s; nothing from %s was applied",
                     m->name, line, i + 1, s->line, ex, msg, state ? state : "none",
                     detail ? "; DETAIL: " : "", detail ? detail : "", m->name);
        }
        PQclear(res);
        res = PQexec(conn, "ROLLBACK");
        goto out;
    }
    res = PQexecParams(conn,
                       "INSERT INTO schema_migrations (filename, checksum) VALUES ($1, $2)",
                       2, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        snprintf(err, errlen, "migration %s: cannot record it: %s", m->name,
                 PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
                     ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : "connection lost");
        PQclear(res);
        res = PQexec(conn, "ROLLBACK");
        goto out;
    }
    PQclear(res);
    res = NULL;
    {
        char what[300];
        snprintf(what, sizeof(what), "migration %s: COMMIT", m->name);
        if (exec_ok(conn, "COMMIT", what, err, errlen) < 0)
            goto out;
    }
    log_info("migration %s applied (%zu statements, %.0f ms)", m->name, st.n, now_ms() - t0);
    rc = 0;
out:
    PQclear(res);
    free(st.v);
    current_file = "";
    return rc;
}

int migrate_run(const char *conninfo, const char *sql_dir, char *err, size_t errlen)
{
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname",
                          "client_encoding", NULL};
    const char *vals[] = {"10", "shelfsync-migrate", conninfo, "UTF8", NULL};
    struct migration *files = NULL;
    size_t nfiles = 0;
    PGconn *conn = NULL;
    PGresult *applied = NULL;
    int rc = -1, napplied = 0;

    if (list_migrations(sql_dir, &files, &nfiles, err, errlen) < 0)
        return -1;
    conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        const char *m = conn ? PQerrorMessage(conn) : "out of memory";
        size_t k = strcspn(m, "\n");
        snprintf(err, errlen, "cannot connect to the database: %.*s", (int)(k < 500 ? k : 500), m);
        goto out;
    }
    PQsetNoticeReceiver(conn, notice_log, NULL);
    if (exec_ok(conn, "SET client_min_messages = warning; SET statement_timeout = 0",
                "session setup", err, errlen) < 0 ||
        exec_ok(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", "advisory lock", err,
                errlen) < 0 ||
        exec_ok(conn,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "filename text PRIMARY KEY, checksum text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())",
                "schema_migrations", err, errlen) < 0)
        goto out;
    applied = PQexec(conn, "SELECT filename, checksum FROM schema_migrations");
    if (PQresultStatus(applied) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "reading schema_migrations: %s", PQerrorMessage(conn));
        goto out;
    }
    /* Every applied file must be unchanged before anything new is applied. */
    for (size_t i = 0; i < nfiles; i++) {
        for (int r = 0; r < PQntuples(applied); r++) {
            if (strcmp(PQgetvalue(applied, r, 0), files[i].name) != 0)
                continue;
            if (strcmp(PQgetvalue(applied, r, 1), files[i].checksum) != 0) {
                snprintf(err, errlen,
                         "migration %s was changed after it was applied (sha256 recorded %.12s..., "
                         "file now %.12s...): never edit an applied migration, add a new "
                         "numbered file instead",
                         files[i].name, PQgetvalue(applied, r, 1), files[i].checksum);
                goto out;
            }
            files[i].applied = 1;
        }
    }
    if (check_order(files, nfiles, applied, err, errlen) < 0)
        goto out;
    for (size_t i = 0; i < nfiles; i++) {
        if (files[i].applied)
            continue;
        if (apply(conn, &files[i], err, errlen) < 0)
            goto out;
        napplied++;
    }
    if (napplied == 0)
        log_info("migrations: the database is up to date (%zu files)", nfiles);
    rc = 0;
out:
    PQclear(applied);
    if (conn && PQstatus(conn) == CONNECTION_OK)
        PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
    if (conn)
        PQfinish(conn);
    migrations_free(files, nfiles);
    return rc;
}
