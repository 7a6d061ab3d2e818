/* Keep-alive pools of worker connections (ig_pool.h). */
#include <stdint.h>
#include <stdlib.h>

#include "../core/ig_log.h"
#include "ig_pool.h"
#include "ig_probe.h"

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
        ig_proc *pr = &up->w->procs[up->proc];
        atomic_fetch_sub_explicit(&pr->inflight, 1, memory_order_relaxed);
        atomic_store_explicit(&pr->seen_ms, uv_now(up->ctx->loop), memory_order_relaxed);
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
            up->found_new = 1;
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
    atomic_store_explicit(&w->procs[i].seen_ms, uv_now(up->ctx->loop), memory_order_relaxed);
    atomic_fetch_add_explicit(&w->procs[i].conns, 1, memory_order_relaxed);
    up->proc_counted = 1; /* the request it answers is in flight there */
    atomic_fetch_add_explicit(&w->procs[i].inflight, 1, memory_order_relaxed);
}

/* The probe is over (answered, failed or closed): the pool may send another. */
static void probe_over(ig_upconn *up)
{
    if (!up->probe)
        return;
    up->probe = 0;
    ig_list_remove(&up->tlink);
    up->w->pools[up->ctx->idx].probes_out--;
}

void ig_pool_close(ig_upconn *up)
{
    if (up->state == IG_U_CLOSING)
        return;
    probe_over(up);
    ig_pool_exchange_over(up);
    if (up->proc >= 0)
        atomic_fetch_sub_explicit(&up->w->procs[up->proc].conns, 1, memory_order_relaxed);
    if (up->state == IG_U_IDLE)
        unlink_idle(up);
    up->state = IG_U_CLOSING;
    atomic_fetch_add_explicit(&up->w->stats.conns_closed, 1, memory_order_relaxed);
    ig_count(&up->ctx->stats->conns_closed, 1);
    ig_net_close(&up->net, upconn_free_cb);
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

/* An answer later than the worker's base time by a quarter of it plus this
 * waited in a queue (a semaphore, a batch slot) on its process */
#define SPREAD_MARGIN_US 1000

static int queued_late(uint32_t ttfb, uint32_t base)
{
    return base && ttfb > base + base / 4 + SPREAD_MARGIN_US;
}

void ig_pool_note_ttfb(ig_upconn *up, uint64_t us)
{
    uint32_t s = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    up->ttfb_ewma_us = up->ttfb_ewma_us ? (up->ttfb_ewma_us * 3 + s) / 4 : s;
    /* the worker's base service time: follows improvements at once and forgets
     * 1/64 per sample, so it is the unqueued time, not the typical one */
    uint32_t base = atomic_load_explicit(&up->w->best_ttfb_us, memory_order_relaxed);
    if (queued_late(s, base))
        up->queued_streak += up->queued_streak < UINT8_MAX;
    else
        up->queued_streak = 0;
    uint32_t next = base && base < UINT32_MAX - base / 64 ? base + base / 64 + 1 : s;
    atomic_store_explicit(&up->w->best_ttfb_us, s < next ? s : next, memory_order_relaxed);
}

/* Spreading over the processes behind one address (pre-fork servers share a
 * socket; a connection belongs to whichever process won accept()). Among
 * the idle connections take the one whose process answers fastest; if even
 * that one answers clearly slower than the worker's best, it sits on a loaded
 * process: retire it, and the request opens a fresh connection, which
 * re-races accept() (a busy process tends to lose). */
#define SPREAD_SCAN 64
/* at most one retirement per this many requests: new connections stay near 3% */
#define SPREAD_RETIRE_COST 30
/* a connection whose answers queued this many times in a row is closed: it
 * sits on a process with more connections than it has slots */
#define SPREAD_QUEUED_STREAK 3

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

/* A process that lost its last connection still counts this long (its
 * connections were closed idle; it is likely still there, unloaded). */
#define PROC_FORGET_MS 30000

/* The fewest requests in flight on any process of w lately seen. */
static int least_proc_load(ig_worker *w, uint64_t now)
{
    int nprocs = atomic_load_explicit(&w->n_procs, memory_order_acquire), minload = INT32_MAX;
    for (int i = 0; i < nprocs; i++) {
        /* a process that exited keeps its slot: only those some connection reaches or lately answered */
        if (atomic_load_explicit(&w->procs[i].conns, memory_order_relaxed) <= 0 &&
            now - atomic_load_explicit(&w->procs[i].seen_ms, memory_order_relaxed) > PROC_FORGET_MS)
            continue;
        int l = atomic_load_explicit(&w->procs[i].inflight, memory_order_relaxed);
        minload = l < minload ? l : minload;
    }
    return minload;
}

/* The idle connection whose process has the fewest in flight (one of
 * unknown process first: it teaches us one), or NULL; not taken. */
static ig_upconn *choose_by_process(ig_upstream_ctx *ctx, ig_worker *w, int minload, int *bestload)
{
    ig_pool *p = &w->pools[ctx->idx];
    uint64_t now = uv_now(ctx->loop), max_age = ctx->cfg->max_age_ms, idle_limit = reuse_limit_ms(w);
    ig_upconn *best = NULL;
    int scanned = 0;
    *bestload = INT32_MAX;
    for (ig_list *n = p->idle.next; n != &p->idle && scanned < SPREAD_SCAN;) {
        ig_upconn *up = ig_container_of(n, ig_upconn, link);
        n = n->next;
        if (retire_stale(up, now, max_age, idle_limit))
            continue;
        scanned++;
        int load =
            up->proc >= 0 ? atomic_load_explicit(&w->procs[up->proc].inflight, memory_order_relaxed) : -1;
        if (load < *bestload) {
            best = up;
            *bestload = load;
            if (load <= minload)
                break; /* nothing is lighter */
        }
    }
    return best;
}

static ig_upconn *hand_out(ig_upconn *up)
{
    unlink_idle(up);
    up->state = IG_U_BUSY;
    up->reused = 1;
    return up;
}

static void start_probe(ig_upstream_ctx *ctx, ig_worker *w)
{
    ig_pool *p = &w->pools[ctx->idx];
    p->last_probe_ms = uv_now(ctx->loop);
    if (ig_probe_start(ctx, w) == 0)
        p->probes_out++;
}

/* while every known process is busy, a probe at least this often: long
 * requests are few, and the accept() race reaches some processes rarely */
#define EXPLORE_EVERY_MS 250

static ig_upconn *take_by_process(ig_upstream_ctx *ctx, ig_worker *w)
{
    ig_pool *p = &w->pools[ctx->idx];
    uint64_t now = uv_now(ctx->loop);
    int minload = least_proc_load(w, now), bestload;
    ig_upconn *best = choose_by_process(ctx, w, minload, &bestload);
    if (p->retire_credit < SPREAD_RETIRE_COST)
        p->retire_credit++;
    if (!p->explore_cost)
        p->explore_cost = SPREAD_RETIRE_COST;
    if (minload > 0 && minload != INT32_MAX && p->explore_credit < p->explore_cost)
        p->explore_credit++; /* every known process is busy: there may be one we have not met */
    if (!p->probes_out && !ctx->draining) {
        /* a lighter process no idle connection of this thread reaches, or
         * one not met yet: a probe connection may land there, and no
         * request waits for it */
        if (best && bestload > minload && p->retire_credit >= SPREAD_RETIRE_COST) {
            p->retire_credit -= SPREAD_RETIRE_COST;
            start_probe(ctx, w);
        } else if (p->explore_credit >= p->explore_cost ||
                   (minload > 0 && minload != INT32_MAX && now - p->last_probe_ms >= EXPLORE_EVERY_MS)) {
            p->explore_credit = 0;
            start_probe(ctx, w);
        }
    }
    return best ? hand_out(best) : NULL;
}

/* Requests waiting for a connection: this long for one on a least-loaded
 * process, then any idle one will do */
#define WAIT_PICKY_MS 100
/* probes go out at most this often per worker and thread while requests
 * wait, and at most this many at once: spaced connects race accept() one by
 * one. A bigger crowd (a thousand streams on a cold pool) gets a bigger batch
 * per tick, so it is not paced for seconds: one more per 64 waiting, and one
 * more at once per 16. */
#define PROBE_PACE_MS 1
#define PROBES_MAX 4

static void unwait(ig_upstream_ctx *ctx, ig_conn_wait *cw)
{
    ig_list_remove(&cw->link);
    cw->w->pools[ctx->idx].nwaiting--;
    cw->w = NULL;
}

/* Give waiters the connections fit for them, oldest first. ready() may
 * start, fail and retry a request (which may wait again): the scan starts
 * over after each, and a nested call only asks for another pass. */
static void serve_waiters(ig_upstream_ctx *ctx)
{
    if (ctx->serving) {
        ctx->serve_again = 1;
        return;
    }
    ctx->serving = 1;
    do {
        ctx->serve_again = 0;
        uint64_t now = uv_now(ctx->loop);
        for (ig_list *n = ctx->waiters.next; n != &ctx->waiters; n = n->next) {
            ig_conn_wait *cw = ig_container_of(n, ig_conn_wait, link);
            ig_worker *w = cw->w;
            int minload = least_proc_load(w, now), load, late = now - cw->since_ms >= WAIT_PICKY_MS;
            ig_upconn *up = choose_by_process(ctx, w, minload, &load);
            if (!up && !(late && !w->pools[ctx->idx].probes_out))
                continue;
            if (up && load > minload && !late)
                continue;
            /* a fit connection, any after a while, or none coming (draining): connect yourself */
            unwait(ctx, cw);
            cw->ready(cw, up ? hand_out(up) : NULL);
            ctx->serve_again = 1;
            break;
        }
    } while (ctx->serve_again);
    ctx->serving = 0;
}

static void pace_cb(uv_timer_t *t)
{
    ig_upstream_ctx *ctx = t->data;
    serve_waiters(ctx);
    if (ig_list_empty(&ctx->waiters)) {
        uv_timer_stop(t);
        return;
    }
    uint64_t now = uv_now(ctx->loop);
    for (ig_list *n = ctx->waiters.next; n != &ctx->waiters; n = n->next) {
        ig_worker *w = ig_container_of(n, ig_conn_wait, link)->w;
        ig_pool *p = &w->pools[ctx->idx];
        if (now - p->last_probe_ms < PROBE_PACE_MS || ctx->draining)
            continue;
        int most = PROBES_MAX + p->nwaiting / 16, batch = 1 + p->nwaiting / 64;
        for (int i = 0; i < batch && p->probes_out < p->nwaiting && p->probes_out < most; i++) {
            int before = p->probes_out;
            start_probe(ctx, w);
            if (p->probes_out == before)
                break; /* it could not start: the next tick tries again */
        }
    }
}

int ig_pool_wait(ig_upstream_ctx *ctx, ig_worker *w, ig_conn_wait *cw)
{
    if (!(ctx->cfg->process_header || ctx->cfg->spread) || ctx->cfg->max_requests == 1 || ctx->draining)
        return 0; /* a connection per request: nothing to learn, nothing to pace */
    if (!ctx->pace_open) {
        uv_timer_init(ctx->loop, &ctx->pace);
        ctx->pace.data = ctx;
        ctx->pace_open = 1;
    }
    ig_pool *p = &w->pools[ctx->idx];
    if (!p->probes_out || uv_now(ctx->loop) - p->last_probe_ms >= PROBE_PACE_MS) {
        start_probe(ctx, w);
        if (!p->probes_out)
            return 0; /* it could not even start: the request's own connect reports why */
    }
    cw->w = w;
    cw->since_ms = uv_now(ctx->loop);
    ig_list_push_back(&ctx->waiters, &cw->link);
    p->nwaiting++;
    if (!uv_is_active((uv_handle_t *)&ctx->pace))
        uv_timer_start(&ctx->pace, pace_cb, PROBE_PACE_MS, PROBE_PACE_MS);
    return 1;
}

void ig_pool_unwait(ig_upstream_ctx *ctx, ig_conn_wait *cw)
{
    if (cw->w)
        unwait(ctx, cw);
}

void ig_pool_probe_failed(ig_upstream_ctx *ctx, ig_worker *w)
{
    if (w->pools[ctx->idx].probes_out)
        return; /* another is under way */
    /* the worker may be down: each waiter's own connect finds out, and fails over */
    for (ig_list *n = ctx->waiters.next; n != &ctx->waiters;) {
        ig_conn_wait *cw = ig_container_of(n, ig_conn_wait, link);
        n = n->next;
        if (cw->w != w)
            continue;
        unwait(ctx, cw);
        cw->ready(cw, NULL);
        n = ctx->waiters.next; /* ready() may have changed the list */
    }
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
        if (spread && up->queued_streak >= SPREAD_QUEUED_STREAK && p->retire_credit >= SPREAD_RETIRE_COST) {
            p->retire_credit -= SPREAD_RETIRE_COST;
            ig_pool_close(up); /* fewer connections there: fewer requests queue there */
            continue;
        }
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
    if (spread && queued_late(best->ttfb_ewma_us, wbest) && p->retire_credit >= SPREAD_RETIRE_COST) {
        p->retire_credit -= SPREAD_RETIRE_COST;
        return NULL; /* connect afresh; the slow one stays pooled for when its process calms down */
    }
    return hand_out(best);
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
    up->net.tcp.data = up;
    up->timer.data = up;
    ig_list_init(&up->link);
    ig_list_init(&up->tlink);
    up->proc = -1;
    ig_buf_init(&up->hbuf, 64 * 1024);
    ig_buf_init(&up->whead, ctx->cfg->max_request_head);
    up->created_ms = uv_now(ctx->loop);
    uv_tcp_init(ctx->loop, &up->net.tcp);
    uv_timer_init(ctx->loop, &up->timer);
    up->handles_open = 2;
    atomic_fetch_add_explicit(&w->stats.conns_opened, 1, memory_order_relaxed);
    ig_count(&ctx->stats->conns_opened, 1);
    uv_connect_t *creq = malloc(sizeof(*creq));
    int rc = creq ? uv_tcp_connect(creq, &up->net.tcp, (const struct sockaddr *)&w->addr, cb) : UV_ENOMEM;
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
    if (p->nwaiting)
        serve_waiters(ctx);
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

/* Probe connections kept per process and thread beyond what it is using */
#define PROBE_SPARES 2
#define EXPLORE_COST_MAX 1024

void ig_pool_probe_done(ig_upconn *up, int reusable)
{
    ig_pool *p = &up->w->pools[up->ctx->idx];
    probe_over(up);
    if (up->found_new)
        p->explore_cost = SPREAD_RETIRE_COST;
    else if (p->explore_cost < EXPLORE_COST_MAX)
        p->explore_cost *= 2; /* the processes met so far may be all there are */
    int spares = 0, scanned = 0;
    for (ig_list *n = p->idle.next; up->proc >= 0 && n != &p->idle && scanned++ < SPREAD_SCAN; n = n->next)
        spares += ig_container_of(n, ig_upconn, link)->proc == up->proc;
    ig_pool_release(up, reusable && spares < PROBE_SPARES);
}

void ig_pool_close_all(ig_upstream_ctx *ctx)
{
    if (ctx->pace_open && !uv_is_closing((uv_handle_t *)&ctx->pace))
        uv_close((uv_handle_t *)&ctx->pace, NULL);
    while (!ig_list_empty(&ctx->probes)) {
        ig_upconn *up = ig_container_of(ctx->probes.next, ig_upconn, tlink);
        up->cb = NULL; /* its exchange ends unheard */
        up->owner = NULL;
        ig_pool_close(up);
    }
    while (!ig_list_empty(&ctx->idle_conns))
        ig_pool_close(ig_container_of(ctx->idle_conns.next, ig_upconn, tlink));
    for (int i = 0; i < IG_TLS_SESSION_SLOTS; i++) {
        ig_tls_session_free(ctx->tls_sessions[i].session);
        ctx->tls_sessions[i].session = NULL;
    }
}

void **ig_pool_tls_session(ig_upstream_ctx *ctx, const ig_worker *w)
{
    ig_tls_session_slot *s = &ctx->tls_sessions[w->id % IG_TLS_SESSION_SLOTS];
    if (s->worker_id != w->id) {
        ig_tls_session_free(s->session);
        s->session = NULL;
        s->worker_id = w->id;
    }
    return &s->session;
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
    ig_list_init(&ctx->probes);
    ig_list_init(&ctx->waiters);
    ctx->pace_open = ctx->serving = ctx->serve_again = 0;
    ctx->draining = 0;
}
