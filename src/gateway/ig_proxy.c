/* The per-request exchange with a worker: pick one, take a pooled connection
 * (or connect), send the request, stream the answer back as it arrives, and
 * decide what may be retried. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../core/ig_log.h"
#include "ig_gateway.h"

typedef struct outv {
    uv_buf_t b[8];
    unsigned n;
} outv;

static void pick_and_send(ig_client *c);
static void send_to(ig_client *c, ig_worker *w, int fresh);

static void release_worker(ig_client *c)
{
    if (c->worker) {
        atomic_fetch_sub_explicit(&c->worker->inflight, 1, memory_order_relaxed);
        c->worker = NULL;
    }
}

static void detach(ig_client *c, ig_upconn *up)
{
    if (up)
        up->c = NULL;
    c->up = NULL;
}

/* The output vector of the read being processed; one read is processed at a
 * time per thread, so a thread-local slot is enough. */
static _Thread_local outv *cur_out;
static _Thread_local ig_block *cur_blk;

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


/* ---- response parsing (llhttp, response mode): the head is copied out so it
 * can be rewritten; body bytes are forwarded from the read block as they are */

static int hdr_append(ig_upconn *up, const char *at, size_t len)
{
    if (ig_buf_append(&up->hbuf, at, len)) {
        up->overflow = 1;
        return HPE_USER;
    }
    return 0;
}

static int r_on_message_begin(llhttp_t *p)
{
    ig_upconn *up = p->data;
    up->hbuf.len = 0;
    up->nhdrs = 0;
    up->in_value = 0;
    up->reason_len = 0;
    up->head_done = 0;
    up->msg_done = 0;
    return 0;
}

static int r_on_status(llhttp_t *p, const char *at, size_t len)
{
    ig_upconn *up = p->data;
    if (!up->reason_len)
        up->reason_off = (uint32_t)up->hbuf.len;
    up->reason_len += (uint32_t)len;
    return hdr_append(up, at, len);
}

static int r_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    ig_upconn *up = p->data;
    if (up->in_value || up->nhdrs == 0) {
        if (up->nhdrs == IG_MAX_HEADERS) {
            up->overflow = 1;
            return HPE_USER;
        }
        ig_hdr *h = &up->hdrs[up->nhdrs++];
        h->name_off = (uint32_t)up->hbuf.len;
        h->name_len = 0;
        h->value_off = (uint32_t)up->hbuf.len;
        h->value_len = 0;
        up->in_value = 0;
    }
    up->hdrs[up->nhdrs - 1].name_len += (uint32_t)len;
    return hdr_append(up, at, len);
}

static int r_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    ig_upconn *up = p->data;
    ig_hdr *h = &up->hdrs[up->nhdrs - 1];
    if (!up->in_value) {
        up->in_value = 1;
        h->value_off = (uint32_t)up->hbuf.len;
    }
    h->value_len += (uint32_t)len;
    return hdr_append(up, at, len);
}

static int r_on_headers_complete(llhttp_t *p)
{
    ig_upconn *up = p->data;
    up->head_done = 1;
    if (p->status_code < 200 && p->status_code != 101) {
        up->skip_informational = 1; /* 100/103 are not forwarded */
        return 0;
    }
    up->pause_at_headers = 1;
    return HPE_PAUSED;
}

static int r_on_body(llhttp_t *p, const char *at, size_t len)
{
    ig_upconn *up = p->data;
    /* only an HTTP/1.0 client needs the chunk framing taken off */
    if (up->c && up->c->dechunk && cur_out)
        push(up->c, cur_out, cur_blk, at, len);
    return 0;
}

