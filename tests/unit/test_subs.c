/* Subscriptions: creation rules, the reader check after matching, moves reported once. */

#include <check.h>
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
    ck_assert_int_eq(
        subs_add(subs, resource, strlen(resource), mask, owner, NULL, 1795000000, &sub, &err), 0);
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
    ck_assert_int_eq(subs_add(subs, "dms/x", 5, EVENT_CHANGE_ALL, anna, NULL, 0, &sub, &err),
                     HEROLD_E_BAD_PATH);
    ck_assert_ptr_null(sub);
    ck_assert_int_eq(subs_add(subs, "/dms/x", 6, 0, anna, NULL, 0, &sub, &err),
                     HEROLD_E_BAD_CHANGE_TYPE);
    ck_assert_int_eq(subs_add(subs, "/dms/x", 6, 1u << 3, anna, NULL, 0, &sub, &err),
                     HEROLD_E_BAD_CHANGE_TYPE);
    ck_assert_uint_eq(subs_count(subs), 0);

    /* The record keeps its own copy of the pattern, and ids are distinct UUIDs. */
    char text[] = "/dms/*/x";
    sub_t *a = add(subs, text, EVENT_CREATED, anna);
    memset(text, 'z', sizeof(text) - 1);
    sub_t *b = add(subs, "/dms/*/x", EVENT_CREATED, anna);
    ck_assert_str_eq(a->resource, "/dms/*/x");
    ck_assert_str_ne(a->id, b->id);
    ck_assert_uint_eq(strlen(a->id), SUBS_ID_BYTES);
    ck_assert_int_eq(a->id[14], '4');
    ck_assert_str_eq(a->expiration, "2026-11-18T11:06:40.0000000Z");

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
        if (s != except && s->rest.created_order > max) {
            max = s->rest.created_order;
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
                                             "/users/anna/folder", 18, EVENT_CREATED, &owner,
                                             &rest, 1795000000 + i, &made[i], &err),
                         0);
    }
    char *docs[3];
    char ids[3][SUBS_ID_BYTES + 1];
    for (int i = 0; i < 3; i++) {
        docs[i] = subs_to_json(made[i]);
        strcpy(ids[i], made[i]->id);
    }
    subs_free(subs);

    /* Restore in reverse: the list comes back in creation order anyway. */
    subs = subs_new();
    for (int i = 2; i >= 0; i--) {
        sub_t *back;
        ck_assert_int_eq(subs_restore(subs, ids[i], docs[i], &back, &err), 0);
        ck_assert_str_eq(back->id, ids[i]);
        ck_assert_int_eq(back->kind, i == 0 ? SUB_WEBSOCKET : SUB_WEBHOOK);
        ck_assert_str_eq(back->resource, "/users/anna/folder");
        ck_assert_str_eq(back->rest.resource_given, "me/folder");
        ck_assert_str_eq(back->rest.client_state, "state \"quoted\"");
        ck_assert_int_eq(back->expires_at, 1795000000 + i);
        ck_assert_uint_eq(back->change_mask, EVENT_CREATED);
        ck_assert_str_eq(back->owner->user, "anna");
        ck_assert_uint_eq(back->owner->group_count, 1);
        ck_assert_str_eq(back->owner->groups[0], "bau");
        ck_assert(back->rest.include_resource_data == (i == 2));
        ck_assert_int_eq(back->rest.secret[0], 0xa0 + i);
        ck_assert_int_eq(back->rest.secret[31], 0xa0 + i);
        ck_assert_ptr_eq(subs_find(subs, ids[i]), back);
    }
    int i = 0;
    for (sub_t *s = subs_first_persistent(subs); s != NULL; s = subs_next_persistent(s), i++) {
        ck_assert_str_eq(s->id, ids[i]);
    }
    ck_assert_int_eq(i, 3);
    /* A new subscription after a restore comes after the restored ones. */
    auth_principal_t *owner = principal("anna", NULL);
    sub_rest_t rest;
    memset(&rest, 0, sizeof(rest));
    rest.resource_given = strdup("/x");
    rest.notification_url = strdup("websocket:");
    sub_t *fresh;
    ck_assert_int_eq(subs_add_persistent(subs, SUB_WEBSOCKET, "/x", 2, EVENT_CREATED, &owner,
                                         &rest, 1795000000, &fresh, &err),
                     0);
    ck_assert_uint_gt(fresh->rest.created_order, made_order_max(subs, fresh));
    ck_assert_int_eq(subs_restore(subs, "bad", "{\"version\":1}", &fresh, &err),
                     HEROLD_E_CONFIG);
    ck_assert_int_eq(subs_restore(subs, "bad", "not json", &fresh, &err), HEROLD_E_CONFIG);
    for (int k = 0; k < 3; k++) {
        free(docs[k]);
    }
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
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
