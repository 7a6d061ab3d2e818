/* The fleet as one: fan-outs (one request to many workers at once,
 * answered when the last has) and the control broadcasts on them (pause,
 * continue, weight versions, cache flushes), with the gateway-side pause
 * and fleet version. Control thread only. */
#include <errno.h>
#include <jansson.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../admission/ig_admission.h"
#include "../api/ig_admin.h"
#include "../core/ig_log.h"
#include "../health/ig_breaker.h"
#include "../registry/ig_registry.h"
#include "../upstream/ig_httpc.h"
#include "ig_control_int.h"

/* A fleet-control broadcast: a fan-out plus what to do with its answers. */
typedef struct bcast {
    ig_fanout f; /* first: the fan-out's callbacks get it back */
    ig_broadcast_kind kind;
    long version;
    char *model;   /* the pause scope, if narrowed by model */
    int scope_all; /* the whole fleet (no model, no worker) */
    /* set_version/{id} and get_version/{id} answer with the worker's own
     * reply, as AReaL's gateway does */
    int raw;
    int raw_status;
    char *raw_body;
    size_t raw_len;
    /* what goes to the workers (kept for a pause agreed through etcd first) */
    const char *path;
    int method;
    uint64_t worker_id; /* the path form /pause_generation/{id}; 0: no one worker */
} bcast;

typedef struct fanout_item {
    ig_fanout *f;
    ig_worker *w; /* referenced until the answer */
    ig_httpc *hc;
    json_t *entry;
} fanout_item;

/* gateway-side pause: the fleet, or these models */
static int paused_all;
static char **paused_models;
static int n_paused_models;
static long fleet_version;

/* ---- fleet control broadcasts ---- */

static void set_model_paused(const char *model, int paused)
{
    int i = 0;
    while (i < n_paused_models && strcmp(paused_models[i], model) != 0)
        i++;
    if (paused && i == n_paused_models) {
        char **v = realloc(paused_models, sizeof(char *) * (size_t)(n_paused_models + 1));
        if (v && (v[n_paused_models] = strdup(model))) {
            paused_models = v;
            n_paused_models++;
        }
    } else if (!paused && i < n_paused_models) {
        free(paused_models[i]);
        paused_models[i] = paused_models[--n_paused_models];
    }
}

void ig_fleet_apply_pause(int all, char *const *models, int n)
{
    paused_all = all;
    while (n_paused_models)
        set_model_paused(paused_models[0], 0);
    for (int i = 0; i < n; i++)
        set_model_paused(models[i], 1);
    ig_registry_set_paused(paused_all, paused_models, n_paused_models);
    ig_ctl_publish();
    ig_ctl_wake_loops(); /* queued requests may go now, or wait on */
}

void ig_fleet_apply_version(long v)
{
    fleet_version = v;
    ig_registry_set_fleet_version(v, ig_ctl_cfg()->exclude_stale_workers);
    ig_ctl_publish();
}

int ig_fleet_paused(char ***models, int *n)
{
    *models = paused_models;
    *n = n_paused_models;
    return paused_all;
}

/* Gateway-side pause: new data requests of that scope wait in the admission
 * queue (pause is set before the workers are told; continue after). */
static void gateway_pause(bcast *b, int paused)
{
    if (b->scope_all) {
        paused_all = paused;
        if (!paused)
            while (n_paused_models)
                set_model_paused(paused_models[0], 0);
    } else if (b->model) {
        set_model_paused(b->model, paused);
    } else {
        return; /* one worker: it leaves routing through its own flag */
    }
    ig_registry_set_paused(paused_all, paused_models, n_paused_models);
    ig_ctl_publish();
    if (!paused)
        ig_ctl_wake_loops(); /* queued requests may go now */
}

