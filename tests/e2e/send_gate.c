/* Preloaded into a broker by the end-to-end tests (LD_PRELOAD) to make its delivery fall
 * behind at will: while the file named by HEROLD_TEST_SEND_GATE exists, send() called on
 * the main thread (the service thread, which writes to the WebSocket clients and runs
 * dispatch) waits until the file is removed. Other threads (ZeroMQ's, which carry the
 * acks, and webhook delivery) send as usual. A test can then watch what ingest does while
 * dispatch takes nothing. */

#include <dlfcn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define GATE_POLL_NS (10 * 1000 * 1000)

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    static ssize_t (*real_send)(int, const void *, size_t, int);
    if (real_send == NULL) {
        real_send = (ssize_t(*)(int, const void *, size_t, int))dlsym(RTLD_NEXT, "send");
    }
    const char *gate = getenv("HEROLD_TEST_SEND_GATE");
    if (gate != NULL && gettid() == getpid()) {
        struct timespec pause = {0, GATE_POLL_NS};
        while (access(gate, F_OK) == 0) {
            nanosleep(&pause, NULL);
        }
    }
    return real_send(fd, buf, len, flags);
}
