/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for mesh/hbone.c: a client and a server engine wired together in memory (and a plain nghttp2 client
 * as an independent peer), whole buffers and one byte at a time, every response code, flow control, keepalive,
 * drain, and an allocation-failure sweep that covers nghttp2's own allocations (it allocates through the env).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <nghttp2/nghttp2.h>

#include "mesh/hbone.h"
#include "tests/fakes/fake_clock.h"

#define S_NS FAKE_NS_PER_S

static struct fake_env fe;
static long live_base;

static int setup(void **state)
{
    (void)state;
    fake_env_init(&fe, 0, 99);
    live_base = fe.alloc.live;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    failalloc_arm(&fe.alloc, 0);
    assert_int_equal(fe.alloc.live, live_base);
    return 0;
}

/* ====================================================================================================== */
/* recorder: the upper layer of one side                                                                  */
/* ====================================================================================================== */

struct rec {
    struct mesh_hbone *h;
    int auto_status; /* server: answer every request with this */
    int respond_rc;
    int n_requests;
    int32_t last_sid;
    struct mesh_hbone_request last_req;
    int n_responses;
    int last_status;
    struct mesh_buf data;
    bool paused; /* accept nothing */
    int n_fin, n_close, last_close_err, n_writable, n_goaway;
    bool echo_fin; /* answer the peer FIN with our own */
};

static void rec_on_request(void *u, int32_t sid, const struct mesh_hbone_request *req)
{
    struct rec *r = u;

    r->n_requests++;
    r->last_sid = sid;
    r->last_req = *req;
    if (r->auto_status != 0)
        r->respond_rc = mesh_hbone_respond(r->h, sid, r->auto_status, r->auto_status == 200 ? "k8s.pod.name=b" : NULL);
}

static void rec_on_response(void *u, int32_t sid, void *su, int status)
{
    struct rec *r = u;

    (void)sid;
    assert_ptr_equal(su, r);
    r->n_responses++;
    r->last_status = status;
}

static size_t rec_on_data(void *u, int32_t sid, void *su, const uint8_t *p, size_t n)
{
    struct rec *r = u;

    (void)sid;
    (void)su;
    if (r->paused)
        return 0;
    if (mesh_buf_append(&r->data, p, n) != 0)
        return 0; /* out of memory (sweep): leave the bytes parked */
    return n;
}

static void rec_on_peer_fin(void *u, int32_t sid, void *su)
{
    struct rec *r = u;

    (void)su;
    r->n_fin++;
    if (r->echo_fin)
        mesh_hbone_shutdown_wr(r->h, sid);
}

static void rec_on_writable(void *u, int32_t sid, void *su)
{
    struct rec *r = u;

    (void)sid;
    (void)su;
    r->n_writable++;
}

static void rec_on_stream_close(void *u, int32_t sid, void *su, int err)
{
    struct rec *r = u;

    (void)sid;
    (void)su;
    r->n_close++;
    r->last_close_err = err;
}

static void rec_on_goaway(void *u)
{
    ((struct rec *)u)->n_goaway++;
}

static const struct mesh_hbone_cb rec_cb = {
    .on_request = rec_on_request,
    .on_response = rec_on_response,
    .on_data = rec_on_data,
    .on_peer_fin = rec_on_peer_fin,
    .on_writable = rec_on_writable,
    .on_stream_close = rec_on_stream_close,
    .on_goaway = rec_on_goaway,
};

/* ====================================================================================================== */
/* pair                                                                                                   */
/* ====================================================================================================== */

struct hpair {
    struct rec c, s;
    struct mesh_buf c_out, s_out;
    int c_rc, s_rc;
};

static int hpair_open(struct hpair *p)
{
    int err = MESH_OK;

    memset(p, 0, sizeof(*p));
    mesh_buf_init(&p->c_out, &fe.env, 0);
    mesh_buf_init(&p->s_out, &fe.env, 0);
    mesh_buf_init(&p->c.data, &fe.env, 64u * 1024 * 1024);
    mesh_buf_init(&p->s.data, &fe.env, 64u * 1024 * 1024);
    p->s.auto_status = 200;
    p->c.h = mesh_hbone_new(MESH_HBONE_CLIENT, &fe.env, &rec_cb, &p->c, &err);
    if (p->c.h == NULL)
        return err;
    p->s.h = mesh_hbone_new(MESH_HBONE_SERVER, &fe.env, &rec_cb, &p->s, &err);
    if (p->s.h == NULL)
        return err;
    return MESH_OK;
}

static void hpair_close(struct hpair *p)
{
    mesh_hbone_free(p->c.h);
    mesh_hbone_free(p->s.h);
    mesh_buf_fini(&p->c_out);
    mesh_buf_fini(&p->s_out);
    mesh_buf_fini(&p->c.data);
    mesh_buf_fini(&p->s.data);
}

static bool hpair_move(struct mesh_buf *from, struct mesh_hbone *to, struct mesh_buf *to_out, int *rc, size_t chunk)
{
    size_t n = mesh_buf_len(from);
    int r;

    if (n == 0)
        return false;
    if (chunk != 0 && n > chunk)
        n = chunk;
    r = mesh_hbone_feed(to, mesh_buf_data(from), n, to_out);
    if (r != MESH_OK && *rc == MESH_OK)
        *rc = r;
    mesh_buf_consume(from, n);
    return true;
}

