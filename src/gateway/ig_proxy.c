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
#include "../registry/ig_sessions.h"
#include "ig_gateway.h"

typedef struct outv {
    uv_buf_t b[8];
    unsigned n;
} outv;

static void pick_and_send(ig_client *c);
static void enqueue(ig_client *c, int front);
static void requeue(ig_upconn *up, int reusable);
static void send_to(ig_client *c, ig_worker *w, int fresh);
static void connect_to(ig_client *c, ig_worker *w);
static ig_worker *choose(ig_client *c, ig_worker *const *cand, int n, const ig_ring *ring, int *probe,
                         int *full);
static int candidates(ig_client *c, const ig_snapshot *s, ig_worker *const **cand, int *known,
                      const ig_ring **ring);
static void on_connect(uv_connect_t *req, int status);
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

static void detach(ig_client *c, ig_upconn *up)
{
    if (up)
        up->c = NULL;
    c->up = NULL;
}

static int flush(ig_client *c, outv *o, ig_block *blk)
{
    int rc = 0;
    if (o->n)
        rc = ig_client_write(c, o->b, o->n, blk);
    o->n = 0;
    return rc;
}

static void push(ig_client *c, outv *o, ig_block *blk, const char *p, size_t n)
{
    if (!n)
        return;
    if (o->n == 8)
        flush(c, o, blk);
    o->b[o->n++] = uv_buf_init((char *)p, (unsigned)n);
}

static int is_head_request(ig_client *c)
{
    return ig_h1req_method(&c->rq) == HTTP_HEAD;
}

/* Build the client's response head from the worker's head at base. The
 * framing is ours, from what the parser decided, never the worker's own
 * framing fields (which its Connection header may even have named). */
