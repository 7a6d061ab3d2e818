#include "ig_admission.h"

#include <errno.h>
#include <stdatomic.h>

#include "ig_gateway.h"

#define QUEUE_POLL_MS 50

static uint32_t max_concurrent; /* 0: unlimited */
static uint32_t queue_size;
static atomic_int g_active; /* requests holding a gateway slot (only counted with a cap) */
static atomic_int g_queued;

void ig_admission_configure(const ig_config *cfg)
{
    max_concurrent = cfg->max_concurrent_requests;
    queue_size = cfg->queue_size;
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
    if (max_concurrent) {
        int v = atomic_load_explicit(&g_active, memory_order_relaxed);
        do {
            if ((uint32_t)v >= max_concurrent)
                return 0;
        } while (!atomic_compare_exchange_weak(&g_active, &v, v + 1));
    }
    int cap = ig_admission_effective_cap(w, now_ms);
    if (cap <= 0) {
        ig_worker_begin(w);
        return 1;
    }
    uint64_t v = atomic_load_explicit(&w->refs, memory_order_relaxed);
    do {
        if ((uint32_t)v >= (uint32_t)cap) {
            if (max_concurrent)
                atomic_fetch_sub(&g_active, 1);
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

static void publish_head(ig_thread *th)
{
    uint64_t oldest = UINT64_MAX;
    if (!ig_list_empty(&th->queue))
        oldest = ig_container_of(th->queue.next, ig_client, qlink)->enqueued_ns;
    atomic_store_explicit(&th->queue_oldest_ns, oldest, memory_order_relaxed);
}

/* A slot freed: the thread whose waiter is oldest should take it. */
static void wake_oldest(ig_thread *self)
{
    ig_thread *best = NULL;
    uint64_t oldest = UINT64_MAX;
    for (int i = 0; i < ig_n_threads; i++) {
        uint64_t t = atomic_load_explicit(&ig_all_threads[i].queue_oldest_ns, memory_order_relaxed);
        if (t < oldest) {
            oldest = t;
            best = &ig_all_threads[i];
        }
    }
    if (!best)
        return;
    if (best == self)
        self->queue_dirty = 1; /* served from this loop's check handle, after the callback */
    else
        ig_wakeup_send(&best->wake);
}

void ig_admission_release(ig_thread *th, ig_worker *w)
{
    ig_worker_end(w);
    if (max_concurrent)
        atomic_fetch_sub_explicit(&g_active, 1, memory_order_relaxed);
    if (atomic_load_explicit(&g_queued, memory_order_relaxed) > 0)
        wake_oldest(th);
}

static void poll_cb(uv_timer_t *t)
{
    ig_admission_dispatch(t->data);
}

int ig_admission_enqueue(ig_client *c, int front)
{
    ig_thread *th = c->th;
    int n = atomic_fetch_add(&g_queued, 1);
    if (queue_size && (uint32_t)n >= queue_size) {
        atomic_fetch_sub(&g_queued, 1);
        return -ENOSPC;
    }
    c->queued = 1;
    c->enqueued_ns = uv_hrtime();
    if (front)
        ig_list_push_front(&th->queue, &c->qlink);
    else
        ig_list_push_front(th->queue.prev, &c->qlink); /* append at the tail */
    th->nqueued++;
    if (front || th->nqueued == 1)
        publish_head(th);
    if (th->nqueued == 1) {
        uv_timer_start(&th->queue_poll, poll_cb, QUEUE_POLL_MS, QUEUE_POLL_MS);
    }
    return 0;
}

void ig_admission_leave(ig_client *c)
{
    if (!c->queued)
        return;
    ig_thread *th = c->th;
    c->queued = 0;
    ig_list_remove(&c->qlink);
    th->nqueued--;
    atomic_fetch_sub(&g_queued, 1);
    ig_hist_observe(&th->stats.queue_wait, (uv_hrtime() - c->enqueued_ns) / 1000);
    publish_head(th);
    if (th->nqueued == 0)
        uv_timer_stop(&th->queue_poll);
}

void ig_admission_dispatch(ig_thread *th)
{
    th->queue_dirty = 0;
    /* one pass, oldest first; a request still without a slot keeps its place */
    ig_list *n = th->queue.next;
    while (n != &th->queue) {
        ig_client *c = ig_container_of(n, ig_client, qlink);
        n = n->next;
        ig_proxy_try_queued(c);
    }
}

void ig_admission_thread_init(ig_thread *th)
{
    ig_list_init(&th->queue);
    th->nqueued = 0;
    atomic_store(&th->queue_oldest_ns, UINT64_MAX);
    uv_timer_init(&th->loop, &th->queue_poll);
    th->queue_poll.data = th;
}

void ig_admission_thread_close(ig_thread *th)
{
    if (!uv_is_closing((uv_handle_t *)&th->queue_poll))
        uv_close((uv_handle_t *)&th->queue_poll, NULL);
}