static void hpair_pump(struct hpair *p, size_t chunk)
{
    for (long i = 0; i < 50000000; i++) {
        bool a, b;
        int r1 = mesh_hbone_flush(p->c.h, &p->c_out), r2 = mesh_hbone_flush(p->s.h, &p->s_out);
        if (r1 != MESH_OK && p->c_rc == MESH_OK)
            p->c_rc = r1;
        if (r2 != MESH_OK && p->s_rc == MESH_OK)
            p->s_rc = r2;
        a = hpair_move(&p->c_out, p->s.h, &p->s_out, &p->s_rc, chunk);
        b = hpair_move(&p->s_out, p->c.h, &p->c_out, &p->c_rc, chunk);
        if (!a && !b)
            return;
    }
    fail_msg("pump did not settle");
}

static void make_req(struct mesh_hbone_request *req, const char *authority)
{
    memset(req, 0, sizeof(*req));
    snprintf(req->authority, sizeof(req->authority), "%s", authority);
    snprintf(req->baggage, sizeof(req->baggage), "k8s.cluster.name=c1,k8s.namespace.name=default");
    snprintf(req->forwarded, sizeof(req->forwarded), "for=\"10.0.0.1:45678\"");
    assert_int_equal(mesh_hbone_make_traceparent(&fe.env, req->traceparent), 0);
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(i * 7 + seed + (i >> 11));
}

/* write everything, pumping whenever the stream's send buffer is full */
static void write_all(struct hpair *p, struct mesh_hbone *h, int32_t sid, const uint8_t *d, size_t n, size_t chunk)
{
    size_t off = 0;
    int guard = 0;

    while (off < n) {
        size_t acc = 0;
        assert_int_equal(mesh_hbone_write(h, sid, d + off, n - off, &acc), MESH_OK);
        off += acc;
        if (off < n) {
            hpair_pump(p, chunk);
            assert_true(++guard < 100000);
        }
    }
}

/* ====================================================================================================== */
/* tests                                                                                                  */
/* ====================================================================================================== */

static void roundtrip(size_t chunk, size_t n)
{
    struct mesh_hbone_request req;
    uint8_t *up = malloc(n), *down = malloc(n);
    struct hpair p;
    int32_t sid = 0;

    fill(up, n, 1);
    fill(down, n, 2);
    assert_int_equal(hpair_open(&p), MESH_OK);
    p.s.echo_fin = true;
    make_req(&req, "10.0.0.2:8080");
    assert_int_equal(mesh_hbone_connect(p.c.h, &req, &p.c, &sid), MESH_OK);
    assert_int_equal(sid, 1);
    /* bytes written before the 200 wait for it */
    write_all(&p, p.c.h, sid, up, n / 2, chunk);
    hpair_pump(&p, chunk);
    assert_int_equal(p.c_rc, MESH_OK);
    assert_int_equal(p.s_rc, MESH_OK);
    assert_int_equal(p.s.n_requests, 1);
    assert_string_equal(p.s.last_req.authority, "10.0.0.2:8080");
    assert_string_equal(p.s.last_req.baggage, "k8s.cluster.name=c1,k8s.namespace.name=default");
    assert_string_equal(p.s.last_req.forwarded, "for=\"10.0.0.1:45678\"");
    assert_string_equal(p.s.last_req.traceparent, req.traceparent);
    assert_int_equal(p.c.n_responses, 1);
    assert_int_equal(p.c.last_status, 200);
    assert_int_equal(p.s.respond_rc, MESH_OK);
    assert_int_equal(mesh_hbone_peer_max_streams(p.c.h), MESH_HBONE_SERVER_MAX_STREAMS);
    assert_true(mesh_hbone_can_open(p.c.h));
    write_all(&p, p.c.h, sid, up + n / 2, n - n / 2, chunk);
    write_all(&p, p.s.h, p.s.last_sid, down, n, chunk);
    hpair_pump(&p, chunk);
    assert_int_equal(mesh_buf_len(&p.s.data), n);
    assert_memory_equal(mesh_buf_data(&p.s.data), up, n);
    assert_int_equal(mesh_buf_len(&p.c.data), n);
    assert_memory_equal(mesh_buf_data(&p.c.data), down, n);
    /* half-close from the client; the server answers with its own FIN */
    assert_int_equal(mesh_hbone_shutdown_wr(p.c.h, sid), MESH_OK);
    assert_int_equal(mesh_hbone_shutdown_wr(p.c.h, sid), MESH_ERR_STATE);
    hpair_pump(&p, chunk);
    assert_int_equal(p.s.n_fin, 1);
    assert_int_equal(p.c.n_fin, 1);
    assert_int_equal(p.c.n_close, 1);
    assert_int_equal(p.s.n_close, 1);
    assert_int_equal(p.c.last_close_err, MESH_OK);
    assert_int_equal(p.s.last_close_err, MESH_OK);
    assert_int_equal(mesh_hbone_stream_count(p.c.h), 0);
    assert_int_equal(mesh_hbone_stream_count(p.s.h), 0);
    assert_false(mesh_hbone_is_done(p.c.h));
    hpair_close(&p);
    free(up);
    free(down);
}

static void test_hbone_connect_roundtrip(void **state)
{
    (void)state;
    roundtrip(0, 3u * 1024 * 1024);
}

static void test_hbone_connect_roundtrip_bytewise(void **state)
{
    (void)state;
    roundtrip(1, 5000);
}

