/* SPDX-License-Identifier: Apache-2.0 */
/*
 * appliance/conn_kernel.c - the kernel-socket backend of mesh/conn.h (see conn_kernel.h for the invariants).
 *
 * Structure: every socket is registered in one level-triggered epoll set with a pointer to its object (a connection
 * or a listener; both start with struct kobj). Events are handled from app_kloop_poll() only. Upcalls that a
 * downcall gives rise to are recorded as pending flags on the connection and the connection is queued; the loop
 * delivers the queue after the socket events of the iteration. Dead connections go to a graveyard that is emptied
 * at the end of the iteration, so pointers held by queued events or by the pending queue stay valid until then.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "appliance/conn_kernel.h"
#include "appliance/log.h"

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80 /* linux/netfilter_ipv4.h */
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80 /* linux/netfilter_ipv6/ip6_tables.h */
#endif
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define KLOOP_ACCEPT_BATCH 16
#define KLOOP_WRITE_IOV_MAX 64
#define KLOOP_PENDING_ROUNDS 4 /* queue passes per iteration before yielding to epoll again */

enum kobj_type { KOBJ_CONN, KOBJ_LISTENER };

struct kobj {
    enum kobj_type type;
};

enum kconn_state {
    KCONN_CONNECTING, /* dial in progress: waiting for EPOLLOUT */
    KCONN_OPEN,       /* established (accepted or connected) */
    KCONN_DEAD,       /* on_closed delivered or aborted: only memory left, freed at the end of the iteration */
};

/* Pending upcalls, delivered by the loop in this order of precedence (CLOSE wins over the others). */
#define KCONN_PEND_WRITABLE (1u << 0)
#define KCONN_PEND_DATA (1u << 1)
#define KCONN_PEND_CLOSE (1u << 2)

struct mesh_conn {
    struct kobj obj;
    struct app_kloop *loop;
    int fd;
    enum kconn_state state;
    const struct mesh_conn_cb *cb;
    void *u;
    uint32_t events; /* current epoll interest */
    bool in_epoll;   /* false when parked after a hang-up with reading off */
    bool rd_enabled;
    bool rd_eof;  /* the peer's FIN has been read */
    bool wr_shut; /* shutdown(SHUT_WR) done */
    bool want_writable;
    bool rx_stalled; /* rx buffer full and nothing consumed: reading off until read_enable(true) */
    bool queued;
    uint32_t pend;
    int close_err;
    uint64_t connect_deadline_ms; /* CLOCK_MONOTONIC, while connecting */
    uint8_t *rx;                  /* unconsumed bytes, rx_len of them; NULL when empty */
    uint32_t rx_len, rx_cap;
    struct mesh_conn *prev, *next;   /* every live connection of the loop */
    struct mesh_conn *cprev, *cnext; /* connecting connections */
    struct mesh_conn *qnext;         /* pending queue */
    struct mesh_conn *gnext;         /* graveyard */
};

struct app_klistener {
    struct kobj obj;
    struct app_kloop *loop;
    int fd;
    enum app_klisten_kind kind;
    app_kloop_accept_fn cb;
    void *u;
    struct mesh_addr addr;
    struct app_klistener *prev, *next;
};

struct app_kloop {
    int epfd;
    const struct mesh_env *env;
    uint32_t mark;
    uint32_t dial_timeout_ms;
    struct mesh_conn *conns;
    struct mesh_conn *connecting;
    struct mesh_conn *qhead, *qtail;
    struct mesh_conn *graveyard;
    struct app_klistener *listeners;
    struct app_kloop_engine engines[APP_KLOOP_MAX_ENGINES];
    unsigned n_engines;
    struct pollfd *pfds;
    unsigned pfds_cap;
    struct app_kloop_stats stats;
    uint8_t scratch[APP_KCONN_RX_CHUNK_BYTES];
};

/* ---------------------------------------------------------------------------------------------------------------
 * Addresses and clocks
 * ------------------------------------------------------------------------------------------------------------- */

socklen_t app_kaddr_to_sockaddr(const struct mesh_addr *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (a->family == MESH_ADDR_V4) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = a->port;
        memcpy(&sin->sin_addr, a->ip.v4, 4);
        return sizeof(*sin);
    }
    if (a->family == MESH_ADDR_V6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = a->port;
        memcpy(&sin6->sin6_addr, a->ip.v6, 16);
        return sizeof(*sin6);
    }
    return 0;
}

