/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Connection blocks and the owner-facing operations: the per-lcore pool and 4-tuple table, listeners, ephemeral
 * ports, ISNs (RFC 6528), connect/write/read_enable/shutdown/abort, and the deferred-upcall pass.
 *
 * Invariants:
 *  - A block is in exactly one of: the free stack, or the table (state != CLOSED or awaiting release).
 *  - Upcalls happen only in dp_tcp_run_deferred(); the owner's calls never call back up.
 *  - A block is released only when it is not on the deferred list and its owner no longer holds it
 *    (on_closed delivered, or abort called).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <rte_hash.h>
#include <rte_jhash.h>
#include <rte_malloc.h>
#include <rte_random.h>

#include "dpdk/stack.h"
#include "dpdk/tcp_impl.h"

struct tcp_key {
    uint32_t lip, rip;
    uint16_t lport, rport;
};

static const char *const tcp_state_names[DP_TCP_N_STATES] = {
    "CLOSED",     "LISTEN",     "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1",
    "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING",  "LAST_ACK",     "TIME_WAIT",
};

const char *dp_tcp_state_name(enum dp_tcp_state s)
{
    return s < DP_TCP_N_STATES ? tcp_state_names[s] : "?";
}

void dp_tcp_config_defaults(struct dp_tcp_config *cfg)
{
    *cfg = (struct dp_tcp_config){
        .max_conns = 16384,
        .buffer_mbufs = 16383,
        .sndbuf_max = 512 * 1024,
        .rcvbuf_max = 512 * 1024,
        .syn_backlog = 1024,
        .cc = DP_TCP_CC_CUBIC,
        .rto_min_ms = 200,
        .rto_max_ms = 60000,
        .time_wait_ms = 60000,
        .keepalive_idle_ms = 0,
        .keepalive_intvl_ms = 75000,
        .keepalive_probes = 9,
        .delack_ms = 40,
        .ephemeral_lo = 32768,
        .ephemeral_hi = 60999,
        .sack = true,
        .timestamps = true,
        .window_scaling = true,
    };
}

const struct dp_tcp_config *dp_tcp_get_config(const struct dp_lcore *lc)
{
    return &lc->tcp->cfg;
}

int dp_tcp_init(struct dp_lcore *lc, const struct dp_tcp_config *cfg, int socket)
{
    char name[RTE_HASH_NAMESIZE];
    struct rte_hash_parameters hp = {
        .entries = cfg->max_conns,
        .key_len = sizeof(struct tcp_key),
        .hash_func = rte_jhash,
        .socket_id = socket,
    };
    struct dp_tcp *t = rte_zmalloc_socket("zw_tcp", sizeof(*t), RTE_CACHE_LINE_SIZE, socket);

    if (t == NULL)
        return -ENOMEM;
    t->cfg = *cfg;
    snprintf(name, sizeof(name), "zw_tcp_%u", lc->lcore_id);
    hp.name = name;
    t->table = rte_hash_create(&hp);
    t->conns = rte_zmalloc_socket("zw_tcbs", sizeof(struct mesh_conn) * cfg->max_conns, RTE_CACHE_LINE_SIZE, socket);
    t->free_stack = rte_malloc_socket("zw_tcb_free", sizeof(int32_t) * cfg->max_conns, 0, socket);
    snprintf(name, sizeof(name), "zw_tcpbuf_%u", lc->lcore_id);
    t->bufpool = rte_pktmbuf_pool_create(name, cfg->buffer_mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, socket);
    if (t->table == NULL || t->conns == NULL || t->free_stack == NULL || t->bufpool == NULL) {
        lc->tcp = t;
        dp_tcp_fini(lc);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < cfg->max_conns; i++)
        t->free_stack[i] = (int32_t)(cfg->max_conns - 1 - i);
    t->n_free = cfg->max_conns;
    for (int i = 0; i < 4; i++) {
        t->isn_secret[i] = (uint32_t)rte_rand();
        t->cookie_secret[i] = (uint32_t)rte_rand();
    }
    t->next_port = (uint16_t)(cfg->ephemeral_lo + rte_rand_max((uint64_t)cfg->ephemeral_hi - cfg->ephemeral_lo + 1));
    t->wheel_ms = lc->now_ms;
    lc->tcp = t;
    return 0;
}

