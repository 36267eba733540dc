#include "subs.h"

#include <assert.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>

#include "mem.h"
#include "notif.h"

struct subs {
    index_t *index;
    size_t count;
};

struct match_ctx {
    const event_t *event;
    subs_match_fn fn;
    void *ctx;
    size_t calls;
    bool is_stopped;
};

subs_t *subs_new(void)
{
    subs_t *subs = xcalloc(1, sizeof(*subs));
    subs->index = index_new();
    return subs;
}

void subs_free(subs_t *subs)
{
    if (subs == NULL) {
        return;
    }
    /* Records are owned by their channels' lists too; by now every channel has removed
     * its subscriptions, so only the index remains. */
    assert(subs->count == 0);
    index_free(subs->index);
    free(subs);
}

void subs_new_id(char *out)
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1) {
        fprintf(stderr, "herold: RAND_bytes failed\n");
        abort();
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, SUBS_ID_BYTES + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

int subs_add(subs_t *subs, const char *resource, size_t len, unsigned change_mask,
             const auth_principal_t *owner, void *channel, int64_t expires_at, sub_t **out,
             struct herr *err)
{
    path_t pattern;
    *out = NULL;
    if ((change_mask & EVENT_CHANGE_ALL) == 0 || (change_mask & ~(unsigned)EVENT_CHANGE_ALL)) {
        return herr_set(err, HEROLD_E_BAD_CHANGE_TYPE, "changeType: no valid change type");
    }
    int rc = path_parse_pattern(resource, len, &pattern, err);
    if (rc != 0) {
        return rc;
    }

    sub_t *sub = xcalloc(1, sizeof(*sub));
    subs_new_id(sub->id);
    sub->resource = xstrndup(resource, len);
    /* Re-parse over the owned copy so that the segment views point into it. */
    rc = path_parse_pattern(sub->resource, len, &sub->pattern, NULL);
    assert(rc == 0);
    sub->change_mask = change_mask;
    sub->owner = owner;
    sub->channel = channel;
    sub->expires_at = expires_at;
    notif_format_graph_time(expires_at, sub->expiration, sizeof(sub->expiration));
    index_add(subs->index, &sub->pattern, change_mask, sub);
    subs->count++;
    *out = sub;
    return 0;
}

void subs_remove(subs_t *subs, sub_t *sub)
{
    int rc = index_remove(subs->index, &sub->pattern, sub);
    assert(rc == 0);
    (void)rc;
    subs->count--;
    free(sub->resource);
    free(sub);
}

static bool match_one(void *value, void *opaque)
{
    struct match_ctx *m = opaque;
    sub_t *sub = value;
    if (sub->last_matched_seq == m->event->seq) {
        return true; /* already matched through the other path of a move */
    }
    sub->last_matched_seq = m->event->seq;
    if (!auth_may_read(sub->owner, m->event->readers, m->event->reader_count)) {
        return true;
    }
    m->calls++;
    if (!m->fn(sub, m->ctx)) {
        m->is_stopped = true;
        return false;
    }
    return true;
}

size_t subs_match_event(subs_t *subs, const event_t *event, subs_match_fn fn, void *ctx)
{
    struct match_ctx m = {.event = event, .fn = fn, .ctx = ctx};
    assert(event->seq != 0);
    index_match(subs->index, &event->resource_path, event->type, match_one, &m);
    if (event->has_previous && !m.is_stopped) {
        index_match(subs->index, &event->previous_path, event->type, match_one, &m);
    }
    return m.calls;
}

size_t subs_count(const subs_t *subs)
{
    return subs->count;
}
