/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Byte queues on chains of buffer mbufs: the send buffer and the receive queue of a connection.
 * Each mbuf is one segment (nb_segs 1) linked through m->next to the next; they are filled to their tailroom
 * before a new one is taken, so a queue of N bytes holds about N / 2 KiB mbufs and grows only with traffic.
 * Mbufs are released one at a time with rte_pktmbuf_free_seg: the chain is a queue, not a packet.
 */
#include <string.h>

#include "dpdk/tcp_impl.h"

uint32_t tcp_bufq_append(struct tcp_bufq *q, struct rte_mempool *pool, const uint8_t *p, uint32_t n, uint32_t cap)
{
    uint32_t done = 0;

    if (q->bytes >= cap)
        return 0;
    if (n > cap - q->bytes)
        n = cap - q->bytes;
    while (done < n) {
        struct rte_mbuf *t = q->tail;
        uint32_t room = t ? rte_pktmbuf_tailroom(t) : 0;
        uint32_t k;

        if (room == 0) {
            t = rte_pktmbuf_alloc(pool);
            if (t == NULL)
                break;
            rte_pktmbuf_reset_headroom(t);
            t->data_off = 0; /* buffer mbufs carry no headers */
            t->next = NULL;
            if (q->tail != NULL)
                q->tail->next = t;
            else
                q->head = t;
            q->tail = t;
            q->n_mbufs++;
            room = rte_pktmbuf_tailroom(t);
        }
        k = RTE_MIN(room, n - done);
        memcpy(rte_pktmbuf_mtod_offset(t, uint8_t *, t->data_len), p + done, k);
        t->data_len = (uint16_t)(t->data_len + k);
        t->pkt_len = t->data_len;
        done += k;
    }
    q->bytes += done;
    return done;
}

void tcp_bufq_copy(struct tcp_bufq *q, uint32_t off, uint32_t n, uint8_t *dst)
{
    struct rte_mbuf *m = q->cur;
    uint32_t base = q->cur_off;

    if (m == NULL || off < base) {
        m = q->head;
        base = 0;
    }
    while (m != NULL && off >= base + m->data_len) {
        base += m->data_len;
        m = m->next;
    }
    q->cur = m;
    q->cur_off = base;
    while (n > 0 && m != NULL) {
        uint32_t in = off - base;
        uint32_t k = RTE_MIN((uint32_t)m->data_len - in, n);
        memcpy(dst, rte_pktmbuf_mtod_offset(m, uint8_t *, in), k);
        dst += k;
        n -= k;
        off += k;
        base += m->data_len;
        m = m->next;
    }
}

void tcp_bufq_drop(struct tcp_bufq *q, uint32_t n)
{
    uint32_t total;

    if (n > q->bytes)
        n = q->bytes;
    total = n;
    q->bytes -= n;
    while (n > 0) {
        struct rte_mbuf *m = q->head;
        if (n < m->data_len) {
            rte_pktmbuf_adj(m, (uint16_t)n);
            break;
        }
        n -= m->data_len;
        if (q->cur == m)
            q->cur = NULL;
        q->head = m->next;
        if (q->head == NULL)
            q->tail = NULL;
        m->next = NULL;
        rte_pktmbuf_free_seg(m);
        q->n_mbufs--;
    }
    /* every offset moved down by total; the head's start stays at 0 */
    if (q->cur == NULL || q->cur == q->head)
        q->cur_off = 0;
    else
        q->cur_off -= total;
}

void tcp_bufq_free(struct tcp_bufq *q)
{
    struct rte_mbuf *m = q->head;
    while (m != NULL) {
        struct rte_mbuf *next = m->next;
        m->next = NULL;
        rte_pktmbuf_free_seg(m);
        m = next;
    }
    memset(q, 0, sizeof(*q));
}
