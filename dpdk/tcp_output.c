/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TCP output: building segments (make_*), sending them (send_*), and the output decision (tcp_output) that sends
 * what the congestion and receive windows allow, SACK-driven retransmissions first (RFC 6675 NextSeg), then new
 * data, the FIN, and an ACK when one is due. Every segment carries an ACK except a SYN and a reply RST to a
 * segment without one. Segments are single mbufs (payload copied from the send buffer) with a software checksum.
 */
#include <string.h>

#include <rte_ip.h>
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

struct tcp_seg_opts {
    bool syn;
    uint16_t mss;
    bool ws;
    uint8_t wscale;
    bool sack_perm;
    bool ts;
    uint32_t ts_val, ts_ecr;
    int n_sack;
    struct tcp_sack_block sack[4];
};

static uint8_t *opt_put_ts(uint8_t *p, uint32_t val, uint32_t ecr)
{
    *p++ = TCPOPT_TS;
    *p++ = 10;
    val = rte_cpu_to_be_32(val);
    ecr = rte_cpu_to_be_32(ecr);
    memcpy(p, &val, 4);
    memcpy(p + 4, &ecr, 4);
    return p + 8;
}

/* Write options; returns their length, a multiple of 4 and at most 40. */
static unsigned make_options(uint8_t *start, const struct tcp_seg_opts *o)
{
    uint8_t *p = start;

    if (o->syn) {
        uint16_t mss = rte_cpu_to_be_16(o->mss);
        *p++ = TCPOPT_MSS;
        *p++ = 4;
        memcpy(p, &mss, 2);
        p += 2;
        if (o->sack_perm && o->ts) {
            *p++ = TCPOPT_SACK_PERM;
            *p++ = 2;
            p = opt_put_ts(p, o->ts_val, o->ts_ecr);
        } else if (o->ts) {
            *p++ = TCPOPT_NOP;
            *p++ = TCPOPT_NOP;
            p = opt_put_ts(p, o->ts_val, o->ts_ecr);
        } else if (o->sack_perm) {
            *p++ = TCPOPT_NOP;
            *p++ = TCPOPT_NOP;
            *p++ = TCPOPT_SACK_PERM;
            *p++ = 2;
        }
        if (o->ws) {
            *p++ = TCPOPT_NOP;
            *p++ = TCPOPT_WS;
            *p++ = 3;
            *p++ = o->wscale;
        }
    } else {
        if (o->ts) {
            *p++ = TCPOPT_NOP;
            *p++ = TCPOPT_NOP;
            p = opt_put_ts(p, o->ts_val, o->ts_ecr);
        }
        if (o->n_sack > 0) {
            *p++ = TCPOPT_NOP;
            *p++ = TCPOPT_NOP;
            *p++ = TCPOPT_SACK;
            *p++ = (uint8_t)(2 + 8 * o->n_sack);
            for (int i = 0; i < o->n_sack; i++) {
                uint32_t s = rte_cpu_to_be_32(o->sack[i].start), e = rte_cpu_to_be_32(o->sack[i].end);
                memcpy(p, &s, 4);
                memcpy(p + 4, &e, 4);
                p += 8;
            }
        }
    }
    return (unsigned)(p - start);
}

/* Checksums in software, or left to the egress device when it offers both (the pseudo-header sum goes first). */
static void tcp_checksum(struct dp_lcore *lc, struct rte_mbuf *m, struct rte_ipv4_hdr *ip, struct rte_tcp_hdr *th)
{
    const struct dp_nexthop *nh = dp_route_lookup(lc->stack, rte_be_to_cpu_32(ip->dst_addr));

    if (nh != NULL && lc->stack->ports[nh->port].tx_cksum_offload) {
        m->l2_len = RTE_ETHER_HDR_LEN;
        m->l3_len = sizeof(*ip);
        m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_TCP_CKSUM;
        ip->hdr_checksum = 0;
        th->cksum = rte_ipv4_phdr_cksum(ip, m->ol_flags);
        return;
    }
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    th->cksum = rte_ipv4_udptcp_cksum(ip, th);
}

/*
 * Build a segment from parts; the payload, if any, is copied from c's send buffer at seq. Returns the mbuf at the
 * IP header, or NULL (counted) when no mbuf is left.
 */
