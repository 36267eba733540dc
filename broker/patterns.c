#include "patterns.h"

#include <assert.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "mem.h"
#include "ptable.h"
#include "recpool.h"
#include "subs.h"

/*
 * Layout, chosen for a million subscriptions and more.
 *
 * The table of literal patterns is a ptable (ptable.h): tagged pointers to the records,
 * doubling over a while, so that no subscription change holds matching up for long. A
 * text's hash chains its segments (hash.h), from a random seed per table, so that a match
 * extends the hash of one prefix of the resource to the next: not a keyed hash in the
 * cryptographic sense, but a client cannot precompute colliding patterns offline; the
 * subscription limits bound what it can do online, and SipHash is the remedy if that ever
 * matters.
 *
 * A pattern record is its text and one member inline (the usual personal folder has one
 * follower); anything more (members, the filing, wildcard patterns under this prefix)
 * lives in a `struct more` made on first need. Records of up to POOLED_RECORD_MAX bytes
 * come from pools by size in steps of 8 (recpool.h): most subscriptions have a record of
 * their own, and malloc's header and 16-byte steps made a 41-byte one take 64.
 *
 * The filing of a large pattern: entries grouped by bucket, bucket b holding entries
 * [dir[b], dir[b+1]). An entry is (tag << 16) | slot, where the principal id's 32-bit
 * multiplicative hash gives the bucket (its top bits) and the tag (its low 16 bits). The
 * directory has about one bucket per four entries and is rebuilt from the members when
 * the count leaves [buckets, 8 × buckets). Joining merges the new entries in one pass from
 * the back; leaving marks the member's entries and compacts once.
 */

#define SCAN_BY_NAME_MAX 4
#define CHUNK_BITS 12
#define CHUNK_MEMBERS (1u << CHUNK_BITS)
_Static_assert(CHUNK_MEMBERS == PATTERNS_FILING_CHUNK, "one chunk size");
#define CHUNK_MASK (CHUNK_MEMBERS - 1)
#define ENTRY_REMOVED UINT32_MAX /* local slot 0xffff is never used */
#define OWNER_IDS_MAX (AUTH_MAX_GROUPS + 1)
#define POOLED_RECORD_MAX 256 /* bytes; larger pattern records come from malloc */
#define RECORD_POOLS (POOLED_RECORD_MAX / 8 + 1) /* by bytes / 8 */

enum pattern_flags {
    PATTERN_MORE = 1, /* u.more, not u.one */
    PATTERN_WILD = 2, /* has `*` segments: lives in its prefix's wild list */
};

struct filing {
    uint32_t *entries;
    uint32_t *dir; /* buckets + 1 offsets; NULL while the pattern scans */
    uint32_t count;
    uint32_t capacity;
    uint32_t bucket_bits;
};

struct more {
    uint32_t capacity;      /* of members; 0 for a prefix that only holds wild ones */
    uint32_t wild_count;    /* patterns with `*` whose literal prefix is this text */
    uint32_t wild_capacity; /* 1: the one inline */
    union {
        struct pattern *one;
        struct pattern **many;
    } wild;
    struct filing **filings; /* one per chunk of members; NULL while the pattern scans */
    /* In the same block, which moves as it grows (only the record points to it): a match
     * goes from the record to its members with one cache miss less. */
    struct sub *members[];
};

struct pattern {
    union {
        struct sub *one;
        struct more *more;
    } u;
    uint32_t count; /* members */
    uint16_t len;
    uint8_t flags;
    uint8_t segments;
    char text[]; /* NUL-terminated */
};

struct patterns {
    ptable_t literals; /* literal patterns (and prefixes holding wildcard ones) by text */
    /* Records in literals by their segments; a match probes no prefix of a length that
     * none has (the deep prefixes of documents in subscribed folders, mostly). */
    uint32_t literals_by_segments[PATH_MAX_SEGMENTS + 1];
    size_t literal_segments_max; /* the most segments of a record in literals; 0 when none */
    uint64_t seed;
    size_t pattern_count; /* with members */
    struct pattern *root; /* holds the patterns whose first segment is `*` */
    const principals_t *principals;
    recpool_t records_by_size[RECORD_POOLS];
};

/* ---- records ---- */

static struct sub *const *members_of(const struct pattern *p)
{
    return (p->flags & PATTERN_MORE) != 0 ? p->u.more->members : &p->u.one;
}

static struct more *more_of(const struct pattern *p)
{
    return (p->flags & PATTERN_MORE) != 0 ? p->u.more : NULL;
}

static struct pattern *const *wild_of(const struct more *more)
{
    return more->wild_capacity <= 1 ? &more->wild.one : more->wild.many;
}

