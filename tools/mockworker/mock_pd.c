/* The mock's prefill and decode roles in SGLang's PD protocol (mock_pd.h). */
#include "mock_pd.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROOM_SLOTS (1u << 17)
#define POLL_MS 20

/* rooms this prefill has served: an open-addressing set, cleared when 3/4 full */
static uint64_t *rooms;
static unsigned n_rooms;

static void room_add(uint64_t r)
{
    if (!rooms && !(rooms = calloc(ROOM_SLOTS, sizeof(*rooms))))
        return;
    if (n_rooms >= ROOM_SLOTS / 4 * 3) {
        memset(rooms, 0, ROOM_SLOTS * sizeof(*rooms));
        n_rooms = 0;
    }
    uint64_t v = r + 1; /* 0 marks an empty slot */
    for (unsigned i = (unsigned)(v * 0x9e3779b97f4a7c15ULL >> 47) & (ROOM_SLOTS - 1);;
         i = (i + 1) & (ROOM_SLOTS - 1)) {
        if (rooms[i] == v)
            return;
        if (!rooms[i]) {
            rooms[i] = v;
            n_rooms++;
            return;
        }
    }
}

int mock_pd_room_known(uint64_t r)
{
    uint64_t v = r + 1;
    if (!rooms)
        return 0;
    for (unsigned i = (unsigned)(v * 0x9e3779b97f4a7c15ULL >> 47) & (ROOM_SLOTS - 1);;
         i = (i + 1) & (ROOM_SLOTS - 1)) {
        if (rooms[i] == v)
            return 1;
        if (!rooms[i])
            return 0;
    }
}

/* The batch size of a generate/completions body (0: one prompt), as SGLang reads it. */
static int batch_of(json_t *doc)
{
    static const char *const keys[] = {"text", "prompt", "input_ids"};
    for (size_t k = 0; k < 3; k++) {
        json_t *v = json_object_get(doc, keys[k]);
        if (json_is_array(v) && json_array_size(v) &&
            (json_is_string(json_array_get(v, 0)) || json_is_array(json_array_get(v, 0))))
            return (int)json_array_size(v);
    }
    return 0;
}

static int is_room(json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) >= 0;
}

/* One room (SGLang) or block id (vLLM) into out (at most cap). 0, or -1 with why. */
static int take_room(json_t *v, uint64_t *out, int cap, int *n, const char *refusal, char *why, size_t wcap)
{
    if (!is_room(v)) {
        snprintf(why, wcap, "%s", refusal);
        return -1;
    }
    if (*n < cap)
        out[(*n)++] = (uint64_t)json_integer_value(v);
    return 0;
}

/* The three fields, checked as a real engine would; the rooms into out (at most cap). */
static int check(json_t *doc, const char **host, int *port, uint64_t *out, int cap, int *n, char *why,
                 size_t wcap)
{
    json_t *h = json_object_get(doc, "bootstrap_host"), *p = json_object_get(doc, "bootstrap_port"),
           *r = json_object_get(doc, "bootstrap_room");
    int batch = batch_of(doc);
    if (!h || !r) {
        snprintf(why, wcap,
                 "a disaggregated request needs bootstrap_host, bootstrap_port and bootstrap_room");
        return -1;
    }
    if (batch) {
        if (!json_is_array(h) || !json_is_array(r) || (int)json_array_size(h) != batch ||
            (int)json_array_size(r) != batch || (json_is_array(p) && (int)json_array_size(p) != batch)) {
            snprintf(why, wcap, "a batch of %d needs bootstrap arrays of %d", batch, batch);
            return -1;
        }
        h = json_array_get(h, 0);
        p = json_is_array(p) ? json_array_get(p, 0) : p;
    }
    if (!json_is_string(h) || (p && !json_is_null(p) && !json_is_integer(p))) {
        snprintf(why, wcap, "bootstrap_host must be a string and bootstrap_port an integer");
        return -1;
    }
    *host = json_string_value(h);
    *port = json_is_integer(p) ? (int)json_integer_value(p) : MOCK_PD_DEFAULT_BOOTSTRAP_PORT;
    *n = 0;
    for (int i = 0; i < (batch ? batch : 1); i++)
        if (take_room(batch ? json_array_get(r, (size_t)i) : r, out, cap, n,
                      "bootstrap_room must be a non-negative integer", why, wcap))
            return -1;
    return 0;
}

