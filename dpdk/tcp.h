/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The userspace TCP: public interface for the rest of the appliance (the connection backend, the forwarder,
 * the management API). The segment-level machinery is private to dpdk/tcp_*.c (see tcp_impl.h).
 *
 * Ownership and threading:
 *  - Every connection and listener belongs to one lcore's struct dp_tcp; only that lcore calls these functions
 *    for it and only that lcore receives its upcalls.
 *  - A connection is the struct mesh_conn of mesh/conn.h: the upper layer owns it from dp_tcp_connect() or its
 *    accept upcall until on_closed() or dp_tcp_abort(). Upcalls never run inside a call made by the upper layer:
 *    they are deferred to dp_tcp_run_deferred(), which the poll loop calls after each burst.
 *  - After on_closed the stack may keep the block (TIME-WAIT, a final FIN handshake) but never calls up again.
 * Addresses and ports in this interface are host byte order.
 */
#ifndef ZW_DP_TCP_H
#define ZW_DP_TCP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "mesh/conn.h"

struct dp_lcore;
struct dp_tcp;
struct dp_tcp_listener;

enum dp_tcp_cc { DP_TCP_CC_NEWRENO, DP_TCP_CC_CUBIC };

/* Per-lcore TCP settings, from the config file. */
struct dp_tcp_config {
    uint32_t max_conns;          /* connection blocks per lcore */
    uint32_t buffer_mbufs;       /* mbufs for send/receive buffers, per lcore */
    uint32_t sndbuf_max;         /* bytes queued for sending per connection */
    uint32_t rcvbuf_max;         /* receive window and queue per connection */
    uint32_t syn_backlog;        /* half-open connections per listener before SYN cookies */
    enum dp_tcp_cc cc;
    uint32_t rto_min_ms;         /* 200: like Linux; RFC 6298's 1 s is too slow for data-centre RTTs */
    uint32_t rto_max_ms;
    uint32_t time_wait_ms;       /* 2 MSL */
    uint32_t keepalive_idle_ms;  /* 0: keepalive off by default (listeners and dials may turn it on) */
    uint32_t keepalive_intvl_ms;
    uint32_t keepalive_probes;
    uint32_t delack_ms;
    uint16_t ephemeral_lo;       /* inclusive range of local ports for connects */
    uint16_t ephemeral_hi;
    bool sack;                   /* offer/accept SACK (RFC 2018) */
    bool timestamps;             /* offer/accept timestamps (RFC 7323) */
    bool window_scaling;         /* offer/accept window scaling (RFC 7323) */
};

void dp_tcp_config_defaults(struct dp_tcp_config *cfg);
/* The settings lc's TCP runs with (dp_tcp_init done). */
const struct dp_tcp_config *dp_tcp_get_config(const struct dp_lcore *lc);

/* Create the TCP state of lc. 0 or -errno. */
int dp_tcp_init(struct dp_lcore *lc, const struct dp_tcp_config *cfg, int socket);
/* Abort every connection (no upcalls), free everything. */
void dp_tcp_fini(struct dp_lcore *lc);

/*
 * An accepted connection. The owner installs its upcalls with dp_tcp_set_callbacks() before returning true;
 * returning false refuses the connection (RST).
 */
typedef bool (*dp_tcp_accept_fn)(void *ctx, struct mesh_conn *c);

struct dp_tcp_listen_opts {
    uint32_t keepalive_idle_ms;  /* 0: the lcore default */
    uint32_t keepalive_intvl_ms;
    uint32_t keepalive_probes;
};

/* Listen on ip:port (ip 0: any local address). Returns the listener or NULL with -errno in *err. */
struct dp_tcp_listener *dp_tcp_listen(struct dp_lcore *lc, uint32_t ip, uint16_t port,
                                      const struct dp_tcp_listen_opts *opts, dp_tcp_accept_fn fn, void *ctx,
                                      int *err);
void dp_tcp_unlisten(struct dp_lcore *lc, struct dp_tcp_listener *l);

