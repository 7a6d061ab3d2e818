/* The route table (ig_routes.h). */
#include "ig_routes.h"

#include <arpa/inet.h>
#include <errno.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../api/ig_admin.h"
#include "../control/ig_control.h"
#include "../core/ig_cidr.h"
#include "../core/ig_log.h"
#include "../proxy/ig_proxy.h"
#include "../registry/ig_sessions.h"
#include "../server/ig_thread.h"
#include "ig_metrics_page.h"

static const ig_config *cfg;

/* Forwarded path prefixes, longest first: the first that matches decides. */
typedef struct fwd {
    const char *prefix;
    size_t len;
    int group;
} fwd;
static fwd *fwds;
static int nfwd;

static int by_length(const void *a, const void *b)
{
    const fwd *x = a, *y = b;
    return x->len < y->len ? 1 : x->len > y->len ? -1 : 0;
}

static void add_fwds(const ig_strv *sv, int group)
{
    for (int i = 0; i < sv->n; i++)
        fwds[nfwd++] = (fwd){sv->v[i], strlen(sv->v[i]), group};
}

int ig_routes_configure(const ig_config *c)
{
    cfg = c;
    int n = c->forward_paths.n;
    for (int g = 1; g < c->n_groups; g++)
        n += c->groups[g].forward_paths.n;
    free(fwds);
    nfwd = 0;
    if (!(fwds = calloc((size_t)(n ? n : 1), sizeof(*fwds))))
        return -ENOMEM;
    add_fwds(&c->forward_paths, 0);
    for (int g = 1; g < c->n_groups; g++)
        add_fwds(&c->groups[g].forward_paths, g);
    qsort(fwds, (size_t)nfwd, sizeof(*fwds), by_length);
    return 0;
}

void ig_routes_shutdown(void)
{
    free(fwds);
    fwds = NULL;
    nfwd = 0;
}

/* The worker group a path is forwarded to, or -1. */
static int forward_group(const char *path, size_t len)
{
    for (int i = 0; i < nfwd; i++)
        if (fwds[i].len <= len && memcmp(path, fwds[i].prefix, fwds[i].len) == 0)
            return fwds[i].group;
    return -1;
}

static void error(ig_request *r, int status, const char *type, const char *code, const char *msg)
{
    r->res->respond_error(r, status, type, code, msg, status == 405 ? "allow: POST\r\n" : NULL);
}

static void respond_json(ig_request *r, int status, const char *body, size_t len)
{
    r->res->respond(r, status, "application/json", body, len);
}

/* One model of the list, as OpenAI's API shows it. */
static int model_entry(ig_buf *b, const char *name, size_t len, int workers)
{
    int rc = ig_buf_puts(b, "{\"id\":");
    rc = rc ? rc : ig_json_append_string(b, name, len);
    rc = rc ? rc : ig_buf_puts(b, ",\"object\":\"model\",\"owned_by\":\"infergate\",\"workers\":");
    rc = rc ? rc : ig_buf_putu(b, (uint64_t)workers);
    return rc ? rc : ig_buf_puts(b, "}");
}

static void respond_models(ig_request *r)
{
    const ig_snapshot *snap = ig_snapshot_get();
    ig_buf b;
    ig_buf_init(&b, 4u << 20);
    int rc = ig_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    for (int m = 0; m < snap->n_models && !rc; m++) {
        rc = m ? ig_buf_puts(&b, ",") : 0;
        rc = rc ? rc : model_entry(&b, snap->models[m].name, snap->models[m].len, snap->models[m].n);
    }
    rc = rc ? rc : ig_buf_puts(&b, "]}\n");
    if (rc)
        error(r, 500, "server_error", "internal_error", "model list too large");
    else
        respond_json(r, 200, b.data, b.len);
    ig_buf_free(&b);
}

/* GET /v1/models/{id}: one model, as OpenAI's API answers it (the id may
 * hold slashes, raw or %2F). */
static void respond_model(ig_request *r, const char *raw, size_t rawlen)
{
    char id[IG_MODEL_MAX * 3 + 1];
    size_t len = ig_http_pct_decode(id, raw, rawlen < IG_MODEL_MAX * 3 ? rawlen : IG_MODEL_MAX * 3, 0);
    const ig_snapshot *snap = ig_snapshot_get();
    for (int m = 0; m < snap->n_models; m++) {
        if (snap->models[m].len != len || memcmp(snap->models[m].name, id, len) != 0)
            continue;
        ig_buf b;
        ig_buf_init(&b, 64 * 1024);
        int rc = model_entry(&b, id, len, snap->models[m].n);
        rc = rc ? rc : ig_buf_puts(&b, "\n");
        if (rc)
            error(r, 500, "server_error", "internal_error", "model entry too large");
        else
            respond_json(r, 200, b.data, b.len);
        ig_buf_free(&b);
        return;
    }
    char msg[IG_MODEL_MAX + 64];
    snprintf(msg, sizeof(msg), "model '%.*s' is not served by any worker",
             (int)(len < IG_MODEL_MAX ? len : IG_MODEL_MAX), id);
    error(r, 404, "invalid_request_error", "model_not_found", msg);
}

