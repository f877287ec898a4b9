/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for mesh/authz.c, authz_ref.c and authz_explain.c through the public API (mesh/authz.h).
 *
 * Invariants of this file:
 *  - Policies and connections of the case table are written in a small notation parsed below, so each case fits on
 *    a few lines. The notation (test-only, not a product format):
 *      policy  "ACTION[-DRY] G|NS|WL ns/name: RULE || RULE ..."   (nothing after ':' = zero rules)
 *      RULE    "ANY" (zero clauses) or "CLAUSE && CLAUSE ..."
 *      CLAUSE  "NONE" (zero matches) or "MATCH | MATCH ..."
 *      MATCH   "{}" (empty match) or space-separated "[!]key=v1,v2" with key ns, principal, sa (ns/sa), src, dst
 *              (a.b.c.d[/len] or IPv6[/len]), port; '!' selects the not_* list. String values: "*" presence,
 *              "x*" prefix, "*x" suffix, "pre:x" / "suf:x" / "exact:x" explicit, anything else exact ("" too).
 *      conn    space-separated id=td/ns/NS/sa/SA, src=IP, dst=IP, port=N, wl=NS, sel=key1,key2
 *              (defaults: no identity, src 10.0.0.1, dst 10.1.0.1, port 8080, wl default, no keys)
 *  - Every case is checked three ways: compiled evaluation, reference evaluation and the explain trace must all
 *    give the expected decision, reason, deciding policy and dry-run outcome.
 *  - All memory of a case comes from a per-case test arena (libc) or the fake env, and is released before the next.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mesh/authz.h"
#include "tests/fakes/fake_clock.h"

/* ---------------------------------------------------------------------------------------------------------------
 * Test arena and the notation parser
 * ------------------------------------------------------------------------------------------------------------ */

struct tblock {
    struct tblock *next;
    _Alignas(16) unsigned char data[];
};

struct tarena {
    struct tblock *head;
};

static void *ta_alloc(struct tarena *a, size_t n)
{
    struct tblock *b = calloc(1, sizeof(*b) + (n ? n : 1));

    assert_non_null(b);
    b->next = a->head;
    a->head = b;
    return b->data;
}

static void ta_free(struct tarena *a)
{
    while (a->head != NULL) {
        struct tblock *b = a->head;

        a->head = b->next;
        free(b);
    }
}

static char *ta_strndup(struct tarena *a, const char *s, size_t n)
{
    char *d;

    if (n > 4096)
        fail_msg("test string of %zu bytes", n);
    d = ta_alloc(a, n + 1);

    memcpy(d, s, n);
    return d;
}

static char *ta_trim(struct tarena *a, const char *s, size_t n)
{
    const char *end = s + n;

    while (s < end && *s == ' ')
        s++;
    while (end > s && end[-1] == ' ')
        end--;
    return ta_strndup(a, s, (size_t)(end - s));
}

/* Split s at every occurrence of sep into trimmed pieces; keeps empty pieces. */
static char **ta_split(struct tarena *a, const char *s, const char *sep, size_t *n)
{
    size_t cap = 1, k = 0, seplen = strlen(sep);
    char **out;

    for (const char *p = strstr(s, sep); p != NULL; p = strstr(p + seplen, sep))
        cap++;
    out = ta_alloc(a, cap * sizeof(*out));
    for (;;) {
        const char *p = strstr(s, sep);

        if (p == NULL) {
            out[k++] = ta_trim(a, s, strlen(s));
            break;
        }
        out[k++] = ta_trim(a, s, (size_t)(p - s));
        s = p + seplen;
    }
    *n = k;
    return out;
}

static void parse_str(struct tarena *a, const char *v, struct mesh_authz_str_match *m)
{
    size_t n = strlen(v);

    if (strncmp(v, "pre:", 4) == 0)
        *m = (struct mesh_authz_str_match){MESH_AUTHZ_STR_PREFIX, v + 4};
    else if (strncmp(v, "suf:", 4) == 0)
        *m = (struct mesh_authz_str_match){MESH_AUTHZ_STR_SUFFIX, v + 4};
    else if (strncmp(v, "exact:", 6) == 0)
        *m = (struct mesh_authz_str_match){MESH_AUTHZ_STR_EXACT, v + 6};
    else if (strcmp(v, "*") == 0)
        *m = (struct mesh_authz_str_match){MESH_AUTHZ_STR_PRESENCE, NULL};
    else if (n > 0 && v[0] == '*')
        *m = (struct mesh_authz_str_match){MESH_AUTHZ_STR_SUFFIX, v + 1};
    else if (n > 0 && v[n - 1] == '*')
        *m = (struct mesh_authz_str_match){MESH_AUTHZ_STR_PREFIX, ta_strndup(a, v, n - 1)};
    else
        *m = (struct mesh_authz_str_match){MESH_AUTHZ_STR_EXACT, v};
}

/* "a.b.c.d" or IPv6, into family and 16 bytes. */
static void parse_ip(const char *s, uint8_t *family, uint8_t *bytes)
{
    memset(bytes, 0, 16);
    if (inet_pton(AF_INET, s, bytes) == 1) {
        *family = MESH_ADDR_V4;
        return;
    }
    if (inet_pton(AF_INET6, s, bytes) == 1) {
        *family = MESH_ADDR_V6;
        return;
    }
    fail_msg("bad address \"%s\" in test notation", s);
}

static void parse_cidr(struct tarena *a, const char *v, struct mesh_authz_cidr *c)
{
    size_t n = strcspn(v, "/");
    const char *slash = v[n] == '/' ? v + n : NULL;
    char *addr = ta_strndup(a, v, n);

    parse_ip(addr, &c->family, c->addr);
    c->len = slash != NULL ? (uint8_t)atoi(slash + 1) : c->family == MESH_ADDR_V4 ? 32 : 128;
}

static void parse_attr(struct tarena *a, const char *tok, struct mesh_authz_match *m)
{
    bool neg = tok[0] == '!';
    const char *eq = strchr(tok, '=');
    char *key;
    char **vals;
    size_t n;

    if (eq == NULL || eq <= tok + neg)
        fail_msg("attribute \"%s\" has no key= in test notation", tok);
    key = ta_strndup(a, tok + neg, (size_t)(eq - (tok + neg)));
    vals = ta_split(a, eq + 1, ",", &n);
    if (strcmp(key, "ns") == 0 || strcmp(key, "principal") == 0) {
        struct mesh_authz_str_match *v = ta_alloc(a, n * sizeof(*v));

        for (size_t i = 0; i < n; i++)
            parse_str(a, vals[i], &v[i]);
        if (key[0] == 'n' && !neg)
            m->namespaces = v, m->n_namespaces = n;
        else if (key[0] == 'n')
            m->not_namespaces = v, m->n_not_namespaces = n;
        else if (!neg)
            m->principals = v, m->n_principals = n;
        else
            m->not_principals = v, m->n_not_principals = n;
    } else if (strcmp(key, "sa") == 0) {
        struct mesh_authz_sa_match *v = ta_alloc(a, n * sizeof(*v));

        for (size_t i = 0; i < n; i++) {
            char *slash = strchr(vals[i], '/');

            assert_non_null(slash);
            *slash = '\0';
            v[i] = (struct mesh_authz_sa_match){vals[i], slash + 1};
        }
        if (!neg)
            m->service_accounts = v, m->n_service_accounts = n;
        else
            m->not_service_accounts = v, m->n_not_service_accounts = n;
    } else if (strcmp(key, "src") == 0 || strcmp(key, "dst") == 0) {
        struct mesh_authz_cidr *v = ta_alloc(a, n * sizeof(*v));

        for (size_t i = 0; i < n; i++)
            parse_cidr(a, vals[i], &v[i]);
        if (key[0] == 's' && !neg)
            m->source_ips = v, m->n_source_ips = n;
        else if (key[0] == 's')
            m->not_source_ips = v, m->n_not_source_ips = n;
        else if (!neg)
            m->destination_ips = v, m->n_destination_ips = n;
        else
            m->not_destination_ips = v, m->n_not_destination_ips = n;
    } else if (strcmp(key, "port") == 0) {
        uint16_t *v = ta_alloc(a, n * sizeof(*v));

        for (size_t i = 0; i < n; i++)
            v[i] = (uint16_t)atoi(vals[i]);
        if (!neg)
            m->destination_ports = v, m->n_destination_ports = n;
        else
            m->not_destination_ports = v, m->n_not_destination_ports = n;
    } else {
        fail_msg("unknown key \"%s\" in test notation", key);
    }
}

static void parse_policy(struct tarena *a, const char *text, struct mesh_authz_policy *p)
{
    const char *colon = strchr(text, ':');
    char *head, *sp1, *sp2, *slash, *body;
    char **rules;
    size_t n_rules;

    assert_non_null(colon);
    memset(p, 0, sizeof(*p));
    head = ta_strndup(a, text, (size_t)(colon - text));
    sp1 = strchr(head, ' ');
    assert_non_null(sp1);
    *sp1++ = '\0';
    sp2 = strchr(sp1, ' ');
    assert_non_null(sp2);
    *sp2++ = '\0';
    p->action = strncmp(head, "DENY", 4) == 0 ? MESH_AUTHZ_ACTION_DENY : MESH_AUTHZ_ACTION_ALLOW;
    p->dry_run = strstr(head, "-DRY") != NULL;
    p->scope = strcmp(sp1, "G") == 0    ? MESH_AUTHZ_SCOPE_GLOBAL
               : strcmp(sp1, "NS") == 0 ? MESH_AUTHZ_SCOPE_NAMESPACE
                                        : MESH_AUTHZ_SCOPE_WORKLOAD_SELECTOR;
    slash = strchr(sp2, '/');
    assert_non_null(slash);
    *slash = '\0';
    p->namespace = sp2;
    p->name = slash + 1;
    body = ta_trim(a, colon + 1, strlen(colon + 1));
    if (body[0] == '\0')
        return;
    rules = ta_split(a, body, "||", &n_rules);
    struct mesh_authz_rule *r = ta_alloc(a, n_rules * sizeof(*r));
    for (size_t i = 0; i < n_rules; i++) {
        char **clauses;
        size_t n_clauses;

        if (strcmp(rules[i], "ANY") == 0)
            continue;
        clauses = ta_split(a, rules[i], "&&", &n_clauses);
        struct mesh_authz_clause *c = ta_alloc(a, n_clauses * sizeof(*c));
        for (size_t j = 0; j < n_clauses; j++) {
            char **matches;
            size_t n_matches;

            if (strcmp(clauses[j], "NONE") == 0)
                continue;
            matches = ta_split(a, clauses[j], "|", &n_matches);
            struct mesh_authz_match *m = ta_alloc(a, n_matches * sizeof(*m));
            for (size_t k = 0; k < n_matches; k++) {
                char **attrs;
                size_t n_attrs;

                if (strcmp(matches[k], "{}") == 0)
                    continue;
                attrs = ta_split(a, matches[k], " ", &n_attrs);
                for (size_t t = 0; t < n_attrs; t++)
                    if (attrs[t][0] != '\0')
                        parse_attr(a, attrs[t], &m[k]);
            }
            c[j].matches = m;
            c[j].n_matches = n_matches;
        }
        r[i].clauses = c;
        r[i].n_clauses = n_clauses;
    }
    p->rules = r;
    p->n_rules = n_rules;
}