static void bcast_done(ig_fanout *f)
{
    bcast *b = (bcast *)f;
    if (b->kind == IG_BC_CONTINUE)
        gateway_pause(b, 0);
    if (b->kind == IG_BC_SET_VERSION && b->scope_all) {
        fleet_version = b->version;
        ig_registry_set_fleet_version(b->version, ig_ctl_cfg()->exclude_stale_workers);
    }
    if (b->kind == IG_BC_SET_VERSION && ig_cluster_enabled()) /* every gateway's answers name them */
        ig_cluster_put_versions(fleet_version);
    if (b->kind == IG_BC_SET_VERSION || b->kind == IG_BC_GET_VERSION || b->kind == IG_BC_PAUSE ||
        b->kind == IG_BC_CONTINUE)
        ig_ctl_publish(); /* versions and per-worker pauses change who is routable */
    if (b->kind == IG_BC_CONTINUE)
        ig_ctl_wake_loops(); /* queued requests may go now */
    if (b->raw && b->raw_status) {
        json_decref(f->results);
        ig_ctl_reply_raw(f->m, b->raw_status, b->raw_body ? b->raw_body : "", b->raw_len);
    } else {
        json_t *doc = json_pack("{s:o,s:b,s:I,s:I}", "results", f->results, "ok", !f->failed, "elapsed_ms",
                                (json_int_t)(uv_now(ig_ctl_loop()) - f->start_ms), "fleet_version",
                                (json_int_t)fleet_version);
        ig_ctl_reply(f->m, f->failed ? 502 : 200, doc);
    }
    free(b->raw_body);
    free(b->model);
    free(b);
}

static void bcast_item(ig_fanout *f, ig_worker *w, json_t *entry, int ok, const char *body, size_t len)
{
    bcast *b = (bcast *)f;
    if (b->raw && body && (b->raw_body = malloc(len + 1))) {
        memcpy(b->raw_body, body, len);
        b->raw_body[len] = '\0';
        b->raw_len = len;
        b->raw_status = json_integer_value(json_object_get(entry, "status"));
    }
    if (!ok)
        return;
    json_error_t jerr;
    json_t *doc = json_loadb(body ? body : "", len, 0, &jerr);
    json_t *v = json_object_get(doc, "version");
    if (b->kind == IG_BC_SET_VERSION)
        atomic_store(&w->version, b->version);
    else if (json_is_integer(v))
        atomic_store(&w->version, (long)json_integer_value(v));
    if (b->kind == IG_BC_PAUSE && !b->scope_all && !b->model)
        atomic_store(&w->paused, 1);
    if (b->kind == IG_BC_CONTINUE)
        atomic_store(&w->paused, 0);
    json_object_set_new(entry, "version", json_integer(atomic_load(&w->version)));
    json_decref(doc);
}

/* ---- fan-out: one request to many workers at once, answered when the last has ---- */

void ig_fanout_init(ig_fanout *f, ig_admin_msg *m, ig_fanout_item_fn on_item, ig_fanout_done_fn on_done)
{
    f->m = m;
    f->on_item = on_item;
    f->on_done = on_done;
    f->results = json_array();
    f->pending = 1; /* held until every request is out, so no early answer */
    f->failed = 0;
    f->start_ms = uv_now(ig_ctl_loop());
}

static void fanout_cb(void *arg, int status, const char *body, size_t len, const char *err)
{
    fanout_item *it = arg;
    ig_fanout *f = it->f;
    int ok = status >= 200 && status < 300;
    json_object_set_new(it->entry, "status", json_integer(status));
    json_object_set_new(it->entry, "ok", json_boolean(ok));
    json_object_set_new(it->entry, "error",
                        ok ? json_null() : json_string(err ? err : "worker answered an error"));
    if (!ok)
        f->failed = 1;
    if (f->on_item)
        f->on_item(f, it->w, it->entry, ok, body, len);
    ig_httpc_close(it->hc); /* the answer is in: this connection was for one request */
    ig_worker_unref(it->w);
    free(it);
    ig_fanout_end(f);
}

void ig_fanout_send(ig_fanout *f, ig_worker *w, const char *method, const char *path, const char *headers,
                    const char *body, size_t len)
{
    char id[32];
    snprintf(id, sizeof(id), "w%llu", (unsigned long long)w->id);
    fanout_item *it = calloc(1, sizeof(*it));
    if (!it) {
        f->failed = 1;
        return;
    }
    it->f = f;
    it->w = w;
    ig_worker_ref(w);
    it->entry = json_pack("{s:s,s:s,s:s}", "worker_id", id, "url", w->url, "worker_addr", w->url);
    json_array_append_new(f->results, it->entry);
    it->hc = ig_ctl_httpc_new(w);
    f->pending++;
    int rc = it->hc ? ig_ctl_send(it->hc, w, method, path, headers, body, len,
                                  ig_ctl_cfg()->broadcast_timeout_secs, fanout_cb, it)
                    : -ENOMEM;
    if (rc) /* its callback will not run: answer for it now */
        fanout_cb(it, 0, NULL, 0, rc == -ENOMEM ? "out of memory" : "cannot send the request");
}

