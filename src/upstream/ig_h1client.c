/* One HTTP/1.1 exchange with a worker (ig_h1client.h). */
#include "ig_h1client.h"

#include <errno.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>

#include "../core/ig_log.h"

typedef struct outv {
    uv_buf_t b[8];
    unsigned n;
} outv;

static void on_connect(uv_connect_t *req, int status);

static void detach(ig_upconn *up)
{
    up->owner = NULL;
    up->cb = NULL;
}

/* The exchange broke: close, then tell the owner (which may start another
 * exchange at once, on another connection). */
static void fail(ig_upconn *up, int err, const char *why)
{
    const ig_exchange_cb *cb = up->cb;
    void *owner = up->owner;
    unsigned what = (up->got_bytes ? IG_X_GOT_BYTES : 0) | (up->reused ? IG_X_REUSED : 0) |
                    (up->sent_any ? IG_X_SENT_ANY : 0);
    detach(up);
    ig_pool_close(up);
    if (cb)
        cb->on_error(owner, err, why, what);
}

static void finish(ig_upconn *up, int reusable)
{
    const ig_exchange_cb *cb = up->cb;
    void *owner = up->owner;
    detach(up);
    /* answered before the request body was all out: the rest cannot follow */
    cb->on_done(owner, reusable && !up->body_open);
}

static void flush(ig_upconn *up, outv *o, ig_block *blk, int read_end)
{
    if ((o->n || read_end) && up->cb)
        up->cb->on_body(up->owner, o->b, o->n, blk, read_end);
    o->n = 0;
}

static void push(ig_upconn *up, outv *o, ig_block *blk, const char *p, size_t n)
{
    if (!n)
        return;
    if (o->n == 8)
        flush(up, o, blk, 0);
    o->b[o->n++] = uv_buf_init((char *)p, (unsigned)n);
}

/* The response head is whole in base[0..len). 0: go on with the body (or
 * the next head after a 1xx); otherwise the exchange is broken (*why). */
static int take_head(ig_upconn *up, const char *base, size_t len, const char **why)
{
    if (!up->hdrs && !(up->hdrs = ig_freelist_get(up->ctx->hdr_tables))) {
        *why = "out of memory";
        return -ENOMEM;
    }
    int rc =
        ig_h1resp_head(&up->resp, base, len, up->head_request, up->hdrs, IG_MAX_HEADERS, &up->nhdrs, why);
    if (rc)
        return rc;
    if (up->resp.status < 200) {
        /* 100 and 103 are not forwarded: the final answer follows */
        up->hbuf.len = 0;
        ig_h1resp_init(&up->resp);
        return 0;
    }
    up->head_done = 1;
    const char *ph = up->ctx->cfg->process_header;
    if (ph && up->proc < 0) /* which process answered: it is where this connection goes */
        for (int i = 0; i < up->nhdrs; i++)
            if (ig_http_name_is(base + up->hdrs[i].name_off, up->hdrs[i].name_len, ph)) {
                ig_pool_learn_process(up, base + up->hdrs[i].value_off, up->hdrs[i].value_len);
                break;
            }
    static const ig_resp_body kinds[] = {[IG_H1R_NONE] = IG_RB_NONE,
                                         [IG_H1R_LENGTH] = IG_RB_LENGTH,
                                         [IG_H1R_CHUNKED] = IG_RB_CHUNKED,
                                         [IG_H1R_CLOSE] = IG_RB_CLOSE};
    const ig_h1resp *r = &up->resp;
    ig_resp_head h = {.status = r->status,
                      .reason = r->reason_len ? base + r->reason_off : NULL,
                      .reason_len = r->reason_len,
                      .base = base,
                      .hdrs = up->hdrs,
                      .nhdrs = up->nhdrs,
                      .body = kinds[r->body],
                      .length = r->length,
                      .has_length = r->has_length};
    int dechunk = 0;
    rc = up->cb->on_head(up->owner, &h, &dechunk, why);
    if (rc < 0)
        return rc;
    up->discard = rc == IG_X_DISCARD;
    up->dechunk = dechunk != 0;
    ig_pool_drop_head(up); /* copied out: a long stream need not keep it */
    return 0;
}

