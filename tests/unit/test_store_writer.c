/* The store writer: writes done in the order sent, on the embedded store as a restart
 * reads them back; outcomes; the bound on writes outstanding; writes after stop. */

#include <check.h>
#include <errno.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_writer.h"
#include "unit.h"

static sem_t woken;

static void count_wake(void *ctx)
{
    (void)ctx;
    sem_post(&woken);
}

/* Takes exactly count done writes into out, waiting for the writer's wake-ups. */
static void take_done(store_writer_t *writer, store_write_t **out, size_t count)
{
    size_t taken = 0;
    while (taken < count) {
        taken += store_writer_take_done(writer, out + taken, count - taken);
        if (taken < count) {
            struct timespec deadline;
            clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_sec += 10;
            ck_assert_msg(sem_timedwait(&woken, &deadline) == 0 || errno == EINTR,
                          "no wake-up with %zu of %zu writes done", taken, count);
        }
    }
}

static store_write_t *put(const char *id, const char *document, uint64_t tag)
{
    store_write_t *write = store_write_new(STORE_WRITE_PUT);
    write->id = strdup(id);
    write->document = strdup(document);
    write->tag = tag;
    return write;
}

static store_write_t *delete_of(const char *id, uint64_t tag)
{
    store_write_t *write = store_write_new(STORE_WRITE_DELETE);
    write->id = strdup(id);
    write->tag = tag;
    return write;
}

struct loaded {
    char subscriptions[8][64]; /* "id=document" */
    size_t subscription_count;
    char cursors[8][64]; /* "key=seq" */
    size_t cursor_count;
};

static void load_subscription(const char *id, const char *json, void *ctx)
{
    struct loaded *loaded = ctx;
    ck_assert_uint_lt(loaded->subscription_count, 8);
    snprintf(loaded->subscriptions[loaded->subscription_count++], 64, "%s=%s", id, json);
}

static void load_cursor(const char *key, uint64_t seq, void *ctx)
{
    struct loaded *loaded = ctx;
    ck_assert_uint_lt(loaded->cursor_count, 8);
    snprintf(loaded->cursors[loaded->cursor_count++], 64, "%s=%llu", key, (unsigned long long)seq);
}

static int compare_text(const void *a, const void *b)
{
    return strcmp(a, b);
}

static store_t *open_file_store(const char *dir, struct loaded *loaded)
{
    store_config_t config = {.data_dir = dir};
    store_loader_t loader = {load_subscription, load_cursor, loaded};
    struct herr err;
    memset(loaded, 0, sizeof(*loaded));
    store_t *store = store_file_open(&config, &loader, &err);
    ck_assert_msg(store != NULL, "%s", err.message);
    qsort(loaded->subscriptions, loaded->subscription_count, 64, compare_text);
    qsort(loaded->cursors, loaded->cursor_count, 64, compare_text);
    return store;
}

START_TEST(test_store_writer_does_the_writes_in_order_and_a_restart_reads_them)
{
    char dir[] = "/tmp/herold-writer-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    struct loaded loaded;
    store_t *store = open_file_store(dir, &loaded);
    sem_init(&woken, 0, 0);
    struct herr err;
    store_writer_t *writer = store_writer_new(store, count_wake, NULL, &err);
    ck_assert_ptr_nonnull(writer);

    store_write_t *writes[] = {
        put("a", "{\"v\":1}", 1),
        put("b", "{\"v\":2}", 2),
        put("a", "{\"v\":3}", 3), /* replaces the first */
        delete_of("b", 4),
        put("c", "{\"v\":4}", 5),
        store_write_new(STORE_WRITE_CURSORS),
        delete_of("c", 7), /* takes its cursor with it */
    };
    writes[4]->has_first_cursor = true;
    writes[4]->first_cursor = 40;
    writes[0]->has_first_cursor = true;
    writes[0]->first_cursor = 10;
    writes[5]->tag = 6;
    writes[5]->is_sync = true;
    store_write_add_cursor(writes[5], "a", 12);
    store_write_add_cursor(writes[5], "user:ana", 9);
    store_write_add_cursor(writes[5], "c", 41);
    size_t count = sizeof(writes) / sizeof(writes[0]);
    for (size_t i = 0; i < count; i++) {
        ck_assert(store_writer_has_room(writer));
        store_writer_send(writer, &writes[i]);
        ck_assert_ptr_null(writes[i]);
    }
    ck_assert_uint_eq(store_writer_outstanding(writer), count);

    store_write_t *done[8];
    take_done(writer, done, count);
    ck_assert_uint_eq(store_writer_outstanding(writer), 0);
    for (size_t i = 0; i < count; i++) {
        ck_assert_uint_eq(done[i]->tag, i + 1); /* in the order sent */
        ck_assert_int_eq(done[i]->rc, 0);
        store_write_free(done[i]);
    }
    store_writer_free(writer);
    store_close(store);

    store = open_file_store(dir, &loaded);
    ck_assert_uint_eq(loaded.subscription_count, 1);
    ck_assert_str_eq(loaded.subscriptions[0], "a={\"v\":3}");
    ck_assert_uint_eq(loaded.cursor_count, 2);
    ck_assert_str_eq(loaded.cursors[0], "a=12");
    ck_assert_str_eq(loaded.cursors[1], "user:ana=9");
    store_close(store);
    sem_destroy(&woken);
}
END_TEST

