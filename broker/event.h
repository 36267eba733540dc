#ifndef HEROLD_EVENT_H
#define HEROLD_EVENT_H

/*
 * The change event: decoding, validation and encoding of the msgpack map that publishers
 * send (DESIGN 3.1, schemas/event.md). This is the only code that knows the wire format.
 *
 * event_decode validates fully before it returns anything: a rejected message yields an
 * error code and a message naming the field and the rule, and allocates nothing that
 * outlives the call. An accepted event owns one copy of the message bytes; every string
 * in it is a view into that copy, so the event can cross threads as one object.
 *
 * Rules enforced (each violation has its own code, see errors.h):
 *   - the message is at most EVENT_MAX_MESSAGE_BYTES and one msgpack map with string keys,
 *     with nothing after it; a key may appear once; unknown keys are refused;
 *   - id, source: non-empty str ≤ 128 bytes; resource, previous: valid paths (path.h);
 *   - type: "created", "updated" or "deleted";
 *   - time: an integer, milliseconds since the epoch, 0 < time ≤ EVENT_MAX_TIME_MS;
 *   - actor, kind, tenant: str ≤ 128 bytes; kind is non-empty [A-Za-z0-9_.-];
 *   - readers: array of 0..EVENT_MAX_READERS principals: `*`, `user:<id>` or `group:<id>`
 *     where <id> is 1..128 bytes of UTF-8 with no control characters (C0, DEL, C1) or
 *     spaces;
 *   - data: a map of at most EVENT_MAX_DATA_BYTES encoded bytes (as sent) and at most
 *     EVENT_MAX_DATA_DEPTH levels of nested maps and arrays (data itself is level 1); it
 *     becomes JSON in rich notifications, so it must have a JSON form: str keys, no bin or
 *     ext, no NaN or infinity;
 *   - every str is valid UTF-8; msgpack bin is not accepted where a string is expected.
 * A missing optional field is absent; nil is not accepted in its place.
 *
 * Any thread may call these functions; an event is owned by one thread at a time.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "mem.h"
#include "path.h"

#define EVENT_MAX_MESSAGE_BYTES (64 * 1024)
#define EVENT_MAX_ID_BYTES 128
#define EVENT_MAX_SOURCE_BYTES 128
#define EVENT_MAX_SHORT_BYTES 128 /* actor, kind, tenant */
#define EVENT_MAX_READERS 1024
#define EVENT_MAX_PRINCIPAL_ID_BYTES 128
#define EVENT_MAX_DATA_BYTES (4 * 1024)
/* Nesting of maps and arrays inside data, counting the data map itself as level 1. A
 * deeper data value is refused with field_too_long; any container nested deeper than 24
 * levels anywhere makes the whole message malformed. */
#define EVENT_MAX_DATA_DEPTH 16
/* 9999-12-31T23:59:59.999Z: larger values are refused as implausible. */
#define EVENT_MAX_TIME_MS 253402300799999LL

/* Change types, as bits so that subscriptions can hold a mask of them. */
typedef enum event_change {
    EVENT_CREATED = 1u << 0,
    EVENT_UPDATED = 1u << 1,
    EVENT_DELETED = 1u << 2,
} event_change_t;

#define EVENT_CHANGE_ALL (EVENT_CREATED | EVENT_UPDATED | EVENT_DELETED)

typedef struct event {
    uint64_t seq; /* assigned by ingest on acceptance; 0 before */
    hstr_t id;
    hstr_t source;
    event_change_t type;
    hstr_t resource;
    path_t resource_path; /* parsed form of resource */
    bool has_previous;
    hstr_t previous;
    path_t previous_path;
    int64_t time_ms;
    hstr_t actor;  /* len 0 when absent */
    hstr_t kind;   /* len 0 when absent */
    hstr_t tenant; /* len 0 when absent */
    size_t reader_count;
    hstr_t *readers; /* reader_count entries, each `*`, `user:…` or `group:…` */
    hstr_t data;     /* the raw msgpack bytes of the data map; len 0 when absent */
    /* private: the owned copy of the message that every view above points into */
    char *raw;
    size_t raw_len;
    bool is_pooled;         /* an EVENT_POOL_BLOCK_BYTES block a decoder may take back */
    bool is_readers_inline; /* readers sit in the block, after raw */
} event_t;

