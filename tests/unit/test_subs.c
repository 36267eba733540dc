/* Subscriptions: creation rules, the reader check after matching, moves reported once, and
 * pattern groups (with and without their lists by principal) against a brute-force oracle. */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subs.h"
#include "unit.h"

struct seen {
    sub_t *subs[16];
    size_t count;
};

static bool record(sub_t *sub, void *ctx)
{
    struct seen *seen = ctx;
    ck_assert_uint_lt(seen->count, 16);
    seen->subs[seen->count++] = sub;
    return true;
}

static bool has(const struct seen *seen, const sub_t *sub)
{
    for (size_t i = 0; i < seen->count; i++) {
        if (seen->subs[i] == sub) {
            return true;
        }
    }
    return false;
}

static auth_principal_t *principal(const char *user, const char *group)
{
    auth_principal_t *p = calloc(1, sizeof(*p));
    p->user = strdup(user);
    if (group != NULL) {
        p->groups = calloc(1, sizeof(char *));
        p->groups[0] = strdup(group);
        p->group_count = 1;
    }
    p->expires_at = 1795000000;
    return p;
}

static event_t make_event(uint64_t seq, const char *resource, const char *previous,
                          event_change_t type, hstr_t *readers, size_t reader_count)
{
    event_t event;
    memset(&event, 0, sizeof(event));
    event.seq = seq;
    event.type = type;
    event.resource = hstr_from_cstr(resource);
    ck_assert_int_eq(path_parse(resource, strlen(resource), &event.resource_path, NULL), 0);
    if (previous != NULL) {
        event.has_previous = true;
        event.previous = hstr_from_cstr(previous);
        ck_assert_int_eq(path_parse(previous, strlen(previous), &event.previous_path, NULL), 0);
    }
    event.readers = readers;
    event.reader_count = reader_count;
    return event;
}

static sub_t *add(subs_t *subs, const char *resource, unsigned mask, const auth_principal_t *owner)
{
    sub_t *sub = NULL;
    struct herr err;
    ck_assert_int_eq(subs_add(subs, resource, strlen(resource), mask, owner, NULL, &sub, &err), 0);
    ck_assert_ptr_nonnull(sub);
    return sub;
}

START_TEST(test_subs_reader_check_filters_matches)
{
    subs_t *subs = subs_new();
    auth_principal_t *anna = principal("anna", "bau");
    auth_principal_t *otto = principal("otto", "finanz");
    sub_t *anna_sub = add(subs, "/dms/bau", EVENT_CHANGE_ALL, anna);
    sub_t *otto_sub = add(subs, "/dms/bau", EVENT_CHANGE_ALL, otto);
    struct seen seen = {0};

    hstr_t group_bau[] = {HSTR_LIT("group:bau")};
    event_t event = make_event(1, "/dms/bau/doc", NULL, EVENT_UPDATED, group_bau, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 1);
    ck_assert(has(&seen, anna_sub) && !has(&seen, otto_sub));

    hstr_t everyone[] = {HSTR_LIT("*")};
    seen.count = 0;
    event = make_event(2, "/dms/bau/doc", NULL, EVENT_UPDATED, everyone, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 2);

    hstr_t user_otto[] = {HSTR_LIT("user:ott"), HSTR_LIT("user:otto")};
    seen.count = 0;
    event = make_event(3, "/dms/bau/doc", NULL, EVENT_UPDATED, user_otto, 2);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 1);
    ck_assert(has(&seen, otto_sub));

    seen.count = 0;
    event = make_event(4, "/dms/bau/doc", NULL, EVENT_UPDATED, NULL, 0);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 0);

    subs_remove(subs, anna_sub);
    subs_remove(subs, otto_sub);
    ck_assert_uint_eq(subs_count(subs), 0);
    subs_free(subs);
    auth_principal_free(anna);
    auth_principal_free(otto);
}
END_TEST

START_TEST(test_subs_move_reports_each_subscription_once)
{
    subs_t *subs = subs_new();
    auth_principal_t *anna = principal("anna", NULL);
    sub_t *old_folder = add(subs, "/files/a", EVENT_CHANGE_ALL, anna);
    sub_t *new_folder = add(subs, "/files/b", EVENT_CHANGE_ALL, anna);
    sub_t *both = add(subs, "/files", EVENT_CHANGE_ALL, anna);
    sub_t *elsewhere = add(subs, "/files/c", EVENT_CHANGE_ALL, anna);
    hstr_t readers[] = {HSTR_LIT("user:anna")};
    struct seen seen = {0};

    event_t event = make_event(7, "/files/b/x", "/files/a/x", EVENT_UPDATED, readers, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 3);
    ck_assert(has(&seen, old_folder) && has(&seen, new_folder) && has(&seen, both));
    ck_assert(!has(&seen, elsewhere));

    subs_remove(subs, old_folder);
    subs_remove(subs, new_folder);
    subs_remove(subs, both);
    subs_remove(subs, elsewhere);
    subs_free(subs);
    auth_principal_free(anna);
}
END_TEST

START_TEST(test_subs_add_refuses_bad_input_and_changes_nothing)
{
    subs_t *subs = subs_new();
    auth_principal_t *anna = principal("anna", NULL);
    sub_t *sub = (sub_t *)0x1;
    struct herr err;
    ck_assert_int_eq(subs_add(subs, "dms/x", 5, EVENT_CHANGE_ALL, anna, NULL, &sub, &err),
                     HEROLD_E_BAD_PATH);
    ck_assert_ptr_null(sub);
    ck_assert_int_eq(subs_add(subs, "/dms/x", 6, 0, anna, NULL, &sub, &err),
                     HEROLD_E_BAD_CHANGE_TYPE);
    ck_assert_int_eq(subs_add(subs, "/dms/x", 6, 1u << 3, anna, NULL, &sub, &err),
                     HEROLD_E_BAD_CHANGE_TYPE);
    ck_assert_uint_eq(subs_count(subs), 0);

    /* The record keeps its own copy of the pattern, and ids are distinct UUIDs. */
    char text[] = "/dms/*/x";
    sub_t *a = add(subs, text, EVENT_CREATED, anna);
    memset(text, 'z', sizeof(text) - 1);
    sub_t *b = add(subs, "/dms/*/x", EVENT_CREATED, anna);
    ck_assert_str_eq(subs_resource(a), "/dms/*/x");
    ck_assert_str_ne(SUBS_ID_TEXT(a), SUBS_ID_TEXT(b));
    char a_id[SUBS_ID_BYTES + 1];
    subs_id_format(a, a_id);
    ck_assert_uint_eq(strlen(a_id), SUBS_ID_BYTES);
    ck_assert_int_eq(a_id[14], '4');
    ck_assert(strchr("89ab", a_id[19]) != NULL);
    ck_assert(subs_id_is(a, a_id));
    ck_assert(!subs_id_is(b, a_id));
    /* Only the canonical text form names it. */
    char upper[SUBS_ID_BYTES + 1];
    for (size_t i = 0; i <= SUBS_ID_BYTES; i++) {
        upper[i] = (char)(a_id[i] >= 'a' && a_id[i] <= 'f' ? a_id[i] - 32 : a_id[i]);
    }
    ck_assert(strcmp(upper, a_id) == 0 || !subs_id_is(a, upper));
    a_id[SUBS_ID_BYTES - 1] = '\0';
    ck_assert(!subs_id_is(a, a_id));
    ck_assert(!subs_id_is(a, ""));
    char expiration[SUBS_EXPIRATION_BYTES + 1];
    subs_format_expiration(a, expiration);
    ck_assert_str_eq(expiration, "2026-11-18T11:06:40.0000000Z");
    /* A connection subscription expires with its owner's token, formatted each time. */
    ck_assert_int_eq(subs_expires_at(a), anna->expires_at);
    anna->expires_at++;
    subs_format_expiration(a, expiration);
    ck_assert_str_eq(expiration, "2026-11-18T11:06:41.0000000Z");
    anna->expires_at--;
    ck_assert_str_eq(expiration, "2026-11-18T11:06:41.0000000Z");
    subs_format_expiration(a, expiration);
    ck_assert_str_eq(expiration, "2026-11-18T11:06:40.0000000Z");

    hstr_t readers[] = {HSTR_LIT("user:anna")};
    struct seen seen = {0};
    event_t event = make_event(9, "/dms/bau/x/y", NULL, EVENT_DELETED, readers, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 0); /* mask */
    event = make_event(10, "/dms/bau/x/y", NULL, EVENT_CREATED, readers, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 2);
    subs_remove(subs, a);
    subs_remove(subs, b);
    subs_free(subs);
    auth_principal_free(anna);
}
END_TEST

