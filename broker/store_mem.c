/*
 * The memory store (store_mem_open, --store memory:): everything in RAM, nothing on disk.
 *
 * It exists to measure what durability costs: the same broker, the same acks after a
 * commit, but a commit that only publishes the appended events to readers. Nothing
 * survives a restart, and the broker says so in its start-up log. Retention works as in
 * the other backends (age and size; reads before the first retained event get
 * HEROLD_E_NOT_FOUND), so a long benchmark runs in bounded memory.
 *
 * Events sit in a ring of slots that doubles when full. The appender (ingest's thread)
 * adds slots past the committed end without the lock; commit, trim and every read take
 * the mutex, readers copy nothing out of the lock's reach: the callback runs under it,
 * which is fine for the short reads of replays (memory reads, no I/O).
 */

#include "store.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

#define MEM_RECORD_OVERHEAD 24 /* counted per event for size retention, as in the journal */

struct mem_event {
    uint64_t seq;
    int64_t time_ms;
    void *payload;
    size_t len;
};

typedef struct store_mem {
    struct store base;
    pthread_mutex_t lock;
    struct mem_event *ring;
    size_t capacity; /* a power of two */
    size_t head;     /* the slot of the first retained event */
    size_t count;    /* committed and appended */
    size_t committed;
    uint64_t first_seq; /* of ring[head] */
    uint64_t bytes;     /* of the committed events */
    atomic_uint_fast64_t last_committed_seq;
    atomic_uint_fast64_t first_retained_seq;
    int64_t retention_ms;
    uint64_t retention_bytes;
    json_t *subscriptions; /* id -> document */
    json_t *cursors;       /* key -> seq */
} store_mem_t;

static store_mem_t *as_mem(store_t *store)
{
    return (store_mem_t *)store;
}

static struct mem_event *slot(store_mem_t *store, size_t i)
{
    return &store->ring[(store->head + i) & (store->capacity - 1)];
}

static void mem_close(store_t *base)
{
    store_mem_t *store = as_mem(base);
    for (size_t i = 0; i < store->count; i++) {
        free(slot(store, i)->payload);
    }
    free(store->ring);
    json_decref(store->subscriptions);
    json_decref(store->cursors);
    pthread_mutex_destroy(&store->lock);
    free(store);
}

static int mem_event_append(store_t *base, const void *payload, size_t len, int64_t time_ms,
                            uint64_t *seq, struct herr *err)
{
    store_mem_t *store = as_mem(base);
    if (len > JOURNAL_MAX_RECORD_BYTES) {
        return herr_set(err, HEROLD_E_TOO_LARGE, "store: an event of %zu bytes is over %d", len,
                        JOURNAL_MAX_RECORD_BYTES);
    }
    if (store->count == store->capacity) {
        /* Readers index the ring: growing it takes the lock. */
        pthread_mutex_lock(&store->lock);
        size_t capacity = store->capacity * 2;
        struct mem_event *ring = xmalloc(capacity * sizeof(*ring));
        for (size_t i = 0; i < store->count; i++) {
            ring[i] = *slot(store, i);
        }
        free(store->ring);
        store->ring = ring;
        store->capacity = capacity;
        store->head = 0;
        pthread_mutex_unlock(&store->lock);
    }
    struct mem_event *event = slot(store, store->count);
    event->seq = store->first_seq + store->count;
    event->time_ms = time_ms;
    event->payload = xmalloc(len > 0 ? len : 1);
    memcpy(event->payload, payload, len);
    event->len = len;
    store->count++;
    if (seq != NULL) {
        *seq = event->seq;
    }
    return 0;
}

static int mem_event_commit(store_t *base, struct herr *err)
{
    (void)err;
    store_mem_t *store = as_mem(base);
    pthread_mutex_lock(&store->lock);
    for (size_t i = store->committed; i < store->count; i++) {
        store->bytes += slot(store, i)->len + MEM_RECORD_OVERHEAD;
    }
    store->committed = store->count;
    if (store->committed > 0) {
        atomic_store(&store->last_committed_seq, slot(store, store->committed - 1)->seq);
        atomic_store(&store->first_retained_seq, store->first_seq);
    }
    pthread_mutex_unlock(&store->lock);
    return 0;
}

