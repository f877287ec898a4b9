/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-lcore state of the stack: construction, the transmit queues, counters and the control-thread RPC slot.
 * Only the owning lcore writes a struct dp_lcore; see dp.h for what other threads may read.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <rte_ethdev.h>
#include <rte_ring.h>

#include "dpdk/dp.h"
#include "dpdk/stack.h"
#include "dpdk/tcp.h"

static const char *const counter_names[DP_CNT_MAX] = {
#define DP_COUNTER(sym, name, help) [DP_CNT_##sym] = name,
#include "dpdk/counters.def"
#undef DP_COUNTER
};

static const char *const counter_helps[DP_CNT_MAX] = {
#define DP_COUNTER(sym, name, help) [DP_CNT_##sym] = help,
#include "dpdk/counters.def"
#undef DP_COUNTER
};

const char *dp_counter_name(enum dp_counter c)
{
    return c < DP_CNT_MAX ? counter_names[c] : "?";
}

const char *dp_counter_help(enum dp_counter c)
{
    return c < DP_CNT_MAX ? counter_helps[c] : "?";
}

int dp_drop(struct dp_lcore *lc, struct rte_mbuf *m, enum dp_counter c)
{
    dp_count(lc, c);
    rte_pktmbuf_free(m);
    return 0;
}

static uint16_t lcore_tx_burst_ethdev(struct dp_lcore *lc, uint8_t port, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_tx_burst(lc->stack->ports[port].port_id, (uint16_t)lc->worker, pkts, n);
}

#define LCORE_INBOX_SIZE 1024
#define LCORE_HANDOFF_SIZE 4096

int dp_lcore_init(struct dp_lcore *lc, const struct dp_stack *stack, unsigned lcore_id, unsigned worker, int socket)
{
    char name[RTE_RING_NAMESIZE];
    int rc;

    memset(lc, 0, sizeof(*lc));
    lc->lcore_id = lcore_id;
    lc->worker = worker;
    lc->stack = stack;
    lc->tx_burst = lcore_tx_burst_ethdev;
    lc->icmp_tokens = stack->icmp_errors_per_s;
    rc = dp_arp_table_init(&lc->arp, stack->arp_pending_max, lcore_id, socket);
    if (rc < 0)
        return rc;
    snprintf(name, sizeof(name), "zw_inbox_%u", lcore_id);
    lc->inbox = rte_ring_create_elem(name, sizeof(struct dp_arp_sync), LCORE_INBOX_SIZE, socket, RING_F_SC_DEQ);
    snprintf(name, sizeof(name), "zw_handoff_%u", lcore_id);
    lc->handoff = rte_ring_create(name, LCORE_HANDOFF_SIZE, socket, RING_F_SC_DEQ);
    if (lc->inbox == NULL || lc->handoff == NULL) {
        rte_ring_free(lc->inbox);
        rte_ring_free(lc->handoff);
        lc->inbox = lc->handoff = NULL;
        dp_arp_table_fini(&lc->arp);
        return -ENOMEM;
    }
    return 0;
}

void dp_lcore_fini(struct dp_lcore *lc)
{
    for (int p = 0; p < DP_MAX_PORTS; p++) {
        rte_pktmbuf_free_bulk(lc->tx[p].pkts, lc->tx[p].n);
        lc->tx[p].n = 0;
    }
    if (lc->inbox != NULL) {
        rte_ring_free(lc->inbox);
        lc->inbox = NULL;
    }
    if (lc->handoff != NULL) {
        void *m;
        while (rte_ring_dequeue(lc->handoff, &m) == 0)
            rte_pktmbuf_free(m);
        rte_ring_free(lc->handoff);
        lc->handoff = NULL;
    }
    dp_arp_table_fini(&lc->arp);
}

static void lcore_flush_port(struct dp_lcore *lc, uint8_t port)
{
    struct dp_txq *q = &lc->tx[port];
    uint16_t sent = 0;

    if (q->n == 0)
        return;
    sent = lc->tx_burst(lc, port, q->pkts, q->n);
    lc->stats.tx_packets += sent;
    for (uint16_t i = sent; i < q->n; i++)
        dp_drop(lc, q->pkts[i], DP_CNT_IP4_TX_FULL);
    q->n = 0;
}

void dp_tx_enqueue(struct dp_lcore *lc, uint8_t port, struct rte_mbuf *m)
{
    struct dp_txq *q = &lc->tx[port];

    if (q->n == DP_TX_BURST)
        lcore_flush_port(lc, port);
    q->pkts[q->n++] = m;
}

void dp_tx_flush(struct dp_lcore *lc)
{
    for (int p = 0; p < lc->stack->n_ports; p++)
        lcore_flush_port(lc, (uint8_t)p);
}

void dp_lcore_timers(struct dp_lcore *lc)
{
    if (lc->now_ms - lc->icmp_refill_ms >= 1000) {
        lc->icmp_tokens = lc->stack->icmp_errors_per_s;
        lc->icmp_refill_ms = lc->now_ms;
    }
    dp_arp_timers(lc);
}

int dp_lcore_rpc_call(struct dp_lcore *lc, dp_rpc_fn fn, void *arg, unsigned timeout_ms)
{
    struct timespec pause = {0, 200 * 1000};

    if (__atomic_load_n(&lc->rpc_pending, __ATOMIC_ACQUIRE) != 0)
        return -EBUSY; /* an earlier call timed out and has not run yet */
    lc->rpc_fn = fn;
    lc->rpc_arg = arg;
    __atomic_store_n(&lc->rpc_pending, 1, __ATOMIC_RELEASE);
    for (unsigned waited_us = 0; waited_us < timeout_ms * 1000u; waited_us += 200) {
        if (__atomic_load_n(&lc->rpc_pending, __ATOMIC_ACQUIRE) == 0)
            return 0;
        nanosleep(&pause, NULL);
    }
    return __atomic_load_n(&lc->rpc_pending, __ATOMIC_ACQUIRE) == 0 ? 0 : -ETIMEDOUT;
}

void dp_lcore_rpc_poll(struct dp_lcore *lc)
{
    if (__atomic_load_n(&lc->rpc_pending, __ATOMIC_ACQUIRE) == 0)
        return;
    lc->rpc_fn(lc, lc->rpc_arg);
    __atomic_store_n(&lc->rpc_pending, 0, __ATOMIC_RELEASE);
}

struct dp_lcore *dp_lcore_port_owner(struct dp_lcore *lc, uint16_t port)
{
    const struct dp_stack *st = lc->stack;
    const struct dp_tcp_config *cfg;
    struct dp_lcore *owner;

    if (st->n_lcores < 2 || lc->tcp == NULL)
        return NULL;
    cfg = dp_tcp_get_config(lc);
    if (port < cfg->ephemeral_lo || port > cfg->ephemeral_hi)
        return NULL;
    owner = st->lcores[port % (unsigned)st->n_lcores];
    return owner == lc ? NULL : owner;
}

struct dp_lcore *dp_lcore_next(struct dp_lcore *lc)
{
    const struct dp_stack *st = lc->stack;
    return st->lcores[(lc->worker + 1) % (unsigned)st->n_lcores];
}

void dp_lcore_handoff(struct dp_lcore *lc, struct dp_lcore *owner, struct rte_mbuf *m)
{
    /* hash.usr says what the owner does with it: set by the caller for routed packets, 0 otherwise */
    if (rte_ring_enqueue(owner->handoff, m) != 0) {
        dp_drop(lc, m, DP_CNT_HANDOFF_DROPPED);
        return;
    }
    dp_count(lc, DP_CNT_HANDOFF_OUT);
}
