/*
 * The store's conformance suite: every behaviour of store.h, run on both backends — the
 * embedded one in a fresh directory, PostgreSQL in a database whose herold_broker schema
 * is dropped before each test — plus what only PostgreSQL has (the writer lock, the schema
 * files, a server that goes away).
 *
 * PostgreSQL comes from the environment: HEROLD_TEST_PG, a libpq conninfo (as printed by
 * `tests/pg-server start DIR`), and HEROLD_TEST_PG_DIR, that DIR, for the test that stops
 * and restarts the server. Unset, those cases fail and say so; HEROLD_TEST_PG=skip leaves
 * them out on purpose.
 */

#include <check.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "store_pg.h"
#include "unit.h"

#define TEST_TIMEOUT_SECONDS 60
#define RECONNECT_DEADLINE_MS 15000
#define PG_SERVER "tests/pg-server"
#define SCHEMA_FILE "schemas/sql/001_init.sql"

enum backend {
    BACKEND_EMBEDDED = 0,
    BACKEND_PG = 1,
    BACKEND_MEMORY = 2, /* keeps nothing across a reopen: only the cases without one */
};

struct env {
    enum backend backend;
    char dir[64];
    store_config_t config;
};

/* ---- environment ---- */

static const char *pg_conninfo(void)
{
    const char *conninfo = getenv("HEROLD_TEST_PG");
    ck_assert_msg(conninfo != NULL && conninfo[0] != '\0',
                  "HEROLD_TEST_PG is not set: run `CONN=$(tests/pg-server start DIR)` and set "
                  "HEROLD_TEST_PG=\"$CONN\" HEROLD_TEST_PG_DIR=DIR (or HEROLD_TEST_PG=skip to "
                  "leave the PostgreSQL cases out)");
    return conninfo;
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* A connection of the test's own, beside the store's. */
static PGconn *pg_connect(void)
{
    PGconn *conn = PQconnectdb(pg_conninfo());
    ck_assert_msg(PQstatus(conn) == CONNECTION_OK, "cannot connect to HEROLD_TEST_PG: %s",
                  PQerrorMessage(conn));
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    return conn;
}

static void pg_run(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType status = PQresultStatus(res);
    ck_assert_msg(status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK, "%s: %s", sql,
                  PQresultErrorMessage(res));
    PQclear(res);
}

static void pg_server(const char *command)
{
    const char *dir = getenv("HEROLD_TEST_PG_DIR");
    ck_assert_msg(dir != NULL && dir[0] != '\0',
                  "HEROLD_TEST_PG_DIR is not set: give it the DIR of `tests/pg-server start DIR` "
                  "(the server of HEROLD_TEST_PG)");
    char line[512];
    snprintf(line, sizeof(line), "%s %s '%s' >/dev/null", PG_SERVER, command, dir);
    ck_assert_msg(system(line) == 0, "`%s` failed", line);
}

static void env_init(struct env *env, int backend)
{
    memset(env, 0, sizeof(*env));
    env->backend = backend;
    if (backend == BACKEND_MEMORY) {
        return;
    }
    if (backend == BACKEND_EMBEDDED) {
        snprintf(env->dir, sizeof(env->dir), "/tmp/herold-conformance-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(env->dir));
        env->config.data_dir = env->dir;
    } else {
        env->config.conninfo = pg_conninfo();
        PGconn *conn = pg_connect();
        pg_run(conn, "DROP SCHEMA IF EXISTS herold_broker CASCADE");
        PQfinish(conn);
    }
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void env_clear(struct env *env)
{
    if (env->backend == BACKEND_EMBEDDED) {
        nftw(env->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
}

static store_t *env_try_open(struct env *env, const store_loader_t *loader, struct herr *err)
{
    switch (env->backend) {
    case BACKEND_EMBEDDED:
        return store_file_open(&env->config, loader, err);
    case BACKEND_MEMORY:
        return store_mem_open(&env->config, loader, err);
    default:
        return store_pg_open(&env->config, loader, err);
    }
}

static store_t *env_open(struct env *env, const store_loader_t *loader)
{
    struct herr err = {0};
    store_t *store = env_try_open(env, loader, &err);
    ck_assert_msg(store != NULL, "open failed: %s", err.message);
    static const char *const names[] = {"embedded", "postgresql", "memory"};
    ck_assert_str_eq(store_name(store), names[env->backend]);
    return store;
}

static int64_t monotonic_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* ---- events ---- */

/* A payload that tells events apart by content and length (len 0 included). */
static size_t make_payload(uint64_t i, unsigned char *out, size_t max)
{
    size_t len = (size_t)(i * 37 % 301);
    if (len > max) {
        len = max;
    }
    for (size_t k = 0; k < len; k++) {
        out[k] = (unsigned char)(i * 131 + k * 7);
    }
    return len;
}

static int64_t make_time(uint64_t i)
{
    return 1700000000000LL + (int64_t)i * 1000;
}

/* Appends events first..last (their payloads by make_payload) and checks the seqs. */
static void append_range(store_t *store, uint64_t first, uint64_t last)
{
    unsigned char payload[512];
    for (uint64_t i = first; i <= last; i++) {
        size_t len = make_payload(i, payload, sizeof(payload));
        uint64_t seq = 0;
        struct herr err = {0};
        ck_assert_msg(store_event_append(store, payload, len, make_time(i), &seq, &err) == 0,
                      "append %llu: %s", (unsigned long long)i, err.message);
        ck_assert_uint_eq(seq, i);
    }
}

static void commit(store_t *store)
{
    struct herr err = {0};
    ck_assert_msg(store_event_commit(store, &err) == 0, "commit: %s", err.message);
}

struct record_copy {
    uint64_t seq;
    int64_t time_ms;
    size_t len;
    unsigned char *payload;
};

struct collected {
    struct record_copy *items;
    size_t count;
    size_t capacity;
    size_t stop_after; /* fn returns false once this many were seen; 0: never */
};

static bool collect_record(const journal_record_t *record, void *ctx)
{
    struct collected *c = ctx;
    if (c->count == c->capacity) {
        c->capacity = c->capacity > 0 ? c->capacity * 2 : 16;
        c->items = realloc(c->items, c->capacity * sizeof(*c->items));
        ck_assert_ptr_nonnull(c->items);
    }
    struct record_copy *copy = &c->items[c->count++];
    copy->seq = record->seq;
    copy->time_ms = record->time_ms;
    copy->len = record->len;
    copy->payload = malloc(record->len + 1);
    ck_assert_ptr_nonnull(copy->payload);
    if (record->len > 0) {
        memcpy(copy->payload, record->payload, record->len);
    }
    return c->stop_after == 0 || c->count < c->stop_after;
}

static void collected_clear(struct collected *c)
{
    for (size_t i = 0; i < c->count; i++) {
        free(c->items[i].payload);
    }
    free(c->items);
    memset(c, 0, sizeof(*c));
}

/* Reads from from_seq (at most max_records) and returns the result code. */
static int read_events(store_t *store, uint64_t from_seq, size_t max_records, struct collected *c)
{
    struct herr err = {0};
    return store_event_read(store, from_seq, max_records, collect_record, c, &err);
}

/* Checks that c holds exactly the events first..last as append_range made them. */
static void expect_range(const struct collected *c, uint64_t first, uint64_t last)
{
    ck_assert_uint_eq(c->count, last - first + 1);
    unsigned char payload[512];
    for (size_t k = 0; k < c->count; k++) {
        uint64_t i = first + k;
        size_t len = make_payload(i, payload, sizeof(payload));
        ck_assert_uint_eq(c->items[k].seq, i);
        ck_assert_int_eq(c->items[k].time_ms, make_time(i));
        ck_assert_uint_eq(c->items[k].len, len);
        ck_assert(len == 0 || memcmp(c->items[k].payload, payload, len) == 0);
    }
}

START_TEST(test_store_conformance_append_commit_read_in_order)
{
    struct env env;
    env_init(&env, _i);
    store_t *store = env_open(&env, NULL);
    ck_assert_uint_eq(store_event_first_seq(store), 0);
    ck_assert_uint_eq(store_event_last_seq(store), 0);
    append_range(store, 1, 9); /* payloads of 0 to 296 bytes, one empty */
    commit(store);
    ck_assert_uint_eq(store_event_first_seq(store), 1);
    ck_assert_uint_eq(store_event_last_seq(store), 9);
    struct collected c = {0};
    ck_assert_int_eq(read_events(store, 0, 0, &c), 0);
    expect_range(&c, 1, 9);
    collected_clear(&c);
    ck_assert_int_eq(read_events(store, 1, 0, &c), 0);
    expect_range(&c, 1, 9);
    collected_clear(&c);
    /* A commit with nothing appended is a success that changes nothing. */
    commit(store);
    ck_assert_uint_eq(store_event_last_seq(store), 9);
    store_close(store);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_uncommitted_events_are_invisible)
{
    struct env env;
    env_init(&env, _i);
    store_t *store = env_open(&env, NULL);
    append_range(store, 1, 3);
    ck_assert_uint_eq(store_event_last_seq(store), 0);
    struct collected c = {0};
    ck_assert_int_eq(read_events(store, 0, 0, &c), 0);
    ck_assert_uint_eq(c.count, 0);
    commit(store);
    append_range(store, 4, 5);
    ck_assert_uint_eq(store_event_last_seq(store), 3);
    ck_assert_int_eq(read_events(store, 0, 0, &c), 0);
    expect_range(&c, 1, 3);
    collected_clear(&c);
    ck_assert_int_eq(read_events(store, 4, 0, &c), 0);
    ck_assert_uint_eq(c.count, 0);
    commit(store);
    ck_assert_uint_eq(store_event_last_seq(store), 5);
    ck_assert_int_eq(read_events(store, 0, 0, &c), 0);
    expect_range(&c, 1, 5);
    collected_clear(&c);
    store_close(store);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_seq_continues_after_reopen)
{
    struct env env;
    env_init(&env, _i);
    store_t *store = env_open(&env, NULL);
    append_range(store, 1, 3);
    commit(store);
    store_close(store);
    store = env_open(&env, NULL);
    ck_assert_uint_eq(store_event_first_seq(store), 1);
    ck_assert_uint_eq(store_event_last_seq(store), 3);
    append_range(store, 4, 6);
    commit(store);
    store_close(store);
    store = env_open(&env, NULL);
    ck_assert_uint_eq(store_event_last_seq(store), 6);
    struct collected c = {0};
    ck_assert_int_eq(read_events(store, 0, 0, &c), 0);
    expect_range(&c, 1, 6);
    collected_clear(&c);
    store_close(store);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_read_from_the_middle_and_limits)
{
    struct env env;
    env_init(&env, _i);
    store_t *store = env_open(&env, NULL);
    append_range(store, 1, 10);
    commit(store);
    struct collected c = {0};
    ck_assert_int_eq(read_events(store, 4, 0, &c), 0);
    expect_range(&c, 4, 10);
    collected_clear(&c);
    ck_assert_int_eq(read_events(store, 4, 3, &c), 0);
    expect_range(&c, 4, 6);
    collected_clear(&c);
    ck_assert_int_eq(read_events(store, 10, 1, &c), 0); /* the last one */
    expect_range(&c, 10, 10);
    collected_clear(&c);
    ck_assert_int_eq(read_events(store, 9, 5, &c), 0); /* max beyond the end */
    expect_range(&c, 9, 10);
    collected_clear(&c);
    c.stop_after = 2;
    ck_assert_int_eq(read_events(store, 3, 0, &c), 0);
    expect_range(&c, 3, 4);
    collected_clear(&c);
    c.stop_after = 1;
    ck_assert_int_eq(read_events(store, 0, 5, &c), 0);
    expect_range(&c, 1, 1);
    collected_clear(&c);
    store_close(store);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_read_past_the_end_reads_nothing)
{
    struct env env;
    env_init(&env, _i);
    store_t *store = env_open(&env, NULL);
    struct collected c = {0};
    ck_assert_int_eq(read_events(store, 0, 0, &c), 0); /* empty store */
    ck_assert_int_eq(read_events(store, 1, 0, &c), 0);
    ck_assert_uint_eq(c.count, 0);
    append_range(store, 1, 3);
    commit(store);
    ck_assert_int_eq(read_events(store, 4, 0, &c), 0);
    ck_assert_int_eq(read_events(store, 1000, 0, &c), 0);
    ck_assert_uint_eq(c.count, 0);
    ck_assert_int_eq(read_events(store, 3, 0, &c), 0);
    expect_range(&c, 3, 3);
    collected_clear(&c);
    store_close(store);
    env_clear(&env);
}
END_TEST

/* With segment_bytes 1 the embedded journal gives every event a segment of its own, so
 * both backends trim event by event. */
START_TEST(test_store_conformance_trim_by_size_keeps_the_newest)
{
    struct env env;
    env_init(&env, _i);
    env.config.segment_bytes = 1;
    store_t *store = env_open(&env, NULL);
    append_range(store, 1, 5);
    commit(store);
    /* Inside the default retention: nothing goes. */
    ck_assert_uint_eq(store_event_trim(store, make_time(5)), 0);
    ck_assert_uint_eq(store_event_first_seq(store), 1);
    store_close(store);
    env.config.retention_bytes = 1;
    store = env_open(&env, NULL);
    ck_assert_uint_eq(store_event_trim(store, make_time(5)), 4);
    ck_assert_uint_eq(store_event_first_seq(store), 5);
    ck_assert_uint_eq(store_event_last_seq(store), 5);
    ck_assert_uint_eq(store_event_trim(store, make_time(5)), 0); /* the newest stays */
    struct collected c = {0};
    ck_assert_int_eq(read_events(store, 0, 0, &c), 0);
    expect_range(&c, 5, 5);
    collected_clear(&c);
    store_close(store);
    store = env_open(&env, NULL);
    ck_assert_uint_eq(store_event_first_seq(store), 5);
    append_range(store, 6, 6);
    commit(store);
    ck_assert_int_eq(read_events(store, 5, 0, &c), 0);
    expect_range(&c, 5, 6);
    collected_clear(&c);
    store_close(store);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_trim_by_age_keeps_the_newest)
{
    struct env env;
    env_init(&env, _i);
    env.config.segment_bytes = 1;
    env.config.retention_ms = 1000;
    store_t *store = env_open(&env, NULL);
    append_range(store, 1, 4); /* time_ms a second apart */
    commit(store);
    /* At the time of event 3 with a second of retention, event 2 is just inside (exactly
     * one second old) and event 1 just outside. */
    ck_assert_uint_eq(store_event_trim(store, make_time(3)), 1);
    ck_assert_uint_eq(store_event_first_seq(store), 2);
    ck_assert_uint_eq(store_event_trim(store, make_time(3)), 0);
    ck_assert_uint_eq(store_event_trim(store, make_time(3) + 1), 1);
    ck_assert_uint_eq(store_event_first_seq(store), 3);
    /* Everything is old: all but the newest go. */
    ck_assert_uint_eq(store_event_trim(store, make_time(1000)), 1);
    ck_assert_uint_eq(store_event_first_seq(store), 4);
    ck_assert_uint_eq(store_event_last_seq(store), 4);
    struct collected c = {0};
    ck_assert_int_eq(read_events(store, 0, 0, &c), 0);
    expect_range(&c, 4, 4);
    collected_clear(&c);
    store_close(store);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_read_before_first_retained_is_not_found)
{
    struct env env;
    env_init(&env, _i);
    env.config.segment_bytes = 1;
    env.config.retention_bytes = 1;
    store_t *store = env_open(&env, NULL);
    append_range(store, 1, 4);
    commit(store);
    ck_assert_uint_eq(store_event_trim(store, make_time(4)), 3);
    struct collected c = {0};
    ck_assert_int_eq(read_events(store, 1, 0, &c), HEROLD_E_NOT_FOUND);
    ck_assert_int_eq(read_events(store, 3, 0, &c), HEROLD_E_NOT_FOUND); /* just before */
    ck_assert_uint_eq(c.count, 0);
    ck_assert_int_eq(read_events(store, 4, 0, &c), 0); /* the first retained */
    expect_range(&c, 4, 4);
    collected_clear(&c);
    ck_assert_int_eq(read_events(store, 0, 0, &c), 0); /* 0: from the first retained */
    expect_range(&c, 4, 4);
    collected_clear(&c);
    store_close(store);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_too_large_uses_no_seq)
{
    struct env env;
    env_init(&env, _i);
    store_t *store = env_open(&env, NULL);
    unsigned char *payload = malloc(JOURNAL_MAX_RECORD_BYTES + 1);
    ck_assert_ptr_nonnull(payload);
    for (size_t i = 0; i <= JOURNAL_MAX_RECORD_BYTES; i++) {
        payload[i] = (unsigned char)(i * 13 + 5);
    }
    struct herr err = {0};
    uint64_t seq = 0;
    ck_assert_int_eq(
        store_event_append(store, payload, JOURNAL_MAX_RECORD_BYTES + 1, 1, &seq, &err),
        HEROLD_E_TOO_LARGE);
    ck_assert_int_eq(store_event_append(store, payload, JOURNAL_MAX_RECORD_BYTES, 2, &seq, &err),
                     0);
    ck_assert_uint_eq(seq, 1);
    commit(store);
    struct collected c = {0};
    ck_assert_int_eq(read_events(store, 0, 0, &c), 0);
    ck_assert_uint_eq(c.count, 1);
    ck_assert_uint_eq(c.items[0].seq, 1);
    ck_assert_int_eq(c.items[0].time_ms, 2);
    ck_assert_uint_eq(c.items[0].len, JOURNAL_MAX_RECORD_BYTES);
    ck_assert(memcmp(c.items[0].payload, payload, JOURNAL_MAX_RECORD_BYTES) == 0);
    collected_clear(&c);
    free(payload);
    store_close(store);
    env_clear(&env);
}
END_TEST

/* More than one commit chunk and one read page of the PostgreSQL backend. */
START_TEST(test_store_conformance_large_batch)
{
    struct env env;
    env_init(&env, _i);
    store_t *store = env_open(&env, NULL);
    append_range(store, 1, 2500);
    commit(store);
    ck_assert_uint_eq(store_event_last_seq(store), 2500);
    struct collected c = {0};
    ck_assert_int_eq(read_events(store, 0, 0, &c), 0);
    expect_range(&c, 1, 2500);
    collected_clear(&c);
    ck_assert_int_eq(read_events(store, 2, 2001, &c), 0);
    expect_range(&c, 2, 2002);
    collected_clear(&c);
    store_close(store);
    env_clear(&env);
}
END_TEST

/* A reader on another thread while the store commits: every read sees a run from seq 1
 * with the right payloads, and the runs only grow. */
struct reader {
    store_t *store;
    uint64_t last_batch_seq;
    int failures;
    size_t reads;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    uint64_t seen = 0;
    for (;;) {
        /* Read the flag before the events, so the final read follows the last commit. */
        bool is_last = __atomic_load_n(&r->last_batch_seq, __ATOMIC_ACQUIRE) != 0;
        struct collected c = {0};
        struct herr err = {0};
        if (store_event_read(r->store, 0, 0, collect_record, &c, &err) != 0) {
            r->failures++;
        }
        unsigned char payload[512];
        for (size_t k = 0; k < c.count; k++) {
            size_t len = make_payload(k + 1, payload, sizeof(payload));
            if (c.items[k].seq != k + 1 || c.items[k].len != len ||
                (len > 0 && memcmp(c.items[k].payload, payload, len) != 0)) {
                r->failures++;
            }
        }
        if (c.count < seen) {
            r->failures++;
        }
        seen = c.count;
        collected_clear(&c);
        r->reads++;
        if (is_last) {
            if (seen != __atomic_load_n(&r->last_batch_seq, __ATOMIC_ACQUIRE)) {
                r->failures++;
            }
            return NULL;
        }
    }
}

START_TEST(test_store_conformance_reads_run_beside_commits)
{
    struct env env;
    env_init(&env, _i);
    store_t *store = env_open(&env, NULL);
    struct reader r = {.store = store};
    pthread_t thread;
    ck_assert_int_eq(pthread_create(&thread, NULL, reader_main, &r), 0);
    for (uint64_t batch = 0; batch < 40; batch++) {
        append_range(store, batch * 10 + 1, batch * 10 + 10);
        commit(store);
    }
    __atomic_store_n(&r.last_batch_seq, store_event_last_seq(store), __ATOMIC_RELEASE);
    ck_assert_int_eq(pthread_join(thread, NULL), 0);
    ck_assert_int_eq(r.failures, 0);
    ck_assert_uint_gt(r.reads, 0);
    store_close(store);
    env_clear(&env);
}
END_TEST

/* ---- subscriptions and cursors ---- */

#define SEEN_MAX 16

struct seen {
    char ids[SEEN_MAX][STORE_MAX_KEY_BYTES + 1];
    char *docs[SEEN_MAX];
    int count;
    char keys[SEEN_MAX][STORE_MAX_KEY_BYTES + 1];
    uint64_t seqs[SEEN_MAX];
    int cursor_count;
};

static void seen_subscription(const char *id, const char *json, void *ctx)
{
    struct seen *seen = ctx;
    ck_assert_int_eq(seen->cursor_count, 0); /* subscriptions come first */
    ck_assert_int_lt(seen->count, SEEN_MAX);
    snprintf(seen->ids[seen->count], sizeof(seen->ids[0]), "%s", id);
    seen->docs[seen->count] = strdup(json);
    seen->count++;
}

static void seen_cursor(const char *key, uint64_t seq, void *ctx)
{
    struct seen *seen = ctx;
    ck_assert_int_lt(seen->cursor_count, SEEN_MAX);
    snprintf(seen->keys[seen->cursor_count], sizeof(seen->keys[0]), "%s", key);
    seen->seqs[seen->cursor_count] = seq;
    seen->cursor_count++;
}

static void seen_clear(struct seen *seen)
{
    for (int i = 0; i < seen->count; i++) {
        free(seen->docs[i]);
    }
    memset(seen, 0, sizeof(*seen));
}

/* Reopens the store and records what the loader handed out. */
static store_t *reopen(struct env *env, store_t *store, struct seen *seen)
{
    store_close(store);
    seen_clear(seen);
    store_loader_t loader = {seen_subscription, seen_cursor, seen};
    return env_open(env, &loader);
}

/* The cursor's seq, or -1 when the loader did not hand it out. */
static int64_t seen_seq(const struct seen *seen, const char *key)
{
    for (int i = 0; i < seen->cursor_count; i++) {
        if (strcmp(seen->keys[i], key) == 0) {
            return (int64_t)seen->seqs[i];
        }
    }
    return -1;
}

static void put(store_t *store, const char *id, const char *json)
{
    struct herr err = {0};
    ck_assert_msg(store_subscription_put(store, id, json, &err) == 0, "put %s: %s", id,
                  err.message);
}

static void put_cursors(store_t *store, const store_cursor_t *cursors, size_t count)
{
    struct herr err = {0};
    ck_assert_msg(store_cursors_put(store, cursors, count, &err) == 0, "cursors: %s", err.message);
}

START_TEST(test_store_conformance_subscriptions_survive_reopen_in_first_put_order)
{
    struct env env;
    env_init(&env, _i);
    struct seen seen = {0};
    store_loader_t loader = {seen_subscription, seen_cursor, &seen};
    store_t *store = env_open(&env, &loader);
    ck_assert_int_eq(seen.count, 0);
    put(store, "zeta", "{\"v\":1}");
    put(store, "alpha", "{\"v\":2}");
    put(store, "mid", "{\"v\":3}");
    put(store, "zeta", "{\"v\":4}"); /* a replace keeps its place */
    struct herr err = {0};
    ck_assert_int_eq(store_subscription_delete(store, "mid", &err), 0);
    store = reopen(&env, store, &seen);
    ck_assert_int_eq(seen.count, 2);
    ck_assert_str_eq(seen.ids[0], "zeta");
    ck_assert_str_eq(seen.docs[0], "{\"v\":4}");
    ck_assert_str_eq(seen.ids[1], "alpha");
    ck_assert_str_eq(seen.docs[1], "{\"v\":2}");
    put(store, "mid", "{\"v\":5}"); /* deleted, then put again: last */
    put(store, "alpha", "{\"v\":6}");
    store = reopen(&env, store, &seen);
    ck_assert_int_eq(seen.count, 3);
    ck_assert_str_eq(seen.ids[0], "zeta");
    ck_assert_str_eq(seen.ids[1], "alpha");
    ck_assert_str_eq(seen.docs[1], "{\"v\":6}");
    ck_assert_str_eq(seen.ids[2], "mid");
    ck_assert_str_eq(seen.docs[2], "{\"v\":5}");
    ck_assert_int_eq(seen.cursor_count, 0);
    store_close(store);
    seen_clear(&seen);
    env_clear(&env);
}
END_TEST

/* A batch's writes, a refusal among them, are all there after the commit and a reopen. */
START_TEST(test_store_conformance_a_batch_is_stored_at_its_commit)
{
    struct env env;
    env_init(&env, _i);
    struct seen seen = {0};
    store_t *store = env_open(&env, NULL);
    put(store, "old", "{\"v\":0}");
    struct herr err = {0};
    ck_assert(store_state_batches(store));
    ck_assert_int_eq(store_state_begin(store, &err), 0);
    put(store, "a", "{\"v\":1}");
    put(store, "b", "{\"v\":2}");
    char *large = malloc(STORE_MAX_DOCUMENT_BYTES + 2);
    memset(large, 'x', STORE_MAX_DOCUMENT_BYTES + 1);
    large[STORE_MAX_DOCUMENT_BYTES + 1] = '\0';
    ck_assert_int_eq(store_subscription_put(store, "big", large, &err), HEROLD_E_TOO_LARGE);
    free(large);
    ck_assert_int_eq(store_subscription_delete(store, "old", &err), 0);
    const store_cursor_t cursors[] = {{"a", 7}, {"user:ana", 3}};
    put_cursors(store, cursors, 2);
    put(store, "a", "{\"v\":3}");
    ck_assert_msg(store_state_commit(store, &err) == 0, "commit: %s", err.message);
    put(store, "c", "{\"v\":4}"); /* after the batch: on its own again */
    store = reopen(&env, store, &seen);
    ck_assert_int_eq(seen.count, 3);
    ck_assert_str_eq(seen.ids[0], "a");
    ck_assert_str_eq(seen.docs[0], "{\"v\":3}");
    ck_assert_str_eq(seen.ids[1], "b");
    ck_assert_str_eq(seen.ids[2], "c");
    ck_assert_int_eq(seen.cursor_count, 2);
    ck_assert_int_eq(seen_seq(&seen, "a"), 7);
    ck_assert_int_eq(seen_seq(&seen, "user:ana"), 3);
    store_close(store);
    seen_clear(&seen);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_subscription_document_limit)
{
    struct env env;
    env_init(&env, _i);
    store_t *store = env_open(&env, NULL);
    /* {"p":"aaa…"}: 8 bytes of frame around the string. */
    char *doc = malloc(STORE_MAX_DOCUMENT_BYTES + 2);
    ck_assert_ptr_nonnull(doc);
    memset(doc, 'a', STORE_MAX_DOCUMENT_BYTES + 1);
    memcpy(doc, "{\"p\":\"", 6);
    memcpy(doc + STORE_MAX_DOCUMENT_BYTES - 2, "\"}", 3);
    ck_assert_uint_eq(strlen(doc), STORE_MAX_DOCUMENT_BYTES);
    put(store, "big", doc);
    memset(doc + STORE_MAX_DOCUMENT_BYTES - 2, 'a', 1);
    memcpy(doc + STORE_MAX_DOCUMENT_BYTES - 1, "\"}", 3);
    ck_assert_uint_eq(strlen(doc), STORE_MAX_DOCUMENT_BYTES + 1);
    struct herr err = {0};
    ck_assert_int_eq(store_subscription_put(store, "bigger", doc, &err), HEROLD_E_TOO_LARGE);
    ck_assert_int_eq(store_subscription_put(store, "big", doc, &err), HEROLD_E_TOO_LARGE);
    struct seen seen = {0};
    store = reopen(&env, store, &seen);
    ck_assert_int_eq(seen.count, 1);
    ck_assert_str_eq(seen.ids[0], "big");
    ck_assert_uint_eq(strlen(seen.docs[0]), STORE_MAX_DOCUMENT_BYTES); /* the old one */
    free(doc);
    store_close(store);
    seen_clear(&seen);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_delete_of_an_unknown_id_is_a_no_op)
{
    struct env env;
    env_init(&env, _i);
    store_t *store = env_open(&env, NULL);
    struct herr err = {0};
    ck_assert_int_eq(store_subscription_delete(store, "nobody", &err), 0);
    put(store, "a", "{}");
    ck_assert_int_eq(store_subscription_delete(store, "nobody", &err), 0);
    ck_assert_int_eq(store_subscription_delete(store, "a", &err), 0);
    ck_assert_int_eq(store_subscription_delete(store, "a", &err), 0); /* twice */
    struct seen seen = {0};
    store = reopen(&env, store, &seen);
    ck_assert_int_eq(seen.count, 0);
    store_close(store);
    seen_clear(&seen);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_cursors_survive_reopen_and_only_move_forward)
{
    struct env env;
    env_init(&env, _i);
    struct seen seen = {0};
    store_t *store = env_open(&env, NULL);
    put_cursors(store, (store_cursor_t[]){{"hook-1", 5}, {"user:ann", 7}}, 2);
    store = reopen(&env, store, &seen);
    ck_assert_int_eq(seen.cursor_count, 2);
    ck_assert_int_eq(seen_seq(&seen, "hook-1"), 5);
    ck_assert_int_eq(seen_seq(&seen, "user:ann"), 7);
    put_cursors(store, (store_cursor_t[]){{"hook-1", 4}}, 1);   /* just behind: ignored */
    put_cursors(store, (store_cursor_t[]){{"user:ann", 8}}, 1); /* just ahead */
    put_cursors(store, (store_cursor_t[]){{"twice", 9}, {"twice", 3}}, 2);
    store = reopen(&env, store, &seen);
    ck_assert_int_eq(seen.cursor_count, 3);
    ck_assert_int_eq(seen_seq(&seen, "hook-1"), 5);
    ck_assert_int_eq(seen_seq(&seen, "user:ann"), 8);
    ck_assert_int_eq(seen_seq(&seen, "twice"), 9);
    put_cursors(store, (store_cursor_t[]){{"hook-1", 5}}, 1); /* equal: stays */
    put_cursors(store, NULL, 0);
    store = reopen(&env, store, &seen);
    ck_assert_int_eq(seen_seq(&seen, "hook-1"), 5);
    store_close(store);
    seen_clear(&seen);
    env_clear(&env);
}
END_TEST

/* Cursors noted without waiting for the disk follow the same rules and are there after a
 * reopen (a crash of the process keeps them; only the machine's could lose them). */
START_TEST(test_store_conformance_noted_cursors_survive_reopen)
{
    struct env env;
    env_init(&env, _i);
    struct seen seen = {0};
    store_t *store = env_open(&env, NULL);
    struct herr err = {0};
    ck_assert_int_eq(
        store_cursors_note(store, (store_cursor_t[]){{"hook-1", 5}, {"user:ann", 7}}, 2, &err), 0);
    ck_assert_int_eq(store_cursors_note(store, (store_cursor_t[]){{"hook-1", 4}}, 1, &err), 0);
    ck_assert_int_eq(store_cursors_note(store, (store_cursor_t[]){{"bad key", 4}}, 1, &err),
                     HEROLD_E_BAD_REQUEST);
    store = reopen(&env, store, &seen);
    ck_assert_int_eq(seen.cursor_count, 2);
    ck_assert_int_eq(seen_seq(&seen, "hook-1"), 5);
    ck_assert_int_eq(seen_seq(&seen, "user:ann"), 7);
    store_close(store);
    seen_clear(&seen);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_cursors_go_with_their_subscription)
{
    struct env env;
    env_init(&env, _i);
    struct seen seen = {0};
    store_t *store = env_open(&env, NULL);
    put(store, "hook-1", "{\"v\":1}");
    put(store, "hook-2", "{\"v\":2}");
    put_cursors(store, (store_cursor_t[]){{"hook-1", 5}, {"hook-2", 6}, {"user:ann", 7}}, 3);
    struct herr err = {0};
    ck_assert_int_eq(store_subscription_delete(store, "hook-1", &err), 0);
    store = reopen(&env, store, &seen);
    ck_assert_int_eq(seen.count, 1);
    ck_assert_str_eq(seen.ids[0], "hook-2");
    ck_assert_int_eq(seen.cursor_count, 2);
    ck_assert_int_eq(seen_seq(&seen, "hook-1"), -1);
    ck_assert_int_eq(seen_seq(&seen, "hook-2"), 6);
    ck_assert_int_eq(seen_seq(&seen, "user:ann"), 7);
    store_close(store);
    seen_clear(&seen);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_cursors_all_or_none)
{
    struct env env;
    env_init(&env, _i);
    struct seen seen = {0};
    store_t *store = env_open(&env, NULL);
    char longest[STORE_MAX_KEY_BYTES + 2];
    memset(longest, 'k', sizeof(longest) - 1);
    longest[STORE_MAX_KEY_BYTES] = '\0';
    put_cursors(store, (store_cursor_t[]){{longest, 1}, {"!", 2}}, 2); /* 256 and 1 byte */
    longest[STORE_MAX_KEY_BYTES] = 'k';
    longest[STORE_MAX_KEY_BYTES + 1] = '\0';
    const char *bad_keys[] = {longest, "", "two words", "tab\tkey", "new\nline", "del\x7f"};
    for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
        struct herr err = {0};
        store_cursor_t batch[] = {{"good", 10}, {bad_keys[i], 11}, {"!", 12}};
        ck_assert_int_eq(store_cursors_put(store, batch, 3, &err), HEROLD_E_BAD_REQUEST);
    }
    store = reopen(&env, store, &seen);
    ck_assert_int_eq(seen.cursor_count, 2);
    ck_assert_int_eq(seen_seq(&seen, "good"), -1);
    ck_assert_int_eq(seen_seq(&seen, "!"), 2);
    longest[STORE_MAX_KEY_BYTES] = '\0';
    ck_assert_int_eq(seen_seq(&seen, longest), 1);
    store_close(store);
    seen_clear(&seen);
    env_clear(&env);
}
END_TEST

static void count_subscription(const char *id, const char *json, void *ctx)
{
    (void)id;
    (void)json;
    (*(int *)ctx)++;
}

START_TEST(test_store_conformance_loader_callbacks_may_be_null)
{
    struct env env;
    env_init(&env, _i);
    store_t *store = env_open(&env, NULL);
    put(store, "a", "{}");
    put_cursors(store, (store_cursor_t[]){{"a", 3}}, 1);
    store_close(store);
    int count = 0;
    store_loader_t none = {NULL, NULL, &count};
    store = env_open(&env, &none);
    store_close(store);
    store_loader_t only_subscriptions = {count_subscription, NULL, &count};
    store = env_open(&env, &only_subscriptions);
    ck_assert_int_eq(count, 1);
    store_close(store);
    struct seen seen = {0};
    store_loader_t only_cursors = {NULL, seen_cursor, &seen};
    store = env_open(&env, &only_cursors);
    ck_assert_int_eq(seen.count, 0);
    ck_assert_int_eq(seen_seq(&seen, "a"), 3);
    store_close(store);
    env_clear(&env);
}
END_TEST

/* ---- PostgreSQL only ---- */

START_TEST(test_store_conformance_pg_second_open_is_refused)
{
    struct env env;
    env_init(&env, BACKEND_PG);
    store_t *first = env_open(&env, NULL);
    struct herr err = {0};
    store_t *second = env_try_open(&env, NULL, &err);
    ck_assert_ptr_null(second);
    ck_assert_int_eq(err.code, HEROLD_E_UNAVAILABLE);
    ck_assert_ptr_nonnull(strstr(err.message, "another herold uses this database"));
    /* The three connections (writer, state, reader) name herold, unless the conninfo
     * names something else. */
    PGconn *conn = pg_connect();
    PGresult *res = PQexec(conn, "SELECT count(*) FROM pg_stat_activity "
                                 "WHERE application_name = 'herold'");
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "3");
    PQclear(res);
    PQfinish(conn);
    store_close(first);
    second = env_open(&env, NULL); /* the lock went with the first */
    store_close(second);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_pg_schema_file_matches_the_binary)
{
    FILE *file = fopen(SCHEMA_FILE, "rb");
    ck_assert_msg(file != NULL, "%s: cannot open (the tests run from the repository root)",
                  SCHEMA_FILE);
    static char text[64 * 1024];
    size_t len = fread(text, 1, sizeof(text) - 1, file);
    ck_assert(feof(file));
    fclose(file);
    text[len] = '\0';
    const char *compiled = store_pg_schema_sql(1);
    ck_assert_ptr_nonnull(compiled);
    ck_assert_uint_eq(strlen(compiled), len);
    ck_assert_msg(memcmp(compiled, text, len) == 0, "%s differs from the copy in broker/store_pg.c",
                  SCHEMA_FILE);
    ck_assert_ptr_null(store_pg_schema_sql(0));
    ck_assert_ptr_null(store_pg_schema_sql(STORE_PG_SCHEMA_VERSION + 1));

    /* The database ends at the binary's version, and a second open migrates nothing. */
    struct env env;
    env_init(&env, BACKEND_PG);
    store_close(env_open(&env, NULL));
    store_close(env_open(&env, NULL));
    PGconn *conn = pg_connect();
    PGresult *res = PQexec(conn, "SELECT count(*), max(version) FROM herold_broker.schema_version");
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "1");
    ck_assert_int_eq(atoi(PQgetvalue(res, 0, 1)), STORE_PG_SCHEMA_VERSION);
    PQclear(res);

    /* A database from a newer herold is refused, not guessed at. */
    pg_run(conn, "UPDATE herold_broker.schema_version SET version = version + 1");
    struct herr err = {0};
    ck_assert_ptr_null(env_try_open(&env, NULL, &err));
    ck_assert_int_eq(err.code, HEROLD_E_SYSTEM);
    PQfinish(conn);
    env_clear(&env);
}
END_TEST

START_TEST(test_store_conformance_pg_server_gone_and_back)
{
    struct env env;
    env_init(&env, BACKEND_PG);
    store_t *store = env_open(&env, NULL);
    append_range(store, 1, 3);
    commit(store);

    pg_server("stop");
    struct herr err = {0};
    uint64_t seq = 0;
    ck_assert_int_eq(store_event_append(store, "lost", 4, 1, &seq, &err), 0); /* no network */
    ck_assert_uint_eq(seq, 4);
    ck_assert_int_eq(store_event_commit(store, &err), HEROLD_E_UNAVAILABLE);
    /* In the backoff: refused at once, and the batch is gone. */
    ck_assert_int_eq(store_event_append(store, "x", 1, 1, &seq, &err), HEROLD_E_UNAVAILABLE);
    ck_assert_int_eq(store_event_commit(store, &err), 0);
    ck_assert_uint_eq(store_event_last_seq(store), 3);
    struct collected c = {0};
    ck_assert_int_eq(read_events(store, 0, 0, &c), HEROLD_E_UNAVAILABLE);
    ck_assert_int_eq(store_subscription_put(store, "a", "{}", &err), HEROLD_E_UNAVAILABLE);

    pg_server("restart");
    /* What a commit whose answer was lost leaves behind: a row no publisher heard of. */
    PGconn *conn = pg_connect();
    pg_run(conn, "INSERT INTO herold_broker.events VALUES (4, 1, '\\x7374726179')");
    PQfinish(conn);

    int64_t deadline = monotonic_ms() + RECONNECT_DEADLINE_MS;
    int rc;
    for (;;) {
        rc = store_event_append(store, "after", 5, 2, &seq, &err);
        if (rc == 0) {
            rc = store_event_commit(store, &err);
        }
        if (rc == 0 || monotonic_ms() > deadline) {
            break;
        }
        ck_assert_msg(rc == HEROLD_E_UNAVAILABLE, "while reconnecting: %s", err.message);
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    ck_assert_msg(rc == 0, "no reconnect within %d ms: %s", RECONNECT_DEADLINE_MS, err.message);
    ck_assert_uint_eq(seq, 4);
    ck_assert_uint_eq(store_event_last_seq(store), 4);
    for (;;) {
        rc = read_events(store, 0, 0, &c);
        if (rc != HEROLD_E_UNAVAILABLE || monotonic_ms() > deadline) {
            break;
        }
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(c.count, 4);
    ck_assert_uint_eq(c.items[3].seq, 4);
    ck_assert_uint_eq(c.items[3].len, 5);
    ck_assert(memcmp(c.items[3].payload, "after", 5) == 0);
    collected_clear(&c);
    put(store, "a", "{}");
    store_close(store);

    store = env_open(&env, NULL);
    ck_assert_uint_eq(store_event_last_seq(store), 4);
    store_close(store);
    env_clear(&env);
}
END_TEST

/* Whether another session sees the subscription id. */
static bool pg_has_subscription(PGconn *conn, const char *id)
{
    const char *values[] = {id};
    PGresult *res = PQexecParams(conn, "SELECT 1 FROM herold_broker.subscriptions WHERE id = $1", 1,
                                 NULL, values, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    bool has = PQntuples(res) == 1;
    PQclear(res);
    return has;
}

/* A batch is one transaction: nothing of it is visible before the commit, and a batch
 * whose server went away stores nothing, not even the writes made before. */
START_TEST(test_store_conformance_pg_a_batch_is_one_transaction)
{
    struct env env;
    env_init(&env, BACKEND_PG);
    store_t *store = env_open(&env, NULL);
    PGconn *conn = pg_connect();
    struct herr err = {0};
    ck_assert_int_eq(store_state_begin(store, &err), 0);
    put(store, "a", "{}");
    put(store, "b", "{}");
    ck_assert(!pg_has_subscription(conn, "a"));
    ck_assert_int_eq(store_state_commit(store, &err), 0);
    ck_assert(pg_has_subscription(conn, "a"));
    ck_assert(pg_has_subscription(conn, "b"));
    PQfinish(conn);

    ck_assert_int_eq(store_state_begin(store, &err), 0);
    put(store, "lost", "{}");
    pg_server("stop");
    ck_assert_int_eq(store_subscription_put(store, "also-lost", "{}", &err), HEROLD_E_UNAVAILABLE);
    store_state_abort(store);
    pg_server("restart");
    int64_t deadline = monotonic_ms() + RECONNECT_DEADLINE_MS;
    int rc;
    while ((rc = store_subscription_put(store, "after", "{}", &err)) == HEROLD_E_UNAVAILABLE &&
           monotonic_ms() < deadline) {
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    ck_assert_msg(rc == 0, "no reconnect within %d ms: %s", RECONNECT_DEADLINE_MS, err.message);
    conn = pg_connect();
    ck_assert(!pg_has_subscription(conn, "lost"));
    ck_assert(!pg_has_subscription(conn, "also-lost"));
    ck_assert(pg_has_subscription(conn, "after"));
    ck_assert(pg_has_subscription(conn, "a"));
    PQfinish(conn);
    store_close(store);
    env_clear(&env);
}
END_TEST

/* ---- the suite ---- */

static void add_common(TCase *tc, int backend)
{
    tcase_add_loop_test(tc, test_store_conformance_append_commit_read_in_order, backend,
                        backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_uncommitted_events_are_invisible, backend,
                        backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_seq_continues_after_reopen, backend,
                        backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_read_from_the_middle_and_limits, backend,
                        backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_read_past_the_end_reads_nothing, backend,
                        backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_trim_by_size_keeps_the_newest, backend,
                        backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_trim_by_age_keeps_the_newest, backend,
                        backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_read_before_first_retained_is_not_found, backend,
                        backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_too_large_uses_no_seq, backend, backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_large_batch, backend, backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_reads_run_beside_commits, backend, backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_subscriptions_survive_reopen_in_first_put_order,
                        backend, backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_a_batch_is_stored_at_its_commit, backend,
                        backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_subscription_document_limit, backend,
                        backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_delete_of_an_unknown_id_is_a_no_op, backend,
                        backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_cursors_survive_reopen_and_only_move_forward,
                        backend, backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_noted_cursors_survive_reopen, backend,
                        backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_cursors_go_with_their_subscription, backend,
                        backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_cursors_all_or_none, backend, backend + 1);
    tcase_add_loop_test(tc, test_store_conformance_loader_callbacks_may_be_null, backend,
                        backend + 1);
}

static Suite *store_conformance_suite(void)
{
    Suite *suite = suite_create("store_conformance");
    TCase *embedded = tcase_create("embedded");
    tcase_set_timeout(embedded, TEST_TIMEOUT_SECONDS);
    add_common(embedded, BACKEND_EMBEDDED);
    suite_add_tcase(suite, embedded);

    TCase *memory = tcase_create("memory");
    tcase_set_timeout(memory, TEST_TIMEOUT_SECONDS);
    int m = BACKEND_MEMORY;
    tcase_add_loop_test(memory, test_store_conformance_append_commit_read_in_order, m, m + 1);
    tcase_add_loop_test(memory, test_store_conformance_uncommitted_events_are_invisible, m, m + 1);
    tcase_add_loop_test(memory, test_store_conformance_read_from_the_middle_and_limits, m, m + 1);
    tcase_add_loop_test(memory, test_store_conformance_read_past_the_end_reads_nothing, m, m + 1);
    tcase_add_loop_test(memory, test_store_conformance_trim_by_age_keeps_the_newest, m, m + 1);
    tcase_add_loop_test(memory, test_store_conformance_read_before_first_retained_is_not_found, m,
                        m + 1);
    tcase_add_loop_test(memory, test_store_conformance_too_large_uses_no_seq, m, m + 1);
    tcase_add_loop_test(memory, test_store_conformance_large_batch, m, m + 1);
    tcase_add_loop_test(memory, test_store_conformance_reads_run_beside_commits, m, m + 1);
    suite_add_tcase(suite, memory);

    const char *pg = getenv("HEROLD_TEST_PG");
    if (pg != NULL && strcmp(pg, "skip") == 0) {
        fprintf(stderr, "store_conformance: HEROLD_TEST_PG=skip: the PostgreSQL cases are left "
                        "out\n");
        return suite;
    }
    TCase *postgresql = tcase_create("postgresql");
    tcase_set_timeout(postgresql, TEST_TIMEOUT_SECONDS);
    add_common(postgresql, BACKEND_PG);
    suite_add_tcase(suite, postgresql);
    TCase *pg_only = tcase_create("postgresql_only");
    tcase_set_timeout(pg_only, TEST_TIMEOUT_SECONDS);
    tcase_add_test(pg_only, test_store_conformance_pg_second_open_is_refused);
    tcase_add_test(pg_only, test_store_conformance_pg_schema_file_matches_the_binary);
    tcase_add_test(pg_only, test_store_conformance_pg_server_gone_and_back);
    tcase_add_test(pg_only, test_store_conformance_pg_a_batch_is_one_transaction);
    suite_add_tcase(suite, pg_only);
    return suite;
}

int main(void)
{
    return unit_run(store_conformance_suite());
}