/*
 * Transparent capture (DESIGN.md §2): take every SYN that the classifier puts in class cls (dpdk/classify.h), whatever
 * its destination address; the accepted connection's local address is the original destination (dp_tcp_addrs).
 * cls is DP_FLOW_OUTBOUND, DP_FLOW_INBOUND_HBONE or DP_FLOW_INBOUND_PLAIN. fn NULL stops capturing that class.
 * Returns 0 or -EINVAL.
 */
int dp_tcp_capture(struct dp_lcore *lc, int cls, const struct dp_tcp_listen_opts *opts, dp_tcp_accept_fn fn,
                   void *ctx);

/*
 * Open a connection from src_ip (0: the address of the egress port) to dst_ip:dst_port. on_writable is the
 * first upcall once established; on_closed(-ECONNREFUSED or -ETIMEDOUT) if it never is. 0 or -errno.
 */
int dp_tcp_connect(struct dp_lcore *lc, uint32_t src_ip, uint32_t dst_ip, uint16_t dst_port,
                   const struct mesh_conn_cb *cb, void *u, struct mesh_conn **out);

void dp_tcp_set_callbacks(struct mesh_conn *c, const struct mesh_conn_cb *cb, void *u);
void dp_tcp_set_keepalive(struct mesh_conn *c, uint32_t idle_ms, uint32_t intvl_ms, uint32_t probes);

/* The mesh_conn operations (mesh/conn.h) of this backend. */
ssize_t dp_tcp_write(struct mesh_conn *c, const struct iovec *v, int n);
void dp_tcp_read_enable(struct mesh_conn *c, bool on);
int dp_tcp_shutdown_wr(struct mesh_conn *c);
void dp_tcp_abort(struct mesh_conn *c);

/* Addresses of a connection (host order). */
void dp_tcp_addrs(const struct mesh_conn *c, uint32_t *local_ip, uint16_t *local_port, uint32_t *remote_ip,
                  uint16_t *remote_port);

/* Run deferred upcalls and transmit what they queued. Called by the poll loop after each burst. */
void dp_tcp_run_deferred(struct dp_lcore *lc);
/* Fire due timers. Called by the poll loop. */
void dp_tcp_timers(struct dp_lcore *lc);

/* ---- introspection for /stats and tests ---- */

enum dp_tcp_state {
    DP_TCP_CLOSED,
    DP_TCP_LISTEN,
    DP_TCP_SYN_SENT,
    DP_TCP_SYN_RECEIVED,
    DP_TCP_ESTABLISHED,
    DP_TCP_FIN_WAIT_1,
    DP_TCP_FIN_WAIT_2,
    DP_TCP_CLOSE_WAIT,
    DP_TCP_CLOSING,
    DP_TCP_LAST_ACK,
    DP_TCP_TIME_WAIT,
    DP_TCP_N_STATES
};

const char *dp_tcp_state_name(enum dp_tcp_state s);

struct dp_tcp_usage {
    uint32_t conns_by_state[DP_TCP_N_STATES];
    uint32_t conns_in_use;
    uint32_t conns_max;
    uint32_t timers_armed;
    uint32_t buffer_mbufs_in_use;
    uint32_t listeners;
};

/* One connection, for listings (GET /tcp/connections). Addresses host order. */
struct dp_tcp_conn_info {
    uint32_t local_ip, remote_ip;
    uint16_t local_port, remote_port;
    uint8_t state;
    uint32_t snd_una, snd_nxt, snd_max;  /* relative to the ISS */
    uint32_t snd_queued;                 /* bytes from snd_una to the end of the send buffer */
    uint32_t snd_wnd, cwnd, ssthresh;
    uint32_t rcv_queued, rcv_ooo, rcv_space;
    uint32_t srtt_us, rto_ms;
    uint32_t flags;
    bool owned;
};

/* Fill up to max connections of lc (call on the owning lcore). Returns how many were filled. */
size_t dp_tcp_list(const struct dp_lcore *lc, struct dp_tcp_conn_info *out, size_t max);

/* A consistent count when called on the owning lcore (use an RPC from elsewhere). */
void dp_tcp_usage(const struct dp_lcore *lc, struct dp_tcp_usage *u);

#endif
