/* HTTP/1.1 client connections (ig_h1conn.h). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ig_h1conn_int.h"

#include "../core/ig_budget.h"
#include "../core/ig_log.h"
#include "../http/ig_framing.h"
#include "../http/ig_h1req.h"
#include "../upstream/ig_exchange.h"

static void client_parse(ig_h1conn *c);
static void stream_body(ig_h1conn *c);
static void describe(ig_h1conn *c);
static const char *request_path(const ig_h1conn *c, size_t *len);

static void client_timer_cb(uv_timer_t *t);

/* Lazy, as nginx's timers: a request moves its client's deadline three or
 * four times, nearly always later, and a later deadline is only a field; the
 * timer heap is touched when a deadline comes earlier, or when the timer
 * fires before the deadline and is set again for the rest. */
void ig_h1c_arm_timer(ig_h1conn *c, double secs)
{
    if (c->lingering)
        return; /* the linger timer owns the handle until the close */
    uint64_t ms = (uint64_t)(secs * 1000.0);
    if (!uv_is_active((uv_handle_t *)&c->timer) || uv_timer_get_due_in(&c->timer) > ms)
        uv_timer_start(&c->timer, client_timer_cb, ms, 0);
    c->deadline_ms = uv_now(&c->th->loop) + ms;
}

static void disarm_timer(ig_h1conn *c)
{
    c->deadline_ms = IG_NO_DEADLINE; /* a timer still armed fires and finds nothing due */
}

/* The header table goes back to the thread; no header index stays valid. */
static void drop_headers(ig_h1conn *c)
{
    ig_freelist_put(&c->th->hdr_tables, c->rq.hdrs);
    c->rq.hdrs = NULL;
    c->rq.nhdrs = 0;
    ig_h1req_forget_headers(&c->rq);
}

/* ---- the request parser's hooks (http/ig_h1req.h) ---- */

static ig_hdr *on_request_begin(void *owner)
{
    ig_h1conn *c = owner;
    /* the whole head within the header timeout, however slowly it trickles (slowloris) */
    ig_h1c_arm_timer(c, c->th->cfg->client_header_timeout_secs);
    return c->rq.hdrs ? c->rq.hdrs : ig_freelist_get(&c->th->hdr_tables);
}

static int on_request_head(void *owner)
{
    ig_h1conn *c = owner;
    ig_h1c_arm_timer(c, c->th->cfg->client_body_timeout_secs); /* the whole body, however it trickles */
    if (c->rq.h_expect >= 0 && !c->rq.http10) {
        static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init(cont, sizeof(cont) - 1);
        ig_h1c_write(c, &b, 1, NULL);
    }
    c->req.body_length = c->rq.chunked ? -1 : (int64_t)c->rq.body_hint;
    if (!c->rq.chunked && !c->rq.body_hint)
        return 0; /* nothing to stream */
    describe(c);  /* the head only, so the app can tell where it goes */
    return c->th->hooks->streams_body && c->th->hooks->streams_body(&c->req);
}

static ig_h1req_ops request_ops = {.begin = on_request_begin, .head = on_request_head};

/* ---- lifecycle ---- */

/* Open client connections, all threads, against --max-client-connections. */
static atomic_int g_clients;

/* ---- the body budget: request bytes held beyond each connection's first
 * buffer, all threads together (--max-buffered-body-bytes). A body that
 * does not fit waits with its reads stopped (TCP pushes back on the
 * client); its body deadline keeps running. */
static ig_budget g_body_budget;

void ig_h1conn_configure(const ig_server_config *cfg)
{
    g_body_budget.cap = cfg->max_buffered_body_bytes;
    request_ops.max_header_size = cfg->max_header_size;
    request_ops.max_payload_size = cfg->max_payload_size;
}

/* Room for extra more bytes in rbuf (exact: a body of known length, so no
 * doubling past it): 0, -EAGAIN when the budget has none now. */
