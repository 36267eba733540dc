/*
 * herold-fs-source: publishes the changes of a directory tree (a file share) to herold.
 *
 *   herold-fs-source --root DIR --readers FILE [--prefix /files/shares/NAME]
 *                    [--source files] [--debounce-ms 300] [--ingest ENDPOINT]
 *                    [--server-key Z85 --key-file FILE]
 *
 * Every directory under DIR is watched with inotify, new subdirectories included (their
 * contents at the moment they are watched are reported as created). A file's writes are
 * debounced: one `updated` per burst, reported --debounce-ms after its last write. A file
 * renamed or moved within the tree is one `updated` event with `previous`; moved in from
 * outside it is `created`, moved out `deleted`. A directory moved within the tree, and a
 * kernel queue overflow, make the source rescan the whole tree and report what differs
 * from what it knew, so nothing is silently missed.
 *
 * Resources are PREFIX/<path within DIR>, kind driveItem, data {"size": bytes}; names a
 * resource path cannot hold (control characters) are skipped with a warning. Readers come
 * from the readers file: lines `<path prefix within DIR> <principal>[,<principal>…]`, `#`
 * for comments; the longest matching prefix decides (`/` matches everything).
 *
 * Events are pipelined to the broker and sent again, with the same id, until acked. The
 * source keeps no state on disk: changes made while it is not running are not reported
 * (the PostgreSQL outbox source is the durable one). SIGTERM or SIGINT ends it once every
 * event sent is acked (or after PENDING_DRAIN_SECONDS).
 */

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <msgpack.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cli.h"
#include "cli_curve.h"
#include "cli_pack.h"
#include "hash.h"
#include "mem.h"
#include "path.h"
#include "zap.h"

#define WATCH_MASK                                                                                 \
    (IN_CREATE | IN_CLOSE_WRITE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |            \
     IN_DELETE_SELF | IN_ONLYDIR)
#define MOVE_PAIR_MS 200 /* a MOVED_FROM without its MOVED_TO by then left the tree */
#define RESEND_MS 2000   /* an event without an ack goes again */
#define PENDING_DRAIN_SECONDS 10
#define MAX_READER_RULES 1024

static volatile sig_atomic_t stop_requested;

static void on_stop(int signo)
{
    (void)signo;
    stop_requested = 1;
}

