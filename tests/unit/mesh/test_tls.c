/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for mesh/tls.c: client and server engines wired together in memory (and against a plain OpenSSL
 * client), whole buffers and one byte at a time, with a fake clock and a failing allocator.
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

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "mesh/tls.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/testca.h"

#define HOUR_NS (3600ull * FAKE_NS_PER_S)
#define PUMP_MAX_ROUNDS 2000000

/* ====================================================================================================== */
/* fixture                                                                                                */
/* ====================================================================================================== */

static struct fake_env fe;
static struct testca tc;
static const struct mesh_cert_bundle *srv_good, *cli_good, *srv_wrong_ca, *cli_wrong_ca, *srv_expired, *cli_expired,
    *srv_nyv, *cli_other_td;
static struct mesh_spiffe_id srv_id, cli_id, other_id;

static int group_setup(void **state)
{
    (void)state;
    fake_env_init(&fe, 0, 7);
    assert_int_equal(testca_init(&tc, &fe.env, fe.clock.now_ns), 0);
    srv_good = testca_issue(&tc, TESTCA_GOOD, NULL, "default", "server");
    cli_good = testca_issue(&tc, TESTCA_GOOD, NULL, "default", "client");
    srv_wrong_ca = testca_issue(&tc, TESTCA_WRONG_CA, NULL, "default", "server");
    cli_wrong_ca = testca_issue(&tc, TESTCA_WRONG_CA, NULL, "default", "client");
    srv_expired = testca_issue(&tc, TESTCA_EXPIRED, NULL, "default", "server");
    cli_expired = testca_issue(&tc, TESTCA_EXPIRED, NULL, "default", "client");
    srv_nyv = testca_issue(&tc, TESTCA_NOT_YET_VALID, NULL, "default", "server");
    cli_other_td = testca_issue(&tc, TESTCA_GOOD, "other.domain", "default", "client");
    mesh_spiffe_from_parts(NULL, "default", "server", &srv_id);
    mesh_spiffe_from_parts(NULL, "default", "client", &cli_id);
    mesh_spiffe_from_parts(NULL, "default", "somebody-else", &other_id);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    mesh_identity_bundle_unref(srv_good);
    mesh_identity_bundle_unref(cli_good);
    mesh_identity_bundle_unref(srv_wrong_ca);
    mesh_identity_bundle_unref(cli_wrong_ca);
    mesh_identity_bundle_unref(srv_expired);
    mesh_identity_bundle_unref(cli_expired);
    mesh_identity_bundle_unref(srv_nyv);
    mesh_identity_bundle_unref(cli_other_td);
    testca_fini(&tc);
    assert_int_equal(fe.alloc.live, 0);
    return 0;
}

static long live_base;

static int test_setup(void **state)
{
    (void)state;
    fake_clock_set(&fe.clock, tc.now_ns);
    failalloc_arm(&fe.alloc, 0);
    live_base = fe.alloc.live;
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    failalloc_arm(&fe.alloc, 0);
    assert_int_equal(fe.alloc.live, live_base);
    return 0;
}

/* ====================================================================================================== */
/* two engines wired together                                                                             */
/* ====================================================================================================== */

struct side {
    struct mesh_tls *tls;
    struct mesh_buf wire;  /* what this side sends */
    struct mesh_buf plain; /* what this side received */
    int rc;                /* first error seen from feed */
};

struct pair {
    struct mesh_tls_ctx *sctx, *cctx;
    struct side s, c;
    bool own_ctx;
};

static void side_init(struct side *sd, size_t plain_cap)
{
    sd->tls = NULL;
    mesh_buf_init(&sd->wire, &fe.env, 0);
    mesh_buf_init(&sd->plain, &fe.env, plain_cap);
    sd->rc = MESH_OK;
}

static void side_fini(struct side *sd)
{
    mesh_tls_free(sd->tls);
    sd->tls = NULL;
    mesh_buf_fini(&sd->wire);
    mesh_buf_fini(&sd->plain);
}

/* Build contexts (unless given) and sessions. Returns MESH_OK or the constructor error. */
static int pair_open_ctx(struct pair *p, struct mesh_tls_ctx *sctx, struct mesh_tls_ctx *cctx,
                         const struct mesh_spiffe_id *expected, size_t n_expected, size_t plain_cap)
{
    int err = MESH_OK;

    memset(p, 0, sizeof(*p));
    side_init(&p->s, plain_cap);
    side_init(&p->c, plain_cap);
    p->sctx = sctx;
    p->cctx = cctx;
    p->s.tls = mesh_tls_new(sctx, NULL, 0, &err);
    if (p->s.tls == NULL)
        return err;
    p->c.tls = mesh_tls_new(cctx, expected, n_expected, &err);
    if (p->c.tls == NULL)
        return err;
    return MESH_OK;
}

static int pair_open(struct pair *p, const struct mesh_cert_bundle *sb, const struct mesh_cert_bundle *cb,
                     const struct mesh_spiffe_id *expected, size_t n_expected)
{
    struct mesh_tls_ctx *sctx, *cctx;
    int err = MESH_OK;

    memset(p, 0, sizeof(*p));
    side_init(&p->s, 0);
    side_init(&p->c, 0);
    p->own_ctx = true;
    sctx = mesh_tls_ctx_new(MESH_TLS_SERVER, sb, &fe.env, NULL, &err);
    if (sctx == NULL)
        return err;
    p->sctx = sctx;
    cctx = mesh_tls_ctx_new(MESH_TLS_CLIENT, cb, &fe.env, NULL, &err);
    if (cctx == NULL)
        return err;
    p->cctx = cctx;
    err = pair_open_ctx(p, sctx, cctx, expected, n_expected, 0);
    p->own_ctx = true;
    return err;
}

