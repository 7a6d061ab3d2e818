/* Counters and histograms every layer writes. Each loop thread owns its
 * ig_thread_stats and is their only writer (a relaxed load and store, no
 * locked instruction); a scrape sums the threads' counters. */
#ifndef IG_STATS_H
#define IG_STATS_H
#include <stdatomic.h>
#include <stdint.h>

typedef enum ig_route {
    IG_R_CHAT,
    IG_R_COMPLETIONS,
    IG_R_EMBEDDINGS,
    IG_R_GENERATE,
    IG_R_API, /* the other model APIs sgl-model-gateway routes by "model": rerank, responses, messages, ... */
    IG_R_SESSION, /* AReaL session calls that go to the session's worker */
    IG_R_MODELS,
    IG_R_PROBE,
    IG_R_METRICS,
    IG_R_ADMIN,
    IG_R_OTHER,
    IG_R_FORWARD, /* --forward-paths and worker groups: any API, as it is */
    IG_R_N
} ig_route;

#define IG_STATUS_N 20
#define IG_HIST_N 17 /* finite buckets; one more for +Inf */

typedef atomic_uint_fast64_t ig_counter;

typedef struct ig_hist {
    ig_counter bucket[IG_HIST_N + 1];
    ig_counter sum_us;
} ig_hist;

typedef struct ig_thread_stats {
    ig_counter requests[IG_R_N][IG_STATUS_N];
    ig_hist duration[IG_R_N];
    ig_hist ttfb[IG_R_N];
    ig_hist queue_wait;
    ig_counter rejected_queue_full, queue_timeouts, requeued_overload;
    ig_counter affinity_hits, affinity_misses; /* cache_aware / consistent_hash decisions */
    ig_counter sticky_hits, sticky_new;        /* manual: a remembered key's worker / a new one given */
    ig_counter retries, retries_denied, client_conns, client_aborts, bytes_out;
    ig_counter client_conns_refused; /* over --max-client-connections */
    ig_counter client_tls_failures;
    ig_counter retry_backoffs;
    /* retries that waited out a backoff first */ /* client TLS handshakes that failed (plain HTTP on the port too) */
    ig_counter conns_opened, conns_reused, conns_closed;
    /* prefill/decode disaggregation */
    ig_hist pd_prefill, pd_ttft; /* the prefill leg's time; dispatch to the decode's first byte */
    ig_counter pd_requests;      /* pairs sent */
    ig_counter pd_prefill_failures, pd_pair_retries, pd_bootstrap_failures;
    ig_counter pd_kv_transfer_failures; /* vLLM: a prefill's answer without kv_transfer_params */
} ig_thread_stats;

/* single writer per counter: no atomic read-modify-write needed */
static inline void ig_count(ig_counter *c, uint64_t v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v, memory_order_relaxed);
}

const char *ig_route_name(ig_route r);
/** Index of a status code in the per-route table. */
int ig_status_index(int status);
void ig_hist_observe(ig_hist *h, uint64_t us);
/** The finite bucket bounds, in seconds (IG_HIST_N of them). */
extern const double ig_hist_bounds[IG_HIST_N];
/** The status code at index i of the per-route table (0: a class, see ig_status_class_name). */
int ig_status_code_at(int i);
#endif
