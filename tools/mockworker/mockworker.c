/* infergate-mockworker: a fast fake OpenAI/SGLang inference worker for tests
 * and load tests. --processes K forks K processes that share ONE listening
 * socket without SO_REUSEPORT, like `uvicorn --workers K`, so the accept()
 * race that pins keep-alive load is reproduced faithfully. */
#include <errno.h>
#include <jansson.h>
#include <llhttp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <uv.h>

#include "../../src/core/ig_buf.h"
#include "../../src/api/ig_body_scan.h"
#include "mock_kvcache.h"
#include "mock_pd.h"
#include "mock_sessions.h"

#define MAX_PROCS 256
#define MAX_MODELS 16

typedef struct proc_stats {
    atomic_int pid;
    atomic_ulong connections, requests, completed, aborted;
    atomic_long open; /* connections open right now */
} proc_stats;

typedef struct shared_stats {
    /* runtime switches (POST /mock/health, /mock/fail), shared by every process */
    atomic_int health_status, health_delay_ms, fail_status;
    atomic_ulong health_checks;
    /* RL control: paused (new generations wait; with --pause-mode abort running
     * streams end at once), weight version, and how often each endpoint ran */
    atomic_int paused;
    atomic_long version;
    atomic_ulong control_calls, flushes;
    atomic_int inflight;
    atomic_int max_inflight_seen;
    atomic_ulong rejected;
    atomic_ulong generations; /* generation requests taken (not probes, discovery or /stats) */
    atomic_ulong prompt_tokens, cached_tokens; /* the simulated prefix cache */
    proc_stats procs[MAX_PROCS];
} shared_stats;

static struct {
    char host[64];
    int port;
    const char *models[MAX_MODELS];
    int n_models;
    const char *worker_id;
    int ttft_ms, tokens, token_interval_ms, max_inflight, processes, embedding_dim;
    int drop_reused;           /* close, unanswered, any request after the first on a connection */
    int ports;                 /* listen on this many ports (one process): a large fleet for benchmarks */
    int cpu_us_per_token;      /* busy CPU per token, like a Python server's per-token work */
    int control_delay_ms;      /* each control endpoint (pause, set_version, ...) takes this long */
    int pause_abort;           /* pause aborts running streams instead of holding new ones only */
    const char *admin_api_key; /* AReaL session endpoints check it (NULL: any bearer) */
    long kv_cache_tokens;      /* prefix cache capacity (0: none) */
    int prefill_us_per_token;  /* prefill time per uncached prompt token, one prefill at a time */
    int role;                  /* MOCK_PD_*: one side of SGLang's prefill/decode disaggregation */
    int bootstrap_port;        /* prefill: its bootstrap server's port */
    int pd_vllm;               /* --pd-protocol vllm: vLLM's NIXL handshake instead of SGLang's */
    int kv_timeout_ms;         /* decode: how long it waits for the prefill's KV */
} opt = {"127.0.0.1", 0, {0}, 0, "mock-0", 0, 16, 0, 0, 1, 8, 0, 1, 0, 0, 0, NULL, 0, 0, 0, 0, 0, 3000};

static shared_stats *stats;
static proc_stats *me;
static int my_pid;

enum kind { K_CHAT, K_COMPLETIONS, K_GENERATE, K_EMBEDDINGS };

typedef struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    llhttp_t parser;
    ig_buf in; /* raw bytes read, parsed in place */
    size_t parsed;
    ig_buf body;
    char url[256];
    size_t url_len;
    char hname[64];
    size_t hname_len;
    char auth[512]; /* the Authorization value, for AReaL sessions */
    size_t auth_len;
    int in_value;
    char echo_headers_json[8192];
    size_t echo_len;
    /* request controls */
    int want_echo, ttft_ms, interval_ms, status_override, close_now, max_tokens;
    /* active response */
    unsigned long nreq;
    int data_req;            /* counted in completed */
    char control_reply[256]; /* answered after --control-delay-ms */
    int in_msg;
    int busy, streaming, stream, sent, ntokens, counted_inflight, closing, handles, keep_alive;
    enum kind kind;
    long version; /* the weight version when the request arrived */
    long prompt_tokens, cached_tokens;
    int aborted; /* a pause (--pause-mode abort) cut its stream */
    char model[IG_MODEL_MAX + 1];
    char id[32];
    mock_pd_fetch *kv;   /* decode: waiting for the prefill's KV */
    char kv_params[320]; /* vLLM's prefill: the kv_transfer_params its answer carries ("": none) */
    int logprob;         /* "return_logprob": meta_info carries input_token_logprobs */
} conn;

typedef struct wreq {
    uv_write_t req;
    char data[];
} wreq;

static void conn_parse(conn *c);

static void free_cb(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->handles == 0) {
        ig_buf_free(&c->in);
        ig_buf_free(&c->body);
        free(c);
    }
}

static void end_inflight(conn *c)
{
    if (c->counted_inflight) {
        atomic_fetch_sub(&stats->inflight, 1);
        c->counted_inflight = 0;
    }
}

static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    atomic_fetch_sub(&me->open, 1);
    if (c->busy) {
        atomic_fetch_add(&me->aborted, 1);
        c->busy = 0;
    }
    end_inflight(c);
    if (c->kv) {
        mock_pd_fetch_cancel(c->kv);
        c->kv = NULL;
    }
    uv_close((uv_handle_t *)&c->tcp, free_cb);
    uv_close((uv_handle_t *)&c->timer, free_cb);
}

static void write_cb(uv_write_t *r, int status)
{
    conn *c = r->data;
    free(r);
    if (status < 0)
        conn_close(c);
}

static void send_bytes(conn *c, const char *p, size_t n)
{
    if (c->closing || !n)
        return;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int done = 0;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        done = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (done == UV_EAGAIN)
            done = 0;
        if (done < 0) {
            conn_close(c);
            return;
        }
        if ((size_t)done == n)
            return;
    }
    wreq *w = malloc(sizeof(*w) + n - (size_t)done);
    if (!w) {
        conn_close(c);
        return;
    }
    memcpy(w->data, p + done, n - (size_t)done);
    w->req.data = c;
    b = uv_buf_init(w->data, (unsigned)(n - (size_t)done));
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb)) {
        free(w);
        conn_close(c);
    }
}

