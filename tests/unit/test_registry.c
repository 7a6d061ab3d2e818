/* Snapshots (model index, routable sets), worker references, epoch reclamation. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/core/ig_epoch.h"
#include "../../src/registry/ig_registry.h"

static ig_worker *mk(const char *url, const char *m1, const char *m2)
{
    ig_worker *w = NULL;
    const char *err;
    assert_int_equal(ig_worker_new(url, &w, &err), 0);
    if (m1) {
        char **models = calloc(2, sizeof(char *));
        models[0] = strdup(m1);
        if (m2)
            models[1] = strdup(m2);
        ig_worker_set_models(w, models, m2 ? 2 : 1);
    }
    return w;
}

static int contains(ig_worker *const *arr, int n, ig_worker *w)
{
    for (int i = 0; i < n; i++)
        if (arr[i] == w)
            return 1;
    return 0;
}

/* Prefill and decode workers are routed from pools of their own, never as
 * whole-request workers; the fleet's listing still holds them. */
static void roles_get_pools_of_their_own(void **state)
{
    (void)state;
    ig_registry_init(1);
    ig_worker *reg = mk("http://127.0.0.1:1", "other", NULL), *p1 = mk("http://127.0.0.1:2", "llama", NULL),
              *p2 = mk("http://127.0.0.1:3", "llama", NULL), *d1 = mk("http://127.0.0.1:4", "llama", NULL);
    p1->role = p2->role = IG_ROLE_PREFILL;
    d1->role = IG_ROLE_DECODE;
    atomic_store(&p2->breaker, IG_BREAKER_OPEN);
    ig_worker *ws[] = {reg, p1, p2, d1};
    ig_snapshot *s = ig_snapshot_build(ws, 4, 1);
    assert_non_null(s);
    assert_non_null(s->pd[0]);
    assert_non_null(s->pd[1]);
    assert_int_equal(s->n_all, 4);
    assert_int_equal(s->n_up, 3); /* readiness counts every routable worker */
    ig_worker *const *out;
    int known, n = ig_snapshot_candidates(s, "llama", 5, &out, &known);
    assert_false(known); /* the fleet of whole requests does not serve it */
    assert_int_equal(n, 0);
    n = ig_snapshot_candidates(s, NULL, 0, &out, &known);
    assert_int_equal(n, 1);
    assert_ptr_equal(out[0], reg);
    n = ig_snapshot_candidates(s->pd[0], "llama", 5, &out, &known);
    assert_true(known);
    assert_int_equal(n, 1); /* the open breaker takes p2 out of prefill choice only */
    assert_ptr_equal(out[0], p1);
    n = ig_snapshot_candidates(s->pd[1], "llama", 5, &out, &known);
    assert_int_equal(n, 1);
    assert_ptr_equal(out[0], d1);
    n = ig_snapshot_candidates(s->pd[1], "other", 5, &out, &known);
    assert_false(known);
    ig_snapshot_free(s);
    ig_worker *ws2[] = {reg, d1};
    s = ig_snapshot_build(ws2, 2, 2);
    assert_null(s->pd[0]); /* no prefill: no pool */
    assert_non_null(s->pd[1]);
    ig_snapshot_free(s);
    ig_worker_unref(reg);
    ig_worker_unref(p1);
    ig_worker_unref(p2);
    ig_worker_unref(d1);
}

/* the URL a worker would get, without resolving anything: the shared registry's keys */
static void urls_normalise_as_workers_do(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(ig_url_normalize("127.0.0.1:2", out, sizeof(out)), 0);
    assert_string_equal(out, "http://127.0.0.1:2");
    assert_int_equal(ig_url_normalize("https://api.example.com/v1/", out, sizeof(out)), 0);
    assert_string_equal(out, "https://api.example.com:443/v1");
    assert_int_equal(ig_url_normalize("http://[::1]:8000", out, sizeof(out)), 0);
    assert_string_equal(out, "http://[::1]:8000");
    ig_worker *w = mk("http://127.0.0.1:9/x/", NULL, NULL);
    assert_int_equal(ig_url_normalize("http://127.0.0.1:9/x/", out, sizeof(out)), 0);
    assert_string_equal(out, w->url);
    ig_worker_unref(w);
    assert_int_equal(ig_url_normalize("ftp://x", out, sizeof(out)), -EINVAL);
    assert_int_equal(ig_url_normalize("http://127.0.0.1:9", out, 8), -E2BIG);
}

