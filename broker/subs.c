#include "subs.h"

#include <assert.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "heap.h"
#include "mem.h"
#include "notif.h"
#include "patterns.h"
#include "principals.h"
#include "ptable.h"
#include "recpool.h"

#define WEBHOOK_SECRET_BYTES_FOR_SUBS 32

struct subs {
    patterns_t *patterns;
    principals_t *principals;
    recpool_t records;
    size_t count;
    ptable_t by_id; /* persistent subscriptions (ptable.h: it doubles over a while) */
    sub_t *persistent_head;
    sub_t *persistent_tail;
    heap_t by_expiry;  /* persistent subscriptions by expires_at */
    sub_t *moved_head; /* persistent subscriptions whose cursor moved, oldest mark first */
    sub_t *moved_tail;
    ptable_t owned; /* struct owned, by user: persistent subscriptions per user */
    uint64_t next_created_order;
    bool is_out_of_order; /* a restore left the lists to be sorted (ordered_append) */
};

static uint64_t hash_id(const uint8_t *id)
{
    return hash_bytes(HASH_SEED, id, SUBS_ID_RAW_BYTES);
}

static uint64_t owned_hash(const void *item, const void *ctx); /* with struct owned */

static uint64_t sub_id_hash(const void *item, const void *ctx)
{
    (void)ctx;
    return hash_id(((const sub_t *)item)->id);
}

/* The heap of persistent subscriptions by expiration reads them through these. */
static int64_t expiry_key(const void *item)
{
    return ((const sub_t *)item)->rest->expires_at;
}

static void expiry_place(void *item, size_t slot)
{
    ((sub_t *)item)->rest->expiry_slot = slot;
}

subs_t *subs_new(void)
{
    subs_t *subs = xcalloc(1, sizeof(*subs));
    recpool_init(&subs->records, sizeof(sub_t));
    subs->principals = principals_new();
    subs->patterns = patterns_new(subs->principals);
    ptable_init(&subs->by_id, sub_id_hash, NULL);
    ptable_init(&subs->owned, owned_hash, NULL);
    subs->next_created_order = 1;
    subs->by_expiry = heap_make(expiry_key, expiry_place);
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
    patterns_free(subs->patterns);
    principals_free(subs->principals);
    recpool_destroy(&subs->records);
    ptable_destroy(&subs->by_id);
    heap_clear(&subs->by_expiry);
    ptable_destroy(&subs->owned); /* every list went with its last subscription */
    free(subs);
}

static void new_raw_id(uint8_t *b)
{
    if (RAND_bytes(b, SUBS_ID_RAW_BYTES) != 1) {
        fprintf(stderr, "herold: RAND_bytes failed\n");
        abort();
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
}

static void format_raw_id(const uint8_t *b, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < SUBS_ID_RAW_BYTES; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[o++] = '-';
        }
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 0xf];
    }
    out[o] = '\0';
}

/* Parses the canonical text form (lower-case hex, dashes at 8, 13, 18, 23). */
static bool parse_raw_id(const char *text, uint8_t *out)
{
    if (strnlen(text, SUBS_ID_BYTES + 1) != SUBS_ID_BYTES) {
        return false;
    }
    size_t o = 0;
    for (size_t i = 0; i < SUBS_ID_BYTES; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (text[i] != '-') {
                return false;
            }
            continue;
        }
        char hi = text[i];
        char lo = text[i + 1];
        int h = hi >= '0' && hi <= '9' ? hi - '0' : hi >= 'a' && hi <= 'f' ? hi - 'a' + 10 : -1;
        int l = lo >= '0' && lo <= '9' ? lo - '0' : lo >= 'a' && lo <= 'f' ? lo - 'a' + 10 : -1;
        if (h < 0 || l < 0) {
            return false;
        }
        out[o++] = (uint8_t)(h << 4 | l);
        i++;
    }
    return true;
}

void subs_new_id(char *out)
{
    uint8_t b[SUBS_ID_RAW_BYTES];
    new_raw_id(b);
    format_raw_id(b, out);
}

char *subs_id_format(const sub_t *sub, char *out)
{
    format_raw_id(sub->id, out);
    return out;
}

