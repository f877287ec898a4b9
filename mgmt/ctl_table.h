/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Plain-text rendering of JSON for zwirectl: tables from lists of objects, aligned key/value lists, and a generic
 * renderer for anything else.
 *
 * Invariants:
 * - Rendering never fails on unexpected input: unknown keys become extra columns or lines, missing keys become empty
 *   cells, values of an unexpected type are shown as compact JSON.
 * - Numbers are right-aligned, everything else left-aligned. Control characters in strings are shown as spaces.
 * - Values are never modified; they are taken as non-const json_t only because jansson's iteration API is not const.
 */
#ifndef ZWIRE_MGMT_CTL_TABLE_H
#define ZWIRE_MGMT_CTL_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

/* One column: the object key, and the heading (NULL: the key itself). */
struct mgmt_ctl_column {
    const char *key;
    const char *title;
};

/*
 * Print rows (a JSON array of objects) as a table.
 * @param title       heading printed above the table (NULL: none).
 * @param cols        preferred columns, in order; a column no row has is left out. May be NULL when n_cols is 0.
 * @param auto_extra  also show the other scalar keys found in the rows, in first-seen order, after cols.
 * Rows that are not objects are shown as one cell each. An empty or missing array prints "(none)".
 */
void mgmt_ctl_table_print(FILE *out, const char *title, json_t *rows, const struct mgmt_ctl_column *cols,
                          size_t n_cols, bool auto_extra);

/*
 * Print an object as aligned "key  value" lines (nested values as compact JSON).
 * @param skip_zero  leave out keys whose value is the number 0.
 * @return the number of lines printed.
 */
size_t mgmt_ctl_table_print_kv(FILE *out, const char *title, json_t *obj, bool skip_zero);

/*
 * Print any value under a name: a list of objects as a table, an object of scalars as a key/value list, nested
 * objects section by section ("name.sub"), scalars as "name: value".
 */
void mgmt_ctl_table_print_any(FILE *out, const char *name, json_t *value, bool skip_zero);

/*
 * Format one value as a cell.
 * @return a malloc'ed string (caller frees), or NULL on allocation failure. NULL value gives "".
 */
char *mgmt_ctl_table_cell(json_t *value);

#endif /* ZWIRE_MGMT_CTL_TABLE_H */
