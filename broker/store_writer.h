#ifndef HEROLD_STORE_WRITER_H
#define HEROLD_STORE_WRITER_H

/*
 * The store writer: the thread that writes subscriptions and cursors to the store, so that
 * the service thread, which matches events and serves every WebSocket, never waits for an
 * fdatasync or a database's COMMIT.
 *
 * The service thread sends writes (store_writer_send) and takes them back done, with their
 * outcome, from store_writer_take_done; a wake-up (the service loop's) follows each batch
 * that became ready. Writes are done in the order sent, so a subscription's put, a later
 * put of the same subscription and its delete reach the store in that order. The writes
 * waiting when the thread turns to its queue (at most 64) are made durable together, as
 * one batch of the store (store_state_begin: one fdatasync, one transaction), and handed
 * back once it is: concurrent changes share a sync instead of queueing for one each.
 *
 * A change to a subscription is applied to the index when its write is done, not before
 * (rest.c): matching never sees what the store may refuse, and a change answered with an
 * error changes nothing.
 *
 * Neither side ever blocks on the other: the sender may have at most STORE_WRITER_CAPACITY
 * writes outstanding, sent and not yet taken back (store_writer_has_room), which both
 * channels hold. What cannot be sent waits on the sender's side (a REST change is refused
 * with 503 and Retry-After, cursors wait for the next sweep).
 *
 * Failures are those of store.h: HEROLD_E_UNAVAILABLE (PostgreSQL away) and
 * HEROLD_E_TOO_LARGE come back with the write; any other failure of a store write is a
 * disk failing, and the process ends before anything more is confirmed.
 *
 * After store_writer_stop the thread is gone and sends are done on the sender's thread
 * before store_writer_send returns: the last cursors at shutdown take the same path.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chan.h"
#include "errors.h"
#include "store.h"

#define STORE_WRITER_CAPACITY 4096

typedef enum store_write_kind {
    STORE_WRITE_PUT,     /* a subscription's document, after its first cursor if any */
    STORE_WRITE_DELETE,  /* a subscription and its cursor */
    STORE_WRITE_CURSORS, /* cursors, all or none */
} store_write_kind_t;

typedef struct store_write {
    store_write_kind_t kind;
    uint64_t tag;   /* the sender's, to find what the outcome is for; 0 for none */
    char *id;       /* PUT, DELETE: the subscription id */
    char *document; /* PUT */
    bool has_first_cursor;
    uint64_t first_cursor;   /* PUT with has_first_cursor: stored under id first */
    store_cursor_t *cursors; /* CURSORS: keys owned by the write */
    size_t cursor_count;
    bool is_sync; /* CURSORS: wait for the disk (store_cursors_put), or not (..._note) */
    /* The outcome, set by the writer. */
    int rc;
    struct herr err;
} store_write_t;

typedef struct store_writer store_writer_t;

/* A write of kind with nothing in it yet. */
store_write_t *store_write_new(store_write_kind_t kind);

/* Adds a cursor to a CURSORS write (key copied). */
void store_write_add_cursor(store_write_t *write, const char *key, uint64_t seq);

void store_write_free(store_write_t *write);

/* Starts the writer's thread on store (borrowed). wake(wake_ctx) is called on the writer's
 * thread when done writes are waiting and there were none before. Returns NULL with err
 * set when the thread cannot start. */
store_writer_t *store_writer_new(store_t *store, chan_wake_fn wake, void *wake_ctx,
                                 struct herr *err);

/* Whether one more write may be sent. */
bool store_writer_has_room(const store_writer_t *writer);

/* Sends *write (which must fit: store_writer_has_room) and takes it (*write set NULL). */
void store_writer_send(store_writer_t *writer, store_write_t **write);

/* Moves up to max done writes into out[], in the order sent; returns how many. The caller
 * owns them (store_write_free). */
size_t store_writer_take_done(store_writer_t *writer, store_write_t **out, size_t max);

/* The number of writes sent and not yet taken back. */
size_t store_writer_outstanding(const store_writer_t *writer);

/* Does every write sent and ends the thread; later sends are done on the caller's thread.
 * Idempotent. */
void store_writer_stop(store_writer_t *writer);

/* Stops the writer and frees it with the done writes not taken. NULL is a no-op. */
void store_writer_free(store_writer_t *writer);

#endif
