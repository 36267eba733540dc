#include "dedup.h"

#include <assert.h>
#include <stdlib.h>

#include "hash.h"
#include "mem.h"

/*
 * No pause that grows with the table. The ingest thread answers every publisher, so a
 * table of millions of entries must never be rebuilt in one go: doubling one of 3 M
 * entries took 70 ms, dropping the expired ones 100 ms, and every ack waited that long.
 *
 * So a rebuild moves the entries over a while instead. Growing, or dropping many expired
 * entries at once, starts a fresh table (the *current* one, where adds go) and keeps the
 * previous one read-only as the *moving* one; every add and every lookup moves the next
 * MOVE_PER_CALL slots of it (those still in retention), and a lookup that misses in the
 * current table also probes the moving one. Its slots are not cleared as they move, so
 * its probe runs stay intact; an entry found there that had already moved is the same
 * entry. The fresh table is sized so that what may move into it and what is added during
 * the move keep it at most half full: it never has to grow before the move is done.
 *
 * What expiry costs is then spread too: dedup_expire only records the new oldest seq;
 * lookups drop expired entries on their probe runs, and moves leave them behind.
 *
 * Taking memory is spread too: every lookup and add faults in the next 128 KiB of a
 * fresh table's pages (mem_populate_step) until all are in, about 1 µs a page, where each
 * page touched first by a random slot took a fault of about 11 µs.
 *
 * Giving the memory back is spread as well: unmapping a table of 64 MiB at once took 8
 * ms. Tables are mappings of their own, and the part of the moving table already moved
 * is returned a step at a time as the move goes on (one madvise per 262,144 slots moved,
 * MEM_RELEASE_STEP_BYTES). A lookup never reads that part: an entry not yet moved lies at
 * or after the next slot to move, and the slots from there to it are all taken (linear
 * probing), so its probe may start there, and skip the moved part when it wraps round the
 * end.
 */

#define MIN_CAPACITY 1024
#define MOVE_PER_CALL 8
/* What a table remembers when a seq would lie too far from its base for a slot's 32 bits:
 * it moves to a fresh one, forgetting what lies more than this before the newest. */
#define SEQ_KEPT_ON_REBASE ((uint64_t)1 << 31)

/*
 * A slot is 8 bytes, so that the table, read at a random slot for every event, is half the
 * memory (and half the pages to fault in) it was with the whole hash and seq: the low 32
 * bits of the hash, which give the home slot, and the seq less the table's base. The
 * entries sharing a home slot share its low bits, so in a table of 2^b slots two different
 * events look alike with a chance of 2^-(32-b) per entry compared (1 in 512 at 3 M
 * retained): a false candidate costs a confirmation, never a wrong answer.
 */
struct slot {
    uint32_t tag;   /* the hash's low 32 bits */
    uint32_t delta; /* seq - the table's base; 0: empty */
};

struct table {
    struct slot *slots;
    size_t capacity; /* a power of two, at most 2^32 */
    size_t count;
    uint64_t base; /* below every seq the table holds */
};

struct dedup {
    struct table current;
    struct table moving;    /* slots NULL when no move is under way */
    size_t move_next;       /* the moving table's next slot to move */
    size_t released_bytes;  /* of the moving table, given back */
    size_t populated_bytes; /* of the current table, faulted in (mem_populate_step) */
    uint64_t oldest_seq;    /* entries below are out of retention */
    uint64_t newest_seq;    /* the highest seq added */
};

static struct table table_new(size_t capacity, uint64_t base)
{
    return (struct table){xmap_zeroed(capacity * sizeof(struct slot)), capacity, 0, base};
}

static uint64_t slot_seq(const struct table *t, size_t i)
{
    return t->base + t->slots[i].delta;
}

static void table_free(struct table *t)
{
    mem_unmap(t->slots, t->capacity * sizeof(struct slot));
    *t = (struct table){0};
}

dedup_t *dedup_new(void)
{
    dedup_t *dedup = xcalloc(1, sizeof(*dedup));
    dedup->current = table_new(MIN_CAPACITY, 0);
    dedup->oldest_seq = 1;
    return dedup;
}

void dedup_free(dedup_t *dedup)
{
    if (dedup != NULL) {
        table_free(&dedup->current);
        table_free(&dedup->moving);
        free(dedup);
    }
}