bool subs_id_is(const sub_t *sub, const char *id)
{
    uint8_t raw[SUBS_ID_RAW_BYTES];
    return parse_raw_id(id, raw) && memcmp(raw, sub->id, sizeof(raw)) == 0;
}

const char *subs_resource(const sub_t *sub)
{
    return patterns_text(sub->pattern);
}

int64_t subs_expires_at(const sub_t *sub)
{
    return sub->kind != SUB_CONNECTION ? sub->rest->expires_at : sub->owner->expires_at;
}

static int add_with_id(subs_t *subs, const uint8_t *id, const char *resource, size_t len,
                       unsigned change_mask, const auth_principal_t *owner, void *channel,
                       sub_t **out, struct herr *err);

int subs_add(subs_t *subs, const char *resource, size_t len, unsigned change_mask,
             const auth_principal_t *owner, void *channel, sub_t **out, struct herr *err)
{
    return add_with_id(subs, NULL, resource, len, change_mask, owner, channel, out, err);
}

/* id: the record's id, or NULL for a new one. */
static int add_with_id(subs_t *subs, const uint8_t *id, const char *resource, size_t len,
                       unsigned change_mask, const auth_principal_t *owner, void *channel,
                       sub_t **out, struct herr *err)
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

    sub_t *sub = recpool_get(&subs->records);
    if (id != NULL) {
        memcpy(sub->id, id, SUBS_ID_RAW_BYTES);
    } else {
        new_raw_id(sub->id);
    }
    sub->change_mask = (uint8_t)change_mask;
    sub->owner = owner;
    sub->owner_set = principals_owner_get(subs->principals, owner);
    sub->channel = channel;
    patterns_join(subs->patterns, sub, resource, len);
    subs->count++;
    *out = sub;
    return 0;
}

void subs_rest_clear(sub_rest_t *rest)
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

/* ---- lists of persistent subscriptions in creation order ---- */

/* A list: its ends, and which links of sub_rest_t it runs through. */
struct ordered {
    sub_t **head;
    sub_t **tail;
    size_t link; /* offsetof(sub_rest_t, ...) */
};

static sub_link_t *link_of(const struct ordered *list, const sub_t *sub)
{
    return (sub_link_t *)((char *)sub->rest + list->link);
}

/* Links sub in at the list's tail: every list here only grows at its end. */
static void link_at_tail(const struct ordered *list, sub_t *sub)
{
    sub_t *tail = *list->tail;
    sub_link_t *link = link_of(list, sub);
    link->prev = tail;
    link->next = NULL;
    if (tail != NULL) {
        link_of(list, tail)->next = sub;
    } else {
        *list->head = sub;
    }
    *list->tail = sub;
}

/* Links sub at the list's tail. New subscriptions come in creation order; restored ones
 * in the store's (the embedded store's is a hash table's), and one older than the tail
 * leaves the lists to be sorted before they are next read (sort_lists). Walking back to
 * its place instead was quadratic in what is restored: 40,000 took 23 s. */
static void ordered_append(subs_t *subs, const struct ordered *list, sub_t *sub)
{
    sub_t *tail = *list->tail;
    if (tail != NULL && tail->rest->created_order > sub->rest->created_order) {
        subs->is_out_of_order = true;
    }
    link_at_tail(list, sub);
}

static void ordered_unlink(const struct ordered *list, sub_t *sub)
{
    sub_link_t *link = link_of(list, sub);
    if (link->prev != NULL) {
        link_of(list, link->prev)->next = link->next;
    } else {
        *list->head = link->next;
    }
    if (link->next != NULL) {
        link_of(list, link->next)->prev = link->prev;
    } else {
        *list->tail = link->prev;
    }
}

static struct ordered all_list(subs_t *subs)
{
    return (struct ordered){&subs->persistent_head, &subs->persistent_tail,
                            offsetof(sub_rest_t, all)};
}

/* ---- persistent subscriptions by user ---- */

struct owned {
    uint64_t hash;
    char *user;
    sub_t *head; /* creation order */
    sub_t *tail;
    size_t count;
};

static uint64_t owned_hash(const void *item, const void *ctx)
{
    (void)ctx;
    return ((const struct owned *)item)->hash;
}

