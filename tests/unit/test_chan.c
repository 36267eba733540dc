/* The channel between pipeline stages: order, bounds, wake-ups, close, ownership. */

#include <check.h>
#include <pthread.h>
#include <semaphore.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>

#include "chan.h"
#include "unit.h"

static int wake_count;

static void count_wake(void *ctx)
{
    (void)ctx;
    __atomic_add_fetch(&wake_count, 1, __ATOMIC_SEQ_CST);
}

static int freed_count;

static void count_free(void *item)
{
    freed_count++;
    free(item);
}

START_TEST(test_chan_keeps_fifo_order)
{
    chan_t *chan = chan_new(8, NULL, NULL, NULL);
    void *out[8];
    for (uintptr_t i = 1; i <= 5; i++) {
        ck_assert(chan_push(chan, (void *)i));
    }
    ck_assert_uint_eq(chan_drain(chan, out, 3), 3);
    for (uintptr_t i = 6; i <= 10; i++) {
        ck_assert(chan_push(chan, (void *)i)); /* wraps around the ring */
    }
    ck_assert_uint_eq(chan_length(chan), 7);
    ck_assert_uint_eq(chan_drain(chan, out + 3, 5), 5);
    for (uintptr_t i = 0; i < 8; i++) {
        ck_assert_ptr_eq(out[i], (void *)(i + 1));
    }
    ck_assert_uint_eq(chan_drain(chan, out, 8), 2);
    ck_assert_ptr_eq(out[0], (void *)9);
    ck_assert_ptr_eq(out[1], (void *)10);
    ck_assert_uint_eq(chan_drain(chan, out, 8), 0);
    chan_free(chan);
}
END_TEST

START_TEST(test_chan_wakes_only_when_it_becomes_non_empty)
{
    void *out[4];
    wake_count = 0;
    chan_t *chan = chan_new(4, count_wake, NULL, NULL);
    chan_push(chan, (void *)1);
    chan_push(chan, (void *)2);
    ck_assert_int_eq(wake_count, 1);
    chan_drain(chan, out, 4);
    chan_push(chan, (void *)3);
    ck_assert_int_eq(wake_count, 2);
    chan_free(chan);
}
END_TEST

START_TEST(test_chan_push_after_close_is_refused)
{
    void *out[2];
    chan_t *chan = chan_new(2, NULL, NULL, NULL);
    ck_assert(chan_push(chan, (void *)1));
    chan_close(chan);
    ck_assert(!chan_push(chan, (void *)2));
    /* What was queued before the close is still delivered. */
    ck_assert_uint_eq(chan_drain(chan, out, 2), 1);
    ck_assert_ptr_eq(out[0], (void *)1);
    chan_free(chan);
}
END_TEST

START_TEST(test_chan_free_releases_queued_items)
{
    freed_count = 0;
    chan_t *chan = chan_new(4, NULL, NULL, count_free);
    chan_push(chan, malloc(8));
    chan_push(chan, malloc(8));
    chan_free(chan);
    ck_assert_int_eq(freed_count, 2);
    chan_free(NULL);
}
END_TEST

/* Items given back come out oldest first, as far as the lane (the channel's capacity) has
 * room, through wrap-rounds of its ring; the rest stays the caller's. Given-back items do
 * not count as queued, and do not block a push. */
START_TEST(test_chan_gives_back_in_order_within_its_capacity)
{
    chan_t *chan = chan_new(4, NULL, NULL, NULL);
    void *in[6] = {(void *)1, (void *)2, (void *)3, (void *)4, (void *)5, (void *)6};
    void *out[8];
    ck_assert_uint_eq(chan_give_back(chan, in, 3), 3);
    ck_assert_uint_eq(chan_take_back(chan, out, 2), 2);
    ck_assert_ptr_eq(out[0], (void *)1);
    ck_assert_ptr_eq(out[1], (void *)2);
    ck_assert_uint_eq(chan_give_back(chan, in + 3, 3), 3); /* 3, 4, 5, 6: full, wrapped */
    ck_assert_uint_eq(chan_give_back(chan, in, 2), 0);
    ck_assert_uint_eq(chan_length(chan), 0);
    for (uintptr_t i = 1; i <= 4; i++) {
        ck_assert(chan_push(chan, (void *)i)); /* would wait if the lane took room */
    }
    ck_assert_uint_eq(chan_take_back(chan, out, 8), 4);
    for (size_t i = 0; i < 4; i++) {
        ck_assert_ptr_eq(out[i], in[2 + i]);
    }
    ck_assert_uint_eq(chan_take_back(chan, out, 8), 0);
    ck_assert_uint_eq(chan_give_back(chan, in, 6), 4);
    chan_free(chan);
}
END_TEST

/* chan_free releases what was given back and not taken, as it does what is queued. */
START_TEST(test_chan_free_releases_items_given_back)
{
    freed_count = 0;
    chan_t *chan = chan_new(4, NULL, NULL, count_free);
    chan_push(chan, malloc(8));
    void *done[2] = {malloc(8), malloc(8)};
    ck_assert_uint_eq(chan_give_back(chan, done, 2), 2);
    chan_free(chan);
    ck_assert_int_eq(freed_count, 3);
}
END_TEST

