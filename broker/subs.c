#include "subs.h"

#include <assert.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "mem.h"
#include "notif.h"
#include "principals.h"

#define WEBHOOK_SECRET_BYTES_FOR_SUBS 32

/* Persistent subscriptions by id: open addressing with linear probing over pointers;
 * deletion shifts back the entries that follow, so no tombstones accumulate. */
struct id_table {
    sub_t **slots;
    size_t capacity; /* a power of two */
    size_t count;
};

/*
 * Pattern groups. The index holds one entry per distinct pattern text, a group, not one
 * per subscription: fifty to five hundred people following one department folder cost one
 * index entry. A group lists its subscriptions; once it has GROUP_BY_PRINCIPAL_MIN of them
 * it also files each under every principal its owner holds (an open-addressing table of
 * lists keyed by principal id), so that an event visits, per reader, only the
 * subscriptions whose owner may read it, instead of checking every follower of the folder.
 * Smaller groups are scanned, with the reader check as two sorted id arrays intersected.
 */
#define GROUP_BY_PRINCIPAL_MIN 16
#define GROUP_BUCKETS_MIN 1024

/* The subscriptions of a group whose owner holds one principal. Most principals reach a
 * single subscription of a group (a project group, a colleague), so a list of one keeps it
 * in the slot itself. */
struct member_list {
    uint32_t id;
    uint32_t count; /* 0: an empty slot */
    uint32_t capacity;
    union {
        sub_t *one;   /* capacity 1 */
        sub_t **many; /* capacity > 1, owned */
    } u;
};

static sub_t *const *list_members(const struct member_list *l)
{
    return l->capacity == 1 ? &l->u.one : l->u.many;
}

struct group {
    struct group *next; /* hash chain */
    uint64_t hash;
    sub_t **members; /* &one while capacity is 1: most personal patterns have one follower */
    sub_t *one;
    uint32_t count;
    uint32_t capacity;
    struct member_list *lists; /* NULL while the group is small */
    uint32_t list_capacity;    /* a power of two */
    uint32_t list_count;
    size_t len;
    char text[]; /* the pattern; every member's resource points here */
};

struct subs {
    index_t *index;
    principals_t *principals;
    struct group **groups;
    size_t group_buckets; /* a power of two */
    size_t group_count;
    size_t count;
    struct id_table by_id;
    sub_t *persistent_head;
    sub_t *persistent_tail;
    uint64_t next_created_order;
};

