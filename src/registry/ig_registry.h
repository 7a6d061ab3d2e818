/* Workers, their shared counters, and the snapshot routing reads.
 *
 * One writer (the control thread) owns the list of workers and publishes an
 * immutable snapshot by one atomic pointer swap; loop threads read it without
 * a lock, inside one callback at a time (see ig_epoch.h). A worker lives as
 * long as anything holds a reference: snapshots, in-flight requests, pooled
 * connections. */
#ifndef IG_REGISTRY_H
#define IG_REGISTRY_H
#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "../core/ig_list.h"
#include "ig_ring.h"

#define IG_MAX_WORKERS 65536

enum { IG_HEALTH_UP = 0, IG_HEALTH_DOWN = 1 };
/* What a worker of the LLM fleet takes: whole requests, or one half of a
 * prefill/decode disaggregated one (sgl's worker_type). */
enum { IG_ROLE_REGULAR = 0, IG_ROLE_PREFILL = 1, IG_ROLE_DECODE = 2 };
enum { IG_BREAKER_CLOSED = 0, IG_BREAKER_OPEN = 1, IG_BREAKER_HALF_OPEN = 2 };

/* A worker's idle keep-alive connections on one loop thread; only that thread touches it. */
/* Worker groups: 0 is the LLM fleet (--worker-urls); the others are named
 * in --config and take only the paths forwarded to them. */
#define IG_MAX_GROUPS 16

/* The processes behind one worker address, as its answers name them
 * (--upstream-process-header): load per process, gateway-wide. */
#define IG_MAX_PROCS 64
typedef struct ig_proc {
    atomic_uint_fast64_t id; /* a hash of the header's value; 0: free */
    atomic_int inflight;     /* requests on connections to it */
    atomic_int conns;        /* open connections known to reach it */
    atomic_uint_fast64_t
        seen_ms; /* its last answer (loop time): a process with no connection left still counts a while */
} ig_proc;

typedef struct ig_pool {
    ig_list idle; /* most recently used first */
    int nidle;
    int retire_credit; /* earned per request; retiring a slow connection spends it */
    /* --upstream-process-header: learning processes with probe connections */
    int explore_credit; /* earned per request while every known process is busy */
    int explore_cost;   /* what an exploring probe spends: doubles while probes find no new process */
    int probes_out;     /* probes under way */
    int nwaiting;       /* requests of this thread waiting for a connection to this worker */
    uint64_t last_probe_ms;
} ig_pool;

/* Counters every thread bumps; relaxed atomics, each group on its own line. */
typedef struct ig_worker_stats {
    atomic_uint_fast64_t requests, responses_5xx, failures, connect_failures;
    atomic_uint_fast64_t conns_opened, conns_reused, conns_closed, retries;
    atomic_uint_fast64_t tls_full, tls_resumed; /* TLS handshakes: full, resumed */
} ig_worker_stats;

