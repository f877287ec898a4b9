/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/conn.h - THE narrow connection interface between the mesh engines and a network backend.
 *
 * Three backends implement it: dpdk/conn_dpdk.c (userspace TCP), appliance/conn_kernel.c (epoll sockets) and
 * tests/fakes/fake_conn.c (in-memory pairs). mesh/ code sees only what is declared here.
 *
 * Invariants:
 *  - Event-driven and non-blocking: no call here ever waits. There are no blocking helpers.
 *  - A struct mesh_conn is opaque and owned by its backend. The mesh side holds it from the moment dial() succeeds (or
 *    the backend hands over an accepted connection) until on_closed() is delivered, or until it calls abort().
 *  - Upcalls (struct mesh_conn_cb) run on the lcore that owns the connection, never concurrently, and never from inside
 *    a write()/shutdown_wr()/read_enable() call made by the mesh side (the backend defers them to its loop), except
 *    that abort() delivers nothing at all: after abort() the connection pointer is dead.
 *  - on_closed() is the last upcall; after it returns, the connection pointer is dead.
 */
#ifndef MESH_CONN_H
#define MESH_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct mesh_conn; /* opaque; owned by the backend */

/* A transport endpoint, independent of any socket API. Addresses and port are in network byte order. */
struct mesh_addr {
    uint8_t family; /* MESH_ADDR_V4 or MESH_ADDR_V6 */
    uint16_t port;
    union {
        uint8_t v4[4];
        uint8_t v6[16];
    } ip;
};

#define MESH_ADDR_V4 4
#define MESH_ADDR_V6 6

/* Upcalls from the backend, all on the owning lcore; u is the pointer given at dial/accept time. */
struct mesh_conn_cb {
    /* Bytes arrived. p is borrowed for the call only. Return how many were consumed; the backend keeps the rest and
     * offers them again (prefixed to new data) on the next on_data, or after read_enable(true). */
    size_t (*on_data)(void *u, const uint8_t *p, size_t n);
    /* A previous write() was partial or refused; there is room again. */
    void (*on_writable)(void *u);
    /* The peer sent FIN: no more on_data. Writing is still allowed. */
    void (*on_peer_fin)(void *u);
    /* Last upcall. err is 0 (orderly close of both directions) or -errno (-ECONNRESET, -ETIMEDOUT, -ECONNREFUSED...).
     */
    void (*on_closed)(void *u, int err);
};

/* Downcalls into the backend. */
struct mesh_conn_ops {
    /* Queue bytes for sending. The data is copied before return. Returns the number of bytes accepted (may be
     * partial, 0 included; on_writable follows when room frees up), or -errno (-EPIPE after shutdown_wr,
     * -ENOTCONN before the connection is established). */
    ssize_t (*write)(struct mesh_conn *c, const struct iovec *v, int n);
    /* Backpressure: false stops on_data upcalls (the backend stops reading / shrinks its window), true resumes. */
    void (*read_enable)(struct mesh_conn *c, bool on);
    /* Send FIN after the queued bytes. Returns 0 or -errno. */
    int (*shutdown_wr)(struct mesh_conn *c);
    /* Reset (RST) and free now. No upcall follows; c is dead on return. */
    void (*abort)(struct mesh_conn *c);
    /* Open a connection to dst. On success (0) *out is set and owned by the caller as described above; the
     * connection is usable when on_writable is first called, or fails through on_closed(-ECONNREFUSED/-ETIMEDOUT).
     * Returns -errno on immediate failure (-ENOMEM, -EADDRNOTAVAIL, -ENETUNREACH); then no upcall follows.
     * @backend  the backend instance (per lcore) that owns the new connection
     * @src      the source address to use, port 0 for any (transparent: may be a non-local address, such as the
     *           original client's IP on the inbound path); NULL lets the backend choose */
    int (*dial)(void *backend, const struct mesh_addr *src, const struct mesh_addr *dst, const struct mesh_conn_cb *cb,
                void *u, struct mesh_conn **out);
};

#endif /* MESH_CONN_H */
