/* The session table: lookups by key and by id, replacement, removal,
 * revocation by worker, growth through tombstone churn, worker references. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/core/ig_epoch.h"
#include "../../src/registry/ig_registry.h"
#include "../../src/registry/ig_sessions.h"

static ig_worker *mk(const char *url)
{
    ig_worker *w = NULL;
    const char *err;
    assert_int_equal(ig_worker_new(url, &w, &err), 0);
    return w;
}

#define PUT(k, id, w, p) ig_sessions_put(k, strlen(k), id, strlen(id), w, p)
#define BY_KEY(k) ig_sessions_by_key(k, strlen(k))
#define BY_ID(id) ig_sessions_by_id(id, strlen(id))

static uint64_t other_refs(ig_worker *w)
{
    return atomic_load(&w->refs) >> 32;
}

static void put_find_replace_remove(void **state)
{
    ig_registry_init(1);
    ig_epoch_init(0);
    ig_worker *a = mk("http://127.0.0.1:1"), *b = mk("http://127.0.0.1:2");
    uint64_t base = other_refs(a);
    assert_null(BY_KEY("k1"));
    assert_int_equal(PUT("k1", "s1", a, 0), 0);
    assert_int_equal(PUT("k2", "s2", b, 0), 0);
    assert_int_equal(ig_sessions_count(), 2);
    const ig_session *e = BY_KEY("k1");
    assert_non_null(e);
    assert_ptr_equal(e->w, a);
    assert_string_equal(e->id, "s1");
    assert_ptr_equal(BY_ID("s2")->w, b);
    assert_null(BY_KEY("k")); /* a prefix is not a match */
    assert_null(BY_KEY("k10"));
    assert_int_equal(other_refs(a), base + 1); /* the session keeps its worker */

    /* the same key again: re-pinned, no duplicate */
    assert_int_equal(PUT("k1", "s1", b, 0), 0);
    assert_int_equal(ig_sessions_count(), 2);
    assert_ptr_equal(BY_KEY("k1")->w, b);
    ig_epoch_reclaim();
    assert_int_equal(other_refs(a), base);
    /* the same id under a new key replaces the old key */
    assert_int_equal(PUT("k1b", "s1", a, 0), 0);
    assert_null(BY_KEY("k1"));
    assert_ptr_equal(BY_KEY("k1b")->w, a);
    assert_int_equal(ig_sessions_count(), 2);

    assert_int_equal(ig_sessions_remove_id("s1", 2), 1);
    assert_int_equal(ig_sessions_remove_id("s1", 2), 0);
    assert_null(BY_KEY("k1b"));
    assert_null(BY_ID("s1"));
    assert_int_equal(ig_sessions_count(), 1);
    ig_sessions_shutdown();
    ig_epoch_drain();
    assert_int_equal(other_refs(a), base);
    ig_worker_unref(a);
    ig_worker_unref(b);
}

static void revoke_by_worker_and_grow(void **state)
{
    ig_registry_init(1);
    ig_epoch_init(0);
    ig_worker *ws[4];
    for (int i = 0; i < 4; i++) {
        char url[64];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d", 10 + i);
        ws[i] = mk(url);
    }
    char k[64], id[64];
    /* churn: many inserts and removals leave tombstones; lookups stay exact */
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 4000; i++) {
            snprintf(k, sizeof(k), "key-%d-%d", round, i);
            snprintf(id, sizeof(id), "sess-%d-%d", round, i);
            assert_int_equal(PUT(k, id, ws[i % 4], 0), 0);
        }
        for (int i = 0; i < 4000; i += 2) {
            snprintf(id, sizeof(id), "sess-%d-%d", round, i);
            assert_int_equal(ig_sessions_remove_id(id, strlen(id)), 1);
        }
        ig_epoch_reclaim();
    }
    assert_int_equal(ig_sessions_count(), 5 * 2000);
    for (int round = 0; round < 5; round++)
        for (int i = 0; i < 4000; i++) {
            snprintf(k, sizeof(k), "key-%d-%d", round, i);
            const ig_session *e = BY_KEY(k);
            if (i % 2) {
                assert_non_null(e);
                assert_ptr_equal(e->w, ws[i % 4]);
            } else {
                assert_null(e);
            }
        }
    /* only odd i survive, so ws[1] and ws[3] hold all of them */
    assert_int_equal(ig_sessions_revoke_worker(ws[0]), 0);
    assert_int_equal(ig_sessions_revoke_worker(ws[1]), 5000);
    assert_int_equal(ig_sessions_count(), 5000);
    assert_null(BY_KEY("key-0-1"));
    assert_non_null(BY_KEY("key-0-3"));
    assert_int_equal(PUT("admin", IG_HITL_SESSION_ID, ws[2], 1), 0);
    assert_true(BY_ID(IG_HITL_SESSION_ID)->persistent);
    ig_sessions_shutdown();
    ig_epoch_drain();
    for (int i = 0; i < 4; i++) {
        assert_int_equal(other_refs(ws[i]), 1); /* only ours is left */
        ig_worker_unref(ws[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(put_find_replace_remove),
        cmocka_unit_test(revoke_by_worker_and_grow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
