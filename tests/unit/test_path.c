/* Resource paths and patterns: every rule of path.h, just inside and just outside it. */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "path.h"

/* At most this much of a path is quoted in a failure message. */
#define QUOTE_MAX 60
#define QUOTE(len) ((int)((len) < QUOTE_MAX ? (len) : QUOTE_MAX))

/* Parses len bytes of text as a resource (or a pattern) and asserts success. */
static void expect_ok(const char *text, size_t len, bool is_pattern, path_t *out)
{
    struct herr err;
    herr_clear(&err);
    int rc =
        is_pattern ? path_parse_pattern(text, len, out, &err) : path_parse(text, len, out, &err);
    ck_assert_msg(rc == 0, "'%.*s' refused: %s", QUOTE(len), text, err.message);
}

/* Asserts that len bytes of text are refused with BAD_PATH and a message containing
 * needle. The message must not name the field: the caller adds that. */
static void expect_bad(const char *text, size_t len, bool is_pattern, const char *needle)
{
    struct herr err;
    path_t out;
    herr_clear(&err);
    int rc =
        is_pattern ? path_parse_pattern(text, len, &out, &err) : path_parse(text, len, &out, &err);
    ck_assert_msg(rc == HEROLD_E_BAD_PATH, "'%.*s' accepted (rc %d)", QUOTE(len), text, rc);
    ck_assert_int_eq(err.code, HEROLD_E_BAD_PATH);
    ck_assert_msg(strstr(err.message, needle) != NULL, "'%.*s': message '%s' lacks '%s'",
                  QUOTE(len), text, err.message, needle);
    ck_assert(strncmp(err.message, "resource", 8) != 0);
    ck_assert(strncmp(err.message, "pattern", 7) != 0);
}

static void expect_ok_str(const char *text, bool is_pattern, path_t *out)
{
    expect_ok(text, strlen(text), is_pattern, out);
}

static void expect_bad_str(const char *text, bool is_pattern, const char *needle)
{
    expect_bad(text, strlen(text), is_pattern, needle);
}

/* Both parsers apply the same rules apart from `*`. */
static void expect_bad_both(const char *text, size_t len, const char *needle)
{
    expect_bad(text, len, false, needle);
    expect_bad(text, len, true, needle);
}

static bool matches(const char *pattern, const char *resource)
{
    path_t p;
    path_t r;
    expect_ok_str(pattern, true, &p);
    expect_ok_str(resource, false, &r);
    return path_matches(&p, &r);
}

START_TEST(test_path_parse_splits_into_views)
{
    const char *text = "/dms/cabinets/bau/documents/4711";
    path_t p;
    expect_ok_str(text, false, &p);
    ck_assert_uint_eq(p.segment_count, 5);
    ck_assert(hstr_eq_cstr(p.segments[0], "dms"));
    ck_assert(hstr_eq_cstr(p.segments[1], "cabinets"));
    ck_assert(hstr_eq_cstr(p.segments[2], "bau"));
    ck_assert(hstr_eq_cstr(p.segments[3], "documents"));
    ck_assert(hstr_eq_cstr(p.segments[4], "4711"));
    /* Views into the text, not copies. */
    ck_assert_ptr_eq(p.segments[0].p, text + 1);
    ck_assert_ptr_eq(p.segments[4].p, text + strlen(text) - 4);

    expect_ok_str("/calendar/users/anna/events/x%20y", false, &p);
    ck_assert_uint_eq(p.segment_count, 5);
    ck_assert(hstr_eq_cstr(p.segments[4], "x%20y")); /* no percent-decoding */

    /* The length given is what counts: bytes after it are not read. */
    expect_ok("/a/b//", 4, false, &p);
    ck_assert_uint_eq(p.segment_count, 2);
}
END_TEST

