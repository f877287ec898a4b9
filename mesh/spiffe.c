/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/spiffe.c - SPIFFE ID parse/format (grammar in spiffe.h). */
#include <errno.h>
#include <string.h>

#include "mesh/spiffe.h"

#define SPIFFE_PREFIX_LEN (sizeof(MESH_SPIFFE_PREFIX) - 1)

/* Copy one segment [p, p + n) into dst (capacity MESH_SPIFFE_SEGMENT_MAX_BYTES + 1). */
static int spiffe_copy_segment(char *dst, const char *p, size_t n)
{
    if (n > MESH_SPIFFE_SEGMENT_MAX_BYTES)
        return -ENAMETOOLONG;
    memcpy(dst, p, n);
    dst[n] = '\0';
    return 0;
}

int mesh_spiffe_parse(const char *uri, size_t len, struct mesh_spiffe_id *out)
{
    const char *seg[5], *end, *p;
    size_t seglen[5];
    int nseg = 0, rc;

    if (uri == NULL || len < SPIFFE_PREFIX_LEN || memcmp(uri, MESH_SPIFFE_PREFIX, SPIFFE_PREFIX_LEN) != 0)
        return -EINVAL;
    if (memchr(uri, '\0', len) != NULL)
        return -EINVAL;
    p = uri + SPIFFE_PREFIX_LEN;
    end = uri + len;
    for (;;) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *stop = slash != NULL ? slash : end;

        if (nseg == 5)
            return -EINVAL; /* extra segment */
        seg[nseg] = p;
        seglen[nseg] = (size_t)(stop - p);
        nseg++;
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    if (nseg != 5)
        return -EINVAL;
    if (seglen[1] != 2 || memcmp(seg[1], "ns", 2) != 0 || seglen[3] != 2 || memcmp(seg[3], "sa", 2) != 0)
        return -EINVAL;
    if ((rc = spiffe_copy_segment(out->td, seg[0], seglen[0])) != 0 ||
        (rc = spiffe_copy_segment(out->ns, seg[2], seglen[2])) != 0 ||
        (rc = spiffe_copy_segment(out->sa, seg[4], seglen[4])) != 0)
        return rc;
    return 0;
}

static bool spiffe_segment_ok(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);

    return n < cap && memchr(s, '/', n) == NULL;
}

int mesh_spiffe_format(const struct mesh_spiffe_id *id, char *out, size_t cap)
{
    size_t total, tdn, nsn, san;

    if (!spiffe_segment_ok(id->td, sizeof(id->td)) || !spiffe_segment_ok(id->ns, sizeof(id->ns)) ||
        !spiffe_segment_ok(id->sa, sizeof(id->sa)))
        return -EINVAL;
    tdn = strlen(id->td);
    nsn = strlen(id->ns);
    san = strlen(id->sa);
    total = SPIFFE_PREFIX_LEN + tdn + 4 + nsn + 4 + san;
    if (cap == 0)
        return -ENOSPC;
    if (total + 1 > cap) {
        out[0] = '\0';
        return -ENOSPC;
    }
    {
        char *p = out;
        memcpy(p, MESH_SPIFFE_PREFIX, SPIFFE_PREFIX_LEN);
        p += SPIFFE_PREFIX_LEN;
        memcpy(p, id->td, tdn);
        p += tdn;
        memcpy(p, "/ns/", 4);
        p += 4;
        memcpy(p, id->ns, nsn);
        p += nsn;
        memcpy(p, "/sa/", 4);
        p += 4;
        memcpy(p, id->sa, san);
        p += san;
        *p = '\0';
    }
    return (int)total;
}

static int spiffe_set_part(char *dst, const char *src, const char *dflt)
{
    size_t n;

    if (src == NULL || src[0] == '\0')
        src = dflt;
    n = strlen(src);
    if (memchr(src, '/', n) != NULL)
        return -EINVAL;
    return spiffe_copy_segment(dst, src, n);
}

int mesh_spiffe_from_parts(const char *td, const char *ns, const char *sa, struct mesh_spiffe_id *out)
{
    int rc;

    if ((rc = spiffe_set_part(out->td, td, MESH_SPIFFE_DEFAULT_TRUST_DOMAIN)) != 0 ||
        (rc = spiffe_set_part(out->ns, ns, "")) != 0 ||
        (rc = spiffe_set_part(out->sa, sa, MESH_SPIFFE_DEFAULT_SERVICE_ACCOUNT)) != 0)
        return rc;
    return 0;
}

bool mesh_spiffe_eq(const struct mesh_spiffe_id *a, const struct mesh_spiffe_id *b)
{
    return strcmp(a->td, b->td) == 0 && strcmp(a->ns, b->ns) == 0 && strcmp(a->sa, b->sa) == 0;
}

bool mesh_spiffe_same_trust_domain(const struct mesh_spiffe_id *a, const struct mesh_spiffe_id *b)
{
    return strcmp(a->td, b->td) == 0;
}
