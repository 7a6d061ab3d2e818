/* The access-log line as built in place: every field, escapes, the
 * millisecond rounding, and the missing values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../src/obs/ig_access_log.h"

/* one record's line, without its timestamp (up to " access ") */
static void line_of(const ig_alog_record *r, char *out, size_t cap)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    ig_alog a;
    ig_alog_init(&a, fds[1]);
    ig_alog_append(&a, r);
    ig_alog_flush(&a);
    ig_alog_free(&a);
    ssize_t n = read(fds[0], out, cap - 1);
    assert_true(n > 0);
    out[n] = '\0';
    close(fds[0]);
    close(fds[1]);
    /* 2026-12-02T05:41:17.123Z access ... */
    assert_int_equal(out[4], '-');
    assert_int_equal(out[10], 'T');
    assert_int_equal(out[19], '.');
    assert_int_equal(out[23], 'Z');
    memmove(out, out + 25, strlen(out + 25) + 1);
}

static void fields_and_rounding(void **state)
{
    (void)state;
    char got[2048];
    ig_alog_record r = {.rid = "abc-1",
                        .rid_len = 5,
                        .method = "POST",
                        .path = "/v1/chat/completions?x=1",
                        .path_len = 20,
                        .status = 200,
                        .model = "llama 3",
                        .model_len = 7,
                        .worker = "http://10.0.0.5:30000",
                        .bytes = 18446744073709551615ull,
                        .ttfb_ns = 1450000,
                        .dur_us = 12345};
    line_of(&r, got, sizeof(got));
    assert_string_equal(
        got, "access abc-1 POST /v1/chat/completions 200 model=llama\\x203 worker=http://10.0.0.5:30000 "
             "bytes=18446744073709551615 ttfb_ms=1.5 dur_ms=12.3\n");
    r = (ig_alog_record){.rid = "a b\n",
                         .rid_len = 4,
                         .method = "GET",
                         .path = "/health",
                         .path_len = 7,
                         .status = 404,
                         .ttfb_ns = 0,
                         .dur_us = 0};
    line_of(&r, got, sizeof(got));
    assert_string_equal(
        got, "access a\\x20b\\x0a GET /health 404 model=- worker=- bytes=0 ttfb_ms=- dur_ms=0.0\n");
    r.ttfb_ns = 1449999; /* rounds down */
    r.dur_us = 1000049;
    line_of(&r, got, sizeof(got));
    assert_non_null(strstr(got, " ttfb_ms=1.4 dur_ms=1000.0\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fields_and_rounding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
