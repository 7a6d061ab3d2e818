/* The answer side of an HTTP/1 client connection: writes with
 * backpressure, response heads framed by us, local answers and errors, and
 * the request's response ops (ig_h1conn_int.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../core/ig_log.h"
#include "../http/ig_framing.h"
#include "../http/ig_http.h"
#include "ig_h1conn_int.h"

/* ---- writing ---- */

static void client_write_cb(uv_write_t *req, int status)
{
    ig_wreq *w = (ig_wreq *)req;
    ig_h1conn *c = req->handle->data;
    ig_thread *th = c->th;
    if (w->blk)
        ig_block_put(&th->blocks, w->blk);
    ig_freelist_put(&th->wreqs, w);
    c->pending_writes--;
    if (status < 0) {
        ig_h1c_close(c);
        return;
    }
    if (c->closing)
        return;
    if (c->state == IG_C_DISPATCHED && c->req.resp_started && c->pending_writes == 0 && c->obuf.data &&
        !c->head_pending)
        ig_buf_give(&c->obuf, &th->heads); /* the response head is written: a long stream need not keep it */
    if (c->state == IG_C_DISPATCHED && c->req.h && c->req.h->resume &&
        ig_net_write_queue_size(&c->net) < IG_CLIENT_WQ_LOW)
        c->req.h->resume(&c->req);
    if (c->state == IG_C_FLUSHING && c->pending_writes == 0)
        ig_h1c_next_request(c);
}

int ig_h1c_write(ig_h1conn *c, const uv_buf_t *bufs, unsigned n, ig_block *hold)
{
    uv_buf_t rest[16];
    size_t total = 0;
    if (c->closing)
        return -ECANCELED;
    if (n > 16)
        return -EINVAL;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (!total)
        return 0;
    c->req.bytes_out += total;
    ssize_t done = 0;
    if (c->pending_writes == 0) {
        done = ig_net_try_write(&c->net, bufs, n);
        if (done == UV_EAGAIN)
            done = 0;
        if (done < 0) {
            ig_h1c_close(c);
            return (int)done;
        }
        if ((size_t)done == total)
            return 0;
    }
    unsigned m = 0;
    for (unsigned i = 0; i < n; i++) {
        if ((size_t)done >= bufs[i].len) {
            done -= (ssize_t)bufs[i].len;
            continue;
        }
        rest[m++] = uv_buf_init(bufs[i].base + done, (unsigned)(bufs[i].len - (size_t)done));
        done = 0;
    }
    ig_wreq *w = ig_freelist_get(&c->th->wreqs);
    if (!w) {
        ig_h1c_close(c);
        return -ENOMEM;
    }
    w->blk = hold;
    if (hold)
        hold->refs++;
    int rc = ig_net_write(&w->req, &c->net, rest, m, client_write_cb);
    if (rc) {
        if (hold)
            ig_block_put(&c->th->blocks, hold);
        ig_freelist_put(&c->th->wreqs, w);
        ig_h1c_close(c);
        return rc;
    }
    c->pending_writes++;
    return 0;
}

int ig_h1c_wants_pause(ig_h1conn *c)
{
    return ig_net_write_queue_size(&c->net) > IG_CLIENT_WQ_HIGH;
}

static int is_head(ig_h1conn *c)
{
    return c->rq.url_len && ig_h1req_method(&c->rq) == HTTP_HEAD;
}

void ig_h1c_error(ig_h1conn *c, int status, const char *type, const char *code, const char *msg)
{
    ig_h1c_error_headers(c, status, type, code, msg, NULL);
}

