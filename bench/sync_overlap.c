/*
 * bench/sync_overlap: what a batch waits for on its way to disk, with one sync at a time
 * (the journal's group commit today) and with a sync started for every batch at once.
 *
 *   build/bench/sync_overlap [-n BATCHES] [-b BYTES] [-p MICROSECONDS] [-d PARENT] [-r ROUNDS]
 *   defaults: -n 3000 -b 5000 -p 1000 -d build -r 2
 *
 * Batches of BYTES bytes become ready every MICROSECONDS (the defaults: 20,000 events/s of
 * about 250 bytes, as the latency scenario sends them), appended to one file whose blocks
 * were written and synced beforehand (as the journal's segments made ahead are). Each
 * batch's time is from when it became ready to when a sync that covers it returned:
 *
 *   - one at a time: a single writer appends whatever is ready, fdatasyncs, and starts
 *     over; a batch that becomes ready during a sync waits for it to end, then for its own;
 *   - overlapping: every batch is appended and fdatasynced by a thread of its own as soon
 *     as it is ready, whatever else is syncing.
 *
 * Each round runs both in turn and prints p50, p90, p99 and max in milliseconds, and the
 * ratio of the medians. It measures the disk under the broker, not herold: a ratio well
 * below one says that the device takes several flushes at once, so that a journal with
 * several syncs in flight (answering its batches in order) would cut the wait of every
 * event by about the time of a sync; a ratio near one says it would not.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "clock.h"
#include "mem.h"

#define PREWRITTEN_BYTES (64L << 20)
#define MAX_BATCH_BYTES 65536

struct run {
    int fd;
    size_t batch_bytes;
    long period_us;
    int batches;
    double *waited; /* seconds per batch */
    atomic_long end;
    atomic_int finished; /* overlapping batches synced */
};

struct overlapping_batch {
    struct run *run;
    int index;
    double ready_at;
};

