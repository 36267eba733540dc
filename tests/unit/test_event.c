/* The change event decoder: every rule of event.h crossed by one, and the fixture files.
 *
 * Messages are built with msgpack-c's packer from a valid baseline, changing one field at
 * a time, so each test shows the one rule it attacks. The fixture files (one per
 * malformation shape) are read from $HEROLD_FIXTURES/event, by default
 * tests/unit/fixtures/event, since tests run from the repository root. */

#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"

#ifndef EVENT_FIXTURE_DIR
#define EVENT_FIXTURE_DIR "tests/unit/fixtures"
#endif

/* ---- building messages ---- */

enum value_kind {
    V_OMIT, /* remove the field from the baseline */
    V_STR,
    V_BIN,
    V_UINT,
    V_INT,     /* msgpack_pack_int64: the smallest encoding */
    V_FIX_INT, /* always the 9-byte signed int64 encoding */
    V_NIL,
    V_TRUE,
    V_FLOAT,
    V_RAW, /* bytes copied verbatim as the value */
    V_STRS /* an array of NUL-terminated strings */
};

struct value {
    enum value_kind kind;
    const char *p;
    size_t len;
    uint64_t u;
    int64_t i;
    double f;
    const char *const *strs;
    size_t count;
};

struct entry {
    const char *key;
    struct value v;
};

#define S(lit) ((struct value){.kind = V_STR, .p = (lit), .len = sizeof(lit) - 1})
#define SN(ptr, n) ((struct value){.kind = V_STR, .p = (ptr), .len = (n)})
#define BIN(lit) ((struct value){.kind = V_BIN, .p = (lit), .len = sizeof(lit) - 1})
#define U(x) ((struct value){.kind = V_UINT, .u = (x)})
#define I(x) ((struct value){.kind = V_INT, .i = (x)})
#define FIXI(x) ((struct value){.kind = V_FIX_INT, .i = (x)})
#define F(x) ((struct value){.kind = V_FLOAT, .f = (x)})
#define NIL ((struct value){.kind = V_NIL})
#define TRUE_V ((struct value){.kind = V_TRUE})
#define RAW(lit) ((struct value){.kind = V_RAW, .p = (lit), .len = sizeof(lit) - 1})
#define RAWN(ptr, n) ((struct value){.kind = V_RAW, .p = (ptr), .len = (n)})
#define STRS(arr, n) ((struct value){.kind = V_STRS, .strs = (arr), .count = (n)})
#define OMIT ((struct value){.kind = V_OMIT})

#define CHANGES(...)                                                                               \
    (const struct entry[]){__VA_ARGS__},                                                           \
        sizeof((const struct entry[]){__VA_ARGS__}) / sizeof(struct entry)

#define BASE_RESOURCE "/dms/cabinets/bau/documents/4711"
#define BASE_TIME 1795000000123ULL

static const char *const base_readers[] = {"user:anna", "group:bau"};

static const struct entry baseline[] = {
    {"id", S("evt-1")},     {"source", S("dms")},
    {"type", S("updated")}, {"resource", S(BASE_RESOURCE)},
    {"time", U(BASE_TIME)}, {"readers", STRS(base_readers, 2)},
};
#define BASELINE_COUNT (sizeof(baseline) / sizeof(baseline[0]))
#define MAX_ENTRIES 32

static void pack_value(msgpack_packer *pk, msgpack_sbuffer *sb, const struct value *v)
{
    switch (v->kind) {
    case V_OMIT:
        break;
    case V_STR:
        msgpack_pack_str(pk, v->len);
        msgpack_pack_str_body(pk, v->p, v->len);
        break;
    case V_BIN:
        msgpack_pack_bin(pk, v->len);
        msgpack_pack_bin_body(pk, v->p, v->len);
        break;
    case V_UINT:
        msgpack_pack_uint64(pk, v->u);
        break;
    case V_INT:
        msgpack_pack_int64(pk, v->i);
        break;
    case V_FIX_INT:
        msgpack_pack_fix_int64(pk, v->i);
        break;
    case V_NIL:
        msgpack_pack_nil(pk);
        break;
    case V_TRUE:
        msgpack_pack_true(pk);
        break;
    case V_FLOAT:
        msgpack_pack_double(pk, v->f);
        break;
    case V_RAW:
        msgpack_sbuffer_write(sb, v->p, v->len);
        break;
    case V_STRS:
        msgpack_pack_array(pk, v->count);
        for (size_t i = 0; i < v->count; i++) {
            size_t len = strlen(v->strs[i]);
            msgpack_pack_str(pk, len);
            msgpack_pack_str_body(pk, v->strs[i], len);
        }
        break;
    }
}

/* Packs a map of exactly these entries, in this order (keys may repeat). */
static void pack_exact(msgpack_sbuffer *sb, const struct entry *entries, size_t count)
{
    msgpack_packer pk;
    size_t present = 0;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    for (size_t i = 0; i < count; i++) {
        present += entries[i].v.kind != V_OMIT;
    }
    msgpack_pack_map(&pk, present);
    for (size_t i = 0; i < count; i++) {
        if (entries[i].v.kind == V_OMIT) {
            continue;
        }
        size_t len = strlen(entries[i].key);
        msgpack_pack_str(&pk, len);
        msgpack_pack_str_body(&pk, entries[i].key, len);
        pack_value(&pk, sb, &entries[i].v);
    }
}

/* Packs the baseline with changes: a change replaces the baseline field of its key (or
 * removes it, for OMIT), and a key not in the baseline is added at the end. */
static void pack_event(msgpack_sbuffer *sb, const struct entry *changes, size_t count)
{
    struct entry all[MAX_ENTRIES];
    size_t n = BASELINE_COUNT;
    memcpy(all, baseline, sizeof(baseline));
    for (size_t c = 0; c < count; c++) {
        size_t i = 0;
        while (i < n && strcmp(all[i].key, changes[c].key) != 0) {
            i++;
        }
        ck_assert_uint_lt(i, MAX_ENTRIES);
        all[i] = changes[c];
        if (i == n) {
            n++;
        }
    }
    pack_exact(sb, all, n);
}

/* ---- checking results ---- */

static event_t sentinel;

static void expect_refused_bytes(int line, const void *message, size_t len, int code,
                                 const char *needle)
{
    struct herr err;
    event_t *event = &sentinel; /* proves that a refusal sets *out to NULL */
    herr_clear(&err);
    int rc = event_decode(message, len, &event, &err);
    ck_assert_msg(rc == code, "line %d: expected %s, got %s (%s)", line, herold_error_code(code),
                  rc == 0 ? "success" : herold_error_code(rc), err.message);
    ck_assert_msg(err.code == code, "line %d: err.code %d", line, err.code);
    ck_assert_msg(event == NULL, "line %d: *out not NULL after a refusal", line);
    ck_assert_msg(strstr(err.message, needle) != NULL, "line %d: message '%s' lacks '%s'", line,
                  err.message, needle);
    for (const char *c = err.message; *c != '\0'; c++) {
        ck_assert_msg(*c >= 0x20 && *c <= 0x7e, "line %d: unprintable byte in '%s'", line,
                      err.message);
    }
}

static void expect_refused(int line, int code, const char *needle, const struct entry *changes,
                           size_t count)
{
    msgpack_sbuffer sb;
    pack_event(&sb, changes, count);
    expect_refused_bytes(line, sb.data, sb.size, code, needle);
    msgpack_sbuffer_destroy(&sb);
}

