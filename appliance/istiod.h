/* SPDX-License-Identifier: Apache-2.0 */
/*
 * appliance/istiod.h - a node's link to istiod, shared by both backends: the xDS agent (workloads, services and
 * policies over Delta ADS) and, when the node's certificates come from istiod, the certificate manager that asks
 * the Istio CA for every local workload identity over the agent's channels.
 *
 * The backend owns the poll loop and the mesh side; this module hands it each new snapshot once
 * (app_istiod_take_snapshot) after telling the certificate manager which identities the snapshot puts on this
 * node, and offers the manager as the certificate source of the mesh side it builds (app_istiod_certs).
 *
 * Invariants:
 *  - Control thread only, except app_cert_manager_get on the manager app_istiod_certs returns (any thread).
 *  - The tracked identities are exactly those of the workloads scheduled on the xds node name in the newest
 *    snapshot; a certificate is requested for each as soon as the snapshot arrives and renewed at half-life.
 *  - A snapshot is never lost: the newest one not yet taken is kept (older ones are dropped, a later one supersedes).
 *  - On-demand mode (xds.on_demand): app_istiod_lookup may be called from any thread (a mutex guards the sets); the
 *    control thread turns each new address into an Address subscription "/IP" at its next process(). An address
 *    stays "asked" until a snapshot knows it or istiod answers with its removal (then it is "answered unknown" for a
 *    minute, and lookups of it return at once); each address is subscribed once. When the sets are full, lookups
 *    are refused (the connection goes on at once, passed through).
 */
#ifndef ZW_APP_ISTIOD_H
#define ZW_APP_ISTIOD_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "appliance/config.h"
#include "mesh/env.h"
#include "mesh/proxy.h"

#define APP_ISTIOD_MAX_FDS 2

struct app_istiod;
struct app_cert_manager;
struct mesh_xds_state;

/*
 * Start following istiod as cfg's xds group says (cfg must have one). With certificates from istiod
 * (mesh.certificates.source = "xds"), the certificate manager is created too. env: wall clock, libc allocator;
 * borrowed, must outlive the link and every snapshot and certificate it hands out. NULL with err set.
 */
struct app_istiod *app_istiod_new(const struct mesh_env *env, const struct app_config *cfg, char *err,
                                  size_t errlen);
/* Close the connections (outstanding CA calls end first). NULL is a no-op. */
void app_istiod_free(struct app_istiod *x);

/* Poll integration, as mgmt/server.h: fill fds (at most APP_ISTIOD_MAX_FDS), poll them at most timeout_ms
 * (-1: only on events), then process with the same array (n may be 0). */
int app_istiod_fds(const struct app_istiod *x, struct pollfd *fds, unsigned max);
int app_istiod_timeout_ms(const struct app_istiod *x);
void app_istiod_process(struct app_istiod *x, const struct pollfd *fds, unsigned n);

/* The newest snapshot not yet taken (one reference, the caller's), or NULL. */
const struct mesh_xds_state *app_istiod_take_snapshot(struct app_istiod *x);
/* The backend built its mesh side from snapshot generation gen (shown in the dump). */
void app_istiod_applied(struct app_istiod *x, uint64_t gen);

/* The certificate source for the mesh side (borrowed, lives as long as x), or NULL when the local CA signs. */
struct app_cert_manager *app_istiod_certs(const struct app_istiod *x);

/* The proxies' on-demand lookup hook (mesh/proxy.h; any thread): MESH_LOOKUP_PENDING when ip was asked for (now or
 * before) and not answered yet; MESH_LOOKUP_UNKNOWN when istiod answered that nobody has it (within the last minute),
 * or the node cannot ask (not in on-demand mode, too many lookups outstanding). */
enum mesh_proxy_lookup app_istiod_lookup(struct app_istiod *x, const struct mesh_addr *ip);

/* Ready once the first ACK of each type was sent; pending names the task ("state manager") until then. */
bool app_istiod_ready(const struct app_istiod *x);
const char *app_istiod_pending(const struct app_istiod *x);

/* The /config_dump "xds" object: connection, versions and last NACK per type, snapshots published and applied,
 * and with istiod certificates the CA call counters (a new reference). */
json_t *app_istiod_dump_json(const struct app_istiod *x);
struct mgmt_prom;
/* The istio_xds_* families (facts section 5: terminations by reason, messages and bytes by type URL) into prom. */
void app_istiod_metrics_render(struct mgmt_prom *prom, const struct app_istiod *x);

#endif
