/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Config parser: libconfig text -> validated struct app_config (see config.h and examples/zwire.cfg).
 *
 * Invariants:
 *  - Two passes. libconfig checks the syntax and stops at its first error; then one walk over the tree
 *    records every semantic problem and never stops early, so a file shows all its errors at once.
 *  - Every field holds its default before the walk. A bad value records an error and leaves the default;
 *    any recorded error makes the load return NULL, so a partly filled config never escapes.
 *  - Cross-field checks (duplicates, overlaps, next hops) only compare fields that parsed cleanly, and the
 *    next-hop check is skipped when some port address is bad, so one mistake does not cascade.
 *  - Each message is "FILE:LINE: path.to.key: ..." where LINE is the setting's own line (the enclosing
 *    group's line for a missing key, 0 when there is no enclosing setting). Messages are sorted by line,
 *    keeping discovery order within a line.
 *  - The config owns every string it points to; app_config_free() releases them all. The libconfig tree is
 *    destroyed before returning, so nothing points into it.
 */
#include "appliance/config.h"
#include "appliance/config_parse.h"
#include "appliance/config_xds.h"

#include <errno.h>
#include <inttypes.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_NODE_NAME_MAX 63
#define CONFIG_PORT_NAME_MAX 31
#define CONFIG_SUN_PATH_BYTES 108 /* sizeof(((struct sockaddr_un *)0)->sun_path) on Linux */

/* ---------------------------------------------------------------------------------------------------------------
 * IPv4 helpers
 * ------------------------------------------------------------------------------------------------------------ */

/* Parses 1..max_digits decimal digits at *p, no leading zero unless the number is "0". Advances *p. */
static int config_parse_decimal(const char **p, int max_digits, uint32_t *out)
{
    const char *s = *p;
    uint32_t v = 0;
    int n = 0;

    while (s[n] >= '0' && s[n] <= '9') {
        if (n == max_digits)
            return -EINVAL;
        v = v * 10 + (uint32_t)(s[n] - '0');
        n++;
    }
    if (n == 0 || (n > 1 && s[0] == '0'))
        return -EINVAL;
    *p = s + n;
    *out = v;
    return 0;
}

/* Parses "a.b.c.d" at *p and advances *p past it; what follows is the caller's business. */
static int config_parse_ipv4_at(const char **p, uint32_t *out)
{
    const char *s = *p;
    uint32_t addr = 0;

    for (int i = 0; i < 4; i++) {
        uint32_t octet;

        if (i > 0) {
            if (*s != '.')
                return -EINVAL;
            s++;
        }
        if (config_parse_decimal(&s, 3, &octet) != 0 || octet > 255)
            return -EINVAL;
        addr = (addr << 8) | octet;
    }
    *p = s;
    *out = addr;
    return 0;
}

int app_ipv4_parse(const char *s, uint32_t *out)
{
    uint32_t addr;

    if (s == NULL || config_parse_ipv4_at(&s, &addr) != 0 || *s != '\0')
        return -EINVAL;
    *out = addr;
    return 0;
}

int app_ipv4_prefix_parse(const char *s, struct app_ipv4_prefix *out)
{
    uint32_t addr, len;

    if (s == NULL || config_parse_ipv4_at(&s, &addr) != 0 || *s != '/')
        return -EINVAL;
    s++;
    if (config_parse_decimal(&s, 2, &len) != 0 || len > 32 || *s != '\0')
        return -EINVAL;
    out->addr = addr;
    out->len = (uint8_t)len;
    return 0;
}

char *app_ipv4_format(uint32_t addr, char *buf)
{
    snprintf(buf, 16, "%" PRIu32 ".%" PRIu32 ".%" PRIu32 ".%" PRIu32, addr >> 24, (addr >> 16) & 0xff,
             (addr >> 8) & 0xff, addr & 0xff);
    return buf;
}

static uint32_t config_mask(uint8_t len)
{
    return len == 0 ? 0 : UINT32_MAX << (32 - len);
}

static bool config_prefix_overlaps(const struct app_ipv4_prefix *a, const struct app_ipv4_prefix *b)
{
    uint32_t m = config_mask(a->len < b->len ? a->len : b->len);

    return (a->addr & m) == (b->addr & m);
}

