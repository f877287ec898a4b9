/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/authz.h - L4 authorization: a pure function from one connection record and the applicable policies to
 * ALLOW or DENY, with the deciding policy and a reason. Semantics are those of ztunnel (ztunnel-wire-facts.md §4);
 * the policy model maps one-to-one onto istio.security.Authorization (§3.5).
 *
 * Invariants:
 *  - Pure and I/O-free: no clock, no randomness, no logging. The only side effect of any call is allocation through
 *    the struct mesh_env given to mesh_authz_set_new() / mesh_authz_explain().
 *  - The policy model (struct mesh_authz_policy and below) is plain borrowed data owned by the caller (the config
 *    parser, later the xDS converter). mesh_authz_set_new() validates it and copies everything it needs: once it
 *    returns, the model may be freed. A set is immutable after creation, so any number of threads may evaluate it
 *    concurrently; it is owned by whoever created it (normally a snapshot) and freed once with mesh_authz_set_free().
 *  - Policy indices everywhere (results, traces) are positions in the array given to mesh_authz_set_new(), so the
 *    compiled evaluator and the reference evaluator over the same array report the same numbers.
 *  - Evaluation never parses strings. The compiled set interns every exact string and resolves the connection's
 *    namespace, principal and service account to interned ids once per call; ip lists are sorted, merged address
 *    intervals searched by bisection; port lists are sorted arrays. Costs per call: O(applicable policies x their
 *    terms), plus one hash probe per selected policy key and one for the destination namespace.
 *
 * Semantics (§4), in the order evaluation applies them:
 *  - Applicable policies for a destination workload W: the NAMESPACE-scoped policies whose namespace equals
 *    W's namespace, then every GLOBAL policy, then the policies named by W.authorization_policies ("ns/name" keys,
 *    conn->policy_keys) in key order. Unknown keys are skipped and counted. A NAMESPACE-scoped policy with an empty
 *    namespace is indexed under "" like the GLOBAL ones, as ztunnel's store does, and so applies everywhere.
 *  - 1. dry-run DENY policies are evaluated and only reported (dry_run_policy); 2. the first matching enforced
 *    DENY denies; 3. dry-run ALLOW policies are evaluated and only reported; 4. no enforced ALLOW policy applies:
 *    allow; 5. the first matching ALLOW allows; 6. otherwise deny ("allow policies exist, but none allowed").
 *  - A policy matches if any rule (proto: group) matches; zero rules never match. A rule matches if all its clauses
 *    (proto: rules) match; zero clauses match everything. A clause matches if any of its matches matches; a match
 *    with every list empty is skipped, so a clause of only empty matches never matches; zero matches match.
 *  - Inside a match every non-empty list is one term and all terms must hold. A positive list holds when any entry
 *    matches; a not_* list holds when no entry matches.
 *  - principals compare against the peer identity without "spiffe://" ("td/ns/NS/sa/SA"); with no identity positive
 *    principals never match and not_principals always hold (STRICT = DENY with not_principals [presence]).
 *    namespaces compare against the namespace of the peer's SPIFFE ID, "" without identity. service_accounts compare
 *    (namespace, service account) of the SPIFFE ID exactly and never match without identity. String match forms:
 *    exact, prefix, suffix, presence (= non-empty).
 *  - source_ips compare the peer TCP source address, destination_ips the local destination address, against
 *    prefixes of the same family (host bits are ignored); destination_ports compare the resolved target port.
 *    IPv4-mapped IPv6 connection addresses (::ffff:a.b.c.d) are compared as IPv4, as ztunnel canonicalises them.
 */
#ifndef MESH_AUTHZ_H
#define MESH_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/conn.h"
#include "mesh/env.h"
#include "mesh/spiffe.h"

/* ---------------------------------------------------------------------------------------------------------------
 * Policy model: istio.security.Authorization, field for field (§3.5)
 * ------------------------------------------------------------------------------------------------------------ */

/* Authorization.scope (field 3). */
enum mesh_authz_scope {
    MESH_AUTHZ_SCOPE_GLOBAL = 0,
    MESH_AUTHZ_SCOPE_NAMESPACE = 1,
    MESH_AUTHZ_SCOPE_WORKLOAD_SELECTOR = 2,
};

/* Authorization.action (field 4). There is no AUDIT or CUSTOM for ztunnel. */
enum mesh_authz_action {
    MESH_AUTHZ_ACTION_ALLOW = 0,
    MESH_AUTHZ_ACTION_DENY = 1,
};

