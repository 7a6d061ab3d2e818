#include "ig_config.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../core/ig_log.h"
#include "ig_sgl_compat.h"

#define IG_VERSION "0.1.0"

/* clang-format off */
typedef enum { T_STR, T_INT, T_U64, T_U32, T_SECS, T_POLICY, T_LOGLEVEL, T_URLS, T_BOOL, T_PATH, T_RATIO, T_SPREAD, T_FACTOR, T_CIDRS, T_STATUSES, T_PATHS, T_FILES, T_BACKEND, T_ASSIGN, T_PREFILL, T_DECODE, T_PDPROTO, T_ETCD, T_NATS } opt_type;
/* clang-format on */

typedef struct opt {
    const char *name;
    opt_type type;
    size_t off;
    const char *help;
} opt;

/* one option per line reads better than any reflow */
/* clang-format off */
#define OFF(f) offsetof(ig_config, f)
static const opt opts[] = {
    {"host", T_STR, OFF(host), "address to listen on (default 127.0.0.1)"},
    {"port", T_INT, OFF(port), "port to listen on (default 8080; 0 picks a free one)"},
    {"threads", T_INT, OFF(threads), "event-loop threads (default: number of cores)"},
    {"worker-urls", T_URLS, OFF(worker_urls), "URL [URL ...]: inference workers (http://host:port)"},
    {"ca-cert-path", T_FILES, OFF(ca_cert_paths), "FILE [FILE ...]: CA certificates (PEM) that https:// workers are checked against (default: the system's store)"},
    {"ca-cert-paths", T_FILES, OFF(ca_cert_paths), "FILE [FILE ...]: the same as --ca-cert-path"},
    {"client-cert-path", T_STR, OFF(client_cert_path), "FILE: a client certificate (PEM chain) shown to https:// workers (mTLS)"},
    {"client-key-path", T_STR, OFF(client_key_path), "FILE: its private key (PEM)"},
    {"upstream-tls-insecure", T_BOOL, OFF(upstream_tls_insecure), "check no https:// worker's certificate or name (tests only: anyone on the path can read and change the traffic)"},
    {"tls-cert-path", T_STR, OFF(tls_cert_path), "FILE: serve clients over HTTPS with this certificate (PEM chain; reloaded on SIGHUP)"},
    {"tls-key-path", T_STR, OFF(tls_key_path), "FILE: the certificate's private key (PEM)"},
    {"tls-client-ca-path", T_STR, OFF(tls_client_ca_path), "FILE: require client certificates issued by these CAs (PEM)"},
    {"forward-paths", T_PATHS, OFF(forward_paths), "PREFIX [PREFIX ...]: paths forwarded as they are (any method, any body) to the workers, balanced per request; / forwards every path infergate does not answer itself (default: none)"},
    {"policy", T_POLICY, OFF(policy), "round_robin | random | power_of_two | least_load (default) | cache_aware | consistent_hash | manual"},
    {"etcd-endpoints", T_ETCD, OFF(etcd_endpoints), "URL[,URL...]: share the worker registry with other gateways through etcd (its v3 JSON gateway, http://host:2379); without it this gateway keeps its own"},
    {"nats-servers", T_NATS, OFF(nats_servers), "URL[,URL...]: share cache_aware's prefix index and the workers' loads with the other gateways over NATS (nats://host:4222), so a conversation's turns find their worker through any gateway (cache_aware, consistent_hash)"},
    {"etcd-prefix", T_STR, OFF(etcd_prefix), "every key this cluster keeps in etcd starts with it (default /infergate/)"},
    {"etcd-lease-ttl-secs", T_SECS, OFF(etcd_lease_ttl_secs), "a gateway that stops renewing is gone from the cluster this long after (default 5)"},
    {"etcd-sync-interval-secs", T_SECS, OFF(etcd_sync_interval_secs), "how often the shared registry is read back whole (default 1)"},
    {"pd-disaggregation", T_BOOL, OFF(pd_disaggregation), "prefill/decode disaggregation (SGLang's protocol): each generation request goes to a prefill and a decode worker at once"},
    {"prefill", T_PREFILL, OFF(prefill_urls), "URL [BOOTSTRAP_PORT|none]: a prefill worker and its KV bootstrap port (repeat the flag for more; with --pd-disaggregation)"},
    {"decode", T_DECODE, OFF(decode_urls), "URL [URL ...]: decode workers (with --pd-disaggregation)"},
    {"pd-protocol", T_PDPROTO, OFF(pd_vllm), "sglang (default: both halves at once, bootstrap fields) | vllm (NIXL: the prefill first with max_tokens 1, then the decode with the kv_transfer_params it answered)"},
    {"prefill-policy", T_POLICY, OFF(prefill_policy), "the policy choosing prefill workers (default: --policy)"},
    {"decode-policy", T_POLICY, OFF(decode_policy), "the policy choosing decode workers (default: --policy)"},
    {"assignment-mode", T_ASSIGN, OFF(assignment_mode), "manual: a new routing key's worker: random (default) | min_load | min_group (fewest keyed requests in flight)"},
    {"routing-key-override", T_BOOL, OFF(routing_key_override), "a routing key (X-SMG-Routing-Key) keeps its worker under any policy, as --policy manual"},
    {"max-idle-secs", T_SECS, OFF(max_idle_secs), "manual: forget a routing key unused this long (default 14400; 0: never)"},
    {"max-routing-keys", T_U64, OFF(max_routing_keys), "manual: routing keys remembered at most (default 1000000; beyond, new keys are routed unremembered)"},
    {"api-key", T_STR, OFF(api_key), "require 'Authorization: Bearer KEY' on data endpoints"},
    {"max-payload-size", T_U64, OFF(max_payload_size), "largest request body in bytes (default 64 MiB)"},
    {"max-header-size", T_U32, OFF(max_header_size), "largest request head in bytes (default 64 KiB)"},
    {"request-timeout-secs", T_SECS, OFF(request_timeout_secs), "whole-request limit (default 1800)"},
    {"connect-timeout-secs", T_SECS, OFF(connect_timeout_secs), "upstream connect limit (default 5)"},
    {"discovery-timeout-secs", T_SECS, OFF(discovery_timeout_secs), "limit for a worker's /v1/models at start (default 3)"},
    {"upstream-idle-timeout-secs", T_SECS, OFF(upstream_idle_timeout_secs), "close pooled connections idle this long (default 60)"},
    {"upstream-max-requests-per-conn", T_U32, OFF(upstream_max_requests_per_conn), "requests per upstream connection (0: unlimited)"},
    {"upstream-max-conn-age-secs", T_SECS, OFF(upstream_max_conn_age_secs), "retire upstream connections this old (0: unlimited)"},
    {"client-idle-timeout-secs", T_SECS, OFF(client_idle_timeout_secs), "close idle client keep-alive connections (default 300)"},
    {"max-client-connections", T_U32, OFF(max_client_connections), "client connections open at once; beyond, new ones get 503 and a close (default: from the open-file limit)"},
    {"client-header-timeout-secs", T_SECS, OFF(client_header_timeout_secs), "a request head must arrive within this, from its first byte (default 15; then 408 and close)"},
    {"client-body-timeout-secs", T_SECS, OFF(client_body_timeout_secs), "a request body must arrive within this from the end of its head (default 60; then 408 and close)"},
    {"drain-timeout-secs", T_SECS, OFF(drain_timeout_secs), "on SIGTERM, wait this long for streams (default 30)"},
    {"log-level", T_LOGLEVEL, OFF(log_level), "error | warn | info (default: access log) | debug"},
    {"admin-api-key", T_STR, OFF(admin_api_key), "require 'Authorization: Bearer KEY' on admin endpoints (unset: loopback only)"},
    {"admin-allow", T_CIDRS, OFF(admin_allow), "CIDR[,CIDR]: peers that may use the admin API, with or without a key (default: loopback without a key, anyone with it)"},
    {"metrics-api-key", T_STR, OFF(metrics_api_key), "require this bearer on /metrics (default: --api-key's rule; the admin key is accepted too)"},
    {"prometheus-port", T_INT, OFF(prometheus_port), "serve GET /metrics on this port too, plain HTTP (default: none; sgl: 29000)"},
    {"prometheus-host", T_STR, OFF(prometheus_host), "the address for --prometheus-port (default 127.0.0.1; sgl: 0.0.0.0)"},
    {"log-json", T_BOOL, OFF(log_json), "every log line a JSON object (access lines with their fields)"},
    {"log-dir", T_STR, OFF(log_dir), "DIR: log to DIR/infergate.log (created; as --log-file)"},
    {"log-file", T_STR, OFF(log_file), "write logs to this file (appended; reopened on SIGHUP, for logrotate)"},
    {"max-buffered-body-bytes", T_U64, OFF(max_buffered_body_bytes), "request bytes held in memory, all clients together; beyond, new bodies wait (default: 1/8 of RAM)"},
    {"worker-max-inflight", T_U32, OFF(worker_max_inflight), "per-worker in-flight cap for --worker-urls (0: unlimited)"},
    {"health-check-interval-secs", T_SECS, OFF(health_check_interval_secs), "active health checks, all workers at once (default 10; 0: off)"},
    {"health-check-timeout-secs", T_SECS, OFF(health_check_timeout_secs), "limit for one check (default 5)"},
    {"health-failure-threshold", T_U32, OFF(health_failure_threshold), "failed checks before unhealthy (default 3)"},
    {"health-success-threshold", T_U32, OFF(health_success_threshold), "passed checks before healthy again (default 2)"},
    {"health-check-endpoint", T_PATH, OFF(health_check_endpoint), "path checked (default /health)"},
    {"cb-failure-threshold", T_U32, OFF(cb_failure_threshold), "consecutive failures that open a worker's circuit (default 10)"},
    {"cb-success-threshold", T_U32, OFF(cb_success_threshold), "half-open successes that close it (default 3)"},
    {"cb-timeout-duration-secs", T_SECS, OFF(cb_timeout_duration_secs), "open circuit cool-down before a probe (default 30)"},
    {"cb-window-duration-secs", T_SECS, OFF(cb_window_duration_secs), "failures further apart than this do not add up to --cb-failure-threshold (default 120; 0: they always do)"},
    {"disable-circuit-breaker", T_BOOL, OFF(disable_circuit_breaker), "never open circuits"},
    {"cb-failure-statuses", T_STATUSES, OFF(cb_failure_statuses), "CODE[,CODE|LOW-HIGH]: worker answers that count as failures (default 502,504; connect errors, resets and timeouts always count)"},
    {"retry-max-retries", T_U32, OFF(retry_max_retries), "other workers tried after a safe failure (default 2)"},
    {"retry-initial-backoff-ms", T_SECS, OFF(retry_initial_backoff_ms), "a retry after a failed connect waits this long first, then multiplier times more each time (default 0: at once; sgl: 50)"},
    {"retry-max-backoff-ms", T_SECS, OFF(retry_max_backoff_ms), "the longest retry backoff (default 30000)"},
    {"retry-backoff-multiplier", T_FACTOR, OFF(retry_backoff_multiplier), "backoff growth per retry (default 1.5)"},
    {"retry-jitter-factor", T_RATIO, OFF(retry_jitter_factor), "each backoff is itself times 1 +- this, at random (default 0.2)"},
    {"worker-startup-timeout-secs", T_SECS, OFF(worker_startup_timeout_secs), "serve only once every --worker-urls worker is healthy; exit 1 if they are not within this long (default 0: serve at once; sgl: 1800)"},
    {"disable-retries", T_BOOL, OFF(disable_retries), "never try another worker (whatever --retry-max-retries says)"},
    {"disable-health-check", T_BOOL, OFF(disable_health_check), "no active health checks (whatever --health-check-interval-secs says)"},
    {"retry-non-idempotent", T_BOOL, OFF(retry_non_idempotent), "send a POST again when its reused connection died after it went out (the worker may run it twice)"},
    {"broadcast-timeout-secs", T_SECS, OFF(broadcast_timeout_secs), "per-worker limit of a fleet control broadcast (default 60)"},
    {"exclude-stale-workers", T_BOOL, OFF(exclude_stale_workers), "route only to workers on the fleet's weight version (after set_version)"},
    {"upstream-spread", T_SPREAD, OFF(upstream_spread), "latency (default): spread over the processes behind one worker address | off"},
    {"upstream-process-header", T_STR, OFF(upstream_process_header), "NAME: a response header naming the worker process that answered (e.g. x-backend-pid): requests go to the process with the fewest in flight"},
    {"backend", T_BACKEND, OFF(backend), "what the workers are: sglang, vllm, trtllm, tokenspeed (engines: the default) | openai (a hosted OpenAI-compatible API: https:// if no scheme, a base path allowed, no active health checks unless asked, no process spread, --api-key sent to it unless --worker-api-key)"},
    {"worker-api-key", T_STR, OFF(worker_api_key), "sent to the --worker-urls workers as 'Authorization: Bearer KEY' in place of the client's (a hosted API's key); also on discovery and health checks"},
    {"max-concurrent-requests", T_U32, OFF(max_concurrent_requests), "requests sent to workers at once, whole gateway (0: unlimited)"},
    {"rate-limit-tokens-per-second", T_U32, OFF(rate_limit_tokens_per_second), "with --max-concurrent-requests N: sgl-model-gateway's token bucket instead of a strict cap (N tokens, refilled at this rate, one per request given back when it ends; negative: N)"},
    {"queue-size", T_U32, OFF(queue_size), "requests that may wait for a free worker slot (default 1024; 0: no queue, 429 at once, as sgl-model-gateway; -1: unlimited)"},
    {"queue-timeout-secs", T_SECS, OFF(queue_timeout_secs), "longest wait in the queue before a 503 (default 60)"},
    {"retry-budget-ratio", T_RATIO, OFF(retry_budget_ratio), "retries in flight at most this share of requests in flight (default 0.2)"},
    {"cache-threshold", T_RATIO, OFF(cache_threshold), "cache_aware: share of the prompt a cached prefix must cover to earn affinity (default 0.3)"},
    {"balance-abs-threshold", T_U32, OFF(balance_abs_threshold), "cache_aware: imbalanced when max - min in-flight exceeds this (default 64) ..."},
    {"balance-rel-threshold", T_FACTOR, OFF(balance_rel_threshold), "... and max exceeds min times this (default 1.5); imbalanced: least load"},
    {"max-tree-size", T_U64, OFF(max_tree_size), "cache_aware: prompt bytes the prefix index tracks, all models together (default 16777216)"},
    {"eviction-interval-secs", T_SECS, OFF(eviction_interval_secs), "cache_aware: background sweep of the prefix index (default 30)"},
};
/* clang-format on */
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

