/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for appliance/conn_kernel.c: the kernel-socket backend driven through its mesh/conn.h ops table, over
 * loopback only (no privileges needed). Every test runs the loop until a condition holds or an iteration budget is
 * spent, and checks that no upcall ever happens inside a downcall.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "appliance/conn_kernel.h"

#define POLL_BUDGET 4000

static const struct mesh_conn_ops *ops = &app_kconn_ops;
static int in_downcall; /* > 0 while a test is inside a downcall */

/* ---- a test endpoint: records every upcall ---- */

struct peer {
    struct mesh_conn *c;
    uint8_t *rx;
    size_t rx_len, rx_cap;
    size_t consume_max; /* on_data takes at most this much (0: everything) */
    bool refuse;        /* on_data takes nothing */
    int writable, peer_fin, closed;
    int closed_err;
    int data_calls;
    bool echo;            /* write back what arrives; shutdown_wr on the peer's FIN */
    bool fin_on_fin;      /* shutdown_wr when the peer's FIN arrives */
    bool paused;          /* on_data turned reading off after a partial take */
    int order_violations; /* on_data after on_peer_fin, anything after on_closed */
    int reentrant;        /* upcalls seen inside a downcall */
    struct mesh_addr src, dst;
};

static void check_not_reentrant(struct peer *p)
{
    if (in_downcall > 0)
        p->reentrant++;
    if (p->closed)
        p->order_violations++;
}

static ssize_t down_write(struct mesh_conn *c, const void *buf, size_t len)
{
    struct iovec v = {.iov_base = (void *)(uintptr_t)buf, .iov_len = len};
    ssize_t r;

    in_downcall++;
    r = ops->write(c, &v, 1);
    in_downcall--;
    return r;
}

static int down_shutdown(struct mesh_conn *c)
{
    int r;
    in_downcall++;
    r = ops->shutdown_wr(c);
    in_downcall--;
    return r;
}

static void down_read_enable(struct mesh_conn *c, bool on)
{
    in_downcall++;
    ops->read_enable(c, on);
    in_downcall--;
}

static void down_abort(struct mesh_conn *c)
{
    in_downcall++;
    ops->abort(c);
    in_downcall--;
}

static size_t peer_on_data(void *u, const uint8_t *d, size_t n)
{
    struct peer *p = u;
    size_t take = n;

    check_not_reentrant(p);
    if (p->peer_fin)
        p->order_violations++;
    p->data_calls++;
    if (p->refuse)
        return 0;
    if (p->consume_max && take > p->consume_max)
        take = p->consume_max;
    if (p->rx_len + take > p->rx_cap) {
        p->rx_cap = (p->rx_len + take) * 2;
        p->rx = realloc(p->rx, p->rx_cap);
        assert_non_null(p->rx);
    }
    memcpy(p->rx + p->rx_len, d, take);
    p->rx_len += take;
    if (take < n) { /* full: pause until the test resumes reading */
        down_read_enable(p->c, false);
        p->paused = true;
    }
    if (p->echo) {
        ssize_t w = down_write(p->c, d, take);
        assert_int_equal(w, (ssize_t)take); /* small messages: the kernel buffer has room */
    }
    return take;
}

static void peer_on_writable(void *u)
{
    struct peer *p = u;
    check_not_reentrant(p);
    p->writable++;
}

static void peer_on_peer_fin(void *u)
{
    struct peer *p = u;
    check_not_reentrant(p);
    p->peer_fin++;
    if (p->echo || p->fin_on_fin)
        assert_int_equal(down_shutdown(p->c), 0);
}

static void peer_on_closed(void *u, int err)
{
    struct peer *p = u;
    check_not_reentrant(p);
    p->closed++;
    p->closed_err = err;
}

static const struct mesh_conn_cb peer_cb = {
    .on_data = peer_on_data,
    .on_writable = peer_on_writable,
    .on_peer_fin = peer_on_peer_fin,
    .on_closed = peer_on_closed,
};

