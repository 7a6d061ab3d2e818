/* The routing decision alone: snapshot lookup by model plus a policy pick,
 * with 1, 100 and 10,000 registered workers, per policy, on one thread.
 * (End to end, 10,000 workers do not fit the machine's descriptor limit:
 * each would want a pooled connection per gateway thread.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../src/api/ig_body_scan.h"
#include "../src/api/ig_json_stop.h"
#include "../src/balance/ig_affinity.h"
#include "../src/balance/ig_policy.h"
#include "../src/balance/ig_prefix.h"
#include "../src/core/ig_epoch.h"
#include "../src/registry/ig_registry.h"
#include "../src/registry/ig_sessions.h"

static int yes(const ig_worker *w, void *arg)
{
    (void)w;
    (void)arg;
    return 1;
}

/* What cache_aware adds per request: keying the prompt, matching it, the
 * decision over 8 workers, and recording it; by prompt size, for prompts that
 * continue a cached conversation. */
static int cache_aware_cost(void)
{
    static const size_t sizes[] = {1024, 4096, 32768, 131072};
    static ig_prefix_query q;
    ig_worker *ws[8];
    for (int i = 0; i < 8; i++) {
        char url[64];
        const char *err;
        snprintf(url, sizeof(url), "http://127.0.0.1:%d", 30000 + i);
        if (ig_worker_new(url, &ws[i], &err))
            return 1;
        ws[i]->id = (uint64_t)i + 1;
    }
    if (ig_prefix_init(1u << 24))
        return 1;
    ig_policy_state st;
    ig_policy_state_init(&st, 7);
    ig_cache_aware_cfg cfg = {0.3, 64, 1.5};
    printf("\n| prompt bytes | ns per cache_aware decision (key, match, pick, record) |\n|---:|---:|\n");
    for (size_t si = 0; si < 4; si++) {
        size_t len = sizes[si];
        char *text = malloc(len);
        for (size_t i = 0; i < len; i++)
            text[i] = (char)('a' + (i * 7919 + si) % 26);
        ig_span sp = {text, len};
        long iters = len > 32768 ? 20000 : 200000;
        uint64_t sink = 0, t0 = uv_hrtime();
        for (long it = 0; it < iters; it++) {
            ig_holders h;
            ig_prefix_hash(&sp, 1, "llama-3-70b", 11, &q);
            int depth = ig_prefix_match(&q, &h), aff;
            int i = ig_cache_aware_pick(&cfg, &st, ws, 8, depth, q.len, &h, yes, NULL, &aff);
            ig_prefix_insert(&q, ws[i]->id, (uint32_t)(it / 1000));
            sink += (uint64_t)depth;
        }
        double ns = (double)(uv_hrtime() - t0) / (double)iters;
        printf("| %zu | %.0f |\n", len, ns);
        if (sink == 1)
            puts("");
        free(text);
    }
    ig_prefix_free();
    for (int i = 0; i < 8; i++)
        ig_worker_unref(ws[i]);
    return 0;
}

/* The body scanner on big prompts (agent contexts): a chat body of N bytes,
 * scanned whole, and the string-stop kernel alone, byte loop against the
 * vector one, on the same bytes in the same run. */
static int body_scan_cost(void)
{
    static const size_t sizes[] = {1024, 102400, 1048576};
    printf(
        "\n| body bytes | ns per body scan | ns per MB, byte loop | ns per MB, vector | vector speed-up |\n"
        "|---:|---:|---:|---:|---:|\n");
    for (size_t si = 0; si < 3; si++) {
        size_t len = sizes[si];
        char *body = malloc(len + 64);
        int head = snprintf(body, 64, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"");
        for (size_t i = (size_t)head; i < len - 4; i++)
            body[i] = (char)(i % 61 == 0 ? ' ' : 'a' + (char)(i * 7919 % 26));
        memcpy(body + len - 4, "\"}]}", 4);
        long iters = (long)(200u << 20) / (long)len;
        ig_body_fields f;
        const char *err;
        uint64_t sink = 0, t0 = uv_hrtime();
        for (long it = 0; it < iters; it++) {
            if (ig_body_scan(body, len, &f, &err))
                return 1;
            sink += f.n_text;
        }
        double scan_ns = (double)(uv_hrtime() - t0) / (double)iters;
        const char *s = body + head, *e = body + len - 4;
        t0 = uv_hrtime();
        for (long it = 0; it < iters; it++)
            sink += (uint64_t)(ig_json_string_stop_scalar(s, e) - s);
        double scalar_ns = (double)(uv_hrtime() - t0) / (double)iters;
        t0 = uv_hrtime();
        for (long it = 0; it < iters; it++)
            sink += (uint64_t)(ig_json_string_stop(s, e) - s);
        double vec_ns = (double)(uv_hrtime() - t0) / (double)iters;
        double mb = (double)(e - s) / 1048576.0;
        printf("| %zu | %.0f | %.0f | %.0f | %.1fx |\n", len, scan_ns, scalar_ns / mb, vec_ns / mb,
               scalar_ns / vec_ns);
        if (sink == 1)
            puts("");
        free(body);
    }
    return 0;
}

