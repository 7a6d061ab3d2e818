/* Policies: spread, least load, power of two choices, URL parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/balance/ig_policy.h"

static ig_worker ws[8];
static ig_worker *cand[8];

static int setup(void **state)
{
    for (int i = 0; i < 8; i++) {
        memset(&ws[i], 0, sizeof(ws[i]));
        cand[i] = &ws[i];
    }
    return 0;
}

static void round_robin_is_exact(void **state)
{
    ig_policy_state st;
    int counts[4] = {0};
    ig_policy_state_init(&st, 1);
    for (int i = 0; i < 400; i++)
        counts[ig_policy_pick(IG_POLICY_ROUND_ROBIN, &st, cand, 4)]++;
    for (int i = 0; i < 4; i++)
        assert_int_equal(counts[i], 100);
}

static void random_covers_all(void **state)
{
    ig_policy_state st;
    int counts[8] = {0};
    ig_policy_state_init(&st, 42);
    for (int i = 0; i < 8000; i++)
        counts[ig_policy_pick(IG_POLICY_RANDOM, &st, cand, 8)]++;
    for (int i = 0; i < 8; i++)
        assert_in_range(counts[i], 800, 1200);
}

static void least_load_picks_the_minimum(void **state)
{
    ig_policy_state st;
    ig_policy_state_init(&st, 7);
    for (int i = 0; i < 8; i++)
        atomic_store(&ws[i].refs, 5);
    atomic_store(&ws[6].refs, 2);
    for (int i = 0; i < 50; i++)
        assert_int_equal(ig_policy_pick(IG_POLICY_LEAST_LOAD, &st, cand, 8), 6);
}

static void least_load_spreads_ties(void **state)
{
    ig_policy_state st;
    int counts[8] = {0};
    ig_policy_state_init(&st, 9);
    for (int i = 0; i < 800; i++)
        counts[ig_policy_pick(IG_POLICY_LEAST_LOAD, &st, cand, 8)]++;
    for (int i = 0; i < 8; i++)
        assert_true(counts[i] > 0);
}

static void power_of_two_never_picks_the_busiest(void **state)
{
    ig_policy_state st;
    ig_policy_state_init(&st, 3);
    for (int i = 0; i < 8; i++)
        atomic_store(&ws[i].refs, (uint64_t)i); /* worker 7 is the busiest */
    for (int i = 0; i < 2000; i++)
        assert_int_not_equal(ig_policy_pick(IG_POLICY_POWER_OF_TWO, &st, cand, 8), 7);
    /* with two candidates, two distinct ones are compared: always the idle one */
    for (int i = 0; i < 100; i++)
        assert_int_equal(ig_policy_pick(IG_POLICY_POWER_OF_TWO, &st, cand, 2), 0);
}

static void empty_and_single(void **state)
{
    ig_policy_state st;
    ig_policy_state_init(&st, 3);
    assert_int_equal(ig_policy_pick(IG_POLICY_LEAST_LOAD, &st, cand, 0), -1);
    assert_int_equal(ig_policy_pick(IG_POLICY_POWER_OF_TWO, &st, cand, 1), 0);
}

static void names_round_trip(void **state)
{
    ig_policy_kind k;
    const char *names[] = {"round_robin", "random", "power_of_two", "least_load"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ig_policy_from_name(names[i], &k), 0);
        assert_string_equal(ig_policy_name(k), names[i]);
    }
    assert_int_not_equal(ig_policy_from_name("cache_aware_typo", &k), 0);
}

static void url_parse(void **state)
{
    char host[256];
    uint16_t port;
    int tls;
    const char *err;
    assert_int_equal(ig_url_parse("http://10.0.0.1:30000", host, sizeof(host), &port, &tls, NULL, &err), 0);
    assert_string_equal(host, "10.0.0.1");
    assert_int_equal(port, 30000);
    assert_false(tls);
    assert_int_equal(ig_url_parse("http://gpu-7/", host, sizeof(host), &port, &tls, NULL, &err), 0);
    assert_string_equal(host, "gpu-7");
    assert_int_equal(port, 80);
    assert_int_equal(ig_url_parse("127.0.0.1:8000", host, sizeof(host), &port, &tls, NULL, &err), 0);
    assert_int_equal(ig_url_parse("http://[::1]:9000", host, sizeof(host), &port, &tls, NULL, &err), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9000);
    assert_int_equal(ig_url_parse("https://x:1", host, sizeof(host), &port, &tls, NULL, &err), 0);
    assert_true(tls);
    assert_int_equal(port, 1);
    assert_int_equal(ig_url_parse("https://api.example.com", host, sizeof(host), &port, &tls, NULL, &err), 0);
    assert_string_equal(host, "api.example.com");
    assert_int_equal(port, 443);
    assert_true(tls);
    assert_int_not_equal(ig_url_parse("ftp://x:1", host, sizeof(host), &port, &tls, NULL, &err), 0);
    assert_int_not_equal(ig_url_parse("http://x:99999", host, sizeof(host), &port, &tls, NULL, &err), 0);
    const char *path;
    assert_int_equal(ig_url_parse("https://x/api/v1", host, sizeof(host), &port, &tls, &path, &err), 0);
    assert_string_equal(path, "/api/v1");
    assert_int_not_equal(ig_url_parse("http://x:1/v1?k=1", host, sizeof(host), &port, &tls, NULL, &err), 0);
    assert_int_not_equal(ig_url_parse("http://x:1x", host, sizeof(host), &port, &tls, NULL, &err), 0);
    assert_int_not_equal(ig_url_parse("http://:1", host, sizeof(host), &port, &tls, NULL, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(round_robin_is_exact, setup),
        cmocka_unit_test_setup(random_covers_all, setup),
        cmocka_unit_test_setup(least_load_picks_the_minimum, setup),
        cmocka_unit_test_setup(least_load_spreads_ties, setup),
        cmocka_unit_test_setup(power_of_two_never_picks_the_busiest, setup),
        cmocka_unit_test_setup(empty_and_single, setup),
        cmocka_unit_test(names_round_trip),
        cmocka_unit_test(url_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