void ig_config_defaults(ig_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->host, sizeof(cfg->host), "127.0.0.1");
    cfg->port = 8080;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->threads = n > 0 ? (int)n : 1;
    cfg->policy = IG_POLICY_LEAST_LOAD;
    cfg->prefill_policy = cfg->decode_policy = -1;
    cfg->etcd_lease_ttl_secs = 5;
    cfg->etcd_sync_interval_secs = 1;
    cfg->max_payload_size = 64ull << 20;
    cfg->max_header_size = 64u << 10;
    cfg->request_timeout_secs = 1800;
    cfg->connect_timeout_secs = 5;
    cfg->discovery_timeout_secs = 3;
    cfg->upstream_idle_timeout_secs = 60;
    cfg->client_idle_timeout_secs = 300;
    cfg->client_header_timeout_secs = 15;
    cfg->client_body_timeout_secs = 60;
    cfg->drain_timeout_secs = 30;
    cfg->log_level = IG_LOG_INFO;
    cfg->health_check_interval_secs = 10;
    cfg->health_check_timeout_secs = 5;
    cfg->health_failure_threshold = 3;
    cfg->health_success_threshold = 2;
    snprintf(cfg->health_check_endpoint, sizeof(cfg->health_check_endpoint), "/health");
    cfg->cb_failure_threshold = 10;
    cfg->cb_success_threshold = 3;
    cfg->cb_timeout_duration_secs = 30;
    /* a worker's 500 is often one client's bad request: only a gateway-ish failure counts */
    cfg->cb_failure_statuses[502 / 64] |= 1ull << (502 % 64);
    cfg->cb_failure_statuses[504 / 64] |= 1ull << (504 % 64);
    cfg->retry_max_retries = 2;
    cfg->cb_window_duration_secs = 120;
    cfg->prometheus_port = -1;
    cfg->retry_max_backoff_ms = 30000;
    cfg->retry_backoff_multiplier = 1.5;
    cfg->retry_jitter_factor = 0.2;
    cfg->retry_budget_ratio = 0.2;
    cfg->queue_size = 1024;
    cfg->max_idle_secs = 4 * 3600; /* sgl-model-gateway's */
    cfg->max_routing_keys = 1000000;
    cfg->upstream_spread = 1;
    cfg->broadcast_timeout_secs = 60;
    cfg->queue_timeout_secs = 60;
    cfg->cache_threshold = 0.3;
    cfg->balance_abs_threshold = 64;
    cfg->balance_rel_threshold = 1.5;
    cfg->max_tree_size = 1ull << 24;
    cfg->eviction_interval_secs = 30;
}