/* "a.b.c.d/len" of the network (host bits cleared) into buf of at least 19 bytes. */
static const char *config_format_net(const struct app_ipv4_prefix *p, char *buf)
{
    char a[16];

    snprintf(buf, 19, "%s/%u", app_ipv4_format(p->addr & config_mask(p->len), a), (unsigned)p->len);
    return buf;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Names
 * ------------------------------------------------------------------------------------------------------------ */

static const char *const config_role_names[] = {[APP_PORT_PODS] = "pods", [APP_PORT_FABRIC] = "fabric"};
static const char *const config_level_names[] = {
    [APP_LOG_ERROR] = "error", [APP_LOG_WARN] = "warn", [APP_LOG_INFO] = "info", [APP_LOG_DEBUG] = "debug"};

const char *app_port_role_name(enum app_port_role role)
{
    return (unsigned)role < sizeof(config_role_names) / sizeof(config_role_names[0]) ? config_role_names[role] : "?";
}

const char *app_log_level_name(enum app_log_level level)
{
    return (unsigned)level < sizeof(config_level_names) / sizeof(config_level_names[0]) ? config_level_names[level]
                                                                                         : "?";
}

/* ---------------------------------------------------------------------------------------------------------------
 * Error collection
 * ------------------------------------------------------------------------------------------------------------ */

void app_cfg_add_msg(struct app_cfg_ctx *ctx, unsigned line, char *text)
{
    if (text == NULL) {
        ctx->oom = true;
        return;
    }
    if (ctx->n_msgs == ctx->cap_msgs) {
        int cap = ctx->cap_msgs ? ctx->cap_msgs * 2 : 16;
        struct app_cfg_msg *m = realloc(ctx->msgs, (size_t)cap * sizeof(*m));

        if (m == NULL) {
            free(text);
            ctx->oom = true;
            return;
        }
        ctx->msgs = m;
        ctx->cap_msgs = cap;
    }
    ctx->msgs[ctx->n_msgs].line = line;
    ctx->msgs[ctx->n_msgs].text = text;
    ctx->n_msgs++;
}

/* Records "FILE:LINE: <fmt>" for setting s (NULL: line 0 in the main file). */
void app_cfg_error(struct app_cfg_ctx *ctx, const config_setting_t *s, const char *fmt, ...)
{
    const char *file = s != NULL && config_setting_source_file(s) != NULL ? config_setting_source_file(s) : ctx->name;
    unsigned line = s != NULL ? config_setting_source_line(s) : 0;
    char *body = NULL, *text = NULL;
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = vasprintf(&body, fmt, ap);
    va_end(ap);
    if (rc < 0) {
        ctx->oom = true;
        return;
    }
    if (asprintf(&text, "%s:%u: %s", file, line, body) < 0)
        text = NULL;
    free(body);
    app_cfg_add_msg(ctx, line, text);
}

char *app_cfg_strdup(struct app_cfg_ctx *ctx, const char *s)
{
    char *d = strdup(s);

    if (d == NULL)
        ctx->oom = true;
    return d;
}

/* Replaces *dst (owned) with a copy of s. */
void app_cfg_set_str(struct app_cfg_ctx *ctx, char **dst, const char *s)
{
    char *d = app_cfg_strdup(ctx, s);

    if (d != NULL) {
        free(*dst);
        *dst = d;
    }
}

/* Moves the messages, sorted by line (stable), into errs; errs may be NULL. */
static void config_flush_msgs(struct app_cfg_ctx *ctx, struct app_config_errors *errs)
{
    for (int i = 1; i < ctx->n_msgs; i++) {
        struct app_cfg_msg m = ctx->msgs[i];
        int j = i;

        for (; j > 0 && ctx->msgs[j - 1].line > m.line; j--)
            ctx->msgs[j] = ctx->msgs[j - 1];
        ctx->msgs[j] = m;
    }
    if (errs != NULL && ctx->n_msgs > 0) {
        errs->msgs = calloc((size_t)ctx->n_msgs, sizeof(char *));
        if (errs->msgs != NULL) {
            for (int i = 0; i < ctx->n_msgs; i++)
                errs->msgs[i] = ctx->msgs[i].text;
            errs->n = errs->cap = ctx->n_msgs;
            free(ctx->msgs);
            ctx->msgs = NULL;
            ctx->n_msgs = 0;
            return;
        }
    }
    for (int i = 0; i < ctx->n_msgs; i++)
        free(ctx->msgs[i].text);
    free(ctx->msgs);
    ctx->msgs = NULL;
    ctx->n_msgs = 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Typed access to the tree
 * ------------------------------------------------------------------------------------------------------------ */

/* "where.key", or "key" at the top level, into buf. */
const char *app_cfg_path(char *buf, size_t size, const char *where, const char *key)
{
    snprintf(buf, size, "%s%s%s", where, where[0] != '\0' ? "." : "", key);
    return buf;
}

/* Describes what a setting holds, for "expected X, got Y". */
const char *app_cfg_describe(const config_setting_t *s, char *buf, size_t size)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        snprintf(buf, size, "integer %lld", config_setting_get_int64(s));
        break;
    case CONFIG_TYPE_FLOAT:
        snprintf(buf, size, "float %g", config_setting_get_float(s));
        break;
    case CONFIG_TYPE_STRING:
        snprintf(buf, size, "string \"%s\"", config_setting_get_string(s));
        break;
    case CONFIG_TYPE_BOOL:
        snprintf(buf, size, "boolean %s", config_setting_get_bool(s) ? "true" : "false");
        break;
    case CONFIG_TYPE_GROUP:
        snprintf(buf, size, "a group");
        break;
    case CONFIG_TYPE_LIST:
        snprintf(buf, size, "a list");
        break;
    case CONFIG_TYPE_ARRAY:
        snprintf(buf, size, "an array");
        break;
    default:
        snprintf(buf, size, "nothing");
        break;
    }
    return buf;
}

