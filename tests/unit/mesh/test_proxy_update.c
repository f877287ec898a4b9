/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Live configuration updates of mesh/proxy.h (mesh_proxy_update), end to end over tests/fakes/fake_conn.c:
 *
 *   client pods 10.21.1.10/.11 --(capture 15001)--> proxy node1 ==HBONE <pod>:15008==> proxy node2 --> server pods
 *   outside client 10.30.0.5 --(capture 15006)--> proxy node2 --> server pods (plaintext inbound)
 *
 * Covered: late rejection of live inbound HBONE and plaintext connections (authz, STRICT, destination gone), outbound
 * connections whose destination no longer resolves ("unroutable"), connections that stay allowed and deliver every
 * byte, new workloads reachable at once, bounded re-check slices driven by the deadline, pooled connections drained
 * after a certificate change, and an allocation-failure sweep over an update.
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

#include "mesh/proxy.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_app.h"
#include "tests/fakes/fake_conn.h"
#include "tests/fakes/testca.h"

/* ====================================================================================================== */
/* policies, certificate stores, the fixture                                                              */
/* ====================================================================================================== */

#define MAX_APPS 320
#define MAX_LOGS 320
#define N_IDS 3

/* What the authorization hook decides, and what it saw last. */
struct policy {
    bool deny_all;
    const char *deny_sa; /* deny this source service account (HBONE) */
    int n_calls;
    char last_dst_rev[32];
    char last_dst_uid[64];
    bool last_had_identity;
    enum mesh_mtls_mode last_mode;
};

/* A certificate source: one bundle per local identity, issued up front (so a sweep never issues under failure). */
struct store {
    struct mesh_spiffe_id id[N_IDS];
    const struct mesh_cert_bundle *b[N_IDS];
    int n_calls;
};

/* What a test keeps of an access-log record (only static strings are kept). */
struct logrec {
    enum mesh_proxy_direction direction;
    enum mesh_reason reason;
    const char *response_flags;
    uint64_t bytes_recv, bytes_sent;
    int hbone_status;
    int err;
};

struct node {
    struct fake_host host;
    struct mesh_proxy *p;
    struct mesh_metrics *metrics;
    struct logrec logs[MAX_LOGS];
    int n_logs;
};

struct fixture {
    struct fake_env fe;
    struct testca ca;
    struct fake_net *net;
    struct node n1, n2;
    struct mesh_workloads *ws;
    struct policy pol; /* the initial policy: allow */
    struct store store_a, store_b;
    struct mesh_addr next_orig_dst;
    struct fake_app clients[MAX_APPS];
    int n_clients;
    struct fake_app servers[MAX_APPS];
    int n_servers;
};

static struct fixture *F;

static enum mesh_proxy_verdict authz(void *u, const struct mesh_proxy_conn_info *info)
{
    struct policy *pol = u;
    pol->n_calls++;
    assert_non_null(info->dst_workload);
    pol->last_had_identity = info->src_identity != NULL;
    pol->last_mode = info->mtls_mode;
    snprintf(pol->last_dst_rev, sizeof(pol->last_dst_rev), "%s", info->dst_workload->canonical_revision);
    snprintf(pol->last_dst_uid, sizeof(pol->last_dst_uid), "%s", info->dst_workload->uid);
    if (pol->deny_all)
        return MESH_PROXY_DENY;
    if (pol->deny_sa != NULL && info->src_identity != NULL && strcmp(info->src_identity->sa, pol->deny_sa) == 0)
        return MESH_PROXY_DENY;
    return MESH_PROXY_ALLOW;
}

static const struct mesh_cert_bundle *get_bundle(void *u, const struct mesh_spiffe_id *id)
{
    struct store *st = u;
    st->n_calls++;
    for (int i = 0; i < N_IDS; i++)
        if (mesh_spiffe_eq(&st->id[i], id))
            return mesh_identity_bundle_ref(st->b[i]);
    return NULL;
}

static void store_init(struct store *st)
{
    static const char *const sas[N_IDS] = {"sleep", "sleep2", "echo"};
    for (int i = 0; i < N_IDS; i++) {
        assert_int_equal(mesh_spiffe_from_parts(NULL, "default", sas[i], &st->id[i]), 0);
        st->b[i] = testca_issue(&F->ca, TESTCA_GOOD, st->id[i].td, "default", sas[i]);
        assert_non_null(st->b[i]);
    }
}

static void store_fini(struct store *st)
{
    for (int i = 0; i < N_IDS; i++)
        mesh_identity_bundle_unref(st->b[i]);
}

