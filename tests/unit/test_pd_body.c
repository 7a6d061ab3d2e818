/* SGLang's PD handshake fields in a request body: batch detection from the
 * scanned prompt, injection as scalars and as arrays (checked by parsing
 * the result), empty objects, non-objects, and room values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <jansson.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/api/ig_pd_body.h"

static int batch_of(const char *body)
{
    ig_body_fields f;
    const char *err;
    assert_int_equal(ig_body_scan(body, strlen(body), &f, &err), 0);
    return ig_pd_batch_size(&f);
}

static void batches_are_lists_of_prompts(void **state)
{
    (void)state;
    assert_int_equal(batch_of("{\"text\":\"one prompt\"}"), 0);
    assert_int_equal(batch_of("{\"text\":[\"a\",\"b\",\"c\"]}"), 3);
    assert_int_equal(batch_of("{\"input_ids\":[1,2,3]}"), 0);           /* one tokenized prompt */
    assert_int_equal(batch_of("{\"input_ids\":[[1,2],[3],[4,5]]}"), 3); /* three */
    assert_int_equal(batch_of("{\"prompt\":[\"x\", \"y\"]}"), 2);
    assert_int_equal(batch_of("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"), 0);
    assert_int_equal(batch_of("{\"text\":[]}"), 0);
    assert_int_equal(batch_of("{\"model\":\"m\"}"), 0);
}

static json_t *inject(const char *body, int batch, int port)
{
    uint64_t rooms[3] = {1, 2, (1ULL << 63) - 1};
    ig_buf out;
    ig_buf_init(&out, 1 << 20);
    assert_int_equal(ig_pd_inject(&out, body, strlen(body), "10.0.0.7", port, rooms, batch), 0);
    json_error_t jerr;
    json_t *doc = json_loadb(out.data, out.len, 0, &jerr);
    assert_non_null(doc);
    ig_buf_free(&out);
    return doc;
}

static void fields_go_in_as_scalars_or_arrays(void **state)
{
    (void)state;
    json_t *d = inject("{\"text\":\"hi\",\"sampling_params\":{\"max_new_tokens\":4}} \n", 0, 8998);
    assert_string_equal(json_string_value(json_object_get(d, "bootstrap_host")), "10.0.0.7");
    assert_int_equal(json_integer_value(json_object_get(d, "bootstrap_port")), 8998);
    assert_int_equal(json_integer_value(json_object_get(d, "bootstrap_room")), 1);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(d, "sampling_params"), "max_new_tokens")), 4);
    json_decref(d);
    d = inject("{\"text\":[\"a\",\"b\",\"c\"]}", 3, 0);
    json_t *rooms = json_object_get(d, "bootstrap_room");
    assert_int_equal(json_array_size(rooms), 3);
    assert_true((uint64_t)json_integer_value(json_array_get(rooms, 2)) == (1ULL << 63) - 1);
    assert_int_equal(json_array_size(json_object_get(d, "bootstrap_host")), 3);
    assert_true(json_is_null(json_array_get(json_object_get(d, "bootstrap_port"), 1))); /* no port: null */
    json_decref(d);
    d = inject("  { }", 0, 1);
    assert_int_equal(json_object_size(d), 3);
    json_decref(d);
}

static void only_objects_take_them(void **state)
{
    (void)state;
    uint64_t room = 5;
    ig_buf out;
    ig_buf_init(&out, 1 << 10);
    assert_int_equal(ig_pd_inject(&out, "[1]", 3, "h", 1, &room, 0), -EINVAL);
    assert_int_equal(ig_pd_inject(&out, "{", 1, "h", 1, &room, 0), -EINVAL);
    assert_int_equal(ig_pd_inject(&out, "", 0, "h", 1, &room, 0), -EINVAL);
    ig_buf_free(&out);
}

static void rooms_are_63_bit_and_distinct(void **state)
{
    (void)state;
    uint64_t st = 42, prev = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t r = ig_pd_room(&st);
        assert_true(r < (1ULL << 63));
        assert_true(r != prev);
        prev = r;
    }
}

/* return_logprob: the prefill's prompt logprobs go before the decode's own */
static void logprobs_merge(void **state)
{
    (void)state;
    ig_buf elems, out;
    ig_buf_init(&elems, 1 << 20);
    ig_buf_init(&out, 1 << 20);
    const char *pre =
        "{\"text\":\"x\",\"meta_info\":{\"input_token_logprobs\":[[null,1,null],[-0.5,2,null]]}}";
    assert_int_equal(ig_pd_prefill_logprobs(&elems, pre, strlen(pre)), 0);
    assert_int_equal(elems.len, strlen("[null,1,null],[-0.5,2,null]"));
    const char *dec =
        "{\"text\":\"hi \\u0001\",\"meta_info\":{\"id\":\"a\",\"input_token_logprobs\":[[-0.125,4,null]]}}";
    assert_int_equal(ig_pd_merge_logprobs(&out, dec, strlen(dec), elems.data, elems.len), 0);
    json_error_t jerr;
    json_t *doc = json_loadb(out.data, out.len, 0, &jerr);
    assert_non_null(doc);
    json_t *lp = json_object_get(json_object_get(doc, "meta_info"), "input_token_logprobs");
    assert_int_equal(json_array_size(lp), 3);
    assert_true(json_is_null(json_array_get(json_array_get(lp, 0), 0)));
    assert_int_equal(json_integer_value(json_array_get(json_array_get(lp, 2), 1)), 4);
    assert_string_equal(json_string_value(json_object_get(doc, "text")), "hi \001");
    json_decref(doc);
    /* nothing to merge: said, out untouched */
    out.len = 0;
    assert_int_equal(ig_pd_merge_logprobs(&out, "{\"text\":\"x\"}", 12, elems.data, elems.len), -ENOENT);
    assert_int_equal(out.len, 0);
    assert_int_equal(ig_pd_prefill_logprobs(&elems, "{}", 2), -ENOENT);
    /* a streamed prefill: its last event that has them */
    elems.len = 0;
    const char *sse = "data: {\"meta_info\":{\"input_token_logprobs\":[[null,1,null]]}}\n\n"
                      "data: {\"meta_info\":{\"input_token_logprobs\":[[null,1,null],[-1,2,null]]}}\n\n"
                      "data: [DONE]\n\n";
    assert_int_equal(ig_pd_prefill_logprobs(&elems, sse, strlen(sse)), 0);
    assert_int_equal(elems.len, strlen("[null,1,null],[-1,2,null]"));
    assert_memory_equal(elems.data, "[null,1,null],[-1,2,null]", elems.len);
    /* an empty decode array takes the prefill's alone */
    const char *empty = "{\"meta_info\":{\"input_token_logprobs\":[]}}";
    assert_int_equal(ig_pd_merge_logprobs(&out, empty, strlen(empty), elems.data, elems.len), 0);
    doc = json_loadb(out.data, out.len, 0, &jerr);
    assert_int_equal(
        json_array_size(json_object_get(json_object_get(doc, "meta_info"), "input_token_logprobs")), 2);
    json_decref(doc);
    ig_buf_free(&elems);
    ig_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(batches_are_lists_of_prompts),
        cmocka_unit_test(fields_go_in_as_scalars_or_arrays),
        cmocka_unit_test(only_objects_take_them),
        cmocka_unit_test(rooms_are_63_bit_and_distinct),
        cmocka_unit_test(logprobs_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
