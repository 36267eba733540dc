/*
 * bench/journal_append: the cost of the group commit batch size. The claim under test
 * (journal.h): one journal_sync covers every record appended since the last one, so the
 * cost of durability is paid per batch, not per record.
 *
 * For each batch size B it appends N records of S bytes to a fresh journal, calling
 * journal_sync after every B records (and once at the end), and prints records/s, payload
 * MB/s, the mean time per batch (appends and its sync), and the ratio of records/s to that of B=512
 * (or of the last B when 512 is not in the list), all measured in the same run. The journal lives
 * in a temporary directory under PARENT (default ./build, which is on the filesystem of the
 * repository when run from its root, else .), removed afterwards.
 *
 *   build/bench/journal_append [-n N] [-s S] [-b B,B,...] [-d PARENT] [-g SEGMENT] [-p]
 *   defaults: -n 200000 -s 300 -b 1,8,64,512 -d build -g 67108864 (the journal's default)
 *
 * -p: each batch size runs twice in turn, on a journal that creates its segments as they
 * are needed and on one that makes them ahead (journal.h: records overwrite zeros, so
 * fdatasync has no new file size to commit), and the table adds the second's records/s
 * and its ratio to the first's. Both first append and sync untimed until the journal that
 * makes segments ahead writes into one (the same records on both).
 *
 * -t K: then fills K whole segments and one more of S-byte records, twice, and times the
 * journal_trim that drops all but the current one (retention 1 byte; with segments made
 * ahead the first, not made ahead, ends early, so there is one more): on a journal that
 * removes their files itself, and on one that makes segments ahead, whose own thread
 * removes them; and the journal_close after it, which removes what that thread has not.
 */

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "clock.h"
#include "journal.h"

#define MAX_BATCHES 16

static const char *fs_name(long type)
{
    switch ((unsigned long)type) {
    case 0xEF53:
        return "ext2/3/4";
    case 0x58465342:
        return "xfs";
    case 0x9123683E:
        return "btrfs";
    case 0x01021994:
        return "tmpfs";
    case 0x794C7630:
        return "overlayfs";
    default:
        return "other";
    }
}

static void cpu_model(char *out, size_t size)
{
    snprintf(out, size, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL) {
        return;
    }
    char line[256];
    while (fgets(line, sizeof(line), f) != NULL) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
            colon += 2;
            colon[strcspn(colon, "\n")] = '\0';
            snprintf(out, size, "%s", colon);
            break;
        }
    }
    fclose(f);
}

/* Removes the files of a flat directory, then the directory. */
static void remove_dir(const char *path)
{
    DIR *dir = opendir(path);
    if (dir != NULL) {
        struct dirent *entry;
        while ((entry = readdir(dir)) != NULL) {
            if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) {
                char file[1024];
                snprintf(file, sizeof(file), "%s/%s", path, entry->d_name);
                unlink(file);
            }
        }
        closedir(dir);
    }
    rmdir(path);
}

static size_t parse_batches(const char *text, size_t *batches)
{
    size_t count = 0;
    char *copy = strdup(text);
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok != NULL && count < MAX_BATCHES;
         tok = strtok_r(NULL, ",", &save)) {
        long value = strtol(tok, NULL, 10);
        if (value <= 0) {
            fprintf(stderr, "journal_append: bad batch size '%s'\n", tok);
            exit(2);
        }
        batches[count++] = (size_t)value;
    }
    free(copy);
    return count;
}

struct result {
    double seconds;
    size_t syncs;
    double p99_ms; /* of the batches (appends and their sync) */
    double max_ms;
};

static void append_or_die(journal_t *journal, const unsigned char *payload, size_t size,
                          int64_t time_ms)
{
    struct herr err;
    if (journal_append(journal, payload, size, time_ms, NULL, &err) != 0) {
        fprintf(stderr, "journal_append: %s\n", err.message);
        exit(1);
    }
}

static void sync_or_die(journal_t *journal)
{
    struct herr err;
    if (journal_sync(journal, &err) != 0) {
        fprintf(stderr, "journal_append: %s\n", err.message);
        exit(1);
    }
}

/* Untimed records before the timed ones: with preallocate, until the journal writes into a
 * segment made ahead (returning how many); else exactly count. */
static size_t warm_up(journal_t *journal, bool preallocate, size_t count,
                      const unsigned char *payload, size_t size, int64_t time_ms)
{
    size_t done = 0;
    for (double start = clock_monotonic_seconds();
         preallocate ? !journal_is_preallocated(journal) : done < count; done++) {
        if (clock_monotonic_seconds() - start > 30) {
            fprintf(stderr, "journal_append: no segment made ahead within 30 s\n");
            exit(1);
        }
        append_or_die(journal, payload, size, time_ms);
        sync_or_die(journal);
    }
    return done;
}