static void respond_metrics(ig_request *r)
{
    ig_buf b;
    ig_buf_init(&b, 32u << 20);
    ig_metrics_render(&b, ig_all_threads, ig_n_threads, ig_snapshot_get());
    r->res->respond(r, 200, "text/plain; version=0.0.4", b.data, b.len);
    ig_buf_free(&b);
}

/* The bearer token of the Authorization header, trimmed (AReaL strips it). */
static void parse_bearer(ig_request *r)
{
    const char *v = r->authorization.p;
    size_t vlen = r->authorization.len;
    r->has_bearer = 0;
    r->bearer = (ig_span){NULL, 0};
    if (!v || vlen < 7 || strncasecmp(v, "Bearer ", 7) != 0)
        return;
    v += 7;
    vlen -= 7;
    while (vlen && (*v == ' ' || *v == '\t')) {
        v++;
        vlen--;
    }
    while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;
    r->bearer = (ig_span){v, vlen};
    r->has_bearer = 1;
}

/* 0 when the bearer matches key; -1 missing or malformed; -2 wrong.
 * Constant time: no early exit, the length difference folded into the result. */
static int bearer_is(const ig_request *r, const char *key)
{
    if (!r->has_bearer)
        return -1;
    return ig_http_secret_is(r->bearer.p, r->bearer.len, key) ? 0 : -2;
}

/* The client key, or (AReaL) a session's key or the admin key. */
static int authorized(ig_request *r)
{
    const char *key = cfg->api_key;
    if (!key || !*key || bearer_is(r, key) == 0)
        return 1;
    return r->admin_bearer || (r->has_bearer && ig_sessions_by_key(r->bearer.p, r->bearer.len));
}

/* /metrics: its own key, else the client key; the admin key always does. */
static int metrics_authorized(ig_request *r)
{
    const char *key = cfg->metrics_api_key && *cfg->metrics_api_key ? cfg->metrics_api_key : cfg->api_key;
    return !key || !*key || bearer_is(r, key) == 0 || r->admin_bearer;
}

static int is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

/* The key the admin API asks for: --admin-api-key, else (as
 * sgl-model-gateway does) --api-key; NULL: none. Only the admin routes
 * take the fallback: a data request with the client key is not an admin's. */
static const char *admin_key(void)
{
    if (cfg->admin_api_key && *cfg->admin_api_key)
        return cfg->admin_api_key;
    return cfg->api_key && *cfg->api_key ? cfg->api_key : NULL;
}

/* Who may reach the admin API (docs: README, Security). With --admin-allow,
 * only peers in those ranges, key or not. Without it: anyone holding the
 * key, or, with no key configured, a loopback peer that is not another
 * proxy relaying someone else (behind nginx on the same host every remote
 * client is a loopback peer). NULL when allowed, else why not. */
static const char *admin_refusal(ig_request *r)
{
    int keyed = admin_key() != NULL;
    struct sockaddr_storage ss;
    if (r->res->peer(r, &ss))
        return "the peer address is unknown";
    if (cfg->n_admin_allow) {
        if (!ig_cidr_match(cfg->admin_allow, cfg->n_admin_allow, (struct sockaddr *)&ss))
            return "this address is not in --admin-allow";
    } else if (!keyed && !is_loopback(&ss)) {
        return "without --admin-api-key the admin endpoints answer only on loopback";
    }
    if (!keyed && r->via_proxy)
        return "without --admin-api-key the admin endpoints refuse requests relayed by a proxy "
               "(Forwarded, X-Forwarded-For, X-Real-IP)";
    return NULL;
}

/* The client left while its admin request was out: its answer is dropped. */
static void admin_stop(ig_request *r, int why)
{
    ig_admin_msg *m = r->handoff;
    (void)why;
    if (m) {
        m->owner = NULL;
        r->handoff = NULL;
    }
}

static const ig_handler admin_handler = {.stop = admin_stop};