/* True when s has type want (INT and INT64 both count as integers); otherwise records an error. */
bool app_cfg_check_type(struct app_cfg_ctx *ctx, const config_setting_t *s, const char *path, int want)
{
    int type = config_setting_type(s);
    const char *what;
    char got[160];

    if (type == want || (want == CONFIG_TYPE_INT && type == CONFIG_TYPE_INT64))
        return true;
    switch (want) {
    case CONFIG_TYPE_INT: what = "an integer"; break;
    case CONFIG_TYPE_STRING: what = "a string"; break;
    case CONFIG_TYPE_BOOL: what = "a boolean"; break;
    case CONFIG_TYPE_GROUP: what = "a group"; break;
    case CONFIG_TYPE_LIST: what = "a list"; break;
    default: what = "something else"; break;
    }
    app_cfg_error(ctx, s, "%s: expected %s, got %s", path, what, app_cfg_describe(s, got, sizeof(got)));
    return false;
}

/* Records "unknown key" for every member of group whose name is not in known (NULL-terminated). */
void app_cfg_check_unknown(struct app_cfg_ctx *ctx, const config_setting_t *group, const char *where,
                                 const char *const *known)
{
    int n = config_setting_length(group);

    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(m);
        bool found = false;

        for (const char *const *k = known; *k != NULL && !found; k++)
            found = strcmp(*k, name) == 0;
        if (!found) {
            if (where[0] == '\0')
                app_cfg_error(ctx, m, "unknown key \"%s\" at top level", name);
            else
                app_cfg_error(ctx, m, "unknown key \"%s\" in %s", name, where);
        }
    }
}

/* The member key of group, or NULL; a missing required key is recorded at the group's line. */
const config_setting_t *app_cfg_member(struct app_cfg_ctx *ctx, const config_setting_t *group,
                                             const char *where, const char *key, bool required)
{
    const config_setting_t *s = config_setting_get_member(group, key);
    char path[96];

    if (s == NULL && required)
        app_cfg_error(ctx, config_setting_is_root(group) ? NULL : group, "%s: required key is missing",
                     app_cfg_path(path, sizeof(path), where, key));
    return s;
}

/* Optional (or required) sub-group; NULL when absent or not a group. */
const config_setting_t *app_cfg_read_group(struct app_cfg_ctx *ctx, const config_setting_t *parent,
                                                 const char *where, const char *key, bool required)
{
    const config_setting_t *s = app_cfg_member(ctx, parent, where, key, required);
    char path[96];

    if (s == NULL || !app_cfg_check_type(ctx, s, app_cfg_path(path, sizeof(path), where, key), CONFIG_TYPE_GROUP))
        return NULL;
    return s;
}

/* Integer in [min, max] into *out; leaves *out alone when absent or invalid. */
void app_cfg_read_u32(struct app_cfg_ctx *ctx, const config_setting_t *group, const char *where,
                            const char *key, uint32_t min, uint32_t max, uint32_t *out)
{
    const config_setting_t *s = app_cfg_member(ctx, group, where, key, false);
    char path[96];
    long long v;

    if (s == NULL || !app_cfg_check_type(ctx, s, app_cfg_path(path, sizeof(path), where, key), CONFIG_TYPE_INT))
        return;
    v = config_setting_get_int64(s);
    if (v < (long long)min || v > (long long)max) {
        if (max == UINT32_MAX)
            app_cfg_error(ctx, s, "%s: %lld is out of range (at %s %" PRIu32 ")", path, v, v < min ? "least" : "most",
                         v < min ? min : max);
        else
            app_cfg_error(ctx, s, "%s: %lld is out of range (%" PRIu32 "..%" PRIu32 ")", path, v, min, max);
        return;
    }
    *out = (uint32_t)v;
}

void app_cfg_read_bool(struct app_cfg_ctx *ctx, const config_setting_t *group, const char *where,
                             const char *key, bool *out)
{
    const config_setting_t *s = app_cfg_member(ctx, group, where, key, false);
    char path[96];

    if (s != NULL && app_cfg_check_type(ctx, s, app_cfg_path(path, sizeof(path), where, key), CONFIG_TYPE_BOOL))
        *out = config_setting_get_bool(s) != 0;
}

/* String member, borrowed from the tree; NULL when absent or not a string. *set receives the setting. */
const char *app_cfg_read_str(struct app_cfg_ctx *ctx, const config_setting_t *group, const char *where,
                                   const char *key, bool required, const config_setting_t **set)
{
    const config_setting_t *s = app_cfg_member(ctx, group, where, key, required);
    char path[96];

    if (set != NULL)
        *set = NULL;
    if (s == NULL || !app_cfg_check_type(ctx, s, app_cfg_path(path, sizeof(path), where, key), CONFIG_TYPE_STRING))
        return NULL;
    if (set != NULL)
        *set = s;
    return config_setting_get_string(s);
}

/* True when s is 1..max characters, each a lower-case letter, a digit or in extra. */
bool app_cfg_check_charset(const char *s, size_t max, const char *extra)
{
    size_t n = strlen(s);

    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr(extra, c) != NULL))
            return false;
    }
    return true;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Sections
 * ------------------------------------------------------------------------------------------------------------ */

