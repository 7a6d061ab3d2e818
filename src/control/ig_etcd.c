/* etcd's v3 JSON gateway (ig_etcd.h). */
#include "ig_etcd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/ig_buf.h"
#include "../registry/ig_registry.h"
#include "../upstream/ig_httpc.h"

typedef struct call {
    struct call *next;
    const char *path;
    char *body;
    ig_etcd_cb cb;
    void *arg;
    int tries;
} call;

struct ig_etcd {
    uv_loop_t *loop;
    ig_httpc **conns;
    int n, cur;
    double timeout;
    call *head, *tail;
    int busy;
    uv_timer_t kick; /* the next call goes from here, never from inside an answer */
    /* the watch: its own connections (a stream holds one for good) */
    ig_httpc **wconns;
    int wcur, watching;
    char *wbody;  /* the create request */
    ig_buf wline; /* the answer's current line (one JSON message a line) */
    void (*changed)(void *arg);
    void (*up)(void *arg, int on);
    void *warg;
    uv_timer_t wretry; /* the next attempt after a break; also "something changed" from outside the parser */
    int wchanged;
};

#define WATCH_RETRY_MS 500

static void run(ig_etcd *e);

static void kick_cb(uv_timer_t *t)
{
    run(t->data);
}

ig_etcd *ig_etcd_new(uv_loop_t *loop, char *const *endpoints, int n, double timeout_secs)
{
    ig_etcd *e = calloc(1, sizeof(*e));
    if (!e || !(e->conns = calloc((size_t)(n ? n : 1), sizeof(*e->conns)))) {
        free(e);
        return NULL;
    }
    e->loop = loop;
    e->timeout = timeout_secs;
    uv_timer_init(loop, &e->kick);
    e->kick.data = e;
    uv_timer_init(loop, &e->wretry);
    e->wretry.data = e;
    ig_buf_init(&e->wline, 1u << 20);
    if (!(e->wconns = calloc((size_t)(n ? n : 1), sizeof(*e->wconns)))) {
        free(e->conns);
        free(e);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        char host[256], hh[300], ps[8];
        uint16_t port;
        int tls;
        const char *why;
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
        if (ig_url_parse(endpoints[i], host, sizeof(host), &port, &tls, NULL, &why) || tls)
            continue; /* etcd's gateway over TLS is not spoken (yet): say so at start */
        snprintf(ps, sizeof(ps), "%u", port);
        if (getaddrinfo(host, ps, &hints, &res) || !res)
            continue;
        snprintf(hh, sizeof(hh), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
        ig_httpc *c = ig_httpc_new(loop, res->ai_addr, hh, NULL);
        ig_httpc *w = c ? ig_httpc_new(loop, res->ai_addr, hh, NULL) : NULL;
        freeaddrinfo(res);
        if (w) {
            e->wconns[e->n] = w;
            e->conns[e->n++] = c;
        } else if (c) {
            ig_httpc_close(c);
        }
    }
    if (!e->n) {
        ig_etcd_free(e);
        return NULL;
    }
    return e;
}

static void freed(uv_handle_t *h)
{
    free(h->data);
}

void ig_etcd_free(ig_etcd *e)
{
    if (!e)
        return;
    e->watching = 0;
    for (int i = 0; i < e->n; i++) {
        ig_httpc_close(e->conns[i]); /* an answer under way comes back cancelled */
        ig_httpc_close(e->wconns[i]);
    }
    free(e->wconns);
    free(e->wbody);
    ig_buf_free(&e->wline);
    uv_close((uv_handle_t *)&e->wretry, NULL);
    while (e->head) { /* the process is stopping: nobody waits for these */
        call *c = e->head;
        e->head = c->next;
        free(c->body);
        free(c);
    }
    free(e->conns);
    uv_close((uv_handle_t *)&e->kick, freed);
}

static void answered(void *arg, int status, const char *body, size_t len, const char *err)
{
    ig_etcd *e = arg;
    call *c = e->head;
    e->busy = 0;
    if (!c || (err && !strcmp(err, "cancelled")))
        return;
    if (!status && ++c->tries < e->n) { /* this member is down: the next one */
        e->cur = (e->cur + 1) % e->n;
        uv_timer_start(&e->kick, kick_cb, 0, 0);
        return;
    }
    if (!status)
        e->cur = (e->cur + 1) % e->n; /* the next call starts elsewhere */
    e->head = c->next;
    if (!e->head)
        e->tail = NULL;
    json_error_t jerr;
    json_t *doc = status >= 200 && status < 300 ? json_loadb(body ? body : "", len, 0, &jerr) : NULL;
    char why[160];
    if (!status)
        snprintf(why, sizeof(why), "etcd unreachable: %s", err ? err : "no answer");
    else if (!doc)
        snprintf(why, sizeof(why), "etcd answered %d", status);
    c->cb(c->arg, doc != NULL, doc, doc ? NULL : why);
    json_decref(doc);
    free(c->body);
    free(c);
    uv_timer_start(&e->kick, kick_cb, 0, 0);
}

static void run(ig_etcd *e)
{
    if (e->busy || !e->head)
        return;
    call *c = e->head;
    e->busy = 1;
    if (ig_httpc_request(e->conns[e->cur], "POST", c->path, "content-type: application/json\r\n", c->body,
                         strlen(c->body), e->timeout, answered, e)) {
        e->busy = 0; /* the connection is still finishing: again in a moment */
        uv_timer_start(&e->kick, kick_cb, 1, 0);
    }
}

/* Queue a call with body doc (taken). */
static int enqueue(ig_etcd *e, const char *path, json_t *doc, ig_etcd_cb cb, void *arg)
{
    call *c = calloc(1, sizeof(*c));
    char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!c || !body) {
        free(c);
        free(body);
        return -ENOMEM;
    }
    *c = (call){.path = path, .body = body, .cb = cb, .arg = arg};
    if (e->tail)
        e->tail->next = c;
    else
        e->head = c;
    e->tail = c;
    uv_timer_start(&e->kick, kick_cb, 0, 0); /* callers may be inside an answer */
    return 0;
}

