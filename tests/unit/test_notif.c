/* Notification items: the shared encoding, per-subscription composition, and times. */

#include <check.h>
#include <pthread.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "decimal.h"
#include "notif.h"
#include "unit.h"

static void make_event(event_t *event, const char *resource, const char *previous)
{
    memset(event, 0, sizeof(*event));
    event->seq = 42;
    event->type = EVENT_UPDATED;
    event->resource = hstr_from_cstr(resource);
    ck_assert_int_eq(path_parse(resource, strlen(resource), &event->resource_path, NULL), 0);
    if (previous != NULL) {
        event->has_previous = true;
        event->previous = hstr_from_cstr(previous);
        ck_assert_int_eq(path_parse(previous, strlen(previous), &event->previous_path, NULL), 0);
    }
    event->time_ms = 1795000000123LL;
}

static json_t *item_json_full(const notif_t *notif, const char *id, const char *expiration,
                              const char *client_state_json, bool include_resource_data)
{
    notif_item_head_t head = {id, expiration, client_state_json, include_resource_data};
    size_t len = notif_item_length(notif, &head);
    char *buf = malloc(len);
    ck_assert_uint_eq(notif_item_write(notif, &head, buf), len);
    json_error_t jerr;
    json_t *item = json_loadb(buf, len, 0, &jerr);
    ck_assert_msg(item != NULL, "item is not JSON: %s", jerr.text);
    free(buf);
    return item;
}

static json_t *item_json_with_state(const notif_t *notif, const char *id, const char *expiration,
                                    const char *client_state_json)
{
    return item_json_full(notif, id, expiration, client_state_json, false);
}

static json_t *item_json(const notif_t *notif, const char *id, const char *expiration)
{
    return item_json_with_state(notif, id, expiration, NULL);
}

START_TEST(test_notif_item_has_graph_fields)
{
    event_t event;
    make_event(&event, "/dms/cabinets/bau/documents/4711", NULL);
    event.kind = HSTR_LIT("document");
    event.tenant = HSTR_LIT("city");
    event.actor = HSTR_LIT("user:anna \"the clerk\"");
    notif_t *notif = notif_new(&event);
    ck_assert_uint_eq(notif->seq, 42);
    json_t *item = item_json(notif, "sub-1", "2026-11-27T10:00:00.0000000Z");

    ck_assert_str_eq(json_string_value(json_object_get(item, "subscriptionId")), "sub-1");
    ck_assert_str_eq(json_string_value(json_object_get(item, "id")), "sub-1-42");
    ck_assert_ptr_null(json_object_get(item, "clientState"));
    ck_assert_str_eq(json_string_value(json_object_get(item, "subscriptionExpirationDateTime")),
                     "2026-11-27T10:00:00.0000000Z");
    ck_assert_str_eq(json_string_value(json_object_get(item, "changeType")), "updated");
    ck_assert_str_eq(json_string_value(json_object_get(item, "resource")),
                     "/dms/cabinets/bau/documents/4711");
    ck_assert_str_eq(json_string_value(json_object_get(item, "tenantId")), "city");
    ck_assert_str_eq(json_string_value(json_object_get(item, "actor")), "user:anna \"the clerk\"");
    ck_assert_ptr_null(json_object_get(item, "previousResource"));
    json_t *data = json_object_get(item, "resourceData");
    ck_assert_str_eq(json_string_value(json_object_get(data, "@odata.type")), "#herold.document");
    ck_assert_str_eq(json_string_value(json_object_get(data, "@odata.id")),
                     "/dms/cabinets/bau/documents/4711");
    ck_assert_str_eq(json_string_value(json_object_get(data, "id")), "4711");
    json_decref(item);
    notif_release(notif);
}
END_TEST

START_TEST(test_notif_optional_fields_absent_and_default_type)
{
    event_t event;
    make_event(&event, "/files/share/a.txt", "/files/share/old.txt");
    notif_t *notif = notif_new(&event);
    json_t *item = item_json(notif, "s", "e");
    ck_assert_ptr_null(json_object_get(item, "tenantId"));
    ck_assert_ptr_null(json_object_get(item, "actor"));
    ck_assert_str_eq(json_string_value(json_object_get(item, "previousResource")),
                     "/files/share/old.txt");
    json_t *data = json_object_get(item, "resourceData");
    ck_assert_str_eq(json_string_value(json_object_get(data, "@odata.type")), "#herold.resource");
    ck_assert_str_eq(json_string_value(json_object_get(item, "eventTime")),
                     "2026-11-18T11:06:40.123Z");
    json_decref(item);
    notif_release(notif);
}
END_TEST