void ig_config_usage(const char *prog)
{
    printf("usage: %s [options]\n\n", prog);
    for (size_t i = 0; i < N_OPTS; i++)
        printf("  --%-32s %s\n", opts[i].name, opts[i].help);
    printf("  --%-32s %s\n", "config FILE", "JSON object with the same keys (dashes or underscores)");
    printf("  --%-32s %s\n", "help", "this text");
    printf("  --%-32s %s\n", "version", "print the version");
}

static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static const opt *find_opt(const char *name)
{
    char norm[64];
    size_t n = strlen(name);
    if (n >= sizeof(norm))
        return NULL;
    for (size_t i = 0; i <= n; i++)
        norm[i] = name[i] == '_' ? '-' : name[i];
    for (size_t i = 0; i < N_OPTS; i++)
        if (strcmp(opts[i].name, norm) == 0)
            return &opts[i];
    return NULL;
}

static int strv_add(ig_strv *sv, const char *s);

/* A comma-separated list of servers (or one of several values); "host:port"
 * gets scheme (etcd's and NATS's own flags take both); tls, if given, is
 * refused by name. */
static int add_server_list(ig_strv *sv, const char *val, const char *scheme, const char *tls,
                           const char *flag, char *err, size_t errlen)
{
    for (const char *p = val; *p;) {
        size_t n = strcspn(p, ",");
        char one[512];
        if (n && n < sizeof(one)) {
            memcpy(one, p, n);
            one[n] = '\0';
            if (!strncmp(one, tls, strlen(tls)))
                return errf(
                    err, errlen,
                    "%s %s: TLS to it is not supported yet (give its plain %s URL, on a private network)",
                    flag, one, scheme);
            char u[600];
            snprintf(u, sizeof(u), "%s%s", strstr(one, "://") ? "" : scheme, one);
            if (strv_add(sv, u))
                return errf(err, errlen, "out of memory");
        }
        p += n + (p[n] == ',');
    }
    return 0;
}

static int strv_add(ig_strv *sv, const char *s)
{
    char **v = realloc(sv->v, sizeof(char *) * (size_t)(sv->n + 1));
    if (!v)
        return -ENOMEM;
    sv->v = v;
    if (!(v[sv->n] = strdup(s)))
        return -ENOMEM;
    sv->n++;
    return 0;
}

