/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/fakes/testca.h - test PKIs made at run time with the mesh local CA.
 *
 * The mesh PKI is root -> intermediate (pathlen 0) -> leaves, like istiod's. A second, unrelated root plays the
 * "wrong CA". Every bundle handed out trusts the mesh root; a WRONG_CA bundle additionally trusts the other root (so
 * that it is self-consistent and the side holding it accepts the good peer, isolating the failure on the peer that
 * checks it).
 */
#ifndef TESTS_FAKES_TESTCA_H
#define TESTS_FAKES_TESTCA_H

#include <stdint.h>

#include "mesh/identity.h"

enum testca_kind {
    TESTCA_GOOD,          /* valid now, issued by the mesh intermediate */
    TESTCA_WRONG_CA,      /* valid now, issued by the unrelated root */
    TESTCA_EXPIRED,       /* issued by the mesh, notAfter one day before now */
    TESTCA_NOT_YET_VALID, /* issued by the mesh, notBefore one day after now */
};

struct testca {
    const struct mesh_env *env;
    uint64_t now_ns;
    struct mesh_local_ca *root;
    struct mesh_local_ca *inter;
    struct mesh_local_ca *other;
};

/* Build the CAs, valid from a year before now_ns. Returns 0 or -errno. */
int testca_init(struct testca *tc, const struct mesh_env *env, uint64_t now_ns);
void testca_fini(struct testca *tc);

/* Issue a bundle for spiffe://td/ns/ns/sa/sa. Aborts the test process on failure (test helper). */
const struct mesh_cert_bundle *testca_issue(struct testca *tc, enum testca_kind kind, const char *td, const char *ns,
                                            const char *sa);

#endif /* TESTS_FAKES_TESTCA_H */
