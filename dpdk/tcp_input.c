/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TCP input: segment validation, demultiplexing, and the RFC 9293 §3.10.7 "SEGMENT ARRIVES" procedure, with
 * RFC 5961 (RST/SYN/ACK validation and challenge ACKs), RFC 7323 (window scale, timestamps, PAWS), RFC 2018
 * (SACK), RFC 5681/6582/6675 (ACK processing and loss recovery) and SYN cookies (RFC 4987) when a listener's
 * backlog is full.
 *
 * Invariants:
 *  - A connection being processed is on the deferred list for the whole call, so nothing an upcall does can
 *    release it underneath us; output and upcalls that the segment made due run in dp_tcp_run_deferred().
 *  - Payload is handed to the owner straight from the packet when it is in order and the owner reads; only what
 *    the owner leaves is copied into the receive queue. The packet mbuf is always freed here.
 */
#include <errno.h>
#include <string.h>

#include <rte_ip.h>
#include <rte_jhash.h>
#include <rte_tcp.h>

#include "dpdk/stack.h"
#include "dpdk/tcp_impl.h"

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MSS 2
#define TCPOPT_WS 3
#define TCPOPT_SACK_PERM 4
#define TCPOPT_SACK 5
#define TCPOPT_TS 8

#define TCP_CHALLENGE_ACKS_PER_S 1000
#define TCP_PAWS_IDLE_MS (24ull * 24 * 3600 * 1000) /* RFC 7323 §5.5 */

struct tcp_opts {
    bool mss_ok, ws_ok, sack_perm, ts_ok;
    uint16_t mss;
    uint8_t ws;
    uint32_t ts_val, ts_ecr;
    int n_sack;
    struct tcp_sack_block sack[4];
};

struct tcp_seg {
    uint32_t lip, rip;
    uint16_t lport, rport;
    uint32_t seq, ack;
    uint32_t wnd;             /* raw field */
    uint8_t flags;
    const uint8_t *data;
    uint32_t len;             /* payload bytes */
    struct tcp_opts o;
};

static bool has(const struct tcp_seg *s, uint8_t f)
{
    return (s->flags & f) != 0;
}

/* Parse options; false when malformed (RFC 9293 §3.1: a length that overruns the header). */
static bool input_parse_options(const uint8_t *p, unsigned n, bool syn, struct tcp_opts *o)
{
    memset(o, 0, sizeof(*o));
    while (n > 0) {
        uint8_t kind = p[0], len;
        if (kind == TCPOPT_EOL)
            break;
        if (kind == TCPOPT_NOP) {
            p++;
            n--;
            continue;
        }
        if (n < 2 || (len = p[1]) < 2 || len > n)
            return false;
        switch (kind) {
        case TCPOPT_MSS:
            if (len != 4)
                return false;
            if (syn) {
                o->mss_ok = true;
                o->mss = (uint16_t)(p[2] << 8 | p[3]);
            }
            break;
        case TCPOPT_WS:
            if (len != 3)
                return false;
            if (syn) {
                o->ws_ok = true;
                o->ws = RTE_MIN(p[2], (uint8_t)TCP_MAX_WSCALE); /* RFC 7323 §2.3: treat > 14 as 14 */
            }
            break;
        case TCPOPT_SACK_PERM:
            if (len != 2)
                return false;
            o->sack_perm = syn;
            break;
        case TCPOPT_SACK:
            if ((len - 2) % 8 != 0)
                return false;
            for (unsigned i = 0; i < (unsigned)(len - 2) / 8 && o->n_sack < 4; i++) {
                uint32_t s, e;
                memcpy(&s, p + 2 + 8 * i, 4);
                memcpy(&e, p + 6 + 8 * i, 4);
                o->sack[o->n_sack].start = rte_be_to_cpu_32(s);
                o->sack[o->n_sack].end = rte_be_to_cpu_32(e);
                o->n_sack++;
            }
            break;
        case TCPOPT_TS:
            if (len != 10)
                return false;
            o->ts_ok = true;
            memcpy(&o->ts_val, p + 2, 4);
            memcpy(&o->ts_ecr, p + 6, 4);
            o->ts_val = rte_be_to_cpu_32(o->ts_val);
            o->ts_ecr = rte_be_to_cpu_32(o->ts_ecr);
            break;
        default:
            break; /* unknown options are skipped by length */
        }
        p += len;
        n -= len;
    }
    return true;
}

/* ---- challenge ACKs (RFC 5961 §7) ---- */

static void input_challenge_ack(struct mesh_conn *c)
{
    struct dp_tcp *t = tcp_of(c->lc);

    if (c->lc->now_ms - t->challenge_refill_ms >= 1000) {
        t->challenge_refill_ms = c->lc->now_ms;
        t->challenge_tokens = TCP_CHALLENGE_ACKS_PER_S;
    }
    if (t->challenge_tokens == 0) {
        dp_count(c->lc, DP_CNT_TCP_CHALLENGE_ACK_LIMITED);
        return;
    }
    t->challenge_tokens--;
    dp_count(c->lc, DP_CNT_TCP_CHALLENGE_ACK);
    tcp_send_ack(c);
}

