/* The embedded journal: every rule of journal.h crossed by one, each corruption shape as a
 * fixture, crashes simulated by a child that exits without closing and by cutting or
 * flipping the tail at every offset, and a reader racing the writer.
 *
 * Journals live in fresh temporary directories ($TMPDIR, default /tmp). Records follow
 * rules that the tests know independently of the journal: the payload of seq is the
 * bytes (seq * 31 + k) & 0xff, its time_ms is BASE_MS + seq * 1000, and its length comes
 * from the test's own length rule; a reader checks all three for every record it sees.
 * The fixture directories are read from $HEROLD_FIXTURES/journal, by default
 * tests/unit/fixtures/journal, since tests run from the repository root; their files were
 * written by tests/unit/fixtures/journal/generate.py, which encodes the format and CRC32C
 * on its own, with the same rules. */

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "journal.h"

#ifndef JOURNAL_FIXTURE_DIR
#define JOURNAL_FIXTURE_DIR "tests/unit/fixtures"
#endif

#define SEG_HDR JOURNAL_SEGMENT_HEADER_BYTES
#define REC_HDR JOURNAL_RECORD_HEADER_BYTES
#define MAX_REC JOURNAL_MAX_RECORD_BYTES
#define BASE_MS 1700000000000LL
#define PATH_SIZE 512

/* ---- files and directories ---- */

static void make_tmpdir(char *out)
{
    const char *base = getenv("TMPDIR");
    snprintf(out, PATH_SIZE, "%s/herold-journal-XXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    ck_assert_msg(mkdtemp(out) != NULL, "mkdtemp(%s): %s", out, strerror(errno));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void seg_path(char *out, const char *dir, uint64_t first_seq)
{
    int n = snprintf(out, PATH_SIZE, "%s/%020" PRIu64 ".seg", dir, first_seq);
    ck_assert_int_lt(n, PATH_SIZE);
}

/* out = dir/name, in a buffer of PATH_SIZE. */
static void join(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_SIZE, "%s/%s", dir, name);
    ck_assert_int_lt(n, PATH_SIZE);
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    ck_assert_msg(stat(path, &st) == 0, "stat(%s): %s", path, strerror(errno));
    return (uint64_t)st.st_size;
}

/* Caller frees. */
static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s: %s", path, strerror(errno));
    size_t capacity = 4096;
    size_t used = 0;
    unsigned char *data = malloc(capacity);
    size_t n;
    while ((n = fread(data + used, 1, capacity - used, f)) > 0) {
        used += n;
        if (used == capacity) {
            capacity *= 2;
            data = realloc(data, capacity);
        }
    }
    ck_assert_msg(!ferror(f), "cannot read %s", path);
    fclose(f);
    *len = used;
    return data;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

/* Copies the regular files of src into dst (both exist). */
static void copy_files(const char *src, const char *dst)
{
    DIR *dir = opendir(src);
    ck_assert_msg(dir != NULL,
                  "cannot open %s (run from the repository root or set "
                  "HEROLD_FIXTURES)",
                  src);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        char from[PATH_SIZE];
        char to[PATH_SIZE];
        join(from, src, entry->d_name);
        join(to, dst, entry->d_name);
        struct stat st;
        if (stat(from, &st) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        size_t len;
        unsigned char *data = read_file(from, &len);
        write_file(to, data, len);
        free(data);
    }
    closedir(dir);
}

/* The segment files of dir, sorted, as "name:size" lines. Caller frees. */
static char *list_segments(const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    ck_assert_int_ge(n, 0);
    size_t capacity = 64 + (size_t)n * 48;
    char *out = calloc(1, capacity);
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        size_t len = strlen(name);
        if (len == 24 && strcmp(name + 20, ".seg") == 0) {
            char path[PATH_SIZE];
            join(path, dir, name);
            used += (size_t)snprintf(out + used, capacity - used, "%s:%" PRIu64 "\n", name,
                                     file_size(path));
        }
        free(names[i]);
    }
    free(names);
    return out;
}

/* ---- stderr, where the journal's warnings go ---- */

struct capture {
    int saved;
    char path[PATH_SIZE];
};

