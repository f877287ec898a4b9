/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A zwire node on the DPDK backend: EAL, the mbuf pool, the ports, the stack and its worker lcores.
 *
 * Lifecycle: app_node_eal_args() -> app_node_start() (control thread, before any worker runs) ->
 * workers poll until app_node_stop() raises the stop flag and joins them -> app_node_fini().
 * After start, node->stack is immutable; each worker owns node->lcores[i]; the control thread reads counters and
 * reaches worker state only through dp_lcore_rpc_call().
 */
#ifndef ZW_APP_NODE_H
#define ZW_APP_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "appliance/config.h"
#include "dpdk/dp.h"
#include "mesh/env.h"

struct app_forwarder;
struct app_mesh_node;
struct app_mesh_lcore;
struct dp_mesh_view;
struct app_istiod;
struct mesh_xds_state;

struct app_node {
    const struct app_config *cfg;
    struct dp_stack stack;
    unsigned n_workers;
    struct dp_lcore *lcores;        /* n_workers, cache aligned, lcores[i] belongs to worker i */
    struct app_forwarder *forwarders[DP_MAX_LCORES]; /* [i] belongs to worker i; NULL without forwarders */
    struct app_mesh_node *mesh;                      /* the mesh side; NULL when the config has no mesh */
    struct dp_mesh_view *mesh_view;                  /* what the stack captures (published as stack.mesh) */
    struct app_mesh_lcore *mesh_lcores[DP_MAX_LCORES]; /* [i] belongs to worker i */
    struct mesh_env mesh_env;                        /* the control thread's env for the mesh side */
    struct app_config *mesh_cfg;                     /* the config the mesh side came from after a reload (owned) */
    uint64_t reloads;
    struct app_istiod *istiod;                       /* following istiod (config group xds); NULL otherwise; set
                                                      * by the control thread after the workers started (atomic:
                                                      * their on-demand lookup hook reads it) */
    bool eal_up;
    bool ports_started[DP_MAX_PORTS];
    bool running;                   /* workers launched */
    uint32_t stop;                  /* set by app_node_stop(); workers poll it */
    uint64_t start_ms;
};

/* The EAL argument vector for cfg plus extra arguments from the command line. The caller frees it with
 * app_node_eal_args_free(). Returns the count, or -ENOMEM. */
int app_node_eal_args(const struct app_config *cfg, int n_cli, char **cli, char ***argv_out);
void app_node_eal_args_free(int argc, char **argv);

/* Initialise EAL with argv, then the pool, ports, routes and lcores; launch the workers. 0 or -errno with err set. */
int app_node_start(struct app_node *node, const struct app_config *cfg, int argc, char **argv, char *err,
                   size_t errlen);

/* Raise the stop flag and wait for every worker; idempotent. */
void app_node_stop(struct app_node *node);

/* Stop ports, free everything, clean up EAL (and its runtime files). Idempotent. */
void app_node_fini(struct app_node *node);

/*
 * Apply a new configuration live (control thread): the mesh sections change, the rest must not. On success the node
 * owns next; on failure the caller keeps it and nothing changed (-EINVAL, -EPERM with the reason in err), except
 * -ETIMEDOUT (a worker did not answer; the node owns next and may serve both states for a while).
 */
int app_node_reload(struct app_node *node, struct app_config *next, char *err, size_t errlen);

/*
 * Replace the mesh side with one built from an istiod snapshot (control thread), the same way a reload does: new
 * connections see it at once, live ones are re-checked. The node's config stays as it is. 0, or -errno with err
 * set (-ETIMEDOUT as for app_node_reload).
 */
int app_node_apply_xds(struct app_node *node, const struct mesh_xds_state *state, char *err, size_t errlen);

/*
 * When a local workload certificate reached half of its lifetime, re-issue every local certificate and publish the
 * renewed mesh side as a reload does (control thread). New TLS sessions present the new certificates; live
 * connections keep theirs. 1 rotated, 0 nothing due, -errno with err set.
 */
int app_node_rotate_certs(struct app_node *node, char *err, size_t errlen);

/* Milliseconds on the TSC clock every worker uses. */
uint64_t app_node_now_ms(void);

#endif
