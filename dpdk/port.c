/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Ethernet device setup. Every port gets one rx/tx queue pair per worker (queue i belongs to worker i).
 * With more than one queue, RSS spreads flows with a symmetric key so both directions of a flow meet on one
 * worker. Offloads are used only where the device reports them; the stack never relies on them.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <rte_ethdev.h>

#include "dpdk/port.h"

#define PORT_RX_DESC 1024
#define PORT_TX_DESC 1024

/* A 40-byte Toeplitz key of repeated 0x6d5a makes the hash symmetric in (src, dst). */
static uint8_t port_symmetric_rss_key[40] = {
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
};

int dp_port_find(const char *devargs)
{
    char name[RTE_ETH_NAME_MAX_LEN];
    size_t n = strcspn(devargs, ",");
    uint16_t port_id;

    if (n >= sizeof(name))
        return -ENODEV;
    memcpy(name, devargs, n);
    name[n] = '\0';
    if (rte_eth_dev_get_port_by_name(name, &port_id) != 0)
        return -ENODEV;
    return port_id;
}

int dp_port_start(struct dp_port *p, uint16_t port_id, uint16_t n_queues, struct rte_mempool *pool,
                  unsigned link_wait_ms, char *err, size_t errlen)
{
    struct rte_eth_conf conf = {0};
    struct rte_eth_dev_info info;
    struct rte_eth_link link;
    int socket = rte_eth_dev_socket_id(port_id);
    int rc;

    p->port_id = port_id;
    rc = rte_eth_dev_info_get(port_id, &info);
    if (rc != 0) {
        snprintf(err, errlen, "port %s: cannot read device info (%s)", p->name, rte_strerror(-rc));
        return rc;
    }
    if (info.max_rx_queues < n_queues || info.max_tx_queues < n_queues) {
        snprintf(err, errlen,
                 "port %s: device %s has %u rx/%u tx queues, %u workers need %u (af_packet: add qpairs=%u to devargs)",
                 p->name, info.driver_name, info.max_rx_queues, info.max_tx_queues, n_queues, n_queues, n_queues);
        return -EINVAL;
    }
    if (n_queues > 1 && info.flow_type_rss_offloads != 0) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_key = port_symmetric_rss_key;
        conf.rx_adv_conf.rss_conf.rss_key_len = sizeof(port_symmetric_rss_key);
        conf.rx_adv_conf.rss_conf.rss_hf =
            info.flow_type_rss_offloads & (RTE_ETH_RSS_IPV4 | RTE_ETH_RSS_NONFRAG_IPV4_TCP | RTE_ETH_RSS_NONFRAG_IPV4_UDP);
    }
    if (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM)
        conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
    if (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_TCP_CKSUM)
        conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
    p->tx_cksum_offload = (info.tx_offload_capa & (RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM)) ==
                          (RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM);
    if (p->tx_cksum_offload)
        conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
    rc = rte_eth_dev_configure(port_id, n_queues, n_queues, &conf);
    if (rc != 0) {
        snprintf(err, errlen, "port %s: configure failed (%s)", p->name, rte_strerror(-rc));
        return rc;
    }
    if (p->mtu != RTE_ETHER_MTU && rte_eth_dev_set_mtu(port_id, p->mtu) != 0) {
        uint16_t mtu = RTE_ETHER_MTU;
        rte_eth_dev_get_mtu(port_id, &mtu);
        if (mtu < p->mtu)
            p->mtu = mtu; /* never send what the device would truncate */
    }
    for (uint16_t q = 0; q < n_queues; q++) {
        rc = rte_eth_rx_queue_setup(port_id, q, PORT_RX_DESC, (unsigned)socket, NULL, pool);
        if (rc == 0)
            rc = rte_eth_tx_queue_setup(port_id, q, PORT_TX_DESC, (unsigned)socket, NULL);
        if (rc != 0) {
            snprintf(err, errlen, "port %s: queue %u setup failed (%s)", p->name, q, rte_strerror(-rc));
            return rc;
        }
    }
    rc = rte_eth_dev_start(port_id);
    if (rc != 0) {
        snprintf(err, errlen, "port %s: start failed (%s)", p->name, rte_strerror(-rc));
        return rc;
    }
    rte_eth_macaddr_get(port_id, &p->mac);
    for (unsigned waited = 0; waited < link_wait_ms; waited += 10) {
        if (rte_eth_link_get_nowait(port_id, &link) == 0 && link.link_status == RTE_ETH_LINK_UP)
            break;
        usleep(10 * 1000);
    }
    return 0;
}

void dp_port_stop(const struct dp_port *p)
{
    rte_eth_dev_stop(p->port_id);
    rte_eth_dev_close(p->port_id);
}
