/* SPDX-License-Identifier: Apache-2.0 */
/* Config sections "xds" and "local_ca" (see config_xds.h for the syntax and the invariants). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "appliance/config_authz.h"
#include "appliance/config_mesh.h"
#include "appliance/config_parse.h"
#include "appliance/config_xds.h"

/* The parsed pair of one loaded config, hung on struct app_config. */
struct app_xds_section {
    struct app_xds_config *xds; /* NULL: no xds group */
    struct app_local_ca_config local_ca;
    bool local_ca_given; /* the file has a local_ca group */
};

static struct app_xds_section *xds_cfg_find(const struct app_config *cfg)
{
    return cfg->xds_section;
}

const struct app_xds_config *app_cfg_xds(const struct app_config *cfg)
{
    struct app_xds_section *s = xds_cfg_find(cfg);
    return s != NULL ? s->xds : NULL;
}

bool app_cfg_certs_from_istiod(const struct app_config *cfg)
{
    const struct app_mesh_config *m = cfg->mesh;

    if (m == NULL || !m->present)
        return false;
    if (m->cert_source_set)
        return m->cert_source == APP_CERTS_XDS;
    return app_cfg_xds(cfg) != NULL && m->ca_cert_path == NULL;
}

const char *app_cfg_xds_node_unsupported(const struct app_config *cfg, bool node_runs_xds)
{
    const struct app_xds_section *s = xds_cfg_find(cfg);

    if (s != NULL && s->xds != NULL) {
        if (!node_runs_xds)
            return "xds: this node cannot follow istiod (passthrough mode, or built without the mesh proxy); give "
                   "workloads, services and policies in the file";
        if (cfg->mesh == NULL || !cfg->mesh->present)
            return "xds: needs a mesh group (trust domain, mTLS mode, and where the workload certificates come from)";
        if (cfg->mesh->n_workloads > 0 || cfg->mesh->n_services > 0 || cfg->authz->n_policies > 0)
            return "xds: workloads, services and policies come from istiod; remove them from the file";
    }
    if (cfg->mesh != NULL && cfg->mesh->cert_source_set && cfg->mesh->cert_source == APP_CERTS_XDS &&
        (s == NULL || s->xds == NULL))
        return "mesh.certificates.source: \"xds\" needs an xds group (the Istio CA is reached through it)";
    if (s != NULL && s->local_ca_given)
        return "local_ca: not used by a node; give the CA as mesh.certificates.ca_cert and ca_key";
    return NULL;
}

const struct app_local_ca_config *app_cfg_local_ca(const struct app_config *cfg)
{
    struct app_xds_section *s = xds_cfg_find(cfg);
    return s != NULL ? &s->local_ca : NULL;
}

static bool xds_is_hostname(const char *h)
{
    size_t n = strlen(h);

    if (n == 0 || n > 253 || h[0] == '.' || h[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-'))
            return false;
    }
    return true;
}

int app_xds_split_address(const char *text, char **host, uint16_t *port)
{
    const char *p = text, *colon, *hs, *he;
    char *end, *h;
    unsigned char buf[16];
    long v;

    if (strncmp(p, "https://", 8) == 0)
        p += 8;
    if (*p == '[') {
        hs = p + 1;
        he = strchr(hs, ']');
        if (he == NULL || he[1] != ':')
            return -EINVAL;
        colon = he + 1;
    } else {
        colon = strrchr(p, ':');
        if (colon == NULL)
            return -EINVAL;
        hs = p;
        he = colon;
        if (memchr(hs, ':', (size_t)(he - hs)) != NULL)
            return -EINVAL; /* a bare IPv6 literal needs brackets */
    }
    if (colon[1] == '\0' || colon[1] == '0' || colon[1] == '+' || colon[1] == '-')
        return -EINVAL;
    errno = 0;
    v = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > 65535 || he == hs)
        return -EINVAL;
    h = strndup(hs, (size_t)(he - hs));
    if (h == NULL)
        return -ENOMEM;
    if (*p == '[' ? inet_pton(AF_INET6, h, buf) != 1 : !xds_is_hostname(h)) {
        free(h);
        return -EINVAL;
    }
    *host = h;
    *port = (uint16_t)v;
    return 0;
}

