#ifndef HEROLD_SUBS_H
#define HEROLD_SUBS_H

/*
 * Subscriptions: their records and the index that finds them.
 *
 * subs owns every subscription record and the matching index, and is the only code that
 * updates the index. There are three kinds:
 *   - connection: created by a WebSocket `subscribe` op, lives as long as the connection;
 *     its owner principal is borrowed from the session, `channel` is the session;
 *   - websocket: created through REST with notificationUrl `websocket:`, persistent,
 *     delivered to every live session of its owner;
 *   - webhook: created through REST with an http(s) notificationUrl, persistent.
 * Persistent subscriptions own a copy of their owner's principal (the groups as of
 * creation, the latest PATCH or reauthorize), are kept in creation order for listing, and
 * are found by id through a hash table.
 *
 * subs_match_event finds every subscription an event concerns: those matching the
 * resource and, for a move, the previous path, each reported once, filtered by change type
 * and by the reader check against the owner's principal. The reader check runs per event
 * and is never cached.
 *
 * Matching lives in patterns.h: one record per distinct pattern text, literal patterns
 * found by hashing the resource's prefixes, owners reduced to shared sets of interned
 * principal ids (principals.h), large patterns filing their members by principal.
 *
 * Records are small because a million of them must fit in 128 bytes each with their
 * index: the id is kept as 16 bytes and formatted when asked (SUBS_ID_TEXT); the pattern
 * text is the pattern record's; a connection subscription's expiry is its owner's token's.
 * Records come from blocks of SUBS_PER_BLOCK, without malloc's per-block header; freed
 * records are reused, and poisoned for AddressSanitizer while free.
 *
 * Owned by one thread: the libwebsockets service thread.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "errors.h"
#include "event.h"
#include "path.h"

#define SUBS_ID_BYTES 36         /* a UUID in its text form */
#define SUBS_ID_RAW_BYTES 16     /* the UUID's bytes */
#define SUBS_EXPIRATION_BYTES 28 /* "2026-11-27T10:00:00.0000000Z" */

typedef struct subs subs_t;

typedef enum sub_kind {
    SUB_CONNECTION,
    SUB_WEBSOCKET,
    SUB_WEBHOOK,
} sub_kind_t;

/* Links of a list of persistent subscriptions. */
typedef struct sub_link {
    struct sub *prev;
    struct sub *next;
} sub_link_t;

/* What REST stores about a persistent subscription, beyond the matching fields. Strings
 * are owned by the record. */

typedef struct sub_rest {
    char *resource_given;         /* resource as the client wrote it */
    char *notification_url;       /* "websocket:" or the webhook URL */
    char *lifecycle_url;          /* NULL when none */
    char *client_state;           /* NULL when none */
    char *client_state_json;      /* client_state as a JSON string literal, or NULL */
    char *application_id;         /* the creating token's azp, or NULL */
    char *encryption_certificate; /* NULL when none */
    char *encryption_certificate_id;
    bool include_resource_data;
    int64_t expires_at;           /* seconds since the epoch */
    unsigned char secret[32];     /* webhook signing key */
    uint64_t created_order;       /* position in creation order, for paging */
    bool is_reauthorization_sent; /* for the current expiration */
    sub_link_t all;               /* every persistent subscription, in creation order when read */
    size_t expiry_slot;           /* its place in subs' heap by expiration */
    struct owned *owned;          /* its owner's persistent subscriptions */
    sub_link_t mine;              /* among them, in creation order when read */
    /* Webhook delivery position (dispatch.c): the store's cursor for this subscription. */
    uint64_t cursor;      /* every item up to this seq was delivered */
    bool is_cursor_dirty; /* moved since it was last stored (subs_cursor_moved) */
    sub_link_t moved;     /* the list of those, while is_cursor_dirty */
    bool is_replaying;    /* catching up from the store: live items are not sent */
    bool is_deleting;     /* its delete is on the way to the store (rest.c): no cursor */
    uint64_t replay_upto; /* live items up to this seq were sent from the store */
} sub_rest_t;

typedef struct sub {
    uint8_t id[SUBS_ID_RAW_BYTES]; /* a UUID; SUBS_ID_TEXT for its text form */
    uint8_t kind;                  /* sub_kind_t */
    uint8_t change_mask;           /* EVENT_* bits */
    uint32_t pattern_slot;         /* position among the pattern's members */
    union {
        sub_rest_t *rest; /* persistent kinds (SUB_WEBSOCKET, SUB_WEBHOOK) */
        void *channel;    /* SUB_CONNECTION: where notifications go; borrowed */
    };
    struct pattern *pattern;           /* patterns.h: the pattern and its other members */
    const struct owner_set *owner_set; /* owner's principals as ids, shared */
    const auth_principal_t *owner;     /* borrowed (connection) or owned (persistent) */
} sub_t;

