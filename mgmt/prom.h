/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prometheus exposition writer: text format 0.0.4 or OpenMetrics 1.0.0, counters and gauges.
 *
 * Invariants:
 * - A family's "# HELP" and "# TYPE" lines are written once, when the family is first declared; its samples follow
 *   contiguously. Re-declaring the current family is a no-op; re-opening an earlier family is refused (-EEXIST),
 *   because both formats require a family's samples to be contiguous.
 * - Metric and label names are validated ([a-zA-Z_:][a-zA-Z0-9_:]*, no ':' in label names); label values are escaped
 *   (backslash, double quote, newline), HELP text too (backslash, newline).
 * - In OpenMetrics mode a counter family named "x_total" is declared as "x" and its samples are written as "x_total";
 *   mgmt_prom_finish() appends "# EOF". In text mode names are written as given.
 * - Errors are sticky: after a failure, later calls return the same error and mgmt_prom_finish() reports it.
 */
#ifndef ZWIRE_MGMT_PROM_H
#define ZWIRE_MGMT_PROM_H

#include <stddef.h>
#include <stdint.h>

#define MGMT_PROM_CONTENT_TYPE_TEXT "text/plain; charset=utf-8"
#define MGMT_PROM_CONTENT_TYPE_OPENMETRICS "application/openmetrics-text;charset=utf-8;version=1.0.0"

enum mgmt_prom_format {
    MGMT_PROM_TEXT,        /* Prometheus text format 0.0.4 */
    MGMT_PROM_OPENMETRICS, /* OpenMetrics 1.0.0 */
};

enum mgmt_prom_type {
    MGMT_PROM_COUNTER,
    MGMT_PROM_GAUGE,
};

struct mgmt_prom_label {
    const char *name;
    const char *value; /* any bytes but NUL; escaped on output */
};

struct mgmt_prom;

/*
 * Pick the format from an Accept header: OpenMetrics when any entry starts with "application/openmetrics-text".
 * @param accept  header value or NULL.
 */
enum mgmt_prom_format mgmt_prom_format_from_accept(const char *accept);

/* @return the Content-Type to send for a format (static string). */
const char *mgmt_prom_content_type(enum mgmt_prom_format format);

/*
 * Create a writer with an empty output buffer.
 * @param err  set to a static message on failure.
 * @return the writer (owned by the caller; mgmt_prom_free()) or NULL.
 */
struct mgmt_prom *mgmt_prom_new(enum mgmt_prom_format format, const char **err);

/* Free the writer and its buffer. NULL is allowed. */
void mgmt_prom_free(struct mgmt_prom *p);

/*
 * Declare a family and make it current; writes HELP and TYPE the first time.
 * @param name  metric name (copied).
 * @param help  help text (may be NULL for none).
 * @return 0, -EINVAL (bad name), -EEXIST (family declared before and another one since, or declared with another
 *         type), -ENOMEM.
 */
int mgmt_prom_family(struct mgmt_prom *p, const char *name, enum mgmt_prom_type type, const char *help);

/*
 * Write a sample of the current family.
 * @param labels  n labels (names validated, values escaped); may be NULL when n == 0.
 * @return 0, -EINVAL (no current family, bad label name), -ENOMEM.
 */
int mgmt_prom_sample_u64(struct mgmt_prom *p, const struct mgmt_prom_label *labels, size_t n, uint64_t value);

/* Same, with a double value (NaN, +Inf and -Inf are written as such). */
int mgmt_prom_sample_double(struct mgmt_prom *p, const struct mgmt_prom_label *labels, size_t n, double value);

/*
 * Finish the output (OpenMetrics: append "# EOF"). No more families or samples may follow.
 * @return 0, or the first error met while writing.
 */
int mgmt_prom_finish(struct mgmt_prom *p);

/*
 * The output so far.
 * @param len  set to the length in bytes.
 * @return a NUL-terminated buffer owned by the writer, valid until the next call on it.
 */
const char *mgmt_prom_data(const struct mgmt_prom *p, size_t *len);

#endif /* ZWIRE_MGMT_PROM_H */
