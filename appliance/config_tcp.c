/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Config sections of the userspace TCP: the "tcp" group (limits, options, timers) and the "forwarders" list
 * (plain L4 relays terminated on the stack). Defaults are applied even when the sections are absent.
 */
#include <errno.h>
#include <string.h>

#include "appliance/config_parse.h"

static void tcp_defaults(struct app_tcp_config *t)
{
    *t = (struct app_tcp_config){
        .max_conns = 16384,
        .buffer_mbufs = 16383,
        .sndbuf_bytes = 512 * 1024,
        .rcvbuf_bytes = 512 * 1024,
        .syn_backlog = 1024,
        .congestion = APP_TCP_CC_CUBIC,
        .sack = true,
        .timestamps = true,
        .window_scaling = true,
        .rto_min_ms = 200,
        .time_wait_ms = 60000,
        .delayed_ack_ms = 40,
    };
}

static void tcp_parse_group(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    static const char *const known[] = {"max_conns",   "buffer_mbufs", "sndbuf_bytes",   "rcvbuf_bytes",
                                        "syn_backlog", "congestion",   "sack",           "timestamps",
                                        "window_scaling", "rto_min_ms", "time_wait_ms", "delayed_ack_ms", NULL};
    struct app_tcp_config *t = &ctx->cfg->tcp;
    const config_setting_t *g = app_cfg_read_group(ctx, root, "", "tcp", false), *set;
    const char *cc;

    if (g == NULL)
        return;
    app_cfg_check_unknown(ctx, g, "tcp", known);
    app_cfg_read_u32(ctx, g, "tcp", "max_conns", 16, 4u << 20, &t->max_conns);
    app_cfg_read_u32(ctx, g, "tcp", "buffer_mbufs", 255, 16u << 20, &t->buffer_mbufs);
    app_cfg_read_u32(ctx, g, "tcp", "sndbuf_bytes", 4096, 64u << 20, &t->sndbuf_bytes);
    app_cfg_read_u32(ctx, g, "tcp", "rcvbuf_bytes", 4096, 64u << 20, &t->rcvbuf_bytes);
    app_cfg_read_u32(ctx, g, "tcp", "syn_backlog", 1, 1u << 20, &t->syn_backlog);
    app_cfg_read_bool(ctx, g, "tcp", "sack", &t->sack);
    app_cfg_read_bool(ctx, g, "tcp", "timestamps", &t->timestamps);
    app_cfg_read_bool(ctx, g, "tcp", "window_scaling", &t->window_scaling);
    app_cfg_read_u32(ctx, g, "tcp", "rto_min_ms", 1, 60000, &t->rto_min_ms);
    app_cfg_read_u32(ctx, g, "tcp", "time_wait_ms", 0, 240000, &t->time_wait_ms);
    app_cfg_read_u32(ctx, g, "tcp", "delayed_ack_ms", 1, 500, &t->delayed_ack_ms);
    cc = app_cfg_read_str(ctx, g, "tcp", "congestion", false, &set);
    if (cc != NULL) {
        if (strcmp(cc, "cubic") == 0)
            t->congestion = APP_TCP_CC_CUBIC;
        else if (strcmp(cc, "newreno") == 0)
            t->congestion = APP_TCP_CC_NEWRENO;
        else
            app_cfg_error(ctx, set, "tcp.congestion: \"%s\" is not one of cubic, newreno", cc);
    }
}

static bool tcp_is_local(const struct app_config *cfg, uint32_t ip)
{
    for (int i = 0; i < cfg->n_ports; i++)
        if (cfg->ports[i].address.addr == ip)
            return true;
    return false;
}

static bool tcp_is_routable(const struct app_config *cfg, uint32_t ip)
{
    for (int i = 0; i < cfg->n_ports; i++) {
        uint32_t mask = cfg->ports[i].address.len ? ~0u << (32 - cfg->ports[i].address.len) : 0;
        if ((ip & mask) == (cfg->ports[i].address.addr & mask))
            return true;
    }
    for (int i = 0; i < cfg->n_routes; i++) {
        uint32_t mask = cfg->routes[i].prefix.len ? ~0u << (32 - cfg->routes[i].prefix.len) : 0;
        if ((ip & mask) == cfg->routes[i].prefix.addr)
            return true;
    }
    return false;
}

