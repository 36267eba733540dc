#ifndef HEROLD_PTABLE_H
#define HEROLD_PTABLE_H

/*
 * A hash table of pointers that doubles over a while instead of in one go, for the
 * service thread's indexes of millions of items (the matching index's patterns, persistent
 * subscriptions by id, the owners' principals and owner sets). Rehashing a table of
 * millions at once reads every item again for its hash: it held the service thread, and
 * with it every delivery, for 32-35 ms at a million subscriptions (patterns), 84-87 ms at a
 * million persistent ones (ids), and 495 ms at ten million.
 *
 * Open addressing with linear probing over 64-bit slots: the item's address in the low 48
 * bits and the top 16 bits of its hash above (the tag), so a probe that meets another
 * item's slot rarely touches that item. The caller compares items: a probe yields the
 * items whose tag is the hash's, in probe order. Removal from the fresh table shifts back
 * the entries that follow (no tombstones); their home comes from the hash function, which
 * the table also calls to move items.
 *
 * A doubling starts a fresh table, where inserts go, and keeps the previous one as the
 * *moving* table: every insert and removal moves its next PTABLE_MOVE_PER_CHANGE slots,
 * and so does ptable_maintain, which the service thread calls when it has nothing else to
 * do. Nothing is inserted into the moving table; an item removed from it leaves
 * PTABLE_GONE, which probes pass over, so its probe runs stay intact. A probe that ends in
 * the fresh table goes on in the moving one from its next slot to move (everything before
 * it has moved; a run that reaches an item not yet moved is taken from there to it), and
 * wraps round to that slot, not to 0. The moved part is given back in steps of
 * MEM_RELEASE_STEP_BYTES, and under AddressSanitizer poisoned (mem.h). Sizing: a doubling
 * starts at three quarters full, and a move ends after capacity / PTABLE_MOVE_PER_CHANGE
 * inserts at the latest, so the fresh table cannot fill before the move is done.
 *
 * Reading (probes) writes nothing: several threads may read at once while none changes
 * the table. Changes belong to one thread.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PTABLE_MIN_CAPACITY 1024
#define PTABLE_MOVE_PER_CHANGE 16
#define PTABLE_POINTER_BITS 48
#define PTABLE_POINTER_MASK ((UINT64_C(1) << PTABLE_POINTER_BITS) - 1)
#define PTABLE_GONE UINT64_C(1) /* an item removed from the moving table; none is at 1 */

/* The hash of an item in the table (the one it was inserted under). */
typedef uint64_t (*ptable_hash_fn)(const void *item, const void *ctx);

typedef struct ptable {
    uint64_t *slots;  /* the fresh table, where inserts go */
    size_t capacity;  /* a power of two */
    size_t count;     /* items, in both tables */
    uint64_t *moving; /* the previous table while a doubling moves it; NULL otherwise */
    size_t moving_capacity;
    size_t move_next;      /* the moving table's next slot to move */
    size_t released_bytes; /* of the moving table, given back */
    ptable_hash_fn hash;
    const void *hash_ctx;
} ptable_t;

/* A probe for the items under one hash: the fresh table's run from the hash's home, then,
 * during a move, the moving table's. */
typedef struct ptable_probe {
    uint64_t hash;
    size_t i;    /* the next slot to read */
    size_t left; /* in the moving table: slots left to read */
    bool is_in_moving;
} ptable_probe_t;

/* An empty table whose items hash with hash(item, hash_ctx). */
void ptable_init(ptable_t *t, ptable_hash_fn hash, const void *hash_ctx);

/* Frees the table (not the items). */
void ptable_destroy(ptable_t *t);

static inline void *ptable_slot_item(uint64_t slot)
{
    return (void *)(uintptr_t)(slot & PTABLE_POINTER_MASK);
}

static inline bool ptable_slot_has_tag(uint64_t slot, uint64_t hash)
{
    return ((slot ^ hash) & ~PTABLE_POINTER_MASK) == 0;
}

/* Fetches the slots a probe for hash reads first, ahead of ptable_probe. */
static inline void ptable_prefetch(const ptable_t *t, uint64_t hash)
{
    __builtin_prefetch(&t->slots[hash & (t->capacity - 1)]);
    if (t->moving != NULL) {
        size_t home = hash & (t->moving_capacity - 1);
        __builtin_prefetch(&t->moving[home < t->move_next ? t->move_next : home]);
    }
}

static inline ptable_probe_t ptable_probe(const ptable_t *t, uint64_t hash)
{
    return (ptable_probe_t){hash, hash & (t->capacity - 1), 0, false};
}

/* The moving table's part of ptable_next. */
void *ptable_next_moving(const ptable_t *t, ptable_probe_t *probe);

/* The next item on the probe whose tag is its hash's, or NULL when there is none. */
static inline void *ptable_next(const ptable_t *t, ptable_probe_t *probe)
{
    if (!probe->is_in_moving) {
        size_t mask = t->capacity - 1;
        for (uint64_t s; (s = t->slots[probe->i]) != 0;) {
            probe->i = (probe->i + 1) & mask;
            if (ptable_slot_has_tag(s, probe->hash)) {
                return ptable_slot_item(s);
            }
        }
        if (t->moving == NULL) {
            return NULL;
        }
    }
    return ptable_next_moving(t, probe);
}

/* Inserts item, which must not be in the table, under hash (= hash(item)). Moves a
 * doubling under way on, or starts one. item's address must fit 48 bits. */
void ptable_insert(ptable_t *t, void *item, uint64_t hash);

/* Removes item, which must be in the table, inserted under hash. */
void ptable_remove(ptable_t *t, const void *item, uint64_t hash);

/* Moves a doubling on by up to slots slots. Returns the slots still to move, 0 when no
 * doubling is under way. */
size_t ptable_maintain(ptable_t *t, size_t slots);

/* The memory the table holds, in mappings of its own outside malloc. */
size_t ptable_bytes(const ptable_t *t);

#endif
