#include "zap.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"
#include "mem.h"
#include "readfile.h"
#include "thread.h"

#define KEY_BYTES 32
#define KEYS_FILE_MAX_BYTES (ZAP_MAX_KEYS * 128)
#define KEYPAIR_FILE_MAX_BYTES 4096
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
/* Refusals logged one by one before the log switches to one line per this many. */
#define REFUSALS_LOGGED_EACH 10
#define REFUSALS_LOG_EVERY 1000

struct zap {
    void *zmq_context;
    void *handler;      /* REP on ZAP_ENDPOINT, used by the thread only */
    void *control_main; /* PAIR: the main thread's end, to stop the handler */
    void *control;      /* PAIR: the handler's end */
    pthread_t thread;
    char *keys_file;
    pthread_mutex_t lock; /* keys and count, swapped by zap_reload */
    unsigned char *keys;  /* count sorted 32-byte keys */
    size_t count;
    unsigned long refused; /* handshakes refused, for the rate-limited log */
};

static int compare_keys(const void *a, const void *b)
{
    return memcmp(a, b, KEY_BYTES);
}

int zap_parse_keys(const char *text, const char *path, unsigned char *keys, size_t *count,
                   struct herr *err)
{
    size_t n = 0;
    int line_number = 0;
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        line_number++;
        while (len > 0 &&
               (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t')) {
            len--;
        }
        size_t start = 0;
        while (start < len && (line[start] == ' ' || line[start] == '\t')) {
            start++;
        }
        if (start < len && line[start] != '#') {
            size_t key_end = start;
            while (key_end < len && line[key_end] != ' ' && line[key_end] != '\t') {
                key_end++;
            }
            char key_text[ZAP_KEY_TEXT_BYTES + 1];
            if (key_end - start != ZAP_KEY_TEXT_BYTES) {
                return herr_set(err, HEROLD_E_CONFIG,
                                "ingest keys: %s:%d: a key is %d characters of Z85", path,
                                line_number, ZAP_KEY_TEXT_BYTES);
            }
            memcpy(key_text, line + start, ZAP_KEY_TEXT_BYTES);
            key_text[ZAP_KEY_TEXT_BYTES] = '\0';
            if (n == ZAP_MAX_KEYS) {
                return herr_set(err, HEROLD_E_CONFIG, "ingest keys: %s: more than %d keys", path,
                                ZAP_MAX_KEYS);
            }
            if (zmq_z85_decode(keys + n * KEY_BYTES, key_text) == NULL) {
                return herr_set(err, HEROLD_E_CONFIG, "ingest keys: %s:%d: not a Z85 key", path,
                                line_number);
            }
            size_t name_start = key_end;
            while (name_start < len && (line[name_start] == ' ' || line[name_start] == '\t')) {
                name_start++;
            }
            if (len - name_start > ZAP_MAX_NAME_BYTES) {
                return herr_set(err, HEROLD_E_CONFIG,
                                "ingest keys: %s:%d: a name is at most %d bytes", path, line_number,
                                ZAP_MAX_NAME_BYTES);
            }
            n++;
        }
        line = end != NULL ? end + 1 : line + len;
        if (end == NULL) {
            break;
        }
    }
    qsort(keys, n, KEY_BYTES, compare_keys);
    *count = n;
    return 0;
}

/* Reads the keys file into a new sorted array. */
static int load_keys(const char *path, unsigned char **keys, size_t *count, struct herr *err)
{
    size_t len = 0;
    char *text = readfile_bounded(path, KEYS_FILE_MAX_BYTES, "ingest keys", &len, err);
    if (text == NULL) {
        return err->code;
    }
    if (strlen(text) != len) {
        free(text);
        return herr_set(err, HEROLD_E_CONFIG, "ingest keys: %s holds a NUL byte", path);
    }
    unsigned char *parsed = xmalloc((size_t)ZAP_MAX_KEYS * KEY_BYTES);
    int rc = zap_parse_keys(text, path, parsed, count, err);
    free(text);
    if (rc != 0) {
        free(parsed);
        return rc;
    }
    *keys = parsed;
    return 0;
}

static bool key_is_known(zap_t *zap, const unsigned char *key)
{
    pthread_mutex_lock(&zap->lock);
    bool known = bsearch(key, zap->keys, zap->count, KEY_BYTES, compare_keys) != NULL;
    pthread_mutex_unlock(&zap->lock);
    return known;
}

/* ---- the handler thread ---- */

static void send_frame(void *socket, const void *data, size_t len, bool more)
{
    zmq_send(socket, data, len, more ? ZMQ_SNDMORE : 0);
}

/* Answers one ZAP request (RFC 27): version, request id, domain, address, routing id,
 * mechanism, then the credentials (for CURVE, the client's 32-byte public key). */
