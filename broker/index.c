#include "index.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "mem.h"

/*
 * The trie of index.h. Each node stands for one pattern prefix and owns a copy of its last
 * segment, so that a node can be found again in its parent's table when it is pruned.
 *
 * Literal children live in a small open-addressing table (linear probing, capacity a power
 * of two, load at most 3/4, doubled when full). Deletion shifts later members of the probe
 * run back instead of leaving tombstones, so a table that sees many adds and removes never
 * degrades and lookups stop at the first empty slot. Each child keeps its segment's hash,
 * so growing and shifting never rehash bytes. A node with no literal children has no table.
 *
 * The `*` child sits in its own slot rather than in the table: the walk wants it at every
 * depth without a lookup, and a resource can never contain a `*` segment (path.h), so the
 * table needs no special key.
 *
 * Entries are kept in an unordered array per node; removal swaps in the last one. A node
 * is empty when it has no entries and no children; remove frees empty nodes from the
 * bottom up to (not including) the root, so an index returns to one node when its last
 * entry goes.
 *
 * The hash is 64-bit FNV-1a, which is not keyed. Subscription paths come from clients, so
 * a table could be fed colliding segments on purpose; the subscription limits bound how
 * long a probe run can get, and a keyed hash (SipHash) is the remedy if that ever matters.
 */

#define CHILD_TABLE_MIN_CAPACITY 4

struct entry {
    void *value;
    unsigned mask;
};

/* Memory matters here (one node per distinct pattern, millions of them): the segment
 * lives inside the node, counts are 32-bit, and the first entry has a slot of its own, so
 * a node with one entry — the usual case — is a single allocation. */
struct node {
    struct node *parent;
    struct node **children; /* literal children, open addressing; NULL when capacity 0 */
    struct node *star;
    struct entry *entries; /* &one while entry_capacity is 1, else an owned array */
    uint64_t hash;         /* of segment, for the parent's table */
    struct entry one;
    uint32_t child_capacity;
    uint32_t child_count;
    uint32_t entry_count;
    uint32_t entry_capacity;
    uint32_t segment_len;
    char segment[]; /* this node's segment, NUL-terminated; empty for the root */
};

struct index {
    struct node *root;
    size_t entry_count;
    size_t node_count;
};

static uint64_t segment_hash(hstr_t segment)
{
    return hash_fnv1a(HASH_FNV1A_SEED, segment.p, segment.len);
}

static bool node_has_segment(const struct node *node, hstr_t segment, uint64_t hash)
{
    return node->hash == hash && node->segment_len == segment.len &&
           memcmp(node->segment, segment.p, segment.len) == 0;
}

static struct node *node_new(struct node *parent, hstr_t segment, uint64_t hash)
{
    struct node *node = xcalloc(1, sizeof(*node) + segment.len + 1);
    node->parent = parent;
    memcpy(node->segment, segment.p, segment.len);
    node->segment_len = (uint32_t)segment.len;
    node->hash = hash;
    node->entries = &node->one;
    node->entry_capacity = 1;
    return node;
}

/* The slot holding the literal child for segment, or the empty slot where it would go.
 * The table must have capacity (and, by the load limit, at least one empty slot). */
static size_t child_slot(const struct node *node, hstr_t segment, uint64_t hash)
{
    size_t mask = node->child_capacity - 1;
    size_t i = (size_t)hash & mask;

    while (node->children[i] != NULL && !node_has_segment(node->children[i], segment, hash)) {
        i = (i + 1) & mask;
    }
    return i;
}

static struct node *child_find(const struct node *node, hstr_t segment)
{
    if (node->child_count == 0) {
        return NULL;
    }
    return node->children[child_slot(node, segment, segment_hash(segment))];
}

