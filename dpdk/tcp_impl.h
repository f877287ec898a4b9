/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TCP internals shared by dpdk/tcp_*.c. Nothing outside those files includes this.
 *
 * Invariants of a connection block (struct mesh_conn, the TCB):
 *  - SEQ_LEQ(snd_una, snd_nxt) && SEQ_LEQ(snd_nxt, snd_max); snd.bytes == bytes from snd_una to the end of the
 *    queued data (a FIN occupies sequence space but no buffer byte).
 *  - rcvq holds in-order bytes not yet taken by the owner; ooo holds segments above rcv_nxt, sorted, not
 *    overlapping each other; rcvq.bytes + ooo_bytes <= rcvbuf_max.
 *  - The block sits in the 4-tuple table from the first SYN to its release, and in the timer wheel at most once,
 *    at min(every armed deadline).
 *  - Buffers are chains of mbufs from the lcore's buffer pool, packed full; packet mbufs are never kept past the
 *    burst that brought them.
 */
#ifndef ZW_DP_TCP_IMPL_H
#define ZW_DP_TCP_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include <rte_mbuf.h>
#include <rte_tcp.h>

#include "dpdk/dp.h"
#include "dpdk/classify.h"
#include "dpdk/tcp.h"

/* ---- sequence arithmetic (RFC 9293 §3.4) ---- */
#define SEQ_LT(a, b) ((int32_t)((a) - (b)) < 0)
#define SEQ_LEQ(a, b) ((int32_t)((a) - (b)) <= 0)
#define SEQ_GT(a, b) ((int32_t)((a) - (b)) > 0)
#define SEQ_GEQ(a, b) ((int32_t)((a) - (b)) >= 0)
#define SEQ_MAX(a, b) (SEQ_GT(a, b) ? (a) : (b))
#define SEQ_MIN(a, b) (SEQ_LT(a, b) ? (a) : (b))

#define TCP_MSS_DEFAULT 536          /* RFC 9293 §3.7.1 when the peer sends no MSS option */
#define TCP_MAX_WSCALE 14
#define TCP_SACK_MAX 8               /* ranges in the sender's scoreboard */
#define TCP_DUPTHRESH 3
#define TCP_SYN_RETRIES 6
#define TCP_DATA_RETRIES 12
#define TCP_INITIAL_RTO_MS 1000      /* RFC 6298 (2.1) */
#define TCP_INITIAL_CWND_SEGS 10     /* RFC 6928 */
#define TCP_HDR_MAX (20 + 40)
#define TCP_WHEEL_SLOTS 1024         /* 1 ms per slot */

/* ---- byte queue on mbufs ---- */

struct tcp_bufq {
    struct rte_mbuf *head;           /* linked through m->next, each mbuf a single segment */
    struct rte_mbuf *tail;
    uint32_t bytes;
    uint32_t n_mbufs;
    /* read cursor for tcp_bufq_copy(): cur starts at byte offset cur_off of the queue */
    struct rte_mbuf *cur;
    uint32_t cur_off;
};

/* Append up to n bytes; returns how many fit (limited by cap and the pool). */
uint32_t tcp_bufq_append(struct tcp_bufq *q, struct rte_mempool *pool, const uint8_t *p, uint32_t n, uint32_t cap);
/* Copy n bytes starting at byte offset off into dst. The range must be inside the queue. */
void tcp_bufq_copy(struct tcp_bufq *q, uint32_t off, uint32_t n, uint8_t *dst);
/* Drop the first n bytes. */
void tcp_bufq_drop(struct tcp_bufq *q, uint32_t n);
void tcp_bufq_free(struct tcp_bufq *q);

/* ---- out-of-order segment (stored in a buffer mbuf, seq in hash.usr) ---- */

struct tcp_ooo {
    struct rte_mbuf *head;           /* sorted by seq, linked through m->next */
    uint32_t bytes;
    uint32_t n;
};

struct tcp_sack_block {
    uint32_t start;
    uint32_t end;
};

