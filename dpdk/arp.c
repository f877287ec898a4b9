/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ARP (RFC 826) on one lcore: answering for our addresses, learning neighbours, resolving next hops.
 *
 * Invariants:
 *  - The table is this lcore's alone; other lcores learn what we learn through their inbox rings.
 *  - An entry is INCOMPLETE while we wait for an answer and REACHABLE once a MAC is known. A REACHABLE entry that
 *    is not confirmed within arp_timeout_ms is removed; the next packet to it resolves it again.
 *  - Packets waiting for resolution sit in one bounded FIFO per lcore (pending_cap). Each leaves it exactly once:
 *    sent when its next hop resolves, or dropped after DP_ARP_PENDING_TIMEOUT_MS.
 *  - We learn only from senders inside the receiving port's subnet, never our own address, never 0.0.0.0.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <rte_arp.h>
#include <rte_tcp.h>
#include <rte_hash.h>
#include <rte_jhash.h>
#include <rte_malloc.h>
#include <rte_ring.h>

#include "dpdk/dp.h"
#include "dpdk/stack.h"
#include "dpdk/tcp_impl.h"

#define ARP_SWEEP_INTERVAL_MS 100

struct arp_key {
    uint32_t ip;
    uint32_t port;
};

int dp_arp_table_init(struct dp_arp_table *t, uint32_t pending_cap, unsigned lcore_id, int socket)
{
    char name[RTE_HASH_NAMESIZE];
    struct rte_hash_parameters hp = {
        .entries = DP_ARP_ENTRIES,
        .key_len = sizeof(struct arp_key),
        .hash_func = rte_jhash,
        .socket_id = socket,
    };

    memset(t, 0, sizeof(*t));
    snprintf(name, sizeof(name), "zw_arp_%u", lcore_id);
    hp.name = name;
    t->index = rte_hash_create(&hp);
    if (t->index == NULL)
        return -ENOMEM;
    t->pending_cap = pending_cap;
    t->pending = rte_zmalloc_socket("zw_arp_pending", sizeof(*t->pending) * pending_cap, 0, socket);
    if (t->pending == NULL) {
        rte_hash_free(t->index);
        t->index = NULL;
        return -ENOMEM;
    }
    return 0;
}

void dp_arp_table_fini(struct dp_arp_table *t)
{
    if (t->pending != NULL) {
        for (uint32_t i = 0; i < t->n_pending; i++)
            rte_pktmbuf_free(t->pending[i].m);
        rte_free(t->pending);
        t->pending = NULL;
    }
    t->n_pending = 0;
    rte_hash_free(t->index);
    t->index = NULL;
}

static int arp_find(const struct dp_arp_table *t, uint8_t port, uint32_t ip)
{
    struct arp_key k = {.ip = ip, .port = port};
    return rte_hash_lookup(t->index, &k);
}

const struct dp_arp_entry *dp_arp_lookup(const struct dp_lcore *lc, uint8_t port, uint32_t ip)
{
    int pos = arp_find(&lc->arp, port, ip);
    return pos >= 0 ? &lc->arp.entries[pos] : NULL;
}

static struct dp_arp_entry *arp_create(struct dp_lcore *lc, uint8_t port, uint32_t ip)
{
    struct arp_key k = {.ip = ip, .port = port};
    struct dp_arp_entry *e;
    int pos = rte_hash_add_key(lc->arp.index, &k);

    if (pos < 0) {
        dp_count(lc, DP_CNT_ARP_TABLE_FULL);
        return NULL;
    }
    e = &lc->arp.entries[pos];
    memset(e, 0, sizeof(*e));
    e->ip = ip;
    e->port = port;
    e->state = DP_ARP_INCOMPLETE;
    return e;
}

static void arp_remove(struct dp_arp_table *t, struct dp_arp_entry *e)
{
    struct arp_key k = {.ip = e->ip, .port = e->port};
    rte_hash_del_key(t->index, &k);
    e->state = DP_ARP_FREE;
}

static void arp_prepend_eth(struct rte_mbuf *m, const struct rte_ether_addr *src, const struct rte_ether_addr *dst)
{
    struct rte_ether_hdr *eh = (struct rte_ether_hdr *)rte_pktmbuf_prepend(m, sizeof(*eh));
    rte_ether_addr_copy(dst, &eh->dst_addr);
    rte_ether_addr_copy(src, &eh->src_addr);
    eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
}