static int rbuf_grow(ig_h1conn *c, size_t extra, int exact)
{
    ig_thread *th = c->th;
    size_t ncap = ig_buf_cap_for(&c->rbuf, extra, exact);
    /* a kept big buffer that holds the body (the smallest): its pages are in already */
    int reuse = -1;
    for (int i = 0; ncap > IG_RBUF_SIZE && c->rbuf.cap <= IG_RBUF_SIZE && i < th->n_big_rbuf; i++)
        if (th->big_rbuf_cap[i] >= ncap && th->big_rbuf_cap[i] <= c->rbuf.max &&
            (reuse < 0 || th->big_rbuf_cap[i] < th->big_rbuf_cap[reuse]))
            reuse = i;
    if (reuse >= 0)
        ncap = th->big_rbuf_cap[reuse];
    if (ncap > IG_RBUF_SIZE && ig_budget_grow(&g_body_budget, &c->body_held, ncap - IG_RBUF_SIZE))
        return -EAGAIN;
    if (reuse >= 0) {
        char *big = th->big_rbuf[reuse];
        size_t len = c->rbuf.len;
        if (len)
            memcpy(big, c->rbuf.data, len);
        ig_buf_give(&c->rbuf, &th->rbufs);
        c->rbuf.data = big;
        c->rbuf.cap = ncap;
        c->rbuf.len = len;
        th->big_rbuf_bytes -= ncap;
        th->n_big_rbuf--;
        th->big_rbuf[reuse] = th->big_rbuf[th->n_big_rbuf];
        th->big_rbuf_cap[reuse] = th->big_rbuf_cap[th->n_big_rbuf];
        return 0;
    }
    return exact ? ig_buf_reserve_exact(&c->rbuf, extra) : ig_buf_reserve(&c->rbuf, extra);
}

static void rbuf_release(ig_h1conn *c)
{
    ig_thread *th = c->th;
    size_t cap = c->rbuf.cap;
    if (cap > IG_RBUF_SIZE && cap <= IG_BIG_RBUF_KEEP && th->n_big_rbuf < IG_BIG_RBUFS &&
        th->big_rbuf_bytes + cap <= IG_BIG_RBUF_TOTAL) {
        th->big_rbuf[th->n_big_rbuf] = c->rbuf.data;
        th->big_rbuf_cap[th->n_big_rbuf++] = cap;
        th->big_rbuf_bytes += cap;
        th->big_rbuf_used_ms = uv_now(&th->loop);
        c->rbuf.data = NULL;
        c->rbuf.len = c->rbuf.cap = 0;
    } else {
        ig_buf_give(&c->rbuf, &th->rbufs);
    }
    ig_budget_release(&g_body_budget, &c->body_held);
}

