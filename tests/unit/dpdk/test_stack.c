/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The stack's L2/L3 layers fed crafted frames: ARP, IPv4 checks, ICMP, routing and forwarding.
 * No device is involved: the lcore's transmit function is replaced by a capture, and time is set by hand.
 * EAL runs without hugepages (mempool and LPM need it), once for the whole file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <rte_arp.h>
#include <rte_eal.h>
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include "dpdk/dp.h"
#include "dpdk/stack.h"

#define IP(a, b, c, d) (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((uint32_t)(c) << 8) | (uint32_t)(d))

enum { PORT_PODS = 0, PORT_FABRIC = 1 };

static const struct rte_ether_addr mac_pods = {{0x02, 0, 0, 0, 0, 0x01}};
static const struct rte_ether_addr mac_fabric = {{0x02, 0, 0, 0, 0, 0x02}};
static const struct rte_ether_addr mac_pod_a = {{0x02, 0, 0, 0, 1, 0x0a}};
static const struct rte_ether_addr mac_peer_node = {{0x02, 0, 0, 0, 2, 0x02}};

static struct rte_mempool *pool;
static struct dp_stack stack;
static struct dp_lcore lcore;

/* ---- transmit capture ---- */

#define CAPTURE_MAX 64
static struct {
    int n;
    uint8_t port[CAPTURE_MAX];
    struct rte_mbuf *m[CAPTURE_MAX];
} sent;
static uint16_t refuse_tx;

static uint16_t capture_tx(struct dp_lcore *lc, uint8_t port, struct rte_mbuf **pkts, uint16_t n)
{
    uint16_t i;
    (void)lc;
    if (refuse_tx)
        return 0;
    for (i = 0; i < n && sent.n < CAPTURE_MAX; i++) {
        sent.port[sent.n] = port;
        sent.m[sent.n++] = pkts[i];
    }
    return i;
}

static void capture_reset(void)
{
    for (int i = 0; i < sent.n; i++)
        rte_pktmbuf_free(sent.m[i]);
    sent.n = 0;
}

/* ---- frame builders ---- */

static struct rte_mbuf *frame_new(const struct rte_ether_addr *dst, const struct rte_ether_addr *src, uint16_t type,
                                  size_t payload)
{
    struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
    struct rte_ether_hdr *eh;

    assert_non_null(m);
    eh = (struct rte_ether_hdr *)rte_pktmbuf_append(m, (uint16_t)(sizeof(*eh) + payload));
    assert_non_null(eh);
    memset(eh, 0, sizeof(*eh) + payload);
    rte_ether_addr_copy(dst, &eh->dst_addr);
    rte_ether_addr_copy(src, &eh->src_addr);
    eh->ether_type = rte_cpu_to_be_16(type);
    return m;
}

static struct rte_mbuf *arp_frame(uint16_t op, const struct rte_ether_addr *sha, uint32_t sip, uint32_t tip,
                                  const struct rte_ether_addr *eth_dst)
{
    struct rte_mbuf *m = frame_new(eth_dst, sha, RTE_ETHER_TYPE_ARP, sizeof(struct rte_arp_hdr));
    struct rte_arp_hdr *ah = rte_pktmbuf_mtod_offset(m, struct rte_arp_hdr *, sizeof(struct rte_ether_hdr));

    ah->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
    ah->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    ah->arp_hlen = 6;
    ah->arp_plen = 4;
    ah->arp_opcode = rte_cpu_to_be_16(op);
    rte_ether_addr_copy(sha, &ah->arp_data.arp_sha);
    ah->arp_data.arp_sip = rte_cpu_to_be_32(sip);
    ah->arp_data.arp_tip = rte_cpu_to_be_32(tip);
    return m;
}

static const struct rte_ether_addr bcast = {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};