static void set_port(struct mesh_addr *a, unsigned port)
{
    uint8_t b[2] = {(uint8_t)(port >> 8), (uint8_t)port};

    memcpy(&a->port, b, 2);
}

static void set_addr(struct mesh_addr *a, const char *ip)
{
    uint8_t bytes[16];

    parse_ip(ip, &a->family, bytes);
    memcpy(a->family == MESH_ADDR_V4 ? a->ip.v4 : a->ip.v6, bytes, a->family == MESH_ADDR_V4 ? 4 : 16);
}

static void parse_conn(struct tarena *a, const char *text, struct mesh_authz_conn *c)
{
    char **toks;
    size_t n;

    memset(c, 0, sizeof(*c));
    set_addr(&c->src, "10.0.0.1");
    set_addr(&c->dst, "10.1.0.1");
    set_port(&c->dst, 8080);
    c->dst_namespace = "default";
    toks = ta_split(a, text, " ", &n);
    for (size_t i = 0; i < n; i++) {
        char *t = toks[i], *v = strchr(t, '=');

        if (t[0] == '\0')
            continue;
        assert_non_null(v);
        *v++ = '\0';
        if (strcmp(t, "id") == 0) {
            struct mesh_spiffe_id *id = ta_alloc(a, sizeof(*id));
            char uri[MESH_SPIFFE_URI_MAX_BYTES + 16];

            snprintf(uri, sizeof(uri), "spiffe://%s", v);
            assert_int_equal(mesh_spiffe_parse(uri, strlen(uri), id), 0);
            c->peer = id;
        } else if (strcmp(t, "src") == 0) {
            set_addr(&c->src, v);
        } else if (strcmp(t, "dst") == 0) {
            set_addr(&c->dst, v);
        } else if (strcmp(t, "port") == 0) {
            set_port(&c->dst, (unsigned)atoi(v));
        } else if (strcmp(t, "wl") == 0) {
            c->dst_namespace = v;
        } else if (strcmp(t, "sel") == 0) {
            size_t k;
            char **keys = ta_split(a, v, ",", &k);

            c->policy_keys = (const char *const *)keys;
            c->n_policy_keys = k;
        } else {
            fail_msg("unknown conn key \"%s\"", t);
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * The case table
 * ------------------------------------------------------------------------------------------------------------ */

#define MAX_CASE_POLICIES 6
#define NOALLOW MESH_AUTHZ_REASON_NO_ALLOW_POLICIES
#define AMATCH MESH_AUTHZ_REASON_ALLOW_MATCHED
#define DMATCH MESH_AUTHZ_REASON_DENY_MATCHED
#define NOTALLOWED MESH_AUTHZ_REASON_NOT_ALLOWED
#define ALLOW MESH_AUTHZ_ALLOW
#define DENY MESH_AUTHZ_DENY

struct authz_case {
    const char *name;
    const char *pol[MAX_CASE_POLICIES + 1];
    const char *conn;
    enum mesh_authz_decision dec;
    const char *key; /* deciding policy, NULL for none */
    enum mesh_authz_reason why;
    bool dry;           /* dry_run_denied */
    const char *dry_key; /* dry_run_policy, NULL for none */
    unsigned unknown;
};

#define IDA "id=cluster.local/ns/a/sa/x"
#define IDB "id=cluster.local/ns/b/sa/x"
#define STRICT_KEY "istio-system/istio_converted_static_strict"
#define STRICT_WL "DENY WL " STRICT_KEY ": !principal=*"

static const struct authz_case cases[] = {
    /* --- which policies apply (§4 policy selection) --- */
    {"no policies: allow", {NULL}, "", ALLOW, NULL, NOALLOW},
    {"namespace policy of another namespace does not apply", {"ALLOW NS other/p:"}, "", ALLOW, NULL, NOALLOW},
    {"namespace allow-nothing in the destination namespace denies", {"ALLOW NS default/p:"}, "", DENY, NULL,
     NOTALLOWED},
    {"namespace allow-all in the destination namespace", {"ALLOW NS default/p: ANY"}, "", ALLOW, "default/p", AMATCH},
    {"global allow-nothing applies to every namespace", {"ALLOW G istio-system/p:"}, "wl=foo", DENY, NULL,
     NOTALLOWED},
    {"global deny-all applies", {"DENY G istio-system/d: ANY"}, "wl=x", DENY, "istio-system/d", DMATCH},
    {"workload policy not selected does not apply", {"DENY WL default/d: ANY"}, "", ALLOW, NULL, NOALLOW},
    {"workload policy selected applies", {"DENY WL default/d: ANY"}, "sel=default/d", DENY, "default/d", DMATCH},
    {"unknown policy key is skipped", {"DENY WL default/d: ANY"}, "sel=default/zz", ALLOW, NULL, NOALLOW,
     .unknown = 1},
    {"policy key may name a policy of another namespace", {"DENY NS other/d: ANY"}, "sel=other/d", DENY, "other/d",
     DMATCH},
    {"namespace scope with empty namespace acts as global", {"DENY NS /d: ANY"}, "wl=foo", DENY, "/d", DMATCH},
    {"empty destination namespace: namespace policies do not apply", {"DENY NS default/d: ANY"}, "wl=", ALLOW, NULL,
     NOALLOW},
    {"empty destination namespace: global applies", {"DENY G root/d: ANY"}, "wl=", DENY, "root/d", DMATCH},
    {"namespace policies come before global", {"DENY G root/g: ANY", "DENY NS default/n: ANY"}, "", DENY,
     "default/n", DMATCH},
    {"global policies come before selected", {"DENY WL default/w: ANY", "DENY G root/g: ANY"}, "sel=default/w", DENY,
     "root/g", DMATCH},
    {"selected policies in key order", {"DENY WL default/w1: ANY", "DENY WL default/w2: ANY"},
     "sel=default/w2,default/w1", DENY, "default/w2", DMATCH},
    {"same bucket in input order", {"DENY NS default/a: ANY", "DENY NS default/b: ANY"}, "", DENY, "default/a",
     DMATCH},
    {"global policy also selected", {"DENY G root/g: ANY"}, "sel=root/g", DENY, "root/g", DMATCH},
    {"selected allow after non-matching namespace allow",
     {"ALLOW NS default/n: port=1", "ALLOW WL default/w: port=8080"}, "sel=default/w", ALLOW, "default/w", AMATCH},
    {"unselected allow does not make allow policies exist", {"ALLOW WL default/w: port=1"}, "", ALLOW, NULL,
     NOALLOW},
    {"several unknown keys are counted", {NULL}, "sel=a/b,c/d", ALLOW, NULL, NOALLOW, .unknown = 2},
    {"policies of another namespace only", {"ALLOW NS b/p: ANY", "DENY NS b/d: ANY"}, "wl=a", ALLOW, NULL, NOALLOW},
    {"key with the wrong namespace is unknown", {"DENY WL default/w: ANY"}, "sel=other/w", ALLOW, NULL, NOALLOW,
     .unknown = 1},
    {"mixed known and unknown keys", {"ALLOW WL default/w: ANY"}, "sel=x/y,default/w", ALLOW, "default/w", AMATCH,
     .unknown = 1},

    /* --- DENY before ALLOW, default allow (§4 steps 2, 4-6) --- */
    {"deny wins over allow", {"ALLOW NS default/a: ANY", "DENY NS default/d: ANY"}, "", DENY, "default/d", DMATCH},
    {"non-matching deny then matching allow", {"DENY NS default/d: port=1", "ALLOW NS default/a: ANY"}, "", ALLOW,
     "default/a", AMATCH},
    {"only a non-matching deny: default allow", {"DENY NS default/d: port=1"}, "", ALLOW, NULL, NOALLOW},
    {"non-matching deny and non-matching allow", {"DENY NS default/d: port=1", "ALLOW NS default/a: port=2"}, "", DENY,
     NULL, NOTALLOWED},
    {"global deny beats namespace allow", {"ALLOW NS default/a: ANY", "DENY G root/d: port=8080"}, "", DENY, "root/d",
     DMATCH},
    {"selected deny beats global allow", {"ALLOW G root/a: ANY", "DENY WL default/d: ANY"}, "sel=default/d", DENY,
     "default/d", DMATCH},
    {"second allow matches", {"ALLOW NS default/a1: port=1", "ALLOW NS default/a2: port=8080"}, "", ALLOW,
     "default/a2", AMATCH},
    {"second deny matches", {"DENY NS default/d1: port=1", "DENY NS default/d2: port=8080"}, "", DENY, "default/d2",
     DMATCH},
    {"first matching allow is reported", {"ALLOW NS default/a1: ANY", "ALLOW NS default/a2: ANY"}, "", ALLOW,
     "default/a1", AMATCH},

    /* --- structure: groups OR, clauses AND, matches OR, empty forms (§4 matching) --- */
    {"allow with zero rules denies all", {"ALLOW NS default/p:"}, IDA, DENY, NULL, NOTALLOWED},
    {"deny with zero rules never matches", {"DENY NS default/d:"}, "", ALLOW, NULL, NOALLOW},
    {"deny with an empty rule matches all", {"DENY NS default/d: ANY"}, IDA, DENY, "default/d", DMATCH},
    {"clause with no matches matches", {"DENY NS default/d: NONE"}, "", DENY, "default/d", DMATCH},
    {"clause of one empty match never matches", {"DENY NS default/d: {}"}, "", ALLOW, NULL, NOALLOW},
    {"clause of two empty matches never matches", {"DENY NS default/d: {} | {}"}, "", ALLOW, NULL, NOALLOW},
    {"empty match skipped, next match hits", {"DENY NS default/d: {} | port=8080"}, "", DENY, "default/d", DMATCH},
    {"empty match skipped, next match misses", {"DENY NS default/d: {} | port=80"}, "", ALLOW, NULL, NOALLOW},
    {"allow of only empty matches denies", {"ALLOW NS default/a: {}"}, "", DENY, NULL, NOTALLOWED},
    {"empty clause and a holding clause", {"DENY NS default/d: NONE && port=8080"}, "", DENY, "default/d", DMATCH},
    {"empty clause and a failing clause", {"DENY NS default/d: NONE && port=80"}, "", ALLOW, NULL, NOALLOW},
    {"rules OR: second rule holds", {"ALLOW NS default/a: port=80 || port=8080"}, "", ALLOW, "default/a", AMATCH},
    {"rules OR: no rule holds", {"ALLOW NS default/a: port=80 || port=81"}, "", DENY, NULL, NOTALLOWED},
    {"rules OR: empty rule after a failing one", {"ALLOW NS default/a: port=80 || ANY"}, "", ALLOW, "default/a",
     AMATCH},
    {"clauses AND: both hold", {"ALLOW NS default/a: port=8080 && src=10.0.0.0/8"}, "", ALLOW, "default/a", AMATCH},
    {"clauses AND: one fails", {"ALLOW NS default/a: port=8080 && src=192.168.0.0/16"}, "", DENY, NULL, NOTALLOWED},
    {"clauses AND: third fails", {"ALLOW NS default/a: port=8080 && src=10.0.0.0/8 && dst=10.2.0.0/16"}, "", DENY,
     NULL, NOTALLOWED},
    {"matches OR: second holds", {"ALLOW NS default/a: port=80 | port=8080"}, "", ALLOW, "default/a", AMATCH},
    {"matches OR: none holds", {"ALLOW NS default/a: port=80 | src=192.168.0.0/16"}, "", DENY, NULL, NOTALLOWED},
    {"attributes AND: both hold", {"ALLOW NS default/a: port=8080 src=10.0.0.1"}, "", ALLOW, "default/a", AMATCH},
    {"attributes AND: one fails", {"ALLOW NS default/a: port=8080 src=10.0.0.2"}, "", DENY, NULL, NOTALLOWED},
    {"values OR", {"ALLOW NS default/a: port=80,8080,9090"}, "", ALLOW, "default/a", AMATCH},
    {"positive holds and negative misses", {"ALLOW NS default/a: port=8080,9090 !port=9090"}, "", ALLOW, "default/a",
     AMATCH},
    {"same value in positive and negative: negative wins", {"ALLOW NS default/a: port=8080 !port=8080"}, "", DENY,
     NULL, NOTALLOWED},
    {"negative list alone, value absent: holds", {"DENY NS default/d: !port=80,443"}, "", DENY, "default/d", DMATCH},
    {"negative list alone, value present: fails", {"DENY NS default/d: !port=8080,443"}, "", ALLOW, NULL, NOALLOW},
    {"matches OR inside each of two clauses",
     {"ALLOW NS default/a: port=80 | port=8080 && src=1.2.3.4 | src=10.0.0.0/24"}, "", ALLOW, "default/a", AMATCH},
    {"matches OR inside two clauses, second clause misses",
     {"ALLOW NS default/a: port=80 | port=8080 && src=1.2.3.4 | src=10.0.0.0/24"}, "src=10.0.1.1", DENY, NULL,
     NOTALLOWED},

    /* --- namespaces: from the peer's SPIFFE ID, "" without identity --- */
    {"namespaces exact hit", {"ALLOW NS default/a: ns=a"}, IDA, ALLOW, "default/a", AMATCH},
    {"namespaces exact miss", {"ALLOW NS default/a: ns=a"}, IDB, DENY, NULL, NOTALLOWED},
    {"namespaces are case sensitive", {"ALLOW NS default/a: ns=A"}, IDA, DENY, NULL, NOTALLOWED},
    {"namespaces prefix hit", {"ALLOW NS default/a: ns=pro*"}, "id=cluster.local/ns/prod/sa/x", ALLOW, "default/a",
     AMATCH},
    {"namespaces prefix miss", {"ALLOW NS default/a: ns=pro*"}, "id=cluster.local/ns/dev/sa/x", DENY, NULL,
     NOTALLOWED},
    {"namespaces suffix hit", {"ALLOW NS default/a: ns=*-prod"}, "id=cluster.local/ns/team-prod/sa/x", ALLOW,
     "default/a", AMATCH},
    {"namespaces suffix miss", {"ALLOW NS default/a: ns=*-prod"}, "id=cluster.local/ns/team-dev/sa/x", DENY, NULL,
     NOTALLOWED},
    {"namespaces presence with identity", {"ALLOW NS default/a: ns=*"}, IDA, ALLOW, "default/a", AMATCH},
    {"namespaces presence without identity", {"ALLOW NS default/a: ns=*"}, "", DENY, NULL, NOTALLOWED},
    {"namespaces exact empty matches no identity", {"ALLOW NS default/a: ns="}, "", ALLOW, "default/a", AMATCH},
    {"namespaces exact empty misses an identity", {"ALLOW NS default/a: ns="}, IDA, DENY, NULL, NOTALLOWED},
    {"namespaces exact without identity", {"ALLOW NS default/a: ns=a"}, "", DENY, NULL, NOTALLOWED},
    {"not_namespaces presence without identity holds", {"DENY NS default/d: !ns=*"}, "", DENY, "default/d", DMATCH},
    {"not_namespaces presence with identity fails", {"DENY NS default/d: !ns=*"}, IDA, ALLOW, NULL, NOALLOW},
    {"not_namespaces exact, other namespace", {"ALLOW NS default/a: !ns=b"}, IDA, ALLOW, "default/a", AMATCH},
    {"not_namespaces exact, listed namespace", {"ALLOW NS default/a: !ns=b"}, IDB, DENY, NULL, NOTALLOWED},
    {"namespaces several values", {"ALLOW NS default/a: ns=b,c,a"}, IDA, ALLOW, "default/a", AMATCH},
    {"namespaces empty prefix matches no identity", {"ALLOW NS default/a: ns=pre:"}, "", ALLOW, "default/a", AMATCH},
    {"namespaces suffix equal to the whole value", {"ALLOW NS default/a: ns=*prod"}, "id=cluster.local/ns/prod/sa/x",
     ALLOW, "default/a", AMATCH},
    {"namespaces exact with a literal star hit", {"ALLOW NS default/a: ns=exact:a*"}, "id=cluster.local/ns/a*/sa/x",
     ALLOW, "default/a", AMATCH},
    {"namespaces exact with a literal star is no prefix", {"ALLOW NS default/a: ns=exact:a*"},
     "id=cluster.local/ns/ab/sa/x", DENY, NULL, NOTALLOWED},
    {"identity with empty namespace: presence fails", {"ALLOW NS default/a: ns=*"}, "id=cluster.local/ns//sa/x", DENY,
     NULL, NOTALLOWED},
    {"identity with empty namespace: exact empty holds", {"ALLOW NS default/a: ns="}, "id=cluster.local/ns//sa/x",
     ALLOW, "default/a", AMATCH},
    {"namespaces compare the identity, not the trust domain", {"ALLOW NS default/a: ns=cluster.local"}, IDA, DENY,
     NULL, NOTALLOWED},

    /* --- principals: td/ns/NS/sa/SA, never with no identity; STRICT --- */
    {"principal exact hit", {"ALLOW NS default/a: principal=cluster.local/ns/a/sa/x"}, IDA, ALLOW, "default/a",
     AMATCH},
    {"principal exact, other service account", {"ALLOW NS default/a: principal=cluster.local/ns/a/sa/x"},
     "id=cluster.local/ns/a/sa/y", DENY, NULL, NOTALLOWED},
    {"principal written with spiffe:// never matches",
     {"ALLOW NS default/a: principal=spiffe://cluster.local/ns/a/sa/x"},
     IDA, DENY, NULL, NOTALLOWED},
    {"principal prefix hit", {"ALLOW NS default/a: principal=cluster.local/ns/a/*"}, IDA, ALLOW, "default/a", AMATCH},
    {"principal prefix needs the whole segment", {"ALLOW NS default/a: principal=cluster.local/ns/a/*"},
     "id=cluster.local/ns/ab/sa/x", DENY, NULL, NOTALLOWED},
    {"principal prefix on the trust domain", {"ALLOW NS default/a: principal=cluster.local/*"}, "id=td2/ns/a/sa/x",
     DENY, NULL, NOTALLOWED},
    {"principal suffix hit", {"ALLOW NS default/a: principal=*/sa/x"}, IDA, ALLOW, "default/a", AMATCH},
    {"principal suffix miss", {"ALLOW NS default/a: principal=*/sa/y"}, IDA, DENY, NULL, NOTALLOWED},
    {"principal presence with identity", {"ALLOW NS default/a: principal=*"}, IDA, ALLOW, "default/a", AMATCH},
    {"principal presence without identity", {"ALLOW NS default/a: principal=*"}, "", DENY, NULL, NOTALLOWED},
    {"principal exact without identity", {"ALLOW NS default/a: principal=cluster.local/ns/a/sa/x"}, "", DENY, NULL,
     NOTALLOWED},
    {"principal empty prefix without identity never matches", {"ALLOW NS default/a: principal=pre:"}, "", DENY, NULL,
     NOTALLOWED},
    {"principal empty prefix with identity", {"ALLOW NS default/a: principal=pre:"}, IDA, ALLOW, "default/a", AMATCH},
    {"not_principals without identity always holds", {"ALLOW NS default/a: !principal=cluster.local/ns/a/sa/x"}, "",
     ALLOW, "default/a", AMATCH},
    {"not_principals listed identity", {"ALLOW NS default/a: !principal=cluster.local/ns/a/sa/x"}, IDA, DENY, NULL,
     NOTALLOWED},
    {"not_principals other identity", {"ALLOW NS default/a: !principal=cluster.local/ns/a/sa/x"},
     "id=cluster.local/ns/a/sa/y", ALLOW, "default/a", AMATCH},
    {"STRICT global: plaintext denied", {"DENY G istio-system/istio_converted_static_strict: !principal=*"}, "", DENY,
     STRICT_KEY, DMATCH},
    {"STRICT global: mTLS passes", {"DENY G istio-system/istio_converted_static_strict: !principal=*"}, IDA, ALLOW,
     NULL, NOALLOW},
    {"STRICT by workload key: plaintext denied", {STRICT_WL}, "sel=" STRICT_KEY, DENY, STRICT_KEY, DMATCH},
    {"STRICT by workload key: mTLS passes", {STRICT_WL}, IDA " sel=" STRICT_KEY, ALLOW, NULL, NOALLOW},
    {"STRICT plus allow ns a: mTLS from a", {STRICT_WL, "ALLOW NS default/a: ns=a"}, IDA " sel=" STRICT_KEY, ALLOW,
     "default/a", AMATCH},
    {"STRICT plus allow ns a: plaintext", {STRICT_WL, "ALLOW NS default/a: ns=a"}, "sel=" STRICT_KEY, DENY,
     STRICT_KEY, DMATCH},
    {"STRICT plus allow ns a: mTLS from b", {STRICT_WL, "ALLOW NS default/a: ns=a"}, IDB " sel=" STRICT_KEY, DENY,
     NULL, NOTALLOWED},
    {"STRICT without the key does not apply", {STRICT_WL}, "", ALLOW, NULL, NOALLOW},
    {"PERMISSIVE port exception: plaintext to the exempt port",
     {"DENY WL default/converted_peer_authentication_x: !principal=* !port=8080"},
     "sel=default/converted_peer_authentication_x", ALLOW, NULL, NOALLOW},
    {"PERMISSIVE port exception: plaintext to another port",
     {"DENY WL default/converted_peer_authentication_x: !principal=* !port=8080"},
     "port=9090 sel=default/converted_peer_authentication_x", DENY, "default/converted_peer_authentication_x",
     DMATCH},
    {"STRICT on one port: plaintext to it", {"DENY WL default/converted_peer_authentication_y: !principal=* port=9090"},
     "port=9090 sel=default/converted_peer_authentication_y", DENY, "default/converted_peer_authentication_y", DMATCH},
    {"STRICT on one port: plaintext elsewhere",
     {"DENY WL default/converted_peer_authentication_y: !principal=* port=9090"},
     "sel=default/converted_peer_authentication_y", ALLOW, NULL, NOALLOW},
    {"principals are case sensitive", {"ALLOW NS default/a: principal=Cluster.local/ns/a/sa/x"}, IDA, DENY, NULL,
     NOTALLOWED},
    {"principals several values", {"ALLOW NS default/a: principal=td/ns/b/sa/y,cluster.local/ns/a/sa/x"}, IDA, ALLOW,
     "default/a", AMATCH},
    {"principal with empty service account segment", {"ALLOW NS default/a: principal=*/sa/"},
     "id=cluster.local/ns/a/sa/", ALLOW, "default/a", AMATCH},

    /* --- service accounts: (ns, sa) of the SPIFFE ID, never without identity --- */
    {"service account hit", {"ALLOW NS default/a: sa=a/x"}, IDA, ALLOW, "default/a", AMATCH},
    {"service account: other name", {"ALLOW NS default/a: sa=a/x"}, "id=cluster.local/ns/a/sa/y", DENY, NULL,
     NOTALLOWED},
    {"service account: other namespace", {"ALLOW NS default/a: sa=a/x"}, IDB, DENY, NULL, NOTALLOWED},
    {"service account without identity", {"ALLOW NS default/a: sa=a/x"}, "", DENY, NULL, NOTALLOWED},
    {"service account ignores the trust domain", {"ALLOW NS default/a: sa=a/x"}, "id=td2/ns/a/sa/x", ALLOW,
     "default/a", AMATCH},
    {"not_service_accounts without identity holds", {"ALLOW NS default/a: !sa=a/x"}, "", ALLOW, "default/a", AMATCH},
    {"not_service_accounts listed", {"ALLOW NS default/a: !sa=a/x"}, IDA, DENY, NULL, NOTALLOWED},
    {"service accounts several values", {"ALLOW NS default/a: sa=b/y,a/x"}, IDA, ALLOW, "default/a", AMATCH},
    {"service account parts are not swapped", {"ALLOW NS default/a: sa=x/a"}, IDA, DENY, NULL, NOTALLOWED},

    /* --- ip blocks with prefix lengths --- */
    {"source /8 last address", {"ALLOW NS default/a: src=10.0.0.0/8"}, "src=10.255.255.255", ALLOW, "default/a",
     AMATCH},
    {"source /8 next network", {"ALLOW NS default/a: src=10.0.0.0/8"}, "src=11.0.0.0", DENY, NULL, NOTALLOWED},
    {"source bare address is /32", {"ALLOW NS default/a: src=10.0.0.1"}, "src=10.0.0.1", ALLOW, "default/a", AMATCH},
    {"source /32 neighbour", {"ALLOW NS default/a: src=10.0.0.1"}, "src=10.0.0.2", DENY, NULL, NOTALLOWED},
    {"source /0 matches any IPv4", {"ALLOW NS default/a: src=0.0.0.0/0"}, "src=1.2.3.4", ALLOW, "default/a", AMATCH},
    {"source IPv4 /0 does not match IPv6", {"ALLOW NS default/a: src=0.0.0.0/0"}, "src=fd00::1", DENY, NULL,
     NOTALLOWED},
    {"source prefix host bits are ignored", {"ALLOW NS default/a: src=10.1.2.3/16"}, "src=10.1.200.1", ALLOW,
     "default/a", AMATCH},
    {"source /22 first address", {"ALLOW NS default/a: src=192.168.4.0/22"}, "src=192.168.4.0", ALLOW, "default/a",
     AMATCH},
    {"source /22 last address", {"ALLOW NS default/a: src=192.168.4.0/22"}, "src=192.168.7.255", ALLOW, "default/a",
     AMATCH},
    {"source /22 just after", {"ALLOW NS default/a: src=192.168.4.0/22"}, "src=192.168.8.0", DENY, NULL, NOTALLOWED},
    {"source /22 just before", {"ALLOW NS default/a: src=192.168.4.0/22"}, "src=192.168.3.255", DENY, NULL,
     NOTALLOWED},
    {"source IPv6 /64 hit", {"ALLOW NS default/a: src=fd00:1::/64"}, "src=fd00:1::abcd", ALLOW, "default/a", AMATCH},
    {"source IPv6 /64 miss", {"ALLOW NS default/a: src=fd00:1::/64"}, "src=fd00:2::1", DENY, NULL, NOTALLOWED},
    {"source IPv6 bare address is /128", {"ALLOW NS default/a: src=::1"}, "src=::1", ALLOW, "default/a", AMATCH},
    {"source IPv6 /0 does not match IPv4", {"ALLOW NS default/a: src=::/0"}, "src=10.0.0.1", DENY, NULL, NOTALLOWED},
    {"source IPv6 /0 matches any IPv6", {"ALLOW NS default/a: src=::/0"}, "src=fd00::5", ALLOW, "default/a", AMATCH},
    {"IPv4-mapped source matches an IPv4 prefix", {"ALLOW NS default/a: src=10.0.0.0/8"}, "src=::ffff:10.0.0.1", ALLOW,
     "default/a", AMATCH},
    {"source IPv6 /65 inside", {"ALLOW NS default/a: src=fd00::8000:0:0:0/65"}, "src=fd00::ffff:0:0:1", ALLOW,
     "default/a", AMATCH},
    {"source IPv6 /65 just before", {"ALLOW NS default/a: src=fd00::8000:0:0:0/65"}, "src=fd00::7fff:ffff:ffff:ffff",
     DENY, NULL, NOTALLOWED},
    {"source IPv6 /63 last address", {"ALLOW NS default/a: src=fd00:0:0:2::/63"}, "src=fd00:0:0:3:ffff:ffff:ffff:ffff",
     ALLOW, "default/a", AMATCH},
    {"source IPv6 /63 just after", {"ALLOW NS default/a: src=fd00:0:0:2::/63"}, "src=fd00:0:0:4::", DENY, NULL,
     NOTALLOWED},
    {"overlapping prefixes", {"ALLOW NS default/a: src=10.0.0.0/8,10.1.0.0/16,11.0.0.0/8"}, "src=11.5.5.5", ALLOW,
     "default/a", AMATCH},
    {"adjacent prefixes, second half", {"ALLOW NS default/a: src=10.0.0.0/9,10.128.0.0/9"}, "src=10.200.0.0", ALLOW,
     "default/a", AMATCH},
    {"adjacent prefixes, outside", {"ALLOW NS default/a: src=10.0.0.0/9,10.128.0.0/9"}, "src=11.0.0.0", DENY, NULL,
     NOTALLOWED},
    {"not_source_ips listed", {"DENY NS default/d: !src=10.0.0.0/8"}, "src=10.0.0.1", ALLOW, NULL, NOALLOW},
    {"not_source_ips not listed", {"DENY NS default/d: !src=10.0.0.0/8"}, "src=192.168.1.1", DENY, "default/d",
     DMATCH},
    {"not_source_ips other family holds", {"DENY NS default/d: !src=10.0.0.0/8"}, "src=fd00::1", DENY, "default/d",
     DMATCH},
    {"destination ip hit", {"ALLOW NS default/a: dst=10.1.0.0/16"}, "dst=10.1.0.1", ALLOW, "default/a", AMATCH},
    {"destination ip miss", {"ALLOW NS default/a: dst=10.1.0.0/16"}, "dst=10.2.0.1", DENY, NULL, NOTALLOWED},
    {"destination ips compare the destination, not the source", {"ALLOW NS default/a: dst=10.0.0.1"},
     "src=10.0.0.1 dst=10.1.0.1", DENY, NULL, NOTALLOWED},
    {"not_destination_ips listed", {"DENY NS default/d: !dst=10.1.0.1"}, "dst=10.1.0.1", ALLOW, NULL, NOALLOW},
    {"not_destination_ips not listed", {"DENY NS default/d: !dst=10.1.0.1"}, "dst=10.1.0.2", DENY, "default/d",
     DMATCH},
    {"destination IPv6 prefix", {"ALLOW NS default/a: dst=fd00::/8"}, "dst=fd12::1", ALLOW, "default/a", AMATCH},
    {"source /31 both addresses", {"ALLOW NS default/a: src=10.0.0.0/31"}, "src=10.0.0.1", ALLOW, "default/a",
     AMATCH},
    {"source /31 outside", {"ALLOW NS default/a: src=10.0.0.0/31"}, "src=10.0.0.2", DENY, NULL, NOTALLOWED},
    {"source all-ones IPv4", {"ALLOW NS default/a: src=255.255.255.255"}, "src=255.255.255.255", ALLOW, "default/a",
     AMATCH},
    {"source /0 merged with a /8", {"ALLOW NS default/a: src=0.0.0.0/0,10.0.0.0/8"}, "src=200.1.1.1", ALLOW,
     "default/a", AMATCH},
    {"source all-ones IPv6", {"ALLOW NS default/a: src=ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
     "src=ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ALLOW, "default/a", AMATCH},

    /* --- destination ports: the resolved target port --- */
    {"port 0", {"ALLOW NS default/a: port=0"}, "port=0", ALLOW, "default/a", AMATCH},
    {"port 65535", {"ALLOW NS default/a: port=65535"}, "port=65535", ALLOW, "default/a", AMATCH},
    {"port 65535 versus 65534", {"ALLOW NS default/a: port=65535"}, "port=65534", DENY, NULL, NOTALLOWED},
    {"not_destination_ports other port", {"ALLOW NS default/a: !port=22"}, "", ALLOW, "default/a", AMATCH},
    {"not_destination_ports listed port", {"ALLOW NS default/a: !port=22"}, "port=22", DENY, NULL, NOTALLOWED},
    {"duplicate ports", {"ALLOW NS default/a: port=8080,8080"}, "", ALLOW, "default/a", AMATCH},
    {"port is the target port, not 15008", {"ALLOW NS default/a: port=15008"}, "", DENY, NULL, NOTALLOWED},

    /* --- dry-run policies only log (§4 steps 1 and 3) --- */
    {"dry-run deny that matches only logs", {"DENY-DRY NS default/d: ANY"}, "", ALLOW, NULL, NOALLOW, true,
     "default/d"},
    {"dry-run deny that does not match", {"DENY-DRY NS default/d: port=1"}, "", ALLOW, NULL, NOALLOW},
    {"dry-run deny and enforced deny", {"DENY-DRY NS default/dd: ANY", "DENY NS default/d: ANY"}, "", DENY,
     "default/d", DMATCH, true, "default/dd"},
    {"dry-run allow that does not match logs a would-deny", {"ALLOW-DRY NS default/a: port=1"}, "", ALLOW, NULL,
     NOALLOW, true},
    {"dry-run allow that matches", {"ALLOW-DRY NS default/a: ANY"}, "", ALLOW, NULL, NOALLOW},
    {"dry-run allow does not count as an allow policy", {"ALLOW-DRY NS default/a: ANY", "ALLOW NS default/b: port=1"},
     "", DENY, NULL, NOTALLOWED},
    {"enforced deny: dry-run allow is not judged", {"ALLOW-DRY NS default/a: port=1", "DENY NS default/d: ANY"}, "",
     DENY, "default/d", DMATCH},
    {"dry-run deny matches, allow allows", {"DENY-DRY G root/dd: port=8080", "ALLOW NS default/a: ANY"}, "", ALLOW,
     "default/a", AMATCH, true, "root/dd"},
    {"dry-run deny by workload key", {"DENY-DRY WL default/dd: ANY"}, "sel=default/dd", ALLOW, NULL, NOALLOW, true,
     "default/dd"},
    {"dry-run allow by workload key, no match", {"ALLOW-DRY WL default/a: port=1"}, "sel=default/a", ALLOW, NULL,
     NOALLOW, true},
    {"dry-run deny order: namespace first", {"DENY-DRY G root/g: ANY", "DENY-DRY NS default/n: ANY"}, "", ALLOW, NULL,
     NOALLOW, true, "default/n"},
    {"dry-run STRICT: plaintext", {"DENY-DRY WL istio-system/strict: !principal=*"}, "sel=istio-system/strict", ALLOW,
     NULL, NOALLOW, true, "istio-system/strict"},
    {"dry-run STRICT: mTLS", {"DENY-DRY WL istio-system/strict: !principal=*"}, IDA " sel=istio-system/strict", ALLOW,
     NULL, NOALLOW},
    {"dry-run allow matches while enforced allow misses",
     {"ALLOW-DRY NS default/da: ANY", "ALLOW NS default/a: port=1"}, "", DENY, NULL, NOTALLOWED},
    {"dry-run deny does not match, enforced deny does", {"DENY-DRY NS default/dd: port=1", "DENY NS default/d: ANY"},
     "", DENY, "default/d", DMATCH},

    /* --- shapes istiod produces --- */
    {"from namespace b to port 8080: hit", {"ALLOW NS default/allow-b: ns=b && port=8080"}, IDB, ALLOW,
     "default/allow-b", AMATCH},
    {"from namespace b to port 8080: other port", {"ALLOW NS default/allow-b: ns=b && port=8080"}, IDB " port=9090",
     DENY, NULL, NOTALLOWED},
    {"from namespace b to port 8080: other namespace", {"ALLOW NS default/allow-b: ns=b && port=8080"},
     "id=cluster.local/ns/c/sa/x", DENY, NULL, NOTALLOWED},
    {"namespace b and no principal never both hold (identity)",
     {"DENY NS default/deny-ns-b: ns=b !principal=* port=8080 src=10.0.0.0/8"}, IDB, ALLOW, NULL, NOALLOW},
    {"namespace b and no principal never both hold (plaintext)",
     {"DENY NS default/deny-ns-b: ns=b !principal=* port=8080 src=10.0.0.0/8"}, "", ALLOW, NULL, NOALLOW},
    {"principal and ip block in one source: hit",
     {"ALLOW NS default/a: principal=cluster.local/ns/b/sa/x src=10.0.0.0/8"},
     IDB, ALLOW, "default/a", AMATCH},
    {"principal and ip block in one source: wrong ip",
     {"ALLOW NS default/a: principal=cluster.local/ns/b/sa/x src=10.0.0.0/8"}, IDB " src=192.168.0.1", DENY, NULL,
     NOTALLOWED},
    {"two sources are two matches of one clause", {"ALLOW NS default/a: ns=b | src=192.168.0.0/16"},
     "src=192.168.1.1", ALLOW, "default/a", AMATCH},
    {"when destination.ip is its own clause", {"ALLOW NS default/a: ns=b && dst=10.1.0.1"}, IDB, ALLOW, "default/a",
     AMATCH},
    {"deny with only L7 parts became an empty match", {"DENY NS default/d: {}", "ALLOW NS default/a: ANY"}, "", ALLOW,
     "default/a", AMATCH},
    {"allow-all in the root namespace", {"ALLOW G istio-system/allow-all: ANY", "ALLOW NS default/a: port=1"}, "",
     ALLOW, "istio-system/allow-all", AMATCH},
    {"deny-all in the root namespace", {"DENY G istio-system/deny-all: ANY", "ALLOW NS default/a: ANY"}, "", DENY,
     "istio-system/deny-all", DMATCH},
    {"namespace-wide deny of plaintext from outside 10/8",
     {"DENY NS default/d: !principal=* !src=10.0.0.0/8"}, "src=172.16.0.1", DENY, "default/d", DMATCH},
    {"namespace-wide deny of plaintext, inside 10/8", {"DENY NS default/d: !principal=* !src=10.0.0.0/8"}, "", ALLOW,
     NULL, NOALLOW},
    {"several policies, one of each kind",
     {"DENY-DRY G root/dd: port=9090", "DENY NS default/d: ns=evil", "ALLOW-DRY NS default/da: ns=a",
      "ALLOW NS default/a: ns=b", "ALLOW WL default/w: sa=a/x"},
     IDA " sel=default/w", ALLOW, "default/w", AMATCH},
    {"several policies, one of each kind, from evil",
     {"DENY-DRY G root/dd: port=9090", "DENY NS default/d: ns=evil", "ALLOW-DRY NS default/da: ns=a",
      "ALLOW NS default/a: ns=b", "ALLOW WL default/w: sa=a/x"},
     "id=cluster.local/ns/evil/sa/x port=9090 sel=default/w", DENY, "default/d", DMATCH, true, "root/dd"},
    {"dry-run allow misses, enforced allow matches", {"ALLOW-DRY NS default/da: ns=a", "ALLOW NS default/a: ns=b"},
     IDB " wl=default", ALLOW, "default/a", AMATCH, true},
};

static const char *result_key(const struct mesh_authz_set *set, int32_t i)
{
    return i >= 0 ? mesh_authz_set_policy_key(set, (size_t)i) : NULL;
}

static void check_result(const struct authz_case *c, const struct mesh_authz_set *set,
                         const struct mesh_authz_result *r, const char *who)
{
    const char *key = result_key(set, r->policy), *dry_key = result_key(set, r->dry_run_policy);
    bool ok = r->decision == c->dec && r->reason == c->why && r->dry_run_denied == c->dry &&
              r->n_unknown_keys == c->unknown && ((key == NULL) == (c->key == NULL)) &&
              (key == NULL || strcmp(key, c->key) == 0) && ((dry_key == NULL) == (c->dry_key == NULL)) &&
              (dry_key == NULL || strcmp(dry_key, c->dry_key) == 0);

    if (!ok)
        fail_msg("case \"%s\" (%s): got %s/%s policy %s dry %d/%s unknown %u; want %s/%s policy %s dry %d/%s "
                 "unknown %u",
                 c->name, who, mesh_authz_decision_str(r->decision), mesh_authz_reason_str(r->reason),
                 key ? key : "-", r->dry_run_denied, dry_key ? dry_key : "-", r->n_unknown_keys,
                 mesh_authz_decision_str(c->dec), mesh_authz_reason_str(c->why), c->key ? c->key : "-", c->dry,
                 c->dry_key ? c->dry_key : "-", c->unknown);
}

static bool same_result(const struct mesh_authz_result *a, const struct mesh_authz_result *b)
{
    return a->decision == b->decision && a->reason == b->reason && a->policy == b->policy &&
           a->dry_run_policy == b->dry_run_policy && a->dry_run_allow_unmatched == b->dry_run_allow_unmatched &&
           a->dry_run_denied == b->dry_run_denied && a->n_unknown_keys == b->n_unknown_keys;
}

static void assert_same_result(const struct mesh_authz_result *a, const struct mesh_authz_result *b)
{
    assert_int_equal(a->decision, b->decision);
    assert_int_equal(a->reason, b->reason);
    assert_int_equal(a->policy, b->policy);
    assert_int_equal(a->dry_run_policy, b->dry_run_policy);
    assert_int_equal(a->dry_run_allow_unmatched, b->dry_run_allow_unmatched);
    assert_int_equal(a->dry_run_denied, b->dry_run_denied);
    assert_int_equal(a->n_unknown_keys, b->n_unknown_keys);
}

static void test_authz_case_table(void **state)
{
    struct fake_env fe;
    size_t n_cases = sizeof(cases) / sizeof(cases[0]);

    (void)state;
    fake_env_init(&fe, 0, 1);
    assert_true(n_cases >= 150);
    for (size_t i = 0; i < n_cases; i++) {
        const struct authz_case *c = &cases[i];
        struct tarena a = {NULL};
        struct mesh_authz_policy pol[MAX_CASE_POLICIES];
        struct mesh_authz_conn conn;
        struct mesh_authz_result got, ref;
        struct mesh_authz_trace trace;
        struct mesh_authz_set *set;
        enum mesh_authz_decision dec;
        size_t n = 0;
        int err = 1;

        while (c->pol[n] != NULL)
            parse_policy(&a, c->pol[n], &pol[n]), n++;
        parse_conn(&a, c->conn, &conn);
        set = mesh_authz_set_new(&fe.env, pol, n, &err);
        assert_non_null(set);
        assert_int_equal(err, 0);
        dec = mesh_authz_eval(set, &conn, &got);
        assert_int_equal(dec, got.decision);
        check_result(c, set, &got, "compiled");
        dec = mesh_authz_eval_reference(pol, n, &conn, &ref);
        assert_int_equal(dec, ref.decision);
        check_result(c, set, &ref, "reference");
        assert_same_result(&got, &ref);
        assert_int_equal(mesh_authz_explain(set, &conn, &fe.env, &trace), 0);
        check_result(c, set, &trace.result, "explain");
        if (c->key != NULL) {
            bool decisive = false;

            for (uint32_t k = 0; k < trace.n_policies; k++)
                decisive |= trace.policies[k].decisive && (int32_t)trace.policies[k].policy == got.policy;
            assert_true(decisive);
        }
        mesh_authz_trace_fini(&trace);
        mesh_authz_set_free(set);
        ta_free(&a);
    }
    assert_int_equal(fe.alloc.live, 0);
    print_message("%zu cases: compiled, reference and explain agree with the table\n", n_cases);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Set construction, accessors, validation
 * ------------------------------------------------------------------------------------------------------------ */

static void test_authz_set_accessors(void **state)
{
    struct fake_env fe;
    struct tarena a = {NULL};
    struct mesh_authz_policy pol[3];
    struct mesh_authz_set *set;
    struct mesh_authz_conn conn;
    struct mesh_authz_result r;
    int err;

    (void)state;
    fake_env_init(&fe, 0, 1);
    parse_policy(&a, "DENY WL istio-system/istio_converted_static_strict: !principal=*", &pol[0]);
    parse_policy(&a, "ALLOW-DRY NS default/p: ANY", &pol[1]);
    parse_policy(&a, "ALLOW G root/all: ANY", &pol[2]);
    set = mesh_authz_set_new(&fe.env, pol, 3, &err);
    assert_non_null(set);
    assert_int_equal(mesh_authz_set_count(set), 3);
    assert_string_equal(mesh_authz_set_policy_name(set, 0), "istio_converted_static_strict");
    assert_string_equal(mesh_authz_set_policy_namespace(set, 0), "istio-system");
    assert_string_equal(mesh_authz_set_policy_key(set, 1), "default/p");
    assert_int_equal(mesh_authz_set_policy_action(set, 0), MESH_AUTHZ_ACTION_DENY);
    assert_true(mesh_authz_set_policy_dry_run(set, 1));
    assert_false(mesh_authz_set_policy_dry_run(set, 2));
    assert_int_equal(mesh_authz_set_find(set, "root/all", 8), 2);
    assert_int_equal(mesh_authz_set_find(set, "root/allx", 8), 2); /* length-delimited */
    assert_int_equal(mesh_authz_set_find(set, "root/al", 7), -1);
    assert_int_equal(mesh_authz_set_find(NULL, "root/all", 8), -1);
    /* The model may be freed once the set is built. */
    ta_free(&a);
    parse_conn(&a, "sel=istio-system/istio_converted_static_strict", &conn);
    assert_int_equal(mesh_authz_eval(set, &conn, &r), MESH_AUTHZ_DENY);
    assert_int_equal(r.policy, 0);
    mesh_authz_set_free(set);
    mesh_authz_set_free(NULL);
    assert_int_equal(mesh_authz_set_count(NULL), 0);
    /* A NULL set allows everything and counts every key as unknown. */
    assert_int_equal(mesh_authz_eval(NULL, &conn, &r), MESH_AUTHZ_ALLOW);
    assert_int_equal(r.reason, MESH_AUTHZ_REASON_NO_ALLOW_POLICIES);
    assert_int_equal(r.n_unknown_keys, 1);
    /* An empty set is valid. */
    set = mesh_authz_set_new(&fe.env, NULL, 0, &err);
    assert_non_null(set);
    assert_int_equal(mesh_authz_eval(set, &conn, &r), MESH_AUTHZ_ALLOW);
    mesh_authz_set_free(set);
    ta_free(&a);
    assert_int_equal(fe.alloc.live, 0);
}

static void test_authz_set_rejects_bad_models(void **state)
{
    struct fake_env fe;
    struct tarena a = {NULL};
    struct mesh_authz_policy pol[2], bad;
    struct mesh_authz_str_match s_bad = {(enum mesh_authz_str_kind)9, "x"}, s_null = {MESH_AUTHZ_STR_PREFIX, NULL};
    struct mesh_authz_str_match s_presence = {MESH_AUTHZ_STR_PRESENCE, NULL};
    struct mesh_authz_cidr c4 = {MESH_ADDR_V4, 33, {10}}, c6 = {MESH_ADDR_V6, 129, {0}}, cf = {5, 8, {0}};
    struct mesh_authz_sa_match sa = {"ns", NULL};
    struct mesh_authz_match m;
    struct mesh_authz_clause cl = {&m, 1};
    struct mesh_authz_rule rule = {&cl, 1};
    int err = 0;

    (void)state;
    fake_env_init(&fe, 0, 1);
    parse_policy(&a, "ALLOW NS default/p: ANY", &pol[0]);
    parse_policy(&a, "DENY WL default/p: ANY", &pol[1]);
    assert_null(mesh_authz_set_new(&fe.env, pol, 2, &err));
    assert_int_equal(err, -EEXIST);
    assert_null(mesh_authz_set_new(&fe.env, NULL, 1, &err));
    assert_int_equal(err, -EINVAL);
    assert_null(mesh_authz_set_new(NULL, pol, 1, &err));
    assert_int_equal(err, -EINVAL);

    bad = pol[0];
    bad.scope = (enum mesh_authz_scope)3;
    assert_null(mesh_authz_set_new(&fe.env, &bad, 1, &err));
    assert_int_equal(err, -EINVAL);
    bad = pol[0];
    bad.action = (enum mesh_authz_action)2; /* no AUDIT / CUSTOM */
    assert_null(mesh_authz_set_new(&fe.env, &bad, 1, &err));
    bad = pol[0];
    bad.name = NULL;
    assert_null(mesh_authz_set_new(&fe.env, &bad, 1, &err));
    bad = pol[0];
    bad.n_rules = 1;
    bad.rules = NULL;
    assert_null(mesh_authz_set_new(&fe.env, &bad, 1, &err));

    bad = pol[0];
    bad.rules = &rule;
    bad.n_rules = 1;
    const struct {
        const char *what;
        struct mesh_authz_match m;
    } bad_matches[] = {
        {"string kind", {.namespaces = &s_bad, .n_namespaces = 1}},
        {"prefix without value", {.not_principals = &s_null, .n_not_principals = 1}},
        {"IPv4 length 33", {.source_ips = &c4, .n_source_ips = 1}},
        {"IPv6 length 129", {.not_destination_ips = &c6, .n_not_destination_ips = 1}},
        {"address family", {.destination_ips = &cf, .n_destination_ips = 1}},
        {"service account NULL", {.service_accounts = &sa, .n_service_accounts = 1}},
        {"list pointer NULL", {.destination_ports = NULL, .n_destination_ports = 2}},
    };
    for (size_t i = 0; i < sizeof(bad_matches) / sizeof(bad_matches[0]); i++) {
        m = bad_matches[i].m;
        err = 0;
        if (mesh_authz_set_new(&fe.env, &bad, 1, &err) != NULL || err != -EINVAL)
            fail_msg("model with bad %s accepted", bad_matches[i].what);
    }
    /* Presence needs no value. */
    m = (struct mesh_authz_match){.principals = &s_presence, .n_principals = 1};
    struct mesh_authz_set *set = mesh_authz_set_new(&fe.env, &bad, 1, &err);
    assert_non_null(set);
    mesh_authz_set_free(set);
    ta_free(&a);
    assert_int_equal(fe.alloc.live, 0);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Explain
 * ------------------------------------------------------------------------------------------------------------ */

static void test_authz_explain_trace(void **state)
{
    struct fake_env fe;
    struct tarena a = {NULL};
    struct mesh_authz_policy pol[4];
    struct mesh_authz_set *set;
    struct mesh_authz_conn conn;
    struct mesh_authz_trace t;
    char text[4096];
    size_t need;

    (void)state;
    fake_env_init(&fe, 0, 1);
    parse_policy(&a, "DENY NS default/deny-b: ns=b !principal=* | {}", &pol[0]);
    parse_policy(&a, "ALLOW NS default/allow-a: port=80 || ns=a && port=8080 && NONE", &pol[1]);
    parse_policy(&a, "ALLOW G root/nothing:", &pol[2]);
    parse_policy(&a, "DENY-DRY WL default/dry: NONE", &pol[3]);
    set = mesh_authz_set_new(&fe.env, pol, 4, NULL);
    assert_non_null(set);
    parse_conn(&a, IDA " sel=default/dry,nope/x", &conn);
    assert_int_equal(mesh_authz_explain(set, &conn, &fe.env, &t), 0);
    assert_int_equal(t.result.decision, MESH_AUTHZ_ALLOW);
    assert_int_equal(t.result.policy, 1);
    assert_int_equal(t.result.dry_run_policy, 3);
    assert_int_equal(t.n_unknown_keys, 1);
    assert_string_equal(t.unknown_keys[0], "nope/x");
    /* Order: dry-run DENY (selected), DENY (namespace), ALLOW (namespace, then global). */
    assert_int_equal(t.n_policies, 4);
    assert_int_equal(t.policies[0].policy, 3);
    assert_int_equal(t.policies[0].origin, MESH_AUTHZ_ORIGIN_SELECTED);
    assert_true(t.policies[0].matched && t.policies[0].decisive);
    assert_int_equal(t.policies[1].policy, 0);
    assert_false(t.policies[1].matched);
    assert_int_equal(t.policies[2].policy, 1);
    assert_true(t.policies[2].matched && t.policies[2].decisive);
    assert_int_equal(t.policies[2].rule, 1);
    assert_int_equal(t.policies[3].policy, 2);
    assert_int_equal(t.policies[3].origin, MESH_AUTHZ_ORIGIN_GLOBAL);
    assert_false(t.policies[3].matched || t.policies[3].decisive);

    /* deny-b: rule 0 fails at clause 0; match 0 fails on namespaces (first failing term), match 1 empty. */
    const struct mesh_authz_step *s = &t.steps[t.policies[1].first_step];
    assert_int_equal(t.policies[1].n_steps, 3);
    assert_int_equal(s[0].kind, MESH_AUTHZ_STEP_RULE_FAILED);
    assert_int_equal(s[0].clause, 0);
    assert_int_equal(s[1].kind, MESH_AUTHZ_STEP_MATCH_FAILED);
    assert_int_equal(s[1].attr, MESH_AUTHZ_ATTR_NAMESPACES);
    assert_int_equal(s[2].kind, MESH_AUTHZ_STEP_MATCH_EMPTY);
    /* allow-a: rule 0 fails on ports; rule 1 holds: clauses 0 and 1 by their match 0, clause 2 empty. */
    s = &t.steps[t.policies[2].first_step];
    assert_int_equal(t.policies[2].n_steps, 6);
    assert_int_equal(s[0].kind, MESH_AUTHZ_STEP_RULE_FAILED);
    assert_int_equal(s[1].kind, MESH_AUTHZ_STEP_MATCH_FAILED);
    assert_int_equal(s[1].attr, MESH_AUTHZ_ATTR_DESTINATION_PORTS);
    assert_int_equal(s[2].kind, MESH_AUTHZ_STEP_RULE_MATCHED);
    assert_int_equal(s[2].rule, 1);
    assert_int_equal(s[3].kind, MESH_AUTHZ_STEP_CLAUSE_HIT);
    assert_int_equal(s[3].match, 0);
    assert_int_equal(s[4].kind, MESH_AUTHZ_STEP_CLAUSE_HIT);
    assert_int_equal(s[4].clause, 1);
    assert_int_equal(s[5].kind, MESH_AUTHZ_STEP_CLAUSE_EMPTY);
    /* root/nothing: no rules. */
    assert_int_equal(t.steps[t.policies[3].first_step].kind, MESH_AUTHZ_STEP_NO_RULES);

    need = mesh_authz_trace_format(set, &t, text, sizeof(text));
    assert_true(need < sizeof(text));
    assert_int_equal(strlen(text), need);
    assert_non_null(strstr(text, "decision: ALLOW (allow policy match) by default/allow-a\n"));
    assert_non_null(strstr(text, "dry-run: would be denied by default/dry\n"));
    assert_non_null(strstr(text, "unknown policy key skipped: nope/x\n"));
    assert_non_null(strstr(text, "policy default/deny-b [namespace, DENY]: no match\n"));
    assert_non_null(strstr(text, "    match 0: namespaces has no entry that matches\n"));
    assert_non_null(strstr(text, "policy default/allow-a [namespace, ALLOW]: matched (decisive)\n"));
    assert_non_null(strstr(text, "    clause 2: empty, matches everything\n"));
    assert_non_null(strstr(text, "policy root/nothing [global, ALLOW]: no match\n  no rules: never matches\n"));
    /* Truncation: the return value still tells the full length, and the buffer is terminated. */
    assert_int_equal(mesh_authz_trace_format(set, &t, text, 10), need);
    assert_int_equal(strlen(text), 9);
    mesh_authz_trace_fini(&t);
    mesh_authz_trace_fini(&t); /* idempotent */

    /* A denied plaintext connection: not_principals shows up as the failing-negative wording elsewhere. */
    parse_conn(&a, "id=cluster.local/ns/b/sa/x", &conn);
    assert_int_equal(mesh_authz_explain(set, &conn, &fe.env, &t), 0);
    need = mesh_authz_trace_format(set, &t, text, sizeof(text));
    assert_non_null(strstr(text, "decision: DENY (allow policies exist, but none allowed)\n"));
    assert_non_null(strstr(text, "    match 0: not_principals has an entry that matches\n"));
    mesh_authz_trace_fini(&t);

    /* No set at all. */
    assert_int_equal(mesh_authz_explain(NULL, &conn, &fe.env, &t), 0);
    mesh_authz_trace_format(NULL, &t, text, sizeof(text));
    assert_string_equal(text, "decision: ALLOW (no allow policies, allow)\nno policy applies\n");
    mesh_authz_trace_fini(&t);
    mesh_authz_set_free(set);
    ta_free(&a);
    assert_int_equal(fe.alloc.live, 0);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Allocation-failure sweep
 * ------------------------------------------------------------------------------------------------------------ */

static const char *const sweep_policies[] = {
    "DENY WL istio-system/strict: !principal=*",
    "ALLOW NS default/a: ns=a,b*,*c,* principal=cluster.local/ns/a/sa/x !sa=a/y && src=10.0.0.0/8,fd00::/8 | "
    "!dst=10.1.0.0/16 port=80,8080 || NONE",
    "DENY-DRY G root/d: sa=x/y,z/w !port=1 | {}",
    "ALLOW-DRY NS other/o: ANY",
};

static void test_authz_alloc_failure_sweep(void **state)
{
    const size_t n = sizeof(sweep_policies) / sizeof(sweep_policies[0]);
    struct fake_env fe;
    struct tarena a = {NULL};
    struct mesh_authz_policy pol[4];
    struct mesh_authz_conn conn;
    struct mesh_authz_set *set;
    struct mesh_authz_trace t;
    long attempts;
    int err;

    (void)state;
    fake_env_init(&fe, 0, 1);
    for (size_t i = 0; i < n; i++)
        parse_policy(&a, sweep_policies[i], &pol[i]);
    parse_conn(&a, IDA " sel=istio-system/strict,x/y", &conn);
    failalloc_arm(&fe.alloc, 0);
    set = mesh_authz_set_new(&fe.env, pol, n, &err);
    assert_non_null(set);
    attempts = fe.alloc.attempts;
    mesh_authz_set_free(set);
    assert_true(attempts > 3);
    for (long k = 1; k <= attempts; k++) {
        failalloc_arm(&fe.alloc, k);
        set = mesh_authz_set_new(&fe.env, pol, n, &err);
        assert_null(set);
        assert_int_equal(err, -ENOMEM);
        assert_int_equal(fe.alloc.live, 0);
    }
    failalloc_arm(&fe.alloc, 0);
    set = mesh_authz_set_new(&fe.env, pol, n, &err);
    assert_non_null(set);
    failalloc_arm(&fe.alloc, 0);
    assert_int_equal(mesh_authz_explain(set, &conn, &fe.env, &t), 0);
    attempts = fe.alloc.attempts;
    assert_true(attempts >= 3);
    mesh_authz_trace_fini(&t);
    for (long k = 1; k <= attempts; k++) {
        long live = fe.alloc.live;

        failalloc_arm(&fe.alloc, k);
        assert_int_equal(mesh_authz_explain(set, &conn, &fe.env, &t), -ENOMEM);
        mesh_authz_trace_fini(&t);
        assert_int_equal(fe.alloc.live, live);
    }
    failalloc_arm(&fe.alloc, 0);
    mesh_authz_set_free(set);
    ta_free(&a);
    assert_int_equal(fe.alloc.live, 0);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Randomized property: compiled and reference evaluation agree
 * ------------------------------------------------------------------------------------------------------------ */

#define PROP_SETS 25000
#define PROP_CONNS_PER_SET 4
#define PROP_SEED 0x5eed2026u

struct prng {
    uint64_t s;
};

static uint32_t prng_next(struct prng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return (uint32_t)(r->s >> 11);
}

static uint32_t prng_below(struct prng *r, uint32_t n)
{
    return n ? prng_next(r) % n : 0;
}

static bool prng_chance(struct prng *r, unsigned percent)
{
    return prng_below(r, 100) < percent;
}

static const char *const gen_tds[] = {"cluster.local", "td2"};
static const char *const gen_nss[] = {"a", "b", "ab", "", "default"};
static const char *const gen_sas[] = {"default", "x", "y"};
static const uint16_t gen_ports[] = {80, 443, 8080, 9090, 0, 65535};
static const char *const gen_v4[] = {"10.0.0.0", "10.1.2.3", "192.168.1.1", "0.0.0.0", "255.255.255.255",
                                     "10.128.0.1"};
static const uint8_t gen_v4_len[] = {0, 1, 8, 9, 16, 24, 31, 32};
static const char *const gen_v6[] = {"fd00::", "fd00::1:0", "::", "fd00:0:0:0:8000::1", "ffff::"};
static const uint8_t gen_v6_len[] = {0, 1, 8, 32, 63, 64, 65, 120, 128};
static const char *const gen_conn_ips[] = {"10.0.0.1",  "10.1.2.3",   "10.1.255.255", "192.168.1.1",
                                           "11.0.0.1",  "0.0.0.0",    "255.255.255.255", "10.128.0.1",
                                           "fd00::1",   "fd00::1:5",  "::1", "fd00:0:0:0:8000::",
                                           "ffff::1", "::ffff:10.0.0.1", "::ffff:192.168.1.1"};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* A string drawn from what identities look like, cut for prefix/suffix forms. */
static const char *gen_string(struct tarena *a, struct prng *r, bool principal)
{
    if (principal) {
        char buf[96];

        snprintf(buf, sizeof(buf), "%s/ns/%s/sa/%s", gen_tds[prng_below(r, N_OF(gen_tds))],
                 gen_nss[prng_below(r, N_OF(gen_nss))], gen_sas[prng_below(r, N_OF(gen_sas))]);
        return ta_strndup(a, buf, strlen(buf));
    }
    return prng_chance(r, 50) ? gen_nss[prng_below(r, N_OF(gen_nss))] : gen_sas[prng_below(r, N_OF(gen_sas))];
}

static void gen_strs(struct tarena *a, struct prng *r, bool principal, const struct mesh_authz_str_match **out,
                     size_t *n)
{
    struct mesh_authz_str_match *v;

    *n = 1 + prng_below(r, 3);
    v = ta_alloc(a, *n * sizeof(*v));
    for (size_t i = 0; i < *n; i++) {
        const char *s = gen_string(a, r, principal);
        size_t len = strlen(s), cut = prng_below(r, (uint32_t)len + 1);

        v[i].kind = (enum mesh_authz_str_kind)(1 + prng_below(r, 4));
        if (v[i].kind == MESH_AUTHZ_STR_EXACT)
            v[i].value = prng_chance(r, 10) ? "spiffe://cluster.local/ns/a/sa/x" : s;
        else if (v[i].kind == MESH_AUTHZ_STR_PREFIX)
            v[i].value = ta_strndup(a, s, cut);
        else if (v[i].kind == MESH_AUTHZ_STR_SUFFIX)
            v[i].value = s + cut;
        else
            v[i].value = NULL;
    }
    *out = v;
}

static void gen_cidrs(struct tarena *a, struct prng *r, const struct mesh_authz_cidr **out, size_t *n)
{
    struct mesh_authz_cidr *v;

    *n = 1 + prng_below(r, 3);
    v = ta_alloc(a, *n * sizeof(*v));
    for (size_t i = 0; i < *n; i++) {
        if (prng_chance(r, 60)) {
            parse_ip(gen_v4[prng_below(r, N_OF(gen_v4))], &v[i].family, v[i].addr);
            v[i].len = gen_v4_len[prng_below(r, N_OF(gen_v4_len))];
        } else {
            parse_ip(gen_v6[prng_below(r, N_OF(gen_v6))], &v[i].family, v[i].addr);
            v[i].len = gen_v6_len[prng_below(r, N_OF(gen_v6_len))];
        }
        if (prng_chance(r, 20))
            v[i].addr[prng_below(r, v[i].family == MESH_ADDR_V4 ? 4 : 16)] ^= (uint8_t)(1u << prng_below(r, 8));
    }
    *out = v;
}

static void gen_ports_list(struct tarena *a, struct prng *r, const uint16_t **out, size_t *n)
{
    uint16_t *v;

    *n = 1 + prng_below(r, 3);
    v = ta_alloc(a, *n * sizeof(*v));
    for (size_t i = 0; i < *n; i++)
        v[i] = gen_ports[prng_below(r, N_OF(gen_ports))];
    *out = v;
}

static void gen_sa_list(struct tarena *a, struct prng *r, const struct mesh_authz_sa_match **out, size_t *n)
{
    struct mesh_authz_sa_match *v;

    *n = 1 + prng_below(r, 2);
    v = ta_alloc(a, *n * sizeof(*v));
    for (size_t i = 0; i < *n; i++)
        v[i] = (struct mesh_authz_sa_match){gen_nss[prng_below(r, N_OF(gen_nss))],
                                            gen_sas[prng_below(r, N_OF(gen_sas))]};
    *out = v;
}

static void gen_match(struct tarena *a, struct prng *r, struct mesh_authz_match *m)
{
    const unsigned p = 22;

    memset(m, 0, sizeof(*m));
    if (prng_chance(r, 10))
        return; /* empty match */
    if (prng_chance(r, p)) gen_strs(a, r, false, &m->namespaces, &m->n_namespaces);
    if (prng_chance(r, p)) gen_strs(a, r, false, &m->not_namespaces, &m->n_not_namespaces);
    if (prng_chance(r, p)) gen_strs(a, r, true, &m->principals, &m->n_principals);
    if (prng_chance(r, p)) gen_strs(a, r, true, &m->not_principals, &m->n_not_principals);
    if (prng_chance(r, p)) gen_cidrs(a, r, &m->source_ips, &m->n_source_ips);
    if (prng_chance(r, p)) gen_cidrs(a, r, &m->not_source_ips, &m->n_not_source_ips);
    if (prng_chance(r, p)) gen_cidrs(a, r, &m->destination_ips, &m->n_destination_ips);
    if (prng_chance(r, p)) gen_cidrs(a, r, &m->not_destination_ips, &m->n_not_destination_ips);
    if (prng_chance(r, p)) gen_ports_list(a, r, &m->destination_ports, &m->n_destination_ports);
    if (prng_chance(r, p)) gen_ports_list(a, r, &m->not_destination_ports, &m->n_not_destination_ports);
    if (prng_chance(r, p)) gen_sa_list(a, r, &m->service_accounts, &m->n_service_accounts);
    if (prng_chance(r, p)) gen_sa_list(a, r, &m->not_service_accounts, &m->n_not_service_accounts);
}

static void gen_policy(struct tarena *a, struct prng *r, unsigned index, struct mesh_authz_policy *p)
{
    char name[16];
    struct mesh_authz_rule *rules;

    snprintf(name, sizeof(name), "p%u", index);
    memset(p, 0, sizeof(*p));
    p->name = ta_strndup(a, name, strlen(name));
    p->namespace = gen_nss[prng_below(r, N_OF(gen_nss))];
    p->scope = (enum mesh_authz_scope)prng_below(r, 3);
    p->action = (enum mesh_authz_action)prng_below(r, 2);
    p->dry_run = prng_chance(r, 20);
    p->n_rules = prng_below(r, 4);
    rules = ta_alloc(a, p->n_rules * sizeof(*rules));
    for (size_t i = 0; i < p->n_rules; i++) {
        struct mesh_authz_clause *cl;

        rules[i].n_clauses = prng_below(r, 4);
        cl = ta_alloc(a, rules[i].n_clauses * sizeof(*cl));
        for (size_t j = 0; j < rules[i].n_clauses; j++) {
            struct mesh_authz_match *m;

            cl[j].n_matches = prng_below(r, 4);
            m = ta_alloc(a, cl[j].n_matches * sizeof(*m));
            for (size_t k = 0; k < cl[j].n_matches; k++)
                gen_match(a, r, &m[k]);
            cl[j].matches = m;
        }
        rules[i].clauses = cl;
    }
    p->rules = rules;
}

static void gen_conn(struct tarena *a, struct prng *r, const struct mesh_authz_policy *pol, size_t n,
                     struct mesh_authz_conn *c)
{
    const char **keys;

    memset(c, 0, sizeof(*c));
    if (prng_chance(r, 75)) {
        struct mesh_spiffe_id *id = ta_alloc(a, sizeof(*id));

        assert_int_equal(mesh_spiffe_from_parts(gen_tds[prng_below(r, N_OF(gen_tds))],
                                                gen_nss[prng_below(r, N_OF(gen_nss))],
                                                gen_sas[prng_below(r, N_OF(gen_sas))], id),
                         0);
        c->peer = id;
    }
    set_addr(&c->src, gen_conn_ips[prng_below(r, N_OF(gen_conn_ips))]);
    set_addr(&c->dst, gen_conn_ips[prng_below(r, N_OF(gen_conn_ips))]);
    set_port(&c->dst, gen_ports[prng_below(r, N_OF(gen_ports))]);
    c->dst_namespace = prng_chance(r, 5) ? NULL : gen_nss[prng_below(r, N_OF(gen_nss))];
    c->n_policy_keys = prng_below(r, 4);
    keys = ta_alloc(a, c->n_policy_keys * sizeof(*keys));
    for (size_t i = 0; i < c->n_policy_keys; i++) {
        if (n > 0 && prng_chance(r, 85)) {
            const struct mesh_authz_policy *p = &pol[prng_below(r, (uint32_t)n)];
            char buf[64];

            snprintf(buf, sizeof(buf), "%s/%s", p->namespace, p->name);
            keys[i] = ta_strndup(a, buf, strlen(buf));
        } else {
            keys[i] = "nowhere/none";
        }
    }
    c->policy_keys = keys;
}

static void test_authz_property_compiled_equals_reference(void **state)
{
    struct fake_env fe;
    struct prng r = {PROP_SEED};
    unsigned long reasons[MESH_AUTHZ_REASON_COUNT] = {0}, dry = 0, pairs = 0;

    (void)state;
    fake_env_init(&fe, 0, 1);
    for (unsigned s = 0; s < PROP_SETS; s++) {
        struct tarena a = {NULL};
        struct mesh_authz_policy pol[8];
        size_t n = prng_below(&r, 7);
        struct mesh_authz_set *set;
        int err;

        for (size_t i = 0; i < n; i++)
            gen_policy(&a, &r, (unsigned)i, &pol[i]);
        set = mesh_authz_set_new(&fe.env, pol, n, &err);
        if (set == NULL)
            fail_msg("set %u: mesh_authz_set_new failed with %d", s, err);
        for (unsigned k = 0; k < PROP_CONNS_PER_SET; k++) {
            struct mesh_authz_conn conn;
            struct mesh_authz_result got, ref;

            gen_conn(&a, &r, pol, n, &conn);
            mesh_authz_eval(set, &conn, &got);
            mesh_authz_eval_reference(pol, n, &conn, &ref);
            if (!same_result(&got, &ref)) {
                struct mesh_authz_trace t;
                char text[8192];

                assert_int_equal(mesh_authz_explain(set, &conn, &fe.env, &t), 0);
                mesh_authz_trace_format(set, &t, text, sizeof(text));
                print_message("seed %#x set %u conn %u disagrees; compiled trace:\n%s", PROP_SEED, s, k, text);
                mesh_authz_trace_fini(&t);
                assert_same_result(&got, &ref);
            }
            if ((pairs % 97) == 0) {
                struct mesh_authz_trace t;

                assert_int_equal(mesh_authz_explain(set, &conn, &fe.env, &t), 0);
                assert_same_result(&t.result, &got);
                mesh_authz_trace_fini(&t);
            }
            reasons[got.reason]++;
            dry += got.dry_run_denied;
            pairs++;
        }
        mesh_authz_set_free(set);
        ta_free(&a);
    }
    print_message("%lu pairs (seed %#x): no-allow %lu, allow-match %lu, deny-match %lu, not-allowed %lu, dry-run "
                  "denied %lu\n",
                  pairs, PROP_SEED, reasons[0], reasons[1], reasons[2], reasons[3], dry);
    assert_int_equal(pairs, 100000);
    /* The generator must exercise every outcome, each in at least 2% of the pairs. */
    for (int i = 0; i < MESH_AUTHZ_REASON_COUNT; i++)
        assert_true(reasons[i] > pairs / 50);
    assert_true(dry > pairs / 50);
    assert_int_equal(fe.alloc.live, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authz_case_table),
        cmocka_unit_test(test_authz_set_accessors),
        cmocka_unit_test(test_authz_set_rejects_bad_models),
        cmocka_unit_test(test_authz_explain_trace),
        cmocka_unit_test(test_authz_alloc_failure_sweep),
        cmocka_unit_test(test_authz_property_compiled_equals_reference),
    };
    return cmocka_run_group_tests_name("mesh_authz", tests, NULL, NULL);
}