static struct owned *owned_find(const subs_t *subs, const char *user, uint64_t hash)
{
    ptable_probe_t probe = ptable_probe(&subs->owned, hash);
    for (struct owned *o; (o = ptable_next(&subs->owned, &probe)) != NULL;) {
        if (o->hash == hash && strcmp(o->user, user) == 0) {
            return o;
        }
    }
    return NULL;
}

static struct owned *owned_get(subs_t *subs, const char *user)
{
    uint64_t hash = hash_cstr(user);
    struct owned *o = owned_find(subs, user, hash);
    if (o == NULL) {
        o = xcalloc(1, sizeof(*o));
        o->hash = hash;
        o->user = xstrdup(user);
        ptable_insert(&subs->owned, o, hash);
    }
    return o;
}

static struct ordered mine_list(struct owned *o)
{
    return (struct ordered){&o->head, &o->tail, offsetof(sub_rest_t, mine)};
}

static void owned_link(subs_t *subs, sub_t *sub)
{
    struct owned *o = owned_get(subs, sub->owner->user);
    sub->rest->owned = o;
    struct ordered mine = mine_list(o);
    ordered_append(subs, &mine, sub);
    o->count++;
}

static void owned_unlink(subs_t *subs, sub_t *sub)
{
    struct owned *o = sub->rest->owned;
    struct ordered mine = mine_list(o);
    ordered_unlink(&mine, sub);
    if (--o->count > 0) {
        return;
    }
    ptable_remove(&subs->owned, o, o->hash);
    free(o->user);
    free(o);
}

size_t subs_count_owned(subs_t *subs, const char *user)
{
    const struct owned *o = owned_find(subs, user, hash_cstr(user));
    return o != NULL ? o->count : 0;
}

static void sort_lists(subs_t *subs);

sub_t *subs_first_owned(subs_t *subs, const char *user)
{
    sort_lists(subs);
    const struct owned *o = owned_find(subs, user, hash_cstr(user));
    return o != NULL ? o->head : NULL;
}

sub_t *subs_next_owned(const sub_t *sub)
{
    return sub->rest->mine.next;
}

/* ---- persistent subscriptions by expiration, and those whose cursor moved ---- */

static int compare_created_order(const void *a, const void *b)
{
    uint64_t x = (*(sub_t *const *)a)->rest->created_order;
    uint64_t y = (*(sub_t *const *)b)->rest->created_order;
    return x < y ? -1 : x > y;
}

/* Puts the list of all persistent subscriptions, and every user's, back in creation order
 * after a restore left them out of it: one sort, then each user's list rebuilt from it. */
static void sort_lists(subs_t *subs)
{
    if (!subs->is_out_of_order) {
        return;
    }
    subs->is_out_of_order = false;
    size_t n = subs->by_id.count;
    sub_t **sorted = xmalloc((n > 0 ? n : 1) * sizeof(*sorted));
    size_t k = 0;
    for (sub_t *sub = subs->persistent_head; sub != NULL; sub = sub->rest->all.next) {
        sorted[k++] = sub;
    }
    assert(k == n);
    qsort(sorted, n, sizeof(*sorted), compare_created_order);
    struct ordered all = all_list(subs);
    subs->persistent_head = subs->persistent_tail = NULL;
    for (size_t i = 0; i < n; i++) {
        sorted[i]->rest->owned->head = sorted[i]->rest->owned->tail = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        struct ordered mine = mine_list(sorted[i]->rest->owned);
        link_at_tail(&all, sorted[i]);
        link_at_tail(&mine, sorted[i]);
    }
    free(sorted);
}

sub_t **subs_expiring_by(subs_t *subs, int64_t bound, size_t *count)
{
    /* Every slot whose expiration is due, found from the root down: a slot that is not
     * due has no child that is. The slots to look at are each a child of one found, so
     * the stack holds at most two per subscription found, plus the root. */
    size_t found = 0;
    size_t capacity = 16;
    sub_t **out = xmalloc(capacity * sizeof(*out));
    size_t *stack = xmalloc((2 * capacity + 1) * sizeof(*stack));
    size_t depth = 0;
    const heap_t *heap = &subs->by_expiry;
    if (heap->count > 0) {
        stack[depth++] = 0;
    }
    while (depth > 0) {
        size_t slot = stack[--depth];
        sub_t *sub = heap->items[slot];
        if (sub->rest->expires_at > bound) {
            continue;
        }
        if (found == capacity) {
            capacity *= 2;
            out = xrealloc(out, capacity * sizeof(*out));
            stack = xrealloc(stack, (2 * capacity + 1) * sizeof(*stack));
        }
        out[found++] = sub;
        for (size_t child = 2 * slot + 1; child <= 2 * slot + 2; child++) {
            if (child < heap->count) {
                stack[depth++] = child;
            }
        }
    }
    free(stack);
    qsort(out, found, sizeof(*out), compare_created_order);
    *count = found;
    return out;
}

