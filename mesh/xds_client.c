/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/xds_client.c - Delta ADS state machine (invariants in xds_client.h; ztunnel-wire-facts.md section 3.4). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "mesh/xds_client.h"
#include "proto/base.pb-c.h"
#include "proto/discovery.pb-c.h"
#include "proto/status.pb-c.h"
#include "proto/struct.pb-c.h"

#define XDS_LOG_MODULE "mesh.xds"
#define XDS_TABLE_INITIAL_BUCKETS 64
#define XDS_NODE_FIELD_TAG 0x0a /* DeltaDiscoveryRequest.node: field 1, wire type 2 */
#define XDS_VARINT_MAX_BYTES 10

enum xds_state {
    XDS_IDLE,      /* never streamed */
    XDS_STREAMING, /* between stream_start and stream_end */
    XDS_WAITING,   /* reconnect scheduled */
};

/* name -> version of one accepted resource */
struct xds_rec {
    struct xds_rec *next;
    uint32_t hash;
    char *version;
    char name[];
};

struct xds_table {
    struct xds_rec **b;
    size_t nb;
    size_t n;
};

/* one serialized request waiting to be taken */
struct xds_req {
    struct xds_req *next;
    size_t len;
    uint8_t data[];
};

/* an on-demand subscription, kept for reconnects */
struct xds_sub {
    struct xds_sub *next;
    char name[];
};

struct mesh_xds_client {
    const struct mesh_env *env;
    struct mesh_xds_handler h;
    void *u;
    bool on_demand;
    uint8_t *node_field; /* "node" field bytes (tag, length, Node) prepended to each type's first request */
    size_t node_field_len;
    struct xds_table recs[MESH_XDS_TYPE_COUNT];
    bool ready[MESH_XDS_TYPE_COUNT];
    struct xds_req *q_head;
    struct xds_req **q_tail;
    struct xds_sub *subs;
    enum xds_state state;
    uint64_t reconnect_at_ns;
    uint64_t backoff_ns;
    struct mesh_xds_stats stats;
};

static const char *const xds_type_urls[MESH_XDS_TYPE_COUNT] = {
    [MESH_XDS_TYPE_ADDRESS] = MESH_XDS_TYPE_URL_ADDRESS,
    [MESH_XDS_TYPE_AUTHORIZATION] = MESH_XDS_TYPE_URL_AUTHORIZATION,
};

static const char *const xds_term_labels[MESH_XDS_TERM_COUNT] = {
    [MESH_XDS_TERM_CONNECTION_ERROR] = "ConnectionError",
    [MESH_XDS_TERM_ERROR] = "Error",
    [MESH_XDS_TERM_RECONNECT] = "Reconnect",
    [MESH_XDS_TERM_COMPLETE] = "Complete",
};

const char *mesh_xds_type_url(enum mesh_xds_type t)
{
    return (unsigned)t < MESH_XDS_TYPE_COUNT ? xds_type_urls[t] : "";
}

const char *mesh_xds_term_label(enum mesh_xds_term t)
{
    return (unsigned)t < MESH_XDS_TERM_COUNT ? xds_term_labels[t] : "";
}

enum mesh_xds_type mesh_xds_type_from_url(const char *url)
{
    for (int t = 0; t < MESH_XDS_TYPE_COUNT; t++)
        if (url != NULL && strcmp(url, xds_type_urls[t]) == 0)
            return (enum mesh_xds_type)t;
    return MESH_XDS_TYPE_COUNT;
}

/* ====================================================================================================== */
/* memory                                                                                                 */
/* ====================================================================================================== */

static void *xds_pb_alloc(void *u, size_t n)
{
    return mesh_env_alloc(u, n != 0 ? n : 1);
}

static void xds_pb_free(void *u, void *p)
{
    mesh_env_free(u, p);
}

void mesh_xds_pb_allocator(const struct mesh_env *env, struct ProtobufCAllocator *out)
{
    out->alloc = xds_pb_alloc;
    out->free = xds_pb_free;
    out->allocator_data = (void *)(uintptr_t)env;
}

