#include "chan.h"

#include <pthread.h>
#include <stdlib.h>

#include "mem.h"

struct chan {
    pthread_mutex_t lock;
    pthread_cond_t not_full;
    void **ring;
    size_t capacity;
    size_t head; /* index of the oldest item */
    size_t length;
    bool is_closed;
    void **returned; /* the lane given back: a ring of capacity items */
    size_t returned_head;
    size_t returned_length;
    chan_wake_fn wake;
    void *wake_ctx;
    void (*free_item)(void *);
};

chan_t *chan_new(size_t capacity, chan_wake_fn wake, void *wake_ctx, void (*free_item)(void *))
{
    chan_t *chan = xcalloc(1, sizeof(*chan));
    pthread_mutex_init(&chan->lock, NULL);
    pthread_cond_init(&chan->not_full, NULL);
    chan->ring = xcalloc(capacity, sizeof(void *));
    chan->returned = xcalloc(capacity, sizeof(void *));
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
    if (chan->free_item != NULL) {
        for (size_t i = 0; i < chan->length; i++) {
            chan->free_item(chan->ring[(chan->head + i) % chan->capacity]);
        }
        for (size_t i = 0; i < chan->returned_length; i++) {
            chan->free_item(chan->returned[(chan->returned_head + i) % chan->capacity]);
        }
    }
    pthread_cond_destroy(&chan->not_full);
    pthread_mutex_destroy(&chan->lock);
    free(chan->ring);
    free(chan->returned);
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
        while (chan->length == chan->capacity && !chan->is_closed) {
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
        was_empty |= chan->length == 0;
        while (pushed < count && chan->length < chan->capacity) {
            chan->ring[(chan->head + chan->length) % chan->capacity] = items[pushed++];
            chan->length++;
        }
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
    size_t count = chan->length < max ? chan->length : max;
    for (size_t i = 0; i < count; i++) {
        items[i] = chan->ring[chan->head];
        chan->head = (chan->head + 1) % chan->capacity;
    }
    chan->length -= count;
    if (count > 0) {
        pthread_cond_broadcast(&chan->not_full);
    }
    pthread_mutex_unlock(&chan->lock);
    return count;
}

size_t chan_give_back(chan_t *chan, void *const *items, size_t count)
{
    pthread_mutex_lock(&chan->lock);
    size_t room = chan->capacity - chan->returned_length;
    size_t taken = count < room ? count : room;
    for (size_t i = 0; i < taken; i++) {
        chan->returned[(chan->returned_head + chan->returned_length) % chan->capacity] = items[i];
        chan->returned_length++;
    }
    pthread_mutex_unlock(&chan->lock);
    return taken;
}

size_t chan_take_back(chan_t *chan, void **items, size_t max)
{
    pthread_mutex_lock(&chan->lock);
    size_t count = chan->returned_length < max ? chan->returned_length : max;
    for (size_t i = 0; i < count; i++) {
        items[i] = chan->returned[chan->returned_head];
        chan->returned_head = (chan->returned_head + 1) % chan->capacity;
    }
    chan->returned_length -= count;
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
    size_t length = chan->length;
    pthread_mutex_unlock(&chan->lock);
    return length;
}