void dp_tcp_fini(struct dp_lcore *lc)
{
    struct dp_tcp *t = lc->tcp;

    if (t == NULL)
        return;
    if (t->conns != NULL) {
        for (uint32_t i = 0; i < t->cfg.max_conns; i++) {
            struct mesh_conn *c = &t->conns[i];
            if (c->lc != NULL) {
                tcp_bufq_free(&c->snd);
                tcp_bufq_free(&c->rcvq);
                tcp_ooo_free(&c->ooo);
            }
        }
    }
    rte_mempool_free(t->bufpool);
    rte_free(t->free_stack);
    rte_free(t->conns);
    rte_hash_free(t->table);
    rte_free(t);
    lc->tcp = NULL;
}

/* ---- blocks ---- */

struct mesh_conn *tcp_conn_lookup(struct dp_tcp *t, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport)
{
    struct tcp_key k = {.lip = lip, .rip = rip, .lport = lport, .rport = rport};
    int pos = rte_hash_lookup(t->table, &k);
    void *data;

    if (pos < 0)
        return NULL;
    if (rte_hash_lookup_data(t->table, &k, &data) < 0)
        return NULL;
    return &t->conns[(uintptr_t)data];
}

struct mesh_conn *tcp_conn_alloc(struct dp_lcore *lc, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport)
{
    struct dp_tcp *t = tcp_of(lc);
    struct tcp_key k = {.lip = lip, .rip = rip, .lport = lport, .rport = rport};
    struct mesh_conn *c;
    int32_t idx;

    if (t->n_free == 0) {
        dp_count(lc, DP_CNT_TCP_CONN_POOL_EMPTY);
        return NULL;
    }
    idx = t->free_stack[t->n_free - 1];
    if (rte_hash_add_key_data(t->table, &k, (void *)(uintptr_t)idx) < 0) {
        dp_count(lc, DP_CNT_TCP_CONN_POOL_EMPTY);
        return NULL;
    }
    t->n_free--;
    c = &t->conns[idx];
    memset(c, 0, sizeof(*c));
    c->index = idx;
    c->lc = lc;
    c->local_ip = lip;
    c->local_port = lport;
    c->remote_ip = rip;
    c->remote_port = rport;
    c->state = DP_TCP_CLOSED;
    c->rcv_wscale = tcp_wscale_for(t->cfg.rcvbuf_max);
    c->rto_ms = TCP_INITIAL_RTO_MS;
    c->ts_offset = (uint32_t)rte_rand();
    c->last_rx_ms = lc->now_ms;
    c->ka_idle_ms = t->cfg.keepalive_idle_ms;
    c->ka_intvl_ms = t->cfg.keepalive_intvl_ms;
    c->ka_probes = t->cfg.keepalive_probes;
    return c;
}

void tcp_conn_release(struct mesh_conn *c)
{
    struct dp_lcore *lc = c->lc;
    struct dp_tcp *t = tcp_of(lc);
    struct tcp_key k = {.lip = c->local_ip, .rip = c->remote_ip, .lport = c->local_port, .rport = c->remote_port};

    if (c->flags & (TCPF_DEFERRED | TCPF_IN_PASS)) { /* the deferred pass will come back to it */
        c->flags &= ~TCPF_OWNED;
        c->state = DP_TCP_CLOSED;
        return;
    }
    if (c->listener != NULL && c->state == DP_TCP_SYN_RECEIVED && c->listener->half_open > 0)
        c->listener->half_open--;
    tcp_timer_cancel(c);
    tcp_bufq_free(&c->snd);
    tcp_bufq_free(&c->rcvq);
    tcp_ooo_free(&c->ooo);
    rte_hash_del_key(t->table, &k);
    c->lc = NULL;
    c->state = DP_TCP_CLOSED;
    t->free_stack[t->n_free++] = c->index;
    dp_count(lc, DP_CNT_TCP_CONN_CLOSED);
}

void tcp_set_state(struct mesh_conn *c, enum dp_tcp_state s)
{
    if (c->state == DP_TCP_SYN_RECEIVED && c->listener != NULL && c->listener->half_open > 0)
        c->listener->half_open--;
    c->state = (uint8_t)s;
}

void tcp_defer(struct mesh_conn *c)
{
    struct dp_tcp *t = tcp_of(c->lc);

    if (c->flags & TCPF_DEFERRED)
        return;
    c->flags |= TCPF_DEFERRED;
    c->defer_next = NULL;
    if (t->defer_tail != NULL)
        t->defer_tail->defer_next = c;
    else
        t->defer_head = c;
    t->defer_tail = c;
}

