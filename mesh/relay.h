/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/relay.h - two-way byte relay between two mesh_conns, with backpressure, half-close and abort propagation.
 *
 * Invariants:
 *  - The relay buffers nothing: bytes offered by one side's on_data are written to the other side at once, and only
 *    what the other side's write() accepted is reported consumed. The rest stays with the backend (conn.h keeps
 *    unconsumed bytes), so the memory held per relay is bounded by the backends' own buffers.
 *  - Backpressure: when a write to side X is short, reading from the other side is disabled until X's on_writable.
 *  - Half-close: the FIN of one side becomes shutdown_wr() on the other, after every byte before it was written
 *    there. Each direction ends independently.
 *  - Abort: on_closed(err < 0) of one side, or a failed write, aborts the other side. mesh_relay_abort aborts both.
 *  - A side that closes cleanly while the other side is still open (an HTTP/2 peer may end a stream with
 *    END_STREAM then RST_STREAM(NO_ERROR)) leaves the other side open: its FIN is forwarded and the bytes already
 *    written there still drain. Only bytes the other side sends afterwards, with nowhere to go, abort it (as TCP
 *    answers data on a closed socket with RST).
 *  - Exactly one completion callback (done), when both sides are finished: err 0 when both directions ended cleanly,
 *    otherwise the first error (-errno or enum mesh_err). After done, the relay holds no connection and may be freed
 *    (its storage belongs to the caller; it never allocates).
 *  - The relay only reacts to upcalls delivered to it (mesh_relay_on_* or mesh_relay_conn_cb) and to
 *    mesh_relay_abort; it calls done from inside one of those.
 */
#ifndef MESH_RELAY_H
#define MESH_RELAY_H

#include <stdbool.h>
#include <stdint.h>

#include "mesh/conn.h"

enum mesh_relay_side_id {
    MESH_RELAY_A = 0,
    MESH_RELAY_B = 1,
};

struct mesh_relay;

/*
 * Completion. err: 0 or the first error; bytes_ab / bytes_ba: bytes moved A -> B and B -> A. Called once; the relay
 * may be reused or its storage released from inside the callback only if the caller does not touch it afterwards
 * (the relay does not touch itself after calling done).
 */
typedef void (*mesh_relay_done_fn)(void *u, struct mesh_relay *r, int err);

struct mesh_relay_side {
    struct mesh_relay *r;
    const struct mesh_conn_ops *ops;
    struct mesh_conn *c; /* NULL once closed or aborted */
    bool read_on;        /* our read_enable state for c */
    bool held;           /* c's last on_data was not fully consumed: bytes wait in the backend */
    bool fin_rcvd;       /* c's peer sent FIN */
    bool fin_fwd;        /* that FIN was forwarded as shutdown_wr on the other side */
    bool blocked;        /* a write to c was short; waiting for on_writable */
    uint64_t bytes;      /* bytes read from c and written to the other side */
};

struct mesh_relay {
    struct mesh_relay_side side[2];
    mesh_relay_done_fn done;
    void *u;
    int err;
    bool finished;
    bool in_done;
};

/* Upcalls to install on both connections, with u = &r->side[MESH_RELAY_A] / &r->side[MESH_RELAY_B]. */
extern const struct mesh_conn_cb mesh_relay_conn_cb;

/*
 * Start relaying between two established connections. The relay enables reading on both. Storage r belongs to the
 * caller and must stay in place until done ran.
 * @ops_a/@a, @ops_b/@b  the connections and their backends' ops (the relay becomes their user: upcalls for them
 *                       must reach mesh_relay_on_* or mesh_relay_conn_cb from now on)
 */
void mesh_relay_init(struct mesh_relay *r, const struct mesh_conn_ops *ops_a, struct mesh_conn *a,
                     const struct mesh_conn_ops *ops_b, struct mesh_conn *b, mesh_relay_done_fn done, void *u);

/* Upcall entry points, for callers that route their connections' upcalls themselves. */
size_t mesh_relay_on_data(struct mesh_relay *r, enum mesh_relay_side_id s, const uint8_t *p, size_t n);
void mesh_relay_on_writable(struct mesh_relay *r, enum mesh_relay_side_id s);
void mesh_relay_on_peer_fin(struct mesh_relay *r, enum mesh_relay_side_id s);
void mesh_relay_on_closed(struct mesh_relay *r, enum mesh_relay_side_id s, int err);

/* Abort both connections (RST) and complete with err (nonzero). No-op once finished. */
void mesh_relay_abort(struct mesh_relay *r, int err);

/* Bytes moved so far from side s to the other side. */
static inline uint64_t mesh_relay_bytes(const struct mesh_relay *r, enum mesh_relay_side_id s)
{
    return r->side[s].bytes;
}

#endif /* MESH_RELAY_H */