/* StringMatch.match_type oneof; values are the proto field numbers. */
enum mesh_authz_str_kind {
    MESH_AUTHZ_STR_EXACT = 1,
    MESH_AUTHZ_STR_PREFIX = 2,
    MESH_AUTHZ_STR_SUFFIX = 3,
    MESH_AUTHZ_STR_PRESENCE = 4,
};

/* StringMatch. value is NUL-terminated and ignored (may be NULL) for PRESENCE. */
struct mesh_authz_str_match {
    enum mesh_authz_str_kind kind;
    const char *value;
};

/* ServiceAccountMatch: both compared exactly. */
struct mesh_authz_sa_match {
    const char *namespace;
    const char *service_account;
};

/* security.Address: an address and prefix length. family is MESH_ADDR_V4 (addr[0..3], len 0..32) or MESH_ADDR_V6
 * (addr[0..15], len 0..128), network byte order. Host bits may be set; they are ignored. */
struct mesh_authz_cidr {
    uint8_t family;
    uint8_t len;
    uint8_t addr[16];
};

/* Match (fields 1..12). Each list is a pointer and a count; count 0 means the list is absent (pointer ignored). */
struct mesh_authz_match {
    const struct mesh_authz_str_match *namespaces;
    size_t n_namespaces;
    const struct mesh_authz_str_match *not_namespaces;
    size_t n_not_namespaces;
    const struct mesh_authz_str_match *principals;
    size_t n_principals;
    const struct mesh_authz_str_match *not_principals;
    size_t n_not_principals;
    const struct mesh_authz_cidr *source_ips;
    size_t n_source_ips;
    const struct mesh_authz_cidr *not_source_ips;
    size_t n_not_source_ips;
    const struct mesh_authz_cidr *destination_ips;
    size_t n_destination_ips;
    const struct mesh_authz_cidr *not_destination_ips;
    size_t n_not_destination_ips;
    const uint16_t *destination_ports; /* host byte order */
    size_t n_destination_ports;
    const uint16_t *not_destination_ports;
    size_t n_not_destination_ports;
    const struct mesh_authz_sa_match *service_accounts;
    size_t n_service_accounts;
    const struct mesh_authz_sa_match *not_service_accounts;
    size_t n_not_service_accounts;
};

/* Rules (ztunnel: Clause): field 2, matches. */
struct mesh_authz_clause {
    const struct mesh_authz_match *matches;
    size_t n_matches;
};

/* Group (ztunnel: Rule): field 1, rules (= clauses). */
struct mesh_authz_rule {
    const struct mesh_authz_clause *clauses;
    size_t n_clauses;
};

/* Authorization (fields 1..6; 7 extensions is not modelled). name and namespace are NUL-terminated, never NULL. */
struct mesh_authz_policy {
    const char *name;
    const char *namespace;
    enum mesh_authz_scope scope;
    enum mesh_authz_action action;
    const struct mesh_authz_rule *rules; /* field 5, groups */
    size_t n_rules;
    bool dry_run;
};

/* ---------------------------------------------------------------------------------------------------------------
 * Connection record and result
 * ------------------------------------------------------------------------------------------------------------ */

/* Everything a decision depends on. All pointers are borrowed for the duration of the call. */
struct mesh_authz_conn {
    const struct mesh_spiffe_id *peer; /* verified peer identity; NULL for plaintext (no identity) */
    struct mesh_addr src;              /* peer TCP source address; port ignored */
    struct mesh_addr dst;              /* local destination address and the resolved target port (network order) */
    const char *dst_namespace;         /* the destination workload's namespace; NULL counts as "" */
    const char *const *policy_keys;    /* the workload's authorization_policies, "ns/name" each */
    size_t n_policy_keys;
};

enum mesh_authz_decision {
    MESH_AUTHZ_ALLOW = 0,
    MESH_AUTHZ_DENY = 1,
};

enum mesh_authz_reason {
    MESH_AUTHZ_REASON_NO_ALLOW_POLICIES = 0, /* allow: no enforced ALLOW policy applies (also: no policy at all) */
    MESH_AUTHZ_REASON_ALLOW_MATCHED,         /* allow: result.policy is the first ALLOW policy that matched */
    MESH_AUTHZ_REASON_DENY_MATCHED,          /* deny: result.policy is the first DENY policy that matched */
    MESH_AUTHZ_REASON_NOT_ALLOWED,           /* deny: allow policies exist, but none allowed */
    MESH_AUTHZ_REASON_COUNT
};

