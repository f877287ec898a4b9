/* SPDX-License-Identifier: Apache-2.0 */
/*
 * appliance/redirect.h - the capture rules of the kernel-path node: nftables + policy routing that send pod TCP to
 * zwire's listeners.
 *
 * Model. zwire runs inside the node's network namespace, which routes between the pod-facing interface(s) and the
 * fabric with Linux forwarding. Everything below is installed in that namespace (the caller's), never elsewhere:
 *
 *   table ip zwire_<node>
 *     chain nat_pre     (nat, prerouting, dstnat)   outbound capture
 *        mark & 0xfff == 0x539                 -> return   (zwire's own sockets, SO_MARK)
 *        fib daddr type local                  -> return   (traffic for the node itself)
 *        tcp from a pod interface              -> redirect to :15001   (SO_ORIGINAL_DST gives the destination)
 *        tcp from a pod CIDR                   -> dnat to <the pods port's address>:15001   (pods reached
 *                                                 through another interface, such as a bridge holding the pod
 *                                                 veths, which may have no address for "redirect" to use)
 *     chain mangle_pre  (filter, prerouting, mangle) inbound capture
 *        mark & 0xfff == 0x539                 -> return
 *        tcp with an established transparent socket (not a wildcard listener: flows crossing the node to another
 *        node's pods stay routed)              -> mark 0x111, accept  (replies to zwire's spoofed-source dials and
 *                                                                      the rest of TPROXYed flows go to the socket)
 *        fib daddr type local                  -> return
 *        iifname a pod interface, or from @pod_cidrs -> return   (pod egress is nat_pre's)
 *        tcp to @pod_cidrs port 15008          -> tproxy to :15008, mark 0x111   (HBONE; getsockname = original dst)
 *        tcp to @pod_cidrs any other port      -> tproxy to :15006, mark 0x111   (inbound plaintext)
 *     chain route_out   (route, output, mangle)     same-node HBONE (only with same_node_hbone)
 *        mark & 0xfff == 0x539, tcp to @pod_cidrs port 15008 -> mark 0x111, ct mark 0x111   (rerouted through lo)
 *        ct mark & 0xfff == 0x111              -> mark 0x111   (the accepting socket's replies go back through lo)
 *   ip rule fwmark 0x111/0xfff lookup <table> priority <prio>;  ip route local 0.0.0.0/0 dev lo table <table>
 *
 * Bridges: with br_netfilter on (net.bridge.bridge-nf-call-iptables=1), frames crossing a bridge in this namespace
 * meet the nat hook while being bridged, and a connection's NAT is decided at its first packet, so a pod SYN that is
 * bridged before it is routed escapes the REDIRECT. Such a namespace needs bridge-nf-call-iptables=0 (the kernel
 * node warns at start when it is on).
 *
 * The listeners must match: 15001 plain (APP_KLISTEN_REDIRECT), 15006 and 15008 with IP_TRANSPARENT
 * (APP_KLISTEN_TPROXY). Upstream sockets carry SO_MARK 0x539 (app_kloop_set_mark). IPv4 only.
 *
 * Invariants:
 *  - Everything is named after the node: the table is exactly "zwire_<node>", the rule is identified by its fwmark,
 *    table and priority; removal deletes exactly those and nothing else.
 *  - Installing first removes a stale copy (a previous zwire that died), and the nft part is one atomic transaction.
 *  - A failed install leaves nothing behind. Removal is idempotent and succeeds when nothing is installed.
 *  - Refuses to act in the machine's initial network namespace unless allow_init_netns is set (the kernel node sets
 *    it from the environment variable ZWIRE_CAPTURE_IN_INIT_NETNS=1).
 *  - Commands run are nft(8) and ip(8) from PATH, with the ruleset on nft's standard input; no shell is involved.
 */
#ifndef ZW_APP_REDIRECT_H
#define ZW_APP_REDIRECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "appliance/config.h"

