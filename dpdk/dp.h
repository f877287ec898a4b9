/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The userspace network stack: shared immutable state (struct dp_stack) and per-lcore state (struct dp_lcore).
 *
 * Ownership:
 *  - struct dp_stack is built by the control thread before the workers start and is read-only afterwards
 *    (ports, the route table, the next hops, the mbuf pool). Workers read it without locks.
 *  - struct dp_lcore belongs to exactly one worker lcore. Only that lcore writes it; the control thread reads
 *    counters with relaxed loads and reaches anything else through dp_lcore_rpc_call().
 *  - An mbuf handed to a dp_* input function is consumed: it is sent, queued, or freed before the call returns.
 * All IPv4 addresses in these structs are in host byte order; packet headers stay in network order.
 */
#ifndef ZW_DP_H
#define ZW_DP_H

#include <stdbool.h>
#include <stdint.h>

#include <rte_ether.h>
#include <rte_mbuf.h>

#define DP_MAX_PORTS 8
#define DP_MAX_LCORES 16
#define DP_MAX_NEXTHOPS 512
#define DP_TX_BURST 64
#define DP_DEFAULT_TTL 64

enum dp_counter {
#define DP_COUNTER(sym, name, help) DP_CNT_##sym,
#include "dpdk/counters.def"
#undef DP_COUNTER
    DP_CNT_MAX
};

/* Name and help text of a counter, for /stats and /metrics. */
const char *dp_counter_name(enum dp_counter c);
const char *dp_counter_help(enum dp_counter c);

enum dp_port_role { DP_PORT_PODS, DP_PORT_FABRIC };

struct dp_port {
    uint16_t port_id;          /* ethdev port id */
    uint8_t index;             /* position in dp_stack.ports */
    enum dp_port_role role;
    char name[32];
    struct rte_ether_addr mac;
    uint32_t addr;             /* our address on the link */
    uint8_t prefix_len;
    uint32_t net;              /* connected subnet */
    uint32_t mask;
    uint16_t mtu;              /* largest IPv4 packet we send on this port */
    bool tx_cksum_offload;     /* the device fills IPv4 and TCP checksums (else software does) */
};

/* A route's result: the port, and the gateway to resolve (0: the destination itself is on the link). */
struct dp_nexthop {
    uint8_t port;
    uint32_t gateway;
};

struct dp_route_entry {        /* for /config_dump; the LPM holds the lookup form */
    uint32_t prefix;
    uint8_t len;
    uint16_t nexthop;
    bool connected;
};

struct rte_lpm;
struct rte_mempool;
struct dp_mesh_view;

struct dp_stack {
    int n_ports;
    struct dp_port ports[DP_MAX_PORTS];
    struct rte_lpm *lpm;
    int n_nexthops;
    struct dp_nexthop nexthops[DP_MAX_NEXTHOPS];
    int n_routes;
    struct dp_route_entry routes[DP_MAX_NEXTHOPS];
    struct rte_mempool *pool;
    uint32_t arp_timeout_ms;
    uint32_t arp_pending_max;
    uint32_t icmp_errors_per_s;
    int n_lcores;
    struct dp_lcore *lcores[DP_MAX_LCORES]; /* for neighbour sync between workers */
    const struct dp_mesh_view *mesh;        /* enrolled pods for flow classification; NULL: a plain router */
};

/* ---- neighbour table (per lcore) ---- */

#define DP_ARP_ENTRIES 1024
#define DP_ARP_RETRY_MS 1000
#define DP_ARP_PENDING_TIMEOUT_MS 3000

enum dp_arp_state { DP_ARP_FREE = 0, DP_ARP_INCOMPLETE, DP_ARP_REACHABLE };

struct dp_arp_entry {
    uint32_t ip;
    uint8_t port;
    uint8_t state;             /* enum dp_arp_state */
    struct rte_ether_addr mac;
    uint64_t updated_ms;       /* when the MAC was last confirmed */
    uint64_t requested_ms;     /* when we last asked (INCOMPLETE) */
};

struct dp_arp_pending {
    struct rte_mbuf *m;        /* IPv4 packet with room for an Ethernet header in front */
    uint32_t nexthop;
    uint8_t port;
    uint64_t queued_ms;
};

struct rte_hash;

struct dp_arp_table {
    struct rte_hash *index;    /* (port, ip) -> slot in entries */
    struct dp_arp_entry entries[DP_ARP_ENTRIES];
    uint32_t n_pending;
    uint32_t pending_cap;
    struct dp_arp_pending *pending; /* FIFO of n_pending, oldest first */
    uint64_t last_sweep_ms;
};

/* ---- per lcore ---- */

struct dp_lcore;
typedef uint16_t (*dp_tx_burst_fn)(struct dp_lcore *lc, uint8_t port, struct rte_mbuf **pkts, uint16_t n);
typedef void (*dp_rpc_fn)(struct dp_lcore *lc, void *arg);

struct dp_txq {
    uint16_t n;
    struct rte_mbuf *pkts[DP_TX_BURST];
};

struct dp_lcore_stats {
    uint64_t rx_packets;
    uint64_t tx_packets;
    uint64_t polls;
    uint64_t idle_sleeps;
};

struct rte_ring;
struct dp_tcp;

