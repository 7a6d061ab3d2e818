/* The pick (ig_pick.h). */
#include "ig_pick.h"

#include "../balance/ig_affinity.h"
#include "../balance/ig_prefix.h"
#include "../balance/ig_sticky.h"
#include "../health/ig_breaker.h"

static int tried(const ig_request *r, const ig_worker *w)
{
    for (int t = 0; t < r->ntried; t++)
        if (r->tried[t] == w)
            return 1;
    return 0;
}

/* The workers that may serve r's model, from the snapshot s. */
static int candidates(ig_request *r, const ig_snapshot *s, ig_worker *const **cand, int *known,
                      const ig_ring **ring)
{
    const ig_body_fields *f = &r->fields;
    if (r->group >= 0) { /* forwarded: any routable worker of its group, no model, no ring */
        *ring = NULL;
        return ig_snapshot_group(s, r->group, cand, known);
    }
    return ig_snapshot_candidates_ring(s, f->has_model ? f->model : NULL, f->model_len, cand, known, ring);
}

static int has_room(const ig_worker *w, void *now_ms)
{
    return ig_admission_has_room(w, *(uint64_t *)now_ms);
}

/* The routing key of consistent_hash: a header, else the body's "user". */
static int routing_key(ig_request *r, const char **key, size_t *len)
{
    if (r->routing_key.p) {
        *key = r->routing_key.p;
        *len = r->routing_key.len;
        return *len > 0;
    }
    *key = r->fields.user.p;
    *len = r->fields.user.len;
    return *len > 0;
}

/* cache_aware and consistent_hash: the affinity worker with its slot claimed,
 * or NULL to let the plain least-load pick decide. The prompt's block keys
 * stay in a per-thread buffer between the match and the record. */
static ig_worker *affinity_choose(ig_request *r, const ig_proxy_config *cfg, ig_worker *const *cand, int n,
                                  const ig_ring *ring, uint64_t now, int *probe)
{
    static _Thread_local ig_prefix_query q;
    const ig_body_fields *f = &r->fields;
    int i, aff = 0, depth = 0, cache = cfg->policy == IG_POLICY_CACHE_AWARE;
    ig_holders holders;
    if (cache) {
        if (!f->n_text)
            return NULL;
        ig_prefix_hash(f->text, f->n_text, f->has_model ? f->model : NULL, f->model_len, &q);
        depth = ig_prefix_match(&q, &holders);
        ig_cache_aware_cfg cc = {cfg->cache_threshold, (int)cfg->balance_abs_threshold,
                                 cfg->balance_rel_threshold};
        i = ig_cache_aware_pick(&cc, &r->px->pol, cand, n, depth, q.len, &holders, has_room, &now, &aff);
    } else {
        const char *key;
        size_t len;
        if (!routing_key(r, &key, &len))
            return NULL;
        int walked = 0;
        i = ig_ring_pick(ring, ig_ring_key(key, len), cand, n, IG_AFFINITY_LOAD_BOUND, has_room, &now,
                         &walked);
        aff = i >= 0 && !walked; /* moved on by the bound: not the key's worker */
        if (r->px->share)        /* loads are shared: the control thread reports them while requests come */
            ig_prefix_share_touch(r->px->share);
    }
    ig_count(aff ? &r->px->stats->affinity_hits : &r->px->stats->affinity_misses, 1);
    if (i < 0 || !ig_admission_claim(cand[i], now))
        return NULL;
    if (!ig_breaker_admit(cand[i], probe)) {
        ig_admission_release(r->px->admq, cand[i]);
        return NULL;
    }
    if (cache) { /* it will hold this prompt's prefix now */
        ig_prefix_insert(&q, cand[i]->id, (uint32_t)(now / 100));
        /* the other gateways hear only the new blocks: the held ones went out when they were new */
        int from = ig_holders_has(&holders, cand[i]->id) ? depth : 0;
        if (r->px->share)
            ig_prefix_share_put(r->px->share, cand[i]->url_key, q.key + from, q.n - from);
    }
    return cand[i];
}

