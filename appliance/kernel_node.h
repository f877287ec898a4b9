/* SPDX-License-Identifier: Apache-2.0 */
/*
 * appliance/kernel_node.h - a zwire node on the kernel path (`zwire --config FILE --backend kernel`): the same mesh
 * logic as the DPDK node, driven by Linux sockets instead of the userspace stack. No EAL, no DPDK.
 *
 * Composition, in order: config -> mesh env (app_kloop_env_init) -> epoll loop (SO_MARK 0x539 on upstream sockets)
 * -> mesh proxy (when libmesh has one) -> listeners 15001 (REDIRECT), 15006 and 15008 (TPROXY) -> capture rules
 * (appliance/redirect.h) -> management socket served from the same loop -> with an xds group, the istiod link
 * (appliance/istiod.h) on the same loop: each snapshot becomes the proxy's mesh side and the enrolled-pod set of the
 * capture rules -> run until SIGINT/SIGTERM or POST /quitquitquit -> close listeners, free the proxy (every
 * connection reset) -> remove the rules -> exit 0.
 *
 * Modes:
 *  - APP_KNODE_MESH: captured connections go to mesh_proxy_accept_{outbound,inbound_plain,inbound_hbone}.
 *  - APP_KNODE_PASSTHROUGH: no mesh; every captured connection is relayed to its original destination (outbound from
 *    the node's own address, inbound from the client's address through IP_TRANSPARENT). The capture baseline.
 *
 * Config: the `ports` entries name Linux interfaces with devargs = "kernel:<ifname>"; the interfaces and their
 * addresses, and the routes, belong to the namespace (zwire neither creates nor changes them). Pods ports give the
 * pod-facing interfaces and the local pod CIDRs (their address prefix) for the capture rules.
 *
 * Invariants:
 *  - Single-threaded: the loop, the proxy, the management server and every connection live on the calling thread.
 *  - The capture rules exist only while the listeners do: installed after them, removed before they close, and
 *    removed on every exit path once installed (a stale copy from a crashed run is replaced at start).
 */
#ifndef ZW_APP_KERNEL_NODE_H
#define ZW_APP_KERNEL_NODE_H

#include <signal.h>
#include <stddef.h>

#include "appliance/config.h"

#define APP_KNODE_DEVARGS_PREFIX "kernel:"

enum app_knode_mode {
    APP_KNODE_MESH,
    APP_KNODE_PASSTHROUGH,
};

/*
 * Check the kernel-path view of cfg: every port's devargs is "kernel:<ifname>" with an interface that exists in
 * this namespace, and there is at least one pods port.
 * @return 0, or -EINVAL with err set (one message).
 */
int app_knode_check_config(const struct app_config *cfg, char *err, size_t errlen);

/*
 * Run a kernel-path node until *stop becomes nonzero (set by the caller's signal handler) or POST /quitquitquit.
 * @param mode       APP_KNODE_MESH needs a libmesh built with the proxy; otherwise it fails at start.
 *                   without certificates (everything captured is passed through or refused by the proxy).
 * @return 0 after an orderly stop, 1 when the node could not start (the reason is logged).
 */
int app_knode_run(const struct app_config *cfg, enum app_knode_mode mode,
                  volatile sig_atomic_t *stop);

/* @return true when this binary has the mesh proxy (APP_KNODE_MESH is available). */
int app_knode_has_proxy(void);

#endif /* ZW_APP_KERNEL_NODE_H */
