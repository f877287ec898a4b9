/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Config sections "mesh", "workloads" and "services" (see config_mesh.h). Every problem is reported with its line;
 * parsing goes on after an error. Once the file is otherwise valid, the descriptions are built into a workload
 * snapshot once, so that what the data path would refuse (an address claimed twice, ...) is refused here too.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "appliance/config_mesh.h"
#include "appliance/config_parse.h"
#include "mesh/env.h"

#define MESH_CFG_MAX_ADDRESSES 16
#define MESH_CFG_MAX_LIST 256

/* ---- owned storage: every allocation is on one list, freed together ---- */

struct app_mesh_alloc {
    struct app_mesh_alloc *next;
    max_align_t data[];
};

static void *mesh_cfg_alloc(struct app_cfg_ctx *ctx, size_t n)
{
    struct app_mesh_config *m = ctx->cfg->mesh;
    struct app_mesh_alloc *a = calloc(1, sizeof(*a) + (n ? n : 1));

    if (a == NULL) {
        ctx->oom = true;
        return NULL;
    }
    a->next = m->allocs;
    m->allocs = a;
    return a->data;
}

static char *mesh_cfg_strdup(struct app_cfg_ctx *ctx, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = mesh_cfg_alloc(ctx, n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

/* ---- typed readers ---- */

static const char *mesh_cfg_str(struct app_cfg_ctx *ctx, const config_setting_t *g, const char *where, const char *key,
                                bool required, const char *dflt)
{
    const char *s = app_cfg_read_str(ctx, g, where, key, required, NULL);
    s = s != NULL ? mesh_cfg_strdup(ctx, s) : (dflt != NULL ? mesh_cfg_strdup(ctx, dflt) : NULL);
    return s != NULL ? s : "";
}

/* A list or array of strings; returns the count, fills *out (owned). */
static size_t mesh_cfg_strings(struct app_cfg_ctx *ctx, const config_setting_t *g, const char *where, const char *key,
                               const char *const **out)
{
    const config_setting_t *l = app_cfg_member(ctx, g, where, key, false);
    char path[160];
    const char **v;
    int n;

    *out = NULL;
    if (l == NULL)
        return 0;
    app_cfg_path(path, sizeof(path), where, key);
    if (config_setting_type(l) != CONFIG_TYPE_ARRAY && config_setting_type(l) != CONFIG_TYPE_LIST) {
        app_cfg_error(ctx, l, "%s: expected a list of strings", path);
        return 0;
    }
    n = config_setting_length(l);
    if (n > MESH_CFG_MAX_LIST) {
        app_cfg_error(ctx, l, "%s: %d entries, at most %d", path, n, MESH_CFG_MAX_LIST);
        return 0;
    }
    v = mesh_cfg_alloc(ctx, sizeof(*v) * (size_t)(n ? n : 1));
    if (v == NULL)
        return 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(l, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            app_cfg_error(ctx, e, "%s[%d]: expected a string", path, i);
            return 0;
        }
        v[i] = mesh_cfg_strdup(ctx, config_setting_get_string(e));
    }
    *out = v;
    return (size_t)n;
}

static size_t mesh_cfg_addresses(struct app_cfg_ctx *ctx, const config_setting_t *g, const char *where,
                                 const struct mesh_addr **out, bool *bad)
{
    const char *const *strs;
    size_t n = mesh_cfg_strings(ctx, g, where, "addresses", &strs);
    const config_setting_t *l = config_setting_get_member(g, "addresses");
    struct mesh_addr *a;

    *out = NULL;
    if (n == 0)
        return 0; /* an empty list, or an error already reported */
    if (n > MESH_CFG_MAX_ADDRESSES) {
        app_cfg_error(ctx, l, "%s.addresses: %zu addresses, at most %d", where, n, MESH_CFG_MAX_ADDRESSES);
        *bad = true;
        return 0;
    }
    a = mesh_cfg_alloc(ctx, sizeof(*a) * n);
    if (a == NULL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (mesh_addr_parse_ip(strs[i], &a[i]) < 0) {
            app_cfg_error(ctx, config_setting_get_elem(l, (unsigned)i), "%s.addresses[%zu]: \"%s\" is not an IP address",
                          where, i, strs[i]);
            *bad = true;
        }
    }
    *out = a;
    return n;
}

/* ports = ( { port = 80; target_port = 8080; } ) */
static size_t mesh_cfg_ports(struct app_cfg_ctx *ctx, const config_setting_t *g, const char *where,
                             const struct mesh_port **out)
{
    static const char *const known[] = {"port", "target_port", NULL};
    const config_setting_t *l = app_cfg_member(ctx, g, where, "ports", false);
    struct mesh_port *p;
    char path[160];
    int n;

    *out = NULL;
    if (l == NULL)
        return 0;
    app_cfg_path(path, sizeof(path), where, "ports");
    if (config_setting_type(l) != CONFIG_TYPE_LIST) {
        app_cfg_error(ctx, l, "%s: expected a list of { port; target_port; }", path);
        return 0;
    }
    n = config_setting_length(l);
    p = mesh_cfg_alloc(ctx, sizeof(*p) * (size_t)(n ? n : 1));
    if (p == NULL)
        return 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(l, (unsigned)i);
        char ewhere[176];
        uint32_t port = 0, target = 0;
        snprintf(ewhere, sizeof(ewhere), "%s[%d]", path, i);
        if (!app_cfg_check_type(ctx, e, ewhere, CONFIG_TYPE_GROUP))
            continue;
        app_cfg_check_unknown(ctx, e, ewhere, known);
        if (app_cfg_member(ctx, e, ewhere, "port", true) != NULL)
            app_cfg_read_u32(ctx, e, ewhere, "port", 1, 65535, &port);
        app_cfg_read_u32(ctx, e, ewhere, "target_port", 0, 65535, &target);
        p[i] = (struct mesh_port){.service_port = (uint16_t)port, .target_port = (uint16_t)target};
    }
    *out = p;
    return (size_t)n;
}

