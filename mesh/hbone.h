/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/hbone.h - HBONE: HTTP/2 CONNECT tunnels on nghttp2, as an I/O-free engine (client and server roles).
 *
 * Bytes in/out are the plaintext of the TLS session (mesh/tls.h): feed what TLS decrypted, flush into the buffer
 * that TLS encrypts.
 *
 * Invariants:
 *  - nghttp2 is driven only through nghttp2_session_mem_recv / mem_send; its memory comes from the env allocator.
 *  - Settings follow the HBONE contract: stream window 4 MiB, connection window 16 MiB, max frame 1 MiB, max
 *    header list 16384 (client) / 65536 (server), server max concurrent streams 200, client ENABLE_PUSH 0.
 *  - Flow control is honest: automatic WINDOW_UPDATE is off and bytes are returned to the peer's window
 *    (nghttp2_session_consume) only once the on_data upcall accepted them. Unaccepted bytes stay in the stream (the
 *    peer's window bounds them) until mesh_hbone_stream_resume_read.
 *  - Sending is bounded: a stream's send buffer has a cap (4 MiB client, 400 KiB server); a stream with nothing to send
 *    defers its data provider (NGHTTP2_ERR_DEFERRED) and is resumed by the next write or shutdown.
 *  - A client stream sends no DATA before its 200 arrives. Any other final status fails the stream.
 *  - A server answers 400 itself for a request that is not CONNECT or whose :authority doesn't parse, and sends
 *    error responses as HEADERS with END_STREAM; a client resets its half of a stream answered with non-200.
 *  - Keepalive: a PING every 10 s from creation; no ACK within 20 s fails the connection (GOAWAY NO_ERROR).
 *  - Every upcall runs from inside mesh_hbone_feed / flush / on_deadline / stream_resume_read; on_stream_close is
 *    the last upcall of a stream and is always delivered (also when the connection fails or is freed).
 *  - Errors are mapped explicitly from nghttp2 to enum mesh_err; nghttp2 codes never leak out.
 */
#ifndef MESH_HBONE_H
#define MESH_HBONE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/buf.h"
#include "mesh/conn.h"
#include "mesh/env.h"
#include "mesh/err.h"

#define MESH_HBONE_STREAM_WINDOW_BYTES (4u * 1024 * 1024)
#define MESH_HBONE_CONN_WINDOW_BYTES (16u * 1024 * 1024)
#define MESH_HBONE_MAX_FRAME_BYTES (1u * 1024 * 1024)
#define MESH_HBONE_CLIENT_MAX_HEADER_LIST_BYTES 16384
#define MESH_HBONE_SERVER_MAX_HEADER_LIST_BYTES 65536
#define MESH_HBONE_SERVER_MAX_STREAMS 200
#define MESH_HBONE_CLIENT_SEND_BUF_BYTES (4u * 1024 * 1024)
#define MESH_HBONE_SERVER_SEND_BUF_BYTES (400u * 1024)
#define MESH_HBONE_PING_INTERVAL_NS (10ull * 1000000000ull)
#define MESH_HBONE_PING_TIMEOUT_NS (20ull * 1000000000ull)
#define MESH_HBONE_DRAIN_DEADLINE_NS (5ull * 1000000000ull)
#define MESH_HBONE_NO_DEADLINE UINT64_MAX
#define MESH_HBONE_AUTHORITY_MAX_BYTES 262
#define MESH_HBONE_HEADER_MAX_BYTES 1024
#define MESH_HBONE_TRACEPARENT_BYTES 55

enum mesh_hbone_role {
    MESH_HBONE_CLIENT,
    MESH_HBONE_SERVER,
};

/* The CONNECT request. Strings are NUL-terminated; empty means absent (baggage is always sent by a client). */
struct mesh_hbone_request {
    char authority[MESH_HBONE_AUTHORITY_MAX_BYTES];
    char baggage[MESH_HBONE_HEADER_MAX_BYTES];
    char forwarded[MESH_HBONE_HEADER_MAX_BYTES];
    char traceparent[MESH_HBONE_TRACEPARENT_BYTES + 1];
    char x_forwarded_network[MESH_HBONE_HEADER_MAX_BYTES];
};

/* A parsed :authority. */
struct mesh_hbone_authority {
    bool is_ip;                                /* addr is valid; otherwise host is a DNS name */
    struct mesh_addr addr;                     /* family + ip + port (network order) when is_ip */
    char host[MESH_HBONE_AUTHORITY_MAX_BYTES]; /* the host part without brackets */
    uint16_t port;                             /* host order */
};

/* Upcalls. u is the session user pointer, su the stream user pointer (see mesh_hbone_stream_set_user). */
struct mesh_hbone_cb {
    /* Server: a valid CONNECT arrived. Answer now or later with mesh_hbone_respond. req is borrowed for the call. */
    void (*on_request)(void *u, int32_t sid, const struct mesh_hbone_request *req);
    /* Client: the final response status. 200 opens the tunnel; anything else is followed by on_stream_close. */
    void (*on_response)(void *u, int32_t sid, void *su, int status);
    /* Tunnel bytes (borrowed). Return how many were accepted; the rest is offered again by
     * mesh_hbone_stream_resume_read. Only accepted bytes reopen the peer's window. */
    size_t (*on_data)(void *u, int32_t sid, void *su, const uint8_t *p, size_t n);
    /* The peer ended its direction (END_STREAM) and every byte before it was accepted. */
    void (*on_peer_fin)(void *u, int32_t sid, void *su);
    /* The send buffer of a stream that once refused bytes has room again. */
    void (*on_writable)(void *u, int32_t sid, void *su);
    /* Last upcall of a stream. err: MESH_OK (both directions ended), MESH_ERR_HBONE_STATUS (non-200),
     * MESH_ERR_H2_STREAM_RESET, or the connection's fatal error. */
    void (*on_stream_close)(void *u, int32_t sid, void *su, int err);
    /* The peer sent GOAWAY: no new streams on this connection. */
    void (*on_goaway)(void *u);
};

struct mesh_hbone;

/*
 * Create a session. The connection preface and SETTINGS are queued (flush to send them).
 * @env  borrowed, must outlive the session; @cb copied; @u passed to every upcall
 * Returns a session or NULL and *err = MESH_ERR_NOMEM or MESH_ERR_INTERNAL.
 */
struct mesh_hbone *mesh_hbone_new(enum mesh_hbone_role role, const struct mesh_env *env, const struct mesh_hbone_cb *cb,
                                  void *u, int *err);

/* Free the session; on_stream_close(MESH_ERR_DRAINED, or the session error) is delivered for every live stream. */
void mesh_hbone_free(struct mesh_hbone *h);

/*
 * Feed plaintext from the peer, then flush what is due into out.
 * Returns MESH_OK or a fatal mesh_err (MESH_ERR_H2_PROTOCOL, MESH_ERR_NOMEM, ...), sticky. Even on error, a GOAWAY
 * may have been appended to out: send it.
 */
int mesh_hbone_feed(struct mesh_hbone *h, const uint8_t *in, size_t len, struct mesh_buf *out);

/* Serialize queued frames into out while it has room (64 KiB headroom is kept). Returns MESH_OK or the fatal error. */
int mesh_hbone_flush(struct mesh_hbone *h, struct mesh_buf *out);

/*
 * Client: open a CONNECT stream. req->authority must be set; baggage is sent even if empty; forwarded, traceparent
 * and x-forwarded-network only when set.
 * @su  stream user pointer for the upcalls
 * Returns MESH_OK and *sid, or MESH_ERR_STATE (server role, GOAWAY seen/sent, failed), MESH_ERR_H2_PROTOCOL (no
 * stream id left), MESH_ERR_NOMEM.
 */
int mesh_hbone_connect(struct mesh_hbone *h, const struct mesh_hbone_request *req, void *su, int32_t *sid);

/*
 * Server: answer a request. 200 opens the tunnel; other statuses end the stream (HEADERS + END_STREAM).
 * @baggage  optional response baggage header (NULL: none)
 * Returns MESH_OK, MESH_ERR_STATE (no such stream, already answered), MESH_ERR_NOMEM.
 */
int mesh_hbone_respond(struct mesh_hbone *h, int32_t sid, int status, const char *baggage);

/* Attach the stream user pointer (server streams start with NULL). Returns MESH_OK or MESH_ERR_STATE. */
int mesh_hbone_stream_set_user(struct mesh_hbone *h, int32_t sid, void *su);

/*
 * Queue tunnel bytes. Copies up to the stream's send-buffer room; *accepted says how many. When fewer than len were
 * accepted, on_writable follows once room frees up.
 * Returns MESH_OK, MESH_ERR_STATE (unknown stream, after shutdown, not established on the server), MESH_ERR_NOMEM.
 */
int mesh_hbone_write(struct mesh_hbone *h, int32_t sid, const uint8_t *p, size_t len, size_t *accepted);

/* End our direction (END_STREAM after the queued bytes). Returns MESH_OK or MESH_ERR_STATE. */
int mesh_hbone_shutdown_wr(struct mesh_hbone *h, int32_t sid);

/* Abort a stream with RST_STREAM(CANCEL). on_stream_close(MESH_ERR_H2_STREAM_RESET) follows. */
int mesh_hbone_stream_reset(struct mesh_hbone *h, int32_t sid);

/* Offer the stream's parked bytes to on_data again (call when the consumer has room). Returns MESH_OK or
 * MESH_ERR_STATE. */
int mesh_hbone_stream_resume_read(struct mesh_hbone *h, int32_t sid);

/* Graceful drain: send GOAWAY(NO_ERROR), refuse new streams, keep the current ones until they end or the drain
 * deadline (now + MESH_HBONE_DRAIN_DEADLINE_NS) passes. */
int mesh_hbone_drain(struct mesh_hbone *h);

/* Timers. */
uint64_t mesh_hbone_next_deadline(const struct mesh_hbone *h);
/* Returns MESH_OK, MESH_ERR_H2_PING_TIMEOUT or MESH_ERR_DRAINED (then the session is failed). */
int mesh_hbone_on_deadline(struct mesh_hbone *h, uint64_t now_ns);

/* True when the session has nothing left to do (closed by both sides, drained, or failed) after a flush. */
bool mesh_hbone_is_done(const struct mesh_hbone *h);
/* Sticky fatal error, MESH_OK if none. */
int mesh_hbone_error(const struct mesh_hbone *h);
/* Can a client open another stream now (no GOAWAY, not failed, under the peer's MAX_CONCURRENT_STREAMS)? */
bool mesh_hbone_can_open(const struct mesh_hbone *h);
/* Peer's SETTINGS_MAX_CONCURRENT_STREAMS (as last received), and our live stream count. */
uint32_t mesh_hbone_peer_max_streams(const struct mesh_hbone *h);
uint32_t mesh_hbone_stream_count(const struct mesh_hbone *h);

/*
 * Parse an HBONE :authority: "a.b.c.d:port", "[v6]:port" or "hostname:port" (port 1..65535).
 * Returns 0 or -EINVAL.
 */
int mesh_hbone_parse_authority(const char *s, size_t len, struct mesh_hbone_authority *out);

/* Write a fresh W3C traceparent "00-<32 hex>-<16 hex>-00" from the env randomness into out (56 bytes incl. NUL).
 * Returns 0 or the -errno of the random source. */
int mesh_hbone_make_traceparent(const struct mesh_env *env, char out[MESH_HBONE_TRACEPARENT_BYTES + 1]);

#endif /* MESH_HBONE_H */
