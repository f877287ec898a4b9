/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sender's SACK scoreboard (RFC 2018, RFC 6675): the ranges the peer reported holding above snd_una, kept
 * sorted and merged. When it overflows, the highest range is forgotten (only loss inference gets coarser).
 * IsLost(seq) is approximated as "an unSACKed byte below the highest SACKed byte", which is what RFC 6675's
 * DupThresh rule concludes once three segments' worth are SACKed above a hole.
 */
#include <string.h>

#include "dpdk/tcp_impl.h"

static void sack_insert(struct mesh_conn *c, uint32_t start, uint32_t end)
{
    struct tcp_sack_block *s = c->sack;
    int n = c->n_sack, i = 0;

    while (i < n && SEQ_LT(s[i].end, start))
        i++;
    /* merge every range that touches [start, end) into one at i */
    int j = i;
    while (j < n && SEQ_LEQ(s[j].start, end)) {
        start = SEQ_MIN(start, s[j].start);
        end = SEQ_MAX(end, s[j].end);
        j++;
    }
    if (j > i) { /* replace s[i..j) by one */
        s[i].start = start;
        s[i].end = end;
        memmove(&s[i + 1], &s[j], sizeof(*s) * (size_t)(n - j));
        c->n_sack = (uint8_t)(n - (j - i) + 1);
        return;
    }
    if (n == TCP_SACK_MAX) {
        if (i == n)
            return;
        n--; /* forget the highest */
    }
    memmove(&s[i + 1], &s[i], sizeof(*s) * (size_t)(n - i));
    s[i].start = start;
    s[i].end = end;
    c->n_sack = (uint8_t)(n + 1);
}

void tcp_sack_update(struct mesh_conn *c, const struct tcp_sack_block *blocks, int n)
{
    for (int i = 0; i < n; i++) {
        uint32_t start = blocks[i].start, end = blocks[i].end;
        /* RFC 2018: ignore blocks that are empty, below snd_una (D-SACK) or beyond what we sent */
        if (!SEQ_LT(start, end) || SEQ_LEQ(end, c->snd_una) || SEQ_GT(end, c->snd_max))
            continue;
        if (SEQ_LT(start, c->snd_una))
            start = c->snd_una;
        sack_insert(c, start, end);
    }
}

void tcp_sack_trim(struct mesh_conn *c)
{
    int k = 0;
    for (int i = 0; i < c->n_sack; i++) {
        if (SEQ_LEQ(c->sack[i].end, c->snd_una))
            continue;
        c->sack[k] = c->sack[i];
        if (SEQ_LT(c->sack[k].start, c->snd_una))
            c->sack[k].start = c->snd_una;
        k++;
    }
    c->n_sack = (uint8_t)k;
}

uint32_t tcp_sack_bytes(const struct mesh_conn *c)
{
    uint32_t b = 0;
    for (int i = 0; i < c->n_sack; i++)
        b += c->sack[i].end - c->sack[i].start;
    return b;
}

uint32_t tcp_sack_high(const struct mesh_conn *c)
{
    return c->n_sack ? c->sack[c->n_sack - 1].end : c->snd_una;
}

/* Unsacked bytes in [from, to). */
static uint32_t sack_holes_between(const struct mesh_conn *c, uint32_t from, uint32_t to)
{
    uint32_t holes = 0, pos = from;

    if (!SEQ_LT(from, to))
        return 0;
    for (int i = 0; i < c->n_sack && SEQ_LT(pos, to); i++) {
        if (SEQ_LEQ(c->sack[i].end, pos))
            continue;
        if (SEQ_GT(c->sack[i].start, pos))
            holes += SEQ_MIN(c->sack[i].start, to) - pos;
        pos = SEQ_MAX(pos, c->sack[i].end);
    }
    if (SEQ_LT(pos, to))
        holes += to - pos;
    return holes;
}

uint32_t tcp_sack_pipe(const struct mesh_conn *c)
{
    uint32_t high = tcp_sack_high(c);
    /* in flight above every SACK, plus retransmissions into the holes not yet answered */
    uint32_t above = SEQ_GT(c->snd_max, high) ? c->snd_max - high : 0;
    uint32_t rxt = SEQ_GT(c->high_rxt, c->snd_una) ? sack_holes_between(c, c->snd_una, SEQ_MIN(c->high_rxt, high)) : 0;
    return above + rxt;
}

bool tcp_sack_next_hole(const struct mesh_conn *c, uint32_t *seq, uint32_t *len)
{
    uint32_t high = tcp_sack_high(c);
    uint32_t pos = SEQ_MAX(c->snd_una, c->high_rxt);

    if (c->n_sack == 0)
        return false;
    for (int i = 0; i < c->n_sack; i++) {
        if (SEQ_LEQ(c->sack[i].end, pos))
            continue;
        if (SEQ_GT(c->sack[i].start, pos)) {
            *seq = pos;
            *len = c->sack[i].start - pos;
            return SEQ_LT(pos, high);
        }
        pos = c->sack[i].end;
    }
    return false;
}