/* Copy an optional string member into *dst (owned); keeps the default when absent. */
static const char *xds_read_str(struct app_cfg_ctx *ctx, const config_setting_t *g, const char *where,
                                const char *key, char **dst, const config_setting_t **set)
{
    const char *v = app_cfg_read_str(ctx, g, where, key, false, set);

    if (v != NULL)
        app_cfg_set_str(ctx, dst, v);
    return v;
}

static bool xds_check_part(const char *s)
{
    return strchr(s, '~') == NULL;
}

/* "ztunnel~IP~POD.NS~NS.svc.cluster.local" -> parts. Returns false when the form is wrong. */
static bool xds_parse_node_id(struct app_cfg_ctx *ctx, const char *id, struct app_xds_config *x)
{
    char *copy = strdup(id), *f[4], *save = NULL, *dot, *t;
    int n = 0;
    bool ok = false;
    size_t nsl;

    if (copy == NULL) {
        ctx->oom = true;
        return false;
    }
    for (t = strtok_r(copy, "~", &save); t != NULL && n < 4; t = strtok_r(NULL, "~", &save))
        f[n++] = t;
    if (n != 4 || t != NULL || strcmp(f[0], "ztunnel") != 0)
        goto out;
    dot = strchr(f[2], '.');
    if (dot == NULL || dot == f[2])
        goto out;
    *dot = '\0';
    nsl = strlen(dot + 1);
    if (nsl == 0 || strncmp(f[3], dot + 1, nsl) != 0 || f[3][nsl] != '.')
        goto out;
    app_cfg_set_str(ctx, &x->instance_ip, f[1]);
    app_cfg_set_str(ctx, &x->pod_name, f[2]);
    app_cfg_set_str(ctx, &x->pod_namespace, dot + 1);
    ok = true;
out:
    free(copy);
    return ok;
}

