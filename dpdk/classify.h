/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Flow classification at the SYN (DESIGN.md §2): which TCP flows the node terminates, and in which role.
 *
 *   outbound capture   a SYN from an enrolled local pod, arriving on a pods port, to anything that is not ours
 *   HBONE inbound      a SYN to <enrolled local pod IP>:<hbone port>
 *   plaintext inbound  any other SYN to an enrolled local pod from outside it (a non-enrolled pod or another node)
 *   passthrough        everything else: routed unchanged (non-enrolled pods, ICMP, UDP, established flows that
 *                      started before enrollment)
 *
 * The view is immutable once published; the control thread replaces it as a whole (see dp_stack.mesh).
 */
#ifndef ZW_DP_CLASSIFY_H
#define ZW_DP_CLASSIFY_H

#include <stdbool.h>
#include <stdint.h>

enum dp_flow_class {
    DP_FLOW_PASSTHROUGH = 0,
    DP_FLOW_OUTBOUND,
    DP_FLOW_INBOUND_HBONE,
    DP_FLOW_INBOUND_PLAIN,
    DP_FLOW_N_CLASSES
};

struct rte_hash;
struct dp_stack;

/* The mesh as the data path needs it to classify: which local pod addresses are enrolled. */
struct dp_mesh_view {
    struct rte_hash *enrolled;  /* host-order IPv4 -> nothing: enrolled pods of this node */
    uint16_t hbone_port;        /* 15008 */
};

/* Build a view of n enrolled addresses (host order). NULL on allocation failure. */
struct dp_mesh_view *dp_mesh_view_new(const uint32_t *enrolled, int n, uint16_t hbone_port, int socket);
void dp_mesh_view_free(struct dp_mesh_view *v);
bool dp_mesh_view_is_enrolled(const struct dp_mesh_view *v, uint32_t ip);

const char *dp_flow_class_name(enum dp_flow_class c);

/* Classify a SYN that arrived on port in_port (addresses host order). */
enum dp_flow_class dp_classify_syn(const struct dp_stack *st, uint8_t in_port, uint32_t src, uint32_t dst,
                                   uint16_t dport);

#endif
