#ifndef HEROLD_PRINCIPALS_H
#define HEROLD_PRINCIPALS_H

/*
 * Principals as numbers, for the reader check on the matching path.
 *
 * A principal is `user:<id>` or `group:<id>` (event.h). The table interns every principal
 * some subscription owner holds, giving it a small id, and keeps one *owner set* per
 * distinct owner principal (the token's user and groups): the sorted ids of the owner's
 * principals, shared by every subscription of that owner (refcounted), so a principal
 * with twenty groups costs its ids once, not once per subscription.
 *
 * The reader check of an event then becomes: translate the event's readers once
 * (principals_readers: hash lookups; a reader nobody holds is dropped, since no owner can
 * match it) and intersect two short sorted arrays of integers per candidate
 * (principals_may_read), instead of comparing strings reader by reader and group by group.
 *
 * An id lives as long as an owner set holds it; ids are reused after that. Owned by one
 * thread (the service thread, with subs).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "event.h"
#include "mem.h"

#define PRINCIPALS_MAX_READERS EVENT_MAX_READERS

typedef struct principals principals_t;

/* The sorted ids of one owner's principals; shared, refcounted by principals_owner_get and
 * principals_owner_put. */
typedef struct owner_set {
    struct owner_set *next; /* hash chain */
    uint64_t hash;
    uint32_t refs;
    uint32_t count;
    uint32_t ids[];
} owner_set_t;

/* An event's readers as ids: sorted, without duplicates; is_everyone for `*`. */
typedef struct reader_ids {
    bool is_everyone;
    size_t count;
    uint32_t ids[PRINCIPALS_MAX_READERS];
} reader_ids_t;

principals_t *principals_new(void);

/* Frees the table. Every owner set must have been put back. NULL is a no-op. */
void principals_free(principals_t *principals);

/* The owner set of principal (its user and groups), made or shared; one reference more. */
const owner_set_t *principals_owner_get(principals_t *principals,
                                        const auth_principal_t *principal);

/* Drops a reference taken by principals_owner_get. NULL is a no-op. */
void principals_owner_put(principals_t *principals, const owner_set_t *owner);

/* Translates an event's readers (each `*`, `user:…` or `group:…`). */
void principals_readers(const principals_t *principals, const hstr_t *readers, size_t count,
                        reader_ids_t *out);

/* The smallest id owner shares with readers (ignoring is_everyone) in *first; false when
 * they share none. */
static inline bool principals_first_shared(const owner_set_t *owner, const reader_ids_t *readers,
                                           uint32_t *first)
{
    size_t i = 0;
    size_t j = 0;
    while (i < owner->count && j < readers->count) {
        if (owner->ids[i] == readers->ids[j]) {
            *first = owner->ids[i];
            return true;
        }
        if (owner->ids[i] < readers->ids[j]) {
            i++;
        } else {
            j++;
        }
    }
    return false;
}

/* Does an owner holding owner's principals pass the reader check? */
static inline bool principals_may_read(const owner_set_t *owner, const reader_ids_t *readers)
{
    uint32_t first;
    return readers->is_everyone || principals_first_shared(owner, readers, &first);
}

/* The number of principals interned (for tests and benchmarks). */
size_t principals_count(const principals_t *principals);

#endif
