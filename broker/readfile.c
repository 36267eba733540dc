#include "readfile.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <string.h>
#include <unistd.h>

#include "mem.h"

char *readfile_bounded(const char *path, size_t max, const char *what, size_t *len,
                       struct herr *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        herr_set(err, HEROLD_E_SYSTEM, "%s: open(%s) failed: %s", what, path, strerror(errno));
        return NULL;
    }
    /* One byte more than the limit, to tell a full file from an oversize one. */
    char *buf = xmalloc(max + 2);
    size_t n = 0;
    while (n < max + 1) {
        ssize_t got = read(fd, buf + n, max + 1 - n);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            herr_set(err, HEROLD_E_SYSTEM, "%s: read(%s) failed: %s", what, path, strerror(errno));
            close(fd);
            OPENSSL_clear_free(buf, max + 2);
            return NULL;
        }
        if (got == 0) {
            break;
        }
        n += (size_t)got;
    }
    close(fd);
    if (n > max) {
        herr_set(err, HEROLD_E_CONFIG, "%s: %s is larger than %zu bytes", what, path, max);
        OPENSSL_clear_free(buf, max + 2);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}