static struct ordered moved_list(subs_t *subs)
{
    return (struct ordered){&subs->moved_head, &subs->moved_tail, offsetof(sub_rest_t, moved)};
}

void subs_cursor_moved(subs_t *subs, sub_t *sub)
{
    if (!sub->rest->is_cursor_dirty) {
        sub->rest->is_cursor_dirty = true;
        struct ordered moved = moved_list(subs);
        link_at_tail(&moved, sub);
    }
}

sub_t **subs_take_moved_cursors(subs_t *subs, size_t *count)
{
    size_t found = 0;
    for (sub_t *sub = subs->moved_head; sub != NULL; sub = sub->rest->moved.next) {
        found++;
    }
    sub_t **out = xmalloc((found > 0 ? found : 1) * sizeof(*out));
    found = 0;
    for (sub_t *sub = subs->moved_head; sub != NULL; sub = sub->rest->moved.next) {
        sub->rest->is_cursor_dirty = false;
        out[found++] = sub;
    }
    subs->moved_head = NULL;
    subs->moved_tail = NULL;
    *count = found;
    return out;
}

static int add_persistent(subs_t *subs, const uint8_t *id, uint64_t created_order, sub_kind_t kind,
                          const char *resource, size_t len, unsigned change_mask,
                          auth_principal_t **owner, sub_rest_t *rest, int64_t expires_at,
                          sub_t **out, struct herr *err)
{
    assert(kind == SUB_WEBSOCKET || kind == SUB_WEBHOOK);
    int rc = add_with_id(subs, id, resource, len, change_mask, *owner, NULL, out, err);
    if (rc != 0) {
        return rc;
    }
    sub_t *sub = *out;
    sub->kind = kind;
    *owner = NULL;
    sub->rest = xmalloc(sizeof(*sub->rest));
    *sub->rest = *rest;
    memset(rest, 0, sizeof(*rest));
    sub->rest->expires_at = expires_at;
    sub->rest->is_cursor_dirty = false; /* on the list of moved cursors only through subs */
    if (created_order == 0) {
        created_order = subs->next_created_order;
    }
    sub->rest->created_order = created_order;
    if (created_order >= subs->next_created_order) {
        subs->next_created_order = created_order + 1;
    }
    /* The list stays in creation order, which paging relies on. */
    struct ordered all = all_list(subs);
    ordered_append(subs, &all, sub);
    ptable_insert(&subs->by_id, sub, hash_id(sub->id));
    heap_push(&subs->by_expiry, sub);
    owned_link(subs, sub);
    return 0;
}

int subs_add_persistent(subs_t *subs, sub_kind_t kind, const char *resource, size_t len,
                        unsigned change_mask, auth_principal_t **owner, sub_rest_t *rest,
                        int64_t expires_at, sub_t **out, struct herr *err)
{
    return add_persistent(subs, NULL, 0, kind, resource, len, change_mask, owner, rest, expires_at,
                          out, err);
}

static json_t *string_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

uint64_t subs_take_created_order(subs_t *subs)
{
    return subs->next_created_order++;
}

