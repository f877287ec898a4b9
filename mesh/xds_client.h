/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/xds_client.h - the Delta ADS client state machine as an I/O-free engine (ztunnel-wire-facts.md section 3.4).
 *
 * It turns DeltaDiscoveryResponse bytes into handler upcalls and produces the DeltaDiscoveryRequest bytes to send
 * back. Framing, HTTP/2, TLS and sockets live elsewhere (mesh/grpc.h, mesh/xds_conn.h, the backend).
 *
 * Invariants:
 *  - Types are subscribed in a fixed order, Address then Authorization (section 3.4 "Initial requests"); every new
 *    stream starts with one initial request per type. Only that first request of each type on a stream carries the
 *    Node (section 3.3); it lists, in initial_resource_versions, every resource accepted on earlier streams with its
 *    Resource.version. Subscription lists are empty (wildcard), except in on-demand mode for Address, where the
 *    initial request subscribes and unsubscribes "*" together (subscribe to nothing) and later lookups subscribe one
 *    name each.
 *  - Each response is answered exactly once, after every one of its resources went through the handler and
 *    on_batch_done was called: an ACK {type_url, response_nonce}, or a NACK that adds error_detail.message =
 *    "name1: reason; name2: reason" (code 0) listing only the rejected resources; the accepted ones stay applied.
 *    A response with an unknown type_url is ACKed and ignored.
 *  - Only accepted resources are recorded (name -> version); rejected ones never are, so istiod re-sends them.
 *    Removals delete the record and are passed to on_removed even for names never seen.
 *  - Readiness: a type is ready once the first ACK for it was queued; the client is ready when every type is.
 *    Readiness is never lost again (reconnects keep serving the last state).
 *  - Reconnect (section 3.4 "Reconnect"): a failed stream (ConnectionError, Error) waits for the current backoff,
 *    which starts at 10 ms, doubles per consecutive failure and is capped at 15 s, with +-20% jitter from the env
 *    randomness (the result is still capped at 15 s). A clean end (Complete) or a benign gRPC status (Reconnect:
 *    CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, "transport is closing", "received prior goaway") reconnects after 10 ms.
 *    The backoff returns to 10 ms once a stream delivered a response that decoded.
 *  - All memory comes from the env; the handler is called only from inside mesh_xds_client_on_response.
 */
#ifndef MESH_XDS_CLIENT_H
#define MESH_XDS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/buf.h"
#include "mesh/env.h"
#include "mesh/err.h"
#include "mesh/grpc.h"

#define MESH_XDS_TYPE_URL_ADDRESS "type.googleapis.com/istio.workload.Address"
#define MESH_XDS_TYPE_URL_AUTHORIZATION "type.googleapis.com/istio.security.Authorization"
#define MESH_XDS_DEFAULT_INSTANCE_IP "1.1.1.1"
#define MESH_XDS_BACKOFF_INITIAL_NS (10ull * 1000000ull)
#define MESH_XDS_BACKOFF_MAX_NS (15ull * 1000000000ull)
#define MESH_XDS_BACKOFF_JITTER_PERCENT 20
#define MESH_XDS_NO_DEADLINE UINT64_MAX
#define MESH_XDS_REASON_MAX_BYTES 512        /* one rejection reason, truncated */
#define MESH_XDS_NACK_MAX_BYTES (64u * 1024) /* the joined error_detail message, truncated */

/* Subscribed types, in subscription order. */
enum mesh_xds_type { MESH_XDS_TYPE_ADDRESS = 0, MESH_XDS_TYPE_AUTHORIZATION = 1, MESH_XDS_TYPE_COUNT };

/* istio_xds_connection_terminations_total{reason} (facts section 5). */
enum mesh_xds_term {
    MESH_XDS_TERM_CONNECTION_ERROR = 0,
    MESH_XDS_TERM_ERROR,
    MESH_XDS_TERM_RECONNECT,
    MESH_XDS_TERM_COMPLETE,
    MESH_XDS_TERM_COUNT
};

