/*
** web_static.c: the web app's files; see web_static.h for the rules.
**
** Confinement: the root is opened for every request (so a replaced folder is picked up),
** and each file is opened beneath it with openat2(RESOLVE_BENEATH), which the kernel
** refuses for any path, `..` or symlink that would leave the root. Where openat2 is
** missing (ENOSYS: old kernels, strict seccomp) the file's realpath must lie under the
** root's. Before that, the path itself must be plain: no `.`-led segment (this also keeps
** dot files such as .git private), no control byte, no %00.
**
** Caching: nothing is fingerprinted (no build step), so every answer says `no-cache`:
** browsers keep the files but revalidate each use with If-None-Match, and an edit shows on
** the next load. The ETag is the file's inode, size and mtime (ns), `-gz` for the gzip
** variant; the polling thread never has to read a file to answer a 304.
*/
#include "web_static.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "conf.h"
#include "gzip.h"

/* Smaller files gain nothing from gzip; larger ones would hold the polling thread (every
   connection's I/O) while they are compressed: ship a .gz sibling for those. */
#define GZIP_MIN_BYTES 256
#define GZIP_MAX_BYTES (64 << 10)

struct web_static {
    char *root;                 /* absolute */
    char *csp;                  /* the app's Content-Security-Policy */
};

struct mime {
    const char *ext, *type;
    int compressible;
};

static const struct mime MIMES[] = {
    {"html", "text/html; charset=utf-8", 1},
    {"js", "text/javascript; charset=utf-8", 1},
    {"mjs", "text/javascript; charset=utf-8", 1},
    {"css", "text/css; charset=utf-8", 1},
    {"json", "application/json; charset=utf-8", 1},
    {"map", "application/json; charset=utf-8", 1},
    {"webmanifest", "application/manifest+json", 1},
    {"txt", "text/plain; charset=utf-8", 1},
    {"svg", "image/svg+xml", 1},
    {"ico", "image/x-icon", 1},
    {"png", "image/png", 0},
    {"jpg", "image/jpeg", 0},
    {"jpeg", "image/jpeg", 0},
    {"gif", "image/gif", 0},
    {"webp", "image/webp", 0},
    {"avif", "image/avif", 0},
    {"woff2", "font/woff2", 0},
    {"woff", "font/woff", 0},
};
static const struct mime MIME_UNKNOWN = {"", "application/octet-stream", 0};

/* Paths the Lua routes own, whatever the web root holds. */
static const char *const LUA_PREFIXES[] = {"/api", "/auth", "/healthz", "/metrics"};

/* The policy for everything the app does not serve: a JSON answer loads nothing. */
static const char API_CSP[] = "default-src 'none'; frame-ancestors 'none'";

/* ---- paths ---- */

static int is_app_path(const char *path)
{
    while (path[0] == '/' && path[1] == '/')    /* the router ignores empty segments too */
        path++;
    for (size_t i = 0; i < sizeof LUA_PREFIXES / sizeof *LUA_PREFIXES; i++) {
        size_t n = strlen(LUA_PREFIXES[i]);
        if (!strncmp(path, LUA_PREFIXES[i], n) && (path[n] == '\0' || path[n] == '/'))
            return 0;
    }
    return 1;
}

/* 0 when path (after the leading '/') is a plain relative path, -1 otherwise. */
static int plain_path(const char *path)
{
    if (path[0] != '/' || strstr(path, "%00"))
        return -1;
    for (const char *p = path; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return -1;
        if (*p == '/' && p[1] == '.')
            return -1;
    }
    return 0;
}

/* The last segment names a file type ("/app/x.js"), so a miss is a 404, not the app. */
static int has_extension(const char *path)
{
    const char *last = strrchr(path, '/');
    return strchr(last ? last : path, '.') != NULL;
}

static const struct mime *mime_of(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/'))
        return &MIME_UNKNOWN;
    for (size_t i = 0; i < sizeof MIMES / sizeof *MIMES; i++)
        if (!strcasecmp(dot + 1, MIMES[i].ext))
            return &MIMES[i];
    return &MIME_UNKNOWN;
}

