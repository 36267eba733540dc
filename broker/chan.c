#include "chan.h"

#include <pthread.h>
#include <stdlib.h>

#include "mem.h"

/* A FIFO of at most the channel's capacity pointers. */
struct ring {
    void **slots;
    size_t head; /* index of the oldest item */
    size_t length;
};

struct chan {
    pthread_mutex_t lock;
    pthread_cond_t not_full;
    size_t capacity;
    struct ring queued;
    struct ring returned; /* the lane given back */
    bool is_closed;
    chan_wake_fn wake;
    void *wake_ctx;
    void (*free_item)(void *);
};

/* Appends items[0..count) as far as there is room; returns how many. */
static size_t ring_put(struct ring *r, size_t capacity, void *const *items, size_t count)
{
    size_t room = capacity - r->length;
    size_t put = count < room ? count : room;
    for (size_t i = 0; i < put; i++) {
        r->slots[(r->head + r->length) % capacity] = items[i];
        r->length++;
    }
    return put;
}

/* Moves up to max of the oldest items into items[]; returns how many. */
static size_t ring_take(struct ring *r, size_t capacity, void **items, size_t max)
{
    size_t count = r->length < max ? r->length : max;
    for (size_t i = 0; i < count; i++) {
        items[i] = r->slots[r->head];
        r->head = (r->head + 1) % capacity;
    }
    r->length -= count;
    return count;
}

static void ring_release(struct ring *r, size_t capacity, void (*free_item)(void *))
{
    if (free_item != NULL) {
        for (size_t i = 0; i < r->length; i++) {
            free_item(r->slots[(r->head + i) % capacity]);
        }
    }
    free(r->slots);
}

chan_t *chan_new(size_t capacity, chan_wake_fn wake, void *wake_ctx, void (*free_item)(void *))
{
    chan_t *chan = xcalloc(1, sizeof(*chan));
    pthread_mutex_init(&chan->lock, NULL);
    pthread_cond_init(&chan->not_full, NULL);
    chan->queued.slots = xcalloc(capacity, sizeof(void *));
    chan->returned.slots = xcalloc(capacity, sizeof(void *));
    chan->capacity = capacity;
    chan->wake = wake;
    chan->wake_ctx = wake_ctx;
    chan->free_item = free_item;
    return chan;
}

void chan_free(chan_t *chan)
{
    if (chan == NULL) {
        return;
    }
    ring_release(&chan->queued, chan->capacity, chan->free_item);
    ring_release(&chan->returned, chan->capacity, chan->free_item);
    pthread_cond_destroy(&chan->not_full);
    pthread_mutex_destroy(&chan->lock);
    free(chan);
}

bool chan_push(chan_t *chan, void *item)
{
    return chan_push_many(chan, &item, 1) == 1;
}

size_t chan_push_many(chan_t *chan, void *const *items, size_t count)
{
    size_t pushed = 0;
    bool was_empty = false;
    pthread_mutex_lock(&chan->lock);
    while (pushed < count) {
        while (chan->queued.length == chan->capacity && !chan->is_closed) {
            /* The consumer must hear of what is queued before this waits for it. */
            if (was_empty && chan->wake != NULL) {
                pthread_mutex_unlock(&chan->lock);
                chan->wake(chan->wake_ctx);
                was_empty = false;
                pthread_mutex_lock(&chan->lock);
                continue;
            }
            pthread_cond_wait(&chan->not_full, &chan->lock);
        }
        if (chan->is_closed) {
            break;
        }
        was_empty |= chan->queued.length == 0;
        pushed += ring_put(&chan->queued, chan->capacity, items + pushed, count - pushed);
    }
    pthread_mutex_unlock(&chan->lock);
    if (was_empty && chan->wake != NULL) {
        chan->wake(chan->wake_ctx);
    }
    return pushed;
}

size_t chan_drain(chan_t *chan, void **items, size_t max)
{
    pthread_mutex_lock(&chan->lock);
    size_t count = ring_take(&chan->queued, chan->capacity, items, max);
    if (count > 0) {
        pthread_cond_broadcast(&chan->not_full);
    }
    pthread_mutex_unlock(&chan->lock);
    return count;
}

size_t chan_give_back(chan_t *chan, void *const *items, size_t count)
{
    pthread_mutex_lock(&chan->lock);
    size_t taken = ring_put(&chan->returned, chan->capacity, items, count);
    pthread_mutex_unlock(&chan->lock);
    return taken;
}

size_t chan_take_back(chan_t *chan, void **items, size_t max)
{
    pthread_mutex_lock(&chan->lock);
    size_t count = ring_take(&chan->returned, chan->capacity, items, max);
    pthread_mutex_unlock(&chan->lock);
    return count;
}

void chan_close(chan_t *chan)
{
    pthread_mutex_lock(&chan->lock);
    chan->is_closed = true;
    pthread_cond_broadcast(&chan->not_full);
    pthread_mutex_unlock(&chan->lock);
}

size_t chan_length(chan_t *chan)
{
    pthread_mutex_lock(&chan->lock);
    size_t length = chan->queued.length;
    pthread_mutex_unlock(&chan->lock);
    return length;
}
