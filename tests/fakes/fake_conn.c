/* SPDX-License-Identifier: Apache-2.0 */
/* tests/fakes/fake_conn.c - in-memory network implementing mesh/conn.h (see fake_conn.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fakes/fake_conn.h"

struct fake_listener {
    struct fake_listener *next;
    struct mesh_addr addr;
    enum fake_listen_mode mode;
    fake_accept_fn fn;
    void *lu;
};

enum fake_state {
    FAKE_CONNECTING,   /* dialed, accept or refusal pending */
    FAKE_ESTABLISHED,
    FAKE_DEAD,         /* aborted or closed: no more upcalls, freed at end of run */
};

struct mesh_conn {
    struct mesh_conn *next; /* net->conns */
    struct fake_net *net;
    struct mesh_conn *peer;
    const struct mesh_conn_cb *cb;
    void *u;
    struct mesh_addr local;
    struct mesh_addr remote;
    enum fake_state state;
    bool dialer;
    bool accept_pending;    /* acceptor side: hand to the listener in the next run */
    bool notify_connected;  /* dialer: first on_writable due */
    bool refused;           /* dialer: on_closed(-ECONNREFUSED) due */
    bool blackholed;        /* dialer: never completes */
    bool read_on;
    bool rx_stale;          /* the buffered bytes were offered and not all taken: wait for news */
    bool want_writable;
    bool fin_sent;          /* shutdown_wr called */
    bool fin_rcvd;          /* the peer's FIN is queued behind rx */
    bool fin_delivered;
    bool reset_rcvd;        /* the peer aborted */
    uint8_t *rx;
    size_t rx_len;
    size_t rx_cap;
    const struct fake_listener *listener;
};

struct fake_net {
    struct fake_listener *listeners;
    struct mesh_conn *conns;
    size_t rcvbuf;
    uint16_t next_port;
    int fail_dials;
    int fail_err;
    size_t dials;
    bool running;
};

/* ---- helpers ---- */

static bool fake_addr_ip_eq(const struct mesh_addr *a, const struct mesh_addr *b)
{
    if (a->family != b->family)
        return false;
    return memcmp(a->ip.v6, b->ip.v6, a->family == MESH_ADDR_V4 ? 4 : 16) == 0;
}

struct mesh_addr fake_addr(const char *ip, uint16_t port)
{
    struct mesh_addr a;

    memset(&a, 0, sizeof(a));
    if (inet_pton(AF_INET, ip, a.ip.v4) == 1) {
        a.family = MESH_ADDR_V4;
    } else if (inet_pton(AF_INET6, ip, a.ip.v6) == 1) {
        a.family = MESH_ADDR_V6;
    } else {
        fprintf(stderr, "fake_addr: bad literal %s\n", ip);
        abort();
    }
    a.port = htons(port);
    return a;
}

static const struct fake_listener *fake_find_listener(const struct fake_net *net, const struct mesh_addr *dst)
{
    const struct fake_listener *wild = NULL;

    for (const struct fake_listener *l = net->listeners; l != NULL; l = l->next) {
        if (!fake_addr_ip_eq(&l->addr, dst))
            continue;
        if (l->addr.port == dst->port)
            return l;
        if (l->addr.port == 0)
            wild = l;
    }
    return wild;
}

static struct mesh_conn *fake_conn_alloc(struct fake_net *net)
{
    struct mesh_conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->net = net;
    c->rx_cap = net->rcvbuf;
    c->read_on = true;
    c->next = NULL;
    /* append, so a run visits new connections after the existing ones */
    struct mesh_conn **pp = &net->conns;
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = c;
    return c;
}

/* ---- the network ---- */

struct fake_net *fake_net_new(void)
{
    struct fake_net *net = calloc(1, sizeof(*net));

    if (net == NULL)
        abort();
    net->rcvbuf = FAKE_CONN_DEFAULT_RCVBUF_BYTES;
    net->next_port = 40000;
    return net;
}

static void fake_conn_free(struct mesh_conn *c)
{
    if (c->peer != NULL)
        c->peer->peer = NULL;
    free(c->rx);
    free(c);
}

void fake_net_free(struct fake_net *net)
{
    if (net == NULL)
        return;
    while (net->conns != NULL) {
        struct mesh_conn *c = net->conns;
        net->conns = c->next;
        fake_conn_free(c);
    }
    while (net->listeners != NULL) {
        struct fake_listener *l = net->listeners;
        net->listeners = l->next;
        free(l);
    }
    free(net);
}

int fake_net_listen(struct fake_net *net, const struct mesh_addr *addr, enum fake_listen_mode mode, fake_accept_fn fn,
                    void *lu)
{
    for (const struct fake_listener *l = net->listeners; l != NULL; l = l->next)
        if (fake_addr_ip_eq(&l->addr, addr) && l->addr.port == addr->port)
            return -EEXIST;
    struct fake_listener *l = calloc(1, sizeof(*l));
    if (l == NULL)
        abort();
    l->addr = *addr;
    l->mode = mode;
    l->fn = fn;
    l->lu = lu;
    l->next = net->listeners;
    net->listeners = l;
    return 0;
}

