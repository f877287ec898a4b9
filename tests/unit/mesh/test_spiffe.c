/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for mesh/spiffe.c: a corpus of the ztunnel grammar, formatting and defaults. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mesh/spiffe.h"

struct spiffe_case {
    const char *uri;
    int rc;
    const char *td, *ns, *sa;
};

static const struct spiffe_case corpus[] = {
    /* valid */
    {"spiffe://cluster.local/ns/default/sa/default", 0, "cluster.local", "default", "default"},
    {"spiffe://cluster.local/ns/foo/sa/bar", 0, "cluster.local", "foo", "bar"},
    {"spiffe://td/ns/n/sa/s", 0, "td", "n", "s"},
    {"spiffe://a.b.c.d/ns/x.y/sa/z.w", 0, "a.b.c.d", "x.y", "z.w"},
    {"spiffe://cluster.local/ns//sa/bar", 0, "cluster.local", "", "bar"},
    {"spiffe://cluster.local/ns/foo/sa/", 0, "cluster.local", "foo", ""},
    {"spiffe:///ns/foo/sa/bar", 0, "", "foo", "bar"},
    {"spiffe:///ns//sa/", 0, "", "", ""},
    {"spiffe://..../ns/.../sa/..", 0, "....", "...", ".."},
    {"spiffe://cluster.local/ns/istio-system/sa/istiod", 0, "cluster.local", "istio-system", "istiod"},
    {"spiffe://example.org/ns/ns/sa/sa", 0, "example.org", "ns", "sa"},
    {"spiffe://td/ns/sa/sa/ns", 0, "td", "sa", "ns"},
    {"spiffe://TD.Example/ns/UPPER/sa/Case", 0, "TD.Example", "UPPER", "Case"},
    {"spiffe://td:8080/ns/a/sa/b", 0, "td:8080", "a", "b"},
    {"spiffe://td/ns/a b/sa/c%20d", 0, "td", "a b", "c%20d"},
    {"spiffe://td/ns/a?q=1/sa/b#frag", 0, "td", "a?q=1", "b#frag"},
    /* invalid */
    {"", -EINVAL, NULL, NULL, NULL},
    {"spiffe://", -EINVAL, NULL, NULL, NULL},
    {"spiffe:/cluster.local/ns/a/sa/b", -EINVAL, NULL, NULL, NULL},
    {"SPIFFE://cluster.local/ns/a/sa/b", -EINVAL, NULL, NULL, NULL},
    {"http://cluster.local/ns/a/sa/b", -EINVAL, NULL, NULL, NULL},
    {" spiffe://cluster.local/ns/a/sa/b", -EINVAL, NULL, NULL, NULL},
    {"cluster.local/ns/a/sa/b", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local/ns/a", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local/ns/a/sa", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local/ns/a/sa/b/", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local/ns/a/sa/b/c", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local/ns/a/sa/b/c/d", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local/NS/a/sa/b", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local/ns/a/SA/b", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local/namespace/a/sa/b", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local/ns/a/serviceaccount/b", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local/sa/b/ns/a", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local//ns/a/sa/b", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local/ns/a//sa/b", -EINVAL, NULL, NULL, NULL},
    {"spiffe:///", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local/ns/a/sa/b?", 0, "cluster.local", "a", "b?"},
    {"spiffe://cluster.local/x/ns/a/sa/b", -EINVAL, NULL, NULL, NULL},
    {"spiffe://cluster.local/ns/a/sa/b\n", 0, "cluster.local", "a", "b\n"},
};

static void test_spiffe_corpus(void **state)
{
    (void)state;
    assert_true(sizeof(corpus) / sizeof(corpus[0]) >= 30);
    for (size_t i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++) {
        const struct spiffe_case *c = &corpus[i];
        struct mesh_spiffe_id id;
        int rc = mesh_spiffe_parse(c->uri, strlen(c->uri), &id);

        if (rc != c->rc)
            fail_msg("case %zu \"%s\": rc %d, want %d", i, c->uri, rc, c->rc);
        if (rc == 0) {
            char back[MESH_SPIFFE_URI_MAX_BYTES];
            assert_string_equal(id.td, c->td);
            assert_string_equal(id.ns, c->ns);
            assert_string_equal(id.sa, c->sa);
            /* parse -> format is the identity on valid input */
            assert_int_equal(mesh_spiffe_format(&id, back, sizeof(back)), (int)strlen(c->uri));
            assert_string_equal(back, c->uri);
        }
    }
}

static void test_spiffe_length_is_explicit(void **state)
{
    const char *uri = "spiffe://cluster.local/ns/a/sa/bEXTRA";
    struct mesh_spiffe_id id;

    (void)state;
    assert_int_equal(mesh_spiffe_parse(uri, strlen(uri) - 5, &id), 0);
    assert_string_equal(id.sa, "b");
    assert_int_equal(mesh_spiffe_parse(uri, 3, &id), -EINVAL);
    assert_int_equal(mesh_spiffe_parse(NULL, 0, &id), -EINVAL);
    /* an embedded NUL is never accepted */
    assert_int_equal(mesh_spiffe_parse("spiffe://td/ns/a\0b/sa/c", 24, &id), -EINVAL);
}

static void test_spiffe_segment_too_long(void **state)
{
    char uri[2048], seg[MESH_SPIFFE_SEGMENT_MAX_BYTES + 2];
    struct mesh_spiffe_id id;

    (void)state;
    memset(seg, 'a', sizeof(seg) - 1);
    seg[sizeof(seg) - 1] = '\0';
    snprintf(uri, sizeof(uri), "spiffe://td/ns/%s/sa/x", seg);
    assert_int_equal(mesh_spiffe_parse(uri, strlen(uri), &id), -ENAMETOOLONG);
    seg[MESH_SPIFFE_SEGMENT_MAX_BYTES] = '\0'; /* exactly the maximum */
    snprintf(uri, sizeof(uri), "spiffe://%s/ns/%s/sa/%s", seg, seg, seg);
    assert_int_equal(mesh_spiffe_parse(uri, strlen(uri), &id), 0);
    {
        char back[MESH_SPIFFE_URI_MAX_BYTES];
        assert_int_equal(mesh_spiffe_format(&id, back, sizeof(back)), (int)strlen(uri));
        assert_int_equal(strlen(back) + 1, sizeof(back));
    }
}

static void test_spiffe_format_errors(void **state)
{
    struct mesh_spiffe_id id;
    char small[16];

    (void)state;
    assert_int_equal(mesh_spiffe_from_parts("cluster.local", "default", "foo", &id), 0);
    assert_int_equal(mesh_spiffe_format(&id, small, sizeof(small)), -ENOSPC);
    assert_string_equal(small, "");
    assert_int_equal(mesh_spiffe_format(&id, small, 0), -ENOSPC);
    strcpy(id.ns, "a/b");
    {
        char out[128];
        assert_int_equal(mesh_spiffe_format(&id, out, sizeof(out)), -EINVAL);
    }
}

static void test_spiffe_from_parts_defaults(void **state)
{
    struct mesh_spiffe_id id;
    char out[MESH_SPIFFE_URI_MAX_BYTES];

    (void)state;
    assert_int_equal(mesh_spiffe_from_parts(NULL, "ns1", NULL, &id), 0);
    assert_int_equal(mesh_spiffe_format(&id, out, sizeof(out)),
                     (int)strlen("spiffe://cluster.local/ns/ns1/sa/default"));
    assert_string_equal(out, "spiffe://cluster.local/ns/ns1/sa/default");
    assert_int_equal(mesh_spiffe_from_parts("", "", "", &id), 0);
    assert_string_equal(id.td, "cluster.local");
    assert_string_equal(id.ns, "");
    assert_string_equal(id.sa, "default");
    assert_int_equal(mesh_spiffe_from_parts("td", "a/b", "c", &id), -EINVAL);
    assert_int_equal(mesh_spiffe_from_parts("t/d", "a", "c", &id), -EINVAL);
}

static void test_spiffe_eq(void **state)
{
    struct mesh_spiffe_id a, b, c;

    (void)state;
    assert_int_equal(mesh_spiffe_from_parts("td", "ns", "sa", &a), 0);
    assert_int_equal(mesh_spiffe_from_parts("td", "ns", "sa", &b), 0);
    assert_int_equal(mesh_spiffe_from_parts("td", "ns", "sb", &c), 0);
    assert_true(mesh_spiffe_eq(&a, &b));
    assert_false(mesh_spiffe_eq(&a, &c));
    assert_true(mesh_spiffe_same_trust_domain(&a, &c));
    assert_int_equal(mesh_spiffe_from_parts("td2", "ns", "sa", &c), 0);
    assert_false(mesh_spiffe_same_trust_domain(&a, &c));
    assert_false(mesh_spiffe_eq(&a, &c));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spiffe_corpus),
        cmocka_unit_test(test_spiffe_length_is_explicit),
        cmocka_unit_test(test_spiffe_segment_too_long),
        cmocka_unit_test(test_spiffe_format_errors),
        cmocka_unit_test(test_spiffe_from_parts_defaults),
        cmocka_unit_test(test_spiffe_eq),
    };
    return cmocka_run_group_tests_name("mesh_spiffe", tests, NULL, NULL);
}
