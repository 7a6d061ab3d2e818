/* Header rewriting (RFC 9110 7.6.1) and error responses. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/http/ig_http.h"

/* Build ig_hdr slices from "Name: value" lines in one base string. */
static int split(const char *base, ig_hdr *h)
{
    int n = 0;
    const char *p = base;
    while (*p) {
        const char *colon = strchr(p, ':'), *eol = strstr(p, "\r\n");
        h[n].name_off = (uint32_t)(p - base);
        h[n].name_len = (uint32_t)(colon - p);
        h[n].value_off = (uint32_t)(colon + 2 - base);
        h[n].value_len = (uint32_t)(eol - colon - 2);
        n++;
        p = eol + 2;
    }
    return n;
}

static char *copy(const char *base, unsigned flags)
{
    static char out[4096];
    ig_hdr h[32];
    int n = split(base, h);
    ig_buf b;
    ig_buf_init(&b, 4096);
    assert_int_equal(ig_http_copy_headers(&b, base, h, n, flags), 0);
    snprintf(out, sizeof(out), "%.*s", (int)b.len, b.data);
    ig_buf_free(&b);
    return out;
}

static void drops_hop_by_hop(void **state)
{
    const char *in = "Host: a\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
                     "Transfer-Encoding: chunked\r\nUpgrade: h2c\r\nProxy-Connection: x\r\n"
                     "Proxy-Authorization: b\r\nTrailer: x\r\nX-Keep: 1\r\nContent-Type: a/b\r\n";
    assert_string_equal(copy(in, 0), "Host: a\r\nX-Keep: 1\r\nContent-Type: a/b\r\n");
}

static void drops_headers_named_by_connection(void **state)
{
    const char *in = "connection: close, X-Secret ,x-other\r\nx-secret: 1\r\nX-OTHER: 2\r\nx-public: 3\r\n";
    assert_string_equal(copy(in, 0), "x-public: 3\r\n");
}

static void flags_drop_what_the_caller_rewrites(void **state)
{
    const char *in = "Host: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nX-Request-Id: r\r\nA: b\r\n";
    assert_string_equal(
        copy(in, IG_COPY_DROP_HOST | IG_COPY_DROP_LENGTH | IG_COPY_DROP_EXPECT | IG_COPY_DROP_REQUEST_ID),
        "A: b\r\n");
    assert_string_equal(copy(in, 0), in);
}

static void list_has_tokens(void **state)
{
    assert_true(ig_http_list_has("close", 5, "close", 5));
    assert_true(ig_http_list_has(" a , Close ", 11, "close", 5));
    assert_false(ig_http_list_has("closed", 6, "close", 5));
    assert_false(ig_http_list_has("", 0, "close", 5));
}

static void name_is_case_insensitive(void **state)
{
    assert_true(ig_http_name_is("Content-Length", 14, "content-length"));
    assert_false(ig_http_name_is("Content-Lengt", 13, "content-length"));
    assert_false(ig_http_name_is("Content-Lengths", 15, "content-length"));
}

static void error_response_is_openai_shaped(void **state)
{
    ig_buf b;
    ig_buf_init(&b, 8192);
    assert_int_equal(ig_http_error_response(&b, 404, "invalid_request_error", "model_not_found",
                                            "model \"x\" not found", "rid-1", 5, 0, NULL),
                     0);
    const char *want_body = "{\"error\":{\"message\":\"model \\\"x\\\" not found\",\"type\":"
                            "\"invalid_request_error\",\"code\":\"model_not_found\"}}\n";
    char want[1024];
    snprintf(want, sizeof(want),
             "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n"
             "x-request-id: rid-1\r\n\r\n%s",
             strlen(want_body), want_body);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    ig_buf_free(&b);
}

static void json_string_escapes(void **state)
{
    ig_buf b;
    ig_buf_init(&b, 100);
    assert_int_equal(ig_json_append_string(&b, "a\"b\\c\n\x01", 7), 0);
    assert_int_equal(b.len, strlen("\"a\\\"b\\\\c\\u000a\\u0001\""));
    assert_memory_equal(b.data, "\"a\\\"b\\\\c\\u000a\\u0001\"", b.len);
    ig_buf_free(&b);
}

static void buf_cap_is_hard(void **state)
{
    ig_buf b;
    ig_buf_init(&b, 10);
    assert_int_equal(ig_buf_append(&b, "0123456789", 10), 0);
    assert_int_equal(ig_buf_append(&b, "x", 1), -E2BIG);
    assert_int_equal(b.len, 10);
    ig_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(drops_hop_by_hop),
        cmocka_unit_test(drops_headers_named_by_connection),
        cmocka_unit_test(flags_drop_what_the_caller_rewrites),
        cmocka_unit_test(list_has_tokens),
        cmocka_unit_test(name_is_case_insensitive),
        cmocka_unit_test(error_response_is_openai_shaped),
        cmocka_unit_test(json_string_escapes),
        cmocka_unit_test(buf_cap_is_hard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