/* An IPv4 packet in a frame to `dst_mac`, with `payload` bytes after the header; proto UDP unless ICMP asked. */
static struct rte_mbuf *ip_frame(const struct rte_ether_addr *dst_mac, const struct rte_ether_addr *src_mac,
                                 uint32_t src, uint32_t dst, uint8_t ttl, uint8_t proto, size_t payload)
{
    struct rte_mbuf *m = frame_new(dst_mac, src_mac, RTE_ETHER_TYPE_IPV4, sizeof(struct rte_ipv4_hdr) + payload);
    struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
    uint8_t *body = (uint8_t *)(ip + 1);

    ip->version_ihl = RTE_IPV4_VHL_DEF;
    ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof(*ip) + payload));
    ip->packet_id = rte_cpu_to_be_16(0x1234);
    ip->time_to_live = ttl;
    ip->next_proto_id = proto;
    ip->src_addr = rte_cpu_to_be_32(src);
    ip->dst_addr = rte_cpu_to_be_32(dst);
    for (size_t i = 0; i < payload; i++)
        body[i] = (uint8_t)i;
    if (proto == IPPROTO_ICMP && payload >= sizeof(struct rte_icmp_hdr)) {
        struct rte_icmp_hdr *icmp = (struct rte_icmp_hdr *)body;
        icmp->icmp_type = DP_ICMP_ECHO_REQUEST;
        icmp->icmp_code = 0;
        icmp->icmp_ident = rte_cpu_to_be_16(77);
        icmp->icmp_seq_nb = rte_cpu_to_be_16(1);
        icmp->icmp_cksum = 0;
        icmp->icmp_cksum = (uint16_t)~rte_raw_cksum(icmp, payload);
    }
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    return m;
}

static struct rte_ipv4_hdr *frame_ip(struct rte_mbuf *m)
{
    return rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
}

static struct rte_ether_hdr *frame_eth(struct rte_mbuf *m)
{
    return rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
}

static void input(uint8_t port, struct rte_mbuf *m)
{
    dp_eth_input(&lcore, port, m);
    dp_tx_flush(&lcore);
}

static uint64_t count(enum dp_counter c)
{
    return dp_counter_read(&lcore, c);
}

static void learn_pod_a(void)
{
    input(PORT_PODS, arp_frame(RTE_ARP_OP_REQUEST, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 1, 1), &bcast));
    capture_reset();
}

static void learn_peer_node(void)
{
    input(PORT_FABRIC, arp_frame(RTE_ARP_OP_REQUEST, &mac_peer_node, IP(10, 0, 0, 2), IP(10, 0, 0, 1), &bcast));
    capture_reset();
}

/* ---- fixtures ---- */

static int group_setup(void **state)
{
    char *argv[] = {"test_stack", "--no-huge", "-m", "128", "--no-pci", "-l", "0", "--no-shconf",
                    "--file-prefix=zwut-stack", "--log-level=error", "--no-telemetry"};
    (void)state;
    if (rte_eal_init((int)RTE_DIM(argv), argv) < 0)
        return -1;
    pool = rte_pktmbuf_pool_create("zwut_pool", 2047, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
    return pool == NULL ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    rte_mempool_free(pool);
    rte_eal_cleanup();
    return 0;
}

static void port_init(struct dp_port *p, uint8_t index, const char *name, enum dp_port_role role,
                      const struct rte_ether_addr *mac, uint32_t addr, uint8_t len)
{
    memset(p, 0, sizeof(*p));
    p->index = index;
    p->role = role;
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->mac = *mac;
    p->addr = addr;
    p->prefix_len = len;
    p->mask = len ? ~0u << (32 - len) : 0;
    p->net = addr & p->mask;
    p->mtu = 1500;
}

static int setup(void **state)
{
    struct dp_route_spec routes[] = {
        {.prefix = IP(10, 1, 2, 0), .len = 24, .via = IP(10, 0, 0, 2)},
        {.prefix = IP(10, 1, 2, 128), .len = 25, .via = IP(10, 0, 0, 3)},
    };
    char err[128];
    (void)state;

    memset(&stack, 0, sizeof(stack));
    stack.n_ports = 2;
    port_init(&stack.ports[PORT_PODS], PORT_PODS, "pods", DP_PORT_PODS, &mac_pods, IP(10, 1, 1, 1), 24);
    port_init(&stack.ports[PORT_FABRIC], PORT_FABRIC, "fabric", DP_PORT_FABRIC, &mac_fabric, IP(10, 0, 0, 1), 24);
    stack.pool = pool;
    stack.arp_timeout_ms = 60000;
    stack.arp_pending_max = 4;
    stack.icmp_errors_per_s = 100;
    if (dp_route_build(&stack, routes, (int)RTE_DIM(routes), SOCKET_ID_ANY, err, sizeof(err)) != 0) {
        print_error("%s\n", err);
        return -1;
    }
    if (dp_lcore_init(&lcore, &stack, 0, 0, SOCKET_ID_ANY) != 0)
        return -1;
    stack.n_lcores = 1;
    stack.lcores[0] = &lcore;
    lcore.tx_burst = capture_tx;
    lcore.now_ms = 1000;
    refuse_tx = 0;
    sent.n = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    capture_reset();
    dp_lcore_fini(&lcore);
    dp_route_free(&stack);
    /* every mbuf the test or the stack allocated is back */
    assert_int_equal(rte_mempool_in_use_count(pool), 0);
    return 0;
}

/* ---- ethernet ---- */

static void test_eth_runt_dropped(void **state)
{
    struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
    (void)state;
    rte_pktmbuf_append(m, 10);
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_ETH_RUNT), 1);
    assert_int_equal(sent.n, 0);
}