static int send_head(ig_client *c, ig_upconn *up, const char *base, outv *o)
{
    const ig_h1resp *r = &up->resp;
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
            : ig_http_copy_headers(h, base, up->hdrs, up->nhdrs,
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
    push(c, o, NULL, h->data, h->len);
    return 0;
}

/* The worker's overload answer was read to its end: keep the connection,
 * put the request back at the front of the queue. */
static void requeue(ig_upconn *up, int reusable)
{
    ig_client *c = up->c;
    if (up->resp.status >= 500)
        atomic_fetch_add_explicit(&up->w->stats.responses_5xx, 1, memory_order_relaxed);
    detach(c, up);
    up->discard = 0;
    ig_upstream_release(up, reusable);
    release_worker(c);
    c->requeues++;
    c->ntried--; /* not a failure of the worker, not a retry */
    ig_count(&c->th->stats.requeued_overload, 1);
    enqueue(c, 1);
    if (c->wait.queued)
        ig_admq_dispatch(&c->th->admq);
}

static void complete(ig_upconn *up, int reusable)
{
    ig_client *c = up->c;
    ig_worker *w = up->w;
    detach(c, up);
    if (c->status >= 500)
        atomic_fetch_add_explicit(&w->stats.responses_5xx, 1, memory_order_relaxed);
    if (ig_breaker_is_failure_status(c->status))
        worker_failed(c, w, 0);
    else if (ig_breaker_success(w))
        ig_control_poke();
    ig_upstream_release(up, reusable);
    release_worker(c);
    ig_debug("%.*s %d via %s", (int)c->rid_len, c->rid, c->status, up->w->url);
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
static void exchange_failed(ig_upconn *up, int err, const char *why)
{
    ig_client *c = up->c;
    ig_worker *w = up->w;
    int resend = !up->got_bytes && up->reused && !c->resent &&
                 (!up->sent_any || idempotent(c) || c->th->cfg->retry_non_idempotent);
    detach(c, up);
    ig_upstream_close(up);
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
    if (!resend || up->got_bytes)
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

/* The response head is whole in base[0..len). 0: go on with the body (or
 * the next head after a 1xx); otherwise the exchange is broken (*why). */
static int take_head(ig_upconn *up, const char *base, size_t len, outv *o, const char **why)
{
    ig_client *c = up->c;
    ig_thread *th = up->th;
    if (!up->hdrs && !(up->hdrs = ig_freelist_get(&th->hdr_tables))) {
        *why = "out of memory";
        return -ENOMEM;
    }
    int rc =
        ig_h1resp_head(&up->resp, base, len, is_head_request(c), up->hdrs, IG_MAX_HEADERS, &up->nhdrs, why);
    if (rc)
        return rc;
    if (up->resp.status < 200) {
        /* 100 and 103 are not forwarded: the final answer follows */
        up->hbuf.len = 0;
        ig_h1resp_init(&up->resp);
        return 0;
    }
    up->head_done = 1;
    int st = up->resp.status;
    if ((st == 503 || st == 429) && c->requeues < IG_MAX_REQUEUES) {
        /* the worker is full, not broken: drop its answer, learn its
         * capacity, and give the request back its turn in the queue */
        up->discard = 1;
        ig_admission_overloaded(up->w, ig_worker_inflight(up->w), uv_now(&th->loop));
    } else if ((rc = send_head(c, up, base, o))) {
        *why = "response head too large";
        return rc;
    }
    ig_upstream_drop_head(up); /* copied out: a long stream need not keep it */
    return 0;
}

static void process(ig_upconn *up, ig_block *blk, const char *p, size_t n)
{
    ig_client *c = up->c;
    const char *end = p + n, *why = NULL;
    outv o = {.n = 0};
    if (!c->first_byte_ns)
        c->first_byte_ns = uv_hrtime();
    if (!up->got_bytes)
        ig_upstream_note_ttfb(up, (c->first_byte_ns - up->sent_ns) / 1000);
    up->got_bytes = 1;
    while (p < end || up->head_done) {
        if (!up->head_done) {
            size_t e = ig_h1resp_head_scan(&up->resp, p, (size_t)(end - p));
            const char *base = p;
            if (!e || up->hbuf.len) {
                /* the head spans reads: gather it (bounded by hbuf's cap) */
                size_t take = e ? e : (size_t)(end - p);
                if (ig_buf_take(&up->hbuf, &up->th->heads) || ig_buf_append(&up->hbuf, p, take)) {
                    why = "response head too large";
                    goto fail;
                }
                if (!e)
                    break;
                base = up->hbuf.data;
                e = up->hbuf.len;
                p += take;
            } else {
                p += e; /* whole in this read: parsed in place */
            }
            if (take_head(up, base, e, &o, &why))
                goto fail;
            continue;
        }
        ig_h1span sp[8];
        int ns;
        size_t used;
        int rc = ig_h1resp_body(&up->resp, p, (size_t)(end - p), c->dechunk, sp, 8, &ns, &used, &why);
        if (rc < 0)
            goto fail;
        for (int i = 0; i < ns && !up->discard; i++)
            push(c, &o, blk, sp[i].p, sp[i].n);
        p += used;
        if (rc == 0) {
            if (p == end)
                break;
            continue; /* the output filled up: more of the same read */
        }
        /* message complete: anything after it is a worker bug, so no reuse */
        flush(c, &o, blk);
        int reusable = p == end && up->resp.keep_alive && !up->resp.suspect;
        if (up->c && up->discard)
            requeue(up, reusable);
        else if (up->c)
            complete(up, reusable);
        return;
    }
    flush(c, &o, blk);
    if (up->c && c->resp_started) {
        /* the response streams: what it no longer needs goes back to the thread */
        if (c->pending_writes == 0)
            ig_buf_give(&c->obuf, &c->th->heads);
        ig_client_retire_request(c);
    }
    if (up->c && ig_client_wants_pause(c) && !up->paused) {
        uv_read_stop((uv_stream_t *)&up->tcp);
        up->paused = 1;
    }
    return;
fail:
    flush(c, &o, blk);
    if (up->c)
        exchange_failed(up, 0, why);
}

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ig_upconn *up = h->data;
    ig_block *b = ig_block_get(&up->th->blocks);
    (void)suggested;
    buf->base = b ? b->data : NULL;
    buf->len = b ? IG_BLOCK_SIZE : 0;
}

static void up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ig_upconn *up = s->data;
    ig_thread *th = up->th;
    ig_block *blk = buf->base ? ig_container_of(buf->base, ig_block, data) : NULL;
    if (nread > 0 && up->state == IG_U_BUSY && up->c) {
        process(up, blk, buf->base, (size_t)nread);
    } else if (nread < 0 && up->state == IG_U_BUSY && up->c) {
        if (nread == UV_EOF && up->head_done && ig_h1resp_eof(&up->resp)) {
            /* a close-delimited body ends here */
            if (up->discard)
                requeue(up, 0);
            else
                complete(up, 0);
            goto out;
        }
        exchange_failed(up, (int)nread, NULL);
    } else if (nread != 0) {
        /* an idle connection closed or talked out of turn: retire it */
        if (nread == UV_EOF && up->state == IG_U_IDLE)
            ig_upstream_note_idle_close(up);
        ig_upstream_close(up);
    }
out:
    if (blk)
        ig_block_put(&th->blocks, blk);
}

void ig_upstream_start_reading(ig_upconn *up)
{
    uv_read_start((uv_stream_t *)&up->tcp, up_alloc, up_read);
}

static void up_write_cb(uv_write_t *req, int status)
{
    ig_upconn *up = req->data;
    up->writing = 0;
    if (status < 0 && status != UV_ECANCELED && up->c && up->state == IG_U_BUSY)
        exchange_failed(up, status, NULL);
    else if (status == 0 && up->c)
        ig_buf_give(&up->c->uhead, &up->th->heads); /* a resend builds it again */
}

static int build_request_head(ig_client *c, ig_worker *w)
{
    ig_buf *h = &c->uhead;
    h->len = 0;
    int rc = ig_buf_take(h, &c->th->heads);
    rc = rc ? rc : ig_buf_puts(h, llhttp_method_name((llhttp_method_t)ig_h1req_method(&c->rq)));
    rc = rc ? rc : ig_buf_puts(h, " ");
    rc = rc ? rc : ig_buf_append(h, c->rbuf.data + c->rq.url_off, c->rq.url_len);
    rc = rc ? rc : ig_buf_puts(h, " HTTP/1.1\r\nhost: ");
    rc = rc ? rc : ig_buf_append(h, w->host_header, w->host_header_len);
    rc = rc ? rc : ig_buf_puts(h, "\r\n");
    rc = rc ? rc
            : ig_http_copy_headers(h, c->rbuf.data, c->rq.hdrs, c->rq.nhdrs,
                                   IG_COPY_DROP_HOST | IG_COPY_DROP_LENGTH | IG_COPY_DROP_EXPECT |
                                       IG_COPY_DROP_REQUEST_ID);
    rc = rc ? rc : ig_buf_puts(h, "x-request-id: ");
    rc = rc ? rc : ig_buf_append(h, c->rid, c->rid_len);
    rc = rc ? rc : ig_buf_puts(h, "\r\ncontent-length: ");
    rc = rc ? rc : ig_buf_putu(h, c->rq.body_len);
    rc = rc ? rc : ig_buf_puts(h, "\r\n\r\n");
    return rc;
}

static void send_request(ig_upconn *up)
{
    ig_client *c = up->c;
    ig_h1resp_init(&up->resp);
    up->hbuf.len = 0;
    up->got_bytes = 0;
    up->head_done = 0;
    up->sent_any = 0;
    up->nreq++;
    ig_upstream_count_use(up);
    atomic_fetch_add_explicit(&up->w->stats.requests, 1, memory_order_relaxed);
    if (build_request_head(c, up->w)) {
        detach(c, up);
        ig_upstream_release(up, 1);
        release_worker(c);
        ig_client_error(c, 431, "invalid_request_error", "headers_too_large", "request head too large");
        return;
    }
    uv_buf_t bufs[2] = {uv_buf_init(c->uhead.data, (unsigned)c->uhead.len),
                        uv_buf_init(c->rbuf.data + c->rq.body_off, (unsigned)c->rq.body_len)};
    unsigned n = c->rq.body_len ? 2 : 1;
    /* try first: a uv_write that completes still costs libuv an epoll_ctl
     * when it drains, one syscall per request for nothing */
    up->sent_ns = uv_hrtime();
    int rc = uv_try_write((uv_stream_t *)&up->tcp, bufs, n);
    if (rc == UV_EAGAIN)
        rc = 0;
    if (rc < 0) {
        exchange_failed(up, rc, NULL); /* nothing went out: safe to send again */
        return;
    }
    size_t done = (size_t)rc;
    up->sent_any = done > 0;
    if (done == c->uhead.len + c->rq.body_len) {
        /* all out: a long stream need not keep the head (a resend rebuilds it) */
        ig_buf_give(&c->uhead, &c->th->heads);
        return;
    }
    unsigned first = 0;
    if (done >= bufs[0].len) {
        done -= bufs[0].len;
        first = 1;
    }
    bufs[first].base += done;
    bufs[first].len -= done;
    rc = uv_write(&up->wreq, (uv_stream_t *)&up->tcp, bufs + first, n - first, up_write_cb);
    if (rc) {
        exchange_failed(up, rc, NULL);
        return;
    }
    up->writing = 1;
    up->sent_any = 1; /* how much of it libuv writes before a failure is not known */
}

static void on_connect(uv_connect_t *req, int status)
{
    ig_upconn *up = req->data;
    ig_client *c = up->c;
    if (status == 0 && up->state == IG_U_CONNECTING) {
        uv_timer_stop(&up->timer);
        up->state = IG_U_BUSY;
        uv_tcp_nodelay(&up->tcp, 1);
        ig_upstream_start_reading(up);
        send_request(up);
        return;
    }
    int timed_out = up->timed_out || status == UV_ETIMEDOUT;
    if (up->state != IG_U_CLOSING)
        ig_upstream_close(up);
    if (!c)
        return;
    detach(c, up);
    worker_failed(c, up->w, 1);
    ig_info("%.*s connect to %s failed: %s", (int)c->rid_len, c->rid, up->w->url,
            timed_out ? "timed out" : uv_strerror(status));
    c->last_timeout = timed_out;
    c->last_refused = status == UV_ECONNREFUSED;
    release_worker(c);
    pick_and_send(c);
}

/* A new connection to w for c, which already holds its in-flight unit on w. */
static void connect_to(ig_client *c, ig_worker *w)
{
    ig_upconn *up = ig_upstream_connect(c->th, w, on_connect);
    if (!up) {
        worker_failed(c, w, 1);
        release_worker(c);
        pick_and_send(c);
        return;
    }
    up->c = c;
    c->up = up;
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
    ig_upconn *up = fresh ? NULL : ig_upstream_take(c->th, w);
    if (!up) {
        connect_to(c, w);
        return;
    }
    up->c = c;
    c->up = up;
    send_request(up);
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
    ig_upconn *up = c->up;
    if (up) {
        /* closing at once is how the worker learns the client left: it can stop generating */
        detach(c, up);
        ig_upstream_close(up);
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
    ig_upconn *up = c->up;
    if (up && up->paused && up->state == IG_U_BUSY) {
        up->paused = 0;
        ig_upstream_start_reading(up);
    }
}
