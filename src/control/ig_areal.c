/* AReaL's router and gateway endpoints on the control thread: sessions
 * pinned to workers, models registered onto workers, /route, and the two
 * session calls that go through to a worker (start_session, export). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/ig_log.h"
#include "../http/ig_http.h"
#include "../registry/ig_sessions.h"
#include "../upstream/ig_httpc.h"
#include "ig_control_int.h"

/* registered models: routes[i] (read by snapshot builds) and what AReaL keeps with them */
typedef struct model_info {
    char *url;     /* an external provider, or NULL */
    char *api_key; /* its key, or NULL */
} model_info;

static ig_model_route *routes;
static model_info *infos;
static int n_routes;

/* AReaL's session groups (start_session's group_id): which sessions to
 * revoke together on /remove_session {group_id} or an export naming it.
 * Control thread only; a group lives until then or until its worker goes. */
typedef struct group {
    char *id;
    const ig_worker *w; /* identity only: its sessions are revoked with it */
    char **sids;
    int n;
} group;

static group *groups;
static int n_groups, cap_groups;

static int group_find(const char *id)
{
    for (int i = 0; i < n_groups; i++)
        if (strcmp(groups[i].id, id) == 0)
            return i;
    return -1;
}

static void group_drop(int i)
{
    for (int k = 0; k < groups[i].n; k++)
        free(groups[i].sids[k]);
    free(groups[i].sids);
    free(groups[i].id);
    groups[i] = groups[--n_groups];
}

/* Remember a group's session ids (a repeat of the id replaces it). 0 or -ENOMEM. */
static int group_put(const char *id, const ig_worker *w, char *const *sids, int n)
{
    int i = group_find(id);
    if (i >= 0)
        group_drop(i);
    if (n_groups == cap_groups) {
        int cap = cap_groups ? cap_groups * 2 : 64;
        group *v = realloc(groups, sizeof(*v) * (size_t)cap);
        if (!v)
            return -ENOMEM;
        groups = v;
        cap_groups = cap;
    }
    group g = {.id = strdup(id), .w = w, .sids = calloc((size_t)(n ? n : 1), sizeof(char *)), .n = 0};
    if (!g.id || !g.sids) {
        free(g.id);
        free(g.sids);
        return -ENOMEM;
    }
    for (; g.n < n; g.n++)
        if (!(g.sids[g.n] = strdup(sids[g.n]))) {
            groups[n_groups++] = g;
            group_drop(n_groups - 1);
            return -ENOMEM;
        }
    groups[n_groups++] = g;
    return 0;
}

/* Revoke a session by id unless it is the admin key's persistent one. */
static int revoke_session(const char *sid)
{
    size_t len = strlen(sid);
    const ig_session *s = ig_sessions_by_id(sid, len);
    return s && !s->persistent && ig_sessions_remove_id(sid, len);
}

/* Revoke a group's sessions and forget it; how many were live. */
static int group_revoke(const char *id)
{
    int i = group_find(id), n = 0;
    if (i < 0)
        return 0;
    for (int k = 0; k < groups[i].n; k++)
        n += revoke_session(groups[i].sids[k]);
    group_drop(i);
    return n;
}

static int admin_key_is(const char *key, size_t len)
{
    return ig_http_secret_is(key, len, ig_ctl_cfg()->admin_api_key);
}

static int find_route(const char *name)
{
    for (int i = 0; i < n_routes; i++)
        if (strcmp(routes[i].name, name) == 0)
            return i;
    return -1;
}

static void route_free(int i)
{
    for (int k = 0; k < routes[i].n; k++)
        ig_worker_unref(routes[i].workers[k]);
    free(routes[i].workers);
    free(routes[i].name);
    free(infos[i].url);
    free(infos[i].api_key);
}

