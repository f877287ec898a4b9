/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/authz.c - compile a policy model into a struct mesh_authz_set, and decide connections against it.
 *
 * Invariants (see also mesh/authz.h and mesh/authz_int.h):
 *  - Compilation either returns a complete set or frees everything it allocated: no partial set escapes.
 *  - mesh_authz_eval() reads the set only; it never allocates and keeps all per-call state on the stack.
 *  - Evaluation order and matching follow ztunnel-wire-facts.md §4 step by step; each step is marked "§4 ..." below.
 */
#include "mesh/authz.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mesh/authz_int.h"

#define AUTHZ_CHUNK_BYTES (64u * 1024)
#define AUTHZ_ALIGN 16u
#define AUTHZ_SEL_STACK 32 /* policy keys resolved once per call; later keys are resolved again per pass */

/* ---------------------------------------------------------------------------------------------------------------
 * Names
 * ------------------------------------------------------------------------------------------------------------ */

const char *mesh_authz_decision_str(enum mesh_authz_decision d)
{
    return d == MESH_AUTHZ_DENY ? "DENY" : "ALLOW";
}

const char *mesh_authz_reason_str(enum mesh_authz_reason r)
{
    switch (r) {
    case MESH_AUTHZ_REASON_NO_ALLOW_POLICIES:
        return "no allow policies, allow";
    case MESH_AUTHZ_REASON_ALLOW_MATCHED:
        return "allow policy match";
    case MESH_AUTHZ_REASON_DENY_MATCHED:
        return "explicitly denied";
    case MESH_AUTHZ_REASON_NOT_ALLOWED:
        return "allow policies exist, but none allowed";
    default:
        return "?";
    }
}

const char *mesh_authz_action_str(enum mesh_authz_action a)
{
    return a == MESH_AUTHZ_ACTION_DENY ? "DENY" : a == MESH_AUTHZ_ACTION_ALLOW ? "ALLOW" : "?";
}

const char *mesh_authz_scope_str(enum mesh_authz_scope s)
{
    switch (s) {
    case MESH_AUTHZ_SCOPE_GLOBAL:
        return "global";
    case MESH_AUTHZ_SCOPE_NAMESPACE:
        return "namespace";
    case MESH_AUTHZ_SCOPE_WORKLOAD_SELECTOR:
        return "workload_selector";
    default:
        return "?";
    }
}

const char *mesh_authz_attr_str(enum mesh_authz_attr a)
{
    static const char *const names[] = {
        [MESH_AUTHZ_ATTR_NAMESPACES] = "namespaces",
        [MESH_AUTHZ_ATTR_NOT_NAMESPACES] = "not_namespaces",
        [MESH_AUTHZ_ATTR_PRINCIPALS] = "principals",
        [MESH_AUTHZ_ATTR_NOT_PRINCIPALS] = "not_principals",
        [MESH_AUTHZ_ATTR_SOURCE_IPS] = "source_ips",
        [MESH_AUTHZ_ATTR_NOT_SOURCE_IPS] = "not_source_ips",
        [MESH_AUTHZ_ATTR_DESTINATION_IPS] = "destination_ips",
        [MESH_AUTHZ_ATTR_NOT_DESTINATION_IPS] = "not_destination_ips",
        [MESH_AUTHZ_ATTR_DESTINATION_PORTS] = "destination_ports",
        [MESH_AUTHZ_ATTR_NOT_DESTINATION_PORTS] = "not_destination_ports",
        [MESH_AUTHZ_ATTR_SERVICE_ACCOUNTS] = "service_accounts",
        [MESH_AUTHZ_ATTR_NOT_SERVICE_ACCOUNTS] = "not_service_accounts",
    };

    return (unsigned)a < sizeof(names) / sizeof(names[0]) && names[a] != NULL ? names[a] : "?";
}

/* ---------------------------------------------------------------------------------------------------------------
 * Arena and hash tables
 * ------------------------------------------------------------------------------------------------------------ */

/* Zeroed, AUTHZ_ALIGN-aligned memory that lives until the set is freed; NULL when the allocator fails. */
static void *authz_alloc(struct mesh_authz_set *set, size_t size)
{
    struct authz_chunk *c = set->chunks;
    size_t hdr = (sizeof(struct authz_chunk) + AUTHZ_ALIGN - 1) & ~(size_t)(AUTHZ_ALIGN - 1);
    uint8_t *p;

    size = (size + AUTHZ_ALIGN - 1) & ~(size_t)(AUTHZ_ALIGN - 1);
    if (size == 0)
        size = AUTHZ_ALIGN;
    if (c == NULL || c->cap - c->used < size) {
        size_t cap = size > AUTHZ_CHUNK_BYTES - hdr ? size : AUTHZ_CHUNK_BYTES - hdr;

        c = mesh_env_alloc(set->env, hdr + cap);
        if (c == NULL)
            return NULL;
        c->next = set->chunks;
        c->used = 0;
        c->cap = cap;
        set->chunks = c;
    }
    p = (uint8_t *)c + hdr + c->used;
    c->used += size;
    memset(p, 0, size);
    return p;
}

static char *authz_strdup(struct mesh_authz_set *set, const char *s, size_t len)
{
    char *d = authz_alloc(set, len + 1);

    if (d != NULL)
        memcpy(d, s, len);
    return d;
}

/* FNV-1a, 32 bits. */
static uint32_t authz_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

static const struct authz_hslot *authz_htab_find(const struct authz_htab *t, const char *s, size_t len, uint32_t h)
{
    if (t->slots == NULL)
        return NULL;
    for (uint32_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const struct authz_hslot *e = &t->slots[i];

        if (e->s == NULL)
            return NULL;
        if (e->hash == h && e->len == len && memcmp(e->s, s, len) == 0)
            return e;
    }
}

