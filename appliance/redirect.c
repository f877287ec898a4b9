/* SPDX-License-Identifier: Apache-2.0 */
/*
 * appliance/redirect.c - install and remove the kernel-path capture rules (see redirect.h for the model).
 *
 * nft gets one transaction on its standard input: "table {}; delete table; table { ... }" replaces any stale copy
 * atomically, and "table {}; delete table" removes it whether or not it exists. The policy route is set with ip(8).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "appliance/log.h"
#include "appliance/redirect.h"

#define REDIRECT_RULESET_MAX_BYTES 8192
#define REDIRECT_STDERR_MAX_BYTES 1024
#define REDIRECT_CMD_TIMEOUT_MS 10000
#define REDIRECT_RULE_DEL_MAX 16

/* ---- validation and rendering ---- */

static bool redirect_is_ifname(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 15)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.'))
            return false;
    }
    return true;
}

static bool redirect_is_node_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 48)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return false;
    }
    return true;
}

static bool redirect_check(const struct app_redirect_config *cfg)
{
    if (!redirect_is_node_name(cfg->node_name) || cfg->n_pod_ifs < 1 || cfg->n_pod_ifs > APP_REDIRECT_MAX_IFS ||
        cfg->n_pod_cidrs < 1 || cfg->n_pod_cidrs > APP_REDIRECT_MAX_CIDRS)
        return false;
    for (int i = 0; i < cfg->n_pod_ifs; i++)
        if (!redirect_is_ifname(cfg->pod_ifs[i]))
            return false;
    for (int i = 0; i < cfg->n_pod_cidrs; i++)
        if (cfg->pod_cidrs[i].len > 32)
            return false;
    return true;
}

static uint16_t redirect_port(uint16_t p, uint16_t def)
{
    return p ? p : def;
}

static uint32_t redirect_table(const struct app_redirect_config *cfg)
{
    return cfg->route_table ? cfg->route_table : APP_REDIRECT_ROUTE_TABLE;
}

static uint32_t redirect_priority(const struct app_redirect_config *cfg)
{
    return cfg->rule_priority ? cfg->rule_priority : APP_REDIRECT_RULE_PRIORITY;
}

const char *app_redirect_table_name(const struct app_redirect_config *cfg, char *buf, size_t len)
{
    snprintf(buf, len, "zwire_%s", cfg->node_name ? cfg->node_name : "");
    return buf;
}

struct redirect_out {
    char *buf;
    size_t len, pos;
    bool full;
};