/* vLLM's decode side: kv_transfer_params from its prefill, with the blocks to pull. */
static int check_vllm(json_t *doc, const char **host, int *port, uint64_t *out, int cap, int *n, char *why,
                      size_t wcap)
{
    json_t *kv = json_object_get(doc, "kv_transfer_params");
    json_t *h = json_object_get(kv, "remote_host"), *p = json_object_get(kv, "remote_port"),
           *ids = json_object_get(kv, "remote_block_ids"), *eng = json_object_get(kv, "remote_engine_id");
    if (!json_is_object(kv) || !json_is_true(json_object_get(kv, "do_remote_prefill")) ||
        !json_is_string(h) || !json_is_integer(p) || !json_is_array(ids) || !json_array_size(ids) ||
        !json_is_string(eng)) {
        snprintf(
            why, wcap,
            "this decode serves requests prefilled elsewhere: kv_transfer_params with do_remote_prefill, "
            "remote_engine_id, remote_host, remote_port and remote_block_ids");
        return -1;
    }
    *host = json_string_value(h);
    *port = (int)json_integer_value(p);
    *n = 0;
    for (size_t i = 0; i < json_array_size(ids); i++)
        if (take_room(json_array_get(ids, i), out, cap, n, "remote_block_ids must be non-negative integers",
                      why, wcap))
            return -1;
    return 0;
}

int mock_pd_vllm_prefill(const char *body, size_t len, const char *engine_id, const char *host, int side_port,
                         char *params, size_t pcap, char *why, size_t wcap)
{
    static uint64_t next_block = 0x5eed;
    json_error_t jerr;
    json_t *doc =
        json_loadb(body ? body : "", len, 0, &jerr); /* a key given twice: its last value, as vLLM */
    json_t *kv = json_object_get(doc, "kv_transfer_params"), *mt = json_object_get(doc, "max_tokens"),
           *st = json_object_get(doc, "stream");
    int rc = -1;
    if (!json_is_object(kv) || !json_is_true(json_object_get(kv, "do_remote_decode")))
        snprintf(why, wcap, "a remote-decode prefill needs kv_transfer_params {\"do_remote_decode\": true}");
    else if (!json_is_integer(mt) || json_integer_value(mt) != 1)
        snprintf(why, wcap, "a remote-decode prefill generates one token (max_tokens 1)");
    else if (json_is_true(st))
        snprintf(why, wcap, "a remote-decode prefill does not stream");
    else
        rc = 0;
    if (!rc) {
        uint64_t block = (next_block = next_block * 6364136223846793005ULL + 1442695040888963407ULL) >> 1;
        room_add(block);
        snprintf(params, pcap,
                 "{\"do_remote_prefill\":true,\"do_remote_decode\":false,\"remote_block_ids\":[%llu],"
                 "\"remote_engine_id\":\"%s\",\"remote_host\":\"%s\",\"remote_port\":%d,\"tp_size\":1}",
                 (unsigned long long)block, engine_id, host, side_port);
    }
    json_decref(doc);
    return rc;
}

int mock_pd_admit(int role, const char *body, size_t len, const char *host, int bootstrap_port, char *why,
                  size_t cap)
{
    json_error_t jerr;
    json_t *doc = json_loadb(body ? body : "", len, 0, &jerr);
    uint64_t rs[MOCK_PD_MAX_ROOMS];
    const char *bh;
    int bp, n, rc = check(doc, &bh, &bp, rs, MOCK_PD_MAX_ROOMS, &n, why, cap);
    if (!rc && role == MOCK_PD_PREFILL && (strcmp(bh, host) != 0 || bp != bootstrap_port)) {
        snprintf(why, cap, "bootstrap %s:%d is not this prefill's (%s:%d)", bh, bp, host, bootstrap_port);
        rc = -1;
    }
    if (!rc && role == MOCK_PD_PREFILL)
        for (int i = 0; i < n; i++)
            room_add(rs[i]);
    json_decref(doc);
    return rc;
}

/* ---- the decode side: ask the prefill's bootstrap server for each room ---- */

struct mock_pd_fetch {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_write_t wr;
    uv_timer_t timer;
    struct sockaddr_in addr;
    uint64_t rooms[MOCK_PD_MAX_ROOMS];
    int n, next;
    uint64_t deadline;
    char req[96], resp[64];
    size_t got;
    int tcp_open, closing;
    mock_pd_cb cb;
    void *arg; /* NULL once cancelled */
};

static void try_room(mock_pd_fetch *f);

static void fetch_free(uv_handle_t *h)
{
    mock_pd_fetch *f = h->data;
    if (--f->closing == 0)
        free(f);
}

static void finish(mock_pd_fetch *f, int ok, const char *why)
{
    if (f->arg)
        f->cb(f->arg, ok, why);
    f->arg = NULL;
    f->closing = 1 + f->tcp_open;
    uv_close((uv_handle_t *)&f->timer, fetch_free);
    if (f->tcp_open)
        uv_close((uv_handle_t *)&f->tcp, fetch_free);
}