uint64_t dedup_hash(const char *source, size_t source_len, const char *id, size_t id_len)
{
    /* Each step hashes its field's length too (hash.h): ("ab", "c") and ("a", "bc")
     * differ. */
    return hash_bytes(hash_bytes(HASH_SEED, source, source_len), id, id_len);
}

static void remove_at(struct table *t, size_t hole)
{
    size_t mask = t->capacity - 1;
    t->slots[hole].delta = 0;
    t->count--;
    for (size_t i = (hole + 1) & mask; t->slots[i].delta != 0; i = (i + 1) & mask) {
        size_t home = t->slots[i].tag & mask;
        if (hash_may_fill_hole(home, hole, i, mask)) {
            t->slots[hole] = t->slots[i];
            t->slots[i].delta = 0;
            hole = i;
        }
    }
}

static void insert(struct table *t, uint32_t tag, uint64_t seq)
{
    assert(seq > t->base && seq - t->base <= UINT32_MAX);
    size_t mask = t->capacity - 1;
    size_t i = tag & mask;
    while (t->slots[i].delta != 0) {
        i = (i + 1) & mask;
    }
    t->slots[i].tag = tag;
    t->slots[i].delta = (uint32_t)(seq - t->base);
    t->count++;
}

/* Moves up to limit slots of the moving table into the current one, dropping expired
 * entries; frees the moving table once every slot is done. */
static void move_slots(dedup_t *dedup, size_t limit)
{
    struct table *from = &dedup->moving;
    if (from->slots == NULL) {
        return;
    }
    for (size_t n = 0; n < limit && dedup->move_next < from->capacity; n++) {
        size_t i = dedup->move_next++;
        if (from->slots[i].delta == 0) {
            continue;
        }
        from->count--;
        uint64_t seq = slot_seq(from, i);
        if (seq >= dedup->oldest_seq) {
            insert(&dedup->current, from->slots[i].tag, seq);
        }
    }
    if (dedup->move_next == from->capacity) {
        table_free(from);
        return;
    }
    /* Slots below the next one are read no more (see above). */
    mem_release_below(from->slots, dedup->move_next * sizeof(struct slot), &dedup->released_bytes);
}

/* An upper bound of the entries still in retention: seqs are given once each. */
static size_t retained_bound(const dedup_t *dedup)
{
    size_t held = dedup_count(dedup);
    if (dedup->newest_seq < dedup->oldest_seq) {
        return 0;
    }
    uint64_t span = dedup->newest_seq - dedup->oldest_seq + 1;
    return span < held ? (size_t)span : held;
}

/* Starts moving everything into a fresh table (finishing a move under way first). */
static void start_move(dedup_t *dedup)
{
    move_slots(dedup, SIZE_MAX);
    /* At most half full with what may move and what is added while it moves (one add
     * per MOVE_PER_CALL slots), so the fresh table cannot fill up before the move ends. */
    size_t need = retained_bound(dedup) + dedup->current.capacity / MOVE_PER_CALL + 1;
    size_t capacity = MIN_CAPACITY;
    while (capacity < 2 * need) {
        capacity *= 2;
    }
    dedup->moving = dedup->current;
    /* Every seq it will hold, moved or added, is at least the oldest retained. */
    dedup->current = table_new(capacity, dedup->oldest_seq - 1);
    dedup->move_next = 0;
    dedup->released_bytes = 0;
    dedup->populated_bytes = 0;
}

/* What every lookup and add moves on: the current table's pages faulted in a step ahead of
 * the slots the move and the adds write, then the move itself. */
static void advance(dedup_t *dedup)
{
    mem_populate_step(dedup->current.slots, dedup->current.capacity * sizeof(struct slot),
                      &dedup->populated_bytes);
    move_slots(dedup, MOVE_PER_CALL);
}

void dedup_expire(dedup_t *dedup, uint64_t oldest_seq)
{
    if (oldest_seq <= dedup->oldest_seq) {
        return;
    }
    dedup->oldest_seq = oldest_seq;
    /* When a quarter or more has expired, a move leaves it behind; fewer are dropped
     * by the lookups that meet them, or by the next move. */
    size_t held = dedup_count(dedup);
    if (dedup->moving.slots == NULL && held - retained_bound(dedup) >= held / 4 && held > 0) {
        start_move(dedup);
    }
}