/* The fallback to openat2: realpath(root/rel) must lie under realpath(root). */
static int open_checked(const char *root, const char *rel)
{
    char full[PATH_MAX], real[PATH_MAX], base[PATH_MAX];
    if (snprintf(full, sizeof full, "%s/%s", root, rel) >= (int)sizeof full)
        return errno = ENAMETOOLONG, -1;
    if (!realpath(root, base) || !realpath(full, real))
        return -1;
    size_t n = strlen(base);
    if (strncmp(real, base, n) != 0 || (real[n] != '/' && real[n] != '\0'))
        return errno = EXDEV, -1;
    return open(real, O_RDONLY | O_CLOEXEC | O_NOCTTY);
}

/* Opens rel beneath the root folder; -1 with errno (EXDEV/ELOOP: it tried to leave). */
static int open_beneath(const char *root, int dirfd, const char *rel)
{
    struct open_how how = {
        .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    int fd = (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS)
        fd = open_checked(root, rel);
    return fd;
}

/* A regular file beneath the root, or -1 (errno ENOENT for folders and other kinds). */
static int open_file(const char *root, int dirfd, const char *rel, struct stat *st)
{
    int fd = open_beneath(root, dirfd, rel);
    if (fd < 0)
        return -1;
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        return errno = ENOENT, -1;
    }
    return fd;
}

/* ---- request headers ---- */

/* True when Accept-Encoding lists gzip (or *) without q=0. */
static int accepts_gzip(struct MHD_Connection *conn)
{
    const char *ae = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    while (ae && *ae) {
        ae += strspn(ae, " \t,");
        size_t tok = strcspn(ae, " \t;,");
        int named = (tok == 4 && !strncasecmp(ae, "gzip", 4)) || (tok == 1 && *ae == '*');
        const char *end = ae + strcspn(ae, ",");
        const char *q = strstr(ae, "q=");
        int zero = q && q < end && strtod(q + 2, NULL) == 0.0;
        if (named && !zero)
            return 1;
        ae = end;
    }
    return 0;
}

/* If-None-Match (a list, W/ tags compared weakly, or *) names etag. */
static int etag_matches(struct MHD_Connection *conn, const char *etag)
{
    const char *inm = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    size_t n = strlen(etag);
    while (inm && *inm) {
        inm += strspn(inm, " \t,");
        if (*inm == '*')
            return 1;
        if (!strncmp(inm, "W/", 2))
            inm += 2;
        if (!strncmp(inm, etag, n) && (inm[n] == '\0' || inm[n] == ',' || inm[n] == ' ' || inm[n] == '\t'))
            return 1;
        inm += strcspn(inm, ",");
    }
    return 0;
}

/* ---- responses ---- */

static void etag_of(const struct stat *st, int gz, char *out, size_t outlen)
{
    snprintf(out, outlen, "\"%llx-%llx-%llx%s\"", (unsigned long long)st->st_ino,
             (unsigned long long)st->st_size,
             (unsigned long long)st->st_mtim.tv_sec * 1000000000ull + (unsigned long long)st->st_mtim.tv_nsec,
             gz ? "-gz" : "");
}

static void app_headers(const struct web_static *ws, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "Content-Security-Policy", ws->csp);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "strict-origin-when-cross-origin");
}

static int queue(struct MHD_Connection *conn, struct MHD_Response *resp, int code, int *status)
{
    if (!resp)
        return -1;
    *status = code;
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)code, resp);
    MHD_destroy_response(resp);
    return ok == MHD_YES ? 1 : -1;
}

static int json_error(const struct web_static *ws, struct MHD_Connection *conn, unsigned code,
                      const char *body, int *status, size_t *bytes)
{
    size_t len = strlen(body);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body,
                                                                MHD_RESPMEM_PERSISTENT);
    if (resp) {
        MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        if (code == MHD_HTTP_SERVICE_UNAVAILABLE)
            MHD_add_response_header(resp, "Retry-After", "1");
        app_headers(ws, resp);
    }
    *bytes = len;
    return queue(conn, resp, code, status);
}

static int not_found(const struct web_static *ws, struct MHD_Connection *conn, int *status, size_t *bytes)
{
    return json_error(ws, conn, MHD_HTTP_NOT_FOUND,
                      "{\"error\":\"not_found\",\"message\":\"no such file\",\"details\":[]}", status, bytes);
}

