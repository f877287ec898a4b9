/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/workload.h - the node's view of the mesh: workloads and services shaped on istio.workload.Workload and
 * istio.workload.Service (facts §3.5), in an immutable, indexed, reference-counted snapshot.
 *
 * Invariants:
 *  - A snapshot is built once, then never changes: by mesh_workloads_new from caller-described workloads and services,
 *    which it deep-copies, or by mesh_workloads_new_shared over the caller's immutable records, which it pins through
 *    the caller's keeper until its last reference goes (so consecutive snapshots share every unchanged record and a
 *    build costs one pointer and a few index slots per record). Every pointer it hands out (workloads, services,
 *    strings, endpoint lists) lives as long as a reference to the snapshot is held.
 *  - The reference count is atomic, so ctrl may publish one snapshot to several lcores; the last unref frees it with
 *    the env it was built with (whose allocator must be usable from that thread).
 *  - xDS defaults are applied at build time: empty trust_domain -> "cluster.local", empty service_account ->
 *    "default", capacity 0 -> 1 (shared records must come with them applied). mesh_workload_identity derives a
 *    workload's SPIFFE identity.
 *  - Indexes: workload by IP (each IP belongs to at most one workload; HOST_NETWORK workloads are not indexed),
 *    service by VIP (each VIP belongs to at most one service), service by "namespace/hostname" key, and each
 *    service's endpoints (workloads whose services map names the service): in workload order after a full build;
 *    a derived snapshot keeps the previous order and lists added workloads last (the order carries no meaning).
 *  - Addresses in this module carry port 0; ports are host order.
 */
#ifndef MESH_WORKLOAD_H
#define MESH_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/conn.h"
#include "mesh/env.h"
#include "mesh/spiffe.h"

#define MESH_WORKLOAD_SERVICE_KEY_MAX_BYTES 512

enum mesh_tunnel_protocol {
    MESH_TUNNEL_NONE = 0,
    MESH_TUNNEL_HBONE = 1,
};

enum mesh_workload_status {
    MESH_WORKLOAD_HEALTHY = 0,
    MESH_WORKLOAD_UNHEALTHY = 1,
};

enum mesh_network_mode {
    MESH_NETWORK_STANDARD = 0,
    MESH_NETWORK_HOST = 1,
};

enum mesh_lb_mode {
    MESH_LB_UNSPECIFIED = 0,
    MESH_LB_STRICT = 1,
    MESH_LB_FAILOVER = 2,
    MESH_LB_PASSTHROUGH = 3,
};

enum mesh_lb_health {
    MESH_LB_ONLY_HEALTHY = 0,
    MESH_LB_ALLOW_ALL = 1,
};

/* istio.workload.Port: service_port -> target_port (0 = unknown / named port). Host order. */
struct mesh_port {
    uint16_t service_port;
    uint16_t target_port;
};

/* istio.workload.GatewayAddress: a waypoint or network gateway. */
struct mesh_gateway {
    bool set;
    const char *hostname_namespace; /* NamespacedHostname form when hostname != NULL/"" */
    const char *hostname;
    struct mesh_addr address; /* NetworkAddress form (family 0 when unset) */
    uint16_t hbone_mtls_port; /* host order; 0 means 15008 */
};

/* One entry of Workload.services: key "namespace/hostname" -> PortList. */
struct mesh_workload_service {
    const char *key;
    const struct mesh_port *ports;
    size_t n_ports;
};

/* istio.workload.Workload. As input to mesh_workloads_new every pointer is borrowed (copied); inside a snapshot
 * every pointer is owned by the snapshot and never NULL (strings may be ""). */