typedef struct ig_worker {
    uint64_t id;      /* public id: never reused */
    char *url;        /* normalised: http[s]://host:port, then the base path if any */
    uint64_t url_key; /* a hash of url: names it to other gateways (the shared prefix index) */
    int tls;          /* https: TLS to it (net/ig_net) */
    char *host;
    uint16_t port;
    char *host_header; /* "host:port" sent as Host */
    size_t host_header_len;
    char *base_path; /* "" or "/api": put before every path sent to it (a hosted API's base URL) */
    size_t base_path_len;
    char *auth_line; /* NULL, or "authorization: Bearer KEY\r\n" sent in place of the client's */
    size_t auth_line_len;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char **models; /* immutable once published; NULL with any_model */
    int n_models;
    int any_model;           /* model unknown: the worker takes any model */
    int group;               /* its worker group (0: the LLM fleet; others take forwarded paths only) */
    int role;                /* IG_ROLE_*: set before it is published (group 0 only) */
    int bootstrap_port;      /* a prefill's KV bootstrap port (0: none given, sent as null) */
    atomic_int max_inflight; /* 0: unlimited; the admin API may change it live */
    /* learned from the worker's own 503/429: a cap that grows back one slot a second */
    atomic_int learned_cap; /* 0: none */
    atomic_uint_fast64_t learned_at_ms;
    atomic_long version;       /* weight version it reported or was set to (0: unknown) */
    atomic_int paused;         /* paused alone (/pause_generation/{id}): out of routing */
    atomic_int keyed_inflight; /* requests in flight routed by a remembered routing key (min_group) */
    atomic_int
        remote_inflight; /* in flight through the other gateways, as they last reported (--nats-servers) */
    /* the best time to first byte its connections show lately (slowly forgets) */
    atomic_uint best_ttfb_us;
    /* how long a pooled connection lasted idle before the worker closed it,
     * last seen: its keep-alive timeout (uvicorn's is 5 s); 0: none seen */
    atomic_uint idle_close_ms;
    ig_pool *pools;              /* one per loop thread */
    ig_proc procs[IG_MAX_PROCS]; /* filled in order, never emptied (a restarted process is a new id) */
    atomic_int n_procs;
    void *control;       /* the control thread's own state for this worker */
    uint32_t store_seen; /* control thread: the last read of the shared registry that had it (cluster) */
    /* low 32 bits: requests in flight; high 32 bits: other references.
     * One atomic, so a request costs no more than the in-flight count. */
    _Alignas(64) atomic_uint_fast64_t refs;
    _Alignas(64) atomic_int health; /* IG_HEALTH_* (control thread writes) */
    atomic_int removed;             /* set once, when removed from the registry */
    atomic_int breaker;             /* IG_BREAKER_* */
    atomic_int consecutive_failures;
    atomic_uint_fast64_t
        last_failure_ms; /* loop time of the last failure: older than the window, the count restarts */
    atomic_int half_open_successes;
    atomic_int probe_inflight; /* half-open: one probe request at a time */
    atomic_uint_fast64_t open_until_ms;
    atomic_int health_fail_streak, health_ok_streak; /* control thread only, atomic for readers */
    _Alignas(64) ig_worker_stats stats;
} ig_worker;

typedef struct ig_model_set {
    const char *name; /* borrowed from a worker of the snapshot, or owned (registered) */
    size_t len;
    int paused;          /* new requests for it wait in the queue */
    int registered;      /* by /register_model: exactly its listed workers, name owned */
    ig_worker **workers; /* routable workers serving it (including any-model ones) */
    int n;
    ig_ring ring;
} ig_model_set;

typedef struct ig_snapshot {
    uint64_t version;
    int role;        /* whose workers it routes: IG_ROLE_REGULAR, or one pool of pd[] */
    ig_worker **all; /* every registered worker, for listings and metrics */
    int n_all;
    ig_worker **routable; /* healthy, breaker not open: requests without a model */
    int n_routable;
    ig_ring routable_ring;
    ig_worker **any; /* routable any-model workers: models nobody listed */
    int n_any;
    ig_ring any_ring;
    ig_model_set *models;
    int n_models;
    uint32_t *table; /* open addressing: index+1 into models, 0 empty */
    uint32_t mask;
    int paused_all; /* the fleet is paused: every new request waits */
    int n_up;       /* routable workers of every group (readiness) */
    /* groups 1..IG_MAX_GROUPS-1 (named in --config): their routable workers,
     * grouped[group_off[g] .. + group_n[g]]; group 0 is routable/models above */
    ig_worker **grouped;
    int group_off[IG_MAX_GROUPS], group_n[IG_MAX_GROUPS], group_all[IG_MAX_GROUPS];
    long fleet_version;
    /* prefill/decode disaggregation: the prefill and decode pools, each a
     * snapshot of its own (NULL while no worker of that role is registered);
     * their workers are in all[] here, never in routable[] or models[] */
    struct ig_snapshot *pd[2];
} ig_snapshot;

/** Loop threads that keep per-thread pools in every worker (set once at start). */
void ig_registry_init(int nthreads);

/**
 * Split "http[s]://host[:port][/path]" into host and port (default 80 or 443);
 * *tls: https; *path (may be NULL): the path as given ("" when none). 0, or
 * -EINVAL with a static reason in *err.
 */
int ig_url_parse(const char *url, char *host, size_t hostcap, uint16_t *port, int *tls, const char **path,
                 const char **err);

/** A worker URL as the worker built from it would have it (scheme, host,
 * port always, no trailing slash), without resolving anything. 0, -EINVAL, -E2BIG. */
