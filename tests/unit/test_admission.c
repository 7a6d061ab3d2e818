/* Admission: per-worker caps, caps learned from overload answers and their
 * growth back, the gateway-wide cap, and the per-thread queue of waiters
 * (order, front insertion, size limit, leaving, the wait histogram). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/admission/ig_admission.h"

static ig_worker *worker(int cap)
{
    ig_worker *w;
    const char *err;
    assert_int_equal(ig_worker_new("http://127.0.0.1:9", &w, &err), 0);
    atomic_store(&w->max_inflight, cap);
    return w;
}

static ig_admq q;
static ig_hist wait_hist;
static ig_wakeup wake;
static uv_loop_t loop;

static int setup(void **state)
{
    ig_registry_init(1);
    ig_admission_reset();
    ig_admission_config cfg = {.max_concurrent = 0, .queue_size = UINT32_MAX};
    ig_admission_configure(&cfg);
    uv_loop_init(&loop);
    memset(&wait_hist, 0, sizeof(wait_hist));
    assert_int_equal(ig_admq_init(&q, &loop, &wake, &wait_hist), 0);
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

static void a_cap_holds_and_a_release_frees_a_slot(void **state)
{
    ig_worker *w = worker(2);
    assert_int_equal(ig_admission_claim(w, 0), 1);
    assert_int_equal(ig_admission_claim(w, 0), 1);
    assert_int_equal(ig_admission_has_room(w, 0), 0);
    assert_int_equal(ig_admission_claim(w, 0), 0);
    assert_int_equal(ig_worker_inflight(w), 2);
    ig_admission_release(&q, w);
    assert_int_equal(ig_admission_has_room(w, 0), 1);
    assert_int_equal(ig_admission_claim(w, 0), 1);
    ig_admission_release(&q, w);
    ig_admission_release(&q, w);
    assert_int_equal(ig_worker_inflight(w), 0);
    ig_worker_unref(w);
}

static void no_cap_means_unlimited(void **state)
{
    ig_worker *w = worker(0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(ig_admission_claim(w, 0), 1);
    assert_int_equal(ig_admission_effective_cap(w, 0), 0);
    for (int i = 0; i < 1000; i++)
        ig_admission_release(&q, w);
    ig_worker_unref(w);
}

static void an_overload_answer_teaches_a_cap_that_grows_back(void **state)
{
    ig_worker *w = worker(8);
    /* "full" with 5 in flight, this one included: 4 fit */
    ig_admission_overloaded(w, 5, 10000);
    assert_int_equal(ig_admission_effective_cap(w, 10000), 4);
    assert_int_equal(ig_admission_effective_cap(w, 10999), 4);
    assert_int_equal(ig_admission_effective_cap(w, 11000), 5); /* one slot a second */
    assert_int_equal(ig_admission_effective_cap(w, 12500), 6);
    assert_int_equal(ig_admission_effective_cap(w, 100000), 8); /* never above the configured cap */
    /* an overload answer never raises the cap it learned */
    ig_admission_overloaded(w, 3, 20000);
    assert_int_equal(ig_admission_effective_cap(w, 20000), 2);
    ig_admission_overloaded(w, 30, 20000);
    assert_int_equal(ig_admission_effective_cap(w, 20000), 2);
    /* and the claim obeys it */
    assert_int_equal(ig_admission_claim(w, 20000), 1);
    assert_int_equal(ig_admission_claim(w, 20000), 1);
    assert_int_equal(ig_admission_claim(w, 20000), 0);
    ig_admission_release(&q, w);
    ig_admission_release(&q, w);
    /* a lone request that was refused: at least one slot stays */
    ig_admission_overloaded(w, 1, 30000);
    assert_int_equal(ig_admission_effective_cap(w, 30000), 1);
    ig_worker_unref(w);
}

