#include "ingest.h"

#include <assert.h>
#include <inttypes.h>
#include <errno.h>
#include <msgpack.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "dedup.h"
#include "event.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "thread.h"

#define INGEST_POLL_MS 100
#define INGEST_FREE_BATCH 256 /* events given back, freed per chan_take_back */
/* Batches with fewer events appended commit on the ingest thread (ingest.h). */
#define INGEST_SPLIT_MIN_EVENTS 64
/* Events read ahead of the one deduplicated and appended. Decoding an event fetches its
 * dedup slot; appended this far behind, the slot has arrived, and has not yet been pushed
 * out of the cache again, as it was when a whole batch of thousands was read first. */
#define INGEST_APPEND_BEHIND 16

/* A reply being packed. An ok reply is under 200 bytes and fits inline; only a long error
 * message goes to the heap (a msgpack_sbuffer would malloc 8 KiB for every reply). */
#define INGEST_REPLY_INLINE_BYTES 256

struct reply {
    char inline_bytes[INGEST_REPLY_INLINE_BYTES];
    char *data; /* inline_bytes or heap */
    size_t size;
    size_t capacity;
};

static void reply_init(struct reply *r)
{
    r->data = r->inline_bytes;
    r->size = 0;
    r->capacity = sizeof(r->inline_bytes);
}

static void reply_destroy(struct reply *r)
{
    if (r->data != r->inline_bytes) {
        free(r->data);
    }
    reply_init(r);
}

/* msgpack_packer's write callback. */
static int reply_write(void *data, const char *buf, size_t len)
{
    struct reply *r = data;
    if (r->size + len > r->capacity) {
        size_t capacity = (r->size + len) * 2;
        char *heap = xmalloc(capacity);
        memcpy(heap, r->data, r->size);
        if (r->data != r->inline_bytes) {
            free(r->data);
        }
        r->data = heap;
        r->capacity = capacity;
    }
    memcpy(r->data + r->size, buf, len);
    r->size += len;
    return 0;
}

/* One message of the batch on its way to disk: its envelope, its reply, and the event
 * to dispatch once the batch is durable. */
struct pending {
    zmq_msg_t envelope[2];
    size_t envelope_count;
    struct reply reply;
    event_t *event;    /* accepted, or a duplicate (then not dispatched) */
    uint64_t seq;      /* the seq in an ok reply; 0 for a refused message */
    uint64_t hash;     /* dedup_hash of the event's (source, id) */
    bool is_duplicate; /* of an event stored earlier, or earlier in this batch */
};

/* Messages read and appended together, then committed and answered together. */
struct batch {
    struct pending items[INGEST_BATCH_MAX];
    size_t count;
    size_t appended_count;  /* items through append_one (a prefix) */
    size_t appended_events; /* events of it appended to the store */
};

struct ingest {
    void *socket;
    chan_t *out;
    store_t *store;
    dedup_t *dedup;
    event_decoder_t *decoder; /* the ingest thread's */
    int64_t next_trim_ms;     /* monotonic */
    pthread_t thread;
    bool is_started;
    atomic_bool is_stopping;
    struct batch batches[2];
    struct batch *open;        /* being read and appended */
    struct batch *committing;  /* its commit finishing on the commit thread; NULL: none */
    uint64_t committed_events; /* totals, logged at stop: how well group commit works */
    uint64_t commits;

    /* The commit thread, for a store whose commit splits (store_commit_splits). */
    pthread_t committer;
    bool has_committer;
    pthread_mutex_t commit_lock;
    pthread_cond_t commit_wanted;
    bool is_commit_wanted;      /* under commit_lock: commit is to be finished */
    bool is_committer_stopping; /* under commit_lock */
    store_commit_t commit;      /* the commit being finished */
    int commit_done_fd;         /* eventfd: written when the commit is finished */
};

/* ---- deduplication ---- */

