#include "ig_h1req.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ig_framing.h"

static ig_h1req *req_of(llhttp_t *p)
{
    return p->data;
}

static int refuse(ig_h1req *r, int status, const char *msg)
{
    r->err_status = status;
    r->err_msg = msg;
    return HPE_USER;
}

void ig_h1req_forget_headers(ig_h1req *r)
{
    r->h_expect = r->h_request_id = r->h_authorization = r->h_routing_key = -1;
}

int ig_h1req_method(const ig_h1req *r)
{
    return r->parser.method; /* llhttp_get_method takes no const */
}

const char *ig_h1req_error_code(int status)
{
    switch (status) {
    case 413: return "payload_too_large";
    case 431: return "headers_too_large";
    case 417: return "expectation_failed";
    case 408: return "request_timeout";
    case 503: return "service_unavailable";
    default: return "bad_request";
    }
}

/* ---- llhttp callbacks: record slices of buf by offset, enforce limits ---- */

static int on_message_begin(llhttp_t *p)
{
    ig_h1req *r = req_of(p);
    r->in_message = 1;
    r->head_done = 0;
    if (!r->hdrs && !(r->hdrs = r->ops->begin(r->owner)))
        return refuse(r, 503, "out of memory");
    r->nhdrs = 0;
    r->in_value = 0;
    r->url_len = 0;
    r->body_len = 0;
    r->body_off = 0;
    r->body_total = 0;
    r->chunked = 0;
    r->streams = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    ig_h1req *r = req_of(p);
    if (!r->url_len)
        r->url_off = (uint32_t)(at - r->buf->data);
    r->url_len += (uint32_t)len;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    ig_h1req *r = req_of(p);
    if (r->head_done) /* a field after a chunked body: a worker might read it otherwise */
        return refuse(r, 400, "trailer fields are not accepted");
    if (r->in_value || r->nhdrs == 0) {
        if (r->nhdrs == IG_MAX_HEADERS)
            return refuse(r, 431, "too many request headers");
        ig_hdr *h = &r->hdrs[r->nhdrs++];
        h->name_off = (uint32_t)(at - r->buf->data);
        h->name_len = 0;
        h->value_off = 0;
        h->value_len = 0;
        r->in_value = 0;
    }
    r->hdrs[r->nhdrs - 1].name_len += (uint32_t)len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    ig_h1req *r = req_of(p);
    ig_hdr *h = &r->hdrs[r->nhdrs - 1];
    if (!r->in_value) {
        r->in_value = 1;
        h->value_off = (uint32_t)(at - r->buf->data);
    }
    h->value_len += (uint32_t)len;
    return 0;
}

/* The whole head, checked byte for byte (ig_framing.h): llhttp tolerates
 * some framing that a worker behind us might read differently. */
static int check_framing(ig_h1req *r, llhttp_t *p)
{
    const char *why = "malformed request head";
    size_t mlen = strlen(llhttp_method_name((llhttp_method_t)p->method)) + 1;
    if (r->url_off < mlen)
        return refuse(r, 400, why);
    const char *head = r->buf->data + r->url_off - mlen;
    size_t hlen = ig_framing_head_len(head, r->buf->len - (r->url_off - mlen));
    if (hlen > r->ops->max_header_size) /* it may all have come in one read */
        return refuse(r, 431, "request head is larger than --max-header-size");
    if (!hlen || ig_framing_check_head(head, hlen, &why))
        return refuse(r, 400, why);
    r->chunk_raw_end = r->url_off - mlen + hlen;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    ig_h1req *r = req_of(p);
    const char *base = r->buf->data;
    int rc = check_framing(r, p);
    if (rc)
        return rc;
    r->head_done = 1;
    r->chunks_seen = r->chunk_new = 0;
    r->keep_alive = llhttp_should_keep_alive(p) != 0;
    r->http10 = p->http_major == 1 && p->http_minor == 0;
    r->chunked = (p->flags & F_CHUNKED) != 0;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > r->ops->max_payload_size)
        return refuse(r, 413, "request body is larger than --max-payload-size");
    if (r->http10 && r->chunked)
        return refuse(r, 400, "chunked transfer coding is not allowed in HTTP/1.0");
    /* the owner makes room for the whole body at once on its next read (never
     * here: llhttp is walking the buffer right now and a realloc would move it) */
    r->body_hint = (p->flags & F_CONTENT_LENGTH) ? (size_t)p->content_length : 0;
    ig_h1req_forget_headers(r);
    r->via_proxy = 0;
    for (int i = 0; i < r->nhdrs; i++) {
        const ig_hdr *h = &r->hdrs[i];
        switch (ig_http_header_kind(base + h->name_off, h->name_len)) {
        case IG_H_EXPECT:
            /* two Expect lines are one list: only "100-continue" on each is that */
            if (!ig_http_name_is(base + h->value_off, h->value_len, "100-continue"))
                return refuse(r, 417, "only 'Expect: 100-continue' is supported");
            r->h_expect = (short)i;
            break;
        case IG_H_REQUEST_ID: r->h_request_id = (short)i; break;
        case IG_H_ROUTING_KEY:
            if (r->h_routing_key < 0) /* the first one given decides */
                r->h_routing_key = (short)i;
            break;
        case IG_H_AUTHORIZATION:
            if (r->h_authorization >= 0) /* which one would a worker check? */
                return refuse(r, 400, "more than one Authorization header");
            r->h_authorization = (short)i;
            break;
        case IG_H_FORWARDED: r->via_proxy = 1; break;
        default: break;
        }
    }
    if (!r->ops->head(r->owner))
        return 0;
    /* the owner takes the body in pieces: no room for all of it, and it
     * dispatches the request now (in ig_h1req_parse's caller, not here,
     * where llhttp walks the buffer) */
    r->streams = 1;
    r->body_hint = 0;
    r->body_off = r->chunk_raw_end; /* data collects right after the head */
    return HPE_PAUSED;
}

