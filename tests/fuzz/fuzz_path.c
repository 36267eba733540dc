/* libFuzzer target: resource path and pattern parsing, and the matching index against
 * path_matches. The input is split at its first NUL: a pattern, then a resource. A parsed
 * pattern is subscribed and the resource matched; the index must report the subscription
 * exactly when path_matches says the pattern covers the resource. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "path.h"
#include "subs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool count(sub_t *sub, void *ctx)
{
    (void)sub;
    (*(size_t *)ctx)++;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nul = memchr(text, '\0', size);
    size_t pattern_len = nul != NULL ? (size_t)(nul - text) : size;
    const char *resource = nul != NULL ? nul + 1 : "";
    size_t resource_len = nul != NULL ? size - pattern_len - 1 : 0;

    path_t pattern;
    path_t path;
    bool is_pattern = path_parse_pattern(text, pattern_len, &pattern, NULL) == 0;
    bool is_resource = path_parse(resource, resource_len, &path, NULL) == 0;
    path_t as_resource;
    if (path_parse(text, pattern_len, &as_resource, NULL) == 0 && !is_pattern) {
        __builtin_trap(); /* every resource path is also a pattern */
    }
    if (!is_pattern || !is_resource) {
        return 0;
    }
    static auth_principal_t owner = {.user = "fuzz", .expires_at = INT64_MAX};
    subs_t *subs = subs_new();
    sub_t *sub;
    if (subs_add(subs, text, pattern_len, EVENT_CHANGE_ALL, &owner, NULL, &sub, NULL) != 0) {
        __builtin_trap(); /* a pattern path_parse_pattern accepts, subs must take */
    }
    hstr_t readers[] = {HSTR_LIT("user:fuzz")};
    event_t event;
    memset(&event, 0, sizeof(event));
    event.seq = 1;
    event.type = EVENT_UPDATED;
    event.resource_path = path;
    event.readers = readers;
    event.reader_count = 1;
    size_t calls = 0;
    subs_match_event(subs, &event, count, &calls);
    if (calls != (path_matches(&pattern, &path) ? 1u : 0u)) {
        __builtin_trap();
    }
    subs_remove(subs, sub);
    subs_free(subs);
    return 0;
}
