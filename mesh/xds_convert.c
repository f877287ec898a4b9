/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/xds_convert.c - xDS resources -> internal model (see xds_convert.h for the invariants).
 *
 * Storage: every accepted resource owns one arena (a list of env-allocated chunks) holding its xc_entry, its name,
 * aliases and every string and array its model points to. Workload and service records live in their entry and are
 * shared with the snapshots (mesh_workloads_new_shared / derive_shared). A replaced or removed one is retired to the
 * converter's pool, which frees it once no live snapshot was built while it existed (snapshots hold a ticket, the
 * pool's epoch when they were built; a record can only be in tickets after its commit and up to its retirement, so
 * a long-lived snapshot pins what it holds, not everything retired since). The frees run on the converter's thread,
 * at retirement and after each build, never on the threads that drop snapshots. The pool outlives the converter
 * while snapshots do. Between two builds the
 * converter lists the workloads added and the ones gone from the last snapshot, so that a build after a small
 * change derives the next snapshot from the last one instead of indexing everything again. Dense arrays, one per kind,
 * list what the next snapshot is built from: pointers to those records, and the policy models themselves (struct
 * mesh_authz_policy, compiled into a set of their own by mesh_authz_set_new). Removal swaps the last element into
 * the hole. Names and aliases are found through open-addressing hash maps (linear probing, backward-shift
 * deletion). stats.bytes counts what the converter holds, not what snapshots still pin.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "mesh/err.h"
#include "mesh/xds_convert.h"
#include "proto/authorization.pb-c.h"
#include "proto/workload.pb-c.h"

#define XC_MODULE "mesh.xds_convert"
#define XC_SMALL_CHUNK_BYTES 256
#define XC_MAP_MIN_CAP 64

enum xc_kind { XC_WORKLOAD = 0, XC_SERVICE = 1, XC_POLICY = 2, XC_KIND_COUNT = 3 };

struct xc_chunk {
    struct xc_chunk *next;
    size_t used;
    size_t cap;
    _Alignas(16) unsigned char data[];
};

struct xc_entry {
    struct xc_chunk *mem; /* the arena holding this entry and everything its model points to */
    bool in_snapshot;     /* XC_WORKLOAD: part of the last snapshot built */
    struct xc_entry *retired_next; /* in the pool once retired */
    uint64_t commit_epoch;  /* pool epoch when the record was made: only tickets above it may hold it */
    uint64_t retired_epoch; /* pool epoch at retirement: only tickets up to it may hold it */
    const char *name;
    const char *const *aliases;
    size_t n_aliases;
    uint64_t seq; /* apply order, newest wins address conflicts */
    uint32_t slot;
    uint8_t kind;
    union {
        struct mesh_workload w;
        struct mesh_service s;
    } rec; /* XC_WORKLOAD / XC_SERVICE: the record snapshots share */
};

struct xc_map_slot {
    const char *key; /* NULL: empty */
    struct xc_entry *e;
    uint32_t hash;
};

struct xc_map {
    struct xc_map_slot *slots;
    size_t cap; /* power of two */
    size_t n;
};

struct xc_dense {
    void *model; /* const void *[cap] pointing at entries' rec (workloads, services); mesh_authz_policy [cap] */
    struct xc_entry **entries;
    size_t n, cap, elem;
};

struct mesh_xds_authz_holder {
    atomic_long refs;
    struct mesh_authz_set *set;
};

/* Retired records wait here (a list through their entries) until no snapshot that may hold them is alive. Any
 * thread (snapshots are released where their last reference goes); a mutex guards it. */
struct xc_pool {
    pthread_mutex_t lock;
    const struct mesh_env *env;
    struct mesh_workloads_keeper keeper; /* u = the pool */
    long refs;                           /* the converter's + one per live ticket */
    uint64_t epoch;                      /* the last ticket handed out */
    uint64_t *live;                      /* tickets held */
    size_t unlisted;                     /* tickets held that could not be listed (out of memory) */
    size_t n_live, cap_live;
    struct xc_entry *retired;
};

/* The workload records added to / gone from the dense list since the last snapshot built. */
struct xc_changes {
    const struct mesh_workload **v;
    size_t n, cap;
};

struct mesh_xds_convert {
    const struct mesh_env *env;
    struct xc_pool *pool;
    struct xc_changes added, gone;
    bool services_changed; /* a service was added, replaced or removed: the next build indexes everything */
    bool changes_lost;     /* out of memory while listing a change: likewise */
    mesh_xds_publish_fn publish;
    void *u;
    ProtobufCAllocator pa;
    struct xc_map names[MESH_XDS_TYPE_COUNT];
    struct xc_map aliases; /* Address aliases */
    struct xc_dense dense[XC_KIND_COUNT];
    bool dirty_workloads, dirty_authz;
    bool last_build_derived; /* the workloads snapshot being built was derived from c->current */
    uint64_t seq;
    uint64_t generation;
    const struct mesh_xds_state *current;
    struct mesh_xds_convert_stats stats;
    /* the arena of the resource being converted */
    struct xc_chunk *cur;
    size_t next_chunk;
    bool oom;
    char reason[MESH_XDS_REASON_MAX_BYTES];
};

/* ====================================================================================================== */
/* arena and reasons                                                                                      */
/* ====================================================================================================== */

static void *xc_alloc(struct mesh_xds_convert *c, size_t n)
{
    struct xc_chunk *ch = c->cur;
    void *p;

    n = (n + 7) & ~(size_t)7;
    if (n == 0)
        n = 8;
    if (ch == NULL || ch->cap - ch->used < n) {
        size_t cap = n > c->next_chunk ? n : c->next_chunk;
        ch = mesh_env_alloc(c->env, sizeof(*ch) + cap);
        if (ch == NULL) {
            c->oom = true;
            return NULL;
        }
        ch->next = c->cur;
        ch->used = 0;
        ch->cap = cap;
        c->cur = ch;
        c->next_chunk = XC_SMALL_CHUNK_BYTES;
        c->stats.bytes += sizeof(*ch) + cap;
    }
    p = ch->data + ch->used;
    ch->used += n;
    return p;
}

static void xc_chunks_free(const struct mesh_env *env, struct xc_chunk *ch)
{
    while (ch != NULL) {
        struct xc_chunk *next = ch->next;
        mesh_env_free(env, ch);
        ch = next;
    }
}

static void xc_arena_uncount(struct mesh_xds_convert *c, const struct xc_chunk *ch)
{
    for (; ch != NULL; ch = ch->next)
        c->stats.bytes -= sizeof(*ch) + ch->cap;
}

/* An arena no snapshot has seen (a failed conversion): free it now. */
static void xc_arena_free(struct mesh_xds_convert *c, struct xc_chunk *ch)
{
    xc_arena_uncount(c, ch);
    xc_chunks_free(c->env, ch);
}

static struct xc_entry *xc_entry_of(const void *record)
{
    return (struct xc_entry *)(uintptr_t)((const char *)record - offsetof(struct xc_entry, rec));
}

/* ---- the pool of retired records ---- */

/* True when a live ticket lies in (after, upto]: a snapshot built while the record existed. Lock held. */
static bool xc_pool_held(const struct xc_pool *p, uint64_t after, uint64_t upto)
{
    if (p->unlisted > 0)
        return true;
    for (size_t i = 0; i < p->n_live; i++)
        if (p->live[i] > after && p->live[i] <= upto)
            return true;
    return false;
}

/* Free the retired records no live snapshot can hold. Control thread only (the converter's calls), so that the
 * threads dropping snapshots (DPDK workers among them) never pay for the frees. Lock held. */
static void xc_pool_collect(struct xc_pool *p)
{
    struct xc_entry **pe = &p->retired;

    while (*pe != NULL) {
        struct xc_entry *e = *pe;
        if (!xc_pool_held(p, e->commit_epoch, e->retired_epoch)) {
            *pe = e->retired_next;
            xc_chunks_free(p->env, e->mem); /* e lives in it */
        } else {
            pe = &e->retired_next;
        }
    }
}

static bool xc_grow(const struct mesh_env *env, void **v, size_t *cap, size_t n, size_t elem)
{
    size_t ncap;
    void *nv;

    if (n < *cap)
        return true;
    ncap = *cap == 0 ? 16 : *cap * 2;
    nv = mesh_env_realloc(env, *v, ncap * elem);
    if (nv == NULL)
        return false;
    *v = nv;
    *cap = ncap;
    return true;
}

