/* SPDX-License-Identifier: Apache-2.0 */
/* appliance/istiod.c - the xDS agent and the istiod certificate manager behind one poll interface (see istiod.h). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appliance/cert_manager.h"
#include "appliance/config_xds.h"
#include "appliance/istiod.h"
#include "appliance/log.h"
#include "appliance/xds_agent.h"
#include "mesh/xds_convert.h"

#define ISTIOD_LOOKUP_QUEUE 64   /* asked for, not yet subscribed */
#define ISTIOD_ASKED_MAX 1024     /* subscribed, no answer yet */
#define ISTIOD_UNKNOWN_MAX 1024   /* answered "nobody has it" (a removal), most recent kept */
#define ISTIOD_UNKNOWN_TTL_NS (60ull * 1000000000ull)

struct istiod_unknown {
    struct mesh_addr ip;
    uint64_t at_ns;
};

struct app_istiod {
    const struct mesh_env *env;
    bool on_demand;
    pthread_mutex_t lookup_lock; /* guards the three sets below and lookups_dropped */
    struct mesh_addr lookups[ISTIOD_LOOKUP_QUEUE]; /* to subscribe at the next process() */
    size_t n_lookups;
    struct mesh_addr asked[ISTIOD_ASKED_MAX]; /* subscribed (or about to be), not answered yet */
    size_t n_asked;
    struct istiod_unknown unknown[ISTIOD_UNKNOWN_MAX]; /* a ring */
    size_t n_unknown, next_unknown;
    uint64_t lookups_sent, lookups_dropped;
    char node_name[128];
    struct app_xds_agent *agent;
    struct app_cert_manager *certs;        /* NULL: the local CA signs */
    const struct mesh_xds_state *pending; /* newest snapshot not taken (one reference) */
    uint64_t applied;                      /* generation the backend built its mesh side from */
};

static bool istiod_in(const struct mesh_addr *set, size_t n, const struct mesh_addr *ip, size_t *at)
{
    for (size_t i = 0; i < n; i++) {
        if (mesh_addr_ip_eq(&set[i], ip)) {
            if (at != NULL)
                *at = i;
            return true;
        }
    }
    return false;
}

/* Answered "nobody has it" less than ISTIOD_UNKNOWN_TTL_NS ago. Lock held. */
static bool istiod_known_unknown(const struct app_istiod *x, const struct mesh_addr *ip, uint64_t now)
{
    for (size_t i = 0; i < x->n_unknown; i++)
        if (mesh_addr_ip_eq(&x->unknown[i].ip, ip) && now - x->unknown[i].at_ns < ISTIOD_UNKNOWN_TTL_NS)
            return true;
    return false;
}

enum mesh_proxy_lookup app_istiod_lookup(struct app_istiod *x, const struct mesh_addr *ip)
{
    enum mesh_proxy_lookup r = MESH_LOOKUP_PENDING;
    uint64_t now = mesh_env_now(x->env);

    if (!x->on_demand)
        return MESH_LOOKUP_UNKNOWN;
    pthread_mutex_lock(&x->lookup_lock);
    if (istiod_known_unknown(x, ip, now)) {
        r = MESH_LOOKUP_UNKNOWN;
    } else if (!istiod_in(x->asked, x->n_asked, ip, NULL)) {
        if (x->n_asked < ISTIOD_ASKED_MAX && x->n_lookups < ISTIOD_LOOKUP_QUEUE) {
            x->asked[x->n_asked++] = *ip;
            x->lookups[x->n_lookups++] = *ip;
        } else {
            x->lookups_dropped++; /* cannot ask: nothing to wait for */
            r = MESH_LOOKUP_UNKNOWN;
        }
    }
    pthread_mutex_unlock(&x->lookup_lock);
    return r;
}

/* The agent saw a removal: an on-demand answer "nobody has /<IP>" ends the wait for that address. */
static void istiod_on_removed(void *u, enum mesh_xds_type t, const char *name)
{
    struct app_istiod *x = u;
    const char *slash = strrchr(name, '/');
    struct mesh_addr ip;
    size_t at;

    if (t != MESH_XDS_TYPE_ADDRESS || slash == NULL || mesh_addr_parse_ip(slash + 1, &ip) != 0)
        return;
    pthread_mutex_lock(&x->lookup_lock);
    if (istiod_in(x->asked, x->n_asked, &ip, &at)) {
        x->asked[at] = x->asked[--x->n_asked];
        x->unknown[x->next_unknown] = (struct istiod_unknown){ip, mesh_env_now(x->env)};
        x->next_unknown = (x->next_unknown + 1) % ISTIOD_UNKNOWN_MAX;
        if (x->n_unknown < ISTIOD_UNKNOWN_MAX)
            x->n_unknown++;
    }
    pthread_mutex_unlock(&x->lookup_lock);
}

