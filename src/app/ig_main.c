/* infergate: parse the configuration, build the registry, bind one
 * SO_REUSEPORT socket per thread, run the threads, drain on SIGTERM/SIGINT. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/ig_log.h"
#include "../health/ig_breaker.h"
#include "../core/ig_epoch.h"
#include "../balance/ig_affinity.h"
#include "../balance/ig_prefix_share.h"
#include "../balance/ig_sticky.h"
#include "../admission/ig_admission.h"
#include "../control/ig_control.h"
#include "../proxy/ig_proxy.h"
#include "../server/ig_h1conn.h"
#include "../server/ig_thread.h"
#include "../net/ig_tls.h"
#include "../upstream/ig_httpc.h"
#include "ig_config.h"
#include "ig_routes.h"
#include "ig_sgl_compat.h"

static ig_thread *threads;
static int nthreads;

static int bind_socket(const char *host, int port, int *out_port)
{
    struct addrinfo hints = {0}, *res = NULL;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", port);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        ig_err("cannot resolve --host %s: %s", host, gai_strerror(rc));
        return -EINVAL;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
        rc = -errno;
        ig_err("cannot listen on %s:%d: %s", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return rc;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *out_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static uv_signal_t sigterm, sigint, sighup;

/* Logs to --log-file: stderr itself is pointed at the file, so every line
 * (ours, libuv's, a sanitizer's) lands there. 0 or -errno. */
static int open_log_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int rc = dup2(fd, STDERR_FILENO) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static ig_tls_server *client_tls; /* --tls-cert-path: clients speak HTTPS */

/* SIGHUP: what logrotate and certificate renewals send. Streams and
 * connections are untouched. */
static void on_hangup(uv_signal_t *s, int signum)
{
    const ig_config *cfg = s->data;
    (void)signum;
    if (client_tls) {
        char err[1024];
        if (ig_tls_server_reload(client_tls, err, sizeof(err)))
            ig_err("SIGHUP: %s (the old certificate stays)", err);
        else
            ig_info("SIGHUP: certificate %s reloaded: new connections get it", cfg->tls_cert_path);
    }
    if (!cfg->log_file) {
        if (!client_tls)
            ig_info("SIGHUP: nothing to reopen (no --log-file); still serving");
        return;
    }
    int rc = open_log_file(cfg->log_file);
    if (rc)
        ig_err("SIGHUP: cannot reopen --log-file %s: %s (logging on to the old file)", cfg->log_file,
               strerror(-rc));
    else
        ig_info("SIGHUP: log file %s reopened", cfg->log_file);
}

static void on_signal(uv_signal_t *s, int signum)
{
    ig_info("%s: draining (up to %.0fs), no new connections; a second signal exits at once",
            strsignal(signum), ((const ig_config *)s->data)->drain_timeout_secs);
    ig_threads_stop(threads, nthreads);
    /* closing the last handle of a signal restores its default action */
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    /* kept (a SIGHUP while draining must not kill), but not what keeps the loop up */
    uv_unref((uv_handle_t *)&sighup);
}

/* As many descriptors as the hard limit allows; returns what we have. */
static long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return 1024;
    long before = (long)rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            ig_info("open-file limit raised from %ld to %ld", before, (long)rl.rlim_cur);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}

/* Each client may hold a worker connection too; keep room for pools, health checks, logs. */
static uint32_t default_max_clients(long nofile)
{
    long n = (nofile - 256) / 2;
    return n > 16 ? (uint32_t)n : 16;
}

/* Say at start who can reach the admin API, so nobody finds out later. */
static void log_admin_rule(const ig_config *cfg)
{
    char list[IG_MAX_ADMIN_ALLOW * 48] = "", one[64];
    int own = cfg->admin_api_key && *cfg->admin_api_key;
    int keyed = own || (cfg->api_key && *cfg->api_key); /* --api-key guards it too without its own */
    for (int i = 0; i < cfg->n_admin_allow; i++) {
        strcat(list, i ? "," : "");
        strcat(list, ig_cidr_format(&cfg->admin_allow[i], one, sizeof(one)));
    }
    if (keyed && cfg->n_admin_allow)
        ig_info("admin API: bearer key required, from %s only (--admin-allow)", list);
    else if (keyed)
        ig_info("admin API: bearer key required (%s), from any peer", own ? "--admin-api-key" : "--api-key");
    else if (cfg->n_admin_allow)
        ig_warn("admin API: NO KEY, open to every peer in %s (--admin-allow), except requests relayed by a "
                "proxy; set --admin-api-key unless that network is yours alone",
                list);
    else
        ig_info("admin API: no key; loopback peers only, and not requests relayed by a proxy "
                "(Forwarded, X-Forwarded-For, X-Real-IP)");
    if (cfg->metrics_api_key && *cfg->metrics_api_key)
        ig_info("/metrics: --metrics-api-key (or the admin key) required");
    else if (cfg->api_key && *cfg->api_key)
        ig_info("/metrics: --api-key (or the admin key) required");
}

