/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The userspace TCP, two stacks back to back: lcore A (10.9.0.1) and lcore B (10.9.0.2) exchange frames through
 * an in-memory wire that can drop, delay and reorder them, driven by a fake clock. Owners on both ends are small
 * test applications (a pattern writer and a checking sink) on the mesh_conn interface. A scripted peer that sends
 * hand-built segments covers the validation rules (RFC 5961, PAWS, SYN cookies).
 *
 * Every test ends with both stacks back to their starting counts: no connection block, timer, buffer or packet
 * mbuf left behind.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <rte_eal.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_random.h>
#include <rte_tcp.h>

#include "dpdk/dp.h"
#include "dpdk/stack.h"
#include "dpdk/tcp.h"
#include "dpdk/tcp_impl.h"
#include "dpdk/conn_dpdk.h"
#include "mesh/relay.h"
#include "dpdk/classify.h"

#define IP(a, b, c, d) (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((uint32_t)(c) << 8) | (uint32_t)(d))
#define IP_A IP(10, 9, 0, 1)
#define IP_B IP(10, 9, 0, 2)
#define PORT_SRV 8080

static struct rte_mempool *pool;

struct side {
    struct dp_stack st;
    struct dp_lcore lc;
};
static struct side A, B;

/* ---- the wire ---- */

#define WIRE_MAX 8192
struct wire {
    int n;
    struct rte_mbuf *m[WIRE_MAX];
    uint64_t due[WIRE_MAX];
    unsigned loss_pct;       /* data and pure ACK segments alike */
    unsigned jitter_ms;      /* 0..jitter added: reorders */
    unsigned delay_ms;
    bool blackhole;
    uint64_t sent, dropped;
};
static struct wire a_to_b, b_to_a;
static uint64_t now_ms;

static uint16_t wire_tx(struct dp_lcore *lc, uint8_t port, struct rte_mbuf **pkts, uint16_t n)
{
    struct wire *w = lc == &A.lc ? &a_to_b : &b_to_a;
    for (uint16_t i = 0; i < n; i++) {
        /* nothing larger than the link MTU may leave a port */
        assert_true(rte_pktmbuf_pkt_len(pkts[i]) <= (uint32_t)RTE_ETHER_HDR_LEN + lc->stack->ports[port].mtu);
        w->sent++;
        if (w->blackhole || (w->loss_pct && rte_rand_max(100) < w->loss_pct) || w->n == WIRE_MAX) {
            w->dropped++;
            rte_pktmbuf_free(pkts[i]);
            continue;
        }
        w->m[w->n] = pkts[i];
        w->due[w->n] = now_ms + w->delay_ms + (w->jitter_ms ? rte_rand_max(w->jitter_ms + 1) : 0);
        w->n++;
    }
    return n;
}

/* A second worker of B's stack (tests of the handoff between lcores); NULL in the other tests. When set, every
 * frame for B arrives on it, as RSS would put replies of B's first worker on the "wrong" queue. */
static struct dp_lcore *b_second;

static void wire_deliver(struct wire *w, struct side *to)
{
    int kept = 0;
    for (int i = 0; i < w->n; i++) {
        if (w->due[i] <= now_ms) {
            dp_eth_input(to == &B && b_second != NULL ? b_second : &to->lc, 0, w->m[i]);
        } else {
            w->m[kept] = w->m[i];
            w->due[kept] = w->due[i];
            kept++;
        }
    }
    w->n = kept;
}

static void wire_flush(struct wire *w)
{
    for (int i = 0; i < w->n; i++)
        rte_pktmbuf_free(w->m[i]);
    w->n = 0;
}

static void lcore_step(struct dp_lcore *lc)
{
    lc->now_ms = now_ms;
    dp_lcore_drain_inbox(lc);
    dp_lcore_timers(lc);
    dp_tcp_timers(lc);
    dp_tcp_run_deferred(lc);
    dp_tx_flush(lc);
}

static void side_step(struct side *s)
{
    if (s == &B && b_second != NULL)
        lcore_step(b_second);
    lcore_step(&s->lc);
}

/* Advance the clock by ms, one millisecond at a time, moving frames and running timers. */
static void pump(uint64_t ms)
{
    for (uint64_t i = 0; i < ms; i++) {
        for (int round = 0; round < 4; round++) {
            A.lc.now_ms = B.lc.now_ms = now_ms;
            wire_deliver(&a_to_b, &B);
            side_step(&B);
            wire_deliver(&b_to_a, &A);
            side_step(&A);
        }
        now_ms++;
    }
}

/* Pump until cond() or ms elapse. */
static bool pump_until(bool (*cond)(void), uint64_t ms)
{
    for (uint64_t i = 0; i < ms; i++) {
        if (cond())
            return true;
        pump(1);
    }
    return cond();
}

/* ---- applications ---- */

struct app {
    struct mesh_conn *c;
    struct side *side;
    /* writer */
    uint64_t to_send, sent;
    bool shut_after_send;
    /* reader */
    uint64_t received;
    uint64_t mismatches;
    bool consume; /* false: take nothing (backpressure) */
    /* events */
    int writable, peer_fin, closed;
    int close_err;
};

static uint8_t pattern(uint64_t off)
{
    return (uint8_t)((off * 7 + (off >> 11)) & 0xff);
}

static void app_pump_writes(struct app *a)
{
    uint8_t buf[16384];
    while (a->sent < a->to_send) {
        size_t n = (size_t)RTE_MIN((uint64_t)sizeof(buf), a->to_send - a->sent);
        struct iovec v = {buf, n};
        ssize_t w;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(a->sent + i);
        w = dp_tcp_write(a->c, &v, 1);
        assert_true(w >= 0);
        a->sent += (uint64_t)w;
        if ((size_t)w < n)
            return;
    }
    if (a->shut_after_send && a->sent == a->to_send) {
        a->shut_after_send = false;
        assert_int_equal(dp_tcp_shutdown_wr(a->c), 0);
    }
}

static size_t app_on_data(void *u, const uint8_t *p, size_t n)
{
    struct app *a = u;
    if (!a->consume)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern(a->received + i))
            a->mismatches++;
    a->received += n;
    return n;
}

static void app_on_writable(void *u)
{
    struct app *a = u;
    a->writable++;
    app_pump_writes(a);
}

static void app_on_peer_fin(void *u)
{
    struct app *a = u;
    a->peer_fin++;
}

static void app_on_closed(void *u, int err)
{
    struct app *a = u;
    a->closed++;
    a->close_err = err;
    a->c = NULL;
}

static const struct mesh_conn_cb app_cb = {
    .on_data = app_on_data,
    .on_writable = app_on_writable,
    .on_peer_fin = app_on_peer_fin,
    .on_closed = app_on_closed,
};

#define MAX_APPS 600
static struct app servers[MAX_APPS];
static int n_servers;
static bool refuse_accepts;

static bool server_accept(void *ctx, struct mesh_conn *c)
{
    struct app *a;
    (void)ctx;
    if (refuse_accepts || n_servers == MAX_APPS)
        return false;
    a = &servers[n_servers++];
    memset(a, 0, sizeof(*a));
    a->c = c;
    a->side = &B;
    a->consume = true;
    dp_tcp_set_callbacks(c, &app_cb, a);
    return true;
}

static struct dp_tcp_listener *listener;

static void client_open(struct app *a, uint16_t port)
{
    memset(a, 0, sizeof(*a));
    a->side = &A;
    a->consume = true;
    assert_int_equal(dp_tcp_connect(&A.lc, 0, IP_B, port, &app_cb, a, &a->c), 0);
}

/* ---- a server on A (for B's dials) ---- */

#define PORT_SRV_A 7070
static struct dp_tcp_listener *a_listener;
static int a_accepted;
static uint32_t a_server_peer_ip;
static struct mesh_conn *a_server_conn;

static bool a_server_accept(void *ctx, struct mesh_conn *c)
{
    uint32_t lip, rip;
    uint16_t lport, rport;
    static struct app a_app;
    (void)ctx;
    memset(&a_app, 0, sizeof(a_app));
    a_app.consume = true;
    dp_tcp_addrs(c, &lip, &lport, &rip, &rport);
    a_server_peer_ip = rip;
    a_server_conn = c;
    a_accepted++;
    dp_tcp_set_callbacks(c, &app_cb, &a_app);
    return true;
}