/* ---- SYN cookies ---- */

static const uint16_t cookie_mss_table[8] = {536, 1200, 1300, 1400, 1440, 1460, 4312, 8960};

static uint32_t cookie_hash(const struct dp_tcp *t, const struct tcp_seg *s, uint32_t epoch)
{
    uint32_t h = rte_jhash_3words(s->lip ^ t->cookie_secret[1], s->rip ^ t->cookie_secret[2],
                                  ((uint32_t)s->lport << 16 | s->rport) ^ t->cookie_secret[3],
                                  t->cookie_secret[0] ^ epoch);
    return rte_jhash_1word(h, s->seq ^ t->cookie_secret[0]);
}

static uint32_t cookie_epoch(uint64_t now_ms)
{
    return (uint32_t)(now_ms >> 16); /* about a minute */
}

static uint32_t cookie_make(const struct dp_tcp *t, const struct tcp_seg *syn, uint64_t now_ms, uint16_t *mss)
{
    unsigned idx = 0;
    uint16_t want = syn->o.mss_ok ? syn->o.mss : TCP_MSS_DEFAULT;

    while (idx + 1 < RTE_DIM(cookie_mss_table) && cookie_mss_table[idx + 1] <= want && cookie_mss_table[idx + 1] <= *mss)
        idx++;
    *mss = cookie_mss_table[idx];
    return (cookie_hash(t, syn, cookie_epoch(now_ms)) & ~7u) | idx;
}

/* The ACK completing a cookie handshake: seq = irs + 1, ack = cookie + 1. */
static bool cookie_check(const struct dp_tcp *t, const struct tcp_seg *ack, uint64_t now_ms, uint16_t *mss)
{
    struct tcp_seg syn = *ack;
    uint32_t cookie = ack->ack - 1;

    syn.seq = ack->seq - 1;
    for (uint32_t back = 0; back < 2; back++) {
        if (((cookie_hash(t, &syn, cookie_epoch(now_ms) - back) ^ cookie) & ~7u) == 0) {
            *mss = cookie_mss_table[cookie & 7];
            return true;
        }
    }
    return false;
}

/* ---- connection setup ---- */

static uint16_t input_our_mss(struct dp_lcore *lc, uint32_t rip)
{
    const struct dp_nexthop *nh = dp_route_lookup(lc->stack, rip);
    return (uint16_t)((nh ? lc->stack->ports[nh->port].mtu : 1500) - 40);
}

static void input_negotiate(struct mesh_conn *c, const struct tcp_opts *o, uint16_t our_mss)
{
    c->peer_mss = o->mss_ok ? o->mss : TCP_MSS_DEFAULT;
    c->mss = RTE_MIN(c->peer_mss, our_mss);
    if (c->mss < 64)
        c->mss = 64;
    if (!(o->ws_ok && (c->flags & TCPF_WS_OK))) {
        c->flags &= ~TCPF_WS_OK;
        c->snd_wscale = c->rcv_wscale = 0;
    } else {
        c->snd_wscale = o->ws;
    }
    if (!(o->sack_perm && (c->flags & TCPF_SACK_OK)))
        c->flags &= ~TCPF_SACK_OK;
    if (o->ts_ok && (c->flags & TCPF_TS_OK)) {
        c->ts_recent = o->ts_val;
        c->ts_recent_ms = c->lc->now_ms;
    } else {
        c->flags &= ~TCPF_TS_OK;
    }
}

/* Hand an established passive connection to its listener's owner. False: refused (RST sent, block released). */
static bool input_accept(struct mesh_conn *c)
{
    struct dp_tcp_listener *l = c->listener;

    c->flags |= TCPF_OWNED;
    if (l != NULL && l->fn(l->ctx, c)) {
        dp_count(c->lc, DP_CNT_TCP_CONN_OPENED_PASSIVE);
        c->listener = NULL;
        if (l->opts.keepalive_idle_ms)
            dp_tcp_set_keepalive(c, l->opts.keepalive_idle_ms, l->opts.keepalive_intvl_ms, l->opts.keepalive_probes);
        return true;
    }
    dp_count(c->lc, DP_CNT_TCP_ACCEPT_QUEUE_FULL);
    c->flags &= ~TCPF_OWNED;
    c->cb = NULL;
    tcp_send_rst_for(c);
    tcp_set_state(c, DP_TCP_CLOSED);
    tcp_release_or_defer(c);
    return false;
}

