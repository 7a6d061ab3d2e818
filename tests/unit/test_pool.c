/* The keep-alive pool's choice of connection: the one whose process answers
 * fastest, early exit when good enough, most recent first without spread,
 * leaving a queued one (or closing one that keeps queueing) at most once per
 * 30 requests, exact least load with the process named, requests waiting for
 * a probed connection, connections past
 * their age or near the worker's learned keep-alive timeout left alone,
 * and what release keeps. Real libuv handles on a loop that never runs a
 * connection: no network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/upstream/ig_pool.h"

static uv_loop_t loop;
static ig_upstream_ctx ctx;
static ig_pool_config cfg;
static ig_freelist blocks, heads, tables;
static ig_thread_stats stats;
static ig_worker *w;

static int setup(void **state)
{
    const char *err;
    ig_registry_init(1);
    uv_loop_init(&loop);
    cfg = (ig_pool_config){.idle_timeout_ms = 60000,
                           .max_age_ms = 0,
                           .connect_timeout_ms = 1000,
                           .max_requests = 0,
                           .max_request_head = 65536,
                           .spread = 1};
    ig_freelist_init(&blocks, 256, 4);
    ig_freelist_init(&heads, 4096, 4);
    ig_freelist_init(&tables, 64, 4);
    memset(&stats, 0, sizeof(stats));
    ig_pool_ctx_init(&ctx, &loop, 0, &cfg, &blocks, &heads, &tables, &blocks, &stats);
    assert_int_equal(ig_worker_new("http://127.0.0.1:9", &w, &err), 0);
    return 0;
}

static int teardown(void **state)
{
    ig_pool_close_all(&ctx);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0); /* every handle was closed */
    ig_worker_unref(w);
    ig_freelist_clear(&blocks);
    ig_freelist_clear(&heads);
    ig_freelist_clear(&tables);
    return 0;
}

/* A connection back in the pool after one request: answered in ttfb
 * microseconds, by the process its answer named (NULL: none named). */
static ig_upconn *pooled_as(uint32_t ttfb, const char *name)
{
    ig_upconn *up = calloc(1, sizeof(*up));
    assert_non_null(up);
    up->ctx = &ctx;
    up->w = w;
    ig_worker_ref(w);
    up->net.tcp.data = up;
    up->timer.data = up;
    uv_tcp_init(&loop, &up->net.tcp);
    uv_timer_init(&loop, &up->timer);
    up->handles_open = 2;
    up->state = IG_U_BUSY;
    up->proc = -1;
    ig_list_init(&up->link);
    ig_list_init(&up->tlink);
    up->created_ms = uv_now(&loop);
    up->ttfb_ewma_us = ttfb;
    up->nreq = 1;
    if (name)
        ig_pool_learn_process(up, name, strlen(name));
    int waiting = w->pools[0].nwaiting;
    ig_pool_release(up, 1); /* its request is over: it no longer loads its process */
    /* pooled, or handed to a waiting request */
    assert_true(up->state == IG_U_IDLE || (up->state == IG_U_BUSY && w->pools[0].nwaiting < waiting));
    return up;
}

static ig_upconn *pooled(uint32_t ttfb)
{
    return pooled_as(ttfb, NULL);
}

static ig_upconn *pooled_on(const char *name)
{
    return pooled_as(0, name);
}

static void the_fastest_process_wins(void **state)
{
    atomic_store(&w->best_ttfb_us, 1000);
    ig_upconn *slow = pooled(9000), *fast = pooled(1100), *mid = pooled(4000);
    (void)slow;
    (void)mid;
    assert_int_equal(w->pools[0].nidle, 3);
    ig_upconn *got = ig_pool_take(&ctx, w);
    assert_ptr_equal(got, fast);
    assert_int_equal(got->state, IG_U_BUSY);
    assert_int_equal(got->reused, 1);
    assert_int_equal(w->pools[0].nidle, 2);
    ig_pool_release(got, 1);
}

static void the_scan_stops_at_good_enough(void **state)
{
    atomic_store(&w->best_ttfb_us, 1000);
    ig_upconn *faster = pooled(1000), *good = pooled(1200); /* within a quarter of the best */
    (void)faster;
    assert_ptr_equal(ig_pool_take(&ctx, w), good); /* most recent first: the scan ends there */
    ig_pool_release(good, 1);
}

static void without_spread_the_most_recent_goes(void **state)
{
    cfg.spread = 0;
    atomic_store(&w->best_ttfb_us, 1000);
    ig_upconn *fast = pooled(1000), *slow = pooled(50000);
    (void)fast;
    assert_ptr_equal(ig_pool_take(&ctx, w), slow);
    ig_pool_release(slow, 1);
}

