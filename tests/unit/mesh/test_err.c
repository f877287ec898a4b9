/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for mesh/err.c. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mesh/err.h"

static const int all_errs[] = {
#define MESH_ERR_X(name, cls, idx, fatal, reason, text) MESH_ERR_##name,
#include "mesh/err.def"
#undef MESH_ERR_X
};
#define N_ERRS (sizeof(all_errs) / sizeof(all_errs[0]))

static void test_err_codes_unique_positive_and_classed(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ERRS; i++) {
        int c = mesh_err_class(all_errs[i]);
        assert_true(all_errs[i] > 0);
        assert_true(c == MESH_ERR_CLASS_PEER || c == MESH_ERR_CLASS_LOCAL || c == MESH_ERR_CLASS_POLICY);
        assert_true(mesh_err_is_valid(all_errs[i]));
        for (size_t j = i + 1; j < N_ERRS; j++)
            assert_int_not_equal(all_errs[i], all_errs[j]);
    }
    assert_int_equal(mesh_err_class(MESH_ERR_TLS_ALERT), MESH_ERR_CLASS_PEER);
    assert_int_equal(mesh_err_class(MESH_ERR_NOMEM), MESH_ERR_CLASS_LOCAL);
    assert_int_equal(mesh_err_class(MESH_ERR_DENIED), MESH_ERR_CLASS_POLICY);
    assert_int_equal(mesh_err_class(MESH_OK), 0);
    assert_int_equal(mesh_err_class(-ENOMEM), 0);
    assert_false(mesh_err_is_valid(MESH_OK));
    assert_false(mesh_err_is_valid(-EINVAL));
}

static void test_err_fatal(void **state)
{
    (void)state;
    assert_false(mesh_err_is_fatal(MESH_OK));
    assert_true(mesh_err_is_fatal(MESH_ERR_TLS_ALERT));
    assert_true(mesh_err_is_fatal(MESH_ERR_H2_GOAWAY));
    assert_true(mesh_err_is_fatal(MESH_ERR_NOMEM));
    assert_false(mesh_err_is_fatal(MESH_ERR_H2_STREAM_RESET));
    assert_false(mesh_err_is_fatal(MESH_ERR_DENIED));
    assert_false(mesh_err_is_fatal(MESH_ERR_HBONE_STATUS));
    assert_true(mesh_err_is_fatal(-ENOMEM));
    assert_true(mesh_err_is_fatal(0x7777));
}

static void test_err_reason_vocabulary(void **state)
{
    static const char *const words[] = {"refused", "timeout", "unroutable", "denied", "tls", "h2", "internal"};

    (void)state;
    for (int r = MESH_REASON_REFUSED; r < MESH_REASON_COUNT; r++)
        assert_string_equal(mesh_reason_str((enum mesh_reason)r), words[r - 1]);
    assert_string_equal(mesh_reason_str(MESH_REASON_NONE), "");
    assert_string_equal(mesh_reason_str((enum mesh_reason)99), "internal");
    assert_int_equal(mesh_err_reason(MESH_ERR_TLS_CERT_EXPIRED), MESH_REASON_TLS);
    assert_int_equal(mesh_err_reason(MESH_ERR_HANDSHAKE_TIMEOUT), MESH_REASON_TIMEOUT);
    assert_int_equal(mesh_err_reason(MESH_ERR_H2_PROTOCOL), MESH_REASON_H2);
    assert_int_equal(mesh_err_reason(MESH_ERR_DENIED), MESH_REASON_DENIED);
    assert_int_equal(mesh_err_reason(MESH_ERR_UNROUTABLE), MESH_REASON_UNROUTABLE);
    assert_int_equal(mesh_err_reason(MESH_ERR_UPSTREAM_REFUSED), MESH_REASON_REFUSED);
    assert_int_equal(mesh_err_reason(MESH_ERR_NOMEM), MESH_REASON_INTERNAL);
    assert_int_equal(mesh_err_reason(MESH_OK), MESH_REASON_NONE);
    assert_int_equal(mesh_err_reason(-EIO), MESH_REASON_INTERNAL);
    /* every reason word is used by at least one error */
    for (int r = MESH_REASON_REFUSED; r < MESH_REASON_COUNT; r++) {
        bool used = false;
        for (size_t i = 0; i < N_ERRS; i++)
            used |= mesh_err_reason(all_errs[i]) == (enum mesh_reason)r;
        assert_true(used);
    }
}

static void test_err_strings(void **state)
{
    (void)state;
    assert_string_equal(mesh_err_name(MESH_ERR_TLS_ALPN), "MESH_ERR_TLS_ALPN");
    assert_string_equal(mesh_err_name(MESH_OK), "MESH_OK");
    assert_string_equal(mesh_err_name(12345), "MESH_ERR_UNKNOWN");
    assert_string_equal(mesh_err_str(12345), "unknown error");
    assert_string_equal(mesh_err_str(MESH_OK), "success");
    for (size_t i = 0; i < N_ERRS; i++) {
        assert_true(strncmp(mesh_err_name(all_errs[i]), "MESH_ERR_", 9) == 0);
        assert_true(strlen(mesh_err_str(all_errs[i])) > 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_codes_unique_positive_and_classed),
        cmocka_unit_test(test_err_fatal),
        cmocka_unit_test(test_err_reason_vocabulary),
        cmocka_unit_test(test_err_strings),
    };
    return cmocka_run_group_tests_name("mesh_err", tests, NULL, NULL);
}