static int bprintf(ig_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bprintf(ig_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || ig_buf_reserve(b, (size_t)n + 1))
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

static void response_done(conn *c);

static void send_simple(conn *c, int status, const char *reason, const char *ctype, const char *body)
{
    ig_buf b;
    ig_buf_init(&b, 1 << 20);
    bprintf(&b,
            "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\nx-worker-id: %s\r\n"
            "x-worker-pid: %d\r\n%s\r\n%s",
            status, reason, ctype, strlen(body), opt.worker_id, my_pid,
            c->keep_alive ? "" : "connection: close\r\n", body);
    send_bytes(c, b.data, b.len);
    ig_buf_free(&b);
}

/* the model APIs sgl-model-gateway routes besides chat, completions and embeddings */
static int is_model_api(const char *path)
{
    static const char *const apis[] = {"/v1/rerank",   "/rerank",      "/v1/responses",  "/v1/messages",
                                       "/v1/classify", "/v1/tokenize", "/v1/detokenize", "/v1/score"};
    for (size_t i = 0; i < sizeof(apis) / sizeof(apis[0]); i++)
        if (strcmp(path, apis[i]) == 0)
            return 1;
    return 0;
}

static void send_error(conn *c, int status, const char *reason, const char *msg)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"error\":{\"message\":\"%s\",\"type\":\"mock_error\",\"code\":\"%d\"},"
             "\"worker_id\":\"%s\",\"worker_pid\":%d}\n",
             msg, status, opt.worker_id, my_pid);
    end_inflight(c);
    send_simple(c, status, reason, "application/json", body);
}

static void token_text(int i, char *out, size_t cap)
{
    snprintf(out, cap, "tok%d ", i);
}

static void burn_cpu(int us)
{
    if (us <= 0)
        return;
    uint64_t end = uv_hrtime() + (uint64_t)us * 1000;
    while (uv_hrtime() < end)
        ;
}

/* SGLang's meta_info.input_token_logprobs ([logprob, token id, text]): a
 * prefill has the prompt's (the first is null), a decode only its last
 * token's; in PD the client's answer must hold both, the prefill's first */
static const char *input_logprobs(void)
{
    return opt.role == MOCK_PD_DECODE ? "[[-0.125,4,null]]" : "[[null,1,null],[-0.5,2,null],[-0.25,3,null]]";
}

/* one SSE event for token i (or the final one when i < 0), chunk-framed */
static void stream_event(conn *c, ig_buf *b, int i)
{
    burn_cpu(opt.cpu_us_per_token);
    char tok[32] = "";
    if (i >= 0)
        token_text(i, tok, sizeof(tok));
    ig_buf ev;
    char evbuf[1024];
    ev.data = evbuf;
    ev.len = 0;
    ev.cap = ev.max = sizeof(evbuf);
    const char *fin = i >= 0 ? "null" : c->aborted ? "\"abort\"" : "\"stop\"";
    if (c->kind == K_CHAT)
        bprintf(&ev,
                "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"%s\","
                "\"worker_id\":\"%s\",\"worker_pid\":%d,\"weight_version\":%ld,\"choices\":[{\"index\":0,"
                "\"delta\":{%s%s%s},\"finish_reason\":%s}]}\n\n",
                c->id, c->model, opt.worker_id, my_pid, c->version, i >= 0 ? "\"content\":\"" : "", tok,
                i >= 0 ? "\"" : "", fin);
    else if (c->kind == K_COMPLETIONS)
        bprintf(&ev,
                "data: {\"id\":\"%s\",\"object\":\"text_completion\",\"created\":0,\"model\":\"%s\","
                "\"worker_id\":\"%s\",\"worker_pid\":%d,\"choices\":[{\"index\":0,\"text\":\"%s\","
                "\"finish_reason\":%s}]}\n\n",
                c->id, c->model, opt.worker_id, my_pid, tok, fin);
    else
        bprintf(&ev,
                "data: {\"text\":\"%s\",\"worker_id\":\"%s\",\"worker_pid\":%d,\"meta_info\":{"
                "\"id\":\"%s\",\"completion_tokens\":%d,\"finish_reason\":%s%s%s}}\n\n",
                tok, opt.worker_id, my_pid, c->id, i < 0 ? c->ntokens : i + 1,
                i < 0 ? "{\"type\":\"stop\"}" : "null", c->logprob ? ",\"input_token_logprobs\":" : "",
                c->logprob ? input_logprobs() : "");
    bprintf(b, "%zx\r\n", ev.len);
    ig_buf_append(b, ev.data, ev.len);
    ig_buf_append(b, "\r\n", 2);
}

static void stream_tick(uv_timer_t *t);

static void stream_more(conn *c)
{
    ig_buf b;
    ig_buf_init(&b, 64 << 20);
    if (c->sent == 0)
        bprintf(&b,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                "transfer-encoding: chunked\r\nx-worker-id: %s\r\nx-worker-pid: %d\r\n%s\r\n",
                opt.worker_id, my_pid, c->keep_alive ? "" : "connection: close\r\n");
    if (atomic_load(&stats->paused) && opt.pause_abort && c->sent > 0 && c->sent <= c->ntokens) {
        c->sent = c->ntokens + 1; /* aborted by pause: finish the stream now, as SGLang does */
        c->aborted = 1;
    }
    /* with no interval every token goes out at once; otherwise one per tick */
    do {
        if (c->sent < c->ntokens) {
            stream_event(c, &b, c->sent);
        }
        c->sent++;
    } while (c->interval_ms == 0 && c->sent <= c->ntokens);
    int finished = c->sent > c->ntokens;
    if (finished) {
        stream_event(c, &b, -1);
        static const char done[] = "data: [DONE]\n\n";
        bprintf(&b, "%zx\r\n%s\r\n0\r\n\r\n", sizeof(done) - 1, done);
        /* Uncount before the last byte leaves: the gateway may dispatch the
         * next request to a sibling process before this one is scheduled again. */
        end_inflight(c);
    }
    send_bytes(c, b.data, b.len);
    ig_buf_free(&b);
    if (c->closing)
        return;
    if (finished)
        response_done(c);
    else
        uv_timer_start(&c->timer, stream_tick, (uint64_t)c->interval_ms, 0);
}

static void stream_tick(uv_timer_t *t)
{
    stream_more(t->data);
}