static void status_case(int status, size_t chunk)
{
    struct mesh_hbone_request req;
    struct hpair p;
    int32_t sid;
    size_t acc;

    assert_int_equal(hpair_open(&p), MESH_OK);
    p.s.auto_status = status;
    make_req(&req, "10.0.0.2:8080");
    assert_int_equal(mesh_hbone_connect(p.c.h, &req, &p.c, &sid), MESH_OK);
    assert_int_equal(mesh_hbone_write(p.c.h, sid, (const uint8_t *)"early", 5, &acc), MESH_OK);
    hpair_pump(&p, chunk);
    assert_int_equal(p.c_rc, MESH_OK);
    assert_int_equal(p.s_rc, MESH_OK);
    assert_int_equal(p.c.last_status, status);
    assert_int_equal(p.c.n_close, 1);
    assert_int_equal(p.c.last_close_err, MESH_ERR_HBONE_STATUS);
    assert_int_equal(p.s.n_close, 1);
    assert_int_equal(p.s.last_close_err, MESH_ERR_HBONE_STATUS);
    assert_int_equal(mesh_buf_len(&p.s.data), 0); /* nothing leaked through a refused tunnel */
    assert_false(mesh_err_is_fatal(MESH_ERR_HBONE_STATUS));
    /* the connection itself stays usable */
    p.s.auto_status = 200;
    assert_int_equal(mesh_hbone_connect(p.c.h, &req, &p.c, &sid), MESH_OK);
    hpair_pump(&p, chunk);
    assert_int_equal(p.c.last_status, 200);
    hpair_close(&p);
}

static void test_hbone_error_statuses(void **state)
{
    static const int codes[] = {400, 401, 503};

    (void)state;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        status_case(codes[i], 0);
        status_case(codes[i], 1);
    }
}

/* The server answers 400 on its own when :authority does not parse; the upper layer never sees it. */
static void test_hbone_bad_authority_400(void **state)
{
    static const char *const bad[] = {"no-port", "10.0.0.1",     "10.0.0.1:0",   "10.0.0.1:65536", "[::1]",
                                      "::1:80",  "1.2.3.256:80", "host name:80", "10.0.0.1:8x"};
    struct mesh_hbone_request req;
    struct hpair p;
    int32_t sid;

    (void)state;
    assert_int_equal(hpair_open(&p), MESH_OK);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        make_req(&req, bad[i]);
        assert_int_equal(mesh_hbone_connect(p.c.h, &req, &p.c, &sid), MESH_OK);
        hpair_pump(&p, 0);
        if (p.c.last_status != 400)
            fail_msg("authority \"%s\": status %d", bad[i], p.c.last_status);
    }
    assert_int_equal(p.s.n_requests, 0);
    hpair_close(&p);
}

/* ---- a plain nghttp2 client, to send what our client never would ---- */

struct raw {
    nghttp2_session *s;
    int status;
    bool closed;
};

static int raw_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                         const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct raw *r = ud;

    (void)s;
    (void)f;
    (void)flags;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0 && valuelen == 3)
        r->status = atoi((const char *)value);
    return 0;
}

static int raw_on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
    (void)s;
    (void)sid;
    (void)code;
    ((struct raw *)ud)->closed = true;
    return 0;
}

static int raw_request(const nghttp2_nv *nva, size_t n)
{
    nghttp2_session_callbacks *cbs;
    struct mesh_hbone *srv;
    struct mesh_buf out;
    struct rec r = {0};
    struct raw raw = {0};
    int err;

    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, raw_on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, raw_on_close);
    assert_int_equal(nghttp2_session_client_new(&raw.s, cbs, &raw), 0);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(raw.s, NGHTTP2_FLAG_NONE, NULL, 0);
    assert_true(nghttp2_submit_request(raw.s, NULL, nva, n, NULL, NULL) > 0);
    mesh_buf_init(&out, &fe.env, 0);
    mesh_buf_init(&r.data, &fe.env, 0);
    r.auto_status = 200;
    srv = mesh_hbone_new(MESH_HBONE_SERVER, &fe.env, &rec_cb, &r, &err);
    r.h = srv;
    for (int i = 0; i < 100; i++) {
        const uint8_t *d;
        ssize_t k;
        bool moved = false;
        while ((k = nghttp2_session_mem_send(raw.s, &d)) > 0) {
            mesh_hbone_feed(srv, d, (size_t)k, &out);
            moved = true;
        }
        mesh_hbone_flush(srv, &out);
        if (mesh_buf_len(&out) != 0) {
            nghttp2_session_mem_recv(raw.s, mesh_buf_data(&out), mesh_buf_len(&out));
            mesh_buf_consume(&out, mesh_buf_len(&out));
            moved = true;
        }
        if (!moved)
            break;
    }
    assert_int_equal(r.n_requests, raw.status == 200 ? 1 : 0);
    nghttp2_session_del(raw.s);
    mesh_hbone_free(srv);
    mesh_buf_fini(&out);
    mesh_buf_fini(&r.data);
    return raw.status;
}

#define NV(n, v)                                                                                                       \
    {                                                                                                                  \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE                             \
    }

