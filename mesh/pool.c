/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/pool.c - outbound HBONE connection pool (see pool.h for the invariants). */
#include <errno.h>
#include <string.h>

#include "mesh/pool.h"

#define POOL_DEFAULT_CONNECT_TIMEOUT_NS (10ull * 1000000000ull)

struct mesh_pool_conn {
    struct mesh_pool_conn *next;
    struct mesh_pool *pool;
    struct mesh_pool_key key;
    struct mesh_hconn *h;
    struct mesh_tls_ctx *ctx;
    struct mesh_pool_waiter *waiters; /* FIFO */
    uint32_t active;
    uint64_t idle_since;
    bool ready;
    bool retired;
    bool draining; /* its TLS ctx was superseded: serve the waiters already queued, then retire */
    bool dead;
    bool freeing;
    struct mesh_sched_item free_item;
};

struct mesh_pool {
    const struct mesh_env *env;
    struct mesh_sched *sched;
    const struct mesh_conn_ops *ops;
    void *backend;
    struct mesh_pool_opts opts;
    struct mesh_pool_conn *conns;
    struct mesh_pool_stats stats;
};

static bool pool_addr_eq(const struct mesh_addr *a, const struct mesh_addr *b, bool with_port)
{
    if (a->family != b->family || (with_port && a->port != b->port))
        return false;
    return memcmp(a->ip.v6, b->ip.v6, a->family == MESH_ADDR_V4 ? 4 : 16) == 0;
}

bool mesh_pool_key_eq(const struct mesh_pool_key *a, const struct mesh_pool_key *b)
{
    if (!mesh_spiffe_eq(&a->src_id, &b->src_id) || a->n_expected != b->n_expected)
        return false;
    for (size_t i = 0; i < a->n_expected; i++)
        if (!mesh_spiffe_eq(&a->expected[i], &b->expected[i]))
            return false;
    return pool_addr_eq(&a->dst, &b->dst, true) && pool_addr_eq(&a->src_ip, &b->src_ip, false);
}

static uint32_t pool_limit(const struct mesh_pool_conn *pc)
{
    uint32_t lim = pc->pool->opts.max_streams;
    uint32_t peer = mesh_hconn_peer_max_streams(pc->h);
    if (peer > 0 && peer < lim)
        lim = peer;
    return lim;
}

/* Reserve a slot on a ready connection; retire it once full. */
static void pool_take_slot(struct mesh_pool_conn *pc)
{
    pc->active++;
    if (pc->active >= pool_limit(pc))
        pc->retired = true;
}

static void pool_waiter_push(struct mesh_pool_conn *pc, struct mesh_pool_waiter *w)
{
    w->next = NULL;
    w->pc = pc;
    struct mesh_pool_waiter **pp = &pc->waiters;
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = w;
}

static struct mesh_pool_waiter *pool_waiter_pop(struct mesh_pool_conn *pc)
{
    struct mesh_pool_waiter *w = pc->waiters;
    if (w != NULL) {
        pc->waiters = w->next;
        w->next = NULL;
        w->pc = NULL;
    }
    return w;
}

static void pool_on_free_item(struct mesh_sched_item *it)
{
    struct mesh_pool_conn *pc = (struct mesh_pool_conn *)(void *)((char *)it - offsetof(struct mesh_pool_conn, free_item));
    struct mesh_pool *pool = pc->pool;

    for (struct mesh_pool_conn **pp = &pool->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == pc) {
            *pp = pc->next;
            break;
        }
    }
    mesh_hconn_free(pc->h);
    if (pool->opts.put_ctx != NULL)
        pool->opts.put_ctx(pool->opts.ctx_u, pc->ctx);
    pool->stats.conns--;
    mesh_env_free(pool->env, pc);
}

static void pool_maybe_free(struct mesh_pool_conn *pc)
{
    if (pc->dead && pc->active == 0 && pc->waiters == NULL && !pc->freeing) {
        pc->freeing = true;
        mesh_sched_post(pc->pool->sched, &pc->free_item);
    }
}

static int pool_open(struct mesh_pool *pool, const struct mesh_pool_key *key, struct mesh_pool_conn **out);

/* ---- hconn owner upcalls ---- */