/* Called once per subscription an event concerns; returning false stops the match. */
typedef bool (*subs_match_fn)(sub_t *sub, void *ctx);

subs_t *subs_new(void);

/* Frees every remaining subscription and the index. NULL is a no-op. */
void subs_free(subs_t *subs);

/* Creates a connection subscription to the pattern resource[0..len) for the changes in
 * mask; it expires with its owner's token (owner->expires_at). The pattern must already be
 * in its final form (`me/` expanded). On success returns 0 and sets *out to the record,
 * which subs owns (until subs_remove). Returns HEROLD_E_BAD_PATH or
 * HEROLD_E_BAD_CHANGE_TYPE (mask 0) with err set, changing nothing. */
int subs_add(subs_t *subs, const char *resource, size_t len, unsigned change_mask,
             const auth_principal_t *owner, void *channel, sub_t **out, struct herr *err);

/* Creates a persistent subscription (kind SUB_WEBSOCKET or SUB_WEBHOOK) like subs_add;
 * takes ownership of *owner (sets it NULL) and of the strings in *rest (which it clears).
 * Assigns rest->created_order. Returns 0, or the errors of subs_add with nothing taken. */
int subs_add_persistent(subs_t *subs, sub_kind_t kind, const char *resource, size_t len,
                        unsigned change_mask, auth_principal_t **owner, sub_rest_t *rest,
                        int64_t expires_at, sub_t **out, struct herr *err);

/* Removes and frees a subscription returned by subs_add or subs_add_persistent. */
void subs_remove(subs_t *subs, sub_t *sub);

/* The persistent subscription with this id (its text form), or NULL. */
sub_t *subs_find(subs_t *subs, const char *id);

/* Writes sub's id in its text form into out (SUBS_ID_BYTES + 1 bytes); returns out. */
char *subs_id_format(const sub_t *sub, char *out);

/* sub's id as text, in a buffer that lives until the end of the enclosing block. */
#define SUBS_ID_TEXT(sub) subs_id_format((sub), (char[SUBS_ID_BYTES + 1]){0})

/* Does sub have this id (text form)? */
bool subs_id_is(const sub_t *sub, const char *id);

/* The subscription's pattern text (its final form, `me/` expanded). */
const char *subs_resource(const sub_t *sub);

/* When the subscription expires, in seconds since the epoch: its own expiration for a
 * persistent one, its owner's token's for a connection one. */
int64_t subs_expires_at(const sub_t *sub);

/* The oldest persistent subscription, and the next one in creation order (NULL at end). */
sub_t *subs_first_persistent(subs_t *subs);
sub_t *subs_next_persistent(const sub_t *sub);

/* The number of persistent subscriptions owned by user, and the first of them and the
 * next in creation order (NULL at the end): subs keeps them by user, so these cost what
 * the user holds, not what everyone does. */
size_t subs_count_owned(subs_t *subs, const char *user);
sub_t *subs_first_owned(subs_t *subs, const char *user);
sub_t *subs_next_owned(const sub_t *sub);

/* The persistent subscription as a JSON document for the store (store.h), secret
 * included. Caller frees the result. */
char *subs_to_json(const sub_t *sub);

/* The document of a persistent subscription that is not in the index (yet, or not in this
 * form yet): a REST change is stored before it is applied. rest supplies expires_at,
 * created_order and the strings; resource is the pattern's final form. Caller frees. */
char *subs_document(sub_kind_t kind, const char *resource, unsigned change_mask,
                    const auth_principal_t *owner, const sub_rest_t *rest);

/* Hands out the next creation order, for a subscription stored before it is restored into
 * the index (subs_restore keeps it). */
uint64_t subs_take_created_order(subs_t *subs);

/* Recreates a persistent subscription from a document subs_to_json wrote, keeping its id
 * and creation order. Documents may come in any order: the lists are in creation order
 * when next read (one sort then, not a walk per restore). Returns 0 with *out set, or
 * HEROLD_E_CONFIG for a damaged document and the errors of subs_add. */
int subs_restore(subs_t *subs, const char *id, const char *json, sub_t **out, struct herr *err);

/* Releases the strings of rest and zeroes it. */
void subs_rest_clear(sub_rest_t *rest);

