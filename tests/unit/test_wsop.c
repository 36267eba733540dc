/* WebSocket client messages (wsop.h): every op's shape, and each way a message can be
 * wrong, with the error it is answered with and whether its ref is kept for the answer. */

#include <check.h>
#include <string.h>

#include "event.h"
#include "unit.h"
#include "wsop.h"

struct wsop_case {
    const char *text;
    int code; /* 0: parses */
    const char *ref;
};

START_TEST(test_wsop_cases)
{
    static const struct wsop_case cases[] = {
        {"{\"op\":\"ping\"}", 0, NULL},
        {"{\"op\":\"ping\",\"ref\":null}", 0, NULL},
        {"{\"op\":\"ping\",\"ref\":\"r\"}", 0, "r"},
        {"{\"op\":\"subscribe\",\"ref\":\"s\",\"resource\":\"/a\"}", 0, "s"},
        {"{\"op\":\"subscribe\",\"resource\":\"/a\",\"changeType\":\"deleted\"}", 0, NULL},
        {"{\"op\":\"subscribe\",\"ref\":\"s\"}", HEROLD_E_BAD_REQUEST, "s"},
        {"{\"op\":\"subscribe\",\"resource\":7}", HEROLD_E_BAD_REQUEST, NULL},
        {"{\"op\":\"subscribe\",\"resource\":\"/a\",\"changeType\":1}", HEROLD_E_BAD_REQUEST, NULL},
        {"{\"op\":\"subscribe\",\"ref\":\"c\",\"resource\":\"/a\",\"changeType\":\"moved\"}",
         HEROLD_E_BAD_CHANGE_TYPE, "c"},
        {"{\"op\":\"unsubscribe\",\"subscriptionId\":\"x\"}", 0, NULL},
        {"{\"op\":\"unsubscribe\",\"ref\":\"u\"}", HEROLD_E_BAD_REQUEST, "u"},
        {"{\"op\":\"resume\"}", 0, NULL},
        {"{\"op\":\"resume\",\"cursor\":null}", 0, NULL},
        {"{\"op\":\"resume\",\"cursor\":\"4711\"}", 0, NULL},
        {"{\"op\":\"resume\",\"cursor\":4711}", HEROLD_E_BAD_REQUEST, NULL},
        {"{\"op\":\"resume\",\"cursor\":\"-1\"}", HEROLD_E_BAD_REQUEST, NULL},
        {"{\"op\":\"auth\",\"token\":\"t\"}", 0, NULL},
        {"{\"op\":\"auth\",\"ref\":\"a\",\"token\":null}", HEROLD_E_BAD_REQUEST, "a"},
        {"{\"op\":\"dance\",\"ref\":\"d\"}", HEROLD_E_UNKNOWN_OP, "d"},
        {"{\"ref\":\"n\"}", HEROLD_E_BAD_REQUEST, "n"},
        {"{\"op\":7}", HEROLD_E_BAD_REQUEST, NULL},
        {"{\"op\":\"ping\",\"ref\":5}", HEROLD_E_BAD_REQUEST, NULL},
        {"{\"op\":\"ping\",\"op\":\"ping\"}", HEROLD_E_BAD_JSON, NULL},
        {"[\"op\"]", HEROLD_E_BAD_JSON, NULL},
        {"{\"op\":", HEROLD_E_BAD_JSON, NULL},
        {"", HEROLD_E_BAD_JSON, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        wsop_t op;
        struct herr err;
        int rc = wsop_parse(cases[i].text, strlen(cases[i].text), &op, &err);
        ck_assert_msg(rc == cases[i].code, "%s: %d, expected %d", cases[i].text, rc, cases[i].code);
        ck_assert_msg(cases[i].ref == NULL ? op.ref == NULL
                                           : op.ref != NULL && strcmp(op.ref, cases[i].ref) == 0,
                      "%s: ref", cases[i].text);
        wsop_clear(&op);
    }
}
END_TEST

START_TEST(test_wsop_fields_and_limits)
{
    wsop_t op;
    struct herr err;
    const char *text =
        "{\"op\":\"subscribe\",\"resource\":\"me/x\",\"changeType\":\"created,deleted\"}";
    ck_assert_int_eq(wsop_parse(text, strlen(text), &op, &err), 0);
    ck_assert_int_eq(op.kind, WSOP_SUBSCRIBE);
    ck_assert_str_eq(op.resource, "me/x");
    ck_assert_uint_eq(op.change_mask, EVENT_CREATED | EVENT_DELETED);
    wsop_clear(&op);
    text = "{\"op\":\"subscribe\",\"resource\":\"/x\"}";
    ck_assert_int_eq(wsop_parse(text, strlen(text), &op, &err), 0);
    ck_assert_uint_eq(op.change_mask, EVENT_CHANGE_ALL);
    wsop_clear(&op);
    text = "{\"op\":\"resume\",\"cursor\":\"4711\"}";
    ck_assert_int_eq(wsop_parse(text, strlen(text), &op, &err), 0);
    ck_assert(op.has_cursor);
    ck_assert_uint_eq(op.cursor, 4711);
    wsop_clear(&op);

    /* A ref of exactly the limit is kept; one byte more is refused and not echoed. */
    char msg[256];
    char ref[WSOP_MAX_REF_BYTES + 2];
    memset(ref, 'r', sizeof(ref) - 1);
    ref[WSOP_MAX_REF_BYTES] = '\0';
    snprintf(msg, sizeof(msg), "{\"op\":\"ping\",\"ref\":\"%s\"}", ref);
    ck_assert_int_eq(wsop_parse(msg, strlen(msg), &op, &err), 0);
    ck_assert_uint_eq(strlen(op.ref), WSOP_MAX_REF_BYTES);
    wsop_clear(&op);
    ref[WSOP_MAX_REF_BYTES] = 'r';
    ref[WSOP_MAX_REF_BYTES + 1] = '\0';
    snprintf(msg, sizeof(msg), "{\"op\":\"ping\",\"ref\":\"%s\"}", ref);
    ck_assert_int_eq(wsop_parse(msg, strlen(msg), &op, &err), HEROLD_E_BAD_REQUEST);
    ck_assert_ptr_null(op.ref);
    wsop_clear(&op);

    /* A string with a NUL inside is not taken: it would read differently in C. */
    text = "{\"op\":\"auth\",\"token\":\"a\\u0000b\"}";
    ck_assert_int_eq(wsop_parse(text, strlen(text), &op, &err), HEROLD_E_BAD_JSON);
    wsop_clear(&op);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("wsop");
    TCase *tc = tcase_create("wsop");
    tcase_add_test(tc, test_wsop_cases);
    tcase_add_test(tc, test_wsop_fields_and_limits);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
