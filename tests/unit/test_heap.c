/* The shared min-heap: every item knows its slot, and the smallest key comes first,
 * through random pushes, key changes and removals. */

#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "heap.h"
#include "unit.h"

struct item {
    int64_t key;
    size_t slot;
    bool is_in;
};

static int64_t item_key(const void *item)
{
    return ((const struct item *)item)->key;
}

static void item_place(void *item, size_t slot)
{
    ((struct item *)item)->slot = slot;
}

/* Every item in the heap is where it was told, and no child is smaller than its parent. */
static void expect_heap(const heap_t *heap, const struct item *items, size_t n)
{
    size_t in = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].is_in) {
            in++;
            ck_assert_ptr_eq(heap->items[items[i].slot], &items[i]);
        }
    }
    ck_assert_uint_eq(heap->count, in);
    for (size_t slot = 1; slot < heap->count; slot++) {
        ck_assert_int_le(item_key(heap->items[(slot - 1) / 2]), item_key(heap->items[slot]));
    }
}

START_TEST(test_heap_keeps_order_and_slots_through_random_changes)
{
    enum { N = 300 };
    struct item items[N] = {{0}};
    heap_t heap = heap_make(item_key, item_place);
    uint64_t state = 99;
    for (int step = 0; step < 3000; step++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        uint32_t roll = (uint32_t)(state >> 33);
        struct item *it = &items[roll % N];
        int64_t key = (int64_t)((roll >> 9) % 1000) - 500;
        if (!it->is_in) {
            it->key = key;
            it->is_in = true;
            heap_push(&heap, it);
        } else if (roll % 2 == 0) {
            it->key = key;
            heap_rekey(&heap, it->slot);
        } else {
            heap_remove(&heap, it->slot);
            it->is_in = false;
        }
        if (step % 20 == 0) {
            expect_heap(&heap, items, N);
        }
    }
    /* Emptied from the top, the keys come out in order. */
    int64_t last = INT64_MIN;
    struct item *first;
    while ((first = heap_first(&heap)) != NULL) {
        ck_assert_int_ge(first->key, last);
        last = first->key;
        heap_remove(&heap, first->slot);
        first->is_in = false;
    }
    expect_heap(&heap, items, N);
    heap_clear(&heap);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("heap");
    TCase *tc = tcase_create("heap");
    tcase_add_test(tc, test_heap_keeps_order_and_slots_through_random_changes);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
