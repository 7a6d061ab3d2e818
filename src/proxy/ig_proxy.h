/* The proxy: for each request, pick a worker (policy, affinity, caps,
 * breaker), claim its slot or queue, run the exchange through the upstream
 * client, stream the answer back through the request's response ops, and
 * decide what may be retried (the retry budget, idempotence, requeue on an
 * overload answer). It never sees which protocol the client or the worker
 * speaks.
 *
 * Threads: a request is handled on its loop thread; the retry budget's two
 * counters are gateway-wide relaxed atomics. */
#ifndef IG_PROXY_H
#define IG_PROXY_H
#include "ig_request.h"

/* What the proxy tells the layers above it (the app wires them to the
 * control thread). Called on loop threads; both must be cheap and
 * thread-safe. */
typedef struct ig_proxy_hooks {
    void (*breaker_changed)(void);   /* a breaker opened or closed: republish soon */
    void (*pin_admin)(ig_worker *w); /* the admin key's first request went to w (AReaL) */
} ig_proxy_hooks;

/* --assignment-mode: how the manual policy gives a new routing key its worker */
typedef enum { IG_ASSIGN_RANDOM, IG_ASSIGN_MIN_LOAD, IG_ASSIGN_MIN_GROUP } ig_assignment;

typedef struct ig_proxy_config {
    ig_policy_kind policy;
    ig_policy_kind prefill_policy, decode_policy; /* prefill/decode disaggregation: each pool's */
    int pd_vllm; /* --pd-protocol vllm: the prefill first, then the decode with its kv_transfer_params */
    int sticky;  /* routing keys keep their worker (--policy manual, --routing-key-override) */
    ig_assignment assignment;    /* ... a new key's */
    uint32_t retry_max_retries;  /* other workers tried after a safe failure */
    int retry_non_idempotent;    /* a POST whose reused connection died after going out may go again */
    double retry_budget_ratio;   /* retries in flight at most this share of requests in flight */
    double request_timeout_secs; /* the deadline once a request leaves the queue */
    double queue_timeout_secs;   /* the longest wait for a worker slot */
    double cache_threshold;      /* cache_aware (sgl-model-gateway's meanings) */
    uint32_t balance_abs_threshold;
    double balance_rel_threshold;
    /* a retry after a failure waits first (sgl-model-gateway's backoff): initial x multiplier^(n-1),
     * at most max, +-jitter; 0: at once */
    double retry_initial_backoff_ms, retry_max_backoff_ms, retry_backoff_multiplier, retry_jitter_factor;
} ig_proxy_config;

/** Before the loop threads run. */
void ig_proxy_configure(const ig_proxy_config *cfg, const ig_proxy_hooks *hooks);
/** Take r (a data request, authorized): scan its body, pick, send. It ends
 * through r->res, always; r->h is the proxy's handler from here on. */
void ig_proxy_start(ig_request *r);
/** Take r as it is (any method, any body) to worker group `group`
 * (0: the LLM fleet): balanced, admitted and retried like an LLM request,
 * with no model and no body scan. */
void ig_proxy_forward(ig_request *r, int group);
/** What the client side calls: resume (drained), stop (left, timed out), finish. */
extern const ig_handler ig_proxy_handler;
#endif