static void authz_htab_place(struct authz_hslot *slots, uint32_t mask, const struct authz_hslot *e)
{
    uint32_t i = e->hash & mask;

    while (slots[i].s != NULL)
        i = (i + 1) & mask;
    slots[i] = *e;
}

/* Insert s (which must live as long as the set) with val; the key must not be present. 0 or -ENOMEM. */
static int authz_htab_insert(struct mesh_authz_set *set, struct authz_htab *t, const char *s, size_t len, uint32_t h,
                             uint32_t val)
{
    struct authz_hslot e = {.s = s, .len = (uint32_t)len, .hash = h, .val = val};

    if (t->slots == NULL || (t->n + 1) * 2 > t->mask + 1) {
        uint32_t cap = t->slots == NULL ? 16 : (t->mask + 1) * 2;
        struct authz_hslot *slots = mesh_env_calloc(set->env, (size_t)cap * sizeof(*slots));

        if (slots == NULL)
            return -ENOMEM;
        for (uint32_t i = 0; t->slots != NULL && i <= t->mask; i++)
            if (t->slots[i].s != NULL)
                authz_htab_place(slots, cap - 1, &t->slots[i]);
        mesh_env_free(set->env, t->slots);
        t->slots = slots;
        t->mask = cap - 1;
    }
    authz_htab_place(t->slots, t->mask, &e);
    t->n++;
    return 0;
}

/* The interned id of s, or AUTHZ_NO_ID. */
static uint32_t authz_lookup_id(const struct mesh_authz_set *set, const char *s, size_t len)
{
    const struct authz_hslot *e = authz_htab_find(&set->strings, s, len, authz_hash(s, len));

    return e != NULL ? e->val : AUTHZ_NO_ID;
}

static int authz_intern(struct mesh_authz_set *set, const char *s, uint32_t *id)
{
    size_t len = strlen(s);
    uint32_t h = authz_hash(s, len);
    const struct authz_hslot *e = authz_htab_find(&set->strings, s, len, h);
    char *copy;

    if (e != NULL) {
        *id = e->val;
        return 0;
    }
    copy = authz_strdup(set, s, len);
    if (copy == NULL || authz_htab_insert(set, &set->strings, copy, len, h, set->strings.n) != 0)
        return -ENOMEM;
    *id = set->strings.n - 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Addresses
 * ------------------------------------------------------------------------------------------------------------ */

static uint32_t authz_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static struct authz_u128 authz_be128(const uint8_t *p)
{
    struct authz_u128 v = {0, 0};

    for (int i = 0; i < 8; i++) {
        v.hi = v.hi << 8 | p[i];
        v.lo = v.lo << 8 | p[8 + i];
    }
    return v;
}

static int authz_u128_cmp(const struct authz_u128 *a, const struct authz_u128 *b)
{
    if (a->hi != b->hi)
        return a->hi < b->hi ? -1 : 1;
    if (a->lo != b->lo)
        return a->lo < b->lo ? -1 : 1;
    return 0;
}

/* Canonical form of a connection address: IPv4-mapped IPv6 becomes IPv4; an unknown family gives family 0. */
static void authz_addr_canon(const struct mesh_addr *a, uint8_t *family, uint32_t *v4, struct authz_u128 *v6)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    *family = 0;
    if (a->family == MESH_ADDR_V4) {
        *family = MESH_ADDR_V4;
        *v4 = authz_be32(a->ip.v4);
    } else if (a->family == MESH_ADDR_V6 && memcmp(a->ip.v6, mapped, sizeof(mapped)) == 0) {
        *family = MESH_ADDR_V4;
        *v4 = authz_be32(a->ip.v6 + 12);
    } else if (a->family == MESH_ADDR_V6) {
        *family = MESH_ADDR_V6;
        *v6 = authz_be128(a->ip.v6);
    }
}

static uint16_t authz_port_host(uint16_t net)
{
    const uint8_t *b = (const uint8_t *)&net;

    return (uint16_t)(b[0] << 8 | b[1]);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Validation
 * ------------------------------------------------------------------------------------------------------------ */

static bool authz_check_list(const void *p, size_t n)
{
    return n == 0 || (p != NULL && n < UINT32_MAX / 4);
}

static bool authz_check_strs(const struct mesh_authz_str_match *v, size_t n)
{
    if (!authz_check_list(v, n))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (v[i].kind < MESH_AUTHZ_STR_EXACT || v[i].kind > MESH_AUTHZ_STR_PRESENCE)
            return false;
        if (v[i].kind != MESH_AUTHZ_STR_PRESENCE && v[i].value == NULL)
            return false;
    }
    return true;
}

