/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mesh on the DPDK path, one instance per worker lcore: a mesh_proxy driven by the userspace TCP (dpdk/conn_dpdk.c),
 * fed by the stack's transparent captures (outbound, HBONE inbound, plaintext inbound), with its own env and metrics.
 *
 * Ownership: created by the control thread before the workers start; afterwards only the owning worker touches it
 * (app_mesh_lcore_poll from its loop; the captures' accept callbacks run inside its TCP input). The control thread
 * reads its metrics only through an RPC on that lcore.
 */
#ifndef ZW_APP_MESH_DPDK_H
#define ZW_APP_MESH_DPDK_H

#include <stdbool.h>
#include <stddef.h>

#include "mesh/proxy.h"

struct dp_lcore;
struct app_mesh_node;
struct app_mesh_lcore;
struct mesh_metrics;
struct mesh_proxy_stats;

struct mesh_addr;
/* lookup: the on-demand lookup hook for the proxy (mesh/proxy.h; called on this lcore), or fn NULL for none. */
struct app_mesh_lookup {
    mesh_proxy_lookup_fn fn;
    void *u;
};
struct app_mesh_lcore *app_mesh_lcore_new(struct dp_lcore *lc, struct app_mesh_node *mn,
                                          const struct app_mesh_lookup *lookup, char *err, size_t errlen);
/* Stop capturing and free the proxy. Call after the worker stopped and before dp_tcp_fini. */
void app_mesh_lcore_free(struct app_mesh_lcore *ml);
/* Run the proxy's due deadlines. Called by the worker once per loop; cheap when nothing is due. */
void app_mesh_lcore_poll(struct app_mesh_lcore *ml);
/* On the owning lcore (RPC): switch the proxy to mn (a reloaded mesh side) and re-check live connections. */
int app_mesh_lcore_update(struct app_mesh_lcore *ml, struct app_mesh_node *mn);
/* On the owning lcore (RPC): add this lcore's metrics into dst. 0 or -ENOMEM. */
int app_mesh_lcore_merge_metrics(const struct app_mesh_lcore *ml, struct mesh_metrics *dst);
const struct mesh_proxy_stats *app_mesh_lcore_stats(const struct app_mesh_lcore *ml);
struct mesh_proxy_conn_view;
/* On the owning lcore (RPC): views of its live proxied connections (at most max). Returns the count. */
size_t app_mesh_lcore_list(const struct app_mesh_lcore *ml, struct mesh_proxy_conn_view *out, size_t max);

#endif
