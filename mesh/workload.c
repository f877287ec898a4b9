/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/workload.c - immutable workload/service snapshot (see workload.h for the invariants).
 *
 * Storage: a snapshot holds arrays of pointers to its workloads and services. Built by mesh_workloads_new, the
 * records and everything they point to are copies in the snapshot's arena (env-allocated chunks freed together by
 * the last unref); built by mesh_workloads_new_shared, they are the caller's records, pinned through its keeper.
 * Indexes are open-addressing hash tables (linear probing, power-of-two capacity, at most half full) built in one
 * pass, so a snapshot of n records costs O(n) to index whatever changed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mesh/workload.h"

#define WS_CHUNK_BYTES 8192

struct ws_chunk {
    struct ws_chunk *next;
    size_t used;
    size_t cap;
    _Alignas(16) unsigned char data[];
};

/* One hash table slot: the key's hash and the record it names (NULL: free). Keys are read through the record, so
 * a slot does not depend on where the record sits in the snapshot's arrays and can be copied to the next snapshot. */
struct ws_slot {
    uint32_t hash;
    const void *rec;
};

struct ws_table {
    struct ws_slot *slots;
    uint32_t mask; /* capacity - 1; capacity >= 2 * keys */
    uint32_t n;
};

/* A service's endpoints, in a table keyed by the service record. */
struct ws_eps {
    const struct mesh_service *svc; /* NULL: free slot */
    struct mesh_endpoint *eps;
    uint32_t n;
    uint32_t hash;
};

struct mesh_workloads {
    const struct mesh_env *env;
    atomic_long refs;
    struct ws_chunk *chunks;
    bool oom;
    const struct mesh_workloads_keeper *keeper; /* shared records: held through it; NULL: copies in the arena */
    uint64_t ticket;                            /* what keeper->hold gave */
    const struct mesh_workload **w;
    size_t n_w;
    const struct mesh_service **s;
    size_t n_s;
    struct ws_table by_ip;  /* workload address -> workload (HOST_NETWORK workloads left out) */
    struct ws_table by_vip; /* VIP -> service */
    struct ws_table by_uid; /* uid -> workload */
    struct ws_table by_key; /* "namespace/hostname" -> service */
    struct ws_eps *eps;     /* endpoint lists by service, open addressing */
    uint32_t eps_mask;
};

/* ---- arena ---- */