static int index_of(ig_worker *const *cand, int n, uint64_t id)
{
    for (int i = 0; id && i < n; i++)
        if (cand[i]->id == id)
            return i;
    return -1;
}

/* A new key's worker (--assignment-mode): random, fewest in flight, or
 * fewest keyed requests in flight; ties broken at random. */
static int assign(ig_request *r, const ig_proxy_config *cfg, ig_worker *const *cand, int n)
{
    if (cfg->assignment == IG_ASSIGN_RANDOM)
        return (int)ig_policy_rand(&r->px->pol, (uint32_t)n);
    int best = -1, ties = 0;
    uint32_t low = UINT32_MAX;
    for (int i = 0; i < n; i++) {
        uint32_t v = cfg->assignment == IG_ASSIGN_MIN_LOAD
                         ? ig_worker_inflight(cand[i])
                         : (uint32_t)atomic_load_explicit(&cand[i]->keyed_inflight, memory_order_relaxed);
        if (v < low) {
            low = v;
            best = i;
            ties = 1;
        } else if (v == low && ig_policy_rand(&r->px->pol, (uint32_t)++ties) == 0) {
            best = i;
        }
    }
    return best;
}

/* sgl's manual policy: the key's remembered worker if it is a candidate,
 * else its other one, else a new one by --assignment-mode (remembered).
 * A remembered worker at its cap makes the request wait (*full), not move. */
static ig_worker *sticky_choose(ig_request *r, const ig_proxy_config *cfg, ig_worker *const *cand, int n,
                                uint64_t now, int *probe, int *full)
{
    const char *key = r->routing_key.p;
    size_t len = r->routing_key.len;
    ig_sticky_entry *e = ig_sticky_get(key, len, now);
    int i = -1;
    if (e && (i = index_of(cand, n, atomic_load_explicit(&e->cand[0], memory_order_relaxed))) < 0)
        i = index_of(cand, n, atomic_load_explicit(&e->cand[1], memory_order_relaxed));
    if (i < 0) {
        i = assign(r, cfg, cand, n);
        if (e) {
            ig_sticky_reassign(e, cand[i]->id);
        } else if ((e = ig_sticky_insert(key, len, cand[i]->id, now))) {
            int first = index_of(cand, n, atomic_load_explicit(&e->cand[0], memory_order_relaxed));
            i = first >= 0 ? first : i; /* another thread gave the key a worker first */
        }
        ig_count(&r->px->stats->sticky_new, 1);
    } else {
        ig_count(&r->px->stats->sticky_hits, 1);
    }
    ig_worker *w = cand[i];
    if (!ig_admission_claim(w, now)) {
        *full = 1;
        return NULL;
    }
    if (!ig_breaker_admit(w, probe)) {
        ig_admission_release(r->px->admq, w);
        return NULL;
    }
    atomic_fetch_add_explicit(&w->keyed_inflight, 1, memory_order_relaxed);
    r->keyed = 1;
    return w;
}

/* A worker for r with its slot claimed, or NULL (*full: some worker would
 * do but all are at their cap). The first attempt picks straight from the
 * snapshot's array (O(1) for round_robin, random, power_of_two); only when
 * that pick is refused (cap, breaker, or a retry excluding tried workers) is
 * a filtered copy made. */
