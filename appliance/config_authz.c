/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Config section "policies": authorization policies, field for field istio.security.Authorization
 * (ztunnel-wire-facts.md §3.5), so the xDS source only adds a second way to fill the same model (mesh/authz.h).
 *
 *   policies = (
 *     { name = "deny-ns-b"; namespace = "default"; scope = "namespace"; action = "deny"; dry_run = false;
 *       rules = ( { clauses = ( { matches = ( {
 *           namespaces = [ "b" ];                          # string: exact match
 *           not_principals = ( { presence = true; } );     # or { exact | prefix | suffix = "..."; }
 *           destination_ports = [ 8080 ];                  # 0..65535
 *           source_ips = [ "10.0.0.0/8", "fd00::/8", "10.1.2.3" ];   # bare address = /32 or /128
 *           service_accounts = ( { namespace = "b"; service_account = "sa"; } );
 *       } ); } ); } );
 *     } );
 *
 *  - scope: "global" | "namespace" | "workload_selector"; action: "allow" | "deny" (ztunnel has no AUDIT/CUSTOM).
 *    name, namespace, scope and action are required; dry_run defaults to false; rules default to none (an ALLOW
 *    policy without rules denies everything, as in §4).
 *  - Match keys: namespaces, not_namespaces, principals, not_principals (string matches); source_ips,
 *    not_source_ips, destination_ips, not_destination_ips (addresses/prefixes); destination_ports,
 *    not_destination_ports (integers); service_accounts, not_service_accounts (groups). Lists may be written as
 *    arrays [..] or lists (..).
 *  - A plain string is an exact match. It may not contain '*': Istio's "*", "x*", "*x" shorthands are written
 *    { presence = true; }, { prefix = "x"; }, { suffix = "x"; } here, so nothing is guessed.
 *  - Principals are written without "spiffe://" (td/ns/NS/sa/SA), as istiod sends them; a value starting with
 *    "spiffe://" is refused because it could never match.
 *
 * Invariants: every problem is recorded with its FILE:LINE and parsing continues; a policy with any error is not
 * kept; all memory hangs off struct app_authz_config and is freed by the section's free function.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appliance/config_authz.h"
#include "appliance/config_parse.h"

#define AUTHZ_NAME_MAX 253
#define AUTHZ_NAMESPACE_MAX 63
#define AUTHZ_PATH_BYTES 192

struct app_authz_block {
    struct app_authz_block *next;
    alignas(max_align_t) unsigned char data[];
};

struct authz_parse {
    struct app_cfg_ctx *ctx;
    struct app_authz_config *az;
    bool bad; /* the current policy has an error */
};

/* Zeroed memory owned by the section; NULL (and ctx->oom) when out of memory. */
static void *authz_cfg_alloc(struct authz_parse *p, size_t n)
{
    struct app_authz_block *b = calloc(1, sizeof(*b) + (n ? n : 1));

    if (b == NULL) {
        p->ctx->oom = true;
        p->bad = true;
        return NULL;
    }
    b->next = p->az->blocks;
    p->az->blocks = b;
    return b->data;
}