/* The largest creation order among the persistent subscriptions other than except. */
static uint64_t made_order_max(subs_t *subs, const sub_t *except)
{
    uint64_t max = 0;
    for (sub_t *s = subs_first_persistent(subs); s != NULL; s = subs_next_persistent(s)) {
        if (s != except && s->rest->created_order > max) {
            max = s->rest->created_order;
        }
    }
    return max;
}

START_TEST(test_subs_persistent_round_trip_keeps_everything_and_creation_order)
{
    subs_t *subs = subs_new();
    struct herr err;
    sub_t *made[3];
    for (int i = 0; i < 3; i++) {
        auth_principal_t *owner = principal("anna", "bau");
        sub_rest_t rest;
        memset(&rest, 0, sizeof(rest));
        rest.resource_given = strdup("me/folder");
        rest.notification_url = strdup(i == 0 ? "websocket:" : "https://svc.example/hook");
        rest.client_state = strdup("state \"quoted\"");
        rest.client_state_json = strdup("\"state \\\"quoted\\\"\"");
        rest.include_resource_data = i == 2;
        memset(rest.secret, 0xa0 + i, sizeof(rest.secret));
        ck_assert_int_eq(subs_add_persistent(subs, i == 0 ? SUB_WEBSOCKET : SUB_WEBHOOK,
                                             "/users/anna/folder", 18, EVENT_CREATED, &owner, &rest,
                                             1795000000 + i, &made[i], &err),
                         0);
    }
    char *docs[3];
    char ids[3][SUBS_ID_BYTES + 1];
    for (int i = 0; i < 3; i++) {
        docs[i] = subs_to_json(made[i]);
        subs_id_format(made[i], ids[i]);
    }
    subs_free(subs);

    /* Restore in reverse: the list comes back in creation order anyway. */
    subs = subs_new();
    for (int i = 2; i >= 0; i--) {
        sub_t *back;
        ck_assert_int_eq(subs_restore(subs, ids[i], docs[i], &back, &err), 0);
        ck_assert_str_eq(SUBS_ID_TEXT(back), ids[i]);
        ck_assert_int_eq(back->kind, i == 0 ? SUB_WEBSOCKET : SUB_WEBHOOK);
        ck_assert_str_eq(subs_resource(back), "/users/anna/folder");
        ck_assert_str_eq(back->rest->resource_given, "me/folder");
        ck_assert_str_eq(back->rest->client_state, "state \"quoted\"");
        ck_assert_int_eq(subs_expires_at(back), 1795000000 + i);
        ck_assert_uint_eq(back->change_mask, EVENT_CREATED);
        ck_assert_str_eq(back->owner->user, "anna");
        ck_assert_uint_eq(back->owner->group_count, 1);
        ck_assert_str_eq(back->owner->groups[0], "bau");
        ck_assert(back->rest->include_resource_data == (i == 2));
        ck_assert_int_eq(back->rest->secret[0], 0xa0 + i);
        ck_assert_int_eq(back->rest->secret[31], 0xa0 + i);
        ck_assert_ptr_eq(subs_find(subs, ids[i]), back);
    }
    int i = 0;
    for (sub_t *s = subs_first_persistent(subs); s != NULL; s = subs_next_persistent(s), i++) {
        ck_assert_str_eq(SUBS_ID_TEXT(s), ids[i]);
    }
    ck_assert_int_eq(i, 3);
    /* And so does anna's own list. */
    i = 0;
    for (sub_t *s = subs_first_owned(subs, "anna"); s != NULL; s = subs_next_owned(s), i++) {
        ck_assert_str_eq(SUBS_ID_TEXT(s), ids[i]);
    }
    ck_assert_int_eq(i, 3);
    ck_assert_uint_eq(subs_count_owned(subs, "anna"), 3);
    /* A new subscription after a restore comes after the restored ones. */
    auth_principal_t *owner = principal("anna", NULL);
    sub_rest_t rest;
    memset(&rest, 0, sizeof(rest));
    rest.resource_given = strdup("/x");
    rest.notification_url = strdup("websocket:");
    sub_t *fresh;
    ck_assert_int_eq(subs_add_persistent(subs, SUB_WEBSOCKET, "/x", 2, EVENT_CREATED, &owner, &rest,
                                         1795000000, &fresh, &err),
                     0);
    ck_assert_uint_gt(fresh->rest->created_order, made_order_max(subs, fresh));
    ck_assert_int_eq(subs_restore(subs, "bad", "{\"version\":1}", &fresh, &err), HEROLD_E_CONFIG);
    ck_assert_int_eq(subs_restore(subs, "bad", "not json", &fresh, &err), HEROLD_E_CONFIG);
    for (int k = 0; k < 3; k++) {
        free(docs[k]);
    }
    subs_free(subs);
}
END_TEST

/* ---- pattern groups, against a brute-force oracle ----
 *
 * subs keeps one index entry per pattern and, from GROUP_BY_PRINCIPAL_MIN (16) members,
 * files a group's subscriptions under their owners' principals (dropped again below 8).
 * These tests see none of that: they drive the public API and compare every match with
 * the rule itself (change mask, path_matches on the resource or the previous path,
 * auth_may_read on the owner) over all live subscriptions. Failures are collected and
 * reported once per test, with the inputs of the first. */

#define MODEL_MAX 256

struct model_entry {
    sub_t *sub;
    const char *pattern;           /* as given to subs_add */
    unsigned mask;                 /* as given */
    const auth_principal_t *owner; /* as given (the latest subs_set_owner for persistent) */
    bool is_persistent;
};

struct model {
    subs_t *subs;
    struct model_entry live[MODEL_MAX];
    size_t count;
    uint64_t seq;
    size_t outside;   /* live subscriptions added without the model (never to be matched) */
    const char *step; /* what the test was doing, for the report */
    int failures;
    char first[2048];
};

static void model_init(struct model *m)
{
    memset(m, 0, sizeof(*m));
    m->subs = subs_new();
}