static void route_drop(int i)
{
    route_free(i);
    routes[i] = routes[--n_routes];
    infos[i] = infos[n_routes];
    ig_registry_set_model_routes(routes, n_routes);
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static void reply_route(ig_admin_msg *m, ig_worker *w, int route)
{
    ig_ctl_reply(m, 200,
                 json_pack("{s:s,s:o,s:o}", "worker_addr", w->url, "url",
                           str_or_null(route >= 0 ? infos[route].url : NULL), "api_key",
                           str_or_null(route >= 0 ? infos[route].api_key : NULL)));
}

/* "authorization: <as the client sent it>\r\n" for workers that check the admin key */
static char *auth_header(const ig_admin_msg *m)
{
    char *h = NULL;
    if (m->auth && asprintf(&h, "authorization: %s\r\n", m->auth) < 0)
        h = NULL;
    return h;
}

void ig_areal_pin_admin(ig_worker *w)
{
    const char *admin = ig_ctl_cfg()->admin_api_key;
    if (!admin || !*admin || ig_sessions_by_key(admin, strlen(admin)))
        return; /* pinned already: the first pick stays */
    if (ig_sessions_put(admin, strlen(admin), IG_HITL_SESSION_ID, strlen(IG_HITL_SESSION_ID), w, 1))
        ig_err("sessions: out of memory pinning the admin key");
}

/* AReaL's /route: a pinned session first, then a pick for the model; the
 * admin key's pick becomes its persistent session. */
static void route(ig_admin_request *req, ig_admin_msg *m)
{
    const ig_session *s = req->session_id ? ig_sessions_by_id(req->session_id, strlen(req->session_id))
                          : req->key      ? ig_sessions_by_key(req->key, strlen(req->key))
                                          : NULL;
    if (s) {
        reply_route(m, s->w, -1);
        return;
    }
    if (req->session_id && !n_routes) { /* with registered models AReaL routes by model instead */
        ig_ctl_reply_error(m, 404, "session_not_found", "Session not found");
        return;
    }
    /* AReaL's model step: the named registered model, else the first one registered */
    int ri = req->model ? find_route(req->model) : -1, known = 1;
    if (ri < 0 && n_routes)
        ri = 0;
    if (req->key && !admin_key_is(req->key, strlen(req->key))) {
        ig_ctl_reply_error(m, 404, "unknown_api_key", "Unknown API key");
        return;
    }
    ig_worker *w = ig_ctl_pick(ri >= 0 ? routes[ri].name : req->model, &known);
    if (!known && req->model) {
        char msg[300];
        snprintf(msg, sizeof(msg), "Model '%.200s' not found", req->model);
        ig_ctl_reply_error(m, 404, "model_not_found", msg);
        return;
    }
    if (!w) {
        ig_ctl_reply_error(m, 503, "no_workers", "No registered workers");
        return;
    }
    if (req->key &&
        ig_sessions_put(req->key, strlen(req->key), IG_HITL_SESSION_ID, strlen(IG_HITL_SESSION_ID), w, 1)) {
        ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        return;
    }
    reply_route(m, w, ri);
}

static void register_session(ig_admin_request *req, ig_admin_msg *m)
{
    ig_worker *w = ig_ctl_find_url(req->url);
    if (!w) {
        ig_ctl_reply_error(m, 404, "worker_not_found",
                           "worker_addr is not a registered worker (register it first)");
        return;
    }
    int rc = 0;
    if (req->group_id) { /* AReaL's current shape: a group of sessions */
        for (int i = 0; !rc && i < req->n_sess; i++)
            rc = ig_sessions_put(req->sess_keys[i], strlen(req->sess_keys[i]), req->sess_ids[i],
                                 strlen(req->sess_ids[i]), w,
                                 admin_key_is(req->sess_keys[i], strlen(req->sess_keys[i])));
        rc = rc ? rc : group_put(req->group_id, w, req->sess_ids, req->n_sess);
    } else {
        rc = ig_sessions_put(req->key, strlen(req->key), req->session_id, strlen(req->session_id), w,
                             admin_key_is(req->key, strlen(req->key)));
    }
    if (rc) {
        ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        return;
    }
    ig_ctl_reply(m, 200, json_pack("{s:s}", "status", "ok"));
}

static void remove_session(ig_admin_request *req, ig_admin_msg *m)
{
    if (req->group_id) { /* AReaL's current shape */
        int known = group_find(req->group_id) >= 0;
        group_revoke(req->group_id);
        ig_ctl_reply(m, 200, json_pack("{s:s,s:b}", "status", "ok", "removed", known));
        return;
    }
    const ig_session *s = ig_sessions_by_id(req->session_id, strlen(req->session_id));
    int persistent = s && s->persistent, removed = revoke_session(req->session_id);
    ig_ctl_reply(m, 200,
                 json_pack("{s:s,s:b,s:b}", "status", "ok", "removed", removed, "persistent", persistent));
}

/* ---- models ---- */

typedef struct model_reg {
    ig_fanout f; /* first */
    char *name, *url, *api_key;
    ig_worker **ws;
    int n;
} model_reg;

static void model_reg_free(model_reg *r)
{
    for (int i = 0; i < r->n; i++)
        if (r->ws[i])
            ig_worker_unref(r->ws[i]);
    free(r->ws);
    free(r->name);
    free(r->url);
    free(r->api_key);
    free(r);
}

static void model_reg_done(ig_fanout *f)
{
    model_reg *r = (model_reg *)f;
    if (f->failed) {
        ig_ctl_reply(f->m, 502,
                     json_pack("{s:{s:s,s:s,s:s},s:o}", "error", "message", "Data proxy registration failed",
                               "type", "upstream_error", "code", "registration_failed", "details",
                               f->results));
        model_reg_free(r);
        return;
    }
    json_decref(f->results);
    int i = find_route(r->name);
    if (i >= 0) {
        route_free(i);
    } else {
        ig_model_route *nr = realloc(routes, sizeof(*nr) * (size_t)(n_routes + 1));
        if (nr)
            routes = nr;
        model_info *ni = nr ? realloc(infos, sizeof(*ni) * (size_t)(n_routes + 1)) : NULL;
        if (!ni) {
            ig_ctl_reply_error(f->m, 503, "out_of_memory", "out of memory");
            model_reg_free(r);
            return;
        }
        infos = ni;
        i = n_routes++;
    }
    json_t *addrs = json_array();
    for (int k = 0; k < r->n; k++)
        json_array_append_new(addrs, json_string(r->ws[k]->url));
    routes[i] = (ig_model_route){.name = r->name, .workers = r->ws, .n = r->n};
    infos[i] = (model_info){.url = r->url, .api_key = r->api_key};
    ig_registry_set_model_routes(routes, n_routes);
    ig_ctl_publish();
    ig_info("model %s registered on %d workers", r->name, r->n);
    ig_ctl_reply(f->m, 200,
                 json_pack("{s:s,s:s,s:o}", "status", "ok", "model", r->name, "data_proxy_addrs", addrs));
    free(r); /* its strings and workers now belong to the route */
}

/* AReaL's gateway tells each data proxy about the model, then its router
 * routes the model to them: both here, the registration only if every
 * worker took it. */
static void register_model(ig_admin_request *req, ig_admin_msg *m)
{
    model_reg *r = calloc(1, sizeof(*r));
    int cap = req->n_addrs ? req->n_addrs : ig_registry_count();
    if (!r || !(r->ws = calloc((size_t)(cap ? cap : 1), sizeof(ig_worker *)))) {
        free(r);
        ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        return;
    }
    for (int i = 0; i < req->n_addrs; i++) {
        ig_worker *w = ig_ctl_find_url(req->addrs[i]);
        if (!w) {
            char msg[300];
            snprintf(msg, sizeof(msg), "'%.200s' is not a registered worker", req->addrs[i]);
            model_reg_free(r);
            ig_ctl_reply_error(m, 404, "worker_not_found", msg);
            return;
        }
        ig_worker_ref(w);
        r->ws[r->n++] = w;
    }
    for (int i = 0; !req->n_addrs && i < ig_registry_count(); i++) {
        ig_worker *w = ig_registry_at(i);
        if (ig_worker_routable(w)) {
            ig_worker_ref(w);
            r->ws[r->n++] = w;
        }
    }
    if (r->n == 0) {
        model_reg_free(r);
        ig_ctl_reply_error(m, 503, "no_healthy_workers", "No healthy workers");
        return;
    }
    r->name = strdup(req->model);
    r->url = req->ext_url ? strdup(req->ext_url) : NULL;
    r->api_key = req->key ? strdup(req->key) : NULL;
    json_t *doc = json_pack("{s:s,s:s,s:s,s:o}", "name", req->model, "url", req->ext_url ? req->ext_url : "",
                            "model", req->model, "api_key", str_or_null(req->key));
    char *body = json_dumps(doc, JSON_COMPACT), *hdr = auth_header(m);
    json_decref(doc);
    ig_fanout_init(&r->f, m, NULL, model_reg_done);
    for (int i = 0; body && i < r->n; i++)
        ig_fanout_send(&r->f, r->ws[i], "POST", "/register_model", hdr, body, strlen(body));
    if (!body)
        r->f.failed = 1;
    free(body);
    free(hdr);
    ig_fanout_end(&r->f);
}

static void remove_model(ig_admin_request *req, ig_admin_msg *m)
{
    int i = find_route(req->model);
    if (i < 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "External model '%.200s' not found", req->model);
        ig_ctl_reply_error(m, 404, "model_not_found", msg);
        return;
    }
    route_drop(i);
    ig_ctl_publish();
    ig_ctl_reply(m, 200, json_pack("{s:s,s:s}", "status", "ok", "name", req->model));
}