static void config_parse_node(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    static const char *const known[] = {"name", NULL};
    const config_setting_t *node = app_cfg_read_group(ctx, root, "", "node", true);
    const config_setting_t *s;
    const char *name;

    if (node == NULL)
        return;
    app_cfg_check_unknown(ctx, node, "node", known);
    name = app_cfg_read_str(ctx, node, "node", "name", true, &s);
    if (name == NULL)
        return;
    if (!app_cfg_check_charset(name, CONFIG_NODE_NAME_MAX, ".-")) {
        app_cfg_error(ctx, s, "node.name: \"%s\" is not a valid node name ([a-z0-9.-], 1..%d characters)", name,
                     CONFIG_NODE_NAME_MAX);
        return;
    }
    ctx->cfg->node_name = app_cfg_strdup(ctx, name);
}

/* Reads ports[i].address; returns false when it is missing or invalid. */
static bool config_parse_port_address(struct app_cfg_ctx *ctx, int i, const config_setting_t *entry, const char *where)
{
    struct app_port_config *port = &ctx->cfg->ports[i];
    const config_setting_t *s;
    const char *text = app_cfg_read_str(ctx, entry, where, "address", true, &s);
    struct app_ipv4_prefix p;
    uint32_t host;

    if (text == NULL)
        return false;
    if (app_ipv4_prefix_parse(text, &p) != 0) {
        app_cfg_error(ctx, s, "%s.address: \"%s\" is not an IPv4 prefix (a.b.c.d/len)", where, text);
        return false;
    }
    if (p.len == 0 || p.len == 32) {
        app_cfg_error(ctx, s, "%s.address: \"%s\" has prefix length %u; a port needs a host address in a subnet "
                     "(length 1..31)", where, text, (unsigned)p.len);
        return false;
    }
    /* A /31 has no network or broadcast address (RFC 3021): both addresses are hosts. */
    host = p.addr & ~config_mask(p.len);
    if (p.len < 31 && host == 0) {
        app_cfg_error(ctx, s, "%s.address: \"%s\" is the network address of its subnet; a port needs a host address",
                     where, text);
        return false;
    }
    if (p.len < 31 && host == ~config_mask(p.len)) {
        app_cfg_error(ctx, s, "%s.address: \"%s\" is the broadcast address of its subnet; a port needs a host "
                     "address", where, text);
        return false;
    }
    port->address = p;
    ctx->port_addr[i] = s;
    return true;
}

static void config_parse_port(struct app_cfg_ctx *ctx, int i, const config_setting_t *entry, int *fabric)
{
    static const char *const known[] = {"name", "role", "devargs", "address", "mtu", NULL};
    struct app_port_config *port = &ctx->cfg->ports[i];
    const config_setting_t *s;
    const char *text;
    char where[32];
    uint32_t mtu = 1500;

    snprintf(where, sizeof(where), "ports[%d]", i);
    port->line = (int)config_setting_source_line(entry);
    port->mtu = 1500;
    if (!app_cfg_check_type(ctx, entry, where, CONFIG_TYPE_GROUP)) {
        ctx->port_addr_bad = true;
        return;
    }
    app_cfg_check_unknown(ctx, entry, where, known);

    text = app_cfg_read_str(ctx, entry, where, "name", true, &s);
    if (text != NULL && !app_cfg_check_charset(text, CONFIG_PORT_NAME_MAX, "_-")) {
        app_cfg_error(ctx, s, "%s.name: \"%s\" is not a valid port name ([a-z0-9_-], 1..%d characters)", where, text,
                     CONFIG_PORT_NAME_MAX);
    } else if (text != NULL) {
        int dup = -1;

        for (int j = 0; j < i && dup < 0; j++)
            if (ctx->port_name[j] != NULL && strcmp(config_setting_get_string(ctx->port_name[j]), text) == 0)
                dup = j;
        if (dup >= 0) {
            app_cfg_error(ctx, s, "%s.name: \"%s\" is already the name of ports[%d]", where, text, dup);
        } else {
            ctx->port_name[i] = s;
            port->name = app_cfg_strdup(ctx, text);
        }
    }

    text = app_cfg_read_str(ctx, entry, where, "role", true, &s);
    if (text != NULL) {
        if (strcmp(text, "pods") == 0) {
            port->role = APP_PORT_PODS;
        } else if (strcmp(text, "fabric") == 0) {
            port->role = APP_PORT_FABRIC;
            if (*fabric >= 0)
                app_cfg_error(ctx, s, "%s.role: \"fabric\" is already the role of ports[%d]; at most one port may "
                             "face the fabric", where, *fabric);
            else
                *fabric = i;
        } else {
            app_cfg_error(ctx, s, "%s.role: \"%s\" is not a port role (pods | fabric)", where, text);
        }
    }

    text = app_cfg_read_str(ctx, entry, where, "devargs", true, &s);
    if (text != NULL && text[0] == '\0')
        app_cfg_error(ctx, s, "%s.devargs: \"\" is empty; give a vdev or a PCI address", where);
    else if (text != NULL)
        port->devargs = app_cfg_strdup(ctx, text);

    if (!config_parse_port_address(ctx, i, entry, where))
        ctx->port_addr_bad = true;

    app_cfg_read_u32(ctx, entry, where, "mtu", 68, 9000, &mtu);
    port->mtu = (uint16_t)mtu;
}