static bool a_server_accepted(void)
{
    return a_accepted > 0;
}

/* ---- fixtures ---- */

static void side_init(struct side *s, const struct rte_ether_addr *mac, uint32_t addr, unsigned lcore_id,
                      const struct dp_tcp_config *tcfg)
{
    char err[128];
    memset(s, 0, sizeof(*s));
    s->st.n_ports = 1;
    s->st.ports[0].mac = *mac;
    s->st.ports[0].addr = addr;
    s->st.ports[0].prefix_len = 24;
    s->st.ports[0].mask = 0xffffff00u;
    s->st.ports[0].net = addr & 0xffffff00u;
    s->st.ports[0].mtu = 1500;
    snprintf(s->st.ports[0].name, sizeof(s->st.ports[0].name), "p");
    s->st.pool = pool;
    s->st.arp_timeout_ms = 600000;
    s->st.arp_pending_max = 256;
    s->st.icmp_errors_per_s = 100;
    /* A reaches 10.9.9.0/24 (addresses that B captures or hosts transparently) through B */
    struct dp_route_spec far = {.prefix = IP(10, 9, 9, 0), .len = 24, .via = IP_B};
    assert_int_equal(dp_route_build(&s->st, &far, addr == IP_A ? 1 : 0, SOCKET_ID_ANY, err, sizeof(err)), 0);
    assert_int_equal(dp_lcore_init(&s->lc, &s->st, lcore_id, 0, SOCKET_ID_ANY), 0);
    s->lc.tx_burst = wire_tx;
    s->lc.now_ms = now_ms;
    assert_int_equal(dp_tcp_init(&s->lc, tcfg, SOCKET_ID_ANY), 0);
}

static struct dp_tcp_config test_cfg;

