/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mesh side of a node (see mesh_node.h): snapshot, policies, local CA and certificates, and the proxy hooks.
 * Everything here is built once on the control thread; the hooks only read, so every lcore may call them.
 */
#include <arpa/inet.h>
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "appliance/cert_manager.h"
#include "appliance/config_authz.h"
#include "appliance/config_mesh.h"
#include "appliance/conn_kernel.h"
#include "appliance/log.h"
#include "appliance/mesh_node.h"
#include "mesh/metrics.h"
#include "mesh/xds_convert.h"
#include "mgmt/prom.h"
#include "mgmt/routes.h"

#include <jansson.h>

#define MESH_NODE_MAX_CERTS 256

struct app_mesh_node {
    const struct mesh_env *env;
    const struct app_config *cfg;
    const struct mesh_workloads *workloads;
    struct mesh_authz_set *authz;         /* owned when built from the config */
    const struct mesh_authz_set *policies; /* what decides: authz, or the istiod snapshot's set */
    const struct mesh_xds_state *xds;     /* built from istiod's snapshot: holds workloads and policies */
    struct mesh_local_ca *ca;
    struct app_cert_manager *cert_manager; /* istiod's certificates (borrowed); NULL: certs below */
    size_t n_certs;
    struct mesh_cert_bundle *certs[MESH_NODE_MAX_CERTS];
    uint64_t allowed, denied, dry_run_denied; /* relaxed atomics: any lcore counts */
};

/* ---- the backends' env ---- */

/* The same libc env as the kernel loop's (appliance/conn_kernel.c): one implementation for both backends. */
void app_mesh_env_init(struct mesh_env *env)
{
    app_kloop_env_init(env, MESH_LOG_INFO);
}

/* ---- build ---- */

static int mesh_node_issue(struct app_mesh_node *n, const struct mesh_workload *w, char *err, size_t errlen)
{
    const struct app_mesh_config *m = n->cfg->mesh;
    struct mesh_cert_bundle *b;
    int rc = 0;

    struct mesh_spiffe_id id;

    if (mesh_workload_identity(w, &id) != 0) {
        snprintf(err, errlen, "workload %s/%s: not a SPIFFE identity", w->namespace, w->name);
        return -EINVAL;
    }
    for (size_t i = 0; i < n->n_certs; i++)
        if (mesh_spiffe_eq(mesh_identity_bundle_id(n->certs[i]), &id))
            return 0; /* one certificate per identity, shared by its workloads */
    if (n->n_certs == MESH_NODE_MAX_CERTS) {
        snprintf(err, errlen, "more than %d local identities", MESH_NODE_MAX_CERTS);
        return -ENOSPC;
    }
    b = mesh_local_ca_issue(n->ca, &id, mesh_env_now(n->env), (uint64_t)m->cert_lifetime_s * 1000000000ull,
                            &rc);
    if (b == NULL) {
        snprintf(err, errlen, "cannot issue a certificate for workload %s/%s (%s)", w->namespace, w->name,
                 strerror(-rc));
        return rc;
    }
    n->certs[n->n_certs++] = b;
    return 0;
}

static char *mesh_node_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long sz;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (sz = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)sz + 1)) != NULL) {
        *len = fread(buf, 1, (size_t)sz, f);
        buf[*len] = '\0';
    }
    fclose(f);
    return buf;
}

static struct mesh_local_ca *mesh_node_open_ca(struct app_mesh_node *n, char *err, size_t errlen)
{
    const struct app_mesh_config *m = n->cfg->mesh;
    struct mesh_local_ca *ca;
    size_t cl = 0, kl = 0;
    char *cert, *key;
    int rc = 0;

