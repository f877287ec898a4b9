/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The config parser's shared machinery, for the section parsers that live in their own files
 * (config_tcp.c, config_mesh.c, config_authz.c). Not for use outside the config parser.
 *
 * A section parser reads its part of the tree, records every problem with app_cfg_error() (which prefixes
 * "FILE:LINE: "), fills its part of struct app_config, and never stops at the first error. Its free function
 * releases what it allocated and accepts a config where parsing failed half-way.
 */
#ifndef ZW_APP_CONFIG_PARSE_H
#define ZW_APP_CONFIG_PARSE_H

#include <libconfig.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "appliance/config.h"

struct app_cfg_msg {
    unsigned line;
    char *text;
};

struct app_cfg_ctx {
    const char *name;           /* file name used in messages */
    struct app_config *cfg;
    struct app_cfg_msg *msgs;
    int n_msgs;
    int cap_msgs;
    bool oom;
    /* settings kept for cross-field checks; NULL when the field is absent or invalid */
    const config_setting_t *port_name[APP_CONFIG_MAX_PORTS];
    const config_setting_t *port_addr[APP_CONFIG_MAX_PORTS];
    const config_setting_t *route_prefix[APP_CONFIG_MAX_ROUTES];
    const config_setting_t *route_via[APP_CONFIG_MAX_ROUTES];
    bool port_addr_bad;         /* some port address is missing or invalid */
};

void app_cfg_add_msg(struct app_cfg_ctx *ctx, unsigned line, char *text);
/* Records "FILE:LINE: <fmt>" for setting s (NULL: line 0 in the main file). */
void app_cfg_error(struct app_cfg_ctx *ctx, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
char *app_cfg_strdup(struct app_cfg_ctx *ctx, const char *s);
/* Replaces *dst (owned) with a copy of s. */
void app_cfg_set_str(struct app_cfg_ctx *ctx, char **dst, const char *s);
/* "where.key", or "key" at the top level, into buf. */
const char *app_cfg_path(char *buf, size_t size, const char *where, const char *key);
const char *app_cfg_describe(const config_setting_t *s, char *buf, size_t size);
/* True when s has type want (INT and INT64 both count as integers); otherwise records an error. */
bool app_cfg_check_type(struct app_cfg_ctx *ctx, const config_setting_t *s, const char *path, int want);
/* Records "unknown key" for every member of group whose name is not in known (NULL-terminated). */
void app_cfg_check_unknown(struct app_cfg_ctx *ctx, const config_setting_t *group, const char *where,
                           const char *const *known);
/* The member key of group, or NULL; a missing required key is recorded at the group's line. */
const config_setting_t *app_cfg_member(struct app_cfg_ctx *ctx, const config_setting_t *group, const char *where,
                                       const char *key, bool required);
/* Optional (or required) sub-group; NULL when absent or not a group. */
const config_setting_t *app_cfg_read_group(struct app_cfg_ctx *ctx, const config_setting_t *parent,
                                           const char *where, const char *key, bool required);
/* Integer in [min, max] into *out; leaves *out alone when absent or invalid. */
void app_cfg_read_u32(struct app_cfg_ctx *ctx, const config_setting_t *group, const char *where, const char *key,
                      uint32_t min, uint32_t max, uint32_t *out);
void app_cfg_read_bool(struct app_cfg_ctx *ctx, const config_setting_t *group, const char *where, const char *key,
                       bool *out);
/* String member, borrowed from the tree; NULL when absent or not a string. *set receives the setting. */
const char *app_cfg_read_str(struct app_cfg_ctx *ctx, const config_setting_t *group, const char *where,
                             const char *key, bool required, const config_setting_t **set);
/* True when s is 1..max characters, each a lower-case letter, a digit or in extra. */
bool app_cfg_check_charset(const char *s, size_t max, const char *extra);
/* "a.b.c.d:port" (port 1..65535) -> host-order address and port; 0 or -EINVAL. */
int app_cfg_parse_endpoint(const char *text, uint32_t *addr, uint16_t *port);

/* ---- sections in their own files ---- */

/* A top-level section: the keys it owns, how to parse them (always called, present or not), how to free. */
struct app_cfg_section {
    const char *const *keys;   /* NULL-terminated */
    void (*parse)(struct app_cfg_ctx *ctx, const config_setting_t *root);
    void (*free)(struct app_config *cfg);
};

extern const struct app_cfg_section app_cfg_section_tcp;   /* config_tcp.c: tcp, forwarders */
extern const struct app_cfg_section app_cfg_section_mesh;  /* config_mesh.c: mesh, workloads, services */
extern const struct app_cfg_section app_cfg_section_authz; /* config_authz.c: policies */

#endif
