/* sgl-model-gateway's command line, flag by flag (ig_sgl_compat.h). */
#include "ig_sgl_compat.h"

#include <string.h>

/* The features several flags share, named once. */
#define STORAGE "conversation and response storage (the /v1/responses history backends)"
#define K8S_DISCOVERY "Kubernetes service discovery"
#define TOKENIZER                                                                                            \
    "tokenization in the gateway (infergate routes on the prompt text and never loads a tokenizer)"
#define EPD "encode/prefill/decode disaggregation (a separate encoder pool for multimodal inputs)"
#define AUTHZ                                                                                                \
    "control-plane roles, JWT/OIDC and per-tenant keys (infergate has --api-key, --admin-api-key and --admin-allow)"
#define MESH "the gateway mesh (several infergate gateways share one fleet through etcd instead: issue #18)"
#define PRIORITY "the priority scheduler"

/* Every flag of smg's Rust CLI (model_gateway/src/main.rs) and of its
 * Python launcher (bindings/python/src/smg/router_args.py), sorted. */
static const ig_sgl_flag flags[] = {
    {"api-key", 1, IG_SGL_SAME, NULL,
     "guards the data endpoints, and the admin ones too when there is no --admin-api-key (as in sgl)"},
    {"assignment-mode", 1, IG_SGL_SAME, NULL,
     "random, min_load; min_group counts keyed requests in flight (sgl: distinct keys in flight)"},
    {"backend", 1, IG_SGL_SAME, NULL,
     "sglang, vllm, trtllm, tokenspeed: engines over HTTP (nothing changes); openai: a hosted API (https by default, a base path, no health checks unless asked, the key sent to it); anthropic, gemini: refused"},
    {"balance-abs-threshold", 1, IG_SGL_SAME, NULL, NULL},
    {"balance-rel-threshold", 1, IG_SGL_SAME, NULL, NULL},
    {"balance-token-usage-threshold", 1, IG_SGL_NOOP, NULL,
     "infergate's cache_aware balances by requests in flight (--balance-abs/rel-threshold), not by engine-reported KV usage"},
    {"block-size", 1, IG_SGL_NOOP, NULL,
     "for event-driven (KV-event) cache-aware routing; infergate keys prompt prefixes itself"},
    {"bucket-adjust-interval-secs", 1, IG_SGL_REFUSE, NULL, "the bucket policy"},
    {"ca-cert-paths", 1, IG_SGL_SAME, NULL, NULL},
    {"cache-threshold", 1, IG_SGL_SAME, NULL, NULL},
    {"cb-failure-threshold", 1, IG_SGL_SAME, NULL, NULL},
    {"cb-success-threshold", 1, IG_SGL_SAME, NULL, NULL},
    {"cb-timeout-duration-secs", 1, IG_SGL_SAME, NULL, NULL},
    {"cb-window-duration-secs", 1, IG_SGL_SAME, NULL,
     "failures further apart than the window start the count again (smg stores it; its breaker does not read it)"},
    {"chat-template", 1, IG_SGL_REFUSE, NULL, TOKENIZER},
    {"client-cert-path", 1, IG_SGL_SAME, NULL, NULL},
    {"client-key-path", 1, IG_SGL_SAME, NULL, NULL},
    {"control-plane-api-keys", -1, IG_SGL_REFUSE, NULL, AUTHZ},
    {"control-plane-audit-enabled", 0, IG_SGL_NOOP, NULL,
     "infergate keeps no audit log (admin changes are info lines)"},
    {"cors-allowed-origins", -1, IG_SGL_REFUSE, NULL, "CORS"},
    {"decode", -1, IG_SGL_SAME, NULL, NULL},
    {"decode-policy", 1, IG_SGL_SAME, NULL, NULL},
    {"decode-selector", -1, IG_SGL_REFUSE, NULL, K8S_DISCOVERY},
    {"disable-audit-logging", 0, IG_SGL_NOOP, NULL,
     "infergate keeps no audit log (admin changes are info lines)"},
    {"disable-circuit-breaker", 0, IG_SGL_SAME, NULL, NULL},
    {"disable-health-check", 0, IG_SGL_SAME, NULL, NULL},
    {"disable-retries", 0, IG_SGL_SAME, NULL, NULL},
    {"disable-tokenizer-autoload", 0, IG_SGL_NOOP, NULL, "infergate never loads a tokenizer"},
    {"dp-aware", 0, IG_SGL_REFUSE, NULL, "data-parallel rank routing"},
    {"dp-minimum-tokens-scheduler", 0, IG_SGL_REFUSE, NULL, "data-parallel rank routing"},
    {"drain-settle-secs", 1, IG_SGL_NOOP, NULL,
     "a removed worker takes no new request at once and its streams finish"},
    {"enable-igw", 0, IG_SGL_NOOP, NULL,
     "infergate is always multi-model: workers of every model behind one address"},
    {"enable-mesh", 0, IG_SGL_REFUSE, NULL, MESH},
    {"enable-trace", 0, IG_SGL_REFUSE, NULL, "OpenTelemetry tracing"},
    {"enable-wasm", 0, IG_SGL_REFUSE, NULL, "WebAssembly plugins"},
    {"encode", -1, IG_SGL_REFUSE, NULL, EPD},
    {"encode-policy", 1, IG_SGL_REFUSE, NULL, EPD},
    {"encode-selector", -1, IG_SGL_REFUSE, NULL, K8S_DISCOVERY},
    {"engine-metrics", 0, IG_SGL_REFUSE, NULL, "re-exporting engine loads as smg_engine_* gauges"},
    {"epd-disaggregation", 0, IG_SGL_REFUSE, NULL, EPD},
    {"eviction-interval", 1, IG_SGL_MAP, "eviction-interval-secs", "the Rust CLI's name"},
    {"eviction-interval-secs", 1, IG_SGL_SAME, NULL, NULL},
    {"health-check-endpoint", 1, IG_SGL_SAME, NULL, NULL},
    {"health-check-interval-secs", 1, IG_SGL_SAME, NULL, "default 10 s (sgl: 60 s)"},
    {"health-check-port", 1, IG_SGL_REFUSE, NULL, "probes on their own port"},
    {"health-check-timeout-secs", 1, IG_SGL_SAME, NULL, NULL},
    {"health-failure-threshold", 1, IG_SGL_SAME, NULL, NULL},
    {"health-success-threshold", 1, IG_SGL_SAME, NULL, NULL},
    {"history-backend", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"host", 1, IG_SGL_SAME, NULL,
     "default 127.0.0.1 (sgl: 0.0.0.0): infergate listens on loopback unless told"},
    {"jwt-audience", 1, IG_SGL_REFUSE, NULL, AUTHZ},
    {"jwt-issuer", 1, IG_SGL_REFUSE, NULL, AUTHZ},
    {"jwt-jwks-uri", 1, IG_SGL_REFUSE, NULL, AUTHZ},
    {"jwt-role-claim", 1, IG_SGL_REFUSE, NULL, AUTHZ},
    {"jwt-role-mapping", -1, IG_SGL_REFUSE, NULL, AUTHZ},
    {"least-load-default-throughput", 1, IG_SGL_NOOP, NULL,
     "infergate's least_load counts requests in flight across threads; no token-throughput estimate"},
    {"least-load-kv-pressure-weight", 1, IG_SGL_NOOP, NULL, "as --least-load-default-throughput"},
    {"least-load-mean-prefill-tokens", 1, IG_SGL_NOOP, NULL, "as --least-load-default-throughput"},
    {"load-monitor-interval", 1, IG_SGL_NOOP, NULL,
     "power_of_two and least_load use the gateway's own in-flight counts: nothing to poll"},
    {"log-dir", 1, IG_SGL_SAME, NULL, "a file DIR/infergate.log, reopened on SIGHUP"},
    {"log-json", 0, IG_SGL_SAME, NULL, "access lines carry their fields"},
    {"log-level", 1, IG_SGL_SAME, NULL, NULL},
    {"max-concurrent-requests", 1, IG_SGL_SAME, NULL, "0 is unlimited, as sgl's -1"},
    {"max-idle-secs", 1, IG_SGL_SAME, NULL,
     "checked every --eviction-interval-secs (default 30 s; sgl: 60 s); the table holds --max-routing-keys"},
    {"max-payload-size", 1, IG_SGL_SAME, NULL, "default 64 MiB (sgl: 512 MiB)"},
    {"max-tree-size", 1, IG_SGL_SAME, NULL, NULL},
    {"mcp-config-path", 1, IG_SGL_REFUSE, NULL, "MCP tools"},
    {"mesh-advertise-host", 1, IG_SGL_REFUSE, NULL, MESH},
    {"mesh-host", 1, IG_SGL_REFUSE, NULL, MESH},
    {"mesh-peer-urls", -1, IG_SGL_REFUSE, NULL, MESH},
    {"mesh-port", 1, IG_SGL_REFUSE, NULL, MESH},
    {"mesh-server-name", 1, IG_SGL_REFUSE, NULL, MESH},
    {"mini-lb", 0, IG_SGL_NOOP, NULL,
     "sglang's launcher: its Python load balancer in place of the router; infergate is the load balancer"},
    {"model", 1, IG_SGL_REFUSE, NULL, TOKENIZER},
    {"model-alias", -1, IG_SGL_REFUSE, NULL, "model aliases"},
    {"model-id-from", 1, IG_SGL_REFUSE, NULL, K8S_DISCOVERY},
    {"model-path", 1, IG_SGL_REFUSE, NULL, TOKENIZER},
    {"multimodal-shm-min-bytes", 1, IG_SGL_REFUSE, NULL, "multimodal tensor transport"},
    {"multimodal-tensor-transport", 1, IG_SGL_REFUSE, NULL, "multimodal tensor transport"},
    {"oracle-connect-descriptor", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"oracle-dsn", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"oracle-external-auth", 0, IG_SGL_REFUSE, NULL, STORAGE},
    {"oracle-password", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"oracle-pool-max", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"oracle-pool-min", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"oracle-pool-timeout-secs", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"oracle-tns-alias", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"oracle-user", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"oracle-username", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"oracle-wallet-path", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"otlp-traces-endpoint", 1, IG_SGL_REFUSE, NULL, "OpenTelemetry tracing"},
    {"overload-token-usage-threshold", 1, IG_SGL_NOOP, NULL,
     "as --balance-token-usage-threshold: no engine KV usage is read"},
    {"pd-disaggregation", 0, IG_SGL_SAME, NULL,
     "SGLang's bootstrap protocol; both legs sent at once, a failed leg cancels the other"},
    {"policy", 1, IG_SGL_SAME, NULL,
     "default least_load (sgl: cache_aware); consistent_hashing is consistent_hash; prefix_hash, bucket and passthrough are refused by name"},
    {"port", 1, IG_SGL_SAME, NULL, "default 8080 (sgl: 30000)"},
    {"postgres-db-url", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"postgres-pool-max", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"postgres-pool-max-size", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"prefill", -1, IG_SGL_SAME, NULL, "URL [BOOTSTRAP_PORT|none], repeated"},
    {"prefill-policy", 1, IG_SGL_SAME, NULL, NULL},
    {"prefill-selector", -1, IG_SGL_REFUSE, NULL, K8S_DISCOVERY},
    {"prefix-hash-load-factor", 1, IG_SGL_REFUSE, NULL, "the prefix_hash policy"},
    {"prefix-token-count", 1, IG_SGL_REFUSE, NULL, "the prefix_hash policy"},
    {"priority-scheduler-config", 1, IG_SGL_REFUSE, NULL, PRIORITY},
    {"priority-scheduler-default-max-class", 1, IG_SGL_REFUSE, NULL, PRIORITY},
    {"priority-scheduler-enabled", 0, IG_SGL_REFUSE, NULL, PRIORITY},
    {"priority-scheduler-tenant-metric-top-n", 1, IG_SGL_REFUSE, NULL, PRIORITY},
    {"prometheus-duration-buckets", -1, IG_SGL_REFUSE, NULL, "custom histogram buckets"},
    {"prometheus-host", 1, IG_SGL_SAME, NULL, "default 127.0.0.1 (sgl: 0.0.0.0)"},
    {"prometheus-port", 1, IG_SGL_SAME, NULL,
     "default: none, /metrics stays on the main port too (sgl: 29000, always on)"},
    {"queue-size", 1, IG_SGL_SAME, NULL,
     "default 1024 (sgl: 100); 0 is no queue, as in sgl; -1 is unlimited"},
    {"queue-timeout-secs", 1, IG_SGL_SAME, NULL, NULL},
    {"rate-limit-tokens-per-second", 1, IG_SGL_SAME, NULL,
     "sgl's bucket: --max-concurrent-requests tokens, one per request, given back at its end; "
     "without this flag infergate's cap is strict (sgl's bucket then refills at the cap per second)"},
    {"reasoning-parser", 1, IG_SGL_REFUSE, NULL, "reasoning and tool-call parsers"},
    {"redis-pool-max", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"redis-pool-max-size", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"redis-retention-days", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"redis-url", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"remove-unhealthy-workers", 0, IG_SGL_REFUSE, NULL,
     "removing unhealthy workers from the registry (infergate keeps them and stops routing to them)"},
    {"request-id-headers", -1, IG_SGL_REFUSE, NULL,
     "request ids from custom headers (infergate reads and sends x-request-id)"},
    {"request-timeout-secs", 1, IG_SGL_SAME, NULL, NULL},
    {"retry-backoff-multiplier", 1, IG_SGL_SAME, NULL, NULL},
    {"retry-initial-backoff-ms", 1, IG_SGL_SAME, NULL,
     "default 0: a retry goes at once, to another worker (sgl: 50 ms)"},
    {"retry-jitter-factor", 1, IG_SGL_SAME, NULL, NULL},
    {"retry-max-backoff-ms", 1, IG_SGL_SAME, NULL, NULL},
    {"retry-max-retries", 1, IG_SGL_SAME, NULL, "default 2 (sgl: 5); retries go at once to another worker"},
    {"router-selector", -1, IG_SGL_REFUSE, NULL, K8S_DISCOVERY},
    {"routing-key-override", 0, IG_SGL_SAME, NULL, "the manual policy's table under any policy"},
    {"runtime-worker-threads", 1, IG_SGL_MAP, "threads", NULL},
    {"schema-config", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"selector", -1, IG_SGL_REFUSE, NULL, K8S_DISCOVERY},
    {"service-discovery", 0, IG_SGL_REFUSE, NULL, K8S_DISCOVERY},
    {"service-discovery-namespace", 1, IG_SGL_REFUSE, NULL, K8S_DISCOVERY},
    {"service-discovery-port", 1, IG_SGL_REFUSE, NULL, K8S_DISCOVERY},
    {"shutdown-grace-period-secs", 1, IG_SGL_MAP, "drain-timeout-secs",
     "infergate's default 30 s (sgl: 180 s)"},
    {"storage-context-headers", -1, IG_SGL_REFUSE, NULL, STORAGE},
    {"storage-hook-wasm-path", 1, IG_SGL_REFUSE, NULL, STORAGE},
    {"tenant-api-key", -1, IG_SGL_REFUSE, NULL, AUTHZ},
    {"tenant-header-name", 1, IG_SGL_REFUSE, NULL, "tenants"},
    {"tenant-rate-limit-config", 1, IG_SGL_REFUSE, NULL, "per-tenant rate limits"},
    {"tenant-rate-limit-enabled", 0, IG_SGL_REFUSE, NULL, "per-tenant rate limits"},
    {"tls-cert-path", 1, IG_SGL_SAME, NULL, NULL},
    {"tls-key-path", 1, IG_SGL_SAME, NULL, NULL},
    {"tokenizer-cache-enable-l0", 0, IG_SGL_REFUSE, NULL, TOKENIZER},
    {"tokenizer-cache-enable-l1", 0, IG_SGL_REFUSE, NULL, TOKENIZER},
    {"tokenizer-cache-l0-max-entries", 1, IG_SGL_REFUSE, NULL, TOKENIZER},
    {"tokenizer-cache-l1-max-memory", 1, IG_SGL_REFUSE, NULL, TOKENIZER},
    {"tokenizer-path", 1, IG_SGL_REFUSE, NULL, TOKENIZER},
    {"tool-call-parser", 1, IG_SGL_REFUSE, NULL, "reasoning and tool-call parsers"},
    {"trust-tenant-header", 0, IG_SGL_REFUSE, NULL, "tenants"},
    {"webrtc-bind-addr", 1, IG_SGL_REFUSE, NULL, "WebRTC"},
    {"webrtc-stun-server", 1, IG_SGL_REFUSE, NULL, "WebRTC"},
    {"worker-startup-check-interval", 1, IG_SGL_NOOP, NULL,
     "--worker-startup-timeout-secs checks every 250 ms"},
    {"worker-startup-delay", 1, IG_SGL_REFUSE, NULL, "waiting for workers to become healthy before serving"},
    {"worker-startup-timeout-secs", 1, IG_SGL_SAME, NULL,
     "default 0: serve at once, workers join as they pass health checks (sgl: 1800)"},
    {"worker-urls", -1, IG_SGL_SAME, NULL, "http:// and https://"},
};

