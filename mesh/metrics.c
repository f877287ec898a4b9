/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/metrics.c - istio_tcp_* counter registry (see metrics.h for the invariants). */
#include <errno.h>
#include <string.h>

#include "mesh/metrics.h"

const char *const mesh_metrics_label_names[MESH_METRICS_LABEL_COUNT] = {
#define MESH_METRICS_X(e, s) s,
    MESH_METRICS_LABELS(MESH_METRICS_X)
#undef MESH_METRICS_X
};

struct metrics_entry {
    struct mesh_metrics_series s;
    uint64_t hash;
};

struct mesh_metrics {
    const struct mesh_env *env;
    struct metrics_entry *v;
    size_t n;
    size_t cap;
};

static const char *metrics_value(const char *v)
{
    return v == NULL || v[0] == '\0' ? "unknown" : v;
}

static uint64_t metrics_hash(const char *const labels[MESH_METRICS_LABEL_COUNT])
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < MESH_METRICS_LABEL_COUNT; i++) {
        for (const unsigned char *p = (const unsigned char *)metrics_value(labels[i]); *p != '\0'; p++)
            h = (h ^ *p) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull;
    }
    return h;
}

struct mesh_metrics *mesh_metrics_new(const struct mesh_env *env)
{
    struct mesh_metrics *m = mesh_env_calloc(env, sizeof(*m));
    if (m != NULL)
        m->env = env;
    return m;
}

void mesh_metrics_free(struct mesh_metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++)
        for (int j = 0; j < MESH_METRICS_LABEL_COUNT; j++)
            mesh_env_free(m->env, (void *)(uintptr_t)m->v[i].s.labels[j]);
    mesh_env_free(m->env, m->v);
    mesh_env_free(m->env, m);
}

struct mesh_metrics_series *mesh_metrics_series_get(struct mesh_metrics *m,
                                                    const char *const labels[MESH_METRICS_LABEL_COUNT])
{
    uint64_t h = metrics_hash(labels);

    for (size_t i = 0; i < m->n; i++) {
        if (m->v[i].hash != h)
            continue;
        int j = 0;
        while (j < MESH_METRICS_LABEL_COUNT && strcmp(m->v[i].s.labels[j], metrics_value(labels[j])) == 0)
            j++;
        if (j == MESH_METRICS_LABEL_COUNT)
            return &m->v[i].s;
    }
    if (m->n == m->cap) {
        size_t cap = m->cap == 0 ? 16 : m->cap * 2;
        struct metrics_entry *v = mesh_env_realloc(m->env, m->v, cap * sizeof(*v));
        if (v == NULL)
            return NULL;
        m->v = v;
        m->cap = cap;
    }
    struct metrics_entry *e = &m->v[m->n];
    memset(e, 0, sizeof(*e));
    for (int j = 0; j < MESH_METRICS_LABEL_COUNT; j++) {
        const char *val = metrics_value(labels[j]);
        size_t len = strlen(val) + 1;
        char *d = mesh_env_alloc(m->env, len);
        if (d == NULL) {
            for (int k = 0; k < j; k++)
                mesh_env_free(m->env, (void *)(uintptr_t)e->s.labels[k]);
            return NULL;
        }
        memcpy(d, val, len);
        e->s.labels[j] = d;
    }
    e->hash = h;
    m->n++;
    return &e->s;
}

size_t mesh_metrics_count(const struct mesh_metrics *m)
{
    return m != NULL ? m->n : 0;
}

const struct mesh_metrics_series *mesh_metrics_at(const struct mesh_metrics *m, size_t i)
{
    return m != NULL && i < m->n ? &m->v[i].s : NULL;
}

int mesh_metrics_merge(struct mesh_metrics *dst, const struct mesh_metrics *src)
{
    for (size_t i = 0; i < src->n; i++) {
        const struct mesh_metrics_series *s = &src->v[i].s;
        struct mesh_metrics_series *d = mesh_metrics_series_get(dst, s->labels);
        if (d == NULL)
            return -ENOMEM;
        d->opened += s->opened;
        d->closed += s->closed;
        d->failed += s->failed;
        d->sent_bytes += s->sent_bytes;
        d->received_bytes += s->received_bytes;
    }
    return 0;
}

struct mesh_metrics_series mesh_metrics_sum(const struct mesh_metrics *m, enum mesh_metrics_label label,
                                            const char *value)
{
    struct mesh_metrics_series sum;

    memset(&sum, 0, sizeof(sum));
    for (size_t i = 0; m != NULL && i < m->n; i++) {
        const struct mesh_metrics_series *s = &m->v[i].s;
        if (value != NULL && strcmp(s->labels[label], value) != 0)
            continue;
        sum.opened += s->opened;
        sum.closed += s->closed;
        sum.failed += s->failed;
        sum.sent_bytes += s->sent_bytes;
        sum.received_bytes += s->received_bytes;
    }
    return sum;
}
