#include "subs.h"

#include <assert.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "notif.h"

/* Persistent subscriptions by id: open addressing with linear probing over pointers;
 * deletion shifts back the entries that follow, so no tombstones accumulate. */
struct id_table {
    sub_t **slots;
    size_t capacity; /* a power of two */
    size_t count;
};

struct subs {
    index_t *index;
    size_t count;
    struct id_table by_id;
    sub_t *persistent_head;
    sub_t *persistent_tail;
    uint64_t next_created_order;
};

static uint64_t hash_id(const char *id)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *id != '\0'; id++) {
        h = (h ^ (unsigned char)*id) * 1099511628211ULL;
    }
    return h;
}

static void table_insert(struct id_table *t, sub_t *sub);

static void table_grow(struct id_table *t)
{
    struct id_table bigger = {xcalloc(t->capacity * 2, sizeof(sub_t *)), t->capacity * 2, 0};
    for (size_t i = 0; i < t->capacity; i++) {
        if (t->slots[i] != NULL) {
            table_insert(&bigger, t->slots[i]);
        }
    }
    free(t->slots);
    *t = bigger;
}

static void table_insert(struct id_table *t, sub_t *sub)
{
    if ((t->count + 1) * 4 > t->capacity * 3) {
        table_grow(t);
    }
    size_t mask = t->capacity - 1;
    size_t i = hash_id(sub->id) & mask;
    while (t->slots[i] != NULL) {
        i = (i + 1) & mask;
    }
    t->slots[i] = sub;
    t->count++;
}

static size_t table_slot(const struct id_table *t, const char *id)
{
    size_t mask = t->capacity - 1;
    for (size_t i = hash_id(id) & mask;; i = (i + 1) & mask) {
        if (t->slots[i] == NULL || strcmp(t->slots[i]->id, id) == 0) {
            return i;
        }
    }
}

static void table_remove(struct id_table *t, const sub_t *sub)
{
    size_t mask = t->capacity - 1;
    size_t hole = table_slot(t, sub->id);
    assert(t->slots[hole] == sub);
    t->slots[hole] = NULL;
    t->count--;
    /* Shift back the run after the hole so every entry stays reachable from its home. */
    for (size_t i = (hole + 1) & mask; t->slots[i] != NULL; i = (i + 1) & mask) {
        size_t home = hash_id(t->slots[i]->id) & mask;
        bool home_is_cyclically_after_hole =
            hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
        if (!home_is_cyclically_after_hole) {
            t->slots[hole] = t->slots[i];
            t->slots[i] = NULL;
            hole = i;
        }
    }
}

struct match_ctx {
    const event_t *event;
    subs_match_fn fn;
    void *ctx;
    size_t calls;
    bool is_stopped;
};

subs_t *subs_new(void)
{
    subs_t *subs = xcalloc(1, sizeof(*subs));
    subs->index = index_new();
    subs->by_id.capacity = 64;
    subs->by_id.slots = xcalloc(subs->by_id.capacity, sizeof(sub_t *));
    subs->next_created_order = 1;
    return subs;
}

void subs_free(subs_t *subs)
{
    if (subs == NULL) {
        return;
    }
    /* Connection subscriptions are removed by their sessions before this; persistent
     * ones are removed here. */
    while (subs->persistent_head != NULL) {
        subs_remove(subs, subs->persistent_head);
    }
    assert(subs->count == 0);
    index_free(subs->index);
    free(subs->by_id.slots);
    free(subs);
}

