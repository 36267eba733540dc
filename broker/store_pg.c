#include "store_pg.h"

/*
 * The PostgreSQL store: store.h's contract kept in the tables of schemas/sql/.
 *
 * Three connections. The writer belongs to the thread that appends, commits and trims
 * (ingest's). It holds the advisory lock that makes this broker the database's only
 * writer, which is what lets the broker assign seqs itself, and nobody else ever waits for
 * it. The state connection serves the subscription and cursor writes (the store writer's
 * thread), the reader connection the event reads from any thread, each one call at a time
 * under a mutex of its own: a read on the service thread (a replay, the pull endpoint)
 * never waits behind a subscription's COMMIT. A read holds its mutex only while it fetches
 * a page, never while fn runs, so fn may call the store again.
 *
 * Events. An append only copies the payload into memory and hands out the next seq; the
 * commit sends the whole batch as one INSERT … SELECT FROM unnest() of binary arrays (in
 * chunks of COMMIT_CHUNK_ROWS inside BEGIN/COMMIT when it is larger), in autocommit, so
 * one round trip answers after the server's COMMIT. The first and last seq live in
 * atomics: the seq queries never touch the network, and a read stops at the last seq
 * confirmed when it began, whatever the writer does meanwhile.
 *
 * Failures. A statement that fails on a healthy connection stored nothing. A connection
 * that breaks is closed and reconnected lazily, on the next call once its backoff has run
 * (BACKOFF_MIN_MS doubling to BACKOFF_MAX_MS, with jitter); meanwhile calls fail at once
 * with HEROLD_E_UNAVAILABLE. A commit whose answer was lost may still have stored its
 * rows, though no publisher heard of them: after a reconnect the writer takes the lock
 * again — which it gets only once the old session has ended, and with it that commit —
 * and deletes every row after the last seq it saw confirmed. Each loss and each recovery
 * is logged once, never per event.
 *
 * Every statement takes its data as parameters; integers go as text, arrays and results
 * that carry payloads in binary.
 */

#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "mem.h"
#include "path.h"
#include "store.h"

/* Advisory lock keys: "herold" followed by a number. */
#define WRITER_LOCK_KEY "7522544575477710849"    /* 0x6865726f6c640001 */
#define MIGRATION_LOCK_KEY "7522544575477710850" /* 0x6865726f6c640002 */

#define COMMIT_CHUNK_ROWS 1000
#define READ_PAGE_ROWS 2000
#define LOAD_PAGE_ROWS 1000
#define TRIM_PAGE_ROWS 1000
#define ROW_OVERHEAD_BYTES 24 /* counted per row against retention_bytes, as a record header */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define DEFAULT_CONNECT_TIMEOUT "5"
#define TERMINATE_WAIT_MS "1000"
#define PG_MESSAGE_MAX 160
#define INT_TEXT_MAX 24

/* Type OIDs of the binary array parameters (pg_type.h, stable across versions). */
#define OID_INT8 20
#define OID_BYTEA 17
#define OID_TEXT 25

/* ---- the schema ---- */

/* Byte-identical to schemas/sql/001_init.sql (a unit test compares them). */
static const char schema_v1[] =
    "-- herold broker schema, version 1: the events log, persistent subscriptions and delivery\n"
    "-- cursors (see README.md). store_pg_open applies it in one transaction; broker/store_pg.c\n"
    "-- holds a byte-identical copy, which a unit test compares with this file.\n"
    "CREATE SCHEMA IF NOT EXISTS herold_broker;\n"
    "\n"
    "CREATE TABLE herold_broker.schema_version (\n"
    "    version integer NOT NULL\n"
    ");\n"
    "INSERT INTO herold_broker.schema_version (version) VALUES (1);\n"
    "\n"
    "-- One row per accepted event; seq is consecutive from 1, assigned by the broker.\n"
    "CREATE TABLE herold_broker.events (\n"
    "    seq bigint PRIMARY KEY,\n"
    "    time_ms bigint NOT NULL,\n"
    "    payload bytea NOT NULL\n"
    ");\n"
    "\n"
    "-- created orders the load at start-up: an upsert keeps it, so a replaced document loads\n"
    "-- where it was first put.\n"
    "CREATE TABLE herold_broker.subscriptions (\n"
    "    id text PRIMARY KEY,\n"
    "    document text NOT NULL,\n"
    "    created bigserial NOT NULL\n"
    ");\n"
    "\n"
    "-- The last seq delivered, per webhook subscription id or \"user:<id>\"; it only grows.\n"
    "CREATE TABLE herold_broker.cursors (\n"
    "    key text PRIMARY KEY,\n"
    "    seq bigint NOT NULL\n"
    ");\n";

/* Index k takes the schema from version k - 1 to k; append version 2 here. */
static const char *const schema_steps[] = {NULL, schema_v1};

_Static_assert(sizeof(schema_steps) / sizeof(schema_steps[0]) == STORE_PG_SCHEMA_VERSION + 1,
               "one SQL text per schema version");

const char *store_pg_schema_sql(int version)
{
    if (version < 1 || version > STORE_PG_SCHEMA_VERSION) {
        return NULL;
    }
    return schema_steps[version];
}

/* ---- statements ---- */

struct statement {
    const char *name;
    const char *sql;
};

static const struct statement writer_statements[] = {
    {"insert", "INSERT INTO herold_broker.events (seq, time_ms, payload) "
               "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])"},
    {"trim_age", "SELECT seq FROM herold_broker.events WHERE time_ms >= $1::bigint "
                 "ORDER BY seq LIMIT 1"},
    {"trim_sizes", "SELECT seq, octet_length(payload)::bigint FROM herold_broker.events "
                   "WHERE seq >= $1::bigint ORDER BY seq LIMIT $2::bigint"},
    {"trim_delete", "WITH gone AS (DELETE FROM herold_broker.events WHERE seq < $1::bigint "
                    "RETURNING octet_length(payload) AS bytes) "
                    "SELECT count(*), coalesce(sum(bytes), 0)::bigint FROM gone"},
};

static const struct statement reader_statements[] = {
    {"read", "SELECT seq, time_ms, payload FROM herold_broker.events "
             "WHERE seq >= $1::bigint AND seq <= $2::bigint ORDER BY seq LIMIT $3::bigint"},
};

static const struct statement state_statements[] = {
    {"subscription_put", "INSERT INTO herold_broker.subscriptions (id, document) "
                         "VALUES ($1::text, $2::text) "
                         "ON CONFLICT (id) DO UPDATE SET document = EXCLUDED.document"},
    {"subscription_delete", "WITH s AS (DELETE FROM herold_broker.subscriptions "
                            "WHERE id = $1::text) "
                            "DELETE FROM herold_broker.cursors WHERE key = $1::text"},
    /* GROUP BY: one row per key, since ON CONFLICT may not touch a row twice. */
    {"cursors_put", "INSERT INTO herold_broker.cursors AS c (key, seq) "
                    "SELECT k, max(s) FROM unnest($1::text[], $2::bigint[]) AS u(k, s) GROUP BY k "
                    "ON CONFLICT (key) DO UPDATE SET seq = GREATEST(c.seq, EXCLUDED.seq)"},
};