void ig_h1c_error_headers(ig_h1conn *c, int status, const char *type, const char *code, const char *msg,
                          const char *extra_headers)
{
    ig_info("%.*s -> %d %s", (int)c->req.rid_len, c->req.rid, status, msg);
    if (c->state == IG_C_READING || c->rq.in_message) {
        /* refused while the request was still being read: its framing
         * cannot be trusted (or its body is still coming), so answer, then close */
        c->close_after = 1;
        if (!c->req.rid_len)
            ig_h1c_make_request_id(c);
    }
    c->obuf.len = 0;
    c->head_pending = 0;
    c->req.status = status;
    if (ig_buf_take(&c->obuf, &c->th->heads) == 0 &&
        ig_http_error_response(&c->obuf, status, type, code, msg, c->req.rid, c->req.rid_len,
                               c->close_after || !c->rq.keep_alive || c->th->draining, extra_headers) == 0) {
        uv_buf_t b = uv_buf_init(c->obuf.data, (unsigned)c->obuf.len);
        if (is_head(c)) /* the same head, no body (RFC 9110 9.3.2) */
            b.len = (unsigned)ig_framing_head_len(b.base, b.len);
        ig_h1c_write(c, &b, 1, NULL);
    }
    if (!c->closing)
        ig_h1c_request_done(c);
}

static void respond_body(ig_h1conn *c, int status, const char *ctype, const char *body, size_t len)
{
    ig_buf *o = &c->obuf;
    int close_conn = !c->rq.keep_alive || c->th->draining;
    o->len = 0;
    c->req.status = status;
    int rc = ig_buf_take(o, &c->th->heads);
    rc = rc ? rc : ig_buf_reserve(o, len + 256);
    rc = rc ? rc : ig_buf_puts(o, "HTTP/1.1 ");
    rc = rc ? rc : ig_buf_putu(o, (uint64_t)status);
    rc = rc ? rc : ig_buf_puts(o, " ");
    rc = rc ? rc : ig_buf_puts(o, ig_http_reason(status));
    rc = rc ? rc : ig_buf_puts(o, "\r\ncontent-type: ");
    rc = rc ? rc : ig_buf_puts(o, ctype);
    rc = rc ? rc : ig_buf_puts(o, "\r\ncontent-length: ");
    rc = rc ? rc : ig_buf_putu(o, len);
    rc = rc ? rc : ig_buf_puts(o, "\r\nx-request-id: ");
    rc = rc ? rc : ig_buf_append(o, c->req.rid, c->req.rid_len);
    rc = rc ? rc : ig_buf_puts(o, close_conn ? "\r\nconnection: close\r\n\r\n" : "\r\n\r\n");
    if (!is_head(c)) /* HEAD: the same head, no body */
        rc = rc ? rc : ig_buf_append(o, body, len);
    if (rc) {
        ig_h1c_error(c, 500, "server_error", "internal_error", "response too large");
        return;
    }
    uv_buf_t b = uv_buf_init(o->data, (unsigned)o->len);
    ig_h1c_write(c, &b, 1, NULL);
    if (!c->closing)
        ig_h1c_request_done(c);
}

/* ---- the request's response ops (proxy/ig_request.h) ---- */

/* The client's response head from a worker's. The framing is ours, from
 * what the worker's answer turned out to be, never the worker's own framing
 * fields (which its Connection header may even have named). */
