/* The control thread: the only writer of the registry. It runs admin
 * requests handed over by the loop threads, discovers models, checks health
 * concurrently, moves circuit breakers out of their cool-down, and frees
 * retired snapshots. Nothing here is on the routing path. */
#ifndef IG_CONTROL_H
#define IG_CONTROL_H
#include <stddef.h>

#include "../core/ig_inbox.h"

struct ig_worker;

/* A named worker group: its workers take forwarded paths only. */
typedef struct ig_control_group {
    const char *name;
    char **worker_urls; /* added at start */
    int n_worker_urls;
    int worker_max_inflight;           /* -1: the fleet's */
    const char *health_check_endpoint; /* NULL: the fleet's */
} ig_control_group;

typedef struct ig_control_config {
    char **worker_urls; /* added at start */
    int n_worker_urls;
    char **prefill_urls; /* --prefill URL [PORT]: added at start, prefill_ports[i] (0: none) */
    const int *prefill_ports;
    int n_prefill;
    char **decode_urls; /* --decode URL */
    int n_decode;
    char **etcd_endpoints; /* --etcd-endpoints: the registry is shared through etcd (0: not) */
    int n_etcd;
    const char *etcd_prefix; /* every key under it */
    double etcd_lease_ttl_secs, etcd_sync_interval_secs;
    char **nats_servers; /* --nats-servers: the prefix index is shared over NATS (0: not) */
    int n_nats;
    const char *self_addr;        /* this gateway's address, in its member key */
    uint32_t worker_max_inflight; /* their cap */
    double discovery_timeout_secs;
    double health_check_interval_secs; /* 0: no active checks */
    double health_check_timeout_secs;
    uint32_t health_failure_threshold;
    uint32_t health_success_threshold;
    const char *health_check_endpoint;
    double broadcast_timeout_secs;
    int exclude_stale_workers;
    int cache_aware;                    /* the prefix index exists: sweep it */
    double eviction_interval_secs;      /* ... this often (and the routing keys') */
    int sticky;                         /* the routing-key table exists: forget idle keys ... */
    double max_idle_secs;               /* ... unused this long (0: never) */
    double request_timeout_secs;        /* for calls made on a client's behalf (AReaL) */
    double worker_startup_timeout_secs; /* > 0: start only once every start-up worker is healthy */
    const ig_control_group *groups;     /* [1..n_groups) */
    int n_groups;
    const char *worker_api_key; /* sent to the fleet's workers (NULL: the client's Authorization goes) */
    int https_by_default;       /* an added worker URL without a scheme is https:// (hosted APIs) */
    /* the gateway's own keys: a worker may not make a session of one */
    const char *api_key, *admin_api_key, *metrics_api_key;
} ig_control_config;

/* The shared prefix index's traffic (--nats-servers), for /metrics. */
typedef struct ig_share_stats {
    int on, connected, peers; /* peers: gateways whose loads count here */
    uint64_t messages_sent, messages_lost, messages_received, messages_malformed;
    uint64_t records_applied, records_unknown, records_dropped;
} ig_share_stats;
/** Any thread. */
void ig_control_share_stats(ig_share_stats *out);
/** A loop thread's ring got inserts (ig_prefix_share_init's wake-up). */
void ig_control_share_wake(void *arg);

/* What the control thread may ask of the loop threads (the app wires them). */
typedef struct ig_control_hooks {
    void (*wake_reader)(int i); /* wake loop thread i: it passes a quiescent point, retries its queue */
} ig_control_hooks;

/* An admin request travelling loop thread -> control thread -> loop thread. */
typedef struct ig_admin_msg {
    ig_inbox_node node;        /* in the control thread's inbox, then in reply_to */
    struct ig_admin_msg *next; /* the control thread's own lists (waiting for an add) */
    ig_inbox *reply_to;        /* where the answer goes; NULL: nobody waits for it */
    void *owner;               /* the requester's, touched only by reply_to's thread; NULL once it left */
    int method;                /* llhttp method */
    char *target;              /* path and query */
    char *body;
    size_t body_len;
    int areal;                /* answer in AReaL's router shapes */
    const char *content_type; /* of the reply (static); NULL: application/json */
    int rest;                 /* POST /workers: answer as sgl-model-gateway (202, 409 for a repeat) */
    char *auth;               /* the client's Authorization value, for workers that want it */
    struct ig_worker *pin;    /* internal: pin the admin key's session here (referenced) */
    int status;               /* reply */
    char *reply;
    size_t reply_len;
} ig_admin_msg;

/** Start the control thread; the --worker-urls are added (models discovered,
 * all at once) before this returns. 0 or a negative errno code. */
int ig_control_start(const ig_control_config *cfg, int nthreads, const ig_control_hooks *hooks);
/** Hand an admin request to the control thread (any loop thread). */
void ig_control_submit(ig_admin_msg *m);
/** Pin the admin key's session to w unless pinned already (any loop thread;
 * the pin lands shortly after, on the control thread). */
void ig_control_pin_admin(struct ig_worker *w);
/** A breaker changed state on a loop thread: republish soon (any thread). */
void ig_control_poke(void);
/** Stop the control thread and free the registry (after the loop threads ended). */
void ig_control_stop(void);
void ig_admin_msg_free(ig_admin_msg *m);
#endif
