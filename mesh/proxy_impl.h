/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/proxy_impl.h - internals shared by proxy.c, outbound.c and inbound.c. Not part of the API.
 *
 * Invariants:
 *  - A struct proxy_conn is one proxied user connection (one access-log record). It is linked in p->conns from
 *    accept until proxy_conn_teardown, which runs once, writes the telemetry, aborts what is still open, and posts the
 *    free to the sched (so no upcall frame still on the stack sees freed memory).
 *  - down is the client side (the captured connection, or the HBONE stream on the inbound path), up the server side
 *    (the dialled connection, or the HBONE stream on the outbound path). Before the relay starts, their upcalls are
 *    handled here; afterwards they are forwarded to the relay (A = down, B = up).
 *  - Re-check passes (mesh_proxy_update): p->gen counts updates; a connection whose recheck_gen equals p->gen has been
 *    checked against the current state (connections are born checked). p->recheck_next is the next connection of
 *    p->conns to visit, or NULL when no pass is pending; it always points at a linked connection, because
 *    proxy_conn_unlink moves it past the connection being unlinked. New connections are pushed at the head of
 *    p->conns, behind the cursor, so a pass ends after at most one walk of the list as it was when it (re)started.
 */
#ifndef MESH_PROXY_IMPL_H
#define MESH_PROXY_IMPL_H

#include "mesh/hconn.h"
#include "mesh/pool.h"
#include "mesh/proxy.h"
#include "mesh/relay.h"
#include "mesh/defer.h"

#define PROXY_MODULE "mesh.proxy"

struct proxy_ctx_entry {
    struct proxy_ctx_entry *next;
    struct mesh_spiffe_id id;
    const struct mesh_cert_bundle *bundle;
    struct mesh_tls_ctx *client;
    struct mesh_tls_ctx *server;
    uint32_t users;
    bool stale; /* replaced by a newer bundle: freed when unused */
};

struct proxy_side {
    struct proxy_conn *pc;
    int which; /* 0 down, 1 up */
};

enum proxy_conn_state {
    PROXY_CONN_RESOLVING,
    PROXY_CONN_CONNECTING, /* dialing the upstream, or waiting on the pool / the CONNECT answer */
    PROXY_CONN_RELAYING,
    PROXY_CONN_DONE,
};

struct proxy_inbound;

struct proxy_conn {
    struct proxy_conn *next;
    struct mesh_proxy *p;
    enum mesh_proxy_direction dir;
    enum proxy_conn_state state;
    const struct mesh_workloads *ws; /* referenced */
    struct proxy_side side[2];
    struct mesh_conn *down;
    const struct mesh_conn_ops *down_ops;
    struct mesh_conn *up;
    const struct mesh_conn_ops *up_ops;
    struct mesh_relay relay;
    struct mesh_addr src;        /* client */
    struct mesh_addr dst;        /* original destination / local target */
    struct mesh_addr target;     /* what is dialled or named in :authority */
    struct mesh_addr hbone_addr; /* <pod IP>:15008 */
    bool has_hbone;
    const struct mesh_workload *src_w;
    const struct mesh_workload *dst_w;
    const struct mesh_service *svc;
    struct mesh_spiffe_id src_id;
    bool has_src_id;
    struct mesh_spiffe_id dst_id;
    bool has_dst_id;
    /* outbound HBONE */
    struct mesh_pool_waiter waiter;
    bool waiting;
    struct mesh_pool_conn *poolc;
    /* inbound HBONE */
    struct proxy_inbound *in;
    int32_t sid;
    uint64_t start_ns;
    uint64_t deadline_ns;
    int err;
    int status;
    bool opened_recorded;
    bool fin_early[2]; /* a FIN that arrived before the relay started */
    uint64_t recheck_gen; /* the p->gen this connection was last checked against */
    bool lookup_asked;    /* outbound: the on-demand lookup hook was called for dst */
    bool lookup_waiting;  /* outbound: parked in RESOLVING (counted in p->n_parked) until answered or lookup_until_ns */
    uint64_t lookup_until_ns;
    struct mesh_sched_item free_item;
};

/* One accepted 15008 connection: the server hconn and what the listener told us. */
struct proxy_inbound {
    struct proxy_inbound *next;
    struct mesh_proxy *p;
    struct mesh_hconn *h;
    struct proxy_ctx_entry *ctx;
    const struct mesh_workloads *ws; /* referenced */
    const struct mesh_workload *local;
    struct mesh_addr src;
    struct mesh_addr dst;
    bool dead;
    struct mesh_sched_item free_item;
};