struct dp_lcore {
    unsigned lcore_id;
    unsigned worker;           /* 0..n_workers-1; also the queue id on every port */
    const struct dp_stack *stack;
    uint64_t now_ms;           /* the clock of this burst, set by the poll loop */
    dp_tx_burst_fn tx_burst;   /* rte_eth_tx_burst in production, a capture in tests */
    struct dp_txq tx[DP_MAX_PORTS];
    struct dp_arp_table arp;
    struct dp_tcp *tcp;        /* NULL until dp_tcp_init() */
    struct rte_ring *inbox;    /* neighbour updates from other lcores (multi-producer) */
    struct rte_ring *handoff;  /* packets of this lcore's connections that arrived elsewhere (multi-producer) */
    uint64_t icmp_tokens;      /* ICMP error budget, refilled every second */
    uint64_t icmp_refill_ms;
    struct dp_lcore_stats stats;
    uint64_t counters[DP_CNT_MAX];
    /* A call from the control thread, run between bursts (see dp_lcore_rpc_call). */
    dp_rpc_fn rpc_fn;
    void *rpc_arg;
    uint32_t rpc_pending;      /* 1 while a call waits; written with release, read with acquire */
} __rte_cache_aligned;

/* Count one event on the owning lcore; readers on other threads see it eventually (relaxed). */
static inline void dp_count(struct dp_lcore *lc, enum dp_counter c)
{
    __atomic_store_n(&lc->counters[c], __atomic_load_n(&lc->counters[c], __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

/* Read a counter of any lcore from any thread. */
static inline uint64_t dp_counter_read(const struct dp_lcore *lc, enum dp_counter c)
{
    return __atomic_load_n(&lc->counters[c], __ATOMIC_RELAXED);
}

/* Count c and free m. Always returns 0 so input paths can `return dp_drop(...)`. */
int dp_drop(struct dp_lcore *lc, struct rte_mbuf *m, enum dp_counter c);

/*
 * Initialise lc for worker `worker` on `lcore_id`. Allocates the neighbour table and the inbox on `socket`.
 * Returns 0 or -errno (-ENOMEM). The stack must outlive the lcore.
 */
int dp_lcore_init(struct dp_lcore *lc, const struct dp_stack *stack, unsigned lcore_id, unsigned worker, int socket);
/* Free everything dp_lcore_init allocated, including held packets. Idempotent. */
void dp_lcore_fini(struct dp_lcore *lc);

/* Process one received frame from port index `port`. Consumes m. */
void dp_eth_input(struct dp_lcore *lc, uint8_t port, struct rte_mbuf *m);

/*
 * Queue an Ethernet frame for transmission on `port`. Consumes m: when the queue is full it is flushed first;
 * frames the port refuses are freed and counted.
 */
void dp_tx_enqueue(struct dp_lcore *lc, uint8_t port, struct rte_mbuf *m);
/* Transmit every queued frame. Called at the end of each burst. */
void dp_tx_flush(struct dp_lcore *lc);

/* Periodic work: neighbour aging and resolution timeouts. Call once per loop iteration; cheap when idle. */
void dp_lcore_timers(struct dp_lcore *lc);

/* Apply neighbour updates received from other lcores, and take the packets they handed over. */
void dp_lcore_drain_inbox(struct dp_lcore *lc);

/*
 * The lcore that owns a connection we opened with local port `port` (connects pick ports that map to the dialing
 * worker: port % n_lcores == worker), or NULL when it is this one or the port is not one of ours.
 */
struct dp_lcore *dp_lcore_port_owner(struct dp_lcore *lc, uint16_t port);
/* m->hash.usr of a handed-over packet: route it on when the owner has no such connection (else: TCP input). */
#define DP_HANDOFF_ROUTE_IF_UNKNOWN 1u
/*
 * m->hash.usr of a segment of a captured flow that missed on the lcore it arrived at (a port that spills a flow to
 * another queue, as af_packet's fanout rollover does under load): it visits the other lcores in turn, the hop count
 * in the bits above DP_HANDOFF_HOPS_SHIFT; the one that holds the connection takes it, after the last the segment
 * is routed on as before.
 */
#define DP_HANDOFF_SEARCH 2u
#define DP_HANDOFF_HOPS_SHIFT 8
/* The next lcore after lc, for DP_HANDOFF_SEARCH. */
struct dp_lcore *dp_lcore_next(struct dp_lcore *lc);
/* Hand m (at the IP header) to the lcore that owns its connection. Consumes m. */
void dp_lcore_handoff(struct dp_lcore *lc, struct dp_lcore *owner, struct rte_mbuf *m);

/*
 * Run fn(lc, arg) on lc's own thread between bursts and wait for it, at most timeout_ms.
 * Called only from the control thread, one call at a time per lcore. Returns 0; -ETIMEDOUT (the call still
 * runs later: arg must stay valid until the lcore stops, so pass storage that lives as long as the lcore);
 * or -EBUSY while an earlier timed-out call has not run yet.
 */
int dp_lcore_rpc_call(struct dp_lcore *lc, dp_rpc_fn fn, void *arg, unsigned timeout_ms);
/* Run a pending RPC, if any. Called by the poll loop. */
void dp_lcore_rpc_poll(struct dp_lcore *lc);

#endif