/* One decoded resource of a response, all pointers borrowed for the duration of the upcall. */
struct mesh_xds_resource {
    enum mesh_xds_type type;
    const char *name;     /* Resource.name, the xDS key; never empty */
    const char *version;  /* Resource.version; may be "" */
    const uint8_t *value; /* Any.value: a serialized istio.workload.Address or istio.security.Authorization */
    size_t value_len;
    const char *const *aliases; /* Resource.aliases (Address: "<network>/<ip>") */
    size_t n_aliases;
};

/* Upcalls into the conversion layer; u is the pointer given to mesh_xds_client_new. */
struct mesh_xds_handler {
    /* Apply (upsert) one resource. Return NULL when applied, or a short reason (borrowed until the next upcall; it is
     * copied) to reject it: it then goes into the NACK and is not recorded. */
    const char *(*on_resource)(void *u, const struct mesh_xds_resource *r);
    /* Delete name (from removed_resources). */
    void (*on_removed)(void *u, enum mesh_xds_type type, const char *name);
    /* Every resource and removal of one response was delivered: publish. May be NULL. */
    void (*on_batch_done)(void *u, enum mesh_xds_type type);
};

/* An extra Node.metadata entry (proxyMetadata, ISTIO_METAJSON_*). Exactly one of string_value or value_pb is set:
 * value_pb is a serialized google.protobuf.Value (the backend converts JSON into it). Later entries override earlier
 * ones and the built-in keys. */
struct mesh_xds_meta {
    const char *key;
    const char *string_value;
    const uint8_t *value_pb;
    size_t value_pb_len;
};

/* Identity of this node (section 3.3). Strings are copied; NULL means "". */
struct mesh_xds_client_cfg {
    const char *instance_ip; /* INSTANCE_IP; NULL or "" -> MESH_XDS_DEFAULT_INSTANCE_IP */
    const char *pod_name;
    const char *pod_namespace;
    const char *node_name;
    const struct mesh_xds_meta *meta;
    size_t n_meta;
    bool on_demand; /* XDS_ON_DEMAND: Address starts subscribed to nothing */
};

/* Counters since creation (istio_xds_* metrics plus engine details). messages/message_bytes index
 * MESH_XDS_TYPE_COUNT counts responses of unknown type. */
struct mesh_xds_stats {
    uint64_t terminations[MESH_XDS_TERM_COUNT];      /* istio_xds_connection_terminations_total */
    uint64_t messages[MESH_XDS_TYPE_COUNT + 1];      /* istio_xds_message_total{url} */
    uint64_t message_bytes[MESH_XDS_TYPE_COUNT + 1]; /* istio_xds_message_bytes_total{url}: sum of Any.value */
    uint64_t streams_started;
    uint64_t requests;
    uint64_t acks;
    uint64_t nacks;
    uint64_t resources_applied;
    uint64_t resources_rejected;
    uint64_t resources_removed;
    uint64_t bad_responses; /* responses that did not decode (the stream is ended) */
};

struct mesh_xds_client;

/*
 * Create a client in the idle state (call mesh_xds_client_stream_start once a stream is open).
 * @env  borrowed, must outlive the client; @cfg copied; @h copied (on_resource and on_removed are required)
 * Returns the client, or NULL and *err = MESH_ERR_NOMEM or MESH_ERR_CONFIG (handler incomplete, a meta value_pb that
 * does not decode as google.protobuf.Value, or a meta entry with neither value).
 */
struct mesh_xds_client *mesh_xds_client_new(const struct mesh_env *env, const struct mesh_xds_client_cfg *cfg,
                                            const struct mesh_xds_handler *h, void *u, int *err);

/* Free the client and its records. NULL is a no-op. */
void mesh_xds_client_free(struct mesh_xds_client *c);

/*
 * A new ADS stream is open: queue the initial request of each type (Address, then Authorization). Anything still
 * queued from an earlier stream is dropped.
 * Returns MESH_OK, MESH_ERR_STATE (a stream is already running: end it first), MESH_ERR_NOMEM (the stream cannot
 * start: end it with a connection error).
 */
int mesh_xds_client_stream_start(struct mesh_xds_client *c);