static uint64_t segment_bytes;

static struct result run(const char *parent, size_t batch, size_t records, size_t size,
                         const unsigned char *payload, bool preallocate, size_t *warm)
{
    char dir[1024];
    if (snprintf(dir, sizeof(dir), "%s/b%zu%s", parent, batch, preallocate ? "p" : "") >=
        (int)sizeof(dir)) {
        fprintf(stderr, "journal_append: path too long\n");
        exit(2);
    }
    journal_config_t config = {
        .dir = dir, .segment_bytes = segment_bytes, .preallocate = preallocate};
    struct herr err;
    journal_t *journal = journal_open(&config, &err);
    if (journal == NULL) {
        fprintf(stderr, "journal_append: %s\n", err.message);
        exit(1);
    }
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    int64_t time_ms = (int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000;
    struct result result = {0};
    *warm = warm_up(journal, preallocate, *warm, payload, size, time_ms);

    double *batch_ms = malloc((records / batch + 1) * sizeof(double));
    double start = clock_monotonic_seconds();
    double batch_start = start;
    for (size_t i = 1; i <= records; i++) {
        append_or_die(journal, payload, size, time_ms);
        if (i % batch == 0 || i == records) {
            sync_or_die(journal);
            double now = clock_monotonic_seconds();
            batch_ms[result.syncs++] = (now - batch_start) * 1e3;
            batch_start = now;
        }
    }
    result.seconds = clock_monotonic_seconds() - start;
    qsort(batch_ms, result.syncs, sizeof(double), bench_compare_doubles);
    result.p99_ms = batch_ms[(size_t)((double)(result.syncs - 1) * 0.99)];
    result.max_ms = batch_ms[result.syncs - 1];
    free(batch_ms);
    if (journal_last_seq(journal) != records + *warm) {
        fprintf(stderr, "journal_append: %" PRIu64 " records durable, expected %zu\n",
                journal_last_seq(journal), records + *warm);
        exit(1);
    }
    journal_close(journal);
    remove_dir(dir);
    return result;
}

struct trim_result {
    size_t dropped;
    double trim_ms;
    double close_ms;
};

/* Fills count whole segments and one more, then trims all but the last and closes. */
static struct trim_result trim_run(const char *parent, size_t count, size_t size,
                                   const unsigned char *payload, bool preallocate)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/trim%s", parent, preallocate ? "p" : "");
    journal_config_t config = {.dir = dir,
                               .segment_bytes = segment_bytes,
                               .retention_bytes = 1,
                               .preallocate = preallocate};
    struct herr err;
    journal_t *journal = journal_open(&config, &err);
    if (journal == NULL) {
        fprintf(stderr, "journal_append: %s\n", err.message);
        exit(1);
    }
    uint64_t bytes = segment_bytes != 0 ? segment_bytes : JOURNAL_DEFAULT_SEGMENT_BYTES;
    uint64_t per_segment = bytes / (size + JOURNAL_RECORD_HEADER_BYTES);
    for (uint64_t i = 0; i < per_segment * count + 1; i++) {
        append_or_die(journal, payload, size, 0);
        if (i % 512 == 511) {
            sync_or_die(journal);
        }
    }
    sync_or_die(journal);
    struct trim_result result = {0};
    double start = clock_monotonic_seconds();
    result.dropped = journal_trim(journal, 0);
    result.trim_ms = (clock_monotonic_seconds() - start) * 1e3;
    start = clock_monotonic_seconds();
    journal_close(journal);
    result.close_ms = (clock_monotonic_seconds() - start) * 1e3;
    remove_dir(dir);
    return result;
}