START_TEST(test_path_length_limit)
{
    char buf[PATH_MAX_BYTES + 2];
    path_t p;

    memset(buf, 'a', sizeof(buf));
    buf[0] = '/';
    expect_ok(buf, PATH_MAX_BYTES, false, &p);
    ck_assert_uint_eq(p.segment_count, 1);
    ck_assert_uint_eq(p.segments[0].len, PATH_MAX_BYTES - 1);
    expect_ok(buf, PATH_MAX_BYTES, true, &p);
    expect_bad_both(buf, PATH_MAX_BYTES + 1, "longer than 1024 bytes");

    /* Same with several segments. */
    for (size_t i = 0; i < sizeof(buf); i += 100) {
        buf[i] = '/';
    }
    expect_ok(buf, PATH_MAX_BYTES, false, &p);
    ck_assert_uint_eq(p.segment_count, 11);
    expect_bad_both(buf, PATH_MAX_BYTES + 1, "longer than 1024 bytes");
}
END_TEST

/* "/s/s/.../s" with count segments, written into buf; returns the length. */
static size_t make_segments(char *buf, size_t count, const char *segment)
{
    size_t len = 0;
    for (size_t i = 0; i < count; i++) {
        len += (size_t)sprintf(buf + len, "/%s", segment);
    }
    return len;
}

START_TEST(test_path_segment_limit)
{
    char buf[256];
    path_t p;
    size_t len;

    len = make_segments(buf, PATH_MAX_SEGMENTS, "s");
    expect_ok(buf, len, false, &p);
    ck_assert_uint_eq(p.segment_count, PATH_MAX_SEGMENTS);
    expect_ok(buf, len, true, &p);

    len = make_segments(buf, PATH_MAX_SEGMENTS + 1, "s");
    expect_bad_both(buf, len, "segment 33 exceeds the 32-segment limit");

    len = make_segments(buf, PATH_MAX_SEGMENTS, "*");
    expect_ok(buf, len, true, &p);
    ck_assert_uint_eq(p.segment_count, PATH_MAX_SEGMENTS);
    len = make_segments(buf, PATH_MAX_SEGMENTS + 1, "*");
    expect_bad(buf, len, true, "segment 33 exceeds the 32-segment limit");
}
END_TEST

START_TEST(test_path_refuses_empty_segments)
{
    path_t p;
    expect_bad_both("/dms//a", 7, "empty segment at byte 5");
    expect_bad_both("//a", 3, "empty segment at byte 1");
    expect_bad_both("/a//", 4, "empty segment at byte 3");
    /* A trailing slash is an empty last segment. */
    expect_bad_both("/dms/a/", 7, "empty segment at byte 7");
    expect_ok_str("/dms/a", false, &p);
}
END_TEST

START_TEST(test_path_refuses_dot_segments)
{
    path_t p;
    expect_bad_both("/a/./b", 6, "'.' segment not allowed");
    expect_bad_both("/.", 2, "'.' segment not allowed");
    expect_bad_both("/a/../b", 7, "'..' segment not allowed");
    expect_bad_both("/..", 3, "'..' segment not allowed");
    expect_bad_both("/a/..", 5, "'..' segment not allowed");
    /* Only the exact segments are refused. */
    const char *ok[] = {"/a/.../b", "/.a", "/a.", "/..a", "/a..", "/a/.b./c", "/v1.0"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        expect_ok_str(ok[i], false, &p);
        expect_ok_str(ok[i], true, &p);
    }
}
END_TEST

START_TEST(test_path_requires_leading_slash_and_a_segment)
{
    path_t p;
    expect_bad_both("dms/a", 5, "'/'");
    expect_bad_both(" /a", 3, "'/'");
    expect_bad_both("", 0, "'/'");
    expect_bad_both(NULL, 0, "'/'");
    expect_bad_both("/", 1, "segment");
    expect_ok_str("/a", false, &p);
    ck_assert_uint_eq(p.segment_count, 1);
    ck_assert(hstr_eq_cstr(p.segments[0], "a"));
}
END_TEST