int app_kaddr_from_sockaddr(const struct sockaddr *sa, struct mesh_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        out->family = MESH_ADDR_V4;
        out->port = sin->sin_port;
        memcpy(out->ip.v4, &sin->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
        /* a v4-mapped address is reported as v4 */
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            out->family = MESH_ADDR_V4;
            memcpy(out->ip.v4, &sin6->sin6_addr.s6_addr[12], 4);
        } else {
            out->family = MESH_ADDR_V6;
            memcpy(out->ip.v6, &sin6->sin6_addr, 16);
        }
        out->port = sin6->sin6_port;
        return 0;
    }
    return -EAFNOSUPPORT;
}

const char *app_kaddr_format(const struct mesh_addr *a, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN];

    if (a->family == MESH_ADDR_V4 && inet_ntop(AF_INET, a->ip.v4, ip, sizeof(ip)) != NULL)
        snprintf(buf, len, "%s:%u", ip, ntohs(a->port));
    else if (a->family == MESH_ADDR_V6 && inet_ntop(AF_INET6, a->ip.v6, ip, sizeof(ip)) != NULL)
        snprintf(buf, len, "[%s]:%u", ip, ntohs(a->port));
    else
        snprintf(buf, len, "?");
    return buf;
}

static uint64_t kloop_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t kloop_now_ns(const struct app_kloop *loop)
{
    struct timespec ts;

    if (loop->env != NULL)
        return mesh_env_now(loop->env);
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int kloop_sock_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno;
    return err;
}

/* ---------------------------------------------------------------------------------------------------------------
 * The default env of the kernel path
 * ------------------------------------------------------------------------------------------------------------- */