static auth_principal_t *principal_groups(const char *user, const char *const *groups, size_t count)
{
    return unit_principal(user, groups, count);
}

/* Adds a subscription; persistent ones get a copy of owner. Returns its model slot, or -1
 * (counted as a failure) when subs refuses it. */
static int model_add(struct model *m, const char *pattern, unsigned mask,
                     const auth_principal_t *owner, bool is_persistent)
{
    sub_t *sub = NULL;
    struct herr err;
    int rc;
    const auth_principal_t *kept = owner;
    if (is_persistent) {
        auth_principal_t *copy = auth_principal_dup(owner);
        kept = copy;
        sub_rest_t rest;
        memset(&rest, 0, sizeof(rest));
        rest.notification_url = strdup("websocket:");
        rest.resource_given = strdup(pattern);
        rc = subs_add_persistent(m->subs, SUB_WEBSOCKET, pattern, strlen(pattern), mask, &copy,
                                 &rest, 1795000000, &sub, &err);
        if (rc != 0) {
            auth_principal_free(copy);
            subs_rest_clear(&rest);
        }
    } else {
        rc = subs_add(m->subs, pattern, strlen(pattern), mask, owner, NULL, &sub, &err);
    }
    if (rc != 0 || m->count == MODEL_MAX) {
        if (m->failures++ == 0) {
            snprintf(m->first, sizeof(m->first), "%s: adding %s failed (%d)", m->step, pattern, rc);
        }
        return -1;
    }
    m->live[m->count] = (struct model_entry){sub, pattern, mask, kept, is_persistent};
    return (int)m->count++;
}

static void model_remove(struct model *m, size_t slot)
{
    subs_remove(m->subs, m->live[slot].sub);
    m->live[slot] = m->live[--m->count];
}

/* Gives a persistent subscription a new owner (a copy of owner). */
static void model_set_owner(struct model *m, size_t slot, const auth_principal_t *owner)
{
    auth_principal_t *copy = auth_principal_dup(owner);
    m->live[slot].owner = copy;
    subs_set_owner(m->subs, m->live[slot].sub, &copy);
    if (copy != NULL && m->failures++ == 0) {
        snprintf(m->first, sizeof(m->first), "%s: subs_set_owner kept the owner", m->step);
    }
}

static bool expected_to_concern(const struct model_entry *e, const event_t *event)
{
    path_t pattern;
    if ((e->mask & (unsigned)event->type) == 0 ||
        path_parse_pattern(e->pattern, strlen(e->pattern), &pattern, NULL) != 0) {
        return false;
    }
    bool is_on_path = path_matches(&pattern, &event->resource_path) ||
                      (event->has_previous && path_matches(&pattern, &event->previous_path));
    return is_on_path && auth_may_read(e->owner, event->readers, event->reader_count);
}

struct collected {
    sub_t *subs[MODEL_MAX * 2];
    size_t count;
};

static bool collect(sub_t *sub, void *ctx)
{
    struct collected *c = ctx;
    if (c->count < sizeof(c->subs) / sizeof(c->subs[0])) {
        c->subs[c->count] = sub;
    }
    c->count++;
    return true;
}

static size_t describe_owner(char *out, size_t cap, const auth_principal_t *owner)
{
    int n = snprintf(out, cap, "%s[", owner->user);
    for (size_t i = 0; i < owner->group_count && (size_t)n < cap; i++) {
        n += snprintf(out + n, cap - (size_t)n, "%s%s", i ? "," : "", owner->groups[i]);
    }
    if ((size_t)n < cap) {
        n += snprintf(out + n, cap - (size_t)n, "]");
    }
    return (size_t)n < cap ? (size_t)n : cap;
}

static void report(struct model *m, const event_t *event, const struct model_entry *e,
                   const char *what, size_t got, size_t expected)
{
    if (m->failures++ > 0) {
        return;
    }
    char *out = m->first;
    size_t cap = sizeof(m->first);
    size_t n = (size_t)snprintf(out, cap, "%s (%zu live): event %s%s%s type %d readers [", m->step,
                                m->count, event->resource.p, event->has_previous ? " from " : "",
                                event->has_previous ? event->previous.p : "", event->type);
    for (size_t i = 0; i < event->reader_count && n < cap; i++) {
        n += (size_t)snprintf(out + n, cap - n, "%s%.*s", i ? " " : "", (int)event->readers[i].len,
                              event->readers[i].p);
    }
    if (n < cap) {
        n += (size_t)snprintf(out + n, cap - n, "]: %s (got %zu, expected %zu)", what, got,
                              expected);
    }
    if (e != NULL && n < cap) {
        n += (size_t)snprintf(out + n, cap - n, "; subscription %s mask %u %s owner ", e->pattern,
                              e->mask, e->is_persistent ? "persistent" : "connection");
        describe_owner(out + n, cap - n, e->owner);
    }
}

static const struct model_entry *model_find(const struct model *m, const sub_t *sub)
{
    for (size_t i = 0; i < m->count; i++) {
        if (m->live[i].sub == sub) {
            return &m->live[i];
        }
    }
    return NULL;
}

/* Matches event and compares with the oracle; also subs_sub_concerns for every live one. */
static void model_check(struct model *m, event_t *event)
{
    static struct collected got;
    bool expected[MODEL_MAX];
    size_t expected_count = 0;
    for (size_t i = 0; i < m->count; i++) {
        expected[i] = expected_to_concern(&m->live[i], event);
        expected_count += expected[i];
    }
    event->seq = ++m->seq;
    got.count = 0;
    size_t calls = subs_match_event(m->subs, event, collect, &got);
    if (calls != got.count || got.count > sizeof(got.subs) / sizeof(got.subs[0])) {
        report(m, event, NULL, "return value differs from the calls", calls, got.count);
        return;
    }
    unsigned char seen[MODEL_MAX] = {0};
    for (size_t k = 0; k < got.count; k++) {
        const struct model_entry *e = model_find(m, got.subs[k]);
        if (e == NULL) {
            report(m, event, NULL, "delivered to a subscription that is not live", got.count,
                   expected_count);
            return;
        }
        size_t i = (size_t)(e - m->live);
        if (seen[i]++ > 0) {
            report(m, event, e, "delivered twice", got.count, expected_count);
        } else if (!expected[i]) {
            report(m, event, e, "delivered, but it does not concern it", got.count, expected_count);
        }
    }
    for (size_t i = 0; i < m->count; i++) {
        if (expected[i] && seen[i] == 0) {
            report(m, event, &m->live[i], "not delivered", got.count, expected_count);
        }
        if (subs_sub_concerns(m->live[i].sub, event) != expected[i]) {
            report(m, event, &m->live[i], "subs_sub_concerns disagrees", got.count, expected_count);
        }
    }
    if (subs_count(m->subs) != m->count + m->outside) {
        report(m, event, NULL, "subs_count differs", subs_count(m->subs), m->count + m->outside);
    }
}

/* Fills event from static strings; false when a path does not parse. */
static bool probe_event(event_t *event, const char *resource, const char *previous,
                        event_change_t type, const char *const *names, size_t count,
                        hstr_t *readers)
{
    memset(event, 0, sizeof(*event));
    event->type = type;
    event->resource = hstr_from_cstr(resource);
    if (path_parse(resource, strlen(resource), &event->resource_path, NULL) != 0) {
        return false;
    }
    if (previous != NULL) {
        event->has_previous = true;
        event->previous = hstr_from_cstr(previous);
        if (path_parse(previous, strlen(previous), &event->previous_path, NULL) != 0) {
            return false;
        }
    }
    for (size_t i = 0; i < count; i++) {
        readers[i] = hstr_from_cstr(names[i]);
    }
    event->readers = readers;
    event->reader_count = count;
    return true;
}