START_TEST(test_path_wildcard_only_in_patterns)
{
    path_t p;
    expect_bad_str("/a/*/b", false, "'*'");
    expect_bad_str("/*", false, "'*'");
    expect_bad_str("/a/*", false, "'*'");

    expect_ok_str("/a/*/b", true, &p);
    ck_assert_uint_eq(p.segment_count, 3);
    ck_assert(!path_segment_is_wildcard(p.segments[0]));
    ck_assert(path_segment_is_wildcard(p.segments[1]));
    ck_assert(!path_segment_is_wildcard(p.segments[2]));
    expect_ok_str("/*", true, &p);
    ck_assert(path_segment_is_wildcard(p.segments[0]));
}
END_TEST

START_TEST(test_path_star_inside_a_segment_is_literal)
{
    const char *literal[] = {"/*x", "/a*", "/**", "/a/b*c", "/x/*.txt"};
    path_t p;
    for (size_t i = 0; i < sizeof(literal) / sizeof(literal[0]); i++) {
        expect_ok_str(literal[i], false, &p);
        ck_assert(!path_segment_is_wildcard(path_last_segment(&p)));
        expect_ok_str(literal[i], true, &p);
        ck_assert(!path_segment_is_wildcard(path_last_segment(&p)));
    }
    /* As pattern segments they match only themselves. */
    ck_assert(matches("/a*", "/a*"));
    ck_assert(!matches("/a*", "/ab"));
    ck_assert(!matches("/*x", "/yx"));
    ck_assert(matches("/**", "/**/z"));
    ck_assert(!matches("/**", "/a/b"));
}
END_TEST

START_TEST(test_path_utf8_valid_multibyte)
{
    /* The edges of each sequence length and of the surrogate gap. */
    const char *valid[] = {
        "\xc2\x80",         /* U+0080, smallest two-byte */
        "\xc3\xa9",         /* U+00E9 */
        "\xdf\xbf",         /* U+07FF, largest two-byte */
        "\xe0\xa0\x80",     /* U+0800, smallest three-byte */
        "\xe2\x82\xac",     /* U+20AC */
        "\xed\x9f\xbf",     /* U+D7FF, just below the surrogates */
        "\xee\x80\x80",     /* U+E000, just above the surrogates */
        "\xef\xbf\xbf",     /* U+FFFF */
        "\xf0\x90\x80\x80", /* U+10000, smallest four-byte */
        "\xf0\x9f\x98\x80", /* U+1F600 */
        "\xf4\x8f\xbf\xbf", /* U+10FFFF, the last code point */
    };
    char buf[64];
    path_t p;

    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        size_t n = strlen(valid[i]);
        ck_assert_msg(path_utf8_is_valid(valid[i], n), "case %zu", i);
        int len = snprintf(buf, sizeof(buf), "/x%s/%sy%s", valid[i], valid[i], valid[i]);
        expect_ok(buf, (size_t)len, false, &p);
        ck_assert_uint_eq(p.segment_count, 2);
        ck_assert_uint_eq(p.segments[0].len, 1 + n);
        ck_assert_uint_eq(p.segments[1].len, 1 + 2 * n);
    }
    ck_assert(path_utf8_is_valid("", 0));
    ck_assert(path_utf8_is_valid("plain ascii", 11));
    ck_assert(path_utf8_is_valid("\0", 1)); /* NUL is UTF-8; paths refuse it as control */
}
END_TEST

struct bad_utf8 {
    const char *bytes;
    size_t len;
    const char *what;
};

