#include "ig_admission.h"

#include <errno.h>

#define QUEUE_POLL_MS 50
#define MAX_QUEUES 1024

static uint32_t max_concurrent;          /* 0: unlimited */
static uint32_t queue_size = UINT32_MAX; /* until configured: no limit */
static atomic_int g_active;              /* requests holding a gateway slot (only counted with a cap) */
/* The token bucket (when configured): tokens in units of 1/TOKEN, refilled
 * by whoever moves the refill clock on; lock-free, never below zero, at
 * most a racing refill's worth above capacity for an instant. */
#define TOKEN 1024
static int bucket;
static uint32_t refill_per_s;
static _Atomic int64_t tokens;
static _Atomic uint64_t refilled_ms;
static atomic_int g_queued;
static ig_admq *queues[MAX_QUEUES]; /* one per loop thread, set before they run */
static int nqueues;

void ig_admission_configure(const ig_admission_config *cfg)
{
    max_concurrent = cfg->max_concurrent;
    queue_size = cfg->queue_size;
    bucket = max_concurrent && cfg->bucket;
    refill_per_s = cfg->refill_per_s;
    atomic_store(&tokens, (int64_t)max_concurrent * TOKEN);
    atomic_store(&refilled_ms, uv_hrtime() / 1000000);
}

static void bucket_clamp(void)
{
    int64_t cap = (int64_t)max_concurrent * TOKEN, v = atomic_load(&tokens);
    while (v > cap && !atomic_compare_exchange_weak(&tokens, &v, cap))
        ;
}

static void bucket_refill(uint64_t now_ms)
{
    uint64_t at = atomic_load_explicit(&refilled_ms, memory_order_relaxed);
    if (now_ms <= at || !refill_per_s || !atomic_compare_exchange_strong(&refilled_ms, &at, now_ms))
        return;
    uint64_t add = (now_ms - at) * (uint64_t)refill_per_s * TOKEN / 1000;
    uint64_t cap = (uint64_t)max_concurrent * TOKEN;
    atomic_fetch_add(&tokens, (int64_t)(add < cap ? add : cap));
    bucket_clamp();
}

static int gateway_claim(uint64_t now_ms)
{
    if (bucket) {
        bucket_refill(now_ms);
        int64_t v = atomic_load_explicit(&tokens, memory_order_relaxed);
        do {
            if (v < TOKEN)
                return 0;
        } while (!atomic_compare_exchange_weak(&tokens, &v, v - TOKEN));
        return 1;
    }
    int v = atomic_load_explicit(&g_active, memory_order_relaxed);
    do {
        if ((uint32_t)v >= max_concurrent)
            return 0;
    } while (!atomic_compare_exchange_weak(&g_active, &v, v + 1));
    return 1;
}

static void gateway_release(void)
{
    if (bucket) {
        atomic_fetch_add(&tokens, TOKEN);
        bucket_clamp();
    } else {
        atomic_fetch_sub_explicit(&g_active, 1, memory_order_relaxed);
    }
}

int ig_admission_effective_cap(const ig_worker *cw, uint64_t now_ms)
{
    ig_worker *w = (ig_worker *)cw;
    int cap = atomic_load_explicit(&w->max_inflight, memory_order_relaxed);
    int learned = atomic_load_explicit(&w->learned_cap, memory_order_relaxed);
    if (learned <= 0)
        return cap;
    /* additive increase: one more slot for every second without an overload answer */
    uint64_t at = atomic_load_explicit(&w->learned_at_ms, memory_order_relaxed);
    uint64_t grown = (uint64_t)learned + (now_ms > at ? (now_ms - at) / 1000 : 0);
    if (cap > 0 && grown >= (uint64_t)cap)
        return cap;
    return grown > 1000000 ? cap : (int)grown;
}

void ig_admission_overloaded(ig_worker *w, uint32_t inflight, uint64_t now_ms)
{
    /* it said "full" with inflight requests on it (this one included): that many minus one fit */
    int cap = inflight > 1 ? (int)inflight - 1 : 1;
    int cur = ig_admission_effective_cap(w, now_ms);
    if (cur > 0 && cur < cap)
        cap = cur; /* never raise it on an overload answer */
    atomic_store_explicit(&w->learned_cap, cap, memory_order_relaxed);
    atomic_store_explicit(&w->learned_at_ms, now_ms, memory_order_relaxed);
}

int ig_admission_has_room(const ig_worker *w, uint64_t now_ms)
{
    int cap = ig_admission_effective_cap(w, now_ms);
    return cap <= 0 || ig_worker_inflight(w) < (uint32_t)cap;
}

