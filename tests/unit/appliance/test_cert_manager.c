/* SPDX-License-Identifier: Apache-2.0 */
/*
 * appliance/cert_manager.c with a fake clock: a fake CA transport that signs each CSR with a test CA made here
 * (or refuses, or is unreachable), and the local-CA source. Checks issuance, rotation at half-life, the backoff and
 * its jitter bounds, "Unavailable: ..." after a refusal with the old certificate kept until it expires, the
 * in-flight limit, the /config_dump shape, and the generated-and-persisted local CA.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "appliance/cert_manager.h"
#include "mesh/identity.h"
#include "proto/ca.pb-c.h"
#include "tests/fakes/fake_clock.h"

#define S_NS 1000000000ull

static struct fake_env fe;

/* ---- a fake CA behind the transport ---- */

enum fake_mode { FAKE_SIGN, FAKE_REFUSE, FAKE_DOWN };

struct pending {
    app_cert_ca_done_fn done;
    void *u;
    uint8_t *req;
    size_t len;
};

struct fake_ca {
    enum fake_mode mode;
    EVP_PKEY *key;
    X509 *root;
    char *root_pem;
    uint32_t lifetime_s;
    struct pending q[64];
    int n;
    int calls;
};

static X509 *make_cert(EVP_PKEY *pub, EVP_PKEY *signer, X509 *issuer, const char *uri, int64_t nb, int64_t na)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    X509V3_CTX ctx;

    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(nb & 0x7fffffff) + (uri != NULL ? 7 : 1));
    ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb);
    ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na);
    X509_set_pubkey(x, pub);
    if (uri == NULL)
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"cluster.local", -1, -1, 0);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
    X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    if (uri == NULL) {
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
        e = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
        e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_key_identifier, "hash");
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    } else {
        char san[600];
        X509_EXTENSION *e;
        snprintf(san, sizeof(san), "critical,URI:%s", uri);
        e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
        e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:FALSE");
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
        e = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
        e = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,digitalSignature,keyEncipherment");
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(x, signer, EVP_sha256()) > 0);
    X509_NAME_free(name);
    return x;
}

static char *pem_of(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p, *out;
    long n;

    PEM_write_bio_X509(b, x);
    n = BIO_get_mem_data(b, &p);
    out = strndup(p, (size_t)n);
    BIO_free(b);
    return out;
}

static void fake_ca_init(struct fake_ca *ca)
{
    int64_t now = (int64_t)(mesh_env_now(&fe.env) / S_NS);

    memset(ca, 0, sizeof(*ca));
    ca->key = EVP_EC_gen("P-256");
    assert_non_null(ca->key);
    ca->root = make_cert(ca->key, ca->key, NULL, NULL, now - 86400, now + 365 * 86400);
    ca->root_pem = pem_of(ca->root);
    ca->lifetime_s = 3600;
}

static void fake_ca_fini(struct fake_ca *ca)
{
    for (int i = 0; i < ca->n; i++)
        free(ca->q[i].req);
    EVP_PKEY_free(ca->key);
    X509_free(ca->root);
    free(ca->root_pem);
}

static int fake_call(void *u, const uint8_t *req, size_t len, app_cert_ca_done_fn done, void *done_u)
{
    struct fake_ca *ca = u;

    ca->calls++;
    if (ca->mode == FAKE_DOWN)
        return -ECONNREFUSED;
    assert_true(ca->n < 64);
    ca->q[ca->n].done = done;
    ca->q[ca->n].u = done_u;
    ca->q[ca->n].req = malloc(len);
    memcpy(ca->q[ca->n].req, req, len);
    ca->q[ca->n].len = len;
    ca->n++;
    return 0;
}

