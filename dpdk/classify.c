/* SPDX-License-Identifier: Apache-2.0 */
/* Flow classification at the SYN; see classify.h for the rules. */
#include <stdio.h>

#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_malloc.h>

#include "dpdk/classify.h"
#include "dpdk/dp.h"
#include "dpdk/stack.h"

static const char *const class_names[DP_FLOW_N_CLASSES] = {"passthrough", "outbound", "inbound_hbone",
                                                           "inbound_plain"};

const char *dp_flow_class_name(enum dp_flow_class c)
{
    return c < DP_FLOW_N_CLASSES ? class_names[c] : "?";
}

struct dp_mesh_view *dp_mesh_view_new(const uint32_t *enrolled, int n, uint16_t hbone_port, int socket)
{
    static unsigned instance;
    char name[RTE_HASH_NAMESIZE];
    struct rte_hash_parameters hp = {
        .entries = (uint32_t)(n < 64 ? 64 : n * 2),
        .key_len = sizeof(uint32_t),
        .hash_func = rte_hash_crc,
        .socket_id = socket,
    };
    struct dp_mesh_view *v = rte_zmalloc_socket("zw_mesh_view", sizeof(*v), 0, socket);

    if (v == NULL)
        return NULL;
    snprintf(name, sizeof(name), "zw_view_%u", __atomic_fetch_add(&instance, 1, __ATOMIC_RELAXED));
    hp.name = name;
    v->enrolled = rte_hash_create(&hp);
    v->hbone_port = hbone_port;
    if (v->enrolled == NULL) {
        rte_free(v);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (rte_hash_add_key(v->enrolled, &enrolled[i]) < 0) {
            dp_mesh_view_free(v);
            return NULL;
        }
    }
    return v;
}

void dp_mesh_view_free(struct dp_mesh_view *v)
{
    if (v == NULL)
        return;
    rte_hash_free(v->enrolled);
    rte_free(v);
}

bool dp_mesh_view_is_enrolled(const struct dp_mesh_view *v, uint32_t ip)
{
    return rte_hash_lookup(v->enrolled, &ip) >= 0;
}

enum dp_flow_class dp_classify_syn(const struct dp_stack *st, uint8_t in_port, uint32_t src, uint32_t dst,
                                   uint16_t dport)
{
    const struct dp_mesh_view *v = __atomic_load_n(&st->mesh, __ATOMIC_ACQUIRE); /* replaced live by a reload */
    bool src_enrolled, dst_enrolled;

    if (v == NULL)
        return DP_FLOW_PASSTHROUGH;
    src_enrolled = st->ports[in_port].role == DP_PORT_PODS && dp_mesh_view_is_enrolled(v, src);
    if (src_enrolled && dp_route_local_port(st, dst) < 0)
        return DP_FLOW_OUTBOUND;
    dst_enrolled = dp_mesh_view_is_enrolled(v, dst);
    if (!dst_enrolled || src == dst)
        return DP_FLOW_PASSTHROUGH;
    return dport == v->hbone_port ? DP_FLOW_INBOUND_HBONE : DP_FLOW_INBOUND_PLAIN;
}