static void send_full(conn *c)
{
    ig_buf text, body, out;
    ig_buf_init(&text, 64 << 20);
    ig_buf_init(&body, 64 << 20);
    ig_buf_init(&out, 64 << 20);
    char tok[32];
    burn_cpu(opt.cpu_us_per_token * c->ntokens);
    for (int i = 0; i < c->ntokens; i++) {
        token_text(i, tok, sizeof(tok));
        ig_buf_puts(&text, tok);
    }
    ig_buf_append(&text, "", 1);
    const char *echo = c->want_echo ? c->echo_headers_json : "null";
    if (c->kind == K_CHAT)
        bprintf(&body,
                "{\"id\":\"%s\",\"object\":\"chat.completion\",\"created\":0,\"model\":\"%s\","
                "\"worker_id\":\"%s\",\"worker_pid\":%d,\"weight_version\":%ld,\"received_headers\":%s,"
                "\"choices\":[{\"index\":0,"
                "\"message\":{\"role\":\"assistant\",\"content\":\"%s\"},\"finish_reason\":\"stop\"}],"
                "\"usage\":{\"prompt_tokens\":%ld,\"completion_tokens\":%d,\"total_tokens\":%ld,"
                "\"prompt_tokens_details\":{\"cached_tokens\":%ld}}}\n",
                c->id, c->model, opt.worker_id, my_pid, c->version, echo, text.data, c->prompt_tokens,
                c->ntokens, c->prompt_tokens + c->ntokens, c->cached_tokens);
    else if (c->kind == K_COMPLETIONS)
        bprintf(&body,
                "{\"id\":\"%s\",\"object\":\"text_completion\",\"created\":0,\"model\":\"%s\","
                "\"worker_id\":\"%s\",\"worker_pid\":%d,\"received_headers\":%s,\"choices\":[{\"index\":0,"
                "\"text\":\"%s\",\"finish_reason\":\"stop\"}],"
                "\"usage\":{\"prompt_tokens\":%ld,\"completion_tokens\":%d,\"total_tokens\":%ld,"
                "\"prompt_tokens_details\":{\"cached_tokens\":%ld}}}\n",
                c->id, c->model, opt.worker_id, my_pid, echo, text.data, c->prompt_tokens, c->ntokens,
                c->prompt_tokens + c->ntokens, c->cached_tokens);
    else if (c->kind == K_GENERATE)
        bprintf(
            &body,
            "{\"text\":\"%s\",\"worker_id\":\"%s\",\"worker_pid\":%d,\"received_headers\":%s,"
            "\"meta_info\":{\"id\":\"%s\",\"completion_tokens\":%d,\"finish_reason\":{\"type\":\"stop\"}%s%s}}\n",
            text.data, opt.worker_id, my_pid, echo, c->id, c->ntokens,
            c->logprob ? ",\"input_token_logprobs\":" : "", c->logprob ? input_logprobs() : "");
    else {
        bprintf(&body,
                "{\"object\":\"list\",\"model\":\"%s\",\"worker_id\":\"%s\",\"worker_pid\":%d,"
                "\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[",
                c->model, opt.worker_id, my_pid);
        for (int i = 0; i < opt.embedding_dim; i++)
            bprintf(&body, "%s%.4f", i ? "," : "", (double)((i * 37 + 11) % 100) / 100.0);
        bprintf(&body, "]}],\"usage\":{\"prompt_tokens\":1,\"total_tokens\":1}}\n");
    }
    if (c->kv_params[0] && body.len > 2) { /* vLLM's prefill: what its remote decode needs */
        body.len -= 2;
        bprintf(&body, ",\"kv_transfer_params\":%s}\n", c->kv_params);
    }
    bprintf(&out,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n"
            "x-worker-id: %s\r\nx-worker-pid: %d\r\n%s\r\n",
            body.len, opt.worker_id, my_pid, c->keep_alive ? "" : "connection: close\r\n");
    ig_buf_append(&out, body.data, body.len);
    end_inflight(c); /* before the last byte leaves, as in stream_more */
    send_bytes(c, out.data, out.len);
    ig_buf_free(&text);
    ig_buf_free(&body);
    ig_buf_free(&out);
    if (!c->closing)
        response_done(c);
}

static void first_token(uv_timer_t *t)
{
    conn *c = t->data;
    if (atomic_load(&stats->paused) && !opt.pause_abort) {
        uv_timer_start(&c->timer, first_token, 5, 0); /* held until continue */
        return;
    }
    if (c->stream) {
        stream_more(c);
        return;
    }
    send_full(c);
}

static void shutdown_cb(uv_shutdown_t *s, int status)
{
    (void)status;
    free(s);
}

static void response_done(conn *c)
{
    c->busy = 0;
    end_inflight(c);
    if (c->data_req)
        atomic_fetch_add(&me->completed, 1);
    c->data_req = 0;
    if (!c->keep_alive) {
        uv_shutdown_t *s = malloc(sizeof(*s));
        if (s && uv_shutdown(s, (uv_stream_t *)&c->tcp, shutdown_cb) == 0)
            return; /* the peer closes; our read sees EOF */
        free(s);
        conn_close(c);
        return;
    }
    conn_parse(c);
}

static void health_reply(uv_timer_t *t)
{
    conn *c = t->data;
    int st = atomic_load(&stats->health_status);
    if (st == 0)
        st = 200;
    char body[64];
    snprintf(body, sizeof(body), "{\"status\":%d}\n", st);
    send_simple(c, st, st == 200 ? "OK" : "Mock Health", "application/json", body);
    if (!c->closing)
        response_done(c);
}

/* SGLang's Prometheus page (its v0.5.3 "sglang:" names), as far as
 * /engine_metrics and /get_loads read it: load gauges and a histogram. */
static void send_metrics(conn *c)
{
    ig_buf b;
    ig_buf_init(&b, 1 << 16);
    unsigned long reqs = 0;
    for (int i = 0; i < opt.processes; i++)
        reqs += stats->procs[i].requests;
    int running = atomic_load(&stats->inflight);
    const char *m = opt.n_models ? opt.models[0] : "";
    bprintf(&b,
            "# HELP sglang:num_running_reqs The number of running requests.\n"
            "# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs{model_name=\"%s\"} %d\n"
            "# HELP sglang:num_queue_reqs The number of requests in the waiting queue.\n"
            "# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{model_name=\"%s\"} 0\n"
            "# HELP sglang:num_used_tokens The number of used tokens.\n"
            "# TYPE sglang:num_used_tokens gauge\nsglang:num_used_tokens{model_name=\"%s\"} %d\n"
            "# HELP sglang:token_usage The token usage.\n"
            "# TYPE sglang:token_usage gauge\nsglang:token_usage{model_name=\"%s\"} %.4f\n"
            "# HELP sglang:time_to_first_token_seconds Histogram of time to first token in seconds.\n"
            "# TYPE sglang:time_to_first_token_seconds histogram\n"
            "sglang:time_to_first_token_seconds_bucket{le=\"0.1\",model_name=\"%s\"} %lu\n"
            "sglang:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"%s\"} %lu\n"
            "sglang:time_to_first_token_seconds_sum{model_name=\"%s\"} %.3f\n"
            "sglang:time_to_first_token_seconds_count{model_name=\"%s\"} %lu\n",
            m, running, m, m, running * 100, m, running / 100.0, m, reqs, m, reqs, m,
            reqs * opt.ttft_ms / 1000.0, m, reqs);
    send_simple(c, 200, "OK", "text/plain; version=0.0.4", b.data);
    ig_buf_free(&b);
}