/* Decodes the baseline with changes; the caller frees the event. */
static event_t *expect_ok(int line, const struct entry *changes, size_t count)
{
    msgpack_sbuffer sb;
    struct herr err;
    event_t *event = NULL;
    herr_clear(&err);
    pack_event(&sb, changes, count);
    int rc = event_decode(sb.data, sb.size, &event, &err);
    ck_assert_msg(rc == 0, "line %d: refused with %s: %s", line, herold_error_code(rc),
                  err.message);
    ck_assert_ptr_nonnull(event);
    ck_assert_uint_eq(event->raw_len, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return event;
}

#define EXPECT_REFUSED(code, needle, ...)                                                          \
    expect_refused(__LINE__, code, needle, CHANGES(__VA_ARGS__))
#define EXPECT_OK(...) event_free(expect_ok(__LINE__, CHANGES(__VA_ARGS__)))
#define DECODE_OK(...) expect_ok(__LINE__, CHANGES(__VA_ARGS__))
#define EXPECT_REFUSED_BYTES(lit, code, needle)                                                    \
    expect_refused_bytes(__LINE__, lit, sizeof(lit) - 1, code, needle)

static void assert_view(const event_t *event, hstr_t view, const char *expected)
{
    ck_assert_uint_eq(view.len, strlen(expected));
    ck_assert_mem_eq(view.p, expected, view.len);
    /* Every view points into the event's own copy of the message. */
    ck_assert(view.p >= event->raw && view.p + view.len <= event->raw + event->raw_len);
}

/* A buffer of len copies of c; the caller frees it. */
static char *filled(size_t len, char c)
{
    char *p = malloc(len + 1);
    memset(p, c, len);
    p[len] = '\0';
    return p;
}

/* "/s" repeated: a path of count segments of one byte each. */
static char *path_of_segments(size_t count)
{
    char *p = malloc(2 * count + 1);
    for (size_t i = 0; i < count; i++) {
        p[2 * i] = '/';
        p[2 * i + 1] = 's';
    }
    p[2 * count] = '\0';
    return p;
}

/* A path of exactly len bytes: segments of up to 63 bytes, at most 32 of them. */
static char *path_of_bytes(size_t len)
{
    char *p = filled(len, 'p');
    for (size_t i = 0; i < len; i += 64) {
        p[i] = '/';
    }
    if (p[len - 1] == '/') {
        p[len - 1] = 'p';
        p[len - 2] = '/';
    }
    return p;
}

/* ---- whole valid events ---- */

START_TEST(test_event_decodes_full_event)
{
    msgpack_sbuffer data;
    msgpack_packer pk;
    msgpack_sbuffer_init(&data);
    msgpack_packer_init(&pk, &data, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "title", 5);
    msgpack_pack_str_with_body(&pk, "Bauantrag", 9);
    msgpack_pack_str_with_body(&pk, "pages", 5);
    msgpack_pack_int(&pk, 3);

    static const char *const readers[] = {"user:anna", "group:bau", "*"};
    msgpack_sbuffer sb;
    pack_event(&sb,
               CHANGES({"type", S("created")}, {"previous", S("/dms/cabinets/alt/documents/4711")},
                       {"actor", S("user:anna")}, {"kind", S("document")}, {"tenant", S("city")},
                       {"readers", STRS(readers, 3)}, {"data", RAWN(data.data, data.size)}));
    /* The message buffer is released before the event is inspected: the event must not
     * depend on it (ASan would report a use after free). */
    char *message = malloc(sb.size);
    size_t len = sb.size;
    memcpy(message, sb.data, len);
    msgpack_sbuffer_destroy(&sb);
    event_t *event = NULL;
    struct herr err;
    ck_assert_int_eq(event_decode(message, len, &event, &err), 0);
    memset(message, 0, len);
    free(message);

    ck_assert_uint_eq(event->seq, 0);
    assert_view(event, event->id, "evt-1");
    assert_view(event, event->source, "dms");
    ck_assert_int_eq(event->type, EVENT_CREATED);
    assert_view(event, event->resource, BASE_RESOURCE);
    ck_assert_uint_eq(event->resource_path.segment_count, 5);
    assert_view(event, event->resource_path.segments[0], "dms");
    assert_view(event, event->resource_path.segments[2], "bau");
    assert_view(event, event->resource_path.segments[4], "4711");
    ck_assert(event->has_previous);
    assert_view(event, event->previous, "/dms/cabinets/alt/documents/4711");
    ck_assert_uint_eq(event->previous_path.segment_count, 5);
    assert_view(event, event->previous_path.segments[2], "alt");
    ck_assert_int_eq(event->time_ms, (int64_t)BASE_TIME);
    assert_view(event, event->actor, "user:anna");
    assert_view(event, event->kind, "document");
    assert_view(event, event->tenant, "city");
    ck_assert_uint_eq(event->reader_count, 3);
    assert_view(event, event->readers[0], "user:anna");
    assert_view(event, event->readers[1], "group:bau");
    assert_view(event, event->readers[2], "*");
    ck_assert_uint_eq(event->data.len, data.size);
    ck_assert_mem_eq(event->data.p, data.data, data.size);
    ck_assert(event->data.p >= event->raw &&
              event->data.p + event->data.len <= event->raw + event->raw_len);
    event_free(event);
    msgpack_sbuffer_destroy(&data);
}
END_TEST

START_TEST(test_event_decoder_reuse_matches_fresh_decoding)
{
    /* One decoder across events that outgrow its zone, a refusal, and small ones: each
     * result is what event_decode gives. */
    static char names[EVENT_MAX_READERS][16];
    static const char *readers[EVENT_MAX_READERS];
    for (size_t i = 0; i < EVENT_MAX_READERS; i++) {
        snprintf(names[i], sizeof(names[i]), "user:u%zu", i);
        readers[i] = names[i];
    }
    msgpack_sbuffer many;
    pack_event(&many, CHANGES({"readers", STRS(readers, EVENT_MAX_READERS)}));
    msgpack_sbuffer unknown;
    pack_event(&unknown, CHANGES({"colour", S("blue")}));
    msgpack_sbuffer plain;
    pack_event(&plain, NULL, 0);
    const msgpack_sbuffer *messages[] = {&many, &unknown, &plain, &many, &plain, &unknown};
    event_decoder_t *decoder = event_decoder_new();
    for (size_t m = 0; m < sizeof(messages) / sizeof(messages[0]); m++) {
        event_t *reused = NULL;
        event_t *fresh = NULL;
        struct herr reused_err = {0};
        struct herr fresh_err = {0};
        int reused_rc =
            event_decode_with(decoder, messages[m]->data, messages[m]->size, &reused, &reused_err);
        int fresh_rc = event_decode(messages[m]->data, messages[m]->size, &fresh, &fresh_err);
        ck_assert_int_eq(reused_rc, fresh_rc);
        if (fresh_rc != 0) {
            ck_assert_ptr_null(reused);
            ck_assert_str_eq(reused_err.message, fresh_err.message);
            continue;
        }
        ck_assert_uint_eq(reused->reader_count, fresh->reader_count);
        for (size_t i = 0; i < fresh->reader_count; i++) {
            ck_assert(hstr_eq(reused->readers[i], fresh->readers[i]));
        }
        ck_assert(hstr_eq(reused->resource, fresh->resource));
        ck_assert(hstr_eq(reused->id, fresh->id));
        event_free(reused);
        event_free(fresh);
    }
    event_decoder_free(decoder);
    event_decoder_free(NULL);
    msgpack_sbuffer_destroy(&many);
    msgpack_sbuffer_destroy(&unknown);
    msgpack_sbuffer_destroy(&plain);
}
END_TEST

START_TEST(test_event_decoder_hands_out_blocks_in_the_order_taken_back)
{
    static char names[200][16];
    static const char *readers[200];
    for (size_t i = 0; i < 200; i++) {
        snprintf(names[i], sizeof(names[i]), "user:u%zu", i);
        readers[i] = names[i];
    }
    static const char *const bert[] = {"user:bert"};
    msgpack_sbuffer plain;
    pack_event(&plain, NULL, 0);
    msgpack_sbuffer other;
    pack_event(&other, CHANGES({"id", S("evt-2")}, {"readers", STRS(bert, 1)}));
    msgpack_sbuffer crowded; /* fits a block, its readers do not */
    pack_event(&crowded, CHANGES({"readers", STRS(readers, 40)}));
    ck_assert_uint_le(sizeof(event_t) + crowded.size, EVENT_POOL_BLOCK_BYTES);
    ck_assert_uint_gt(sizeof(event_t) + crowded.size + 40 * sizeof(hstr_t), EVENT_POOL_BLOCK_BYTES);
    msgpack_sbuffer large; /* larger than a block */
    pack_event(&large, CHANGES({"readers", STRS(readers, 200)}));
    ck_assert_uint_gt(sizeof(event_t) + large.size, EVENT_POOL_BLOCK_BYTES);

    event_decoder_t *decoder = event_decoder_new();
    event_t *first;
    event_t *second;
    event_t *event;
    ck_assert_int_eq(event_decode_with(decoder, plain.data, plain.size, &first, NULL), 0);
    ck_assert_int_eq(event_decode_with(decoder, plain.data, plain.size, &second, NULL), 0);
    ck_assert(first->is_pooled && first->is_readers_inline);
    assert_view(first, first->readers[1], "group:bau");
    event_recycle(decoder, first);
    event_recycle(decoder, second);

    /* The first block taken back comes out first, holding nothing of its last event. */
    ck_assert_int_eq(event_decode_with(decoder, other.data, other.size, &event, NULL), 0);
    ck_assert_ptr_eq(event, first);
    assert_view(event, event->id, "evt-2");
    ck_assert_uint_eq(event->reader_count, 1);
    assert_view(event, event->readers[0], "user:bert");
    event_t *crowded_event;
    ck_assert_int_eq(event_decode_with(decoder, crowded.data, crowded.size, &crowded_event, NULL),
                     0);
    ck_assert_ptr_eq(crowded_event, second);
    ck_assert(crowded_event->is_pooled && !crowded_event->is_readers_inline);
    assert_view(crowded_event, crowded_event->readers[39], "user:u39");
    event_t *large_event;
    ck_assert_int_eq(event_decode_with(decoder, large.data, large.size, &large_event, NULL), 0);
    ck_assert(!large_event->is_pooled);

    /* Each goes back or is freed as it must (AddressSanitizer checks the frees). */
    event_recycle(decoder, large_event);
    event_recycle(decoder, crowded_event);
    event_free(event);
    event_recycle(decoder, NULL);
    event_decoder_free(decoder);
    msgpack_sbuffer_destroy(&plain);
    msgpack_sbuffer_destroy(&other);
    msgpack_sbuffer_destroy(&crowded);
    msgpack_sbuffer_destroy(&large);
}
END_TEST

START_TEST(test_event_decodes_minimal_event)
{
    event_t *event = DECODE_OK({"id", S("e")}, {"source", S("s")}, {"resource", S("/a")},
                               {"time", U(1)}, {"readers", RAW("\x90")});
    assert_view(event, event->id, "e");
    assert_view(event, event->source, "s");
    ck_assert_int_eq(event->type, EVENT_UPDATED);
    ck_assert_uint_eq(event->resource_path.segment_count, 1);
    assert_view(event, event->resource_path.segments[0], "a");
    ck_assert(!event->has_previous);
    ck_assert_uint_eq(event->previous.len, 0);
    ck_assert_int_eq(event->time_ms, 1);
    ck_assert_uint_eq(event->actor.len, 0);
    ck_assert_uint_eq(event->kind.len, 0);
    ck_assert_uint_eq(event->tenant.len, 0);
    ck_assert_uint_eq(event->reader_count, 0);
    ck_assert_uint_eq(event->data.len, 0);
    event_free(event);
}
END_TEST

START_TEST(test_event_accepts_any_key_order_and_encoding)
{
    /* Reverse order, str8/str16 encodings of short strings, a map16 header for a small
     * map, and a positive time in the signed 9-byte encoding are all plain msgpack. */
    const struct entry reversed[] = {
        {"readers", STRS(base_readers, 2)},
        {"time", FIXI((int64_t)BASE_TIME)},
        {"resource", S(BASE_RESOURCE)},
        {"type", RAW("\xd9\x07updated")},
        {"source", RAW("\xda\x00\x03"
                       "dms")},
        {"id", S("evt-1")},
    };
    msgpack_sbuffer sb;
    pack_exact(&sb, reversed, 6);
    event_t *event = NULL;
    struct herr err;
    ck_assert_int_eq(event_decode(sb.data, sb.size, &event, &err), 0);
    assert_view(event, event->source, "dms");
    ck_assert_int_eq(event->type, EVENT_UPDATED);
    ck_assert_int_eq(event->time_ms, (int64_t)BASE_TIME);
    event_free(event);
    msgpack_sbuffer_destroy(&sb);

    /* The top-level map as map16 and map32 headers. */
    pack_event(&sb, NULL, 0);
    ck_assert_uint_eq((unsigned char)sb.data[0], 0x86);
    char *wide = malloc(sb.size + 4);
    memcpy(wide, "\xde\x00\x06", 3);
    memcpy(wide + 3, sb.data + 1, sb.size - 1);
    ck_assert_int_eq(event_decode(wide, sb.size + 2, &event, &err), 0);
    event_free(event);
    memcpy(wide, "\xdf\x00\x00\x00\x06", 5);
    memcpy(wide + 5, sb.data + 1, sb.size - 1);
    ck_assert_int_eq(event_decode(wide, sb.size + 4, &event, &err), 0);
    event_free(event);
    free(wide);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* Every encoding of what decoding reads without msgpack-c (str, unsigned int, an array of
 * str) reads as the same value, and the encodings next to them (signed ints, an array
 * holding something else) still read as msgpack-c reads them. */
START_TEST(test_event_reads_every_encoding_of_str_uint_and_reader_arrays)
{
    static const struct {
        struct value time;
        int64_t expected;
    } times[] = {
        {RAW("\x05"), 5},                                             /* positive fixint */
        {RAW("\x7f"), 127},                                           /* the largest */
        {RAW("\xcc\xc8"), 200},                                       /* uint8 */
        {RAW("\xcd\x12\x34"), 0x1234},                                /* uint16 */
        {RAW("\xce\x12\x34\x56\x78"), 0x12345678},                    /* uint32 */
        {RAW("\xcf\x00\x00\x01\xa2\x5e\x7c\x2e\x7b"), 1796881526395}, /* uint64 */
        {RAW("\xd1\x01\x00"), 256},                                   /* int16, by msgpack-c */
    };
    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        event_t *event = DECODE_OK({"time", times[i].time});
        ck_assert_msg(event->time_ms == times[i].expected, "time %zu: %" PRId64, i, event->time_ms);
        event_free(event);
    }

    /* The resource as fixstr, str8, str16 and str32. */
    static const struct value resources[] = {
        RAW("\xa4/a/b"),
        RAW("\xd9\x04/a/b"),
        RAW("\xda\x00\x04/a/b"),
        RAW("\xdb\x00\x00\x00\x04/a/b"),
    };
    for (size_t i = 0; i < sizeof(resources) / sizeof(resources[0]); i++) {
        event_t *event = DECODE_OK({"resource", resources[i]});
        assert_view(event, event->resource, "/a/b");
        event_free(event);
    }

    /* Readers as fixarray, array16 and array32, their entries in mixed str encodings. */
    static const struct value readers[] = {
        RAW("\x92\xa6user:a\xd9\x07group:g"),
        RAW("\xdc\x00\x02\xda\x00\x06user:a\xa7group:g"),
        RAW("\xdd\x00\x00\x00\x02\xdb\x00\x00\x00\x06user:a\xd9\x07group:g"),
    };
    for (size_t i = 0; i < sizeof(readers) / sizeof(readers[0]); i++) {
        event_t *event = DECODE_OK({"readers", readers[i]});
        ck_assert_uint_eq(event->reader_count, 2);
        assert_view(event, event->readers[0], "user:a");
        assert_view(event, event->readers[1], "group:g");
        event_free(event);
    }
    event_t *event = DECODE_OK({"readers", RAW("\xdc\x00\x00")});
    ck_assert_uint_eq(event->reader_count, 0);
    event_free(event);

    /* An empty str, a key in str8, and an array that holds a non-str after a str. */
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "id: must not be empty", {"id", RAW("\xd9\x00")});
    const char keyed[] = "\x81\xd9\x02id\xa1x";
    EXPECT_REFUSED_BYTES(keyed, HEROLD_E_MISSING_FIELD, "source: required field is missing");
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "readers[1]: must be a str, got nil",
                   {"readers", RAW("\x92\xa6user:a\xc0")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "readers[0]: must be a str, got int",
                   {"readers", RAW("\x91\xd0\x05")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE,
                   "time: must be an int (milliseconds since the epoch), "
                   "got str",
                   {"time", RAW("\xd9\x01"
                                "5")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "source: must be a str, got array",
                   {"source", RAW("\x91\xa1x")});
}
END_TEST

/* ---- size and structure ---- */

/* Packs a valid event of exactly size bytes: readers of 100 bytes, the first few one byte
 * longer to make up the remainder. Fills storage (1024 entries of 128 bytes). */
static void pack_sized_event(msgpack_sbuffer *sb, size_t size, char (*storage)[128],
                             const char **readers)
{
    size_t count = 16;
    for (size_t i = 0; i < 1024; i++) {
        snprintf(storage[i], 128, "user:%05zu%090d", i, 0);
        readers[i] = storage[i];
    }
    ck_assert_uint_eq(strlen(readers[0]), 100);
    pack_event(sb, CHANGES({"readers", STRS(readers, count)}));
    size_t base = sb->size - count * 102; /* str8 header + 100 bytes per reader */
    msgpack_sbuffer_destroy(sb);
    count = (size - base) / 102;
    size_t missing = size - base - count * 102;
    ck_assert_uint_le(missing, count);
    for (size_t i = 0; i < missing; i++) {
        strcat(storage[i], "y");
    }
    pack_event(sb, CHANGES({"readers", STRS(readers, count)}));
    ck_assert_uint_eq(sb->size, size);
}

START_TEST(test_event_message_size_limit)
{
    char(*storage)[128] = malloc(1024 * 128);
    const char **readers = malloc(1024 * sizeof(*readers));
    msgpack_sbuffer sb;
    event_t *event = NULL;
    struct herr err;

    pack_sized_event(&sb, EVENT_MAX_MESSAGE_BYTES, storage, readers);
    ck_assert_int_eq(event_decode(sb.data, sb.size, &event, &err), 0);
    ck_assert_uint_eq(event->raw_len, EVENT_MAX_MESSAGE_BYTES);
    ck_assert_uint_gt(event->reader_count, 600);
    event_free(event);
    msgpack_sbuffer_destroy(&sb);

    pack_sized_event(&sb, EVENT_MAX_MESSAGE_BYTES + 1, storage, readers);
    expect_refused_bytes(__LINE__, sb.data, sb.size, HEROLD_E_TOO_LARGE, "65537 bytes");
    msgpack_sbuffer_destroy(&sb);

    /* The size is checked before anything is unpacked: bytes that are not msgpack at
     * all are still too_large, not malformed. */
    char *garbage = filled(1024 * 1024, (char)0xc1);
    expect_refused_bytes(__LINE__, garbage, EVENT_MAX_MESSAGE_BYTES + 1, HEROLD_E_TOO_LARGE,
                         "65536-byte limit");
    expect_refused_bytes(__LINE__, garbage, 1024 * 1024, HEROLD_E_TOO_LARGE, "message");
    free(garbage);
    free(readers);
    free(storage);
}
END_TEST

START_TEST(test_event_refuses_every_truncation)
{
    msgpack_sbuffer sb;
    pack_event(&sb, CHANGES({"actor", S("user:anna")}, {"data", RAW("\x81\xa1k\x92\x01\xa1x")}));
    for (size_t len = 0; len < sb.size; len++) {
        /* A copy of exactly len bytes, so ASan sees any read past the end. */
        char *prefix = malloc(len + 1);
        memcpy(prefix, sb.data, len);
        expect_refused_bytes(__LINE__, prefix, len, HEROLD_E_MALFORMED, "message: ");
        free(prefix);
    }
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_event_refuses_malformed_structure)
{
    EXPECT_REFUSED_BYTES("", HEROLD_E_MALFORMED, "empty");
    EXPECT_REFUSED_BYTES("\x92\xa2id\xa1x", HEROLD_E_MALFORMED, "top level is a msgpack array");
    EXPECT_REFUSED_BYTES("\xa5hello", HEROLD_E_MALFORMED, "top level is a msgpack str");
    EXPECT_REFUSED_BYTES("\x07", HEROLD_E_MALFORMED, "top level is a msgpack int");
    EXPECT_REFUSED_BYTES("\xc0", HEROLD_E_MALFORMED, "top level is a msgpack nil");
    EXPECT_REFUSED_BYTES("\xc4\x01x", HEROLD_E_MALFORMED, "top level is a msgpack bin");
    EXPECT_REFUSED_BYTES("\xc1", HEROLD_E_MALFORMED, "0xc1");
    EXPECT_REFUSED_BYTES("\x81\xa2id\xc1", HEROLD_E_MALFORMED, "0xc1 at offset 4");
    /* Claims larger than the message: refused by the scan, before msgpack-c would
     * allocate for them (under ASan a 100 GB request would abort the test). */
    EXPECT_REFUSED_BYTES("\xdd\xff\xff\xff\xff\x01", HEROLD_E_MALFORMED, "claims 4294967295");
    EXPECT_REFUSED_BYTES("\xdf\xff\xff\xff\xff\xa2id", HEROLD_E_MALFORMED, "truncated");
    EXPECT_REFUSED_BYTES("\x81\xa2id\xdb\xff\xff\xff\xff"
                         "abc",
                         HEROLD_E_MALFORMED, "truncated");
    EXPECT_REFUSED_BYTES("\x81\xa2id\xc6\x00\x01\x00\x00", HEROLD_E_MALFORMED, "truncated");
    EXPECT_REFUSED_BYTES("\x81\xa2id\xc9\x00\x00\x00\x10\x01", HEROLD_E_MALFORMED, "truncated");
    EXPECT_REFUSED_BYTES("\x81\xa2id\xd8\x01", HEROLD_E_MALFORMED, "truncated");
    EXPECT_REFUSED_BYTES("\x81\xa2id\xcb\x00\x00", HEROLD_E_MALFORMED, "truncated");
    /* A map claims two objects per entry: 3 pairs need at least 6 bytes. */
    EXPECT_REFUSED_BYTES("\x83\x01\x02\x03\x04\x05", HEROLD_E_MALFORMED, "claims 3");

    /* Trailing bytes after a complete event. */
    msgpack_sbuffer sb;
    pack_event(&sb, NULL, 0);
    msgpack_sbuffer_write(&sb, "\xc0", 1);
    expect_refused_bytes(__LINE__, sb.data, sb.size, HEROLD_E_MALFORMED,
                         "1 byte after the end of the map");
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_event_refuses_non_str_keys)
{
    EXPECT_REFUSED_BYTES("\x81\xc4\x02id\xa1x", HEROLD_E_MALFORMED,
                         "key of entry 0 is a msgpack bin");
    EXPECT_REFUSED_BYTES("\x81\x07\xa1x", HEROLD_E_MALFORMED, "is a msgpack int");
    EXPECT_REFUSED_BYTES("\x81\xc0\xa1x", HEROLD_E_MALFORMED, "is a msgpack nil");
    EXPECT_REFUSED_BYTES("\x81\x90\xa1x", HEROLD_E_MALFORMED, "is a msgpack array");
    EXPECT_REFUSED_BYTES("\x81\x80\xa1x", HEROLD_E_MALFORMED, "is a msgpack map");
    EXPECT_REFUSED_BYTES("\x81\xcb\x00\x00\x00\x00\x00\x00\x00\x00\x01", HEROLD_E_MALFORMED,
                         "is a msgpack float");
    /* A bin key after valid fields: names the entry. */
    msgpack_sbuffer sb;
    pack_event(&sb, NULL, 0);
    sb.data[0] = (char)0x87;
    msgpack_sbuffer_write(&sb, "\xc4\x04kind\xa1x", 8);
    expect_refused_bytes(__LINE__, sb.data, sb.size, HEROLD_E_MALFORMED,
                         "key of entry 6 is a msgpack bin; keys must be str");
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_event_refuses_unknown_fields)
{
    EXPECT_REFUSED(HEROLD_E_UNKNOWN_FIELD, "unknown field 'colour'", {"colour", S("blue")});
    EXPECT_REFUSED(HEROLD_E_UNKNOWN_FIELD, "unknown field 'ID'", {"ID", S("x")});
    EXPECT_REFUSED(HEROLD_E_UNKNOWN_FIELD, "unknown field 'i'", {"i", S("x")});
    EXPECT_REFUSED(HEROLD_E_UNKNOWN_FIELD, "unknown field 'ids'", {"ids", S("x")});
    EXPECT_REFUSED(HEROLD_E_UNKNOWN_FIELD, "unknown field ''", {"", S("x")});
    EXPECT_REFUSED(HEROLD_E_UNKNOWN_FIELD, "unknown field 'seq'", {"seq", U(1)});
    /* Unprintable bytes, quotes and invalid UTF-8 are escaped. */
    EXPECT_REFUSED(HEROLD_E_UNKNOWN_FIELD, "unknown field 'a\\x01\\x27\\xff'",
                   {"a\x01'\xff", S("x")});
    /* A long key is cut: the message names its first 32 bytes. */
    char *key = filled(300, 'k');
    char expected[64];
    snprintf(expected, sizeof(expected), "'%.32s...'", key);
    EXPECT_REFUSED(HEROLD_E_UNKNOWN_FIELD, expected, {key, S("x")});
    free(key);
}
END_TEST

START_TEST(test_event_refuses_duplicate_fields)
{
    static const char *const one_reader[] = {"*"};
    const struct entry valid[] = {
        {"id", S("evt-2")},     {"source", S("cal")},
        {"type", S("deleted")}, {"resource", S("/b")},
        {"previous", S("/c")},  {"time", U(5)},
        {"actor", S("x")},      {"readers", STRS(one_reader, 1)},
        {"kind", S("event")},   {"tenant", S("t")},
        {"data", RAW("\x80")},
    };
    for (size_t f = 0; f < sizeof(valid) / sizeof(valid[0]); f++) {
        struct entry all[MAX_ENTRIES];
        char needle[32];
        memcpy(all, baseline, sizeof(baseline));
        all[BASELINE_COUNT] = valid[f];
        all[BASELINE_COUNT + 1] = valid[f];
        msgpack_sbuffer sb;
        pack_exact(&sb, all, BASELINE_COUNT + 2);
        snprintf(needle, sizeof(needle), "%s: given twice", valid[f].key);
        expect_refused_bytes(__LINE__, sb.data, sb.size, HEROLD_E_DUPLICATE_FIELD, needle);
        msgpack_sbuffer_destroy(&sb);
    }
}
END_TEST

START_TEST(test_event_reports_first_missing_field)
{
    static const char *const required[] = {"id", "source", "type", "resource", "time", "readers"};
    for (size_t i = 0; i < 6; i++) {
        char needle[64];
        snprintf(needle, sizeof(needle), "%s: required field is missing", required[i]);
        expect_refused(__LINE__, HEROLD_E_MISSING_FIELD, needle,
                       (const struct entry[]){{required[i], OMIT}}, 1);
    }
    /* Several missing: the first in the order id, source, type, resource, time, readers,
     * whatever the order of the message. */
    EXPECT_REFUSED(HEROLD_E_MISSING_FIELD, "source:", {"readers", OMIT}, {"source", OMIT},
                   {"time", OMIT});
    EXPECT_REFUSED(HEROLD_E_MISSING_FIELD, "time:", {"readers", OMIT}, {"time", OMIT});
    EXPECT_REFUSED_BYTES("\x80", HEROLD_E_MISSING_FIELD, "id: required");
}
END_TEST

START_TEST(test_event_reports_first_error_in_message_order)
{
    /* id (first entry) is too long and a later key is unknown: id is named. */
    char *id = filled(129, 'i');
    EXPECT_REFUSED(HEROLD_E_FIELD_TOO_LONG, "id: 129 bytes", {"id", SN(id, 129)},
                   {"colour", S("x")});
    free(id);
    /* A bad field also wins over missing fields, which are only known at the end. */
    EXPECT_REFUSED(HEROLD_E_BAD_TIME, "time:", {"time", U(0)}, {"readers", OMIT});
}
END_TEST

/* ---- string fields ---- */

START_TEST(test_event_string_length_limits)
{
    struct {
        const char *key;
        size_t max;
        bool may_be_empty;
    } fields[] = {
        {"id", EVENT_MAX_ID_BYTES, false},       {"source", EVENT_MAX_SOURCE_BYTES, false},
        {"actor", EVENT_MAX_SHORT_BYTES, true},  {"kind", EVENT_MAX_SHORT_BYTES, false},
        {"tenant", EVENT_MAX_SHORT_BYTES, true},
    };
    ck_assert_int_eq(EVENT_MAX_ID_BYTES, 128);
    ck_assert_int_eq(EVENT_MAX_SHORT_BYTES, 128);
    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        char *text = filled(fields[f].max + 1, 'a');
        char needle[64];
        event_t *event = expect_ok(
            __LINE__, (const struct entry[]){{fields[f].key, SN(text, fields[f].max)}}, 1);
        hstr_t views[] = {event->id, event->source, event->actor, event->kind, event->tenant};
        ck_assert_uint_eq(views[f].len, fields[f].max);
        event_free(event);

        snprintf(needle, sizeof(needle), "%s: %zu bytes exceeds the %zu-byte limit", fields[f].key,
                 fields[f].max + 1, fields[f].max);
        expect_refused(__LINE__, HEROLD_E_FIELD_TOO_LONG, needle,
                       (const struct entry[]){{fields[f].key, SN(text, fields[f].max + 1)}}, 1);

        if (fields[f].may_be_empty) {
            event_free(expect_ok(__LINE__, (const struct entry[]){{fields[f].key, S("")}}, 1));
        } else {
            snprintf(needle, sizeof(needle), "%s: must not be empty", fields[f].key);
            expect_refused(__LINE__, HEROLD_E_FIELD_TYPE, needle,
                           (const struct entry[]){{fields[f].key, S("")}}, 1);
        }
        free(text);
    }
}
END_TEST

START_TEST(test_event_refuses_wrong_types)
{
    static const char *const strings[] = {"id",       "source", "type", "resource",
                                          "previous", "actor",  "kind", "tenant"};
    const struct value not_str[] = {U(7),
                                    I(-7),
                                    NIL,
                                    TRUE_V,
                                    F(1.5),
                                    RAW("\x91\xa1x"),
                                    RAW("\x81\xa1x\xa1y"),
                                    BIN("evt-1"),
                                    RAW("\xd4\x01\x00")};
    static const char *const not_str_names[] = {"int",   "int", "nil", "bool", "float",
                                                "array", "map", "bin", "ext"};
    for (size_t f = 0; f < 8; f++) {
        for (size_t v = 0; v < sizeof(not_str) / sizeof(not_str[0]); v++) {
            char needle[64];
            snprintf(needle, sizeof(needle), "%s: must be a str, got %s", strings[f],
                     not_str_names[v]);
            expect_refused(__LINE__, HEROLD_E_FIELD_TYPE, needle,
                           (const struct entry[]){{strings[f], not_str[v]}}, 1);
        }
    }

    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "time: must be an int", {"time", S("1795000000123")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "got float", {"time", F(1795000000123.0)});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "got nil", {"time", NIL});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "got bool", {"time", TRUE_V});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "got bin", {"time", BIN("\x01")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "got array", {"time", RAW("\x91\x01")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "got ext", {"time", RAW("\xd6\xff\x00\x00\x00\x01")});

    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "readers: must be an array of str, got str",
                   {"readers", S("user:anna")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "got map", {"readers", RAW("\x81\xa1*\xa1*")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "got nil", {"readers", NIL});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "got int", {"readers", U(1)});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "readers[1]: must be a str, got int",
                   {"readers", RAW("\x92\xa1*\x05")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "readers[0]: must be a str, got bin",
                   {"readers", RAW("\x91\xc4\x01*")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "readers[2]: must be a str, got array",
                   {"readers", RAW("\x93\xa1*\xa1*\x91\xa1*")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "readers[0]: must be a str, got nil",
                   {"readers", RAW("\x91\xc0")});

    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "data: must be a map, got array",
                   {"data", RAW("\x91\x01")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "data: must be a map, got str", {"data", S("{}")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "data: must be a map, got nil", {"data", NIL});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "data: must be a map, got bin", {"data", BIN("\x80")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "data: must be a map, got int", {"data", U(0)});
}
END_TEST

START_TEST(test_event_refuses_bad_utf8_in_every_string)
{
    /* Overlong, surrogate, lone continuation, cut sequence, above U+10FFFF. */
    static const char *const bad[] = {"a\xc0\xaf", "a\xed\xa0\x80", "a\x80", "a\xe2\x82",
                                      "a\xf4\x90\x80\x80"};
    static const char *const fields[] = {"id", "source", "type", "actor", "kind", "tenant"};
    for (size_t f = 0; f < 6; f++) {
        for (size_t b = 0; b < 5; b++) {
            char needle[64];
            snprintf(needle, sizeof(needle), "%s: not valid UTF-8", fields[f]);
            expect_refused(__LINE__, HEROLD_E_BAD_UTF8, needle,
                           (const struct entry[]){{fields[f], SN(bad[b], strlen(bad[b]))}}, 1);
        }
    }
    EXPECT_REFUSED(HEROLD_E_BAD_UTF8, "resource: not valid UTF-8", {"resource", S("/dms/\xff")});
    EXPECT_REFUSED(HEROLD_E_BAD_UTF8, "previous: not valid UTF-8",
                   {"previous", S("/dms/\xed\xa0\x80")});
    static const char *const readers[] = {"*", "user:\xc3"};
    EXPECT_REFUSED(HEROLD_E_BAD_UTF8, "readers[1]: not valid UTF-8", {"readers", STRS(readers, 2)});
    EXPECT_REFUSED(HEROLD_E_BAD_UTF8, "data.title: not valid UTF-8",
                   {"data", RAW("\x81\xa5title\xa2\xc3\x28")});
    EXPECT_REFUSED(HEROLD_E_BAD_UTF8, "data: key 0 is not valid UTF-8",
                   {"data", RAW("\x81\xa2\xc3\x28\x01")});

    /* Multi-byte UTF-8 is fine everywhere. */
    static const char *const unicode_readers[] = {"user:j\xc3\xbcrgen", "group:\xe2\x82\xac"};
    event_t *event =
        DECODE_OK({"id", S("\xc3\xa4\xe2\x82\xac\xf0\x9d\x84\x9e")}, {"actor", S("J\xc3\xbcrgen")},
                  {"resource", S("/dms/\xc3\xa4")}, {"readers", STRS(unicode_readers, 2)},
                  {"data", RAW("\x81\xa2\xc3\xa4\xa2\xc3\xa4")});
    assert_view(event, event->id, "\xc3\xa4\xe2\x82\xac\xf0\x9d\x84\x9e");
    assert_view(event, event->readers[0], "user:j\xc3\xbcrgen");
    event_free(event);
}
END_TEST

START_TEST(test_event_type_values)
{
    static const struct {
        const char *name;
        event_change_t type;
    } types[] = {
        {"created", EVENT_CREATED}, {"updated", EVENT_UPDATED}, {"deleted", EVENT_DELETED}};
    for (size_t i = 0; i < 3; i++) {
        event_t *event =
            expect_ok(__LINE__, (const struct entry[]){{"type", SN(types[i].name, 7)}}, 1);
        ck_assert_int_eq(event->type, types[i].type);
        event_free(event);
    }
    EXPECT_REFUSED(HEROLD_E_BAD_CHANGE_TYPE, "type: 'moved' is not created, updated or deleted",
                   {"type", S("moved")});
    EXPECT_REFUSED(HEROLD_E_BAD_CHANGE_TYPE, "'Created'", {"type", S("Created")});
    EXPECT_REFUSED(HEROLD_E_BAD_CHANGE_TYPE, "type: ''", {"type", S("")});
    EXPECT_REFUSED(HEROLD_E_BAD_CHANGE_TYPE, "'created,updated'", {"type", S("created,updated")});
    EXPECT_REFUSED(HEROLD_E_BAD_CHANGE_TYPE, "' created'", {"type", S(" created")});
}
END_TEST

START_TEST(test_event_kind_characters)
{
    EXPECT_OK({"kind", S("driveItem")});
    EXPECT_OK({"kind", S("A-Z_a-z.0-9")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "kind: 'drive item': byte 5", {"kind", S("drive item")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "byte 0", {"kind", S("#herold")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "byte 3", {"kind", S("doc/x")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "byte 1", {"kind", S("d\xc3\xa4")});
}
END_TEST

/* ---- time ---- */

START_TEST(test_event_time_limits)
{
    event_t *event = DECODE_OK({"time", U(1)});
    ck_assert_int_eq(event->time_ms, 1);
    event_free(event);
    event = DECODE_OK({"time", U(EVENT_MAX_TIME_MS)});
    ck_assert_int_eq(event->time_ms, EVENT_MAX_TIME_MS);
    event_free(event);
    event = DECODE_OK({"time", FIXI(42)});
    ck_assert_int_eq(event->time_ms, 42);
    event_free(event);
    event = DECODE_OK({"time", RAW("\xd0\x05")}); /* int8 5 */
    ck_assert_int_eq(event->time_ms, 5);
    event_free(event);

    EXPECT_REFUSED(HEROLD_E_BAD_TIME, "time: 253402300800000 is after",
                   {"time", U(EVENT_MAX_TIME_MS + 1)});
    EXPECT_REFUSED(HEROLD_E_BAD_TIME, "time: 18446744073709551615", {"time", U(UINT64_MAX)});
    EXPECT_REFUSED(HEROLD_E_BAD_TIME, "time: 0 is not after the epoch", {"time", U(0)});
    EXPECT_REFUSED(HEROLD_E_BAD_TIME, "time: -1 is before the epoch", {"time", I(-1)});
    EXPECT_REFUSED(HEROLD_E_BAD_TIME, "time: -9223372036854775808", {"time", I(INT64_MIN)});
}
END_TEST

/* ---- paths ---- */

START_TEST(test_event_path_limits)
{
    static const char *const fields[] = {"resource", "previous"};
    for (size_t f = 0; f < 2; f++) {
        char needle[96];
        char *path = path_of_segments(PATH_MAX_SEGMENTS);
        event_t *event =
            expect_ok(__LINE__, (const struct entry[]){{fields[f], SN(path, strlen(path))}}, 1);
        const path_t *parsed = f == 0 ? &event->resource_path : &event->previous_path;
        ck_assert_uint_eq(parsed->segment_count, PATH_MAX_SEGMENTS);
        ck_assert(parsed->segments[31].p >= event->raw &&
                  parsed->segments[31].p < event->raw + event->raw_len);
        event_free(event);
        free(path);

        path = path_of_segments(PATH_MAX_SEGMENTS + 1);
        snprintf(needle, sizeof(needle), "%s: segment 33 exceeds the 32-segment limit", fields[f]);
        expect_refused(__LINE__, HEROLD_E_BAD_PATH, needle,
                       (const struct entry[]){{fields[f], SN(path, strlen(path))}}, 1);
        free(path);

        path = path_of_bytes(PATH_MAX_BYTES);
        ck_assert_uint_eq(strlen(path), 1024);
        event = expect_ok(__LINE__, (const struct entry[]){{fields[f], SN(path, 1024)}}, 1);
        ck_assert_uint_eq(f == 0 ? event->resource.len : event->previous.len, 1024);
        event_free(event);
        free(path);

        path = path_of_bytes(PATH_MAX_BYTES + 1);
        snprintf(needle, sizeof(needle), "%s: 1025 bytes exceeds the 1024-byte limit", fields[f]);
        expect_refused(__LINE__, HEROLD_E_FIELD_TOO_LONG, needle,
                       (const struct entry[]){{fields[f], SN(path, 1025)}}, 1);
        free(path);
    }
}
END_TEST

START_TEST(test_event_refuses_invalid_paths)
{
    static const char *const invalid[] = {"",
                                          "dms/a",
                                          "/dms//a",
                                          "/dms/a/",
                                          "/",
                                          "/a/../b",
                                          "/a/./b",
                                          "/a/*/b",
                                          "/a\x01"
                                          "b",
                                          "/a\x7f",
                                          " /a"};
    static const char *const fields[] = {"resource", "previous"};
    for (size_t f = 0; f < 2; f++) {
        for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
            char needle[32];
            snprintf(needle, sizeof(needle), "%s: ", fields[f]);
            expect_refused(__LINE__, HEROLD_E_BAD_PATH, needle,
                           (const struct entry[]){{fields[f], SN(invalid[i], strlen(invalid[i]))}},
                           1);
        }
    }
    /* Characters that are not separators are segment bytes, compared as they are. */
    event_t *event = DECODE_OK({"resource", S("/calendar/users/anna/events/x%20y")},
                               {"previous", S("/a/.../b c")});
    ck_assert_uint_eq(event->resource_path.segment_count, 5);
    assert_view(event, event->resource_path.segments[4], "x%20y");
    assert_view(event, event->previous_path.segments[1], "...");
    event_free(event);
}
END_TEST

/* ---- readers ---- */

START_TEST(test_event_readers_count_limit)
{
    char(*storage)[16] = malloc((EVENT_MAX_READERS + 1) * 16);
    const char **readers = malloc((EVENT_MAX_READERS + 1) * sizeof(*readers));
    for (size_t i = 0; i <= EVENT_MAX_READERS; i++) {
        snprintf(storage[i], 16, "user:u%zu", i);
        readers[i] = storage[i];
    }
    event_t *event = DECODE_OK({"readers", STRS(readers, EVENT_MAX_READERS)});
    ck_assert_uint_eq(event->reader_count, EVENT_MAX_READERS);
    assert_view(event, event->readers[0], "user:u0");
    assert_view(event, event->readers[EVENT_MAX_READERS - 1], "user:u1023");
    event_free(event);

    EXPECT_REFUSED(HEROLD_E_TOO_MANY_READERS, "readers: 1025 entries exceeds the 1024-entry limit",
                   {"readers", STRS(readers, EVENT_MAX_READERS + 1)});
    free(readers);
    free(storage);
}
END_TEST

START_TEST(test_event_refuses_bad_readers)
{
    static const char *const bad[] = {
        "usr:x",      "User:anna", "user",      "user:",     "group:",        "**", "",
        " user:anna", "user:a b",  "user:a\tb", "user:\x7f", "user:\xc2\x85", "*x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *readers[] = {"user:anna", "group:bau", "*", bad[i]};
        expect_refused(__LINE__, HEROLD_E_BAD_PRINCIPAL,
                       "readers[3]: ", (const struct entry[]){{"readers", STRS(readers, 4)}}, 1);
    }
    static const char *const usr[] = {"user:anna", "group:bau", "*", "usr:x"};
    EXPECT_REFUSED(HEROLD_E_BAD_PRINCIPAL, "readers[3]: 'usr:x' is not user:<id>, group:<id> or *",
                   {"readers", STRS(usr, 4)});

    char long_id[6 + 130];
    snprintf(long_id, sizeof(long_id), "group:%0128d", 0);
    const char *at_limit[] = {long_id};
    event_t *event = DECODE_OK({"readers", STRS(at_limit, 1)});
    ck_assert_uint_eq(event->readers[0].len, 6 + 128);
    event_free(event);
    strcat(long_id, "1");
    EXPECT_REFUSED(HEROLD_E_BAD_PRINCIPAL, "129 bytes, over the 128-byte limit",
                   {"readers", STRS(at_limit, 1)});
}
END_TEST

/* ---- data ---- */

/* data = {"k": "xxx…"} of exactly size encoded bytes (size 38..65000). */
static void pack_data_of_size(msgpack_sbuffer *sb, size_t size)
{
    msgpack_packer pk;
    size_t text_len = size - 6; /* fixmap, fixstr "k", str16 header */
    char *text = filled(text_len, 'x');
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "k", 1);
    msgpack_pack_str_with_body(&pk, text, text_len);
    free(text);
    ck_assert_uint_eq(sb->size, size);
}

/* A data value with depth levels of nesting, data itself counting as level 1 (depth >= 2):
 * maps {"n": {"n": … {"leaf": 1}}}, or, when is_array, {"a": [[…[1]]]}. */
static size_t nested_data(char *out, size_t depth, bool is_array)
{
    size_t len = 0;
    if (is_array) {
        memcpy(out,
               "\x81\xa1"
               "a",
               3);
        len = 3;
        for (size_t i = 0; i + 2 < depth; i++) {
            out[len++] = (char)0x91;
        }
        memcpy(out + len, "\x91\x01", 2);
        return len + 2;
    }
    for (size_t i = 0; i + 1 < depth; i++) {
        memcpy(out + len, "\x81\xa1n", 3);
        len += 3;
    }
    memcpy(out + len, "\x81\xa4leaf\x01", 7);
    return len + 7;
}

START_TEST(test_event_data_size_limit)
{
    msgpack_sbuffer data;
    pack_data_of_size(&data, EVENT_MAX_DATA_BYTES);
    event_t *event = DECODE_OK({"data", RAWN(data.data, data.size)});
    ck_assert_uint_eq(event->data.len, EVENT_MAX_DATA_BYTES);
    ck_assert_mem_eq(event->data.p, data.data, data.size);
    event_free(event);
    msgpack_sbuffer_destroy(&data);

    pack_data_of_size(&data, EVENT_MAX_DATA_BYTES + 1);
    EXPECT_REFUSED(HEROLD_E_FIELD_TOO_LONG, "data: 4097 encoded bytes exceeds the 4096-byte limit",
                   {"data", RAWN(data.data, data.size)});
    msgpack_sbuffer_destroy(&data);

    /* The size is that of the bytes as sent: a map16 header for a one-entry map counts. */
    event = DECODE_OK({"data", RAW("\xde\x00\x01\xa1k\x01")});
    ck_assert_uint_eq(event->data.len, 6);
    ck_assert_mem_eq(event->data.p, "\xde\x00\x01\xa1k\x01", 6);
    event_free(event);
    event = DECODE_OK({"data", RAW("\x80")});
    ck_assert_uint_eq(event->data.len, 1);
    event_free(event);
}
END_TEST

START_TEST(test_event_data_depth_limit)
{
    char data[256];
    for (int is_array = 0; is_array < 2; is_array++) {
        size_t len = nested_data(data, EVENT_MAX_DATA_DEPTH, is_array);
        EXPECT_OK({"data", RAWN(data, len)});
        len = nested_data(data, EVENT_MAX_DATA_DEPTH + 1, is_array);
        EXPECT_REFUSED(HEROLD_E_FIELD_TOO_LONG, "nested 17 levels deep, over the 16-level limit",
                       {"data", RAWN(data, len)});
    }
    /* Arrays and maps mixed; the innermost named by its path. */
    size_t len = nested_data(data, EVENT_MAX_DATA_DEPTH + 1, false);
    EXPECT_REFUSED(HEROLD_E_FIELD_TOO_LONG, "data.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n: nested 17",
                   {"data", RAWN(data, len)});
    /* Far deeper than any valid message: refused by the structural scan. */
    len = nested_data(data, 40, false);
    EXPECT_REFUSED(HEROLD_E_MALFORMED, "nested deeper than the 24-level limit",
                   {"data", RAWN(data, len)});
    len = nested_data(data, 23, true);
    EXPECT_REFUSED(HEROLD_E_FIELD_TOO_LONG, "nested 17", {"data", RAWN(data, len)});
    len = nested_data(data, 24, true);
    EXPECT_REFUSED(HEROLD_E_MALFORMED, "nested deeper", {"data", RAWN(data, len)});
}
END_TEST

START_TEST(test_event_data_must_have_json_form)
{
    EXPECT_OK({"data", RAW("\x87\xa1n\xc0\xa1t\xc3\xa1"
                           "f\xc2\xa1i\xff\xa1u\xcc\xc8"
                           "\xa1"
                           "d\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00\xa1"
                           "a\x92\x01\xa1x")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "data: key 0 must be a str, got int",
                   {"data", RAW("\x81\x01\x02")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "data.a: key 1 must be a str, got bin",
                   {"data", RAW("\x81\xa1"
                                "a\x82\xa1x\x01\xc4\x01y\x02")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "data.blob: bin has no JSON form",
                   {"data", RAW("\x81\xa4"
                                "blob\xc4\x02\x00\x01")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "data.list[1]: ext has no JSON form",
                   {"data", RAW("\x81\xa4list\x92\x01\xd4\x01\x00")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "data.x: NaN and infinity",
                   {"data", RAW("\x81\xa1x\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00")});
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "data.x: NaN and infinity",
                   {"data", RAW("\x81\xa1x\xca\xff\x80\x00\x00")});
    /* A long key is cut in the label. */
    EXPECT_REFUSED(HEROLD_E_FIELD_TYPE, "data.abcdefghijklmnop...: bin",
                   {"data", RAW("\x81\xb4"
                                "abcdefghijklmnopqrst\xc4\x00")});
}
END_TEST

/* ---- change types and principals ---- */

START_TEST(test_event_change_names)
{
    ck_assert_str_eq(event_change_name(EVENT_CREATED), "created");
    ck_assert_str_eq(event_change_name(EVENT_UPDATED), "updated");
    ck_assert_str_eq(event_change_name(EVENT_DELETED), "deleted");
    ck_assert_ptr_null(event_change_name((event_change_t)0));
    ck_assert_ptr_null(event_change_name((event_change_t)EVENT_CHANGE_ALL));
    ck_assert_ptr_null(event_change_name((event_change_t)(1u << 3)));

    ck_assert_int_eq(event_change_parse("created", 7), EVENT_CREATED);
    ck_assert_int_eq(event_change_parse("updated", 7), EVENT_UPDATED);
    ck_assert_int_eq(event_change_parse("deleted", 7), EVENT_DELETED);
    ck_assert_int_eq(event_change_parse("created", 6), 0);
    ck_assert_int_eq(event_change_parse("createdx", 8), 0);
    ck_assert_int_eq(event_change_parse("CREATED", 7), 0);
    ck_assert_int_eq(event_change_parse(NULL, 0), 0);
    ck_assert_int_eq(event_change_parse("", 0), 0);
}
END_TEST

static void expect_mask(const char *text, unsigned expected)
{
    unsigned mask = 0x5a5a;
    struct herr err;
    herr_clear(&err);
    int rc = event_change_mask_parse(text, strlen(text), &mask, &err);
    ck_assert_msg(rc == 0, "'%s' refused: %s", text, err.message);
    ck_assert_uint_eq(mask, expected);
}

static void expect_mask_refused(const char *text, const char *needle)
{
    unsigned mask = 0x5a5a;
    struct herr err;
    herr_clear(&err);
    int rc = event_change_mask_parse(text, strlen(text), &mask, &err);
    ck_assert_msg(rc == HEROLD_E_BAD_CHANGE_TYPE, "'%s' not refused (%d)", text, rc);
    ck_assert_int_eq(err.code, HEROLD_E_BAD_CHANGE_TYPE);
    ck_assert_uint_eq(mask, 0x5a5a); /* untouched on failure */
    ck_assert_msg(strstr(err.message, needle) != NULL, "'%s': message '%s' lacks '%s'", text,
                  err.message, needle);
}

START_TEST(test_event_change_mask_parse)
{
    expect_mask("created", EVENT_CREATED);
    expect_mask("deleted", EVENT_DELETED);
    expect_mask("created,updated", EVENT_CREATED | EVENT_UPDATED);
    expect_mask("deleted,created", EVENT_CREATED | EVENT_DELETED);
    expect_mask("created,updated,deleted", EVENT_CHANGE_ALL);
    expect_mask("created, updated", EVENT_CREATED | EVENT_UPDATED);
    expect_mask("  created ,  updated  ,deleted ", EVENT_CHANGE_ALL);

    expect_mask_refused("", "changeType: empty");
    expect_mask_refused(" ", "empty name at byte 0");
    expect_mask_refused("created,", "empty name at byte 8");
    expect_mask_refused(",created", "empty name at byte 0");
    expect_mask_refused("created,,updated", "empty name at byte 8");
    expect_mask_refused("created, ,updated", "empty name");
    expect_mask_refused("created,created", "'created' is given twice");
    expect_mask_refused("updated, deleted ,updated", "'updated' is given twice");
    expect_mask_refused("moved", "'moved' is not created, updated or deleted");
    expect_mask_refused("Created", "'Created'");
    expect_mask_refused("created\t", "'created\\x09'");
    expect_mask_refused("created;updated", "'created;updated'");
    expect_mask_refused("created updated", "'created updated'");

    unsigned mask = 7;
    ck_assert_int_eq(event_change_mask_parse(NULL, 0, &mask, NULL), HEROLD_E_BAD_CHANGE_TYPE);
    ck_assert_uint_eq(mask, 7);
}
END_TEST

static int principal(const char *text)
{
    struct herr err;
    return event_principal_validate(text, strlen(text), "who", &err);
}

START_TEST(test_event_principal_validate)
{
    char id[8 + 130];
    ck_assert_int_eq(principal("*"), 0);
    ck_assert_int_eq(principal("user:anna"), 0);
    ck_assert_int_eq(principal("group:bau"), 0);
    ck_assert_int_eq(principal("user:j\xc3\xbcrgen"), 0);
    ck_assert_int_eq(principal("user:a:b"), 0);
    ck_assert_int_eq(principal("group:*"), 0);
    ck_assert_int_eq(principal("user:\xc2\xa0"), 0); /* U+00A0 is not C1 */
    snprintf(id, sizeof(id), "user:%0128d", 0);
    ck_assert_int_eq(principal(id), 0);
    snprintf(id, sizeof(id), "user:%0129d", 0);
    ck_assert_int_eq(principal(id), HEROLD_E_BAD_PRINCIPAL);
    snprintf(id, sizeof(id), "group:%0128d", 0);
    ck_assert_int_eq(principal(id), 0);
    snprintf(id, sizeof(id), "group:%0129d", 0);
    ck_assert_int_eq(principal(id), HEROLD_E_BAD_PRINCIPAL);

    static const char *const bad[] = {
        "",          "**",        "*x",        "user",          "user:",         "group:",
        "usr:x",     "User:anna", "GROUP:bau", " user:anna",    "user:anna ",    "user:a b",
        "user:a\tb", "user:\n",   "user:\x7f", "user:\xc2\x80", "user:\xc2\x9f", "user:\xff",
        "user:\xc3", "everyone"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(principal(bad[i]) == HEROLD_E_BAD_PRINCIPAL, "'%s' accepted", bad[i]);
    }

    struct herr err;
    ck_assert_int_eq(event_principal_validate("usr:x", 5, "readers[3]", &err),
                     HEROLD_E_BAD_PRINCIPAL);
    ck_assert_int_eq(err.code, HEROLD_E_BAD_PRINCIPAL);
    ck_assert_str_eq(err.message, "readers[3]: 'usr:x' is not user:<id>, group:<id> or *");
    ck_assert_int_eq(event_principal_validate("user:a b", 8, "sub", &err), HEROLD_E_BAD_PRINCIPAL);
    ck_assert_ptr_nonnull(strstr(err.message, "sub: 'user:a b' has a space"));
    ck_assert_int_eq(event_principal_validate("user:\x01", 6, "x", &err), HEROLD_E_BAD_PRINCIPAL);
    ck_assert_ptr_nonnull(strstr(err.message, "'user:\\x01' has a control character"));
    ck_assert_int_eq(event_principal_validate("user:", 5, NULL, &err), HEROLD_E_BAD_PRINCIPAL);
    ck_assert_ptr_nonnull(strstr(err.message, "principal: 'user:' has an empty id"));
    /* The length is the caller's: a NUL inside is a control character, not an end. */
    ck_assert_int_eq(event_principal_validate("user:a\0b", 8, "x", NULL), HEROLD_E_BAD_PRINCIPAL);
    ck_assert_int_eq(event_principal_validate("user:abc", 6, "x", NULL), 0);
}
END_TEST

/* ---- peek and free ---- */

START_TEST(test_event_peek_id)
{
    msgpack_sbuffer sb;
    hstr_t id = {NULL, 0};

    pack_event(&sb, NULL, 0);
    ck_assert(event_peek_id(sb.data, sb.size, &id));
    ck_assert_uint_eq(id.len, 5);
    ck_assert_mem_eq(id.p, "evt-1", 5);
    ck_assert(id.p >= sb.data && id.p < sb.data + sb.size);
    /* Still found when what follows the id is damaged or cut. */
    ck_assert(event_peek_id(sb.data, 12, &id));
    ck_assert(!event_peek_id(sb.data, 6, &id));
    msgpack_sbuffer_destroy(&sb);

    /* After other sound entries, and in an over-long message. */
    const struct entry later[] = {{"source", S("dms")}, {"colour", U(1)}, {"id", S("late")}};
    pack_exact(&sb, later, 3);
    ck_assert(event_peek_id(sb.data, sb.size, &id));
    ck_assert_mem_eq(id.p, "late", 4);
    msgpack_sbuffer_destroy(&sb);

    ck_assert(!event_peek_id("", 0, &id));
    ck_assert(!event_peek_id(NULL, 0, &id));
    ck_assert(!event_peek_id("\x92\xa2id\xa1x", 5, &id));
    ck_assert(!event_peek_id("\x81\xa2id\x05", 5, &id));
    ck_assert(!event_peek_id("\x81\xa2id\xc4\x01x", 7, &id));
    ck_assert(!event_peek_id("\x81\xa2id\xa0", 5, &id));
    ck_assert(!event_peek_id("\x81\xa2id\xa1\xff", 6, &id));
    ck_assert(!event_peek_id("\x81\xa2ix\xa1x", 6, &id));
    ck_assert(!event_peek_id("\x82\xa1x\xdd\xff\xff\xff\xff\xa2id\xa1x", 14, &id));
    ck_assert(!event_peek_id("\x82\xa1x\xc1\xa2id\xa1x", 9, &id));
    ck_assert(event_peek_id("\x82\xa1x\x91\x01\xa2id\xa1x", 10, &id));

    char *long_id = filled(EVENT_MAX_ID_BYTES + 1, 'i');
    pack_event(&sb, CHANGES({"id", SN(long_id, EVENT_MAX_ID_BYTES)}));
    ck_assert(event_peek_id(sb.data, sb.size, &id));
    ck_assert_uint_eq(id.len, EVENT_MAX_ID_BYTES);
    msgpack_sbuffer_destroy(&sb);
    pack_event(&sb, CHANGES({"id", SN(long_id, EVENT_MAX_ID_BYTES + 1)}));
    ck_assert(!event_peek_id(sb.data, sb.size, &id));
    msgpack_sbuffer_destroy(&sb);
    free(long_id);
}
END_TEST

/* The origin (source and id) read without decoding, as dedup's rebuild does. */
START_TEST(test_event_peek_origin)
{
    msgpack_sbuffer sb;
    hstr_t source = {NULL, 0};
    hstr_t id = {NULL, 0};

    pack_event(&sb, NULL, 0);
    ck_assert(event_peek_origin(sb.data, sb.size, &source, &id));
    ck_assert_uint_eq(id.len, 5);
    ck_assert_mem_eq(id.p, "evt-1", 5);
    ck_assert_uint_eq(source.len, 3);
    ck_assert_mem_eq(source.p, "dms", 3);
    ck_assert(source.p >= sb.data && source.p < sb.data + sb.size);
    msgpack_sbuffer_destroy(&sb);

    /* Any order, other entries between. */
    const struct entry reordered[] = {
        {"data", RAW("\x81\xa1k\x91\x01")}, {"id", S("x")}, {"colour", U(1)}, {"source", S("s")}};
    pack_exact(&sb, reordered, 4);
    ck_assert(event_peek_origin(sb.data, sb.size, &source, &id));
    ck_assert_mem_eq(id.p, "x", 1);
    ck_assert_mem_eq(source.p, "s", 1);
    /* Cut before the source: refused. */
    ck_assert(!event_peek_origin(sb.data, sb.size - 2, &source, &id));
    msgpack_sbuffer_destroy(&sb);

    /* Missing, not a str, empty, repeated, too long: refused. */
    pack_event(&sb, CHANGES({"source", OMIT}));
    ck_assert(!event_peek_origin(sb.data, sb.size, &source, &id));
    msgpack_sbuffer_destroy(&sb);
    pack_event(&sb, CHANGES({"source", U(3)}));
    ck_assert(!event_peek_origin(sb.data, sb.size, &source, &id));
    msgpack_sbuffer_destroy(&sb);
    pack_event(&sb, CHANGES({"id", S("")}));
    ck_assert(!event_peek_origin(sb.data, sb.size, &source, &id));
    msgpack_sbuffer_destroy(&sb);
    const struct entry twice[] = {{"id", S("a")}, {"id", S("b")}, {"source", S("s")}};
    pack_exact(&sb, twice, 3);
    ck_assert(!event_peek_origin(sb.data, sb.size, &source, &id));
    msgpack_sbuffer_destroy(&sb);
    char *long_source = filled(EVENT_MAX_SOURCE_BYTES + 1, 's');
    pack_event(&sb, CHANGES({"source", SN(long_source, EVENT_MAX_SOURCE_BYTES)}));
    ck_assert(event_peek_origin(sb.data, sb.size, &source, &id));
    ck_assert_uint_eq(source.len, EVENT_MAX_SOURCE_BYTES);
    msgpack_sbuffer_destroy(&sb);
    pack_event(&sb, CHANGES({"source", SN(long_source, EVENT_MAX_SOURCE_BYTES + 1)}));
    ck_assert(!event_peek_origin(sb.data, sb.size, &source, &id));
    msgpack_sbuffer_destroy(&sb);
    free(long_source);
    ck_assert(!event_peek_origin(NULL, 0, &source, &id));
    ck_assert(!event_peek_origin("\x92\xa2id\xa1x", 5, &source, &id));
}
END_TEST

START_TEST(test_event_free_null)
{
    event_free(NULL);
    ck_assert(true);
}
END_TEST

/* ---- fixture files ---- */

static char *read_fixture(const char *name, size_t *len)
{
    const char *dir = getenv("HEROLD_FIXTURES");
    char path[1024];
    snprintf(path, sizeof(path), "%s/event/%s.msgpack", dir != NULL ? dir : EVENT_FIXTURE_DIR,
             name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL,
                  "cannot open fixture %s (run from the repository root or set "
                  "HEROLD_FIXTURES)",
                  path);
    size_t capacity = 128 * 1024;
    char *data = malloc(capacity);
    *len = fread(data, 1, capacity, f);
    ck_assert_msg(!ferror(f) && feof(f), "cannot read fixture %s", path);
    fclose(f);
    return data;
}

START_TEST(test_event_fixtures)
{
    static const struct {
        const char *name;
        int code;
        const char *needle;
    } fixtures[] = {
        {"valid_full", 0, NULL},
        {"valid_minimal", 0, NULL},
        {"empty", HEROLD_E_MALFORMED, "empty"},
        {"truncated", HEROLD_E_MALFORMED, "truncated"},
        {"truncated_header", HEROLD_E_MALFORMED, "truncated"},
        {"not_a_map", HEROLD_E_MALFORMED, "top level is a msgpack array"},
        {"trailing_bytes", HEROLD_E_MALFORMED, "1 byte after the end of the map"},
        {"two_events", HEROLD_E_MALFORMED, "120 bytes after the end of the map"},
        {"invalid_byte", HEROLD_E_MALFORMED, "0xc1"},
        {"huge_array_claim", HEROLD_E_MALFORMED, "claims 4294967295"},
        {"huge_map_claim", HEROLD_E_MALFORMED, "claims 4294967295"},
        {"huge_str_claim", HEROLD_E_MALFORMED, "truncated"},
        {"oversize_message", HEROLD_E_TOO_LARGE, "65537 bytes"},
        {"oversize_field", HEROLD_E_FIELD_TOO_LONG, "id: 129 bytes"},
        {"oversize_readers", HEROLD_E_TOO_MANY_READERS, "1025 entries"},
        {"oversize_data", HEROLD_E_FIELD_TOO_LONG, "data: 4097"},
        {"bin_key", HEROLD_E_MALFORMED, "is a msgpack bin; keys must be str"},
        {"int_key", HEROLD_E_MALFORMED, "is a msgpack int; keys must be str"},
        {"bin_value", HEROLD_E_FIELD_TYPE, "id: must be a str, got bin"},
        {"duplicate_key", HEROLD_E_DUPLICATE_FIELD, "id: given twice"},
        {"unknown_key", HEROLD_E_UNKNOWN_FIELD, "'colour'"},
        {"bad_utf8", HEROLD_E_BAD_UTF8, "source: not valid UTF-8"},
        {"deep_nesting", HEROLD_E_MALFORMED, "nested deeper"},
        {"data_too_deep", HEROLD_E_FIELD_TOO_LONG, "over the 16-level limit"},
        {"missing_field", HEROLD_E_MISSING_FIELD, "readers: required"},
        {"negative_time", HEROLD_E_BAD_TIME, "time: -1"},
    };
    for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
        size_t len;
        char *data = read_fixture(fixtures[i].name, &len);
        if (fixtures[i].code == 0) {
            event_t *event = NULL;
            struct herr err;
            herr_clear(&err);
            ck_assert_msg(event_decode(data, len, &event, &err) == 0, "%s refused: %s",
                          fixtures[i].name, err.message);
            ck_assert_uint_eq(event->raw_len, len);
            event_free(event);
        } else {
            expect_refused_bytes(__LINE__, data, len, fixtures[i].code, fixtures[i].needle);
        }
        free(data);
    }
}
END_TEST

static Suite *event_suite(void)
{
    Suite *s = suite_create("event");
    TCase *tc = tcase_create("decode");
    tcase_add_test(tc, test_event_decodes_full_event);
    tcase_add_test(tc, test_event_decodes_minimal_event);
    tcase_add_test(tc, test_event_decoder_reuse_matches_fresh_decoding);
    tcase_add_test(tc, test_event_decoder_hands_out_blocks_in_the_order_taken_back);
    tcase_add_test(tc, test_event_accepts_any_key_order_and_encoding);
    tcase_add_test(tc, test_event_reads_every_encoding_of_str_uint_and_reader_arrays);
    tcase_add_test(tc, test_event_message_size_limit);
    tcase_add_test(tc, test_event_refuses_every_truncation);
    tcase_add_test(tc, test_event_refuses_malformed_structure);
    tcase_add_test(tc, test_event_refuses_non_str_keys);
    tcase_add_test(tc, test_event_refuses_unknown_fields);
    tcase_add_test(tc, test_event_refuses_duplicate_fields);
    tcase_add_test(tc, test_event_reports_first_missing_field);
    tcase_add_test(tc, test_event_reports_first_error_in_message_order);
    tcase_add_test(tc, test_event_string_length_limits);
    tcase_add_test(tc, test_event_refuses_wrong_types);
    tcase_add_test(tc, test_event_refuses_bad_utf8_in_every_string);
    tcase_add_test(tc, test_event_type_values);
    tcase_add_test(tc, test_event_kind_characters);
    tcase_add_test(tc, test_event_time_limits);
    tcase_add_test(tc, test_event_path_limits);
    tcase_add_test(tc, test_event_refuses_invalid_paths);
    tcase_add_test(tc, test_event_readers_count_limit);
    tcase_add_test(tc, test_event_refuses_bad_readers);
    tcase_add_test(tc, test_event_data_size_limit);
    tcase_add_test(tc, test_event_data_depth_limit);
    tcase_add_test(tc, test_event_data_must_have_json_form);
    tcase_add_test(tc, test_event_peek_id);
    tcase_add_test(tc, test_event_peek_origin);
    tcase_add_test(tc, test_event_free_null);
    tcase_add_test(tc, test_event_fixtures);
    suite_add_tcase(s, tc);

    TCase *names = tcase_create("names");
    tcase_add_test(names, test_event_change_names);
    tcase_add_test(names, test_event_change_mask_parse);
    tcase_add_test(names, test_event_principal_validate);
    suite_add_tcase(s, names);
    return s;
}

int main(void)
{
    SRunner *runner = srunner_create(event_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failures = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failures ? 1 : 0;
}
