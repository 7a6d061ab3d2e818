#include "ig_fetch.h"

#include <errno.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/ig_buf.h"

#define FETCH_MAX_BODY (4u << 20)

typedef struct fetch {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t creq;
    uv_write_t wreq;
    llhttp_t parser;
    ig_buf body;
    char req[512];
    ig_fetch_cb cb;
    void *arg;
    int done, handles;
    char rbuf[16384];
} fetch;

static void free_cb(uv_handle_t *h)
{
    fetch *f = h->data;
    if (--f->handles == 0) {
        ig_buf_free(&f->body);
        free(f);
    }
}

static void finish(fetch *f, int status, const char *err)
{
    if (f->done)
        return;
    f->done = 1;
    f->cb(f->arg, status, f->body.data, f->body.len, err);
    uv_close((uv_handle_t *)&f->tcp, free_cb);
    uv_close((uv_handle_t *)&f->timer, free_cb);
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    fetch *f = p->data;
    return ig_buf_append(&f->body, at, len) ? HPE_USER : 0;
}

static int on_complete(llhttp_t *p)
{
    fetch *f = p->data;
    finish(f, p->status_code, NULL);
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {.on_body = on_body, .on_message_complete = on_complete};

static void alloc_cb(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    fetch *f = h->data;
    (void)s;
    *b = uv_buf_init(f->rbuf, sizeof(f->rbuf));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    fetch *f = s->data;
    if (f->done)
        return;
    if (n < 0) {
        if (n == UV_EOF)
            llhttp_finish(&f->parser); /* a close-delimited body ends here */
        finish(f, 0, n == UV_EOF ? "connection closed before the response ended" : "read failed");
        return;
    }
    llhttp_errno_t e = llhttp_execute(&f->parser, b->base, (size_t)n);
    if (e != HPE_OK && e != HPE_PAUSED)
        finish(f, 0, "malformed response");
}

static void write_cb(uv_write_t *w, int status)
{
    fetch *f = w->data;
    if (status < 0)
        finish(f, 0, "write failed");
}

static void connect_cb(uv_connect_t *c, int status)
{
    fetch *f = c->data;
    if (f->done)
        return;
    if (status < 0) {
        finish(f, 0, status == UV_ECONNREFUSED ? "connection refused" : "connect failed");
        return;
    }
    uv_buf_t b = uv_buf_init(f->req, (unsigned)strlen(f->req));
    f->wreq.data = f;
    uv_write(&f->wreq, (uv_stream_t *)&f->tcp, &b, 1, write_cb);
    uv_read_start((uv_stream_t *)&f->tcp, alloc_cb, read_cb);
}

static void timeout_cb(uv_timer_t *t)
{
    finish(t->data, 0, "timed out");
}

int ig_fetch_get(uv_loop_t *loop, const struct sockaddr *addr, const char *host_header,
                 const char *path, double timeout_secs, ig_fetch_cb cb, void *arg)
{
    fetch *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    int n = snprintf(f->req, sizeof(f->req),
                     "GET %s HTTP/1.1\r\nhost: %s\r\nuser-agent: infergate\r\nconnection: close\r\n\r\n",
                     path, host_header);
    if (n < 0 || (size_t)n >= sizeof(f->req)) {
        free(f);
        return -ENAMETOOLONG;
    }
    f->cb = cb;
    f->arg = arg;
    ig_buf_init(&f->body, FETCH_MAX_BODY);
    llhttp_init(&f->parser, HTTP_RESPONSE, &settings);
    f->parser.data = f;
    f->tcp.data = f->timer.data = f->creq.data = f;
    uv_tcp_init(loop, &f->tcp);
    uv_timer_init(loop, &f->timer);
    f->handles = 2;
    uv_timer_start(&f->timer, timeout_cb, (uint64_t)(timeout_secs * 1000.0), 0);
    int rc = uv_tcp_connect(&f->creq, &f->tcp, addr, connect_cb);
    if (rc)
        finish(f, 0, "connect failed");
    return 0;
}
