/* The worker-side response parser: heads accepted or refused, the framing
 * decided by RFC 9112 §6.3, chunked bodies forwarded raw or de-chunked with
 * trailers dropped; every message fed whole and a byte at a time must give
 * the same result. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/http/ig_h1resp.h"

enum { DONE = 0, MORE = 1, BAD = -1 };

typedef struct result {
    int rc;
    int status;
    ig_h1r_body body;
    int keep_alive, suspect;
    char out[4096]; /* forwarded body bytes */
    size_t outlen;
    size_t left; /* bytes after the message */
    const char *why;
} result;

/* Feed msg in pieces of step bytes (0: whole). */
static void run(const char *msg, size_t len, int head_request, int dechunk, size_t step, result *res)
{
    ig_h1resp r;
    ig_hdr hdrs[IG_MAX_HEADERS];
    char head[8192];
    size_t hlen = 0, pos = 0;
    int nh, in_head = 1;
    memset(res, 0, sizeof(*res));
    ig_h1resp_init(&r);
    res->rc = MORE;
    while (pos < len) {
        size_t n = step && len - pos > step ? step : len - pos;
        const char *p = msg + pos;
        size_t i = 0;
        while (i < n) {
            if (in_head) {
                size_t e = ig_h1resp_head_scan(&r, p + i, n - i);
                size_t take = e ? e : n - i;
                assert_true(hlen + take <= sizeof(head));
                memcpy(head + hlen, p + i, take);
                hlen += take;
                i += take;
                if (!e)
                    continue;
                if (ig_h1resp_head(&r, head, hlen, head_request, hdrs, IG_MAX_HEADERS, &nh, &res->why)) {
                    res->rc = BAD;
                    return;
                }
                hlen = 0;
                if (r.status < 200) { /* informational: the real head follows */
                    ig_h1resp_init(&r);
                    continue;
                }
                in_head = 0;
                res->status = r.status;
                res->body = r.body;
                res->keep_alive = r.keep_alive;
                res->suspect = r.suspect;
                if (ig_h1resp_done(&r)) {
                    res->rc = DONE;
                    res->left = len - pos - i;
                    return;
                }
                continue;
            }
            ig_h1span sp[2];
            int ns;
            size_t used;
            int rc = ig_h1resp_body(&r, p + i, n - i, dechunk, sp, 2, &ns, &used, &res->why);
            if (rc < 0) {
                res->rc = BAD;
                return;
            }
            for (int k = 0; k < ns; k++) {
                assert_true(sp[k].p >= p + i && sp[k].p + sp[k].n <= p + i + used);
                assert_true(res->outlen + sp[k].n <= sizeof(res->out));
                memcpy(res->out + res->outlen, sp[k].p, sp[k].n);
                res->outlen += sp[k].n;
            }
            i += used;
            if (rc == 1) {
                res->rc = DONE;
                res->left = len - pos - i;
                return;
            }
            assert_true(used > 0 || ns > 0);
        }
        pos += n;
    }
    if (!in_head && ig_h1resp_eof(&r))
        res->rc = DONE;
}

/* whole and byte by byte agree; returns the whole-message result */
static void parse(const char *msg, int head_request, int dechunk, result *res)
{
    result one;
    run(msg, strlen(msg), head_request, dechunk, 0, res);
    for (size_t step = 1; step < 4; step++) {
        run(msg, strlen(msg), head_request, dechunk, step, &one);
        assert_int_equal(one.rc, res->rc);
        if (res->rc == BAD)
            continue; /* what went out before the error depends on the pieces */
        assert_int_equal(one.outlen, res->outlen);
        assert_memory_equal(one.out, res->out, res->outlen);
        assert_int_equal(one.left, res->left);
    }
}

static void lengths_and_close(void **state)
{
    result r;
    parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA", 0, 0, &r);
    assert_int_equal(r.rc, DONE);
    assert_int_equal(r.body, IG_H1R_LENGTH);
    assert_int_equal(r.outlen, 5);
    assert_int_equal(r.left, 5);
    assert_true(r.keep_alive);
    parse("HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\n\r\nuntil the close", 0, 0, &r);
    assert_int_equal(r.body, IG_H1R_CLOSE);
    assert_int_equal(r.rc, DONE); /* at EOF */
    assert_int_equal(r.outlen, 15);
    assert_false(r.keep_alive);
    parse("HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi", 0, 0, &r);
    assert_false(r.keep_alive); /* 1.0 workers are not reused */
    parse("HTTP/1.1 200\r\ncontent-length: 0\r\n\r\n", 0, 0, &r);
    assert_int_equal(r.rc, DONE);
    assert_int_equal(r.status, 200);
    parse("HTTP/1.1 404 \r\nContent-Length: 1\r\n\r\nx", 0, 0, &r);
    assert_int_equal(r.status, 404);
    parse("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", 0, 0, &r);
    assert_int_equal(r.rc, MORE); /* cut */
}