void fake_net_unlisten(struct fake_net *net, const struct mesh_addr *addr)
{
    for (struct fake_listener **pp = &net->listeners; *pp != NULL; pp = &(*pp)->next) {
        struct fake_listener *l = *pp;
        if (fake_addr_ip_eq(&l->addr, addr) && l->addr.port == addr->port) {
            *pp = l->next;
            for (struct mesh_conn *c = net->conns; c != NULL; c = c->next)
                if (c->listener == l)
                    c->listener = NULL;
            free(l);
            return;
        }
    }
}

void fake_net_set_rcvbuf(struct fake_net *net, size_t bytes)
{
    net->rcvbuf = bytes;
}

void fake_net_fail_dials(struct fake_net *net, int n, int err)
{
    net->fail_dials = n;
    net->fail_err = err;
}

size_t fake_net_live(const struct fake_net *net)
{
    size_t n = 0;

    for (const struct mesh_conn *c = net->conns; c != NULL; c = c->next)
        if (c->state != FAKE_DEAD)
            n++;
    return n;
}

size_t fake_net_dials(const struct fake_net *net)
{
    return net->dials;
}

const struct mesh_addr *fake_conn_local(const struct mesh_conn *c)
{
    return &c->local;
}

const struct mesh_addr *fake_conn_remote(const struct mesh_conn *c)
{
    return &c->remote;
}

void fake_conn_set_rcvbuf(struct mesh_conn *c, size_t bytes)
{
    c->rx_cap = bytes;
}

bool fake_conn_read_enabled(const struct mesh_conn *c)
{
    return c->read_on;
}

size_t fake_conn_buffered(const struct mesh_conn *c)
{
    return c->rx_len;
}

/* ---- downcalls ---- */

static ssize_t fake_write(struct mesh_conn *c, const struct iovec *v, int n)
{
    if (c->state == FAKE_DEAD)
        return -EBADF;
    if (c->fin_sent)
        return -EPIPE;
    if (c->state != FAKE_ESTABLISHED)
        return -ENOTCONN;
    struct mesh_conn *p = c->peer;
    if (p == NULL || p->state == FAKE_DEAD || c->reset_rcvd)
        return -ECONNRESET;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t room = p->rx_cap > p->rx_len ? p->rx_cap - p->rx_len : 0;
        size_t take = v[i].iov_len < room ? v[i].iov_len : room;
        if (take == 0)
            break;
        uint8_t *nb = realloc(p->rx, p->rx_cap > 0 ? p->rx_cap : 1);
        if (nb == NULL)
            abort();
        p->rx = nb;
        memcpy(p->rx + p->rx_len, v[i].iov_base, take);
        p->rx_len += take;
        p->rx_stale = false;
        total += take;
        if (take < v[i].iov_len)
            break;
    }
    size_t want = 0;
    for (int i = 0; i < n; i++)
        want += v[i].iov_len;
    if (total < want)
        c->want_writable = true;
    return (ssize_t)total;
}

static void fake_read_enable(struct mesh_conn *c, bool on)
{
    if (c->state == FAKE_DEAD)
        return;
    if (on)
        c->rx_stale = false;
    c->read_on = on;
}

static int fake_shutdown_wr(struct mesh_conn *c)
{
    if (c->state == FAKE_DEAD)
        return -EBADF;
    if (c->state != FAKE_ESTABLISHED)
        return -ENOTCONN;
    if (c->fin_sent)
        return 0;
    c->fin_sent = true;
    if (c->peer != NULL)
        c->peer->fin_rcvd = true;
    return 0;
}

static void fake_abort(struct mesh_conn *c)
{
    if (c->state == FAKE_DEAD)
        return;
    c->state = FAKE_DEAD;
    if (c->peer != NULL && c->peer->state != FAKE_DEAD)
        c->peer->reset_rcvd = true;
    if (!c->net->running) {
        /* reclaim now if no run is iterating */
        for (struct mesh_conn **pp = &c->net->conns; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == c) {
                *pp = c->next;
                break;
            }
        }
        fake_conn_free(c);
    }
}

static int fake_dial(void *backend, const struct mesh_addr *src, const struct mesh_addr *dst,
                     const struct mesh_conn_cb *cb, void *u, struct mesh_conn **out)
{
    struct fake_host *h = backend;
    struct fake_net *net = h->net;

    net->dials++;
    if (net->fail_dials > 0) {
        net->fail_dials--;
        return net->fail_err;
    }
    struct mesh_conn *c = fake_conn_alloc(net);
    if (c == NULL)
        return -ENOMEM;
    c->cb = cb;
    c->u = u;
    c->dialer = true;
    c->local = src != NULL ? *src : h->ip;
    if (c->local.port == 0)
        c->local.port = htons(net->next_port++);
    c->remote = *dst;
    c->state = FAKE_CONNECTING;
    const struct fake_listener *l = fake_find_listener(net, dst);
    if (l == NULL) {
        c->refused = true;
    } else if (l->mode == FAKE_LISTEN_BLACKHOLE) {
        c->blackholed = true;
    } else {
        struct mesh_conn *s = fake_conn_alloc(net);
        if (s == NULL)
            abort();
        s->local = *dst;
        s->remote = c->local;
        s->state = FAKE_CONNECTING;
        s->accept_pending = true;
        s->listener = l;
        s->peer = c;
        c->peer = s;
    }
    *out = c;
    return 0;
}