char *subs_document(sub_kind_t kind, const char *resource, unsigned change_mask,
                    const auth_principal_t *owner, const sub_rest_t *rest)
{
    char secret[2 * sizeof(rest->secret) + 1];
    for (size_t i = 0; i < sizeof(rest->secret); i++) {
        snprintf(secret + 2 * i, 3, "%02x", rest->secret[i]);
    }
    json_t *groups = json_array();
    for (size_t i = 0; i < owner->group_count; i++) {
        json_array_append_new(groups, json_string(owner->groups[i]));
    }
    json_t *doc = json_object();
    json_object_set_new(doc, "version", json_integer(1));
    json_object_set_new(doc, "kind", json_string(kind == SUB_WEBHOOK ? "webhook" : "websocket"));
    json_object_set_new(doc, "resource", json_string(resource));
    json_object_set_new(doc, "changeMask", json_integer(change_mask));
    json_object_set_new(doc, "expiresAt", json_integer(rest->expires_at));
    json_object_set_new(doc, "createdOrder", json_integer((json_int_t)rest->created_order));
    json_object_set_new(doc, "owner",
                        json_pack("{s:s, s:o, s:o, s:I}", "user", owner->user, "groups", groups,
                                  "application", string_or_null(owner->application), "expiresAt",
                                  (json_int_t)owner->expires_at));
    json_object_set_new(doc, "resourceGiven", json_string(rest->resource_given));
    json_object_set_new(doc, "notificationUrl", json_string(rest->notification_url));
    json_object_set_new(doc, "lifecycleUrl", string_or_null(rest->lifecycle_url));
    json_object_set_new(doc, "clientState", string_or_null(rest->client_state));
    json_object_set_new(doc, "applicationId", string_or_null(rest->application_id));
    json_object_set_new(doc, "encryptionCertificate", string_or_null(rest->encryption_certificate));
    json_object_set_new(doc, "encryptionCertificateId",
                        string_or_null(rest->encryption_certificate_id));
    json_object_set_new(doc, "includeResourceData", json_boolean(rest->include_resource_data));
    json_object_set_new(doc, "secret", json_string(secret));
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (text == NULL) {
        fprintf(stderr, "herold: out of memory encoding a subscription\n");
        abort();
    }
    return text;
}

char *subs_to_json(const sub_t *sub)
{
    return subs_document(sub->kind, subs_resource(sub), sub->change_mask, sub->owner, sub->rest);
}

static char *dup_string(json_t *value)
{
    return json_is_string(value) ? xstrdup(json_string_value(value)) : NULL;
}

/* A stored owner's groups: the same rules as a token's (strings, not empty). */
static bool all_non_empty_strings(const json_t *array)
{
    size_t i;
    const json_t *item;
    json_array_foreach(array, i, item)
    {
        if (!json_is_string(item) || json_string_length(item) == 0) {
            return false;
        }
    }
    return true;
}

int subs_restore(subs_t *subs, const char *id, const char *json, sub_t **out, struct herr *err)
{
    uint8_t raw_id[SUBS_ID_RAW_BYTES];
    if (!parse_raw_id(id, raw_id)) {
        return herr_set(err, HEROLD_E_CONFIG, "subscription %s: the stored id is not a UUID", id);
    }
    json_error_t jerr;
    json_t *doc = json_loads(json, 0, &jerr);
    json_t *owner_json = json_object_get(doc, "owner");
    json_t *groups = json_object_get(owner_json, "groups");
    const char *kind = json_string_value(json_object_get(doc, "kind"));
    const char *resource = json_string_value(json_object_get(doc, "resource"));
    const char *secret = json_string_value(json_object_get(doc, "secret"));
    const char *user = json_string_value(json_object_get(owner_json, "user"));
    if (doc == NULL || kind == NULL || resource == NULL || secret == NULL || user == NULL ||
        !json_is_array(groups) || json_array_size(groups) > AUTH_MAX_GROUPS ||
        !all_non_empty_strings(groups) || strlen(secret) != 2 * WEBHOOK_SECRET_BYTES_FOR_SUBS ||
        json_integer_value(json_object_get(doc, "version")) != 1 ||
        !json_is_string(json_object_get(doc, "notificationUrl")) ||
        !json_is_string(json_object_get(doc, "resourceGiven"))) {
        json_decref(doc);
        return herr_set(err, HEROLD_E_CONFIG, "subscription %s: the stored document is damaged",
                        id);
    }
    auth_principal_t *owner = xcalloc(1, sizeof(*owner));
    owner->user = xstrdup(user);
    owner->application = dup_string(json_object_get(owner_json, "application"));
    owner->expires_at = json_integer_value(json_object_get(owner_json, "expiresAt"));
    owner->group_count = json_array_size(groups);
    owner->groups = xcalloc(owner->group_count + 1, sizeof(char *));
    for (size_t i = 0; i < owner->group_count; i++) {
        owner->groups[i] = xstrdup(json_string_value(json_array_get(groups, i)));
    }
    sub_rest_t rest;
    memset(&rest, 0, sizeof(rest));
    rest.resource_given = dup_string(json_object_get(doc, "resourceGiven"));
    rest.notification_url = dup_string(json_object_get(doc, "notificationUrl"));
    rest.lifecycle_url = dup_string(json_object_get(doc, "lifecycleUrl"));
    rest.client_state = dup_string(json_object_get(doc, "clientState"));
    if (rest.client_state != NULL) {
        json_t *state = json_string(rest.client_state);
        rest.client_state_json = json_dumps(state, JSON_ENCODE_ANY);
        json_decref(state);
    }
    rest.application_id = dup_string(json_object_get(doc, "applicationId"));
    rest.encryption_certificate = dup_string(json_object_get(doc, "encryptionCertificate"));
    rest.encryption_certificate_id = dup_string(json_object_get(doc, "encryptionCertificateId"));
    rest.include_resource_data = json_is_true(json_object_get(doc, "includeResourceData"));
    for (size_t i = 0; i < sizeof(rest.secret); i++) {
        unsigned byte;
        sscanf(secret + 2 * i, "%2x", &byte);
        rest.secret[i] = (unsigned char)byte;
    }
    int rc = add_persistent(
        subs, raw_id, (uint64_t)json_integer_value(json_object_get(doc, "createdOrder")),
        strcmp(kind, "webhook") == 0 ? SUB_WEBHOOK : SUB_WEBSOCKET, resource, strlen(resource),
        (unsigned)json_integer_value(json_object_get(doc, "changeMask")), &owner, &rest,
        json_integer_value(json_object_get(doc, "expiresAt")), out, err);
    auth_principal_free(owner);
    if (rc != 0) {
        subs_rest_clear(&rest);
    }
    json_decref(doc);
    return rc;
}

