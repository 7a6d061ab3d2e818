/* The admin API's requests, parsed into operations (pure: unit-tested).
 * Runs on the control thread. */
#ifndef IG_ADMIN_H
#define IG_ADMIN_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "../registry/ig_registry.h"

typedef enum {
    IG_ADMIN_LIST,
    IG_ADMIN_GET,
    IG_ADMIN_ADD,
    IG_ADMIN_DELETE,
    IG_ADMIN_UPDATE, /* PUT/PATCH /workers/{id}: its cap */
    IG_ADMIN_BROADCAST,
    IG_ADMIN_LOADS,          /* GET /get_loads: the engines' load gauges */
    IG_ADMIN_ENGINE_METRICS, /* GET /engine_metrics: their Prometheus pages as one */
    /* AReaL's router and gateway */
    IG_ADMIN_ROUTE,
    IG_ADMIN_REGISTER_SESSION,
    IG_ADMIN_REMOVE_SESSION,
    IG_ADMIN_RESOLVE_WORKER,
    IG_ADMIN_REGISTER_MODEL,
    IG_ADMIN_MODELS,
    IG_ADMIN_REMOVE_MODEL,
    IG_ADMIN_START_SESSION,
    IG_ADMIN_EXPORT,
} ig_admin_op;

/* Fleet control endpoints, sent to every targeted worker at once. */
typedef enum {
    IG_BC_PAUSE,
    IG_BC_CONTINUE,
    IG_BC_SET_VERSION,
    IG_BC_GET_VERSION,
    IG_BC_FLUSH_CACHE,
    IG_BC_RELEASE_MEMORY,
    IG_BC_RESUME_MEMORY,
} ig_broadcast_kind;

typedef struct ig_admin_request {
    ig_admin_op op;
    uint64_t id;    /* GET/DELETE /workers/{id} */
    char *url;      /* ADD, or GET/DELETE by URL */
    char *model_id; /* ADD: skip discovery, serve this model */
    char *api_key;  /* ADD: the worker's own key (sent in place of the client's) */
    char *group;    /* ADD: the worker group (--config worker_groups) it joins; NULL: the LLM fleet */
    int max_inflight;
    int has_max_inflight;
    int role;           /* ADD: IG_ROLE_* (worker_type) */
    int bootstrap_port; /* ADD: a prefill's (0: none) */
    /* BROADCAST */
    ig_broadcast_kind bc;
    const char *bc_path; /* the worker endpoint, e.g. "/pause_generation" */
    int bc_method;       /* as received */
    int has_worker;      /* the path form /pause_generation/{worker_id} */
    char *model;         /* {"model": ...} narrows the target */
    long version;        /* set_version */
    int areal;           /* AReaL router form (/register, /unregister): its answer shapes */
    int rest;            /* POST /workers: sgl-model-gateway's answers (202 accepted, 409 for a repeat) */
    /* AReaL sessions and models */
    char *key;        /* /route api_key, /register_session session_api_key, model api_key */
    char *session_id; /* /route, sessions, export */
    char *ext_url;    /* /register_model url */
    char **addrs;     /* /register_model data_proxy_addrs */
    int n_addrs;
    char *body_out; /* export: the body to forward when it had to be rewritten */
    /* AReaL's session groups (after its session rework): /register_session's
     * sessions (ids and keys), export's session_ids (ids only) */
    char **sess_ids, **sess_keys;
    int n_sess;
    char *group_id;    /* register_session, remove_session, export */
    int keep_sessions; /* export {"remove_session": false} */
    /* on error */
    int status;
    const char *code;
    const char *message;
} ig_admin_request;

/** 1 when path (no query) is an admin endpoint. */
int ig_admin_is_path(const char *path, size_t len);
/** Parse one admin request. 0, or -EINVAL with status/code/message set. */
int ig_admin_parse(int method, const char *target, const char *body, size_t body_len, ig_admin_request *out);
void ig_admin_request_free(ig_admin_request *r);
/** Percent-decode the value of key in a query string into a new string (NULL if absent). */
char *ig_query_get(const char *query, const char *key);
#endif