static void xc_pool_destroy(struct xc_pool *p)
{
    while (p->retired != NULL) {
        struct xc_entry *e = p->retired;
        p->retired = e->retired_next;
        xc_chunks_free(p->env, e->mem);
    }
    mesh_env_free(p->env, p->live);
    pthread_mutex_destroy(&p->lock);
    mesh_env_free(p->env, p);
}

/* Drop a reference; the last one frees the pool. Lock not held. */
static void xc_pool_put(struct xc_pool *p)
{
    bool last;

    pthread_mutex_lock(&p->lock);
    last = --p->refs == 0;
    pthread_mutex_unlock(&p->lock);
    if (last)
        xc_pool_destroy(p);
}

static void xc_pool_hold(void *u, uint64_t *ticket)
{
    struct xc_pool *p = u;

    pthread_mutex_lock(&p->lock);
    *ticket = ++p->epoch;
    if (xc_grow(p->env, (void **)&p->live, &p->cap_live, p->n_live, sizeof(*p->live)))
        p->live[p->n_live++] = *ticket;
    else
        p->unlisted++; /* while one is out, nothing retired is freed */
    p->refs++;
    pthread_mutex_unlock(&p->lock);
}

static void xc_pool_release(void *u, uint64_t ticket)
{
    struct xc_pool *p = u;
    bool listed = false;

    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < p->n_live && !listed; i++) {
        if (p->live[i] == ticket) {
            p->live[i] = p->live[--p->n_live];
            listed = true;
        }
    }
    if (!listed && p->unlisted > 0)
        p->unlisted--;
    pthread_mutex_unlock(&p->lock); /* the frees wait for the converter's next collect */
    xc_pool_put(p);
}

/* The converter lets go of a record: freed now if no snapshot can hold it, later otherwise; and whatever retired
 * earlier is no longer held is freed too. */
static void xc_pool_retire(struct xc_pool *p, struct xc_entry *e)
{
    pthread_mutex_lock(&p->lock);
    e->retired_epoch = p->epoch;
    e->retired_next = p->retired;
    p->retired = e;
    xc_pool_collect(p);
    pthread_mutex_unlock(&p->lock);
}

/* The pool's epoch now (the last ticket handed out). */
static uint64_t xc_pool_epoch(struct xc_pool *p)
{
    uint64_t e;
    pthread_mutex_lock(&p->lock);
    e = p->epoch;
    pthread_mutex_unlock(&p->lock);
    return e;
}

/* Free what snapshots released since (called by the converter after each build). */
static void xc_pool_sweep(struct xc_pool *p)
{
    pthread_mutex_lock(&p->lock);
    xc_pool_collect(p);
    pthread_mutex_unlock(&p->lock);
}

static struct xc_pool *xc_pool_new(const struct mesh_env *env)
{
    struct xc_pool *p = mesh_env_calloc(env, sizeof(*p));

    if (p == NULL)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    p->env = env;
    p->refs = 1;
    p->keeper = (struct mesh_workloads_keeper){xc_pool_hold, xc_pool_release, p};
    return p;
}

/* ---- change lists ---- */

static void xc_changes_push(struct mesh_xds_convert *c, struct xc_changes *l, const struct mesh_workload *w)
{
    if (xc_grow(c->env, (void **)&l->v, &l->cap, l->n, sizeof(*l->v)))
        l->v[l->n++] = w;
    else
        c->changes_lost = true;
}

static void xc_changes_remove(struct xc_changes *l, const struct mesh_workload *w)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i] == w) {
            l->v[i] = l->v[--l->n];
            return;
        }
    }
}

static const char *xc_strdup(struct mesh_xds_convert *c, const char *s)
{
    size_t n;
    char *p;

    if (s == NULL || s[0] == '\0')
        return "";
    n = strlen(s) + 1;
    p = xc_alloc(c, n);
    if (p == NULL)
        return "";
    memcpy(p, s, n);
    return p;
}

static const char *const *xc_strvdup(struct mesh_xds_convert *c, char *const *v, size_t n)
{
    const char **out;

    if (n == 0)
        return NULL;
    out = xc_alloc(c, n * sizeof(*out));
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        out[i] = xc_strdup(c, v[i]);
    return out;
}

__attribute__((format(printf, 2, 3))) static const char *xc_fail(struct mesh_xds_convert *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->reason, sizeof(c->reason), fmt, ap);
    va_end(ap);
    return c->reason;
}

/* ====================================================================================================== */
/* maps                                                                                                   */
/* ====================================================================================================== */

static uint32_t xc_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return (uint32_t)(h ^ (h >> 32));
}

static struct xc_map_slot *xc_map_find_slot(const struct xc_map *m, const char *key, uint32_t h)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct xc_map_slot *s = &m->slots[i];
        if (s->key == NULL)
            return NULL;
        if (s->hash == h && strcmp(s->key, key) == 0)
            return s;
    }
}

static struct xc_entry *xc_map_get(const struct xc_map *m, const char *key)
{
    struct xc_map_slot *s = xc_map_find_slot(m, key, xc_hash(key));
    return s != NULL ? s->e : NULL;
}

static void xc_map_put_nogrow(struct xc_map *m, const char *key, uint32_t h, struct xc_entry *e)
{
    size_t i;

    for (i = h & (m->cap - 1); m->slots[i].key != NULL; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].hash == h && strcmp(m->slots[i].key, key) == 0) {
            m->slots[i].key = key;
            m->slots[i].e = e;
            return;
        }
    }
    m->slots[i] = (struct xc_map_slot){key, e, h};
    m->n++;
}

/* Insert or overwrite. Returns 0 or -ENOMEM (the map is unchanged). */
static int xc_map_put(struct mesh_xds_convert *c, struct xc_map *m, const char *key, struct xc_entry *e)
{
    uint32_t h = xc_hash(key);

    if ((m->n + 1) * 4 > m->cap * 3) {
        size_t ncap = m->cap == 0 ? XC_MAP_MIN_CAP : m->cap * 2;
        struct xc_map_slot *ns = mesh_env_calloc(c->env, ncap * sizeof(*ns));
        struct xc_map old = *m;

        if (ns == NULL)
            return -ENOMEM;
        m->slots = ns;
        m->cap = ncap;
        m->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.slots[i].key != NULL)
                xc_map_put_nogrow(m, old.slots[i].key, old.slots[i].hash, old.slots[i].e);
        mesh_env_free(c->env, old.slots);
        c->stats.bytes += (ncap - old.cap) * sizeof(*ns);
    }
    xc_map_put_nogrow(m, key, h, e);
    return 0;
}

/* Delete key when it maps to e (or to anything when e is NULL). */
static void xc_map_del(struct xc_map *m, const char *key, const struct xc_entry *e)
{
    struct xc_map_slot *s = xc_map_find_slot(m, key, xc_hash(key));
    size_t i, j, mask = m->cap - 1;

    if (s == NULL || (e != NULL && s->e != e))
        return;
    i = (size_t)(s - m->slots);
    for (j = i;;) {
        size_t k;
        j = (j + 1) & mask;
        if (m->slots[j].key == NULL)
            break;
        k = m->slots[j].hash & mask;
        /* slot j may stay when its home k lies cyclically in (i, j] */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
            continue;
        m->slots[i] = m->slots[j];
        i = j;
    }
    m->slots[i].key = NULL;
    m->slots[i].e = NULL;
    m->n--;
}

static void xc_map_fini(struct mesh_xds_convert *c, struct xc_map *m)
{
    mesh_env_free(c->env, m->slots);
    *m = (struct xc_map){0};
}

/* ====================================================================================================== */
/* dense model arrays                                                                                     */
/* ====================================================================================================== */

static void *xc_dense_at(struct xc_dense *d, size_t i)
{
    return (unsigned char *)d->model + i * d->elem;
}

/* The record or model at i: workloads and services are held by pointer, policies in place. */
static const void *xc_model_at(struct xc_dense *d, uint8_t kind, size_t i)
{
    return kind == XC_POLICY ? xc_dense_at(d, i) : ((const void *const *)d->model)[i];
}