static void peer_fini(struct peer *p)
{
    free(p->rx);
    memset(p, 0, sizeof(*p));
}

/* ---- fixture: a loop and a plain listener on 127.0.0.1 (any port) whose connections go to `server` ---- */

struct fixture {
    struct app_kloop *loop;
    struct app_klistener *l;
    struct mesh_addr addr;
    struct peer server;
    struct peer client;
    int accepted;
};

static void on_accept(void *u, struct app_klistener *l, struct mesh_conn *c, const struct mesh_addr *src,
                      const struct mesh_addr *dst)
{
    struct fixture *f = u;
    (void)l;
    if (in_downcall > 0)
        f->server.reentrant++;
    f->accepted++;
    f->server.c = c;
    f->server.src = *src;
    f->server.dst = *dst;
    app_kconn_set_cb(c, &peer_cb, &f->server);
}

static struct mesh_addr addr_v4(const char *ip, uint16_t port)
{
    struct mesh_addr a;
    memset(&a, 0, sizeof(a));
    a.family = MESH_ADDR_V4;
    a.port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, a.ip.v4), 1);
    return a;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct mesh_addr any = addr_v4("127.0.0.1", 0);
    int err = 0;

    assert_non_null(f);
    f->loop = app_kloop_new(NULL, &err);
    assert_non_null(f->loop);
    assert_int_equal(app_kloop_listen(f->loop, &any, APP_KLISTEN_PLAIN, on_accept, f, &f->l), 0);
    app_klistener_addr(f->l, &f->addr);
    assert_int_not_equal(f->addr.port, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(f->server.reentrant + f->client.reentrant, 0);
    assert_int_equal(f->server.order_violations + f->client.order_violations, 0);
    app_kloop_free(f->loop);
    peer_fini(&f->server);
    peer_fini(&f->client);
    free(f);
    return 0;
}

typedef bool (*cond_fn)(struct fixture *f);

static void run_until(struct fixture *f, cond_fn cond)
{
    for (int i = 0; i < POLL_BUDGET && !cond(f); i++) {
        int r = app_kloop_poll(f->loop, NULL, 0, 10);
        assert_true(r >= 0 || r == -EINTR);
    }
    assert_true(cond(f));
}

static void spin(struct fixture *f, int n)
{
    for (int i = 0; i < n; i++)
        app_kloop_poll(f->loop, NULL, 0, 1);
}

static void dial(struct fixture *f, const struct mesh_addr *src)
{
    in_downcall++;
    int rc = ops->dial(f->loop, src, &f->addr, &peer_cb, &f->client, &f->client.c);
    in_downcall--;
    assert_int_equal(rc, 0);
}

static bool c_writable(struct fixture *f)
{
    return f->client.writable > 0 && f->accepted > 0;
}
static bool both_closed(struct fixture *f)
{
    return f->client.closed && f->server.closed;
}
static bool client_closed(struct fixture *f)
{
    return f->client.closed > 0;
}

/* ---- tests ---- */

static void test_conn_kernel_echo(void **state)
{
    struct fixture *f = *state;
    static const char msg[] = "hello through the ops table";

    f->server.echo = true;
    dial(f, NULL);
    assert_int_equal(f->client.writable, 0); /* never inside dial */
    run_until(f, c_writable);
    assert_int_equal(f->client.writable, 1);
    assert_int_equal(down_write(f->client.c, msg, sizeof(msg)), (ssize_t)sizeof(msg));
    assert_int_equal(down_shutdown(f->client.c), 0);
    assert_int_equal(down_write(f->client.c, "x", 1), -EPIPE);
    run_until(f, both_closed);
    assert_int_equal(f->client.rx_len, sizeof(msg));
    assert_memory_equal(f->client.rx, msg, sizeof(msg));
    assert_int_equal(f->server.rx_len, sizeof(msg));
    assert_int_equal(f->client.peer_fin, 1);
    assert_int_equal(f->server.peer_fin, 1);
    assert_int_equal(f->client.closed_err, 0);
    assert_int_equal(f->server.closed_err, 0);
    /* the accepted connection's addresses: client on loopback, destination the listener */
    assert_int_equal(f->server.dst.port, f->addr.port);
    assert_memory_equal(f->server.src.ip.v4, f->addr.ip.v4, 4);
    assert_int_equal(app_kloop_stats(f->loop)->live_conns, 0);
}