static void learned_caps_apply_to_uncapped_workers_too(void **state)
{
    ig_worker *w = worker(0);
    ig_admission_overloaded(w, 11, 0);
    assert_int_equal(ig_admission_effective_cap(w, 0), 10);
    assert_int_equal(ig_admission_effective_cap(w, 5000), 15);
    ig_worker_unref(w);
}

static void the_gateway_cap_spans_workers(void **state)
{
    ig_admission_config cfg = {.max_concurrent = 1, .queue_size = UINT32_MAX};
    ig_admission_configure(&cfg);
    ig_worker *a = worker(0), *b = worker(0);
    assert_int_equal(ig_admission_claim(a, 0), 1);
    assert_int_equal(ig_admission_claim(b, 0), 0);
    assert_int_equal(ig_worker_inflight(b), 0); /* a refused claim holds nothing */
    ig_admission_release(&q, a);
    assert_int_equal(ig_admission_claim(b, 0), 1);
    ig_admission_release(&q, b);
    ig_worker_unref(a);
    ig_worker_unref(b);
}

typedef struct item {
    ig_waiter w;
    int id;
} item;

static int order[8], norder;

static void record(ig_waiter *w)
{
    order[norder++] = ig_container_of(w, item, w)->id;
}

static void waiters_leave_in_order_and_the_front_jumps_the_line(void **state)
{
    item it[4];
    for (int i = 0; i < 4; i++) {
        memset(&it[i], 0, sizeof(it[i]));
        it[i].id = i;
        it[i].w.retry = record;
    }
    assert_int_equal(ig_admq_push(&q, &it[0].w, 0), 0);
    assert_int_equal(ig_admq_push(&q, &it[1].w, 0), 0);
    assert_int_equal(ig_admq_push(&q, &it[2].w, 1), 0); /* sent back by an overloaded worker */
    assert_int_equal(ig_admission_depth(), 3);
    assert_int_equal(ig_admission_waiting(), 1);
    assert_int_equal(atomic_load(&q.oldest_ns), it[2].w.since_ns);
    norder = 0;
    ig_admq_dispatch(&q); /* nobody got a slot: all keep their place */
    assert_int_equal(norder, 3);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 0);
    assert_int_equal(order[2], 1);
    ig_admq_leave(&q, &it[0].w);
    ig_admq_leave(&q, &it[0].w); /* leaving twice is harmless */
    ig_admq_leave(&q, &it[3].w); /* never queued */
    assert_int_equal(ig_admission_depth(), 2);
    norder = 0;
    ig_admq_dispatch(&q);
    assert_int_equal(norder, 2);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 1);
    ig_admq_leave(&q, &it[2].w);
    ig_admq_leave(&q, &it[1].w);
    assert_int_equal(ig_admission_waiting(), 0);
    assert_int_equal(atomic_load(&q.oldest_ns), UINT64_MAX);
    uint64_t observed = 0;
    for (int b = 0; b <= IG_HIST_N; b++)
        observed += atomic_load(&wait_hist.bucket[b]);
    assert_int_equal(observed, 3); /* one wait each, observed on leaving */
}

static void the_queue_size_is_gateway_wide(void **state)
{
    ig_admission_config cfg = {.max_concurrent = 0, .queue_size = 2};
    ig_admission_configure(&cfg);
    ig_waiter a = {0}, b = {0}, c = {0};
    a.retry = b.retry = c.retry = record;
    assert_int_equal(ig_admq_push(&q, &a, 0), 0);
    assert_int_equal(ig_admq_push(&q, &b, 0), 0);
    assert_int_equal(ig_admq_push(&q, &c, 0), -ENOSPC);
    assert_int_equal(c.queued, 0);
    ig_admq_leave(&q, &a);
    assert_int_equal(ig_admq_push(&q, &c, 0), 0);
    ig_admq_leave(&q, &b);
    ig_admq_leave(&q, &c);
    assert_int_equal(ig_admission_depth(), 0);
}