START_TEST(test_notif_client_state_is_spliced_in)
{
    event_t event;
    make_event(&event, "/a/b", NULL);
    notif_t *notif = notif_new(&event);
    json_t *item = item_json_with_state(notif, "s", "e", "\"secret \\\"state\\\"\"");
    ck_assert_str_eq(json_string_value(json_object_get(item, "clientState")), "secret \"state\"");
    ck_assert_str_eq(json_string_value(json_object_get(item, "resource")), "/a/b");
    json_decref(item);
    notif_release(notif);
}
END_TEST

START_TEST(test_notif_resource_data_only_for_subscriptions_that_ask)
{
    /* data = {"title": "Bauantrag", "size": 12, "id": "spoof", "tags": ["a", true]} */
    msgpack_sbuffer buf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&buf);
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "title", 5);
    msgpack_pack_str_with_body(&pk, "Bauantrag", 9);
    msgpack_pack_str_with_body(&pk, "size", 4);
    msgpack_pack_int(&pk, 12);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_str_with_body(&pk, "spoof", 5);
    msgpack_pack_str_with_body(&pk, "tags", 4);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_str_with_body(&pk, "a", 1);
    msgpack_pack_true(&pk);

    event_t event;
    make_event(&event, "/dms/doc/7", NULL);
    event.data = (hstr_t){buf.data, buf.size};
    notif_t *notif = notif_new(&event);

    json_t *plain = item_json(notif, "s", "e");
    json_t *data = json_object_get(plain, "resourceData");
    ck_assert_ptr_null(json_object_get(data, "title"));
    json_decref(plain);

    json_t *rich = item_json_full(notif, "s", "e", NULL, true);
    data = json_object_get(rich, "resourceData");
    ck_assert_str_eq(json_string_value(json_object_get(data, "title")), "Bauantrag");
    ck_assert_int_eq(json_integer_value(json_object_get(data, "size")), 12);
    ck_assert(json_is_true(json_array_get(json_object_get(data, "tags"), 1)));
    ck_assert_str_eq(json_string_value(json_object_get(data, "id")), "7"); /* not overridden */
    json_decref(rich);
    notif_release(notif);

    /* Without data, asking for it changes nothing. */
    make_event(&event, "/dms/doc/8", NULL);
    notif = notif_new(&event);
    rich = item_json_full(notif, "s", "e", NULL, true);
    ck_assert_ptr_null(atomic_load(&notif->rich));
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(rich, "resourceData"), "id")), "8");
    json_decref(rich);
    notif_release(notif);
    msgpack_sbuffer_destroy(&buf);
}
END_TEST

/* Strings are escaped as JSON requires: quotes, backslashes and every control character,
 * while UTF-8 passes through; a JSON parser reads back exactly the bytes of the event. */
START_TEST(test_notif_strings_survive_escaping)
{
    static const char actor[] = "a\"b\\c\x01\x1f\b\f\n\r\t/\x7f\xc3\xa4\xe2\x80\xa8z";
    static const char tenant[] = "\"";
    event_t event;
    make_event(&event, "/dms/\xc3\xa4rger/\"q\"", NULL);
    event.actor = hstr_from_cstr(actor);
    event.tenant = hstr_from_cstr(tenant);
    notif_t *notif = notif_new(&event);
    json_t *item = item_json(notif, "s", "e");
    ck_assert_str_eq(json_string_value(json_object_get(item, "actor")), actor);
    ck_assert_str_eq(json_string_value(json_object_get(item, "tenantId")), tenant);
    ck_assert_str_eq(json_string_value(json_object_get(item, "resource")),
                     "/dms/\xc3\xa4rger/\"q\"");
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(item, "resourceData"), "id")), "\"q\"");
    /* No raw control character may remain in the text. */
    for (size_t i = 0; i < notif->members_len; i++) {
        ck_assert_uint_ge((unsigned char)notif->members[i], 0x20);
    }
    json_decref(item);
    notif_release(notif);
}
END_TEST

/* Members longer than the stack buffer they are built in (a 1024-byte resource appears
 * three times) move to the heap intact. */