/* ---- the connection block ---- */

enum tcp_conn_flag {
    TCPF_OWNED = 1u << 0,            /* the owner holds it: upcalls allowed until on_closed */
    TCPF_SACK_OK = 1u << 1,
    TCPF_TS_OK = 1u << 2,
    TCPF_WS_OK = 1u << 3,
    TCPF_FIN_QUEUED = 1u << 4,       /* shutdown_wr: send FIN after the data */
    TCPF_FIN_SENT = 1u << 5,
    TCPF_FIN_ACKED = 1u << 6,
    TCPF_PEER_FIN = 1u << 7,         /* FIN received (rcv_nxt covers it) */
    TCPF_READ_OFF = 1u << 8,         /* owner paused reading */
    TCPF_ACK_NOW = 1u << 9,          /* send an ACK at the end of the burst */
    TCPF_IN_RECOVERY = 1u << 10,
    TCPF_WANT_WRITABLE = 1u << 11,   /* a write was short: on_writable when room frees */
    TCPF_PASSIVE = 1u << 12,         /* created by a listener */
    TCPF_PEER_FIN_TOLD = 1u << 13,
    TCPF_CLOSED_TOLD = 1u << 14,
    TCPF_RTT_TIMING = 1u << 15,      /* Karn: timing rtt_seq (no timestamps) */
    TCPF_DEFERRED = 1u << 16,        /* on the lcore's deferred list */
    TCPF_CONNECTED_TOLD = 1u << 17,
    TCPF_COOKIE = 1u << 18,          /* established from a SYN cookie */
    TCPF_RETRANSMITTED = 1u << 19,   /* something was retransmitted since the last RTO reset */
    TCPF_IN_PASS = 1u << 20,         /* being processed by the deferred pass: release waits for its end */
};

struct tcp_timer_link {
    struct mesh_conn *next;
    struct mesh_conn *prev;
    uint64_t armed_ms;               /* 0: not in the wheel */
};

struct mesh_conn {
    /* identity */
    uint32_t local_ip, remote_ip;
    uint16_t local_port, remote_port;
    uint8_t state;                   /* enum dp_tcp_state */
    uint8_t snd_wscale, rcv_wscale;
    uint8_t dupacks;
    uint32_t flags;
    int32_t index;                   /* slot in the pool */
    struct dp_lcore *lc;
    struct dp_tcp_listener *listener;

    /* send side (RFC 9293 §3.3.1) */
    uint32_t iss, snd_una, snd_nxt, snd_max;
    uint32_t snd_wnd;                /* peer's window, scaled */
    uint32_t snd_wl1, snd_wl2;
    uint32_t max_snd_wnd;
    uint16_t mss;                    /* what we send per segment */
    uint16_t peer_mss;
    struct tcp_bufq snd;             /* from snd_una */

    /* receive side */
    uint32_t irs, rcv_nxt;
    uint32_t rcv_adv;                /* right edge we advertised */
    uint32_t last_ack_sent;
    uint32_t unacked_segs;           /* full segments received since our last ACK */
    struct tcp_bufq rcvq;
    struct tcp_ooo ooo;

    /* timestamps (RFC 7323) */
    uint32_t ts_recent, ts_offset;
    uint64_t ts_recent_ms;

    /* RTT and RTO (RFC 6298), microseconds */
    uint32_t srtt_us, rttvar_us, rto_ms;
    uint32_t rtt_seq;
    uint64_t rtt_start_ms;
    uint8_t backoff;
    uint8_t retries;

    /* congestion control */
    uint32_t cwnd, ssthresh;
    uint32_t recover;                /* RFC 6582 / RFC 6675 RecoveryPoint */
    uint32_t high_rxt;               /* RFC 6675 HighRxt */
    uint32_t bytes_acked_ca;         /* Reno: bytes acked toward the next cwnd increase */
    double cubic_wmax, cubic_k, cubic_origin, cubic_west;
    uint64_t cubic_epoch_ms;
    uint32_t cubic_last_wmax;
    uint8_t n_sack;
    struct tcp_sack_block sack[TCP_SACK_MAX];   /* scoreboard: SACKed ranges above snd_una, sorted */