static bool remember_record(const journal_record_t *record, void *ctx)
{
    ingest_t *ingest = ctx;
    hstr_t source;
    hstr_t id;
    /* Every record was validated on its way in, so its origin is read without decoding
     * it whole (the start-up of a full store took 1.5 s per 840k events that way); one
     * that no longer reads (a newer format) simply cannot be a duplicate. */
    if (event_peek_origin(record->payload, record->len, &source, &id)) {
        dedup_add(ingest->dedup, dedup_hash(source.p, source.len, id.p, id.len), record->seq);
    }
    return true;
}

/* Fills the dedup table from the retained journal. */
static int rebuild_dedup(ingest_t *ingest, struct herr *err)
{
    int rc = store_event_read(ingest->store, 0, 0, remember_record, ingest, err);
    if (rc == 0) {
        log_msg(LOG_LEVEL_INFO, "ingest: %zu retained events known for deduplication",
                dedup_count(ingest->dedup));
    }
    return rc;
}

struct confirm_ctx {
    ingest_t *ingest;
    const event_t *event;
    bool is_same;
};

static bool same_origin(const event_t *a, const event_t *b)
{
    return hstr_eq(a->source, b->source) && hstr_eq(a->id, b->id);
}

static bool compare_record(const journal_record_t *record, void *opaque)
{
    struct confirm_ctx *ctx = opaque;
    event_t *earlier = NULL;
    if (event_decode_with(ctx->ingest->decoder, record->payload, record->len, &earlier, NULL) ==
        0) {
        ctx->is_same = same_origin(earlier, ctx->event);
        event_recycle(ctx->ingest->decoder, earlier);
    }
    return false; /* one record is all we need */
}

/* The appended (not duplicate) event of batch with this seq, or NULL. */
static const event_t *batch_event(const struct batch *batch, uint64_t seq)
{
    for (size_t i = 0; i < batch->appended_count; i++) {
        const struct pending *p = &batch->items[i];
        if (p->event != NULL && !p->is_duplicate && p->event->seq == seq) {
            return p->event;
        }
    }
    return NULL;
}

/* Is the event with this seq the same (source, id) as ctx->event? It is either in a
 * batch not yet durable (not yet readable from the journal) or in the journal. */
static bool confirm_duplicate(uint64_t seq, void *opaque)
{
    struct confirm_ctx *ctx = opaque;
    ingest_t *ingest = ctx->ingest;
    if (seq > store_event_last_seq(ingest->store)) {
        const event_t *pending = batch_event(ingest->open, seq);
        if (pending == NULL && ingest->committing != NULL) {
            pending = batch_event(ingest->committing, seq);
        }
        return pending != NULL && same_origin(pending, ctx->event);
    }
    ctx->is_same = false;
    if (store_event_read(ingest->store, seq, 1, compare_record, ctx, NULL) != 0) {
        return false;
    }
    return ctx->is_same;
}

