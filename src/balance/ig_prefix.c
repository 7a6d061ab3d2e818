#include "ig_prefix.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define WAYS 4 /* entries per bucket: two cache lines */

typedef struct entry {
    _Atomic uint64_t key; /* 0: empty */
    _Atomic uint64_t bits[2];
    _Atomic uint32_t stamp; /* last use, coarse clock */
    uint32_t pad;
} entry;

static entry *table;
static size_t nbuckets; /* a power of two */

/* ---- keys ---- */

void ig_prefix_hash(const ig_span *spans, int nspans, const char *model, size_t mlen, ig_prefix_query *q)
{
    uint64_t h = XXH3_64bits_withSeed(model ? model : "", model ? mlen : 0, 0x1f2e3d4c5b6a7988ull);
    unsigned char stage[IG_PREFIX_BLOCK];
    size_t staged = 0;
    q->n = 0;
    q->nfound = 0;
    q->len = 0;
    for (int s = 0; s < nspans; s++) {
        const unsigned char *p = (const unsigned char *)spans[s].p;
        size_t left = spans[s].len;
        q->len += left;
        while (left && q->n < IG_PREFIX_MAX_BLOCKS) {
            if (staged == 0 && left >= IG_PREFIX_BLOCK) { /* a whole block in place: no copy */
                h = XXH3_64bits_withSeed(p, IG_PREFIX_BLOCK, h);
                q->key[q->n++] = h ? h : 1;
                p += IG_PREFIX_BLOCK;
                left -= IG_PREFIX_BLOCK;
                continue;
            }
            size_t take = IG_PREFIX_BLOCK - staged < left ? IG_PREFIX_BLOCK - staged : left;
            memcpy(stage + staged, p, take); /* a block across two spans */
            staged += take;
            p += take;
            left -= take;
            if (staged == IG_PREFIX_BLOCK) {
                h = XXH3_64bits_withSeed(stage, IG_PREFIX_BLOCK, h);
                q->key[q->n++] = h ? h : 1;
                staged = 0;
            }
        }
    }
}

/* ---- the table ---- */

int ig_prefix_init(size_t max_bytes)
{
    size_t want = max_bytes / IG_PREFIX_BLOCK / WAYS;
    nbuckets = 1;
    while (nbuckets < want)
        nbuckets <<= 1;
    free(table);
    table = aligned_alloc(64, nbuckets * WAYS * sizeof(entry));
    if (!table)
        return -ENOMEM;
    memset(table, 0, nbuckets * WAYS * sizeof(entry));
    return 0;
}

void ig_prefix_free(void)
{
    free(table);
    table = NULL;
    nbuckets = 0;
}

size_t ig_prefix_capacity(void)
{
    return nbuckets * WAYS;
}

static entry *bucket_of(uint64_t key)
{
    return &table[(key & (nbuckets - 1)) * WAYS];
}

static entry *find(uint64_t key)
{
    entry *b = bucket_of(key);
    for (int i = 0; i < WAYS; i++)
        if (atomic_load_explicit(&b[i].key, memory_order_acquire) == key)
            return &b[i];
    return NULL;
}

int ig_prefix_match(ig_prefix_query *q, ig_holders *holders)
{
    int depth = 0;
    holders->bits[0] = holders->bits[1] = 0;
    q->nfound = 0;
    if (!table)
        return 0;
    /* keys are chained: the first missing block ends every longer prefix */
    for (int i = 0; i < q->n; i++) {
        entry *e = find(q->key[i]);
        if (!e)
            break;
        q->found[q->nfound++] = e; /* the insert that follows need not look again */
        uint64_t b0 = atomic_load_explicit(&e->bits[0], memory_order_relaxed);
        uint64_t b1 = atomic_load_explicit(&e->bits[1], memory_order_relaxed);
        if (!(b0 | b1))
            break;
        holders->bits[0] = b0;
        holders->bits[1] = b1;
        depth = i + 1;
    }
    return depth;
}

