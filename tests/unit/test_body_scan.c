/* ig_body_scan: top-level fields found in place, nested ones ignored, bad JSON refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/api/ig_body_scan.h"
#include "../../src/api/ig_json_stop.h"

static int scan(const char *s, ig_body_fields *f)
{
    const char *err = NULL;
    return ig_body_scan(s, strlen(s), f, &err);
}

static void finds_model_and_stream(void **state)
{
    ig_body_fields f;
    const char *body =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"model\":\"llama-3\",\"stream\":true}";
    assert_int_equal(scan(body, &f), 0);
    assert_true(f.has_model);
    assert_int_equal(f.model_len, 7);
    assert_memory_equal(f.model, "llama-3", 7);
    /* no copy: the model points into the body */
    assert_true(f.model > body && f.model < body + strlen(body));
    assert_int_equal(f.stream, 1);
    assert_int_equal(f.max_tokens, -1);
}

static void nested_model_is_not_top_level(void **state)
{
    ig_body_fields f;
    assert_int_equal(
        scan("{\"extra\":{\"model\":\"inner\",\"stream\":true},\"x\":[\"model\",\"stream\"]}", &f), 0);
    assert_false(f.has_model);
    assert_int_equal(f.stream, 0);
}

static void stream_false_and_absent(void **state)
{
    ig_body_fields f;
    assert_int_equal(scan("{\"stream\":false,\"model\":\"m\"}", &f), 0);
    assert_int_equal(f.stream, 0);
    assert_int_equal(scan("{}", &f), 0);
    assert_false(f.has_model);
    assert_int_equal(scan("  {  \"model\" : \"m\" , \"stream\" : true }  \n", &f), 0);
    assert_int_equal(f.stream, 1);
}

static void last_duplicate_wins(void **state)
{
    ig_body_fields f;
    assert_int_equal(scan("{\"model\":\"a\",\"model\":\"bb\"}", &f), 0);
    assert_int_equal(f.model_len, 2);
    assert_memory_equal(f.model, "bb", 2);
}

static void escaped_model_is_decoded(void **state)
{
    ig_body_fields f;
    assert_int_equal(scan("{\"model\":\"org\\/m\\u0031\"}", &f), 0);
    assert_int_equal(f.model_len, 6);
    assert_memory_equal(f.model, "org/m1", 6);
}

static void strings_with_brackets_and_quotes(void **state)
{
    ig_body_fields f;
    const char *body = "{\"prompt\":\"} ] { [ \\\" \\\\\",\"n\":[1,2.5e3,-3,{\"a\":null}],\"model\":\"m\"}";
    assert_int_equal(scan(body, &f), 0);
    assert_true(f.has_model);
    assert_memory_equal(f.model, "m", 1);
}

static void max_tokens(void **state)
{
    ig_body_fields f;
    assert_int_equal(scan("{\"max_tokens\":128}", &f), 0);
    assert_int_equal(f.max_tokens, 128);
    assert_int_equal(scan("{\"max_tokens\":99999999999999}", &f), 0);
    assert_int_equal(f.max_tokens, -1);
}

static void malformed_is_einval(void **state)
{
    ig_body_fields f;
    const char *bad[] = {"",
                         "[]",
                         "{",
                         "{\"model\"}",
                         "{\"a\":1,}",
                         "{\"a\":tru}",
                         "{\"a\":\"x}",
                         "{} {}",
                         "{\"a\":[1,2}",
                         "{\"a\":{\"b\":1]}",
                         "{'a':1}",
                         "{\"a\":\"\\q\"}",
                         "{\"a\":-}",
                         "nul",
                         "{\"a\" 1}",
                         "{\"a\":\"\x01\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *err = NULL;
        assert_int_equal(ig_body_scan(bad[i], strlen(bad[i]), &f, &err), -EINVAL);
        assert_non_null(err);
    }
}

static void deep_nesting_is_bounded(void **state)
{
    ig_body_fields f;
    char buf[4000];
    size_t n = 0;
    buf[n++] = '{';
    memcpy(buf + n, "\"a\":", 4);
    n += 4;
    for (int i = 0; i < 1000; i++)
        buf[n++] = '[';
    buf[n] = 0;
    const char *err = NULL;
    assert_int_equal(ig_body_scan(buf, n, &f, &err), -EINVAL);
    assert_string_equal(err, "JSON nested too deeply");
}

static void long_model_name(void **state)
{
    ig_body_fields f;
    char buf[600];
    memset(buf, 'x', sizeof(buf));
    memcpy(buf, "{\"model\":\"", 10);
    memcpy(buf + sizeof(buf) - 3, "\"}", 3);
    assert_int_equal(scan(buf, &f), -ENAMETOOLONG);
}

static int span_is(ig_span sp, const char *want)
{
    return sp.len == strlen(want) && memcmp(sp.p, want, sp.len) == 0;
}