ingest_t *ingest_new(void *zmq_context, const char *endpoint, const char *curve_secret_key,
                     store_t *store, chan_t *out, struct herr *err)
{
    void *socket = zmq_socket(zmq_context, ZMQ_ROUTER);
    if (socket == NULL) {
        herr_set(err, HEROLD_E_SYSTEM, "ingest: zmq_socket failed: %s", zmq_strerror(errno));
        return NULL;
    }
    int64_t max_frame = INGEST_MAX_FRAME_BYTES;
    int linger = 0;
    int handover = 1;  /* a reconnecting publisher with the same identity takes over */
    int mandatory = 1; /* a reply that cannot be queued is reported, not silently lost */
    int reply_hwm = INGEST_MAX_UNREAD_REPLIES;
    zmq_setsockopt(socket, ZMQ_MAXMSGSIZE, &max_frame, sizeof(max_frame));
    zmq_setsockopt(socket, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof(mandatory));
    zmq_setsockopt(socket, ZMQ_SNDHWM, &reply_hwm, sizeof(reply_hwm));
    zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(socket, ZMQ_ROUTER_HANDOVER, &handover, sizeof(handover));
    if (curve_secret_key != NULL) {
        /* A CURVE server: libzmq asks the ZAP handler (zap.h) about every publisher. */
        int is_server = 1;
        if (zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &is_server, sizeof(is_server)) != 0 ||
            zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, curve_secret_key,
                           strlen(curve_secret_key)) != 0 ||
            zmq_setsockopt(socket, ZMQ_ZAP_DOMAIN, "herold", 6) != 0) {
            herr_set(err, HEROLD_E_SYSTEM, "ingest: CURVE cannot be set up: %s",
                     zmq_strerror(errno));
            zmq_close(socket);
            return NULL;
        }
    }
    if (zmq_bind(socket, endpoint) != 0) {
        herr_set(err, HEROLD_E_SYSTEM, "ingest: zmq_bind(%s) failed: %s", endpoint,
                 zmq_strerror(errno));
        zmq_close(socket);
        return NULL;
    }
    ingest_t *ingest = xcalloc(1, sizeof(*ingest));
    ingest->socket = socket;
    ingest->out = out;
    ingest->store = store;
    ingest->dedup = dedup_new();
    if (rebuild_dedup(ingest, err) != 0) {
        dedup_free(ingest->dedup);
        zmq_close(socket);
        free(ingest);
        return NULL;
    }
    ingest->decoder = event_decoder_new();
    ingest->open = &ingest->batches[0];
    ingest->commit_done_fd = -1;
    if (store_commit_splits(store)) {
        ingest->commit_done_fd = eventfd(0, EFD_CLOEXEC);
        if (ingest->commit_done_fd < 0) {
            herr_set(err, HEROLD_E_SYSTEM, "ingest: eventfd failed: %s", strerror(errno));
            ingest_free(ingest);
            return NULL;
        }
        pthread_mutex_init(&ingest->commit_lock, NULL);
        pthread_cond_init(&ingest->commit_wanted, NULL);
    }
    atomic_init(&ingest->is_stopping, false);
    return ingest;
}

/* ---- replies ---- */

static void pack_str(msgpack_packer *pk, const char *p, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, p, len);
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
    pack_str(pk, s, strlen(s));
}

/* Sends the envelope frames verbatim, then the reply. The socket never blocks here: a
 * peer that has gone (EHOSTUNREACH) or that leaves INGEST_MAX_UNREAD_REPLIES replies unread
 * (EAGAIN) does not get this reply, which is logged; the event itself was handled. */
static void send_reply(ingest_t *ingest, struct pending *p)
{
    for (size_t i = 0; i < p->envelope_count; i++) {
        if (zmq_msg_send(&p->envelope[i], ingest->socket, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            /* Only the first frame can fail: ZeroMQ queues a message whole. */
            log_msg(LOG_LEVEL_WARN, "ingest: reply not sent: %s", zmq_strerror(errno));
            return;
        }
    }
    zmq_send(ingest->socket, p->reply.data, p->reply.size, ZMQ_DONTWAIT);
}

static void pack_ok(struct pending *p, hstr_t id, uint64_t seq)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, &p->reply, reply_write);
    msgpack_pack_map(&pk, 3);
    pack_cstr(&pk, "id");
    pack_str(&pk, id.p, id.len);
    pack_cstr(&pk, "ok");
    msgpack_pack_true(&pk);
    pack_cstr(&pk, "seq");
    msgpack_pack_uint64(&pk, seq);
}

/* An error reply naming id (nil when id.p is NULL: the id could not be read). */
static void pack_error_id(struct pending *p, hstr_t id, const struct herr *err)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, &p->reply, reply_write);
    msgpack_pack_map(&pk, 4);
    pack_cstr(&pk, "id");
    if (id.p != NULL) {
        pack_str(&pk, id.p, id.len);
    } else {
        msgpack_pack_nil(&pk);
    }
    pack_cstr(&pk, "ok");
    msgpack_pack_false(&pk);
    pack_cstr(&pk, "error");
    pack_cstr(&pk, herold_error_code(err->code));
    pack_cstr(&pk, "message");
    pack_cstr(&pk, err->message);
}

static void pack_error(struct pending *p, const void *payload, size_t payload_len,
                       const struct herr *err)
{
    hstr_t id = {NULL, 0};
    if (payload == NULL || !event_peek_id(payload, payload_len, &id)) {
        id.p = NULL;
    }
    pack_error_id(p, id, err);
}

/* A store that cannot write or sync must not ack anything more: the process ends here,
 * before the replies of the batch go out (STYLE 4: never retry an fsync and trust it). */