/* What a pinned request adds: looking its bearer up in the session table
 * (AReaL session keys look like these), hits and misses, by table size. */
static int session_lookups(void)
{
    static const int sizes[] = {0, 1000, 100000};
    ig_worker *ws[8];
    for (int i = 0; i < 8; i++) {
        char url[64];
        const char *err;
        snprintf(url, sizeof(url), "http://127.0.0.1:%d", 20000 + i);
        if (ig_worker_new(url, &ws[i], &err))
            return 1;
    }
    ig_epoch_init(0);
    printf("\n| sessions | bearer | ns per lookup |\n|---:|---|---:|\n");
    int have = 0;
    char(*keys)[64] = calloc(100000, 64);
    for (size_t si = 0; si < 3; si++) {
        for (; have < sizes[si]; have++) {
            char id[64];
            snprintf(keys[have], 64, "sk-sess-w%d-%d-%08x", have % 8, have, (unsigned)(have * 2654435761u));
            snprintf(id, sizeof(id), "sess-w%d-%d", have % 8, have);
            if (ig_sessions_put(keys[have], strlen(keys[have]), id, strlen(id), ws[have % 8], 0))
                return 1;
            ig_epoch_reclaim();
        }
        for (int hit = have ? 1 : 0; hit >= 0; hit--) {
            long iters = 4000000;
            uint64_t sink = 0, t0 = uv_hrtime();
            for (long it = 0; it < iters; it++) {
                const char *k = hit ? keys[(it * 7919) % have] : "sk-proj-not-a-session-key-0123456789";
                const ig_session *e = ig_sessions_by_key(k, strlen(k));
                sink += e ? e->w->port : 1;
            }
            double ns = (double)(uv_hrtime() - t0) / (double)iters;
            printf("| %d | %s | %.1f |\n", sizes[si], hit ? "a session's key" : "not a session key", ns);
            if (sink == 1)
                puts("");
        }
    }
    ig_sessions_shutdown();
    ig_epoch_drain();
    for (int i = 0; i < 8; i++)
        ig_worker_unref(ws[i]);
    free(keys);
    return 0;
}

int main(void)
{
    static const int sizes[] = {1, 100, 10000};
    ig_registry_init(1);
    printf("| workers | policy | ns per routing decision |\n|---:|---|---:|\n");
    for (size_t si = 0; si < 3; si++) {
        int n = sizes[si];
        ig_worker **ws = calloc((size_t)n, sizeof(*ws));
        for (int i = 0; i < n; i++) {
            char url[64];
            const char *err;
            snprintf(url, sizeof(url), "http://127.0.0.1:%d", 10000 + i);
            if (ig_worker_new(url, &ws[i], &err))
                return 1;
            char **m = malloc(sizeof(char *));
            m[0] = strdup("llama-3-70b");
            ig_worker_set_models(ws[i], m, 1);
            /* every worker busy, so least_load cannot stop early at an idle one */
            atomic_store(&ws[i]->refs, (1ull << 32) | (uint64_t)(1 + i * 7 % 13));
        }
        ig_snapshot *s = ig_snapshot_build(ws, n, 1);
        for (int k = 0; k < 4; k++) {
            ig_policy_state st;
            ig_policy_state_init(&st, 42);
            long iters = k == IG_POLICY_LEAST_LOAD && n >= 10000 ? 20000 : 2000000;
            uint64_t sink = 0, t0 = uv_hrtime();
            for (long it = 0; it < iters; it++) {
                ig_worker *const *cand;
                int known, c = ig_snapshot_candidates(s, "llama-3-70b", 11, &cand, &known);
                ig_worker *w = cand[ig_policy_pick((ig_policy_kind)k, &st, cand, c)];
                ig_worker_begin(w);
                sink += w->port;
                ig_worker_end(w);
            }
            double ns = (double)(uv_hrtime() - t0) / (double)iters;
            printf("| %d | %s | %.1f |\n", n, ig_policy_name((ig_policy_kind)k), ns);
            if (sink == 1)
                puts("");
        }
        ig_snapshot_free(s);
        for (int i = 0; i < n; i++)
            ig_worker_unref(ws[i]);
        free(ws);
    }
    return session_lookups() || cache_aware_cost() || body_scan_cost();
}
