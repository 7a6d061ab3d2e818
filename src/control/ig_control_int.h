/* What the control thread's parts share: ig_control.c (the loop, the inbox,
 * the tick, answering), ig_workers.c (members and health), ig_fleet.c
 * (fan-outs and broadcasts), ig_areal.c (AReaL's sessions and models) and
 * ig_admin_ops.c (which calls them all). Control thread only. */
#ifndef IG_CONTROL_INT_H
#define IG_CONTROL_INT_H
#include <jansson.h>
#include <uv.h>

#include "../registry/ig_registry.h"
#include "../upstream/ig_httpc.h"
#include "../api/ig_admin.h"
#include "ig_control.h"

/** Answer m with doc (taken) and hand it back to its loop thread. */
void ig_ctl_reply(ig_admin_msg *m, int status, json_t *doc);
/** Answer with an OpenAI-shaped error. */
void ig_ctl_reply_error(ig_admin_msg *m, int status, const char *code, const char *msg);
/** Answer with a worker's own body (copied). */
void ig_ctl_reply_raw(ig_admin_msg *m, int status, const char *body, size_t len);
uv_loop_t *ig_ctl_loop(void);
const ig_control_config *ig_ctl_cfg(void);
void ig_ctl_publish(void);
/** A registered worker by URL, as given or normalised; NULL if none. */
ig_worker *ig_ctl_find_url(const char *url);
/** A routable worker for a new session (round robin over the snapshot's
 * candidates for model, NULL: any); NULL when none. *known: some registered
 * worker serves the model at all. */
ig_worker *ig_ctl_pick(const char *model, int *known);

/** Wake every loop thread (queued requests may go now). */
void ig_ctl_wake_loops(void);
/** Run one admin message (ig_admin_ops.c). */
void ig_ctl_handle(ig_admin_msg *m);

/* ig_workers.c */
/** A control client for w (its address, Host, TLS name); NULL: out of memory. */
ig_httpc *ig_ctl_httpc_new(const ig_worker *w);
/** ig_httpc_request to w: its base path before path, its key unless headers
 * carry an Authorization of their own. */
int ig_ctl_send(ig_httpc *c, const ig_worker *w, const char *method, const char *path, const char *headers,
                const char *body, size_t len, double timeout_secs, ig_httpc_cb cb, void *arg);
/* A worker to add. */
typedef struct ig_ctl_worker_spec {
    const char *url;
    const char *model_id; /* NULL: discover its models */
    const char *api_key;  /* its own (NULL: --worker-api-key's) */
    int max_inflight;     /* < 0: leave the cap as it is (new workers: --worker-max-inflight) */
    int group;
    int role;           /* IG_ROLE_* */
    int bootstrap_port; /* a prefill's (0: none) */
} ig_ctl_worker_spec;
/** Add a worker: discover its models unless given, then publish. m may be
 * NULL (start-up). */
void ig_ctl_add_worker(const ig_ctl_worker_spec *spec, ig_admin_msg *m);
/* ig_cluster.c: several gateways, one fleet, through etcd (--etcd-endpoints) */
int ig_cluster_start(uv_loop_t *loop, const ig_control_config *cfg); /* 0 also when not asked for */
void ig_cluster_stop(void);
/** 1 with --etcd-endpoints: admin adds and removes go through etcd first. */
int ig_cluster_enabled(void);
/** Write the worker to etcd, then add it here (etcd down: 503, nothing added). */
void ig_cluster_add_worker(const ig_ctl_worker_spec *spec, ig_admin_msg *m);
/** A cap changed live: in etcd, then here (every gateway follows). */
void ig_cluster_set_cap(ig_worker *w, int cap, ig_admin_msg *m);
/** Delete the worker in etcd, then remove it here. */
void ig_cluster_remove_worker(ig_worker *w, ig_admin_msg *m);
/** The pause state every gateway must hold (all, or these models): written
 * to etcd, applied here, and cb runs once every live gateway applied it
 * (ok 0: etcd away or a gateway did not, within a while). */
void ig_cluster_set_pause(int all, char *const *models, int n, void (*cb)(void *arg, int ok, const char *err),
                          void *arg);
/** The weight versions this gateway set (the fleet's, each worker's): for every gateway. */
void ig_cluster_put_versions(long fleet_version);
/** AReaL's state (keys under <prefix>areal/; values[i] NULL: delete it) into
 * etcd, IG_ETCD_TXN_MAX keys a transaction, then done (ok 0: etcd did not
 * take them all; a list longer than one transaction may be half written). */