struct mesh_proxy {
    const struct mesh_env *env;
    uint32_t n_parked; /* outbound connections waiting for an on-demand lookup */
    const struct mesh_conn_ops *ops;
    void *backend;
    struct mesh_proxy_config cfg;
    struct mesh_tls_ctx_opts tls_opts;
    bool has_tls_opts;
    char node_name[256];
    const struct mesh_workloads *ws;
    struct mesh_sched sched;
    struct mesh_pool *pool;
    struct proxy_ctx_entry *ctxs;
    struct proxy_conn *conns;
    struct proxy_inbound *inbound;
    struct mesh_proxy_stats stats;
    uint64_t gen;                     /* mesh_proxy_update count */
    struct proxy_conn *recheck_next;  /* re-check cursor into conns; NULL: no pass pending */
    uint32_t recheck_slice;           /* connections re-checked per call */
    uint64_t pass_checked;            /* re-checked / closed in the current pass (for its summary log line) */
    uint64_t pass_closed;
    bool freeing;
};

/* proxy.c */
struct proxy_conn *proxy_conn_new(struct mesh_proxy *p, enum mesh_proxy_direction dir, struct mesh_conn *down,
                                  const struct mesh_conn_ops *down_ops, const struct mesh_addr *src,
                                  const struct mesh_addr *dst);
void proxy_conn_teardown(struct proxy_conn *pc, int err);
void proxy_conn_record_open(struct proxy_conn *pc);
void proxy_conn_start_relay(struct proxy_conn *pc);
extern const struct mesh_conn_cb proxy_side_cb;
bool proxy_is_illegal_port(const struct mesh_proxy *p, uint16_t port);
struct proxy_ctx_entry *proxy_ctx_get(struct mesh_proxy *p, const struct mesh_spiffe_id *id);
void proxy_ctx_put(struct mesh_proxy *p, struct proxy_ctx_entry *e);
bool proxy_workload_is_local(const struct mesh_proxy *p, const struct mesh_workload *w);
enum mesh_proxy_verdict proxy_call_authz(struct mesh_proxy *p, struct proxy_conn *pc);
/* The same decision for a live connection seen through other workload records (a newer snapshot). */
enum mesh_proxy_verdict proxy_call_authz_as(struct mesh_proxy *p, const struct proxy_conn *pc,
                                            const struct mesh_workload *src_w, const struct mesh_workload *dst_w);

/* outbound.c */
void proxy_outbound_start(struct proxy_conn *pc);
void proxy_outbound_on_up_writable(struct proxy_conn *pc);
void proxy_outbound_on_up_closed(struct proxy_conn *pc, int err);
void proxy_outbound_on_timeout(struct proxy_conn *pc);
/* A connection waiting for an on-demand lookup: go on when the current snapshot knows its destination, the hook
 * says nobody will, or its wait is over; otherwise wait on (the next poll is armed). */
void proxy_outbound_poll_lookup(struct proxy_conn *pc, uint64_t now_ns);
/* Re-check a live outbound connection against p->ws; closes it ("unroutable") and returns false when it must go. */
bool proxy_outbound_recheck(struct proxy_conn *pc);
struct mesh_tls_ctx *proxy_pool_get_ctx(void *u, const struct mesh_spiffe_id *id);
void proxy_pool_put_ctx(void *u, struct mesh_tls_ctx *ctx);

/* inbound.c */
int proxy_inbound_accept(struct mesh_proxy *p, struct mesh_conn *c, const struct mesh_addr *src,
                         const struct mesh_addr *dst, const struct mesh_conn_cb **cb_out, void **u_out);
void proxy_inbound_on_up_writable(struct proxy_conn *pc);
void proxy_inbound_on_up_closed(struct proxy_conn *pc, int err);
void proxy_inbound_on_timeout(struct proxy_conn *pc);
void proxy_inbound_free_all(struct mesh_proxy *p);
void proxy_plain_start(struct proxy_conn *pc);
/* Re-check a live inbound connection against p->ws, p->cfg; closes it ("denied") and returns false when it must go. */
bool proxy_inbound_recheck(struct proxy_conn *pc);

#endif /* MESH_PROXY_IMPL_H */
