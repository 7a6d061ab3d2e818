/* The client side's request parser (http/ig_h1req), table-driven: each case
 * is what a client sends on one connection and what the gateway must make
 * of it: the requests (method, target, body after de-chunking, flags and
 * header indexes) or the refusal with its status. Every case runs twice:
 * all bytes in one read, and one byte per read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/http/ig_h1req.h"

static ig_hdr table[IG_MAX_HEADERS];
static int heads_seen;

static ig_hdr *begin(void *owner)
{
    (void)owner;
    return table;
}

static int head(void *owner)
{
    (void)owner;
    heads_seen++;
    return 0;
}

static const ig_h1req_ops ops = {256, 64, begin, head};

typedef struct want {
    const char *method, *target, *body;
    int keep_alive, http10, via_proxy, has_auth, has_expect, has_routing_key;
} want;

typedef struct tcase {
    const char *name;
    const char *in;
    int status; /* 0: every request parses */
    int n;      /* requests expected */
    want req[2];
} tcase;

static const tcase cases[] = {
    {"content-length body",
     "POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: 2\r\n\r\n{}",
     0,
     1,
     {{"POST", "/v1/chat/completions", "{}", 1, 0, 0, 0, 0, 0}}},
    {"http/1.0 closes", "GET /health HTTP/1.0\r\n\r\n", 0, 1, {{"GET", "/health", "", 0, 1, 0, 0, 0, 0}}},
    {"http/1.0 keep-alive asked",
     "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
     0,
     1,
     {{"GET", "/", "", 1, 1, 0, 0, 0, 0}}},
    {"connection close",
     "GET / HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
     0,
     1,
     {{"GET", "/", "", 0, 0, 0, 0, 0, 0}}},
    {"chunked is de-chunked in place",
     "POST /g HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n",
     0,
     1,
     {{"POST", "/g", "abcdefg", 1, 0, 0, 0, 0, 0}}},
    {"pipelined requests keep their order",
     "POST /a HTTP/1.1\r\nHost: g\r\nContent-Length: 1\r\n\r\nxGET /b?q=1 HTTP/1.1\r\nHost: g\r\n\r\n",
     0,
     2,
     {{"POST", "/a", "x", 1, 0, 0, 0, 0, 0}, {"GET", "/b?q=1", "", 1, 0, 0, 0, 0, 0}}},
    {"headers the gateway reads",
     "POST /v1/completions HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer k\r\nExpect: 100-continue\r\n"
     "X-SMG-Routing-Key: u1\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Length: 0\r\n\r\n",
     0,
     1,
     {{"POST", "/v1/completions", "", 1, 0, 1, 1, 1, 1}}},
    {"trailers are refused",
     "POST /g HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n\r\n",
     400,
     0,
     {{0}}},
    {"length and chunked together (smuggling)",
     "POST /g HTTP/1.1\r\nHost: g\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400,
     0,
     {{0}}},
    {"two different lengths",
     "POST /g HTTP/1.1\r\nHost: g\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
     400,
     0,
     {{0}}},
    {"chunked in http/1.0", "POST /g HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, 0, {{0}}},
    {"space before the colon", "GET / HTTP/1.1\r\nHost : g\r\n\r\n", 400, 0, {{0}}},
    {"an expectation we do not meet",
     "POST /g HTTP/1.1\r\nHost: g\r\nExpect: 200-ok\r\nContent-Length: 0\r\n\r\n",
     417,
     0,
     {{0}}},
    {"two authorizations",
     "GET / HTTP/1.1\r\nHost: g\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
     400,
     0,
     {{0}}},
    {"a body over the limit",
     "POST /g HTTP/1.1\r\nHost: g\r\nContent-Length: 65\r\n\r\n"
     "12345678901234567890123456789012345678901234567890123456789012345",
     413,
     0,
     {{0}}},
    {"a chunked body over the limit",
     "POST /g HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
     "28\r\n1234567890123456789012345678901234567890\r\n28\r\n1234567890123456789012345678901234567890\r\n0\r\n\r\n",
     413,
     0,
     {{0}}},
    {"a head over the limit",
     "GET / HTTP/1.1\r\nHost: g\r\nX-Long: "
     "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
     "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
     "0123456789012345678901234567890123456789012345678901234567890123456789\r\n\r\n",
     431,
     0,
     {{0}}},
    {"a malformed chunk size",
     "POST /g HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
     400,
     0,
     {{0}}},
    {"not http", "HELLO\r\n\r\n", 400, 0, {{0}}},
};

static void run(const tcase *t, size_t step)
{
    ig_h1req r;
    ig_buf buf;
    char what[160];
    snprintf(what, sizeof(what), "%s (reads of %zu)", t->name, step);
    ig_h1req_init(&r, &ops, NULL);
    ig_buf_init(&buf, 4096);
    size_t n = strlen(t->in), pos = 0;
    int got = 0, status = 0;
    heads_seen = 0;
    while (pos < n && !status) {
        size_t len = step && n - pos > step ? step : n - pos;
        assert_int_equal(ig_buf_reserve(&buf, len), 0);
        memcpy(buf.data + buf.len, t->in + pos, len);
        buf.len += len;
        pos += len;
        while (r.parsed < buf.len) {
            int rc = ig_h1req_parse(&r, &buf);
            if (rc == IG_H1REQ_ERROR) {
                status = r.err_status;
                break;
            }
            if (rc == IG_H1REQ_MORE)
                break;
            if (got >= t->n)
                fail_msg("%s: more requests than expected", what);
            const want *w = &t->req[got++];
            const char *m = llhttp_method_name((llhttp_method_t)ig_h1req_method(&r));
            if (strcmp(m, w->method) || r.url_len != strlen(w->target) ||
                memcmp(buf.data + r.url_off, w->target, r.url_len) || r.body_len != strlen(w->body) ||
                memcmp(buf.data + r.body_off, w->body, r.body_len))
                fail_msg("%s: request %d is %s %.*s [%.*s]", what, got, m, (int)r.url_len,
                         buf.data + r.url_off, (int)r.body_len, buf.data + r.body_off);
            if (r.keep_alive != w->keep_alive || r.http10 != w->http10 || r.via_proxy != w->via_proxy ||
                (r.h_authorization >= 0) != w->has_auth || (r.h_expect >= 0) != w->has_expect ||
                (r.h_routing_key >= 0) != w->has_routing_key)
                fail_msg("%s: request %d flags ka=%d 1.0=%d proxy=%d auth=%d expect=%d key=%d", what, got,
                         r.keep_alive, r.http10, r.via_proxy, r.h_authorization, r.h_expect, r.h_routing_key);
            /* what the connection does before the next request */
            size_t left = buf.len - r.parsed;
            memmove(buf.data, buf.data + r.parsed, left);
            buf.len = left;
            r.parsed = r.msg_start = 0;
            r.nhdrs = 0;
            ig_h1req_forget_headers(&r);
        }
        if (!r.in_message && !status) {
            if (r.parsed == buf.len)
                r.parsed = buf.len = 0;
            r.msg_start = r.parsed;
        }
    }
    if (status != t->status)
        fail_msg("%s: status %d, want %d (%s)", what, status, t->status, status ? r.err_msg : "");
    if (!t->status) {
        assert_int_equal(got, t->n);
        assert_int_equal(heads_seen, t->n);
        assert_false(r.in_message);
    }
    ig_buf_free(&buf);
}

static void every_case_whole_and_byte_by_byte(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        run(&cases[i], 0);
        run(&cases[i], 1);
    }
}

