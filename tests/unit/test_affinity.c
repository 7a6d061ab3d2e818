/* The prefix index (keys, insert, match, eviction, removed workers), the
 * cache_aware decision, and the consistent-hash ring (stability, bounded load). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/balance/ig_affinity.h"
#include "../../src/balance/ig_prefix.h"

static ig_worker *mk(int port)
{
    char url[64];
    const char *err;
    ig_worker *w = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    assert_int_equal(ig_worker_new(url, &w, &err), 0);
    return w;
}

static void key(const char *text, ig_prefix_query *q)
{
    ig_span sp = {text, strlen(text)};
    ig_prefix_hash(&sp, 1, "m", 1, q);
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* in flight on w, keeping its one reference (the high half of the word) */
static void set_load(ig_worker *w, uint64_t n)
{
    atomic_store(&w->refs, (1ull << 32) | n);
}

static int always(const ig_worker *w, void *arg)
{
    (void)w;
    (void)arg;
    return 1;
}

static void keys_are_chained_prefixes(void **state)
{
    static ig_prefix_query a, b, c;
    char *base = repeat('a', 4 * IG_PREFIX_BLOCK + 10);
    key(base, &a);
    assert_int_equal(a.n, 4); /* the partial last block is not keyed */
    assert_int_equal(a.len, 4 * IG_PREFIX_BLOCK + 10);
    base[3 * IG_PREFIX_BLOCK + 1] = 'b'; /* differ in block 3 */
    key(base, &b);
    assert_memory_equal(a.key, b.key, 3 * sizeof(uint64_t));
    assert_true(a.key[3] != b.key[3]);
    /* equal text split across spans keys the same */
    ig_span two[2] = {{base, 300}, {base + 300, strlen(base) - 300}};
    ig_prefix_hash(two, 2, "m", 1, &c);
    assert_memory_equal(b.key, c.key, (size_t)b.n * sizeof(uint64_t));
    /* another model never shares keys */
    ig_span one = {base, strlen(base)};
    ig_prefix_hash(&one, 1, "other", 5, &c);
    assert_true(c.key[0] != b.key[0]);
    free(base);
}

static void insert_match_and_removed_workers(void **state)
{
    static ig_prefix_query conv1, conv1_turn2, other;
    assert_int_equal(ig_prefix_init(1 << 20), 0);
    char *t = repeat('x', 6 * IG_PREFIX_BLOCK);
    memset(t, 's', 2 * IG_PREFIX_BLOCK); /* a shared "system prompt": blocks 0-1 */
    t[3 * IG_PREFIX_BLOCK] = '\0';
    key(t, &conv1);
    ig_holders h;
    assert_int_equal(ig_prefix_match(&conv1, &h), 0);
    ig_prefix_insert(&conv1, 3, 10);
    t[3 * IG_PREFIX_BLOCK] = 'x'; /* the next turn: the same history and more */
    key(t, &conv1_turn2);
    assert_int_equal(ig_prefix_match(&conv1_turn2, &h), 3);
    assert_true(ig_holders_has(&h, 3) && !ig_holders_has(&h, 4));
    /* another conversation on the same system prompt matches only that */
    memset(t + 2 * IG_PREFIX_BLOCK, 'y', 4 * IG_PREFIX_BLOCK);
    key(t, &other);
    assert_int_equal(ig_prefix_match(&other, &h), 2);
    ig_prefix_insert(&other, 70, 11);
    assert_int_equal(ig_prefix_match(&conv1_turn2, &h), 3);
    assert_true(ig_holders_has(&h, 3) && !ig_holders_has(&h, 70)); /* the deepest block's holders */
    assert_int_equal(ig_prefix_match(&other, &h), 6);
    /* the system prompt's blocks hold both */
    static ig_prefix_query sys;
    t[2 * IG_PREFIX_BLOCK] = '\0';
    key(t, &sys);
    assert_int_equal(ig_prefix_match(&sys, &h), 2);
    assert_true(ig_holders_has(&h, 3) && ig_holders_has(&h, 70));
    /* worker 3 leaves: the sweep forgets it, its own blocks disappear */
    ig_holders live = {{0, 0}};
    ig_holders_add(&live, 70);
    size_t used = ig_prefix_sweep(&live, 12, 90, 70);
    assert_int_equal(used, 6); /* other's 6 blocks; conv1's third block had only worker 3 */
    assert_int_equal(ig_prefix_match(&conv1_turn2, &h), 2);
    assert_true(ig_holders_has(&h, 70) && !ig_holders_has(&h, 3));
    ig_prefix_free();
    free(t);
}

