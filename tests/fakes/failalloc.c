/* SPDX-License-Identifier: Apache-2.0 */
/* tests/fakes/failalloc.c - counting allocator that fails on demand. */
#include <stdlib.h>

#include "tests/fakes/failalloc.h"

void failalloc_init(struct failalloc *fa)
{
    fa->attempts = 0;
    fa->fail_at = 0;
    fa->failures = 0;
    fa->live = 0;
}

void failalloc_arm(struct failalloc *fa, long nth)
{
    fa->attempts = 0;
    fa->failures = 0;
    fa->fail_at = nth;
}

static int failalloc_should_fail(struct failalloc *fa)
{
    fa->attempts++;
    if (fa->fail_at != 0 && fa->attempts == fa->fail_at) {
        fa->failures++;
        return 1;
    }
    return 0;
}

void *failalloc_alloc(void *u, size_t n)
{
    struct failalloc *fa = u;
    void *p;

    if (failalloc_should_fail(fa))
        return NULL;
    p = malloc(n != 0 ? n : 1);
    if (p != NULL)
        fa->live++;
    return p;
}

void *failalloc_realloc(void *u, void *p, size_t n)
{
    struct failalloc *fa = u;
    void *q;

    if (failalloc_should_fail(fa))
        return NULL;
    q = realloc(p, n != 0 ? n : 1);
    if (q != NULL && p == NULL)
        fa->live++;
    return q;
}

void failalloc_free(void *u, void *p)
{
    struct failalloc *fa = u;

    if (p == NULL)
        return;
    fa->live--;
    free(p);
}