void tcp_conn_fail(struct mesh_conn *c, int err)
{
    c->close_err = err;
    tcp_set_state(c, DP_TCP_CLOSED);
    c->rtx_at = c->delack_at = c->persist_at = c->keepalive_at = c->timewait_at = 0;
    tcp_timer_cancel(c);
    tcp_defer(c);
}

uint32_t tcp_offered_options(const struct dp_tcp *t)
{
    return (t->cfg.sack ? TCPF_SACK_OK : 0) | (t->cfg.timestamps ? TCPF_TS_OK : 0) |
           (t->cfg.window_scaling ? TCPF_WS_OK : 0);
}

uint8_t tcp_wscale_for(uint32_t rcvbuf)
{
    uint8_t ws = 0;
    while (ws < TCP_MAX_WSCALE && (rcvbuf >> ws) > 65535)
        ws++;
    return ws;
}

uint32_t tcp_rcv_space(const struct mesh_conn *c)
{
    uint32_t max = tcp_of(c->lc)->cfg.rcvbuf_max;
    uint32_t used = c->rcvq.bytes + c->ooo.bytes;
    return used >= max ? 0 : max - used;
}

uint32_t tcp_isn(struct dp_tcp *t, uint64_t now_ms, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport)
{
    /* RFC 6528: a 4 us clock plus a keyed hash of the connection id */
    uint32_t h = rte_jhash_3words(lip ^ t->isn_secret[1], rip ^ t->isn_secret[2],
                                  ((uint32_t)lport << 16 | rport) ^ t->isn_secret[3], t->isn_secret[0]);
    return h + (uint32_t)(now_ms * 250);
}

/* ---- listeners ---- */

struct dp_tcp_listener *tcp_listener_find(struct dp_tcp *t, uint32_t ip, uint16_t port)
{
    struct dp_tcp_listener *wild = NULL;
    for (uint32_t i = 0; i < TCP_MAX_LISTENERS; i++) {
        struct dp_tcp_listener *l = &t->listeners[i];
        if (!l->in_use || l->port != port)
            continue;
        if (l->ip == ip)
            return l;
        if (l->ip == 0)
            wild = l;
    }
    return wild;
}

struct dp_tcp_listener *dp_tcp_listen(struct dp_lcore *lc, uint32_t ip, uint16_t port,
                                      const struct dp_tcp_listen_opts *opts, dp_tcp_accept_fn fn, void *ctx,
                                      int *err)
{
    struct dp_tcp *t = tcp_of(lc);

    for (uint32_t i = 0; i < TCP_MAX_LISTENERS; i++) {
        if (t->listeners[i].in_use && t->listeners[i].port == port && t->listeners[i].ip == ip) {
            *err = -EADDRINUSE;
            return NULL;
        }
    }
    for (uint32_t i = 0; i < TCP_MAX_LISTENERS; i++) {
        struct dp_tcp_listener *l = &t->listeners[i];
        if (l->in_use)
            continue;
        *l = (struct dp_tcp_listener){.ip = ip, .port = port, .in_use = true, .fn = fn, .ctx = ctx};
        if (opts != NULL)
            l->opts = *opts;
        t->n_listeners++;
        return l;
    }
    *err = -ENOSPC;
    return NULL;
}

void dp_tcp_unlisten(struct dp_lcore *lc, struct dp_tcp_listener *l)
{
    struct dp_tcp *t = tcp_of(lc);

    /* half-open connections of this listener complete or time out on their own, unowned */
    for (uint32_t i = 0; i < t->cfg.max_conns; i++)
        if (t->conns[i].lc != NULL && t->conns[i].listener == l)
            t->conns[i].listener = NULL;
    l->in_use = false;
    t->n_listeners--;
}

int dp_tcp_capture(struct dp_lcore *lc, int cls, const struct dp_tcp_listen_opts *opts, dp_tcp_accept_fn fn,
                   void *ctx)
{
    struct dp_tcp *t = tcp_of(lc);
    struct dp_tcp_listener *l;

    if (t == NULL || cls <= DP_FLOW_PASSTHROUGH || cls >= DP_FLOW_N_CLASSES)
        return -EINVAL;
    l = &t->capture[cls];
    if (fn == NULL) {
        for (uint32_t i = 0; i < t->cfg.max_conns; i++) /* half-open ones finish unowned */
            if (t->conns[i].lc != NULL && t->conns[i].listener == l)
                t->conns[i].listener = NULL;
        memset(l, 0, sizeof(*l));
        return 0;
    }
    *l = (struct dp_tcp_listener){.in_use = true, .fn = fn, .ctx = ctx};
    if (opts != NULL)
        l->opts = *opts;
    return 0;
}

