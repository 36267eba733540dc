/* The store writer: writes done in the order sent, on the embedded store as a restart
 * reads them back; the writes waiting together made durable as one batch and handed back
 * only after it, and done again one by one when the store loses the batch; outcomes; the
 * bound on writes outstanding; writes after stop. */

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
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

/* The embedded store seen through a store of its own, which counts the batches and the
 * writes the writer makes, can hold a write until released, takes its time before each
 * commit (so that a write handed back before its batch is durable would be seen), and can
 * answer one commit with HEROLD_E_UNAVAILABLE, as a PostgreSQL store that lost its server
 * does. */
struct watched_store {
    struct store base;
    store_t *inner;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    bool is_holding; /* the next write waits for is_holding to be cleared */
    bool is_held;    /* a write waits */
    bool is_in_batch;
    bool is_commit_lost; /* the next commit answers HEROLD_E_UNAVAILABLE */
    int begins;
    int commits; /* those that reached the store */
    int lost_commits;
    int writes_in_batches;
    int writes_alone;
    atomic_int commits_done; /* set once a commit returned */
};

static struct watched_store *as_watched(store_t *store)
{
    return (struct watched_store *)store;
}

/* Counts a write, after holding it while asked to. */
static void watch_write(struct watched_store *w)
{
    pthread_mutex_lock(&w->lock);
    if (w->is_holding) {
        w->is_held = true;
        pthread_cond_broadcast(&w->changed);
        while (w->is_holding) {
            pthread_cond_wait(&w->changed, &w->lock);
        }
        w->is_held = false;
    }
    if (w->is_in_batch) {
        w->writes_in_batches++;
    } else {
        w->writes_alone++;
    }
    pthread_mutex_unlock(&w->lock);
}

static int watched_put(store_t *store, const char *id, const char *json, struct herr *err)
{
    watch_write(as_watched(store));
    return store_subscription_put(as_watched(store)->inner, id, json, err);
}

static int watched_delete(store_t *store, const char *id, struct herr *err)
{
    watch_write(as_watched(store));
    return store_subscription_delete(as_watched(store)->inner, id, err);
}

static int watched_cursors(store_t *store, const store_cursor_t *cursors, size_t count, bool sync,
                           struct herr *err)
{
    watch_write(as_watched(store));
    store_t *inner = as_watched(store)->inner;
    return sync ? store_cursors_put(inner, cursors, count, err)
                : store_cursors_note(inner, cursors, count, err);
}

static int watched_begin(store_t *store, struct herr *err)
{
    struct watched_store *w = as_watched(store);
    pthread_mutex_lock(&w->lock);
    w->begins++;
    w->is_in_batch = true;
    pthread_mutex_unlock(&w->lock);
    return store_state_begin(w->inner, err);
}

static int watched_commit(store_t *store, struct herr *err)
{
    struct watched_store *w = as_watched(store);
    nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    pthread_mutex_lock(&w->lock);
    w->is_in_batch = false;
    bool is_lost = w->is_commit_lost;
    w->is_commit_lost = false;
    w->lost_commits += is_lost;
    w->commits += !is_lost;
    pthread_mutex_unlock(&w->lock);
    int rc = store_state_commit(w->inner, err);
    if (rc == 0 && is_lost) {
        rc = herr_set(err, HEROLD_E_UNAVAILABLE, "store unavailable: the batch was lost");
    }
    atomic_fetch_add(&w->commits_done, 1);
    return rc;
}

static void watched_abort(store_t *store)
{
    struct watched_store *w = as_watched(store);
    pthread_mutex_lock(&w->lock);
    w->is_in_batch = false;
    pthread_mutex_unlock(&w->lock);
    store_state_abort(w->inner);
}

static void watched_close(store_t *store)
{
    struct watched_store *w = as_watched(store);
    store_close(w->inner);
    pthread_cond_destroy(&w->changed);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static const struct store_ops watched_ops = {
    .name = "watched",
    .close = watched_close,
    .subscription_put = watched_put,
    .subscription_delete = watched_delete,
    .cursors_put = watched_cursors,
    .state_begin = watched_begin,
    .state_commit = watched_commit,
    .state_abort = watched_abort,
};

static struct watched_store *watched_open(const char *dir, struct loaded *loaded)
{
    struct watched_store *w = calloc(1, sizeof(*w));
    w->base.ops = &watched_ops;
    w->inner = open_file_store(dir, loaded);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->changed, NULL);
    return w;
}

static void watched_hold(struct watched_store *w, bool is_holding)
{
    pthread_mutex_lock(&w->lock);
    w->is_holding = is_holding;
    pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->lock);
}

/* Waits until a write is held. */
static void watched_wait_held(struct watched_store *w)
{
    pthread_mutex_lock(&w->lock);
    while (!w->is_held) {
        pthread_cond_wait(&w->changed, &w->lock);
    }
    pthread_mutex_unlock(&w->lock);
}

/* Sends one write and holds it in the store; then the next sends wait in the queue. */
static void send_and_hold(store_writer_t *writer, struct watched_store *w, store_write_t *write)
{
    watched_hold(w, true);
    store_writer_send(writer, &write);
    watched_wait_held(w);
}

