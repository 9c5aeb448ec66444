/*
** http_peer.c: per-address connection limits and header/body deadlines; see http_peer.h.
*/
#include "http_peer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define SWEEP_MS 250
/* A body's rate is judged only after this long: a slow start (TCP, a proxy) is normal. */
#define BODY_GRACE_MS 5000
#define MAX_TRUSTED 32

enum phase { PHASE_HEADERS, PHASE_BODY, PHASE_BUSY };

struct http_peer {
    struct http_peer *prev, *next;
    char addr[INET6_ADDRSTRLEN];   /* the socket's peer */
    char client[INET6_ADDRSTRLEN]; /* forwarded client of the current request; "" if none */
    int trusted, fd, cut;
    enum phase phase;
    long since_ms;
    size_t body_bytes;
};

struct cidr {
    int family;
    unsigned char bytes[16];
    int bits;
};

struct http_peers {
    struct http_peer_conf conf;
    struct cidr trusted[MAX_TRUSTED];
    int ntrusted;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t sweeper;
    int stopping;
    struct http_peer *head;
};

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Parses "a.b.c.d", "a.b.c.d/n", "v6" or "v6/n". */
static int cidr_parse(const char *s, size_t len, struct cidr *out)
{
    char buf[INET6_ADDRSTRLEN + 8];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    out->family = strchr(buf, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(out->family, buf, out->bytes) != 1)
        return -1;
    int max = out->family == AF_INET ? 32 : 128;
    out->bits = max;
    if (slash) {
        char *end;
        long bits = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || bits < 0 || bits > max)
            return -1;
        out->bits = (int)bits;
    }
    return 0;
}

static int cidr_match(const struct cidr *c, int family, const unsigned char *bytes)
{
    if (c->family != family)
        return 0;
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->bytes, bytes, (size_t)full) != 0)
        return 0;
    if (!rest)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (c->bytes[full] & mask) == (bytes[full] & mask);
}

static int is_trusted_text(const struct http_peers *p, const char *addr)
{
    unsigned char bytes[16];
    int family = strchr(addr, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(family, addr, bytes) != 1)
        return 0;
    for (int i = 0; i < p->ntrusted; i++)
        if (cidr_match(&p->trusted[i], family, bytes))
            return 1;
    return 0;
}

static void addr_text(const struct sockaddr *sa, char *out, size_t len)
{
    out[0] = '\0';
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)len);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)len);
}

/* Connections, or requests in flight behind a trusted proxy, that count against addr. */
static int count_locked(const struct http_peers *p, const char *addr)
{
    int n = 0;
    for (const struct http_peer *c = p->head; c; c = c->next)
        if ((!c->trusted && !strcmp(c->addr, addr)) || !strcmp(c->client, addr))
            n++;
    return n;
}

/* Shuts down what has overstayed; the polling thread then sees the socket end and frees it. */
static void sweep_locked(struct http_peers *p, long now)
{
    const struct http_peer_conf *cf = &p->conf;
    for (struct http_peer *c = p->head; c; c = c->next) {
        long age = now - c->since_ms;
        int late = (c->phase == PHASE_HEADERS && cf->header_timeout_s > 0 &&
                    age > 1000L * cf->header_timeout_s) ||
                   (c->phase == PHASE_BODY && cf->min_body_rate > 0 && age > BODY_GRACE_MS &&
                    c->body_bytes < cf->min_body_rate * (size_t)(age / 1000));
        if (late && !c->cut) {
            c->cut = 1;
            log_msg(LOG_INFO, "cut off %s: %s too slow", c->addr,
                    c->phase == PHASE_HEADERS ? "header fields" : "body");
            shutdown(c->fd, SHUT_RDWR);
        }
    }
}

static void *sweeper(void *arg)
{
    struct http_peers *p = arg;
    pthread_mutex_lock(&p->lock);
    while (!p->stopping) {
        sweep_locked(p, now_ms());
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += SWEEP_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&p->wake, &p->lock, &until);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static int parse_trusted(struct http_peers *p, const char *list, char *err, size_t errlen)
{
    for (const char *s = list; s && *s;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        while (len && *s == ' ')
            s++, len--;
        while (len && s[len - 1] == ' ')
            len--;
        if (len) {
            if (p->ntrusted == MAX_TRUSTED || cidr_parse(s, len, &p->trusted[p->ntrusted]) < 0) {
                snprintf(err, errlen,
                         "trusted_proxies: \"%.*s\" is not an address or CIDR block (at most %d)",
                         (int)len, s, MAX_TRUSTED);
                return -1;
            }
            p->ntrusted++;
        }
        s = comma ? comma + 1 : s + len;
    }
    return 0;
}

struct http_peers *http_peers_new(const struct http_peer_conf *c, char *err, size_t errlen)
{
    struct http_peers *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->conf = *c;
    p->conf.trusted_proxies = NULL;
    if (parse_trusted(p, c->trusted_proxies, err, errlen) < 0)
        goto fail;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    if (pthread_create(&p->sweeper, NULL, sweeper, p) != 0) {
        snprintf(err, errlen, "cannot start the connection sweeper");
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->lock);
        goto fail;
    }
    return p;
fail:
    free(p);
    return NULL;
}