static bool c_accepted(struct fixture *f)
{
    return f->accepted > 0 && f->client.writable > 0;
}

/* The server writes 4 MiB; the client reads nothing for a while, then consumes slowly. */
static void test_conn_kernel_backpressure(void **state)
{
    struct fixture *f = *state;
    const size_t total = 4u << 20;
    uint8_t *blob = malloc(total);
    size_t sent = 0;
    int zero_writes = 0;

    assert_non_null(blob);
    for (size_t i = 0; i < total; i++)
        blob[i] = (uint8_t)(i * 7 + (i >> 11));
    dial(f, NULL);
    run_until(f, c_accepted);
    down_read_enable(f->client.c, false);

    /* fill until the kernel refuses: write returns partial, then 0, and asks for on_writable */
    for (int i = 0; i < 10000 && sent < total; i++) {
        ssize_t w = down_write(f->server.c, blob + sent, total - sent);
        assert_true(w >= 0);
        if (w == 0) {
            zero_writes++;
            break;
        }
        sent += (size_t)w;
    }
    assert_int_equal(zero_writes, 1);
    assert_true(sent < total);
    spin(f, 20);
    assert_int_equal(f->client.data_calls, 0); /* reading is off */
    assert_int_equal(f->server.writable, 0);   /* nothing drained */

    /* slow reader: 1000 bytes per upcall; the unconsumed rest is offered again */
    f->client.consume_max = 1000;
    down_read_enable(f->client.c, true);
    for (int i = 0; i < 200000 && f->client.rx_len < total; i++) {
        if (f->server.writable > 0 && sent < total) {
            f->server.writable = 0;
            ssize_t w = down_write(f->server.c, blob + sent, total - sent);
            assert_true(w >= 0);
            sent += (size_t)w;
        }
        app_kloop_poll(f->loop, NULL, 0, 10);
        if (f->client.paused) { /* the slow reader resumes: the kept bytes are offered again, from the loop */
            f->client.paused = false;
            int calls = f->client.data_calls;
            down_read_enable(f->client.c, true);
            assert_int_equal(f->client.data_calls, calls);
        }
    }
    assert_int_equal(sent, total);
    assert_int_equal(f->client.rx_len, total);
    assert_memory_equal(f->client.rx, blob, total);
    free(blob);
}

/* on_data that consumes nothing stalls the connection once 64 KiB are held; read_enable(true) re-offers them. */
static void test_conn_kernel_stall_and_reoffer(void **state)
{
    struct fixture *f = *state;
    uint8_t chunk[32768];
    size_t sent = 0;

    memset(chunk, 'z', sizeof(chunk));
    dial(f, NULL);
    run_until(f, c_accepted);
    f->client.refuse = true;
    for (int i = 0; i < 8; i++) {
        ssize_t w = down_write(f->server.c, chunk, sizeof(chunk));
        assert_true(w > 0);
        sent += (size_t)w;
    }
    spin(f, 50);
    int calls = f->client.data_calls;
    assert_true(calls > 0);
    spin(f, 20);
    assert_int_equal(f->client.data_calls, calls); /* stalled: no busy re-offering */
    f->client.refuse = false;
    down_read_enable(f->client.c, true);
    assert_int_equal(f->client.data_calls, calls); /* not from inside the downcall */
    for (int i = 0; i < POLL_BUDGET && f->client.rx_len < sent; i++)
        app_kloop_poll(f->loop, NULL, 0, 5);
    assert_int_equal(f->client.rx_len, sent);
}

static bool s_fin(struct fixture *f)
{
    return f->server.peer_fin > 0;
}

