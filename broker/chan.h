#ifndef HEROLD_CHAN_H
#define HEROLD_CHAN_H

/*
 * A bounded FIFO of pointers between two threads: the queue between pipeline stages.
 *
 * Producers block in chan_push while the channel is full, which is how backpressure
 * travels upstream (a full dispatch queue slows ingest, which slows acks, which slows
 * publishers). The consumer drains without blocking and is woken by a callback that the
 * producer invokes after each push that made the channel non-empty (for the
 * libwebsockets thread that callback is lws_cancel_service).
 *
 * A mutex and two condition variables: simple and fast enough for batches of events;
 * bench/ will show whether a lock-free ring is worth it.
 *
 * Items given back. The consumer may hand items it is done with back to the producer
 * (chan_give_back), which releases them on its own thread (chan_take_back). Memory is
 * then freed by the thread that allocated it: glibc gives each thread an arena of its
 * own, and a free() from another thread takes the owner's arena lock, so the service
 * thread freeing every event that ingest had allocated made the two threads wait on each
 * other's malloc and free (in W1, about 6% of the broker's CPU, much of it futex waits).
 * The lane holds at most the channel's capacity; what does not fit stays the consumer's.
 */

#include <stdbool.h>
#include <stddef.h>

typedef struct chan chan_t;

/* Called by producers, outside the lock, when the channel went from empty to non-empty. */
typedef void (*chan_wake_fn)(void *ctx);

/* A channel holding at most capacity items (capacity > 0), and as many given back. The
 * channel does not own its items: chan_free releases the remaining ones, queued or given
 * back, with free_item when it is not NULL. */
chan_t *chan_new(size_t capacity, chan_wake_fn wake, void *wake_ctx, void (*free_item)(void *));

void chan_free(chan_t *chan);

/* Appends item, waiting while the channel is full. Returns true, or false without
 * taking the item when the channel was closed (then the caller still owns it). */
bool chan_push(chan_t *chan, void *item);

/* Appends items[0..count) in order under one lock (waiting for room as chan_push does) and
 * wakes the consumer at most once per wait. Returns how many were taken: count, or fewer
 * when the channel was closed (the caller still owns items[return..count)). */
size_t chan_push_many(chan_t *chan, void *const *items, size_t count);

/* Moves up to max items into items[] in FIFO order without waiting; returns the count. */
size_t chan_drain(chan_t *chan, void **items, size_t max);

/* Hands done items back to the producer: takes items[0..count) in order as far as the
 * lane has room and returns how many it took; the caller still owns items[return..count).
 * Never waits. */
size_t chan_give_back(chan_t *chan, void *const *items, size_t count);

/* Moves up to max items given back into items[], oldest first; returns the count. */
size_t chan_take_back(chan_t *chan, void **items, size_t max);

/* Wakes every blocked producer; later pushes fail. Items already queued stay drainable. */
void chan_close(chan_t *chan);

/* The number of queued items (a snapshot). */
size_t chan_length(chan_t *chan);

#endif
