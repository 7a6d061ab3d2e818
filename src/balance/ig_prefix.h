/* The approximate prefix index behind --policy cache_aware: which workers
 * recently served which prompt prefixes.
 *
 * A prompt is cut into fixed blocks; block i's key is a chained hash of the
 * model and blocks 0..i (xxHash3), so equal keys mean equal prefixes. One
 * fixed-size table for every model (--max-tree-size bounds it in prompt
 * bytes), set-associative: a key lives in one bucket of a few entries, and
 * an entry holds a bit set of the workers that served that prefix. Loop
 * threads look up and record with plain atomics, no lock; a race can pair a
 * key with a stale bit set for an instant, which costs one routing hint and
 * never a wrong answer. The control thread sweeps in the background: it
 * clears the bits of removed workers and evicts the least recently used
 * entries when the table fills; a full bucket also gives up its oldest entry
 * at once, so routing never waits. */
#ifndef IG_PREFIX_H
#define IG_PREFIX_H
#include <stddef.h>
#include <stdint.h>

#include "../api/ig_body_scan.h"

#define IG_PREFIX_BLOCK 256       /* prompt bytes per block (about 64 tokens) */
#define IG_PREFIX_MAX_BLOCKS 2048 /* longer prompts are tracked to here (512 KiB) */

/* The chained block keys of one prompt (a per-thread buffer: 32 KiB). */
typedef struct ig_prefix_query {
    uint64_t key[IG_PREFIX_MAX_BLOCKS];
    void *found[IG_PREFIX_MAX_BLOCKS]; /* the entries ig_prefix_match found, for the insert after it */
    int n;                             /* whole blocks */
    int nfound;
    size_t len; /* prompt bytes in all */
} ig_prefix_query;

/* Workers by their id modulo 128: exact for up to 128 workers in a
 * fleet's id range, shared bits (still only hints) beyond. */
typedef struct ig_holders {
    uint64_t bits[2];
} ig_holders;

static inline void ig_holders_add(ig_holders *h, uint64_t worker_id)
{
    h->bits[(worker_id >> 6) & 1] |= 1ull << (worker_id & 63);
}
static inline int ig_holders_has(const ig_holders *h, uint64_t worker_id)
{
    return (int)((h->bits[(worker_id >> 6) & 1] >> (worker_id & 63)) & 1);
}

/** Key the prompt's blocks: the spans in order, as one byte string, chained
 * from the model's name. Pure (the mock worker uses it too). */
void ig_prefix_hash(const ig_span *spans, int nspans, const char *model, size_t mlen, ig_prefix_query *q);

/** Size the index for max_bytes of prompt; 0 or -ENOMEM. Before any thread uses it. */
int ig_prefix_init(size_t max_bytes);
void ig_prefix_free(void);
/** Blocks of q's longest prefix in the index, and who holds its last block
 * (q keeps the entries found, for ig_prefix_insert). */
int ig_prefix_match(ig_prefix_query *q, ig_holders *holders);
/** worker_id served q: it holds every block of it now (now: a coarse clock). */
void ig_prefix_insert(const ig_prefix_query *q, uint64_t worker_id, uint32_t now);
/** The same for some of a prompt's block keys (another gateway's insert). */
void ig_prefix_insert_keys(const uint64_t *key, int n, uint64_t worker_id, uint32_t now);
/** Background upkeep (one thread): keep only live workers' bits, drop empty
 * entries, and when more than high percent of the entries are used, evict
 * the oldest down to low percent. Returns the entries in use. */
size_t ig_prefix_sweep(const ig_holders *live, uint32_t now, int high, int low);
/** Entries the index can hold. */
size_t ig_prefix_capacity(void);
#endif
