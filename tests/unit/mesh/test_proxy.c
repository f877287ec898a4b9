/* SPDX-License-Identifier: Apache-2.0 */
/*
 * End-to-end tests of mesh/proxy.h over tests/fakes/fake_conn.c, and of the pool rules through it:
 *
 *   client pod 10.21.1.10 --(capture 15001)--> proxy node1 ==HBONE 10.21.2.10:15008==> proxy node2 --> server pod :8080
 *
 * Capture is simulated the way SO_ORIGINAL_DST works: apps dial a capture listener and the test says which original
 * destination the connection had. Certificates come from tests/fakes/testca.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mesh/pool.h"
#include "mesh/proxy.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_app.h"
#include "tests/fakes/fake_conn.h"
#include "tests/fakes/testca.h"

#define S_NS FAKE_NS_PER_S

/* ====================================================================================================== */
/* the fixture                                                                                            */
/* ====================================================================================================== */

#define MAX_APPS 8
#define MAX_LOGS 16
#define MAX_BUNDLES 8

struct node {
    struct fake_host host;
    struct mesh_proxy *p;
    struct mesh_metrics *metrics;
    struct mesh_proxy_access_record logs[MAX_LOGS];
    char log_src_id[MAX_LOGS][MESH_SPIFFE_URI_MAX_BYTES];
    char log_dst_id[MAX_LOGS][MESH_SPIFFE_URI_MAX_BYTES];
    char log_svc[MAX_LOGS][128];
    int n_logs;
    bool deny;
    int n_authz;
    bool authz_had_identity;
};

struct fixture {
    struct fake_env fe;
    struct testca ca;
    struct fake_net *net;
    struct node n1, n2;
    struct mesh_workloads *ws;
    struct mesh_addr next_orig_dst; /* what the capture listener reports */
    struct fake_app clients[MAX_APPS];
    int n_clients;
    struct fake_app servers[MAX_APPS];
    int n_servers;
    struct {
        struct mesh_spiffe_id id;
        const struct mesh_cert_bundle *b;
    } bundles[MAX_BUNDLES];
    int n_bundles;
};

static struct fixture *F;

static const struct mesh_cert_bundle *get_bundle(void *u, const struct mesh_spiffe_id *id)
{
    struct fixture *f = u;
    for (int i = 0; i < f->n_bundles; i++)
        if (mesh_spiffe_eq(&f->bundles[i].id, id))
            return mesh_identity_bundle_ref(f->bundles[i].b);
    assert_true(f->n_bundles < MAX_BUNDLES);
    f->bundles[f->n_bundles].id = *id;
    f->bundles[f->n_bundles].b = testca_issue(&f->ca, TESTCA_GOOD, id->td, id->ns, id->sa);
    return mesh_identity_bundle_ref(f->bundles[f->n_bundles++].b);
}

static enum mesh_proxy_verdict authz(void *u, const struct mesh_proxy_conn_info *info)
{
    struct node *n = u;
    n->n_authz++;
    n->authz_had_identity = info->src_identity != NULL;
    assert_non_null(info->dst_workload);
    return n->deny ? MESH_PROXY_DENY : MESH_PROXY_ALLOW;
}

static void access_log(void *u, const struct mesh_proxy_access_record *r)
{
    struct node *n = u;
    assert_true(n->n_logs < MAX_LOGS);
    n->logs[n->n_logs] = *r;
    snprintf(n->log_src_id[n->n_logs], MESH_SPIFFE_URI_MAX_BYTES, "%s", r->src_identity);
    snprintf(n->log_dst_id[n->n_logs], MESH_SPIFFE_URI_MAX_BYTES, "%s", r->dst_identity);
    snprintf(n->log_svc[n->n_logs], 128, "%s", r->dst_service);
    n->logs[n->n_logs].src_identity = n->log_src_id[n->n_logs];
    n->logs[n->n_logs].dst_identity = n->log_dst_id[n->n_logs];
    n->logs[n->n_logs].dst_service = n->log_svc[n->n_logs];
    n->logs[n->n_logs].src_workload = n->logs[n->n_logs].dst_workload = NULL;
    n->n_logs++;
}

/* listeners */

static int capture_outbound(void *lu, struct mesh_conn *c, const struct mesh_addr *src, const struct mesh_addr *dst,
                            const struct mesh_conn_cb **cb, void **u)
{
    (void)lu;
    (void)dst;
    return mesh_proxy_accept_outbound(F->n1.p, c, src, &F->next_orig_dst, cb, u);
}