/* A file that exists but cannot be opened now (out of descriptors, I/O error): not a 404. */
static int unavailable(const struct web_static *ws, struct MHD_Connection *conn, int *status, size_t *bytes)
{
    return json_error(ws, conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                      "{\"error\":\"unavailable\",\"message\":\"the file cannot be read right now, "
                      "try again\",\"details\":[]}", status, bytes);
}

/* errno values after which the path simply names nothing the app may serve. */
static int is_absent(int e)
{
    return e == ENOENT || e == ENOTDIR || e == EXDEV || e == ELOOP || e == ENAMETOOLONG;
}

/* The body of fd (size bytes) gzip'd, or NULL. */
static struct MHD_Response *gzip_body(int fd, size_t size, size_t *bytes)
{
    char *plain = malloc(size ? size : 1), *gz = NULL;
    size_t got = 0, gzlen = 0;
    struct MHD_Response *resp = NULL;
    if (!plain)
        goto fail;
    while (got < size) {
        ssize_t n = pread(fd, plain + got, size - got, (off_t)got);
        if (n <= 0)
            goto fail;
        got += (size_t)n;
    }
    if (gzip_deflate(plain, size, &gz, &gzlen) != 0)
        goto fail;
    resp = MHD_create_response_from_buffer(gzlen, gz, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        goto fail;
    *bytes = gzlen;
    free(plain);
    return resp;
fail:
    free(plain);
    free(gz);
    return NULL;
}

/* A fresh (not older than the file) precompressed sibling `rel.gz`, or -1. */
static int open_sibling(const char *root, int dirfd, const char *rel, const struct stat *st,
                        struct stat *gzst)
{
    char gzrel[PATH_MAX];
    if (snprintf(gzrel, sizeof gzrel, "%s.gz", rel) >= (int)sizeof gzrel)
        return -1;
    int fd = open_file(root, dirfd, gzrel, gzst);
    if (fd >= 0 && (gzst->st_mtim.tv_sec < st->st_mtim.tv_sec ||
                    (gzst->st_mtim.tv_sec == st->st_mtim.tv_sec && gzst->st_mtim.tv_nsec < st->st_mtim.tv_nsec))) {
        close(fd);
        return -1;
    }
    return fd;
}

/*
** Answers with the file fd (owned: closed here or by MHD): 304, a .gz sibling, gzip on
** the fly, or the bytes as they are (sent with sendfile).
*/
static int send_file(const struct web_static *ws, struct MHD_Connection *conn, int dirfd,
                     const char *rel, int fd, const struct stat *st, int *status, size_t *bytes)
{
    const struct mime *m = mime_of(rel);
    int gz = m->compressible && accepts_gzip(conn) && st->st_size >= GZIP_MIN_BYTES;
    struct stat gzst;
    int gzfd = gz ? open_sibling(ws->root, dirfd, rel, st, &gzst) : -1;
    if (gzfd < 0 && st->st_size > GZIP_MAX_BYTES)
        gz = 0;
    char etag[96];
    etag_of(st, gz, etag, sizeof etag);
    int code = MHD_HTTP_OK;
    struct MHD_Response *resp;
    *bytes = 0;
    if (etag_matches(conn, etag)) {
        code = MHD_HTTP_NOT_MODIFIED;
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    } else if (gzfd >= 0) {
        resp = MHD_create_response_from_fd((uint64_t)gzst.st_size, gzfd);
        if (resp)
            gzfd = -1, *bytes = (size_t)gzst.st_size;
    } else if (gz) {
        resp = gzip_body(fd, (size_t)st->st_size, bytes);
    } else {
        resp = MHD_create_response_from_fd((uint64_t)st->st_size, fd);
        if (resp)
            fd = -1, *bytes = (size_t)st->st_size;
    }
    if (fd >= 0)
        close(fd);
    if (gzfd >= 0)
        close(gzfd);
    if (!resp)
        return -1;
    MHD_add_response_header(resp, "Content-Type", m->type);
    MHD_add_response_header(resp, "ETag", etag);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    if (m->compressible)
        MHD_add_response_header(resp, "Vary", "Accept-Encoding");
    if (gz && code == MHD_HTTP_OK)
        MHD_add_response_header(resp, "Content-Encoding", "gzip");
    app_headers(ws, resp);
    return queue(conn, resp, code, status);
}

int web_static_serve(struct web_static *ws, struct MHD_Connection *conn, const char *method,
                     const char *url, int *status, size_t *bytes)
{
    if (!ws || (strcmp(method, "GET") && strcmp(method, "HEAD")) || !is_app_path(url))
        return 0;
    int dirfd = open(ws->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)                              /* no web app: the routes answer */
        return errno == ENOENT || errno == ENOTDIR ? 0 : unavailable(ws, conn, status, bytes);
    int rc;
    struct stat st;
    if (plain_path(url) < 0) {
        rc = not_found(ws, conn, status, bytes);
        goto done;
    }
    const char *rel = url[1] ? url + 1 : "index.html";
    int fd = open_file(ws->root, dirfd, rel, &st);
    if (fd < 0 && (errno == ENOENT || errno == ENOTDIR) && !has_extension(url)) {
        rel = "index.html";
        if ((fd = open_file(ws->root, dirfd, rel, &st)) < 0) {
            rc = 0;                             /* no index.html yet: the routes answer */
            goto done;
        }
    }
    if (fd < 0)
        rc = is_absent(errno) ? not_found(ws, conn, status, bytes) : unavailable(ws, conn, status, bytes);
    else
        rc = send_file(ws, conn, dirfd, rel, fd, &st, status, bytes);
done:
    close(dirfd);
    return rc;
}

/* ---- pages answered by Lua ---- */

char *web_static_index(const char *root, size_t *len)
{
    struct stat st;
    char *text = NULL;
    int dirfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    int fd = dirfd < 0 ? -1 : open_file(root, dirfd, "index.html", &st);
    if (fd < 0 || !(text = malloc((size_t)st.st_size + 1)))
        goto fail;
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = pread(fd, text + got, (size_t)st.st_size - got, (off_t)got);
        if (n <= 0)
            goto fail;
        got += (size_t)n;
    }
    text[got] = '\0';
    *len = got;
    close(fd);
    close(dirfd);
    return text;
fail:
    free(text);
    if (fd >= 0)
        close(fd);
    if (dirfd >= 0)
        close(dirfd);
    return NULL;
}

