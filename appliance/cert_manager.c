/* SPDX-License-Identifier: Apache-2.0 */
/*
 * appliance/cert_manager.c - per-identity certificate state machine (see cert_manager.h for the invariants).
 *
 * Each identity has: the current bundle (or none), the time its next attempt is due, the current backoff, the last
 * error, and at most one outstanding call. A call carries a ticket (identity copy + CSR key) so that a completion
 * for an identity untracked meanwhile is recognised and dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <jansson.h>

#include "appliance/cert_manager.h"
#include "mesh/buf.h"
#include "mesh/ca_client.h"
#include "mesh/workload.h"

#define CM_ERR_MAX 200

struct cm_ident {
    struct mesh_spiffe_id id;
    const struct mesh_cert_bundle *bundle; /* guarded by cm->lock for readers on other threads */
    uint64_t next_ns;
    uint64_t backoff_ns;
    bool inflight;
    bool failed; /* the last attempt failed */
    char err[CM_ERR_MAX];
};

struct cm_ticket {
    struct app_cert_manager *cm;
    struct mesh_spiffe_id id;
    EVP_PKEY *key;
};

struct app_cert_manager {
    const struct mesh_env *env;
    bool remote;
    struct app_cert_ca ca;
    const struct mesh_local_ca *local;
    uint32_t ttl_s;
    pthread_mutex_t lock;
    struct cm_ident **ids;
    size_t n_ids, cap_ids;
    struct app_cert_manager_stats stats;
};

