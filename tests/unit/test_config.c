/* Flags and --config files. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "../../src/app/ig_config.h"
#include "../../src/core/ig_log.h"

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
    assert_int_equal(cfg.worker_urls.n, 2);
    assert_string_equal(cfg.worker_urls.v[1], "http://b:2");
    assert_int_equal(cfg.policy, IG_POLICY_POWER_OF_TWO);
    assert_true(cfg.request_timeout_secs == 60.0);
    assert_int_equal(cfg.threads, 4);
    assert_true(cfg.max_payload_size == 64ull << 20);
    ig_config_free(&cfg);
}

/* sgl's PD flags: --prefill URL [BOOTSTRAP_PORT|none], repeated; --decode URL ... */
static void pd_flags(void **state)
{
    (void)state;
    ig_config cfg;
    char err[256];
    char *argv[] = {"infergate",
                    "--pd-disaggregation",
                    "--prefill",
                    "http://p1:30001",
                    "9001",
                    "--prefill",
                    "http://p2:30002",
                    "none",
                    "--prefill",
                    "http://p3:30003",
                    "--decode",
                    "http://d1:31001",
                    "http://d2:31002",
                    "--prefill-policy",
                    "cache_aware",
                    "--policy",
                    "round_robin",
                    NULL};
    assert_int_equal(parse(&cfg, argv, err), 0);
    assert_int_equal(cfg.prefill_urls.n, 3);
    assert_string_equal(cfg.prefill_urls.v[2], "http://p3:30003");
    assert_int_equal(cfg.prefill_ports[0], 9001);
    assert_int_equal(cfg.prefill_ports[1], 0);
    assert_int_equal(cfg.prefill_ports[2], 0);
    assert_int_equal(cfg.decode_urls.n, 2);
    ig_proxy_config pc = ig_config_proxy(&cfg);
    assert_int_equal(pc.prefill_policy, IG_POLICY_CACHE_AWARE);
    assert_int_equal(pc.decode_policy, IG_POLICY_ROUND_ROBIN); /* --policy's */
    assert_true(ig_config_uses_policy(&cfg, IG_POLICY_CACHE_AWARE));
    ig_config_free(&cfg);
    char *vllm[] = {"infergate", "--pd-disaggregation", "--pd-protocol", "vllm", NULL};
    assert_int_equal(parse(&cfg, vllm, err), 0);
    assert_int_equal(ig_config_proxy(&cfg).pd_vllm, 1);
    ig_config_free(&cfg);
    char *etcd[] = {"infergate",        "--etcd-endpoints", "10.0.0.1:2379,http://10.0.0.2:2379",
                    "--etcd-endpoints", "10.0.0.3:2379",    NULL};
    assert_int_equal(parse(&cfg, etcd, err), 0);
    assert_int_equal(cfg.etcd_endpoints.n, 3);
    assert_string_equal(cfg.etcd_endpoints.v[0], "http://10.0.0.1:2379");
    assert_string_equal(cfg.etcd_endpoints.v[1], "http://10.0.0.2:2379");
    assert_string_equal(ig_config_control(&cfg).etcd_prefix, "/infergate/");
    ig_config_free(&cfg);
    char *etcd_tls[] = {"infergate", "--etcd-endpoints", "https://10.0.0.1:2379", NULL};
    assert_int_equal(parse(&cfg, etcd_tls, err), -EINVAL);
    assert_non_null(strstr(err, "TLS"));
    ig_config_free(&cfg);
    /* NATS: host:port lists and repeats; shared only with an affinity policy */
    char *nats[] = {"infergate",
                    "--nats-servers",
                    "10.0.0.1:4222,nats://10.0.0.2:4222",
                    "--nats-servers",
                    "10.0.0.3:4222",
                    "--policy",
                    "cache_aware",
                    NULL};
    assert_int_equal(parse(&cfg, nats, err), 0);
    assert_int_equal(cfg.nats_servers.n, 3);
    assert_string_equal(cfg.nats_servers.v[0], "nats://10.0.0.1:4222");
    assert_string_equal(cfg.nats_servers.v[1], "nats://10.0.0.2:4222");
    assert_int_equal(ig_config_control(&cfg).n_nats, 3);
    ig_config_free(&cfg);
    char *nats_rr[] = {"infergate", "--nats-servers", "10.0.0.1:4222", "--policy", "round_robin", NULL};
    assert_int_equal(parse(&cfg, nats_rr, err), 0);
    assert_int_equal(ig_config_control(&cfg).n_nats, 0); /* nothing to share: not connected */
    ig_config_free(&cfg);
    char *nats_tls[] = {"infergate", "--nats-servers", "tls://10.0.0.1:4222", NULL};
    assert_int_equal(parse(&cfg, nats_tls, err), -EINVAL);
    assert_non_null(strstr(err, "TLS"));
    ig_config_free(&cfg);
    char *no_mode[] = {"infergate", "--decode", "http://d1:1", NULL};
    assert_int_equal(parse(&cfg, no_mode, err), -EINVAL);
    assert_non_null(strstr(err, "--pd-disaggregation"));
    ig_config_free(&cfg);
    char *bad_port[] = {"infergate", "--pd-disaggregation", "--prefill", "http://p:1", "99999", NULL};
    assert_int_equal(parse(&cfg, bad_port, err), -EINVAL);
    ig_config_free(&cfg);
    const char *json = "{\"pd_disaggregation\": true, \"prefill\": [[\"http://p:1\", 8998], \"http://q:2\"],"
                       " \"decode\": [\"http://d:3\"]}";
    ig_config_defaults(&cfg);
    assert_int_equal(ig_config_load_json(&cfg, json, strlen(json), err, sizeof(err)), 0);
    assert_int_equal(cfg.prefill_urls.n, 2);
    assert_int_equal(cfg.prefill_ports[0], 8998);
    assert_int_equal(cfg.prefill_ports[1], 0);
    assert_int_equal(cfg.decode_urls.n, 1);
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
    assert_int_equal(cfg.worker_urls.n, 2);
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

static int has_status(const ig_config *cfg, int s)
{
    return (int)(cfg->cb_failure_statuses[s / 64] >> (s % 64) & 1);
}

static void trust_and_breaker_flags(void **state)
{
    ig_config cfg;
    char err[256];
    char *argv[] = {"infergate",
                    "--admin-allow",
                    "10.0.0.0/8, ::1",
                    "--admin-allow",
                    "192.168.1.7",
                    "--cb-failure-statuses",
                    "500,520-522",
                    "--metrics-api-key",
                    "m",
                    NULL};
    assert_int_equal(parse(&cfg, argv, err), 0);
    assert_int_equal(cfg.n_admin_allow, 3);
    assert_int_equal(cfg.admin_allow[0].bits, 8);
    assert_int_equal(cfg.admin_allow[1].bits, 128);
    assert_int_equal(cfg.admin_allow[2].bits, 32);
    assert_true(has_status(&cfg, 500) && has_status(&cfg, 521) && has_status(&cfg, 522));
    assert_false(has_status(&cfg, 502)); /* the default is replaced, not added to */
    assert_string_equal(cfg.metrics_api_key, "m");
    ig_config_free(&cfg);

    char *defaults[] = {"infergate", NULL};
    assert_int_equal(parse(&cfg, defaults, err), 0);
    assert_true(has_status(&cfg, 502) && has_status(&cfg, 504));
    assert_false(has_status(&cfg, 500) || has_status(&cfg, 503));
    assert_int_equal(cfg.n_admin_allow, 0);
    ig_config_free(&cfg);

    static char *bad[][3] = {{"--admin-allow", "10.0.0.0/33"}, {"--admin-allow", "example.com"},
                             {"--admin-allow", "1.2.3.4,"},    {"--cb-failure-statuses", "99"},
                             {"--cb-failure-statuses", "600"}, {"--cb-failure-statuses", "504-502"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *v[] = {"infergate", bad[i][0], bad[i][1], NULL};
        if (parse(&cfg, v, err) == 0)
            fail_msg("accepted %s %s", bad[i][0], bad[i][1]);
        assert_non_null(strstr(err, bad[i][0] + 2));
        ig_config_free(&cfg);
    }
    assert_int_equal(ig_config_load_json(&cfg,
                                         "{\"admin_allow\":[\"127.0.0.2\",\"fd00::/8\"],"
                                         "\"cb_failure_statuses\":[502,503]}",
                                         strlen("{\"admin_allow\":[\"127.0.0.2\",\"fd00::/8\"],"
                                                "\"cb_failure_statuses\":[502,503]}"),
                                         err, sizeof(err)),
                     0);
    assert_int_equal(cfg.n_admin_allow, 2);
    assert_true(has_status(&cfg, 503));
    ig_config_free(&cfg);
}

static void cidr_matching(void **state)
{
    ig_cidr r[3];
    assert_int_equal(ig_cidr_parse("10.1.2.3/8", &r[0]), 0); /* host bits dropped */
    assert_int_equal(ig_cidr_parse("::1", &r[1]), 0);
    assert_int_equal(ig_cidr_parse("192.168.4.0/22", &r[2]), 0);
    struct sockaddr_in a4 = {.sin_family = AF_INET};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET, "10.200.0.1", &a4.sin_addr);
    assert_true(ig_cidr_match(r, 3, (struct sockaddr *)&a4));
    inet_pton(AF_INET, "11.0.0.1", &a4.sin_addr);
    assert_false(ig_cidr_match(r, 3, (struct sockaddr *)&a4));
    inet_pton(AF_INET, "192.168.7.255", &a4.sin_addr);
    assert_true(ig_cidr_match(r, 3, (struct sockaddr *)&a4));
    inet_pton(AF_INET, "192.168.8.0", &a4.sin_addr);
    assert_false(ig_cidr_match(r, 3, (struct sockaddr *)&a4));
    inet_pton(AF_INET6, "::1", &a6.sin6_addr);
    assert_true(ig_cidr_match(r, 3, (struct sockaddr *)&a6));
    inet_pton(AF_INET6, "::ffff:10.9.9.9", &a6.sin6_addr); /* IPv4-mapped */
    assert_true(ig_cidr_match(r, 3, (struct sockaddr *)&a6));
    inet_pton(AF_INET6, "::2", &a6.sin6_addr);
    assert_false(ig_cidr_match(r, 3, (struct sockaddr *)&a6));
    char buf[64];
    assert_string_equal(ig_cidr_format(&r[0], buf, sizeof(buf)), "10.0.0.0/8");
    assert_int_not_equal(ig_cidr_parse("", &r[0]), 0);
    assert_int_not_equal(ig_cidr_parse("1.2.3.4/", &r[0]), 0);
}

static void log_escape(void **state)
{
    char out[64];
    size_t n = ig_log_escape(out, sizeof(out), "a\nb\\c\x1b d", 8, 0);
    assert_int_equal(n, 17);
    assert_memory_equal(out, "a\\x0ab\\x5cc\\x1b d", 17);
    n = ig_log_escape(out, sizeof(out), "id with \"q\"", 11, 1); /* one field of a line */
    assert_memory_equal(out, "id\\x20with\\x20\\x22q\\x22", n);
    n = ig_log_escape(out, 6, "\n\n", 2, 0); /* whole escapes only */
    assert_int_equal(n, 4);
}

static int load(ig_config *cfg, const char *json, char *err)
{
    ig_config_defaults(cfg);
    return ig_config_load_json(cfg, json, strlen(json), err, 256);
}

static void forward_paths_and_worker_groups(void **state)
{
    ig_config cfg;
    char err[256];
    char *argv[] = {"infergate", "--forward-paths", "/run", "/items/", "--worker-urls", "http://a:1", NULL};
    assert_int_equal(parse(&cfg, argv, err), 0);
    assert_int_equal(cfg.forward_paths.n, 2);
    assert_string_equal(cfg.forward_paths.v[1], "/items/");
    assert_int_equal(cfg.worker_urls.n, 1);
    ig_config_free(&cfg);

    assert_int_equal(
        load(&cfg,
             "{\"forward_paths\":[\"/\"],\"worker_groups\":{"
             "\"trials\":{\"worker_urls\":[\"http://t:1\",\"http://t:2\"],\"forward_paths\":[\"/run\"],"
             "\"worker_max_inflight\":32,\"health_check_endpoint\":\"/healthz\"},"
             "\"tools\":{\"forward-paths\":[\"/tools/\"]}}}",
             err),
        0);
    assert_int_equal(cfg.forward_paths.n, 1);
    assert_int_equal(cfg.n_groups, 3); /* [0] is the LLM fleet */
    assert_string_equal(cfg.groups[1].name, "trials");
    assert_int_equal(cfg.groups[1].worker_urls.n, 2);
    assert_int_equal(cfg.groups[1].worker_max_inflight, 32);
    assert_string_equal(cfg.groups[1].health_check_endpoint, "/healthz");
    assert_string_equal(cfg.groups[2].name, "tools");
    assert_int_equal(cfg.groups[2].worker_max_inflight, -1); /* the fleet's */
    assert_int_equal(cfg.groups[2].health_check_endpoint[0], 0);
    ig_control_config cc = ig_config_control(&cfg);
    assert_int_equal(cc.n_groups, 3);
    assert_string_equal(cc.groups[1].health_check_endpoint, "/healthz");
    assert_null(cc.groups[2].health_check_endpoint);
    ig_config_free(&cfg);

    static const char *const bad[][2] = {
        {"{\"worker_groups\":{\"g\":{\"worker_urls\":[\"http://t:1\"]}}}", "forwards no path"},
        {"{\"worker_groups\":{\"g\":{\"forward_paths\":[\"run\"]}}}", "not a path prefix"},
        {"{\"worker_groups\":{\"g\":{\"forward_paths\":[\"/a?b\"]}}}", "not a path prefix"},
        {"{\"worker_groups\":{\"g\":{\"forward_paths\":[\"/a\"],\"x\":1}}}", "unknown key"},
        {"{\"worker_groups\":{\"g\":{\"forward_paths\":[\"/a\"],\"worker_max_inflight\":-1}}}",
         "whole number"},
        {"{\"worker_groups\":{\"\":{\"forward_paths\":[\"/a\"]}}}", "must be 1-63"},
        {"{\"worker_groups\":[1]}", "object of groups"},
        {"{\"forward_paths\":[\"x\"]}", "not a path prefix"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (load(&cfg, bad[i][0], err) == 0)
            fail_msg("accepted %s", bad[i][0]);
        if (!strstr(err, bad[i][1]))
            fail_msg("%s: said '%s', want '%s'", bad[i][0], err, bad[i][1]);
        ig_config_free(&cfg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sgl_style_flags),
        cmocka_unit_test(pd_flags),
        cmocka_unit_test(trust_and_breaker_flags),
        cmocka_unit_test(cidr_matching),
        cmocka_unit_test(log_escape),
        cmocka_unit_test(bad_values_are_refused),
        cmocka_unit_test(config_file),
        cmocka_unit_test(forward_paths_and_worker_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