static int group_setup(void **state)
{
    char *argv[] = {"test_tcp", "--no-huge", "-m", "512", "--no-pci", "-l", "0", "--no-shconf",
                    "--file-prefix=zwut-tcp", "--log-level=error", "--no-telemetry"};
    (void)state;
    if (rte_eal_init((int)RTE_DIM(argv), argv) < 0)
        return -1;
    pool = rte_pktmbuf_pool_create("zwut_tcp_pool", 16383, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
    return pool == NULL ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    rte_mempool_free(pool);
    rte_eal_cleanup();
    return 0;
}

static void default_cfg(void)
{
    dp_tcp_config_defaults(&test_cfg);
    test_cfg.max_conns = 2048;
    test_cfg.buffer_mbufs = 8191;
    test_cfg.sndbuf_max = 256 * 1024;
    test_cfg.rcvbuf_max = 256 * 1024;
    test_cfg.time_wait_ms = 2000;
}

static int setup_with(void)
{
    static const struct rte_ether_addr mac_a = {{2, 0, 0, 0, 9, 1}}, mac_b = {{2, 0, 0, 0, 9, 2}};
    int err = 0;

    now_ms = 1000000;
    memset(&a_to_b, 0, sizeof(a_to_b));
    memset(&b_to_a, 0, sizeof(b_to_a));
    rte_srand(12345);
    side_init(&A, &mac_a, IP_A, 10, &test_cfg);
    side_init(&B, &mac_b, IP_B, 11, &test_cfg);
    n_servers = 0;
    refuse_accepts = false;
    listener = dp_tcp_listen(&B.lc, 0, PORT_SRV, NULL, server_accept, NULL, &err);
    a_accepted = 0;
    a_listener = dp_tcp_listen(&A.lc, 0, PORT_SRV_A, NULL, a_server_accept, NULL, &err);
    return listener == NULL || a_listener == NULL ? -1 : 0;
}

static int setup(void **state)
{
    (void)state;
    default_cfg();
    return setup_with();
}

static int teardown(void **state)
{
    struct dp_tcp_usage ua, ub;
    (void)state;
    if (b_second != NULL) { /* a two-worker test failed half-way */
        B.st.n_lcores = 1;
        dp_tcp_fini(b_second);
        dp_lcore_fini(b_second);
        b_second = NULL;
    }
    /* let TIME-WAIT and retransmissions finish, then everything must be back */
    a_to_b.blackhole = b_to_a.blackhole = false;
    a_to_b.loss_pct = b_to_a.loss_pct = 0;
    pump(test_cfg.time_wait_ms + 100);
    dp_tcp_unlisten(&B.lc, listener);
    dp_tcp_unlisten(&A.lc, a_listener);
    dp_tcp_usage(&A.lc, &ua);
    dp_tcp_usage(&B.lc, &ub);
    wire_flush(&a_to_b);
    wire_flush(&b_to_a);
    dp_tcp_fini(&A.lc);
    dp_tcp_fini(&B.lc);
    dp_lcore_fini(&A.lc);
    dp_lcore_fini(&B.lc);
    dp_route_free(&A.st);
    dp_route_free(&B.st);
    /* checked after freeing, so that one failing test does not starve the next of memory */
    assert_int_equal(ua.conns_in_use, 0);
    assert_int_equal(ua.timers_armed, 0);
    assert_int_equal(ua.buffer_mbufs_in_use, 0);
    assert_int_equal(ub.conns_in_use, 0);
    assert_int_equal(ub.timers_armed, 0);
    assert_int_equal(ub.buffer_mbufs_in_use, 0);
    assert_int_equal(rte_mempool_in_use_count(pool), 0);
    return 0;
}

static uint64_t cnt(struct side *s, enum dp_counter c)
{
    return dp_counter_read(&s->lc, c);
}

static struct app client;

static bool client_established(void)
{
    return client.writable > 0;
}

static bool both_closed(void)
{
    return client.closed && n_servers > 0 && servers[0].closed;
}

/* ---- handshake and options ---- */

static void test_tcp_handshake_negotiates_options(void **state)
{
    (void)state;
    client_open(&client, PORT_SRV);
    assert_true(pump_until(client_established, 100));
    assert_int_equal(n_servers, 1);
    assert_int_equal(client.c->state, DP_TCP_ESTABLISHED);
    assert_int_equal(servers[0].c->state, DP_TCP_ESTABLISHED);
    for (int i = 0; i < 2; i++) {
        struct mesh_conn *c = i ? servers[0].c : client.c;
        assert_true(c->flags & TCPF_SACK_OK);
        assert_true(c->flags & TCPF_TS_OK);
        assert_true(c->flags & TCPF_WS_OK);
        assert_int_equal(c->mss, 1460);
        assert_int_equal(c->snd_wscale, tcp_wscale_for(test_cfg.rcvbuf_max));
    }
    assert_int_equal(cnt(&A, DP_CNT_TCP_CONN_OPENED_ACTIVE), 1);
    assert_int_equal(cnt(&B, DP_CNT_TCP_CONN_OPENED_PASSIVE), 1);
    dp_tcp_abort(client.c);
    pump(10);
}

static void test_tcp_options_off_when_peer_lacks_them(void **state)
{
    (void)state;
    dp_tcp_fini(&B.lc);
    test_cfg.sack = test_cfg.timestamps = test_cfg.window_scaling = false;
    assert_int_equal(dp_tcp_init(&B.lc, &test_cfg, SOCKET_ID_ANY), 0);
    {
        int err;
        listener = dp_tcp_listen(&B.lc, 0, PORT_SRV, NULL, server_accept, NULL, &err);
    }
    client_open(&client, PORT_SRV);
    assert_true(pump_until(client_established, 100));
    assert_false(client.c->flags & (TCPF_SACK_OK | TCPF_TS_OK | TCPF_WS_OK));
    assert_int_equal(client.c->snd_wscale, 0);
    assert_int_equal(client.c->rcv_wscale, 0);
    dp_tcp_abort(client.c);
    pump(10);
}

static void test_tcp_connect_refused_without_listener(void **state)
{
    (void)state;
    client_open(&client, 9999);
    pump(50);
    assert_int_equal(client.closed, 1);
    assert_int_equal(client.close_err, -ECONNREFUSED);
    assert_int_equal(client.writable, 0);
    assert_int_equal(cnt(&B, DP_CNT_TCP_NO_LISTENER), 1);
    assert_int_equal(cnt(&A, DP_CNT_TCP_CONN_REFUSED), 1);
}

static void test_tcp_connect_times_out_with_backoff(void **state)
{
    (void)state;
    a_to_b.blackhole = true;
    client_open(&client, PORT_SRV);
    pump(1000 + 10);
    assert_int_equal(cnt(&A, DP_CNT_TCP_RTO), 1); /* initial RTO 1 s (RFC 6298 2.1) */
    pump(2000);
    assert_int_equal(cnt(&A, DP_CNT_TCP_RTO), 2); /* then doubled */
    pump(200000);
    assert_int_equal(client.closed, 1);
    assert_int_equal(client.close_err, -ETIMEDOUT);
    assert_int_equal(cnt(&A, DP_CNT_TCP_RTX_TIMEOUT), 1);
}

static void test_tcp_refused_by_owner_gets_rst(void **state)
{
    (void)state;
    refuse_accepts = true;
    client_open(&client, PORT_SRV);
    pump(50);
    assert_int_equal(cnt(&B, DP_CNT_TCP_ACCEPT_QUEUE_FULL), 1);
    assert_int_equal(client.closed, 1);
    assert_int_equal(client.close_err, -ECONNRESET);
}

/* ---- data transfer ---- */

static bool transfer_done(void)
{
    return n_servers > 0 && servers[0].received == client.to_send && servers[0].peer_fin;
}

static void run_transfer(uint64_t bytes, uint64_t budget_ms)
{
    client_open(&client, PORT_SRV);
    client.to_send = bytes;
    client.shut_after_send = true;
    assert_true(pump_until(transfer_done, budget_ms));
    assert_int_equal(servers[0].mismatches, 0);
    assert_int_equal(servers[0].received, bytes);
    /* the server closes its side: both ends see an orderly close */
    assert_int_equal(dp_tcp_shutdown_wr(servers[0].c), 0);
    assert_true(pump_until(both_closed, 5000));
    assert_int_equal(client.close_err, 0);
    assert_int_equal(servers[0].close_err, 0);
    assert_int_equal(client.peer_fin, 1);
}

static void test_tcp_bulk_transfer_clean(void **state)
{
    (void)state;
    run_transfer(8u << 20, 20000);
    assert_int_equal(cnt(&A, DP_CNT_TCP_RETRANSMIT), 0);
    /* the active closer holds TIME-WAIT */
    assert_int_equal(cnt(&A, DP_CNT_TCP_CONN_CLOSED), 0);
}

static void test_tcp_bulk_transfer_with_loss_and_reordering_sack(void **state)
{
    (void)state;
    a_to_b.loss_pct = b_to_a.loss_pct = 5;
    a_to_b.jitter_ms = b_to_a.jitter_ms = 3;
    a_to_b.delay_ms = b_to_a.delay_ms = 1;
    run_transfer(4u << 20, 300000);
    assert_true(cnt(&A, DP_CNT_TCP_RETRANSMIT) > 0);
    assert_true(cnt(&A, DP_CNT_TCP_SACK_RECOVERY) > 0);
    assert_true(cnt(&B, DP_CNT_TCP_OOO_SEGMENTS) > 0);
}

static void test_tcp_bulk_transfer_with_loss_newreno(void **state)
{
    (void)state;
    dp_tcp_fini(&B.lc);
    test_cfg.sack = false;
    test_cfg.cc = DP_TCP_CC_NEWRENO;
    assert_int_equal(dp_tcp_init(&B.lc, &test_cfg, SOCKET_ID_ANY), 0);
    {
        int err;
        listener = dp_tcp_listen(&B.lc, 0, PORT_SRV, NULL, server_accept, NULL, &err);
    }
    a_to_b.loss_pct = 3;
    a_to_b.delay_ms = b_to_a.delay_ms = 1;
    run_transfer(2u << 20, 300000);
    assert_false(client.c != NULL && (client.c->flags & TCPF_SACK_OK));
    assert_true(cnt(&A, DP_CNT_TCP_FAST_RETRANSMIT) > 0);
    assert_int_equal(cnt(&A, DP_CNT_TCP_SACK_RECOVERY), 0);
}

static void test_tcp_half_close_both_ways(void **state)
{
    (void)state;
    client_open(&client, PORT_SRV);
    client.to_send = 1000;
    client.shut_after_send = true;
    assert_true(pump_until(transfer_done, 1000));
    assert_int_equal(servers[0].c->state, DP_TCP_CLOSE_WAIT);
    /* the server keeps talking after the client's FIN */
    servers[0].to_send = 300000;
    servers[0].shut_after_send = true;
    app_pump_writes(&servers[0]);
    assert_true(pump_until(both_closed, 10000));
    assert_int_equal(client.received, 300000);
    assert_int_equal(client.mismatches, 0);
    assert_int_equal(client.close_err, 0);
    assert_int_equal(servers[0].close_err, 0);
}

static void test_tcp_abort_resets_peer(void **state)
{
    (void)state;
    client_open(&client, PORT_SRV);
    assert_true(pump_until(client_established, 100));
    pump(5);
    dp_tcp_abort(client.c);
    pump(10);
    assert_int_equal(servers[0].closed, 1);
    assert_int_equal(servers[0].close_err, -ECONNRESET);
    assert_int_equal(cnt(&B, DP_CNT_TCP_RST_IN), 1);
    assert_int_equal(client.closed, 0); /* abort means no upcall */
}

static bool server_has_bytes(void)
{
    return n_servers > 0 && servers[0].received > 0;
}

static void test_tcp_zero_window_stalls_and_resumes(void **state)
{
    (void)state;
    client_open(&client, PORT_SRV);
    assert_true(pump_until(client_established, 100));
    pump(2);
    servers[0].consume = false;
    dp_tcp_read_enable(servers[0].c, false);
    client.to_send = 2u << 20;
    app_pump_writes(&client);
    pump(5000);
    assert_int_equal(servers[0].received, 0);
    assert_int_equal(client.c->snd_wnd, 0);
    assert_true(cnt(&A, DP_CNT_TCP_ZERO_WINDOW_PROBE) > 0);
    assert_true(servers[0].c->rcvq.bytes + servers[0].c->mss >= test_cfg.rcvbuf_max);
    servers[0].consume = true;
    dp_tcp_read_enable(servers[0].c, true);
    client.shut_after_send = true;
    app_pump_writes(&client);
    assert_true(pump_until(transfer_done, 30000));
    assert_int_equal(servers[0].mismatches, 0);
    assert_true(server_has_bytes());
    dp_tcp_shutdown_wr(servers[0].c);
    assert_true(pump_until(both_closed, 5000));
}

static void test_tcp_keepalive_detects_vanished_peer(void **state)
{
    (void)state;
    client_open(&client, PORT_SRV);
    assert_true(pump_until(client_established, 100));
    dp_tcp_set_keepalive(client.c, 1000, 200, 3);
    pump(1500);
    assert_int_equal(client.closed, 0); /* the peer answers probes */
    assert_true(cnt(&A, DP_CNT_TCP_KEEPALIVE_PROBE) >= 1);
    b_to_a.blackhole = a_to_b.blackhole = true;
    pump(3000);
    assert_int_equal(client.closed, 1);
    assert_int_equal(client.close_err, -ETIMEDOUT);
    assert_int_equal(cnt(&A, DP_CNT_TCP_KEEPALIVE_TIMEOUT), 1);
    b_to_a.blackhole = a_to_b.blackhole = false;
    dp_tcp_abort(servers[0].c);
}

static bool all_done(void);
static struct app many[500];
static bool all_done(void)
{
    for (int i = 0; i < 500; i++)
        if (!many[i].closed)
            return false;
    return n_servers == 500;
}

static size_t echo_and_close_on_data(void *u, const uint8_t *p, size_t n);

static void test_tcp_many_concurrent_connections(void **state)
{
    (void)state;
    for (int i = 0; i < 500; i++) {
        client_open(&many[i], PORT_SRV);
        many[i].to_send = 5000 + (uint64_t)i;
        many[i].shut_after_send = true;
    }
    pump(3000);
    assert_int_equal(n_servers, 500);
    for (int i = 0; i < 500; i++) {
        assert_int_equal(servers[i].mismatches, 0);
        assert_int_equal(servers[i].peer_fin, 1);
        dp_tcp_shutdown_wr(servers[i].c);
    }
    assert_true(pump_until(all_done, 5000));
    uint64_t total = 0, expect = 0;
    for (int i = 0; i < 500; i++) {
        total += servers[i].received;
        expect += 5000 + (uint64_t)i;
        assert_int_equal(many[i].close_err, 0);
    }
    assert_int_equal(total, expect);
    (void)echo_and_close_on_data;
}

static size_t echo_and_close_on_data(void *u, const uint8_t *p, size_t n)
{
    (void)u;
    (void)p;
    return n;
}

static void test_tcp_simultaneous_close(void **state)
{
    (void)state;
    client_open(&client, PORT_SRV);
    assert_true(pump_until(client_established, 100));
    pump(5);
    dp_tcp_shutdown_wr(client.c);
    dp_tcp_shutdown_wr(servers[0].c);
    assert_true(pump_until(both_closed, 2000));
    assert_int_equal(client.close_err, 0);
    assert_int_equal(servers[0].close_err, 0);
}

/* ---- a scripted peer: hand-built segments into B ---- */

static const struct rte_ether_addr mac_x = {{2, 0, 0, 0, 9, 3}};
#define IP_X IP(10, 9, 0, 3)

struct seg_spec {
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t flags;
    uint16_t win;
    const uint8_t *opts;
    unsigned olen;
    unsigned len;
};

static void inject(const struct seg_spec *s)
{
    struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
    unsigned thl = 20 + s->olen;
    struct rte_ether_hdr *eh = (struct rte_ether_hdr *)rte_pktmbuf_append(m, (uint16_t)(14 + 20 + thl + s->len));
    struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
    struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)(ip + 1);

    memset(eh, 0, 14 + 20 + thl + s->len);
    eh->dst_addr = B.st.ports[0].mac;
    eh->src_addr = mac_x;
    eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    ip->version_ihl = RTE_IPV4_VHL_DEF;
    ip->total_length = rte_cpu_to_be_16((uint16_t)(20 + thl + s->len));
    ip->time_to_live = 64;
    ip->next_proto_id = IPPROTO_TCP;
    ip->src_addr = rte_cpu_to_be_32(IP_X);
    ip->dst_addr = rte_cpu_to_be_32(IP_B);
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    th->src_port = rte_cpu_to_be_16(s->sport);
    th->dst_port = rte_cpu_to_be_16(s->dport);
    th->sent_seq = rte_cpu_to_be_32(s->seq);
    th->recv_ack = rte_cpu_to_be_32(s->ack);
    th->data_off = (uint8_t)((thl / 4) << 4);
    th->tcp_flags = s->flags;
    th->rx_win = rte_cpu_to_be_16(s->win ? s->win : 65535);
    if (s->olen)
        memcpy(th + 1, s->opts, s->olen);
    th->cksum = rte_ipv4_udptcp_cksum(ip, th);
    B.lc.now_ms = now_ms;
    dp_eth_input(&B.lc, 0, m);
    side_step(&B);
}

