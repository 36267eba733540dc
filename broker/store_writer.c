#include "store_writer.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "thread.h"

/* The most writes made durable together. Under a burst of changes from many clients a
 * batch of 64 shares one sync; a burst is rarely larger, and each write in it waits for
 * all the others. */
#define BATCH_MAX 64

struct store_writer {
    store_t *store;
    chan_t *commands;
    chan_t *done;
    size_t outstanding; /* the sender's thread only */
    bool is_running;    /* the thread runs; the sender's view */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t woken;
    bool is_woken;
    bool is_stopping;
};

store_write_t *store_write_new(store_write_kind_t kind)
{
    store_write_t *write = xcalloc(1, sizeof(*write));
    write->kind = kind;
    return write;
}

void store_write_add_cursor(store_write_t *write, const char *key, uint64_t seq)
{
    /* Doubling at powers of two: the count alone says when the array is full. */
    size_t count = write->cursor_count;
    if ((count & (count - 1)) == 0) {
        size_t capacity = count == 0 ? 1 : 2 * count;
        write->cursors = xrealloc(write->cursors, capacity * sizeof(*write->cursors));
    }
    write->cursors[count] = (store_cursor_t){xstrdup(key), seq};
    write->cursor_count++;
}

void store_write_free(store_write_t *write)
{
    if (write == NULL) {
        return;
    }
    for (size_t i = 0; i < write->cursor_count; i++) {
        free((char *)write->cursors[i].key);
    }
    free(write->cursors);
    free(write->id);
    free(write->document);
    free(write);
}

static void free_item(void *item)
{
    store_write_free(item);
}

/* Does the write and keeps its outcome in it. */
static void perform(store_t *store, store_write_t *write)
{
    int rc = 0;
    switch (write->kind) {
    case STORE_WRITE_PUT:
        if (write->has_first_cursor) {
            /* The cursor goes first: a document stored without one would come back after
             * a restart without a position to deliver from. */
            store_cursor_t cursor = {write->id, write->first_cursor};
            rc = store_cursors_put(store, &cursor, 1, &write->err);
        }
        if (rc == 0) {
            rc = store_subscription_put(store, write->id, write->document, &write->err);
        }
        break;
    case STORE_WRITE_DELETE:
        rc = store_subscription_delete(store, write->id, &write->err);
        break;
    case STORE_WRITE_CURSORS:
        rc = write->is_sync
                 ? store_cursors_put(store, write->cursors, write->cursor_count, &write->err)
                 : store_cursors_note(store, write->cursors, write->cursor_count, &write->err);
        break;
    }
    write->rc = rc;
    /* The embedded store failing a write is a disk failing: nothing more may be confirmed.
     * A PostgreSQL store that went away only refuses this write. */
    if (rc != 0 && rc != HEROLD_E_UNAVAILABLE && rc != HEROLD_E_TOO_LARGE) {
        log_msg(LOG_LEVEL_ERROR, "store writer: %s; stopping", write->err.message);
        _exit(EXIT_FAILURE);
    }
}

static void wake_writer(void *ctx)
{
    store_writer_t *writer = ctx;
    pthread_mutex_lock(&writer->lock);
    writer->is_woken = true;
    pthread_cond_signal(&writer->woken);
    pthread_mutex_unlock(&writer->lock);
}

/* Does the writes as one batch of the store (store_state_begin): one sync for them all.
 * Returns false, with each write's outcome cleared, when the batch was not stored
 * (HEROLD_E_UNAVAILABLE): then they must be done again one by one. */
static bool perform_batch(store_t *store, store_write_t **writes, size_t count)
{
    struct herr err;
    if (store_state_begin(store, &err) != 0) {
        return false;
    }
    size_t done = 0;
    while (done < count) {
        perform(store, writes[done]);
        if (writes[done++]->rc == HEROLD_E_UNAVAILABLE) {
            break;
        }
    }
    bool is_stored = false;
    if (writes[done - 1]->rc == HEROLD_E_UNAVAILABLE) {
        store_state_abort(store);
    } else {
        int rc = store_state_commit(store, &err);
        if (rc != 0 && rc != HEROLD_E_UNAVAILABLE) {
            log_msg(LOG_LEVEL_ERROR, "store writer: %s; stopping", err.message);
            _exit(EXIT_FAILURE);
        }
        is_stored = rc == 0;
    }
    if (!is_stored) {
        for (size_t i = 0; i < done; i++) {
            writes[i]->rc = 0;
            herr_clear(&writes[i]->err);
        }
    }
    return is_stored;
}