/* ---- types ---- */

/* One connection and how to get it back. */
struct link {
    const char *role; /* "writer", "state" or "reader", for the log */
    PGconn *conn;     /* NULL while lost */
    int64_t retry_at_ms;
    int64_t backoff_ms;
    unsigned failed_attempts; /* since the loss */
    uint64_t jitter_state;
    bool is_failing;    /* a failing statement was logged; the next success says so */
    bool is_connecting; /* setting up: a failure ends the attempt, not a session */
};

/* The events appended since the last commit: their payloads back to back. */
struct pending_row {
    int64_t time_ms;
    size_t offset;
    size_t len;
};

struct buffer {
    unsigned char *data;
    size_t len;
    size_t capacity;
};

struct pg_store {
    store_t base;
    const char **keywords; /* for PQconnectdbParams; only the dbname value is a copy */
    const char **values;
    int64_t retention_ms;
    uint64_t retention_bytes;

    /* The writer thread's. */
    struct link writer;
    uint64_t committed_seq;  /* the last seq the server confirmed */
    uint64_t retained_bytes; /* payload bytes + ROW_OVERHEAD_BYTES per row, committed */
    bool has_writer_lock;    /* the writer's session holds the lock */
    int writer_pid;          /* the writer's server session, to end it after a */
    int64_t writer_start_us; /* lost network (see take_writer_lock) */
    struct pending_row *rows;
    size_t row_count;
    size_t row_capacity;
    struct buffer payloads;
    struct buffer arrays[3]; /* seqs, times, payloads of one chunk */

    /* Read by any thread. */
    _Atomic uint64_t first_seq;
    _Atomic uint64_t last_seq;

    pthread_mutex_t state_lock;
    struct link state; /* under state_lock */
    bool is_batching;  /* the state connection is in a batch's transaction; under state_lock */
    pthread_mutex_t reader_lock;
    struct link reader; /* under reader_lock */
};

static struct pg_store *as_pg(store_t *store)
{
    return (struct pg_store *)store;
}

/* ---- small helpers ---- */

/* A server or libpq message on one line, without its trailing newline. */
static const char *one_line(const char *message, char out[PG_MESSAGE_MAX])
{
    size_t len = 0;
    bool was_space = true;
    for (const char *p = message != NULL ? message : ""; *p != '\0' && len + 1 < PG_MESSAGE_MAX;
         p++) {
        bool is_space = *p == '\n' || *p == '\t' || *p == '\r' || *p == ' ';
        if (is_space && was_space) {
            continue;
        }
        out[len++] = is_space ? ' ' : *p;
        was_space = is_space;
    }
    while (len > 0 && out[len - 1] == ' ') {
        len--;
    }
    out[len] = '\0';
    return len > 0 ? out : "no message";
}

static void buffer_reserve(struct buffer *b, size_t more)
{
    if (b->capacity - b->len >= more) {
        return;
    }
    size_t capacity = b->capacity > 0 ? b->capacity : 4096;
    while (capacity - b->len < more) {
        capacity *= 2;
    }
    b->data = xrealloc(b->data, capacity);
    b->capacity = capacity;
}

static void buffer_put(struct buffer *b, const void *data, size_t len)
{
    buffer_reserve(b, len);
    if (len > 0) {
        memcpy(b->data + b->len, data, len);
    }
    b->len += len;
}

static void buffer_put32(struct buffer *b, uint32_t v)
{
    unsigned char be[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 8), (unsigned char)v};
    buffer_put(b, be, sizeof(be));
}

static void buffer_put64(struct buffer *b, uint64_t v)
{
    buffer_put32(b, (uint32_t)(v >> 32));
    buffer_put32(b, (uint32_t)v);
}

/* Starts a one-dimensional binary array of count elements (count > 0) of type elem_oid:
 * the header that array_recv expects. Elements follow as u32 length + bytes. */
static void array_begin(struct buffer *b, uint32_t elem_oid, size_t count)
{
    b->len = 0;
    buffer_put32(b, 1); /* dimensions */
    buffer_put32(b, 0); /* no NULLs */
    buffer_put32(b, elem_oid);
    buffer_put32(b, (uint32_t)count);
    buffer_put32(b, 1); /* lower bound */
}

static void array_put_int8(struct buffer *b, int64_t v)
{
    buffer_put32(b, 8);
    buffer_put64(b, (uint64_t)v);
}

static void array_put_bytes(struct buffer *b, const void *data, size_t len)
{
    buffer_put32(b, (uint32_t)len);
    buffer_put(b, data, len);
}

/* A binary int8 (or, for NULL, 0) from a result. */
static int64_t field_int8(const PGresult *res, int row, int column)
{
    if (PQgetisnull(res, row, column) || PQgetlength(res, row, column) != 8) {
        return 0;
    }
    const unsigned char *p = (const unsigned char *)PQgetvalue(res, row, column);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return (int64_t)v;
}

static void notice_to_log(void *arg, const PGresult *res)
{
    const char *role = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    char text[PG_MESSAGE_MAX];
    one_line(PQresultErrorMessage(res), text);
    if (severity != NULL && strcmp(severity, "WARNING") == 0) {
        log_msg(LOG_LEVEL_WARN, "store_pg: %s connection: server says %s", role, text);
    } else {
        log_msg(LOG_LEVEL_DEBUG, "store_pg: %s connection: server says %s", role, text);
    }
}

/* ---- connections ---- */

/* The backoff before the next attempt, with ±20 % jitter so that brokers restarted
 * together do not knock in step. */
static void link_schedule(struct link *link, int64_t now_ms)
{
    uint64_t x = link->jitter_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    link->jitter_state = x;
    int64_t spread = link->backoff_ms * 2 / 5;
    int64_t wait = link->backoff_ms - spread / 2 + (int64_t)(x % (uint64_t)(spread + 1));
    link->retry_at_ms = now_ms + wait;
}

static void link_init(struct link *link, const char *role)
{
    link->role = role;
    link->backoff_ms = BACKOFF_MIN_MS;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    link->jitter_state = ((uint64_t)now.tv_nsec << 20 ^ (uint64_t)(uintptr_t)link) | 1;
}

/* The connection broke: close it and start the backoff. */
static void link_lost(struct link *link, const char *why)
{
    log_msg(LOG_LEVEL_WARN,
            "store_pg: the %s connection to PostgreSQL was lost (%s); reconnecting with backoff",
            link->role, why);
    PQfinish(link->conn);
    link->conn = NULL;
    link->failed_attempts = 0;
    link->backoff_ms = BACKOFF_MIN_MS;
    /* The first reconnect may come at once (a server restart leaves idle connections dead
     * though it is back); backoff starts with the first failed attempt. */
    link->retry_at_ms = clock_monotonic_ms();
}

/* Fills err for a statement that did not give want (res may be NULL) and closes the
 * connection if it broke. Returns HEROLD_E_UNAVAILABLE for a lost connection and for the
 * errors that pass (connection, resources, shutdown, lock, I/O: SQLSTATE classes 08, 40,
 * 53, 55, 57, 58), HEROLD_E_SYSTEM for the rest. */
