#include "ig_control.h"

#include <errno.h>
#include <jansson.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../core/ig_log.h"
#include "../core/ig_wakeup.h"
#include "../balance/ig_prefix.h"
#include "../health/ig_breaker.h"
#include "../core/ig_epoch.h"
#include "../registry/ig_registry.h"
#include "../upstream/ig_httpc.h"
#include "../admission/ig_admission.h"
#include "../api/ig_admin.h"
#include "ig_control_int.h"

#define TICK_MS 200

/* Control-thread state of a worker, hung off ig_worker.control. */
typedef struct ctl_worker {
    ig_worker *w;
    ig_httpc *hc;          /* discovery and health checks, one kept connection */
    ig_admin_msg *waiters; /* admin adds waiting for discovery to finish */
    int discovering;
} ctl_worker;

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
} bcast;

typedef struct fanout_item {
    ig_fanout *f;
    ig_worker *w; /* referenced until the answer */
    ig_httpc *hc;
    json_t *entry;
} fanout_item;

static struct {
    uv_loop_t loop;
    uv_thread_t tid;
    ig_wakeup inbox_wake;
    uv_timer_t tick, health, prefix_sweep;
    ig_inbox inbox; /* admin requests from the loop threads */
    atomic_int poked, stopping;
    const ig_control_config *cfg;
    ig_control_hooks hooks;
    int nthreads;
    int initial_pending;
    ctl_worker **adding; /* workers being discovered, not yet in the registry */
    int n_adding, cap_adding;
    /* gateway-side pause: the fleet, or these models */
    int paused_all;
    char **paused_models;
    int n_paused_models;
    long fleet_version;
} ctl;

void ig_admin_msg_free(ig_admin_msg *m)
{
    if (!m)
        return;
    if (m->pin)
        ig_worker_unref(m->pin);
    free(m->target);
    free(m->body);
    free(m->reply);
    free(m->auth);
    free(m);
}

/* Publishing retires the old snapshot. Busy loop threads pass quiescent
 * points all the time; only one idle in epoll holds reclamation up, and the
 * tick wakes just that one. (Waking every thread on every publish costs more
 * than it saves: libuv's async handles spin while a sender is mid-send.) */
static void publish(void)
{
    if (ig_registry_publish())
        ig_err("registry: out of memory publishing a snapshot");
}

void ig_ctl_reply(ig_admin_msg *m, int status, json_t *doc)
{
    m->status = status;
    m->reply = json_dumps(doc, JSON_COMPACT);
    m->reply_len = m->reply ? strlen(m->reply) : 0;
    json_decref(doc);
    if (m->reply_to)
        ig_inbox_push(m->reply_to, &m->node);
    else
        ig_admin_msg_free(m); /* a start-up add: nobody to answer */
}

void ig_ctl_reply_raw(ig_admin_msg *m, int status, const char *body, size_t len)
{
    m->status = status;
    m->reply = malloc(len + 1);
    m->reply_len = m->reply ? len : 0;
    if (m->reply) {
        memcpy(m->reply, body, len);
        m->reply[len] = '\0';
    }
    if (m->reply_to)
        ig_inbox_push(m->reply_to, &m->node);
    else
        ig_admin_msg_free(m);
}

uv_loop_t *ig_ctl_loop(void)
{
    return &ctl.loop;
}

const ig_control_config *ig_ctl_cfg(void)
{
    return ctl.cfg;
}

void ig_ctl_publish(void)
{
    publish();
}

ig_worker *ig_ctl_find_url(const char *url)
{
    ig_worker *w = ig_registry_find_url(url), *tmp = NULL;
    const char *why;
    /* a URL as given may differ from the stored, normalised one */
    if (!w && ig_worker_new(url, &tmp, &why) == 0) {
        w = ig_registry_find_url(tmp->url);
        ig_worker_unref(tmp);
    }
    return w;
}