void subs_remove(subs_t *subs, sub_t *sub)
{
    patterns_leave(subs->patterns, sub);
    principals_owner_put(subs->principals, sub->owner_set);
    subs->count--;
    if (sub->kind != SUB_CONNECTION) {
        ptable_remove(&subs->by_id, sub, hash_id(sub->id));
        assert(subs->by_expiry.items[sub->rest->expiry_slot] == sub);
        heap_remove(&subs->by_expiry, sub->rest->expiry_slot);
        owned_unlink(subs, sub);
        if (sub->rest->is_cursor_dirty) {
            struct ordered moved = moved_list(subs);
            ordered_unlink(&moved, sub);
        }
        struct ordered all = all_list(subs);
        ordered_unlink(&all, sub);
        auth_principal_free((auth_principal_t *)sub->owner);
        subs_rest_clear(sub->rest);
        free(sub->rest);
    }
    recpool_put(&subs->records, sub);
}

char *subs_expand_resource(const char *resource, const char *user, bool add_leading_slash)
{
    const char *bare = resource[0] == '/' ? resource + 1 : resource;
    size_t len;
    char *out;
    if (strcmp(bare, "me") == 0 || strncmp(bare, "me/", 3) == 0) {
        len = strlen("/users/") + strlen(user) + strlen(bare + 2) + 1;
        out = xmalloc(len);
        snprintf(out, len, "/users/%s%s", user, bare + 2);
        return out;
    }
    if (add_leading_slash && resource[0] != '/') {
        len = strlen(resource) + 2;
        out = xmalloc(len);
        snprintf(out, len, "/%s", resource);
        return out;
    }
    return xstrdup(resource);
}

sub_t *subs_find(subs_t *subs, const char *id)
{
    uint8_t raw[SUBS_ID_RAW_BYTES];
    if (!parse_raw_id(id, raw)) {
        return NULL;
    }
    uint64_t hash = hash_id(raw);
    ptable_probe_t probe = ptable_probe(&subs->by_id, hash);
    for (sub_t *sub; (sub = ptable_next(&subs->by_id, &probe)) != NULL;) {
        if (memcmp(sub->id, raw, SUBS_ID_RAW_BYTES) == 0) {
            return sub;
        }
    }
    return NULL;
}

sub_t *subs_first_persistent(subs_t *subs)
{
    sort_lists(subs);
    return subs->persistent_head;
}

sub_t *subs_next_persistent(const sub_t *sub)
{
    return sub->rest->all.next;
}