/* ---- start_session and export: through to one worker ---- */

typedef struct exchange {
    ig_admin_msg *m;
    ig_worker *w; /* referenced */
    ig_httpc *hc;
    int export;
    char *session_id;      /* export {session_id}: removed on 200 */
    ig_admin_request *req; /* export {session_ids, group_id}: what to revoke on 200 (taken) */
} exchange;

/* A worker must not make a session out of a key that already means
 * something here: the gateway's own keys would route every client (or the
 * admin) to it, and another worker's key would steal that session. NULL
 * when the key may be pinned to w, else why not. */
static const char *session_key_refused(const char *key, const ig_worker *w)
{
    size_t len = strlen(key);
    const ig_control_config *cfg = ig_ctl_cfg();
    if (!len)
        return "is empty";
    if (ig_http_secret_is(key, len, cfg->api_key) || ig_http_secret_is(key, len, cfg->admin_api_key) ||
        ig_http_secret_is(key, len, cfg->metrics_api_key))
        return "is one of the gateway's own keys";
    const ig_session *s = ig_sessions_by_key(key, len);
    if (s && s->w != w)
        return "is pinned to another worker";
    return NULL;
}

/* start_session's 201: AReaL's {group_id, sessions: [{session_id,
 * session_api_key}]} (or the older {session_id, api_key}); every key is
 * checked before any is pinned. NULL, or why the answer is refused. */
