#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal.h"
#include "log.h"
#include "mem.h"

#define STORE_LOG_NAME "subscriptions.log"
#define STORE_ID_MAX_BYTES 64

typedef struct store_file {
    struct store base;
    journal_t *journal;
    char *dir;
    char *path;
    int fd;
    json_t *live;     /* id -> document (string), for compaction */
    json_t *cursors;  /* key -> seq (integer) */
    size_t log_lines; /* lines in the log now */
    bool is_batching; /* between store_state_begin and its end: appends are not synced */
    bool is_unsynced; /* a batch appended what must be synced at its commit */
} store_file_t;

static store_file_t *as_file(store_t *store)
{
    return (store_file_t *)store;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        return -1;
    }
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Appends text (lines) to the log: durable on return when sync and not in a batch; in a
 * batch, at its commit. */
static int append_text(store_file_t *store, const char *text, size_t len, bool sync,
                       struct herr *err)
{
    bool is_syncing = sync && !store->is_batching;
    if (write_all(store->fd, text, len) != 0 || (is_syncing && fdatasync(store->fd) != 0)) {
        return herr_set(err, HEROLD_E_SYSTEM, "store: writing %s failed: %s", store->path,
                        strerror(errno));
    }
    store->is_unsynced |= sync && store->is_batching;
    return 0;
}

static int append_line(store_file_t *store, const char *line, size_t len, struct herr *err)
{
    int rc = append_text(store, line, len, true, err);
    if (rc == 0) {
        store->log_lines++;
    }
    return rc;
}

/* Rewrites the log with one put line per live subscription: .new, fsync, rename, fsync
 * of the directory, so that a crash leaves either the old log or the new one. */