/* The client sends then closes its side; the server still answers after the FIN, then closes. */
static void test_conn_kernel_half_close(void **state)
{
    struct fixture *f = *state;

    dial(f, NULL);
    run_until(f, c_accepted);
    assert_int_equal(down_write(f->client.c, "request", 7), 7);
    assert_int_equal(down_shutdown(f->client.c), 0);
    assert_int_equal(down_shutdown(f->client.c), 0); /* idempotent */
    run_until(f, s_fin);
    assert_int_equal(f->server.rx_len, 7);
    assert_int_equal(f->server.closed, 0);
    spin(f, 5);
    assert_int_equal(f->client.peer_fin, 0);
    assert_int_equal(down_write(f->server.c, "response", 8), 8);
    assert_int_equal(down_shutdown(f->server.c), 0);
    run_until(f, both_closed);
    assert_int_equal(f->client.rx_len, 8);
    assert_memory_equal(f->client.rx, "response", 8);
    assert_int_equal(f->client.closed_err, 0);
    assert_int_equal(f->server.closed_err, 0);
}

/* abort() resets: the peer sees ECONNRESET; the aborted side gets no upcall at all. */
static void test_conn_kernel_abort_resets_peer(void **state)
{
    struct fixture *f = *state;

    dial(f, NULL);
    run_until(f, c_accepted);
    assert_int_equal(down_write(f->client.c, "x", 1), 1);
    spin(f, 5);
    int server_upcalls = f->server.data_calls + f->server.writable;
    down_abort(f->server.c);
    run_until(f, client_closed);
    assert_int_equal(f->client.closed_err, -ECONNRESET);
    spin(f, 5);
    assert_int_equal(f->server.data_calls + f->server.writable, server_upcalls);
    assert_int_equal(f->server.closed, 0);
    assert_int_equal(app_kloop_stats(f->loop)->aborted, 1);
}

/* A write that meets the reset returns -errno; on_closed follows from the loop, not from inside write(). */
static void test_conn_kernel_write_after_reset_defers_close(void **state)
{
    struct fixture *f = *state;
    ssize_t w = 0;

    dial(f, NULL);
    run_until(f, c_accepted);
    down_read_enable(f->client.c, false); /* the client does not notice the RST by reading */
    down_abort(f->server.c);
    for (int i = 0; i < 100 && w >= 0; i++) {
        w = down_write(f->client.c, "ping", 4);
        usleep(1000);
    }
    assert_true(w < 0);
    assert_int_equal(f->client.closed, 0); /* deferred */
    run_until(f, client_closed);
    assert_true(f->client.closed_err == -ECONNRESET || f->client.closed_err == -EPIPE);
}

static void test_conn_kernel_dial_refused(void **state)
{
    struct fixture *f = *state;
    struct mesh_addr dead = f->addr;

    app_klistener_close(f->l); /* nothing listens on that port any more */
    f->l = NULL;
    in_downcall++;
    int rc = ops->dial(f->loop, NULL, &dead, &peer_cb, &f->client, &f->client.c);
    in_downcall--;
    assert_int_equal(rc, 0);
    assert_int_equal(f->client.closed, 0);
    assert_true(down_write(f->client.c, "x", 1) < 0); /* -ENOTCONN while connecting, or the queued error */
    run_until(f, client_closed);
    assert_int_equal(f->client.closed_err, -ECONNREFUSED);
    assert_int_equal(f->client.writable, 0);
    assert_int_equal(app_kloop_stats(f->loop)->live_conns, 0);
}

static void test_conn_kernel_dial_with_src(void **state)
{
    struct fixture *f = *state;
    struct mesh_addr src;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_storage ss;
    socklen_t len;

    /* find a free port for the source */
    src = addr_v4("127.0.0.2", 0);
    len = app_kaddr_to_sockaddr(&src, &ss);
    assert_int_equal(bind(s, (struct sockaddr *)&ss, len), 0);
    len = sizeof(ss);
    assert_int_equal(getsockname(s, (struct sockaddr *)&ss, &len), 0);
    assert_int_equal(app_kaddr_from_sockaddr((struct sockaddr *)&ss, &src), 0);
    close(s);

    f->server.echo = true;
    dial(f, &src);
    run_until(f, c_accepted);
    assert_int_equal(f->server.src.port, src.port);
    assert_memory_equal(f->server.src.ip.v4, src.ip.v4, 4);
}

