/*
** http_server: libmicrohttpd in front of the worker pool.
**
** One internal polling thread does all socket I/O. A request's headers and body are read
** there (body limits per route class, gzip inflated with a bound); then the connection is
** suspended and the request handed to a worker, which runs Lua and builds the response;
** the connection is resumed and the polling thread sends it. A slow handler therefore
** never stalls another connection's I/O.
*/
#ifndef SHELFSYNC_HTTP_SERVER_H
#define SHELFSYNC_HTTP_SERVER_H

#include <stddef.h>

struct conf;
struct worker_pool;
struct http_server;

/* Binds c->listen_host:c->listen_port (port 0: any free one). NULL with err on failure. */
struct http_server *http_server_start(const struct conf *c, struct worker_pool *pool,
                                      char *err, size_t errlen);
int http_server_port(const struct http_server *s);   /* the bound port */
void http_server_quiesce(struct http_server *s);      /* stop accepting new connections */
int http_server_inflight(const struct http_server *s);/* requests begun and not completed */
void http_server_stop(struct http_server *s);         /* closes everything, frees s */

#endif