/* ---- sections ---- */

static void mesh_parse_group(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    static const char *const known[] = {"trust_domain", "mtls_mode", "hbone_port", "certificates", NULL};
    static const char *const cert_known[] = {"source", "ca_cert", "ca_key", "lifetime_s", NULL};
    struct app_mesh_config *m = ctx->cfg->mesh;
    const config_setting_t *g = app_cfg_read_group(ctx, root, "", "mesh", false), *set, *c;
    const char *s;
    uint32_t port = m->hbone_port;

    if (g == NULL)
        return;
    m->present = true;
    app_cfg_check_unknown(ctx, g, "mesh", known);
    s = app_cfg_read_str(ctx, g, "mesh", "trust_domain", false, &set);
    if (s != NULL) {
        if (!app_cfg_check_charset(s, 255, ".-_"))
            app_cfg_error(ctx, set, "mesh.trust_domain: \"%s\" is not a trust domain ([a-z0-9.-_]{1,255})", s);
        else
            app_cfg_set_str(ctx, &m->trust_domain, s);
    }
    s = app_cfg_read_str(ctx, g, "mesh", "mtls_mode", false, &set);
    if (s != NULL) {
        if (strcmp(s, "STRICT") == 0)
            m->mtls_mode = APP_MTLS_STRICT;
        else if (strcmp(s, "PERMISSIVE") == 0)
            m->mtls_mode = APP_MTLS_PERMISSIVE;
        else
            app_cfg_error(ctx, set, "mesh.mtls_mode: \"%s\" is not one of STRICT, PERMISSIVE", s);
    }
    app_cfg_read_u32(ctx, g, "mesh", "hbone_port", 1, 65535, &port);
    m->hbone_port = (uint16_t)port;
    c = app_cfg_read_group(ctx, g, "mesh", "certificates", false);
    if (c == NULL)
        return;
    app_cfg_check_unknown(ctx, c, "mesh.certificates", cert_known);
    s = app_cfg_read_str(ctx, c, "mesh.certificates", "source", false, &set);
    if (s != NULL) {
        m->cert_source_set = true;
        if (strcmp(s, "local_ca") == 0)
            m->cert_source = APP_CERTS_LOCAL_CA;
        else if (strcmp(s, "xds") == 0)
            m->cert_source = APP_CERTS_XDS;
        else
            app_cfg_error(ctx, set, "mesh.certificates.source: \"%s\" is not one of local_ca, xds", s);
    }
    s = app_cfg_read_str(ctx, c, "mesh.certificates", "ca_cert", false, NULL);
    if (s != NULL)
        app_cfg_set_str(ctx, &m->ca_cert_path, s);
    s = app_cfg_read_str(ctx, c, "mesh.certificates", "ca_key", false, &set);
    if (s != NULL)
        app_cfg_set_str(ctx, &m->ca_key_path, s);
    if ((m->ca_cert_path == NULL) != (m->ca_key_path == NULL))
        app_cfg_error(ctx, c, "mesh.certificates: ca_cert and ca_key go together");
    app_cfg_read_u32(ctx, c, "mesh.certificates", "lifetime_s", 60, 365u * 86400u, &m->cert_lifetime_s);
}

