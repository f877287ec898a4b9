/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/defer.h - deferred work for one proxy: the queue that keeps upcalls out of downcalls.
 *
 * Invariants:
 *  - Every entry point into the proxy (a backend upcall, an accept, a timer run) brackets its work with
 *    mesh_sched_enter / mesh_sched_leave. Work posted meanwhile runs when the outermost leave is reached, in posting
 *    order, before the entry point returns; work posted while running the queue runs in the same leave.
 *  - An item is queued at most once (posting a queued item is a no-op). Items are embedded in their owners, which
 *    must cancel them (mesh_sched_cancel) or let them run before freeing the storage.
 */
#ifndef MESH_DEFER_H
#define MESH_DEFER_H

#include <stdbool.h>
#include <stddef.h>

struct mesh_sched_item;
typedef void (*mesh_sched_fn)(struct mesh_sched_item *it);

struct mesh_sched_item {
    struct mesh_sched_item *next;
    mesh_sched_fn fn;
    bool queued;
};

struct mesh_sched {
    struct mesh_sched_item *head;
    struct mesh_sched_item *tail;
    int depth;
};

static inline void mesh_sched_item_init(struct mesh_sched_item *it, mesh_sched_fn fn)
{
    it->next = NULL;
    it->fn = fn;
    it->queued = false;
}

static inline void mesh_sched_post(struct mesh_sched *s, struct mesh_sched_item *it)
{
    if (it->queued)
        return;
    it->queued = true;
    it->next = NULL;
    if (s->tail != NULL)
        s->tail->next = it;
    else
        s->head = it;
    s->tail = it;
}

static inline void mesh_sched_cancel(struct mesh_sched *s, struct mesh_sched_item *it)
{
    if (!it->queued)
        return;
    struct mesh_sched_item **pp = &s->head, *prev = NULL;
    while (*pp != NULL && *pp != it) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == it) {
        *pp = it->next;
        if (s->tail == it)
            s->tail = prev;
    }
    it->queued = false;
}

static inline void mesh_sched_enter(struct mesh_sched *s)
{
    s->depth++;
}

/* Run the queue (only at the outermost level). */
static inline void mesh_sched_leave(struct mesh_sched *s)
{
    if (s->depth > 1) {
        s->depth--;
        return;
    }
    /* still "inside" while draining, so work run here posts instead of recursing */
    while (s->head != NULL) {
        struct mesh_sched_item *it = s->head;
        s->head = it->next;
        if (s->head == NULL)
            s->tail = NULL;
        it->queued = false;
        it->fn(it);
    }
    s->depth--;
}

#endif /* MESH_DEFER_H */
