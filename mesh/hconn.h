/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/hconn.h - one HBONE connection over a mesh_conn: TCP bytes <-> TLS (mesh/tls.h) <-> HTTP/2 (mesh/hbone.h),
 * with each CONNECT stream presented as a virtual mesh_conn (mesh_hconn_stream_ops), so the relay moves bytes between
 * a TCP connection and a tunnel stream without knowing which is which.
 *
 * Invariants:
 *  - The hconn owns its TLS session, its HTTP/2 session and (until it dies) its mesh_conn. Its TLS ctx is borrowed
 *    from the owner, who learns through on_free when it is no longer used.
 *  - Stream downcalls (write, read_enable, shutdown_wr, abort through mesh_hconn_stream_ops) never deliver upcalls:
 *    they post a flush / resume to the sched, which runs at the end of the current entry point (mesh/defer.h).
 *  - A stream's upcalls follow conn.h: client streams get on_writable once the 200 arrived (connected) or
 *    on_closed(-ECONNREFUSED) for any other status (mesh_hconn_stream_status tells which); on_closed is the last
 *    upcall, after which the stream handle is dead. abort() and detach() stop upcalls at once.
 *  - Ciphertext not yet accepted by the TCP connection waits in wire_out (bounded: HTTP/2 frames are pulled only
 *    while wire_out is below MESH_HCONN_WIRE_LOW_BYTES), so a slow peer pushes back on the streams' send buffers.
 *  - A stream abort always reaches the peer: when its RST_STREAM can't be queued for lack of memory, the whole
 *    connection dies at the next flush (MESH_ERR_NOMEM) rather than leave the peer's side of the stream open.
 *  - When the connection dies (TLS or HTTP/2 error, reset, close), every live stream gets on_closed, then the owner
 *    gets on_dead once; the hconn is freed by mesh_hconn_free (from the owner, not inside its own upcalls).
 */
#ifndef MESH_HCONN_H
#define MESH_HCONN_H

#include <stdbool.h>
#include <stdint.h>

#include "mesh/buf.h"
#include "mesh/conn.h"
#include "mesh/env.h"
#include "mesh/hbone.h"
#include "mesh/defer.h"
#include "mesh/spiffe.h"
#include "mesh/tls.h"

#define MESH_HCONN_WIRE_LOW_BYTES (64u * 1024)
#define MESH_HCONN_PLAIN_MAX_BYTES (2u * 1024 * 1024)
#define MESH_HCONN_WIRE_MAX_BYTES (4u * 1024 * 1024)

struct mesh_hconn;

struct mesh_hconn_owner_cb {
    /* Client: TLS is established (peer identity verified); streams may be opened. */
    void (*on_ready)(void *u, struct mesh_hconn *h);
    /* Server: a CONNECT request; answer with mesh_hconn_respond, attach with mesh_hconn_accept_stream. req borrowed. */
    void (*on_request)(void *u, struct mesh_hconn *h, int32_t sid, const struct mesh_hbone_request *req);
    /* The connection died (err: 0 orderly, enum mesh_err or -errno). Called once, after the streams' on_closed. */
    void (*on_dead)(void *u, struct mesh_hconn *h, int err);
    /* The peer sent GOAWAY: open no more streams. May be NULL. */
    void (*on_goaway)(void *u, struct mesh_hconn *h);
};

/*
 * Create an hconn. Attach its connection with mesh_hconn_attach (dial with mesh_hconn_conn_cb and u = the hconn).
 * @ctx         TLS ctx of the right role; borrowed until on_free... (the owner frees it after mesh_hconn_free)
 * @expected    client: the identities the server may prove; NULL/0 for a server
 * @connect_deadline_ns  client: when the TCP connect must have finished (MESH_TLS_NO_DEADLINE: none)
 * Returns the hconn or NULL with *err (enum mesh_err).
 */
struct mesh_hconn *mesh_hconn_new(const struct mesh_env *env, struct mesh_sched *sched, const struct mesh_conn_ops *ops,
                                  enum mesh_hbone_role role, struct mesh_tls_ctx *ctx,
                                  const struct mesh_spiffe_id *expected, size_t n_expected,
                                  uint64_t connect_deadline_ns, const struct mesh_hconn_owner_cb *ocb, void *ou,
                                  int *err);

/* Give the hconn its connection. accepted: true for a server (already connected), false after dial. */
void mesh_hconn_attach(struct mesh_hconn *h, struct mesh_conn *c, bool accepted);

/* Upcalls for the hconn's connection; u = the hconn. */
extern const struct mesh_conn_cb mesh_hconn_conn_cb;

/* Tear down now (abort the connection, close every stream with err) unless already dead; on_dead follows. */
void mesh_hconn_close(struct mesh_hconn *h, int err);
/* Orderly shutdown: GOAWAY, close_notify, FIN. on_dead(0) follows when the peer closed too. */
void mesh_hconn_shutdown(struct mesh_hconn *h);
/* Free (aborts the connection if still open; no owner upcall). */
void mesh_hconn_free(struct mesh_hconn *h);

bool mesh_hconn_is_ready(const struct mesh_hconn *h);
bool mesh_hconn_is_dead(const struct mesh_hconn *h);
bool mesh_hconn_can_open(const struct mesh_hconn *h);
uint32_t mesh_hconn_peer_max_streams(const struct mesh_hconn *h);
uint32_t mesh_hconn_stream_count(const struct mesh_hconn *h);
/* The verified peer identity, or NULL. */
const struct mesh_spiffe_id *mesh_hconn_peer_identity(const struct mesh_hconn *h);
uint64_t mesh_hconn_next_deadline(const struct mesh_hconn *h);
void mesh_hconn_on_deadline(struct mesh_hconn *h, uint64_t now_ns);

/* ---- streams (virtual mesh_conns) ---- */

extern const struct mesh_conn_ops mesh_hconn_stream_ops;

/* Client: send a CONNECT; *out is the stream. Returns 0 or -errno (-ENOMEM, -EAGAIN: no stream can be opened). */
int mesh_hconn_open_stream(struct mesh_hconn *h, const struct mesh_hbone_request *req, const struct mesh_conn_cb *cb,
                           void *u, struct mesh_conn **out);
/* Server: attach upcalls to a requested stream. Returns 0 or -errno. */
int mesh_hconn_accept_stream(struct mesh_hconn *h, int32_t sid, const struct mesh_conn_cb *cb, void *u,
                             struct mesh_conn **out);
/* Server: answer a request (200 opens the tunnel). Returns 0 or -errno. */
int mesh_hconn_respond(struct mesh_hconn *h, int32_t sid, int status);
/* Stop upcalls for a stream without resetting it (after an error response). The handle is dead on return. */
void mesh_hconn_stream_detach(struct mesh_conn *s);
/* Client: the response status received (0 before one arrived). The stream's mesh error (MESH_OK if none). */
int mesh_hconn_stream_status(const struct mesh_conn *s);
int mesh_hconn_stream_error(const struct mesh_conn *s);

#endif /* MESH_HCONN_H */
