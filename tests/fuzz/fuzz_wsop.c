/* libFuzzer target: WebSocket client messages (wsop.h). Any bytes are refused with an
 * error or parsed into an op whose fields the op needs are present and within limits. */

#include <stdint.h>
#include <string.h>

#include "event.h"
#include "wsop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wsop_t op;
    struct herr err;
    int rc = wsop_parse((const char *)data, size, &op, &err);
    if (op.ref != NULL && strlen(op.ref) > WSOP_MAX_REF_BYTES) {
        __builtin_trap();
    }
    if (rc == 0) {
        bool is_whole =
            (op.kind != WSOP_SUBSCRIBE || (op.resource != NULL && op.change_mask != 0 &&
                                           (op.change_mask & ~(unsigned)EVENT_CHANGE_ALL) == 0)) &&
            (op.kind != WSOP_UNSUBSCRIBE || op.subscription_id != NULL) &&
            (op.kind != WSOP_AUTH || op.token != NULL);
        if (!is_whole) {
            __builtin_trap();
        }
    } else if (err.message[0] == '\0') {
        __builtin_trap();
    }
    wsop_clear(&op);
    return 0;
}