static void tcp_parse_forwarder(struct app_cfg_ctx *ctx, int i, const config_setting_t *e)
{
    static const char *const known[] = {"listen", "target", "keepalive_s", "keepalive_intvl_s", "keepalive_probes",
                                        NULL};
    struct app_config *cfg = ctx->cfg;
    struct app_forwarder_config *f = &cfg->forwarders[cfg->n_forwarders];
    const config_setting_t *ls, *ts;
    const char *listen, *target;
    char where[32];
    bool ok = true;

    snprintf(where, sizeof(where), "forwarders[%d]", i);
    if (!app_cfg_check_type(ctx, e, where, CONFIG_TYPE_GROUP))
        return;
    app_cfg_check_unknown(ctx, e, where, known);
    memset(f, 0, sizeof(*f));
    f->line = (int)config_setting_source_line(e);
    f->keepalive_intvl_s = 1;
    f->keepalive_probes = 3;
    listen = app_cfg_read_str(ctx, e, where, "listen", true, &ls);
    target = app_cfg_read_str(ctx, e, where, "target", true, &ts);
    if (listen != NULL && app_cfg_parse_endpoint(listen, &f->listen_ip, &f->listen_port) < 0) {
        app_cfg_error(ctx, ls, "%s.listen: \"%s\" is not ip:port", where, listen);
        ok = false;
    } else if (listen != NULL && f->listen_ip != 0 && !tcp_is_local(cfg, f->listen_ip)) {
        app_cfg_error(ctx, ls, "%s.listen: %s is not the address of any port", where, listen);
        ok = false;
    }
    if (target != NULL && app_cfg_parse_endpoint(target, &f->target_ip, &f->target_port) < 0) {
        app_cfg_error(ctx, ts, "%s.target: \"%s\" is not ip:port", where, target);
        ok = false;
    } else if (target != NULL && !ctx->port_addr_bad && !tcp_is_routable(cfg, f->target_ip)) {
        app_cfg_error(ctx, ts, "%s.target: %s is in no connected subnet and no route", where, target);
        ok = false;
    }
    app_cfg_read_u32(ctx, e, where, "keepalive_s", 0, 86400, &f->keepalive_s);
    app_cfg_read_u32(ctx, e, where, "keepalive_intvl_s", 1, 3600, &f->keepalive_intvl_s);
    app_cfg_read_u32(ctx, e, where, "keepalive_probes", 1, 100, &f->keepalive_probes);
    if (listen == NULL || target == NULL || !ok)
        return;
    for (int k = 0; k < cfg->n_forwarders; k++) {
        if (cfg->forwarders[k].listen_port == f->listen_port &&
            (cfg->forwarders[k].listen_ip == f->listen_ip || cfg->forwarders[k].listen_ip == 0 || f->listen_ip == 0)) {
            app_cfg_error(ctx, ls, "%s.listen: %s is already used by the forwarder at line %d", where, listen,
                          cfg->forwarders[k].line);
            return;
        }
    }
    cfg->n_forwarders++;
}

static void tcp_parse_forwarders(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    const config_setting_t *l = app_cfg_member(ctx, root, "", "forwarders", false);
    int n;

    if (l == NULL)
        return;
    if (config_setting_type(l) != CONFIG_TYPE_LIST && config_setting_type(l) != CONFIG_TYPE_ARRAY) {
        app_cfg_check_type(ctx, l, "forwarders", CONFIG_TYPE_LIST);
        return;
    }
    n = config_setting_length(l);
    if (n > APP_CONFIG_MAX_FORWARDERS) {
        app_cfg_error(ctx, l, "forwarders: %d entries, at most %d", n, APP_CONFIG_MAX_FORWARDERS);
        n = APP_CONFIG_MAX_FORWARDERS;
    }
    for (int i = 0; i < n; i++)
        tcp_parse_forwarder(ctx, i, config_setting_get_elem(l, (unsigned)i));
}

static void tcp_section_parse(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    tcp_defaults(&ctx->cfg->tcp);
    tcp_parse_group(ctx, root);
    tcp_parse_forwarders(ctx, root);
}

static void tcp_section_free(struct app_config *cfg)
{
    (void)cfg; /* nothing allocated */
}

static const char *const tcp_section_keys[] = {"tcp", "forwarders", NULL};

const struct app_cfg_section app_cfg_section_tcp = {
    .keys = tcp_section_keys,
    .parse = tcp_section_parse,
    .free = tcp_section_free,
};