static uint64_t kenv_now_ns(void *u)
{
    struct timespec ts;
    (void)u;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int kenv_random(void *u, void *buf, size_t len)
{
    uint8_t *p = buf;
    (void)u;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *kenv_alloc(void *u, size_t n)
{
    (void)u;
    return malloc(n);
}

static void *kenv_realloc(void *u, void *p, size_t n)
{
    (void)u;
    return realloc(p, n);
}

static void kenv_free(void *u, void *p)
{
    (void)u;
    free(p);
}

static void kenv_log(void *u, enum mesh_log_level level, const char *module, const char *msg)
{
    enum app_log_level l = level <= MESH_LOG_ERR       ? APP_LOG_ERROR
                           : level == MESH_LOG_WARNING ? APP_LOG_WARN
                           : level <= MESH_LOG_INFO    ? APP_LOG_INFO
                                                       : APP_LOG_DEBUG;
    (void)u;
    app_log(l, module, "%s", msg);
}

void app_kloop_env_init(struct mesh_env *env, enum mesh_log_level level)
{
    memset(env, 0, sizeof(*env));
    env->now_ns = kenv_now_ns;
    env->random = kenv_random;
    env->alloc = kenv_alloc;
    env->realloc = kenv_realloc;
    env->free = kenv_free;
    env->log = kenv_log;
    env->log_level = level;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Connection bookkeeping
 * ------------------------------------------------------------------------------------------------------------- */

static void kconn_link(struct app_kloop *loop, struct mesh_conn *c)
{
    c->next = loop->conns;
    if (loop->conns != NULL)
        loop->conns->prev = c;
    loop->conns = c;
    loop->stats.live_conns++;
}

static void kconn_unlink(struct mesh_conn *c)
{
    struct app_kloop *loop = c->loop;

    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        loop->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    loop->stats.live_conns--;
}

static void kconn_connecting_add(struct mesh_conn *c)
{
    struct app_kloop *loop = c->loop;

    c->cnext = loop->connecting;
    c->cprev = NULL;
    if (loop->connecting != NULL)
        loop->connecting->cprev = c;
    loop->connecting = c;
}

static void kconn_connecting_del(struct mesh_conn *c)
{
    struct app_kloop *loop = c->loop;

    if (c->cprev != NULL)
        c->cprev->cnext = c->cnext;
    else if (loop->connecting == c)
        loop->connecting = c->cnext;
    if (c->cnext != NULL)
        c->cnext->cprev = c->cprev;
    c->cprev = c->cnext = NULL;
}

static void kconn_enqueue(struct mesh_conn *c, uint32_t flags)
{
    struct app_kloop *loop = c->loop;

    c->pend |= flags;
    if (c->queued)
        return;
    c->queued = true;
    c->qnext = NULL;
    if (loop->qtail != NULL)
        loop->qtail->qnext = c;
    else
        loop->qhead = c;
    loop->qtail = c;
}

/* The epoll interest that matches the connection's state. */
static uint32_t kconn_wanted_events(const struct mesh_conn *c)
{
    uint32_t ev = 0;

    if (c->state == KCONN_CONNECTING)
        return EPOLLOUT;
    if (c->rd_enabled && !c->rd_eof && !c->rx_stalled)
        ev |= EPOLLIN;
    if (c->want_writable && !c->wr_shut)
        ev |= EPOLLOUT;
    return ev;
}

static void kconn_update_events(struct mesh_conn *c)
{
    struct epoll_event ev;
    uint32_t want;

    if (c->fd < 0 || c->state == KCONN_DEAD)
        return;
    want = kconn_wanted_events(c);
    memset(&ev, 0, sizeof(ev));
    ev.events = want;
    ev.data.ptr = &c->obj;
    if (!c->in_epoll) {
        if (epoll_ctl(c->loop->epfd, EPOLL_CTL_ADD, c->fd, &ev) == 0) {
            c->in_epoll = true;
            c->events = want;
        }
        return;
    }
    if (want != c->events && epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->events = want;
}

static void kconn_close_fd(struct mesh_conn *c, bool reset)
{
    if (c->fd < 0)
        return;
    if (c->in_epoll)
        epoll_ctl(c->loop->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    c->in_epoll = false;
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(c->fd);
    c->fd = -1;
}

/* Mark dead, unlink from the live lists and hand the memory to the graveyard. */
static void kconn_bury(struct mesh_conn *c)
{
    struct app_kloop *loop = c->loop;

    if (c->state == KCONN_CONNECTING)
        kconn_connecting_del(c);
    c->state = KCONN_DEAD;
    kconn_unlink(c);
    free(c->rx);
    c->rx = NULL;
    c->rx_len = c->rx_cap = 0;
    c->gnext = loop->graveyard;
    loop->graveyard = c;
}

/* The connection failed or finished: close the socket now and queue on_closed(err). Idempotent. */
static void kconn_fail(struct mesh_conn *c, int err)
{
    if (c->state == KCONN_DEAD || (c->pend & KCONN_PEND_CLOSE))
        return;
    if (c->state == KCONN_CONNECTING)
        kconn_connecting_del(c);
    c->close_err = err;
    kconn_close_fd(c, false);
    kconn_enqueue(c, KCONN_PEND_CLOSE);
}

/* Deliver on_closed and bury. Runs from the loop only. */
static void kconn_call_closed(struct mesh_conn *c)
{
    const struct mesh_conn_cb *cb = c->cb;
    void *u = c->u;
    int err = c->close_err;

    kconn_close_fd(c, false);
    c->loop->stats.closed++;
    kconn_bury(c);
    if (cb != NULL && cb->on_closed != NULL)
        cb->on_closed(u, err);
}

/* Both directions are done: the peer's FIN was read and ours was sent. */
static void kconn_check_done(struct mesh_conn *c)
{
    if (c->rd_eof && c->wr_shut)
        kconn_fail(c, 0);
}

static int kconn_rx_reserve(struct mesh_conn *c, uint32_t need)
{
    uint32_t cap = c->rx_cap ? c->rx_cap : 1024u;
    uint8_t *p;

    if (need <= c->rx_cap)
        return 0;
    while (cap < need)
        cap *= 2;
    if (cap > APP_KCONN_RX_MAX_BYTES)
        cap = APP_KCONN_RX_MAX_BYTES;
    if (cap < need)
        return -ENOBUFS;
    p = realloc(c->rx, cap);
    if (p == NULL)
        return -ENOMEM;
    c->rx = p;
    c->rx_cap = cap;
    return 0;
}

/*
 * Offer data to on_data and keep what was not consumed. data is either the loop's scratch buffer (fresh bytes,
 * c->rx empty) or c->rx itself. Returns false when the connection died in the upcall.
 */
static bool kconn_call_data(struct mesh_conn *c, const uint8_t *data, uint32_t len)
{
    size_t used;
    uint32_t left;

    if (c->cb == NULL || c->cb->on_data == NULL || len == 0)
        return c->state != KCONN_DEAD;
    used = c->cb->on_data(c->u, data, len);
    if (c->state == KCONN_DEAD || (c->pend & KCONN_PEND_CLOSE))
        return false;
    if (used > len)
        used = len;
    left = len - (uint32_t)used;
    if (data == c->rx) {
        if (left > 0 && used > 0)
            memmove(c->rx, c->rx + used, left);
        c->rx_len = left;
    } else if (left > 0) {
        if (kconn_rx_reserve(c, left) < 0) {
            kconn_fail(c, -ENOMEM);
            return false;
        }
        memcpy(c->rx, data + used, left);
        c->rx_len = left;
    }
    if (c->rx_len == 0 && c->rx != NULL) {
        free(c->rx);
        c->rx = NULL;
        c->rx_cap = 0;
    } else if (c->rx_len >= APP_KCONN_RX_MAX_BYTES && used == 0) {
        c->rx_stalled = true;
        kconn_update_events(c);
    }
    return true;
}

/* Readable: one read, then on_data; or the peer's FIN; or an error. */
static void kconn_on_readable(struct mesh_conn *c)
{
    struct app_kloop *loop = c->loop;
    uint8_t *dst;
    uint32_t room;
    ssize_t n;

    if (!c->rd_enabled || c->rd_eof || c->rx_stalled)
        return;
    if (c->rx_len == 0) {
        dst = loop->scratch;
        room = sizeof(loop->scratch);
    } else {
        uint32_t want = c->rx_len + APP_KCONN_RX_CHUNK_BYTES;
        if (want > APP_KCONN_RX_MAX_BYTES)
            want = APP_KCONN_RX_MAX_BYTES;
        if (kconn_rx_reserve(c, want) < 0) {
            kconn_fail(c, -ENOMEM);
            return;
        }
        dst = c->rx + c->rx_len;
        room = c->rx_cap - c->rx_len;
        if (room == 0) { /* full: offer what is held; kconn_call_data() stalls if none of it is taken */
            kconn_call_data(c, c->rx, c->rx_len);
            return;
        }
    }
    do
        n = read(c->fd, dst, room);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        loop->stats.rx_bytes += (uint64_t)n;
        if (dst == loop->scratch) {
            kconn_call_data(c, loop->scratch, (uint32_t)n);
        } else {
            c->rx_len += (uint32_t)n;
            kconn_call_data(c, c->rx, c->rx_len);
        }
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            kconn_fail(c, -errno);
        return;
    }
    /* n == 0: the peer's FIN. What is left unconsumed gets one last offer. */
    c->rd_eof = true;
    if (c->rx_len > 0) {
        if (!kconn_call_data(c, c->rx, c->rx_len))
            return;
        loop->stats.rx_dropped_at_fin += c->rx_len;
        free(c->rx);
        c->rx = NULL;
        c->rx_len = c->rx_cap = 0;
    }
    kconn_update_events(c);
    if (c->cb != NULL && c->cb->on_peer_fin != NULL)
        c->cb->on_peer_fin(c->u);
    if (c->state == KCONN_DEAD)
        return;
    kconn_check_done(c);
}

static void kconn_set_sockopts(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* The dial completed (EPOLLOUT while connecting). */
static void kconn_on_connected(struct mesh_conn *c, uint32_t ev)
{
    int err = kloop_sock_error(c->fd);

    if (err == 0 && (ev & (EPOLLERR | EPOLLHUP)))
        err = ECONNREFUSED;
    if (err != 0) {
        c->loop->stats.dial_errors++;
        kconn_fail(c, -err);
        return;
    }
    kconn_connecting_del(c);
    c->state = KCONN_OPEN;
    kconn_update_events(c);
    if (c->cb != NULL && c->cb->on_writable != NULL)
        c->cb->on_writable(c->u);
}

static void kconn_on_event(struct mesh_conn *c, uint32_t ev)
{
    if (c->state == KCONN_DEAD || (c->pend & KCONN_PEND_CLOSE) || c->fd < 0)
        return;
    if (c->state == KCONN_CONNECTING) {
        kconn_on_connected(c, ev);
        return;
    }
    if (c->cb == NULL)
        return; /* accepted, not yet attached */
    if (ev & EPOLLERR) {
        int err = kloop_sock_error(c->fd);
        if (err != 0) {
            kconn_fail(c, -err);
            return;
        }
    }
    if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && c->rd_enabled && !c->rd_eof) {
        kconn_on_readable(c);
        if (c->state == KCONN_DEAD || (c->pend & KCONN_PEND_CLOSE))
            return;
    }
    if ((ev & EPOLLOUT) && c->want_writable) {
        c->want_writable = false;
        kconn_update_events(c);
        if (c->cb->on_writable != NULL)
            c->cb->on_writable(c->u);
        if (c->state == KCONN_DEAD || (c->pend & KCONN_PEND_CLOSE))
            return;
    }
    if ((ev & EPOLLHUP) && c->fd >= 0) {
        /* Hang-up: both directions are shut. With reading off, park the socket (HUP cannot be masked) until
         * read_enable(true); after our FIN and theirs, kconn_check_done() already queued the close. */
        if (!c->rd_enabled || c->rx_stalled) {
            epoll_ctl(c->loop->epfd, EPOLL_CTL_DEL, c->fd, NULL);
            c->in_epoll = false;
        } else if (c->rd_eof && !c->wr_shut) {
            int err = kloop_sock_error(c->fd);
            kconn_fail(c, err ? -err : -ECONNRESET);
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * The operations table (mesh/conn.h)
 * ------------------------------------------------------------------------------------------------------------- */

static ssize_t kconn_write(struct mesh_conn *c, const struct iovec *v, int n)
{
    struct iovec iov[KLOOP_WRITE_IOV_MAX];
    struct msghdr msg;
    size_t total = 0;
    ssize_t r;
    int cnt;

    if (c->state == KCONN_DEAD || (c->pend & KCONN_PEND_CLOSE))
        return c->close_err < 0 ? c->close_err : -EPIPE;
    if (c->state == KCONN_CONNECTING)
        return -ENOTCONN;
    if (c->wr_shut)
        return -EPIPE;
    if (n <= 0)
        return 0;
    cnt = n < KLOOP_WRITE_IOV_MAX ? n : KLOOP_WRITE_IOV_MAX;
    for (int i = 0; i < cnt; i++) {
        iov[i] = v[i];
        total += v[i].iov_len;
    }
    if (total == 0)
        return 0;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)cnt;
    do
        r = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) {
            c->want_writable = true;
            kconn_update_events(c);
            return 0;
        }
        kconn_fail(c, -err);
        return -err;
    }
    c->loop->stats.tx_bytes += (uint64_t)r;
    if ((size_t)r < total || cnt < n) {
        c->want_writable = true;
        kconn_update_events(c);
    }
    return r;
}

static void kconn_read_enable(struct mesh_conn *c, bool on)
{
    if (c->state == KCONN_DEAD || (c->pend & KCONN_PEND_CLOSE))
        return;
    c->rd_enabled = on;
    if (on) {
        c->rx_stalled = false;
        if (c->rx_len > 0)
            kconn_enqueue(c, KCONN_PEND_DATA);
    }
    kconn_update_events(c);
}

static int kconn_shutdown_wr(struct mesh_conn *c)
{
    if (c->state == KCONN_DEAD || (c->pend & KCONN_PEND_CLOSE))
        return c->close_err < 0 ? c->close_err : -EPIPE;
    if (c->state == KCONN_CONNECTING)
        return -ENOTCONN;
    if (c->wr_shut)
        return 0;
    if (shutdown(c->fd, SHUT_WR) < 0) {
        int err = errno;
        kconn_fail(c, -err);
        return -err;
    }
    c->wr_shut = true;
    c->want_writable = false;
    kconn_update_events(c);
    kconn_check_done(c);
    return 0;
}

static void kconn_abort(struct mesh_conn *c)
{
    if (c == NULL || c->state == KCONN_DEAD)
        return;
    c->loop->stats.aborted++;
    kconn_close_fd(c, true);
    c->pend = 0;
    kconn_bury(c);
}

static struct mesh_conn *kconn_new(struct app_kloop *loop, int fd, enum kconn_state state)
{
    struct mesh_conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->obj.type = KOBJ_CONN;
    c->loop = loop;
    c->fd = fd;
    c->state = state;
    c->rd_enabled = true;
    kconn_link(loop, c);
    return c;
}

/* Bind to src; a non-local address needs IP_TRANSPARENT (CAP_NET_ADMIN), tried only when the plain bind fails. */
static int kconn_bind_src(int fd, const struct mesh_addr *src)
{
    struct sockaddr_storage ss;
    socklen_t len = app_kaddr_to_sockaddr(src, &ss);
    int one = 1;

    if (len == 0)
        return -EINVAL;
    if (src->port == 0)
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) == 0)
        return 0;
    if (errno != EADDRNOTAVAIL)
        return -errno;
    if (src->family == MESH_ADDR_V4) {
        if (setsockopt(fd, IPPROTO_IP, IP_TRANSPARENT, &one, sizeof(one)) < 0)
            return -EADDRNOTAVAIL;
    } else if (setsockopt(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, &one, sizeof(one)) < 0) {
        return -EADDRNOTAVAIL;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0)
        return -errno;
    return 0;
}

static int kconn_dial(void *backend, const struct mesh_addr *src, const struct mesh_addr *dst,
                      const struct mesh_conn_cb *cb, void *u, struct mesh_conn **out)
{
    struct app_kloop *loop = backend;
    struct sockaddr_storage ss;
    socklen_t len = app_kaddr_to_sockaddr(dst, &ss);
    struct mesh_conn *c;
    int fd, rc;

    if (len == 0 || (src != NULL && src->family != dst->family))
        return -EINVAL;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0)
        return -errno;
    if (loop->mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &loop->mark, sizeof(loop->mark)) < 0) {
        rc = -errno;
        goto fail;
    }
    kconn_set_sockopts(fd);
    if (src != NULL && (rc = kconn_bind_src(fd, src)) < 0)
        goto fail;
    c = kconn_new(loop, fd, KCONN_CONNECTING);
    if (c == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    c->cb = cb;
    c->u = u;
    if (connect(fd, (struct sockaddr *)&ss, len) == 0) {
        c->state = KCONN_OPEN;
        kconn_update_events(c);
        kconn_enqueue(c, KCONN_PEND_WRITABLE);
    } else if (errno == EINPROGRESS) {
        c->connect_deadline_ms = kloop_mono_ms() + loop->dial_timeout_ms;
        kconn_connecting_add(c);
        kconn_update_events(c);
        if (!c->in_epoll) {
            rc = -ENOMEM;
            c->fd = -1;
            c->pend = 0;
            kconn_bury(c);
            goto fail;
        }
    } else if (errno == ECONNREFUSED || errno == ETIMEDOUT) {
        /* reported like an asynchronous failure, so callers see one path */
        c->state = KCONN_OPEN;
        loop->stats.dial_errors++;
        kconn_fail(c, -errno);
    } else {
        rc = -errno;
        c->fd = -1;
        kconn_bury(c);
        goto fail;
    }
    loop->stats.dialed++;
    *out = c;
    return 0;
fail:
    loop->stats.dial_errors++;
    close(fd);
    return rc;
}

const struct mesh_conn_ops app_kconn_ops = {
    .write = kconn_write,
    .read_enable = kconn_read_enable,
    .shutdown_wr = kconn_shutdown_wr,
    .abort = kconn_abort,
    .dial = kconn_dial,
};

void app_kconn_set_cb(struct mesh_conn *c, const struct mesh_conn_cb *cb, void *u)
{
    c->cb = cb;
    c->u = u;
}

int app_kconn_fd(const struct mesh_conn *c)
{
    return c->fd;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Listeners
 * ------------------------------------------------------------------------------------------------------------- */

static int klistener_orig_dst(const struct app_klistener *l, int fd, struct mesh_addr *out)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (l->kind == APP_KLISTEN_REDIRECT) {
        int level = l->addr.family == MESH_ADDR_V4 ? SOL_IP : SOL_IPV6;
        int opt = l->addr.family == MESH_ADDR_V4 ? SO_ORIGINAL_DST : IP6T_SO_ORIGINAL_DST;
        if (getsockopt(fd, level, opt, &ss, &len) == 0 && app_kaddr_from_sockaddr((struct sockaddr *)&ss, out) == 0)
            return 0;
        len = sizeof(ss); /* not NATed (a direct connection): the local address is the destination */
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    return app_kaddr_from_sockaddr((struct sockaddr *)&ss, out);
}

static void klistener_on_event(struct app_klistener *l)
{
    struct app_kloop *loop = l->loop;

    for (int i = 0; i < KLOOP_ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        struct mesh_addr src, dst;
        struct mesh_conn *c;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                loop->stats.accept_errors++;
            return;
        }
        if (app_kaddr_from_sockaddr((struct sockaddr *)&ss, &src) < 0 || klistener_orig_dst(l, fd, &dst) < 0) {
            loop->stats.accept_errors++;
            close(fd);
            continue;
        }
        kconn_set_sockopts(fd);
        c = kconn_new(loop, fd, KCONN_OPEN);
        if (c == NULL) {
            loop->stats.accept_errors++;
            close(fd);
            continue;
        }
        kconn_update_events(c);
        if (!c->in_epoll) {
            loop->stats.accept_errors++;
            kconn_abort(c);
            continue;
        }
        loop->stats.accepted++;
        l->cb(l->u, l, c, &src, &dst);
        if (c->state != KCONN_DEAD && c->cb == NULL)
            kconn_abort(c);
    }
}

int app_kloop_listen(struct app_kloop *loop, const struct mesh_addr *addr, enum app_klisten_kind kind,
                     app_kloop_accept_fn cb, void *u, struct app_klistener **out)
{
    struct sockaddr_storage ss;
    socklen_t len = app_kaddr_to_sockaddr(addr, &ss);
    struct app_klistener *l;
    struct epoll_event ev;
    int fd, one = 1, rc;

    if (len == 0 || cb == NULL)
        return -EINVAL;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (kind == APP_KLISTEN_TPROXY) {
        rc = addr->family == MESH_ADDR_V4 ? setsockopt(fd, IPPROTO_IP, IP_TRANSPARENT, &one, sizeof(one))
                                          : setsockopt(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, &one, sizeof(one));
        if (rc < 0)
            goto fail_errno;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, SOMAXCONN) < 0)
        goto fail_errno;
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        close(fd);
        return -ENOMEM;
    }
    l->obj.type = KOBJ_LISTENER;
    l->loop = loop;
    l->fd = fd;
    l->kind = kind;
    l->cb = cb;
    l->u = u;
    len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
        app_kaddr_from_sockaddr((struct sockaddr *)&ss, &l->addr) < 0)
        l->addr = *addr;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.ptr = &l->obj;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        rc = -errno;
        close(fd);
        free(l);
        return rc;
    }
    l->next = loop->listeners;
    if (loop->listeners != NULL)
        loop->listeners->prev = l;
    loop->listeners = l;
    *out = l;
    return 0;