static int64_t now_ms(void)
{
    struct timespec t = cli_monotonic_now();
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

struct options {
    const char *root;
    const char *readers_file;
    const char *prefix;
    const char *source;
    const char *ingest;
    const char *server_key;
    const char *key_file;
    uint64_t debounce_ms;
};

/* ---- small string-keyed tables: known files, watches, pending changes ---- */

struct entry {
    char *path; /* within root, without a leading slash */
    int64_t size;
    int64_t mtime_ns;
    int wd; /* directories: the watch */
    bool is_dir;
    bool is_seen;   /* rescans: still there */
    int64_t due_ms; /* pending change: when to report it */
    char type[8];   /* pending change: created or updated */
    struct entry *next;
};

struct table {
    struct entry **chains;
    size_t count;
    size_t capacity; /* a power of two */
};

static struct entry *table_find(const struct table *t, const char *path)
{
    if (t->capacity == 0) {
        return NULL;
    }
    for (struct entry *e = t->chains[hash_cstr(path) & (t->capacity - 1)]; e != NULL;
         e = e->next) {
        if (strcmp(e->path, path) == 0) {
            return e;
        }
    }
    return NULL;
}

static struct entry *table_get(struct table *t, const char *path)
{
    struct entry *e = table_find(t, path);
    if (e != NULL) {
        return e;
    }
    if (t->count + 1 > t->capacity) {
        size_t capacity = t->capacity == 0 ? 64 : 2 * t->capacity;
        struct entry **chains = xcalloc(capacity, sizeof(*chains));
        for (size_t i = 0; i < t->capacity; i++) {
            for (struct entry *x = t->chains[i]; x != NULL;) {
                struct entry *next = x->next;
                x->next = chains[hash_cstr(x->path) & (capacity - 1)];
                chains[hash_cstr(x->path) & (capacity - 1)] = x;
                x = next;
            }
        }
        free(t->chains);
        t->chains = chains;
        t->capacity = capacity;
    }
    e = xcalloc(1, sizeof(*e));
    e->path = xstrdup(path);
    e->wd = -1;
    struct entry **chain = &t->chains[hash_cstr(path) & (t->capacity - 1)];
    e->next = *chain;
    *chain = e;
    t->count++;
    return e;
}

static void table_remove(struct table *t, const char *path)
{
    if (t->capacity == 0) {
        return;
    }
    struct entry **link = &t->chains[hash_cstr(path) & (t->capacity - 1)];
    while (*link != NULL && strcmp((*link)->path, path) != 0) {
        link = &(*link)->next;
    }
    if (*link != NULL) {
        struct entry *e = *link;
        *link = e->next;
        free(e->path);
        free(e);
        t->count--;
    }
}

static void table_clear(struct table *t)
{
    for (size_t i = 0; i < t->capacity; i++) {
        for (struct entry *e = t->chains[i]; e != NULL;) {
            struct entry *next = e->next;
            free(e->path);
            free(e);
            e = next;
        }
    }
    free(t->chains);
    memset(t, 0, sizeof(*t));
}

/* ---- the source's state ---- */

struct rule {
    char *prefix; /* within root, no leading slash; "" matches all */
    json_t *readers;
};

struct sent {
    char id[40];
    char *payload;
    size_t len;
    int64_t sent_ms;
    struct sent *next;
};

struct source {
    struct options o;
    int inotify;
    struct table files;   /* known files and directories by path */
    struct table pending; /* changes waiting for their debounce */
    char **wd_paths;      /* watch descriptor -> directory path */
    size_t wd_capacity;
    struct rule rules[MAX_READER_RULES];
    size_t rule_count;
    void *socket;
    struct sent *unacked;
    size_t unacked_count;
    bool needs_rescan;
    uint32_t move_cookie; /* a MOVED_FROM waiting for its MOVED_TO */
    char *move_from;
    bool move_from_is_dir;
    int64_t move_from_ms;
    uint64_t published;
};

static int load_readers(struct source *src)
{
    FILE *f = fopen(src->o.readers_file, "r");
    if (f == NULL) {
        fprintf(stderr, "herold-fs-source: %s: %s\n", src->o.readers_file, strerror(errno));
        return -1;
    }
    char line[4096];
    int number = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        number++;
        char *p = line;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p == '#' || *p == '\n' || *p == '\0') {
            continue;
        }
        char prefix[2048];
        char list[2048];
        if (sscanf(p, "%2047s %2047s", prefix, list) != 2 || src->rule_count == MAX_READER_RULES) {
            fprintf(stderr, "herold-fs-source: %s:%d: expected `<path prefix> <principals>`\n",
                    src->o.readers_file, number);
            fclose(f);
            return -1;
        }
        struct rule *r = &src->rules[src->rule_count++];
        const char *bare = prefix;
        while (*bare == '/') {
            bare++;
        }
        r->prefix = xstrdup(bare);
        size_t len = strlen(r->prefix);
        while (len > 0 && r->prefix[len - 1] == '/') {
            r->prefix[--len] = '\0';
        }
        r->readers = json_array();
        for (char *save = NULL, *t = strtok_r(list, ",", &save); t != NULL;
             t = strtok_r(NULL, ",", &save)) {
            json_array_append_new(r->readers, json_string(t));
        }
    }
    fclose(f);
    return 0;
}

/* The readers of path: the rule with the longest prefix that is path or a parent of it. */
static json_t *readers_of(const struct source *src, const char *path)
{
    const struct rule *best = NULL;
    for (size_t i = 0; i < src->rule_count; i++) {
        const struct rule *r = &src->rules[i];
        size_t len = strlen(r->prefix);
        bool matches = len == 0 || (strncmp(path, r->prefix, len) == 0 &&
                                    (path[len] == '\0' || path[len] == '/'));
        if (matches && (best == NULL || len > strlen(best->prefix))) {
            best = r;
        }
    }
    return best != NULL ? json_incref(best->readers) : json_array();
}

/* ---- publishing ---- */

static void make_id(char *out)
{
    static uint64_t counter;
    snprintf(out, 40, "fs-%d-%lld-%llu", (int)getpid(), (long long)wall_ms(),
             (unsigned long long)++counter);
}

