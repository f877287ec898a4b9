/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Congestion control: slow start and congestion avoidance (RFC 5681) with NewReno's window rules (RFC 6582) or
 * CUBIC (RFC 9438). Loss recovery itself (which segments to resend) lives in tcp_input.c and tcp_output.c; this
 * module only sizes cwnd and ssthresh. Windows are in bytes; CUBIC's state is in segments, as the RFC writes it.
 */
#include <math.h>

#include "dpdk/tcp_impl.h"

#define CUBIC_C 0.4
#define CUBIC_BETA 0.7

uint32_t tcp_flight(const struct mesh_conn *c)
{
    return c->snd_max - c->snd_una;
}

void tcp_cc_init(struct mesh_conn *c)
{
    /* RFC 6928 initial window, bounded by RFC 5681's 4 segments for tiny MSS */
    c->cwnd = (uint32_t)TCP_INITIAL_CWND_SEGS * c->mss;
    c->ssthresh = UINT32_MAX / 2;
    c->recover = c->iss; /* RFC 6582 §3.2 (1) */
    c->cubic_wmax = 0;
    c->cubic_epoch_ms = 0;
}

static void cc_reno_ca(struct mesh_conn *c, uint32_t acked)
{
    /* RFC 5681 §3.1: about one segment per RTT, counted in bytes acked (appropriate byte counting) */
    c->bytes_acked_ca += acked;
    if (c->bytes_acked_ca >= c->cwnd) {
        c->bytes_acked_ca -= c->cwnd;
        c->cwnd += c->mss;
    }
}

static void cc_cubic_ca(struct mesh_conn *c, uint32_t acked)
{
    double mss = c->mss, cwnd = c->cwnd / mss, t, target, rtt_s;
    uint64_t now = c->lc->now_ms;

    if (c->cubic_epoch_ms == 0) { /* RFC 9438 §4.2: a new congestion-avoidance epoch */
        c->cubic_epoch_ms = now;
        c->cubic_west = cwnd;
        if (cwnd < c->cubic_wmax) {
            c->cubic_k = cbrt((c->cubic_wmax - cwnd) / CUBIC_C);
            c->cubic_origin = c->cubic_wmax;
        } else {
            c->cubic_k = 0;
            c->cubic_origin = cwnd;
        }
    }
    rtt_s = c->srtt_us ? c->srtt_us / 1e6 : 0.001;
    t = (double)(now - c->cubic_epoch_ms) / 1000.0;
    target = c->cubic_origin + CUBIC_C * pow(t + rtt_s - c->cubic_k, 3);   /* W_cubic(t + RTT), eq. 1 */
    /* Reno-friendly estimate, eq. 4 with alpha = 3 (1 - beta) / (1 + beta) */
    c->cubic_west += 3.0 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA) * (acked / mss) / cwnd;
    if (c->cubic_west > target)
        target = c->cubic_west;
    if (target > cwnd) {
        /* grow by (target - cwnd) / cwnd per segment acked, at most 1.5x per RTT (§4.2) */
        double inc = (target - cwnd) / cwnd * (acked / mss);
        if (target > 1.5 * cwnd)
            inc = 0.5 * (acked / mss);
        c->bytes_acked_ca += (uint32_t)(inc * mss);
    }
    if (c->bytes_acked_ca >= c->mss) {
        c->cwnd += c->bytes_acked_ca / c->mss * c->mss;
        c->bytes_acked_ca %= c->mss;
    }
}

void tcp_cc_on_ack(struct mesh_conn *c, uint32_t acked)
{
    if (c->cwnd < c->ssthresh) {
        /* slow start, at most one SMSS per ACK's worth under byte counting with L = 2 (RFC 3465) */
        c->cwnd += RTE_MIN(acked, 2u * c->mss);
        return;
    }
    if (tcp_of(c->lc)->cfg.cc == DP_TCP_CC_CUBIC)
        cc_cubic_ca(c, acked);
    else
        cc_reno_ca(c, acked);
}

void tcp_cc_on_loss(struct mesh_conn *c)
{
    uint32_t flight = tcp_flight(c);

    if (tcp_of(c->lc)->cfg.cc == DP_TCP_CC_CUBIC) {
        double cwnd = (double)c->cwnd / c->mss;
        /* fast convergence (RFC 9438 §4.7) */
        if (cwnd < c->cubic_last_wmax)
            c->cubic_wmax = cwnd * (1 + CUBIC_BETA) / 2;
        else
            c->cubic_wmax = cwnd;
        c->cubic_last_wmax = (uint32_t)cwnd;
        c->ssthresh = RTE_MAX((uint32_t)(c->cwnd * CUBIC_BETA), 2u * c->mss);
        c->cubic_epoch_ms = 0;
    } else {
        c->ssthresh = RTE_MAX(flight / 2, 2u * c->mss);   /* RFC 5681 eq. 4 */
    }
    c->bytes_acked_ca = 0;
}