static void redirect_put(struct redirect_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void redirect_put(struct redirect_out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (o->full)
        return;
    va_start(ap, fmt);
    n = vsnprintf(o->buf + o->pos, o->len - o->pos, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->len - o->pos) {
        o->full = true;
        return;
    }
    o->pos += (size_t)n;
}

static void redirect_put_ifset(struct redirect_out *o, const struct app_redirect_config *cfg)
{
    redirect_put(o, "{ ");
    for (int i = 0; i < cfg->n_pod_ifs; i++)
        redirect_put(o, "%s\"%s\"", i ? ", " : "", cfg->pod_ifs[i]);
    redirect_put(o, " }");
}

int app_redirect_render(const struct app_redirect_config *cfg, char *buf, size_t len)
{
    struct redirect_out o = {.buf = buf, .len = len};
    char table[64], ip[16];
    const uint32_t mm = APP_REDIRECT_MESH_MARK, cm = APP_REDIRECT_CONN_MARK, mask = APP_REDIRECT_MARK_MASK;

    if (!redirect_check(cfg))
        return -EINVAL;
    if (len == 0)
        return -ENOSPC;
    app_redirect_table_name(cfg, table, sizeof(table));
    redirect_put(&o, "table ip %s {}\ndelete table ip %s\n", table, table);
    redirect_put(&o, "table ip %s {\n", table);
    redirect_put(&o, "    set pod_cidrs {\n        type ipv4_addr; flags interval;\n        elements = { ");
    for (int i = 0; i < cfg->n_pod_cidrs; i++) {
        const struct app_ipv4_prefix *p = &cfg->pod_cidrs[i];
        uint32_t mask_bits = p->len == 0 ? 0 : 0xffffffffu << (32 - p->len);
        redirect_put(&o, "%s%s/%u", i ? ", " : "", app_ipv4_format(p->addr & mask_bits, ip), p->len);
    }
    redirect_put(&o, " }\n    }\n");
    /* the enrolled pods (mesh mode); the capture matches on them as well as on the pod subnets */
    redirect_put(&o, "    set enrolled {\n        type ipv4_addr;\n");
    if (cfg->n_enrolled > 0) {
        redirect_put(&o, "        elements = { ");
        for (int i = 0; i < cfg->n_enrolled; i++)
            redirect_put(&o, "%s%s", i ? ", " : "", app_ipv4_format(cfg->enrolled[i], ip));
        redirect_put(&o, " }\n");
    }
    redirect_put(&o, "    }\n");
    const char *src_enrolled = cfg->only_enrolled ? " ip saddr @enrolled" : "";
    const char *dst_enrolled = cfg->only_enrolled ? " ip daddr @enrolled" : "";

    redirect_put(&o, "    chain nat_pre {\n        type nat hook prerouting priority dstnat; policy accept;\n");
    redirect_put(&o, "        meta mark & 0x%x == 0x%x return\n", mask, mm);
    redirect_put(&o, "        fib daddr type local return\n");
    redirect_put(&o, "        meta l4proto tcp%s iifname ", src_enrolled);
    redirect_put_ifset(&o, cfg);
    redirect_put(&o, " redirect to :%u\n", redirect_port(cfg->outbound_port, APP_REDIRECT_OUTBOUND_PORT));
    /* "redirect" needs an address on the incoming interface; a bridge holding the pod veths may have none, so
     * pods reached that way are sent to their gateway address (the port's own) with dnat instead. */
    for (int i = 0; i < cfg->n_pod_cidrs; i++) {
        const struct app_ipv4_prefix *p = &cfg->pod_cidrs[i];
        uint32_t mask_bits = p->len == 0 ? 0 : 0xffffffffu << (32 - p->len);
        char net[16];

        app_ipv4_format(p->addr & mask_bits, net);
        if ((p->addr & ~mask_bits) != 0)
            redirect_put(&o, "        meta l4proto tcp ip saddr %s/%u%s dnat to %s:%u\n", net, p->len, src_enrolled,
                         app_ipv4_format(p->addr, ip), redirect_port(cfg->outbound_port, APP_REDIRECT_OUTBOUND_PORT));
        else
            redirect_put(&o, "        meta l4proto tcp ip saddr %s/%u%s redirect to :%u\n", net, p->len, src_enrolled,
                         redirect_port(cfg->outbound_port, APP_REDIRECT_OUTBOUND_PORT));
    }
    redirect_put(&o, "    }\n");

    /* zwire's own HBONE dials to a local pod's 15008 never cross prerouting: send them (and, by their conntrack
     * mark, the replies of the socket that accepts them) around through lo, where the listener takes them */
    if (cfg->same_node_hbone) {
        redirect_put(&o, "    chain route_out {\n        type route hook output priority mangle; policy accept;\n");
        redirect_put(&o, "        meta mark & 0x%x == 0x%x meta l4proto tcp ip daddr @pod_cidrs tcp dport %u", mask, mm,
                     redirect_port(cfg->hbone_port, APP_REDIRECT_HBONE_PORT));
        redirect_put(&o, " meta mark set 0x%x ct mark set 0x%x\n", cm, cm);
        redirect_put(&o, "        ct mark & 0x%x == 0x%x meta mark set 0x%x\n    }\n", mask, cm, cm);
    }

    redirect_put(&o, "    chain mangle_pre {\n        type filter hook prerouting priority mangle; policy accept;\n");
    redirect_put(&o, "        meta mark & 0x%x == 0x%x return\n", mask, mm);
    /* established transparent sockets only: a wildcard listener (our 0.0.0.0:15008) must not claim flows that merely
     * cross this node towards another node's pods */
    redirect_put(&o, "        meta l4proto tcp socket transparent 1 socket wildcard 0 meta mark set 0x%x accept\n", cm);
    redirect_put(&o, "        fib daddr type local return\n");
    redirect_put(&o, "        iifname ");
    redirect_put_ifset(&o, cfg);
    redirect_put(&o, " return\n");
    redirect_put(&o, "        ip saddr @pod_cidrs return\n");
    redirect_put(&o, "        meta l4proto tcp ip daddr @pod_cidrs%s tcp dport %u", dst_enrolled,
                 redirect_port(cfg->hbone_port, APP_REDIRECT_HBONE_PORT));
    redirect_put(&o, " tproxy to :%u meta mark set 0x%x accept\n",
                 redirect_port(cfg->hbone_port, APP_REDIRECT_HBONE_PORT), cm);
    redirect_put(&o, "        meta l4proto tcp ip daddr @pod_cidrs%s tproxy to :%u meta mark set 0x%x accept\n    }\n}\n",
                 dst_enrolled, redirect_port(cfg->inbound_plain_port, APP_REDIRECT_INBOUND_PLAIN_PORT), cm);
    if (o.full)
        return -ENOSPC;
    return (int)o.pos;
}

/* ---- running nft and ip ---- */

/*
 * Run argv (argv[0] looked up in PATH) with input on its stdin; collect its stderr into err. Bounded by
 * REDIRECT_CMD_TIMEOUT_MS, after which the child is killed.
 * @return the exit status (0..255), or -errno when it could not run or was killed.
 */
static int redirect_run(char *const argv[], const char *input, char *err, size_t errlen)
{
    int in[2] = {-1, -1}, ep[2] = {-1, -1};
    size_t in_len = input ? strlen(input) : 0, in_off = 0, err_len = 0;
    char ebuf[REDIRECT_STDERR_MAX_BYTES];
    int status = 0, rc, waited = 0;
    pid_t pid;

    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
        rc = -errno;
        goto out_fds;
    }
    pid = fork();
    if (pid < 0) {
        rc = -errno;
        goto out_fds;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        dup2(in[0], STDIN_FILENO);
        dup2(devnull >= 0 ? devnull : ep[1], STDOUT_FILENO);
        dup2(ep[1], STDERR_FILENO);
        signal(SIGPIPE, SIG_DFL);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(ep[1]);
    in[0] = ep[1] = -1;
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    if (in_len == 0) {
        close(in[1]);
        in[1] = -1;
    }
    for (;;) {
        struct pollfd pfd[2] = {{.fd = ep[0], .events = POLLIN}, {.fd = in[1], .events = POLLOUT}};
        int n = poll(pfd, in[1] >= 0 ? 2 : 1, 100);

        if (n < 0 && errno != EINTR)
            break;
        if (in[1] >= 0 && (pfd[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = write(in[1], input + in_off, in_len - in_off);
            if (w > 0)
                in_off += (size_t)w;
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                in_off = in_len;
            if (in_off >= in_len) {
                close(in[1]);
                in[1] = -1;
            }
        }
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            char tmp[256];
            ssize_t r = read(ep[0], tmp, sizeof(tmp));
            if (r > 0) {
                size_t take = (size_t)r < sizeof(ebuf) - 1 - err_len ? (size_t)r : sizeof(ebuf) - 1 - err_len;
                memcpy(ebuf + err_len, tmp, take);
                err_len += take;
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                break; /* stderr closed: the child is exiting */
            }
        }
        if (n == 0 && (waited += 100) >= REDIRECT_CMD_TIMEOUT_MS) {
            kill(pid, SIGKILL);
            break;
        }
    }
    ebuf[err_len] = '\0';
    while (err_len > 0 && (ebuf[err_len - 1] == '\n' || ebuf[err_len - 1] == ' '))
        ebuf[--err_len] = '\0';
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status)) {
        rc = WEXITSTATUS(status);
        if (rc != 0 && err != NULL)
            snprintf(err, errlen, "%s exited %d: %s", argv[0], rc, err_len ? ebuf : "(no message)");
    } else {
        rc = -EINTR;
        if (err != NULL)
            snprintf(err, errlen, "%s killed (timeout or signal)", argv[0]);
    }
out_fds:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (ep[i] >= 0)
            close(ep[i]);
    }
    if (rc < 0 && err != NULL && err[0] == '\0')
        snprintf(err, errlen, "%s: %s", argv[0], strerror(-rc));
    return rc;
}