fail_errno:
    rc = -errno;
    close(fd);
    return rc;
}

void app_klistener_addr(const struct app_klistener *l, struct mesh_addr *out)
{
    *out = l->addr;
}

void app_klistener_close(struct app_klistener *l)
{
    struct app_kloop *loop;

    if (l == NULL)
        return;
    loop = l->loop;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, l->fd, NULL);
    close(l->fd);
    if (l->prev != NULL)
        l->prev->next = l->next;
    else
        loop->listeners = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
    free(l);
}

/* ---------------------------------------------------------------------------------------------------------------
 * The loop
 * ------------------------------------------------------------------------------------------------------------- */

struct app_kloop *app_kloop_new(const struct mesh_env *env, int *err)
{
    struct app_kloop *loop = calloc(1, sizeof(*loop));

    if (loop == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        *err = -errno;
        free(loop);
        return NULL;
    }
    loop->env = env;
    loop->dial_timeout_ms = APP_KLOOP_DIAL_TIMEOUT_MS;
    return loop;
}

/* Free the dead; one still referenced by the pending queue waits for the next iteration (or app_kloop_free). */
static void kloop_free_graveyard(struct app_kloop *loop, bool all)
{
    struct mesh_conn **pp = &loop->graveyard;

    while (*pp != NULL) {
        struct mesh_conn *c = *pp;
        if (c->queued && !all) {
            pp = &c->gnext;
            continue;
        }
        *pp = c->gnext;
        free(c);
    }
}

