/* The per-request exchange with a worker: pick one, take a pooled connection
 * (or connect), send the request, stream the answer back as it arrives, and
 * decide what may be retried. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../core/ig_log.h"
#include "../health/ig_breaker.h"
#include "../balance/ig_affinity.h"
#include "../http/ig_h1resp.h"
#include "../upstream/ig_h1client.h"
#include "../registry/ig_sessions.h"
#include "ig_gateway.h"

static void pick_and_send(ig_client *c);
static void enqueue(ig_client *c, int front);
static void send_to(ig_client *c, ig_worker *w, int fresh);
static void connect_to(ig_client *c, ig_worker *w);
static ig_worker *choose(ig_client *c, ig_worker *const *cand, int n, const ig_ring *ring, int *probe,
                         int *full);
static int candidates(ig_client *c, const ig_snapshot *s, ig_worker *const **cand, int *known,
                      const ig_ring **ring);
static const ig_session *pinned_session(ig_client *c);

/* Gateway-wide counts for the retry budget: retries may be at most a share
 * of what is in flight, so a failing fleet is not hit twice as hard. */
static atomic_int g_inflight, g_retrying;

static void release_worker(ig_client *c)
{
    ig_worker *w = c->worker;
    if (!w)
        return;
    if (c->probe) {
        ig_breaker_probe_done(w);
        c->probe = 0;
    }
    c->worker = NULL;
    ig_admission_release(&c->th->admq, w);
}

/* The worker failed this attempt (not the client, not a timeout). */
static void worker_failed(ig_client *c, ig_worker *w, int connect)
{
    atomic_fetch_add_explicit(&w->stats.failures, 1, memory_order_relaxed);
    if (connect)
        atomic_fetch_add_explicit(&w->stats.connect_failures, 1, memory_order_relaxed);
    if (ig_breaker_failure(w, uv_now(&c->th->loop))) {
        ig_warn("worker %s: circuit open after repeated failures", w->url);
        ig_control_poke();
    }
}

void ig_proxy_finish(ig_client *c)
{
    if (!c->in_proxy)
        return;
    c->in_proxy = 0;
    atomic_fetch_sub_explicit(&g_inflight, 1, memory_order_relaxed);
    if (c->retrying) {
        c->retrying = 0;
        atomic_fetch_sub_explicit(&g_retrying, 1, memory_order_relaxed);
    }
}

static int retry_allowed(ig_client *c)
{
    const ig_config *cfg = c->th->cfg;
    if (c->ntried > (int)cfg->retry_max_retries || c->ntried >= IG_MAX_TRIES) {
        return 0;
    }
    if (c->retrying)
        return 1; /* already counted against the budget */
    if (c->last_refused)
        return 1; /* a refused connection put no load on anyone: nothing to budget */
    int inflight = atomic_load_explicit(&g_inflight, memory_order_relaxed);
    int retrying = atomic_load_explicit(&g_retrying, memory_order_relaxed);
    double budget = cfg->retry_budget_ratio * inflight;
    if (retrying >= (budget > 2 ? budget : 2)) {
        ig_count(&c->th->stats.retries_denied, 1);
        return 0;
    }
    return 1;
}

static void count_retry(ig_client *c, ig_worker *w)
{
    ig_count(&c->th->stats.retries, 1);
    atomic_fetch_add_explicit(&w->stats.retries, 1, memory_order_relaxed);
    if (!c->retrying) {
        c->retrying = 1;
        atomic_fetch_add_explicit(&g_retrying, 1, memory_order_relaxed);
    }
}

/* Body bytes to the client, behind the response head when it is still to
 * go: one writev for both. */
static int write_out(ig_client *c, const uv_buf_t *bufs, unsigned n, ig_block *blk)
{
    uv_buf_t v[9];
    unsigned m = 0;
    if (c->head_pending) {
        c->head_pending = 0;
        v[m++] = uv_buf_init(c->obuf.data, (unsigned)c->obuf.len);
    }
    for (unsigned i = 0; i < n && m < 9; i++)
        v[m++] = bufs[i];
    return m ? ig_client_write(c, v, m, blk) : 0;
}