/* protobuf-c takes char * for strings it only reads when packing. */
static char *xds_str(const char *s)
{
    return (char *)(uintptr_t)(s != NULL ? s : "");
}

static char *xds_strdup(const struct mesh_env *env, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = mesh_env_alloc(env, n);

    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

/* ====================================================================================================== */
/* records: name -> version, chained hash table                                                           */
/* ====================================================================================================== */

static uint32_t xds_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (; *s != '\0'; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static struct xds_rec *xds_table_find(const struct xds_table *t, const char *name, uint32_t h, struct xds_rec ***link)
{
    struct xds_rec **pp;

    if (t->nb == 0)
        return NULL;
    for (pp = &t->b[h & (t->nb - 1)]; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->hash == h && strcmp((*pp)->name, name) == 0) {
            if (link != NULL)
                *link = pp;
            return *pp;
        }
    }
    return NULL;
}

static int xds_table_grow(const struct mesh_env *env, struct xds_table *t)
{
    size_t nb = t->nb != 0 ? t->nb * 2 : XDS_TABLE_INITIAL_BUCKETS;
    struct xds_rec **b = mesh_env_calloc(env, nb * sizeof(*b));

    if (b == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < t->nb; i++) {
        struct xds_rec *r = t->b[i], *next;
        for (; r != NULL; r = next) {
            next = r->next;
            r->next = b[r->hash & (nb - 1)];
            b[r->hash & (nb - 1)] = r;
        }
    }
    mesh_env_free(env, t->b);
    t->b = b;
    t->nb = nb;
    return 0;
}

static int xds_table_put(const struct mesh_env *env, struct xds_table *t, const char *name, const char *version)
{
    uint32_t h = xds_hash(name);
    struct xds_rec *r = xds_table_find(t, name, h, NULL);
    char *v = xds_strdup(env, version);
    size_t n;

    if (v == NULL)
        return -ENOMEM;
    if (r != NULL) {
        mesh_env_free(env, r->version);
        r->version = v;
        return 0;
    }
    if (t->n >= t->nb && xds_table_grow(env, t) != 0) {
        mesh_env_free(env, v);
        return -ENOMEM;
    }
    n = strlen(name) + 1;
    r = mesh_env_alloc(env, sizeof(*r) + n);
    if (r == NULL) {
        mesh_env_free(env, v);
        return -ENOMEM;
    }
    memcpy(r->name, name, n);
    r->hash = h;
    r->version = v;
    r->next = t->b[h & (t->nb - 1)];
    t->b[h & (t->nb - 1)] = r;
    t->n++;
    return 0;
}

static void xds_table_del(const struct mesh_env *env, struct xds_table *t, const char *name)
{
    struct xds_rec **link = NULL;
    struct xds_rec *r = xds_table_find(t, name, xds_hash(name), &link);

    if (r == NULL)
        return;
    *link = r->next;
    mesh_env_free(env, r->version);
    mesh_env_free(env, r);
    t->n--;
}

static void xds_table_fini(const struct mesh_env *env, struct xds_table *t)
{
    for (size_t i = 0; i < t->nb; i++) {
        struct xds_rec *r = t->b[i], *next;
        for (; r != NULL; r = next) {
            next = r->next;
            mesh_env_free(env, r->version);
            mesh_env_free(env, r);
        }
    }
    mesh_env_free(env, t->b);
    memset(t, 0, sizeof(*t));
}

/* ====================================================================================================== */
/* request queue                                                                                          */
/* ====================================================================================================== */

static void xds_queue_clear(struct mesh_xds_client *c)
{
    struct xds_req *r = c->q_head, *next;

    for (; r != NULL; r = next) {
        next = r->next;
        mesh_env_free(c->env, r);
    }
    c->q_head = NULL;
    c->q_tail = &c->q_head;
}

/* Serialize req (with the Node field in front when with_node) and queue it. */
static int xds_queue_request(struct mesh_xds_client *c, const Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *req,
                             bool with_node)
{
    size_t extra = with_node ? c->node_field_len : 0;
    size_t n = protobuf_c_message_get_packed_size(&req->base);
    struct xds_req *r = mesh_env_alloc(c->env, sizeof(*r) + extra + n);

    if (r == NULL)
        return MESH_ERR_NOMEM;
    if (extra != 0)
        memcpy(r->data, c->node_field, extra);
    protobuf_c_message_pack(&req->base, r->data + extra);
    r->len = extra + n;
    r->next = NULL;
    *c->q_tail = r;
    c->q_tail = &r->next;
    return MESH_OK;
}

int mesh_xds_client_next_request(struct mesh_xds_client *c, struct mesh_buf *out)
{
    struct xds_req *r = c->q_head;
    int rc;

    if (r == NULL)
        return 0;
    rc = mesh_buf_append(out, r->data, r->len);
    if (rc != 0)
        return rc;
    c->q_head = r->next;
    if (c->q_head == NULL)
        c->q_tail = &c->q_head;
    mesh_env_free(c->env, r);
    c->stats.requests++;
    return 1;
}

bool mesh_xds_client_want_write(const struct mesh_xds_client *c)
{
    return c->q_head != NULL;
}

/* ====================================================================================================== */
/* Node (section 3.3)                                                                                     */
/* ====================================================================================================== */

static size_t xds_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;

    do {
        out[n++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        v >>= 7;
    } while (v != 0);
    return n;
}

struct xds_node_build {
    Google__Protobuf__Struct__FieldsEntry *entries;
    Google__Protobuf__Struct__FieldsEntry **ptrs;
    Google__Protobuf__Value *strvals;
    Google__Protobuf__Value **unpacked;
    size_t n;
};

static void xds_node_set(struct xds_node_build *nb, const char *key, Google__Protobuf__Value *v)
{
    for (size_t i = 0; i < nb->n; i++) {
        if (strcmp(nb->entries[i].key, key) == 0) {
            nb->entries[i].value = v;
            return;
        }
    }
    google__protobuf__struct__fields_entry__init(&nb->entries[nb->n]);
    nb->entries[nb->n].key = xds_str(key);
    nb->entries[nb->n].value = v;
    nb->ptrs[nb->n] = &nb->entries[nb->n];
    nb->n++;
}

/* Build the serialized "node" field once: id ztunnel~IP~POD.NS~NS.svc.cluster.local, metadata NAME, NAMESPACE,
 * INSTANCE_IPS, NODE_NAME, then the extra entries. */
static int xds_node_build(struct mesh_xds_client *c, const struct mesh_xds_client_cfg *cfg)
{
    static const char fmt[] = "ztunnel~%s~%s.%s~%s.svc.cluster.local";
    const char *ip =
        cfg->instance_ip != NULL && cfg->instance_ip[0] != '\0' ? cfg->instance_ip : MESH_XDS_DEFAULT_INSTANCE_IP;
    const char *pod = xds_str(cfg->pod_name), *ns = xds_str(cfg->pod_namespace), *node = xds_str(cfg->node_name);
    size_t total = 4 + cfg->n_meta;
    struct xds_node_build nb = {0};
    Envoy__Config__Core__V3__Node msg;
    Google__Protobuf__Struct md;
    struct ProtobufCAllocator pa;
    char *id = NULL;
    int len, rc = MESH_ERR_NOMEM;
    size_t packed;

    envoy__config__core__v3__node__init(&msg);
    google__protobuf__struct__init(&md);
    mesh_xds_pb_allocator(c->env, &pa);
    len = snprintf(NULL, 0, fmt, ip, pod, ns, ns);
    id = mesh_env_alloc(c->env, (size_t)len + 1);
    nb.entries = mesh_env_calloc(c->env, total * sizeof(*nb.entries));
    nb.ptrs = mesh_env_calloc(c->env, total * sizeof(*nb.ptrs));
    nb.strvals = mesh_env_calloc(c->env, total * sizeof(*nb.strvals));
    nb.unpacked = mesh_env_calloc(c->env, total * sizeof(*nb.unpacked));
    if (id == NULL || nb.entries == NULL || nb.ptrs == NULL || nb.strvals == NULL || nb.unpacked == NULL)
        goto out;
    snprintf(id, (size_t)len + 1, fmt, ip, pod, ns, ns);

    {
        const char *keys[4] = {"NAME", "NAMESPACE", "INSTANCE_IPS", "NODE_NAME"};
        const char *vals[4] = {pod, ns, ip, node};
        for (size_t i = 0; i < 4; i++) {
            google__protobuf__value__init(&nb.strvals[i]);
            nb.strvals[i].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
            nb.strvals[i].string_value = xds_str(vals[i]);
            xds_node_set(&nb, keys[i], &nb.strvals[i]);
        }
    }
    for (size_t i = 0; i < cfg->n_meta; i++) {
        const struct mesh_xds_meta *m = &cfg->meta[i];
        Google__Protobuf__Value *v = &nb.strvals[4 + i];
        if (m->key == NULL || (m->string_value == NULL) == (m->value_pb == NULL)) {
            rc = MESH_ERR_CONFIG;
            goto out;
        }
        if (m->value_pb != NULL) {
            v = google__protobuf__value__unpack(&pa, m->value_pb_len, m->value_pb);
            if (v == NULL) {
                rc = MESH_ERR_CONFIG;
                goto out;
            }
            nb.unpacked[i] = v;
        } else {
            google__protobuf__value__init(v);
            v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
            v->string_value = xds_str(m->string_value);
        }
        xds_node_set(&nb, m->key, v);
    }
    md.n_fields = nb.n;
    md.fields = nb.ptrs;
    msg.id = id;
    msg.metadata = &md;
    packed = protobuf_c_message_get_packed_size(&msg.base);
    c->node_field = mesh_env_alloc(c->env, 1 + XDS_VARINT_MAX_BYTES + packed);
    if (c->node_field == NULL)
        goto out;
    c->node_field[0] = XDS_NODE_FIELD_TAG;
    c->node_field_len = 1 + xds_varint(c->node_field + 1, packed);
    protobuf_c_message_pack(&msg.base, c->node_field + c->node_field_len);
    c->node_field_len += packed;
    rc = MESH_OK;
out:
    if (nb.unpacked != NULL)
        for (size_t i = 0; i < total; i++)
            if (nb.unpacked[i] != NULL)
                google__protobuf__value__free_unpacked(nb.unpacked[i], &pa);
    mesh_env_free(c->env, nb.unpacked);
    mesh_env_free(c->env, nb.strvals);
    mesh_env_free(c->env, nb.ptrs);
    mesh_env_free(c->env, nb.entries);
    mesh_env_free(c->env, id);
    return rc;
}

/* ====================================================================================================== */
/* lifecycle                                                                                              */
/* ====================================================================================================== */

struct mesh_xds_client *mesh_xds_client_new(const struct mesh_env *env, const struct mesh_xds_client_cfg *cfg,
                                            const struct mesh_xds_handler *h, void *u, int *err)
{
    struct mesh_xds_client *c;
    int rc;

    if (h == NULL || h->on_resource == NULL || h->on_removed == NULL || cfg == NULL) {
        *err = MESH_ERR_CONFIG;
        return NULL;
    }
    c = mesh_env_calloc(env, sizeof(*c));
    if (c == NULL) {
        *err = MESH_ERR_NOMEM;
        return NULL;
    }
    c->env = env;
    c->h = *h;
    c->u = u;
    c->on_demand = cfg->on_demand;
    c->q_tail = &c->q_head;
    c->state = XDS_IDLE;
    c->backoff_ns = MESH_XDS_BACKOFF_INITIAL_NS;
    rc = xds_node_build(c, cfg);
    if (rc != MESH_OK) {
        mesh_xds_client_free(c);
        *err = rc;
        return NULL;
    }
    *err = MESH_OK;
    return c;
}

void mesh_xds_client_free(struct mesh_xds_client *c)
{
    struct xds_sub *s, *next;

    if (c == NULL)
        return;
    xds_queue_clear(c);
    for (int t = 0; t < MESH_XDS_TYPE_COUNT; t++)
        xds_table_fini(c->env, &c->recs[t]);
    for (s = c->subs; s != NULL; s = next) {
        next = s->next;
        mesh_env_free(c->env, s);
    }
    mesh_env_free(c->env, c->node_field);
    mesh_env_free(c->env, c);
}

/* ====================================================================================================== */
/* stream start: initial requests (section 3.4)                                                           */
/* ====================================================================================================== */

static int xds_queue_initial(struct mesh_xds_client *c, enum mesh_xds_type t)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest req;
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry *ents = NULL;
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry **ptrs = NULL;
    const struct xds_table *tab = &c->recs[t];
    char *star[1] = {xds_str("*")};
    size_t k = 0;
    int rc;

    envoy__service__discovery__v3__delta_discovery_request__init(&req);
    req.type_url = xds_str(xds_type_urls[t]);
    if (tab->n != 0) {
        ents = mesh_env_alloc(c->env, tab->n * sizeof(*ents));
        ptrs = mesh_env_alloc(c->env, tab->n * sizeof(*ptrs));
        if (ents == NULL || ptrs == NULL) {
            mesh_env_free(c->env, ents);
            mesh_env_free(c->env, ptrs);
            return MESH_ERR_NOMEM;
        }
        for (size_t i = 0; i < tab->nb; i++) {
            for (const struct xds_rec *r = tab->b[i]; r != NULL; r = r->next) {
                envoy__service__discovery__v3__delta_discovery_request__initial_resource_versions_entry__init(&ents[k]);
                ents[k].key = xds_str(r->name);
                ents[k].value = r->version;
                ptrs[k] = &ents[k];
                k++;
            }
        }
        req.n_initial_resource_versions = k;
        req.initial_resource_versions = ptrs;
    }
    if (c->on_demand && t == MESH_XDS_TYPE_ADDRESS) {
        req.n_resource_names_subscribe = 1;
        req.resource_names_subscribe = star;
        req.n_resource_names_unsubscribe = 1;
        req.resource_names_unsubscribe = star;
    }
    rc = xds_queue_request(c, &req, true);
    mesh_env_free(c->env, ents);
    mesh_env_free(c->env, ptrs);
    return rc;
}