static void children_grow(struct node *node)
{
    struct node **old = node->children;
    size_t old_capacity = node->child_capacity;
    size_t capacity = old_capacity != 0 ? old_capacity * 2 : CHILD_TABLE_MIN_CAPACITY;
    size_t mask = capacity - 1;

    node->children = xcalloc(capacity, sizeof(*node->children));
    node->child_capacity = capacity;
    for (size_t i = 0; i < old_capacity; i++) {
        struct node *child = old[i];
        if (child != NULL) {
            size_t j = (size_t)child->hash & mask;
            while (node->children[j] != NULL) {
                j = (j + 1) & mask;
            }
            node->children[j] = child;
        }
    }
    free(old);
}

/* Inserts child, whose segment is not yet in the table. */
static void children_insert(struct node *node, struct node *child)
{
    hstr_t segment = {child->segment, child->segment_len};

    if ((node->child_count + 1) * 4 > node->child_capacity * 3) {
        children_grow(node);
    }
    size_t i = child_slot(node, segment, child->hash);
    assert(node->children[i] == NULL);
    node->children[i] = child;
    node->child_count++;
}

/* Removes child from the table, shifting the rest of its probe run back so that every
 * member stays reachable from its home slot without a gap. */
static void children_remove(struct node *node, struct node *child)
{
    hstr_t segment = {child->segment, child->segment_len};
    size_t mask = node->child_capacity - 1;
    size_t hole = child_slot(node, segment, child->hash);

    assert(node->children[hole] == child);
    node->children[hole] = NULL;
    node->child_count--;
    if (node->child_count == 0) {
        free(node->children);
        node->children = NULL;
        node->child_capacity = 0;
        return;
    }
    for (size_t j = (hole + 1) & mask; node->children[j] != NULL; j = (j + 1) & mask) {
        size_t home = (size_t)node->children[j]->hash & mask;
        if (hash_may_fill_hole(home, hole, j, mask)) {
            node->children[hole] = node->children[j];
            node->children[j] = NULL;
            hole = j;
        }
    }
}

static bool node_is_empty(const struct node *node)
{
    return node->entry_count == 0 && node->child_count == 0 && node->star == NULL;
}

static void node_free(struct node *node)
{
    if (node == NULL) {
        return;
    }
    /* Recursion depth is bounded by PATH_MAX_SEGMENTS + 1. */
    for (uint32_t i = 0; i < node->child_capacity; i++) {
        node_free(node->children[i]);
    }
    node_free(node->star);
    free(node->children);
    if (node->entries != &node->one) {
        free(node->entries);
    }
    free(node);
}

index_t *index_new(void)
{
    index_t *idx = xcalloc(1, sizeof(*idx));
    idx->root = node_new(NULL, (hstr_t){"", 0}, 0);
    idx->node_count = 1;
    return idx;
}

void index_free(index_t *idx)
{
    if (idx == NULL) {
        return;
    }
    node_free(idx->root);
    free(idx);
}

/* The node for pattern, or NULL when it does not exist. */
static struct node *node_find(const index_t *idx, const path_t *pattern)
{
    struct node *node = idx->root;

    for (size_t i = 0; i < pattern->segment_count && node != NULL; i++) {
        hstr_t segment = pattern->segments[i];
        node = path_segment_is_wildcard(segment) ? node->star : child_find(node, segment);
    }
    return node;
}

static struct entry *entry_find(struct node *node, void *value)
{
    for (size_t i = 0; i < node->entry_count; i++) {
        if (node->entries[i].value == value) {
            return &node->entries[i];
        }
    }
    return NULL;
}

