/* The per-request exchange with a worker (ig_proxy.h). */
#include "ig_proxy.h"

#include <errno.h>
#include <llhttp.h>
#include <stdio.h>
#include <string.h>

#include "../core/ig_log.h"
#include "../health/ig_breaker.h"
#include "../registry/ig_sessions.h"
#include "../upstream/ig_exchange.h"
#include "ig_pd.h"
#include "ig_pick.h"
#include "ig_retry.h"

static ig_proxy_hooks hooks;
static ig_proxy_config pcfg;

void ig_proxy_configure(const ig_proxy_config *cfg, const ig_proxy_hooks *h)
{
    pcfg = *cfg;
    hooks = *h;
}

static void respond_error(ig_request *r, int status, const char *type, const char *code, const char *msg)
{
    r->res->respond_error(r, status, type, code, msg, NULL);
}

static void pick_and_send(ig_request *r);
static void enqueue(ig_request *r, int front);
static void send_to(ig_request *r, ig_worker *w, int fresh);
static void connect_to(ig_request *r, ig_worker *w);
static void conn_ready(ig_conn_wait *cw, ig_upconn *up);
static const ig_session *pinned_session(ig_request *r);
static int pd_merge_over(ig_request *r);

static ig_retry_budget g_budget;
/* why this thread's last TLS connect failed: the 502's message */
static _Thread_local char tls_why[256];

/* A streamed body's exchange is over: its next exchange starts it again
 * from what r->body still holds (all of it, unless body_gone). */
static void body_rewind(ig_request *r)
{
    r->body_started = r->body_writing = r->body_last_sent = 0;
    r->body_inflight = 0;
}

/* A streamed body: hand the exchange what arrived since the last piece,
 * once that one is written. */
static void send_more(ig_request *r)
{
    if (!r->up || !r->body_started || r->body_writing || r->body_last_sent)
        return;
    if (!r->body.len && !r->body_done)
        return;
    r->body_inflight = r->body.len;
    r->body_writing = 1;
    r->body_last_sent = r->body_done;
    if (ig_exchange_send_body(r->up, r->body.p, r->body.len, r->body_done) == 1)
        r->body_writing = 0; /* nothing needed writing */
}

static void release_worker(ig_request *r)
{
    ig_worker *w = r->worker;
    if (!w)
        return;
    r->worker = NULL;
    ig_pick_release(r, w, r->probe, r->keyed);
    r->probe = r->keyed = 0;
}

/* The worker failed this attempt (not the client, not a timeout). */
static void worker_failed(ig_request *r, ig_worker *w, int connect)
{
    atomic_fetch_add_explicit(&w->stats.failures, 1, memory_order_relaxed);
    if (connect)
        atomic_fetch_add_explicit(&w->stats.connect_failures, 1, memory_order_relaxed);
    if (ig_breaker_failure(w, uv_now(r->px->loop))) {
        ig_warn("worker %s: circuit open after repeated failures", w->url);
        hooks.breaker_changed();
    }
}

static void proxy_finish(ig_request *r)
{
    if (!r->in_proxy)
        return;
    r->in_proxy = 0;
    ig_pd_release(r);
    ig_retry_leave(&g_budget, r->retrying);
    r->retrying = 0;
}

static int retry_allowed(ig_request *r)
{
    ig_retry_verdict v = ig_retry_allowed(&g_budget, pcfg.retry_budget_ratio, pcfg.retry_max_retries,
                                          IG_MAX_TRIES, r->ntried, r->retrying, r->last_refused);
    if (v == IG_RETRY_BUDGET)
        ig_count(&r->px->stats->retries_denied, 1);
    return v == IG_RETRY_OK;
}

static void count_retry(ig_request *r, ig_worker *w)
{
    ig_count(&r->px->stats->retries, 1);
    atomic_fetch_add_explicit(&w->stats.retries, 1, memory_order_relaxed);
    if (!r->retrying) {
        r->retrying = 1;
        ig_retry_mark(&g_budget);
    }
}

/* The worker's overload answer was read to its end: keep the connection,
 * put the request back at the front of the queue. */
