/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for mesh/relay.c over tests/fakes/fake_conn.c: a client app dials the "proxy" listener, the proxy
 * dials the server app, and a relay joins the two proxy-side connections. Covers bulk transfer with small receive
 * buffers (backpressure), half-close each way, abort each way, write failure and completion counts.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mesh/relay.h"
#include "tests/fakes/fake_app.h"
#include "tests/fakes/fake_conn.h"

/* ---- the fixture: client -> [proxy: relay] -> server ---- */

struct fix {
    struct fake_net *net;
    struct fake_host client_host, proxy_host;
    struct fake_app client, server;
    struct mesh_relay relay;
    struct mesh_conn *down; /* proxy side of client conn (A) */
    struct mesh_conn *up;   /* proxy side of server conn (B) */
    int n_done, done_err;
    uint64_t done_ab, done_ba;
};

static struct fix F;

static void fix_on_done(void *u, struct mesh_relay *r, int err)
{
    struct fix *f = u;
    f->n_done++;
    f->done_err = err;
    f->done_ab = mesh_relay_bytes(r, MESH_RELAY_A);
    f->done_ba = mesh_relay_bytes(r, MESH_RELAY_B);
}

static int proxy_accept(void *lu, struct mesh_conn *c, const struct mesh_addr *src, const struct mesh_addr *dst,
                        const struct mesh_conn_cb **cb, void **u)
{
    struct fix *f = lu;
    (void)src;
    (void)dst;
    f->down = c;
    struct mesh_addr sdst = fake_addr("10.0.0.3", 80);
    assert_int_equal(fake_conn_ops.dial(&f->proxy_host, NULL, &sdst, &mesh_relay_conn_cb, &f->relay.side[1], &f->up),
                     0);
    mesh_relay_init(&f->relay, &fake_conn_ops, f->down, &fake_conn_ops, f->up, fix_on_done, f);
    *cb = &mesh_relay_conn_cb;
    *u = &f->relay.side[0];
    return 0;
}

static int server_accept(void *lu, struct mesh_conn *c, const struct mesh_addr *src, const struct mesh_addr *dst,
                         const struct mesh_conn_cb **cb, void **u)
{
    struct fix *f = lu;
    (void)dst;
    /* the server sees the proxy host's address */
    assert_int_equal(src->ip.v4[3], 2);
    f->server.c = c;
    *cb = &fake_app_cb;
    *u = &f->server;
    return 0;
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    F.net = fake_net_new();
    F.client_host = (struct fake_host){F.net, fake_addr("10.0.0.1", 0)};
    F.proxy_host = (struct fake_host){F.net, fake_addr("10.0.0.2", 0)};
    struct mesh_addr pl = fake_addr("10.0.0.2", 15001);
    struct mesh_addr sl = fake_addr("10.0.0.3", 80);
    fake_net_listen(F.net, &pl, FAKE_LISTEN_ACCEPT, proxy_accept, &F);
    fake_net_listen(F.net, &sl, FAKE_LISTEN_ACCEPT, server_accept, &F);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fake_net_free(F.net);
    free(F.client.in);
    free(F.server.in);
    return 0;
}

static void connect_client(void)
{
    struct mesh_addr dst = fake_addr("10.0.0.2", 15001);
    assert_int_equal(fake_conn_ops.dial(&F.client_host, NULL, &dst, &fake_app_cb, &F.client, &F.client.c), 0);
    fake_net_run(F.net);
    assert_true(F.client.connected);
    assert_non_null(F.server.c);
}

static uint8_t *pattern(size_t n, unsigned seed)
{
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(i * 31 + seed);
    return b;
}

/* ---- tests ---- */

