/* The manual policy's routing-key table: insert and find, the first
 * insert wins a race, two candidates, idle eviction, rebuilds through
 * tombstones, a full table, and inserts from several threads at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/balance/ig_sticky.h"
#include "../../src/core/ig_epoch.h"

static int setup(void **state)
{
    (void)state;
    ig_epoch_init(0);
    return ig_sticky_init(1000);
}

static int teardown(void **state)
{
    (void)state;
    ig_epoch_drain();
    ig_sticky_shutdown();
    return 0;
}

static void a_key_keeps_the_worker_it_was_first_given(void **state)
{
    (void)state;
    assert_null(ig_sticky_get("k1", 2, 0));
    ig_sticky_entry *e = ig_sticky_insert("k1", 2, 7, 0);
    assert_non_null(e);
    assert_int_equal(atomic_load(&e->cand[0]), 7);
    assert_ptr_equal(ig_sticky_get("k1", 2, 5), e);
    /* a second insert (another thread that also missed) gets the first's entry */
    assert_ptr_equal(ig_sticky_insert("k1", 2, 9, 0), e);
    assert_int_equal(atomic_load(&e->cand[0]), 7);
    assert_int_equal(ig_sticky_count(), 1);
    assert_null(ig_sticky_get("k2", 2, 0));
    assert_null(ig_sticky_get("k", 1, 0));
}

static void a_lost_worker_is_replaced_and_two_are_kept(void **state)
{
    (void)state;
    ig_sticky_entry *e = ig_sticky_insert("key", 3, 1, 0);
    ig_sticky_reassign(e, 2);
    assert_int_equal(atomic_load(&e->cand[0]), 1); /* the first stays preferred */
    assert_int_equal(atomic_load(&e->cand[1]), 2);
    ig_sticky_reassign(e, 3);
    assert_int_equal(atomic_load(&e->cand[0]), 2);
    assert_int_equal(atomic_load(&e->cand[1]), 3);
}

static void idle_keys_are_forgotten_and_tombstones_rebuilt_away(void **state)
{
    (void)state;
    char k[32];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 500; i++) {
            int n = snprintf(k, sizeof(k), "r%d-%d", round, i);
            assert_non_null(ig_sticky_insert(k, (size_t)n, (uint64_t)i + 1, (uint64_t)round * 10000));
        }
        /* the previous round's keys are idle now */
        int gone = ig_sticky_sweep((uint64_t)round * 10000 + 3000, 4000);
        assert_int_equal(gone, round ? 500 : 0);
        ig_epoch_reclaim();
        assert_int_equal(ig_sticky_count(), 500);
    }
    /* this round's keys survived every rebuild, with their workers */
    for (int i = 0; i < 500; i++) {
        int n = snprintf(k, sizeof(k), "r19-%d", i);
        ig_sticky_entry *e = ig_sticky_get(k, (size_t)n, 0);
        assert_non_null(e);
        assert_int_equal(atomic_load(&e->cand[0]), (uint64_t)i + 1);
    }
    assert_int_equal(ig_sticky_full_total(), 0);
}

static void a_full_table_routes_new_keys_unremembered(void **state)
{
    (void)state;
    char k[32];
    int stored = 0;
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(k, sizeof(k), "full-%d", i);
        stored += ig_sticky_insert(k, (size_t)n, 1, 0) != NULL;
    }
    assert_true(stored >= 1000 && stored < 5000);
    assert_int_equal(ig_sticky_full_total(), (uint64_t)(5000 - stored));
    assert_int_equal(ig_sticky_count(), stored);
    /* a known key is still found */
    assert_non_null(ig_sticky_get("full-0", 6, 0));
}

#define THREADS 4
#define KEYS 800
static uint64_t seen[THREADS][KEYS];

static void *inserter(void *arg)
{
    int t = (int)(intptr_t)arg;
    char k[32];
    for (int i = 0; i < KEYS; i++) {
        int n = snprintf(k, sizeof(k), "shared-%d", i);
        ig_sticky_entry *e = ig_sticky_get(k, (size_t)n, 0);
        if (!e)
            e = ig_sticky_insert(k, (size_t)n, (uint64_t)t + 1, 0);
        seen[t][i] = e ? atomic_load(&e->cand[0]) : 0;
    }
    return NULL;
}

static void threads_that_race_on_new_keys_agree(void **state)
{
    (void)state;
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, inserter, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    for (int i = 0; i < KEYS; i++) {
        assert_int_not_equal(seen[0][i], 0);
        for (int t = 1; t < THREADS; t++)
            assert_int_equal(seen[t][i], seen[0][i]);
    }
    assert_int_equal(ig_sticky_count(), KEYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_key_keeps_the_worker_it_was_first_given, setup, teardown),
        cmocka_unit_test_setup_teardown(a_lost_worker_is_replaced_and_two_are_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(idle_keys_are_forgotten_and_tombstones_rebuilt_away, setup, teardown),
        cmocka_unit_test_setup_teardown(a_full_table_routes_new_keys_unremembered, setup, teardown),
        cmocka_unit_test_setup_teardown(threads_that_race_on_new_keys_agree, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