static void pair_close(struct pair *p)
{
    side_fini(&p->s);
    side_fini(&p->c);
    if (p->own_ctx) {
        mesh_tls_ctx_free(p->sctx);
        mesh_tls_ctx_free(p->cctx);
    }
}

static void side_feed(struct side *to, const uint8_t *in, size_t n)
{
    int rc = mesh_tls_feed(to->tls, in, n, &to->plain, &to->wire);

    if (rc != MESH_OK && to->rc == MESH_OK)
        to->rc = rc;
}

/* Move up to chunk bytes (0 = all) from one side's wire to the other. */
static bool pair_move(struct side *from, struct side *to, size_t chunk)
{
    size_t n = mesh_buf_len(&from->wire);

    if (n == 0)
        return false;
    if (chunk != 0 && n > chunk)
        n = chunk;
    side_feed(to, mesh_buf_data(&from->wire), n);
    mesh_buf_consume(&from->wire, n);
    return true;
}

static void pair_pump(struct pair *p, size_t chunk)
{
    for (long i = 0; i < PUMP_MAX_ROUNDS; i++) {
        bool a = pair_move(&p->c, &p->s, chunk);
        bool b = pair_move(&p->s, &p->c, chunk);
        if (!a && !b)
            return;
    }
    fail_msg("pump did not settle");
}

static void pair_handshake(struct pair *p, size_t chunk)
{
    side_feed(&p->c, NULL, 0); /* ClientHello */
    pair_pump(p, chunk);
}

static void fill_pattern(uint8_t *buf, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(i * 31 + seed);
}

/* Send n bytes each way and check they arrive intact. */
static void pair_exchange(struct pair *p, size_t n, size_t chunk)
{
    uint8_t *a = malloc(n), *b = malloc(n);

    assert_non_null(a);
    assert_non_null(b);
    fill_pattern(a, n, 1);
    fill_pattern(b, n, 2);
    assert_int_equal(mesh_tls_write(p->c.tls, a, n, &p->c.wire), MESH_OK);
    assert_int_equal(mesh_tls_write(p->s.tls, b, n / 2, &p->s.wire), MESH_OK);
    pair_pump(p, chunk);
    assert_int_equal(p->s.rc, MESH_OK);
    assert_int_equal(p->c.rc, MESH_OK);
    assert_int_equal(mesh_buf_len(&p->s.plain), n);
    assert_memory_equal(mesh_buf_data(&p->s.plain), a, n);
    assert_int_equal(mesh_buf_len(&p->c.plain), n / 2);
    assert_memory_equal(mesh_buf_data(&p->c.plain), b, n / 2);
    mesh_buf_consume(&p->s.plain, n);
    mesh_buf_consume(&p->c.plain, n / 2);
    free(a);
    free(b);
}

/* ====================================================================================================== */
/* scenarios                                                                                              */
/* ====================================================================================================== */

struct scenario {
    const struct mesh_cert_bundle **srv, **cli;
    const struct mesh_spiffe_id *expected;
    int want_srv, want_cli;
    size_t chunk;
};

static void run_scenario(const struct scenario *sc)
{
    struct pair p;

    assert_int_equal(pair_open(&p, *sc->srv, *sc->cli, sc->expected, 1), MESH_OK);
    pair_handshake(&p, sc->chunk);
    if (p.s.rc != sc->want_srv || p.c.rc != sc->want_cli)
        fail_msg("server %s (want %s), client %s (want %s)", mesh_err_name(p.s.rc), mesh_err_name(sc->want_srv),
                 mesh_err_name(p.c.rc), mesh_err_name(sc->want_cli));
    if (sc->want_srv == MESH_OK) {
        assert_int_equal(mesh_tls_state(p.s.tls), MESH_TLS_ESTABLISHED);
        assert_int_equal(mesh_tls_state(p.c.tls), MESH_TLS_ESTABLISHED);
        assert_true(mesh_spiffe_eq(mesh_tls_peer_identity(p.s.tls), &cli_id));
        assert_true(mesh_spiffe_eq(mesh_tls_peer_identity(p.c.tls), &srv_id));
        assert_string_equal(mesh_tls_version(p.c.tls), "TLSv1.3");
        assert_string_equal(mesh_tls_version(p.s.tls), "TLSv1.3");
        assert_string_equal(mesh_tls_alpn(p.c.tls), "h2");
        assert_string_equal(mesh_tls_alpn(p.s.tls), "h2");
        assert_string_equal(mesh_tls_cipher(p.c.tls), "TLS_AES_256_GCM_SHA384");
        assert_int_equal(mesh_tls_next_deadline(p.c.tls), MESH_TLS_NO_DEADLINE);
        pair_exchange(&p, sc->chunk == 1 ? 3000 : 200000, sc->chunk);
    } else {
        assert_int_equal(mesh_tls_state(p.s.tls) == MESH_TLS_FAILED, sc->want_srv != MESH_OK);
        assert_int_equal(mesh_tls_state(p.c.tls) == MESH_TLS_FAILED, sc->want_cli != MESH_OK);
        /* sticky */
        if (sc->want_cli != MESH_OK) {
            assert_int_equal(mesh_tls_feed(p.c.tls, (const uint8_t *)"x", 1, &p.c.plain, &p.c.wire), sc->want_cli);
            assert_int_equal(mesh_tls_error(p.c.tls), sc->want_cli);
            assert_int_equal(mesh_tls_write(p.c.tls, (const uint8_t *)"x", 1, &p.c.wire), sc->want_cli);
        }
    }
    pair_close(&p);
}