/* Answer every queued call (as the agent does from its poll loop). */
static void fake_answer(struct fake_ca *ca)
{
    int n = ca->n;

    ca->n = 0;
    for (int i = 0; i < n; i++) {
        struct pending *p = &ca->q[i];
        Istio__V1__Auth__IstioCertificateRequest *rq =
            istio__v1__auth__istio_certificate_request__unpack(NULL, p->len, p->req);
        assert_non_null(rq);
        if (ca->mode == FAKE_REFUSE) {
            p->done(p->u, 16, "node is not allowed to impersonate", NULL, 0);
        } else {
            BIO *b = BIO_new_mem_buf(rq->csr, -1);
            X509_REQ *csr = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
            const char *uri = NULL;
            int64_t now = (int64_t)(mesh_env_now(&fe.env) / S_NS);
            X509 *leaf;
            char *chain[2];
            Istio__V1__Auth__IstioCertificateResponse resp = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_RESPONSE__INIT;
            uint8_t out[8192];
            size_t olen;

            assert_non_null(csr);
            for (size_t k = 0; k < rq->metadata->n_fields; k++)
                if (strcmp(rq->metadata->fields[k]->key, "ImpersonatedIdentity") == 0)
                    uri = rq->metadata->fields[k]->value->string_value;
            assert_non_null(uri);
            assert_int_equal(rq->validity_duration, 3600);
            leaf = make_cert(X509_REQ_get0_pubkey(csr), ca->key, ca->root, uri, now, now + ca->lifetime_s);
            chain[0] = pem_of(leaf);
            chain[1] = ca->root_pem;
            resp.n_cert_chain = 2;
            resp.cert_chain = chain;
            olen = istio__v1__auth__istio_certificate_response__pack(&resp, out);
            p->done(p->u, 0, "", out, olen);
            free(chain[0]);
            X509_free(leaf);
            X509_REQ_free(csr);
            BIO_free(b);
        }
        istio__v1__auth__istio_certificate_request__free_unpacked(rq, NULL);
        free(p->req);
    }
}

static struct app_cert_manager *new_remote(struct fake_ca *ca)
{
    struct app_cert_ca t = {fake_call, ca};
    int err = 0;
    struct app_cert_manager *cm = app_cert_manager_new(&fe.env, &t, NULL, 3600, &err);

    assert_non_null(cm);
    return cm;
}

static void id_of(const char *sa, struct mesh_spiffe_id *id)
{
    assert_int_equal(mesh_spiffe_from_parts("cluster.local", "default", sa, id), 0);
}

static void state_is(struct app_cert_manager *cm, const struct mesh_spiffe_id *id, const char *want)
{
    char buf[256];

    assert_true(app_cert_manager_state(cm, id, buf, sizeof(buf)) >= 0);
    assert_string_equal(buf, want);
}

/* ---- tests ---- */

static void test_cert_manager_issue_and_rotate(void **state)
{
    struct fake_ca ca;
    struct app_cert_manager *cm;
    struct mesh_spiffe_id id;
    const struct mesh_cert_bundle *b1, *b2;
    uint64_t next, backoff, t0;

    (void)state;
    fake_ca_init(&ca);
    cm = new_remote(&ca);
    id_of("sleep", &id);
    assert_int_equal(app_cert_manager_track(cm, &id), 0);
    state_is(cm, &id, "Initializing");
    assert_null(app_cert_manager_get(cm, &id));
    t0 = mesh_env_now(&fe.env);
    assert_int_equal(app_cert_manager_next_deadline(cm), t0);
    app_cert_manager_tick(cm);
    assert_int_equal(ca.n, 1);
    assert_int_equal(app_cert_manager_stats(cm)->inflight, 1);
    assert_int_equal(app_cert_manager_next_deadline(cm), APP_CERT_NO_DEADLINE);
    fake_answer(&ca);
    state_is(cm, &id, "Available");
    b1 = app_cert_manager_get(cm, &id);
    assert_non_null(b1);
    assert_true(mesh_spiffe_eq(mesh_identity_bundle_id(b1), &id));
    /* rotation is due at half of the lifetime */
    assert_int_equal(app_cert_manager_schedule(cm, &id, &next, &backoff), 0);
    assert_int_equal(backoff, 0);
    assert_int_equal(next, (uint64_t)mesh_identity_bundle_not_before(b1) * S_NS + 1800 * S_NS);
    fake_clock_advance(&fe.clock, 1799 * S_NS);
    app_cert_manager_tick(cm);
    assert_int_equal(ca.n, 0);
    fake_clock_advance(&fe.clock, 1 * S_NS);
    app_cert_manager_tick(cm);
    assert_int_equal(ca.n, 1);
    fake_answer(&ca);
    b2 = app_cert_manager_get(cm, &id);
    assert_ptr_not_equal(b2, b1);
    assert_int_equal(app_cert_manager_stats(cm)->rotations, 1);
    mesh_identity_bundle_unref(b1);
    mesh_identity_bundle_unref(b2);
    app_cert_manager_free(cm);
    fake_ca_fini(&ca);
}

