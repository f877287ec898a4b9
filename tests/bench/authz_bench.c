/* SPDX-License-Identifier: Apache-2.0 */
/*
 * authz_bench - decision cost of mesh_authz_eval() in ns per connection, for 10, 1,000 and 10,000 policies.
 * A program, not a test: it prints a table and always exits 0 (unless memory runs out).
 *
 * Two shapes per policy count:
 *  - spread:  a mesh of namespaces with 10 policies each (2 DENY, 8 ALLOW, in the shapes istiod produces: from
 *             namespaces/principals, ip blocks, to ports), plus the static STRICT policy selected by every workload.
 *             A connection sees its destination namespace's 10 policies plus STRICT: the common case.
 *  - one-ns:  every policy in the destination namespace, so each decision walks all of them: the worst case.
 * Connections are drawn (seeded) from 1,024 pre-built records: mTLS from a random namespace, some plaintext,
 * random source addresses in and out of the ip blocks, random target ports.
 *
 * Usage: authz_bench [decisions per row, default 2000000]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mesh/authz.h"

#define BENCH_CONNS 1024
#define BENCH_POLICIES_PER_NS 10

static void *bench_alloc(void *u, size_t n)
{
    (void)u;
    return malloc(n);
}

static void *bench_realloc(void *u, void *p, size_t n)
{
    (void)u;
    return realloc(p, n);
}

static void bench_free(void *u, void *p)
{
    (void)u;
    free(p);
}

static uint64_t bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t bench_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 11);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);

    if (p == NULL) {
        fprintf(stderr, "authz_bench: out of memory\n");
        exit(1);
    }
    return p;
}

/* One policy's storage: one rule of up to two clauses of up to two matches. */
struct bench_policy {
    char name[32];
    char ns[32];
    char principal_prefix[64];
    struct mesh_authz_str_match ns_match;
    struct mesh_authz_str_match principal;
    struct mesh_authz_cidr block;
    uint16_t ports[2];
    struct mesh_authz_match matches[3];
    struct mesh_authz_clause clauses[2];
    struct mesh_authz_rule rule;
};

static void bench_make_policy(struct bench_policy *b, struct mesh_authz_policy *p, unsigned i, unsigned ns_index)
{
    memset(b, 0, sizeof(*b));
    snprintf(b->name, sizeof(b->name), "policy-%u", i);
    snprintf(b->ns, sizeof(b->ns), "ns-%u", ns_index);
    snprintf(b->principal_prefix, sizeof(b->principal_prefix), "cluster.local/ns/ns-%u/", ns_index);
    b->ns_match = (struct mesh_authz_str_match){MESH_AUTHZ_STR_EXACT, b->ns};
    b->principal = (struct mesh_authz_str_match){MESH_AUTHZ_STR_PREFIX, b->principal_prefix};
    b->block = (struct mesh_authz_cidr){MESH_ADDR_V4, 16, {10, (uint8_t)(i % 251), 0, 0}};
    b->ports[0] = (uint16_t)(8000 + i % 7);
    b->ports[1] = 9090;
    *p = (struct mesh_authz_policy){.name = b->name, .namespace = b->ns, .scope = MESH_AUTHZ_SCOPE_NAMESPACE};
    if (i % 5 == 0) {
        /* DENY from outside the namespace and outside 10/8-ish blocks, to the admin port. */
        p->action = MESH_AUTHZ_ACTION_DENY;
        b->matches[0] = (struct mesh_authz_match){.not_namespaces = &b->ns_match,
                                                  .n_not_namespaces = 1,
                                                  .not_source_ips = &b->block,
                                                  .n_not_source_ips = 1,
                                                  .destination_ports = &b->ports[1],
                                                  .n_destination_ports = 1};
        b->clauses[0] = (struct mesh_authz_clause){b->matches, 1};
        b->rule = (struct mesh_authz_rule){b->clauses, 1};
    } else {
        /* ALLOW from (namespace and principal prefix) or an ip block, to two ports. */
        p->action = MESH_AUTHZ_ACTION_ALLOW;
        b->matches[0] = (struct mesh_authz_match){
            .namespaces = &b->ns_match, .n_namespaces = 1, .principals = &b->principal, .n_principals = 1};
        b->matches[1] = (struct mesh_authz_match){.source_ips = &b->block, .n_source_ips = 1};
        b->matches[2] = (struct mesh_authz_match){.destination_ports = b->ports, .n_destination_ports = 2};
        b->clauses[0] = (struct mesh_authz_clause){b->matches, 2};
        b->clauses[1] = (struct mesh_authz_clause){&b->matches[2], 1};
        b->rule = (struct mesh_authz_rule){b->clauses, 2};
    }
    p->rules = &b->rule;
    p->n_rules = 1;
}

struct bench_conns {
    struct mesh_authz_conn conn[BENCH_CONNS];
    struct mesh_spiffe_id id[BENCH_CONNS];
    char ns[BENCH_CONNS][32];
};

static const char *const bench_strict_key[] = {"istio-system/istio_converted_static_strict"};