/* Keeps the entries with lowest <= seq <= highest, in a table of the same size. */
static void keep_range(struct table *t, uint64_t lowest, uint64_t highest)
{
    struct table fresh = table_new(t->capacity, t->base);
    for (size_t i = 0; i < t->capacity; i++) {
        uint64_t seq = slot_seq(t, i);
        if (t->slots[i].delta != 0 && seq >= lowest && seq <= highest) {
            insert(&fresh, t->slots[i].tag, seq);
        }
    }
    table_free(t);
    *t = fresh;
}

void dedup_forget_after(dedup_t *dedup, uint64_t last_seq)
{
    /* Rare (the store refused a commit), so done at once. */
    move_slots(dedup, SIZE_MAX);
    keep_range(&dedup->current, dedup->oldest_seq, last_seq);
    dedup->populated_bytes = 0;
    if (dedup->newest_seq > last_seq) {
        dedup->newest_seq = last_seq;
    }
}

void dedup_add(dedup_t *dedup, uint64_t hash, uint64_t seq)
{
    advance(dedup);
    if (seq - dedup->current.base > UINT32_MAX) {
        /* Only for a table that did not move over 2^32 seqs (retention moves it long
         * before), and then not again for 2^31 more. */
        dedup_expire(dedup, seq - SEQ_KEPT_ON_REBASE);
        if (seq - dedup->current.base > UINT32_MAX) {
            start_move(dedup);
        }
    }
    if ((dedup->current.count + 1) * 4 > dedup->current.capacity * 3) {
        start_move(dedup);
    }
    insert(&dedup->current, (uint32_t)hash, seq);
    if (seq > dedup->newest_seq) {
        dedup->newest_seq = seq;
    }
}

void dedup_prefetch(const dedup_t *dedup, uint64_t hash)
{
    __builtin_prefetch(&dedup->current.slots[hash & (dedup->current.capacity - 1)]);
    size_t home = hash & (dedup->moving.capacity - 1);
    if (dedup->moving.slots != NULL && home >= dedup->move_next) {
        __builtin_prefetch(&dedup->moving.slots[home]);
    }
}

uint64_t dedup_find(dedup_t *dedup, uint64_t hash, uint64_t oldest_seq, dedup_confirm_fn confirm,
                    void *ctx)
{
    advance(dedup);
    /* The caller knows the store's oldest seq; moves leave behind what lies below it. */
    if (oldest_seq > dedup->oldest_seq) {
        dedup->oldest_seq = oldest_seq;
    }
    oldest_seq = dedup->oldest_seq;
    uint32_t tag = (uint32_t)hash;
    struct table *t = &dedup->current;
    size_t mask = t->capacity - 1;
    for (size_t i = tag & mask; t->slots[i].delta != 0;) {
        uint64_t seq = slot_seq(t, i);
        if (seq < oldest_seq) {
            remove_at(t, i); /* the slot now holds the next entry of the run, or none */
            continue;
        }
        if (t->slots[i].tag == tag && confirm(seq, ctx)) {
            return seq;
        }
        i = (i + 1) & mask;
    }
    /* Read-only: removing here would break the runs the move has yet to read. Only slots
     * from the next one to move on are read (see above), at most all of them once. */
    const struct table *m = &dedup->moving;
    if (m->slots != NULL) {
        size_t i = tag & (m->capacity - 1);
        i = i < dedup->move_next ? dedup->move_next : i;
        for (size_t left = m->capacity - dedup->move_next; left > 0 && m->slots[i].delta != 0;
             left--) {
            uint64_t seq = slot_seq(m, i);
            if (seq >= oldest_seq && m->slots[i].tag == tag && confirm(seq, ctx)) {
                return seq;
            }
            i = i + 1 == m->capacity ? dedup->move_next : i + 1;
        }
    }
    return 0;
}

size_t dedup_count(const dedup_t *dedup)
{
    return dedup->current.count + dedup->moving.count;
}

size_t dedup_table_bytes(const dedup_t *dedup)
{
    size_t bytes = dedup->current.capacity * sizeof(struct slot);
    if (dedup->moving.slots != NULL) { /* only the part not given back yet */
        bytes += dedup->moving.capacity * sizeof(struct slot) - dedup->released_bytes;
    }
    return bytes;
}