START_TEST(test_notif_long_members_survive)
{
    char resource[1025];
    resource[0] = '/';
    for (size_t i = 1; i < sizeof(resource) - 1; i++) {
        resource[i] = (i % 100 == 0) ? '/' : (char)('a' + i % 26);
    }
    resource[sizeof(resource) - 1] = '\0';
    event_t event;
    make_event(&event, resource, NULL);
    notif_t *notif = notif_new(&event);
    ck_assert_uint_gt(notif->members_len, 2048);
    json_t *item = item_json(notif, "s", "e");
    ck_assert_str_eq(json_string_value(json_object_get(item, "resource")), resource);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(item, "resourceData"), "@odata.id")),
        resource);
    json_decref(item);
    notif_release(notif);
}
END_TEST

START_TEST(test_notif_refcount_shares_one_payload)
{
    event_t event;
    make_event(&event, "/a/b", NULL);
    notif_t *notif = notif_new(&event);
    ck_assert_ptr_eq(notif_ref(notif), notif);
    ck_assert_int_eq(notif->refcount, 2);
    notif_release(notif);
    ck_assert_int_eq(notif->refcount, 1);
    notif_release(notif); /* frees; ASan reports a leak or double free otherwise */
    notif_release(NULL);
}
END_TEST

static void *release_elsewhere(void *notif)
{
    notif_release(notif); /* no pool on this thread: plain free */
    return NULL;
}

/* The service thread's references (notif_ref_local) hold one shared reference between
 * them, so the notif outlives whichever kind is dropped last. */
START_TEST(test_notif_local_references_hold_one_shared)
{
    event_t event;
    make_event(&event, "/a/b", NULL);
    notif_t *notif = notif_new_local(&event);
    ck_assert_int_eq(notif->refcount, 1);
    ck_assert_ptr_eq(notif_ref_local(notif), notif);
    ck_assert_ptr_eq(notif_ref_local(notif), notif);
    ck_assert_int_eq(notif->refcount, 1); /* no atomic operation for them */
    ck_assert_uint_eq(notif->local_refs, 3);
    notif_ref(notif); /* a webhook batch's */
    ck_assert_int_eq(notif->refcount, 2);
    notif_release_local(notif);
    notif_release_local(notif);
    notif_release_local(notif); /* the last local one drops the shared one they held */
    ck_assert_int_eq(notif->refcount, 1);
    ck_assert_str_eq(notif->seq_text, "42");
    notif_release(notif); /* frees; ASan reports a leak or use after free otherwise */

    /* The local references outlive a shared one dropped on another thread, and a local
     * reference taken again after all were dropped holds the notif again. */
    notif = notif_new(&event);
    notif_ref_local(notif);
    pthread_t thread;
    pthread_create(&thread, NULL, release_elsewhere, notif);
    pthread_join(thread, NULL);
    ck_assert_int_eq(notif->refcount, 1);
    ck_assert_str_eq(notif->seq_text, "42");
    notif_ref(notif);
    notif_release_local(notif);
    ck_assert_int_eq(notif->refcount, 1);
    notif_ref_local(notif);
    ck_assert_int_eq(notif->refcount, 2);
    notif_release(notif);
    notif_release_local(notif); /* frees */
    notif_release_local(NULL);
}
END_TEST

START_TEST(test_notif_pool_reuses_blocks_on_its_thread_only)
{
    event_t event;
    make_event(&event, "/a/b", NULL);
    notif_pool_begin();
    notif_t *first = notif_new(&event);
    ck_assert(first->is_pooled);
    notif_release(first);
    notif_t *second = notif_new(&event);
    ck_assert_ptr_eq(second, first); /* the released block came back */
    ck_assert_str_eq(second->seq_text, "42");
    /* Released on another thread: freed there, not kept (ASan sees the free). */
    pthread_t thread;
    pthread_create(&thread, NULL, release_elsewhere, second);
    pthread_join(thread, NULL);
    /* Larger than a block: malloc and free as before. */
    char data[NOTIF_POOL_BLOCK_BYTES];
    memset(data, 0x80, sizeof(data));
    event.data = (hstr_t){data, sizeof(data)};
    notif_t *large = notif_new(&event);
    ck_assert(!large->is_pooled);
    ck_assert_uint_eq(large->data_len, sizeof(data));
    notif_release(large);
    event.data = (hstr_t){NULL, 0};
    notif_t *kept = notif_new(&event);
    notif_release(kept);
    notif_pool_end(); /* frees what is kept: LeakSanitizer would report it otherwise */
    notif_t *unpooled = notif_new(&event);
    ck_assert(!unpooled->is_pooled);
    notif_release(unpooled);
}
END_TEST