struct mesh_workload {
    const char *uid;
    const char *name;
    const char *namespace;
    const char *service_account; /* "" -> "default" */
    const char *trust_domain;    /* "" -> "cluster.local" */
    const char *network;
    const char *node;
    const char *canonical_name;
    const char *canonical_revision;
    const char *workload_name;
    const char *cluster_id;
    const struct mesh_addr *addresses;
    size_t n_addresses;
    enum mesh_tunnel_protocol protocol;
    struct mesh_gateway waypoint;
    const char *const *authorization_policies; /* "ns/name" */
    size_t n_authorization_policies;
    const struct mesh_workload_service *services;
    size_t n_services;
    enum mesh_workload_status status;
    enum mesh_network_mode network_mode;
    uint32_t capacity; /* LB weight; 0 -> 1 */
};

/*
 * The workload's SPIFFE identity from its trust domain, namespace and service account (empty parts take the
 * defaults "cluster.local" and "default"), into out. Not stored: a struct mesh_spiffe_id is 768 bytes, and a mesh
 * has tens of thousands of workloads. Returns 0 (always, for a workload of a snapshot: validated when it was built),
 * or -EINVAL / -ENAMETOOLONG when a part has a '/' or is too long.
 */
int mesh_workload_identity(const struct mesh_workload *w, struct mesh_spiffe_id *out);

/* istio.workload.Service. Same ownership rules as struct mesh_workload. */
struct mesh_service {
    const char *name;
    const char *namespace;
    const char *hostname;
    const struct mesh_addr *addresses; /* VIPs; empty for headless */
    size_t n_addresses;
    const struct mesh_port *ports;
    size_t n_ports;
    const char *const *subject_alt_names;
    size_t n_subject_alt_names;
    struct mesh_gateway waypoint;
    enum mesh_lb_mode lb_mode;
    enum mesh_lb_health lb_health;
};

/* One endpoint of a service: the workload and its PortList for that service (may be empty). */
struct mesh_endpoint {
    const struct mesh_workload *workload;
    const struct mesh_port *ports;
    size_t n_ports;
};

struct mesh_workloads;

/*
 * Build a snapshot.
 * @env  allocator; borrowed, must outlive the snapshot
 * @w, n_w / @s, n_s  descriptions, deep-copied (the caller keeps ownership of its arrays)
 * @err  on failure a static reason ("duplicate workload uid", "address claimed by two workloads", ...)
 * Returns a snapshot with one reference, or NULL (*err set; "out of memory" on allocation failure).
 */
struct mesh_workloads *mesh_workloads_new(const struct mesh_env *env, const struct mesh_workload *w, size_t n_w,
                                          const struct mesh_service *s, size_t n_s, const char **err);

/*
 * How snapshots keep shared records alive: hold(u, &ticket) when a snapshot takes the caller's records, and
 * release(u, ticket) when its last reference goes (from whatever thread drops it). The caller frees a record it no
 * longer lists only once every snapshot that may hold it was released (for example by generation: a record retired
 * after the snapshot with ticket T was built may be freed once no ticket <= T is held).
 */
struct mesh_workloads_keeper {
    void (*hold)(void *u, uint64_t *ticket);
    void (*release)(void *u, uint64_t ticket);
    void *u;
};

/*
 * Build a snapshot over the caller's records without copying them. Each record (and what it points to) must stay
 * unchanged while a snapshot holds it, be normalized as mesh_workloads_new would make it (strings non-NULL, defaults
 * applied, addresses with port 0; arrays may be NULL when their count is 0), and follow the same rules (the same
 * reasons are returned). keeper must outlive the snapshot. Returns the snapshot with one reference, or NULL with
 * *err set (and nothing held).
 */
struct mesh_workloads *mesh_workloads_new_shared(const struct mesh_env *env, const struct mesh_workload *const *w,
                                                 size_t n_w, const struct mesh_service *const *s, size_t n_s,
                                                 const struct mesh_workloads_keeper *keeper, const char **err);

/*
 * The next snapshot after prev (built by new_shared or derive_shared) when only workloads changed: w, n_w is the
 * whole new workload list; gone are prev's records not in it, added the records new to it (a changed workload is
 * both). prev's services and keeper are kept. The cost follows the size of the change plus a copy of prev's index
 * tables, not the number of records read. Returns the snapshot, or NULL with *err ("address claimed by two
 * workloads", "duplicate workload uid", ...: the caller can fall back to a full build).
 */