static void config_parse_ports(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    const config_setting_t *list = app_cfg_member(ctx, root, "", "ports", true);
    int n, fabric = -1;

    if (list == NULL) {
        ctx->port_addr_bad = true;
        return;
    }
    if (!app_cfg_check_type(ctx, list, "ports", CONFIG_TYPE_LIST)) {
        ctx->port_addr_bad = true;
        return;
    }
    n = config_setting_length(list);
    if (n == 0) {
        app_cfg_error(ctx, list, "ports: the list is empty; at least one port is required");
        ctx->port_addr_bad = true;
        return;
    }
    if (n > APP_CONFIG_MAX_PORTS) {
        app_cfg_error(ctx, list, "ports: %d ports given, at most %d are allowed", n, APP_CONFIG_MAX_PORTS);
        n = APP_CONFIG_MAX_PORTS;
    }
    for (int i = 0; i < n; i++) {
        config_parse_port(ctx, i, config_setting_get_elem(list, (unsigned)i), &fabric);
        ctx->cfg->n_ports = i + 1;
    }

    /* Connected subnets must be disjoint, or the egress port of a neighbour would be ambiguous. */
    for (int j = 1; j < n; j++) {
        for (int i = 0; i < j && ctx->port_addr[j] != NULL; i++) {
            char net[20];

            if (ctx->port_addr[i] == NULL ||
                !config_prefix_overlaps(&ctx->cfg->ports[i].address, &ctx->cfg->ports[j].address))
                continue;
            app_cfg_error(ctx, ctx->port_addr[j], "ports[%d].address: \"%s\" overlaps the subnet of ports[%d] (%s)", j,
                         config_setting_get_string(ctx->port_addr[j]), i,
                         config_format_net(&ctx->cfg->ports[i].address, net));
            break;
        }
    }
}

static void config_parse_route(struct app_cfg_ctx *ctx, int i, const config_setting_t *entry)
{
    static const char *const known[] = {"prefix", "via", NULL};
    struct app_route_config *route = &ctx->cfg->routes[i];
    const config_setting_t *s;
    const char *text;
    char where[32];

    snprintf(where, sizeof(where), "routes[%d]", i);
    route->line = (int)config_setting_source_line(entry);
    if (!app_cfg_check_type(ctx, entry, where, CONFIG_TYPE_GROUP))
        return;
    app_cfg_check_unknown(ctx, entry, where, known);

    text = app_cfg_read_str(ctx, entry, where, "prefix", true, &s);
    if (text != NULL) {
        struct app_ipv4_prefix p;
        char net[20];

        if (app_ipv4_prefix_parse(text, &p) != 0)
            app_cfg_error(ctx, s, "%s.prefix: \"%s\" is not an IPv4 prefix (a.b.c.d/len)", where, text);
        else if ((p.addr & ~config_mask(p.len)) != 0)
            app_cfg_error(ctx, s, "%s.prefix: \"%s\" has host bits set (the network is %s)", where, text,
                         config_format_net(&p, net));
        else {
            route->prefix = p;
            ctx->route_prefix[i] = s;
        }
    }

    text = app_cfg_read_str(ctx, entry, where, "via", true, &s);
    if (text != NULL) {
        if (app_ipv4_parse(text, &route->via) != 0)
            app_cfg_error(ctx, s, "%s.via: \"%s\" is not an IPv4 address (a.b.c.d)", where, text);
        else
            ctx->route_via[i] = s;
    }
}

/* Route checks against the ports and each other: duplicates, overlap with connected subnets, next hops. */
static void config_check_routes(struct app_cfg_ctx *ctx)
{
    const struct app_config *cfg = ctx->cfg;

    for (int i = 0; i < cfg->n_routes; i++) {
        const struct app_route_config *r = &cfg->routes[i];
        const config_setting_t *ps = ctx->route_prefix[i];
        const config_setting_t *vs = ctx->route_via[i];
        char net[20];

        if (ps != NULL) {
            int dup = -1, port = -1;

            for (int j = 0; j < i && dup < 0; j++)
                if (ctx->route_prefix[j] != NULL && cfg->routes[j].prefix.addr == r->prefix.addr &&
                    cfg->routes[j].prefix.len == r->prefix.len)
                    dup = j;
            for (int j = 0; j < cfg->n_ports && port < 0; j++)
                if (ctx->port_addr[j] != NULL && config_prefix_overlaps(&r->prefix, &cfg->ports[j].address))
                    port = j;
            if (dup >= 0)
                app_cfg_error(ctx, ps, "routes[%d].prefix: \"%s\" duplicates routes[%d]", i,
                             config_setting_get_string(ps), dup);
            if (port >= 0)
                app_cfg_error(ctx, ps, "routes[%d].prefix: \"%s\" overlaps the connected subnet of ports[%d] (%s)", i,
                             config_setting_get_string(ps), port, config_format_net(&cfg->ports[port].address, net));
        }
        if (vs != NULL && !ctx->port_addr_bad) {
            int inside = -1;

            for (int j = 0; j < cfg->n_ports && inside < 0; j++) {
                const struct app_ipv4_prefix *a = &cfg->ports[j].address;

                if ((r->via & config_mask(a->len)) == (a->addr & config_mask(a->len)))
                    inside = j;
            }
            if (inside < 0)
                app_cfg_error(ctx, vs, "routes[%d].via: \"%s\" is not inside any connected subnet", i,
                             config_setting_get_string(vs));
            else if (r->via == cfg->ports[inside].address.addr)
                app_cfg_error(ctx, vs, "routes[%d].via: \"%s\" is our own address on ports[%d]", i,
                             config_setting_get_string(vs), inside);
        }
    }
}

