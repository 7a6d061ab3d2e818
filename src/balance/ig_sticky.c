/* The routing-key table of the manual policy (ig_sticky.h). */
#include "ig_sticky.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../core/ig_epoch.h"
#include "../core/ig_hash.h"

/* A slot: 0 empty, TOMB, or an entry pointer; FROZEN is or-ed in by a
 * rebuild once it has copied the slot (inserts then give up on it). */
#define TOMB ((uintptr_t)1)
#define FROZEN ((uintptr_t)2)
#define TAGS ((uintptr_t)3)
#define REFRESH_MS 1000

typedef struct table {
    size_t mask;
    size_t limit;        /* entries plus tombstones at most (3/4 of the slots) */
    _Atomic size_t used; /* entries plus tombstones: inserts add, a rebuild resets */
    _Atomic uintptr_t slots[];
} table;

static _Atomic(table *) current;
static uint64_t seed;
static atomic_int live;
static _Atomic uint64_t full_total;

static table *table_new(size_t slots)
{
    table *t = calloc(1, sizeof(*t) + slots * sizeof(t->slots[0])); /* zero pages: touched as keys come */
    if (!t)
        return NULL;
    t->mask = slots - 1;
    t->limit = slots / 4 * 3;
    return t;
}

int ig_sticky_init(size_t max_keys)
{
    size_t slots = 16;
    while (slots / 4 * 3 < max_keys + 1 && slots < ((size_t)1 << 40))
        slots <<= 1;
    table *t = table_new(slots);
    if (!t)
        return -ENOMEM;
    seed = ig_hash_seed();
    atomic_store(&live, 0);
    atomic_store_explicit(&current, t, memory_order_release);
    return 0;
}

int ig_sticky_enabled(void)
{
    return atomic_load_explicit(&current, memory_order_relaxed) != NULL;
}

static ig_sticky_entry *entry_of(uintptr_t v)
{
    return (v & ~TAGS) ? (ig_sticky_entry *)(v & ~TAGS) : NULL;
}

static int same(const ig_sticky_entry *e, uint64_t h, const char *key, size_t len)
{
    return e->hash == h && e->len == len && memcmp(e->key, key, len) == 0;
}

static void touch(ig_sticky_entry *e, uint64_t now_ms)
{
    uint64_t was = atomic_load_explicit(&e->used_ms, memory_order_relaxed);
    if (now_ms > was + REFRESH_MS) /* a hot key does not bounce its cache line on every request */
        atomic_store_explicit(&e->used_ms, now_ms, memory_order_relaxed);
}

ig_sticky_entry *ig_sticky_get(const char *key, size_t len, uint64_t now_ms)
{
    table *t = atomic_load_explicit(&current, memory_order_acquire);
    if (!t)
        return NULL;
    uint64_t h = ig_hash_keyed(seed, key, len);
    for (size_t i = h & t->mask, n = 0; n <= t->mask; i = (i + 1) & t->mask, n++) {
        uintptr_t v = atomic_load_explicit(&t->slots[i], memory_order_acquire);
        ig_sticky_entry *e = entry_of(v);
        if (!e) {
            if ((v & ~FROZEN) == 0)
                return NULL; /* an empty slot ends the probe */
            continue;        /* a tombstone does not */
        }
        if (same(e, h, key, len)) {
            touch(e, now_ms);
            return e;
        }
    }
    return NULL;
}