void ig_cluster_write(char *const *keys, char *const *values, int n,
                      void (*done)(void *arg, int ok, const char *err), void *arg);
/** Put key = value unless it is there; done gets what is there now (this
 * value, or the one another gateway put first). */
void ig_cluster_claim(const char *key, const char *value,
                      void (*done)(void *arg, int ok, const char *value, const char *err), void *arg);
/** 503 store_unavailable: etcd did not take an admin write (err: why). */
void ig_ctl_reply_store_error(ig_admin_msg *m, const char *err);
/** ig_areal.c: make AReaL's sessions and models match etcd's (kvs of a
 * range over <prefix>areal/; skip: that prefix's length). */
void ig_areal_follow(json_t *kvs, size_t skip);
/** The start-up workers, into etcd (again until it takes them). */
void ig_cluster_publish_startup(const ig_ctl_worker_spec *specs, int n);
/* ig_share.c: the prefix index shared between gateways (--nats-servers) */
int ig_share_start(uv_loop_t *loop, const ig_control_config *cfg); /* 0 also when not asked for */
void ig_share_stop(void);
void ig_share_release(void); /* after the loop threads are joined */
/** 1 for a named group's worker from --config: each gateway's own, never
 * in the shared registry. */
int ig_ctl_worker_from_config(const ig_worker *w);
/** The index of the worker group called name (0: NULL or "default"), or -1. */
int ig_ctl_group_index(const char *name);
/** Remove w (it drains); m may be NULL (the shared registry dropped it). */
void ig_ctl_remove_worker(ig_worker *w, ig_admin_msg *m);
/** A worker as the admin API shows it. */
json_t *ig_worker_json(const ig_worker *w);
/** The same, with AReaL's router field names added. */
json_t *ig_ctl_worker_json_all(const ig_worker *w);
/** Check every worker at once (the health timer). */
void ig_ctl_health_round(uv_timer_t *t);
/** Start-up workers still being discovered. */
int ig_ctl_initial_pending(void);
void ig_ctl_workers_shutdown(void);

/* ig_fleet.c */
/** A fleet control request: to every targeted worker at once. */
void ig_ctl_broadcast(ig_admin_request *req, ig_admin_msg *m);
void ig_ctl_fleet_shutdown(void);
/** Hold new requests of the whole fleet (all) or of these models, and no
 * others (a pause state seen in etcd). */
void ig_fleet_apply_pause(int all, char *const *models, int n);
/** The fleet's weight version another gateway set. */
void ig_fleet_apply_version(long v);
/** The gateway's pause: 1 for the whole fleet; *models the paused models (borrowed). */
int ig_fleet_paused(char ***models, int *n);

/* A fan-out: one request to many workers at once, answered when the last
 * one has; results holds {worker_id, url, worker_addr, status, ok, error}. */
typedef struct ig_fanout ig_fanout;
typedef void (*ig_fanout_item_fn)(ig_fanout *f, ig_worker *w, json_t *entry, int ok, const char *body,
                                  size_t len);
typedef void (*ig_fanout_done_fn)(ig_fanout *f);
struct ig_fanout {
    ig_admin_msg *m;
    ig_fanout_item_fn on_item; /* may be NULL */
    ig_fanout_done_fn on_done; /* frees the fan-out */
    json_t *results;
    int pending;
    int failed;
    uint64_t start_ms;
};
void ig_fanout_init(ig_fanout *f, ig_admin_msg *m, ig_fanout_item_fn on_item, ig_fanout_done_fn on_done);
/** headers: extra "name: value\r\n" lines or NULL. */
void ig_fanout_send(ig_fanout *f, ig_worker *w, const char *method, const char *path, const char *headers,
                    const char *body, size_t len);
/** Every request is out: on_done runs when the last answer is in (maybe now). */
void ig_fanout_end(ig_fanout *f);

/* ig_engine.c */
/** /get_loads (loads) or /engine_metrics: every fleet worker's GET /metrics at once. */
void ig_ctl_engine_fanout(ig_admin_msg *m, int loads);

/* ig_areal.c */
/** Sessions, registered models, /route, start_session and export. */
void ig_areal_handle(ig_admin_request *req, ig_admin_msg *m);
/** w leaves the fleet: revoke its sessions and drop it from registered
 * models (before the next publish); returns the sessions revoked. */
int ig_areal_worker_removed(ig_worker *w);
/** Pin the admin key's persistent session to w unless it is pinned already. */
void ig_areal_pin_admin(ig_worker *w);
void ig_areal_shutdown(void);
#endif
