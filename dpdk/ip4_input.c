/* SPDX-License-Identifier: Apache-2.0 */
/*
 * IPv4 input (RFC 791, RFC 1812 §5.2.2): header validation, then local delivery or forwarding.
 * Forwarding (RFC 1812 §5.2.3-§5.3.1): TTL check and decrement with an incremental checksum update
 * (RFC 1624), route lookup, MTU check, next-hop resolution. Options and fragments are forwarded untouched and
 * counted; fragments addressed to us are dropped (nothing local needs reassembly yet).
 */
#include <rte_ip.h>
#include <rte_icmp.h>
#include <rte_tcp.h>

#include "dpdk/dp.h"
#include "dpdk/stack.h"
#include "dpdk/tcp_impl.h"

static bool ip4_is_martian_source(uint32_t a)
{
    return (a >> 24) == 127 || (a >> 28) == 0xe || a == 0xffffffffu || a == 0;
}

static bool ip4_is_martian_dest(const struct dp_stack *st, uint32_t a)
{
    if ((a >> 24) == 127 || (a >> 28) == 0xe || a == 0xffffffffu || a == 0)
        return true;
    for (int i = 0; i < st->n_ports; i++) {     /* directed broadcast of a connected subnet */
        const struct dp_port *p = &st->ports[i];
        if (p->prefix_len < 31 && (a & p->mask) == p->net && (a | p->mask) == 0xffffffffu)
            return true;
    }
    return false;
}

static void ip4_forward(struct dp_lcore *lc, uint8_t in_port, struct rte_mbuf *m)
{
    m->port = in_port;
    const struct dp_stack *st = lc->stack;
    struct rte_ipv4_hdr *ip = dp_ip4_hdr(m);
    const struct dp_nexthop *nh;
    const struct dp_port *out;
    uint32_t sum;

    if (ip->time_to_live <= 1) {
        dp_icmp_send_error(lc, in_port, m, DP_ICMP_TIME_EXCEEDED, 0, 0);
        dp_drop(lc, m, DP_CNT_IP4_TTL_EXCEEDED);
        return;
    }
    nh = dp_route_lookup(st, rte_be_to_cpu_32(ip->dst_addr));
    if (nh == NULL) {
        dp_icmp_send_error(lc, in_port, m, DP_ICMP_DEST_UNREACH, DP_ICMP_NET_UNREACH, 0);
        dp_drop(lc, m, DP_CNT_IP4_NO_ROUTE);
        return;
    }
    out = &st->ports[nh->port];
    if (rte_be_to_cpu_16(ip->total_length) > out->mtu) {
        if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG))
            dp_icmp_send_error(lc, in_port, m, DP_ICMP_DEST_UNREACH, DP_ICMP_FRAG_NEEDED, out->mtu);
        dp_drop(lc, m, DP_CNT_IP4_TOO_BIG);
        return;
    }
    /* TTL is the high byte of its 16-bit word: subtracting 1 from it adds 0x0100 to the one's complement sum. */
    ip->time_to_live--;
    sum = (uint32_t)ip->hdr_checksum + rte_cpu_to_be_16(0x0100);
    ip->hdr_checksum = (uint16_t)(sum + (sum >= 0xffff));
    dp_count(lc, DP_CNT_IP4_FORWARDED);
    dp_arp_output(lc, nh->port, nh->gateway ? nh->gateway : rte_be_to_cpu_32(ip->dst_addr), m);
}

static void ip4_local_deliver(struct dp_lcore *lc, uint8_t port, struct rte_mbuf *m, unsigned ihl, bool fragment)
{
    const struct rte_ipv4_hdr *ip = dp_ip4_hdr(m);

    dp_count(lc, DP_CNT_IP4_LOCAL_DELIVER);
    if (fragment) {
        dp_drop(lc, m, DP_CNT_IP4_LOCAL_FRAGMENT);
        return;
    }
    switch (ip->next_proto_id) {
    case IPPROTO_ICMP:
        dp_icmp_input(lc, port, m, ihl);
        return;
    case IPPROTO_TCP:
        dp_tcp_input(lc, m, ihl);
        return;
    default:
        dp_drop(lc, m, DP_CNT_IP4_LOCAL_PROTO);
        return;
    }
}

/*
 * TCP not addressed to us, with the mesh on: segments of connections the stack holds transparently go to TCP, and so
 * do SYNs the classifier captures. Returns true when m was taken.
 */
