/* The table of pointers that doubles over a while (ptable.h), with hashes the tests choose:
 * every item found exactly once and every removed one gone, at every step of a move,
 * through random changes, probe runs that wrap round the table's end, and removals from
 * the middle of a run still in the moving table. Under AddressSanitizer a read of the part
 * already moved is reported (mem.h poisons it). */

#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "mem.h"
#include "ptable.h"
#include "unit.h"

struct item {
    uint64_t hash;
    bool is_in;
};

static uint64_t item_hash(const void *item, const void *ctx)
{
    (void)ctx;
    return ((const struct item *)item)->hash;
}

/* How many times a probe for item's hash yields item. */
static int times_found(const ptable_t *t, const struct item *item)
{
    int found = 0;
    ptable_probe_t probe = ptable_probe(t, item->hash);
    for (void *got; (got = ptable_next(t, &probe)) != NULL;) {
        if (((struct item *)got)->hash >> PTABLE_POINTER_BITS !=
            item->hash >> PTABLE_POINTER_BITS) {
            ck_abort_msg("a probe yielded an item of another tag");
        }
        found += got == item;
    }
    return found;
}

/* Every item in the table found once, every other not at all. Checked without an
 * assertion per item: Check records each passing one with a write(). */
static void expect_table(const ptable_t *t, const struct item *items, size_t n)
{
    size_t in = 0;
    for (size_t i = 0; i < n; i++) {
        in += items[i].is_in;
        int found = times_found(t, &items[i]);
        if (found != (items[i].is_in ? 1 : 0)) {
            ck_abort_msg("item %zu (hash %016llx, %s) found %d times", i,
                         (unsigned long long)items[i].hash, items[i].is_in ? "in" : "out", found);
        }
    }
    ck_assert_uint_eq(t->count, in);
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Hashes with few homes and few tags, so that runs are long and tags collide. */
static uint64_t clustered_hash(void)
{
    return (rnd() % 4 << 62) | (rnd() % 1024 * 7);
}

START_TEST(test_ptable_random_changes_through_several_doublings)
{
    enum { N = 6000 };
    struct item *items = calloc(N, sizeof(*items));
    ptable_t t;
    ptable_init(&t, item_hash, NULL);
    rng_state = 20261127;
    size_t moves_seen = 0;
    for (int step = 0; step < 24000; step++) {
        struct item *item = &items[rnd() % N];
        if (item->is_in) {
            ptable_remove(&t, item, item->hash);
            item->is_in = false;
        } else if (step < 16000) {
            item->hash = clustered_hash();
            ptable_insert(&t, item, item->hash);
            item->is_in = true;
        }
        if (rnd() % 32 == 0) {
            ptable_maintain(&t, rnd() % 64);
        }
        moves_seen += t.moving != NULL;
        if (step % 500 == 0 || (t.moving != NULL && step % 4 == 0)) {
            expect_table(&t, items, N);
        }
    }
    ck_assert_uint_gt(moves_seen, 100);  /* checked mid-move, many times */
    ck_assert_uint_ge(t.capacity, 4096); /* it doubled twice or more */
    while (ptable_maintain(&t, 7) > 0) {
    }
    expect_table(&t, items, N);
    ptable_destroy(&t);
    free(items);
}
END_TEST

/* 769 items: the 769th insert finds 1024 slots three quarters full and starts a move,
 * none of which has moved yet. */
#define TO_DOUBLING 769

static void fill_to_doubling(ptable_t *t, struct item *items, uint64_t (*hash)(size_t))
{
    for (size_t i = 0; i < TO_DOUBLING; i++) {
        items[i].hash = hash(i);
        ptable_insert(t, &items[i], items[i].hash);
        items[i].is_in = true;
    }
}

static uint64_t hash_near_the_end(size_t i)
{
    return ((uint64_t)i << 48) | (1000 + i % 24); /* homes 1000-1023 of 1024 */
}

/* Runs that start at the last slots and wrap round to the first ones: once those have
 * moved, a probe goes on at the next slot to move, not at 0. */
START_TEST(test_ptable_runs_that_wrap_round_the_end_during_a_move)
{
    enum { N = TO_DOUBLING };
    struct item items[N] = {{0}};
    ptable_t t;
    ptable_init(&t, item_hash, NULL);
    fill_to_doubling(&t, items, hash_near_the_end);
    ck_assert_ptr_nonnull(t.moving);
    ck_assert_uint_eq(t.moving_capacity, 1024);
    ck_assert_uint_eq(t.move_next, 0);
    while (ptable_maintain(&t, 16) > 0) {
        expect_table(&t, items, N);
    }
    expect_table(&t, items, N);
    ptable_destroy(&t);
}
END_TEST

static uint64_t hash_one_home(size_t i)
{
    return ((uint64_t)(i % 3) << 48) | 100; /* one run from slot 100, three tags */
}

/* Removing from the middle of a run not yet moved (slots 100-868; the move starts at 0,
 * so its end moves last) leaves the rest of the run reachable, and nothing removed comes
 * back. */
START_TEST(test_ptable_removal_from_the_moving_table_keeps_its_runs)
{
    enum { N = TO_DOUBLING };
    struct item items[N] = {{0}};
    ptable_t t;
    ptable_init(&t, item_hash, NULL);
    fill_to_doubling(&t, items, hash_one_home);
    ck_assert_ptr_nonnull(t.moving);
    for (size_t i = N - 2; i >= 600; i -= 7) {
        ck_assert_uint_lt(t.move_next, 100 + i); /* item i is still in the moving table */
        ptable_remove(&t, &items[i], items[i].hash);
        items[i].is_in = false;
        expect_table(&t, items, N);
    }
    expect_table(&t, items, N);
    while (ptable_maintain(&t, 100) > 0) {
    }
    expect_table(&t, items, N);
    ptable_destroy(&t);
}
END_TEST

static uint64_t hash_spread(size_t i)
{
    return ((uint64_t)i << 48) | (i * 2654435761u % 1024);
}

/* Every insert and removal moves a doubling on by PTABLE_MOVE_PER_CHANGE slots, so none
 * waits for it to end; a moving table smaller than a release step is given back whole at
 * the end. */
START_TEST(test_ptable_changes_move_it_on_and_moved_memory_is_given_back)
{
    enum { N = TO_DOUBLING + 10 };
    struct item items[N] = {{0}};
    ptable_t t;
    ptable_init(&t, item_hash, NULL);
    fill_to_doubling(&t, items, hash_spread);
    ck_assert_ptr_nonnull(t.moving);
    size_t both = (2048 + 1024) * sizeof(uint64_t);
    ck_assert_uint_eq(ptable_bytes(&t), both);
    for (size_t i = TO_DOUBLING; i < N; i++) {
        items[i].hash = hash_spread(i);
        ptable_insert(&t, &items[i], items[i].hash);
        items[i].is_in = true;
    }
    ck_assert_uint_eq(ptable_maintain(&t, 0), 1024 - 10 * PTABLE_MOVE_PER_CHANGE);
    for (size_t i = 0; i < 5; i++) {
        ptable_remove(&t, &items[i], items[i].hash);
        items[i].is_in = false;
    }
    ck_assert_uint_eq(ptable_maintain(&t, 0), 1024 - 15 * PTABLE_MOVE_PER_CHANGE);
    expect_table(&t, items, N);
    ptable_maintain(&t, 600); /* past the first 4 KiB page, far short of a release step */
    ck_assert_uint_eq(ptable_bytes(&t), both);
    ck_assert_uint_eq(ptable_maintain(&t, SIZE_MAX), 0);
    ck_assert_uint_eq(ptable_bytes(&t), 2048 * sizeof(uint64_t));
    expect_table(&t, items, N);
    ptable_destroy(&t);
}
END_TEST

static uint64_t splitmix64(uint64_t x)
{
    x += UINT64_C(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* A moving table of two release steps (MEM_RELEASE_STEP_BYTES) gives back nothing until a
 * step's slots have moved, then that step, and all of it at the end. */
START_TEST(test_ptable_moved_memory_is_given_back_a_step_at_a_time)
{
    const size_t step_slots = MEM_RELEASE_STEP_BYTES / sizeof(uint64_t);
    const size_t moving_capacity = 2 * step_slots;
    const size_t n = moving_capacity / 4 * 3 + 1; /* the last insert starts the doubling */
    struct item *items = xcalloc(n, sizeof(*items));
    ptable_t t;
    ptable_init(&t, item_hash, NULL);
    for (size_t i = 0; i < n; i++) {
        if (i == n - 1) {
            ck_assert_uint_eq(ptable_maintain(&t, SIZE_MAX), 0); /* earlier doublings end */
        }
        items[i].hash = splitmix64(i);
        ptable_insert(&t, &items[i], items[i].hash);
        items[i].is_in = true;
    }
    ck_assert_uint_eq(t.moving_capacity, moving_capacity);
    size_t both = 3 * moving_capacity * sizeof(uint64_t);
    ck_assert_uint_eq(ptable_bytes(&t), both);
    ck_assert_uint_eq(ptable_maintain(&t, step_slots - 1), moving_capacity - step_slots + 1);
    ck_assert_uint_eq(ptable_bytes(&t), both);
    ptable_maintain(&t, 1);
    ck_assert_uint_eq(ptable_bytes(&t), both - MEM_RELEASE_STEP_BYTES);
    expect_table(&t, items, n);
    ck_assert_uint_eq(ptable_maintain(&t, SIZE_MAX), 0);
    ck_assert_uint_eq(ptable_bytes(&t), 2 * moving_capacity * sizeof(uint64_t));
    expect_table(&t, items, n);
    ptable_destroy(&t);
    free(items);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("ptable");
    TCase *tc = tcase_create("ptable");
    tcase_add_test(tc, test_ptable_random_changes_through_several_doublings);
    tcase_add_test(tc, test_ptable_runs_that_wrap_round_the_end_during_a_move);
    tcase_add_test(tc, test_ptable_removal_from_the_moving_table_keeps_its_runs);
    tcase_add_test(tc, test_ptable_changes_move_it_on_and_moved_memory_is_given_back);
    tcase_add_test(tc, test_ptable_moved_memory_is_given_back_a_step_at_a_time);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