static void test_tls_scenario(void **state)
{
    run_scenario(*state);
}

#define SCENARIO(name, s, c, exp, ws, wc)                                                                              \
    static struct scenario name##_whole = {&s, &c, &exp, ws, wc, 0};                                                   \
    static struct scenario name##_bytewise = {&s, &c, &exp, ws, wc, 1};

SCENARIO(good, srv_good, cli_good, srv_id, MESH_OK, MESH_OK)
SCENARIO(srv_wrong_ca, srv_wrong_ca, cli_good, srv_id, MESH_ERR_TLS_ALERT, MESH_ERR_TLS_CERT_UNTRUSTED)
SCENARIO(cli_wrong_ca, srv_good, cli_wrong_ca, srv_id, MESH_ERR_TLS_CERT_UNTRUSTED, MESH_ERR_TLS_ALERT)
SCENARIO(wrong_san, srv_good, cli_good, other_id, MESH_ERR_TLS_ALERT, MESH_ERR_TLS_IDENTITY)
SCENARIO(srv_expired, srv_expired, cli_good, srv_id, MESH_ERR_TLS_ALERT, MESH_ERR_TLS_CERT_EXPIRED)
SCENARIO(cli_expired, srv_good, cli_expired, srv_id, MESH_ERR_TLS_CERT_EXPIRED, MESH_ERR_TLS_ALERT)
SCENARIO(srv_nyv, srv_nyv, cli_good, srv_id, MESH_ERR_TLS_ALERT, MESH_ERR_TLS_CERT_NOT_YET_VALID)
SCENARIO(other_td, srv_good, cli_other_td, srv_id, MESH_ERR_TLS_TRUST_DOMAIN, MESH_ERR_TLS_ALERT)

/* ====================================================================================================== */
/* single behaviours                                                                                      */
/* ====================================================================================================== */

static void test_tls_expected_list_any_match(void **state)
{
    struct mesh_spiffe_id exp[3] = {other_id, srv_id, cli_id};
    struct pair p;

    (void)state;
    assert_int_equal(pair_open(&p, srv_good, cli_good, exp, 3), MESH_OK);
    pair_handshake(&p, 0);
    assert_int_equal(p.c.rc, MESH_OK);
    assert_true(mesh_spiffe_eq(mesh_tls_peer_identity(p.c.tls), &srv_id));
    pair_close(&p);
}

static void test_tls_bad_session_args(void **state)
{
    struct mesh_tls_ctx *sctx, *cctx;
    struct mesh_spiffe_id many[MESH_TLS_MAX_EXPECTED_IDS + 1];
    int err = 0;

    (void)state;
    sctx = mesh_tls_ctx_new(MESH_TLS_SERVER, srv_good, &fe.env, NULL, &err);
    cctx = mesh_tls_ctx_new(MESH_TLS_CLIENT, cli_good, &fe.env, NULL, &err);
    assert_non_null(sctx);
    assert_non_null(cctx);
    assert_null(mesh_tls_new(cctx, NULL, 0, &err));
    assert_int_equal(err, MESH_ERR_CONFIG);
    assert_null(mesh_tls_new(sctx, &srv_id, 1, &err));
    assert_int_equal(err, MESH_ERR_CONFIG);
    for (size_t i = 0; i < MESH_TLS_MAX_EXPECTED_IDS + 1; i++)
        many[i] = srv_id;
    assert_null(mesh_tls_new(cctx, many, MESH_TLS_MAX_EXPECTED_IDS + 1, &err));
    assert_int_equal(err, MESH_ERR_CONFIG);
    assert_null(mesh_tls_ctx_new(MESH_TLS_SERVER, NULL, &fe.env, NULL, &err));
    assert_int_equal(err, MESH_ERR_CONFIG);
    mesh_tls_ctx_free(sctx);
    mesh_tls_ctx_free(cctx);
    mesh_tls_ctx_free(NULL);
    mesh_tls_free(NULL);
}

static void test_tls_write_before_handshake(void **state)
{
    struct pair p;

    (void)state;
    assert_int_equal(pair_open(&p, srv_good, cli_good, &srv_id, 1), MESH_OK);
    assert_int_equal(mesh_tls_write(p.c.tls, (const uint8_t *)"x", 1, &p.c.wire), MESH_ERR_STATE);
    assert_int_equal(mesh_tls_close_notify(p.c.tls, &p.c.wire), MESH_ERR_STATE);
    assert_null(mesh_tls_peer_identity(p.c.tls));
    assert_null(mesh_tls_version(p.c.tls));
    assert_int_equal(mesh_tls_state(p.c.tls), MESH_TLS_HANDSHAKING);
    pair_close(&p);
}

