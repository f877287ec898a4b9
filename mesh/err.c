/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/err.c - tables generated from mesh/err.def. */
#include <stddef.h>

#include "mesh/err.h"

struct err_info {
    int code;
    bool fatal;
    enum mesh_reason reason;
    const char *name;
    const char *text;
};

static const struct err_info err_table[] = {
#define MESH_ERR_X(name, cls, idx, fatal, reason, text)                                                                \
    {MESH_ERR_##name, (fatal) != 0, MESH_REASON_##reason, "MESH_ERR_" #name, text},
#include "mesh/err.def"
#undef MESH_ERR_X
};

static const char *const reason_words[MESH_REASON_COUNT] = {
    [MESH_REASON_NONE] = "",           [MESH_REASON_REFUSED] = "refused",
    [MESH_REASON_TIMEOUT] = "timeout", [MESH_REASON_UNROUTABLE] = "unroutable",
    [MESH_REASON_DENIED] = "denied",   [MESH_REASON_TLS] = "tls",
    [MESH_REASON_H2] = "h2",           [MESH_REASON_INTERNAL] = "internal",
};

static const struct err_info *err_lookup(int err)
{
    for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
        if (err_table[i].code == err)
            return &err_table[i];
    return NULL;
}

bool mesh_err_is_valid(int err)
{
    return err_lookup(err) != NULL;
}

bool mesh_err_is_fatal(int err)
{
    const struct err_info *e;

    if (err == MESH_OK)
        return false;
    e = err_lookup(err);
    return e == NULL || e->fatal;
}

enum mesh_reason mesh_err_reason(int err)
{
    const struct err_info *e;

    if (err == MESH_OK)
        return MESH_REASON_NONE;
    e = err_lookup(err);
    return e != NULL ? e->reason : MESH_REASON_INTERNAL;
}

const char *mesh_err_name(int err)
{
    const struct err_info *e = err_lookup(err);

    if (err == MESH_OK)
        return "MESH_OK";
    return e != NULL ? e->name : "MESH_ERR_UNKNOWN";
}

const char *mesh_err_str(int err)
{
    const struct err_info *e = err_lookup(err);

    if (err == MESH_OK)
        return "success";
    return e != NULL ? e->text : "unknown error";
}

const char *mesh_reason_str(enum mesh_reason reason)
{
    if ((unsigned)reason >= MESH_REASON_COUNT)
        return "internal";
    return reason_words[reason];
}
