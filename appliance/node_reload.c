/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Live configuration of the DPDK node (PUT /config and SIGHUP): the mesh sections (mesh, workloads, services,
 * policies) change without a restart; everything else must stay as it is.
 *
 * Order, all on the control thread:
 *   1. parse and validate the new text; any error refuses it, every message listed, nothing changes;
 *   2. refuse changes to what only a restart can change (ports, routes, workers, EAL, TCP, forwarders, mgmt);
 *   3. build the new mesh side (snapshot, policies, certificates) and the new capture table;
 *   4. publish the capture table (stack.mesh), then ask every worker, by RPC, to update its proxy: new connections
 *      use the new state at once and live ones are re-checked (newly denied ones are closed, reason "denied");
 *   5. once every worker has run its RPC, none can still read the old capture table or call the old mesh side's
 *      hooks (an RPC runs between bursts, after every read of the previous burst): free them, and the config they
 *      came from. The first config is never freed: ports, forwarders and workers keep pointers into it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_common.h>
#include <rte_lcore.h>

#include "appliance/config_mesh.h"
#include "appliance/log.h"
#include "appliance/mesh_dpdk.h"
#include "appliance/mesh_node.h"
#include "appliance/node.h"
#include "appliance/istiod.h"
#include "mesh/xds_convert.h"
#include "dpdk/classify.h"

#define RELOAD_RPC_TIMEOUT_MS 2000

struct reload_rpc {
    struct app_mesh_lcore *ml;
    struct app_mesh_node *mesh;
    int rc;
};

static void reload_on_lcore(struct dp_lcore *lc, void *arg)
{
    struct reload_rpc *r = arg;
    (void)lc;
    r->rc = app_mesh_lcore_update(r->ml, r->mesh);
}

/* Name the first section that differs in a way only a restart can apply, or NULL. */
static const char *reload_static_change(const struct app_config *a, const struct app_config *b)
{
    if (strcmp(a->node_name, b->node_name) != 0)
        return "node.name";
    if (a->n_ports != b->n_ports)
        return "ports";
    for (int i = 0; i < a->n_ports; i++)
        if (strcmp(a->ports[i].name, b->ports[i].name) != 0 || strcmp(a->ports[i].devargs, b->ports[i].devargs) != 0 ||
            a->ports[i].role != b->ports[i].role || a->ports[i].address.addr != b->ports[i].address.addr ||
            a->ports[i].address.len != b->ports[i].address.len || a->ports[i].mtu != b->ports[i].mtu)
            return "ports";
    if (a->n_routes != b->n_routes)
        return "routes";
    for (int i = 0; i < a->n_routes; i++)
        if (a->routes[i].prefix.addr != b->routes[i].prefix.addr || a->routes[i].prefix.len != b->routes[i].prefix.len ||
            a->routes[i].via != b->routes[i].via)
            return "routes";
    if (memcmp(&a->dataplane, &b->dataplane, sizeof(a->dataplane)) != 0)
        return "dataplane";
    if (memcmp(&a->tcp, &b->tcp, sizeof(a->tcp)) != 0)
        return "tcp";
    if (a->n_forwarders != b->n_forwarders ||
        memcmp(a->forwarders, b->forwarders, sizeof(a->forwarders[0]) * (size_t)a->n_forwarders) != 0)
        return "forwarders";
    if (a->eal.memory_mb != b->eal.memory_mb || a->eal.no_huge != b->eal.no_huge ||
        strcmp(a->eal.file_prefix, b->eal.file_prefix) != 0)
        return "eal";
    if (strcmp(a->mgmt.socket_path, b->mgmt.socket_path) != 0 ||
        (a->mgmt.metrics_listen == NULL) != (b->mgmt.metrics_listen == NULL) ||
        (a->mgmt.metrics_listen != NULL && strcmp(a->mgmt.metrics_listen, b->mgmt.metrics_listen) != 0))
        return "mgmt";
    if ((a->mesh->present || b->mesh->present) &&
        (a->mesh->hbone_port != b->mesh->hbone_port || a->mesh->present != b->mesh->present))
        return "mesh.hbone_port or turning the mesh on or off";
    return NULL;
}

/*
 * Publish mesh (built for cfg) to every worker, then free the old mesh side. The node owns mesh afterwards, except
 * on -ENOMEM, where it is freed and nothing changed; on -ETIMEDOUT the old state is kept alive too. A NULL mesh (its
 * build failed, the reason already in err) changes nothing: -EINVAL.
 */
