/* Event-loop threads: each owns a loop, a SO_REUSEPORT listener, upstream
 * pools and buffer free lists; nothing here is shared between threads except
 * the stop flag and the wake-up async handle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <time.h>
#include <unistd.h>

#include "../balance/ig_prefix_share.h"
#include "../core/ig_log.h"
#include "../core/ig_epoch.h"
#include "../core/ig_inbox.h"
#include "../proxy/ig_pd.h"
#include "ig_thread.h"

#include "ig_h1conn.h"

ig_thread *ig_all_threads;
int ig_n_threads;

/* free lists are bounded so a burst does not pin its peak memory forever */
#define MAX_FREE_BLOCKS 256
#define MAX_FREE_WREQS 1024
#define MAX_FREE_RBUFS 64
#define MAX_FREE_HEADS 256
#define MAX_FREE_HDR_TABLES 256

static void on_connection(uv_stream_t *server, int status)
{
    ig_thread *th = server->data;
    if (status < 0) {
        ig_warn("accept: %s", uv_strerror(status));
        return;
    }
    ig_h1conn_accept(th, server, 0);
}

static void on_metrics_connection(uv_stream_t *server, int status)
{
    ig_thread *th = server->data;
    if (status < 0) {
        ig_warn("accept (--prometheus-port): %s", uv_strerror(status));
        return;
    }
    ig_h1conn_accept(th, server, IG_H1C_METRICS_ONLY);
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Everything has drained: close the remaining handles so the loop ends. */
static void thread_finish(ig_thread *th)
{
    ig_pool_close_all(&th->up);
    if (!uv_is_closing((uv_handle_t *)&th->prepare))
        uv_close((uv_handle_t *)&th->prepare, NULL);
    if (!uv_is_closing((uv_handle_t *)&th->check))
        uv_close((uv_handle_t *)&th->check, NULL);
    if (!uv_is_closing((uv_handle_t *)&th->sweep))
        uv_close((uv_handle_t *)&th->sweep, NULL);
    if (!uv_is_closing((uv_handle_t *)&th->drain_timer))
        uv_close((uv_handle_t *)&th->drain_timer, NULL);
    if (!uv_is_closing((uv_handle_t *)&th->budget_timer))
        uv_close((uv_handle_t *)&th->budget_timer, NULL);
    ig_wakeup_close(&th->wake);
    ig_admq_close(&th->admq);
}

void ig_thread_client_closed(ig_thread *th)
{
    th->nclients--;
    if (th->draining && th->nclients == 0)
        thread_finish(th);
}

static void drain_timeout_cb(uv_timer_t *t)
{
    ig_thread *th = t->data;
    ig_warn("thread %d: drain timeout, closing %d connections", th->idx, th->nclients);
    ig_h1conn_close_all(th);
    if (th->nclients == 0)
        thread_finish(th);
}

static void take_replies(ig_thread *th)
{
    for (ig_inbox_node *n = ig_inbox_take(&th->replies), *next; n; n = next) {
        next = n->next;
        th->hooks->on_message(n);
    }
}

/* Also the control thread's nudge after a publish: running at all is the
 * point, the loop passes its quiescent points around it. */
static void wake_cb(ig_wakeup *a)
{
    ig_thread *th = a->data;
    take_replies(th);
    if (th->admq.n)
        ig_admq_dispatch(&th->admq); /* another thread freed a slot our oldest waiter may take */
    if (!atomic_load(&th->stop_requested) || th->draining)
        return;
    th->draining = 1;
    th->up.draining = 1;
    if (!uv_is_closing((uv_handle_t *)&th->listener))
        uv_close((uv_handle_t *)&th->listener, NULL);
    if (th->metrics_open && !uv_is_closing((uv_handle_t *)&th->metrics_listener))
        uv_close((uv_handle_t *)&th->metrics_listener, NULL);
    ig_h1conn_drain(th);
    if (th->nclients == 0) {
        thread_finish(th);
        return;
    }
    uv_timer_start(&th->drain_timer, drain_timeout_cb, (uint64_t)(th->cfg->drain_timeout_secs * 1000.0), 0);
}

#define BIG_RBUF_IDLE_MS 5000

void ig_thread_free_big_rbufs(ig_thread *th)
{
    while (th->n_big_rbuf)
        free(th->big_rbuf[--th->n_big_rbuf]);
    th->big_rbuf_bytes = 0;
}

static void sweep_cb(uv_timer_t *t)
{
    ig_thread *th = t->data;
    ig_pool_sweep(&th->up);
    if (th->n_big_rbuf && uv_now(&th->loop) - th->big_rbuf_used_ms > BIG_RBUF_IDLE_MS)
        ig_thread_free_big_rbufs(th); /* no big bodies lately: back to the system */
}

/* Between callbacks the thread holds no snapshot: tell the registry. */
static void prepare_cb(uv_prepare_t *p)
{
    ig_thread *th = p->data;
    ig_epoch_quiescent(th->idx);
    if (th->alog.buf.len)
        ig_alog_flush(&th->alog);
}

static void check_cb(uv_check_t *ch)
{
    ig_thread *th = ch->data;
    ig_epoch_quiescent(th->idx);
    if (th->admq.dirty)
        ig_admq_dispatch(&th->admq);
}

static void thread_main(void *arg)
{
    ig_thread *th = arg;
    uv_run(&th->loop, UV_RUN_DEFAULT);
    /* handles left by a forced drain: close them so the loop can be freed */
    ig_wakeup_close(&th->wake);
    uv_walk(&th->loop, close_walk_cb, NULL);
    uv_run(&th->loop, UV_RUN_DEFAULT);
    ig_epoch_offline(th->idx);
    take_replies(th);
    ig_alog_flush(&th->alog);
    uv_loop_close(&th->loop);
}

static int thread_init(ig_thread *th, int idx, const ig_server_config *cfg, const ig_pool_config *pool,
                       int fd, const ig_server_hooks *hooks)
{
    uint64_t seed;
    memset(th, 0, sizeof(*th));
    th->idx = idx;
    th->cfg = cfg;
    th->hooks = hooks;
    th->listen_fd = fd;
    ig_list_init(&th->clients);
    ig_list_init(&th->budget_waiters);
    if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
        seed = (uint64_t)idx * 7919 + 1;
    ig_policy_state_init(&th->px.pol, seed);
    snprintf(th->rid_prefix, sizeof(th->rid_prefix), "%08x-%x-", (unsigned)(seed >> 32), idx);
    th->pool_cfg = *pool;
    ig_inbox_init(&th->replies, &th->wake);
    ig_alog_init(&th->alog, STDERR_FILENO);
    ig_freelist_init(&th->blocks, sizeof(ig_block), MAX_FREE_BLOCKS);
    ig_freelist_init(&th->wreqs, sizeof(ig_wreq), MAX_FREE_WREQS);
    ig_freelist_init(&th->rbufs, IG_RBUF_SIZE, MAX_FREE_RBUFS);
    ig_freelist_init(&th->heads, IG_HEAD_SIZE, MAX_FREE_HEADS);
    ig_freelist_init(&th->hdr_tables, sizeof(ig_hdr) * IG_MAX_HEADERS, MAX_FREE_HDR_TABLES);
    int rc = uv_loop_init(&th->loop);
    ig_pool_ctx_init(&th->up, &th->loop, idx, &th->pool_cfg, &th->blocks, &th->heads, &th->hdr_tables,
                     &th->wreqs, &th->stats);
    th->px.loop = &th->loop;
    th->px.up = &th->up;
    th->px.admq = &th->admq;
    th->px.stats = &th->stats;
    th->px.replies = &th->replies;
    th->px.share = ig_prefix_share_outbox(idx);
    rc = rc ? rc : uv_tcp_init(&th->loop, &th->listener);
    if (rc)
        return rc;
    th->listener.data = th;
    rc = uv_tcp_open(&th->listener, fd);
    rc = rc ? rc : uv_listen((uv_stream_t *)&th->listener, 4096, on_connection);
    if (rc)
        return rc;
    if (idx == 0 && th->cfg->metrics_fd >= 0) { /* scrapes are few: one thread takes them */
        rc = uv_tcp_init(&th->loop, &th->metrics_listener);
        th->metrics_listener.data = th;
        rc = rc ? rc : uv_tcp_open(&th->metrics_listener, th->cfg->metrics_fd);
        rc = rc ? rc : uv_listen((uv_stream_t *)&th->metrics_listener, 128, on_metrics_connection);
        if (rc)
            return rc;
        th->metrics_open = 1;
    }
    if ((rc = ig_wakeup_init(&th->loop, &th->wake, wake_cb)))
        return rc;
    th->wake.data = th;
    uv_timer_init(&th->loop, &th->sweep);
    th->sweep.data = th;
    uv_timer_start(&th->sweep, sweep_cb, 1000, 1000);
    uv_timer_init(&th->loop, &th->drain_timer);
    th->drain_timer.data = th;
    uv_timer_init(&th->loop, &th->budget_timer);
    th->budget_timer.data = th;
    if ((rc = ig_admq_init(&th->admq, &th->loop, &th->wake, &th->stats.queue_wait)))
        return rc;
    uv_prepare_init(&th->loop, &th->prepare);
    th->prepare.data = th;
    uv_prepare_start(&th->prepare, prepare_cb);
    uv_check_init(&th->loop, &th->check);
    th->check.data = th;
    uv_check_start(&th->check, check_cb);
    return 0;
}

int ig_threads_init(ig_thread *ths, int n, const ig_server_config *cfg, const ig_pool_config *pool,
                    const int *fds, const ig_server_hooks *hooks)
{
    ig_all_threads = ths;
    ig_n_threads = n;
    for (int i = 0; i < n; i++)
        ths[i].wake.fd = -1; /* released at exit even if its init never ran */
    for (int i = 0; i < n; i++) {
        int rc = thread_init(&ths[i], i, cfg, pool, fds[i], hooks);
        if (rc) {
            ig_err("thread %d: %s", i, rc < 0 ? uv_strerror(rc) : "out of memory");
            return rc < 0 ? rc : -1;
        }
    }
    return 0;
}

int ig_threads_run(ig_thread *ths, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = uv_thread_create(&ths[i].tid, thread_main, &ths[i]);
        if (rc)
            return rc;
    }
    return 0;
}

void ig_thread_wake(int i)
{
    ig_wakeup_send(&ig_all_threads[i].wake);
}

void ig_threads_stop(ig_thread *ths, int n)
{
    for (int i = 0; i < n; i++) {
        atomic_store(&ths[i].stop_requested, 1);
        ig_wakeup_send(&ths[i].wake);
    }
}

void ig_threads_release_wakeups(ig_thread *ths, int n)
{
    for (int i = 0; i < n; i++)
        if (ths[i].wake.cb) /* its init ran */
            ig_wakeup_release(&ths[i].wake);
}

void ig_threads_join(ig_thread *ths, int n)
{
    for (int i = 0; i < n; i++)
        uv_thread_join(&ths[i].tid);
    for (int i = 0; i < n; i++) {
        ig_freelist_clear(&ths[i].blocks);
        ig_freelist_clear(&ths[i].wreqs);
        ig_freelist_clear(&ths[i].rbufs);
        ig_thread_free_big_rbufs(&ths[i]);
        ig_freelist_clear(&ths[i].heads);
        ig_freelist_clear(&ths[i].hdr_tables);
        ig_pd_thread_done(&ths[i].px);
        ig_inbox_destroy(&ths[i].replies);
        ig_alog_free(&ths[i].alog);
    }
}
