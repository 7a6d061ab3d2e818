/* Keep-alive pools of worker connections (ig_pool.h). */
#include <stdint.h>
#include <stdlib.h>

#include "../core/ig_log.h"
#include "ig_pool.h"

void ig_pool_drop_head(ig_upconn *up)
{
    ig_buf_give(&up->hbuf, up->ctx->heads);
    ig_freelist_put(up->ctx->hdr_tables, up->hdrs);
    up->hdrs = NULL;
    up->nhdrs = 0;
}

static void upconn_free_cb(uv_handle_t *h)
{
    ig_upconn *up = h->data;
    if (--up->handles_open == 0) {
        ig_pool_drop_head(up);
        ig_buf_give(&up->whead, up->ctx->heads);
        ig_worker_unref(up->w);
        free(up);
    }
}

static void unlink_idle(ig_upconn *up)
{
    ig_list_remove(&up->link);
    ig_list_remove(&up->tlink);
    up->w->pools[up->ctx->idx].nidle--;
}

void ig_pool_exchange_over(ig_upconn *up)
{
    if (up->proc_counted) {
        up->proc_counted = 0;
        atomic_fetch_sub_explicit(&up->w->procs[up->proc].inflight, 1, memory_order_relaxed);
    }
}

static uint64_t hash_value(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a: a few bytes, once per connection */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h ? h : 1;
}

void ig_pool_learn_process(ig_upconn *up, const char *value, size_t len)
{
    if (up->proc >= 0 || !len)
        return;
    ig_worker *w = up->w;
    uint64_t id = hash_value(value, len);
    int n = atomic_load_explicit(&w->n_procs, memory_order_acquire);
    int i;
    for (i = 0; i < n; i++)
        if (atomic_load_explicit(&w->procs[i].id, memory_order_relaxed) == id)
            break;
    while (i == n && n < IG_MAX_PROCS) {
        /* claim the next free slot; another thread may take it first */
        uint64_t zero = 0;
        if (atomic_compare_exchange_strong(&w->procs[n].id, &zero, id)) {
            atomic_fetch_add(&w->n_procs, 1);
            break;
        }
        if (atomic_load(&w->procs[n].id) == id)
            break;
        n++;
        i = n;
    }
    if (i >= IG_MAX_PROCS)
        return; /* more processes than we track: this one stays unknown */
    up->proc = (short)i;
    atomic_fetch_add_explicit(&w->procs[i].conns, 1, memory_order_relaxed);
    up->proc_counted = 1; /* the request it answers is in flight there */
    atomic_fetch_add_explicit(&w->procs[i].inflight, 1, memory_order_relaxed);
}

void ig_pool_close(ig_upconn *up)
{
    if (up->state == IG_U_CLOSING)
        return;
    ig_pool_exchange_over(up);
    if (up->proc >= 0)
        atomic_fetch_sub_explicit(&up->w->procs[up->proc].conns, 1, memory_order_relaxed);
    if (up->state == IG_U_IDLE)
        unlink_idle(up);
    up->state = IG_U_CLOSING;
    atomic_fetch_add_explicit(&up->w->stats.conns_closed, 1, memory_order_relaxed);
    ig_count(&up->ctx->stats->conns_closed, 1);
    uv_close((uv_handle_t *)&up->tcp, upconn_free_cb);
    uv_close((uv_handle_t *)&up->timer, upconn_free_cb);
}

static int too_old(const ig_upconn *up, uint64_t now, uint64_t max_age)
{
    return max_age && now - up->created_ms >= max_age;
}

/* Closes sooner than this after going idle are not a keep-alive timeout
 * (a restart, a worker that closes after every answer). */
#define IDLE_CLOSE_MIN_MS 200

void ig_pool_note_idle_close(ig_upconn *up)
{
    uint64_t idle = uv_now(up->ctx->loop) - up->idle_since_ms;
    if (idle >= IDLE_CLOSE_MIN_MS && idle < UINT32_MAX)
        atomic_store_explicit(&up->w->idle_close_ms, (unsigned)idle, memory_order_relaxed);
}

/* A request sent on a connection the worker is about to close may be read
 * and run, or not, and a POST cannot be sent again (RFC 9110 §9.2.2): leave
 * connections near the worker's keep-alive timeout alone. */
static int near_worker_close(const ig_upconn *up, uint64_t now, uint64_t limit)
{
    return limit && now - up->idle_since_ms >= limit;
}

void ig_pool_note_ttfb(ig_upconn *up, uint64_t us)
{
    uint32_t s = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    up->ttfb_ewma_us = up->ttfb_ewma_us ? (up->ttfb_ewma_us * 3 + s) / 4 : s;
    /* the worker's best lately: follows improvements at once and forgets 1/8 per sample, so
     * it tracks the current minimum across connections, not a stale record */
    uint32_t best = atomic_load_explicit(&up->w->best_ttfb_us, memory_order_relaxed);
    uint32_t next = best && best < UINT32_MAX - best / 8 ? best + best / 8 + 1 : s;
    atomic_store_explicit(&up->w->best_ttfb_us, s < next ? s : next, memory_order_relaxed);
}