static void error_codes_are_named(void **state)
{
    assert_string_equal(ig_h1req_error_code(413), "payload_too_large");
    assert_string_equal(ig_h1req_error_code(431), "headers_too_large");
    assert_string_equal(ig_h1req_error_code(417), "expectation_failed");
}

/* ---- a body that streams: the owner takes it in pieces ---- */

static int stream_head(void *owner)
{
    (void)owner;
    heads_seen++;
    return 1;
}

static const ig_h1req_ops stream_ops = {256, 64, begin, stream_head};

/* Feed in reads of step bytes; after every parse take half of the data
 * gathered (at least one byte), as an upstream write that finished would.
 * Returns the status (0: whole) and the body taken in out. */
static int stream(const char *in, size_t step, char *out, size_t *outlen, int *next_req)
{
    ig_h1req r;
    ig_buf buf;
    ig_h1req_init(&r, &stream_ops, NULL);
    ig_buf_init(&buf, 4096);
    size_t n = strlen(in), pos = 0;
    int phase = 0; /* 0 head, 1 body, 2 done */
    *outlen = 0;
    *next_req = 0;
    while (pos < n) {
        size_t len = step && n - pos > step ? step : n - pos;
        assert_int_equal(ig_buf_reserve(&buf, len), 0);
        memcpy(buf.data + buf.len, in + pos, len);
        buf.len += len;
        pos += len;
        while (r.parsed < buf.len && phase < 2) {
            int rc = ig_h1req_parse(&r, &buf);
            if (rc == IG_H1REQ_ERROR) {
                ig_buf_free(&buf);
                return r.err_status;
            }
            if (rc == IG_H1REQ_HEAD) {
                assert_int_equal(phase, 0);
                assert_true(r.streams && r.in_message && r.body_len == 0);
                phase = 1;
                continue;
            }
            if (phase == 0) { /* the head is not whole yet */
                assert_int_equal(rc, IG_H1REQ_MORE);
                break;
            }
            size_t take = rc == IG_H1REQ_MESSAGE ? r.body_len : (r.body_len + 1) / 2;
            memcpy(out + *outlen, buf.data + r.body_off, take);
            *outlen += take;
            ig_h1req_consume_body(&r, &buf, take);
            if (rc == IG_H1REQ_MESSAGE)
                phase = 2;
            else if (rc == IG_H1REQ_MORE)
                break;
        }
    }
    /* what follows the body is the next request, whole */
    *next_req = phase == 2 && buf.len - r.parsed >= 4 && memcmp(buf.data + r.parsed, "GET ", 4) == 0;
    int whole = phase == 2 && !r.in_message;
    ig_buf_free(&buf);
    return whole ? 0 : -1;
}