static int path_is(conn *c, const char *p);

static void control_reply_cb(uv_timer_t *t)
{
    conn *c = t->data;
    send_simple(c, 200, "OK", "application/json", c->control_reply);
    if (!c->closing)
        response_done(c);
}

/* An RL control endpoint: act now, answer after --control-delay-ms. */
static int control(conn *c)
{
    long v = atomic_load(&stats->version);
    if (path_is(c, "/pause_generation"))
        atomic_store(&stats->paused, 1);
    else if (path_is(c, "/continue_generation"))
        atomic_store(&stats->paused, 0);
    else if (path_is(c, "/set_version")) {
        const char *b = c->body.data ? strstr(c->body.data, "\"version\"") : NULL;
        if (b && (b = strchr(b, ':')))
            atomic_store(&stats->version, v = strtol(b + 1, NULL, 10));
    } else if (path_is(c, "/flush_cache"))
        atomic_fetch_add(&stats->flushes, 1);
    else if (!path_is(c, "/get_version") && !path_is(c, "/release_memory_occupation") &&
             !path_is(c, "/resume_memory_occupation"))
        return 0;
    atomic_fetch_add(&stats->control_calls, 1);
    snprintf(c->control_reply, sizeof(c->control_reply),
             "{\"ok\":true,\"version\":%ld,\"paused\":%s,\"worker_id\":\"%s\"}\n", v,
             atomic_load(&stats->paused) ? "true" : "false", opt.worker_id);
    if (opt.control_delay_ms > 0)
        uv_timer_start(&c->timer, control_reply_cb, (uint64_t)opt.control_delay_ms, 0);
    else
        control_reply_cb(&c->timer);
    return 1;
}

static void send_stats(conn *c)
{
    ig_buf b;
    ig_buf_init(&b, 1 << 20);
    unsigned long conns = 0, reqs = 0, done = 0, ab = 0;
    long open_now = 0;
    for (int i = 0; i < opt.processes; i++) {
        open_now += stats->procs[i].open;
        conns += stats->procs[i].connections;
        reqs += stats->procs[i].requests;
        done += stats->procs[i].completed;
        ab += stats->procs[i].aborted;
    }
    bprintf(
        &b,
        "{\"worker_id\":\"%s\",\"connections\":%lu,\"open_connections\":%ld,\"requests\":%lu,"
        "\"completed\":%lu,\"aborted\":%lu,\"inflight\":%d,\"max_inflight_seen\":%d,\"rejected\":%lu,\"generations\":%lu,"
        "\"health_checks\":%lu,\"paused\":%d,\"version\":%ld,\"control_calls\":%lu,"
        "\"flushes\":%lu,\"prompt_tokens\":%lu,\"cached_tokens\":%lu,\"processes\":[",
        opt.worker_id, conns, open_now, reqs, done, ab, atomic_load(&stats->inflight),
        atomic_load(&stats->max_inflight_seen), atomic_load(&stats->rejected),
        atomic_load(&stats->generations), atomic_load(&stats->health_checks), atomic_load(&stats->paused),
        atomic_load(&stats->version), atomic_load(&stats->control_calls), atomic_load(&stats->flushes),
        atomic_load(&stats->prompt_tokens), atomic_load(&stats->cached_tokens));
    for (int i = 0; i < opt.processes; i++)
        bprintf(&b, "%s{\"pid\":%d,\"connections\":%lu,\"requests\":%lu,\"aborted\":%lu}", i ? "," : "",
                atomic_load(&stats->procs[i].pid), atomic_load(&stats->procs[i].connections),
                atomic_load(&stats->procs[i].requests), atomic_load(&stats->procs[i].aborted));
    bprintf(&b, "]}\n");
    send_simple(c, 200, "OK", "application/json", b.data);
    ig_buf_free(&b);
}

static int path_is(conn *c, const char *p)
{
    size_t n = strlen(p), l = c->url_len;
    for (size_t i = 0; i < c->url_len; i++)
        if (c->url[i] == '?') {
            l = i;
            break;
        }
    return l == n && memcmp(c->url, p, n) == 0;
}

/* What the engine would tokenize: the model, then the messages' roles and
 * decoded contents (or the prompt), parsed here with jansson, not with the
 * gateway's body scanner. */
static void prompt_text(const conn *c, ig_buf *out)
{
    json_t *doc = json_loadb(c->body.data ? c->body.data : "", c->body.len, 0, NULL);
    json_t *model = json_object_get(doc, "model"), *msgs = json_object_get(doc, "messages");
    if (json_is_string(model))
        ig_buf_puts(out, json_string_value(model));
    ig_buf_puts(out, "\n");
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        ig_buf_puts(out, json_is_string(role) ? json_string_value(role) : "?");
        ig_buf_puts(out, ": ");
        if (json_is_string(content))
            ig_buf_puts(out, json_string_value(content));
        else if (content) {
            char *s = json_dumps(content, JSON_COMPACT | JSON_SORT_KEYS);
            if (s)
                ig_buf_puts(out, s);
            free(s);
        }
        ig_buf_puts(out, "\n");
    }
    static const char *const keys[] = {"prompt", "text", "input", "input_ids"};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        json_t *v = json_object_get(doc, keys[k]);
        if (json_is_string(v))
            ig_buf_puts(out, json_string_value(v));
        else if (v) {
            char *s = json_dumps(v, JSON_COMPACT);
            if (s)
                ig_buf_puts(out, s);
            free(s);
        }
    }
    json_decref(doc);
}

/* The prompt against the prefix cache: what was cached is free, the rest
 * takes --prefill-us-per-token, one prefill at a time per process (a GPU). */
static void prefill(conn *c)
{
    static uint64_t gpu_free_at_us;
    ig_buf text;
    ig_buf_init(&text, 64u << 20);
    prompt_text(c, &text);
    c->cached_tokens = mock_kv_use(text.data ? text.data : "", text.len, &c->prompt_tokens);
    ig_buf_free(&text);
    atomic_fetch_add(&stats->prompt_tokens, (unsigned long)c->prompt_tokens);
    atomic_fetch_add(&stats->cached_tokens, (unsigned long)c->cached_tokens);
    uint64_t now = uv_hrtime() / 1000, start = gpu_free_at_us > now ? gpu_free_at_us : now;
    gpu_free_at_us =
        start + (uint64_t)(c->prompt_tokens - c->cached_tokens) * (uint64_t)opt.prefill_us_per_token;
    c->ttft_ms += (int)((gpu_free_at_us - now + 500) / 1000);
}