static void test_tls_cache_hit_on_second_handshake(void **state)
{
    struct mesh_tls_ctx *sctx, *cctx;
    const struct mesh_tls_stats *ss, *cs;
    struct pair p;
    int err = 0;

    (void)state;
    sctx = mesh_tls_ctx_new(MESH_TLS_SERVER, srv_good, &fe.env, NULL, &err);
    cctx = mesh_tls_ctx_new(MESH_TLS_CLIENT, cli_good, &fe.env, NULL, &err);
    ss = mesh_tls_ctx_stats(sctx);
    cs = mesh_tls_ctx_stats(cctx);

    assert_int_equal(pair_open_ctx(&p, sctx, cctx, &srv_id, 1, 0), MESH_OK);
    pair_handshake(&p, 0);
    assert_int_equal(p.s.rc, MESH_OK);
    assert_false(mesh_tls_peer_from_cache(p.s.tls));
    assert_false(mesh_tls_peer_from_cache(p.c.tls));
    pair_close(&p);
    assert_int_equal(ss->chain_verifications, 1);
    assert_int_equal(cs->chain_verifications, 1);
    assert_int_equal(ss->cache_inserts, 1);

    assert_int_equal(pair_open_ctx(&p, sctx, cctx, &srv_id, 1, 0), MESH_OK);
    pair_handshake(&p, 1);
    assert_int_equal(p.s.rc, MESH_OK);
    assert_int_equal(p.c.rc, MESH_OK);
    assert_true(mesh_tls_peer_from_cache(p.s.tls));
    assert_true(mesh_tls_peer_from_cache(p.c.tls));
    assert_true(mesh_spiffe_eq(mesh_tls_peer_identity(p.s.tls), &cli_id));
    pair_exchange(&p, 1000, 0);
    pair_close(&p);
    assert_int_equal(ss->chain_verifications, 1);
    assert_int_equal(cs->chain_verifications, 1);
    assert_int_equal(ss->cache_hits, 1);
    assert_int_equal(cs->cache_hits, 1);
    assert_int_equal(ss->handshakes_ok, 2);

    /* identity checks still run on a cache hit: a client expecting someone else still refuses */
    {
        assert_int_equal(pair_open_ctx(&p, sctx, cctx, &other_id, 1, 0), MESH_OK);
        pair_handshake(&p, 0);
        assert_int_equal(p.c.rc, MESH_ERR_TLS_IDENTITY);
        assert_true(mesh_tls_peer_from_cache(p.c.tls));
        pair_close(&p);
    }

    /* a different chain is a miss and is verified (and rejected) in full */
    {
        struct mesh_tls_ctx *bad = mesh_tls_ctx_new(MESH_TLS_CLIENT, cli_wrong_ca, &fe.env, NULL, &err);
        uint64_t before = ss->chain_verifications;
        assert_int_equal(pair_open_ctx(&p, sctx, bad, &srv_id, 1, 0), MESH_OK);
        pair_handshake(&p, 0);
        assert_int_equal(p.s.rc, MESH_ERR_TLS_CERT_UNTRUSTED);
        assert_int_equal(ss->chain_verifications, before + 1);
        pair_close(&p);
        mesh_tls_ctx_free(bad);
    }

    /* flush: back to a full verification */
    mesh_tls_ctx_flush_cache(sctx);
    assert_int_equal(pair_open_ctx(&p, sctx, cctx, &srv_id, 1, 0), MESH_OK);
    pair_handshake(&p, 0);
    assert_int_equal(p.s.rc, MESH_OK);
    assert_false(mesh_tls_peer_from_cache(p.s.tls));
    pair_close(&p);

    mesh_tls_ctx_free(sctx);
    mesh_tls_ctx_free(cctx);
}

/* A cached chain must stop being accepted the moment its leaf expires. */
static void test_tls_cache_respects_not_after(void **state)
{
    struct mesh_tls_ctx_opts o = {.cache_ttl_ns = 1000 * HOUR_NS}; /* so only notAfter can end the entry */
    struct mesh_tls_ctx *sctx, *cctx;
    const struct mesh_cert_bundle *srv_long;
    struct pair p;
    int err = 0;

    (void)state;
    /* the server cert outlives the client's, so the client keeps accepting it */
    srv_long = mesh_local_ca_issue(tc.inter, &srv_id, tc.now_ns, 48 * HOUR_NS, &err);
    assert_non_null(srv_long);
    sctx = mesh_tls_ctx_new(MESH_TLS_SERVER, srv_long, &fe.env, &o, &err);
    mesh_identity_bundle_unref(srv_long);
    cctx = mesh_tls_ctx_new(MESH_TLS_CLIENT, cli_good, &fe.env, NULL, &err);
    assert_int_equal(pair_open_ctx(&p, sctx, cctx, &srv_id, 1, 0), MESH_OK);
    pair_handshake(&p, 0);
    assert_int_equal(p.s.rc, MESH_OK);
    pair_close(&p);

    /* one second before notAfter: still a hit */
    fake_clock_set(&fe.clock, (uint64_t)mesh_identity_bundle_not_after(cli_good) * FAKE_NS_PER_S - FAKE_NS_PER_S);
    assert_int_equal(pair_open_ctx(&p, sctx, cctx, &srv_id, 1, 0), MESH_OK);
    pair_handshake(&p, 0);
    assert_int_equal(p.s.rc, MESH_OK);
    assert_true(mesh_tls_peer_from_cache(p.s.tls));
    pair_close(&p);

    /* at notAfter: rejected exactly as a full verification would */
    fake_clock_set(&fe.clock, (uint64_t)mesh_identity_bundle_not_after(cli_good) * FAKE_NS_PER_S);
    assert_int_equal(pair_open_ctx(&p, sctx, cctx, &srv_id, 1, 0), MESH_OK);
    pair_handshake(&p, 0);
    assert_int_equal(p.s.rc, MESH_ERR_TLS_CERT_EXPIRED);
    assert_int_equal(p.c.rc, MESH_ERR_TLS_ALERT);
    assert_false(mesh_tls_peer_from_cache(p.s.tls));
    pair_close(&p);
    mesh_tls_ctx_free(sctx);
    mesh_tls_ctx_free(cctx);
}

