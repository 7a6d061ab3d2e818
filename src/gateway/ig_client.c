/* Client connections: read and parse requests (llhttp), answer local
 * endpoints, hand data requests to the proxy, write responses with
 * backpressure, keep-alive and pipelining in order. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/ig_log.h"
#include "../core/ig_budget.h"
#include "../core/ig_cidr.h"
#include "../http/ig_framing.h"
#include "../http/ig_h1req.h"
#include "../registry/ig_sessions.h"
#include "ig_admin.h"
#include "ig_gateway.h"

static void client_parse(ig_client *c);

static void client_timer_cb(uv_timer_t *t);

/* Lazy, as nginx's timers: a request moves its client's deadline three or
 * four times, nearly always later, and a later deadline is only a field; the
 * timer heap is touched when a deadline comes earlier, or when the timer
 * fires before the deadline and is set again for the rest. */
void ig_client_arm_timer(ig_client *c, double secs)
{
    if (c->lingering)
        return; /* the linger timer owns the handle until the close */
    uint64_t ms = (uint64_t)(secs * 1000.0);
    if (!uv_is_active((uv_handle_t *)&c->timer) || uv_timer_get_due_in(&c->timer) > ms)
        uv_timer_start(&c->timer, client_timer_cb, ms, 0);
    c->deadline_ms = uv_now(&c->th->loop) + ms;
}

static void disarm_timer(ig_client *c)
{
    c->deadline_ms = IG_NO_DEADLINE; /* a timer still armed fires and finds nothing due */
}

/* The header table goes back to the thread; no header index stays valid. */
static void drop_headers(ig_client *c)
{
    ig_freelist_put(&c->th->hdr_tables, c->rq.hdrs);
    c->rq.hdrs = NULL;
    c->rq.nhdrs = 0;
    ig_h1req_forget_headers(&c->rq);
}

/* ---- the request parser's hooks (http/ig_h1req.h) ---- */

static ig_hdr *on_request_begin(void *owner)
{
    ig_client *c = owner;
    /* the whole head within the header timeout, however slowly it trickles (slowloris) */
    ig_client_arm_timer(c, c->th->cfg->client_header_timeout_secs);
    return c->rq.hdrs ? c->rq.hdrs : ig_freelist_get(&c->th->hdr_tables);
}