static int is_head_request(ig_client *c)
{
    return ig_h1req_method(&c->rq) == HTTP_HEAD;
}

/* Build the client's response head from the worker's head at base. The
 * framing is ours, from what the parser decided, never the worker's own
 * framing fields (which its Connection header may even have named). */
static int send_head(ig_client *c, const ig_h1resp *r, const char *base, const ig_hdr *hdrs, int nhdrs)
{
    ig_buf *h = &c->obuf;
    c->status = r->status;
    c->dechunk = c->rq.http10 && r->body == IG_H1R_CHUNKED;
    if (c->rq.http10 || r->body == IG_H1R_CLOSE)
        c->close_after = 1; /* a close-delimited body: only a close can end it */
    h->len = 0;
    int rc = ig_buf_take(h, &c->th->heads);
    rc = rc ? rc : ig_buf_puts(h, "HTTP/1.1 ");
    rc = rc ? rc : ig_buf_putu(h, (uint64_t)r->status);
    rc = rc ? rc : ig_buf_puts(h, " ");
    if (r->reason_len)
        rc = rc ? rc : ig_buf_append(h, base + r->reason_off, r->reason_len);
    else
        rc = rc ? rc : ig_buf_puts(h, ig_http_reason(r->status));
    rc = rc ? rc : ig_buf_puts(h, "\r\n");
    rc = rc ? rc
            : ig_http_copy_headers(h, base, hdrs, nhdrs,
                                   IG_COPY_DROP_LENGTH | IG_COPY_DROP_REQUEST_ID | IG_COPY_DROP_GATEWAY);
    int length = r->body == IG_H1R_LENGTH ||
                 (r->body == IG_H1R_NONE && r->has_length && (r->status == 304 || is_head_request(c)));
    if (length) {
        rc = rc ? rc : ig_buf_puts(h, "content-length: ");
        rc = rc ? rc : ig_buf_putu(h, r->length);
        rc = rc ? rc : ig_buf_puts(h, "\r\n");
    } else if (r->body == IG_H1R_CHUNKED && !c->dechunk) {
        rc = rc ? rc : ig_buf_puts(h, "transfer-encoding: chunked\r\n");
    }
    rc = rc ? rc : ig_buf_puts(h, "x-weight-version: ");
    rc = rc ? rc : ig_buf_putu(h, (uint64_t)(c->weight_version > 0 ? c->weight_version : 0));
    rc = rc ? rc : ig_buf_puts(h, "\r\nx-request-id: ");
    rc = rc ? rc : ig_buf_append(h, c->rid, c->rid_len);
    if (c->close_after || !c->rq.keep_alive || c->th->draining) {
        c->close_after = 1;
        rc = rc ? rc : ig_buf_puts(h, "\r\nconnection: close");
    }
    rc = rc ? rc : ig_buf_puts(h, "\r\n\r\n");
    if (rc)
        return rc;
    c->resp_started = 1;
    c->head_pending = 1; /* goes out with the first body bytes */
    return 0;
}

/* The worker's overload answer was read to its end: keep the connection,
 * put the request back at the front of the queue. */
static void requeue(ig_client *c, int reusable)
{
    ig_upconn *up = c->up;
    c->up = NULL;
    c->overloaded = 0;
    ig_pool_release(up, reusable);
    release_worker(c);
    c->requeues++;
    c->ntried--; /* not a failure of the worker, not a retry */
    ig_count(&c->th->stats.requeued_overload, 1);
    enqueue(c, 1);
    if (c->wait.queued)
        ig_admq_dispatch(&c->th->admq);
}

static void complete(ig_client *c, int reusable)
{
    ig_upconn *up = c->up;
    ig_worker *w = up->w;
    c->up = NULL;
    if (c->status >= 500)
        atomic_fetch_add_explicit(&w->stats.responses_5xx, 1, memory_order_relaxed);
    if (ig_breaker_is_failure_status(c->status))
        worker_failed(c, w, 0);
    else if (ig_breaker_success(w))
        ig_control_poke();
    ig_debug("%.*s %d via %s", (int)c->rid_len, c->rid, c->status, w->url);
    ig_pool_release(up, reusable);
    release_worker(c);
    ig_client_request_done(c);
}