static int xc_dense_reserve(struct mesh_xds_convert *c, struct xc_dense *d)
{
    size_t ncap;
    void *nm;
    struct xc_entry **ne;

    if (d->n < d->cap)
        return 0;
    ncap = d->cap == 0 ? 64 : d->cap * 2;
    nm = mesh_env_realloc(c->env, d->model, ncap * d->elem);
    if (nm == NULL)
        return -ENOMEM;
    d->model = nm;
    ne = mesh_env_realloc(c->env, d->entries, ncap * sizeof(*ne));
    if (ne == NULL)
        return -ENOMEM;
    d->entries = ne;
    c->stats.bytes += (ncap - d->cap) * (d->elem + sizeof(*ne));
    d->cap = ncap;
    return 0;
}

static void xc_mark_dirty(struct mesh_xds_convert *c, uint8_t kind)
{
    if (kind == XC_POLICY)
        c->dirty_authz = true;
    else
        c->dirty_workloads = true;
}

/* Unlink e from its map, the alias map and its dense array, and free its arena. */
static void xc_drop(struct mesh_xds_convert *c, struct xc_entry *e)
{
    struct xc_dense *d = &c->dense[e->kind];
    enum mesh_xds_type t = e->kind == XC_POLICY ? MESH_XDS_TYPE_AUTHORIZATION : MESH_XDS_TYPE_ADDRESS;
    size_t last = d->n - 1;

    xc_map_del(&c->names[t], e->name, e);
    for (size_t i = 0; i < e->n_aliases; i++)
        xc_map_del(&c->aliases, e->aliases[i], e);
    if (e->slot != last) {
        memcpy(xc_dense_at(d, e->slot), xc_dense_at(d, last), d->elem);
        d->entries[e->slot] = d->entries[last];
        d->entries[e->slot]->slot = e->slot;
    }
    d->n--;
    xc_mark_dirty(c, e->kind);
    if (e->kind == XC_POLICY) {
        xc_arena_free(c, e->mem); /* policies are compiled into their set: no snapshot points at them */
        return;
    }
    if (e->kind == XC_SERVICE)
        c->services_changed = true;
    else if (e->in_snapshot)
        xc_changes_push(c, &c->gone, &e->rec.w);
    else
        xc_changes_remove(&c->added, &e->rec.w);
    xc_arena_uncount(c, e->mem);
    xc_pool_retire(c->pool, e);
}

/* ====================================================================================================== */
/* field conversions                                                                                      */
/* ====================================================================================================== */

/* A bytes IP (4 or 16 octets) -> struct mesh_addr. Returns false when the length is wrong. */
static bool xc_ip(const ProtobufCBinaryData *b, struct mesh_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (b->len == 4) {
        out->family = MESH_ADDR_V4;
        memcpy(out->ip.v4, b->data, 4);
        return true;
    }
    if (b->len == 16) {
        out->family = MESH_ADDR_V6;
        memcpy(out->ip.v6, b->data, 16);
        return true;
    }
    return false;
}

static bool xc_same_ip(const struct mesh_addr *a, const struct mesh_addr *b)
{
    return a->family == b->family && memcmp(a->ip.v6, b->ip.v6, a->family == MESH_ADDR_V4 ? 4 : 16) == 0;
}

static const char *xc_gateway(struct mesh_xds_convert *c, const char *what, const Istio__Workload__GatewayAddress *g,
                              struct mesh_gateway *out)
{
    memset(out, 0, sizeof(*out));
    if (g == NULL)
        return NULL;
    if (g->hbone_mtls_port > 65535)
        return xc_fail(c, "%s.hbone_mtls_port: %u is not a port", what, g->hbone_mtls_port);
    switch (g->destination_case) {
    case ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_HOSTNAME:
        if (g->hostname->hostname == NULL || g->hostname->hostname[0] == '\0')
            return xc_fail(c, "%s.hostname: empty hostname", what);
        out->hostname = xc_strdup(c, g->hostname->hostname);
        out->hostname_namespace = xc_strdup(c, g->hostname->namespace_);
        break;
    case ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_ADDRESS:
        if (!xc_ip(&g->address->address, &out->address))
            return xc_fail(c, "%s.address: %zu bytes, want 4 or 16", what, g->address->address.len);
        out->hostname = "";
        out->hostname_namespace = "";
        break;
    default:
        return xc_fail(c, "%s: no destination (neither hostname nor address)", what);
    }
    out->set = true;
    out->hbone_mtls_port = g->hbone_mtls_port != 0 ? (uint16_t)g->hbone_mtls_port : MESH_XDS_DEFAULT_HBONE_PORT;
    return NULL;
}

static const char *xc_port(struct mesh_xds_convert *c, const char *what, size_t i, const Istio__Workload__Port *p,
                           struct mesh_port *out)
{
    if (p->service_port > 65535)
        return xc_fail(c, "%s[%zu].service_port: %u is not a port", what, i, p->service_port);
    if (p->target_port > 65535)
        return xc_fail(c, "%s[%zu].target_port: %u is not a port", what, i, p->target_port);
    if ((unsigned)p->app_protocol > ISTIO__WORKLOAD__APP_PROTOCOL__TLS)
        return xc_fail(c, "%s[%zu].app_protocol: unknown value %d", what, i, (int)p->app_protocol);
    out->service_port = (uint16_t)p->service_port;
    out->target_port = (uint16_t)p->target_port;
    return NULL;
}

static const char *xc_workload_services(struct mesh_xds_convert *c, const Istio__Workload__Workload *w,
                                        struct mesh_workload *m)
{
    struct mesh_workload_service *sv;
    size_t n = 0;

    if (w->n_services == 0)
        return NULL;
    sv = xc_alloc(c, w->n_services * sizeof(*sv));
    if (sv == NULL)
        return NULL;
    for (size_t i = 0; i < w->n_services; i++) {
        const Istio__Workload__Workload__ServicesEntry *e = w->services[i];
        const Istio__Workload__PortList *pl = e->value;
        struct mesh_port *ports = NULL;
        size_t np = pl != NULL ? pl->n_ports : 0, k;
        char what[96];

        if (e->key == NULL || strchr(e->key, '/') == NULL)
            return xc_fail(c, "services[\"%.200s\"]: key is not namespace/hostname", e->key != NULL ? e->key : "");
        snprintf(what, sizeof(what), "services[\"%.60s\"].ports", e->key);
        if (np != 0 && (ports = xc_alloc(c, np * sizeof(*ports))) == NULL)
            return NULL;
        for (size_t j = 0; j < np; j++) {
            const char *why = xc_port(c, what, j, pl->ports[j], &ports[j]);
            if (why != NULL)
                return why;
        }
        /* a repeated map key: the last entry wins, as in a decoded proto3 map */
        for (k = 0; k < n && strcmp(sv[k].key, e->key) != 0; k++)
            ;
        sv[k] = (struct mesh_workload_service){xc_strdup(c, e->key), ports, np};
        if (k == n)
            n++;
    }
    m->services = sv;
    m->n_services = n;
    return NULL;
}

static const char *xc_workload(struct mesh_xds_convert *c, const char *name, const Istio__Workload__Workload *w,
                               struct mesh_workload *m)
{
    struct mesh_addr *addrs = NULL;
    struct mesh_gateway gw;
    const char *why;
    int rc;