static const char *pin_started(json_t *doc, ig_worker *w)
{
    static char why[240];
    json_t *list = json_object_get(doc, "sessions"), *one = NULL;
    const char *gid = json_string_value(json_object_get(doc, "group_id"));
    if (!json_is_array(list)) { /* the older shape: one session */
        one = json_pack("[{s:O?,s:O?}]", "session_id", json_object_get(doc, "session_id"), "session_api_key",
                        json_object_get(doc, "api_key"));
        list = one;
    }
    size_t i, n = json_array_size(list);
    json_t *e;
    const char *res = NULL;
    char **sids = calloc(n ? n : 1, sizeof(char *));
    json_array_foreach(list, i, e)
    {
        const char *key = json_string_value(json_object_get(e, "session_api_key"));
        const char *sid = json_string_value(json_object_get(e, "session_id"));
        const char *bad = !key || !sid ? "is missing" : session_key_refused(key, w);
        if (bad) {
            ig_warn("worker %s: start_session answered a key that %s: nothing pinned", w->url, bad);
            snprintf(why, sizeof(why), "worker %.100s answered a session key that %s", w->url, bad);
            res = why;
            break;
        }
        if (sids)
            sids[i] = (char *)sid;
    }
    if (!res && atomic_load(&w->removed))
        res = "the worker left while the session started";
    json_array_foreach(list, i, e)
    {
        if (res)
            break;
        const char *key = json_string_value(json_object_get(e, "session_api_key"));
        const char *sid = json_string_value(json_object_get(e, "session_id"));
        if (ig_sessions_put(key, strlen(key), sid, strlen(sid), w, 0))
            res = "out of memory";
    }
    if (!res && gid && (!sids || group_put(gid, w, sids, (int)n)))
        res = "out of memory";
    free(sids);
    json_decref(one);
    return res;
}

