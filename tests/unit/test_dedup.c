/* Deduplication table: candidates by hash, confirmation decides, retention expires. */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dedup.h"
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
    ck_assert_uint_eq(dedup_count(d), 500);
    ck_assert_uint_eq(find(d, "dms", "r500", 1, NULL), 0);
    for (uint64_t seq = 501; seq <= 1000; seq++) {
        snprintf(id, sizeof(id), "r%llu", (unsigned long long)seq);
        ck_assert_uint_eq(find(d, "dms", id, 501, NULL), seq);
    }
    dedup_free(d);
}
END_TEST

START_TEST(test_dedup_lookups_that_remove_stale_entries_keep_the_rest_reachable)
{
    /* Many entries on few home slots: removal during lookup shifts runs back. */
    dedup_t *d = dedup_new();
    for (uint64_t seq = 1; seq <= 600; seq++) {
        strcpy(sources[seq], "s");
        snprintf(ids[seq], sizeof(ids[seq]), "c%llu", (unsigned long long)seq);
        dedup_add(d, (seq % 7) * 1024, seq); /* same home slot for every 7th */
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

int main(void)
{
    Suite *suite = suite_create("dedup");
    TCase *tc = tcase_create("dedup");
    tcase_add_test(tc, test_dedup_finds_what_was_added_and_only_that);
    tcase_add_test(tc, test_dedup_hash_separates_source_from_id);
    tcase_add_test(tc, test_dedup_a_hash_match_is_only_a_candidate);
    tcase_add_test(tc, test_dedup_out_of_retention_is_forgotten);
    tcase_add_test(tc, test_dedup_lookups_that_remove_stale_entries_keep_the_rest_reachable);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