static int capture_plain(void *lu, struct mesh_conn *c, const struct mesh_addr *src, const struct mesh_addr *dst,
                         const struct mesh_conn_cb **cb, void **u)
{
    (void)lu;
    (void)dst;
    return mesh_proxy_accept_inbound_plain(F->n2.p, c, src, &F->next_orig_dst, cb, u);
}

static int hbone_listener(void *lu, struct mesh_conn *c, const struct mesh_addr *src, const struct mesh_addr *dst,
                          const struct mesh_conn_cb **cb, void **u)
{
    (void)lu;
    return mesh_proxy_accept_inbound_hbone(F->n2.p, c, src, dst, cb, u);
}

/* A misrouted 15008: traffic for 10.21.2.99 lands in the pod 10.21.2.10's listener (provokes the 400 rule). */
static int hbone_listener_misrouted(void *lu, struct mesh_conn *c, const struct mesh_addr *src,
                                    const struct mesh_addr *dst, const struct mesh_conn_cb **cb, void **u)
{
    (void)lu;
    (void)dst;
    struct mesh_addr real = fake_addr("10.21.2.10", 15008);
    return mesh_proxy_accept_inbound_hbone(F->n2.p, c, src, &real, cb, u);
}

static int server_accept(void *lu, struct mesh_conn *c, const struct mesh_addr *src, const struct mesh_addr *dst,
                         const struct mesh_conn_cb **cb, void **u)
{
    (void)lu;
    (void)dst;
    assert_true(F->n_servers < MAX_APPS);
    struct fake_app *a = &F->servers[F->n_servers++];
    a->c = c;
    a->peer = *src;
    *cb = &fake_app_cb;
    *u = a;
    return 0;
}

/* workloads: client (node1), server (node2, HBONE, service echo), plain (node2, NONE), ghost (see above) */

static struct mesh_addr A_CLIENT[1], A_SERVER[1], A_PLAIN[1], A_GHOST[1], VIP_ECHO[1];
static const struct mesh_port ECHO_PORTS[] = {{80, 8080}};
static const struct mesh_workload_service ECHO_REF[] = {{"default/echo.default.svc.cluster.local", NULL, 0}};

static struct mesh_workloads *make_workloads(bool with_ghost)
{
    A_CLIENT[0] = fake_addr("10.21.1.10", 0);
    A_SERVER[0] = fake_addr("10.21.2.10", 0);
    A_PLAIN[0] = fake_addr("10.21.2.20", 0);
    A_GHOST[0] = fake_addr("10.21.2.99", 0);
    VIP_ECHO[0] = fake_addr("10.96.0.10", 0);
    struct mesh_workload w[4] = {
        {.uid = "Kubernetes//Pod/default/client", .name = "client", .namespace = "default",
         .service_account = "sleep", .node = "node1", .addresses = A_CLIENT, .n_addresses = 1,
         .protocol = MESH_TUNNEL_HBONE, .canonical_name = "sleep", .workload_name = "sleep"},
        {.uid = "Kubernetes//Pod/default/echo-1", .name = "echo-1", .namespace = "default",
         .service_account = "echo", .node = "node2", .addresses = A_SERVER, .n_addresses = 1,
         .protocol = MESH_TUNNEL_HBONE, .services = ECHO_REF, .n_services = 1, .workload_name = "echo"},
        {.uid = "Kubernetes//Pod/default/legacy", .name = "legacy", .namespace = "default", .node = "node2",
         .addresses = A_PLAIN, .n_addresses = 1, .protocol = MESH_TUNNEL_NONE},
        {.uid = "Kubernetes//Pod/default/ghost", .name = "ghost", .namespace = "default",
         .service_account = "echo", .node = "node2", .addresses = A_GHOST, .n_addresses = 1,
         .protocol = MESH_TUNNEL_HBONE},
    };
    struct mesh_service s[1] = {
        {.name = "echo", .namespace = "default", .hostname = "echo.default.svc.cluster.local",
         .addresses = VIP_ECHO, .n_addresses = 1, .ports = ECHO_PORTS, .n_ports = 1},
    };
    const char *err = NULL;
    struct mesh_workloads *ws = mesh_workloads_new(&F->fe.env, w, with_ghost ? 4 : 3, s, 1, &err);
    assert_non_null(ws);
    return ws;
}