static void test_hbone_raw_client_methods(void **state)
{
    const nghttp2_nv get[] = {NV(":method", "GET"), NV(":scheme", "https"), NV(":path", "/"),
                              NV(":authority", "10.0.0.2:80")};
    const nghttp2_nv post[] = {NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/x"),
                               NV(":authority", "10.0.0.2:80")};
    const nghttp2_nv connect[] = {NV(":method", "CONNECT"), NV(":authority", "[fd00::2]:8080"), NV("baggage", "")};
    const nghttp2_nv connect_host[] = {NV(":method", "CONNECT"), NV(":authority", "reviews.default.svc:9080")};

    (void)state;
    assert_int_equal(raw_request(get, 4), 400);
    assert_int_equal(raw_request(post, 4), 400);
    assert_int_equal(raw_request(connect, 3), 200);
    assert_int_equal(raw_request(connect_host, 2), 200);
}

/* A plain nghttp2 server that answers CONNECT with 200 and a body with END_STREAM, then RST_STREAM(NO_ERROR), as
 * nghttpx does when its backend closed first (RFC 9113 section 8.1). */
struct raw_srv {
    nghttp2_session *s;
    const uint8_t *body;
    size_t len, off;
    int32_t sid;
    bool reset_sent;
};

static ssize_t raw_srv_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                            nghttp2_data_source *src, void *ud)
{
    struct raw_srv *r = ud;
    size_t n = r->len - r->off < len ? r->len - r->off : len;

    (void)s;
    (void)sid;
    (void)src;
    memcpy(buf, r->body + r->off, n);
    r->off += n;
    if (r->off == r->len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int raw_srv_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct raw_srv *r = ud;

    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        const nghttp2_nv ok[] = {NV(":status", "200")};
        nghttp2_data_provider prd = {.source.ptr = r, .read_callback = raw_srv_read};
        r->sid = f->hd.stream_id;
        assert_int_equal(nghttp2_submit_response(s, f->hd.stream_id, ok, 1, &prd), 0);
    }
    return 0;
}

static int raw_srv_on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct raw_srv *r = ud;

    if (f->hd.type == NGHTTP2_DATA && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && !r->reset_sent) {
        r->reset_sent = true;
        assert_int_equal(nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR), 0);
    }
    return 0;
}

static void raw_srv_pump(struct raw_srv *r, struct mesh_hbone *cli, struct mesh_buf *out)
{
    for (int i = 0; i < 1000; i++) {
        const uint8_t *d;
        ssize_t k;
        bool moved = false;
        mesh_hbone_flush(cli, out);
        if (mesh_buf_len(out) != 0) {
            assert_true(nghttp2_session_mem_recv(r->s, mesh_buf_data(out), mesh_buf_len(out)) >= 0);
            mesh_buf_consume(out, mesh_buf_len(out));
            moved = true;
        }
        while ((k = nghttp2_session_mem_send(r->s, &d)) > 0) {
            assert_int_equal(mesh_hbone_feed(cli, d, (size_t)k, out), MESH_OK);
            moved = true;
        }
        if (!moved)
            return;
    }
    fail_msg("pump did not settle");
}

/* A client engine connected to a raw server; the client reads nothing yet. Returns the stream id. */
static int32_t raw_srv_open_paused(struct raw_srv *raw, struct rec *c, struct mesh_buf *out)
{
    nghttp2_session_callbacks *cbs;
    struct mesh_hbone_request req;
    int32_t sid;
    int err;

    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, raw_srv_on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, raw_srv_on_frame_send);
    assert_int_equal(nghttp2_session_server_new(&raw->s, cbs, raw), 0);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(raw->s, NGHTTP2_FLAG_NONE, NULL, 0);
    mesh_buf_init(out, &fe.env, 0);
    mesh_buf_init(&c->data, &fe.env, 0);
    c->h = mesh_hbone_new(MESH_HBONE_CLIENT, &fe.env, &rec_cb, c, &err);
    assert_non_null(c->h);
    make_req(&req, "10.0.0.2:8080");
    assert_int_equal(mesh_hbone_connect(c->h, &req, c, &sid), MESH_OK);
    c->paused = true;
    raw_srv_pump(raw, c->h, out);
    return sid;
}

static void raw_srv_close(struct raw_srv *raw, struct rec *c, struct mesh_buf *out)
{
    nghttp2_session_del(raw->s);
    mesh_hbone_free(c->h);
    mesh_buf_fini(out);
    mesh_buf_fini(&c->data);
}

/* The upper layer lags behind: the stream lingers until it took every byte and the FIN, then closes cleanly. */
static void test_hbone_end_stream_then_rst_no_error(void **state)
{
    static uint8_t body[200000];
    struct raw_srv raw = {.body = body, .len = sizeof(body)};
    struct mesh_buf out;
    struct rec c = {0};
    int32_t sid;

    (void)state;
    fill(body, sizeof(body), 9);
    sid = raw_srv_open_paused(&raw, &c, &out);
    assert_true(raw.reset_sent);
    /* nghttp2 has closed the stream; we have not told the upper layer, which still owes us its reading */
    assert_int_equal(c.n_close, 0);
    assert_int_equal(c.n_fin, 0);
    assert_int_equal(mesh_hbone_write(c.h, sid, body, 10, &(size_t){0}), MESH_ERR_STATE);
    c.paused = false;
    assert_int_equal(mesh_hbone_stream_resume_read(c.h, sid), MESH_OK);
    assert_int_equal(mesh_buf_len(&c.data), sizeof(body));
    assert_memory_equal(mesh_buf_data(&c.data), body, sizeof(body));
    assert_int_equal(c.n_fin, 1);
    assert_int_equal(c.n_close, 1);
    assert_int_equal(c.last_close_err, MESH_OK);
    raw_srv_pump(&raw, c.h, &out);
    assert_int_equal(mesh_hbone_stream_count(c.h), 0);
    assert_int_equal(mesh_hbone_stream_resume_read(c.h, sid), MESH_ERR_STATE);
    raw_srv_close(&raw, &c, &out);
}