    if (m->ca_cert_path == NULL) {
        ca = mesh_local_ca_generate(n->env, m->trust_domain, mesh_env_now(n->env), 0, &rc);
        if (ca == NULL)
            snprintf(err, errlen, "cannot generate the local CA (%s)", strerror(-rc));
        return ca;
    }
    cert = mesh_node_read_file(m->ca_cert_path, &cl);
    key = mesh_node_read_file(m->ca_key_path, &kl);
    if (cert == NULL || key == NULL) {
        snprintf(err, errlen, "cannot read %s", cert == NULL ? m->ca_cert_path : m->ca_key_path);
        free(cert);
        free(key);
        return NULL;
    }
    ca = mesh_local_ca_from_pem(n->env, cert, cl, key, kl, NULL, 0, &rc);
    if (ca == NULL)
        snprintf(err, errlen, "%s / %s: not a usable CA certificate and key (%s)", m->ca_cert_path, m->ca_key_path,
                 strerror(-rc));
    free(cert);
    free(key);
    return ca;
}

/* Open the CA and issue a certificate for every identity of this node's workloads. 0, or -1 with err set. */
static int mesh_node_issue_local(struct app_mesh_node *n, char *err, size_t errlen)
{
    n->ca = mesh_node_open_ca(n, err, errlen);
    if (n->ca == NULL)
        return -1;
    for (size_t i = 0; i < mesh_workloads_count(n->workloads); i++) {
        const struct mesh_workload *w = mesh_workloads_at(n->workloads, i);
        if (strcmp(w->node, n->cfg->node_name) == 0 && mesh_node_issue(n, w, err, errlen) < 0)
            return -1;
    }
    return 0;
}

