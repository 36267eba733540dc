/*
 * bench/ws_idle: how many idle WebSocket connections the broker holds, what each costs it
 * in memory, and how fast it accepts them.
 *
 *   build/bench/ws_idle --port P --token-file F --count N [--sources 127.0.0.1,127.0.0.2,...]
 *                       [--pid BROKER_PID] [--window W] [--hold SECONDS] [--subscribe 1]
 *
 * Opens N connections to 127.0.0.1:P, spreading them over the given loopback source
 * addresses (each gives about 28,000 ephemeral ports), sends each the upgrade request of
 * /v1.0/ws with a token (the file holds one per line: connection i presents token i modulo
 * their number, so that one line is one user's token shared by all, and N lines are N users),
 * and counts the 101 answers, keeping at most W handshakes in
 * flight (default 1000). Then it holds every connection open, reads the broker's RSS from
 * /proc/PID/status, and prints: connections, seconds to accept them, connections/s, the
 * broker's RSS before and after, and the growth per connection. With --hold it keeps them
 * open that many seconds more (idle company for another benchmark) before closing them. With
 * --subscribe 1 each connection subscribes once (to a resource of its own) and counts only when
 * the broker answered `subscribed`: an idle connection as most are, one that waits for its
 * alerts. The sockets are raw TCP with a hand-made upgrade request and subscribe frame: the client
 * must be far cheaper than the server it measures.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

#define MAX_SOURCES 64
#define RESPONSE_MAX 1024

struct conn {
    int fd;
    size_t sent;
    size_t got;
    char response[RESPONSE_MAX];
    bool is_subscribing; /* upgraded; waiting for the answer to its subscribe */
    bool is_done;
};

/* Sends connection index's subscribe op as one masked text frame (mask key 0: the payload
 * goes as it is). Returns false when it did not go out whole. */
static bool send_subscribe(int fd, long index)
{
    char op[120];
    int len =
        snprintf(op, sizeof(op),
                 "{\"op\":\"subscribe\",\"ref\":\"s\",\"resource\":\"/dms/idle/f%ld\"}", index);
    unsigned char frame[8 + sizeof(op)];
    frame[0] = 0x81;                      /* FIN, text */
    frame[1] = 0x80 | (unsigned char)len; /* masked, under 126 bytes */
    memset(frame + 2, 0, 4);
    memcpy(frame + 6, op, (size_t)len);
    return send(fd, frame, 6 + (size_t)len, MSG_NOSIGNAL) == 6 + len;
}

static long rss_kib(int pid)
{
    char path[64];
    char line[256];
    long kib = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
        }
    }
    fclose(f);
    return kib;
}