/* ---- owner operations ---- */

static int tcp_pick_port(struct dp_lcore *lc, uint32_t lip, uint32_t rip, uint16_t rport, uint16_t *out)
{
    struct dp_tcp *t = tcp_of(lc);
    uint32_t range = (uint32_t)t->cfg.ephemeral_hi - t->cfg.ephemeral_lo + 1;

    for (uint32_t tries = 0; tries < range; tries++) {
        uint16_t p = t->next_port;
        t->next_port = (uint16_t)(p >= t->cfg.ephemeral_hi ? t->cfg.ephemeral_lo : p + 1);
        if (tcp_listener_find(t, lip, p) != NULL)
            continue;
        if (lc->stack->n_lcores > 1 && p % (unsigned)lc->stack->n_lcores != lc->worker)
            continue; /* replies to this port are handed to its owner: make the owner us */
        if (tcp_conn_lookup(t, lip, p, rip, rport) == NULL) {
            *out = p;
            return 0;
        }
    }
    dp_count(lc, DP_CNT_TCP_NO_PORT);
    return -EADDRNOTAVAIL;
}

int dp_tcp_connect(struct dp_lcore *lc, uint32_t src_ip, uint32_t dst_ip, uint16_t dst_port,
                   const struct mesh_conn_cb *cb, void *u, struct mesh_conn **out)
{
    struct dp_tcp *t = tcp_of(lc);
    const struct dp_nexthop *nh = dp_route_lookup(lc->stack, dst_ip);
    struct mesh_conn *c;
    uint16_t lport;
    int rc;

    if (nh == NULL)
        return -ENETUNREACH;
    if (src_ip == 0)
        src_ip = lc->stack->ports[nh->port].addr;
    rc = tcp_pick_port(lc, src_ip, dst_ip, dst_port, &lport);
    if (rc < 0)
        return rc;
    c = tcp_conn_alloc(lc, src_ip, lport, dst_ip, dst_port);
    if (c == NULL)
        return -ENOMEM;
    c->cb = cb;
    c->u = u;
    c->flags |= TCPF_OWNED | tcp_offered_options(t); /* kept if the peer agrees */
    c->iss = tcp_isn(t, lc->now_ms, src_ip, lport, dst_ip, dst_port);
    c->snd_una = c->snd_nxt = c->snd_max = c->iss;
    c->mss = (uint16_t)(lc->stack->ports[nh->port].mtu - 40);
    tcp_cc_init(c);
    tcp_set_state(c, DP_TCP_SYN_SENT);
    tcp_send_syn(c, false);
    dp_count(lc, DP_CNT_TCP_CONN_OPENED_ACTIVE);
    *out = c;
    return 0;
}

void dp_tcp_set_callbacks(struct mesh_conn *c, const struct mesh_conn_cb *cb, void *u)
{
    c->cb = cb;
    c->u = u;
}

void dp_tcp_set_keepalive(struct mesh_conn *c, uint32_t idle_ms, uint32_t intvl_ms, uint32_t probes)
{
    c->ka_idle_ms = idle_ms;
    c->ka_intvl_ms = intvl_ms ? intvl_ms : 1000;
    c->ka_probes = probes ? probes : 1;
    tcp_keepalive_arm(c);
}

static bool tcp_can_send_data(const struct mesh_conn *c)
{
    return c->state == DP_TCP_ESTABLISHED || c->state == DP_TCP_CLOSE_WAIT || c->state == DP_TCP_SYN_SENT ||
           c->state == DP_TCP_SYN_RECEIVED;
}

ssize_t dp_tcp_write(struct mesh_conn *c, const struct iovec *v, int n)
{
    struct dp_tcp *t = tcp_of(c->lc);
    size_t total = 0;

    if (c->flags & TCPF_FIN_QUEUED)
        return -EPIPE;
    if (!tcp_can_send_data(c))
        return c->state == DP_TCP_CLOSED ? -ENOTCONN : -EPIPE;
    for (int i = 0; i < n; i++) {
        uint32_t got = tcp_bufq_append(&c->snd, t->bufpool, v[i].iov_base, (uint32_t)v[i].iov_len, t->cfg.sndbuf_max);
        total += got;
        if (got < v[i].iov_len) {
            if (c->snd.bytes < t->cfg.sndbuf_max)
                dp_count(c->lc, DP_CNT_TCP_BUFFER_ALLOC_FAILED);
            c->flags |= TCPF_WANT_WRITABLE;
            break;
        }
    }
    if (total > 0)
        tcp_defer(c);
    return (ssize_t)total;
}

