#include "ig_budget.h"

#include <errno.h>

int ig_budget_grow(ig_budget *b, size_t *held, size_t want)
{
    if (want <= *held)
        return 0;
    size_t more = want - *held, used = atomic_load_explicit(&b->used, memory_order_relaxed);
    do {
        if (b->cap && used + more > b->cap && used != *held)
            return -EAGAIN;
    } while (!atomic_compare_exchange_weak_explicit(&b->used, &used, used + more, memory_order_relaxed,
                                                    memory_order_relaxed));
    *held = want;
    return 0;
}

void ig_budget_release(ig_budget *b, size_t *held)
{
    if (*held)
        atomic_fetch_sub_explicit(&b->used, *held, memory_order_relaxed);
    *held = 0;
}