static bool ip4_mesh_tcp(struct dp_lcore *lc, uint8_t port, struct rte_mbuf *m, unsigned ihl)
{
    const struct rte_ipv4_hdr *ip = dp_ip4_hdr(m);
    const struct rte_tcp_hdr *th;
    uint32_t src = rte_be_to_cpu_32(ip->src_addr), dst = rte_be_to_cpu_32(ip->dst_addr);
    enum dp_flow_class cls;

    if (lc->tcp == NULL || rte_pktmbuf_data_len(m) < ihl + sizeof(*th))
        return false;
    th = (const struct rte_tcp_hdr *)((const uint8_t *)ip + ihl);
    struct mesh_conn *c = tcp_conn_lookup(lc->tcp, dst, rte_be_to_cpu_16(th->dst_port), src,
                                          rte_be_to_cpu_16(th->src_port));
    bool new_syn = (th->tcp_flags & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG | RTE_TCP_RST_FLAG)) == RTE_TCP_SYN_FLAG;
    /* a new SYN on a 4-tuple still in TIME-WAIT is a new flow: classify it (the capture takes over the block) */
    if (c != NULL && !(new_syn && c->state == DP_TCP_TIME_WAIT)) {
        dp_count(lc, DP_CNT_TCP_TRANSPARENT_IN);
        dp_tcp_input(lc, m, ihl);
        return true;
    }
    if ((th->tcp_flags & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG | RTE_TCP_RST_FLAG)) != RTE_TCP_SYN_FLAG) {
        /* Maybe a transparent connection another lcore opened (its port says which). Only the owner may look in
         * its table: it takes the packet, or routes it on if the flow is not one of its connections. */
        struct dp_lcore *owner = dp_lcore_port_owner(lc, rte_be_to_cpu_16(th->dst_port));
        if (owner != NULL) {
            m->port = port;
            m->hash.usr = DP_HANDOFF_ROUTE_IF_UNKNOWN;
            dp_lcore_handoff(lc, owner, m);
            return true;
        }
        /* A flow the stack would capture, spilled from the lcore that accepted it: ask the others in turn. */
        if (lc->stack->n_lcores > 1 &&
            dp_classify_syn(lc->stack, port, src, dst, rte_be_to_cpu_16(th->dst_port)) != DP_FLOW_PASSTHROUGH) {
            m->port = port;
            m->hash.usr = DP_HANDOFF_SEARCH | (1u << DP_HANDOFF_HOPS_SHIFT);
            dp_lcore_handoff(lc, dp_lcore_next(lc), m);
            return true;
        }
        return false;
    }
    cls = dp_classify_syn(lc->stack, port, src, dst, rte_be_to_cpu_16(th->dst_port));
    if (cls == DP_FLOW_PASSTHROUGH)
        return false;
    m->port = port;
    dp_tcp_input_capture(lc, m, ihl, cls);
    return true;
}

void dp_ip4_input(struct dp_lcore *lc, uint8_t port, struct rte_mbuf *m)
{
    const struct dp_stack *st = lc->stack;
    struct rte_ipv4_hdr *ip;
    unsigned ihl, total;
    uint32_t src, dst;
    bool fragment;

    dp_count(lc, DP_CNT_IP4_RX);
    if (rte_pktmbuf_data_len(m) < sizeof(struct rte_ipv4_hdr)) {
        dp_drop(lc, m, DP_CNT_IP4_TRUNCATED);
        return;
    }
    ip = dp_ip4_hdr(m);
    if ((ip->version_ihl >> 4) != 4) {
        dp_drop(lc, m, DP_CNT_IP4_BAD_VERSION);
        return;
    }
    ihl = rte_ipv4_hdr_len(ip);
    if (ihl < sizeof(struct rte_ipv4_hdr) || ihl > rte_pktmbuf_data_len(m)) {
        dp_drop(lc, m, DP_CNT_IP4_BAD_HEADER_LEN);
        return;
    }
    total = rte_be_to_cpu_16(ip->total_length);
    if (total < ihl || total > rte_pktmbuf_pkt_len(m)) {
        dp_drop(lc, m, DP_CNT_IP4_BAD_TOTAL_LEN);
        return;
    }
    if ((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_BAD ||
        ((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) != RTE_MBUF_F_RX_IP_CKSUM_GOOD &&
         rte_raw_cksum(ip, ihl) != 0xffff)) {
        dp_drop(lc, m, DP_CNT_IP4_BAD_CHECKSUM);
        return;
    }
    if (total < rte_pktmbuf_pkt_len(m))
        rte_pktmbuf_trim(m, rte_pktmbuf_pkt_len(m) - total); /* Ethernet padding */

    src = rte_be_to_cpu_32(ip->src_addr);
    dst = rte_be_to_cpu_32(ip->dst_addr);
    if (ip4_is_martian_source(src) || dp_route_local_port(st, src) >= 0) {
        dp_drop(lc, m, DP_CNT_IP4_BAD_SOURCE);
        return;
    }
    if (ip4_is_martian_dest(st, dst)) {
        dp_drop(lc, m, DP_CNT_IP4_MARTIAN_DEST);
        return;
    }
    if (ihl > sizeof(struct rte_ipv4_hdr))
        dp_count(lc, DP_CNT_IP4_OPTIONS);
    fragment = (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) != 0;
    if (fragment)
        dp_count(lc, DP_CNT_IP4_FRAGMENTS);

    if (dp_route_local_port(st, dst) >= 0) {
        ip4_local_deliver(lc, port, m, ihl, fragment);
        return;
    }
    if (st->mesh != NULL && ip->next_proto_id == IPPROTO_TCP && !fragment && ip4_mesh_tcp(lc, port, m, ihl))
        return;
    ip4_forward(lc, port, m);
}

void dp_ip4_forward(struct dp_lcore *lc, struct rte_mbuf *m)
{
    ip4_forward(lc, (uint8_t)m->port, m);
}

void dp_ip4_output(struct dp_lcore *lc, struct rte_mbuf *m)
{
    const struct rte_ipv4_hdr *ip = dp_ip4_hdr(m);
    uint32_t dst = rte_be_to_cpu_32(ip->dst_addr);
    const struct dp_nexthop *nh = dp_route_lookup(lc->stack, dst);

    if (nh == NULL) {
        dp_drop(lc, m, DP_CNT_IP4_NO_ROUTE);
        return;
    }
    dp_arp_output(lc, nh->port, nh->gateway ? nh->gateway : dst, m);
}