static void xds_parse_xds(struct app_cfg_ctx *ctx, const config_setting_t *root, struct app_xds_section *slot)
{
    static const char *const known[] = {"address",  "root_cert",   "token_file",      "cluster_id",   "node_id",
                                        "instance_ip", "pod_name", "pod_namespace",   "node_name",    "ca_address",
                                        "trust_domain", "server_name", "alt_server_name", "cert_ttl_s", "on_demand",
                                        NULL};
    const config_setting_t *g = app_cfg_read_group(ctx, root, "", "xds", false), *set, *id_set;
    struct app_xds_config *x;
    const char *v, *node_id;
    char *host = NULL;
    uint16_t port = 0;

    if (g == NULL)
        return;
    x = calloc(1, sizeof(*x));
    if (x == NULL) {
        ctx->oom = true;
        return;
    }
    slot->xds = x;
    x->line = (int)config_setting_source_line(g);
    app_cfg_check_unknown(ctx, g, "xds", known);
    x->root_cert = app_cfg_strdup(ctx, APP_XDS_DEFAULT_ROOT_CERT);
    x->token_file = app_cfg_strdup(ctx, APP_XDS_DEFAULT_TOKEN_FILE);
    x->cluster_id = app_cfg_strdup(ctx, APP_XDS_DEFAULT_CLUSTER_ID);
    x->trust_domain = app_cfg_strdup(ctx, APP_XDS_DEFAULT_TRUST_DOMAIN);
    x->alt_server_name = app_cfg_strdup(ctx, "");
    x->instance_ip = app_cfg_strdup(ctx, "");
    x->pod_name = app_cfg_strdup(ctx, ctx->cfg->node_name != NULL ? ctx->cfg->node_name : "zwire");
    x->pod_namespace = app_cfg_strdup(ctx, APP_XDS_DEFAULT_POD_NAMESPACE);
    x->node_name = app_cfg_strdup(ctx, ctx->cfg->node_name != NULL ? ctx->cfg->node_name : "");
    x->cert_ttl_s = APP_XDS_DEFAULT_CERT_TTL_S;

    v = app_cfg_read_str(ctx, g, "xds", "address", true, &set);
    if (v != NULL) {
        int rc = app_xds_split_address(v, &host, &port);
        if (rc == -ENOMEM)
            ctx->oom = true;
        else if (rc < 0)
            app_cfg_error(ctx, set, "xds.address: \"%s\" is not host:port (a DNS name or an IP, port 1..65535)", v);
        else {
            x->host = host;
            x->port = port;
            app_cfg_set_str(ctx, &x->address, strncmp(v, "https://", 8) == 0 ? v + 8 : v);
        }
    }
    v = app_cfg_read_str(ctx, g, "xds", "ca_address", false, &set);
    if (v != NULL) {
        int rc = app_xds_split_address(v, &host, &port);
        if (rc == -ENOMEM)
            ctx->oom = true;
        else if (rc < 0)
            app_cfg_error(ctx, set, "xds.ca_address: \"%s\" is not host:port (a DNS name or an IP, port 1..65535)",
                          v);
        else {
            x->ca_host = host;
            x->ca_port = port;
            app_cfg_set_str(ctx, &x->ca_address, strncmp(v, "https://", 8) == 0 ? v + 8 : v);
        }
    } else if (x->host != NULL) {
        x->ca_host = app_cfg_strdup(ctx, x->host);
        x->ca_port = x->port;
        x->ca_address = app_cfg_strdup(ctx, x->address);
    }
    v = xds_read_str(ctx, g, "xds", "root_cert", &x->root_cert, &set);
    if (v != NULL && strcmp(v, "SYSTEM") != 0 && v[0] != '/')
        app_cfg_error(ctx, set, "xds.root_cert: \"%s\" is neither an absolute path nor SYSTEM", v);
    v = xds_read_str(ctx, g, "xds", "token_file", &x->token_file, &set);
    if (v != NULL && v[0] != '/')
        app_cfg_error(ctx, set, "xds.token_file: \"%s\" is not an absolute path", v);
    v = xds_read_str(ctx, g, "xds", "cluster_id", &x->cluster_id, &set);
    if (v != NULL && v[0] == '\0')
        app_cfg_error(ctx, set, "xds.cluster_id: empty");
    v = xds_read_str(ctx, g, "xds", "trust_domain", &x->trust_domain, &set);
    if (v != NULL && (v[0] == '\0' || strchr(v, '/') != NULL || strlen(v) > 255))
        app_cfg_error(ctx, set, "xds.trust_domain: \"%s\" is not a trust domain (1..255 bytes, no '/')", v);
    v = xds_read_str(ctx, g, "xds", "server_name", &x->server_name, &set);
    if (v != NULL && v[0] == '\0')
        app_cfg_error(ctx, set, "xds.server_name: empty");
    if (x->server_name == NULL && x->host != NULL)
        x->server_name = app_cfg_strdup(ctx, x->host);
    (void)xds_read_str(ctx, g, "xds", "alt_server_name", &x->alt_server_name, &set);

    node_id = app_cfg_read_str(ctx, g, "xds", "node_id", false, &id_set);
    if (node_id != NULL && !xds_parse_node_id(ctx, node_id, x))
        app_cfg_error(ctx, id_set,
                      "xds.node_id: \"%s\" is not ztunnel~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local",
                      node_id);
    {
        static const char *const parts[] = {"instance_ip", "pod_name", "pod_namespace", "node_name"};
        char **dst[] = {&x->instance_ip, &x->pod_name, &x->pod_namespace, &x->node_name};
        for (size_t i = 0; i < 4; i++) {
            v = app_cfg_read_str(ctx, g, "xds", parts[i], false, &set);
            if (v == NULL)
                continue;
            if (node_id != NULL && i < 3) {
                app_cfg_error(ctx, set, "xds.%s: node_id already sets it (line %u)", parts[i],
                              config_setting_source_line(id_set));
                continue;
            }
            if (!xds_check_part(v) || (i > 0 && i < 3 && v[0] == '\0'))
                app_cfg_error(ctx, set, "xds.%s: \"%s\" must be non-empty and contain no '~'", parts[i], v);
            else
                app_cfg_set_str(ctx, dst[i], v);
        }
    }
    if (x->instance_ip != NULL && x->instance_ip[0] != '\0') {
        unsigned char buf[16];
        if (inet_pton(AF_INET, x->instance_ip, buf) != 1 && inet_pton(AF_INET6, x->instance_ip, buf) != 1)
            app_cfg_error(ctx, id_set != NULL ? id_set : g, "xds.instance_ip: \"%s\" is not an IP address",
                          x->instance_ip);
    }
    app_cfg_read_u32(ctx, g, "xds", "cert_ttl_s", 60, 365u * 86400, &x->cert_ttl_s);
    app_cfg_read_bool(ctx, g, "xds", "on_demand", &x->on_demand);
}

