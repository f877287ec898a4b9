/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/pool.h - the outbound HBONE connection pool of one lcore, keyed as ztunnel keys it (facts §2.6).
 *
 * Invariants:
 *  - Key = (source identity, expected destination identities in order, destination socket <pod IP>:15008, source IP).
 *    Connections are shared only between requests with equal keys.
 *  - Single flight: at most one connection of a key is being set up (TCP + TLS) at a time; every request for that key
 *    made meanwhile waits for it, and all of them learn its outcome (ready, or the same error).
 *  - A connection carries at most min(max_streams, peer MAX_CONCURRENT_STREAMS) streams. A checkout that brings it to
 *    that count retires it from the pool (it lives on until its streams end); the next request opens a new one.
 *    A connection that saw GOAWAY or an error is never handed out again.
 *  - A connection drained by mesh_pool_drain_ctx (its certificate was replaced) is never handed out again either; it
 *    keeps its live streams (and serves the waiters already queued on its setup), then sends GOAWAY and closes once
 *    its last stream ended.
 *  - A connection with no streams since env-now T is shut down at T + idle_ns (env clock).
 *  - A connection is dialled from the key's source IP (port chosen by the backend), as in-pod ztunnel does from inside
 *    the source pod: the destination node sees the client pod's IP as the tunnel's peer address (facts §2.7).
 *  - Waiter storage belongs to the caller; the pool links it until its callback ran or mesh_pool_cancel.
 *  - The pool never calls a waiter from inside mesh_pool_checkout: callbacks run from connection upcalls and timers.
 */
#ifndef MESH_POOL_H
#define MESH_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/conn.h"
#include "mesh/env.h"
#include "mesh/hconn.h"
#include "mesh/defer.h"
#include "mesh/spiffe.h"
#include "mesh/tls.h"

#define MESH_POOL_DEFAULT_MAX_STREAMS 100
#define MESH_POOL_DEFAULT_IDLE_NS (300ull * 1000000000ull)
#define MESH_POOL_MAX_EXPECTED MESH_TLS_MAX_EXPECTED_IDS
#define MESH_POOL_NO_DEADLINE UINT64_MAX

struct mesh_pool_key {
    struct mesh_spiffe_id src_id;
    struct mesh_spiffe_id expected[MESH_POOL_MAX_EXPECTED];
    size_t n_expected;
    struct mesh_addr dst;    /* <pod IP>:15008 */
    struct mesh_addr src_ip; /* port ignored */
};

struct mesh_pool;
struct mesh_pool_conn;
struct mesh_pool_waiter;

/* The outcome of a checkout: pc != NULL (a stream slot is reserved on it; release it with mesh_pool_release), or
 * pc == NULL and err (enum mesh_err or -errno) for every waiter of the failed setup. */
typedef void (*mesh_pool_ready_fn)(struct mesh_pool_waiter *w, struct mesh_pool_conn *pc, int err);

struct mesh_pool_waiter {
    struct mesh_pool_waiter *next;
    mesh_pool_ready_fn fn;
    struct mesh_pool_conn *pc; /* set while linked to a connection being set up */
};

/*
 * The TLS client ctx for a source identity (borrowed; must stay alive until put_ctx), or NULL (then the checkout
 * fails with MESH_ERR_CONFIG). put_ctx is called once per successful get_ctx when the connection using it is freed.
 */
typedef struct mesh_tls_ctx *(*mesh_pool_get_ctx_fn)(void *u, const struct mesh_spiffe_id *src_id);
typedef void (*mesh_pool_put_ctx_fn)(void *u, struct mesh_tls_ctx *ctx);

struct mesh_pool_opts {
    uint32_t max_streams;        /* 0: MESH_POOL_DEFAULT_MAX_STREAMS */
    uint64_t idle_ns;            /* 0: MESH_POOL_DEFAULT_IDLE_NS */
    uint64_t connect_timeout_ns; /* 0: 10 s */
    mesh_pool_get_ctx_fn get_ctx;
    mesh_pool_put_ctx_fn put_ctx;
    void *ctx_u;
};

struct mesh_pool_stats {
    uint64_t conns;      /* live connections */
    uint64_t handshakes; /* connections opened */
    uint64_t reused;     /* checkouts served by an existing connection */
    uint64_t failures;   /* setups that failed */
    uint64_t idle_closed;
    uint64_t drained;    /* connections set to drain by mesh_pool_drain_ctx */
};

/*
 * Create a pool. @env, @sched, @ops borrowed (must outlive the pool); @backend passed to ops->dial; @opts copied.
 * Returns NULL on allocation failure.
 */
struct mesh_pool *mesh_pool_new(const struct mesh_env *env, struct mesh_sched *sched, const struct mesh_conn_ops *ops,
                                void *backend, const struct mesh_pool_opts *opts);
/* Close every connection (their streams get on_closed; waiters get MESH_ERR_DRAINED) and free. NULL no-op. */
void mesh_pool_free(struct mesh_pool *pool);

/*
 * Ask for a connection for key.
 * Returns 1 and *out (a stream slot reserved) when a ready connection has room; 0 when w was queued (w->fn follows);
 * or a negative error (-ENOMEM, MESH_ERR_CONFIG when get_ctx gave no ctx, or the dial's -errno).
 */
int mesh_pool_checkout(struct mesh_pool *pool, const struct mesh_pool_key *key, struct mesh_pool_waiter *w,
                       struct mesh_pool_conn **out);
/* Forget a queued waiter (its callback will not run). */
void mesh_pool_cancel(struct mesh_pool *pool, struct mesh_pool_waiter *w);
/* Return a stream slot reserved by a checkout (once per successful checkout). */
void mesh_pool_release(struct mesh_pool *pool, struct mesh_pool_conn *pc);

/*
 * Drain every live connection set up with ctx (the owner replaced the certificate behind it): no new checkouts; an idle
 * ready one is shut down now (GOAWAY, close_notify, FIN), a busy one after its last stream is released; one still in
 * setup serves its queued waiters first. New checkouts for the same key open a new connection (a new get_ctx).
 * Never calls a waiter. Returns the number of connections newly set to drain.
 */
size_t mesh_pool_drain_ctx(struct mesh_pool *pool, const struct mesh_tls_ctx *ctx);

/* The connection behind a checkout (valid until its slot is released). */
struct mesh_hconn *mesh_pool_conn_hconn(struct mesh_pool_conn *pc);
/* The peer identity that the server proved. */
const struct mesh_spiffe_id *mesh_pool_conn_peer(const struct mesh_pool_conn *pc);

uint64_t mesh_pool_next_deadline(const struct mesh_pool *pool);
void mesh_pool_on_deadline(struct mesh_pool *pool, uint64_t now_ns);
const struct mesh_pool_stats *mesh_pool_stats(const struct mesh_pool *pool);

/* True when two keys are equal (exposed for tests). */
bool mesh_pool_key_eq(const struct mesh_pool_key *a, const struct mesh_pool_key *b);

#endif /* MESH_POOL_H */