/* RFC 9110 §9.2.2: sending these twice does what sending them once does. */
static int idempotent(ig_client *c)
{
    switch (ig_h1req_method(&c->rq)) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_TRACE:
    case HTTP_PUT:
    case HTTP_DELETE: return 1;
    default: return 0;
    }
}

/* The exchange broke. A reused connection that died before any response
 * byte (the worker closed an idle keep-alive connection under us) is sent
 * again once, to another worker if there is one, else on a fresh connection
 * to the same: always when none of the request went out, otherwise only for
 * idempotent methods (or --retry-non-idempotent), since the worker may have
 * read and run it. Otherwise: 502 before the first byte, or cut the stream. */
static void exchange_failed(ig_client *c, ig_worker *w, int err, const char *why, unsigned what)
{
    int resend = !(what & IG_X_GOT_BYTES) && (what & IG_X_REUSED) && !c->resent &&
                 (!(what & IG_X_SENT_ANY) || idempotent(c) || c->th->cfg->retry_non_idempotent);
    ig_info("%.*s worker %s failed: %s%s", (int)c->rid_len, c->rid, w->url,
            err   ? uv_strerror(err)
            : why ? why
                  : "protocol error",
            resend ? " (sending again)" : "");
    if (resend && retry_allowed(c)) {
        c->resent = 1;
        int probe = 0, full = 0, known;
        ig_worker *const *cand;
        const ig_ring *ring;
        /* a pinned session stays on its worker: a new connection to the same */
        int n = pinned_session(c) ? 0 : candidates(c, ig_snapshot_get(), &cand, &known, &ring);
        ig_worker *alt = n ? choose(c, cand, n, NULL, &probe, &full) : NULL;
        count_retry(c, alt ? alt : w);
        if (!alt) {
            /* keep our in-flight unit on w: same worker, new connection */
            connect_to(c, w);
            return;
        }
        release_worker(c);
        c->probe = probe;
        send_to(c, alt, 0);
        return;
    }
    if (!resend || (what & IG_X_GOT_BYTES))
        worker_failed(c, w, 0);
    release_worker(c);
    if (c->resp_started) {
        ig_client_close(c);
        return;
    }
    char msg[160];
    if (err)
        snprintf(msg, sizeof(msg), "%s",
                 err == UV_EOF ? "worker closed the connection before answering"
                               : "worker connection failed");
    else
        snprintf(msg, sizeof(msg), "worker sent a malformed response: %s", why ? why : "protocol error");
    ig_client_error(c, 502, "upstream_error", "worker_failed", msg);
}

/* ---- the exchange's callbacks (upstream/ig_h1client.h) ---- */

static int on_head(void *owner, const ig_h1resp *r, const char *base, const ig_hdr *h, int n, int *dechunk,
                   const char **why)
{
    ig_client *c = owner;
    ig_worker *w = c->worker;
    if (!c->first_byte_ns)
        c->first_byte_ns = uv_hrtime();
    int st = r->status;
    if ((st == 503 || st == 429) && c->requeues < IG_MAX_REQUEUES) {
        /* the worker is full, not broken: drop its answer, learn its
         * capacity, and give the request back its turn in the queue */
        if (st >= 500)
            atomic_fetch_add_explicit(&w->stats.responses_5xx, 1, memory_order_relaxed);
        c->overloaded = 1;
        ig_admission_overloaded(w, ig_worker_inflight(w), uv_now(&c->th->loop));
        return IG_X_DISCARD;
    }
    if (send_head(c, r, base, h, n)) {
        *why = "response head too large";
        return -1;
    }
    *dechunk = c->dechunk;
    return IG_X_FORWARD;
}

static void on_body(void *owner, const uv_buf_t *bufs, unsigned n, ig_block *blk, int read_end)
{
    ig_client *c = owner;
    write_out(c, bufs, n, blk);
    if (!read_end || !c->up)
        return; /* more of this read comes, or the client left */
    if (c->resp_started) {
        /* the response streams: what it no longer needs goes back to the thread */
        if (c->pending_writes == 0)
            ig_buf_give(&c->obuf, &c->th->heads);
        ig_client_retire_request(c);
    }
    if (ig_client_wants_pause(c))
        ig_h1_pause(c->up);
}

