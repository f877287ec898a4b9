/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for mesh/identity.c: bundles, the local CA, rotation. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "mesh/identity.h"
#include "tests/fakes/fake_clock.h"

#define HOUR_NS (3600ull * FAKE_NS_PER_S)

static struct fake_env fe;

static int setup(void **state)
{
    (void)state;
    fake_env_init(&fe, 0, 42);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(fe.alloc.live, 0);
    return 0;
}

static uint64_t now_ns(void)
{
    return fe.clock.now_ns;
}

static struct mesh_local_ca *make_root(void)
{
    int err = 0;
    struct mesh_local_ca *ca = mesh_local_ca_generate(&fe.env, "cluster.local", now_ns() - HOUR_NS, 0, &err);

    assert_non_null(ca);
    return ca;
}

static const struct mesh_cert_bundle *issue(const struct mesh_local_ca *ca, const char *ns, const char *sa)
{
    struct mesh_spiffe_id id;
    int err = 0;
    const struct mesh_cert_bundle *b;

    assert_int_equal(mesh_spiffe_from_parts("cluster.local", ns, sa, &id), 0);
    b = mesh_local_ca_issue(ca, &id, now_ns(), 0, &err);
    if (b == NULL)
        fail_msg("issue failed: %d", err);
    return b;
}

/* Independent strict verification with plain OpenSSL at the fake time. */
static int verify_strict(const struct mesh_cert_bundle *b, const char *purpose)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *roots = mesh_identity_bundle_roots(b);
    int ok;

    for (int i = 0; i < sk_X509_num(roots); i++)
        X509_STORE_add_cert(store, sk_X509_value(roots, i));
    X509_STORE_CTX_init(ctx, store, mesh_identity_bundle_leaf(b), mesh_identity_bundle_chain(b));
    X509_STORE_CTX_set_default(ctx, purpose);
    X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(ctx), X509_V_FLAG_X509_STRICT);
    X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx), (time_t)(now_ns() / FAKE_NS_PER_S));
    ok = X509_verify_cert(ctx);
    if (ok != 1)
        print_error("verify: %s\n", X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return ok;
}

static void test_identity_leaf_is_istio_shaped(void **state)
{
    struct mesh_local_ca *ca;
    const struct mesh_cert_bundle *b;
    X509 *leaf;
    GENERAL_NAMES *gens;
    int crit = -1, idx;
    char group[64];
    size_t glen = 0;

    (void)state;
    ca = make_root();
    b = issue(ca, "default", "foo");
    leaf = mesh_identity_bundle_leaf(b);
    /* empty subject, single critical URI SAN */
    assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(leaf)), 0);
    gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, &crit, NULL);
    assert_non_null(gens);
    assert_int_equal(crit, 1);
    assert_int_equal(sk_GENERAL_NAME_num(gens), 1);
    assert_int_equal(sk_GENERAL_NAME_value(gens, 0)->type, GEN_URI);
    assert_string_equal(
        (const char *)ASN1_STRING_get0_data(sk_GENERAL_NAME_value(gens, 0)->d.uniformResourceIdentifier),
        "spiffe://cluster.local/ns/default/sa/foo");
    GENERAL_NAMES_free(gens);
    /* key usage (critical), EKU, basic constraints, AKID */
    assert_int_equal(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
    idx = X509_get_ext_by_NID(leaf, NID_key_usage, -1);
    assert_true(idx >= 0);
    assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(leaf, idx)), 1);
    assert_int_equal(X509_get_extended_key_usage(leaf) & (XKU_SSL_SERVER | XKU_SSL_CLIENT),
                     XKU_SSL_SERVER | XKU_SSL_CLIENT);
    assert_int_equal(X509_check_ca(leaf), 0);
    assert_non_null(X509_get0_authority_key_id(leaf));
    /* ECDSA P-256, SHA-256 signature */
    assert_true(EVP_PKEY_is_a(mesh_identity_bundle_key(b), "EC"));
    assert_int_equal(EVP_PKEY_get_group_name(mesh_identity_bundle_key(b), group, sizeof(group), &glen), 1);
    assert_string_equal(group, "prime256v1");
    assert_int_equal(X509_get_signature_nid(leaf), NID_ecdsa_with_SHA256);
    assert_int_equal(X509_get_version(leaf), X509_VERSION_3);
    /* identity, dates (default 24 h), serial */
    assert_string_equal(mesh_identity_bundle_id(b)->sa, "foo");
    assert_int_equal(mesh_identity_bundle_not_before(b), (int64_t)(now_ns() / FAKE_NS_PER_S));
    assert_int_equal(mesh_identity_bundle_not_after(b) - mesh_identity_bundle_not_before(b), 24 * 3600);
    assert_true(strlen(mesh_identity_bundle_serial(b)) >= 30);
    assert_true(strspn(mesh_identity_bundle_serial(b), "0123456789abcdef") == strlen(mesh_identity_bundle_serial(b)));
    assert_int_equal(sk_X509_num(mesh_identity_bundle_chain(b)), 0);
    /* verifies strictly for both TLS purposes */
    assert_int_equal(verify_strict(b, "ssl_client"), 1);
    assert_int_equal(verify_strict(b, "ssl_server"), 1);
    mesh_identity_bundle_unref(b);
    mesh_local_ca_free(ca);
}