static int xds_queue_subscribe(struct mesh_xds_client *c, const char *name)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest req;
    char *names[1] = {xds_str(name)};

    envoy__service__discovery__v3__delta_discovery_request__init(&req);
    req.type_url = xds_str(MESH_XDS_TYPE_URL_ADDRESS);
    req.n_resource_names_subscribe = 1;
    req.resource_names_subscribe = names;
    return xds_queue_request(c, &req, false);
}

int mesh_xds_client_stream_start(struct mesh_xds_client *c)
{
    int rc = MESH_OK;

    if (c->state == XDS_STREAMING)
        return MESH_ERR_STATE;
    xds_queue_clear(c);
    c->state = XDS_STREAMING;
    c->stats.streams_started++;
    for (int t = 0; t < MESH_XDS_TYPE_COUNT && rc == MESH_OK; t++)
        rc = xds_queue_initial(c, (enum mesh_xds_type)t);
    for (const struct xds_sub *s = c->subs; s != NULL && rc == MESH_OK; s = s->next)
        rc = xds_queue_subscribe(c, s->name);
    if (rc != MESH_OK)
        xds_queue_clear(c);
    MESH_LOG(c->env, MESH_LOG_INFO, XDS_LOG_MODULE, "stream %llu started (%zu addresses, %zu policies held)",
             (unsigned long long)c->stats.streams_started, c->recs[MESH_XDS_TYPE_ADDRESS].n,
             c->recs[MESH_XDS_TYPE_AUTHORIZATION].n);
    return rc;
}