static struct more *ensure_more(struct pattern *p)
{
    if ((p->flags & PATTERN_MORE) == 0) {
        uint32_t capacity = p->count == 1 ? 2 : 0;
        struct more *more = xcalloc(1, sizeof(*more) + capacity * sizeof(*more->members));
        more->capacity = capacity;
        if (p->count == 1) {
            more->members[0] = p->u.one;
        }
        p->u.more = more;
        p->flags |= PATTERN_MORE;
    }
    return p->u.more;
}

/* The pool a record of a text of len bytes comes from, or NULL for malloc. */
static recpool_t *record_pool(patterns_t *t, size_t len)
{
    size_t bytes = (sizeof(struct pattern) + len + 1 + 7) & ~(size_t)7;
    return bytes <= POOLED_RECORD_MAX ? &t->records_by_size[bytes / 8] : NULL;
}

static struct pattern *pattern_new(patterns_t *t, const char *text, size_t len, bool is_wild)
{
    assert(len <= UINT16_MAX);
    recpool_t *pool = record_pool(t, len);
    struct pattern *p = pool != NULL ? recpool_get(pool) : xcalloc(1, sizeof(*p) + len + 1);
    memcpy(p->text, text, len);
    p->len = (uint16_t)len;
    p->flags = is_wild ? PATTERN_WILD : 0;
    unsigned segments = 0;
    for (size_t i = 0; i < len; i++) {
        segments += text[i] == '/';
    }
    p->segments = (uint8_t)segments;
    return p;
}

static void filings_free(struct more *more, uint32_t count);

static void pattern_free(patterns_t *t, struct pattern *p)
{
    struct more *more = more_of(p);
    if (more != NULL) {
        filings_free(more, p->count);
        if (more->wild_capacity > 1) {
            free(more->wild.many);
        }
        free(more);
    }
    recpool_t *pool = record_pool(t, p->len);
    if (pool != NULL) {
        recpool_put(pool, p);
    } else {
        free(p);
    }
}

/* Does pattern p (its `*` segments matching any one segment) cover path, from segment
 * first on, whose text starts at `at`? Walks the text once: segments hold no NUL
 * (path.h), so a byte loop stops at the text's end by itself. */
static bool pattern_covers_from(const struct pattern *p, const path_t *path, size_t first,
                                const char *at)
{
    if (p->segments > path->segment_count) {
        return false;
    }
    for (size_t i = first; i < p->segments; i++) {
        if (at[0] == '*' && (at[1] == '/' || at[1] == '\0')) {
            at += 2;
            continue;
        }
        hstr_t seg = path->segments[i];
        for (size_t j = 0; j < seg.len; j++) {
            if (at[j] != seg.p[j]) {
                return false;
            }
        }
        if (at[seg.len] != '/' && at[seg.len] != '\0') {
            return false;
        }
        at += seg.len + 1;
    }
    return true;
}

static bool pattern_covers(const struct pattern *p, const path_t *path)
{
    return pattern_covers_from(p, path, 0, p->text + 1);
}

/* Is p's text exactly the first k segments of path? */
static bool pattern_is_prefix(const struct pattern *p, const path_t *path, size_t k)
{
    return p->segments == k && pattern_covers(p, path);
}

/* ---- the table of literal patterns ---- */

/* The hash of a literal text ("/a/b"): its segments chained, as match_path extends it. */
static uint64_t text_hash(const patterns_t *t, const char *text, size_t len)
{
    uint64_t hash = t->seed;
    size_t start = 1;
    for (size_t i = 1; i <= len; i++) {
        if (i == len || text[i] == '/') {
            hash = hash_bytes(hash, text + start, i - start);
            start = i + 1;
        }
    }
    return hash;
}

static uint64_t pattern_hash(const void *item, const void *ctx)
{
    const struct pattern *p = item;
    return text_hash(ctx, p->text, p->len);
}

static struct pattern *literal_find(const patterns_t *t, const char *text, size_t len,
                                    uint64_t hash)
{
    ptable_probe_t probe = ptable_probe(&t->literals, hash);
    for (struct pattern *p; (p = ptable_next(&t->literals, &probe)) != NULL;) {
        if (p->len == len && memcmp(p->text, text, len) == 0) {
            return p;
        }
    }
    return NULL;
}

/* The literal pattern with this text, made (without members) when missing. */
static struct pattern *literal_get(patterns_t *t, const char *text, size_t len)
{
    uint64_t hash = text_hash(t, text, len);
    struct pattern *p = literal_find(t, text, len, hash);
    if (p == NULL) {
        p = pattern_new(t, text, len, false);
        ptable_insert(&t->literals, p, hash);
        t->literals_by_segments[p->segments]++;
        if (p->segments > t->literal_segments_max) {
            t->literal_segments_max = p->segments;
        }
    }
    return p;
}