ig_worker *ig_ctl_pick(const char *model, int *known)
{
    static uint64_t rr;
    const ig_snapshot *s = ig_snapshot_get(); /* the writer's own: always current */
    ig_worker *const *cand;
    int n = ig_snapshot_candidates(s, model, model ? strlen(model) : 0, &cand, known);
    return n > 0 ? cand[rr++ % (uint64_t)n] : NULL;
}

void ig_ctl_reply_error(ig_admin_msg *m, int status, const char *code, const char *msg)
{
    ig_ctl_reply(m, status,
                 json_pack("{s:{s:s,s:s,s:s}}", "error", "message", msg, "type",
                           status == 404 ? "not_found_error" : "invalid_request_error", "code", code));
}

/* ---- worker JSON ---- */

static const char *breaker_name(int b)
{
    return b == IG_BREAKER_OPEN ? "open" : b == IG_BREAKER_HALF_OPEN ? "half_open" : "closed";
}

json_t *ig_worker_json(const ig_worker *cw)
{
    ig_worker *w = (ig_worker *)cw;
    char id[32];
    snprintf(id, sizeof(id), "w%llu", (unsigned long long)w->id);
    json_t *models = json_array();
    for (int i = 0; i < w->n_models; i++)
        json_array_append_new(models, json_string(w->models[i]));
    ig_worker_stats *s = &w->stats;
    return json_pack(
        "{s:s,s:s,s:o,s:b,s:s,s:s,s:b,s:I,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I}}", "id", id, "url",
        w->url, "models", w->any_model ? (json_decref(models), json_null()) : models, "any_model",
        w->any_model, "health", atomic_load(&w->health) == IG_HEALTH_UP ? "healthy" : "unhealthy", "breaker",
        breaker_name(atomic_load(&w->breaker)), "routable", ig_worker_routable(w), "inflight",
        (json_int_t)ig_worker_inflight(w), "max_inflight", atomic_load(&w->max_inflight),
        "effective_max_inflight", ig_admission_effective_cap(w, uv_now(&ctl.loop)), "requests",
        (json_int_t)atomic_load(&s->requests), "failures", (json_int_t)atomic_load(&s->failures),
        "connect_failures", (json_int_t)atomic_load(&s->connect_failures), "responses_5xx",
        (json_int_t)atomic_load(&s->responses_5xx), "retries", (json_int_t)atomic_load(&s->retries),
        "connections", "opened", (json_int_t)atomic_load(&s->conns_opened), "reused",
        (json_int_t)atomic_load(&s->conns_reused), "closed", (json_int_t)atomic_load(&s->conns_closed));
}

/* The same, with AReaL's router field names added (worker_id, addr, healthy,
 * active_requests), so its controller reads our /workers unchanged. */
static json_t *worker_json_all(const ig_worker *w)
{
    json_t *j = ig_worker_json(w);
    json_object_set(j, "worker_id", json_object_get(j, "id"));
    json_object_set(j, "addr", json_object_get(j, "url"));
    json_object_set_new(j, "healthy", json_boolean(atomic_load(&((ig_worker *)w)->health) == IG_HEALTH_UP));
    json_object_set_new(j, "active_requests", json_integer(ig_worker_inflight(w)));
    return j;
}

/* ---- adding and removing workers ---- */

static json_t *areal_registered(const ig_worker *w)
{
    char id[32];
    snprintf(id, sizeof(id), "w%llu", (unsigned long long)w->id);
    return json_pack("{s:s,s:s}", "status", "ok", "worker_id", id);
}

static void ctl_free(ctl_worker *cw)
{
    ig_httpc_close(cw->hc);
    free(cw);
}

static void adding_remove(ctl_worker *cw)
{
    for (int i = 0; i < ctl.n_adding; i++)
        if (ctl.adding[i] == cw) {
            ctl.adding[i] = ctl.adding[--ctl.n_adding];
            return;
        }
}

static ctl_worker *adding_find(const char *url)
{
    for (int i = 0; i < ctl.n_adding; i++)
        if (strcmp(ctl.adding[i]->w->url, url) == 0)
            return ctl.adding[i];
    return NULL;
}