static void on_done(void *owner, int reusable)
{
    ig_client *c = owner;
    write_out(c, NULL, 0, NULL);
    if (!c->up)
        return; /* the client left while its answer went out */
    if (c->overloaded)
        requeue(c, reusable);
    else
        complete(c, reusable);
}

static void head_too_large(ig_client *c, ig_upconn *up)
{
    c->up = NULL;
    ig_pool_release(up, 1); /* nothing went out on it */
    release_worker(c);
    ig_client_error(c, 431, "invalid_request_error", "headers_too_large", "request head too large");
}

static void on_ready(void *owner, ig_h1_req *rq)
{
    ig_client *c = owner;
    *rq = (ig_h1_req){.method = ig_h1req_method(&c->rq),
                      .target = c->rbuf.data + c->rq.url_off,
                      .target_len = c->rq.url_len,
                      .base = c->rbuf.data,
                      .hdrs = c->rq.hdrs,
                      .nhdrs = c->rq.nhdrs,
                      .rid = c->rid,
                      .rid_len = c->rid_len,
                      .body = c->rbuf.data + c->rq.body_off,
                      .body_len = c->rq.body_len};
}

static void on_error(void *owner, int err, const char *why, unsigned what)
{
    ig_client *c = owner;
    ig_worker *w = c->worker;
    if (what & IG_X_HEAD_TOO_LARGE) {
        head_too_large(c, c->up);
        return;
    }
    c->up = NULL;
    c->overloaded = 0;
    if (!(what & IG_X_CONNECT)) {
        exchange_failed(c, w, err, why, what);
        return;
    }
    worker_failed(c, w, 1);
    ig_info("%.*s connect to %s failed: %s", (int)c->rid_len, c->rid, w->url,
            (what & IG_X_TIMEDOUT) ? "timed out" : uv_strerror(err));
    c->last_timeout = (what & IG_X_TIMEDOUT) != 0;
    c->last_refused = (what & IG_X_REFUSED) != 0;
    release_worker(c);
    pick_and_send(c);
}

static const ig_exchange_cb exchange_cb = {on_ready, on_head, on_body, on_done, on_error};

static void start_exchange(ig_client *c, ig_upconn *up)
{
    c->up = up; /* before the start: a write failing at once reports through on_error */
    if (ig_h1_start(up, &exchange_cb, c))
        head_too_large(c, up);
}

/* A new connection to w for c, which already holds its in-flight unit on w. */
static void connect_to(ig_client *c, ig_worker *w)
{
    ig_upconn *up = ig_h1_connect(&c->th->up, w);
    if (!up) {
        worker_failed(c, w, 1);
        release_worker(c);
        pick_and_send(c);
        return;
    }
    start_exchange(c, up);
}

static void send_to(ig_client *c, ig_worker *w, int fresh)
{
    if (ig_log_level >= IG_LOG_INFO) { /* only the access log reads it */
        size_t n = strlen(w->url);
        n = n < sizeof(c->worker_label) - 1 ? n : sizeof(c->worker_label) - 1;
        memcpy(c->worker_label, w->url, n);
        c->worker_label[n] = '\0';
    }
    c->tried[c->ntried++] = w;
    c->worker = w; /* its slot was claimed by choose() */
    c->weight_version = atomic_load_explicit(&w->version, memory_order_relaxed);
    ig_upconn *up = fresh ? NULL : ig_pool_take(&c->th->up, w);
    if (!up) {
        connect_to(c, w);
        return;
    }
    start_exchange(c, up);
}

static int tried(const ig_client *c, const ig_worker *w)
{
    for (int t = 0; t < c->ntried; t++)
        if (c->tried[t] == w)
            return 1;
    return 0;
}

/* A worker for c with its slot claimed, or NULL (*full: some worker would
 * do but all are at their cap). The first attempt picks straight from the
 * snapshot's array (O(1) for round_robin, random, power_of_two); only when
 * that pick is refused (cap, breaker, or a retry excluding tried workers) is
 * a filtered copy made. */
