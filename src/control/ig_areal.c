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
#include "ig_areal_int.h"
#include "ig_control_int.h"
#include "ig_etcd.h"

/* registered models: routes[i] (read by snapshot builds) and what AReaL keeps with them */
typedef struct model_info {
    char *url;     /* an external provider, or NULL */
    char *api_key; /* its key, or NULL */
    char *stored;  /* with --etcd-endpoints: its value in etcd, as last written or read */
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
int ig_areal_group_put(const char *id, const ig_worker *w, char *const *sids, int n)
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
    free(infos[i].stored);
}

static void route_drop(int i)
{
    route_free(i);
    routes[i] = routes[--n_routes];
    infos[i] = infos[n_routes];
    ig_registry_set_model_routes(routes, n_routes);
}

void ig_areal_route_drop(int i)
{
    route_drop(i);
    ig_ctl_publish();
}

int ig_areal_route_count(void)
{
    return n_routes;
}

const char *ig_areal_route_name(int i)
{
    return routes[i].name;
}

const char *ig_areal_route_stored(int i)
{
    return infos[i].stored;
}

void ig_areal_groups_clear(void)
{
    while (n_groups)
        group_drop(0);
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

/* the admin key's session, claimed in etcd: the first gateway's pick is everyone's */
typedef struct hitl {
    ig_admin_msg *m; /* /route's, answered with the worker; NULL: none */
    int route;
    char *key;
} hitl;

static void hitl_claimed(void *arg, int ok, const char *value, const char *err)
{
    hitl *h = arg;
    ig_worker *w = NULL;
    if (ok) {
        json_error_t jerr;
        json_t *doc = json_loads(value, 0, &jerr);
        const char *url = json_string_value(json_object_get(doc, "worker"));
        if ((w = url ? ig_ctl_find_url(url) : NULL) &&
            ig_sessions_put(h->key, strlen(h->key), IG_HITL_SESSION_ID, strlen(IG_HITL_SESSION_ID), w, 1))
            w = NULL;
        json_decref(doc);
    }
    if (h->m && w)
        reply_route(h->m, w, h->route < n_routes ? h->route : -1);
    else if (h->m && !ok)
        ig_ctl_reply_store_error(h->m, err);
    else if (h->m) /* pinned by another gateway to a worker not known here yet */
        ig_ctl_reply_error(h->m, 503, "no_workers", "the admin session's worker is not registered here yet");
    free(h->key);
    free(h);
}

static void hitl_claim(const char *key, ig_worker *w, ig_admin_msg *m, int route)
{
    hitl *h = calloc(1, sizeof(*h));
    char *value = ig_areal_session_value(key, w, 1, NULL);
    if (!h || !value || !(h->key = strdup(key))) {
        free(h);
        free(value);
        if (m)
            ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        return;
    }
    h->m = m;
    h->route = route;
    ig_cluster_claim("sessions/" IG_HITL_SESSION_ID, value, hitl_claimed, h);
    free(value);
}

void ig_areal_pin_admin(ig_worker *w)
{
    const char *admin = ig_ctl_cfg()->admin_api_key;
    if (!admin || !*admin || ig_sessions_by_key(admin, strlen(admin)))
        return; /* pinned already: the first pick stays */
    if (ig_cluster_enabled())
        hitl_claim(admin, w, NULL, -1);
    else if (ig_sessions_put(admin, strlen(admin), IG_HITL_SESSION_ID, strlen(IG_HITL_SESSION_ID), w, 1))
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
    if (req->key && ig_cluster_enabled()) {
        hitl_claim(req->key, w, m, ri);
        return;
    }
    if (req->key &&
        ig_sessions_put(req->key, strlen(req->key), IG_HITL_SESSION_ID, strlen(IG_HITL_SESSION_ID), w, 1)) {
        ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        return;
    }
    reply_route(m, w, ri);
}

/* an admin write etcd must take first: what to do once it did */
typedef struct deferred {
    ig_admin_msg *m;
    ig_admin_request req; /* taken from the handler's */
    ig_worker *w;         /* referenced, or NULL */
    json_t *doc;          /* start_session's answer */
    char *body;           /* ... as the worker sent it */
    size_t len;
    void (*apply)(struct deferred *d);
} deferred;

static void deferred_free(deferred *d)
{
    ig_admin_request_free(&d->req);
    if (d->w)
        ig_worker_unref(d->w);
    json_decref(d->doc);
    free(d->body);
    free(d);
}

static void deferred_done(void *arg, int ok, const char *err)
{
    deferred *d = arg;
    if (ok)
        d->apply(d);
    else
        ig_ctl_reply_store_error(d->m, err);
    deferred_free(d);
}

/* Write keys (values NULL: deletes) to etcd, then apply(d); the request is
 * taken from req. 0, or -ENOMEM (answered). */
static int write_then(ig_admin_msg *m, ig_admin_request *req, ig_worker *w, char *const *keys,
                      char *const *values, int n, void (*apply)(deferred *d))
{
    deferred *d = calloc(1, sizeof(*d));
    if (!d) {
        ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        return -ENOMEM;
    }
    d->m = m;
    if (req) {
        d->req = *req;
        memset(req, 0, sizeof(*req));
    }
    if ((d->w = w))
        ig_worker_ref(w);
    d->apply = apply;
    ig_cluster_write(keys, values, n, deferred_done, d);
    return 0;
}

char *ig_areal_session_value(const char *key, const ig_worker *w, int persistent, const char *group_id)
{
    json_t *doc = json_pack("{s:s,s:s,s:b,s:o}", "key", key, "worker", w->url, "persistent", persistent,
                            "group", str_or_null(group_id));
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}

/* keys[i] = "sessions/<ids[i]>", values[i] its entry (NULL: a delete); 0 or -ENOMEM */
static int session_entries(char *const *ids, char *const *keys, int n, const ig_worker *w,
                           const char *group_id, char ***out_keys, char ***out_values)
{
    char **k = calloc((size_t)(n ? n : 1), sizeof(char *)), **v = calloc((size_t)(n ? n : 1), sizeof(char *));
    int rc = k && v ? 0 : -ENOMEM;
    for (int i = 0; !rc && i < n; i++) {
        if (asprintf(&k[i], "sessions/%s", ids[i]) < 0) {
            k[i] = NULL;
            rc = -ENOMEM;
        } else if (keys && !(v[i] = ig_areal_session_value(keys[i], w, admin_key_is(keys[i], strlen(keys[i])),
                                                           group_id))) {
            rc = -ENOMEM;
        }
    }
    *out_keys = k;
    *out_values = v;
    return rc;
}

static void entries_free(char **k, char **v, int n)
{
    for (int i = 0; i < n; i++) {
        free(k ? k[i] : NULL);
        free(v ? v[i] : NULL);
    }
    free(k);
    free(v);
}

/* into etcd first (with --etcd-endpoints), then apply(d); ids and their keys (NULL: deletes) */
static void sessions_write_then(ig_admin_msg *m, ig_admin_request *req, ig_worker *w, char *const *ids,
                                char *const *keys, int n, const char *group_id, void (*apply)(deferred *d))
{
    char **k, **v;
    if (session_entries(ids, keys, n, w, group_id, &k, &v))
        ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
    else
        write_then(m, req, w, k, v, n, apply);
    entries_free(k, v, n);
}

static void register_apply(ig_admin_request *req, ig_worker *w, ig_admin_msg *m)
{
    int rc = 0;
    if (req->group_id) { /* AReaL's current shape: a group of sessions */
        for (int i = 0; !rc && i < req->n_sess; i++)
            rc = ig_sessions_put(req->sess_keys[i], strlen(req->sess_keys[i]), req->sess_ids[i],
                                 strlen(req->sess_ids[i]), w,
                                 admin_key_is(req->sess_keys[i], strlen(req->sess_keys[i])));
        rc = rc ? rc : ig_areal_group_put(req->group_id, w, req->sess_ids, req->n_sess);
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

static void register_stored(deferred *d)
{
    register_apply(&d->req, d->w, d->m);
}

static void register_session(ig_admin_request *req, ig_admin_msg *m)
{
    ig_worker *w = ig_ctl_find_url(req->url);
    if (!w) {
        ig_ctl_reply_error(m, 404, "worker_not_found",
                           "worker_addr is not a registered worker (register it first)");
        return;
    }
    if (!ig_cluster_enabled()) {
        register_apply(req, w, m);
    } else if (req->group_id) {
        sessions_write_then(m, req, w, req->sess_ids, req->sess_keys, req->n_sess, req->group_id,
                            register_stored);
    } else {
        char *ids[1] = {req->session_id}, *keys[1] = {req->key};
        sessions_write_then(m, req, w, ids, keys, 1, NULL, register_stored);
    }
}

static void remove_apply(ig_admin_request *req, ig_admin_msg *m)
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

static void remove_stored(deferred *d)
{
    remove_apply(&d->req, d->m);
}

static void remove_session(ig_admin_request *req, ig_admin_msg *m)
{
    if (!ig_cluster_enabled()) {
        remove_apply(req, m);
        return;
    }
    if (req->group_id) { /* the group's sessions, as this gateway knows them */
        int g = group_find(req->group_id);
        sessions_write_then(m, req, NULL, g >= 0 ? groups[g].sids : NULL, NULL, g >= 0 ? groups[g].n : 0,
                            NULL, remove_stored);
        return;
    }
    const ig_session *s = ig_sessions_by_id(req->session_id, strlen(req->session_id));
    char *ids[1] = {req->session_id};
    /* the admin key's session stays (AReaL's rule): nothing to write */
    sessions_write_then(m, req, NULL, ids, NULL, s && !s->persistent ? 1 : 0, NULL, remove_stored);
}

/* ---- models ---- */

typedef struct model_reg {
    ig_fanout f; /* first */
    char *name, *url, *api_key, *stored;
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
    free(r->stored);
    free(r);
}

char *ig_areal_model_value(ig_worker *const *ws, int n, const char *url, const char *api_key)
{
    json_t *addrs = json_array();
    for (int k = 0; k < n; k++)
        json_array_append_new(addrs, json_string(ws[k]->url));
    json_t *doc = json_pack("{s:o,s:o,s:o}", "workers", addrs, "url", str_or_null(url), "api_key",
                            str_or_null(api_key));
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}

int ig_areal_route_set(char *name, ig_worker **ws, int n, char *url, char *api_key, char *stored)
{
    int i = find_route(name);
    if (i >= 0) {
        route_free(i);
    } else {
        ig_model_route *nr = realloc(routes, sizeof(*nr) * (size_t)(n_routes + 1));
        if (nr)
            routes = nr;
        model_info *ni = nr ? realloc(infos, sizeof(*ni) * (size_t)(n_routes + 1)) : NULL;
        if (!ni)
            return -ENOMEM;
        infos = ni;
        i = n_routes++;
    }
    routes[i] = (ig_model_route){.name = name, .workers = ws, .n = n};
    infos[i] = (model_info){.url = url, .api_key = api_key, .stored = stored};
    ig_registry_set_model_routes(routes, n_routes);
    ig_ctl_publish();
    return 0;
}

static void model_reg_apply(model_reg *r)
{
    json_t *addrs = json_array();
    for (int k = 0; k < r->n; k++)
        json_array_append_new(addrs, json_string(r->ws[k]->url));
    if (ig_areal_route_set(r->name, r->ws, r->n, r->url, r->api_key, r->stored)) {
        json_decref(addrs);
        ig_ctl_reply_error(r->f.m, 503, "out_of_memory", "out of memory");
        model_reg_free(r);
        return;
    }
    ig_info("model %s registered on %d workers", r->name, r->n);
    ig_ctl_reply(r->f.m, 200,
                 json_pack("{s:s,s:s,s:o}", "status", "ok", "model", r->name, "data_proxy_addrs", addrs));
    free(r); /* its strings and workers now belong to the route */
}

static void model_stored(void *arg, int ok, const char *err)
{
    model_reg *r = arg;
    if (!ok) {
        ig_ctl_reply_store_error(r->f.m, err);
        model_reg_free(r);
        return;
    }
    model_reg_apply(r);
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
    if (ig_cluster_enabled()) { /* every gateway's once etcd took it */
        char *key = NULL, *value = ig_areal_model_value(r->ws, r->n, r->url, r->api_key);
        if (!value || asprintf(&key, "models/%s", r->name) < 0) {
            free(value);
            ig_ctl_reply_error(f->m, 503, "out_of_memory", "out of memory");
            model_reg_free(r);
            return;
        }
        r->stored = value;
        ig_cluster_write(&key, &value, 1, model_stored, r);
        free(key);
        return;
    }
    model_reg_apply(r);
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

static void remove_model_apply(deferred *d)
{
    int i = find_route(d->req.model);
    if (i >= 0) {
        route_drop(i);
        ig_ctl_publish();
    }
    ig_ctl_reply(d->m, 200, json_pack("{s:s,s:s}", "status", "ok", "name", d->req.model));
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
    if (ig_cluster_enabled()) {
        char *key = NULL, *none = NULL;
        if (asprintf(&key, "models/%s", req->model) < 0)
            ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        else
            write_then(m, req, NULL, &key, &none, 1, remove_model_apply);
        free(key);
        return;
    }
    deferred d = {.m = m, .req = *req};
    remove_model_apply(&d);
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
 * checked before any is pinned (check_only: only that). NULL, or why the
 * answer is refused. */
static const char *pin_started(json_t *doc, ig_worker *w, int check_only)
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
        if (res || check_only)
            break;
        const char *key = json_string_value(json_object_get(e, "session_api_key"));
        const char *sid = json_string_value(json_object_get(e, "session_id"));
        if (ig_sessions_put(key, strlen(key), sid, strlen(sid), w, 0))
            res = "out of memory";
    }
    if (!res && !check_only && gid && (!sids || ig_areal_group_put(gid, w, sids, (int)n)))
        res = "out of memory";
    free(sids);
    json_decref(one);
    return res;
}

/* Sessions an export revoked here, until etcd has deleted them too (the
 * export happened, so it is answered either way): the next reads skip them
 * and each follow round asks again. */
static json_t *forgotten;
static int forgetting;

static void forgot(void *arg, int ok, const char *err)
{
    json_t *ids = arg;
    size_t i;
    json_t *id;
    forgetting = 0;
    if (ok)
        json_array_foreach(ids, i, id) json_object_del(forgotten, json_string_value(id));
    else
        ig_warn("etcd did not delete %zu exported sessions yet: %s; again on the next read",
                json_array_size(ids), err);
    json_decref(ids);
}

void ig_areal_forget_pending(void)
{
    size_t n = json_object_size(forgotten), k = 0;
    if (!n || forgetting)
        return;
    char **keys = calloc(n, sizeof(char *)), **none = calloc(n, sizeof(char *));
    json_t *ids = json_array();
    const char *id;
    json_t *v;
    json_object_foreach(forgotten, id, v)
    {
        if (k == IG_ETCD_TXN_MAX || !keys || asprintf(&keys[k], "sessions/%s", id) < 0)
            break;
        json_array_append_new(ids, json_string(id));
        k++;
    }
    if (k) {
        forgetting = 1;
        ig_cluster_write(keys, none, (int)k, forgot, ids);
    } else {
        json_decref(ids);
    }
    entries_free(keys, none, (int)k);
}

int ig_areal_forgotten(const char *id)
{
    return forgotten && json_object_get(forgotten, id) != NULL;
}

/* sid's delete is owed to etcd */
static void owe_delete(const char *sid)
{
    if (!forgotten)
        forgotten = json_object();
    json_object_set_new(forgotten, sid, json_true());
}

static void forget(const char *sid)
{
    const ig_session *s = ig_sessions_by_id(sid, strlen(sid));
    if (!s || !s->persistent) /* the admin key's session stays */
        owe_delete(sid);
}

static int forget_if_on(const ig_session *s, void *w)
{
    if (s->w != w)
        return 1;
    char *id = strndup(s->id, s->id_len);
    if (id) /* the admin key's too: its worker is gone, the next pick claims it anew */
        owe_delete(id);
    free(id);
    return 0;
}

static void forget_exported(const exchange *x)
{
    if (x->session_id) {
        forget(x->session_id);
    } else if (x->req && x->req->group_id) {
        int g = group_find(x->req->group_id);
        for (int k = 0; g >= 0 && k < groups[g].n; k++)
            forget(groups[g].sids[k]);
    } else if (x->req && !x->req->keep_sessions) {
        for (int i = 0; i < x->req->n_sess; i++)
            forget(x->req->sess_ids[i]);
    }
    ig_areal_forget_pending();
}

static void started_stored(deferred *d)
{
    const char *why = pin_started(d->doc, d->w, 0);
    if (why)
        ig_ctl_reply_error(d->m, 502, strcmp(why, "out of memory") ? "worker_bad_session" : "out_of_memory",
                           why);
    else
        ig_ctl_reply_raw(d->m, 201, d->body, d->len);
}

/* start_session's sessions, checked: into etcd, then pinned here and answered */
static void store_started(ig_admin_msg *m, ig_worker *w, json_t *doc, const char *body, size_t len)
{
    json_t *list = json_object_get(doc, "sessions"), *e;
    const char *gid = json_string_value(json_object_get(doc, "group_id"));
    size_t n = json_is_array(list) ? json_array_size(list) : 1, i;
    char **ids = calloc(n, sizeof(char *)), **keys = calloc(n, sizeof(char *)), *copy = malloc(len + 1);
    if (!ids || !keys || !copy) {
        free(ids);
        free(keys);
        free(copy);
        ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        return;
    }
    if (json_is_array(list)) {
        json_array_foreach(list, i, e)
        {
            ids[i] = (char *)json_string_value(json_object_get(e, "session_id"));
            keys[i] = (char *)json_string_value(json_object_get(e, "session_api_key"));
        }
    } else { /* the older shape */
        ids[0] = (char *)json_string_value(json_object_get(doc, "session_id"));
        keys[0] = (char *)json_string_value(json_object_get(doc, "api_key"));
    }
    memcpy(copy, body, len);
    copy[len] = '\0';
    char **k, **v;
    deferred *d = NULL;
    if (session_entries(ids, keys, (int)n, w, gid, &k, &v) || !(d = calloc(1, sizeof(*d)))) {
        free(copy);
        ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
    } else {
        *d = (deferred){
            .m = m, .w = w, .doc = json_incref(doc), .body = copy, .len = len, .apply = started_stored};
        ig_worker_ref(w);
        ig_cluster_write(k, v, (int)n, deferred_done, d);
    }
    entries_free(k, v, (int)n);
    free(ids);
    free(keys);
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
        const char *why = pin_started(doc, x->w, ig_cluster_enabled());
        if (!why && ig_cluster_enabled()) /* every gateway's first */
            store_started(m, x->w, doc, body, len);
        else if (why)
            ig_ctl_reply_error(m, 502, strcmp(why, "out of memory") ? "worker_bad_session" : "out_of_memory",
                               why);
        else
            ig_ctl_reply_raw(m, status, body ? body : "", len);
        json_decref(doc);
    } else {
        if (x->export && status == 200) {
            if (ig_cluster_enabled())
                forget_exported(x);
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
    if (!ig_cluster_enabled())
        return ig_sessions_revoke_worker(w);
    /* every gateway sees the worker go; each asks etcd to drop its sessions (a repeat is harmless) */
    int n = ig_sessions_keep_only(forget_if_on, w);
    ig_areal_forget_pending();
    return n;
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
    json_decref(forgotten);
    forgotten = NULL;
    free(routes);
    free(infos);
    routes = NULL;
    infos = NULL;
}