struct app_cert_manager *app_cert_manager_new(const struct mesh_env *env, const struct app_cert_ca *ca,
                                              const struct mesh_local_ca *local, uint32_t ttl_s, int *err)
{
    struct app_cert_manager *cm;

    if ((ca == NULL || ca->call == NULL) && local == NULL) {
        *err = -EINVAL;
        return NULL;
    }
    cm = calloc(1, sizeof(*cm));
    if (cm == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    cm->env = env;
    cm->remote = ca != NULL && ca->call != NULL;
    if (cm->remote)
        cm->ca = *ca;
    cm->local = local;
    cm->ttl_s = ttl_s != 0 ? ttl_s : 86400;
    pthread_mutex_init(&cm->lock, NULL);
    return cm;
}

static void cm_ident_free(struct cm_ident *ci)
{
    mesh_identity_bundle_unref(ci->bundle);
    free(ci);
}

void app_cert_manager_free(struct app_cert_manager *cm)
{
    if (cm == NULL)
        return;
    for (size_t i = 0; i < cm->n_ids; i++)
        cm_ident_free(cm->ids[i]);
    free(cm->ids);
    pthread_mutex_destroy(&cm->lock);
    free(cm);
}

static struct cm_ident *cm_find(const struct app_cert_manager *cm, const struct mesh_spiffe_id *id, size_t *idx)
{
    for (size_t i = 0; i < cm->n_ids; i++) {
        if (mesh_spiffe_eq(&cm->ids[i]->id, id)) {
            if (idx != NULL)
                *idx = i;
            return cm->ids[i];
        }
    }
    return NULL;
}

int app_cert_manager_track(struct app_cert_manager *cm, const struct mesh_spiffe_id *id)
{
    struct cm_ident *ci;

    if (cm_find(cm, id, NULL) != NULL)
        return 0;
    if (cm->n_ids == cm->cap_ids) {
        size_t ncap = cm->cap_ids == 0 ? 16 : cm->cap_ids * 2;
        struct cm_ident **n = realloc(cm->ids, ncap * sizeof(*n));
        if (n == NULL)
            return -ENOMEM;
        pthread_mutex_lock(&cm->lock);
        cm->ids = n;
        cm->cap_ids = ncap;
        pthread_mutex_unlock(&cm->lock);
    }
    ci = calloc(1, sizeof(*ci));
    if (ci == NULL)
        return -ENOMEM;
    ci->id = *id;
    ci->next_ns = mesh_env_now(cm->env);
    pthread_mutex_lock(&cm->lock);
    cm->ids[cm->n_ids++] = ci;
    pthread_mutex_unlock(&cm->lock);
    return 0;
}

void app_cert_manager_untrack(struct app_cert_manager *cm, const struct mesh_spiffe_id *id)
{
    size_t i;
    struct cm_ident *ci = cm_find(cm, id, &i);

    if (ci == NULL)
        return;
    pthread_mutex_lock(&cm->lock);
    cm->ids[i] = cm->ids[--cm->n_ids];
    pthread_mutex_unlock(&cm->lock);
    if (ci->inflight)
        cm->stats.inflight--; /* its completion finds no identity and is dropped */
    cm_ident_free(ci);
}

int app_cert_manager_sync(struct app_cert_manager *cm, const struct mesh_workloads *ws, const char *node_name)
{
    size_t n = mesh_workloads_count(ws);
    bool *keep = calloc(cm->n_ids + n + 1, sizeof(*keep));
    int rc = 0;

    if (keep == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct mesh_workload *w = mesh_workloads_at(ws, i);
        size_t idx;
        if (node_name != NULL && strcmp(w->node, node_name) != 0)
            continue;
        struct mesh_spiffe_id id;
        if (mesh_workload_identity(w, &id) != 0)
            continue;
        if (cm_find(cm, &id, &idx) == NULL) {
            if ((rc = app_cert_manager_track(cm, &id)) != 0)
                break;
            idx = cm->n_ids - 1;
        }
        keep[idx] = true;
    }
    if (rc == 0) {
        for (size_t i = cm->n_ids; i-- > 0;) {
            if (!keep[i]) {
                struct mesh_spiffe_id id = cm->ids[i]->id;
                app_cert_manager_untrack(cm, &id);
            }
        }
    }
    free(keep);
    return rc;
}

/* ---- outcomes ---- */

static uint64_t cm_jitter(const struct app_cert_manager *cm, uint64_t d)
{
    uint32_t r = 0;
    uint64_t span = d * APP_CERT_BACKOFF_JITTER_PERCENT / 100;

    if (span == 0 || mesh_env_random(cm->env, &r, sizeof(r)) != 0)
        return d;
    /* uniform in [d - span, d + span] */
    return d - span + (uint64_t)(((unsigned __int128)r * (2 * span + 1)) >> 32);
}

static void cm_failed(struct app_cert_manager *cm, struct cm_ident *ci, const char *why)
{
    uint64_t now = mesh_env_now(cm->env);

    cm->stats.failures++;
    ci->failed = true;
    snprintf(ci->err, sizeof(ci->err), "%s", why);
    if (ci->backoff_ns == 0)
        ci->backoff_ns = APP_CERT_BACKOFF_INITIAL_NS;
    else if (ci->backoff_ns * 2 < APP_CERT_BACKOFF_MAX_NS)
        ci->backoff_ns *= 2;
    else
        ci->backoff_ns = APP_CERT_BACKOFF_MAX_NS;
    ci->next_ns = now + cm_jitter(cm, ci->backoff_ns);
    MESH_LOG(cm->env, MESH_LOG_WARNING, "app.cert", "certificate for spiffe://%s/ns/%s/sa/%s failed: %s; retry in %llu ms",
             ci->id.td, ci->id.ns, ci->id.sa, why, (unsigned long long)((ci->next_ns - now) / 1000000));
}

static void cm_issued(struct app_cert_manager *cm, struct cm_ident *ci, const struct mesh_cert_bundle *b)
{
    uint64_t now = mesh_env_now(cm->env);
    int64_t nb = mesh_identity_bundle_not_before(b), na = mesh_identity_bundle_not_after(b);
    const struct mesh_cert_bundle *old;
    uint64_t half;

    pthread_mutex_lock(&cm->lock);
    old = ci->bundle;
    ci->bundle = b;
    pthread_mutex_unlock(&cm->lock);
    if (old != NULL && (int64_t)(now / 1000000000ull) < mesh_identity_bundle_not_after(old))
        cm->stats.rotations++;
    mesh_identity_bundle_unref(old);
    cm->stats.issued++;
    ci->failed = false;
    ci->err[0] = '\0';
    ci->backoff_ns = 0;
    half = (uint64_t)nb * 1000000000ull + (uint64_t)(na - nb) * 500000000ull;
    ci->next_ns = half > now ? half : now + APP_CERT_BACKOFF_INITIAL_NS;
}

static void cm_on_done(void *u, int code, const char *message, const uint8_t *msg, size_t len)
{
    struct cm_ticket *t = u;
    struct app_cert_manager *cm = t->cm;
    struct cm_ident *ci = cm_find(cm, &t->id, NULL);
    struct mesh_cert_bundle *b = NULL;
    char reason[160] = "", why[CM_ERR_MAX];

    if (ci != NULL && ci->inflight) {
        ci->inflight = false;
        cm->stats.inflight--;
        if (code != 0) {
            snprintf(why, sizeof(why), "CreateCertificate failed: gRPC status %d: %s", code,
                     message != NULL ? message : "");
            cm_failed(cm, ci, why);
        } else if (mesh_ca_response_decode(cm->env, msg, len, &t->id, t->key, NULL, 0, &b, reason, sizeof(reason)) !=
                   0) {
            snprintf(why, sizeof(why), "certificate refused: %s", reason);
            cm_failed(cm, ci, why);
        } else {
            cm_issued(cm, ci, b);
        }
    }
    EVP_PKEY_free(t->key);
    free(t);
}

/* ---- requests ---- */

static void cm_start(struct app_cert_manager *cm, struct cm_ident *ci)
{
    char *csr = NULL;
    size_t csr_len = 0;
    struct mesh_buf req;
    struct cm_ticket *t;
    int rc;

    cm->stats.requests++;
    if (!cm->remote) {
        struct mesh_cert_bundle *b = mesh_local_ca_issue(cm->local, &ci->id, mesh_env_now(cm->env),
                                                         (uint64_t)cm->ttl_s * 1000000000ull, &rc);
        if (b == NULL)
            cm_failed(cm, ci, rc == -EINVAL ? "local CA: identity does not format" : "local CA: issuing failed");
        else
            cm_issued(cm, ci, b);
        return;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        cm_failed(cm, ci, "out of memory");
        return;
    }
    t->cm = cm;
    t->id = ci->id;
    rc = mesh_ca_csr_new(cm->env, &ci->id, &csr, &csr_len, &t->key);
    if (rc != 0) {
        free(t);
        cm_failed(cm, ci, "CSR creation failed");
        return;
    }
    mesh_buf_init(&req, cm->env, 0);
    rc = mesh_ca_request_encode(cm->env, csr, (int64_t)cm->ttl_s, &ci->id, &req);
    mesh_env_free(cm->env, csr);
    if (rc == 0)
        rc = cm->ca.call(cm->ca.u, mesh_buf_data(&req), mesh_buf_len(&req), cm_on_done, t);
    mesh_buf_fini(&req);
    if (rc != 0) {
        char why[80];
        snprintf(why, sizeof(why), "CreateCertificate not sent: %s", strerror(-rc));
        EVP_PKEY_free(t->key);
        free(t);
        cm_failed(cm, ci, why);
        return;
    }
    ci->inflight = true;
    cm->stats.inflight++;
}

void app_cert_manager_tick(struct app_cert_manager *cm)
{
    uint64_t now = mesh_env_now(cm->env);

    for (size_t i = 0; i < cm->n_ids && cm->stats.inflight < APP_CERT_MAX_INFLIGHT; i++) {
        struct cm_ident *ci = cm->ids[i];
        if (!ci->inflight && ci->next_ns <= now)
            cm_start(cm, ci);
    }
}

uint64_t app_cert_manager_next_deadline(const struct app_cert_manager *cm)
{
    uint64_t d = APP_CERT_NO_DEADLINE;

    if (cm->stats.inflight >= APP_CERT_MAX_INFLIGHT)
        return d; /* a completion frees a slot; the caller ticks then */
    for (size_t i = 0; i < cm->n_ids; i++)
        if (!cm->ids[i]->inflight && cm->ids[i]->next_ns < d)
            d = cm->ids[i]->next_ns;
    return d;
}

static bool cm_valid(const struct mesh_cert_bundle *b, uint64_t now_ns)
{
    int64_t now = (int64_t)(now_ns / 1000000000ull);
    return b != NULL && now >= mesh_identity_bundle_not_before(b) && now < mesh_identity_bundle_not_after(b);
}

const struct mesh_cert_bundle *app_cert_manager_get(void *u, const struct mesh_spiffe_id *id)
{
    struct app_cert_manager *cm = u;
    const struct mesh_cert_bundle *b = NULL;
    uint64_t now = mesh_env_now(cm->env);

    pthread_mutex_lock(&cm->lock);
    for (size_t i = 0; i < cm->n_ids; i++) {
        if (mesh_spiffe_eq(&cm->ids[i]->id, id)) {
            if (cm_valid(cm->ids[i]->bundle, now))
                b = mesh_identity_bundle_ref(cm->ids[i]->bundle);
            break;
        }
    }
    pthread_mutex_unlock(&cm->lock);
    return b;
}

static enum app_cert_state cm_state(const struct app_cert_manager *cm, const struct cm_ident *ci)
{
    if (cm_valid(ci->bundle, mesh_env_now(cm->env)))
        return APP_CERT_AVAILABLE;
    return ci->failed ? APP_CERT_UNAVAILABLE : APP_CERT_INITIALIZING;
}

int app_cert_manager_state(const struct app_cert_manager *cm, const struct mesh_spiffe_id *id, char *buf, size_t cap)
{
    const struct cm_ident *ci = cm_find(cm, id, NULL);
    enum app_cert_state st;

    if (ci == NULL)
        return -ENOENT;
    st = cm_state(cm, ci);
    if (buf != NULL && cap > 0) {
        if (st == APP_CERT_AVAILABLE)
            snprintf(buf, cap, "Available");
        else if (st == APP_CERT_UNAVAILABLE)
            snprintf(buf, cap, "Unavailable: %s", ci->err);
        else
            snprintf(buf, cap, "Initializing");
    }
    return (int)st;
}

int app_cert_manager_schedule(const struct app_cert_manager *cm, const struct mesh_spiffe_id *id, uint64_t *next_ns,
                              uint64_t *backoff_ns)
{
    const struct cm_ident *ci = cm_find(cm, id, NULL);

    if (ci == NULL)
        return -ENOENT;
    if (next_ns != NULL)
        *next_ns = ci->next_ns;
    if (backoff_ns != NULL)
        *backoff_ns = ci->backoff_ns;
    return 0;
}

const struct app_cert_manager_stats *app_cert_manager_stats(const struct app_cert_manager *cm)
{
    return &cm->stats;
}

/* ---- /config_dump ---- */

static json_t *cm_time_json(int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    char s[40];

    gmtime_r(&tt, &tm);
    strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(s);
}

/* The serial number as lower-case hex without leading zeros into out ("" when unreadable). */
static void cm_serial_hex(X509 *x, char *out, size_t cap)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    size_t k = 0, j = 0;

    if (hex != NULL) {
        while (hex[k] == '0' && hex[k + 1] != '\0')
            k++;
        for (; hex[k] != '\0' && j + 1 < cap; j++, k++)
            out[j] = (char)(hex[k] >= 'A' && hex[k] <= 'F' ? hex[k] - 'A' + 'a' : hex[k]);
    }
    out[j] = '\0';
    OPENSSL_free(hex);
    BN_free(bn);
}