static const char *authz_cfg_strdup(struct authz_parse *p, const char *s)
{
    size_t n = strlen(s);
    char *d = authz_cfg_alloc(p, n + 1);

    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

__attribute__((format(printf, 3, 4))) static void authz_cfg_error(struct authz_parse *p, const config_setting_t *s,
                                                                  const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    app_cfg_error(p->ctx, s, "%s", msg);
    p->bad = true;
}

/* A list or an array (both are accepted for every list key); records an error otherwise. */
static bool authz_cfg_is_list(struct authz_parse *p, const config_setting_t *s, const char *path)
{
    int t = config_setting_type(s);
    char got[160];

    if (t == CONFIG_TYPE_LIST || t == CONFIG_TYPE_ARRAY)
        return true;
    authz_cfg_error(p, s, "%s: expected a list, got %s", path, app_cfg_describe(s, got, sizeof(got)));
    return false;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Values
 * ------------------------------------------------------------------------------------------------------------ */

static void authz_cfg_str_match(struct authz_parse *p, const config_setting_t *e, const char *path, bool principal,
                                struct mesh_authz_str_match *out)
{
    static const char *const known[] = {"exact", "prefix", "suffix", "presence", NULL};
    const char *v = NULL;
    int forms = 0;
    char got[160];

    if (config_setting_type(e) == CONFIG_TYPE_STRING) {
        v = config_setting_get_string(e);
        if (strchr(v, '*') != NULL) {
            authz_cfg_error(p, e,
                            "%s: \"%s\" contains '*'; write { presence = true; }, { prefix = \"...\"; } or "
                            "{ suffix = \"...\"; } (or { exact = \"...\"; } for a literal '*')",
                            path, v);
            return;
        }
        out->kind = MESH_AUTHZ_STR_EXACT;
    } else if (config_setting_type(e) == CONFIG_TYPE_GROUP) {
        app_cfg_check_unknown(p->ctx, e, path, known);
        for (int i = 0; known[i] != NULL; i++) {
            const config_setting_t *m = config_setting_get_member(e, known[i]);
            char sub[AUTHZ_PATH_BYTES];

            if (m == NULL)
                continue;
            forms++;
            app_cfg_path(sub, sizeof(sub), path, known[i]);
            if (i == 3) {
                if (!app_cfg_check_type(p->ctx, m, sub, CONFIG_TYPE_BOOL)) {
                    p->bad = true;
                } else if (!config_setting_get_bool(m)) {
                    authz_cfg_error(p, m, "%s: only presence = true is meaningful", sub);
                }
                out->kind = MESH_AUTHZ_STR_PRESENCE;
            } else if (!app_cfg_check_type(p->ctx, m, sub, CONFIG_TYPE_STRING)) {
                p->bad = true;
            } else {
                v = config_setting_get_string(m);
                out->kind = (enum mesh_authz_str_kind)(MESH_AUTHZ_STR_EXACT + i);
            }
        }
        if (forms != 1) {
            authz_cfg_error(p, e, "%s: needs exactly one of exact, prefix, suffix, presence (got %d)", path, forms);
            return;
        }
    } else {
        authz_cfg_error(p, e, "%s: expected a string or a group, got %s", path, app_cfg_describe(e, got, sizeof(got)));
        return;
    }
    if (v != NULL && principal && strncmp(v, MESH_SPIFFE_PREFIX, strlen(MESH_SPIFFE_PREFIX)) == 0) {
        authz_cfg_error(p, e, "%s: \"%s\": principals are written without \"spiffe://\" (td/ns/NS/sa/SA)", path, v);
        return;
    }
    if (v != NULL)
        out->value = authz_cfg_strdup(p, v);
}

/* "a.b.c.d", "a.b.c.d/len", IPv6, "IPv6/len"; host bits must be clear. 0, or -EINVAL with *why set. */
static int authz_cfg_parse_cidr(const char *text, struct mesh_authz_cidr *out, const char **why)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(text, '/');
    size_t alen = slash != NULL ? (size_t)(slash - text) : strlen(text);
    unsigned max, len;

    *why = "is not an IP address or prefix";
    if (alen == 0 || alen >= sizeof(addr))
        return -EINVAL;
    memcpy(addr, text, alen);
    addr[alen] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, addr, out->addr) == 1) {
        out->family = MESH_ADDR_V4;
        max = 32;
    } else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
        out->family = MESH_ADDR_V6;
        max = 128;
    } else {
        return -EINVAL;
    }
    len = max;
    if (slash != NULL) {
        const char *d = slash + 1;

        len = 0;
        if (*d == '\0' || (d[0] == '0' && d[1] != '\0') || strlen(d) > 3)
            return -EINVAL;
        for (; *d != '\0'; d++) {
            if (*d < '0' || *d > '9')
                return -EINVAL;
            len = len * 10 + (unsigned)(*d - '0');
        }
        if (len > max) {
            *why = max == 32 ? "has a prefix length above 32" : "has a prefix length above 128";
            return -EINVAL;
        }
    }
    out->len = (uint8_t)len;
    for (unsigned bit = len; bit < max; bit++) {
        if (out->addr[bit / 8] & (0x80u >> (bit % 8))) {
            *why = "has host bits set beyond its prefix length";
            return -EINVAL;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Match, clause, rule, policy
 * ------------------------------------------------------------------------------------------------------------ */

enum authz_cfg_kind { AUTHZ_CFG_STR, AUTHZ_CFG_PRINCIPAL, AUTHZ_CFG_IP, AUTHZ_CFG_PORT, AUTHZ_CFG_SA };

/* Parse list key of the match group m into a freshly allocated array; *n receives its length. */
static const void *authz_cfg_list(struct authz_parse *p, const config_setting_t *m, const char *where, const char *key,
                                  enum authz_cfg_kind kind, size_t *n)
{
    static const size_t elem[] = {
        [AUTHZ_CFG_STR] = sizeof(struct mesh_authz_str_match),
        [AUTHZ_CFG_PRINCIPAL] = sizeof(struct mesh_authz_str_match),
        [AUTHZ_CFG_IP] = sizeof(struct mesh_authz_cidr),
        [AUTHZ_CFG_PORT] = sizeof(uint16_t),
        [AUTHZ_CFG_SA] = sizeof(struct mesh_authz_sa_match),
    };
    const config_setting_t *l = config_setting_get_member(m, key);
    char path[AUTHZ_PATH_BYTES], ep[AUTHZ_PATH_BYTES + 16];
    unsigned char *arr;
    int len;

    *n = 0;
    app_cfg_path(path, sizeof(path), where, key);
    if (l == NULL || !authz_cfg_is_list(p, l, path))
        return NULL;
    len = config_setting_length(l);
    arr = authz_cfg_alloc(p, (size_t)len * elem[kind]);
    if (arr == NULL)
        return NULL;
    for (int i = 0; i < len; i++) {
        const config_setting_t *e = config_setting_get_elem(l, (unsigned)i);
        void *slot = arr + (size_t)i * elem[kind];
        char got[160];

        snprintf(ep, sizeof(ep), "%s[%d]", path, i);
        switch (kind) {
        case AUTHZ_CFG_STR:
        case AUTHZ_CFG_PRINCIPAL:
            authz_cfg_str_match(p, e, ep, kind == AUTHZ_CFG_PRINCIPAL, slot);
            break;
        case AUTHZ_CFG_IP: {
            const char *why;

            if (!app_cfg_check_type(p->ctx, e, ep, CONFIG_TYPE_STRING))
                p->bad = true;
            else if (authz_cfg_parse_cidr(config_setting_get_string(e), slot, &why) != 0)
                authz_cfg_error(p, e, "%s: \"%s\" %s", ep, config_setting_get_string(e), why);
            break;
        }
        case AUTHZ_CFG_PORT: {
            long long v;

            if (!app_cfg_check_type(p->ctx, e, ep, CONFIG_TYPE_INT)) {
                p->bad = true;
                break;
            }
            v = config_setting_get_int64(e);
            if (v < 0 || v > 65535)
                authz_cfg_error(p, e, "%s: %lld is out of range (0..65535)", ep, v);
            else
                *(uint16_t *)slot = (uint16_t)v;
            break;
        }
        case AUTHZ_CFG_SA: {
            static const char *const known[] = {"namespace", "service_account", NULL};
            struct mesh_authz_sa_match *sa = slot;
            const char *ns, *name;

            if (config_setting_type(e) != CONFIG_TYPE_GROUP) {
                authz_cfg_error(p, e,
                                "%s: expected a group { namespace = \"...\"; service_account = \"...\"; }, "
                                "got %s",
                                ep, app_cfg_describe(e, got, sizeof(got)));
                break;
            }
            app_cfg_check_unknown(p->ctx, e, ep, known);
            ns = app_cfg_read_str(p->ctx, e, ep, "namespace", true, NULL);
            name = app_cfg_read_str(p->ctx, e, ep, "service_account", true, NULL);
            if (ns == NULL || name == NULL) {
                p->bad = true;
                break;
            }
            sa->namespace = authz_cfg_strdup(p, ns);
            sa->service_account = authz_cfg_strdup(p, name);
            break;
        }
        }
    }
    *n = (size_t)len;
    return arr;
}

static void authz_cfg_match(struct authz_parse *p, const config_setting_t *m, const char *where,
                            struct mesh_authz_match *out)
{
    static const char *const known[] = {"namespaces",
                                        "not_namespaces",
                                        "principals",
                                        "not_principals",
                                        "source_ips",
                                        "not_source_ips",
                                        "destination_ips",
                                        "not_destination_ips",
                                        "destination_ports",
                                        "not_destination_ports",
                                        "service_accounts",
                                        "not_service_accounts",
                                        NULL};

    if (!app_cfg_check_type(p->ctx, m, where, CONFIG_TYPE_GROUP)) {
        p->bad = true;
        return;
    }
    app_cfg_check_unknown(p->ctx, m, where, known);
    out->namespaces = authz_cfg_list(p, m, where, "namespaces", AUTHZ_CFG_STR, &out->n_namespaces);
    out->not_namespaces = authz_cfg_list(p, m, where, "not_namespaces", AUTHZ_CFG_STR, &out->n_not_namespaces);
    out->principals = authz_cfg_list(p, m, where, "principals", AUTHZ_CFG_PRINCIPAL, &out->n_principals);
    out->not_principals = authz_cfg_list(p, m, where, "not_principals", AUTHZ_CFG_PRINCIPAL, &out->n_not_principals);
    out->source_ips = authz_cfg_list(p, m, where, "source_ips", AUTHZ_CFG_IP, &out->n_source_ips);
    out->not_source_ips = authz_cfg_list(p, m, where, "not_source_ips", AUTHZ_CFG_IP, &out->n_not_source_ips);
    out->destination_ips = authz_cfg_list(p, m, where, "destination_ips", AUTHZ_CFG_IP, &out->n_destination_ips);
    out->not_destination_ips =
        authz_cfg_list(p, m, where, "not_destination_ips", AUTHZ_CFG_IP, &out->n_not_destination_ips);
    out->destination_ports =
        authz_cfg_list(p, m, where, "destination_ports", AUTHZ_CFG_PORT, &out->n_destination_ports);
    out->not_destination_ports =
        authz_cfg_list(p, m, where, "not_destination_ports", AUTHZ_CFG_PORT, &out->n_not_destination_ports);
    out->service_accounts = authz_cfg_list(p, m, where, "service_accounts", AUTHZ_CFG_SA, &out->n_service_accounts);
    out->not_service_accounts =
        authz_cfg_list(p, m, where, "not_service_accounts", AUTHZ_CFG_SA, &out->n_not_service_accounts);
}

/* A list key whose elements are groups with a single list member (rules -> clauses -> matches). Returns the
 * element array (elem bytes each) and its length, after calling each() on every element. */
static void *authz_cfg_groups(struct authz_parse *p, const config_setting_t *parent, const char *where, const char *key,
                              size_t elem, size_t *n,
                              void (*each)(struct authz_parse *, const config_setting_t *, const char *, void *))
{
    const config_setting_t *l = config_setting_get_member(parent, key);
    char path[AUTHZ_PATH_BYTES], ep[AUTHZ_PATH_BYTES + 16];
    unsigned char *arr;
    int len;

    *n = 0;
    app_cfg_path(path, sizeof(path), where, key);
    if (l == NULL || !authz_cfg_is_list(p, l, path))
        return NULL;
    len = config_setting_length(l);
    arr = authz_cfg_alloc(p, (size_t)len * elem);
    if (arr == NULL)
        return NULL;
    for (int i = 0; i < len; i++) {
        snprintf(ep, sizeof(ep), "%s[%d]", path, i);
        each(p, config_setting_get_elem(l, (unsigned)i), ep, arr + (size_t)i * elem);
    }
    *n = (size_t)len;
    return arr;
}

static void authz_cfg_match_cb(struct authz_parse *p, const config_setting_t *s, const char *where, void *out)
{
    authz_cfg_match(p, s, where, out);
}

static void authz_cfg_clause_cb(struct authz_parse *p, const config_setting_t *s, const char *where, void *out)
{
    static const char *const known[] = {"matches", NULL};
    struct mesh_authz_clause *c = out;

    if (!app_cfg_check_type(p->ctx, s, where, CONFIG_TYPE_GROUP)) {
        p->bad = true;
        return;
    }
    app_cfg_check_unknown(p->ctx, s, where, known);
    c->matches =
        authz_cfg_groups(p, s, where, "matches", sizeof(struct mesh_authz_match), &c->n_matches, authz_cfg_match_cb);
}

static void authz_cfg_rule_cb(struct authz_parse *p, const config_setting_t *s, const char *where, void *out)
{
    static const char *const known[] = {"clauses", NULL};
    struct mesh_authz_rule *r = out;

    if (!app_cfg_check_type(p->ctx, s, where, CONFIG_TYPE_GROUP)) {
        p->bad = true;
        return;
    }
    app_cfg_check_unknown(p->ctx, s, where, known);
    r->clauses =
        authz_cfg_groups(p, s, where, "clauses", sizeof(struct mesh_authz_clause), &r->n_clauses, authz_cfg_clause_cb);
}

static bool authz_cfg_check_name(const char *s, size_t max, const char *extra)
{
    return app_cfg_check_charset(s, max, extra) && s[0] != '-' && s[0] != '.';
}

/* Parse policies[i] into az->policies[az->n_policies]; keeps it only when it has no error. */
static void authz_cfg_policy(struct authz_parse *p, int i, const config_setting_t *e)
{
    static const char *const known[] = {"name", "namespace", "scope", "action", "dry_run", "rules", NULL};
    struct app_authz_config *az = p->az;
    struct mesh_authz_policy *pol = &az->policies[az->n_policies];
    const config_setting_t *s_name, *s_ns, *s_scope, *s_action;
    const char *name, *ns, *scope, *action;
    char where[32];
    int before = p->ctx->n_msgs;

    snprintf(where, sizeof(where), "policies[%d]", i);
    p->bad = false;
    memset(pol, 0, sizeof(*pol));
    if (!app_cfg_check_type(p->ctx, e, where, CONFIG_TYPE_GROUP))
        return;
    app_cfg_check_unknown(p->ctx, e, where, known);
    name = app_cfg_read_str(p->ctx, e, where, "name", true, &s_name);
    ns = app_cfg_read_str(p->ctx, e, where, "namespace", true, &s_ns);
    scope = app_cfg_read_str(p->ctx, e, where, "scope", true, &s_scope);
    action = app_cfg_read_str(p->ctx, e, where, "action", true, &s_action);
    app_cfg_read_bool(p->ctx, e, where, "dry_run", &pol->dry_run);
    if (name != NULL && !authz_cfg_check_name(name, AUTHZ_NAME_MAX, "._-"))
        authz_cfg_error(p, s_name,
                        "%s.name: \"%s\" is not a valid policy name ([a-z0-9._-], 1..%d characters, "
                        "starting with a letter or digit)",
                        where, name, AUTHZ_NAME_MAX);
    if (ns != NULL && !authz_cfg_check_name(ns, AUTHZ_NAMESPACE_MAX, "-"))
        authz_cfg_error(p, s_ns, "%s.namespace: \"%s\" is not a valid namespace ([a-z0-9-], 1..%d characters)", where,
                        ns, AUTHZ_NAMESPACE_MAX);
    if (scope != NULL) {
        if (strcmp(scope, "global") == 0)
            pol->scope = MESH_AUTHZ_SCOPE_GLOBAL;
        else if (strcmp(scope, "namespace") == 0)
            pol->scope = MESH_AUTHZ_SCOPE_NAMESPACE;
        else if (strcmp(scope, "workload_selector") == 0)
            pol->scope = MESH_AUTHZ_SCOPE_WORKLOAD_SELECTOR;
        else
            authz_cfg_error(p, s_scope, "%s.scope: \"%s\" is not one of global, namespace, workload_selector", where,
                            scope);
    }
    if (action != NULL) {
        if (strcmp(action, "allow") == 0)
            pol->action = MESH_AUTHZ_ACTION_ALLOW;
        else if (strcmp(action, "deny") == 0)
            pol->action = MESH_AUTHZ_ACTION_DENY;
        else
            authz_cfg_error(p, s_action,
                            "%s.action: \"%s\" is not one of allow, deny (ztunnel has no audit or "
                            "custom)",
                            where, action);
    }
    pol->rules =
        authz_cfg_groups(p, e, where, "rules", sizeof(struct mesh_authz_rule), &pol->n_rules, authz_cfg_rule_cb);
    if (p->ctx->n_msgs != before || p->bad || name == NULL || ns == NULL || scope == NULL || action == NULL)
        return;
    for (size_t k = 0; k < az->n_policies; k++) {
        if (strcmp(az->policies[k].name, name) == 0 && strcmp(az->policies[k].namespace, ns) == 0) {
            authz_cfg_error(p, s_name, "%s.name: \"%s/%s\" is already the policy at line %d", where, ns, name,
                            az->lines[k]);
            return;
        }
    }
    pol->name = authz_cfg_strdup(p, name);
    pol->namespace = authz_cfg_strdup(p, ns);
    if (pol->name == NULL || pol->namespace == NULL)
        return;
    az->lines[az->n_policies] = (int)config_setting_source_line(e);
    az->n_policies++;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Section
 * ------------------------------------------------------------------------------------------------------------ */

static void authz_section_parse(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    struct app_authz_config *az = calloc(1, sizeof(*az));
    struct authz_parse p = {.ctx = ctx, .az = az};
    const config_setting_t *l;
    int n;

    ctx->cfg->authz = az;
    if (az == NULL) {
        ctx->oom = true;
        return;
    }
    l = app_cfg_member(ctx, root, "", "policies", false);
    if (l == NULL || !authz_cfg_is_list(&p, l, "policies"))
        return;
    n = config_setting_length(l);
    if (n > APP_AUTHZ_MAX_POLICIES) {
        app_cfg_error(ctx, l, "policies: %d entries, at most %d", n, APP_AUTHZ_MAX_POLICIES);
        n = APP_AUTHZ_MAX_POLICIES;
    }
    az->policies = authz_cfg_alloc(&p, (size_t)n * sizeof(*az->policies));
    az->lines = authz_cfg_alloc(&p, (size_t)n * sizeof(*az->lines));
    if (az->policies == NULL || az->lines == NULL)
        return;
    for (int i = 0; i < n; i++)
        authz_cfg_policy(&p, i, config_setting_get_elem(l, (unsigned)i));
}

static void authz_section_free(struct app_config *cfg)
{
    struct app_authz_config *az = cfg->authz;

    if (az == NULL)
        return;
    while (az->blocks != NULL) {
        struct app_authz_block *b = az->blocks;

        az->blocks = b->next;
        free(b);
    }
    free(az);
    cfg->authz = NULL;
}

static const char *const authz_section_keys[] = {"policies", NULL};

const struct app_cfg_section app_cfg_section_authz = {
    .keys = authz_section_keys,
    .parse = authz_section_parse,
    .free = authz_section_free,
};
