/* Preloaded into a broker by the end-to-end tests (LD_PRELOAD) to play a slower disk:
 * fdatasync does the real sync, then waits HEROLD_TEST_FDATASYNC_EXTRA_MS more (default
 * 50). A test can then rely on the broker reading its next batch while a sync runs. */

#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int fdatasync(int fd)
{
    static int (*real_fdatasync)(int);
    if (real_fdatasync == NULL) {
        real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    int rc = real_fdatasync(fd);
    const char *extra = getenv("HEROLD_TEST_FDATASYNC_EXTRA_MS");
    long ms = extra != NULL ? strtol(extra, NULL, 10) : 50;
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
    return rc;
}