static void config_parse_routes(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    const config_setting_t *list = app_cfg_member(ctx, root, "", "routes", false);
    int n;

    if (list == NULL || !app_cfg_check_type(ctx, list, "routes", CONFIG_TYPE_LIST))
        return;
    n = config_setting_length(list);
    if (n > APP_CONFIG_MAX_ROUTES) {
        app_cfg_error(ctx, list, "routes: %d routes given, at most %d are allowed", n, APP_CONFIG_MAX_ROUTES);
        n = APP_CONFIG_MAX_ROUTES;
    }
    for (int i = 0; i < n; i++) {
        config_parse_route(ctx, i, config_setting_get_elem(list, (unsigned)i));
        ctx->cfg->n_routes = i + 1;
    }
}

static void config_parse_dataplane(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    static const char *const known[] = {"workers", "mbufs", "rx_burst", "idle_backoff", "arp", NULL};
    static const char *const known_backoff[] = {"enabled", "empty_polls", "sleep_us", NULL};
    static const char *const known_arp[] = {"timeout_s", "pending_max", NULL};
    struct app_dataplane_config *dp = &ctx->cfg->dataplane;
    const config_setting_t *g = app_cfg_read_group(ctx, root, "", "dataplane", false);
    const config_setting_t *sub;

    if (g == NULL)
        return;
    app_cfg_check_unknown(ctx, g, "dataplane", known);
    app_cfg_read_u32(ctx, g, "dataplane", "workers", 1, APP_CONFIG_MAX_WORKERS, &dp->workers);
    app_cfg_read_u32(ctx, g, "dataplane", "mbufs", 1023, UINT32_MAX, &dp->mbufs);
    app_cfg_read_u32(ctx, g, "dataplane", "rx_burst", 1, 256, &dp->rx_burst);

    sub = app_cfg_read_group(ctx, g, "dataplane", "idle_backoff", false);
    if (sub != NULL) {
        app_cfg_check_unknown(ctx, sub, "dataplane.idle_backoff", known_backoff);
        app_cfg_read_bool(ctx, sub, "dataplane.idle_backoff", "enabled", &dp->backoff.enabled);
        app_cfg_read_u32(ctx, sub, "dataplane.idle_backoff", "empty_polls", 1, UINT32_MAX, &dp->backoff.empty_polls);
        app_cfg_read_u32(ctx, sub, "dataplane.idle_backoff", "sleep_us", 1, 1000000, &dp->backoff.sleep_us);
    }
    sub = app_cfg_read_group(ctx, g, "dataplane", "arp", false);
    if (sub != NULL) {
        app_cfg_check_unknown(ctx, sub, "dataplane.arp", known_arp);
        app_cfg_read_u32(ctx, sub, "dataplane.arp", "timeout_s", 1, 86400, &dp->arp_timeout_s);
        app_cfg_read_u32(ctx, sub, "dataplane.arp", "pending_max", 1, 4096, &dp->arp_pending_max);
    }
}

static void config_parse_extra_args(struct app_cfg_ctx *ctx, const config_setting_t *eal)
{
    const config_setting_t *s = app_cfg_member(ctx, eal, "eal", "extra_args", false);
    struct app_eal_config *e = &ctx->cfg->eal;
    char got[160];
    int n;

    if (s == NULL)
        return;
    if (config_setting_type(s) != CONFIG_TYPE_ARRAY && config_setting_type(s) != CONFIG_TYPE_LIST) {
        app_cfg_error(ctx, s, "eal.extra_args: expected an array of strings, got %s",
                     app_cfg_describe(s, got, sizeof(got)));
        return;
    }
    n = config_setting_length(s);
    if (n > APP_CONFIG_MAX_EAL_ARGS) {
        app_cfg_error(ctx, s, "eal.extra_args: %d arguments given, at most %d are allowed", n,
                     APP_CONFIG_MAX_EAL_ARGS);
        n = APP_CONFIG_MAX_EAL_ARGS;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *a = config_setting_get_elem(s, (unsigned)i);
        char path[32];

        snprintf(path, sizeof(path), "eal.extra_args[%d]", i);
        if (!app_cfg_check_type(ctx, a, path, CONFIG_TYPE_STRING))
            continue;
        e->extra[e->n_extra] = app_cfg_strdup(ctx, config_setting_get_string(a));
        if (e->extra[e->n_extra] != NULL)
            e->n_extra++;
    }
}