static int link_failed(struct link *link, PGresult *res, const char *what, struct herr *err)
{
    char line[PG_MESSAGE_MAX];
    const char *message = res != NULL && PQresultErrorMessage(res)[0] != '\0'
                              ? PQresultErrorMessage(res)
                              : PQerrorMessage(link->conn);
    const char *text = one_line(message, line);
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    bool is_passing = state == NULL || strncmp(state, "08", 2) == 0 ||
                      strncmp(state, "40", 2) == 0 || strncmp(state, "53", 2) == 0 ||
                      strncmp(state, "55", 2) == 0 || strncmp(state, "57", 2) == 0 ||
                      strncmp(state, "58", 2) == 0;
    int code = is_passing ? HEROLD_E_UNAVAILABLE : HEROLD_E_SYSTEM;
    herr_set(err, code, "store_pg: %s failed: %s", what, text);
    if (PQstatus(link->conn) == CONNECTION_BAD ||
        PQtransactionStatus(link->conn) == PQTRANS_UNKNOWN) {
        if (!link->is_connecting) {
            link_lost(link, text);
        }
        return HEROLD_E_UNAVAILABLE;
    }
    if (!link->is_failing) {
        log_msg(LOG_LEVEL_WARN, "store_pg: %s failed on the %s connection: %s", what, link->role,
                text);
        link->is_failing = true;
    }
    return code;
}

static void link_succeeded(struct link *link)
{
    if (link->is_failing) {
        log_msg(LOG_LEVEL_INFO, "store_pg: statements on the %s connection succeed again",
                link->role);
        link->is_failing = false;
    }
}

/* Runs sql without parameters and checks that it answered want. */
static int run(struct link *link, const char *sql, ExecStatusType want, const char *what,
               struct herr *err)
{
    PGresult *res = PQexec(link->conn, sql);
    int rc = 0;
    if (res == NULL || PQresultStatus(res) != want) {
        rc = link_failed(link, res, what, err);
    }
    PQclear(res);
    return rc;
}

/* Commits the transaction open on link. A transaction that failed answers COMMIT with
 * ROLLBACK: then nothing of it was stored (HEROLD_E_UNAVAILABLE). */
static int commit_transaction(struct link *link, const char *what, struct herr *err)
{
    PGresult *res = PQexec(link->conn, "COMMIT");
    int rc = 0;
    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = link_failed(link, res, what, err);
    } else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        rc = herr_set(err, HEROLD_E_UNAVAILABLE, "store_pg: %s: rolled back", what);
    }
    PQclear(res);
    return rc;
}

/* Ends a transaction that failed on link, so that nothing of it is stored and the next
 * statement does not run inside it; a connection that cannot roll back is dropped. */
static void rollback_transaction(struct link *link)
{
    if (link->conn != NULL && PQtransactionStatus(link->conn) != PQTRANS_IDLE) {
        struct herr ignored;
        run(link, "ROLLBACK", PGRES_COMMAND_OK, "ROLLBACK", &ignored);
        if (link->conn != NULL && PQtransactionStatus(link->conn) != PQTRANS_IDLE) {
            link_lost(link, "no ROLLBACK possible after a failed transaction");
        }
    }
}

/* Runs a prepared statement; on success *out holds the result (caller PQclears it). */
static int run_prepared(struct link *link, const char *name, int param_count,
                        const char *const *values, const int *lengths, const int *formats,
                        int result_format, ExecStatusType want, PGresult **out, struct herr *err)
{
    PGresult *res =
        PQexecPrepared(link->conn, name, param_count, values, lengths, formats, result_format);
    if (res == NULL || PQresultStatus(res) != want) {
        int rc = link_failed(link, res, name, err);
        PQclear(res);
        *out = NULL;
        return rc;
    }
    *out = res;
    return 0;
}

static int prepare_all(struct link *link, const struct statement *statements, size_t count,
                       struct herr *err)
{
    for (size_t i = 0; i < count; i++) {
        PGresult *res = PQprepare(link->conn, statements[i].name, statements[i].sql, 0, NULL);
        int rc = 0;
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
            rc = link_failed(link, res, statements[i].name, err);
        }
        PQclear(res);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* Connects link->conn (blocking, up to connect_timeout). */
static int link_connect(struct pg_store *s, struct link *link, struct herr *err)
{
    PGconn *conn = PQconnectdbParams(s->keywords, s->values, 1);
    if (conn == NULL) {
        return herr_set(err, HEROLD_E_SYSTEM, "store_pg: out of memory in PQconnectdbParams");
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        char text[PG_MESSAGE_MAX];
        herr_set(err, HEROLD_E_UNAVAILABLE, "store_pg: cannot connect to PostgreSQL: %s",
                 one_line(PQerrorMessage(conn), text));
        PQfinish(conn);
        return HEROLD_E_UNAVAILABLE;
    }
    PQsetNoticeReceiver(conn, notice_to_log, (void *)link->role);
    link->conn = conn;
    link->is_connecting = true;
    return 0;
}

/* ---- the writer connection's set-up ---- */

static int migrate(struct link *link, struct herr *err)
{
    int rc = run(link, "BEGIN", PGRES_COMMAND_OK, "BEGIN (migration)", err);
    if (rc != 0) {
        return rc;
    }
    rc = run(link, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK_KEY ")", PGRES_TUPLES_OK,
             "pg_advisory_xact_lock", err);
    int version = 0;
    if (rc == 0) {
        PGresult *res =
            PQexec(link->conn, "SELECT to_regclass('herold_broker.schema_version') IS NOT NULL");
        if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = link_failed(link, res, "reading the schema version", err);
        } else if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
            PQclear(res);
            res = PQexec(link->conn, "SELECT max(version) FROM herold_broker.schema_version");
            if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
                rc = link_failed(link, res, "reading the schema version", err);
            } else if (PQgetisnull(res, 0, 0)) {
                rc = herr_set(err, HEROLD_E_SYSTEM,
                              "store_pg: herold_broker.schema_version is empty");
            } else {
                version = atoi(PQgetvalue(res, 0, 0));
            }
        }
        PQclear(res);
    }
    if (rc == 0 && (version < 0 || version > STORE_PG_SCHEMA_VERSION)) {
        rc = herr_set(err, HEROLD_E_SYSTEM,
                      "store_pg: the database has schema version %d, this herold knows up to %d",
                      version, STORE_PG_SCHEMA_VERSION);
    }
    for (int next = version + 1; rc == 0 && next <= STORE_PG_SCHEMA_VERSION; next++) {
        char what[64];
        snprintf(what, sizeof(what), "schema version %d", next);
        rc = run(link, schema_steps[next], PGRES_COMMAND_OK, what, err);
        if (rc == 0) {
            log_msg(LOG_LEVEL_INFO, "store_pg: applied schema version %d", next);
        }
    }
    if (rc == 0) {
        PGresult *res = PQexec(link->conn, "COMMIT");
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
            rc = link_failed(link, res, "COMMIT (migration)", err);
        } else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
            rc = herr_set(err, HEROLD_E_SYSTEM, "store_pg: the migration was rolled back");
        }
        PQclear(res);
        return rc;
    }
    if (link->conn != NULL) {
        PQclear(PQexec(link->conn, "ROLLBACK"));
    }
    return rc == HEROLD_E_UNAVAILABLE ? rc : HEROLD_E_SYSTEM;
}