/* Spreading over the processes behind one address (pre-fork servers share a
 * socket; a connection belongs to whichever process won accept()). Among
 * the idle connections take the one whose process answers fastest; if even
 * that one answers clearly slower than the worker's best, it sits on a loaded
 * process: retire it, and the request opens a fresh connection, which
 * re-races accept() (a busy process tends to lose). */
#define SPREAD_SCAN 64
#define SPREAD_MARGIN_US 1000 /* slower than the worker's best by this much: a loaded process */
/* at most one retirement per this many requests: new connections stay near 3% */
#define SPREAD_RETIRE_COST 30

/* The worker's answers name their process: exact per-process least load.
 * Take the idle connection whose process has the fewest requests in flight
 * (one of unknown process teaches us one); when a lighter process exists
 * that no idle connection of this thread reaches, open a new connection
 * now and then instead (it re-races accept() and may land there). */
/* An idle connection past its age or near the worker's keep-alive timeout:
 * closed here, and not a candidate (1). */
static int retire_stale(ig_upconn *up, uint64_t now, uint64_t max_age, uint64_t idle_limit)
{
    if (!too_old(up, now, max_age) && !near_worker_close(up, now, idle_limit))
        return 0;
    ig_pool_close(up);
    return 1;
}

/* Idle connections idle this long are left to die with the worker's keep-alive timeout. */
static uint64_t reuse_limit_ms(ig_worker *w)
{
    uint64_t limit = atomic_load_explicit(&w->idle_close_ms, memory_order_relaxed);
    return limit - limit / 4;
}

static ig_upconn *take_by_process(ig_upstream_ctx *ctx, ig_worker *w)
{
    ig_pool *p = &w->pools[ctx->idx];
    uint64_t now = uv_now(ctx->loop), max_age = ctx->cfg->max_age_ms, idle_limit = reuse_limit_ms(w);
    int nprocs = atomic_load_explicit(&w->n_procs, memory_order_acquire), minload = INT32_MAX;
    for (int i = 0; i < nprocs; i++) {
        /* only processes some connection reaches: a process that exited keeps its slot */
        if (atomic_load_explicit(&w->procs[i].conns, memory_order_relaxed) <= 0)
            continue;
        int l = atomic_load_explicit(&w->procs[i].inflight, memory_order_relaxed);
        minload = l < minload ? l : minload;
    }
    ig_upconn *best = NULL;
    int bestload = INT32_MAX, scanned = 0;
    for (ig_list *n = p->idle.next; n != &p->idle && scanned < SPREAD_SCAN;) {
        ig_upconn *up = ig_container_of(n, ig_upconn, link);
        n = n->next;
        if (retire_stale(up, now, max_age, idle_limit))
            continue;
        scanned++;
        int load =
            up->proc >= 0 ? atomic_load_explicit(&w->procs[up->proc].inflight, memory_order_relaxed) : -1;
        if (load < bestload) {
            best = up;
            bestload = load;
            if (load <= minload)
                break; /* nothing is lighter */
        }
    }
    if (!best)
        return NULL;
    if (p->retire_credit < SPREAD_RETIRE_COST)
        p->retire_credit++;
    if (bestload > minload && p->retire_credit >= SPREAD_RETIRE_COST) {
        p->retire_credit -= SPREAD_RETIRE_COST;
        return NULL;
    }
    unlink_idle(best);
    best->state = IG_U_BUSY;
    best->reused = 1;
    return best;
}

ig_upconn *ig_pool_take(ig_upstream_ctx *ctx, ig_worker *w)
{
    if (ctx->cfg->process_header)
        return take_by_process(ctx, w);
    int spread = ctx->cfg->spread;
    ig_pool *p = &w->pools[ctx->idx];
    uint64_t now = uv_now(ctx->loop), max_age = ctx->cfg->max_age_ms;
    uint32_t wbest = atomic_load_explicit(&w->best_ttfb_us, memory_order_relaxed);
    /* within a quarter of the worker's best is as good as the scan can do:
     * stop there (each idle connection scanned is a cache miss) */
    uint32_t good_enough = wbest + wbest / 4;
    uint64_t idle_limit = reuse_limit_ms(w);
    ig_upconn *best = NULL;
    int scanned = 0;
    for (ig_list *n = p->idle.next; n != &p->idle && scanned < (spread ? SPREAD_SCAN : 1);) {
        ig_upconn *up = ig_container_of(n, ig_upconn, link);
        n = n->next;
        if (retire_stale(up, now, max_age, idle_limit))
            continue;
        scanned++;
        if (!best || up->ttfb_ewma_us < best->ttfb_ewma_us) {
            best = up;
            if (up->ttfb_ewma_us <= good_enough)
                break;
        }
    }
    if (!best)
        return NULL;
    if (p->retire_credit < SPREAD_RETIRE_COST)
        p->retire_credit++;
    if (spread && wbest && best->ttfb_ewma_us > 2 * wbest + SPREAD_MARGIN_US &&
        p->retire_credit >= SPREAD_RETIRE_COST) {
        p->retire_credit -= SPREAD_RETIRE_COST;
        return NULL; /* connect afresh; the slow one stays pooled for when its process calms down */
    }
    unlink_idle(best);
    best->state = IG_U_BUSY;
    best->reused = 1;
    return best;
}