static void store_failed(const struct herr *err)
{
    log_msg(LOG_LEVEL_ERROR, "ingest: %s; stopping without acking", err->message);
    _exit(EXIT_FAILURE);
}

/* Decodes one message into the next pending slot; a refused one gets its error reply.
 * An accepted one waits for append_batch, its dedup slot being fetched meanwhile. */
static void handle_message(ingest_t *ingest, zmq_msg_t *frames, size_t frame_count,
                           bool is_truncated)
{
    struct herr err;
    struct pending *p = &ingest->open->items[ingest->open->count++];
    /* frames[0] is the identity ROUTER prepends; a REQ peer adds an empty delimiter. */
    p->envelope_count = 1;
    if (frame_count >= 3 && zmq_msg_size(&frames[1]) == 0) {
        p->envelope_count = 2;
    }
    for (size_t i = 0; i < p->envelope_count; i++) {
        zmq_msg_init(&p->envelope[i]);
        zmq_msg_move(&p->envelope[i], &frames[i]);
    }
    reply_init(&p->reply);
    p->event = NULL;
    p->seq = 0;
    p->is_duplicate = false;
    if (is_truncated || frame_count != p->envelope_count + 1) {
        herr_set(&err, HEROLD_E_BAD_ENVELOPE,
                 "message: expected one payload frame after the envelope, got %s",
                 is_truncated ? "more than 4 frames" : "a different count");
        pack_error(p, NULL, 0, &err);
        return;
    }

    zmq_msg_t *payload = &frames[p->envelope_count];
    const void *data = zmq_msg_data(payload);
    size_t len = zmq_msg_size(payload);
    event_t *event = NULL;
    if (event_decode_with(ingest->decoder, data, len, &event, &err) != 0) {
        log_msg(LOG_LEVEL_DEBUG, "ingest: refused a message: %s: %s", herold_error_code(err.code),
                err.message);
        pack_error(p, data, len, &err);
        return;
    }
    p->event = event;
    p->hash = dedup_hash(event->source.p, event->source.len, event->id.p, event->id.len);
    dedup_prefetch(ingest->dedup, p->hash);
}

/* An accepted event is acked as a duplicate of one stored earlier, or appended to the
 * journal (not yet durable) with its ack prepared. */
static void append_one(ingest_t *ingest, struct pending *p)
{
    struct herr err;
    event_t *event = p->event;
    struct confirm_ctx confirm = {.ingest = ingest, .event = event};
    uint64_t original = dedup_find(ingest->dedup, p->hash, store_event_first_seq(ingest->store),
                                   confirm_duplicate, &confirm);
    if (original != 0) {
        /* Acked with the original seq (once the batch is durable, in order) and not
         * delivered again. */
        pack_ok(p, event->id, original);
        p->seq = original;
        p->is_duplicate = true;
        return;
    }
    int rc = store_event_append(ingest->store, event->raw, event->raw_len, clock_wall_ms(),
                                &event->seq, &err);
    if (rc == HEROLD_E_UNAVAILABLE || rc == HEROLD_E_TOO_LARGE) {
        pack_error(p, event->raw, event->raw_len, &err);
        event_recycle(ingest->decoder, event);
        p->event = NULL;
        return;
    }
    if (rc != 0) {
        store_failed(&err);
    }
    dedup_add(ingest->dedup, p->hash, event->seq);
    ingest->open->appended_events++;
    pack_ok(p, event->id, event->seq);
    p->seq = event->seq;
}

/* Dedup and append, in arrival order, what the open batch read since the last call, up to
 * (not including) item end. */
static void append_until(ingest_t *ingest, size_t end)
{
    struct batch *batch = ingest->open;
    for (; batch->appended_count < end; batch->appended_count++) {
        struct pending *p = &batch->items[batch->appended_count];
        if (p->event != NULL) {
            append_one(ingest, p);
        }
    }
}

static void append_batch(ingest_t *ingest)
{
    append_until(ingest, ingest->open->count);
}

/* The store could not commit the batch: every ok reply naming a seq the store does not
 * hold becomes an error (the publisher sends the event again), and dedup forgets them. */
