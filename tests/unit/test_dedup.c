/* Deduplication table: candidates by hash, confirmation decides, retention expires. */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dedup.h"
#include "mem.h"
#include "unit.h"

/* The "journal" of these tests: seq -> (source, id), and a lookup that confirms. */
#define MAX_EVENTS 20000
static char sources[MAX_EVENTS + 1][16];
static char ids[MAX_EVENTS + 1][16];

struct probe {
    const char *source;
    const char *id;
    int confirm_calls;
};

static bool confirm(uint64_t seq, void *ctx)
{
    struct probe *p = ctx;
    p->confirm_calls++;
    return strcmp(sources[seq], p->source) == 0 && strcmp(ids[seq], p->id) == 0;
}

static uint64_t find(dedup_t *d, const char *source, const char *id, uint64_t oldest, int *calls)
{
    struct probe p = {source, id, 0};
    uint64_t seq =
        dedup_find(d, dedup_hash(source, strlen(source), id, strlen(id)), oldest, confirm, &p);
    if (calls != NULL) {
        *calls = p.confirm_calls;
    }
    return seq;
}

static void add(dedup_t *d, uint64_t seq, const char *source, const char *id)
{
    strcpy(sources[seq], source);
    strcpy(ids[seq], id);
    dedup_add(d, dedup_hash(source, strlen(source), id, strlen(id)), seq);
}

/* An entry on a hash of the test's choosing: its "journal" record is (source, prefix+seq). */
static void add_on_hash(dedup_t *d, uint64_t seq, const char *source, const char *prefix,
                        uint64_t hash)
{
    strcpy(sources[seq], source);
    snprintf(ids[seq], sizeof(ids[seq]), "%s%llu", prefix, (unsigned long long)seq);
    dedup_add(d, hash, seq);
}

START_TEST(test_dedup_finds_what_was_added_and_only_that)
{
    dedup_t *d = dedup_new();
    char id[16];
    for (uint64_t seq = 1; seq <= MAX_EVENTS; seq++) {
        snprintf(id, sizeof(id), "e%llu", (unsigned long long)seq);
        add(d, seq, seq % 2 ? "dms" : "files", id);
    }
    ck_assert_uint_eq(dedup_count(d), MAX_EVENTS);
    for (uint64_t seq = 1; seq <= MAX_EVENTS; seq++) {
        snprintf(id, sizeof(id), "e%llu", (unsigned long long)seq);
        ck_assert_uint_eq(find(d, seq % 2 ? "dms" : "files", id, 1, NULL), seq);
        /* The same id from the other source is another event. */
        ck_assert_uint_eq(find(d, seq % 2 ? "files" : "dms", id, 1, NULL), 0);
    }
    ck_assert_uint_eq(find(d, "dms", "never", 1, NULL), 0);
    dedup_free(d);
}
END_TEST

START_TEST(test_dedup_hash_separates_source_from_id)
{
    ck_assert(dedup_hash("ab", 2, "c", 1) != dedup_hash("a", 1, "bc", 2));
    ck_assert(dedup_hash("", 0, "x", 1) != dedup_hash("x", 1, "", 0));
    ck_assert(dedup_hash("dms", 3, "1", 1) == dedup_hash("dms", 3, "1", 1));
}
END_TEST

static bool always_false(uint64_t seq, void *ctx)
{
    (void)seq;
    (*(int *)ctx)++;
    return false;
}

START_TEST(test_dedup_a_hash_match_is_only_a_candidate)
{
    /* Two different events forced onto one hash: confirmation tells them apart. */
    dedup_t *d = dedup_new();
    strcpy(sources[1], "dms");
    strcpy(ids[1], "a");
    strcpy(sources[2], "dms");
    strcpy(ids[2], "b");
    dedup_add(d, 42, 1);
    dedup_add(d, 42, 2);
    struct probe p = {"dms", "b", 0};
    ck_assert_uint_eq(dedup_find(d, 42, 1, confirm, &p), 2);
    ck_assert_int_eq(p.confirm_calls, 2);
    int calls = 0;
    ck_assert_uint_eq(dedup_find(d, 42, 1, always_false, &calls), 0);
    ck_assert_int_eq(calls, 2);
    dedup_free(d);
}
END_TEST

static bool is_seq(uint64_t seq, void *ctx)
{
    return seq == *(const uint64_t *)ctx;
}

