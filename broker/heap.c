#include "heap.h"

#include <stdlib.h>

#include "mem.h"

heap_t heap_make(int64_t (*key)(const void *item), void (*place)(void *item, size_t slot))
{
    return (heap_t){.key = key, .place = place};
}

void heap_clear(heap_t *heap)
{
    free(heap->items);
    heap->items = NULL;
    heap->count = 0;
    heap->capacity = 0;
}

static void put(heap_t *heap, size_t slot, void *item)
{
    heap->items[slot] = item;
    heap->place(item, slot);
}

/* Moves the item at slot up to where its key belongs; returns its slot. */
static size_t up(heap_t *heap, size_t slot)
{
    void *item = heap->items[slot];
    int64_t key = heap->key(item);
    while (slot > 0) {
        size_t parent = (slot - 1) / 2;
        if (heap->key(heap->items[parent]) <= key) {
            break;
        }
        put(heap, slot, heap->items[parent]);
        slot = parent;
    }
    put(heap, slot, item);
    return slot;
}

/* Moves the item at slot down to where its key belongs. */
static void down(heap_t *heap, size_t slot)
{
    void *item = heap->items[slot];
    int64_t key = heap->key(item);
    for (;;) {
        size_t child = 2 * slot + 1;
        if (child >= heap->count) {
            break;
        }
        if (child + 1 < heap->count &&
            heap->key(heap->items[child + 1]) < heap->key(heap->items[child])) {
            child++;
        }
        if (key <= heap->key(heap->items[child])) {
            break;
        }
        put(heap, slot, heap->items[child]);
        slot = child;
    }
    put(heap, slot, item);
}

void heap_push(heap_t *heap, void *item)
{
    if (heap->count == heap->capacity) {
        heap->capacity = heap->capacity == 0 ? 64 : heap->capacity * 2;
        heap->items = xrealloc(heap->items, heap->capacity * sizeof(*heap->items));
    }
    heap->items[heap->count++] = item;
    up(heap, heap->count - 1);
}

void heap_rekey(heap_t *heap, size_t slot)
{
    down(heap, up(heap, slot));
}

void heap_remove(heap_t *heap, size_t slot)
{
    void *last = heap->items[--heap->count];
    if (slot < heap->count) {
        put(heap, slot, last);
        heap_rekey(heap, slot);
    }
}
