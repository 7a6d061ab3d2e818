#include "ig_retry.h"

void ig_retry_enter(ig_retry_budget *b)
{
    atomic_fetch_add_explicit(&b->inflight, 1, memory_order_relaxed);
}

void ig_retry_leave(ig_retry_budget *b, int retried)
{
    atomic_fetch_sub_explicit(&b->inflight, 1, memory_order_relaxed);
    if (retried)
        atomic_fetch_sub_explicit(&b->retrying, 1, memory_order_relaxed);
}

ig_retry_verdict ig_retry_allowed(ig_retry_budget *b, double ratio, uint32_t max_retries, int max_tries,
                                  int ntried, int retried, int refused)
{
    if (ntried > (int)max_retries || ntried >= max_tries)
        return IG_RETRY_MAX_TRIES;
    if (retried || refused)
        return IG_RETRY_OK;
    int inflight = atomic_load_explicit(&b->inflight, memory_order_relaxed);
    int retrying = atomic_load_explicit(&b->retrying, memory_order_relaxed);
    double budget = ratio * inflight;
    return retrying >= (budget > 2 ? budget : 2) ? IG_RETRY_BUDGET : IG_RETRY_OK;
}

void ig_retry_mark(ig_retry_budget *b)
{
    atomic_fetch_add_explicit(&b->retrying, 1, memory_order_relaxed);
}