static struct rte_mbuf *make_segment(struct dp_lcore *lc, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport,
                                     uint32_t seq, uint32_t ack, uint8_t flags, uint16_t win,
                                     const struct tcp_seg_opts *o, struct mesh_conn *payload_from, uint32_t len)
{
    uint8_t opts[40];
    unsigned olen = o ? make_options(opts, o) : 0;
    unsigned hlen = sizeof(struct rte_tcp_hdr) + olen;
    struct rte_mbuf *m = rte_pktmbuf_alloc(lc->stack->pool);
    struct rte_ipv4_hdr *ip;
    struct rte_tcp_hdr *th;
    static uint16_t ip_id;

    if (m == NULL) {
        dp_count(lc, DP_CNT_MBUF_ALLOC_FAILED);
        return NULL;
    }
    ip = (struct rte_ipv4_hdr *)rte_pktmbuf_append(m, (uint16_t)(sizeof(*ip) + hlen + len));
    if (ip == NULL) {
        rte_pktmbuf_free(m);
        dp_count(lc, DP_CNT_MBUF_ALLOC_FAILED);
        return NULL;
    }
    th = (struct rte_tcp_hdr *)(ip + 1);
    ip->version_ihl = RTE_IPV4_VHL_DEF;
    ip->type_of_service = 0;
    ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof(*ip) + hlen + len));
    ip->packet_id = rte_cpu_to_be_16(ip_id++);
    ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
    ip->time_to_live = DP_DEFAULT_TTL;
    ip->next_proto_id = IPPROTO_TCP;
    ip->hdr_checksum = 0;
    ip->src_addr = rte_cpu_to_be_32(lip);
    ip->dst_addr = rte_cpu_to_be_32(rip);
    th->src_port = rte_cpu_to_be_16(lport);
    th->dst_port = rte_cpu_to_be_16(rport);
    th->sent_seq = rte_cpu_to_be_32(seq);
    th->recv_ack = rte_cpu_to_be_32(ack);
    th->data_off = (uint8_t)((hlen / 4) << 4);
    th->tcp_flags = flags;
    th->rx_win = rte_cpu_to_be_16(win);
    th->cksum = 0;
    th->tcp_urp = 0;
    if (olen)
        memcpy(th + 1, opts, olen);
    if (len)
        tcp_bufq_copy(&payload_from->snd, seq - payload_from->snd_una, len, (uint8_t *)th + hlen);
    tcp_checksum(lc, m, ip, th);
    return m;
}

static void send_segment(struct dp_lcore *lc, struct rte_mbuf *m)
{
    dp_count(lc, DP_CNT_TCP_TX);
    dp_ip4_output(lc, m);
}

static uint32_t tcp_ts_now(const struct mesh_conn *c)
{
    return (uint32_t)c->lc->now_ms + c->ts_offset;
}