/* --tls-cert-path: clients reach us over HTTPS. 0, or -EINVAL (said why). */
static int client_side_tls(const ig_config *cfg, ig_tls_server **out)
{
    *out = NULL;
    if (!cfg->tls_cert_path && !cfg->tls_key_path) {
        if (cfg->tls_client_ca_path) {
            fprintf(stderr, "infergate: --tls-client-ca-path needs --tls-cert-path and --tls-key-path\n");
            return -EINVAL;
        }
        return 0;
    }
    if (!cfg->tls_cert_path || !cfg->tls_key_path) {
        fprintf(stderr, "infergate: --tls-cert-path and --tls-key-path go together\n");
        return -EINVAL;
    }
    ig_tls_server_opts o = {.cert_file = cfg->tls_cert_path,
                            .key_file = cfg->tls_key_path,
                            .client_ca_file = cfg->tls_client_ca_path};
    char err[1024];
    if (ig_tls_server_new(&o, out, err, sizeof(err))) {
        fprintf(stderr, "infergate: %s\n", err);
        return -EINVAL;
    }
    return 0;
}

/* The context https:// workers are reached with: made at start whether any
 * worker is https or not, since one may be added at run time; bad
 * certificate files fail the start. */
static ig_tls_ctx *upstream_tls(const ig_config *cfg)
{
    ig_tls_client_opts o = {.ca_files = (const char *const *)cfg->ca_cert_paths.v,
                            .n_ca_files = cfg->ca_cert_paths.n,
                            .cert_file = cfg->client_cert_path,
                            .key_file = cfg->client_key_path,
                            .insecure = cfg->upstream_tls_insecure};
    ig_tls_ctx *tls;
    char err[1024];
    if (ig_tls_client_new(&o, &tls, err, sizeof(err))) {
        fprintf(stderr, "infergate: %s\n", err);
        return NULL;
    }
    if (cfg->upstream_tls_insecure)
        ig_warn(
            "--upstream-tls-insecure: https:// workers' certificates and names are NOT checked; anyone on "
            "the path can read and change the traffic. For tests only.");
    return tls;
}