/* True when our namespace is one of the named ones (`ip netns add` bind-mounts them under /run/netns). */
static bool redirect_is_named_netns(const struct stat *self)
{
    DIR *d = opendir("/run/netns");
    struct dirent *e;
    bool found = false;

    if (d == NULL)
        return false;
    while (!found && (e = readdir(d)) != NULL) {
        char path[512];
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/run/netns/%s", e->d_name);
        found = stat(path, &st) == 0 && st.st_ino == self->st_ino && st.st_dev == self->st_dev;
    }
    closedir(d);
    return found;
}

int app_redirect_in_init_netns(void)
{
    struct stat self, init;

    if (stat("/proc/self/ns/net", &self) < 0)
        return -errno;
    if (stat("/proc/1/ns/net", &init) == 0)
        return self.st_ino == init.st_ino && self.st_dev == init.st_dev;
    /* pid 1 out of reach (a sandbox, a container): only a named namespace counts as not the initial one */
    return redirect_is_named_netns(&self) ? 0 : 1;
}

static int redirect_check_netns(const struct app_redirect_config *cfg, char *err, size_t errlen)
{
    int r;

    if (cfg->allow_init_netns)
        return 0;
    r = app_redirect_in_init_netns();
    if (r == 0)
        return 0;
    snprintf(err, errlen, "%s",
             r > 0 ? "refusing to install capture rules in the initial network namespace"
                   : "cannot tell which network namespace this is");
    return -EPERM;
}