void http_peers_free(struct http_peers *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->sweeper, NULL);
    while (p->head) {
        struct http_peer *c = p->head;
        p->head = c->next;
        free(c);
    }
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

int http_peers_admit(struct http_peers *p, const struct sockaddr *addr)
{
    char text[INET6_ADDRSTRLEN];
    addr_text(addr, text, sizeof text);
    if (p->conf.max_per_address <= 0 || is_trusted_text(p, text))
        return 1;
    pthread_mutex_lock(&p->lock);
    int n = count_locked(p, text);
    pthread_mutex_unlock(&p->lock);
    return n < p->conf.max_per_address;
}

struct http_peer *http_peers_open(struct http_peers *p, const struct sockaddr *addr, int fd)
{
    struct http_peer *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    addr_text(addr, c->addr, sizeof c->addr);
    c->trusted = is_trusted_text(p, c->addr);
    c->fd = fd;
    c->phase = PHASE_HEADERS;
    c->since_ms = now_ms();
    pthread_mutex_lock(&p->lock);
    c->next = p->head;
    if (p->head)
        p->head->prev = c;
    p->head = c;
    pthread_mutex_unlock(&p->lock);
    return c;
}

void http_peers_close(struct http_peers *p, struct http_peer *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&p->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        p->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&p->lock);
    free(c);
}

/* The rightmost X-Forwarded-For entry that is not a trusted proxy ("" when none parses). */
static void forwarded_client(const struct http_peers *p, const char *xff, char *out, size_t len)
{
    out[0] = '\0';
    size_t n = xff ? strlen(xff) : 0;
    while (n > 0) {
        size_t end = n;
        while (n > 0 && xff[n - 1] != ',')
            n--;
        const char *s = xff + n;
        size_t l = end - n;
        while (l && (*s == ' ' || *s == '\t'))
            s++, l--;
        while (l && (s[l - 1] == ' ' || s[l - 1] == '\t'))
            l--;
        char addr[INET6_ADDRSTRLEN];
        unsigned char bytes[16];
        if (l == 0 || l >= sizeof addr)
            return;
        memcpy(addr, s, l);
        addr[l] = '\0';
        if (inet_pton(strchr(addr, ':') ? AF_INET6 : AF_INET, addr, bytes) != 1)
            return; /* garbage: trust nothing left of it */
        snprintf(out, len, "%s", addr);
        if (!is_trusted_text(p, addr))
            return;
        if (n > 0)
            n--; /* past the comma */
    }
}

int http_peer_begin(struct http_peers *p, struct http_peer *c, const char *xff, char *client,
                    size_t len)
{
    if (!c)
        return 0;
    char fwd[INET6_ADDRSTRLEN] = "";
    if (c->trusted)
        forwarded_client(p, xff, fwd, sizeof fwd);
    if (*fwd)
        snprintf(client, len, "%s", fwd);
    pthread_mutex_lock(&p->lock);
    int over =
        *fwd && p->conf.max_per_address > 0 && count_locked(p, fwd) >= p->conf.max_per_address;
    if (!over) {
        snprintf(c->client, sizeof c->client, "%s", fwd);
        c->phase = PHASE_BODY;
        c->since_ms = now_ms();
        c->body_bytes = 0;
    }
    pthread_mutex_unlock(&p->lock);
    return over ? -1 : 0;
}

void http_peer_body(struct http_peers *p, struct http_peer *c, size_t n)
{
    if (!c)
        return;
    pthread_mutex_lock(&p->lock);
    c->body_bytes += n;
    pthread_mutex_unlock(&p->lock);
}

void http_peer_dispatched(struct http_peers *p, struct http_peer *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&p->lock);
    c->phase = PHASE_BUSY;
    pthread_mutex_unlock(&p->lock);
}

void http_peer_end(struct http_peers *p, struct http_peer *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&p->lock);
    c->phase = PHASE_HEADERS;
    c->since_ms = now_ms();
    c->client[0] = '\0';
    pthread_mutex_unlock(&p->lock);
}