static int on_chunk_header(llhttp_t *p)
{
    req_of(p)->chunk_new = 1;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    ig_h1req *r = req_of(p);
    char *base = r->buf->data;
    size_t off = (size_t)(at - base);
    if (r->chunked) {
        /* the raw framing before this data, checked before the de-chunking
         * below writes over it (ig_framing.h: llhttp is laxer) */
        const char *why;
        if (r->chunk_new ? ig_framing_check_chunk(base + r->chunk_raw_end, off - r->chunk_raw_end,
                                                  r->chunks_seen == 0, 0, &why)
                         : (off != r->chunk_raw_end ? (why = "malformed chunk framing", -1) : 0))
            return refuse(r, 400, why);
        r->chunk_raw_end = off + len;
        r->chunks_seen++;
        r->chunk_new = 0;
    }
    if ((r->body_total += len) > r->ops->max_payload_size)
        return refuse(r, 413, "request body is larger than --max-payload-size");
    if (!r->body_len && !r->body_off)
        r->body_off = off;
    else if (off != r->body_off + r->body_len)
        /* chunked: close the gaps the chunk framing left, in place; the
         * destination is always behind the parse position */
        memmove(base + r->body_off + r->body_len, at, len);
    r->body_len += len;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    req_of(p)->in_message = 0;
    return HPE_PAUSED; /* one request at a time: the rest waits in the buffer */
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};

void ig_h1req_init(ig_h1req *r, const ig_h1req_ops *ops, void *owner)
{
    memset(r, 0, sizeof(*r));
    r->ops = ops;
    r->owner = owner;
    ig_h1req_forget_headers(r);
    llhttp_init(&r->parser, HTTP_REQUEST, &settings);
    r->parser.data = r;
}

/* A chunked body is de-chunked in place as it is parsed, which leaves the
 * framing behind the data; moved out of the way, it no longer counts
 * against the buffer's cap (--max-payload-size is about data). llhttp keeps
 * no pointer into the buffer between calls, so only offsets of ours move. */
static void compact_chunked(ig_h1req *r)
{
    ig_buf *b = r->buf;
    size_t data_end = r->body_off + r->body_len, gap = r->chunk_raw_end - data_end;
    if (!gap)
        return;
    memmove(b->data + data_end, b->data + r->chunk_raw_end, b->len - r->chunk_raw_end);
    b->len -= gap;
    r->parsed -= gap;
    r->chunk_raw_end = data_end;
}

void ig_h1req_consume_body(ig_h1req *r, ig_buf *buf, size_t n)
{
    size_t from = r->body_off + n;
    memmove(buf->data + r->body_off, buf->data + from, buf->len - from);
    buf->len -= n;
    r->parsed -= n;
    r->body_len -= n;
    if (r->chunk_raw_end >= from)
        r->chunk_raw_end -= n;
}

int ig_h1req_parse(ig_h1req *r, ig_buf *buf)
{
    static _Thread_local char msg[160];
    r->buf = buf;
    if (r->parsed >= buf->len)
        return IG_H1REQ_MORE;
    const char *start = buf->data + r->parsed;
    llhttp_errno_t e = llhttp_execute(&r->parser, start, buf->len - r->parsed);
    if (e == HPE_PAUSED) {
        r->parsed = (size_t)(llhttp_get_error_pos(&r->parser) - buf->data);
        llhttp_resume(&r->parser);
        if (r->in_message) /* paused after a head whose body streams */
            return IG_H1REQ_HEAD;
        const char *why;
        if (r->chunked && ig_framing_check_chunk(buf->data + r->chunk_raw_end, r->parsed - r->chunk_raw_end,
                                                 r->chunks_seen == 0, 1, &why)) {
            r->err_status = 400;
            r->err_msg = why;
            return IG_H1REQ_ERROR;
        }
        return IG_H1REQ_MESSAGE;
    }
    if (e != HPE_OK) {
        if (!r->err_status) {
            snprintf(msg, sizeof(msg), "malformed HTTP request: %s", llhttp_get_error_reason(&r->parser));
            r->err_status = 400;
            r->err_msg = msg;
        }
        return IG_H1REQ_ERROR;
    }
    r->parsed = buf->len;
    if (r->chunked && r->head_done && r->in_message && r->body_len)
        compact_chunked(r);
    if (r->in_message && !r->head_done && buf->len - r->msg_start > r->ops->max_header_size) {
        r->err_status = 431;
        r->err_msg = "request head is larger than --max-header-size";
        return IG_H1REQ_ERROR;
    }
    return IG_H1REQ_MORE;
}
