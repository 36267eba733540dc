#include "errors.h"

#include <stdio.h>
#include <string.h>

struct error_entry {
    int code;
    const char *wire;
    int status;
    const char *text;
};

static const struct error_entry error_table[] = {
#define HEROLD_ERROR_ENTRY(name, wire, status, text) {HEROLD_E_##name, wire, status, text},
    HEROLD_ERRORS(HEROLD_ERROR_ENTRY)
#undef HEROLD_ERROR_ENTRY
};

static const struct error_entry *find_entry(int code)
{
    if (code <= HEROLD_E__BASE || code >= HEROLD_E__END) {
        return NULL;
    }
    return &error_table[code - HEROLD_E__BASE - 1];
}

int herr_set(struct herr *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
    }
    return code;
}

void herr_clear(struct herr *err)
{
    if (err != NULL) {
        err->code = HEROLD_OK;
        err->message[0] = '\0';
    }
}

const char *herold_error_code(int code)
{
    const struct error_entry *e = find_entry(code);
    return e != NULL ? e->wire : "internal";
}

const char *herold_error_text(int code)
{
    const struct error_entry *e = find_entry(code);
    return e != NULL ? e->text : "internal error";
}

int herold_error_status(int code)
{
    const struct error_entry *e = find_entry(code);
    return e != NULL ? e->status : 500;
}