static void strv_free(ig_strv *sv)
{
    for (int i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
    sv->v = NULL;
    sv->n = 0;
}

/* A path prefix to forward: a path, no space, no query. */
static int add_forward_path(ig_strv *sv, const char *name, const char *p, char *err, size_t errlen)
{
    if (p[0] != '/' || strlen(p) >= 256 || strpbrk(p, " \t\r\n?#"))
        return errf(err, errlen,
                    "%s: '%s' is not a path prefix (it starts with /, no space, query or fragment)", name, p);
    return strv_add(sv, p) ? errf(err, errlen, "out of memory") : 0;
}

/* "a,b,c": each piece through one(), stopping at the first error */
static int each_item(ig_config *cfg, const opt *o, const char *val, char *err, size_t errlen,
                     int (*one)(ig_config *, const opt *, const char *, char *, size_t))
{
    char piece[128];
    for (const char *p = val;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n && (*p == ' ')) {
            p++;
            n--;
        }
        while (n && p[n - 1] == ' ')
            n--;
        if (n == 0 || n >= sizeof(piece))
            return errf(err, errlen, "--%s: empty or overlong item in '%s'", o->name, val);
        memcpy(piece, p, n);
        piece[n] = '\0';
        int rc = one(cfg, o, piece, err, errlen);
        if (rc || !comma)
            return rc;
        p = comma + 1;
    }
}

static int add_cidr(ig_config *cfg, const opt *o, const char *s, char *err, size_t errlen)
{
    if (cfg->n_admin_allow == IG_MAX_ADMIN_ALLOW)
        return errf(err, errlen, "--%s: at most %d ranges", o->name, IG_MAX_ADMIN_ALLOW);
    if (ig_cidr_parse(s, &cfg->admin_allow[cfg->n_admin_allow]))
        return errf(err, errlen, "--%s: '%s' is not an address or CIDR range (e.g. 10.0.0.0/8, ::1)", o->name,
                    s);
    cfg->n_admin_allow++;
    return 0;
}

static int add_statuses(ig_config *cfg, const opt *o, const char *s, char *err, size_t errlen)
{
    char *end;
    long lo = strtol(s, &end, 10), hi = lo;
    if (*end == '-')
        hi = strtol(end + 1, &end, 10);
    if (*end || lo < 100 || hi > 599 || lo > hi)
        return errf(err, errlen, "--%s: expected status codes 100-599 or ranges LOW-HIGH, got '%s'", o->name,
                    s);
    if (!cfg->cb_statuses_given) {
        memset(cfg->cb_failure_statuses, 0, sizeof(cfg->cb_failure_statuses));
        cfg->cb_statuses_given = 1;
    }
    for (long c = lo; c <= hi; c++)
        cfg->cb_failure_statuses[c / 64] |= 1ull << (c % 64);
    return 0;
}

static int set_value(ig_config *cfg, const opt *o, const char *val, char *err, size_t errlen)
{
    char *end;
    void *field = (char *)cfg + o->off;
    switch (o->type) {
    case T_STR:
        if (o->off == OFF(host)) {
            if (strlen(val) >= sizeof(cfg->host))
                return errf(err, errlen, "--host: too long");
            snprintf(cfg->host, sizeof(cfg->host), "%s", val);
        } else {
            free(*(char **)field);
            *(char **)field = strdup(val);
        }
        return 0;
    case T_INT: {
        long v = strtol(val, &end, 10);
        if (*end || end == val || v < 0 || v > 65535)
            return errf(err, errlen, "--%s: expected a number from 0 to 65535, got '%s'", o->name, val);
        if (o->off == OFF(threads) && (v < 1 || v > 256))
            return errf(err, errlen, "--threads: expected 1 to 256");
        *(int *)field = (int)v;
        return 0;
    }
    case T_U64:
    case T_U32: {
        if (o->off == OFF(max_concurrent_requests) && strcmp(val, "-1") == 0)
            val = "0"; /* sgl-model-gateway's "unlimited" */
        if (o->off == OFF(rate_limit_tokens_per_second)) {
            cfg->rate_limit_given = 1;
            if (val[0] == '-' && val[1] >= '0' && val[1] <= '9') {
                cfg->rate_limit_given = 2; /* sgl: a negative rate is the cap's */
                return 0;
            }
        }
        if (o->off == OFF(queue_size) && strcmp(val, "-1") == 0) {
            cfg->queue_size = UINT32_MAX; /* no limit (0 is no queue) */
            return 0;
        }
        unsigned long long v = strtoull(val, &end, 10);
        if (*end || end == val || val[0] == '-' || (o->type == T_U32 && v > UINT32_MAX))
            return errf(err, errlen, "--%s: expected a non-negative integer, got '%s'", o->name, val);
        if (o->type == T_U64)
            *(uint64_t *)field = v;
        else
            *(uint32_t *)field = (uint32_t)v;
        return 0;
    }
    case T_SECS: {
        double v = strtod(val, &end);
        if (*end || end == val || !(v >= 0) || v > 1e7)
            return errf(err, errlen, "--%s: expected seconds >= 0, got '%s'", o->name, val);
        *(double *)field = v;
        if (o->off == OFF(health_check_interval_secs))
            cfg->health_interval_given = 1;
        return 0;
    }
    case T_ASSIGN:
        if (!strcmp(val, "random"))
            cfg->assignment_mode = IG_ASSIGN_RANDOM;
        else if (!strcmp(val, "min_load"))
            cfg->assignment_mode = IG_ASSIGN_MIN_LOAD;
        else if (!strcmp(val, "min_group"))
            cfg->assignment_mode = IG_ASSIGN_MIN_GROUP;
        else
            return errf(err, errlen, "--assignment-mode: expected random, min_load or min_group, got '%s'",
                        val);
        return 0;
    case T_BACKEND:
        if (!strcmp(val, "sglang") || !strcmp(val, "vllm") || !strcmp(val, "trtllm") ||
            !strcmp(val, "tokenspeed"))
            cfg->backend = IG_BACKEND_ENGINE; /* all speak the same HTTP API to infergate */
        else if (!strcmp(val, "openai"))
            cfg->backend = IG_BACKEND_OPENAI;
        else if (!strcmp(val, "anthropic") || !strcmp(val, "gemini"))
            return errf(err, errlen,
                        "--backend %s: hosted APIs with their own protocol (Anthropic's, Gemini's) are not "
                        "supported; infergate forwards OpenAI-compatible ones (--backend openai)",
                        val);
        else
            return errf(err, errlen,
                        "--backend: expected sglang, vllm, trtllm, tokenspeed or openai, got '%s'", val);
        return 0;
    case T_POLICY:
        if (!strcmp(val, "prefix_hash") || !strcmp(val, "bucket") || !strcmp(val, "passthrough"))
            return errf(
                err, errlen,
                "--policy %s is a policy of sgl-model-gateway that infergate does not have yet "
                "(docs/sgl-compat.md); for sticky routing by X-SMG-Routing-Key use manual or consistent_hash",
                val);
        ig_policy_kind k;
        if (ig_policy_from_name(val, &k))
            return errf(err, errlen,
                        "--%s: unknown policy '%s' (round_robin, random, power_of_two, least_load, "
                        "cache_aware, consistent_hash, consistent_hashing or manual)",
                        o->name, val);
        if (o->off == OFF(policy))
            cfg->policy = k;
        else
            *(int *)field = (int)k;
        return 0;
    case T_LOGLEVEL:
        if ((cfg->log_level = ig_log_level_from_name(val)) < 0)
            return errf(err, errlen, "--log-level: expected error, warn, info or debug");
        return 0;
    case T_URLS: return strv_add(&cfg->worker_urls, val);
    case T_DECODE: return strv_add(&cfg->decode_urls, val);
    case T_ETCD:
        return add_server_list(&cfg->etcd_endpoints, val, "http://", "https://", "--etcd-endpoints", err,
                               errlen);
    case T_NATS:
        return add_server_list(&cfg->nats_servers, val, "nats://", "tls://", "--nats-servers", err, errlen);
    case T_PDPROTO:
        if (strcmp(val, "sglang") && strcmp(val, "vllm"))
            return errf(err, errlen, "--pd-protocol: expected sglang or vllm, got '%s'", val);
        cfg->pd_vllm = !strcmp(val, "vllm");
        return 0;
    case T_PREFILL:
        if (cfg->prefill_urls.n == IG_MAX_PREFILL)
            return errf(err, errlen, "--prefill: at most %d at start (add more with POST /workers)",
                        IG_MAX_PREFILL);
        cfg->prefill_ports[cfg->prefill_urls.n] = 0;
        return strv_add(&cfg->prefill_urls, val);
    case T_FILES:
        if (access(val, R_OK) != 0)
            return errf(err, errlen, "--%s %s: %s", o->name, val, strerror(errno));
        return strv_add((ig_strv *)field, val);
    case T_PATHS: return add_forward_path(&cfg->forward_paths, "--forward-paths", val, err, errlen);
    case T_CIDRS: return each_item(cfg, o, val, err, errlen, add_cidr);
    case T_STATUSES: return each_item(cfg, o, val, err, errlen, add_statuses);
    case T_BOOL:
        if (strcmp(val, "true") == 0 || strcmp(val, "1") == 0)
            *(int *)field = 1;
        else if (strcmp(val, "false") == 0 || strcmp(val, "0") == 0)
            *(int *)field = 0;
        else
            return errf(err, errlen, "--%s: expected true or false", o->name);
        return 0;
    case T_PATH:
        if (val[0] != '/' || strlen(val) >= 256 || strpbrk(val, " \r\n"))
            return errf(err, errlen, "--%s: expected a path starting with /", o->name);
        snprintf((char *)field, 256, "%s", val);
        return 0;
    case T_SPREAD:
        if (strcmp(val, "latency") == 0)
            *(int *)field = 1;
        else if (strcmp(val, "off") == 0)
            *(int *)field = 0;
        else
            return errf(err, errlen, "--%s: expected latency or off", o->name);
        return 0;
    case T_FACTOR: {
        double v = strtod(val, &end);
        if (*end || end == val || !(v >= 1) || v > 1000)
            return errf(err, errlen, "--%s: expected a number from 1 to 1000", o->name);
        *(double *)field = v;
        return 0;
    }
    case T_RATIO: {
        double v = strtod(val, &end);
        if (*end || end == val || !(v >= 0) || v > 1)
            return errf(err, errlen, "--%s: expected a number from 0 to 1", o->name);
        *(double *)field = v;
        return 0;
    }
    }
    return 0;
}