    /* timers (absolute ms; 0 = off) */
    uint64_t rtx_at, delack_at, persist_at, keepalive_at, timewait_at;
    uint64_t last_rx_ms;
    uint32_t ka_idle_ms, ka_intvl_ms, ka_probes;
    uint8_t ka_sent;
    struct tcp_timer_link timer;

    /* deferred upcalls */
    struct mesh_conn *defer_next;
    int close_err;

    /* owner */
    const struct mesh_conn_cb *cb;
    void *u;
};

struct dp_tcp_listener {
    uint32_t ip;
    uint16_t port;
    bool in_use;
    dp_tcp_accept_fn fn;
    void *ctx;
    uint32_t half_open;
    struct dp_tcp_listen_opts opts;
};

#define TCP_MAX_LISTENERS 64

struct rte_hash;
struct rte_mempool;

struct dp_tcp {
    struct dp_tcp_config cfg;
    struct rte_hash *table;          /* 4-tuple -> pool index */
    struct mesh_conn *conns;         /* pool of cfg.max_conns */
    int32_t *free_stack;
    uint32_t n_free;
    struct rte_mempool *bufpool;
    struct dp_tcp_listener listeners[TCP_MAX_LISTENERS];
    uint32_t n_listeners;
    struct dp_tcp_listener capture[DP_FLOW_N_CLASSES]; /* transparent listeners by flow class */
    /* timer wheel */
    struct mesh_conn *wheel[TCP_WHEEL_SLOTS];
    uint64_t wheel_ms;               /* every slot before this has been run */
    uint32_t timers_armed;
    /* deferred upcalls */
    struct mesh_conn *defer_head;
    struct mesh_conn *defer_tail;
    /* secrets for ISNs (RFC 6528) and SYN cookies */
    uint32_t isn_secret[4];
    uint32_t cookie_secret[4];
    uint16_t next_port;
    uint32_t challenge_tokens;
    uint64_t challenge_refill_ms;
};

/* ---- tcp_conn.c ---- */
struct mesh_conn *tcp_conn_lookup(struct dp_tcp *t, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport);
struct mesh_conn *tcp_conn_alloc(struct dp_lcore *lc, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport);
/* Unlink from table, wheel and lists, free buffers, return the block. */
void tcp_conn_release(struct mesh_conn *c);
/* Release now, or when the deferred pass reaches c if it is queued there. */
void tcp_release_or_defer(struct mesh_conn *c);
struct dp_tcp_listener *tcp_listener_find(struct dp_tcp *t, uint32_t ip, uint16_t port);
uint32_t tcp_isn(struct dp_tcp *t, uint64_t now_ms, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport);
void tcp_set_state(struct mesh_conn *c, enum dp_tcp_state s);
/* Queue deferred work for c (upcalls and output at the end of the burst). */
void tcp_defer(struct mesh_conn *c);
/* Close with err: schedule on_closed, stop timers; the block is released once the upcall ran. */
void tcp_conn_fail(struct mesh_conn *c, int err);
/* Bytes of receive space left (window before scaling). */
uint32_t tcp_rcv_space(const struct mesh_conn *c);
/* TCPF_SACK_OK | TCPF_TS_OK | TCPF_WS_OK as the config allows. */
uint32_t tcp_offered_options(const struct dp_tcp *t);
/* The initial window scale for our buffer size. */
uint8_t tcp_wscale_for(uint32_t rcvbuf);

/* ---- tcp_input.c ---- */
void dp_tcp_input(struct dp_lcore *lc, struct rte_mbuf *m, unsigned ihl);
/* A SYN the classifier captured (its destination may be any address): accepted by the capture listener of cls. */
void dp_tcp_input_capture(struct dp_lcore *lc, struct rte_mbuf *m, unsigned ihl, enum dp_flow_class cls);