int mesh_xds_client_subscribe(struct mesh_xds_client *c, const char *name)
{
    struct xds_sub *s;
    size_t n;

    if (!c->on_demand)
        return MESH_ERR_STATE;
    for (s = c->subs; s != NULL; s = s->next)
        if (strcmp(s->name, name) == 0)
            break;
    if (s == NULL) {
        n = strlen(name) + 1;
        s = mesh_env_alloc(c->env, sizeof(*s) + n);
        if (s == NULL)
            return MESH_ERR_NOMEM;
        memcpy(s->name, name, n);
        s->next = c->subs;
        c->subs = s;
    }
    return c->state == XDS_STREAMING ? xds_queue_subscribe(c, name) : MESH_OK;
}

/* ====================================================================================================== */
/* responses: apply, then ACK/NACK (section 3.4)                                                          */
/* ====================================================================================================== */

/* Append "name: reason" to the NACK text, "; "-separated; text past the cap is dropped. */
static void xds_nack_add(struct mesh_buf *nack, const char *name, const char *reason)
{
    char one[MESH_XDS_REASON_MAX_BYTES];
    int n = snprintf(one, sizeof(one), "%s%s: %s", mesh_buf_len(nack) != 0 ? "; " : "", name, reason);

    if (n < 0)
        return;
    if ((size_t)n >= sizeof(one))
        n = (int)sizeof(one) - 1;
    if ((size_t)n > mesh_buf_room(nack))
        n = (int)mesh_buf_room(nack);
    (void)mesh_buf_append(nack, one, (size_t)n);
}