static enum mesh_tunnel_protocol mesh_parse_protocol(struct app_cfg_ctx *ctx, const config_setting_t *e,
                                                     const char *where)
{
    const config_setting_t *set;
    const char *s = app_cfg_read_str(ctx, e, where, "protocol", false, &set);

    if (s == NULL || strcmp(s, "HBONE") == 0)
        return MESH_TUNNEL_HBONE; /* ambient's default for enrolled workloads */
    if (strcmp(s, "NONE") == 0)
        return MESH_TUNNEL_NONE;
    app_cfg_error(ctx, set, "%s.protocol: \"%s\" is not one of HBONE, NONE", where, s);
    return MESH_TUNNEL_HBONE;
}

/* services = ( { service = "ns/hostname"; ports = (...); } ) inside a workload */
static size_t mesh_parse_workload_services(struct app_cfg_ctx *ctx, const config_setting_t *e, const char *where,
                                           const struct mesh_workload_service **out)
{
    static const char *const known[] = {"service", "ports", NULL};
    const config_setting_t *l = app_cfg_member(ctx, e, where, "services", false);
    struct mesh_workload_service *v;
    char path[160];
    int n;

    *out = NULL;
    if (l == NULL)
        return 0;
    app_cfg_path(path, sizeof(path), where, "services");
    if (config_setting_type(l) != CONFIG_TYPE_LIST) {
        app_cfg_error(ctx, l, "%s: expected a list of { service; ports; }", path);
        return 0;
    }
    n = config_setting_length(l);
    v = mesh_cfg_alloc(ctx, sizeof(*v) * (size_t)(n ? n : 1));
    if (v == NULL)
        return 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(l, (unsigned)i), *set;
        char ewhere[176];
        const char *key;
        snprintf(ewhere, sizeof(ewhere), "%s[%d]", path, i);
        if (!app_cfg_check_type(ctx, s, ewhere, CONFIG_TYPE_GROUP))
            continue;
        app_cfg_check_unknown(ctx, s, ewhere, known);
        key = app_cfg_read_str(ctx, s, ewhere, "service", true, &set);
        if (key != NULL && strchr(key, '/') == NULL)
            app_cfg_error(ctx, set, "%s.service: \"%s\" is not namespace/hostname", ewhere, key);
        v[i].key = mesh_cfg_strdup(ctx, key != NULL ? key : "");
        v[i].n_ports = mesh_cfg_ports(ctx, s, ewhere, &v[i].ports);
    }
    *out = v;
    return (size_t)n;
}

static void mesh_parse_workload(struct app_cfg_ctx *ctx, int i, const config_setting_t *e, struct mesh_workload *w)
{
    static const char *const known[] = {"uid",      "name",    "namespace", "service_account", "trust_domain",
                                        "addresses", "node",   "protocol",  "services",        "capacity",
                                        "status",   "network", "authorization_policies",      "canonical_name",
                                        "canonical_revision",   "workload_name",               "cluster_id", NULL};
    const config_setting_t *set;
    char where[32];
    const char *s;
    bool bad = false;
    uint32_t cap = 1;

    snprintf(where, sizeof(where), "workloads[%d]", i);
    if (!app_cfg_check_type(ctx, e, where, CONFIG_TYPE_GROUP))
        return;
    app_cfg_check_unknown(ctx, e, where, known);
    memset(w, 0, sizeof(*w));
    w->name = mesh_cfg_str(ctx, e, where, "name", true, NULL);
    w->namespace = mesh_cfg_str(ctx, e, where, "namespace", true, NULL);
    w->uid = mesh_cfg_str(ctx, e, where, "uid", false, NULL);
    if (w->uid[0] == '\0') { /* like Kubernetes: cluster/namespace/name */
        char *uid = mesh_cfg_alloc(ctx, strlen(w->namespace) + strlen(w->name) + 32);
        if (uid != NULL) {
            sprintf(uid, "Kubernetes//Pod/%s/%s", w->namespace, w->name);
            w->uid = uid;
        }
    }
    w->service_account = mesh_cfg_str(ctx, e, where, "service_account", false, "default");
    w->trust_domain = mesh_cfg_str(ctx, e, where, "trust_domain", false, ctx->cfg->mesh->trust_domain);
    w->network = mesh_cfg_str(ctx, e, where, "network", false, "");
    w->node = mesh_cfg_str(ctx, e, where, "node", false, "");
    w->canonical_name = mesh_cfg_str(ctx, e, where, "canonical_name", false, w->name);
    w->canonical_revision = mesh_cfg_str(ctx, e, where, "canonical_revision", false, "latest");
    w->workload_name = mesh_cfg_str(ctx, e, where, "workload_name", false, w->name);
    w->cluster_id = mesh_cfg_str(ctx, e, where, "cluster_id", false, "Kubernetes");
    if (app_cfg_member(ctx, e, where, "addresses", true) != NULL)
        w->n_addresses = mesh_cfg_addresses(ctx, e, where, &w->addresses, &bad);
    w->protocol = mesh_parse_protocol(ctx, e, where);
    w->n_authorization_policies =
        mesh_cfg_strings(ctx, e, where, "authorization_policies", &w->authorization_policies);
    w->n_services = mesh_parse_workload_services(ctx, e, where, &w->services);
    app_cfg_read_u32(ctx, e, where, "capacity", 1, 1000000, &cap);
    w->capacity = cap;
    s = app_cfg_read_str(ctx, e, where, "status", false, &set);
    if (s != NULL && strcmp(s, "healthy") != 0 && strcmp(s, "unhealthy") != 0)
        app_cfg_error(ctx, set, "%s.status: \"%s\" is not one of healthy, unhealthy", where, s);
    w->status = s != NULL && strcmp(s, "unhealthy") == 0 ? MESH_WORKLOAD_UNHEALTHY : MESH_WORKLOAD_HEALTHY;
}