static void budget_unpark(ig_h1conn *c)
{
    if (!c->budget_wait)
        return;
    c->budget_wait = 0;
    ig_list_remove(&c->req.wait.link);
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Wake every waiter of this thread: each asks again (room freed on any
 * thread shows up here within a tick) and waits again if there is none. */
static void budget_retry(uv_timer_t *t)
{
    ig_thread *th = t->data;
    if (ig_list_empty(&th->budget_waiters)) {
        uv_timer_stop(t);
        return;
    }
    while (!ig_list_empty(&th->budget_waiters)) {
        ig_h1conn *c = ig_container_of(th->budget_waiters.next, ig_h1conn, req.wait.link);
        budget_unpark(c);
        if (c->read_paused && !c->closing) {
            c->read_paused = 0;
            ig_net_read_start(&c->net, client_alloc, client_read);
        }
    }
}

static void budget_park(ig_h1conn *c)
{
    ig_thread *th = c->th;
    ig_net_read_stop(&c->net);
    c->read_paused = 1;
    c->budget_wait = 1;
    c->starved = 1;
    ig_list_push_back(&th->budget_waiters, &c->req.wait.link);
    if (!uv_is_active((uv_handle_t *)&th->budget_timer))
        uv_timer_start(&th->budget_timer, budget_retry, 10, 10);
}

static void client_free_cb(uv_handle_t *h)
{
    ig_h1conn *c = h->data;
    if (--c->handles_open)
        return;
    ig_thread *th = c->th;
    rbuf_release(c);
    ig_buf_give(&c->obuf, &th->heads);
    ig_freelist_put(&th->hdr_tables, c->rq.hdrs);
    free(c->logtag);
    free(c);
    atomic_fetch_sub_explicit(&g_clients, 1, memory_order_relaxed);
    ig_thread_client_closed(th);
}

static void finish_request(ig_h1conn *c, int aborted);

void ig_h1c_close(ig_h1conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    budget_unpark(c);
    if (c->state == IG_C_DISPATCHED) {
        if (c->req.h && c->req.h->stop)
            c->req.h->stop(&c->req, IG_STOP_CLOSED);
        finish_request(c, 1);
    }
    ig_list_remove(&c->link);
    ig_net_close(&c->net, client_free_cb);
    uv_close((uv_handle_t *)&c->timer, client_free_cb);
}

static void client_timer_cb(uv_timer_t *t)
{
    ig_h1conn *c = t->data;
    uint64_t now = uv_now(&c->th->loop);
    if (c->deadline_ms > now) {
        if (c->deadline_ms != IG_NO_DEADLINE)
            uv_timer_start(t, client_timer_cb, c->deadline_ms - now, 0);
        return;
    }
    c->deadline_ms = IG_NO_DEADLINE;
    if (c->state == IG_C_DISPATCHED) {
        if (c->req.h && c->req.h->stop)
            c->req.h->stop(&c->req, IG_STOP_TIMEOUT);
    } else if (c->state == IG_C_READING && c->rq.in_message && !c->closing &&
               (c->budget_wait || c->starved)) {
        /* starved: a retry may have just unparked it, in this same timer pass */
        budget_unpark(c); /* our memory was short, not the client slow */
        ig_h1c_error_headers(c, 503, "service_unavailable", "body_buffer_full",
                             "the gateway holds as many request bodies as --max-buffered-body-bytes allows; "
                             "retry later",
                             "retry-after: 1\r\n");
    } else if (c->state == IG_C_READING && c->rq.in_message && !c->closing)
        ig_h1c_error(c, 408, "invalid_request_error", "request_timeout",
                     c->rq.head_done ? "the request body did not arrive in time (--client-body-timeout-secs)"
                                     : "the request head took too long (--client-header-timeout-secs)");
    else
        ig_h1c_close(c);
}

static void arm_idle_timer(ig_h1conn *c)
{
    ig_h1c_arm_timer(c, c->th->cfg->client_idle_timeout_secs);
}

#define LINGER_MS 2000
#define LINGER_MAX (1u << 20)

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ig_h1conn *c = h->data;
    ig_thread *th = c->th;
    (void)suggested;
    if (c->lingering || (c->retired && c->rbuf.cap == c->rbuf.len)) {
        /* discarding, or a streaming client with nothing in hand: the
         * thread's scratch (client_read copies anything worth keeping) */
        *buf = uv_buf_init(th->rscratch, sizeof(th->rscratch));
        return;
    }
    if (c->state == IG_C_READING && ig_buf_take(&c->rbuf, &th->rbufs)) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    if (c->rbuf.cap - c->rbuf.len < 4096 && c->state == IG_C_READING) {
        /* while a request is out, its head and body live in rbuf and a
         * realloc would move them under the upstream write: only grow now */
        size_t want = c->rbuf.cap < IG_RBUF_SIZE ? IG_RBUF_SIZE : c->rbuf.cap;
        int exact = c->rq.body_hint > want; /* the whole body at once, and no more */
        if (exact)
            want = c->rq.body_hint;
        int rc = rbuf_grow(c, want, exact);
        if (rc && rc != -EAGAIN)
            rc = rbuf_grow(c, c->rbuf.max - c->rbuf.len, 1);
        if (rc == -EAGAIN) {
            c->budget_wait = 1; /* client_read parks it (ENOBUFS) */
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        c->starved = 0;
        c->rq.body_hint = 0;
    }
    buf->base = c->rbuf.data + c->rbuf.len;
    buf->len = c->rbuf.cap - c->rbuf.len;
    if (!c->rbuf.data)
        buf->len = 0;
}

/* A client that writes head and body separately without TCP_NODELAY (httpx,
 * requests) holds the body until the head is ACKed; a delayed ACK would cost
 * it 40 ms per request. Half a request in hand: ACK at once. */
static void quick_ack(ig_h1conn *c)
{
    uv_os_fd_t fd;
    int one = 1;
    if (uv_fileno((uv_handle_t *)&c->net.tcp, &fd) == 0)
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

static void client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ig_h1conn *c = s->data;
    (void)buf;
    if (c->lingering) {
        if (nread < 0 || (c->lingered += (size_t)nread) > LINGER_MAX)
            ig_h1c_close(c);
        return;
    }
    if (nread == UV_ENOBUFS) {
        if (c->budget_wait) {
            c->budget_wait = 0;
            budget_park(c);
            return;
        }
        if (c->state == IG_C_READING) {
            /* rbuf at its hard cap inside one request head or body */
            ig_h1c_error(c, c->rq.head_done ? 413 : 431, "invalid_request_error",
                         c->rq.head_done ? "payload_too_large" : "headers_too_large",
                         c->rq.head_done ? "request body too large" : "request head too large");
            return;
        }
        ig_net_read_stop(&c->net);
        c->read_paused = 1;
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF)
            ig_debug("client read: %s", uv_strerror((int)nread));
        ig_h1c_close(c);
        return;
    }
    if (buf->base == c->th->rscratch) {
        /* early bytes of the next request while a stream is out */
        if (nread &&
            (ig_buf_take(&c->rbuf, &c->th->rbufs) || ig_buf_append(&c->rbuf, buf->base, (size_t)nread))) {
            ig_h1c_close(c);
            return;
        }
        if (c->rbuf.len >= IG_RBUF_SIZE && !c->read_paused) {
            /* a pipelined flood behind a stream: the rest waits in the kernel */
            ig_net_read_stop(&c->net);
            c->read_paused = 1;
        }
        return;
    }
    c->rbuf.len += (size_t)nread;
    if (c->state == IG_C_READING) {
        client_parse(c);
        if (!c->closing && c->rq.in_message)
            quick_ack(c);
    } else if (c->state == IG_C_DISPATCHED && c->rq.streams && c->rq.in_message) {
        stream_body(c);
    }
}

