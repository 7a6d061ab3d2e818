/* Affinity policies, as pure decisions over a candidate array:
 * cache_aware (a prompt's cached prefix, see ig_prefix.h) and
 * consistent_hash (a routing key on a ring with bounded load). */
#ifndef IG_AFFINITY_H
#define IG_AFFINITY_H
#include <stddef.h>
#include <stdint.h>

#include "../registry/ig_registry.h"
#include "ig_policy.h"
#include "ig_prefix.h"

/* Bounded load, for both: a worker above this times the mean in-flight
 * (counting the new request) passes the prompt or key on. */
#define IG_AFFINITY_LOAD_BOUND 1.25
/* ring points per worker: enough that each holds close to 1/N of the keys */
#define IG_RING_VNODES 160

/* sgl-model-gateway's knobs, with its meanings */
typedef struct ig_cache_aware_cfg {
    double cache_threshold;       /* matched share of the prompt that earns affinity */
    int balance_abs_threshold;    /* the fleet is imbalanced when max - min in-flight exceeds this */
    double balance_rel_threshold; /* ... and max exceeds min times this */
} ig_cache_aware_cfg;

/* 1 when w may take one more request now (its cap); the caller's admission rule. */
typedef int (*ig_room_fn)(const ig_worker *w, void *arg);

/**
 * cache_aware: the least-loaded worker holding the longest cached prefix
 * when that prefix is over the threshold, the fleet is balanced and that
 * worker is within the load bound; otherwise the least-loaded worker. Workers without room are never
 * chosen. Returns an index into cand, or -1 when none has room; *affinity
 * says whether the prefix decided.
 */
int ig_cache_aware_pick(const ig_cache_aware_cfg *cfg, ig_policy_state *st, ig_worker *const *cand, int n,
                        int matched_blocks, size_t prompt_len, const ig_holders *holders, ig_room_fn room,
                        void *arg, int *affinity);

/**
 * consistent_hash with bounded load: the key's worker on the ring, or the
 * next distinct one clockwise while a worker is above bound times the mean
 * in-flight (or has no room). -1 when nobody can take it. *walked (may be
 * NULL): 1 when that is not the key's own worker.
 */
int ig_ring_pick(const ig_ring *r, uint64_t key, ig_worker *const *cand, int n, double bound, ig_room_fn room,
                 void *arg, int *walked);
#endif