static void bulk(size_t rcvbuf, size_t n_up, size_t n_down)
{
    fake_net_set_rcvbuf(F.net, rcvbuf);
    connect_client();
    uint8_t *up = pattern(n_up, 1), *down = pattern(n_down, 7);
    F.client.out = up;
    F.client.out_len = n_up;
    F.client.fin_after_write = true;
    F.server.out = down;
    F.server.out_len = n_down;
    F.server.fin_after_write = true;
    fake_app_push(&F.client);
    fake_app_push(&F.server);
    fake_net_run(F.net);
    assert_int_equal(F.server.in_len, n_up);
    assert_memory_equal(F.server.in, up, n_up);
    assert_int_equal(F.client.in_len, n_down);
    assert_memory_equal(F.client.in, down, n_down);
    assert_int_equal(F.client.n_fin, 1);
    assert_int_equal(F.server.n_fin, 1);
    assert_int_equal(F.n_done, 1);
    assert_int_equal(F.done_err, 0);
    assert_int_equal(F.done_ab, n_up);
    assert_int_equal(F.done_ba, n_down);
    assert_int_equal(F.client.n_closed, 1);
    assert_int_equal(F.client.close_err, 0);
    assert_int_equal(F.server.n_closed, 1);
    assert_int_equal(fake_net_live(F.net), 0);
    free(up);
    free(down);
}

static void test_relay_bulk_both_ways(void **state)
{
    (void)state;
    bulk(FAKE_CONN_DEFAULT_RCVBUF_BYTES, 1 << 20, 300000);
}

static void test_relay_bulk_tiny_buffers(void **state)
{
    (void)state;
    bulk(7, 100000, 33333);
}

static void test_relay_backpressure(void **state)
{
    (void)state;
    fake_net_set_rcvbuf(F.net, 4096);
    connect_client();
    F.server.paused = true;
    uint8_t *up = pattern(1 << 20, 3);
    F.client.out = up;
    F.client.out_len = 1 << 20;
    fake_app_push(&F.client);
    fake_net_run(F.net);
    /* everything stalls at about three receive buffers: server's, proxy down side, nothing in the relay */
    assert_true(F.client.out_off <= 3 * 4096);
    assert_int_equal(F.server.in_len, 0);
    assert_false(fake_conn_read_enabled(F.down));
    assert_int_equal(fake_conn_buffered(F.server.c), 4096);
    /* resume: the reader drains and everything flows */
    F.server.paused = false;
    fake_conn_ops.read_enable(F.server.c, true);
    fake_net_run(F.net);
    assert_int_equal(F.server.in_len, 1 << 20);
    assert_memory_equal(F.server.in, up, 1 << 20);
    assert_true(fake_conn_read_enabled(F.down));
    assert_int_equal(F.n_done, 0);
    free(up);
}

static void test_relay_half_close_client_first(void **state)
{
    (void)state;
    connect_client();
    F.client.out = (const uint8_t *)"ping";
    F.client.out_len = 4;
    F.client.fin_after_write = true;
    fake_app_push(&F.client);
    fake_net_run(F.net);
    assert_int_equal(F.server.n_fin, 1);
    assert_int_equal(F.server.in_len, 4);
    /* the other direction still works after the half-close */
    F.server.out = (const uint8_t *)"pong!";
    F.server.out_len = 5;
    fake_app_push(&F.server);
    fake_net_run(F.net);
    assert_int_equal(F.client.in_len, 5);
    assert_memory_equal(F.client.in, "pong!", 5);
    assert_int_equal(F.client.n_fin, 0);
    assert_int_equal(F.n_done, 0);
    F.server.fin_after_write = true;
    fake_app_push(&F.server);
    fake_net_run(F.net);
    assert_int_equal(F.client.n_fin, 1);
    assert_int_equal(F.n_done, 1);
    assert_int_equal(F.done_err, 0);
    assert_int_equal(F.done_ab, 4);
    assert_int_equal(F.done_ba, 5);
}

static void test_relay_half_close_server_first(void **state)
{
    (void)state;
    connect_client();
    F.server.out = (const uint8_t *)"hello";
    F.server.out_len = 5;
    F.server.fin_after_write = true;
    fake_app_push(&F.server);
    fake_net_run(F.net);
    assert_int_equal(F.client.n_fin, 1);
    assert_int_equal(F.client.in_len, 5);
    F.client.out = (const uint8_t *)"bye";
    F.client.out_len = 3;
    F.client.fin_after_write = true;
    fake_app_push(&F.client);
    fake_net_run(F.net);
    assert_int_equal(F.server.in_len, 3);
    assert_int_equal(F.n_done, 1);
    assert_int_equal(F.done_err, 0);
}

