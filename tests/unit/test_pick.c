/* The pick: one result per outcome (no workers, unknown model, unhealthy,
 * paused, behind others, full, cooling down, exhausted, a pinned session's
 * worker busy), the claimed slot on success, retries avoiding the workers
 * tried; and the retry budget's verdicts. Snapshots are built directly;
 * nothing runs on a network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/health/ig_breaker.h"
#include "../../src/proxy/ig_pick.h"
#include "../../src/proxy/ig_retry.h"

static uv_loop_t loop;
static ig_admq q;
static ig_wakeup wake;
static ig_thread_stats stats;
static ig_proxy_ctx px;
static ig_request r;
static const ig_proxy_config cfg = {.policy = IG_POLICY_ROUND_ROBIN, .retry_max_retries = 2};

static ig_worker *mk(const char *url, const char *model, int cap)
{
    ig_worker *w;
    const char *err;
    assert_int_equal(ig_worker_new(url, &w, &err), 0);
    if (model) {
        char **m = malloc(sizeof(char *));
        m[0] = strdup(model);
        ig_worker_set_models(w, m, 1);
    }
    atomic_store(&w->max_inflight, cap);
    return w;
}

static void ask_for(const char *model)
{
    memset(&r.fields, 0, sizeof(r.fields));
    if (model) {
        r.fields.model = model;
        r.fields.model_len = strlen(model);
        r.fields.has_model = 1;
    }
}

static int setup(void **state)
{
    ig_registry_init(1);
    ig_admission_reset();
    ig_admission_config ac = {.max_concurrent = 0, .queue_size = UINT32_MAX};
    ig_admission_configure(&ac);
    ig_breaker_config bc = {1, 3, 1, 30000, 0, {0}};
    ig_breaker_configure(&bc);
    uv_loop_init(&loop);
    memset(&stats, 0, sizeof(stats));
    assert_int_equal(ig_admq_init(&q, &loop, &wake, &stats.queue_wait), 0);
    px = (ig_proxy_ctx){.loop = &loop, .admq = &q, .stats = &stats};
    ig_policy_state_init(&px.pol, 1);
    memset(&r, 0, sizeof(r));
    r.px = &px;
    r.group = -1; /* routed by model */
    ask_for("m");
    return 0;
}

static int teardown(void **state)
{
    ig_admq_close(&q);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    ig_admission_reset();
    return 0;
}

static ig_pick_result pick(const ig_snapshot *s, ig_worker **w)
{
    int probe;
    return ig_pick(&r, &cfg, s, NULL, w, &probe);
}

static void no_workers_unknown_model_unhealthy(void **state)
{
    ig_worker *w;
    ig_snapshot *none = ig_snapshot_build(NULL, 0, 1);
    assert_int_equal(pick(none, &w), IG_PICK_NO_WORKERS);
    assert_null(w);
    ig_snapshot_free(none);

    ig_worker *a = mk("http://127.0.0.1:1", "m", 0);
    ig_worker *ws[] = {a};
    ig_snapshot *s = ig_snapshot_build(ws, 1, 2);
    ask_for("other");
    assert_int_equal(pick(s, &w), IG_PICK_UNKNOWN_MODEL);
    ig_snapshot_free(s);

    atomic_store(&a->health, IG_HEALTH_DOWN);
    s = ig_snapshot_build(ws, 1, 3);
    ask_for("m");
    assert_int_equal(pick(s, &w), IG_PICK_UNHEALTHY);
    ig_snapshot_free(s);
    ig_worker_unref(a);
}

static void ok_claims_a_slot_and_full_waits(void **state)
{
    ig_worker *a = mk("http://127.0.0.1:1", "m", 1), *b = mk("http://127.0.0.1:2", "m", 1), *w1, *w2, *w3;
    ig_worker *ws[] = {a, b};
    ig_snapshot *s = ig_snapshot_build(ws, 2, 1);
    assert_int_equal(pick(s, &w1), IG_PICK_OK);
    assert_int_equal(ig_worker_inflight(w1), 1);
    assert_int_equal(pick(s, &w2), IG_PICK_OK);
    assert_ptr_not_equal(w1, w2); /* the first one is at its cap */
    assert_int_equal(pick(s, &w3), IG_PICK_FULL);
    assert_null(w3);
    ig_admission_release(&q, w1);
    assert_int_equal(pick(s, &w3), IG_PICK_OK);
    assert_ptr_equal(w3, w1);
    ig_admission_release(&q, w2);
    ig_admission_release(&q, w3);
    ig_snapshot_free(s);
    ig_worker_unref(a);
    ig_worker_unref(b);
}

static void paused_and_behind_others_wait(void **state)
{
    ig_worker *a = mk("http://127.0.0.1:1", "m", 0), *w;
    ig_worker *ws[] = {a};
    ig_snapshot *s = ig_snapshot_build(ws, 1, 1);
    s->paused_all = 1;
    assert_int_equal(pick(s, &w), IG_PICK_PAUSED);
    s->paused_all = 0;
    ig_waiter other = {0};
    assert_int_equal(ig_admq_push(&q, &other, 0), 0);
    assert_int_equal(pick(s, &w), IG_PICK_BEHIND); /* first in, first out */
    r.wait.queued = 1;                             /* it is the one waiting: its turn */
    assert_int_equal(pick(s, &w), IG_PICK_OK);
    r.wait.queued = 0;
    ig_admission_release(&q, w);
    ig_admq_leave(&q, &other);
    ig_snapshot_free(s);
    ig_worker_unref(a);
}