static void resource_of(const struct source *src, const char *path, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", src->o.prefix, path);
    if (n < 0 || (size_t)n >= cap) {
        out[0] = '\0'; /* too long for a resource path: refused by path_parse */
    }
}

static void publish(struct source *src, const char *type, const char *path, const char *previous,
                    int64_t size)
{
    char resource[PATH_MAX_BYTES + 1];
    char previous_resource[PATH_MAX_BYTES + 1];
    resource_of(src, path, resource, sizeof(resource));
    path_t parsed;
    struct herr err;
    if (path_parse(resource, strlen(resource), &parsed, &err) != 0) {
        fprintf(stderr, "herold-fs-source: %s skipped: %s\n", path, err.message);
        return;
    }
    json_t *event =
        json_pack("{s:s, s:s, s:s, s:s, s:I, s:o, s:s}", "id", "", "source", src->o.source, "type",
                  type, "resource", resource, "time", (json_int_t)wall_ms(), "readers",
                  readers_of(src, path), "kind", "driveItem");
    if (previous != NULL) {
        resource_of(src, previous, previous_resource, sizeof(previous_resource));
        if (path_parse(previous_resource, strlen(previous_resource), &parsed, NULL) == 0) {
            json_object_set_new(event, "previous", json_string(previous_resource));
        }
    }
    if (size >= 0) {
        json_object_set_new(event, "data", json_pack("{s:I}", "size", (json_int_t)size));
    }
    struct sent *s = xcalloc(1, sizeof(*s));
    make_id(s->id);
    json_object_set_new(event, "id", json_string(s->id));
    struct payload payload = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &payload, payload_write);
    pack_json(&pk, event);
    json_decref(event);
    s->payload = payload.data;
    s->len = payload.size;
    s->sent_ms = now_ms();
    s->next = src->unacked;
    src->unacked = s;
    src->unacked_count++;
    zmq_send(src->socket, s->payload, s->len, ZMQ_DONTWAIT);
}

static void take_replies(struct source *src)
{
    for (;;) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, src->socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        msgpack_unpacked un;
        msgpack_unpacked_init(&un);
        cli_reply_t reply;
        bool is_reply = cli_reply_read(&un, zmq_msg_data(&msg), zmq_msg_size(&msg), &reply);
        for (struct sent **link = &src->unacked; is_reply && *link != NULL; link = &(*link)->next) {
            struct sent *s = *link;
            if (strlen(s->id) == reply.id_len && memcmp(s->id, reply.id, reply.id_len) == 0) {
                if (!reply.ok) {
                    fprintf(stderr, "herold-fs-source: the broker refused event %s: %s\n", s->id,
                            reply.error);
                } else {
                    src->published++;
                }
                *link = s->next;
                free(s->payload);
                free(s);
                src->unacked_count--;
                break;
            }
        }
        msgpack_unpacked_destroy(&un);
        zmq_msg_close(&msg);
    }
}

static void resend_overdue(struct source *src)
{
    int64_t now = now_ms();
    for (struct sent *s = src->unacked; s != NULL; s = s->next) {
        if (now - s->sent_ms >= RESEND_MS) {
            s->sent_ms = now;
            zmq_send(src->socket, s->payload, s->len, ZMQ_DONTWAIT);
        }
    }
}

/* ---- the tree ---- */

/* Paths longer than the buffers cannot be opened anyway: they come out empty, which no
 * lstat finds. */
static void join_path(const char *dir, const char *name, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s%s%s", dir, dir[0] != '\0' ? "/" : "", name);
    if (n < 0 || (size_t)n >= cap) {
        out[0] = '\0';
    }
}

static void full_path(const struct source *src, const char *path, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s%s%s", src->o.root, path[0] != '\0' ? "/" : "", path);
    if (n < 0 || (size_t)n >= cap) {
        out[0] = '\0';
    }
}

