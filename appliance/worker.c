/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The worker lcore's run-to-completion loop: rx_burst on every port's queue of this worker, feed the stack,
 * apply neighbour updates from other lcores, run a pending control RPC, timers, then flush transmits.
 * With the idle back-off on, a worker that found nothing for empty_polls polls in a row sleeps sleep_us between
 * polls until traffic returns, so it costs almost no CPU while idle and nothing under load.
 */
#include <time.h>

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_prefetch.h>

#include "appliance/node.h"
#include "appliance/worker.h"
#include "dpdk/tcp.h"
#include "appliance/mesh_dpdk.h"

#define WORKER_MAX_BURST 256

uint64_t app_node_now_ms(void)
{
    static uint64_t hz_per_ms;
    if (hz_per_ms == 0)
        hz_per_ms = rte_get_tsc_hz() / 1000;
    return rte_get_tsc_cycles() / hz_per_ms;
}

int app_worker_main(void *arg)
{
    struct app_worker_args *wa = arg;
    struct app_node *node = wa->node;
    struct dp_lcore *lc = wa->lcore;
    const struct dp_stack *st = lc->stack;
    const struct app_dataplane_config *dpc = &node->cfg->dataplane;
    struct rte_mbuf *pkts[WORKER_MAX_BURST];
    const struct timespec pause = {0, (long)dpc->backoff.sleep_us * 1000L};
    uint16_t burst = (uint16_t)(dpc->rx_burst > WORKER_MAX_BURST ? WORKER_MAX_BURST : dpc->rx_burst);
    uint32_t empty = 0;
    struct app_mesh_lcore *ml = node->mesh_lcores[lc->worker];

    while (!__atomic_load_n(&node->stop, __ATOMIC_RELAXED)) {
        unsigned got = 0;

        lc->now_ms = app_node_now_ms();
        for (int p = 0; p < st->n_ports; p++) {
            uint16_t n = rte_eth_rx_burst(st->ports[p].port_id, (uint16_t)lc->worker, pkts, burst);
            for (uint16_t i = 0; i < n; i++) {
                if (i + 1 < n)
                    rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void *));
                dp_eth_input(lc, (uint8_t)p, pkts[i]);
            }
            got += n;
        }
        lc->stats.rx_packets += got;
        dp_lcore_drain_inbox(lc);
        dp_lcore_rpc_poll(lc);
        dp_lcore_timers(lc);
        dp_tcp_timers(lc);
        if (ml != NULL)
            app_mesh_lcore_poll(ml);
        dp_tcp_run_deferred(lc);
        dp_tx_flush(lc);
        lc->stats.polls++;

        if (got != 0) {
            empty = 0;
        } else if (dpc->backoff.enabled && ++empty >= dpc->backoff.empty_polls) {
            nanosleep(&pause, NULL);
            lc->stats.idle_sleeps++;
        }
    }
    return 0;
}