static void config_parse_eal(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    static const char *const known[] = {"file_prefix", "memory_mb", "no_huge", "extra_args", NULL};
    struct app_eal_config *e = &ctx->cfg->eal;
    const config_setting_t *g = app_cfg_read_group(ctx, root, "", "eal", false);
    const config_setting_t *s;
    const char *text;

    if (ctx->cfg->node_name != NULL) {
        char *d = NULL;

        if (asprintf(&d, "zwire-%s", ctx->cfg->node_name) < 0)
            ctx->oom = true;
        else
            e->file_prefix = d;
    }
    if (g == NULL)
        return;
    app_cfg_check_unknown(ctx, g, "eal", known);
    text = app_cfg_read_str(ctx, g, "eal", "file_prefix", false, &s);
    if (text != NULL) {
        if (text[0] == '\0' || strpbrk(text, "/ \t\n") != NULL)
            app_cfg_error(ctx, s, "eal.file_prefix: \"%s\" is not a valid file prefix (non-empty, no '/' or spaces)",
                         text);
        else
            app_cfg_set_str(ctx, &e->file_prefix, text);
    }
    app_cfg_read_u32(ctx, g, "eal", "memory_mb", 64, UINT32_MAX, &e->memory_mb);
    app_cfg_read_bool(ctx, g, "eal", "no_huge", &e->no_huge);
    config_parse_extra_args(ctx, g);
}

int app_cfg_parse_endpoint(const char *text, uint32_t *addr, uint16_t *port)
{
    const char *p = text;
    uint32_t a, n;

    if (config_parse_ipv4_at(&p, &a) != 0 || *p++ != ':' || config_parse_decimal(&p, 5, &n) != 0 || *p != '\0' ||
        n < 1 || n > 65535)
        return -EINVAL;
    *addr = a;
    *port = (uint16_t)n;
    return 0;
}

/* "a.b.c.d:port" with port 1..65535. */
static bool config_check_listen(const char *text)
{
    uint32_t addr;
    uint16_t port;

    return app_cfg_parse_endpoint(text, &addr, &port) == 0;
}

static void config_parse_mgmt(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    static const char *const known[] = {"socket", "metrics_listen", NULL};
    struct app_mgmt_config *m = &ctx->cfg->mgmt;
    const config_setting_t *g = app_cfg_read_group(ctx, root, "", "mgmt", false);
    const config_setting_t *s;
    const char *text;

    if (g == NULL)
        return;
    app_cfg_check_unknown(ctx, g, "mgmt", known);
    text = app_cfg_read_str(ctx, g, "mgmt", "socket", false, &s);
    if (text != NULL) {
        if (text[0] != '/')
            app_cfg_error(ctx, s, "mgmt.socket: \"%s\" is not an absolute path", text);
        else if (strlen(text) >= CONFIG_SUN_PATH_BYTES)
            app_cfg_error(ctx, s, "mgmt.socket: \"%s\" is %zu bytes long; a socket path must be shorter than %d bytes",
                         text, strlen(text), CONFIG_SUN_PATH_BYTES);
        else
            app_cfg_set_str(ctx, &m->socket_path, text);
    }
    text = app_cfg_read_str(ctx, g, "mgmt", "metrics_listen", false, &s);
    if (text != NULL) {
        if (!config_check_listen(text))
            app_cfg_error(ctx, s, "mgmt.metrics_listen: \"%s\" is not ip:port (a.b.c.d:1..65535)", text);
        else
            app_cfg_set_str(ctx, &m->metrics_listen, text);
    }
}