int ig_url_normalize(const char *url, char *out, size_t cap);
/** Build a worker from its URL (resolves the host). 0 or negative errno; *err says why. */
int ig_worker_new(const char *url, ig_worker **out, const char **err);
/** The key sent as "Authorization: Bearer KEY" to w (NULL or "": none);
 * only before w is published. 0, -EINVAL (a control character), -ENOMEM. */
int ig_worker_set_key(ig_worker *w, const char *key);
/** How much of w's base path goes before a request target (all of it,
 * less a trailing "/v1" the target starts with itself). */
size_t ig_worker_path_prefix(const ig_worker *w, const char *target, size_t len);
/** Replace the model list (takes ownership); only before the worker is published. */
void ig_worker_set_models(ig_worker *w, char **models, int n);
/** 1 when w serves the model (or any model). */
int ig_worker_serves(const ig_worker *w, const char *model, size_t len);

/** In-flight requests (what the policies compare). */
static inline uint32_t ig_worker_inflight(const ig_worker *w)
{
    return (uint32_t)atomic_load_explicit(&((ig_worker *)w)->refs, memory_order_relaxed);
}
/** A request starts on w: counts as in flight and keeps w alive. */
static inline void ig_worker_begin(ig_worker *w)
{
    atomic_fetch_add_explicit(&w->refs, 1, memory_order_relaxed);
}
/** The request ends; may free w. */
void ig_worker_end(ig_worker *w);
/** Non-request references (snapshots, pooled connections). */
void ig_worker_ref(ig_worker *w);
void ig_worker_unref(ig_worker *w);
/** Routable right now: healthy, not removed, breaker not open. */
int ig_worker_routable(const ig_worker *w);

/* ---- the writer side: control thread only ---- */

/** Registered workers, in order of addition. */
int ig_registry_count(void);
ig_worker *ig_registry_at(int i);
ig_worker *ig_registry_find_url(const char *url);
ig_worker *ig_registry_find_id(uint64_t id);
/** Add (takes the caller's reference) and publish. */
int ig_registry_add(ig_worker *w);
/** Remove, mark removed (drain: in-flight requests finish) and publish. */
int ig_registry_remove(ig_worker *w);
/** Rebuild and publish the snapshot (after health or breaker changes). */
int ig_registry_publish(void);
/* A model registered by name onto a set of workers (AReaL's /register_model):
 * requests for it go to exactly these, whatever the workers list themselves. */
typedef struct ig_model_route {
    char *name;
    ig_worker **workers;
    int n;
} ig_model_route;

/** The registered models for the next snapshots (borrowed: the writer keeps
 * the array alive and calls this again after changing it). */
void ig_registry_set_model_routes(const ig_model_route *routes, int n);
/** Pause state and fleet version for the next snapshots (writer side). */
void ig_registry_set_paused(int all, char **models, int n);
void ig_registry_set_fleet_version(long v, int exclude_stale);
/** Drop everything (at exit, when no reader is left). */
void ig_registry_shutdown(void);

/* ---- the reader side: loop threads, inside one callback ---- */

/** The current snapshot (never NULL once ig_registry_init ran). */
const ig_snapshot *ig_snapshot_get(void);
/**
 * Candidates for model (NULL: any worker). *known says whether any
 * registered worker serves the model at all (healthy or not). Returns the
 * count and points *out at an immutable array of the snapshot.
 */
int ig_snapshot_candidates(const ig_snapshot *s, const char *model, size_t len, ig_worker *const **out,
                           int *known);
/** The routable workers of group g (0: every routable worker of the LLM
 * fleet), for forwarded paths. *known: the group has any worker at all. */
int ig_snapshot_group(const ig_snapshot *s, int g, ig_worker *const **out, int *known);
/** The same, with the ring over those candidates (empty unless rings are built). */
int ig_snapshot_candidates_ring(const ig_snapshot *s, const char *model, size_t len, ig_worker *const **out,
                                int *known, const ig_ring **ring);
/** Build consistent-hash rings with this many points per worker (0: none). Writer side. */
void ig_registry_set_ring_vnodes(int vnodes);

/** 1 when new requests for model (NULL: any) must wait: the fleet or the model is paused. */
int ig_snapshot_paused(const ig_snapshot *s, const char *model, size_t len);
/** Build a snapshot from workers (exposed for unit tests); NULL on ENOMEM. */
ig_snapshot *ig_snapshot_build(ig_worker **workers, int n, uint64_t version);
void ig_snapshot_free(void *snapshot);
#endif
