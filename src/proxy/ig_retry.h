/* The retry budget (Finagle's and Envoy's idea): retries in flight may be at
 * most a share of the requests in flight, so a failing fleet is not hit
 * twice as hard; at least two may always run. Plus the per-request limits.
 * Threads: the two counts are gateway-wide relaxed atomics, any loop
 * thread; a request's own flags are its thread's. */
#ifndef IG_RETRY_H
#define IG_RETRY_H
#include <stdatomic.h>
#include <stdint.h>

typedef struct ig_retry_budget {
    atomic_int inflight; /* requests in the proxy */
    atomic_int retrying; /* of those, ones that have been retried */
} ig_retry_budget;

typedef enum {
    IG_RETRY_OK,
    IG_RETRY_MAX_TRIES, /* the request's own limit (--retry-max-retries, or the tried-list's size) */
    IG_RETRY_BUDGET,    /* the gateway's retry budget is spent */
} ig_retry_verdict;

/** A request enters the proxy / leaves it (retried: it was counted as retrying). */
void ig_retry_enter(ig_retry_budget *b);
void ig_retry_leave(ig_retry_budget *b, int retried);
/** May a request that has made ntried attempts try again? retried: it is
 * counted already (no new budget); refused: its last connect was refused,
 * which put no load on anyone. */
ig_retry_verdict ig_retry_allowed(ig_retry_budget *b, double ratio, uint32_t max_retries, int max_tries,
                                  int ntried, int retried, int refused);
/** The request's first retry: it counts against the budget from now on. */
void ig_retry_mark(ig_retry_budget *b);
#endif