static void capture_begin(struct capture *c)
{
    const char *base = getenv("TMPDIR");
    snprintf(c->path, sizeof(c->path), "%s/herold-journal-log-XXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    int fd = mkstemp(c->path);
    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    c->saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

/* What was logged since capture_begin. Caller frees. */
static char *capture_end(struct capture *c)
{
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    size_t len;
    unsigned char *data = read_file(c->path, &len);
    unlink(c->path);
    char *text = malloc(len + 1);
    memcpy(text, data, len);
    text[len] = '\0';
    free(data);
    /* Shown again, so that a failing test still tells what the journal said. */
    fputs(text, stderr);
    return text;
}

/* ---- records ---- */

static int64_t time_for(uint64_t seq)
{
    return BASE_MS + (int64_t)seq * 1000;
}

static void fill_payload(unsigned char *buf, uint64_t seq, size_t len)
{
    for (size_t k = 0; k < len; k++) {
        buf[k] = (unsigned char)((seq * 31 + k) & 0xff);
    }
}

static bool payload_matches(const unsigned char *p, uint64_t seq, size_t len)
{
    for (size_t k = 0; k < len; k++) {
        if (p[k] != (unsigned char)((seq * 31 + k) & 0xff)) {
            return false;
        }
    }
    return true;
}

/* The length rule of the fixture files (generate.py). */
static size_t fixture_len(uint64_t seq, uint64_t max_seq)
{
    if (seq == max_seq) {
        return MAX_REC;
    }
    return seq % 4 == 3 ? 0 : (size_t)(seq * 37 % 251);
}

/* Small varied lengths, zero included. */
static size_t small_len(uint64_t seq, uint64_t unused)
{
    (void)unused;
    return (size_t)(seq * 53 % 61);
}

/* Appends the record for seq (which must be the next one) of length len. */
static void append_record(journal_t *journal, uint64_t seq, size_t len)
{
    static unsigned char buf[MAX_REC + 1];
    struct herr err;
    uint64_t got = 0;
    herr_clear(&err);
    fill_payload(buf, seq, len);
    int rc = journal_append(journal, buf, len, time_for(seq), &got, &err);
    ck_assert_msg(rc == 0, "append of seq %" PRIu64 ": %s", seq, err.message);
    ck_assert_uint_eq(got, seq);
}

static void sync_ok(journal_t *journal)
{
    struct herr err;
    herr_clear(&err);
    int rc = journal_sync(journal, &err);
    ck_assert_msg(rc == 0, "sync: %s", err.message);
}

static journal_t *open_config(const journal_config_t *config)
{
    struct herr err;
    herr_clear(&err);
    journal_t *journal = journal_open(config, &err);
    ck_assert_msg(journal != NULL, "journal_open(%s): %s", config->dir, err.message);
    return journal;
}

static journal_t *open_dir(const char *dir, uint64_t segment_bytes)
{
    journal_config_t config = {.dir = dir, .segment_bytes = segment_bytes};
    return open_config(&config);
}

/* What a read saw, checked against the rules as it goes. */
struct collect {
    size_t (*len_of)(uint64_t seq, uint64_t param); /* NULL: any length */
    uint64_t len_param;
    const size_t *lens; /* when set, lens[seq] is the length of seq */
    size_t stop_after;  /* fn returns false after this many records; 0: never */
    journal_t *trim;    /* when set, trims everything after the first record */
    size_t trimmed;
    uint64_t first;
    uint64_t last;
    size_t count;
    char problem[256]; /* the first rule broken, empty when none */
};

static bool collect_fn(const journal_record_t *record, void *ctx)
{
    struct collect *c = ctx;
    size_t want_len = record->len;
    if (c->lens != NULL) {
        want_len = c->lens[record->seq];
    } else if (c->len_of != NULL) {
        want_len = c->len_of(record->seq, c->len_param);
    }
    if (c->problem[0] != '\0') {
        /* keep the first */
    } else if (c->count > 0 && record->seq != c->last + 1) {
        snprintf(c->problem, sizeof(c->problem), "seq %" PRIu64 " after %" PRIu64, record->seq,
                 c->last);
    } else if (record->len != want_len) {
        snprintf(c->problem, sizeof(c->problem), "seq %" PRIu64 ": %zu bytes, expected %zu",
                 record->seq, record->len, want_len);
    } else if (!payload_matches(record->payload, record->seq, record->len)) {
        snprintf(c->problem, sizeof(c->problem), "seq %" PRIu64 ": wrong payload", record->seq);
    } else if (record->time_ms != time_for(record->seq)) {
        snprintf(c->problem, sizeof(c->problem), "seq %" PRIu64 ": time_ms %" PRId64, record->seq,
                 record->time_ms);
    }
    if (c->count == 0) {
        c->first = record->seq;
    }
    c->last = record->seq;
    c->count++;
    if (c->trim != NULL && c->count == 1) {
        c->trimmed = journal_trim(c->trim, INT64_MAX);
    }
    return c->stop_after == 0 || c->count < c->stop_after;
}

/* Reads from from_seq, expecting success and no broken rule. */
static void read_ok(journal_t *journal, uint64_t from_seq, struct collect *c)
{
    struct herr err;
    herr_clear(&err);
    int rc = journal_read(journal, from_seq, collect_fn, c, &err);
    ck_assert_msg(rc == 0, "read from %" PRIu64 ": %s", from_seq, err.message);
    ck_assert_msg(c->problem[0] == '\0', "read from %" PRIu64 ": %s", from_seq, c->problem);
}

/* Reads everything from from_seq and checks it is exactly first..last. */
static void expect_records(journal_t *journal, uint64_t from_seq, uint64_t first, uint64_t last,
                           struct collect c)
{
    read_ok(journal, from_seq, &c);
    if (last < first) {
        ck_assert_uint_eq(c.count, 0);
        return;
    }
    ck_assert_uint_eq(c.count, last - first + 1);
    ck_assert_uint_eq(c.first, first);
    ck_assert_uint_eq(c.last, last);
}

/* The bit-at-a-time CRC32C: slow and obviously right, the oracle for both fast paths. */
static uint32_t crc32c_bitwise(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

static uint64_t xorshift(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* ---- CRC32C ---- */

START_TEST(test_journal_crc32c_known_vectors)
{
    static const unsigned char iscsi_read_pdu[48] = {
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    unsigned char zeros[32];
    unsigned char ones[32];
    unsigned char up[32];
    unsigned char down[32];
    for (int i = 0; i < 32; i++) {
        zeros[i] = 0;
        ones[i] = 0xff;
        up[i] = (unsigned char)i;
        down[i] = (unsigned char)(31 - i);
    }
    const struct {
        const char *what;
        const void *data;
        size_t len;
        uint32_t crc;
    } vectors[] = {
        {"empty", "", 0, 0},
        {"123456789", "123456789", 9, 0xE3069283},
        {"RFC 3720 B.4: 32 bytes of zeros", zeros, 32, 0x8A9136AA},
        {"RFC 3720 B.4: 32 bytes of ones", ones, 32, 0x62A8AB43},
        {"RFC 3720 B.4: 32 incrementing bytes", up, 32, 0x46DD794E},
        {"RFC 3720 B.4: 32 decrementing bytes", down, 32, 0x113FDB5C},
        {"RFC 3720 B.4: an iSCSI read PDU", iscsi_read_pdu, 48, 0xD9963A56},
    };
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        ck_assert_msg(crc32c_bitwise(0, vectors[i].data, vectors[i].len) == vectors[i].crc,
                      "oracle: %s", vectors[i].what);
        ck_assert_msg(journal_crc32c_table(0, vectors[i].data, vectors[i].len) == vectors[i].crc,
                      "table: %s", vectors[i].what);
        ck_assert_msg(journal_crc32c_sse42(0, vectors[i].data, vectors[i].len) == vectors[i].crc,
                      "sse4.2: %s", vectors[i].what);
        ck_assert_msg(journal_crc32c(0, vectors[i].data, vectors[i].len) == vectors[i].crc,
                      "dispatch: %s", vectors[i].what);
    }
    /* Continuing from a CRC is the same as one pass, at every split. */
    for (size_t split = 0; split <= 9; split++) {
        const char *s = "123456789";
        ck_assert_uint_eq(
            journal_crc32c_table(journal_crc32c_table(0, s, split), s + split, 9 - split),
            0xE3069283);
        ck_assert_uint_eq(
            journal_crc32c_sse42(journal_crc32c_sse42(0, s, split), s + split, 9 - split),
            0xE3069283);
    }
#if defined(__x86_64__)
    ck_assert(journal_crc32c_has_sse42() == (bool)__builtin_cpu_supports("sse4.2"));
#endif
}
END_TEST

START_TEST(test_journal_crc32c_paths_agree_on_random_buffers)
{
    enum { SPAN = 4096 + 64 };
    static unsigned char buf[SPAN + 16];
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (unsigned char)xorshift(&rng);
    }
    for (int iter = 0; iter < 1500; iter++) {
        size_t align = xorshift(&rng) % 16;
        size_t len = xorshift(&rng) % (iter % 2 == 0 ? 64 : 4097);
        uint32_t start = iter % 3 == 0 ? 0 : (uint32_t)xorshift(&rng);
        const unsigned char *p = buf + align;
        uint32_t want = crc32c_bitwise(start, p, len);
        ck_assert_msg(journal_crc32c_table(start, p, len) == want, "table: len %zu align %zu", len,
                      align);
        ck_assert_msg(journal_crc32c_sse42(start, p, len) == want, "sse4.2: len %zu align %zu", len,
                      align);
        size_t split = len > 0 ? xorshift(&rng) % len : 0;
        ck_assert_msg(journal_crc32c(journal_crc32c(start, p, split), p + split, len - split) ==
                          want,
                      "split at %zu of %zu", split, len);
    }
    /* One large buffer, where the fast loops do nearly all the work. */
    size_t big_len = 1 << 20;
    unsigned char *big = malloc(big_len + 8);
    for (size_t i = 0; i < big_len + 8; i++) {
        big[i] = (unsigned char)xorshift(&rng);
    }
    for (size_t align = 0; align < 8; align++) {
        ck_assert_uint_eq(journal_crc32c_table(0, big + align, big_len),
                          journal_crc32c_sse42(0, big + align, big_len));
    }
    ck_assert_uint_eq(journal_crc32c_table(0, big, big_len), crc32c_bitwise(0, big, big_len));
    free(big);
}
END_TEST

/* ---- creating, appending, reopening ---- */

START_TEST(test_journal_new_journal_creates_directory_and_first_segment)
{
    char tmp[PATH_SIZE];
    char dir[PATH_SIZE];
    char path[PATH_SIZE];
    make_tmpdir(tmp);
    join(dir, tmp, "data/more/journal");
    journal_t *journal = open_dir(dir, 0);
    seg_path(path, dir, 1);
    size_t len;
    unsigned char *header = read_file(path, &len);
    ck_assert_uint_eq(len, SEG_HDR);
    ck_assert_mem_eq(header, "HEROLDJ1", 8);
    ck_assert_mem_eq(header + 8, "\x01\x00\x00\x00\x00\x00\x00\x00", 8);
    free(header);
    ck_assert_uint_eq(journal_first_seq(journal), 0);
    ck_assert_uint_eq(journal_last_seq(journal), 0);
    ck_assert_uint_eq(journal_size_bytes(journal), SEG_HDR);
    expect_records(journal, 0, 1, 0, (struct collect){0});
    expect_records(journal, 1, 1, 0, (struct collect){0});
    journal_close(journal);

    journal = open_dir(dir, 0);
    ck_assert_uint_eq(journal_first_seq(journal), 0);
    ck_assert_uint_eq(journal_last_seq(journal), 0);
    append_record(journal, 1, 5);
    sync_ok(journal);
    ck_assert_uint_eq(journal_first_seq(journal), 1);
    ck_assert_uint_eq(journal_last_seq(journal), 1);
    ck_assert_uint_eq(journal_size_bytes(journal), SEG_HDR + REC_HDR + 5);
    journal_close(journal);
    remove_tree(tmp);
}
END_TEST

/* The bytes on disk are journal.h's layout, and the CRC covers the length, seq and time
 * fields and the payload, as computed by the test's own CRC. */
START_TEST(test_journal_record_layout_on_disk)
{
    char dir[PATH_SIZE];
    char path[PATH_SIZE];
    make_tmpdir(dir);
    journal_t *journal = open_dir(dir, 0);
    append_record(journal, 1, 3);
    append_record(journal, 2, 0);
    sync_ok(journal);
    journal_close(journal);

    seg_path(path, dir, 1);
    size_t len;
    unsigned char *data = read_file(path, &len);
    ck_assert_uint_eq(len, SEG_HDR + REC_HDR + 3 + REC_HDR);
    const unsigned char *r1 = data + SEG_HDR;
    const unsigned char *r2 = r1 + REC_HDR + 3;
    static const unsigned char len3[4] = {3, 0, 0, 0};
    static const unsigned char seq1[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned char seq2[8] = {2, 0, 0, 0, 0, 0, 0, 0};
    unsigned char time1[8];
    for (int i = 0; i < 8; i++) {
        time1[i] = (unsigned char)((uint64_t)time_for(1) >> (8 * i));
    }
    ck_assert_mem_eq(r1, len3, 4);
    ck_assert_mem_eq(r1 + 8, seq1, 8);
    ck_assert_mem_eq(r1 + 16, time1, 8);
    ck_assert(payload_matches(r1 + REC_HDR, 1, 3));
    ck_assert_mem_eq(r2, "\0\0\0\0", 4);
    ck_assert_mem_eq(r2 + 8, seq2, 8);
    for (int r = 0; r < 2; r++) {
        const unsigned char *h = r == 0 ? r1 : r2;
        size_t payload_len = r == 0 ? 3 : 0;
        uint32_t crc = crc32c_bitwise(0, h, 4);
        crc = crc32c_bitwise(crc, h + 8, 16);
        crc = crc32c_bitwise(crc, h + REC_HDR, payload_len);
        unsigned char stored[4] = {(unsigned char)crc, (unsigned char)(crc >> 8),
                                   (unsigned char)(crc >> 16), (unsigned char)(crc >> 24)};
        ck_assert_mem_eq(h + 4, stored, 4);
    }
    free(data);
    remove_tree(dir);
}
END_TEST

START_TEST(test_journal_round_trip_varied_sizes)
{
    enum { COUNT = 400 };
    static size_t lens[COUNT + 2];
    const size_t edges[] = {0, 1, MAX_REC, MAX_REC - 1, 0, 23, 24, 25, 4095, 4096, 4097, 0};
    uint64_t rng = 42;
    for (uint64_t seq = 1; seq <= COUNT; seq++) {
        if (seq <= sizeof(edges) / sizeof(edges[0])) {
            lens[seq] = edges[seq - 1];
        } else if (seq % 50 == 0) {
            lens[seq] = MAX_REC - xorshift(&rng) % 100;
        } else {
            lens[seq] = xorshift(&rng) % 2000;
        }
    }
    char dir[PATH_SIZE];
    make_tmpdir(dir);
    journal_t *journal = open_dir(dir, 0);
    for (uint64_t seq = 1; seq <= COUNT; seq++) {
        append_record(journal, seq, lens[seq]);
        if (xorshift(&rng) % 10 == 0) {
            sync_ok(journal);
        }
    }
    sync_ok(journal);
    expect_records(journal, 1, 1, COUNT, (struct collect){.lens = lens});
    journal_close(journal);

    journal = open_dir(dir, 0);
    ck_assert_uint_eq(journal_first_seq(journal), 1);
    ck_assert_uint_eq(journal_last_seq(journal), COUNT);
    expect_records(journal, 1, 1, COUNT, (struct collect){.lens = lens});
    uint64_t total = SEG_HDR;
    for (uint64_t seq = 1; seq <= COUNT; seq++) {
        total += REC_HDR + lens[seq];
    }
    ck_assert_uint_eq(journal_size_bytes(journal), total);
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

START_TEST(test_journal_refuses_record_over_limit)
{
    static unsigned char big[MAX_REC + 1];
    char dir[PATH_SIZE];
    char path[PATH_SIZE];
    make_tmpdir(dir);
    seg_path(path, dir, 1);
    journal_t *journal = open_dir(dir, 0);
    append_record(journal, 1, 10);
    append_record(journal, 2, 0);
    sync_ok(journal);
    uint64_t size_before = journal_size_bytes(journal);
    ck_assert_uint_eq(file_size(path), size_before);

    struct herr err;
    herr_clear(&err);
    uint64_t seq = 77;
    ck_assert_int_eq(journal_append(journal, big, MAX_REC + 1, time_for(3), &seq, &err),
                     HEROLD_E_TOO_LARGE);
    ck_assert_int_eq(err.code, HEROLD_E_TOO_LARGE);
    ck_assert_ptr_nonnull(strstr(err.message, "65537"));
    ck_assert_uint_eq(seq, 77);
    sync_ok(journal);
    ck_assert_uint_eq(file_size(path), size_before);
    ck_assert_uint_eq(journal_last_seq(journal), 2);

    /* The limit itself is accepted, and takes the seq the refused one did not use. */
    append_record(journal, 3, MAX_REC);
    sync_ok(journal);
    ck_assert_uint_eq(file_size(path), size_before + REC_HDR + MAX_REC);
    journal_close(journal);

    journal = open_dir(dir, 0);
    size_t lens[4] = {0, 10, 0, MAX_REC};
    expect_records(journal, 1, 1, 3, (struct collect){.lens = lens});
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

START_TEST(test_journal_seq_continues_after_reopen)
{
    char dir[PATH_SIZE];
    make_tmpdir(dir);
    uint64_t next = 1;
    for (int round = 0; round < 3; round++) {
        journal_t *journal = open_dir(dir, 0);
        ck_assert_uint_eq(journal_last_seq(journal), next - 1);
        for (int k = 0; k < 5; k++, next++) {
            append_record(journal, next, small_len(next, 0));
        }
        /* No sync: journal_close syncs what was appended. */
        journal_close(journal);
    }
    journal_t *journal = open_dir(dir, 0);
    ck_assert_uint_eq(journal_last_seq(journal), 15);
    expect_records(journal, 1, 1, 15, (struct collect){.len_of = small_len});
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

START_TEST(test_journal_sync_with_nothing_appended)
{
    char dir[PATH_SIZE];
    char path[PATH_SIZE];
    make_tmpdir(dir);
    seg_path(path, dir, 1);
    journal_t *journal = open_dir(dir, 0);
    sync_ok(journal);
    ck_assert_uint_eq(journal_last_seq(journal), 0);
    append_record(journal, 1, 9);
    sync_ok(journal);
    sync_ok(journal);
    ck_assert_uint_eq(journal_last_seq(journal), 1);
    ck_assert_uint_eq(file_size(path), SEG_HDR + REC_HDR + 9);
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

/* ---- segments ---- */

/* Two 10-byte records fill a segment of exactly their size (just inside); one byte less
 * and the second starts a new segment (just outside). */
START_TEST(test_journal_rollover_at_segment_bytes)
{
    uint64_t segment_bytes = SEG_HDR + 2 * (REC_HDR + 10) - (uint64_t)_i;
    char dir[PATH_SIZE];
    char path[PATH_SIZE];
    make_tmpdir(dir);
    journal_t *journal = open_dir(dir, segment_bytes);
    for (uint64_t seq = 1; seq <= 3; seq++) {
        append_record(journal, seq, 10);
    }
    sync_ok(journal);
    seg_path(path, dir, 1);
    if (_i == 0) {
        ck_assert_uint_eq(file_size(path), segment_bytes);
        seg_path(path, dir, 2);
        ck_assert(!file_exists(path));
    } else {
        ck_assert_uint_eq(file_size(path), SEG_HDR + REC_HDR + 10);
        seg_path(path, dir, 2);
        ck_assert_uint_eq(file_size(path), SEG_HDR + REC_HDR + 10);
    }
    seg_path(path, dir, 3);
    ck_assert_uint_eq(file_size(path), SEG_HDR + REC_HDR + 10);
    expect_records(journal, 1, 1, 3, (struct collect){0});
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

/* A record larger than segment_bytes is never split: it fills a segment of its own. */
START_TEST(test_journal_big_record_gets_own_segment)
{
    char dir[PATH_SIZE];
    char path[PATH_SIZE];
    make_tmpdir(dir);
    journal_t *journal = open_dir(dir, 50);
    append_record(journal, 1, 100);
    append_record(journal, 2, 100);
    append_record(journal, 3, 0);
    sync_ok(journal);
    for (uint64_t seq = 1; seq <= 3; seq++) {
        seg_path(path, dir, seq);
        ck_assert_uint_eq(file_size(path), SEG_HDR + REC_HDR + (seq == 3 ? 0 : 100));
    }
    size_t lens[4] = {0, 100, 100, 0};
    expect_records(journal, 1, 1, 3, (struct collect){.lens = lens});
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

static size_t rollover_len(uint64_t seq, uint64_t unused)
{
    (void)unused;
    return (size_t)(seq * 53 % 400);
}

START_TEST(test_journal_rollover_read_across_segments)
{
    enum { COUNT = 150, SEGMENT = 300 };
    char dir[PATH_SIZE];
    make_tmpdir(dir);
    journal_t *journal = open_dir(dir, SEGMENT);
    /* The segmentation the rule in journal.h gives, worked out here on its own. */
    char expected[COUNT * 48];
    size_t used = 0;
    uint64_t seg_first = 1;
    uint64_t seg_size = SEG_HDR;
    for (uint64_t seq = 1; seq <= COUNT; seq++) {
        size_t len = rollover_len(seq, 0);
        if (seq > seg_first && seg_size + REC_HDR + len > SEGMENT) {
            used += (size_t)snprintf(expected + used, sizeof(expected) - used,
                                     "%020" PRIu64 ".seg:%" PRIu64 "\n", seg_first, seg_size);
            seg_first = seq;
            seg_size = SEG_HDR;
        }
        seg_size += REC_HDR + len;
        append_record(journal, seq, len);
        if (seq % 7 == 0) {
            sync_ok(journal);
        }
    }
    snprintf(expected + used, sizeof(expected) - used, "%020" PRIu64 ".seg:%" PRIu64 "\n",
             seg_first, seg_size);
    sync_ok(journal);
    char *listing = list_segments(dir);
    ck_assert_str_eq(listing, expected);
    free(listing);
    for (uint64_t from = 1; from <= COUNT + 1; from++) {
        expect_records(journal, from, from, COUNT, (struct collect){.len_of = rollover_len});
    }
    journal_close(journal);

    journal = open_dir(dir, SEGMENT);
    listing = list_segments(dir);
    ck_assert_str_eq(listing, expected);
    free(listing);
    for (uint64_t from = 1; from <= COUNT + 1; from += 5) {
        expect_records(journal, from, from, COUNT, (struct collect){.len_of = rollover_len});
    }
    append_record(journal, COUNT + 1, rollover_len(COUNT + 1, 0));
    sync_ok(journal);
    expect_records(journal, 1, 1, COUNT + 1, (struct collect){.len_of = rollover_len});
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

/* ---- reading ---- */

START_TEST(test_journal_read_from_start_middle_and_past_end)
{
    char dir[PATH_SIZE];
    make_tmpdir(dir);
    journal_t *journal = open_dir(dir, 0);
    for (uint64_t seq = 1; seq <= 50; seq++) {
        append_record(journal, seq, small_len(seq, 0));
    }
    sync_ok(journal);
    struct collect any = {.len_of = small_len};
    expect_records(journal, 0, 1, 50, any);
    expect_records(journal, 1, 1, 50, any);
    expect_records(journal, 25, 25, 50, any);
    expect_records(journal, 50, 50, 50, any);
    expect_records(journal, 51, 51, 50, any);
    expect_records(journal, UINT64_MAX, 1, 0, any);

    struct collect stop = {.len_of = small_len, .stop_after = 3};
    read_ok(journal, 10, &stop);
    ck_assert_uint_eq(stop.count, 3);
    ck_assert_uint_eq(stop.first, 10);
    ck_assert_uint_eq(stop.last, 12);
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

static size_t seek_len(uint64_t seq, uint64_t unused)
{
    (void)unused;
    return (size_t)(seq * 7919 % 1500);
}

/* Reads starting at every seq of one large segment land on that seq, whichever seek
 * point they start from, both as appended and as rebuilt by recovery. */
START_TEST(test_journal_read_seeks_inside_large_segment)
{
    enum { COUNT = 3000 };
    char dir[PATH_SIZE];
    make_tmpdir(dir);
    journal_t *journal = open_dir(dir, 0);
    for (uint64_t seq = 1; seq <= COUNT; seq++) {
        append_record(journal, seq, seek_len(seq, 0));
    }
    sync_ok(journal);
    for (int round = 0; round < 2; round++) {
        for (uint64_t from = 1; from <= COUNT; from++) {
            struct collect c = {.len_of = seek_len, .stop_after = 2};
            read_ok(journal, from, &c);
            ck_assert_uint_eq(c.first, from);
            ck_assert_uint_eq(c.count, from == COUNT ? 1 : 2);
        }
        journal_close(journal);
        journal = open_dir(dir, 0);
    }
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

/* Appends are invisible to readers until synced, even once a full buffer was written. */
START_TEST(test_journal_read_sees_only_synced_records)
{
    enum { BIG = 60000 };
    char dir[PATH_SIZE];
    char path[PATH_SIZE];
    make_tmpdir(dir);
    seg_path(path, dir, 1);
    journal_t *journal = open_dir(dir, 0);
    for (uint64_t seq = 1; seq <= 10; seq++) {
        append_record(journal, seq, 100);
    }
    sync_ok(journal);
    uint64_t synced_size = journal_size_bytes(journal);
    uint64_t unsynced = 0;
    uint64_t seq = 11;
    while (unsynced <= JOURNAL_WRITE_BUFFER_BYTES) {
        append_record(journal, seq++, BIG);
        unsynced += REC_HDR + BIG;
    }
    /* A full buffer went out with write(): the file is longer than what is durable. */
    ck_assert_uint_gt(file_size(path), synced_size);
    ck_assert_uint_eq(journal_size_bytes(journal), synced_size);
    ck_assert_uint_eq(journal_last_seq(journal), 10);
    expect_records(journal, 1, 1, 10, (struct collect){0});
    expect_records(journal, 11, 11, 10, (struct collect){0});
    sync_ok(journal);
    ck_assert_uint_eq(journal_last_seq(journal), seq - 1);
    expect_records(journal, 11, 11, seq - 1, (struct collect){0});
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

/* Finishes a sync started on the test's thread, after a pause. */
struct finisher {
    journal_t *journal;
    journal_sync_t *sync;
    useconds_t pause_us;
    int rc;
};

static void *finish_sync(void *arg)
{
    struct finisher *f = arg;
    struct herr err;
    usleep(f->pause_us);
    f->rc = journal_sync_finish(f->journal, f->sync, &err);
    return NULL;
}

static void finish_on_thread(struct finisher *f, pthread_t *thread)
{
    ck_assert_int_eq(pthread_create(thread, NULL, finish_sync, f), 0);
}

/* A sync in two halves: what is appended after journal_sync_start is not covered, readers
 * see nothing of the sync until journal_sync_finish (on another thread) publishes it, and
 * a roll-over to a new segment waits for a sync still running (else the finish would sync
 * a closed descriptor and publish into the next segment: an assertion). Everything reads
 * back, before and after a reopen. */
START_TEST(test_journal_sync_in_two_halves_across_threads)
{
    char dir[PATH_SIZE];
    make_tmpdir(dir);
    journal_t *journal = open_dir(dir, SEG_HDR + 3 * (REC_HDR + 10));
    struct herr err;
    journal_sync_t sync;
    append_record(journal, 1, 10);
    append_record(journal, 2, 10);
    ck_assert_int_eq(journal_sync_start(journal, &sync, &err), 0);
    ck_assert_uint_eq(sync.last_seq, 2);
    append_record(journal, 3, 10);
    ck_assert_uint_eq(journal_last_seq(journal), 0);
    expect_records(journal, 1, 1, 0, (struct collect){0});
    struct finisher f = {.journal = journal, .sync = &sync, .pause_us = 0, .rc = -1};
    pthread_t thread;
    finish_on_thread(&f, &thread);
    pthread_join(thread, NULL);
    ck_assert_int_eq(f.rc, 0);
    ck_assert_uint_eq(journal_last_seq(journal), 2);
    expect_records(journal, 1, 1, 2, (struct collect){0});

    ck_assert_int_eq(journal_sync_start(journal, &sync, &err), 0);
    ck_assert_uint_eq(sync.last_seq, 3);
    f = (struct finisher){.journal = journal, .sync = &sync, .pause_us = 30000, .rc = -1};
    finish_on_thread(&f, &thread);
    append_record(journal, 4, 10); /* the segment is full: rolls over, after the finish */
    ck_assert_uint_eq(journal_last_seq(journal), 3);
    pthread_join(thread, NULL);
    ck_assert_int_eq(f.rc, 0);
    sync_ok(journal);
    ck_assert_uint_eq(journal_last_seq(journal), 4);
    expect_records(journal, 1, 1, 4, (struct collect){0});
    journal_close(journal);
    journal = open_dir(dir, SEG_HDR + 3 * (REC_HDR + 10));
    expect_records(journal, 1, 1, 4, (struct collect){0});
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

/* ---- fixtures: one per corruption shape ---- */

enum outcome {
    OPENS,   /* a clean journal */
    CUT,     /* a torn or corrupt tail, cut with a warning */
    REMOVED, /* a last segment whose creation was cut short, removed with a warning */
    REFUSED, /* damage beyond a torn tail: journal_open fails */
};

static const struct fixture {
    const char *shape;
    enum outcome outcome;
    uint64_t last_seq; /* after open, unless REFUSED */
    uint64_t max_seq;  /* the seq holding a JOURNAL_MAX_RECORD_BYTES record; 0 for none */
    uint64_t segment;  /* first seq of the segment named in the warning or error */
    uint64_t bad_seq;  /* the record where it is cut or refused, or 0 to use offset */
    uint64_t offset;
    const char *reason;
} fixtures[] = {
    {"valid", OPENS, 7, 4, 0, 0, 0, NULL},
    {"foreign_files", OPENS, 3, 0, 0, 0, 0, NULL},
    {"empty_trailing", OPENS, 3, 0, 0, 0, 0, NULL},
    {"truncated_header", CUT, 5, 0, 1, 6, 0, "truncated record header (10 of 24 bytes)"},
    {"truncated_payload", CUT, 5, 0, 1, 6, 0, "truncated payload (111 of 222 bytes)"},
    {"bad_crc", CUT, 3, 0, 1, 4, 0, "bad CRC"},
    {"zeroed_tail", CUT, 3, 0, 1, 4, 0, "zeros where a record should be"},
    {"made_ahead_tail", CUT, 3, 0, 1, 4, 0, "zeros where a record should be"},
    {"over_limit", CUT, 5, 5, 1, 6, 0, "record length 65537 over the 65536-byte limit"},
    {"short_trailing", REMOVED, 3, 0, 4, 0, 0, ": 9 bytes"},
    {"zero_header_trailing", REMOVED, 3, 0, 4, 0, 0, ": 16 bytes"},
    {"torn_only_segment", REMOVED, 500, 0, 501, 0, 0, ": 5 bytes"},
    {"unknown_version", REFUSED, 0, 0, 1, 0, 8, "unknown format version 2"},
    {"bad_magic", REFUSED, 0, 0, 1, 0, 0, "bad magic"},
    {"seq_gap", REFUSED, 0, 0, 5, 0, 0, "starts at seq 5, but the segment before it ends at seq 3"},
    {"name_mismatch", REFUSED, 0, 0, 4, 0, 16, "record seq 5, expected 4"},
    {"seq_skip", REFUSED, 0, 0, 1, 3, 0, "record seq 4, expected 3"},
    {"older_bad_crc", REFUSED, 0, 0, 1, 2, 0, "bad CRC"},
    {"older_truncated", REFUSED, 0, 0, 1, 4, 0, "truncated record header (10 of 24 bytes)"},
    {"older_zeroed_tail", REFUSED, 0, 0, 1, 4, 0, "zeros where a record should be"},
};

#define FIXTURE_COUNT ((int)(sizeof(fixtures) / sizeof(fixtures[0])))

/* The offset of record seq in a fixture segment whose first record is first. */
static uint64_t fixture_offset(uint64_t seq, uint64_t first, uint64_t max_seq)
{
    uint64_t offset = SEG_HDR;
    for (uint64_t s = first; s < seq; s++) {
        offset += REC_HDR + fixture_len(s, max_seq);
    }
    return offset;
}

START_TEST(test_journal_fixture_shapes)
{
    const struct fixture *f = &fixtures[_i];
    const char *base = getenv("HEROLD_FIXTURES");
    char src[PATH_SIZE];
    char dir[PATH_SIZE];
    char named[PATH_SIZE];
    char fixtures_dir[PATH_SIZE];
    join(fixtures_dir, base != NULL ? base : JOURNAL_FIXTURE_DIR, "journal");
    join(src, fixtures_dir, f->shape);
    make_tmpdir(dir);
    copy_files(src, dir);
    char *before = list_segments(dir);
    seg_path(named, dir, f->segment);
    uint64_t offset =
        f->bad_seq != 0 ? fixture_offset(f->bad_seq, f->segment, f->max_seq) : f->offset;
    char where[PATH_SIZE + 64];

    struct capture capture;
    struct herr err;
    herr_clear(&err);
    journal_config_t config = {.dir = dir};
    capture_begin(&capture);
    journal_t *journal = journal_open(&config, &err);
    char *log = capture_end(&capture);

    switch (f->outcome) {
    case REFUSED: {
        ck_assert_msg(journal == NULL, "%s: opened", f->shape);
        ck_assert_int_eq(err.code, HEROLD_E_SYSTEM);
        snprintf(where, sizeof(where), "%s at offset %" PRIu64, named, offset);
        if (strstr(err.message, "damaged at offset") != NULL) {
            snprintf(where, sizeof(where), "%s damaged at offset %" PRIu64, named, offset);
        }
        ck_assert_msg(strstr(err.message, where) != NULL, "%s: '%s' lacks '%s'", f->shape,
                      err.message, where);
        ck_assert_msg(strstr(err.message, f->reason) != NULL, "%s: '%s' lacks '%s'", f->shape,
                      err.message, f->reason);
        /* Nothing was cut or removed. */
        char *after = list_segments(dir);
        ck_assert_str_eq(after, before);
        free(after);
        break;
    }
    case CUT:
        ck_assert_msg(journal != NULL, "%s: %s", f->shape, err.message);
        snprintf(where, sizeof(where), "journal: cut %s at offset %" PRIu64 ": %s", named, offset,
                 f->reason);
        ck_assert_msg(strstr(log, where) != NULL, "%s: log '%s' lacks '%s'", f->shape, log, where);
        ck_assert_uint_eq(file_size(named), offset);
        break;
    case REMOVED:
        ck_assert_msg(journal != NULL, "%s: %s", f->shape, err.message);
        snprintf(where, sizeof(where), "journal: removed %s%s", named, f->reason);
        ck_assert_msg(strstr(log, where) != NULL, "%s: log '%s' lacks '%s'", f->shape, log, where);
        /* Gone, or (when it was the only segment) replaced by a proper empty one. */
        if (file_exists(named)) {
            size_t len;
            unsigned char *header = read_file(named, &len);
            ck_assert_uint_eq(len, SEG_HDR);
            ck_assert_mem_eq(header, "HEROLDJ1\x01\0\0\0\0\0\0\0", SEG_HDR);
            free(header);
        }
        break;
    case OPENS:
        ck_assert_msg(journal != NULL, "%s: %s", f->shape, err.message);
        ck_assert_msg(strstr(log, "journal:") == NULL, "%s: unexpected log '%s'", f->shape, log);
        break;
    }
    free(log);
    free(before);
    if (journal == NULL) {
        remove_tree(dir);
        return;
    }

    /* What survived reads back whole, and appending continues with the next seq. */
    uint64_t last = f->last_seq;
    uint64_t first = strcmp(f->shape, "torn_only_segment") == 0 ? 0 : 1;
    ck_assert_uint_eq(journal_last_seq(journal), last);
    ck_assert_uint_eq(journal_first_seq(journal), first);
    struct collect rule = {.len_of = fixture_len, .len_param = f->max_seq};
    expect_records(journal, 0, first != 0 ? first : last + 1, last, rule);
    append_record(journal, last + 1, fixture_len(last + 1, f->max_seq));
    sync_ok(journal);
    journal_close(journal);

    capture_begin(&capture);
    journal = open_dir(dir, 0);
    log = capture_end(&capture);
    ck_assert_msg(strstr(log, "journal:") == NULL, "%s: reopen logged '%s'", f->shape, log);
    free(log);
    ck_assert_uint_eq(journal_last_seq(journal), last + 1);
    expect_records(journal, 0, first != 0 ? first : last + 1, last + 1, rule);
    journal_close(journal);

    char path[PATH_SIZE];
    if (strcmp(f->shape, "empty_trailing") == 0) {
        seg_path(path, dir, 4); /* the record went into the empty segment */
        ck_assert_uint_eq(file_size(path), SEG_HDR + REC_HDR + fixture_len(4, 0));
    }
    if (strcmp(f->shape, "foreign_files") == 0) {
        join(path, dir, "notes.txt");
        ck_assert(file_exists(path));
        join(path, dir, "00000000000000000009.seg.new");
        ck_assert(file_exists(path));
    }
    remove_tree(dir);
}
END_TEST

/* ---- crashes ---- */

/* A child appends, syncs the first K records, appends more without syncing and exits
 * without closing: the reopened journal holds at least the K records, as a gapless
 * prefix. _i = 0: small segments (rollovers sync); _i = 1: one segment with an unsynced
 * tail larger than the write buffer, so part of it went out with write(). */
START_TEST(test_journal_crash_without_close)
{
    char dir[PATH_SIZE];
    make_tmpdir(dir);
    uint64_t segment_bytes = _i == 0 ? 4096 : 0;
    uint64_t synced = _i == 0 ? 250 : 100;
    uint64_t total = _i == 0 ? 400 : 140;
    size_t big = 40000;

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        journal_config_t config = {.dir = dir, .segment_bytes = segment_bytes};
        journal_t *journal = journal_open(&config, NULL);
        static unsigned char buf[MAX_REC];
        if (journal == NULL) {
            _exit(2);
        }
        for (uint64_t seq = 1; seq <= total; seq++) {
            size_t len = seq <= synced || _i == 0 ? small_len(seq, 0) : big;
            fill_payload(buf, seq, len);
            if (journal_append(journal, buf, len, time_for(seq), NULL, NULL) != 0) {
                _exit(3);
            }
            if (seq == synced && journal_sync(journal, NULL) != 0) {
                _exit(4);
            }
        }
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);

    journal_t *journal = open_dir(dir, segment_bytes);
    uint64_t last = journal_last_seq(journal);
    ck_assert_uint_ge(last, synced);
    ck_assert_uint_le(last, total);
    if (_i == 1) {
        ck_assert_uint_gt(last, synced); /* what write() put out survived the exit */
    }
    if (_i == 0) {
        expect_records(journal, 1, 1, last, (struct collect){.len_of = small_len});
    } else {
        expect_records(journal, 1, 1, synced,
                       (struct collect){.len_of = small_len, .stop_after = (size_t)synced});
        expect_records(journal, synced + 1, synced + 1, last, (struct collect){0});
    }
    append_record(journal, last + 1, 3);
    sync_ok(journal);
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

/* Builds a journal of count records with small_len lengths in dir, closed. Fills
 * offsets[seq] with each record's offset (offsets[count + 1] = the file size). */
static void build_small_journal(const char *dir, uint64_t count, uint64_t *offsets)
{
    journal_t *journal = open_dir(dir, 0);
    offsets[1] = SEG_HDR;
    for (uint64_t seq = 1; seq <= count; seq++) {
        append_record(journal, seq, small_len(seq, 0));
        offsets[seq + 1] = offsets[seq] + REC_HDR + small_len(seq, 0);
    }
    journal_close(journal);
}

/* Every possible torn tail after the first K records: cut at the last whole record. */
START_TEST(test_journal_torn_tail_at_every_offset)
{
    enum { COUNT = 12, KEPT = 9 };
    uint64_t offsets[COUNT + 2];
    char a[PATH_SIZE];
    char b[PATH_SIZE];
    char path[PATH_SIZE];
    char copy[PATH_SIZE];
    make_tmpdir(a);
    make_tmpdir(b);
    build_small_journal(a, COUNT, offsets);
    seg_path(path, a, 1);
    seg_path(copy, b, 1);
    size_t len;
    unsigned char *data = read_file(path, &len);
    ck_assert_uint_eq(len, offsets[COUNT + 1]);

    for (uint64_t cut = offsets[KEPT + 1]; cut <= len; cut++) {
        write_file(copy, data, (size_t)cut);
        uint64_t whole = 0;
        while (whole < COUNT && offsets[whole + 2] <= cut) {
            whole++;
        }
        struct capture capture;
        capture_begin(&capture);
        journal_t *journal = open_dir(b, 0);
        char *log = capture_end(&capture);
        ck_assert_uint_eq(journal_last_seq(journal), whole);
        ck_assert_uint_ge(whole, KEPT);
        if (cut == offsets[whole + 1]) {
            ck_assert_msg(strstr(log, "journal: cut") == NULL, "cut at %" PRIu64 ": %s", cut, log);
        } else {
            char want[PATH_SIZE + 64];
            snprintf(want, sizeof(want), "journal: cut %s at offset %" PRIu64 ": ", copy,
                     offsets[whole + 1]);
            ck_assert_msg(strstr(log, want) != NULL, "cut at %" PRIu64 ": '%s' lacks '%s'", cut,
                          log, want);
        }
        free(log);
        ck_assert_uint_eq(file_size(copy), offsets[whole + 1]);
        expect_records(journal, 1, 1, whole, (struct collect){.len_of = small_len});
        journal_close(journal);
    }
    free(data);
    remove_tree(a);
    remove_tree(b);
}
END_TEST

/* A flipped bit anywhere in the last record — length, CRC, seq, time or payload — is
 * caught and the record cut: the CRC covers every field but itself. */
START_TEST(test_journal_bit_flip_in_last_record)
{
    enum { COUNT = 6 };
    uint64_t offsets[COUNT + 2];
    char a[PATH_SIZE];
    char b[PATH_SIZE];
    char path[PATH_SIZE];
    char copy[PATH_SIZE];
    make_tmpdir(a);
    make_tmpdir(b);
    build_small_journal(a, COUNT, offsets);
    seg_path(path, a, 1);
    seg_path(copy, b, 1);
    size_t len;
    unsigned char *data = read_file(path, &len);
    uint64_t start = offsets[COUNT];
    ck_assert_uint_gt(len - start, REC_HDR); /* the last record has a payload */
    char want[PATH_SIZE + 64];
    snprintf(want, sizeof(want), "journal: cut %s at offset %" PRIu64 ": ", copy, start);

    for (uint64_t at = start; at < len; at++) {
        for (int bit = 0; bit < 8; bit++) {
            if (at >= start + REC_HDR && bit != (int)(at % 8)) {
                continue; /* one bit per payload byte, every bit of the header */
            }
            data[at] ^= (unsigned char)(1u << bit);
            write_file(copy, data, len);
            data[at] ^= (unsigned char)(1u << bit);
            struct capture capture;
            capture_begin(&capture);
            journal_t *journal = open_dir(b, 0);
            char *log = capture_end(&capture);
            ck_assert_msg(journal_last_seq(journal) == COUNT - 1, "bit %d of byte %" PRIu64, bit,
                          at - start);
            ck_assert_msg(strstr(log, want) != NULL, "bit %d of byte %" PRIu64 ": '%s'", bit,
                          at - start, log);
            free(log);
            journal_close(journal);
        }
    }
    free(data);
    remove_tree(a);
    remove_tree(b);
}
END_TEST

/* The files of a journal still open, copied as they are: what a crash would leave if the
 * page cache survived. At least the synced records, as a gapless prefix. */
START_TEST(test_journal_copy_files_without_close)
{
    enum { SYNCED = 30, BIG = 40000, MORE = 30 };
    char a[PATH_SIZE];
    char b[PATH_SIZE];
    make_tmpdir(a);
    make_tmpdir(b);
    journal_t *journal = open_dir(a, 0);
    for (uint64_t seq = 1; seq <= SYNCED; seq++) {
        append_record(journal, seq, small_len(seq, 0));
    }
    sync_ok(journal);
    for (uint64_t seq = SYNCED + 1; seq <= SYNCED + MORE; seq++) {
        append_record(journal, seq, BIG);
    }
    ck_assert_uint_eq(journal_last_seq(journal), SYNCED);
    copy_files(a, b);

    journal_t *copy = open_dir(b, 0);
    uint64_t last = journal_last_seq(copy);
    ck_assert_uint_gt(last, SYNCED); /* a full buffer had gone out with write() */
    ck_assert_uint_le(last, SYNCED + MORE);
    expect_records(copy, 1, 1, SYNCED, (struct collect){.len_of = small_len, .stop_after = SYNCED});
    struct collect tail = {0};
    read_ok(copy, SYNCED + 1, &tail);
    ck_assert_uint_eq(tail.count, last - SYNCED);
    ck_assert_uint_eq(tail.first, SYNCED + 1);
    journal_close(copy);

    journal_close(journal);
    journal = open_dir(a, 0);
    ck_assert_uint_eq(journal_last_seq(journal), SYNCED + MORE);
    journal_close(journal);
    remove_tree(a);
    remove_tree(b);
}
END_TEST

/* ---- segments made ahead ---- */

#define AHEAD_SEGMENT_BYTES (256 * 1024)
#define AHEAD_RECORD_BYTES 1000

static size_t ahead_len(uint64_t seq, uint64_t unused)
{
    (void)seq;
    (void)unused;
    return AHEAD_RECORD_BYTES;
}

/* Appends and syncs records from *seq on until the current segment is one made ahead (it
 * is asked for at half of the segment, and made by the journal's thread meanwhile). */
static void append_until_made_ahead(journal_t *journal, uint64_t *seq)
{
    for (int i = 0; i < 5000 && !journal_is_preallocated(journal); i++) {
        append_record(journal, (*seq)++, AHEAD_RECORD_BYTES);
        sync_ok(journal);
        if (i > 100) {
            usleep(1000); /* past half of the segment: give the thread time */
        }
    }
    ck_assert_msg(journal_is_preallocated(journal), "no segment made ahead after seq %" PRIu64,
                  *seq - 1);
}

/* How many segment files of dir have this size. */
static size_t segments_sized(const char *dir, uint64_t size)
{
    char *list = list_segments(dir);
    char suffix[32];
    snprintf(suffix, sizeof(suffix), ":%" PRIu64 "\n", size);
    size_t count = 0;
    for (const char *p = strstr(list, suffix); p != NULL; p = strstr(p + 1, suffix)) {
        count++;
    }
    free(list);
    return count;
}

START_TEST(test_journal_segments_made_ahead)
{
    char dir[PATH_SIZE];
    char made_ahead[PATH_SIZE];
    make_tmpdir(dir);
    join(made_ahead, dir, "next-segment.tmp");
    journal_config_t config = {
        .dir = dir, .segment_bytes = AHEAD_SEGMENT_BYTES, .preallocate = true};
    journal_t *journal = open_config(&config);
    ck_assert(!journal_is_preallocated(journal)); /* a new journal's first segment */
    uint64_t seq = 1;

    /* The first segment ends as soon as one made ahead is ready, which has the full size,
     * zeros past its records. */
    append_until_made_ahead(journal, &seq);
    uint64_t second = seq - 1;
    char path[PATH_SIZE];
    seg_path(path, dir, second);
    ck_assert_msg(file_exists(path), "the made-ahead segment is not %" PRIu64, second);
    ck_assert_uint_eq(file_size(path), AHEAD_SEGMENT_BYTES);
    ck_assert_uint_eq(segments_sized(dir, AHEAD_SEGMENT_BYTES), 1);

    /* It fills up; the next one was made ahead meanwhile, and the full one is cut to its
     * records when it ends. */
    uint64_t third = 0;
    while (third == 0) {
        append_record(journal, seq, AHEAD_RECORD_BYTES);
        sync_ok(journal);
        seg_path(path, dir, seq);
        if (file_exists(path)) {
            third = seq;
        }
        seq++;
        ck_assert_uint_lt(seq, 2000);
        usleep(200);
    }
    ck_assert(journal_is_preallocated(journal));
    seg_path(path, dir, second);
    ck_assert_uint_eq(file_size(path), SEG_HDR + (third - second) * (REC_HDR + AHEAD_RECORD_BYTES));
    seg_path(path, dir, third);
    ck_assert_uint_eq(file_size(path), AHEAD_SEGMENT_BYTES);
    expect_records(journal, 1, 1, seq - 1, (struct collect){.len_of = ahead_len});

    /* Closing cuts the current one to its records and removes the one made ahead. */
    journal_close(journal);
    ck_assert_uint_eq(file_size(path), SEG_HDR + (seq - third) * (REC_HDR + AHEAD_RECORD_BYTES));
    ck_assert(!file_exists(made_ahead));
    ck_assert_uint_eq(segments_sized(dir, AHEAD_SEGMENT_BYTES), 0);

    config.preallocate = false;
    journal = open_config(&config);
    ck_assert_uint_eq(journal_last_seq(journal), seq - 1);
    expect_records(journal, 1, 1, seq - 1, (struct collect){.len_of = ahead_len});
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

/* A crash while the current segment was made ahead leaves it at full size, zeros past its
 * synced records (and maybe a next one made ahead, whole or not): everything synced is read
 * back, the zeros are cut, and the journal goes on from there. */
START_TEST(test_journal_crash_in_segment_made_ahead)
{
    char a[PATH_SIZE];
    char b[PATH_SIZE];
    make_tmpdir(a);
    make_tmpdir(b);
    journal_config_t config = {.dir = a, .segment_bytes = AHEAD_SEGMENT_BYTES, .preallocate = true};
    journal_t *journal = open_config(&config);
    uint64_t seq = 1;
    append_until_made_ahead(journal, &seq);
    uint64_t current = seq - 1;
    for (int i = 0; i < 20; i++) {
        append_record(journal, seq++, AHEAD_RECORD_BYTES);
    }
    sync_ok(journal);
    uint64_t synced = seq - 1;
    append_record(journal, seq++, AHEAD_RECORD_BYTES); /* in the buffer only */
    copy_files(a, b);
    char leftover[PATH_SIZE];
    join(leftover, b, "next-segment.tmp");
    write_file(leftover, "partial", 7); /* as a crash while making it would leave it */

    struct capture capture;
    capture_begin(&capture);
    config.dir = b;
    journal_t *copy = open_config(&config);
    char *log = capture_end(&capture);
    char path[PATH_SIZE];
    seg_path(path, b, current);
    uint64_t records_end = SEG_HDR + (synced - current + 1) * (REC_HDR + AHEAD_RECORD_BYTES);
    char where[PATH_SIZE + 128];
    snprintf(where, sizeof(where), "journal: cut %s at offset %" PRIu64 ": zeros where a record",
             path, records_end);
    ck_assert_msg(strstr(log, where) != NULL, "log '%s' lacks '%s'", log, where);
    free(log);
    ck_assert_uint_eq(file_size(path), records_end);
    ck_assert(!journal_is_preallocated(copy));
    ck_assert(!file_exists(leftover) || file_size(leftover) != 7);
    ck_assert_uint_eq(journal_last_seq(copy), synced);
    expect_records(copy, 1, 1, synced, (struct collect){.len_of = ahead_len});
    append_record(copy, synced + 1, AHEAD_RECORD_BYTES);
    sync_ok(copy);
    journal_close(copy);
    config.preallocate = false;
    copy = open_config(&config);
    expect_records(copy, 1, 1, synced + 1, (struct collect){.len_of = ahead_len});
    journal_close(copy);

    journal_close(journal);
    remove_tree(a);
    remove_tree(b);
}
END_TEST

/* A write that fails (here: the file size limit) is fatal and sticky: every later append
 * and sync is refused, nothing becomes visible, and recovery cuts the torn write. */
START_TEST(test_journal_write_failure_is_sticky)
{
    enum { LEN = 1000 };
    char dir[PATH_SIZE];
    make_tmpdir(dir);
    journal_t *journal = open_dir(dir, 0);
    for (uint64_t seq = 1; seq <= 10; seq++) {
        append_record(journal, seq, LEN);
    }
    struct rlimit saved;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, SIG_IGN);
    uint64_t limit = SEG_HDR + 3 * (REC_HDR + LEN) + 500;
    struct rlimit small = {.rlim_cur = limit, .rlim_max = saved.rlim_max};
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    struct herr sync_err;
    struct herr append_err;
    struct herr again_err;
    herr_clear(&sync_err);
    herr_clear(&append_err);
    herr_clear(&again_err);
    struct capture capture;
    capture_begin(&capture);
    int sync_rc = journal_sync(journal, &sync_err);
    int append_rc = journal_append(journal, "x", 1, time_for(11), NULL, &append_err);
    int again_rc = journal_sync(journal, &again_err);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    char *log = capture_end(&capture);

    ck_assert_int_eq(sync_rc, HEROLD_E_SYSTEM);
    ck_assert_ptr_nonnull(strstr(sync_err.message, "write("));
    ck_assert_ptr_nonnull(strstr(sync_err.message, "failed"));
    ck_assert_ptr_nonnull(strstr(log, sync_err.message));
    free(log);
    ck_assert_int_eq(append_rc, HEROLD_E_SYSTEM);
    ck_assert_int_eq(again_rc, HEROLD_E_SYSTEM);
    ck_assert_uint_eq(journal_last_seq(journal), 0);
    expect_records(journal, 1, 1, 0, (struct collect){0});
    journal_close(journal);

    journal = open_dir(dir, 0);
    ck_assert_uint_eq(journal_last_seq(journal), 3);
    size_t lens[4] = {0, LEN, LEN, LEN};
    expect_records(journal, 1, 1, 3, (struct collect){.lens = lens});
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

/* ---- retention ---- */

enum { TRIM_LEN = 100, TRIM_SEGMENT = SEG_HDR + 2 * (REC_HDR + TRIM_LEN) };

/* Ten records of TRIM_LEN bytes, two per segment: segments 1, 3, 5, 7, 9. */
static void build_trim_journal(const char *dir)
{
    journal_t *journal = open_dir(dir, TRIM_SEGMENT);
    for (uint64_t seq = 1; seq <= 10; seq++) {
        append_record(journal, seq, TRIM_LEN);
    }
    sync_ok(journal);
    ck_assert_uint_eq(journal_size_bytes(journal), 5 * TRIM_SEGMENT);
    journal_close(journal);
}

static journal_t *open_retention(const char *dir, uint64_t retention_bytes, int64_t retention_ms)
{
    journal_config_t config = {.dir = dir,
                               .segment_bytes = TRIM_SEGMENT,
                               .retention_bytes = retention_bytes,
                               .retention_ms = retention_ms};
    return open_config(&config);
}

START_TEST(test_journal_trim_by_bytes)
{
    char dir[PATH_SIZE];
    char path[PATH_SIZE];
    make_tmpdir(dir);
    build_trim_journal(dir);
    int64_t now = time_for(10);

    journal_t *journal = open_retention(dir, 5 * TRIM_SEGMENT, 0);
    ck_assert_uint_eq(journal_trim(journal, now), 0);
    ck_assert_uint_eq(journal_first_seq(journal), 1);
    journal_close(journal);

    journal = open_retention(dir, 5 * TRIM_SEGMENT - 1, 0);
    ck_assert_uint_eq(journal_trim(journal, now), 1);
    ck_assert_uint_eq(journal_first_seq(journal), 3);
    ck_assert_uint_eq(journal_last_seq(journal), 10);
    ck_assert_uint_eq(journal_size_bytes(journal), 4 * TRIM_SEGMENT);
    seg_path(path, dir, 1);
    ck_assert(!file_exists(path));
    struct herr err;
    herr_clear(&err);
    struct collect c = {0};
    ck_assert_int_eq(journal_read(journal, 1, collect_fn, &c, &err), HEROLD_E_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(err.message, "first retained seq 3"));
    ck_assert_int_eq(journal_read(journal, 2, collect_fn, &c, &err), HEROLD_E_NOT_FOUND);
    ck_assert_uint_eq(c.count, 0);
    expect_records(journal, 3, 3, 10, (struct collect){0});
    expect_records(journal, 0, 3, 10, (struct collect){0});
    ck_assert_uint_eq(journal_trim(journal, now), 0);
    journal_close(journal);

    /* Everything but the current segment. */
    journal = open_retention(dir, 1, 0);
    ck_assert_uint_eq(journal_trim(journal, now), 3);
    ck_assert_uint_eq(journal_first_seq(journal), 9);
    ck_assert_uint_eq(journal_size_bytes(journal), TRIM_SEGMENT);
    journal_close(journal);

    journal = open_retention(dir, 1, 0);
    ck_assert_uint_eq(journal_first_seq(journal), 9);
    ck_assert_uint_eq(journal_last_seq(journal), 10);
    append_record(journal, 11, TRIM_LEN);
    sync_ok(journal);
    expect_records(journal, 9, 9, 11, (struct collect){0});
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

/* With preallocate the journal's own thread removes trimmed segments: the journal drops
 * them at once, their files go without another call, and closing removes what is left. */
START_TEST(test_journal_trimmed_segments_are_removed_by_the_journals_thread)
{
    char dir[PATH_SIZE];
    char path[PATH_SIZE];
    make_tmpdir(dir);
    build_trim_journal(dir);
    int64_t now = time_for(10);
    journal_config_t config = {.dir = dir,
                               .segment_bytes = TRIM_SEGMENT,
                               .retention_bytes = 3 * TRIM_SEGMENT,
                               .preallocate = true};
    journal_t *journal = open_config(&config);
    ck_assert_uint_eq(journal_trim(journal, now), 2);
    ck_assert_uint_eq(journal_first_seq(journal), 5);
    expect_records(journal, 0, 5, 10, (struct collect){0});
    for (int i = 0; i < 500; i++) {
        seg_path(path, dir, 3);
        if (!file_exists(path)) {
            break;
        }
        usleep(10 * 1000);
    }
    seg_path(path, dir, 1);
    ck_assert(!file_exists(path));
    seg_path(path, dir, 3);
    ck_assert_msg(!file_exists(path), "segment 3 still there 5 s after the trim");
    journal_close(journal);

    config.retention_bytes = 1;
    journal = open_config(&config);
    ck_assert_uint_eq(journal_trim(journal, now), 2);
    journal_close(journal);
    for (uint64_t first = 5; first <= 9; first += 2) {
        seg_path(path, dir, first);
        ck_assert_msg(file_exists(path) == (first == 9), "segment %" PRIu64, first);
    }
    journal = open_config(&config);
    ck_assert_uint_eq(journal_first_seq(journal), 9);
    expect_records(journal, 0, 9, 10, (struct collect){0});
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

START_TEST(test_journal_trim_by_age)
{
    char dir[PATH_SIZE];
    make_tmpdir(dir);
    build_trim_journal(dir);
    int64_t retention = 5000;
    journal_t *journal = open_retention(dir, 0, retention);
    /* Segment 1's newest record is seq 2: exactly retention old is kept, 1 ms more is not. */
    ck_assert_uint_eq(journal_trim(journal, time_for(2) + retention), 0);
    ck_assert_uint_eq(journal_trim(journal, time_for(2) + retention + 1), 1);
    ck_assert_uint_eq(journal_first_seq(journal), 3);
    ck_assert_uint_eq(journal_trim(journal, time_for(4) + retention), 0);
    /* Oldest first, up to the first segment still inside retention. */
    ck_assert_uint_eq(journal_trim(journal, time_for(6) + retention + 1), 2);
    ck_assert_uint_eq(journal_first_seq(journal), 7);
    /* A clock far before the records, where now - retention overflows: nothing is old. */
    ck_assert_uint_eq(journal_trim(journal, INT64_MIN), 0);
    /* Far later: everything but the current segment. */
    ck_assert_uint_eq(journal_trim(journal, INT64_MAX), 1);
    ck_assert_uint_eq(journal_first_seq(journal), 9);
    ck_assert_uint_eq(journal_trim(journal, INT64_MAX), 0);
    expect_records(journal, 9, 9, 10, (struct collect){0});
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

/* Trimming everything before the current segment while it is not yet synced leaves no
 * durable record: first_seq is 0, and the trimmed seqs are gone. */
START_TEST(test_journal_first_seq_zero_when_nothing_retained)
{
    char dir[PATH_SIZE];
    char copy[PATH_SIZE];
    make_tmpdir(dir);
    make_tmpdir(copy);
    journal_t *journal = open_dir(dir, SEG_HDR + REC_HDR + 10);
    append_record(journal, 1, 10);
    sync_ok(journal);
    append_record(journal, 2, 10); /* a new segment; syncs record 1 */
    ck_assert_uint_eq(journal_trim(journal, INT64_MAX), 1);
    ck_assert_uint_eq(journal_first_seq(journal), 0);
    ck_assert_uint_eq(journal_last_seq(journal), 1);
    struct herr err;
    struct collect c = {0};
    ck_assert_int_eq(journal_read(journal, 1, collect_fn, &c, &err), HEROLD_E_NOT_FOUND);
    expect_records(journal, 2, 2, 1, (struct collect){0});
    expect_records(journal, 0, 2, 1, (struct collect){0});

    /* A crash now leaves one empty segment named 2: numbering goes on from there. */
    copy_files(dir, copy);
    journal_t *recovered = open_dir(copy, 0);
    ck_assert_uint_eq(journal_first_seq(recovered), 0);
    ck_assert_uint_eq(journal_last_seq(recovered), 1);
    append_record(recovered, 2, 4);
    sync_ok(recovered);
    ck_assert_uint_eq(journal_first_seq(recovered), 2);
    journal_close(recovered);

    sync_ok(journal);
    ck_assert_uint_eq(journal_first_seq(journal), 2);
    ck_assert_uint_eq(journal_last_seq(journal), 2);
    expect_records(journal, 0, 2, 2, (struct collect){0});
    journal_close(journal);
    remove_tree(dir);
    remove_tree(copy);
}
END_TEST

/* A trim that deletes segments a long read has not reached ends that read with NOT_FOUND
 * after what it delivered; the segment it was in stays readable to the end. */
START_TEST(test_journal_read_overtaken_by_trim)
{
    char dir[PATH_SIZE];
    make_tmpdir(dir);
    build_trim_journal(dir);
    journal_t *journal = open_retention(dir, 0, 0);
    struct collect c = {.trim = journal};
    struct herr err;
    herr_clear(&err);
    ck_assert_int_eq(journal_read(journal, 1, collect_fn, &c, &err), HEROLD_E_NOT_FOUND);
    ck_assert_uint_eq(c.trimmed, 4);
    ck_assert_uint_eq(c.count, 2);
    ck_assert_uint_eq(c.last, 2);
    ck_assert_str_eq(c.problem, "");
    ck_assert_ptr_nonnull(strstr(err.message, "seq 3 is no longer retained"));
    expect_records(journal, 0, 9, 10, (struct collect){0});
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

/* ---- a reader racing the writer ---- */

struct race {
    journal_t *journal;
    uint64_t total;
    bool strict; /* no rollover: a reader never sees past the last sync's start */
    _Atomic uint64_t appended;
    _Atomic uint64_t sync_started;
    atomic_size_t reads_done;
    atomic_bool reader_stopped;
    atomic_bool done;
    char problem[256];
    size_t reads;
};

/* With bursts, seqs 1 to 20 of every 400 are large, and the writer appends them in one
 * batch: more than the write buffer holds, so part of it is written before the sync. */
enum { RACE_BURST = 400, RACE_BURST_RECORDS = 20, RACE_BIG = 60000 };

static bool race_in_burst(uint64_t seq)
{
    return seq % RACE_BURST >= 1 && seq % RACE_BURST <= RACE_BURST_RECORDS;
}

static size_t race_len(uint64_t seq, uint64_t bursts)
{
    return bursts != 0 && race_in_burst(seq) ? RACE_BIG : (size_t)(seq * 131 % 700);
}

__attribute__((format(printf, 2, 3))) static void race_fail(struct race *race, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(race->problem, sizeof(race->problem), fmt, ap);
    va_end(ap);
}

static void *race_writer(void *arg)
{
    struct race *race = arg;
    static unsigned char buf[MAX_REC];
    uint64_t rng = 7;
    uint64_t seq = 1;
    while (seq <= race->total) {
        uint64_t batch = 1 + xorshift(&rng) % 40;
        if (race->strict) {
            /* A burst is one batch; other batches end before the next burst. */
            uint64_t to_burst = (RACE_BURST + 1 - seq % RACE_BURST) % RACE_BURST;
            batch = to_burst == 0 ? RACE_BURST_RECORDS : (batch < to_burst ? batch : to_burst);
        }
        for (uint64_t k = 0; k < batch && seq <= race->total; k++, seq++) {
            size_t len = race_len(seq, race->strict);
            fill_payload(buf, seq, len);
            if (journal_append(race->journal, buf, len, time_for(seq), NULL, NULL) != 0) {
                race_fail(race, "append %" PRIu64 " failed", seq);
                atomic_store(&race->done, true);
                return NULL;
            }
            atomic_store(&race->appended, seq);
        }
        if (race->strict && race_in_burst(seq - 1)) {
            /* Part of the burst went out with write() and none of it is synced: let the
             * reader finish two reads now, so that one surely ran entirely in this window. */
            size_t target = atomic_load(&race->reads_done) + 2;
            while (atomic_load(&race->reads_done) < target && !atomic_load(&race->reader_stopped)) {
                sched_yield();
            }
        }
        atomic_store(&race->sync_started, seq - 1);
        if (journal_sync(race->journal, NULL) != 0) {
            race_fail(race, "sync failed");
            break;
        }
    }
    atomic_store(&race->done, true);
    return NULL;
}

static void race_reader_loop(struct race *race);

static void *race_reader(void *arg)
{
    struct race *race = arg;
    race_reader_loop(race);
    atomic_store(&race->reader_stopped, true);
    return NULL;
}

static void race_reader_loop(struct race *race)
{
    uint64_t rng = 11;
    uint64_t seen = 0;
    for (;;) {
        bool finished = atomic_load(&race->done);
        uint64_t durable = journal_last_seq(race->journal);
        uint64_t from = race->reads % 2 == 0 ? 1 : 1 + xorshift(&rng) % (durable + 1);
        struct collect c = {.len_of = race_len, .len_param = race->strict};
        struct herr err;
        herr_clear(&err);
        int rc = journal_read(race->journal, from, collect_fn, &c, &err);
        uint64_t bound =
            race->strict ? atomic_load(&race->sync_started) : atomic_load(&race->appended);
        race->reads++;
        atomic_fetch_add(&race->reads_done, 1);
        if (rc != 0) {
            race_fail(race, "read from %" PRIu64 ": %s", from, err.message);
        } else if (c.problem[0] != '\0') {
            race_fail(race, "read from %" PRIu64 ": %s", from, c.problem);
        } else if (c.count > 0 && c.first != from) {
            race_fail(race, "read from %" PRIu64 " began at %" PRIu64, from, c.first);
        } else if (from <= durable && (c.count == 0 || c.last < durable)) {
            snprintf(race->problem, sizeof(race->problem),
                     "read from %" PRIu64 " ended at %" PRIu64 ", before durable %" PRIu64, from,
                     c.last, durable);
        } else if (c.count > 0 && c.last > bound) {
            snprintf(race->problem, sizeof(race->problem),
                     "saw seq %" PRIu64 ", past %" PRIu64 " (not yet synced)", c.last, bound);
        } else if (from == 1 && c.last < seen) {
            race_fail(race, "saw %" PRIu64 " after %" PRIu64, c.last, seen);
        }
        if (race->problem[0] != '\0') {
            return;
        }
        if (from == 1) {
            seen = c.last;
            if (finished) {
                if (seen != race->total) {
                    snprintf(race->problem, sizeof(race->problem),
                             "the last read saw %" PRIu64 " of %" PRIu64, seen, race->total);
                }
                return;
            }
        }
    }
}

/* _i = 0: one large segment and bursts over the write buffer; _i = 1: small segments. */
START_TEST(test_journal_concurrent_reader_sees_gapless_prefix)
{
    char dir[PATH_SIZE];
    make_tmpdir(dir);
    struct race race = {.total = _i == 0 ? 1600 : 2500, .strict = _i == 0};
    race.journal = open_dir(dir, _i == 0 ? 0 : 8192);
    pthread_t writer;
    pthread_t reader;
    ck_assert_int_eq(pthread_create(&reader, NULL, race_reader, &race), 0);
    ck_assert_int_eq(pthread_create(&writer, NULL, race_writer, &race), 0);
    pthread_join(writer, NULL);
    pthread_join(reader, NULL);
    ck_assert_msg(race.problem[0] == '\0', "%s (after %zu reads)", race.problem, race.reads);
    ck_assert_uint_gt(race.reads, 1);
    ck_assert_uint_eq(journal_last_seq(race.journal), race.total);
    journal_close(race.journal);
    remove_tree(dir);
}
END_TEST

/* ---- opening ---- */

START_TEST(test_journal_second_open_refused)
{
    char dir[PATH_SIZE];
    make_tmpdir(dir);
    journal_t *journal = open_dir(dir, 0);
    journal_config_t config = {.dir = dir};
    struct herr err;
    herr_clear(&err);
    ck_assert_ptr_null(journal_open(&config, &err));
    ck_assert_int_eq(err.code, HEROLD_E_UNAVAILABLE);
    ck_assert_ptr_nonnull(strstr(err.message, dir));
    journal_close(journal);
    journal = open_dir(dir, 0);
    journal_close(journal);
    remove_tree(dir);
}
END_TEST

START_TEST(test_journal_open_refuses_bad_config)
{
    char tmp[PATH_SIZE];
    char file[PATH_SIZE];
    char below[PATH_SIZE];
    make_tmpdir(tmp);
    struct herr err;
    herr_clear(&err);
    ck_assert_ptr_null(journal_open(NULL, &err));
    ck_assert_int_eq(err.code, HEROLD_E_CONFIG);
    journal_config_t config = {0};
    ck_assert_ptr_null(journal_open(&config, &err));
    ck_assert_int_eq(err.code, HEROLD_E_CONFIG);
    config.dir = "";
    ck_assert_ptr_null(journal_open(&config, &err));
    ck_assert_int_eq(err.code, HEROLD_E_CONFIG);

    config.dir = tmp;
    config.retention_ms = -1;
    ck_assert_ptr_null(journal_open(&config, &err));
    ck_assert_int_eq(err.code, HEROLD_E_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.message, "retention_ms -1"));
    config.retention_ms = 1;
    journal_close(open_config(&config));

    join(file, tmp, "a-file");
    write_file(file, "x", 1);
    config.dir = file;
    ck_assert_ptr_null(journal_open(&config, &err));
    ck_assert_int_eq(err.code, HEROLD_E_SYSTEM);
    ck_assert_ptr_nonnull(strstr(err.message, file));
    join(below, tmp, "a-file/journal");
    config.dir = below;
    ck_assert_ptr_null(journal_open(&config, &err));
    ck_assert_int_eq(err.code, HEROLD_E_SYSTEM);
    ck_assert_ptr_nonnull(strstr(err.message, "mkdir"));

    journal_close(NULL);
    remove_tree(tmp);
}
END_TEST

static Suite *journal_suite(void)
{
    Suite *s = suite_create("journal");
    TCase *crc = tcase_create("crc32c");
    tcase_add_test(crc, test_journal_crc32c_known_vectors);
    tcase_add_test(crc, test_journal_crc32c_paths_agree_on_random_buffers);
    suite_add_tcase(s, crc);

    TCase *basic = tcase_create("append_read");
    tcase_set_timeout(basic, 60);
    tcase_add_test(basic, test_journal_new_journal_creates_directory_and_first_segment);
    tcase_add_test(basic, test_journal_record_layout_on_disk);
    tcase_add_test(basic, test_journal_round_trip_varied_sizes);
    tcase_add_test(basic, test_journal_refuses_record_over_limit);
    tcase_add_test(basic, test_journal_seq_continues_after_reopen);
    tcase_add_test(basic, test_journal_sync_with_nothing_appended);
    tcase_add_loop_test(basic, test_journal_rollover_at_segment_bytes, 0, 2);
    tcase_add_test(basic, test_journal_big_record_gets_own_segment);
    tcase_add_test(basic, test_journal_rollover_read_across_segments);
    tcase_add_test(basic, test_journal_read_from_start_middle_and_past_end);
    tcase_add_test(basic, test_journal_read_seeks_inside_large_segment);
    tcase_add_test(basic, test_journal_read_sees_only_synced_records);
    tcase_add_test(basic, test_journal_sync_in_two_halves_across_threads);
    tcase_add_test(basic, test_journal_second_open_refused);
    tcase_add_test(basic, test_journal_open_refuses_bad_config);
    suite_add_tcase(s, basic);

    TCase *recovery = tcase_create("recovery");
    tcase_set_timeout(recovery, 60);
    tcase_add_loop_test(recovery, test_journal_fixture_shapes, 0, FIXTURE_COUNT);
    tcase_add_loop_test(recovery, test_journal_crash_without_close, 0, 2);
    tcase_add_test(recovery, test_journal_torn_tail_at_every_offset);
    tcase_add_test(recovery, test_journal_bit_flip_in_last_record);
    tcase_add_test(recovery, test_journal_copy_files_without_close);
    tcase_add_test(recovery, test_journal_segments_made_ahead);
    tcase_add_test(recovery, test_journal_crash_in_segment_made_ahead);
    tcase_add_test(recovery, test_journal_write_failure_is_sticky);
    suite_add_tcase(s, recovery);

    TCase *retention = tcase_create("retention");
    tcase_set_timeout(retention, 60);
    tcase_add_test(retention, test_journal_trim_by_bytes);
    tcase_add_test(retention, test_journal_trim_by_age);
    tcase_add_test(retention, test_journal_trimmed_segments_are_removed_by_the_journals_thread);
    tcase_add_test(retention, test_journal_first_seq_zero_when_nothing_retained);
    tcase_add_test(retention, test_journal_read_overtaken_by_trim);
    tcase_add_loop_test(retention, test_journal_concurrent_reader_sees_gapless_prefix, 0, 2);
    suite_add_tcase(s, retention);
    return s;
}

int main(void)
{
    SRunner *runner = srunner_create(journal_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failures = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failures ? 1 : 0;
}
