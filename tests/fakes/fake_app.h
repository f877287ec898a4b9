/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/fakes/fake_app.h - an application endpoint on a fake_conn (tests/fakes/fake_conn.h): writes a payload (and
 * a FIN after it when asked), records what it reads and every upcall. Shared by the relay and proxy tests.
 */
#ifndef ZW_FAKE_APP_H
#define ZW_FAKE_APP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/conn.h"
#include "mesh/workload.h"

struct fake_app {
    struct mesh_conn *c; /* NULL once closed */
    const uint8_t *out;  /* to write, out_len bytes; out_off written so far */
    size_t out_len, out_off;
    bool fin_after_write, fin_sent;
    uint8_t *in; /* what was read (malloc'd; the test frees it) */
    size_t in_len, in_cap;
    bool paused; /* take nothing */
    int n_fin, n_closed, close_err, n_writable;
    bool connected;
    struct mesh_addr peer;  /* server apps: the source address they saw */
    struct mesh_addr local; /* server apps: the address dialled */
};

/* Write what is left of out (then the FIN when fin_after_write), as far as the connection takes it. */
void fake_app_push(struct fake_app *a);

/* Upcalls with u = the struct fake_app: on_writable marks it connected and pushes. */
extern const struct mesh_conn_cb fake_app_cb;

#endif