static void input_listen(struct dp_lcore *lc, struct dp_tcp_listener *l, const struct tcp_seg *s)
{
    struct dp_tcp *t = tcp_of(lc);
    struct mesh_conn *c;
    uint16_t mss;

    if (has(s, RTE_TCP_RST_FLAG))
        return;
    if (has(s, RTE_TCP_ACK_FLAG)) {
        /* no block: either the end of a cookie handshake, or junk (RFC 9293: RST it) */
        if (!has(s, RTE_TCP_SYN_FLAG) && cookie_check(t, s, lc->now_ms, &mss)) {
            c = tcp_conn_alloc(lc, s->lip, s->lport, s->rip, s->rport);
            if (c == NULL)
                return;
            dp_count(lc, DP_CNT_TCP_SYNCOOKIE_OK);
            c->flags |= TCPF_PASSIVE | TCPF_COOKIE;
            c->listener = l;
            c->irs = s->seq - 1;
            c->rcv_nxt = s->seq;
            c->iss = s->ack - 1;
            c->snd_una = c->snd_nxt = c->snd_max = s->ack;
            c->mss = RTE_MIN(mss, input_our_mss(lc, s->rip));
            c->rcv_wscale = 0;
            c->snd_wnd = s->wnd;
            c->max_snd_wnd = c->snd_wnd;
            c->snd_wl1 = s->seq;
            c->snd_wl2 = s->ack;
            if (s->o.ts_ok && s->o.ts_ecr != 0) {
                c->flags |= TCPF_TS_OK;
                c->ts_offset = 0; /* the cookie SYN-ACK's clock */
                c->ts_recent = s->o.ts_val;
                c->ts_recent_ms = lc->now_ms;
            }
            tcp_cc_init(c);
            tcp_set_state(c, DP_TCP_ESTABLISHED);
            tcp_defer(c);
            if (!input_accept(c))
                return;
            /* the ACK may carry data: let the ordinary path take it */
            return;
        }
        if (!has(s, RTE_TCP_SYN_FLAG)) {
            dp_count(lc, DP_CNT_TCP_SYNCOOKIE_BAD);
            tcp_send_rst_reply(lc, s->lip, s->lport, s->rip, s->rport, s->seq, s->ack, s->len, true);
        }
        return;
    }
    if (!has(s, RTE_TCP_SYN_FLAG) || has(s, RTE_TCP_FIN_FLAG))
        return;
    if (l->half_open >= t->cfg.syn_backlog) {
        dp_count(lc, DP_CNT_TCP_SYN_BACKLOG_FULL);
        mss = input_our_mss(lc, s->rip);
        uint32_t isn = cookie_make(t, s, lc->now_ms, &mss);
        tcp_send_cookie_synack(lc, s->lip, s->lport, s->rip, s->rport, isn, s->seq, mss, s->o.ts_val,
                               s->o.ts_ok);
        return;
    }
    c = tcp_conn_alloc(lc, s->lip, s->lport, s->rip, s->rport);
    if (c == NULL)
        return;
    c->flags |= TCPF_PASSIVE | tcp_offered_options(t);
    c->listener = l;
    c->irs = s->seq;
    c->rcv_nxt = s->seq + 1;
    input_negotiate(c, &s->o, input_our_mss(lc, s->rip));
    c->snd_wnd = s->wnd; /* a SYN's window is never scaled */
    c->max_snd_wnd = c->snd_wnd;
    c->snd_wl1 = s->seq;
    c->iss = tcp_isn(t, lc->now_ms, s->lip, s->lport, s->rip, s->rport);
    c->snd_una = c->snd_nxt = c->snd_max = c->iss;
    tcp_cc_init(c);
    tcp_set_state(c, DP_TCP_SYN_RECEIVED);
    l->half_open++;
    tcp_send_syn(c, true);
}

/* ---- SYN-SENT (RFC 9293 §3.10.7.3) ---- */

static void input_syn_sent(struct mesh_conn *c, const struct tcp_seg *s)
{
    bool ack_ok = false;

    if (has(s, RTE_TCP_ACK_FLAG)) {
        if (SEQ_LEQ(s->ack, c->iss) || SEQ_GT(s->ack, c->snd_max)) {
            if (!has(s, RTE_TCP_RST_FLAG))
                tcp_send_rst_reply(c->lc, c->local_ip, c->local_port, c->remote_ip, c->remote_port, s->seq, s->ack,
                                   s->len, true);
            return;
        }
        ack_ok = true;
    }
    if (has(s, RTE_TCP_RST_FLAG)) {
        if (ack_ok) {
            dp_count(c->lc, DP_CNT_TCP_CONN_REFUSED);
            tcp_conn_fail(c, -ECONNREFUSED);
        }
        return;
    }
    if (!has(s, RTE_TCP_SYN_FLAG))
        return;
    c->irs = s->seq;
    c->rcv_nxt = s->seq + 1;
    input_negotiate(c, &s->o, c->mss);
    tcp_cc_init(c);
    c->snd_wnd = s->wnd;
    c->max_snd_wnd = c->snd_wnd;
    c->snd_wl1 = s->seq;
    c->snd_wl2 = s->ack;
    if (!ack_ok) { /* simultaneous open (RFC 9293 §3.5, figure 8) */
        tcp_set_state(c, DP_TCP_SYN_RECEIVED);
        tcp_send_syn(c, true);
        return;
    }
    c->snd_una = s->ack;
    if ((c->flags & TCPF_TS_OK) && s->o.ts_ecr)
        tcp_rtt_sample(c, (uint32_t)c->lc->now_ms + c->ts_offset - s->o.ts_ecr);
    c->rtx_at = 0;
    c->backoff = 0;
    c->retries = 0;
    tcp_set_state(c, DP_TCP_ESTABLISHED);
    tcp_keepalive_arm(c);
    c->flags |= TCPF_ACK_NOW;
}