static int xds_queue_answer(struct mesh_xds_client *c, const char *type_url, const char *nonce, struct mesh_buf *nack)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest req;
    Google__Rpc__Status st;
    char *msg = NULL;
    int rc;

    envoy__service__discovery__v3__delta_discovery_request__init(&req);
    google__rpc__status__init(&st);
    req.type_url = xds_str(type_url);
    req.response_nonce = xds_str(nonce);
    if (mesh_buf_len(nack) != 0) {
        msg = mesh_env_alloc(c->env, mesh_buf_len(nack) + 1);
        if (msg == NULL)
            return MESH_ERR_NOMEM;
        memcpy(msg, mesh_buf_data(nack), mesh_buf_len(nack));
        msg[mesh_buf_len(nack)] = '\0';
        st.message = msg;
        req.error_detail = &st;
    }
    rc = xds_queue_request(c, &req, false);
    mesh_env_free(c->env, msg);
    return rc;
}

int mesh_xds_client_on_response(struct mesh_xds_client *c, const uint8_t *msg, size_t len)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *resp;
    struct ProtobufCAllocator pa;
    struct mesh_buf nack;
    enum mesh_xds_type t;
    uint64_t bytes = 0;
    int rc;

    if (c->state != XDS_STREAMING)
        return MESH_ERR_STATE;
    mesh_xds_pb_allocator(c->env, &pa);
    resp = envoy__service__discovery__v3__delta_discovery_response__unpack(&pa, len, msg);
    if (resp == NULL) {
        c->stats.bad_responses++;
        MESH_LOG(c->env, MESH_LOG_WARNING, XDS_LOG_MODULE, "undecodable DeltaDiscoveryResponse (%zu bytes)", len);
        return -EBADMSG;
    }
    c->backoff_ns = MESH_XDS_BACKOFF_INITIAL_NS; /* a working stream ends the failure streak */
    t = mesh_xds_type_from_url(resp->type_url);
    for (size_t i = 0; i < resp->n_resources; i++)
        if (resp->resources[i]->resource != NULL)
            bytes += resp->resources[i]->resource->value.len;
    c->stats.messages[t]++;
    c->stats.message_bytes[t] += bytes;
    mesh_buf_init(&nack, c->env, MESH_XDS_NACK_MAX_BYTES);

    if (t == MESH_XDS_TYPE_COUNT) {
        MESH_LOG(c->env, MESH_LOG_NOTICE, XDS_LOG_MODULE, "ignoring response of unknown type %s", resp->type_url);
        rc = xds_queue_answer(c, resp->type_url, resp->nonce, &nack);
        goto out;
    }
    for (size_t i = 0; i < resp->n_resources; i++) {
        const Envoy__Service__Discovery__V3__Resource *r = resp->resources[i];
        const char *reason = NULL;

        if (r->name == NULL || r->name[0] == '\0') {
            reason = "resource without a name";
        } else if (r->resource == NULL) {
            reason = "resource without a payload";
        } else if (strcmp(r->resource->type_url, xds_type_urls[t]) != 0) {
            reason = "payload type does not match the response type";
        } else {
            struct mesh_xds_resource res = {
                .type = t,
                .name = r->name,
                .version = r->version,
                .value = r->resource->value.data,
                .value_len = r->resource->value.len,
                .aliases = (const char *const *)r->aliases,
                .n_aliases = r->n_aliases,
            };
            reason = c->h.on_resource(c->u, &res);
        }
        if (reason != NULL) {
            xds_nack_add(&nack, r->name != NULL ? r->name : "", reason);
            c->stats.resources_rejected++;
            continue;
        }
        if (xds_table_put(c->env, &c->recs[t], r->name, r->version) != 0) {
            /* Applied but not recorded: istiod re-sends it on the next stream, which is harmless. */
            MESH_LOG(c->env, MESH_LOG_WARNING, XDS_LOG_MODULE, "no memory to record %s", r->name);
        }
        c->stats.resources_applied++;
    }
    for (size_t i = 0; i < resp->n_removed_resources; i++) {
        xds_table_del(c->env, &c->recs[t], resp->removed_resources[i]);
        c->h.on_removed(c->u, t, resp->removed_resources[i]);
        c->stats.resources_removed++;
    }
    if (c->h.on_batch_done != NULL)
        c->h.on_batch_done(c->u, t);
    rc = xds_queue_answer(c, resp->type_url, resp->nonce, &nack);
    if (rc == MESH_OK) {
        if (mesh_buf_len(&nack) != 0) {
            c->stats.nacks++;
            MESH_LOG(c->env, MESH_LOG_WARNING, XDS_LOG_MODULE, "NACK %s nonce %s: %.*s", xds_type_urls[t], resp->nonce,
                     (int)mesh_buf_len(&nack), (const char *)mesh_buf_data(&nack));
        } else {
            c->stats.acks++;
            c->ready[t] = true;
        }
    }
