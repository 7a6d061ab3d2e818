/* A bounded per-thread free list of equal-sized chunks: the hot path takes
 * and gives back memory without malloc, and a burst does not pin its peak
 * forever (past max, chunks go back to malloc). Not thread-safe: one owner. */
#ifndef IG_FREELIST_H
#define IG_FREELIST_H
#include <stddef.h>

#include "ig_buf.h"

typedef struct ig_freelist {
    void *head; /* each free chunk starts with the pointer to the next */
    int n, max;
    size_t size;
} ig_freelist;

void ig_freelist_init(ig_freelist *f, size_t size, int max);
/** A chunk of f->size bytes (contents undefined), or NULL when out of memory. */
void *ig_freelist_get(ig_freelist *f);
/** Give a chunk back (NULL is ignored). */
void ig_freelist_put(ig_freelist *f, void *p);
/** Free every chunk kept. */
void ig_freelist_clear(ig_freelist *f);

/** Give b storage from f when it has none: 0, or -ENOMEM. */
int ig_buf_take(ig_buf *b, ig_freelist *f);
/** Empty b, its storage back to f (or to malloc when it grew past f's size). */
void ig_buf_give(ig_buf *b, ig_freelist *f);
#endif
