#include "ig_httpc.h"

#include <errno.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/ig_buf.h"
#include "../net/ig_net.h"

#define HTTPC_MAX_BODY (8u << 20)

/* The socket and its requests live apart from the client: libuv may still
 * call them back (cancelled) after the client dropped or freed them. */
typedef struct hconn {
    ig_net net; /* first: the socket's data is the hconn */
    uv_connect_t creq;
    uv_write_t wreq;
    struct ig_httpc *owner; /* NULL once dropped */
} hconn;

struct ig_httpc {
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    char host[280];
    char *tls_host; /* NULL: plain */
    void *session;  /* the target's last TLS session */
    char err[256];  /* a TLS failure's reason, during the callback */
    hconn *conn;    /* NULL when not connected; dropped and replaced on any error */
    uv_timer_t timer;
    llhttp_t parser;
    ig_buf out, body;
    ig_httpc_cb cb;
    ig_httpc_data_cb on_data; /* a streamed answer's (NULL: the body is kept) */
    void *arg;
    int busy, connected, closing, keep;
    char rbuf[16384];
};

static void conn_free_cb(uv_handle_t *h)
{
    free(h->data);
}

static void timer_free_cb(uv_handle_t *h)
{
    ig_httpc *c = h->data;
    ig_buf_free(&c->out);
    ig_buf_free(&c->body);
    ig_tls_session_free(c->session);
    free(c->tls_host);
    free(c);
}

static void drop_conn(ig_httpc *c)
{
    if (c->conn) {
        c->conn->owner = NULL;
        ig_net_close(&c->conn->net, conn_free_cb);
        c->conn = NULL;
    }
    c->connected = 0;
}

static void finish(ig_httpc *c, int status, const char *err)
{
    if (!c->busy)
        return;
    c->busy = 0;
    uv_timer_stop(&c->timer);
    if (err || !c->keep)
        drop_conn(c);
    ig_httpc_cb cb = c->cb;
    c->cb = NULL;
    cb(c->arg, status, c->body.data, c->body.len, err);
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    ig_httpc *c = p->data;
    if (c->on_data) {
        c->on_data(c->arg, p->status_code, at, len);
        return 0;
    }
    return ig_buf_append(&c->body, at, len) ? HPE_USER : 0;
}