/* Fill m (an empty mbuf or one being reused) with an ARP packet. */
static void arp_make(struct rte_mbuf *m, uint16_t op, const struct rte_ether_addr *src_mac, uint32_t src_ip,
                     const struct rte_ether_addr *dst_mac, uint32_t dst_ip, const struct rte_ether_addr *eth_dst)
{
    struct rte_ether_hdr *eh;
    struct rte_arp_hdr *ah;

    rte_pktmbuf_reset(m);
    eh = (struct rte_ether_hdr *)rte_pktmbuf_append(m, sizeof(*eh) + sizeof(*ah));
    ah = (struct rte_arp_hdr *)(eh + 1);
    rte_ether_addr_copy(eth_dst, &eh->dst_addr);
    rte_ether_addr_copy(src_mac, &eh->src_addr);
    eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
    ah->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
    ah->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    ah->arp_hlen = RTE_ETHER_ADDR_LEN;
    ah->arp_plen = sizeof(uint32_t);
    ah->arp_opcode = rte_cpu_to_be_16(op);
    rte_ether_addr_copy(src_mac, &ah->arp_data.arp_sha);
    ah->arp_data.arp_sip = rte_cpu_to_be_32(src_ip);
    rte_ether_addr_copy(dst_mac, &ah->arp_data.arp_tha);
    ah->arp_data.arp_tip = rte_cpu_to_be_32(dst_ip);
}

static void arp_send_request(struct dp_lcore *lc, uint8_t port, uint32_t target)
{
    const struct dp_port *p = &lc->stack->ports[port];
    static const struct rte_ether_addr zero_mac;
    struct rte_ether_addr bcast;
    struct rte_mbuf *m = rte_pktmbuf_alloc(lc->stack->pool);

    if (m == NULL) {
        dp_count(lc, DP_CNT_MBUF_ALLOC_FAILED);
        return;
    }
    memset(&bcast, 0xff, sizeof(bcast));
    arp_make(m, RTE_ARP_OP_REQUEST, &p->mac, p->addr, &zero_mac, target, &bcast);
    dp_count(lc, DP_CNT_ARP_REQUEST_OUT);
    dp_tx_enqueue(lc, port, m);
}

/* Send every held packet whose next hop is e, in arrival order; keep the rest in order. */
static void arp_flush_pending(struct dp_lcore *lc, const struct dp_arp_entry *e)
{
    struct dp_arp_table *t = &lc->arp;
    const struct dp_port *p = &lc->stack->ports[e->port];
    uint32_t kept = 0;

    for (uint32_t i = 0; i < t->n_pending; i++) {
        struct dp_arp_pending *h = &t->pending[i];
        if (h->port == e->port && h->nexthop == e->ip) {
            arp_prepend_eth(h->m, &p->mac, &e->mac);
            dp_count(lc, DP_CNT_ARP_PENDING_SENT);
            dp_tx_enqueue(lc, e->port, h->m);
        } else {
            t->pending[kept++] = *h;
        }
    }
    t->n_pending = kept;
}

static void arp_sync_others(struct dp_lcore *lc, uint8_t port, uint32_t ip, const struct rte_ether_addr *mac)
{
    const struct dp_stack *st = lc->stack;
    struct dp_arp_sync msg = {.ip = ip, .port = port};

    rte_ether_addr_copy(mac, &msg.mac);
    for (int i = 0; i < st->n_lcores; i++) {
        struct dp_lcore *other = st->lcores[i];
        if (other == NULL || other == lc || other->inbox == NULL)
            continue;
        if (rte_ring_enqueue_elem(other->inbox, &msg, sizeof(msg)) != 0)
            dp_count(lc, DP_CNT_ARP_SYNC_DROPPED);
    }
}

void dp_arp_learn(struct dp_lcore *lc, uint8_t port, uint32_t ip, const struct rte_ether_addr *mac, bool sync)
{
    int pos = arp_find(&lc->arp, port, ip);
    struct dp_arp_entry *e;

    if (pos >= 0) {
        e = &lc->arp.entries[pos];
        dp_count(lc, DP_CNT_ARP_UPDATED);
    } else {
        e = arp_create(lc, port, ip);
        if (e == NULL)
            return;
        dp_count(lc, DP_CNT_ARP_LEARNED);
    }
    rte_ether_addr_copy(mac, &e->mac);
    e->state = DP_ARP_REACHABLE;
    e->updated_ms = lc->now_ms;
    arp_flush_pending(lc, e);
    if (sync)
        arp_sync_others(lc, port, ip, mac);
}