/* Admin work runs on the control thread; the answer comes back to this one. */
/* The request to the control thread, which answers it. */
static void hand_to_control(ig_request *r)
{
    ig_admin_msg *m = calloc(1, sizeof(*m));
    if (m) {
        m->target = strndup(r->target, r->target_len);
        m->body = malloc(r->body.len + 1);
    }
    if (!m || !m->target || !m->body) {
        ig_admin_msg_free(m);
        error(r, 500, "server_error", "internal_error", "out of memory");
        return;
    }
    memcpy(m->body, r->body.p, r->body.len);
    m->body[r->body.len] = '\0';
    if (r->authorization.p) /* some worker endpoints (AReaL's sessions) check it too */
        m->auth = strndup(r->authorization.p, r->authorization.len);
    m->body_len = r->body.len;
    m->method = r->method;
    m->reply_to = r->px->replies;
    m->owner = r;
    r->handoff = m;
    r->h = &admin_handler;
    ig_control_submit(m);
}

static void admin_start(ig_request *r)
{
    const char *key = admin_key(), *refused = admin_refusal(r);
    if (refused) {
        error(r, 403, "permission_error", "admin_not_allowed", refused);
        return;
    }
    if (key && *key) {
        int rc = bearer_is(r, key);
        if (rc == -1) {
            error(r, 401, "authentication_error", "missing_admin_key",
                  "admin endpoints need 'Authorization: Bearer <admin key>'");
            return;
        }
        if (rc == -2) {
            error(r, 403, "permission_error", "invalid_admin_key", "wrong admin key");
            return;
        }
    }
    hand_to_control(r);
}

void ig_routes_deliver(ig_inbox_node *n)
{
    ig_admin_msg *m = ig_container_of(n, ig_admin_msg, node);
    ig_request *r = m->owner;
    if (r) {
        r->handoff = NULL;
        r->h = NULL;
        r->res->respond(r, m->status, m->content_type ? m->content_type : "application/json",
                        m->reply ? m->reply : "{}", m->reply ? m->reply_len : 2);
    }
    ig_admin_msg_free(m);
}

static int path_is(const char *path, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(path, want, len) == 0;
}

/* A path infergate answers itself (GET or HEAD). */
static int local_path(const ig_request *r)
{
    const char *url = r->target;
    size_t plen = r->path_len;
    if (r->method != HTTP_GET && r->method != HTTP_HEAD)
        return 0;
    return path_is(url, plen, "/health") || path_is(url, plen, "/liveness") ||
           path_is(url, plen, "/readiness") || path_is(url, plen, "/v1/models") ||
           (plen > 11 && memcmp(url, "/v1/models/", 11) == 0) || path_is(url, plen, "/metrics");
}

static ig_route data_route(const char *url, size_t plen)
{
    if (path_is(url, plen, "/v1/chat/completions") || path_is(url, plen, "/chat/completions"))
        return IG_R_CHAT;
    if (path_is(url, plen, "/rl/set_reward"))
        return IG_R_SESSION;
    if (path_is(url, plen, "/v1/completions"))
        return IG_R_COMPLETIONS;
    if (path_is(url, plen, "/v1/embeddings"))
        return IG_R_EMBEDDINGS;
    if (path_is(url, plen, "/generate"))
        return IG_R_GENERATE;
    /* the other model APIs sgl-model-gateway routes by the body's "model" */
    static const char *const apis[] = {"/v1/rerank",   "/rerank",      "/v1/responses",  "/v1/messages",
                                       "/v1/classify", "/v1/tokenize", "/v1/detokenize", "/v1/score"};
    for (size_t i = 0; i < sizeof(apis) / sizeof(apis[0]); i++)
        if (path_is(url, plen, apis[i]))
            return IG_R_API;
    return IG_R_OTHER;
}

/* Forwarded as it is: any method, any body, the client key. */
static void forward(ig_request *r, int group)
{
    r->route = IG_R_FORWARD;
    if (!authorized(r)) {
        error(r, 401, "invalid_request_error", "invalid_api_key",
              "missing or invalid API key (Authorization: Bearer ...)");
        return;
    }
    r->res->set_deadline(r, cfg->request_timeout_secs);
    ig_proxy_forward(r, group);
}

/* sgl-model-gateway's GET endpoints that a worker answers: it sends them to
 * one (the first); here any healthy worker of the fleet, balanced as any request. */
static int worker_info_path(const ig_request *r)
{
    const char *url = r->target;
    size_t plen = r->path_len;
    return (r->method == HTTP_GET || r->method == HTTP_HEAD) &&
           (path_is(url, plen, "/get_model_info") || path_is(url, plen, "/get_server_info") ||
            path_is(url, plen, "/health_generate"));
}

/* What infergate answers itself comes first (admin, probes, models,
 * metrics); then forwarded prefixes, the longest first; a prefix of a named
 * group takes even an LLM path as it is, while the fleet's own prefixes
 * (--forward-paths, even /) leave the LLM paths routed by model. */