static void process(ig_upconn *up, ig_block *blk, const char *p, size_t n)
{
    const char *end = p + n, *why = NULL;
    outv o = {.n = 0};
    if (!up->got_bytes && !up->probe) /* a probe's answer says nothing of the process's load */
        ig_pool_note_ttfb(up, (uv_hrtime() - up->sent_ns) / 1000);
    up->got_bytes = 1;
    while (p < end || up->head_done) {
        if (!up->head_done) {
            size_t e = ig_h1resp_head_scan(&up->resp, p, (size_t)(end - p));
            const char *base = p;
            if (!e || up->hbuf.len) {
                /* the head spans reads: gather it (bounded by hbuf's cap) */
                size_t take = e ? e : (size_t)(end - p);
                if (ig_buf_take(&up->hbuf, up->ctx->heads) || ig_buf_append(&up->hbuf, p, take)) {
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
            if (take_head(up, base, e, &why))
                goto fail;
            continue;
        }
        ig_h1span sp[8];
        int ns;
        size_t used;
        int rc = ig_h1resp_body(&up->resp, p, (size_t)(end - p), up->dechunk, sp, 8, &ns, &used, &why);
        if (rc < 0)
            goto fail;
        for (int i = 0; i < ns && !up->discard; i++)
            push(up, &o, blk, sp[i].p, sp[i].n);
        if (!up->owner)
            return; /* the owner left while taking the bytes */
        p += used;
        if (rc == 0) {
            if (p == end)
                break;
            continue; /* the output filled up: more of the same read */
        }
        /* message complete: anything after it is a worker bug, so no reuse */
        flush(up, &o, blk, 0);
        if (up->owner)
            finish(up, p == end && up->resp.keep_alive && !up->resp.suspect);
        return;
    }
    flush(up, &o, blk, up->head_done);
    return;
fail:
    flush(up, &o, blk, 0);
    if (up->owner)
        fail(up, 0, why);
}

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ig_upconn *up = h->data;
    ig_block *b = ig_block_get(up->ctx->blocks);
    (void)suggested;
    buf->base = b ? b->data : NULL;
    buf->len = b ? IG_BLOCK_SIZE : 0;
}

/* A worker that writes head and body separately without TCP_NODELAY
 * (uvicorn, gunicorn's UvicornWorker: uvicorn#3149) holds the body until
 * the head is ACKed; a delayed ACK would cost 40 ms. Linux leaves quick-ACK
 * mode on its own, so it is asked again after every read that left the
 * answer incomplete. */
static void quick_ack(ig_upconn *up)
{
    uv_os_fd_t fd;
    int one = 1;
    if (uv_fileno((uv_handle_t *)&up->net.tcp, &fd) == 0)
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

static void up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ig_upconn *up = s->data;
    ig_freelist *blocks = up->ctx->blocks;
    ig_block *blk = buf->base ? ig_container_of(buf->base, ig_block, data) : NULL;
    if (nread > 0 && up->state == IG_U_BUSY && up->owner) {
        process(up, blk, buf->base, (size_t)nread);
        if (up->owner && up->state == IG_U_BUSY && !up->paused)
            quick_ack(up); /* the answer goes on */
    } else if (nread < 0 && up->state == IG_U_BUSY && up->owner) {
        if (nread == UV_EOF && up->head_done && ig_h1resp_eof(&up->resp))
            finish(up, 0); /* a close-delimited body ends here */
        else
            fail(up, (int)nread, NULL);
    } else if (nread != 0) {
        /* an idle connection closed or talked out of turn: retire it */
        if (nread == UV_EOF && up->state == IG_U_IDLE)
            ig_pool_note_idle_close(up);
        ig_pool_close(up);
    }
    if (blk)
        ig_block_put(blocks, blk);
}

static void up_write_cb(uv_write_t *req, int status)
{
    ig_upconn *up = req->data;
    ig_freelist_put(up->ctx->wreqs, req);
    up->writing = 0;
    if (status < 0 && status != UV_ECANCELED && up->owner && up->state == IG_U_BUSY) {
        fail(up, status, NULL);
    } else if (status == 0) {
        ig_buf_give(&up->whead, up->ctx->heads); /* a resend builds it again */
        if (up->body_streams && up->owner) {
            if (up->body_last)
                up->body_open = 0;
            up->cb->on_sent(up->owner);
        }
    }
}

/* A streamed body's piece after the head (on the first), framed as a chunk
 * when the length is unknown; always through uv_write, so on_sent comes
 * from the loop, never from inside the owner's call. 0, 1 (nothing to
 * write), or negative (failed: on_error has run). */
static int write_piece(ig_upconn *up, int with_head, const char *p, size_t n, int last)
{
    static char crlf[] = "\r\n", end[] = "0\r\n\r\n";
    uv_buf_t b[5];
    unsigned k = 0;
    if (with_head)
        b[k++] = uv_buf_init(up->whead.data, (unsigned)up->whead.len);
    if (n && up->body_chunked) {
        int len = snprintf(up->chunk_line, sizeof(up->chunk_line), "%zx\r\n", n);
        b[k++] = uv_buf_init(up->chunk_line, (unsigned)len);
    }
    if (n)
        b[k++] = uv_buf_init((char *)p, (unsigned)n);
    if (n && up->body_chunked)
        b[k++] = uv_buf_init(crlf, 2);
    if (last && up->body_chunked)
        b[k++] = uv_buf_init(end, sizeof(end) - 1);
    up->body_last = last != 0;
    if (!k) {
        up->body_open = !last;
        return 1;
    }
    uv_write_t *wr = ig_freelist_get(up->ctx->wreqs);
    if (wr)
        wr->data = up;
    int rc = wr ? ig_net_write(wr, &up->net, b, k, up_write_cb) : UV_ENOMEM;
    if (rc) {
        ig_freelist_put(up->ctx->wreqs, wr);
        fail(up, rc, NULL);
        return rc;
    }
    up->writing = 1;
    up->sent_any = 1;
    return 0;
}

int ig_exchange_send_body(ig_upconn *up, const char *p, size_t n, int last)
{
    if (up->writing || !up->body_open)
        return -EINVAL;
    return write_piece(up, 0, p, n, last);
}

static int build_head(ig_upconn *up, const ig_exchange_req *rq)
{
    ig_buf *h = &up->whead;
    h->len = 0;
    int rc = ig_buf_take(h, up->ctx->heads);
    rc = rc ? rc : ig_buf_puts(h, llhttp_method_name((llhttp_method_t)rq->method));
    rc = rc ? rc : ig_buf_puts(h, " ");
    const ig_worker *w = up->w;
    if (w->base_path_len) /* a hosted API's base URL */
        rc = rc ? rc : ig_buf_append(h, w->base_path, ig_worker_path_prefix(w, rq->target, rq->target_len));
    rc = rc ? rc : ig_buf_append(h, rq->target, rq->target_len);
    rc = rc ? rc : ig_buf_puts(h, " HTTP/1.1\r\nhost: ");
    rc = rc ? rc : ig_buf_append(h, w->host_header, w->host_header_len);
    rc = rc ? rc : ig_buf_puts(h, "\r\n");
    if (w->auth_line) /* its own key, in place of whatever the client authenticated with */
        rc = rc ? rc : ig_buf_append(h, w->auth_line, w->auth_line_len);
    rc = rc ? rc
            : ig_http_copy_headers(h, rq->base, rq->hdrs, rq->nhdrs,
                                   IG_COPY_DROP_HOST | IG_COPY_DROP_LENGTH | IG_COPY_DROP_EXPECT |
                                       IG_COPY_DROP_REQUEST_ID |
                                       (w->auth_line ? IG_COPY_DROP_AUTHORIZATION : 0));
    rc = rc ? rc : ig_buf_puts(h, "x-request-id: ");
    rc = rc ? rc : ig_buf_append(h, rq->rid, rq->rid_len);
    if (rq->streams && rq->length < 0) {
        rc = rc ? rc : ig_buf_puts(h, "\r\ntransfer-encoding: chunked\r\n\r\n");
        return rc;
    }
    rc = rc ? rc : ig_buf_puts(h, "\r\ncontent-length: ");
    rc = rc ? rc : ig_buf_putu(h, rq->streams ? (uint64_t)rq->length : rq->body_len + rq->ins_len);
    rc = rc ? rc : ig_buf_puts(h, "\r\n\r\n");
    return rc;
}

/* 0, or -E2BIG (nothing sent, the connection as it was) */
static int send_request(ig_upconn *up)
{
    ig_exchange_req rq;
    up->cb->on_ready(up->owner, &rq);
    if (build_head(up, &rq)) {
        ig_buf_give(&up->whead, up->ctx->heads);
        return -E2BIG;
    }
    up->head_request = rq.method == HTTP_HEAD;
    if (up->proc >= 0) { /* its process has one more request now */
        up->proc_counted = 1;
        atomic_fetch_add_explicit(&up->w->procs[up->proc].inflight, 1, memory_order_relaxed);
    }
    if (!up->probe) { /* no client's request: not in the counts, nor in --upstream-max-requests-per-conn */
        up->nreq++;
        ig_pool_count_use(up);
        atomic_fetch_add_explicit(&up->w->stats.requests, 1, memory_order_relaxed);
    }
    if (rq.streams) {
        up->body_streams = up->body_open = 1;
        up->body_chunked = rq.length < 0;
        up->sent_ns = uv_hrtime();
        write_piece(up, 1, rq.body, rq.body_len, rq.last);
        return 0;
    }
    uv_buf_t bufs[4] = {uv_buf_init(up->whead.data, (unsigned)up->whead.len)};
    unsigned n = 1;
    size_t total = up->whead.len + rq.body_len + rq.ins_len;
    if (rq.ins_len) { /* the owner's insert goes between the body's two halves */
        size_t at = rq.ins_at < rq.body_len ? rq.ins_at : rq.body_len;
        bufs[n++] = uv_buf_init((char *)rq.body, (unsigned)at);
        bufs[n++] = uv_buf_init((char *)rq.ins, (unsigned)rq.ins_len);
        bufs[n++] = uv_buf_init((char *)rq.body + at, (unsigned)(rq.body_len - at));
    } else if (rq.body_len) {
        bufs[n++] = uv_buf_init((char *)rq.body, (unsigned)rq.body_len);
    }
    /* try first: a uv_write that completes still costs libuv an epoll_ctl
     * when it drains, one syscall per request for nothing */
    up->sent_ns = uv_hrtime();
    int rc = ig_net_try_write(&up->net, bufs, n);
    if (rc == UV_EAGAIN)
        rc = 0;
    if (rc < 0) {
        fail(up, rc, NULL); /* nothing went out: safe to send again */
        return 0;
    }
    size_t done = (size_t)rc;
    up->sent_any = done > 0;
    if (done == total) {
        /* all out: a long stream need not keep the head (a resend rebuilds it) */
        ig_buf_give(&up->whead, up->ctx->heads);
        return 0;
    }
    unsigned first = 0;
    while (first < n && done >= bufs[first].len) {
        done -= bufs[first].len;
        first++;
    }
    bufs[first].base += done;
    bufs[first].len -= done;
    /* libuv keeps its own copy of bufs; only the request lives on, from the thread's free list */
    uv_write_t *wr = ig_freelist_get(up->ctx->wreqs);
    if (wr)
        wr->data = up;
    rc = wr ? ig_net_write(wr, &up->net, bufs + first, n - first, up_write_cb) : UV_ENOMEM;
    if (rc) {
        ig_freelist_put(up->ctx->wreqs, wr);
        fail(up, rc, NULL);
        return 0;
    }
    up->writing = 1;
    up->sent_any = 1; /* how much of it libuv writes before a failure is not known */
    return 0;
}

int ig_exchange_start(ig_upconn *up, const ig_exchange_cb *cb, void *owner)
{
    up->cb = cb;
    up->owner = owner;
    ig_h1resp_init(&up->resp);
    up->hbuf.len = 0;
    up->got_bytes = up->head_done = up->sent_any = up->discard = up->dechunk = 0;
    up->body_streams = up->body_open = up->body_chunked = up->body_last = 0;
    if (up->state != IG_U_BUSY)
        return 0; /* sent once connected */
    int rc = send_request(up);
    if (rc)
        detach(up);
    return rc;
}

/* The connection is up (and its TLS, if any): the request goes. */
static void connected(ig_upconn *up)
{
    uv_timer_stop(&up->timer);
    up->state = IG_U_BUSY;
    /* reading stays on while the connection idles in the pool: a close is seen at once */
    ig_net_read_start(&up->net, up_alloc, up_read);
    if (!up->owner) {
        ig_pool_close(up);
    } else if (send_request(up)) {
        const ig_exchange_cb *cb = up->cb;
        void *owner = up->owner;
        detach(up);
        cb->on_error(owner, UV_E2BIG, "request head too large", IG_X_HEAD_TOO_LARGE);
    }
}

/* The connection never came up: close it, then tell the owner. */
static void connect_failed(ig_upconn *up, int status, const char *why, unsigned what)
{
    const ig_exchange_cb *cb = up->cb;
    void *owner = up->owner;
    detach(up);
    if (up->state != IG_U_CLOSING)
        ig_pool_close(up);
    if (cb)
        cb->on_error(owner, status, why, IG_X_CONNECT | what);
}

static void tls_done(ig_net *n, int status)
{
    ig_upconn *up = n->tcp.data;
    static _Thread_local char why[240];
    if (up->state != IG_U_CONNECTING)
        return;
    if (status == 0) {
        int resumed = ig_net_tls_resumed(n);
        atomic_fetch_add_explicit(resumed ? &up->w->stats.tls_resumed : &up->w->stats.tls_full, 1,
                                  memory_order_relaxed);
        connected(up);
        return;
    }
    snprintf(why, sizeof(why), "TLS with %s failed: %s", up->w->url, ig_net_tls_error(n));
    connect_failed(up, status, why, IG_X_TLS);
}

static void tls_timeout_cb(uv_timer_t *t)
{
    ig_upconn *up = t->data;
    up->timed_out = 1;
    connect_failed(up, UV_ETIMEDOUT, "the TLS handshake timed out", IG_X_TIMEDOUT | IG_X_TLS);
}

static void on_connect(uv_connect_t *req, int status)
{
    ig_upconn *up = req->data;
    free(req);
    if (status == 0 && up->state == IG_U_CONNECTING) {
        uv_tcp_nodelay(&up->net.tcp, 1);
        if (!up->w->tls) {
            connected(up);
            return;
        }
        /* the handshake is part of connecting: the rest of the connect timeout covers it */
        uint64_t left = uv_timer_get_due_in(&up->timer);
        uv_timer_start(&up->timer, tls_timeout_cb, left ? left : 1, 0);
        int rc = up->ctx->cfg->tls ? ig_net_tls_connect(&up->net, up->ctx->cfg->tls, up->w->host,
                                                        ig_pool_tls_session(up->ctx, up->w), tls_done)
                                   : UV_EPROTONOSUPPORT;
        if (rc)
            connect_failed(up, rc, "cannot start TLS", IG_X_TLS);
        return;
    }
    unsigned what = (up->timed_out || status == UV_ETIMEDOUT ? IG_X_TIMEDOUT : 0) |
                    (status == UV_ECONNREFUSED ? IG_X_REFUSED : 0);
    connect_failed(up, status, NULL, what);
}

ig_upconn *ig_exchange_connect(ig_upstream_ctx *ctx, ig_worker *w)
{
    return ig_pool_connect(ctx, w, on_connect);
}

void ig_exchange_cancel(ig_upconn *up)
{
    detach(up);
    ig_pool_close(up);
}

void ig_exchange_pause(ig_upconn *up)
{
    if (!up->paused) {
        ig_net_read_stop(&up->net);
        up->paused = 1;
    }
}

void ig_exchange_resume(ig_upconn *up)
{
    if (up->paused && up->state == IG_U_BUSY) {
        up->paused = 0;
        ig_net_read_start(&up->net, up_alloc, up_read);
    }
}

int ig_exchange_writing(const ig_upconn *up)
{
    return up->writing;
}