static char *b64(const char *s, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    return out;
}

static json_t *b64_json(const char *s, size_t n)
{
    char *t = b64(s, n);
    json_t *j = t ? json_string(t) : NULL;
    free(t);
    return j;
}

int ig_etcd_put(ig_etcd *e, const char *key, const char *value, int64_t lease, ig_etcd_cb cb, void *arg)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "key", b64_json(key, strlen(key)));
    json_object_set_new(doc, "value", b64_json(value, strlen(value)));
    if (lease) {
        char id[24];
        snprintf(id, sizeof(id), "%lld", (long long)lease);
        json_object_set_new(doc, "lease", json_string(id));
    }
    return enqueue(e, "/v3/kv/put", doc, cb, arg);
}

int ig_etcd_range_prefix(ig_etcd *e, const char *prefix, ig_etcd_cb cb, void *arg)
{
    size_t n = strlen(prefix);
    char *end = strdup(prefix);
    if (!end || !n) {
        free(end);
        return -EINVAL;
    }
    end[n - 1]++; /* the keys from prefix up to (not with) this one: the prefix's */
    json_t *doc = json_object();
    json_object_set_new(doc, "key", b64_json(prefix, n));
    json_object_set_new(doc, "range_end", b64_json(end, n));
    free(end);
    return enqueue(e, "/v3/kv/range", doc, cb, arg);
}

static json_t *put_op(const char *key, const char *value)
{
    json_t *op = json_object();
    json_object_set_new(op, "key", b64_json(key, strlen(key)));
    json_object_set_new(op, "value", b64_json(value, strlen(value)));
    return json_pack("{s:o}", "request_put", op);
}

int ig_etcd_txn(ig_etcd *e, char *const *keys, char *const *values, int n, ig_etcd_cb cb, void *arg)
{
    if (n <= 0 || n > IG_ETCD_TXN_MAX)
        return -EINVAL;
    json_t *ops = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(ops, values[i] ? put_op(keys[i], values[i])
                                             : json_pack("{s:{s:o}}", "request_delete_range", "key",
                                                         b64_json(keys[i], strlen(keys[i]))));
    return enqueue(e, "/v3/kv/txn", json_pack("{s:o}", "success", ops), cb, arg);
}

int ig_etcd_put_if_absent(ig_etcd *e, const char *key, const char *value, ig_etcd_cb cb, void *arg)
{
    /* created at revision 0: it does not exist */
    json_t *cmp = json_pack("{s:s,s:s,s:o,s:s}", "result", "EQUAL", "target", "CREATE", "key",
                            b64_json(key, strlen(key)), "create_revision", "0");
    json_t *doc = json_pack("{s:[o],s:[o],s:[{s:{s:o}}]}", "compare", cmp, "success", put_op(key, value),
                            "failure", "request_range", "key", b64_json(key, strlen(key)));
    return enqueue(e, "/v3/kv/txn", doc, cb, arg);
}

int ig_etcd_get(ig_etcd *e, const char *key, ig_etcd_cb cb, void *arg)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "key", b64_json(key, strlen(key)));
    return enqueue(e, "/v3/kv/range", doc, cb, arg);
}

int ig_etcd_delete(ig_etcd *e, const char *key, ig_etcd_cb cb, void *arg)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "key", b64_json(key, strlen(key)));
    return enqueue(e, "/v3/kv/deleterange", doc, cb, arg);
}

static int lease_call(ig_etcd *e, const char *path, int64_t id, int ttl, ig_etcd_cb cb, void *arg)
{
    char s[24];
    snprintf(s, sizeof(s), "%lld", (long long)id);
    json_t *doc = json_pack("{s:s}", "ID", s);
    if (ttl)
        json_object_set_new(doc, "TTL", json_integer(ttl));
    return enqueue(e, path, doc, cb, arg);
}

int ig_etcd_lease_grant(ig_etcd *e, int ttl, ig_etcd_cb cb, void *arg)
{
    return lease_call(e, "/v3/lease/grant", 0, ttl, cb, arg);
}

