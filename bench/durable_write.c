/*
 * bench/durable_write: what one durable write costs the thread that makes it, in CPU and
 * in wall time, by three ways of making it durable.
 *
 *   build/bench/durable_write [-n WRITES] [-b BYTES] [-p MICROSECONDS] [-d PARENT] [-r ROUNDS]
 *   defaults: -n 2000 -b 4096 -p 500 -d build -r 2
 *
 * WRITES appends of BYTES each, one every MICROSECONDS at most, to a file whose blocks were
 * written and synced beforehand (as the journal's segments made ahead are):
 *
 *   - fdatasync: pwrite, then fdatasync (what the journal does);
 *   - O_DSYNC: pwrite on a descriptor opened with O_DSYNC;
 *   - O_DIRECT|O_DSYNC: the same, bypassing the page cache (the buffer and BYTES aligned
 *     to 4 KiB).
 *
 * Each round runs the three in turn and prints, for each, the wall time of a write (p50,
 * p99, max, in milliseconds) and the calling thread's CPU time per write (microseconds,
 * from CLOCK_THREAD_CPUTIME_ID). It measures the machine, not herold: on a virtual machine
 * the notification that starts the device's flush can be an exit to the host that the
 * guest sees as CPU time of the syncing thread, and then a broker that syncs for every
 * batch pays it once per batch whatever the way it asks for durability.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "clock.h"
#include "mem.h"

#define PREWRITTEN_BYTES (64L << 20)
#define ALIGN_BYTES 4096
#define MAX_WRITE_BYTES (1L << 20)

enum method { METHOD_FDATASYNC, METHOD_DSYNC, METHOD_DIRECT_DSYNC, METHOD_COUNT };

static const char *const method_names[METHOD_COUNT] = {"fdatasync", "O_DSYNC", "O_DIRECT|O_DSYNC"};

static void die(const char *what)
{
    fprintf(stderr, "durable_write: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double thread_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A file of PREWRITTEN_BYTES written and synced, so that appends overwrite allocated blocks. */
static void prewrite(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        die(path);
    }
    if (bench_prewrite_zeros(fd, PREWRITTEN_BYTES) != 0) {
        die("writing zeros");
    }
    close(fd);
}

static void run(const char *path, enum method method, char *buf, size_t bytes, int writes,
                long period_us)
{
    int flags = O_WRONLY | O_CLOEXEC;
    if (method != METHOD_FDATASYNC) {
        flags |= O_DSYNC;
    }
    if (method == METHOD_DIRECT_DSYNC) {
        flags |= O_DIRECT;
    }
    int fd = open(path, flags);
    if (fd < 0) {
        die(method_names[method]);
    }
    double *wall_ms = xcalloc((size_t)writes, sizeof(*wall_ms));
    double cpu = 0;
    for (int i = 0; i < writes; i++) {
        memset(buf, 'a' + i % 26, bytes);
        long at = (long)((size_t)i * bytes % (size_t)PREWRITTEN_BYTES);
        double start = clock_monotonic_seconds();
        double cpu_start = thread_cpu_seconds();
        if (pwrite(fd, buf, bytes, at) != (ssize_t)bytes) {
            die("pwrite");
        }
        if (method == METHOD_FDATASYNC && fdatasync(fd) != 0) {
            die("fdatasync");
        }
        cpu += thread_cpu_seconds() - cpu_start;
        wall_ms[i] = (clock_monotonic_seconds() - start) * 1e3;
        usleep((useconds_t)period_us);
    }
    close(fd);
    qsort(wall_ms, (size_t)writes, sizeof(*wall_ms), bench_compare_doubles);
    printf("%-18s %10.3f %10.3f %10.3f %14.1f\n", method_names[method], wall_ms[writes / 2],
           wall_ms[(size_t)writes * 99 / 100], wall_ms[writes - 1], cpu / writes * 1e6);
    free(wall_ms);
}

int main(int argc, char **argv)
{
    int writes = 2000;
    long bytes = 4096;
    long period_us = 500;
    const char *parent = "build";
    int rounds = 2;
    int opt;
    while ((opt = getopt(argc, argv, "n:b:p:d:r:")) != -1) {
        switch (opt) {
        case 'n':
            writes = atoi(optarg);
            break;
        case 'b':
            bytes = atol(optarg);
            break;
        case 'p':
            period_us = atol(optarg);
            break;
        case 'd':
            parent = optarg;
            break;
        case 'r':
            rounds = atoi(optarg);
            break;
        default:
            fprintf(stderr,
                    "usage: %s [-n WRITES] [-b BYTES] [-p MICROSECONDS] [-d PARENT] "
                    "[-r ROUNDS]\n",
                    argv[0]);
            return 2;
        }
    }
    if (writes < 1 || rounds < 1 || period_us < 0 || bytes < ALIGN_BYTES ||
        bytes > MAX_WRITE_BYTES || bytes % ALIGN_BYTES != 0) {
        fprintf(stderr,
                "durable_write: -n and -r at least 1, -p not negative, -b a multiple "
                "of %d up to %ld\n",
                ALIGN_BYTES, MAX_WRITE_BYTES);
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/durable_write.XXXXXX", parent);
    int tmp = mkstemp(path);
    if (tmp < 0) {
        die(path);
    }
    close(tmp);
    char *buf = NULL;
    if (posix_memalign((void **)&buf, ALIGN_BYTES, MAX_WRITE_BYTES) != 0) {
        die("posix_memalign");
    }
    printf("command: build/bench/durable_write -n %d -b %ld -p %ld -d %s -r %d\n", writes, bytes,
           period_us, parent, rounds);
    for (int round = 1; round <= rounds; round++) {
        prewrite(path);
        printf("round %d: %d writes of %ld bytes, one per %ld us at most\n", round, writes, bytes,
               period_us);
        printf("%-18s %10s %10s %10s %14s\n", "method", "p50 ms", "p99 ms", "max ms",
               "CPU us/write");
        for (int m = 0; m < METHOD_COUNT; m++) {
            run(path, (enum method)m, buf, (size_t)bytes, writes, period_us);
        }
    }
    unlink(path);
    free(buf);
    return 0;
}
