/*
 * herold-pg-source: publishes a PostgreSQL store's outbox (schemas/sql/outbox.sql) to herold.
 *
 *   herold-pg-source --db CONNINFO [--ingest ENDPOINT] [--server-key Z85 --key-file FILE]
 *                    [--batch N]
 *
 * A round reads up to --batch rows in id order, sends them all (pipelined) as events with
 * the row's event_id, and waits for the broker's answers. Acked rows are deleted; refused
 * rows move to herold.outbox_refused with the broker's error; rows without an answer
 * within PG_SOURCE_ACK_SECONDS stay and go again next round (same id: the broker's dedup
 * absorbs a repeat). Between rounds it waits for the outbox's NOTIFY, or a second.
 *
 * So a row leaves the outbox only after the broker has it durably: a crash of this
 * program, of the broker or of the database loses nothing. When the database goes away,
 * the source reconnects every PG_SOURCE_RETRY_SECONDS; when the broker does, rows wait.
 * SIGTERM or SIGINT ends it after the round in hand. Exit status 0 after a signal, 2 on
 * a usage error.
 */

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <msgpack.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cli.h"
#include "cli_curve.h"
#include "cli_pack.h"
#include "mem.h"
#include "zap.h"

#define PG_SOURCE_DEFAULT_INGEST "tcp://127.0.0.1:5560"
#define PG_SOURCE_DEFAULT_BATCH 500
#define PG_SOURCE_MAX_BATCH 10000
#define PG_SOURCE_ACK_SECONDS 5.0
#define PG_SOURCE_RETRY_SECONDS 1
#define PG_SOURCE_IDLE_MS 1000

static volatile sig_atomic_t stop_requested;

static void on_stop(int signo)
{
    (void)signo;
    stop_requested = 1;
}

struct options {
    const char *db;
    const char *ingest;
    const char *server_key;
    const char *key_file;
    uint64_t batch;
};

/* One row of a round: the outbox id, the event id, and the broker's answer. */
struct row {
    char *id;
    char *event_id;
    enum { ROW_WAITING, ROW_ACKED, ROW_REFUSED } state;
    char *error; /* refused: the broker's code and message */
};

static void usage(FILE *out)
{
    fputs("usage: herold-pg-source --db CONNINFO [--ingest ENDPOINT]\n"
          "                        [--server-key Z85 --key-file FILE] [--batch N]\n"
          "\n"
          "Publishes the rows of herold.outbox (schemas/sql/outbox.sql) to herold and deletes\n"
          "each once the broker acknowledged it. --ingest defaults to " PG_SOURCE_DEFAULT_INGEST
          ",\n--batch (rows per round) to 500.\n",
          out);
}