static void mesh_parse_service(struct app_cfg_ctx *ctx, int i, const config_setting_t *e, struct mesh_service *s)
{
    static const char *const known[] = {"name", "namespace", "hostname", "addresses", "ports", "subject_alt_names",
                                        NULL};
    char where[32];
    bool bad = false;

    snprintf(where, sizeof(where), "services[%d]", i);
    if (!app_cfg_check_type(ctx, e, where, CONFIG_TYPE_GROUP))
        return;
    app_cfg_check_unknown(ctx, e, where, known);
    memset(s, 0, sizeof(*s));
    s->name = mesh_cfg_str(ctx, e, where, "name", true, NULL);
    s->namespace = mesh_cfg_str(ctx, e, where, "namespace", true, NULL);
    s->hostname = mesh_cfg_str(ctx, e, where, "hostname", false, NULL);
    if (s->hostname[0] == '\0') {
        char *h = mesh_cfg_alloc(ctx, strlen(s->name) + strlen(s->namespace) + 32);
        if (h != NULL) {
            sprintf(h, "%s.%s.svc.cluster.local", s->name, s->namespace);
            s->hostname = h;
        }
    }
    s->n_addresses = mesh_cfg_addresses(ctx, e, where, &s->addresses, &bad);
    s->n_ports = mesh_cfg_ports(ctx, e, where, &s->ports);
    s->n_subject_alt_names = mesh_cfg_strings(ctx, e, where, "subject_alt_names", &s->subject_alt_names);
}

static const config_setting_t *mesh_list(struct app_cfg_ctx *ctx, const config_setting_t *root, const char *key)
{
    const config_setting_t *l = app_cfg_member(ctx, root, "", key, false);
    if (l != NULL && config_setting_type(l) != CONFIG_TYPE_LIST) {
        app_cfg_error(ctx, l, "%s: expected a list of groups ( { ... }, ... )", key);
        return NULL;
    }
    return l;
}

/* Cross-checks with lines: unique uids, services named by workloads exist. */
static void mesh_check_refs(struct app_cfg_ctx *ctx, const config_setting_t *wl)
{
    struct app_mesh_config *m = ctx->cfg->mesh;

    for (size_t i = 0; i < m->n_workloads; i++) {
        const struct mesh_workload *w = &m->workloads[i];
        const config_setting_t *e = config_setting_get_elem(wl, (unsigned)i);
        for (size_t j = 0; j < i; j++) {
            if (w->uid != NULL && m->workloads[j].uid != NULL && strcmp(w->uid, m->workloads[j].uid) == 0)
                app_cfg_error(ctx, e, "workloads[%zu]: uid \"%s\" is also workloads[%zu]'s", i, w->uid, j);
        }
        for (size_t k = 0; k < w->n_services; k++) {
            bool found = false;
            for (size_t s = 0; s < m->n_services && !found; s++) {
                char key[MESH_WORKLOAD_SERVICE_KEY_MAX_BYTES];
                snprintf(key, sizeof(key), "%s/%s", m->services[s].namespace, m->services[s].hostname);
                found = strcmp(key, w->services[k].key) == 0;
            }
            if (!found && w->services[k].key[0] != '\0')
                app_cfg_error(ctx, e, "workloads[%zu].services[%zu]: no service \"%s\" (namespace/hostname)", i, k,
                              w->services[k].key);
        }
    }
}