/* The length of a wildcard pattern's literal prefix: the text before its first `*`
 * segment, without the slash. */
static size_t literal_prefix_len(const char *text, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (text[i] == '/' && text[i + 1] == '*' && (i + 2 == len || text[i + 2] == '/')) {
            return i;
        }
    }
    return len;
}

/* The record that holds wildcard patterns under text[0..prefix_len). */
static struct pattern *prefix_holder(patterns_t *t, const char *text, size_t prefix_len)
{
    return prefix_len == 0 ? t->root : literal_get(t, text, prefix_len);
}

static struct pattern *wild_get(patterns_t *t, const char *text, size_t len)
{
    struct pattern *holder = prefix_holder(t, text, literal_prefix_len(text, len));
    struct more *more = ensure_more(holder);
    struct pattern *const *wild = wild_of(more);
    for (uint32_t i = 0; i < more->wild_count; i++) {
        if (wild[i]->len == len && memcmp(wild[i]->text, text, len) == 0) {
            return wild[i];
        }
    }
    struct pattern *w = pattern_new(t, text, len, true);
    if (more->wild_capacity == 0) {
        more->wild_capacity = 1;
        more->wild.one = w;
    } else if (more->wild_capacity == 1 && more->wild_count == 0) {
        more->wild.one = w;
    } else {
        if (more->wild_capacity == 1) {
            struct pattern **many = xmalloc(4 * sizeof(*many));
            many[0] = more->wild.one;
            more->wild.many = many;
            more->wild_capacity = 4;
        } else if (more->wild_count == more->wild_capacity) {
            more->wild_capacity *= 2;
            more->wild.many =
                xrealloc(more->wild.many, more->wild_capacity * sizeof(*more->wild.many));
        }
        more->wild.many[more->wild_count] = w;
    }
    more->wild_count++;
    return w;
}

/* Frees a literal pattern that holds nothing any more. */
static void literal_drop_if_empty(patterns_t *t, struct pattern *p)
{
    struct more *more = more_of(p);
    if (p == t->root || p->count != 0 || (more != NULL && more->wild_count != 0)) {
        return;
    }
    ptable_remove(&t->literals, p, text_hash(t, p->text, p->len));
    t->literals_by_segments[p->segments]--;
    while (t->literal_segments_max > 0 && t->literals_by_segments[t->literal_segments_max] == 0) {
        t->literal_segments_max--;
    }
    pattern_free(t, p);
}

static void pattern_drop(patterns_t *t, struct pattern *p)
{
    if ((p->flags & PATTERN_WILD) == 0) {
        literal_drop_if_empty(t, p);
        return;
    }
    size_t prefix_len = literal_prefix_len(p->text, p->len);
    struct pattern *holder;
    if (prefix_len == 0) {
        holder = t->root;
    } else {
        holder = literal_find(t, p->text, prefix_len, text_hash(t, p->text, prefix_len));
    }
    struct more *more = more_of(holder);
    assert(more != NULL);
    struct pattern **wild = more->wild_capacity <= 1 ? &more->wild.one : more->wild.many;
    for (uint32_t i = 0; i < more->wild_count; i++) {
        if (wild[i] == p) {
            wild[i] = wild[--more->wild_count];
            break;
        }
    }
    pattern_free(t, p);
    literal_drop_if_empty(t, holder);
}

/* ---- the filing of a large pattern ---- */

static inline uint32_t principal_hash(uint32_t id)
{
    return id * 0x9e3779b1u;
}

static inline uint32_t filing_bucket(const struct filing *f, uint32_t hash)
{
    return f->bucket_bits == 0 ? 0 : hash >> (32 - f->bucket_bits);
}

static inline uint32_t filing_entry(uint32_t hash, uint32_t local_slot)
{
    return (hash << 16) | local_slot;
}

/* The members chunk c of a pattern with count members has. */
static uint32_t chunk_members(uint32_t count, uint32_t c)
{
    uint32_t after = count - (c << CHUNK_BITS);
    return after < CHUNK_MEMBERS ? after : CHUNK_MEMBERS;
}

static void filing_free(struct filing *f)
{
    if (f != NULL) {
        free(f->entries);
        free(f->dir);
        free(f);
    }
}