/* ---- the threshold walk: one large pattern group growing and shrinking ---- */

#define WALK_OWNERS 40
#define READER_SETS 11
#define WALK_PATHS 7

static const char *const *walk_readers(size_t i, size_t *count)
{
    static const char *const r0[] = {"user:u3"};
    static const char *const r1[] = {"group:g1"};
    static const char *const r2[] = {"user:u5", "group:g1"}; /* u5 is in g1: named twice */
    static const char *const r3[] = {"*"};
    static const char *const r4[] = {"user:nobody", "*"};
    static const char *const r5[] = {"user:nobody", "group:none"};
    static const char *const r6[] = {"group:g0", "group:tri", "user:u7"};
    static const char *const r7[] = {"user:u1", "user:u1", "group:g1", "group:g1"};
    static const char *const r8[] = {NULL};
    static const char *const r9[] = {"user:u0"}; /* several owners share user u0 */
    static const char *const r10[] = {"group:g3", "group:g2", "group:g1", "group:g0"};
    static const char *const *const sets[READER_SETS] = {r0, r1, r2, r3, r4, r5,
                                                         r6, r7, r8, r9, r10};
    static const size_t counts[READER_SETS] = {1, 1, 2, 1, 2, 2, 3, 4, 0, 1, 4};
    *count = counts[i];
    return sets[i];
}

static const char *const walk_paths[WALK_PATHS][2] = {
    {"/dms/bau/doc", NULL},
    {"/dms/bau", NULL},
    {"/dms/other/doc", NULL},
    {"/dms/bau/a", "/dms/bau/b"}, /* a move inside the group: both paths match it */
    {"/dms/other/x", "/dms/bau/x"},
    {"/dms/bau/doc", "/dms/other/doc"},
    {"/elsewhere/x", NULL},
};

static const event_change_t walk_types[] = {EVENT_CREATED, EVENT_UPDATED, EVENT_DELETED};

struct battery {
    event_t events[READER_SETS * WALK_PATHS * 3];
    hstr_t readers[READER_SETS * WALK_PATHS * 3][4];
    size_t count;
};

static bool battery_build(struct battery *b)
{
    b->count = 0;
    for (size_t r = 0; r < READER_SETS; r++) {
        size_t reader_count;
        const char *const *names = walk_readers(r, &reader_count);
        for (size_t p = 0; p < WALK_PATHS; p++) {
            for (size_t t = 0; t < 3; t++) {
                if (!probe_event(&b->events[b->count], walk_paths[p][0], walk_paths[p][1],
                                 walk_types[t], names, reader_count, b->readers[b->count])) {
                    return false;
                }
                b->count++;
            }
        }
    }
    return true;
}

static void battery_check(struct model *m, struct battery *b, const char *step)
{
    m->step = step;
    for (size_t i = 0; i < b->count; i++) {
        model_check(m, &b->events[i]);
    }
}

/* Owner i of the walk: user u<i> (u0 again for every tenth), group g<i%4>, and `tri` for
 * every third; 7 and 15 repeat the owner before them, so some share one owner set. */
static auth_principal_t *walk_owner(int i)
{
    char user[16];
    char group[16];
    int base = (i == 7 || i == 15) ? i - 1 : i;
    snprintf(user, sizeof(user), "u%d", base % 10 == 9 ? 0 : base);
    snprintf(group, sizeof(group), "g%d", base % 4);
    const char *groups[] = {group, "tri"};
    return principal_groups(user, groups, base % 3 == 0 ? 2 : 1);
}

static unsigned walk_mask(int i)
{
    static const unsigned masks[] = {EVENT_CHANGE_ALL, EVENT_CREATED | EVENT_DELETED,
                                     EVENT_UPDATED};
    return masks[i % 3];
}

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;

static uint32_t rnd(uint32_t bound)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % bound);
}

/* The walk's owners that move: persistent subscription slots get one of these. */
static auth_principal_t *moved_owner(int i)
{
    char user[16];
    snprintf(user, sizeof(user), "u%d", i);
    const char *groups[] = {"moved", i % 2 ? "g2" : "g3"};
    return principal_groups(user, groups, 2);
}

START_TEST(test_subs_group_delivers_exactly_across_list_thresholds)
{
    static struct model m;
    static struct battery b;
    ck_assert(battery_build(&b));
    model_init(&m);
    auth_principal_t *owners[WALK_OWNERS];
    for (int i = 0; i < WALK_OWNERS; i++) {
        owners[i] = walk_owner(i);
    }
    auth_principal_t *moved = moved_owner(3);
    /* Neighbours: a parent pattern, a wildcard sibling and a child, in small groups. */
    model_add(&m, "/dms", EVENT_CHANGE_ALL, owners[1], false);
    model_add(&m, "/dms/*/doc", EVENT_UPDATED | EVENT_CREATED, owners[2], true);
    model_add(&m, "/dms/bau/doc/x", EVENT_CHANGE_ALL, owners[3], false);
    const size_t neighbours = m.count;
    char step[64];

    /* Up to 40 (crossing 16), every fourth persistent. */
    for (int i = 0; i < WALK_OWNERS; i++) {
        model_add(&m, "/dms/bau", walk_mask(i), owners[i], i % 4 == 3);
        snprintf(step, sizeof(step), "growing to %d", i + 1);
        battery_check(&m, &b, step);
    }
    /* A persistent member changes owner in the full group. */
    for (size_t i = neighbours; i < m.count; i++) {
        if (m.live[i].is_persistent) {
            model_set_owner(&m, i, moved);
            break;
        }
    }
    battery_check(&m, &b, "after subs_set_owner at 40");

    /* Down to 7 in a scattered order (crossing 8: the lists go). */
    while (m.count - neighbours > 7) {
        model_remove(&m, neighbours + rnd((uint32_t)(m.count - neighbours)));
        snprintf(step, sizeof(step), "shrinking to %zu", m.count - neighbours);
        battery_check(&m, &b, step);
    }
    /* Back up to 17 (the lists come back at 16), with an owner change at 12. */
    for (int i = 0; m.count - neighbours < 17; i++) {
        model_add(&m, "/dms/bau", walk_mask(i + 1), owners[(i * 7) % WALK_OWNERS], i % 3 == 0);
        if (m.count - neighbours == 12) {
            for (size_t k = m.count; k-- > neighbours;) {
                if (m.live[k].is_persistent) {
                    model_set_owner(&m, k, owners[(k * 3) % WALK_OWNERS]);
                    break;
                }
            }
        }
        snprintf(step, sizeof(step), "regrowing to %zu", m.count - neighbours);
        battery_check(&m, &b, step);
    }
    /* And everything away. */
    while (m.count > 0) {
        model_remove(&m, rnd((uint32_t)m.count));
        snprintf(step, sizeof(step), "emptying to %zu", m.count);
        battery_check(&m, &b, step);
    }
    ck_assert_msg(m.failures == 0, "%d failures; first: %s", m.failures, m.first);
    ck_assert_uint_eq(subs_count(m.subs), 0);
    subs_free(m.subs);
    for (int i = 0; i < WALK_OWNERS; i++) {
        auth_principal_free(owners[i]);
    }
    auth_principal_free(moved);
}
END_TEST