static uint64_t hash_id(const char *id)
{
    return hash_fnv1a_cstr(id);
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
        if (hash_may_fill_hole(home, hole, i, mask)) {
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
    const principals_t *principals;
    bool has_reader_ids; /* readers translated (done on the first group that needs them) */
    reader_ids_t readers;
};

/* Groups this small check their few owners by name: translating an event's readers costs a
 * table probe per reader, a cache miss each in a table of a million principals, which is
 * more than comparing a few names with one owner's. */
#define GROUP_SCAN_BY_NAME_MAX 4

static void readers_translate(struct match_ctx *m)
{
    if (!m->has_reader_ids) {
        principals_readers(m->principals, m->event->readers, m->event->reader_count, &m->readers);
        m->has_reader_ids = true;
    }
}

/* ---- groups ---- */

static struct member_list *list_slot(struct group *g, uint32_t id)
{
    uint32_t mask = g->list_capacity - 1;
    for (uint32_t i = (id * 2654435761u) & mask;; i = (i + 1) & mask) {
        if (g->lists[i].count == 0 || g->lists[i].id == id) {
            return &g->lists[i];
        }
    }
}

static void list_push(struct group *g, uint32_t id, sub_t *sub);

static void lists_grow(struct group *g)
{
    struct member_list *old = g->lists;
    uint32_t old_capacity = g->list_capacity;
    g->list_capacity = old_capacity == 0 ? 16 : old_capacity * 2;
    g->lists = xcalloc(g->list_capacity, sizeof(*g->lists));
    for (uint32_t i = 0; i < old_capacity; i++) {
        if (old[i].count != 0) {
            *list_slot(g, old[i].id) = old[i];
        }
    }
    free(old);
}

static void list_push(struct group *g, uint32_t id, sub_t *sub)
{
    if ((g->list_count + 1) * 4 > g->list_capacity * 3) {
        lists_grow(g);
    }
    struct member_list *l = list_slot(g, id);
    if (l->count == 0) {
        l->id = id;
        l->capacity = 1;
        l->count = 1;
        l->u.one = sub;
        g->list_count++;
        return;
    }
    if (l->capacity == 1) {
        sub_t *first = l->u.one;
        l->capacity = 4;
        l->u.many = xmalloc(l->capacity * sizeof(sub_t *));
        l->u.many[0] = first;
    } else if (l->count == l->capacity) {
        l->capacity *= 2;
        l->u.many = xrealloc(l->u.many, l->capacity * sizeof(sub_t *));
    }
    l->u.many[l->count++] = sub;
}

/* Removes sub from the list of id; an emptied list leaves the table by backward shift. */
static void list_remove(struct group *g, uint32_t id, const sub_t *sub)
{
    struct member_list *l = list_slot(g, id);
    assert(l->count != 0);
    if (l->capacity > 1) {
        for (uint32_t i = 0; i < l->count; i++) {
            if (l->u.many[i] == sub) {
                l->u.many[i] = l->u.many[--l->count];
                break;
            }
        }
        if (l->count > 0) {
            return;
        }
        free(l->u.many);
    } else {
        assert(l->u.one == sub);
        l->count = 0;
    }
    g->list_count--;
    uint32_t mask = g->list_capacity - 1;
    uint32_t hole = (uint32_t)(l - g->lists);
    for (uint32_t i = (hole + 1) & mask; g->lists[i].count != 0; i = (i + 1) & mask) {
        uint32_t home = (g->lists[i].id * 2654435761u) & mask;
        if (hash_may_fill_hole(home, hole, i, mask)) {
            g->lists[hole] = g->lists[i];
            g->lists[i].count = 0;
            hole = i;
        }
    }
}

static void lists_add(struct group *g, sub_t *sub)
{
    for (uint32_t i = 0; i < sub->owner_set->count; i++) {
        list_push(g, sub->owner_set->ids[i], sub);
    }
}

static void lists_remove(struct group *g, const sub_t *sub)
{
    for (uint32_t i = 0; i < sub->owner_set->count; i++) {
        list_remove(g, sub->owner_set->ids[i], sub);
    }
}

static void lists_free(struct group *g)
{
    for (uint32_t i = 0; i < g->list_capacity; i++) {
        if (g->lists[i].count != 0 && g->lists[i].capacity > 1) {
            free(g->lists[i].u.many);
        }
    }
    free(g->lists);
    g->lists = NULL;
    g->list_capacity = 0;
    g->list_count = 0;
}

static struct group **group_link(subs_t *subs, const char *text, size_t len, uint64_t hash)
{
    struct group **link = &subs->groups[hash & (subs->group_buckets - 1)];
    while (*link != NULL && !((*link)->hash == hash && (*link)->len == len &&
                              memcmp((*link)->text, text, len) == 0)) {
        link = &(*link)->next;
    }
    return link;
}

static void groups_grow(subs_t *subs)
{
    size_t buckets = subs->group_buckets * 2;
    struct group **table = xcalloc(buckets, sizeof(*table));
    for (size_t i = 0; i < subs->group_buckets; i++) {
        for (struct group *g = subs->groups[i]; g != NULL;) {
            struct group *next = g->next;
            g->next = table[g->hash & (buckets - 1)];
            table[g->hash & (buckets - 1)] = g;
            g = next;
        }
    }
    free(subs->groups);
    subs->groups = table;
    subs->group_buckets = buckets;
}

/* Adds sub to the group of its pattern (pattern parsed from text[0..len)), making the
 * group and its index entry when it is the first. Sets sub->resource. */
static void group_join(subs_t *subs, sub_t *sub, const char *text, size_t len,
                       const path_t *pattern)
{
    uint64_t hash = hash_fnv1a(HASH_FNV1A_SEED, text, len);
    struct group **link = group_link(subs, text, len, hash);
    struct group *g = *link;
    if (g == NULL) {
        if (subs->group_count + 1 > subs->group_buckets) {
            groups_grow(subs);
            link = group_link(subs, text, len, hash);
        }
        g = xcalloc(1, sizeof(*g) + len + 1);
        g->hash = hash;
        g->len = len;
        g->members = &g->one;
        g->capacity = 1;
        memcpy(g->text, text, len);
        *link = g;
        subs->group_count++;
        /* The index keeps views of the pattern's segments: parse over the group's text. */
        path_t own;
        int rc = path_parse_pattern(g->text, len, &own, NULL);
        assert(rc == 0);
        (void)rc;
        (void)pattern;
        index_add(subs->index, &own, EVENT_CHANGE_ALL, g);
    }
    if (g->count == g->capacity) {
        sub_t **members = xmalloc(2 * g->capacity * sizeof(sub_t *));
        memcpy(members, g->members, g->count * sizeof(sub_t *));
        if (g->members != &g->one) {
            free(g->members);
        }
        g->members = members;
        g->capacity *= 2;
    }
    sub->group = g;
    sub->group_slot = g->count;
    g->members[g->count++] = sub;
    sub->resource = g->text;
    if (g->lists != NULL) {
        lists_add(g, sub);
    } else if (g->count == GROUP_BY_PRINCIPAL_MIN) {
        for (uint32_t i = 0; i < g->count; i++) {
            lists_add(g, g->members[i]);
        }
    }
}

static void group_leave(subs_t *subs, sub_t *sub)
{
    struct group *g = sub->group;
    if (g->lists != NULL) {
        lists_remove(g, sub);
    }
    g->members[sub->group_slot] = g->members[--g->count];
    g->members[sub->group_slot]->group_slot = sub->group_slot;
    sub->group = NULL;
    if (g->lists != NULL && g->count < GROUP_BY_PRINCIPAL_MIN / 2) {
        lists_free(g);
    }
    if (g->count > 0) {
        return;
    }
    path_t pattern;
    int rc = path_parse_pattern(g->text, g->len, &pattern, NULL);
    assert(rc == 0);
    rc = index_remove(subs->index, &pattern, g);
    assert(rc == 0);
    (void)rc;
    *group_link(subs, g->text, g->len, g->hash) = g->next;
    subs->group_count--;
    if (g->members != &g->one) {
        free(g->members);
    }
    free(g);
}

subs_t *subs_new(void)
{
    subs_t *subs = xcalloc(1, sizeof(*subs));
    subs->index = index_new();
    subs->principals = principals_new();
    subs->group_buckets = GROUP_BUCKETS_MIN;
    subs->groups = xcalloc(subs->group_buckets, sizeof(*subs->groups));
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
    assert(subs->count == 0 && subs->group_count == 0);
    index_free(subs->index);
    principals_free(subs->principals);
    free(subs->groups);
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

static int add_with_id(subs_t *subs, const char *id, const char *resource, size_t len,
                       unsigned change_mask, const auth_principal_t *owner, void *channel,
                       int64_t expires_at, sub_t **out, struct herr *err);

int subs_add(subs_t *subs, const char *resource, size_t len, unsigned change_mask,
             const auth_principal_t *owner, void *channel, int64_t expires_at, sub_t **out,
             struct herr *err)
{
    return add_with_id(subs, NULL, resource, len, change_mask, owner, channel, expires_at, out,
                       err);
}

static int add_with_id(subs_t *subs, const char *id, const char *resource, size_t len,
                       unsigned change_mask, const auth_principal_t *owner, void *channel,
                       int64_t expires_at, sub_t **out, struct herr *err)
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
    if (id != NULL) {
        snprintf(sub->id, sizeof(sub->id), "%s", id);
    } else {
        subs_new_id(sub->id);
    }
    sub->change_mask = change_mask;
    sub->owner = owner;
    sub->owner_set = principals_owner_get(subs->principals, owner);
    sub->channel = channel;
    sub->expires_at = expires_at;
    group_join(subs, sub, resource, len, &pattern);
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

static int add_persistent(subs_t *subs, const char *id, uint64_t created_order, sub_kind_t kind,
                          const char *resource, size_t len, unsigned change_mask,
                          auth_principal_t **owner, sub_rest_t *rest, int64_t expires_at,
                          sub_t **out, struct herr *err)
{
    assert(kind == SUB_WEBSOCKET || kind == SUB_WEBHOOK);
    int rc = add_with_id(subs, id, resource, len, change_mask, *owner, NULL, expires_at, out, err);
    if (rc != 0) {
        return rc;
    }
    sub_t *sub = *out;
    sub->kind = kind;
    *owner = NULL;
    sub->rest = xmalloc(sizeof(*sub->rest));
    *sub->rest = *rest;
    memset(rest, 0, sizeof(*rest));
    if (created_order == 0) {
        created_order = subs->next_created_order;
    }
    sub->rest->created_order = created_order;
    if (created_order >= subs->next_created_order) {
        subs->next_created_order = created_order + 1;
    }
    /* The list stays in creation order, which paging relies on; restored records may come
     * in any order, new ones go to the tail. */
    sub_t *after = subs->persistent_tail;
    while (after != NULL && after->rest->created_order > created_order) {
        after = after->rest->prev_persistent;
    }
    sub->rest->prev_persistent = after;
    sub->rest->next_persistent =
        after != NULL ? after->rest->next_persistent : subs->persistent_head;
    if (sub->rest->next_persistent != NULL) {
        sub->rest->next_persistent->rest->prev_persistent = sub;
    } else {
        subs->persistent_tail = sub;
    }
    if (after != NULL) {
        after->rest->next_persistent = sub;
    } else {
        subs->persistent_head = sub;
    }
    table_insert(&subs->by_id, sub);
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

char *subs_to_json(const sub_t *sub)
{
    char secret[2 * sizeof(sub->rest->secret) + 1];
    for (size_t i = 0; i < sizeof(sub->rest->secret); i++) {
        snprintf(secret + 2 * i, 3, "%02x", sub->rest->secret[i]);
    }
    json_t *groups = json_array();
    for (size_t i = 0; i < sub->owner->group_count; i++) {
        json_array_append_new(groups, json_string(sub->owner->groups[i]));
    }
    json_t *doc = json_object();
    json_object_set_new(doc, "version", json_integer(1));
    json_object_set_new(doc, "kind",
                        json_string(sub->kind == SUB_WEBHOOK ? "webhook" : "websocket"));
    json_object_set_new(doc, "resource", json_string(sub->resource));
    json_object_set_new(doc, "changeMask", json_integer(sub->change_mask));
    json_object_set_new(doc, "expiresAt", json_integer(sub->expires_at));
    json_object_set_new(doc, "createdOrder", json_integer((json_int_t)sub->rest->created_order));
    json_object_set_new(doc, "owner",
                        json_pack("{s:s, s:o, s:o, s:I}", "user", sub->owner->user, "groups",
                                  groups, "application", string_or_null(sub->owner->application),
                                  "expiresAt", (json_int_t)sub->owner->expires_at));
    json_object_set_new(doc, "resourceGiven", json_string(sub->rest->resource_given));
    json_object_set_new(doc, "notificationUrl", json_string(sub->rest->notification_url));
    json_object_set_new(doc, "lifecycleUrl", string_or_null(sub->rest->lifecycle_url));
    json_object_set_new(doc, "clientState", string_or_null(sub->rest->client_state));
    json_object_set_new(doc, "applicationId", string_or_null(sub->rest->application_id));
    json_object_set_new(doc, "encryptionCertificate",
                        string_or_null(sub->rest->encryption_certificate));
    json_object_set_new(doc, "encryptionCertificateId",
                        string_or_null(sub->rest->encryption_certificate_id));
    json_object_set_new(doc, "includeResourceData", json_boolean(sub->rest->include_resource_data));
    json_object_set_new(doc, "secret", json_string(secret));
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (text == NULL) {
        fprintf(stderr, "herold: out of memory encoding a subscription\n");
        abort();
    }
    return text;
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
        subs, id, (uint64_t)json_integer_value(json_object_get(doc, "createdOrder")),
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
    group_leave(subs, sub);
    principals_owner_put(subs->principals, sub->owner_set);
    subs->count--;
    if (sub->kind != SUB_CONNECTION) {
        table_remove(&subs->by_id, sub);
        if (sub->rest->prev_persistent != NULL) {
            sub->rest->prev_persistent->rest->next_persistent = sub->rest->next_persistent;
        } else {
            subs->persistent_head = sub->rest->next_persistent;
        }
        if (sub->rest->next_persistent != NULL) {
            sub->rest->next_persistent->rest->prev_persistent = sub->rest->prev_persistent;
        } else {
            subs->persistent_tail = sub->rest->prev_persistent;
        }
        auth_principal_free((auth_principal_t *)sub->owner);
        subs_rest_clear(sub->rest);
        free(sub->rest);
    }
    free(sub);
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
    return subs->by_id.slots[table_slot(&subs->by_id, id)];
}

sub_t *subs_first_persistent(subs_t *subs)
{
    return subs->persistent_head;
}

sub_t *subs_next_persistent(const sub_t *sub)
{
    return sub->rest->next_persistent;
}

size_t subs_count_owned(subs_t *subs, const char *user)
{
    size_t count = 0;
    for (const sub_t *sub = subs->persistent_head; sub != NULL; sub = sub->rest->next_persistent) {
        count += strcmp(sub->owner->user, user) == 0;
    }
    return count;
}

void subs_set_expiration(sub_t *sub, int64_t expires_at)
{
    sub->expires_at = expires_at;
    sub->rest->is_reauthorization_sent = false;
}

void subs_format_expiration(const sub_t *sub, char *out)
{
    notif_format_graph_time(sub->expires_at, out, SUBS_EXPIRATION_BYTES + 1);
}

void subs_set_owner(subs_t *subs, sub_t *sub, auth_principal_t **owner)
{
    assert(sub->kind != SUB_CONNECTION);
    /* The group files the subscription under its owner's principals: refile it. */
    if (sub->group->lists != NULL) {
        lists_remove(sub->group, sub);
    }
    principals_owner_put(subs->principals, sub->owner_set);
    auth_principal_free((auth_principal_t *)sub->owner);
    sub->owner = *owner;
    *owner = NULL;
    sub->owner_set = principals_owner_get(subs->principals, sub->owner);
    if (sub->group->lists != NULL) {
        lists_add(sub->group, sub);
    }
}

/* One candidate whose pattern matched; is_readable when its owner is known to pass the
 * reader check (found under a reader's principal). Returns false to stop. */
static bool visit(struct match_ctx *m, sub_t *sub, bool is_readable)
{
    if (sub->last_matched_seq == m->event->seq) {
        return true; /* already seen: through another reader, or the other path of a move */
    }
    if ((sub->change_mask & (unsigned)m->event->type) == 0) {
        return true;
    }
    sub->last_matched_seq = m->event->seq;
    if (!is_readable && !(m->has_reader_ids ? principals_may_read(sub->owner_set, &m->readers)
                                            : auth_may_read(sub->owner, m->event->readers,
                                                            m->event->reader_count))) {
        return true;
    }
    m->calls++;
    if (!m->fn(sub, m->ctx)) {
        m->is_stopped = true;
        return false;
    }
    return true;
}

static bool match_group(void *value, void *opaque)
{
    struct match_ctx *m = opaque;
    struct group *g = value;
    if (g->count > GROUP_SCAN_BY_NAME_MAX) {
        readers_translate(m);
    }
    if (g->lists == NULL || (m->has_reader_ids && m->readers.is_everyone)) {
        bool is_everyone = m->has_reader_ids && m->readers.is_everyone;
        for (uint32_t i = 0; i < g->count; i++) {
            if (!visit(m, g->members[i], is_everyone)) {
                return false;
            }
        }
        return true;
    }
    for (size_t r = 0; r < m->readers.count; r++) {
        const struct member_list *l = list_slot(g, m->readers.ids[r]);
        sub_t *const *members = list_members(l);
        for (uint32_t i = 0; i < l->count; i++) {
            if (!visit(m, members[i], true)) {
                return false;
            }
        }
    }
    return true;
}

size_t subs_match_event(subs_t *subs, const event_t *event, subs_match_fn fn, void *ctx)
{
    struct match_ctx m = {.event = event, .fn = fn, .ctx = ctx, .principals = subs->principals};
    assert(event->seq != 0);
    if (event->reader_count == 0) {
        return 0; /* nobody may read it */
    }
    index_match(subs->index, &event->resource_path, event->type, match_group, &m);
    if (event->has_previous && !m.is_stopped) {
        index_match(subs->index, &event->previous_path, event->type, match_group, &m);
    }
    return m.calls;
}

int subs_sub_pattern(const sub_t *sub, path_t *out)
{
    return path_parse_pattern(sub->resource, strlen(sub->resource), out, NULL);
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
