/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TCP forwarders on the DPDK path: every worker lcore listens on each configured address, and for each accepted
 * connection dials the target from the node's own address and relays bytes both ways (mesh/relay.h) with
 * backpressure, half-close and reset propagation.
 *
 * Ownership: one struct app_forwarder per worker lcore, owned and used by that lcore only (set up by the control
 * thread before the workers start). Session blocks come from a fixed array per lcore: no allocation after start.
 */
#ifndef ZW_APP_FORWARDER_H
#define ZW_APP_FORWARDER_H

#include <stdint.h>

#include "appliance/config.h"

struct dp_lcore;
struct app_forwarder;

struct app_forwarder_stats {
    uint64_t accepted;           /* client connections taken */
    uint64_t refused;            /* client connections refused: no session block or the dial failed at once */
    uint64_t upstream_failed;    /* the target refused or did not answer */
    uint64_t completed;          /* relays finished cleanly */
    uint64_t reset;              /* relays ended by a reset or an error */
    uint64_t bytes_to_target;
    uint64_t bytes_to_client;
    uint64_t active;
};

/* Set up the forwarders of cfg on lc. Returns NULL with -errno in *err (-ENOMEM, -EADDRINUSE). */
struct app_forwarder *app_forwarder_new(struct dp_lcore *lc, const struct app_config *cfg, uint32_t max_sessions,
                                        int *err);
/* Stop listening and free the sessions' storage (connections are released by dp_tcp_fini). */
void app_forwarder_free(struct app_forwarder *f);
/* A snapshot of f's counters; call on the owning lcore (RPC) or accept a value that may lag. */
void app_forwarder_stats(const struct app_forwarder *f, struct app_forwarder_stats *out);

#endif