/* Decodes and validates one message. On success returns 0 and sets *out to a new event
 * that the caller owns (release with event_free). On failure returns a negative
 * HEROLD_E_* code, fills *err and leaves *out NULL. */
int event_decode(const void *message, size_t len, event_t **out, struct herr *err);

/* Scratch for decoding many events on one thread: the unpacking zone, kept between events
 * (a fresh one mallocs and frees a chunk per event), and the blocks of events it took back
 * (event_recycle).
 *
 * Blocks. An event whose struct, message and readers fit EVENT_POOL_BLOCK_BYTES lives in one
 * block of that size, which the decoder's thread hands out again once the event comes back
 * (up to EVENT_POOL_MAX_BLOCKS kept). In W1, malloc and free of those blocks were 15 % of
 * the ingest thread's samples, a third of it the arena growing again (sysmalloc and its
 * page faults) after batches of frees had shrunk it. Blocks go out in the order they came
 * back, which keeps consecutive events at addresses in the order malloc first laid them
 * out: handed out last-in-first-out, they cost the service thread more than they saved
 * ingest (bench/RESULTS.md). */
#define EVENT_POOL_BLOCK_BYTES 2048
#define EVENT_POOL_MAX_BLOCKS 4096
typedef struct event_decoder event_decoder_t;
event_decoder_t *event_decoder_new(void);
void event_decoder_free(event_decoder_t *decoder); /* NULL is a no-op */

/* event_decode through decoder's scratch. */
int event_decode_with(event_decoder_t *decoder, const void *message, size_t len, event_t **out,
                      struct herr *err);

/* Releases an event. event_free(NULL) is a no-op. */
void event_free(event_t *event);

/* Releases an event on decoder's thread, keeping its block for the next decode when it has
 * one and the decoder room. NULL is a no-op. */
void event_recycle(event_decoder_t *decoder, event_t *event);

/* For the reply to a refused message: finds the first top-level "id" key of message and
 * returns true with *id set when its value is a str of 1..EVENT_MAX_ID_BYTES bytes of valid
 * UTF-8 and every entry before it is sound msgpack. *id is a view into message (borrowed).
 * Returns false otherwise (the reply then carries nil). Allocates nothing and reads any
 * length, so it is safe on messages event_decode refused for their size. */
bool event_peek_id(const void *message, size_t len, hstr_t *id);

/* For rebuilding deduplication from stored events: finds the top-level "source" and "id"
 * of message, each a str of 1..their limit bytes of valid UTF-8, and returns true with
 * views into message. Only walks the map (no allocation, no validation of the other
 * fields: stored events were validated on the way in), so it is several times cheaper
 * than event_decode. False when either is missing, repeated or not such a str. */
bool event_peek_origin(const void *message, size_t len, hstr_t *source, hstr_t *id);

/* The wire name of a single change type ("created", …), or NULL for anything else. */
const char *event_change_name(event_change_t type);

/* Parses one change type name; returns the bit or 0 when the name is not one. */
event_change_t event_change_parse(const char *p, size_t len);

/* Parses a comma-separated list such as "created,updated" (Graph's changeType) into a
 * mask. Returns 0 with *mask set, or HEROLD_E_BAD_CHANGE_TYPE for an empty list, an
 * unknown or repeated name. */
int event_change_mask_parse(const char *p, size_t len, unsigned *mask, struct herr *err);

/* The data map as a new jansson object the caller owns (json_decref), or NULL when the
 * event has none. Used for rich notifications (includeResourceData). */
struct json_t;
struct json_t *event_data_json(const event_t *event);

/* The same for data bytes kept apart from their event (a copy of event->data). */
struct json_t *event_data_map_json(const void *data, size_t len);

/* Writes mask as Graph's comma list in the order created,updated,deleted into out (at
 * least 24 bytes); returns the length. */
size_t event_change_mask_format(unsigned mask, char *out, size_t cap);

/* Validates one reader principal: `*`, `user:<id>` or `group:<id>`. Returns 0 or
 * HEROLD_E_BAD_PRINCIPAL with err set; `what` names the field in the message. */
int event_principal_validate(const char *p, size_t len, const char *what, struct herr *err);

#endif
