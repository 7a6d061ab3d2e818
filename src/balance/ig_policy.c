#include "ig_policy.h"

#include <errno.h>
#include <string.h>

static const char *const names[] = {"round_robin", "random",          "power_of_two", "least_load",
                                    "cache_aware", "consistent_hash", "manual"};
#define N_POLICIES (int)(sizeof(names) / sizeof(names[0]))

/* One cursor for the whole process, so round robin is exact across threads. */
static atomic_uint_fast64_t rr_cursor;

int ig_policy_from_name(const char *name, ig_policy_kind *out)
{
    if (strcmp(name, "consistent_hashing") == 0) /* sgl-model-gateway's name */
        name = "consistent_hash";
    for (int i = 0; i < N_POLICIES; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (ig_policy_kind)i;
            return 0;
        }
    return -EINVAL;
}

const char *ig_policy_name(ig_policy_kind k)
{
    return names[k];
}

void ig_policy_state_init(ig_policy_state *st, uint64_t seed)
{
    st->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

uint32_t ig_policy_rand(ig_policy_state *st, uint32_t n)
{
    /* xorshift64*: plenty for load spreading, and no shared state */
    uint64_t x = st->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    st->rng = x;
    return (uint32_t)(((x * 0x2545F4914F6CDD1Dull) >> 32) * (uint64_t)n >> 32);
}

static int load(ig_worker *const w)
{
    return (int)ig_worker_inflight(w);
}

int ig_policy_pick(ig_policy_kind k, ig_policy_state *st, ig_worker *const *cand, int n)
{
    if (n <= 0)
        return -1;
    if (n == 1)
        return 0;
    switch (k) {
    case IG_POLICY_ROUND_ROBIN:
        return (int)(atomic_fetch_add_explicit(&rr_cursor, 1, memory_order_relaxed) % (uint64_t)n);
    case IG_POLICY_MANUAL: /* without a routing key: --assignment-mode's default */
    case IG_POLICY_RANDOM: return (int)ig_policy_rand(st, (uint32_t)n);
    case IG_POLICY_POWER_OF_TWO: {
        int a = (int)ig_policy_rand(st, (uint32_t)n);
        int b = (int)ig_policy_rand(st, (uint32_t)n - 1);
        if (b >= a)
            b++; /* two distinct workers */
        return load(cand[b]) < load(cand[a]) ? b : a;
    }
    case IG_POLICY_LEAST_LOAD:
    default: {
        /* start at a random offset so ties do not all land on the first worker */
        int start = (int)ig_policy_rand(st, (uint32_t)n), best = start, best_load = load(cand[start]);
        for (int i = 1; i < n && best_load > 0; i++) {
            int j = (start + i) % n, l = load(cand[j]);
            if (l < best_load) {
                best = j;
                best_load = l;
            }
        }
        return best;
    }
    }
}