static void test_eth_foreign_mac_dropped(void **state)
{
    (void)state;
    input(PORT_PODS, ip_frame(&mac_peer_node, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 64, IPPROTO_UDP, 8));
    assert_int_equal(count(DP_CNT_ETH_NOT_FOR_US), 1);
    assert_int_equal(count(DP_CNT_IP4_RX), 0);
}

static void test_eth_vlan_and_unknown_type_dropped(void **state)
{
    (void)state;
    input(PORT_PODS, frame_new(&mac_pods, &mac_pod_a, RTE_ETHER_TYPE_VLAN, 40));
    input(PORT_PODS, frame_new(&mac_pods, &mac_pod_a, RTE_ETHER_TYPE_IPV6, 40));
    assert_int_equal(count(DP_CNT_ETH_VLAN), 1);
    assert_int_equal(count(DP_CNT_ETH_UNKNOWN_TYPE), 1);
}

/* ---- arp ---- */

static void test_arp_request_for_gateway_answered_and_sender_learned(void **state)
{
    struct rte_arp_hdr *ah;
    const struct dp_arp_entry *e;
    (void)state;

    input(PORT_PODS, arp_frame(RTE_ARP_OP_REQUEST, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 1, 1), &bcast));
    assert_int_equal(sent.n, 1);
    assert_int_equal(sent.port[0], PORT_PODS);
    assert_true(rte_is_same_ether_addr(&frame_eth(sent.m[0])->dst_addr, &mac_pod_a));
    assert_true(rte_is_same_ether_addr(&frame_eth(sent.m[0])->src_addr, &mac_pods));
    ah = rte_pktmbuf_mtod_offset(sent.m[0], struct rte_arp_hdr *, sizeof(struct rte_ether_hdr));
    assert_int_equal(rte_be_to_cpu_16(ah->arp_opcode), RTE_ARP_OP_REPLY);
    assert_true(rte_is_same_ether_addr(&ah->arp_data.arp_sha, &mac_pods));
    assert_int_equal(rte_be_to_cpu_32(ah->arp_data.arp_sip), IP(10, 1, 1, 1));
    assert_int_equal(rte_be_to_cpu_32(ah->arp_data.arp_tip), IP(10, 1, 1, 10));
    assert_int_equal(count(DP_CNT_ARP_REPLY_OUT), 1);
    e = dp_arp_lookup(&lcore, PORT_PODS, IP(10, 1, 1, 10));
    assert_non_null(e);
    assert_int_equal(e->state, DP_ARP_REACHABLE);
    assert_true(rte_is_same_ether_addr(&e->mac, &mac_pod_a));
}

static void test_arp_request_for_other_address_ignored(void **state)
{
    (void)state;
    input(PORT_PODS, arp_frame(RTE_ARP_OP_REQUEST, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 1, 11), &bcast));
    assert_int_equal(sent.n, 0);
    assert_int_equal(count(DP_CNT_ARP_NOT_FOR_US), 1);
    assert_null(dp_arp_lookup(&lcore, PORT_PODS, IP(10, 1, 1, 10))); /* nothing created from a stranger's chatter */
}

static void test_arp_request_for_other_port_address_not_answered(void **state)
{
    (void)state;
    /* 10.0.0.1 is ours, but on the fabric: the pods port must not answer for it */
    input(PORT_PODS, arp_frame(RTE_ARP_OP_REQUEST, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 0, 0, 1), &bcast));
    assert_int_equal(sent.n, 0);
}

static void test_arp_sender_outside_subnet_not_learned(void **state)
{
    (void)state;
    input(PORT_PODS, arp_frame(RTE_ARP_OP_REQUEST, &mac_pod_a, IP(192, 168, 1, 10), IP(10, 1, 1, 1), &bcast));
    assert_int_equal(sent.n, 1); /* still answered */
    assert_null(dp_arp_lookup(&lcore, PORT_PODS, IP(192, 168, 1, 10)));
}