static void a_loaded_process_is_left_at_most_once_per_30_requests(void **state)
{
    atomic_store(&w->best_ttfb_us, 1000);
    ig_upconn *slow = pooled(10000); /* > best + a quarter + 1 ms: its process queues */
    int fresh = 0;
    for (int i = 0; i < 90; i++) {
        ig_upconn *got = ig_pool_take(&ctx, w);
        if (!got) {
            fresh++; /* the caller connects afresh, re-racing accept() */
            continue;
        }
        assert_ptr_equal(got, slow);
        ig_pool_release(got, 1);
    }
    assert_int_equal(fresh, 3);
    assert_int_equal(w->pools[0].nidle, 1); /* the slow one stays pooled for when its process calms down */
}

static void old_connections_and_ones_the_worker_is_about_to_close_are_not_taken(void **state)
{
    cfg.max_age_ms = 10000;
    ig_upconn *old = pooled(1000);
    old->created_ms = uv_now(&loop) - 20000;
    assert_null(ig_pool_take(&ctx, w)); /* closed, not handed out */
    assert_int_equal(w->pools[0].nidle, 0);
    uv_run(&loop, UV_RUN_NOWAIT);

    /* the worker closes idle connections after 4 s: leave those idle 3 s or more */
    atomic_store(&w->idle_close_ms, 4000);
    ig_upconn *stale = pooled(1000);
    stale->idle_since_ms = uv_now(&loop) - 3500;
    ig_upconn *recent = pooled(1000);
    recent->idle_since_ms = uv_now(&loop) - 100;
    assert_ptr_equal(ig_pool_take(&ctx, w), recent);
    assert_int_equal(stale->state, IG_U_CLOSING); /* seen by the scan: retired */
    ig_pool_release(recent, 1);
    recent->idle_since_ms = uv_now(&loop) - 3900;
    assert_null(ig_pool_take(&ctx, w)); /* both near the close */
    assert_int_equal(w->pools[0].nidle, 0);
}

static void release_keeps_only_what_may_be_reused(void **state)
{
    cfg.max_requests = 2;
    ig_upconn *up = pooled(1000);
    up = ig_pool_take(&ctx, w);
    up->nreq = 2;
    ig_pool_release(up, 1); /* its last request */
    assert_int_equal(up->state, IG_U_CLOSING);
    cfg.max_requests = 0;

    up = pooled(1000);
    up = ig_pool_take(&ctx, w);
    ig_pool_release(up, 0);
    assert_int_equal(up->state, IG_U_CLOSING);

    up = pooled(1000);
    up = ig_pool_take(&ctx, w);
    up->writing = 1; /* answered before the request was all out */
    ig_pool_release(up, 1);
    assert_int_equal(up->state, IG_U_CLOSING);

    up = pooled(1000);
    up = ig_pool_take(&ctx, w);
    ctx.draining = 1;
    ig_pool_release(up, 1);
    assert_int_equal(up->state, IG_U_CLOSING);
    ctx.draining = 0;
    assert_int_equal(w->pools[0].nidle, 0);
}

static void the_worker_best_follows_the_minimum(void **state)
{
    ig_upconn *up = pooled(0);
    up = ig_pool_take(&ctx, w);
    atomic_store(&w->best_ttfb_us, 0);
    ig_pool_note_ttfb(up, 4000);
    assert_int_equal(up->ttfb_ewma_us, 4000);
    assert_int_equal(atomic_load(&w->best_ttfb_us), 4000);
    ig_pool_note_ttfb(up, 2000);
    assert_int_equal(up->ttfb_ewma_us, 3500);              /* (3 x 4000 + 2000) / 4 */
    assert_int_equal(atomic_load(&w->best_ttfb_us), 2000); /* improvements at once */
    ig_pool_note_ttfb(up, 8000);
    assert_int_equal(atomic_load(&w->best_ttfb_us),
                     2032);                 /* forgets 1/64 per sample: the base service time */
    assert_int_equal(up->queued_streak, 1); /* 8 ms against a base of 2: it queued */
    ig_pool_note_ttfb(up, 2400);
    assert_int_equal(up->queued_streak, 0); /* within a quarter of the base + 1 ms: it did not */
    ig_pool_release(up, 1);
}

