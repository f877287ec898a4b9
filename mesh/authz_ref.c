/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/authz_ref.c - the reference evaluator: ztunnel-wire-facts.md §4 read literally, over the uncompiled model.
 *
 * Invariants:
 *  - Shares no code with the compiled evaluator (authz.c) beyond the public types, so the two can check each other.
 *  - No allocation, no precomputation: every call walks the whole policy array and compares strings and address
 *    bytes directly. Slow on purpose; for tests and cross-checks only.
 *  - Policy order within a category is the compiled evaluator's: namespace policies in array order, then global
 *    ones in array order, then the connection's policy keys in key order.
 */
#include "mesh/authz.h"

#include <stdio.h>
#include <string.h>

/* What the connection offers to the match attributes. */
struct ref_view {
    const struct mesh_spiffe_id *id;
    char principal[MESH_SPIFFE_URI_MAX_BYTES]; /* "td/ns/NS/sa/SA" when id != NULL */
    struct mesh_addr src, dst;
    unsigned port;
};

static bool ref_str_match(const struct mesh_authz_str_match *m, const char *s)
{
    size_t n = strlen(s), k = m->value != NULL ? strlen(m->value) : 0;

    switch (m->kind) {
    case MESH_AUTHZ_STR_EXACT:
        return strcmp(s, m->value) == 0;
    case MESH_AUTHZ_STR_PREFIX:
        return n >= k && strncmp(s, m->value, k) == 0;
    case MESH_AUTHZ_STR_SUFFIX:
        return n >= k && strcmp(s + n - k, m->value) == 0;
    case MESH_AUTHZ_STR_PRESENCE:
        return n > 0;
    }
    return false;
}

/* Does the prefix contain the address? Families must agree; bits beyond len are ignored. */
static bool ref_cidr_contains(const struct mesh_authz_cidr *c, const struct mesh_addr *a)
{
    const uint8_t *bytes = a->family == MESH_ADDR_V4 ? a->ip.v4 : a->ip.v6;

    if (c->family != a->family)
        return false;
    for (unsigned bit = 0; bit < c->len; bit++) {
        unsigned mask = 0x80u >> (bit % 8);

        if ((c->addr[bit / 8] & mask) != (bytes[bit / 8] & mask))
            return false;
    }
    return true;
}

/* ::ffff:a.b.c.d is a.b.c.d. */
static struct mesh_addr ref_canonical(const struct mesh_addr *a)
{
    struct mesh_addr c = *a;
    bool mapped = a->family == MESH_ADDR_V6;

    for (int i = 0; i < 10 && mapped; i++)
        mapped = a->ip.v6[i] == 0;
    if (mapped && a->ip.v6[10] == 0xff && a->ip.v6[11] == 0xff) {
        uint8_t v4[4];

        memcpy(v4, a->ip.v6 + 12, 4);
        memset(&c.ip, 0, sizeof(c.ip));
        memcpy(c.ip.v4, v4, 4);
        c.family = MESH_ADDR_V4;
    }
    return c;
}

/* One attribute's predicate on one list entry. */
static bool ref_entry(enum mesh_authz_attr attr, const struct mesh_authz_match *m, size_t i, const struct ref_view *v)
{
    switch (attr) {
    case MESH_AUTHZ_ATTR_NAMESPACES:
        return ref_str_match(&m->namespaces[i], v->id != NULL ? v->id->ns : "");
    case MESH_AUTHZ_ATTR_NOT_NAMESPACES:
        return ref_str_match(&m->not_namespaces[i], v->id != NULL ? v->id->ns : "");
    case MESH_AUTHZ_ATTR_PRINCIPALS:
        return v->id != NULL && ref_str_match(&m->principals[i], v->principal);
    case MESH_AUTHZ_ATTR_NOT_PRINCIPALS:
        return v->id != NULL && ref_str_match(&m->not_principals[i], v->principal);
    case MESH_AUTHZ_ATTR_SOURCE_IPS:
        return ref_cidr_contains(&m->source_ips[i], &v->src);
    case MESH_AUTHZ_ATTR_NOT_SOURCE_IPS:
        return ref_cidr_contains(&m->not_source_ips[i], &v->src);
    case MESH_AUTHZ_ATTR_DESTINATION_IPS:
        return ref_cidr_contains(&m->destination_ips[i], &v->dst);
    case MESH_AUTHZ_ATTR_NOT_DESTINATION_IPS:
        return ref_cidr_contains(&m->not_destination_ips[i], &v->dst);
    case MESH_AUTHZ_ATTR_DESTINATION_PORTS:
        return m->destination_ports[i] == v->port;
    case MESH_AUTHZ_ATTR_NOT_DESTINATION_PORTS:
        return m->not_destination_ports[i] == v->port;
    case MESH_AUTHZ_ATTR_SERVICE_ACCOUNTS:
        return v->id != NULL && strcmp(m->service_accounts[i].namespace, v->id->ns) == 0 &&
               strcmp(m->service_accounts[i].service_account, v->id->sa) == 0;
    case MESH_AUTHZ_ATTR_NOT_SERVICE_ACCOUNTS:
        return v->id != NULL && strcmp(m->not_service_accounts[i].namespace, v->id->ns) == 0 &&
               strcmp(m->not_service_accounts[i].service_account, v->id->sa) == 0;
    }
    return false;
}

