#include "ig_admin.h"

#include <errno.h>
#include <llhttp.h>
#include <stdlib.h>
#include <string.h>

#include "../http/ig_http.h"

static int path_eq(const char *p, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(p, want, len) == 0;
}

static const struct {
    const char *path;
    ig_broadcast_kind kind;
    int get; /* GET, else POST */
} broadcasts[] = {
    {"/pause_generation", IG_BC_PAUSE, 0},
    {"/continue_generation", IG_BC_CONTINUE, 0},
    {"/set_version", IG_BC_SET_VERSION, 0},
    {"/get_version", IG_BC_GET_VERSION, 1},
    {"/flush_cache", IG_BC_FLUSH_CACHE, 0},
    {"/release_memory_occupation", IG_BC_RELEASE_MEMORY, 0},
    {"/resume_memory_occupation", IG_BC_RESUME_MEMORY, 0},
};
#define N_BROADCASTS (sizeof(broadcasts) / sizeof(broadcasts[0]))

/* index of the broadcast whose path is p, or p followed by "/{id}"; -1 */
static int broadcast_of(const char *p, size_t len, const char **id, size_t *idlen)
{
    for (size_t i = 0; i < N_BROADCASTS; i++) {
        size_t n = strlen(broadcasts[i].path);
        if (len < n || memcmp(p, broadcasts[i].path, n) != 0)
            continue;
        if (len == n) {
            *id = NULL;
            *idlen = 0;
            return (int)i;
        }
        if (p[n] == '/' && len > n + 1) {
            *id = p + n + 1;
            *idlen = len - n - 1;
            return (int)i;
        }
    }
    return -1;
}

/* AReaL's router and gateway endpoints that are not broadcasts */
static int is_areal_path(const char *p, size_t len)
{
    static const char *const paths[] = {
        "/route",  "/register_session", "/remove_session",   "/register_model",
        "/models", "/remove_model",     "/rl/start_session", "/export_trajectories"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        if (path_eq(p, len, paths[i]))
            return 1;
    return len > 16 && memcmp(p, "/resolve_worker/", 16) == 0;
}

int ig_admin_is_path(const char *p, size_t len)
{
    const char *id;
    size_t idlen;
    if (broadcast_of(p, len, &id, &idlen) >= 0)
        return 1;
    if (is_areal_path(p, len) ||
        (len > 9 && memcmp(p, "/callback", 9) == 0 && broadcast_of(p + 9, len - 9, &id, &idlen) >= 0))
        return 1;
    return path_eq(p, len, "/register") || path_eq(p, len, "/unregister") || path_eq(p, len, "/workers") ||
           (len > 9 && memcmp(p, "/workers/", 9) == 0) || path_eq(p, len, "/add_worker") ||
           path_eq(p, len, "/remove_worker") || path_eq(p, len, "/list_workers") ||
           path_eq(p, len, "/get_loads");
}

char *ig_query_get(const char *q, const char *key)
{
    size_t klen = strlen(key);
    while (q && *q) {
        const char *amp = strchr(q, '&'), *end = amp ? amp : q + strlen(q);
        if ((size_t)(end - q) > klen && strncmp(q, key, klen) == 0 && q[klen] == '=') {
            const char *v = q + klen + 1;
            char *out = malloc((size_t)(end - v) + 1), *o = out;
            if (!out)
                return NULL;
            o += ig_http_pct_decode(out, v, (size_t)(end - v), 1);
            *o = '\0';
            return out;
        }
        q = amp ? amp + 1 : NULL;
    }
    return NULL;
}

static int fail(ig_admin_request *r, int status, const char *code, const char *msg)
{
    r->status = status;
    r->code = code;
    r->message = msg;
    return -EINVAL;
}

/* "w12" or "12" */
/* %XX-decoded copy (malloc), or NULL. */
static char *url_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (out)
        out[ig_http_pct_decode(out, s, len, 0)] = '\0';
    return out;
}