/* The same lingering stream, reset by the upper layer instead: closed with a reset, nothing leaks. */
static void test_hbone_lingering_stream_reset(void **state)
{
    static uint8_t body[50000];
    struct raw_srv raw = {.body = body, .len = sizeof(body)};
    struct mesh_buf out;
    struct rec c = {0};
    int32_t sid;

    (void)state;
    fill(body, sizeof(body), 4);
    sid = raw_srv_open_paused(&raw, &c, &out);
    assert_int_equal(c.n_close, 0);
    assert_int_equal(mesh_hbone_stream_reset(c.h, sid), MESH_OK);
    assert_int_equal(c.n_close, 1);
    assert_int_equal(c.last_close_err, MESH_ERR_H2_STREAM_RESET);
    raw_srv_pump(&raw, c.h, &out);
    assert_int_equal(mesh_hbone_stream_count(c.h), 0);
    raw_srv_close(&raw, &c, &out);
}

/* Honest flow control: nothing beyond the 4 MiB stream window until the consumer accepts bytes. */
static void test_hbone_backpressure_window(void **state)
{
    const size_t n = 6u * 1024 * 1024;
    uint8_t *d = malloc(n);
    struct mesh_hbone_request req;
    struct hpair p;
    int32_t sid;
    size_t acc, off = 0;

    (void)state;
    fill(d, n, 5);
    assert_int_equal(hpair_open(&p), MESH_OK);
    make_req(&req, "10.0.0.2:8080");
    assert_int_equal(mesh_hbone_connect(p.c.h, &req, &p.c, &sid), MESH_OK);
    hpair_pump(&p, 0);
    p.s.paused = true;
    while (off < n) {
        assert_int_equal(mesh_hbone_write(p.c.h, sid, d + off, n - off, &acc), MESH_OK);
        off += acc;
        hpair_pump(&p, 0);
        if (acc == 0)
            break;
    }
    assert_true(off < n || mesh_buf_len(&p.s.data) == 0);
    assert_int_equal(mesh_buf_len(&p.s.data), 0);
    /* resume: the parked 4 MiB arrive, the window reopens, the rest follows */
    p.s.paused = false;
    assert_int_equal(mesh_hbone_stream_resume_read(p.s.h, p.s.last_sid), MESH_OK);
    assert_int_equal(mesh_buf_len(&p.s.data), MESH_HBONE_STREAM_WINDOW_BYTES);
    hpair_pump(&p, 0);
    write_all(&p, p.c.h, sid, d + off, n - off, 0);
    hpair_pump(&p, 0);
    assert_int_equal(mesh_buf_len(&p.s.data), n);
    assert_memory_equal(mesh_buf_data(&p.s.data), d, n);
    assert_true(p.c.n_writable >= 1);
    hpair_close(&p);
    free(d);
}

/* The consumer takes a few bytes at a time: every byte still arrives, in order. */
static size_t trickle_on_data(void *u, int32_t sid, void *su, const uint8_t *p, size_t n)
{
    struct rec *r = u;

    (void)sid;
    (void)su;
    if (n > 1000)
        n = 1000;
    assert_int_equal(mesh_buf_append(&r->data, p, n), 0);
    return n;
}

static void test_hbone_partial_accept(void **state)
{
    struct mesh_hbone_cb cb = rec_cb;
    struct mesh_hbone_request req;
    uint8_t d[50000];
    struct hpair p;
    int32_t sid;
    int err, rounds = 0;

    (void)state;
    assert_int_equal(hpair_open(&p), MESH_OK);
    mesh_hbone_free(p.s.h);
    cb.on_data = trickle_on_data;
    p.s.h = mesh_hbone_new(MESH_HBONE_SERVER, &fe.env, &cb, &p.s, &err);
    make_req(&req, "10.0.0.2:8080");
    assert_int_equal(mesh_hbone_connect(p.c.h, &req, &p.c, &sid), MESH_OK);
    fill(d, sizeof(d), 3);
    write_all(&p, p.c.h, sid, d, sizeof(d), 0);
    hpair_pump(&p, 0);
    while (mesh_buf_len(&p.s.data) < sizeof(d)) {
        assert_int_equal(mesh_hbone_stream_resume_read(p.s.h, p.s.last_sid), MESH_OK);
        assert_true(++rounds < 100);
    }
    assert_memory_equal(mesh_buf_data(&p.s.data), d, sizeof(d));
    hpair_close(&p);
}