static void test_identity_intermediate_chain(void **state)
{
    struct mesh_local_ca *root = make_root(), *inter;
    const struct mesh_cert_bundle *b;
    int err = 0;

    (void)state;
    inter = mesh_local_ca_new_intermediate(root, now_ns() - HOUR_NS, 0, &err);
    assert_non_null(inter);
    b = issue(inter, "ns1", "sa1");
    assert_int_equal(sk_X509_num(mesh_identity_bundle_chain(b)), 1);
    assert_int_equal(sk_X509_num(mesh_identity_bundle_roots(b)), 1);
    assert_int_equal(
        X509_cmp(sk_X509_value(mesh_identity_bundle_roots(b), 0), sk_X509_value(mesh_local_ca_roots(root), 0)), 0);
    assert_int_equal(verify_strict(b, "ssl_client"), 1);
    mesh_identity_bundle_unref(b);
    mesh_local_ca_free(inter);
    mesh_local_ca_free(root);
}

static void test_identity_needs_rotation_at_half_life(void **state)
{
    struct mesh_local_ca *ca = make_root();
    const struct mesh_cert_bundle *b = issue(ca, "default", "foo");
    uint64_t t0 = now_ns();

    (void)state;
    assert_false(mesh_identity_needs_rotation(b, t0));
    assert_false(mesh_identity_needs_rotation(b, t0 + 12 * HOUR_NS - FAKE_NS_PER_S));
    assert_true(mesh_identity_needs_rotation(b, t0 + 12 * HOUR_NS));
    assert_true(mesh_identity_needs_rotation(b, t0 + 30 * HOUR_NS));
    assert_true(mesh_identity_needs_rotation(b, t0 - FAKE_NS_PER_S));
    mesh_identity_bundle_unref(b);
    mesh_local_ca_free(ca);
}

static void test_identity_custom_lifetime(void **state)
{
    struct mesh_local_ca *ca = make_root();
    struct mesh_spiffe_id id;
    const struct mesh_cert_bundle *b;
    int err;

    (void)state;
    mesh_spiffe_from_parts(NULL, "a", "b", &id);
    b = mesh_local_ca_issue(ca, &id, now_ns(), 2 * HOUR_NS, &err);
    assert_non_null(b);
    assert_int_equal(mesh_identity_bundle_not_after(b) - mesh_identity_bundle_not_before(b), 7200);
    assert_true(mesh_identity_needs_rotation(b, now_ns() + HOUR_NS));
    mesh_identity_bundle_unref(b);
    strcpy(id.sa, "x/y");
    assert_null(mesh_local_ca_issue(ca, &id, now_ns(), 0, &err));
    assert_int_equal(err, -EINVAL);
    mesh_local_ca_free(ca);
}

static void test_identity_refcount(void **state)
{
    struct mesh_local_ca *ca = make_root();
    const struct mesh_cert_bundle *b = issue(ca, "default", "foo");
    long live;

    (void)state;
    mesh_local_ca_free(ca);
    live = fe.alloc.live;
    assert_ptr_equal(mesh_identity_bundle_ref(b), b);
    mesh_identity_bundle_unref(b);
    assert_int_equal(fe.alloc.live, live);
    mesh_identity_bundle_unref(b);
    assert_int_equal(fe.alloc.live, 0);
    mesh_identity_bundle_unref(NULL);
}