/* The pattern a subscription's resource stands for: `me`, `me/…` (with or without a
 * leading /) means /users/<user>/…; with add_leading_slash a resource without its leading
 * / gets one (Graph writes "users/x/events"). Caller frees the result. */
char *subs_expand_resource(const char *resource, const char *user, bool add_leading_slash);

/* Sets a persistent subscription's new expiration and re-arms the reauthorization
 * notice. */
void subs_set_expiration(subs_t *subs, sub_t *sub, int64_t expires_at);

/* The persistent subscriptions that expire at or before bound, in creation order, in a
 * new array (caller frees) of *count. Subs keeps them in a heap by expiration, so this
 * costs what it finds, not what is held: the once-a-second sweep asks for those whose
 * expiration or reauthorization notice is due. */
sub_t **subs_expiring_by(subs_t *subs, int64_t bound, size_t *count);

/* Notes that a persistent subscription's cursor moved since it was last stored. */
void subs_cursor_moved(subs_t *subs, sub_t *sub);

/* The persistent subscriptions whose cursor moved, in a new array (caller frees) of
 * *count; their marks are cleared. */
sub_t **subs_take_moved_cursors(subs_t *subs, size_t *count);

/* Writes the expiration in Graph's format ("2026-11-27T10:00:00.0000000Z") into out
 * (SUBS_EXPIRATION_BYTES + 1 bytes). Formatted when asked rather than kept in every
 * record: the text cost 29 bytes per subscription, and the formatting is cached per
 * thread for the last second asked (notif_format_graph_time), so a session's
 * subscriptions, which share their token's expiry, pay for it once. */
void subs_format_expiration(const sub_t *sub, char *out);

/* Replaces a persistent subscription's owner principal (takes ownership of *owner). */
void subs_set_owner(subs_t *subs, sub_t *sub, auth_principal_t **owner);

/* Points a connection subscription at its session's new principal (borrowed, like the
 * one it replaces: a renewed token of the same user). */
void subs_rebind_owner(subs_t *subs, sub_t *sub, const auth_principal_t *owner);

/* Calls fn once for each subscription that event concerns and whose owner may read it.
 * Returns the number of calls. Allocates nothing and writes nothing: calls may run on
 * several threads at once while no subscription changes. */
size_t subs_match_event(subs_t *subs, const event_t *event, subs_match_fn fn, void *ctx);

/* subs_match_event for each of events in turn, with ctxs[i] for events[i]; returns the
 * calls in all. The index's memory for the next few events is fetched while one is
 * matched. Like subs_match_event, it allocates and writes nothing. */
size_t subs_match_events(subs_t *subs, const event_t *const *events, size_t count, subs_match_fn fn,
                         void *const *ctxs);

/* Does event concern sub (pattern on the resource or the previous path, change type,
 * reader check)? The single-subscription form of subs_match_event, for replays. */
bool subs_sub_concerns(const sub_t *sub, const event_t *event);

/* sub's pattern, parsed (views into subs_resource(sub)), for loops that check many events
 * against a few subscriptions: parse once, then subs_sub_concerns_parsed. Returns 0 (or
 * HEROLD_E_BAD_PATH, never for a subscription subs holds). */
int subs_sub_pattern(const sub_t *sub, path_t *out);

/* subs_sub_concerns with sub's pattern from subs_sub_pattern. */
bool subs_sub_concerns_parsed(const sub_t *sub, const path_t *pattern, const event_t *event);

/* The number of live subscriptions. */
size_t subs_count(const subs_t *subs);

/* The number of distinct patterns with subscriptions (for tests). */
size_t subs_pattern_count(const subs_t *subs);

/* Moves on, by up to slots slots each, the doublings that adds started in subs' tables
 * (ptable.h: the matching index's patterns, persistent subscriptions by id and by user,
 * the owners' interned principals and owner sets):
 * for the service thread when it has nothing else to do. Returns the slots still to move,
 * 0 when none. */
size_t subs_maintain(subs_t *subs, size_t slots);

/* The memory of those tables, which malloc does not count (for benchmarks). */
size_t subs_table_bytes(const subs_t *subs);

/* The bytes of the blocks of the record pools, the subscriptions' and the pattern records'
 * (recpool.h), for tests. */
size_t subs_record_pool_bytes(const subs_t *subs);

/* The interned principals and owner sets behind the reader check (for benchmarks, which
 * count what owners cost apart from what subscriptions cost). */
struct principals *subs_principals(subs_t *subs);

/* Writes a new random UUIDv4 in text form into out (SUBS_ID_BYTES + 1 bytes). */
void subs_new_id(char *out);

#endif
