#include "ig_breaker.h"

static ig_breaker_config conf = {1,     10,     3,
                                 30000, 120000, {[502 / 64] = (1ull << (502 % 64)) | (1ull << (504 % 64))}};

void ig_breaker_configure(const ig_breaker_config *cfg)
{
    conf = *cfg;
}

int ig_breaker_is_failure_status(int status)
{
    /* 503 and 429 say "busy", 500 is as often a client's bad request as a
     * broken worker: by default neither trips a circuit (sglang#25811) */
    return status >= 0 && status < 640 && (conf.failure_statuses[status / 64] >> (status % 64) & 1);
}

int ig_breaker_failure(ig_worker *w, uint64_t now_ms)
{
    if (!conf.enabled)
        return 0;
    /* failures a window apart are not a broken worker (--cb-window-duration-secs) */
    uint64_t last = atomic_exchange_explicit(&w->last_failure_ms, now_ms, memory_order_relaxed);
    if (conf.window_ms && last && now_ms - last > conf.window_ms)
        atomic_store_explicit(&w->consecutive_failures, 0, memory_order_relaxed);
    int n = atomic_fetch_add_explicit(&w->consecutive_failures, 1, memory_order_relaxed) + 1;
    int state = atomic_load_explicit(&w->breaker, memory_order_relaxed);
    int expect = state;
    if (state == IG_BREAKER_HALF_OPEN || (state == IG_BREAKER_CLOSED && n >= conf.failure_threshold)) {
        if (atomic_compare_exchange_strong(&w->breaker, &expect, IG_BREAKER_OPEN)) {
            atomic_store(&w->open_until_ms, now_ms + conf.cooldown_ms);
            atomic_store(&w->half_open_successes, 0);
            return 1;
        }
    }
    return 0;
}

int ig_breaker_success(ig_worker *w)
{
    if (atomic_load_explicit(&w->consecutive_failures, memory_order_relaxed))
        atomic_store_explicit(&w->consecutive_failures, 0, memory_order_relaxed);
    if (atomic_load_explicit(&w->breaker, memory_order_relaxed) != IG_BREAKER_HALF_OPEN)
        return 0;
    if (atomic_fetch_add(&w->half_open_successes, 1) + 1 < conf.success_threshold)
        return 0;
    int expect = IG_BREAKER_HALF_OPEN;
    return atomic_compare_exchange_strong(&w->breaker, &expect, IG_BREAKER_CLOSED);
}

int ig_breaker_admit(ig_worker *w, int *probe)
{
    *probe = 0;
    int state = atomic_load_explicit(&w->breaker, memory_order_relaxed);
    if (state == IG_BREAKER_CLOSED)
        return 1;
    if (state == IG_BREAKER_OPEN)
        return 0;
    int expect = 0;
    if (atomic_compare_exchange_strong(&w->probe_inflight, &expect, 1)) {
        *probe = 1;
        return 1;
    }
    return 0;
}

void ig_breaker_probe_done(ig_worker *w)
{
    atomic_store(&w->probe_inflight, 0);
}

int ig_breaker_cooldown_over(ig_worker *w, uint64_t now_ms)
{
    if (atomic_load(&w->breaker) != IG_BREAKER_OPEN || now_ms < atomic_load(&w->open_until_ms))
        return 0;
    int expect = IG_BREAKER_OPEN;
    if (!atomic_compare_exchange_strong(&w->breaker, &expect, IG_BREAKER_HALF_OPEN))
        return 0;
    atomic_store(&w->half_open_successes, 0);
    atomic_store(&w->probe_inflight, 0);
    return 1;
}