static void node_init(struct node *n, const char *name, const char *host_ip, enum mesh_mtls_mode mode,
                      uint32_t max_streams)
{
    n->host = (struct fake_host){F->net, fake_addr(host_ip, 0)};
    n->metrics = mesh_metrics_new(&F->fe.env);
    struct mesh_proxy_config cfg = {
        .node_name = name,
        .workloads = F->ws,
        .mtls_mode = mode,
        .get_bundle = get_bundle,
        .get_bundle_u = F,
        .authz = authz,
        .authz_u = n,
        .access_log = access_log,
        .access_log_u = n,
        .metrics = n->metrics,
        .pool_max_streams = max_streams,
    };
    const char *err = NULL;
    n->p = mesh_proxy_new(&F->fe.env, &fake_conn_ops, &n->host, &cfg, &err);
    assert_non_null(n->p);
}

static void fixture_up(enum mesh_mtls_mode mode2, uint32_t max_streams)
{
    F = calloc(1, sizeof(*F));
    fake_env_init(&F->fe, 0, 42);
    assert_int_equal(testca_init(&F->ca, &F->fe.env, F->fe.clock.now_ns), 0);
    F->net = fake_net_new();
    F->ws = make_workloads(false);
    node_init(&F->n1, "node1", "10.0.1.1", MESH_MTLS_PERMISSIVE, max_streams);
    node_init(&F->n2, "node2", "10.0.2.1", mode2, max_streams);
    struct mesh_addr a;
    a = fake_addr("10.0.1.1", 15001);
    fake_net_listen(F->net, &a, FAKE_LISTEN_ACCEPT, capture_outbound, NULL);
    a = fake_addr("10.0.2.1", 15006);
    fake_net_listen(F->net, &a, FAKE_LISTEN_ACCEPT, capture_plain, NULL);
    a = fake_addr("10.21.2.10", 15008);
    fake_net_listen(F->net, &a, FAKE_LISTEN_ACCEPT, hbone_listener, NULL);
    a = fake_addr("10.21.2.99", 15008);
    fake_net_listen(F->net, &a, FAKE_LISTEN_ACCEPT, hbone_listener_misrouted, NULL);
    a = fake_addr("10.21.2.10", 8080);
    fake_net_listen(F->net, &a, FAKE_LISTEN_ACCEPT, server_accept, NULL);
    a = fake_addr("10.21.2.20", 9000);
    fake_net_listen(F->net, &a, FAKE_LISTEN_ACCEPT, server_accept, NULL);
}