void dp_tcp_read_enable(struct mesh_conn *c, bool on)
{
    if (on) {
        if (c->flags & TCPF_READ_OFF) {
            c->flags &= ~TCPF_READ_OFF;
            tcp_defer(c);
        }
    } else {
        c->flags |= TCPF_READ_OFF;
    }
}

int dp_tcp_shutdown_wr(struct mesh_conn *c)
{
    if (c->flags & TCPF_FIN_QUEUED)
        return 0;
    if (!tcp_can_send_data(c))
        return -ENOTCONN;
    c->flags |= TCPF_FIN_QUEUED;
    tcp_defer(c);
    return 0;
}

void dp_tcp_abort(struct mesh_conn *c)
{
    if (c->state != DP_TCP_CLOSED && c->state != DP_TCP_SYN_SENT && c->state != DP_TCP_TIME_WAIT)
        tcp_send_rst_for(c);
    c->flags &= ~TCPF_OWNED;
    c->cb = NULL;
    c->u = NULL;
    tcp_set_state(c, DP_TCP_CLOSED);
    tcp_release_or_defer(c);
}

void dp_tcp_addrs(const struct mesh_conn *c, uint32_t *local_ip, uint16_t *local_port, uint32_t *remote_ip,
                  uint16_t *remote_port)
{
    *local_ip = c->local_ip;
    *local_port = c->local_port;
    *remote_ip = c->remote_ip;
    *remote_port = c->remote_port;
}

void tcp_release_or_defer(struct mesh_conn *c)
{
    if (c->flags & (TCPF_DEFERRED | TCPF_IN_PASS))
        c->flags &= ~TCPF_OWNED; /* released when the deferred pass reaches it */
    else
        tcp_conn_release(c);
}

/* ---- the deferred pass ---- */

/* Offer queued bytes to the owner until it stops taking them. */
static void tcp_deliver(struct mesh_conn *c)
{
    uint32_t before = tcp_rcv_space(c);

    while (c->rcvq.bytes > 0 && (c->flags & (TCPF_OWNED | TCPF_READ_OFF)) == TCPF_OWNED && c->cb != NULL) {
        struct rte_mbuf *m = c->rcvq.head;
        size_t took = c->cb->on_data(c->u, rte_pktmbuf_mtod(m, const uint8_t *), m->data_len);
        if (c->lc == NULL || !(c->flags & TCPF_OWNED))
            return;
        if (took > m->data_len)
            took = m->data_len;
        tcp_bufq_drop(&c->rcvq, (uint32_t)took);
        if (took < m->data_len)
            break;
    }
    /* a window that opened by a segment or more is worth telling (RFC 9293 §3.8.6.2.2, receiver SWS); after the
     * peer's FIN nothing more can come, and its side may be gone (an update would then draw a RST) */
    if (c->flags & TCPF_PEER_FIN)
        return;
    if (tcp_rcv_space(c) - before >= c->mss || (before == 0 && tcp_rcv_space(c) > 0))
        c->flags |= TCPF_ACK_NOW;
}

/*
 * The owner hears on_closed when the connection is over for it: at once after a reset or a timeout, and for an
 * orderly close only once our FIN is acknowledged AND every byte and the peer's FIN have been handed up. TIME-WAIT
 * alone is not enough: the owner may still have data to read (reading paused for backpressure).
 */
static bool tcp_closed_for_owner(const struct mesh_conn *c)
{
    if (c->state == DP_TCP_CLOSED && c->close_err != 0)
        return true;
    return (c->flags & (TCPF_FIN_ACKED | TCPF_PEER_FIN_TOLD)) == (TCPF_FIN_ACKED | TCPF_PEER_FIN_TOLD) &&
           c->rcvq.bytes == 0;
}

