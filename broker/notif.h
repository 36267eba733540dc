#ifndef HEROLD_NOTIF_H
#define HEROLD_NOTIF_H

/*
 * A notification payload: the part of a Graph notification item that depends only on the
 * event, encoded once as JSON members and shared by refcount by every recipient.
 *
 * An item for subscription S is `{"id":"<S>-<seq>","subscriptionId":…,
 * "subscriptionExpirationDateTime":…,` then `"clientState":…,` when S has one, followed by
 * the shared members and `}`; notif_item_write composes it without re-encoding the event.
 * The item id is stable: the same event delivered to the same subscription again (a
 * retry, a replay) carries the same id. The shared members are: changeType, resource, resourceData
 * (`@odata.type` = `#herold.<kind>` or `#herold.resource`, `@odata.id` = resource, `id` =
 * the last path segment), then tenantId, previousResource, actor when the event has them,
 * and eventTime (the event's time, ISO 8601 UTC with milliseconds). Subscriptions with
 * includeResourceData get a second encoding whose resourceData also carries the members of
 * the event's data map (never overriding @odata.type, @odata.id or id).
 *
 * Refcounts are atomic: a notif is shared by WebSocket queues on the service thread and
 * webhook batches on the delivery thread. The payload itself is immutable; the rich form is
 * built on first use by whichever thread needs it and published atomically, so events
 * nobody asked resource data for never pay for it.
 *
 * References held on the service thread are counted apart, in a plain field (see
 * notif_ref_local): the WebSocket queues take and drop one per delivery there, and as atomic
 * operations those were 3 to 4 % of the broker's samples in W1 (perf). Together the local
 * references hold one atomic reference: the first takes it, the last drops it.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

struct notif_rich {
    size_t len;
    char text[]; /* NUL-terminated */
};

typedef struct notif {
    atomic_int refcount;
    uint32_t local_refs; /* notif_ref_local's, on one thread; together one of refcount */
    bool is_pooled;      /* a NOTIF_POOL_BLOCK_BYTES block (see notif_pool_begin) */
    uint64_t seq;
    /* the members with the event's data merged into resourceData (includeResourceData);
       NULL until first needed, and always when the event has no data */
    struct notif_rich *_Atomic rich;
    size_t members_len;
    size_t resource_data_end; /* offset of resourceData's closing brace in members */
    size_t data_len;          /* the event's data map (msgpack) stored after members */
    char seq_text[24];        /* seq in decimal, for item ids */
    size_t seq_len;
    char members[]; /* JSON members without the braces, NUL-terminated; then data_len bytes */
} notif_t;

/* Notifications are made and mostly released on the service thread, one per matched
 * event; glibc's malloc sorting their freed ~500-byte blocks through its bins was a tenth
 * of that thread under load (perf, W1). Between notif_pool_begin and notif_pool_end the
 * calling thread keeps up to NOTIF_POOL_MAX released blocks of NOTIF_POOL_BLOCK_BYTES for
 * reuse; a notification released on another thread, or larger than a block, goes through
 * malloc and free as before. */
#define NOTIF_POOL_BLOCK_BYTES 1024
#define NOTIF_POOL_MAX 4096
void notif_pool_begin(void);
/* Frees the blocks kept and stops keeping them on this thread. */
void notif_pool_end(void);

/* Encodes the shared part of event's notification items. Returns a notif with refcount 1
 * that the caller owns (release with notif_release). */
notif_t *notif_new(const event_t *event);

/* Adds a reference; returns notif. */
notif_t *notif_ref(notif_t *notif);

/* Drops a reference, freeing on the last. NULL is a no-op. */
void notif_release(notif_t *notif);

/* A reference counted without atomics, for the references one thread takes and drops many
 * of (the service thread: its WebSocket queues). Every local reference to a notif must be
 * taken and dropped on the same thread, and dropped with notif_release_local; the notif
 * lives at least as long as one of them, or another reference, is held. */
notif_t *notif_ref_local(notif_t *notif);
void notif_release_local(notif_t *notif);

/* notif_new whose caller holds a local reference (dispatch, on the service thread). */
notif_t *notif_new_local(const event_t *event);

/* The per-subscription part of an item. Every string is herold-generated or already
 * JSON-encoded, so none needs escaping here. */
typedef struct notif_item_head {
    const char *subscription_id;
    const char *expiration;        /* Graph format, see notif_format_graph_time */
    const char *client_state_json; /* a JSON string literal with its quotes, or NULL */
    bool include_resource_data;    /* merge the event's data into resourceData */
} notif_item_head_t;

/* The byte length of the item notif_item_write produces for head. */
size_t notif_item_length(const notif_t *notif, const notif_item_head_t *head);

/* Writes the item for one subscription into out, which has room for at least
 * notif_item_length() bytes; returns the bytes written (no NUL). */
size_t notif_item_write(const notif_t *notif, const notif_item_head_t *head, char *out);

/* Parses a cursor as herold writes it in notify frames, lifecycle frames and pull pages:
 * the decimal seq, 1 to 20 digits, no sign or space, at most UINT64_MAX. */
bool notif_cursor_parse(const char *text, size_t len, uint64_t *seq);

/* Formats ms since the epoch as ISO 8601 UTC with milliseconds ("2026-11-27T10:00:00.000Z")
 * into out (at least 25 bytes). */
void notif_format_time_ms(int64_t ms, char *out, size_t cap);

/* Formats seconds since the epoch the way Graph emits expirationDateTime: seven fractional
 * digits and Z ("2026-11-27T10:00:00.0000000Z") into out (at least 29 bytes). */
void notif_format_graph_time(int64_t seconds, char *out, size_t cap);

#endif