    memset(m, 0, sizeof(*m));
    if (w->uid == NULL || w->uid[0] == '\0')
        return xc_fail(c, "uid: empty");
    if (strcmp(w->uid, name) != 0)
        return xc_fail(c, "uid: \"%.200s\" differs from the resource name", w->uid);
    if (w->n_addresses != 0 && (addrs = xc_alloc(c, w->n_addresses * sizeof(*addrs))) == NULL)
        return NULL;
    for (size_t i = 0; i < w->n_addresses; i++) {
        if (!xc_ip(&w->addresses[i], &addrs[i]))
            return xc_fail(c, "addresses[%zu]: %zu bytes, want 4 or 16", i, w->addresses[i].len);
        for (size_t j = 0; j < i; j++)
            if (xc_same_ip(&addrs[i], &addrs[j]))
                return xc_fail(c, "addresses[%zu]: listed twice", i);
    }
    switch (w->tunnel_protocol) {
    case ISTIO__WORKLOAD__TUNNEL_PROTOCOL__NONE:
        m->protocol = MESH_TUNNEL_NONE;
        break;
    case ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE:
        m->protocol = MESH_TUNNEL_HBONE;
        break;
    case ISTIO__WORKLOAD__TUNNEL_PROTOCOL__LEGACY_ISTIO_MTLS:
        return xc_fail(c, "tunnel_protocol: LEGACY_ISTIO_MTLS is not supported");
    default:
        return xc_fail(c, "tunnel_protocol: unknown value %d", (int)w->tunnel_protocol);
    }
    {
        const struct mesh_workload parts = {.trust_domain = w->trust_domain, .namespace = w->namespace_,
                                            .service_account = w->service_account};
        struct mesh_spiffe_id id;
        rc = mesh_workload_identity(&parts, &id);
    }
    if (rc != 0)
        return xc_fail(c, "trust_domain/namespace/service_account: not a SPIFFE identity (%s)",
                       rc == -ENAMETOOLONG ? "a segment is longer than 255 bytes" : "a segment contains '/'");
    if ((why = xc_gateway(c, "waypoint", w->waypoint, &m->waypoint)) != NULL)
        return why;
    if ((why = xc_gateway(c, "network_gateway", w->network_gateway, &gw)) != NULL)
        return why;
    if ((unsigned)w->workload_type > ISTIO__WORKLOAD__WORKLOAD_TYPE__JOB)
        return xc_fail(c, "workload_type: unknown value %d", (int)w->workload_type);
    if (w->application_tunnel != NULL) {
        if ((unsigned)w->application_tunnel->protocol > ISTIO__WORKLOAD__APPLICATION_TUNNEL__PROTOCOL__PROXY)
            return xc_fail(c, "application_tunnel.protocol: unknown value %d", (int)w->application_tunnel->protocol);
        if (w->application_tunnel->port > 65535)
            return xc_fail(c, "application_tunnel.port: %u is not a port", w->application_tunnel->port);
    }
    switch (w->status) {
    case ISTIO__WORKLOAD__WORKLOAD_STATUS__HEALTHY:
        m->status = MESH_WORKLOAD_HEALTHY;
        break;
    case ISTIO__WORKLOAD__WORKLOAD_STATUS__UNHEALTHY:
        m->status = MESH_WORKLOAD_UNHEALTHY;
        break;
    default:
        return xc_fail(c, "status: unknown value %d", (int)w->status);
    }
    switch (w->network_mode) {
    case ISTIO__WORKLOAD__NETWORK_MODE__STANDARD:
        m->network_mode = MESH_NETWORK_STANDARD;
        break;
    case ISTIO__WORKLOAD__NETWORK_MODE__HOST_NETWORK:
        m->network_mode = MESH_NETWORK_HOST;
        break;
    default:
        return xc_fail(c, "network_mode: unknown value %d", (int)w->network_mode);
    }
    if ((why = xc_workload_services(c, w, m)) != NULL)
        return why;
    m->uid = xc_strdup(c, w->uid);
    m->name = xc_strdup(c, w->name);
    m->namespace = xc_strdup(c, w->namespace_);
    m->service_account = xc_strdup(c, w->service_account != NULL && w->service_account[0] != '\0'
                                          ? w->service_account
                                          : MESH_SPIFFE_DEFAULT_SERVICE_ACCOUNT);
    m->trust_domain = xc_strdup(c, w->trust_domain != NULL && w->trust_domain[0] != '\0'
                                       ? w->trust_domain
                                       : MESH_SPIFFE_DEFAULT_TRUST_DOMAIN);
    m->network = xc_strdup(c, w->network);
    m->node = xc_strdup(c, w->node);
    m->canonical_name = xc_strdup(c, w->canonical_name);
    m->canonical_revision = xc_strdup(c, w->canonical_revision);
    m->workload_name = xc_strdup(c, w->workload_name);
    m->cluster_id = xc_strdup(c, w->cluster_id);
    m->addresses = addrs;
    m->n_addresses = w->n_addresses;
    m->authorization_policies = xc_strvdup(c, w->authorization_policies, w->n_authorization_policies);
    m->n_authorization_policies = w->n_authorization_policies;
    m->capacity = w->capacity != NULL ? w->capacity->value : 1;
    if (m->capacity == 0)
        m->capacity = 1;
    return NULL;
}

static const char *xc_service(struct mesh_xds_convert *c, const char *name, const Istio__Workload__Service *s,
                              struct mesh_service *m)
{
    struct mesh_addr *addrs = NULL;
    struct mesh_port *ports = NULL;
    struct mesh_gateway gw;
    size_t nl, na = 0;
    const char *why;

    memset(m, 0, sizeof(*m));
    if (s->namespace_ == NULL || s->namespace_[0] == '\0')
        return xc_fail(c, "namespace: empty");
    if (s->hostname == NULL || s->hostname[0] == '\0')
        return xc_fail(c, "hostname: empty");
    nl = strlen(s->namespace_);
    if (strncmp(name, s->namespace_, nl) != 0 || name[nl] != '/' || strcmp(name + nl + 1, s->hostname) != 0)
        return xc_fail(c, "namespace/hostname: \"%.120s/%.120s\" differs from the resource name", s->namespace_,
                       s->hostname);
    if (s->n_addresses != 0 && (addrs = xc_alloc(c, s->n_addresses * sizeof(*addrs))) == NULL)
        return NULL;
    for (size_t i = 0; i < s->n_addresses; i++) {
        const Istio__Workload__NetworkAddress *a = s->addresses[i];
        struct mesh_addr ip;
        unsigned max;

        if (!xc_ip(&a->address, &ip))
            return xc_fail(c, "addresses[%zu].address: %zu bytes, want 4 or 16", i, a->address.len);
        max = ip.family == MESH_ADDR_V4 ? 32 : 128;
        if (a->_length_case == ISTIO__WORKLOAD__NETWORK_ADDRESS___LENGTH_LENGTH && a->length > max)
            return xc_fail(c, "addresses[%zu].length: %u is beyond /%u", i, a->length, max);
        if (a->_length_case == ISTIO__WORKLOAD__NETWORK_ADDRESS___LENGTH_LENGTH && a->length != max)
            continue; /* a CIDR service address: not a VIP */
        for (size_t j = 0; j < na; j++)
            if (xc_same_ip(&addrs[j], &ip))
                return xc_fail(c, "addresses[%zu]: listed twice", i);
        addrs[na++] = ip;
    }
    if (s->n_ports != 0 && (ports = xc_alloc(c, s->n_ports * sizeof(*ports))) == NULL)
        return NULL;
    for (size_t i = 0; i < s->n_ports; i++) {
        if ((why = xc_port(c, "ports", i, s->ports[i], &ports[i])) != NULL)
            return why;
        if (ports[i].service_port == 0)
            return xc_fail(c, "ports[%zu].service_port: 0", i);
        for (size_t j = 0; j < i; j++)
            if (ports[j].service_port == ports[i].service_port)
                return xc_fail(c, "ports[%zu].service_port: %u listed twice", i, ports[i].service_port);
    }
    if ((why = xc_gateway(c, "waypoint", s->waypoint, &m->waypoint)) != NULL)
        return why;
    m->lb_mode = MESH_LB_UNSPECIFIED;
    m->lb_health = MESH_LB_ONLY_HEALTHY;
    if (s->load_balancing != NULL) {
        const Istio__Workload__LoadBalancing *lb = s->load_balancing;
        for (size_t i = 0; i < lb->n_routing_preference; i++)
            if ((unsigned)lb->routing_preference[i] > ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NETWORK)
                return xc_fail(c, "load_balancing.routing_preference[%zu]: unknown value %d", i,
                               (int)lb->routing_preference[i]);
        switch (lb->mode) {
        case ISTIO__WORKLOAD__LOAD_BALANCING__MODE__UNSPECIFIED_MODE:
            m->lb_mode = MESH_LB_UNSPECIFIED;
            break;
        case ISTIO__WORKLOAD__LOAD_BALANCING__MODE__STRICT:
            m->lb_mode = MESH_LB_STRICT;
            break;
        case ISTIO__WORKLOAD__LOAD_BALANCING__MODE__FAILOVER:
            m->lb_mode = MESH_LB_FAILOVER;
            break;
        case ISTIO__WORKLOAD__LOAD_BALANCING__MODE__PASSTHROUGH:
            m->lb_mode = MESH_LB_PASSTHROUGH;
            break;
        default:
            return xc_fail(c, "load_balancing.mode: unknown value %d", (int)lb->mode);
        }
        switch (lb->health_policy) {
        case ISTIO__WORKLOAD__LOAD_BALANCING__HEALTH_POLICY__ONLY_HEALTHY:
            m->lb_health = MESH_LB_ONLY_HEALTHY;
            break;
        case ISTIO__WORKLOAD__LOAD_BALANCING__HEALTH_POLICY__ALLOW_ALL:
            m->lb_health = MESH_LB_ALLOW_ALL;
            break;
        default:
            return xc_fail(c, "load_balancing.health_policy: unknown value %d", (int)lb->health_policy);
        }
    }
    if ((unsigned)s->ip_families > ISTIO__WORKLOAD__IPFAMILIES__DUAL)
        return xc_fail(c, "ip_families: unknown value %d", (int)s->ip_families);
    for (size_t i = 0; i < s->n_weighted_waypoints; i++) {
        char what[80];
        snprintf(what, sizeof(what), "weighted_waypoints[%zu].destination", i);
        if (s->weighted_waypoints[i]->destination == NULL)
            return xc_fail(c, "%s: missing", what);
        if ((why = xc_gateway(c, what, s->weighted_waypoints[i]->destination, &gw)) != NULL)
            return why;
    }
    if ((unsigned)s->visibility > ISTIO__WORKLOAD__SERVICE__VISIBILITY__NAMESPACE)
        return xc_fail(c, "visibility: unknown value %d", (int)s->visibility);
    m->name = xc_strdup(c, s->name);
    m->namespace = xc_strdup(c, s->namespace_);
    m->hostname = xc_strdup(c, s->hostname);
    m->addresses = addrs;
    m->n_addresses = na;
    m->ports = ports;
    m->n_ports = s->n_ports;
    m->subject_alt_names = xc_strvdup(c, s->subject_alt_names, s->n_subject_alt_names);
    m->n_subject_alt_names = s->n_subject_alt_names;
    return NULL;
}