static void finish_add(ctl_worker *cw)
{
    ig_worker *w = cw->w;
    int rc = ig_registry_add(w);
    ig_admin_msg *m = cw->waiters;
    cw->waiters = NULL;
    if (rc) {
        ig_err("cannot add worker %s: %s", w->url, strerror(-rc));
        while (m) {
            ig_admin_msg *next = m->next;
            m->next = NULL;
            ig_ctl_reply_error(m, 503, "registry_full", "cannot add more workers");
            m = next;
        }
        ig_worker_unref(w);
        ctl_free(cw);
        return;
    }
    w->control = cw;
    ig_info("worker %s added as w%llu (%s, %s)", w->url, (unsigned long long)w->id,
            w->any_model ? "any model" : w->models[0],
            atomic_load(&w->health) == IG_HEALTH_UP ? "healthy" : "unhealthy until it answers");
    int first = 1;
    while (m) {
        ig_admin_msg *next = m->next;
        m->next = NULL;
        if (m->areal)
            ig_ctl_reply(m, 200, areal_registered(w));
        else
            ig_ctl_reply(m, first ? 201 : 200,
                         json_pack("{s:o,s:b}", "worker", ig_worker_json(w), "created", first));
        first = 0;
        m = next;
    }
}

static void discovery_cb(void *arg, int status, const char *body, size_t len, const char *err)
{
    ctl_worker *cw = arg;
    ig_worker *w = cw->w;
    cw->discovering = 0;
    adding_remove(cw);
    if (ctl.initial_pending > 0)
        ctl.initial_pending--;
    if (err && strcmp(err, "cancelled") == 0)
        return;
    if (status == 200) {
        json_error_t jerr;
        json_t *root = json_loadb(body ? body : "", len, 0, &jerr);
        json_t *data = json_object_get(root, "data");
        size_t n = json_array_size(data), k = 0;
        char **models = n ? calloc(n, sizeof(char *)) : NULL;
        for (size_t i = 0; models && i < n; i++) {
            const char *id = json_string_value(json_object_get(json_array_get(data, i), "id"));
            if (id)
                models[k++] = strdup(id);
        }
        json_decref(root);
        if (k)
            ig_worker_set_models(w, models, (int)k);
        else {
            free(models);
            ig_warn("worker %s: /v1/models listed no model; it will be sent any model", w->url);
        }
    } else if (status) {
        ig_warn("worker %s: /v1/models answered %d; it will be sent any model", w->url, status);
    } else {
        /* not reachable now: known down until a health check says otherwise */
        atomic_store(&w->health, IG_HEALTH_DOWN);
        ig_warn("worker %s: /v1/models: %s; unhealthy until it answers", w->url, err);
    }
    finish_add(cw);
}