/* What B sent to X, parsed: the last TCP segment. */
struct seen {
    int n;
    uint32_t seq, ack;
    uint8_t flags;
    uint16_t win;
    unsigned optlen;
    uint8_t opts[40];
};

static struct seen collect_x(void)
{
    struct seen s = {0};
    int kept = 0;
    for (int i = 0; i < b_to_a.n; i++) {
        struct rte_mbuf *m = b_to_a.m[i];
        struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
        struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
        if (eh->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) && ip->dst_addr == rte_cpu_to_be_32(IP_X) &&
            ip->next_proto_id == IPPROTO_TCP) {
            struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)(ip + 1);
            s.n++;
            s.seq = rte_be_to_cpu_32(th->sent_seq);
            s.ack = rte_be_to_cpu_32(th->recv_ack);
            s.flags = th->tcp_flags;
            s.win = rte_be_to_cpu_16(th->rx_win);
            s.optlen = (unsigned)(th->data_off >> 4) * 4 - 20;
            memcpy(s.opts, th + 1, s.optlen);
            assert_int_equal(rte_ipv4_udptcp_cksum_verify(ip, th), 0);
            rte_pktmbuf_free(m);
            continue;
        }
        if (eh->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP)) { /* B asks for X: answer it */
            rte_pktmbuf_free(m);
            continue;
        }
        b_to_a.m[kept] = m;
        b_to_a.due[kept++] = b_to_a.due[i];
    }
    b_to_a.n = kept;
    return s;
}

static void learn_x(void)
{
    dp_arp_learn(&B.lc, 0, IP_X, &mac_x, false);
}

/* Handshake X -> B by hand; returns B's ISN + 1 and leaves X's next seq at 1001. */
static uint32_t x_handshake(uint16_t sport)
{
    static const uint8_t mss_opt[] = {2, 4, 0x05, 0xb4};
    struct seen s;
    learn_x();
    inject(&(struct seg_spec){.sport = sport, .dport = PORT_SRV, .seq = 1000, .flags = RTE_TCP_SYN_FLAG,
                              .opts = mss_opt, .olen = 4});
    s = collect_x();
    assert_int_equal(s.n, 1);
    assert_int_equal(s.flags, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG);
    assert_int_equal(s.ack, 1001);
    inject(&(struct seg_spec){.sport = sport, .dport = PORT_SRV, .seq = 1001, .ack = s.seq + 1,
                              .flags = RTE_TCP_ACK_FLAG});
    return s.seq + 1;
}

static void test_tcp_rst_exact_accepted_in_window_challenged(void **state)
{
    uint32_t b_nxt;
    struct seen s;
    (void)state;
    b_nxt = x_handshake(40000);
    assert_int_equal(n_servers, 1);
    /* in the window but not rcv_nxt: challenge ACK (RFC 5961 §3.2), connection stays */
    inject(&(struct seg_spec){.sport = 40000, .dport = PORT_SRV, .seq = 1001 + 100, .flags = RTE_TCP_RST_FLAG});
    s = collect_x();
    assert_int_equal(s.n, 1);
    assert_int_equal(s.flags, RTE_TCP_ACK_FLAG);
    assert_int_equal(s.ack, 1001);
    assert_int_equal(s.seq, b_nxt);
    assert_int_equal(cnt(&B, DP_CNT_TCP_CHALLENGE_ACK), 1);
    assert_int_equal(servers[0].closed, 0);
    /* outside the window: ignored, no answer */
    inject(&(struct seg_spec){.sport = 40000, .dport = PORT_SRV, .seq = 1001 + 10000000, .flags = RTE_TCP_RST_FLAG});
    s = collect_x();
    assert_int_equal(s.n, 0);
    assert_int_equal(cnt(&B, DP_CNT_TCP_RST_IGNORED), 1);
    /* SYN on an established connection: challenge ACK (RFC 5961 §4) */
    inject(&(struct seg_spec){.sport = 40000, .dport = PORT_SRV, .seq = 5000, .flags = RTE_TCP_SYN_FLAG});
    s = collect_x();
    assert_int_equal(s.n, 1);
    assert_int_equal(s.flags, RTE_TCP_ACK_FLAG);
    assert_int_equal(cnt(&B, DP_CNT_TCP_CHALLENGE_ACK), 2);
    /* exactly rcv_nxt: reset */
    inject(&(struct seg_spec){.sport = 40000, .dport = PORT_SRV, .seq = 1001, .flags = RTE_TCP_RST_FLAG});
    assert_int_equal(servers[0].closed, 1);
    assert_int_equal(servers[0].close_err, -ECONNRESET);
}

/* Both directions complete while the owner is not reading: a RST from the peer (its side is gone and it answered
 * a late segment) is ignored; the queued bytes are still delivered and the close stays orderly. */