static void test_arp_malformed_counted(void **state)
{
    struct rte_mbuf *m;
    struct rte_arp_hdr *ah;
    (void)state;

    m = arp_frame(RTE_ARP_OP_REQUEST, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 1, 1), &bcast);
    ah = rte_pktmbuf_mtod_offset(m, struct rte_arp_hdr *, sizeof(struct rte_ether_hdr));
    ah->arp_hlen = 8;
    input(PORT_PODS, m);
    m = arp_frame(7, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 1, 1), &bcast);
    input(PORT_PODS, m);
    m = frame_new(&bcast, &mac_pod_a, RTE_ETHER_TYPE_ARP, 10); /* truncated */
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_ARP_MALFORMED), 3);
    assert_int_equal(sent.n, 0);
}

static void test_arp_gratuitous_updates_known_entry(void **state)
{
    static const struct rte_ether_addr moved = {{0x02, 0, 0, 0, 9, 9}};
    (void)state;
    learn_pod_a();
    input(PORT_PODS, arp_frame(RTE_ARP_OP_REQUEST, &moved, IP(10, 1, 1, 10), IP(10, 1, 1, 10), &bcast));
    assert_true(rte_is_same_ether_addr(&dp_arp_lookup(&lcore, PORT_PODS, IP(10, 1, 1, 10))->mac, &moved));
    assert_int_equal(sent.n, 0);
}

static void test_arp_entry_ages_out(void **state)
{
    (void)state;
    learn_pod_a();
    lcore.now_ms += stack.arp_timeout_ms - 1;
    dp_lcore_timers(&lcore);
    assert_non_null(dp_arp_lookup(&lcore, PORT_PODS, IP(10, 1, 1, 10)));
    lcore.now_ms += 200;
    dp_lcore_timers(&lcore);
    assert_null(dp_arp_lookup(&lcore, PORT_PODS, IP(10, 1, 1, 10)));
    assert_int_equal(count(DP_CNT_ARP_EXPIRED), 1);
}

/* ---- forwarding with resolution ---- */

static void test_forward_resolves_next_hop_then_sends_held_packet(void **state)
{
    struct rte_arp_hdr *ah;
    struct rte_ipv4_hdr *ip;
    (void)state;

    learn_pod_a();
    input(PORT_PODS, ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 64, IPPROTO_UDP, 100));
    /* an ARP request for the route's gateway goes out on the fabric; the packet waits */
    assert_int_equal(sent.n, 1);
    assert_int_equal(sent.port[0], PORT_FABRIC);
    ah = rte_pktmbuf_mtod_offset(sent.m[0], struct rte_arp_hdr *, sizeof(struct rte_ether_hdr));
    assert_int_equal(rte_be_to_cpu_16(ah->arp_opcode), RTE_ARP_OP_REQUEST);
    assert_int_equal(rte_be_to_cpu_32(ah->arp_data.arp_tip), IP(10, 0, 0, 2));
    assert_int_equal(rte_be_to_cpu_32(ah->arp_data.arp_sip), IP(10, 0, 0, 1));
    assert_int_equal(count(DP_CNT_ARP_PENDING_QUEUED), 1);
    capture_reset();

    input(PORT_FABRIC, arp_frame(RTE_ARP_OP_REPLY, &mac_peer_node, IP(10, 0, 0, 2), IP(10, 0, 0, 1), &mac_fabric));
    assert_int_equal(sent.n, 1);
    assert_int_equal(sent.port[0], PORT_FABRIC);
    assert_true(rte_is_same_ether_addr(&frame_eth(sent.m[0])->dst_addr, &mac_peer_node));
    assert_true(rte_is_same_ether_addr(&frame_eth(sent.m[0])->src_addr, &mac_fabric));
    ip = frame_ip(sent.m[0]);
    assert_int_equal(ip->time_to_live, 63);
    assert_int_equal(rte_raw_cksum(ip, sizeof(*ip)), 0xffff); /* still valid after the TTL change */
    assert_int_equal(rte_be_to_cpu_32(ip->dst_addr), IP(10, 1, 2, 5));
    assert_int_equal(count(DP_CNT_IP4_FORWARDED), 1);
    assert_int_equal(count(DP_CNT_ARP_PENDING_SENT), 1);
}

static void test_forward_longest_prefix_wins(void **state)
{
    const struct dp_nexthop *nh;
    (void)state;
    nh = dp_route_lookup(&stack, IP(10, 1, 2, 200));
    assert_non_null(nh);
    assert_int_equal(nh->gateway, IP(10, 0, 0, 3));
    nh = dp_route_lookup(&stack, IP(10, 1, 2, 20));
    assert_int_equal(nh->gateway, IP(10, 0, 0, 2));
    nh = dp_route_lookup(&stack, IP(10, 1, 1, 77));
    assert_int_equal(nh->port, PORT_PODS);
    assert_int_equal(nh->gateway, 0);
    assert_null(dp_route_lookup(&stack, IP(172, 16, 0, 1)));
    assert_int_equal(dp_route_local_port(&stack, IP(10, 0, 0, 1)), PORT_FABRIC);
    assert_int_equal(dp_route_local_port(&stack, IP(10, 0, 0, 9)), -1);
}