int ig_etcd_lease_keepalive(ig_etcd *e, int64_t id, ig_etcd_cb cb, void *arg)
{
    return lease_call(e, "/v3/lease/keepalive", id, 0, cb, arg);
}

int ig_etcd_lease_revoke(ig_etcd *e, int64_t id, ig_etcd_cb cb, void *arg)
{
    return lease_call(e, "/v3/lease/revoke", id, 0, cb, arg);
}

static char *unb64(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    char *out = malloc(n / 4 * 3 + 4);
    if (!out)
        return NULL;
    int k = n ? EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n) : 0;
    if (k < 0) {
        free(out);
        return NULL;
    }
    while (n && s[n - 1] == '=' && k > 0) { /* the decoder counts padding as bytes */
        n--;
        k--;
    }
    out[k] = '\0';
    return out;
}

int ig_etcd_kv(json_t *kv, char **key, char **value)
{
    *key = unb64(json_string_value(json_object_get(kv, "key")));
    *value = unb64(json_string_value(json_object_get(kv, "value")));
    if (*key && *value)
        return 0;
    free(*key);
    free(*value);
    *key = *value = NULL;
    return -EINVAL;
}

/* ---- the watch ---- */

static void watch_start(ig_etcd *e);

/* after a break, or a batch of changes: from a timer, never from inside the parser */
static void wretry_cb(uv_timer_t *t)
{
    ig_etcd *e = t->data;
    if (!e->watching)
        return;
    if (e->wchanged) {
        e->wchanged = 0;
        e->changed(e->warg);
    }
    if (!ig_httpc_busy(e->wconns[e->wcur]))
        watch_start(e);
}

static void watch_line(ig_etcd *e, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *doc = json_loadb(line, len, 0, &jerr), *res = json_object_get(doc, "result");
    if (json_is_true(json_object_get(res, "canceled")) || json_object_get(doc, "error")) {
        e->wchanged = 1; /* compacted or refused: start again, re-read */
    } else if (json_is_true(json_object_get(res, "created"))) {
        e->up(e->warg, 1);
        e->wchanged = 1; /* what changed before the watch existed: the caller reads it */
    } else if (json_array_size(json_object_get(res, "events"))) {
        e->wchanged = 1;
    }
    json_decref(doc);
    if (e->wchanged && !uv_is_active((uv_handle_t *)&e->wretry))
        uv_timer_start(&e->wretry, wretry_cb, 0, 0);
}

static void watch_data(void *arg, int status, const char *data, size_t len)
{
    ig_etcd *e = arg;
    if (status != 200)
        return; /* its end is reported by watch_ended */
    for (const char *nl; len && (nl = memchr(data, '\n', len));) {
        size_t n = (size_t)(nl - data);
        if (ig_buf_append(&e->wline, data, n) == 0 && e->wline.len)
            watch_line(e, e->wline.data, e->wline.len);
        e->wline.len = 0;
        data += n + 1;
        len -= n + 1;
    }
    if (len && ig_buf_append(&e->wline, data, len))
        e->wline.len = 0; /* a line past 1 MiB: dropped (the next read catches up) */
}

static void watch_ended(void *arg, int status, const char *body, size_t blen, const char *err)
{
    ig_etcd *e = arg;
    (void)body, (void)blen;
    if (err && !strcmp(err, "cancelled"))
        return;
    e->up(e->warg, 0);
    e->wcur = (e->wcur + 1) % e->n;
    e->wchanged = 1; /* whatever happened meanwhile: read again once it is back */
    (void)status;
    if (e->watching)
        uv_timer_start(&e->wretry, wretry_cb, WATCH_RETRY_MS, 0);
}

static void watch_start(ig_etcd *e)
{
    e->wline.len = 0;
    if (ig_httpc_stream(e->wconns[e->wcur], "POST", "/v3/watch", NULL, e->wbody, strlen(e->wbody), watch_data,
                        watch_ended, e))
        uv_timer_start(&e->wretry, wretry_cb, WATCH_RETRY_MS, 0);
}

int ig_etcd_watch(ig_etcd *e, const char *prefix, void (*changed)(void *arg), void (*up)(void *arg, int on),
                  void *arg)
{
    size_t n = strlen(prefix);
    char *end = strdup(prefix);
    if (!end || !n || e->watching) {
        free(end);
        return -EINVAL;
    }
    end[n - 1]++;
    json_t *doc = json_pack("{s:{s:o,s:o}}", "create_request", "key", b64_json(prefix, n), "range_end",
                            b64_json(end, n));
    free(end);
    e->wbody = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!e->wbody)
        return -ENOMEM;
    e->changed = changed;
    e->up = up;
    e->warg = arg;
    e->watching = 1;
    watch_start(e);
    return 0;
}

int64_t ig_etcd_int(json_t *v)
{
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    const char *s = json_string_value(v);
    return s ? (int64_t)strtoll(s, NULL, 10) : 0;
}