/* ---- Authorization ---- */

static const char *xc_strmatches(struct mesh_xds_convert *c, const char *what, Istio__Security__StringMatch *const *v,
                                 size_t n, const struct mesh_authz_str_match **out, size_t *n_out)
{
    struct mesh_authz_str_match *m;

    *out = NULL;
    *n_out = 0;
    if (n == 0)
        return NULL;
    if ((m = xc_alloc(c, n * sizeof(*m))) == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        switch (v[i]->match_type_case) {
        case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT:
            m[i] = (struct mesh_authz_str_match){MESH_AUTHZ_STR_EXACT, xc_strdup(c, v[i]->exact)};
            break;
        case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX:
            m[i] = (struct mesh_authz_str_match){MESH_AUTHZ_STR_PREFIX, xc_strdup(c, v[i]->prefix)};
            break;
        case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_SUFFIX:
            m[i] = (struct mesh_authz_str_match){MESH_AUTHZ_STR_SUFFIX, xc_strdup(c, v[i]->suffix)};
            break;
        case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE:
            m[i] = (struct mesh_authz_str_match){MESH_AUTHZ_STR_PRESENCE, NULL};
            break;
        default:
            return xc_fail(c, "%s[%zu]: no match type", what, i);
        }
    }
    *out = m;
    *n_out = n;
    return NULL;
}

static const char *xc_cidrs(struct mesh_xds_convert *c, const char *what, Istio__Security__Address *const *v, size_t n,
                            const struct mesh_authz_cidr **out, size_t *n_out)
{
    struct mesh_authz_cidr *m;

    *out = NULL;
    *n_out = 0;
    if (n == 0)
        return NULL;
    if ((m = xc_alloc(c, n * sizeof(*m))) == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        struct mesh_addr ip;
        unsigned max;

        if (!xc_ip(&v[i]->address, &ip))
            return xc_fail(c, "%s[%zu].address: %zu bytes, want 4 or 16", what, i, v[i]->address.len);
        max = ip.family == MESH_ADDR_V4 ? 32 : 128;
        if (v[i]->length > max)
            return xc_fail(c, "%s[%zu].length: %u is beyond /%u", what, i, v[i]->length, max);
        memset(&m[i], 0, sizeof(m[i]));
        m[i].family = ip.family;
        m[i].len = (uint8_t)v[i]->length;
        memcpy(m[i].addr, ip.ip.v6, ip.family == MESH_ADDR_V4 ? 4 : 16);
    }
    *out = m;
    *n_out = n;
    return NULL;
}

static const char *xc_ports(struct mesh_xds_convert *c, const char *what, const uint32_t *v, size_t n,
                            const uint16_t **out, size_t *n_out)
{
    uint16_t *m;

    *out = NULL;
    *n_out = 0;
    if (n == 0)
        return NULL;
    if ((m = xc_alloc(c, n * sizeof(*m))) == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (v[i] > 65535)
            return xc_fail(c, "%s[%zu]: %u is not a port", what, i, v[i]);
        m[i] = (uint16_t)v[i];
    }
    *out = m;
    *n_out = n;
    return NULL;
}

