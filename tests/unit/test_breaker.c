/* The circuit breaker: consecutive failures open it, a success resets the
 * count, the cool-down turns it half-open, one probe at a time, successes
 * close it and a failed probe opens it again; which statuses count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../../src/health/ig_breaker.h"

static ig_worker *w;

static int setup(void **state)
{
    const char *err;
    ig_registry_init(1);
    ig_breaker_config bc = {1, 3, 2, 1000, 0, {0}};
    bc.failure_statuses[502 / 64] |= 1ull << (502 % 64);
    ig_breaker_configure(&bc);
    assert_int_equal(ig_worker_new("http://127.0.0.1:9", &w, &err), 0);
    return 0;
}

static int teardown(void **state)
{
    ig_worker_unref(w);
    return 0;
}

static void consecutive_failures_open_it(void **state)
{
    int probe;
    assert_int_equal(ig_breaker_failure(w, 0), 0);
    assert_int_equal(ig_breaker_failure(w, 0), 0);
    ig_breaker_success(w); /* not consecutive any more */
    assert_int_equal(ig_breaker_failure(w, 0), 0);
    assert_int_equal(ig_breaker_failure(w, 0), 0);
    assert_int_equal(ig_breaker_admit(w, &probe), 1);
    assert_int_equal(ig_breaker_failure(w, 100), 1); /* the third in a row */
    assert_int_equal(atomic_load(&w->breaker), IG_BREAKER_OPEN);
    assert_int_equal(ig_breaker_admit(w, &probe), 0);
    assert_int_equal(ig_breaker_failure(w, 100), 0); /* already open: opened once */
}

static void the_cool_down_lets_one_probe_through(void **state)
{
    int probe;
    for (int i = 0; i < 3; i++)
        ig_breaker_failure(w, 0);
    assert_int_equal(ig_breaker_cooldown_over(w, 999), 0);
    assert_int_equal(ig_breaker_cooldown_over(w, 1000), 1);
    assert_int_equal(atomic_load(&w->breaker), IG_BREAKER_HALF_OPEN);
    assert_int_equal(ig_breaker_admit(w, &probe), 1);
    assert_int_equal(probe, 1);
    assert_int_equal(ig_breaker_admit(w, &probe), 0); /* one at a time */
    assert_int_equal(probe, 0);
    ig_breaker_probe_done(w);
    assert_int_equal(ig_breaker_success(w), 0); /* one of two */
    assert_int_equal(ig_breaker_admit(w, &probe), 1);
    ig_breaker_probe_done(w);
    assert_int_equal(ig_breaker_success(w), 1); /* closed */
    assert_int_equal(atomic_load(&w->breaker), IG_BREAKER_CLOSED);
    assert_int_equal(ig_breaker_admit(w, &probe), 1);
    assert_int_equal(probe, 0);
}

static void a_failed_probe_opens_it_again(void **state)
{
    for (int i = 0; i < 3; i++)
        ig_breaker_failure(w, 0);
    ig_breaker_cooldown_over(w, 2000);
    assert_int_equal(ig_breaker_failure(w, 2000), 1); /* half-open: one failure is enough */
    assert_int_equal(atomic_load(&w->breaker), IG_BREAKER_OPEN);
    assert_int_equal(ig_breaker_cooldown_over(w, 2999), 0); /* a new cool-down from now */
    assert_int_equal(ig_breaker_cooldown_over(w, 3000), 1);
}

static void statuses_that_count(void **state)
{
    assert_int_equal(ig_breaker_is_failure_status(502), 1);
    assert_int_equal(ig_breaker_is_failure_status(503), 0); /* busy, not broken */
    assert_int_equal(ig_breaker_is_failure_status(500), 0);
    assert_int_equal(ig_breaker_is_failure_status(200), 0);
    assert_int_equal(ig_breaker_is_failure_status(-1), 0);
    assert_int_equal(ig_breaker_is_failure_status(700), 0);
}

static void disabled_never_opens(void **state)
{
    ig_breaker_config bc = {0, 1, 1, 1000, 0, {0}};
    ig_breaker_configure(&bc);
    for (int i = 0; i < 10; i++)
        assert_int_equal(ig_breaker_failure(w, 0), 0);
    assert_int_equal(atomic_load(&w->breaker), IG_BREAKER_CLOSED);
}

/* --cb-window-duration-secs: failures further apart than the window do not add up */
static void failures_a_window_apart_do_not_add_up(void **state)
{
    ig_breaker_config bc = {1, 3, 2, 1000, 500, {0}};
    ig_breaker_configure(&bc);
    for (uint64_t t = 1000; t < 10000; t += 600) /* one failure every 600 ms: never three in a window */
        assert_int_equal(ig_breaker_failure(w, t), 0);
    assert_int_equal(atomic_load(&w->breaker), IG_BREAKER_CLOSED);
    assert_int_equal(ig_breaker_failure(w, 20000), 0);
    assert_int_equal(ig_breaker_failure(w, 20100), 0);
    assert_int_equal(ig_breaker_failure(w, 20200), 1); /* three within 500 ms */
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(consecutive_failures_open_it),  T(the_cool_down_lets_one_probe_through),
        T(a_failed_probe_opens_it_again), T(statuses_that_count),
        T(disabled_never_opens),          T(failures_a_window_apart_do_not_add_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