void ig_pool_count_use(ig_upconn *up)
{
    if (up->reused) {
        atomic_fetch_add_explicit(&up->w->stats.conns_reused, 1, memory_order_relaxed);
        ig_count(&up->ctx->stats->conns_reused, 1);
    }
}

static void connect_timeout_cb(uv_timer_t *t)
{
    ig_upconn *up = t->data;
    up->timed_out = 1;
    ig_pool_close(up); /* cancels the connect: its callback tells the owner */
}

ig_upconn *ig_pool_connect(ig_upstream_ctx *ctx, ig_worker *w, uv_connect_cb cb)
{
    ig_upconn *up = calloc(1, sizeof(*up));
    if (!up)
        return NULL;
    up->ctx = ctx;
    up->w = w;
    ig_worker_ref(w);
    up->state = IG_U_CONNECTING;
    up->tcp.data = up;
    up->timer.data = up;
    ig_list_init(&up->link);
    ig_list_init(&up->tlink);
    up->proc = -1;
    ig_buf_init(&up->hbuf, 64 * 1024);
    ig_buf_init(&up->whead, ctx->cfg->max_request_head);
    up->created_ms = uv_now(ctx->loop);
    uv_tcp_init(ctx->loop, &up->tcp);
    uv_timer_init(ctx->loop, &up->timer);
    up->handles_open = 2;
    atomic_fetch_add_explicit(&w->stats.conns_opened, 1, memory_order_relaxed);
    ig_count(&ctx->stats->conns_opened, 1);
    uv_connect_t *creq = malloc(sizeof(*creq));
    int rc = creq ? uv_tcp_connect(creq, &up->tcp, (const struct sockaddr *)&w->addr, cb) : UV_ENOMEM;
    if (creq)
        creq->data = up;
    if (rc) {
        free(creq);
        ig_warn("connect to %s: %s", w->url, uv_strerror(rc));
        up->state = IG_U_BUSY;
        ig_pool_close(up);
        return NULL;
    }
    uv_timer_start(&up->timer, connect_timeout_cb, ctx->cfg->connect_timeout_ms, 0);
    return up;
}

void ig_pool_release(ig_upconn *up, int reusable)
{
    ig_upstream_ctx *ctx = up->ctx;
    const ig_pool_config *cfg = ctx->cfg;
    up->owner = NULL;
    up->cb = NULL;
    ig_pool_exchange_over(up);
    ig_pool_drop_head(up);
    if (up->writing || up->state != IG_U_BUSY)
        reusable = 0; /* answered before the request was all read (its state is unknown), or never up */
    uint64_t now = uv_now(ctx->loop);
    if (!reusable || ctx->draining || atomic_load_explicit(&up->w->removed, memory_order_relaxed) ||
        (cfg->max_requests && up->nreq >= cfg->max_requests) || too_old(up, now, cfg->max_age_ms)) {
        ig_pool_close(up);
        ig_buf_give(&up->whead, ctx->heads); /* after the close: libuv writes from it no more */
        return;
    }
    ig_buf_give(&up->whead, ctx->heads);
    ig_pool *p = &up->w->pools[ctx->idx];
    up->state = IG_U_IDLE;
    up->idle_since_ms = now;
    ig_list_push_front(&p->idle, &up->link);
    ig_list_push_front(&ctx->idle_conns, &up->tlink);
    p->nidle++;
}

void ig_pool_sweep(ig_upstream_ctx *ctx)
{
    uint64_t now = uv_now(ctx->loop);
    uint64_t idle_ms = ctx->cfg->idle_timeout_ms, max_age = ctx->cfg->max_age_ms;
    /* oldest first from the tail; a removed worker's connections go at once */
    ig_list *n = ctx->idle_conns.prev;
    while (n != &ctx->idle_conns) {
        ig_upconn *up = ig_container_of(n, ig_upconn, tlink);
        n = n->prev;
        if (now - up->idle_since_ms >= idle_ms || too_old(up, now, max_age) ||
            atomic_load_explicit(&up->w->removed, memory_order_relaxed))
            ig_pool_close(up);
    }
}

void ig_pool_close_all(ig_upstream_ctx *ctx)
{
    while (!ig_list_empty(&ctx->idle_conns))
        ig_pool_close(ig_container_of(ctx->idle_conns.next, ig_upconn, tlink));
}

void ig_pool_ctx_init(ig_upstream_ctx *ctx, uv_loop_t *loop, int idx, const ig_pool_config *cfg,
                      ig_freelist *blocks, ig_freelist *heads, ig_freelist *hdr_tables, ig_freelist *wreqs,
                      ig_thread_stats *stats)
{
    ctx->wreqs = wreqs;
    ctx->loop = loop;
    ctx->idx = idx;
    ctx->cfg = cfg;
    ctx->blocks = blocks;
    ctx->heads = heads;
    ctx->hdr_tables = hdr_tables;
    ctx->stats = stats;
    ig_list_init(&ctx->idle_conns);
    ctx->draining = 0;
}
