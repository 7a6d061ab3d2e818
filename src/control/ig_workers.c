/* The fleet's members: adding a worker (discovering its models, all at once
 * at start), removing it, its JSON, and the health rounds (every worker at
 * once, on kept connections). Control thread only. */
#include <errno.h>
#include <jansson.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "../admission/ig_admission.h"
#include "../api/ig_admin.h"
#include "../core/ig_log.h"
#include "../health/ig_breaker.h"
#include "../registry/ig_registry.h"
#include "../upstream/ig_httpc.h"
#include "ig_control_int.h"

/* Control-thread state of a worker, hung off ig_worker.control. */
typedef struct ctl_worker {
    ig_worker *w;
    ig_httpc *hc;          /* discovery and health checks, one kept connection */
    ig_admin_msg *waiters; /* admin adds waiting for discovery to finish */
    int discovering;
} ctl_worker;

static ctl_worker **adding; /* workers being discovered, not yet in the registry */
static int n_adding, cap_adding;
static int initial_pending; /* start-up workers still being discovered */

/* ---- worker JSON ---- */

static const char *breaker_name(int b)
{
    return b == IG_BREAKER_OPEN ? "open" : b == IG_BREAKER_HALF_OPEN ? "half_open" : "closed";
}

static const char *role_name(int role)
{
    return role == IG_ROLE_PREFILL ? "prefill" : role == IG_ROLE_DECODE ? "decode" : "regular";
}

static const char *group_name(int g)
{
    return g > 0 ? ig_ctl_cfg()->groups[g].name : "default";
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
    json_t *j = json_pack(
        "{s:s,s:s,s:o,s:b,s:s,s:s,s:b,s:I,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I}}", "id", id, "url",
        w->url, "models", w->any_model ? (json_decref(models), json_null()) : models, "any_model",
        w->any_model, "health", atomic_load(&w->health) == IG_HEALTH_UP ? "healthy" : "unhealthy", "breaker",
        breaker_name(atomic_load(&w->breaker)), "routable", ig_worker_routable(w), "inflight",
        (json_int_t)ig_worker_inflight(w), "max_inflight", atomic_load(&w->max_inflight),
        "effective_max_inflight", ig_admission_effective_cap(w, uv_now(ig_ctl_loop())), "requests",
        (json_int_t)atomic_load(&s->requests), "failures", (json_int_t)atomic_load(&s->failures),
        "connect_failures", (json_int_t)atomic_load(&s->connect_failures), "responses_5xx",
        (json_int_t)atomic_load(&s->responses_5xx), "retries", (json_int_t)atomic_load(&s->retries),
        "connections", "opened", (json_int_t)atomic_load(&s->conns_opened), "reused",
        (json_int_t)atomic_load(&s->conns_reused), "closed", (json_int_t)atomic_load(&s->conns_closed));
    json_object_set_new(j, "group", json_string(group_name(w->group)));
    json_object_set_new(j, "worker_type", json_string(role_name(w->role)));
    if (ig_ctl_cfg()->n_nats) /* what the affinity policies count on top of inflight */
        json_object_set_new(j, "remote_inflight", json_integer(atomic_load(&w->remote_inflight)));
    json_object_set_new(j, "weight_version", json_integer(atomic_load(&w->version)));
    json_object_set_new(j, "bootstrap_port",
                        w->bootstrap_port ? json_integer(w->bootstrap_port) : json_null());
    int np = atomic_load(&w->n_procs);
    if (np) { /* --upstream-process-header: the processes its answers named */
        json_t *procs = json_array();
        for (int i = 0; i < np; i++)
            json_array_append_new(procs,
                                  json_pack("{s:i,s:i}", "inflight", atomic_load(&w->procs[i].inflight),
                                            "connections", atomic_load(&w->procs[i].conns)));
        json_object_set_new(j, "processes", procs);
    }
    return j;
}

/* POST /workers, as sgl-model-gateway answers it (202 with where the worker
 * is), with infergate's own fields too: the worker is up already. */