/* A slot for a new key: an empty one, else the bucket's least recently used. */
static entry *claim(uint64_t key)
{
    entry *b = bucket_of(key), *oldest = &b[0];
    for (int i = 0; i < WAYS; i++) {
        uint64_t zero = 0;
        if (atomic_load_explicit(&b[i].key, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong(&b[i].key, &zero, key)) {
            return &b[i];
        }
        if (atomic_load_explicit(&b[i].stamp, memory_order_relaxed) <
            atomic_load_explicit(&oldest->stamp, memory_order_relaxed))
            oldest = &b[i];
    }
    /* bits cleared before the key changes: a reader sees no holders, never old ones */
    atomic_store_explicit(&oldest->bits[0], 0, memory_order_relaxed);
    atomic_store_explicit(&oldest->bits[1], 0, memory_order_relaxed);
    atomic_store_explicit(&oldest->key, key, memory_order_release);
    return oldest;
}

static void insert(const uint64_t *key, void *const *found, int nfound, int n, uint64_t worker_id,
                   uint32_t now)
{
    if (!table)
        return;
    int word = (int)((worker_id >> 6) & 1);
    uint64_t bit = 1ull << (worker_id & 63);
    for (int i = 0; i < n; i++) {
        entry *e = i < nfound ? found[i] : NULL;
        if (e && atomic_load_explicit(&e->key, memory_order_acquire) != key[i])
            e = NULL; /* another key took the slot since the match */
        if (!e)
            e = find(key[i]);
        if (!e)
            e = claim(key[i]);
        /* write only what changes: shared prefixes stay read-mostly */
        if (!(atomic_load_explicit(&e->bits[word], memory_order_relaxed) & bit))
            atomic_fetch_or_explicit(&e->bits[word], bit, memory_order_relaxed);
        if (atomic_load_explicit(&e->stamp, memory_order_relaxed) != now)
            atomic_store_explicit(&e->stamp, now, memory_order_relaxed);
    }
}

void ig_prefix_insert(const ig_prefix_query *q, uint64_t worker_id, uint32_t now)
{
    insert(q->key, q->found, q->nfound, q->n, worker_id, now);
}

void ig_prefix_insert_keys(const uint64_t *key, int n, uint64_t worker_id, uint32_t now)
{
    insert(key, NULL, 0, n, worker_id, now);
}

/* ticks since the entry's last use (another thread may be a tick ahead) */
static uint32_t age(uint32_t now, entry *e)
{
    int32_t d = (int32_t)(now - atomic_load_explicit(&e->stamp, memory_order_relaxed));
    return d > 0 ? (uint32_t)d : 0;
}

size_t ig_prefix_sweep(const ig_holders *live, uint32_t now, int high, int low)
{
    size_t total = nbuckets * WAYS, used = 0;
    /* ages in classes of doubling width (0, 1, 2-3, 4-7, ...), to find how old is "oldest" */
    size_t hist[33] = {0};
    for (size_t i = 0; i < total; i++) {
        entry *e = &table[i];
        if (!atomic_load_explicit(&e->key, memory_order_relaxed))
            continue;
        uint64_t b0 = atomic_load_explicit(&e->bits[0], memory_order_relaxed);
        uint64_t b1 = atomic_load_explicit(&e->bits[1], memory_order_relaxed);
        if ((b0 & ~live->bits[0]) || (b1 & ~live->bits[1])) {
            b0 = atomic_fetch_and(&e->bits[0], live->bits[0]) & live->bits[0];
            b1 = atomic_fetch_and(&e->bits[1], live->bits[1]) & live->bits[1];
        }
        if (!(b0 | b1)) {
            atomic_store_explicit(&e->key, 0, memory_order_release);
            continue;
        }
        used++;
        uint32_t a = age(now, e);
        hist[a ? 32 - __builtin_clz(a) : 0]++;
    }
    if (used * 100 <= total * (size_t)high)
        return used;
    /* evict the oldest age classes until at most low percent remain */
    size_t keep = total * (size_t)low / 100, acc = 0;
    int cut = 0;
    while (cut < 33 && acc + hist[cut] <= keep)
        acc += hist[cut++];
    uint32_t min_age = cut == 0 ? 0 : 1u << (cut - 1);
    for (size_t i = 0; i < total; i++) {
        entry *e = &table[i];
        if (atomic_load_explicit(&e->key, memory_order_relaxed) && age(now, e) >= min_age) {
            atomic_store_explicit(&e->bits[0], 0, memory_order_relaxed);
            atomic_store_explicit(&e->bits[1], 0, memory_order_relaxed);
            atomic_store_explicit(&e->key, 0, memory_order_release);
            used--;
        }
    }
    return used;
}