static void test_hbone_ping_keepalive_and_timeout(void **state)
{
    struct mesh_hbone_request req;
    uint64_t t0 = fe.clock.now_ns;
    struct hpair p;
    int32_t sid;

    (void)state;
    assert_int_equal(hpair_open(&p), MESH_OK);
    make_req(&req, "10.0.0.2:8080");
    assert_int_equal(mesh_hbone_connect(p.c.h, &req, &p.c, &sid), MESH_OK);
    hpair_pump(&p, 0);
    assert_int_equal(mesh_hbone_next_deadline(p.c.h), t0 + 10 * S_NS);
    assert_int_equal(mesh_hbone_on_deadline(p.c.h, t0 + 10 * S_NS - 1), MESH_OK);
    fake_clock_set(&fe.clock, t0 + 10 * S_NS);
    assert_int_equal(mesh_hbone_on_deadline(p.c.h, fe.clock.now_ns), MESH_OK);
    assert_int_equal(mesh_hbone_next_deadline(p.c.h), t0 + 30 * S_NS); /* PING out, 20 s to answer */
    hpair_pump(&p, 0);
    assert_int_equal(mesh_hbone_next_deadline(p.c.h), t0 + 20 * S_NS); /* ACKed: next ping in 10 s */
    /* next ping goes unanswered */
    assert_int_equal(mesh_hbone_on_deadline(p.c.h, t0 + 20 * S_NS), MESH_OK);
    assert_int_equal(mesh_hbone_flush(p.c.h, &p.c_out), MESH_OK);
    mesh_buf_reset(&p.c_out); /* lost */
    assert_int_equal(mesh_hbone_on_deadline(p.c.h, t0 + 40 * S_NS - 1), MESH_OK);
    assert_int_equal(mesh_hbone_on_deadline(p.c.h, t0 + 40 * S_NS), MESH_ERR_H2_PING_TIMEOUT);
    assert_int_equal(mesh_err_reason(MESH_ERR_H2_PING_TIMEOUT), MESH_REASON_TIMEOUT);
    assert_int_equal(p.c.n_close, 1);
    assert_int_equal(p.c.last_close_err, MESH_ERR_H2_PING_TIMEOUT);
    assert_int_equal(mesh_hbone_next_deadline(p.c.h), MESH_HBONE_NO_DEADLINE);
    /* the GOAWAY still goes out */
    assert_int_equal(mesh_hbone_flush(p.c.h, &p.c_out), MESH_ERR_H2_PING_TIMEOUT);
    assert_true(mesh_buf_len(&p.c_out) >= 17);
    assert_int_equal(mesh_buf_data(&p.c_out)[3], NGHTTP2_GOAWAY);
    assert_true(mesh_hbone_is_done(p.c.h));
    assert_false(mesh_hbone_can_open(p.c.h));
    hpair_close(&p);
}

static void test_hbone_goaway_drain(void **state)
{
    struct mesh_hbone_request req;
    struct hpair p;
    int32_t sid, sid2;
    size_t acc;

    (void)state;
    assert_int_equal(hpair_open(&p), MESH_OK);
    p.s.echo_fin = true;
    make_req(&req, "10.0.0.2:8080");
    assert_int_equal(mesh_hbone_connect(p.c.h, &req, &p.c, &sid), MESH_OK);
    hpair_pump(&p, 0);
    assert_int_equal(mesh_hbone_drain(p.s.h), MESH_OK);
    hpair_pump(&p, 0);
    assert_int_equal(p.c.n_goaway, 1);
    assert_false(mesh_hbone_can_open(p.c.h));
    assert_int_equal(mesh_hbone_connect(p.c.h, &req, &p.c, &sid2), MESH_ERR_STATE);
    assert_false(mesh_hbone_is_done(p.s.h));
    /* the live tunnel keeps working */
    assert_int_equal(mesh_hbone_write(p.c.h, sid, (const uint8_t *)"still here", 10, &acc), MESH_OK);
    assert_int_equal(mesh_hbone_shutdown_wr(p.c.h, sid), MESH_OK);
    hpair_pump(&p, 0);
    assert_int_equal(mesh_buf_len(&p.s.data), 10);
    assert_int_equal(p.s.last_close_err, MESH_OK);
    assert_int_equal(p.c.last_close_err, MESH_OK);
    assert_true(mesh_hbone_is_done(p.s.h));
    hpair_close(&p);
}

static void test_hbone_drain_deadline(void **state)
{
    struct mesh_hbone_request req;
    struct hpair p;
    int32_t sid;

    (void)state;
    assert_int_equal(hpair_open(&p), MESH_OK);
    make_req(&req, "10.0.0.2:8080");
    assert_int_equal(mesh_hbone_connect(p.c.h, &req, &p.c, &sid), MESH_OK);
    hpair_pump(&p, 0);
    assert_int_equal(mesh_hbone_drain(p.s.h), MESH_OK);
    assert_int_equal(mesh_hbone_next_deadline(p.s.h), fe.clock.now_ns + MESH_HBONE_DRAIN_DEADLINE_NS);
    assert_int_equal(mesh_hbone_on_deadline(p.s.h, fe.clock.now_ns + MESH_HBONE_DRAIN_DEADLINE_NS), MESH_ERR_DRAINED);
    assert_int_equal(p.s.n_close, 1);
    assert_int_equal(p.s.last_close_err, MESH_ERR_DRAINED);
    hpair_pump(&p, 0);
    assert_int_equal(p.c_rc, MESH_OK); /* GOAWAY(NO_ERROR) is not the client's failure */
    assert_true(p.c.n_goaway >= 1);
    hpair_close(&p);
    assert_int_equal(p.c.n_close, 1); /* freed with the stream still open: closed towards the upper layer */
}

