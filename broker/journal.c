#include "journal.h"

/*
 * The embedded journal; journal.h gives the file format and the rules. Notes on how.
 *
 * Write path. The journal thread appends into a buffer of JOURNAL_WRITE_BUFFER_BYTES that
 * it writes out with pwrite when the next record would not fit, and on every sync. Only
 * after fdatasync returns does it publish, under the lock, the segment's new durable size
 * and the journal's durable_seq: readers only ever look at published state, so they never
 * see a record that a crash could still take away. The state only the journal thread
 * touches (buffer, descriptor, next seq, the current segment's unsynced newest time) lives
 * outside the lock; the segment table is changed only by the journal thread, under the
 * lock, so that thread may read it without the lock. A sync split in two
 * (journal_sync_start, journal_sync_finish) publishes from the thread that finishes it,
 * under the lock too; it writes only the current segment's entry, and the journal thread
 * waits for it (wait_for_sync) before anything that changes which segment is current or
 * closes its descriptor, so the entry it publishes to is still the one it synced.
 *
 * Readers. journal_read snapshots durable_seq, then for each segment it needs takes the
 * lock just long enough to find the segment and a seek point and to open the file. A
 * segment that journal_trim unlinks afterwards stays readable through that descriptor;
 * one trimmed before the reader got to it ends the read with HEROLD_E_NOT_FOUND.
 *
 * Recovery reads every segment sequentially through a 1 MiB buffer, checking each record
 * as journal.h says, and rebuilds the segment table with its seek points.
 *
 * CRC32C. The SSE4.2 crc32 instruction where the CPU has it (chosen per call with
 * __builtin_cpu_supports, which reads a flag libgcc sets at start-up), else slicing-by-8:
 * eight 256-entry tables, where table k gives the CRC of a byte followed by k zero bytes,
 * so eight input bytes take eight lookups and no dependency chain between them.
 */

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "thread.h"

#define SEGMENT_MAGIC "HEROLDJ1"
#define SEGMENT_MAGIC_BYTES 8
#define SEGMENT_NAME_DIGITS 20
#define SEGMENT_NAME_SIZE (SEGMENT_NAME_DIGITS + sizeof(".seg")) /* with the NUL */
#define RECOVERY_BUFFER_BYTES (1024 * 1024)
#define READ_BUFFER_BYTES (256 * 1024)
#define SEEK_STRIDE_BYTES (64 * 1024)
#define CRC32C_POLY 0x82F63B78u /* Castagnoli, bit-reflected */
/* Segments made ahead (journal.h). */
#define MADE_AHEAD_NAME "next-segment.tmp" /* not a segment name: recovery passes it by */
#define MAKE_AHEAD_AFTER_BYTES (1024 * 1024)
#define ZERO_CHUNK_BYTES (256 * 1024)
#define ZERO_CHUNK_PAUSE_US 2000 /* 64 MiB in about half a second at most */

/* Holding the largest record whole is what lets the scanner hand out a payload view. */
_Static_assert(READ_BUFFER_BYTES >= JOURNAL_RECORD_HEADER_BYTES + JOURNAL_MAX_RECORD_BYTES,
               "the read buffer must hold the largest record");
_Static_assert(JOURNAL_WRITE_BUFFER_BYTES >= JOURNAL_RECORD_HEADER_BYTES + JOURNAL_MAX_RECORD_BYTES,
               "the write buffer must hold the largest record");

/* A place to start scanning a segment: the record seq begins at byte offset. */
struct seek_point {
    uint64_t seq;
    uint64_t offset;
};

/* One segment file, as far as it is durable. Changed only under the lock. */
struct segment {
    uint64_t first_seq; /* its name */
    uint64_t last_seq;  /* of the last durable record; first_seq - 1 while there is none */
    uint64_t size;      /* durable bytes, header included */
    int64_t newest_ms;  /* the newest durable time_ms; INT64_MIN while there is none */
    struct seek_point *points;
    size_t point_count;
    size_t point_capacity;
};

/* The segment made ahead, as the journal thread and the thread making it see it. */
enum made_ahead {
    MADE_AHEAD_NONE,   /* none, and none asked for */
    MADE_AHEAD_WANTED, /* asked for; being made */
    MADE_AHEAD_READY,  /* MADE_AHEAD_NAME is complete and fsynced */
    MADE_AHEAD_FAILED, /* making one failed: segments are created as they are needed */
};

struct journal {
    char *dir;
    int dir_fd; /* also holds the flock */
    uint64_t segment_bytes;
    int64_t retention_ms;
    uint64_t retention_bytes;
    bool preallocate;

    /* The journal thread's own state. */
    int fd; /* the current (last) segment, open for writing; -1 after a failure */
    unsigned char *buf;
    size_t buf_len;
    uint64_t written;          /* file offset up to which the segment was written */
    uint64_t next_seq;         /* of the next append */
    uint64_t synced_seq;       /* the last seq a sync was started for */
    int64_t pending_newest_ms; /* newest time_ms in the current segment, unsynced included */
    uint64_t last_point_offset;
    atomic_bool failed;      /* also set by a sync finished on another thread */
    bool is_preallocated;    /* the current segment was made ahead: zeros past written */
    bool is_ahead_requested; /* the next segment was asked for since this one began */

    /* The journal's own thread (with preallocate): it makes segments ahead and removes
     * trimmed ones. Its state shared with the journal thread. */
    pthread_t worker;
    bool has_worker;
    pthread_mutex_t worker_lock;
    pthread_cond_t work_wanted; /* signalled for a segment to make or to remove */
    enum made_ahead ahead;      /* under worker_lock */
    uint64_t *trimmed;          /* under worker_lock: the first seqs of the segments */
    size_t trimmed_count;       /* trimmed and not yet removed, oldest first */
    size_t trimmed_capacity;
    atomic_bool is_worker_stopping; /* set under worker_lock; also read between chunks */
    atomic_bool is_ahead_ready;     /* ahead == MADE_AHEAD_READY, for a look without the lock */

    /* Shared with readers. */
    pthread_mutex_t lock;
    struct segment *segments; /* oldest first; never empty once open */
    size_t segment_count;
    size_t segment_capacity;
    uint64_t durable_seq;
    bool is_sync_in_flight;   /* started, not finished (journal_sync_start) */
    pthread_cond_t sync_done; /* signalled when it finishes */
};

/* ---- CRC32C ---- */

/* Written once, under pthread_once, before its first use; read-only afterwards. */
static uint32_t crc32c_tables[8][256];
static pthread_once_t crc32c_tables_once = PTHREAD_ONCE_INIT;

static void crc32c_tables_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1u)));
        }
        crc32c_tables[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            uint32_t prev = crc32c_tables[t - 1][i];
            crc32c_tables[t][i] = (prev >> 8) ^ crc32c_tables[0][prev & 0xff];
        }
    }
}

static uint32_t load_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_le64(const unsigned char *p)
{
    return (uint64_t)load_le32(p) | (uint64_t)load_le32(p + 4) << 32;
}

static void store_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void store_le64(unsigned char *p, uint64_t v)
{
    store_le32(p, (uint32_t)v);
    store_le32(p + 4, (uint32_t)(v >> 32));
}