static void test_cert_manager_refused_keeps_old_and_backs_off(void **state)
{
    struct fake_ca ca;
    struct app_cert_manager *cm;
    struct mesh_spiffe_id id;
    const struct mesh_cert_bundle *b;
    uint64_t next, backoff, now, expect = APP_CERT_BACKOFF_INITIAL_NS;
    char buf[256];

    (void)state;
    fake_ca_init(&ca);
    cm = new_remote(&ca);
    id_of("web", &id);
    assert_int_equal(app_cert_manager_track(cm, &id), 0);
    app_cert_manager_tick(cm);
    fake_answer(&ca);
    state_is(cm, &id, "Available");

    /* at half-life the CA refuses: the old certificate stays Available; retries back off */
    fake_clock_advance(&fe.clock, 1800 * S_NS);
    ca.mode = FAKE_REFUSE;
    for (int i = 0; i < 12; i++) {
        app_cert_manager_tick(cm);
        assert_int_equal(ca.n, 1);
        fake_answer(&ca);
        now = mesh_env_now(&fe.env);
        assert_int_equal(app_cert_manager_schedule(cm, &id, &next, &backoff), 0);
        assert_int_equal(backoff, expect);
        /* jitter within +-20% */
        assert_true(next - now >= expect - expect / 5);
        assert_true(next - now <= expect + expect / 5);
        b = app_cert_manager_get(cm, &id); /* the first certificate is still valid: kept */
        assert_non_null(b);
        mesh_identity_bundle_unref(b);
        state_is(cm, &id, "Available");
        fake_clock_set(&fe.clock, next);
        expect = expect * 2 > APP_CERT_BACKOFF_MAX_NS ? APP_CERT_BACKOFF_MAX_NS : expect * 2;
    }
    assert_int_equal(expect, APP_CERT_BACKOFF_MAX_NS); /* capped at 150 s */
    /* past expiry without a renewal: Unavailable with the reason, and no certificate */
    fake_clock_advance(&fe.clock, 3600 * S_NS);
    assert_null(app_cert_manager_get(cm, &id));
    assert_int_equal(app_cert_manager_state(cm, &id, buf, sizeof(buf)), APP_CERT_UNAVAILABLE);
    assert_string_equal(buf, "Unavailable: CreateCertificate failed: gRPC status 16: node is not allowed to "
                             "impersonate");
    /* the CA comes back: a success resets the backoff */
    ca.mode = FAKE_SIGN;
    app_cert_manager_tick(cm);
    fake_answer(&ca);
    state_is(cm, &id, "Available");
    assert_int_equal(app_cert_manager_schedule(cm, &id, &next, &backoff), 0);
    assert_int_equal(backoff, 0);
    app_cert_manager_free(cm);
    fake_ca_fini(&ca);
}

static void test_cert_manager_refused_first_is_unavailable(void **state)
{
    struct fake_ca ca;
    struct app_cert_manager *cm;
    struct mesh_spiffe_id id;

    (void)state;
    fake_ca_init(&ca);
    ca.mode = FAKE_DOWN;
    cm = new_remote(&ca);
    id_of("x", &id);
    assert_int_equal(app_cert_manager_track(cm, &id), 0);
    app_cert_manager_tick(cm);
    state_is(cm, &id, "Unavailable: CreateCertificate not sent: Connection refused");
    assert_null(app_cert_manager_get(cm, &id));
    app_cert_manager_free(cm);
    fake_ca_fini(&ca);
}