static void eviction_keeps_memory_bounded(void **state)
{
    static ig_prefix_query q;
    assert_int_equal(ig_prefix_init(64 * IG_PREFIX_BLOCK), 0); /* 64 entries */
    assert_int_equal(ig_prefix_capacity(), 64);
    char text[IG_PREFIX_BLOCK + 1];
    ig_holders live = {{~0ull, ~0ull}};
    /* 1000 distinct one-block prompts into 64 entries: buckets recycle their oldest */
    for (int i = 0; i < 1000; i++) {
        snprintf(text, sizeof(text), "%0*d", IG_PREFIX_BLOCK, i);
        key(text, &q);
        ig_prefix_insert(&q, 1, (uint32_t)i);
    }
    ig_holders h;
    snprintf(text, sizeof(text), "%0*d", IG_PREFIX_BLOCK, 999);
    key(text, &q);
    assert_int_equal(ig_prefix_match(&q, &h), 1); /* the newest is there */
    snprintf(text, sizeof(text), "%0*d", IG_PREFIX_BLOCK, 0);
    key(text, &q);
    assert_int_equal(ig_prefix_match(&q, &h), 0); /* the oldest went */
    /* the background sweep evicts the least recently used down to 50% */
    size_t before = ig_prefix_sweep(&live, 1000, 100, 100);
    size_t after = ig_prefix_sweep(&live, 1000, 40, 50);
    assert_true(before > 32);
    assert_true(after <= 32);
    snprintf(text, sizeof(text), "%0*d", IG_PREFIX_BLOCK, 999);
    key(text, &q);
    assert_int_equal(ig_prefix_match(&q, &h), 1); /* the most recent survive */
    ig_prefix_free();
}

static void cache_aware_decision(void **state)
{
    ig_registry_init(1);
    ig_worker *w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = mk(9000 + i);
        w[i]->id = (uint64_t)i + 1; /* the registry gives ids when it adds a worker */
    }
    ig_policy_state st;
    ig_policy_state_init(&st, 1);
    ig_cache_aware_cfg cfg = {0.3, 64, 1.5};
    ig_holders h = {{0, 0}};
    ig_holders_add(&h, w[2]->id);
    int aff;
    /* a long enough match goes to its holder */
    assert_int_equal(
        ig_cache_aware_pick(&cfg, &st, w, 4, 4, 4 * IG_PREFIX_BLOCK + 100, &h, always, NULL, &aff), 2);
    assert_true(aff);
    /* a short one (under the threshold) goes by load */
    set_load(w[0], 5);
    set_load(w[1], 5);
    set_load(w[3], 5);
    set_load(w[2], 6);
    int i = ig_cache_aware_pick(&cfg, &st, w, 4, 1, 10 * IG_PREFIX_BLOCK, &h, always, NULL, &aff);
    assert_false(aff);
    assert_true(i != 2);
    /* a holder far above the others' load gives the prompt up (bounded load) */
    set_load(w[2], 12);
    i = ig_cache_aware_pick(&cfg, &st, w, 4, 4, 4 * IG_PREFIX_BLOCK, &h, always, NULL, &aff);
    assert_false(aff);
    assert_true(i != 2);
    /* sgl's imbalance rule (abs and rel) sends everything by load */
    ig_cache_aware_cfg tight = {0.3, 2, 1.1};
    set_load(w[2], 8);
    i = ig_cache_aware_pick(&tight, &st, w, 4, 4, 4 * IG_PREFIX_BLOCK, &h, always, NULL, &aff);
    assert_false(aff);
    for (int k = 0; k < 4; k++) {
        set_load(w[k], 0);
        ig_worker_unref(w[k]);
    }
}

