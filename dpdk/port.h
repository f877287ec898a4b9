/* SPDX-License-Identifier: Apache-2.0 */
/* Ethernet device setup for the stack's ports: one rx and one tx queue per worker lcore. */
#ifndef ZW_DP_PORT_H
#define ZW_DP_PORT_H

#include <stddef.h>
#include <stdint.h>

#include "dpdk/dp.h"

struct rte_mempool;

/*
 * Find the ethdev for devargs: the device name is the part before the first ','. Returns the port id or -ENODEV.
 */
int dp_port_find(const char *devargs);

/*
 * Configure and start port_id with n_queues rx/tx queue pairs fed from pool, wait for link up (at most
 * link_wait_ms; a port whose link stays down still starts), and fill p->port_id and p->mac.
 * Returns 0, or -errno with a message naming the port in err.
 */
int dp_port_start(struct dp_port *p, uint16_t port_id, uint16_t n_queues, struct rte_mempool *pool,
                  unsigned link_wait_ms, char *err, size_t errlen);

/* Stop and close the port. */
void dp_port_stop(const struct dp_port *p);

#endif