static size_t ref_list_len(const struct mesh_authz_match *m, enum mesh_authz_attr attr)
{
    switch (attr) {
    case MESH_AUTHZ_ATTR_NAMESPACES:
        return m->n_namespaces;
    case MESH_AUTHZ_ATTR_NOT_NAMESPACES:
        return m->n_not_namespaces;
    case MESH_AUTHZ_ATTR_PRINCIPALS:
        return m->n_principals;
    case MESH_AUTHZ_ATTR_NOT_PRINCIPALS:
        return m->n_not_principals;
    case MESH_AUTHZ_ATTR_SOURCE_IPS:
        return m->n_source_ips;
    case MESH_AUTHZ_ATTR_NOT_SOURCE_IPS:
        return m->n_not_source_ips;
    case MESH_AUTHZ_ATTR_DESTINATION_IPS:
        return m->n_destination_ips;
    case MESH_AUTHZ_ATTR_NOT_DESTINATION_IPS:
        return m->n_not_destination_ips;
    case MESH_AUTHZ_ATTR_DESTINATION_PORTS:
        return m->n_destination_ports;
    case MESH_AUTHZ_ATTR_NOT_DESTINATION_PORTS:
        return m->n_not_destination_ports;
    case MESH_AUTHZ_ATTR_SERVICE_ACCOUNTS:
        return m->n_service_accounts;
    case MESH_AUTHZ_ATTR_NOT_SERVICE_ACCOUNTS:
        return m->n_not_service_accounts;
    }
    return 0;
}

/* §4: positive lists pass when empty or when any entry matches; not_* lists pass when no entry matches. */
static bool ref_match(const struct mesh_authz_match *m, const struct ref_view *v, bool *empty)
{
    bool ok = true;

    *empty = true;
    for (int a = MESH_AUTHZ_ATTR_NAMESPACES; a <= MESH_AUTHZ_ATTR_NOT_SERVICE_ACCOUNTS; a++) {
        size_t n = ref_list_len(m, (enum mesh_authz_attr)a);
        bool any = false;

        if (n == 0)
            continue;
        *empty = false;
        for (size_t i = 0; i < n && !any; i++)
            any = ref_entry((enum mesh_authz_attr)a, m, i, v);
        if (a % 2 == 1 ? !any : any)
            ok = false;
    }
    return ok;
}

static bool ref_policy_matches(const struct mesh_authz_policy *p, const struct ref_view *v)
{
    for (size_t r = 0; r < p->n_rules; r++) {
        bool all_clauses = true;

        for (size_t c = 0; c < p->rules[r].n_clauses; c++) {
            const struct mesh_authz_clause *cl = &p->rules[r].clauses[c];
            bool any_match = false;

            if (cl->n_matches == 0)
                continue; /* an empty clause matches */
            for (size_t m = 0; m < cl->n_matches; m++) {
                bool empty;
                bool ok = ref_match(&cl->matches[m], v, &empty);

                if (!empty && ok)
                    any_match = true; /* empty matches are skipped */
            }
            if (!any_match)
                all_clauses = false;
        }
        if (all_clauses)
            return true;
    }
    return false; /* also: zero rules never match */
}

static bool ref_is_key(const struct mesh_authz_policy *p, const char *key)
{
    size_t ns = strlen(p->namespace);

    return strncmp(key, p->namespace, ns) == 0 && key[ns] == '/' && strcmp(key + ns + 1, p->name) == 0;
}

static int32_t ref_lookup(const struct mesh_authz_policy *policies, size_t n, const char *key)
{
    for (size_t i = 0; key != NULL && i < n; i++)
        if (ref_is_key(&policies[i], key))
            return (int32_t)i;
    return -1;
}

static bool ref_in_category(const struct mesh_authz_policy *p, enum mesh_authz_action action, bool dry_run)
{
    return p->action == action && p->dry_run == dry_run;
}