static void test_tcp_rst_after_both_fins_keeps_queued_bytes(void **state)
{
    uint32_t b_nxt;
    struct seen s;
    (void)state;
    b_nxt = x_handshake(40002);
    assert_int_equal(n_servers, 1);
    servers[0].consume = false;
    dp_tcp_read_enable(servers[0].c, false);
    inject(&(struct seg_spec){.sport = 40002, .dport = PORT_SRV, .seq = 1001, .ack = b_nxt,
                              .flags = RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG | RTE_TCP_FIN_FLAG, .len = 100});
    (void)collect_x();
    assert_int_equal(servers[0].c->rcvq.bytes, 100);
    assert_int_equal(dp_tcp_shutdown_wr(servers[0].c), 0);
    side_step(&B);
    s = collect_x();
    assert_true(s.n >= 1);
    assert_true(s.flags & RTE_TCP_FIN_FLAG);
    inject(&(struct seg_spec){.sport = 40002, .dport = PORT_SRV, .seq = 1102, .ack = b_nxt + 1,
                              .flags = RTE_TCP_ACK_FLAG});
    (void)collect_x();
    assert_int_equal(servers[0].closed, 0);
    inject(&(struct seg_spec){.sport = 40002, .dport = PORT_SRV, .seq = 1102, .flags = RTE_TCP_RST_FLAG});
    assert_int_equal(servers[0].closed, 0);
    assert_int_equal(cnt(&B, DP_CNT_TCP_RST_IN), 0);
    servers[0].consume = true;
    dp_tcp_read_enable(servers[0].c, true);
    pump(5);
    assert_int_equal(servers[0].received, 100);
    assert_int_equal(servers[0].peer_fin, 1);
    assert_int_equal(servers[0].closed, 1);
    assert_int_equal(servers[0].close_err, 0);
}

static void test_tcp_ack_of_unsent_data_dropped(void **state)
{
    uint32_t b_nxt;
    struct seen s;
    static const uint8_t data[10];
    (void)state;
    (void)data;
    b_nxt = x_handshake(40001);
    inject(&(struct seg_spec){.sport = 40001, .dport = PORT_SRV, .seq = 1001, .ack = b_nxt + 5000,
                              .flags = RTE_TCP_ACK_FLAG, .len = 10});
    s = collect_x();
    assert_int_equal(cnt(&B, DP_CNT_TCP_ACK_INVALID), 1);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ack, 1001); /* the data was not taken */
    assert_int_equal(servers[0].received, 0);
    dp_tcp_abort(servers[0].c);
    collect_x();
}

static void test_tcp_out_of_order_data_reassembled(void **state)
{
    uint32_t b_nxt;
    struct seen s;
    (void)state;
    b_nxt = x_handshake(40002);
    servers[0].consume = true;
    /* three segments of 100 bytes, the middle one last (payload bytes are zero; count only) */
    inject(&(struct seg_spec){.sport = 40002, .dport = PORT_SRV, .seq = 1201, .ack = b_nxt, .flags = RTE_TCP_ACK_FLAG,
                              .len = 100});
    s = collect_x();
    assert_int_equal(s.ack, 1001); /* duplicate ACK asking for the hole */
    /* with SACK not negotiated by X (no SACK-permitted in its SYN), no SACK option */
    assert_int_equal(s.optlen, 0);
    inject(&(struct seg_spec){.sport = 40002, .dport = PORT_SRV, .seq = 1001, .ack = b_nxt, .flags = RTE_TCP_ACK_FLAG,
                              .len = 100});
    inject(&(struct seg_spec){.sport = 40002, .dport = PORT_SRV, .seq = 1101, .ack = b_nxt, .flags = RTE_TCP_ACK_FLAG,
                              .len = 100});
    s = collect_x();
    assert_int_equal(s.ack, 1301);
    assert_int_equal(servers[0].received, 300);
    assert_int_equal(cnt(&B, DP_CNT_TCP_OOO_SEGMENTS), 1);
    /* an overlapping retransmission is trimmed: nothing delivered twice */
    inject(&(struct seg_spec){.sport = 40002, .dport = PORT_SRV, .seq = 1251, .ack = b_nxt, .flags = RTE_TCP_ACK_FLAG,
                              .len = 100});
    collect_x();
    assert_int_equal(servers[0].received, 350);
    dp_tcp_abort(servers[0].c);
    collect_x();
}

static void test_tcp_syn_cookies_when_backlog_full(void **state)
{
    struct seen s;
    (void)state;
    dp_tcp_fini(&B.lc);
    test_cfg.syn_backlog = 4;
    assert_int_equal(dp_tcp_init(&B.lc, &test_cfg, SOCKET_ID_ANY), 0);
    {
        int err;
        listener = dp_tcp_listen(&B.lc, 0, PORT_SRV, NULL, server_accept, NULL, &err);
    }
    learn_x();
    /* a flood of SYNs that never complete */
    for (uint16_t p = 0; p < 50; p++)
        inject(&(struct seg_spec){.sport = (uint16_t)(20000 + p), .dport = PORT_SRV, .seq = 77,
                                  .flags = RTE_TCP_SYN_FLAG});
    s = collect_x();
    assert_int_equal(s.n, 50); /* every SYN answered */
    assert_int_equal(cnt(&B, DP_CNT_TCP_SYN_BACKLOG_FULL), 46);
    assert_int_equal(cnt(&B, DP_CNT_TCP_SYNCOOKIE_SENT), 46);
    /* a legitimate client still gets in, through a cookie */
    client_open(&client, PORT_SRV);
    client.to_send = 20000;
    client.shut_after_send = true;
    assert_true(pump_until(transfer_done, 2000));
    assert_int_equal(cnt(&B, DP_CNT_TCP_SYNCOOKIE_OK), 1);
    assert_int_equal(servers[0].mismatches, 0);
    /* a forged ACK with a bad cookie (from a port that only ever got a cookie) gets a RST */
    inject(&(struct seg_spec){.sport = 20049, .dport = PORT_SRV, .seq = 78, .ack = 12345, .flags = RTE_TCP_ACK_FLAG});
    s = collect_x();
    assert_int_equal(cnt(&B, DP_CNT_TCP_SYNCOOKIE_BAD), 1);
    assert_true(s.flags & RTE_TCP_RST_FLAG);
    dp_tcp_shutdown_wr(servers[0].c);
    assert_true(pump_until(both_closed, 5000));
    /* the half-open blocks of the flood time out after their SYN-ACK retries (1 + 2 + ... + 64 s) */
    b_to_a.blackhole = true;
    pump(130000);
    assert_int_equal(listener->half_open, 0);
    collect_x();
}

static void test_tcp_paws_rejects_old_timestamp(void **state)
{
    uint8_t ts_syn[] = {2, 4, 0x05, 0xb4, 1, 1, 8, 10, 0, 0, 0, 100, 0, 0, 0, 0};
    uint8_t ts_old[] = {1, 1, 8, 10, 0, 0, 0, 50, 0, 0, 0, 0};
    uint8_t ts_new[] = {1, 1, 8, 10, 0, 0, 0, 200, 0, 0, 0, 0};
    struct seen s;
    (void)state;
    learn_x();
    inject(&(struct seg_spec){.sport = 40010, .dport = PORT_SRV, .seq = 1000, .flags = RTE_TCP_SYN_FLAG,
                              .opts = ts_syn, .olen = sizeof(ts_syn)});
    s = collect_x();
    assert_int_equal(s.n, 1);
    inject(&(struct seg_spec){.sport = 40010, .dport = PORT_SRV, .seq = 1001, .ack = s.seq + 1,
                              .flags = RTE_TCP_ACK_FLAG, .opts = ts_new, .olen = sizeof(ts_new)});
    assert_int_equal(n_servers, 1);
    assert_true(servers[0].c->flags & TCPF_TS_OK);
    inject(&(struct seg_spec){.sport = 40010, .dport = PORT_SRV, .seq = 1001, .ack = s.seq + 1,
                              .flags = RTE_TCP_ACK_FLAG, .opts = ts_old, .olen = sizeof(ts_old), .len = 10});
    collect_x();
    assert_int_equal(cnt(&B, DP_CNT_TCP_PAWS_REJECTED), 1);
    assert_int_equal(servers[0].received, 0);
    dp_tcp_abort(servers[0].c);
    collect_x();
}

static void test_tcp_time_wait_reused_by_new_syn(void **state)
{
    (void)state;
    client_open(&client, PORT_SRV);
    client.to_send = 100;
    client.shut_after_send = true;
    assert_true(pump_until(transfer_done, 1000));
    dp_tcp_shutdown_wr(servers[0].c);
    assert_true(pump_until(both_closed, 1000));
    assert_int_equal(client.close_err, 0);
}

/* ---- a relay on B: A's client -> B:PORT_FWD -> relay -> A:PORT_SINK (the forwarder's shape) ---- */

#define PORT_FWD 9000
#define PORT_SINK 9090

static struct {
    struct mesh_conn *client, *upstream;
    struct mesh_relay relay;
    int done, err;
} fw;