static void streamed_bodies_come_in_pieces(void **state)
{
    static const char chunked[] =
        "POST /up HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n1\r\n \r\n6;x=y\r\nworld!\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    static const char length[] = "PUT /up HTTP/1.1\r\nHost: g\r\nContent-Length: 12\r\n\r\n"
                                 "hello world!GET / HTTP/1.1\r\n\r\n";
    static const char over[] = "POST /up HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "28\r\n1234567890123456789012345678901234567890\r\n"
                               "28\r\n1234567890123456789012345678901234567890\r\n0\r\n\r\n";
    static const char bad[] = "POST /up HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\nhello\r\nzz\r\n";
    char out[256];
    size_t outlen;
    int next;
    for (size_t step = 0; step <= 7; step++) {
        assert_int_equal(stream(chunked, step, out, &outlen, &next), 0);
        assert_int_equal(outlen, 12);
        assert_memory_equal(out, "hello world!", 12);
        assert_true(next);
        assert_int_equal(stream(length, step, out, &outlen, &next), 0);
        assert_int_equal(outlen, 12);
        assert_memory_equal(out, "hello world!", 12);
        assert_true(next);
        /* the limit counts every byte of the body, not what is held now */
        assert_int_equal(stream(over, step, out, &outlen, &next), 413);
        assert_int_equal(stream(bad, step, out, &outlen, &next), 400);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_case_whole_and_byte_by_byte),
        cmocka_unit_test(streamed_bodies_come_in_pieces),
        cmocka_unit_test(error_codes_are_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