/* The bootstrap port after --prefill URL: a port number, or "none". */
static int prefill_port(ig_config *cfg, const char *val, char *err, size_t errlen)
{
    char *end;
    long p = strtol(val, &end, 10);
    if (!strcasecmp(val, "none"))
        return 0;
    if (*end || end == val || p < 1 || p > 65535)
        return errf(err, errlen,
                    "--prefill %s: expected a bootstrap port (1-65535) or none after the URL, got '%s'",
                    cfg->prefill_urls.v[cfg->prefill_urls.n - 1], val);
    cfg->prefill_ports[cfg->prefill_urls.n - 1] = (int)p;
    return 0;
}

static int apply_json(ig_config *cfg, json_t *root, const char *path, char *err, size_t errlen);

static int load_file(ig_config *cfg, const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        return errf(err, errlen, "--config %s: line %d: %s", path, jerr.line, jerr.text);
    return apply_json(cfg, root, path, err, errlen);
}

int ig_config_load_json(ig_config *cfg, const char *text, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root)
        return errf(err, errlen, "config: line %d: %s", jerr.line, jerr.text);
    return apply_json(cfg, root, "(text)", err, errlen);
}

static int strings_of(ig_strv *sv, json_t *arr, const char *what, int paths, char *err, size_t errlen)
{
    size_t i;
    json_t *u;
    if (!json_is_array(arr))
        return errf(err, errlen, "%s must be an array of strings", what);
    json_array_foreach(arr, i, u)
    {
        const char *s = json_string_value(u);
        if (!s)
            return errf(err, errlen, "%s must hold strings", what);
        int rc = paths ? add_forward_path(sv, what, s, err, errlen) : strv_add(sv, s);
        if (rc)
            return paths ? rc : errf(err, errlen, "out of memory");
    }
    return 0;
}

/* "worker_groups": {"NAME": {"worker_urls": [...], "forward_paths": [...],
 * "worker_max_inflight": N, "health_check_endpoint": "/path"}, ...} */
