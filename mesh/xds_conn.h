/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/xds_conn.h - the channel to istiod: gRPC calls on an HTTP/2 client session (nghttp2 mem_recv/mem_send) over
 * server-only TLS (OpenSSL over memory BIOs), as an I/O-free engine (ztunnel-wire-facts.md sections 3.1 and 3.6).
 *
 * Bytes in/out are TLS ciphertext: feed what the socket read, send what lands in wire_out.
 *
 * Invariants:
 *  - TLS: client role, TLS 1.2 or 1.3, ALPN "h2" required, no client certificate. The server chain must verify to the
 *    configured roots (or the OS roots) at the env clock's time, and its certificate must match the configured server
 *    name or the alternative name (DNS name, or IP address when the name is an IP literal); SNI carries the name
 *    unless it is an IP literal. No SPIFFE check applies to istiod.
 *  - Every call is a POST to the given path with content-type application/grpc, te: trailers,
 *    authorization: Bearer <token> (the token is passed per call: the backend re-reads it every time),
 *    clusterid: <cluster id>, plus the configured extra headers (XDS_HEADER_* / CA_HEADER_*).
 *  - Keepalive: HTTP/2 PING every 30 s; no ACK within 10 s fails the channel. The TLS handshake must finish within
 *    5 s of creation (the connect timeout).
 *  - Received messages are deframed per call (at most max_message_bytes each, 200 MiB by default) and handed out
 *    whole. Every call ends with exactly one on_close upcall carrying the final status: the trailers' grpc-status,
 *    or a status derived from the HTTP status, a stream reset, a deadline, or a channel failure
 *    (connection_error = true, code UNAVAILABLE).
 *  - Upcalls run only from inside mesh_xds_conn_feed / flush / on_deadline / on_closed / call_cancel / free; they
 *    may open, send on or cancel calls, but must not free the channel.
 *  - Output is produced only by feed, flush and on_deadline: after opening, sending or cancelling, call flush.
 *  - Errors are mapped to enum mesh_err; OpenSSL and nghttp2 codes never leak out. A channel failure is sticky.
 */
#ifndef MESH_XDS_CONN_H
#define MESH_XDS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/buf.h"
#include "mesh/env.h"
#include "mesh/err.h"
#include "mesh/grpc.h"
#include "mesh/xds_client.h"

#define MESH_XDS_ADS_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
#define MESH_XDS_CONN_MAX_MESSAGE_BYTES (200u * 1024 * 1024)
#define MESH_XDS_CONN_PING_INTERVAL_NS (30ull * 1000000000ull)
#define MESH_XDS_CONN_PING_TIMEOUT_NS (10ull * 1000000000ull)
#define MESH_XDS_CONN_HANDSHAKE_TIMEOUT_NS (5ull * 1000000000ull)
#define MESH_XDS_CONN_DEFAULT_CLUSTER_ID "Kubernetes"
#define MESH_XDS_CONN_STREAM_WINDOW_BYTES (4u * 1024 * 1024)
#define MESH_XDS_CONN_WINDOW_BYTES (16u * 1024 * 1024)
#define MESH_XDS_CONN_NO_DEADLINE UINT64_MAX

/* One extra request header; both strings NUL-terminated, name lowercase. */
struct mesh_grpc_md {
    const char *name;
    const char *value;
};

/* Channel configuration; every string and array is copied at creation. */
struct mesh_xds_conn_cfg {
    const char *authority;       /* :authority, e.g. "istiod.istio-system.svc:15012" (required) */
    const char *server_name;     /* name the server certificate must match (required) */
    const char *alt_server_name; /* ALT_XDS_HOSTNAME / ALT_CA_HOSTNAME; NULL or "" for none */
    const char *roots_pem;       /* trusted roots (PEM); ignored when use_system_roots */
    size_t roots_len;
    bool use_system_roots;  /* the value SYSTEM: OpenSSL's default verify paths */
    const char *cluster_id; /* NULL or "": MESH_XDS_CONN_DEFAULT_CLUSTER_ID */
    const struct mesh_grpc_md *headers;
    size_t n_headers;
    size_t max_message_bytes;  /* 0: MESH_XDS_CONN_MAX_MESSAGE_BYTES */
    uint64_t ping_interval_ns; /* 0: defaults above */
    uint64_t ping_timeout_ns;
    uint64_t handshake_timeout_ns;
};

/* Upcalls of one call; u is the call's user pointer. */
struct mesh_xds_call_cb {
    /* One whole response message (borrowed for the call). Return 0, or non-zero to cancel the call (it then ends
     * with INTERNAL). */
    int (*on_message)(void *u, int32_t call, const uint8_t *msg, size_t len);
    /* Last upcall of the call. st is borrowed for the upcall. */
    void (*on_close)(void *u, int32_t call, const struct mesh_grpc_status *st, bool connection_error);
};

struct mesh_xds_conn_stats {
    uint64_t calls_opened;
    uint64_t calls_closed;
    uint64_t messages_sent;
    uint64_t messages_received;
    uint64_t pings_sent;
};

struct mesh_xds_conn;

/*
 * Create a channel; the TLS ClientHello and the HTTP/2 preface are produced by the first flush.
 * @env  borrowed, must outlive the channel
 * Returns the channel, or NULL and *err = MESH_ERR_NOMEM, MESH_ERR_CONFIG (missing names, roots that do not parse),
 * MESH_ERR_TLS_LIBRARY, MESH_ERR_INTERNAL.
 */
struct mesh_xds_conn *mesh_xds_conn_new(const struct mesh_env *env, const struct mesh_xds_conn_cfg *cfg, int *err);