/* A filing of the n members at members[0..n), made anew. */
static struct filing *filing_build(struct sub *const *members, uint32_t n)
{
    struct filing *f = xcalloc(1, sizeof(*f));
    size_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        total += members[i]->owner_set->count;
    }
    uint32_t bits = 0;
    while (bits < 16 && ((size_t)4 << bits) < total) {
        bits++;
    }
    f->bucket_bits = bits;
    size_t buckets = (size_t)1 << bits;
    f->dir = xcalloc(buckets + 1, sizeof(*f->dir));
    f->capacity = (uint32_t)total;
    f->entries = total > 0 ? xmalloc(total * sizeof(*f->entries)) : NULL;
    f->count = (uint32_t)total;
    /* A counting sort by bucket: counts, then starts, then placement. */
    for (uint32_t i = 0; i < n; i++) {
        const owner_set_t *o = members[i]->owner_set;
        for (uint32_t k = 0; k < o->count; k++) {
            f->dir[filing_bucket(f, principal_hash(o->ids[k])) + 1]++;
        }
    }
    for (size_t b = 0; b < buckets; b++) {
        f->dir[b + 1] += f->dir[b];
    }
    uint32_t *next = xmalloc(buckets * sizeof(*next));
    memcpy(next, f->dir, buckets * sizeof(*next));
    for (uint32_t i = 0; i < n; i++) {
        const owner_set_t *o = members[i]->owner_set;
        for (uint32_t k = 0; k < o->count; k++) {
            uint32_t hash = principal_hash(o->ids[k]);
            f->entries[next[filing_bucket(f, hash)]++] = filing_entry(hash, i);
        }
    }
    free(next);
    return f;
}

/* Rebuilds chunk c when its buckets hold fewer than one or more than eight entries on
 * average. */
static void filing_rebalance(struct more *more, uint32_t count, uint32_t c)
{
    struct filing *f = more->filings[c];
    size_t buckets = (size_t)1 << f->bucket_bits;
    if ((f->count > 8 * buckets && f->bucket_bits < 16) || (f->count < buckets && buckets > 1)) {
        filing_free(f);
        more->filings[c] =
            filing_build(more->members + ((size_t)c << CHUNK_BITS), chunk_members(count, c));
    }
}

struct filing_new {
    uint32_t bucket;
    uint32_t entry;
};

/* Merges sub's entries (at local_slot) into f in one pass from the back. */
static void filing_add(struct filing *f, const struct sub *sub, uint32_t local_slot)
{
    const owner_set_t *o = sub->owner_set;
    struct filing_new add[OWNER_IDS_MAX];
    uint32_t m = o->count;
    for (uint32_t k = 0; k < m; k++) {
        uint32_t hash = principal_hash(o->ids[k]);
        struct filing_new n = {filing_bucket(f, hash), filing_entry(hash, local_slot)};
        uint32_t j = k;
        while (j > 0 && add[j - 1].bucket > n.bucket) {
            add[j] = add[j - 1];
            j--;
        }
        add[j] = n;
    }
    if (f->count + m > f->capacity) {
        f->capacity = f->capacity + f->capacity / 8 + m; /* memory over copying */
        f->entries = xrealloc(f->entries, f->capacity * sizeof(*f->entries));
    }
    uint32_t j = m;
    uint32_t write = f->count + m;
    for (uint32_t b = (1u << f->bucket_bits) - 1; j > 0; b--) {
        uint32_t old_start = f->dir[b];
        uint32_t old_end = f->dir[b + 1];
        f->dir[b + 1] = old_end + j;
        while (j > 0 && add[j - 1].bucket == b) {
            f->entries[--write] = add[--j].entry;
        }
        uint32_t n = old_end - old_start;
        write -= n;
        memmove(f->entries + write, f->entries + old_start, n * sizeof(*f->entries));
    }
    f->count += m;
}

/* The position of an entry equal to value in the bucket of hash, or UINT32_MAX. */
static uint32_t filing_find(const struct filing *f, uint32_t hash, uint32_t value)
{
    uint32_t b = filing_bucket(f, hash);
    for (uint32_t i = f->dir[b]; i < f->dir[b + 1]; i++) {
        if (f->entries[i] == value) {
            return i;
        }
    }
    return UINT32_MAX;
}

/* Removes the entries of sub at local_slot: marks them, then compacts once. */
static void filing_remove(struct filing *f, const struct sub *sub, uint32_t local_slot)
{
    const owner_set_t *o = sub->owner_set;
    uint32_t first_bucket = UINT32_MAX;
    for (uint32_t k = 0; k < o->count; k++) {
        uint32_t hash = principal_hash(o->ids[k]);
        uint32_t at = filing_find(f, hash, filing_entry(hash, local_slot));
        assert(at != UINT32_MAX);
        f->entries[at] = ENTRY_REMOVED;
        uint32_t b = filing_bucket(f, hash);
        first_bucket = b < first_bucket ? b : first_bucket;
    }
    if (first_bucket == UINT32_MAX) {
        return;
    }
    uint32_t buckets = 1u << f->bucket_bits;
    uint32_t write = f->dir[first_bucket];
    uint32_t start = write;
    for (uint32_t b = first_bucket; b < buckets; b++) {
        uint32_t end = f->dir[b + 1];
        f->dir[b] = write;
        for (uint32_t i = start; i < end; i++) {
            if (f->entries[i] != ENTRY_REMOVED) {
                f->entries[write++] = f->entries[i];
            }
        }
        start = end;
    }
    f->dir[buckets] = write;
    f->count = write;
}

