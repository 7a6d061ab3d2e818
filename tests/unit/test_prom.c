/* Prometheus pages: merging workers' pages into one (label added, one HELP
 * and TYPE per family, a histogram's samples together) and summing one
 * metric. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/obs/ig_prom.h"

static const char *a = "# HELP up Is it up.\n"
                       "# TYPE up gauge\n"
                       "up 1\n"
                       "# HELP ttft Time to first token.\n"
                       "# TYPE ttft histogram\n"
                       "ttft_bucket{le=\"0.1\"} 3\n"
                       "ttft_bucket{le=\"+Inf\"} 4\n"
                       "ttft_sum 0.5\n"
                       "ttft_count 4\n"
                       "# some other comment\n"
                       "\n";
static const char *b = "# HELP up Is it up.\r\n"
                       "# TYPE up gauge\r\n"
                       "up{model_name=\"m\"} 0\r\n"
                       "# TYPE ttft histogram\n"
                       "ttft_bucket{le=\"+Inf\"} 2\n"
                       "ttft_count 2\n"
                       "only_b_total 7 1700000000000\n";

static void pages_merge_by_family_with_a_label(void **state)
{
    (void)state;
    const char *pages[] = {a, b}, *vals[] = {"http://w0:1", "http://w\"1"};
    size_t lens[] = {strlen(a), strlen(b)};
    ig_buf out;
    ig_buf_init(&out, 1 << 20);
    assert_int_equal(ig_prom_merge(pages, lens, "worker_addr", vals, 2, &out), 0);
    assert_int_equal(ig_buf_append(&out, "", 1), 0);
    assert_string_equal(out.data, "# HELP up Is it up.\n"
                                  "# TYPE up gauge\n"
                                  "up{worker_addr=\"http://w0:1\"} 1\n"
                                  "up{worker_addr=\"http://w\\\"1\",model_name=\"m\"} 0\n"
                                  "# HELP ttft Time to first token.\n"
                                  "# TYPE ttft histogram\n"
                                  "ttft_bucket{worker_addr=\"http://w0:1\",le=\"0.1\"} 3\n"
                                  "ttft_bucket{worker_addr=\"http://w0:1\",le=\"+Inf\"} 4\n"
                                  "ttft_sum{worker_addr=\"http://w0:1\"} 0.5\n"
                                  "ttft_count{worker_addr=\"http://w0:1\"} 4\n"
                                  "ttft_bucket{worker_addr=\"http://w\\\"1\",le=\"+Inf\"} 2\n"
                                  "ttft_count{worker_addr=\"http://w\\\"1\"} 2\n"
                                  "only_b_total{worker_addr=\"http://w\\\"1\"} 7 1700000000000\n");
    ig_buf_free(&out);
}

static void one_metric_sums_over_its_samples(void **state)
{
    (void)state;
    const char *p =
        "# TYPE x gauge\nx{a=\"1\"} 2.5\nx{a=\"}\\\"\"} 1.5\nx_total 9\nxx 4\nx 1e1\nx{a=\"2\"} NaNish\n";
    double sum;
    assert_int_equal(ig_prom_sum(p, strlen(p), "x", &sum), 3);
    assert_true(sum > 13.99 && sum < 14.01);
    assert_int_equal(ig_prom_sum(p, strlen(p), "nope", &sum), 0);
    assert_true(sum == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pages_merge_by_family_with_a_label),
        cmocka_unit_test(one_metric_sums_over_its_samples),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