static void bench_make_conns(struct bench_conns *c, unsigned n_ns, bool one_ns, uint64_t seed)
{
    for (unsigned k = 0; k < BENCH_CONNS; k++) {
        struct mesh_authz_conn *x = &c->conn[k];
        unsigned port = bench_rand(&seed) % 4 == 0 ? 9090 : 8000 + bench_rand(&seed) % 8;
        uint8_t pb[2] = {(uint8_t)(port >> 8), (uint8_t)port};

        memset(x, 0, sizeof(*x));
        snprintf(c->ns[k], sizeof(c->ns[k]), "ns-%u", one_ns ? 0 : bench_rand(&seed) % n_ns);
        x->dst_namespace = c->ns[k];
        if (bench_rand(&seed) % 10 != 0) {
            char ns[32];

            /* Half the peers come from the destination's own namespace. */
            if (bench_rand(&seed) % 2)
                snprintf(ns, sizeof(ns), "%s", c->ns[k]);
            else
                snprintf(ns, sizeof(ns), "ns-%u", bench_rand(&seed) % 97);
            mesh_spiffe_from_parts("cluster.local", ns, "default", &c->id[k]);
            x->peer = &c->id[k];
        }
        x->src.family = MESH_ADDR_V4;
        x->src.ip.v4[0] = bench_rand(&seed) % 2 ? 10 : 192;
        x->src.ip.v4[1] = (uint8_t)bench_rand(&seed);
        x->src.ip.v4[3] = 7;
        x->dst.family = MESH_ADDR_V4;
        memcpy(x->dst.ip.v4, (uint8_t[4]){10, 9, 0, 1}, 4);
        memcpy(&x->dst.port, pb, 2);
        x->policy_keys = bench_strict_key;
        x->n_policy_keys = 1;
    }
}

static void bench_row(const struct mesh_env *env, unsigned n, bool one_ns, unsigned long decisions)
{
    struct bench_policy *store = xcalloc(n + 1, sizeof(*store));
    struct mesh_authz_policy *pol = xcalloc(n + 1, sizeof(*pol));
    struct mesh_authz_str_match presence = {MESH_AUTHZ_STR_PRESENCE, NULL};
    struct mesh_authz_match strict_match = {.not_principals = &presence, .n_not_principals = 1};
    struct mesh_authz_clause strict_clause = {&strict_match, 1};
    struct mesh_authz_rule strict_rule = {&strict_clause, 1};
    unsigned n_ns = one_ns ? 1 : (n + BENCH_POLICIES_PER_NS - 1) / BENCH_POLICIES_PER_NS;
    struct bench_conns *conns = xcalloc(1, sizeof(*conns));
    unsigned long counts[2] = {0, 0};
    struct mesh_authz_result r;
    struct mesh_authz_set *set;
    uint64_t t0, t1, t2;
    int err;

    for (unsigned i = 0; i < n; i++)
        bench_make_policy(&store[i], &pol[i], i, one_ns ? 0 : i / BENCH_POLICIES_PER_NS);
    pol[n] = (struct mesh_authz_policy){.name = "istio_converted_static_strict",
                                        .namespace = "istio-system",
                                        .scope = MESH_AUTHZ_SCOPE_WORKLOAD_SELECTOR,
                                        .action = MESH_AUTHZ_ACTION_DENY,
                                        .rules = &strict_rule,
                                        .n_rules = 1};
    bench_make_conns(conns, n_ns, one_ns, 0x2026 + n);
    t0 = bench_now_ns();
    set = mesh_authz_set_new(env, pol, n + 1, &err);
    t1 = bench_now_ns();
    if (set == NULL) {
        fprintf(stderr, "authz_bench: mesh_authz_set_new failed: %d\n", err);
        exit(1);
    }
    for (unsigned long k = 0; k < decisions / 16; k++) /* warm-up */
        counts[mesh_authz_eval(set, &conns->conn[k % BENCH_CONNS], &r)]++;
    counts[0] = counts[1] = 0;
    t2 = bench_now_ns();
    for (unsigned long k = 0; k < decisions; k++)
        counts[mesh_authz_eval(set, &conns->conn[k % BENCH_CONNS], &r)]++;
    t2 = bench_now_ns() - t2;
    printf("%8u  %-8s %10u %12.1f %10.2f %9.1f%%\n", n, one_ns ? "one-ns" : "spread",
           one_ns ? n + 1 : BENCH_POLICIES_PER_NS + 1, (double)t2 / (double)decisions, (double)(t1 - t0) / 1e6,
           100.0 * (double)counts[MESH_AUTHZ_DENY] / (double)decisions);
    mesh_authz_set_free(set);
    free(conns);
    free(pol);
    free(store);
}

int main(int argc, char **argv)
{
    unsigned long decisions = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000000ul;
    const unsigned sizes[] = {10, 1000, 10000};
    struct mesh_env env = {.alloc = bench_alloc, .realloc = bench_realloc, .free = bench_free};

    if (decisions == 0)
        decisions = 1;
    printf("mesh_authz_eval: %lu decisions per row over %d connection records\n", decisions, BENCH_CONNS);
    printf("%8s  %-8s %10s %12s %10s %10s\n", "policies", "shape", "applicable", "ns/decision", "compile ms", "denied");
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        bench_row(&env, sizes[i], false, decisions);
        bench_row(&env, sizes[i], true,
                  sizes[i] >= 10000  ? decisions / 100
                  : sizes[i] >= 1000 ? decisions / 10
                                     : decisions);
    }
    return 0;
}
