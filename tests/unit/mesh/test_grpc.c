/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for mesh/grpc.c: framing, the incremental deframer (also fed one byte at a time), status parsing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mesh/grpc.h"
#include "tests/fakes/fake_clock.h"

static struct fake_env fe;

static int setup(void **state)
{
    (void)state;
    fake_env_init(&fe, 0, 7);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(fe.alloc.live, 0);
    return 0;
}

static void test_grpc_frame_header_layout(void **state)
{
    uint8_t hdr[MESH_GRPC_HEADER_BYTES];
    struct mesh_buf b;
    const uint8_t msg[3] = {1, 2, 3};
    const uint8_t want[] = {0, 0, 0, 0, 3, 1, 2, 3};

    (void)state;
    mesh_grpc_frame_header(hdr, 0x01020304u);
    assert_int_equal(hdr[0], 0);
    assert_int_equal(hdr[1], 1);
    assert_int_equal(hdr[4], 4);
    mesh_buf_init(&b, &fe.env, 0);
    assert_int_equal(mesh_grpc_frame_append(&b, msg, sizeof(msg)), 0);
    assert_int_equal(mesh_buf_len(&b), sizeof(want));
    assert_memory_equal(mesh_buf_data(&b), want, sizeof(want));
    /* An empty message is a bare prefix. */
    assert_int_equal(mesh_grpc_frame_append(&b, NULL, 0), 0);
    assert_int_equal(mesh_buf_len(&b), sizeof(want) + 5);
    mesh_buf_fini(&b);
}

static void test_grpc_frame_append_respects_cap(void **state)
{
    struct mesh_buf b;
    uint8_t big[64] = {0};

    (void)state;
    mesh_buf_init(&b, &fe.env, 32);
    assert_int_equal(mesh_grpc_frame_append(&b, big, sizeof(big)), -ENOBUFS);
    assert_int_equal(mesh_buf_len(&b), 0);
    mesh_buf_fini(&b);
}

/* Three messages of sizes 0, 1 and 300 framed back to back. */
static size_t build_stream(uint8_t *out, size_t cap)
{
    struct mesh_buf b;
    uint8_t m[300];
    size_t n;

    for (size_t i = 0; i < sizeof(m); i++)
        m[i] = (uint8_t)i;
    mesh_buf_init(&b, &fe.env, 0);
    assert_int_equal(mesh_grpc_frame_append(&b, NULL, 0), 0);
    assert_int_equal(mesh_grpc_frame_append(&b, (const uint8_t *)"x", 1), 0);
    assert_int_equal(mesh_grpc_frame_append(&b, m, sizeof(m)), 0);
    n = mesh_buf_len(&b);
    assert_true(n <= cap);
    memcpy(out, mesh_buf_data(&b), n);
    mesh_buf_fini(&b);
    return n;
}

static void check_msgs(size_t got, const size_t *lens, const uint8_t *last)
{
    assert_int_equal(got, 3);
    assert_int_equal(lens[0], 0);
    assert_int_equal(lens[1], 1);
    assert_int_equal(lens[2], 300);
    assert_int_equal(last[299], 299 % 256);
}

static void deframe_in_chunks(size_t chunk)
{
    uint8_t wire[512], last[300];
    size_t n = build_stream(wire, sizeof(wire)), off = 0, got = 0, lens[3] = {0};
    struct mesh_grpc_deframer d;

    mesh_grpc_deframer_init(&d, &fe.env, 1024);
    while (off < n) {
        size_t len = n - off < chunk ? n - off : chunk;
        const uint8_t *p = wire + off;
        off += len;
        while (len != 0 || d.ready) {
            size_t used;
            int rc = mesh_grpc_deframer_feed(&d, p, len, &used);
            assert_true(rc >= 0);
            p += used;
            len -= used;
            if (rc == 0)
                break;
            {
                const uint8_t *m;
                size_t mlen;
                mesh_grpc_deframer_msg(&d, &m, &mlen);
                assert_true(got < 3);
                lens[got++] = mlen;
                if (mlen == 300)
                    memcpy(last, m, mlen);
                mesh_grpc_deframer_next(&d);
            }
        }
    }
    assert_false(mesh_grpc_deframer_is_partial(&d));
    check_msgs(got, lens, last);
    mesh_grpc_deframer_fini(&d);
}

