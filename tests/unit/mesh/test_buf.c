/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for mesh/buf.c. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mesh/buf.h"
#include "tests/fakes/fake_clock.h"

static struct fake_env fe;

static int setup(void **state)
{
    (void)state;
    fake_env_init(&fe, 0, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(fe.alloc.live, 0);
    return 0;
}

static void test_buf_init_allocates_nothing(void **state)
{
    struct mesh_buf b;

    (void)state;
    mesh_buf_init(&b, &fe.env, 0);
    assert_int_equal(fe.alloc.live, 0);
    assert_null(mesh_buf_data(&b));
    assert_int_equal(mesh_buf_len(&b), 0);
    assert_int_equal(b.max_bytes, MESH_BUF_DEFAULT_MAX_BYTES);
    mesh_buf_fini(&b);
}

static void test_buf_starts_at_1k_and_doubles(void **state)
{
    uint8_t chunk[700];
    struct mesh_buf b;

    (void)state;
    memset(chunk, 'x', sizeof(chunk));
    mesh_buf_init(&b, &fe.env, 0);
    assert_int_equal(mesh_buf_append(&b, "a", 1), 0);
    assert_int_equal(b.cap, MESH_BUF_INITIAL_BYTES);
    assert_int_equal(fe.alloc.live, 1);
    assert_int_equal(mesh_buf_append(&b, chunk, sizeof(chunk)), 0);
    assert_int_equal(b.cap, 1024);
    assert_int_equal(mesh_buf_append(&b, chunk, sizeof(chunk)), 0);
    assert_int_equal(b.cap, 2048);
    assert_int_equal(mesh_buf_append(&b, chunk, sizeof(chunk)), 0);
    assert_int_equal(b.cap, 4096);
    assert_int_equal(mesh_buf_len(&b), 1 + 3 * sizeof(chunk));
    assert_int_equal(mesh_buf_data(&b)[0], 'a');
    assert_int_equal(mesh_buf_data(&b)[1], 'x');
    mesh_buf_fini(&b);
    assert_int_equal(fe.alloc.live, 0);
}

static void test_buf_cap_is_enforced(void **state)
{
    uint8_t big[3000];
    struct mesh_buf b;

    (void)state;
    memset(big, 7, sizeof(big));
    mesh_buf_init(&b, &fe.env, 2500);
    assert_int_equal(mesh_buf_append(&b, big, 2000), 0);
    assert_int_equal(mesh_buf_append(&b, big, 501), -ENOBUFS);
    assert_int_equal(mesh_buf_len(&b), 2000);
    assert_int_equal(mesh_buf_append(&b, big, 500), 0);
    assert_int_equal(b.cap, 2500);
    assert_int_equal(mesh_buf_room(&b), 0);
    assert_int_equal(mesh_buf_append(&b, big, 1), -ENOBUFS);
    mesh_buf_fini(&b);

    mesh_buf_init(&b, &fe.env, 100); /* cap below the initial size */
    assert_int_equal(mesh_buf_append(&b, big, 100), 0);
    assert_int_equal(b.cap, 100);
    assert_int_equal(mesh_buf_append(&b, big, 3000), -ENOBUFS);
    mesh_buf_fini(&b);
}

static void test_buf_consume_and_compact(void **state)
{
    struct mesh_buf b;
    uint8_t data[1024];

    (void)state;
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)i;
    mesh_buf_init(&b, &fe.env, 1024);
    assert_int_equal(mesh_buf_append(&b, data, 1000), 0);
    mesh_buf_consume(&b, 900);
    assert_int_equal(mesh_buf_len(&b), 100);
    assert_int_equal(mesh_buf_data(&b)[0], (uint8_t)900);
    /* 100 live + 900 new fits the 1 KiB cap only after sliding the live bytes to the front */
    assert_int_equal(mesh_buf_append(&b, data, 900), 0);
    assert_int_equal(b.cap, 1024);
    assert_int_equal(mesh_buf_len(&b), 1000);
    assert_memory_equal(mesh_buf_data(&b), data + 900, 100);
    assert_memory_equal(mesh_buf_data(&b) + 100, data, 900);
    mesh_buf_consume(&b, 5000); /* clamped */
    assert_int_equal(mesh_buf_len(&b), 0);
    assert_int_equal(b.off, 0);
    mesh_buf_fini(&b);
}

static void test_buf_reserve_commit(void **state)
{
    struct mesh_buf b;
    uint8_t *p;

    (void)state;
    mesh_buf_init(&b, &fe.env, 0);
    assert_int_equal(mesh_buf_reserve(&b, 5000, &p), 0);
    assert_true(b.cap >= 5000);
    memcpy(p, "hello", 5);
    mesh_buf_commit(&b, 5);
    assert_int_equal(mesh_buf_len(&b), 5);
    assert_memory_equal(mesh_buf_data(&b), "hello", 5);
    assert_int_equal(mesh_buf_reserve(&b, 0, NULL), 0);
    mesh_buf_reset(&b);
    assert_int_equal(mesh_buf_len(&b), 0);
    assert_non_null(mesh_buf_data(&b));
    mesh_buf_fini(&b);
}

static void test_buf_alloc_failure_leaves_buffer_intact(void **state)
{
    uint8_t chunk[800];
    struct mesh_buf b;

    (void)state;
    memset(chunk, 3, sizeof(chunk));
    mesh_buf_init(&b, &fe.env, 0);
    failalloc_arm(&fe.alloc, 1);
    assert_int_equal(mesh_buf_append(&b, chunk, 10), -ENOMEM);
    assert_int_equal(mesh_buf_len(&b), 0);
    assert_int_equal(mesh_buf_append(&b, chunk, 800), 0);
    failalloc_arm(&fe.alloc, 1);
    assert_int_equal(mesh_buf_append(&b, chunk, 800), -ENOMEM); /* growth 1024 -> 2048 fails */
    assert_int_equal(mesh_buf_len(&b), 800);
    assert_memory_equal(mesh_buf_data(&b), chunk, 800);
    failalloc_arm(&fe.alloc, 0);
    assert_int_equal(mesh_buf_append(&b, chunk, 800), 0);
    assert_int_equal(mesh_buf_len(&b), 1600);
    mesh_buf_fini(&b);
    mesh_buf_fini(&b); /* idempotent */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_buf_init_allocates_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buf_starts_at_1k_and_doubles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buf_cap_is_enforced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buf_consume_and_compact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buf_reserve_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buf_alloc_failure_leaves_buffer_intact, setup, teardown),
    };
    return cmocka_run_group_tests_name("mesh_buf", tests, NULL, NULL);
}