/* One certificate as ztunnel shows it: pem (base64 of the PEM), serialNumber, validFrom, expirationTime. */
static json_t *cm_cert_json(X509 *x)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem = NULL, serial[MESH_IDENTITY_SERIAL_MAX_BYTES];
    unsigned char *b64 = NULL;
    long n = 0;
    int64_t nb = 0, na = 0;
    json_t *o;

    if (bio != NULL && PEM_write_bio_X509(bio, x) == 1)
        n = BIO_get_mem_data(bio, &pem);
    if (n > 0 && (b64 = malloc(((size_t)n + 2) / 3 * 4 + 1)) != NULL)
        EVP_EncodeBlock(b64, (const unsigned char *)pem, (int)n);
    cm_serial_hex(x, serial, sizeof(serial));
    (void)mesh_identity_asn1_time_to_unix(X509_get0_notBefore(x), &nb);
    (void)mesh_identity_asn1_time_to_unix(X509_get0_notAfter(x), &na);
    o = json_pack("{s:s, s:s, s:o, s:o}", "pem", b64 != NULL ? (const char *)b64 : "", "serialNumber", serial,
                  "validFrom", cm_time_json(nb), "expirationTime", cm_time_json(na));
    free(b64);
    BIO_free(bio);
    return o;
}

json_t *app_cert_manager_dump(const struct app_cert_manager *cm)
{
    json_t *arr = json_array();

    for (size_t i = 0; i < cm->n_ids; i++) {
        const struct cm_ident *ci = cm->ids[i];
        char uri[MESH_SPIFFE_URI_MAX_BYTES], state[CM_ERR_MAX + 20];
        json_t *chain = json_array(), *roots = json_array();

        (void)mesh_spiffe_format(&ci->id, uri, sizeof(uri));
        (void)app_cert_manager_state(cm, &ci->id, state, sizeof(state));
        if (ci->bundle != NULL) {
            STACK_OF(X509) *rest = mesh_identity_bundle_chain(ci->bundle);
            STACK_OF(X509) *rs = mesh_identity_bundle_roots(ci->bundle);
            json_array_append_new(chain, cm_cert_json(mesh_identity_bundle_leaf(ci->bundle)));
            for (int k = 0; k < sk_X509_num(rest); k++)
                json_array_append_new(chain, cm_cert_json(sk_X509_value(rest, k)));
            for (int k = 0; k < sk_X509_num(rs); k++)
                json_array_append_new(roots, cm_cert_json(sk_X509_value(rs, k)));
        }
        json_array_append_new(arr, json_pack("{s:s, s:s, s:o, s:o}", "identity", uri, "state", state, "certChain",
                                             chain, "rootCerts", roots));
    }
    return arr;
}