static int compact(store_file_t *store, struct herr *err)
{
    size_t new_len = strlen(store->path) + 5;
    char *new_path = xmalloc(new_len);
    snprintf(new_path, new_len, "%s.new", store->path);
    int fd = open(new_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        herr_set(err, HEROLD_E_SYSTEM, "store: open(%s) failed: %s", new_path, strerror(errno));
        free(new_path);
        return HEROLD_E_SYSTEM;
    }
    const char *id;
    json_t *doc;
    int rc = 0;
    json_object_foreach(store->live, id, doc)
    {
        const char *text = json_string_value(doc);
        if (write_all(fd, "P ", 2) != 0 || write_all(fd, id, strlen(id)) != 0 ||
            write_all(fd, " ", 1) != 0 || write_all(fd, text, strlen(text)) != 0 ||
            write_all(fd, "\n", 1) != 0) {
            rc = -1;
            break;
        }
    }
    const char *key;
    json_t *seq;
    json_object_foreach(store->cursors, key, seq)
    {
        if (rc != 0) {
            break;
        }
        char number[32];
        int number_len = snprintf(number, sizeof(number), " %" JSON_INTEGER_FORMAT "\n",
                                  json_integer_value(seq));
        if (write_all(fd, "C ", 2) != 0 || write_all(fd, key, strlen(key)) != 0 ||
            write_all(fd, number, (size_t)number_len) != 0) {
            rc = -1;
        }
    }
    if (rc != 0 || fsync(fd) != 0 || close(fd) != 0 || rename(new_path, store->path) != 0 ||
        fsync_dir(store->dir) != 0) {
        herr_set(err, HEROLD_E_SYSTEM, "store: rewriting %s failed: %s", store->path,
                 strerror(errno));
        free(new_path);
        return HEROLD_E_SYSTEM;
    }
    free(new_path);
    if (store->fd >= 0) {
        close(store->fd);
    }
    store->fd = open(store->path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (store->fd < 0) {
        return herr_set(err, HEROLD_E_SYSTEM, "store: open(%s) failed: %s", store->path,
                        strerror(errno));
    }
    store->log_lines = json_object_size(store->live) + json_object_size(store->cursors);
    return 0;
}

static size_t live_entries(const store_file_t *store)
{
    return json_object_size(store->live) + json_object_size(store->cursors);
}

/* Applies a cursor line's rest, "<key> <seq>". Returns 0 or -1. */
static int apply_cursor(store_file_t *store, char *rest)
{
    char *space = strchr(rest, ' ');
    if (space == NULL || store_key_check("cursor key", rest, (size_t)(space - rest), NULL) != 0) {
        return -1;
    }
    *space = '\0';
    char *end;
    errno = 0;
    unsigned long long seq = strtoull(space + 1, &end, 10);
    if (errno != 0 || end == space + 1 || *end != '\0' || seq > INT64_MAX) {
        return -1;
    }
    store_cursor_raise(store->cursors, rest, seq);
    return 0;
}

/* Applies one log line to the live map. Returns 0, or -1 when it is not a valid line. */
static int apply_line(store_file_t *store, char *line)
{
    if (line[0] == 'C' && line[1] == ' ') {
        return apply_cursor(store, line + 2);
    }
    if ((line[0] != 'P' && line[0] != 'D') || line[1] != ' ') {
        return -1;
    }
    char *id = line + 2;
    size_t id_len = strcspn(id, " ");
    if (id_len == 0 || id_len > STORE_ID_MAX_BYTES) {
        return -1;
    }
    if (line[0] == 'D') {
        if (id[id_len] != '\0') {
            return -1;
        }
        json_object_del(store->live, id);
        json_object_del(store->cursors, id);
        return 0;
    }
    if (id[id_len] != ' ') {
        return -1;
    }
    id[id_len] = '\0';
    const char *document = id + id_len + 1;
    json_t *parsed = json_loads(document, 0, NULL);
    if (parsed == NULL) {
        return -1;
    }
    json_decref(parsed);
    json_object_set_new(store->live, id, json_string(document));
    return 0;
}

static int load(store_file_t *store, struct herr *err)
{
    FILE *file = fopen(store->path, "r");
    if (file == NULL) {
        return errno == ENOENT ? 0
                               : herr_set(err, HEROLD_E_SYSTEM, "store: fopen(%s) failed: %s",
                                          store->path, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long offset = 0;
    size_t number = 0;
    int rc = 0;
    while ((len = getline(&line, &cap, file)) > 0) {
        number++;
        bool is_complete = line[len - 1] == '\n';
        if (is_complete) {
            line[len - 1] = '\0';
        }
        bool is_last = !is_complete || fgetc(file) == EOF;
        if (!is_last) {
            fseek(file, -1, SEEK_CUR);
        }
        if (!is_complete || apply_line(store, line) != 0) {
            if (is_last) {
                /* A crash in the middle of an append: the change was never confirmed. */
                log_msg(LOG_LEVEL_WARN, "store: cut %s at offset %ld: torn last line", store->path,
                        offset);
                break;
            }
            rc = herr_set(err, HEROLD_E_SYSTEM, "store: %s line %zu is damaged", store->path,
                          number);
            break;
        }
        offset += (long)len;
    }
    free(line);
    fclose(file);
    return rc;
}

static void file_close(store_t *base)
{
    store_file_t *store = as_file(base);
    journal_close(store->journal);
    if (store->fd >= 0) {
        close(store->fd);
    }
    json_decref(store->live);
    json_decref(store->cursors);
    free(store->path);
    free(store->dir);
    free(store);
}

static int file_subscription_put(store_t *base, const char *id, const char *json, struct herr *err)
{
    store_file_t *store = as_file(base);
    size_t len = strlen(json);
    if (len > STORE_MAX_DOCUMENT_BYTES || strchr(json, '\n') != NULL) {
        return herr_set(err, HEROLD_E_TOO_LARGE, "store: a subscription document is too large");
    }
    size_t line_len = 2 + strlen(id) + 1 + len + 1;
    char *line = xmalloc(line_len + 1);
    snprintf(line, line_len + 1, "P %s %s\n", id, json);
    int rc = append_line(store, line, line_len, err);
    free(line);
    if (rc != 0) {
        return rc;
    }
    json_object_set_new(store->live, id, json_string(json));
    if (store->log_lines > 2 * live_entries(store) + 64) {
        return compact(store, err);
    }
    return 0;
}

static int file_subscription_delete(store_t *base, const char *id, struct herr *err)
{
    store_file_t *store = as_file(base);
    if (json_object_get(store->live, id) == NULL && json_object_get(store->cursors, id) == NULL) {
        return 0;
    }
    char line[STORE_ID_MAX_BYTES + 4];
    int len = snprintf(line, sizeof(line), "D %s\n", id);
    int rc = append_line(store, line, (size_t)len, err);
    if (rc == 0) {
        json_object_del(store->live, id);
        json_object_del(store->cursors, id);
    }
    return rc;
}

static int file_cursors_put(store_t *base, const store_cursor_t *cursors, size_t count, bool sync,
                            struct herr *err)
{
    store_file_t *store = as_file(base);
    int rc = store_cursors_check(cursors, count, err);
    if (rc != 0 || count == 0) {
        return rc;
    }
    size_t text_len = 0;
    for (size_t i = 0; i < count; i++) {
        text_len += 2 + strlen(cursors[i].key) + 1 + 20 + 1;
    }
    /* One write and one fdatasync for all of them: a torn tail loses only the last lines,
     * and a cursor that goes back a little only repeats deliveries. */
    char *text = xmalloc(text_len + 1);
    size_t used = 0;
    for (size_t i = 0; i < count; i++) {
        used += (size_t)snprintf(text + used, text_len + 1 - used, "C %s %" PRIu64 "\n",
                                 cursors[i].key, cursors[i].seq);
    }
    rc = append_text(store, text, used, sync, err);
    free(text);
    if (rc != 0) {
        return rc;
    }
    store->log_lines += count;
    for (size_t i = 0; i < count; i++) {
        store_cursor_raise(store->cursors, cursors[i].key, cursors[i].seq);
    }
    if (store->log_lines > 2 * live_entries(store) + 64) {
        return compact(store, err);
    }
    return 0;
}

static int file_state_begin(store_t *base, struct herr *err)
{
    (void)err;
    as_file(base)->is_batching = true;
    return 0;
}

static int file_state_commit(store_t *base, struct herr *err)
{
    store_file_t *store = as_file(base);
    store->is_batching = false;
    if (store->is_unsynced && fdatasync(store->fd) != 0) {
        return herr_set(err, HEROLD_E_SYSTEM, "store: syncing %s failed: %s", store->path,
                        strerror(errno));
    }
    store->is_unsynced = false;
    return 0;
}

/* Never needed (no write here fails with HEROLD_E_UNAVAILABLE); what the batch appended
 * is made durable all the same rather than left to the kernel. */
static void file_state_abort(store_t *base)
{
    struct herr ignored;
    file_state_commit(base, &ignored);
}

static int file_event_append(store_t *base, const void *payload, size_t len, int64_t time_ms,
                             uint64_t *seq, struct herr *err)
{
    return journal_append(as_file(base)->journal, payload, len, time_ms, seq, err);
}

static int file_event_commit(store_t *base, struct herr *err)
{
    return journal_sync(as_file(base)->journal, err);
}

static int file_event_commit_start(store_t *base, store_commit_t *commit, struct herr *err)
{
    return journal_sync_start(as_file(base)->journal, &commit->sync, err);
}

static int file_event_commit_finish(store_t *base, store_commit_t *commit, struct herr *err)
{
    return journal_sync_finish(as_file(base)->journal, &commit->sync, err);
}

struct limited_read {
    journal_read_fn fn;
    void *ctx;
    size_t left;
};

static bool read_limited(const journal_record_t *record, void *opaque)
{
    struct limited_read *read = opaque;
    if (!read->fn(record, read->ctx)) {
        return false;
    }
    return --read->left > 0;
}

static int file_event_read(store_t *base, uint64_t from_seq, size_t max_records, journal_read_fn fn,
                           void *ctx, struct herr *err)
{
    journal_t *journal = as_file(base)->journal;
    if (max_records == 0) {
        return journal_read(journal, from_seq, fn, ctx, err);
    }
    struct limited_read read = {.fn = fn, .ctx = ctx, .left = max_records};
    return journal_read(journal, from_seq, read_limited, &read, err);
}

static uint64_t file_event_first_seq(store_t *base)
{
    return journal_first_seq(as_file(base)->journal);
}

static uint64_t file_event_last_seq(store_t *base)
{
    return journal_last_seq(as_file(base)->journal);
}

static size_t file_event_trim(store_t *base, int64_t now_ms)
{
    return journal_trim(as_file(base)->journal, now_ms);
}

static const struct store_ops file_ops = {
    .name = "embedded",
    .close = file_close,
    .event_append = file_event_append,
    .event_commit = file_event_commit,
    .event_commit_start = file_event_commit_start,
    .event_commit_finish = file_event_commit_finish,
    .event_read = file_event_read,
    .event_first_seq = file_event_first_seq,
    .event_last_seq = file_event_last_seq,
    .event_trim = file_event_trim,
    .subscription_put = file_subscription_put,
    .subscription_delete = file_subscription_delete,
    .cursors_put = file_cursors_put,
    .state_begin = file_state_begin,
    .state_commit = file_state_commit,
    .state_abort = file_state_abort,
};

store_t *store_file_open(const store_config_t *config, const store_loader_t *loader,
                         struct herr *err)
{
    const char *dir = config->data_dir;
    store_file_t *store = xcalloc(1, sizeof(*store));
    store->base.ops = &file_ops;
    store->dir = xstrdup(dir);
    size_t len = strlen(dir) + strlen(STORE_LOG_NAME) + 2;
    store->path = xmalloc(len);
    snprintf(store->path, len, "%s/%s", dir, STORE_LOG_NAME);
    store->fd = -1;
    store->live = json_object();
    store->cursors = json_object();
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        herr_set(err, HEROLD_E_SYSTEM, "store: mkdir(%s) failed: %s", dir, strerror(errno));
        file_close(&store->base);
        return NULL;
    }
    /* The journal first: its lock on the directory keeps a second broker away from the
     * log too. */
    size_t journal_dir_len = strlen(dir) + strlen("/journal") + 1;
    char *journal_dir = xmalloc(journal_dir_len);
    snprintf(journal_dir, journal_dir_len, "%s/journal", dir);
    journal_config_t journal_config = {
        .dir = journal_dir,
        .segment_bytes = config->segment_bytes,
        .retention_ms = config->retention_ms,
        .retention_bytes = config->retention_bytes,
        .preallocate = true,
    };
    store->journal = journal_open(&journal_config, err);
    free(journal_dir);
    if (store->journal == NULL || load(store, err) != 0 || compact(store, err) != 0) {
        file_close(&store->base);
        return NULL;
    }
    const char *id;
    json_t *value;
    if (loader != NULL && loader->subscription != NULL) {
        json_object_foreach(store->live, id, value)
        {
            loader->subscription(id, json_string_value(value), loader->ctx);
        }
    }
    if (loader != NULL && loader->cursor != NULL) {
        json_object_foreach(store->cursors, id, value)
        {
            loader->cursor(id, (uint64_t)json_integer_value(value), loader->ctx);
        }
    }
    return &store->base;
}