/* Addresses a snapshot now knows are answered: they leave the asked set. */
static void istiod_answered(struct app_istiod *x, const struct mesh_workloads *ws)
{
    pthread_mutex_lock(&x->lookup_lock);
    for (size_t i = x->n_asked; i-- > 0;)
        if (mesh_workloads_find_by_ip(ws, &x->asked[i]) != NULL ||
            mesh_workloads_find_service_by_vip(ws, &x->asked[i]) != NULL)
            x->asked[i] = x->asked[--x->n_asked];
    pthread_mutex_unlock(&x->lookup_lock);
}

static void istiod_on_snapshot(void *u, const struct mesh_xds_state *snapshot)
{
    struct app_istiod *x = u;

    mesh_xds_state_unref(x->pending);
    x->pending = snapshot;
    if (x->on_demand)
        istiod_answered(x, snapshot->workloads);
    if (x->certs != NULL) {
        if (app_cert_manager_sync(x->certs, snapshot->workloads, x->node_name) < 0)
            APP_LOG_ERR("xds", "snapshot %llu: out of memory tracking workload identities",
                        (unsigned long long)snapshot->generation);
    } /* the requests start in app_istiod_process, outside the agent's upcall */
}

struct app_istiod *app_istiod_new(const struct mesh_env *env, const struct app_config *cfg, char *err,
                                  size_t errlen)
{
    const struct app_xds_config *xc = app_cfg_xds(cfg);
    struct app_istiod *x;
    int rc = 0;

    if (xc == NULL) {
        snprintf(err, errlen, "no xds group in the config");
        return NULL;
    }
    x = calloc(1, sizeof(*x));
    if (x == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    x->env = env;
    x->on_demand = xc->on_demand;
    pthread_mutex_init(&x->lookup_lock, NULL);
    snprintf(x->node_name, sizeof(x->node_name), "%s", xc->node_name);
    x->agent = app_xds_agent_new(env, xc, istiod_on_snapshot, x, &rc);
    if (x->agent == NULL) {
        snprintf(err, errlen, "cannot start the istiod client (%s)", strerror(-rc));
        goto fail;
    }
    if (x->on_demand)
        app_xds_agent_on_removed(x->agent, istiod_on_removed, x);
    if (app_cfg_certs_from_istiod(cfg)) {
        struct app_cert_ca ca;
        app_xds_agent_ca_transport(x->agent, &ca);
        x->certs = app_cert_manager_new(env, &ca, NULL, xc->cert_ttl_s, &rc);
        if (x->certs == NULL) {
            snprintf(err, errlen, "cannot start the certificate manager (%s)", strerror(-rc));
            goto fail;
        }
    }
    return x;
fail:
    app_istiod_free(x);
    return NULL;
}

void app_istiod_free(struct app_istiod *x)
{
    if (x == NULL)
        return;
    /* the agent completes outstanding CA calls (CANCELLED) while the manager still exists */
    app_xds_agent_free(x->agent);
    app_cert_manager_free(x->certs);
    mesh_xds_state_unref(x->pending);
    pthread_mutex_destroy(&x->lookup_lock);
    free(x);
}

int app_istiod_fds(const struct app_istiod *x, struct pollfd *fds, unsigned max)
{
    return app_xds_agent_fds(x->agent, fds, max);
}

int app_istiod_timeout_ms(const struct app_istiod *x)
{
    int t = app_xds_agent_timeout_ms(x->agent);

    if (x->certs != NULL) {
        uint64_t due = app_cert_manager_next_deadline(x->certs), now = mesh_env_now(x->env);
        if (due != APP_CERT_NO_DEADLINE) {
            uint64_t ms = due > now ? (due - now + 999999) / 1000000 : 0;
            if (t < 0 || ms < (uint64_t)t)
                t = ms > 60000 ? 60000 : (int)ms;
        }
    }
    return t;
}

/* Subscribe to every address asked for since the last call: "network/IP", the default network being "". */
static void istiod_send_lookups(struct app_istiod *x)
{
    struct mesh_addr batch[ISTIOD_LOOKUP_QUEUE];
    size_t n;

    pthread_mutex_lock(&x->lookup_lock);
    n = x->n_lookups;
    memcpy(batch, x->lookups, n * sizeof(batch[0]));
    x->n_lookups = 0;
    pthread_mutex_unlock(&x->lookup_lock);
    for (size_t i = 0; i < n; i++) {
        char ip[64], name[80];
        if (mesh_addr_format(&batch[i], false, ip, sizeof(ip)) < 0)
            continue;
        snprintf(name, sizeof(name), "/%s", ip);
        if (app_xds_agent_lookup(x->agent, name) == 0) {
            x->lookups_sent++;
            APP_LOG_DEBUG("xds", "on-demand lookup of %s", name);
        }
    }
}

void app_istiod_process(struct app_istiod *x, const struct pollfd *fds, unsigned n)
{
    if (x->on_demand)
        istiod_send_lookups(x); /* before the agent runs: it sends them now */
    app_xds_agent_process(x->agent, fds, n);
    if (x->certs != NULL)
        app_cert_manager_tick(x->certs);
}

const struct mesh_xds_state *app_istiod_take_snapshot(struct app_istiod *x)
{
    const struct mesh_xds_state *s = x->pending;

    x->pending = NULL;
    return s;
}

void app_istiod_applied(struct app_istiod *x, uint64_t gen)
{
    x->applied = gen;
}

struct app_cert_manager *app_istiod_certs(const struct app_istiod *x)
{
    return x->certs;
}

bool app_istiod_ready(const struct app_istiod *x)
{
    return app_xds_agent_ready(x->agent);
}

const char *app_istiod_pending(const struct app_istiod *x)
{
    return app_xds_agent_pending(x->agent);
}

json_t *app_istiod_dump_json(const struct app_istiod *x)
{
    const struct app_xds_agent_status *st = app_xds_agent_status(x->agent);
    json_t *types = json_object(), *root;

    for (int t = 0; t < MESH_XDS_TYPE_COUNT; t++)
        json_object_set_new(types, mesh_xds_type_url((enum mesh_xds_type)t),
                            json_pack("{s:s, s:s}", "version", st->versions[t], "last_nack", st->last_nack[t]));
    root = json_pack("{s:b, s:b, s:s, s:I, s:I, s:I, s:I, s:o, s:s}", "connected", st->connected, "ready",
                     st->ready, "last_error", st->last_error, "connects", (json_int_t)st->connects,
                     "connect_failures", (json_int_t)st->connect_failures, "snapshot_published",
                     (json_int_t)st->generation, "snapshot_applied", (json_int_t)x->applied, "types", types,
                     "certificates_from", x->certs != NULL ? "istiod" : "local_ca");
    json_object_set_new(root, "on_demand", json_boolean(x->on_demand));
    if (x->on_demand) {
        pthread_mutex_t *lock = (pthread_mutex_t *)(uintptr_t)&x->lookup_lock; /* the dump only reads */
        pthread_mutex_lock(lock);
        json_object_set_new(root, "lookups",
                            json_pack("{s:I, s:I, s:I, s:I}", "sent", (json_int_t)x->lookups_sent, "dropped",
                                      (json_int_t)x->lookups_dropped, "waiting", (json_int_t)x->n_asked,
                                      "answered_unknown", (json_int_t)x->n_unknown));
        pthread_mutex_unlock(lock);
    }
    if (x->certs != NULL) {
        const struct app_cert_manager_stats *cs = app_cert_manager_stats(x->certs);
        json_object_set_new(root, "ca",
                            json_pack("{s:I, s:I, s:I, s:I, s:I}", "requests", (json_int_t)cs->requests, "issued",
                                      (json_int_t)cs->issued, "failures", (json_int_t)cs->failures, "rotations",
                                      (json_int_t)cs->rotations, "inflight", (json_int_t)cs->inflight));
    }
    return root;
}

void app_istiod_metrics_render(struct mgmt_prom *prom, const struct app_istiod *x)
{
    app_xds_agent_metrics_render(prom, x->agent);
}
