/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/authz_explain.c - explain one decision as a structured trace, and render a trace as text.
 *
 * Invariants:
 *  - The trace's result is the value mesh_authz_eval() returns for the same set and connection; the per-policy
 *    entries are computed on the same compiled terms (authz_term_holds), so they cannot disagree with it.
 *  - All trace memory comes from the env given to mesh_authz_explain() and is released by mesh_authz_trace_fini(),
 *    which is safe on a trace left half-built by a failed call.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mesh/authz.h"
#include "mesh/authz_int.h"

/* ---------------------------------------------------------------------------------------------------------------
 * Building the trace
 * ------------------------------------------------------------------------------------------------------------ */

struct explain_ctx {
    struct mesh_authz_trace *t;
    uint32_t cap_policies;
    uint32_t cap_steps;
    uint32_t cap_unknown;
};

static int explain_grow(const struct mesh_env *env, void **p, uint32_t *cap, uint32_t n, size_t elem)
{
    uint32_t cap2;
    void *q;

    if (n < *cap)
        return 0;
    cap2 = *cap ? *cap * 2 : 16;
    q = mesh_env_realloc(env, *p, (size_t)cap2 * elem);
    if (q == NULL)
        return -ENOMEM;
    *p = q;
    *cap = cap2;
    return 0;
}

static int explain_step(struct explain_ctx *x, enum mesh_authz_step_kind kind, int32_t rule, int32_t clause,
                        int32_t match, enum mesh_authz_attr attr)
{
    struct mesh_authz_trace *t = x->t;
    void *p = t->steps;

    if (explain_grow(t->env, &p, &x->cap_steps, t->n_steps, sizeof(*t->steps)) != 0)
        return -ENOMEM;
    t->steps = p;
    t->steps[t->n_steps++] =
        (struct mesh_authz_step){.kind = kind, .rule = rule, .clause = clause, .match = match, .attr = attr};
    return 0;
}

/* The first term of a match that fails, as its attribute; 0 when all hold. */
static enum mesh_authz_attr explain_failing_term(const struct authz_cmatch *m, const struct authz_subject *s)
{
    for (uint32_t t = 0; t < m->n_terms; t++)
        if (!authz_term_holds(&m->terms[t], s))
            return m->terms[t].attr;
    return (enum mesh_authz_attr)0;
}

/* Index of the first non-empty match of the clause whose terms all hold, or -1. */
static int32_t explain_clause_hit(const struct authz_cclause *cl, const struct authz_subject *s)
{
    for (uint32_t m = 0; m < cl->n_matches; m++)
        if (cl->matches[m].n_terms > 0 && explain_failing_term(&cl->matches[m], s) == 0)
            return (int32_t)m;
    return -1;
}

static int explain_policy(struct explain_ctx *x, const struct mesh_authz_set *set, uint32_t index,
                          enum mesh_authz_origin origin, const struct authz_subject *s)
{
    const struct authz_cpolicy *p = &set->policies[index];
    struct mesh_authz_trace *t = x->t;
    struct mesh_authz_trace_policy *tp;
    void *mem = t->policies;

    if (explain_grow(t->env, &mem, &x->cap_policies, t->n_policies, sizeof(*t->policies)) != 0)
        return -ENOMEM;
    t->policies = mem;
    tp = &t->policies[t->n_policies++];
    *tp = (struct mesh_authz_trace_policy){.policy = index, .origin = origin, .rule = -1, .first_step = t->n_steps};
    if (p->n_rules == 0 && explain_step(x, MESH_AUTHZ_STEP_NO_RULES, -1, -1, -1, 0) != 0)
        return -ENOMEM;
    for (uint32_t r = 0; r < p->n_rules && tp->rule < 0; r++) {
        const struct authz_crule *rule = &p->rules[r];
        int32_t fail = -1;

        for (uint32_t c = 0; c < rule->n_clauses && fail < 0; c++)
            if (rule->clauses[c].n_matches > 0 && explain_clause_hit(&rule->clauses[c], s) < 0)
                fail = (int32_t)c;
        if (fail < 0) {
            tp->rule = (int32_t)r;
            tp->matched = true;
            if (explain_step(x, MESH_AUTHZ_STEP_RULE_MATCHED, (int32_t)r, -1, -1, 0) != 0)
                return -ENOMEM;
            for (uint32_t c = 0; c < rule->n_clauses; c++) {
                int32_t m = explain_clause_hit(&rule->clauses[c], s);

                if (explain_step(x, m < 0 ? MESH_AUTHZ_STEP_CLAUSE_EMPTY : MESH_AUTHZ_STEP_CLAUSE_HIT, (int32_t)r,
                                 (int32_t)c, m, 0) != 0)
                    return -ENOMEM;
            }
        } else {
            const struct authz_cclause *cl = &rule->clauses[fail];

            if (explain_step(x, MESH_AUTHZ_STEP_RULE_FAILED, (int32_t)r, fail, -1, 0) != 0)
                return -ENOMEM;
            for (uint32_t m = 0; m < cl->n_matches; m++) {
                const struct authz_cmatch *mt = &cl->matches[m];
                int rc = mt->n_terms == 0
                             ? explain_step(x, MESH_AUTHZ_STEP_MATCH_EMPTY, (int32_t)r, fail, (int32_t)m, 0)
                             : explain_step(x, MESH_AUTHZ_STEP_MATCH_FAILED, (int32_t)r, fail, (int32_t)m,
                                            explain_failing_term(mt, s));

                if (rc != 0)
                    return -ENOMEM;
            }
        }
    }
    tp->n_steps = t->n_steps - tp->first_step;
    return 0;
}