/* ---- synchronized states ---- */

static bool input_seq_acceptable(const struct mesh_conn *c, const struct tcp_seg *s)
{
    uint32_t wnd = SEQ_GT(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
    uint32_t seg_len = s->len + has(s, RTE_TCP_SYN_FLAG) + has(s, RTE_TCP_FIN_FLAG);

    if (seg_len == 0) {
        if (wnd == 0)
            return s->seq == c->rcv_nxt;
        return SEQ_LEQ(c->rcv_nxt, s->seq) && SEQ_LT(s->seq, c->rcv_nxt + wnd);
    }
    if (wnd == 0)
        return false;
    return (SEQ_LEQ(c->rcv_nxt, s->seq) && SEQ_LT(s->seq, c->rcv_nxt + wnd)) ||
           (SEQ_LEQ(c->rcv_nxt, s->seq + seg_len - 1) && SEQ_LT(s->seq + seg_len - 1, c->rcv_nxt + wnd));
}

static void input_enter_time_wait(struct mesh_conn *c)
{
    tcp_set_state(c, DP_TCP_TIME_WAIT);
    c->rtx_at = c->persist_at = c->keepalive_at = c->delack_at = 0;
    c->timewait_at = c->lc->now_ms + tcp_of(c->lc)->cfg.time_wait_ms;
    tcp_timer_update(c);
}

/* Loss detection from duplicate ACKs (RFC 5681 §3.2, RFC 6582 §3.2, RFC 6675 §5). */
static void input_dupack(struct mesh_conn *c)
{
    bool sack = (c->flags & TCPF_SACK_OK) != 0;

    c->dupacks++;
    dp_count(c->lc, DP_CNT_TCP_DUP_ACK);
    if (c->flags & TCPF_IN_RECOVERY) {
        if (!sack)
            c->cwnd += c->mss; /* NewReno inflation */
        return;
    }
    if (c->dupacks < TCP_DUPTHRESH && !(sack && tcp_sack_bytes(c) >= (uint32_t)TCP_DUPTHRESH * c->mss))
        return;
    if (!SEQ_GT(c->snd_una, c->recover))
        return; /* RFC 6582 §3.2 (1): the ACK does not cover the last episode's window */
    dp_count(c->lc, DP_CNT_TCP_FAST_RETRANSMIT);
    tcp_cc_on_loss(c);
    c->recover = c->snd_max;
    c->flags |= TCPF_IN_RECOVERY;
    if (sack) {
        dp_count(c->lc, DP_CNT_TCP_SACK_RECOVERY);
        c->cwnd = c->ssthresh;
        c->high_rxt = c->snd_una;
        /* the segment at snd_una is lost whatever the scoreboard says (RFC 6675 §5 (4.1)) */
        tcp_retransmit(c, c->snd_una, c->mss);
        c->high_rxt = c->snd_una + tcp_payload_max(c);
    } else {
        tcp_retransmit(c, c->snd_una, c->mss);
        c->cwnd = c->ssthresh + TCP_DUPTHRESH * c->mss;
    }
    tcp_rto_arm(c);
}

static void input_new_ack(struct mesh_conn *c, const struct tcp_seg *s)
{
    uint32_t acked = s->ack - c->snd_una;
    uint32_t data = RTE_MIN(acked, c->snd.bytes);

    if ((c->flags & TCPF_FIN_SENT) && s->ack == c->snd_max && SEQ_GT(c->snd_max, c->snd_una + c->snd.bytes))
        c->flags |= TCPF_FIN_ACKED;
    tcp_bufq_drop(&c->snd, data);
    c->snd_una = s->ack;
    if (SEQ_LT(c->snd_nxt, c->snd_una))
        c->snd_nxt = c->snd_una;
    tcp_sack_trim(c);
    if (SEQ_LT(c->high_rxt, c->snd_una))
        c->high_rxt = c->snd_una;

    /* RTT (RFC 7323 §4.1 with timestamps, else Karn's timed segment) */
    if ((c->flags & TCPF_TS_OK) && s->o.ts_ok && s->o.ts_ecr != 0) {
        tcp_rtt_sample(c, (uint32_t)c->lc->now_ms + c->ts_offset - s->o.ts_ecr);
    } else if ((c->flags & TCPF_RTT_TIMING) && SEQ_GT(s->ack, c->rtt_seq)) {
        c->flags &= ~TCPF_RTT_TIMING;
        tcp_rtt_sample(c, (uint32_t)(c->lc->now_ms - c->rtt_start_ms));
    }
    c->backoff = 0;
    c->retries = 0;

    if (c->flags & TCPF_IN_RECOVERY) {
        if (SEQ_GEQ(s->ack, c->recover)) { /* full ACK: recovery is over */
            c->flags &= ~TCPF_IN_RECOVERY;
            c->cwnd = (c->flags & TCPF_SACK_OK) ? c->ssthresh
                                                : RTE_MIN(c->ssthresh, tcp_flight(c) + c->mss); /* RFC 6582 (3.3) */
        } else if (!(c->flags & TCPF_SACK_OK)) {
            /* NewReno partial ACK (RFC 6582 §3.2 (5)): resend the next hole, deflate */
            tcp_retransmit(c, c->snd_una, c->mss);
            c->cwnd = (c->cwnd > acked ? c->cwnd - acked : 0) + c->mss;
        }
    } else {
        tcp_cc_on_ack(c, acked);
    }
    c->dupacks = 0;
    if (SEQ_LT(c->snd_una, c->snd_max))
        tcp_rto_arm(c);
    else
        c->rtx_at = 0;
    if (c->flags & TCPF_WANT_WRITABLE)
        tcp_defer(c);
}

/* The ACK field (RFC 9293 §3.10.7.4 fifth check). Returns false when the segment must be dropped. */
static bool input_ack(struct mesh_conn *c, const struct tcp_seg *s)
{
    uint32_t old_wnd = c->snd_wnd;

    if (SEQ_GT(s->ack, c->snd_max)) {
        dp_count(c->lc, DP_CNT_TCP_ACK_INVALID);
        c->flags |= TCPF_ACK_NOW;
        return false;
    }
    if (SEQ_LT(s->ack, c->snd_una - RTE_MAX(c->max_snd_wnd, 65535u))) { /* RFC 5961 §5.2 */
        input_challenge_ack(c);
        return false;
    }
    if ((c->flags & TCPF_SACK_OK) && s->o.n_sack > 0)
        tcp_sack_update(c, s->o.sack, s->o.n_sack);

    if (SEQ_GT(s->ack, c->snd_una)) {
        input_new_ack(c, s);
    } else if (s->ack == c->snd_una && s->len == 0 && !has(s, RTE_TCP_FIN_FLAG) &&
               (s->wnd << c->snd_wscale) == old_wnd && SEQ_LT(c->snd_una, c->snd_max)) {
        input_dupack(c);
    }

    /* window update */
    if (SEQ_LT(c->snd_wl1, s->seq) || (c->snd_wl1 == s->seq && SEQ_LEQ(c->snd_wl2, s->ack))) {
        c->snd_wnd = s->wnd << c->snd_wscale;
        c->snd_wl1 = s->seq;
        c->snd_wl2 = s->ack;
        c->max_snd_wnd = RTE_MAX(c->max_snd_wnd, c->snd_wnd);
        if (old_wnd == 0 && c->snd_wnd > 0) {
            c->persist_at = 0;
            c->backoff = 0;
        }
    }

    if (c->flags & TCPF_FIN_ACKED) {
        switch (c->state) {
        case DP_TCP_FIN_WAIT_1:
            tcp_set_state(c, DP_TCP_FIN_WAIT_2);
            break;
        case DP_TCP_CLOSING:
            input_enter_time_wait(c);
            break;
        case DP_TCP_LAST_ACK:
            c->close_err = 0;
            tcp_set_state(c, DP_TCP_CLOSED);
            c->rtx_at = c->keepalive_at = c->delack_at = c->persist_at = 0;
            tcp_timer_update(c);
            return false;
        default:
            break;
        }
    }
    return true;
}

/* In-order and out-of-order payload (RFC 9293 §3.10.7.4 seventh check). */
static void input_data(struct mesh_conn *c, struct tcp_seg *s)
{
    struct dp_tcp *t = tcp_of(c->lc);
    uint32_t edge = SEQ_MAX(c->rcv_adv, c->rcv_nxt);

    if (SEQ_LT(s->seq, c->rcv_nxt)) { /* already have the front */
        uint32_t skip = c->rcv_nxt - s->seq;
        if (skip >= s->len) {
            if (s->len > 0) {
                dp_count(c->lc, DP_CNT_TCP_DUP_DATA);
                c->flags |= TCPF_ACK_NOW; /* D-SACK not sent; a plain ACK tells the sender */
            }
            s->data += s->len;
            s->seq += s->len;
            s->len = 0;
            return;
        }
        s->data += skip;
        s->seq += skip;
        s->len -= skip;
    }
    if (SEQ_GT(s->seq + s->len, edge)) { /* beyond what we offered */
        uint32_t keep = SEQ_GT(edge, s->seq) ? edge - s->seq : 0;
        s->len = keep;
        s->flags &= (uint8_t)~RTE_TCP_FIN_FLAG;
    }
    if (s->len == 0)
        return;

    if (s->seq != c->rcv_nxt) {
        if (tcp_ooo_insert(c, s->seq, s->data, s->len))
            dp_count(c->lc, DP_CNT_TCP_OOO_SEGMENTS);
        else
            dp_count(c->lc, DP_CNT_TCP_OOO_DROPPED);
        s->flags &= (uint8_t)~RTE_TCP_FIN_FLAG; /* an out-of-order FIN comes again */
        tcp_send_ack(c); /* one duplicate ACK per out-of-order segment, not per burst (RFC 5681 §4.2) */
        return;
    }

    uint32_t took = 0;
    if (c->rcvq.bytes == 0 && (c->flags & (TCPF_OWNED | TCPF_READ_OFF)) == TCPF_OWNED && c->cb != NULL) {
        took = (uint32_t)c->cb->on_data(c->u, s->data, s->len); /* straight from the packet */
        if (took > s->len)
            took = s->len;
    }
    if (took < s->len) {
        uint32_t kept = tcp_bufq_append(&c->rcvq, t->bufpool, s->data + took, s->len - took, UINT32_MAX);
        if (kept < s->len - took) {
            dp_count(c->lc, DP_CNT_TCP_BUFFER_ALLOC_FAILED);
            s->flags &= (uint8_t)~RTE_TCP_FIN_FLAG;
        }
        took += kept;
    }
    c->rcv_nxt += took;
    if (c->ooo.head != NULL) {
        tcp_ooo_drain(c);
        tcp_send_ack(c); /* a filled hole: tell the sender at once (RFC 5681 §4.2) */
    }
    s->seq += took;
    s->len = 0;

    /* ACK every second full segment, else after the delayed-ACK timer (RFC 5681 §4.2, RFC 9293 §3.8.6.3) */
    /* a full-sized segment carries the MSS less the sender's options (RFC 6691); 40 bytes covers any */
    bool full = took + 40 >= c->mss;
    if (full)
        c->unacked_segs++;
    if (c->unacked_segs >= 2 || !full)
        c->flags |= TCPF_ACK_NOW;
    else if (c->delack_at == 0) {
        c->delack_at = c->lc->now_ms + t->cfg.delack_ms;
        tcp_timer_update(c);
    }
}

static void input_fin(struct mesh_conn *c, const struct tcp_seg *s)
{
    if (s->seq != c->rcv_nxt || (c->flags & TCPF_PEER_FIN))
        return;
    c->rcv_nxt++;
    c->flags |= TCPF_PEER_FIN | TCPF_ACK_NOW;
    switch (c->state) {
    case DP_TCP_SYN_RECEIVED:
    case DP_TCP_ESTABLISHED:
        tcp_set_state(c, DP_TCP_CLOSE_WAIT);
        break;
    case DP_TCP_FIN_WAIT_1:
        if (c->flags & TCPF_FIN_ACKED)
            input_enter_time_wait(c);
        else
            tcp_set_state(c, DP_TCP_CLOSING);
        break;
    case DP_TCP_FIN_WAIT_2:
        input_enter_time_wait(c);
        break;
    default:
        break;
    }
}

static void input_synchronized(struct mesh_conn *c, struct tcp_seg *s)
{
    /* PAWS (RFC 7323 §5.3) */
    /* one tick of slack, as Linux allows: segments sent within the same clock tick may arrive reordered */
    if ((c->flags & TCPF_TS_OK) && s->o.ts_ok && !has(s, RTE_TCP_RST_FLAG) && SEQ_LT(s->o.ts_val + 1, c->ts_recent) &&
        c->lc->now_ms - c->ts_recent_ms < TCP_PAWS_IDLE_MS) {
        dp_count(c->lc, DP_CNT_TCP_PAWS_REJECTED);
        c->flags |= TCPF_ACK_NOW;
        return;
    }
    /* first: sequence number */
    if (!input_seq_acceptable(c, s)) {
        if (has(s, RTE_TCP_RST_FLAG)) {
            dp_count(c->lc, DP_CNT_TCP_RST_IGNORED);
        } else if (c->state == DP_TCP_SYN_RECEIVED && has(s, RTE_TCP_SYN_FLAG) && s->seq == c->irs) {
            tcp_send_syn(c, true); /* the peer's SYN again: our SYN-ACK was lost */
        } else {
            dp_count(c->lc, DP_CNT_TCP_OUT_OF_WINDOW);
            c->flags |= TCPF_ACK_NOW;
            if (c->state == DP_TCP_TIME_WAIT && has(s, RTE_TCP_FIN_FLAG))
                c->timewait_at = c->lc->now_ms + tcp_of(c->lc)->cfg.time_wait_ms; /* their FIN again */
            /* RFC 9293 §3.10.7.4: with a closed window no segment is acceptable, "but special allowance should be
             * made to accept valid ACKs": the data is dropped, the acknowledgment still counts */
            if (has(s, RTE_TCP_ACK_FLAG) && !has(s, RTE_TCP_SYN_FLAG) && c->state >= DP_TCP_ESTABLISHED &&
                c->state != DP_TCP_TIME_WAIT && (SEQ_GT(s->ack, c->snd_una) || c->snd_wnd == 0)) {
                c->last_rx_ms = c->lc->now_ms;
                struct tcp_seg ack_only = *s;
                ack_only.len = 0;
                ack_only.flags &= (uint8_t)~RTE_TCP_FIN_FLAG;
                input_ack(c, &ack_only);
            }
        }
        return;
    }
    c->last_rx_ms = c->lc->now_ms;
    c->ka_sent = 0;
    /* second: RST (RFC 5961 §3.2) */
    if (has(s, RTE_TCP_RST_FLAG)) {
        if (s->seq != c->rcv_nxt) {
            input_challenge_ack(c);
            return;
        }
        if (c->state == DP_TCP_TIME_WAIT || (c->state == DP_TCP_CLOSED && (c->flags & TCPF_FIN_ACKED))) {
            /* both directions are complete (RFC 1337: TIME-WAIT ignores RST); what is still queued for the owner
             * was received and acknowledged, so it is delivered and the close stays orderly */
            dp_count(c->lc, DP_CNT_TCP_RST_IGNORED);
            return;
        }
        dp_count(c->lc, DP_CNT_TCP_RST_IN);
        if (c->state == DP_TCP_SYN_RECEIVED && (c->flags & TCPF_PASSIVE) && !(c->flags & TCPF_OWNED)) {
            tcp_set_state(c, DP_TCP_CLOSED);
            tcp_release_or_defer(c);
            return;
        }
        tcp_conn_fail(c, c->state == DP_TCP_SYN_RECEIVED ? -ECONNREFUSED : -ECONNRESET);
        return;
    }
    /* fourth: SYN in a synchronized state (RFC 5961 §4) */
    if (has(s, RTE_TCP_SYN_FLAG)) {
        if (c->state == DP_TCP_SYN_RECEIVED && s->seq == c->irs)
            tcp_send_syn(c, true);
        else
            input_challenge_ack(c);
        return;
    }
    /* fifth: ACK */
    if (!has(s, RTE_TCP_ACK_FLAG))
        return;
    /* timestamps to echo (RFC 7323 §4.3) */
    if ((c->flags & TCPF_TS_OK) && s->o.ts_ok && SEQ_LEQ(s->seq, c->last_ack_sent) &&
        SEQ_GEQ(s->o.ts_val, c->ts_recent)) {
        c->ts_recent = s->o.ts_val;
        c->ts_recent_ms = c->lc->now_ms;
    }
    if (c->state == DP_TCP_SYN_RECEIVED) {
        if (SEQ_LEQ(s->ack, c->snd_una) || SEQ_GT(s->ack, c->snd_max)) {
            tcp_send_rst_reply(c->lc, c->local_ip, c->local_port, c->remote_ip, c->remote_port, s->seq, s->ack,
                               s->len, true);
            return;
        }
        c->snd_una = s->ack;
        c->snd_wnd = s->wnd << c->snd_wscale;
        c->max_snd_wnd = c->snd_wnd;
        c->snd_wl1 = s->seq;
        c->snd_wl2 = s->ack;
        if ((c->flags & TCPF_TS_OK) && s->o.ts_ecr)
            tcp_rtt_sample(c, (uint32_t)c->lc->now_ms + c->ts_offset - s->o.ts_ecr);
        c->rtx_at = 0;
        c->backoff = 0;
        c->retries = 0;
        tcp_set_state(c, DP_TCP_ESTABLISHED);
        if ((c->flags & TCPF_PASSIVE) && !input_accept(c))
            return;
        tcp_keepalive_arm(c);
    } else if (!input_ack(c, s)) {
        return;
    }
    /* seventh: data; eighth: FIN */
    if (c->state == DP_TCP_ESTABLISHED || c->state == DP_TCP_FIN_WAIT_1 || c->state == DP_TCP_FIN_WAIT_2) {
        input_data(c, s);
        if (has(s, RTE_TCP_FIN_FLAG))
            input_fin(c, s);
    } else if (has(s, RTE_TCP_FIN_FLAG) && c->state == DP_TCP_TIME_WAIT) {
        c->flags |= TCPF_ACK_NOW; /* RFC 9293: acknowledge and restart the 2 MSL timeout */
        c->timewait_at = c->lc->now_ms + tcp_of(c->lc)->cfg.time_wait_ms;
        tcp_timer_update(c);
    } else if (s->len > 0 || has(s, RTE_TCP_FIN_FLAG)) {
        c->flags |= TCPF_ACK_NOW; /* data after the peer's FIN: ignored, but acknowledged */
    }
}

/* ---- entry ---- */

static bool input_checksum_ok(struct rte_mbuf *m, const struct rte_ipv4_hdr *ip, const struct rte_tcp_hdr *th)
{
    uint64_t f = m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK;
    if (f == RTE_MBUF_F_RX_L4_CKSUM_GOOD)
        return true;
    if (f == RTE_MBUF_F_RX_L4_CKSUM_BAD)
        return false;
    return rte_ipv4_udptcp_cksum_verify(ip, th) == 0;
}

/* capture: the transparent listener to use when no connection matches (NULL: the listeners of our addresses). */
static void input_segment(struct dp_lcore *lc, struct rte_mbuf *m, unsigned ihl, struct dp_tcp_listener *capture)
{
    struct dp_tcp *t = tcp_of(lc);
    const struct rte_ipv4_hdr *ip = dp_ip4_hdr(m);
    const struct rte_tcp_hdr *th;
    unsigned total = rte_be_to_cpu_16(ip->total_length), thl;
    struct tcp_seg s;
    struct mesh_conn *c;

    if (t == NULL) { /* no TCP on this lcore */
        dp_drop(lc, m, DP_CNT_IP4_LOCAL_PROTO);
        return;
    }
    dp_count(lc, DP_CNT_TCP_RX);
    if (total < ihl + sizeof(*th) || rte_pktmbuf_data_len(m) < total) {
        dp_drop(lc, m, DP_CNT_TCP_BAD_HEADER);
        return;
    }
    th = (const struct rte_tcp_hdr *)((const uint8_t *)ip + ihl);
    thl = (unsigned)(th->data_off >> 4) * 4;
    if (thl < sizeof(*th) || ihl + thl > total) {
        dp_drop(lc, m, DP_CNT_TCP_BAD_HEADER);
        return;
    }
    if (!input_checksum_ok(m, ip, th)) {
        dp_drop(lc, m, DP_CNT_TCP_BAD_CHECKSUM);
        return;
    }
    memset(&s, 0, sizeof(s));
    s.flags = th->tcp_flags;
    if (!input_parse_options((const uint8_t *)(th + 1), thl - sizeof(*th), has(&s, RTE_TCP_SYN_FLAG), &s.o)) {
        dp_drop(lc, m, DP_CNT_TCP_BAD_HEADER);
        return;
    }
    s.lip = rte_be_to_cpu_32(ip->dst_addr);
    s.rip = rte_be_to_cpu_32(ip->src_addr);
    s.lport = rte_be_to_cpu_16(th->dst_port);
    s.rport = rte_be_to_cpu_16(th->src_port);
    s.seq = rte_be_to_cpu_32(th->sent_seq);
    s.ack = rte_be_to_cpu_32(th->recv_ack);
    s.wnd = rte_be_to_cpu_16(th->rx_win);
    s.data = (const uint8_t *)th + thl;
    s.len = total - ihl - thl;

    c = tcp_conn_lookup(t, s.lip, s.lport, s.rip, s.rport);
    if (c != NULL && c->state == DP_TCP_TIME_WAIT && has(&s, RTE_TCP_SYN_FLAG) && !has(&s, RTE_TCP_ACK_FLAG) &&
        ((c->flags & TCPF_TS_OK) && s.o.ts_ok ? SEQ_GT(s.o.ts_val, c->ts_recent) : SEQ_GT(s.seq, c->rcv_nxt))) {
        /* a new incarnation may take over a TIME-WAIT block (RFC 6191) */
        dp_count(lc, DP_CNT_TCP_TIME_WAIT_REUSED);
        c->timewait_at = 0;
        tcp_set_state(c, DP_TCP_CLOSED);
        tcp_release_or_defer(c);
        c = (c->lc == NULL) ? NULL : c;
    }
    if (c == NULL && !(has(&s, RTE_TCP_SYN_FLAG) && !has(&s, RTE_TCP_ACK_FLAG))) { /* all but a new SYN */
        struct dp_lcore *owner = dp_lcore_port_owner(lc, s.lport);
        if (owner != NULL) { /* a reply to a connection another lcore opened */
            m->hash.usr = 0;
            dp_lcore_handoff(lc, owner, m);
            return;
        }
    }
    if (c == NULL || c->state == DP_TCP_CLOSED) {
        struct dp_tcp_listener *l = c != NULL ? NULL : capture != NULL ? capture : tcp_listener_find(t, s.lip, s.lport);
        if (l != NULL) {
            input_listen(lc, l, &s);
            /* a cookie's ACK that carried data: now there is a block for it */
            if (s.len > 0 && !has(&s, RTE_TCP_SYN_FLAG) &&
                (c = tcp_conn_lookup(t, s.lip, s.lport, s.rip, s.rport)) != NULL && c->state == DP_TCP_ESTABLISHED)
                input_synchronized(c, &s);
        } else if (c != NULL && has(&s, RTE_TCP_SYN_FLAG) && !has(&s, RTE_TCP_ACK_FLAG)) {
            /* the old block of this 4-tuple is still being released: the peer's SYN comes again in a second */
        } else if (!has(&s, RTE_TCP_RST_FLAG)) {
            dp_count(lc, DP_CNT_TCP_NO_LISTENER);
            tcp_send_rst_reply(lc, s.lip, s.lport, s.rip, s.rport, s.seq, s.ack,
                               s.len + has(&s, RTE_TCP_SYN_FLAG) + has(&s, RTE_TCP_FIN_FLAG),
                               has(&s, RTE_TCP_ACK_FLAG));
        }
        rte_pktmbuf_free(m);
        return;
    }
    tcp_defer(c); /* pins c until the deferred pass; also schedules its output */
    if (c->state == DP_TCP_SYN_SENT)
        input_syn_sent(c, &s);
    else
        input_synchronized(c, &s);
    rte_pktmbuf_free(m);
}

void dp_tcp_input(struct dp_lcore *lc, struct rte_mbuf *m, unsigned ihl)
{
    input_segment(lc, m, ihl, NULL);
}

void dp_tcp_input_capture(struct dp_lcore *lc, struct rte_mbuf *m, unsigned ihl, enum dp_flow_class cls)
{
    struct dp_tcp *t = tcp_of(lc);
    struct dp_tcp_listener *l = t != NULL && cls < DP_FLOW_N_CLASSES ? &t->capture[cls] : NULL;

    if (l == NULL || !l->in_use) { /* nobody captures this class: route it as it is */
        dp_count(lc, DP_CNT_TCP_CAPTURE_UNCLAIMED);
        dp_ip4_forward(lc, m);
        return;
    }
    dp_count(lc, DP_CNT_TCP_CAPTURED);
    input_segment(lc, m, ihl, l);
}