static ig_worker *choose(ig_request *r, const ig_proxy_config *cfg, ig_worker *const *cand, int n,
                         const ig_ring *ring, int *probe, int *full)
{
    static _Thread_local ig_worker *tmp[IG_MAX_WORKERS];
    ig_policy_kind policy = cfg->policy;
    uint64_t now = uv_now(r->px->loop);
    *probe = 0;
    *full = 0;
    if (n == 0)
        return NULL;
    if (r->ntried == 0 && cfg->sticky && r->routing_key.len && ig_sticky_enabled()) {
        ig_worker *w = sticky_choose(r, cfg, cand, n, now, probe, full);
        if (w || *full)
            return w;
    }
    if (r->ntried == 0 && ring && (policy == IG_POLICY_CACHE_AWARE || policy == IG_POLICY_CONSISTENT_HASH)) {
        ig_worker *w = affinity_choose(r, cfg, cand, n, ring, now, probe);
        if (w)
            return w;
        policy = IG_POLICY_LEAST_LOAD;
    }
    if (r->ntried == 0) {
        ig_worker *w = cand[ig_policy_pick(policy, &r->px->pol, cand, n)];
        if (ig_admission_claim(w, now)) {
            if (ig_breaker_admit(w, probe))
                return w;
            ig_admission_release(r->px->admq, w);
        }
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (tried(r, cand[i]) ||
            atomic_load_explicit(&cand[i]->breaker, memory_order_relaxed) == IG_BREAKER_OPEN)
            continue;
        if (!ig_admission_has_room(cand[i], now)) {
            *full = 1;
            continue;
        }
        tmp[m++] = cand[i];
    }
    while (m > 0) {
        int i = ig_policy_pick(policy, &r->px->pol, tmp, m);
        ig_worker *w = tmp[i];
        tmp[i] = tmp[--m];
        if (!ig_admission_claim(w, now)) {
            *full = 1; /* taken by another request since the scan */
            continue;
        }
        if (ig_breaker_admit(w, probe))
            return w;
        ig_admission_release(r->px->admq, w);
    }
    return NULL;
}

ig_pick_result ig_pick(ig_request *r, const ig_proxy_config *cfg, const ig_snapshot *s,
                       const ig_session *sess, ig_worker **out, int *probe)
{
    const ig_body_fields *f = &r->fields;
    const char *model = f->has_model ? f->model : NULL;
    ig_worker *const *cand;
    const ig_ring *ring = NULL; /* NULL: no affinity (a pinned session) */
    int known = 1, n, full = 0;
    *out = NULL;
    *probe = 0;
    if (sess) {
        /* the session's state lives on its worker: only that one, waiting
         * in the queue while it cannot take the request */
        cand = &sess->w;
        n = 1;
        if (r->ntried == 0 && (!ig_worker_routable(sess->w) || atomic_load(&sess->w->paused) ||
                               ig_snapshot_paused(s, model, f->model_len)))
            return IG_PICK_SESSION_WAIT;
    } else {
        n = candidates(r, s, &cand, &known, &ring);
    }
    if (r->ntried == 0) {
        /* tell "nobody serves this" (404) from "nobody can take it now" (503) */
        if (n == 0)
            return !s->group_all[r->group > 0 ? r->group : 0] ? IG_PICK_NO_WORKERS
                   : model && !known                          ? IG_PICK_UNKNOWN_MODEL
                                                              : IG_PICK_UNHEALTHY;
        /* a named group is not the fleet a trainer pauses */
        if (!sess && r->group <= 0 && ig_snapshot_paused(s, model, f->model_len))
            return IG_PICK_PAUSED;
        /* first in, first out: while others wait, a newcomer waits behind them */
        if (!r->wait.queued && ig_admission_waiting())
            return IG_PICK_BEHIND;
    }
    ig_worker *w = choose(r, cfg, cand, n, ring, probe, &full);
    if (!w)
        return full ? IG_PICK_FULL : r->ntried == 0 ? IG_PICK_COOLING : IG_PICK_EXHAUSTED;
    *out = w;
    return IG_PICK_OK;
}

ig_worker *ig_pick_other(ig_request *r, const ig_proxy_config *cfg, const ig_snapshot *s, int *probe)
{
    ig_worker *const *cand;
    const ig_ring *ring;
    int known, full;
    int n = candidates(r, s, &cand, &known, &ring);
    *probe = 0;
    return n ? choose(r, cfg, cand, n, NULL, probe, &full) : NULL;
}