/* ---- local CA ---- */

static char *cm_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *p = NULL;
    long n;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (p = malloc((size_t)n + 1)) != NULL) {
        if (fread(p, 1, (size_t)n, f) != (size_t)n) {
            free(p);
            p = NULL;
        } else {
            p[n] = '\0';
            *len = (size_t)n;
        }
    }
    fclose(f);
    return p;
}

static int cm_write_file(const char *path, const char *data, size_t len, mode_t mode)
{
    char tmp[4096];
    int fd, rc = 0;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    if (write(fd, data, len) != (ssize_t)len || fsync(fd) != 0)
        rc = -EIO;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0)
        unlink(tmp);
    return rc;
}

struct mesh_local_ca *app_cert_local_ca_open(const struct mesh_env *env, const struct app_local_ca_config *cfg,
                                             char *why, size_t why_cap, int *err)
{
    char cert_path[4096], key_path[4096];
    char *cert = NULL, *key = NULL, *roots = NULL;
    size_t cl = 0, kl = 0, rl = 0;
    struct mesh_local_ca *ca = NULL;
    bool gen = cfg->cert == NULL;

    if (gen) {
        snprintf(cert_path, sizeof(cert_path), "%s/ca-cert.pem", cfg->state_dir);
        snprintf(key_path, sizeof(key_path), "%s/ca-key.pem", cfg->state_dir);
    } else {
        snprintf(cert_path, sizeof(cert_path), "%s", cfg->cert);
        snprintf(key_path, sizeof(key_path), "%s", cfg->key);
    }
    cert = cm_slurp(cert_path, &cl);
    key = cm_slurp(key_path, &kl);
    if (cert != NULL && key != NULL) {
        if (cfg->roots != NULL && (roots = cm_slurp(cfg->roots, &rl)) == NULL) {
            *err = -ENOENT;
            snprintf(why, why_cap, "%s: cannot read", cfg->roots);
            goto out;
        }
        ca = mesh_local_ca_from_pem(env, cert, cl, key, kl, roots, rl, err);
        if (ca == NULL)
            snprintf(why, why_cap, "%s / %s: not a usable CA certificate and key (%s)", cert_path, key_path,
                     strerror(-*err));
        goto out;
    }
    if (!gen) {
        *err = -ENOENT;
        snprintf(why, why_cap, "%s: cannot read", cert == NULL ? cert_path : key_path);
        goto out;
    }
    /* first start: generate and persist */
    ca = mesh_local_ca_generate(env, cfg->trust_domain, mesh_env_now(env), 0, err);
    if (ca == NULL) {
        snprintf(why, why_cap, "cannot generate a CA (%s)", strerror(-*err));
        goto out;
    }
    {
        char *cp = NULL, *kp = NULL;
        size_t cpl = 0, kpl = 0;
        int rc;

        if (mkdir(cfg->state_dir, 0700) != 0 && errno != EEXIST) {
            rc = -errno;
        } else if (mesh_local_ca_cert_pem(ca, &cp, &cpl) != 0 || mesh_local_ca_key_pem(ca, &kp, &kpl) != 0) {
            rc = -ENOMEM;
        } else {
            rc = cm_write_file(key_path, kp, kpl, 0600);
            if (rc == 0)
                rc = cm_write_file(cert_path, cp, cpl, 0644);
        }
        mesh_env_free(env, cp);
        mesh_env_free(env, kp);
        if (rc != 0) {
            snprintf(why, why_cap, "%s: cannot persist the generated CA (%s)", cfg->state_dir, strerror(-rc));
            mesh_local_ca_free(ca);
            ca = NULL;
            *err = rc;
        }
    }
out:
    free(cert);
    free(key);
    free(roots);
    return ca;
}
