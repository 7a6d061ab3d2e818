#include "ig_metrics_page.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../balance/ig_sticky.h"
#include "../control/ig_control.h"
#include "../registry/ig_sessions.h"
#include "../admission/ig_admission.h"
#include "../server/ig_h1conn.h"
#include "../server/ig_thread.h"

static const char *const other_names[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

static int put(ig_buf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int put(ig_buf *o, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    return ig_buf_append(o, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static uint64_t rd(ig_counter *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

#define SUM_THREADS(expr)                                                                                    \
    ({                                                                                                       \
        uint64_t _s = 0;                                                                                     \
        for (int _t = 0; _t < n; _t++) {                                                                     \
            ig_thread_stats *st = &th[_t].stats;                                                             \
            _s += rd(&(expr));                                                                               \
        }                                                                                                    \
        _s;                                                                                                  \
    })

/* the prefix index shared over NATS (--nats-servers): only when it is on */
static void share_metrics(ig_buf *o)
{
    ig_share_stats ss;
    ig_control_share_stats(&ss);
    if (!ss.on)
        return;
    put(o,
        "# HELP infergate_prefix_share_connected 1 while the NATS connection that shares the prefix index is up.\n"
        "# TYPE infergate_prefix_share_connected gauge\ninfergate_prefix_share_connected %d\n",
        ss.connected);
    put(o,
        "# HELP infergate_prefix_share_peers Other gateways whose load reports count here (heard from lately).\n"
        "# TYPE infergate_prefix_share_peers gauge\ninfergate_prefix_share_peers %d\n",
        ss.peers);
    put(o,
        "# HELP infergate_prefix_share_messages_total Prefix-index messages: sent, lost (not taken by the "
        "connection), received, malformed (received and ignored).\n"
        "# TYPE infergate_prefix_share_messages_total counter\n"
        "infergate_prefix_share_messages_total{kind=\"sent\"} %llu\n"
        "infergate_prefix_share_messages_total{kind=\"lost\"} %llu\n"
        "infergate_prefix_share_messages_total{kind=\"received\"} %llu\n"
        "infergate_prefix_share_messages_total{kind=\"malformed\"} %llu\n",
        (unsigned long long)ss.messages_sent, (unsigned long long)ss.messages_lost,
        (unsigned long long)ss.messages_received, (unsigned long long)ss.messages_malformed);
    put(o,
        "# HELP infergate_prefix_share_inserts_total Prefix inserts: applied from other gateways, unknown "
        "(for a worker not registered here), dropped (this gateway's, lost to a full ring).\n"
        "# TYPE infergate_prefix_share_inserts_total counter\n"
        "infergate_prefix_share_inserts_total{kind=\"applied\"} %llu\n"
        "infergate_prefix_share_inserts_total{kind=\"unknown\"} %llu\n"
        "infergate_prefix_share_inserts_total{kind=\"dropped\"} %llu\n",
        (unsigned long long)ss.records_applied, (unsigned long long)ss.records_unknown,
        (unsigned long long)ss.records_dropped);
}

typedef ig_hist *(*hist_of)(ig_thread *t, int route);

static ig_hist *duration_of(ig_thread *t, int r)
{
    return &t->stats.duration[r];
}
static ig_hist *ttfb_of(ig_thread *t, int r)
{
    return &t->stats.ttfb[r];
}
static ig_hist *queue_wait_of(ig_thread *t, int r)
{
    (void)r;
    return &t->stats.queue_wait;
}
static ig_hist *pd_prefill_of(ig_thread *t, int r)
{
    (void)r;
    return &t->stats.pd_prefill;
}
static ig_hist *pd_ttft_of(ig_thread *t, int r)
{
    (void)r;
    return &t->stats.pd_ttft;
}

/* One histogram summed over the threads; label is "" or route="...",
 * and empty histograms are skipped unless always is set. */
static void hist1(ig_buf *o, const char *name, const char *label, ig_thread *th, int n, hist_of get,
                  int route, int always)
{
    uint64_t total = 0, cum = 0, sum = 0;
    for (int t = 0; t < n; t++)
        for (int b = 0; b <= IG_HIST_N; b++)
            total += rd(&get(&th[t], route)->bucket[b]);
    if (!total && !always)
        return;
    const char *sep = *label ? "," : "";
    for (int b = 0; b <= IG_HIST_N; b++) {
        for (int t = 0; t < n; t++)
            cum += rd(&get(&th[t], route)->bucket[b]);
        if (b < IG_HIST_N)
            put(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, label, sep, ig_hist_bounds[b],
                (unsigned long long)cum);
        else
            put(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, label, sep, (unsigned long long)cum);
    }
    for (int t = 0; t < n; t++)
        sum += rd(&get(&th[t], route)->sum_us);
    const char *open = *label ? "{" : "", *close = *label ? "}" : "";
    put(o, "%s_sum%s%s%s %.6f\n", name, open, label, close, (double)sum / 1e6);
    put(o, "%s_count%s%s%s %llu\n", name, open, label, close, (unsigned long long)total);
}

static void hist(ig_buf *o, const char *name, ig_thread *th, int n, hist_of get)
{
    for (int r = 0; r < IG_R_N; r++) {
        char label[48];
        snprintf(label, sizeof(label), "route=\"%s\"", ig_route_name(r));
        hist1(o, name, label, th, n, get, r, 0);
    }
}

/* sgl-model-gateway's names for what its dashboards read, alongside ours,
 * with its labels where infergate has the data (its TTFT is by model too:
 * infergate's is by endpoint only). */
static void smg_names(ig_buf *o, ig_thread *th, int n, const ig_snapshot *s)
{
    static const struct {
        ig_route r;
        const char *path;
    } paths[] = {{IG_R_CHAT, "/v1/chat/completions"},
                 {IG_R_COMPLETIONS, "/v1/completions"},
                 {IG_R_EMBEDDINGS, "/v1/embeddings"},
                 {IG_R_GENERATE, "/generate"}};
    put(o, "# HELP smg_http_requests_total Requests, by method and path (sgl-model-gateway's name).\n"
           "# TYPE smg_http_requests_total counter\n");
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        uint64_t v = 0;
        for (int k = 0; k < IG_STATUS_N; k++)
            v += SUM_THREADS(st->requests[paths[i].r][k]);
        put(o, "smg_http_requests_total{method=\"POST\",path=\"%s\"} %llu\n", paths[i].path,
            (unsigned long long)v);
    }
    put(o,
        "# HELP smg_http_request_duration_seconds Request duration, by method and path (sgl-model-gateway's "
        "name).\n# TYPE smg_http_request_duration_seconds histogram\n");
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        char label[96];
        snprintf(label, sizeof(label), "method=\"POST\",path=\"%s\"", paths[i].path);
        hist1(o, "smg_http_request_duration_seconds", label, th, n, duration_of, (int)paths[i].r, 0);
    }
    put(o, "# HELP smg_router_ttft_seconds Time to first token, by endpoint (sgl-model-gateway's name).\n"
           "# TYPE smg_router_ttft_seconds histogram\n");
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        char label[128];
        snprintf(label, sizeof(label), "router_type=\"http\",backend_type=\"regular\",endpoint=\"%s\"",
                 paths[i].path);
        hist1(o, "smg_router_ttft_seconds", label, th, n, ttfb_of, (int)paths[i].r, 0);
    }
    put(o,
        "# HELP smg_pd_prefill_duration_seconds The prefill leg of disaggregated requests, sent to answered.\n"
        "# TYPE smg_pd_prefill_duration_seconds histogram\n");
    hist1(o, "smg_pd_prefill_duration_seconds", "backend_type=\"pd\"", th, n, pd_prefill_of, 0, 0);
    put(o, "# HELP smg_pd_ttft_seconds Disaggregated requests: the pair sent to the decode's first byte.\n"
           "# TYPE smg_pd_ttft_seconds histogram\n");
    hist1(o, "smg_pd_ttft_seconds", "backend_type=\"pd\"", th, n, pd_ttft_of, 0, 0);
    put(o,
        "# HELP smg_pd_bootstrap_failures_total Disaggregated requests whose bootstrap fields could not be "
        "added (a body that is not an object, a malformed or too large batch).\n"
        "# TYPE smg_pd_bootstrap_failures_total counter\nsmg_pd_bootstrap_failures_total %llu\n",
        (unsigned long long)SUM_THREADS(st->pd_bootstrap_failures));
    put(o,
        "# HELP smg_pd_kv_transfer_failures_total vLLM's protocol: prefill answers without kv_transfer_params "
        "(the decode then runs the whole request).\n"
        "# TYPE smg_pd_kv_transfer_failures_total counter\nsmg_pd_kv_transfer_failures_total %llu\n",
        (unsigned long long)SUM_THREADS(st->pd_kv_transfer_failures));
    int pool[3] = {0, 0, 0};
    for (int i = 0; i < s->n_all; i++)
        pool[s->all[i]->role >= 0 && s->all[i]->role <= 2 ? s->all[i]->role : 0]++;
    put(o,
        "# HELP smg_worker_pool_size Registered workers by worker_type (sgl-model-gateway's name).\n"
        "# TYPE smg_worker_pool_size gauge\nsmg_worker_pool_size{worker_type=\"regular\"} %d\n"
        "smg_worker_pool_size{worker_type=\"prefill\"} %d\nsmg_worker_pool_size{worker_type=\"decode\"} %d\n",
        pool[IG_ROLE_REGULAR], pool[IG_ROLE_PREFILL], pool[IG_ROLE_DECODE]);
    static const char *const wm[][2] = {
        {"smg_worker_requests_active", "Requests in flight on the worker (sgl-model-gateway's name)."},
        {"smg_worker_health", "1 healthy, 0 not (sgl-model-gateway's name)."},
        {"smg_worker_cb_state", "Circuit breaker: 0 closed, 1 open, 2 half-open (sgl-model-gateway's name)."},
    };
    for (size_t m = 0; m < sizeof(wm) / sizeof(wm[0]); m++) {
        put(o, "# HELP %s %s\n# TYPE %s gauge\n", wm[m][0], wm[m][1], wm[m][0]);
        for (int i = 0; i < s->n_all; i++) {
            ig_worker *w = s->all[i];
            long v = m == 0   ? (long)ig_worker_inflight(w)
                     : m == 1 ? atomic_load(&w->health) == IG_HEALTH_UP
                              : (long)atomic_load(&w->breaker);
            put(o, "%s{worker=\"%s\"} %ld\n", wm[m][0], w->url, v);
        }
    }
}

int ig_metrics_render(ig_buf *o, ig_thread *th, int n, const ig_snapshot *s)
{
    put(o, "# HELP infergate_requests_total Requests answered, by route and status.\n"
           "# TYPE infergate_requests_total counter\n");
    for (int r = 0; r < IG_R_N; r++)
        for (int k = 0; k < IG_STATUS_N; k++) {
            uint64_t v = SUM_THREADS(st->requests[r][k]);
            if (!v)
                continue;
            char code[8];
            if (k < 18)
                snprintf(code, sizeof(code), "%d", ig_status_code_at(k));
            else
                snprintf(code, sizeof(code), "%s", k == 19 ? other_names[4] : "other");
            put(o, "infergate_requests_total{route=\"%s\",status=\"%s\"} %llu\n", ig_route_name(r), code,
                (unsigned long long)v);
        }
    put(o, "# HELP infergate_request_duration_seconds Time from the whole request read to the "
           "response's end.\n# TYPE infergate_request_duration_seconds histogram\n");
    hist(o, "infergate_request_duration_seconds", th, n, duration_of);
    put(o, "# HELP infergate_time_to_first_byte_seconds Time from the request read to the first "
           "response byte from the worker (first token for streams).\n"
           "# TYPE infergate_time_to_first_byte_seconds histogram\n");
    hist(o, "infergate_time_to_first_byte_seconds", th, n, ttfb_of);

    struct {
        const char *name, *help;
        uint64_t v;
    } counters[] = {
        {"infergate_retries_total", "Requests sent again to another worker or connection.",
         SUM_THREADS(st->retries)},
        {"infergate_retries_denied_total", "Retries refused by the retry budget.",
         SUM_THREADS(st->retries_denied)},
        {"infergate_client_connections_total", "Client connections accepted.", SUM_THREADS(st->client_conns)},
        {"infergate_client_aborts_total", "Requests whose client left before the response ended.",
         SUM_THREADS(st->client_aborts)},
        {"infergate_client_connections_refused_total",
         "Client connections refused (503, closed) over --max-client-connections.",
         SUM_THREADS(st->client_conns_refused)},
        {"infergate_retry_backoffs_total",
         "Retries that waited out --retry-initial-backoff-ms (and growth) first.",
         SUM_THREADS(st->retry_backoffs)},
        {"infergate_client_tls_failures_total",
         "Client TLS handshakes that failed (plain HTTP on the TLS port too).",
         SUM_THREADS(st->client_tls_failures)},
        {"infergate_response_bytes_total", "Bytes sent to clients.", SUM_THREADS(st->bytes_out)},
        {"infergate_upstream_connections_opened_total", "Worker connections opened.",
         SUM_THREADS(st->conns_opened)},
        {"infergate_upstream_connections_reused_total", "Requests sent on a pooled connection.",
         SUM_THREADS(st->conns_reused)},
        {"infergate_upstream_connections_closed_total", "Worker connections closed.",
         SUM_THREADS(st->conns_closed)},
        {"infergate_rejected_queue_full_total", "Requests refused with 429: the queue was full.",
         SUM_THREADS(st->rejected_queue_full)},
        {"infergate_queue_timeouts_total", "Requests answered 503 after waiting --queue-timeout-secs.",
         SUM_THREADS(st->queue_timeouts)},
        {"infergate_requeued_overload_total", "Requests sent back to the queue by a worker's 503/429.",
         SUM_THREADS(st->requeued_overload)},
        {"infergate_pd_requests_total", "Prefill/decode pairs sent (retries too).",
         SUM_THREADS(st->pd_requests)},
        {"infergate_pd_prefill_failures_total",
         "Prefill legs that failed: no connection, a broken answer or an error status.",
         SUM_THREADS(st->pd_prefill_failures)},
        {"infergate_pd_pair_retries_total",
         "Pairs sent again after one half failed before the client saw a byte.",
         SUM_THREADS(st->pd_pair_retries)},
        {"infergate_affinity_hits_total",
         "Requests routed by affinity: a cached prefix (cache_aware) or a routing key's worker (consistent_hash).",
         SUM_THREADS(st->affinity_hits)},
        {"infergate_affinity_misses_total",
         "Affinity requests routed by load instead: no usable prefix or key, imbalance, or a full worker.",
         SUM_THREADS(st->affinity_misses)},
        {"infergate_routing_key_hits_total",
         "Requests sent to the worker their routing key was given (manual).", SUM_THREADS(st->sticky_hits)},
        {"infergate_routing_key_assigned_total",
         "Routing keys given a worker: new, or theirs was gone (manual, --assignment-mode).",
         SUM_THREADS(st->sticky_new)},
        {"infergate_routing_keys_unremembered_total",
         "New routing keys routed unremembered: --max-routing-keys reached.", ig_sticky_full_total()},
    };
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        put(o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", counters[i].name, counters[i].help,
            counters[i].name, counters[i].name, (unsigned long long)counters[i].v);

    share_metrics(o);
    put(o,
        "# HELP infergate_queue_depth Requests waiting for a worker slot.\n"
        "# TYPE infergate_queue_depth gauge\ninfergate_queue_depth %d\n",
        ig_admission_depth());
    put(o,
        "# HELP infergate_client_connections Client connections open now.\n"
        "# TYPE infergate_client_connections gauge\ninfergate_client_connections %d\n",
        ig_h1conn_count());
    put(o,
        "# HELP infergate_routing_keys Routing keys remembered with their worker (manual).\n"
        "# TYPE infergate_routing_keys gauge\ninfergate_routing_keys %d\n"
        "# HELP smg_manual_policy_cache_entries sgl-model-gateway's name for infergate_routing_keys.\n"
        "# TYPE smg_manual_policy_cache_entries gauge\nsmg_manual_policy_cache_entries %d\n",
        ig_sticky_count(), ig_sticky_count());
    put(o,
        "# HELP infergate_sessions Sessions pinned to a worker (AReaL).\n"
        "# TYPE infergate_sessions gauge\ninfergate_sessions %d\n",
        ig_sessions_count());
    put(o, "# HELP infergate_queue_wait_seconds Time requests waited for a worker slot.\n"
           "# TYPE infergate_queue_wait_seconds histogram\n");
    hist1(o, "infergate_queue_wait_seconds", "", th, n, queue_wait_of, 0, 1);
    put(o,
        "# HELP infergate_workers Registered workers.\n# TYPE infergate_workers gauge\n"
        "infergate_workers %d\n",
        s->n_all);
    put(o,
        "# HELP infergate_workers_routable Workers that take requests now.\n"
        "# TYPE infergate_workers_routable gauge\ninfergate_workers_routable %d\n",
        s->n_routable);
    static const char *const wm[][3] = {
        {"infergate_worker_inflight", "gauge", "Requests in flight on the worker."},
        {"infergate_worker_healthy", "gauge", "1 when the last health checks passed."},
        {"infergate_worker_breaker_state", "gauge", "0 closed, 1 open, 2 half-open."},
        {"infergate_worker_max_inflight", "gauge", "The worker's in-flight cap (0: none)."},
        {"infergate_worker_requests_total", "counter", "Requests sent to the worker."},
        {"infergate_worker_failures_total", "counter", "Requests the worker failed."},
        {"infergate_worker_connect_failures_total", "counter", "Failed connects to the worker."},
        {"infergate_worker_responses_5xx_total", "counter", "5xx answers from the worker."},
        {"infergate_worker_tls_handshakes_total", "counter", "TLS handshakes with the worker, full ones."},
        {"infergate_worker_tls_resumed_total", "counter",
         "TLS handshakes with the worker that resumed a session."},
    };
    for (size_t m = 0; m < sizeof(wm) / sizeof(wm[0]); m++) {
        put(o, "# HELP %s %s\n# TYPE %s %s\n", wm[m][0], wm[m][2], wm[m][0], wm[m][1]);
        for (int i = 0; i < s->n_all; i++) {
            ig_worker *w = s->all[i];
            uint64_t v = 0;
            switch (m) {
            case 0: v = ig_worker_inflight(w); break;
            case 1: v = atomic_load(&w->health) == IG_HEALTH_UP; break;
            case 2: v = (uint64_t)atomic_load(&w->breaker); break;
            case 3: v = (uint64_t)atomic_load(&w->max_inflight); break;
            case 4: v = rd(&w->stats.requests); break;
            case 5: v = rd(&w->stats.failures); break;
            case 6: v = rd(&w->stats.connect_failures); break;
            case 7: v = rd(&w->stats.responses_5xx); break;
            case 8: v = rd(&w->stats.tls_full); break;
            default: v = rd(&w->stats.tls_resumed); break;
            }
            put(o, "%s{worker=\"w%llu\",url=\"%s\"} %llu\n", wm[m][0], (unsigned long long)w->id, w->url,
                (unsigned long long)v);
        }
    }
    smg_names(o, th, n, s);
    return 0;
}
