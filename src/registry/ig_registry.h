/* Workers and the models they serve. Routing reads an immutable snapshot through
 * one atomic pointer; per-worker counters are atomics shared by every thread. */
#ifndef IG_REGISTRY_H
#define IG_REGISTRY_H
#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define IG_MAX_WORKERS 4096

typedef struct ig_worker {
    uint32_t idx;         /* dense index: per-thread pools are arrays indexed by it */
    char *url;            /* as given, without a trailing slash */
    char *host;           /* host part of the URL */
    uint16_t port;
    char *host_header;    /* "host:port" sent as Host */
    size_t host_header_len;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char **models;        /* from the worker's /v1/models; NULL with any_model */
    int n_models;
    int any_model;        /* discovery failed: the worker takes any model */
    /* shared counters, each on its own cache line: every thread writes them */
    _Alignas(64) atomic_int inflight;
    _Alignas(64) atomic_uint_fast64_t requests;
    atomic_uint_fast64_t connect_failures;
} ig_worker;

typedef struct ig_registry {
    ig_worker **workers;
    int n;
} ig_registry;

/**
 * Split "http://host[:port][/]" into host and port. Only plain http is
 * accepted. 0, or -EINVAL with a static reason in *err.
 */
int ig_url_parse(const char *url, char *host, size_t hostcap, uint16_t *port, const char **err);

/** Build a worker from its URL (resolves the host). 0 or negative errno; *err says why. */
int ig_worker_new(const char *url, uint32_t idx, ig_worker **out, const char **err);
void ig_worker_free(ig_worker *w);
/** Replace the worker's model list (takes ownership of models). */
void ig_worker_set_models(ig_worker *w, char **models, int n);
/** 1 when w serves the model (or any model). */
int ig_worker_serves(const ig_worker *w, const char *model, size_t len);

/** Publish the registry snapshot routing reads. */
void ig_registry_publish(ig_registry *r);
/** The current snapshot (lock-free). */
const ig_registry *ig_registry_get(void);

/**
 * Fill out[] with the workers that serve model (all workers when model is
 * NULL); returns the count. No allocation, no lock.
 */
int ig_registry_candidates(const ig_registry *r, const char *model, size_t len, ig_worker **out,
                           int max);
#endif