out:
    mesh_buf_fini(&nack);
    envoy__service__discovery__v3__delta_discovery_response__free_unpacked(resp, &pa);
    return rc == MESH_OK ? MESH_OK : -ENOMEM;
}

/* ====================================================================================================== */
/* stream end and reconnect (section 3.4 "Reconnect")                                                     */
/* ====================================================================================================== */

static enum mesh_xds_term xds_classify(const struct mesh_grpc_status *st, bool connection_error)
{
    int code = st != NULL && st->have_status ? st->code : MESH_GRPC_UNKNOWN;

    if (connection_error)
        return MESH_XDS_TERM_CONNECTION_ERROR;
    if (code == MESH_GRPC_OK)
        return MESH_XDS_TERM_COMPLETE;
    if (code == MESH_GRPC_UNKNOWN || code == MESH_GRPC_CANCELLED || code == MESH_GRPC_DEADLINE_EXCEEDED)
        return MESH_XDS_TERM_RECONNECT;
    if (st != NULL &&
        (strstr(st->message, "transport is closing") != NULL || strstr(st->message, "received prior goaway") != NULL))
        return MESH_XDS_TERM_RECONNECT;
    return MESH_XDS_TERM_ERROR;
}

/* base * [100 - J, 100 + J] percent, capped at the maximum. */
static uint64_t xds_jitter(const struct mesh_xds_client *c, uint64_t base)
{
    uint32_t r = 0;
    uint64_t pct, d;

    if (mesh_env_random(c->env, &r, sizeof(r)) != 0)
        return base;
    pct = 100 - MESH_XDS_BACKOFF_JITTER_PERCENT + r % (2 * MESH_XDS_BACKOFF_JITTER_PERCENT + 1);
    d = base / 100 * pct + base % 100 * pct / 100;
    return d < MESH_XDS_BACKOFF_MAX_NS ? d : MESH_XDS_BACKOFF_MAX_NS;
}