/* Add url: discover its models unless given, then publish. m may be NULL (start-up). */
/* max_inflight < 0: leave the cap as it is (new workers: --worker-max-inflight) */
static void add_worker(const char *url, const char *model_id, int max_inflight, ig_admin_msg *m)
{
    const char *why = "invalid URL";
    ig_worker *w = NULL;
    int rc = ig_worker_new(url, &w, &why);
    if (rc) {
        if (m)
            ig_ctl_reply_error(m, 400, "invalid_url", why);
        else
            ig_err("--worker-urls %s: %s", url, why);
        return;
    }
    ig_worker *existing = ig_registry_find_url(w->url);
    ctl_worker *pending = adding_find(w->url);
    if (existing || pending) {
        ig_worker_unref(w);
        if (existing && max_inflight >= 0)
            atomic_store(&existing->max_inflight, max_inflight); /* the cap can change live */
        if (existing && m)
            ig_ctl_reply(m, 200,
                         m->areal ? areal_registered(existing)
                                  : json_pack("{s:o,s:b}", "worker", ig_worker_json(existing), "created", 0));
        else if (pending && m) {
            m->next = NULL;
            ig_admin_msg **pp = &pending->waiters;
            while (*pp)
                pp = &(*pp)->next;
            *pp = m;
        }
        return;
    }
    atomic_store(&w->max_inflight, max_inflight >= 0 ? max_inflight : (int)ctl.cfg->worker_max_inflight);
    ctl_worker *cw = calloc(1, sizeof(*cw));
    if (!cw || !(cw->hc = ig_httpc_new(&ctl.loop, (struct sockaddr *)&w->addr, w->host_header))) {
        free(cw);
        ig_worker_unref(w);
        if (m)
            ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        return;
    }
    cw->w = w;
    cw->waiters = m;
    if (m)
        m->next = NULL;
    if (model_id) {
        char **models = malloc(sizeof(char *));
        if (models && (models[0] = strdup(model_id)))
            ig_worker_set_models(w, models, 1);
        else
            free(models);
        finish_add(cw);
        return;
    }
    if (ctl.n_adding == ctl.cap_adding) {
        int ncap = ctl.cap_adding ? ctl.cap_adding * 2 : 16;
        ctl_worker **na = realloc(ctl.adding, sizeof(*na) * (size_t)ncap);
        if (!na) {
            finish_add(cw);
            return;
        }
        ctl.adding = na;
        ctl.cap_adding = ncap;
    }
    ctl.adding[ctl.n_adding++] = cw;
    cw->discovering = 1;
    if (!m)
        ctl.initial_pending++;
    ig_httpc_request(cw->hc, "GET", "/v1/models", NULL, NULL, 0, ctl.cfg->discovery_timeout_secs,
                     discovery_cb, cw);
}

static void remove_worker(ig_worker *w, ig_admin_msg *m)
{
    int revoked = ig_areal_worker_removed(w);
    json_t *doc = m->areal
                      ? json_pack("{s:s,s:i}", "status", "ok", "sessions_revoked", revoked)
                      : json_pack("{s:o,s:i}", "removed", ig_worker_json(w), "sessions_revoked", revoked);
    ctl_worker *cw = w->control;
    w->control = NULL;
    if (cw)
        ctl_free(cw);
    ig_registry_remove(w); /* drains: in-flight requests keep their reference */
    ig_info("worker removed; it drains");
    ig_ctl_reply(m, 200, doc);
}

/* ---- health checks: every worker at once, on kept connections ---- */

static void health_cb(void *arg, int status, const char *body, size_t len, const char *err)
{
    ig_worker *w = arg;
    const ig_control_config *cfg = ctl.cfg;
    (void)body;
    (void)len;
    if (err && strcmp(err, "cancelled") == 0)
        return;
    int ok = status >= 200 && status < 300;
    int health = atomic_load(&w->health);
    if (ok) {
        atomic_store(&w->health_fail_streak, 0);
        int streak = atomic_fetch_add(&w->health_ok_streak, 1) + 1;
        if (health == IG_HEALTH_DOWN && streak >= (int)cfg->health_success_threshold) {
            atomic_store(&w->health, IG_HEALTH_UP);
            ig_info("worker %s is healthy again", w->url);
            publish();
        }
    } else {
        atomic_store(&w->health_ok_streak, 0);
        int streak = atomic_fetch_add(&w->health_fail_streak, 1) + 1;
        if (health == IG_HEALTH_UP && streak >= (int)cfg->health_failure_threshold) {
            atomic_store(&w->health, IG_HEALTH_DOWN);
            ig_warn("worker %s is unhealthy: %s%s", w->url, err ? err : "status ",
                    err ? "" : (status >= 500 ? "5xx" : "not 2xx"));
            publish();
        }
    }
}

static void health_round(uv_timer_t *t)
{
    (void)t;
    for (int i = 0; i < ig_registry_count(); i++) {
        ig_worker *w = ig_registry_at(i);
        ctl_worker *cw = w->control;
        if (!cw || ig_httpc_busy(cw->hc))
            continue; /* the previous check is still out: its timeout will count */
        ig_httpc_request(cw->hc, "GET", ctl.cfg->health_check_endpoint, NULL, NULL, 0,
                         ctl.cfg->health_check_timeout_secs, health_cb, w);
    }
}