/* sub moved from local slot from to local slot to of the same chunk: rewrites its
 * entries in place. */
static void filing_reslot(struct filing *f, const struct sub *sub, uint32_t from, uint32_t to)
{
    const owner_set_t *o = sub->owner_set;
    for (uint32_t k = 0; k < o->count; k++) {
        uint32_t hash = principal_hash(o->ids[k]);
        uint32_t at = filing_find(f, hash, filing_entry(hash, from));
        assert(at != UINT32_MAX);
        f->entries[at] = filing_entry(hash, to);
    }
}

static void filings_free(struct more *more, uint32_t count)
{
    if (more->filings == NULL) {
        return;
    }
    uint32_t chunks = (count + CHUNK_MEMBERS - 1) >> CHUNK_BITS;
    for (uint32_t c = 0; c < chunks; c++) {
        filing_free(more->filings[c]);
    }
    free(more->filings);
    more->filings = NULL;
}

static void filings_build(struct pattern *p)
{
    struct more *more = p->u.more;
    uint32_t chunks = (p->count + CHUNK_MEMBERS - 1) >> CHUNK_BITS;
    more->filings = xmalloc(chunks * sizeof(*more->filings));
    for (uint32_t c = 0; c < chunks; c++) {
        more->filings[c] =
            filing_build(more->members + ((size_t)c << CHUNK_BITS), chunk_members(p->count, c));
    }
}

/* ---- members ---- */

static void member_add(struct pattern *p, struct sub *sub)
{
    uint32_t slot = p->count;
    if (slot == 0 && (p->flags & PATTERN_MORE) == 0) {
        p->u.one = sub;
    } else {
        struct more *more = ensure_more(p);
        if (slot == more->capacity) {
            uint32_t capacity =
                more->capacity < 4 ? more->capacity + 2 : more->capacity + more->capacity / 2;
            more = xrealloc(more, sizeof(*more) + capacity * sizeof(*more->members));
            more->capacity = capacity;
            p->u.more = more;
        }
        more->members[slot] = sub;
    }
    sub->pattern = p;
    sub->pattern_slot = slot;
    p->count++;
    struct more *more = more_of(p);
    if (more == NULL) {
        return;
    }
    if (more->filings != NULL) {
        uint32_t c = slot >> CHUNK_BITS;
        if ((slot & CHUNK_MASK) == 0) {
            more->filings = xrealloc(more->filings, (c + 1) * sizeof(*more->filings));
            more->filings[c] = filing_build(NULL, 0);
        }
        filing_add(more->filings[c], sub, slot & CHUNK_MASK);
        filing_rebalance(more, p->count, c);
    } else if (p->count == PATTERNS_FILING_MIN) {
        filings_build(p);
    }
}

static void member_remove(struct pattern *p, struct sub *sub)
{
    uint32_t slot = sub->pattern_slot;
    uint32_t last = p->count - 1;
    struct more *more = more_of(p);
    if (more == NULL) {
        assert(p->u.one == sub);
        p->u.one = NULL;
        p->count = 0;
        return;
    }
    assert(more->members[slot] == sub);
    uint32_t c = slot >> CHUNK_BITS;
    uint32_t last_c = last >> CHUNK_BITS;
    bool is_filed = more->filings != NULL;
    if (is_filed) {
        filing_remove(more->filings[c], sub, slot & CHUNK_MASK);
    }
    if (slot != last) {
        struct sub *moved = more->members[last];
        more->members[slot] = moved;
        moved->pattern_slot = slot;
        if (is_filed && c == last_c) {
            filing_reslot(more->filings[c], moved, last & CHUNK_MASK, slot & CHUNK_MASK);
        } else if (is_filed) {
            filing_remove(more->filings[last_c], moved, last & CHUNK_MASK);
            filing_add(more->filings[c], moved, slot & CHUNK_MASK);
        }
    }
    p->count--;
    if (!is_filed) {
        return;
    }
    if (p->count < PATTERNS_FILING_MIN / 2) {
        filings_free(more, p->count + 1);
        return;
    }
    if ((p->count & CHUNK_MASK) == 0) {
        filing_free(more->filings[last_c]); /* the last chunk is empty now */
        more->filings[last_c] = NULL;
        if (c == last_c) {
            return;
        }
    } else if (last_c != c) {
        filing_rebalance(more, p->count, last_c);
    }
    filing_rebalance(more, p->count, c);
}

/* ---- the index ---- */