/* A start-up URL that cannot be a worker's: said on stderr, 1. */
static int bad_url(const ig_strv *urls, const char *flag)
{
    for (int i = 0; i < urls->n; i++) {
        char host[256];
        uint16_t p;
        int tls;
        const char *why = "";
        if (ig_url_parse(urls->v[i], host, sizeof(host), &p, &tls, NULL, &why)) {
            fprintf(stderr, "infergate: %s %s: %s\n", flag, urls->v[i], why);
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    ig_config cfg;
    char err[512];
    int rc, exit_code = 1, port = 0, control_started = 0;
    int *fds = NULL;
    uv_loop_t *main_loop = uv_default_loop();

    ig_config_defaults(&cfg);
    rc = ig_config_parse(&cfg, argc, argv, err, sizeof(err));
    if (rc == 1) {
        exit_code = 0;
        goto out;
    }
    if (rc) {
        fprintf(stderr, "infergate: %s\n", err);
        exit_code = 2;
        goto out;
    }
    ig_log_level = cfg.log_level;
    ig_log_json = cfg.log_json;
    if (cfg.log_dir && !cfg.log_file) { /* sgl-model-gateway's --log-dir: a file in it */
        char path[4096];
        if (mkdir(cfg.log_dir, 0755) && errno != EEXIST) {
            fprintf(stderr, "infergate: --log-dir %s: %s\n", cfg.log_dir, strerror(errno));
            exit_code = 2;
            goto out;
        }
        snprintf(path, sizeof(path), "%s/infergate.log", cfg.log_dir);
        cfg.log_file = strdup(path);
    }
    for (int i = 0; i < cfg.n_sgl_noops; i++) /* a launch line of sgl-model-gateway's, as it is */
        ig_info("--%s: accepted, nothing to do: %s", cfg.sgl_noops[i]->name, cfg.sgl_noops[i]->why);
    /* big request bodies straight from and back to the kernel: glibc's
     * sliding threshold would otherwise serve them from the heap after the
     * first one, and a flood of bodies would leave RSS far above the budget */
    mallopt(M_MMAP_THRESHOLD, 256 << 10);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN); /* until its handler is in place */
    if (cfg.log_file && (rc = open_log_file(cfg.log_file))) {
        fprintf(stderr, "infergate: --log-file %s: %s\n", cfg.log_file, strerror(-rc));
        exit_code = 2;
        goto out;
    }
    long nofile = raise_nofile();
    if (!cfg.max_client_connections)
        cfg.max_client_connections = default_max_clients(nofile);
    ig_info("open-file limit %ld: up to %u client connections (--max-client-connections)", nofile,
            cfg.max_client_connections);

    if (!cfg.max_buffered_body_bytes) {
        /* request bodies wait rather than push the machine into swap or the OOM killer */
        long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
        uint64_t ram = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 8ull << 30;
        cfg.max_buffered_body_bytes = ram / 8 > (64ull << 20) ? ram / 8 : 64ull << 20;
    }
    ig_info("request bodies held in memory: up to %llu MiB, all clients (--max-buffered-body-bytes)",
            (unsigned long long)(cfg.max_buffered_body_bytes >> 20));
    /* each module gets its own settings; they live as long as main */
    static ig_server_config server_cfg;
    static ig_pool_config pool_cfg;
    static ig_control_config control_cfg;
    server_cfg = ig_config_server(&cfg);
    pool_cfg = ig_config_pool(&cfg);
    control_cfg = ig_config_control(&cfg);
    ig_proxy_config proxy_cfg = ig_config_proxy(&cfg);
    ig_admission_config admission_cfg = ig_config_admission(&cfg);
    ig_breaker_config breaker_cfg = ig_config_breaker(&cfg);
    ig_h1conn_configure(&server_cfg);
    if (!(pool_cfg.tls = upstream_tls(&cfg)) || client_side_tls(&cfg, &client_tls)) {
        exit_code = 2;
        goto out;
    }
    server_cfg.tls = client_tls;
    ig_httpc_configure_tls(pool_cfg.tls);
    if (ig_routes_configure(&cfg))
        goto out;
    static const ig_proxy_hooks proxy_hooks = {.breaker_changed = ig_control_poke,
                                               .pin_admin = ig_control_pin_admin};
    ig_proxy_configure(&proxy_cfg, &proxy_hooks);
    ig_breaker_configure(&breaker_cfg);
    ig_admission_configure(&admission_cfg);
    log_admin_rule(&cfg);
    if (cfg.rate_limit_given && !cfg.max_concurrent_requests)
        ig_warn("--rate-limit-tokens-per-second has no effect without --max-concurrent-requests (as in "
                "sgl-model-gateway: the bucket holds that many tokens)");
    if (cfg.worker_urls.n == 0 && !cfg.prefill_urls.n && !cfg.decode_urls.n)
        ig_warn("no --worker-urls: add workers with POST /workers, until then data requests get 503");
    else if (cfg.pd_disaggregation && (!cfg.prefill_urls.n || !cfg.decode_urls.n))
        ig_warn("--pd-disaggregation: generation requests get 503 until both a prefill and a decode worker "
                "are registered (POST /workers with worker_type)");
    if (bad_url(&cfg.prefill_urls, "--prefill") || bad_url(&cfg.decode_urls, "--decode")) {
        exit_code = 2;
        goto out;
    }
    /* URLs are checked before anything starts, so a typo fails fast with its reason */
    for (int g = 0; g < (cfg.n_groups ? cfg.n_groups : 1); g++) {
        char what[300];
        snprintf(what, sizeof(what), g ? "worker group '%s':" : "--worker-urls", g ? cfg.groups[g].name : "");
        if (bad_url(g ? &cfg.groups[g].worker_urls : &cfg.worker_urls, what)) {
            exit_code = 2;
            goto out;
        }
    }
    for (int g = 1; g < cfg.n_groups; g++)
        ig_info("worker group '%s': %d workers, forwarded paths from %s%s", cfg.groups[g].name,
                cfg.groups[g].worker_urls.n, cfg.groups[g].forward_paths.v[0],
                cfg.groups[g].forward_paths.n > 1 ? " and more" : "");
    if (cfg.forward_paths.n)
        ig_info("forwarded as they are to the workers: %s%s", cfg.forward_paths.v[0],
                cfg.forward_paths.n > 1 ? " and more" : "");
    ig_registry_init(cfg.threads);
    if (ig_config_uses_policy(&cfg, IG_POLICY_CONSISTENT_HASH))
        ig_registry_set_ring_vnodes(IG_RING_VNODES);
    if ((ig_config_uses_policy(&cfg, IG_POLICY_MANUAL) || cfg.routing_key_override) &&
        (rc = ig_sticky_init(cfg.max_routing_keys))) {
        fprintf(stderr, "infergate: cannot allocate the routing-key table (--max-routing-keys)\n");
        goto out;
    }
    if (ig_config_uses_policy(&cfg, IG_POLICY_CACHE_AWARE) && (rc = ig_prefix_init(cfg.max_tree_size))) {
        fprintf(stderr, "infergate: cannot allocate the prefix index (--max-tree-size)\n");
        goto out;
    }
    if (cfg.nats_servers.n && !control_cfg.n_nats)
        ig_warn(
            "--nats-servers: only cache_aware and consistent_hash share anything over NATS; not connecting");
    if (control_cfg.n_nats &&
        (rc = ig_prefix_share_init(cfg.threads, IG_PREFIX_SHARE_RING_WORDS, ig_control_share_wake, NULL))) {
        fprintf(stderr, "infergate: cannot allocate the shared prefix index's rings\n");
        goto out;
    }
    ig_epoch_init(cfg.threads);

    nthreads = cfg.threads;
    fds = calloc((size_t)nthreads, sizeof(int));
    threads = calloc((size_t)nthreads, sizeof(ig_thread));
    if (!fds || !threads)
        goto out;
    server_cfg.metrics_fd = -1;
    if (cfg.prometheus_port >= 0) { /* sgl-model-gateway's scrape port */
        const char *mh = cfg.prometheus_host ? cfg.prometheus_host : "127.0.0.1";
        int mport;
        if ((server_cfg.metrics_fd = bind_socket(mh, cfg.prometheus_port, &mport)) < 0)
            goto out;
        ig_info("metrics on http://%s:%d/metrics (--prometheus-port)", mh, mport);
    }
    port = cfg.port;
    for (int i = 0; i < nthreads; i++) {
        /* the first socket may pick an ephemeral port; the others share it */
        fds[i] = bind_socket(cfg.host, port, &port);
        if (fds[i] < 0)
            goto out;
    }
    static const ig_server_hooks server_hooks = {.on_request = ig_routes_dispatch,
                                                 .streams_body = ig_routes_streams_body,
                                                 .on_message = ig_routes_deliver};
    if ((rc = ig_threads_init(threads, nthreads, &server_cfg, &pool_cfg, fds, &server_hooks)))
        goto out;
    static const ig_control_hooks control_hooks = {.wake_reader = ig_thread_wake};
    if ((rc = ig_control_start(&control_cfg, nthreads, &control_hooks)))
        goto out;
    control_started = 1;
    if ((rc = ig_threads_run(threads, nthreads)))
        goto out;
    ig_info("infergate listening on %s://%s:%d (%d threads, policy %s, %d workers)",
            client_tls ? "https" : "http", cfg.host, port, nthreads, ig_policy_name(cfg.policy),
            cfg.worker_urls.n);
    /* handlers first: whoever reads the line below may signal at once */
    uv_signal_init(main_loop, &sigterm);
    uv_signal_init(main_loop, &sigint);
    uv_signal_init(main_loop, &sighup);
    sigterm.data = sigint.data = sighup.data = &cfg;
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sighup, on_hangup, SIGHUP);
    printf("infergate listening on %s://%s:%d\n", client_tls ? "https" : "http", cfg.host, port);
    fflush(stdout);
    uv_run(main_loop, UV_RUN_DEFAULT);
    ig_threads_join(threads, nthreads);
    uv_close((uv_handle_t *)&sighup, NULL);
    uv_run(main_loop, UV_RUN_NOWAIT);
    ig_info("drained, exiting");
    exit_code = 0;
out:
    if (control_started)
        ig_control_stop();
    if (threads)
        ig_threads_release_wakeups(threads, nthreads);
    uv_loop_close(main_loop);
    free(threads);
    free(fds);
    ig_prefix_free();
    ig_prefix_share_free();
    ig_sticky_shutdown();
    ig_routes_shutdown();
    ig_tls_ctx_free(pool_cfg.tls);
    ig_tls_server_free(client_tls);
    client_tls = NULL;
    ig_config_free(&cfg);
    return exit_code;
}