void dp_lcore_drain_inbox(struct dp_lcore *lc)
{
    struct dp_arp_sync msgs[32];
    void *pkts[32];
    unsigned n;

    if (lc->handoff != NULL) {
        while ((n = rte_ring_dequeue_burst(lc->handoff, pkts, RTE_DIM(pkts), NULL)) > 0) {
            for (unsigned i = 0; i < n; i++) {
                struct rte_mbuf *m = pkts[i];
                const struct rte_ipv4_hdr *ip = dp_ip4_hdr(m);
                unsigned ihl = rte_ipv4_hdr_len(ip);
                const struct rte_tcp_hdr *th = (const struct rte_tcp_hdr *)((const uint8_t *)ip + ihl);
                uint32_t how = m->hash.usr;
                bool known;
                dp_count(lc, DP_CNT_HANDOFF_IN);
                if (how == 0) {
                    dp_tcp_input(lc, m, ihl);
                    continue;
                }
                known = tcp_conn_lookup(lc->tcp, rte_be_to_cpu_32(ip->dst_addr), rte_be_to_cpu_16(th->dst_port),
                                        rte_be_to_cpu_32(ip->src_addr), rte_be_to_cpu_16(th->src_port)) != NULL;
                if (known) {
                    dp_count(lc, DP_CNT_TCP_TRANSPARENT_IN);
                    dp_tcp_input(lc, m, ihl);
                } else if ((how & DP_HANDOFF_SEARCH) &&
                           (how >> DP_HANDOFF_HOPS_SHIFT) + 1 < (uint32_t)lc->stack->n_lcores) {
                    m->hash.usr = DP_HANDOFF_SEARCH | (((how >> DP_HANDOFF_HOPS_SHIFT) + 1) << DP_HANDOFF_HOPS_SHIFT);
                    dp_lcore_handoff(lc, dp_lcore_next(lc), m);
                } else {
                    dp_ip4_forward(lc, m); /* not ours after all: a routed flow */
                }
            }
        }
    }
    if (lc->inbox == NULL)
        return;
    while ((n = rte_ring_dequeue_burst_elem(lc->inbox, msgs, sizeof(msgs[0]), RTE_DIM(msgs), NULL)) > 0) {
        for (unsigned i = 0; i < n; i++) {
            dp_count(lc, DP_CNT_ARP_SYNC_IN);
            dp_arp_learn(lc, msgs[i].port, msgs[i].ip, &msgs[i].mac, false);
        }
    }
}

static bool arp_sender_is_plausible(const struct dp_port *p, uint32_t sip)
{
    return sip != 0 && sip != p->addr && (sip & p->mask) == p->net;
}

void dp_arp_input(struct dp_lcore *lc, uint8_t port, struct rte_mbuf *m)
{
    const struct dp_port *p = &lc->stack->ports[port];
    struct rte_ether_addr sha;
    struct rte_arp_hdr *ah;
    uint32_t sip, tip;
    uint16_t op;

    if (rte_pktmbuf_data_len(m) < sizeof(struct rte_ether_hdr) + sizeof(struct rte_arp_hdr)) {
        dp_drop(lc, m, DP_CNT_ARP_MALFORMED);
        return;
    }
    ah = rte_pktmbuf_mtod_offset(m, struct rte_arp_hdr *, sizeof(struct rte_ether_hdr));
    op = rte_be_to_cpu_16(ah->arp_opcode);
    if (ah->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
        ah->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) || ah->arp_hlen != RTE_ETHER_ADDR_LEN ||
        ah->arp_plen != sizeof(uint32_t) || (op != RTE_ARP_OP_REQUEST && op != RTE_ARP_OP_REPLY) ||
        rte_is_multicast_ether_addr(&ah->arp_data.arp_sha)) {
        dp_drop(lc, m, DP_CNT_ARP_MALFORMED);
        return;
    }
    sip = rte_be_to_cpu_32(ah->arp_data.arp_sip);
    tip = rte_be_to_cpu_32(ah->arp_data.arp_tip);
    rte_ether_addr_copy(&ah->arp_data.arp_sha, &sha);
    dp_count(lc, op == RTE_ARP_OP_REQUEST ? DP_CNT_ARP_REQUEST_IN : DP_CNT_ARP_REPLY_IN);

    if (tip != p->addr) {
        /* Not for us: refresh what we already know (RFC 826 "merge"), create nothing. */
        if (arp_sender_is_plausible(p, sip) && arp_find(&lc->arp, port, sip) >= 0)
            dp_arp_learn(lc, port, sip, &sha, true);
        if (op == RTE_ARP_OP_REQUEST && sip != tip)
            dp_count(lc, DP_CNT_ARP_NOT_FOR_US);
        rte_pktmbuf_free(m);
        return;
    }
    if (arp_sender_is_plausible(p, sip))
        dp_arp_learn(lc, port, sip, &sha, true);
    if (op != RTE_ARP_OP_REQUEST) {
        rte_pktmbuf_free(m);
        return;
    }
    /* Answer in place: the request's mbuf becomes the reply. */
    arp_make(m, RTE_ARP_OP_REPLY, &p->mac, p->addr, &sha, sip, &sha);
    dp_count(lc, DP_CNT_ARP_REPLY_OUT);
    dp_tx_enqueue(lc, port, m);
}