/* The server side closes cleanly (as an HTTP/2 stream ended by END_STREAM then RST_STREAM(NO_ERROR)) while the
 * client still has its direction open: the client keeps its connection until it ends too. */
static void server_closes_cleanly_first(void)
{
    connect_client();
    F.server.out = (const uint8_t *)"hello";
    F.server.out_len = 5;
    F.server.fin_after_write = true;
    fake_app_push(&F.server);
    fake_net_run(F.net);
    assert_int_equal(F.client.n_fin, 1);
    assert_int_equal(F.client.in_len, 5);
    struct mesh_conn *up = F.up;
    mesh_relay_on_closed(&F.relay, MESH_RELAY_B, 0);
    fake_conn_ops.abort(up); /* the relay dropped it; its owner frees it */
    fake_net_run(F.net);
    assert_int_equal(F.n_done, 0);
    assert_int_equal(F.client.n_closed, 0);
}

static void test_relay_clean_close_then_client_fin(void **state)
{
    (void)state;
    server_closes_cleanly_first();
    F.client.fin_after_write = true;
    fake_app_push(&F.client);
    fake_net_run(F.net);
    assert_int_equal(F.n_done, 1);
    assert_int_equal(F.done_err, 0);
    assert_int_equal(F.client.n_closed, 1);
    assert_int_equal(F.client.close_err, 0);
}

static void test_relay_clean_close_then_client_data(void **state)
{
    (void)state;
    server_closes_cleanly_first();
    F.client.out = (const uint8_t *)"late";
    F.client.out_len = 4;
    fake_app_push(&F.client);
    fake_net_run(F.net);
    assert_int_equal(F.n_done, 1);
    assert_int_equal(F.done_err, -EPIPE);
    assert_int_equal(F.client.n_closed, 1);
    assert_true(F.client.close_err < 0);
}

static void test_relay_abort_from_client(void **state)
{
    (void)state;
    connect_client();
    fake_conn_ops.abort(F.client.c);
    F.client.c = NULL;
    fake_net_run(F.net);
    assert_int_equal(F.n_done, 1);
    assert_int_equal(F.done_err, -ECONNRESET);
    assert_int_equal(F.server.n_closed, 1);
    assert_int_equal(F.server.close_err, -ECONNRESET);
    assert_int_equal(fake_net_live(F.net), 0);
}

static void test_relay_abort_from_server(void **state)
{
    (void)state;
    connect_client();
    F.client.out = (const uint8_t *)"x";
    F.client.out_len = 1;
    fake_app_push(&F.client);
    fake_net_run(F.net);
    fake_conn_ops.abort(F.server.c);
    F.server.c = NULL;
    fake_net_run(F.net);
    assert_int_equal(F.n_done, 1);
    assert_int_equal(F.done_err, -ECONNRESET);
    assert_int_equal(F.client.close_err, -ECONNRESET);
    assert_int_equal(F.done_ab, 1);
}

static void test_relay_local_abort(void **state)
{
    (void)state;
    connect_client();
    mesh_relay_abort(&F.relay, -ETIMEDOUT);
    assert_int_equal(F.n_done, 1);
    assert_int_equal(F.done_err, -ETIMEDOUT);
    mesh_relay_abort(&F.relay, -ETIMEDOUT); /* idempotent */
    assert_int_equal(F.n_done, 1);
    fake_net_run(F.net);
    assert_int_equal(F.client.close_err, -ECONNRESET);
    assert_int_equal(F.server.close_err, -ECONNRESET);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_relay_bulk_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_bulk_tiny_buffers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_half_close_client_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_half_close_server_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_clean_close_then_client_fin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_clean_close_then_client_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_abort_from_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_abort_from_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_local_abort, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
