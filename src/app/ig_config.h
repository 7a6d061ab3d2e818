/* Command-line and --config JSON settings; flag names follow
 * sgl-model-gateway's. Only the app sees the whole of it: each module gets
 * its own config struct, derived here. */
#ifndef IG_CONFIG_H
#define IG_CONFIG_H
#include <stddef.h>
#include <stdint.h>

#include "../admission/ig_admission.h"
#include "../balance/ig_policy.h"
#include "../control/ig_control.h"
#include "../core/ig_cidr.h"
#include "../health/ig_breaker.h"
#include "../proxy/ig_proxy.h"
#include "../server/ig_thread.h"
#include "../upstream/ig_pool.h"

#define IG_MAX_ADMIN_ALLOW 32
#define IG_MAX_SGL_NOOPS 32
#define IG_MAX_PREFILL 256 /* --prefill flags at start */

struct ig_sgl_flag;

/* A list of strings the config owns. */
typedef struct ig_strv {
    char **v;
    int n;
} ig_strv;

/* A named worker group of --config's "worker_groups": its own workers and
 * the path prefixes forwarded to them. */
typedef struct ig_group_config {
    char *name;
    ig_strv worker_urls;
    ig_strv forward_paths;
    int worker_max_inflight;         /* -1: --worker-max-inflight */
    char health_check_endpoint[256]; /* "": --health-check-endpoint */
} ig_group_config;

enum { IG_BACKEND_ENGINE, IG_BACKEND_OPENAI };