static void test_forward_checksum_carry_edge(void **state)
{
    struct rte_mbuf *m;
    struct rte_ipv4_hdr *ip;
    (void)state;
    learn_pod_a();
    learn_peer_node();
    /* sweep many TTL/id combinations so the incremental update hits the carry cases */
    for (unsigned id = 0; id < 2000; id += 7) {
        m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), (uint8_t)(2 + id % 250), IPPROTO_UDP,
                     8);
        ip = frame_ip(m);
        ip->packet_id = rte_cpu_to_be_16((uint16_t)(id * 33));
        ip->hdr_checksum = 0;
        ip->hdr_checksum = rte_ipv4_cksum(ip);
        input(PORT_PODS, m);
        assert_int_equal(sent.n, 1);
        ip = frame_ip(sent.m[0]);
        assert_int_equal(rte_raw_cksum(ip, sizeof(*ip)), 0xffff);
        capture_reset();
    }
}

static void test_forward_ttl_one_sends_time_exceeded(void **state)
{
    struct rte_ipv4_hdr *ip;
    struct rte_icmp_hdr *icmp;
    (void)state;
    learn_pod_a();
    input(PORT_PODS, ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 1, IPPROTO_UDP, 40));
    assert_int_equal(count(DP_CNT_IP4_TTL_EXCEEDED), 1);
    assert_int_equal(sent.n, 1);
    assert_int_equal(sent.port[0], PORT_PODS);
    ip = frame_ip(sent.m[0]);
    assert_int_equal(rte_be_to_cpu_32(ip->src_addr), IP(10, 1, 1, 1));
    assert_int_equal(rte_be_to_cpu_32(ip->dst_addr), IP(10, 1, 1, 10));
    assert_int_equal(ip->next_proto_id, IPPROTO_ICMP);
    assert_int_equal(rte_raw_cksum(ip, sizeof(*ip)), 0xffff);
    icmp = (struct rte_icmp_hdr *)(ip + 1);
    assert_int_equal(icmp->icmp_type, DP_ICMP_TIME_EXCEEDED);
    assert_int_equal(icmp->icmp_code, 0);
    assert_int_equal(rte_raw_cksum(icmp, rte_be_to_cpu_16(ip->total_length) - sizeof(*ip)), 0xffff);
    /* the quoted header is the original one */
    assert_int_equal(rte_be_to_cpu_32(((struct rte_ipv4_hdr *)(icmp + 1))->dst_addr), IP(10, 1, 2, 5));
}

static void test_forward_no_route_sends_net_unreachable(void **state)
{
    struct rte_icmp_hdr *icmp;
    (void)state;
    learn_pod_a();
    input(PORT_PODS, ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(172, 16, 0, 1), 64, IPPROTO_UDP, 8));
    assert_int_equal(count(DP_CNT_IP4_NO_ROUTE), 1);
    assert_int_equal(sent.n, 1);
    icmp = (struct rte_icmp_hdr *)(frame_ip(sent.m[0]) + 1);
    assert_int_equal(icmp->icmp_type, DP_ICMP_DEST_UNREACH);
    assert_int_equal(icmp->icmp_code, DP_ICMP_NET_UNREACH);
}

static void test_forward_too_big_with_df_sends_frag_needed(void **state)
{
    struct rte_mbuf *m;
    struct rte_icmp_hdr *icmp;
    (void)state;
    learn_pod_a();
    stack.ports[PORT_FABRIC].mtu = 1000;
    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 64, IPPROTO_UDP, 1200);
    frame_ip(m)->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
    frame_ip(m)->hdr_checksum = 0;
    frame_ip(m)->hdr_checksum = rte_ipv4_cksum(frame_ip(m));
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_IP4_TOO_BIG), 1);
    assert_int_equal(sent.n, 1);
    icmp = (struct rte_icmp_hdr *)(frame_ip(sent.m[0]) + 1);
    assert_int_equal(icmp->icmp_type, DP_ICMP_DEST_UNREACH);
    assert_int_equal(icmp->icmp_code, DP_ICMP_FRAG_NEEDED);
    assert_int_equal(rte_be_to_cpu_16(icmp->icmp_seq_nb), 1000);
    /* the error itself fits the RFC 1812 576-byte bound */
    assert_true(rte_be_to_cpu_16(frame_ip(sent.m[0])->total_length) <= 576);
}