/* Does the writes drained at once, in order, and hands them back once all are durable:
 * as one batch when there are several and the store batches, else one at a time (also
 * after a batch the store lost, where a PostgreSQL store reconnects for each write). On
 * the writer's thread or, after stop, the sender's. The done channel has room for every
 * write outstanding: it never waits. */
static void write_drained(store_writer_t *writer, store_write_t **writes, size_t count)
{
    bool is_done = count > 1 && store_state_batches(writer->store) &&
                   perform_batch(writer->store, writes, count);
    for (size_t i = 0; i < count; i++) {
        if (!is_done) {
            perform(writer->store, writes[i]);
        }
        bool is_pushed = chan_push(writer->done, writes[i]);
        assert(is_pushed);
        (void)is_pushed;
    }
}

static void *writer_main(void *arg)
{
    store_writer_t *writer = arg;
    for (;;) {
        void *items[BATCH_MAX];
        size_t count = chan_drain(writer->commands, items, BATCH_MAX);
        write_drained(writer, (store_write_t **)items, count);
        if (count > 0) {
            continue;
        }
        pthread_mutex_lock(&writer->lock);
        while (!writer->is_woken && !writer->is_stopping) {
            pthread_cond_wait(&writer->woken, &writer->lock);
        }
        /* The stopper is the only sender: once it stopped, a queue found empty with no
         * wake-up since stays empty. */
        bool is_done = writer->is_stopping && !writer->is_woken;
        writer->is_woken = false;
        pthread_mutex_unlock(&writer->lock);
        if (is_done) {
            return NULL;
        }
    }
}

store_writer_t *store_writer_new(store_t *store, chan_wake_fn wake, void *wake_ctx,
                                 struct herr *err)
{
    store_writer_t *writer = xcalloc(1, sizeof(*writer));
    writer->store = store;
    pthread_mutex_init(&writer->lock, NULL);
    pthread_cond_init(&writer->woken, NULL);
    writer->commands = chan_new(STORE_WRITER_CAPACITY, wake_writer, writer, free_item);
    writer->done = chan_new(STORE_WRITER_CAPACITY, wake, wake_ctx, free_item);
    int rc = pthread_create(&writer->thread, NULL, writer_main, writer);
    if (rc != 0) {
        herr_set(err, HEROLD_E_SYSTEM, "store writer: pthread_create failed: %s", strerror(rc));
        store_writer_free(writer);
        return NULL;
    }
    thread_name(writer->thread, "store-writer");
    writer->is_running = true;
    return writer;
}

bool store_writer_has_room(const store_writer_t *writer)
{
    return writer->outstanding < STORE_WRITER_CAPACITY;
}

void store_writer_send(store_writer_t *writer, store_write_t **write)
{
    assert(store_writer_has_room(writer));
    store_write_t *item = *write;
    *write = NULL;
    writer->outstanding++;
    if (writer->is_running) {
        bool is_pushed = chan_push(writer->commands, item);
        assert(is_pushed);
        (void)is_pushed;
        return;
    }
    write_drained(writer, &item, 1);
}

size_t store_writer_take_done(store_writer_t *writer, store_write_t **out, size_t max)
{
    size_t count = chan_drain(writer->done, (void **)out, max);
    writer->outstanding -= count;
    return count;
}

size_t store_writer_outstanding(const store_writer_t *writer)
{
    return writer->outstanding;
}

void store_writer_stop(store_writer_t *writer)
{
    if (!writer->is_running) {
        return;
    }
    pthread_mutex_lock(&writer->lock);
    writer->is_stopping = true;
    pthread_cond_signal(&writer->woken);
    pthread_mutex_unlock(&writer->lock);
    pthread_join(writer->thread, NULL);
    writer->is_running = false;
}

void store_writer_free(store_writer_t *writer)
{
    if (writer == NULL) {
        return;
    }
    store_writer_stop(writer);
    chan_free(writer->commands);
    chan_free(writer->done);
    pthread_cond_destroy(&writer->woken);
    pthread_mutex_destroy(&writer->lock);
    free(writer);
}
