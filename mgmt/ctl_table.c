/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Plain-text rendering of JSON for zwirectl (see ctl_table.h).
 *
 * Invariants:
 * - Every cell is formatted once into a heap string before widths are measured; all of them are freed before return.
 */
#include "mgmt/ctl_table.h"

#include <stdlib.h>
#include <string.h>

#define MAX_COLUMNS 64

static bool is_scalar(json_t *v)
{
    return v != NULL && !json_is_object(v) && !json_is_array(v);
}

char *mgmt_ctl_table_cell(json_t *value)
{
    char buf[64];
    char *s;

    if (value == NULL)
        return strdup("");
    switch (json_typeof(value)) {
    case JSON_STRING:
        s = strdup(json_string_value(value));
        for (char *p = s; p != NULL && *p != '\0'; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = ' ';
        return s;
    case JSON_INTEGER:
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        return strdup(buf);
    case JSON_REAL:
        snprintf(buf, sizeof(buf), "%.6g", json_real_value(value));
        return strdup(buf);
    case JSON_TRUE:
        return strdup("true");
    case JSON_FALSE:
        return strdup("false");
    case JSON_NULL:
        return strdup("-");
    default:
        return json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    }
}

static bool column_has(const char **keys, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i], key) == 0)
            return true;
    return false;
}

static bool rows_have_key(json_t *rows, const char *key)
{
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        if (json_is_object(row) && json_object_get(row, key) != NULL)
            return true;
    }
    return false;
}

void mgmt_ctl_table_print(FILE *out, const char *title, json_t *rows, const struct mgmt_ctl_column *cols,
                          size_t n_cols, bool auto_extra)
{
    const char *keys[MAX_COLUMNS];
    const char *titles[MAX_COLUMNS];
    size_t nk = 0;

    if (title != NULL)
        fprintf(out, "%s\n", title);
    if (!json_is_array(rows) || json_array_size(rows) == 0) {
        fprintf(out, "  (none)\n");
        return;
    }

    for (size_t c = 0; c < n_cols && nk < MAX_COLUMNS; c++) {
        if (rows_have_key(rows, cols[c].key) && !column_has(keys, nk, cols[c].key)) {
            keys[nk] = cols[c].key;
            titles[nk++] = cols[c].title != NULL ? cols[c].title : cols[c].key;
        }
    }
    if (auto_extra || n_cols == 0) {
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row)
        {
            const char *k;
            json_t *v;
            if (!json_is_object(row))
                continue;
            json_object_foreach(row, k, v)
            {
                if (nk < MAX_COLUMNS && is_scalar(v) && !column_has(keys, nk, k)) {
                    keys[nk] = k;
                    titles[nk++] = k;
                }
            }
        }
    }
    bool value_column = nk == 0;
    if (value_column) {
        keys[0] = "";
        titles[0] = "value";
        nk = 1;
    }

    size_t nrows = json_array_size(rows);
    char **cells = calloc(nrows * nk, sizeof(*cells));
    size_t width[MAX_COLUMNS];
    bool right[MAX_COLUMNS];
    if (cells == NULL)
        return;
    for (size_t c = 0; c < nk; c++) {
        width[c] = strlen(titles[c]);
        right[c] = true;
    }
    for (size_t r = 0; r < nrows; r++) {
        json_t *row = json_array_get(rows, r);
        for (size_t c = 0; c < nk; c++) {
            json_t *v = value_column || !json_is_object(row) ? (c == 0 ? row : NULL) : json_object_get(row, keys[c]);
            cells[r * nk + c] = mgmt_ctl_table_cell(v);
            if (cells[r * nk + c] != NULL && strlen(cells[r * nk + c]) > width[c])
                width[c] = strlen(cells[r * nk + c]);
            if (v != NULL && !json_is_number(v))
                right[c] = false;
        }
    }

    fprintf(out, " ");
    for (size_t c = 0; c < nk; c++) {
        if (right[c])
            fprintf(out, " %*s", (int)width[c], titles[c]);
        else if (c + 1 == nk)
            fprintf(out, " %s", titles[c]);
        else
            fprintf(out, " %-*s", (int)width[c], titles[c]);
    }
    fprintf(out, "\n");
    for (size_t r = 0; r < nrows; r++) {
        fprintf(out, " ");
        for (size_t c = 0; c < nk; c++) {
            const char *s = cells[r * nk + c] != NULL ? cells[r * nk + c] : "?";
            if (right[c])
                fprintf(out, " %*s", (int)width[c], s);
            else if (c + 1 == nk)
                fprintf(out, " %s", s);
            else
                fprintf(out, " %-*s", (int)width[c], s);
        }
        fprintf(out, "\n");
    }
    for (size_t i = 0; i < nrows * nk; i++)
        free(cells[i]);
    free(cells);
}