patterns_t *patterns_new(const principals_t *principals)
{
    patterns_t *t = xcalloc(1, sizeof(*t));
    ptable_init(&t->literals, pattern_hash, t);
    if (RAND_bytes((unsigned char *)&t->seed, sizeof(t->seed)) != 1) {
        fprintf(stderr, "herold: RAND_bytes failed\n");
        abort();
    }
    for (size_t i = 0; i < RECORD_POOLS; i++) {
        recpool_init(&t->records_by_size[i], i * 8);
    }
    t->root = pattern_new(t, "", 0, false);
    t->principals = principals;
    return t;
}

void patterns_free(patterns_t *t)
{
    if (t == NULL) {
        return;
    }
    assert(t->literals.count == 0 && t->pattern_count == 0);
    pattern_free(t, t->root);
    ptable_destroy(&t->literals);
    for (size_t i = 0; i < RECORD_POOLS; i++) {
        recpool_destroy(&t->records_by_size[i]);
    }
    free(t);
}

void patterns_join(patterns_t *t, struct sub *sub, const char *text, size_t len)
{
    bool is_wild = literal_prefix_len(text, len) != len;
    struct pattern *p = is_wild ? wild_get(t, text, len) : literal_get(t, text, len);
    if (p->count == 0) {
        t->pattern_count++;
    }
    member_add(p, sub);
}

void patterns_leave(patterns_t *t, struct sub *sub)
{
    struct pattern *p = sub->pattern;
    member_remove(p, sub);
    sub->pattern = NULL;
    if (p->count == 0) {
        t->pattern_count--;
        pattern_drop(t, p);
    }
}

size_t patterns_maintain(patterns_t *t, size_t slots)
{
    return ptable_maintain(&t->literals, slots);
}

size_t patterns_table_bytes(const patterns_t *t)
{
    return ptable_bytes(&t->literals);
}

size_t patterns_record_pool_bytes(const patterns_t *t)
{
    size_t bytes = 0;
    for (size_t i = 0; i < RECORD_POOLS; i++) {
        bytes += t->records_by_size[i].block_bytes;
    }
    return bytes;
}

const char *patterns_text(const pattern_t *pattern)
{
    return pattern->text;
}

size_t patterns_text_len(const pattern_t *pattern)
{
    return pattern->len;
}

size_t patterns_count(const patterns_t *t)
{
    return t->pattern_count;
}

bool patterns_is_filed(const pattern_t *pattern)
{
    const struct more *more = more_of(pattern);
    return more != NULL && more->filings != NULL;
}

/* ---- matching ---- */

struct match {
    const patterns_t *t;
    const event_t *event;
    patterns_match_fn fn;
    void *ctx;
    size_t calls;
    bool is_stopped;
    bool has_reader_ids;
    reader_ids_t readers;
};

static void readers_translate(struct match *m)
{
    if (!m->has_reader_ids) {
        principals_readers(m->t->principals, m->event->readers, m->event->reader_count,
                           &m->readers);
        m->has_reader_ids = true;
    }
}

static bool deliver(struct match *m, struct sub *sub)
{
    m->calls++;
    if (!m->fn(sub, m->ctx)) {
        m->is_stopped = true;
        return false;
    }
    return true;
}

static bool wants_type(const struct match *m, const struct sub *sub)
{
    return (sub->change_mask & (unsigned)m->event->type) != 0;
}

#define READER_CHUNK 32
#define CANDIDATE_BATCH 64

/* Checks and reports a batch of candidates of a filed pattern: the member at slots[i],
 * found under reader ids[i]. Each stage fetches what the next one reads for the whole
 * batch first (the member pointer, the record, the owner's ids), so that the cache misses
 * of a batch overlap instead of queueing. */
static bool deliver_candidates(struct match *m, struct sub *const *members, const uint32_t *slots,
                               const uint32_t *ids, size_t n)
{
    struct sub *subs[CANDIDATE_BATCH];
    for (size_t i = 0; i < n; i++) {
        __builtin_prefetch(&members[slots[i]]);
    }
    for (size_t i = 0; i < n; i++) {
        subs[i] = members[slots[i]];
        __builtin_prefetch(subs[i]);
    }
    for (size_t i = 0; i < n; i++) {
        __builtin_prefetch(subs[i]->owner_set);
    }
    for (size_t i = 0; i < n; i++) {
        struct sub *sub = subs[i];
        if (wants_type(m, sub) && principals_is_first_shared(sub->owner_set, &m->readers, ids[i]) &&
            !deliver(m, sub)) {
            return false;
        }
    }
    return true;
}

