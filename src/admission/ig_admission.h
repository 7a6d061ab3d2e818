/* Admission control: per-worker in-flight caps (configured and learned from
 * overload answers), a gateway-wide cap, and a queue instead of refusals
 * when every eligible worker is full.
 *
 * Slots are claimed with a compare-and-swap on the worker's in-flight count
 * (no lock). Waiting requests are ig_waiters in their own loop thread's
 * queue (HAProxy's pendconn: the queue holds a link and a retry callback,
 * never a connection). A thread that frees a slot wakes the thread holding
 * the oldest waiter, which retries its waiters itself. A 50 ms poll while
 * anything waits covers lost wake-ups (and a token bucket's refill).
 *
 * Threads: caps and counts are atomics, any loop thread. An ig_admq and its
 * waiters belong to one loop thread; only oldest_ns is read by the others. */
#ifndef IG_ADMISSION_H
#define IG_ADMISSION_H
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "../core/ig_list.h"
#include "../core/ig_wakeup.h"
#include "../obs/ig_stats.h"
#include "../registry/ig_registry.h"

typedef struct ig_admission_config {
    uint32_t max_concurrent; /* requests holding a worker slot, whole gateway; 0: unlimited */
    uint32_t queue_size;     /* waiters, whole gateway; 0: none (429 at once); UINT32_MAX: unlimited */
    /* sgl-model-gateway's token bucket instead of a strict gateway cap: max_concurrent
     * tokens, refilled at refill_per_s, one taken per slot and given back when the
     * slot is released. Needs max_concurrent (sgl: no bucket without a cap). */
    int bucket;
    uint32_t refill_per_s;
} ig_admission_config;

typedef struct ig_waiter {
    ig_list link;
    uint64_t since_ns;
    /* a slot may have freed: try again (from ig_admq_dispatch, on the queue's thread) */
    void (*retry)(struct ig_waiter *w);
    unsigned queued : 1;
} ig_waiter;

typedef struct ig_admq {
    ig_list waiters; /* oldest first */
    int n;
    int dirty; /* a slot freed on this thread: dispatch after the current callback */
    uv_timer_t poll;
    atomic_uint_fast64_t oldest_ns; /* read by other threads to pick whom to wake */
    ig_wakeup *wake;                /* the owning loop's */
    ig_hist *wait_hist;             /* queue wait, observed when a waiter leaves */
} ig_admq;

void ig_admission_configure(const ig_admission_config *cfg);
/** Claim a slot on w (and a gateway slot): 1 claimed (w's in-flight unit is
 * held), 0 full. */
int ig_admission_claim(ig_worker *w, uint64_t now_ms);
/** 1 when w has room now (a hint; the claim decides). */
int ig_admission_has_room(const ig_worker *w, uint64_t now_ms);
/** w answered 503/429 with inflight requests on it: lower its cap for a while. */
void ig_admission_overloaded(ig_worker *w, uint32_t inflight, uint64_t now_ms);
/** w's cap now: the configured one, lowered by what its overload answers taught (0: none). */
int ig_admission_effective_cap(const ig_worker *w, uint64_t now_ms);
/** The request left w: release its slot and wake the thread of the oldest
 * waiter (self: the caller's queue). May free w. */
void ig_admission_release(ig_admq *self, ig_worker *w);
/** 1 when requests are waiting anywhere (new ones queue behind them). */
int ig_admission_waiting(void);
/** Requests waiting, all threads. */
int ig_admission_depth(void);

/** A loop thread's queue (before the threads run; registered for wake-ups).
 * 0 or a negative errno code (-ENOSPC: too many queues). */
int ig_admq_init(ig_admq *q, uv_loop_t *loop, ig_wakeup *wake, ig_hist *wait_hist);
void ig_admq_close(ig_admq *q);
/** Queue w (at the front: a request sent back by an overloaded worker keeps
 * its turn); 0, or -ENOSPC when the queue size is reached. */
int ig_admq_push(ig_admq *q, ig_waiter *w, int front);
/** Take w out (dispatched, timed out, or its client left); no-op when not queued. */
void ig_admq_leave(ig_admq *q, ig_waiter *w);
/** Retry q's waiters, oldest first; one still without a slot keeps its place. */
void ig_admq_dispatch(ig_admq *q);
/** Forget every registered queue (at exit). */
void ig_admission_reset(void);
#endif