int ig_admission_claim(ig_worker *w, uint64_t now_ms)
{
    if (max_concurrent && !gateway_claim(now_ms))
        return 0;
    int cap = ig_admission_effective_cap(w, now_ms);
    if (cap <= 0) {
        ig_worker_begin(w);
        return 1;
    }
    uint64_t v = atomic_load_explicit(&w->refs, memory_order_relaxed);
    do {
        if ((uint32_t)v >= (uint32_t)cap) {
            if (max_concurrent)
                gateway_release();
            return 0;
        }
    } while (!atomic_compare_exchange_weak(&w->refs, &v, v + 1));
    return 1;
}

int ig_admission_waiting(void)
{
    return atomic_load_explicit(&g_queued, memory_order_relaxed) > 0;
}

int ig_admission_depth(void)
{
    return atomic_load_explicit(&g_queued, memory_order_relaxed);
}

static void publish_head(ig_admq *q)
{
    uint64_t oldest = UINT64_MAX;
    if (!ig_list_empty(&q->waiters))
        oldest = ig_container_of(q->waiters.next, ig_waiter, link)->since_ns;
    atomic_store_explicit(&q->oldest_ns, oldest, memory_order_relaxed);
}

/* A slot freed: the thread whose waiter is oldest should take it. */
static void wake_oldest(ig_admq *self)
{
    ig_admq *best = NULL;
    uint64_t oldest = UINT64_MAX;
    for (int i = 0; i < nqueues; i++) {
        uint64_t t = atomic_load_explicit(&queues[i]->oldest_ns, memory_order_relaxed);
        if (t < oldest) {
            oldest = t;
            best = queues[i];
        }
    }
    if (!best)
        return;
    if (best == self)
        self->dirty = 1; /* served from the loop's check handle, after the callback */
    else
        ig_wakeup_send(best->wake);
}

void ig_admission_release(ig_admq *self, ig_worker *w)
{
    ig_worker_end(w);
    if (max_concurrent)
        gateway_release();
    if (atomic_load_explicit(&g_queued, memory_order_relaxed) > 0)
        wake_oldest(self);
}

static void poll_cb(uv_timer_t *t)
{
    ig_admq_dispatch(t->data);
}

int ig_admq_push(ig_admq *q, ig_waiter *w, int front)
{
    int n = atomic_fetch_add(&g_queued, 1);
    if ((uint32_t)n >= queue_size) { /* 0: no queue at all (sgl-model-gateway's meaning) */
        atomic_fetch_sub(&g_queued, 1);
        return -ENOSPC;
    }
    w->queued = 1;
    w->since_ns = uv_hrtime();
    if (front)
        ig_list_push_front(&q->waiters, &w->link);
    else
        ig_list_push_front(q->waiters.prev, &w->link); /* append at the tail */
    q->n++;
    if (front || q->n == 1)
        publish_head(q);
    if (q->n == 1)
        uv_timer_start(&q->poll, poll_cb, QUEUE_POLL_MS, QUEUE_POLL_MS);
    return 0;
}

void ig_admq_leave(ig_admq *q, ig_waiter *w)
{
    if (!w->queued)
        return;
    w->queued = 0;
    ig_list_remove(&w->link);
    q->n--;
    atomic_fetch_sub(&g_queued, 1);
    ig_hist_observe(q->wait_hist, (uv_hrtime() - w->since_ns) / 1000);
    publish_head(q);
    if (q->n == 0)
        uv_timer_stop(&q->poll);
}

void ig_admq_dispatch(ig_admq *q)
{
    q->dirty = 0;
    /* one pass, oldest first; a waiter still without a slot keeps its place */
    ig_list *n = q->waiters.next;
    while (n != &q->waiters) {
        ig_waiter *w = ig_container_of(n, ig_waiter, link);
        n = n->next;
        w->retry(w);
    }
}

int ig_admq_init(ig_admq *q, uv_loop_t *loop, ig_wakeup *wake, ig_hist *wait_hist)
{
    if (nqueues == MAX_QUEUES)
        return -ENOSPC;
    ig_list_init(&q->waiters);
    q->n = 0;
    q->dirty = 0;
    q->wake = wake;
    q->wait_hist = wait_hist;
    atomic_store(&q->oldest_ns, UINT64_MAX);
    int rc = uv_timer_init(loop, &q->poll);
    if (rc)
        return rc;
    q->poll.data = q;
    queues[nqueues++] = q;
    return 0;
}

void ig_admq_close(ig_admq *q)
{
    if (!uv_is_closing((uv_handle_t *)&q->poll))
        uv_close((uv_handle_t *)&q->poll, NULL);
}

void ig_admission_reset(void)
{
    nqueues = 0;
}