/* The worker group r is forwarded to as it is, or -1. */
static int forward_target(ig_request *r)
{
    const char *url = r->target;
    size_t plen = r->path_len;
    int fg = nfwd ? forward_group(url, plen) : -1;
    if (fg < 0 || (fg == 0 && data_route(url, plen) != IG_R_OTHER) || ig_admin_is_path(url, plen) ||
        local_path(r))
        return -1;
    return fg;
}

int ig_routes_streams_body(ig_request *r)
{
    /* a body that fits the window is read whole: it can be sent again on a
     * retry; the LLM paths read theirs whole to route by what it says */
    if (r->body_length >= 0 && r->body_length <= IG_STREAM_WINDOW)
        return 0;
    return forward_target(r) >= 0;
}

void ig_routes_dispatch(ig_request *r)
{
    const char *url = r->target;
    size_t plen = r->path_len;
    int method = r->method;
    parse_bearer(r);
    r->admin_bearer = bearer_is(r, cfg->admin_api_key) == 0;
    if (r->metrics_only) { /* --prometheus-port: the scrape port serves the scrape */
        r->route = IG_R_METRICS;
        if ((method != HTTP_GET && method != HTTP_HEAD) || !path_is(url, plen, "/metrics"))
            error(r, 404, "invalid_request_error", "not_found",
                  "this port serves GET /metrics only (--prometheus-port)");
        else if (!metrics_authorized(r))
            error(r, 401, "invalid_request_error", "invalid_api_key",
                  "/metrics needs 'Authorization: Bearer KEY' (--metrics-api-key, else --api-key)");
        else
            respond_metrics(r);
        return;
    }
    r->route = data_route(url, plen);
    int fg = forward_target(r);
    if (fg >= 0) {
        forward(r, fg);
        return;
    }
    if (r->route != IG_R_OTHER) {
        if (method != HTTP_POST) {
            error(r, 405, "invalid_request_error", "method_not_allowed", "use POST for this endpoint");
            return;
        }
        if (!authorized(r)) {
            error(r, 401, "invalid_request_error", "invalid_api_key",
                  "missing or invalid API key (Authorization: Bearer ...)");
            return;
        }
        r->res->set_deadline(r, cfg->request_timeout_secs);
        ig_proxy_start(r);
        return;
    }
    if (ig_admin_is_path(url, plen)) {
        r->route = IG_R_ADMIN;
        admin_start(r);
        return;
    }
    if (worker_info_path(r)) {
        forward(r, 0);
        return;
    }
    int get = method == HTTP_GET || method == HTTP_HEAD;
    if (get && (path_is(url, plen, "/health") || path_is(url, plen, "/liveness"))) {
        /* AReaL's router body: 200 while the process runs, whatever the counts */
        char body[160];
        int n = snprintf(body, sizeof(body),
                         "{\"status\":\"ok\",\"workers\":%d,\"sessions\":%d,\"strategy\":\"%s\"}\n",
                         ig_snapshot_get()->n_all, ig_sessions_count(), ig_policy_name(cfg->policy));
        r->route = IG_R_PROBE;
        respond_json(r, 200, body, (size_t)n);
    } else if (get && path_is(url, plen, "/readiness")) {
        const ig_snapshot *snap = ig_snapshot_get();
        char body[160];
        int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"workers\":%d,\"routable_workers\":%d}\n",
                         snap->n_up > 0 ? "ready" : "not ready", snap->n_all, snap->n_up);
        r->route = IG_R_PROBE;
        respond_json(r, snap->n_up > 0 ? 200 : 503, body, (size_t)n);
    } else if (get && path_is(url, plen, "/v1/models")) {
        r->route = IG_R_MODELS;
        if (!authorized(r))
            error(r, 401, "invalid_request_error", "invalid_api_key",
                  "missing or invalid API key (Authorization: Bearer ...)");
        else
            respond_models(r);
    } else if (get && plen > 11 && memcmp(url, "/v1/models/", 11) == 0) {
        r->route = IG_R_MODELS;
        if (!authorized(r))
            error(r, 401, "invalid_request_error", "invalid_api_key",
                  "missing or invalid API key (Authorization: Bearer ...)");
        else
            respond_model(r, url + 11, plen - 11);
    } else if (get && (path_is(url, plen, "/metrics") || path_is(url, plen, "/engine_metrics"))) {
        r->route = IG_R_METRICS;
        if (!metrics_authorized(r))
            error(r, 401, "invalid_request_error", "invalid_api_key",
                  "/metrics needs 'Authorization: Bearer KEY' (--metrics-api-key, else --api-key)");
        else if (url[1] == 'e') /* the engines' pages, gathered by the control thread */
            hand_to_control(r);
        else
            respond_metrics(r);
    } else {
        error(r, 404, "invalid_request_error", "not_found", "unknown path");
    }
}