static void client_tls_done(ig_net *n, int status)
{
    ig_h1conn *c = n->tcp.data;
    if (c->closing)
        return;
    if (status == 0) {
        arm_idle_timer(c);
        ig_net_read_start(&c->net, client_alloc, client_read);
        return;
    }
    ig_count(&c->th->stats.client_tls_failures, 1);
    if (!ig_net_tls_plain_http(n)) {
        ig_debug("client TLS: %s", ig_net_tls_error(n));
        ig_h1c_close(c);
        return;
    }
    /* said in words a plain-HTTP client reads (never a 200) */
    ig_net_tls_drop(n);
    ig_h1c_error(c, 400, "invalid_request_error", "tls_required",
                 "this port speaks HTTPS: use https:// (a plain HTTP request came)");
}

int ig_h1conn_count(void)
{
    return atomic_load_explicit(&g_clients, memory_order_relaxed);
}

static void refused_close_cb(uv_handle_t *h)
{
    free(h);
}

/* Over the limit: take the connection off the backlog, say why, close. */
static void refuse_connection(ig_thread *th, uv_stream_t *server)
{
    static const char busy[] =
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
        "retry-after: 1\r\ncontent-length: 138\r\n\r\n"
        "{\"error\":{\"message\":\"too many client connections (--max-client-connections)\","
        "\"type\":\"service_unavailable\",\"code\":\"too_many_connections\"}}\n";
    uv_tcp_t *t = malloc(sizeof(*t));
    if (!t)
        return;
    uv_tcp_init(&th->loop, t);
    if (uv_accept(server, (uv_stream_t *)t) == 0) {
        uv_buf_t b = uv_buf_init((char *)busy, sizeof(busy) - 1);
        uv_try_write((uv_stream_t *)t, &b, 1);
    }
    ig_count(&th->stats.client_conns_refused, 1);
    uv_close((uv_handle_t *)t, refused_close_cb);
}

