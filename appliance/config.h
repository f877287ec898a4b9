/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's static configuration: parsed once from a libconfig file, validated, then frozen.
 *
 * Invariants (hold for every struct app_config returned by app_config_load()):
 *  - every string is owned by the config and lives until app_config_free();
 *  - port names are unique, there is at least one port, and at most one port has role FABRIC;
 *  - connected subnets (port address/prefix) never overlap one another, and static routes
 *    never overlap a connected subnet or one another exactly (same prefix and length);
 *  - every route's next hop lies inside the connected subnet of some port;
 *  - all IPv4 addresses are stored in host byte order.
 * Nothing in the data path reads the file again; a reload builds a new struct.
 */
#ifndef ZW_APP_CONFIG_H
#define ZW_APP_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define APP_CONFIG_MAX_PORTS 8
#define APP_CONFIG_MAX_ROUTES 256
#define APP_CONFIG_MAX_EAL_ARGS 32
#define APP_CONFIG_MAX_WORKERS 16
#define APP_CONFIG_DEFAULT_MGMT_SOCKET "/run/zwire/mgmt.sock"

enum app_port_role {
    APP_PORT_PODS,   /* faces local workloads; our address is their gateway */
    APP_PORT_FABRIC, /* faces other nodes; our address is the node IP */
};

enum app_log_level { APP_LOG_ERROR, APP_LOG_WARN, APP_LOG_INFO, APP_LOG_DEBUG };

struct app_ipv4_prefix {
    uint32_t addr; /* host byte order; for a port: our address, host bits set */
    uint8_t len;   /* 0..32 */
};

struct app_port_config {
    char *name;                      /* unique, [a-z0-9_-]{1,31} */
    enum app_port_role role;
    char *devargs;                   /* "net_af_packet0,iface=zw1p" (a vdev) or a PCI address */
    struct app_ipv4_prefix address;  /* our address and the connected subnet */
    uint16_t mtu;                    /* 68..9000, default 1500 */
    int line;                        /* line of the entry in the file, for messages */
};

struct app_route_config {
    struct app_ipv4_prefix prefix;   /* network bits only (host bits must be zero) */
    uint32_t via;                    /* next hop, host order, inside a connected subnet */
    int line;
};

struct app_backoff_config {
    bool enabled;        /* sleep after empty_polls empty polls in a row */
    uint32_t empty_polls;
    uint32_t sleep_us;
};

struct app_dataplane_config {
    uint32_t workers;        /* worker lcores, 1..APP_CONFIG_MAX_WORKERS; default 1 */
    uint32_t mbufs;          /* mbufs in the pool; default 8191 */
    uint32_t rx_burst;       /* 1..256; default 32 */
    struct app_backoff_config backoff;
    uint32_t arp_timeout_s;  /* reachable-entry lifetime; default 300 */
    uint32_t arp_pending_max;/* packets held while resolving, per lcore; default 64 */
};

struct app_eal_config {
    char *file_prefix;       /* default "zwire-<node name>" */
    uint32_t memory_mb;      /* default 256 */
    bool no_huge;            /* default false */
    int n_extra;
    char *extra[APP_CONFIG_MAX_EAL_ARGS]; /* passed to rte_eal_init as given */
};

struct app_mgmt_config {
    char *socket_path;       /* default APP_CONFIG_DEFAULT_MGMT_SOCKET */
    char *metrics_listen;    /* optional "ip:port" serving /metrics and /healthz/ready; NULL = off */
};

#define APP_CONFIG_MAX_FORWARDERS 64

enum app_tcp_cc { APP_TCP_CC_CUBIC, APP_TCP_CC_NEWRENO };

/* The userspace TCP's settings (group "tcp"); limits are per worker lcore. */
struct app_tcp_config {
    uint32_t max_conns;          /* connection blocks, default 16384 */
    uint32_t buffer_mbufs;       /* 2 KiB buffers for send/receive queues, default 16383 (about 36 MiB) */
    uint32_t sndbuf_bytes;       /* per connection, default 524288 */
    uint32_t rcvbuf_bytes;       /* per connection (the window), default 524288 */
    uint32_t syn_backlog;        /* half-open per listener before SYN cookies, default 1024 */
    enum app_tcp_cc congestion;  /* "cubic" (default) | "newreno" */
    bool sack, timestamps, window_scaling;  /* default true */
    uint32_t rto_min_ms;         /* default 200 */
    uint32_t time_wait_ms;       /* default 60000 */
    uint32_t delayed_ack_ms;     /* default 40 */
};

