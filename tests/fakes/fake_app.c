/* SPDX-License-Identifier: Apache-2.0 */
/* tests/fakes/fake_app.c - an application endpoint on a fake_conn (see fake_app.h). */
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "tests/fakes/fake_app.h"
#include "tests/fakes/fake_conn.h"

void fake_app_push(struct fake_app *a)
{
    while (a->c != NULL && a->out_off < a->out_len) {
        struct iovec v = {.iov_base = (void *)(uintptr_t)(a->out + a->out_off), .iov_len = a->out_len - a->out_off};
        ssize_t w = fake_conn_ops.write(a->c, &v, 1);
        if (w <= 0)
            return;
        a->out_off += (size_t)w;
    }
    if (a->c != NULL && a->out_off == a->out_len && a->fin_after_write && !a->fin_sent) {
        a->fin_sent = true;
        fake_conn_ops.shutdown_wr(a->c);
    }
}

static size_t app_on_data(void *u, const uint8_t *p, size_t n)
{
    struct fake_app *a = u;

    if (a->paused)
        return 0;
    if (a->in_len + n > a->in_cap) {
        a->in_cap = (a->in_len + n) * 2;
        a->in = realloc(a->in, a->in_cap);
    }
    memcpy(a->in + a->in_len, p, n);
    a->in_len += n;
    return n;
}

static void app_on_writable(void *u)
{
    struct fake_app *a = u;

    a->connected = true;
    a->n_writable++;
    fake_app_push(a);
}

static void app_on_peer_fin(void *u)
{
    ((struct fake_app *)u)->n_fin++;
}

static void app_on_closed(void *u, int err)
{
    struct fake_app *a = u;

    a->n_closed++;
    a->close_err = err;
    a->c = NULL;
}

const struct mesh_conn_cb fake_app_cb = {app_on_data, app_on_writable, app_on_peer_fin, app_on_closed};