static void an_open_breaker_cools_and_a_retry_runs_out(void **state)
{
    ig_worker *a = mk("http://127.0.0.1:1", "m", 0), *b = mk("http://127.0.0.1:2", "m", 0), *w;
    ig_worker *ws[] = {a, b};
    ig_snapshot *s = ig_snapshot_build(ws, 2, 1);
    /* both open since the snapshot was built */
    atomic_store(&a->breaker, IG_BREAKER_OPEN);
    atomic_store(&b->breaker, IG_BREAKER_OPEN);
    assert_int_equal(pick(s, &w), IG_PICK_COOLING);
    assert_int_equal(ig_worker_inflight(a) + ig_worker_inflight(b), 0); /* no slot kept */
    /* half-open: one probe at a time */
    atomic_store(&a->breaker, IG_BREAKER_HALF_OPEN);
    int probe;
    assert_int_equal(ig_pick(&r, &cfg, s, NULL, &w, &probe), IG_PICK_OK);
    assert_ptr_equal(w, a);
    assert_int_equal(probe, 1);
    assert_int_equal(pick(s, &w), IG_PICK_COOLING); /* the probe slot is taken */
    ig_breaker_probe_done(a);
    ig_admission_release(&q, a);
    /* a retry never goes back to a worker it tried */
    atomic_store(&a->breaker, IG_BREAKER_CLOSED);
    atomic_store(&b->breaker, IG_BREAKER_CLOSED);
    r.ntried = 1;
    r.tried[0] = a;
    assert_int_equal(pick(s, &w), IG_PICK_OK);
    assert_ptr_equal(w, b);
    ig_admission_release(&q, b);
    assert_ptr_equal(ig_pick_other(&r, &cfg, s, &probe), b);
    ig_admission_release(&q, b);
    r.ntried = 2;
    r.tried[1] = b;
    assert_int_equal(pick(s, &w), IG_PICK_EXHAUSTED);
    assert_null(ig_pick_other(&r, &cfg, s, &probe));
    ig_snapshot_free(s);
    ig_worker_unref(a);
    ig_worker_unref(b);
}

static void a_pinned_session_waits_for_its_worker(void **state)
{
    ig_worker *a = mk("http://127.0.0.1:1", "m", 0), *b = mk("http://127.0.0.1:2", "m", 0), *w;
    ig_worker *ws[] = {a, b};
    ig_snapshot *s = ig_snapshot_build(ws, 2, 1);
    ig_session sess = {.w = b};
    int probe;
    for (int i = 0; i < 4; i++) { /* round robin would alternate: the session does not */
        assert_int_equal(ig_pick(&r, &cfg, s, &sess, &w, &probe), IG_PICK_OK);
        assert_ptr_equal(w, b);
        ig_admission_release(&q, w);
    }
    atomic_store(&b->paused, 1);
    assert_int_equal(ig_pick(&r, &cfg, s, &sess, &w, &probe), IG_PICK_SESSION_WAIT);
    atomic_store(&b->paused, 0);
    atomic_store(&b->health, IG_HEALTH_DOWN);
    assert_int_equal(ig_pick(&r, &cfg, s, &sess, &w, &probe), IG_PICK_SESSION_WAIT);
    ig_snapshot_free(s);
    ig_worker_unref(a);
    ig_worker_unref(b);
}

static void the_retry_budget(void **state)
{
    ig_retry_budget b = {0};
    /* the request's own limit first */
    assert_int_equal(ig_retry_allowed(&b, 0.2, 2, 8, 3, 0, 0), IG_RETRY_MAX_TRIES);
    assert_int_equal(ig_retry_allowed(&b, 0.2, 20, 8, 8, 0, 0), IG_RETRY_MAX_TRIES);
    /* at least two retries may always run */
    for (int i = 0; i < 5; i++)
        ig_retry_enter(&b);
    assert_int_equal(ig_retry_allowed(&b, 0.2, 2, 8, 1, 0, 0), IG_RETRY_OK);
    ig_retry_mark(&b);
    ig_retry_mark(&b);
    assert_int_equal(ig_retry_allowed(&b, 0.2, 2, 8, 1, 0, 0), IG_RETRY_BUDGET);
    /* counted already, or refused (no load on anyone): no new budget needed */
    assert_int_equal(ig_retry_allowed(&b, 0.2, 2, 8, 1, 1, 0), IG_RETRY_OK);
    assert_int_equal(ig_retry_allowed(&b, 0.2, 2, 8, 1, 0, 1), IG_RETRY_OK);
    /* a share of what is in flight: 20 in flight, 0.2 -> 4 */
    for (int i = 0; i < 15; i++)
        ig_retry_enter(&b);
    ig_retry_mark(&b);
    assert_int_equal(ig_retry_allowed(&b, 0.2, 2, 8, 1, 0, 0), IG_RETRY_OK); /* 3 < 4 */
    ig_retry_mark(&b);
    assert_int_equal(ig_retry_allowed(&b, 0.2, 2, 8, 1, 0, 0), IG_RETRY_BUDGET);
    ig_retry_leave(&b, 1);
    assert_int_equal(ig_retry_allowed(&b, 0.2, 2, 8, 1, 0, 0), IG_RETRY_OK);
    assert_int_equal(atomic_load(&b.inflight), 19);
    assert_int_equal(atomic_load(&b.retrying), 3);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(no_workers_unknown_model_unhealthy),    T(ok_claims_a_slot_and_full_waits),
        T(paused_and_behind_others_wait),         T(an_open_breaker_cools_and_a_retry_runs_out),
        T(a_pinned_session_waits_for_its_worker), T(the_retry_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