void app_kloop_free(struct app_kloop *loop)
{
    if (loop == NULL)
        return;
    while (loop->listeners != NULL)
        app_klistener_close(loop->listeners);
    while (loop->conns != NULL)
        kconn_abort(loop->conns);
    loop->qhead = loop->qtail = NULL;
    kloop_free_graveyard(loop, true);
    close(loop->epfd);
    free(loop->pfds);
    free(loop);
}

void app_kloop_set_mark(struct app_kloop *loop, uint32_t mark)
{
    loop->mark = mark;
}

void app_kloop_set_dial_timeout(struct app_kloop *loop, uint32_t ms)
{
    loop->dial_timeout_ms = ms ? ms : APP_KLOOP_DIAL_TIMEOUT_MS;
}

int app_kloop_add_engine(struct app_kloop *loop, const struct app_kloop_engine *e)
{
    if (loop->n_engines >= APP_KLOOP_MAX_ENGINES)
        return -ENOSPC;
    loop->engines[loop->n_engines++] = *e;
    return 0;
}

void app_kloop_remove_engine(struct app_kloop *loop, void *u)
{
    unsigned j = 0;

    for (unsigned i = 0; i < loop->n_engines; i++)
        if (loop->engines[i].u != u)
            loop->engines[j++] = loop->engines[i];
    loop->n_engines = j;
}

