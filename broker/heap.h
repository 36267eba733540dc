#ifndef HEROLD_HEAP_H
#define HEROLD_HEAP_H

/*
 * A binary min-heap of items that know their place in it: the caller's place function
 * records each item's slot as it moves, so that changing an item's key and removing it
 * are O(log n) without a search. The key is read through the caller's key function, so it
 * stays where the item keeps it (a timer's due time, a subscription's expiration) rather
 * than being copied into the heap. Used by webhook's timers and by subs' expirations; owned
 * by one thread.
 */

#include <stddef.h>
#include <stdint.h>

typedef struct heap {
    void **items; /* items[0] has the smallest key */
    size_t count;
    size_t capacity;
    int64_t (*key)(const void *item);
    void (*place)(void *item, size_t slot); /* item is now at items[slot] */
} heap_t;

/* An empty heap over key and place. */
heap_t heap_make(int64_t (*key)(const void *item), void (*place)(void *item, size_t slot));

/* Frees the heap's array (not the items). */
void heap_clear(heap_t *heap);

void heap_push(heap_t *heap, void *item);

/* The item at slot has a new key: moves it to where that key belongs. */
void heap_rekey(heap_t *heap, size_t slot);

/* Removes the item at slot. */
void heap_remove(heap_t *heap, size_t slot);

/* The item with the smallest key, or NULL when the heap is empty. */
static inline void *heap_first(const heap_t *heap)
{
    return heap->count > 0 ? heap->items[0] : NULL;
}

#endif