static void test_identity_pem_round_trip(void **state)
{
    struct mesh_local_ca *root = make_root(), *inter;
    const struct mesh_cert_bundle *b, *b2;
    char *chain, *key, *roots;
    int err = 0;

    (void)state;
    inter = mesh_local_ca_new_intermediate(root, now_ns() - HOUR_NS, 0, &err);
    b = issue(inter, "default", "foo");
    assert_int_equal(mesh_identity_bundle_to_pem(b, &chain, &key, &roots), 0);
    assert_non_null(strstr(chain, "BEGIN CERTIFICATE"));
    assert_non_null(strstr(key, "PRIVATE KEY"));
    b2 = mesh_identity_bundle_from_pem(&fe.env, chain, strlen(chain), key, strlen(key), roots, strlen(roots), &err);
    assert_non_null(b2);
    assert_string_equal(mesh_identity_bundle_serial(b), mesh_identity_bundle_serial(b2));
    assert_true(mesh_spiffe_eq(mesh_identity_bundle_id(b), mesh_identity_bundle_id(b2)));
    assert_int_equal(sk_X509_num(mesh_identity_bundle_chain(b2)), 1);
    assert_int_equal(mesh_identity_bundle_not_after(b), mesh_identity_bundle_not_after(b2));
    mesh_identity_bundle_unref(b2);

    /* errors */
    assert_null(mesh_identity_bundle_from_pem(&fe.env, "junk", 4, key, strlen(key), roots, strlen(roots), &err));
    assert_int_equal(err, -EBADMSG);
    assert_null(mesh_identity_bundle_from_pem(&fe.env, chain, strlen(chain), "junk", 4, roots, strlen(roots), &err));
    assert_int_equal(err, -EBADMSG);
    assert_null(mesh_identity_bundle_from_pem(&fe.env, chain, strlen(chain), key, strlen(key), "", 0, &err));
    assert_int_equal(err, -EBADMSG);
    {
        /* leaf without its intermediate does not reach the root */
        char *leaf_only = strdup(chain);
        char *second = strstr(leaf_only + 1, "-----BEGIN CERTIFICATE");
        assert_non_null(second);
        *second = '\0';
        assert_null(mesh_identity_bundle_from_pem(&fe.env, leaf_only, strlen(leaf_only), key, strlen(key), roots,
                                                  strlen(roots), &err));
        assert_int_equal(err, -EINVAL);
        free(leaf_only);
    }
    {
        /* someone else's key */
        const struct mesh_cert_bundle *other = issue(inter, "default", "bar");
        char *okey;
        assert_int_equal(mesh_identity_bundle_to_pem(other, NULL, &okey, NULL), 0);
        assert_null(mesh_identity_bundle_from_pem(&fe.env, chain, strlen(chain), okey, strlen(okey), roots,
                                                  strlen(roots), &err));
        assert_int_equal(err, -EKEYREJECTED);
        mesh_env_free(&fe.env, okey);
        mesh_identity_bundle_unref(other);
    }
    {
        /* a certificate without a SPIFFE SAN (the CA itself) is not a workload bundle */
        char *ca_cert, *ca_key;
        assert_int_equal(mesh_local_ca_cert_pem(root, &ca_cert, NULL), 0);
        assert_int_equal(mesh_local_ca_key_pem(root, &ca_key, NULL), 0);
        assert_null(mesh_identity_bundle_from_pem(&fe.env, ca_cert, strlen(ca_cert), ca_key, strlen(ca_key), ca_cert,
                                                  strlen(ca_cert), &err));
        assert_int_equal(err, -EINVAL);
        mesh_env_free(&fe.env, ca_cert);
        mesh_env_free(&fe.env, ca_key);
    }
    mesh_env_free(&fe.env, chain);
    mesh_env_free(&fe.env, key);
    mesh_env_free(&fe.env, roots);
    mesh_identity_bundle_unref(b);
    mesh_local_ca_free(inter);
    mesh_local_ca_free(root);
}