struct app_mesh_node *app_mesh_node_new(const struct app_config *cfg, const struct mesh_env *env, char *err,
                                        size_t errlen)
{
    const struct app_mesh_config *m = cfg->mesh;
    struct app_mesh_node *n = calloc(1, sizeof(*n));
    const char *werr = NULL;
    int rc = 0;

    if (n == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    n->env = env;
    n->cfg = cfg;
    n->workloads = mesh_workloads_new(env, m->workloads, m->n_workloads, m->services, m->n_services, &werr);
    if (n->workloads == NULL) {
        snprintf(err, errlen, "workloads: %s", werr ? werr : "invalid");
        goto fail;
    }
    n->authz = mesh_authz_set_new(env, cfg->authz->policies, cfg->authz->n_policies, &rc);
    if (n->authz == NULL) {
        snprintf(err, errlen, "policies: cannot compile (%s)", strerror(-rc));
        goto fail;
    }
    n->policies = n->authz;
    if (mesh_node_issue_local(n, err, errlen) < 0)
        goto fail;
    APP_LOG_INFO("mesh", "%zu workloads, %zu services, %zu policies, %zu local identities with certificates",
                 mesh_workloads_count(n->workloads), mesh_workloads_service_count(n->workloads),
                 mesh_authz_set_count(n->authz), n->n_certs);
    return n;
fail:
    app_mesh_node_free(n);
    return NULL;
}

struct app_mesh_node *app_mesh_node_new_from_xds(const struct app_config *cfg, const struct mesh_env *env,
                                                 const struct mesh_xds_state *state, struct app_cert_manager *certs,
                                                 char *err, size_t errlen)
{
    struct app_mesh_node *n = calloc(1, sizeof(*n));

    if (n == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    n->env = env;
    n->cfg = cfg;
    n->xds = mesh_xds_state_ref(state);
    n->workloads = mesh_workloads_ref(state->workloads);
    n->policies = state->authz;
    n->cert_manager = certs;
    if (certs == NULL && mesh_node_issue_local(n, err, errlen) < 0)
        goto fail;
    APP_LOG_INFO("mesh", "istiod snapshot %llu: %zu workloads, %zu services, %zu policies, certificates from %s",
                 (unsigned long long)state->generation, mesh_workloads_count(n->workloads),
                 mesh_workloads_service_count(n->workloads), mesh_authz_set_count(state->authz),
                 certs != NULL ? "the Istio CA" : "the local CA");
    return n;
fail:
    app_mesh_node_free(n);
    return NULL;
}

bool app_mesh_node_needs_rotation(const struct app_mesh_node *n)
{
    uint64_t now = mesh_env_now(n->env);

    for (size_t i = 0; i < n->n_certs; i++)
        if (mesh_identity_needs_rotation(n->certs[i], now))
            return true;
    return false;
}

struct app_mesh_node *app_mesh_node_renew(const struct app_mesh_node *n, char *err, size_t errlen)
{
    if (n->xds != NULL)
        return app_mesh_node_new_from_xds(n->cfg, n->env, n->xds, n->cert_manager, err, errlen);
    return app_mesh_node_new(n->cfg, n->env, err, errlen);
}

void app_mesh_node_free(struct app_mesh_node *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->n_certs; i++)
        mesh_identity_bundle_unref(n->certs[i]);
    mesh_local_ca_free(n->ca);
    mesh_authz_set_free(n->authz);
    mesh_workloads_unref(n->workloads);
    mesh_xds_state_unref(n->xds);
    free(n);
}

const struct mesh_workloads *app_mesh_node_workloads(const struct app_mesh_node *n)
{
    return n->workloads;
}

const struct mesh_authz_set *app_mesh_node_authz(const struct app_mesh_node *n)
{
    return n->policies;
}

void app_mesh_node_proxy_config(struct app_mesh_node *n, struct mesh_proxy_config *pc)
{
    const struct app_mesh_config *m = n->cfg->mesh;

    pc->node_name = n->cfg->node_name;
    pc->workloads = n->workloads;
    pc->mtls_mode = m->mtls_mode == APP_MTLS_STRICT ? MESH_MTLS_STRICT : MESH_MTLS_PERMISSIVE;
    pc->get_bundle = app_mesh_node_get_bundle;
    pc->get_bundle_u = n;
    pc->authz = app_mesh_node_authorize;
    pc->authz_u = n;
    pc->access_log = app_mesh_node_access_log;
    pc->access_log_u = n;
    pc->hbone_port = m->hbone_port;
}

json_t *app_mesh_conn_view_json(const struct mesh_proxy_conn_view *v, int lcore, uint64_t now_ns)
{
    char src[64], dst[64];

    mesh_addr_format(&v->src, true, src, sizeof(src));
    mesh_addr_format(&v->dst, true, dst, sizeof(dst));
    return json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:f}", "lcore", lcore, "direction",
                     mesh_proxy_direction_str(v->dir), "state", v->state, "src", src, "dst", dst, "src_identity",
                     v->src_identity, "dst_identity", v->dst_identity, "bytes_sent", (json_int_t)v->bytes_sent,
                     "bytes_recv", (json_int_t)v->bytes_recv, "age_s",
                     now_ns > v->start_ns ? (double)(now_ns - v->start_ns) / 1e9 : 0.0);
}

size_t app_mesh_node_local_addresses(const struct app_mesh_node *n, uint32_t *out, size_t max)
{
    size_t k = 0;

    for (size_t i = 0; i < mesh_workloads_count(n->workloads); i++) {
        const struct mesh_workload *w = mesh_workloads_at(n->workloads, i);
        if (w->node == NULL || strcmp(w->node, n->cfg->node_name) != 0)
            continue;
        for (size_t a = 0; a < w->n_addresses && k < max; a++) {
            uint32_t ip;
            if (w->addresses[a].family != MESH_ADDR_V4)
                continue;
            memcpy(&ip, w->addresses[a].ip.v4, 4);
            out[k++] = ntohl(ip);
        }
    }
    return k;
}

/* ---- hooks ---- */

const struct mesh_cert_bundle *app_mesh_node_get_bundle(void *u, const struct mesh_spiffe_id *id)
{
    struct app_mesh_node *n = u;

    if (n->cert_manager != NULL)
        return app_cert_manager_get(n->cert_manager, id);
    for (size_t i = 0; i < n->n_certs; i++)
        if (mesh_spiffe_eq(mesh_identity_bundle_id(n->certs[i]), id))
            return mesh_identity_bundle_ref(n->certs[i]);
    return NULL;
}