static void test_no_icmp_error_about_icmp_error(void **state)
{
    struct rte_mbuf *m;
    struct rte_icmp_hdr *icmp;
    (void)state;
    learn_pod_a();
    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 1, IPPROTO_ICMP, 36);
    icmp = (struct rte_icmp_hdr *)(frame_ip(m) + 1);
    icmp->icmp_type = DP_ICMP_DEST_UNREACH;
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_IP4_TTL_EXCEEDED), 1);
    assert_int_equal(sent.n, 0);
}

static void test_icmp_errors_rate_limited(void **state)
{
    (void)state;
    learn_pod_a();
    stack.icmp_errors_per_s = 3;
    lcore.icmp_tokens = 3;
    for (int i = 0; i < 5; i++)
        input(PORT_PODS, ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 1, IPPROTO_UDP, 8));
    assert_int_equal(count(DP_CNT_ICMP_ERROR_OUT), 3);
    assert_int_equal(count(DP_CNT_ICMP_RATELIMITED), 2);
    capture_reset();
    lcore.now_ms += 1000;
    dp_lcore_timers(&lcore);
    input(PORT_PODS, ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 1, IPPROTO_UDP, 8));
    assert_int_equal(count(DP_CNT_ICMP_ERROR_OUT), 4);
}

static void test_pending_queue_bounded_and_times_out(void **state)
{
    (void)state;
    learn_pod_a();
    for (int i = 0; i < 6; i++)
        input(PORT_PODS, ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 64, IPPROTO_UDP, 8));
    assert_int_equal(count(DP_CNT_ARP_PENDING_QUEUED), 4);
    assert_int_equal(count(DP_CNT_ARP_PENDING_OVERFLOW), 2);
    assert_int_equal(count(DP_CNT_ARP_REQUEST_OUT), 1); /* one request, not one per packet */
    capture_reset();
    lcore.now_ms += DP_ARP_RETRY_MS + 1;
    dp_lcore_timers(&lcore);
    dp_tx_flush(&lcore);
    assert_int_equal(count(DP_CNT_ARP_REQUEST_OUT), 2); /* retried */
    capture_reset();
    lcore.now_ms += DP_ARP_PENDING_TIMEOUT_MS;
    dp_lcore_timers(&lcore);
    assert_int_equal(count(DP_CNT_ARP_PENDING_TIMEOUT), 4);
    assert_int_equal(lcore.arp.n_pending, 0);
}

static void test_tx_refused_is_counted_and_freed(void **state)
{
    (void)state;
    refuse_tx = 1;
    input(PORT_PODS, arp_frame(RTE_ARP_OP_REQUEST, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 1, 1), &bcast));
    assert_int_equal(count(DP_CNT_IP4_TX_FULL), 1);
    assert_int_equal(sent.n, 0);
}

/* ---- ipv4 checks ---- */

static void test_ip4_header_checks(void **state)
{
    struct rte_mbuf *m;
    (void)state;

    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 64, IPPROTO_UDP, 8);
    frame_ip(m)->hdr_checksum ^= 0x0100;
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_IP4_BAD_CHECKSUM), 1);

    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 64, IPPROTO_UDP, 8);
    frame_ip(m)->version_ihl = 0x65;
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_IP4_BAD_VERSION), 1);

    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 64, IPPROTO_UDP, 8);
    frame_ip(m)->version_ihl = 0x44;
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_IP4_BAD_HEADER_LEN), 1);

    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 64, IPPROTO_UDP, 8);
    frame_ip(m)->total_length = rte_cpu_to_be_16(500);
    frame_ip(m)->hdr_checksum = 0;
    frame_ip(m)->hdr_checksum = rte_ipv4_cksum(frame_ip(m));
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_IP4_BAD_TOTAL_LEN), 1);

    m = frame_new(&mac_pods, &mac_pod_a, RTE_ETHER_TYPE_IPV4, 12);
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_IP4_TRUNCATED), 1);

    m = ip_frame(&mac_pods, &mac_pod_a, IP(127, 0, 0, 1), IP(10, 1, 2, 5), 64, IPPROTO_UDP, 8);
    input(PORT_PODS, m);
    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 0, 0, 1), IP(10, 1, 2, 5), 64, IPPROTO_UDP, 8); /* spoofs us */
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_IP4_BAD_SOURCE), 2);

    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(224, 0, 0, 5), 64, IPPROTO_UDP, 8);
    input(PORT_PODS, m);
    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 1, 255), 64, IPPROTO_UDP, 8);
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_IP4_MARTIAN_DEST), 2);
    assert_int_equal(sent.n, 0);
    assert_int_equal(count(DP_CNT_IP4_FORWARDED), 0);
}

