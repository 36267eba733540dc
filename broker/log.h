#ifndef HEROLD_LOG_H
#define HEROLD_LOG_H

/*
 * Logging to stderr, one line per message: time, level, text. The level is set once at
 * start-up (log_set_level) before threads start; log_msg itself is thread-safe (one
 * fprintf per line). Never log tokens, signing secrets, clientState or resource data.
 */

enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO = 1,
    LOG_LEVEL_WARN = 2,
    LOG_LEVEL_ERROR = 3,
};

/* Sets the lowest level that is written. Call before starting threads. */
void log_set_level(enum log_level level);

/* The current level. */
enum log_level log_get_level(void);

/* Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int log_level_parse(const char *name);

void log__write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Checks the level before formatting, so disabled messages cost one comparison. */
#define log_msg(level, ...)                                                                        \
    do {                                                                                           \
        if ((level) >= log_get_level()) {                                                          \
            log__write((level), __VA_ARGS__);                                                      \
        }                                                                                          \
    } while (0)

#endif