uint16_t tcp_window_field(struct mesh_conn *c)
{
    uint32_t win = tcp_rcv_space(c);
    uint32_t shift = (c->flags & TCPF_WS_OK) ? c->rcv_wscale : 0;

    /* never move the right edge left (RFC 9293 §3.8.6), and move it right only by a useful amount: at least a
     * segment or half the buffer (receiver SWS avoidance, §3.8.6.2.2) */
    if (SEQ_LT(c->rcv_nxt + win, c->rcv_adv + RTE_MIN((uint32_t)c->mss, tcp_of(c->lc)->cfg.rcvbuf_max / 2))) {
        win = SEQ_GT(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
        win = (win + (1u << shift) - 1) & ~((1u << shift) - 1); /* scaling rounds up: the edge never moves left */
    } else {
        win &= ~((1u << shift) - 1); /* what the peer will see */
    }
    if ((win >> shift) > 65535)
        win = 65535u << shift;
    c->rcv_adv = c->rcv_nxt + win;
    return (uint16_t)(win >> shift);
}

static void conn_opts(struct mesh_conn *c, struct tcp_seg_opts *o, bool with_sack)
{
    memset(o, 0, sizeof(*o));
    if (c->flags & TCPF_TS_OK) {
        o->ts = true;
        o->ts_val = tcp_ts_now(c);
        o->ts_ecr = c->ts_recent;
    }
    if (with_sack && (c->flags & TCPF_SACK_OK) && c->ooo.n > 0)
        o->n_sack = tcp_ooo_sack_blocks(c, o->sack, o->ts ? 3 : 4);
}

uint32_t tcp_payload_max(const struct mesh_conn *c)
{
    /* RFC 6691: the MSS counts no TCP options, so the options we put on a segment come out of its payload */
    uint32_t opts = (c->flags & TCPF_TS_OK) ? 12 : 0;

    if ((c->flags & TCPF_SACK_OK) && c->ooo.n > 0) {
        struct tcp_sack_block b[4];
        int n = tcp_ooo_sack_blocks(c, b, (c->flags & TCPF_TS_OK) ? 3 : 4);
        if (n > 0)
            opts += 4 + 8 * (uint32_t)n;
    }
    return c->mss > opts + 1 ? c->mss - opts : 1;
}

/* Build and send one segment of c: len payload bytes at seq, with flags (ACK always added). */
static bool send_conn_segment(struct mesh_conn *c, uint32_t seq, uint32_t len, uint8_t flags)
{
    struct tcp_seg_opts o;
    struct rte_mbuf *m;

    conn_opts(c, &o, true);
    m = make_segment(c->lc, c->local_ip, c->local_port, c->remote_ip, c->remote_port, seq, c->rcv_nxt,
                     (uint8_t)(flags | RTE_TCP_ACK_FLAG), tcp_window_field(c), &o, c, len);
    if (m == NULL)
        return false;
    c->last_ack_sent = c->rcv_nxt;
    c->unacked_segs = 0;
    c->flags &= ~TCPF_ACK_NOW;
    c->delack_at = 0;
    send_segment(c->lc, m);
    return true;
}

void tcp_send_ack(struct mesh_conn *c)
{
    send_conn_segment(c, c->snd_nxt, 0, 0);
}

void tcp_send_syn(struct mesh_conn *c, bool with_ack)
{
    struct dp_tcp *t = tcp_of(c->lc);
    struct tcp_seg_opts o = {.syn = true, .mss = c->mss};
    struct rte_mbuf *m;
    uint16_t win;

    o.sack_perm = (c->flags & TCPF_SACK_OK) != 0;
    o.ts = (c->flags & TCPF_TS_OK) != 0;
    o.ts_val = tcp_ts_now(c);
    o.ts_ecr = with_ack ? c->ts_recent : 0;
    o.ws = (c->flags & TCPF_WS_OK) != 0;
    o.wscale = c->rcv_wscale;
    win = (uint16_t)RTE_MIN(t->cfg.rcvbuf_max, 65535u); /* never scaled in a SYN (RFC 7323 §2.2) */
    c->rcv_adv = c->rcv_nxt + win;
    c->last_ack_sent = c->rcv_nxt;
    m = make_segment(c->lc, c->local_ip, c->local_port, c->remote_ip, c->remote_port, c->iss, c->rcv_nxt,
                     (uint8_t)(RTE_TCP_SYN_FLAG | (with_ack ? RTE_TCP_ACK_FLAG : 0)), win, &o, NULL, 0);
    c->snd_nxt = c->iss + 1;
    c->snd_max = SEQ_MAX(c->snd_max, c->snd_nxt);
    if (m != NULL)
        send_segment(c->lc, m);
    tcp_rto_arm(c);
}

void tcp_send_rst_for(struct mesh_conn *c)
{
    struct rte_mbuf *m = make_segment(c->lc, c->local_ip, c->local_port, c->remote_ip, c->remote_port, c->snd_nxt,
                                      c->rcv_nxt, RTE_TCP_RST_FLAG | RTE_TCP_ACK_FLAG, 0, NULL, NULL, 0);
    if (m == NULL)
        return;
    dp_count(c->lc, DP_CNT_TCP_RST_OUT);
    send_segment(c->lc, m);
}

void tcp_send_rst_reply(struct dp_lcore *lc, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport,
                        uint32_t seg_seq, uint32_t seg_ack, uint32_t seg_len, bool had_ack)
{
    struct rte_mbuf *m;

    /* RFC 9293 §3.10.7.1: <SEQ=SEG.ACK><CTL=RST>, or <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> */
    if (had_ack)
        m = make_segment(lc, lip, lport, rip, rport, seg_ack, 0, RTE_TCP_RST_FLAG, 0, NULL, NULL, 0);
    else
        m = make_segment(lc, lip, lport, rip, rport, 0, seg_seq + seg_len, RTE_TCP_RST_FLAG | RTE_TCP_ACK_FLAG, 0,
                         NULL, NULL, 0);
    if (m == NULL)
        return;
    dp_count(lc, DP_CNT_TCP_RST_OUT);
    send_segment(lc, m);
}

void tcp_send_cookie_synack(struct dp_lcore *lc, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport,
                            uint32_t isn, uint32_t irs, uint16_t mss, uint32_t ts_val, bool ts_ok)
{
    struct tcp_seg_opts o = {.syn = true, .mss = mss, .ts = ts_ok, .ts_val = (uint32_t)lc->now_ms, .ts_ecr = ts_val};
    struct rte_mbuf *m = make_segment(lc, lip, lport, rip, rport, isn, irs + 1, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG,
                                      (uint16_t)RTE_MIN(tcp_of(lc)->cfg.rcvbuf_max, 65535u), &o, NULL, 0);
    if (m == NULL)
        return;
    dp_count(lc, DP_CNT_TCP_SYNCOOKIE_SENT);
    send_segment(lc, m);
}

void tcp_send_probe(struct mesh_conn *c, bool keepalive)
{
    /* an old sequence number with no data: the peer must answer with an ACK carrying its window */
    send_conn_segment(c, c->snd_una - 1, 0, 0);
    dp_count(c->lc, keepalive ? DP_CNT_TCP_KEEPALIVE_PROBE : DP_CNT_TCP_ZERO_WINDOW_PROBE);
}

/* The sequence number just past the queued data. */
static uint32_t tcp_data_end(const struct mesh_conn *c)
{
    return c->snd_una + c->snd.bytes;
}

void tcp_retransmit(struct mesh_conn *c, uint32_t seq, uint32_t max_len)
{
    uint32_t end = tcp_data_end(c);
    uint32_t len = SEQ_LT(seq, end) ? RTE_MIN(RTE_MIN(max_len, tcp_payload_max(c)), end - seq) : 0;
    uint8_t flags = 0;

    if ((c->flags & TCPF_FIN_SENT) && seq + len == end && SEQ_LT(end, c->snd_max))
        flags = RTE_TCP_FIN_FLAG;
    if (len == 0 && flags == 0)
        return;
    if ((c->flags & TCPF_RTT_TIMING) && SEQ_LEQ(seq, c->rtt_seq) && SEQ_LT(c->rtt_seq, seq + len + 1))
        c->flags &= ~TCPF_RTT_TIMING; /* Karn: no sample from a retransmitted segment */
    c->flags |= TCPF_RETRANSMITTED;
    if (send_conn_segment(c, seq, len, flags))
        dp_count(c->lc, DP_CNT_TCP_RETRANSMIT);
}

/* Send new data, and the FIN after it, within budget bytes of the congestion window. */
static bool output_new_data(struct mesh_conn *c, uint32_t budget, bool force)
{
    uint32_t end = tcp_data_end(c);
    bool sent = false;

    while (true) {
        uint32_t unsent = SEQ_LT(c->snd_nxt, end) ? end - c->snd_nxt : 0;
        uint32_t wnd_edge = c->snd_una + c->snd_wnd;
        uint32_t in_wnd = SEQ_LT(c->snd_nxt, wnd_edge) ? wnd_edge - c->snd_nxt : 0;
        uint32_t seg_max = tcp_payload_max(c);
        uint32_t len = RTE_MIN(RTE_MIN(unsent, in_wnd), RTE_MIN(budget, seg_max));
        bool fin = false;
        uint8_t flags = 0;

        /* the FIN goes after the last byte, when it is new or was rewound past by an RTO */
        if ((c->flags & TCPF_FIN_QUEUED) && (!(c->flags & TCPF_FIN_SENT) || SEQ_LT(c->snd_nxt, c->snd_max)) &&
            len == unsent && in_wnd > len)
            fin = true;
        if (len == 0 && !fin)
            break;
        /* sender SWS avoidance (RFC 9293 §3.8.6.2.1) without Nagle: a full segment, all we have, or half the
         * largest window the peer offered */
        if (!fin && !force && len < seg_max && len < unsent && len < c->max_snd_wnd / 2)
            break;
        force = false;
        if (fin)
            flags = RTE_TCP_FIN_FLAG | RTE_TCP_PSH_FLAG;
        else if (len == unsent)
            flags = RTE_TCP_PSH_FLAG;
        if (!(c->flags & TCPF_RTT_TIMING) && !(c->flags & TCPF_TS_OK) && len > 0) {
            c->flags |= TCPF_RTT_TIMING;
            c->rtt_seq = c->snd_nxt;
            c->rtt_start_ms = c->lc->now_ms;
        }
        if (!send_conn_segment(c, c->snd_nxt, len, flags))
            break;
        if (SEQ_LT(c->snd_nxt, c->snd_max))
            dp_count(c->lc, DP_CNT_TCP_RETRANSMIT); /* resending after an RTO rewound snd_nxt */
        c->snd_nxt += len + (fin ? 1 : 0);
        c->snd_max = SEQ_MAX(c->snd_max, c->snd_nxt);
        budget -= RTE_MIN(budget, len);
        sent = true;
        if (fin) {
            c->flags |= TCPF_FIN_SENT;
            c->snd_max = SEQ_MAX(c->snd_max, end + 1);
            if (c->state == DP_TCP_ESTABLISHED)
                tcp_set_state(c, DP_TCP_FIN_WAIT_1);
            else if (c->state == DP_TCP_CLOSE_WAIT)
                tcp_set_state(c, DP_TCP_LAST_ACK);
            break;
        }
    }
    return sent;
}

void tcp_output_force(struct mesh_conn *c)
{
    output_new_data(c, RTE_MAX(c->cwnd, (uint32_t)c->mss), true);
    if (SEQ_LT(c->snd_una, c->snd_max) && c->rtx_at == 0)
        tcp_rto_arm(c);
}

void tcp_output(struct mesh_conn *c)
{
    bool sent = false;
    uint32_t flight, cwnd_budget;

    switch (c->state) {
    case DP_TCP_ESTABLISHED:
    case DP_TCP_CLOSE_WAIT:
    case DP_TCP_FIN_WAIT_1:
    case DP_TCP_CLOSING:
    case DP_TCP_LAST_ACK:
        break;
    case DP_TCP_FIN_WAIT_2:
    case DP_TCP_TIME_WAIT:
        if (c->flags & TCPF_ACK_NOW)
            tcp_send_ack(c);
        return;
    default:
        return;
    }

    if ((c->flags & (TCPF_IN_RECOVERY | TCPF_SACK_OK)) == (TCPF_IN_RECOVERY | TCPF_SACK_OK)) {
        uint32_t seq, len;
        /* RFC 6675 §5 (C): while the pipe has room, holes first */
        while (tcp_sack_pipe(c) + c->mss <= c->cwnd && tcp_sack_next_hole(c, &seq, &len)) {
            tcp_retransmit(c, seq, len);
            c->high_rxt = seq + RTE_MIN(len, tcp_payload_max(c));
            sent = true;
        }
        flight = tcp_sack_pipe(c);
    } else {
        flight = c->snd_nxt - c->snd_una;
    }
    cwnd_budget = c->cwnd > flight ? c->cwnd - flight : 0;
    if (output_new_data(c, cwnd_budget, false))
        sent = true;

    if (!sent && (c->flags & TCPF_ACK_NOW))
        tcp_send_ack(c);
    if (SEQ_LT(c->snd_una, c->snd_max)) {
        if (c->rtx_at == 0)
            tcp_rto_arm(c);
        c->persist_at = 0;
    } else if (SEQ_LT(c->snd_nxt, tcp_data_end(c)) && c->persist_at == 0) {
        /* data waits with nothing in flight: a closed or too small window. Probe it (zero window) or send what
         * fits (the SWS override timeout of RFC 9293 §3.8.6.2.1) when the persist timer fires. */
        c->persist_at = c->lc->now_ms + RTE_MAX(c->rto_ms, tcp_of(c->lc)->cfg.rto_min_ms);
        tcp_timer_update(c);
    }
}