static void pool_on_ready(void *u, struct mesh_hconn *h)
{
    struct mesh_pool_conn *pc = u;
    (void)h;
    pc->ready = true;
    pc->idle_since = mesh_env_now(pc->pool->env);
    while (pc->waiters != NULL && !pc->retired && !pc->dead) {
        struct mesh_pool_waiter *w = pool_waiter_pop(pc);
        pool_take_slot(pc);
        w->fn(w, pc, 0);
    }
    if (pc->draining)
        pc->retired = true;
    if (pc->waiters != NULL && !pc->dead) {
        /* more waiters than this connection can carry: one new setup for the rest (single flight again) */
        struct mesh_pool_conn *next = NULL;
        int rc = pool_open(pc->pool, &pc->key, &next);
        if (rc == 0) {
            while (pc->waiters != NULL)
                pool_waiter_push(next, pool_waiter_pop(pc));
        } else {
            while (pc->waiters != NULL) {
                struct mesh_pool_waiter *w = pool_waiter_pop(pc);
                w->fn(w, NULL, rc);
            }
        }
    }
    /* retired before it carried anything (drained during setup, every waiter gone): nothing will release it */
    if (pc->retired && pc->active == 0 && !pc->dead)
        mesh_hconn_shutdown(pc->h);
    pool_maybe_free(pc);
}

static void pool_on_dead(void *u, struct mesh_hconn *h, int err)
{
    struct mesh_pool_conn *pc = u;
    (void)h;
    pc->dead = true;
    pc->retired = true;
    if (!pc->ready) {
        pc->pool->stats.failures++;
        if (err == 0)
            err = -ECONNRESET;
    }
    while (pc->waiters != NULL) {
        struct mesh_pool_waiter *w = pool_waiter_pop(pc);
        w->fn(w, NULL, err != 0 ? err : MESH_ERR_DRAINED);
    }
    pool_maybe_free(pc);
}

static void pool_on_goaway(void *u, struct mesh_hconn *h)
{
    struct mesh_pool_conn *pc = u;
    (void)h;
    pc->retired = true;
}

static const struct mesh_hconn_owner_cb pool_hconn_cb = {
    .on_ready = pool_on_ready,
    .on_request = NULL,
    .on_dead = pool_on_dead,
    .on_goaway = pool_on_goaway,
};

/* ---- API ---- */

struct mesh_pool *mesh_pool_new(const struct mesh_env *env, struct mesh_sched *sched, const struct mesh_conn_ops *ops,
                                void *backend, const struct mesh_pool_opts *opts)
{
    struct mesh_pool *pool = mesh_env_calloc(env, sizeof(*pool));
    if (pool == NULL)
        return NULL;
    pool->env = env;
    pool->sched = sched;
    pool->ops = ops;
    pool->backend = backend;
    pool->opts = *opts;
    if (pool->opts.max_streams == 0)
        pool->opts.max_streams = MESH_POOL_DEFAULT_MAX_STREAMS;
    if (pool->opts.idle_ns == 0)
        pool->opts.idle_ns = MESH_POOL_DEFAULT_IDLE_NS;
    if (pool->opts.connect_timeout_ns == 0)
        pool->opts.connect_timeout_ns = POOL_DEFAULT_CONNECT_TIMEOUT_NS;
    return pool;
}

void mesh_pool_free(struct mesh_pool *pool)
{
    if (pool == NULL)
        return;
    while (pool->conns != NULL) {
        struct mesh_pool_conn *pc = pool->conns;
        while (pc->waiters != NULL)
            (void)pool_waiter_pop(pc);
        mesh_sched_cancel(pool->sched, &pc->free_item);
        pc->freeing = true;
        pool_on_free_item(&pc->free_item);
    }
    mesh_env_free(pool->env, pool);
}

static int pool_open(struct mesh_pool *pool, const struct mesh_pool_key *key, struct mesh_pool_conn **out)
{
    int err = 0;
    struct mesh_pool_conn *pc = mesh_env_calloc(pool->env, sizeof(*pc));
    if (pc == NULL)
        return -ENOMEM;
    pc->pool = pool;
    pc->key = *key;
    mesh_sched_item_init(&pc->free_item, pool_on_free_item);
    pc->ctx = pool->opts.get_ctx != NULL ? pool->opts.get_ctx(pool->opts.ctx_u, &key->src_id) : NULL;
    if (pc->ctx == NULL) {
        mesh_env_free(pool->env, pc);
        return MESH_ERR_CONFIG;
    }
    uint64_t deadline = mesh_env_now(pool->env) + pool->opts.connect_timeout_ns;
    pc->h = mesh_hconn_new(pool->env, pool->sched, pool->ops, MESH_HBONE_CLIENT, pc->ctx, key->expected,
                           key->n_expected, deadline, &pool_hconn_cb, pc, &err);
    if (pc->h == NULL)
        goto fail;
    struct mesh_conn *c = NULL;
    /* in-pod semantics: the tunnel leaves from the source pod's IP, so the far side sees it as the peer address */
    struct mesh_addr src = key->src_ip;
    src.port = 0;
    err = pool->ops->dial(pool->backend, src.family != 0 ? &src : NULL, &key->dst, &mesh_hconn_conn_cb, pc->h, &c);
    if (err != 0) {
        mesh_hconn_free(pc->h);
        goto fail;
    }
    mesh_hconn_attach(pc->h, c, false);
    pc->next = pool->conns;
    pool->conns = pc;
    pool->stats.conns++;
    pool->stats.handshakes++;
    *out = pc;
    return 0;
fail:
    if (pool->opts.put_ctx != NULL)
        pool->opts.put_ctx(pool->opts.ctx_u, pc->ctx);
    mesh_env_free(pool->env, pc);
    return err != 0 ? err : -ENOMEM;
}