/* Exactly 1, 15, 16, 17 and 40 members, each a fresh subs: the counts either side of the
 * list threshold, reached without the history of the walk. */
START_TEST(test_subs_group_sizes_at_the_threshold)
{
    static const int sizes[] = {1, 15, 16, 17, 40};
    static struct model m;
    static struct battery b;
    ck_assert(battery_build(&b));
    auth_principal_t *owners[WALK_OWNERS];
    for (int i = 0; i < WALK_OWNERS; i++) {
        owners[i] = walk_owner(i);
    }
    int failures = 0;
    char first[2048] = "";
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        model_init(&m);
        char step[32];
        snprintf(step, sizeof(step), "size %d", sizes[s]);
        for (int i = 0; i < sizes[s]; i++) {
            model_add(&m, "/dms/bau", walk_mask(i), owners[i], i % 2 == 1);
        }
        battery_check(&m, &b, step);
        if (m.failures > 0 && failures++ == 0) {
            memcpy(first, m.first, sizeof(first));
        }
        while (m.count > 0) {
            model_remove(&m, m.count - 1);
        }
        failures += subs_count(m.subs) != 0;
        subs_free(m.subs);
    }
    ck_assert_msg(failures == 0, "%d sizes failed; first: %s", failures, first);
    for (int i = 0; i < WALK_OWNERS; i++) {
        auth_principal_free(owners[i]);
    }
}
END_TEST

/* A persistent subscription in a group of 20 (filed by principal): after subs_set_owner
 * its old groups reach it no more, its new ones do, and its user still does. */
START_TEST(test_subs_set_owner_refiles_in_large_group)
{
    subs_t *subs = subs_new();
    auth_principal_t *others[19];
    for (int i = 0; i < 19; i++) {
        char user[16];
        snprintf(user, sizeof(user), "o%d", i);
        others[i] = principal(user, "crowd");
    }
    struct herr err;
    sub_t *target = NULL;
    auth_principal_t *owner = principal("anna", "old");
    sub_rest_t rest;
    memset(&rest, 0, sizeof(rest));
    rest.notification_url = strdup("websocket:");
    rest.resource_given = strdup("/dms/bau");
    ck_assert_int_eq(subs_add_persistent(subs, SUB_WEBSOCKET, "/dms/bau", 8, EVENT_CHANGE_ALL,
                                         &owner, &rest, 1795000000, &target, &err),
                     0);
    ck_assert_ptr_null(owner);
    sub_t *crowd[19];
    for (int i = 0; i < 19; i++) {
        crowd[i] = add(subs, "/dms/bau", EVENT_CHANGE_ALL, others[i]);
    }
    hstr_t old_group[] = {HSTR_LIT("group:old")};
    hstr_t new_group[] = {HSTR_LIT("group:new")};
    hstr_t user_anna[] = {HSTR_LIT("user:anna")};
    hstr_t crowd_group[] = {HSTR_LIT("group:crowd")};
    struct seen seen = {0};
    uint64_t seq = 1;

    event_t event = make_event(seq++, "/dms/bau/x", NULL, EVENT_UPDATED, old_group, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 1);
    ck_assert_ptr_eq(seen.subs[0], target);
    seen.count = 0;
    event = make_event(seq++, "/dms/bau/x", NULL, EVENT_UPDATED, new_group, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 0);

    auth_principal_t *replacement = principal("anna", "new");
    subs_set_owner(subs, target, &replacement);
    ck_assert_ptr_null(replacement);
    event = make_event(seq++, "/dms/bau/x", NULL, EVENT_UPDATED, old_group, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 0);
    event = make_event(seq++, "/dms/bau/x", NULL, EVENT_UPDATED, new_group, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 1);
    ck_assert_ptr_eq(seen.subs[0], target);
    ck_assert(subs_sub_concerns(target, &event));
    seen.count = 0;
    event = make_event(seq++, "/dms/bau/x", NULL, EVENT_UPDATED, user_anna, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 1);
    ck_assert_ptr_eq(seen.subs[0], target);

    /* Into the crowd: now one of 20 for group:crowd; then a new user, out of it again. */
    replacement = principal("anna", "crowd");
    subs_set_owner(subs, target, &replacement);
    static struct collected all;
    all.count = 0;
    event = make_event(seq++, "/dms/bau/x", NULL, EVENT_UPDATED, crowd_group, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, collect, &all), 20);
    ck_assert_uint_eq(all.count, 20);
    replacement = principal("bert", NULL);
    subs_set_owner(subs, target, &replacement);
    all.count = 0;
    event = make_event(seq++, "/dms/bau/x", NULL, EVENT_UPDATED, crowd_group, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, collect, &all), 19);
    seen.count = 0;
    event = make_event(seq++, "/dms/bau/x", NULL, EVENT_UPDATED, user_anna, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 0);
    hstr_t user_bert[] = {HSTR_LIT("user:bert")};
    seen.count = 0;
    event = make_event(seq++, "/dms/bau/x", NULL, EVENT_UPDATED, user_bert, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, record, &seen), 1);
    ck_assert_ptr_eq(seen.subs[0], target);

    for (int i = 0; i < 19; i++) {
        subs_remove(subs, crowd[i]);
        auth_principal_free(others[i]);
    }
    subs_remove(subs, target);
    ck_assert_uint_eq(subs_count(subs), 0);
    subs_free(subs);
}
END_TEST

/* Principal ids that collide in a group's table of lists: 800 users hold a subscription
 * elsewhere, and the group's members are every 32nd of them, so their ids share their low
 * bits and form one long probe run; lists leave that run one by one as members go. */
#define SPREAD_USERS 800
#define SPREAD_STRIDE 32
#define SPREAD_MEMBERS 24