void ig_fanout_end(ig_fanout *f)
{
    if (--f->pending == 0)
        f->on_done(f);
}

static void send_all(bcast *b);
static void agreed(void *arg, int ok, const char *err);

/* Send the control request to every targeted worker at once: the broadcast
 * takes the slowest worker's time, not the sum. */
void ig_ctl_broadcast(ig_admin_request *req, ig_admin_msg *m)
{
    bcast *b = calloc(1, sizeof(*b));
    if (!b) {
        ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        return;
    }
    ig_fanout_init(&b->f, m, bcast_item, bcast_done);
    b->kind = req->bc;
    b->version = req->version;
    b->model = req->model ? strdup(req->model) : NULL;
    b->scope_all = !req->has_worker && !req->model;
    b->raw = req->has_worker && (b->kind == IG_BC_SET_VERSION || b->kind == IG_BC_GET_VERSION);
    if (req->has_worker && !ig_registry_find_id(req->id)) {
        json_decref(b->f.results);
        free(b->model);
        free(b);
        ig_ctl_reply_error(m, 404, "worker_not_found", "no such worker");
        return;
    }
    b->path = req->bc_path;
    b->method = req->bc_method;
    b->worker_id = req->has_worker ? req->id : 0;
    if ((b->kind == IG_BC_PAUSE || b->kind == IG_BC_CONTINUE) && !req->has_worker && ig_cluster_enabled()) {
        /* every gateway holds (or releases) new requests before the workers are told */
        char **models;
        int n, all = ig_fleet_paused(&models, &n), pause = b->kind == IG_BC_PAUSE;
        char **want = calloc((size_t)n + 1, sizeof(char *));
        int k = 0;
        for (int i = 0; want && i < n; i++)
            if (!(b->model && !strcmp(models[i], b->model)) && !(b->scope_all && !pause))
                want[k++] = models[i];
        if (want && b->model && pause)
            want[k++] = b->model;
        if (!want) {
            json_decref(b->f.results);
            free(b->model);
            free(b);
            ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
            return;
        }
        ig_cluster_set_pause(b->scope_all ? pause : all, want, k, agreed, b);
        free(want);
        return;
    }
    if (b->kind == IG_BC_PAUSE)
        gateway_pause(b, 1);
    send_all(b);
}

static void send_all(bcast *b)
{
    ig_admin_msg *m = b->f.m;
    for (int i = 0; i < ig_registry_count(); i++) {
        ig_worker *w = ig_registry_at(i);
        if (w->group && !b->worker_id)
            continue; /* fleet control is for the LLM fleet, not a named group's servers */
        if (b->worker_id && w->id != b->worker_id)
            continue;
        if (b->model && !ig_worker_serves(w, b->model, strlen(b->model)))
            continue;
        ig_fanout_send(&b->f, w, b->method == HTTP_GET ? "GET" : "POST", b->path, NULL, m->body, m->body_len);
    }
    ig_fanout_end(&b->f);
}

/* Every live gateway applied the pause state (ig_cluster_set_pause): the workers are told now. */
static void agreed(void *arg, int ok, const char *err)
{
    bcast *b = arg;
    if (!ok) {
        char msg[300];
        snprintf(msg, sizeof(msg), "the gateways did not agree on the pause through etcd: %s",
                 err ? err : "no answer");
        json_decref(b->f.results);
        ig_ctl_reply_error(b->f.m, 503, "store_unavailable", msg);
        free(b->model);
        free(b);
        return;
    }
    send_all(b);
}

void ig_ctl_fleet_shutdown(void)
{
    for (int i = 0; i < n_paused_models; i++)
        free(paused_models[i]);
    free(paused_models);
    paused_models = NULL;
    n_paused_models = 0;
}