static void prompt_spans_and_user(void **state)
{
    ig_body_fields f;
    /* chat: the whole messages array, as written, so every turn counts */
    const char *chat = "{\"model\":\"m\",\"messages\": [{\"role\":\"system\",\"content\":\"S\"},"
                       "{\"role\":\"user\",\"content\":\"a \\\"q\\\"\"}] ,\"user\":\"u-42\"}";
    assert_int_equal(scan(chat, &f), 0);
    assert_int_equal(f.n_text, 1);
    assert_true(span_is(f.text[0], "[{\"role\":\"system\",\"content\":\"S\"},"
                                   "{\"role\":\"user\",\"content\":\"a \\\"q\\\"\"}]"));
    assert_true(span_is(f.user, "u-42"));
    /* a string prompt: its contents without the quotes */
    assert_int_equal(scan("{\"prompt\":\"once upon\",\"max_tokens\":3}", &f), 0);
    assert_int_equal(f.n_text, 1);
    assert_true(span_is(f.text[0], "once upon"));
    assert_int_equal(f.user.len, 0);
    /* token ids, SGLang's text and several fields at once, in body order */
    assert_int_equal(scan("{\"input_ids\":[1,2,3],\"text\":\"t\",\"input\":[\"a\",\"b\"]}", &f), 0);
    assert_int_equal(f.n_text, 3);
    assert_true(span_is(f.text[0], "[1,2,3]"));
    assert_true(span_is(f.text[1], "t"));
    assert_true(span_is(f.text[2], "[\"a\",\"b\"]"));
    /* nested ones are not the prompt */
    assert_int_equal(scan("{\"x\":{\"prompt\":\"no\"},\"user\":7}", &f), 0);
    assert_int_equal(f.n_text, 0);
    assert_int_equal(f.user.len, 0);
}

static void one_member_as_written(void **state)
{
    (void)state;
    ig_span v;
    const char *b =
        "{\"id\":\"x\",\"choices\":[{\"a\":\"}\"}],\"kv_transfer_params\": {\"remote_block_ids\":[1,2]} }";
    assert_int_equal(ig_json_member(b, strlen(b), "kv_transfer_params", &v), 0);
    assert_int_equal(v.len, strlen("{\"remote_block_ids\":[1,2]}"));
    assert_memory_equal(v.p, "{\"remote_block_ids\":[1,2]}", v.len);
    assert_int_equal(ig_json_member(b, strlen(b), "missing", &v), -ENOENT);
    assert_int_equal(ig_json_member("[1]", 3, "x", &v), -EINVAL);
    assert_int_equal(ig_json_member("{\"x\":", 5, "x", &v), -EINVAL);
}

/* the vector stop finds what the byte loop finds: every length, alignment
 * and stop byte, high bytes (UTF-8) never taken for control bytes */
static void string_stop_matches_the_byte_loop(void **state)
{
    (void)state;
    static char buf[512 + 64];
    static const unsigned char stops[] = {'"', '\\', 0x00, 0x01, 0x1f};
    static const unsigned char plain[] = {' ', 'a', 0x20, 0x7f, 0x80, 0x9f, 0xc3, 0xff, '/', 'u'};
    unsigned seed = 1;
    for (int len = 0; len <= 300; len++)
        for (int off = 0; off < 33; off += (len > 64 ? 7 : 1))
            for (int at = -1; at < len; at += (len > 40 ? 13 : 1)) {
                char *p = buf + off;
                for (int i = 0; i < len; i++) {
                    seed = seed * 1103515245u + 12345u;
                    p[i] = (char)plain[(seed >> 16) % sizeof(plain)];
                }
                if (at >= 0)
                    p[at] = (char)stops[(seed >> 8) % sizeof(stops)];
                p[len] = '"'; /* past the end: must not be seen */
                const char *want = ig_json_string_stop_scalar(p, p + len);
                assert_ptr_equal(ig_json_string_stop(p, p + len), want);
                assert_ptr_equal(want, at >= 0 ? p + at : p + len);
            }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(finds_model_and_stream),
        cmocka_unit_test(string_stop_matches_the_byte_loop),
        cmocka_unit_test(nested_model_is_not_top_level),
        cmocka_unit_test(stream_false_and_absent),
        cmocka_unit_test(last_duplicate_wins),
        cmocka_unit_test(escaped_model_is_decoded),
        cmocka_unit_test(strings_with_brackets_and_quotes),
        cmocka_unit_test(max_tokens),
        cmocka_unit_test(malformed_is_einval),
        cmocka_unit_test(deep_nesting_is_bounded),
        cmocka_unit_test(long_model_name),
        cmocka_unit_test(prompt_spans_and_user),
        cmocka_unit_test(one_member_as_written),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