static void bodiless_answers(void **state)
{
    result r;
    /* 204 and 304 never have a body, whatever the head says; the bytes after are not the body */
    parse("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\nSMUGGLE", 0, 0, &r);
    assert_int_equal(r.rc, DONE);
    assert_int_equal(r.body, IG_H1R_NONE);
    assert_int_equal(r.left, 7);
    assert_true(r.suspect);
    parse("HTTP/1.1 204 No Content\r\n\r\n", 0, 0, &r);
    assert_false(r.suspect);
    parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", 0, 0, &r);
    assert_int_equal(r.rc, DONE);
    assert_false(r.suspect); /* a 304 may state the length */
    parse("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0, 0, &r);
    assert_true(r.suspect);
    assert_int_equal(r.left, 5);
    parse("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", 1, 0, &r); /* HEAD */
    assert_int_equal(r.rc, DONE);
    assert_false(r.suspect);
    parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1, 0, &r);
    assert_int_equal(r.rc, DONE);
    /* informational answers are skipped, the final one counts */
    parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
          "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
          0, 0, &r);
    assert_int_equal(r.rc, DONE);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.outlen, 2);
}

static void chunked_raw_and_dechunked(void **state)
{
    static const char msg[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\nhello\r\n6;name=val;q=\"a \\\" b\"\r\n world\r\n0\r\n\r\nNEXT";
    result r;
    parse(msg, 0, 0, &r);
    assert_int_equal(r.rc, DONE);
    assert_int_equal(r.left, 4);
    const char *raw = strstr(msg, "\r\n\r\n") + 4;
    assert_int_equal(r.outlen, strlen(raw) - 4);
    assert_memory_equal(r.out, raw, r.outlen);
    parse(msg, 0, 1, &r);
    assert_int_equal(r.outlen, 11);
    assert_memory_equal(r.out, "hello world", 11);
}

static void trailers_dropped(void **state)
{
    static const char msg[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "2\r\nhi\r\n0\r\nX-Trailer: a\r\nChecksum: 1234\r\n\r\n";
    result r;
    parse(msg, 0, 0, &r);
    assert_int_equal(r.rc, DONE);
    assert_int_equal(r.left, 0);
    static const char want[] = "2\r\nhi\r\n0\r\n\r\n";
    assert_int_equal(r.outlen, sizeof(want) - 1);
    assert_memory_equal(r.out, want, r.outlen);
    parse(msg, 0, 1, &r);
    assert_int_equal(r.outlen, 2);
    /* a trailer field that is not a field */
    parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad field\r\n\r\n", 0, 0, &r);
    assert_int_equal(r.rc, BAD);
    parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: b\rc\r\n\r\n", 0, 0, &r);
    assert_int_equal(r.rc, BAD);
}

static void bad_heads(void **state)
{
    static const char *const bad[] = {
        "HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 600 High\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\n\r\n",
        "HTTP/2.0 200 OK\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n",
        "HTTP/1.1 200OK\r\n\r\n",
        "HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA: b\rc\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\n\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nname : x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
        "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nhi",
        "HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nhi",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        result r;
        run(bad[i], strlen(bad[i]), 0, 0, 0, &r);
        if (r.rc != BAD)
            fail_msg("accepted: %s", bad[i]);
        assert_non_null(r.why);
    }
}

static void bad_chunks(void **state)
{
    static const char *const bad[] = {
        "zz\r\n",
        "5\r\nhelloXX0\r\n\r\n",    /* data not followed by CRLF */
        "5\r\nhello\n0\r\n\r\n",    /* LF only */
        "5\rX\nhello\r\n0\r\n\r\n", /* bare CR in the size line */
        "5;a\rb\r\nhello\r\n0\r\n\r\n",
        "5;a=\"x\ry\"\r\nhello\r\n0\r\n\r\n", /* bare CR in a quoted extension */
        "5;a=\"x\"y\r\nhello\r\n0\r\n\r\n",
        "5 \r\nhello\r\n0\r\n\r\n",
        "5;\r\nhello\r\n0\r\n\r\n",
        "+5\r\nhello\r\n0\r\n\r\n",
        "11111111111111111\r\n",
        "0\r\n\r\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char msg[256];
        snprintf(msg, sizeof(msg), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s", bad[i]);
        for (int d = 0; d < 2; d++) {
            result r;
            run(msg, strlen(msg), 0, d, 0, &r);
            if (r.rc != BAD)
                fail_msg("accepted chunks: %s", bad[i]);
            run(msg, strlen(msg), 0, d, 1, &r);
            if (r.rc != BAD)
                fail_msg("accepted chunks a byte at a time: %s", bad[i]);
        }
    }
}

static void many_small_chunks_dechunked(void **state)
{
    /* more data runs than the output holds: the parser stops and resumes */
    char msg[2048] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 100; i++)
        strcat(msg, "1\r\nx\r\n");
    strcat(msg, "0\r\n\r\n");
    result r;
    parse(msg, 0, 1, &r);
    assert_int_equal(r.rc, DONE);
    assert_int_equal(r.outlen, 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lengths_and_close),
        cmocka_unit_test(bodiless_answers),
        cmocka_unit_test(chunked_raw_and_dechunked),
        cmocka_unit_test(trailers_dropped),
        cmocka_unit_test(bad_heads),
        cmocka_unit_test(bad_chunks),
        cmocka_unit_test(many_small_chunks_dechunked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