const struct app_kloop_stats *app_kloop_stats(const struct app_kloop *loop)
{
    return &loop->stats;
}

/* Milliseconds to wait: bounded by max_timeout_ms, the nearest engine deadline, the nearest dial timeout, and 0
 * when upcalls are queued. -1: no bound. */
static int kloop_timeout_ms(struct app_kloop *loop, int max_timeout_ms)
{
    int64_t t = max_timeout_ms < 0 ? -1 : max_timeout_ms;

    if (loop->qhead != NULL)
        return 0;
    if (loop->n_engines > 0) {
        uint64_t next = UINT64_MAX, now;
        for (unsigned i = 0; i < loop->n_engines; i++) {
            uint64_t d = loop->engines[i].next_deadline(loop->engines[i].u);
            if (d < next)
                next = d;
        }
        if (next != UINT64_MAX) {
            now = kloop_now_ns(loop);
            int64_t ms = next <= now ? 0 : (int64_t)((next - now + 999999u) / 1000000u);
            if (t < 0 || ms < t)
                t = ms;
        }
    }
    if (loop->connecting != NULL) {
        uint64_t now = kloop_mono_ms();
        for (struct mesh_conn *c = loop->connecting; c != NULL; c = c->cnext) {
            int64_t ms = c->connect_deadline_ms <= now ? 0 : (int64_t)(c->connect_deadline_ms - now);
            if (t < 0 || ms < t)
                t = ms;
        }
    }
    if (t > INT_MAX)
        t = INT_MAX;
    return (int)t;
}