static int load_groups(ig_config *cfg, json_t *val, const char *path, char *err, size_t errlen)
{
    const char *name, *k;
    json_t *g, *v;
    if (!json_is_object(val))
        return errf(err, errlen, "--config %s: worker_groups must be an object of groups by name", path);
    json_object_foreach(val, name, g)
    {
        char what[160];
        if (cfg->n_groups == 0)
            cfg->n_groups = 1; /* [0] is the LLM fleet */
        if (cfg->n_groups == IG_MAX_GROUPS)
            return errf(err, errlen, "--config %s: at most %d worker groups", path, IG_MAX_GROUPS - 1);
        size_t nlen = strlen(name);
        if (!nlen || nlen > 63 ||
            strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != nlen)
            return errf(err, errlen, "--config %s: worker group name '%s' must be 1-63 of [A-Za-z0-9_.-]",
                        path, name);
        for (int i = 1; i < cfg->n_groups; i++)
            if (strcmp(cfg->groups[i].name, name) == 0)
                return errf(err, errlen, "--config %s: worker group '%s' given twice", path, name);
        ig_group_config *gc = &cfg->groups[cfg->n_groups++];
        memset(gc, 0, sizeof(*gc));
        gc->worker_max_inflight = -1;
        if (!(gc->name = strdup(name)))
            return errf(err, errlen, "out of memory");
        if (!json_is_object(g))
            return errf(err, errlen, "--config %s: worker group '%s' must be an object", path, name);
        json_object_foreach(g, k, v)
        {
            int rc = 0;
            snprintf(what, sizeof(what), "--config %s: worker group '%s': %s", path, name, k);
            if (strcmp(k, "worker_urls") == 0 || strcmp(k, "worker-urls") == 0)
                rc = strings_of(&gc->worker_urls, v, what, 0, err, errlen);
            else if (strcmp(k, "forward_paths") == 0 || strcmp(k, "forward-paths") == 0)
                rc = strings_of(&gc->forward_paths, v, what, 1, err, errlen);
            else if (strcmp(k, "worker_max_inflight") == 0 || strcmp(k, "worker-max-inflight") == 0) {
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000)
                    rc = errf(err, errlen, "%s must be a whole number (0: unlimited)", what);
                else
                    gc->worker_max_inflight = (int)json_integer_value(v);
            } else if (strcmp(k, "health_check_endpoint") == 0 || strcmp(k, "health-check-endpoint") == 0) {
                const char *p = json_string_value(v);
                if (!p || p[0] != '/' || strlen(p) >= sizeof(gc->health_check_endpoint) ||
                    strpbrk(p, " \r\n"))
                    rc = errf(err, errlen, "%s must be a path starting with /", what);
                else
                    snprintf(gc->health_check_endpoint, sizeof(gc->health_check_endpoint), "%s", p);
            } else
                rc = errf(err, errlen,
                          "%s: unknown key (a group takes worker_urls, forward_paths, worker_max_inflight, "
                          "health_check_endpoint)",
                          what);
            if (rc)
                return rc;
        }
        if (!gc->forward_paths.n)
            return errf(err, errlen, "--config %s: worker group '%s' forwards no path (forward_paths)", path,
                        name);
    }
    return 0;
}

/* Takes root. */
static int apply_json(ig_config *cfg, json_t *root, const char *path, char *err, size_t errlen)
{
    const char *key;
    json_t *val;
    int rc = 0;
    if (!json_is_object(root)) {
        rc = errf(err, errlen, "--config %s: expected a JSON object", path);
        goto done;
    }
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "worker_groups") == 0 || strcmp(key, "worker-groups") == 0) {
            if ((rc = load_groups(cfg, val, path, err, errlen)))
                goto done;
            continue;
        }
        const opt *o = find_opt(key);
        char tmp[64];
        if (!o) {
            rc = errf(err, errlen, "--config %s: unknown key '%s'", path, key);
            goto done;
        }
        if ((o->type == T_URLS || o->type == T_CIDRS || o->type == T_STATUSES || o->type == T_PATHS ||
             o->type == T_FILES || o->type == T_DECODE || o->type == T_PREFILL) &&
            json_is_array(val)) {
            size_t i;
            json_t *u;
            json_array_foreach(val, i, u)
            {
                char num[24];
                json_t *port = NULL;
                if (o->type == T_PREFILL && json_is_array(u)) { /* ["URL", PORT or null] */
                    port = json_array_get(u, 1);
                    u = json_array_get(u, 0);
                }
                const char *item = json_string_value(u);
                if (json_is_integer(u)) {
                    snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(u));
                    item = num;
                }
                if (!item) {
                    rc = errf(err, errlen, "--config %s: %s must hold strings", path, key);
                    goto done;
                }
                if ((rc = set_value(cfg, o, item, err, errlen)))
                    goto done;
                if (json_is_integer(port)) {
                    snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(port));
                    if ((rc = prefill_port(cfg, num, err, errlen)))
                        goto done;
                }
            }
            continue;
        }
        const char *s = tmp;
        if (json_is_string(val))
            s = json_string_value(val);
        else if (json_is_integer(val))
            snprintf(tmp, sizeof(tmp), "%lld", (long long)json_integer_value(val));
        else if (json_is_real(val))
            snprintf(tmp, sizeof(tmp), "%.17g", json_real_value(val));
        else if (json_is_boolean(val))
            snprintf(tmp, sizeof(tmp), "%s", json_is_true(val) ? "true" : "false");
        else {
            rc = errf(err, errlen, "--config %s: '%s' must be a string or a number", path, key);
            goto done;
        }
        if ((rc = set_value(cfg, o, s, err, errlen)))
            goto done;
    }
done:
    json_decref(root);
    return rc;
}

/* A flag of sgl-model-gateway's that infergate has under another name, or
 * not at all (ig_sgl_compat.h): mapped, accepted, or refused by the
 * feature's name. -ENOENT: not one of sgl's either. */
static int sgl_flag(ig_config *cfg, const char *name, const char *val, int argc, char **argv, int *i,
                    char *err, size_t errlen)
{
    const ig_sgl_flag *g = ig_sgl_find(name);
    if (!g || g->kind == IG_SGL_SAME)
        return -ENOENT;
    const char *first = val;
    if (!val && g->nargs == 1) {
        if (*i + 1 >= argc)
            return errf(err, errlen, "--%s needs a value", name);
        first = argv[++*i];
    } else if (!val && g->nargs < 0) {
        while (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0) {
            ++*i;
            if (!first)
                first = argv[*i];
        }
    }
    switch (g->kind) {
    case IG_SGL_REFUSE:
        return errf(
            err, errlen,
            "--%s: %s is a feature of sgl-model-gateway that infergate does not have (docs/sgl-compat.md)",
            name, g->why);
    case IG_SGL_NOOP:
        if (cfg->n_sgl_noops < IG_MAX_SGL_NOOPS)
            cfg->sgl_noops[cfg->n_sgl_noops++] = g;
        return 0;
    case IG_SGL_MAP: {
        char to[64];
        const char *eq = strchr(g->to, '=');
        size_t n = eq ? (size_t)(eq - g->to) : strlen(g->to);
        snprintf(to, sizeof(to), "%.*s", (int)n, g->to);
        const opt *o = find_opt(to);
        if (!o)
            return errf(err, errlen, "--%s: maps to unknown --%s", name, to);
        if (eq && g->nargs == 0 && first && strcmp(first, "true") && strcmp(first, "1"))
            return 0; /* --disable-retries=false: nothing to do */
        const char *v = eq ? eq + 1 : first;
        if (!v)
            return errf(err, errlen, "--%s needs a value", name);
        return set_value(cfg, o, v, err, errlen);
    }
    default: return -ENOENT;
    }
}

/* sgl-model-gateway's rule for hosted APIs: a URL without a scheme is https */
static int https_by_default(ig_strv *urls)
{
    for (int i = 0; i < urls->n; i++) {
        char *u;
        if (strstr(urls->v[i], "://"))
            continue;
        if (asprintf(&u, "https://%s", urls->v[i]) < 0)
            return -ENOMEM;
        free(urls->v[i]);
        urls->v[i] = u;
    }
    return 0;
}