/* Returns 1 when the lock was taken, 0 when another session holds it, or an error. */
static int try_writer_lock(struct link *link, struct herr *err)
{
    PGresult *res = PQexec(link->conn, "SELECT pg_try_advisory_lock(" WRITER_LOCK_KEY ")");
    int rc;
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = link_failed(link, res, "pg_try_advisory_lock", err);
    } else {
        rc = strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? 1 : 0;
    }
    PQclear(res);
    return rc;
}

/* Takes the lock that makes this the database's only writer. After a reconnect the holder
 * may be this broker's own previous session, which the server has not yet noticed gone
 * (a dropped network): that one, known by its pid and start time, is ended first.
 * pg_terminate_backend waits for it to exit, and by then a commit it was running has
 * either committed or not, so the clean-up after the lock sees its outcome. */
static int take_writer_lock(struct pg_store *s, struct herr *err)
{
    struct link *link = &s->writer;
    s->has_writer_lock = false;
    int rc = try_writer_lock(link, err);
    if (rc == 0 && s->writer_pid != 0) {
        char pid[INT_TEXT_MAX];
        char start[INT_TEXT_MAX];
        snprintf(pid, sizeof(pid), "%d", s->writer_pid);
        snprintf(start, sizeof(start), "%" PRId64, s->writer_start_us);
        const char *values[] = {pid, start};
        PGresult *res = PQexecParams(
            link->conn,
            "SELECT pg_terminate_backend(pid, " TERMINATE_WAIT_MS ") FROM pg_stat_activity "
            "WHERE pid = $1::int AND "
            "(extract(epoch FROM backend_start) * 1000000)::bigint = $2::bigint",
            2, NULL, values, NULL, NULL, 0);
        if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            log_msg(LOG_LEVEL_INFO, "store_pg: ended this broker's previous session (pid %d)",
                    s->writer_pid);
        }
        PQclear(res);
        rc = try_writer_lock(link, err);
    }
    if (rc < 0) {
        return rc;
    }
    if (rc == 0) {
        return herr_set(err, HEROLD_E_UNAVAILABLE,
                        "store_pg: another herold uses this database (it holds the writer lock)");
    }
    s->has_writer_lock = true;
    PGresult *res =
        PQexec(link->conn, "SELECT pg_backend_pid(), (extract(epoch FROM backend_start) * 1000000)"
                           "::bigint FROM pg_stat_activity WHERE pid = pg_backend_pid()");
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = link_failed(link, res, "reading the session's pid", err);
    } else {
        s->writer_pid = atoi(PQgetvalue(res, 0, 0));
        s->writer_start_us = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        rc = 0;
    }
    PQclear(res);
    return rc;
}

/* Reads the first and last seq and, when asked, the retained bytes. */
static int read_event_stats(struct pg_store *s, bool with_bytes, uint64_t *first, uint64_t *last,
                            struct herr *err)
{
    const char *sql =
        with_bytes ? "SELECT min(seq), max(seq), count(*), "
                     "coalesce(sum(octet_length(payload)), 0)::bigint FROM herold_broker.events"
                   : "SELECT min(seq), max(seq) FROM herold_broker.events";
    PGresult *res = PQexecParams(s->writer.conn, sql, 0, NULL, NULL, NULL, NULL, 1);
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        int rc = link_failed(&s->writer, res, "reading the events' range", err);
        PQclear(res);
        return rc;
    }
    *first = (uint64_t)field_int8(res, 0, 0);
    *last = (uint64_t)field_int8(res, 0, 1);
    if (with_bytes) {
        s->retained_bytes =
            (uint64_t)field_int8(res, 0, 3) + (uint64_t)field_int8(res, 0, 2) * ROW_OVERHEAD_BYTES;
    }
    PQclear(res);
    return 0;
}

/* Everything a fresh writer connection needs: the lock, the schema, the statements, and
 * the events' range. After a reconnect (is_open false) rows past the last confirmed seq
 * go first: they can only be from a commit whose answer was lost. */
static int writer_setup(struct pg_store *s, bool is_open, struct herr *err)
{
    struct link *link = &s->writer;
    int rc = take_writer_lock(s, err);
    if (rc == 0) {
        rc = migrate(link, err);
    }
    if (rc == 0) {
        rc = prepare_all(link, writer_statements,
                         sizeof(writer_statements) / sizeof(writer_statements[0]), err);
    }
    if (rc == 0 && !is_open) {
        char after[INT_TEXT_MAX];
        snprintf(after, sizeof(after), "%" PRIu64, s->committed_seq);
        const char *values[] = {after};
        PGresult *res =
            PQexecParams(link->conn, "DELETE FROM herold_broker.events WHERE seq > $1::bigint", 1,
                         NULL, values, NULL, NULL, 0);
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
            rc = link_failed(link, res, "deleting unconfirmed events", err);
        } else if (strcmp(PQcmdTuples(res), "0") != 0) {
            log_msg(LOG_LEVEL_WARN,
                    "store_pg: deleted %s events after seq %s, stored by a commit whose answer "
                    "was lost",
                    PQcmdTuples(res), after);
        }
        PQclear(res);
    }
    uint64_t first = 0;
    uint64_t last = 0;
    if (rc == 0) {
        rc = read_event_stats(s, is_open, &first, &last, err);
    }
    if (rc == 0 && !is_open && last != s->committed_seq) {
        log_msg(LOG_LEVEL_ERROR,
                "store_pg: the database's events end at seq %" PRIu64 ", but seq %" PRIu64
                " was committed: the seqs after %" PRIu64 " will be given again",
                last, s->committed_seq, last);
    }
    /* A trim whose answer was lost, or a change behind this broker's back: count again. */
    if (rc == 0 && !is_open &&
        (last != s->committed_seq ||
         first != atomic_load_explicit(&s->first_seq, memory_order_relaxed))) {
        rc = read_event_stats(s, true, &first, &last, err);
    }
    if (rc != 0) {
        return rc;
    }
    s->committed_seq = last;
    atomic_store_explicit(&s->first_seq, first, memory_order_release);
    atomic_store_explicit(&s->last_seq, last, memory_order_release);
    return 0;
}

/* Prepares the statements of the state or the reader connection. */
static int statements_setup(struct pg_store *s, struct link *link, struct herr *err)
{
    if (link == &s->reader) {
        return prepare_all(link, reader_statements,
                           sizeof(reader_statements) / sizeof(reader_statements[0]), err);
    }
    return prepare_all(link, state_statements,
                       sizeof(state_statements) / sizeof(state_statements[0]), err);
}

/* Makes sure link is connected: at once when it is; HEROLD_E_UNAVAILABLE without touching
 * the network while its backoff runs; else one attempt to connect and set up. */
