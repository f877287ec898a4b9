/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/authz_int.h - the compiled form of a policy set, shared by authz.c (compile, eval) and authz_explain.c.
 * Not a public header: nothing outside mesh/authz*.c includes it.
 *
 * Invariants:
 *  - Everything reachable from a struct mesh_authz_set lives in its arena or in its three hash tables, all allocated
 *    through set->env and released together by mesh_authz_set_free().
 *  - Every exact string of the model (namespaces, principals, service account parts) is interned once in
 *    set->strings; two exact strings are equal iff their ids are equal. AUTHZ_NO_ID never names a string, so a
 *    connection value that is not interned compares unequal to every exact entry.
 *  - A compiled match holds one term per non-empty list of the model, in the order of enum mesh_authz_attr. Odd
 *    attribute numbers are positive lists, even ones (not_*) negative. A match with zero terms is the model's empty
 *    match and is skipped.
 *  - ip lists are split by family into sorted, disjoint, non-adjacent closed intervals [lo, hi] (host bits of each
 *    prefix cleared first); port lists are sorted without duplicates; exact-id lists are sorted without duplicates.
 *  - Buckets list policy indices per category in input order; a NAMESPACE policy with a non-empty namespace is in
 *    exactly one namespace bucket, GLOBAL and empty-namespace NAMESPACE policies are in set->global, and
 *    WORKLOAD_SELECTOR policies are in no bucket (they only apply through policy keys).
 */
#ifndef MESH_AUTHZ_INT_H
#define MESH_AUTHZ_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "mesh/authz.h"

#define AUTHZ_NO_ID UINT32_MAX

/* Categories, in evaluation order (§4 steps 1, 2, 3, 5). */
enum authz_cat {
    AUTHZ_CAT_DRY_DENY = 0,
    AUTHZ_CAT_DENY = 1,
    AUTHZ_CAT_DRY_ALLOW = 2,
    AUTHZ_CAT_ALLOW = 3,
    AUTHZ_CAT_COUNT = 4,
};

struct authz_str {
    const char *s;
    uint32_t len;
};

struct authz_strlist {
    bool presence;
    uint32_t n_exact;
    const uint32_t *exact; /* interned ids, sorted */
    uint32_t n_prefix;
    const struct authz_str *prefix;
    uint32_t n_suffix;
    const struct authz_str *suffix;
};

/* A 128-bit address as two host-order halves, compared as (hi, lo). */
struct authz_u128 {
    uint64_t hi;
    uint64_t lo;
};

struct authz_range4 {
    uint32_t lo, hi;
};

struct authz_range6 {
    struct authz_u128 lo, hi;
};

struct authz_iplist {
    uint32_t n4;
    const struct authz_range4 *v4;
    uint32_t n6;
    const struct authz_range6 *v6;
};

struct authz_portlist {
    uint32_t n;
    const uint16_t *v; /* sorted, unique */
};

struct authz_salist {
    uint32_t n;
    const uint32_t *pairs; /* n pairs (namespace id, service account id) */
};

struct authz_term {
    enum mesh_authz_attr attr;
    const void *list; /* strlist, iplist, portlist or salist, by attr */
};

struct authz_cmatch {
    uint32_t n_terms;
    const struct authz_term *terms;
};

struct authz_cclause {
    uint32_t n_matches;
    const struct authz_cmatch *matches;
};

struct authz_crule {
    uint32_t n_clauses;
    const struct authz_cclause *clauses;
};

struct authz_cpolicy {
    const char *name;
    const char *ns;
    const char *key; /* "ns/name" */
    enum mesh_authz_scope scope;
    enum mesh_authz_action action;
    bool dry_run;
    enum authz_cat cat;
    uint32_t n_rules;
    const struct authz_crule *rules;
};

struct authz_bucket {
    uint32_t n[AUTHZ_CAT_COUNT];
    uint32_t *idx[AUTHZ_CAT_COUNT];
};

struct authz_hslot {
    const char *s; /* NULL: empty slot */
    uint32_t len;
    uint32_t hash;
    uint32_t val;
};

struct authz_htab {
    uint32_t mask; /* capacity - 1; capacity is a power of two, 0 slots when never inserted into */
    uint32_t n;
    struct authz_hslot *slots;
};

struct authz_chunk {
    struct authz_chunk *next;
    size_t used;
    size_t cap;
    /* data follows, 16-byte aligned */
};

struct mesh_authz_set {
    const struct mesh_env *env;
    struct authz_chunk *chunks;
    uint32_t n_policies;
    struct authz_cpolicy *policies;
    struct authz_htab strings;    /* exact strings -> interned id */
    struct authz_htab keys;       /* "ns/name" -> policy index */
    struct authz_htab namespaces; /* namespace -> index in ns_buckets */
    uint32_t n_ns_buckets;
    struct authz_bucket *ns_buckets;
    struct authz_bucket global;
    bool has_principals; /* some principals/not_principals list exists: build the principal string */
};

/* What one connection looks like to the compiled terms, prepared once per decision. */
struct authz_subject {
    bool has_id;
    const char *ns; /* the peer's namespace, "" without identity */
    uint32_t ns_len;
    uint32_t ns_id;
    const char *principal; /* "td/ns/NS/sa/SA", NULL without identity or when the set has no principals */
    uint32_t principal_len;
    uint32_t principal_id;
    uint32_t sa_id;
    uint8_t src_family, dst_family;
    uint32_t src4, dst4;
    struct authz_u128 src6, dst6;
    uint16_t port;
    char principal_buf[MESH_SPIFFE_URI_MAX_BYTES];
};

/* authz.c, for authz_explain.c */
void authz_subject_init(const struct mesh_authz_set *set, const struct mesh_authz_conn *conn, struct authz_subject *s);
/* True when the term holds (positive: some entry matches; negative: none does). */
bool authz_term_holds(const struct authz_term *t, const struct authz_subject *s);
/* Index of the policy with this key, or -1. */
int32_t authz_find_key(const struct mesh_authz_set *set, const char *key, size_t len);
const struct authz_bucket *authz_ns_bucket(const struct mesh_authz_set *set, const char *ns);

#endif /* MESH_AUTHZ_INT_H */