static void snapshot_indexes_models(void **state)
{
    ig_registry_init(1);
    ig_worker *a = mk("http://127.0.0.1:1", "llama", "qwen"), *b = mk("127.0.0.1:2", "qwen", NULL),
              *any = mk("http://127.0.0.1:3/", NULL, NULL), *down = mk("http://127.0.0.1:4", "mistral", NULL);
    atomic_store(&down->health, IG_HEALTH_DOWN);
    ig_worker *ws[] = {a, b, any, down};
    ig_snapshot *s = ig_snapshot_build(ws, 4, 1);
    assert_non_null(s);
    ig_worker *const *out;
    int known, n;

    n = ig_snapshot_candidates(s, "qwen", 4, &out, &known);
    assert_int_equal(n, 3); /* a, b and the any-model worker */
    assert_true(known && contains(out, n, a) && contains(out, n, b) && contains(out, n, any));
    n = ig_snapshot_candidates(s, "llama", 5, &out, &known);
    assert_int_equal(n, 2);
    /* known but nobody healthy lists it: only the any-model worker is left */
    n = ig_snapshot_candidates(s, "mistral", 7, &out, &known);
    assert_true(known);
    assert_int_equal(n, 1);
    assert_ptr_equal(out[0], any);
    /* nobody lists it, but an any-model worker may serve it */
    n = ig_snapshot_candidates(s, "gpt-x", 5, &out, &known);
    assert_true(known);
    assert_int_equal(n, 1);
    n = ig_snapshot_candidates(s, NULL, 0, &out, &known);
    assert_int_equal(n, 3); /* every routable worker */
    assert_false(contains(out, n, down));
    assert_int_equal(s->n_all, 4);
    assert_string_equal(b->url, "http://127.0.0.1:2");
    assert_string_equal(any->host_header, "127.0.0.1:3");

    ig_snapshot_free(s);
    ig_worker *ws2[] = {a, b};
    s = ig_snapshot_build(ws2, 2, 2);
    n = ig_snapshot_candidates(s, "gpt-x", 5, &out, &known);
    assert_false(known); /* 404 territory */
    assert_int_equal(n, 0);
    ig_snapshot_free(s);
    for (int i = 0; i < 4; i++)
        ig_worker_unref(ws[i]);
}

/* A model registered onto some workers (AReaL's /register_model) is served
 * by exactly those, even when others take any model; a native model that is
 * also registered gains the listed workers. */
static void registered_models_route_to_their_workers(void **state)
{
    ig_registry_init(1);
    ig_worker *a = mk("http://127.0.0.1:11", "qwen", NULL), *b = mk("http://127.0.0.1:12", NULL, NULL),
              *c = mk("http://127.0.0.1:13", NULL, NULL);
    ig_worker *ws[] = {a, b, c};
    ig_worker *pol[] = {b, c}, *q[] = {c};
    ig_model_route routes[] = {{.name = "policy", .workers = pol, .n = 2},
                               {.name = "qwen", .workers = q, .n = 1}};
    ig_registry_set_model_routes(routes, 2);
    ig_snapshot *s = ig_snapshot_build(ws, 3, 1);
    ig_worker *const *out;
    int known, n = ig_snapshot_candidates(s, "policy", 6, &out, &known);
    assert_int_equal(n, 2);
    assert_true(known && contains(out, n, b) && contains(out, n, c) && !contains(out, n, a));
    n = ig_snapshot_candidates(s, "qwen", 4, &out, &known);
    assert_int_equal(n, 2); /* a lists it, c was registered; b (any model) is not added */
    assert_true(contains(out, n, a) && contains(out, n, c));
    atomic_store(&c->health, IG_HEALTH_DOWN);
    ig_snapshot *s2 = ig_snapshot_build(ws, 3, 2);
    n = ig_snapshot_candidates(s2, "policy", 6, &out, &known);
    assert_int_equal(n, 1);
    assert_ptr_equal(out[0], b);
    /* the snapshot keeps its own copy of the names: the routes may go first */
    ig_registry_set_model_routes(NULL, 0);
    assert_int_equal(ig_snapshot_candidates(s2, "policy", 6, &out, &known), 1);
    ig_snapshot_free(s);
    ig_snapshot_free(s2);
    ig_worker_unref(a);
    ig_worker_unref(b);
    ig_worker_unref(c);
}