static int r_on_message_complete(llhttp_t *p)
{
    ig_upconn *up = p->data;
    if (up->skip_informational) {
        up->skip_informational = 0;
        return 0;
    }
    up->msg_done = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t resp_settings = {
    .on_message_begin = r_on_message_begin,
    .on_status = r_on_status,
    .on_header_field = r_on_header_field,
    .on_header_value = r_on_header_value,
    .on_headers_complete = r_on_headers_complete,
    .on_body = r_on_body,
    .on_message_complete = r_on_message_complete,
};

/* Build the client's response head from the worker's. */
static int send_head(ig_client *c, ig_upconn *up, outv *o)
{
    llhttp_t *p = &up->parser;
    ig_buf *h = &c->obuf;
    int chunked = (p->flags & F_CHUNKED) != 0;
    c->status = p->status_code;
    if (c->http10) {
        c->close_after = 1;
        c->dechunk = chunked;
    }
    if (llhttp_message_needs_eof(p))
        c->close_after = 1; /* close-delimited body: only a close can end it */
    h->len = 0;
    int rc = ig_buf_puts(h, "HTTP/1.1 ");
    rc = rc ? rc : ig_buf_putu(h, p->status_code);
    rc = rc ? rc : ig_buf_puts(h, " ");
    if (up->reason_len)
        rc = rc ? rc : ig_buf_append(h, up->hbuf.data + up->reason_off, up->reason_len);
    else
        rc = rc ? rc : ig_buf_puts(h, ig_http_reason(p->status_code));
    rc = rc ? rc : ig_buf_puts(h, "\r\n");
    rc = rc ? rc : ig_http_copy_headers(h, up->hbuf.data, up->hdrs, up->nhdrs, IG_COPY_DROP_REQUEST_ID);
    if (chunked && !c->dechunk)
        rc = rc ? rc : ig_buf_puts(h, "transfer-encoding: chunked\r\n");
    rc = rc ? rc : ig_buf_puts(h, "x-request-id: ");
    rc = rc ? rc : ig_buf_append(h, c->rid, c->rid_len);
    if (c->close_after || !c->keep_alive || c->th->draining) {
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

static void complete(ig_upconn *up, int reusable)
{
    ig_client *c = up->c;
    detach(c, up);
    atomic_fetch_add_explicit(&up->w->requests, 1, memory_order_relaxed);
    ig_upstream_release(up, reusable);
    release_worker(c);
    ig_debug("%.*s %d via %s", (int)c->rid_len, c->rid, c->status, up->w->url);
    ig_client_request_done(c);
}

/* The exchange broke. Resend once when a reused connection died before any
 * response byte (the worker closed an idle keep-alive connection under us);
 * otherwise 502 before the first byte, or cut the stream after it. */
static void exchange_failed(ig_upconn *up, int err)
{
    ig_client *c = up->c;
    int resend = !up->got_bytes && up->reused && !c->resent;
    detach(c, up);
    ig_upstream_close(up);
    ig_info("%.*s worker %s failed: %s%s", (int)c->rid_len, c->rid, up->w->url,
            err ? uv_strerror(err) : "protocol error", resend ? " (resending once)" : "");
    if (resend) {
        c->resent = 1;
        ig_worker *w = c->worker;
        c->worker = NULL;
        atomic_fetch_sub_explicit(&w->inflight, 1, memory_order_relaxed);
        /* same worker, fresh connection: take it back out of the tried list */
        c->ntried--;
        c->tried[c->ntried] = NULL;
        send_to(c, w, 1);
        return;
    }
    release_worker(c);
    if (!c->resp_started)
        ig_client_error(c, 502, "upstream_error", "worker_failed",
                        err == UV_EOF ? "worker closed the connection before answering"
                        : err         ? "worker connection failed"
                                      : "worker sent a malformed response");
    else
        ig_client_close(c);
}

static void process(ig_upconn *up, ig_block *blk, const char *p, size_t n)
{
    ig_client *c = up->c;
    const char *end = p + n;
    outv o = {.n = 0};
    cur_out = &o;
    cur_blk = blk;
    up->got_bytes = 1;
    while (p < end) {
        int body = c->resp_started && !c->dechunk;
        llhttp_errno_t e = llhttp_execute(&up->parser, p, (size_t)(end - p));
        const char *stop = e == HPE_OK ? end : llhttp_get_error_pos(&up->parser);
        if (e != HPE_OK && e != HPE_PAUSED) {
            if (body)
                push(c, &o, blk, p, (size_t)(stop - p));
            flush(c, &o, blk);
            cur_out = NULL;
            if (up->c)
                exchange_failed(up, 0);
            return;
        }
        if (body)
            push(c, &o, blk, p, (size_t)(stop - p));
        p = stop;
        if (e == HPE_OK)
            break;
        llhttp_resume(&up->parser);
        if (up->pause_at_headers) {
            up->pause_at_headers = 0;
            if (send_head(c, up, &o)) {
                cur_out = NULL;
                exchange_failed(up, 0);
                return;
            }
            continue;
        }
        /* message complete: anything after it is a worker bug, so no reuse */
        flush(c, &o, blk);
        cur_out = NULL;
        if (up->c)
            complete(up, p == end && llhttp_should_keep_alive(&up->parser));
        return;
    }
    flush(c, &o, blk);
    cur_out = NULL;
    if (up->c && ig_client_wants_pause(c) && !up->paused) {
        uv_read_stop((uv_stream_t *)&up->tcp);
        up->paused = 1;
    }
}

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ig_upconn *up = h->data;
    ig_block *b = ig_block_get(up->th);
    (void)suggested;
    buf->base = b ? b->data : NULL;
    buf->len = b ? IG_BLOCK_SIZE : 0;
}

static void up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ig_upconn *up = s->data;
    ig_thread *th = up->th;
    ig_block *blk = buf->base ? ig_container_of(buf->base, ig_block, data) : NULL;
    if (nread > 0 && up->state == U_BUSY && up->c) {
        process(up, blk, buf->base, (size_t)nread);
    } else if (nread < 0 && up->state == U_BUSY && up->c) {
        if (nread == UV_EOF && up->head_done) {
            outv o = {.n = 0};
            cur_out = &o;
            cur_blk = NULL;
            llhttp_finish(&up->parser);
            cur_out = NULL;
            if (up->msg_done) {
                complete(up, 0);
                goto out;
            }
        }
        exchange_failed(up, (int)nread);
    } else if (nread != 0) {
        /* an idle connection closed or talked out of turn: retire it */
        ig_upstream_close(up);
    }
out:
    if (blk)
        ig_block_put(th, blk);
}

void ig_upstream_start_reading(ig_upconn *up)
{
    uv_read_start((uv_stream_t *)&up->tcp, up_alloc, up_read);
}

static void up_write_cb(uv_write_t *req, int status)
{
    ig_upconn *up = req->data;
    if (status < 0 && status != UV_ECANCELED && up->c && up->state == U_BUSY)
        exchange_failed(up, status);
}

static int build_request_head(ig_client *c, ig_worker *w)
{
    ig_buf *h = &c->uhead;
    h->len = 0;
    int rc = ig_buf_puts(h, llhttp_method_name((llhttp_method_t)llhttp_get_method(&c->parser)));
    rc = rc ? rc : ig_buf_puts(h, " ");
    rc = rc ? rc : ig_buf_append(h, c->rbuf.data + c->url_off, c->url_len);
    rc = rc ? rc : ig_buf_puts(h, " HTTP/1.1\r\nhost: ");
    rc = rc ? rc : ig_buf_append(h, w->host_header, w->host_header_len);
    rc = rc ? rc : ig_buf_puts(h, "\r\n");
    rc = rc ? rc : ig_http_copy_headers(h, c->rbuf.data, c->hdrs, c->nhdrs,
                                         IG_COPY_DROP_HOST | IG_COPY_DROP_LENGTH |
                                             IG_COPY_DROP_EXPECT | IG_COPY_DROP_REQUEST_ID);
    rc = rc ? rc : ig_buf_puts(h, "x-request-id: ");
    rc = rc ? rc : ig_buf_append(h, c->rid, c->rid_len);
    rc = rc ? rc : ig_buf_puts(h, "\r\ncontent-length: ");
    rc = rc ? rc : ig_buf_putu(h, c->body_len);
    rc = rc ? rc : ig_buf_puts(h, "\r\n\r\n");
    return rc;
}

static void send_request(ig_upconn *up)
{
    ig_client *c = up->c;
    llhttp_init(&up->parser, HTTP_RESPONSE, &resp_settings);
    up->parser.data = up;
    up->got_bytes = 0;
    up->head_done = 0;
    up->msg_done = 0;
    up->skip_informational = 0;
    up->pause_at_headers = 0;
    up->overflow = 0;
    up->nreq++;
    if (build_request_head(c, up->w)) {
        detach(c, up);
        ig_upstream_release(up, 1);
        release_worker(c);
        ig_client_error(c, 431, "invalid_request_error", "headers_too_large", "request head too large");
        return;
    }
    uv_buf_t bufs[2] = {uv_buf_init(c->uhead.data, (unsigned)c->uhead.len),
                        uv_buf_init(c->rbuf.data + c->body_off, (unsigned)c->body_len)};
    unsigned n = c->body_len ? 2 : 1;
    /* try first: a uv_write that completes still costs libuv an epoll_ctl
     * when it drains, one syscall per request for nothing */
    int rc = uv_try_write((uv_stream_t *)&up->tcp, bufs, n);
    if (rc == UV_EAGAIN)
        rc = 0;
    if (rc < 0) {
        exchange_failed(up, rc);
        return;
    }
    size_t done = (size_t)rc;
    if (done == c->uhead.len + c->body_len)
        return;
    unsigned first = 0;
    if (done >= bufs[0].len) {
        done -= bufs[0].len;
        first = 1;
    }
    bufs[first].base += done;
    bufs[first].len -= done;
    rc = uv_write(&up->wreq, (uv_stream_t *)&up->tcp, bufs + first, n - first, up_write_cb);
    if (rc)
        exchange_failed(up, rc);
}

static void on_connect(uv_connect_t *req, int status)
{
    ig_upconn *up = req->data;
    ig_client *c = up->c;
    if (status == 0 && up->state == U_CONNECTING) {
        uv_timer_stop(&up->timer);
        up->state = U_BUSY;
        uv_tcp_nodelay(&up->tcp, 1);
        ig_upstream_start_reading(up);
        send_request(up);
        return;
    }
    int timed_out = up->timed_out || status == UV_ETIMEDOUT;
    if (up->state != U_CLOSING)
        ig_upstream_close(up);
    if (!c)
        return;
    detach(c, up);
    atomic_fetch_add_explicit(&up->w->connect_failures, 1, memory_order_relaxed);
    ig_info("%.*s connect to %s failed: %s", (int)c->rid_len, c->rid, up->w->url,
            timed_out ? "timed out" : uv_strerror(status));
    c->last_timeout = timed_out;
    release_worker(c);
    pick_and_send(c);
}

static void send_to(ig_client *c, ig_worker *w, int fresh)
{
    ig_thread *th = c->th;
    c->tried[c->ntried++] = w;
    c->worker = w;
    atomic_fetch_add_explicit(&w->inflight, 1, memory_order_relaxed);
    ig_upconn *up = fresh ? NULL : ig_upstream_take(th, w);
    if (up) {
        up->c = c;
        c->up = up;
        send_request(up);
        return;
    }
    up = ig_upstream_connect(th, w, on_connect);
    if (!up) {
        release_worker(c);
        pick_and_send(c);
        return;
    }
    up->c = c;
    c->up = up;
}

static void pick_and_send(ig_client *c)
{
    static _Thread_local ig_worker *cand[IG_MAX_WORKERS];
    const ig_registry *r = ig_registry_get();
    const ig_body_fields *f = &c->fields;
    int n = r ? ig_registry_candidates(r, f->has_model ? f->model : NULL, f->model_len, cand,
                                       IG_MAX_WORKERS)
              : 0;
    if (n == 0 && c->ntried == 0) {
        if (f->has_model && r && r->n > 0) {
            char msg[IG_MODEL_MAX + 64];
            snprintf(msg, sizeof(msg), "model '%.*s' is not served by any worker",
                     (int)f->model_len, f->model);
            ig_client_error(c, 404, "invalid_request_error", "model_not_found", msg);
        } else {
            ig_client_error(c, 503, "service_unavailable", "no_workers", "no worker is available");
        }
        return;
    }
    for (int i = 0; i < n;) {
        int seen = 0;
        for (int t = 0; t < c->ntried && !seen; t++)
            seen = cand[i] == c->tried[t];
        if (seen)
            cand[i] = cand[--n];
        else
            i++;
    }
    if (n == 0 || c->ntried >= IG_MAX_TRIES) {
        if (c->last_timeout)
            ig_client_error(c, 504, "timeout", "upstream_connect_timeout",
                            "timed out connecting to the workers");
        else
            ig_client_error(c, 502, "upstream_error", "worker_unreachable",
                            "could not connect to any worker");
        return;
    }
    int i = ig_policy_pick(c->th->cfg->policy, &c->th->pol, cand, n);
    send_to(c, cand[i], 0);
}

void ig_proxy_start(ig_client *c)
{
    const char *err = NULL;
    int rc = ig_body_scan(c->rbuf.data + c->body_off, c->body_len, &c->fields, &err);
    if (rc) {
        char msg[160];
        snprintf(msg, sizeof(msg), "invalid JSON body: %s", err ? err : "malformed");
        ig_client_error(c, 400, "invalid_request_error",
                        rc == -ENAMETOOLONG ? "model_name_too_long" : "invalid_json", msg);
        return;
    }
    c->ntried = 0;
    c->resent = 0;
    c->last_timeout = 0;
    pick_and_send(c);
}

void ig_proxy_abort(ig_client *c)
{
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
    if (up && up->paused && up->state == U_BUSY) {
        up->paused = 0;
        ig_upstream_start_reading(up);
    }
}