static int setup(void **state)
{
    (void)state;
    fixture_up(MESH_MTLS_PERMISSIVE, 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mesh_proxy_free(F->n1.p);
    mesh_proxy_free(F->n2.p);
    fake_net_free(F->net);
    mesh_metrics_free(F->n1.metrics);
    mesh_metrics_free(F->n2.metrics);
    mesh_workloads_unref(F->ws);
    for (int i = 0; i < F->n_bundles; i++)
        mesh_identity_bundle_unref(F->bundles[i].b);
    testca_fini(&F->ca);
    for (int i = 0; i < MAX_APPS; i++) {
        free(F->clients[i].in);
        free(F->servers[i].in);
    }
    assert_int_equal(F->fe.alloc.live, 0);
    free(F);
    F = NULL;
    return 0;
}

static void pump(void)
{
    fake_net_run(F->net);
}

/* Open a captured connection from the client pod to orig_dst. */
static struct fake_app *client_connect(const char *ip, uint16_t port)
{
    assert_true(F->n_clients < MAX_APPS);
    struct fake_app *a = &F->clients[F->n_clients++];
    struct fake_host h = {F->net, fake_addr("10.21.1.10", 0)};
    struct mesh_addr cap = fake_addr("10.0.1.1", 15001);
    F->next_orig_dst = fake_addr(ip, port);
    assert_int_equal(fake_conn_ops.dial(&h, NULL, &cap, &fake_app_cb, a, &a->c), 0);
    fake_net_run(F->net); /* the accept takes next_orig_dst */
    return a;
}

static uint8_t *pattern(size_t n, unsigned seed)
{
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(i * 131 + seed);
    return b;
}

static struct mesh_metrics_series sum(struct node *n)
{
    return mesh_metrics_sum(n->metrics, MESH_METRICS_L_REPORTER, NULL);
}

/* ====================================================================================================== */
/* tests                                                                                                  */
/* ====================================================================================================== */

static void roundtrip(size_t rcvbuf, size_t n_up, size_t n_down)
{
    fake_net_set_rcvbuf(F->net, rcvbuf);
    struct fake_app *c = client_connect("10.96.0.10", 80);
    pump();
    assert_true(c->connected);
    assert_int_equal(F->n_servers, 1);
    struct fake_app *s = &F->servers[0];
    /* the pod sees the client pod's own IP (transparent dial from node2) */
    assert_memory_equal(s->peer.ip.v4, A_CLIENT[0].ip.v4, 4);

    uint8_t *up = pattern(n_up, 1), *down = pattern(n_down, 9);
    c->out = up;
    c->out_len = n_up;
    c->fin_after_write = true;
    fake_app_push(c);
    pump();
    assert_int_equal(s->in_len, n_up);
    assert_memory_equal(s->in, up, n_up);
    assert_int_equal(s->n_fin, 1); /* half-close crossed the tunnel */
    assert_int_equal(c->n_closed, 0);
    /* the other direction still flows after the client's FIN */
    s->out = down;
    s->out_len = n_down;
    s->fin_after_write = true;
    fake_app_push(s);
    pump();
    assert_int_equal(c->in_len, n_down);
    assert_memory_equal(c->in, down, n_down);
    assert_int_equal(c->n_fin, 1);
    assert_int_equal(c->n_closed, 1);
    assert_int_equal(c->close_err, 0);
    assert_int_equal(s->n_closed, 1);

    /* one record per node, agreeing on bytes; counters agree with them */
    assert_int_equal(F->n1.n_logs, 1);
    assert_int_equal(F->n2.n_logs, 1);
    struct mesh_proxy_access_record *o = &F->n1.logs[0], *i = &F->n2.logs[0];
    assert_int_equal(o->direction, MESH_PROXY_OUTBOUND);
    assert_int_equal(i->direction, MESH_PROXY_INBOUND_HBONE);
    assert_int_equal(o->bytes_recv, n_up);
    assert_int_equal(o->bytes_sent, n_down);
    assert_int_equal(i->bytes_recv, n_up);
    assert_int_equal(i->bytes_sent, n_down);
    assert_int_equal(o->reason, MESH_REASON_NONE);
    assert_int_equal(i->reason, MESH_REASON_NONE);
    assert_string_equal(o->response_flags, "-");
    assert_int_equal(o->hbone_status, 200);
    assert_int_equal(i->hbone_status, 200);
    assert_true(o->has_hbone_addr);
    char b[64];
    mesh_addr_format(&o->hbone_addr, true, b, sizeof(b));
    assert_string_equal(b, "10.21.2.10:15008");
    mesh_addr_format(&i->dst, true, b, sizeof(b));
    assert_string_equal(b, "10.21.2.10:8080");
    assert_string_equal(o->src_identity, "spiffe://cluster.local/ns/default/sa/sleep");
    assert_string_equal(o->dst_identity, "spiffe://cluster.local/ns/default/sa/echo");
    assert_string_equal(i->src_identity, "spiffe://cluster.local/ns/default/sa/sleep");
    assert_string_equal(i->dst_identity, "spiffe://cluster.local/ns/default/sa/echo");
    assert_string_equal(o->dst_service, "echo.default.svc.cluster.local");
    struct mesh_metrics_series m1 = sum(&F->n1), m2 = sum(&F->n2);
    assert_int_equal(m1.opened, 1);
    assert_int_equal(m1.closed, 1);
    assert_int_equal(m1.received_bytes, n_up);
    assert_int_equal(m1.sent_bytes, n_down);
    assert_int_equal(m2.opened, 1);
    assert_int_equal(m2.closed, 1);
    assert_int_equal(m2.received_bytes, n_up);
    assert_int_equal(m2.sent_bytes, n_down);
    assert_int_equal(mesh_metrics_sum(F->n1.metrics, MESH_METRICS_L_REPORTER, "source").closed, 1);
    assert_int_equal(mesh_metrics_sum(F->n2.metrics, MESH_METRICS_L_REPORTER, "destination").closed, 1);
    assert_int_equal(mesh_metrics_sum(F->n2.metrics, MESH_METRICS_L_CONNECTION_SECURITY_POLICY, "mutual_tls").closed,
                     1);
    assert_int_equal(
        mesh_metrics_sum(F->n2.metrics, MESH_METRICS_L_SOURCE_PRINCIPAL, "spiffe://cluster.local/ns/default/sa/sleep")
            .closed,
        1);
    assert_true(F->n2.authz_had_identity);
    assert_int_equal(mesh_proxy_stats(F->n1.p)->active, 0);
    assert_int_equal(mesh_proxy_stats(F->n2.p)->active, 0);
    assert_int_equal(mesh_proxy_stats(F->n1.p)->pool_handshakes, 1);
    free(up);
    free(down);
}

static void test_proxy_hbone_roundtrip(void **state)
{
    (void)state;
    roundtrip(FAKE_CONN_DEFAULT_RCVBUF_BYTES, 1 << 20, 300000);
}

static void test_proxy_hbone_backpressure(void **state)
{
    (void)state;
    roundtrip(1500, 3 << 20, 2 << 20);
}

static void test_proxy_hbone_paused_reader(void **state)
{
    (void)state;
    fake_net_set_rcvbuf(F->net, 16384);
    struct fake_app *c = client_connect("10.96.0.10", 80);
    pump();
    struct fake_app *s = &F->servers[0];
    s->paused = true;
    size_t n = 32u << 20;
    uint8_t *up = pattern(n, 3);
    c->out = up;
    c->out_len = n;
    fake_app_push(c);
    pump();
    /* the stall is bounded by the socket buffers and the HTTP/2 windows, not by the payload */
    assert_true(c->out_off < 24u << 20);
    assert_true(c->out_off > 0);
    s->paused = false;
    fake_conn_ops.read_enable(s->c, true);
    pump();
    assert_int_equal(s->in_len, n);
    assert_memory_equal(s->in, up, n);
    free(up);
}

static void test_proxy_direct_workload_address(void **state)
{
    (void)state;
    struct fake_app *c = client_connect("10.21.2.10", 8080);
    pump();
    assert_true(c->connected);
    assert_int_equal(F->n_servers, 1);
    fake_conn_ops.shutdown_wr(c->c);
    pump();
    fake_conn_ops.shutdown_wr(F->servers[0].c);
    pump();
    assert_int_equal(c->n_closed, 1);
    assert_int_equal(F->n1.n_logs, 1);
    assert_string_equal(F->n1.logs[0].dst_service, "");
    assert_int_equal(F->n1.logs[0].reason, MESH_REASON_NONE);
}

static void test_proxy_401_denied(void **state)
{
    (void)state;
    F->n2.deny = true;
    struct fake_app *c = client_connect("10.96.0.10", 80);
    pump();
    assert_false(c->connected && c->n_closed == 0);
    assert_int_equal(c->n_closed, 1);
    assert_int_equal(F->n_servers, 0);
    assert_int_equal(F->n1.n_logs, 1);
    assert_int_equal(F->n2.n_logs, 1);
    assert_int_equal(F->n1.logs[0].hbone_status, 401);
    assert_int_equal(F->n2.logs[0].hbone_status, 401);
    assert_int_equal(F->n2.logs[0].reason, MESH_REASON_DENIED);
    assert_string_equal(F->n2.logs[0].response_flags, "DENY");
    assert_int_equal(mesh_metrics_sum(F->n2.metrics, MESH_METRICS_L_RESPONSE_FLAGS, "DENY").closed, 1);
    assert_int_equal(F->n1.logs[0].err, MESH_ERR_HBONE_STATUS);
    /* the tunnel connection survives a stream error: the next request reuses it */
    F->n2.deny = false;
    struct fake_app *c2 = client_connect("10.96.0.10", 80);
    pump();
    assert_true(c2->connected);
    assert_int_equal(mesh_proxy_stats(F->n1.p)->pool_handshakes, 1);
}

static void test_proxy_400_authority_mismatch(void **state)
{
    (void)state;
    struct mesh_workloads *ws = make_workloads(true);
    mesh_proxy_set_workloads(F->n1.p, ws);
    mesh_workloads_unref(ws);
    struct fake_app *c = client_connect("10.21.2.99", 8080);
    pump();
    assert_int_equal(c->n_closed, 1);
    assert_int_equal(F->n1.n_logs, 1);
    assert_int_equal(F->n1.logs[0].hbone_status, 400);
    assert_int_equal(F->n2.n_logs, 1);
    assert_int_equal(F->n2.logs[0].hbone_status, 400);
    assert_int_equal(F->n2.n_authz, 0);
}

static void test_proxy_503_upstream_refused(void **state)
{
    (void)state;
    struct fake_app *c = client_connect("10.21.2.10", 9999);
    pump();
    assert_int_equal(c->n_closed, 1);
    assert_int_equal(F->n1.logs[0].hbone_status, 503);
    assert_int_equal(F->n2.logs[0].hbone_status, 503);
    assert_int_equal(F->n2.logs[0].reason, MESH_REASON_REFUSED);
    assert_string_equal(F->n2.logs[0].response_flags, "CONNECT");
}

static void test_proxy_503_upstream_timeout(void **state)
{
    (void)state;
    struct mesh_addr bh = fake_addr("10.21.2.10", 7777);
    fake_net_listen(F->net, &bh, FAKE_LISTEN_BLACKHOLE, NULL, NULL);
    struct fake_app *c = client_connect("10.21.2.10", 7777);
    pump();
    assert_int_equal(c->n_closed, 0);
    uint64_t d = mesh_proxy_next_deadline(F->n2.p);
    assert_true(d <= F->fe.clock.now_ns + MESH_PROXY_CONNECT_TIMEOUT_NS);
    fake_clock_advance(&F->fe.clock, 10 * S_NS);
    mesh_proxy_on_deadline(F->n1.p, F->fe.clock.now_ns);
    mesh_proxy_on_deadline(F->n2.p, F->fe.clock.now_ns);
    pump();
    assert_int_equal(c->n_closed, 1);
    assert_int_equal(F->n2.logs[0].hbone_status, 503);
    assert_int_equal(F->n2.logs[0].reason, MESH_REASON_TIMEOUT);
}

static void test_proxy_passthrough_none(void **state)
{
    (void)state;
    struct fake_app *c = client_connect("10.21.2.20", 9000);
    pump();
    assert_true(c->connected);
    assert_int_equal(F->n_servers, 1);
    struct fake_app *s = &F->servers[0];
    /* a passthrough leaves the pod's own address, as a connection opened inside the pod would */
    struct mesh_addr pod_a = fake_addr("10.21.1.10", 0);
    assert_memory_equal(s->peer.ip.v4, pod_a.ip.v4, 4);
    c->out = (const uint8_t *)"hello";
    c->out_len = 5;
    c->fin_after_write = true;
    fake_app_push(c);
    s->out = (const uint8_t *)"world!";
    s->out_len = 6;
    s->fin_after_write = true;
    fake_app_push(s);
    pump();
    assert_int_equal(s->in_len, 5);
    assert_int_equal(c->in_len, 6);
    assert_int_equal(F->n1.n_logs, 1);
    assert_false(F->n1.logs[0].has_hbone_addr);
    assert_int_equal(F->n1.logs[0].bytes_recv, 5);
    assert_int_equal(F->n1.logs[0].bytes_sent, 6);
    assert_int_equal(mesh_metrics_sum(F->n1.metrics, MESH_METRICS_L_CONNECTION_SECURITY_POLICY, "unknown").closed, 1);
    assert_int_equal(F->n2.n_logs, 0);
    assert_int_equal(mesh_proxy_stats(F->n1.p)->pool_handshakes, 0);
}

static void test_proxy_passthrough_unknown_refused(void **state)
{
    (void)state;
    struct fake_app *c = client_connect("192.0.2.1", 443);
    pump();
    assert_int_equal(c->n_closed, 1);
    assert_int_equal(F->n1.logs[0].reason, MESH_REASON_REFUSED);
}

static void test_proxy_self_call_guard(void **state)
{
    (void)state;
    static const uint16_t ports[] = {15001, 15006, 15008};
    for (int i = 0; i < 3; i++) {
        struct fake_app *c = client_connect("10.21.2.10", ports[i]);
        pump();
        assert_int_equal(c->n_closed, 1);
        assert_int_equal(c->close_err, -ECONNRESET);
        assert_int_equal(F->n1.logs[i].reason, MESH_REASON_UNROUTABLE);
    }
    assert_int_equal(fake_net_dials(F->net), 3); /* only the captures */
}

static struct fake_app *plain_connect(const char *ip, uint16_t port)
{
    struct fake_app *a = &F->clients[F->n_clients++];
    struct fake_host h = {F->net, fake_addr("10.30.0.5", 0)};
    struct mesh_addr cap = fake_addr("10.0.2.1", 15006);
    F->next_orig_dst = fake_addr(ip, port);
    assert_int_equal(fake_conn_ops.dial(&h, NULL, &cap, &fake_app_cb, a, &a->c), 0);
    fake_net_run(F->net);
    return a;
}

static void test_proxy_plain_permissive(void **state)
{
    (void)state;
    struct fake_app *c = plain_connect("10.21.2.10", 8080);
    pump();
    assert_true(c->connected);
    assert_int_equal(F->n_servers, 1);
    char b[64];
    mesh_addr_format(&F->servers[0].peer, false, b, sizeof(b));
    assert_string_equal(b, "10.30.0.5");
    assert_false(F->n2.authz_had_identity);
    c->out = (const uint8_t *)"abc";
    c->out_len = 3;
    c->fin_after_write = true;
    fake_app_push(c);
    pump();
    fake_conn_ops.shutdown_wr(F->servers[0].c);
    pump();
    assert_int_equal(F->servers[0].in_len, 3);
    assert_int_equal(F->n2.n_logs, 1);
    assert_int_equal(F->n2.logs[0].direction, MESH_PROXY_INBOUND_PLAIN);
    assert_int_equal(F->n2.logs[0].bytes_recv, 3);
    assert_int_equal(F->n2.logs[0].reason, MESH_REASON_NONE);
}

static void test_proxy_plain_strict(void **state)
{
    (void)state;
    teardown(NULL);
    fixture_up(MESH_MTLS_STRICT, 0);
    struct fake_app *c = plain_connect("10.21.2.10", 8080);
    pump();
    assert_int_equal(c->n_closed, 1);
    assert_int_equal(F->n_servers, 0);
    assert_int_equal(F->n2.logs[0].reason, MESH_REASON_DENIED);
    assert_int_equal(F->n2.n_authz, 0); /* STRICT denies before the hook */
    /* HBONE is still fine under STRICT */
    struct fake_app *h = client_connect("10.96.0.10", 80);
    pump();
    assert_true(h->connected);
    assert_int_equal(F->n_servers, 1);
}

static void test_proxy_abort_from_server(void **state)
{
    (void)state;
    struct fake_app *c = client_connect("10.96.0.10", 80);
    pump();
    c->out = (const uint8_t *)"x";
    c->out_len = 1;
    fake_app_push(c);
    pump();
    fake_conn_ops.abort(F->servers[0].c);
    F->servers[0].c = NULL;
    pump();
    assert_int_equal(c->n_closed, 1);
    assert_int_equal(c->close_err, -ECONNRESET);
    assert_int_equal(F->n1.n_logs, 1);
    assert_int_equal(F->n2.n_logs, 1);
    assert_int_equal(F->n2.logs[0].bytes_recv, 1);
    assert_int_equal(F->n1.logs[0].bytes_recv, 1);
}

static void test_proxy_abort_from_client(void **state)
{
    (void)state;
    struct fake_app *c = client_connect("10.96.0.10", 80);
    pump();
    fake_conn_ops.abort(c->c);
    c->c = NULL;
    pump();
    assert_int_equal(F->servers[0].n_closed, 1);
    assert_int_equal(F->servers[0].close_err, -ECONNRESET);
    assert_int_equal(F->n1.n_logs, 1);
    assert_int_equal(F->n2.n_logs, 1);
    assert_int_equal(mesh_proxy_stats(F->n2.p)->active, 0);
}

/* ---- pool rules, observed through the proxy ---- */

static void test_pool_single_flight(void **state)
{
    (void)state;
    struct fake_app *c[3];
    for (int i = 0; i < 3; i++) {
        F->next_orig_dst = fake_addr("10.96.0.10", 80);
        struct fake_host h = {F->net, fake_addr("10.21.1.10", 0)};
        struct mesh_addr cap = fake_addr("10.0.1.1", 15001);
        c[i] = &F->clients[F->n_clients++];
        assert_int_equal(fake_conn_ops.dial(&h, NULL, &cap, &fake_app_cb, c[i], &c[i]->c), 0);
    }
    pump();
    for (int i = 0; i < 3; i++)
        assert_true(c[i]->connected);
    assert_int_equal(F->n_servers, 3);
    assert_int_equal(mesh_proxy_stats(F->n1.p)->pool_handshakes, 1);
    assert_int_equal(mesh_proxy_stats(F->n2.p)->inbound_conns, 1);
    /* a later request reuses it too */
    struct fake_app *d = client_connect("10.96.0.10", 80);
    pump();
    assert_true(d->connected);
    assert_int_equal(mesh_proxy_stats(F->n1.p)->pool_handshakes, 1);
}

static void test_pool_max_streams(void **state)
{
    (void)state;
    teardown(NULL);
    fixture_up(MESH_MTLS_PERMISSIVE, 2);
    for (int i = 0; i < 5; i++) {
        struct fake_app *c = client_connect("10.96.0.10", 80);
        pump();
        assert_true(c->connected);
    }
    assert_int_equal(F->n_servers, 5);
    assert_int_equal(mesh_proxy_stats(F->n1.p)->pool_handshakes, 3); /* 2 + 2 + 1 */
}

static void test_pool_idle_release(void **state)
{
    (void)state;
    struct fake_app *c = client_connect("10.96.0.10", 80);
    pump();
    fake_conn_ops.shutdown_wr(c->c);
    pump();
    fake_conn_ops.shutdown_wr(F->servers[0].c);
    pump();
    assert_int_equal(c->n_closed, 1);
    assert_int_equal(mesh_proxy_stats(F->n1.p)->pool_conns, 1);
    /* keepalive pings keep running while idle; the pool drops the connection after 5 minutes */
    for (int i = 0; i < 31; i++) {
        fake_clock_advance(&F->fe.clock, 10 * S_NS);
        mesh_proxy_on_deadline(F->n1.p, F->fe.clock.now_ns);
        mesh_proxy_on_deadline(F->n2.p, F->fe.clock.now_ns);
        pump();
    }
    assert_int_equal(mesh_proxy_stats(F->n1.p)->pool_conns, 0);
    assert_int_equal(mesh_proxy_stats(F->n2.p)->inbound_conns, 0);
    assert_int_equal(fake_net_live(F->net), 0);
    /* the next request opens a new one */
    struct fake_app *d = client_connect("10.96.0.10", 80);
    pump();
    assert_true(d->connected);
    assert_int_equal(mesh_proxy_stats(F->n1.p)->pool_handshakes, 2);
}

static void test_pool_failure_propagation(void **state)
{
    (void)state;
    struct mesh_addr l = fake_addr("10.21.2.10", 15008);
    fake_net_unlisten(F->net, &l);
    size_t dials0 = fake_net_dials(F->net);
    struct fake_app *c[3];
    for (int i = 0; i < 3; i++) {
        F->next_orig_dst = fake_addr("10.96.0.10", 80);
        struct fake_host h = {F->net, fake_addr("10.21.1.10", 0)};
        struct mesh_addr cap = fake_addr("10.0.1.1", 15001);
        c[i] = &F->clients[F->n_clients++];
        assert_int_equal(fake_conn_ops.dial(&h, NULL, &cap, &fake_app_cb, c[i], &c[i]->c), 0);
    }
    pump();
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c[i]->n_closed, 1);
        assert_int_equal(F->n1.logs[i].reason, MESH_REASON_REFUSED);
    }
    /* three captures, one HBONE dial */
    assert_int_equal(fake_net_dials(F->net) - dials0, 4);
}