static int on_complete(llhttp_t *p)
{
    ig_httpc *c = p->data;
    c->keep = llhttp_should_keep_alive(p);
    finish(c, p->status_code, NULL);
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {.on_body = on_body, .on_message_complete = on_complete};

static void alloc_cb(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    ig_httpc *c = ((hconn *)h->data)->owner;
    (void)s;
    static char sink[256];
    *b = c ? uv_buf_init(c->rbuf, sizeof(c->rbuf)) : uv_buf_init(sink, sizeof(sink));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    ig_httpc *c = ((hconn *)s->data)->owner;
    if (!c || n == 0)
        return; /* 0: nothing this time (a TLS record that held no data) */
    if (n < 0) {
        if (c->busy && n == UV_EOF)
            llhttp_finish(&c->parser); /* a close-delimited body ends here */
        if (c->busy)
            finish(c, 0, "connection closed before the response ended");
        else
            drop_conn(c); /* the peer closed the idle connection */
        return;
    }
    if (!c->busy) {
        drop_conn(c); /* bytes out of turn: the connection is unusable */
        return;
    }
    llhttp_errno_t e = llhttp_execute(&c->parser, b->base, (size_t)n);
    if (e != HPE_OK && e != HPE_PAUSED)
        finish(c, 0, "malformed response");
}

static void write_cb(uv_write_t *w, int status)
{
    ig_httpc *c = ((hconn *)w->data)->owner;
    if (c && status < 0 && c->busy)
        finish(c, 0, "write failed");
}

static void send_request(ig_httpc *c)
{
    llhttp_init(&c->parser, HTTP_RESPONSE, &settings);
    c->parser.data = c;
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    c->conn->wreq.data = c->conn;
    if (ig_net_write(&c->conn->wreq, &c->conn->net, &b, 1, write_cb))
        finish(c, 0, "write failed");
}

static ig_tls_ctx *tls_ctx;

void ig_httpc_configure_tls(ig_tls_ctx *tls)
{
    tls_ctx = tls;
}

static void tls_done(ig_net *n, int status)
{
    hconn *hc = n->tcp.data;
    ig_httpc *c = hc->owner;
    if (!c)
        return;
    if (status) {
        snprintf(c->err, sizeof(c->err), "TLS failed: %s", ig_net_tls_error(n));
        finish(c, 0, c->err);
        return;
    }
    c->connected = 1;
    ig_net_read_start(&hc->net, alloc_cb, read_cb);
    send_request(c);
}

static void connect_cb(uv_connect_t *r, int status)
{
    hconn *hc = r->data;
    ig_httpc *c = hc->owner;
    if (!c)
        return; /* an abandoned connection */
    if (status < 0) {
        finish(c, 0, status == UV_ECONNREFUSED ? "connection refused" : "connect failed");
        return;
    }
    if (c->tls_host) {
        if (ig_net_tls_connect(&hc->net, tls_ctx, c->tls_host, &c->session, tls_done))
            finish(c, 0, "cannot start TLS");
        return;
    }
    c->connected = 1;
    ig_net_read_start(&hc->net, alloc_cb, read_cb);
    send_request(c);
}

static void timeout_cb(uv_timer_t *t)
{
    finish(t->data, 0, "timed out");
}

ig_httpc *ig_httpc_new(uv_loop_t *loop, const struct sockaddr *addr, const char *host_header,
                       const char *tls_host)
{
    ig_httpc *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (tls_host && (!tls_ctx || !(c->tls_host = strdup(tls_host)))) {
        free(c);
        return NULL;
    }
    c->loop = loop;
    memcpy(&c->addr, addr,
           addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    snprintf(c->host, sizeof(c->host), "%s", host_header);
    ig_buf_init(&c->out, 1u << 20);
    ig_buf_init(&c->body, HTTPC_MAX_BODY);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    return c;
}

int ig_httpc_busy(const ig_httpc *c)
{
    return c->busy;
}

static int start(ig_httpc *c, const char *method, const char *path, const char *extra_headers,
                 const char *body, size_t len, double timeout_secs, ig_httpc_data_cb on_data, ig_httpc_cb cb,
                 void *arg);

int ig_httpc_request(ig_httpc *c, const char *method, const char *path, const char *extra_headers,
                     const char *body, size_t len, double timeout_secs, ig_httpc_cb cb, void *arg)
{
    return start(c, method, path, extra_headers, body, len, timeout_secs, NULL, cb, arg);
}

int ig_httpc_stream(ig_httpc *c, const char *method, const char *path, const char *extra_headers,
                    const char *body, size_t len, ig_httpc_data_cb on_data, ig_httpc_cb cb, void *arg)
{
    return start(c, method, path, extra_headers, body, len, 0, on_data, cb, arg);
}

static int start(ig_httpc *c, const char *method, const char *path, const char *extra_headers,
                 const char *body, size_t len, double timeout_secs, ig_httpc_data_cb on_data, ig_httpc_cb cb,
                 void *arg)
{
    if (c->busy)
        return -EBUSY;
    if (c->closing)
        return -ECANCELED;
    c->out.len = 0;
    c->body.len = 0;
    char head[2048];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nhost: %s\r\nuser-agent: infergate\r\n%s"
                     "content-type: application/json\r\ncontent-length: %zu\r\n\r\n",
                     method, path, c->host, extra_headers ? extra_headers : "", body ? len : 0);
    if (n < 0 || (size_t)n >= sizeof(head))
        return -ENAMETOOLONG;
    if (ig_buf_append(&c->out, head, (size_t)n) || (body && ig_buf_append(&c->out, body, len)))
        return -E2BIG;
    c->cb = cb;
    c->on_data = on_data;
    c->arg = arg;
    c->busy = 1;
    c->keep = 0;
    if (!on_data) /* a stream lasts as long as it lasts */
        uv_timer_start(&c->timer, timeout_cb, (uint64_t)(timeout_secs * 1000.0), 0);
    if (c->connected) {
        send_request(c);
        return 0;
    }
    drop_conn(c);
    hconn *hc = calloc(1, sizeof(*hc));
    if (!hc) {
        finish(c, 0, "out of memory");
        return 0;
    }
    uv_tcp_init(c->loop, &hc->net.tcp);
    hc->owner = c;
    hc->net.tcp.data = hc;
    hc->creq.data = hc;
    c->conn = hc;
    if (uv_tcp_connect(&hc->creq, &hc->net.tcp, (struct sockaddr *)&c->addr, connect_cb))
        finish(c, 0, "connect failed");
    return 0;
}

void ig_httpc_close(ig_httpc *c)
{
    if (!c || c->closing)
        return;
    finish(c, 0, "cancelled");
    c->closing = 1;
    drop_conn(c);
    uv_close((uv_handle_t *)&c->timer, timer_free_cb);
}