static int link_ready(struct pg_store *s, struct link *link, struct herr *err)
{
    if (link->conn != NULL) {
        return 0;
    }
    int64_t now = clock_monotonic_ms();
    if (now < link->retry_at_ms) {
        return herr_set(err, HEROLD_E_UNAVAILABLE, "store unavailable: reconnecting to PostgreSQL");
    }
    struct herr why = {0};
    int rc = link_connect(s, link, &why);
    if (rc == 0) {
        rc = link == &s->writer ? writer_setup(s, false, &why) : statements_setup(s, link, &why);
    }
    link->is_connecting = false;
    if (rc != 0) {
        PQfinish(link->conn);
        link->conn = NULL;
        link->failed_attempts++;
        log_msg(LOG_LEVEL_DEBUG, "store_pg: %s reconnect attempt %u failed: %s", link->role,
                link->failed_attempts, why.message);
        link->backoff_ms =
            link->backoff_ms * 2 < BACKOFF_MAX_MS ? link->backoff_ms * 2 : BACKOFF_MAX_MS;
        link_schedule(link, clock_monotonic_ms());
        return herr_set(err, HEROLD_E_UNAVAILABLE,
                        "store unavailable: reconnecting to PostgreSQL (%s)", why.message);
    }
    log_msg(LOG_LEVEL_INFO,
            "store_pg: the %s connection to PostgreSQL is back (after %u failed "
            "attempts)",
            link->role, link->failed_attempts);
    link->failed_attempts = 0;
    link->backoff_ms = BACKOFF_MIN_MS;
    link->is_failing = false;
    return 0;
}

/* The writer reconnects only between batches: rows appended before a loss are refused by
 * the next commit, and must not be stored with seqs from before a reconnect that re-read
 * the range. */
static int writer_ready(struct pg_store *s, struct herr *err)
{
    if (s->writer.conn == NULL && s->row_count > 0) {
        return herr_set(err, HEROLD_E_UNAVAILABLE, "store unavailable: reconnecting to PostgreSQL");
    }
    return link_ready(s, &s->writer, err);
}

/* ---- events ---- */

static void pending_drop(struct pg_store *s)
{
    s->row_count = 0;
    s->payloads.len = 0;
}

static int pg_event_append(store_t *store, const void *payload, size_t len, int64_t time_ms,
                           uint64_t *seq, struct herr *err)
{
    struct pg_store *s = as_pg(store);
    if (len > JOURNAL_MAX_RECORD_BYTES) {
        return herr_set(err, HEROLD_E_TOO_LARGE,
                        "store: an event of %zu bytes exceeds the %d-byte limit", len,
                        JOURNAL_MAX_RECORD_BYTES);
    }
    int rc = writer_ready(s, err);
    if (rc != 0) {
        return rc;
    }
    if (s->row_count == s->row_capacity) {
        s->row_capacity = s->row_capacity > 0 ? s->row_capacity * 2 : 256;
        s->rows = xrealloc(s->rows, s->row_capacity * sizeof(*s->rows));
    }
    s->rows[s->row_count] = (struct pending_row){time_ms, s->payloads.len, len};
    s->row_count++;
    buffer_put(&s->payloads, payload, len);
    if (seq != NULL) {
        *seq = s->committed_seq + s->row_count;
    }
    return 0;
}

/* Inserts the pending rows [start, start + count) with one statement. */
static int insert_chunk(struct pg_store *s, size_t start, size_t count, struct herr *err)
{
    struct buffer *seqs = &s->arrays[0];
    struct buffer *times = &s->arrays[1];
    struct buffer *payloads = &s->arrays[2];
    array_begin(seqs, OID_INT8, count);
    array_begin(times, OID_INT8, count);
    array_begin(payloads, OID_BYTEA, count);
    for (size_t i = start; i < start + count; i++) {
        const struct pending_row *row = &s->rows[i];
        array_put_int8(seqs, (int64_t)(s->committed_seq + 1 + i));
        array_put_int8(times, row->time_ms);
        array_put_bytes(payloads, s->payloads.data + row->offset, row->len);
    }
    const char *values[] = {(const char *)seqs->data, (const char *)times->data,
                            (const char *)payloads->data};
    const int lengths[] = {(int)seqs->len, (int)times->len, (int)payloads->len};
    const int formats[] = {1, 1, 1};
    PGresult *res = NULL;
    int rc = run_prepared(&s->writer, "insert", 3, values, lengths, formats, 0, PGRES_COMMAND_OK,
                          &res, err);
    PQclear(res);
    return rc;
}

static int pg_event_commit(store_t *store, struct herr *err)
{
    struct pg_store *s = as_pg(store);
    size_t count = s->row_count;
    if (count == 0) {
        return 0;
    }
    if (s->writer.conn == NULL) { /* lost by a trim since the appends */
        pending_drop(s);
        return herr_set(err, HEROLD_E_UNAVAILABLE, "store unavailable: reconnecting to PostgreSQL");
    }
    bool is_chunked = count > COMMIT_CHUNK_ROWS;
    int rc = 0;
    if (is_chunked) {
        rc = run(&s->writer, "BEGIN", PGRES_COMMAND_OK, "BEGIN", err);
    }
    for (size_t start = 0; rc == 0 && start < count; start += COMMIT_CHUNK_ROWS) {
        size_t chunk = count - start < COMMIT_CHUNK_ROWS ? count - start : COMMIT_CHUNK_ROWS;
        rc = insert_chunk(s, start, chunk, err);
    }
    if (rc == 0 && is_chunked) {
        rc = commit_transaction(&s->writer, "COMMIT", err);
    }
    if (rc != 0) {
        /* On a healthy connection nothing was stored; leave no transaction open. */
        rollback_transaction(&s->writer);
        pending_drop(s);
        if (err != NULL) {
            err->code = HEROLD_E_UNAVAILABLE;
        }
        return HEROLD_E_UNAVAILABLE;
    }
    link_succeeded(&s->writer);
    uint64_t first_new = s->committed_seq + 1;
    s->committed_seq += count;
    s->retained_bytes += s->payloads.len + (uint64_t)count * ROW_OVERHEAD_BYTES;
    pending_drop(s);
    if (atomic_load_explicit(&s->first_seq, memory_order_relaxed) == 0) {
        atomic_store_explicit(&s->first_seq, first_new, memory_order_release);
    }
    atomic_store_explicit(&s->last_seq, s->committed_seq, memory_order_release);
    return 0;
}