/* Delete the fwmark rule (every copy) and our one route in the table; other routes there are left alone. */
static int redirect_remove_routing(const struct app_redirect_config *cfg, char *err, size_t errlen)
{
    char mark[32], table[16], prio[16];
    char *rule_del[] = {"ip", "-4", "rule", "del", "fwmark", mark, "lookup", table, "priority", prio, NULL};
    char *route_del[] = {"ip", "-4", "route", "del", "local", "0.0.0.0/0", "dev", "lo", "table", table, NULL};
    char tmp[256];
    int rc = 0;

    snprintf(mark, sizeof(mark), "0x%x/0x%x", APP_REDIRECT_CONN_MARK, APP_REDIRECT_MARK_MASK);
    snprintf(table, sizeof(table), "%u", redirect_table(cfg));
    snprintf(prio, sizeof(prio), "%u", redirect_priority(cfg));
    for (int i = 0; i < REDIRECT_RULE_DEL_MAX; i++) {
        tmp[0] = '\0';
        if (redirect_run(rule_del, NULL, tmp, sizeof(tmp)) != 0)
            break; /* no (more) such rule */
    }
    tmp[0] = '\0';
    if (redirect_run(route_del, NULL, tmp, sizeof(tmp)) != 0 && strstr(tmp, "No such") == NULL &&
        strstr(tmp, "table") == NULL) { /* absent already: fine */
        snprintf(err, errlen, "%s", tmp);
        rc = -EIO;
    }
    return rc;
}

static int redirect_remove_table(const struct app_redirect_config *cfg, char *err, size_t errlen)
{
    char table[64], text[160];
    char *nft[] = {"nft", "-f", "-", NULL};

    app_redirect_table_name(cfg, table, sizeof(table));
    snprintf(text, sizeof(text), "table ip %s {}\ndelete table ip %s\n", table, table);
    return redirect_run(nft, text, err, errlen) == 0 ? 0 : -EIO;
}