static void a_connection_that_keeps_queueing_is_closed(void **state)
{
    atomic_store(&w->best_ttfb_us, 50000);
    ig_upconn *queued = pooled(100000), *ok = pooled(100000);
    queued->queued_streak = 3; /* three answers in a row a service time late */
    ok->queued_streak = 2;
    w->pools[0].retire_credit = 30;
    ig_upconn *got = ig_pool_take(&ctx, w); /* a full credit: one closed, not handed out */
    assert_int_equal(queued->state, IG_U_CLOSING);
    assert_int_equal(w->pools[0].retire_credit, 1); /* spent, then this request's own */
    assert_ptr_equal(got, ok); /* no credit left to leave this one for a fresh connection */
    ig_pool_release(got, 1);
}

static void an_idle_close_teaches_the_keep_alive_timeout(void **state)
{
    ig_upconn *up = pooled(1000);
    up->idle_since_ms = uv_now(&loop) - 5000;
    ig_pool_note_idle_close(up);
    assert_int_equal(atomic_load(&w->idle_close_ms), 5000);
    up->idle_since_ms = uv_now(&loop) - 50; /* a restart, not a timeout */
    ig_pool_note_idle_close(up);
    assert_int_equal(atomic_load(&w->idle_close_ms), 5000);
}

static void the_sweep_closes_idle_and_removed(void **state)
{
    cfg.idle_timeout_ms = 1000;
    ig_upconn *idle = pooled(1000), *fresh = pooled(1000);
    idle->idle_since_ms = uv_now(&loop) - 2000;
    ig_pool_sweep(&ctx);
    assert_int_equal(idle->state, IG_U_CLOSING);
    assert_int_equal(fresh->state, IG_U_IDLE);
    atomic_store(&w->removed, 1);
    ig_pool_sweep(&ctx);
    assert_int_equal(fresh->state, IG_U_CLOSING);
    atomic_store(&w->removed, 0);
}

static void named_processes_get_exact_least_load(void **state)
{
    cfg.process_header = "x-pid";
    w->pools[0].last_probe_ms = uv_now(&loop); /* no probe due by time: the requests decide */
    ig_upconn *a = pooled_on("101"), *b = pooled_on("102"), *c = pooled_on("103");
    assert_int_equal(atomic_load(&w->n_procs), 3);
    assert_int_equal(a->proc, 0);
    assert_int_equal(atomic_load(&w->procs[0].inflight), 0); /* counted while answering, not after */
    assert_int_equal(atomic_load(&w->procs[2].conns), 1);
    atomic_store(&w->procs[0].inflight, 3);
    atomic_store(&w->procs[1].inflight, 1);
    atomic_store(&w->procs[2].inflight, 2);
    ig_upconn *got = ig_pool_take(&ctx, w);
    assert_ptr_equal(got, b); /* the fewest in flight */
    ig_pool_release(got, 1);
    /* the same name on another connection is the same process */
    ig_upconn *b2 = pooled_on("102");
    assert_int_equal(b2->proc, 1);
    assert_int_equal(atomic_load(&w->n_procs), 3);
    assert_int_equal(atomic_load(&w->procs[1].conns), 2);
    /* a process nobody reaches and nobody heard from lately (gone?) does not count */
    atomic_store(&w->procs[2].inflight, 0);
    ig_pool_close(c); /* this thread's only connection to 103 */
    assert_int_equal(atomic_load(&w->procs[2].conns), 0);
    atomic_store(&w->procs[2].seen_ms, uv_now(&loop) - 31000);
    w->pools[0].retire_credit = 29;
    got = ig_pool_take(&ctx, w);
    assert_non_null(got);
    assert_int_equal(got->proc, 1);
    assert_int_equal(w->pools[0].probes_out, 0); /* nothing lighter: no probe */
    ig_pool_release(got, 1);
    /* a lighter process no idle connection here reaches (another thread's
     * connection does, or it answered lately): the lightest idle one goes,
     * and once the credit reaches 30 a probe connection looks for that one */
    atomic_store(&w->procs[2].conns, 1);
    w->pools[0].retire_credit = 28;
    got = ig_pool_take(&ctx, w);
    assert_int_equal(got->proc, 1);
    assert_int_equal(w->pools[0].probes_out, 0);
    ig_pool_release(got, 1);
    got = ig_pool_take(&ctx, w);
    assert_non_null(got); /* the request does not wait for it */
    assert_int_equal(got->proc, 1);
    assert_int_equal(w->pools[0].probes_out, 1);
    assert_false(ig_list_empty(&ctx.probes));
    /* a connection whose process is not known yet is tried first: it teaches one */
    ig_upconn *fresh = pooled_on(NULL);
    ig_upconn *next = ig_pool_take(&ctx, w);
    assert_ptr_equal(next, fresh);
    /* a request on a known process counts there until its exchange is over */
    int before = atomic_load(&w->procs[1].inflight);
    got->proc_counted = 1;
    atomic_fetch_add(&w->procs[1].inflight, 1);
    ig_pool_release(got, 1);
    assert_int_equal(atomic_load(&w->procs[1].inflight), before);
    ig_pool_release(next, 1);
    atomic_store(&w->procs[2].conns, 0);
    cfg.process_header = NULL;
}