static void usage(void)
{
    fprintf(stderr, "usage: ws_idle --port P --token-file F --count N [--sources A,B,...] "
                    "[--pid PID] [--window W] [--hold SECONDS]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int port = 0;
    long count = 0;
    long window = 1000;
    int pid = 0;
    int hold_seconds = 0;
    bool subscribe = false;
    const char *token_file = NULL;
    char sources_text[1024] = "127.0.0.1";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0) {
            port = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--token-file") == 0) {
            token_file = argv[i + 1];
        } else if (strcmp(argv[i], "--count") == 0) {
            count = strtol(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--sources") == 0) {
            snprintf(sources_text, sizeof(sources_text), "%s", argv[i + 1]);
        } else if (strcmp(argv[i], "--pid") == 0) {
            pid = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--hold") == 0) {
            hold_seconds = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--subscribe") == 0) {
            subscribe = atoi(argv[i + 1]) != 0;
        } else if (strcmp(argv[i], "--window") == 0) {
            window = strtol(argv[i + 1], NULL, 10);
        } else {
            usage();
        }
    }
    if (port <= 0 || count <= 0 || token_file == NULL || window <= 0) {
        usage();
    }
    FILE *tf = fopen(token_file, "r");
    if (tf == NULL) {
        fprintf(stderr, "ws_idle: cannot read %s\n", token_file);
        return 2;
    }
    char **tokens = NULL;
    size_t token_count = 0;
    char *line = NULL;
    size_t line_capacity = 0;
    while (getline(&line, &line_capacity, tf) > 0 && token_count < (size_t)count) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] != '\0') {
            tokens = realloc(tokens, (token_count + 1) * sizeof(*tokens));
            tokens[token_count++] = strdup(line);
        }
    }
    free(line);
    fclose(tf);
    if (token_count == 0) {
        fprintf(stderr, "ws_idle: no token in %s\n", token_file);
        return 2;
    }

    struct in_addr sources[MAX_SOURCES];
    int source_count = 0;
    for (char *s = strtok(sources_text, ","); s != NULL && source_count < MAX_SOURCES;
         s = strtok(NULL, ",")) {
        if (inet_pton(AF_INET, s, &sources[source_count]) != 1) {
            fprintf(stderr, "ws_idle: bad source address %s\n", s);
            return 2;
        }
        source_count++;
    }
    struct rlimit limit = {(rlim_t)count + 256, (rlim_t)count + 256};
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
        perror("ws_idle: setrlimit");
        return 1;
    }

    char **requests = calloc(token_count, sizeof(*requests));
    int *request_lens = calloc(token_count, sizeof(*request_lens));
    for (size_t t = 0; t < token_count; t++) {
        request_lens[t] = asprintf(&requests[t],
                                   "GET /v1.0/ws HTTP/1.1\r\n"
                                   "Host: 127.0.0.1:%d\r\n"
                                   "Upgrade: websocket\r\n"
                                   "Connection: Upgrade\r\n"
                                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                   "Sec-WebSocket-Version: 13\r\n"
                                   "Authorization: Bearer %s\r\n\r\n",
                                   port, tokens[t]);
        free(tokens[t]);
    }
    free(tokens);

    long rss_before = pid > 0 ? rss_kib(pid) : -1;
    struct conn *conns = calloc((size_t)count, sizeof(*conns));
    int ep = epoll_create1(0);
    long started = 0;
    long in_flight = 0;
    long accepted = 0;
    long failed = 0;
    double start = clock_monotonic_seconds();
    struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &server.sin_addr);
    struct epoll_event events[1024];

    while (accepted + failed < count) {
        while (started < count && in_flight < window) {
            struct conn *c = &conns[started];
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            struct sockaddr_in local = {.sin_family = AF_INET,
                                        .sin_addr = sources[started % source_count]};
            if (c->fd < 0 || bind(c->fd, (struct sockaddr *)&local, sizeof(local)) != 0 ||
                (connect(c->fd, (struct sockaddr *)&server, sizeof(server)) != 0 &&
                 errno != EINPROGRESS)) {
                fprintf(stderr, "ws_idle: connection %ld: %s\n", started, strerror(errno));
                if (c->fd >= 0) {
                    close(c->fd);
                }
                c->fd = -1;
                failed++;
                started++;
                continue;
            }
            struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            started++;
            in_flight++;
        }
        int n = epoll_wait(ep, events, 1024, 10000);
        if (n <= 0) {
            fprintf(stderr, "ws_idle: no progress for 10 s (%ld accepted, %ld failed)\n", accepted,
                    failed);
            break;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->is_done) {
                continue;
            }
            size_t which = (size_t)(c - conns) % token_count;
            const char *request = requests[which];
            size_t request_len = (size_t)request_lens[which];
            if ((events[i].events & EPOLLOUT) && c->sent < request_len) {
                ssize_t w = send(c->fd, request + c->sent, request_len - c->sent, MSG_NOSIGNAL);
                if (w > 0) {
                    c->sent += (size_t)w;
                }
                if (c->sent == request_len) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = recv(c->fd, c->response + c->got, RESPONSE_MAX - 1 - c->got, 0);
                if (r > 0) {
                    c->got += (size_t)r;
                    c->response[c->got] = '\0';
                }
                /* The upgrade's answer, then with --subscribe the op's (a short frame whose
                 * payload is searched as text). */
                bool is_complete = c->is_subscribing
                                       ? memmem(c->response, c->got, "\"op\"", 4) != NULL
                                       : strstr(c->response, "\r\n\r\n") != NULL;
                bool is_good =
                    is_complete &&
                    (c->is_subscribing ? memmem(c->response, c->got, "\"subscribed\"", 12) != NULL
                                       : strncmp(c->response, "HTTP/1.1 101", 12) == 0);
                if (is_good && subscribe && !c->is_subscribing) {
                    c->is_subscribing = true;
                    c->got = 0;
                    c->response[0] = '\0';
                    if (send_subscribe(c->fd, (long)(c - conns))) {
                        continue;
                    }
                    is_good = false;
                }
                if (is_complete || r == 0 || (r < 0 && errno != EAGAIN) ||
                    c->got == RESPONSE_MAX - 1) {
                    c->is_done = true;
                    in_flight--;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    if (is_good) {
                        accepted++;
                    } else {
                        if (failed < 5) {
                            fprintf(stderr, "ws_idle: %s refused: %.80s\n",
                                    c->is_subscribing ? "subscribe" : "handshake", c->response);
                        }
                        failed++;
                    }
                }
            }
        }
    }
    double elapsed = clock_monotonic_seconds() - start;
    /* Let the broker settle (its buffers for the handshakes are released lazily). */
    usleep(500000);
    long rss_after = pid > 0 ? rss_kib(pid) : -1;
    printf("connections: %ld accepted, %ld failed, in %.2f s (%.0f/s)\n", accepted, failed, elapsed,
           (double)accepted / elapsed);
    if (pid > 0) {
        printf("broker RSS: %ld KiB before, %ld KiB with them open: %.2f KiB per connection\n",
               rss_before, rss_after,
               accepted > 0 ? (double)(rss_after - rss_before) / (double)accepted : 0.0);
    }
    fflush(stdout);
    if (hold_seconds > 0) {
        sleep((unsigned)hold_seconds);
    }
    for (long i = 0; i < started; i++) {
        if (conns[i].fd >= 0) {
            close(conns[i].fd);
        }
    }
    free(conns);
    for (size_t t = 0; t < token_count; t++) {
        free(requests[t]);
    }
    free(requests);
    free(request_lens);
    close(ep);
    return failed > 0 ? 1 : 0;
}