static void access_log(void *u, const struct mesh_proxy_access_record *r)
{
    struct node *n = u;
    assert_true(n->n_logs < MAX_LOGS);
    n->logs[n->n_logs++] = (struct logrec){r->direction, r->reason, r->response_flags, r->bytes_recv, r->bytes_sent,
                                           r->hbone_status, r->err};
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

static int server_accept(void *lu, struct mesh_conn *c, const struct mesh_addr *src, const struct mesh_addr *dst,
                         const struct mesh_conn_cb **cb, void **u)
{
    (void)lu;
    assert_true(F->n_servers < MAX_APPS);
    struct fake_app *a = &F->servers[F->n_servers++];
    a->c = c;
    a->peer = *src;
    a->local = *dst;
    *cb = &fake_app_cb;
    *u = a;
    return 0;
}

/* ---- workloads ---- */

enum {
    WL_ECHO_SVC = 1 << 0,   /* service echo (VIP 10.96.0.10:80 -> 8080) */
    WL_LEGACY = 1 << 1,     /* legacy 10.21.2.20, no HBONE */
    WL_CLIENT2 = 1 << 2,    /* client2 10.21.1.11, service account sleep2 */
    WL_ECHO2 = 1 << 3,      /* echo-2 10.21.2.11, a second echo endpoint */
    WL_ECHO1_SICK = 1 << 4, /* echo-1 unhealthy */
    WL_REV2 = 1 << 5,       /* echo-1 canonical revision v2 */
    WL_FRESH = 1 << 6,      /* fresh 10.21.2.30 + service fresh (VIP 10.96.0.20:80 -> 8080) */
    WL_NO_ECHO1 = 1 << 7,   /* echo-1 removed */
    WL_BASE = WL_ECHO_SVC | WL_LEGACY | WL_CLIENT2,
};

static struct mesh_addr A_CLIENT[1], A_CLIENT2[1], A_ECHO1[1], A_ECHO2[1], A_LEGACY[1], A_FRESH[1];
static struct mesh_addr VIP_ECHO[1], VIP_FRESH[1];
static const struct mesh_port SVC_PORTS[] = {{80, 8080}};
static const struct mesh_workload_service ECHO_REF[] = {{"default/echo.default.svc.cluster.local", NULL, 0}};
static const struct mesh_workload_service FRESH_REF[] = {{"default/fresh.default.svc.cluster.local", NULL, 0}};

static struct mesh_workloads *make_ws(unsigned flags)
{
    A_CLIENT[0] = fake_addr("10.21.1.10", 0);
    A_CLIENT2[0] = fake_addr("10.21.1.11", 0);
    A_ECHO1[0] = fake_addr("10.21.2.10", 0);
    A_ECHO2[0] = fake_addr("10.21.2.11", 0);
    A_LEGACY[0] = fake_addr("10.21.2.20", 0);
    A_FRESH[0] = fake_addr("10.21.2.30", 0);
    VIP_ECHO[0] = fake_addr("10.96.0.10", 0);
    VIP_FRESH[0] = fake_addr("10.96.0.20", 0);
    struct mesh_workload w[8];
    struct mesh_service s[2];
    size_t nw = 0, ns = 0;
    w[nw++] = (struct mesh_workload){.uid = "Kubernetes//Pod/default/client", .name = "client", .namespace = "default",
                                     .service_account = "sleep", .node = "node1", .addresses = A_CLIENT,
                                     .n_addresses = 1, .protocol = MESH_TUNNEL_HBONE, .workload_name = "sleep"};
    if (!(flags & WL_NO_ECHO1))
        w[nw++] = (struct mesh_workload){
            .uid = "Kubernetes//Pod/default/echo-1", .name = "echo-1", .namespace = "default",
            .service_account = "echo", .node = "node2", .addresses = A_ECHO1, .n_addresses = 1,
            .protocol = MESH_TUNNEL_HBONE, .services = ECHO_REF, .n_services = 1, .workload_name = "echo",
            .canonical_revision = (flags & WL_REV2) ? "v2" : "v1",
            .status = (flags & WL_ECHO1_SICK) ? MESH_WORKLOAD_UNHEALTHY : MESH_WORKLOAD_HEALTHY};
    if (flags & WL_ECHO2)
        w[nw++] = (struct mesh_workload){.uid = "Kubernetes//Pod/default/echo-2", .name = "echo-2",
                                         .namespace = "default", .service_account = "echo", .node = "node2",
                                         .addresses = A_ECHO2, .n_addresses = 1, .protocol = MESH_TUNNEL_HBONE,
                                         .services = ECHO_REF, .n_services = 1, .workload_name = "echo"};
    if (flags & WL_LEGACY)
        w[nw++] = (struct mesh_workload){.uid = "Kubernetes//Pod/default/legacy", .name = "legacy",
                                         .namespace = "default", .node = "node2", .addresses = A_LEGACY,
                                         .n_addresses = 1, .protocol = MESH_TUNNEL_NONE};
    if (flags & WL_CLIENT2)
        w[nw++] = (struct mesh_workload){.uid = "Kubernetes//Pod/default/client2", .name = "client2",
                                         .namespace = "default", .service_account = "sleep2", .node = "node1",
                                         .addresses = A_CLIENT2, .n_addresses = 1, .protocol = MESH_TUNNEL_HBONE};
    if (flags & WL_FRESH)
        w[nw++] = (struct mesh_workload){.uid = "Kubernetes//Pod/default/fresh", .name = "fresh",
                                         .namespace = "default", .service_account = "echo", .node = "node2",
                                         .addresses = A_FRESH, .n_addresses = 1, .protocol = MESH_TUNNEL_HBONE,
                                         .services = FRESH_REF, .n_services = 1};
    if (flags & WL_ECHO_SVC)
        s[ns++] = (struct mesh_service){.name = "echo", .namespace = "default",
                                        .hostname = "echo.default.svc.cluster.local", .addresses = VIP_ECHO,
                                        .n_addresses = 1, .ports = SVC_PORTS, .n_ports = 1};
    if (flags & WL_FRESH)
        s[ns++] = (struct mesh_service){.name = "fresh", .namespace = "default",
                                        .hostname = "fresh.default.svc.cluster.local", .addresses = VIP_FRESH,
                                        .n_addresses = 1, .ports = SVC_PORTS, .n_ports = 1};
    const char *err = NULL;
    struct mesh_workloads *ws = mesh_workloads_new(&F->fe.env, w, nw, s, ns, &err);
    assert_non_null(ws);
    return ws;
}

/* On-demand lookups asked by node1 (when the fixture has them on). */
static bool g_on_demand;
static struct mesh_addr g_asked[8];
static int g_n_asked;

/* What the hook answers after being asked: PENDING until g_unknown is set. */
static bool g_unknown;

static enum mesh_proxy_lookup lookup(void *u, const struct mesh_addr *dst)
{
    (void)u;
    if (g_n_asked < 8)
        g_asked[g_n_asked++] = *dst;
    return g_unknown ? MESH_LOOKUP_UNKNOWN : MESH_LOOKUP_PENDING;
}

static void node_init(struct node *n, const char *name, const char *host_ip, uint32_t recheck_slice)
{
    n->host = (struct fake_host){F->net, fake_addr(host_ip, 0)};
    n->metrics = mesh_metrics_new(&F->fe.env);
    assert_non_null(n->metrics);
    struct mesh_proxy_config cfg = {
        .node_name = name,
        .workloads = F->ws,
        .mtls_mode = MESH_MTLS_PERMISSIVE,
        .get_bundle = get_bundle,
        .get_bundle_u = &F->store_a,
        .authz = authz,
        .authz_u = &F->pol,
        .access_log = access_log,
        .access_log_u = n,
        .metrics = n->metrics,
        .recheck_slice = recheck_slice,
        .lookup = g_on_demand && strcmp(name, "node1") == 0 ? lookup : NULL,
    };
    const char *err = NULL;
    n->p = mesh_proxy_new(&F->fe.env, &fake_conn_ops, &n->host, &cfg, &err);
    assert_non_null(n->p);
}

static void listen_on(const char *ip, uint16_t port, fake_accept_fn fn)
{
    struct mesh_addr a = fake_addr(ip, port);
    assert_int_equal(fake_net_listen(F->net, &a, FAKE_LISTEN_ACCEPT, fn, NULL), 0);
}

static void fixture_up(uint32_t recheck_slice2)
{
    F = calloc(1, sizeof(*F));
    assert_non_null(F);
    fake_env_init(&F->fe, 0, 42);
    assert_int_equal(testca_init(&F->ca, &F->fe.env, F->fe.clock.now_ns), 0);
    store_init(&F->store_a);
    store_init(&F->store_b);
    F->net = fake_net_new();
    F->ws = make_ws(WL_BASE);
    node_init(&F->n1, "node1", "10.0.1.1", 0);
    node_init(&F->n2, "node2", "10.0.2.1", recheck_slice2);
    listen_on("10.0.1.1", 15001, capture_outbound);
    listen_on("10.0.2.1", 15006, capture_plain);
    listen_on("10.21.2.10", 15008, hbone_listener);
    listen_on("10.21.2.11", 15008, hbone_listener);
    listen_on("10.21.2.30", 15008, hbone_listener);
    listen_on("10.21.2.10", 8080, server_accept);
    listen_on("10.21.2.11", 8080, server_accept);
    listen_on("10.21.2.30", 8080, server_accept);
    listen_on("10.21.2.20", 9000, server_accept);
}

static void fixture_down(void)
{
    mesh_proxy_free(F->n1.p);
    mesh_proxy_free(F->n2.p);
    fake_net_free(F->net);
    mesh_metrics_free(F->n1.metrics);
    mesh_metrics_free(F->n2.metrics);
    mesh_workloads_unref(F->ws);
    store_fini(&F->store_a);
    store_fini(&F->store_b);
    testca_fini(&F->ca);
    for (int i = 0; i < MAX_APPS; i++) {
        free(F->clients[i].in);
        free(F->servers[i].in);
    }
    assert_int_equal(F->fe.alloc.live, 0);
    free(F);
    F = NULL;
}

static int setup(void **state)
{
    (void)state;
    fixture_up(0);
    return 0;
}

static int setup_on_demand(void **state)
{
    (void)state;
    g_on_demand = true;
    g_unknown = false;
    g_n_asked = 0;
    fixture_up(0);
    g_on_demand = false;
    return 0;
}

static int setup_small_slice(void **state)
{
    (void)state;
    fixture_up(4);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fixture_down();
    return 0;
}

static void pump(void)
{
    fake_net_run(F->net);
}

/* A captured connection from a client pod (src_ip) to ip:port, through node1. */
static struct fake_app *client_connect(const char *src_ip, const char *ip, uint16_t port)
{
    assert_true(F->n_clients < MAX_APPS);
    struct fake_app *a = &F->clients[F->n_clients++];
    struct fake_host h = {F->net, fake_addr(src_ip, 0)};
    struct mesh_addr cap = fake_addr("10.0.1.1", 15001);
    F->next_orig_dst = fake_addr(ip, port);
    assert_int_equal(fake_conn_ops.dial(&h, NULL, &cap, &fake_app_cb, a, &a->c), 0);
    pump(); /* the accept takes next_orig_dst */
    pump();
    return a;
}

/* A plaintext connection from outside the mesh to a local pod, through node2's 15006. */
static struct fake_app *plain_connect(const char *ip, uint16_t port)
{
    assert_true(F->n_clients < MAX_APPS);
    struct fake_app *a = &F->clients[F->n_clients++];
    struct fake_host h = {F->net, fake_addr("10.30.0.5", 0)};
    struct mesh_addr cap = fake_addr("10.0.2.1", 15006);
    F->next_orig_dst = fake_addr(ip, port);
    assert_int_equal(fake_conn_ops.dial(&h, NULL, &cap, &fake_app_cb, a, &a->c), 0);
    pump();
    pump();
    return a;
}

/* The server app whose peer (the transparent source) is ip, the most recent one first. */
static struct fake_app *server_from(const char *ip)
{
    struct mesh_addr want = fake_addr(ip, 0);
    for (int i = F->n_servers - 1; i >= 0; i--)
        if (mesh_addr_ip_eq(&F->servers[i].peer, &want))
            return &F->servers[i];
    fail_msg("no server connection from %s", ip);
    return NULL;
}

static uint8_t *pattern(size_t n, unsigned seed)
{
    uint8_t *b = malloc(n);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(i * 131 + seed);
    return b;
}

/* Send n bytes from a to b and check that they all arrived (b's input is reset first). */
static void exchange(struct fake_app *a, struct fake_app *b, const char *msg)
{
    size_t n = strlen(msg);
    b->in_len = 0;
    a->out = (const uint8_t *)msg;
    a->out_len = n;
    a->out_off = 0;
    fake_app_push(a);
    pump();
    assert_int_equal(a->out_off, n);
    assert_int_equal(b->in_len, n);
    assert_memory_equal(b->in, msg, n);
}

static void update(struct node *n, const struct mesh_workloads *ws, enum mesh_mtls_mode mode, struct policy *pol,
                   struct store *st)
{
    struct mesh_proxy_update u = {
        .workloads = ws,
        .mtls_mode = mode,
        .authz_u = pol,
        .get_bundle_u = st,
    };
    assert_int_equal(mesh_proxy_update(n->p, &u), 0);
}

static const struct mesh_proxy_stats *stats(struct node *n)
{
    return mesh_proxy_stats(n->p);
}

static uint64_t now(void)
{
    return F->fe.clock.now_ns;
}

/* ====================================================================================================== */
/* inbound late rejection                                                                                 */
/* ====================================================================================================== */

static void test_update_denies_live_hbone(void **state)
{
    (void)state;
    struct fake_app *c = client_connect("10.21.1.10", "10.96.0.10", 80);
    assert_true(c->connected);
    struct fake_app *s = server_from("10.21.1.10");
    exchange(c, s, "request bytes through the tunnel");
    exchange(s, c, "response bytes");
    assert_int_equal(F->pol.n_calls, 1);

    struct policy deny = {.deny_all = true};
    update(&F->n2, F->ws, MESH_MTLS_PERMISSIVE, &deny, &F->store_a);

    /* closed inside the update (first slice): one record, "denied" / DENY, the bytes it carried */
    assert_int_equal(deny.n_calls, 1);
    assert_int_equal(F->pol.n_calls, 1);
    assert_int_equal(F->n2.n_logs, 1);
    struct logrec *r = &F->n2.logs[0];
    assert_int_equal(r->direction, MESH_PROXY_INBOUND_HBONE);
    assert_int_equal(r->reason, MESH_REASON_DENIED);
    assert_string_equal(r->response_flags, "DENY");
    assert_int_equal(r->err, MESH_ERR_DENIED);
    assert_int_equal(r->hbone_status, 200);
    assert_int_equal(r->bytes_recv, strlen("request bytes through the tunnel"));
    assert_int_equal(r->bytes_sent, strlen("response bytes"));
    const struct mesh_proxy_stats *st = stats(&F->n2);
    assert_int_equal(st->updates, 1);
    assert_int_equal(st->rechecked, 1);
    assert_int_equal(st->recheck_closed, 1);
    assert_int_equal(st->recheck_pending, 0);
    assert_int_equal(st->active, 0);
    assert_int_equal(st->failed, 1);
    struct mesh_metrics_series m = mesh_metrics_sum(F->n2.metrics, MESH_METRICS_L_RESPONSE_FLAGS, "DENY");
    assert_int_equal(m.closed, 1);
    assert_int_equal(m.failed, 1);
    assert_int_equal(m.opened, 0); /* opened under "-", closed under DENY */
    assert_int_equal(mesh_metrics_sum(F->n2.metrics, MESH_METRICS_L_RESPONSE_FLAGS, "-").opened, 1);
    assert_int_equal(mesh_proxy_next_deadline(F->n2.p) == now(), false);

    /* the client side sees the tunnel closed (stream reset), and so does the pod */
    pump();
    assert_int_equal(c->n_closed, 1);
    assert_int_equal(c->close_err, -ECONNRESET);
    assert_int_equal(s->n_closed, 1);
    assert_int_equal(F->n1.n_logs, 1);
    assert_int_equal(stats(&F->n1)->active, 0);
    /* only the stream died: the pooled connection carries the next (now denied) request */
    struct fake_app *c2 = client_connect("10.21.1.10", "10.96.0.10", 80);
    assert_int_equal(c2->n_closed, 1);
    assert_int_equal(F->n2.logs[1].hbone_status, 401);
    assert_int_equal(stats(&F->n1)->pool_handshakes, 1);
}

static void test_update_allowed_keeps_flowing(void **state)
{
    (void)state;
    fake_net_set_rcvbuf(F->net, 16384);
    struct fake_app *c1 = client_connect("10.21.1.10", "10.96.0.10", 80);
    struct fake_app *c2 = client_connect("10.21.1.11", "10.96.0.10", 80);
    assert_true(c1->connected && c2->connected);
    struct fake_app *s1 = server_from("10.21.1.10"), *s2 = server_from("10.21.1.11");
    exchange(c2, s2, "hello from sleep2");

    /* a transfer in flight, stalled by a paused reader */
    size_t n_up = 32u << 20, n_down = 1u << 20;
    uint8_t *up = pattern(n_up, 5), *down = pattern(n_down, 11);
    s1->paused = true;
    c1->out = up;
    c1->out_len = n_up;
    c1->fin_after_write = true;
    fake_app_push(c1);
    pump();
    assert_true(c1->out_off < n_up);

    /* new snapshot (echo-1 is now revision v2) and a policy denying sleep2 only */
    struct mesh_workloads *ws2 = make_ws(WL_BASE | WL_REV2);
    struct policy pol = {.deny_sa = "sleep2"};
    update(&F->n2, ws2, MESH_MTLS_PERMISSIVE, &pol, &F->store_a);
    assert_int_equal(pol.n_calls, 2);
    assert_true(pol.last_had_identity);
    assert_string_equal(pol.last_dst_rev, "v2"); /* the conn info was rebuilt from the new snapshot */
    assert_int_equal(stats(&F->n2)->rechecked, 2);
    assert_int_equal(stats(&F->n2)->recheck_closed, 1);
    assert_int_equal(F->n2.n_logs, 1);
    assert_int_equal(F->n2.logs[0].reason, MESH_REASON_DENIED);
    assert_int_equal(F->n2.logs[0].bytes_recv, strlen("hello from sleep2"));
    pump();
    assert_int_equal(c2->n_closed, 1);
    assert_int_equal(c2->close_err, -ECONNRESET);

    /* the allowed one delivers every byte, both ways, and ends cleanly */
    s1->paused = false;
    fake_conn_ops.read_enable(s1->c, true);
    pump();
    assert_int_equal(s1->in_len, n_up);
    assert_memory_equal(s1->in, up, n_up);
    assert_int_equal(s1->n_fin, 1);
    s1->out = down;
    s1->out_len = n_down;
    s1->fin_after_write = true;
    fake_app_push(s1);
    pump();
    assert_int_equal(c1->in_len, n_down);
    assert_memory_equal(c1->in, down, n_down);
    assert_int_equal(c1->n_closed, 1);
    assert_int_equal(c1->close_err, 0);
    assert_int_equal(F->n2.n_logs, 2);
    assert_int_equal(F->n2.logs[1].reason, MESH_REASON_NONE);
    assert_int_equal(F->n2.logs[1].bytes_recv, n_up);
    assert_int_equal(F->n2.logs[1].bytes_sent, n_down);
    assert_int_equal(stats(&F->n2)->active, 0);
    mesh_workloads_unref(ws2);
    free(up);
    free(down);
}

static void test_update_strict_closes_plaintext(void **state)
{
    (void)state;
    struct fake_app *h = client_connect("10.21.1.10", "10.96.0.10", 80);
    struct fake_app *pl = plain_connect("10.21.2.10", 8080);
    assert_true(h->connected && pl->connected);
    struct fake_app *hs = server_from("10.21.1.10"), *ps = server_from("10.30.0.5");
    exchange(pl, ps, "abc");
    assert_false(F->pol.last_had_identity);

    struct policy allow = {0};
    update(&F->n2, F->ws, MESH_MTLS_STRICT, &allow, &F->store_a);
    /* plaintext closed before the hook; HBONE re-checked by it and kept */
    assert_int_equal(allow.n_calls, 1);
    assert_true(allow.last_had_identity);
    assert_int_equal(allow.last_mode, MESH_MTLS_STRICT);
    assert_int_equal(stats(&F->n2)->rechecked, 2);
    assert_int_equal(stats(&F->n2)->recheck_closed, 1);
    assert_int_equal(F->n2.n_logs, 1);
    assert_int_equal(F->n2.logs[0].direction, MESH_PROXY_INBOUND_PLAIN);
    assert_int_equal(F->n2.logs[0].reason, MESH_REASON_DENIED);
    assert_string_equal(F->n2.logs[0].response_flags, "DENY");
    assert_int_equal(F->n2.logs[0].bytes_recv, 3);
    pump();
    assert_int_equal(pl->n_closed, 1);
    assert_int_equal(pl->close_err, -ECONNRESET);
    assert_int_equal(ps->n_closed, 1);
    exchange(h, hs, "still mutual TLS");
    exchange(hs, h, "and back");

    /* new plaintext is denied at once */
    struct fake_app *pl2 = plain_connect("10.21.2.10", 8080);
    assert_int_equal(pl2->n_closed, 1);
    assert_int_equal(F->n2.logs[1].reason, MESH_REASON_DENIED);

    /* the hook itself can be replaced: none means allow (STRICT still denies plaintext) */
    struct mesh_proxy_update u = {
        .workloads = F->ws, .mtls_mode = MESH_MTLS_STRICT, .replace_authz = true, .get_bundle_u = &F->store_a};
    assert_int_equal(mesh_proxy_update(F->n2.p, &u), 0);
    assert_int_equal(allow.n_calls, 1);
    assert_int_equal(stats(&F->n2)->recheck_closed, 1);
    exchange(h, hs, "no hook");
    struct fake_app *h2 = client_connect("10.21.1.10", "10.96.0.10", 80);
    assert_true(h2->connected);
    assert_int_equal(h2->n_closed, 0);

    /* a bad update changes nothing */
    u.mtls_mode = (enum mesh_mtls_mode)7;
    assert_int_equal(mesh_proxy_update(F->n2.p, &u), -EINVAL);
    assert_int_equal(mesh_proxy_update(F->n2.p, NULL), -EINVAL);
    assert_int_equal(stats(&F->n2)->updates, 2);
}

static void test_update_destination_gone_denied(void **state)
{
    (void)state;
    struct fake_app *h = client_connect("10.21.1.10", "10.21.2.10", 8080);
    struct fake_app *pl = plain_connect("10.21.2.20", 9000);
    assert_true(h->connected && pl->connected);
    int calls = F->pol.n_calls;

    /* echo-1 leaves the snapshot: its live tunnel fails the re-check like ztunnel's assert_rbac (no hook call) */
    struct mesh_workloads *ws2 = make_ws(WL_BASE | WL_NO_ECHO1);
    update(&F->n2, ws2, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_a);
    assert_int_equal(F->pol.n_calls, calls + 1); /* only legacy's plaintext connection reached the hook */
    assert_int_equal(F->n2.n_logs, 1);
    assert_int_equal(F->n2.logs[0].direction, MESH_PROXY_INBOUND_HBONE);
    assert_int_equal(F->n2.logs[0].reason, MESH_REASON_DENIED);
    pump();
    assert_int_equal(h->n_closed, 1);
    exchange(pl, server_from("10.30.0.5"), "legacy still here");

    /* a new stream on the surviving HBONE connection to the gone workload: 503, "unroutable" */
    struct fake_app *h2 = client_connect("10.21.1.10", "10.21.2.10", 8080);
    assert_int_equal(h2->n_closed, 1);
    assert_int_equal(F->n2.logs[1].hbone_status, 503);
    assert_int_equal(F->n2.logs[1].reason, MESH_REASON_UNROUTABLE);
    mesh_workloads_unref(ws2);
}

/* ====================================================================================================== */
/* outbound                                                                                               */
/* ====================================================================================================== */

static void test_update_removed_service_unroutable(void **state)
{
    (void)state;
    struct fake_app *cv = client_connect("10.21.1.10", "10.96.0.10", 80);   /* via the service */
    struct fake_app *cw = client_connect("10.21.1.10", "10.21.2.10", 8080); /* the workload directly */
    struct fake_app *cl = client_connect("10.21.1.10", "10.21.2.20", 9000); /* legacy, plain passthrough */
    assert_true(cv->connected && cw->connected && cl->connected);
    assert_int_equal(F->n_servers, 3);
    struct fake_app *sv = &F->servers[0], *sw = &F->servers[1], *sl = &F->servers[2];

    struct mesh_workloads *ws2 = make_ws(WL_BASE & ~WL_ECHO_SVC);
    update(&F->n1, ws2, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_a);
    assert_int_equal(stats(&F->n1)->rechecked, 3);
    assert_int_equal(stats(&F->n1)->recheck_closed, 1);
    assert_int_equal(F->n1.n_logs, 1);
    assert_int_equal(F->n1.logs[0].direction, MESH_PROXY_OUTBOUND);
    assert_int_equal(F->n1.logs[0].reason, MESH_REASON_UNROUTABLE);
    assert_int_equal(F->n1.logs[0].err, MESH_ERR_UNROUTABLE);
    assert_string_equal(F->n1.logs[0].response_flags, "CONNECT");
    pump();
    assert_int_equal(cv->n_closed, 1);
    assert_int_equal(cv->close_err, -ECONNRESET);
    assert_int_equal(sv->n_closed, 1);
    exchange(cw, sw, "direct");
    exchange(sl, cl, "passthrough");

    /* the legacy workload goes too: its passthrough connection follows */
    struct mesh_workloads *ws3 = make_ws(WL_CLIENT2);
    update(&F->n1, ws3, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_a);
    assert_int_equal(stats(&F->n1)->rechecked, 5);
    assert_int_equal(stats(&F->n1)->recheck_closed, 2);
    assert_int_equal(F->n1.logs[1].reason, MESH_REASON_UNROUTABLE);
    pump();
    assert_int_equal(cl->n_closed, 1);
    assert_int_equal(sl->n_closed, 1);
    exchange(cw, sw, "the workload is still there");
    /* new connections to the removed service are plain passthrough to nowhere now */
    struct fake_app *cv2 = client_connect("10.21.1.10", "10.96.0.10", 80);
    assert_int_equal(cv2->n_closed, 1);
    mesh_workloads_unref(ws2);
    mesh_workloads_unref(ws3);
}

static void test_update_endpoint_change_keeps_flowing(void **state)
{
    (void)state;
    struct fake_app *cv = client_connect("10.21.1.10", "10.96.0.10", 80);
    assert_true(cv->connected);
    struct fake_app *sv = &F->servers[0];
    char b[64];
    mesh_addr_format(&sv->local, false, b, sizeof(b));
    assert_string_equal(b, "10.21.2.10");

    /* echo-1 unhealthy, echo-2 the only eligible endpoint: a new pick would differ, the service is the same */
    struct mesh_workloads *ws2 = make_ws(WL_BASE | WL_ECHO2 | WL_ECHO1_SICK);
    update(&F->n1, ws2, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_a);
    update(&F->n2, ws2, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_a);
    assert_int_equal(stats(&F->n1)->rechecked, 1);
    assert_int_equal(stats(&F->n1)->recheck_closed, 0);
    assert_int_equal(stats(&F->n2)->recheck_closed, 0);
    pump();
    exchange(cv, sv, "same service, old endpoint");
    exchange(sv, cv, "fine");

    struct fake_app *cv2 = client_connect("10.21.1.10", "10.96.0.10", 80);
    assert_true(cv2->connected);
    mesh_addr_format(&F->servers[1].local, false, b, sizeof(b));
    assert_string_equal(b, "10.21.2.11");
    assert_int_equal(cv->n_closed, 0);
    mesh_workloads_unref(ws2);
}

static void test_update_new_workload_reachable(void **state)
{
    (void)state;
    /* before: the VIP is unknown, so the connection is plain passthrough to an address nobody serves */
    struct fake_app *c0 = client_connect("10.21.1.10", "10.96.0.20", 80);
    assert_int_equal(c0->n_closed, 1);
    assert_int_equal(F->n1.logs[0].reason, MESH_REASON_REFUSED);

    struct mesh_workloads *ws2 = make_ws(WL_BASE | WL_FRESH);
    update(&F->n1, ws2, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_a);
    update(&F->n2, ws2, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_a);
    struct fake_app *c1 = client_connect("10.21.1.10", "10.96.0.20", 80);
    assert_true(c1->connected);
    assert_int_equal(c1->n_closed, 0);
    struct fake_app *s1 = server_from("10.21.1.10");
    char b[64];
    mesh_addr_format(&s1->local, true, b, sizeof(b));
    assert_string_equal(b, "10.21.2.30:8080");
    exchange(c1, s1, "hello fresh");
    exchange(s1, c1, "hello sleep");
    assert_string_equal(F->pol.last_dst_uid, "Kubernetes//Pod/default/fresh");
    struct fake_app *c2 = client_connect("10.21.1.10", "10.21.2.30", 8080);
    assert_true(c2->connected);
    assert_int_equal(stats(&F->n1)->pool_handshakes, 1); /* one tunnel to 10.21.2.30:15008 carries both */
    mesh_workloads_unref(ws2);
}


/* ====================================================================================================== */
/* on-demand lookups                                                                                      */
/* ====================================================================================================== */

/* An unknown destination is asked for and waits; the update that brings it sends the connection over HBONE. */
static void test_on_demand_waits_for_the_answer(void **state)
{
    char b[64];
    (void)state;
    struct fake_app *c = client_connect("10.21.1.10", "10.21.2.30", 8080);
    assert_true(g_n_asked >= 1);
    mesh_addr_format(&g_asked[0], false, b, sizeof(b));
    assert_string_equal(b, "10.21.2.30");
    assert_int_equal(stats(&F->n1)->lookups, 1);
    assert_int_equal(F->n_servers, 0); /* nothing dialled while waiting */
    assert_int_equal(c->n_closed, 0);

    struct mesh_workloads *ws2 = make_ws(WL_BASE | WL_FRESH);
    update(&F->n2, ws2, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_a);
    update(&F->n1, ws2, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_a);
    pump();
    pump();
    assert_true(c->connected);
    struct fake_app *s = server_from("10.21.1.10");
    mesh_addr_format(&s->local, true, b, sizeof(b));
    assert_string_equal(b, "10.21.2.30:8080");
    exchange(c, s, "asked for");
    exchange(s, c, "and found");
    assert_int_equal(stats(&F->n1)->lookups_resolved, 1);
    assert_int_equal(stats(&F->n1)->pool_handshakes, 1); /* over HBONE */
    assert_string_equal(F->pol.last_dst_uid, "Kubernetes//Pod/default/fresh");
    /* a second connection to it needs no lookup */
    int asked = g_n_asked;
    (void)client_connect("10.21.1.10", "10.21.2.30", 8080);
    assert_int_equal(g_n_asked, asked);
    assert_int_equal(stats(&F->n1)->lookups, 1);
    mesh_workloads_unref(ws2);
}

/* No answer within the lookup timeout: the connection is passed through to the address as it is. */
static void test_on_demand_times_out_to_passthrough(void **state)
{
    (void)state;
    struct mesh_workloads *ws2 = make_ws(WL_ECHO_SVC | WL_CLIENT2); /* legacy 10.21.2.20 unknown */
    update(&F->n1, ws2, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_a);
    struct fake_app *c = client_connect("10.21.1.10", "10.21.2.20", 9000);
    assert_int_equal(g_n_asked, 1);
    assert_int_equal(F->n_servers, 0);
    /* an update that does not name it does not end the wait */
    update(&F->n1, ws2, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_a);
    pump();
    assert_int_equal(F->n_servers, 0);
    for (uint64_t t = 0; t + MESH_PROXY_LOOKUP_POLL_NS < MESH_PROXY_LOOKUP_TIMEOUT_NS; t += MESH_PROXY_LOOKUP_POLL_NS) {
        fake_clock_advance(&F->fe.clock, MESH_PROXY_LOOKUP_POLL_NS);
        mesh_proxy_on_deadline(F->n1.p, now());
    }
    pump();
    assert_int_equal(F->n_servers, 0); /* still waiting, polling the hook */
    assert_true(g_n_asked > 1);
    fake_clock_advance(&F->fe.clock, MESH_PROXY_LOOKUP_POLL_NS); /* the wait is over */
    assert_true(mesh_proxy_next_deadline(F->n1.p) <= now());
    mesh_proxy_on_deadline(F->n1.p, now());
    pump();
    pump();
    assert_true(c->connected);
    struct fake_app *s = server_from("10.21.1.10");
    exchange(c, s, "plain after the wait");
    assert_int_equal(stats(&F->n1)->lookups_resolved, 0);
    assert_int_equal(stats(&F->n1)->pool_handshakes, 0); /* passthrough, no tunnel */
    mesh_workloads_unref(ws2);
}

/* The hook learns that nobody has the address: the connection goes on at the next poll, not at the timeout. */
static void test_on_demand_answered_unknown_goes_on(void **state)
{
    (void)state;
    struct mesh_workloads *ws2 = make_ws(WL_ECHO_SVC | WL_CLIENT2); /* legacy 10.21.2.20 unknown */
    update(&F->n1, ws2, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_a);
    struct fake_app *c = client_connect("10.21.1.10", "10.21.2.20", 9000);
    assert_int_equal(F->n_servers, 0);
    g_unknown = true; /* the answer came: a removal */
    fake_clock_advance(&F->fe.clock, MESH_PROXY_LOOKUP_POLL_NS);
    mesh_proxy_on_deadline(F->n1.p, now());
    pump();
    pump();
    assert_true(c->connected);
    exchange(c, server_from("10.21.1.10"), "passed through after the answer");
    /* asked for again later: the hook answers at once and nothing waits */
    struct fake_app *c2 = client_connect("10.21.1.10", "10.21.2.20", 9000);
    assert_true(c2->connected);
    assert_int_equal(stats(&F->n1)->lookups, 1);
    mesh_workloads_unref(ws2);
}

/* ====================================================================================================== */
/* bounded passes                                                                                         */
/* ====================================================================================================== */

static void test_update_recheck_slices(void **state)
{
    (void)state;
    struct fake_app *c[10];
    for (int i = 0; i < 10; i++) {
        c[i] = plain_connect("10.21.2.10", 8080);
        assert_true(c[i]->connected);
    }
    assert_int_equal(mesh_proxy_next_deadline(F->n2.p) == now(), false);

    /* allow-all: one slice of 4 inside the update, the rest pending */
    struct policy allow = {0};
    update(&F->n2, F->ws, MESH_MTLS_PERMISSIVE, &allow, &F->store_a);
    assert_int_equal(stats(&F->n2)->rechecked, 4);
    assert_int_equal(stats(&F->n2)->recheck_pending, 1);
    assert_int_equal(mesh_proxy_next_deadline(F->n2.p), now());

    /* a newer update mid-pass restarts it against the newest state */
    struct policy deny = {.deny_all = true};
    update(&F->n2, F->ws, MESH_MTLS_PERMISSIVE, &deny, &F->store_a);
    assert_int_equal(stats(&F->n2)->rechecked, 8);
    assert_int_equal(stats(&F->n2)->recheck_closed, 4);
    assert_int_equal(deny.n_calls, 4);

    /* a connection accepted mid-pass is resolved with the new state: denied at accept, not re-checked */
    struct fake_app *late = plain_connect("10.21.2.10", 8080);
    assert_int_equal(late->n_closed, 1);
    assert_int_equal(deny.n_calls, 5);

    mesh_proxy_on_deadline(F->n2.p, now());
    assert_int_equal(stats(&F->n2)->rechecked, 12);
    assert_int_equal(stats(&F->n2)->recheck_closed, 8);
    assert_int_equal(mesh_proxy_next_deadline(F->n2.p), now());
    mesh_proxy_on_deadline(F->n2.p, now());
    assert_int_equal(stats(&F->n2)->rechecked, 14);
    assert_int_equal(stats(&F->n2)->recheck_closed, 10);
    assert_int_equal(stats(&F->n2)->recheck_pending, 0);
    assert_int_equal(mesh_proxy_next_deadline(F->n2.p) == now(), false);
    assert_int_equal(stats(&F->n2)->active, 0);
    pump();
    for (int i = 0; i < 10; i++)
        assert_int_equal(c[i]->n_closed, 1);
    assert_int_equal(F->n2.n_logs, 11);
    for (int i = 0; i < 11; i++)
        assert_int_equal(F->n2.logs[i].reason, MESH_REASON_DENIED);
}

static void test_update_more_than_one_slice(void **state)
{
    (void)state;
    const int n = 300;
    for (int i = 0; i < n; i++)
        assert_true(plain_connect("10.21.2.10", 8080)->connected);
    assert_int_equal(stats(&F->n2)->active, n);

    update(&F->n2, F->ws, MESH_MTLS_STRICT, &F->pol, &F->store_a);
    assert_int_equal(stats(&F->n2)->rechecked, MESH_PROXY_RECHECK_SLICE);
    assert_int_equal(stats(&F->n2)->recheck_closed, MESH_PROXY_RECHECK_SLICE);
    assert_int_equal(stats(&F->n2)->recheck_pending, 1);
    /* the backend's loop: run the proxy when its deadline says so */
    int rounds = 0;
    while (mesh_proxy_next_deadline(F->n2.p) <= now()) {
        mesh_proxy_on_deadline(F->n2.p, now());
        rounds++;
        assert_true(rounds < 10);
    }
    assert_int_equal(rounds, 1);
    assert_int_equal(stats(&F->n2)->rechecked, n);
    assert_int_equal(stats(&F->n2)->recheck_closed, n);
    assert_int_equal(stats(&F->n2)->active, 0);
    pump();
    for (int i = 0; i < n; i++)
        assert_int_equal(F->clients[i].n_closed, 1);
    assert_int_equal(F->n2.n_logs, n);
    assert_int_equal(mesh_metrics_sum(F->n2.metrics, MESH_METRICS_L_RESPONSE_FLAGS, "DENY").closed, (uint64_t)n);
    assert_int_equal(fake_net_live(F->net), 0);
}

/* ====================================================================================================== */
/* certificates                                                                                           */
/* ====================================================================================================== */

static void test_update_cert_change_drains_pool(void **state)
{
    (void)state;
    struct fake_app *c1 = client_connect("10.21.1.10", "10.96.0.10", 80);
    assert_true(c1->connected);
    struct fake_app *s1 = server_from("10.21.1.10");

    /* same certificates: nothing to drain */
    update(&F->n1, F->ws, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_a);
    assert_int_equal(stats(&F->n1)->pool_drained, 0);

    /* a new certificate for sleep: the pooled connection takes no new stream but keeps its live one */
    update(&F->n1, F->ws, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_b);
    assert_int_equal(stats(&F->n1)->pool_drained, 1);
    assert_int_equal(stats(&F->n1)->recheck_closed, 0);
    pump();
    exchange(c1, s1, "still on the old certificate");
    exchange(s1, c1, "ok");

    struct fake_app *c2 = client_connect("10.21.1.10", "10.96.0.10", 80);
    assert_true(c2->connected);
    struct fake_app *s2 = server_from("10.21.1.10");
    assert_int_equal(stats(&F->n1)->pool_handshakes, 2);
    assert_int_equal(stats(&F->n1)->pool_conns, 2);
    assert_int_equal(stats(&F->n2)->inbound_conns, 2);

    /* the last stream on the old connection ends: GOAWAY, then both sides close it */
    fake_conn_ops.shutdown_wr(c1->c);
    pump();
    fake_conn_ops.shutdown_wr(s1->c);
    pump();
    assert_int_equal(c1->n_closed, 1);
    assert_int_equal(c1->close_err, 0);
    assert_int_equal(stats(&F->n1)->pool_conns, 1);
    assert_int_equal(stats(&F->n2)->inbound_conns, 1);
    exchange(c2, s2, "new certificate");
    assert_int_equal(F->n1.n_logs, 1);
    assert_int_equal(F->n1.logs[0].reason, MESH_REASON_NONE);
}

static void test_update_cert_change_idle_pool(void **state)
{
    (void)state;
    struct fake_app *c1 = client_connect("10.21.1.10", "10.96.0.10", 80);
    fake_conn_ops.shutdown_wr(c1->c);
    pump();
    fake_conn_ops.shutdown_wr(F->servers[0].c);
    pump();
    assert_int_equal(c1->n_closed, 1);
    assert_int_equal(stats(&F->n1)->pool_conns, 1);
    /* an idle pooled connection is drained at once */
    update(&F->n1, F->ws, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_b);
    assert_int_equal(stats(&F->n1)->pool_drained, 1);
    pump();
    assert_int_equal(stats(&F->n1)->pool_conns, 0);
    assert_int_equal(stats(&F->n2)->inbound_conns, 0);
    assert_int_equal(fake_net_live(F->net), 0);
}

/* ====================================================================================================== */
/* allocation failures                                                                                    */
/* ====================================================================================================== */

/* Live HBONE and plaintext connections, then updates that deny the inbound ones, remove the service of one outbound
 * connection (the other one still resolves) and replace the certificates, with allocation attempt fail_at failing
 * (0: none). Returns the attempts made. */
static long sweep_scenario(long fail_at)
{
    fixture_up(1);
    struct fake_app *h = client_connect("10.21.1.10", "10.96.0.10", 80);
    struct fake_app *hd = client_connect("10.21.1.10", "10.21.2.10", 8080);
    struct fake_app *pl = plain_connect("10.21.2.10", 8080);
    struct fake_app *pl2 = plain_connect("10.21.2.10", 8080);
    assert_true(h->connected && hd->connected && pl->connected && pl2->connected);
    exchange(h, &F->servers[0], "before");
    exchange(hd, &F->servers[1], "before");
    struct mesh_workloads *ws_rev = make_ws(WL_BASE | WL_REV2);
    struct mesh_workloads *ws_nosvc = make_ws(WL_BASE & ~WL_ECHO_SVC);
    struct policy deny = {.deny_all = true};

    failalloc_arm(&F->fe.alloc, fail_at);
    /* node2's pass runs to its end (slice of 1) before node1 hears of any reset: both re-checks see live conns */
    update(&F->n2, ws_rev, MESH_MTLS_PERMISSIVE, &deny, &F->store_a);
    while (mesh_proxy_next_deadline(F->n2.p) <= now())
        mesh_proxy_on_deadline(F->n2.p, now());
    update(&F->n1, ws_nosvc, MESH_MTLS_PERMISSIVE, &F->pol, &F->store_b);
    pump();
    long attempts = F->fe.alloc.attempts;
    failalloc_arm(&F->fe.alloc, 0);
    pump();

    /* whatever failed, every live connection was closed exactly once and the clients saw it. hd's close reached
     * node1 only through the tunnel: a reset stream, or, when the reset found no memory, the death of the HBONE
     * connection, which may close the other stream before the pass reaches it */
    assert_true(stats(&F->n2)->rechecked == 4 || (fail_at != 0 && stats(&F->n2)->rechecked == 3));
    assert_int_equal(stats(&F->n2)->recheck_closed, stats(&F->n2)->rechecked);
    assert_int_equal(stats(&F->n2)->active, 0);
    assert_int_equal(F->n2.n_logs, 4);
    assert_int_equal(stats(&F->n1)->rechecked, 2);
    assert_int_equal(stats(&F->n1)->recheck_closed, 1);
    assert_int_equal(stats(&F->n1)->active, 0);
    assert_int_equal(F->n1.n_logs, 2);
    assert_int_equal(pl->n_closed, 1);
    assert_int_equal(pl2->n_closed, 1);
    assert_int_equal(h->n_closed, 1);
    assert_int_equal(hd->n_closed, 1);
    mesh_workloads_unref(ws_rev);
    mesh_workloads_unref(ws_nosvc);
    fixture_down(); /* asserts that nothing leaked */
    return attempts;
}

static void test_update_alloc_failure_sweep(void **state)
{
    (void)state;
    long total = sweep_scenario(0);
    print_message("allocation attempts in the update window: %ld\n", total);
    assert_true(total > 0);
    for (long i = 1; i <= total; i++)
        (void)sweep_scenario(i);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_update_denies_live_hbone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_allowed_keeps_flowing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_strict_closes_plaintext, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_destination_gone_denied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_removed_service_unroutable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_endpoint_change_keeps_flowing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_new_workload_reachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_recheck_slices, setup_small_slice, teardown),
        cmocka_unit_test_setup_teardown(test_update_more_than_one_slice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_cert_change_drains_pool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_cert_change_idle_pool, setup, teardown),
        cmocka_unit_test(test_update_alloc_failure_sweep),
        cmocka_unit_test_setup_teardown(test_on_demand_waits_for_the_answer, setup_on_demand, teardown),
        cmocka_unit_test_setup_teardown(test_on_demand_times_out_to_passthrough, setup_on_demand, teardown),
        cmocka_unit_test_setup_teardown(test_on_demand_answered_unknown_goes_on, setup_on_demand, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
