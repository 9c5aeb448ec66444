/*
** http_peer: who is connected, and for how long they may take. One record per open
** connection (its peer address, the forwarded client address of the request it carries
** when the peer is a trusted proxy, its phase and since when), so that
**   - one address cannot hold more than max_per_address connections (or, behind a
**     trusted proxy, requests in flight), and
**   - a client that sends its header fields too slowly (header_timeout_s from the start
**     of the request) or its body below min_body_rate is cut off, by a sweeper thread
**     that shuts the socket down (libmicrohttpd's own timeout is an idle timeout, which
**     one byte every few seconds defeats).
** Thread-safe: the polling thread updates records, the sweeper reads them.
*/
#ifndef SHELFSYNC_HTTP_PEER_H
#define SHELFSYNC_HTTP_PEER_H

#include <stddef.h>
#include <sys/socket.h>

struct http_peers;
struct http_peer;

struct http_peer_conf {
    int max_per_address;         /* 0: no limit */
    const char *trusted_proxies; /* comma-separated addresses or CIDR blocks; may be "" */
    int header_timeout_s;        /* 0: none */
    size_t min_body_rate;        /* bytes/s a body must average after its first seconds; 0: none */
};

/* NULL with err when a trusted proxy does not parse. Starts the sweeper. */
struct http_peers *http_peers_new(const struct http_peer_conf *c, char *err, size_t errlen);
void http_peers_free(struct http_peers *p);

/* 1 when a new connection from addr may be accepted (trusted proxies always may). */
int http_peers_admit(struct http_peers *p, const struct sockaddr *addr);

/* Records an accepted connection on socket fd; NULL when out of memory (then untracked). */
struct http_peer *http_peers_open(struct http_peers *p, const struct sockaddr *addr, int fd);
void http_peers_close(struct http_peers *p, struct http_peer *c); /* c may be NULL */

/*
** A request's header fields are in. When the peer is a trusted proxy, the client is the
** rightmost X-Forwarded-For entry that is not itself a trusted proxy (xff may be NULL),
** and its address is copied into client (else client is left alone). Returns 0, or -1
** when that client is over its limit (the request is refused, the record left as it was).
*/
int http_peer_begin(struct http_peers *p, struct http_peer *c, const char *xff, char *client,
                    size_t len);
void http_peer_body(struct http_peers *p, struct http_peer *c, size_t n); /* n body bytes arrived */
void http_peer_dispatched(struct http_peers *p, struct http_peer *c);     /* body complete */
void http_peer_end(struct http_peers *p,
                   struct http_peer *c); /* answered: next request's headers may start */

#endif