struct mesh_authz_result {
    enum mesh_authz_decision decision;
    enum mesh_authz_reason reason;
    int32_t policy; /* index of the deciding policy, -1 for NO_ALLOW_POLICIES and NOT_ALLOWED */
    /* Dry-run outcome (log only; never changes decision): */
    int32_t dry_run_policy;       /* first dry-run DENY policy that matched, or -1 */
    bool dry_run_allow_unmatched; /* dry-run ALLOW policies apply, none matched (only judged when not denied) */
    bool dry_run_denied;          /* dry_run_policy >= 0 || dry_run_allow_unmatched */
    uint32_t n_unknown_keys;      /* policy keys that named no known policy (skipped) */
};

/* ---------------------------------------------------------------------------------------------------------------
 * Compiled policy set
 * ------------------------------------------------------------------------------------------------------------ */

struct mesh_authz_set; /* opaque, immutable */

/*
 * Validate and compile policies into a set.
 * @env       allocator; borrowed, must outlive the set (mesh_authz_set_free uses it)
 * @policies  the model, borrowed for the call only; n may be 0 (an empty set allows everything); policies may be
 *            NULL when n is 0
 * @err       receives 0 on success, else -ENOMEM, -EINVAL (an enum out of range, a NULL string, a bad address
 *            family or prefix length) or -EEXIST (two policies with the same "namespace/name" key); may be NULL
 * Returns the set, or NULL with *err set.
 */
struct mesh_authz_set *mesh_authz_set_new(const struct mesh_env *env, const struct mesh_authz_policy *policies,
                                          size_t n, int *err);

/* Free the set and everything it owns; NULL is a no-op. */
void mesh_authz_set_free(struct mesh_authz_set *set);

/* Number of policies; and the name / namespace / "namespace/name" key / action / dry_run of policy i (i < count).
 * Strings are owned by the set and live as long as it does. */
size_t mesh_authz_set_count(const struct mesh_authz_set *set);
const char *mesh_authz_set_policy_name(const struct mesh_authz_set *set, size_t i);
const char *mesh_authz_set_policy_namespace(const struct mesh_authz_set *set, size_t i);
const char *mesh_authz_set_policy_key(const struct mesh_authz_set *set, size_t i);
enum mesh_authz_action mesh_authz_set_policy_action(const struct mesh_authz_set *set, size_t i);
bool mesh_authz_set_policy_dry_run(const struct mesh_authz_set *set, size_t i);

/* Index of the policy with key "namespace/name" (len bytes, not necessarily NUL-terminated), or -1. */
int32_t mesh_authz_set_find(const struct mesh_authz_set *set, const char *key, size_t len);

/*
 * Decide one connection. Never allocates, never fails. set may be NULL (no policies: allow).
 * Returns the decision (also in out->decision); out is fully written.
 */
enum mesh_authz_decision mesh_authz_eval(const struct mesh_authz_set *set, const struct mesh_authz_conn *conn,
                                         struct mesh_authz_result *out);

/*
 * Reference evaluator: the same decision computed directly on the model, by the plainest reading of §4, with string
 * comparisons and no precomputation. For tests and cross-checks, not for the data path. policies must be a model
 * that mesh_authz_set_new() accepts. Returns the decision; out is fully written.
 */
enum mesh_authz_decision mesh_authz_eval_reference(const struct mesh_authz_policy *policies, size_t n,
                                                   const struct mesh_authz_conn *conn, struct mesh_authz_result *out);

/* Static strings, never NULL. */
const char *mesh_authz_decision_str(enum mesh_authz_decision d); /* "ALLOW" | "DENY" */
const char *mesh_authz_reason_str(enum mesh_authz_reason r);     /* ztunnel's words, e.g. "allow policies
                                                                    exist, but none allowed" */
const char *mesh_authz_action_str(enum mesh_authz_action a);     /* "ALLOW" | "DENY" */
const char *mesh_authz_scope_str(enum mesh_authz_scope s);       /* "global" | "namespace" |
                                                                    "workload_selector" */

/* ---------------------------------------------------------------------------------------------------------------
 * Explain: a structured trace of one decision (zwirectl authz check)
 * ------------------------------------------------------------------------------------------------------------ */