/* A writer on a watched embedded store in a fresh directory made from the template dir. */
static store_writer_t *writer_on_watched(char *dir, struct watched_store **watched)
{
    ck_assert_ptr_nonnull(mkdtemp(dir));
    struct loaded loaded;
    *watched = watched_open(dir, &loaded);
    sem_init(&woken, 0, 0);
    struct herr err;
    store_writer_t *writer = store_writer_new(&(*watched)->base, count_wake, NULL, &err);
    ck_assert_ptr_nonnull(writer);
    return writer;
}

START_TEST(test_store_writer_makes_the_writes_waiting_durable_as_one_batch)
{
    char dir[] = "/tmp/herold-writer-XXXXXX";
    struct watched_store *watched;
    store_writer_t *writer = writer_on_watched(dir, &watched);

    send_and_hold(writer, watched, put("a", "{\"v\":1}", 1));
    size_t len = STORE_MAX_DOCUMENT_BYTES + 1;
    char *large = malloc(len + 1);
    memset(large, 'x', len);
    large[len] = '\0';
    store_write_t *queued[] = {
        put("b", "{\"v\":2}", 2), put("c", "{\"v\":3}", 3),
        put("big", large, 4), /* refused on its own */
        delete_of("b", 5),        store_write_new(STORE_WRITE_CURSORS),
        put("d", "{\"v\":4}", 7), put("a", "{\"v\":5}", 8),
    };
    free(large);
    queued[4]->tag = 6;
    queued[4]->is_sync = true;
    store_write_add_cursor(queued[4], "c", 30);
    store_write_add_cursor(queued[4], "user:ana", 9);
    queued[5]->has_first_cursor = true;
    queued[5]->first_cursor = 40;
    size_t count = sizeof(queued) / sizeof(queued[0]);
    for (size_t i = 0; i < count; i++) {
        store_writer_send(writer, &queued[i]);
    }
    watched_hold(watched, false);

    store_write_t *done[8];
    take_done(writer, done, 1); /* the held write, done alone */
    ck_assert_uint_eq(done[0]->tag, 1);
    ck_assert_int_eq(done[0]->rc, 0);
    for (size_t taken = 1; taken <= count; taken++) {
        take_done(writer, done + taken, 1);
        ck_assert_msg(atomic_load(&watched->commits_done) == 1,
                      "write %zu handed back before its batch was committed", taken);
    }
    for (size_t i = 0; i <= count; i++) {
        ck_assert_uint_eq(done[i]->tag, i + 1);
        ck_assert_int_eq(done[i]->rc, i + 1 == 4 ? HEROLD_E_TOO_LARGE : 0);
        store_write_free(done[i]);
    }
    ck_assert_int_eq(watched->begins, 1);
    ck_assert_int_eq(watched->commits, 1);
    ck_assert_int_eq(watched->writes_alone, 1);
    ck_assert_int_eq(watched->writes_in_batches, 8); /* the seven, and d's first cursor */
    store_writer_free(writer);
    store_close(&watched->base);

    struct loaded loaded;
    store_t *store = open_file_store(dir, &loaded);
    ck_assert_uint_eq(loaded.subscription_count, 3);
    ck_assert_str_eq(loaded.subscriptions[0], "a={\"v\":5}");
    ck_assert_str_eq(loaded.subscriptions[1], "c={\"v\":3}");
    ck_assert_str_eq(loaded.subscriptions[2], "d={\"v\":4}");
    ck_assert_uint_eq(loaded.cursor_count, 3);
    ck_assert_str_eq(loaded.cursors[0], "c=30");
    ck_assert_str_eq(loaded.cursors[1], "d=40");
    ck_assert_str_eq(loaded.cursors[2], "user:ana=9");
    store_close(store);
    sem_destroy(&woken);
}
END_TEST

START_TEST(test_store_writer_does_a_lost_batch_again_one_by_one)
{
    char dir[] = "/tmp/herold-writer-XXXXXX";
    struct watched_store *watched;
    store_writer_t *writer = writer_on_watched(dir, &watched);

    send_and_hold(writer, watched, put("a", "{}", 1));
    pthread_mutex_lock(&watched->lock);
    watched->is_commit_lost = true;
    pthread_mutex_unlock(&watched->lock);
    for (uint64_t tag = 2; tag <= 4; tag++) {
        char id[8];
        snprintf(id, sizeof(id), "s%llu", (unsigned long long)tag);
        store_writer_send(writer, &(store_write_t *){put(id, "{}", tag)});
    }
    watched_hold(watched, false);
    store_write_t *done[4];
    take_done(writer, done, 4);
    for (size_t i = 0; i < 4; i++) {
        ck_assert_uint_eq(done[i]->tag, i + 1);
        ck_assert_int_eq(done[i]->rc, 0);
        store_write_free(done[i]);
    }
    ck_assert_int_eq(watched->lost_commits, 1);
    ck_assert_int_eq(watched->writes_in_batches, 3);
    ck_assert_int_eq(watched->writes_alone, 1 + 3); /* the held one, then the batch again */
    store_writer_free(writer);
    store_close(&watched->base);
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
    tcase_add_test(tc, test_store_writer_makes_the_writes_waiting_durable_as_one_batch);
    tcase_add_test(tc, test_store_writer_does_a_lost_batch_again_one_by_one);
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