static const int nflags = (int)(sizeof(flags) / sizeof(flags[0]));

const ig_sgl_flag *ig_sgl_find(const char *name)
{
    int lo = 0, hi = nflags - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(name, flags[mid].name);
        if (!c)
            return &flags[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const ig_sgl_flag *ig_sgl_flags(int *n)
{
    *n = nflags;
    return flags;
}

void ig_sgl_print_table(FILE *f)
{
    static const char *const what[] = {[IG_SGL_SAME] = "implemented, same name",
                                       [IG_SGL_MAP] = "implemented",
                                       [IG_SGL_NOOP] = "accepted, no effect",
                                       [IG_SGL_REFUSE] = "refused"};
    int n[4] = {0};
    for (int i = 0; i < nflags; i++)
        n[flags[i].kind]++;
    fprintf(f,
            "%d flags: %d implemented under the same name, %d implemented as infergate options, %d accepted "
            "as no-ops, %d refused with the feature named.\n\n",
            nflags, n[IG_SGL_SAME], n[IG_SGL_MAP], n[IG_SGL_NOOP], n[IG_SGL_REFUSE]);
    fprintf(f, "| flag | in infergate | note |\n|---|---|---|\n");
    for (int i = 0; i < nflags; i++) {
        const ig_sgl_flag *g = &flags[i];
        fprintf(f, "| `--%s` | %s", g->name, what[g->kind]);
        if (g->kind == IG_SGL_MAP)
            fprintf(f, ": `--%s`", g->to);
        fprintf(f, " | %s |\n", g->why ? g->why : "");
    }
}