START_TEST(test_dedup_keeps_32_bits_of_the_hash)
{
    /* Hashes that differ above their low 32 bits look alike in the table: both are
     * candidates, and confirmation tells them apart. */
    dedup_t *d = dedup_new();
    uint64_t high = (uint64_t)1 << 32;
    dedup_add(d, 42, 1);
    dedup_add(d, 42 + high, 2);
    uint64_t want = 1;
    ck_assert_uint_eq(dedup_find(d, 42 + 5 * high, 1, is_seq, &want), 1);
    int calls = 0;
    ck_assert_uint_eq(dedup_find(d, 42 + high, 1, always_false, &calls), 0);
    ck_assert_int_eq(calls, 2);
    calls = 0;
    ck_assert_uint_eq(dedup_find(d, 43 + high, 1, always_false, &calls), 0);
    ck_assert_int_eq(calls, 0);
    dedup_free(d);
}
END_TEST

START_TEST(test_dedup_remembers_at_least_the_last_2_31_seqs)
{
    /* A slot keeps a seq as its distance from the table's base, in 32 bits. A seq further
     * than that from the base makes the table move to a later one, and what lies more than
     * 2^31 before that seq is forgotten; everything after it is still found. */
    const uint64_t half = (uint64_t)1 << 31;
    dedup_t *d = dedup_new();
    for (uint64_t seq = 1; seq <= 1000; seq++) {
        dedup_add(d, seq * 7919, seq);
    }
    for (uint64_t seq = half; seq < half + 1000; seq++) {
        dedup_add(d, seq * 7919, seq);
    }
    /* Within 32 bits of the base (0): nothing forgotten. */
    for (uint64_t seq = 1; seq <= 1000; seq++) {
        ck_assert_uint_eq(dedup_find(d, seq * 7919, 1, is_seq, &seq), seq);
    }
    uint64_t far = 2 * half + 100; /* beyond 32 bits of the base */
    dedup_add(d, far * 7919, far);
    for (uint64_t seq = 1; seq <= 1000; seq++) {
        ck_assert_uint_eq(dedup_find(d, seq * 7919, 1, is_seq, &seq), 0);
    }
    for (uint64_t seq = half; seq < half + 1000; seq++) {
        ck_assert_uint_eq(dedup_find(d, seq * 7919, 1, is_seq, &seq), seq >= far - half ? seq : 0);
    }
    ck_assert_uint_eq(dedup_find(d, far * 7919, 1, is_seq, &far), far);
    /* Jump after jump, each batch starting 2^31 - 1 after the last seq of the one before:
     * that seq is always found. */
    uint64_t previous = far;
    for (int jump = 0; jump < 5; jump++) {
        uint64_t first = previous + half - 1;
        for (uint64_t seq = first; seq < first + 1000; seq++) {
            dedup_add(d, seq * 7919, seq);
        }
        for (uint64_t seq = first; seq < first + 1000; seq++) {
            ck_assert_uint_eq(dedup_find(d, seq * 7919, 1, is_seq, &seq), seq);
        }
        ck_assert_uint_eq(dedup_find(d, previous * 7919, 1, is_seq, &previous), previous);
        previous = first + 999;
    }
    dedup_free(d);
}
END_TEST

START_TEST(test_dedup_out_of_retention_is_forgotten)
{
    dedup_t *d = dedup_new();
    char id[16];
    for (uint64_t seq = 1; seq <= 1000; seq++) {
        snprintf(id, sizeof(id), "r%llu", (unsigned long long)seq);
        add(d, seq, "dms", id);
    }
    /* Just inside and just outside oldest_seq. */
    ck_assert_uint_eq(find(d, "dms", "r500", 500, NULL), 500);
    ck_assert_uint_eq(find(d, "dms", "r499", 500, NULL), 0);
    dedup_expire(d, 501);
    ck_assert_uint_eq(find(d, "dms", "r500", 1, NULL), 0);
    for (uint64_t seq = 501; seq <= 1000; seq++) {
        snprintf(id, sizeof(id), "r%llu", (unsigned long long)seq);
        ck_assert_uint_eq(find(d, "dms", id, 501, NULL), seq);
    }
    /* Half of it expired: the table moved on without those entries over the lookups. */
    ck_assert_uint_eq(dedup_count(d), 500);
    dedup_free(d);
}
END_TEST

START_TEST(test_dedup_lookups_that_remove_stale_entries_keep_the_rest_reachable)
{
    /* Many entries on few home slots: removal during lookup shifts runs back. */
    dedup_t *d = dedup_new();
    for (uint64_t seq = 1; seq <= 600; seq++) {
        add_on_hash(d, seq, "s", "c", (seq % 7) * 1024); /* same home slot for every 7th */
    }
    int calls = 0;
    ck_assert_uint_eq(dedup_find(d, 3 * 1024, 300, always_false, &calls), 0);
    for (uint64_t seq = 300; seq <= 600; seq++) {
        struct probe p = {"s", ids[seq], 0};
        ck_assert_uint_eq(dedup_find(d, (seq % 7) * 1024, 300, confirm, &p), seq);
    }
    dedup_free(d);
}
END_TEST