static void fw_done(void *u, struct mesh_relay *r, int err)
{
    (void)u;
    (void)r;
    fw.done++;
    fw.err = err;
}

static size_t fw_hold(void *u, const uint8_t *p, size_t n)
{
    (void)u;
    (void)p;
    (void)n;
    return 0;
}

static void fw_nop(void *u)
{
    (void)u;
}

static void fw_closed(void *u, int err)
{
    (void)u;
    fail_msg("forwarder leg closed before the relay started (%d)", err);
}

static void fw_upstream_writable(void *u)
{
    (void)u;
    dp_tcp_set_callbacks(fw.client, &mesh_relay_conn_cb, &fw.relay.side[MESH_RELAY_A]);
    dp_tcp_set_callbacks(fw.upstream, &mesh_relay_conn_cb, &fw.relay.side[MESH_RELAY_B]);
    mesh_relay_init(&fw.relay, &dp_conn_ops, fw.client, &dp_conn_ops, fw.upstream, fw_done, NULL);
}

static const struct mesh_conn_cb fw_wait_cb = {fw_hold, fw_nop, fw_nop, fw_closed};
static const struct mesh_conn_cb fw_dial_cb = {fw_hold, fw_upstream_writable, fw_nop, fw_closed};

static bool fw_accept(void *ctx, struct mesh_conn *c)
{
    (void)ctx;
    fw.client = c;
    dp_tcp_set_callbacks(c, &fw_wait_cb, NULL);
    dp_tcp_read_enable(c, false);
    assert_int_equal(dp_tcp_connect(&B.lc, 0, IP_A, PORT_SINK, &fw_dial_cb, NULL, &fw.upstream), 0);
    return true;
}

static struct app sink;
static bool sink_accept(void *ctx, struct mesh_conn *c)
{
    (void)ctx;
    memset(&sink, 0, sizeof(sink));
    sink.c = c;
    sink.side = &A;
    sink.consume = true;
    dp_tcp_set_callbacks(c, &app_cb, &sink);
    return true;
}

static bool relayed_all(void)
{
    return sink.received == client.to_send && sink.peer_fin;
}

static bool relay_finished(void)
{
    return fw.done == 1 && client.closed && sink.closed;
}

static void relay_run(uint64_t bytes, uint64_t budget_ms)
{
    int err = 0;
    struct dp_tcp_listener *lf = dp_tcp_listen(&B.lc, 0, PORT_FWD, NULL, fw_accept, NULL, &err);
    struct dp_tcp_listener *ls = dp_tcp_listen(&A.lc, 0, PORT_SINK, NULL, sink_accept, NULL, &err);

    memset(&fw, 0, sizeof(fw));
    memset(&sink, 0, sizeof(sink));
    assert_non_null(lf);
    assert_non_null(ls);
    client_open(&client, PORT_FWD);
    client.to_send = bytes;
    client.shut_after_send = true;
    assert_true(pump_until(relayed_all, budget_ms));
    assert_int_equal(sink.mismatches, 0);
    /* the sink answers and closes: the relay carries both back */
    sink.to_send = 100000;
    sink.shut_after_send = true;
    app_pump_writes(&sink);
    assert_true(pump_until(relay_finished, budget_ms));
    assert_int_equal(fw.err, 0);
    assert_int_equal(client.received, 100000);
    assert_int_equal(client.mismatches, 0);
    assert_int_equal(mesh_relay_bytes(&fw.relay, MESH_RELAY_A), bytes);
    dp_tcp_unlisten(&B.lc, lf);
    dp_tcp_unlisten(&A.lc, ls);
}

/* The server closes its side first, while the client still sends: the client's FIN must still reach it. */
static bool sink_got_fin(void)
{
    return sink.peer_fin > 0;
}

static void test_tcp_relay_server_closes_first(void **state)
{
    int err = 0;
    struct dp_tcp_listener *lf = dp_tcp_listen(&B.lc, 0, PORT_FWD, NULL, fw_accept, NULL, &err);
    struct dp_tcp_listener *ls = dp_tcp_listen(&A.lc, 0, PORT_SINK, NULL, sink_accept, NULL, &err);
    (void)state;
    memset(&fw, 0, sizeof(fw));
    memset(&sink, 0, sizeof(sink));
    client_open(&client, PORT_FWD);
    assert_true(pump_until(client_established, 200));
    pump(20);
    assert_non_null(sink.c);
    sink.to_send = 100000;
    sink.shut_after_send = true;
    app_pump_writes(&sink);
    pump(200);
    assert_int_equal(client.peer_fin, 1);
    client.to_send = 3u << 20;
    client.shut_after_send = true;
    app_pump_writes(&client);
    assert_true(pump_until(sink_got_fin, 20000));
    assert_int_equal(sink.received, 3u << 20);
    assert_true(pump_until(relay_finished, 5000));
    assert_int_equal(fw.err, 0);
    dp_tcp_unlisten(&B.lc, lf);
    dp_tcp_unlisten(&A.lc, ls);
}

/* Both directions at once, the server finishing first: every byte and both FINs get through. */
static void test_tcp_relay_both_ways_server_first(void **state)
{
    int err = 0;
    struct dp_tcp_listener *lf = dp_tcp_listen(&B.lc, 0, PORT_FWD, NULL, fw_accept, NULL, &err);
    struct dp_tcp_listener *ls = dp_tcp_listen(&A.lc, 0, PORT_SINK, NULL, sink_accept, NULL, &err);
    (void)state;
    memset(&fw, 0, sizeof(fw));
    memset(&sink, 0, sizeof(sink));
    client_open(&client, PORT_FWD);
    assert_true(pump_until(client_established, 200));
    pump(20);
    assert_non_null(sink.c);
    sink.to_send = 2u << 20;
    sink.shut_after_send = true;
    client.to_send = 6u << 20;
    client.shut_after_send = true;
    app_pump_writes(&sink);
    app_pump_writes(&client);
    assert_true(pump_until(sink_got_fin, 30000));
    assert_int_equal(sink.received, 6u << 20);
    assert_int_equal(client.received, 2u << 20);
    assert_int_equal(sink.mismatches + client.mismatches, 0);
    assert_true(pump_until(relay_finished, 5000));
    assert_int_equal(fw.err, 0);
    dp_tcp_unlisten(&B.lc, lf);
    dp_tcp_unlisten(&A.lc, ls);
}

static void test_tcp_relay_through_b(void **state)
{
    (void)state;
    relay_run(8u << 20, 30000);
}

static void test_tcp_relay_through_b_with_loss(void **state)
{
    (void)state;
    a_to_b.loss_pct = b_to_a.loss_pct = 2;
    a_to_b.jitter_ms = b_to_a.jitter_ms = 2;
    relay_run(2u << 20, 300000);
}

/* With a device that offloads checksums, segments leave with the pseudo-header sum and the offload flags. */
static uint16_t offload_tx(struct dp_lcore *lc, uint8_t port, struct rte_mbuf **pkts, uint16_t n)
{
    for (uint16_t i = 0; i < n; i++) {
        struct rte_mbuf *m = pkts[i];
        struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, RTE_ETHER_HDR_LEN);
        if (ip->next_proto_id == IPPROTO_TCP) {
            struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)(ip + 1);
            assert_true(m->ol_flags & RTE_MBUF_F_TX_TCP_CKSUM);
            assert_true(m->ol_flags & RTE_MBUF_F_TX_IP_CKSUM);
            assert_int_equal(m->l2_len, RTE_ETHER_HDR_LEN);
            assert_int_equal(m->l3_len, sizeof(*ip));
            assert_int_equal(th->cksum, rte_ipv4_phdr_cksum(ip, m->ol_flags));
            /* do what the device would, so the peer can check them */
            m->ol_flags = 0;
            ip->hdr_checksum = rte_ipv4_cksum(ip);
            th->cksum = 0;
            th->cksum = rte_ipv4_udptcp_cksum(ip, th);
        }
    }
    return wire_tx(lc, port, pkts, n);
}

