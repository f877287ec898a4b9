/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mesh side of a node, whatever its backend: the workload snapshot and the compiled policy set built from the
 * config file, the local CA and the certificates of the node's workloads, and the hooks every mesh_proxy of the node
 * shares (certificate lookup, authorization, access log).
 *
 * Ownership and threading: built by the control thread before any worker runs, then immutable. The hooks only read
 * it (and take atomic references on certificate bundles and snapshots), so the proxies of all lcores call them
 * concurrently without locks. Certificates come from one of two sources: issued here from the local CA for each
 * local workload identity at build time (rotation replaces the whole struct, never a field), or looked up in the
 * istiod certificate manager (appliance/cert_manager.h, thread-safe lookup), which renews them on its own.
 */
#ifndef ZW_APP_MESH_NODE_H
#define ZW_APP_MESH_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "appliance/config.h"
#include "mesh/authz.h"
#include "mesh/env.h"
#include "mesh/identity.h"
#include "mesh/proxy.h"
#include "mesh/workload.h"

struct app_mesh_node;

/*
 * Build from cfg (mesh, workloads, services, policies). env must be usable from any thread (libc allocator,
 * CLOCK_REALTIME) and outlive the result. Returns NULL with a message in err.
 */
struct app_mesh_node *app_mesh_node_new(const struct app_config *cfg, const struct mesh_env *env, char *err,
                                        size_t errlen);
void app_mesh_node_free(struct app_mesh_node *n);

struct mesh_xds_state;
struct app_cert_manager;
/*
 * Build from an istiod snapshot (workloads, services and policies; a reference is kept) and cfg (trust domain, mTLS
 * mode, node name). certs: where the local workloads' certificates come from (the istiod certificate manager,
 * borrowed, must outlive the result; it renews them itself), or NULL to issue them here from the local CA of cfg.
 * Returns NULL with a message in err.
 */
struct app_mesh_node *app_mesh_node_new_from_xds(const struct app_config *cfg, const struct mesh_env *env,
                                                 const struct mesh_xds_state *state, struct app_cert_manager *certs,
                                                 char *err, size_t errlen);

/* True when a certificate this mesh side issued itself reached half of its lifetime (mesh_identity_needs_rotation);
 * always false when a certificate manager renews them. */
bool app_mesh_node_needs_rotation(const struct app_mesh_node *n);
/* The same mesh side with fresh certificates for every local identity (same config or snapshot). NULL with err. */
struct app_mesh_node *app_mesh_node_renew(const struct app_mesh_node *n, char *err, size_t errlen);

/* The snapshot (borrowed: the proxies take their own references). */
const struct mesh_workloads *app_mesh_node_workloads(const struct app_mesh_node *n);
/* The compiled policies (borrowed). */
const struct mesh_authz_set *app_mesh_node_authz(const struct app_mesh_node *n);

/* Fill the fields of a proxy config that every proxy of the node shares (workloads, hooks, mTLS mode, port). */
void app_mesh_node_proxy_config(struct app_mesh_node *n, struct mesh_proxy_config *pc);

/* Addresses (host order) of this node's workloads: what the data path captures. Returns the count (<= max). */
size_t app_mesh_node_local_addresses(const struct app_mesh_node *n, uint32_t *out, size_t max);

/* The hooks (u = the struct app_mesh_node). */
const struct mesh_cert_bundle *app_mesh_node_get_bundle(void *u, const struct mesh_spiffe_id *id);
enum mesh_proxy_verdict app_mesh_node_authorize(void *u, const struct mesh_proxy_conn_info *info);
void app_mesh_node_access_log(void *u, const struct mesh_proxy_access_record *rec);

/* For /config_dump: the certificates, as ztunnel shows them (identity, state, serial, expiry). */
size_t app_mesh_node_cert_count(const struct app_mesh_node *n);
const struct mesh_cert_bundle *app_mesh_node_cert_at(const struct app_mesh_node *n, size_t i);

/* For /config_dump: workloads, services, certificates, policy count and decisions (JSON object, new reference). */
json_t *app_mesh_node_dump_json(const struct app_mesh_node *n);

/* Decisions taken, for /stats: allowed, denied, dry-run denials logged. */
struct app_mesh_authz_stats {
    uint64_t allowed;
    uint64_t denied;
    uint64_t dry_run_denied;
};
void app_mesh_node_authz_stats(const struct app_mesh_node *n, struct app_mesh_authz_stats *out);

struct mgmt_prom;
struct mgmt_routes;
struct mesh_metrics;

/*
 * Register the node's mesh endpoints on routes. slot is where the node keeps its current mesh side (a reload replaces
 * *slot); it must outlive the routes.
 *   GET /authz/check?src_identity=spiffe://...&src=IP&dst=IP&port=N   explain a decision (JSON: decision, reason,
 *       the deciding policy, dry-run outcome, and a step-by-step trace)
 * Returns 0 or -errno.
 */
int app_mesh_node_register_routes(struct app_mesh_node *const *slot, struct mgmt_routes *routes);
/* Render the Istio TCP metric families of m (facts §5) into prom. */
void app_mesh_metrics_render(struct mgmt_prom *prom, const struct mesh_metrics *m);

struct mesh_proxy_conn_view;
/* One JSON object for a live proxied connection (GET /connections), lcore -1 when the backend has none. */
json_t *app_mesh_conn_view_json(const struct mesh_proxy_conn_view *v, int lcore, uint64_t now_ns);

/* A mesh_env for the backends: libc allocator, CLOCK_REALTIME, getrandom, the appliance log. */
void app_mesh_env_init(struct mesh_env *env);

#endif