static void mesh_node_count(uint64_t *c)
{
    __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

enum mesh_proxy_verdict app_mesh_node_authorize(void *u, const struct mesh_proxy_conn_info *info)
{
    struct app_mesh_node *n = u;
    const struct mesh_workload *dst = info->dst_workload;
    struct mesh_authz_conn conn = {
        .peer = info->src_identity,
        .src = info->src,
        .dst = info->dst,
        .dst_namespace = dst != NULL ? dst->namespace : NULL,
        .policy_keys = dst != NULL ? dst->authorization_policies : NULL,
        .n_policy_keys = dst != NULL ? dst->n_authorization_policies : 0,
    };
    struct mesh_authz_result r;
    enum mesh_authz_decision d = mesh_authz_eval(n->policies, &conn, &r);

    if (r.dry_run_denied) {
        char src[64];
        mesh_addr_format(&info->src, true, src, sizeof(src));
        mesh_node_count(&n->dry_run_denied);
        APP_LOG_INFO("authz", "dry-run: would deny %s to %s/%s (policy %s)", src, dst ? dst->namespace : "",
                     dst ? dst->name : "",
                     r.dry_run_policy >= 0 ? mesh_authz_set_policy_key(n->policies, (size_t)r.dry_run_policy)
                                           : "allow policies, none matched");
    }
    if (d == MESH_AUTHZ_DENY) {
        mesh_node_count(&n->denied);
        APP_LOG_DEBUG("authz", "deny: %s%s%s", mesh_authz_reason_str(r.reason), r.policy >= 0 ? ": " : "",
                      r.policy >= 0 ? mesh_authz_set_policy_key(n->policies, (size_t)r.policy) : "");
        return MESH_PROXY_DENY;
    }
    mesh_node_count(&n->allowed);
    return MESH_PROXY_ALLOW;
}

void app_mesh_node_access_log(void *u, const struct mesh_proxy_access_record *rec)
{
    char src[64], dst[64];
    (void)u;

    mesh_addr_format(&rec->src, true, src, sizeof(src));
    mesh_addr_format(&rec->dst, true, dst, sizeof(dst));
    APP_LOG_INFO("access",
                 "%s src.addr=%s src.workload=%s src.namespace=%s src.identity=%s dst.addr=%s dst.service=%s "
                 "dst.workload=%s dst.namespace=%s dst.identity=%s bytes_sent=%llu bytes_recv=%llu duration_ms=%llu "
                 "hbone_status=%d reason=%s",
                 rec->direction_str, src, rec->src_workload, rec->src_namespace, rec->src_identity, dst,
                 rec->dst_service, rec->dst_workload, rec->dst_namespace, rec->dst_identity,
                 (unsigned long long)rec->bytes_sent, (unsigned long long)rec->bytes_recv,
                 (unsigned long long)(rec->duration_ns / 1000000), rec->hbone_status,
                 rec->reason_str[0] ? rec->reason_str : "-");
}

size_t app_mesh_node_cert_count(const struct app_mesh_node *n)
{
    return n->n_certs;
}

const struct mesh_cert_bundle *app_mesh_node_cert_at(const struct app_mesh_node *n, size_t i)
{
    return i < n->n_certs ? n->certs[i] : NULL;
}

void app_mesh_node_authz_stats(const struct app_mesh_node *n, struct app_mesh_authz_stats *out)
{
    out->allowed = __atomic_load_n(&n->allowed, __ATOMIC_RELAXED);
    out->denied = __atomic_load_n(&n->denied, __ATOMIC_RELAXED);
    out->dry_run_denied = __atomic_load_n(&n->dry_run_denied, __ATOMIC_RELAXED);
}

void app_mesh_metrics_render(struct mgmt_prom *prom, const struct mesh_metrics *m)
{
    static const struct {
        const char *name, *help;
        size_t offset;
    } fams[] = {
        {MESH_METRICS_TCP_OPENED, "The total number of TCP connections opened",
         offsetof(struct mesh_metrics_series, opened)},
        {MESH_METRICS_TCP_CLOSED, "The total number of TCP connections closed",
         offsetof(struct mesh_metrics_series, closed)},
        {MESH_METRICS_TCP_SENT, "The size of total bytes sent during response in case of a TCP connection",
         offsetof(struct mesh_metrics_series, sent_bytes)},
        {MESH_METRICS_TCP_RECEIVED, "The size of total bytes received during request in case of a TCP connection",
         offsetof(struct mesh_metrics_series, received_bytes)},
        {MESH_METRICS_TCP_FAILED, "The total number of TCP connections failed",
         offsetof(struct mesh_metrics_series, failed)},
    };
    size_t count = m != NULL ? mesh_metrics_count(m) : 0;

    for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
        mgmt_prom_family(prom, fams[f].name, MGMT_PROM_COUNTER, fams[f].help);
        for (size_t i = 0; i < count; i++) {
            const struct mesh_metrics_series *s = mesh_metrics_at(m, i);
            struct mgmt_prom_label l[MESH_METRICS_LABEL_COUNT];
            uint64_t v;
            for (int k = 0; k < MESH_METRICS_LABEL_COUNT; k++) {
                l[k].name = mesh_metrics_label_names[k];
                l[k].value = s->labels[k];
            }
            memcpy(&v, (const char *)s + fams[f].offset, sizeof(v));
            mgmt_prom_sample_u64(prom, l, MESH_METRICS_LABEL_COUNT, v);
        }
    }
}