static void test_tcp_checksum_offload_when_the_port_has_it(void **state)
{
    (void)state;
    A.st.ports[0].tx_cksum_offload = true;
    A.lc.tx_burst = offload_tx;
    client_open(&client, PORT_SRV);
    client.to_send = 100000;
    client.shut_after_send = true;
    assert_true(pump_until(transfer_done, 2000));
    assert_int_equal(servers[0].mismatches, 0);
    assert_int_equal(cnt(&B, DP_CNT_TCP_BAD_CHECKSUM), 0);
    dp_tcp_shutdown_wr(servers[0].c);
    assert_true(pump_until(both_closed, 2000));
    A.st.ports[0].tx_cksum_offload = false;
    A.lc.tx_burst = wire_tx;
}

/* ---- transparent capture on B (the mesh data path's flow classes) ---- */

static struct app captured;
static uint32_t cap_lip, cap_rip;
static uint16_t cap_lport, cap_rport;
static int cap_class;

static bool capture_accept(void *ctx, struct mesh_conn *c)
{
    cap_class = (int)(intptr_t)ctx;
    memset(&captured, 0, sizeof(captured));
    captured.c = c;
    captured.side = &B;
    captured.consume = true;
    dp_tcp_addrs(c, &cap_lip, &cap_lport, &cap_rip, &cap_rport);
    dp_tcp_set_callbacks(c, &app_cb, &captured);
    return true;
}

static bool captured_all(void)
{
    return captured.c != NULL && captured.received == client.to_send && captured.peer_fin;
}

static bool captured_closed(void)
{
    return client.closed && captured.closed;
}

static void capture_setup(const uint32_t *enrolled, int n)
{
    struct dp_mesh_view *v = dp_mesh_view_new(enrolled, n, 15008, SOCKET_ID_ANY);
    assert_non_null(v);
    B.st.mesh = v;
    for (int cls = DP_FLOW_OUTBOUND; cls < DP_FLOW_N_CLASSES; cls++)
        assert_int_equal(dp_tcp_capture(&B.lc, cls, NULL, capture_accept, (void *)(intptr_t)cls), 0);
    cap_class = -1;
}

static void capture_teardown(void)
{
    for (int cls = DP_FLOW_OUTBOUND; cls < DP_FLOW_N_CLASSES; cls++)
        dp_tcp_capture(&B.lc, cls, NULL, NULL, NULL);
    dp_mesh_view_free((struct dp_mesh_view *)(uintptr_t)B.st.mesh);
    B.st.mesh = NULL;
}

static void capture_transfer(uint32_t dst, uint16_t port)
{
    memset(&client, 0, sizeof(client));
    client.side = &A;
    client.consume = true;
    assert_int_equal(dp_tcp_connect(&A.lc, 0, dst, port, &app_cb, &client, &client.c), 0);
    client.to_send = 300000;
    client.shut_after_send = true;
    assert_true(pump_until(captured_all, 5000));
    assert_int_equal(captured.mismatches, 0);
    captured.to_send = 50000;
    captured.shut_after_send = true;
    app_pump_writes(&captured);
    assert_true(pump_until(captured_closed, 5000));
    assert_int_equal(client.received, 50000);
    assert_int_equal(client.close_err, 0);
}

static void test_tcp_outbound_capture_answers_as_the_original_destination(void **state)
{
    const uint32_t enrolled[] = {IP_A};
    (void)state;
    capture_setup(enrolled, 1);
    capture_transfer(IP(10, 9, 9, 9), 80);
    assert_int_equal(cap_class, DP_FLOW_OUTBOUND);
    assert_int_equal(cap_lip, IP(10, 9, 9, 9));
    assert_int_equal(cap_lport, 80);
    assert_int_equal(cap_rip, IP_A);
    assert_int_equal(cnt(&B, DP_CNT_TCP_CAPTURED), 1);
    assert_true(cnt(&B, DP_CNT_TCP_TRANSPARENT_IN) > 0);
    assert_int_equal(cnt(&B, DP_CNT_IP4_FORWARDED), 0);
    capture_teardown();
}

static void test_tcp_inbound_classes_by_port(void **state)
{
    const uint32_t enrolled[] = {IP(10, 9, 9, 60)};
    (void)state;
    capture_setup(enrolled, 1); /* A itself is not enrolled: its SYNs to the enrolled pod are inbound */
    capture_transfer(IP(10, 9, 9, 60), 15008);
    assert_int_equal(cap_class, DP_FLOW_INBOUND_HBONE);
    capture_transfer(IP(10, 9, 9, 60), 8080);
    assert_int_equal(cap_class, DP_FLOW_INBOUND_PLAIN);
    assert_int_equal(cap_lip, IP(10, 9, 9, 60));
    assert_int_equal(cap_lport, 8080);
    capture_teardown();
}

static void test_tcp_not_enrolled_is_passed_through(void **state)
{
    const uint32_t enrolled[] = {IP(10, 9, 9, 60)};
    (void)state;
    capture_setup(enrolled, 1);
    memset(&client, 0, sizeof(client));
    assert_int_equal(dp_tcp_connect(&A.lc, 0, IP(10, 9, 9, 61), 80, &app_cb, &client, &client.c), 0);
    pump(20);
    assert_int_equal(cnt(&B, DP_CNT_TCP_CAPTURED), 0);
    assert_int_equal(cap_class, -1);
    assert_true(cnt(&B, DP_CNT_IP4_NO_ROUTE) >= 1); /* routed like any packet: B has no route there */
    dp_tcp_abort(client.c);
    capture_teardown();
}

static bool dialed_established(void)
{
    return captured.writable > 0;
}

static void test_tcp_dial_from_a_non_local_source(void **state)
{
    const uint32_t enrolled[] = {IP(10, 9, 9, 60)};
    struct mesh_conn *c;
    (void)state;
    capture_setup(enrolled, 1); /* the mesh view turns on transparent lookups for replies */
    /* B opens to A's server from 10.9.9.50, as the inbound path does with the original client's IP */
    memset(&captured, 0, sizeof(captured));
    captured.consume = true;
    assert_int_equal(dp_tcp_connect(&B.lc, IP(10, 9, 9, 50), IP_A, PORT_SRV_A, &app_cb, &captured, &c), 0);
    captured.c = c;
    assert_true(pump_until(dialed_established, 200));
    assert_true(pump_until(a_server_accepted, 200));
    assert_int_equal(a_server_peer_ip, IP(10, 9, 9, 50)); /* A sees the original client's address */
    dp_tcp_abort(c);
    pump(10);
    capture_teardown();
}

/* ---- two workers on B: replies that reach the other worker are handed to the connection's owner ---- */

static void test_tcp_replies_on_the_wrong_lcore_are_handed_over(void **state)
{
    static struct dp_lcore b1;
    struct mesh_conn *c;
    (void)state;
    assert_int_equal(dp_lcore_init(&b1, &B.st, 12, 1, SOCKET_ID_ANY), 0);
    b1.tx_burst = wire_tx;
    b1.now_ms = now_ms;
    assert_int_equal(dp_tcp_init(&b1, &test_cfg, SOCKET_ID_ANY), 0);
    B.st.n_lcores = 2;
    B.st.lcores[0] = &B.lc;
    B.st.lcores[1] = &b1;
    b_second = &b1;

    /* worker 0 dials A; every reply arrives on worker 1 */
    memset(&captured, 0, sizeof(captured));
    captured.consume = true;
    assert_int_equal(dp_tcp_connect(&B.lc, 0, IP_A, PORT_SRV_A, &app_cb, &captured, &c), 0);
    captured.c = c;
    assert_int_equal(c->local_port % 2, 0); /* a port that maps back to worker 0 */
    assert_true(pump_until(dialed_established, 500));
    captured.to_send = 200000;
    captured.shut_after_send = true;
    app_pump_writes(&captured);
    assert_true(pump_until(a_server_accepted, 200));
    pump(2000);
    assert_true(dp_counter_read(&b1, DP_CNT_HANDOFF_OUT) > 0);
    assert_int_equal(dp_counter_read(&B.lc, DP_CNT_HANDOFF_IN), dp_counter_read(&b1, DP_CNT_HANDOFF_OUT));
    assert_int_equal(dp_counter_read(&b1, DP_CNT_TCP_NO_LISTENER), 0); /* no reply was answered with a RST */
    assert_true(c->snd_una == c->snd_max); /* everything was acknowledged through the handoff */
    dp_tcp_abort(c);
    dp_tcp_abort(a_server_conn);
    pump(20);

    b_second = NULL;
    B.st.n_lcores = 1;
    dp_tcp_fini(&b1);
    dp_lcore_fini(&b1);
}