/* Fetches one page of committed events on the reader connection. */
static int read_page(struct pg_store *s, uint64_t from, uint64_t end, size_t limit, PGresult **res,
                     struct herr *err)
{
    char from_text[INT_TEXT_MAX];
    char end_text[INT_TEXT_MAX];
    char limit_text[INT_TEXT_MAX];
    snprintf(from_text, sizeof(from_text), "%" PRIu64, from);
    snprintf(end_text, sizeof(end_text), "%" PRIu64, end);
    snprintf(limit_text, sizeof(limit_text), "%zu", limit);
    const char *values[] = {from_text, end_text, limit_text};
    pthread_mutex_lock(&s->reader_lock);
    bool was_connected = s->reader.conn != NULL;
    int rc = link_ready(s, &s->reader, err);
    if (rc == 0) {
        rc = run_prepared(&s->reader, "read", 3, values, NULL, NULL, 1, PGRES_TUPLES_OK, res, err);
    }
    if (rc != 0 && was_connected && s->reader.conn == NULL && link_ready(s, &s->reader, err) == 0) {
        /* Found dead on first use (the server restarted while it idled): a read is safe to
         * repeat on the fresh connection. */
        rc = run_prepared(&s->reader, "read", 3, values, NULL, NULL, 1, PGRES_TUPLES_OK, res, err);
    }
    if (rc == 0) {
        link_succeeded(&s->reader);
    }
    pthread_mutex_unlock(&s->reader_lock);
    return rc;
}

static int pg_event_read(store_t *store, uint64_t from_seq, size_t max_records, journal_read_fn fn,
                         void *ctx, struct herr *err)
{
    struct pg_store *s = as_pg(store);
    uint64_t end = atomic_load_explicit(&s->last_seq, memory_order_acquire);
    uint64_t first = atomic_load_explicit(&s->first_seq, memory_order_acquire);
    if (from_seq != 0 && first != 0 && from_seq < first) {
        return herr_set(err, HEROLD_E_NOT_FOUND,
                        "store: seq %" PRIu64 " is before the first retained seq %" PRIu64,
                        from_seq, first);
    }
    uint64_t next = from_seq != 0 ? from_seq : first;
    if (next == 0 || next > end) {
        return 0;
    }
    size_t handed = 0;
    bool is_stopped = false;
    while (!is_stopped && next <= end && (max_records == 0 || handed < max_records)) {
        size_t limit = READ_PAGE_ROWS;
        if (max_records != 0 && max_records - handed < limit) {
            limit = max_records - handed;
        }
        PGresult *res = NULL;
        int rc = read_page(s, next, end, limit, &res, err);
        if (rc != 0) {
            return rc;
        }
        int rows = PQntuples(res);
        for (int i = 0; i < rows && !is_stopped; i++) {
            uint64_t seq = (uint64_t)field_int8(res, i, 0);
            if (seq != next) {
                rc = herr_set(err, HEROLD_E_NOT_FOUND,
                              "store: seq %" PRIu64 " was deleted by retention during the read",
                              next);
                break;
            }
            journal_record_t record = {seq, field_int8(res, i, 1), PQgetvalue(res, i, 2),
                                       (size_t)PQgetlength(res, i, 2)};
            next++;
            handed++;
            is_stopped = !fn(&record, ctx);
        }
        PQclear(res);
        if (rc != 0) {
            return rc;
        }
        if (rows == 0) {
            return herr_set(err, HEROLD_E_NOT_FOUND,
                            "store: seq %" PRIu64 " was deleted by retention during the read",
                            next);
        }
    }
    return 0;
}

static uint64_t pg_event_first_seq(store_t *store)
{
    return atomic_load_explicit(&as_pg(store)->first_seq, memory_order_acquire);
}

static uint64_t pg_event_last_seq(store_t *store)
{
    return atomic_load_explicit(&as_pg(store)->last_seq, memory_order_acquire);
}

/* The first seq to keep for retention by size: walks the oldest rows until they add up to
 * the excess. */
static int size_cut(struct pg_store *s, uint64_t first, uint64_t last, uint64_t *cut,
                    struct herr *err)
{
    uint64_t excess = s->retained_bytes - s->retention_bytes;
    uint64_t freed = 0;
    uint64_t from = first;
    char limit_text[INT_TEXT_MAX];
    snprintf(limit_text, sizeof(limit_text), "%d", TRIM_PAGE_ROWS);
    while (from <= last) {
        char from_text[INT_TEXT_MAX];
        snprintf(from_text, sizeof(from_text), "%" PRIu64, from);
        const char *values[] = {from_text, limit_text};
        PGresult *res = NULL;
        int rc = run_prepared(&s->writer, "trim_sizes", 2, values, NULL, NULL, 1, PGRES_TUPLES_OK,
                              &res, err);
        if (rc != 0) {
            return rc;
        }
        int rows = PQntuples(res);
        for (int i = 0; i < rows; i++) {
            uint64_t seq = (uint64_t)field_int8(res, i, 0);
            freed += (uint64_t)field_int8(res, i, 1) + ROW_OVERHEAD_BYTES;
            if (freed >= excess) {
                *cut = seq + 1;
                PQclear(res);
                return 0;
            }
            from = seq + 1;
        }
        PQclear(res);
        if (rows < TRIM_PAGE_ROWS) {
            break;
        }
    }
    *cut = last;
    return 0;
}

static size_t pg_event_trim(store_t *store, int64_t now_ms)
{
    struct pg_store *s = as_pg(store);
    struct herr err = {0};
    if (writer_ready(s, &err) != 0) {
        return 0;
    }
    uint64_t first = atomic_load_explicit(&s->first_seq, memory_order_relaxed);
    uint64_t last = s->committed_seq;
    if (first == 0 || first >= last) {
        return 0; /* the newest row always stays */
    }
    int64_t threshold;
    if (__builtin_sub_overflow(now_ms, s->retention_ms, &threshold)) {
        threshold = INT64_MIN;
    }
    /* Oldest first: everything before the first row young enough. */
    char threshold_text[INT_TEXT_MAX];
    snprintf(threshold_text, sizeof(threshold_text), "%" PRId64, threshold);
    const char *age_values[] = {threshold_text};
    PGresult *res = NULL;
    int rc = run_prepared(&s->writer, "trim_age", 1, age_values, NULL, NULL, 1, PGRES_TUPLES_OK,
                          &res, &err);
    uint64_t cut = first;
    if (rc == 0) {
        cut = PQntuples(res) > 0 ? (uint64_t)field_int8(res, 0, 0) : last;
        PQclear(res);
    }
    if (rc == 0 && s->retained_bytes > s->retention_bytes) {
        uint64_t by_size = first;
        rc = size_cut(s, first, last, &by_size, &err);
        cut = by_size > cut ? by_size : cut;
    }
    if (cut > last) {
        cut = last;
    }
    if (rc != 0 || cut <= first) {
        return 0;
    }
    char cut_text[INT_TEXT_MAX];
    snprintf(cut_text, sizeof(cut_text), "%" PRIu64, cut);
    const char *delete_values[] = {cut_text};
    rc = run_prepared(&s->writer, "trim_delete", 1, delete_values, NULL, NULL, 1, PGRES_TUPLES_OK,
                      &res, &err);
    if (rc != 0) {
        return 0;
    }
    uint64_t deleted = (uint64_t)field_int8(res, 0, 0);
    uint64_t bytes = (uint64_t)field_int8(res, 0, 1) + deleted * ROW_OVERHEAD_BYTES;
    PQclear(res);
    link_succeeded(&s->writer);
    s->retained_bytes = bytes < s->retained_bytes ? s->retained_bytes - bytes : 0;
    atomic_store_explicit(&s->first_seq, cut, memory_order_release);
    log_msg(LOG_LEVEL_DEBUG, "store_pg: retention deleted %" PRIu64 " events before seq %" PRIu64,
            deleted, cut);
    return (size_t)deleted;
}