static int mem_event_read(store_t *base, uint64_t from_seq, size_t max_records, journal_read_fn fn,
                          void *ctx, struct herr *err)
{
    store_mem_t *store = as_mem(base);
    pthread_mutex_lock(&store->lock);
    if (from_seq != 0 && store->committed > 0 && from_seq < store->first_seq) {
        pthread_mutex_unlock(&store->lock);
        return herr_set(err, HEROLD_E_NOT_FOUND, "store: seq %llu is no longer retained",
                        (unsigned long long)from_seq);
    }
    size_t start = from_seq <= store->first_seq ? 0 : (size_t)(from_seq - store->first_seq);
    size_t handed = 0;
    for (size_t i = start; i < store->committed; i++) {
        const struct mem_event *event = slot(store, i);
        journal_record_t record = {event->seq, event->time_ms, event->payload, event->len};
        handed++;
        if (!fn(&record, ctx) || (max_records != 0 && handed == max_records)) {
            break;
        }
    }
    pthread_mutex_unlock(&store->lock);
    return 0;
}

static uint64_t mem_event_first_seq(store_t *base)
{
    return atomic_load(&as_mem(base)->first_retained_seq);
}

static uint64_t mem_event_last_seq(store_t *base)
{
    return atomic_load(&as_mem(base)->last_committed_seq);
}

static size_t mem_event_trim(store_t *base, int64_t now_ms)
{
    store_mem_t *store = as_mem(base);
    size_t dropped = 0;
    pthread_mutex_lock(&store->lock);
    /* The newest committed event stays, as in the other backends. */
    while (store->committed > 1) {
        struct mem_event *oldest = slot(store, 0);
        if (oldest->time_ms >= now_ms - store->retention_ms &&
            store->bytes <= store->retention_bytes) {
            break;
        }
        store->bytes -= oldest->len + MEM_RECORD_OVERHEAD;
        free(oldest->payload);
        store->head = (store->head + 1) & (store->capacity - 1);
        store->count--;
        store->committed--;
        store->first_seq++;
        dropped++;
    }
    atomic_store(&store->first_retained_seq, store->committed > 0 ? store->first_seq : 0);
    pthread_mutex_unlock(&store->lock);
    return dropped;
}

static int mem_subscription_put(store_t *base, const char *id, const char *json, struct herr *err)
{
    if (strlen(json) > STORE_MAX_DOCUMENT_BYTES) {
        return herr_set(err, HEROLD_E_TOO_LARGE, "store: a subscription document is too large");
    }
    json_object_set_new(as_mem(base)->subscriptions, id, json_string(json));
    return 0;
}

static int mem_subscription_delete(store_t *base, const char *id, struct herr *err)
{
    (void)err;
    json_object_del(as_mem(base)->subscriptions, id);
    json_object_del(as_mem(base)->cursors, id);
    return 0;
}

static int mem_cursors_put(store_t *base, const store_cursor_t *cursors, size_t count, bool sync,
                           struct herr *err)
{
    (void)sync;
    store_mem_t *store = as_mem(base);
    int rc = store_cursors_check(cursors, count, err);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        store_cursor_raise(store->cursors, cursors[i].key, cursors[i].seq);
    }
    return rc;
}

static const struct store_ops mem_ops = {
    .name = "memory",
    .close = mem_close,
    .event_append = mem_event_append,
    .event_commit = mem_event_commit,
    .event_read = mem_event_read,
    .event_first_seq = mem_event_first_seq,
    .event_last_seq = mem_event_last_seq,
    .event_trim = mem_event_trim,
    .subscription_put = mem_subscription_put,
    .subscription_delete = mem_subscription_delete,
    .cursors_put = mem_cursors_put,
};

store_t *store_mem_open(const store_config_t *config, const store_loader_t *loader,
                        struct herr *err)
{
    (void)loader; /* nothing was kept */
    if (config->retention_ms < 0) {
        herr_set(err, HEROLD_E_CONFIG, "store: a negative retention");
        return NULL;
    }
    store_mem_t *store = xcalloc(1, sizeof(*store));
    store->base.ops = &mem_ops;
    pthread_mutex_init(&store->lock, NULL);
    store->capacity = 1024;
    store->ring = xmalloc(store->capacity * sizeof(*store->ring));
    store->first_seq = 1;
    atomic_init(&store->last_committed_seq, 0);
    atomic_init(&store->first_retained_seq, 0);
    store->retention_ms =
        config->retention_ms > 0 ? config->retention_ms : JOURNAL_DEFAULT_RETENTION_MS;
    store->retention_bytes =
        config->retention_bytes > 0 ? config->retention_bytes : JOURNAL_DEFAULT_RETENTION_BYTES;
    store->subscriptions = json_object();
    store->cursors = json_object();
    return &store->base;
}