int ig_config_parse(ig_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            ig_config_usage(argv[0]);
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("infergate %s\n", IG_VERSION);
            return 1;
        }
        if (strcmp(a, "--sgl-compat-table") == 0) { /* docs/sgl-compat.md's table */
            ig_sgl_print_table(stdout);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0)
            return errf(err, errlen, "unexpected argument '%s'", a);
        char name[64];
        const char *eq = strchr(a, '='), *val = NULL;
        size_t nlen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nlen >= sizeof(name))
            return errf(err, errlen, "unknown option '%s'", a);
        memcpy(name, a + 2, nlen);
        name[nlen] = '\0';
        if (eq)
            val = eq + 1;
        if (strcmp(name, "config") == 0) {
            if (!val && i + 1 < argc)
                val = argv[++i];
            if (!val)
                return errf(err, errlen, "--config needs a file");
            int rc = load_file(cfg, val, err, errlen);
            if (rc)
                return rc;
            continue;
        }
        const opt *o = find_opt(name);
        if (!o) {
            int rc = sgl_flag(cfg, name, val, argc, argv, &i, err, errlen);
            if (rc == -ENOENT)
                return errf(err, errlen, "unknown option '--%s' (see --help)", name);
            if (rc)
                return rc;
            continue;
        }
        if (o->type == T_PREFILL) {
            if (!val && (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2)))
                return errf(err, errlen, "--prefill needs a URL (then, optionally, its bootstrap port)");
            int rc = set_value(cfg, o, val ? val : argv[++i], err, errlen);
            if (rc)
                return rc;
            if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) /* sgl's optional port, or none */
                if ((rc = prefill_port(cfg, argv[++i], err, errlen)))
                    return rc;
            continue;
        }
        if ((o->type == T_URLS || o->type == T_PATHS || o->type == T_FILES || o->type == T_DECODE ||
             o->type == T_ETCD || o->type == T_NATS) &&
            !val) {
            int n = 0;
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
                int rc = set_value(cfg, o, argv[++i], err, errlen);
                if (rc)
                    return rc;
                n++;
            }
            if (!n)
                return errf(err, errlen, "--%s needs at least one value", name);
            continue;
        }
        if (!val && o->type == T_BOOL)
            val = "true";
        if (!val) {
            if (i + 1 >= argc)
                return errf(err, errlen, "--%s needs a value", name);
            val = argv[++i];
        }
        int rc = set_value(cfg, o, val, err, errlen);
        if (rc)
            return rc;
    }
    if ((cfg->prefill_urls.n || cfg->decode_urls.n) && !cfg->pd_disaggregation)
        return errf(err, errlen, "--prefill and --decode need --pd-disaggregation");
    if (cfg->pd_disaggregation && cfg->backend == IG_BACKEND_OPENAI)
        return errf(err, errlen, "--pd-disaggregation is for inference engines, not --backend openai");
    return cfg->backend == IG_BACKEND_OPENAI ? https_by_default(&cfg->worker_urls) : 0;
}

int ig_config_uses_policy(const ig_config *cfg, ig_policy_kind k)
{
    return cfg->policy == k || cfg->prefill_policy == (int)k || cfg->decode_policy == (int)k;
}

void ig_config_free(ig_config *cfg)
{
    strv_free(&cfg->forward_paths);
    for (int g = 1; g < cfg->n_groups; g++) {
        free(cfg->groups[g].name);
        strv_free(&cfg->groups[g].worker_urls);
        strv_free(&cfg->groups[g].forward_paths);
    }
    cfg->n_groups = 0;
    strv_free(&cfg->worker_urls);
    strv_free(&cfg->prefill_urls);
    strv_free(&cfg->decode_urls);
    strv_free(&cfg->etcd_endpoints);
    strv_free(&cfg->nats_servers);
    free(cfg->etcd_prefix);
    strv_free(&cfg->ca_cert_paths);
    free(cfg->client_cert_path);
    free(cfg->client_key_path);
    cfg->client_cert_path = cfg->client_key_path = NULL;
    free(cfg->tls_cert_path);
    free(cfg->tls_key_path);
    free(cfg->tls_client_ca_path);
    cfg->tls_cert_path = cfg->tls_key_path = cfg->tls_client_ca_path = NULL;
    free(cfg->api_key);
    free(cfg->worker_api_key);
    free(cfg->admin_api_key);
    free(cfg->metrics_api_key);
    free(cfg->log_file);
    free(cfg->log_dir);
    cfg->log_dir = NULL;
    free(cfg->prometheus_host);
    cfg->prometheus_host = NULL;
    free(cfg->upstream_process_header);
    cfg->upstream_process_header = NULL;
    cfg->metrics_api_key = cfg->log_file = NULL;
    cfg->api_key = NULL;
    cfg->admin_api_key = NULL;
}

static uint64_t ms(double secs)
{
    return secs > 0 ? (uint64_t)(secs * 1000.0) : 0;
}

ig_server_config ig_config_server(const ig_config *cfg)
{
    return (ig_server_config){.client_idle_timeout_secs = cfg->client_idle_timeout_secs,
                              .client_header_timeout_secs = cfg->client_header_timeout_secs,
                              .client_body_timeout_secs = cfg->client_body_timeout_secs,
                              .drain_timeout_secs = cfg->drain_timeout_secs,
                              .max_header_size = cfg->max_header_size,
                              .max_payload_size = cfg->max_payload_size,
                              .max_client_connections = cfg->max_client_connections,
                              .max_buffered_body_bytes = cfg->max_buffered_body_bytes};
}

ig_pool_config ig_config_pool(const ig_config *cfg)
{
    static char header[128]; /* lower case: compared with ig_http_name_is */
    const char *ph = cfg->upstream_process_header;
    if (ph && *ph) {
        size_t i = 0;
        for (; ph[i] && i < sizeof(header) - 1; i++)
            header[i] = (char)tolower((unsigned char)ph[i]);
        header[i] = '\0';
    }
    ig_pool_config pc = {.process_header = ph && *ph ? header : NULL,
                         .idle_timeout_ms = ms(cfg->upstream_idle_timeout_secs),
                         .max_age_ms = ms(cfg->upstream_max_conn_age_secs),
                         .connect_timeout_ms = ms(cfg->connect_timeout_secs),
                         .max_requests = cfg->upstream_max_requests_per_conn,
                         .max_request_head = (size_t)cfg->max_header_size + 4096,
                         /* a hosted API balances its own processes; probing it would cost requests */
                         .spread = cfg->upstream_spread && cfg->backend != IG_BACKEND_OPENAI};
    pc.probe_paths[0] = cfg->health_check_endpoint;
    for (int g = 1; g < cfg->n_groups && g < IG_MAX_GROUPS; g++)
        pc.probe_paths[g] =
            cfg->groups[g].health_check_endpoint[0] ? cfg->groups[g].health_check_endpoint : NULL;
    return pc;
}