static void on_request_head(void *owner)
{
    ig_client *c = owner;
    ig_client_arm_timer(c, c->th->cfg->client_body_timeout_secs); /* the whole body, however it trickles */
    if (c->rq.h_expect >= 0 && !c->rq.http10) {
        static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init(cont, sizeof(cont) - 1);
        ig_client_write(c, &b, 1, NULL);
    }
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

void ig_client_configure(const ig_config *cfg)
{
    g_body_budget.cap = cfg->max_buffered_body_bytes;
    request_ops.max_header_size = cfg->max_header_size;
    request_ops.max_payload_size = cfg->max_payload_size;
}

/* Room for extra more bytes in rbuf (exact: a body of known length, so no
 * doubling past it): 0, -EAGAIN when the budget has none now. */
static int rbuf_grow(ig_client *c, size_t extra, int exact)
{
    size_t ncap = ig_buf_cap_for(&c->rbuf, extra, exact);
    if (ncap > IG_RBUF_SIZE && ig_budget_grow(&g_body_budget, &c->body_held, ncap - IG_RBUF_SIZE))
        return -EAGAIN;
    return exact ? ig_buf_reserve_exact(&c->rbuf, extra) : ig_buf_reserve(&c->rbuf, extra);
}

static void rbuf_release(ig_client *c)
{
    ig_buf_give(&c->rbuf, &c->th->rbufs);
    ig_budget_release(&g_body_budget, &c->body_held);
}

static void budget_unpark(ig_client *c)
{
    if (!c->budget_wait)
        return;
    c->budget_wait = 0;
    ig_list_remove(&c->wait.link);
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Wake every waiter of this thread: each asks again (room freed on any
 * thread shows up here within a tick) and waits again if there is none. */
void ig_client_budget_retry(uv_timer_t *t)
{
    ig_thread *th = t->data;
    if (ig_list_empty(&th->budget_waiters)) {
        uv_timer_stop(t);
        return;
    }
    while (!ig_list_empty(&th->budget_waiters)) {
        ig_client *c = ig_container_of(th->budget_waiters.next, ig_client, wait.link);
        budget_unpark(c);
        if (c->read_paused && !c->closing) {
            c->read_paused = 0;
            uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
        }
    }
}

static void budget_park(ig_client *c)
{
    ig_thread *th = c->th;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->read_paused = 1;
    c->budget_wait = 1;
    ig_list_push_back(&th->budget_waiters, &c->wait.link);
    if (!uv_is_active((uv_handle_t *)&th->budget_timer))
        uv_timer_start(&th->budget_timer, ig_client_budget_retry, 10, 10);
}

static void client_free_cb(uv_handle_t *h)
{
    ig_client *c = h->data;
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

static void finish_request(ig_client *c, int aborted);

void ig_client_close(ig_client *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    budget_unpark(c);
    if (c->admin_msg) {
        c->admin_msg->owner = NULL; /* the answer will find nobody and be dropped */
        c->admin_msg = NULL;
    }
    if (c->state == IG_C_DISPATCHED) {
        ig_proxy_abort(c);
        finish_request(c, 1);
    }
    ig_list_remove(&c->link);
    uv_close((uv_handle_t *)&c->tcp, client_free_cb);
    uv_close((uv_handle_t *)&c->timer, client_free_cb);
}

static void client_timer_cb(uv_timer_t *t)
{
    ig_client *c = t->data;
    uint64_t now = uv_now(&c->th->loop);
    if (c->deadline_ms > now) {
        if (c->deadline_ms != IG_NO_DEADLINE)
            uv_timer_start(t, client_timer_cb, c->deadline_ms - now, 0);
        return;
    }
    c->deadline_ms = IG_NO_DEADLINE;
    if (c->state == IG_C_DISPATCHED)
        ig_proxy_timeout(c);
    else if (c->state == IG_C_READING && c->rq.in_message && !c->closing && c->budget_wait) {
        budget_unpark(c); /* our memory was short, not the client slow */
        ig_client_error_headers(
            c, 503, "service_unavailable", "body_buffer_full",
            "the gateway holds as many request bodies as --max-buffered-body-bytes allows; "
            "retry later",
            "retry-after: 1\r\n");
    } else if (c->state == IG_C_READING && c->rq.in_message && !c->closing)
        ig_client_error(c, 408, "invalid_request_error", "request_timeout",
                        c->rq.head_done
                            ? "the request body did not arrive in time (--client-body-timeout-secs)"
                            : "the request head took too long (--client-header-timeout-secs)");
    else
        ig_client_close(c);
}

static void arm_idle_timer(ig_client *c)
{
    ig_client_arm_timer(c, c->th->cfg->client_idle_timeout_secs);
}

#define LINGER_MS 2000
#define LINGER_MAX (1u << 20)

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ig_client *c = h->data;
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
static void quick_ack(ig_client *c)
{
    uv_os_fd_t fd;
    int one = 1;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

static void client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ig_client *c = s->data;
    (void)buf;
    if (c->lingering) {
        if (nread < 0 || (c->lingered += (size_t)nread) > LINGER_MAX)
            ig_client_close(c);
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
            ig_client_error(c, c->rq.head_done ? 413 : 431, "invalid_request_error",
                            c->rq.head_done ? "payload_too_large" : "headers_too_large",
                            c->rq.head_done ? "request body too large" : "request head too large");
            return;
        }
        uv_read_stop(s);
        c->read_paused = 1;
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF)
            ig_debug("client read: %s", uv_strerror((int)nread));
        ig_client_close(c);
        return;
    }
    if (buf->base == c->th->rscratch) {
        /* early bytes of the next request while a stream is out */
        if (nread &&
            (ig_buf_take(&c->rbuf, &c->th->rbufs) || ig_buf_append(&c->rbuf, buf->base, (size_t)nread))) {
            ig_client_close(c);
            return;
        }
        if (c->rbuf.len >= IG_RBUF_SIZE && !c->read_paused) {
            /* a pipelined flood behind a stream: the rest waits in the kernel */
            uv_read_stop(s);
            c->read_paused = 1;
        }
        return;
    }
    c->rbuf.len += (size_t)nread;
    if (c->state == IG_C_READING) {
        client_parse(c);
        if (!c->closing && c->rq.in_message)
            quick_ack(c);
    }
}

int ig_client_count(void)
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

void ig_client_accept(ig_thread *th, uv_stream_t *server)
{
    if (atomic_fetch_add_explicit(&g_clients, 1, memory_order_relaxed) >=
        (int)th->cfg->max_client_connections) {
        atomic_fetch_sub_explicit(&g_clients, 1, memory_order_relaxed);
        refuse_connection(th, server);
        return;
    }
    ig_client *c = calloc(1, sizeof(*c));
    if (!c) {
        atomic_fetch_sub_explicit(&g_clients, 1, memory_order_relaxed);
        return;
    }
    c->th = th;
    c->tcp.data = c;
    c->timer.data = c;
    uv_tcp_init(&th->loop, &c->tcp);
    uv_timer_init(&th->loop, &c->timer);
    c->handles_open = 2;
    ig_list_push_front(&th->clients, &c->link);
    th->nclients++;
    ig_buf_init(&c->rbuf, (size_t)th->cfg->max_header_size + th->cfg->max_payload_size + IG_RBUF_SIZE);
    ig_buf_init(&c->obuf, 32u << 20);
    ig_h1req_init(&c->rq, &request_ops, c);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        ig_client_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    ig_count(&th->stats.client_conns, 1);
    arm_idle_timer(c);
    uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
}

/* ---- writing ---- */

static void next_request(ig_client *c);

static void client_write_cb(uv_write_t *req, int status)
{
    ig_wreq *w = (ig_wreq *)req;
    ig_client *c = req->handle->data;
    ig_thread *th = c->th;
    if (w->blk)
        ig_block_put(&th->blocks, w->blk);
    ig_freelist_put(&th->wreqs, w);
    c->pending_writes--;
    if (status < 0) {
        ig_client_close(c);
        return;
    }
    if (c->closing)
        return;
    if (c->state == IG_C_DISPATCHED && c->resp_started && c->pending_writes == 0 && c->obuf.data)
        ig_buf_give(&c->obuf, &th->heads); /* the response head is written: a long stream need not keep it */
    if (c->state == IG_C_DISPATCHED &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < IG_CLIENT_WQ_LOW)
        ig_proxy_resume_upstream(c);
    if (c->state == IG_C_FLUSHING && c->pending_writes == 0)
        next_request(c);
}

int ig_client_write(ig_client *c, const uv_buf_t *bufs, unsigned n, ig_block *hold)
{
    uv_buf_t rest[16];
    size_t total = 0;
    if (c->closing)
        return -ECANCELED;
    if (n > 16)
        return -EINVAL;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (!total)
        return 0;
    c->bytes_out += total;
    ssize_t done = 0;
    if (c->pending_writes == 0) {
        done = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (done == UV_EAGAIN)
            done = 0;
        if (done < 0) {
            ig_client_close(c);
            return (int)done;
        }
        if ((size_t)done == total)
            return 0;
    }
    unsigned m = 0;
    for (unsigned i = 0; i < n; i++) {
        if ((size_t)done >= bufs[i].len) {
            done -= (ssize_t)bufs[i].len;
            continue;
        }
        rest[m++] = uv_buf_init(bufs[i].base + done, (unsigned)(bufs[i].len - (size_t)done));
        done = 0;
    }
    ig_wreq *w = ig_freelist_get(&c->th->wreqs);
    if (!w) {
        ig_client_close(c);
        return -ENOMEM;
    }
    w->blk = hold;
    if (hold)
        hold->refs++;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, rest, m, client_write_cb);
    if (rc) {
        if (hold)
            ig_block_put(&c->th->blocks, hold);
        ig_freelist_put(&c->th->wreqs, w);
        ig_client_close(c);
        return rc;
    }
    c->pending_writes++;
    return 0;
}