int mesh_pool_checkout(struct mesh_pool *pool, const struct mesh_pool_key *key, struct mesh_pool_waiter *w,
                       struct mesh_pool_conn **out)
{
    for (struct mesh_pool_conn *pc = pool->conns; pc != NULL; pc = pc->next) {
        if (pc->retired || pc->draining || pc->dead || !mesh_pool_key_eq(&pc->key, key))
            continue;
        if (pc->ready) {
            if (!mesh_hconn_can_open(pc->h) || pc->active >= pool_limit(pc))
                continue;
            pool_take_slot(pc);
            pool->stats.reused++;
            *out = pc;
            return 1;
        }
        /* single flight: wait for the setup in progress */
        pool_waiter_push(pc, w);
        return 0;
    }
    struct mesh_pool_conn *pc = NULL;
    int rc = pool_open(pool, key, &pc);
    if (rc != 0)
        return rc;
    pool_waiter_push(pc, w);
    return 0;
}

void mesh_pool_cancel(struct mesh_pool *pool, struct mesh_pool_waiter *w)
{
    (void)pool;
    struct mesh_pool_conn *pc = w->pc;
    if (pc == NULL)
        return;
    for (struct mesh_pool_waiter **pp = &pc->waiters; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    w->pc = NULL;
    w->next = NULL;
    pool_maybe_free(pc);
}

void mesh_pool_release(struct mesh_pool *pool, struct mesh_pool_conn *pc)
{
    if (pc->active > 0)
        pc->active--;
    if (pc->active == 0) {
        pc->idle_since = mesh_env_now(pool->env);
        /* a full connection left the pool for good: close it once its last stream ended */
        if (pc->retired && !pc->dead && pc->ready)
            mesh_hconn_shutdown(pc->h);
    }
    pool_maybe_free(pc);
}

size_t mesh_pool_drain_ctx(struct mesh_pool *pool, const struct mesh_tls_ctx *ctx)
{
    size_t n = 0;

    for (struct mesh_pool_conn *pc = pool->conns; pc != NULL; pc = pc->next) {
        /* a retired one already takes no checkouts and closes after its last stream */
        if (pc->ctx != ctx || pc->dead || pc->draining || pc->retired)
            continue;
        pc->draining = true;
        n++;
        pool->stats.drained++;
        if (!pc->ready)
            continue; /* pool_on_ready serves the queued waiters, then retires it */
        pc->retired = true;
        /* idle: GOAWAY now; otherwise mesh_pool_release does it after the last stream */
        if (pc->active == 0)
            mesh_hconn_shutdown(pc->h);
    }
    return n;
}

struct mesh_hconn *mesh_pool_conn_hconn(struct mesh_pool_conn *pc)
{
    return pc->h;
}

const struct mesh_spiffe_id *mesh_pool_conn_peer(const struct mesh_pool_conn *pc)
{
    return mesh_hconn_peer_identity(pc->h);
}

uint64_t mesh_pool_next_deadline(const struct mesh_pool *pool)
{
    uint64_t d = MESH_POOL_NO_DEADLINE;
    for (const struct mesh_pool_conn *pc = pool->conns; pc != NULL; pc = pc->next) {
        if (pc->dead)
            continue;
        uint64_t t = mesh_hconn_next_deadline(pc->h);
        if (t < d)
            d = t;
        if (pc->ready && pc->active == 0 && !pc->retired) {
            t = pc->idle_since + pool->opts.idle_ns;
            if (t < d)
                d = t;
        }
    }
    return d;
}

void mesh_pool_on_deadline(struct mesh_pool *pool, uint64_t now_ns)
{
    for (struct mesh_pool_conn *pc = pool->conns; pc != NULL; pc = pc->next) {
        if (pc->dead)
            continue;
        mesh_hconn_on_deadline(pc->h, now_ns);
        if (!pc->dead && pc->ready && pc->active == 0 && !pc->retired && now_ns >= pc->idle_since + pool->opts.idle_ns) {
            pc->retired = true;
            pool->stats.idle_closed++;
            mesh_hconn_shutdown(pc->h);
        }
    }
}

const struct mesh_pool_stats *mesh_pool_stats(const struct mesh_pool *pool)
{
    return &pool->stats;
}
