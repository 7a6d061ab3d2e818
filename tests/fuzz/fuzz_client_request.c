/* libFuzzer driver: the client side's request parser as a whole
 * (http/ig_h1req.c: llhttp, the framing checks, in-place de-chunking and
 * compaction, pipelining), driven the way a client connection drives it.
 * The first byte picks a read size (its low 7 bits: 1 to 127 bytes, 0: one
 * at a time) and, with its high bit, that bodies stream (taken in pieces as
 * a forwarded upload is, half of what is there after every pass); the rest
 * is what a client sends on one connection. Besides memory errors
 * it checks what the gateway relies on:
 *   - every slice (target, headers, body) lies inside the buffer;
 *   - a body never passes --max-payload-size, a head never --max-header-size;
 *   - the same bytes give the same requests, byte for byte, and the same
 *     verdict whether they arrive at once or in pieces, whole or streamed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/http/ig_h1req.h"

#define MAX_HEAD 2048
#define MAX_PAYLOAD 4096
#define LOG_MAX 16384

typedef struct run_log {
    int verdict; /* 1 every request parsed, 0 waiting for more, -1 refused */
    int status;
    size_t n;
    size_t whole;        /* bytes of n from requests that ended (a streamed one logs as it goes) */
    char bytes[LOG_MAX]; /* method, target and body of each request, in order */
} run_log;

static ig_hdr table[IG_MAX_HEADERS];

static ig_hdr *begin(void *owner)
{
    (void)owner;
    return table;
}

static int head(void *owner)
{
    (void)owner;
    return 0;
}

/* as the connection asks: only a body that is there streams */
static int stream_head(void *owner)
{
    const ig_h1req *r = owner;
    return r->chunked || r->body_hint > 0;
}

static const ig_h1req_ops ops = {MAX_HEAD, MAX_PAYLOAD, begin, head};
static const ig_h1req_ops stream_ops = {MAX_HEAD, MAX_PAYLOAD, begin, stream_head};

static void check(int ok)
{
    if (!ok)
        abort();
}

static void note(run_log *l, const void *p, size_t n)
{
    size_t take = n < LOG_MAX - l->n ? n : LOG_MAX - l->n;
    memcpy(l->bytes + l->n, p, take);
    l->n += take;
}

static void note_head(run_log *l, const ig_h1req *r, const ig_buf *buf)
{
    const char *m = llhttp_method_name((llhttp_method_t)ig_h1req_method(r));
    note(l, m, strlen(m));
    note(l, " ", 1);
    note(l, buf->data + r->url_off, r->url_len);
    note(l, "\n", 1);
}

/* A streamed body's data so far: inside the buffer, right behind the head. */
static void take_body(run_log *l, ig_h1req *r, ig_buf *buf, size_t n)
{
    check(r->body_off + r->body_len <= r->parsed && r->parsed <= buf->len && n <= r->body_len);
    check(r->body_total <= MAX_PAYLOAD);
    note(l, buf->data + r->body_off, n);
    ig_h1req_consume_body(r, buf, n);
}

static void run(const char *d, size_t n, size_t step, int streams, run_log *l)
{
    ig_h1req r;
    ig_buf buf;
    ig_h1req_init(&r, streams ? &stream_ops : &ops, &r);
    ig_buf_init(&buf, MAX_HEAD + MAX_PAYLOAD + 16384);
    l->n = l->whole = 0;
    l->verdict = 0;
    l->status = 0;
    size_t pos = 0;
    while (pos < n) {
        size_t len = step && n - pos > step ? step : n - pos;
        if (ig_buf_reserve(&buf, len)) {
            l->verdict = -1; /* the buffer's cap: the client answers 413/431 */
            l->status = r.head_done ? 413 : 431;
            goto out;
        }
        memcpy(buf.data + buf.len, d + pos, len);
        buf.len += len;
        pos += len;
        while (r.parsed < buf.len) {
            int rc = ig_h1req_parse(&r, &buf);
            if (rc == IG_H1REQ_ERROR) {
                check(r.err_status >= 400 && r.err_msg != NULL);
                l->verdict = -1;
                l->status = r.err_status;
                goto out;
            }
            if (rc == IG_H1REQ_HEAD) {
                check(streams && r.streams && r.in_message && r.head_done && r.body_len == 0);
                note_head(l, &r, &buf);
                continue;
            }
            if (rc == IG_H1REQ_MORE) {
                if (r.streams && r.in_message && r.head_done)
                    take_body(l, &r, &buf, (r.body_len + 1) / 2);
                break;
            }
            /* a request: its slices are inside the buffer and within the caps */
            check(r.head_done && !r.in_message && r.parsed <= buf.len);
            check(r.url_off + (size_t)r.url_len <= buf.len && r.url_len > 0);
            check(r.nhdrs >= 0 && r.nhdrs <= IG_MAX_HEADERS);
            for (int i = 0; i < r.nhdrs; i++)
                check(r.hdrs[i].name_off + (size_t)r.hdrs[i].name_len <= buf.len &&
                      r.hdrs[i].value_off + (size_t)r.hdrs[i].value_len <= buf.len);
            check(r.body_len <= MAX_PAYLOAD && r.body_off + r.body_len <= buf.len);
            check(r.parsed - r.msg_start <= MAX_HEAD + MAX_PAYLOAD + 16384);
            if (r.streams) {
                take_body(l, &r, &buf, r.body_len);
            } else {
                note_head(l, &r, &buf);
                note(l, buf.data + r.body_off, r.body_len);
            }
            note(l, "\n", 1);
            l->whole = l->n;
            /* what the client does before the next request: keep only what follows */
            size_t left = buf.len - r.parsed;
            memmove(buf.data, buf.data + r.parsed, left);
            buf.len = left;
            r.parsed = r.msg_start = 0;
            r.hdrs = NULL;
            r.nhdrs = 0;
            ig_h1req_forget_headers(&r);
        }
        if (!r.in_message) {
            if (r.parsed == buf.len)
                r.parsed = buf.len = 0;
            r.msg_start = r.parsed;
        }
    }
    l->verdict = r.in_message ? 0 : 1;
out:
    ig_buf_free(&buf);
}

static run_log a, b;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = data[0] & 0x7f;
    const char *d = (const char *)data + 1;
    size_t n = size - 1;
    run(d, n, 0, 0, &a);
    run(d, n, step ? step : 1, data[0] & 0x80, &b);
    /* one read or many: the same requests; a refusal may come a read later
     * (the buffer's cap is met at a different point), never a different story */
    if (a.verdict >= 0 && b.verdict >= 0) {
        check(a.verdict == b.verdict);
        check(a.whole == b.whole && memcmp(a.bytes, b.bytes, a.whole) == 0);
        check(a.n == a.whole); /* a streamed request still open is b's alone */
    } else {
        size_t k = a.n < b.n ? a.n : b.n;
        check(memcmp(a.bytes, b.bytes, k) == 0);
    }
    return 0;
}
