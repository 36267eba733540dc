#ifndef HEROLD_INGEST_H
#define HEROLD_INGEST_H

/*
 * Ingest: the ZeroMQ ROUTER socket where stores publish change events (schemas/event.md).
 *
 * One thread owns the socket. It reads the messages waiting (up to INGEST_BATCH_MAX),
 * keeping each envelope verbatim (the peer identity, and the empty delimiter a REQ peer
 * adds); decodes and validates each payload (event.h); appends every accepted event to the
 * store, which assigns its sequence number (16 events behind the decoding, so that the
 * dedup slot each decode fetched has arrived and is still cached when dedup reads it);
 * then makes the whole batch durable with one commit (group commit), and only then sends
 * the replies, in arrival order — {"id","ok":true,"seq"} or
 * {"id","ok":false,"error","message"} for a refused message, which changes nothing — and
 * hands the events to the dispatch channel. Publishers may pipeline: the more they have in
 * flight, the more one commit covers.
 *
 * With the embedded store the commit runs in two halves (store_commit_splits): this thread
 * starts it, a commit thread of ingest's own does the fdatasync, and meanwhile this thread
 * reads, decodes and appends the next batch, which is committed as soon as the last one is
 * answered. A batch's time to its acks is then the longer of the sync and the reading of
 * a batch instead of both: in W1 (1,000 events in flight) 5% more events a second on
 * average on this machine's disk, 18-21% more with syncs 2 ms slower. A batch of fewer
 * than 64 events (INGEST_SPLIT_MIN_EVENTS) still commits on this thread: the hand-over
 * and the wake-up back cost it more than the overlap gains (at 20,000 events/s, batches
 * of about 10, the split took the median latency from 1.57-1.77 ms to 1.84-2.49). A copy
 * of an event may arrive while its original is being synced; dedup then finds the
 * original in that batch (confirm_duplicate). The other stores commit on this thread.
 *
 * A failed write or fsync of the embedded store ends the process before any reply of its
 * batch is sent. A PostgreSQL store that went away refuses the batch instead: every event
 * of it is answered `unavailable` (and forgotten by dedup), and so is every event while
 * the store reconnects; the publisher sends them again. When the dispatch channel is full,
 * chan_push waits, the socket is not read, and publishers feel the backpressure as slower
 * acks. Dispatch gives the events back through the channel when it is done with them, and
 * this thread frees them before it reads the next batch, so that memory is freed by the
 * thread that allocated it (chan.h).
 *
 * Frames larger than INGEST_MAX_FRAME_BYTES make libzmq drop the peer's connection (the
 * only protection against a peer streaming gigabytes into one frame); payloads between
 * EVENT_MAX_MESSAGE_BYTES and that bound are answered with too_large.
 */

#include "chan.h"
#include "errors.h"
#include "store.h"

#define INGEST_MAX_FRAME_BYTES (1024 * 1024)
#define INGEST_MAX_FRAMES 4   /* identity, delimiter, payload, and one spare */
#define INGEST_BATCH_MAX 4096 /* messages handled per poll wake-up: one commit each */
/* Replies queued for one publisher that has not read them; past this its replies are
 * dropped (and logged). Publishers must read their replies. */
#define INGEST_MAX_UNREAD_REPLIES 100000
#define INGEST_TRIM_INTERVAL_MS 60000 /* how often retention runs */

typedef struct ingest ingest_t;

/* Binds a ROUTER socket on endpoint in zmq_context (borrowed); with curve_secret_key (Z85)
 * it is a CurveZMQ server whose publishers a ZAP handler (zap.h) must admit. Accepted events are
 * appended to store (borrowed; the ingest thread becomes its only event writer) and then go to
 * out (borrowed). Returns NULL with err set when the endpoint cannot be bound. Call from
 * the thread that will later call ingest_start; the socket moves to the ingest thread. */
ingest_t *ingest_new(void *zmq_context, const char *endpoint, const char *curve_secret_key,
                     store_t *store, chan_t *out, struct herr *err);

/* Starts the ingest thread. Returns 0 or HEROLD_E_SYSTEM. */
int ingest_start(ingest_t *ingest, struct herr *err);

/* Stops the thread (it finishes the message in hand) and closes the socket. */
void ingest_stop(ingest_t *ingest);

/* Frees the ingest (stopping it first if needed). NULL is a no-op. */
void ingest_free(ingest_t *ingest);

#endif