void web_static_page_headers(const struct web_static *ws, struct MHD_Response *resp)
{
    app_headers(ws, resp);
}

/* ---- headers for everything else ---- */

void web_static_api_headers(struct MHD_Response *resp)
{
    if (!MHD_get_response_header(resp, "Content-Security-Policy"))
        MHD_add_response_header(resp, "Content-Security-Policy", API_CSP);
    if (!MHD_get_response_header(resp, "X-Content-Type-Options"))
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (!MHD_get_response_header(resp, "Referrer-Policy"))
        MHD_add_response_header(resp, "Referrer-Policy", "strict-origin-when-cross-origin");
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

size_t web_static_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    char *w = s;
    for (const char *r = s; *r;) {
        int hi = r[0] == '%' ? hexval(r[1]) : -1, lo = hi >= 0 ? hexval(r[2]) : -1;
        if (lo >= 0 && (hi | lo) != 0) {
            *w++ = (char)(hi << 4 | lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

/* ---- life cycle ---- */

static char *build_csp(const char *img_hosts)
{
    static const char fmt[] =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:%s%s; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'";
    const char *sep = *img_hosts ? " " : "";
    size_t n = sizeof fmt + strlen(img_hosts) + 1;
    char *csp = malloc(n);
    if (csp)
        snprintf(csp, n, fmt, sep, img_hosts);
    return csp;
}

struct web_static *web_static_new(const struct conf *c)
{
    struct web_static *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->root = strdup(c->web_root);
    ws->csp = build_csp(c->cover_image_hosts);
    if (!ws->root || !ws->csp) {
        web_static_free(ws);
        return NULL;
    }
    return ws;
}

void web_static_free(struct web_static *ws)
{
    if (!ws)
        return;
    free(ws->root);
    free(ws->csp);
    free(ws);
}