void dp_arp_output(struct dp_lcore *lc, uint8_t port, uint32_t nexthop, struct rte_mbuf *m)
{
    struct dp_arp_table *t = &lc->arp;
    const struct dp_port *p = &lc->stack->ports[port];
    struct dp_arp_entry *e;
    int pos = arp_find(t, port, nexthop);

    if (pos >= 0 && t->entries[pos].state == DP_ARP_REACHABLE) {
        arp_prepend_eth(m, &p->mac, &t->entries[pos].mac);
        dp_tx_enqueue(lc, port, m);
        return;
    }
    e = pos >= 0 ? &t->entries[pos] : arp_create(lc, port, nexthop);
    if (e == NULL) {
        rte_pktmbuf_free(m);
        return;
    }
    if (t->n_pending == t->pending_cap) {
        dp_drop(lc, m, DP_CNT_ARP_PENDING_OVERFLOW);
    } else {
        t->pending[t->n_pending++] = (struct dp_arp_pending){
            .m = m, .nexthop = nexthop, .port = port, .queued_ms = lc->now_ms};
        dp_count(lc, DP_CNT_ARP_PENDING_QUEUED);
    }
    if (e->requested_ms == 0 || lc->now_ms - e->requested_ms >= DP_ARP_RETRY_MS) {
        e->requested_ms = lc->now_ms ? lc->now_ms : 1;
        arp_send_request(lc, port, nexthop);
    }
}

static bool arp_has_pending(const struct dp_arp_table *t, const struct dp_arp_entry *e)
{
    for (uint32_t i = 0; i < t->n_pending; i++)
        if (t->pending[i].port == e->port && t->pending[i].nexthop == e->ip)
            return true;
    return false;
}

void dp_arp_timers(struct dp_lcore *lc)
{
    struct dp_arp_table *t = &lc->arp;
    uint64_t now = lc->now_ms;
    uint32_t kept = 0;
    const void *key;
    void *data;
    uint32_t iter = 0;
    int32_t pos;
    struct dp_arp_entry *doomed[64]; /* the rest wait for the next sweep */
    unsigned n_doomed = 0;

    if (now - t->last_sweep_ms < ARP_SWEEP_INTERVAL_MS)
        return;
    t->last_sweep_ms = now;

    for (uint32_t i = 0; i < t->n_pending; i++) {
        if (now - t->pending[i].queued_ms >= DP_ARP_PENDING_TIMEOUT_MS)
            dp_drop(lc, t->pending[i].m, DP_CNT_ARP_PENDING_TIMEOUT);
        else
            t->pending[kept++] = t->pending[i];
    }
    t->n_pending = kept;

    /* Deleting while rte_hash_iterate walks the buckets is not promised to be safe: collect, then delete. */
    while ((pos = rte_hash_iterate(t->index, &key, &data, &iter)) >= 0) {
        struct dp_arp_entry *e = &t->entries[pos];
        if (e->state == DP_ARP_REACHABLE && now - e->updated_ms >= lc->stack->arp_timeout_ms) {
            if (n_doomed < RTE_DIM(doomed)) {
                doomed[n_doomed++] = e;
                dp_count(lc, DP_CNT_ARP_EXPIRED);
            }
        } else if (e->state == DP_ARP_INCOMPLETE) {
            if (!arp_has_pending(t, e)) {
                if (now - e->requested_ms >= DP_ARP_PENDING_TIMEOUT_MS && n_doomed < RTE_DIM(doomed))
                    doomed[n_doomed++] = e;
            } else if (now - e->requested_ms >= DP_ARP_RETRY_MS) {
                e->requested_ms = now;
                arp_send_request(lc, e->port, e->ip);
            }
        }
    }
    for (unsigned i = 0; i < n_doomed; i++)
        arp_remove(t, doomed[i]);
}