/* Members of a filed pattern, chunk by chunk, reader by reader. */
static bool visit_filed(struct match *m, const struct pattern *p)
{
    const struct more *more = p->u.more;
    uint32_t slots[CANDIDATE_BATCH];
    uint32_t ids[CANDIDATE_BATCH];
    size_t candidates = 0;
    uint32_t chunks = (p->count + CHUNK_MEMBERS - 1) >> CHUNK_BITS;
    for (uint32_t c = 0; c < chunks; c++) {
        const struct filing *f = more->filings[c];
        uint32_t base = c << CHUNK_BITS;
        for (size_t start = 0; start < m->readers.count; start += READER_CHUNK) {
            size_t n =
                m->readers.count - start < READER_CHUNK ? m->readers.count - start : READER_CHUNK;
            const uint32_t *chunk = m->readers.ids + start;
            uint32_t hashes[READER_CHUNK];
            uint32_t buckets[READER_CHUNK];
            for (size_t r = 0; r < n; r++) {
                hashes[r] = principal_hash(chunk[r]);
                buckets[r] = filing_bucket(f, hashes[r]);
                __builtin_prefetch(&f->dir[buckets[r]]);
            }
            for (size_t r = 0; r < n; r++) {
                __builtin_prefetch(&f->entries[f->dir[buckets[r]]]);
            }
            for (size_t r = 0; r < n; r++) {
                uint32_t tag = hashes[r] << 16;
                for (uint32_t i = f->dir[buckets[r]]; i < f->dir[buckets[r] + 1]; i++) {
                    uint32_t e = f->entries[i];
                    if ((e & 0xffff0000u) != tag) {
                        continue;
                    }
                    slots[candidates] = base + (e & 0xffffu);
                    ids[candidates] = chunk[r];
                    if (++candidates == CANDIDATE_BATCH) {
                        if (!deliver_candidates(m, more->members, slots, ids, candidates)) {
                            return false;
                        }
                        candidates = 0;
                    }
                }
            }
        }
    }
    return deliver_candidates(m, more->members, slots, ids, candidates);
}

static bool visit(struct match *m, const struct pattern *p)
{
    if (p->count == 0) {
        return true;
    }
    struct sub *const *members = members_of(p);
    bool is_filed = patterns_is_filed(p);
    if (p->count > SCAN_BY_NAME_MAX || is_filed) {
        readers_translate(m);
    }
    if (m->has_reader_ids && m->readers.is_everyone) {
        for (uint32_t i = 0; i < p->count; i++) {
            if (wants_type(m, members[i]) && !deliver(m, members[i])) {
                return false;
            }
        }
        return true;
    }
    if (is_filed) {
        return visit_filed(m, p);
    }
    /* Fetch every member's record at once, so that their misses overlap. */
    for (uint32_t i = 1; i < p->count; i++) {
        __builtin_prefetch(members[i]);
    }
    for (uint32_t i = 0; i < p->count; i++) {
        struct sub *sub = members[i];
        if (!wants_type(m, sub)) {
            continue;
        }
        bool may_read = m->has_reader_ids
                            ? principals_may_read(sub->owner_set, &m->readers)
                            : auth_may_read(sub->owner, m->event->readers, m->event->reader_count);
        if (may_read && !deliver(m, sub)) {
            return false;
        }
    }
    return true;
}

/* Visits the wildcard patterns held by holder that cover path (and, with skip, not skip:
 * those were visited for the other path of a move). */
static bool visit_wild(struct match *m, const struct pattern *holder, const path_t *path,
                       const path_t *skip)
{
    const struct more *more = more_of(holder);
    if (more == NULL) {
        return true;
    }
    /* The holder's text is the path's prefix already: compare what follows it. */
    struct pattern *const *wild = wild_of(more);
    for (uint32_t i = 0; i < more->wild_count; i++) {
        const struct pattern *w = wild[i];
        if (pattern_covers_from(w, path, holder->segments, w->text + holder->len + 1) &&
            (skip == NULL || !pattern_covers(w, skip)) && !visit(m, w)) {
            return false;
        }
    }
    return true;
}

/* A path's prefixes, hashed and probed ahead of its match (match_probed). A match passes
 * over the prefixes in steps, so that the cache misses of one step overlap: hash them and
 * fetch their home slots; find the slots whose tag matches and fetch those records; then
 * compare texts and visit. When several events are matched in turn (patterns_match_many),
 * the steps before the visit run for the events ahead while an earlier one is visited. */
struct probed {
    size_t count; /* prefixes probed: the segments, up to the longest literal's */
    ptable_probe_t probes[PATH_MAX_SEGMENTS];
    const struct pattern *first[PATH_MAX_SEGMENTS];
};

/* Hashes path's prefixes and fetches their home slots. */
static void probe_hash(const patterns_t *t, const path_t *path, struct probed *a)
{
    size_t n = path->segment_count < t->literal_segments_max ? path->segment_count
                                                             : t->literal_segments_max;
    a->count = n;
    uint64_t hash = t->seed;
    for (size_t k = 0; k < n; k++) {
        hash = hash_bytes(hash, path->segments[k].p, path->segments[k].len);
        a->probes[k] = ptable_probe(&t->literals, hash);
        if (t->literals_by_segments[k + 1] != 0) {
            ptable_prefetch(&t->literals, hash);
        }
    }
}