static void die(const char *what)
{
    fprintf(stderr, "sync_overlap: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void append_and_sync(int fd, const char *bytes, size_t len, long at)
{
    if (pwrite(fd, bytes, len, at) != (ssize_t)len) {
        die("pwrite");
    }
    if (fdatasync(fd) != 0) {
        die("fdatasync");
    }
}

static void run_one_at_a_time(struct run *r)
{
    static char bytes[MAX_BATCH_BYTES * 16];
    memset(bytes, 'a', sizeof(bytes));
    double start = clock_monotonic_seconds();
    int next = 0;
    while (next < r->batches) {
        double now = clock_monotonic_seconds();
        int ready = (int)((now - start) * 1e6 / (double)r->period_us) + 1;
        ready = ready > r->batches ? r->batches : ready;
        if (ready <= next) {
            usleep(20);
            continue;
        }
        /* Everything ready goes in one write and one sync (up to the buffer). */
        int upto = next + (int)(sizeof(bytes) / r->batch_bytes);
        upto = ready < upto ? ready : upto;
        size_t len = (size_t)(upto - next) * r->batch_bytes;
        append_and_sync(r->fd, bytes, len, atomic_fetch_add(&r->end, (long)len));
        double done = clock_monotonic_seconds();
        for (int i = next; i < upto; i++) {
            r->waited[i] = done - (start + (double)i * (double)r->period_us * 1e-6);
        }
        next = upto;
    }
}

static void *overlapping_one(void *arg)
{
    struct overlapping_batch *b = arg;
    char bytes[MAX_BATCH_BYTES];
    memset(bytes, 'b', b->run->batch_bytes);
    append_and_sync(b->run->fd, bytes, b->run->batch_bytes,
                    atomic_fetch_add(&b->run->end, (long)b->run->batch_bytes));
    b->run->waited[b->index] = clock_monotonic_seconds() - b->ready_at;
    atomic_fetch_add(&b->run->finished, 1);
    return NULL;
}

/* Detached threads with small stacks: a batch's thread is gone once it has synced, so
 * that the run never holds thousands of finished threads. */
static void run_overlapping(struct run *r)
{
    struct overlapping_batch *batches = xcalloc((size_t)r->batches, sizeof(*batches));
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 4 * MAX_BATCH_BYTES);
    atomic_store(&r->finished, 0);
    double start = clock_monotonic_seconds();
    for (int i = 0; i < r->batches; i++) {
        double ready_at = start + (double)i * (double)r->period_us * 1e-6;
        while (clock_monotonic_seconds() < ready_at) {
            usleep(20);
        }
        batches[i] = (struct overlapping_batch){r, i, ready_at};
        pthread_t thread;
        if (pthread_create(&thread, &attr, overlapping_one, &batches[i]) != 0) {
            die("pthread_create");
        }
    }
    while (atomic_load(&r->finished) < r->batches) {
        usleep(1000);
    }
    pthread_attr_destroy(&attr);
    free(batches);
}

/* Prints the distribution of r->waited and returns its median. */
static double report(const char *name, struct run *r)
{
    int n = r->batches;
    qsort(r->waited, (size_t)n, sizeof(double), bench_compare_doubles);
    printf("%-14s %10.3f %10.3f %10.3f %10.3f\n", name, r->waited[n / 2] * 1e3,
           r->waited[n * 9 / 10] * 1e3, r->waited[n * 99 / 100] * 1e3, r->waited[n - 1] * 1e3);
    return r->waited[n / 2];
}

int main(int argc, char **argv)
{
    struct run r = {.fd = -1, .batch_bytes = 5000, .period_us = 1000, .batches = 3000};
    const char *parent = "build";
    int rounds = 2;
    int opt;
    while ((opt = getopt(argc, argv, "n:b:p:d:r:")) != -1) {
        switch (opt) {
        case 'n':
            r.batches = atoi(optarg);
            break;
        case 'b':
            r.batch_bytes = strtoul(optarg, NULL, 10);
            break;
        case 'p':
            r.period_us = atol(optarg);
            break;
        case 'd':
            parent = optarg;
            break;
        case 'r':
            rounds = atoi(optarg);
            break;
        default:
            fprintf(stderr,
                    "usage: %s [-n BATCHES] [-b BYTES] [-p MICROSECONDS] [-d PARENT] "
                    "[-r ROUNDS]\n",
                    argv[0]);
            return 2;
        }
    }
    if (r.batches < 1 || r.batch_bytes < 1 || r.batch_bytes > MAX_BATCH_BYTES || r.period_us < 1 ||
        rounds < 1 || (long)r.batches * (long)r.batch_bytes * 2 * rounds > PREWRITTEN_BYTES) {
        fprintf(stderr,
                "sync_overlap: -n 1.., -b 1..%d, -p 1.., -r 1.., and n x b x 2 x r "
                "within %ld bytes\n",
                MAX_BATCH_BYTES, PREWRITTEN_BYTES);
        return 2;
    }
    printf("command:");
    for (int i = 0; i < argc; i++) {
        printf(" %s", argv[i]);
    }
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    printf("\ndate: %s\n", date);
    printf("%d batches of %zu bytes, one every %ld us, per run\n", r.batches, r.batch_bytes,
           r.period_us);

    char path[4096];
    snprintf(path, sizeof(path), "%s/sync_overlap.XXXXXX", parent);
    r.fd = mkstemp(path);
    if (r.fd < 0) {
        die(path);
    }
    unlink(path);
    if (bench_prewrite_zeros(r.fd, PREWRITTEN_BYTES) != 0) {
        die("writing zeros");
    }
    r.waited = xcalloc((size_t)r.batches, sizeof(double));
    printf("%-14s %10s %10s %10s %10s\n", "ms", "p50", "p90", "p99", "max");
    for (int round = 1; round <= rounds; round++) {
        run_one_at_a_time(&r);
        double serial = report("one at a time", &r);
        run_overlapping(&r);
        double overlapped = report("overlapping", &r);
        printf("round %d: median overlapping / one at a time: %.2f\n", round, overlapped / serial);
    }
    free(r.waited);
    close(r.fd);
    return 0;
}