#define APP_REDIRECT_MAX_IFS APP_CONFIG_MAX_PORTS
#define APP_REDIRECT_MAX_CIDRS 16
#define APP_REDIRECT_MESH_MARK 0x539u
#define APP_REDIRECT_CONN_MARK 0x111u
#define APP_REDIRECT_MARK_MASK 0xfffu
#define APP_REDIRECT_ROUTE_TABLE 133u
#define APP_REDIRECT_RULE_PRIORITY 100u
#define APP_REDIRECT_OUTBOUND_PORT 15001
#define APP_REDIRECT_INBOUND_PLAIN_PORT 15006
#define APP_REDIRECT_HBONE_PORT 15008

#define APP_REDIRECT_MAX_ENROLLED 1024

struct app_redirect_config {
    const char *node_name; /* [a-z0-9.-]; the table is "zwire_<node_name>" */
    int n_pod_ifs;
    const char *pod_ifs[APP_REDIRECT_MAX_IFS]; /* pod-facing interfaces (outbound capture) */
    int n_pod_cidrs;
    struct app_ipv4_prefix pod_cidrs[APP_REDIRECT_MAX_CIDRS]; /* local pods; host bits: the gateway (dnat target) */
    uint16_t outbound_port;                                   /* host order; 0: APP_REDIRECT_OUTBOUND_PORT */
    uint16_t inbound_plain_port;                              /* 0: APP_REDIRECT_INBOUND_PLAIN_PORT */
    uint16_t hbone_port;                                      /* 0: APP_REDIRECT_HBONE_PORT */
    uint32_t route_table;                                     /* 0: APP_REDIRECT_ROUTE_TABLE */
    uint32_t rule_priority;                                   /* 0: APP_REDIRECT_RULE_PRIORITY */
    bool allow_init_netns;                                    /* permit the machine's initial network namespace */
    bool same_node_hbone; /* loop our own dials to <local pod>:15008 back to the 15008
                           * listener (mesh mode; a passthrough must reach the pod) */
    bool only_enrolled;   /* mesh mode: capture only flows from (outbound) or to (inbound) the enrolled pods below;
                           * everything else is routed by the kernel untouched, as ambient leaves non-mesh pods */
    int n_enrolled;
    uint32_t enrolled[APP_REDIRECT_MAX_ENROLLED]; /* host order */
};

/*
 * Write the nft ruleset (the install transaction: remove stale, then create) into buf.
 * @return the length written (excluding the NUL), -EINVAL for a bad config, or -ENOSPC when buf is too small.
 */
int app_redirect_render(const struct app_redirect_config *cfg, char *buf, size_t len);

/* The table name ("zwire_<node>") into buf. @return buf. */
const char *app_redirect_table_name(const struct app_redirect_config *cfg, char *buf, size_t len);

/*
 * Install the rules and the policy route in the current network namespace (needs CAP_NET_ADMIN).
 * @param err  on failure, a message (the failing command and its stderr)
 * @return 0, -EINVAL (bad config), -EPERM (initial namespace refused), or -EIO (a command failed; nothing left).
 */
int app_redirect_install(const struct app_redirect_config *cfg, char *err, size_t errlen);

/*
 * Replace the enrolled set of the installed table with addrs (n host-order addresses) in one nft transaction, and
 * record them in cfg. No-op when they equal cfg's. Flows already captured keep their NAT / socket.
 * @return 0, -EINVAL (too many), -ENOMEM, or -EIO (nft failed; err says why; the set is unchanged).
 */
int app_redirect_set_enrolled(struct app_redirect_config *cfg, const uint32_t *addrs, int n, char *err,
                              size_t errlen);

/*
 * Remove the nft table, the fwmark rule and the local route in the route table (nothing else). Idempotent.
 * @return 0, or -EIO when something could not be removed (err says what).
 */
int app_redirect_remove(const struct app_redirect_config *cfg, char *err, size_t errlen);

/*
 * @return 1 when the caller is in the machine's initial network namespace (the one of pid 1; when pid 1's is out of
 *         reach, any namespace that is not a named one under /run/netns counts as initial), 0 if not, -errno when
 *         unknown.
 */
int app_redirect_in_init_netns(void);

#endif /* ZW_APP_REDIRECT_H */