static void test_hbone_reset(void **state)
{
    struct mesh_hbone_request req;
    struct hpair p;
    int32_t sid;

    (void)state;
    assert_int_equal(hpair_open(&p), MESH_OK);
    make_req(&req, "10.0.0.2:8080");
    assert_int_equal(mesh_hbone_connect(p.c.h, &req, &p.c, &sid), MESH_OK);
    hpair_pump(&p, 0);
    assert_int_equal(mesh_hbone_stream_reset(p.c.h, sid), MESH_OK);
    hpair_pump(&p, 0);
    assert_int_equal(p.c.last_close_err, MESH_ERR_H2_STREAM_RESET);
    assert_int_equal(p.s.last_close_err, MESH_ERR_H2_STREAM_RESET);
    assert_false(mesh_err_is_fatal(MESH_ERR_H2_STREAM_RESET));
    assert_int_equal(mesh_hbone_stream_reset(p.c.h, sid), MESH_ERR_STATE);
    hpair_close(&p);
}

static void test_hbone_server_deferred_answer(void **state)
{
    struct mesh_hbone_request req;
    struct hpair p;
    int32_t sid;
    size_t acc;

    (void)state;
    assert_int_equal(hpair_open(&p), MESH_OK);
    p.s.auto_status = 0; /* authz + upstream dial happen later */
    make_req(&req, "10.0.0.2:8080");
    assert_int_equal(mesh_hbone_connect(p.c.h, &req, &p.c, &sid), MESH_OK);
    hpair_pump(&p, 0);
    assert_int_equal(p.s.n_requests, 1);
    assert_int_equal(p.c.n_responses, 0);
    assert_int_equal(mesh_hbone_write(p.s.h, p.s.last_sid, (const uint8_t *)"x", 1, &acc), MESH_ERR_STATE);
    assert_int_equal(mesh_hbone_stream_set_user(p.s.h, p.s.last_sid, &p), MESH_OK);
    assert_int_equal(mesh_hbone_respond(p.s.h, p.s.last_sid, 200, NULL), MESH_OK);
    assert_int_equal(mesh_hbone_respond(p.s.h, p.s.last_sid, 200, NULL), MESH_ERR_STATE);
    hpair_pump(&p, 0);
    assert_int_equal(p.c.last_status, 200);
    hpair_close(&p);
}

static void test_hbone_garbage_is_protocol_error(void **state)
{
    static const uint8_t junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    struct hpair p;

    (void)state;
    assert_int_equal(hpair_open(&p), MESH_OK);
    assert_int_equal(mesh_hbone_feed(p.s.h, junk, sizeof(junk) - 1, &p.s_out), MESH_ERR_H2_PROTOCOL);
    assert_int_equal(mesh_hbone_error(p.s.h), MESH_ERR_H2_PROTOCOL);
    assert_true(mesh_err_is_fatal(MESH_ERR_H2_PROTOCOL));
    assert_int_equal(mesh_hbone_feed(p.s.h, junk, 1, &p.s_out), MESH_ERR_H2_PROTOCOL); /* sticky */
    hpair_close(&p);
}

static void test_hbone_many_streams(void **state)
{
    struct mesh_hbone_request req;
    struct hpair p;
    int32_t sid;
    size_t acc;

    (void)state;
    assert_int_equal(hpair_open(&p), MESH_OK);
    p.s.echo_fin = true;
    make_req(&req, "10.0.0.2:8080");
    for (int i = 0; i < 50; i++) {
        assert_int_equal(mesh_hbone_connect(p.c.h, &req, &p.c, &sid), MESH_OK);
        assert_int_equal(mesh_hbone_write(p.c.h, sid, (const uint8_t *)"abcd", 4, &acc), MESH_OK);
        assert_int_equal(mesh_hbone_shutdown_wr(p.c.h, sid), MESH_OK);
    }
    assert_int_equal(mesh_hbone_stream_count(p.c.h), 50);
    hpair_pump(&p, 0);
    assert_int_equal(p.s.n_requests, 50);
    assert_int_equal(mesh_buf_len(&p.s.data), 200);
    assert_int_equal(p.c.n_close, 50);
    assert_int_equal(mesh_hbone_stream_count(p.c.h), 0);
    hpair_close(&p);
}

