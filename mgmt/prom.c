/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prometheus exposition writer (see prom.h).
 *
 * Invariants:
 * - buf is always NUL-terminated after len bytes.
 * - families[] lists every family declared so far; cur is the index of the current one or -1.
 */
#include "mgmt/prom.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct prom_family {
    char *name;        /* as declared */
    char *sample_name; /* name samples are written with */
    enum mgmt_prom_type type;
};

struct mgmt_prom {
    enum mgmt_prom_format format;
    char *buf;
    size_t len;
    size_t cap;
    struct prom_family *families;
    size_t n_families;
    size_t cap_families;
    long cur;
    int err;
    bool finished;
};

enum mgmt_prom_format mgmt_prom_format_from_accept(const char *accept)
{
    static const char om[] = "application/openmetrics-text";
    const char *s = accept;
    while (s != NULL && *s != '\0') {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        if (strncasecmp(s, om, sizeof(om) - 1) == 0)
            return MGMT_PROM_OPENMETRICS;
        s = strchr(s, ',');
    }
    return MGMT_PROM_TEXT;
}

const char *mgmt_prom_content_type(enum mgmt_prom_format format)
{
    return format == MGMT_PROM_OPENMETRICS ? MGMT_PROM_CONTENT_TYPE_OPENMETRICS : MGMT_PROM_CONTENT_TYPE_TEXT;
}

struct mgmt_prom *mgmt_prom_new(enum mgmt_prom_format format, const char **err)
{
    struct mgmt_prom *p = calloc(1, sizeof(*p));
    if (p != NULL) {
        p->cap = 4096;
        p->buf = malloc(p->cap);
    }
    if (p == NULL || p->buf == NULL) {
        free(p);
        if (err != NULL)
            *err = "out of memory";
        return NULL;
    }
    p->buf[0] = '\0';
    p->format = format;
    p->cur = -1;
    return p;
}

void mgmt_prom_free(struct mgmt_prom *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n_families; i++) {
        free(p->families[i].name);
        free(p->families[i].sample_name);
    }
    free(p->families);
    free(p->buf);
    free(p);
}

static int prom_fail(struct mgmt_prom *p, int err)
{
    if (p->err == 0)
        p->err = err;
    return err;
}

static int prom_reserve(struct mgmt_prom *p, size_t extra)
{
    if (p->len + extra + 1 <= p->cap)
        return 0;
    size_t cap = p->cap;
    while (cap < p->len + extra + 1)
        cap *= 2;
    char *b = realloc(p->buf, cap);
    if (b == NULL)
        return prom_fail(p, -ENOMEM);
    p->buf = b;
    p->cap = cap;
    return 0;
}

static int prom_put(struct mgmt_prom *p, const char *s, size_t n)
{
    if (prom_reserve(p, n) != 0)
        return -ENOMEM;
    memcpy(p->buf + p->len, s, n);
    p->len += n;
    p->buf[p->len] = '\0';
    return 0;
}

static int prom_puts(struct mgmt_prom *p, const char *s)
{
    return prom_put(p, s, strlen(s));
}