START_TEST(test_subs_group_lists_survive_colliding_principals)
{
    static struct model m;
    model_init(&m);
    static auth_principal_t *users[SPREAD_USERS];
    static sub_t *elsewhere[SPREAD_USERS];
    static char names[SPREAD_USERS][16];
    for (int k = 0; k < SPREAD_USERS; k++) {
        snprintf(names[k], sizeof(names[k]), "c%d", k);
        users[k] = principal(names[k], NULL);
        struct herr err;
        ck_assert_int_eq(
            subs_add(m.subs, "/other", 6, EVENT_CHANGE_ALL, users[k], NULL, &elsewhere[k], &err),
            0);
    }
    m.outside = SPREAD_USERS;
    char step[64];
    char reader_text[SPREAD_MEMBERS + 2][24];
    const char *reader_names[SPREAD_MEMBERS + 2];
    hstr_t readers[SPREAD_MEMBERS + 2];
    for (int j = 0; j < SPREAD_MEMBERS; j++) {
        snprintf(reader_text[j], sizeof(reader_text[j]), "user:c%d", j * SPREAD_STRIDE);
        reader_names[j] = reader_text[j];
    }
    reader_names[SPREAD_MEMBERS] = "user:c1"; /* holds nothing in the group */
    reader_names[SPREAD_MEMBERS + 1] = "*";

    /* Every member alone, all members together, a non-member, everyone. */
    for (int phase = 0; phase < 2; phase++) {
        for (int n = 0; n < SPREAD_MEMBERS; n++) {
            if (phase == 0) {
                model_add(&m, "/dms/bau", EVENT_CHANGE_ALL, users[n * SPREAD_STRIDE], n % 5 == 4);
                snprintf(step, sizeof(step), "growing to %d", n + 1);
            } else {
                model_remove(&m, rnd((uint32_t)m.count));
                snprintf(step, sizeof(step), "shrinking to %zu", m.count);
            }
            m.step = step;
            event_t event;
            for (int j = 0; j < SPREAD_MEMBERS + 1; j++) {
                m.failures += !probe_event(&event, "/dms/bau/x", NULL, EVENT_UPDATED,
                                           &reader_names[j], 1, readers);
                model_check(&m, &event);
            }
            m.failures += !probe_event(&event, "/dms/bau/x", "/dms/bau/y", EVENT_UPDATED,
                                       reader_names, SPREAD_MEMBERS + 1, readers);
            model_check(&m, &event);
            m.failures += !probe_event(&event, "/dms/bau/x", NULL, EVENT_DELETED,
                                       &reader_names[SPREAD_MEMBERS], 2, readers);
            model_check(&m, &event);
        }
    }
    ck_assert_msg(m.failures == 0, "%d failures; first: %s", m.failures, m.first);
    ck_assert_uint_eq(subs_count(m.subs), SPREAD_USERS);
    for (int k = 0; k < SPREAD_USERS; k++) {
        subs_remove(m.subs, elsewhere[k]);
        auth_principal_free(users[k]);
    }
    ck_assert_uint_eq(subs_count(m.subs), 0);
    subs_free(m.subs);
}
END_TEST

/* ---- randomised: interleaved adds, removes and owner changes over small pools ---- */

static const char *const prop_patterns[] = {"/a", "/a/b", "/a/*", "/a/b/c", "/x"};
static const char *const prop_resources[] = {"/a",     "/a/b", "/a/b/c", "/a/q",
                                             "/a/q/c", "/x/y", "/y"};
static const char *const prop_readers[] = {
    "user:u0",  "user:u1",  "user:u2",  "user:u3",  "user:u4",  "user:u5",  "user:g0",
    "group:g0", "group:g1", "group:g2", "group:g3", "group:u1", "group:zz", "user:zz"};
#define PROP_OWNERS 10
#define PROP_STEPS 2400
#define PROP_PHASE 300
#define PROP_EVENTS_PER_STEP 2
#define PROP_LIVE_MAX 150

static auth_principal_t *prop_owner(uint32_t i)
{
    /* Users repeat (u0..u5 over ten owners), groups repeat inside one owner now and then. */
    static const char *const group_pool[] = {"g0", "g1", "g2", "g3", "u1"};
    char user[16];
    snprintf(user, sizeof(user), "u%u", i % 6);
    const char *groups[4];
    size_t count = i % 4;
    for (size_t g = 0; g < count; g++) {
        groups[g] = group_pool[(i * 3 + g * (i % 3)) % 5];
    }
    return principal_groups(user, groups, count);
}

static size_t pattern_index(const char *pattern)
{
    for (size_t i = 0; i < sizeof(prop_patterns) / sizeof(prop_patterns[0]); i++) {
        if (prop_patterns[i] == pattern) {
            return i;
        }
    }
    return 0;
}

START_TEST(test_subs_group_random_changes_match_oracle)
{
    static struct model m;
    model_init(&m);
    rng_state = 0x853c49e6748fea9bULL;
    auth_principal_t *owners[PROP_OWNERS];
    for (uint32_t i = 0; i < PROP_OWNERS; i++) {
        owners[i] = prop_owner(i);
    }
    enum { PATTERNS = sizeof(prop_patterns) / sizeof(prop_patterns[0]) };
    size_t per_pattern[PATTERNS] = {0};
    bool was_large[PATTERNS] = {0};
    int lists_dropped = 0; /* a group went from 16 or more to 7 or fewer */
    char step[64];

    for (int t = 0; t < PROP_STEPS; t++) {
        bool is_growing = (t / PROP_PHASE) % 2 == 0;
        uint32_t roll = rnd(100);
        snprintf(step, sizeof(step), "step %d", t);
        m.step = step;
        if (roll < 10) {
            /* A persistent subscription changes owner, if there is one. */
            size_t start = rnd((uint32_t)m.count + 1);
            for (size_t k = 0; k < m.count; k++) {
                size_t slot = (start + k) % m.count;
                if (m.live[slot].is_persistent) {
                    model_set_owner(&m, slot, owners[rnd(PROP_OWNERS)]);
                    break;
                }
            }
        } else if (m.count < PROP_LIVE_MAX && (m.count == 0 || roll < (is_growing ? 75 : 35))) {
            const char *pattern = prop_patterns[rnd(PATTERNS)];
            unsigned mask = 1 + rnd(EVENT_CHANGE_ALL);
            if (model_add(&m, pattern, mask, owners[rnd(PROP_OWNERS)], rnd(3) == 0) >= 0) {
                size_t p = pattern_index(pattern);
                was_large[p] = was_large[p] || ++per_pattern[p] >= 16;
            }
        } else if (m.count > 0) {
            size_t slot = rnd((uint32_t)m.count);
            size_t p = pattern_index(m.live[slot].pattern);
            model_remove(&m, slot);
            if (--per_pattern[p] < 8 && was_large[p]) {
                was_large[p] = false;
                lists_dropped++;
            }
        }
        for (int e = 0; e < PROP_EVENTS_PER_STEP; e++) {
            static const event_change_t types[] = {EVENT_CREATED, EVENT_UPDATED, EVENT_DELETED};
            const char *names[5];
            hstr_t readers[5];
            size_t count = rnd(6);
            for (size_t i = 0; i < count; i++) {
                names[i] = rnd(25) == 0 ? "*" : prop_readers[rnd(14)];
            }
            const char *previous = rnd(3) == 0 ? prop_resources[rnd(7)] : NULL;
            event_t event;
            if (!probe_event(&event, prop_resources[rnd(7)], previous, types[rnd(3)], names, count,
                             readers)) {
                m.failures++;
                continue;
            }
            model_check(&m, &event);
        }
    }
    ck_assert_msg(m.failures == 0, "%d failures; first: %s", m.failures, m.first);
    /* The walk must have used the principal lists, and dropped them again. */
    ck_assert_int_ge(lists_dropped, 2);

    /* Remove the connection subscriptions; subs_free takes the persistent rest. */
    size_t persistent = 0;
    for (size_t i = m.count; i-- > 0;) {
        if (m.live[i].is_persistent) {
            persistent++;
        } else {
            model_remove(&m, i);
        }
    }
    ck_assert_uint_eq(subs_count(m.subs), persistent);
    ck_assert_uint_gt(persistent, 0);
    subs_free(m.subs);
    for (uint32_t i = 0; i < PROP_OWNERS; i++) {
        auth_principal_free(owners[i]);
    }
}
END_TEST

static bool stop_at_first(sub_t *sub, void *ctx)
{
    (void)sub;
    (*(size_t *)ctx)++;
    return false;
}

static bool count_all(sub_t *sub, void *ctx)
{
    (void)sub;
    (*(size_t *)ctx)++;
    return true;
}

