#include "ig_affinity.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* the whole cluster's view when gateways share loads (--nats-servers):
 * one gateway's own share is too few requests to bound a worker's load */
static int load(const ig_worker *w)
{
    return (int)ig_worker_inflight(w) + atomic_load_explicit(&w->remote_inflight, memory_order_relaxed);
}

/* Room under the load bound. Other gateways' counts lag by their report
 * interval and a hop, so a request that just ended through another gateway
 * is still counted, most often the very turn whose answer this request
 * follows: with remote counts in, the worker gets that one slot back. */
static int under_bound(const ig_worker *w, int cap)
{
    return load(w) + 1 <= cap + (atomic_load_explicit(&w->remote_inflight, memory_order_relaxed) > 0);
}

/* least-loaded worker with room (among holders under cap only, if given);
 * a random start breaks ties */
static int least_loaded(ig_policy_state *st, ig_worker *const *cand, int n, const ig_holders *only, int cap,
                        ig_room_fn room, void *arg)
{
    int start = (int)ig_policy_rand(st, (uint32_t)n), best = -1, best_load = 0;
    for (int i = 0; i < n; i++) {
        int j = (start + i) % n, l = load(cand[j]);
        if ((best < 0 || l < best_load) &&
            (!only || (ig_holders_has(only, cand[j]->id) && under_bound(cand[j], cap))) &&
            room(cand[j], arg)) {
            best = j;
            best_load = l;
        }
    }
    return best;
}

int ig_cache_aware_pick(const ig_cache_aware_cfg *cfg, ig_policy_state *st, ig_worker *const *cand, int n,
                        int matched_blocks, size_t prompt_len, const ig_holders *holders, ig_room_fn room,
                        void *arg, int *affinity)
{
    *affinity = 0;
    if (n <= 0)
        return -1;
    int lo = load(cand[0]), hi = lo;
    long total = lo;
    for (int i = 1; i < n; i++) {
        int l = load(cand[i]);
        lo = l < lo ? l : lo;
        hi = l > hi ? l : hi;
        total += l;
    }
    int imbalanced = hi - lo > cfg->balance_abs_threshold && hi > lo * cfg->balance_rel_threshold;
    double matched = (double)matched_blocks * IG_PREFIX_BLOCK;
    if (!imbalanced && matched_blocks > 0 && matched > cfg->cache_threshold * (double)prompt_len) {
        int held = 0;
        for (int i = 0; i < n && held < 2; i++)
            held += ig_holders_has(holders, cand[i]->id);
        if (held >= 2) {
            /* a prefix several workers hold (a shared system prompt): the
             * least-loaded worker, a holder when it is no busier, so new
             * conversations spread instead of piling onto the holders */
            int h = least_loaded(st, cand, n, holders, INT_MAX, room, arg);
            int any = least_loaded(st, cand, n, NULL, 0, room, arg);
            if (h >= 0 && (any < 0 || load(cand[h]) <= load(cand[any]))) {
                *affinity = 1;
                return h;
            }
            return any;
        }
        /* one holder (a conversation's own history): stay with it within
         * the load bound */
        int cap = (int)ceil(IG_AFFINITY_LOAD_BOUND * (double)(total + 1) / (double)n);
        int i = least_loaded(st, cand, n, holders, cap, room, arg);
        if (i >= 0) {
            *affinity = 1;
            return i;
        }
    }
    return least_loaded(st, cand, n, NULL, 0, room, arg);
}

/* ---- consistent hashing ---- */

int ig_ring_pick(const ig_ring *r, uint64_t key, ig_worker *const *cand, int n, double bound, ig_room_fn room,
                 void *arg, int *walked)
{
    if (n <= 0 || r->n == 0)
        return -1;
    long total = 0;
    for (int i = 0; i < n; i++)
        total += load(cand[i]);
    /* bounded load: nobody above bound times the mean, counting this request */
    int cap = (int)ceil(bound * (double)(total + 1) / (double)n);
    int lo = 0, hi = r->n;
    while (lo < hi) { /* first point at or after the key */
        int mid = lo + (hi - lo) / 2;
        if (r->point[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (int k = 0; k < r->n; k++) {
        uint32_t i = r->idx[(lo + k) % r->n];
        if ((int)i < n && under_bound(cand[i], cap) && room(cand[i], arg)) {
            if (walked)
                *walked = i != r->idx[lo % r->n];
            return (int)i;
        }
    }
    return -1;
}