static void ring_moves_about_one_nth_of_keys(void **state)
{
    ig_registry_init(1);
    enum { N = 10, KEYS = 20000 };
    ig_worker *w[N + 1];
    for (int i = 0; i <= N; i++)
        w[i] = mk(7000 + i);
    ig_ring r10, r11, r9;
    assert_int_equal(ig_ring_build(&r10, w, N, IG_RING_VNODES), 0);
    assert_int_equal(ig_ring_build(&r11, w, N + 1, IG_RING_VNODES), 0);
    /* w[3] leaves: the array without it */
    ig_worker *nine[N - 1];
    for (int i = 0, k = 0; i < N; i++)
        if (i != 3)
            nine[k++] = w[i];
    assert_int_equal(ig_ring_build(&r9, nine, N - 1, IG_RING_VNODES), 0);
    int moved_join = 0, moved_leave = 0, per[N] = {0};
    for (int k = 0; k < KEYS; k++) {
        char s[32];
        int n = snprintf(s, sizeof(s), "user-%d", k);
        uint64_t h = ig_ring_key(s, (size_t)n);
        ig_worker *a = w[ig_ring_pick(&r10, h, w, N, 1e9, always, NULL, NULL)];
        ig_worker *b = w[ig_ring_pick(&r11, h, w, N + 1, 1e9, always, NULL, NULL)];
        ig_worker *c = nine[ig_ring_pick(&r9, h, nine, N - 1, 1e9, always, NULL, NULL)];
        per[a->port - 7000]++;
        if (a != b) {
            moved_join++;
            assert_ptr_equal(b, w[N]); /* a key only ever moves to the newcomer */
        }
        if (a != c) {
            moved_leave++;
            assert_ptr_equal(a, w[3]); /* only the leaver's keys move */
        }
    }
    /* about 1/11 and 1/10 of the keys move; each worker holds about 1/10 */
    assert_in_range(moved_join, KEYS / 11 / 2, KEYS / 11 * 2);
    assert_in_range(moved_leave, KEYS / 10 / 2, KEYS / 10 * 2);
    for (int i = 0; i < N; i++)
        assert_in_range(per[i], KEYS / N * 7 / 10, KEYS / N * 13 / 10);
    /* bounded load: the key's worker above 1.25x the mean passes it on */
    uint64_t h = ig_ring_key("hot", 3);
    int walked = -1;
    int home = ig_ring_pick(&r10, h, w, N, IG_AFFINITY_LOAD_BOUND, always, NULL, &walked);
    assert_int_equal(walked, 0);
    set_load(w[home], 10); /* mean (10+1)/10: cap 2 */
    int next = ig_ring_pick(&r10, h, w, N, IG_AFFINITY_LOAD_BOUND, always, NULL, &walked);
    assert_true(next != home);
    assert_int_equal(walked, 1);
    /* other gateways' counts lag: a worker they report busy gets one slot more */
    atomic_store(&w[home]->remote_inflight, 1); /* 1 in flight, mean (1+1)/10: cap 1, + 1 */
    set_load(w[home], 0);
    assert_int_equal(ig_ring_pick(&r10, h, w, N, IG_AFFINITY_LOAD_BOUND, always, NULL, &walked), home);
    set_load(w[home], 1); /* 2 in flight: over even so */
    assert_true(ig_ring_pick(&r10, h, w, N, IG_AFFINITY_LOAD_BOUND, always, NULL, &walked) != home);
    atomic_store(&w[home]->remote_inflight, 0);
    set_load(w[home], 0);
    ig_ring_free(&r10);
    ig_ring_free(&r11);
    ig_ring_free(&r9);
    for (int i = 0; i <= N; i++)
        ig_worker_unref(w[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keys_are_chained_prefixes),
        cmocka_unit_test(insert_match_and_removed_workers),
        cmocka_unit_test(eviction_keeps_memory_bounded),
        cmocka_unit_test(cache_aware_decision),
        cmocka_unit_test(ring_moves_about_one_nth_of_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