static bool authz_check_cidrs(const struct mesh_authz_cidr *v, size_t n)
{
    if (!authz_check_list(v, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(v[i].family == MESH_ADDR_V4 && v[i].len <= 32) && !(v[i].family == MESH_ADDR_V6 && v[i].len <= 128))
            return false;
    return true;
}

static bool authz_check_sas(const struct mesh_authz_sa_match *v, size_t n)
{
    if (!authz_check_list(v, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if (v[i].namespace == NULL || v[i].service_account == NULL)
            return false;
    return true;
}

static bool authz_check_match(const struct mesh_authz_match *m)
{
    return authz_check_strs(m->namespaces, m->n_namespaces) &&
           authz_check_strs(m->not_namespaces, m->n_not_namespaces) &&
           authz_check_strs(m->principals, m->n_principals) &&
           authz_check_strs(m->not_principals, m->n_not_principals) &&
           authz_check_cidrs(m->source_ips, m->n_source_ips) &&
           authz_check_cidrs(m->not_source_ips, m->n_not_source_ips) &&
           authz_check_cidrs(m->destination_ips, m->n_destination_ips) &&
           authz_check_cidrs(m->not_destination_ips, m->n_not_destination_ips) &&
           authz_check_list(m->destination_ports, m->n_destination_ports) &&
           authz_check_list(m->not_destination_ports, m->n_not_destination_ports) &&
           authz_check_sas(m->service_accounts, m->n_service_accounts) &&
           authz_check_sas(m->not_service_accounts, m->n_not_service_accounts);
}

static bool authz_check_policy(const struct mesh_authz_policy *p)
{
    if (p->name == NULL || p->namespace == NULL)
        return false;
    if ((unsigned)p->scope > MESH_AUTHZ_SCOPE_WORKLOAD_SELECTOR || (unsigned)p->action > MESH_AUTHZ_ACTION_DENY)
        return false;
    if (!authz_check_list(p->rules, p->n_rules))
        return false;
    for (size_t r = 0; r < p->n_rules; r++) {
        const struct mesh_authz_rule *rule = &p->rules[r];

        if (!authz_check_list(rule->clauses, rule->n_clauses))
            return false;
        for (size_t c = 0; c < rule->n_clauses; c++) {
            const struct mesh_authz_clause *cl = &rule->clauses[c];

            if (!authz_check_list(cl->matches, cl->n_matches))
                return false;
            for (size_t m = 0; m < cl->n_matches; m++)
                if (!authz_check_match(&cl->matches[m]))
                    return false;
        }
    }
    return true;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Compilation
 * ------------------------------------------------------------------------------------------------------------ */

static int authz_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static int authz_cmp_u16(const void *a, const void *b)
{
    uint16_t x = *(const uint16_t *)a, y = *(const uint16_t *)b;

    return x < y ? -1 : x > y;
}

static int authz_cmp_r4(const void *a, const void *b)
{
    const struct authz_range4 *x = a, *y = b;

    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int authz_cmp_r6(const void *a, const void *b)
{
    const struct authz_range6 *x = a, *y = b;

    return authz_u128_cmp(&x->lo, &y->lo);
}

/* Sort and drop duplicates; returns the new count. */
static uint32_t authz_sort_unique_u32(uint32_t *v, uint32_t n)
{
    uint32_t k = 0;

    qsort(v, n, sizeof(*v), authz_cmp_u32);
    for (uint32_t i = 0; i < n; i++)
        if (k == 0 || v[k - 1] != v[i])
            v[k++] = v[i];
    return k;
}

static const void *authz_compile_strs(struct mesh_authz_set *set, const struct mesh_authz_str_match *v, size_t n)
{
    struct authz_strlist *l = authz_alloc(set, sizeof(*l));
    uint32_t n_exact = 0, n_prefix = 0, n_suffix = 0;
    uint32_t *exact;
    struct authz_str *prefix, *suffix;

    if (l == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        n_exact += v[i].kind == MESH_AUTHZ_STR_EXACT;
        n_prefix += v[i].kind == MESH_AUTHZ_STR_PREFIX;
        n_suffix += v[i].kind == MESH_AUTHZ_STR_SUFFIX;
        l->presence |= v[i].kind == MESH_AUTHZ_STR_PRESENCE;
    }
    exact = authz_alloc(set, n_exact * sizeof(*exact));
    prefix = authz_alloc(set, n_prefix * sizeof(*prefix));
    suffix = authz_alloc(set, n_suffix * sizeof(*suffix));
    if (exact == NULL || prefix == NULL || suffix == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        struct authz_str *dst = v[i].kind == MESH_AUTHZ_STR_PREFIX   ? &prefix[l->n_prefix++]
                                : v[i].kind == MESH_AUTHZ_STR_SUFFIX ? &suffix[l->n_suffix++]
                                                                     : NULL;

        if (v[i].kind == MESH_AUTHZ_STR_EXACT) {
            if (authz_intern(set, v[i].value, &exact[l->n_exact++]) != 0)
                return NULL;
        } else if (dst != NULL) {
            dst->len = (uint32_t)strlen(v[i].value);
            dst->s = authz_strdup(set, v[i].value, dst->len);
            if (dst->s == NULL)
                return NULL;
        }
    }
    l->n_exact = authz_sort_unique_u32(exact, l->n_exact);
    l->exact = exact;
    l->prefix = prefix;
    l->suffix = suffix;
    return l;
}

static const void *authz_compile_cidrs(struct mesh_authz_set *set, const struct mesh_authz_cidr *v, size_t n)
{
    struct authz_iplist *l = authz_alloc(set, sizeof(*l));
    struct authz_range4 *r4;
    struct authz_range6 *r6;
    uint32_t n4 = 0, n6 = 0, k;

    if (l == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        n4 += v[i].family == MESH_ADDR_V4;
    n6 = (uint32_t)n - n4;
    r4 = authz_alloc(set, n4 * sizeof(*r4));
    r6 = authz_alloc(set, n6 * sizeof(*r6));
    if (r4 == NULL || r6 == NULL)
        return NULL;
    n4 = n6 = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i].family == MESH_ADDR_V4) {
            uint32_t mask = v[i].len == 0 ? 0 : UINT32_MAX << (32 - v[i].len);

            r4[n4].lo = authz_be32(v[i].addr) & mask;
            r4[n4].hi = r4[n4].lo | ~mask;
            n4++;
        } else {
            struct authz_u128 a = authz_be128(v[i].addr), m;

            m.hi = v[i].len == 0 ? 0 : v[i].len >= 64 ? UINT64_MAX : UINT64_MAX << (64 - v[i].len);
            m.lo = v[i].len <= 64 ? 0 : v[i].len == 128 ? UINT64_MAX : UINT64_MAX << (128 - v[i].len);
            r6[n6].lo.hi = a.hi & m.hi;
            r6[n6].lo.lo = a.lo & m.lo;
            r6[n6].hi.hi = r6[n6].lo.hi | ~m.hi;
            r6[n6].hi.lo = r6[n6].lo.lo | ~m.lo;
            n6++;
        }
    }
    /* Merge overlapping and adjacent intervals so the lists are disjoint and sorted. */
    qsort(r4, n4, sizeof(*r4), authz_cmp_r4);
    k = 0;
    for (uint32_t i = 0; i < n4; i++) {
        if (k > 0 && (r4[k - 1].hi == UINT32_MAX || r4[i].lo <= r4[k - 1].hi + 1)) {
            if (r4[i].hi > r4[k - 1].hi)
                r4[k - 1].hi = r4[i].hi;
        } else {
            r4[k++] = r4[i];
        }
    }
    l->n4 = k;
    qsort(r6, n6, sizeof(*r6), authz_cmp_r6);
    k = 0;
    for (uint32_t i = 0; i < n6; i++) {
        struct authz_u128 next = r6[k > 0 ? k - 1 : 0].hi;
        bool top = next.hi == UINT64_MAX && next.lo == UINT64_MAX;

        if (!top) {
            next.lo++;
            next.hi += next.lo == 0;
        }
        if (k > 0 && (top || authz_u128_cmp(&r6[i].lo, &next) <= 0)) {
            if (authz_u128_cmp(&r6[i].hi, &r6[k - 1].hi) > 0)
                r6[k - 1].hi = r6[i].hi;
        } else {
            r6[k++] = r6[i];
        }
    }
    l->n6 = k;
    l->v4 = r4;
    l->v6 = r6;
    return l;
}

static const void *authz_compile_ports(struct mesh_authz_set *set, const uint16_t *v, size_t n)
{
    struct authz_portlist *l = authz_alloc(set, sizeof(*l));
    uint16_t *p = authz_alloc(set, n * sizeof(*p));
    uint32_t k = 0;

    if (l == NULL || p == NULL)
        return NULL;
    memcpy(p, v, n * sizeof(*p));
    qsort(p, n, sizeof(*p), authz_cmp_u16);
    for (size_t i = 0; i < n; i++)
        if (k == 0 || p[k - 1] != p[i])
            p[k++] = p[i];
    l->n = k;
    l->v = p;
    return l;
}

static const void *authz_compile_sas(struct mesh_authz_set *set, const struct mesh_authz_sa_match *v, size_t n)
{
    struct authz_salist *l = authz_alloc(set, sizeof(*l));
    uint32_t *pairs = authz_alloc(set, 2 * n * sizeof(*pairs));

    if (l == NULL || pairs == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (authz_intern(set, v[i].namespace, &pairs[2 * i]) != 0 ||
            authz_intern(set, v[i].service_account, &pairs[2 * i + 1]) != 0)
            return NULL;
    l->n = (uint32_t)n;
    l->pairs = pairs;
    return l;
}

static int authz_compile_match(struct mesh_authz_set *set, const struct mesh_authz_match *m, struct authz_cmatch *out)
{
    const struct {
        enum mesh_authz_attr attr;
        const void *v;
        size_t n;
    } lists[] = {
        {MESH_AUTHZ_ATTR_NAMESPACES, m->namespaces, m->n_namespaces},
        {MESH_AUTHZ_ATTR_NOT_NAMESPACES, m->not_namespaces, m->n_not_namespaces},
        {MESH_AUTHZ_ATTR_PRINCIPALS, m->principals, m->n_principals},
        {MESH_AUTHZ_ATTR_NOT_PRINCIPALS, m->not_principals, m->n_not_principals},
        {MESH_AUTHZ_ATTR_SOURCE_IPS, m->source_ips, m->n_source_ips},
        {MESH_AUTHZ_ATTR_NOT_SOURCE_IPS, m->not_source_ips, m->n_not_source_ips},
        {MESH_AUTHZ_ATTR_DESTINATION_IPS, m->destination_ips, m->n_destination_ips},
        {MESH_AUTHZ_ATTR_NOT_DESTINATION_IPS, m->not_destination_ips, m->n_not_destination_ips},
        {MESH_AUTHZ_ATTR_DESTINATION_PORTS, m->destination_ports, m->n_destination_ports},
        {MESH_AUTHZ_ATTR_NOT_DESTINATION_PORTS, m->not_destination_ports, m->n_not_destination_ports},
        {MESH_AUTHZ_ATTR_SERVICE_ACCOUNTS, m->service_accounts, m->n_service_accounts},
        {MESH_AUTHZ_ATTR_NOT_SERVICE_ACCOUNTS, m->not_service_accounts, m->n_not_service_accounts},
    };
    struct authz_term *terms;
    uint32_t n = 0;

    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        n += lists[i].n > 0;
    terms = authz_alloc(set, n * sizeof(*terms));
    if (terms == NULL)
        return -ENOMEM;
    n = 0;
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        const void *l = NULL;

        if (lists[i].n == 0)
            continue;
        switch (lists[i].attr) {
        case MESH_AUTHZ_ATTR_PRINCIPALS:
        case MESH_AUTHZ_ATTR_NOT_PRINCIPALS:
            set->has_principals = true;
            /* fall through */
        case MESH_AUTHZ_ATTR_NAMESPACES:
        case MESH_AUTHZ_ATTR_NOT_NAMESPACES:
            l = authz_compile_strs(set, lists[i].v, lists[i].n);
            break;
        case MESH_AUTHZ_ATTR_SOURCE_IPS:
        case MESH_AUTHZ_ATTR_NOT_SOURCE_IPS:
        case MESH_AUTHZ_ATTR_DESTINATION_IPS:
        case MESH_AUTHZ_ATTR_NOT_DESTINATION_IPS:
            l = authz_compile_cidrs(set, lists[i].v, lists[i].n);
            break;
        case MESH_AUTHZ_ATTR_DESTINATION_PORTS:
        case MESH_AUTHZ_ATTR_NOT_DESTINATION_PORTS:
            l = authz_compile_ports(set, lists[i].v, lists[i].n);
            break;
        case MESH_AUTHZ_ATTR_SERVICE_ACCOUNTS:
        case MESH_AUTHZ_ATTR_NOT_SERVICE_ACCOUNTS:
            l = authz_compile_sas(set, lists[i].v, lists[i].n);
            break;
        }
        if (l == NULL)
            return -ENOMEM;
        terms[n].attr = lists[i].attr;
        terms[n].list = l;
        n++;
    }
    out->n_terms = n;
    out->terms = terms;
    return 0;
}

static int authz_compile_policy(struct mesh_authz_set *set, uint32_t index, const struct mesh_authz_policy *p,
                                struct authz_cpolicy *out)
{
    size_t ns_len = strlen(p->namespace), name_len = strlen(p->name);
    struct authz_crule *rules;
    char *key;
    int rc;

    out->ns = authz_strdup(set, p->namespace, ns_len);
    out->name = authz_strdup(set, p->name, name_len);
    key = authz_alloc(set, ns_len + 1 + name_len + 1);
    if (out->ns == NULL || out->name == NULL || key == NULL)
        return -ENOMEM;
    memcpy(key, p->namespace, ns_len);
    key[ns_len] = '/';
    memcpy(key + ns_len + 1, p->name, name_len);
    out->key = key;
    if (authz_find_key(set, key, ns_len + 1 + name_len) >= 0)
        return -EEXIST;
    rc = authz_htab_insert(set, &set->keys, key, ns_len + 1 + name_len, authz_hash(key, ns_len + 1 + name_len), index);
    if (rc != 0)
        return rc;
    out->scope = p->scope;
    out->action = p->action;
    out->dry_run = p->dry_run;
    out->cat = p->action == MESH_AUTHZ_ACTION_DENY ? (p->dry_run ? AUTHZ_CAT_DRY_DENY : AUTHZ_CAT_DENY)
                                                   : (p->dry_run ? AUTHZ_CAT_DRY_ALLOW : AUTHZ_CAT_ALLOW);
    rules = authz_alloc(set, p->n_rules * sizeof(*rules));
    if (rules == NULL)
        return -ENOMEM;
    for (size_t r = 0; r < p->n_rules; r++) {
        const struct mesh_authz_rule *rule = &p->rules[r];
        struct authz_cclause *clauses = authz_alloc(set, rule->n_clauses * sizeof(*clauses));

        if (clauses == NULL)
            return -ENOMEM;
        for (size_t c = 0; c < rule->n_clauses; c++) {
            const struct mesh_authz_clause *cl = &rule->clauses[c];
            struct authz_cmatch *matches = authz_alloc(set, cl->n_matches * sizeof(*matches));

            if (matches == NULL)
                return -ENOMEM;
            for (size_t m = 0; m < cl->n_matches; m++)
                if ((rc = authz_compile_match(set, &cl->matches[m], &matches[m])) != 0)
                    return rc;
            clauses[c].n_matches = (uint32_t)cl->n_matches;
            clauses[c].matches = matches;
        }
        rules[r].n_clauses = (uint32_t)rule->n_clauses;
        rules[r].clauses = clauses;
    }
    out->n_rules = (uint32_t)p->n_rules;
    out->rules = rules;
    return 0;
}

/* The bucket a policy is listed in: a namespace bucket, the global one, or none (WORKLOAD_SELECTOR). */
static struct authz_bucket *authz_policy_bucket(struct mesh_authz_set *set, const struct authz_cpolicy *p)
{
    if (p->scope == MESH_AUTHZ_SCOPE_GLOBAL || (p->scope == MESH_AUTHZ_SCOPE_NAMESPACE && p->ns[0] == '\0'))
        return &set->global;
    if (p->scope == MESH_AUTHZ_SCOPE_NAMESPACE) {
        size_t len = strlen(p->ns);
        const struct authz_hslot *e = authz_htab_find(&set->namespaces, p->ns, len, authz_hash(p->ns, len));

        return e != NULL ? &set->ns_buckets[e->val] : NULL;
    }
    return NULL;
}

static int authz_build_buckets(struct mesh_authz_set *set)
{
    /* Pass 1: one bucket per distinct namespace of NAMESPACE-scoped policies. */
    for (uint32_t i = 0; i < set->n_policies; i++) {
        const struct authz_cpolicy *p = &set->policies[i];
        size_t len = strlen(p->ns);
        uint32_t h = authz_hash(p->ns, len);

        if (p->scope != MESH_AUTHZ_SCOPE_NAMESPACE || len == 0 || authz_htab_find(&set->namespaces, p->ns, len, h))
            continue;
        if (authz_htab_insert(set, &set->namespaces, p->ns, len, h, set->n_ns_buckets) != 0)
            return -ENOMEM;
        set->n_ns_buckets++;
    }
    set->ns_buckets = authz_alloc(set, set->n_ns_buckets * sizeof(*set->ns_buckets));
    if (set->ns_buckets == NULL)
        return -ENOMEM;
    /* Pass 2: count per bucket and category; pass 3: fill in input order. */
    for (uint32_t i = 0; i < set->n_policies; i++) {
        struct authz_bucket *b = authz_policy_bucket(set, &set->policies[i]);

        if (b != NULL)
            b->n[set->policies[i].cat]++;
    }
    for (uint32_t k = 0; k <= set->n_ns_buckets; k++) {
        struct authz_bucket *b = k < set->n_ns_buckets ? &set->ns_buckets[k] : &set->global;

        for (int c = 0; c < AUTHZ_CAT_COUNT; c++) {
            b->idx[c] = authz_alloc(set, b->n[c] * sizeof(uint32_t));
            if (b->idx[c] == NULL)
                return -ENOMEM;
            b->n[c] = 0;
        }
    }
    for (uint32_t i = 0; i < set->n_policies; i++) {
        struct authz_bucket *b = authz_policy_bucket(set, &set->policies[i]);
        enum authz_cat c = set->policies[i].cat;

        if (b != NULL)
            b->idx[c][b->n[c]++] = i;
    }
    return 0;
}

struct mesh_authz_set *mesh_authz_set_new(const struct mesh_env *env, const struct mesh_authz_policy *policies,
                                          size_t n, int *err)
{
    struct mesh_authz_set *set;
    int rc = 0;

    if (env == NULL || (n > 0 && policies == NULL) || n >= INT32_MAX) {
        rc = -EINVAL;
        goto out;
    }
    for (size_t i = 0; i < n && rc == 0; i++)
        if (!authz_check_policy(&policies[i]))
            rc = -EINVAL;
    if (rc != 0)
        goto out;
    set = mesh_env_calloc(env, sizeof(*set));
    if (set == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    set->env = env;
    set->n_policies = (uint32_t)n;
    set->policies = authz_alloc(set, n * sizeof(*set->policies));
    if (set->policies == NULL)
        rc = -ENOMEM;
    for (uint32_t i = 0; i < n && rc == 0; i++)
        rc = authz_compile_policy(set, i, &policies[i], &set->policies[i]);
    if (rc == 0)
        rc = authz_build_buckets(set);
    if (rc == 0) {
        if (err != NULL)
            *err = 0;
        return set;
    }
    mesh_authz_set_free(set);
out:
    if (err != NULL)
        *err = rc;
    return NULL;
}

void mesh_authz_set_free(struct mesh_authz_set *set)
{
    struct authz_chunk *c, *next;

    if (set == NULL)
        return;
    for (c = set->chunks; c != NULL; c = next) {
        next = c->next;
        mesh_env_free(set->env, c);
    }
    mesh_env_free(set->env, set->strings.slots);
    mesh_env_free(set->env, set->keys.slots);
    mesh_env_free(set->env, set->namespaces.slots);
    mesh_env_free(set->env, set);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Accessors
 * ------------------------------------------------------------------------------------------------------------ */

size_t mesh_authz_set_count(const struct mesh_authz_set *set)
{
    return set != NULL ? set->n_policies : 0;
}

const char *mesh_authz_set_policy_name(const struct mesh_authz_set *set, size_t i)
{
    return set->policies[i].name;
}

const char *mesh_authz_set_policy_namespace(const struct mesh_authz_set *set, size_t i)
{
    return set->policies[i].ns;
}

const char *mesh_authz_set_policy_key(const struct mesh_authz_set *set, size_t i)
{
    return set->policies[i].key;
}

enum mesh_authz_action mesh_authz_set_policy_action(const struct mesh_authz_set *set, size_t i)
{
    return set->policies[i].action;
}

bool mesh_authz_set_policy_dry_run(const struct mesh_authz_set *set, size_t i)
{
    return set->policies[i].dry_run;
}

int32_t authz_find_key(const struct mesh_authz_set *set, const char *key, size_t len)
{
    const struct authz_hslot *e = authz_htab_find(&set->keys, key, len, authz_hash(key, len));

    return e != NULL ? (int32_t)e->val : -1;
}

int32_t mesh_authz_set_find(const struct mesh_authz_set *set, const char *key, size_t len)
{
    return set != NULL && key != NULL ? authz_find_key(set, key, len) : -1;
}

const struct authz_bucket *authz_ns_bucket(const struct mesh_authz_set *set, const char *ns)
{
    size_t len = ns != NULL ? strlen(ns) : 0;
    const struct authz_hslot *e;

    if (len == 0)
        return NULL;
    e = authz_htab_find(&set->namespaces, ns, len, authz_hash(ns, len));
    return e != NULL ? &set->ns_buckets[e->val] : NULL;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Evaluation
 * ------------------------------------------------------------------------------------------------------------ */

void authz_subject_init(const struct mesh_authz_set *set, const struct mesh_authz_conn *conn, struct authz_subject *s)
{
    const struct mesh_spiffe_id *id = conn->peer;

    s->has_id = id != NULL;
    s->principal = NULL;
    s->principal_len = 0;
    s->principal_id = AUTHZ_NO_ID;
    s->sa_id = AUTHZ_NO_ID;
    /* §4 namespaces: the namespace from the peer's SPIFFE ID, "" when there is no identity. */
    s->ns = id != NULL ? id->ns : "";
    s->ns_len = (uint32_t)strlen(s->ns);
    s->ns_id = authz_lookup_id(set, s->ns, s->ns_len);
    if (id != NULL) {
        s->sa_id = authz_lookup_id(set, id->sa, strlen(id->sa));
        if (set->has_principals) {
            /* §4 principals: the identity without "spiffe://", i.e. td/ns/NS/sa/SA. */
            size_t td = strlen(id->td), ns = s->ns_len, sa = strlen(id->sa);
            char *p = s->principal_buf;

            memcpy(p, id->td, td);
            p += td;
            memcpy(p, "/ns/", 4);
            p += 4;
            memcpy(p, id->ns, ns);
            p += ns;
            memcpy(p, "/sa/", 4);
            p += 4;
            memcpy(p, id->sa, sa);
            p += sa;
            *p = '\0';
            s->principal = s->principal_buf;
            s->principal_len = (uint32_t)(p - s->principal_buf);
            s->principal_id = authz_lookup_id(set, s->principal, s->principal_len);
        }
    }
    authz_addr_canon(&conn->src, &s->src_family, &s->src4, &s->src6);
    authz_addr_canon(&conn->dst, &s->dst_family, &s->dst4, &s->dst6);
    s->port = authz_port_host(conn->dst.port);
}

static bool authz_strlist_any(const struct authz_strlist *l, const char *s, uint32_t len, uint32_t id)
{
    if (l->presence && len > 0)
        return true;
    if (id != AUTHZ_NO_ID && l->n_exact > 0) {
        uint32_t lo = 0, hi = l->n_exact;

        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;

            if (l->exact[mid] == id)
                return true;
            if (l->exact[mid] < id)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    for (uint32_t i = 0; i < l->n_prefix; i++)
        if (l->prefix[i].len <= len && memcmp(s, l->prefix[i].s, l->prefix[i].len) == 0)
            return true;
    for (uint32_t i = 0; i < l->n_suffix; i++)
        if (l->suffix[i].len <= len && memcmp(s + len - l->suffix[i].len, l->suffix[i].s, l->suffix[i].len) == 0)
            return true;
    return false;
}

static bool authz_iplist_has(const struct authz_iplist *l, uint8_t family, uint32_t v4, const struct authz_u128 *v6)
{
    uint32_t lo = 0, hi;

    if (family == MESH_ADDR_V4) {
        /* Find the last interval whose lo <= v4. */
        hi = l->n4;
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;

            if (l->v4[mid].lo <= v4)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo > 0 && v4 <= l->v4[lo - 1].hi;
    }
    if (family == MESH_ADDR_V6) {
        hi = l->n6;
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;

            if (authz_u128_cmp(&l->v6[mid].lo, v6) <= 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo > 0 && authz_u128_cmp(v6, &l->v6[lo - 1].hi) <= 0;
    }
    return false;
}

static bool authz_portlist_has(const struct authz_portlist *l, uint16_t port)
{
    uint32_t lo = 0, hi = l->n;

    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;

        if (l->v[mid] == port)
            return true;
        if (l->v[mid] < port)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static bool authz_salist_has(const struct authz_salist *l, uint32_t ns_id, uint32_t sa_id)
{
    if (ns_id == AUTHZ_NO_ID || sa_id == AUTHZ_NO_ID)
        return false;
    for (uint32_t i = 0; i < l->n; i++)
        if (l->pairs[2 * i] == ns_id && l->pairs[2 * i + 1] == sa_id)
            return true;
    return false;
}

bool authz_term_holds(const struct authz_term *t, const struct authz_subject *s)
{
    bool any = false;

    switch (t->attr) {
    case MESH_AUTHZ_ATTR_NAMESPACES:
    case MESH_AUTHZ_ATTR_NOT_NAMESPACES:
        any = authz_strlist_any(t->list, s->ns, s->ns_len, s->ns_id);
        break;
    case MESH_AUTHZ_ATTR_PRINCIPALS:
    case MESH_AUTHZ_ATTR_NOT_PRINCIPALS:
        /* §4: with no identity positive principals never match and not_principals always hold. */
        any = s->principal != NULL && authz_strlist_any(t->list, s->principal, s->principal_len, s->principal_id);
        break;
    case MESH_AUTHZ_ATTR_SOURCE_IPS:
    case MESH_AUTHZ_ATTR_NOT_SOURCE_IPS:
        any = authz_iplist_has(t->list, s->src_family, s->src4, &s->src6);
        break;
    case MESH_AUTHZ_ATTR_DESTINATION_IPS:
    case MESH_AUTHZ_ATTR_NOT_DESTINATION_IPS:
        any = authz_iplist_has(t->list, s->dst_family, s->dst4, &s->dst6);
        break;
    case MESH_AUTHZ_ATTR_DESTINATION_PORTS:
    case MESH_AUTHZ_ATTR_NOT_DESTINATION_PORTS:
        any = authz_portlist_has(t->list, s->port);
        break;
    case MESH_AUTHZ_ATTR_SERVICE_ACCOUNTS:
    case MESH_AUTHZ_ATTR_NOT_SERVICE_ACCOUNTS:
        /* §4 service_accounts: never match with no identity. */
        any = s->has_id && authz_salist_has(t->list, s->ns_id, s->sa_id);
        break;
    }
    /* Positive lists (odd field numbers): some entry matches. not_* lists: no entry matches. */
    return ((unsigned)t->attr & 1u) ? any : !any;
}

/* §4 matching: any rule; all clauses of it; any non-empty match of each clause; all terms of that match. */
static bool authz_policy_matches(const struct authz_cpolicy *p, const struct authz_subject *s)
{
    for (uint32_t r = 0; r < p->n_rules; r++) {
        const struct authz_crule *rule = &p->rules[r];
        bool rule_ok = true;

        for (uint32_t c = 0; c < rule->n_clauses && rule_ok; c++) {
            const struct authz_cclause *cl = &rule->clauses[c];
            bool hit = cl->n_matches == 0; /* an empty clause matches */

            for (uint32_t m = 0; m < cl->n_matches && !hit; m++) {
                const struct authz_cmatch *mt = &cl->matches[m];
                bool all = mt->n_terms > 0; /* an empty match is skipped */

                for (uint32_t t = 0; t < mt->n_terms && all; t++)
                    all = authz_term_holds(&mt->terms[t], s);
                hit = all;
            }
            rule_ok = hit;
        }
        if (rule_ok)
            return true;
    }
    return false;
}

struct authz_eval_ctx {
    const struct mesh_authz_set *set;
    const struct mesh_authz_conn *conn;
    const struct authz_bucket *ns_bucket;
    const struct authz_subject *subject;
    int32_t sel[AUTHZ_SEL_STACK];
    uint32_t n_sel;
};

static int32_t authz_selected(const struct authz_eval_ctx *x, size_t i)
{
    const char *k;

    if (i < x->n_sel)
        return x->sel[i];
    k = x->conn->policy_keys[i];
    return k != NULL ? authz_find_key(x->set, k, strlen(k)) : -1;
}

/* The first applicable policy of category cat that matches, or -1; *exists tells whether any applies at all.
 * Applicability order: the namespace bucket, the global bucket, then the selected keys (§4 policy selection). */
static int32_t authz_first_match(const struct authz_eval_ctx *x, enum authz_cat cat, bool *exists)
{
    const struct authz_bucket *b[2] = {x->ns_bucket, &x->set->global};

    *exists = false;
    for (int k = 0; k < 2; k++) {
        if (b[k] == NULL || b[k]->n[cat] == 0)
            continue;
        *exists = true;
        for (uint32_t i = 0; i < b[k]->n[cat]; i++)
            if (authz_policy_matches(&x->set->policies[b[k]->idx[cat][i]], x->subject))
                return (int32_t)b[k]->idx[cat][i];
    }
    for (size_t i = 0; i < x->conn->n_policy_keys; i++) {
        int32_t p = authz_selected(x, i);

        if (p < 0 || x->set->policies[p].cat != cat)
            continue;
        *exists = true;
        if (authz_policy_matches(&x->set->policies[p], x->subject))
            return p;
    }
    return -1;
}

enum mesh_authz_decision mesh_authz_eval(const struct mesh_authz_set *set, const struct mesh_authz_conn *conn,
                                         struct mesh_authz_result *out)
{
    struct authz_subject s;
    struct authz_eval_ctx x;
    bool exists;
    int32_t hit;

    *out = (struct mesh_authz_result){.decision = MESH_AUTHZ_ALLOW,
                                      .reason = MESH_AUTHZ_REASON_NO_ALLOW_POLICIES,
                                      .policy = -1,
                                      .dry_run_policy = -1};
    if (set == NULL || set->n_policies == 0) {
        out->n_unknown_keys = (uint32_t)conn->n_policy_keys;
        return MESH_AUTHZ_ALLOW;
    }
    authz_subject_init(set, conn, &s);
    x.set = set;
    x.conn = conn;
    x.subject = &s;
    x.ns_bucket = authz_ns_bucket(set, conn->dst_namespace);
    x.n_sel = conn->n_policy_keys < AUTHZ_SEL_STACK ? (uint32_t)conn->n_policy_keys : AUTHZ_SEL_STACK;
    for (size_t i = 0; i < conn->n_policy_keys; i++) {
        const char *k = conn->policy_keys[i];
        int32_t p = k != NULL ? authz_find_key(set, k, strlen(k)) : -1;

        if (i < x.n_sel)
            x.sel[i] = p;
        out->n_unknown_keys += p < 0; /* §4: names that resolve to nothing are skipped */
    }
    /* §4 step 1: dry-run DENY policies are only reported. */
    out->dry_run_policy = authz_first_match(&x, AUTHZ_CAT_DRY_DENY, &exists);
    out->dry_run_denied = out->dry_run_policy >= 0;
    /* §4 step 2: any enforced DENY that matches denies. */
    hit = authz_first_match(&x, AUTHZ_CAT_DENY, &exists);
    if (hit >= 0) {
        out->decision = MESH_AUTHZ_DENY;
        out->reason = MESH_AUTHZ_REASON_DENY_MATCHED;
        out->policy = hit;
        return out->decision;
    }
    /* §4 step 3: dry-run ALLOW policies are only reported: they would deny when they exist and none matches. */
    hit = authz_first_match(&x, AUTHZ_CAT_DRY_ALLOW, &exists);
    out->dry_run_allow_unmatched = exists && hit < 0;
    out->dry_run_denied |= out->dry_run_allow_unmatched;
    /* §4 steps 4-6. */
    hit = authz_first_match(&x, AUTHZ_CAT_ALLOW, &exists);
    if (!exists)
        return out->decision; /* step 4: no enforced ALLOW policy applies */
    if (hit >= 0) {
        out->reason = MESH_AUTHZ_REASON_ALLOW_MATCHED; /* step 5 */
        out->policy = hit;
        return out->decision;
    }
    out->decision = MESH_AUTHZ_DENY; /* step 6 */
    out->reason = MESH_AUTHZ_REASON_NOT_ALLOWED;
    return out->decision;
}