static void test_tls_cache_ttl_and_bound(void **state)
{
    struct mesh_tls_ctx_opts o = {.cache_entries = 1, .cache_ttl_ns = 60 * FAKE_NS_PER_S};
    struct mesh_tls_ctx *sctx, *cctx, *cctx2;
    const struct mesh_tls_stats *ss;
    struct pair p;
    int err = 0;
    const struct mesh_cert_bundle *cli2 = testca_issue(&tc, TESTCA_GOOD, NULL, "default", "client");

    (void)state;
    sctx = mesh_tls_ctx_new(MESH_TLS_SERVER, srv_good, &fe.env, &o, &err);
    cctx = mesh_tls_ctx_new(MESH_TLS_CLIENT, cli_good, &fe.env, NULL, &err);
    cctx2 = mesh_tls_ctx_new(MESH_TLS_CLIENT, cli2, &fe.env, NULL, &err);
    ss = mesh_tls_ctx_stats(sctx);
    for (int round = 0; round < 2; round++) {
        assert_int_equal(pair_open_ctx(&p, sctx, cctx, &srv_id, 1, 0), MESH_OK);
        pair_handshake(&p, 0);
        assert_int_equal(p.s.rc, MESH_OK);
        pair_close(&p);
    }
    assert_int_equal(ss->chain_verifications, 1);
    /* TTL: 61 s later the entry is gone */
    fake_clock_advance(&fe.clock, 61 * FAKE_NS_PER_S);
    assert_int_equal(pair_open_ctx(&p, sctx, cctx, &srv_id, 1, 0), MESH_OK);
    pair_handshake(&p, 0);
    assert_int_equal(p.s.rc, MESH_OK);
    assert_false(mesh_tls_peer_from_cache(p.s.tls));
    pair_close(&p);
    assert_int_equal(ss->chain_verifications, 2);
    /* bound: one entry, a second peer evicts the first */
    assert_int_equal(pair_open_ctx(&p, sctx, cctx2, &srv_id, 1, 0), MESH_OK);
    pair_handshake(&p, 0);
    assert_int_equal(p.s.rc, MESH_OK);
    pair_close(&p);
    assert_int_equal(ss->cache_evictions, 1);
    assert_int_equal(pair_open_ctx(&p, sctx, cctx, &srv_id, 1, 0), MESH_OK);
    pair_handshake(&p, 0);
    assert_false(mesh_tls_peer_from_cache(p.s.tls));
    pair_close(&p);
    assert_int_equal(ss->chain_verifications, 4);
    mesh_tls_ctx_free(sctx);
    mesh_tls_ctx_free(cctx);
    mesh_tls_ctx_free(cctx2);
    mesh_identity_bundle_unref(cli2);
}

static void test_tls_cache_disabled(void **state)
{
    struct mesh_tls_ctx_opts o = {.cache_disabled = true};
    struct mesh_tls_ctx *sctx, *cctx;
    struct pair p;
    int err = 0;

    (void)state;
    sctx = mesh_tls_ctx_new(MESH_TLS_SERVER, srv_good, &fe.env, &o, &err);
    cctx = mesh_tls_ctx_new(MESH_TLS_CLIENT, cli_good, &fe.env, &o, &err);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pair_open_ctx(&p, sctx, cctx, &srv_id, 1, 0), MESH_OK);
        pair_handshake(&p, 0);
        assert_int_equal(p.s.rc, MESH_OK);
        pair_close(&p);
    }
    assert_int_equal(mesh_tls_ctx_stats(sctx)->chain_verifications, 2);
    assert_int_equal(mesh_tls_ctx_stats(sctx)->cache_hits, 0);
    mesh_tls_ctx_free(sctx);
    mesh_tls_ctx_free(cctx);
}