/* Reads the home slots and fetches the first record with a matching tag for each. */
static void probe_first(const patterns_t *t, struct probed *a)
{
    for (size_t k = 0; k < a->count; k++) {
        a->first[k] = NULL;
        if (t->literals_by_segments[k + 1] != 0) {
            a->first[k] = ptable_next(&t->literals, &a->probes[k]);
        }
        if (a->first[k] != NULL) {
            __builtin_prefetch(a->first[k]);
        }
    }
}

/* Fetches what a visit reads first of each likely record: its block of members (or its one
 * member). Run an event ahead of the visit, when the records have arrived. */
static void probe_members(const struct probed *a)
{
    for (size_t k = 0; k < a->count; k++) {
        const struct pattern *p = a->first[k];
        if (p == NULL || p->segments != k + 1 || p->count == 0) {
            continue;
        }
        __builtin_prefetch((p->flags & PATTERN_MORE) != 0 ? (const void *)p->u.more
                                                          : (const void *)p->u.one);
    }
}

static bool match_probed(struct match *m, const path_t *path, const path_t *skip, struct probed *a)
{
    const patterns_t *t = m->t;
    if (!visit_wild(m, t->root, path, skip)) {
        return false;
    }
    for (size_t k = 0; k < a->count; k++) {
        const struct pattern *p = a->first[k];
        while (p != NULL && !pattern_is_prefix(p, path, k + 1)) {
            p = ptable_next(&t->literals, &a->probes[k]);
        }
        if (p == NULL) {
            continue;
        }
        /* A literal prefix of path is a prefix of skip too when it covers skip. */
        if ((skip == NULL || !pattern_covers(p, skip)) && !visit(m, p)) {
            return false;
        }
        if (!visit_wild(m, p, path, skip)) {
            return false;
        }
    }
    return true;
}

static bool match_path(struct match *m, const path_t *path, const path_t *skip)
{
    struct probed a;
    probe_hash(m->t, path, &a);
    probe_first(m->t, &a);
    return match_probed(m, path, skip, &a);
}

/* Field by field: an initializer would zero the 4 KiB of reader ids on every event. */
static void match_start(struct match *m, const patterns_t *t, const event_t *event,
                        patterns_match_fn fn, void *ctx)
{
    m->t = t;
    m->event = event;
    m->fn = fn;
    m->ctx = ctx;
    m->calls = 0;
    m->is_stopped = false;
    m->has_reader_ids = false;
}

size_t patterns_match(const patterns_t *t, const event_t *event, patterns_match_fn fn, void *ctx)
{
    if (event->reader_count == 0) {
        return 0; /* nobody may read it */
    }
    struct match m;
    match_start(&m, t, event, fn, ctx);
    if (match_path(&m, &event->resource_path, NULL) && event->has_previous) {
        match_path(&m, &event->previous_path, &event->resource_path);
    }
    return m.calls;
}

/* Events ahead of the one visited: the members' blocks are fetched for the next event, the
 * records for the one after it, the home slots for the one after that. A fourth step,
 * fetching the members' records, did not pay in W1 (bench/RESULTS.md). */
#define PROBED_AHEAD 3
#define PROBED_RING (PROBED_AHEAD + 1)

size_t patterns_match_many(const patterns_t *t, const event_t *const *events, size_t count,
                           patterns_match_fn fn, void *const *ctxs)
{
    struct probed ring[PROBED_RING];
    struct match m;
    size_t calls = 0;
    for (size_t i = 0; i < count + PROBED_AHEAD; i++) {
        if (i < count) {
            probe_hash(t, &events[i]->resource_path, &ring[i % PROBED_RING]);
        }
        if (i >= 1 && i - 1 < count) {
            probe_first(t, &ring[(i - 1) % PROBED_RING]);
        }
        if (i >= 2 && i - 2 < count) {
            probe_members(&ring[(i - 2) % PROBED_RING]);
        }
        if (i < PROBED_AHEAD || i - PROBED_AHEAD >= count) {
            continue;
        }
        size_t e = i - PROBED_AHEAD;
        const event_t *event = events[e];
        if (event->reader_count == 0) {
            continue; /* nobody may read it */
        }
        match_start(&m, t, event, fn, ctxs[e]);
        if (match_probed(&m, &event->resource_path, NULL, &ring[e % PROBED_RING]) &&
            event->has_previous) {
            match_path(&m, &event->previous_path, &event->resource_path);
        }
        calls += m.calls;
    }
    return calls;
}