static void watch_dir(struct source *src, const char *path)
{
    char full[PATH_MAX];
    full_path(src, path, full, sizeof(full));
    int wd = inotify_add_watch(src->inotify, full, WATCH_MASK);
    if (wd < 0) {
        fprintf(stderr, "herold-fs-source: cannot watch %s: %s\n", full, strerror(errno));
        return;
    }
    if ((size_t)wd >= src->wd_capacity) {
        size_t capacity = src->wd_capacity == 0 ? 64 : src->wd_capacity;
        while ((size_t)wd >= capacity) {
            capacity *= 2;
        }
        src->wd_paths = xrealloc(src->wd_paths, capacity * sizeof(char *));
        memset(src->wd_paths + src->wd_capacity, 0, (capacity - src->wd_capacity) * sizeof(char *));
        src->wd_capacity = capacity;
    }
    free(src->wd_paths[wd]);
    src->wd_paths[wd] = xstrdup(path);
}

/* A pending change of path, reported once it has been quiet for the debounce. A created
 * file stays created however often it is written before that. */
static void note_change(struct source *src, const char *path, const char *type)
{
    struct entry *p = table_get(&src->pending, path);
    if (p->type[0] == '\0' || strcmp(p->type, "created") != 0) {
        snprintf(p->type, sizeof(p->type), "%s", type);
    }
    p->due_ms = now_ms() + (int64_t)src->o.debounce_ms;
}

/* Records what is at path now; reports it as created when report is set and it is new,
 * and as updated when it changed. Directories are watched and walked. */
static void scan(struct source *src, const char *path, bool report)
{
    char full[PATH_MAX];
    full_path(src, path, full, sizeof(full));
    struct stat st;
    if (lstat(full, &st) != 0) {
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        struct entry *e = table_get(&src->files, path);
        e->is_dir = true;
        e->is_seen = true;
        watch_dir(src, path);
        DIR *d = opendir(full);
        struct dirent *de;
        while (d != NULL && (de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
                char child[PATH_MAX];
                join_path(path, de->d_name, child, sizeof(child));
                scan(src, child, report);
            }
        }
        if (d != NULL) {
            closedir(d);
        }
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        return;
    }
    int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    struct entry *e = table_find(&src->files, path);
    if (e == NULL) {
        e = table_get(&src->files, path);
        e->size = st.st_size;
        e->mtime_ns = mtime;
        if (report) {
            note_change(src, path, "created");
        }
    } else if (e->size != st.st_size || e->mtime_ns != mtime) {
        e->size = st.st_size;
        e->mtime_ns = mtime;
        if (report) {
            note_change(src, path, "updated");
        }
    }
    e->is_seen = true;
}

static void forget(struct source *src, const char *path, bool report)
{
    struct entry *e = table_find(&src->files, path);
    if (e == NULL) {
        return;
    }
    bool was_file = !e->is_dir;
    table_remove(&src->files, path);
    table_remove(&src->pending, path);
    if (was_file && report) {
        publish(src, "deleted", path, NULL, -1);
    }
}

/* After an overflow or a directory move: walk the tree again and report what differs. */
static void rescan(struct source *src)
{
    fprintf(stderr, "herold-fs-source: rescanning %s\n", src->o.root);
    for (size_t i = 0; i < src->files.capacity; i++) {
        for (struct entry *e = src->files.chains[i]; e != NULL; e = e->next) {
            e->is_seen = false;
        }
    }
    scan(src, "", true);
    char **gone = NULL;
    size_t gone_count = 0;
    for (size_t i = 0; i < src->files.capacity; i++) {
        for (struct entry *e = src->files.chains[i]; e != NULL; e = e->next) {
            if (!e->is_seen) {
                gone = xrealloc(gone, (gone_count + 1) * sizeof(*gone));
                gone[gone_count++] = xstrdup(e->path);
            }
        }
    }
    for (size_t i = 0; i < gone_count; i++) {
        forget(src, gone[i], true);
        free(gone[i]);
    }
    free(gone);
    src->needs_rescan = false;
}

/* A MOVED_FROM whose MOVED_TO never came: the object left the tree. */
static void settle_move(struct source *src)
{
    if (src->move_from == NULL) {
        return;
    }
    if (src->move_from_is_dir) {
        src->needs_rescan = true;
    } else {
        forget(src, src->move_from, true);
    }
    free(src->move_from);
    src->move_from = NULL;
}

