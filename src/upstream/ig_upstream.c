/* Keep-alive pools of worker connections: each worker keeps one pool per
 * loop thread, touched only by that thread. Take, connect, release, retire
 * (request count, age, idle time, worker removed) and close. */
#include <stdlib.h>

#include "../core/ig_log.h"
#include "../gateway/ig_gateway.h"

void ig_upstream_drop_head(ig_upconn *up)
{
    ig_buf_give(&up->hbuf, &up->th->heads);
    ig_freelist_put(&up->th->hdr_tables, up->hdrs);
    up->hdrs = NULL;
    up->nhdrs = 0;
}

static void upconn_free_cb(uv_handle_t *h)
{
    ig_upconn *up = h->data;
    if (--up->handles_open == 0) {
        ig_upstream_drop_head(up);
        ig_worker_unref(up->w);
        free(up);
    }
}

static void unlink_idle(ig_upconn *up)
{
    ig_list_remove(&up->link);
    ig_list_remove(&up->tlink);
    up->w->pools[up->th->idx].nidle--;
}

void ig_upstream_close(ig_upconn *up)
{
    if (up->state == IG_U_CLOSING)
        return;
    if (up->state == IG_U_IDLE)
        unlink_idle(up);
    up->state = IG_U_CLOSING;
    up->c = NULL;
    atomic_fetch_add_explicit(&up->w->stats.conns_closed, 1, memory_order_relaxed);
    ig_count(&up->th->stats.conns_closed, 1);
    uv_close((uv_handle_t *)&up->tcp, upconn_free_cb);
    uv_close((uv_handle_t *)&up->timer, upconn_free_cb);
}

/* 0: no age limit */
static uint64_t max_age_ms(const ig_thread *th)
{
    double age = th->cfg->upstream_max_conn_age_secs;
    return age > 0 ? (uint64_t)(age * 1000.0) : 0;
}

static int too_old(const ig_upconn *up, uint64_t now, uint64_t max_age)
{
    return max_age && now - up->created_ms >= max_age;
}

/* Closes sooner than this after going idle are not a keep-alive timeout
 * (a restart, a worker that closes after every answer). */
#define IDLE_CLOSE_MIN_MS 200

void ig_upstream_note_idle_close(ig_upconn *up)
{
    uint64_t idle = uv_now(&up->th->loop) - up->idle_since_ms;
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

void ig_upstream_note_ttfb(ig_upconn *up, uint64_t us)
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

ig_upconn *ig_upstream_take(ig_thread *th, ig_worker *w)
{
    int spread = th->cfg->upstream_spread;
    ig_pool *p = &w->pools[th->idx];
    uint64_t now = uv_now(&th->loop), max_age = max_age_ms(th);
    uint32_t wbest = atomic_load_explicit(&w->best_ttfb_us, memory_order_relaxed);
    /* within a quarter of the worker's best is as good as the scan can do:
     * stop there (each idle connection scanned is a cache miss) */
    uint32_t good_enough = wbest + wbest / 4;
    uint64_t idle_limit = atomic_load_explicit(&w->idle_close_ms, memory_order_relaxed);
    idle_limit -= idle_limit / 4;
    ig_upconn *best = NULL;
    int scanned = 0;
    for (ig_list *n = p->idle.next; n != &p->idle && scanned < (spread ? SPREAD_SCAN : 1);) {
        ig_upconn *up = ig_container_of(n, ig_upconn, link);
        n = n->next;
        if (too_old(up, now, max_age) || near_worker_close(up, now, idle_limit)) {
            ig_upstream_close(up);
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

void ig_upstream_count_use(ig_upconn *up)
{
    if (up->reused) {
        atomic_fetch_add_explicit(&up->w->stats.conns_reused, 1, memory_order_relaxed);
        ig_count(&up->th->stats.conns_reused, 1);
    }
}

static void connect_timeout_cb(uv_timer_t *t)
{
    ig_upconn *up = t->data;
    ig_client *c = up->c;
    up->timed_out = 1;
    ig_upstream_close(up);
    /* closing cancels the connect; its callback tells the client, so keep it attached */
    up->c = c;
}

ig_upconn *ig_upstream_connect(ig_thread *th, ig_worker *w, uv_connect_cb cb)
{
    ig_upconn *up = calloc(1, sizeof(*up));
    if (!up)
        return NULL;
    up->th = th;
    up->w = w;
    ig_worker_ref(w);
    up->state = IG_U_CONNECTING;
    up->tcp.data = up;
    up->timer.data = up;
    up->creq.data = up;
    up->wreq.data = up;
    ig_list_init(&up->link);
    ig_list_init(&up->tlink);
    ig_buf_init(&up->hbuf, 64 * 1024);
    up->created_ms = uv_now(&th->loop);
    uv_tcp_init(&th->loop, &up->tcp);
    uv_timer_init(&th->loop, &up->timer);
    up->handles_open = 2;
    atomic_fetch_add_explicit(&w->stats.conns_opened, 1, memory_order_relaxed);
    ig_count(&th->stats.conns_opened, 1);
    int rc = uv_tcp_connect(&up->creq, &up->tcp, (const struct sockaddr *)&w->addr, cb);
    if (rc) {
        ig_warn("connect to %s: %s", w->url, uv_strerror(rc));
        up->state = IG_U_BUSY;
        ig_upstream_close(up);
        return NULL;
    }
    uv_timer_start(&up->timer, connect_timeout_cb, (uint64_t)(th->cfg->connect_timeout_secs * 1000.0), 0);
    return up;
}

void ig_upstream_release(ig_upconn *up, int reusable)
{
    const ig_config *cfg = up->th->cfg;
    up->c = NULL;
    ig_upstream_drop_head(up);
    if (up->writing)
        reusable = 0; /* answered before the request was all read: its state is unknown */
    uint64_t now = uv_now(&up->th->loop);
    if (!reusable || up->th->draining || atomic_load_explicit(&up->w->removed, memory_order_relaxed) ||
        (cfg->upstream_max_requests_per_conn && up->nreq >= cfg->upstream_max_requests_per_conn) ||
        too_old(up, now, max_age_ms(up->th))) {
        ig_upstream_close(up);
        return;
    }
    ig_pool *p = &up->w->pools[up->th->idx];
    up->state = IG_U_IDLE;
    up->idle_since_ms = now;
    ig_list_push_front(&p->idle, &up->link);
    ig_list_push_front(&up->th->idle_conns, &up->tlink);
    p->nidle++;
}

void ig_upstream_sweep(ig_thread *th)
{
    uint64_t now = uv_now(&th->loop);
    uint64_t idle_ms = (uint64_t)(th->cfg->upstream_idle_timeout_secs * 1000.0), max_age = max_age_ms(th);
    /* oldest first from the tail; a removed worker's connections go at once */
    ig_list *n = th->idle_conns.prev;
    while (n != &th->idle_conns) {
        ig_upconn *up = ig_container_of(n, ig_upconn, tlink);
        n = n->prev;
        if (now - up->idle_since_ms >= idle_ms || too_old(up, now, max_age) ||
            atomic_load_explicit(&up->w->removed, memory_order_relaxed))
            ig_upstream_close(up);
    }
}

void ig_upstream_close_all(ig_thread *th)
{
    while (!ig_list_empty(&th->idle_conns))
        ig_upstream_close(ig_container_of(th->idle_conns.next, ig_upconn, tlink));
}