static void test_hbone_parse_authority(void **state)
{
    static const struct {
        const char *s;
        int rc;
        int family;
        const char *host;
        unsigned port;
    } cases[] = {
        {"10.0.0.2:8080", 0, MESH_ADDR_V4, "10.0.0.2", 8080},
        {"255.255.255.255:1", 0, MESH_ADDR_V4, "255.255.255.255", 1},
        {"[fd00::2]:15008", 0, MESH_ADDR_V6, "fd00::2", 15008},
        {"[::]:80", 0, MESH_ADDR_V6, "::", 80},
        {"[::ffff:10.0.0.1]:80", 0, MESH_ADDR_V6, "::ffff:10.0.0.1", 80},
        {"[1:2:3:4:5:6:7:8]:65535", 0, MESH_ADDR_V6, "1:2:3:4:5:6:7:8", 65535},
        {"reviews.default.svc.cluster.local:9080", 0, 0, "reviews.default.svc.cluster.local", 9080},
        {"localhost:1", 0, 0, "localhost", 1},
        {"10.0.0.2", -EINVAL, 0, NULL, 0},
        {"10.0.0.2:", -EINVAL, 0, NULL, 0},
        {":80", -EINVAL, 0, NULL, 0},
        {"10.0.0.2:0", -EINVAL, 0, NULL, 0},
        {"10.0.0.2:65536", -EINVAL, 0, NULL, 0},
        {"10.0.0.2:+80", -EINVAL, 0, NULL, 0},
        {"10.0.0:80", -EINVAL, 0, NULL, 0},
        {"10.0.0.2.5:80", -EINVAL, 0, NULL, 0},
        {"fd00::2:80", -EINVAL, 0, NULL, 0},
        {"[fd00::2]", -EINVAL, 0, NULL, 0},
        {"[fd00::2]80", -EINVAL, 0, NULL, 0},
        {"[1:2:3:4:5:6:7:8:9]:80", -EINVAL, 0, NULL, 0},
        {"[1::2::3]:80", -EINVAL, 0, NULL, 0},
        {"[fe80::1%eth0]:80", -EINVAL, 0, NULL, 0},
        {"-bad.example:80", -EINVAL, 0, NULL, 0},
        {"a..b:80", -EINVAL, 0, NULL, 0},
        {"host name:80", -EINVAL, 0, NULL, 0},
        {"", -EINVAL, 0, NULL, 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mesh_hbone_authority a;
        int rc = mesh_hbone_parse_authority(cases[i].s, strlen(cases[i].s), &a);
        if (rc != cases[i].rc)
            fail_msg("\"%s\": rc %d want %d", cases[i].s, rc, cases[i].rc);
        if (rc != 0)
            continue;
        assert_string_equal(a.host, cases[i].host);
        assert_int_equal(a.port, cases[i].port);
        assert_int_equal(a.is_ip, cases[i].family != 0);
        if (cases[i].family != 0)
            assert_int_equal(a.addr.family, cases[i].family);
    }
    {
        struct mesh_hbone_authority a;
        assert_int_equal(mesh_hbone_parse_authority("[::ffff:10.0.0.1]:80", 20, &a), 0);
        assert_int_equal(a.addr.ip.v6[10], 0xff);
        assert_int_equal(a.addr.ip.v6[12], 10);
        assert_int_equal(a.addr.ip.v6[15], 1);
        assert_int_equal(mesh_hbone_parse_authority("10.1.2.3:258", 12, &a), 0);
        assert_int_equal(a.addr.ip.v4[3], 3);
        assert_int_equal(a.addr.port, 0x0201); /* network order bytes 01 02 */
    }
}

static void test_hbone_traceparent(void **state)
{
    char a[MESH_HBONE_TRACEPARENT_BYTES + 1], b[MESH_HBONE_TRACEPARENT_BYTES + 1];

    (void)state;
    assert_int_equal(mesh_hbone_make_traceparent(&fe.env, a), 0);
    assert_int_equal(mesh_hbone_make_traceparent(&fe.env, b), 0);
    assert_int_equal(strlen(a), 55);
    assert_true(strncmp(a, "00-", 3) == 0 && a[35] == '-' && strcmp(a + 52, "-00") == 0);
    assert_int_equal(strspn(a + 3, "0123456789abcdef"), 32);
    assert_string_not_equal(a, b);
}

/* Fail each env allocation in turn (ours and nghttp2's) over a full tunnel lifetime. */
static void test_hbone_alloc_failure_sweep(void **state)
{
    long n;

    (void)state;
    for (n = 1; n < 20000; n++) {
        struct mesh_hbone_request req;
        struct hpair p;
        int32_t sid = 0;
        int rc;

        make_req(&req, "10.0.0.2:8080");
        failalloc_arm(&fe.alloc, n);
        rc = hpair_open(&p);
        if (rc == MESH_OK) {
            p.s.echo_fin = true;
            rc = mesh_hbone_connect(p.c.h, &req, &p.c, &sid);
            if (rc == MESH_OK) {
                size_t acc;
                hpair_pump(&p, 0);
                if (p.c.last_status == 200 &&
                    mesh_hbone_write(p.c.h, sid, (const uint8_t *)"hello", 5, &acc) == MESH_OK)
                    mesh_hbone_shutdown_wr(p.c.h, sid);
                hpair_pump(&p, 0);
            }
            if (fe.alloc.failures == 0) {
                assert_int_equal(p.c.last_close_err, MESH_OK);
                assert_int_equal(mesh_buf_len(&p.s.data), 5);
            }
        } else {
            assert_int_equal(rc, MESH_ERR_NOMEM);
        }
        hpair_close(&p);
        assert_int_equal(fe.alloc.live, live_base);
        if (fe.alloc.failures == 0)
            break;
    }
    failalloc_arm(&fe.alloc, 0);
    print_message("alloc sweep: %ld allocation points\n", n - 1);
    assert_true(n > 10 && n < 20000);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_hbone_connect_roundtrip),
        T(test_hbone_connect_roundtrip_bytewise),
        T(test_hbone_error_statuses),
        T(test_hbone_bad_authority_400),
        T(test_hbone_raw_client_methods),
        T(test_hbone_backpressure_window),
        T(test_hbone_partial_accept),
        T(test_hbone_ping_keepalive_and_timeout),
        T(test_hbone_goaway_drain),
        T(test_hbone_drain_deadline),
        T(test_hbone_reset),
        T(test_hbone_end_stream_then_rst_no_error),
        T(test_hbone_lingering_stream_reset),
        T(test_hbone_server_deferred_answer),
        T(test_hbone_garbage_is_protocol_error),
        T(test_hbone_many_streams),
        T(test_hbone_parse_authority),
        T(test_hbone_traceparent),
        T(test_hbone_alloc_failure_sweep),
    };
    return cmocka_run_group_tests_name("mesh_hbone", tests, NULL, NULL);
}
