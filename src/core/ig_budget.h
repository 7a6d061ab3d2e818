/* A byte budget shared by every loop thread (buffered request bodies):
 * holders grow and release their share with atomics only. */
#ifndef IG_BUDGET_H
#define IG_BUDGET_H
#include <stdatomic.h>
#include <stddef.h>

typedef struct ig_budget {
    atomic_size_t used;
    size_t cap; /* 0: unlimited */
} ig_budget;

/**
 * Grow a holder's share from *held to want bytes (want > *held). 0 with
 * *held = want, or -EAGAIN when that would pass the cap while others hold
 * some of it: a holder that is alone may always grow, so one request larger
 * than the whole budget still goes through rather than waiting forever.
 */
int ig_budget_grow(ig_budget *b, size_t *held, size_t want);
/** Give the whole share back; *held becomes 0. */
void ig_budget_release(ig_budget *b, size_t *held);
#endif