void ig_h1conn_accept(ig_thread *th, uv_stream_t *server, unsigned flags)
{
    if (atomic_fetch_add_explicit(&g_clients, 1, memory_order_relaxed) >=
        (int)th->cfg->max_client_connections) {
        atomic_fetch_sub_explicit(&g_clients, 1, memory_order_relaxed);
        refuse_connection(th, server);
        return;
    }
    ig_h1conn *c = calloc(1, sizeof(*c));
    if (!c) {
        atomic_fetch_sub_explicit(&g_clients, 1, memory_order_relaxed);
        return;
    }
    c->th = th;
    c->req.res = &ig_h1c_ops;
    c->req.px = &th->px;
    c->req.metrics_only = (flags & IG_H1C_METRICS_ONLY) != 0;
    c->net.tcp.data = c;
    c->timer.data = c;
    uv_tcp_init(&th->loop, &c->net.tcp);
    uv_timer_init(&th->loop, &c->timer);
    c->handles_open = 2;
    ig_list_push_front(&th->clients, &c->link);
    th->nclients++;
    ig_buf_init(&c->rbuf, (size_t)th->cfg->max_header_size + th->cfg->max_payload_size + IG_RBUF_SIZE);
    ig_buf_init(&c->obuf, 32u << 20);
    ig_h1req_init(&c->rq, &request_ops, c);
    if (uv_accept(server, (uv_stream_t *)&c->net.tcp) != 0) {
        ig_h1c_close(c);
        return;
    }
    uv_tcp_nodelay(&c->net.tcp, 1);
    ig_count(&th->stats.client_conns, 1);
    if (th->cfg->tls && !c->req.metrics_only) {
        /* the handshake within the header timeout, as the head that follows it */
        ig_h1c_arm_timer(c, th->cfg->client_header_timeout_secs);
        if (ig_net_tls_accept(&c->net, th->cfg->tls, client_tls_done))
            ig_h1c_close(c);
        return;
    }
    arm_idle_timer(c);
    ig_net_read_start(&c->net, client_alloc, client_read);
}

/* ---- request completion, keep-alive and pipelining ---- */

static void linger_timeout_cb(uv_timer_t *t)
{
    ig_h1c_close(t->data);
}

/* We answered before the request ended (413, 431, 400). Closing with unread
 * input would send a RST that can destroy the answer in flight, so half-close,
 * read and discard for a while, then close (what nginx calls lingering close). */
static void client_linger(ig_h1conn *c)
{
    c->lingering = 1;
    c->lingered = 0;
    rbuf_release(c); /* discarding reads go to the thread's scratch */
    c->rq.parsed = 0;
    if (ig_net_shutdown(&c->shutdown_req, &c->net, NULL) != 0) {
        ig_h1c_close(c);
        return;
    }
    if (c->read_paused) {
        c->read_paused = 0;
        ig_net_read_start(&c->net, client_alloc, client_read);
    }
    c->deadline_ms = IG_NO_DEADLINE;
    uv_timer_start(&c->timer, linger_timeout_cb, LINGER_MS, 0);
}

void ig_h1c_next_request(ig_h1conn *c)
{
    if (c->close_after || !c->rq.keep_alive || c->th->draining || c->rq.in_message) {
        /* in_message: answered before its streamed body ended */
        if (c->rq.in_message && !c->th->draining)
            client_linger(c);
        else
            ig_h1c_close(c);
        return;
    }
    ig_thread *th = c->th;
    size_t left = c->rbuf.len - c->rq.parsed;
    if (left && c->rq.parsed)
        memmove(c->rbuf.data, c->rbuf.data + c->rq.parsed, left);
    c->rbuf.len = left;
    c->rq.parsed = 0;
    c->rq.msg_start = 0;
    /* an idle keep-alive connection keeps no buffer: the next request takes one */
    if (!left)
        rbuf_release(c);
    ig_buf_give(&c->obuf, &th->heads);
    drop_headers(c);
    c->rq.head_done = 0; /* no header index is valid until the next head */
    c->retired = 0;
    c->state = IG_C_READING;
    c->req.resp_started = 0;
    c->req.h = NULL;
    c->starved = 0;
    c->dechunk = 0;
    c->have_rid = 0;
    arm_idle_timer(c);
    if (c->read_paused) {
        c->read_paused = 0;
        ig_net_read_start(&c->net, client_alloc, client_read);
    }
    if (!c->in_parse && left)
        client_parse(c);
}