static void generate(conn *c);
static void kv_arrived(void *arg, int ok, const char *why);

static void handle(conn *c)
{
    int method = llhttp_get_method(&c->parser);
    c->keep_alive = llhttp_should_keep_alive(&c->parser);
    atomic_fetch_add(&me->requests, 1);
    c->busy = 1;
    if (method == HTTP_GET && path_is(c, "/health")) {
        atomic_fetch_add(&stats->health_checks, 1);
        int delay = atomic_load(&stats->health_delay_ms);
        if (delay > 0)
            uv_timer_start(&c->timer, health_reply, (uint64_t)delay, 0);
        else
            health_reply(&c->timer);
        return;
    }
    if (method == HTTP_POST && (path_is(c, "/mock/health") || path_is(c, "/mock/fail"))) {
        /* ?status=N[&delay_ms=M]: what /health (or every data request) answers from now on */
        const char *q = memchr(c->url, '?', c->url_len);
        int st = 0, delay = 0;
        for (const char *p = q; p && p < c->url + c->url_len;
             p = memchr(p + 1, '&', (size_t)(c->url + c->url_len - p - 1))) {
            if (strncmp(p + 1, "status=", 7) == 0)
                st = atoi(p + 8);
            else if (strncmp(p + 1, "delay_ms=", 9) == 0)
                delay = atoi(p + 10);
        }
        if (path_is(c, "/mock/fail")) {
            atomic_store(&stats->fail_status, st);
        } else {
            atomic_store(&stats->health_status, st);
            atomic_store(&stats->health_delay_ms, delay);
        }
        send_simple(c, 200, "OK", "application/json", "{\"ok\":true}\n");
        response_done(c);
        return;
    }
    if ((method == HTTP_POST || method == HTTP_GET) && control(c))
        return;
    if (method == HTTP_GET && opt.role == MOCK_PD_PREFILL && c->url_len > 16 &&
        memcmp(c->url, "/bootstrap/room/", 16) ==
            0) { /* the bootstrap server: has this room's KV been made? */
        char room[32];
        snprintf(room, sizeof(room), "%.*s", (int)(c->url_len - 16), c->url + 16);
        int known = mock_pd_room_known(strtoull(room, NULL, 10));
        send_simple(c, known ? 200 : 404, known ? "OK" : "Not Found", "application/json",
                    known ? "{\"ready\":true}\n" : "{\"ready\":false}\n");
        response_done(c);
        return;
    }
    if (method == HTTP_GET && path_is(c, "/metrics")) {
        send_metrics(c);
        response_done(c);
        return;
    }
    if (method == HTTP_GET && path_is(c, "/stats")) {
        send_stats(c);
        response_done(c);
        return;
    }
    if (method == HTTP_GET &&
        (path_is(c, "/get_model_info") || path_is(c, "/get_server_info") || path_is(c, "/health_generate"))) {
        /* SGLang's info endpoints, as far as a test needs: which worker answered what */
        ig_buf b;
        ig_buf_init(&b, 4096);
        bprintf(&b, "{\"path\":\"%.*s\",\"model_path\":\"%s\",\"worker_id\":\"%s\",\"worker_pid\":%d}\n",
                (int)c->url_len, c->url, opt.n_models ? opt.models[0] : "", opt.worker_id, (int)getpid());
        send_simple(c, 200, "OK", "application/json", b.data);
        ig_buf_free(&b);
        response_done(c);
        return;
    }
    if (method == HTTP_GET && path_is(c, "/v1/models")) {
        ig_buf b;
        ig_buf_init(&b, 1 << 20);
        bprintf(&b, "{\"object\":\"list\",\"data\":[");
        for (int i = 0; i < opt.n_models; i++)
            bprintf(&b, "%s{\"id\":\"%s\",\"object\":\"model\",\"owned_by\":\"mock\"}", i ? "," : "",
                    opt.models[i]);
        bprintf(&b, "]}\n");
        send_simple(c, 200, "OK", "application/json", b.data);
        ig_buf_free(&b);
        response_done(c);
        return;
    }
    if (method != HTTP_POST) {
        send_error(c, 404, "Not Found", "unknown path");
        response_done(c);
        return;
    }
    char path[256];
    const char *qm = memchr(c->url, '?', c->url_len);
    snprintf(path, sizeof(path), "%.*s", (int)(qm ? (size_t)(qm - c->url) : c->url_len), c->url);
    char *out = NULL;
    int st = mock_sessions_handle(path, c->auth_len ? c->auth : NULL, c->auth_len, c->body.data, c->body.len,
                                  opt.admin_api_key, opt.worker_id, &out);
    if (st) {
        send_simple(c, st, st < 300 ? "OK" : "Error", "application/json", out ? out : "{}");
        free(out);
        response_done(c);
        return;
    }
    if (path_is(c, "/v1/chat/completions") || path_is(c, "/chat/completions"))
        c->kind = K_CHAT;
    else if (path_is(c, "/v1/completions"))
        c->kind = K_COMPLETIONS;
    else if (path_is(c, "/generate"))
        c->kind = K_GENERATE;
    else if (path_is(c, "/v1/embeddings"))
        c->kind = K_EMBEDDINGS;
    else if (is_model_api(path)) { /* sgl's other model APIs: say who answered, and where */
        ig_buf b;
        ig_buf_init(&b, 4096);
        bprintf(&b, "{\"object\":\"mock.api\",\"path\":\"%s\",\"worker_id\":\"%s\",\"worker_pid\":%d}\n",
                path, opt.worker_id, (int)getpid());
        send_simple(c, 200, "OK", "application/json", b.data);
        ig_buf_free(&b);
        response_done(c);
        return;
    } else {
        send_error(c, 404, "Not Found", "unknown path");
        response_done(c);
        return;
    }
    c->data_req = 1;
    c->version = atomic_load(&stats->version);
    c->aborted = 0;
    if (c->kind == K_CHAT && c->auth_len)
        mock_sessions_note_chat(c->auth, c->auth_len, opt.admin_api_key);
    if (c->close_now || (opt.drop_reused && ++c->nreq > 1)) {
        /* simulate a worker dying mid-request */
        conn_close(c);
        return;
    }
    if (!c->status_override)
        c->status_override = atomic_load(&stats->fail_status);
    if (c->status_override) {
        send_error(c, c->status_override, "Mock Status", "status requested by x-mock-status");
        response_done(c);
        return;
    }
    c->kv_params[0] = '\0';
    if (opt.role && c->kind != K_EMBEDDINGS) {
        char why[320];
        if (opt.pd_vllm && opt.role == MOCK_PD_PREFILL
                ? mock_pd_vllm_prefill(c->body.data, c->body.len, opt.worker_id, opt.host, opt.bootstrap_port,
                                       c->kv_params, sizeof(c->kv_params), why, sizeof(why))
            : opt.pd_vllm ? 0
                          : mock_pd_admit(opt.role, c->body.data, c->body.len, opt.host, opt.bootstrap_port,
                                          why, sizeof(why))) {
            send_error(c, 400, "Bad Request", why);
            response_done(c);
            return;
        }
        if (opt.role == MOCK_PD_DECODE) {
            c->kv = mock_pd_fetch_start(uv_default_loop(), c->body.data, c->body.len, opt.kv_timeout_ms,
                                        opt.pd_vllm, kv_arrived, c, why, sizeof(why));
            if (!c->kv) {
                send_error(c, 400, "Bad Request", why);
                response_done(c);
            }
            return;
        }
    }
    generate(c);
}