static void kloop_check_dial_timeouts(struct app_kloop *loop)
{
    uint64_t now = kloop_mono_ms();
    struct mesh_conn *c = loop->connecting, *next;

    for (; c != NULL; c = next) {
        next = c->cnext;
        if (c->connect_deadline_ms <= now) {
            loop->stats.connect_timeouts++;
            loop->stats.dial_errors++;
            kconn_fail(c, -ETIMEDOUT);
        }
    }
}

static void kloop_run_engines(struct app_kloop *loop)
{
    if (loop->n_engines == 0)
        return;
    uint64_t now = kloop_now_ns(loop);
    for (unsigned i = 0; i < loop->n_engines; i++) {
        struct app_kloop_engine e = loop->engines[i];
        if (e.next_deadline(e.u) <= now)
            e.on_deadline(e.u, now);
    }
}

/* Deliver queued upcalls: a few passes, so upcalls queued by upcalls run soon but cannot starve the sockets. */
static void kloop_run_pending(struct app_kloop *loop)
{
    for (int round = 0; round < KLOOP_PENDING_ROUNDS && loop->qhead != NULL; round++) {
        struct mesh_conn *c = loop->qhead;
        loop->qhead = loop->qtail = NULL;
        while (c != NULL) {
            struct mesh_conn *next = c->qnext;
            uint32_t pend = c->pend;

            c->queued = false;
            c->qnext = NULL;
            c->pend = 0;
            if (c->state == KCONN_DEAD) {
                c = next;
                continue;
            }
            if (pend & KCONN_PEND_CLOSE) {
                kconn_call_closed(c);
            } else if (c->cb != NULL) {
                if ((pend & KCONN_PEND_DATA) && c->rd_enabled && c->rx_len > 0)
                    kconn_call_data(c, c->rx, c->rx_len);
                if ((pend & KCONN_PEND_WRITABLE) && c->state == KCONN_OPEN && !(c->pend & KCONN_PEND_CLOSE) &&
                    c->cb->on_writable != NULL)
                    c->cb->on_writable(c->u);
            }
            c = next;
        }
    }
}