static void access_log(ig_h1conn *c, int status, uint64_t dur_us)
{
    ig_alog_record r = {.rid = c->req.rid,
                        .rid_len = c->req.rid_len,
                        .method = llhttp_method_name((llhttp_method_t)ig_h1req_method(&c->rq)),
                        .status = status,
                        .worker = c->req.worker_label,
                        .bytes = c->req.bytes_out,
                        .ttfb_ns = c->req.first_byte_ns ? c->req.first_byte_ns - c->req.start_ns : 0,
                        .dur_us = dur_us};
    r.path = request_path(c, &r.path_len);
    if (c->req.route <= IG_R_API && c->req.fields.has_model) {
        r.model = c->req.fields.model;
        r.model_len = c->req.fields.model_len;
    }
    ig_alog_append(&c->th->alog, &r);
}

/* The request is over: metrics, the access log, the gateway's in-flight count. */
static void finish_request(ig_h1conn *c, int aborted)
{
    ig_thread *th = c->th;
    uint64_t now = uv_hrtime();
    uint64_t dur_us = (now - c->req.start_ns) / 1000;
    int status = aborted ? 499 : c->req.status; /* nginx's code for "client closed request" */
    if (c->req.h && c->req.h->finish)
        c->req.h->finish(&c->req);
    ig_count(&th->stats.requests[c->req.route][ig_status_index(status)], 1);
    ig_hist_observe(&th->stats.duration[c->req.route], dur_us);
    if (c->req.first_byte_ns)
        ig_hist_observe(&th->stats.ttfb[c->req.route], (c->req.first_byte_ns - c->req.start_ns) / 1000);
    ig_count(&th->stats.bytes_out, c->req.bytes_out);
    if (aborted)
        ig_count(&th->stats.client_aborts, 1);
    if (ig_log_level >= IG_LOG_INFO)
        access_log(c, status, dur_us);
    free(c->logtag);
    c->logtag = NULL;
}

static const char *request_path(const ig_h1conn *c, size_t *len)
{
    const char *url = c->logtag ? c->logtag : c->rbuf.data + c->rq.url_off;
    size_t n = 0;
    while (n < c->rq.url_len && url[n] != '?')
        n++;
    *len = n;
    return url;
}

void ig_h1c_retire(ig_h1conn *c)
{
    if (c->retired || c->rq.parsed != c->rbuf.len || (c->req.up && ig_exchange_writing(c->req.up)) ||
        (c->req.body_streams && (c->rq.in_message || c->req.body.len)))
        return; /* done already, the next request is in rbuf, or rbuf is being sent or still to send */
    ig_body_fields *f = &c->req.fields;
    if (ig_log_level >= IG_LOG_INFO) {
        size_t plen, mlen = f->has_model ? f->model_len : 0;
        const char *path = request_path(c, &plen);
        char *t = malloc(plen + mlen + 1);
        if (!t)
            return; /* keep it all then */
        memcpy(t, path, plen);
        memcpy(t + plen, f->model, mlen);
        c->logtag = t;
        c->rq.url_off = 0;
        c->rq.url_len = (uint32_t)plen;
        f->model = t + plen;
    } else {
        f->has_model = 0;
        f->model_len = 0;
    }
    f->n_text = 0;
    f->user.len = 0;
    drop_headers(c);
    rbuf_release(c);
    c->rq.parsed = c->rq.msg_start = 0;
    c->rq.body_off = c->rq.body_len = 0;
    c->retired = 1;
    ig_request *r = &c->req; /* none of its slices is valid any more */
    r->base = r->target = NULL;
    r->target_len = r->path_len = 0;
    r->hdrs = NULL;
    r->nhdrs = 0;
    r->body = r->authorization = r->routing_key = r->bearer = (ig_span){NULL, 0};
}