/* First matching applicable policy with this action and dry-run flag, or -1; *applies: whether any applies. */
static int32_t ref_first(const struct mesh_authz_policy *policies, size_t n, const struct mesh_authz_conn *conn,
                         const struct ref_view *v, enum mesh_authz_action action, bool dry_run, bool *applies)
{
    const char *dst_ns = conn->dst_namespace != NULL ? conn->dst_namespace : "";

    *applies = false;
    /* Policies of scope NAMESPACE whose namespace is the destination's. */
    for (size_t i = 0; i < n; i++) {
        const struct mesh_authz_policy *p = &policies[i];

        if (p->scope == MESH_AUTHZ_SCOPE_NAMESPACE && p->namespace[0] != '\0' && strcmp(p->namespace, dst_ns) == 0 &&
            ref_in_category(p, action, dry_run)) {
            *applies = true;
            if (ref_policy_matches(p, v))
                return (int32_t)i;
        }
    }
    /* Policies indexed under namespace "": GLOBAL scope (and NAMESPACE scope with an empty namespace). */
    for (size_t i = 0; i < n; i++) {
        const struct mesh_authz_policy *p = &policies[i];
        bool global =
            p->scope == MESH_AUTHZ_SCOPE_GLOBAL || (p->scope == MESH_AUTHZ_SCOPE_NAMESPACE && p->namespace[0] == '\0');

        if (global && ref_in_category(p, action, dry_run)) {
            *applies = true;
            if (ref_policy_matches(p, v))
                return (int32_t)i;
        }
    }
    /* The workload's authorization_policies; unknown names are skipped. */
    for (size_t k = 0; k < conn->n_policy_keys; k++) {
        int32_t i = ref_lookup(policies, n, conn->policy_keys[k]);

        if (i >= 0 && ref_in_category(&policies[i], action, dry_run)) {
            *applies = true;
            if (ref_policy_matches(&policies[i], v))
                return i;
        }
    }
    return -1;
}

enum mesh_authz_decision mesh_authz_eval_reference(const struct mesh_authz_policy *policies, size_t n,
                                                   const struct mesh_authz_conn *conn, struct mesh_authz_result *out)
{
    struct ref_view v;
    bool applies;
    int32_t hit;

    memset(out, 0, sizeof(*out));
    out->policy = -1;
    v.id = conn->peer;
    if (v.id != NULL)
        snprintf(v.principal, sizeof(v.principal), "%s/ns/%s/sa/%s", v.id->td, v.id->ns, v.id->sa);
    v.src = ref_canonical(&conn->src);
    v.dst = ref_canonical(&conn->dst);
    v.port = (unsigned)((const uint8_t *)&conn->dst.port)[0] << 8 | ((const uint8_t *)&conn->dst.port)[1];
    for (size_t k = 0; k < conn->n_policy_keys; k++)
        if (ref_lookup(policies, n, conn->policy_keys[k]) < 0)
            out->n_unknown_keys++;

    /* 1. dry-run DENY: log only. */
    out->dry_run_policy = ref_first(policies, n, conn, &v, MESH_AUTHZ_ACTION_DENY, true, &applies);
    /* 2. enforced DENY that matches: deny. */
    hit = ref_first(policies, n, conn, &v, MESH_AUTHZ_ACTION_DENY, false, &applies);
    if (hit >= 0) {
        out->decision = MESH_AUTHZ_DENY;
        out->reason = MESH_AUTHZ_REASON_DENY_MATCHED;
        out->policy = hit;
    } else {
        /* 3. dry-run ALLOW: log only. */
        hit = ref_first(policies, n, conn, &v, MESH_AUTHZ_ACTION_ALLOW, true, &applies);
        out->dry_run_allow_unmatched = applies && hit < 0;
        /* 4.-6. */
        hit = ref_first(policies, n, conn, &v, MESH_AUTHZ_ACTION_ALLOW, false, &applies);
        if (!applies) {
            out->decision = MESH_AUTHZ_ALLOW;
            out->reason = MESH_AUTHZ_REASON_NO_ALLOW_POLICIES;
        } else if (hit >= 0) {
            out->decision = MESH_AUTHZ_ALLOW;
            out->reason = MESH_AUTHZ_REASON_ALLOW_MATCHED;
            out->policy = hit;
        } else {
            out->decision = MESH_AUTHZ_DENY;
            out->reason = MESH_AUTHZ_REASON_NOT_ALLOWED;
        }
    }
    out->dry_run_denied = out->dry_run_policy >= 0 || out->dry_run_allow_unmatched;
    return out->decision;
}