static void refuse_uncommitted(ingest_t *ingest, struct batch *batch, const struct herr *err)
{
    uint64_t last = store_event_last_seq(ingest->store);
    dedup_forget_after(ingest->dedup, last);
    for (size_t i = 0; i < batch->count; i++) {
        struct pending *p = &batch->items[i];
        if (p->event != NULL && p->seq > last) {
            reply_destroy(&p->reply);
            pack_error_id(p, p->event->id, err);
            event_recycle(ingest->decoder, p->event);
            p->event = NULL;
            p->seq = 0;
        }
    }
}

/* The batch is durable (or refused): acks in arrival order and hands the events to
 * dispatch, and the batch is empty again. */
static void answer_batch(ingest_t *ingest, struct batch *batch)
{
    /* One hand-over for the whole batch: one lock and at most one wake-up of dispatch
     * instead of one per event. */
    void *accepted[INGEST_BATCH_MAX];
    size_t accepted_count = 0;
    for (size_t i = 0; i < batch->count; i++) {
        struct pending *p = &batch->items[i];
        send_reply(ingest, p);
        for (size_t f = 0; f < p->envelope_count; f++) {
            zmq_msg_close(&p->envelope[f]);
        }
        reply_destroy(&p->reply);
        if (p->event != NULL && !p->is_duplicate) {
            accepted[accepted_count++] = p->event;
        } else {
            event_recycle(ingest->decoder, p->event);
        }
        p->event = NULL;
    }
    /* A closed channel means shutdown: the events are in the store for later. */
    if (accepted_count > 0) {
        for (size_t i = chan_push_many(ingest->out, accepted, accepted_count); i < accepted_count;
             i++) {
            event_recycle(ingest->decoder, accepted[i]);
        }
    }
    batch->count = 0;
    batch->appended_count = 0;
    batch->appended_events = 0;
}

/* Makes the open batch durable with one sync on this thread, then answers it. */
static void flush_batch(ingest_t *ingest)
{
    struct herr err;
    struct batch *batch = ingest->open;
    if (batch->appended_events > 0) {
        int rc = store_event_commit(ingest->store, &err);
        if (rc == HEROLD_E_UNAVAILABLE) {
            refuse_uncommitted(ingest, batch, &err);
        } else if (rc != 0) {
            store_failed(&err);
        } else {
            ingest->committed_events += batch->appended_events;
            ingest->commits++;
        }
    }
    answer_batch(ingest, batch);
}

/* ---- the commit thread ---- */

/* Finishes each commit the ingest thread starts, then tells it through commit_done_fd. A
 * store that cannot sync ends the process here, before any reply of the batch is sent. */
static void *committer_main(void *arg)
{
    ingest_t *ingest = arg;
    pthread_mutex_lock(&ingest->commit_lock);
    for (;;) {
        while (!ingest->is_commit_wanted && !ingest->is_committer_stopping) {
            pthread_cond_wait(&ingest->commit_wanted, &ingest->commit_lock);
        }
        if (!ingest->is_commit_wanted) {
            break;
        }
        ingest->is_commit_wanted = false;
        pthread_mutex_unlock(&ingest->commit_lock);
        struct herr err;
        if (store_event_commit_finish(ingest->store, &ingest->commit, &err) != 0) {
            store_failed(&err);
        }
        uint64_t one = 1;
        while (write(ingest->commit_done_fd, &one, sizeof(one)) < 0 && errno == EINTR) {
        }
        pthread_mutex_lock(&ingest->commit_lock);
    }
    pthread_mutex_unlock(&ingest->commit_lock);
    return NULL;
}

/* Starts the open batch's commit (it has INGEST_SPLIT_MIN_EVENTS appended or more) and
 * hands its finish to the commit thread; the other batch, empty, becomes the open one. */
