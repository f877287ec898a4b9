/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TCP timers on a per-lcore wheel of 1 ms slots. A block is in the wheel at most once, at the earliest of its
 * deadlines (retransmission, delayed ACK, persist, keepalive, TIME-WAIT). Deadlines that move later leave the entry
 * where it is: it fires early, finds nothing due, and re-arms itself. Deadlines beyond one turn of the wheel stay in
 * their slot until their turn comes.
 *
 * RTO follows RFC 6298 (SRTT/RTTVAR, Karn's rule, exponential backoff), with rto_min from the config.
 */
#include <errno.h>

#include "dpdk/tcp_impl.h"

static void wheel_unlink(struct dp_tcp *t, struct mesh_conn *c)
{
    struct mesh_conn **slot = &t->wheel[c->timer.armed_ms % TCP_WHEEL_SLOTS];

    if (c->timer.prev != NULL)
        c->timer.prev->timer.next = c->timer.next;
    else
        *slot = c->timer.next;
    if (c->timer.next != NULL)
        c->timer.next->timer.prev = c->timer.prev;
    c->timer.next = c->timer.prev = NULL;
    c->timer.armed_ms = 0;
    t->timers_armed--;
}

static void wheel_insert(struct dp_tcp *t, struct mesh_conn *c, uint64_t at)
{
    struct mesh_conn **slot;

    if (at < t->wheel_ms)
        at = t->wheel_ms; /* already due: the next run picks it up */
    slot = &t->wheel[at % TCP_WHEEL_SLOTS];
    c->timer.armed_ms = at;
    c->timer.prev = NULL;
    c->timer.next = *slot;
    if (*slot != NULL)
        (*slot)->timer.prev = c;
    *slot = c;
    t->timers_armed++;
}

static uint64_t timer_next_deadline(const struct mesh_conn *c)
{
    uint64_t d[] = {c->rtx_at, c->delack_at, c->persist_at, c->keepalive_at, c->timewait_at};
    uint64_t next = 0;
    for (unsigned i = 0; i < sizeof(d) / sizeof(d[0]); i++)
        if (d[i] != 0 && (next == 0 || d[i] < next))
            next = d[i];
    return next;
}

void tcp_timer_cancel(struct mesh_conn *c)
{
    if (c->timer.armed_ms != 0)
        wheel_unlink(tcp_of(c->lc), c);
}

void tcp_timer_update(struct mesh_conn *c)
{
    struct dp_tcp *t = tcp_of(c->lc);
    uint64_t next = timer_next_deadline(c);

    if (next == 0) {
        tcp_timer_cancel(c);
        return;
    }
    if (c->timer.armed_ms != 0) {
        if (c->timer.armed_ms <= next)
            return; /* fires early and re-arms */
        wheel_unlink(t, c);
    }
    wheel_insert(t, c, next);
}

static uint32_t timer_rto_now(const struct mesh_conn *c)
{
    const struct dp_tcp_config *cfg = &tcp_of(c->lc)->cfg;
    uint64_t rto = (uint64_t)RTE_MAX(c->rto_ms, cfg->rto_min_ms) << c->backoff;
    return (uint32_t)RTE_MIN(rto, (uint64_t)cfg->rto_max_ms);
}

void tcp_rto_arm(struct mesh_conn *c)
{
    c->rtx_at = c->lc->now_ms + timer_rto_now(c);
    tcp_timer_update(c);
}

void tcp_rtt_sample(struct mesh_conn *c, uint32_t rtt_ms)
{
    const struct dp_tcp_config *cfg = &tcp_of(c->lc)->cfg;
    uint32_t r = rtt_ms ? rtt_ms * 1000u : 100u; /* a sample under the 1 ms clock tick counts as 100 us */
    uint32_t rto_us;

    if (c->srtt_us == 0) { /* RFC 6298 (2.2) */
        c->srtt_us = r;
        c->rttvar_us = r / 2;
    } else {               /* (2.3) */
        uint32_t delta = c->srtt_us > r ? c->srtt_us - r : r - c->srtt_us;
        c->rttvar_us = (3 * c->rttvar_us + delta) / 4;
        c->srtt_us = (7 * c->srtt_us + r) / 8;
    }
    rto_us = c->srtt_us + RTE_MAX(1000u, 4 * c->rttvar_us);
    c->rto_ms = RTE_MAX(cfg->rto_min_ms, (rto_us + 999) / 1000);
    c->rto_ms = RTE_MIN(c->rto_ms, cfg->rto_max_ms);
}

void tcp_keepalive_arm(struct mesh_conn *c)
{
    if (c->ka_idle_ms == 0 || (c->state != DP_TCP_ESTABLISHED && c->state != DP_TCP_CLOSE_WAIT &&
                               c->state != DP_TCP_FIN_WAIT_2)) {
        c->keepalive_at = 0;
        return;
    }
    c->keepalive_at = c->last_rx_ms + (c->ka_sent ? c->ka_intvl_ms : c->ka_idle_ms);
    if (c->keepalive_at <= c->lc->now_ms)
        c->keepalive_at = c->lc->now_ms + 1;
    tcp_timer_update(c);
}

/* ---- expiry handlers ---- */

static void timer_on_rto(struct mesh_conn *c)
{
    struct dp_lcore *lc = c->lc;

    c->rtx_at = 0;
    if (!SEQ_LT(c->snd_una, c->snd_max))
        return;
    c->retries++;
    switch (c->state) {
    case DP_TCP_SYN_SENT:
        if (c->retries > TCP_SYN_RETRIES) {
            dp_count(lc, DP_CNT_TCP_RTX_TIMEOUT);
            tcp_conn_fail(c, -ETIMEDOUT);
            return;
        }
        c->backoff++;
        dp_count(lc, DP_CNT_TCP_RTO);
        tcp_send_syn(c, false);
        return;
    case DP_TCP_SYN_RECEIVED:
        if (c->retries > TCP_SYN_RETRIES) {
            dp_count(lc, DP_CNT_TCP_RTX_TIMEOUT);
            tcp_conn_fail(c, -ETIMEDOUT);
            return;
        }
        c->backoff++;
        dp_count(lc, DP_CNT_TCP_RTO);
        tcp_send_syn(c, true);
        return;
    default:
        break;
    }
    if (c->retries > TCP_DATA_RETRIES) {
        dp_count(lc, DP_CNT_TCP_RTX_TIMEOUT);
        tcp_send_rst_for(c);
        tcp_conn_fail(c, -ETIMEDOUT);
        return;
    }
    dp_count(lc, DP_CNT_TCP_RTO);
    /* RFC 5681 §3.1 (4): ssthresh from the flight once per loss episode; cwnd to one segment; go back to snd_una */
    if (c->backoff == 0)
        tcp_cc_on_loss(c);
    c->cwnd = c->mss;
    c->flags &= ~(TCPF_IN_RECOVERY | TCPF_RTT_TIMING);
    c->recover = c->snd_max;
    c->n_sack = 0; /* RFC 6675 §5.1: SACK state may be stale after a timeout */
    c->high_rxt = c->snd_una;
    c->dupacks = 0;
    c->snd_nxt = c->snd_una;
    c->backoff = (uint8_t)RTE_MIN(c->backoff + 1, 16);
    tcp_output(c);
    tcp_rto_arm(c);
}

static void timer_on_persist(struct mesh_conn *c)
{
    c->persist_at = 0;
    if (!SEQ_LT(c->snd_nxt, c->snd_una + c->snd.bytes) || SEQ_LT(c->snd_una, c->snd_max))
        return;
    if (c->snd_wnd > 0) { /* a window below a segment: send into it now */
        tcp_output_force(c);
        return;
    }
    tcp_send_probe(c, false);
    c->backoff = (uint8_t)RTE_MIN(c->backoff + 1, 16);
    c->persist_at = c->lc->now_ms + timer_rto_now(c);
}

static void timer_on_keepalive(struct mesh_conn *c)
{
    uint64_t now = c->lc->now_ms;

    c->keepalive_at = 0;
    if (c->ka_sent == 0 && now - c->last_rx_ms < c->ka_idle_ms) { /* the peer spoke since: idle again */
        tcp_keepalive_arm(c);
        return;
    }
    if (c->ka_sent >= c->ka_probes) {
        dp_count(c->lc, DP_CNT_TCP_KEEPALIVE_TIMEOUT);
        tcp_send_rst_for(c);
        tcp_conn_fail(c, -ETIMEDOUT);
        return;
    }
    c->ka_sent++;
    tcp_send_probe(c, true);
    c->keepalive_at = now + c->ka_intvl_ms;
}

static void timer_fire(struct mesh_conn *c, uint64_t now)
{
    if (c->timewait_at != 0 && c->timewait_at <= now) {
        c->timewait_at = 0;
        tcp_set_state(c, DP_TCP_CLOSED);
        if (c->flags & TCPF_OWNED)
            tcp_defer(c); /* the owner still has bytes to read: it hears on_closed after them */
        else
            tcp_release_or_defer(c);
        return;
    }
    if (c->rtx_at != 0 && c->rtx_at <= now)
        timer_on_rto(c);
    if (c->state == DP_TCP_CLOSED)
        return;
    if (c->persist_at != 0 && c->persist_at <= now)
        timer_on_persist(c);
    if (c->delack_at != 0 && c->delack_at <= now) {
        c->delack_at = 0;
        c->flags |= TCPF_ACK_NOW;
        tcp_defer(c);
    }
    if (c->keepalive_at != 0 && c->keepalive_at <= now)
        timer_on_keepalive(c);
    if (c->state != DP_TCP_CLOSED)
        tcp_timer_update(c);
}

void dp_tcp_timers(struct dp_lcore *lc)
{
    struct dp_tcp *t = tcp_of(lc);
    uint64_t now = lc->now_ms;
    uint64_t steps;

    if (t == NULL || now < t->wheel_ms)
        return;
    steps = RTE_MIN(now - t->wheel_ms + 1, (uint64_t)TCP_WHEEL_SLOTS);
    for (uint64_t i = 0; i < steps; i++) {
        uint64_t ms = t->wheel_ms + i;
        struct mesh_conn *list = t->wheel[ms % TCP_WHEEL_SLOTS];
        t->wheel[ms % TCP_WHEEL_SLOTS] = NULL;
        while (list != NULL) {
            struct mesh_conn *c = list;
            list = c->timer.next;
            c->timer.next = c->timer.prev = NULL;
            t->timers_armed--;
            if (c->timer.armed_ms > now) { /* a later turn of the wheel */
                uint64_t at = c->timer.armed_ms;
                c->timer.armed_ms = 0;
                wheel_insert(t, c, at);
                continue;
            }
            c->timer.armed_ms = 0;
            timer_fire(c, now);
        }
    }
    t->wheel_ms = now + 1;
}
