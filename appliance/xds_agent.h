/* SPDX-License-Identifier: Apache-2.0 */
/*
 * appliance/xds_agent.h - the control thread's istiod client: owns the sockets, drives mesh/xds_conn.h (gRPC over
 * HTTP/2 over server-only TLS) with the Delta ADS engine (mesh/xds_client.h) and the conversion layer
 * (mesh/xds_convert.h), and carries CreateCertificate calls for the certificate manager.
 *
 * Poll-loop integration, like mgmt/server.h: app_xds_agent_fds() fills pollfds, the caller polls them together with
 * its own (at most app_xds_agent_timeout_ms()), then calls app_xds_agent_process() with the same array.
 *
 * Invariants:
 *  - Names are resolved with getaddrinfo on the control thread when a connection starts; connects are
 *    non-blocking, limited by MESH_XDS_CONN_HANDSHAKE_TIMEOUT_NS (5 s) from the connect to the end of the TLS
 *    handshake. The root certificate file and the token file are re-read for every connection / every call.
 *  - Reconnects follow the xDS engine's schedule (10 ms after a clean end, backoff 10 ms .. 15 s after failures);
 *    a new stream on a new connection sends initial_resource_versions for everything accepted before.
 *  - Readiness: the first ACK of each type (Address, Authorization; Authorization only in on-demand mode); never
 *    lost afterwards. While not ready,
 *    app_xds_agent_pending() names the task "state manager" (ztunnel's name, facts section 1).
 *  - Each new model snapshot is handed to the publish callback given at creation (one reference each).
 *  - CA calls go to ca_address: the xDS connection when it is the same address, otherwise a second connection that
 *    is opened when calls are waiting. A call that cannot be carried completes with UNAVAILABLE.
 *  - Single-threaded: every function runs on the control thread.
 */
#ifndef ZW_APP_XDS_AGENT_H
#define ZW_APP_XDS_AGENT_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "appliance/cert_manager.h"
#include "appliance/config_xds.h"
#include "mesh/env.h"
#include "mesh/xds_client.h"
#include "mesh/xds_convert.h"

#define APP_XDS_AGENT_MAX_FDS 2
#define APP_XDS_AGENT_PENDING_TASK "state manager"

/* Status for /config_dump; strings are NUL-terminated copies. */
struct app_xds_agent_status {
    bool connected;                      /* TLS up on the xDS connection */
    bool ready;
    char last_error[256];                /* "" when none */
    char versions[MESH_XDS_TYPE_COUNT][64]; /* system-wide last accepted Resource.version seen per type */
    char last_nack[MESH_XDS_TYPE_COUNT][512]; /* the last NACK's error_detail per type, "" when none */
    uint64_t connects, connect_failures;
    uint64_t ca_calls, ca_failures;
    uint64_t generation;                 /* of the last published snapshot */
};

struct app_xds_agent;

/*
 * Create the agent (no I/O yet: the first connect happens in process/timeout).
 * @env      clock (wall clock ns), randomness, allocator; borrowed, must outlive the agent and its snapshots
 * @cfg      copied
 * @publish  receives every new snapshot (one reference, the callee's); may be NULL
 * Returns the agent or NULL and *err = -ENOMEM / -EINVAL.
 */
struct app_xds_agent *app_xds_agent_new(const struct mesh_env *env, const struct app_xds_config *cfg,
                                        mesh_xds_publish_fn publish, void *u, int *err);

/* Close the connections; outstanding CA calls complete with CANCELLED first. NULL is a no-op. */
void app_xds_agent_free(struct app_xds_agent *a);

/* Fill fds (at most max entries, APP_XDS_AGENT_MAX_FDS suffice) with what the agent waits for. Returns the count. */
int app_xds_agent_fds(const struct app_xds_agent *a, struct pollfd *fds, unsigned max);

/* Handle fds (as filled by app_xds_agent_fds, revents set by poll; n may be 0), then timers and reconnects.
 * Returns 0 (errors are recorded in the status and retried). */
int app_xds_agent_process(struct app_xds_agent *a, const struct pollfd *fds, unsigned n);

/* Milliseconds until process must run again (-1: only on fd events). */
int app_xds_agent_timeout_ms(const struct app_xds_agent *a);

bool app_xds_agent_ready(const struct app_xds_agent *a);
/* On-demand mode: subscribe to the Address resource name ("network/IP", a uid or "ns/hostname"); sent with the next
 * process() and kept across reconnects. Returns 0, -EPERM (not in on-demand mode), -ENOMEM. */
int app_xds_agent_lookup(struct app_xds_agent *a, const char *name);
/* Also tell fn of every removal the control plane sends (after the model applied it). */
void app_xds_agent_on_removed(struct app_xds_agent *a, void (*fn)(void *u, enum mesh_xds_type t, const char *name),
                              void *u);
/* APP_XDS_AGENT_PENDING_TASK while not ready, NULL when ready. */
const char *app_xds_agent_pending(const struct app_xds_agent *a);

const struct app_xds_agent_status *app_xds_agent_status(const struct app_xds_agent *a);
const struct mesh_xds_stats *app_xds_agent_xds_stats(const struct app_xds_agent *a);
/* The last published snapshot (borrowed), or NULL. */
const struct mesh_xds_state *app_xds_agent_state(const struct app_xds_agent *a);

struct mgmt_prom;
/* The istio_xds_* families (facts section 5) into prom: istio_xds_connection_terminations_total{reason},
 * istio_xds_message_total{url}, istio_xds_message_bytes_total{url}. */
void app_xds_agent_metrics_render(struct mgmt_prom *prom, const struct app_xds_agent *a);

/* A CA transport for the certificate manager over this agent's connections (out->u = a). */
void app_xds_agent_ca_transport(struct app_xds_agent *a, struct app_cert_ca *out);

#endif