typedef struct ig_config {
    char host[256];
    int port;
    int threads;
    ig_strv worker_urls;               /* --worker-urls: the LLM fleet */
    int pd_disaggregation;             /* --pd-disaggregation: --prefill and --decode workers */
    ig_strv prefill_urls;              /* --prefill URL [PORT] */
    int prefill_ports[IG_MAX_PREFILL]; /* ... their bootstrap ports (0: none) */
    ig_strv decode_urls;               /* --decode URL ... */
    int prefill_policy, decode_policy; /* ig_policy_kind, -1: --policy's */
    int pd_vllm;                       /* --pd-protocol vllm */
    ig_strv nats_servers;              /* --nats-servers: the prefix index shared over NATS */
    ig_strv etcd_endpoints;            /* --etcd-endpoints: the registry shared through etcd */
    char *etcd_prefix;                 /* NULL: /infergate/ */
    double etcd_lease_ttl_secs, etcd_sync_interval_secs;
    ig_strv forward_paths; /* --forward-paths: to the LLM fleet (group 0), as they are */
    ig_strv ca_cert_paths; /* --ca-cert-path(s): CAs for https:// workers (none: the system's) */
    char *client_cert_path, *client_key_path; /* mTLS to workers */
    int upstream_tls_insecure;                /* verify no worker certificate (tests) */
    char *tls_cert_path, *tls_key_path;       /* clients speak HTTPS */
    char *tls_client_ca_path;                 /* ... and show a certificate from these CAs */
    ig_group_config groups[IG_MAX_GROUPS];    /* [1..n_groups): named in --config; [0] unused */
    /* sgl-model-gateway flags given that need nothing here: said at start */
    const struct ig_sgl_flag *sgl_noops[IG_MAX_SGL_NOOPS];
    int n_sgl_noops;
    int n_groups;
    ig_policy_kind policy;
    char *api_key;
    uint64_t max_payload_size;
    uint32_t max_header_size;
    double request_timeout_secs;
    double connect_timeout_secs;
    double discovery_timeout_secs;
    double upstream_idle_timeout_secs;
    uint32_t upstream_max_requests_per_conn; /* 0: unlimited */
    double upstream_max_conn_age_secs;       /* 0: unlimited */
    double client_idle_timeout_secs;
    double client_header_timeout_secs; /* the whole head, from its first byte */
    uint32_t max_client_connections;   /* 0 at parse: derived from the open-file limit */
    double client_body_timeout_secs;   /* between two reads of a request body */
    double drain_timeout_secs;
    int log_level;
    char *admin_api_key;
    char *metrics_api_key; /* /metrics: this key (or the admin key); unset: --api-key's rule */
    ig_cidr admin_allow[IG_MAX_ADMIN_ALLOW];
    int n_admin_allow;                /* 0: loopback without --admin-api-key, any peer with it */
    char *log_file;                   /* logs go here instead of stderr; reopened on SIGHUP */
    uint64_t max_buffered_body_bytes; /* request bytes held, all clients; 0 at parse: from RAM */
    uint32_t worker_max_inflight;
    double health_check_interval_secs; /* 0: no active checks */
    double health_check_timeout_secs;
    uint32_t health_failure_threshold;
    uint32_t health_success_threshold;
    char health_check_endpoint[256];
    uint32_t cb_failure_threshold;
    uint32_t cb_success_threshold;
    double cb_timeout_duration_secs;
    int disable_circuit_breaker;
    double cb_window_duration_secs;
    int log_json;
    double worker_startup_timeout_secs;
    char *log_dir;
    int prometheus_port; /* -1: none */
    char *prometheus_host;
    double retry_initial_backoff_ms, retry_max_backoff_ms, retry_backoff_multiplier, retry_jitter_factor;
    int disable_retries, disable_health_check; /* sgl-model-gateway's switches: they win over the numbers */
    uint64_t cb_failure_statuses[10];          /* bit s: a status s answer counts as the worker failing */
    int cb_statuses_given;                     /* the first --cb-failure-statuses replaces the default */
    uint32_t retry_max_retries;
    int retry_non_idempotent; /* a POST whose connection died after going out may be sent again */
    double retry_budget_ratio;
    uint32_t max_concurrent_requests; /* 0: unlimited */
    int backend;                      /* IG_BACKEND_*: what the workers are */
    int assignment_mode;              /* ig_assignment: manual's choice for a new routing key */
    int routing_key_override;         /* routing keys stick under any policy */
    double max_idle_secs;             /* manual: a key unused this long is forgotten (0: never) */
    uint64_t max_routing_keys;        /* manual: the table's size */
    char *worker_api_key;             /* sent to the workers in place of the client's Authorization */
    int health_interval_given; /* --health-check-interval-secs was set (a hosted API's default is off) */
    int rate_limit_given;      /* --rate-limit-tokens-per-second: sgl's token bucket */
    uint32_t rate_limit_tokens_per_second;
    int upstream_spread;           /* 1: latency-aware connection choice and rotation */
    char *upstream_process_header; /* a response header naming the worker process: exact per-process load */
    double broadcast_timeout_secs;
    int exclude_stale_workers;
    uint32_t queue_size;
    double queue_timeout_secs;
    /* cache_aware (sgl-model-gateway's meanings) */
    double cache_threshold;
    uint32_t balance_abs_threshold;
    double balance_rel_threshold;
    uint64_t max_tree_size; /* prompt bytes the prefix index tracks, all models */
    double eviction_interval_secs;
} ig_config;

/** 1 when --policy, --prefill-policy or --decode-policy is k. */
int ig_config_uses_policy(const ig_config *cfg, ig_policy_kind k);
/** Defaults for every setting. */
void ig_config_defaults(ig_config *cfg);
/**
 * Parse argv (and any --config FILE it names) into cfg. 0, 1 when --help or
 * --version was printed, or -EINVAL with a message in err.
 */
int ig_config_parse(ig_config *cfg, int argc, char **argv, char *err, size_t errlen);
/** Apply a --config JSON document given as text (what --config FILE does). */
int ig_config_load_json(ig_config *cfg, const char *text, size_t len, char *err, size_t errlen);
void ig_config_free(ig_config *cfg);

/* Each module's own settings, from the whole (after the parse and the
 * start-up defaults that depend on the machine). The control config points
 * into cfg: it lives as long as cfg. */
ig_server_config ig_config_server(const ig_config *cfg);
ig_pool_config ig_config_pool(const ig_config *cfg);
ig_proxy_config ig_config_proxy(const ig_config *cfg);
ig_admission_config ig_config_admission(const ig_config *cfg);
ig_breaker_config ig_config_breaker(const ig_config *cfg);
ig_control_config ig_config_control(const ig_config *cfg);
void ig_config_usage(const char *prog);
#endif
