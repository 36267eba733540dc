/* Records of one size from blocks (recpool.h): sizes rounded to 8, records zeroed, aligned
 * and never overlapping across many blocks, freed ones handed out again before a new
 * block is made, blocks that grow to the largest and no further, and (under
 * AddressSanitizer) free records poisoned. */

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "recpool.h"
#include "unit.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

static size_t block_bytes_for(size_t records, size_t record_bytes)
{
    return sizeof(void *) + records * record_bytes;
}

START_TEST(test_recpool_sizes_are_rounded_to_eight)
{
    static const size_t asked[] = {0, 1, 8, 9, 41, 48, 56, 257};
    static const size_t got[] = {8, 8, 8, 16, 48, 48, 56, 264};
    for (size_t i = 0; i < sizeof(asked) / sizeof(asked[0]); i++) {
        recpool_t pool;
        recpool_init(&pool, asked[i]);
        ck_assert_uint_eq(pool.record_bytes, got[i]);
        ck_assert_uint_eq(pool.block_bytes, 0); /* nothing is allocated before the first */
        recpool_destroy(&pool);
    }
}
END_TEST

/* Every record keeps what was written into it while thousands more are handed out: no
 * two overlap, within a block or across blocks. */
START_TEST(test_recpool_records_are_zeroed_aligned_and_apart)
{
    enum { N = 20000, BYTES = 41 };
    recpool_t pool;
    recpool_init(&pool, BYTES);
    unsigned char **records = calloc(N, sizeof(*records));
    for (size_t i = 0; i < N; i++) {
        records[i] = recpool_get(&pool);
        ck_assert_uint_eq((uintptr_t)records[i] % 8, 0);
        for (size_t b = 0; b < pool.record_bytes; b++) {
            if (records[i][b] != 0) {
                ck_abort_msg("record %zu byte %zu not zeroed", i, b);
            }
        }
        memset(records[i], (int)(i % 251) + 1, pool.record_bytes);
    }
    for (size_t i = 0; i < N; i++) {
        for (size_t b = 0; b < pool.record_bytes; b++) {
            if (records[i][b] != (unsigned char)((i % 251) + 1)) {
                ck_abort_msg("record %zu byte %zu overwritten", i, b);
            }
        }
    }
    /* Bytes per record: the records, one header per block and the last block's spare. */
    ck_assert_uint_ge(pool.block_bytes, (size_t)N * pool.record_bytes);
    ck_assert_uint_lt(pool.block_bytes, (size_t)N * pool.record_bytes + RECPOOL_BLOCK_BYTES);
    recpool_destroy(&pool);
    ck_assert_uint_eq(pool.block_bytes, 0);
    free(records);
}
END_TEST

START_TEST(test_recpool_blocks_double_up_to_the_largest)
{
    recpool_t pool;
    recpool_init(&pool, 56);
    size_t records_in_blocks = 0;
    size_t expected_bytes = 0;
    size_t next = RECPOOL_FIRST_BLOCK_RECORDS;
    size_t largest = (RECPOOL_BLOCK_BYTES - sizeof(void *)) / 56;
    for (int block = 0; block < 12; block++) {
        size_t records = next < largest ? next : largest;
        expected_bytes += block_bytes_for(records, 56);
        /* The first record of a block makes the block, the rest come from it. */
        for (size_t i = 0; i < records; i++) {
            (void)recpool_get(&pool);
            ck_assert_uint_eq(pool.block_bytes, expected_bytes);
        }
        records_in_blocks += records;
        next *= 2;
    }
    ck_assert_uint_le(block_bytes_for(largest, 56), RECPOOL_BLOCK_BYTES);
    ck_assert_uint_gt(records_in_blocks, 5 * largest); /* the largest was reached */
    recpool_destroy(&pool);
}
END_TEST

START_TEST(test_recpool_freed_records_are_reused_first)
{
    recpool_t pool;
    recpool_init(&pool, 24);
    void *held[100];
    for (size_t i = 0; i < 100; i++) {
        held[i] = recpool_get(&pool);
        memset(held[i], 0xab, 24);
    }
    size_t bytes = pool.block_bytes;
    recpool_put(&pool, held[17]);
    recpool_put(&pool, held[42]);
    recpool_put(&pool, NULL);
#if defined(__SANITIZE_ADDRESS__)
    ck_assert(__asan_address_is_poisoned(held[17]));
    ck_assert(__asan_address_is_poisoned((char *)held[42] + 23));
    ck_assert(!__asan_address_is_poisoned(held[18]));
#endif
    unsigned char *again = recpool_get(&pool);
    ck_assert_ptr_eq(again, held[42]); /* the last freed first */
    ck_assert_ptr_eq(recpool_get(&pool), held[17]);
    for (size_t b = 0; b < 24; b++) {
        ck_assert_uint_eq(again[b], 0);
    }
    ck_assert_uint_eq(pool.block_bytes, bytes);
    recpool_destroy(&pool);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("recpool");
    TCase *tc = tcase_create("recpool");
    tcase_add_test(tc, test_recpool_sizes_are_rounded_to_eight);
    tcase_add_test(tc, test_recpool_records_are_zeroed_aligned_and_apart);
    tcase_add_test(tc, test_recpool_blocks_double_up_to_the_largest);
    tcase_add_test(tc, test_recpool_freed_records_are_reused_first);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