static int reload_swap(struct app_node *node, struct app_mesh_node *mesh, const struct app_config *cfg, char *err,
                       size_t errlen)
{
    struct reload_rpc rpc[DP_MAX_LCORES];
    struct app_mesh_node *old_mesh = node->mesh;
    struct dp_mesh_view *view, *old_view = node->mesh_view;
    uint32_t local[1024];
    size_t n_local;

    if (mesh == NULL)
        return -EINVAL;
    n_local = app_mesh_node_local_addresses(mesh, local, RTE_DIM(local));
    view = dp_mesh_view_new(local, (int)n_local, cfg->mesh->hbone_port, (int)rte_socket_id());
    if (view == NULL) {
        snprintf(err, errlen, "cannot build the capture table of %zu addresses", n_local);
        app_mesh_node_free(mesh);
        return -ENOMEM;
    }
    __atomic_store_n(&node->stack.mesh, view, __ATOMIC_RELEASE);
    for (int i = 0; i < node->stack.n_lcores; i++) {
        rpc[i] = (struct reload_rpc){.ml = node->mesh_lcores[i], .mesh = mesh};
        if (dp_lcore_rpc_call(&node->lcores[i], reload_on_lcore, &rpc[i], RELOAD_RPC_TIMEOUT_MS) < 0) {
            /* A worker that does not answer may still run the call later, and may still read the old state: keep
             * it all. The node is in a mixed state; say so loudly. */
            APP_LOG_ERR("reload", "lcore %u did not apply the new configuration in %d ms; old state kept alive",
                        node->lcores[i].lcore_id, RELOAD_RPC_TIMEOUT_MS);
            snprintf(err, errlen, "lcore %u did not answer; the node may serve the old and the new config",
                     node->lcores[i].lcore_id);
            node->mesh = mesh;
            node->mesh_view = view;
            return -ETIMEDOUT;
        }
    }
    node->mesh = mesh;
    node->mesh_view = view;
    /* every worker has passed a quiescent point since the swap: the old state is unreachable */
    dp_mesh_view_free(old_view);
    app_mesh_node_free(old_mesh);
    node->reloads++;
    APP_LOG_INFO("reload", "applied: %zu workloads, %zu services, %zu policies, %zu local addresses captured",
                 mesh_workloads_count(app_mesh_node_workloads(mesh)),
                 mesh_workloads_service_count(app_mesh_node_workloads(mesh)),
                 mesh_authz_set_count(app_mesh_node_authz(mesh)), n_local);
    return 0;
}

int app_node_reload(struct app_node *node, struct app_config *next, char *err, size_t errlen)
{
    const char *what = reload_static_change(node->cfg, next);
    int rc;

    if (what != NULL) {
        snprintf(err, errlen, "%s changed: only a restart applies it (nothing was changed)", what);
        return -EPERM;
    }
    if (node->mesh == NULL) {
        snprintf(err, errlen, "this node runs without a mesh: nothing can change live");
        return -EPERM;
    }
    if (node->istiod != NULL) {
        snprintf(err, errlen, "this node follows istiod: workloads, services and policies come from there");
        return -EPERM;
    }
    rc = reload_swap(node, app_mesh_node_new(next, &node->mesh_env, err, errlen), next, err, errlen);
    if (rc == -ENOMEM || rc == -EINVAL)
        return rc;
    if (node->mesh_cfg != NULL && rc == 0)
        app_config_free(node->mesh_cfg);
    node->mesh_cfg = next;
    return rc;
}

int app_node_apply_xds(struct app_node *node, const struct mesh_xds_state *state, char *err, size_t errlen)
{
    const struct app_config *cfg = node->mesh_cfg != NULL ? node->mesh_cfg : node->cfg;
    int rc;

    if (node->mesh == NULL) {
        snprintf(err, errlen, "this node runs without a mesh");
        return -EPERM;
    }
    rc = reload_swap(node,
                     app_mesh_node_new_from_xds(cfg, &node->mesh_env, state, app_istiod_certs(node->istiod), err,
                                                errlen),
                     cfg, err, errlen);
    if (rc == 0 || rc == -ETIMEDOUT)
        app_istiod_applied(node->istiod, state->generation);
    return rc;
}

int app_node_rotate_certs(struct app_node *node, char *err, size_t errlen)
{
    const struct app_config *cfg = node->mesh_cfg != NULL ? node->mesh_cfg : node->cfg;
    int rc;

    if (node->mesh == NULL || !app_mesh_node_needs_rotation(node->mesh))
        return 0;
    rc = reload_swap(node, app_mesh_node_renew(node->mesh, err, errlen), cfg, err, errlen);
    if (rc < 0 && rc != -ETIMEDOUT)
        return rc;
    APP_LOG_INFO("mesh", "certificates rotated at half-life; live connections keep theirs");
    return rc < 0 ? rc : 1;
}