static void xds_parse_local_ca(struct app_cfg_ctx *ctx, const config_setting_t *root, struct app_xds_section *slot)
{
    static const char *const known[] = {"cert", "key", "roots", "state_dir", "trust_domain", "cert_ttl_s", NULL};
    struct app_local_ca_config *l = &slot->local_ca;
    const config_setting_t *g = app_cfg_read_group(ctx, root, "", "local_ca", false), *set, *cs = NULL, *ks = NULL;
    const char *v;

    l->state_dir = app_cfg_strdup(ctx, APP_LOCAL_CA_DEFAULT_STATE_DIR);
    l->trust_domain = app_cfg_strdup(ctx, APP_XDS_DEFAULT_TRUST_DOMAIN);
    l->cert_ttl_s = APP_XDS_DEFAULT_CERT_TTL_S;
    slot->local_ca_given = g != NULL;
    if (g == NULL)
        return;
    app_cfg_check_unknown(ctx, g, "local_ca", known);
    static const char *const paths[] = {"cert", "key", "roots", "state_dir"};
    char **dst[] = {&l->cert, &l->key, &l->roots, &l->state_dir};
    for (size_t i = 0; i < 4; i++) {
        v = xds_read_str(ctx, g, "local_ca", paths[i], dst[i], &set);
        if (v != NULL && v[0] != '/')
            app_cfg_error(ctx, set, "local_ca.%s: \"%s\" is not an absolute path", paths[i], v);
        if (i == 0)
            cs = set;
        if (i == 1)
            ks = set;
    }
    if ((l->cert == NULL) != (l->key == NULL))
        app_cfg_error(ctx, cs != NULL ? cs : ks, "local_ca: cert and key go together");
    if (l->roots != NULL && l->cert == NULL)
        app_cfg_error(ctx, g, "local_ca.roots: needs cert and key");
    v = xds_read_str(ctx, g, "local_ca", "trust_domain", &l->trust_domain, &set);
    if (v != NULL && (v[0] == '\0' || strchr(v, '/') != NULL || strlen(v) > 255))
        app_cfg_error(ctx, set, "local_ca.trust_domain: \"%s\" is not a trust domain (1..255 bytes, no '/')", v);
    app_cfg_read_u32(ctx, g, "local_ca", "cert_ttl_s", 60, 365u * 86400, &l->cert_ttl_s);
}

static void xds_section_parse(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    struct app_xds_section *slot = calloc(1, sizeof(*slot));

    if (slot == NULL) {
        ctx->oom = true;
        return;
    }
    ctx->cfg->xds_section = slot;
    xds_parse_xds(ctx, root, slot);
    xds_parse_local_ca(ctx, root, slot);
}

static void xds_section_free(struct app_config *cfg)
{
    struct app_xds_section *s = cfg->xds_section;

    cfg->xds_section = NULL;
    if (s == NULL)
        return;
    if (s->xds != NULL) {
        struct app_xds_config *x = s->xds;
        char *strs[] = {x->address,   x->host,     x->ca_address,  x->ca_host,     x->root_cert,
                        x->token_file, x->cluster_id, x->trust_domain, x->server_name, x->alt_server_name,
                        x->instance_ip, x->pod_name, x->pod_namespace, x->node_name};
        for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
            free(strs[i]);
        free(x);
    }
    free(s->local_ca.cert);
    free(s->local_ca.key);
    free(s->local_ca.roots);
    free(s->local_ca.state_dir);
    free(s->local_ca.trust_domain);
    free(s);
}

static const char *const xds_section_keys[] = {"xds", "local_ca", NULL};

const struct app_cfg_section app_cfg_section_xds = {
    .keys = xds_section_keys,
    .parse = xds_section_parse,
    .free = xds_section_free,
};