/* ---- the tick: breakers out of cool-down, pokes, reclamation ---- */

static void tick_cb(uv_timer_t *t)
{
    (void)t;
    int changed = atomic_exchange(&ctl.poked, 0);
    uint64_t now = uv_now(&ctl.loop);
    for (int i = 0; i < ig_registry_count(); i++)
        changed |= ig_breaker_cooldown_over(ig_registry_at(i), now);
    if (changed)
        publish();
    if (ig_epoch_reclaim())
        for (int i = 0; i < ctl.nthreads; i++)
            if (ig_epoch_reader_behind(i))
                ctl.hooks.wake_reader(i);
}

/* The prefix index's upkeep, off the routing path: forget removed workers,
 * and evict the least recently used entries when it is 90% full (to 70%). */
static void prefix_sweep_cb(uv_timer_t *t)
{
    (void)t;
    ig_holders live = {{0, 0}};
    for (int i = 0; i < ig_registry_count(); i++)
        ig_holders_add(&live, ig_registry_at(i)->id);
    size_t used = ig_prefix_sweep(&live, (uint32_t)(uv_now(&ctl.loop) / 100), 90, 70);
    ig_debug("prefix index: %zu of %zu entries in use", used, ig_prefix_capacity());
}

void ig_control_pin_admin(ig_worker *w)
{
    ig_admin_msg *m = calloc(1, sizeof(*m));
    if (!m)
        return; /* the next admin-key request pins instead */
    ig_worker_ref(w);
    m->pin = w;
    ig_control_submit(m);
}

void ig_control_poke(void)
{
    atomic_store(&ctl.poked, 1);
}

/* ---- fleet control broadcasts ---- */

static void wake_loops(void)
{
    for (int i = 0; i < ctl.nthreads; i++)
        ctl.hooks.wake_reader(i); /* queued requests may go now */
}

static void set_model_paused(const char *model, int paused)
{
    int i = 0;
    while (i < ctl.n_paused_models && strcmp(ctl.paused_models[i], model) != 0)
        i++;
    if (paused && i == ctl.n_paused_models) {
        char **v = realloc(ctl.paused_models, sizeof(char *) * (size_t)(ctl.n_paused_models + 1));
        if (v && (v[ctl.n_paused_models] = strdup(model))) {
            ctl.paused_models = v;
            ctl.n_paused_models++;
        }
    } else if (!paused && i < ctl.n_paused_models) {
        free(ctl.paused_models[i]);
        ctl.paused_models[i] = ctl.paused_models[--ctl.n_paused_models];
    }
}

/* Gateway-side pause: new data requests of that scope wait in the admission
 * queue (pause is set before the workers are told; continue after). */
static void gateway_pause(bcast *b, int paused)
{
    if (b->scope_all) {
        ctl.paused_all = paused;
        if (!paused)
            while (ctl.n_paused_models)
                set_model_paused(ctl.paused_models[0], 0);
    } else if (b->model) {
        set_model_paused(b->model, paused);
    } else {
        return; /* one worker: it leaves routing through its own flag */
    }
    ig_registry_set_paused(ctl.paused_all, ctl.paused_models, ctl.n_paused_models);
    publish();
    if (!paused)
        wake_loops();
}

