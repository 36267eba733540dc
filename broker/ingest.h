#ifndef HEROLD_INGEST_H
#define HEROLD_INGEST_H

/*
 * Ingest: the ZeroMQ ROUTER socket where stores publish change events (schemas/event.md).
 *
 * One thread owns the socket. For each message it keeps the envelope frames verbatim
 * (the peer identity, and the empty delimiter a REQ peer adds), decodes and validates the
 * payload (event.h), assigns the next sequence number, hands the event to the dispatch
 * channel, and replies with {"id","ok":true,"seq"}; a refused message is answered with
 * {"id","ok":false,"error","message"} and changes nothing. Replies go out in the order the
 * messages arrived, so publishers may pipeline.
 *
 * Until the durable journal exists, an ack means "accepted in memory": the channel holds
 * the event and the sequence restarts at 1 with the process. When the channel is full,
 * chan_push waits, the socket is not read, and publishers feel the backpressure as slower
 * acks.
 *
 * Frames larger than INGEST_MAX_FRAME_BYTES make libzmq drop the peer's connection (the
 * only protection against a peer streaming gigabytes into one frame); payloads between
 * EVENT_MAX_MESSAGE_BYTES and that bound are answered with too_large.
 */

#include "chan.h"
#include "errors.h"

#define INGEST_MAX_FRAME_BYTES (1024 * 1024)
#define INGEST_MAX_FRAMES 4  /* identity, delimiter, payload, and one spare */
#define INGEST_BATCH_MAX 256 /* messages handled per poll wake-up */
/* Replies queued for one publisher that has not read them; past this its replies are
 * dropped (and logged). Publishers must read their replies. */
#define INGEST_MAX_UNREAD_REPLIES 100000

typedef struct ingest ingest_t;

/* Binds a ROUTER socket on endpoint in zmq_context (borrowed). Accepted events go to out
 * (borrowed). Returns NULL with err set when the endpoint cannot be bound. Call from the
 * thread that will later call ingest_start; the socket moves to the ingest thread. */
ingest_t *ingest_new(void *zmq_context, const char *endpoint, chan_t *out, struct herr *err);

/* Starts the ingest thread. Returns 0 or HEROLD_E_SYSTEM. */
int ingest_start(ingest_t *ingest, struct herr *err);

/* Stops the thread (it finishes the message in hand) and closes the socket. */
void ingest_stop(ingest_t *ingest);

/* Frees the ingest (stopping it first if needed). NULL is a no-op. */
void ingest_free(ingest_t *ingest);

#endif