static const char *xc_sas(struct mesh_xds_convert *c, Istio__Security__ServiceAccountMatch *const *v, size_t n,
                          const struct mesh_authz_sa_match **out, size_t *n_out)
{
    struct mesh_authz_sa_match *m;

    *out = NULL;
    *n_out = 0;
    if (n == 0)
        return NULL;
    if ((m = xc_alloc(c, n * sizeof(*m))) == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        m[i] = (struct mesh_authz_sa_match){xc_strdup(c, v[i]->namespace_), xc_strdup(c, v[i]->serviceaccount)};
    *out = m;
    *n_out = n;
    return NULL;
}

static const char *xc_match(struct mesh_xds_convert *c, const char *at, const Istio__Security__Match *p,
                            struct mesh_authz_match *m)
{
    char w[160];
    const char *why = NULL;

    memset(m, 0, sizeof(*m));
#define XC_FIELD(name, call)                                                                                           \
    do {                                                                                                               \
        snprintf(w, sizeof(w), "%s.%s", at, #name);                                                                   \
        if ((why = (call)) != NULL)                                                                                    \
            return why;                                                                                                \
    } while (0)
    XC_FIELD(namespaces, xc_strmatches(c, w, p->namespaces, p->n_namespaces, &m->namespaces, &m->n_namespaces));
    XC_FIELD(not_namespaces, xc_strmatches(c, w, p->not_namespaces, p->n_not_namespaces, &m->not_namespaces,
                                           &m->n_not_namespaces));
    XC_FIELD(principals, xc_strmatches(c, w, p->principals, p->n_principals, &m->principals, &m->n_principals));
    XC_FIELD(not_principals, xc_strmatches(c, w, p->not_principals, p->n_not_principals, &m->not_principals,
                                           &m->n_not_principals));
    XC_FIELD(source_ips, xc_cidrs(c, w, p->source_ips, p->n_source_ips, &m->source_ips, &m->n_source_ips));
    XC_FIELD(not_source_ips,
             xc_cidrs(c, w, p->not_source_ips, p->n_not_source_ips, &m->not_source_ips, &m->n_not_source_ips));
    XC_FIELD(destination_ips, xc_cidrs(c, w, p->destination_ips, p->n_destination_ips, &m->destination_ips,
                                       &m->n_destination_ips));
    XC_FIELD(not_destination_ips, xc_cidrs(c, w, p->not_destination_ips, p->n_not_destination_ips,
                                           &m->not_destination_ips, &m->n_not_destination_ips));
    XC_FIELD(destination_ports, xc_ports(c, w, p->destination_ports, p->n_destination_ports, &m->destination_ports,
                                         &m->n_destination_ports));
    XC_FIELD(not_destination_ports, xc_ports(c, w, p->not_destination_ports, p->n_not_destination_ports,
                                             &m->not_destination_ports, &m->n_not_destination_ports));
    XC_FIELD(service_accounts,
             xc_sas(c, p->service_accounts, p->n_service_accounts, &m->service_accounts, &m->n_service_accounts));
    XC_FIELD(not_service_accounts, xc_sas(c, p->not_service_accounts, p->n_not_service_accounts,
                                          &m->not_service_accounts, &m->n_not_service_accounts));
#undef XC_FIELD
    return NULL;
}

static const char *xc_policy(struct mesh_xds_convert *c, const char *name, const Istio__Security__Authorization *a,
                             struct mesh_authz_policy *m)
{
    struct mesh_authz_rule *rules = NULL;
    size_t nl;

    memset(m, 0, sizeof(*m));
    nl = strlen(a->namespace_);
    if (strncmp(name, a->namespace_, nl) != 0 || name[nl] != '/' || strcmp(name + nl + 1, a->name) != 0)
        return xc_fail(c, "namespace/name: \"%.120s/%.120s\" differs from the resource name", a->namespace_, a->name);
    switch (a->scope) {
    case ISTIO__SECURITY__SCOPE__GLOBAL:
        m->scope = MESH_AUTHZ_SCOPE_GLOBAL;
        break;
    case ISTIO__SECURITY__SCOPE__NAMESPACE:
        m->scope = MESH_AUTHZ_SCOPE_NAMESPACE;
        break;
    case ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR:
        m->scope = MESH_AUTHZ_SCOPE_WORKLOAD_SELECTOR;
        break;
    default:
        return xc_fail(c, "scope: unknown value %d", (int)a->scope);
    }
    switch (a->action) {
    case ISTIO__SECURITY__ACTION__ALLOW:
        m->action = MESH_AUTHZ_ACTION_ALLOW;
        break;
    case ISTIO__SECURITY__ACTION__DENY:
        m->action = MESH_AUTHZ_ACTION_DENY;
        break;
    default:
        return xc_fail(c, "action: unknown value %d", (int)a->action);
    }
    if (a->n_rules != 0 && (rules = xc_alloc(c, a->n_rules * sizeof(*rules))) == NULL)
        return NULL;
    for (size_t i = 0; i < a->n_rules; i++) {
        const Istio__Security__Rule *r = a->rules[i];
        struct mesh_authz_clause *cl = NULL;

        if (r->n_clauses != 0 && (cl = xc_alloc(c, r->n_clauses * sizeof(*cl))) == NULL)
            return NULL;
        for (size_t j = 0; j < r->n_clauses; j++) {
            const Istio__Security__Clause *k = r->clauses[j];
            struct mesh_authz_match *ms = NULL;

            if (k->n_matches != 0 && (ms = xc_alloc(c, k->n_matches * sizeof(*ms))) == NULL)
                return NULL;
            for (size_t x = 0; x < k->n_matches; x++) {
                char at[96];
                const char *why;
                snprintf(at, sizeof(at), "rules[%zu].clauses[%zu].matches[%zu]", i, j, x);
                if ((why = xc_match(c, at, k->matches[x], &ms[x])) != NULL)
                    return why;
            }
            cl[j] = (struct mesh_authz_clause){ms, k->n_matches};
        }
        rules[i] = (struct mesh_authz_rule){cl, r->n_clauses};
    }
    m->name = xc_strdup(c, a->name);
    m->namespace = xc_strdup(c, a->namespace_);
    m->rules = rules;
    m->n_rules = a->n_rules;
    m->dry_run = a->dry_run != 0;
    return NULL;
}

/* ====================================================================================================== */
/* handler                                                                                                */
/* ====================================================================================================== */

static struct xc_entry *xc_begin(struct mesh_xds_convert *c, const struct mesh_xds_resource *r)
{
    struct xc_entry *e;
    const char **al = NULL;

    c->cur = NULL;
    c->oom = false;
    c->next_chunk = r->value_len + sizeof(struct xc_entry) + 64;
    e = xc_alloc(c, sizeof(*e));
    if (e == NULL)
        return NULL;
    memset(e, 0, sizeof(*e));
    e->name = xc_strdup(c, r->name);
    if (r->n_aliases != 0 && (al = xc_alloc(c, r->n_aliases * sizeof(*al))) != NULL)
        for (size_t i = 0; i < r->n_aliases; i++)
            al[i] = xc_strdup(c, r->aliases[i]);
    e->aliases = al;
    e->n_aliases = al != NULL ? r->n_aliases : 0;
    return e;
}

/* Link a converted entry whose model is in *model; replaces any entry of the same name. */
static const char *xc_commit(struct mesh_xds_convert *c, enum mesh_xds_type t, struct xc_entry *e, uint8_t kind,
                             const void *model)
{
    struct xc_dense *d = &c->dense[kind];
    struct xc_entry *old = xc_map_get(&c->names[t], e->name);

    e->mem = c->cur;
    c->cur = NULL;
    if (old != NULL)
        xc_drop(c, old);
    if (xc_dense_reserve(c, d) != 0 || xc_map_put(c, &c->names[t], e->name, e) != 0) {
        xc_arena_free(c, e->mem);
        return "out of memory";
    }
    e->kind = kind;
    e->slot = (uint32_t)d->n;
    e->seq = ++c->seq;
    if (kind == XC_POLICY) {
        memcpy(xc_dense_at(d, d->n), model, d->elem);
    } else {
        const void *rec = &e->rec;
        e->commit_epoch = xc_pool_epoch(c->pool);
        memcpy(&e->rec, model, kind == XC_WORKLOAD ? sizeof(e->rec.w) : sizeof(e->rec.s));
        memcpy(xc_dense_at(d, d->n), &rec, sizeof(rec));
        if (kind == XC_WORKLOAD)
            xc_changes_push(c, &c->added, &e->rec.w);
        else
            c->services_changed = true;
    }
    d->entries[d->n++] = e;
    for (size_t i = 0; i < e->n_aliases; i++)
        (void)xc_map_put(c, &c->aliases, e->aliases[i], e); /* best effort: a missing alias only slows removal */
    xc_mark_dirty(c, kind);
    return NULL;
}

static const char *xc_apply_address(struct mesh_xds_convert *c, const struct mesh_xds_resource *r)
{
    Istio__Workload__Address *a = istio__workload__address__unpack(&c->pa, r->value_len, r->value);
    struct mesh_workload wm;
    struct mesh_service sm;
    struct xc_entry *e;
    const char *why = NULL;

    if (a == NULL)
        return "cannot decode istio.workload.Address";
    if (a->type_case != ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD && a->type_case != ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE) {
        istio__workload__address__free_unpacked(a, &c->pa);
        return "Address: neither workload nor service";
    }
    e = xc_begin(c, r);
    if (e != NULL) {
        if (a->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD)
            why = xc_workload(c, e->name, a->workload, &wm);
        else
            why = xc_service(c, e->name, a->service, &sm);
    }
    if (why == NULL && (e == NULL || c->oom))
        why = "out of memory";
    if (why == NULL) {
        if (a->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD)
            why = xc_commit(c, MESH_XDS_TYPE_ADDRESS, e, XC_WORKLOAD, &wm);
        else
            why = xc_commit(c, MESH_XDS_TYPE_ADDRESS, e, XC_SERVICE, &sm);
    }
    istio__workload__address__free_unpacked(a, &c->pa);
    return why;
}

static const char *xc_apply_authz(struct mesh_xds_convert *c, const struct mesh_xds_resource *r)
{
    Istio__Security__Authorization *a = istio__security__authorization__unpack(&c->pa, r->value_len, r->value);
    struct mesh_authz_policy pm;
    struct xc_entry *e;
    const char *why = NULL;

    if (a == NULL)
        return "cannot decode istio.security.Authorization";
    e = xc_begin(c, r);
    if (e != NULL)
        why = xc_policy(c, e->name, a, &pm);
    if (why == NULL && (e == NULL || c->oom))
        why = "out of memory";
    if (why == NULL)
        why = xc_commit(c, MESH_XDS_TYPE_AUTHORIZATION, e, XC_POLICY, &pm);
    istio__security__authorization__free_unpacked(a, &c->pa);
    return why;
}

const char *mesh_xds_convert_apply(struct mesh_xds_convert *c, const struct mesh_xds_resource *r)
{
    const char *why;

    if (r->type == MESH_XDS_TYPE_ADDRESS)
        why = xc_apply_address(c, r);
    else if (r->type == MESH_XDS_TYPE_AUTHORIZATION)
        why = xc_apply_authz(c, r);
    else
        why = "unsupported type";
    if (c->cur != NULL) { /* a rejected or failed conversion: drop its arena */
        xc_arena_free(c, c->cur);
        c->cur = NULL;
    }
    if (r->type < MESH_XDS_TYPE_COUNT) {
        if (why == NULL)
            c->stats.applied[r->type]++;
        else
            c->stats.rejected[r->type]++;
    }
    if (why != NULL)
        MESH_LOG(c->env, MESH_LOG_WARNING, XC_MODULE, "rejected %s %s: %s", r->type == MESH_XDS_TYPE_ADDRESS ?
                 "Address" : "Authorization", r->name, why);
    return why;
}

void mesh_xds_convert_remove(struct mesh_xds_convert *c, enum mesh_xds_type t, const char *name)
{
    struct xc_entry *e;

    if (t >= MESH_XDS_TYPE_COUNT)
        return;
    e = xc_map_get(&c->names[t], name);
    if (e == NULL && t == MESH_XDS_TYPE_ADDRESS)
        e = xc_map_get(&c->aliases, name);
    if (e == NULL) {
        c->stats.removed_unknown++;
        return;
    }
    xc_drop(c, e);
    c->stats.removed[t]++;
}

/* ====================================================================================================== */
/* snapshots                                                                                              */
/* ====================================================================================================== */

const struct mesh_xds_state *mesh_xds_state_ref(const struct mesh_xds_state *s)
{
    if (s != NULL)
        atomic_fetch_add_explicit(&((struct mesh_xds_state *)(uintptr_t)s)->refs, 1, memory_order_relaxed);
    return s;
}

static void xc_holder_unref(const struct mesh_env *env, struct mesh_xds_authz_holder *h)
{
    if (h != NULL && atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1) {
        mesh_authz_set_free(h->set);
        mesh_env_free(env, h);
    }
}

void mesh_xds_state_unref(const struct mesh_xds_state *cs)
{
    struct mesh_xds_state *s = (struct mesh_xds_state *)(uintptr_t)cs;

    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    mesh_workloads_unref(s->workloads);
    xc_holder_unref(s->env, s->authz_holder);
    mesh_env_free(s->env, s);
}

struct xc_claim {
    struct mesh_addr ip;
    uint64_t seq;
    uint32_t item;
    uint32_t addr;
};

static int xc_claim_cmp(const void *pa, const void *pb)
{
    const struct xc_claim *a = pa, *b = pb;
    int r;

    if (a->ip.family != b->ip.family)
        return a->ip.family < b->ip.family ? -1 : 1;
    r = memcmp(a->ip.ip.v6, b->ip.ip.v6, a->ip.family == MESH_ADDR_V4 ? 4 : 16);
    if (r != 0)
        return r;
    return a->seq > b->seq ? -1 : a->seq < b->seq ? 1 : 0; /* newest first */
}

/*
 * Address conflicts: give each IP (VIP) claimed by several workloads (services) to the newest claimant only.
 * Fills *addrs_out[i] with a filtered copy for every item that lost an address (NULL otherwise); the caller builds
 * from those. Returns the number of addresses taken away, or -ENOMEM.
 */
static long xc_resolve(struct mesh_xds_convert *c, uint8_t kind, struct mesh_addr **addrs_out, size_t *n_out)
{
    struct xc_dense *d = &c->dense[kind];
    struct xc_claim *cl;
    size_t n = 0, k = 0;
    long lost = 0;

    for (size_t i = 0; i < d->n; i++) {
        if (kind == XC_WORKLOAD) {
            const struct mesh_workload *w = xc_model_at(d, kind, i);
            if (w->network_mode != MESH_NETWORK_HOST)
                n += w->n_addresses;
        } else {
            n += ((const struct mesh_service *)xc_model_at(d, kind, i))->n_addresses;
        }
    }
    cl = mesh_env_alloc(c->env, (n + 1) * sizeof(*cl));
    if (cl == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < d->n; i++) {
        const struct mesh_addr *a;
        size_t na;
        if (kind == XC_WORKLOAD) {
            const struct mesh_workload *w = xc_model_at(d, kind, i);
            if (w->network_mode == MESH_NETWORK_HOST)
                continue;
            a = w->addresses;
            na = w->n_addresses;
        } else {
            const struct mesh_service *s = xc_model_at(d, kind, i);
            a = s->addresses;
            na = s->n_addresses;
        }
        for (size_t j = 0; j < na; j++)
            cl[k++] = (struct xc_claim){a[j], d->entries[i]->seq, (uint32_t)i, (uint32_t)j};
    }
    qsort(cl, k, sizeof(*cl), xc_claim_cmp);
    for (size_t i = 1; i < k; i++) {
        if (xc_same_ip(&cl[i].ip, &cl[i - 1].ip)) {
            const struct mesh_addr *src;
            size_t na;
            uint32_t it = cl[i].item;

            if (kind == XC_WORKLOAD) {
                const struct mesh_workload *w = xc_model_at(d, kind, it);
                src = w->addresses;
                na = w->n_addresses;
            } else {
                const struct mesh_service *s = xc_model_at(d, kind, it);
                src = s->addresses;
                na = s->n_addresses;
            }
            if (addrs_out[it] == NULL) {
                addrs_out[it] = mesh_env_alloc(c->env, (na + 1) * sizeof(struct mesh_addr));
                if (addrs_out[it] == NULL) {
                    lost = -ENOMEM;
                    break;
                }
                memcpy(addrs_out[it], src, na * sizeof(struct mesh_addr));
                n_out[it] = na;
            }
            /* remove this IP from the filtered copy */
            for (size_t x = 0; x < n_out[it]; x++) {
                if (xc_same_ip(&addrs_out[it][x], &cl[i].ip)) {
                    memmove(&addrs_out[it][x], &addrs_out[it][x + 1], (n_out[it] - x - 1) * sizeof(struct mesh_addr));
                    n_out[it]--;
                    break;
                }
            }
            lost++;
            MESH_LOG(c->env, MESH_LOG_WARNING, XC_MODULE, "%s is claimed by several %s; %s loses it",
                     kind == XC_WORKLOAD ? "an address" : "a VIP", kind == XC_WORKLOAD ? "workloads" : "services",
                     d->entries[it]->name);
        }
    }
    mesh_env_free(c->env, cl);
    return lost;
}

static const struct mesh_workloads *xc_build_workloads(struct mesh_xds_convert *c)
{
    struct xc_dense *dw = &c->dense[XC_WORKLOAD], *ds = &c->dense[XC_SERVICE];
    const char *why = NULL;
    struct mesh_workloads *ws;
    struct mesh_addr **wa = NULL, **sa = NULL;
    size_t *wn = NULL, *sn = NULL;
    struct mesh_workload *wcopy = NULL;
    struct mesh_service *scopy = NULL;
    long lw, ls;

    c->stats.address_conflicts = 0;
    c->last_build_derived = false;
    if (c->current != NULL && !c->services_changed && !c->changes_lost) {
        ws = mesh_workloads_derive_shared(c->current->workloads, dw->model, dw->n, c->gone.v, c->gone.n, c->added.v,
                                          c->added.n, &why);
        if (ws != NULL) {
            c->stats.derived++;
            c->last_build_derived = true;
            return ws;
        }
    }
    ws = mesh_workloads_new_shared(c->env, dw->model, dw->n, ds->model, ds->n, &c->pool->keeper, &why);
    if (ws != NULL)
        return ws;
    if (why != NULL && strcmp(why, "out of memory") == 0)
        return NULL;
    /* Not memory: the only cross-resource conflict left is a shared IP or VIP. Resolve and retry. */
    wa = mesh_env_calloc(c->env, (dw->n + 1) * sizeof(*wa));
    wn = mesh_env_calloc(c->env, (dw->n + 1) * sizeof(*wn));
    sa = mesh_env_calloc(c->env, (ds->n + 1) * sizeof(*sa));
    sn = mesh_env_calloc(c->env, (ds->n + 1) * sizeof(*sn));
    wcopy = mesh_env_alloc(c->env, (dw->n + 1) * sizeof(*wcopy));
    scopy = mesh_env_alloc(c->env, (ds->n + 1) * sizeof(*scopy));
    if (wa == NULL || wn == NULL || sa == NULL || sn == NULL || wcopy == NULL || scopy == NULL)
        goto out;
    lw = xc_resolve(c, XC_WORKLOAD, wa, wn);
    ls = xc_resolve(c, XC_SERVICE, sa, sn);
    if (lw < 0 || ls < 0)
        goto out;
    c->stats.address_conflicts = (uint64_t)(lw + ls);
    for (size_t i = 0; i < dw->n; i++)
        wcopy[i] = *(const struct mesh_workload *)xc_model_at(dw, XC_WORKLOAD, i);
    for (size_t i = 0; i < ds->n; i++)
        scopy[i] = *(const struct mesh_service *)xc_model_at(ds, XC_SERVICE, i);
    for (size_t i = 0; i < dw->n; i++)
        if (wa[i] != NULL) {
            wcopy[i].addresses = wa[i];
            wcopy[i].n_addresses = wn[i];
        }
    for (size_t i = 0; i < ds->n; i++)
        if (sa[i] != NULL) {
            scopy[i].addresses = sa[i];
            scopy[i].n_addresses = sn[i];
        }
    ws = mesh_workloads_new(c->env, wcopy, dw->n, scopy, ds->n, &why);
    if (ws == NULL)
        MESH_LOG(c->env, MESH_LOG_ERR, XC_MODULE, "workload snapshot not built: %s", why != NULL ? why : "?");
out:
    for (size_t i = 0; wa != NULL && i < dw->n; i++)
        mesh_env_free(c->env, wa[i]);
    for (size_t i = 0; sa != NULL && i < ds->n; i++)
        mesh_env_free(c->env, sa[i]);
    mesh_env_free(c->env, wa);
    mesh_env_free(c->env, wn);
    mesh_env_free(c->env, sa);
    mesh_env_free(c->env, sn);
    mesh_env_free(c->env, wcopy);
    mesh_env_free(c->env, scopy);
    return ws;
}

/* The workloads snapshot just built became current: its records are "in the snapshot" (only the added ones after a
 * derive; every one after a full build, which may follow lost change lists), and the lists start again. */
static void xc_changes_committed(struct mesh_xds_convert *c)
{
    if (c->last_build_derived) {
        for (size_t i = 0; i < c->added.n; i++)
            xc_entry_of(c->added.v[i])->in_snapshot = true;
    } else {
        struct xc_dense *d = &c->dense[XC_WORKLOAD];
        for (size_t i = 0; i < d->n; i++)
            d->entries[i]->in_snapshot = true;
    }
    c->added.n = c->gone.n = 0;
    c->services_changed = c->changes_lost = false;
}

int mesh_xds_convert_batch_done(struct mesh_xds_convert *c, enum mesh_xds_type t)
{
    const struct mesh_xds_state *prev = c->current;
    struct mesh_xds_state *s;
    uint64_t t0;
    int err = 0;

    (void)t;
    bool rebuilt_workloads = prev == NULL || c->dirty_workloads;

    if (prev != NULL && !c->dirty_workloads && !c->dirty_authz)
        return MESH_OK;
    t0 = mesh_env_now(c->env);
    s = mesh_env_calloc(c->env, sizeof(*s));
    if (s == NULL)
        goto nomem;
    atomic_init(&s->refs, 1);
    s->env = c->env;
    if (rebuilt_workloads) {
        s->workloads = xc_build_workloads(c);
    } else {
        s->workloads = mesh_workloads_ref(prev->workloads);
    }
    if (s->workloads == NULL)
        goto nomem_s;
    if (prev == NULL || c->dirty_authz) {
        struct mesh_xds_authz_holder *h = mesh_env_alloc(c->env, sizeof(*h));
        if (h == NULL)
            goto nomem_s;
        atomic_init(&h->refs, 1);
        h->set = mesh_authz_set_new(c->env, c->dense[XC_POLICY].model, c->dense[XC_POLICY].n, &err);
        if (h->set == NULL) {
            mesh_env_free(c->env, h);
            MESH_LOG(c->env, MESH_LOG_ERR, XC_MODULE, "policy set not built: %d", err);
            goto nomem_s;
        }
        s->authz_holder = h;
    } else {
        s->authz_holder = prev->authz_holder;
        atomic_fetch_add_explicit(&s->authz_holder->refs, 1, memory_order_relaxed);
    }
    s->authz = s->authz_holder->set;
    s->generation = ++c->generation;
    c->dirty_workloads = c->dirty_authz = false;
    if (rebuilt_workloads) /* committed: this is what the next build derives from */
        xc_changes_committed(c);
    c->current = s;
    mesh_xds_state_unref(prev);
    xc_pool_sweep(c->pool);
    c->stats.published++;
    c->stats.workloads = c->dense[XC_WORKLOAD].n;
    c->stats.services = c->dense[XC_SERVICE].n;
    c->stats.policies = c->dense[XC_POLICY].n;
    c->stats.last_build_ns = mesh_env_now(c->env) - t0;
    if (c->publish != NULL)
        c->publish(c->u, mesh_xds_state_ref(s));
    return MESH_OK;
nomem_s:
    mesh_xds_state_unref(s);
nomem:
    c->stats.build_failures++;
    return MESH_ERR_NOMEM;
}

/* ====================================================================================================== */
/* lifecycle                                                                                              */
/* ====================================================================================================== */

static const char *xc_on_resource(void *u, const struct mesh_xds_resource *r)
{
    return mesh_xds_convert_apply(u, r);
}

static void xc_on_removed(void *u, enum mesh_xds_type t, const char *name)
{
    mesh_xds_convert_remove(u, t, name);
}

static void xc_on_batch_done(void *u, enum mesh_xds_type t)
{
    (void)mesh_xds_convert_batch_done(u, t);
}

void mesh_xds_convert_handler(struct mesh_xds_handler *out)
{
    out->on_resource = xc_on_resource;
    out->on_removed = xc_on_removed;
    out->on_batch_done = xc_on_batch_done;
}

struct mesh_xds_convert *mesh_xds_convert_new(const struct mesh_env *env, mesh_xds_publish_fn publish, void *u,
                                              int *err)
{
    struct mesh_xds_convert *c = mesh_env_calloc(env, sizeof(*c));

    if (c == NULL) {
        *err = MESH_ERR_NOMEM;
        return NULL;
    }
    c->env = env;
    c->publish = publish;
    c->u = u;
    mesh_xds_pb_allocator(env, &c->pa);
    c->pool = xc_pool_new(env);
    if (c->pool == NULL) {
        mesh_env_free(env, c);
        *err = MESH_ERR_NOMEM;
        return NULL;
    }
    c->dense[XC_WORKLOAD].elem = sizeof(const void *);
    c->dense[XC_SERVICE].elem = sizeof(const void *);
    c->dense[XC_POLICY].elem = sizeof(struct mesh_authz_policy);
    return c;
}

void mesh_xds_convert_free(struct mesh_xds_convert *c)
{
    if (c == NULL)
        return;
    for (int k = 0; k < XC_KIND_COUNT; k++) {
        struct xc_dense *d = &c->dense[k];
        for (size_t i = 0; i < d->n; i++) {
            xc_arena_uncount(c, d->entries[i]->mem);
            if (k == XC_POLICY)
                xc_chunks_free(c->env, d->entries[i]->mem);
            else
                xc_pool_retire(c->pool, d->entries[i]); /* snapshots may still hold the records */
        }
        mesh_env_free(c->env, d->model);
        mesh_env_free(c->env, d->entries);
    }
    for (int t = 0; t < MESH_XDS_TYPE_COUNT; t++)
        xc_map_fini(c, &c->names[t]);
    xc_map_fini(c, &c->aliases);
    mesh_xds_state_unref(c->current);
    mesh_env_free(c->env, c->added.v);
    mesh_env_free(c->env, c->gone.v);
    xc_pool_put(c->pool); /* the last snapshot released frees it */
    mesh_env_free(c->env, c);
}

const struct mesh_xds_state *mesh_xds_convert_current(const struct mesh_xds_convert *c)
{
    return c->current;
}

const struct mesh_xds_convert_stats *mesh_xds_convert_stats(const struct mesh_xds_convert *c)
{
    return &c->stats;
}
