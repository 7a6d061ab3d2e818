#include "ig_admin.h"

#include <errno.h>
#include <llhttp.h>
#include <stdlib.h>
#include <string.h>

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

int ig_admin_is_path(const char *p, size_t len)
{
    const char *id;
    size_t idlen;
    if (broadcast_of(p, len, &id, &idlen) >= 0)
        return 1;
    return path_eq(p, len, "/register") || path_eq(p, len, "/unregister") ||
           path_eq(p, len, "/workers") || (len > 9 && memcmp(p, "/workers/", 9) == 0) ||
           path_eq(p, len, "/add_worker") || path_eq(p, len, "/remove_worker") ||
           path_eq(p, len, "/list_workers");
}

static int hexv(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
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
            while (v < end) {
                if (*v == '%' && v + 2 < end && hexv(v[1]) >= 0 && hexv(v[2]) >= 0) {
                    *o++ = (char)(hexv(v[1]) * 16 + hexv(v[2]));
                    v += 3;
                } else {
                    *o++ = *v == '+' ? ' ' : *v;
                    v++;
                }
            }
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

int ig_admin_parse(int method, const char *target, const char *body, size_t body_len,
                   ig_admin_request *r)
{
    memset(r, 0, sizeof(*r));
    const char *qm = strchr(target, '?');
    size_t plen = qm ? (size_t)(qm - target) : strlen(target);
    const char *query = qm ? qm + 1 : "";

    if (path_eq(target, plen, "/workers") || path_eq(target, plen, "/list_workers")) {
        if (method == HTTP_GET) {
            r->op = IG_ADMIN_LIST;
            return 0;
        }
        if (method != HTTP_POST || !path_eq(target, plen, "/workers"))
            return fail(r, 405, "method_not_allowed", "use GET (list) or POST (add)");
        json_error_t jerr;
        json_t *doc = json_loadb(body ? body : "", body_len, 0, &jerr);
        if (!json_is_object(doc)) {
            json_decref(doc);
            return fail(r, 400, "invalid_json", "body must be a JSON object with \"url\"");
        }
        json_t *url = json_object_get(doc, "url"), *model = json_object_get(doc, "model_id"),
               *cap = json_object_get(doc, "max_inflight");
        int rc = 0;
        if (!json_is_string(url))
            rc = fail(r, 400, "missing_url", "\"url\" (a string) is required");
        else if (model && !json_is_null(model) && !json_is_string(model))
            rc = fail(r, 400, "invalid_model_id", "\"model_id\" must be a string");
        else if (cap && !json_is_null(cap) &&
                 (!json_is_integer(cap) || json_integer_value(cap) < 0 ||
                  json_integer_value(cap) > 1000000))
            rc = fail(r, 400, "invalid_max_inflight", "\"max_inflight\" must be an integer >= 0");
        if (!rc) {
            r->op = IG_ADMIN_ADD;
            r->url = strdup(json_string_value(url));
            r->model_id = json_is_string(model) ? strdup(json_string_value(model)) : NULL;
            r->has_max_inflight = json_is_integer(cap);
            r->max_inflight = json_is_integer(cap) ? (int)json_integer_value(cap) : 0;
        }
        json_decref(doc);
        return rc;
    }
    if (plen > 9 && memcmp(target, "/workers/", 9) == 0) {
        if (method != HTTP_GET && method != HTTP_DELETE)
            return fail(r, 405, "method_not_allowed", "use GET or DELETE");
        r->op = method == HTTP_GET ? IG_ADMIN_GET : IG_ADMIN_DELETE;
        if (parse_id(target + 9, plen - 9, &r->id))
            return fail(r, 404, "worker_not_found", "no such worker id");
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
            rc = fail(r, 422, "missing_worker", reg ? "\"worker_addr\" is required"
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
    if (path_eq(target, plen, "/add_worker") || path_eq(target, plen, "/remove_worker")) {
        int add = path_eq(target, plen, "/add_worker");
        if (method != HTTP_POST)
            return fail(r, 405, "method_not_allowed", "use POST");
        r->url = ig_query_get(query, "url");
        if (!r->url || !*r->url)
            return fail(r, 400, "missing_url", "the url query parameter is required");
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
    free(r->model);
    r->url = r->model_id = r->model = NULL;
}
