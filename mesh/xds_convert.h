/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/xds_convert.h - the xDS conversion layer: a mesh_xds_handler that decodes istio.workload.Address (Workload
 * or Service) and istio.security.Authorization resources (ztunnel-wire-facts.md sections 3.2, 3.5, 4), validates them,
 * keeps the accepted set keyed by resource name, and after every response publishes an immutable snapshot
 * (struct mesh_xds_state) holding a workload model (mesh/workload.h) and a compiled policy set (mesh/authz.h).
 *
 * Invariants:
 *  - Parse at the boundary: a resource is either converted in full into the internal model or rejected with one
 *    precise reason ("field: what is wrong"), which the xDS client turns into "name: reason" in the NACK. A rejected
 *    resource leaves the previously accepted version of that name in place (ztunnel keeps serving the old state).
 *  - Every accepted resource is valid for mesh_workloads_new / mesh_authz_set_new on its own: strings are set, enums
 *    in range, addresses 4 or 16 octets, ports 0..65535, the SPIFFE identity formats, the resource name equals the
 *    model key (Workload: uid; Service: "namespace/hostname"; Authorization: "namespace/name"). The only
 *    cross-resource conflict left is two workloads (or two services) claiming one IP (VIP): the snapshot resolves it
 *    by giving the address to the most recently applied claimant, as ztunnel's index does, and counts it.
 *  - Defaults applied (section 3.5): empty trust_domain -> "cluster.local", empty service_account -> "default",
 *    missing capacity -> 1, GatewayAddress.hbone_mtls_port 0 -> 15008.
 *  - Rejected (as ztunnel rejects them): bytes that do not decode; an Address with neither workload nor service;
 *    tunnel_protocol LEGACY_ISTIO_MTLS; any enum value outside its proto definition; an IP that is not 4 or 16 octets;
 *    a prefix length beyond 32/128; a GatewayAddress without destination; a port above 65535; a StringMatch without
 *    a match type; a service key without '/'; an identity segment containing '/' or longer than 255 bytes. Also
 *    rejected because the snapshot cannot hold them: an empty uid, an empty service namespace or hostname, service
 *    port 0 or listed twice, an address listed twice in one workload or service.
 *  - Not modelled but validated: workload_type, native_tunnel, application_tunnel, network_gateway, locality,
 *    extensions, app_protocol, routing_preference, ip_families, canonical, weighted_waypoints, visibility. Service
 *    addresses with a prefix shorter than the host length (CIDR services) are validated and left out of the VIP index.
 *  - Aliases (Resource.aliases, "network/ip") are kept per resource: a removal naming an alias removes the resource
 *    that holds it, as on-demand xDS sends them.
 *  - Incremental: each resource is converted once into its own arena; a batch only marks the parts it touched. On
 *    on_batch_done, the workload model is rebuilt only if an Address changed, the policy set only if an
 *    Authorization changed; the other part is shared with the previous snapshot.
 *  - Memory comes from the env; no I/O. All calls on one thread (the control thread).
 */
#ifndef MESH_XDS_CONVERT_H
#define MESH_XDS_CONVERT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/authz.h"
#include "mesh/env.h"
#include "mesh/workload.h"
#include "mesh/xds_client.h"

#define MESH_XDS_DEFAULT_HBONE_PORT 15008

struct mesh_xds_authz_holder; /* shared, refcounted owner of one struct mesh_authz_set */

/*
 * One published model. Immutable and reference counted (atomically): ctrl may hand it to several lcores; the last
 * mesh_xds_state_unref frees it. The pointers inside live as long as a reference to the state is held.
 */
struct mesh_xds_state {
    atomic_long refs;
    uint64_t generation;                   /* 1 for the first snapshot, +1 per publication */
    const struct mesh_workloads *workloads; /* never NULL; one reference owned by the state */
    const struct mesh_authz_set *authz;     /* never NULL (an empty set allows everything) */
    struct mesh_xds_authz_holder *authz_holder;
    const struct mesh_env *env;
};

/* Take / drop a reference. unref(NULL) is a no-op. */
const struct mesh_xds_state *mesh_xds_state_ref(const struct mesh_xds_state *s);
void mesh_xds_state_unref(const struct mesh_xds_state *s);

/* Receives each new snapshot with one reference that now belongs to the callee (unref it when done). */
typedef void (*mesh_xds_publish_fn)(void *u, const struct mesh_xds_state *snapshot);

struct mesh_xds_convert_stats {
    uint64_t applied[MESH_XDS_TYPE_COUNT];
    uint64_t rejected[MESH_XDS_TYPE_COUNT];
    uint64_t removed[MESH_XDS_TYPE_COUNT];
    uint64_t removed_unknown; /* removals naming nothing we hold (ignored) */
    uint64_t published;
    uint64_t build_failures;   /* out of memory while building: the previous snapshot stays current */
    uint64_t address_conflicts; /* IPs / VIPs given to the newest of several claimants in the last build */
    uint64_t last_build_ns;     /* env clock time spent in the last on_batch_done that built something */
    uint64_t derived;           /* workload snapshots derived from the previous one (only workloads changed) */
    size_t workloads, services, policies; /* held now */
    size_t bytes;                         /* bytes held by the converted resources and the indexes */
};

struct mesh_xds_convert;

/*
 * Create an empty converter. @env borrowed, must outlive the converter and every snapshot it publishes.
 * @publish  called from on_batch_done (so from inside mesh_xds_client_on_response) with each new snapshot; may be
 *           NULL (then read mesh_xds_convert_current).
 * Returns the converter, or NULL and *err = MESH_ERR_NOMEM.
 */
struct mesh_xds_convert *mesh_xds_convert_new(const struct mesh_env *env, mesh_xds_publish_fn publish, void *u,
                                              int *err);

/* Free the converter and everything it holds except published snapshots (they live on their references). */
void mesh_xds_convert_free(struct mesh_xds_convert *c);

/* The handler to pass to mesh_xds_client_new, with the converter as its user pointer. */
void mesh_xds_convert_handler(struct mesh_xds_handler *out);

/* The handler's three upcalls, callable directly (tests, benchmarks):
 * apply returns NULL when applied or the reason (a static string or a buffer inside c, valid until the next call). */
const char *mesh_xds_convert_apply(struct mesh_xds_convert *c, const struct mesh_xds_resource *r);
void mesh_xds_convert_remove(struct mesh_xds_convert *c, enum mesh_xds_type t, const char *name);
/* Build and publish if anything changed since the last publication (t is informative). Returns MESH_OK (also when
 * nothing changed), MESH_ERR_NOMEM (nothing published; the changes stay pending for the next batch). */
int mesh_xds_convert_batch_done(struct mesh_xds_convert *c, enum mesh_xds_type t);

/* The last published snapshot (borrowed: take a reference to keep it), or NULL before the first one. */
const struct mesh_xds_state *mesh_xds_convert_current(const struct mesh_xds_convert *c);

const struct mesh_xds_convert_stats *mesh_xds_convert_stats(const struct mesh_xds_convert *c);

#endif /* MESH_XDS_CONVERT_H */