static void test_ip4_padding_trimmed_and_options_counted(void **state)
{
    struct rte_mbuf *m;
    (void)state;
    learn_pod_a();
    learn_peer_node();
    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 64, IPPROTO_UDP, 4);
    rte_pktmbuf_append(m, 20); /* Ethernet padding beyond the IP total length */
    input(PORT_PODS, m);
    assert_int_equal(sent.n, 1);
    assert_int_equal(rte_pktmbuf_pkt_len(sent.m[0]), sizeof(struct rte_ether_hdr) + 24);
    capture_reset();

    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 64, IPPROTO_UDP, 8);
    frame_ip(m)->version_ihl = 0x46; /* 4 bytes of options (NOPs would be 1s; zeros end the list) */
    frame_ip(m)->total_length = rte_cpu_to_be_16(28);
    frame_ip(m)->hdr_checksum = 0;
    frame_ip(m)->hdr_checksum = rte_raw_cksum(frame_ip(m), 24) == 0xffff ? 0 : (uint16_t)~rte_raw_cksum(frame_ip(m), 24);
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_IP4_OPTIONS), 1);
    assert_int_equal(count(DP_CNT_IP4_FORWARDED), 2);
}

static void test_ip4_fragments_forwarded_but_not_delivered(void **state)
{
    struct rte_mbuf *m;
    (void)state;
    learn_pod_a();
    learn_peer_node();
    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 2, 5), 64, IPPROTO_UDP, 16);
    frame_ip(m)->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG);
    frame_ip(m)->hdr_checksum = 0;
    frame_ip(m)->hdr_checksum = rte_ipv4_cksum(frame_ip(m));
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_IP4_FORWARDED), 1);
    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 1, 1), 64, IPPROTO_ICMP, 16);
    frame_ip(m)->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG);
    frame_ip(m)->hdr_checksum = 0;
    frame_ip(m)->hdr_checksum = rte_ipv4_cksum(frame_ip(m));
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_IP4_LOCAL_FRAGMENT), 1);
    assert_int_equal(count(DP_CNT_IP4_FRAGMENTS), 2);
}

/* ---- icmp ---- */

static void test_icmp_echo_to_gateway_answered(void **state)
{
    struct rte_ipv4_hdr *ip;
    struct rte_icmp_hdr *icmp;
    (void)state;
    learn_pod_a();
    input(PORT_PODS, ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 1, 1), 64, IPPROTO_ICMP, 64));
    assert_int_equal(count(DP_CNT_ICMP_ECHO_IN), 1);
    assert_int_equal(sent.n, 1);
    assert_true(rte_is_same_ether_addr(&frame_eth(sent.m[0])->dst_addr, &mac_pod_a));
    ip = frame_ip(sent.m[0]);
    assert_int_equal(rte_be_to_cpu_32(ip->src_addr), IP(10, 1, 1, 1));
    assert_int_equal(rte_be_to_cpu_32(ip->dst_addr), IP(10, 1, 1, 10));
    assert_int_equal(rte_raw_cksum(ip, sizeof(*ip)), 0xffff);
    icmp = (struct rte_icmp_hdr *)(ip + 1);
    assert_int_equal(icmp->icmp_type, DP_ICMP_ECHO_REPLY);
    assert_int_equal(rte_be_to_cpu_16(icmp->icmp_ident), 77);
    assert_int_equal(rte_raw_cksum(icmp, 64), 0xffff);
}

static void test_icmp_echo_to_fabric_address_from_pod_answered(void **state)
{
    (void)state;
    learn_pod_a();
    input(PORT_PODS, ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 0, 0, 1), 64, IPPROTO_ICMP, 16));
    assert_int_equal(count(DP_CNT_ICMP_ECHO_OUT), 1);
    assert_int_equal(sent.n, 1);
    assert_int_equal(rte_be_to_cpu_32(frame_ip(sent.m[0])->src_addr), IP(10, 0, 0, 1));
}