static int h1_start(ig_request *r, const ig_resp_head *rh, int *dechunk)
{
    ig_h1conn *c = conn_of(r);
    ig_buf *h = &c->obuf;
    r->status = rh->status;
    c->dechunk = c->rq.http10 && rh->body == IG_RB_CHUNKED;
    if (c->rq.http10 || rh->body == IG_RB_CLOSE)
        c->close_after = 1; /* a close-delimited body: only a close can end it */
    h->len = 0;
    int rc = ig_buf_take(h, &c->th->heads);
    rc = rc ? rc : ig_buf_puts(h, "HTTP/1.1 ");
    rc = rc ? rc : ig_buf_putu(h, (uint64_t)rh->status);
    rc = rc ? rc : ig_buf_puts(h, " ");
    if (rh->reason_len)
        rc = rc ? rc : ig_buf_append(h, rh->reason, rh->reason_len);
    else
        rc = rc ? rc : ig_buf_puts(h, ig_http_reason(rh->status));
    rc = rc ? rc : ig_buf_puts(h, "\r\n");
    rc = rc ? rc
            : ig_http_copy_headers(h, rh->base, rh->hdrs, rh->nhdrs,
                                   IG_COPY_DROP_LENGTH | IG_COPY_DROP_REQUEST_ID | IG_COPY_DROP_GATEWAY);
    int length = rh->body == IG_RB_LENGTH ||
                 (rh->body == IG_RB_NONE && rh->has_length && (rh->status == 304 || r->method == HTTP_HEAD));
    if (length) {
        rc = rc ? rc : ig_buf_puts(h, "content-length: ");
        rc = rc ? rc : ig_buf_putu(h, rh->length);
        rc = rc ? rc : ig_buf_puts(h, "\r\n");
    } else if (rh->body == IG_RB_CHUNKED && !c->dechunk) {
        rc = rc ? rc : ig_buf_puts(h, "transfer-encoding: chunked\r\n");
    }
    if (rh->weight_version >= 0) { /* an LLM answer: which weights made it */
        rc = rc ? rc : ig_buf_puts(h, "x-weight-version: ");
        rc = rc ? rc : ig_buf_putu(h, (uint64_t)rh->weight_version);
        rc = rc ? rc : ig_buf_puts(h, "\r\n");
    }
    rc = rc ? rc : ig_buf_puts(h, "x-request-id: ");
    rc = rc ? rc : ig_buf_append(h, r->rid, r->rid_len);
    if (c->close_after || !c->rq.keep_alive || c->th->draining) {
        c->close_after = 1;
        rc = rc ? rc : ig_buf_puts(h, "\r\nconnection: close");
    }
    rc = rc ? rc : ig_buf_puts(h, "\r\n\r\n");
    if (rc)
        return rc;
    r->resp_started = 1;
    c->head_pending = 1; /* goes out with the first body bytes: one writev */
    *dechunk = c->dechunk;
    return 0;
}

static int h1_write(ig_request *r, const uv_buf_t *bufs, unsigned n, ig_block *hold)
{
    ig_h1conn *c = conn_of(r);
    if (!c->head_pending)
        return ig_h1c_write(c, bufs, n, hold);
    uv_buf_t v[16];
    unsigned m = 0;
    c->head_pending = 0;
    v[m++] = uv_buf_init(c->obuf.data, (unsigned)c->obuf.len);
    for (unsigned i = 0; i < n && m < 16; i++)
        v[m++] = bufs[i];
    return ig_h1c_write(c, v, m, hold);
}

static void h1_respond(ig_request *r, int status, const char *ctype, const char *body, size_t len)
{
    respond_body(conn_of(r), status, ctype, body, len);
}

static void h1_respond_error(ig_request *r, int status, const char *type, const char *code, const char *msg,
                             const char *extra_headers)
{
    ig_h1c_error_headers(conn_of(r), status, type, code, msg, extra_headers);
}

static void h1_done(ig_request *r)
{
    ig_h1c_request_done(conn_of(r));
}

static void h1_cut(ig_request *r)
{
    ig_h1c_close(conn_of(r));
}

static int h1_wants_pause(ig_request *r)
{
    return ig_h1c_wants_pause(conn_of(r));
}

static void h1_set_deadline(ig_request *r, double secs)
{
    ig_h1c_arm_timer(conn_of(r), secs);
}

static void h1_retire(ig_request *r)
{
    ig_h1conn *c = conn_of(r);
    if (c->pending_writes == 0 && !c->head_pending)
        ig_buf_give(&c->obuf, &c->th->heads); /* the head is written: a long stream need not keep it */
    ig_h1c_retire(c);
}

static int h1_peer(ig_request *r, struct sockaddr_storage *ss)
{
    int len = sizeof(*ss);
    return uv_tcp_getpeername(&conn_of(r)->net.tcp, (struct sockaddr *)ss, &len);
}

static void h1_body_consumed(ig_request *r, size_t n)
{
    ig_h1c_body_consumed(conn_of(r), n);
}

const ig_response_ops ig_h1c_ops = {
    .start = h1_start,
    .write = h1_write,
    .respond = h1_respond,
    .respond_error = h1_respond_error,
    .done = h1_done,
    .cut = h1_cut,
    .wants_pause = h1_wants_pause,
    .set_deadline = h1_set_deadline,
    .retire = h1_retire,
    .peer = h1_peer,
    .body_consumed = h1_body_consumed,
};
