/* The pick: which worker takes a request now, with its slot claimed, or
 * one reason why none does (HAProxy's assign_server with one status per
 * outcome). Affinity first for cache_aware and consistent_hash, then the
 * policy straight from the snapshot's array, then a filtered copy when that
 * pick is refused (cap, breaker, a retry excluding the workers tried).
 * Reads one snapshot inside one loop-thread callback; claims are atomics. */
#ifndef IG_PICK_H
#define IG_PICK_H
#include "../registry/ig_sessions.h"
#include "ig_proxy.h"

typedef enum {
    IG_PICK_OK,            /* *w has its slot claimed (and *probe: a half-open probe) */
    IG_PICK_FULL,          /* some worker would do, all at their cap: wait in the queue */
    IG_PICK_PAUSED,        /* the fleet or the model is paused: wait for continue */
    IG_PICK_BEHIND,        /* others are waiting: a newcomer queues behind them */
    IG_PICK_SESSION_WAIT,  /* the pinned session's worker cannot take it now: wait for it */
    IG_PICK_NO_WORKERS,    /* none registered (503) */
    IG_PICK_UNKNOWN_MODEL, /* nobody serves the model (404) */
    IG_PICK_UNHEALTHY,     /* it is served, but by no routable worker (503) */
    IG_PICK_COOLING,       /* first try, every candidate's breaker refused (503) */
    IG_PICK_EXHAUSTED,     /* a retry, and no untried worker is left (502/504) */
} ig_pick_result;

/** Pick for r from s (sess: the session its bearer is pinned to, or NULL). */
ig_pick_result ig_pick(ig_request *r, const ig_proxy_config *cfg, const ig_snapshot *s,
                       const ig_session *sess, ig_worker **w, int *probe);
/** Give back a slot a pick claimed on w (probe: the half-open probe's;
 * keyed: counted as keyed in flight). */
void ig_pick_release(ig_request *r, ig_worker *w, int probe, int keyed);
/** 1 when r goes to a prefill and a decode worker: a generation endpoint,
 * both pools registered, and its model (if named) theirs or nobody's. */
int ig_pick_pd_route(const ig_request *r, const ig_snapshot *s);
/** A disaggregated request's pair, both slots claimed (IG_PICK_OK; r->keyed
 * then tells whether the prefill's pick was by routing key), or why not (as
 * ig_pick; neither slot is held then). */
ig_pick_result ig_pick_pd(ig_request *r, const ig_proxy_config *cfg, const ig_snapshot *s,
                          ig_worker **prefill, int *prefill_probe, ig_worker **decode, int *decode_probe);
/** A resend's worker: another than those tried, slot claimed, or NULL. */
ig_worker *ig_pick_other(ig_request *r, const ig_proxy_config *cfg, const ig_snapshot *s, int *probe);
#endif