static void test_grpc_deframer_one_byte_at_a_time(void **state)
{
    (void)state;
    deframe_in_chunks(1);
}

static void test_grpc_deframer_arbitrary_chunks(void **state)
{
    (void)state;
    for (size_t c = 2; c < 40; c += 3)
        deframe_in_chunks(c);
    deframe_in_chunks(4096);
}

static void test_grpc_deframer_holds_ready_message(void **state)
{
    const uint8_t wire[] = {0, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 1, 'b'};
    struct mesh_grpc_deframer d;
    size_t used;
    const uint8_t *m;
    size_t mlen;

    (void)state;
    mesh_grpc_deframer_init(&d, &fe.env, 0);
    assert_int_equal(mesh_grpc_deframer_feed(&d, wire, sizeof(wire), &used), 1);
    assert_int_equal(used, 6);
    /* While ready, nothing more is consumed. */
    assert_int_equal(mesh_grpc_deframer_feed(&d, wire + used, sizeof(wire) - used, &used), 1);
    assert_int_equal(used, 0);
    mesh_grpc_deframer_msg(&d, &m, &mlen);
    assert_int_equal(mlen, 1);
    assert_int_equal(m[0], 'a');
    mesh_grpc_deframer_next(&d);
    assert_int_equal(mesh_grpc_deframer_feed(&d, wire + 6, 6, &used), 1);
    mesh_grpc_deframer_msg(&d, &m, &mlen);
    assert_int_equal(m[0], 'b');
    mesh_grpc_deframer_fini(&d);
}

static void test_grpc_deframer_rejects_compressed(void **state)
{
    const uint8_t wire[] = {1, 0, 0, 0, 1, 'a'};
    struct mesh_grpc_deframer d;
    size_t used;

    (void)state;
    mesh_grpc_deframer_init(&d, &fe.env, 0);
    assert_int_equal(mesh_grpc_deframer_feed(&d, wire, sizeof(wire), &used), -EPROTO);
    /* sticky */
    assert_int_equal(mesh_grpc_deframer_feed(&d, wire, sizeof(wire), &used), -EPROTO);
    mesh_grpc_deframer_fini(&d);
}

static void test_grpc_deframer_rejects_oversized(void **state)
{
    const uint8_t wire[] = {0, 0, 0, 0x10, 0x01};
    struct mesh_grpc_deframer d;
    size_t used;

    (void)state;
    mesh_grpc_deframer_init(&d, &fe.env, 4096);
    assert_int_equal(mesh_grpc_deframer_feed(&d, wire, sizeof(wire), &used), -EMSGSIZE);
    assert_int_equal(fe.alloc.live, 0); /* nothing was buffered for it */
    mesh_grpc_deframer_fini(&d);
}

static void test_grpc_deframer_partial(void **state)
{
    const uint8_t wire[] = {0, 0, 0, 0, 4, 'a', 'b'};
    struct mesh_grpc_deframer d;
    size_t used;

    (void)state;
    mesh_grpc_deframer_init(&d, &fe.env, 0);
    assert_false(mesh_grpc_deframer_is_partial(&d));
    assert_int_equal(mesh_grpc_deframer_feed(&d, wire, 2, &used), 0);
    assert_true(mesh_grpc_deframer_is_partial(&d));
    assert_int_equal(mesh_grpc_deframer_feed(&d, wire + 2, sizeof(wire) - 2, &used), 0);
    assert_true(mesh_grpc_deframer_is_partial(&d));
    mesh_grpc_deframer_fini(&d);
}