static void tcp_process_deferred(struct mesh_conn *c)
{
    struct dp_tcp *t = tcp_of(c->lc);

    if ((c->flags & TCPF_OWNED) && c->cb != NULL) {
        if (c->rcvq.bytes > 0)
            tcp_deliver(c);
        if (!(c->flags & TCPF_OWNED))
            goto out;
        /* the FIN is the end of the byte stream: told after the last byte, and not while reading is paused; also
         * in CLOSED after an orderly close (LAST-ACK done while the owner was still reading), not after a reset */
        if ((c->flags & (TCPF_PEER_FIN | TCPF_PEER_FIN_TOLD | TCPF_READ_OFF)) == TCPF_PEER_FIN &&
            c->rcvq.bytes == 0 && (c->state != DP_TCP_CLOSED || c->close_err == 0)) {
            c->flags |= TCPF_PEER_FIN_TOLD;
            c->cb->on_peer_fin(c->u);
            if (!(c->flags & TCPF_OWNED))
                goto out;
        }
        if (c->state != DP_TCP_CLOSED && c->state != DP_TCP_SYN_SENT && c->state != DP_TCP_SYN_RECEIVED) {
            bool first = !(c->flags & TCPF_CONNECTED_TOLD);
            bool room = (c->flags & TCPF_WANT_WRITABLE) && c->snd.bytes < t->cfg.sndbuf_max / 2 &&
                        !(c->flags & TCPF_FIN_QUEUED);
            c->flags |= TCPF_CONNECTED_TOLD;
            if ((first && !(c->flags & TCPF_PASSIVE)) || room) {
                c->flags &= ~TCPF_WANT_WRITABLE;
                c->cb->on_writable(c->u);
                if (!(c->flags & TCPF_OWNED))
                    goto out;
            }
        }
        if (tcp_closed_for_owner(c) && !(c->flags & TCPF_CLOSED_TOLD)) {
            c->flags |= TCPF_CLOSED_TOLD;
            c->flags &= ~TCPF_OWNED;
            c->cb->on_closed(c->u, c->close_err);
            c->cb = NULL;
            c->u = NULL;
        }
    }
out:
    if (c->state != DP_TCP_CLOSED)
        tcp_output(c);
    /* an upcall may have aborted c: it stayed allocated while the pass held it */
    c->flags &= ~TCPF_IN_PASS;
    if (c->state == DP_TCP_CLOSED && !(c->flags & TCPF_OWNED) && !(c->flags & TCPF_DEFERRED))
        tcp_conn_release(c);
}

void dp_tcp_run_deferred(struct dp_lcore *lc)
{
    struct dp_tcp *t = tcp_of(lc);
    struct mesh_conn *c;

    if (t == NULL)
        return;
    while ((c = t->defer_head) != NULL) {
        t->defer_head = c->defer_next;
        if (t->defer_head == NULL)
            t->defer_tail = NULL;
        c->defer_next = NULL;
        c->flags = (c->flags & ~TCPF_DEFERRED) | TCPF_IN_PASS;
        tcp_process_deferred(c);
    }
}

/* ---- introspection ---- */

void dp_tcp_usage(const struct dp_lcore *lc, struct dp_tcp_usage *u)
{
    const struct dp_tcp *t = lc->tcp;

    memset(u, 0, sizeof(*u));
    if (t == NULL)
        return;
    u->conns_max = t->cfg.max_conns;
    for (uint32_t i = 0; i < t->cfg.max_conns; i++) {
        const struct mesh_conn *c = &t->conns[i];
        if (c->lc == NULL)
            continue;
        u->conns_in_use++;
        u->conns_by_state[c->state < DP_TCP_N_STATES ? c->state : 0]++;
    }
    u->timers_armed = t->timers_armed;
    u->buffer_mbufs_in_use = rte_mempool_in_use_count(t->bufpool);
    u->listeners = t->n_listeners;
}

size_t dp_tcp_list(const struct dp_lcore *lc, struct dp_tcp_conn_info *out, size_t max)
{
    const struct dp_tcp *t = lc->tcp;
    size_t n = 0;

    for (uint32_t i = 0; t != NULL && i < t->cfg.max_conns && n < max; i++) {
        const struct mesh_conn *c = &t->conns[i];
        if (c->lc == NULL)
            continue;
        out[n++] = (struct dp_tcp_conn_info){
            .local_ip = c->local_ip, .remote_ip = c->remote_ip, .local_port = c->local_port,
            .remote_port = c->remote_port, .state = c->state, .snd_una = c->snd_una - c->iss,
            .snd_nxt = c->snd_nxt - c->iss, .snd_max = c->snd_max - c->iss, .snd_queued = c->snd.bytes,
            .snd_wnd = c->snd_wnd, .cwnd = c->cwnd, .ssthresh = c->ssthresh, .rcv_queued = c->rcvq.bytes,
            .rcv_ooo = c->ooo.bytes, .rcv_space = tcp_rcv_space(c), .srtt_us = c->srtt_us, .rto_ms = c->rto_ms,
            .flags = c->flags, .owned = (c->flags & TCPF_OWNED) != 0,
        };
    }
    return n;
}