static void *mesh_env_alloc_fn(void *u, size_t n)
{
    (void)u;
    return malloc(n);
}

static void *mesh_env_realloc_fn(void *u, void *p, size_t n)
{
    (void)u;
    return realloc(p, n);
}

static void mesh_env_free_fn(void *u, void *p)
{
    (void)u;
    free(p);
}

static void mesh_section_parse(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    struct app_mesh_config *m = calloc(1, sizeof(*m));
    const config_setting_t *wl, *sl;

    ctx->cfg->mesh = m;
    if (m == NULL) {
        ctx->oom = true;
        return;
    }
    m->trust_domain = app_cfg_strdup(ctx, "cluster.local");
    m->hbone_port = 15008;
    m->cert_lifetime_s = 86400;
    mesh_parse_group(ctx, root);
    if (m->trust_domain == NULL)
        return;

    wl = mesh_list(ctx, root, "workloads");
    sl = mesh_list(ctx, root, "services");
    if (wl != NULL) {
        int n = config_setting_length(wl);
        m->present = true;
        m->workloads = mesh_cfg_alloc(ctx, sizeof(*m->workloads) * (size_t)(n ? n : 1));
        if (m->workloads == NULL)
            return;
        for (int i = 0; i < n; i++)
            mesh_parse_workload(ctx, i, config_setting_get_elem(wl, (unsigned)i), &m->workloads[m->n_workloads++]);
    }
    if (sl != NULL) {
        int n = config_setting_length(sl);
        m->present = true;
        m->services = mesh_cfg_alloc(ctx, sizeof(*m->services) * (size_t)(n ? n : 1));
        if (m->services == NULL)
            return;
        for (int i = 0; i < n; i++)
            mesh_parse_service(ctx, i, config_setting_get_elem(sl, (unsigned)i), &m->services[m->n_services++]);
    }
    if (wl != NULL)
        mesh_check_refs(ctx, wl);
    if (ctx->n_msgs == 0 && !ctx->oom && (m->n_workloads > 0 || m->n_services > 0)) {
        /* the data path will build exactly this: what it refuses, refuse now */
        struct mesh_env env = {.alloc = mesh_env_alloc_fn, .realloc = mesh_env_realloc_fn, .free = mesh_env_free_fn};
        const char *err = NULL;
        struct mesh_workloads *ws = mesh_workloads_new(&env, m->workloads, m->n_workloads, m->services,
                                                       m->n_services, &err);
        if (ws == NULL)
            app_cfg_error(ctx, wl != NULL ? wl : sl, "workloads/services: %s", err ? err : "invalid");
        mesh_workloads_unref(ws);
    }
}

static void mesh_section_free(struct app_config *cfg)
{
    struct app_mesh_config *m = cfg->mesh;

    if (m == NULL)
        return;
    while (m->allocs != NULL) {
        struct app_mesh_alloc *next = m->allocs->next;
        free(m->allocs);
        m->allocs = next;
    }
    free(m->trust_domain);
    free(m->ca_cert_path);
    free(m->ca_key_path);
    free(m);
    cfg->mesh = NULL;
}

size_t app_mesh_local_addresses(const struct app_mesh_config *m, const char *node_name, uint32_t *out, size_t max)
{
    size_t n = 0;

    for (size_t i = 0; m != NULL && i < m->n_workloads; i++) {
        const struct mesh_workload *w = &m->workloads[i];
        if (w->node == NULL || strcmp(w->node, node_name) != 0)
            continue;
        for (size_t a = 0; a < w->n_addresses && n < max; a++) {
            uint32_t ip;
            if (w->addresses[a].family != MESH_ADDR_V4)
                continue;
            memcpy(&ip, w->addresses[a].ip.v4, 4);
            out[n++] = ntohl(ip);
        }
    }
    return n;
}

static const char *const mesh_section_keys[] = {"mesh", "workloads", "services", NULL};

const struct app_cfg_section app_cfg_section_mesh = {
    .keys = mesh_section_keys,
    .parse = mesh_section_parse,
    .free = mesh_section_free,
};