static void test_icmp_bad_checksum_and_other_types(void **state)
{
    struct rte_mbuf *m;
    struct rte_icmp_hdr *icmp;
    (void)state;
    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 1, 1), 64, IPPROTO_ICMP, 16);
    icmp = (struct rte_icmp_hdr *)(frame_ip(m) + 1);
    icmp->icmp_cksum ^= 1;
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_ICMP_BAD_CHECKSUM), 1);
    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 1, 1), 64, IPPROTO_ICMP, 16);
    icmp = (struct rte_icmp_hdr *)(frame_ip(m) + 1);
    icmp->icmp_type = 13; /* timestamp */
    icmp->icmp_cksum = 0;
    icmp->icmp_cksum = (uint16_t)~rte_raw_cksum(icmp, 16);
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_ICMP_OTHER_IN), 1);
    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 1, 1), 64, IPPROTO_ICMP, 4);
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_ICMP_TRUNCATED), 1);
    m = ip_frame(&mac_pods, &mac_pod_a, IP(10, 1, 1, 10), IP(10, 1, 1, 1), 64, IPPROTO_UDP, 8);
    input(PORT_PODS, m);
    assert_int_equal(count(DP_CNT_IP4_LOCAL_PROTO), 1);
    assert_int_equal(sent.n, 0);
}

/* ---- multiple lcores ---- */

static void test_learned_neighbour_reaches_other_lcores(void **state)
{
    static struct dp_lcore other;
    (void)state;
    assert_int_equal(dp_lcore_init(&other, &stack, 1, 1, SOCKET_ID_ANY), 0);
    other.tx_burst = capture_tx;
    stack.n_lcores = 2;
    stack.lcores[1] = &other;
    learn_pod_a();
    assert_null(dp_arp_lookup(&other, PORT_PODS, IP(10, 1, 1, 10)));
    dp_lcore_drain_inbox(&other);
    assert_non_null(dp_arp_lookup(&other, PORT_PODS, IP(10, 1, 1, 10)));
    assert_int_equal(dp_counter_read(&other, DP_CNT_ARP_SYNC_IN), 1);
    /* the update is not echoed back */
    dp_lcore_drain_inbox(&lcore);
    assert_int_equal(count(DP_CNT_ARP_SYNC_IN), 0);
    stack.n_lcores = 1;
    dp_lcore_fini(&other);
}

static void rpc_mark(struct dp_lcore *lc, void *arg)
{
    *(unsigned *)arg = lc->lcore_id + 100;
}

static void test_rpc_runs_on_poll(void **state)
{
    static unsigned result;
    (void)state;
    /* no poller runs here: the call times out, then runs at the next poll */
    assert_int_equal(dp_lcore_rpc_call(&lcore, rpc_mark, &result, 1), -ETIMEDOUT);
    dp_lcore_rpc_poll(&lcore);
    assert_int_equal(result, 100);
    dp_lcore_rpc_poll(&lcore); /* nothing pending: no effect */
}

static void test_counter_names_unique(void **state)
{
    (void)state;
    for (int i = 0; i < DP_CNT_MAX; i++) {
        assert_non_null(dp_counter_name(i));
        assert_true(strlen(dp_counter_help(i)) > 0);
        for (int j = i + 1; j < DP_CNT_MAX; j++)
            assert_string_not_equal(dp_counter_name(i), dp_counter_name(j));
    }
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_eth_runt_dropped),
        T(test_eth_foreign_mac_dropped),
        T(test_eth_vlan_and_unknown_type_dropped),
        T(test_arp_request_for_gateway_answered_and_sender_learned),
        T(test_arp_request_for_other_address_ignored),
        T(test_arp_request_for_other_port_address_not_answered),
        T(test_arp_sender_outside_subnet_not_learned),
        T(test_arp_malformed_counted),
        T(test_arp_gratuitous_updates_known_entry),
        T(test_arp_entry_ages_out),
        T(test_forward_resolves_next_hop_then_sends_held_packet),
        T(test_forward_longest_prefix_wins),
        T(test_forward_checksum_carry_edge),
        T(test_forward_ttl_one_sends_time_exceeded),
        T(test_forward_no_route_sends_net_unreachable),
        T(test_forward_too_big_with_df_sends_frag_needed),
        T(test_no_icmp_error_about_icmp_error),
        T(test_icmp_errors_rate_limited),
        T(test_pending_queue_bounded_and_times_out),
        T(test_tx_refused_is_counted_and_freed),
        T(test_ip4_header_checks),
        T(test_ip4_padding_trimmed_and_options_counted),
        T(test_ip4_fragments_forwarded_but_not_delivered),
        T(test_icmp_echo_to_gateway_answered),
        T(test_icmp_echo_to_fabric_address_from_pod_answered),
        T(test_icmp_bad_checksum_and_other_types),
        T(test_learned_neighbour_reaches_other_lcores),
        T(test_rpc_runs_on_poll),
        T(test_counter_names_unique),
    };
    return cmocka_run_group_tests_name("dp_stack", tests, group_setup, group_teardown);
}
