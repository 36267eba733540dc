#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"

#define STORE_LOG_NAME "subscriptions.log"
#define STORE_ID_MAX_BYTES 64

struct store {
    char *dir;
    char *path;
    int fd;
    json_t *live;     /* id -> document (string), for compaction */
    size_t log_lines; /* lines in the log now */
};

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

static int append_line(store_t *store, const char *line, size_t len, struct herr *err)
{
    if (write_all(store->fd, line, len) != 0 || fdatasync(store->fd) != 0) {
        return herr_set(err, HEROLD_E_SYSTEM, "store: writing %s failed: %s", store->path,
                        strerror(errno));
    }
    store->log_lines++;
    return 0;
}

/* Rewrites the log with one put line per live subscription: .new, fsync, rename, fsync
 * of the directory, so that a crash leaves either the old log or the new one. */
static int compact(store_t *store, struct herr *err)
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
    store->log_lines = json_object_size(store->live);
    return 0;
}

/* Applies one log line to the live map. Returns 0, or -1 when it is not a valid line. */
static int apply_line(store_t *store, char *line)
{
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

static int load(store_t *store, struct herr *err)
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

store_t *store_file_open(const char *dir, store_subscription_fn fn, void *ctx, struct herr *err)
{
    store_t *store = xcalloc(1, sizeof(*store));
    store->dir = xstrdup(dir);
    size_t len = strlen(dir) + strlen(STORE_LOG_NAME) + 2;
    store->path = xmalloc(len);
    snprintf(store->path, len, "%s/%s", dir, STORE_LOG_NAME);
    store->fd = -1;
    store->live = json_object();
    if ((mkdir(dir, 0700) != 0 && errno != EEXIST) || load(store, err) != 0 ||
        compact(store, err) != 0) {
        if (err != NULL && err->code == 0) {
            herr_set(err, HEROLD_E_SYSTEM, "store: mkdir(%s) failed: %s", dir, strerror(errno));
        }
        store_close(store);
        return NULL;
    }
    const char *id;
    json_t *doc;
    json_object_foreach(store->live, id, doc)
    {
        fn(id, json_string_value(doc), ctx);
    }
    return store;
}

void store_close(store_t *store)
{
    if (store == NULL) {
        return;
    }
    if (store->fd >= 0) {
        close(store->fd);
    }
    json_decref(store->live);
    free(store->path);
    free(store->dir);
    free(store);
}

int store_subscription_put(store_t *store, const char *id, const char *json, struct herr *err)
{
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
    if (store->log_lines > 2 * json_object_size(store->live) + 64) {
        return compact(store, err);
    }
    return 0;
}

int store_subscription_delete(store_t *store, const char *id, struct herr *err)
{
    if (json_object_get(store->live, id) == NULL) {
        return 0;
    }
    char line[STORE_ID_MAX_BYTES + 4];
    int len = snprintf(line, sizeof(line), "D %s\n", id);
    int rc = append_line(store, line, (size_t)len, err);
    if (rc == 0) {
        json_object_del(store->live, id);
    }
    return rc;
}