static void requeue(ig_request *r, int reusable)
{
    ig_upconn *up = r->up;
    r->up = NULL;
    r->overloaded = 0;
    ig_pool_release(up, reusable);
    ig_pd_cancel(r); /* the pair goes again, with a new room */
    release_worker(r);
    body_rewind(r);
    r->requeues++;
    r->ntried--; /* not a failure of the worker, not a retry */
    ig_count(&r->px->stats->requeued_overload, 1);
    enqueue(r, 1);
    if (r->wait.queued)
        ig_admq_dispatch(r->px->admq);
}

static void complete(ig_request *r, int reusable)
{
    ig_upconn *up = r->up;
    ig_worker *w = up->w;
    r->up = NULL;
    if (r->status >= 500)
        atomic_fetch_add_explicit(&w->stats.responses_5xx, 1, memory_order_relaxed);
    if (ig_breaker_is_failure_status(r->status))
        worker_failed(r, w, 0);
    else if (ig_breaker_success(w))
        hooks.breaker_changed();
    ig_debug("%.*s %d via %s", (int)r->rid_len, r->rid, r->status, w->url);
    ig_pool_release(up, reusable);
    release_worker(r);
    if (r->pd && r->pd->merge && r->resp_started) {
        /* return_logprob: the answer ends once the prefill's logprobs are in it */
        r->pd->decode_done = 1;
        if (ig_pd_running(r) || pd_merge_over(r))
            return; /* the leg's end finishes it, or it is over */
    }
    /* a prefill still answering after its decode finished has nothing left to give */
    ig_pd_cancel(r);
    r->res->done(r);
}