const struct mesh_conn_ops fake_conn_ops = {
    .write = fake_write,
    .read_enable = fake_read_enable,
    .shutdown_wr = fake_shutdown_wr,
    .abort = fake_abort,
    .dial = fake_dial,
};

/* ---- the event loop ---- */

static void fake_kill(struct mesh_conn *c, int err)
{
    c->state = FAKE_DEAD;
    if (c->cb != NULL && c->cb->on_closed != NULL)
        c->cb->on_closed(c->u, err);
}

/* One pass over c; returns the number of upcalls made. */
static size_t fake_step(struct mesh_conn *c)
{
    size_t n = 0;

    if (c->state == FAKE_DEAD)
        return 0;
    if (c->accept_pending) {
        c->accept_pending = false;
        const struct fake_listener *l = c->listener;
        struct mesh_conn *d = c->peer;
        if (l == NULL || d == NULL || d->state == FAKE_DEAD) {
            c->state = FAKE_DEAD;
            if (d != NULL && d->state != FAKE_DEAD)
                d->refused = true;
            return 0;
        }
        const struct mesh_conn_cb *cb = NULL;
        void *u = NULL;
        c->state = FAKE_ESTABLISHED; /* usable from inside the accept function */
        int rc = l->fn(l->lu, c, &c->remote, &c->local, &cb, &u);
        n++;
        if (rc < 0) {
            /* the acceptor aborted c (which marked d reset); make the dialer see a refusal instead */
            if (d->state == FAKE_CONNECTING) {
                d->reset_rcvd = false;
                d->refused = true;
            }
            return n;
        }
        c->cb = cb;
        c->u = u;
        if (d->state == FAKE_CONNECTING) {
            d->state = FAKE_ESTABLISHED;
            d->notify_connected = true;
        }
        return n;
    }
    if (c->state == FAKE_CONNECTING) {
        if (c->refused) {
            c->refused = false;
            fake_kill(c, -ECONNREFUSED);
            return 1;
        }
        return 0;
    }
    if (c->reset_rcvd) {
        fake_kill(c, -ECONNRESET);
        return 1;
    }
    if (c->notify_connected) {
        c->notify_connected = false;
        if (c->cb->on_writable != NULL)
            c->cb->on_writable(c->u);
        n++;
        if (c->state == FAKE_DEAD)
            return n;
    }
    if (c->read_on && c->rx_len > 0 && !c->rx_stale) {
        size_t had = c->rx_len;
        size_t used = c->cb->on_data(c->u, c->rx, c->rx_len);
        n++;
        if (c->state == FAKE_DEAD)
            return n;
        if (used > had)
            abort();
        memmove(c->rx, c->rx + used, c->rx_len - used);
        c->rx_len -= used;
        if (c->rx_len > 0)
            c->rx_stale = true;
    }
    if (c->rx_len == 0 && c->fin_rcvd && !c->fin_delivered) {
        c->fin_delivered = true;
        if (c->cb->on_peer_fin != NULL)
            c->cb->on_peer_fin(c->u);
        n++;
        if (c->state == FAKE_DEAD)
            return n;
    }
    if (c->want_writable) {
        struct mesh_conn *p = c->peer;
        bool room = p == NULL || p->state == FAKE_DEAD || p->rx_len < p->rx_cap;
        if (room && !c->fin_sent) {
            c->want_writable = false;
            if (c->cb->on_writable != NULL)
                c->cb->on_writable(c->u);
            n++;
            if (c->state == FAKE_DEAD)
                return n;
        }
    }
    if (c->fin_sent && c->fin_delivered) {
        fake_kill(c, 0);
        n++;
    }
    return n;
}

size_t fake_net_run(struct fake_net *net)
{
    size_t total = 0;
    size_t n;

    net->running = true;
    do {
        n = 0;
        for (struct mesh_conn *c = net->conns; c != NULL; c = c->next)
            n += fake_step(c);
        total += n;
        if (total > 100000000u)
            abort(); /* livelock */
    } while (n > 0);
    net->running = false;
    /* reclaim connections dead to their users on both ends */
    for (struct mesh_conn **pp = &net->conns; *pp != NULL;) {
        struct mesh_conn *c = *pp;
        if (c->state == FAKE_DEAD) {
            *pp = c->next;
            fake_conn_free(c);
        } else {
            pp = &c->next;
        }
    }
    return total;
}