/* ---- tcp_output.c ---- */
/* Send what the window allows (data, FIN), and an ACK if one is due. */
void tcp_output(struct mesh_conn *c);
/* Send one segment of new data even if it is smaller than sender SWS avoidance wants (persist override). */
void tcp_output_force(struct mesh_conn *c);
void tcp_send_ack(struct mesh_conn *c);
/* Payload bytes that fit one segment of c once its options are counted (RFC 6691). */
uint32_t tcp_payload_max(const struct mesh_conn *c);
void tcp_send_syn(struct mesh_conn *c, bool with_ack);
void tcp_send_rst_for(struct mesh_conn *c);
/* RST answering a segment that has no connection (RFC 9293 §3.10.7.1). */
void tcp_send_rst_reply(struct dp_lcore *lc, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport,
                        uint32_t seg_seq, uint32_t seg_ack, uint32_t seg_len, bool had_ack);
/* SYN-ACK carrying a cookie, with no block kept. */
void tcp_send_cookie_synack(struct dp_lcore *lc, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport,
                            uint32_t isn, uint32_t irs, uint16_t mss, uint32_t ts_val, bool ts_ok);
/* Retransmit one segment at seq (at most mss bytes, not past snd_max). */
void tcp_retransmit(struct mesh_conn *c, uint32_t seq, uint32_t max_len);
void tcp_send_probe(struct mesh_conn *c, bool keepalive);
/* The advertised window field for the next segment; also moves rcv_adv. */
uint16_t tcp_window_field(struct mesh_conn *c);

/* ---- tcp_timer.c ---- */
/* Make sure c's wheel entry is at or before its earliest deadline. */
void tcp_timer_update(struct mesh_conn *c);
void tcp_timer_cancel(struct mesh_conn *c);
void tcp_rto_arm(struct mesh_conn *c);
void tcp_rtt_sample(struct mesh_conn *c, uint32_t rtt_ms);
void tcp_keepalive_arm(struct mesh_conn *c);

/* ---- tcp_cc.c ---- */
void tcp_cc_init(struct mesh_conn *c);
/* New data acked outside recovery: grow cwnd. */
void tcp_cc_on_ack(struct mesh_conn *c, uint32_t acked);
/* Loss detected (fast retransmit or RTO): set ssthresh (and CUBIC's state). */
void tcp_cc_on_loss(struct mesh_conn *c);
uint32_t tcp_flight(const struct mesh_conn *c);

/* ---- tcp_sack.c ---- */
void tcp_sack_update(struct mesh_conn *c, const struct tcp_sack_block *blocks, int n);
void tcp_sack_trim(struct mesh_conn *c);
uint32_t tcp_sack_bytes(const struct mesh_conn *c);
uint32_t tcp_sack_high(const struct mesh_conn *c);
/* RFC 6675 SetPipe, with IsLost(seq) taken as "below the highest SACKed byte". */
uint32_t tcp_sack_pipe(const struct mesh_conn *c);
/* RFC 6675 NextSeg rule (1): the first lost, not yet retransmitted byte, and how long its hole is. */
bool tcp_sack_next_hole(const struct mesh_conn *c, uint32_t *seq, uint32_t *len);

/* ---- tcp_reass.c ---- */
/* Queue the payload [seq, seq+len) (above rcv_nxt) out of order. Returns false if dropped. */
bool tcp_ooo_insert(struct mesh_conn *c, uint32_t seq, const uint8_t *p, uint32_t len);
/* Move what became in-order to rcvq, advancing rcv_nxt. Returns bytes moved. */
uint32_t tcp_ooo_drain(struct mesh_conn *c);
/* SACK blocks describing the queue (most recent first is not tracked: lowest first). */
int tcp_ooo_sack_blocks(const struct mesh_conn *c, struct tcp_sack_block *out, int max);
void tcp_ooo_free(struct tcp_ooo *o);

static inline struct dp_tcp *tcp_of(struct dp_lcore *lc)
{
    return lc->tcp;
}

#endif