static void test_conn_kernel_dial_bad_src(void **state)
{
    struct fixture *f = *state;
    struct mesh_addr v6 = {.family = MESH_ADDR_V6};
    struct mesh_conn *c = NULL;

    in_downcall++;
    assert_int_equal(ops->dial(f->loop, &v6, &f->addr, &peer_cb, &f->client, &c), -EINVAL);
    in_downcall--;
    assert_null(c);
}

static bool dial_timed_out(struct fixture *f)
{
    return f->client.closed > 0;
}

/* A dial that never completes is failed with -ETIMEDOUT by the loop's own timer. */
static void test_conn_kernel_dial_timeout(void **state)
{
    struct fixture *f = *state;
    struct mesh_addr blackhole = addr_v4("127.0.0.1", 0);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_storage ss;
    socklen_t len = app_kaddr_to_sockaddr(&blackhole, &ss);
    struct peer fillers[8];
    int n_fill = 0;

    /* a listener with backlog 0 that never accepts: once its queue is full further SYNs are dropped */
    assert_int_equal(bind(s, (struct sockaddr *)&ss, len), 0);
    assert_int_equal(listen(s, 0), 0);
    len = sizeof(ss);
    getsockname(s, (struct sockaddr *)&ss, &len);
    app_kaddr_from_sockaddr((struct sockaddr *)&ss, &blackhole);
    memset(fillers, 0, sizeof(fillers));
    for (int i = 0; i < 2; i++, n_fill++) {
        struct mesh_conn *c;
        assert_int_equal(ops->dial(f->loop, NULL, &blackhole, &peer_cb, &fillers[i], &c), 0);
        fillers[i].c = c;
    }
    spin(f, 20);
    app_kloop_set_dial_timeout(f->loop, 200);
    in_downcall++;
    assert_int_equal(ops->dial(f->loop, NULL, &blackhole, &peer_cb, &f->client, &f->client.c), 0);
    in_downcall--;
    run_until(f, dial_timed_out);
    assert_int_equal(f->client.closed_err, -ETIMEDOUT);
    assert_true(app_kloop_stats(f->loop)->connect_timeouts >= 1);
    for (int i = 0; i < n_fill; i++) {
        if (!fillers[i].closed)
            ops->abort(fillers[i].c);
        peer_fini(&fillers[i]);
    }
    close(s);
}

/* ---- engines and extra descriptors ---- */

struct tick {
    uint64_t deadline;
    int fired;
};

static uint64_t tick_next(void *u)
{
    return ((struct tick *)u)->deadline;
}

static void tick_fire(void *u, uint64_t now)
{
    struct tick *t = u;
    assert_true(now >= t->deadline);
    t->fired++;
    t->deadline = UINT64_MAX;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void test_conn_kernel_engine_deadline_bounds_wait(void **state)
{
    struct fixture *f = *state;
    struct tick t = {.deadline = now_ns() + 30 * 1000000ull};
    struct app_kloop_engine e = {.next_deadline = tick_next, .on_deadline = tick_fire, .u = &t};
    struct timespec a, b;

    assert_int_equal(app_kloop_add_engine(f->loop, &e), 0);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < 20 && !t.fired; i++)
        app_kloop_poll(f->loop, NULL, 0, -1); /* unbounded: only the deadline wakes it */
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_int_equal(t.fired, 1);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    assert_true(ms >= 25 && ms < 2000);
    app_kloop_remove_engine(f->loop, &t);
}