static json_t *accepted(ig_worker *w)
{
    char id[32], loc[48];
    snprintf(id, sizeof(id), "w%llu", (unsigned long long)w->id);
    snprintf(loc, sizeof(loc), "/workers/%s", id);
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:b}", "status", "accepted", "worker_id", id, "url", w->url,
                     "location", loc, "message", "worker added", "worker", ig_worker_json(w), "created", 1);
}

static void exists_reply(ig_admin_msg *m, ig_worker *w)
{
    char msg[400];
    snprintf(msg, sizeof(msg), "worker %s exists already as w%llu (change its cap with PUT /workers/w%llu)",
             w->url, (unsigned long long)w->id, (unsigned long long)w->id);
    ig_ctl_reply_error(m, 409, "worker_exists", msg);
}

/* The same, with AReaL's router field names added (worker_id, addr, healthy,
 * active_requests), so its controller reads our /workers unchanged. */
json_t *ig_ctl_worker_json_all(const ig_worker *w)
{
    json_t *j = ig_worker_json(w);
    json_object_set(j, "worker_id", json_object_get(j, "id"));
    json_object_set(j, "addr", json_object_get(j, "url"));
    json_object_set_new(j, "healthy", json_boolean(atomic_load(&((ig_worker *)w)->health) == IG_HEALTH_UP));
    json_object_set_new(j, "active_requests", json_integer(ig_worker_inflight(w)));
    /* and sgl-model-gateway's */
    json_object_set_new(j, "is_healthy",
                        json_boolean(atomic_load(&((ig_worker *)w)->health) == IG_HEALTH_UP));
    json_object_set_new(j, "load", json_integer(ig_worker_inflight(w)));
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
    for (int i = 0; i < n_adding; i++)
        if (adding[i] == cw) {
            adding[i] = adding[--n_adding];
            return;
        }
}

static ctl_worker *adding_find(const char *url)
{
    for (int i = 0; i < n_adding; i++)
        if (strcmp(adding[i]->w->url, url) == 0)
            return adding[i];
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
            w->group       ? group_name(w->group)
            : w->any_model ? "any model"
                           : w->models[0],
            atomic_load(&w->health) == IG_HEALTH_UP ? "healthy" : "unhealthy until it answers");
    int first = 1;
    while (m) {
        ig_admin_msg *next = m->next;
        m->next = NULL;
        if (m->areal)
            ig_ctl_reply(m, 200, areal_registered(w));
        else if (m->rest && !first)
            exists_reply(m, w);
        else if (m->rest)
            ig_ctl_reply(m, 202, accepted(w));
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
    if (initial_pending > 0)
        initial_pending--;
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
    } else if (status == 404) {
        /* not an OpenAI server (a trial server behind --forward-paths): nothing to warn of */
        ig_info("worker %s: no /v1/models; it will be sent any model", w->url);
    } else if (status) {
        ig_warn("worker %s: /v1/models answered %d; it will be sent any model", w->url, status);
    } else {
        /* not reachable now: known down until a health check says otherwise */
        atomic_store(&w->health, IG_HEALTH_DOWN);
        ig_warn("worker %s: /v1/models: %s; unhealthy until it answers", w->url, err);
    }
    finish_add(cw);
}

ig_httpc *ig_ctl_httpc_new(const ig_worker *w)
{
    return ig_httpc_new(ig_ctl_loop(), (const struct sockaddr *)&w->addr, w->host_header,
                        w->tls ? w->host : NULL);
}

int ig_ctl_send(ig_httpc *c, const ig_worker *w, const char *method, const char *path, const char *headers,
                const char *body, size_t len, double timeout_secs, ig_httpc_cb cb, void *arg)
{
    char full[2048], hdrs[2048];
    size_t n = ig_worker_path_prefix(w, path, strlen(path));
    if (n) {
        if (snprintf(full, sizeof(full), "%.*s%s", (int)n, w->base_path, path) >= (int)sizeof(full))
            return -E2BIG;
        path = full;
    }
    if (w->auth_line && !(headers && strncasecmp(headers, "authorization:", 14) == 0)) {
        if (snprintf(hdrs, sizeof(hdrs), "%s%s", w->auth_line, headers ? headers : "") >= (int)sizeof(hdrs))
            return -E2BIG;
        headers = hdrs;
    }
    return ig_httpc_request(c, method, path, headers, body, len, timeout_secs, cb, arg);
}

