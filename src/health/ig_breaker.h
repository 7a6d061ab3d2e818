/* Passive failure detection: a circuit breaker per worker, driven by what
 * the data path sees. Loop threads report outcomes with atomics only; the
 * control thread ends cool-downs and republishes the snapshot. */
#ifndef IG_BREAKER_H
#define IG_BREAKER_H
#include <stdint.h>

#include "../registry/ig_registry.h"

typedef struct ig_breaker_config {
    int enabled;
    int failure_threshold;         /* consecutive failures that open the circuit */
    int success_threshold;         /* half-open successes that close it again */
    uint64_t cooldown_ms;          /* open this long, then half-open */
    uint64_t window_ms;            /* failures further apart than this do not add up (0: they always do) */
    uint64_t failure_statuses[10]; /* bit s: an answer with status s is a failure */
} ig_breaker_config;

void ig_breaker_configure(const ig_breaker_config *cfg);

/** The worker failed a request: connect error, reset, timeout or garbage
 * before an answer, or a status of failure_statuses (not what one client's
 * bad request can cause: by default only 502 and 504). Returns 1 when
 * the circuit opened (the caller pokes the control thread). */
int ig_breaker_failure(ig_worker *w, uint64_t now_ms);
/** The worker answered (any status that is not a failure). Returns 1 when
 * the circuit closed. */
int ig_breaker_success(ig_worker *w);
/** May a request go to w now? Half-open admits one probe at a time; *probe
 * is set when this request holds the probe slot (release with ig_breaker_probe_done). */
int ig_breaker_admit(ig_worker *w, int *probe);
void ig_breaker_probe_done(ig_worker *w);
/** Control thread: open circuits whose cool-down ended become half-open. 1 if any changed. */
int ig_breaker_cooldown_over(ig_worker *w, uint64_t now_ms);
/** 1 when a response status counts as the worker failing (failure_statuses). */
int ig_breaker_is_failure_status(int status);
#endif