static void references_keep_a_worker_alive(void **state)
{
    ig_registry_init(2);
    ig_worker *w = mk("http://127.0.0.1:5", "m", NULL);
    ig_worker_begin(w); /* a request */
    ig_worker_ref(w);   /* a pooled connection */
    assert_int_equal(ig_worker_inflight(w), 1);
    ig_worker_unref(w);                         /* the creator's reference */
    ig_worker_unref(w);                         /* the connection's */
    assert_int_equal(ig_worker_inflight(w), 1); /* still alive: the request holds it */
    ig_worker_end(w);                           /* freed here (ASan would catch a leak or reuse) */
}

static int freed;
static void count_free(void *p)
{
    (void)p;
    freed++;
}

static void epoch_waits_for_every_reader(void **state)
{
    ig_epoch_init(2);
    freed = 0;
    ig_epoch_retire(NULL, count_free);
    ig_epoch_advance();
    assert_int_equal(ig_epoch_reclaim(), 1); /* nobody passed a quiescent point yet */
    ig_epoch_quiescent(0);
    assert_int_equal(ig_epoch_reclaim(), 1); /* reader 1 may still hold it */
    ig_epoch_quiescent(1);
    assert_int_equal(ig_epoch_reclaim(), 0);
    assert_int_equal(freed, 1);
    /* an offline reader never blocks */
    ig_epoch_offline(1);
    ig_epoch_retire(NULL, count_free);
    ig_epoch_advance();
    ig_epoch_quiescent(0);
    assert_int_equal(ig_epoch_reclaim(), 0);
    assert_int_equal(freed, 2);
}

static void registry_publish_add_remove(void **state)
{
    ig_registry_init(1);
    ig_epoch_init(1);
    ig_worker *a = mk("http://127.0.0.1:7", "m", NULL), *b = mk("http://127.0.0.1:8", "m", NULL);
    assert_int_equal(ig_registry_add(a), 0);
    assert_int_equal(ig_registry_add(b), 0);
    const ig_snapshot *s = ig_snapshot_get();
    assert_int_equal(s->n_all, 2);
    assert_ptr_equal(ig_registry_find_url("http://127.0.0.1:8"), b);
    assert_ptr_equal(ig_registry_find_id(a->id), a);
    ig_worker_begin(b); /* in flight while removed: drains */
    assert_int_equal(ig_registry_remove(b), 0);
    assert_true(atomic_load(&b->removed));
    assert_int_equal(ig_snapshot_get()->n_all, 1);
    assert_int_equal(ig_registry_remove(b), -ENOENT);
    ig_epoch_quiescent(0);
    ig_epoch_reclaim();
    assert_int_equal(ig_worker_inflight(b), 1);
    ig_worker_end(b);
    ig_registry_shutdown();
}

static void a_base_path_goes_before_each_target(void **state)
{
    ig_worker *w;
    const char *err;
    assert_int_equal(ig_worker_new("https://127.0.0.1:8443/api/v1/", &w, &err), 0);
    assert_string_equal(w->url, "https://127.0.0.1:8443/api/v1");
    assert_string_equal(w->base_path, "/api/v1");
    assert_string_equal(w->host_header, "127.0.0.1:8443");
    /* an SDK's base URL: its "/v1" is the API's own */
    assert_int_equal(ig_worker_path_prefix(w, "/v1/chat/completions", 20), 4);
    assert_int_equal(ig_worker_path_prefix(w, "/v1", 3), 4);
    assert_int_equal(ig_worker_path_prefix(w, "/v1?x", 5), 4);
    assert_int_equal(ig_worker_path_prefix(w, "/v10/x", 6), 7);
    assert_int_equal(ig_worker_path_prefix(w, "/health", 7), 7);
    assert_int_equal(ig_worker_set_key(w, "sk-1"), 0);
    assert_string_equal(w->auth_line, "authorization: Bearer sk-1\r\n");
    assert_int_equal(ig_worker_set_key(w, "bad\r\nx: y"), -EINVAL);
    assert_null(w->auth_line);
    ig_worker_unref(w);
    assert_int_equal(ig_worker_new("http://127.0.0.1:9/", &w, &err), 0);
    assert_string_equal(w->url, "http://127.0.0.1:9");
    assert_int_equal(ig_worker_path_prefix(w, "/v1/models", 10), 0);
    ig_worker_unref(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_base_path_goes_before_each_target),
        cmocka_unit_test(snapshot_indexes_models),
        cmocka_unit_test(registered_models_route_to_their_workers),
        cmocka_unit_test(references_keep_a_worker_alive),
        cmocka_unit_test(roles_get_pools_of_their_own),
        cmocka_unit_test(urls_normalise_as_workers_do),
        cmocka_unit_test(epoch_waits_for_every_reader),
        cmocka_unit_test(registry_publish_add_remove),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