static void test_pool_key(void **state)
{
    (void)state;
    struct mesh_pool_key a, b;
    memset(&a, 0, sizeof(a));
    mesh_spiffe_from_parts(NULL, "default", "sleep", &a.src_id);
    mesh_spiffe_from_parts(NULL, "default", "echo", &a.expected[0]);
    a.n_expected = 1;
    a.dst = fake_addr("10.21.2.10", 15008);
    a.src_ip = fake_addr("10.21.1.10", 1234);
    b = a;
    b.src_ip.port = htons(999); /* port is not part of the key */
    assert_true(mesh_pool_key_eq(&a, &b));
    b.src_ip = fake_addr("10.21.1.11", 0);
    assert_false(mesh_pool_key_eq(&a, &b));
    b = a;
    b.n_expected = 2;
    assert_false(mesh_pool_key_eq(&a, &b));
    b = a;
    mesh_spiffe_from_parts(NULL, "default", "other", &b.src_id);
    assert_false(mesh_pool_key_eq(&a, &b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_proxy_hbone_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_hbone_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_hbone_paused_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_direct_workload_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_401_denied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_400_authority_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_503_upstream_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_503_upstream_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_passthrough_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_passthrough_unknown_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_self_call_guard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_plain_permissive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_plain_strict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_abort_from_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_abort_from_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_single_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_max_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_idle_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_failure_propagation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_key, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