/* ---- subscriptions and cursors ---- */

/* In a batch, the state connection is not made again: a batch whose connection was lost
 * stores nothing. Returns 0 or HEROLD_E_UNAVAILABLE. Under state_lock. */
static int batch_link_check(struct pg_store *s, struct herr *err)
{
    return s->state.conn != NULL
               ? 0
               : herr_set(err, HEROLD_E_UNAVAILABLE,
                          "store unavailable: the connection was lost in a batch");
}

/* Runs one prepared statement on the state connection. */
static int state_command(struct pg_store *s, const char *name, int param_count,
                         const char *const *values, const int *lengths, const int *formats,
                         struct herr *err)
{
    pthread_mutex_lock(&s->state_lock);
    if (s->is_batching) {
        /* In a batch's transaction: no reconnect and no second try, which would store
         * this write without the batch's earlier ones (the caller aborts and tries the
         * writes one by one). */
        PGresult *res = NULL;
        int rc = batch_link_check(s, err);
        if (rc == 0) {
            rc = run_prepared(&s->state, name, param_count, values, lengths, formats, 0,
                              PGRES_COMMAND_OK, &res, err);
        }
        PQclear(res);
        pthread_mutex_unlock(&s->state_lock);
        return rc;
    }
    bool was_connected = s->state.conn != NULL;
    int rc = link_ready(s, &s->state, err);
    PGresult *res = NULL;
    if (rc == 0) {
        rc = run_prepared(&s->state, name, param_count, values, lengths, formats, 0,
                          PGRES_COMMAND_OK, &res, err);
    }
    if (rc != 0 && was_connected && s->state.conn == NULL && link_ready(s, &s->state, err) == 0) {
        /* Every state command is idempotent (upserts, forward-only cursors, deletes), so
         * one that met a connection the server had dropped runs again on a fresh one. */
        PQclear(res);
        res = NULL;
        rc = run_prepared(&s->state, name, param_count, values, lengths, formats, 0,
                          PGRES_COMMAND_OK, &res, err);
    }
    if (rc == 0) {
        link_succeeded(&s->state);
    }
    PQclear(res);
    pthread_mutex_unlock(&s->state_lock);
    return rc;
}

static int pg_subscription_put(store_t *store, const char *id, const char *json, struct herr *err)
{
    int rc = store_key_check("subscription id", id, id != NULL ? strlen(id) : 0, err);
    if (rc != 0) {
        return rc;
    }
    size_t len = strlen(json);
    if (len > STORE_MAX_DOCUMENT_BYTES) {
        return herr_set(err, HEROLD_E_TOO_LARGE,
                        "store: a subscription document of %zu bytes exceeds the %d-byte limit",
                        len, STORE_MAX_DOCUMENT_BYTES);
    }
    if (!path_utf8_is_valid(json, len)) {
        return herr_set(err, HEROLD_E_BAD_REQUEST, "store: the subscription document is not UTF-8");
    }
    const char *values[] = {id, json};
    return state_command(as_pg(store), "subscription_put", 2, values, NULL, NULL, err);
}

static int pg_subscription_delete(store_t *store, const char *id, struct herr *err)
{
    if (id == NULL || id[0] == '\0') {
        return 0; /* nothing can be stored under it */
    }
    const char *values[] = {id};
    return state_command(as_pg(store), "subscription_delete", 1, values, NULL, NULL, err);
}

static int pg_cursors_put(store_t *store, const store_cursor_t *cursors, size_t count, bool sync,
                          struct herr *err)
{
    (void)sync; /* always committed: one statement on the state connection */
    int rc = store_cursors_check(cursors, count, err);
    if (rc != 0 || count == 0) {
        return rc;
    }
    if (count > INT32_MAX / 16) {
        return herr_set(err, HEROLD_E_BAD_REQUEST, "store: %zu cursors in one call", count);
    }
    struct buffer keys = {0};
    struct buffer seqs = {0};
    array_begin(&keys, OID_TEXT, count);
    array_begin(&seqs, OID_INT8, count);
    for (size_t i = 0; i < count; i++) {
        array_put_bytes(&keys, cursors[i].key, strlen(cursors[i].key));
        array_put_int8(&seqs, (int64_t)cursors[i].seq);
    }
    const char *values[] = {(const char *)keys.data, (const char *)seqs.data};
    const int lengths[] = {(int)keys.len, (int)seqs.len};
    const int formats[] = {1, 1};
    rc = state_command(as_pg(store), "cursors_put", 2, values, lengths, formats, err);
    free(keys.data);
    free(seqs.data);
    return rc;
}

/* A batch is one transaction on the state connection. */
static int pg_state_begin(store_t *store, struct herr *err)
{
    struct pg_store *s = as_pg(store);
    pthread_mutex_lock(&s->state_lock);
    int rc = link_ready(s, &s->state, err);
    if (rc == 0) {
        rc = run(&s->state, "BEGIN", PGRES_COMMAND_OK, "beginning a batch", err);
    }
    s->is_batching = rc == 0;
    pthread_mutex_unlock(&s->state_lock);
    return rc;
}

static int pg_state_commit(store_t *store, struct herr *err)
{
    struct pg_store *s = as_pg(store);
    pthread_mutex_lock(&s->state_lock);
    s->is_batching = false;
    int rc = batch_link_check(s, err);
    if (rc == 0) {
        rc = commit_transaction(&s->state, "committing a batch", err);
    }
    if (rc == 0) {
        link_succeeded(&s->state);
    }
    pthread_mutex_unlock(&s->state_lock);
    return rc;
}

static void pg_state_abort(store_t *store)
{
    struct pg_store *s = as_pg(store);
    pthread_mutex_lock(&s->state_lock);
    s->is_batching = false;
    rollback_transaction(&s->state);
    pthread_mutex_unlock(&s->state_lock);
}

/* ---- lifecycle ---- */

/* Hands every subscription (in first-put order), then every cursor, to loader, a page at
 * a time so that a large table never sits in memory whole. */
