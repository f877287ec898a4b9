/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Config sections "xds" (the istiod connection: Delta ADS and the Istio CA) and "local_ca" (the certificate source
 * used when there is no xds group), parsed in config_xds.c.
 *
 * File syntax (every key but address is optional; defaults as in ztunnel, ztunnel-wire-facts.md section 3.1):
 *     xds = {
 *       address = "istiod.istio-system.svc:15012";   # or "ip:port", "[v6]:port"; an "https://" prefix is allowed
 *       root_cert = "/var/run/secrets/istio/root-cert.pem";   # or "SYSTEM" for the OS roots
 *       token_file = "/var/run/secrets/tokens/istio-token";
 *       cluster_id = "Kubernetes";
 *       node_id = "ztunnel~10.0.0.5~zwire-abc.istio-system~istio-system.svc.cluster.local";  # or the parts:
 *       instance_ip = "10.0.0.5"; pod_name = "zwire-abc"; pod_namespace = "istio-system"; node_name = "node-1";
 *       ca_address = "istiod.istio-system.svc:15012";   # default: address
 *       trust_domain = "cluster.local";
 *       server_name = "istiod.istio-system.svc";          # default: the host of address
 *       alt_server_name = "";                             # ALT_XDS_HOSTNAME
 *       cert_ttl_s = 86400;                               # requested certificate lifetime (SECRET_TTL)
 *       on_demand = false;                                # XDS_ON_DEMAND
 *     };
 *     local_ca = {                     # only used without xds
 *       cert = "/etc/zwire/ca-cert.pem"; key = "/etc/zwire/ca-key.pem"; roots = "/etc/zwire/root-cert.pem";
 *       state_dir = "/var/lib/zwire/ca";  # without cert/key: a CA generated at first start and kept here
 *       trust_domain = "cluster.local"; cert_ttl_s = 86400;
 *     };
 *
 * Invariants (for a config that loaded):
 *  - app_cfg_xds() is NULL when the file has no xds group; otherwise every string is set (defaults applied), host is
 *    a DNS name or an IP literal, ports are 1..65535, and node identity parts contain no '~'.
 *  - app_cfg_local_ca() is never NULL: without a local_ca group it holds the defaults (generated CA in state_dir).
 *  - Both live exactly as long as the struct app_config (released by app_config_free); their strings are owned.
 */
#ifndef ZW_APP_CONFIG_XDS_H
#define ZW_APP_CONFIG_XDS_H

#include <stdbool.h>
#include <stdint.h>

#include "appliance/config.h"

#define APP_XDS_DEFAULT_ROOT_CERT "/var/run/secrets/istio/root-cert.pem"
#define APP_XDS_DEFAULT_TOKEN_FILE "/var/run/secrets/tokens/istio-token"
#define APP_XDS_DEFAULT_CLUSTER_ID "Kubernetes"
#define APP_XDS_DEFAULT_TRUST_DOMAIN "cluster.local"
#define APP_XDS_DEFAULT_POD_NAMESPACE "istio-system"
#define APP_XDS_DEFAULT_CERT_TTL_S 86400
#define APP_LOCAL_CA_DEFAULT_STATE_DIR "/var/lib/zwire/ca"

struct app_xds_config {
    char *address;      /* as written, without "https://" */
    char *host;         /* DNS name or IP literal (no brackets) */
    uint16_t port;
    char *ca_address;   /* default: address */
    char *ca_host;
    uint16_t ca_port;
    char *root_cert;    /* path, or "SYSTEM" */
    char *token_file;
    char *cluster_id;
    char *trust_domain;
    char *server_name;  /* default: host */
    char *alt_server_name; /* "" for none */
    char *instance_ip;  /* "" -> the engine's 1.1.1.1 */
    char *pod_name;
    char *pod_namespace;
    char *node_name;    /* default: node.name */
    uint32_t cert_ttl_s;
    bool on_demand;     /* XDS_ON_DEMAND: Address resources only when a connection needs one */
    int line;
};

struct app_local_ca_config {
    char *cert;         /* NULL: generated (see state_dir) */
    char *key;
    char *roots;        /* NULL: cert is the root */
    char *state_dir;
    char *trust_domain;
    uint32_t cert_ttl_s;
};

/* The sections (registered in config.c's table). */
extern const struct app_cfg_section app_cfg_section_xds;

/* The parsed sections of cfg; see the invariants. */
const struct app_xds_config *app_cfg_xds(const struct app_config *cfg);
const struct app_local_ca_config *app_cfg_local_ca(const struct app_config *cfg);

/* Why a node cannot run this config, or NULL: an xds group on a node that does not follow istiod (node_runs_xds
 * false: passthrough mode, or no mesh proxy), or next to workloads/services/policies in the file, or without a
 * mesh group; mesh.certificates.source = "xds" without an xds group; a local_ca group (only the certificate
 * manager's tests read it). The loader accepts all of these; the node entry points refuse them with this message. */
const char *app_cfg_xds_node_unsupported(const struct app_config *cfg, bool node_runs_xds);

/* True when the node's workload certificates come from the Istio CA: mesh.certificates.source = "xds", or no source
 * written, an xds group and no mesh.certificates.ca_cert (what ztunnel does). False without a mesh group. */
bool app_cfg_certs_from_istiod(const struct app_config *cfg);

/* "host:port", "[v6]:port", optionally prefixed by "https://" -> host (allocated, free()) and port.
 * Returns 0, -EINVAL (bad form), -ENOMEM. */
int app_xds_split_address(const char *text, char **host, uint16_t *port);

#endif
