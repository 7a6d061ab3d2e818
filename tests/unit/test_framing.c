/* Strict request framing: heads and chunked framing accepted or refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/http/ig_framing.h"

static int head(const char *h)
{
    const char *why = NULL;
    size_t n = ig_framing_head_len(h, strlen(h));
    if (!n)
        return -1;
    int rc = ig_framing_check_head(h, n, &why);
    if (rc)
        assert_non_null(why);
    return rc;
}

static void good_heads(void **state)
{
    assert_int_equal(
        head("POST /v1/chat/completions HTTP/1.1\r\nHost: gw:8080\r\nContent-Length: 27\r\n\r\n"), 0);
    assert_int_equal(head("POST /a?b=c HTTP/1.1\r\nhost: [::1]:80\r\ntransfer-encoding:  Chunked \r\n\r\n"),
                     0);
    assert_int_equal(head("GET / HTTP/1.0\r\n\r\n"), 0); /* HTTP/1.0 needs no Host */
    assert_int_equal(head("GET /x HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9\r\nX-Empty:\r\n\r\n"), 0);
    assert_int_equal(ig_framing_head_len("GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY", 31), 27);
}

static void bad_heads(void **state)
{
    static const char *const bad[] = {
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nX : a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nX\x7f: a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n",
        "POST / HTTP/1.1\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
        "POST http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST  / HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/2.0\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a/b\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (head(bad[i]) == 0)
            fail_msg("accepted: %s", bad[i]);
}

static int chunk(const char *p, int first, int last)
{
    const char *why;
    return ig_framing_check_chunk(p, strlen(p), first, last, &why);
}

static void chunk_framing(void **state)
{
    assert_int_equal(chunk("1b\r\n", 1, 0), 0);
    assert_int_equal(chunk("\r\nA;name=v;x=\"q \\\" d\"\r\n", 0, 0), 0);
    assert_int_equal(chunk("\r\n0\r\n\r\n", 0, 1), 0);
    assert_int_equal(chunk("0;e\r\n\r\n", 1, 1), 0);
    static const char *const bad[][1] = {{"XX1b\r\n"}, {" 1b\r\n"},   {"1b \r\n"}, {"+1\r\n"},
                                         {"1b;\r\n"},  {"1b;a=\r\n"}, {"1b\n"},    {"11111111111111111\r\n"},
                                         {"0\r\n"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (chunk(bad[i][0], 1, 0) == 0)
            fail_msg("accepted chunk line: %s", bad[i][0]);
    assert_int_not_equal(chunk("XX1b\r\n", 0, 0), 0);              /* data not followed by CRLF */
    assert_int_not_equal(chunk("\r\n0\r\nX: a\r\n\r\n", 0, 1), 0); /* trailer fields */
    assert_int_not_equal(chunk("\r\n5\r\n\r\n", 0, 1), 0);         /* the last chunk is 0 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_heads),
        cmocka_unit_test(bad_heads),
        cmocka_unit_test(chunk_framing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
