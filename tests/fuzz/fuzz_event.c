/* libFuzzer target: event decoding (event.h). Any bytes must be refused with an error or
 * decoded into an event that passes its own invariants; nothing may crash or leak. */

#include <stdint.h>
#include <string.h>

#include "event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    event_t *event = NULL;
    struct herr err;
    if (event_decode(data, size, &event, &err) == 0) {
        /* What the decoder promises: a parsed resource path and readers within limits. */
        if (event->resource_path.segment_count == 0 || event->reader_count > EVENT_MAX_READERS) {
            __builtin_trap();
        }
        event_free(event);
    } else if (event != NULL || err.message[0] == '\0') {
        __builtin_trap();
    }
    return 0;
}