/* Add url: discover its models unless given, then publish. m may be NULL (start-up). */
/* max_inflight < 0: leave the cap as it is (new workers: --worker-max-inflight) */
int ig_ctl_group_index(const char *name)
{
    const ig_control_config *cfg = ig_ctl_cfg();
    if (!name || !*name || strcmp(name, "default") == 0)
        return 0;
    for (int g = 1; g < cfg->n_groups; g++)
        if (strcmp(cfg->groups[g].name, name) == 0)
            return g;
    return -1;
}

int ig_ctl_worker_from_config(const ig_worker *w)
{
    const ig_control_config *cfg = ig_ctl_cfg();
    if (w->group <= 0 || w->group >= cfg->n_groups)
        return 0;
    for (int i = 0; i < cfg->groups[w->group].n_worker_urls; i++) {
        char norm[1200];
        if (!ig_url_normalize(cfg->groups[w->group].worker_urls[i], norm, sizeof(norm)) &&
            !strcmp(norm, w->url))
            return 1;
    }
    return 0;
}

void ig_ctl_add_worker(const ig_ctl_worker_spec *spec, ig_admin_msg *m)
{
    const char *url = spec->url, *model_id = spec->model_id, *api_key = spec->api_key;
    int max_inflight = spec->max_inflight, group = spec->group;
    const char *why = "invalid URL";
    ig_worker *w = NULL;
    char *https = NULL;
    if (ig_ctl_cfg()->https_by_default && !strstr(url, "://") && asprintf(&https, "https://%s", url) > 0)
        url = https;
    int rc = ig_worker_new(url, &w, &why);
    free(https);
    if (!rc && (api_key || group == 0) &&
        ig_worker_set_key(w, api_key ? api_key : ig_ctl_cfg()->worker_api_key)) {
        ig_worker_unref(w);
        rc = -EINVAL;
        why = "the worker key has a control character";
    }
    if (rc) {
        if (m)
            ig_ctl_reply_error(m, 400, "invalid_url", why);
        else
            ig_err("--worker-urls %s: %s", url, why);
        return;
    }
    w->group = group;
    w->role = spec->role;
    w->bootstrap_port = spec->bootstrap_port;
    ig_worker *existing = ig_registry_find_url(w->url);
    ctl_worker *pending = adding_find(w->url);
    ig_worker *known = existing ? existing : pending ? pending->w : NULL;
    if (known && known->role != w->role) {
        char msg[200];
        snprintf(msg, sizeof(msg), "this worker is registered as a %s worker already (remove it first)",
                 role_name(known->role));
        ig_worker_unref(w);
        if (m)
            ig_ctl_reply_error(m, 409, "worker_in_other_role", msg);
        else
            ig_err("worker %s: %s", url, msg);
        return;
    }
    if ((existing && existing->group != group) || (pending && pending->w->group != group)) {
        ig_worker_unref(w);
        char msg[200];
        snprintf(msg, sizeof(msg), "this worker is in group '%s' already",
                 group_name(existing ? existing->group : pending->w->group));
        if (m)
            ig_ctl_reply_error(m, 409, "worker_in_other_group", msg);
        else
            ig_err("worker %s: %s", url, msg);
        return;
    }
    if (existing || pending) {
        ig_worker_unref(w);
        if (existing && m &&
            m->rest) { /* sgl's rule: a repeat is a conflict (caps: PUT/PATCH /workers/{id}) */
            exists_reply(m, existing);
            return;
        }
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
    const ig_control_config *cfg = ig_ctl_cfg();
    int group_cap = group > 0 ? cfg->groups[group].worker_max_inflight : -1;
    atomic_store(&w->max_inflight, max_inflight >= 0 ? max_inflight
                                   : group_cap >= 0  ? group_cap
                                                     : (int)cfg->worker_max_inflight);
    ctl_worker *cw = calloc(1, sizeof(*cw));
    if (!cw || !(cw->hc = ig_ctl_httpc_new(w))) {
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
    if (group > 0) { /* a named group takes forwarded paths only: no model to discover */
        finish_add(cw);
        return;
    }
    if (model_id) {
        char **models = malloc(sizeof(char *));
        if (models && (models[0] = strdup(model_id)))
            ig_worker_set_models(w, models, 1);
        else
            free(models);
        finish_add(cw);
        return;
    }
    if (n_adding == cap_adding) {
        int ncap = cap_adding ? cap_adding * 2 : 16;
        ctl_worker **na = realloc(adding, sizeof(*na) * (size_t)ncap);
        if (!na) {
            finish_add(cw);
            return;
        }
        adding = na;
        cap_adding = ncap;
    }
    adding[n_adding++] = cw;
    cw->discovering = 1;
    if (!m)
        initial_pending++;
    ig_ctl_send(cw->hc, w, "GET", "/v1/models", NULL, NULL, 0, ig_ctl_cfg()->discovery_timeout_secs,
                discovery_cb, cw);
}

void ig_ctl_remove_worker(ig_worker *w, ig_admin_msg *m)
{
    int revoked = ig_areal_worker_removed(w);
    json_t *doc = !m ? NULL
                  : m->areal
                      ? json_pack("{s:s,s:i}", "status", "ok", "sessions_revoked", revoked)
                      : json_pack("{s:o,s:i}", "removed", ig_worker_json(w), "sessions_revoked", revoked);
    ctl_worker *cw = w->control;
    w->control = NULL;
    if (cw)
        ctl_free(cw);
    ig_registry_remove(w); /* drains: in-flight requests keep their reference */
    ig_info("worker removed; it drains");
    if (m)
        ig_ctl_reply(m, 200, doc);
}

/* ---- health checks: every worker at once, on kept connections ---- */

static void health_cb(void *arg, int status, const char *body, size_t len, const char *err)
{
    ig_worker *w = arg;
    const ig_control_config *cfg = ig_ctl_cfg();
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
            ig_ctl_publish();
        }
    } else {
        atomic_store(&w->health_ok_streak, 0);
        int streak = atomic_fetch_add(&w->health_fail_streak, 1) + 1;
        if (health == IG_HEALTH_UP && streak >= (int)cfg->health_failure_threshold) {
            atomic_store(&w->health, IG_HEALTH_DOWN);
            ig_warn("worker %s is unhealthy: %s%s", w->url, err ? err : "status ",
                    err ? "" : (status >= 500 ? "5xx" : "not 2xx"));
            ig_ctl_publish();
        }
    }
}