static void test_grpc_deframer_nomem(void **state)
{
    const uint8_t wire[] = {0, 0, 0, 0, 2, 'a', 'b'};
    struct mesh_grpc_deframer d;
    size_t used;

    (void)state;
    mesh_grpc_deframer_init(&d, &fe.env, 0);
    failalloc_arm(&fe.alloc, 1);
    assert_int_equal(mesh_grpc_deframer_feed(&d, wire, sizeof(wire), &used), -ENOMEM);
    failalloc_arm(&fe.alloc, 0);
    mesh_grpc_deframer_fini(&d);
}

static int hdr(struct mesh_grpc_status *st, const char *name, const char *value)
{
    return mesh_grpc_status_on_header(st, (const uint8_t *)name, strlen(name), (const uint8_t *)value, strlen(value));
}

static void test_grpc_status_from_trailers(void **state)
{
    struct mesh_grpc_status st;

    (void)state;
    mesh_grpc_status_init(&st);
    assert_false(st.have_status);
    assert_int_equal(hdr(&st, "content-type", "application/grpc"), 0);
    assert_false(st.have_status);
    assert_int_equal(hdr(&st, "grpc-status", "16"), 0);
    assert_int_equal(hdr(&st, "grpc-message", "bad%20token%3A%20expired%zz%"), 0);
    assert_true(st.have_status);
    assert_int_equal(st.code, MESH_GRPC_UNAUTHENTICATED);
    assert_string_equal(st.message, "bad token: expired%zz%");
    assert_string_equal(mesh_grpc_code_name(st.code), "UNAUTHENTICATED");
    assert_string_equal(mesh_grpc_code_name(99), "UNKNOWN_CODE");

    mesh_grpc_status_init(&st);
    assert_int_equal(hdr(&st, "grpc-status", "1x"), -EPROTO);
    assert_int_equal(hdr(&st, "grpc-status", ""), -EPROTO);
    assert_false(st.have_status);
    assert_int_equal(hdr(&st, "grpc-status", "0"), 0);
    assert_int_equal(st.code, MESH_GRPC_OK);
}

static void test_grpc_status_message_truncated(void **state)
{
    struct mesh_grpc_status st;
    char big[1000];

    (void)state;
    memset(big, 'm', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    mesh_grpc_status_init(&st);
    assert_int_equal(hdr(&st, "grpc-message", big), 0);
    assert_int_equal(strlen(st.message), MESH_GRPC_MESSAGE_MAX_BYTES - 1);
    mesh_grpc_status_set(&st, MESH_GRPC_INTERNAL, big);
    assert_int_equal(strlen(st.message), MESH_GRPC_MESSAGE_MAX_BYTES - 1);
    assert_true(st.have_status);
}

static void test_grpc_code_from_http(void **state)
{
    (void)state;
    assert_int_equal(mesh_grpc_code_from_http(400), MESH_GRPC_INTERNAL);
    assert_int_equal(mesh_grpc_code_from_http(401), MESH_GRPC_UNAUTHENTICATED);
    assert_int_equal(mesh_grpc_code_from_http(403), MESH_GRPC_PERMISSION_DENIED);
    assert_int_equal(mesh_grpc_code_from_http(404), MESH_GRPC_UNIMPLEMENTED);
    assert_int_equal(mesh_grpc_code_from_http(503), MESH_GRPC_UNAVAILABLE);
    assert_int_equal(mesh_grpc_code_from_http(418), MESH_GRPC_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_grpc_frame_header_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_frame_append_respects_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_deframer_one_byte_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_deframer_arbitrary_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_deframer_holds_ready_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_deframer_rejects_compressed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_deframer_rejects_oversized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_deframer_partial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_deframer_nomem, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_status_from_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_status_message_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_code_from_http, setup, teardown),
    };
    return cmocka_run_group_tests_name("mesh_grpc", tests, NULL, NULL);
}