static void handle_request(zap_t *zap)
{
    enum { FRAMES = 8 };
    zmq_msg_t frames[FRAMES];
    int count = 0;
    bool more = true;
    while (more) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, zap->handler, 0) < 0) {
            zmq_msg_close(&frame);
            for (int i = 0; i < count; i++) {
                zmq_msg_close(&frames[i]);
            }
            return;
        }
        more = zmq_msg_more(&frame);
        if (count < FRAMES) {
            zmq_msg_init(&frames[count]);
            zmq_msg_move(&frames[count++], &frame);
        }
        zmq_msg_close(&frame); /* beyond FRAMES: a malformed request, dropped */
    }
    bool is_request = count >= 6 && zmq_msg_size(&frames[0]) == 3 &&
                      memcmp(zmq_msg_data(&frames[0]), "1.0", 3) == 0;
    bool is_curve = is_request && zmq_msg_size(&frames[5]) == 5 &&
                    memcmp(zmq_msg_data(&frames[5]), "CURVE", 5) == 0 && count == 7 &&
                    zmq_msg_size(&frames[6]) == KEY_BYTES;
    bool is_allowed = is_curve && key_is_known(zap, zmq_msg_data(&frames[6]));
    if (!is_allowed) {
        unsigned long refused = ++zap->refused;
        if (refused <= REFUSALS_LOGGED_EACH || refused % REFUSALS_LOG_EVERY == 0) {
            char key_text[ZAP_KEY_TEXT_BYTES + 1] = "(none)";
            char address[64] = "?";
            if (is_curve) {
                zmq_z85_encode(key_text, zmq_msg_data(&frames[6]), KEY_BYTES);
            }
            if (is_request) {
                size_t len = zmq_msg_size(&frames[3]);
                len = len < sizeof(address) - 1 ? len : sizeof(address) - 1;
                memcpy(address, zmq_msg_data(&frames[3]), len);
                address[len] = '\0';
            }
            log_msg(LOG_LEVEL_WARN,
                    "ingest: publisher refused: key %s from %s is not in the keys file (%lu "
                    "refused so far)",
                    key_text, address, refused);
        }
    }
    /* Reply: version, request id, status code, status text, user id, metadata. */
    if (is_request) {
        send_frame(zap->handler, "1.0", 3, true);
        send_frame(zap->handler, zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]), true);
        send_frame(zap->handler, is_allowed ? "200" : "400", 3, true);
        const char *text = is_allowed ? "OK" : "unknown publisher key";
        send_frame(zap->handler, text, strlen(text), true);
        send_frame(zap->handler, "", 0, true);
        send_frame(zap->handler, "", 0, false);
    } else {
        /* Not a ZAP request: REP still owes an answer to whoever sent it. */
        send_frame(zap->handler, "", 0, false);
    }
    for (int i = 0; i < count; i++) {
        zmq_msg_close(&frames[i]);
    }
}