int app_redirect_remove(const struct app_redirect_config *cfg, char *err, size_t errlen)
{
    char e1[512] = "", e2[512] = "";
    int rc1, rc2;

    if (!redirect_is_node_name(cfg->node_name)) {
        snprintf(err, errlen, "bad node name");
        return -EINVAL;
    }
    if (redirect_check_netns(cfg, err, errlen) < 0)
        return -EPERM;
    rc1 = redirect_remove_table(cfg, e1, sizeof(e1));
    rc2 = redirect_remove_routing(cfg, e2, sizeof(e2));
    if (rc1 < 0 || rc2 < 0) {
        snprintf(err, errlen, "%s%s%s", e1, e1[0] && e2[0] ? "; " : "", e2);
        return -EIO;
    }
    return 0;
}

int app_redirect_set_enrolled(struct app_redirect_config *cfg, const uint32_t *addrs, int n, char *err,
                              size_t errlen)
{
    char *nft[] = {"nft", "-f", "-", NULL};
    char table[64], ip[16];
    struct redirect_out o;
    size_t cap;
    int rc;

    err[0] = '\0';
    if (n < 0 || n > APP_REDIRECT_MAX_ENROLLED) {
        snprintf(err, errlen, "%d enrolled pods: at most %d", n, APP_REDIRECT_MAX_ENROLLED);
        return -EINVAL;
    }
    if (n == cfg->n_enrolled && memcmp(addrs, cfg->enrolled, (size_t)n * sizeof(*addrs)) == 0)
        return 0;
    cap = 256 + (size_t)n * 18;
    o = (struct redirect_out){.buf = malloc(cap), .len = cap};
    if (o.buf == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    app_redirect_table_name(cfg, table, sizeof(table));
    redirect_put(&o, "flush set ip %s enrolled\n", table);
    if (n > 0) {
        redirect_put(&o, "add element ip %s enrolled { ", table);
        for (int i = 0; i < n; i++)
            redirect_put(&o, "%s%s", i ? ", " : "", app_ipv4_format(addrs[i], ip));
        redirect_put(&o, " }\n");
    }
    rc = redirect_run(nft, o.buf, err, errlen) != 0 ? -EIO : 0;
    free(o.buf);
    if (rc == 0) {
        memcpy(cfg->enrolled, addrs, (size_t)n * sizeof(*addrs));
        cfg->n_enrolled = n;
    }
    return rc;
}

int app_redirect_install(const struct app_redirect_config *cfg, char *err, size_t errlen)
{
    char ruleset[REDIRECT_RULESET_MAX_BYTES], mark[32], table[16], prio[16], tname[64], ignore[256];
    char *nft[] = {"nft", "-f", "-", NULL};
    char *rule_add[] = {"ip", "-4", "rule", "add", "fwmark", mark, "lookup", table, "priority", prio, NULL};
    char *route_add[] = {"ip", "-4", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", table, NULL};
    int n;

    err[0] = '\0';
    n = app_redirect_render(cfg, ruleset, sizeof(ruleset));
    if (n < 0) {
        snprintf(err, errlen, "invalid capture configuration (node name, pod interfaces or pod CIDRs)");
        return -EINVAL;
    }
    if (redirect_check_netns(cfg, err, errlen) < 0)
        return -EPERM;
    snprintf(mark, sizeof(mark), "0x%x/0x%x", APP_REDIRECT_CONN_MARK, APP_REDIRECT_MARK_MASK);
    snprintf(table, sizeof(table), "%u", redirect_table(cfg));
    snprintf(prio, sizeof(prio), "%u", redirect_priority(cfg));

    /* a stale copy of the routing part goes first; the nft transaction replaces its own table */
    redirect_remove_routing(cfg, ignore, sizeof(ignore));
    if (redirect_run(route_add, NULL, err, errlen) != 0 || redirect_run(rule_add, NULL, err, errlen) != 0 ||
        redirect_run(nft, ruleset, err, errlen) != 0) {
        app_redirect_remove(cfg, ignore, sizeof(ignore));
        return -EIO;
    }
    APP_LOG_INFO("redirect", "capture rules installed: table ip %s, fwmark 0x%x lookup %s priority %s",
                 app_redirect_table_name(cfg, tname, sizeof(tname)), APP_REDIRECT_CONN_MARK, table, prio);
    return 0;
}
