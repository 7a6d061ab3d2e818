/* Load-balancing policies behind one function: pick a worker among candidates. */
#ifndef IG_POLICY_H
#define IG_POLICY_H
#include <stdint.h>

#include "../registry/ig_registry.h"

typedef enum ig_policy_kind {
    IG_POLICY_ROUND_ROBIN,
    IG_POLICY_RANDOM,
    IG_POLICY_POWER_OF_TWO,
    IG_POLICY_LEAST_LOAD,
    IG_POLICY_CACHE_AWARE,     /* prefix affinity (ig_affinity.h); least_load without a prompt */
    IG_POLICY_CONSISTENT_HASH, /* a routing key on a ring (ig_affinity.h); least_load without a key */
    IG_POLICY_MANUAL,          /* a routing key keeps its first worker (ig_sticky.h); random without a key */
} ig_policy_kind;

/* Per-thread state: policies never share mutable state across threads except
 * the workers' atomic in-flight counters (and the round-robin cursor). */
typedef struct ig_policy_state {
    uint64_t rng;
} ig_policy_state;

/** Parse a policy name; 0 or -EINVAL. */
int ig_policy_from_name(const char *name, ig_policy_kind *out);
const char *ig_policy_name(ig_policy_kind k);
void ig_policy_state_init(ig_policy_state *st, uint64_t seed);
/** Uniform random number in [0, n). */
uint32_t ig_policy_rand(ig_policy_state *st, uint32_t n);
/** Index into cand[0..n) of the chosen worker, or -1 when n == 0. */
int ig_policy_pick(ig_policy_kind k, ig_policy_state *st, ig_worker *const *cand, int n);
#endif