static void test_tls_handshake_deadline(void **state)
{
    struct pair p;
    uint64_t t0 = fe.clock.now_ns;

    (void)state;
    assert_int_equal(pair_open(&p, srv_good, cli_good, &srv_id, 1), MESH_OK);
    side_feed(&p.c, NULL, 0);
    assert_int_equal(mesh_tls_next_deadline(p.c.tls), t0 + MESH_TLS_HANDSHAKE_TIMEOUT_NS);
    assert_int_equal(mesh_tls_on_deadline(p.c.tls, t0 + MESH_TLS_HANDSHAKE_TIMEOUT_NS - 1), MESH_OK);
    assert_int_equal(mesh_tls_on_deadline(p.c.tls, t0 + MESH_TLS_HANDSHAKE_TIMEOUT_NS), MESH_ERR_HANDSHAKE_TIMEOUT);
    assert_int_equal(mesh_tls_state(p.c.tls), MESH_TLS_FAILED);
    assert_int_equal(mesh_err_reason(mesh_tls_error(p.c.tls)), MESH_REASON_TIMEOUT);
    assert_int_equal(mesh_tls_ctx_stats(p.cctx)->handshakes_failed, 1);
    pair_close(&p);
}

static void test_tls_close_notify(void **state)
{
    struct pair p;

    (void)state;
    assert_int_equal(pair_open(&p, srv_good, cli_good, &srv_id, 1), MESH_OK);
    pair_handshake(&p, 0);
    assert_int_equal(mesh_tls_write(p.c.tls, (const uint8_t *)"bye", 3, &p.c.wire), MESH_OK);
    assert_int_equal(mesh_tls_close_notify(p.c.tls, &p.c.wire), MESH_OK);
    assert_int_equal(mesh_tls_close_notify(p.c.tls, &p.c.wire), MESH_OK); /* once */
    assert_int_equal(mesh_tls_write(p.c.tls, (const uint8_t *)"x", 1, &p.c.wire), MESH_ERR_STATE);
    pair_pump(&p, 1);
    assert_int_equal(p.s.rc, MESH_OK);
    assert_int_equal(mesh_buf_len(&p.s.plain), 3);
    assert_int_equal(mesh_tls_state(p.s.tls), MESH_TLS_PEER_CLOSED);
    /* half-close: the server may still answer */
    assert_int_equal(mesh_tls_write(p.s.tls, (const uint8_t *)"ok", 2, &p.s.wire), MESH_OK);
    assert_int_equal(mesh_tls_close_notify(p.s.tls, &p.s.wire), MESH_OK);
    pair_pump(&p, 0);
    assert_int_equal(mesh_buf_len(&p.c.plain), 2);
    assert_int_equal(mesh_tls_state(p.c.tls), MESH_TLS_PEER_CLOSED);
    pair_close(&p);
}

/* plaintext output capped at 100 bytes: the engine parks ciphertext and resumes when asked */
static void test_tls_backpressure(void **state)
{
    struct mesh_tls_ctx *sctx, *cctx;
    uint8_t data[10000], got[10000];
    size_t have = 0;
    struct pair p;
    int err = 0, rounds = 0;

    (void)state;
    sctx = mesh_tls_ctx_new(MESH_TLS_SERVER, srv_good, &fe.env, NULL, &err);
    cctx = mesh_tls_ctx_new(MESH_TLS_CLIENT, cli_good, &fe.env, NULL, &err);
    assert_int_equal(pair_open_ctx(&p, sctx, cctx, &srv_id, 1, 100), MESH_OK);
    pair_handshake(&p, 0);
    assert_int_equal(p.s.rc, MESH_OK);
    fill_pattern(data, sizeof(data), 9);
    assert_int_equal(mesh_tls_write(p.c.tls, data, sizeof(data), &p.c.wire), MESH_OK);
    pair_pump(&p, 0);
    assert_int_equal(p.s.rc, MESH_OK);
    assert_int_equal(mesh_buf_len(&p.s.plain), 100);
    assert_true(mesh_tls_has_pending(p.s.tls));
    while (have < sizeof(data)) {
        size_t n = mesh_buf_len(&p.s.plain);
        memcpy(got + have, mesh_buf_data(&p.s.plain), n);
        have += n;
        mesh_buf_consume(&p.s.plain, n);
        assert_int_equal(mesh_tls_feed(p.s.tls, NULL, 0, &p.s.plain, &p.s.wire), MESH_OK);
        assert_true(++rounds < 1000);
    }
    assert_int_equal(have, sizeof(data));
    assert_memory_equal(got, data, sizeof(data));
    assert_false(mesh_tls_has_pending(p.s.tls));
    pair_close(&p);
    mesh_tls_ctx_free(sctx);
    mesh_tls_ctx_free(cctx);
}

/* the internal ciphertext park is bounded too */
static void test_tls_pending_cap(void **state)
{
    struct mesh_tls_ctx_opts o = {.pending_max_bytes = 2000};
    struct mesh_tls_ctx *sctx, *cctx;
    uint8_t data[20000];
    struct pair p;
    int err = 0;

    (void)state;
    sctx = mesh_tls_ctx_new(MESH_TLS_SERVER, srv_good, &fe.env, &o, &err);
    cctx = mesh_tls_ctx_new(MESH_TLS_CLIENT, cli_good, &fe.env, NULL, &err);
    assert_int_equal(pair_open_ctx(&p, sctx, cctx, &srv_id, 1, 100), MESH_OK);
    pair_handshake(&p, 0);
    fill_pattern(data, sizeof(data), 3);
    assert_int_equal(mesh_tls_write(p.c.tls, data, sizeof(data), &p.c.wire), MESH_OK);
    pair_pump(&p, 0);
    assert_int_equal(p.s.rc, MESH_ERR_BUF_FULL);
    assert_true(mesh_err_is_fatal(p.s.rc));
    pair_close(&p);
    mesh_tls_ctx_free(sctx);
    mesh_tls_ctx_free(cctx);
}

