/*
** web_static: the web app's files (config `web_root`), served by the polling thread
** straight from disk, without a Lua worker.
**
** Every GET or HEAD outside /api, /auth, /healthz and /metrics is the web app's: a regular
** file under the root is answered with its MIME type, an ETag (304 on If-None-Match) and
** gzip (a fresh `.gz` sibling, else compressed on the fly); any other path without a file
** extension answers the root's index.html, so deep links work; a path with an extension
** that names no file, or one that tries to leave the root (`..`, dot files, NUL, symlinks
** out of the tree), is a JSON 404. Files are read on every request, so edits show at once.
** While the root or its index.html is missing, app paths fall through to the Lua routes.
** So do app paths a Lua GET route matches (http_server.c asks the route table first): the
** shared list and profile pages, whose head a route fills for link previews.
*/
#ifndef SHELFSYNC_WEB_STATIC_H
#define SHELFSYNC_WEB_STATIC_H

#include <stddef.h>
#include <microhttpd.h>

struct conf;
struct web_static;

/*
** Builds the handler from c->web_root and c->cover_image_hosts (copied: c may go away).
** Returns NULL when out of memory.
*/
struct web_static *web_static_new(const struct conf *c);
void web_static_free(struct web_static *ws);

/*
** Answers a request if it is the web app's. Call on the first callback of a request, with
** MHD's (unescaped) url. Returns 1 when a response was queued (*status and *bytes filled),
** 0 when the request belongs elsewhere (the Lua routes), -1 when queueing failed.
*/
int web_static_serve(struct web_static *ws, struct MHD_Connection *conn, const char *method,
                     const char *url, int *status, size_t *bytes);

/*
** The text of <root>/index.html (malloc'd, NUL-terminated, its length in *len), or NULL
** when it cannot be read. For the Lua routes that answer app pages with a filled-in head
** (routes/pages.lua, through host.web_index).
*/
char *web_static_index(const char *root, size_t *len);

/*
** The app's headers (its CSP, nosniff, referrer policy), for an HTML page a Lua route built
** from index.html: the page loads the app's scripts like the static one.
*/
void web_static_page_headers(const struct web_static *ws, struct MHD_Response *resp);

/*
** The headers every answer that is not the web app's (JSON, redirects, metrics) carries:
** nosniff, a referrer policy, and a CSP that allows nothing unless the response set its own.
*/
void web_static_api_headers(struct MHD_Response *resp);

/*
** MHD_OPTION_UNESCAPE_CALLBACK: MHD's unescaping, except that %00 stays as it is, so an
** encoded NUL can never cut a path or a query value short (the handler refuses '%00').
*/
size_t web_static_unescape(void *cls, struct MHD_Connection *conn, char *s);

#endif