/* A callback that says stop ends the match in a large group, and the next event is whole. */
START_TEST(test_subs_group_match_stops_when_asked)
{
    subs_t *subs = subs_new();
    auth_principal_t *owners[20];
    sub_t *subs_made[20];
    for (int i = 0; i < 20; i++) {
        char user[16];
        snprintf(user, sizeof(user), "s%d", i);
        owners[i] = principal(user, "team");
        subs_made[i] = add(subs, "/dms/bau", EVENT_CHANGE_ALL, owners[i]);
    }
    hstr_t team[] = {HSTR_LIT("group:team")};
    hstr_t everyone[] = {HSTR_LIT("*")};
    size_t calls = 0;
    event_t event = make_event(1, "/dms/bau/x", "/dms/bau/y", EVENT_DELETED, team, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, stop_at_first, &calls), 1);
    ck_assert_uint_eq(calls, 1);
    calls = 0;
    event = make_event(2, "/dms/bau/x", "/dms/bau/y", EVENT_DELETED, team, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, count_all, &calls), 20);
    ck_assert_uint_eq(calls, 20);
    calls = 0;
    event = make_event(3, "/dms/bau/x", NULL, EVENT_CREATED, everyone, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, stop_at_first, &calls), 1);
    calls = 0;
    event = make_event(4, "/dms/bau/x", NULL, EVENT_CREATED, everyone, 1);
    ck_assert_uint_eq(subs_match_event(subs, &event, count_all, &calls), 20);
    for (int i = 0; i < 20; i++) {
        subs_remove(subs, subs_made[i]);
        auth_principal_free(owners[i]);
    }
    ck_assert_uint_eq(subs_count(subs), 0);
    subs_free(subs);
}
END_TEST

/* ---- persistent subscriptions by expiration, and moved cursors ---- */

static sub_t *add_webhook(subs_t *subs, const char *user, int64_t expires_at)
{
    auth_principal_t *owner = principal(user, "bau");
    sub_rest_t rest;
    memset(&rest, 0, sizeof(rest));
    rest.notification_url = strdup("https://svc.example/hook");
    rest.resource_given = strdup("/dms/a");
    sub_t *sub = NULL;
    struct herr err;
    ck_assert_int_eq(subs_add_persistent(subs, SUB_WEBHOOK, "/dms/a", 6, EVENT_CHANGE_ALL, &owner,
                                         &rest, expires_at, &sub, &err),
                     0);
    return sub;
}

/* The test's own random numbers, the same on every run. */
static uint32_t next_roll(uint64_t *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*state >> 33);
}

/* subs_expiring_by against a walk of every persistent subscription, in creation order. */
static void expect_expiring(subs_t *subs, int64_t bound)
{
    size_t count;
    sub_t **due = subs_expiring_by(subs, bound, &count);
    size_t k = 0;
    for (sub_t *sub = subs_first_persistent(subs); sub != NULL; sub = subs_next_persistent(sub)) {
        if (subs_expires_at(sub) <= bound) {
            ck_assert_msg(k < count && due[k] == sub, "bound %lld: expiring subscription %zu",
                          (long long)bound, k);
            k++;
        }
    }
    ck_assert_uint_eq(count, k);
    free(due);
}

START_TEST(test_subs_expiring_by_finds_exactly_the_due_ones)
{
    /* Adds, renewals (earlier and later) and removals in random order; after each step the
     * heap answers as a walk of them all would. */
    subs_t *subs = subs_new();
    enum { N = 400 };
    sub_t *live[N];
    size_t live_count = 0;
    uint64_t state = 20261127;
    for (int step = 0; step < 3000; step++) {
        uint32_t roll = next_roll(&state);
        int64_t at = 1000 + (int64_t)(roll % 500);
        if (live_count < N && (live_count == 0 || roll % 3 == 0)) {
            live[live_count++] = add_webhook(subs, "anna", at);
        } else if (roll % 3 == 1) {
            subs_set_expiration(subs, live[roll % live_count], at);
        } else {
            size_t k = roll % live_count;
            subs_remove(subs, live[k]);
            live[k] = live[--live_count];
        }
        if (step % 50 == 0) {
            expect_expiring(subs, 999);
            expect_expiring(subs, 1000 + (int64_t)(roll % 520));
            expect_expiring(subs, 2000);
        }
    }
    ck_assert_uint_gt(live_count, 10);
    subs_free(subs);
}
END_TEST

/* Each user's list against a walk of every persistent subscription, in creation order. */
static void expect_owned(subs_t *subs, const char *user)
{
    const sub_t *mine = subs_first_owned(subs, user);
    size_t count = 0;
    for (sub_t *sub = subs_first_persistent(subs); sub != NULL; sub = subs_next_persistent(sub)) {
        if (strcmp(sub->owner->user, user) == 0) {
            ck_assert_msg(mine == sub, "%s: subscription %zu of the user's list", user, count);
            mine = subs_next_owned(mine);
            count++;
        }
    }
    ck_assert_ptr_null(mine);
    ck_assert_uint_eq(subs_count_owned(subs, user), count);
}

START_TEST(test_subs_owned_lists_follow_adds_owner_changes_and_removals)
{
    static const char *const users[] = {"u0", "u1", "u2", "u3"};
    subs_t *subs = subs_new();
    enum { N = 200 };
    sub_t *live[N];
    size_t live_count = 0;
    uint64_t state = 4711;
    for (int step = 0; step < 2000; step++) {
        uint32_t roll = next_roll(&state);
        const char *user = users[roll % 4];
        if (live_count < N && (live_count == 0 || roll % 4 < 2)) {
            live[live_count++] = add_webhook(subs, user, 5000);
        } else if (roll % 4 == 2) {
            auth_principal_t *owner = principal(user, NULL);
            subs_set_owner(subs, live[(roll >> 4) % live_count], &owner);
        } else {
            size_t k = (roll >> 4) % live_count;
            subs_remove(subs, live[k]);
            live[k] = live[--live_count];
        }
        if (step % 40 == 0) {
            for (size_t u = 0; u < 4; u++) {
                expect_owned(subs, users[u]);
            }
            ck_assert_uint_eq(subs_count_owned(subs, "nobody"), 0);
            ck_assert_ptr_null(subs_first_owned(subs, "nobody"));
        }
    }
    ck_assert_uint_gt(live_count, 10);
    subs_free(subs);
}
END_TEST

/* Every live persistent subscription is found by its id and by its user (one user each),
 * and none removed, while the tables of ids and of users double over a while (ptable.h)
 * from 1,024 slots to 2,048 and 4,096. Ids are kept as text: a removed subscription's
 * record is reused. */
struct made_sub {
    sub_t *sub; /* NULL once removed */
    char id[SUBS_ID_BYTES + 1];
    char user[16];
};

static void expect_found(subs_t *subs, const struct made_sub *made, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        /* Not an assertion per subscription: Check writes each passing one down. */
        if (subs_find(subs, made[i].id) != made[i].sub) {
            ck_abort_msg("subscription %zu (%s) %s by id", i, made[i].id,
                         made[i].sub != NULL ? "not found" : "found");
        }
        if (subs_first_owned(subs, made[i].user) != made[i].sub ||
            subs_count_owned(subs, made[i].user) != (made[i].sub != NULL ? 1 : 0)) {
            ck_abort_msg("subscription %zu %s by its user %s", i,
                         made[i].sub != NULL ? "not found" : "found", made[i].user);
        }
    }
}