/* A plain L4 forwarder (list "forwarders"): terminate on the userspace stack, dial the target, relay. */
struct app_forwarder_config {
    uint32_t listen_ip;          /* one of our port addresses, or 0 for any */
    uint16_t listen_port;
    uint32_t target_ip;
    uint16_t target_port;
    uint32_t keepalive_s;        /* idle seconds before keepalive probes on both legs; 0 off (default) */
    uint32_t keepalive_intvl_s;  /* default 1 */
    uint32_t keepalive_probes;   /* default 3 */
    int line;
};

struct app_mesh_config;      /* appliance/config_mesh.h: identity, workloads, services */
struct app_authz_config;     /* appliance/config_authz.h: policies */
struct app_xds_section;      /* appliance/config_xds.c: xds and local_ca */

struct app_config {
    char *path;              /* the file it came from */
    char *node_name;
    struct app_dataplane_config dataplane;
    struct app_eal_config eal;
    struct app_mgmt_config mgmt;
    enum app_log_level log_level;
    int n_ports;
    struct app_port_config ports[APP_CONFIG_MAX_PORTS];
    int n_routes;
    struct app_route_config routes[APP_CONFIG_MAX_ROUTES];
    struct app_tcp_config tcp;
    int n_forwarders;
    struct app_forwarder_config forwarders[APP_CONFIG_MAX_FORWARDERS];
    struct app_mesh_config *mesh;   /* always set after a successful load */
    struct app_authz_config *authz; /* always set after a successful load */
    struct app_xds_section *xds_section; /* read with app_cfg_xds() / app_cfg_local_ca() */
};

/*
 * A list of every problem found in a file. Each message is "FILE:LINE: what is wrong"
 * (LINE is 0 when the problem has no line, e.g. a missing top-level group).
 */
struct app_config_errors {
    int n;
    int cap;
    char **msgs;
};

/*
 * Parse and validate path. On success returns a config and leaves errs empty. On failure returns
 * NULL and fills errs with every problem found (parsing stops at the first syntax error, which
 * libconfig reports on its own; validation reports all semantic errors at once).
 * The caller frees errs with app_config_errors_fini() in both cases.
 *
 * errs is initialised by the call (previous content is overwritten, not freed) and may be NULL when
 * the caller does not want the messages. Messages are sorted by line. If memory runs out the call
 * returns NULL and errs holds what could be recorded, normally ending with an "out of memory" message.
 * The returned config owns all its strings; free it with app_config_free(). Neither the config nor
 * errs points into path or into libconfig state.
 */
struct app_config *app_config_load(const char *path, struct app_config_errors *errs);

/* Same as app_config_load() on an in-memory text; name (NULL: "<string>") is used in messages and copied. */
struct app_config *app_config_load_string(const char *text, const char *name, struct app_config_errors *errs);

/* Frees cfg and every string it owns; NULL is a no-op. */
void app_config_free(struct app_config *cfg);
/* Frees every message and leaves errs empty (reusable); NULL is a no-op. */
void app_config_errors_fini(struct app_config_errors *errs);

/* Print every message, one per line, to out. */
void app_config_errors_print(const struct app_config_errors *errs, FILE *out);

const char *app_port_role_name(enum app_port_role role);
const char *app_log_level_name(enum app_log_level level);

/*
 * "a.b.c.d" -> host-order address; 0 on success, -EINVAL otherwise (then *out is untouched).
 * Strict: exactly four decimal octets 0..255, no leading zeros ("010" is refused), no sign, no spaces,
 * nothing after the last octet.
 */
int app_ipv4_parse(const char *s, uint32_t *out);
/* "a.b.c.d/len" -> prefix, len 0..32 without leading zeros; host bits are kept as given.
 * 0 on success, -EINVAL otherwise (then *out is untouched). */
int app_ipv4_prefix_parse(const char *s, struct app_ipv4_prefix *out);
/* Writes "a.b.c.d" into buf (at least 16 bytes); returns buf. */
char *app_ipv4_format(uint32_t addr, char *buf);

#endif