void subs_set_expiration(subs_t *subs, sub_t *sub, int64_t expires_at)
{
    sub->rest->expires_at = expires_at;
    sub->rest->is_reauthorization_sent = false;
    heap_rekey(&subs->by_expiry, sub->rest->expiry_slot);
}

void subs_format_expiration(const sub_t *sub, char *out)
{
    notif_format_graph_time(subs_expires_at(sub), out, SUBS_EXPIRATION_BYTES + 1);
}

/* Gives sub a new owner. A large pattern files its members under their owners'
 * principals, so the subscription leaves its pattern and joins it again. */
static void change_owner(subs_t *subs, sub_t *sub, const auth_principal_t *owner)
{
    const pattern_t *pattern = sub->pattern;
    char *text = xstrdup(patterns_text(pattern));
    size_t len = patterns_text_len(pattern);
    patterns_leave(subs->patterns, sub);
    const owner_set_t *old_set = sub->owner_set;
    sub->owner = owner;
    sub->owner_set = principals_owner_get(subs->principals, owner);
    principals_owner_put(subs->principals, old_set); /* after: a shared set stays interned */
    patterns_join(subs->patterns, sub, text, len);
    free(text);
}

void subs_set_owner(subs_t *subs, sub_t *sub, auth_principal_t **owner)
{
    assert(sub->kind != SUB_CONNECTION);
    auth_principal_t *old = (auth_principal_t *)sub->owner;
    bool is_other_user = strcmp(old->user, (*owner)->user) != 0;
    if (is_other_user) {
        owned_unlink(subs, sub);
    }
    change_owner(subs, sub, *owner);
    if (is_other_user) {
        owned_link(subs, sub);
    }
    *owner = NULL;
    auth_principal_free(old);
}

void subs_rebind_owner(subs_t *subs, sub_t *sub, const auth_principal_t *owner)
{
    assert(sub->kind == SUB_CONNECTION);
    change_owner(subs, sub, owner);
}

size_t subs_match_event(subs_t *subs, const event_t *event, subs_match_fn fn, void *ctx)
{
    return patterns_match(subs->patterns, event, fn, ctx);
}

size_t subs_match_events(subs_t *subs, const event_t *const *events, size_t count, subs_match_fn fn,
                         void *const *ctxs)
{
    return patterns_match_many(subs->patterns, events, count, fn, ctxs);
}

int subs_sub_pattern(const sub_t *sub, path_t *out)
{
    return path_parse_pattern(patterns_text(sub->pattern), patterns_text_len(sub->pattern), out,
                              NULL);
}

bool subs_sub_concerns(const sub_t *sub, const event_t *event)
{
    path_t pattern;
    return subs_sub_pattern(sub, &pattern) == 0 && subs_sub_concerns_parsed(sub, &pattern, event);
}

bool subs_sub_concerns_parsed(const sub_t *sub, const path_t *pattern, const event_t *event)
{
    if ((sub->change_mask & (unsigned)event->type) == 0) {
        return false;
    }
    if (!path_matches(pattern, &event->resource_path) &&
        !(event->has_previous && path_matches(pattern, &event->previous_path))) {
        return false;
    }
    return auth_may_read(sub->owner, event->readers, event->reader_count);
}

size_t subs_count(const subs_t *subs)
{
    return subs->count;
}

size_t subs_pattern_count(const subs_t *subs)
{
    return patterns_count(subs->patterns);
}

size_t subs_maintain(subs_t *subs, size_t slots)
{
    /* Each table up to slots: they rarely move at once. */
    return patterns_maintain(subs->patterns, slots) + ptable_maintain(&subs->by_id, slots) +
           ptable_maintain(&subs->owned, slots) + principals_maintain(subs->principals, slots);
}

size_t subs_table_bytes(const subs_t *subs)
{
    return patterns_table_bytes(subs->patterns) + ptable_bytes(&subs->by_id) +
           ptable_bytes(&subs->owned) + principals_table_bytes(subs->principals);
}

size_t subs_record_pool_bytes(const subs_t *subs)
{
    return subs->records.block_bytes + patterns_record_pool_bytes(subs->patterns);
}

struct principals *subs_principals(subs_t *subs)
{
    return subs->principals;
}