static void exchange_cb(void *arg, int status, const char *body, size_t len, const char *err)
{
    exchange *x = arg;
    ig_admin_msg *m = x->m;
    if (status == 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "worker %s: %s", x->w->url, err ? err : "failed");
        ig_ctl_reply_error(m, 502, "worker_unreachable", msg);
    } else if (!x->export && status == 201) {
        /* the worker made sessions: pin their keys there before the caller learns them */
        json_error_t jerr;
        json_t *doc = json_loadb(body ? body : "", len, 0, &jerr);
        const char *why = pin_started(doc, x->w);
        if (why)
            ig_ctl_reply_error(m, 502, strcmp(why, "out of memory") ? "worker_bad_session" : "out_of_memory",
                               why);
        else
            ig_ctl_reply_raw(m, status, body ? body : "", len);
        json_decref(doc);
    } else {
        if (x->export && status == 200) {
            if (x->session_id)
                revoke_session(x->session_id);
            if (x->req && x->req->group_id)
                group_revoke(x->req->group_id);
            else if (x->req && !x->req->keep_sessions) /* the worker forgot them */
                for (int i = 0; i < x->req->n_sess; i++)
                    revoke_session(x->req->sess_ids[i]);
        }
        ig_ctl_reply_raw(m, status, body ? body : "", len);
    }
    ig_httpc_close(x->hc);
    ig_worker_unref(x->w);
    free(x->session_id);
    if (x->req) {
        ig_admin_request_free(x->req);
        free(x->req);
    }
    free(x);
}

/* session_id or req (taken, may be NULL): an export, and what it revokes on 200 */
static void pass_through(ig_admin_msg *m, ig_worker *w, const char *path, const char *body, size_t len,
                         const char *session_id, ig_admin_request *req)
{
    exchange *x = calloc(1, sizeof(*x));
    char *hdr = auth_header(m);
    if (!x || (session_id && !(x->session_id = strdup(session_id)))) {
        free(x);
        free(hdr);
        if (req) {
            ig_admin_request_free(req);
            free(req);
        }
        ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        return;
    }
    x->m = m;
    x->w = w;
    x->req = req;
    ig_worker_ref(w);
    x->export = session_id != NULL || req != NULL;
    x->hc = ig_ctl_httpc_new(w);
    int rc = x->hc ? ig_ctl_send(x->hc, w, "POST", path, hdr, body, len, ig_ctl_cfg()->request_timeout_secs,
                                 exchange_cb, x)
                   : -ENOMEM;
    free(hdr);
    if (rc)
        exchange_cb(x, 0, NULL, 0, "cannot send the request");
}