static void a_freed_slot_marks_the_queue_with_the_oldest_waiter(void **state)
{
    ig_worker *w = worker(1);
    ig_waiter a = {0};
    a.retry = record;
    assert_int_equal(ig_admission_claim(w, 0), 1);
    assert_int_equal(ig_admq_push(&q, &a, 0), 0);
    q.dirty = 0;
    ig_admission_release(&q, w); /* our own waiter is the oldest: dispatch after this callback */
    assert_int_equal(q.dirty, 1);
    ig_admq_leave(&q, &a);
    ig_worker_unref(w);
}

static void a_token_bucket_refills_and_takes_back_tokens(void **state)
{
    /* sgl-model-gateway's bucket: capacity = the gateway cap, one token per slot,
     * a released slot gives its token back, and time refills at the rate */
    ig_admission_config cfg = {
        .max_concurrent = 2, .queue_size = UINT32_MAX, .bucket = 1, .refill_per_s = 1000};
    ig_admission_configure(&cfg);
    uint64_t t = uv_hrtime() / 1000000 + 1000;
    ig_worker *w = worker(0);
    assert_int_equal(ig_admission_claim(w, t), 1);
    assert_int_equal(ig_admission_claim(w, t), 1);
    assert_int_equal(ig_admission_claim(w, t), 0);
    assert_int_equal(ig_admission_claim(w, t + 1), 1); /* 1 ms at 1000/s: one token */
    assert_int_equal(ig_admission_claim(w, t + 1), 0);
    ig_admission_release(&q, w);
    assert_int_equal(ig_admission_claim(w, t + 1), 1); /* given back */
    assert_int_equal(ig_admission_claim(w, t + 1), 0);
    /* a long idle time fills it to capacity, no further */
    for (int i = 0; i < 3; i++)
        ig_admission_release(&q, w);
    assert_int_equal(ig_admission_claim(w, t + 100000), 1);
    assert_int_equal(ig_admission_claim(w, t + 100000), 1);
    assert_int_equal(ig_admission_claim(w, t + 100000), 0);
    ig_admission_release(&q, w);
    ig_admission_release(&q, w);
    /* rate 0: a plain concurrency cap */
    cfg.refill_per_s = 0;
    ig_admission_configure(&cfg);
    assert_int_equal(ig_admission_claim(w, t), 1);
    assert_int_equal(ig_admission_claim(w, t), 1);
    assert_int_equal(ig_admission_claim(w, t + 100000), 0);
    ig_admission_release(&q, w);
    assert_int_equal(ig_admission_claim(w, t + 100000), 1);
    ig_admission_release(&q, w);
    ig_admission_release(&q, w);
    /* no gateway cap: no bucket (as sgl) */
    ig_admission_config off = {.max_concurrent = 0, .queue_size = UINT32_MAX, .bucket = 1, .refill_per_s = 0};
    ig_admission_configure(&off);
    for (int i = 0; i < 10; i++)
        assert_int_equal(ig_admission_claim(w, t), 1);
    for (int i = 0; i < 10; i++)
        ig_admission_release(&q, w);
    assert_int_equal(ig_worker_inflight(w), 0);
    ig_worker_unref(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_cap_holds_and_a_release_frees_a_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(no_cap_means_unlimited, setup, teardown),
        cmocka_unit_test_setup_teardown(an_overload_answer_teaches_a_cap_that_grows_back, setup, teardown),
        cmocka_unit_test_setup_teardown(learned_caps_apply_to_uncapped_workers_too, setup, teardown),
        cmocka_unit_test_setup_teardown(the_gateway_cap_spans_workers, setup, teardown),
        cmocka_unit_test_setup_teardown(waiters_leave_in_order_and_the_front_jumps_the_line, setup, teardown),
        cmocka_unit_test_setup_teardown(the_queue_size_is_gateway_wide, setup, teardown),
        cmocka_unit_test_setup_teardown(a_freed_slot_marks_the_queue_with_the_oldest_waiter, setup, teardown),
        cmocka_unit_test_setup_teardown(a_token_bucket_refills_and_takes_back_tokens, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
