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
    uint64_t hash;
    uint32_t refs;
    uint32_t count;
    uint32_t ids[];
} owner_set_t;

/* An event's readers as ids: sorted, without duplicates; is_everyone for `*`. filter has
 * bit principals_filter_bit(id) set for each of them (principals_readers sets it), so that
 * asking whether an id is a reader mostly ends without a search when it is not. */
typedef struct reader_ids {
    bool is_everyone;
    size_t count;
    uint64_t filter[4];
    uint32_t ids[PRINCIPALS_MAX_READERS];
} reader_ids_t;

/* An id's bit in reader_ids_t's filter: the top 8 bits of a multiplicative hash. */
static inline unsigned principals_filter_bit(uint32_t id)
{
    return (id * UINT32_C(2654435761)) >> 24;
}

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

/* Sets readers->filter from its ids (principals_readers does; for ids set otherwise). */
void principals_readers_filter(reader_ids_t *readers);

/* Do owner and readers share an id (ignoring is_everyone)? */
static inline bool principals_share_any(const owner_set_t *owner, const reader_ids_t *readers)
{
    size_t i = 0;
    size_t j = 0;
    while (i < owner->count && j < readers->count) {
        if (owner->ids[i] == readers->ids[j]) {
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

/* Is id one of readers' ids? */
static inline bool principals_is_reader(const reader_ids_t *readers, uint32_t id)
{
    unsigned bit = principals_filter_bit(id);
    if (((readers->filter[bit >> 6] >> (bit & 63)) & 1) == 0) {
        return false;
    }
    size_t low = 0;
    size_t high = readers->count;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        if (readers->ids[mid] < id) {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    return low < readers->count && readers->ids[low] == id;
}

/* Is reader_id, one of readers' ids, the smallest id that owner shares with readers? A
 * filed pattern reports a member under that id only: once, and never under a tag that
 * merely collided (reader_id not the owner's at all). Walks the owner's ids below reader_id,
 * each mostly settled by the filter, instead of merging the two lists, whose branches a
 * processor cannot predict. */
static inline bool principals_is_first_shared(const owner_set_t *owner, const reader_ids_t *readers,
                                              uint32_t reader_id)
{
    for (uint32_t i = 0; i < owner->count; i++) {
        uint32_t own = owner->ids[i];
        if (own >= reader_id) {
            return own == reader_id;
        }
        if (principals_is_reader(readers, own)) {
            return false;
        }
    }
    return false;
}

/* Does an owner holding owner's principals pass the reader check? */
static inline bool principals_may_read(const owner_set_t *owner, const reader_ids_t *readers)
{
    return readers->is_everyone || principals_share_any(owner, readers);
}

/* The number of principals interned (for tests and benchmarks). */
size_t principals_count(const principals_t *principals);

/* Moves a doubling of the tables on by up to slots slots each (ptable.h), for the thread
 * that changes them when it has nothing else to do. Returns the slots still to move. */
size_t principals_maintain(principals_t *principals, size_t slots);

/* The memory the tables hold in mappings of their own, outside malloc (for benchmarks). */
size_t principals_table_bytes(const principals_t *principals);

#endif
