/* Flags and --config files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../src/core/ig_config.h"

static int parse(ig_config *cfg, char **argv, char *err)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    ig_config_defaults(cfg);
    return ig_config_parse(cfg, argc, argv, err, 256);
}

static void sgl_style_flags(void **state)
{
    ig_config cfg;
    char err[256];
    char *argv[] = {"infergate",
                    "--host",
                    "0.0.0.0",
                    "--port",
                    "30000",
                    "--worker-urls",
                    "http://a:1",
                    "http://b:2",
                    "--policy",
                    "power_of_two",
                    "--request-timeout-secs=60",
                    "--threads",
                    "4",
                    NULL};
    assert_int_equal(parse(&cfg, argv, err), 0);
    assert_string_equal(cfg.host, "0.0.0.0");
    assert_int_equal(cfg.port, 30000);
    assert_int_equal(cfg.n_worker_urls, 2);
    assert_string_equal(cfg.worker_urls[1], "http://b:2");
    assert_int_equal(cfg.policy, IG_POLICY_POWER_OF_TWO);
    assert_true(cfg.request_timeout_secs == 60.0);
    assert_int_equal(cfg.threads, 4);
    assert_true(cfg.max_payload_size == 64ull << 20);
    ig_config_free(&cfg);
}

static void bad_values_are_refused(void **state)
{
    ig_config cfg;
    char err[256];
    char *a1[] = {"infergate", "--policy", "fastest", NULL};
    char *a2[] = {"infergate", "--port", "x", NULL};
    char *a3[] = {"infergate", "--no-such-flag", NULL};
    char *a4[] = {"infergate", "--worker-urls", NULL};
    char *a5[] = {"infergate", "--request-timeout-secs", "-1", NULL};
    char *a6[] = {"infergate", "--threads", "0", NULL};
    char **all[] = {a1, a2, a3, a4, a5, a6};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        assert_int_not_equal(parse(&cfg, all[i], err), 0);
        assert_true(strlen(err) > 0);
        ig_config_free(&cfg);
    }
}

static void config_file(void **state)
{
    ig_config cfg;
    char err[256], path[] = "/tmp/ig-config-XXXXXX";
    int fd = mkstemp(path);
    const char *json = "{\"worker_urls\":[\"http://x:1\",\"http://y:2\"],\"policy\":\"round_robin\","
                       "\"max-payload-size\":1000,\"request_timeout_secs\":2.5}";
    assert_true(write(fd, json, strlen(json)) == (ssize_t)strlen(json));
    close(fd);
    char *argv[] = {"infergate", "--config", path, "--port", "9", NULL};
    assert_int_equal(parse(&cfg, argv, err), 0);
    assert_int_equal(cfg.n_worker_urls, 2);
    assert_int_equal(cfg.policy, IG_POLICY_ROUND_ROBIN);
    assert_true(cfg.max_payload_size == 1000);
    assert_true(cfg.request_timeout_secs == 2.5);
    assert_int_equal(cfg.port, 9);
    ig_config_free(&cfg);

    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(write(fd, "{\"bogus\":1}", 11) == 11);
    close(fd);
    assert_int_not_equal(parse(&cfg, argv, err), 0);
    assert_non_null(strstr(err, "bogus"));
    ig_config_free(&cfg);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sgl_style_flags),
        cmocka_unit_test(bad_values_are_refused),
        cmocka_unit_test(config_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