static int kloop_ensure_pfds(struct app_kloop *loop, unsigned n)
{
    struct pollfd *p;

    if (n <= loop->pfds_cap)
        return 0;
    p = realloc(loop->pfds, n * sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    loop->pfds = p;
    loop->pfds_cap = n;
    return 0;
}

int app_kloop_poll(struct app_kloop *loop, struct pollfd *extra, unsigned n_extra, int max_timeout_ms)
{
    struct epoll_event evs[APP_KLOOP_MAX_EVENTS];
    int timeout = kloop_timeout_ms(loop, max_timeout_ms);
    int n, n_extra_ready = 0;

    loop->stats.iterations++;
    if (n_extra > 0) {
        if (kloop_ensure_pfds(loop, n_extra + 1) < 0)
            return -ENOMEM;
        loop->pfds[0].fd = loop->epfd;
        loop->pfds[0].events = POLLIN;
        loop->pfds[0].revents = 0;
        for (unsigned i = 0; i < n_extra; i++) {
            loop->pfds[i + 1] = extra[i];
            loop->pfds[i + 1].revents = 0;
        }
        n = poll(loop->pfds, n_extra + 1, timeout);
        if (n < 0)
            return -errno;
        for (unsigned i = 0; i < n_extra; i++) {
            extra[i].revents = loop->pfds[i + 1].revents;
            if (extra[i].revents)
                n_extra_ready++;
        }
        timeout = 0;
        if (!(loop->pfds[0].revents & POLLIN)) {
            n = 0;
            goto timers;
        }
    }
    n = epoll_wait(loop->epfd, evs, APP_KLOOP_MAX_EVENTS, timeout);
    if (n < 0) {
        if (errno == EINTR)
            return -EINTR;
        return -errno;
    }
    for (int i = 0; i < n; i++) {
        struct kobj *o = evs[i].data.ptr;
        if (o->type == KOBJ_LISTENER)
            klistener_on_event((struct app_klistener *)(void *)o);
        else
            kconn_on_event((struct mesh_conn *)(void *)o, evs[i].events);
    }
timers:
    if (loop->connecting != NULL)
        kloop_check_dial_timeouts(loop);
    kloop_run_engines(loop);
    kloop_run_pending(loop);
    kloop_free_graveyard(loop, false);
    return n + n_extra_ready;
}