static bool is_zero(json_t *v)
{
    return (json_is_integer(v) && json_integer_value(v) == 0) || (json_is_real(v) && json_real_value(v) == 0.0);
}

size_t mgmt_ctl_table_print_kv(FILE *out, const char *title, json_t *obj, bool skip_zero)
{
    const char *k;
    json_t *v;
    size_t kw = 0;
    size_t vw = 0;
    size_t lines = 0;

    if (title != NULL)
        fprintf(out, "%s\n", title);
    if (!json_is_object(obj))
        return 0;
    json_object_foreach(obj, k, v)
    {
        if (skip_zero && is_zero(v))
            continue;
        char *s = mgmt_ctl_table_cell(v);
        if (strlen(k) > kw)
            kw = strlen(k);
        if (s != NULL && json_is_number(v) && strlen(s) > vw)
            vw = strlen(s);
        free(s);
    }
    json_object_foreach(obj, k, v)
    {
        if (skip_zero && is_zero(v))
            continue;
        char *s = mgmt_ctl_table_cell(v);
        if (json_is_number(v))
            fprintf(out, "  %-*s  %*s\n", (int)kw, k, (int)vw, s != NULL ? s : "?");
        else
            fprintf(out, "  %-*s  %s\n", (int)kw, k, s != NULL ? s : "?");
        free(s);
        lines++;
    }
    return lines;
}

static bool is_list_of_objects(json_t *v)
{
    size_t i;
    json_t *e;
    if (!json_is_array(v) || json_array_size(v) == 0)
        return false;
    json_array_foreach(v, i, e)
    {
        if (!json_is_object(e))
            return false;
    }
    return true;
}

void mgmt_ctl_table_print_any(FILE *out, const char *name, json_t *value, bool skip_zero)
{
    if (is_list_of_objects(value) || (json_is_array(value) && json_array_size(value) == 0)) {
        mgmt_ctl_table_print(out, name, value, NULL, 0, true);
        return;
    }
    if (json_is_object(value)) {
        const char *k;
        json_t *v;
        bool nested = false;
        json_object_foreach(value, k, v)
        {
            if (json_is_object(v) || is_list_of_objects(v))
                nested = true;
        }
        if (!nested) {
            if (mgmt_ctl_table_print_kv(out, name, value, skip_zero) == 0)
                fprintf(out, "  %s\n", json_object_size(value) == 0 ? "(empty)" : "(all zero)");
            return;
        }
        /* Scalars of this object first, then each nested value as its own section. */
        json_t *flat = json_object();
        json_object_foreach(value, k, v)
        {
            if (flat != NULL && !json_is_object(v) && !is_list_of_objects(v))
                json_object_set(flat, k, v);
        }
        if (flat != NULL && json_object_size(flat) > 0)
            mgmt_ctl_table_print_kv(out, name, flat, skip_zero);
        json_decref(flat);
        json_object_foreach(value, k, v)
        {
            if (!json_is_object(v) && !is_list_of_objects(v))
                continue;
            size_t len = strlen(name) + strlen(k) + 2;
            char *sub = malloc(len);
            if (sub == NULL)
                continue;
            snprintf(sub, len, "%s.%s", name, k);
            fprintf(out, "\n");
            mgmt_ctl_table_print_any(out, sub, v, skip_zero);
            free(sub);
        }
        return;
    }
    char *s = mgmt_ctl_table_cell(value);
    fprintf(out, "%s: %s\n", name, s != NULL ? s : "?");
    free(s);
}