static void *handler_main(void *arg)
{
    zap_t *zap = arg;
    zmq_pollitem_t items[2] = {{zap->handler, 0, ZMQ_POLLIN, 0}, {zap->control, 0, ZMQ_POLLIN, 0}};
    for (;;) {
        if (zmq_poll(items, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if ((items[1].revents & ZMQ_POLLIN) != 0) {
            break; /* zap_free */
        }
        if ((items[0].revents & ZMQ_POLLIN) != 0) {
            handle_request(zap);
        }
    }
    zmq_close(zap->handler);
    zmq_close(zap->control);
    return NULL;
}

/* ---- lifecycle ---- */

zap_t *zap_new(void *zmq_context, const char *keys_file, struct herr *err)
{
    unsigned char *keys = NULL;
    size_t count = 0;
    if (load_keys(keys_file, &keys, &count, err) != 0) {
        return NULL;
    }
    zap_t *zap = xcalloc(1, sizeof(*zap));
    zap->zmq_context = zmq_context;
    zap->keys_file = xstrdup(keys_file);
    zap->keys = keys;
    zap->count = count;
    pthread_mutex_init(&zap->lock, NULL);
    char control_endpoint[64];
    snprintf(control_endpoint, sizeof(control_endpoint), "inproc://herold-zap-control-%p",
             (void *)zap);
    int linger = 0;
    zap->handler = zmq_socket(zmq_context, ZMQ_REP);
    zap->control = zmq_socket(zmq_context, ZMQ_PAIR);
    zap->control_main = zmq_socket(zmq_context, ZMQ_PAIR);
    if (zap->handler == NULL || zap->control == NULL || zap->control_main == NULL ||
        zmq_setsockopt(zap->handler, ZMQ_LINGER, &linger, sizeof(linger)) != 0 ||
        zmq_bind(zap->handler, ZAP_ENDPOINT) != 0 ||
        zmq_bind(zap->control, control_endpoint) != 0 ||
        zmq_connect(zap->control_main, control_endpoint) != 0) {
        herr_set(err, HEROLD_E_SYSTEM, "ingest: the ZAP handler cannot start: %s",
                 zmq_strerror(errno));
        goto fail;
    }
    if (pthread_create(&zap->thread, NULL, handler_main, zap) != 0) {
        herr_set(err, HEROLD_E_SYSTEM, "ingest: the ZAP handler thread cannot start");
        goto fail;
    }
    thread_name(zap->thread, "zap");
    return zap;
fail:
    zmq_close(zap->handler);
    zmq_close(zap->control);
    zmq_close(zap->control_main);
    pthread_mutex_destroy(&zap->lock);
    free(zap->keys);
    free(zap->keys_file);
    free(zap);
    return NULL;
}

int zap_reload(zap_t *zap, struct herr *err)
{
    unsigned char *keys = NULL;
    size_t count = 0;
    int rc = load_keys(zap->keys_file, &keys, &count, err);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&zap->lock);
    unsigned char *old = zap->keys;
    zap->keys = keys;
    zap->count = count;
    pthread_mutex_unlock(&zap->lock);
    free(old);
    return 0;
}

size_t zap_key_count(zap_t *zap)
{
    pthread_mutex_lock(&zap->lock);
    size_t count = zap->count;
    pthread_mutex_unlock(&zap->lock);
    return count;
}

void zap_free(zap_t *zap)
{
    if (zap == NULL) {
        return;
    }
    send_frame(zap->control_main, "stop", 4, false);
    pthread_join(zap->thread, NULL);
    zmq_close(zap->control_main);
    pthread_mutex_destroy(&zap->lock);
    free(zap->keys);
    free(zap->keys_file);
    free(zap);
}

/* ---- keypair files ---- */

int zap_keypair_read(const char *path, zap_keypair_t *out, struct herr *err)
{
    size_t len = 0;
    char *text = readfile_bounded(path, KEYPAIR_FILE_MAX_BYTES, "keypair", &len, err);
    if (text == NULL) {
        return err->code;
    }
    char public_key[ZAP_KEY_TEXT_BYTES + 2] = "";
    char secret_key[ZAP_KEY_TEXT_BYTES + 2] = "";
    unsigned char decoded[KEY_BYTES];
    int matched = sscanf(text, "public %41s secret %41s", public_key, secret_key);
    memset(text, 0, len);
    free(text);
    if (matched != 2 || strlen(public_key) != ZAP_KEY_TEXT_BYTES ||
        strlen(secret_key) != ZAP_KEY_TEXT_BYTES || zmq_z85_decode(decoded, public_key) == NULL ||
        zmq_z85_decode(decoded, secret_key) == NULL) {
        memset(secret_key, 0, sizeof(secret_key));
        return herr_set(err, HEROLD_E_CONFIG,
                        "keypair: %s is not two lines `public <Z85>` and `secret <Z85>`", path);
    }
    memcpy(out->public_key, public_key, ZAP_KEY_TEXT_BYTES + 1);
    memcpy(out->secret_key, secret_key, ZAP_KEY_TEXT_BYTES + 1);
    memset(secret_key, 0, sizeof(secret_key));
    return 0;
}

int zap_keypair_ensure(const char *path, zap_keypair_t *out, struct herr *err)
{
    if (access(path, F_OK) == 0) {
        return zap_keypair_read(path, out, err);
    }
    zap_keypair_t made;
    if (zmq_curve_keypair(made.public_key, made.secret_key) != 0) {
        return herr_set(err, HEROLD_E_SYSTEM, "keypair: libzmq cannot make CURVE keys: %s",
                        zmq_strerror(errno));
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        return herr_set(err, HEROLD_E_SYSTEM, "keypair: cannot create %s: %s", path,
                        strerror(errno));
    }
    char text[2 * ZAP_KEY_TEXT_BYTES + 32];
    int len =
        snprintf(text, sizeof(text), "public %s\nsecret %s\n", made.public_key, made.secret_key);
    bool ok = write(fd, text, (size_t)len) == len && fsync(fd) == 0;
    close(fd);
    memset(text, 0, sizeof(text));
    if (!ok) {
        unlink(path);
        return herr_set(err, HEROLD_E_SYSTEM, "keypair: cannot write %s", path);
    }
    *out = made;
    memset(&made, 0, sizeof(made));
    return 0;
}

bool zap_endpoint_is_local(const char *endpoint)
{
    if (strncmp(endpoint, "ipc://", 6) == 0 || strncmp(endpoint, "inproc://", 9) == 0) {
        return true;
    }
    if (strncmp(endpoint, "tcp://", 6) != 0) {
        return false;
    }
    const char *host = endpoint + 6;
    if (strncmp(host, "127.", 4) == 0 || strncmp(host, "localhost:", 10) == 0 ||
        strncmp(host, "[::1]:", 6) == 0) {
        return true;
    }
    return false;
}