/* All applicable policies of one category, in applicability order; marks the decisive one. */
static int explain_category(struct explain_ctx *x, const struct mesh_authz_set *set, const struct mesh_authz_conn *conn,
                            const struct authz_subject *s, enum authz_cat cat, int32_t decisive)
{
    const struct authz_bucket *b[2] = {authz_ns_bucket(set, conn->dst_namespace), &set->global};
    const enum mesh_authz_origin origin[2] = {MESH_AUTHZ_ORIGIN_NAMESPACE, MESH_AUTHZ_ORIGIN_GLOBAL};
    bool marked = false;
    uint32_t first = x->t->n_policies;

    for (int k = 0; k < 2; k++)
        for (uint32_t i = 0; b[k] != NULL && i < b[k]->n[cat]; i++)
            if (explain_policy(x, set, b[k]->idx[cat][i], origin[k], s) != 0)
                return -ENOMEM;
    for (size_t i = 0; i < conn->n_policy_keys; i++) {
        const char *key = conn->policy_keys[i];
        int32_t p = key != NULL ? authz_find_key(set, key, strlen(key)) : -1;

        if (p >= 0 && set->policies[p].cat == cat &&
            explain_policy(x, set, (uint32_t)p, MESH_AUTHZ_ORIGIN_SELECTED, s) != 0)
            return -ENOMEM;
    }
    for (uint32_t i = first; i < x->t->n_policies && !marked; i++) {
        if ((int32_t)x->t->policies[i].policy == decisive && x->t->policies[i].matched) {
            x->t->policies[i].decisive = true;
            marked = true;
        }
    }
    return 0;
}

int mesh_authz_explain(const struct mesh_authz_set *set, const struct mesh_authz_conn *conn, const struct mesh_env *env,
                       struct mesh_authz_trace *trace)
{
    struct explain_ctx x = {.t = trace};
    struct authz_subject s;
    const struct mesh_authz_result *r = &trace->result;

    memset(trace, 0, sizeof(*trace));
    trace->env = env;
    mesh_authz_eval(set, conn, &trace->result);
    for (size_t i = 0; i < conn->n_policy_keys; i++) {
        const char *key = conn->policy_keys[i];

        if (key == NULL || set == NULL || authz_find_key(set, key, strlen(key)) < 0) {
            void *p = trace->unknown_keys;

            if (explain_grow(env, &p, &x.cap_unknown, trace->n_unknown_keys, sizeof(char *)) != 0)
                return -ENOMEM;
            trace->unknown_keys = p;
            trace->unknown_keys[trace->n_unknown_keys++] = key != NULL ? key : "(null)";
        }
    }
    if (set == NULL || set->n_policies == 0)
        return 0;
    authz_subject_init(set, conn, &s);
    if (explain_category(&x, set, conn, &s, AUTHZ_CAT_DRY_DENY, r->dry_run_policy) != 0 ||
        explain_category(&x, set, conn, &s, AUTHZ_CAT_DENY,
                         r->reason == MESH_AUTHZ_REASON_DENY_MATCHED ? r->policy : -1) != 0 ||
        explain_category(&x, set, conn, &s, AUTHZ_CAT_DRY_ALLOW, -1) != 0 ||
        explain_category(&x, set, conn, &s, AUTHZ_CAT_ALLOW,
                         r->reason == MESH_AUTHZ_REASON_ALLOW_MATCHED ? r->policy : -1) != 0)
        return -ENOMEM;
    return 0;
}