static int parse_options(int argc, char **argv, struct options *o)
{
    enum { OPT_DB = 256, OPT_INGEST, OPT_SERVER_KEY, OPT_KEY_FILE, OPT_BATCH, OPT_HELP };
    static const struct option long_options[] = {
        {"db", required_argument, NULL, OPT_DB},
        {"ingest", required_argument, NULL, OPT_INGEST},
        {"server-key", required_argument, NULL, OPT_SERVER_KEY},
        {"key-file", required_argument, NULL, OPT_KEY_FILE},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->ingest = PG_SOURCE_DEFAULT_INGEST;
    o->batch = PG_SOURCE_DEFAULT_BATCH;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (opt) {
        case OPT_DB:
            o->db = optarg;
            break;
        case OPT_INGEST:
            o->ingest = optarg;
            break;
        case OPT_SERVER_KEY:
            o->server_key = optarg;
            break;
        case OPT_KEY_FILE:
            o->key_file = optarg;
            break;
        case OPT_BATCH:
            if (!cli_parse_count(optarg, &o->batch) || o->batch > PG_SOURCE_MAX_BATCH) {
                fprintf(stderr, "herold-pg-source: --batch is 1..%d\n", PG_SOURCE_MAX_BATCH);
                return -1;
            }
            break;
        case OPT_HELP:
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind != argc || o->db == NULL || (o->server_key == NULL) != (o->key_file == NULL)) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static void *open_socket(void *context, const struct options *o)
{
    void *socket = zmq_socket(context, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof(linger));
    if (cli_curve_setup(socket, o->server_key, o->key_file, "herold-pg-source") != 0) {
        zmq_close(socket);
        return NULL;
    }
    if (zmq_connect(socket, o->ingest) != 0) {
        fprintf(stderr, "herold-pg-source: cannot connect to %s: %s\n", o->ingest,
                zmq_strerror(errno));
        zmq_close(socket);
        return NULL;
    }
    return socket;
}

/* ---- the database ---- */

static PGconn *connect_db(const char *conninfo)
{
    while (!stop_requested) {
        PGconn *db = PQconnectdb(conninfo);
        if (PQstatus(db) == CONNECTION_OK) {
            PGresult *res = PQexec(db, "LISTEN herold_outbox");
            bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
            PQclear(res);
            if (ok) {
                fprintf(stderr, "herold-pg-source: connected to the database\n");
                return db;
            }
        }
        fprintf(stderr, "herold-pg-source: database: %s", PQerrorMessage(db));
        PQfinish(db);
        sleep(PG_SOURCE_RETRY_SECONDS);
    }
    return NULL;
}

/* Waits up to timeout_ms for the outbox's NOTIFY. False when the connection broke. */
static bool wait_for_notify(PGconn *db, int timeout_ms)
{
    struct pollfd pfd = {PQsocket(db), POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) < 0 && errno != EINTR) {
        return false;
    }
    if (PQconsumeInput(db) == 0) {
        return false;
    }
    PGnotify *n;
    while ((n = PQnotifies(db)) != NULL) {
        PQfreemem(n);
    }
    return PQstatus(db) == CONNECTION_OK;
}

static const char select_rows[] =
    "SELECT id, event_id, source, type, resource, previous, array_to_json(readers)::text, kind,"
    " actor, data::text, (extract(epoch FROM created_at) * 1000)::bigint"
    " FROM herold.outbox ORDER BY id LIMIT $1";

/* The event of row r of res as msgpack, into payload (reset first). */
static bool pack_row(const PGresult *res, int r, struct payload *payload)
{
    json_error_t jerr;
    json_t *readers = json_loads(PQgetvalue(res, r, 6), 0, &jerr);
    json_t *data = PQgetisnull(res, r, 9) ? NULL : json_loads(PQgetvalue(res, r, 9), 0, &jerr);
    if (!json_is_array(readers) || (!PQgetisnull(res, r, 9) && data == NULL)) {
        json_decref(readers);
        json_decref(data);
        return false;
    }
    json_t *event = json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:o}", "id", PQgetvalue(res, r, 1), "source",
        PQgetvalue(res, r, 2), "type", PQgetvalue(res, r, 3), "resource", PQgetvalue(res, r, 4),
        "time", (json_int_t)strtoll(PQgetvalue(res, r, 10), NULL, 10), "readers", readers);
    static const struct {
        int column;
        const char *name;
    } optional[] = {{5, "previous"}, {7, "kind"}, {8, "actor"}};
    for (size_t i = 0; i < sizeof(optional) / sizeof(optional[0]); i++) {
        if (!PQgetisnull(res, r, optional[i].column)) {
            json_object_set_new(event, optional[i].name,
                                json_string(PQgetvalue(res, r, optional[i].column)));
        }
    }
    if (data != NULL) {
        json_object_set_new(event, "data", data);
    }
    payload->size = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, payload, payload_write);
    pack_json(&pk, event);
    json_decref(event);
    return true;
}

/* ---- a round ---- */

/* The waiting row with this event id. Replies come back in the order the rows went out,
 * so the search starts after the last one found (*hint) and is one step in the usual
 * case, not a scan of the batch per reply. */
static struct row *find_row(struct row *rows, int count, int *hint, const char *event_id,
                            size_t len)
{
    for (int n = 0; n < count; n++) {
        int i = (*hint + n) % count;
        if (rows[i].state == ROW_WAITING && strlen(rows[i].event_id) == len &&
            memcmp(rows[i].event_id, event_id, len) == 0) {
            *hint = i + 1;
            return &rows[i];
        }
    }
    return NULL;
}

/* Reads answers until every row has one or the time is up. */
static void collect_answers(void *socket, struct row *rows, int count)
{
    int waiting = 0;
    for (int i = 0; i < count; i++) {
        waiting += rows[i].state == ROW_WAITING; /* not those refused before sending */
    }
    int hint = 0;
    struct timespec start = cli_monotonic_now();
    while (waiting > 0 && !stop_requested) {
        double left = PG_SOURCE_ACK_SECONDS - cli_seconds_between(start, cli_monotonic_now());
        if (left <= 0) {
            break;
        }
        zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, (long)(left * 1000) + 1) <= 0) {
            continue;
        }
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            continue;
        }
        msgpack_unpacked un;
        msgpack_unpacked_init(&un);
        cli_reply_t reply;
        struct row *row = NULL;
        if (cli_reply_read(&un, zmq_msg_data(&msg), zmq_msg_size(&msg), &reply)) {
            row = find_row(rows, count, &hint, reply.id, reply.id_len);
        }
        if (row != NULL) {
            row->state = reply.ok ? ROW_ACKED : ROW_REFUSED;
            row->error =
                reply.ok ? NULL : xstrdup(reply.error[0] != '\0' ? reply.error : "refused");
            waiting--;
        }
        msgpack_unpacked_destroy(&un);
        zmq_msg_close(&msg);
    }
}

