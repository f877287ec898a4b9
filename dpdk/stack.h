/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal interfaces between the stack's layers (eth, arp, ip4, icmp, route). Not for use outside dpdk/.
 * Conventions: an mbuf passed in is consumed; "m at the IP header" means the Ethernet header has been
 * stripped (rte_pktmbuf_adj) and there is headroom to prepend one again.
 */
#ifndef ZW_DP_STACK_H
#define ZW_DP_STACK_H

#include <rte_ip.h>

#include "dpdk/dp.h"

/* ---- route.c ---- */

struct dp_route_spec {
    uint32_t prefix;   /* network bits only */
    uint8_t len;
    uint32_t via;      /* must lie in a connected subnet */
};

/*
 * Build the route table of st from its ports (connected subnets) and the static routes given.
 * Requires st->ports filled in. Returns 0, or -errno with a message in err.
 */
int dp_route_build(struct dp_stack *st, const struct dp_route_spec *routes, int n, int socket, char *err,
                   size_t errlen);
void dp_route_free(struct dp_stack *st);
/* The next hop for dst, or NULL when there is no route. Safe from any lcore. */
const struct dp_nexthop *dp_route_lookup(const struct dp_stack *st, uint32_t dst);
/* The port whose address is ip, or -1. */
int dp_route_local_port(const struct dp_stack *st, uint32_t ip);

/* ---- arp.c ---- */

/* A neighbour update sent between lcores through their inbox rings (fixed-size ring elements). */
struct dp_arp_sync {
    uint32_t ip;
    uint8_t port;
    uint8_t pad;
    struct rte_ether_addr mac;
    uint32_t pad2;
};

int dp_arp_table_init(struct dp_arp_table *t, uint32_t pending_cap, unsigned lcore_id, int socket);
void dp_arp_table_fini(struct dp_arp_table *t);
/* m starts at the Ethernet header. */
void dp_arp_input(struct dp_lcore *lc, uint8_t port, struct rte_mbuf *m);
/* Send the IPv4 packet m (at the IP header) to nexthop on port: prepend Ethernet, resolving first if needed. */
void dp_arp_output(struct dp_lcore *lc, uint8_t port, uint32_t nexthop, struct rte_mbuf *m);
/* Record ip -> mac on port. sync: also tell the other lcores. */
void dp_arp_learn(struct dp_lcore *lc, uint8_t port, uint32_t ip, const struct rte_ether_addr *mac, bool sync);
void dp_arp_timers(struct dp_lcore *lc);
/* The entry for (port, ip), or NULL. */
const struct dp_arp_entry *dp_arp_lookup(const struct dp_lcore *lc, uint8_t port, uint32_t ip);

/* ---- ip4_input.c / ip4_output.c ---- */

/* m at the IP header. Validates, then delivers locally or forwards. */
void dp_ip4_input(struct dp_lcore *lc, uint8_t port, struct rte_mbuf *m);
/* Route and send m (at the IP header, header complete with checksum). Returns 0 or a drop reason counted. */
void dp_ip4_output(struct dp_lcore *lc, struct rte_mbuf *m);
/* Forward m (at the IP header, validated by dp_ip4_input), as a router: TTL, route, MTU, next hop. */
void dp_ip4_forward(struct dp_lcore *lc, struct rte_mbuf *m);
static inline struct rte_ipv4_hdr *dp_ip4_hdr(struct rte_mbuf *m)
{
    return rte_pktmbuf_mtod(m, struct rte_ipv4_hdr *);
}

/* ---- icmp.c ---- */

enum dp_icmp_type {            /* RFC 792 */
    DP_ICMP_ECHO_REPLY = 0,
    DP_ICMP_DEST_UNREACH = 3,
    DP_ICMP_SOURCE_QUENCH = 4,
    DP_ICMP_REDIRECT = 5,
    DP_ICMP_ECHO_REQUEST = 8,
    DP_ICMP_TIME_EXCEEDED = 11,
    DP_ICMP_PARAM_PROBLEM = 12,
};
enum dp_icmp_unreach_code { DP_ICMP_NET_UNREACH = 0, DP_ICMP_HOST_UNREACH = 1, DP_ICMP_FRAG_NEEDED = 4 };

/* m at the IP header of a packet addressed to us with protocol ICMP; ihl is its header length. */
void dp_icmp_input(struct dp_lcore *lc, uint8_t port, struct rte_mbuf *m, unsigned ihl);
/*
 * Send an ICMP error about orig (at the IP header; not consumed) back to its source, from the address of
 * in_port. `info` is the 32-bit rest-of-header (next-hop MTU for "fragmentation needed"). Rate limited.
 */
void dp_icmp_send_error(struct dp_lcore *lc, uint8_t in_port, struct rte_mbuf *orig, uint8_t type, uint8_t code,
                        uint32_t info);

#endif