/* ---- GET /authz/check ---- */

static void mesh_node_api_authz_check(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct app_mesh_node *n = *(struct app_mesh_node *const *)ctx;
    const char *sid = mgmt_request_query_get(req, "src_identity"), *src = mgmt_request_query_get(req, "src");
    const char *dst = mgmt_request_query_get(req, "dst"), *port = mgmt_request_query_get(req, "port");
    struct mesh_spiffe_id peer;
    struct mesh_authz_conn conn = {0};
    struct mesh_authz_trace trace;
    const struct mesh_workload *w;
    char *text;
    size_t need;
    long p;

    if (dst == NULL || port == NULL || (p = strtol(port, NULL, 10)) < 1 || p > 65535) {
        mgmt_response_text(resp, 400, "usage: GET /authz/check?src_identity=spiffe://TD/ns/NS/sa/SA&src=IP&dst=IP&port=N"
                                      " (src_identity and src optional)\n");
        return;
    }
    if (sid != NULL && sid[0] != '\0') {
        if (mesh_spiffe_parse(sid, strlen(sid), &peer) < 0) {
            mgmt_response_text(resp, 400, "src_identity \"%s\" is not spiffe://TD/ns/NS/sa/SA\n", sid);
            return;
        }
        conn.peer = &peer;
    }
    if (mesh_addr_parse_ip(dst, &conn.dst) < 0 || (src != NULL && mesh_addr_parse_ip(src, &conn.src) < 0)) {
        mgmt_response_text(resp, 400, "src and dst must be IP addresses\n");
        return;
    }
    conn.dst.port = htons((uint16_t)p);
    w = mesh_workloads_find_by_ip(n->workloads, &conn.dst);
    if (w != NULL) {
        conn.dst_namespace = w->namespace;
        conn.policy_keys = w->authorization_policies;
        conn.n_policy_keys = w->n_authorization_policies;
    }
    if (mesh_authz_explain(n->policies, &conn, n->env, &trace) < 0) {
        mesh_authz_trace_fini(&trace);
        mgmt_response_text(resp, 500, "out of memory\n");
        return;
    }
    need = mesh_authz_trace_format(n->policies, &trace, NULL, 0);
    text = malloc(need + 1);
    if (text != NULL)
        mesh_authz_trace_format(n->policies, &trace, text, need + 1);
    mgmt_response_json(
        resp, 200,
        json_pack("{s:s, s:s, s:s?, s:s, s:s?, s:b, s:s}", "decision", mesh_authz_decision_str(trace.result.decision),
                  "reason", mesh_authz_reason_str(trace.result.reason), "policy",
                  trace.result.policy >= 0 ? mesh_authz_set_policy_key(n->policies, (size_t)trace.result.policy) : NULL,
                  "destination_workload", w != NULL ? w->name : "(not a workload of the mesh)", "dry_run_policy",
                  trace.result.dry_run_policy >= 0
                      ? mesh_authz_set_policy_key(n->policies, (size_t)trace.result.dry_run_policy)
                      : NULL,
                  "dry_run_denied", trace.result.dry_run_denied, "trace", text != NULL ? text : ""));
    free(text);
    mesh_authz_trace_fini(&trace);
}

