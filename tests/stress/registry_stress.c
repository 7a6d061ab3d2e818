/* Readers route (snapshot, candidates, pick, begin/end a request, keep a
 * reference like a pooled connection) while a writer adds, removes and
 * republishes workers and reclaims old snapshots. Run under ThreadSanitizer
 * (make tsan): any race, use-after-free or leak in the registry shows. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../../src/balance/ig_policy.h"
#include "../../src/core/ig_epoch.h"
#include "../../src/registry/ig_registry.h"

#define READERS 3
#define SECONDS 2

static atomic_int stop;
static atomic_ulong routed, changes;

static void reader(void *arg)
{
    int idx = (int)(intptr_t)arg;
    ig_policy_state st;
    ig_policy_state_init(&st, (uint64_t)idx + 1);
    ig_worker *held = NULL; /* a "pooled connection" kept across iterations */
    while (!atomic_load(&stop)) {
        for (int k = 0; k < 64; k++) {
            const ig_snapshot *s = ig_snapshot_get();
            ig_worker *const *cand;
            int known, n = ig_snapshot_candidates(s, k & 1 ? "m" : NULL, 1, &cand, &known);
            if (!n)
                continue;
            ig_worker *w = cand[ig_policy_pick((ig_policy_kind)(k % 4), &st, cand, n)];
            ig_worker_begin(w); /* the request's reference outlives the snapshot */
            if (!held && (k % 7) == 0) {
                ig_worker_ref(w);
                held = w;
            }
            (void)w->url[0];
            atomic_fetch_add_explicit(&w->stats.requests, 1, memory_order_relaxed);
            ig_worker_end(w);
            atomic_fetch_add(&routed, 1);
        }
        if (held && atomic_load(&held->removed)) {
            ig_worker_unref(held); /* the sweep closes a removed worker's connections */
            held = NULL;
        }
        ig_epoch_quiescent(idx);
    }
    if (held)
        ig_worker_unref(held);
    ig_epoch_offline(idx);
}

int main(void)
{
    ig_registry_init(READERS);
    ig_epoch_init(READERS);
    uv_thread_t t[READERS];
    for (int i = 0; i < READERS; i++)
        uv_thread_create(&t[i], reader, (void *)(intptr_t)i);
    uint64_t end = uv_hrtime() + (uint64_t)SECONDS * 1000000000ull;
    int port = 10000;
    while (uv_hrtime() < end) {
        char url[64];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d", port++);
        ig_worker *w;
        const char *err;
        if (ig_worker_new(url, &w, &err))
            return 1;
        char **models = malloc(sizeof(char *));
        models[0] = strdup("m");
        ig_worker_set_models(w, models, 1);
        ig_registry_add(w);
        if (ig_registry_count() > 8) {
            ig_worker *victim = ig_registry_at(port % ig_registry_count());
            if (port % 5 == 0) /* a health change: republish without membership change */
                atomic_store(&victim->health, IG_HEALTH_DOWN), ig_registry_publish();
            ig_registry_remove(victim);
        }
        ig_epoch_reclaim();
        atomic_fetch_add(&changes, 1);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < READERS; i++)
        uv_thread_join(&t[i]);
    ig_registry_shutdown();
    printf("registry stress: %lu requests routed during %lu registry changes: 1 passed, 0 failed\n",
           atomic_load(&routed), atomic_load(&changes));
    return 0;
}
