/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/workload.c - immutable workload/service snapshot (see workload.h for the invariants).
 *
 * Storage: everything a snapshot owns lives in an arena of env-allocated chunks, freed together by the last unref.
 * Indexes are sorted arrays searched with bsearch.
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

struct ws_ip_entry {
    struct mesh_addr ip; /* port 0 */
    uint32_t idx;
};

struct ws_key_entry {
    const char *key;
    uint32_t idx;
};

struct ws_service_eps {
    struct mesh_endpoint *eps;
    size_t n;
};

struct mesh_workloads {
    const struct mesh_env *env;
    atomic_long refs;
    struct ws_chunk *chunks;
    bool oom;
    struct mesh_workload *w;
    size_t n_w;
    struct mesh_service *s;
    size_t n_s;
    struct ws_ip_entry *by_ip;
    size_t n_by_ip;
    struct ws_ip_entry *by_vip;
    size_t n_by_vip;
    struct ws_key_entry *by_key; /* service "namespace/hostname" */
    struct ws_key_entry *by_uid;
    struct ws_service_eps *eps; /* per service */
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

static int addr_ip_cmp(const struct mesh_addr *a, const struct mesh_addr *b)
{
    if (a->family != b->family)
        return a->family < b->family ? -1 : 1;
    return memcmp(a->ip.v6, b->ip.v6, addr_ip_len(a));
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

/* ---- build ---- */

static int ip_entry_cmp(const void *a, const void *b)
{
    const struct ws_ip_entry *x = a, *y = b;
    return addr_ip_cmp(&x->ip, &y->ip);
}

static int key_entry_cmp(const void *a, const void *b)
{
    const struct ws_key_entry *x = a, *y = b;
    return strcmp(x->key, y->key);
}

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

static const char *ws_build_indexes(struct mesh_workloads *ws)
{
    size_t n = 0;
    for (size_t i = 0; i < ws->n_w; i++)
        if (ws->w[i].network_mode != MESH_NETWORK_HOST)
            n += ws->w[i].n_addresses;
    ws->by_ip = ws_alloc(ws, (n + 1) * sizeof(*ws->by_ip));
    if (ws->by_ip == NULL)
        return "out of memory";
    for (size_t i = 0; i < ws->n_w; i++) {
        if (ws->w[i].network_mode == MESH_NETWORK_HOST)
            continue;
        for (size_t j = 0; j < ws->w[i].n_addresses; j++) {
            ws->by_ip[ws->n_by_ip].ip = ws->w[i].addresses[j];
            ws->by_ip[ws->n_by_ip].idx = (uint32_t)i;
            ws->n_by_ip++;
        }
    }
    qsort(ws->by_ip, ws->n_by_ip, sizeof(*ws->by_ip), ip_entry_cmp);
    for (size_t i = 1; i < ws->n_by_ip; i++)
        if (addr_ip_cmp(&ws->by_ip[i - 1].ip, &ws->by_ip[i].ip) == 0)
            return "address claimed by two workloads";

    n = 0;
    for (size_t i = 0; i < ws->n_s; i++)
        n += ws->s[i].n_addresses;
    ws->by_vip = ws_alloc(ws, (n + 1) * sizeof(*ws->by_vip));
    if (ws->by_vip == NULL)
        return "out of memory";
    for (size_t i = 0; i < ws->n_s; i++) {
        for (size_t j = 0; j < ws->s[i].n_addresses; j++) {
            ws->by_vip[ws->n_by_vip].ip = ws->s[i].addresses[j];
            ws->by_vip[ws->n_by_vip].idx = (uint32_t)i;
            ws->n_by_vip++;
        }
    }
    qsort(ws->by_vip, ws->n_by_vip, sizeof(*ws->by_vip), ip_entry_cmp);
    for (size_t i = 1; i < ws->n_by_vip; i++)
        if (addr_ip_cmp(&ws->by_vip[i - 1].ip, &ws->by_vip[i].ip) == 0)
            return "VIP claimed by two services";

    ws->by_uid = ws_alloc(ws, (ws->n_w + 1) * sizeof(*ws->by_uid));
    ws->by_key = ws_alloc(ws, (ws->n_s + 1) * sizeof(*ws->by_key));
    ws->eps = ws_alloc(ws, (ws->n_s + 1) * sizeof(*ws->eps));
    if (ws->by_uid == NULL || ws->by_key == NULL || ws->eps == NULL)
        return "out of memory";
    for (size_t i = 0; i < ws->n_w; i++)
        ws->by_uid[i] = (struct ws_key_entry){ws->w[i].uid, (uint32_t)i};
    qsort(ws->by_uid, ws->n_w, sizeof(*ws->by_uid), key_entry_cmp);
    for (size_t i = 1; i < ws->n_w; i++)
        if (strcmp(ws->by_uid[i - 1].key, ws->by_uid[i].key) == 0)
            return "duplicate workload uid";
    for (size_t i = 0; i < ws->n_s; i++) {
        size_t kl = strlen(ws->s[i].namespace) + 1 + strlen(ws->s[i].hostname) + 1;
        char *k = ws_alloc(ws, kl);
        if (k == NULL)
            return "out of memory";
        snprintf(k, kl, "%s/%s", ws->s[i].namespace, ws->s[i].hostname);
        ws->by_key[i] = (struct ws_key_entry){k, (uint32_t)i};
    }
    qsort(ws->by_key, ws->n_s, sizeof(*ws->by_key), key_entry_cmp);
    for (size_t i = 1; i < ws->n_s; i++)
        if (strcmp(ws->by_key[i - 1].key, ws->by_key[i].key) == 0)
            return "duplicate service namespace/hostname";

    /* endpoints: two passes, count then fill, in workload order */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < ws->n_w; i++) {
            const struct mesh_workload *w = &ws->w[i];
            for (size_t j = 0; j < w->n_services; j++) {
                struct ws_key_entry q = {w->services[j].key, 0};
                const struct ws_key_entry *e = bsearch(&q, ws->by_key, ws->n_s, sizeof(q), key_entry_cmp);
                if (e == NULL)
                    continue; /* the service may arrive later (xDS ordering) */
                struct ws_service_eps *se = &ws->eps[e->idx];
                if (pass == 1)
                    se->eps[se->n] = (struct mesh_endpoint){w, w->services[j].ports, w->services[j].n_ports};
                se->n++;
            }
        }
        if (pass == 0) {
            for (size_t k = 0; k < ws->n_s; k++) {
                ws->eps[k].eps = ws_alloc(ws, (ws->eps[k].n + 1) * sizeof(struct mesh_endpoint));
                if (ws->eps[k].eps == NULL)
                    return "out of memory";
                ws->eps[k].n = 0;
            }
        }
    }
    return NULL;
}