int app_mesh_node_register_routes(struct app_mesh_node *const *slot, struct mgmt_routes *routes)
{
    return mgmt_routes_add(routes, "GET", "/authz/check", mesh_node_api_authz_check, (void *)(uintptr_t)slot,
                           "explain an authorization decision: ?src_identity=&src=&dst=&port=", 0);
}

json_t *app_mesh_node_dump_json(const struct app_mesh_node *n)
{
    const struct mesh_workloads *ws = n->workloads;
    json_t *wl = json_array(), *sv = json_array(), *certs = json_array();
    struct app_mesh_authz_stats az;
    char addr[64];

    for (size_t i = 0; i < mesh_workloads_count(ws); i++) {
        const struct mesh_workload *w = mesh_workloads_at(ws, i);
        json_t *addrs = json_array();
        char id[512];
        for (size_t a = 0; a < w->n_addresses; a++) {
            mesh_addr_format(&w->addresses[a], false, addr, sizeof(addr));
            json_array_append_new(addrs, json_string(addr));
        }
        struct mesh_spiffe_id sid;
        if (mesh_workload_identity(w, &sid) != 0 || mesh_spiffe_format(&sid, id, sizeof(id)) < 0)
            id[0] = '\0';
        json_array_append_new(wl, json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s}", "uid", w->uid, "name",
                                            w->name, "namespace", w->namespace, "serviceAccount", w->service_account,
                                            "workloadIps", addrs, "node", w->node, "protocol",
                                            mesh_tunnel_protocol_str(w->protocol), "identity", id));
    }
    for (size_t i = 0; i < mesh_workloads_service_count(ws); i++) {
        const struct mesh_service *s = mesh_workloads_service_at(ws, i);
        json_t *vips = json_array();
        for (size_t a = 0; a < s->n_addresses; a++) {
            mesh_addr_format(&s->addresses[a], false, addr, sizeof(addr));
            json_array_append_new(vips, json_string(addr));
        }
        json_array_append_new(sv, json_pack("{s:s, s:s, s:s, s:o}", "name", s->name, "namespace", s->namespace,
                                            "hostname", s->hostname, "vips", vips));
    }
    if (n->cert_manager != NULL) {
        json_decref(certs);
        certs = app_cert_manager_dump(n->cert_manager);
    }
    for (size_t i = 0; i < n->n_certs; i++) {
        const struct mesh_cert_bundle *b = n->certs[i];
        char id[512];
        mesh_spiffe_format(mesh_identity_bundle_id(b), id, sizeof(id));
        json_array_append_new(certs, json_pack("{s:s, s:s, s:s, s:I, s:I}", "identity", id, "state", "Available",
                                               "serialNumber", mesh_identity_bundle_serial(b), "validFrom",
                                               (json_int_t)mesh_identity_bundle_not_before(b), "expirationTime",
                                               (json_int_t)mesh_identity_bundle_not_after(b)));
    }
    app_mesh_node_authz_stats(n, &az);
    return json_pack("{s:o, s:o, s:o, s:I, s:{s:I, s:I, s:I}}", "workloads", wl, "services", sv, "certificates", certs,
                     "policies", (json_int_t)mesh_authz_set_count(n->policies), "authz",
                     "allowed", (json_int_t)az.allowed, "denied", (json_int_t)az.denied, "dry_run_denied",
                     (json_int_t)az.dry_run_denied);
}