static void handle_event(struct source *src, const struct inotify_event *ev)
{
    if ((ev->mask & IN_Q_OVERFLOW) != 0) {
        src->needs_rescan = true;
        return;
    }
    if (ev->wd < 0 || (size_t)ev->wd >= src->wd_capacity || src->wd_paths[ev->wd] == NULL) {
        return;
    }
    if ((ev->mask & IN_IGNORED) != 0) {
        free(src->wd_paths[ev->wd]);
        src->wd_paths[ev->wd] = NULL;
        return;
    }
    if (ev->len == 0) {
        return; /* about the directory itself (IN_DELETE_SELF): its parent reports it */
    }
    char path[PATH_MAX];
    join_path(src->wd_paths[ev->wd], ev->name, path, sizeof(path));
    bool is_dir = (ev->mask & IN_ISDIR) != 0;
    if ((ev->mask & IN_MOVED_FROM) != 0) {
        settle_move(src);
        src->move_cookie = ev->cookie;
        src->move_from = xstrdup(path);
        src->move_from_is_dir = is_dir;
        src->move_from_ms = now_ms();
        return;
    }
    if ((ev->mask & IN_MOVED_TO) != 0) {
        if (src->move_from != NULL && src->move_cookie == ev->cookie) {
            if (is_dir) {
                src->needs_rescan = true; /* every path below changed */
            } else {
                struct entry *old = table_find(&src->files, src->move_from);
                int64_t size = old != NULL ? old->size : -1;
                table_remove(&src->files, src->move_from);
                table_remove(&src->pending, src->move_from);
                scan(src, path, false);
                publish(src, "updated", path, src->move_from, size);
            }
            free(src->move_from);
            src->move_from = NULL;
            return;
        }
        scan(src, path, true); /* moved in from outside */
        return;
    }
    if ((ev->mask & IN_CREATE) != 0) {
        scan(src, path, true); /* a directory: watched, and what it holds already reported */
        return;
    }
    if ((ev->mask & IN_DELETE) != 0) {
        forget(src, path, true);
        return;
    }
    if ((ev->mask & (IN_MODIFY | IN_CLOSE_WRITE)) != 0 && !is_dir) {
        struct entry *e = table_find(&src->files, path);
        if (e == NULL) {
            scan(src, path, true);
        } else {
            struct stat st;
            char full[PATH_MAX];
            full_path(src, path, full, sizeof(full));
            if (lstat(full, &st) == 0) {
                e->size = st.st_size;
                e->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
            }
            note_change(src, path, "updated");
        }
    }
}

/* Reports the pending changes whose debounce has run out. */
static void flush_due(struct source *src)
{
    int64_t now = now_ms();
    char **due = NULL;
    size_t count = 0;
    for (size_t i = 0; i < src->pending.capacity; i++) {
        for (struct entry *e = src->pending.chains[i]; e != NULL; e = e->next) {
            if (e->due_ms <= now) {
                due = xrealloc(due, (count + 1) * sizeof(*due));
                due[count++] = xstrdup(e->path);
            }
        }
    }
    for (size_t i = 0; i < count; i++) {
        struct entry *p = table_find(&src->pending, due[i]);
        struct entry *f = table_find(&src->files, due[i]);
        if (p != NULL && f != NULL) {
            publish(src, p->type, due[i], NULL, f->size);
        }
        table_remove(&src->pending, due[i]);
        free(due[i]);
    }
    free(due);
}

