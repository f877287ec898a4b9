/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Ethernet input: accept frames addressed to the port's MAC or broadcast, dispatch by EtherType.
 * VLAN tags are not ours to handle (ports are untagged links); they are counted and dropped.
 */
#include <rte_ether.h>

#include "dpdk/dp.h"
#include "dpdk/stack.h"

void dp_eth_input(struct dp_lcore *lc, uint8_t port, struct rte_mbuf *m)
{
    const struct dp_port *p = &lc->stack->ports[port];
    const struct rte_ether_hdr *eh;

    dp_count(lc, DP_CNT_ETH_RX);
    if (rte_pktmbuf_data_len(m) < sizeof(struct rte_ether_hdr)) {
        dp_drop(lc, m, DP_CNT_ETH_RUNT);
        return;
    }
    eh = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);
    if (!rte_is_same_ether_addr(&eh->dst_addr, &p->mac) && !rte_is_broadcast_ether_addr(&eh->dst_addr)) {
        dp_drop(lc, m, DP_CNT_ETH_NOT_FOR_US);
        return;
    }
    switch (rte_be_to_cpu_16(eh->ether_type)) {
    case RTE_ETHER_TYPE_ARP:
        dp_arp_input(lc, port, m);
        return;
    case RTE_ETHER_TYPE_IPV4:
        if (rte_is_broadcast_ether_addr(&eh->dst_addr)) {
            dp_drop(lc, m, DP_CNT_ETH_NOT_FOR_US); /* we route unicast only */
            return;
        }
        rte_pktmbuf_adj(m, sizeof(struct rte_ether_hdr));
        dp_ip4_input(lc, port, m);
        return;
    case RTE_ETHER_TYPE_VLAN:
    case RTE_ETHER_TYPE_QINQ:
        dp_drop(lc, m, DP_CNT_ETH_VLAN);
        return;
    default:
        dp_drop(lc, m, DP_CNT_ETH_UNKNOWN_TYPE);
        return;
    }
}