static void config_parse_log(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    static const char *const known[] = {"level", NULL};
    const config_setting_t *g = app_cfg_read_group(ctx, root, "", "log", false);
    const config_setting_t *s;
    const char *text;
    bool found = false;

    if (g == NULL)
        return;
    app_cfg_check_unknown(ctx, g, "log", known);
    text = app_cfg_read_str(ctx, g, "log", "level", false, &s);
    if (text == NULL)
        return;
    for (unsigned i = 0; i < sizeof(config_level_names) / sizeof(config_level_names[0]) && !found; i++) {
        if (strcmp(text, config_level_names[i]) == 0) {
            ctx->cfg->log_level = (enum app_log_level)i;
            found = true;
        }
    }
    if (!found)
        app_cfg_error(ctx, s, "log.level: \"%s\" is not a log level (error | warn | info | debug)", text);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Entry points
 * ------------------------------------------------------------------------------------------------------------ */

static struct app_config *config_new_defaults(struct app_cfg_ctx *ctx, const char *name)
{
    struct app_config *cfg = calloc(1, sizeof(*cfg));

    if (cfg == NULL) {
        ctx->oom = true;
        return NULL;
    }
    cfg->path = app_cfg_strdup(ctx, name);
    cfg->dataplane.workers = 1;
    cfg->dataplane.mbufs = 8191;
    cfg->dataplane.rx_burst = 32;
    cfg->dataplane.backoff.enabled = false;
    cfg->dataplane.backoff.empty_polls = 100;
    cfg->dataplane.backoff.sleep_us = 500;
    cfg->dataplane.arp_timeout_s = 300;
    cfg->dataplane.arp_pending_max = 64;
    cfg->eal.memory_mb = 256;
    cfg->eal.no_huge = false;
    cfg->mgmt.socket_path = app_cfg_strdup(ctx, APP_CONFIG_DEFAULT_MGMT_SOCKET);
    cfg->mgmt.metrics_listen = NULL;
    cfg->log_level = APP_LOG_INFO;
    return cfg;
}

/* Sections parsed in their own files. */
static const struct app_cfg_section *const config_sections[] = {&app_cfg_section_tcp, &app_cfg_section_mesh,
                                                                &app_cfg_section_authz, &app_cfg_section_xds};

#define CONFIG_MAX_TOP_KEYS 32

static void config_validate(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    static const char *const own[] = {"node", "ports", "routes", "dataplane", "eal", "mgmt", "log"};
    const char *known[CONFIG_MAX_TOP_KEYS];
    size_t n = 0;

    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        known[n++] = own[i];
    for (size_t i = 0; i < sizeof(config_sections) / sizeof(config_sections[0]); i++)
        for (const char *const *k = config_sections[i]->keys; *k != NULL && n + 1 < CONFIG_MAX_TOP_KEYS; k++)
            known[n++] = *k;
    known[n] = NULL;
    app_cfg_check_unknown(ctx, root, "", known);
    config_parse_node(ctx, root);
    config_parse_ports(ctx, root);
    config_parse_routes(ctx, root);
    config_check_routes(ctx);
    config_parse_dataplane(ctx, root);
    config_parse_eal(ctx, root);
    config_parse_mgmt(ctx, root);
    config_parse_log(ctx, root);
    for (size_t i = 0; i < sizeof(config_sections) / sizeof(config_sections[0]); i++)
        config_sections[i]->parse(ctx, root);
}

/*
 * Shared tail of both loaders. fp != NULL reads a stream, otherwise text. errs is initialised here.
 */
static struct app_config *config_load(FILE *fp, const char *text, const char *name, struct app_config_errors *errs)
{
    struct app_cfg_ctx ctx = {.name = name};
    struct app_config *cfg = NULL;
    config_t lc;
    int ok;

    config_init(&lc);
    ok = fp != NULL ? config_read(&lc, fp) : config_read_string(&lc, text);
    if (!ok) {
        const char *file = config_error_file(&lc) != NULL ? config_error_file(&lc) : name;
        char *msg = NULL;

        const char *what = config_error_text(&lc) != NULL ? config_error_text(&lc) : "cannot read the file";

        if (asprintf(&msg, "%s:%d: %s", file, config_error_line(&lc), what) < 0)
            msg = NULL;
        app_cfg_add_msg(&ctx, (unsigned)config_error_line(&lc), msg);
    } else {
        cfg = config_new_defaults(&ctx, name);
        ctx.cfg = cfg;
        if (cfg != NULL)
            config_validate(&ctx, config_root_setting(&lc));
    }
    config_destroy(&lc);

    if (ctx.oom) {
        char *msg = NULL;

        if (asprintf(&msg, "%s:0: out of memory while loading the configuration", name) < 0)
            msg = NULL;
        app_cfg_add_msg(&ctx, 0, msg);
    }
    if (ctx.n_msgs > 0 || ctx.oom) {
        app_config_free(cfg);
        cfg = NULL;
    }
    config_flush_msgs(&ctx, errs);
    return cfg;
}

struct app_config *app_config_load(const char *path, struct app_config_errors *errs)
{
    struct app_cfg_ctx ctx = {.name = path};
    struct app_config *cfg;
    FILE *fp;

    if (errs != NULL)
        *errs = (struct app_config_errors){0};
    fp = fopen(path, "r");
    if (fp == NULL) {
        int e = errno;

        app_cfg_error(&ctx, NULL, "cannot open: %s", strerror(e));
        config_flush_msgs(&ctx, errs);
        return NULL;
    }
    cfg = config_load(fp, NULL, path, errs);
    fclose(fp);
    return cfg;
}

struct app_config *app_config_load_string(const char *text, const char *name, struct app_config_errors *errs)
{
    if (errs != NULL)
        *errs = (struct app_config_errors){0};
    return config_load(NULL, text, name != NULL ? name : "<string>", errs);
}

void app_config_free(struct app_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    free(cfg->node_name);
    for (int i = 0; i < APP_CONFIG_MAX_PORTS; i++) {
        free(cfg->ports[i].name);
        free(cfg->ports[i].devargs);
    }
    free(cfg->eal.file_prefix);
    for (int i = 0; i < cfg->eal.n_extra; i++)
        free(cfg->eal.extra[i]);
    free(cfg->mgmt.socket_path);
    free(cfg->mgmt.metrics_listen);
    for (size_t i = 0; i < sizeof(config_sections) / sizeof(config_sections[0]); i++)
        config_sections[i]->free(cfg);
    free(cfg);
}

void app_config_errors_fini(struct app_config_errors *errs)
{
    if (errs == NULL)
        return;
    for (int i = 0; i < errs->n; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    *errs = (struct app_config_errors){0};
}

void app_config_errors_print(const struct app_config_errors *errs, FILE *out)
{
    for (int i = 0; errs != NULL && i < errs->n; i++)
        fprintf(out, "%s\n", errs->msgs[i]);
}