static int parse_options(int argc, char **argv, struct options *o)
{
    enum {
        OPT_ROOT = 256,
        OPT_READERS,
        OPT_PREFIX,
        OPT_SOURCE,
        OPT_DEBOUNCE,
        OPT_INGEST,
        OPT_SERVER_KEY,
        OPT_KEY_FILE
    };
    static const struct option long_options[] = {
        {"root", required_argument, NULL, OPT_ROOT},
        {"readers", required_argument, NULL, OPT_READERS},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"source", required_argument, NULL, OPT_SOURCE},
        {"debounce-ms", required_argument, NULL, OPT_DEBOUNCE},
        {"ingest", required_argument, NULL, OPT_INGEST},
        {"server-key", required_argument, NULL, OPT_SERVER_KEY},
        {"key-file", required_argument, NULL, OPT_KEY_FILE},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->prefix = "/files";
    o->source = "files";
    o->ingest = "tcp://127.0.0.1:5560";
    o->debounce_ms = 300;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (opt) {
        case OPT_ROOT:
            o->root = optarg;
            break;
        case OPT_READERS:
            o->readers_file = optarg;
            break;
        case OPT_PREFIX:
            o->prefix = optarg;
            break;
        case OPT_SOURCE:
            o->source = optarg;
            break;
        case OPT_DEBOUNCE:
            if (!cli_parse_count(optarg, &o->debounce_ms) || o->debounce_ms > 60000) {
                return -1;
            }
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
        default:
            return -1;
        }
    }
    path_t prefix;
    return optind == argc && o->root != NULL && o->readers_file != NULL &&
                   (o->server_key == NULL) == (o->key_file == NULL) &&
                   path_parse(o->prefix, strlen(o->prefix), &prefix, NULL) == 0
               ? 0
               : -1;
}

static bool open_socket(struct source *src, void *context)
{
    src->socket = zmq_socket(context, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(src->socket, ZMQ_LINGER, &linger, sizeof(linger));
    if (cli_curve_setup(src->socket, src->o.server_key, src->o.key_file, "herold-fs-source") != 0) {
        return false;
    }
    return zmq_connect(src->socket, src->o.ingest) == 0;
}

int main(int argc, char **argv)
{
    static struct source src;
    if (parse_options(argc, argv, &src.o) != 0) {
        fprintf(stderr, "usage: herold-fs-source --root DIR --readers FILE [--prefix PATH]\n"
                        "         [--source NAME] [--debounce-ms MS] [--ingest ENDPOINT]\n"
                        "         [--server-key Z85 --key-file FILE]\n");
        return 2;
    }
    if (load_readers(&src) != 0) {
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    void *context = zmq_ctx_new();
    src.inotify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (src.inotify < 0 || !open_socket(&src, context)) {
        fprintf(stderr, "herold-fs-source: cannot start: %s\n", strerror(errno));
        return 2;
    }
    scan(&src, "", false); /* what is there already is known, not news */
    fprintf(stderr, "herold-fs-source: watching %s (%zu entries)\n", src.o.root, src.files.count);

    char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
    int64_t stop_at = 0;
    while (!stop_requested || (src.unacked_count > 0 && now_ms() < stop_at)) {
        if (stop_requested && stop_at == 0) {
            stop_at = now_ms() + PENDING_DRAIN_SECONDS * 1000;
            flush_due(&src);
        }
        zmq_pollitem_t items[2] = {{src.socket, 0, ZMQ_POLLIN, 0},
                                   {NULL, src.inotify, ZMQ_POLLIN, 0}};
        zmq_poll(items, 2, 50);
        if ((items[1].revents & ZMQ_POLLIN) != 0) {
            ssize_t n;
            while ((n = read(src.inotify, buf, sizeof(buf))) > 0) {
                for (char *p = buf; p < buf + n;) {
                    const struct inotify_event *ev = (const struct inotify_event *)p;
                    handle_event(&src, ev);
                    p += sizeof(*ev) + ev->len;
                }
            }
        }
        if (src.move_from != NULL && now_ms() - src.move_from_ms > MOVE_PAIR_MS) {
            settle_move(&src);
        }
        if (src.needs_rescan) {
            rescan(&src);
        }
        flush_due(&src);
        take_replies(&src);
        resend_overdue(&src);
    }
    fprintf(stderr, "herold-fs-source: stopped; %llu events published\n",
            (unsigned long long)src.published);
    for (struct sent *s = src.unacked; s != NULL;) {
        struct sent *next = s->next;
        free(s->payload);
        free(s);
        s = next;
    }
    for (size_t i = 0; i < src.wd_capacity; i++) {
        free(src.wd_paths[i]);
    }
    free(src.wd_paths);
    for (size_t i = 0; i < src.rule_count; i++) {
        free(src.rules[i].prefix);
        json_decref(src.rules[i].readers);
    }
    free(src.move_from);
    table_clear(&src.files);
    table_clear(&src.pending);
    close(src.inotify);
    zmq_close(src.socket);
    zmq_ctx_term(context);
    return 0;
}