START_TEST(test_subs_found_by_id_and_user_while_their_tables_double)
{
    enum { N = 2400 }; /* 1,600 live at the end */
    subs_t *subs = subs_new();
    struct made_sub *made = calloc(N, sizeof(*made));
    size_t checked_mid_move = 0;
    for (size_t i = 0; i < N; i++) {
        snprintf(made[i].user, sizeof(made[i].user), "u%zu", i);
        made[i].sub = add_webhook(subs, made[i].user, 5000);
        subs_id_format(made[i].sub, made[i].id);
        if (i % 3 == 2) { /* removals, some from the moving tables */
            subs_remove(subs, made[i - 1].sub);
            made[i - 1].sub = NULL;
        }
        if (subs_maintain(subs, 0) > 0) {
            expect_found(subs, made, i + 1);
            checked_mid_move++;
        }
    }
    ck_assert_uint_gt(checked_mid_move, 100);
    while (subs_maintain(subs, 50) > 0) {
        expect_found(subs, made, N);
    }
    expect_found(subs, made, N);
    ck_assert_ptr_null(subs_find(subs, "00000000-0000-4000-8000-000000000000"));
    subs_free(subs);
    free(made);
}
END_TEST

/* Restored in a random order (the embedded store hands them over in a hash table's), with
 * removals and owner changes before anything reads the lists, and new subscriptions
 * after: every list is in creation order when read, holding exactly what is left. */
START_TEST(test_subs_restored_in_any_order_are_listed_in_creation_order)
{
    enum { N = 600, USERS = 7 };
    static const char *const users[USERS] = {"u0", "u1", "u2", "u3", "u4", "u5", "u6"};
    subs_t *subs = subs_new();
    char *docs[N];
    char ids[N][SUBS_ID_BYTES + 1];
    for (size_t i = 0; i < N; i++) {
        sub_t *sub = add_webhook(subs, users[i % USERS], 5000 + (int64_t)i);
        docs[i] = subs_to_json(sub);
        subs_id_format(sub, ids[i]);
    }
    subs_free(subs);

    size_t order[N];
    for (size_t i = 0; i < N; i++) {
        order[i] = i;
    }
    uint64_t state = 77;
    for (size_t i = N - 1; i > 0; i--) {
        size_t j = next_roll(&state) % (i + 1);
        size_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    subs = subs_new();
    sub_t *back[N];
    struct herr err;
    for (size_t k = 0; k < N; k++) {
        ck_assert_int_eq(subs_restore(subs, ids[order[k]], docs[order[k]], &back[order[k]], &err),
                         0);
        if (k % 5 == 4) { /* one restored earlier goes */
            size_t gone = order[k - 2];
            subs_remove(subs, back[gone]);
            back[gone] = NULL;
        }
    }
    for (size_t i = 3; i < N; i += 50) { /* and some change hands */
        if (back[i] != NULL) {
            auth_principal_t *owner = principal(users[(i + 1) % USERS], NULL);
            subs_set_owner(subs, back[i], &owner);
        }
    }
    sub_t *newer = add_webhook(subs, "u0", 9000);

    /* Each user's list read first, then the list of all: either read sorts them. */
    size_t live = 1;
    for (size_t i = 0; i < N; i++) {
        live += back[i] != NULL;
    }
    size_t owned_total = 0;
    for (size_t u = 0; u < USERS; u++) {
        uint64_t last = 0;
        size_t count = 0;
        for (sub_t *sub = subs_first_owned(subs, users[u]); sub != NULL;
             sub = subs_next_owned(sub)) {
            ck_assert_str_eq(sub->owner->user, users[u]);
            ck_assert_uint_gt(sub->rest->created_order, last);
            last = sub->rest->created_order;
            count++;
        }
        ck_assert_uint_eq(count, subs_count_owned(subs, users[u]));
        owned_total += count;
    }
    ck_assert_uint_eq(owned_total, live);
    size_t listed = 0;
    uint64_t last = 0;
    const sub_t *last_listed = NULL;
    for (sub_t *sub = subs_first_persistent(subs); sub != NULL; sub = subs_next_persistent(sub)) {
        ck_assert_uint_gt(sub->rest->created_order, last);
        last = sub->rest->created_order;
        last_listed = sub;
        listed++;
    }
    ck_assert_ptr_eq(last_listed, newer);
    ck_assert_uint_eq(listed, live);
    for (size_t i = 0; i < N; i++) {
        free(docs[i]);
    }
    subs_free(subs);
}
END_TEST

START_TEST(test_subs_moved_cursors_are_taken_once)
{
    subs_t *subs = subs_new();
    sub_t *a = add_webhook(subs, "anna", 5000);
    sub_t *b = add_webhook(subs, "anna", 5000);
    sub_t *c = add_webhook(subs, "anna", 5000);
    size_t count;
    sub_t **moved = subs_take_moved_cursors(subs, &count);
    ck_assert_uint_eq(count, 0);
    free(moved);
    subs_cursor_moved(subs, a);
    subs_cursor_moved(subs, b);
    subs_cursor_moved(subs, a); /* once is enough */
    subs_cursor_moved(subs, c);
    subs_remove(subs, b); /* a removed subscription leaves the list */
    moved = subs_take_moved_cursors(subs, &count);
    ck_assert_uint_eq(count, 2);
    ck_assert((moved[0] == a && moved[1] == c) || (moved[0] == c && moved[1] == a));
    ck_assert(!a->rest->is_cursor_dirty && !c->rest->is_cursor_dirty);
    free(moved);
    moved = subs_take_moved_cursors(subs, &count);
    ck_assert_uint_eq(count, 0);
    free(moved);
    subs_cursor_moved(subs, c); /* and can be marked again */
    moved = subs_take_moved_cursors(subs, &count);
    ck_assert_uint_eq(count, 1);
    ck_assert_ptr_eq(moved[0], c);
    free(moved);
    subs_free(subs);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("subs");
    TCase *tc = tcase_create("subs");
    tcase_add_test(tc, test_subs_reader_check_filters_matches);
    tcase_add_test(tc, test_subs_move_reports_each_subscription_once);
    tcase_add_test(tc, test_subs_add_refuses_bad_input_and_changes_nothing);
    tcase_add_test(tc, test_subs_persistent_round_trip_keeps_everything_and_creation_order);
    tcase_add_test(tc, test_subs_group_delivers_exactly_across_list_thresholds);
    tcase_add_test(tc, test_subs_group_sizes_at_the_threshold);
    tcase_add_test(tc, test_subs_set_owner_refiles_in_large_group);
    tcase_add_test(tc, test_subs_group_lists_survive_colliding_principals);
    tcase_add_test(tc, test_subs_group_random_changes_match_oracle);
    tcase_add_test(tc, test_subs_group_match_stops_when_asked);
    tcase_add_test(tc, test_subs_expiring_by_finds_exactly_the_due_ones);
    tcase_add_test(tc, test_subs_found_by_id_and_user_while_their_tables_double);
    tcase_add_test(tc, test_subs_restored_in_any_order_are_listed_in_creation_order);
    tcase_add_test(tc, test_subs_moved_cursors_are_taken_once);
    tcase_add_test(tc, test_subs_owned_lists_follow_adds_owner_changes_and_removals);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