uint32_t journal_crc32c_table(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    pthread_once(&crc32c_tables_once, crc32c_tables_init);
    const uint32_t(*t)[256] = (const uint32_t(*)[256])crc32c_tables;

    crc = ~crc;
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xff];
        len--;
    }
    while (len >= 8) {
        uint32_t lo = load_le32(p) ^ crc;
        uint32_t hi = load_le32(p + 4);
        crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
              t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xff];
        len--;
    }
    return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const void *data,
                                                               size_t len)
{
    const unsigned char *p = data;
    uint32_t c32 = ~crc;

    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        c32 = __builtin_ia32_crc32qi(c32, *p++);
        len--;
    }
    unsigned long long c64 = c32;
    while (len >= 8) {
        unsigned long long word;
        memcpy(&word, p, 8); /* x86 is little-endian, as the CRC wants */
        c64 = __builtin_ia32_crc32di(c64, word);
        p += 8;
        len -= 8;
    }
    c32 = (uint32_t)c64;
    while (len > 0) {
        c32 = __builtin_ia32_crc32qi(c32, *p++);
        len--;
    }
    return ~c32;
}
#endif

bool journal_crc32c_has_sse42(void)
{
#if defined(__x86_64__)
    return __builtin_cpu_supports("sse4.2");
#else
    return false;
#endif
}

uint32_t journal_crc32c_sse42(uint32_t crc, const void *data, size_t len)
{
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) {
        return crc32c_sse42(crc, data, len);
    }
#endif
    return journal_crc32c_table(crc, data, len);
}

uint32_t journal_crc32c(uint32_t crc, const void *data, size_t len)
{
    return journal_crc32c_sse42(crc, data, len);
}

/* The CRC of a record: its length field, seq and time_ms fields, then the payload. */
static uint32_t record_crc(const unsigned char *header, const void *payload, size_t len)
{
    uint32_t crc = journal_crc32c(0, header, 4);
    crc = journal_crc32c(crc, header + 8, 16);
    return journal_crc32c(crc, payload, len);
}

/* ---- small helpers ---- */

static void segment_name(char name[SEGMENT_NAME_SIZE], uint64_t first_seq)
{
    snprintf(name, SEGMENT_NAME_SIZE, "%020" PRIu64 ".seg", first_seq);
}

enum name_kind { NAME_OTHER, NAME_SEGMENT, NAME_BAD_SEGMENT };

/* Segment names are exactly twenty digits and ".seg"; anything else is not ours. Twenty
 * digits can spell more than UINT64_MAX, and seq 0 does not exist: such a name is a
 * segment name with a bad value. */
static enum name_kind classify_name(const char *name, uint64_t *first_seq)
{
    uint64_t value = 0;
    bool overflow = false;
    for (int i = 0; i < SEGMENT_NAME_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return NAME_OTHER;
        }
        unsigned digit = (unsigned)(name[i] - '0');
        if (value > (UINT64_MAX - digit) / 10) {
            overflow = true;
        }
        value = value * 10 + digit;
    }
    if (strcmp(name + SEGMENT_NAME_DIGITS, ".seg") != 0) {
        return NAME_OTHER;
    }
    if (overflow || value == 0) {
        return NAME_BAD_SEGMENT;
    }
    *first_seq = value;
    return NAME_SEGMENT;
}