struct producer_args {
    chan_t *chan;
    uintptr_t count;
};

static void *produce(void *arg)
{
    struct producer_args *p = arg;
    for (uintptr_t i = 1; i <= p->count; i++) {
        if (!chan_push(p->chan, (void *)i)) {
            break;
        }
    }
    return NULL;
}

START_TEST(test_chan_full_channel_blocks_producer_until_drained)
{
    /* A producer of 10000 items through a channel of 4 must hand over every item, in
     * order: it can only finish if it blocks while full and resumes after a drain. */
    enum { COUNT = 10000 };
    chan_t *chan = chan_new(4, NULL, NULL, NULL);
    struct producer_args args = {chan, COUNT};
    pthread_t thread;
    pthread_create(&thread, NULL, produce, &args);
    uintptr_t expected = 1;
    while (expected <= COUNT) {
        void *out[4];
        size_t n = chan_drain(chan, out, 4);
        ck_assert_uint_le(chan_length(chan), 4);
        for (size_t i = 0; i < n; i++) {
            ck_assert_ptr_eq(out[i], (void *)expected);
            expected++;
        }
    }
    pthread_join(thread, NULL);
    chan_free(chan);
}
END_TEST

START_TEST(test_chan_close_releases_a_blocked_producer)
{
    chan_t *chan = chan_new(1, NULL, NULL, NULL);
    struct producer_args args = {chan, 3};
    pthread_t thread;
    pthread_create(&thread, NULL, produce, &args);
    /* The producer fills the channel and blocks on the second item; close frees it. */
    while (chan_length(chan) == 0) {
        sched_yield();
    }
    chan_close(chan);
    pthread_join(thread, NULL);
    ck_assert_uint_eq(chan_length(chan), 1);
    chan_free(chan);
}
END_TEST

struct batch_producer_args {
    chan_t *chan;
    uintptr_t count;
    size_t batch;
};

static void *produce_batches(void *arg)
{
    struct batch_producer_args *p = arg;
    void *items[64];
    for (uintptr_t next = 1; next <= p->count;) {
        size_t n = 0;
        while (n < p->batch && next <= p->count) {
            items[n++] = (void *)next++;
        }
        if (chan_push_many(p->chan, items, n) != n) {
            break;
        }
    }
    return NULL;
}

static sem_t wake_sem;

static void post_wake(void *ctx)
{
    (void)ctx;
    sem_post(&wake_sem);
}

START_TEST(test_chan_push_many_larger_than_capacity_wakes_before_waiting)
{
    /* The consumer drains only when woken. Batches of 37 through a channel of 4 can only
     * get through if the producer wakes the consumer before it waits for room. */
    enum { COUNT = 5000 };
    sem_init(&wake_sem, 0, 0);
    chan_t *chan = chan_new(4, post_wake, NULL, NULL);
    struct batch_producer_args args = {chan, COUNT, 37};
    pthread_t thread;
    pthread_create(&thread, NULL, produce_batches, &args);
    uintptr_t expected = 1;
    while (expected <= COUNT) {
        sem_wait(&wake_sem);
        void *out[4];
        size_t n;
        while ((n = chan_drain(chan, out, 4)) > 0) {
            for (size_t i = 0; i < n; i++) {
                ck_assert_ptr_eq(out[i], (void *)expected);
                expected++;
            }
        }
    }
    pthread_join(thread, NULL);
    chan_free(chan);
    sem_destroy(&wake_sem);
}
END_TEST

START_TEST(test_chan_push_many_wakes_once_and_stops_at_close)
{
    void *items[3] = {(void *)1, (void *)2, (void *)3};
    void *out[8];
    wake_count = 0;
    chan_t *chan = chan_new(8, count_wake, NULL, NULL);
    ck_assert_uint_eq(chan_push_many(chan, items, 3), 3);
    ck_assert_int_eq(wake_count, 1);
    ck_assert_uint_eq(chan_push_many(chan, items, 3), 3); /* not empty: no second wake */
    ck_assert_int_eq(wake_count, 1);
    ck_assert_uint_eq(chan_drain(chan, out, 8), 6);
    ck_assert_ptr_eq(out[3], (void *)1);
    chan_close(chan);
    ck_assert_uint_eq(chan_push_many(chan, items, 3), 0);
    ck_assert_uint_eq(chan_length(chan), 0);
    chan_free(chan);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("chan");
    TCase *tc = tcase_create("chan");
    tcase_add_test(tc, test_chan_keeps_fifo_order);
    tcase_add_test(tc, test_chan_wakes_only_when_it_becomes_non_empty);
    tcase_add_test(tc, test_chan_push_after_close_is_refused);
    tcase_add_test(tc, test_chan_free_releases_queued_items);
    tcase_add_test(tc, test_chan_gives_back_in_order_within_its_capacity);
    tcase_add_test(tc, test_chan_free_releases_items_given_back);
    tcase_add_test(tc, test_chan_full_channel_blocks_producer_until_drained);
    tcase_add_test(tc, test_chan_close_releases_a_blocked_producer);
    tcase_add_test(tc, test_chan_push_many_larger_than_capacity_wakes_before_waiting);
    tcase_add_test(tc, test_chan_push_many_wakes_once_and_stops_at_close);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