static void test_tls_wire_out_cap(void **state)
{
    struct pair p;
    struct mesh_buf small;
    uint8_t data[4096] = {0};

    (void)state;
    assert_int_equal(pair_open(&p, srv_good, cli_good, &srv_id, 1), MESH_OK);
    pair_handshake(&p, 0);
    mesh_buf_init(&small, &fe.env, 1000);
    assert_int_equal(mesh_tls_write(p.c.tls, data, sizeof(data), &small), MESH_ERR_BUF_FULL);
    assert_int_equal(mesh_tls_state(p.c.tls), MESH_TLS_FAILED);
    mesh_buf_fini(&small);
    pair_close(&p);
}

/* a malformed ClientHello: protocol error, and the alert is still flushed to wire_out */
static void test_tls_garbage_gets_alert(void **state)
{
    /* handshake record holding a ClientHello whose body is 4 junk bytes */
    static const uint8_t junk[] = {0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef, 0};
    struct pair p;

    (void)state;
    assert_int_equal(pair_open(&p, srv_good, cli_good, &srv_id, 1), MESH_OK);
    assert_int_not_equal(mesh_tls_feed(p.s.tls, junk, sizeof(junk) - 1, &p.s.plain, &p.s.wire), MESH_OK);
    assert_int_equal(mesh_tls_state(p.s.tls), MESH_TLS_FAILED);
    assert_int_equal(mesh_err_class(mesh_tls_error(p.s.tls)), MESH_ERR_CLASS_PEER);
    assert_int_equal(mesh_err_reason(mesh_tls_error(p.s.tls)), MESH_REASON_TLS);
    assert_true(mesh_buf_len(&p.s.wire) >= 7);
    assert_int_equal(mesh_buf_data(&p.s.wire)[0], 21); /* ContentType alert */
    pair_close(&p);
}

/* ====================================================================================================== */
/* a plain OpenSSL client as an independent peer                                                          */
/* ====================================================================================================== */

struct raw_client {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rb, *wb;
};

static void raw_client_init(struct raw_client *r, const char *alpn, bool tls12_only, const struct mesh_cert_bundle *b)
{
    r->ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(r->ctx);
    if (tls12_only)
        SSL_CTX_set_max_proto_version(r->ctx, TLS1_2_VERSION);
    if (alpn != NULL)
        assert_int_equal(SSL_CTX_set_alpn_protos(r->ctx, (const unsigned char *)alpn, (unsigned)strlen(alpn)), 0);
    if (b != NULL) {
        assert_int_equal(SSL_CTX_use_cert_and_key(r->ctx, mesh_identity_bundle_leaf(b), mesh_identity_bundle_key(b),
                                                  mesh_identity_bundle_chain(b), 1),
                         1);
    }
    SSL_CTX_set_verify(r->ctx, SSL_VERIFY_NONE, NULL);
    r->ssl = SSL_new(r->ctx);
    r->rb = BIO_new(BIO_s_mem());
    r->wb = BIO_new(BIO_s_mem());
    SSL_set_bio(r->ssl, r->rb, r->wb);
    SSL_set_connect_state(r->ssl);
}

static void raw_client_fini(struct raw_client *r)
{
    SSL_free(r->ssl);
    SSL_CTX_free(r->ctx);
    ERR_clear_error();
}

/* Drive a raw client against our server until nothing moves; returns our server's error. */
static int raw_run(struct raw_client *r, struct side *s)
{
    uint8_t buf[4096];

    for (int i = 0; i < 100; i++) {
        bool moved = false;
        int n;
        SSL_do_handshake(r->ssl);
        if (SSL_is_init_finished(r->ssl))
            SSL_read(r->ssl, buf, sizeof(buf)); /* lets the client see a late alert */
        while ((n = BIO_read(r->wb, buf, sizeof(buf))) > 0) {
            side_feed(s, buf, (size_t)n);
            moved = true;
        }
        if (mesh_buf_len(&s->wire) != 0) {
            BIO_write(r->rb, mesh_buf_data(&s->wire), (int)mesh_buf_len(&s->wire));
            mesh_buf_consume(&s->wire, mesh_buf_len(&s->wire));
            moved = true;
        }
        if (!moved)
            break;
    }
    return s->rc;
}

static int raw_against_server(const char *alpn, bool tls12_only, const struct mesh_cert_bundle *b, bool *raw_done)
{
    struct mesh_tls_ctx *sctx;
    struct raw_client r;
    struct side s;
    int err = 0, rc;

    sctx = mesh_tls_ctx_new(MESH_TLS_SERVER, srv_good, &fe.env, NULL, &err);
    assert_non_null(sctx);
    side_init(&s, 0);
    s.tls = mesh_tls_new(sctx, NULL, 0, &err);
    raw_client_init(&r, alpn, tls12_only, b);
    rc = raw_run(&r, &s);
    if (raw_done != NULL)
        *raw_done = SSL_is_init_finished(r.ssl) && SSL_get_version(r.ssl) != NULL;
    if (rc == MESH_OK) {
        /* data from the independent client reaches our server */
        assert_int_equal(SSL_write(r.ssl, "ping", 4), 4);
        raw_run(&r, &s);
        assert_int_equal(mesh_buf_len(&s.plain), 4);
        assert_memory_equal(mesh_buf_data(&s.plain), "ping", 4);
        assert_true(mesh_spiffe_eq(mesh_tls_peer_identity(s.tls), &cli_id));
    }
    raw_client_fini(&r);
    side_fini(&s);
    mesh_tls_ctx_free(sctx);
    return rc;
}

