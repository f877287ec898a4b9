/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/metrics.h - the istio_tcp_* counter registry, one per lcore, rendered by the mgmt layer.
 *
 * Invariants:
 *  - A series is one label set (facts §5 "ztunnel TCP label set", in encoding order) with its counters. Label values
 *    are copied into the registry; a NULL or empty value is stored as "unknown".
 *  - Series are only ever added, never removed; indexes 0..count-1 are stable and pointers returned by
 *    mesh_metrics_at stay valid until the next mesh_metrics_series_get (which may grow the table) or free.
 *  - A registry belongs to one thread (the lcore that bumps it). Another thread reads it only through
 *    mesh_metrics_merge run by the owner, or while the owner is quiescent.
 *  - All memory comes from the env given at creation; no formatting happens here (the mgmt layer renders).
 */
#ifndef MESH_METRICS_H
#define MESH_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "mesh/env.h"

#define MESH_METRICS_TCP_OPENED "istio_tcp_connections_opened_total"
#define MESH_METRICS_TCP_CLOSED "istio_tcp_connections_closed_total"
#define MESH_METRICS_TCP_SENT "istio_tcp_sent_bytes_total"
#define MESH_METRICS_TCP_RECEIVED "istio_tcp_received_bytes_total"
#define MESH_METRICS_TCP_FAILED "istio_tcp_connections_failed_total"

/* X(enum suffix, label name), in the facts §5 encoding order. */
#define MESH_METRICS_LABELS(X)                                                                                         \
    X(REPORTER, "reporter")                                                                                            \
    X(SOURCE_WORKLOAD, "source_workload")                                                                              \
    X(SOURCE_CANONICAL_SERVICE, "source_canonical_service")                                                            \
    X(SOURCE_CANONICAL_REVISION, "source_canonical_revision")                                                          \
    X(SOURCE_WORKLOAD_NAMESPACE, "source_workload_namespace")                                                          \
    X(SOURCE_PRINCIPAL, "source_principal")                                                                            \
    X(SOURCE_APP, "source_app")                                                                                        \
    X(SOURCE_VERSION, "source_version")                                                                                \
    X(SOURCE_CLUSTER, "source_cluster")                                                                                \
    X(DESTINATION_SERVICE, "destination_service")                                                                      \
    X(DESTINATION_SERVICE_NAMESPACE, "destination_service_namespace")                                                  \
    X(DESTINATION_SERVICE_NAME, "destination_service_name")                                                            \
    X(DESTINATION_WORKLOAD, "destination_workload")                                                                    \
    X(DESTINATION_CANONICAL_SERVICE, "destination_canonical_service")                                                  \
    X(DESTINATION_CANONICAL_REVISION, "destination_canonical_revision")                                                \
    X(DESTINATION_WORKLOAD_NAMESPACE, "destination_workload_namespace")                                                \
    X(DESTINATION_PRINCIPAL, "destination_principal")                                                                  \
    X(DESTINATION_APP, "destination_app")                                                                              \
    X(DESTINATION_VERSION, "destination_version")                                                                      \
    X(DESTINATION_CLUSTER, "destination_cluster")                                                                      \
    X(REQUEST_PROTOCOL, "request_protocol")                                                                            \
    X(RESPONSE_FLAGS, "response_flags")                                                                                \
    X(CONNECTION_SECURITY_POLICY, "connection_security_policy")

enum mesh_metrics_label {
#define MESH_METRICS_X(e, s) MESH_METRICS_L_##e,
    MESH_METRICS_LABELS(MESH_METRICS_X)
#undef MESH_METRICS_X
        MESH_METRICS_LABEL_COUNT
};

/* Label names, indexed by enum mesh_metrics_label. */
extern const char *const mesh_metrics_label_names[MESH_METRICS_LABEL_COUNT];

struct mesh_metrics_series {
    const char *labels[MESH_METRICS_LABEL_COUNT]; /* owned by the registry, never NULL */
    uint64_t opened;
    uint64_t closed;
    uint64_t failed;
    uint64_t sent_bytes;     /* server -> client */
    uint64_t received_bytes; /* client -> server */
};

struct mesh_metrics;

/* Create an empty registry. @env borrowed, must outlive it. Returns NULL on allocation failure. */
struct mesh_metrics *mesh_metrics_new(const struct mesh_env *env);
void mesh_metrics_free(struct mesh_metrics *m);

/*
 * Find the series with exactly these label values (NULL/"" means "unknown"), creating it with zero counters.
 * Returns the series (valid until the next series_get or free) or NULL on allocation failure.
 */
struct mesh_metrics_series *mesh_metrics_series_get(struct mesh_metrics *m,
                                                    const char *const labels[MESH_METRICS_LABEL_COUNT]);

/* Number of series, and the i-th one (i < count), for rendering. */
size_t mesh_metrics_count(const struct mesh_metrics *m);
const struct mesh_metrics_series *mesh_metrics_at(const struct mesh_metrics *m, size_t i);

/* Add every series of src into dst (matching label sets summed). Returns 0 or -ENOMEM (dst partially merged). */
int mesh_metrics_merge(struct mesh_metrics *dst, const struct mesh_metrics *src);

/* Sums over every series whose label `label` equals value (NULL value: all series), for tests and summaries. */
struct mesh_metrics_series mesh_metrics_sum(const struct mesh_metrics *m, enum mesh_metrics_label label,
                                            const char *value);

#endif /* MESH_METRICS_H */