static void bcast_done(ig_fanout *f)
{
    bcast *b = (bcast *)f;
    if (b->kind == IG_BC_CONTINUE)
        gateway_pause(b, 0);
    if (b->kind == IG_BC_SET_VERSION && b->scope_all) {
        ctl.fleet_version = b->version;
        ig_registry_set_fleet_version(b->version, ctl.cfg->exclude_stale_workers);
    }
    if (b->kind == IG_BC_SET_VERSION || b->kind == IG_BC_GET_VERSION || b->kind == IG_BC_PAUSE ||
        b->kind == IG_BC_CONTINUE)
        publish(); /* versions and per-worker pauses change who is routable */
    if (b->kind == IG_BC_CONTINUE)
        wake_loops();
    if (b->raw && b->raw_status) {
        json_decref(f->results);
        ig_ctl_reply_raw(f->m, b->raw_status, b->raw_body ? b->raw_body : "", b->raw_len);
    } else {
        json_t *doc = json_pack("{s:o,s:b,s:I,s:I}", "results", f->results, "ok", !f->failed, "elapsed_ms",
                                (json_int_t)(uv_now(&ctl.loop) - f->start_ms), "fleet_version",
                                (json_int_t)ctl.fleet_version);
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
    f->start_ms = uv_now(&ctl.loop);
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
    it->hc = ig_httpc_new(&ctl.loop, (struct sockaddr *)&w->addr, w->host_header);
    f->pending++;
    int rc = it->hc ? ig_httpc_request(it->hc, method, path, headers, body, len,
                                       ctl.cfg->broadcast_timeout_secs, fanout_cb, it)
                    : -ENOMEM;
    if (rc) /* its callback will not run: answer for it now */
        fanout_cb(it, 0, NULL, 0, rc == -ENOMEM ? "out of memory" : "cannot send the request");
}

void ig_fanout_end(ig_fanout *f)
{
    if (--f->pending == 0)
        f->on_done(f);
}

/* Send the control request to every targeted worker at once: the broadcast
 * takes the slowest worker's time, not the sum. */
static void broadcast(ig_admin_request *req, ig_admin_msg *m)
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
    if (b->kind == IG_BC_PAUSE)
        gateway_pause(b, 1);
    for (int i = 0; i < ig_registry_count(); i++) {
        ig_worker *w = ig_registry_at(i);
        if (req->has_worker && w->id != req->id)
            continue;
        if (req->model && !ig_worker_serves(w, req->model, strlen(req->model)))
            continue;
        ig_fanout_send(&b->f, w, req->bc_method == HTTP_GET ? "GET" : "POST", req->bc_path, NULL, m->body,
                       m->body_len);
    }
    ig_fanout_end(&b->f);
}

/* ---- the inbox ---- */

static void handle_admin_msg(ig_admin_msg *m);

static void inbox_cb(ig_wakeup *a)
{
    (void)a;
    ig_inbox_node *n = ig_inbox_take(&ctl.inbox);
    while (n) {
        ig_inbox_node *next = n->next;
        handle_admin_msg(ig_container_of(n, ig_admin_msg, node));
        n = next;
    }
    if (atomic_load(&ctl.stopping)) {
        uv_stop(&ctl.loop);
    }
}

void ig_control_submit(ig_admin_msg *m)
{
    ig_inbox_push(&ctl.inbox, &m->node);
}

/* ---- admin requests ---- */

static void handle_admin_msg(ig_admin_msg *m)
{
    if (m->pin) {
        if (!atomic_load(&m->pin->removed))
            ig_areal_pin_admin(m->pin);
        ig_admin_msg_free(m);
        return;
    }
    ig_admin_request req;
    int rc = ig_admin_parse(m->method, m->target, m->body, m->body_len, &req);
    m->areal = req.areal;
    if (rc) {
        ig_ctl_reply_error(m, req.status, req.code, req.message);
        ig_admin_request_free(&req);
        return;
    }
    switch (req.op) {
    case IG_ADMIN_LIST: {
        json_t *arr = json_array(), *urls = json_array();
        for (int i = 0; i < ig_registry_count(); i++) {
            json_array_append_new(arr, worker_json_all(ig_registry_at(i)));
            json_array_append_new(urls, json_string(ig_registry_at(i)->url));
        }
        ig_ctl_reply(m, 200,
                     json_pack("{s:o,s:o,s:i}", "workers", arr, "urls", urls, "total", ig_registry_count()));
        break;
    }
    case IG_ADMIN_GET:
    case IG_ADMIN_DELETE: {
        ig_worker *w = req.url ? ig_ctl_find_url(req.url) : ig_registry_find_id(req.id);
        if (!w)
            ig_ctl_reply_error(m, 404, "worker_not_found", "no such worker");
        else if (req.op == IG_ADMIN_GET)
            ig_ctl_reply(m, 200, ig_worker_json(w));
        else
            remove_worker(w, m);
        break;
    }
    case IG_ADMIN_ADD:
        add_worker(req.url, req.model_id, req.has_max_inflight ? req.max_inflight : -1, m);
        break;
    case IG_ADMIN_BROADCAST: broadcast(&req, m); break;
    default: ig_areal_handle(&req, m); break;
    }
    ig_admin_request_free(&req);
}