int main(int argc, char **argv)
{
    size_t records = 200000;
    size_t size = 300;
    size_t batches[MAX_BATCHES];
    size_t batch_count = parse_batches("1,8,64,512", batches);
    struct stat st;
    const char *parent = stat("build", &st) == 0 && S_ISDIR(st.st_mode) ? "build" : ".";
    bool compare_made_ahead = false;
    size_t trim_segments = 0;
    int opt;
    while ((opt = getopt(argc, argv, "n:s:b:d:g:pt:")) != -1) {
        switch (opt) {
        case 'n':
            records = strtoul(optarg, NULL, 10);
            break;
        case 's':
            size = strtoul(optarg, NULL, 10);
            break;
        case 'b':
            batch_count = parse_batches(optarg, batches);
            break;
        case 'd':
            parent = optarg;
            break;
        case 'g':
            segment_bytes = strtoull(optarg, NULL, 10);
            break;
        case 'p':
            compare_made_ahead = true;
            break;
        case 't':
            trim_segments = strtoul(optarg, NULL, 10);
            break;
        default:
            fprintf(stderr,
                    "usage: %s [-n N] [-s S] [-b B,B,...] [-d PARENT] [-g SEGMENT] [-p] [-t K]\n",
                    argv[0]);
            return 2;
        }
    }
    if (records == 0 || size > JOURNAL_MAX_RECORD_BYTES || batch_count == 0) {
        fprintf(stderr, "journal_append: need N > 0, S <= %d and at least one B\n",
                JOURNAL_MAX_RECORD_BYTES);
        return 2;
    }

    char tmp[1024];
    snprintf(tmp, sizeof(tmp), "%s/journal_append.XXXXXX", parent);
    if (mkdtemp(tmp) == NULL) {
        fprintf(stderr, "journal_append: mkdtemp(%s): %s\n", tmp, strerror(errno));
        return 1;
    }
    char real[4096];
    if (realpath(tmp, real) == NULL) {
        snprintf(real, sizeof(real), "%s", tmp);
    }
    struct statfs fs;
    const char *fs_type = statfs(tmp, &fs) == 0 ? fs_name((long)fs.f_type) : "unknown";
    struct utsname uts;
    uname(&uts);
    char cpu[256];
    cpu_model(cpu, sizeof(cpu));
    char date[64];
    time_t t = time(NULL);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));

    printf("command:");
    for (int i = 0; i < argc; i++) {
        printf(" %s", argv[i]);
    }
    printf("  (N=%zu records, S=%zu bytes, B=", records, size);
    for (size_t i = 0; i < batch_count; i++) {
        printf("%s%zu", i > 0 ? "," : "", batches[i]);
    }
    printf(")\n");
    printf("machine: %ld cores, %s %s, %s, crc32c: %s\n", sysconf(_SC_NPROCESSORS_ONLN),
           uts.sysname, uts.release, cpu,
           journal_crc32c_has_sse42() ? "sse4.2 instruction" : "slicing-by-8 table");
    printf("journal: %s (%s)\n", real, fs_type);
    printf("date: %s\n", date);

    unsigned char *payload = malloc(size > 0 ? size : 1);
    for (size_t i = 0; i < size; i++) {
        payload[i] = (unsigned char)(i * 131 + 7);
    }
    struct result results[MAX_BATCHES];
    struct result made_ahead[MAX_BATCHES];
    for (size_t i = 0; i < batch_count; i++) {
        size_t warm = 0;
        if (compare_made_ahead) {
            made_ahead[i] = run(tmp, batches[i], records, size, payload, true, &warm);
        }
        results[i] = run(tmp, batches[i], records, size, payload, false, &warm);
    }
    struct trim_result trims[2] = {{0}};
    if (trim_segments > 0) {
        trims[0] = trim_run(tmp, trim_segments, size, payload, false);
        trims[1] = trim_run(tmp, trim_segments, size, payload, true);
    }
    free(payload);
    remove_dir(tmp);

    size_t reference = batch_count - 1;
    for (size_t i = 0; i < batch_count; i++) {
        if (batches[i] == 512) {
            reference = i;
        }
    }
    double reference_rate = (double)records / results[reference].seconds;
    printf("%-6s %12s %10s %10s %12s %10s %10s %14s", "B", "records/s", "MB/s", "syncs", "ms/batch",
           "p99 ms", "max ms", "ratio");
    printf(compare_made_ahead ? " %16s %10s %10s %10s %12s\n" : "\n", "made ahead rec/s",
           "ms/batch", "p99 ms", "max ms", "ahead/plain");
    for (size_t i = 0; i < batch_count; i++) {
        double rate = (double)records / results[i].seconds;
        printf("%-6zu %12.0f %10.2f %10zu %12.3f %10.3f %10.3f %9.4f (B=%zu)", batches[i], rate,
               rate * (double)size / 1e6, results[i].syncs,
               results[i].seconds * 1e3 / (double)results[i].syncs, results[i].p99_ms,
               results[i].max_ms, rate / reference_rate, batches[reference]);
        if (compare_made_ahead) {
            double ahead_rate = (double)records / made_ahead[i].seconds;
            printf(" %16.0f %10.3f %10.3f %10.3f %12.2f", ahead_rate,
                   made_ahead[i].seconds * 1e3 / (double)made_ahead[i].syncs, made_ahead[i].p99_ms,
                   made_ahead[i].max_ms, ahead_rate / rate);
        }
        printf("\n");
    }
    printf("MB/s counts payload bytes; each record adds %d bytes of header on disk.\n",
           JOURNAL_RECORD_HEADER_BYTES);
    for (int i = 0; trim_segments > 0 && i < 2; i++) {
        printf("trim of %zu segments, %s: journal_trim %.2f ms, journal_close %.2f ms\n",
               trims[i].dropped,
               i == 0 ? "files removed by journal_trim" : "made ahead, files removed by its thread",
               trims[i].trim_ms, trims[i].close_ms);
    }
    return 0;
}