/* ---- pieces ---- */

static void test_tcp_sack_scoreboard_merges_and_trims(void **state)
{
    struct mesh_conn c;
    struct tcp_sack_block b[3] = {{2000, 3000}, {5000, 6000}, {3000, 4000}};
    uint32_t seq, len;
    (void)state;
    memset(&c, 0, sizeof(c));
    c.snd_una = 1000;
    c.snd_max = 10000;
    c.mss = 1000;
    tcp_sack_update(&c, b, 3);
    assert_int_equal(c.n_sack, 2);
    assert_int_equal(c.sack[0].start, 2000);
    assert_int_equal(c.sack[0].end, 4000);
    assert_int_equal(tcp_sack_bytes(&c), 3000);
    assert_int_equal(tcp_sack_high(&c), 6000);
    c.high_rxt = c.snd_una;
    assert_true(tcp_sack_next_hole(&c, &seq, &len));
    assert_int_equal(seq, 1000);
    assert_int_equal(len, 1000);
    c.high_rxt = 2000;
    assert_true(tcp_sack_next_hole(&c, &seq, &len));
    assert_int_equal(seq, 4000);
    assert_int_equal(len, 1000);
    /* pipe: 4000 above the highest SACK + the 1000 retransmitted into the first hole */
    assert_int_equal(tcp_sack_pipe(&c), 4000 + 1000);
    c.snd_una = 4500;
    tcp_sack_trim(&c);
    assert_int_equal(c.n_sack, 1);
    assert_int_equal(c.sack[0].start, 5000);
    /* blocks below snd_una or beyond snd_max are ignored */
    b[0] = (struct tcp_sack_block){100, 200};
    b[1] = (struct tcp_sack_block){9000, 12000};
    tcp_sack_update(&c, b, 2);
    assert_int_equal(c.n_sack, 1);
}

static void test_tcp_cc_windows(void **state)
{
    struct mesh_conn c;
    struct dp_tcp t;
    struct dp_lcore lc;
    (void)state;
    memset(&c, 0, sizeof(c));
    memset(&t, 0, sizeof(t));
    memset(&lc, 0, sizeof(lc));
    lc.tcp = &t;
    lc.now_ms = 5000;
    c.lc = &lc;
    c.mss = 1000;
    t.cfg.cc = DP_TCP_CC_NEWRENO;
    tcp_cc_init(&c);
    assert_int_equal(c.cwnd, 10000);
    tcp_cc_on_ack(&c, 1000); /* slow start: +acked */
    assert_int_equal(c.cwnd, 11000);
    c.snd_una = 0;
    c.snd_max = 20000;
    tcp_cc_on_loss(&c); /* NewReno: half the flight */
    assert_int_equal(c.ssthresh, 10000);
    c.cwnd = c.ssthresh;
    for (int i = 0; i < 10; i++)
        tcp_cc_on_ack(&c, 1000); /* congestion avoidance: one MSS per window acked */
    assert_int_equal(c.cwnd, 11000);

    t.cfg.cc = DP_TCP_CC_CUBIC;
    tcp_cc_init(&c);
    c.cwnd = 100000;
    c.srtt_us = 10000;
    tcp_cc_on_loss(&c);
    assert_int_equal(c.ssthresh, 70000); /* beta 0.7 */
    c.cwnd = c.ssthresh;
    uint32_t before = c.cwnd;
    for (int ms = 0; ms < 3000; ms += 10) {
        lc.now_ms += 10;
        tcp_cc_on_ack(&c, c.cwnd / 10);
    }
    /* concave then convex growth: back near W_max (100 segments) after K seconds, then beyond */
    assert_true(c.cwnd > before);
    assert_true(c.cwnd >= 95000);
}

static void test_tcp_ooo_queue_trims_overlaps(void **state)
{
    uint8_t d[300];
    struct tcp_sack_block blk[4];
    (void)state;
    client_open(&client, PORT_SRV);
    assert_true(pump_until(client_established, 100));
    struct mesh_conn *c = client.c;
    uint32_t base = c->rcv_nxt;
    memset(d, 0xab, sizeof(d));
    assert_true(tcp_ooo_insert(c, base + 100, d, 100));
    assert_true(tcp_ooo_insert(c, base + 300, d, 100));
    assert_true(tcp_ooo_insert(c, base + 150, d, 200)); /* overlaps both */
    assert_int_equal(c->ooo.bytes, 300);
    assert_int_equal(tcp_ooo_sack_blocks(c, blk, 4), 1);
    assert_int_equal(blk[0].start, base + 100);
    assert_int_equal(blk[0].end, base + 400);
    c->rcv_nxt = base + 120; /* pretend the first 120 bytes arrived */
    assert_int_equal(tcp_ooo_drain(c), 280);
    assert_int_equal(c->rcv_nxt, base + 400);
    assert_int_equal(c->ooo.n, 0);
    tcp_bufq_free(&c->rcvq);
    dp_tcp_abort(client.c);
    pump(10);
}

static void test_tcp_bufq_append_copy_drop(void **state)
{
    struct tcp_bufq q;
    uint8_t in[10000], out[10000];
    (void)state;
    memset(&q, 0, sizeof(q));
    for (unsigned i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(i * 13);
    assert_int_equal(tcp_bufq_append(&q, pool, in, 3000, 100000), 3000);
    assert_int_equal(tcp_bufq_append(&q, pool, in + 3000, 7000, 8000), 5000); /* capped */
    assert_int_equal(q.bytes, 8000);
    tcp_bufq_copy(&q, 2500, 3000, out);
    assert_memory_equal(out, in + 2500, 3000);
    tcp_bufq_copy(&q, 5500, 2500, out); /* forward via the cursor */
    assert_memory_equal(out, in + 5500, 2500);
    tcp_bufq_drop(&q, 2100);
    tcp_bufq_copy(&q, 0, 1000, out);
    assert_memory_equal(out, in + 2100, 1000);
    tcp_bufq_copy(&q, 3400, 2500, out);
    assert_memory_equal(out, in + 5500, 2500);
    tcp_bufq_drop(&q, 5900);
    assert_int_equal(q.bytes, 0);
    assert_null(q.head);
    tcp_bufq_free(&q);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_tcp_handshake_negotiates_options),
        T(test_tcp_options_off_when_peer_lacks_them),
        T(test_tcp_connect_refused_without_listener),
        T(test_tcp_connect_times_out_with_backoff),
        T(test_tcp_refused_by_owner_gets_rst),
        T(test_tcp_bulk_transfer_clean),
        T(test_tcp_bulk_transfer_with_loss_and_reordering_sack),
        T(test_tcp_bulk_transfer_with_loss_newreno),
        T(test_tcp_half_close_both_ways),
        T(test_tcp_abort_resets_peer),
        T(test_tcp_zero_window_stalls_and_resumes),
        T(test_tcp_keepalive_detects_vanished_peer),
        T(test_tcp_many_concurrent_connections),
        T(test_tcp_simultaneous_close),
        T(test_tcp_rst_exact_accepted_in_window_challenged),
        T(test_tcp_rst_after_both_fins_keeps_queued_bytes),
        T(test_tcp_ack_of_unsent_data_dropped),
        T(test_tcp_out_of_order_data_reassembled),
        T(test_tcp_syn_cookies_when_backlog_full),
        T(test_tcp_paws_rejects_old_timestamp),
        T(test_tcp_time_wait_reused_by_new_syn),
        T(test_tcp_relay_through_b),
        T(test_tcp_relay_server_closes_first),
        T(test_tcp_relay_both_ways_server_first),
        T(test_tcp_checksum_offload_when_the_port_has_it),
        T(test_tcp_outbound_capture_answers_as_the_original_destination),
        T(test_tcp_inbound_classes_by_port),
        T(test_tcp_not_enrolled_is_passed_through),
        T(test_tcp_dial_from_a_non_local_source),
        T(test_tcp_replies_on_the_wrong_lcore_are_handed_over),
        T(test_tcp_relay_through_b_with_loss),
        T(test_tcp_sack_scoreboard_merges_and_trims),
        T(test_tcp_cc_windows),
        T(test_tcp_ooo_queue_trims_overlaps),
        T(test_tcp_bufq_append_copy_drop),
    };
    return cmocka_run_group_tests_name("dp_tcp", tests, group_setup, group_teardown);
}