/* A Match attribute, by proto field number. */
enum mesh_authz_attr {
    MESH_AUTHZ_ATTR_NAMESPACES = 1,
    MESH_AUTHZ_ATTR_NOT_NAMESPACES = 2,
    MESH_AUTHZ_ATTR_PRINCIPALS = 3,
    MESH_AUTHZ_ATTR_NOT_PRINCIPALS = 4,
    MESH_AUTHZ_ATTR_SOURCE_IPS = 5,
    MESH_AUTHZ_ATTR_NOT_SOURCE_IPS = 6,
    MESH_AUTHZ_ATTR_DESTINATION_IPS = 7,
    MESH_AUTHZ_ATTR_NOT_DESTINATION_IPS = 8,
    MESH_AUTHZ_ATTR_DESTINATION_PORTS = 9,
    MESH_AUTHZ_ATTR_NOT_DESTINATION_PORTS = 10,
    MESH_AUTHZ_ATTR_SERVICE_ACCOUNTS = 11,
    MESH_AUTHZ_ATTR_NOT_SERVICE_ACCOUNTS = 12,
};

/* The field name, e.g. "not_principals"; "?" when unknown. */
const char *mesh_authz_attr_str(enum mesh_authz_attr a);

/* Why a policy got into the applicable list. */
enum mesh_authz_origin {
    MESH_AUTHZ_ORIGIN_NAMESPACE = 0, /* NAMESPACE scope, destination's namespace */
    MESH_AUTHZ_ORIGIN_GLOBAL = 1,    /* GLOBAL scope (or NAMESPACE with an empty namespace) */
    MESH_AUTHZ_ORIGIN_SELECTED = 2,  /* named by the workload's policy keys */
};

enum mesh_authz_step_kind {
    MESH_AUTHZ_STEP_NO_RULES,     /* the policy has no rules: never matches */
    MESH_AUTHZ_STEP_RULE_MATCHED, /* rule matched (then one CLAUSE_* step per clause) */
    MESH_AUTHZ_STEP_CLAUSE_EMPTY, /* clause has no matches: matches everything */
    MESH_AUTHZ_STEP_CLAUSE_HIT,   /* clause matched through .match */
    MESH_AUTHZ_STEP_RULE_FAILED,  /* rule failed at .clause (then one MATCH_* step per match of that clause) */
    MESH_AUTHZ_STEP_MATCH_EMPTY,  /* match has no lists: skipped */
    MESH_AUTHZ_STEP_MATCH_FAILED, /* match failed on .attr (the first failing term) */
};

struct mesh_authz_step {
    enum mesh_authz_step_kind kind;
    int32_t rule; /* -1 where not applicable */
    int32_t clause;
    int32_t match;
    enum mesh_authz_attr attr; /* MATCH_FAILED only */
};

struct mesh_authz_trace_policy {
    uint32_t policy; /* index in the set */
    enum mesh_authz_origin origin;
    bool matched;
    bool decisive;       /* this policy decided result.decision (or is result.dry_run_policy) */
    int32_t rule;        /* the first rule that matched, or -1 */
    uint32_t first_step; /* its steps: steps[first_step .. first_step + n_steps) */
    uint32_t n_steps;
};

/*
 * The trace of one decision. Every applicable policy is evaluated in full (also those the decision did not need),
 * in evaluation order: dry-run DENY, DENY, dry-run ALLOW, ALLOW, each in applicability order. For a matching policy
 * the steps show the first matching rule and, per clause, which match hit; for a non-matching policy they show, per
 * rule, the first failing clause and why each of its matches failed.
 */
struct mesh_authz_trace {
    struct mesh_authz_result result; /* identical to what mesh_authz_eval returns */
    struct mesh_authz_trace_policy *policies;
    uint32_t n_policies;
    struct mesh_authz_step *steps;
    uint32_t n_steps;
    const char **unknown_keys; /* policy keys that resolved to nothing; the strings are the caller's
                                  (conn->policy_keys), valid as long as those are */
    uint32_t n_unknown_keys;
    const struct mesh_env *env;
};

/*
 * Explain one decision into trace (initialised by the call; release with mesh_authz_trace_fini, also after failure).
 * @env  allocator for the trace arrays; borrowed until mesh_authz_trace_fini
 * Returns 0 or -ENOMEM.
 */
int mesh_authz_explain(const struct mesh_authz_set *set, const struct mesh_authz_conn *conn, const struct mesh_env *env,
                       struct mesh_authz_trace *trace);

void mesh_authz_trace_fini(struct mesh_authz_trace *trace);

/*
 * Render the trace as text, one line per fact, into buf (always NUL-terminated when cap > 0; truncated if short).
 * Returns the length the full text needs (without the NUL), like snprintf.
 */
size_t mesh_authz_trace_format(const struct mesh_authz_set *set, const struct mesh_authz_trace *trace, char *buf,
                               size_t cap);

#endif /* MESH_AUTHZ_H */