static void add_numbered(dedup_t *d, uint64_t seq)
{
    char id[16];
    snprintf(id, sizeof(id), "n%llu", (unsigned long long)seq);
    add(d, seq, "dms", id);
}

static uint64_t find_numbered(dedup_t *d, uint64_t seq, uint64_t oldest)
{
    char id[16];
    snprintf(id, sizeof(id), "n%llu", (unsigned long long)seq);
    return find(d, "dms", id, oldest, NULL);
}

/* A table holding the numbered entries 1..count. */
static dedup_t *numbered_table(uint64_t count)
{
    dedup_t *d = dedup_new();
    for (uint64_t seq = 1; seq <= count; seq++) {
        add_numbered(d, seq);
    }
    return d;
}

START_TEST(test_dedup_every_entry_stays_found_while_the_table_grows)
{
    /* Growing moves the entries into a bigger table a few per call: looked up at many
     * points, moves under way included, every entry is found, once moved or not yet. */
    dedup_t *d = dedup_new();
    for (uint64_t seq = 1; seq <= MAX_EVENTS; seq++) {
        add_numbered(d, seq);
        ck_assert_uint_eq(dedup_count(d), seq);
        ck_assert_uint_eq(find_numbered(d, seq, 1), seq);
        ck_assert_uint_eq(find_numbered(d, (seq + 1) / 2, 1), (seq + 1) / 2);
        if (seq % 997 == 0 || seq == 769 || seq == 1537 || seq == 3073) {
            /* Newest first, so that what has not moved yet is looked up before the
             * lookups themselves move it. */
            for (uint64_t back = seq; back >= 1; back--) {
                ck_assert_uint_eq(find_numbered(d, back, 1), back);
            }
        }
    }
    dedup_free(d);
}
END_TEST

START_TEST(test_dedup_table_bytes_count_both_tables_while_one_moves)
{
    /* 8-byte slots: 1,024 of them at first; the 769th entry starts a move into 2,048. */
    dedup_t *d = numbered_table(768);
    ck_assert_uint_eq(dedup_table_bytes(d), 1024 * 8);
    add_numbered(d, 769);
    ck_assert_uint_eq(dedup_table_bytes(d), 1024 * 8 + 2048 * 8);
    for (uint64_t seq = 1; seq <= 769; seq++) { /* each call moves 8 slots on */
        ck_assert_uint_eq(find_numbered(d, seq, 1), seq);
    }
    ck_assert_uint_eq(dedup_table_bytes(d), 2048 * 8);
    dedup_free(d);
}
END_TEST

START_TEST(test_dedup_expiry_is_dropped_as_the_table_moves_on)
{
    dedup_t *d = numbered_table(10000);
    /* Half expires: at once nothing below is found and everything above is. */
    dedup_expire(d, 5001);
    ck_assert_uint_eq(find_numbered(d, 5000, 5001), 0);
    ck_assert_uint_eq(find_numbered(d, 1, 1), 0); /* the older bound no longer counts */
    ck_assert_uint_eq(find_numbered(d, 5001, 5001), 5001);
    ck_assert_uint_eq(find_numbered(d, 10000, 5001), 10000);
    for (uint64_t seq = 10001; seq <= 14000; seq++) {
        add_numbered(d, seq);
        ck_assert_uint_eq(find_numbered(d, seq - 5000, 5001), seq - 5000 > 5000 ? seq - 5000 : 0);
    }
    for (uint64_t seq = 5001; seq <= 14000; seq++) {
        ck_assert_uint_eq(find_numbered(d, seq, 5001), seq);
    }
    /* The move left the expired entries behind: what is held is what is retained. */
    ck_assert_uint_eq(dedup_count(d), 9000);
    dedup_free(d);
}
END_TEST

START_TEST(test_dedup_forgetting_after_a_seq_in_the_middle_of_a_move)
{
    /* 769 entries make the table of 1024 grow; the move has barely begun. */
    dedup_t *d = numbered_table(800);
    dedup_forget_after(d, 700);
    ck_assert_uint_eq(dedup_count(d), 700);
    for (uint64_t seq = 1; seq <= 800; seq++) {
        ck_assert_uint_eq(find_numbered(d, seq, 1), seq <= 700 ? seq : 0);
    }
    /* The seqs forgotten are given again, to other events. */
    add(d, 701, "files", "again");
    ck_assert_uint_eq(find(d, "files", "again", 1, NULL), 701);
    ck_assert_uint_eq(find_numbered(d, 701, 1), 0);
    dedup_free(d);
}
END_TEST