/* Append s, escaping backslash and newline, plus double quote when quote is set. */
static int prom_put_escaped(struct mgmt_prom *p, const char *s, bool quote)
{
    for (; *s != '\0'; s++) {
        const char *esc = NULL;
        if (*s == '\\')
            esc = "\\\\";
        else if (*s == '\n')
            esc = "\\n";
        else if (*s == '"' && quote)
            esc = "\\\"";
        int rc = esc != NULL ? prom_put(p, esc, 2) : prom_put(p, s, 1);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static bool prom_check_name(const char *s, bool allow_colon)
{
    if (s == NULL || s[0] == '\0')
        return false;
    for (size_t i = 0; s[i] != '\0'; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (c == ':' && allow_colon) ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

int mgmt_prom_family(struct mgmt_prom *p, const char *name, enum mgmt_prom_type type, const char *help)
{
    if (p->err != 0)
        return p->err;
    if (p->finished || !prom_check_name(name, true) || (type != MGMT_PROM_COUNTER && type != MGMT_PROM_GAUGE))
        return -EINVAL;
    for (size_t i = 0; i < p->n_families; i++) {
        if (strcmp(p->families[i].name, name) != 0)
            continue;
        if ((long)i == p->cur && p->families[i].type == type)
            return 0;
        return -EEXIST;
    }
    if (p->n_families == p->cap_families) {
        size_t cap = p->cap_families == 0 ? 32 : p->cap_families * 2;
        struct prom_family *f = realloc(p->families, cap * sizeof(*f));
        if (f == NULL)
            return prom_fail(p, -ENOMEM);
        p->families = f;
        p->cap_families = cap;
    }

    /* OpenMetrics names a counter family without "_total" and its samples with it. */
    char *decl = strdup(name);
    char *sample = strdup(name);
    if (decl == NULL || sample == NULL) {
        free(decl);
        free(sample);
        return prom_fail(p, -ENOMEM);
    }
    if (p->format == MGMT_PROM_OPENMETRICS && type == MGMT_PROM_COUNTER) {
        if (has_suffix(decl, "_total")) {
            decl[strlen(decl) - strlen("_total")] = '\0';
        } else {
            char *s2 = malloc(strlen(name) + sizeof("_total"));
            if (s2 == NULL) {
                free(decl);
                free(sample);
                return prom_fail(p, -ENOMEM);
            }
            sprintf(s2, "%s_total", name);
            free(sample);
            sample = s2;
        }
    }
    p->families[p->n_families] = (struct prom_family){.name = strdup(name), .sample_name = sample, .type = type};
    if (p->families[p->n_families].name == NULL) {
        free(decl);
        free(sample);
        return prom_fail(p, -ENOMEM);
    }
    p->cur = (long)p->n_families++;

    const char *tname = type == MGMT_PROM_COUNTER ? "counter" : "gauge";
    int rc = 0;
    if (help != NULL) {
        rc |= prom_puts(p, "# HELP ");
        rc |= prom_puts(p, decl);
        rc |= prom_puts(p, " ");
        rc |= prom_put_escaped(p, help, false);
        rc |= prom_puts(p, "\n");
    }
    rc |= prom_puts(p, "# TYPE ");
    rc |= prom_puts(p, decl);
    rc |= prom_puts(p, " ");
    rc |= prom_puts(p, tname);
    rc |= prom_puts(p, "\n");
    free(decl);
    return rc != 0 ? p->err : 0;
}

static int prom_sample(struct mgmt_prom *p, const struct mgmt_prom_label *labels, size_t n, const char *value)
{
    if (p->err != 0)
        return p->err;
    if (p->finished || p->cur < 0 || (n > 0 && labels == NULL))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!prom_check_name(labels[i].name, false) || labels[i].value == NULL)
            return -EINVAL;

    int rc = prom_puts(p, p->families[p->cur].sample_name);
    if (n > 0) {
        rc |= prom_puts(p, "{");
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                rc |= prom_puts(p, ",");
            rc |= prom_puts(p, labels[i].name);
            rc |= prom_puts(p, "=\"");
            rc |= prom_put_escaped(p, labels[i].value, true);
            rc |= prom_puts(p, "\"");
        }
        rc |= prom_puts(p, "}");
    }
    rc |= prom_puts(p, " ");
    rc |= prom_puts(p, value);
    rc |= prom_puts(p, "\n");
    return rc != 0 ? p->err : 0;
}

int mgmt_prom_sample_u64(struct mgmt_prom *p, const struct mgmt_prom_label *labels, size_t n, uint64_t value)
{
    char v[32];
    snprintf(v, sizeof(v), "%" PRIu64, value);
    return prom_sample(p, labels, n, v);
}

int mgmt_prom_sample_double(struct mgmt_prom *p, const struct mgmt_prom_label *labels, size_t n, double value)
{
    char v[40];
    if (isnan(value))
        snprintf(v, sizeof(v), "NaN");
    else if (isinf(value))
        snprintf(v, sizeof(v), "%s", value > 0 ? "+Inf" : "-Inf");
    else {
        /* The shortest of %.15g..%.17g that reads back as the same value. */
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(v, sizeof(v), "%.*g", prec, value);
            if (strtod(v, NULL) == value)
                break;
        }
    }
    return prom_sample(p, labels, n, v);
}

int mgmt_prom_finish(struct mgmt_prom *p)
{
    if (p->err != 0)
        return p->err;
    if (p->finished)
        return 0;
    if (p->format == MGMT_PROM_OPENMETRICS && prom_puts(p, "# EOF\n") != 0)
        return p->err;
    p->finished = true;
    return 0;
}

const char *mgmt_prom_data(const struct mgmt_prom *p, size_t *len)
{
    if (len != NULL)
        *len = p->len;
    return p->buf;
}
