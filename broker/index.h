#ifndef HEROLD_INDEX_H
#define HEROLD_INDEX_H

/*
 * The matching core: which subscriptions does a change to a resource concern?
 *
 * A trie over path segments. Each node has a hash map of literal children, one slot for
 * the `*` child, and the entries registered at that node. Because a subscription covers
 * its path and everything beneath it, a match walks the resource's segments from the
 * root and collects the entries of every node it passes (the node of each prefix,
 * including the full path). At each depth the walk follows the literal child and the `*`
 * child; literals are walked iteratively, and only `*` branches recurse, so the cost
 * depends on the depth of the resource and the wildcards along it, never on the number
 * of unrelated subscriptions. A node is reached by at most one walk for a given resource,
 * so each entry is reported at most once per call.
 *
 * An entry is (pattern, change mask, opaque value). The index does not own the values.
 * The reader check is not done here: it runs per event after matching (auth.h).
 *
 * index_match allocates nothing. The index is pure (no I/O, clock or locks): one thread
 * owns it, or the caller serialises access.
 */

#include <stdbool.h>
#include <stddef.h>

#include "errors.h"
#include "path.h"

typedef struct index index_t;

/* Called once per matching entry with its value and the caller's context. Returning
 * false stops the walk. */
typedef bool (*index_match_fn)(void *value, void *ctx);

/* A new empty index. Never NULL (out of memory aborts). Release with index_free. */
index_t *index_new(void);

/* Releases the index and its nodes; the values are not touched. NULL is a no-op. */
void index_free(index_t *idx);

/* Registers value under pattern for the changes in mask (EVENT_* bits, non-zero). The
 * same value may be registered under several patterns; registering it again under the
 * same pattern replaces that entry's mask. Copies what it keeps of pattern. Returns 0. */
int index_add(index_t *idx, const path_t *pattern, unsigned change_mask, void *value);

/* Removes the entry (pattern, value) and prunes nodes left empty. Returns 0, or
 * HEROLD_E_NOT_FOUND when there is no such entry (and changes nothing). */
int index_remove(index_t *idx, const path_t *pattern, void *value);

/* Calls fn for every entry whose pattern matches resource and whose mask has a bit of
 * change. Returns the number of calls made. */
size_t index_match(const index_t *idx, const path_t *resource, unsigned change, index_match_fn fn,
                   void *ctx);

/* The number of entries. */
size_t index_entry_count(const index_t *idx);

/* The number of trie nodes, the root included (1 for an empty index). */
size_t index_node_count(const index_t *idx);

#endif