/* The workers that may serve c's model, from the snapshot s. */
static int candidates(ig_client *c, const ig_snapshot *s, ig_worker *const **cand, int *known,
                      const ig_ring **ring)
{
    const ig_body_fields *f = &c->fields;
    return ig_snapshot_candidates_ring(s, f->has_model ? f->model : NULL, f->model_len, cand, known, ring);
}

static int has_room(const ig_worker *w, void *now_ms)
{
    return ig_admission_has_room(w, *(uint64_t *)now_ms);
}

/* The routing key of consistent_hash: a header, else the body's "user". */
static int routing_key(ig_client *c, const char **key, size_t *len)
{
    if (c->rq.h_routing_key >= 0) {
        *key = c->rbuf.data + c->rq.hdrs[c->rq.h_routing_key].value_off;
        *len = c->rq.hdrs[c->rq.h_routing_key].value_len;
        return *len > 0;
    }
    *key = c->fields.user.p;
    *len = c->fields.user.len;
    return *len > 0;
}

/* cache_aware and consistent_hash: the affinity worker with its slot claimed,
 * or NULL to let the plain least-load pick decide. The prompt's block keys
 * stay in a per-thread buffer between the match and the record. */
static ig_worker *affinity_choose(ig_client *c, ig_worker *const *cand, int n, const ig_ring *ring,
                                  uint64_t now, int *probe)
{
    static _Thread_local ig_prefix_query q;
    const ig_config *cfg = c->th->cfg;
    const ig_body_fields *f = &c->fields;
    int i, aff = 0, cache = cfg->policy == IG_POLICY_CACHE_AWARE;
    if (cache) {
        if (!f->n_text)
            return NULL;
        ig_holders holders;
        ig_prefix_hash(f->text, f->n_text, f->has_model ? f->model : NULL, f->model_len, &q);
        int depth = ig_prefix_match(&q, &holders);
        ig_cache_aware_cfg cc = {cfg->cache_threshold, (int)cfg->balance_abs_threshold,
                                 cfg->balance_rel_threshold};
        i = ig_cache_aware_pick(&cc, &c->th->pol, cand, n, depth, q.len, &holders, has_room, &now, &aff);
    } else {
        const char *key;
        size_t len;
        if (!routing_key(c, &key, &len))
            return NULL;
        i = ig_ring_pick(ring, ig_ring_key(key, len), cand, n, IG_AFFINITY_LOAD_BOUND, has_room, &now);
        aff = i >= 0;
    }
    ig_count(aff ? &c->th->stats.affinity_hits : &c->th->stats.affinity_misses, 1);
    if (i < 0 || !ig_admission_claim(cand[i], now))
        return NULL;
    if (!ig_breaker_admit(cand[i], probe)) {
        ig_admission_release(&c->th->admq, cand[i]);
        return NULL;
    }
    if (cache) /* it will hold this prompt's prefix now */
        ig_prefix_insert(&q, cand[i]->id, (uint32_t)(now / 100));
    return cand[i];
}

static ig_worker *choose(ig_client *c, ig_worker *const *cand, int n, const ig_ring *ring, int *probe,
                         int *full)
{
    static _Thread_local ig_worker *tmp[IG_MAX_WORKERS];
    ig_policy_kind policy = c->th->cfg->policy;
    uint64_t now = uv_now(&c->th->loop);
    *probe = 0;
    *full = 0;
    if (n == 0)
        return NULL;
    if (c->ntried == 0 && ring && (policy == IG_POLICY_CACHE_AWARE || policy == IG_POLICY_CONSISTENT_HASH)) {
        ig_worker *w = affinity_choose(c, cand, n, ring, now, probe);
        if (w)
            return w;
        policy = IG_POLICY_LEAST_LOAD;
    }
    if (c->ntried == 0) {
        ig_worker *w = cand[ig_policy_pick(policy, &c->th->pol, cand, n)];
        if (ig_admission_claim(w, now)) {
            if (ig_breaker_admit(w, probe))
                return w;
            ig_admission_release(&c->th->admq, w);
        }
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (tried(c, cand[i]) ||
            atomic_load_explicit(&cand[i]->breaker, memory_order_relaxed) == IG_BREAKER_OPEN)
            continue;
        if (!ig_admission_has_room(cand[i], now)) {
            *full = 1;
            continue;
        }
        tmp[m++] = cand[i];
    }
    while (m > 0) {
        int i = ig_policy_pick(policy, &c->th->pol, tmp, m);
        ig_worker *w = tmp[i];
        tmp[i] = tmp[--m];
        if (!ig_admission_claim(w, now)) {
            *full = 1; /* taken by another request since the scan */
            continue;
        }
        if (ig_breaker_admit(w, probe))
            return w;
        ig_admission_release(&c->th->admq, w);
    }
    return NULL;
}