/* Free the channel. Live calls get on_close (UNAVAILABLE, connection_error). NULL is a no-op. Free the channel
 * before the xDS client attached to it. */
void mesh_xds_conn_free(struct mesh_xds_conn *c);

/*
 * Ciphertext from the network: run TLS and HTTP/2, deliver upcalls, then flush what is due into wire_out.
 * Returns MESH_OK or the sticky channel error (MESH_ERR_TLS_*, MESH_ERR_H2_*, MESH_ERR_NOMEM, MESH_ERR_BUF_FULL...);
 * even then wire_out may hold an alert or GOAWAY to send before closing the socket.
 */
int mesh_xds_conn_feed(struct mesh_xds_conn *c, const uint8_t *in, size_t len, struct mesh_buf *wire_out);

/* Produce whatever is due (handshake, frames) into wire_out; 64 KiB of headroom is kept in wire_out, so call again
 * after sending when mesh_xds_conn_want_write says so. Returns MESH_OK or the sticky error. */
int mesh_xds_conn_flush(struct mesh_xds_conn *c, struct mesh_buf *wire_out);

/* True when flush has something to produce. */
bool mesh_xds_conn_want_write(const struct mesh_xds_conn *c);

/* The socket is gone (err 0 for an orderly close, else -errno): every live call ends with connection_error. */
void mesh_xds_conn_on_closed(struct mesh_xds_conn *c, int err);

/* Timers: the earliest of handshake, PING and call deadlines (env clock, ns), or MESH_XDS_CONN_NO_DEADLINE. */
uint64_t mesh_xds_conn_next_deadline(const struct mesh_xds_conn *c);

/* Run timers, then flush into wire_out. Returns MESH_OK, or MESH_ERR_HANDSHAKE_TIMEOUT / MESH_ERR_H2_PING_TIMEOUT
 * (the channel failed) or another sticky error. */
int mesh_xds_conn_on_deadline(struct mesh_xds_conn *c, uint64_t now_ns, struct mesh_buf *wire_out);

/*
 * Open a call.
 * @path        e.g. MESH_XDS_ADS_PATH or MESH_CA_PATH
 * @token       the bearer token (NULL or "": no authorization header)
 * @timeout_ns  0 for none; otherwise grpc-timeout is sent and the call is cancelled with DEADLINE_EXCEEDED then
 * Returns MESH_OK and *call (the HTTP/2 stream id), or MESH_ERR_STATE (channel failed or GOAWAY received),
 * MESH_ERR_NOMEM, MESH_ERR_H2_PROTOCOL (stream ids exhausted).
 */
int mesh_xds_conn_call_open(struct mesh_xds_conn *c, const char *path, const char *token, uint64_t timeout_ns,
                            const struct mesh_xds_call_cb *cb, void *u, int32_t *call);

/* Queue one request message (framed here). Returns MESH_OK, MESH_ERR_STATE (unknown call or half-closed),
 * MESH_ERR_BUF_FULL (message above max_message_bytes), MESH_ERR_NOMEM. */
int mesh_xds_conn_call_send(struct mesh_xds_conn *c, int32_t call, const uint8_t *msg, size_t len);

/* Half-close our side after the queued messages (END_STREAM). Returns MESH_OK or MESH_ERR_STATE. */
int mesh_xds_conn_call_close_send(struct mesh_xds_conn *c, int32_t call);

/* Cancel with RST_STREAM(CANCEL); on_close(CANCELLED) is delivered now. Returns MESH_OK or MESH_ERR_STATE. */
int mesh_xds_conn_call_cancel(struct mesh_xds_conn *c, int32_t call);

/*
 * Unary call: open, send msg, half-close. The response arrives through cb->on_message, the status through on_close.
 * Returns as mesh_xds_conn_call_open.
 */
int mesh_xds_conn_unary(struct mesh_xds_conn *c, const char *path, const char *token, const uint8_t *msg, size_t len,
                        uint64_t timeout_ns, const struct mesh_xds_call_cb *cb, void *u, int32_t *call);

/*
 * Open the Delta ADS stream and attach an xDS client to it: mesh_xds_client_stream_start now, its requests are sent
 * as they are queued, every response is passed to mesh_xds_client_on_response (an undecodable one cancels the
 * stream with INTERNAL), and the stream's end is reported with mesh_xds_client_stream_end. One ADS stream per
 * channel at a time; xc must outlive the channel (or the stream).
 * Returns MESH_OK, MESH_ERR_STATE (an ADS stream is already open, or the channel cannot open calls), MESH_ERR_NOMEM.
 */
int mesh_xds_conn_ads_open(struct mesh_xds_conn *c, struct mesh_xds_client *xc, const char *token);

/* True once TLS is up and ALPN h2 was agreed. */
bool mesh_xds_conn_is_established(const struct mesh_xds_conn *c);
/* True when the channel failed or both sides are done; the backend then closes the socket after sending wire_out. */
bool mesh_xds_conn_is_done(const struct mesh_xds_conn *c);
/* True when the server sent GOAWAY: open new calls on a new channel. */
bool mesh_xds_conn_goaway_received(const struct mesh_xds_conn *c);
/* Sticky error, MESH_OK if none. */
int mesh_xds_conn_error(const struct mesh_xds_conn *c);
/* Number of live calls. */
size_t mesh_xds_conn_call_count(const struct mesh_xds_conn *c);
const struct mesh_xds_conn_stats *mesh_xds_conn_stats(const struct mesh_xds_conn *c);

#endif /* MESH_XDS_CONN_H */
