/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ICMP (RFC 792, RFC 1812 §4.3): echo replies for our addresses and the errors the forwarder raises.
 * Errors are never sent about ICMP errors, non-initial fragments, or packets from martian sources
 * (RFC 1812 §4.3.2.7), and at most icmp_errors_per_s per lcore.
 */
#include <string.h>

#include <rte_icmp.h>
#include <rte_ip.h>

#include "dpdk/dp.h"
#include "dpdk/stack.h"

#define ICMP_ERROR_MAX_BYTES 576   /* RFC 1812 §4.3.2.3: the whole error fits in 576 bytes */

static uint16_t icmp_cksum(const void *p, size_t n)
{
    return (uint16_t)~rte_raw_cksum(p, n);
}

void dp_icmp_input(struct dp_lcore *lc, uint8_t port, struct rte_mbuf *m, unsigned ihl)
{
    struct rte_ipv4_hdr *ip = dp_ip4_hdr(m);
    struct rte_icmp_hdr *icmp;
    unsigned len = rte_be_to_cpu_16(ip->total_length) - ihl;
    uint32_t addr;

    (void)port;
    if (len < sizeof(*icmp) || rte_pktmbuf_data_len(m) < ihl + len) {
        dp_drop(lc, m, DP_CNT_ICMP_TRUNCATED);
        return;
    }
    icmp = rte_pktmbuf_mtod_offset(m, struct rte_icmp_hdr *, ihl);
    if (rte_raw_cksum(icmp, len) != 0xffff) {
        dp_drop(lc, m, DP_CNT_ICMP_BAD_CHECKSUM);
        return;
    }
    if (icmp->icmp_type != DP_ICMP_ECHO_REQUEST || icmp->icmp_code != 0) {
        dp_drop(lc, m, DP_CNT_ICMP_OTHER_IN);
        return;
    }
    dp_count(lc, DP_CNT_ICMP_ECHO_IN);

    /* The request becomes the reply: swap addresses, fresh TTL, no options kept. */
    icmp->icmp_type = DP_ICMP_ECHO_REPLY;
    icmp->icmp_cksum = 0;
    icmp->icmp_cksum = icmp_cksum(icmp, len);
    if (ihl > sizeof(*ip)) {
        memmove((uint8_t *)ip + ihl - sizeof(*ip), ip, sizeof(*ip));
        rte_pktmbuf_adj(m, (uint16_t)(ihl - sizeof(*ip)));
        ip = dp_ip4_hdr(m);
        ip->version_ihl = RTE_IPV4_VHL_DEF;
    }
    addr = ip->src_addr;
    ip->src_addr = ip->dst_addr;
    ip->dst_addr = addr;
    ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof(*ip) + len));
    ip->time_to_live = DP_DEFAULT_TTL;
    ip->fragment_offset = 0;
    ip->hdr_checksum = 0;
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    dp_count(lc, DP_CNT_ICMP_ECHO_OUT);
    dp_ip4_output(lc, m);
}

static bool icmp_is_error_type(uint8_t type)
{
    return type == DP_ICMP_DEST_UNREACH || type == DP_ICMP_TIME_EXCEEDED || type == DP_ICMP_SOURCE_QUENCH ||
           type == DP_ICMP_REDIRECT || type == DP_ICMP_PARAM_PROBLEM;
}

static bool icmp_may_answer(const struct rte_mbuf *orig)
{
    const struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod(orig, const struct rte_ipv4_hdr *);
    unsigned ihl = rte_ipv4_hdr_len(ip);
    uint32_t src = rte_be_to_cpu_32(ip->src_addr);

    if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_OFFSET_MASK))
        return false;
    if (src == 0 || (src >> 24) == 127 || (src >> 28) >= 0xe)
        return false;
    if (ip->next_proto_id == IPPROTO_ICMP) {
        const struct rte_icmp_hdr *icmp;
        if (rte_pktmbuf_data_len(orig) < ihl + 1)
            return false;
        icmp = rte_pktmbuf_mtod_offset(orig, const struct rte_icmp_hdr *, ihl);
        if (icmp_is_error_type(icmp->icmp_type))
            return false;
    }
    return true;
}

void dp_icmp_send_error(struct dp_lcore *lc, uint8_t in_port, struct rte_mbuf *orig, uint8_t type, uint8_t code,
                        uint32_t info)
{
    const struct rte_ipv4_hdr *oip = rte_pktmbuf_mtod(orig, const struct rte_ipv4_hdr *);
    size_t quote = RTE_MIN((size_t)rte_pktmbuf_data_len(orig),
                           (size_t)ICMP_ERROR_MAX_BYTES - sizeof(struct rte_ipv4_hdr) - sizeof(struct rte_icmp_hdr));
    struct rte_ipv4_hdr *ip;
    struct rte_icmp_hdr *icmp;
    struct rte_mbuf *m;

    if (!icmp_may_answer(orig))
        return;
    if (lc->icmp_tokens == 0) {
        dp_count(lc, DP_CNT_ICMP_RATELIMITED);
        return;
    }
    lc->icmp_tokens--;
    m = rte_pktmbuf_alloc(lc->stack->pool);
    if (m == NULL) {
        dp_count(lc, DP_CNT_MBUF_ALLOC_FAILED);
        return;
    }
    ip = (struct rte_ipv4_hdr *)rte_pktmbuf_append(m, (uint16_t)(sizeof(*ip) + sizeof(*icmp) + quote));
    icmp = (struct rte_icmp_hdr *)(ip + 1);
    memcpy(icmp + 1, oip, quote);
    icmp->icmp_type = type;
    icmp->icmp_code = code;
    icmp->icmp_cksum = 0;
    /* The 32-bit rest of header: next-hop MTU in its low half for "fragmentation needed" (RFC 1191). */
    icmp->icmp_ident = rte_cpu_to_be_16((uint16_t)(info >> 16));
    icmp->icmp_seq_nb = rte_cpu_to_be_16((uint16_t)info);
    icmp->icmp_cksum = icmp_cksum(icmp, sizeof(*icmp) + quote);
    memset(ip, 0, sizeof(*ip));
    ip->version_ihl = RTE_IPV4_VHL_DEF;
    ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof(*ip) + sizeof(*icmp) + quote));
    ip->time_to_live = DP_DEFAULT_TTL;
    ip->next_proto_id = IPPROTO_ICMP;
    ip->src_addr = rte_cpu_to_be_32(lc->stack->ports[in_port].addr);
    ip->dst_addr = oip->src_addr;
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    dp_count(lc, DP_CNT_ICMP_ERROR_OUT);
    dp_ip4_output(lc, m);
}