struct mesh_workloads *mesh_workloads_derive_shared(const struct mesh_workloads *prev,
                                                    const struct mesh_workload *const *w, size_t n_w,
                                                    const struct mesh_workload *const *gone, size_t n_gone,
                                                    const struct mesh_workload *const *added, size_t n_added,
                                                    const char **err);

/* Take / drop a reference (atomic). unref(NULL) is a no-op. */
const struct mesh_workloads *mesh_workloads_ref(const struct mesh_workloads *ws);
void mesh_workloads_unref(const struct mesh_workloads *ws);

size_t mesh_workloads_count(const struct mesh_workloads *ws);
const struct mesh_workload *mesh_workloads_at(const struct mesh_workloads *ws, size_t i);
size_t mesh_workloads_service_count(const struct mesh_workloads *ws);
const struct mesh_service *mesh_workloads_service_at(const struct mesh_workloads *ws, size_t i);

/* The workload owning ip (port ignored), or NULL. */
const struct mesh_workload *mesh_workloads_find_by_ip(const struct mesh_workloads *ws, const struct mesh_addr *ip);
/* The workload with this uid, or NULL. */
const struct mesh_workload *mesh_workloads_find_by_uid(const struct mesh_workloads *ws, const char *uid);
/* The service owning the VIP (port ignored), or NULL. */
const struct mesh_service *mesh_workloads_find_service_by_vip(const struct mesh_workloads *ws,
                                                              const struct mesh_addr *vip);
/* The service for VIP:port (port in network order, as in struct mesh_addr) and the matching port entry; NULL when the
 * VIP is unknown or the service has no such port. */
const struct mesh_service *mesh_workloads_find_service(const struct mesh_workloads *ws, const struct mesh_addr *vip_port,
                                                       const struct mesh_port **port_out);
/* The service with key "namespace/hostname", or NULL. */
const struct mesh_service *mesh_workloads_find_service_by_key(const struct mesh_workloads *ws, const char *key);

/* Endpoints of a service (every workload naming it, healthy or not). *out lives with the snapshot. */
size_t mesh_workloads_endpoints(const struct mesh_workloads *ws, const struct mesh_service *svc,
                                const struct mesh_endpoint **out);

/*
 * Pick an endpoint for svc on service_port (host order): among endpoints that are healthy (or all with
 * MESH_LB_ALLOW_ALL), have an address of `family` (0: any), and have a known target port (the workload's PortList
 * entry, else the service's target_port, else service_port itself when the service lists no ports), choose one at
 * random weighted by capacity, using rnd (any 64-bit random value).
 * Returns the endpoint and fills *target_port (host order) and *addr (the endpoint's first address of family, port =
 * target port in network order), or NULL when none qualifies.
 */
const struct mesh_endpoint *mesh_workloads_pick_endpoint(const struct mesh_workloads *ws, const struct mesh_service *svc,
                                                         uint16_t service_port, uint8_t family, uint64_t rnd,
                                                         uint16_t *target_port, struct mesh_addr *addr);

/* Address helpers. */
bool mesh_addr_ip_eq(const struct mesh_addr *a, const struct mesh_addr *b); /* family + IP, port ignored */
/* Format "a.b.c.d:port" / "[v6]:port" (with_port) or the bare IP into out. Returns the length or -ENOSPC. */
int mesh_addr_format(const struct mesh_addr *a, bool with_port, char *out, size_t cap);
/* Parse a bare IPv4/IPv6 literal (no port). Returns 0 or -EINVAL. out->port is 0. */
int mesh_addr_parse_ip(const char *s, struct mesh_addr *out);

const char *mesh_tunnel_protocol_str(enum mesh_tunnel_protocol p);

#endif /* MESH_WORKLOAD_H */