/* A writer on a store in memory, and its end. */
static store_writer_t *writer_on_memory(store_t **store)
{
    store_config_t config = {0};
    struct herr err;
    *store = store_mem_open(&config, NULL, &err);
    ck_assert_ptr_nonnull(*store);
    sem_init(&woken, 0, 0);
    store_writer_t *writer = store_writer_new(*store, count_wake, NULL, &err);
    ck_assert_ptr_nonnull(writer);
    return writer;
}

static void writer_end(store_writer_t *writer, store_t *store)
{
    store_writer_free(writer);
    store_close(store);
    sem_destroy(&woken);
}

START_TEST(test_store_writer_hands_back_a_refusal_with_the_write)
{
    store_t *store;
    store_writer_t *writer = writer_on_memory(&store);
    size_t len = STORE_MAX_DOCUMENT_BYTES + 1;
    char *large = malloc(len + 1);
    memset(large, 'x', len);
    large[len] = '\0';
    store_write_t *write = put("big", large, 1);
    free(large);
    store_writer_send(writer, &write);
    store_write_t *done;
    take_done(writer, &done, 1);
    ck_assert_int_eq(done->rc, HEROLD_E_TOO_LARGE);
    ck_assert_ptr_nonnull(strstr(done->err.message, "too large"));
    store_write_free(done);
    writer_end(writer, store);
}
END_TEST

START_TEST(test_store_writer_has_room_for_its_capacity_outstanding)
{
    store_t *store;
    store_writer_t *writer = writer_on_memory(&store);
    for (size_t i = 0; i < STORE_WRITER_CAPACITY; i++) {
        ck_assert(store_writer_has_room(writer));
        store_write_t *write = delete_of("never", i + 1);
        store_writer_send(writer, &write);
    }
    /* Done or not, they count until taken back: the writer never waits to hand one back. */
    ck_assert(!store_writer_has_room(writer));
    store_write_t **done = calloc(STORE_WRITER_CAPACITY, sizeof(*done));
    take_done(writer, done, 1);
    ck_assert_uint_eq(done[0]->tag, 1);
    ck_assert(store_writer_has_room(writer));
    take_done(writer, done + 1, STORE_WRITER_CAPACITY - 1);
    ck_assert_uint_eq(done[STORE_WRITER_CAPACITY - 1]->tag, STORE_WRITER_CAPACITY);
    for (size_t i = 0; i < STORE_WRITER_CAPACITY; i++) {
        store_write_free(done[i]);
    }
    free(done);
    writer_end(writer, store);
}
END_TEST

START_TEST(test_store_writer_after_stop_writes_on_the_callers_thread)
{
    store_t *store;
    store_writer_t *writer = writer_on_memory(&store);
    store_write_t *write = put("a", "{}", 1);
    store_writer_send(writer, &write);
    store_writer_stop(writer); /* does what was sent first */
    store_writer_stop(writer);
    write = put("b", "{}", 2);
    store_writer_send(writer, &write);
    store_write_t *done[2];
    /* Both are there at once: nothing is left to wait for. */
    ck_assert_uint_eq(store_writer_take_done(writer, done, 2), 2);
    ck_assert_uint_eq(done[0]->tag, 1);
    ck_assert_uint_eq(done[1]->tag, 2);
    ck_assert_int_eq(done[1]->rc, 0);
    store_write_free(done[0]);
    store_write_free(done[1]);
    writer_end(writer, store);
}
END_TEST

static Suite *store_writer_suite(void)
{
    Suite *suite = suite_create("store_writer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_store_writer_does_the_writes_in_order_and_a_restart_reads_them);
    tcase_add_test(tc, test_store_writer_hands_back_a_refusal_with_the_write);
    tcase_add_test(tc, test_store_writer_has_room_for_its_capacity_outstanding);
    tcase_add_test(tc, test_store_writer_after_stop_writes_on_the_callers_thread);
    suite_add_tcase(suite, tc);
    return suite;
}

int main(void)
{
    return unit_run(store_writer_suite());
}