enum mesh_xds_term mesh_xds_client_stream_end(struct mesh_xds_client *c, const struct mesh_grpc_status *st,
                                              bool connection_error)
{
    enum mesh_xds_term term = xds_classify(st, connection_error);
    uint64_t delay;

    if (c->state == XDS_STREAMING)
        c->stats.terminations[term]++;
    if (term == MESH_XDS_TERM_COMPLETE || term == MESH_XDS_TERM_RECONNECT) {
        delay = MESH_XDS_BACKOFF_INITIAL_NS;
    } else {
        delay = xds_jitter(c, c->backoff_ns);
        c->backoff_ns = c->backoff_ns >= MESH_XDS_BACKOFF_MAX_NS / 2 ? MESH_XDS_BACKOFF_MAX_NS : c->backoff_ns * 2;
    }
    xds_queue_clear(c);
    c->state = XDS_WAITING;
    c->reconnect_at_ns = mesh_env_now(c->env) + delay;
    MESH_LOG(c->env, MESH_LOG_INFO, XDS_LOG_MODULE, "stream ended (%s, grpc %s: %s); reconnect in %llu ms",
             xds_term_labels[term], mesh_grpc_code_name(st != NULL && st->have_status ? st->code : MESH_GRPC_UNKNOWN),
             st != NULL ? st->message : "", (unsigned long long)(delay / 1000000));
    return term;
}