static void no_worker_left(ig_client *c)
{
    if (c->last_timeout)
        ig_client_error(c, 504, "timeout", "upstream_connect_timeout", "timed out connecting to the workers");
    else
        ig_client_error(c, 502, "upstream_error", "worker_unreachable", "could not connect to any worker");
}

/* Wait for a slot instead of refusing: 429 only when the queue is full. */
static void enqueue(ig_client *c, int front)
{
    if (c->wait.queued)
        return; /* still waiting: keeps its place */
    if (ig_admq_push(&c->th->admq, &c->wait, front)) {
        ig_count(&c->th->stats.rejected_queue_full, 1);
        ig_client_error_headers(c, 429, "rate_limit_error", "queue_full",
                                "every worker is busy and the queue is full; retry later",
                                "retry-after: 1\r\n");
        return;
    }
    ig_client_arm_timer(c, c->th->cfg->queue_timeout_secs);
}

/* Leaving the queue for a worker: the request timeout starts now. */
static void dequeue_for_dispatch(ig_client *c)
{
    if (!c->wait.queued)
        return;
    ig_admq_leave(&c->th->admq, &c->wait);
    ig_client_arm_timer(c, c->th->cfg->request_timeout_secs);
}

/* The session c's bearer is pinned to (AReaL), or NULL. Valid in this callback only. */
static const ig_session *pinned_session(ig_client *c)
{
    const char *tok;
    size_t len;
    if (ig_sessions_count() == 0 || ig_client_bearer(c, &tok, &len))
        return NULL;
    return ig_sessions_by_key(tok, len);
}

/* A request carrying the admin key and no pin yet: its worker becomes the
 * admin key's persistent session (AReaL's human-in-the-loop session). */
static int is_admin_bearer(ig_client *c)
{
    return ig_client_bearer_is(c, c->th->cfg->admin_api_key) == 0;
}