ig_proxy_config ig_config_proxy(const ig_config *cfg)
{
    return (ig_proxy_config){
        .policy = cfg->policy,
        .prefill_policy = cfg->prefill_policy >= 0 ? (ig_policy_kind)cfg->prefill_policy : cfg->policy,
        .decode_policy = cfg->decode_policy >= 0 ? (ig_policy_kind)cfg->decode_policy : cfg->policy,
        .sticky = ig_config_uses_policy(cfg, IG_POLICY_MANUAL) || cfg->routing_key_override,
        .assignment = (ig_assignment)cfg->assignment_mode,
        .pd_vllm = cfg->pd_vllm,
        .retry_max_retries = cfg->disable_retries ? 0 : cfg->retry_max_retries,
        .retry_non_idempotent = cfg->retry_non_idempotent,
        .retry_budget_ratio = cfg->retry_budget_ratio,
        .request_timeout_secs = cfg->request_timeout_secs,
        .queue_timeout_secs = cfg->queue_timeout_secs,
        .cache_threshold = cfg->cache_threshold,
        .balance_abs_threshold = cfg->balance_abs_threshold,
        .balance_rel_threshold = cfg->balance_rel_threshold,
        .retry_initial_backoff_ms = cfg->retry_initial_backoff_ms,
        .retry_max_backoff_ms = cfg->retry_max_backoff_ms,
        .retry_backoff_multiplier = cfg->retry_backoff_multiplier,
        .retry_jitter_factor = cfg->retry_jitter_factor};
}

ig_admission_config ig_config_admission(const ig_config *cfg)
{
    return (ig_admission_config){.max_concurrent = cfg->max_concurrent_requests,
                                 .queue_size = cfg->queue_size,
                                 .bucket = cfg->rate_limit_given != 0,
                                 .refill_per_s = cfg->rate_limit_given == 2
                                                     ? cfg->max_concurrent_requests
                                                     : cfg->rate_limit_tokens_per_second};
}

ig_breaker_config ig_config_breaker(const ig_config *cfg)
{
    ig_breaker_config bc = {!cfg->disable_circuit_breaker,    (int)cfg->cb_failure_threshold,
                            (int)cfg->cb_success_threshold,   ms(cfg->cb_timeout_duration_secs),
                            ms(cfg->cb_window_duration_secs), {0}};
    memcpy(bc.failure_statuses, cfg->cb_failure_statuses, sizeof(bc.failure_statuses));
    return bc;
}

/* host:port, for this gateway's member key */
static const char *self_addr(const ig_config *cfg)
{
    static char addr[300]; /* one configuration per process */
    snprintf(addr, sizeof(addr), "%s:%d", cfg->host, cfg->port);
    return addr;
}

ig_control_config ig_config_control(const ig_config *cfg)
{
    static ig_control_group groups[IG_MAX_GROUPS]; /* one configuration per process: lives as long as it */
    for (int g = 1; g < cfg->n_groups; g++) {
        const ig_group_config *gc = &cfg->groups[g];
        groups[g] = (ig_control_group){.name = gc->name,
                                       .worker_urls = gc->worker_urls.v,
                                       .n_worker_urls = gc->worker_urls.n,
                                       .worker_max_inflight = gc->worker_max_inflight,
                                       .health_check_endpoint =
                                           gc->health_check_endpoint[0] ? gc->health_check_endpoint : NULL};
    }
    return (ig_control_config){
        .groups = groups,
        .n_groups = cfg->n_groups,
        .worker_urls = cfg->worker_urls.v,
        .n_worker_urls = cfg->worker_urls.n,
        .prefill_urls = cfg->prefill_urls.v,
        .prefill_ports = cfg->prefill_ports,
        .n_prefill = cfg->prefill_urls.n,
        .decode_urls = cfg->decode_urls.v,
        .n_decode = cfg->decode_urls.n,
        .etcd_endpoints = cfg->etcd_endpoints.v,
        .n_etcd = cfg->etcd_endpoints.n,
        .nats_servers = cfg->nats_servers.v,
        .n_nats = ig_config_uses_policy(cfg, IG_POLICY_CACHE_AWARE) ||
                          ig_config_uses_policy(cfg, IG_POLICY_CONSISTENT_HASH)
                      ? cfg->nats_servers.n
                      : 0,
        .etcd_prefix = cfg->etcd_prefix ? cfg->etcd_prefix : "/infergate/",
        .etcd_lease_ttl_secs = cfg->etcd_lease_ttl_secs > 1 ? cfg->etcd_lease_ttl_secs : 2,
        .etcd_sync_interval_secs = cfg->etcd_sync_interval_secs,
        .self_addr = self_addr(cfg),
        .worker_max_inflight = cfg->worker_max_inflight,
        .discovery_timeout_secs = cfg->discovery_timeout_secs,
        .health_check_interval_secs =
            cfg->disable_health_check || (cfg->backend == IG_BACKEND_OPENAI && !cfg->health_interval_given)
                ? 0 /* a hosted API has no /health (sgl-model-gateway skips it too) */
                : cfg->health_check_interval_secs,
        .worker_api_key = cfg->worker_api_key                 ? cfg->worker_api_key
                          : cfg->backend == IG_BACKEND_OPENAI ? cfg->api_key
                                                              : NULL,
        .https_by_default = cfg->backend == IG_BACKEND_OPENAI,
        .health_check_timeout_secs = cfg->health_check_timeout_secs,
        .health_failure_threshold = cfg->health_failure_threshold,
        .health_success_threshold = cfg->health_success_threshold,
        .health_check_endpoint = cfg->health_check_endpoint,
        .broadcast_timeout_secs = cfg->broadcast_timeout_secs,
        .exclude_stale_workers = cfg->exclude_stale_workers,
        .cache_aware = ig_config_uses_policy(cfg, IG_POLICY_CACHE_AWARE),
        .eviction_interval_secs = cfg->eviction_interval_secs,
        .sticky = ig_config_uses_policy(cfg, IG_POLICY_MANUAL) || cfg->routing_key_override,
        .max_idle_secs = cfg->max_idle_secs,
        .request_timeout_secs = cfg->request_timeout_secs,
        .worker_startup_timeout_secs = cfg->worker_startup_timeout_secs,
        .api_key = cfg->api_key,
        .admin_api_key = cfg->admin_api_key,
        .metrics_api_key = cfg->metrics_api_key};
}