static const struct bad_utf8 bad_utf8_cases[] = {
    {"\xc0\xaf", 2, "overlong two-byte '/'"},
    {"\xc1\xbf", 2, "overlong two-byte U+007F"},
    {"\xe0\x9f\xbf", 3, "overlong three-byte U+07FF"},
    {"\xe0\x80\xaf", 3, "overlong three-byte '/'"},
    {"\xf0\x8f\xbf\xbf", 4, "overlong four-byte U+FFFF"},
    {"\xed\xa0\x80", 3, "surrogate U+D800"},
    {"\xed\xbf\xbf", 3, "surrogate U+DFFF"},
    {"\xf4\x90\x80\x80", 4, "U+110000"},
    {"\xf5\x80\x80\x80", 4, "lead byte F5"},
    {"\xf8\x88\x80\x80\x80", 5, "five-byte form"},
    {"\xff", 1, "byte FF"},
    {"\xfe", 1, "byte FE"},
    {"\x80", 1, "lone continuation"},
    {"\xbf", 1, "lone continuation BF"},
    {"\xc3", 1, "truncated two-byte"},
    {"\xe2\x82", 2, "truncated three-byte"},
    {"\xf0\x9f\x98", 3, "truncated four-byte"},
    {"\xc3\x28", 2, "two-byte with ASCII second byte"},
    {"\xe2\x28\xa1", 3, "three-byte with bad second byte"},
    {"\xe2\x82\x28", 3, "three-byte with bad third byte"},
    {"\xf0\x9f\x98\x28", 4, "four-byte with bad last byte"},
    {"\xc3\xc3\xa9", 3, "lead byte followed by a lead byte"},
};

START_TEST(test_path_utf8_invalid)
{
    char buf[64];
    char needle[64];

    for (size_t i = 0; i < sizeof(bad_utf8_cases) / sizeof(bad_utf8_cases[0]); i++) {
        const struct bad_utf8 *c = &bad_utf8_cases[i];
        ck_assert_msg(!path_utf8_is_valid(c->bytes, c->len), "%s accepted", c->what);

        /* Embedded after valid text: "/ok/é" is 6 bytes, then "/ab" puts the bad bytes at
         * offset 9. */
        size_t len = 0;
        memcpy(buf, "/ok/\xc3\xa9/ab", 9);
        len = 9;
        memcpy(buf + len, c->bytes, c->len);
        len += c->len;
        ck_assert_msg(!path_utf8_is_valid(buf, len), "%s accepted in context", c->what);
        snprintf(needle, sizeof(needle), "invalid UTF-8 at byte %d", 9);
        expect_bad_both(buf, len, needle);

        /* Followed by a slash and more segments: a sequence cut short by '/' is still bad,
         * and the slash is not swallowed as a continuation byte. */
        memcpy(buf + len, "/z", 2);
        len += 2;
        expect_bad_both(buf, len, needle);
    }
}
END_TEST

/* The checker skips ASCII eight bytes at a time: every good and bad sequence at every
 * offset of a long ASCII run, so that it lands before, across and after each word. */
START_TEST(test_path_utf8_at_every_offset_of_ascii)
{
    const char *good[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\x7f"};
    char buf[64];
    for (size_t lead = 0; lead < 20; lead++) {
        for (size_t tail = 0; tail < 12; tail++) {
            memset(buf, 'a', sizeof(buf));
            for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                size_t n = strlen(good[i]);
                memcpy(buf + lead, good[i], n);
                ck_assert_msg(path_utf8_is_valid(buf, lead + n + tail), "good %zu at %zu+%zu", i,
                              lead, tail);
                memset(buf + lead, 'a', n);
            }
            for (size_t i = 0; i < sizeof(bad_utf8_cases) / sizeof(bad_utf8_cases[0]); i++) {
                const struct bad_utf8 *c = &bad_utf8_cases[i];
                memcpy(buf + lead, c->bytes, c->len);
                /* A truncated sequence is only bad when the text ends there. */
                size_t len = lead + c->len + (strncmp(c->what, "truncated", 9) == 0 ? 0 : tail);
                ck_assert_msg(!path_utf8_is_valid(buf, len), "%s accepted at %zu+%zu", c->what,
                              lead, tail);
                memset(buf + lead, 'a', c->len);
            }
            ck_assert(path_utf8_is_valid(buf, lead + tail));
        }
    }
}
END_TEST

START_TEST(test_path_refuses_control_characters)
{
    const unsigned char bad[] = {0x00, 0x01, 0x09, 0x0a, 0x0d, 0x1b, 0x1f, 0x7f};
    const unsigned char good[] = {0x20, 0x21, 0x7e};
    char buf[8];
    path_t p;

    for (size_t i = 0; i < sizeof(bad); i++) {
        memcpy(buf, "/ab/cd", 6);
        buf[4] = (char)bad[i];
        expect_bad_both(buf, 6, "control character at byte 4");
    }
    for (size_t i = 0; i < sizeof(good); i++) {
        memcpy(buf, "/ab/cd", 6);
        buf[4] = (char)good[i];
        expect_ok(buf, 6, false, &p);
        ck_assert_uint_eq(p.segment_count, 2);
    }
}
END_TEST