ig_sticky_entry *ig_sticky_insert(const char *key, size_t len, uint64_t id, uint64_t now_ms)
{
    table *t = atomic_load_explicit(&current, memory_order_acquire);
    if (!t)
        return NULL;
    uint64_t h = ig_hash_keyed(seed, key, len);
    ig_sticky_entry *mine = malloc(sizeof(*mine) + len);
    if (!mine)
        return NULL;
    mine->hash = h;
    atomic_init(&mine->cand[0], id);
    atomic_init(&mine->cand[1], 0);
    atomic_init(&mine->used_ms, now_ms);
    mine->len = len;
    memcpy(mine->key, key, len);
    int reserved = 0;
    ig_sticky_entry *out = NULL;
    for (size_t i = h & t->mask, n = 0; n <= t->mask;) {
        uintptr_t v = atomic_load_explicit(&t->slots[i], memory_order_acquire);
        ig_sticky_entry *e = entry_of(v);
        if (e && same(e, h, key, len)) {
            out = e; /* another thread's, first */
            break;
        }
        if (v & FROZEN)
            break; /* being rebuilt: this one goes unremembered */
        if (v == 0) {
            if (!reserved) {
                if (atomic_fetch_add(&t->used, 1) >= t->limit) {
                    atomic_fetch_sub(&t->used, 1);
                    atomic_fetch_add_explicit(&full_total, 1, memory_order_relaxed);
                    break;
                }
                reserved = 1;
            }
            uintptr_t expect = 0;
            if (atomic_compare_exchange_strong_explicit(&t->slots[i], &expect, (uintptr_t)mine,
                                                        memory_order_acq_rel, memory_order_acquire)) {
                atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
                return mine;
            }
            continue; /* taken under us: look at what it holds now */
        }
        i = (i + 1) & t->mask;
        n++;
    }
    if (reserved)
        atomic_fetch_sub(&t->used, 1);
    free(mine);
    return out;
}

void ig_sticky_reassign(ig_sticky_entry *e, uint64_t id)
{
    uint64_t second = atomic_load_explicit(&e->cand[1], memory_order_relaxed);
    if (second == 0) {
        atomic_store_explicit(&e->cand[1], id, memory_order_relaxed);
        return;
    }
    /* two known already: the older goes (sgl keeps two) */
    atomic_store_explicit(&e->cand[0], second, memory_order_relaxed);
    atomic_store_explicit(&e->cand[1], id, memory_order_relaxed);
}

/* Copy the live entries into a fresh table, freezing each old slot as it is
 * read, so an insert racing the copy either lands before (and is copied) or
 * sees the freeze and gives up. */
static void rebuild(table *t)
{
    table *nt = table_new(t->mask + 1);
    if (!nt)
        return;
    size_t used = 0;
    for (size_t i = 0; i <= t->mask; i++) {
        ig_sticky_entry *e = entry_of(atomic_fetch_or(&t->slots[i], FROZEN));
        if (!e)
            continue;
        size_t j = e->hash & nt->mask;
        while (atomic_load_explicit(&nt->slots[j], memory_order_relaxed))
            j = (j + 1) & nt->mask;
        atomic_store_explicit(&nt->slots[j], (uintptr_t)e, memory_order_relaxed);
        used++;
    }
    atomic_store(&nt->used, used);
    atomic_store_explicit(&current, nt, memory_order_release);
    ig_epoch_retire(t, free);
}

int ig_sticky_sweep(uint64_t now_ms, uint64_t max_idle_ms)
{
    table *t = atomic_load_explicit(&current, memory_order_acquire);
    if (!t)
        return 0;
    int gone = 0;
    for (size_t i = 0; max_idle_ms && i <= t->mask; i++) {
        uintptr_t v = atomic_load_explicit(&t->slots[i], memory_order_acquire);
        ig_sticky_entry *e = entry_of(v);
        if (!e || (v & FROZEN) ||
            now_ms < atomic_load_explicit(&e->used_ms, memory_order_relaxed) + max_idle_ms)
            continue;
        if (atomic_compare_exchange_strong(&t->slots[i], &v, TOMB)) {
            ig_epoch_retire(e, free);
            atomic_fetch_sub_explicit(&live, 1, memory_order_relaxed);
            gone++;
        }
    }
    size_t tombs = atomic_load(&t->used) - (size_t)atomic_load(&live);
    if (tombs > (t->mask + 1) / 8)
        rebuild(t);
    if (gone || tombs > (t->mask + 1) / 8)
        ig_epoch_advance();
    return gone;
}

int ig_sticky_count(void)
{
    return atomic_load_explicit(&live, memory_order_relaxed);
}

uint64_t ig_sticky_full_total(void)
{
    return atomic_load_explicit(&full_total, memory_order_relaxed);
}

void ig_sticky_shutdown(void)
{
    table *t = atomic_exchange(&current, NULL);
    if (!t)
        return;
    for (size_t i = 0; i <= t->mask; i++)
        free(entry_of(atomic_load(&t->slots[i])));
    free(t);
    atomic_store(&live, 0);
}