static void write_file(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

static void test_identity_load_files(void **state)
{
    struct mesh_local_ca *ca = make_root();
    const struct mesh_cert_bundle *b = issue(ca, "default", "foo"), *b2;
    char dir[] = "/tmp/mesh_identity_XXXXXX", p1[256], p2[256], p3[256];
    char *chain, *key, *roots;
    int err;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(p1, sizeof(p1), "%s/cert-chain.pem", dir);
    snprintf(p2, sizeof(p2), "%s/key.pem", dir);
    snprintf(p3, sizeof(p3), "%s/root-cert.pem", dir);
    assert_int_equal(mesh_identity_bundle_to_pem(b, &chain, &key, &roots), 0);
    write_file(p1, chain);
    write_file(p2, key);
    write_file(p3, roots);
    b2 = mesh_identity_bundle_load(&fe.env, p1, p2, p3, &err);
    assert_non_null(b2);
    assert_string_equal(mesh_identity_bundle_serial(b), mesh_identity_bundle_serial(b2));
    mesh_identity_bundle_unref(b2);
    assert_null(mesh_identity_bundle_load(&fe.env, p1, "/nonexistent/key.pem", p3, &err));
    assert_int_equal(err, -ENOENT);
    unlink(p1);
    unlink(p2);
    unlink(p3);
    rmdir(dir);
    mesh_env_free(&fe.env, chain);
    mesh_env_free(&fe.env, key);
    mesh_env_free(&fe.env, roots);
    mesh_identity_bundle_unref(b);
    mesh_local_ca_free(ca);
}

static void test_identity_ca_pem_persist_and_reload(void **state)
{
    struct mesh_local_ca *ca = make_root(), *ca2;
    char *cert, *key;
    size_t cert_len, key_len;
    const struct mesh_cert_bundle *b;
    int err;

    (void)state;
    assert_int_equal(mesh_local_ca_cert_pem(ca, &cert, &cert_len), 0);
    assert_int_equal(mesh_local_ca_key_pem(ca, &key, &key_len), 0);
    assert_int_equal(strlen(cert), cert_len);
    ca2 = mesh_local_ca_from_pem(&fe.env, cert, cert_len, key, key_len, NULL, 0, &err);
    assert_non_null(ca2);
    b = issue(ca2, "default", "reloaded");
    /* the reloaded CA issues leaves that the original root verifies */
    assert_int_equal(
        X509_cmp(sk_X509_value(mesh_identity_bundle_roots(b), 0), sk_X509_value(mesh_local_ca_roots(ca), 0)), 0);
    assert_int_equal(verify_strict(b, "ssl_server"), 1);
    mesh_identity_bundle_unref(b);
    mesh_local_ca_free(ca2);
    /* a leaf is not a CA */
    {
        const struct mesh_cert_bundle *leafb = issue(ca, "default", "leaf");
        char *lc, *lk;
        assert_int_equal(mesh_identity_bundle_to_pem(leafb, &lc, &lk, NULL), 0);
        assert_null(mesh_local_ca_from_pem(&fe.env, lc, strlen(lc), lk, strlen(lk), NULL, 0, &err));
        assert_int_equal(err, -EINVAL);
        assert_null(mesh_local_ca_from_pem(&fe.env, cert, cert_len, lk, strlen(lk), NULL, 0, &err));
        assert_int_equal(err, -EKEYREJECTED);
        mesh_env_free(&fe.env, lc);
        mesh_env_free(&fe.env, lk);
        mesh_identity_bundle_unref(leafb);
    }
    mesh_env_free(&fe.env, cert);
    mesh_env_free(&fe.env, key);
    mesh_local_ca_free(ca);
}

static void test_identity_serials_differ(void **state)
{
    struct mesh_local_ca *ca = make_root();
    const struct mesh_cert_bundle *a = issue(ca, "default", "foo"), *b = issue(ca, "default", "foo");

    (void)state;
    assert_string_not_equal(mesh_identity_bundle_serial(a), mesh_identity_bundle_serial(b));
    mesh_identity_bundle_unref(a);
    mesh_identity_bundle_unref(b);
    mesh_local_ca_free(ca);
}

/* Fail each env allocation of issue + PEM round trip in turn: clean error, no leak, no crash. */
static void test_identity_alloc_failure_sweep(void **state)
{
    struct mesh_local_ca *ca = make_root();
    struct mesh_spiffe_id id;
    long base = fe.alloc.live;
    long n;

    (void)state;
    mesh_spiffe_from_parts(NULL, "default", "foo", &id);
    for (n = 1; n < 100; n++) {
        const struct mesh_cert_bundle *b, *b2 = NULL;
        char *chain = NULL, *key = NULL, *roots = NULL;
        int err = 0;

        failalloc_arm(&fe.alloc, n);
        b = mesh_local_ca_issue(ca, &id, now_ns(), 0, &err);
        if (b == NULL) {
            assert_int_equal(err, -ENOMEM);
        } else if (mesh_identity_bundle_to_pem(b, &chain, &key, &roots) == 0) {
            b2 = mesh_identity_bundle_from_pem(&fe.env, chain, strlen(chain), key, strlen(key), roots, strlen(roots),
                                               &err);
            if (b2 == NULL)
                assert_int_equal(err, -ENOMEM);
        }
        mesh_identity_bundle_unref(b2);
        mesh_identity_bundle_unref(b);
        mesh_env_free(&fe.env, chain);
        mesh_env_free(&fe.env, key);
        mesh_env_free(&fe.env, roots);
        assert_int_equal(fe.alloc.live, base);
        if (fe.alloc.failures == 0)
            break;
    }
    failalloc_arm(&fe.alloc, 0);
    assert_true(n > 3 && n < 100);
    mesh_local_ca_free(ca);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_identity_leaf_is_istio_shaped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_intermediate_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_needs_rotation_at_half_life, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_custom_lifetime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_refcount, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_pem_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_load_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_ca_pem_persist_and_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_serials_differ, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_alloc_failure_sweep, setup, teardown),
    };
    return cmocka_run_group_tests_name("mesh_identity", tests, NULL, NULL);
}