static void retry_cb(uv_timer_t *t)
{
    try_room(t->data);
}

/* this room is not there (yet): ask again, until the KV-transfer deadline */
static void not_yet(mock_pd_fetch *f)
{
    if (uv_now(f->loop) >= f->deadline) {
        char why[160];
        snprintf(why, sizeof(why), "KV transfer failed: bootstrap room %llu never arrived from the prefill",
                 (unsigned long long)f->rooms[f->next]);
        finish(f, 0, why);
        return;
    }
    uv_timer_start(&f->timer, retry_cb, POLL_MS, 0);
}

static void tcp_closed(uv_handle_t *h)
{
    mock_pd_fetch *f = h->data;
    f->tcp_open = 0;
    if (!f->arg) {
        if (!f->closing)
            finish(f, 0, NULL); /* cancelled while asking */
        else if (--f->closing == 0)
            free(f);
        return;
    }
    int ok = f->got >= 12 && memcmp(f->resp + 9, "200", 3) == 0;
    if (ok && ++f->next == f->n) {
        finish(f, 1, NULL);
        return;
    }
    if (ok)
        try_room(f);
    else
        not_yet(f);
}

static void alloc_cb(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    mock_pd_fetch *f = h->data;
    (void)s;
    *b = uv_buf_init(f->resp + f->got, (unsigned)(sizeof(f->resp) - 1 - f->got));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    mock_pd_fetch *f = s->data;
    (void)b;
    if (n > 0)
        f->got += (size_t)n;
    if (n < 0 || f->got >= sizeof(f->resp) - 1) /* the status line is all we read */
        uv_close((uv_handle_t *)s, tcp_closed);
}

static void written(uv_write_t *w, int status)
{
    mock_pd_fetch *f = w->data;
    if (status || uv_read_start((uv_stream_t *)&f->tcp, alloc_cb, read_cb))
        uv_close((uv_handle_t *)&f->tcp, tcp_closed);
}

static void connected(uv_connect_t *c, int status)
{
    mock_pd_fetch *f = c->data;
    if (status) {
        uv_close((uv_handle_t *)&f->tcp, tcp_closed);
        return;
    }
    int len = snprintf(f->req, sizeof(f->req), "GET /bootstrap/room/%llu HTTP/1.0\r\n\r\n",
                       (unsigned long long)f->rooms[f->next]);
    uv_buf_t b = uv_buf_init(f->req, (unsigned)len);
    f->wr.data = f;
    if (uv_write(&f->wr, (uv_stream_t *)&f->tcp, &b, 1, written))
        uv_close((uv_handle_t *)&f->tcp, tcp_closed);
}

static void try_room(mock_pd_fetch *f)
{
    if (!f->arg) {
        finish(f, 0, NULL);
        return;
    }
    f->got = 0;
    uv_tcp_init(f->loop, &f->tcp);
    f->tcp.data = f;
    f->tcp_open = 1;
    f->conn.data = f;
    if (uv_tcp_connect(&f->conn, &f->tcp, (struct sockaddr *)&f->addr, connected))
        uv_close((uv_handle_t *)&f->tcp, tcp_closed);
}

mock_pd_fetch *mock_pd_fetch_start(uv_loop_t *loop, const char *body, size_t len, int timeout_ms, int vllm,
                                   mock_pd_cb cb, void *arg, char *why, size_t cap)
{
    json_error_t jerr;
    json_t *doc = json_loadb(body ? body : "", len, 0, &jerr);
    mock_pd_fetch *f = calloc(1, sizeof(*f));
    const char *host;
    int port;
    if (!f || (vllm ? check_vllm : check)(doc, &host, &port, f->rooms, MOCK_PD_MAX_ROOMS, &f->n, why, cap)) {
        json_decref(doc);
        free(f);
        return NULL;
    }
    f->addr.sin_family = AF_INET;
    f->addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &f->addr.sin_addr) != 1 || port <= 0) {
        snprintf(why, cap, "bootstrap %s:%d is not an address this decode can reach", host, port);
        json_decref(doc);
        free(f);
        return NULL;
    }
    json_decref(doc);
    f->loop = loop;
    f->cb = cb;
    f->arg = arg;
    f->deadline = uv_now(loop) + (uint64_t)timeout_ms;
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    try_room(f);
    return f;
}

void mock_pd_fetch_cancel(mock_pd_fetch *f)
{
    f->arg = NULL; /* its next step frees it */
}