static void pick_and_send(ig_client *c)
{
    const ig_snapshot *s = ig_snapshot_get();
    const ig_body_fields *f = &c->fields;
    ig_worker *const *cand;
    const ig_ring *ring = NULL; /* NULL: no affinity (a pinned session) */
    int known, n;
    const ig_session *sess = pinned_session(c);
    if (sess) {
        /* the session's state lives on its worker: only that one, waiting
         * in the queue while it cannot take the request */
        cand = &sess->w;
        n = 1;
        if (c->ntried == 0 && (!ig_worker_routable(sess->w) || atomic_load(&sess->w->paused) ||
                               ig_snapshot_paused(s, f->has_model ? f->model : NULL, f->model_len))) {
            enqueue(c, 0);
            return;
        }
    } else {
        n = candidates(c, s, &cand, &known, &ring);
    }
    if (c->ntried == 0) {
        /* tell "nobody serves this" (404) from "nobody can take it now" (503) */
        if (n == 0) {
            char msg[IG_MODEL_MAX + 64];
            ig_admq_leave(&c->th->admq, &c->wait);
            if (s->n_all == 0) {
                ig_client_error(c, 503, "service_unavailable", "no_workers", "no worker is available");
            } else if (f->has_model && !known) {
                snprintf(msg, sizeof(msg), "model '%.*s' is not served by any worker", (int)f->model_len,
                         f->model);
                ig_client_error(c, 404, "invalid_request_error", "model_not_found", msg);
            } else {
                snprintf(msg, sizeof(msg), "no healthy worker serves %s%.*s%s",
                         f->has_model ? "model '" : "this request", (int)f->model_len,
                         f->has_model ? f->model : "", f->has_model ? "'" : "");
                ig_client_error(c, 503, "service_unavailable", "no_healthy_workers", msg);
            }
            return;
        }
        /* paused (fleet or model): wait in the queue until continue */
        if (!sess && ig_snapshot_paused(s, f->has_model ? f->model : NULL, f->model_len)) {
            enqueue(c, 0);
            return;
        }
        /* first in, first out: while others wait, a newcomer waits behind them */
        if (!c->wait.queued && ig_admission_waiting()) {
            enqueue(c, 0);
            if (c->wait.queued)
                ig_admq_dispatch(&c->th->admq);
            return;
        }
    } else if (!retry_allowed(c)) {
        ig_admq_leave(&c->th->admq, &c->wait);
        no_worker_left(c);
        return;
    }
    int probe = 0, full = 0;
    ig_worker *w = choose(c, cand, n, ring, &probe, &full);
    if (!w) {
        if (full) {
            enqueue(c, 0);
            return;
        }
        ig_admq_leave(&c->th->admq, &c->wait);
        if (c->ntried == 0)
            ig_client_error(c, 503, "service_unavailable", "no_healthy_workers",
                            "every worker for this request is cooling down after failures");
        else
            no_worker_left(c);
        return;
    }
    dequeue_for_dispatch(c);
    if (c->ntried > 0)
        count_retry(c, w);
    else if (!sess && c->route != IG_R_SESSION && is_admin_bearer(c))
        ig_control_pin_admin(w);
    c->probe = probe;
    send_to(c, w, 0);
}

/* A queued request gets another chance at a worker slot. */
static void retry_queued(ig_waiter *wt)
{
    ig_client *c = ig_container_of(wt, ig_client, wait);
    if (c->wait.queued && !c->closing)
        pick_and_send(c);
}

void ig_proxy_start(ig_client *c)
{
    const char *err = NULL;
    int rc = ig_body_scan(c->rbuf.data + c->rq.body_off, c->rq.body_len, &c->fields, &err);
    if (rc) {
        char msg[160];
        snprintf(msg, sizeof(msg), "invalid JSON body: %s", err ? err : "malformed");
        ig_client_error(c, 400, "invalid_request_error",
                        rc == -ENAMETOOLONG ? "model_name_too_long" : "invalid_json", msg);
        return;
    }
    c->ntried = 0;
    c->resent = 0;
    c->requeues = 0;
    c->last_timeout = 0;
    c->last_refused = 0;
    c->in_proxy = 1;
    c->wait.retry = retry_queued;
    atomic_fetch_add_explicit(&g_inflight, 1, memory_order_relaxed);
    pick_and_send(c);
}

void ig_proxy_abort(ig_client *c)
{
    ig_admq_leave(&c->th->admq, &c->wait); /* a queued request just leaves: nothing was sent */
    if (c->up) {
        /* closing at once is how the worker learns the client left: it can stop generating */
        ig_h1_cancel(c->up);
        c->up = NULL;
    }
    release_worker(c);
}

void ig_proxy_timeout(ig_client *c)
{
    if (c->wait.queued) {
        ig_admq_leave(&c->th->admq, &c->wait);
        ig_count(&c->th->stats.queue_timeouts, 1);
        ig_client_error(c, 503, "service_unavailable", "queue_timeout",
                        "no worker slot freed within --queue-timeout-secs");
        return;
    }
    if (!c->resp_started && c->worker)
        worker_failed(c, c->worker, 0); /* it took the request and never answered */
    ig_proxy_abort(c);
    if (!c->resp_started)
        ig_client_error(c, 504, "timeout", "upstream_timeout",
                        "the worker did not answer within --request-timeout-secs");
    else
        ig_client_close(c);
}

void ig_proxy_resume_upstream(ig_client *c)
{
    if (c->up)
        ig_h1_resume(c->up);
}