/* The prefill's KV is here (or never came): generate, or fail as SGLang's decode does. */
static void kv_arrived(void *arg, int ok, const char *why)
{
    conn *c = arg;
    c->kv = NULL;
    if (ok) {
        generate(c);
        return;
    }
    send_error(c, 500, "Internal Server Error", why);
    response_done(c);
}

static void generate(conn *c)
{
    ig_body_fields f;
    const char *err = NULL;
    if (ig_body_scan(c->body.data ? c->body.data : "", c->body.len, &f, &err) != 0) {
        send_error(c, 400, "Bad Request", "invalid JSON body");
        response_done(c);
        return;
    }
    int now = atomic_fetch_add(&stats->inflight, 1) + 1;
    c->counted_inflight = 1;
    atomic_fetch_add(&stats->generations, 1);
    if (opt.max_inflight && now > opt.max_inflight) {
        atomic_fetch_add(&stats->rejected, 1);
        send_error(c, 503, "Service Unavailable", "worker is at --max-inflight");
        response_done(c);
        return;
    }
    int seen = atomic_load(&stats->max_inflight_seen);
    while (now > seen && !atomic_compare_exchange_weak(&stats->max_inflight_seen, &seen, now))
        ;
    snprintf(c->model, sizeof(c->model), "%.*s", f.has_model ? (int)f.model_len : 4,
             f.has_model ? f.model : "mock");
    for (char *p = c->model; *p; p++)
        if (*p == '"' || *p == '\\')
            *p = '_';
    static unsigned long seq;
    snprintf(c->id, sizeof(c->id), "cmpl-%d-%lu", my_pid, ++seq);
    c->prompt_tokens = 1;
    c->cached_tokens = 0;
    if (opt.kv_cache_tokens > 0 || opt.prefill_us_per_token > 0)
        prefill(c);
    c->stream = f.stream && c->kind != K_EMBEDDINGS;
    c->logprob = f.return_logprob;
    c->ntokens = f.max_tokens >= 0 ? (f.max_tokens > 100000 ? 100000 : f.max_tokens) : opt.tokens;
    if (opt.role == MOCK_PD_PREFILL && c->ntokens > 1) /* SGLang's prefill answers after its forward pass */
        c->ntokens = 1;
    c->sent = 0;
    if (c->ttft_ms > 0 || atomic_load(&stats->paused))
        uv_timer_start(&c->timer, first_token, (uint64_t)(c->ttft_ms > 0 ? c->ttft_ms : 5), 0);
    else if (c->stream)
        stream_more(c);
    else if (c->interval_ms > 0 && c->ntokens > 0)
        /* a non-streamed answer still takes the whole generation time */
        uv_timer_start(&c->timer, first_token, (uint64_t)c->interval_ms * (uint64_t)c->ntokens, 0);
    else
        send_full(c);
}

/* ---- parsing ---- */

static int on_begin(llhttp_t *p)
{
    conn *c = p->data;
    c->in_msg = 1;
    c->url_len = 0;
    c->body.len = 0;
    c->hname_len = 0;
    c->in_value = 0;
    c->want_echo = 0;
    c->ttft_ms = opt.ttft_ms;
    c->interval_ms = opt.token_interval_ms;
    c->status_override = 0;
    c->close_now = 0;
    c->auth_len = 0;
    c->echo_len = 0;
    c->echo_headers_json[0] = '{';
    c->echo_len = 1;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (c->url_len + len >= sizeof(c->url))
        return HPE_USER;
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    return 0;
}