void ig_ctl_health_round(uv_timer_t *t)
{
    (void)t;
    for (int i = 0; i < ig_registry_count(); i++) {
        ig_worker *w = ig_registry_at(i);
        ctl_worker *cw = w->control;
        if (!cw || ig_httpc_busy(cw->hc))
            continue; /* the previous check is still out: its timeout will count */
        const ig_control_config *cfg = ig_ctl_cfg();
        const char *path = w->group > 0 && cfg->groups[w->group].health_check_endpoint
                               ? cfg->groups[w->group].health_check_endpoint
                               : cfg->health_check_endpoint;
        ig_ctl_send(cw->hc, w, "GET", path, NULL, NULL, 0, cfg->health_check_timeout_secs, health_cb, w);
    }
}

int ig_ctl_initial_pending(void)
{
    return initial_pending;
}

void ig_ctl_workers_shutdown(void)
{
    for (int i = 0; i < ig_registry_count(); i++) {
        ig_worker *wk = ig_registry_at(i);
        if (wk->control) {
            ctl_free(wk->control);
            wk->control = NULL;
        }
    }
    for (int i = 0; i < n_adding; i++) {
        ig_worker_unref(adding[i]->w);
        ctl_free(adding[i]);
    }
    free(adding);
    adding = NULL;
    n_adding = cap_adding = 0;
}