static void test_cert_manager_inflight_limit(void **state)
{
    struct fake_ca ca;
    struct app_cert_manager *cm;
    struct mesh_spiffe_id id;
    char sa[16];

    (void)state;
    fake_ca_init(&ca);
    cm = new_remote(&ca);
    for (int i = 0; i < 20; i++) {
        snprintf(sa, sizeof(sa), "sa%d", i);
        id_of(sa, &id);
        assert_int_equal(app_cert_manager_track(cm, &id), 0);
    }
    app_cert_manager_tick(cm);
    assert_int_equal(ca.n, APP_CERT_MAX_INFLIGHT);
    fake_answer(&ca);
    app_cert_manager_tick(cm);
    assert_int_equal(ca.n, APP_CERT_MAX_INFLIGHT);
    fake_answer(&ca);
    app_cert_manager_tick(cm);
    assert_int_equal(ca.n, 4);
    fake_answer(&ca);
    assert_int_equal(app_cert_manager_stats(cm)->issued, 20);
    /* untracking drops the identity; a late completion for it is ignored */
    id_of("sa0", &id);
    app_cert_manager_untrack(cm, &id);
    assert_null(app_cert_manager_get(cm, &id));
    assert_int_equal(app_cert_manager_state(cm, &id, NULL, 0), -ENOENT);
    app_cert_manager_free(cm);
    fake_ca_fini(&ca);
}

static void test_cert_manager_local_ca_and_dump(void **state)
{
    char dir[] = "/tmp/zw-cm-XXXXXX", why[256] = "", path[300];
    struct app_local_ca_config lc = {.trust_domain = "cluster.local", .cert_ttl_s = 600};
    struct mesh_local_ca *ca, *again;
    struct app_cert_manager *cm;
    struct mesh_spiffe_id id;
    json_t *dump, *entry, *cert;
    struct stat st;
    int err = 0;

    (void)state;
    fake_clock_set(&fe.clock, FAKE_CLOCK_DEFAULT_START_NS);
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/ca", dir);
    lc.state_dir = path;
    ca = app_cert_local_ca_open(&fe.env, &lc, why, sizeof(why), &err);
    assert_non_null(ca);
    snprintf(path, sizeof(path), "%s/ca/ca-key.pem", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* the second start loads the persisted CA */
    snprintf(path, sizeof(path), "%s/ca", dir);
    again = app_cert_local_ca_open(&fe.env, &lc, why, sizeof(why), &err);
    assert_non_null(again);
    mesh_local_ca_free(again);

    cm = app_cert_manager_new(&fe.env, NULL, ca, 600, &err);
    assert_non_null(cm);
    id_of("local", &id);
    assert_int_equal(app_cert_manager_track(cm, &id), 0);
    app_cert_manager_tick(cm);
    state_is(cm, &id, "Available");
    fake_clock_advance(&fe.clock, 300 * S_NS);
    app_cert_manager_tick(cm);
    assert_int_equal(app_cert_manager_stats(cm)->rotations, 1);

    dump = app_cert_manager_dump(cm);
    assert_int_equal(json_array_size(dump), 1);
    entry = json_array_get(dump, 0);
    assert_string_equal(json_string_value(json_object_get(entry, "identity")),
                        "spiffe://cluster.local/ns/default/sa/local");
    assert_string_equal(json_string_value(json_object_get(entry, "state")), "Available");
    cert = json_array_get(json_object_get(entry, "certChain"), 0);
    assert_int_equal(strncmp(json_string_value(json_object_get(cert, "pem")), "LS0tLS1CRUdJTi", 14), 0);
    assert_string_equal(json_string_value(json_object_get(cert, "expirationTime")), "2026-01-01T00:15:00Z");
    assert_true(strlen(json_string_value(json_object_get(cert, "serialNumber"))) > 0);
    assert_int_equal(json_array_size(json_object_get(entry, "rootCerts")), 1);
    json_decref(dump);
    app_cert_manager_free(cm);
    mesh_local_ca_free(ca);
    {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cert_manager_issue_and_rotate),
        cmocka_unit_test(test_cert_manager_refused_keeps_old_and_backs_off),
        cmocka_unit_test(test_cert_manager_refused_first_is_unavailable),
        cmocka_unit_test(test_cert_manager_inflight_limit),
        cmocka_unit_test(test_cert_manager_local_ca_and_dump),
    };

    fake_env_init(&fe, 0, 3);
    return cmocka_run_group_tests_name("cert_manager", tests, NULL, NULL);
}