static void start_session(ig_admin_msg *m)
{
    int known;
    ig_worker *w = ig_ctl_pick(NULL, &known);
    if (!w) {
        ig_ctl_reply_error(m, 503, "no_workers", "No registered workers");
        return;
    }
    pass_through(m, w, "/rl/start_session", m->body, m->body_len, NULL, NULL);
}

static void export_trajectories(ig_admin_request *req, ig_admin_msg *m)
{
    /* AReaL's current shape routes by the first of session_ids */
    const char *sid = req->n_sess ? req->sess_ids[0] : req->session_id;
    const ig_session *s = ig_sessions_by_id(sid, strlen(sid));
    if (!s) { /* AReaL's gateway answers an unknown session with 401 */
        ig_ctl_reply_error(m, 401, "session_not_found", "Session not found");
        return;
    }
    if (req->n_sess) {
        ig_admin_request *kept = malloc(sizeof(*kept));
        if (!kept) {
            ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
            return;
        }
        *kept = *req; /* the exchange owns it now */
        memset(req, 0, sizeof(*req));
        pass_through(m, s->w, "/export_trajectories", m->body, m->body_len, NULL, kept);
        return;
    }
    const char *body = req->body_out ? req->body_out : m->body;
    pass_through(m, s->w, "/export_trajectories", body, req->body_out ? strlen(body) : m->body_len,
                 req->session_id, NULL);
}

void ig_areal_handle(ig_admin_request *req, ig_admin_msg *m)
{
    switch (req->op) {
    case IG_ADMIN_ROUTE: route(req, m); break;
    case IG_ADMIN_REGISTER_SESSION: register_session(req, m); break;
    case IG_ADMIN_REMOVE_SESSION: remove_session(req, m); break;
    case IG_ADMIN_RESOLVE_WORKER: {
        ig_worker *w = ig_registry_find_id(req->id);
        char id[32];
        snprintf(id, sizeof(id), "w%llu", (unsigned long long)req->id);
        if (w)
            ig_ctl_reply(m, 200, json_pack("{s:s,s:s}", "worker_id", id, "worker_addr", w->url));
        else
            ig_ctl_reply_error(m, 404, "worker_not_found", "no such worker id");
        break;
    }
    case IG_ADMIN_REGISTER_MODEL: register_model(req, m); break;
    case IG_ADMIN_MODELS: {
        json_t *names = json_array();
        for (int i = 0; i < n_routes; i++)
            json_array_append_new(names, json_string(routes[i].name));
        ig_ctl_reply(m, 200, json_pack("{s:o}", "models", names));
        break;
    }
    case IG_ADMIN_REMOVE_MODEL: remove_model(req, m); break;
    case IG_ADMIN_START_SESSION: start_session(m); break;
    case IG_ADMIN_EXPORT: export_trajectories(req, m); break;
    default: ig_ctl_reply_error(m, 404, "not_found", "unknown admin path"); break;
    }
}

int ig_areal_worker_removed(ig_worker *w)
{
    int changed = 0;
    for (int i = 0; i < n_routes; i++)
        for (int k = 0; k < routes[i].n; k++)
            if (routes[i].workers[k] == w) {
                routes[i].workers[k] = routes[i].workers[--routes[i].n];
                ig_worker_unref(w);
                changed = 1;
                break;
            }
    if (changed)
        ig_registry_set_model_routes(routes, n_routes);
    for (int i = n_groups - 1; i >= 0; i--)
        if (groups[i].w == w)
            group_drop(i);
    return ig_sessions_revoke_worker(w);
}

void ig_areal_shutdown(void)
{
    ig_sessions_shutdown();
    while (n_groups)
        group_drop(0);
    free(groups);
    groups = NULL;
    cap_groups = 0;
    while (n_routes)
        route_drop(0);
    free(routes);
    free(infos);
    routes = NULL;
    infos = NULL;
}