/* Returns 0 or an errno value. */
static int pwrite_all(int fd, const void *data, size_t len, uint64_t offset)
{
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

/* Reads exactly len bytes at offset. Returns 0, an errno value, or -1 when the file ends
 * first (it shrank since we looked at its size). */
static int pread_all(int fd, void *data, size_t len, uint64_t offset)
{
    unsigned char *p = data;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        if (n == 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

static const char *io_error_text(int error)
{
    return error == -1 ? "the file is shorter than expected" : strerror(error);
}

/* A failed write or sync: logged, remembered (every later append and sync is refused)
 * and returned as HEROLD_E_SYSTEM. */
__attribute__((format(printf, 3, 4))) static int fatal(journal_t *journal, struct herr *err,
                                                       const char *fmt, ...)
{
    char message[HERR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    journal->failed = true;
    log_msg(LOG_LEVEL_ERROR, "%s", message);
    return herr_set(err, HEROLD_E_SYSTEM, "%s", message);
}

static int fsync_parent(const char *path, struct herr *err)
{
    char *parent = xstrdup(path);
    char *slash = strrchr(parent, '/');
    if (slash == NULL) {
        strcpy(parent, ".");
    } else if (slash == parent) {
        parent[1] = '\0';
    } else {
        *slash = '\0';
    }
    int rc = 0;
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        rc = herr_set(err, HEROLD_E_SYSTEM, "journal: fsync(%s) failed: %s", parent,
                      strerror(errno));
    }
    if (fd >= 0) {
        close(fd);
    }
    free(parent);
    return rc;
}

/* mkdir -p, fsyncing the parent of every directory it creates. */
static int make_dirs(const char *dir, struct herr *err)
{
    char *path = xstrdup(dir);
    int rc = 0;
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0') {
            continue;
        }
        char saved = *p;
        *p = '\0';
        if (mkdir(path, 0755) == 0) {
            rc = fsync_parent(path, err);
        } else if (errno != EEXIST) {
            rc = herr_set(err, HEROLD_E_SYSTEM, "journal: mkdir(%s) failed: %s", path,
                          strerror(errno));
        }
        *p = saved;
        if (rc != 0 || saved == '\0') {
            break;
        }
    }
    free(path);
    return rc;
}

/* ---- the segment table ---- */

static void segment_add_point(struct segment *segment, uint64_t seq, uint64_t offset)
{
    if (segment->point_count == segment->point_capacity) {
        segment->point_capacity = segment->point_capacity ? segment->point_capacity * 2 : 16;
        segment->points =
            xrealloc(segment->points, segment->point_capacity * sizeof(*segment->points));
    }
    segment->points[segment->point_count++] = (struct seek_point){seq, offset};
}

/* Appends an empty segment to the table. The caller holds the lock if readers may run. */
static struct segment *segments_push(journal_t *journal, uint64_t first_seq)
{
    if (journal->segment_count == journal->segment_capacity) {
        journal->segment_capacity = journal->segment_capacity ? journal->segment_capacity * 2 : 8;
        journal->segments =
            xrealloc(journal->segments, journal->segment_capacity * sizeof(*journal->segments));
    }
    struct segment *segment = &journal->segments[journal->segment_count++];
    *segment = (struct segment){
        .first_seq = first_seq,
        .last_seq = first_seq - 1,
        .size = JOURNAL_SEGMENT_HEADER_BYTES,
        .newest_ms = INT64_MIN,
    };
    return segment;
}

static struct segment *current_segment(journal_t *journal)
{
    assert(journal->segment_count > 0);
    return &journal->segments[journal->segment_count - 1];
}

/* ---- scanning records ---- */

/* Reads records of one segment file in order through a buffer. */
struct scanner {
    int fd;
    uint64_t offset; /* of the next record */
    uint64_t end;    /* bytes of the file to look at */
    unsigned char *buf;
    size_t capacity;
    uint64_t buf_offset; /* file offset of buf[0] */
    size_t buf_len;
    int error;     /* after SCAN_IO: an errno value, or -1 for a file shorter than expected */
    char why[128]; /* after SCAN_BAD: what is wrong with the record at offset */
};

struct scanned {
    uint64_t offset;
    uint64_t seq;
    int64_t time_ms;
    const unsigned char *payload;
    size_t len;
};

enum scan_status { SCAN_RECORD, SCAN_END, SCAN_BAD, SCAN_IO };

static void scanner_init(struct scanner *s, int fd, uint64_t offset, uint64_t end,
                         unsigned char *buf, size_t capacity)
{
    *s = (struct scanner){.fd = fd, .offset = offset, .end = end, .buf = buf, .capacity = capacity};
}

/* Makes the want bytes at s->offset available in the buffer (want <= capacity, and the
 * file holds them). */
static int scanner_fill(struct scanner *s, uint64_t want)
{
    if (s->offset >= s->buf_offset && s->offset + want <= s->buf_offset + s->buf_len) {
        return 0;
    }
    uint64_t left = s->end - s->offset;
    size_t n = left < s->capacity ? (size_t)left : s->capacity;
    s->buf_offset = s->offset;
    s->buf_len = 0;
    int rc = pread_all(s->fd, s->buf, n, s->offset);
    if (rc != 0) {
        s->error = rc;
        return -1;
    }
    s->buf_len = n;
    return 0;
}

/* The next record, checked for length and CRC (not for its seq: the caller knows which
 * one it expects). */
static enum scan_status scanner_next(struct scanner *s, struct scanned *record)
{
    uint64_t left = s->end - s->offset;
    if (left == 0) {
        return SCAN_END;
    }
    if (left < JOURNAL_RECORD_HEADER_BYTES) {
        snprintf(s->why, sizeof(s->why), "truncated record header (%" PRIu64 " of %d bytes)", left,
                 JOURNAL_RECORD_HEADER_BYTES);
        return SCAN_BAD;
    }
    if (scanner_fill(s, JOURNAL_RECORD_HEADER_BYTES) != 0) {
        return SCAN_IO;
    }
    const unsigned char *header = s->buf + (s->offset - s->buf_offset);
    static const unsigned char zero_header[JOURNAL_RECORD_HEADER_BYTES];
    if (memcmp(header, zero_header, sizeof(zero_header)) == 0) {
        snprintf(s->why, sizeof(s->why), "zeros where a record should be");
        return SCAN_BAD;
    }
    uint32_t len = load_le32(header);
    if (len > JOURNAL_MAX_RECORD_BYTES) {
        snprintf(s->why, sizeof(s->why), "record length %" PRIu32 " over the %d-byte limit", len,
                 JOURNAL_MAX_RECORD_BYTES);
        return SCAN_BAD;
    }
    if (left - JOURNAL_RECORD_HEADER_BYTES < len) {
        snprintf(s->why, sizeof(s->why), "truncated payload (%" PRIu64 " of %" PRIu32 " bytes)",
                 left - JOURNAL_RECORD_HEADER_BYTES, len);
        return SCAN_BAD;
    }
    if (scanner_fill(s, JOURNAL_RECORD_HEADER_BYTES + (uint64_t)len) != 0) {
        return SCAN_IO;
    }
    header = s->buf + (s->offset - s->buf_offset);
    const unsigned char *payload = header + JOURNAL_RECORD_HEADER_BYTES;
    uint32_t stored = load_le32(header + 4);
    uint32_t computed = record_crc(header, payload, len);
    if (stored != computed) {
        snprintf(s->why, sizeof(s->why),
                 "bad CRC (stored 0x%08" PRIx32 ", computed 0x%08" PRIx32 ")", stored, computed);
        return SCAN_BAD;
    }
    *record = (struct scanned){
        .offset = s->offset,
        .seq = load_le64(header + 8),
        .time_ms = (int64_t)load_le64(header + 16),
        .payload = payload,
        .len = len,
    };
    s->offset += JOURNAL_RECORD_HEADER_BYTES + (uint64_t)len;
    return SCAN_RECORD;
}

/* ---- segment headers ---- */

static void segment_header(unsigned char header[JOURNAL_SEGMENT_HEADER_BYTES])
{
    memcpy(header, SEGMENT_MAGIC, SEGMENT_MAGIC_BYTES);
    store_le32(header + 8, JOURNAL_FORMAT_VERSION);
    store_le32(header + 12, 0);
}

/* ---- segments made ahead ---- */

/* Writes MADE_AHEAD_NAME: a segment header, zeros up to segment_bytes, fsynced. Returns 0
 * or an errno value. */
static int make_ahead(journal_t *journal)
{
    static const unsigned char zeros[ZERO_CHUNK_BYTES];
    unsigned char header[JOURNAL_SEGMENT_HEADER_BYTES];
    segment_header(header);
    int fd =
        openat(journal->dir_fd, MADE_AHEAD_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return errno;
    }
    int rc = pwrite_all(fd, header, sizeof(header), 0);
    /* Paced, chunk by chunk, each written to the disk before the next: the thread has half
     * a segment's time, and 64 MiB written at once (tens of milliseconds of a core, and
     * the disk's queue) held the delivering threads and the journal thread's syncs up for
     * 50 ms on a busy machine (latency p99.9 at 20k events/s, bench/idle_company.sh 0). */
    for (uint64_t at = sizeof(header); rc == 0 && at < journal->segment_bytes;) {
        uint64_t left = journal->segment_bytes - at;
        size_t n = left < sizeof(zeros) ? (size_t)left : sizeof(zeros);
        rc = pwrite_all(fd, zeros, n, at);
        if (rc == 0 && sync_file_range(fd, (off_t)at, (off_t)n,
                                       SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                           SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
            rc = errno;
        }
        at += n;
        if (at < journal->segment_bytes) {
            usleep(ZERO_CHUNK_PAUSE_US);
        }
        if (atomic_load(&journal->is_worker_stopping)) {
            rc = ECANCELED; /* closing: the file is removed anyway */
        }
    }
    if (rc == 0 && fsync(fd) != 0) {
        rc = errno;
    }
    close(fd);
    return rc;
}

/* Removes a trimmed segment's file, then makes that durable. */
static void remove_segment_file(journal_t *journal, uint64_t first_seq)
{
    char name[SEGMENT_NAME_SIZE];
    segment_name(name, first_seq);
    if (unlinkat(journal->dir_fd, name, 0) != 0 && errno != ENOENT) {
        log_msg(LOG_LEVEL_WARN, "journal: unlink(%s/%s) failed: %s", journal->dir, name,
                strerror(errno));
    } else if (fsync(journal->dir_fd) != 0) {
        log_msg(LOG_LEVEL_WARN, "journal: fsync(%s) failed: %s", journal->dir, strerror(errno));
    }
}

/* Removes the oldest segment waiting for it; called and returns with worker_lock held. */
static void remove_one_trimmed(journal_t *journal)
{
    uint64_t first_seq = journal->trimmed[0];
    journal->trimmed_count--;
    memmove(journal->trimmed, journal->trimmed + 1,
            journal->trimmed_count * sizeof(*journal->trimmed));
    pthread_mutex_unlock(&journal->worker_lock);
    remove_segment_file(journal, first_seq);
    pthread_mutex_lock(&journal->worker_lock);
}

static void *worker_main(void *arg)
{
    journal_t *journal = arg;
    pthread_mutex_lock(&journal->worker_lock);
    for (;;) {
        while (!atomic_load(&journal->is_worker_stopping) && journal->ahead != MADE_AHEAD_WANTED &&
               journal->trimmed_count == 0) {
            pthread_cond_wait(&journal->work_wanted, &journal->worker_lock);
        }
        if (atomic_load(&journal->is_worker_stopping)) {
            break;
        }
        /* The next segment first: appends may soon wait for it. One removal at a time,
         * so that a request for a segment is seen between two. */
        if (journal->ahead != MADE_AHEAD_WANTED) {
            remove_one_trimmed(journal);
            continue;
        }
        pthread_mutex_unlock(&journal->worker_lock);
        int rc = make_ahead(journal);
        pthread_mutex_lock(&journal->worker_lock);
        if (rc == 0) {
            journal->ahead = MADE_AHEAD_READY;
            atomic_store_explicit(&journal->is_ahead_ready, true, memory_order_release);
        } else if (rc != ECANCELED) {
            journal->ahead = MADE_AHEAD_FAILED;
            log_msg(LOG_LEVEL_WARN,
                    "journal: making %s/%s failed: %s; segments are created as they are needed",
                    journal->dir, MADE_AHEAD_NAME, io_error_text(rc));
        }
    }
    pthread_mutex_unlock(&journal->worker_lock);
    return NULL;
}

/* Asks for the next segment once the current one has reached the point where it is due. */
static void request_ahead_when_due(journal_t *journal)
{
    if (!journal->preallocate || journal->is_ahead_requested) {
        return;
    }
    uint64_t due = journal->segment_bytes / 2;
    if (!journal->is_preallocated && due > MAKE_AHEAD_AFTER_BYTES) {
        due = MAKE_AHEAD_AFTER_BYTES;
    }
    if (journal->written + journal->buf_len < due) {
        return;
    }
    journal->is_ahead_requested = true;
    pthread_mutex_lock(&journal->worker_lock);
    if (journal->ahead == MADE_AHEAD_NONE) {
        journal->ahead = MADE_AHEAD_WANTED;
        pthread_cond_signal(&journal->work_wanted);
    }
    pthread_mutex_unlock(&journal->worker_lock);
}

static bool is_ahead_ready(journal_t *journal)
{
    return journal->preallocate &&
           atomic_load_explicit(&journal->is_ahead_ready, memory_order_acquire);
}

/* Renames the segment made ahead to name, when one is ready; false when there is none (or
 * the rename failed, which is logged and ends making them). */
static bool take_ahead(journal_t *journal, const char *name)
{
    if (!is_ahead_ready(journal)) {
        return false;
    }
    pthread_mutex_lock(&journal->worker_lock);
    bool is_taken = renameat(journal->dir_fd, MADE_AHEAD_NAME, journal->dir_fd, name) == 0;
    if (is_taken) {
        journal->ahead = MADE_AHEAD_NONE;
    } else {
        journal->ahead = MADE_AHEAD_FAILED;
        log_msg(LOG_LEVEL_WARN,
                "journal: rename(%s/%s, %s) failed: %s; segments are created as they are needed",
                journal->dir, MADE_AHEAD_NAME, name, strerror(errno));
    }
    atomic_store_explicit(&journal->is_ahead_ready, false, memory_order_relaxed);
    pthread_mutex_unlock(&journal->worker_lock);
    return is_taken;
}

static void worker_stop(journal_t *journal)
{
    if (!journal->has_worker) {
        return;
    }
    pthread_mutex_lock(&journal->worker_lock);
    atomic_store(&journal->is_worker_stopping, true);
    pthread_cond_signal(&journal->work_wanted);
    pthread_mutex_unlock(&journal->worker_lock);
    pthread_join(journal->worker, NULL);
    journal->has_worker = false;
    unlinkat(journal->dir_fd, MADE_AHEAD_NAME, 0);
    /* Trimmed segments it had not removed yet go now; left, they would only be
     * retained until the next trim. */
    pthread_mutex_lock(&journal->worker_lock);
    while (journal->trimmed_count > 0) {
        remove_one_trimmed(journal);
    }
    pthread_mutex_unlock(&journal->worker_lock);
}

/* ---- creating segments and syncing ---- */

/* Creates the segment whose first record will be first_seq and makes it current: the
 * file with its header is fsynced (or is the segment made ahead, fsynced already), then the
 * directory, before any record goes in. */
static int create_segment(journal_t *journal, uint64_t first_seq, struct herr *err)
{
    char name[SEGMENT_NAME_SIZE];
    segment_name(name, first_seq);
    bool is_made_ahead = take_ahead(journal, name);
    int fd;
    int rc;
    if (is_made_ahead) {
        fd = openat(journal->dir_fd, name, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            return fatal(journal, err, "journal: open(%s/%s) failed: %s", journal->dir, name,
                         strerror(errno));
        }
    } else {
        unsigned char header[JOURNAL_SEGMENT_HEADER_BYTES];
        segment_header(header);
        fd = openat(journal->dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            return fatal(journal, err, "journal: open(%s/%s) failed: %s", journal->dir, name,
                         strerror(errno));
        }
        rc = pwrite_all(fd, header, sizeof(header), 0);
        if (rc != 0) {
            close(fd);
            return fatal(journal, err, "journal: write(%s/%s) failed: %s", journal->dir, name,
                         strerror(rc));
        }
        if (fsync(fd) != 0) {
            rc = errno;
            close(fd);
            return fatal(journal, err, "journal: fsync(%s/%s) failed: %s", journal->dir, name,
                         strerror(rc));
        }
    }
    if (fsync(journal->dir_fd) != 0) {
        rc = errno;
        close(fd);
        return fatal(journal, err, "journal: fsync(%s) failed: %s", journal->dir, strerror(rc));
    }
    pthread_mutex_lock(&journal->lock);
    segments_push(journal, first_seq);
    pthread_mutex_unlock(&journal->lock);
    journal->fd = fd;
    journal->is_preallocated = is_made_ahead;
    journal->is_ahead_requested = false;
    journal->written = JOURNAL_SEGMENT_HEADER_BYTES;
    journal->buf_len = 0;
    journal->pending_newest_ms = INT64_MIN;
    journal->last_point_offset = JOURNAL_SEGMENT_HEADER_BYTES;
    return 0;
}

static int flush_buffer(journal_t *journal, struct herr *err)
{
    if (journal->buf_len == 0) {
        return 0;
    }
    int rc = pwrite_all(journal->fd, journal->buf, journal->buf_len, journal->written);
    if (rc != 0) {
        char name[SEGMENT_NAME_SIZE];
        segment_name(name, current_segment(journal)->first_seq);
        return fatal(journal, err, "journal: write(%s/%s) failed: %s", journal->dir, name,
                     strerror(rc));
    }
    journal->written += journal->buf_len;
    journal->buf_len = 0;
    return 0;
}

/* Waits for a sync started on this thread and finishing on another. */
static void wait_for_sync(journal_t *journal)
{
    pthread_mutex_lock(&journal->lock);
    while (journal->is_sync_in_flight) {
        pthread_cond_wait(&journal->sync_done, &journal->lock);
    }
    pthread_mutex_unlock(&journal->lock);
}

/* Writes out the current segment and names what a sync of it will cover. */
int journal_sync_start(journal_t *journal, journal_sync_t *sync, struct herr *err)
{
    wait_for_sync(journal);
    sync->fd = -1;
    if (journal->failed) {
        return herr_set(err, HEROLD_E_SYSTEM, "journal: refused after an earlier failure");
    }
    if (journal->synced_seq + 1 == journal->next_seq) {
        return 0;
    }
    int rc = flush_buffer(journal, err);
    if (rc != 0) {
        return rc;
    }
    sync->fd = journal->fd;
    sync->segment_first_seq = current_segment(journal)->first_seq;
    sync->last_seq = journal->next_seq - 1;
    sync->size = journal->written;
    sync->newest_ms = journal->pending_newest_ms;
    pthread_mutex_lock(&journal->lock);
    journal->is_sync_in_flight = true;
    pthread_mutex_unlock(&journal->lock);
    journal->synced_seq = sync->last_seq;
    return 0;
}

/* fdatasyncs what journal_sync_start named, then publishes it to readers. The segment is
 * still the current one: a roll-over waits for this. */
int journal_sync_finish(journal_t *journal, journal_sync_t *sync, struct herr *err)
{
    if (sync->fd < 0) {
        return 0;
    }
    int rc = 0;
    if (fdatasync(sync->fd) != 0) {
        char name[SEGMENT_NAME_SIZE];
        segment_name(name, sync->segment_first_seq);
        rc = fatal(journal, err, "journal: fdatasync(%s/%s) failed: %s", journal->dir, name,
                   strerror(errno));
    }
    pthread_mutex_lock(&journal->lock);
    if (rc == 0) {
        struct segment *segment = &journal->segments[journal->segment_count - 1];
        assert(segment->first_seq == sync->segment_first_seq);
        segment->size = sync->size;
        segment->last_seq = sync->last_seq;
        segment->newest_ms = sync->newest_ms;
        journal->durable_seq = sync->last_seq;
    }
    journal->is_sync_in_flight = false;
    pthread_cond_broadcast(&journal->sync_done);
    pthread_mutex_unlock(&journal->lock);
    sync->fd = -1;
    return rc;
}

/* Writes and fdatasyncs the current segment, then publishes it to readers. */
int journal_sync(journal_t *journal, struct herr *err)
{
    journal_sync_t sync;
    int rc = journal_sync_start(journal, &sync, err);
    return rc != 0 ? rc : journal_sync_finish(journal, &sync, err);
}

/* A segment made ahead gives back the zeros past its records (after journal_sync), so that
 * only the last segment ever ends in zeros. */
static int cut_to_records(journal_t *journal, struct herr *err)
{
    if (!journal->is_preallocated) {
        return 0;
    }
    if (ftruncate(journal->fd, (off_t)journal->written) != 0 || fsync(journal->fd) != 0) {
        char name[SEGMENT_NAME_SIZE];
        segment_name(name, current_segment(journal)->first_seq);
        return fatal(journal, err, "journal: cutting %s/%s to its records failed: %s", journal->dir,
                     name, strerror(errno));
    }
    journal->is_preallocated = false;
    return 0;
}

static int roll_over(journal_t *journal, struct herr *err)
{
    int rc = journal_sync(journal, err);
    if (rc == 0) {
        rc = cut_to_records(journal, err);
    }
    if (rc != 0) {
        return rc;
    }
    /* The data is durable; a close error here could not lose it. */
    close(journal->fd);
    journal->fd = -1;
    return create_segment(journal, journal->next_seq, err);
}

/* ---- recovery ---- */

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The first seqs of the segment files in the directory, sorted. Caller frees *seqs. */
static int list_segments(journal_t *journal, uint64_t **seqs, size_t *count, struct herr *err)
{
    int fd = dup(journal->dir_fd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (dir == NULL) {
        int error = errno;
        if (fd >= 0) {
            close(fd);
        }
        return herr_set(err, HEROLD_E_SYSTEM, "journal: opendir(%s) failed: %s", journal->dir,
                        strerror(error));
    }
    /* fdopendir shares the offset of dir_fd's open file description: start at the top. */
    rewinddir(dir);
    size_t capacity = 16;
    uint64_t *found = xmalloc(capacity * sizeof(*found));
    size_t n = 0;
    int rc = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        uint64_t first_seq;
        enum name_kind kind = classify_name(entry->d_name, &first_seq);
        if (kind == NAME_OTHER) {
            continue;
        }
        if (kind == NAME_BAD_SEGMENT) {
            rc = herr_set(err, HEROLD_E_SYSTEM,
                          "journal: %s/%s at offset 0: the name is not a valid first seq",
                          journal->dir, entry->d_name);
            break;
        }
        if (n == capacity) {
            capacity *= 2;
            found = xrealloc(found, capacity * sizeof(*found));
        }
        found[n++] = first_seq;
    }
    closedir(dir);
    if (rc != 0) {
        free(found);
        return rc;
    }
    qsort(found, n, sizeof(*found), compare_u64);
    *seqs = found;
    *count = n;
    return 0;
}

/* A last segment shorter than its header, or exactly a header of zero bytes (the file
 * system kept the size but not the data), is a creation a crash cut short: records only
 * go in after the header is fsynced, so it holds nothing that was acked. Removes it. */
static int remove_torn_creation(journal_t *journal, uint64_t first_seq, bool *removed,
                                struct herr *err)
{
    char name[SEGMENT_NAME_SIZE];
    unsigned char header[JOURNAL_SEGMENT_HEADER_BYTES];
    struct stat st;
    segment_name(name, first_seq);
    *removed = false;

    int fd = openat(journal->dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        int error = errno;
        if (fd >= 0) {
            close(fd);
        }
        return herr_set(err, HEROLD_E_SYSTEM, "journal: open(%s/%s) failed: %s", journal->dir, name,
                        strerror(error));
    }
    bool torn = false;
    if (S_ISREG(st.st_mode) && st.st_size < JOURNAL_SEGMENT_HEADER_BYTES) {
        torn = true;
    } else if (S_ISREG(st.st_mode) && st.st_size == JOURNAL_SEGMENT_HEADER_BYTES &&
               pread_all(fd, header, sizeof(header), 0) == 0) {
        static const unsigned char zeros[JOURNAL_SEGMENT_HEADER_BYTES];
        torn = memcmp(header, zeros, sizeof(header)) == 0;
    }
    close(fd);
    if (!torn) {
        return 0;
    }
    if (unlinkat(journal->dir_fd, name, 0) != 0 || fsync(journal->dir_fd) != 0) {
        return herr_set(err, HEROLD_E_SYSTEM, "journal: removing %s/%s failed: %s", journal->dir,
                        name, strerror(errno));
    }
    log_msg(LOG_LEVEL_WARN,
            "journal: removed %s/%s: %lld bytes, a segment whose creation a crash cut short",
            journal->dir, name, (long long)st.st_size);
    *removed = true;
    return 0;
}

/* Checks one segment whose first record must be first_seq and adds it to the table. A
 * bad record is cut in the last segment and fatal in any other; the last segment stays
 * open for writing in journal->fd. */
static int recover_segment(journal_t *journal, uint64_t first_seq, bool is_last, unsigned char *buf,
                           struct herr *err)
{
    char name[SEGMENT_NAME_SIZE];
    unsigned char header[JOURNAL_SEGMENT_HEADER_BYTES];
    struct stat st;
    segment_name(name, first_seq);

    int fd = openat(journal->dir_fd, name, (is_last ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        int error = errno;
        if (fd >= 0) {
            close(fd);
        }
        return herr_set(err, HEROLD_E_SYSTEM, "journal: open(%s/%s) failed: %s", journal->dir, name,
                        strerror(error));
    }
    int rc = 0;
    if (!S_ISREG(st.st_mode)) {
        rc = herr_set(err, HEROLD_E_SYSTEM, "journal: %s/%s at offset 0: not a regular file",
                      journal->dir, name);
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < JOURNAL_SEGMENT_HEADER_BYTES) {
        rc = herr_set(err, HEROLD_E_SYSTEM,
                      "journal: %s/%s at offset 0: %" PRIu64 " bytes, shorter than the %d-byte "
                      "segment header",
                      journal->dir, name, size, JOURNAL_SEGMENT_HEADER_BYTES);
        goto out;
    }
    int io = pread_all(fd, header, sizeof(header), 0);
    if (io != 0) {
        rc = herr_set(err, HEROLD_E_SYSTEM, "journal: read(%s/%s) at offset 0 failed: %s",
                      journal->dir, name, io_error_text(io));
        goto out;
    }
    if (memcmp(header, SEGMENT_MAGIC, SEGMENT_MAGIC_BYTES) != 0) {
        rc = herr_set(err, HEROLD_E_SYSTEM,
                      "journal: %s/%s at offset 0: bad magic, not a journal segment", journal->dir,
                      name);
        goto out;
    }
    uint32_t version = load_le32(header + 8);
    if (version != JOURNAL_FORMAT_VERSION) {
        rc = herr_set(err, HEROLD_E_SYSTEM,
                      "journal: %s/%s at offset 8: unknown format version %" PRIu32
                      " (this build reads version %d)",
                      journal->dir, name, version, JOURNAL_FORMAT_VERSION);
        goto out;
    }

    pthread_mutex_lock(&journal->lock);
    struct segment *segment = segments_push(journal, first_seq);
    pthread_mutex_unlock(&journal->lock);
    uint64_t last_point = JOURNAL_SEGMENT_HEADER_BYTES;
    struct scanner s;
    struct scanned record;
    enum scan_status status;
    scanner_init(&s, fd, JOURNAL_SEGMENT_HEADER_BYTES, size, buf, RECOVERY_BUFFER_BYTES);
    while ((status = scanner_next(&s, &record)) == SCAN_RECORD) {
        uint64_t expected = segment->last_seq + 1;
        if (record.seq != expected) {
            rc = herr_set(err, HEROLD_E_SYSTEM,
                          "journal: %s/%s at offset %" PRIu64 ": record seq %" PRIu64
                          ", expected %" PRIu64,
                          journal->dir, name, record.offset, record.seq, expected);
            goto out;
        }
        if (record.offset - last_point >= SEEK_STRIDE_BYTES) {
            segment_add_point(segment, record.seq, record.offset);
            last_point = record.offset;
        }
        segment->last_seq = record.seq;
        segment->size = s.offset;
        if (record.time_ms > segment->newest_ms) {
            segment->newest_ms = record.time_ms;
        }
    }
    if (status == SCAN_IO) {
        rc = herr_set(err, HEROLD_E_SYSTEM, "journal: read(%s/%s) at offset %" PRIu64 " failed: %s",
                      journal->dir, name, s.offset, io_error_text(s.error));
        goto out;
    }
    if (status == SCAN_BAD && !is_last) {
        rc = herr_set(err, HEROLD_E_SYSTEM, "journal: %s/%s damaged at offset %" PRIu64 ": %s",
                      journal->dir, name, s.offset, s.why);
        goto out;
    }
    if (status == SCAN_BAD) {
        if (ftruncate(fd, (off_t)s.offset) != 0 || fsync(fd) != 0) {
            rc = herr_set(err, HEROLD_E_SYSTEM,
                          "journal: cutting %s/%s at offset %" PRIu64 " failed: %s", journal->dir,
                          name, s.offset, strerror(errno));
            goto out;
        }
        log_msg(LOG_LEVEL_WARN, "journal: cut %s/%s at offset %llu: %s", journal->dir, name,
                (unsigned long long)s.offset, s.why);
    }
    if (is_last) {
        journal->fd = fd;
        fd = -1;
        journal->written = segment->size;
        journal->pending_newest_ms = segment->newest_ms;
        journal->last_point_offset = last_point;
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

static int recover(journal_t *journal, struct herr *err)
{
    uint64_t *seqs = NULL;
    size_t count = 0;
    int rc = list_segments(journal, &seqs, &count, err);
    if (rc != 0) {
        return rc;
    }
    uint64_t start_seq = 1;
    if (count > 0) {
        bool removed;
        rc = remove_torn_creation(journal, seqs[count - 1], &removed, err);
        if (rc == 0 && removed) {
            /* A journal left without segments keeps its numbering. */
            start_seq = seqs[--count];
        }
    }
    if (rc == 0 && count == 0) {
        rc = create_segment(journal, start_seq, err);
        journal->next_seq = start_seq;
    }
    unsigned char *buf = count > 0 ? xmalloc(RECOVERY_BUFFER_BYTES) : NULL;
    for (size_t i = 0; rc == 0 && i < count; i++) {
        if (i > 0) {
            const struct segment *prev = current_segment(journal);
            if (seqs[i] != prev->last_seq + 1) {
                char name[SEGMENT_NAME_SIZE];
                segment_name(name, seqs[i]);
                rc = herr_set(err, HEROLD_E_SYSTEM,
                              "journal: seq gap: %s/%s at offset 0 starts at seq %" PRIu64
                              ", but the segment before it ends at seq %" PRIu64,
                              journal->dir, name, seqs[i], prev->last_seq);
                break;
            }
        }
        rc = recover_segment(journal, seqs[i], i + 1 == count, buf, err);
        if (rc == 0) {
            journal->next_seq = current_segment(journal)->last_seq + 1;
        }
    }
    free(buf);
    free(seqs);
    if (rc == 0) {
        journal->durable_seq = journal->next_seq - 1;
        journal->synced_seq = journal->durable_seq;
    }
    return rc;
}

/* ---- lifecycle ---- */

static void journal_destroy(journal_t *journal)
{
    worker_stop(journal);
    if (journal->fd >= 0) {
        close(journal->fd);
    }
    if (journal->dir_fd >= 0) {
        close(journal->dir_fd); /* releases the flock */
    }
    for (size_t i = 0; i < journal->segment_count; i++) {
        free(journal->segments[i].points);
    }
    free(journal->segments);
    free(journal->trimmed);
    free(journal->buf);
    free(journal->dir);
    pthread_mutex_destroy(&journal->lock);
    pthread_cond_destroy(&journal->sync_done);
    pthread_mutex_destroy(&journal->worker_lock);
    pthread_cond_destroy(&journal->work_wanted);
    free(journal);
}

journal_t *journal_open(const journal_config_t *config, struct herr *err)
{
    if (config == NULL || config->dir == NULL || config->dir[0] == '\0') {
        herr_set(err, HEROLD_E_CONFIG, "journal: no directory given");
        return NULL;
    }
    if (config->retention_ms < 0) {
        herr_set(err, HEROLD_E_CONFIG, "journal: retention_ms %lld is negative",
                 (long long)config->retention_ms);
        return NULL;
    }
    journal_t *journal = xcalloc(1, sizeof(*journal));
    journal->dir = xstrdup(config->dir);
    journal->dir_fd = -1;
    journal->fd = -1;
    journal->segment_bytes =
        config->segment_bytes ? config->segment_bytes : JOURNAL_DEFAULT_SEGMENT_BYTES;
    journal->retention_ms =
        config->retention_ms ? config->retention_ms : JOURNAL_DEFAULT_RETENTION_MS;
    journal->retention_bytes =
        config->retention_bytes ? config->retention_bytes : JOURNAL_DEFAULT_RETENTION_BYTES;
    journal->preallocate = config->preallocate;
    pthread_mutex_init(&journal->lock, NULL);
    pthread_cond_init(&journal->sync_done, NULL);
    pthread_mutex_init(&journal->worker_lock, NULL);
    pthread_cond_init(&journal->work_wanted, NULL);
    atomic_init(&journal->is_ahead_ready, false);
    atomic_init(&journal->is_worker_stopping, false);
    atomic_init(&journal->failed, false);

    int rc = make_dirs(journal->dir, err);
    if (rc == 0) {
        journal->dir_fd = open(journal->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (journal->dir_fd < 0) {
            rc = herr_set(err, HEROLD_E_SYSTEM, "journal: open(%s) failed: %s", journal->dir,
                          strerror(errno));
        }
    }
    if (rc == 0 && flock(journal->dir_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            rc = herr_set(err, HEROLD_E_UNAVAILABLE,
                          "journal: %s is open in another journal (flock held)", journal->dir);
        } else {
            rc = herr_set(err, HEROLD_E_SYSTEM, "journal: flock(%s) failed: %s", journal->dir,
                          strerror(errno));
        }
    }
    if (rc == 0) {
        /* A segment made ahead by an earlier run may not be whole. */
        unlinkat(journal->dir_fd, MADE_AHEAD_NAME, 0);
        rc = recover(journal, err);
    }
    if (rc == 0 && journal->preallocate) {
        int error = pthread_create(&journal->worker, NULL, worker_main, journal);
        if (error != 0) {
            rc = herr_set(err, HEROLD_E_SYSTEM, "journal: cannot start a thread: %s",
                          strerror(error));
        }
        journal->has_worker = error == 0;
        if (journal->has_worker) {
            thread_name(journal->worker, "journal-worker");
        }
    }
    if (rc != 0) {
        journal_destroy(journal);
        return NULL;
    }
    journal->buf = xmalloc(JOURNAL_WRITE_BUFFER_BYTES);
    log_msg(LOG_LEVEL_DEBUG, "journal: opened %s: %zu segments, seqs %" PRIu64 " to %" PRIu64,
            journal->dir, journal->segment_count, journal->segments[0].first_seq,
            journal->durable_seq);
    return journal;
}

void journal_close(journal_t *journal)
{
    if (journal == NULL) {
        return;
    }
    if (!journal->failed) {
        struct herr err;
        /* A failure is logged by fatal(). */
        if (journal_sync(journal, &err) == 0) {
            (void)cut_to_records(journal, &err);
        }
    }
    journal_destroy(journal);
}

/* ---- operations ---- */

int journal_append(journal_t *journal, const void *payload, size_t len, int64_t time_ms,
                   uint64_t *seq, struct herr *err)
{
    if (len > JOURNAL_MAX_RECORD_BYTES) {
        return herr_set(err, HEROLD_E_TOO_LARGE,
                        "journal: a record of %zu bytes exceeds the %d-byte limit", len,
                        JOURNAL_MAX_RECORD_BYTES);
    }
    if (journal->failed) {
        return herr_set(err, HEROLD_E_SYSTEM, "journal: refused after an earlier failure");
    }
    uint64_t record_bytes = JOURNAL_RECORD_HEADER_BYTES + (uint64_t)len;
    bool has_records = journal->next_seq > current_segment(journal)->first_seq;
    /* A segment not made ahead ends as soon as one made ahead is ready. */
    bool is_ahead_due = !journal->is_preallocated && is_ahead_ready(journal);
    if (has_records && (is_ahead_due || journal->written + journal->buf_len + record_bytes >
                                            journal->segment_bytes)) {
        int rc = roll_over(journal, err);
        if (rc != 0) {
            return rc;
        }
    }
    if (journal->buf_len + record_bytes > JOURNAL_WRITE_BUFFER_BYTES) {
        int rc = flush_buffer(journal, err);
        if (rc != 0) {
            return rc;
        }
    }
    uint64_t offset = journal->written + journal->buf_len;
    if (offset - journal->last_point_offset >= SEEK_STRIDE_BYTES) {
        pthread_mutex_lock(&journal->lock);
        segment_add_point(current_segment(journal), journal->next_seq, offset);
        pthread_mutex_unlock(&journal->lock);
        journal->last_point_offset = offset;
    }
    unsigned char *header = journal->buf + journal->buf_len;
    store_le32(header, (uint32_t)len);
    store_le64(header + 8, journal->next_seq);
    store_le64(header + 16, (uint64_t)time_ms);
    if (len > 0) {
        memcpy(header + JOURNAL_RECORD_HEADER_BYTES, payload, len);
    }
    store_le32(header + 4, record_crc(header, header + JOURNAL_RECORD_HEADER_BYTES, len));
    journal->buf_len += (size_t)record_bytes;
    if (time_ms > journal->pending_newest_ms) {
        journal->pending_newest_ms = time_ms;
    }
    if (seq != NULL) {
        *seq = journal->next_seq;
    }
    journal->next_seq++;
    request_ahead_when_due(journal);
    return 0;
}

/* Where a read continues: one segment, opened while the lock made sure it still existed. */
struct read_window {
    int fd;
    char name[SEGMENT_NAME_SIZE];
    uint64_t start_seq;    /* of the record at start_offset */
    uint64_t start_offset; /* a seek point at or before the wanted seq */
    uint64_t size;         /* durable bytes */
};

static int read_window_open(journal_t *journal, uint64_t seq, struct read_window *w,
                            struct herr *err)
{
    int rc = 0;
    pthread_mutex_lock(&journal->lock);
    const struct segment *segments = journal->segments;
    if (seq < segments[0].first_seq) {
        rc = herr_set(err, HEROLD_E_NOT_FOUND,
                      "journal: seq %" PRIu64 " is no longer retained (the first retained seq is "
                      "%" PRIu64 ")",
                      seq, segments[0].first_seq);
        goto out;
    }
    /* The last segment whose first seq is <= seq. */
    size_t lo = 0;
    size_t hi = journal->segment_count;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (segments[mid].first_seq <= seq) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    const struct segment *segment = &segments[lo];
    if (seq > segment->last_seq) {
        rc = herr_set(err, HEROLD_E_INTERNAL, "journal: durable seq %" PRIu64 " is in no segment",
                      seq);
        goto out;
    }
    w->start_seq = segment->first_seq;
    w->start_offset = JOURNAL_SEGMENT_HEADER_BYTES;
    lo = 0;
    hi = segment->point_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (segment->points[mid].seq <= seq) {
            w->start_seq = segment->points[mid].seq;
            w->start_offset = segment->points[mid].offset;
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    w->size = segment->size;
    segment_name(w->name, segment->first_seq);
    w->fd = openat(journal->dir_fd, w->name, O_RDONLY | O_CLOEXEC);
    if (w->fd < 0) {
        rc = herr_set(err, HEROLD_E_SYSTEM, "journal: open(%s/%s) failed: %s", journal->dir,
                      w->name, strerror(errno));
    }
out:
    pthread_mutex_unlock(&journal->lock);
    return rc;
}

int journal_read(journal_t *journal, uint64_t from_seq, journal_read_fn fn, void *ctx,
                 struct herr *err)
{
    pthread_mutex_lock(&journal->lock);
    uint64_t end = journal->durable_seq;
    uint64_t first = journal->segments[0].first_seq;
    pthread_mutex_unlock(&journal->lock);
    uint64_t next = from_seq > 0 ? from_seq : first;
    if (next < first) {
        return herr_set(err, HEROLD_E_NOT_FOUND,
                        "journal: seq %" PRIu64 " is before the first retained seq %" PRIu64, next,
                        first);
    }
    if (next > end) {
        return 0;
    }

    unsigned char *buf = xmalloc(READ_BUFFER_BYTES);
    int rc = 0;
    bool stopped = false;
    while (rc == 0 && !stopped && next <= end) {
        struct read_window w;
        rc = read_window_open(journal, next, &w, err);
        if (rc != 0) {
            break;
        }
        uint64_t before = next;
        uint64_t expected = w.start_seq;
        struct scanner s;
        struct scanned record;
        enum scan_status status = SCAN_END;
        scanner_init(&s, w.fd, w.start_offset, w.size, buf, READ_BUFFER_BYTES);
        while (!stopped && next <= end && (status = scanner_next(&s, &record)) == SCAN_RECORD) {
            if (record.seq != expected) {
                rc = herr_set(err, HEROLD_E_SYSTEM,
                              "journal: %s/%s at offset %" PRIu64 ": record seq %" PRIu64
                              ", expected %" PRIu64,
                              journal->dir, w.name, record.offset, record.seq, expected);
                break;
            }
            expected++;
            if (record.seq < next) {
                continue;
            }
            journal_record_t out = {record.seq, record.time_ms, record.payload, record.len};
            next = record.seq + 1;
            stopped = !fn(&out, ctx);
        }
        if (rc == 0 && !stopped && next <= end) {
            if (status == SCAN_BAD) {
                rc = herr_set(err, HEROLD_E_SYSTEM,
                              "journal: %s/%s damaged at offset %" PRIu64 ": %s", journal->dir,
                              w.name, s.offset, s.why);
            } else if (status == SCAN_IO) {
                rc = herr_set(err, HEROLD_E_SYSTEM,
                              "journal: read(%s/%s) at offset %" PRIu64 " failed: %s", journal->dir,
                              w.name, s.offset, io_error_text(s.error));
            } else if (next == before) {
                rc = herr_set(err, HEROLD_E_INTERNAL, "journal: %s/%s ends before seq %" PRIu64,
                              journal->dir, w.name, next);
            }
        }
        close(w.fd);
    }
    free(buf);
    return rc;
}

size_t journal_trim(journal_t *journal, int64_t now_ms)
{
    int64_t threshold;
    if (__builtin_sub_overflow(now_ms, journal->retention_ms, &threshold)) {
        threshold = INT64_MIN;
    }
    pthread_mutex_lock(&journal->lock);
    uint64_t total = 0;
    for (size_t i = 0; i < journal->segment_count; i++) {
        total += journal->segments[i].size;
    }
    size_t drop = 0;
    while (drop + 1 < journal->segment_count) {
        const struct segment *segment = &journal->segments[drop];
        bool over_size = total > journal->retention_bytes;
        bool too_old = segment->newest_ms < threshold;
        if (!over_size && !too_old) {
            break;
        }
        total -= segment->size;
        drop++;
    }
    uint64_t *dropped = drop > 0 ? xmalloc(drop * sizeof(*dropped)) : NULL;
    for (size_t i = 0; i < drop; i++) {
        dropped[i] = journal->segments[i].first_seq;
        free(journal->segments[i].points);
    }
    memmove(journal->segments, journal->segments + drop,
            (journal->segment_count - drop) * sizeof(*journal->segments));
    journal->segment_count -= drop;
    pthread_mutex_unlock(&journal->lock);

    /* Oldest first, each made durable before the next, so that a crash leaves a
     * contiguous journal whichever deletions it undid. With discard on, ext4 took 15-20
     * ms per 64 MiB segment, and a trim after a busy minute drops dozens: the journal's
     * own thread removes them when it has one, so that appends and syncs do not wait. */
    if (journal->has_worker && drop > 0) {
        pthread_mutex_lock(&journal->worker_lock);
        if (journal->trimmed_count + drop > journal->trimmed_capacity) {
            journal->trimmed_capacity = journal->trimmed_count + drop;
            journal->trimmed =
                xrealloc(journal->trimmed, journal->trimmed_capacity * sizeof(*journal->trimmed));
        }
        memcpy(journal->trimmed + journal->trimmed_count, dropped, drop * sizeof(*dropped));
        journal->trimmed_count += drop;
        pthread_cond_signal(&journal->work_wanted);
        pthread_mutex_unlock(&journal->worker_lock);
    } else {
        for (size_t i = 0; i < drop; i++) {
            remove_segment_file(journal, dropped[i]);
        }
    }
    free(dropped);
    return drop;
}

/* ---- inspection ---- */

uint64_t journal_first_seq(journal_t *journal)
{
    pthread_mutex_lock(&journal->lock);
    uint64_t first = journal->segments[0].first_seq;
    uint64_t result = journal->durable_seq >= first ? first : 0;
    pthread_mutex_unlock(&journal->lock);
    return result;
}

uint64_t journal_last_seq(journal_t *journal)
{
    pthread_mutex_lock(&journal->lock);
    uint64_t result = journal->durable_seq;
    pthread_mutex_unlock(&journal->lock);
    return result;
}

bool journal_is_preallocated(journal_t *journal)
{
    return journal->is_preallocated;
}

uint64_t journal_size_bytes(journal_t *journal)
{
    pthread_mutex_lock(&journal->lock);
    uint64_t total = 0;
    for (size_t i = 0; i < journal->segment_count; i++) {
        total += journal->segments[i].size;
    }
    pthread_mutex_unlock(&journal->lock);
    return total;
}