int ig_client_wants_pause(ig_client *c)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > IG_CLIENT_WQ_HIGH;
}

/* ---- request completion, keep-alive and pipelining ---- */

static void linger_timeout_cb(uv_timer_t *t)
{
    ig_client_close(t->data);
}

/* We answered before the request ended (413, 431, 400). Closing with unread
 * input would send a RST that can destroy the answer in flight, so half-close,
 * read and discard for a while, then close (what nginx calls lingering close). */
static void client_linger(ig_client *c)
{
    c->lingering = 1;
    c->lingered = 0;
    rbuf_release(c); /* discarding reads go to the thread's scratch */
    c->rq.parsed = 0;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, NULL) != 0) {
        ig_client_close(c);
        return;
    }
    if (c->read_paused) {
        c->read_paused = 0;
        uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
    }
    c->deadline_ms = IG_NO_DEADLINE;
    uv_timer_start(&c->timer, linger_timeout_cb, LINGER_MS, 0);
}

static void next_request(ig_client *c)
{
    if (c->close_after || !c->rq.keep_alive || c->th->draining) {
        if (c->rq.in_message && !c->th->draining)
            client_linger(c);
        else
            ig_client_close(c);
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
    c->ntried = 0;
    c->resent = 0;
    c->resp_started = 0;
    c->dechunk = 0;
    c->have_rid = 0;
    c->last_timeout = 0;
    arm_idle_timer(c);
    if (c->read_paused) {
        c->read_paused = 0;
        uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
    }
    if (!c->in_parse && left)
        client_parse(c);
}

static void access_log(ig_client *c, int status, uint64_t dur_us)
{
    ig_alog_record r = {.rid = c->rid,
                        .rid_len = c->rid_len,
                        .method = llhttp_method_name((llhttp_method_t)ig_h1req_method(&c->rq)),
                        .status = status,
                        .worker = c->worker_label,
                        .bytes = c->bytes_out,
                        .ttfb_ns = c->first_byte_ns ? c->first_byte_ns - c->start_ns : 0,
                        .dur_us = dur_us};
    r.path = ig_client_path(c, &r.path_len);
    if (c->route <= IG_R_GENERATE && c->fields.has_model) {
        r.model = c->fields.model;
        r.model_len = c->fields.model_len;
    }
    ig_alog_append(&c->th->alog, &r);
}

/* The request is over: metrics, the access log, the gateway's in-flight count. */
static void finish_request(ig_client *c, int aborted)
{
    ig_thread *th = c->th;
    uint64_t now = uv_hrtime();
    uint64_t dur_us = (now - c->start_ns) / 1000;
    int status = aborted ? 499 : c->status; /* nginx's code for "client closed request" */
    ig_proxy_finish(c);
    ig_count(&th->stats.requests[c->route][ig_status_index(status)], 1);
    ig_hist_observe(&th->stats.duration[c->route], dur_us);
    if (c->first_byte_ns)
        ig_hist_observe(&th->stats.ttfb[c->route], (c->first_byte_ns - c->start_ns) / 1000);
    ig_count(&th->stats.bytes_out, c->bytes_out);
    if (aborted)
        ig_count(&th->stats.client_aborts, 1);
    if (ig_log_level >= IG_LOG_INFO)
        access_log(c, status, dur_us);
    free(c->logtag);
    c->logtag = NULL;
}

const char *ig_client_path(const ig_client *c, size_t *len)
{
    const char *url = c->logtag ? c->logtag : c->rbuf.data + c->rq.url_off;
    size_t n = 0;
    while (n < c->rq.url_len && url[n] != '?')
        n++;
    *len = n;
    return url;
}

void ig_client_retire_request(ig_client *c)
{
    if (c->retired || c->rq.parsed != c->rbuf.len || (c->up && ig_h1_writing(c->up)))
        return; /* done already, the next request is in rbuf, or rbuf is being sent */
    ig_body_fields *f = &c->fields;
    if (ig_log_level >= IG_LOG_INFO) {
        size_t plen, mlen = f->has_model ? f->model_len : 0;
        const char *path = ig_client_path(c, &plen);
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
}

void ig_client_request_done(ig_client *c)
{
    if (c->state == IG_C_DISPATCHED)
        finish_request(c, 0);
    c->state = IG_C_FLUSHING;
    disarm_timer(c);
    if (c->pending_writes == 0)
        next_request(c);
}

static void make_request_id(ig_client *c)
{
    int i = c->rq.head_done ? c->rq.h_request_id : -1;
    if (i >= 0 && c->rq.hdrs[i].value_len > 0 && c->rq.hdrs[i].value_len < sizeof(c->rid)) {
        memcpy(c->rid, c->rbuf.data + c->rq.hdrs[i].value_off, c->rq.hdrs[i].value_len);
        c->rid_len = c->rq.hdrs[i].value_len;
        c->have_rid = 1;
        return;
    }
    /* prefix (thread and start-up random) + sequence in hex, without printf */
    ig_thread *th = c->th;
    size_t n = strlen(th->rid_prefix);
    memcpy(c->rid, th->rid_prefix, n);
    char hex[16];
    int k = 0;
    uint64_t seq = ++th->rid_seq;
    do {
        hex[k++] = "0123456789abcdef"[seq & 15];
        seq >>= 4;
    } while (seq);
    while (k)
        c->rid[n++] = hex[--k];
    c->rid_len = n;
    c->have_rid = 0;
}

/* The request line was read and its method is HEAD. */
static int is_head(ig_client *c)
{
    return c->rq.url_len && ig_h1req_method(&c->rq) == HTTP_HEAD;
}

void ig_client_error(ig_client *c, int status, const char *type, const char *code, const char *msg)
{
    ig_client_error_headers(c, status, type, code, msg, status == 405 ? "allow: POST\r\n" : NULL);
}

void ig_client_error_headers(ig_client *c, int status, const char *type, const char *code, const char *msg,
                             const char *extra_headers)
{
    ig_info("%.*s -> %d %s", (int)c->rid_len, c->rid, status, msg);
    if (c->state == IG_C_READING) {
        /* refused while the request was still being read: its framing
         * cannot be trusted, so answer, then close */
        c->close_after = 1;
        if (!c->rid_len)
            make_request_id(c);
    }
    c->obuf.len = 0;
    c->status = status;
    if (ig_buf_take(&c->obuf, &c->th->heads) == 0 &&
        ig_http_error_response(&c->obuf, status, type, code, msg, c->rid, c->rid_len,
                               c->close_after || !c->rq.keep_alive || c->th->draining, extra_headers) == 0) {
        uv_buf_t b = uv_buf_init(c->obuf.data, (unsigned)c->obuf.len);
        if (is_head(c)) /* the same head, no body (RFC 9110 9.3.2) */
            b.len = (unsigned)ig_framing_head_len(b.base, b.len);
        ig_client_write(c, &b, 1, NULL);
    }
    if (!c->closing)
        ig_client_request_done(c);
}

static void respond_body(ig_client *c, int status, const char *ctype, const char *body, size_t len)
{
    ig_buf *o = &c->obuf;
    int close_conn = !c->rq.keep_alive || c->th->draining;
    o->len = 0;
    c->status = status;
    int rc = ig_buf_take(o, &c->th->heads);
    rc = rc ? rc : ig_buf_reserve(o, len + 256);
    rc = rc ? rc : ig_buf_puts(o, "HTTP/1.1 ");
    rc = rc ? rc : ig_buf_putu(o, (uint64_t)status);
    rc = rc ? rc : ig_buf_puts(o, " ");
    rc = rc ? rc : ig_buf_puts(o, ig_http_reason(status));
    rc = rc ? rc : ig_buf_puts(o, "\r\ncontent-type: ");
    rc = rc ? rc : ig_buf_puts(o, ctype);
    rc = rc ? rc : ig_buf_puts(o, "\r\ncontent-length: ");
    rc = rc ? rc : ig_buf_putu(o, len);
    rc = rc ? rc : ig_buf_puts(o, "\r\nx-request-id: ");
    rc = rc ? rc : ig_buf_append(o, c->rid, c->rid_len);
    rc = rc ? rc : ig_buf_puts(o, close_conn ? "\r\nconnection: close\r\n\r\n" : "\r\n\r\n");
    if (!is_head(c)) /* HEAD: the same head, no body */
        rc = rc ? rc : ig_buf_append(o, body, len);
    if (rc) {
        ig_client_error(c, 500, "server_error", "internal_error", "response too large");
        return;
    }
    uv_buf_t b = uv_buf_init(o->data, (unsigned)o->len);
    ig_client_write(c, &b, 1, NULL);
    if (!c->closing)
        ig_client_request_done(c);
}

static void respond_json(ig_client *c, int status, const char *body, size_t len)
{
    respond_body(c, status, "application/json", body, len);
}

static void respond_models(ig_client *c)
{
    const ig_snapshot *snap = ig_snapshot_get();
    ig_buf b;
    ig_buf_init(&b, 4u << 20);
    int rc = ig_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    for (int m = 0; m < snap->n_models && !rc; m++) {
        rc = ig_buf_puts(&b, m ? ",{\"id\":" : "{\"id\":");
        rc = rc ? rc : ig_json_append_string(&b, snap->models[m].name, snap->models[m].len);
        rc = rc ? rc : ig_buf_puts(&b, ",\"object\":\"model\",\"owned_by\":\"infergate\",\"workers\":");
        rc = rc ? rc : ig_buf_putu(&b, (uint64_t)snap->models[m].n);
        rc = rc ? rc : ig_buf_puts(&b, "}");
    }
    rc = rc ? rc : ig_buf_puts(&b, "]}\n");
    if (rc)
        ig_client_error(c, 500, "server_error", "internal_error", "model list too large");
    else
        respond_json(c, 200, b.data, b.len);
    ig_buf_free(&b);
}

static void respond_metrics(ig_client *c)
{
    ig_buf b;
    ig_buf_init(&b, 32u << 20);
    ig_metrics_render(&b, ig_all_threads, ig_n_threads, ig_snapshot_get());
    respond_body(c, 200, "text/plain; version=0.0.4", b.data, b.len);
    ig_buf_free(&b);
}

int ig_client_bearer(const ig_client *c, const char **tok, size_t *len)
{
    int i = c->rq.h_authorization;
    if (i < 0)
        return -1;
    const char *v = c->rbuf.data + c->rq.hdrs[i].value_off;
    size_t vlen = c->rq.hdrs[i].value_len;
    if (vlen < 7 || strncasecmp(v, "Bearer ", 7) != 0)
        return -1;
    v += 7;
    vlen -= 7;
    while (vlen && (*v == ' ' || *v == '\t')) { /* AReaL strips the token */
        v++;
        vlen--;
    }
    while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;
    *tok = v;
    *len = vlen;
    return 0;
}

/* 0 when the bearer matches key; -1 missing or malformed; -2 wrong.
 * Constant time: no early exit, the length difference folded into the result. */
int ig_client_bearer_is(const ig_client *c, const char *key)
{
    const char *v;
    size_t vlen;
    if (ig_client_bearer(c, &v, &vlen))
        return -1;
    return ig_http_secret_is(v, vlen, key) ? 0 : -2;
}

/* The client key, or (AReaL) a session's key or the admin key. */
static int authorized(ig_client *c)
{
    const char *key = c->th->cfg->api_key, *admin = c->th->cfg->admin_api_key, *tok;
    size_t len;
    if (!key || !*key || ig_client_bearer_is(c, key) == 0)
        return 1;
    return ig_client_bearer_is(c, admin) == 0 ||
           (ig_client_bearer(c, &tok, &len) == 0 && ig_sessions_by_key(tok, len));
}

/* /metrics: its own key, else the client key; the admin key always does. */
static int metrics_authorized(ig_client *c)
{
    const ig_config *cfg = c->th->cfg;
    const char *key = cfg->metrics_api_key && *cfg->metrics_api_key ? cfg->metrics_api_key : cfg->api_key;
    return !key || !*key || ig_client_bearer_is(c, key) == 0 ||
           ig_client_bearer_is(c, cfg->admin_api_key) == 0;
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

/* Who may reach the admin API (docs: README, Security). With --admin-allow,
 * only peers in those ranges, key or not. Without it: anyone holding the
 * key, or, with no key configured, a loopback peer that is not another
 * proxy relaying someone else (behind nginx on the same host every remote
 * client is a loopback peer). NULL when allowed, else why not. */
static const char *admin_refusal(ig_client *c)
{
    const ig_config *cfg = c->th->cfg;
    int keyed = cfg->admin_api_key && *cfg->admin_api_key;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len))
        return "the peer address is unknown";
    if (cfg->n_admin_allow) {
        if (!ig_cidr_match(cfg->admin_allow, cfg->n_admin_allow, (struct sockaddr *)&ss))
            return "this address is not in --admin-allow";
    } else if (!keyed && !is_loopback(&ss)) {
        return "without --admin-api-key the admin endpoints answer only on loopback";
    }
    if (!keyed && c->rq.via_proxy)
        return "without --admin-api-key the admin endpoints refuse requests relayed by a proxy "
               "(Forwarded, X-Forwarded-For, X-Real-IP)";
    return NULL;
}

/* Admin work runs on the control thread; the answer comes back to this one. */
static void admin_start(ig_client *c)
{
    const char *key = c->th->cfg->admin_api_key, *refused = admin_refusal(c);
    if (refused) {
        ig_client_error(c, 403, "permission_error", "admin_not_allowed", refused);
        return;
    }
    if (key && *key) {
        int rc = ig_client_bearer_is(c, key);
        if (rc == -1) {
            ig_client_error(c, 401, "authentication_error", "missing_admin_key",
                            "admin endpoints need 'Authorization: Bearer <admin key>'");
            return;
        }
        if (rc == -2) {
            ig_client_error(c, 403, "permission_error", "invalid_admin_key", "wrong admin key");
            return;
        }
    }
    ig_admin_msg *m = calloc(1, sizeof(*m));
    if (m) {
        m->target = strndup(c->rbuf.data + c->rq.url_off, c->rq.url_len);
        m->body = malloc(c->rq.body_len + 1);
    }
    if (!m || !m->target || !m->body) {
        ig_admin_msg_free(m);
        ig_client_error(c, 500, "server_error", "internal_error", "out of memory");
        return;
    }
    memcpy(m->body, c->rbuf.data + c->rq.body_off, c->rq.body_len);
    m->body[c->rq.body_len] = '\0';
    if (c->rq.h_authorization >= 0) /* some worker endpoints (AReaL's sessions) check it too */
        m->auth = strndup(c->rbuf.data + c->rq.hdrs[c->rq.h_authorization].value_off,
                          c->rq.hdrs[c->rq.h_authorization].value_len);
    m->body_len = c->rq.body_len;
    m->method = ig_h1req_method(&c->rq);
    m->reply_to = &c->th->replies;
    m->owner = c;
    c->admin_msg = m;
    ig_control_submit(m);
}

void ig_client_admin_reply(ig_client *c, ig_admin_msg *m)
{
    c->admin_msg = NULL;
    respond_body(c, m->status, "application/json", m->reply ? m->reply : "{}", m->reply ? m->reply_len : 2);
}

static int path_is(const char *path, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(path, want, len) == 0;
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
    return IG_R_OTHER;
}

static void dispatch(ig_client *c)
{
    c->state = IG_C_DISPATCHED;
    c->start_ms = uv_now(&c->th->loop);
    c->start_ns = uv_hrtime();
    c->first_byte_ns = 0;
    c->bytes_out = 0;
    c->status = 0;
    c->worker_label[0] = '\0';
    make_request_id(c);
    disarm_timer(c);

    const char *url = c->rbuf.data + c->rq.url_off;
    size_t plen = 0;
    while (plen < c->rq.url_len && url[plen] != '?')
        plen++;
    int method = ig_h1req_method(&c->rq);
    c->route = data_route(url, plen);
    if (c->route != IG_R_OTHER) {
        if (method != HTTP_POST) {
            ig_client_error(c, 405, "invalid_request_error", "method_not_allowed",
                            "use POST for this endpoint");
            return;
        }
        if (!authorized(c)) {
            ig_client_error(c, 401, "invalid_request_error", "invalid_api_key",
                            "missing or invalid API key (Authorization: Bearer ...)");
            return;
        }
        ig_client_arm_timer(c, c->th->cfg->request_timeout_secs);
        ig_proxy_start(c);
        return;
    }
    if (ig_admin_is_path(url, plen)) {
        c->route = IG_R_ADMIN;
        admin_start(c);
        return;
    }
    int get = method == HTTP_GET || method == HTTP_HEAD;
    if (get && (path_is(url, plen, "/health") || path_is(url, plen, "/liveness"))) {
        static const char ok[] = "{\"status\":\"ok\"}\n";
        c->route = IG_R_PROBE;
        respond_json(c, 200, ok, sizeof(ok) - 1);
    } else if (get && path_is(url, plen, "/readiness")) {
        const ig_snapshot *snap = ig_snapshot_get();
        char body[160];
        int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"workers\":%d,\"routable_workers\":%d}\n",
                         snap->n_routable > 0 ? "ready" : "not ready", snap->n_all, snap->n_routable);
        c->route = IG_R_PROBE;
        respond_json(c, snap->n_routable > 0 ? 200 : 503, body, (size_t)n);
    } else if (get && path_is(url, plen, "/v1/models")) {
        c->route = IG_R_MODELS;
        if (!authorized(c))
            ig_client_error(c, 401, "invalid_request_error", "invalid_api_key",
                            "missing or invalid API key (Authorization: Bearer ...)");
        else
            respond_models(c);
    } else if (get && path_is(url, plen, "/metrics")) {
        c->route = IG_R_METRICS;
        if (!metrics_authorized(c))
            ig_client_error(c, 401, "invalid_request_error", "invalid_api_key",
                            "/metrics needs 'Authorization: Bearer KEY' (--metrics-api-key, else --api-key)");
        else
            respond_metrics(c);
    } else {
        ig_client_error(c, 404, "invalid_request_error", "not_found", "unknown path");
    }
}

static void client_parse(ig_client *c)
{
    c->in_parse = 1;
    while (!c->closing && c->state == IG_C_READING && c->rq.parsed < c->rbuf.len) {
        int rc = ig_h1req_parse(&c->rq, &c->rbuf);
        if (rc == IG_H1REQ_MESSAGE) {
            dispatch(c);
            continue;
        }
        if (rc == IG_H1REQ_ERROR)
            ig_client_error(c, c->rq.err_status,
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

void ig_client_drain(ig_thread *th)
{
    ig_list *n = th->clients.next;
    while (n != &th->clients) {
        ig_client *c = ig_container_of(n, ig_client, link);
        n = n->next;
        if (c->state == IG_C_READING && !c->rq.in_message)
            ig_client_close(c);
        else
            c->close_after = 1;
    }
}