void mesh_authz_trace_fini(struct mesh_authz_trace *trace)
{
    if (trace == NULL || trace->env == NULL)
        return;
    mesh_env_free(trace->env, trace->policies);
    mesh_env_free(trace->env, trace->steps);
    mesh_env_free(trace->env, trace->unknown_keys);
    trace->policies = NULL;
    trace->steps = NULL;
    trace->unknown_keys = NULL;
    trace->n_policies = trace->n_steps = trace->n_unknown_keys = 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Text rendering
 * ------------------------------------------------------------------------------------------------------------ */

struct explain_out {
    char *buf;
    size_t cap;
    size_t len; /* what the full text needs */
};

__attribute__((format(printf, 2, 3))) static void explain_printf(struct explain_out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(o->len < o->cap ? o->buf + o->len : NULL, o->len < o->cap ? o->cap - o->len : 0, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

static const char *explain_origin_str(enum mesh_authz_origin o)
{
    return o == MESH_AUTHZ_ORIGIN_NAMESPACE ? "namespace" : o == MESH_AUTHZ_ORIGIN_GLOBAL ? "global" : "selected";
}

static void explain_format_step(struct explain_out *o, const struct mesh_authz_step *st)
{
    switch (st->kind) {
    case MESH_AUTHZ_STEP_NO_RULES:
        explain_printf(o, "  no rules: never matches\n");
        break;
    case MESH_AUTHZ_STEP_RULE_MATCHED:
        explain_printf(o, "  rule %d matched\n", st->rule);
        break;
    case MESH_AUTHZ_STEP_CLAUSE_EMPTY:
        explain_printf(o, "    clause %d: empty, matches everything\n", st->clause);
        break;
    case MESH_AUTHZ_STEP_CLAUSE_HIT:
        explain_printf(o, "    clause %d: match %d holds\n", st->clause, st->match);
        break;
    case MESH_AUTHZ_STEP_RULE_FAILED:
        explain_printf(o, "  rule %d failed at clause %d\n", st->rule, st->clause);
        break;
    case MESH_AUTHZ_STEP_MATCH_EMPTY:
        explain_printf(o, "    match %d: empty, skipped\n", st->match);
        break;
    case MESH_AUTHZ_STEP_MATCH_FAILED:
        explain_printf(o, "    match %d: %s %s\n", st->match, mesh_authz_attr_str(st->attr),
                       ((unsigned)st->attr & 1u) ? "has no entry that matches" : "has an entry that matches");
        break;
    }
}

size_t mesh_authz_trace_format(const struct mesh_authz_set *set, const struct mesh_authz_trace *trace, char *buf,
                               size_t cap)
{
    struct explain_out o = {.buf = buf, .cap = cap};
    const struct mesh_authz_result *r = &trace->result;

    if (cap > 0)
        buf[0] = '\0';
    explain_printf(&o, "decision: %s (%s)", mesh_authz_decision_str(r->decision), mesh_authz_reason_str(r->reason));
    if (r->policy >= 0 && set != NULL)
        explain_printf(&o, " by %s", mesh_authz_set_policy_key(set, (size_t)r->policy));
    explain_printf(&o, "\n");
    if (r->dry_run_policy >= 0 && set != NULL)
        explain_printf(&o, "dry-run: would be denied by %s\n",
                       mesh_authz_set_policy_key(set, (size_t)r->dry_run_policy));
    if (r->dry_run_allow_unmatched)
        explain_printf(&o, "dry-run: would be denied: dry-run allow policies exist, but none allowed\n");
    for (uint32_t i = 0; i < trace->n_unknown_keys; i++)
        explain_printf(&o, "unknown policy key skipped: %s\n", trace->unknown_keys[i]);
    if (trace->n_policies == 0)
        explain_printf(&o, "no policy applies\n");
    for (uint32_t i = 0; i < trace->n_policies && set != NULL; i++) {
        const struct mesh_authz_trace_policy *tp = &trace->policies[i];

        explain_printf(&o, "policy %s [%s, %s%s]: %s%s\n", mesh_authz_set_policy_key(set, tp->policy),
                       explain_origin_str(tp->origin),
                       mesh_authz_action_str(mesh_authz_set_policy_action(set, tp->policy)),
                       mesh_authz_set_policy_dry_run(set, tp->policy) ? ", dry-run" : "",
                       tp->matched ? "matched" : "no match", tp->decisive ? " (decisive)" : "");
        for (uint32_t k = 0; k < tp->n_steps; k++)
            explain_format_step(&o, &trace->steps[tp->first_step + k]);
    }
    return o.len;
}