/* ---- life cycle ---- */

static void control_main(void *arg)
{
    (void)arg;
    uv_run(&ctl.loop, UV_RUN_DEFAULT);
}

int ig_control_start(const ig_control_config *cfg, int nthreads, const ig_control_hooks *hooks)
{
    ctl.cfg = cfg;
    ctl.hooks = *hooks;
    ctl.nthreads = nthreads;
    int rc = uv_loop_init(&ctl.loop);
    if (rc)
        return rc;
    ig_inbox_init(&ctl.inbox, &ctl.inbox_wake);
    if ((rc = ig_wakeup_init(&ctl.loop, &ctl.inbox_wake, inbox_cb)))
        return rc;
    uv_timer_init(&ctl.loop, &ctl.tick);
    uv_timer_init(&ctl.loop, &ctl.health);
    uv_timer_init(&ctl.loop, &ctl.prefix_sweep);

    /* start-up workers, discovered concurrently on this thread before any loop thread runs */
    for (int i = 0; i < cfg->n_worker_urls; i++)
        add_worker(cfg->worker_urls[i], NULL, (int)cfg->worker_max_inflight, NULL);
    while (ctl.initial_pending > 0)
        uv_run(&ctl.loop, UV_RUN_ONCE);
    ig_epoch_drain(); /* no reader exists yet */

    uv_timer_start(&ctl.tick, tick_cb, TICK_MS, TICK_MS);
    if (cfg->cache_aware && cfg->eviction_interval_secs > 0) {
        uint64_t ms = (uint64_t)(cfg->eviction_interval_secs * 1000.0);
        uv_timer_start(&ctl.prefix_sweep, prefix_sweep_cb, ms, ms);
    }
    if (cfg->health_check_interval_secs > 0) {
        uint64_t ms = (uint64_t)(cfg->health_check_interval_secs * 1000.0);
        uv_timer_start(&ctl.health, health_round, ms, ms);
    }
    return uv_thread_create(&ctl.tid, control_main, NULL);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void ig_control_stop(void)
{
    atomic_store(&ctl.stopping, 1);
    ig_wakeup_send(&ctl.inbox_wake);
    uv_thread_join(&ctl.tid);
    /* the loop threads are gone: close what is left here, then the registry */
    for (int i = 0; i < ig_registry_count(); i++) {
        ig_worker *w = ig_registry_at(i);
        if (w->control) {
            ctl_free(w->control);
            w->control = NULL;
        }
    }
    for (int i = 0; i < ctl.n_adding; i++) {
        ig_worker_unref(ctl.adding[i]->w);
        ctl_free(ctl.adding[i]);
    }
    free(ctl.adding);
    ig_wakeup_close(&ctl.inbox_wake);
    uv_walk(&ctl.loop, close_walk, NULL);
    uv_run(&ctl.loop, UV_RUN_DEFAULT);
    ig_wakeup_release(&ctl.inbox_wake); /* the loop threads, its senders, are gone */
    uv_loop_close(&ctl.loop);
    for (ig_inbox_node *n = ig_inbox_take(&ctl.inbox), *next; n; n = next) {
        next = n->next;
        ig_admin_msg_free(ig_container_of(n, ig_admin_msg, node));
    }
    ig_inbox_destroy(&ctl.inbox);
    ig_areal_shutdown();
    ig_registry_shutdown();
}