static void start_commit(ingest_t *ingest)
{
    struct batch *batch = ingest->open;
    struct herr err;
    if (store_event_commit_start(ingest->store, &ingest->commit, &err) != 0) {
        store_failed(&err);
    }
    ingest->committing = batch;
    ingest->open = batch == &ingest->batches[0] ? &ingest->batches[1] : &ingest->batches[0];
    pthread_mutex_lock(&ingest->commit_lock);
    ingest->is_commit_wanted = true;
    pthread_cond_signal(&ingest->commit_wanted);
    pthread_mutex_unlock(&ingest->commit_lock);
}

/* The commit thread finished: the committing batch is durable and is answered. */
static void commit_finished(ingest_t *ingest)
{
    uint64_t count;
    while (read(ingest->commit_done_fd, &count, sizeof(count)) < 0 && errno == EINTR) {
    }
    struct batch *batch = ingest->committing;
    ingest->committing = NULL;
    ingest->committed_events += batch->appended_events;
    ingest->commits++;
    answer_batch(ingest, batch);
}

/* Blocks until the commit under way (if any) is finished and answered. */
static void wait_for_commit(ingest_t *ingest)
{
    if (ingest->committing != NULL) {
        struct pollfd done = {.fd = ingest->commit_done_fd, .events = POLLIN};
        while (poll(&done, 1, -1) < 0 && errno == EINTR) {
        }
        commit_finished(ingest);
    }
}