struct mesh_workloads *mesh_workloads_new(const struct mesh_env *env, const struct mesh_workload *w, size_t n_w,
                                          const struct mesh_service *s, size_t n_s, const char **err)
{
    const char *why = NULL;
    struct mesh_workloads *ws = mesh_env_calloc(env, sizeof(*ws));

    if (ws == NULL) {
        *err = "out of memory";
        return NULL;
    }
    ws->env = env;
    atomic_init(&ws->refs, 1);
    ws->w = ws_alloc(ws, (n_w + 1) * sizeof(*ws->w));
    ws->s = ws_alloc(ws, (n_s + 1) * sizeof(*ws->s));
    if (ws->w == NULL || ws->s == NULL)
        goto fail;
    for (size_t i = 0; i < n_w && why == NULL; i++, ws->n_w++)
        why = ws_copy_workload(ws, &ws->w[i], &w[i]);
    for (size_t i = 0; i < n_s && why == NULL; i++, ws->n_s++)
        why = ws_copy_service(ws, &ws->s[i], &s[i]);
    if (why == NULL && !ws->oom)
        why = ws_build_indexes(ws);
    if (ws->oom)
        goto fail;
    if (why != NULL) {
        *err = why;
        ws_destroy(ws);
        return NULL;
    }
    return ws;
fail:
    *err = "out of memory";
    ws_destroy(ws);
    return NULL;
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
    return ws != NULL && i < ws->n_w ? &ws->w[i] : NULL;
}

size_t mesh_workloads_service_count(const struct mesh_workloads *ws)
{
    return ws != NULL ? ws->n_s : 0;
}

const struct mesh_service *mesh_workloads_service_at(const struct mesh_workloads *ws, size_t i)
{
    return ws != NULL && i < ws->n_s ? &ws->s[i] : NULL;
}

static const struct ws_ip_entry *ws_find_ip(const struct ws_ip_entry *tab, size_t n, const struct mesh_addr *ip)
{
    if (!addr_valid(ip))
        return NULL;
    struct ws_ip_entry q;
    memset(&q, 0, sizeof(q));
    q.ip.family = ip->family;
    memcpy(q.ip.ip.v6, ip->ip.v6, addr_ip_len(ip));
    return bsearch(&q, tab, n, sizeof(q), ip_entry_cmp);
}

const struct mesh_workload *mesh_workloads_find_by_ip(const struct mesh_workloads *ws, const struct mesh_addr *ip)
{
    if (ws == NULL)
        return NULL;
    const struct ws_ip_entry *e = ws_find_ip(ws->by_ip, ws->n_by_ip, ip);
    return e != NULL ? &ws->w[e->idx] : NULL;
}

const struct mesh_workload *mesh_workloads_find_by_uid(const struct mesh_workloads *ws, const char *uid)
{
    if (ws == NULL || uid == NULL)
        return NULL;
    struct ws_key_entry q = {uid, 0};
    const struct ws_key_entry *e = bsearch(&q, ws->by_uid, ws->n_w, sizeof(q), key_entry_cmp);
    return e != NULL ? &ws->w[e->idx] : NULL;
}

const struct mesh_service *mesh_workloads_find_service_by_vip(const struct mesh_workloads *ws,
                                                              const struct mesh_addr *vip)
{
    if (ws == NULL)
        return NULL;
    const struct ws_ip_entry *e = ws_find_ip(ws->by_vip, ws->n_by_vip, vip);
    return e != NULL ? &ws->s[e->idx] : NULL;
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
    if (ws == NULL || key == NULL)
        return NULL;
    struct ws_key_entry q = {key, 0};
    const struct ws_key_entry *e = bsearch(&q, ws->by_key, ws->n_s, sizeof(q), key_entry_cmp);
    return e != NULL ? &ws->s[e->idx] : NULL;
}

size_t mesh_workloads_endpoints(const struct mesh_workloads *ws, const struct mesh_service *svc,
                                const struct mesh_endpoint **out)
{
    if (ws == NULL || svc < ws->s || svc >= ws->s + ws->n_s) {
        *out = NULL;
        return 0;
    }
    const struct ws_service_eps *se = &ws->eps[svc - ws->s];
    *out = se->eps;
    return se->n;
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