static void busy_processes_are_explored_by_time(void **state)
{
    cfg.process_header = "x-pid";
    ig_upconn *a = pooled_on("301");
    (void)a;
    atomic_store(&w->procs[0].inflight, 2); /* every known process busy: maybe one we have not met */
    w->pools[0].last_probe_ms = uv_now(&loop) - 100;
    ig_upconn *got = ig_pool_take(&ctx, w);
    assert_int_equal(w->pools[0].probes_out, 0); /* too soon */
    ig_pool_release(got, 1);
    w->pools[0].last_probe_ms = uv_now(&loop) - 300;
    got = ig_pool_take(&ctx, w);
    assert_non_null(got); /* the request goes on now */
    assert_int_equal(w->pools[0].probes_out, 1);
    ig_pool_release(got, 1);
    atomic_store(&w->procs[0].inflight, 0);
    cfg.process_header = NULL;
}

static ig_upconn *handed;
static int nready;
static void ready(ig_conn_wait *cw, ig_upconn *up)
{
    (void)cw;
    handed = up;
    nready++;
}

static void a_request_waits_for_a_connection_to_a_light_process(void **state)
{
    cfg.process_header = "x-pid";
    ig_conn_wait cw = {.ready = ready};
    handed = NULL;
    nready = 0;
    assert_int_equal(ig_pool_wait(&ctx, w, &cw),
                     1); /* no idle connection: a probe goes out, the request waits */
    assert_int_equal(w->pools[0].probes_out, 1);
    assert_int_equal(w->pools[0].nwaiting, 1);
    ig_upconn *a = pooled_on("201"); /* the probe's answer: the only process known, unloaded */
    assert_int_equal(nready, 1);
    assert_ptr_equal(handed, a);
    assert_int_equal(a->state, IG_U_BUSY);
    assert_int_equal(w->pools[0].nwaiting, 0);
    /* a connection to a loaded process while a lighter one is known: keep waiting, a while */
    atomic_store(&w->procs[0].inflight, 2);
    ig_upconn *b = pooled_on("202");
    atomic_fetch_add(&w->procs[1].inflight, 3);
    ig_pool_release(a, 1); /* 201 (2 in flight) and 202 (3) idle now */
    atomic_store(&w->procs[0].inflight, 2);
    ig_upconn *busy = ig_pool_take(&ctx, w);
    assert_ptr_equal(busy, a);
    atomic_store(&w->procs[0].inflight, 1); /* fewer than 202, and no idle connection reaches it */
    assert_int_equal(ig_pool_wait(&ctx, w, &cw), 1);
    assert_int_equal(nready, 1);
    ig_pool_release(b, 1); /* 202 is no fit: 201 has fewer */
    assert_int_equal(nready, 1);
    cw.since_ms -= 1000; /* waited long enough: any idle one will do */
    ig_pool_release(busy, 1);
    assert_int_equal(nready, 2);
    assert_ptr_equal(handed, busy); /* 201 again, the lighter */
    /* leaving while waiting */
    assert_int_equal(ig_pool_wait(&ctx, w, &cw), 1);
    ig_pool_unwait(&ctx, &cw);
    assert_int_equal(w->pools[0].nwaiting, 0);
    assert_null(cw.w);
    ig_pool_release(handed, 1);
    assert_int_equal(nready, 2);
    atomic_store(&w->procs[0].inflight, 0);
    atomic_store(&w->procs[1].inflight, 0);
    cfg.process_header = NULL;
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(the_fastest_process_wins),
        T(the_scan_stops_at_good_enough),
        T(without_spread_the_most_recent_goes),
        T(a_loaded_process_is_left_at_most_once_per_30_requests),
        T(old_connections_and_ones_the_worker_is_about_to_close_are_not_taken),
        T(release_keeps_only_what_may_be_reused),
        T(the_worker_best_follows_the_minimum),
        T(a_connection_that_keeps_queueing_is_closed),
        T(an_idle_close_teaches_the_keep_alive_timeout),
        T(the_sweep_closes_idle_and_removed),
        T(named_processes_get_exact_least_load),
        T(a_request_waits_for_a_connection_to_a_light_process),
        T(busy_processes_are_explored_by_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
