/* SPDX-License-Identifier: Apache-2.0 */
/* tests/fakes/testca.c - run-time test PKI (see testca.h). */
#include <stdio.h>
#include <stdlib.h>

#include "tests/fakes/testca.h"

#define TESTCA_DAY_NS (24ull * 3600 * 1000000000ull)
#define TESTCA_YEAR_NS (365 * TESTCA_DAY_NS)

int testca_init(struct testca *tc, const struct mesh_env *env, uint64_t now_ns)
{
    int err = 0;

    tc->env = env;
    tc->now_ns = now_ns;
    tc->root = mesh_local_ca_generate(env, "cluster.local", now_ns - TESTCA_YEAR_NS, 10 * TESTCA_YEAR_NS, &err);
    if (tc->root == NULL)
        return err;
    tc->inter = mesh_local_ca_new_intermediate(tc->root, now_ns - TESTCA_YEAR_NS, 5 * TESTCA_YEAR_NS, &err);
    if (tc->inter == NULL)
        goto fail;
    tc->other = mesh_local_ca_generate(env, "cluster.local", now_ns - TESTCA_YEAR_NS, 10 * TESTCA_YEAR_NS, &err);
    if (tc->other == NULL)
        goto fail;
    return 0;
fail:
    testca_fini(tc);
    return err;
}

void testca_fini(struct testca *tc)
{
    mesh_local_ca_free(tc->root);
    mesh_local_ca_free(tc->inter);
    mesh_local_ca_free(tc->other);
    tc->root = tc->inter = tc->other = NULL;
}

static void testca_die(const char *what, int err)
{
    fprintf(stderr, "testca: %s failed: %d\n", what, err);
    abort();
}

const struct mesh_cert_bundle *testca_issue(struct testca *tc, enum testca_kind kind, const char *td, const char *ns,
                                            const char *sa)
{
    const struct mesh_cert_bundle *b, *wrong;
    struct mesh_spiffe_id id;
    STACK_OF(X509) * roots;
    int err = 0;

    if (mesh_spiffe_from_parts(td, ns, sa, &id) != 0)
        testca_die("identity", -1);
    switch (kind) {
    case TESTCA_GOOD:
        b = mesh_local_ca_issue(tc->inter, &id, tc->now_ns, 0, &err);
        break;
    case TESTCA_EXPIRED:
        b = mesh_local_ca_issue(tc->inter, &id, tc->now_ns - 2 * TESTCA_DAY_NS, TESTCA_DAY_NS, &err);
        break;
    case TESTCA_NOT_YET_VALID:
        b = mesh_local_ca_issue(tc->inter, &id, tc->now_ns + TESTCA_DAY_NS, TESTCA_DAY_NS, &err);
        break;
    case TESTCA_WRONG_CA:
        wrong = mesh_local_ca_issue(tc->other, &id, tc->now_ns, 0, &err);
        if (wrong == NULL)
            testca_die("issue (wrong CA)", err);
        roots = X509_chain_up_ref(mesh_identity_bundle_roots(wrong));
        if (roots == NULL)
            testca_die("roots", -1);
        for (int i = 0; i < sk_X509_num(mesh_local_ca_roots(tc->root)); i++) {
            X509 *r = sk_X509_value(mesh_local_ca_roots(tc->root), i);
            if (!X509_up_ref(r))
                testca_die("roots", -1);
            if (!sk_X509_push(roots, r))
                testca_die("roots", -1);
        }
        b = mesh_identity_bundle_new(tc->env, mesh_identity_bundle_leaf(wrong), mesh_identity_bundle_chain(wrong),
                                     mesh_identity_bundle_key(wrong), roots, &err);
        sk_X509_pop_free(roots, X509_free);
        mesh_identity_bundle_unref(wrong);
        break;
    default:
        b = NULL;
    }
    if (b == NULL)
        testca_die("issue", err);
    return b;
}