static int on_hfield(llhttp_t *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (c->in_value) {
        c->hname_len = 0;
        c->in_value = 0;
    }
    size_t n = len < sizeof(c->hname) - 1 - c->hname_len ? len : sizeof(c->hname) - 1 - c->hname_len;
    for (size_t i = 0; i < n; i++) {
        char ch = at[i];
        c->hname[c->hname_len++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    c->hname[c->hname_len] = 0;
    return 0;
}

static int hint(const char *at, size_t len)
{
    int v = 0;
    for (size_t i = 0; i < len && at[i] >= '0' && at[i] <= '9'; i++)
        v = v * 10 + (at[i] - '0');
    return v;
}

static int on_hvalue(llhttp_t *p, const char *at, size_t len)
{
    conn *c = p->data;
    c->in_value = 1;
    if (strcmp(c->hname, "x-mock-echo-headers") == 0)
        c->want_echo = 1;
    else if (strcmp(c->hname, "x-mock-ttft-ms") == 0)
        c->ttft_ms = hint(at, len);
    else if (strcmp(c->hname, "x-mock-token-interval-ms") == 0)
        c->interval_ms = hint(at, len);
    else if (strcmp(c->hname, "x-mock-status") == 0)
        c->status_override = hint(at, len);
    else if (strcmp(c->hname, "x-mock-close") == 0)
        c->close_now = 1;
    else if (strcmp(c->hname, "authorization") == 0 && c->auth_len + len < sizeof(c->auth)) {
        memcpy(c->auth + c->auth_len, at, len);
        c->auth_len += len;
    }
    /* record every header as "name":"value" for x-mock-echo-headers (lowercased names) */
    size_t need = c->hname_len + len + 8;
    if (c->echo_len + need < sizeof(c->echo_headers_json) - 2) {
        char *o = c->echo_headers_json + c->echo_len;
        int n = sprintf(o, "%s\"%s\":\"", c->echo_len > 1 ? "," : "", c->hname);
        o += n;
        for (size_t i = 0; i < len; i++)
            *o++ = (at[i] == '"' || at[i] == '\\') ? '_' : at[i];
        *o++ = '"';
        c->echo_len = (size_t)(o - c->echo_headers_json);
    }
    return 0;
}

static int on_hdone(llhttp_t *p)
{
    conn *c = p->data;
    c->echo_headers_json[c->echo_len++] = '}';
    c->echo_headers_json[c->echo_len] = 0;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    conn *c = p->data;
    return ig_buf_append(&c->body, at, len) ? HPE_USER : 0;
}

static int on_complete(llhttp_t *p)
{
    ((conn *)p->data)->in_msg = 0;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_begin,
    .on_url = on_url,
    .on_header_field = on_hfield,
    .on_header_value = on_hvalue,
    .on_headers_complete = on_hdone,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

static void conn_parse(conn *c)
{
    while (!c->closing && !c->busy && c->parsed < c->in.len) {
        llhttp_errno_t e = llhttp_execute(&c->parser, c->in.data + c->parsed, c->in.len - c->parsed);
        if (e == HPE_PAUSED) {
            c->parsed = (size_t)(llhttp_get_error_pos(&c->parser) - c->in.data);
            llhttp_resume(&c->parser);
            handle(c);
            continue;
        }
        if (e != HPE_OK) {
            c->keep_alive = 0;
            c->busy = 1;
            send_error(c, 400, "Bad Request", "malformed request");
            c->busy = 0;
            conn_close(c);
            return;
        }
        c->parsed = c->in.len;
    }
    if (!c->busy && c->parsed == c->in.len)
        c->parsed = c->in.len = 0;
}

static void alloc_cb(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    conn *c = h->data;
    (void)s;
    if (c->in.cap - c->in.len < 4096 && !c->busy)
        ig_buf_reserve(&c->in, c->in.cap < 16384 ? 16384 : c->in.cap);
    *b = uv_buf_init(c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len));
    if (!c->in.data)
        b->len = 0;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    conn *c = s->data;
    (void)b;
    if (n == UV_ENOBUFS)
        return; /* busy with a full buffer: the peer waits for our answer */
    if (n < 0) {
        conn_close(c);
        return;
    }
    c->in.len += (size_t)n;
    if (!c->busy)
        conn_parse(c);
    if (!c->closing && c->in_msg) {
        /* half a request: ACK now so a Nagle-bound client sends the rest */
        uv_os_fd_t fd;
        int one = 1;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
    }
}

static void on_conn(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    uv_tcp_init(server->loop, &c->tcp);
    uv_timer_init(server->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    c->parser.data = c;
    ig_buf_init(&c->in, 128u << 20);
    ig_buf_init(&c->body, 64u << 20);
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
        conn_close(c);
        return;
    }
    atomic_fetch_add(&me->connections, 1);
    atomic_fetch_add(&me->open, 1);
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

static void on_signal(uv_signal_t *s, int sig)
{
    (void)sig;
    uv_stop(s->loop);
}

static int serve(int fd, int slot, int *extra_fds, int n_extra)
{
    uv_loop_t *loop = uv_default_loop();
    srandom((unsigned)getpid() ^ (unsigned)uv_hrtime()); /* session keys differ across runs */
    uv_tcp_t server;
    for (int i = 0; i < n_extra; i++) {
        uv_tcp_t *t = malloc(sizeof(*t));
        uv_tcp_init(loop, t);
        if (!t || uv_tcp_open(t, extra_fds[i]) || uv_listen((uv_stream_t *)t, 4096, on_conn))
            return 1;
    }
    uv_signal_t sig1, sig2;
    my_pid = getpid();
    me = &stats->procs[slot];
    atomic_store(&me->pid, my_pid);
    uv_tcp_init(loop, &server);
    if (uv_tcp_open(&server, fd) || uv_listen((uv_stream_t *)&server, 4096, on_conn)) {
        fprintf(stderr, "mockworker: listen failed\n");
        return 1;
    }
    uv_signal_init(loop, &sig1);
    uv_signal_init(loop, &sig2);
    uv_signal_start(&sig1, on_signal, SIGTERM);
    uv_signal_start(&sig2, on_signal, SIGINT);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}

static void usage(void)
{
    puts("usage: infergate-mockworker [--host H] [--port P] [--model NAME]... [--worker-id ID]\n"
         "  [--ttft-ms N] [--tokens N] [--token-interval-ms N] [--max-inflight N]\n"
         "  [--processes K] [--embedding-dim N] [--drop-reused 0|1] [--ports N]\n"
         "  [--cpu-us-per-token N]  (busy CPU per token, like a Python server)\n"
         "  [--control-delay-ms N] [--pause-mode hold|abort] [--areal-api current|legacy]\n"
         "  [--role prefill|decode] [--bootstrap-port N] [--kv-timeout-ms N]  (SGLang PD: a prefill\n"
         "  serves its bootstrap server on N; a decode waits for the request's room there)\n"
         "  [--pd-protocol sglang|vllm]  (vllm: NIXL's kv_transfer_params, the prefill first)\n"
         "RL control: POST /pause_generation, /continue_generation, /set_version {version},\n"
         "/flush_cache, /release_memory_occupation, /resume_memory_occupation; GET /get_version.\n"
         "Prefix cache: [--kv-cache-tokens N] [--prefill-us-per-token N]: an LRU of 128-byte\n"
         "blocks of the decoded prompt (keyed apart from the gateway's index);\n"
         "usage.prompt_tokens_details.cached_tokens; /stats sums both.\n"
         "AReaL sessions: POST /rl/start_session {task_id, group_size} (admin key: --admin-api-key)\n"
         "-> {group_id, sessions}, /rl/set_reward (session key), /export_trajectories {session_ids}\n"
         "(--areal-api legacy: one session {session_id, api_key}, export {session_id});\n"
         "chats count on the bearer's session.\n"
         "Prints 'READY port=N' once listening (--port 0 picks a free port).\n"
         "Per-request headers: x-mock-ttft-ms, x-mock-token-interval-ms, x-mock-status,\n"
         "x-mock-close (drop the connection), x-mock-echo-headers (echo what arrived).\n"
         "POST /mock/health?status=N&delay_ms=M sets what /health answers; POST\n"
         "/mock/fail?status=N makes every data request answer N (0: back to normal).\n"
         "GET /stats returns connection, request and abort counts per process.");
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            usage();
            return 0;
        }
        if (!v) {
            fprintf(stderr, "mockworker: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--host") == 0)
            snprintf(opt.host, sizeof(opt.host), "%s", v);
        else if (strcmp(a, "--port") == 0)
            opt.port = atoi(v);
        else if (strcmp(a, "--model") == 0 && opt.n_models < MAX_MODELS)
            opt.models[opt.n_models++] = v;
        else if (strcmp(a, "--worker-id") == 0)
            opt.worker_id = v;
        else if (strcmp(a, "--ttft-ms") == 0)
            opt.ttft_ms = atoi(v);
        else if (strcmp(a, "--tokens") == 0)
            opt.tokens = atoi(v);
        else if (strcmp(a, "--token-interval-ms") == 0)
            opt.token_interval_ms = atoi(v);
        else if (strcmp(a, "--max-inflight") == 0)
            opt.max_inflight = atoi(v);
        else if (strcmp(a, "--processes") == 0)
            opt.processes = atoi(v);
        else if (strcmp(a, "--control-delay-ms") == 0)
            opt.control_delay_ms = atoi(v);
        else if (strcmp(a, "--kv-cache-tokens") == 0)
            opt.kv_cache_tokens = atol(v);
        else if (strcmp(a, "--prefill-us-per-token") == 0)
            opt.prefill_us_per_token = atoi(v);
        else if (strcmp(a, "--admin-api-key") == 0)
            opt.admin_api_key = v;
        else if (strcmp(a, "--pause-mode") == 0)
            opt.pause_abort = strcmp(v, "abort") == 0;
        else if (strcmp(a, "--role") == 0) {
            opt.role = !strcmp(v, "prefill") ? MOCK_PD_PREFILL : !strcmp(v, "decode") ? MOCK_PD_DECODE : -1;
            if (opt.role < 0) {
                fprintf(stderr, "mockworker: --role prefill or decode\n");
                return 2;
            }
        } else if (strcmp(a, "--bootstrap-port") == 0)
            opt.bootstrap_port = atoi(v);
        else if (strcmp(a, "--kv-timeout-ms") == 0)
            opt.kv_timeout_ms = atoi(v);
        else if (strcmp(a, "--pd-protocol") == 0)
            opt.pd_vllm = strcmp(v, "vllm") == 0;
        else if (strcmp(a, "--areal-api") == 0)
            mock_sessions_legacy = strcmp(v, "legacy") == 0;
        else if (strcmp(a, "--cpu-us-per-token") == 0)
            opt.cpu_us_per_token = atoi(v);
        else if (strcmp(a, "--ports") == 0)
            opt.ports = atoi(v);
        else if (strcmp(a, "--drop-reused") == 0)
            opt.drop_reused = atoi(v);
        else if (strcmp(a, "--embedding-dim") == 0)
            opt.embedding_dim = atoi(v);
        else {
            fprintf(stderr, "mockworker: unknown option %s\n", a);
            return 2;
        }
    }
    if (opt.n_models == 0)
        opt.models[opt.n_models++] = "mock-model";
    if (opt.processes < 1 || opt.processes > MAX_PROCS) {
        fprintf(stderr, "mockworker: --processes must be 1..%d\n", MAX_PROCS);
        return 2;
    }
    stats = mmap(NULL, sizeof(*stats), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (stats == MAP_FAILED)
        return 1;
    memset(stats, 0, sizeof(*stats));
    signal(SIGPIPE, SIG_IGN);

    /* one socket, no SO_REUSEPORT: the processes race in accept() like pre-fork servers */
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
        listen(fd, 4096)) {
        fprintf(stderr, "mockworker: cannot listen on %s:%d: %s\n", opt.host, opt.port, strerror(errno));
        return 1;
    }
    socklen_t sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    int *extra = NULL;
    if (opt.ports > 1) {
        /* more ports, each a separate "worker" to a gateway; listed on one line */
        extra = calloc((size_t)opt.ports, sizeof(int));
        printf("PORTS %d", ntohs(sa.sin_port));
        for (int i = 1; i < opt.ports; i++) {
            struct sockaddr_in xa = sa;
            xa.sin_port = 0;
            extra[i - 1] = socket(AF_INET, SOCK_STREAM, 0);
            socklen_t xl = sizeof(xa);
            if (bind(extra[i - 1], (struct sockaddr *)&xa, sizeof(xa)) || listen(extra[i - 1], 4096) ||
                getsockname(extra[i - 1], (struct sockaddr *)&xa, &xl)) {
                fprintf(stderr, "mockworker: cannot open port %d of %d\n", i + 1, opt.ports);
                return 1;
            }
            printf(" %d", ntohs(xa.sin_port));
        }
        printf("\n");
    }
    if (opt.role == MOCK_PD_PREFILL) {
        /* the bootstrap server: another listener of the same process (its handler knows the path) */
        if (opt.bootstrap_port <= 0) /* SGLang's default */
            opt.bootstrap_port = MOCK_PD_DEFAULT_BOOTSTRAP_PORT;
        if (opt.processes != 1) {
            fprintf(stderr, "mockworker: --role prefill runs one process\n");
            return 2;
        }
        int *more = realloc(extra, sizeof(int) * (size_t)(opt.ports + 1));
        struct sockaddr_in ba = sa;
        ba.sin_port = htons((uint16_t)opt.bootstrap_port);
        int bfd = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(bfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (!more || bind(bfd, (struct sockaddr *)&ba, sizeof(ba)) || listen(bfd, 4096)) {
            fprintf(stderr, "mockworker: cannot listen on bootstrap port %d: %s\n", opt.bootstrap_port,
                    strerror(errno));
            return 1;
        }
        extra = more;
        extra[opt.ports - 1] = bfd;
        opt.ports++;
    }
    printf("READY port=%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    mock_kv_init(opt.kv_cache_tokens);
    if (opt.processes == 1) {
        int rc = serve(fd, 0, extra, opt.ports - 1);
        free(extra);
        return rc;
    }

    pid_t kids[MAX_PROCS];
    for (int k = 0; k < opt.processes; k++) {
        kids[k] = fork();
        if (kids[k] == 0)
            _exit(serve(fd, k, extra, opt.ports - 1));
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sig;
    sigwait(&set, &sig);
    for (int k = 0; k < opt.processes; k++)
        kill(kids[k], SIGTERM);
    for (int k = 0; k < opt.processes; k++)
        waitpid(kids[k], NULL, 0);
    return 0;
}