void subs_new_id(char *out)
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1) {
        fprintf(stderr, "herold: RAND_bytes failed\n");
        abort();
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, SUBS_ID_BYTES + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

int subs_add(subs_t *subs, const char *resource, size_t len, unsigned change_mask,
             const auth_principal_t *owner, void *channel, int64_t expires_at, sub_t **out,
             struct herr *err)
{
    path_t pattern;
    *out = NULL;
    if ((change_mask & EVENT_CHANGE_ALL) == 0 || (change_mask & ~(unsigned)EVENT_CHANGE_ALL)) {
        return herr_set(err, HEROLD_E_BAD_CHANGE_TYPE, "changeType: no valid change type");
    }
    int rc = path_parse_pattern(resource, len, &pattern, err);
    if (rc != 0) {
        return rc;
    }

    sub_t *sub = xcalloc(1, sizeof(*sub));
    subs_new_id(sub->id);
    sub->resource = xstrndup(resource, len);
    /* Re-parse over the owned copy so that the segment views point into it. */
    rc = path_parse_pattern(sub->resource, len, &sub->pattern, NULL);
    assert(rc == 0);
    sub->change_mask = change_mask;
    sub->owner = owner;
    sub->channel = channel;
    sub->expires_at = expires_at;
    notif_format_graph_time(expires_at, sub->expiration, sizeof(sub->expiration));
    index_add(subs->index, &sub->pattern, change_mask, sub);
    subs->count++;
    *out = sub;
    return 0;
}

static void rest_clear(sub_rest_t *rest)
{
    free(rest->resource_given);
    free(rest->notification_url);
    free(rest->lifecycle_url);
    free(rest->client_state);
    free(rest->client_state_json);
    free(rest->application_id);
    free(rest->encryption_certificate);
    free(rest->encryption_certificate_id);
    memset(rest, 0, sizeof(*rest));
}

int subs_add_persistent(subs_t *subs, sub_kind_t kind, const char *resource, size_t len,
                        unsigned change_mask, auth_principal_t **owner, sub_rest_t *rest,
                        int64_t expires_at, sub_t **out, struct herr *err)
{
    assert(kind == SUB_WEBSOCKET || kind == SUB_WEBHOOK);
    int rc = subs_add(subs, resource, len, change_mask, *owner, NULL, expires_at, out, err);
    if (rc != 0) {
        return rc;
    }
    sub_t *sub = *out;
    sub->kind = kind;
    *owner = NULL;
    sub->rest = *rest;
    memset(rest, 0, sizeof(*rest));
    sub->rest.created_order = subs->next_created_order++;
    sub->prev_persistent = subs->persistent_tail;
    if (subs->persistent_tail != NULL) {
        subs->persistent_tail->next_persistent = sub;
    } else {
        subs->persistent_head = sub;
    }
    subs->persistent_tail = sub;
    table_insert(&subs->by_id, sub);
    return 0;
}

void subs_remove(subs_t *subs, sub_t *sub)
{
    int rc = index_remove(subs->index, &sub->pattern, sub);
    assert(rc == 0);
    (void)rc;
    subs->count--;
    if (sub->kind != SUB_CONNECTION) {
        table_remove(&subs->by_id, sub);
        if (sub->prev_persistent != NULL) {
            sub->prev_persistent->next_persistent = sub->next_persistent;
        } else {
            subs->persistent_head = sub->next_persistent;
        }
        if (sub->next_persistent != NULL) {
            sub->next_persistent->prev_persistent = sub->prev_persistent;
        } else {
            subs->persistent_tail = sub->prev_persistent;
        }
        auth_principal_free((auth_principal_t *)sub->owner);
        rest_clear(&sub->rest);
    }
    free(sub->resource);
    free(sub);
}

sub_t *subs_find(subs_t *subs, const char *id)
{
    return subs->by_id.slots[table_slot(&subs->by_id, id)];
}

sub_t *subs_first_persistent(subs_t *subs)
{
    return subs->persistent_head;
}

sub_t *subs_next_persistent(const sub_t *sub)
{
    return sub->next_persistent;
}

size_t subs_count_owned(subs_t *subs, const char *user)
{
    size_t count = 0;
    for (const sub_t *sub = subs->persistent_head; sub != NULL; sub = sub->next_persistent) {
        count += strcmp(sub->owner->user, user) == 0;
    }
    return count;
}

void subs_set_expiration(sub_t *sub, int64_t expires_at)
{
    sub->expires_at = expires_at;
    notif_format_graph_time(expires_at, sub->expiration, sizeof(sub->expiration));
    sub->rest.is_reauthorization_sent = false;
}

void subs_set_owner(sub_t *sub, auth_principal_t **owner)
{
    assert(sub->kind != SUB_CONNECTION);
    auth_principal_free((auth_principal_t *)sub->owner);
    sub->owner = *owner;
    *owner = NULL;
}

static bool match_one(void *value, void *opaque)
{
    struct match_ctx *m = opaque;
    sub_t *sub = value;
    if (sub->last_matched_seq == m->event->seq) {
        return true; /* already matched through the other path of a move */
    }
    sub->last_matched_seq = m->event->seq;
    if (!auth_may_read(sub->owner, m->event->readers, m->event->reader_count)) {
        return true;
    }
    m->calls++;
    if (!m->fn(sub, m->ctx)) {
        m->is_stopped = true;
        return false;
    }
    return true;
}

size_t subs_match_event(subs_t *subs, const event_t *event, subs_match_fn fn, void *ctx)
{
    struct match_ctx m = {.event = event, .fn = fn, .ctx = ctx};
    assert(event->seq != 0);
    index_match(subs->index, &event->resource_path, event->type, match_one, &m);
    if (event->has_previous && !m.is_stopped) {
        index_match(subs->index, &event->previous_path, event->type, match_one, &m);
    }
    return m.calls;
}

size_t subs_count(const subs_t *subs)
{
    return subs->count;
}