static void test_conn_kernel_extra_fds(void **state)
{
    struct fixture *f = *state;
    struct pollfd pfd;
    int fds[2];

    assert_int_equal(pipe(fds), 0);
    pfd.fd = fds[0];
    pfd.events = POLLIN;
    assert_int_equal(app_kloop_poll(f->loop, &pfd, 1, 0), 0);
    assert_int_equal(pfd.revents, 0);
    assert_int_equal(write(fds[1], "x", 1), 1);
    assert_int_equal(app_kloop_poll(f->loop, &pfd, 1, 1000), 1);
    assert_true(pfd.revents & POLLIN);
    /* sockets are still served when the extra descriptors are idle */
    f->server.echo = true;
    char drain;
    assert_int_equal(read(fds[0], &drain, 1), 1);
    dial(f, NULL);
    for (int i = 0; i < POLL_BUDGET && !c_accepted(f); i++)
        app_kloop_poll(f->loop, &pfd, 1, 10);
    assert_true(c_accepted(f));
    close(fds[0]);
    close(fds[1]);
}

/* A REDIRECT listener reached directly (not NATed) reports its own address as the destination. */
static void test_conn_kernel_redirect_listener_fallback(void **state)
{
    struct fixture *f = *state;
    struct mesh_addr any = addr_v4("127.0.0.1", 0);
    struct app_klistener *l;

    app_klistener_close(f->l);
    assert_int_equal(app_kloop_listen(f->loop, &any, APP_KLISTEN_REDIRECT, on_accept, f, &l), 0);
    f->l = l;
    app_klistener_addr(l, &f->addr);
    dial(f, NULL);
    run_until(f, c_accepted);
    assert_int_equal(f->server.dst.port, f->addr.port);
}

/* The accept callback that attaches nothing: the connection is reset at once. */
static void on_accept_ignore(void *u, struct app_klistener *l, struct mesh_conn *c, const struct mesh_addr *src,
                             const struct mesh_addr *dst)
{
    struct fixture *f = u;
    (void)l, (void)c, (void)src, (void)dst;
    f->accepted++;
}

static void test_conn_kernel_unattached_accept_is_reset(void **state)
{
    struct fixture *f = *state;
    struct mesh_addr any = addr_v4("127.0.0.1", 0);
    struct app_klistener *l;

    app_klistener_close(f->l);
    assert_int_equal(app_kloop_listen(f->loop, &any, APP_KLISTEN_PLAIN, on_accept_ignore, f, &l), 0);
    f->l = l;
    app_klistener_addr(l, &f->addr);
    dial(f, NULL);
    run_until(f, client_closed);
    assert_int_equal(f->accepted, 1);
    assert_true(f->client.closed_err == -ECONNRESET || f->client.closed_err == 0);
}

static void test_conn_kernel_addr_format(void **state)
{
    struct mesh_addr a = addr_v4("10.1.2.3", 15008);
    char buf[64];
    (void)state;
    assert_string_equal(app_kaddr_format(&a, buf, sizeof(buf)), "10.1.2.3:15008");
}

static void test_conn_kernel_env(void **state)
{
    struct mesh_env env;
    uint8_t r[16] = {0}, zero[16] = {0};
    (void)state;
    app_kloop_env_init(&env, MESH_LOG_INFO);
    assert_int_equal(mesh_env_random(&env, r, sizeof(r)), 0);
    assert_memory_not_equal(r, zero, sizeof(r));
    uint64_t t = mesh_env_now(&env);
    assert_true(t > 1600000000ull * 1000000000ull); /* wall clock */
    void *p = mesh_env_alloc(&env, 10);
    assert_non_null(p);
    mesh_env_free(&env, p);
    MESH_LOG(&env, MESH_LOG_DEBUG, "test", "not shown %d", 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_conn_kernel_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_kernel_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_kernel_stall_and_reoffer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_kernel_half_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_kernel_abort_resets_peer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_kernel_write_after_reset_defers_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_kernel_dial_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_kernel_dial_with_src, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_kernel_dial_bad_src, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_kernel_dial_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_kernel_engine_deadline_bounds_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_kernel_extra_fds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_kernel_redirect_listener_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_kernel_unattached_accept_is_reset, setup, teardown),
        cmocka_unit_test(test_conn_kernel_addr_format),
        cmocka_unit_test(test_conn_kernel_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