START_TEST(test_path_reports_first_problem)
{
    /* Problems are reported left to right. */
    expect_bad_both("/a//b\x01", 6, "empty segment at byte 3");
    expect_bad_both("/a\x01//b", 6, "control character at byte 2");
    expect_bad_both("/\xff/../", 7, "invalid UTF-8 at byte 1");
    /* The length limit comes before everything else. */
    char buf[PATH_MAX_BYTES + 1];
    memset(buf, '/', sizeof(buf));
    expect_bad_both(buf, sizeof(buf), "longer than 1024 bytes");
}
END_TEST

START_TEST(test_path_matches_rules)
{
    ck_assert(matches("/a/b", "/a/b"));   /* equal */
    ck_assert(matches("/a", "/a/b/c"));   /* beneath */
    ck_assert(matches("/a/b", "/a/b/c")); /* beneath */
    ck_assert(!matches("/a/b", "/a/c"));  /* sibling */
    ck_assert(!matches("/a/b", "/a/bc")); /* a segment prefix is not a prefix */
    ck_assert(!matches("/a/bc", "/a/b"));
    ck_assert(!matches("/a/b", "/a")); /* pattern longer than resource */
    ck_assert(!matches("/a/b/c", "/a/b"));
    ck_assert(matches("/a/*", "/a/x"));   /* wildcard */
    ck_assert(matches("/a/*", "/a/x/y")); /* wildcard, then beneath */
    ck_assert(!matches("/a/*", "/a"));    /* a wildcard needs a segment */
    ck_assert(matches("/*/b", "/x/b/c"));
    ck_assert(!matches("/*/b", "/x/c"));
    ck_assert(matches("/*/*", "/x/y"));
    ck_assert(!matches("/*/*/*", "/x/y"));
    ck_assert(!matches("/A", "/a"));       /* byte for byte, no case folding */
    ck_assert(!matches("/x%20y", "/x y")); /* no percent-decoding */
    ck_assert(matches("/caf\xc3\xa9", "/caf\xc3\xa9/menu"));
}
END_TEST

START_TEST(test_path_last_segment)
{
    path_t p;
    expect_ok_str("/dms/documents/4711", false, &p);
    ck_assert(hstr_eq_cstr(path_last_segment(&p), "4711"));
    expect_ok_str("/a", false, &p);
    ck_assert(hstr_eq_cstr(path_last_segment(&p), "a"));
    p.segment_count = 0;
    ck_assert_uint_eq(path_last_segment(&p).len, 0);
}
END_TEST

static Suite *path_suite(void)
{
    Suite *s = suite_create("path");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_path_parse_splits_into_views);
    tcase_add_test(tc, test_path_length_limit);
    tcase_add_test(tc, test_path_segment_limit);
    tcase_add_test(tc, test_path_refuses_empty_segments);
    tcase_add_test(tc, test_path_refuses_dot_segments);
    tcase_add_test(tc, test_path_requires_leading_slash_and_a_segment);
    tcase_add_test(tc, test_path_wildcard_only_in_patterns);
    tcase_add_test(tc, test_path_star_inside_a_segment_is_literal);
    tcase_add_test(tc, test_path_utf8_valid_multibyte);
    tcase_add_test(tc, test_path_utf8_invalid);
    tcase_add_test(tc, test_path_utf8_at_every_offset_of_ascii);
    tcase_add_test(tc, test_path_refuses_control_characters);
    tcase_add_test(tc, test_path_reports_first_problem);
    tcase_add_test(tc, test_path_matches_rules);
    tcase_add_test(tc, test_path_last_segment);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(path_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failures ? 1 : 0;
}