/* Deletes the acked rows and moves the refused ones, in one transaction. */
static bool settle(PGconn *db, struct row *rows, int count, size_t *acked, size_t *refused)
{
    PGresult *res = PQexec(db, "BEGIN");
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    for (int i = 0; ok && i < count; i++) {
        if (rows[i].state == ROW_REFUSED) {
            const char *params[2] = {rows[i].id, rows[i].error};
            res = PQexecParams(db,
                               "INSERT INTO herold.outbox_refused (id, event_id, source, type,"
                               " resource, previous, readers, kind, actor, data, created_at,"
                               " error) SELECT id, event_id, source, type, resource, previous,"
                               " readers, kind, actor, data, created_at, $2 FROM herold.outbox"
                               " WHERE id = $1 ON CONFLICT (id) DO NOTHING",
                               2, NULL, params, NULL, NULL, 0);
            ok = PQresultStatus(res) == PGRES_COMMAND_OK;
            PQclear(res);
            fprintf(stderr, "herold-pg-source: outbox row %s refused by the broker: %s\n",
                    rows[i].id, rows[i].error);
        }
        if (ok && rows[i].state != ROW_WAITING) {
            const char *params[1] = {rows[i].id};
            res = PQexecParams(db, "DELETE FROM herold.outbox WHERE id = $1", 1, NULL, params, NULL,
                               NULL, 0);
            ok = PQresultStatus(res) == PGRES_COMMAND_OK;
            PQclear(res);
            *(rows[i].state == ROW_ACKED ? acked : refused) += 1;
        }
    }
    res = PQexec(db, ok ? "COMMIT" : "ROLLBACK");
    ok = ok && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    return ok;
}

/* One round: returns the rows read (0: the outbox was empty), or -1 when the database
 * connection broke. */
static int round_trip(PGconn *db, void *socket, const struct options *o, struct payload *payload,
                      size_t *acked, size_t *refused)
{
    char limit[24];
    snprintf(limit, sizeof(limit), "%llu", (unsigned long long)o->batch);
    const char *params[1] = {limit};
    PGresult *res = PQexecParams(db, select_rows, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "herold-pg-source: reading the outbox: %s", PQerrorMessage(db));
        PQclear(res);
        return -1;
    }
    int count = PQntuples(res);
    struct row *rows = xcalloc((size_t)count + 1, sizeof(*rows));
    for (int r = 0; r < count; r++) {
        rows[r].id = xstrdup(PQgetvalue(res, r, 0));
        rows[r].event_id = xstrdup(PQgetvalue(res, r, 1));
        if (!pack_row(res, r, payload)) {
            rows[r].state = ROW_REFUSED;
            rows[r].error = xstrdup("the row's readers or data are not valid JSON");
            continue;
        }
        /* A full queue (the broker is away): the row waits for the next round. */
        zmq_send(socket, payload->data, payload->size, ZMQ_DONTWAIT);
    }
    PQclear(res);
    collect_answers(socket, rows, count);
    bool ok = settle(db, rows, count, acked, refused);
    for (int r = 0; r < count; r++) {
        free(rows[r].id);
        free(rows[r].event_id);
        free(rows[r].error);
    }
    free(rows);
    return ok ? count : -1;
}

int main(int argc, char **argv)
{
    struct options o;
    int rc = parse_options(argc, argv, &o);
    if (rc != 0) {
        return rc > 0 ? 0 : 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    void *context = zmq_ctx_new();
    void *socket = open_socket(context, &o);
    if (socket == NULL) {
        zmq_ctx_term(context);
        return 2;
    }
    struct payload payload = {0};
    size_t acked = 0;
    size_t refused = 0;
    PGconn *db = NULL;
    while (!stop_requested) {
        if (db == NULL && (db = connect_db(o.db)) == NULL) {
            break;
        }
        int n = round_trip(db, socket, &o, &payload, &acked, &refused);
        if (n < 0 || (n == 0 && !wait_for_notify(db, PG_SOURCE_IDLE_MS))) {
            PQfinish(db); /* reconnect: rows stay until they are acked */
            db = NULL;
        }
    }
    fprintf(stderr, "herold-pg-source: stopped; %zu rows published, %zu refused\n", acked, refused);
    PQfinish(db);
    free(payload.data);
    zmq_close(socket);
    zmq_ctx_term(context);
    return 0;
}
