/* Per-thread keep-alive pools of worker connections: take, connect, release,
 * retire (request count, age, idle time) and close. */
#include <stdlib.h>

#include "../core/ig_log.h"
#include "../gateway/ig_gateway.h"

static void upconn_free_cb(uv_handle_t *h)
{
    ig_upconn *up = h->data;
    if (--up->handles_open == 0) {
        ig_buf_free(&up->hbuf);
        free(up);
    }
}

void ig_upstream_close(ig_upconn *up)
{
    if (up->state == U_CLOSING)
        return;
    if (up->state == U_IDLE) {
        ig_list_remove(&up->link);
        up->th->pools[up->w->idx].nidle--;
    }
    up->state = U_CLOSING;
    up->c = NULL;
    uv_close((uv_handle_t *)&up->tcp, upconn_free_cb);
    uv_close((uv_handle_t *)&up->timer, upconn_free_cb);
}

static int too_old(const ig_upconn *up, uint64_t now)
{
    double age = up->th->cfg->upstream_max_conn_age_secs;
    return age > 0 && (double)(now - up->created_ms) >= age * 1000.0;
}

ig_upconn *ig_upstream_take(ig_thread *th, ig_worker *w)
{
    ig_pool *p = &th->pools[w->idx];
    uint64_t now = uv_now(&th->loop);
    while (!ig_list_empty(&p->idle)) {
        ig_upconn *up = ig_container_of(p->idle.next, ig_upconn, link);
        ig_list_remove(&up->link);
        p->nidle--;
        if (too_old(up, now)) {
            up->state = U_BUSY; /* not in the list any more */
            ig_upstream_close(up);
            continue;
        }
        up->state = U_BUSY;
        up->reused = 1;
        return up;
    }
    return NULL;
}

static void connect_timeout_cb(uv_timer_t *t)
{
    ig_upconn *up = t->data;
    up->timed_out = 1;
    /* closing cancels the connect: its callback reports the failure */
    uv_close((uv_handle_t *)&up->tcp, upconn_free_cb);
    uv_close((uv_handle_t *)&up->timer, upconn_free_cb);
    up->state = U_CLOSING;
}

ig_upconn *ig_upstream_connect(ig_thread *th, ig_worker *w, uv_connect_cb cb)
{
    ig_upconn *up = calloc(1, sizeof(*up));
    if (!up)
        return NULL;
    up->th = th;
    up->w = w;
    up->state = U_CONNECTING;
    up->tcp.data = up;
    up->timer.data = up;
    up->creq.data = up;
    up->wreq.data = up;
    ig_list_init(&up->link);
    ig_buf_init(&up->hbuf, 64 * 1024);
    up->created_ms = uv_now(&th->loop);
    uv_tcp_init(&th->loop, &up->tcp);
    uv_timer_init(&th->loop, &up->timer);
    up->handles_open = 2;
    int rc = uv_tcp_connect(&up->creq, &up->tcp, (const struct sockaddr *)&w->addr, cb);
    if (rc) {
        ig_warn("connect to %s: %s", w->url, uv_strerror(rc));
        up->state = U_BUSY;
        ig_upstream_close(up);
        return NULL;
    }
    uv_timer_start(&up->timer, connect_timeout_cb,
                   (uint64_t)(th->cfg->connect_timeout_secs * 1000.0), 0);
    return up;
}

void ig_upstream_release(ig_upconn *up, int reusable)
{
    const ig_config *cfg = up->th->cfg;
    up->c = NULL;
    uint64_t now = uv_now(&up->th->loop);
    if (!reusable || up->th->draining ||
        (cfg->upstream_max_requests_per_conn && up->nreq >= cfg->upstream_max_requests_per_conn) ||
        too_old(up, now)) {
        ig_upstream_close(up);
        return;
    }
    ig_pool *p = &up->th->pools[up->w->idx];
    up->state = U_IDLE;
    up->idle_since_ms = now;
    ig_list_push_front(&p->idle, &up->link);
    p->nidle++;
}

void ig_upstream_sweep(ig_thread *th)
{
    uint64_t now = uv_now(&th->loop);
    uint64_t idle_ms = (uint64_t)(th->cfg->upstream_idle_timeout_secs * 1000.0);
    for (int i = 0; i < th->npools; i++) {
        ig_pool *p = &th->pools[i];
        /* the oldest idle connections sit at the tail */
        while (!ig_list_empty(&p->idle)) {
            ig_upconn *up = ig_container_of(p->idle.prev, ig_upconn, link);
            if (now - up->idle_since_ms < idle_ms && !too_old(up, now))
                break;
            ig_upstream_close(up);
        }
    }
}

void ig_upstream_close_all(ig_thread *th)
{
    for (int i = 0; i < th->npools; i++)
        while (!ig_list_empty(&th->pools[i].idle))
            ig_upstream_close(ig_container_of(th->pools[i].idle.next, ig_upconn, link));
}