static int parse_id(const char *s, size_t len, uint64_t *id)
{
    if (len && s[0] == 'w') {
        s++;
        len--;
    }
    if (!len || len > 19)
        return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *id = v;
    return 0;
}

/* A string field: 1 present (copied to *out), 0 absent or null, -1 not a string. */
static int str_field(json_t *doc, const char *name, char **out)
{
    json_t *v = json_object_get(doc, name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -1;
    *out = strdup(json_string_value(v));
    return 1;
}

/* A list of strings: 1 (taken into *out, *n), 0 absent or empty, -1 not a
 * list of strings, -ENOMEM. */
static int str_list(json_t *doc, const char *name, char ***out, int *n)
{
    json_t *v = json_object_get(doc, name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return -1;
    size_t i, len = json_array_size(v);
    json_t *e;
    json_array_foreach(v, i, e) if (!json_is_string(e)) return -1;
    if (!len)
        return 0;
    if (!(*out = calloc(len, sizeof(char *))))
        return -ENOMEM;
    json_array_foreach(v, i, e) if (((*out)[(*n)++] = strdup(json_string_value(e))) == NULL) return -ENOMEM;
    return 1;
}

/* AReaL's /register_session {sessions: [{session_api_key, session_id}], worker_addr, group_id}. */
static int session_group(json_t *doc, ig_admin_request *r)
{
    json_t *list = json_object_get(doc, "sessions");
    size_t i, n = json_array_size(list);
    json_t *e;
    if (str_field(doc, "worker_addr", &r->url) != 1 || str_field(doc, "group_id", &r->group_id) != 1 ||
        !json_is_array(list))
        return fail(r, 422, "missing_field",
                    "\"sessions\" (a list), \"worker_addr\" and \"group_id\" are required");
    r->sess_ids = calloc(n ? n : 1, sizeof(char *));
    r->sess_keys = calloc(n ? n : 1, sizeof(char *));
    if (!r->sess_ids || !r->sess_keys)
        return fail(r, 503, "out_of_memory", "out of memory");
    json_array_foreach(list, i, e)
    {
        const char *id = json_string_value(json_object_get(e, "session_id"));
        const char *key = json_string_value(json_object_get(e, "session_api_key"));
        if (!id || !key)
            return fail(r, 422, "missing_field",
                        "each of \"sessions\" needs \"session_api_key\" and \"session_id\" (strings)");
        r->sess_ids[r->n_sess] = strdup(id);
        r->sess_keys[r->n_sess] = strdup(key);
        r->n_sess++;
    }
    return 0;
}

/* The JSON object body of an AReaL endpoint, or NULL with the error set (422 like its router). */
static json_t *object_body(const char *body, size_t len, ig_admin_request *r, int status)
{
    json_error_t jerr;
    json_t *doc = json_loadb(body ? body : "", len, 0, &jerr);
    if (json_is_object(doc))
        return doc;
    json_decref(doc);
    fail(r, status, "invalid_json", "the body must be a JSON object");
    return NULL;
}

static int parse_areal(int method, const char *target, size_t plen, const char *body, size_t body_len,
                       ig_admin_request *r)
{
    if (path_eq(target, plen, "/models")) {
        if (method != HTTP_GET)
            return fail(r, 405, "method_not_allowed", "use GET");
        r->op = IG_ADMIN_MODELS;
        return 0;
    }
    if (plen > 16 && memcmp(target, "/resolve_worker/", 16) == 0) {
        if (method != HTTP_GET)
            return fail(r, 405, "method_not_allowed", "use GET");
        r->op = IG_ADMIN_RESOLVE_WORKER;
        if (parse_id(target + 16, plen - 16, &r->id))
            return fail(r, 404, "worker_not_found", "no such worker id");
        return 0;
    }
    if (method != HTTP_POST)
        return fail(r, 405, "method_not_allowed", "use POST");
    if (path_eq(target, plen, "/rl/start_session")) {
        r->op = IG_ADMIN_START_SESSION; /* the body goes to the worker as it is */
        return 0;
    }
    int export = path_eq(target, plen, "/export_trajectories");
    json_t *doc = object_body(body, body_len, r, export ? 400 : 422);
    if (!doc)
        return -EINVAL;
    int rc = 0;
    if (path_eq(target, plen, "/route")) {
        r->op = IG_ADMIN_ROUTE;
        if (str_field(doc, "api_key", &r->key) < 0 || str_field(doc, "session_id", &r->session_id) < 0 ||
            str_field(doc, "model", &r->model) < 0)
            rc = fail(r, 422, "invalid_field", "api_key, session_id and model must be strings");
        else if (!r->key && !r->session_id && !r->model)
            rc = fail(r, 422, "missing_field", "Either 'api_key', 'session_id', or 'model' must be provided");
    } else if (path_eq(target, plen, "/register_session")) {
        r->op = IG_ADMIN_REGISTER_SESSION;
        if (json_object_get(doc, "sessions")) /* AReaL's current shape: a group */
            rc = session_group(doc, r);
        else if (str_field(doc, "session_api_key", &r->key) != 1 ||
                 str_field(doc, "session_id", &r->session_id) != 1 ||
                 str_field(doc, "worker_addr", &r->url) != 1)
            rc = fail(r, 422, "missing_field",
                      "\"session_api_key\", \"session_id\" and \"worker_addr\" (strings) are required");
    } else if (path_eq(target, plen, "/remove_session")) {
        r->op = IG_ADMIN_REMOVE_SESSION; /* {group_id} (AReaL's current shape) or {session_id} */
        if (str_field(doc, "group_id", &r->group_id) != 1 &&
            str_field(doc, "session_id", &r->session_id) != 1)
            rc = fail(r, 422, "missing_field", "\"group_id\" (a string) is required");
    } else if (path_eq(target, plen, "/register_model")) {
        r->op = IG_ADMIN_REGISTER_MODEL;
        if (str_field(doc, "model", &r->model) != 1)
            rc = fail(r, 400, "missing_model", "model is required");
        else if (str_field(doc, "url", &r->ext_url) < 0 || str_field(doc, "api_key", &r->key) < 0)
            rc = fail(r, 422, "invalid_field", "url and api_key must be strings");
        else if (str_list(doc, "data_proxy_addrs", &r->addrs, &r->n_addrs) < 0)
            rc = fail(r, 422, "invalid_field", "data_proxy_addrs must be a list of strings");
    } else if (path_eq(target, plen, "/remove_model")) {
        r->op = IG_ADMIN_REMOVE_MODEL;
        if (str_field(doc, "name", &r->model) != 1)
            rc = fail(r, 422, "missing_field", "\"name\" (a string) is required");
    } else if (json_object_get(doc, "session_ids")) { /* /export_trajectories, AReaL's current shape */
        r->op = IG_ADMIN_EXPORT;
        json_t *keep = json_object_get(doc, "remove_session");
        int got = str_list(doc, "session_ids", &r->sess_ids, &r->n_sess);
        if (got < 0 || str_field(doc, "group_id", &r->group_id) < 0)
            rc = fail(r, 400, "invalid_field", "session_ids must be a list of strings, group_id a string");
        else if (!got)
            rc = fail(r, 400, "missing_session_ids", "session_ids is required");
        r->keep_sessions = json_is_false(keep);
    } else { /* /export_trajectories: {session_id}, or {model} naming the session */
        r->op = IG_ADMIN_EXPORT;
        if (str_field(doc, "session_id", &r->session_id) < 0)
            rc = fail(r, 400, "invalid_field", "session_id must be a string");
        else if (!r->session_id && str_field(doc, "model", &r->session_id) == 1) {
            json_object_set_new(doc, "session_id", json_string(r->session_id));
            r->body_out = json_dumps(doc, JSON_COMPACT);
        }
        if (!rc && (!r->session_id || !*r->session_id))
            rc = fail(r, 400, "missing_session_id", "session_id is required");
    }
    json_decref(doc);
    return rc;
}

/* worker_type: "regular" (or none), "prefill", "decode"; -1 for anything else */
static int role_of(const json_t *type)
{
    if (!type || json_is_null(type))
        return IG_ROLE_REGULAR;
    const char *t = json_is_string(type) ? json_string_value(type) : "";
    return !strcmp(t, "regular")   ? IG_ROLE_REGULAR
           : !strcmp(t, "prefill") ? IG_ROLE_PREFILL
           : !strcmp(t, "decode")  ? IG_ROLE_DECODE
                                   : -1;
}

/* A worker to add, as a JSON body (POST /workers, sgl's /add_worker):
 * {"url", "model_id", "max_inflight", "group", "api_key", "worker_type",
 * "bootstrap_port"}. */
static int worker_spec(ig_admin_request *r, const char *body, size_t body_len)
{
    json_error_t jerr;
    json_t *doc = json_loadb(body ? body : "", body_len, 0, &jerr);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return fail(r, 400, "invalid_json", "body must be a JSON object with \"url\"");
    }
    json_t *url = json_object_get(doc, "url"), *model = json_object_get(doc, "model_id"),
           *cap = json_object_get(doc, "max_inflight"), *group = json_object_get(doc, "group"),
           *key = json_object_get(doc, "api_key"), *type = json_object_get(doc, "worker_type"),
           *bport = json_object_get(doc, "bootstrap_port");
    int rc = 0, role = role_of(type);
    if (!json_is_string(url))
        rc = fail(r, 400, "missing_url", "\"url\" (a string) is required");
    else if (model && !json_is_null(model) && !json_is_string(model))
        rc = fail(r, 400, "invalid_model_id", "\"model_id\" must be a string");
    else if (cap && !json_is_null(cap) &&
             (!json_is_integer(cap) || json_integer_value(cap) < 0 || json_integer_value(cap) > 1000000))
        rc = fail(r, 400, "invalid_max_inflight", "\"max_inflight\" must be an integer >= 0");
    else if (group && !json_is_null(group) && !json_is_string(group))
        rc = fail(r, 400, "invalid_group", "\"group\" must be the name of a worker group");
    else if (key && !json_is_null(key) && !json_is_string(key))
        rc = fail(r, 400, "invalid_api_key", "\"api_key\" must be a string");
    else if (role < 0)
        rc = fail(r, 400, "invalid_worker_type",
                  "\"worker_type\" must be \"regular\", \"prefill\" or \"decode\"");
    else if (bport && !json_is_null(bport) &&
             (!json_is_integer(bport) || json_integer_value(bport) < 1 || json_integer_value(bport) > 65535))
        rc = fail(r, 400, "invalid_bootstrap_port",
                  "\"bootstrap_port\" must be a port number (1-65535) or null");
    else if (bport && !json_is_null(bport) && role != IG_ROLE_PREFILL)
        rc = fail(r, 400, "invalid_bootstrap_port", "\"bootstrap_port\" belongs to a prefill worker only");
    else if (role != IG_ROLE_REGULAR && json_is_string(group) && strcmp(json_string_value(group), "default"))
        rc = fail(r, 400, "invalid_group", "prefill and decode workers belong to the LLM fleet, not a group");
    if (!rc) {
        r->op = IG_ADMIN_ADD;
        r->url = strdup(json_string_value(url));
        r->model_id = json_is_string(model) ? strdup(json_string_value(model)) : NULL;
        r->group = json_is_string(group) ? strdup(json_string_value(group)) : NULL;
        r->api_key = json_is_string(key) ? strdup(json_string_value(key)) : NULL;
        r->has_max_inflight = json_is_integer(cap);
        r->max_inflight = json_is_integer(cap) ? (int)json_integer_value(cap) : 0;
        r->role = role;
        r->bootstrap_port = json_is_integer(bport) ? (int)json_integer_value(bport) : 0;
    }
    json_decref(doc);
    return rc;
}

int ig_admin_parse(int method, const char *target, const char *body, size_t body_len, ig_admin_request *r)
{
    memset(r, 0, sizeof(*r));
    const char *qm = strchr(target, '?');
    size_t plen = qm ? (size_t)(qm - target) : strlen(target);
    const char *query = qm ? qm + 1 : "";
    /* RolloutCallback's aliases: /callback/pause_generation/{id} is /pause_generation/{id} */
    if (plen > 10 && memcmp(target, "/callback/", 10) == 0) {
        target += 9;
        plen -= 9;
    }
    if (is_areal_path(target, plen)) {
        r->areal = 1;
        return parse_areal(method, target, plen, body, body_len, r);
    }

    if (path_eq(target, plen, "/workers") || path_eq(target, plen, "/list_workers")) {
        if (method == HTTP_GET) {
            r->op = IG_ADMIN_LIST;
            return 0;
        }
        if (method != HTTP_POST || !path_eq(target, plen, "/workers"))
            return fail(r, 405, "method_not_allowed", "use GET (list) or POST (add)");
        int rc = worker_spec(r, body, body_len);
        r->rest = 1;
        return rc;
    }
    if (plen > 9 && memcmp(target, "/workers/", 9) == 0) {
        if (method != HTTP_GET && method != HTTP_DELETE && method != HTTP_PUT && method != HTTP_PATCH)
            return fail(r, 405, "method_not_allowed",
                        "use GET, DELETE, or PUT/PATCH with {\"max_inflight\": N}");
        r->op = method == HTTP_GET ? IG_ADMIN_GET : method == HTTP_DELETE ? IG_ADMIN_DELETE : IG_ADMIN_UPDATE;
        if (parse_id(target + 9, plen - 9, &r->id)) {
            /* sgl-model-gateway's form: the worker's URL, percent-encoded */
            char *u = url_decode(target + 9, plen - 9);
            if (!u || (strncmp(u, "http://", 7) && strncmp(u, "https://", 8))) {
                free(u);
                return fail(r, 404, "worker_not_found", "no such worker id");
            }
            r->url = u;
        }
        if (r->op == IG_ADMIN_UPDATE) {
            json_error_t jerr;
            json_t *doc = json_loadb(body ? body : "", body_len, 0, &jerr);
            json_t *cap = json_is_object(doc) ? json_object_get(doc, "max_inflight") : NULL;
            int rc = 0;
            if (!json_is_integer(cap) || json_integer_value(cap) < 0 || json_integer_value(cap) > 1000000)
                rc = fail(r, 400, "invalid_max_inflight",
                          "PUT/PATCH /workers/{id} takes {\"max_inflight\": N >= 0}");
            else
                r->max_inflight = (int)json_integer_value(cap);
            json_decref(doc);
            return rc;
        }
        return 0;
    }
    if (path_eq(target, plen, "/register") || path_eq(target, plen, "/unregister")) {
        /* AReaL's router: {worker_addr} to register; {worker_id | worker_addr} to unregister */
        int reg = path_eq(target, plen, "/register");
        if (method != HTTP_POST)
            return fail(r, 405, "method_not_allowed", "use POST");
        json_error_t jerr;
        json_t *doc = json_loadb(body ? body : "", body_len, 0, &jerr);
        if (!json_is_object(doc)) {
            json_decref(doc);
            return fail(r, 422, "invalid_json", "body must be a JSON object");
        }
        json_t *addr = json_object_get(doc, "worker_addr"), *id = json_object_get(doc, "worker_id");
        int rc = 0;
        r->areal = 1;
        r->op = reg ? IG_ADMIN_ADD : IG_ADMIN_DELETE;
        if (json_is_string(id) && !reg) {
            const char *s = json_string_value(id);
            if (parse_id(s, strlen(s), &r->id))
                rc = fail(r, 404, "worker_not_found", "no such worker id");
        } else if (json_is_string(addr)) {
            r->url = strdup(json_string_value(addr));
        } else {
            rc = fail(r, 422, "missing_worker",
                      reg ? "\"worker_addr\" is required"
                          : "either \"worker_id\" or \"worker_addr\" is required");
        }
        json_decref(doc);
        return rc;
    }
    const char *wid;
    size_t widlen;
    int bi = broadcast_of(target, plen, &wid, &widlen);
    if (bi >= 0) {
        if (method != (broadcasts[bi].get ? HTTP_GET : HTTP_POST) &&
            !(broadcasts[bi].get && method == HTTP_POST))
            return fail(r, 405, "method_not_allowed", broadcasts[bi].get ? "use GET" : "use POST");
        r->op = IG_ADMIN_BROADCAST;
        r->bc = broadcasts[bi].kind;
        r->bc_path = broadcasts[bi].path;
        r->bc_method = broadcasts[bi].get ? HTTP_GET : HTTP_POST;
        if (wid) {
            r->has_worker = 1;
            if (parse_id(wid, widlen, &r->id))
                return fail(r, 404, "worker_not_found", "no such worker id");
        }
        if (body_len) {
            json_error_t jerr;
            json_t *doc = json_loadb(body, body_len, 0, &jerr);
            if (!json_is_object(doc)) {
                json_decref(doc);
                return fail(r, 400, "invalid_json", "the body must be a JSON object");
            }
            json_t *model = json_object_get(doc, "model"), *ver = json_object_get(doc, "version");
            if (json_is_string(model))
                r->model = strdup(json_string_value(model));
            if (ver && !json_is_null(ver)) {
                if (!json_is_integer(ver)) {
                    json_decref(doc);
                    return fail(r, 400, "invalid_version", "\"version\" must be an integer");
                }
                r->version = (long)json_integer_value(ver);
            }
            json_decref(doc);
        }
        if (r->bc == IG_BC_SET_VERSION && !body_len)
            return fail(r, 400, "missing_version", "set_version needs {\"version\": N}");
        return 0;
    }
    if (path_eq(target, plen, "/get_loads") || path_eq(target, plen, "/engine_metrics")) {
        if (method != HTTP_GET)
            return fail(r, 405, "method_not_allowed", "use GET");
        r->op = target[1] == 'g' ? IG_ADMIN_LOADS : IG_ADMIN_ENGINE_METRICS;
        return 0;
    }
    if (path_eq(target, plen, "/add_worker") || path_eq(target, plen, "/remove_worker")) {
        int add = path_eq(target, plen, "/add_worker");
        if (method != HTTP_POST)
            return fail(r, 405, "method_not_allowed", "use POST");
        r->url = ig_query_get(query, "url");
        if (add && (!r->url || !*r->url) && body_len) { /* newer sgl: the worker as a JSON body */
            free(r->url);
            r->url = NULL;
            return worker_spec(r, body, body_len);
        }
        if (!r->url || !*r->url)
            return fail(r, 400, "missing_url",
                        "the url query parameter (or a JSON body with \"url\") is required");
        r->op = add ? IG_ADMIN_ADD : IG_ADMIN_DELETE;
        if (add) {
            r->model_id = ig_query_get(query, "model_id");
            char *cap = ig_query_get(query, "max_inflight");
            r->has_max_inflight = cap != NULL;
            r->max_inflight = cap ? atoi(cap) : 0;
            free(cap);
        }
        return 0;
    }
    return fail(r, 404, "not_found", "unknown admin path");
}

void ig_admin_request_free(ig_admin_request *r)
{
    free(r->url);
    free(r->model_id);
    free(r->api_key);
    free(r->group);
    free(r->model);
    free(r->key);
    free(r->session_id);
    free(r->ext_url);
    free(r->body_out);
    free(r->group_id);
    for (int i = 0; i < r->n_sess; i++) {
        free(r->sess_ids ? r->sess_ids[i] : NULL);
        free(r->sess_keys ? r->sess_keys[i] : NULL);
    }
    free(r->sess_ids);
    free(r->sess_keys);
    for (int i = 0; i < r->n_addrs; i++)
        free(r->addrs[i]);
    free(r->addrs);
    memset(r, 0, sizeof(*r));
}