static void *ws_alloc(struct mesh_workloads *ws, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    struct ws_chunk *c = ws->chunks;
    if (c == NULL || c->cap - c->used < n) {
        size_t cap = n > WS_CHUNK_BYTES ? n : WS_CHUNK_BYTES;
        c = mesh_env_alloc(ws->env, sizeof(*c) + cap);
        if (c == NULL) {
            ws->oom = true;
            return NULL;
        }
        c->next = ws->chunks;
        c->used = 0;
        c->cap = cap;
        ws->chunks = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

static const char *ws_strdup(struct mesh_workloads *ws, const char *s)
{
    if (s == NULL)
        s = "";
    size_t n = strlen(s) + 1;
    char *d = ws_alloc(ws, n);
    if (d == NULL)
        return "";
    memcpy(d, s, n);
    return d;
}

static const char *const *ws_strvdup(struct mesh_workloads *ws, const char *const *v, size_t n)
{
    const char **d = ws_alloc(ws, (n + 1) * sizeof(*d));
    if (d == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        d[i] = ws_strdup(ws, v[i]);
    return d;
}

static void *ws_memdup(struct mesh_workloads *ws, const void *p, size_t n)
{
    void *d = ws_alloc(ws, n);
    if (d != NULL && n > 0)
        memcpy(d, p, n);
    return d;
}

static void ws_destroy(struct mesh_workloads *ws)
{
    const struct mesh_env *env = ws->env;

    if (ws->keeper != NULL)
        ws->keeper->release(ws->keeper->u, ws->ticket);
    while (ws->chunks != NULL) {
        struct ws_chunk *c = ws->chunks;
        ws->chunks = c->next;
        mesh_env_free(env, c);
    }
    mesh_env_free(env, ws);
}

/* ---- address helpers ---- */

static size_t addr_ip_len(const struct mesh_addr *a)
{
    return a->family == MESH_ADDR_V4 ? 4 : 16;
}

bool mesh_addr_ip_eq(const struct mesh_addr *a, const struct mesh_addr *b)
{
    return a->family == b->family && (a->family == MESH_ADDR_V4 || a->family == MESH_ADDR_V6) &&
           memcmp(a->ip.v6, b->ip.v6, addr_ip_len(a)) == 0;
}

static bool addr_valid(const struct mesh_addr *a)
{
    return a->family == MESH_ADDR_V4 || a->family == MESH_ADDR_V6;
}

int mesh_addr_format(const struct mesh_addr *a, bool with_port, char *out, size_t cap)
{
    char ip[64];
    int n;

    if (a->family == MESH_ADDR_V4)
        inet_ntop(AF_INET, a->ip.v4, ip, sizeof(ip));
    else if (a->family == MESH_ADDR_V6)
        inet_ntop(AF_INET6, a->ip.v6, ip, sizeof(ip));
    else
        snprintf(ip, sizeof(ip), "?");
    if (!with_port)
        n = snprintf(out, cap, "%s", ip);
    else if (a->family == MESH_ADDR_V6)
        n = snprintf(out, cap, "[%s]:%u", ip, (unsigned)ntohs(a->port));
    else
        n = snprintf(out, cap, "%s:%u", ip, (unsigned)ntohs(a->port));
    if (n < 0 || (size_t)n >= cap)
        return -ENOSPC;
    return n;
}

int mesh_addr_parse_ip(const char *s, struct mesh_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (s == NULL)
        return -EINVAL;
    if (inet_pton(AF_INET, s, out->ip.v4) == 1) {
        out->family = MESH_ADDR_V4;
        return 0;
    }
    if (inet_pton(AF_INET6, s, out->ip.v6) == 1) {
        out->family = MESH_ADDR_V6;
        return 0;
    }
    return -EINVAL;
}

const char *mesh_tunnel_protocol_str(enum mesh_tunnel_protocol p)
{
    return p == MESH_TUNNEL_HBONE ? "HBONE" : "NONE";
}

/* ---- hashing ---- */

#define WS_HASH_SEED 2166136261u

static uint32_t ws_hash_bytes(uint32_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

static uint32_t ws_hash_str(uint32_t h, const char *s)
{
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static uint32_t ws_hash_ip(const struct mesh_addr *a)
{
    return ws_hash_bytes(ws_hash_bytes(WS_HASH_SEED, &a->family, sizeof(a->family)), a->ip.v6, addr_ip_len(a));
}

/* "namespace/hostname", hashed without building the string. */
static uint32_t ws_hash_service_key(const struct mesh_service *s)
{
    return ws_hash_str(ws_hash_str(ws_hash_str(WS_HASH_SEED, s->namespace), "/"), s->hostname);
}

static bool ws_service_has_key(const struct mesh_service *s, const char *key)
{
    size_t nl = strlen(s->namespace);
    return strncmp(key, s->namespace, nl) == 0 && key[nl] == '/' && strcmp(key + nl + 1, s->hostname) == 0;
}

static uint32_t ws_hash_ptr(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    return ws_hash_bytes(WS_HASH_SEED, &v, sizeof(v));
}

/* ---- tables ---- */

static size_t ws_table_cap(size_t keys)
{
    size_t cap = 8;
    while (cap < 2 * keys)
        cap <<= 1;
    return cap;
}

static bool ws_table_init(struct mesh_workloads *ws, struct ws_table *t, size_t keys)
{
    size_t cap = ws_table_cap(keys);
    t->slots = ws_alloc(ws, cap * sizeof(*t->slots)); /* zeroed: every slot free */
    t->mask = (uint32_t)(cap - 1);
    t->n = 0;
    return t->slots != NULL;
}

static void ws_table_put(struct ws_table *t, uint32_t h, const void *rec)
{
    uint32_t i = h & t->mask;
    while (t->slots[i].rec != NULL)
        i = (i + 1) & t->mask;
    t->slots[i] = (struct ws_slot){h, rec};
    t->n++;
}

/* A copy of prev with room for keys: the same slots when they fit, otherwise re-hashed from the stored hashes. */
static bool ws_table_clone(struct mesh_workloads *ws, struct ws_table *t, const struct ws_table *prev, size_t keys)
{
    size_t cap = (size_t)prev->mask + 1;
    if (cap >= 2 * keys) {
        t->slots = ws_alloc(ws, cap * sizeof(*t->slots));
        if (t->slots == NULL)
            return false;
        memcpy(t->slots, prev->slots, cap * sizeof(*t->slots));
        t->mask = prev->mask;
        t->n = prev->n;
        return true;
    }
    if (!ws_table_init(ws, t, keys))
        return false;
    for (size_t i = 0; i < cap; i++)
        if (prev->slots[i].rec != NULL)
            ws_table_put(t, prev->slots[i].hash, prev->slots[i].rec);
    return true;
}

/* Remove the slot (h, rec) if present (backward-shift deletion: no tombstones). */
static void ws_table_del(struct ws_table *t, uint32_t h, const void *rec)
{
    uint32_t i = h & t->mask, j;

    while (t->slots[i].rec != NULL && t->slots[i].rec != rec)
        i = (i + 1) & t->mask;
    if (t->slots[i].rec == NULL)
        return;
    for (j = i;;) {
        uint32_t home;
        j = (j + 1) & t->mask;
        if (t->slots[j].rec == NULL)
            break;
        home = t->slots[j].hash & t->mask;
        /* slot j may fill the hole at i unless its home lies cyclically in (i, j] */
        if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i].rec = NULL;
    t->n--;
}

#define WS_FOR_HASH(t, h, i)                                                                                           \
    for (uint32_t i = (h) & (t)->mask; (t)->slots[i].rec != NULL; i = (i + 1) & (t)->mask)                            \
        if ((t)->slots[i].hash == (h))

static bool ws_has_ip(const struct mesh_addr *addrs, size_t n, const struct mesh_addr *ip)
{
    for (size_t i = 0; i < n; i++)
        if (mesh_addr_ip_eq(&addrs[i], ip))
            return true;
    return false;
}

/* The record of t (workloads when services is false) holding ip, other than self; NULL when none. */
static const void *ws_table_find_ip(const struct ws_table *t, bool services, const struct mesh_addr *ip,
                                    const void *self)
{
    uint32_t h = ws_hash_ip(ip);
    WS_FOR_HASH(t, h, i)
    {
        const void *rec = t->slots[i].rec;
        if (rec == self)
            continue;
        if (services ? ws_has_ip(((const struct mesh_service *)rec)->addresses,
                                 ((const struct mesh_service *)rec)->n_addresses, ip)
                     : ws_has_ip(((const struct mesh_workload *)rec)->addresses,
                                 ((const struct mesh_workload *)rec)->n_addresses, ip))
            return rec;
    }
    return NULL;
}

/* Index the addresses of a workload (services false) or service; false when another record holds one. */
static bool ws_index_addrs(struct ws_table *t, bool services, const void *rec, const struct mesh_addr *addrs,
                           size_t n)
{
    for (size_t j = 0; j < n; j++) {
        if (ws_table_find_ip(t, services, &addrs[j], rec) != NULL)
            return false;
        ws_table_put(t, ws_hash_ip(&addrs[j]), rec);
    }
    return true;
}

static void ws_unindex_addrs(struct ws_table *t, const void *rec, const struct mesh_addr *addrs, size_t n)
{
    for (size_t j = 0; j < n; j++)
        ws_table_del(t, ws_hash_ip(&addrs[j]), rec);
}

static size_t ws_indexed_addresses(const struct mesh_workload *w)
{
    return w->network_mode == MESH_NETWORK_HOST ? 0 : w->n_addresses;
}

static const char *ws_index_workload(struct mesh_workloads *ws, const struct mesh_workload *w)
{
    uint32_t h = ws_hash_str(WS_HASH_SEED, w->uid);
    WS_FOR_HASH(&ws->by_uid, h, i)
    {
        if (strcmp(((const struct mesh_workload *)ws->by_uid.slots[i].rec)->uid, w->uid) == 0)
            return "duplicate workload uid";
    }
    ws_table_put(&ws->by_uid, h, w);
    if (!ws_index_addrs(&ws->by_ip, false, w, w->addresses, ws_indexed_addresses(w)))
        return "address claimed by two workloads";
    return NULL;
}

static const char *ws_index_service(struct mesh_workloads *ws, const struct mesh_service *s)
{
    uint32_t h = ws_hash_service_key(s);
    WS_FOR_HASH(&ws->by_key, h, i)
    {
        const struct mesh_service *o = ws->by_key.slots[i].rec;
        if (strcmp(o->namespace, s->namespace) == 0 && strcmp(o->hostname, s->hostname) == 0)
            return "duplicate service namespace/hostname";
    }
    ws_table_put(&ws->by_key, h, s);
    if (!ws_index_addrs(&ws->by_vip, true, s, s->addresses, s->n_addresses))
        return "VIP claimed by two services";
    return NULL;
}

/* ---- endpoint lists ---- */

static struct ws_eps *ws_eps_slot(const struct mesh_workloads *ws, const struct mesh_service *svc)
{
    uint32_t h = ws_hash_ptr(svc);
    for (uint32_t i = h & ws->eps_mask; ws->eps[i].svc != NULL; i = (i + 1) & ws->eps_mask)
        if (ws->eps[i].svc == svc)
            return &ws->eps[i];
    return NULL;
}

static bool ws_eps_init(struct mesh_workloads *ws)
{
    size_t cap = ws_table_cap(ws->n_s);
    ws->eps = ws_alloc(ws, cap * sizeof(*ws->eps));
    if (ws->eps == NULL)
        return false;
    ws->eps_mask = (uint32_t)(cap - 1);
    for (size_t k = 0; k < ws->n_s; k++) {
        uint32_t h = ws_hash_ptr(ws->s[k]), i = h & ws->eps_mask;
        while (ws->eps[i].svc != NULL)
            i = (i + 1) & ws->eps_mask;
        ws->eps[i] = (struct ws_eps){ws->s[k], NULL, 0, h};
    }
    return true;
}

/* Count (fill false) or append (fill true) the endpoints w gives to the services of ws, optionally only those
 * marked in only (a set of service records; NULL: all). */
static void ws_eps_add(struct mesh_workloads *ws, const struct mesh_workload *w, bool fill, const struct ws_table *only)
{
    for (size_t j = 0; j < w->n_services; j++) {
        const struct mesh_service *sv = mesh_workloads_find_service_by_key(ws, w->services[j].key);
        struct ws_eps *e;
        if (sv == NULL)
            continue; /* the service may arrive later (xDS ordering) */
        if (only != NULL) {
            bool marked = false;
            uint32_t h = ws_hash_ptr(sv);
            WS_FOR_HASH(only, h, i)
            {
                if (only->slots[i].rec == sv)
                    marked = true;
            }
            if (!marked)
                continue;
        }
        e = ws_eps_slot(ws, sv);
        if (fill)
            e->eps[e->n] = (struct mesh_endpoint){w, w->services[j].ports, w->services[j].n_ports};
        e->n++;
    }
}

/* Every service's endpoints (workloads whose services map names it), in workload order. */
static const char *ws_build_eps(struct mesh_workloads *ws)
{
    if (!ws_eps_init(ws))
        return "out of memory";
    for (size_t i = 0; i < ws->n_w; i++)
        ws_eps_add(ws, ws->w[i], false, NULL);
    for (uint32_t k = 0; k <= ws->eps_mask; k++) {
        if (ws->eps[k].svc == NULL)
            continue;
        ws->eps[k].eps = ws_alloc(ws, (ws->eps[k].n + 1) * sizeof(struct mesh_endpoint));
        if (ws->eps[k].eps == NULL)
            return "out of memory";
        ws->eps[k].n = 0;
    }
    for (size_t i = 0; i < ws->n_w; i++)
        ws_eps_add(ws, ws->w[i], true, NULL);
    return NULL;
}

/* ---- build ---- */

static void ws_copy_gateway(struct mesh_workloads *ws, struct mesh_gateway *d, const struct mesh_gateway *s)
{
    *d = *s;
    d->hostname = ws_strdup(ws, s->hostname);
    d->hostname_namespace = ws_strdup(ws, s->hostname_namespace);
}

static const char *ws_copy_workload(struct mesh_workloads *ws, struct mesh_workload *d, const struct mesh_workload *s)
{
    *d = *s;
    if (s->uid == NULL || s->uid[0] == '\0')
        return "workload without uid";
    d->uid = ws_strdup(ws, s->uid);
    d->name = ws_strdup(ws, s->name);
    d->namespace = ws_strdup(ws, s->namespace);
    d->service_account = ws_strdup(ws, s->service_account != NULL && s->service_account[0] != '\0'
                                           ? s->service_account
                                           : MESH_SPIFFE_DEFAULT_SERVICE_ACCOUNT);
    d->trust_domain = ws_strdup(ws, s->trust_domain != NULL && s->trust_domain[0] != '\0'
                                        ? s->trust_domain
                                        : MESH_SPIFFE_DEFAULT_TRUST_DOMAIN);
    d->network = ws_strdup(ws, s->network);
    d->node = ws_strdup(ws, s->node);
    d->canonical_name = ws_strdup(ws, s->canonical_name);
    d->canonical_revision = ws_strdup(ws, s->canonical_revision);
    d->workload_name = ws_strdup(ws, s->workload_name);
    d->cluster_id = ws_strdup(ws, s->cluster_id);
    for (size_t i = 0; i < s->n_addresses; i++)
        if (!addr_valid(&s->addresses[i]))
            return "workload address has no valid family";
    struct mesh_addr *addrs = ws_memdup(ws, s->addresses, s->n_addresses * sizeof(*addrs));
    if (addrs != NULL)
        for (size_t i = 0; i < s->n_addresses; i++)
            addrs[i].port = 0;
    d->addresses = addrs;
    if (s->protocol != MESH_TUNNEL_NONE && s->protocol != MESH_TUNNEL_HBONE)
        return "unsupported tunnel protocol";
    ws_copy_gateway(ws, &d->waypoint, &s->waypoint);
    d->authorization_policies = ws_strvdup(ws, s->authorization_policies, s->n_authorization_policies);
    struct mesh_workload_service *svcs = ws_alloc(ws, (s->n_services + 1) * sizeof(*svcs));
    if (svcs != NULL) {
        for (size_t i = 0; i < s->n_services; i++) {
            if (s->services[i].key == NULL || strchr(s->services[i].key, '/') == NULL)
                return "workload service key is not namespace/hostname";
            svcs[i].key = ws_strdup(ws, s->services[i].key);
            svcs[i].ports = ws_memdup(ws, s->services[i].ports, s->services[i].n_ports * sizeof(struct mesh_port));
            svcs[i].n_ports = s->services[i].n_ports;
        }
    }
    d->services = svcs;
    if (d->capacity == 0)
        d->capacity = 1;
    struct mesh_spiffe_id id;
    if (mesh_workload_identity(d, &id) != 0)
        return "workload identity (trust domain, namespace, service account) is not a valid SPIFFE ID";
    return NULL;
}

int mesh_workload_identity(const struct mesh_workload *w, struct mesh_spiffe_id *out)
{
    const char *td = w->trust_domain != NULL && w->trust_domain[0] != '\0' ? w->trust_domain
                                                                          : MESH_SPIFFE_DEFAULT_TRUST_DOMAIN;
    const char *sa = w->service_account != NULL && w->service_account[0] != '\0'
                         ? w->service_account
                         : MESH_SPIFFE_DEFAULT_SERVICE_ACCOUNT;
    return mesh_spiffe_from_parts(td, w->namespace != NULL ? w->namespace : "", sa, out);
}

static const char *ws_copy_service(struct mesh_workloads *ws, struct mesh_service *d, const struct mesh_service *s)
{
    *d = *s;
    if (s->hostname == NULL || s->hostname[0] == '\0')
        return "service without hostname";
    if (s->namespace == NULL || s->namespace[0] == '\0')
        return "service without namespace";
    d->name = ws_strdup(ws, s->name);
    d->namespace = ws_strdup(ws, s->namespace);
    d->hostname = ws_strdup(ws, s->hostname);
    for (size_t i = 0; i < s->n_addresses; i++)
        if (!addr_valid(&s->addresses[i]))
            return "service address has no valid family";
    struct mesh_addr *addrs = ws_memdup(ws, s->addresses, s->n_addresses * sizeof(*addrs));
    if (addrs != NULL)
        for (size_t i = 0; i < s->n_addresses; i++)
            addrs[i].port = 0;
    d->addresses = addrs;
    for (size_t i = 0; i < s->n_ports; i++) {
        if (s->ports[i].service_port == 0)
            return "service port 0";
        for (size_t j = 0; j < i; j++)
            if (s->ports[j].service_port == s->ports[i].service_port)
                return "service port listed twice";
    }
    d->ports = ws_memdup(ws, s->ports, s->n_ports * sizeof(struct mesh_port));
    d->subject_alt_names = ws_strvdup(ws, s->subject_alt_names, s->n_subject_alt_names);
    ws_copy_gateway(ws, &d->waypoint, &s->waypoint);
    return NULL;
}

static struct mesh_workloads *ws_start(const struct mesh_env *env, size_t n_w, size_t n_s)
{
    struct mesh_workloads *ws = mesh_env_calloc(env, sizeof(*ws));

    if (ws == NULL)
        return NULL;
    ws->env = env;
    atomic_init(&ws->refs, 1);
    ws->w = ws_alloc(ws, (n_w + 1) * sizeof(*ws->w));
    ws->s = ws_alloc(ws, (n_s + 1) * sizeof(*ws->s));
    if (ws->w == NULL || ws->s == NULL) {
        ws_destroy(ws);
        return NULL;
    }
    return ws;
}

static size_t ws_count_addresses(const struct mesh_workloads *ws, bool services)
{
    size_t n = 0;
    if (services) {
        for (size_t i = 0; i < ws->n_s; i++)
            n += ws->s[i]->n_addresses;
    } else {
        for (size_t i = 0; i < ws->n_w; i++)
            n += ws_indexed_addresses(ws->w[i]);
    }
    return n;
}

/* Index every record of ws from scratch. */
static const char *ws_build_indexes(struct mesh_workloads *ws)
{
    const char *why = NULL;

    if (!ws_table_init(ws, &ws->by_uid, ws->n_w) || !ws_table_init(ws, &ws->by_key, ws->n_s) ||
        !ws_table_init(ws, &ws->by_ip, ws_count_addresses(ws, false)) ||
        !ws_table_init(ws, &ws->by_vip, ws_count_addresses(ws, true)))
        return "out of memory";
    for (size_t i = 0; i < ws->n_w && why == NULL; i++)
        why = ws_index_workload(ws, ws->w[i]);
    for (size_t i = 0; i < ws->n_s && why == NULL; i++)
        why = ws_index_service(ws, ws->s[i]);
    return why != NULL ? why : ws_build_eps(ws);
}

/* Hand ws out, or destroy it and report why. */
static struct mesh_workloads *ws_finish(struct mesh_workloads *ws, const char *why, const char **err)
{
    if (ws->oom)
        why = "out of memory";
    if (why != NULL) {
        *err = why;
        ws_destroy(ws);
        return NULL;
    }
    return ws;
}

struct mesh_workloads *mesh_workloads_new(const struct mesh_env *env, const struct mesh_workload *w, size_t n_w,
                                          const struct mesh_service *s, size_t n_s, const char **err)
{
    const char *why = NULL;
    struct mesh_workloads *ws = ws_start(env, n_w, n_s);

    if (ws == NULL) {
        *err = "out of memory";
        return NULL;
    }
    for (size_t i = 0; i < n_w && why == NULL; i++) {
        struct mesh_workload *d = ws_alloc(ws, sizeof(*d));
        if (d == NULL)
            break;
        why = ws_copy_workload(ws, d, &w[i]);
        ws->w[ws->n_w++] = d;
    }
    for (size_t i = 0; i < n_s && why == NULL && !ws->oom; i++) {
        struct mesh_service *d = ws_alloc(ws, sizeof(*d));
        if (d == NULL)
            break;
        why = ws_copy_service(ws, d, &s[i]);
        ws->s[ws->n_s++] = d;
    }
    if (why == NULL && !ws->oom)
        why = ws_build_indexes(ws);
    return ws_finish(ws, why, err);
}

/* A shared record must already be what ws_copy_workload would make of it. */
static const char *ws_check_shared_workload(const struct mesh_workload *w)
{
    struct mesh_spiffe_id id;

    if (w->uid == NULL || w->uid[0] == '\0')
        return "workload without uid";
    if (w->name == NULL || w->namespace == NULL || w->service_account == NULL || w->service_account[0] == '\0' ||
        w->trust_domain == NULL || w->trust_domain[0] == '\0' || w->network == NULL || w->node == NULL ||
        w->canonical_name == NULL || w->canonical_revision == NULL || w->workload_name == NULL ||
        w->cluster_id == NULL || w->capacity == 0)
        return "shared workload record not normalized (NULL string, empty identity part or capacity 0)";
    for (size_t i = 0; i < w->n_addresses; i++)
        if (!addr_valid(&w->addresses[i]) || w->addresses[i].port != 0)
            return "workload address has no valid family";
    if (w->protocol != MESH_TUNNEL_NONE && w->protocol != MESH_TUNNEL_HBONE)
        return "unsupported tunnel protocol";
    for (size_t i = 0; i < w->n_services; i++)
        if (w->services[i].key == NULL || strchr(w->services[i].key, '/') == NULL)
            return "workload service key is not namespace/hostname";
    if (mesh_workload_identity(w, &id) != 0)
        return "workload identity (trust domain, namespace, service account) is not a valid SPIFFE ID";
    return NULL;
}

static const char *ws_check_shared_service(const struct mesh_service *s)
{
    if (s->hostname == NULL || s->hostname[0] == '\0')
        return "service without hostname";
    if (s->namespace == NULL || s->namespace[0] == '\0' || s->name == NULL)
        return "service without namespace";
    for (size_t i = 0; i < s->n_addresses; i++)
        if (!addr_valid(&s->addresses[i]) || s->addresses[i].port != 0)
            return "service address has no valid family";
    for (size_t i = 0; i < s->n_ports; i++) {
        if (s->ports[i].service_port == 0)
            return "service port 0";
        for (size_t j = 0; j < i; j++)
            if (s->ports[j].service_port == s->ports[i].service_port)
                return "service port listed twice";
    }
    return NULL;
}

/* Take the record arrays (no copy of the records) and hold them through keeper until the last unref. */
static struct mesh_workloads *ws_start_shared(const struct mesh_env *env, const struct mesh_workload *const *w,
                                              size_t n_w, const struct mesh_service *const *s, size_t n_s,
                                              const struct mesh_workloads_keeper *keeper)
{
    struct mesh_workloads *ws = ws_start(env, n_w, n_s);

    if (ws == NULL)
        return NULL;
    if (n_w != 0)
        memcpy(ws->w, w, n_w * sizeof(*w));
    if (n_s != 0)
        memcpy(ws->s, s, n_s * sizeof(*s));
    ws->n_w = n_w;
    ws->n_s = n_s;
    keeper->hold(keeper->u, &ws->ticket);
    ws->keeper = keeper; /* from here on, destroy releases */
    return ws;
}

struct mesh_workloads *mesh_workloads_new_shared(const struct mesh_env *env, const struct mesh_workload *const *w,
                                                 size_t n_w, const struct mesh_service *const *s, size_t n_s,
                                                 const struct mesh_workloads_keeper *keeper, const char **err)
{
    const char *why = NULL;
    struct mesh_workloads *ws;

    for (size_t i = 0; i < n_w && why == NULL; i++)
        why = ws_check_shared_workload(w[i]);
    for (size_t i = 0; i < n_s && why == NULL; i++)
        why = ws_check_shared_service(s[i]);
    if (why != NULL) {
        *err = why;
        return NULL;
    }
    ws = ws_start_shared(env, w, n_w, s, n_s, keeper);
    if (ws == NULL) {
        *err = "out of memory";
        return NULL;
    }
    return ws_finish(ws, ws_build_indexes(ws), err);
}

/* Mark in set the services of ws that w's services map names. */
static void ws_mark_services(const struct mesh_workloads *ws, const struct mesh_workload *w, struct ws_table *set)
{
    for (size_t j = 0; j < w->n_services; j++) {
        const struct mesh_service *sv = mesh_workloads_find_service_by_key(ws, w->services[j].key);
        bool known = false;
        uint32_t h;
        if (sv == NULL)
            continue;
        h = ws_hash_ptr(sv);
        WS_FOR_HASH(set, h, i)
        {
            if (set->slots[i].rec == sv)
                known = true;
        }
        if (!known)
            ws_table_put(set, h, sv);
    }
}

static bool ws_in_set(const struct ws_table *set, const void *rec)
{
    uint32_t h = ws_hash_ptr(rec);
    WS_FOR_HASH(set, h, i)
    {
        if (set->slots[i].rec == rec)
            return true;
    }
    return false;
}

/* The endpoint lists of ws from prev's: copied for services no change touches, re-made for the others (prev's list
 * without the gone workloads, then the added ones). */
static const char *ws_derive_eps(struct mesh_workloads *ws, const struct mesh_workloads *prev,
                                 const struct mesh_workload *const *gone, size_t n_gone,
                                 const struct mesh_workload *const *added, size_t n_added)
{
    struct ws_table touched, gone_set;
    size_t refs = 0;

    for (size_t i = 0; i < n_gone; i++)
        refs += gone[i]->n_services;
    for (size_t i = 0; i < n_added; i++)
        refs += added[i]->n_services;
    if (!ws_table_init(ws, &touched, refs) || !ws_table_init(ws, &gone_set, n_gone) ||
        !ws_eps_init(ws))
        return "out of memory";
    for (size_t i = 0; i < n_gone; i++) {
        ws_mark_services(prev, gone[i], &touched);
        ws_table_put(&gone_set, ws_hash_ptr(gone[i]), gone[i]);
    }
    for (size_t i = 0; i < n_added; i++)
        ws_mark_services(ws, added[i], &touched);
    for (size_t i = 0; i < n_added; i++)
        ws_eps_add(ws, added[i], false, &touched); /* counts the additions of touched services */
    for (uint32_t k = 0; k <= ws->eps_mask; k++) {
        struct ws_eps *e = &ws->eps[k];
        const struct ws_eps *p;
        if (e->svc == NULL)
            continue;
        p = ws_eps_slot(prev, e->svc);
        e->eps = ws_alloc(ws, ((p != NULL ? p->n : 0) + e->n + 1) * sizeof(struct mesh_endpoint));
        if (e->eps == NULL)
            return "out of memory";
        e->n = 0;
        if (p == NULL)
            continue;
        if (!ws_in_set(&touched, e->svc)) {
            memcpy(e->eps, p->eps, p->n * sizeof(struct mesh_endpoint));
            e->n = p->n;
            continue;
        }
        for (uint32_t i = 0; i < p->n; i++)
            if (!ws_in_set(&gone_set, p->eps[i].workload))
                e->eps[e->n++] = p->eps[i];
    }
    for (size_t i = 0; i < n_added; i++)
        ws_eps_add(ws, added[i], true, &touched);
    return NULL;
}

struct mesh_workloads *mesh_workloads_derive_shared(const struct mesh_workloads *prev,
                                                    const struct mesh_workload *const *w, size_t n_w,
                                                    const struct mesh_workload *const *gone, size_t n_gone,
                                                    const struct mesh_workload *const *added, size_t n_added,
                                                    const char **err)
{
    const char *why = NULL;
    struct mesh_workloads *ws;
    size_t n_ip;

    if (prev == NULL || prev->keeper == NULL) {
        *err = "no shared snapshot to derive from";
        return NULL;
    }
    for (size_t i = 0; i < n_added && why == NULL; i++)
        why = ws_check_shared_workload(added[i]);
    if (why != NULL) {
        *err = why;
        return NULL;
    }
    ws = ws_start_shared(prev->env, w, n_w, (const struct mesh_service *const *)prev->s, prev->n_s, prev->keeper);
    if (ws == NULL) {
        *err = "out of memory";
        return NULL;
    }
    n_ip = prev->by_ip.n;
    for (size_t i = 0; i < n_added; i++)
        n_ip += ws_indexed_addresses(added[i]);
    if (!ws_table_clone(ws, &ws->by_uid, &prev->by_uid, prev->by_uid.n + n_added) ||
        !ws_table_clone(ws, &ws->by_ip, &prev->by_ip, n_ip) ||
        !ws_table_clone(ws, &ws->by_key, &prev->by_key, prev->by_key.n) ||
        !ws_table_clone(ws, &ws->by_vip, &prev->by_vip, prev->by_vip.n))
        return ws_finish(ws, "out of memory", err);
    for (size_t i = 0; i < n_gone; i++) {
        ws_table_del(&ws->by_uid, ws_hash_str(WS_HASH_SEED, gone[i]->uid), gone[i]);
        ws_unindex_addrs(&ws->by_ip, gone[i], gone[i]->addresses, ws_indexed_addresses(gone[i]));
    }
    for (size_t i = 0; i < n_added && why == NULL; i++)
        why = ws_index_workload(ws, added[i]);
    if (why == NULL && ws->by_uid.n != n_w)
        why = "changes do not add up to the workload list";
    if (why == NULL)
        why = ws_derive_eps(ws, prev, gone, n_gone, added, n_added);
    return ws_finish(ws, why, err);
}

const struct mesh_workloads *mesh_workloads_ref(const struct mesh_workloads *ws)
{
    struct mesh_workloads *m = (struct mesh_workloads *)(uintptr_t)ws;
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return ws;
}

void mesh_workloads_unref(const struct mesh_workloads *ws)
{
    if (ws == NULL)
        return;
    struct mesh_workloads *m = (struct mesh_workloads *)(uintptr_t)ws;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        ws_destroy(m);
}

/* ---- lookups ---- */

size_t mesh_workloads_count(const struct mesh_workloads *ws)
{
    return ws != NULL ? ws->n_w : 0;
}

const struct mesh_workload *mesh_workloads_at(const struct mesh_workloads *ws, size_t i)
{
    return ws != NULL && i < ws->n_w ? ws->w[i] : NULL;
}

size_t mesh_workloads_service_count(const struct mesh_workloads *ws)
{
    return ws != NULL ? ws->n_s : 0;
}

const struct mesh_service *mesh_workloads_service_at(const struct mesh_workloads *ws, size_t i)
{
    return ws != NULL && i < ws->n_s ? ws->s[i] : NULL;
}

const struct mesh_workload *mesh_workloads_find_by_ip(const struct mesh_workloads *ws, const struct mesh_addr *ip)
{
    if (ws == NULL || !addr_valid(ip))
        return NULL;
    return ws_table_find_ip(&ws->by_ip, false, ip, NULL);
}

const struct mesh_workload *mesh_workloads_find_by_uid(const struct mesh_workloads *ws, const char *uid)
{
    uint32_t h;

    if (ws == NULL || uid == NULL)
        return NULL;
    h = ws_hash_str(WS_HASH_SEED, uid);
    WS_FOR_HASH(&ws->by_uid, h, i)
    {
        const struct mesh_workload *w = ws->by_uid.slots[i].rec;
        if (strcmp(w->uid, uid) == 0)
            return w;
    }
    return NULL;
}

const struct mesh_service *mesh_workloads_find_service_by_vip(const struct mesh_workloads *ws,
                                                              const struct mesh_addr *vip)
{
    if (ws == NULL || !addr_valid(vip))
        return NULL;
    return ws_table_find_ip(&ws->by_vip, true, vip, NULL);
}

static const struct mesh_port *svc_find_port(const struct mesh_port *ports, size_t n, uint16_t port)
{
    for (size_t i = 0; i < n; i++)
        if (ports[i].service_port == port)
            return &ports[i];
    return NULL;
}

const struct mesh_service *mesh_workloads_find_service(const struct mesh_workloads *ws, const struct mesh_addr *vip_port,
                                                       const struct mesh_port **port_out)
{
    const struct mesh_service *s = mesh_workloads_find_service_by_vip(ws, vip_port);
    if (s == NULL)
        return NULL;
    const struct mesh_port *p = svc_find_port(s->ports, s->n_ports, ntohs(vip_port->port));
    if (p == NULL)
        return NULL;
    if (port_out != NULL)
        *port_out = p;
    return s;
}

const struct mesh_service *mesh_workloads_find_service_by_key(const struct mesh_workloads *ws, const char *key)
{
    const char *slash;
    uint32_t h;

    if (ws == NULL || key == NULL || (slash = strchr(key, '/')) == NULL)
        return NULL;
    h = ws_hash_str(ws_hash_str(ws_hash_bytes(WS_HASH_SEED, key, (size_t)(slash - key)), "/"), slash + 1);
    WS_FOR_HASH(&ws->by_key, h, i)
    {
        const struct mesh_service *sv = ws->by_key.slots[i].rec;
        if (ws_service_has_key(sv, key))
            return sv;
    }
    return NULL;
}

size_t mesh_workloads_endpoints(const struct mesh_workloads *ws, const struct mesh_service *svc,
                                const struct mesh_endpoint **out)
{
    const struct ws_eps *e = ws != NULL && ws->eps != NULL ? ws_eps_slot(ws, svc) : NULL;

    *out = e != NULL ? e->eps : NULL;
    return e != NULL ? e->n : 0;
}

/* The target port of endpoint e for service_port, or 0 when it can't be known. */
static uint16_t ep_target_port(const struct mesh_service *svc, const struct mesh_endpoint *e, uint16_t service_port)
{
    const struct mesh_port *wp = svc_find_port(e->ports, e->n_ports, service_port);
    if (wp != NULL && wp->target_port != 0)
        return wp->target_port;
    if (svc->n_ports == 0)
        return service_port;
    const struct mesh_port *sp = svc_find_port(svc->ports, svc->n_ports, service_port);
    if (sp != NULL && sp->target_port != 0)
        return sp->target_port;
    return 0;
}

static const struct mesh_addr *ep_addr(const struct mesh_workload *w, uint8_t family)
{
    for (size_t i = 0; i < w->n_addresses; i++)
        if (family == 0 || w->addresses[i].family == family)
            return &w->addresses[i];
    return NULL;
}

static bool ep_eligible(const struct mesh_service *svc, const struct mesh_endpoint *e, uint16_t service_port,
                        uint8_t family)
{
    if (svc->lb_health != MESH_LB_ALLOW_ALL && e->workload->status != MESH_WORKLOAD_HEALTHY)
        return false;
    return ep_addr(e->workload, family) != NULL && ep_target_port(svc, e, service_port) != 0;
}

const struct mesh_endpoint *mesh_workloads_pick_endpoint(const struct mesh_workloads *ws, const struct mesh_service *svc,
                                                         uint16_t service_port, uint8_t family, uint64_t rnd,
                                                         uint16_t *target_port, struct mesh_addr *addr)
{
    const struct mesh_endpoint *eps;
    size_t n = mesh_workloads_endpoints(ws, svc, &eps);
    uint64_t total = 0;

    for (size_t i = 0; i < n; i++)
        if (ep_eligible(svc, &eps[i], service_port, family))
            total += eps[i].workload->capacity;
    if (total == 0)
        return NULL;
    uint64_t r = rnd % total;
    for (size_t i = 0; i < n; i++) {
        if (!ep_eligible(svc, &eps[i], service_port, family))
            continue;
        if (r < eps[i].workload->capacity) {
            uint16_t tp = ep_target_port(svc, &eps[i], service_port);
            *target_port = tp;
            *addr = *ep_addr(eps[i].workload, family);
            addr->port = htons(tp);
            return &eps[i];
        }
        r -= eps[i].workload->capacity;
    }
    return NULL;
}