int index_add(index_t *idx, const path_t *pattern, unsigned change_mask, void *value)
{
    struct node *node = idx->root;

    assert(pattern->segment_count >= 1 && pattern->segment_count <= PATH_MAX_SEGMENTS);
    assert(change_mask != 0);

    for (size_t i = 0; i < pattern->segment_count; i++) {
        hstr_t segment = pattern->segments[i];
        struct node *child;
        if (path_segment_is_wildcard(segment)) {
            if (node->star == NULL) {
                node->star = node_new(node, segment, segment_hash(segment));
                idx->node_count++;
            }
            child = node->star;
        } else {
            uint64_t hash = segment_hash(segment);
            child = NULL;
            if (node->child_count != 0) {
                child = node->children[child_slot(node, segment, hash)];
            }
            if (child == NULL) {
                child = node_new(node, segment, hash);
                children_insert(node, child);
                idx->node_count++;
            }
        }
        node = child;
    }

    struct entry *entry = entry_find(node, value);
    if (entry != NULL) {
        /* The same (pattern, value) again: the new mask replaces the old one. */
        entry->mask = change_mask;
        return 0;
    }
    if (node->entry_count == node->entry_capacity) {
        uint32_t capacity = node->entry_capacity * 2;
        struct entry *entries = xmalloc(capacity * sizeof(*entries));
        memcpy(entries, node->entries, node->entry_count * sizeof(*entries));
        if (node->entries != &node->one) {
            free(node->entries);
        }
        node->entries = entries;
        node->entry_capacity = capacity;
    }
    node->entries[node->entry_count++] = (struct entry){value, change_mask};
    idx->entry_count++;
    return 0;
}

int index_remove(index_t *idx, const path_t *pattern, void *value)
{
    struct node *node = node_find(idx, pattern);
    if (node == NULL) {
        return HEROLD_E_NOT_FOUND;
    }
    struct entry *entry = entry_find(node, value);
    if (entry == NULL) {
        return HEROLD_E_NOT_FOUND;
    }

    *entry = node->entries[--node->entry_count];
    idx->entry_count--;
    if (node->entries != &node->one && node->entry_count <= 1) {
        /* Back to the node's own slot. */
        node->one = node->entries[0];
        free(node->entries);
        node->entries = &node->one;
        node->entry_capacity = 1;
    } else if (node->entry_count * 4 <= node->entry_capacity && node->entry_capacity > 8) {
        node->entry_capacity /= 2;
        node->entries = xrealloc(node->entries, node->entry_capacity * sizeof(*node->entries));
    }

    while (node != idx->root && node_is_empty(node)) {
        struct node *parent = node->parent;
        if (parent->star == node) {
            parent->star = NULL;
        } else {
            children_remove(parent, node);
        }
        node_free(node);
        idx->node_count--;
        node = parent;
    }
    return 0;
}

struct match {
    const path_t *resource;
    unsigned change;
    index_match_fn fn;
    void *ctx;
    size_t calls;
};

/*
 * Reports the entries of node (reached after depth resource segments) and of every node
 * below it that the rest of the resource reaches. Follows the literal child in the loop and
 * recurses only for the `*` child, so the stack holds at most one frame per segment.
 * Returns false once fn has asked to stop.
 */
static bool match_from(struct match *m, const struct node *node, size_t depth)
{
    for (;;) {
        for (size_t i = 0; i < node->entry_count; i++) {
            if ((node->entries[i].mask & m->change) != 0) {
                m->calls++;
                if (!m->fn(node->entries[i].value, m->ctx)) {
                    return false;
                }
            }
        }
        if (depth == m->resource->segment_count) {
            return true;
        }
        if (node->star != NULL && !match_from(m, node->star, depth + 1)) {
            return false;
        }
        node = child_find(node, m->resource->segments[depth]);
        if (node == NULL) {
            return true;
        }
        depth++;
    }
}

size_t index_match(const index_t *idx, const path_t *resource, unsigned change, index_match_fn fn,
                   void *ctx)
{
    struct match m = {resource, change, fn, ctx, 0};

    assert(resource->segment_count <= PATH_MAX_SEGMENTS);
    match_from(&m, idx->root, 0);
    return m.calls;
}

size_t index_entry_count(const index_t *idx)
{
    return idx->entry_count;
}

size_t index_node_count(const index_t *idx)
{
    return idx->node_count;
}