/* RFC 9110 §9.2.2: sending these twice does what sending them once does. */
static int idempotent(ig_request *r)
{
    switch (r->method) {
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
static void pd_retry_pair(ig_request *r);

static void exchange_failed(ig_request *r, ig_worker *w, int err, const char *why, unsigned what)
{
    if (r->pd_mode && !r->resp_started) {
        /* the decode failed before the client saw a byte: the prefill is
         * cancelled at once (a prefill left waiting for a decode that never
         * comes holds its KV; smg#831) and the pair goes again */
        ig_info("%.*s decode worker %s failed: %s", (int)r->rid_len, r->rid, w->url,
                err   ? uv_strerror(err)
                : why ? why
                      : "protocol error");
        if (!(what & IG_X_REUSED) || (what & IG_X_GOT_BYTES)) /* not a stale pooled connection */
            worker_failed(r, w, 0);
        ig_pd_cancel(r);
        release_worker(r);
        pd_retry_pair(r);
        return;
    }
    ig_pd_cancel(r);
    int resend = !(what & IG_X_GOT_BYTES) && (what & IG_X_REUSED) && !r->resent && !r->body_gone &&
                 (!(what & IG_X_SENT_ANY) || idempotent(r) || pcfg.retry_non_idempotent);
    ig_info("%.*s worker %s failed: %s%s", (int)r->rid_len, r->rid, w->url,
            err   ? uv_strerror(err)
            : why ? why
                  : "protocol error",
            resend ? " (sending again)" : "");
    if (resend && retry_allowed(r)) {
        r->resent = 1;
        int probe = 0;
        /* a pinned session stays on its worker: a new connection to the same */
        ig_worker *alt = pinned_session(r) ? NULL : ig_pick_other(r, &pcfg, ig_snapshot_get(), &probe);
        count_retry(r, alt ? alt : w);
        if (!alt) {
            /* keep our in-flight unit on w: same worker, new connection */
            connect_to(r, w);
            return;
        }
        release_worker(r);
        r->probe = probe;
        send_to(r, alt, 0);
        return;
    }
    if (!resend || (what & IG_X_GOT_BYTES))
        worker_failed(r, w, 0);
    release_worker(r);
    if (r->resp_started) {
        r->res->write(r, NULL, 0, NULL); /* a head still held goes first: the client sees the stream cut */
        r->res->cut(r);
        return;
    }
    char msg[160];
    if (err)
        snprintf(msg, sizeof(msg), "%s",
                 err == UV_EOF ? "worker closed the connection before answering"
                               : "worker connection failed");
    else
        snprintf(msg, sizeof(msg), "worker sent a malformed response: %s", why ? why : "protocol error");
    respond_error(r, 502, "upstream_error", "worker_failed", msg);
}

/* ---- the exchange's callbacks (upstream/ig_exchange.h) ---- */

static int on_head(void *owner, const ig_resp_head *head, int *dechunk, const char **why)
{
    ig_request *r = owner;
    ig_worker *w = r->worker;
    if (!r->first_byte_ns)
        r->first_byte_ns = uv_hrtime();
    if (r->pd_mode && r->pd && head->status < 300)
        ig_hist_observe(&r->px->stats->pd_ttft, (uv_hrtime() - r->pd->start_ns) / 1000);
    int st = head->status;
    if (r->pd_mode && (st == 408 || st == 500 || st == 502 || st == 504) && retry_allowed(r)) {
        /* the decode could not take its half (a KV transfer that failed, most
         * often): drop its answer and send the pair again, as smg does */
        r->pd_retry = 1;
        atomic_fetch_add_explicit(&w->stats.responses_5xx, st >= 500, memory_order_relaxed);
        return IG_X_DISCARD;
    }
    if ((st == 503 || st == 429) && r->requeues < IG_MAX_REQUEUES && !r->body_gone) {
        /* the worker is full, not broken: drop its answer, learn its
         * capacity, and give the request back its turn in the queue */
        if (st >= 500)
            atomic_fetch_add_explicit(&w->stats.responses_5xx, 1, memory_order_relaxed);
        r->overloaded = 1;
        ig_admission_overloaded(w, ig_worker_inflight(w), uv_now(r->px->loop));
        return IG_X_DISCARD;
    }
    /* the client side frames its own answer from it */
    ig_resp_head h = *head;
    h.weight_version = r->group >= 0 ? -1 : r->weight_version; /* an LLM answer's, not any API's */
    int merge = r->pd && r->pd->merge && st >= 200 && st < 300, raw = 0;
    if (merge) { /* return_logprob: the answer is rewritten, so framed anew */
        h.body = IG_RB_CHUNKED;
        h.has_length = 0;
    }
    if (r->res->start(r, &h, merge ? &raw : dechunk)) {
        *why = "response head too large";
        return -1;
    }
    if (merge) {
        ig_pd_merge_start(r, raw);
        *dechunk = 1;
    }
    return IG_X_FORWARD;
}

static void on_body(void *owner, const uv_buf_t *bufs, unsigned n, ig_block *blk, int read_end)
{
    ig_request *r = owner;
    if (r->pd && r->pd->merge && r->resp_started)
        ig_pd_merge_body(r, bufs, n);
    else
        r->res->write(r, bufs, n, blk);
    if (!read_end || !r->up)
        return; /* more of this read comes, or the client left */
    if (r->resp_started && !ig_pd_running(r))
        r->res->retire(r); /* the response streams: what it no longer needs goes back */
    if (r->res->wants_pause(r))
        ig_exchange_pause(r->up);
}

static void on_done(void *owner, int reusable)
{
    ig_request *r = owner;
    if (r->pd_retry) {
        ig_upconn *up = r->up;
        ig_worker *w = r->worker;
        r->up = NULL;
        r->pd_retry = 0;
        ig_pool_release(up, reusable);
        if (ig_breaker_is_failure_status(r->status))
            worker_failed(r, w, 0);
        ig_pd_cancel(r);
        release_worker(r);
        pd_retry_pair(r);
        return;
    }
    if (r->overloaded)
        requeue(r, reusable);
    else
        complete(r, reusable);
}

static void head_too_large(ig_request *r, ig_upconn *up)
{
    r->up = NULL;
    ig_pool_release(up, 1); /* nothing went out on it */
    ig_pd_cancel(r);
    body_rewind(r);
    release_worker(r);
    respond_error(r, 431, "invalid_request_error", "headers_too_large", "request head too large");
}

void ig_proxy_fill_exchange(ig_request *r, ig_exchange_req *rq, int decode)
{
    *rq = (ig_exchange_req){.method = r->method,
                            .target = r->target,
                            .target_len = r->target_len,
                            .base = r->base,
                            .hdrs = r->hdrs,
                            .nhdrs = r->nhdrs,
                            .rid = r->rid,
                            .rid_len = r->rid_len,
                            .body = r->body.p,
                            .body_len = r->body.len,
                            .length = r->body_length,
                            .streams = r->body_streams,
                            .last = r->body_done};
    if (r->pd) { /* both halves of a disaggregated request carry fields of their own */
        const ig_buf *ins = ig_pd_ins(r, decode);
        rq->ins = ins->data;
        rq->ins_len = ins->len;
        rq->ins_at = r->pd->at;
    }
}

static void on_ready(void *owner, ig_exchange_req *rq)
{
    ig_request *r = owner;
    ig_proxy_fill_exchange(r, rq, 1);
    if (r->body_streams) { /* the first piece goes with the head */
        r->body_started = r->body_writing = 1;
        r->body_inflight = r->body.len;
        r->body_last_sent = r->body_done;
    }
}

static void on_sent(void *owner)
{
    ig_request *r = owner;
    size_t n = r->body_inflight;
    r->body_inflight = 0;
    r->body_writing = 0;
    if (n)
        r->res->body_consumed(r, n); /* may read more, and call body_more */
    send_more(r);
}

static void proxy_body_more(ig_request *r)
{
    send_more(r);
}

static void on_error(void *owner, int err, const char *why, unsigned what)
{
    ig_request *r = owner;
    ig_worker *w = r->worker;
    if (what & IG_X_HEAD_TOO_LARGE) {
        head_too_large(r, r->up);
        return;
    }
    r->up = NULL;
    r->overloaded = 0;
    body_rewind(r);
    if (!(what & IG_X_CONNECT)) {
        exchange_failed(r, w, err, why, what);
        return;
    }
    worker_failed(r, w, 1);
    ig_info("%.*s connect to %s failed: %s", (int)r->rid_len, r->rid, w->url,
            why                      ? why
            : (what & IG_X_TIMEDOUT) ? "timed out"
                                     : uv_strerror(err));
    r->last_timeout = (what & IG_X_TIMEDOUT) != 0;
    r->last_refused = (what & IG_X_REFUSED) != 0;
    r->last_tls = (what & IG_X_TLS) != 0;
    if (r->last_tls) /* the 502 says why, if no other worker takes it */
        snprintf(tls_why, sizeof(tls_why), "%s", why ? why : "TLS with the worker failed");
    ig_pd_cancel(r); /* a pair goes again whole */
    release_worker(r);
    r->want_backoff = 1;
    pick_and_send(r);
}

static const ig_exchange_cb exchange_cb = {on_ready, on_head, on_body, on_done, on_error, on_sent};

static void start_exchange(ig_request *r, ig_upconn *up)
{
    r->up = up; /* before the start: a write failing at once reports through on_error */
    if (ig_exchange_start(up, &exchange_cb, r))
        head_too_large(r, up);
}

/* A new connection to w for r, which already holds its in-flight unit on w. */
static void connect_to(ig_request *r, ig_worker *w)
{
    ig_upconn *up = ig_exchange_connect(r->px->up, w);
    if (!up) {
        worker_failed(r, w, 1);
        ig_pd_cancel(r);
        release_worker(r);
        pick_and_send(r);
        return;
    }
    start_exchange(r, up);
}

/* r's attempt is on w now (its slot claimed by the pick). */
static void assign(ig_request *r, ig_worker *w)
{
    if (ig_log_level >= IG_LOG_INFO) { /* only the access log reads it */
        size_t n = strlen(w->url);
        n = n < sizeof(r->worker_label) - 1 ? n : sizeof(r->worker_label) - 1;
        memcpy(r->worker_label, w->url, n);
        r->worker_label[n] = '\0';
    }
    r->tried[r->ntried++] = w;
    r->worker = w; /* its slot was claimed by choose() */
    r->weight_version = atomic_load_explicit(&w->version, memory_order_relaxed);
}

/* The exchange with r->worker: a pooled connection, a wait for one, or a new one. */
static void send_assigned(ig_request *r, int fresh)
{
    ig_worker *w = r->worker;
    ig_upconn *up = fresh ? NULL : ig_pool_take(r->px->up, w);
    if (!up && !fresh && ig_pool_wait(r->px->up, w, &r->cwait))
        return; /* conn_ready goes on */
    if (!up) {
        connect_to(r, w);
        return;
    }
    start_exchange(r, up);
}

static void send_to(ig_request *r, ig_worker *w, int fresh)
{
    assign(r, w);
    send_assigned(r, fresh);
}

static void conn_ready(ig_conn_wait *cw, ig_upconn *up)
{
    ig_request *r = ig_container_of(cw, ig_request, cwait);
    if (up)
        start_exchange(r, up);
    else
        connect_to(r, r->worker);
}

static void no_worker_left(ig_request *r)
{
    if (r->last_tls)
        respond_error(r, 502, "upstream_error", "worker_tls_failed", tls_why);
    else if (r->last_timeout)
        respond_error(r, 504, "timeout", "upstream_connect_timeout", "timed out connecting to the workers");
    else
        respond_error(r, 502, "upstream_error", "worker_unreachable", "could not connect to any worker");
}

/* Wait for a slot instead of refusing: 429 only when the queue is full. */
static void enqueue(ig_request *r, int front)
{
    if (r->wait.queued)
        return; /* still waiting: keeps its place */
    if (ig_admq_push(r->px->admq, &r->wait, front)) {
        ig_count(&r->px->stats->rejected_queue_full, 1);
        r->res->respond_error(r, 429, "rate_limit_error", "queue_full",
                              "every worker is busy and the queue is full; retry later",
                              "retry-after: 1\r\n");
        return;
    }
    r->res->set_deadline(r, pcfg.queue_timeout_secs);
}

/* Leaving the queue for a worker: the request timeout starts now. */
static void dequeue_for_dispatch(ig_request *r)
{
    if (!r->wait.queued)
        return;
    ig_admq_leave(r->px->admq, &r->wait);
    r->res->set_deadline(r, pcfg.request_timeout_secs);
}

/* The session r's bearer is pinned to (AReaL), or NULL. Valid in this callback only. */
static const ig_session *pinned_session(ig_request *r)
{
    if (r->group >= 0)
        return NULL; /* AReaL sessions pin LLM requests */
    if (ig_sessions_count() == 0 || !r->has_bearer)
        return NULL;
    return ig_sessions_by_key(r->bearer.p, r->bearer.len);
}

/* A request carrying the admin key and no pin yet: its worker becomes the
 * admin key's persistent session (AReaL's human-in-the-loop session). */
static int is_admin_bearer(ig_request *r)
{
    return r->admin_bearer;
}

/* ---- retry backoff (--retry-initial-backoff-ms and the rest: sgl-model-gateway's meanings) ---- */

static uint64_t backoff_ms(ig_request *r)
{
    double d = pcfg.retry_initial_backoff_ms;
    if (d <= 0)
        return 0;
    for (int i = 1; i < r->ntried && d < pcfg.retry_max_backoff_ms; i++)
        d *= pcfg.retry_backoff_multiplier;
    if (pcfg.retry_max_backoff_ms > 0 && d > pcfg.retry_max_backoff_ms)
        d = pcfg.retry_max_backoff_ms;
    double j = pcfg.retry_jitter_factor;
    if (j > 0) /* uniform in [1-j, 1+j] */
        d *= 1.0 - j + 2.0 * j * (double)ig_policy_rand(&r->px->pol, 1u << 20) / (double)(1u << 20);
    return (uint64_t)d;
}

static void backoff_leave(ig_request *r)
{
    if (!r->backing_off)
        return;
    r->backing_off = 0;
    ig_list_remove(&r->backoff_link);
    if (ig_list_empty(&r->px->backoff))
        uv_timer_stop(&r->px->backoff_timer);
}

static void backoff_cb(uv_timer_t *t)
{
    ig_proxy_ctx *px = t->data;
    uint64_t now = uv_now(px->loop), soonest = UINT64_MAX;
    ig_list *n = px->backoff.next;
    while (n != &px->backoff) {
        ig_request *r = ig_container_of(n, ig_request, backoff_link);
        n = n->next;
        if (r->retry_at_ms <= now) {
            backoff_leave(r);
            pick_and_send(r);
        }
    }
    for (n = px->backoff.next; n != &px->backoff; n = n->next) {
        ig_request *r = ig_container_of(n, ig_request, backoff_link);
        if (r->retry_at_ms < soonest)
            soonest = r->retry_at_ms;
    }
    if (soonest != UINT64_MAX)
        uv_timer_start(t, backoff_cb, soonest > now ? soonest - now : 0, 0);
}

/* 1 when r waits out its backoff first (pick_and_send comes from the timer). */
static int back_off(ig_request *r)
{
    if (!r->want_backoff)
        return 0;
    r->want_backoff = 0;
    uint64_t ms = backoff_ms(r);
    if (!ms)
        return 0;
    ig_proxy_ctx *px = r->px;
    if (!px->backoff_ready) {
        uv_timer_init(px->loop, &px->backoff_timer);
        px->backoff_timer.data = px;
        ig_list_init(&px->backoff);
        px->backoff_ready = 1;
    }
    r->retry_at_ms = uv_now(px->loop) + ms;
    r->backing_off = 1;
    ig_count(&px->stats->retry_backoffs, 1);
    ig_list_push_back(&px->backoff, &r->backoff_link);
    uint64_t due = uv_is_active((uv_handle_t *)&px->backoff_timer) ? uv_timer_get_due_in(&px->backoff_timer)
                                                                   : UINT64_MAX;
    if (ms < due)
        uv_timer_start(&px->backoff_timer, backoff_cb, ms, 0);
    return 1;
}

static void pick_and_send(ig_request *r)
{
    const ig_snapshot *s = ig_snapshot_get();
    const ig_body_fields *f = &r->fields;
    char msg[IG_MODEL_MAX + 64];
    if (r->ntried > 0 && !retry_allowed(r)) {
        ig_admq_leave(r->px->admq, &r->wait);
        no_worker_left(r);
        return;
    }
    if (back_off(r))
        return;
    const ig_session *sess = pinned_session(r);
    ig_worker *w, *prefill = NULL;
    int probe, prefill_probe = 0;
    if (r->ntried == 0) /* a pair that went once goes again as a pair */
        r->pd_mode = !sess && ig_pick_pd_route(r, s);
    ig_pick_result res = r->pd_mode ? ig_pick_pd(r, &pcfg, s, &prefill, &prefill_probe, &w, &probe)
                                    : ig_pick(r, &pcfg, s, sess, &w, &probe);
    switch (res) {
    case IG_PICK_OK: break;
    case IG_PICK_BEHIND:
        enqueue(r, 0);
        if (r->wait.queued)
            ig_admq_dispatch(r->px->admq);
        return;
    case IG_PICK_FULL:
    case IG_PICK_PAUSED:
    case IG_PICK_SESSION_WAIT: enqueue(r, 0); return; /* wait for a slot, or for continue */
    case IG_PICK_NO_WORKERS:
        ig_admq_leave(r->px->admq, &r->wait);
        respond_error(r, 503, "service_unavailable", "no_workers", "no worker is available");
        return;
    case IG_PICK_UNKNOWN_MODEL:
        ig_admq_leave(r->px->admq, &r->wait);
        snprintf(msg, sizeof(msg), "model '%.*s' is not served by any worker", (int)f->model_len, f->model);
        respond_error(r, 404, "invalid_request_error", "model_not_found", msg);
        return;
    case IG_PICK_UNHEALTHY:
        ig_admq_leave(r->px->admq, &r->wait);
        snprintf(msg, sizeof(msg), "no healthy worker serves %s%.*s%s",
                 f->has_model ? "model '" : "this request", (int)f->model_len, f->has_model ? f->model : "",
                 f->has_model ? "'" : "");
        respond_error(r, 503, "service_unavailable", "no_healthy_workers", msg);
        return;
    case IG_PICK_COOLING:
        ig_admq_leave(r->px->admq, &r->wait);
        respond_error(r, 503, "service_unavailable", "no_healthy_workers",
                      "every worker for this request is cooling down after failures");
        return;
    case IG_PICK_EXHAUSTED:
        ig_admq_leave(r->px->admq, &r->wait);
        no_worker_left(r);
        return;
    }
    dequeue_for_dispatch(r);
    if (r->ntried > 0)
        count_retry(r, w);
    else if (!sess && !prefill && r->group < 0 && r->route != IG_R_SESSION && is_admin_bearer(r))
        hooks.pin_admin(w);
    if (prefill) {
        int rc = ig_pd_prepare(r, prefill, prefill_probe, pcfg.pd_vllm);
        ig_count(rc ? &r->px->stats->pd_bootstrap_failures : &r->px->stats->pd_requests, 1);
        if (rc) {
            ig_pick_release(r, w, probe, 0);
            respond_error(
                r, rc == -ENOMEM ? 503 : 400, rc == -ENOMEM ? "service_unavailable" : "invalid_request_error",
                rc == -E2BIG    ? "batch_too_large"
                : rc == -ENOMEM ? "out_of_memory"
                                : "invalid_request",
                rc == -E2BIG    ? "a disaggregated batch holds at most 4096 prompts"
                : rc == -ENOMEM ? "out of memory"
                                : "the request body must be a JSON object with well-formed prompts");
            return;
        }
    }
    r->probe = probe;
    if (!prefill) {
        send_to(r, w, 0);
        return;
    }
    /* the prefill goes first and the decode at once after it (vLLM: once
     * the prefill has answered), unless the prefill failed at once and its
     * retry sent a pair of its own, or ended the request */
    assign(r, w);
    r->pd->decode_pending = !pcfg.pd_vllm;
    ig_pd_send(r);
    if (r->pd && r->pd->decode_pending) {
        r->pd->decode_pending = 0;
        send_assigned(r, 0);
    }
}

/* One half of a pair failed before the client saw a byte: the pair goes
 * again on other workers, within the retry budget. */
static void pd_retry_pair(ig_request *r)
{
    ig_count(&r->px->stats->pd_pair_retries, 1);
    r->want_backoff = 1;
    body_rewind(r);
    pick_and_send(r);
}

/* return_logprob: the prefill ended, so the held answer goes (and ends, if
 * the decode's has). 1 when the request is over. */
static int pd_merge_over(ig_request *r)
{
    if (!r->pd->merge || !r->resp_started)
        return 0;
    ig_pd_merge_prefill_over(r);
    if (!r->pd->decode_done) {
        ig_pd_merge_pump(r, 0);
        return 0;
    }
    ig_pd_merge_pump(r, 1);
    r->res->done(r);
    return 1;
}

void ig_proxy_pd_leg_done(ig_request *r, ig_worker *w)
{
    uint64_t now = uv_hrtime();
    ig_hist_observe(&r->px->stats->pd_prefill, (now - r->pd->start_ns) / 1000);
    if (ig_breaker_success(w))
        hooks.breaker_changed();
    if (r->pd->vllm && r->worker && !r->up && !r->cwait.w) {
        /* the prefill holds the KV for a remote decode: the decode gets its kv_transfer_params */
        int rc = ig_pd_vllm_decode(r);
        if (rc == -ENOENT) /* none: the decode runs the whole request */
            ig_count(&r->px->stats->pd_kv_transfer_failures, 1);
        else if (rc)
            r->pd->dins.len = 0;
        send_assigned(r, 0);
        return;
    }
    if (pd_merge_over(r))
        return;
    if (r->resp_started && r->up)
        r->res->retire(r); /* neither half reads the request any more */
}

void ig_proxy_pd_leg_failed(ig_request *r, ig_worker *w, int status, int err, const char *why, int connect)
{
    ig_count(&r->px->stats->pd_prefill_failures, 1);
    if (status >= 500)
        atomic_fetch_add_explicit(&w->stats.responses_5xx, 1, memory_order_relaxed);
    int overloaded = status == 503 || status == 429;
    if (!status || ig_breaker_is_failure_status(status))
        worker_failed(r, w, connect);
    ig_info("%.*s prefill worker %s failed: %s%s", (int)r->rid_len, r->rid, w->url,
            status ? "answered "
            : err  ? uv_strerror(err)
            : why  ? why
                   : "protocol error",
            status ? (overloaded ? "overloaded" : "an error") : "");
    if (pd_merge_over(r))
        return;
    if (r->resp_started) {
        /* the decode answers already: it ends by itself, with the KV or without */
        if (r->up)
            r->res->retire(r);
        return;
    }
    /* before the client saw a byte: the decode stops at once (smg#831) */
    ig_pool_unwait(r->px->up, &r->cwait);
    if (r->up) {
        ig_exchange_cancel(r->up);
        r->up = NULL;
    }
    release_worker(r);
    if (r->ntried > 0)
        r->tried[r->ntried - 1] = w; /* this attempt's culprit: its decode may serve the next */
    if (overloaded && r->requeues < IG_MAX_REQUEUES) {
        ig_admission_overloaded(w, ig_worker_inflight(w), uv_now(r->px->loop));
        r->requeues++;
        r->ntried--; /* not a failure of the worker, not a retry */
        ig_count(&r->px->stats->requeued_overload, 1);
        body_rewind(r);
        enqueue(r, 1);
        if (r->wait.queued)
            ig_admq_dispatch(r->px->admq);
        return;
    }
    char text[360], msg[480];
    if (status >= 400 && status < 500) { /* the request is at fault: no other pair would take it */
        snprintf(msg, sizeof(msg), "the prefill worker refused the request (status %d): %s", status,
                 ig_pd_error_text(r, text, sizeof(text)));
        respond_error(r, status, "invalid_request_error", "prefill_bad_request", msg);
        return;
    }
    if (status && !retry_allowed(r)) {
        snprintf(msg, sizeof(msg), "the prefill worker failed (status %d) and no retry is left: %s", status,
                 ig_pd_error_text(r, text, sizeof(text)));
        respond_error(r, 502, "upstream_error", "prefill_failed", msg);
        return;
    }
    pd_retry_pair(r);
}

/* A queued request gets another chance at a worker slot. */
static void retry_queued(ig_waiter *wt)
{
    ig_request *r = ig_container_of(wt, ig_request, wait);
    if (r->wait.queued)
        pick_and_send(r);
}

static void enter(ig_request *r)
{
    r->ntried = 0;
    r->resent = 0;
    r->requeues = 0;
    r->last_timeout = 0;
    r->last_refused = 0;
    r->last_tls = 0;
    r->backing_off = r->want_backoff = 0;
    r->pd_mode = r->pd_retry = 0;
    r->pd = NULL;
    r->in_proxy = 1;
    r->h = &ig_proxy_handler;
    r->wait.retry = retry_queued;
    r->cwait.ready = conn_ready;
    r->cwait.w = NULL;
    ig_retry_enter(&g_budget);
    pick_and_send(r);
}

void ig_proxy_forward(ig_request *r, int group)
{
    ig_body_fields *f = &r->fields; /* not an LLM request: nothing of its body matters */
    f->has_model = 0;
    f->model_len = 0;
    f->n_text = 0;
    f->user.len = 0;
    f->stream = 0;
    f->return_logprob = 0;
    f->max_tokens = -1;
    r->group = group;
    enter(r);
}

void ig_proxy_start(ig_request *r)
{
    const char *err = NULL;
    int rc = ig_body_scan(r->body.p, r->body.len, &r->fields, &err);
    if (rc) {
        char msg[160];
        snprintf(msg, sizeof(msg), "invalid JSON body: %s", err ? err : "malformed");
        respond_error(r, 400, "invalid_request_error",
                      rc == -ENAMETOOLONG ? "model_name_too_long" : "invalid_json", msg);
        return;
    }
    r->group = -1;
    enter(r);
}

static void proxy_abort(ig_request *r)
{
    backoff_leave(r);
    ig_admq_leave(r->px->admq, &r->wait); /* a queued request just leaves: nothing was sent */
    ig_pool_unwait(r->px->up, &r->cwait);
    if (r->up) {
        /* closing at once is how the worker learns the client left: it can stop generating */
        ig_exchange_cancel(r->up);
        r->up = NULL;
    }
    ig_pd_cancel(r);
    body_rewind(r);
    release_worker(r);
}

static void proxy_timeout(ig_request *r)
{
    if (r->wait.queued) {
        ig_admq_leave(r->px->admq, &r->wait);
        ig_count(&r->px->stats->queue_timeouts, 1);
        respond_error(r, 503, "service_unavailable", "queue_timeout",
                      "no worker slot freed within --queue-timeout-secs");
        return;
    }
    if (!r->resp_started && r->worker)
        worker_failed(r, r->worker, 0); /* it took the request and never answered */
    proxy_abort(r);
    if (!r->resp_started)
        respond_error(r, 504, "timeout", "upstream_timeout",
                      "the worker did not answer within --request-timeout-secs");
    else
        r->res->cut(r);
}

static void proxy_resume(ig_request *r)
{
    if (r->up)
        ig_exchange_resume(r->up);
}

static void proxy_stop(ig_request *r, int why)
{
    if (why == IG_STOP_TIMEOUT)
        proxy_timeout(r);
    else
        proxy_abort(r);
}

const ig_handler ig_proxy_handler = {
    .resume = proxy_resume, .stop = proxy_stop, .finish = proxy_finish, .body_more = proxy_body_more};