/* Reads one whole message (all its frames) if one is waiting. Returns false when none. */
static bool receive_one(ingest_t *ingest)
{
    zmq_msg_t frames[INGEST_MAX_FRAMES];
    size_t frame_count = 0;
    bool is_truncated = false;
    int more = 1;

    while (more) {
        zmq_msg_t spare;
        /* Frames past the bound are read (a message is atomic) and dropped. */
        zmq_msg_t *frame = frame_count < INGEST_MAX_FRAMES ? &frames[frame_count] : &spare;
        zmq_msg_init(frame);
        int flags = frame_count == 0 && !is_truncated ? ZMQ_DONTWAIT : 0;
        if (zmq_msg_recv(frame, ingest->socket, flags) < 0) {
            zmq_msg_close(frame);
            if (frame_count == 0) {
                return false;
            }
            /* Frames of one message arrive together; this is only an interrupt. */
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        more = zmq_msg_more(frame);
        if (frame == &spare) {
            is_truncated = true;
            zmq_msg_close(&spare);
        } else {
            frame_count++;
        }
    }
    handle_message(ingest, frames, frame_count, is_truncated);
    for (size_t i = 0; i < frame_count; i++) {
        zmq_msg_close(&frames[i]);
    }
    return true;
}

/* Takes back the events dispatch is done with: they were allocated here (chan.h), and
 * their blocks serve the next ones (event_recycle). */
static void free_given_back(ingest_t *ingest)
{
    void *done[INGEST_FREE_BATCH];
    size_t count;
    do {
        count = chan_take_back(ingest->out, done, INGEST_FREE_BATCH);
        for (size_t i = 0; i < count; i++) {
            event_recycle(ingest->decoder, done[i]);
        }
    } while (count == INGEST_FREE_BATCH);
}

/* Retention: old segments go, and with them what dedup remembers of them. */
static void trim_when_due(ingest_t *ingest)
{
    int64_t now = clock_monotonic_ms();
    if (now < ingest->next_trim_ms) {
        return;
    }
    ingest->next_trim_ms = now + INGEST_TRIM_INTERVAL_MS;
    if (store_event_trim(ingest->store, clock_wall_ms()) > 0) {
        dedup_expire(ingest->dedup, store_event_first_seq(ingest->store));
    }
}

static void *ingest_main(void *arg)
{
    ingest_t *ingest = arg;
    while (!atomic_load(&ingest->is_stopping)) {
        /* A full open batch waits for the commit under way, not for more messages. */
        zmq_pollitem_t items[2];
        int item_count = 0;
        if (ingest->open->count < INGEST_BATCH_MAX) {
            items[item_count++] = (zmq_pollitem_t){.socket = ingest->socket, .events = ZMQ_POLLIN};
        }
        if (ingest->committing != NULL) {
            items[item_count++] =
                (zmq_pollitem_t){.fd = ingest->commit_done_fd, .events = ZMQ_POLLIN};
        }
        int rc = zmq_poll(items, item_count, INGEST_POLL_MS);
        if (rc < 0) {
            if (errno == EINTR) {
                continue;
            }
            log_msg(LOG_LEVEL_ERROR, "ingest: zmq_poll failed: %s", zmq_strerror(errno));
            break;
        }
        if (ingest->committing != NULL && (items[item_count - 1].revents & ZMQ_POLLIN)) {
            commit_finished(ingest);
        }
        /* Before the batch is read: its events then reuse what was freed. */
        free_given_back(ingest);
        while (ingest->open->count < INGEST_BATCH_MAX && !atomic_load(&ingest->is_stopping)) {
            if (!receive_one(ingest)) {
                break;
            }
            if (ingest->open->count >= ingest->open->appended_count + 2 * INGEST_APPEND_BEHIND) {
                append_until(ingest, ingest->open->count - INGEST_APPEND_BEHIND);
            }
        }
        append_batch(ingest);
        if (!ingest->has_committer) {
            flush_batch(ingest);
        } else if (ingest->committing == NULL && ingest->open->count > 0) {
            /* A small batch is answered sooner without the hand-over to the commit thread
             * and back: the overlap pays off only when reading a batch takes a while. */
            if (ingest->open->appended_events < INGEST_SPLIT_MIN_EVENTS) {
                flush_batch(ingest);
            } else {
                start_commit(ingest);
            }
        }
        trim_when_due(ingest);
    }
    /* What was read is answered before the thread ends, as every turn used to. */
    wait_for_commit(ingest);
    if (ingest->open->count > 0) {
        flush_batch(ingest);
    }
    return NULL;
}

/* Ends the commit thread, which is idle: the ingest thread waited for the last commit. */
static void stop_committer(ingest_t *ingest)
{
    if (!ingest->has_committer) {
        return;
    }
    pthread_mutex_lock(&ingest->commit_lock);
    ingest->is_committer_stopping = true;
    pthread_cond_signal(&ingest->commit_wanted);
    pthread_mutex_unlock(&ingest->commit_lock);
    pthread_join(ingest->committer, NULL);
    ingest->has_committer = false;
}

int ingest_start(ingest_t *ingest, struct herr *err)
{
    sigset_t all;
    sigset_t old;
    /* Signals belong to the main thread, which must see them to stop. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = 0;
    if (ingest->commit_done_fd >= 0) {
        rc = pthread_create(&ingest->committer, NULL, committer_main, ingest);
        ingest->has_committer = rc == 0;
        if (rc == 0) {
            thread_name(ingest->committer, "ingest-commit");
        }
    }
    if (rc == 0) {
        rc = pthread_create(&ingest->thread, NULL, ingest_main, ingest);
        if (rc == 0) {
            thread_name(ingest->thread, "ingest");
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        stop_committer(ingest);
        return herr_set(err, HEROLD_E_SYSTEM, "ingest: pthread_create failed: %s", strerror(rc));
    }
    ingest->is_started = true;
    return 0;
}

void ingest_stop(ingest_t *ingest)
{
    if (ingest->is_started) {
        atomic_store(&ingest->is_stopping, true);
        chan_close(ingest->out);
        pthread_join(ingest->thread, NULL);
        stop_committer(ingest);
        ingest->is_started = false;
        log_msg(LOG_LEVEL_INFO,
                "ingest: %" PRIu64 " events committed in %" PRIu64 " commits (%.1f per commit)",
                ingest->committed_events, ingest->commits,
                ingest->commits > 0 ? (double)ingest->committed_events / (double)ingest->commits
                                    : 0.0);
    }
    if (ingest->socket != NULL) {
        zmq_close(ingest->socket);
        ingest->socket = NULL;
    }
}

void ingest_free(ingest_t *ingest)
{
    if (ingest == NULL) {
        return;
    }
    ingest_stop(ingest);
    if (ingest->commit_done_fd >= 0) {
        close(ingest->commit_done_fd);
        pthread_mutex_destroy(&ingest->commit_lock);
        pthread_cond_destroy(&ingest->commit_wanted);
    }
    dedup_free(ingest->dedup);
    event_decoder_free(ingest->decoder);
    free(ingest);
}