/*
 * Take the next queued DeltaDiscoveryRequest: its serialized bytes (no gRPC prefix) are appended to out.
 * Returns 1 when a request was appended, 0 when nothing is queued, -ENOBUFS/-ENOMEM when out could not take it (the
 * request stays queued).
 */
int mesh_xds_client_next_request(struct mesh_xds_client *c, struct mesh_buf *out);

/* True when a request is queued. */
bool mesh_xds_client_want_write(const struct mesh_xds_client *c);

/*
 * Process one DeltaDiscoveryResponse (serialized bytes, no gRPC prefix): upcalls for every resource and removal,
 * then on_batch_done, then queue the ACK/NACK.
 * Returns MESH_OK; -EBADMSG when the bytes are not a DeltaDiscoveryResponse (nothing was applied; the caller ends
 * the stream, reporting MESH_GRPC_INTERNAL); -ENOMEM (the stream must be ended); MESH_ERR_STATE outside a stream.
 */
int mesh_xds_client_on_response(struct mesh_xds_client *c, const uint8_t *msg, size_t len);

/*
 * The stream ended. Classifies the termination (counted), schedules the reconnect and moves to the waiting state.
 * @st                the gRPC status (NULL or !have_status: treated as UNKNOWN)
 * @connection_error  true when the transport failed (TCP, TLS, HTTP/2) rather than the call
 * Returns the termination class. Calling it while not streaming only reschedules.
 */
enum mesh_xds_term mesh_xds_client_stream_end(struct mesh_xds_client *c, const struct mesh_grpc_status *st,
                                              bool connection_error);

/* When the next stream should be opened (env clock, ns): 0 before the first stream, the reconnect time while
 * waiting, MESH_XDS_NO_DEADLINE while a stream runs. */
uint64_t mesh_xds_client_next_deadline(const struct mesh_xds_client *c);

/* True when no stream runs and now is at or past the reconnect time. */
bool mesh_xds_client_should_connect(const struct mesh_xds_client *c, uint64_t now_ns);

/* True while a stream runs (between stream_start and stream_end). */
bool mesh_xds_client_is_streaming(const struct mesh_xds_client *c);

/*
 * On-demand lookup (Address only, on_demand mode): queue {type_url=Address, resource_names_subscribe=[name]}.
 * name is "network/IP", a workload uid or "ns/hostname". Names stay subscribed across reconnects.
 * Returns MESH_OK, MESH_ERR_STATE (not in on-demand mode), MESH_ERR_NOMEM.
 */
int mesh_xds_client_subscribe(struct mesh_xds_client *c, const char *name);

/* Readiness (see invariants). */
bool mesh_xds_client_type_ready(const struct mesh_xds_client *c, enum mesh_xds_type t);
bool mesh_xds_client_is_ready(const struct mesh_xds_client *c);

/* Records: how many resources of t are held, and the version held for name (NULL when none). The string lives
 * until the next on_response/free. */
size_t mesh_xds_client_record_count(const struct mesh_xds_client *c, enum mesh_xds_type t);
const char *mesh_xds_client_record_version(const struct mesh_xds_client *c, enum mesh_xds_type t, const char *name);

/* The delay the next failure would wait before jitter (for tests and the admin dump). */
uint64_t mesh_xds_client_backoff_ns(const struct mesh_xds_client *c);

const struct mesh_xds_stats *mesh_xds_client_stats(const struct mesh_xds_client *c);

/* Static strings: the type URL of t, and the metric label of a termination ("ConnectionError", "Error",
 * "Reconnect", "Complete"). */
const char *mesh_xds_type_url(enum mesh_xds_type t);
const char *mesh_xds_term_label(enum mesh_xds_term t);

/* The type whose URL is url, or MESH_XDS_TYPE_COUNT when it is not one we subscribe to. */
enum mesh_xds_type mesh_xds_type_from_url(const char *url);

/* protobuf-c allocator over the env (for the conversion layer's unpack calls). */
struct ProtobufCAllocator;
void mesh_xds_pb_allocator(const struct mesh_env *env, struct ProtobufCAllocator *out);

#endif /* MESH_XDS_CLIENT_H */