static void test_tls_raw_client_good(void **state)
{
    bool done = false;

    (void)state;
    assert_int_equal(raw_against_server("\x02h2", false, cli_good, &done), MESH_OK);
    assert_true(done);
}

static void test_tls_no_client_cert(void **state)
{
    (void)state;
    assert_int_equal(raw_against_server("\x02h2", false, NULL, NULL), MESH_ERR_TLS_CERT_MISSING);
}

static void test_tls_no_alpn(void **state)
{
    (void)state;
    assert_int_equal(raw_against_server(NULL, false, cli_good, NULL), MESH_ERR_TLS_ALPN);
    assert_int_equal(raw_against_server("\x08http/1.1", false, cli_good, NULL), MESH_ERR_TLS_ALPN);
    assert_int_equal(raw_against_server("\x08http/1.1\x02h2", false, cli_good, NULL), MESH_OK);
}

static void test_tls_tls12_refused(void **state)
{
    int rc;

    (void)state;
    rc = raw_against_server("\x02h2", true, cli_good, NULL);
    assert_int_equal(rc, MESH_ERR_TLS_HANDSHAKE);
}

/* ====================================================================================================== */
/* allocation-failure sweep (env allocations: contexts, sessions, caches, buffers)                        */
/* ====================================================================================================== */

static void test_tls_alloc_failure_sweep(void **state)
{
    long n;

    (void)state;
    for (n = 1; n < 10000; n++) {
        struct pair p;
        int rc;
        bool ok;

        failalloc_arm(&fe.alloc, n);
        rc = pair_open(&p, srv_good, cli_good, &srv_id, 1);
        if (rc == MESH_OK) {
            pair_handshake(&p, 0);
            if (p.s.rc == MESH_OK && p.c.rc == MESH_OK) {
                static uint8_t d[3000];
                int w1 = mesh_tls_write(p.c.tls, d, sizeof(d), &p.c.wire);
                int w2 = mesh_tls_write(p.s.tls, d, sizeof(d), &p.s.wire);
                pair_pump(&p, 0);
                ok = w1 == MESH_OK && w2 == MESH_OK && p.s.rc == MESH_OK && p.c.rc == MESH_OK &&
                     mesh_buf_len(&p.s.plain) == sizeof(d) && mesh_buf_len(&p.c.plain) == sizeof(d);
                if (!ok) {
                    /* only the injected fault may break the run, and it surfaces as NOMEM */
                    assert_int_equal(fe.alloc.failures, 1);
                    assert_true(w1 == MESH_ERR_NOMEM || w2 == MESH_ERR_NOMEM || p.s.rc == MESH_ERR_NOMEM ||
                                p.c.rc == MESH_ERR_NOMEM);
                }
            } else {
                /* one side ran out of memory; the other may only see its alert */
                assert_true(p.s.rc == MESH_ERR_NOMEM || p.c.rc == MESH_ERR_NOMEM);
            }
        } else {
            assert_int_equal(rc, MESH_ERR_NOMEM);
        }
        pair_close(&p);
        assert_int_equal(fe.alloc.live, live_base);
        if (fe.alloc.failures == 0)
            break;
    }
    print_message("alloc sweep: %ld allocation points\n", n - 1);
    assert_true(n > 5 && n < 10000);
}

/* ====================================================================================================== */

#define SC_TESTS(name)                                                                                                 \
    {"test_tls_" #name, test_tls_scenario, test_setup, test_teardown, &name##_whole},                                  \
    {                                                                                                                  \
        "test_tls_" #name "_bytewise", test_tls_scenario, test_setup, test_teardown, &name##_bytewise                  \
    }

#define T(f) cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        SC_TESTS(good),
        SC_TESTS(srv_wrong_ca),
        SC_TESTS(cli_wrong_ca),
        SC_TESTS(wrong_san),
        SC_TESTS(srv_expired),
        SC_TESTS(cli_expired),
        SC_TESTS(srv_nyv),
        SC_TESTS(other_td),
        T(test_tls_expected_list_any_match),
        T(test_tls_bad_session_args),
        T(test_tls_write_before_handshake),
        T(test_tls_cache_hit_on_second_handshake),
        T(test_tls_cache_respects_not_after),
        T(test_tls_cache_ttl_and_bound),
        T(test_tls_cache_disabled),
        T(test_tls_handshake_deadline),
        T(test_tls_close_notify),
        T(test_tls_backpressure),
        T(test_tls_pending_cap),
        T(test_tls_wire_out_cap),
        T(test_tls_garbage_gets_alert),
        T(test_tls_raw_client_good),
        T(test_tls_no_client_cert),
        T(test_tls_no_alpn),
        T(test_tls_tls12_refused),
        T(test_tls_alloc_failure_sweep),
    };
    return cmocka_run_group_tests_name("mesh_tls", tests, group_setup, group_teardown);
}