void ig_h1c_request_done(ig_h1conn *c)
{
    if (c->head_pending) { /* an answer with no body: its head goes alone */
        c->head_pending = 0;
        uv_buf_t b = uv_buf_init(c->obuf.data, (unsigned)c->obuf.len);
        ig_h1c_write(c, &b, 1, NULL);
        if (c->closing)
            return;
    }
    if (c->state == IG_C_DISPATCHED)
        finish_request(c, 0);
    c->state = IG_C_FLUSHING;
    disarm_timer(c);
    if (c->pending_writes == 0)
        ig_h1c_next_request(c);
}

void ig_h1c_make_request_id(ig_h1conn *c)
{
    int i = c->rq.head_done ? c->rq.h_request_id : -1;
    if (i >= 0 && c->rq.hdrs[i].value_len > 0 && c->rq.hdrs[i].value_len < sizeof(c->req.rid)) {
        memcpy(c->req.rid, c->rbuf.data + c->rq.hdrs[i].value_off, c->rq.hdrs[i].value_len);
        c->req.rid_len = c->rq.hdrs[i].value_len;
        c->have_rid = 1;
        return;
    }
    /* prefix (thread and start-up random) + sequence in hex, without printf */
    ig_thread *th = c->th;
    size_t n = strlen(th->rid_prefix);
    memcpy(c->req.rid, th->rid_prefix, n);
    char hex[16];
    int k = 0;
    uint64_t seq = ++th->rid_seq;
    do {
        hex[k++] = "0123456789abcdef"[seq & 15];
        seq >>= 4;
    } while (seq);
    while (k)
        c->req.rid[n++] = hex[--k];
    c->req.rid_len = n;
    c->have_rid = 0;
}

/* The request line was read and its method is HEAD. */
static ig_span header_value(const ig_h1conn *c, int i)
{
    if (i < 0)
        return (ig_span){NULL, 0};
    return (ig_span){c->rbuf.data + c->rq.hdrs[i].value_off, c->rq.hdrs[i].value_len};
}

/* What the handlers see of the request read so far: slices of rbuf. */
static void describe(ig_h1conn *c)
{
    ig_request *r = &c->req;
    r->method = ig_h1req_method(&c->rq);
    r->base = c->rbuf.data;
    r->target = c->rbuf.data + c->rq.url_off;
    r->target_len = c->rq.url_len;
    r->path_len = 0;
    while (r->path_len < r->target_len && r->target[r->path_len] != '?')
        r->path_len++;
    r->hdrs = c->rq.hdrs;
    r->nhdrs = c->rq.nhdrs;
    r->body = (ig_span){c->rbuf.data + c->rq.body_off, c->rq.body_len};
    r->authorization = header_value(c, c->rq.h_authorization);
    r->routing_key = header_value(c, c->rq.h_routing_key);
    r->via_proxy = c->rq.via_proxy;
}

/* A whole request is in, or the head of one whose body streams: the app routes it. */
static void dispatch(ig_h1conn *c)
{
    ig_request *r = &c->req;
    c->state = IG_C_DISPATCHED;
    r->start_ns = uv_hrtime();
    r->first_byte_ns = 0;
    r->bytes_out = 0;
    r->status = 0;
    r->worker_label[0] = '\0';
    r->route = IG_R_OTHER;
    r->h = NULL;
    r->handoff = NULL;
    ig_h1c_make_request_id(c);
    disarm_timer(c);
    r->body_streams = c->rq.streams;
    r->body_done = !c->rq.streams;
    r->body_gone = r->body_started = r->body_writing = r->body_last_sent = 0;
    r->body_inflight = 0;
    if (!c->rq.streams)
        r->body_length = (int64_t)c->rq.body_len;
    describe(c);
    c->th->hooks->on_request(r);
}

/* The head of a request whose body streams: a window for the body's
 * pieces, grown now, before any piece is out (never later: a write may be
 * reading rbuf), then the app routes it and the body follows. */
static void dispatch_streaming(ig_h1conn *c)
{
    size_t want = c->rq.parsed + IG_STREAM_WINDOW;
    if (c->rbuf.cap < want && rbuf_grow(c, want - c->rbuf.len, 1) == 0)
        c->starved = 0; /* else the window is what rbuf has */
    dispatch(c);
    if (!c->closing && c->state == IG_C_DISPATCHED && c->rq.parsed < c->rbuf.len)
        stream_body(c);
}