static int load(struct pg_store *s, const store_loader_t *loader, struct herr *err)
{
    struct link *link = &s->state;
    char limit_text[INT_TEXT_MAX];
    snprintf(limit_text, sizeof(limit_text), "%d", LOAD_PAGE_ROWS);
    char *after = xstrdup("0");
    int rc = 0;
    bool has_more = loader->subscription != NULL;
    while (rc == 0 && has_more) {
        const char *values[] = {after, limit_text};
        PGresult *res =
            PQexecParams(link->conn,
                         "SELECT id, document, created FROM herold_broker.subscriptions "
                         "WHERE created > $1::bigint ORDER BY created LIMIT $2::bigint",
                         2, NULL, values, NULL, NULL, 0);
        if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = link_failed(link, res, "loading subscriptions", err);
        } else {
            int rows = PQntuples(res);
            for (int i = 0; i < rows; i++) {
                loader->subscription(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), loader->ctx);
            }
            has_more = rows == LOAD_PAGE_ROWS;
            if (rows > 0) {
                free(after);
                after = xstrdup(PQgetvalue(res, rows - 1, 2));
            }
        }
        PQclear(res);
    }
    free(after);
    after = NULL;
    has_more = loader->cursor != NULL;
    while (rc == 0 && has_more) {
        const char *values[] = {after, limit_text};
        PGresult *res = PQexecParams(link->conn,
                                     "SELECT key, seq FROM herold_broker.cursors "
                                     "WHERE $1::text IS NULL OR key > $1::text "
                                     "ORDER BY key LIMIT $2::bigint",
                                     2, NULL, values, NULL, NULL, 0);
        if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = link_failed(link, res, "loading cursors", err);
        } else {
            int rows = PQntuples(res);
            for (int i = 0; i < rows; i++) {
                uint64_t seq = strtoull(PQgetvalue(res, i, 1), NULL, 10);
                loader->cursor(PQgetvalue(res, i, 0), seq, loader->ctx);
            }
            has_more = rows == LOAD_PAGE_ROWS;
            if (rows > 0) {
                free(after);
                after = xstrdup(PQgetvalue(res, rows - 1, 0));
            }
        }
        PQclear(res);
    }
    free(after);
    return rc;
}

static void pg_close(store_t *store)
{
    struct pg_store *s = as_pg(store);
    if (s->has_writer_lock && s->writer.conn != NULL && PQstatus(s->writer.conn) == CONNECTION_OK) {
        /* The server frees the lock only once the session's process has ended, a moment after
         * PQfinish: unlocking here lets a broker started right after this one take it. */
        PQclear(PQexec(s->writer.conn, "SELECT pg_advisory_unlock(" WRITER_LOCK_KEY ")"));
    }
    PQfinish(s->writer.conn);
    PQfinish(s->state.conn);
    PQfinish(s->reader.conn);
    pthread_mutex_destroy(&s->state_lock);
    pthread_mutex_destroy(&s->reader_lock);
    for (size_t i = 0; s->keywords[i] != NULL; i++) {
        if (strcmp(s->keywords[i], "dbname") == 0) {
            free((char *)s->values[i]); /* the only copy: the rest are literals */
        }
    }
    free(s->keywords);
    free(s->values);
    free(s->rows);
    free(s->payloads.data);
    for (size_t i = 0; i < sizeof(s->arrays) / sizeof(s->arrays[0]); i++) {
        free(s->arrays[i].data);
    }
    free(s);
}

static const struct store_ops pg_ops = {
    .name = "postgresql",
    .close = pg_close,
    .event_append = pg_event_append,
    .event_commit = pg_event_commit,
    .event_read = pg_event_read,
    .event_first_seq = pg_event_first_seq,
    .event_last_seq = pg_event_last_seq,
    .event_trim = pg_event_trim,
    .subscription_put = pg_subscription_put,
    .subscription_delete = pg_subscription_delete,
    .cursors_put = pg_cursors_put,
    .state_begin = pg_state_begin,
    .state_commit = pg_state_commit,
    .state_abort = pg_state_abort,
};

/* The connection parameters: defaults before the conninfo, so that its own values win,
 * and the client encoding after it, since every string herold sends is UTF-8. */
static int connection_params(struct pg_store *s, const char *conninfo, struct herr *err)
{
    char *message = NULL;
    PQconninfoOption *options = PQconninfoParse(conninfo, &message);
    if (options == NULL) {
        char text[PG_MESSAGE_MAX];
        herr_set(err, HEROLD_E_CONFIG, "store_pg: the connection string is not valid: %s",
                 one_line(message != NULL ? message : "out of memory", text));
        PQfreemem(message);
        return HEROLD_E_CONFIG;
    }
    bool has_timeout = getenv("PGCONNECT_TIMEOUT") != NULL;
    for (PQconninfoOption *o = options; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "connect_timeout") == 0 && o->val != NULL && o->val[0] != '\0') {
            has_timeout = true;
        }
    }
    PQconninfoFree(options);
    s->keywords = xcalloc(6, sizeof(*s->keywords));
    s->values = xcalloc(6, sizeof(*s->values));
    size_t n = 0;
    s->keywords[n] = "fallback_application_name";
    s->values[n++] = "herold";
    if (!has_timeout) {
        s->keywords[n] = "connect_timeout";
        s->values[n++] = DEFAULT_CONNECT_TIMEOUT;
    }
    s->keywords[n] = "dbname";
    s->values[n++] = xstrdup(conninfo);
    s->keywords[n] = "client_encoding";
    s->values[n++] = "UTF8";
    return 0;
}

store_t *store_pg_open(const store_config_t *config, const store_loader_t *loader, struct herr *err)
{
    if (config == NULL || config->conninfo == NULL) {
        herr_set(err, HEROLD_E_CONFIG, "store_pg: no connection string given");
        return NULL;
    }
    if (config->retention_ms < 0) {
        herr_set(err, HEROLD_E_CONFIG, "store_pg: retention_ms %" PRId64 " is negative",
                 config->retention_ms);
        return NULL;
    }
    struct pg_store *s = xcalloc(1, sizeof(*s));
    s->base.ops = &pg_ops;
    s->retention_ms =
        config->retention_ms != 0 ? config->retention_ms : JOURNAL_DEFAULT_RETENTION_MS;
    s->retention_bytes =
        config->retention_bytes != 0 ? config->retention_bytes : JOURNAL_DEFAULT_RETENTION_BYTES;
    link_init(&s->writer, "writer");
    link_init(&s->state, "state");
    link_init(&s->reader, "reader");
    atomic_init(&s->first_seq, 0);
    atomic_init(&s->last_seq, 0);
    pthread_mutex_init(&s->state_lock, NULL);
    pthread_mutex_init(&s->reader_lock, NULL);

    int rc = connection_params(s, config->conninfo, err);
    if (rc == 0) {
        rc = link_connect(s, &s->writer, err);
    }
    if (rc == 0) {
        rc = writer_setup(s, true, err);
    }
    if (rc == 0) {
        rc = link_connect(s, &s->state, err);
    }
    if (rc == 0) {
        rc = statements_setup(s, &s->state, err);
    }
    if (rc == 0) {
        rc = link_connect(s, &s->reader, err);
    }
    if (rc == 0) {
        rc = statements_setup(s, &s->reader, err);
    }
    if (rc == 0 && loader != NULL) {
        rc = load(s, loader, err);
    }
    s->writer.is_connecting = false;
    s->state.is_connecting = false;
    s->reader.is_connecting = false;
    if (rc != 0) {
        if (s->keywords == NULL) {
            pthread_mutex_destroy(&s->state_lock);
            pthread_mutex_destroy(&s->reader_lock);
            free(s);
            return NULL;
        }
        pg_close(&s->base);
        return NULL;
    }
    log_msg(LOG_LEVEL_DEBUG,
            "store_pg: opened: events %" PRIu64 " to %" PRIu64 ", %" PRIu64 " bytes retained",
            atomic_load(&s->first_seq), s->committed_seq, s->retained_bytes);
    return &s->base;
}