/* The pages a fresh table's operations fault in ahead, a step per call: every page of the
 * mapping is resident once the steps reach its end, and what was written stays. */
START_TEST(test_mem_populate_step_faults_in_every_page_and_keeps_the_contents)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t bytes = 3 * MEM_POPULATE_STEP_BYTES + 5 * page;
    unsigned char *p = xmap_zeroed(bytes);
    p[0] = 0x5a;
    p[bytes - 1] = 0xa5;
    size_t populated = 0;
    size_t calls = 0;
    while (populated < bytes) {
        size_t before = populated;
        mem_populate_step(p, bytes, &populated);
        ck_assert_uint_gt(populated, before);
        calls++;
    }
    ck_assert_uint_eq(populated, bytes);
    ck_assert_uint_eq(calls, 4);
    mem_populate_step(p, bytes, &populated); /* done: nothing more */
    ck_assert_uint_eq(populated, bytes);
    unsigned char *resident = malloc(bytes / page);
    ck_assert_int_eq(mincore(p, bytes, resident), 0);
    size_t in_memory = 0;
    for (size_t i = 0; i < bytes / page; i++) {
        in_memory += resident[i] & 1;
    }
    ck_assert_uint_eq(in_memory, bytes / page);
    ck_assert_uint_eq(p[0], 0x5a);
    ck_assert_uint_eq(p[bytes - 1], 0xa5);
    ck_assert_uint_eq(p[MEM_POPULATE_STEP_BYTES + 17], 0);
    free(resident);
    mem_unmap(p, bytes);
}
END_TEST

START_TEST(test_dedup_a_run_round_the_end_is_found_while_its_start_has_moved)
{
    /* 300 entries on the last slot of the first table fill it and wrap round to slots
     * 0..298; 50 on slot 200 follow them (299..348); 418 more elsewhere make 768, and
     * the next add starts a move. */
    dedup_t *d = dedup_new();
    for (uint64_t seq = 1; seq <= 768; seq++) {
        add_on_hash(d, seq, "w", "w", seq <= 300 ? 1023 : seq <= 350 ? 200 : 400 + (seq - 351));
    }
    for (uint64_t seq = 769; seq <= 801; seq++) {
        add_numbered(d, seq);
    }
    /* 32 calls since the move began: its first page (slots 0..255) went back, and each
     * lookup below moves 8 more slots. The entry in slot 298 is found from its home, 1023,
     * going on at the first slot not moved; one in slot 340 from its home, 200, which
     * has moved, at the first slot not moved. */
    struct probe p = {"w", ids[299], 0};
    ck_assert_uint_eq(dedup_find(d, 1023, 1, confirm, &p), 299);
    struct probe r = {"w", ids[342], 0};
    ck_assert_uint_eq(dedup_find(d, 200, 1, confirm, &r), 342);
    for (uint64_t seq = 1; seq <= 350; seq++) {
        struct probe q = {"w", ids[seq], 0};
        ck_assert_uint_eq(dedup_find(d, seq <= 300 ? 1023 : 200, 1, confirm, &q), seq);
    }
    ck_assert_uint_eq(dedup_count(d), 801);
    dedup_free(d);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("dedup");
    TCase *tc = tcase_create("dedup");
    tcase_add_test(tc, test_dedup_finds_what_was_added_and_only_that);
    tcase_add_test(tc, test_dedup_keeps_32_bits_of_the_hash);
    tcase_add_test(tc, test_dedup_remembers_at_least_the_last_2_31_seqs);
    tcase_add_test(tc, test_dedup_hash_separates_source_from_id);
    tcase_add_test(tc, test_dedup_a_hash_match_is_only_a_candidate);
    tcase_add_test(tc, test_dedup_out_of_retention_is_forgotten);
    tcase_add_test(tc, test_dedup_lookups_that_remove_stale_entries_keep_the_rest_reachable);
    tcase_add_test(tc, test_dedup_every_entry_stays_found_while_the_table_grows);
    tcase_add_test(tc, test_dedup_table_bytes_count_both_tables_while_one_moves);
    tcase_add_test(tc, test_dedup_expiry_is_dropped_as_the_table_moves_on);
    tcase_add_test(tc, test_dedup_forgetting_after_a_seq_in_the_middle_of_a_move);
    tcase_add_test(tc, test_dedup_a_run_round_the_end_is_found_while_its_start_has_moved);
    tcase_add_test(tc, test_mem_populate_step_faults_in_every_page_and_keeps_the_contents);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