/* One pool's worker for a disaggregated request, with its slot claimed. */
static ig_pick_result pool_pick(ig_request *r, const ig_proxy_config *cfg, ig_policy_kind policy,
                                const ig_snapshot *pool, int sticky, ig_worker **out, int *probe)
{
    const ig_body_fields *f = &r->fields;
    ig_worker *const *cand;
    const ig_ring *ring;
    int known = 0, full = 0, n = 0;
    *out = NULL;
    *probe = 0;
    if (pool)
        n = ig_snapshot_candidates_ring(pool, f->has_model ? f->model : NULL, f->model_len, &cand, &known,
                                        &ring);
    if (!n)
        return r->ntried                ? IG_PICK_EXHAUSTED
               : !pool                  ? IG_PICK_NO_WORKERS
               : f->has_model && !known ? IG_PICK_UNKNOWN_MODEL
                                        : IG_PICK_UNHEALTHY;
    ig_proxy_config c = *cfg;
    c.policy = policy;
    c.sticky = cfg->sticky && sticky;
    ig_worker *w = choose(r, &c, cand, n, ring, probe, &full);
    if (!w)
        return full ? IG_PICK_FULL : r->ntried == 0 ? IG_PICK_COOLING : IG_PICK_EXHAUSTED;
    *out = w;
    return IG_PICK_OK;
}

int ig_pick_pd_route(const ig_request *r, const ig_snapshot *s)
{
    const ig_body_fields *f = &r->fields;
    if (r->group >= 0 || !s->pd[0] || !s->pd[1] ||
        (r->route != IG_R_CHAT && r->route != IG_R_COMPLETIONS && r->route != IG_R_GENERATE))
        return 0;
    if (!f->has_model)
        return 1;
    ig_worker *const *cand;
    int known;
    ig_snapshot_candidates(s->pd[1], f->model, f->model_len, &cand, &known);
    if (known)
        return 1;
    /* a model only regular workers serve goes to them */
    ig_snapshot_candidates(s, f->model, f->model_len, &cand, &known);
    return !known;
}

ig_pick_result ig_pick_pd(ig_request *r, const ig_proxy_config *cfg, const ig_snapshot *s,
                          ig_worker **prefill, int *prefill_probe, ig_worker **decode, int *decode_probe)
{
    r->keyed = 0;
    const ig_body_fields *f = &r->fields;
    *prefill = *decode = NULL;
    if (r->ntried == 0) {
        if (ig_snapshot_paused(s, f->has_model ? f->model : NULL, f->model_len))
            return IG_PICK_PAUSED;
        if (!r->wait.queued && ig_admission_waiting())
            return IG_PICK_BEHIND;
    }
    /* a routing key sticks to its prefill worker, where its prefix is cached */
    ig_pick_result res = pool_pick(r, cfg, cfg->prefill_policy, s->pd[0], 1, prefill, prefill_probe);
    if (res != IG_PICK_OK)
        return res;
    /* r->keyed now tells of the prefill (ig_pd_prepare takes it); the decode's pick is not keyed */
    int keyed = r->keyed;
    res = pool_pick(r, cfg, cfg->decode_policy, s->pd[1], 0, decode, decode_probe);
    r->keyed = keyed;
    if (res != IG_PICK_OK) {
        ig_pick_release(r, *prefill, *prefill_probe, r->keyed);
        r->keyed = 0;
        *prefill = NULL;
    }
    return res;
}

void ig_pick_release(ig_request *r, ig_worker *w, int probe, int keyed)
{
    if (probe)
        ig_breaker_probe_done(w);
    if (keyed)
        atomic_fetch_sub_explicit(&w->keyed_inflight, 1, memory_order_relaxed);
    ig_admission_release(r->px->admq, w);
}
