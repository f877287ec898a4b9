/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Out-of-order reassembly. Segments above rcv_nxt are copied into buffer mbufs (seq kept in hash.usr) and kept in
 * a list sorted by sequence number with no two entries overlapping: on insert, what an existing entry already
 * covers is cut from the new data, so every byte is stored once. When rcv_nxt reaches the head, the contiguous
 * run moves to the receive queue. The queue counts against the receive window; data beyond it is dropped.
 */
#include <string.h>

#include "dpdk/tcp_impl.h"

static uint32_t ooo_seq(const struct rte_mbuf *m)
{
    return m->hash.usr;
}

static uint32_t ooo_end(const struct rte_mbuf *m)
{
    return m->hash.usr + m->data_len;
}

/* Store [seq, seq+len) (which overlaps nothing) after prev (NULL: at the head). False if out of buffers. */
static bool ooo_store(struct mesh_conn *c, struct rte_mbuf **link, uint32_t seq, const uint8_t *p, uint32_t len)
{
    struct rte_mempool *pool = tcp_of(c->lc)->bufpool;

    while (len > 0) {
        struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
        uint32_t k;
        if (m == NULL)
            return false;
        m->data_off = 0;
        k = RTE_MIN(len, (uint32_t)rte_pktmbuf_tailroom(m));
        memcpy(rte_pktmbuf_mtod(m, uint8_t *), p, k);
        m->data_len = (uint16_t)k;
        m->pkt_len = k;
        m->hash.usr = seq;
        m->next = *link;
        *link = m;
        link = &m->next;
        c->ooo.bytes += k;
        c->ooo.n++;
        seq += k;
        p += k;
        len -= k;
    }
    return true;
}

bool tcp_ooo_insert(struct mesh_conn *c, uint32_t seq, const uint8_t *p, uint32_t len)
{
    struct rte_mbuf **link = &c->ooo.head;
    uint32_t end = seq + len;

    while (len > 0) {
        struct rte_mbuf *m = *link;
        if (m == NULL || SEQ_LEQ(end, ooo_seq(m)))
            return ooo_store(c, link, seq, p, len);     /* fits entirely before m */
        if (SEQ_GEQ(seq, ooo_end(m))) {                 /* entirely after m */
            link = &m->next;
            continue;
        }
        if (SEQ_LT(seq, ooo_seq(m))) {                  /* the part before m */
            uint32_t k = ooo_seq(m) - seq;
            if (!ooo_store(c, link, seq, p, k))
                return false;
            while (*link != m)
                link = &(*link)->next;
            seq += k;
            p += k;
            len -= k;
        }
        /* skip what m already holds */
        if (SEQ_GEQ(seq + len, ooo_end(m))) {
            uint32_t k = ooo_end(m) - seq;
            seq += k;
            p += k;
            len -= k;
        } else {
            len = 0;
        }
        link = &m->next;
    }
    return true;
}

uint32_t tcp_ooo_drain(struct mesh_conn *c)
{
    struct dp_tcp *t = tcp_of(c->lc);
    uint32_t moved = 0;
    struct rte_mbuf *m;

    while ((m = c->ooo.head) != NULL && SEQ_LEQ(ooo_seq(m), c->rcv_nxt)) {
        c->ooo.head = m->next;
        m->next = NULL;
        c->ooo.n--;
        c->ooo.bytes -= m->data_len;
        if (SEQ_GT(ooo_end(m), c->rcv_nxt)) {
            uint32_t skip = c->rcv_nxt - ooo_seq(m);
            uint32_t k = m->data_len - skip;
            uint32_t got = tcp_bufq_append(&c->rcvq, t->bufpool, rte_pktmbuf_mtod_offset(m, uint8_t *, skip), k,
                                           UINT32_MAX);
            c->rcv_nxt += got;
            moved += got;
            if (got < k) { /* out of buffers: keep the rest for later */
                rte_pktmbuf_adj(m, (uint16_t)(skip + got));
                m->hash.usr = c->rcv_nxt;
                m->next = c->ooo.head;
                c->ooo.head = m;
                c->ooo.n++;
                c->ooo.bytes += m->data_len;
                break;
            }
        }
        rte_pktmbuf_free_seg(m);
    }
    return moved;
}

int tcp_ooo_sack_blocks(const struct mesh_conn *c, struct tcp_sack_block *out, int max)
{
    int n = 0;
    for (const struct rte_mbuf *m = c->ooo.head; m != NULL; m = m->next) {
        if (n > 0 && out[n - 1].end == ooo_seq(m)) {
            out[n - 1].end = ooo_end(m);
            continue;
        }
        if (n == max)
            break;
        out[n].start = ooo_seq(m);
        out[n].end = ooo_end(m);
        n++;
    }
    return n;
}

void tcp_ooo_free(struct tcp_ooo *o)
{
    struct rte_mbuf *m = o->head;
    while (m != NULL) {
        struct rte_mbuf *next = m->next;
        m->next = NULL;
        rte_pktmbuf_free_seg(m);
        m = next;
    }
    memset(o, 0, sizeof(*o));
}
