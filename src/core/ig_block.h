/* Read blocks: the 64 KiB buffers a worker's answer is read into and
 * written to the client from without a copy. A block can be referenced by
 * several pending client writes, hence the count; it goes back to its
 * thread's free list when the last one is done. One owner thread. */
#ifndef IG_BLOCK_H
#define IG_BLOCK_H
#include <stddef.h>

#include "ig_freelist.h"

#define IG_BLOCK_SIZE (64 * 1024)

typedef struct ig_block {
    size_t refs;
    char data[IG_BLOCK_SIZE];
} ig_block;

/** A block with one reference, or NULL when out of memory. */
static inline ig_block *ig_block_get(ig_freelist *f)
{
    ig_block *b = ig_freelist_get(f);
    if (b)
        b->refs = 1;
    return b;
}

/** Drop one reference; the last one gives the block back to f. */
static inline void ig_block_put(ig_freelist *f, ig_block *b)
{
    if (--b->refs == 0)
        ig_freelist_put(f, b);
}
#endif