START_TEST(test_notif_graph_time_format)
{
    char out[40];
    notif_format_graph_time(0, out, sizeof(out));
    ck_assert_str_eq(out, "1970-01-01T00:00:00.0000000Z");
    notif_format_graph_time(1795000000, out, sizeof(out));
    ck_assert_str_eq(out, "2026-11-18T11:06:40.0000000Z");
    ck_assert_uint_eq(strlen(out), 28);
    notif_format_graph_time(0, out, sizeof(out)); /* the cached second changes back */
    ck_assert_str_eq(out, "1970-01-01T00:00:00.0000000Z");
    notif_format_time_ms(1795000000007LL, out, sizeof(out));
    ck_assert_str_eq(out, "2026-11-18T11:06:40.007Z");
    /* The second is cached: the same second, the next, and back again. */
    notif_format_time_ms(1795000000999LL, out, sizeof(out));
    ck_assert_str_eq(out, "2026-11-18T11:06:40.999Z");
    notif_format_time_ms(1795000001000LL, out, sizeof(out));
    ck_assert_str_eq(out, "2026-11-18T11:06:41.000Z");
    notif_format_time_ms(1795000000500LL, out, sizeof(out));
    ck_assert_str_eq(out, "2026-11-18T11:06:40.500Z");
    notif_format_time_ms(1LL, out, sizeof(out));
    ck_assert_str_eq(out, "1970-01-01T00:00:00.001Z");
    notif_format_time_ms(-1LL, out, sizeof(out)); /* before the epoch: the second before */
    ck_assert_str_eq(out, "1969-12-31T23:59:59.999Z");
    /* A short buffer is cut and terminated, as snprintf would. */
    char short_out[22];
    notif_format_time_ms(1795000000007LL, short_out, sizeof(short_out));
    ck_assert_str_eq(short_out, "2026-11-18T11:06:40.0");
    notif_format_graph_time(1795000000, short_out, 5);
    ck_assert_str_eq(short_out, "2026");
}
END_TEST

START_TEST(test_decimal_u64)
{
    char out[21];
    ck_assert_uint_eq(decimal_u64(0, out), 1);
    ck_assert_str_eq(out, "0");
    ck_assert_uint_eq(decimal_u64(1234567890, out), 10);
    ck_assert_str_eq(out, "1234567890");
    ck_assert_uint_eq(decimal_u64(UINT64_MAX, out), 20);
    ck_assert_str_eq(out, "18446744073709551615");
}
END_TEST

/* The cursor rule shared by resume and the pull endpoint: decimal, 1..20 digits, at most
 * UINT64_MAX; anything else is refused. */
START_TEST(test_notif_cursor_parse_edges)
{
    uint64_t seq = 7;
    ck_assert(notif_cursor_parse("0", 1, &seq));
    ck_assert_uint_eq(seq, 0);
    ck_assert(notif_cursor_parse("42", 2, &seq));
    ck_assert_uint_eq(seq, 42);
    ck_assert(notif_cursor_parse("18446744073709551615", 20, &seq));
    ck_assert_uint_eq(seq, UINT64_MAX);
    const char *refused[] = {
        "", "-1", "+1", " 1", "1a", "18446744073709551616", "000000000000000000001"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        seq = 7;
        ck_assert_msg(!notif_cursor_parse(refused[i], strlen(refused[i]), &seq), "%s", refused[i]);
        ck_assert_uint_eq(seq, 7);
    }
    ck_assert(notif_cursor_parse("123", 2, &seq)); /* len bounds the text */
    ck_assert_uint_eq(seq, 12);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("notif");
    TCase *tc = tcase_create("notif");
    tcase_add_test(tc, test_notif_item_has_graph_fields);
    tcase_add_test(tc, test_notif_optional_fields_absent_and_default_type);
    tcase_add_test(tc, test_notif_client_state_is_spliced_in);
    tcase_add_test(tc, test_notif_resource_data_only_for_subscriptions_that_ask);
    tcase_add_test(tc, test_notif_strings_survive_escaping);
    tcase_add_test(tc, test_notif_long_members_survive);
    tcase_add_test(tc, test_notif_refcount_shares_one_payload);
    tcase_add_test(tc, test_notif_local_references_hold_one_shared);
    tcase_add_test(tc, test_notif_pool_reuses_blocks_on_its_thread_only);
    tcase_add_test(tc, test_notif_graph_time_format);
    tcase_add_test(tc, test_decimal_u64);
    tcase_add_test(tc, test_notif_cursor_parse_edges);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