/* A streamed body that breaks its framing or the size limit: the worker's
 * exchange is abandoned (it sees the request cut), the client told why. */
static void body_refused(ig_h1conn *c)
{
    ig_request *r = &c->req;
    if (r->h && r->h->stop)
        r->h->stop(r, IG_STOP_CLOSED);
    if (r->resp_started || c->closing) {
        ig_h1c_close(c);
        return;
    }
    c->close_after = 1;
    ig_h1c_error(c, c->rq.err_status, "invalid_request_error", ig_h1req_error_code(c->rq.err_status),
                 c->rq.err_msg);
}

/* A streamed body: parse what arrived and tell the handler what is new. */
static void stream_body(ig_h1conn *c)
{
    ig_request *r = &c->req;
    if (c->in_parse) {
        c->reparse = 1;
        return;
    }
    c->in_parse = 1;
    do {
        c->reparse = 0;
        if (!c->rq.in_message || c->rq.parsed >= c->rbuf.len)
            break;
        size_t had = c->rq.body_len;
        int rc = ig_h1req_parse(&c->rq, &c->rbuf);
        if (rc == IG_H1REQ_ERROR) {
            c->in_parse = 0;
            body_refused(c);
            return;
        }
        r->body.len = c->rq.body_len;
        if (rc == IG_H1REQ_MESSAGE)
            r->body_done = 1;
        if ((r->body.len != had || r->body_done) && r->h && r->h->body_more)
            r->h->body_more(r);
    } while (c->reparse && !c->closing && c->state == IG_C_DISPATCHED);
    c->in_parse = 0;
    if (!c->closing && c->state == IG_C_READING && c->rq.parsed < c->rbuf.len)
        client_parse(c); /* answered and done while this ran: the next request */
}

void ig_h1c_body_consumed(ig_h1conn *c, size_t n)
{
    if (!n || c->closing)
        return;
    ig_h1req_consume_body(&c->rq, &c->rbuf, n);
    c->req.body.len = c->rq.body_len;
    c->req.body_gone = 1;
    if (c->read_paused && !c->budget_wait && c->rq.in_message) {
        c->read_paused = 0;
        ig_net_read_start(&c->net, client_alloc, client_read);
    }
    if (c->rq.in_message && c->rq.parsed < c->rbuf.len)
        stream_body(c);
}

static void client_parse(ig_h1conn *c)
{
    c->in_parse = 1;
    while (!c->closing && c->state == IG_C_READING && c->rq.parsed < c->rbuf.len) {
        int rc = ig_h1req_parse(&c->rq, &c->rbuf);
        if (rc == IG_H1REQ_MESSAGE) {
            dispatch(c);
            continue;
        }
        if (rc == IG_H1REQ_HEAD) {
            c->in_parse = 0; /* the body's parse is stream_body's */
            dispatch_streaming(c);
            return;
        }
        if (rc == IG_H1REQ_ERROR)
            ig_h1c_error(c, c->rq.err_status,
                         c->rq.err_status == 503 ? "service_unavailable" : "invalid_request_error",
                         ig_h1req_error_code(c->rq.err_status), c->rq.err_msg);
        break;
    }
    if (!c->rq.in_message && c->state == IG_C_READING) {
        if (c->rq.parsed == c->rbuf.len)
            c->rq.parsed = c->rbuf.len = 0; /* between requests nothing needs keeping */
        c->rq.msg_start = c->rq.parsed;
    }
    c->in_parse = 0;
}

void ig_h1conn_drain(ig_thread *th)
{
    ig_list *n = th->clients.next;
    while (n != &th->clients) {
        ig_h1conn *c = ig_container_of(n, ig_h1conn, link);
        n = n->next;
        if (c->state == IG_C_READING && !c->rq.in_message)
            ig_h1c_close(c);
        else
            c->close_after = 1;
    }
}

void ig_h1conn_close_all(ig_thread *th)
{
    while (!ig_list_empty(&th->clients))
        ig_h1c_close(ig_container_of(th->clients.next, ig_h1conn, link));
}
