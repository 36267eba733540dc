#include "ptable.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "hash.h"
#include "mem.h"

#define MOVE_GROUP 32

void ptable_init(ptable_t *t, ptable_hash_fn hash, const void *hash_ctx)
{
    *t = (ptable_t){0};
    t->capacity = PTABLE_MIN_CAPACITY;
    t->slots = xmap_zeroed(t->capacity * sizeof(*t->slots));
    t->hash = hash;
    t->hash_ctx = hash_ctx;
}

void ptable_destroy(ptable_t *t)
{
    mem_unmap(t->slots, t->capacity * sizeof(*t->slots));
    mem_unmap(t->moving, t->moving_capacity * sizeof(*t->moving));
    *t = (ptable_t){0};
}

/* The index of the next slot of the moving table on the probe whose tag is its hash's, or
 * SIZE_MAX at the end of the run. */
static size_t moving_next_index(const ptable_t *t, ptable_probe_t *probe)
{
    if (!probe->is_in_moving) {
        size_t home = probe->hash & (t->moving_capacity - 1);
        probe->i = home < t->move_next ? t->move_next : home;
        probe->left = t->moving_capacity - t->move_next;
        probe->is_in_moving = true;
    }
    while (probe->left > 0 && t->moving[probe->i] != 0) {
        size_t i = probe->i;
        probe->left--;
        probe->i = i + 1 == t->moving_capacity ? t->move_next : i + 1;
        if (t->moving[i] != PTABLE_GONE && ptable_slot_has_tag(t->moving[i], probe->hash)) {
            return i;
        }
    }
    return SIZE_MAX;
}

void *ptable_next_moving(const ptable_t *t, ptable_probe_t *probe)
{
    size_t i = moving_next_index(t, probe);
    return i != SIZE_MAX ? ptable_slot_item(t->moving[i]) : NULL;
}

static uint64_t slot_of(const void *item, uint64_t hash)
{
    uint64_t address = (uint64_t)(uintptr_t)item;
    if ((address & ~PTABLE_POINTER_MASK) != 0 || address <= PTABLE_GONE) {
        fprintf(stderr, "herold: an item at %p cannot be tagged\n", item);
        abort();
    }
    return address | (hash & ~PTABLE_POINTER_MASK);
}

static void place(uint64_t *slots, size_t capacity, uint64_t slot, uint64_t hash)
{
    size_t mask = capacity - 1;
    size_t i = hash & mask;
    while (slots[i] != 0) {
        i = (i + 1) & mask;
    }
    slots[i] = slot;
}

/* Places n slots of the moving table in the fresh one. Each item is read again for its
 * hash: every item of the group fetched first, then every new home slot, so that the
 * cache misses of a group overlap instead of queueing. */
static void move_group(ptable_t *t, const uint64_t *group, size_t n)
{
    uint64_t hashes[MOVE_GROUP];
    for (size_t i = 0; i < n; i++) {
        if (group[i] > PTABLE_GONE) {
            __builtin_prefetch(ptable_slot_item(group[i]));
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (group[i] > PTABLE_GONE) {
            hashes[i] = t->hash(ptable_slot_item(group[i]), t->hash_ctx);
            __builtin_prefetch(&t->slots[hashes[i] & (t->capacity - 1)]);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (group[i] > PTABLE_GONE) {
            place(t->slots, t->capacity, group[i], hashes[i]);
        }
    }
}

size_t ptable_maintain(ptable_t *t, size_t slots)
{
    if (t->moving == NULL) {
        return 0;
    }
    size_t left = t->moving_capacity - t->move_next;
    size_t end = t->move_next + (slots < left ? slots : left);
    while (t->move_next < end) {
        size_t n = end - t->move_next < MOVE_GROUP ? end - t->move_next : MOVE_GROUP;
        move_group(t, t->moving + t->move_next, n);
        t->move_next += n;
    }
    if (t->move_next == t->moving_capacity) {
        mem_unmap(t->moving, t->moving_capacity * sizeof(*t->moving));
        t->moving = NULL;
        return 0;
    }
    mem_release_below(t->moving, t->move_next * sizeof(*t->moving), &t->released_bytes);
    return t->moving_capacity - t->move_next;
}

/* Doubles the table: the present one becomes the moving one. */
static void start_move(ptable_t *t)
{
    ptable_maintain(t, SIZE_MAX); /* never under way: see the sizing in ptable.h */
    t->moving = t->slots;
    t->moving_capacity = t->capacity;
    t->move_next = 0;
    t->released_bytes = 0;
    t->capacity *= 2;
    t->slots = xmap_zeroed(t->capacity * sizeof(*t->slots));
}

void ptable_insert(ptable_t *t, void *item, uint64_t hash)
{
    ptable_maintain(t, PTABLE_MOVE_PER_CHANGE);
    if ((t->count + 1) * 4 > t->capacity * 3) {
        start_move(t);
    }
    place(t->slots, t->capacity, slot_of(item, hash), hash);
    t->count++;
}

void ptable_remove(ptable_t *t, const void *item, uint64_t hash)
{
    ptable_maintain(t, PTABLE_MOVE_PER_CHANGE);
    t->count--;
    size_t mask = t->capacity - 1;
    size_t hole = hash & mask;
    while (t->slots[hole] != 0 && ptable_slot_item(t->slots[hole]) != item) {
        hole = (hole + 1) & mask;
    }
    if (t->slots[hole] == 0) {
        /* Not in the fresh table: in the moving one, whose runs must stay intact. */
        ptable_probe_t probe = {hash, 0, 0, false};
        size_t i;
        while ((i = moving_next_index(t, &probe)) != SIZE_MAX &&
               ptable_slot_item(t->moving[i]) != item) {
        }
        assert(i != SIZE_MAX);
        t->moving[i] = PTABLE_GONE;
        return;
    }
    t->slots[hole] = 0;
    for (size_t i = (hole + 1) & mask; t->slots[i] != 0; i = (i + 1) & mask) {
        size_t home = t->hash(ptable_slot_item(t->slots[i]), t->hash_ctx) & mask;
        if (hash_may_fill_hole(home, hole, i, mask)) {
            t->slots[hole] = t->slots[i];
            t->slots[i] = 0;
            hole = i;
        }
    }
}

size_t ptable_bytes(const ptable_t *t)
{
    size_t bytes = t->capacity * sizeof(*t->slots);
    if (t->moving != NULL) {
        bytes += t->moving_capacity * sizeof(*t->moving) - t->released_bytes;
    }
    return bytes;
}