uint64_t mesh_xds_client_next_deadline(const struct mesh_xds_client *c)
{
    switch (c->state) {
    case XDS_IDLE:
        return 0;
    case XDS_WAITING:
        return c->reconnect_at_ns;
    default:
        return MESH_XDS_NO_DEADLINE;
    }
}

bool mesh_xds_client_should_connect(const struct mesh_xds_client *c, uint64_t now_ns)
{
    return c->state == XDS_IDLE || (c->state == XDS_WAITING && now_ns >= c->reconnect_at_ns);
}

bool mesh_xds_client_is_streaming(const struct mesh_xds_client *c)
{
    return c->state == XDS_STREAMING;
}

/* ====================================================================================================== */
/* introspection                                                                                          */
/* ====================================================================================================== */

bool mesh_xds_client_type_ready(const struct mesh_xds_client *c, enum mesh_xds_type t)
{
    return (unsigned)t < MESH_XDS_TYPE_COUNT && c->ready[t];
}

bool mesh_xds_client_is_ready(const struct mesh_xds_client *c)
{
    for (int t = 0; t < MESH_XDS_TYPE_COUNT; t++)
        if (!c->ready[t] && !(c->on_demand && t == MESH_XDS_TYPE_ADDRESS)) /* on-demand types do not gate it */
            return false;
    return true;
}

size_t mesh_xds_client_record_count(const struct mesh_xds_client *c, enum mesh_xds_type t)
{
    return (unsigned)t < MESH_XDS_TYPE_COUNT ? c->recs[t].n : 0;
}

const char *mesh_xds_client_record_version(const struct mesh_xds_client *c, enum mesh_xds_type t, const char *name)
{
    const struct xds_rec *r;

    if ((unsigned)t >= MESH_XDS_TYPE_COUNT)
        return NULL;
    r = xds_table_find(&c->recs[t], name, xds_hash(name), NULL);
    return r != NULL ? r->version : NULL;
}

uint64_t mesh_xds_client_backoff_ns(const struct mesh_xds_client *c)
{
    return c->backoff_ns;
}

const struct mesh_xds_stats *mesh_xds_client_stats(const struct mesh_xds_client *c)
{
    return &c->stats;
}
