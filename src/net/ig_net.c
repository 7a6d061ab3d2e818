/* A TCP stream that may carry TLS (ig_net.h). */
#include "ig_net.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stddef.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ig_tls_int.h"

/* One socket read's worth: decrypted at once, so one per thread will do. */
#define RAW_READ (64 * 1024)
/* A thread's ciphertext buffer larger than this is given back once sent. */
#define OUT_KEEP (256 * 1024)

struct ig_tls_conn {
    SSL *ssl;
    BIO *bio; /* ours (below): reads in_p, writes to the thread's out buffer */
    /* ciphertext from the peer not taken by OpenSSL yet: in the thread's
     * read buffer during a socket read, else in held (only while the owner
     * has stopped reading in the middle of one) */
    const char *in_p;
    size_t in_n;
    char *held;
    void **session; /* where the peer's last session is kept (client) */
    ig_net_handshake_cb done;
    uv_alloc_cb alloc; /* the owner's, while it reads */
    uv_read_cb read;
    /* hands over what was decrypted but not taken when the owner reads again */
    uv_idle_t idle;
    int pending_err; /* the socket's error or EOF, not told yet */
    /* owners' writes the socket took at once, their callbacks still to run
     * (from the idle handle; linked through the request's reserved[0]) */
    uv_write_t *done_head, *done_tail;
    unsigned handshaking : 1, reading : 1, raw_reading : 1, failed : 1, server : 1, seen_first : 1, plain : 1;
    char why[200];
};

/* A write of ciphertext in flight, with the owner's request to complete. */
typedef struct record {
    uv_write_t req;
    uv_write_t *owner_req;
    uv_write_cb owner_cb;
    uv_stream_t *stream;
    size_t len;
    char data[];
} record;

static _Thread_local char raw_buf[RAW_READ];

/* What OpenSSL wrote for the peer during the current call: sent (or queued
 * in a record) before any other connection of the thread calls OpenSSL. */
static _Thread_local struct {
    char *p;
    size_t len, cap;
} out;

/* the thread's out buffer goes when the thread ends */
static pthread_key_t out_key;
static pthread_once_t out_once = PTHREAD_ONCE_INIT;

static void out_free(void *p)
{
    (void)p;
    free(out.p);
    out.p = NULL;
    out.cap = out.len = 0;
}

static void make_out_key(void)
{
    pthread_key_create(&out_key, out_free);
}

/* ---- the BIO: no buffer of its own, so an idle connection keeps none ---- */

static int bio_write(BIO *b, const char *data, int len)
{
    (void)b;
    if (out.len + (size_t)len > out.cap) {
        size_t cap = out.cap ? out.cap : 16384;
        while (cap < out.len + (size_t)len)
            cap *= 2;
        char *p = realloc(out.p, cap);
        if (!p)
            return -1;
        if (!out.p) { /* a destructor per thread that has one */
            pthread_once(&out_once, make_out_key);
            pthread_setspecific(out_key, &out);
        }
        out.p = p;
        out.cap = cap;
    }
    memcpy(out.p + out.len, data, (size_t)len);
    out.len += (size_t)len;
    return len;
}

static int bio_read(BIO *b, char *dst, int len)
{
    ig_tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!t->in_n) {
        BIO_set_retry_read(b); /* empty is "wait", not the end */
        return -1;
    }
    size_t k = t->in_n < (size_t)len ? t->in_n : (size_t)len;
    memcpy(dst, t->in_p, k);
    t->in_p += k;
    t->in_n -= k;
    return (int)k;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_PENDING: return (long)((ig_tls_conn *)BIO_get_data(b))->in_n;
    default: return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static void make_bio_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "infergate socket");
    if (m && (!BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
              !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create))) {
        BIO_meth_free(m);
        m = NULL;
    }
    bio_method = m;
}

/* What OpenSSL did not take of a socket read waits in the connection's own
 * buffer (the thread's is the next read's); nothing left, nothing held. */
static int keep_leftover(ig_tls_conn *t)
{
    if (!t->in_n) {
        free(t->held);
        t->held = NULL;
        t->in_p = NULL;
        return 0;
    }
    if (t->held && t->in_p >= t->held) { /* already ours: to the front */
        memmove(t->held, t->in_p, t->in_n);
        t->in_p = t->held;
        return 0;
    }
    char *h = malloc(t->in_n);
    if (!h)
        return UV_ENOMEM;
    memcpy(h, t->in_p, t->in_n);
    free(t->held);
    t->held = h;
    t->in_p = h;
    return 0;
}

static ig_net *net_of(uv_stream_t *s)
{
    return (ig_net *)s; /* the socket is the first field */
}

static void record_cb(uv_write_t *req, int status)
{
    record *r = (record *)req;
    if (r->owner_cb) {
        r->owner_req->handle = r->stream; /* what the owner's callback reads, as with uv_write */
        r->owner_cb(r->owner_req, status);
    }
    free(r);
}

static void idle_cb(uv_idle_t *h);

/* One write of ciphertext, copied into a record that lives until libuv is
 * done with it. */
static int queue_record(ig_net *n, const char *data, size_t len, uv_write_t *owner_req, uv_write_cb owner_cb)
{
    record *r = malloc(sizeof(*r) + len);
    if (!r)
        return UV_ENOMEM;
    memcpy(r->data, data, len);
    r->len = len;
    r->owner_req = owner_req;
    r->owner_cb = owner_cb;
    r->stream = (uv_stream_t *)&n->tcp;
    uv_buf_t rb = uv_buf_init(r->data, (unsigned)r->len);
    int rc = uv_write(&r->req, r->stream, &rb, 1, record_cb);
    if (rc)
        free(r);
    return rc;
}

/* Send what OpenSSL wrote for the peer: straight from the thread's buffer
 * when the socket takes it all, else the rest in one record. An owner's
 * request completes from the loop as libuv would complete it: queued for
 * the idle handle when the socket took everything (no syscall, no
 * allocation), else when its record is written. 0 or a libuv code. */
static int flush_out(ig_net *n, uv_write_t *owner_req, uv_write_cb owner_cb)
{
    ig_tls_conn *t = n->tls;
    uv_stream_t *s = (uv_stream_t *)&n->tcp;
    size_t len = out.len, done = 0;
    int rc = 0;
    if (!len && !owner_cb)
        return 0;
    out.len = 0;
    if (len && uv_stream_get_write_queue_size(s) == 0) {
        uv_buf_t b = uv_buf_init(out.p, (unsigned)len);
        int w = uv_try_write(s, &b, 1);
        if (w < 0 && w != UV_EAGAIN)
            rc = w;
        else if (w > 0)
            done = (size_t)w;
    }
    if (!rc && done < len) {
        rc = queue_record(n, out.p + done, len - done, owner_req, owner_cb);
    } else if (!rc && owner_cb) {
        owner_req->cb = owner_cb;
        owner_req->handle = s;
        owner_req->reserved[0] = NULL;
        if (t->done_tail)
            t->done_tail->reserved[0] = owner_req;
        else
            t->done_head = owner_req;
        t->done_tail = owner_req;
        uv_idle_start(&t->idle, idle_cb);
    }
    if (out.cap > OUT_KEEP) { /* a big write's buffer does not stay */
        free(out.p);
        out.p = NULL;
        out.cap = 0;
    }
    return rc;
}

/* Run the owners' callbacks of writes that are out (status 0). */
static void complete_writes(ig_net *n, ig_tls_conn *t)
{
    while (t->done_head) {
        uv_write_t *req = t->done_head;
        t->done_head = req->reserved[0];
        if (!t->done_head)
            t->done_tail = NULL;
        req->cb(req, 0);
        if (n->tls != t)
            return; /* closed by the callback: the close ran the rest */
    }
}

static void fail_with(ig_tls_conn *t, SSL *ssl, int ret)
{
    ig_tls_reason(ssl, ret, t->why, sizeof(t->why));
    t->failed = 1;
}

/* Hand the owner what can be decrypted now, while it reads. */
static void deliver(ig_net *n)
{
    ig_tls_conn *t = n->tls;
    uv_stream_t *s = (uv_stream_t *)&n->tcp;
    while (t->reading && !t->failed && (SSL_pending(t->ssl) > 0 || t->in_n > 0)) {
        uv_buf_t b = uv_buf_init(NULL, 0);
        t->alloc((uv_handle_t *)s, RAW_READ, &b);
        if (!b.base || !b.len) {
            t->read(s, UV_ENOBUFS, &b);
            return;
        }
        /* as many records as fit, then one callback: a record per SSL_read */
        size_t got = 0;
        int r = 0, e = SSL_ERROR_NONE;
        while (got < b.len) {
            /* the error queue is empty here: every failure below clears it */
            r = SSL_read(t->ssl, b.base + got, (int)(b.len - got));
            if (r <= 0) {
                e = SSL_get_error(t->ssl, r);
                break;
            }
            got += (size_t)r;
            if (!t->in_n && !SSL_pending(t->ssl))
                break; /* nothing left to decrypt: another SSL_read would only set up and drop a buffer */
        }
        flush_out(n, NULL, NULL); /* a key update or an alert may want out, before anyone else's */
        if (e == SSL_ERROR_NONE || e == SSL_ERROR_WANT_READ) {
            t->read(s, (ssize_t)got, &b); /* 0 gives the buffer back */
            if (e == SSL_ERROR_WANT_READ)
                break;
            continue;
        }
        if (got) {
            t->read(s, (ssize_t)got, &b);
            b = uv_buf_init(NULL, 0);
            if (!t->reading || n->tls != t) {
                ERR_clear_error(); /* the owner stopped or closed on the data: the end waits */
                return;
            }
        }
        if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: the peer's end of data */
            t->read(s, UV_EOF, &b);
            return;
        }
        fail_with(t, t->ssl, r);
        t->read(s, UV_EPROTO, &b);
        return;
    }
    if (t->reading && t->pending_err && !SSL_pending(t->ssl) && !t->in_n) {
        int err = t->pending_err;
        uv_buf_t z = uv_buf_init(NULL, 0);
        t->pending_err = 0;
        t->read(s, err, &z);
    }
}

static void idle_cb(uv_idle_t *h)
{
    ig_net *n = h->data;
    ig_tls_conn *t = n->tls;
    uv_idle_stop(h);
    complete_writes(n, t);
    if (n->tls != t)
        return;
    deliver(n);
    if (n->tls == t)
        keep_leftover(t);
}

static void raw_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(raw_buf, sizeof(raw_buf));
}

static void handshake_step(ig_net *n)
{
    ig_tls_conn *t = n->tls;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    int sent = flush_out(n, NULL, NULL);
    if (r == 1 && !sent) {
        t->handshaking = 0;
        if (!t->reading) { /* the owner reads when it is ready; until then the socket waits */
            uv_read_stop((uv_stream_t *)&n->tcp);
            t->raw_reading = 0;
        }
        t->done(n, 0);
        return;
    }
    int e = r == 1 ? SSL_ERROR_SYSCALL : SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ && !t->pending_err && !sent)
        return; /* the peer's next flight */
    if (e == SSL_ERROR_WANT_READ || (e == SSL_ERROR_SYSCALL && !ERR_peek_error()))
        snprintf(t->why, sizeof(t->why), "the connection closed during the TLS handshake%s%s",
                 t->pending_err ? ": " : "", t->pending_err ? uv_strerror(t->pending_err) : "");
    else
        ig_tls_reason(t->ssl, r, t->why, sizeof(t->why));
    t->failed = 1;
    t->handshaking = 0;
    uv_read_stop((uv_stream_t *)&n->tcp);
    t->raw_reading = 0;
    t->done(n, UV_EPROTO);
}

static void raw_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ig_net *n = net_of(s);
    ig_tls_conn *t = n->tls;
    if (nread > 0 && t->server && !t->seen_first) {
        t->seen_first = 1;
        if (buf->base[0] != 0x16) { /* not a TLS handshake record: someone speaks plain HTTP here */
            snprintf(t->why, sizeof(t->why), "a plain HTTP request on the TLS port");
            t->plain = t->failed = 1;
            t->handshaking = 0;
            uv_read_stop(s);
            t->raw_reading = 0;
            t->done(n, UV_EPROTO);
            return;
        }
    }
    if (nread > 0 && t->in_n) { /* after what waited: one buffer, in order */
        char *h = realloc(t->held, t->in_n + (size_t)nread);
        if (!h) {
            nread = UV_ENOMEM;
        } else {
            memcpy(h + t->in_n, buf->base, (size_t)nread);
            t->held = h;
            t->in_p = h;
            t->in_n += (size_t)nread;
        }
    } else if (nread > 0) {
        t->in_p = buf->base;
        t->in_n = (size_t)nread;
    }
    if (nread < 0) {
        t->pending_err = (int)nread;
        uv_read_stop(s); /* nothing more comes */
        t->raw_reading = 0;
    }
    if (t->handshaking)
        handshake_step(n);
    else
        deliver(n);
    if (n->tls == t && keep_leftover(t)) /* not closed meanwhile, and out of memory */
        t->pending_err = UV_ENOMEM;
}

static int tls_start(ig_net *n, SSL *ssl, ig_net_handshake_cb done, ig_tls_conn **made)
{
    ig_tls_conn *t = ssl ? calloc(1, sizeof(*t)) : NULL;
    if (!t) {
        SSL_free(ssl);
        return UV_ENOMEM;
    }
    t->ssl = ssl;
    pthread_once(&bio_once, make_bio_method);
    t->bio = bio_method ? BIO_new(bio_method) : NULL;
    if (!t->bio) {
        SSL_free(t->ssl);
        free(t);
        return UV_ENOMEM;
    }
    BIO_set_data(t->bio, t);
    SSL_set_bio(t->ssl, t->bio, t->bio); /* one reference, the SSL's */
    SSL_set_ex_data(t->ssl, ig_tls_conn_index(), t);
    t->done = done;
    t->handshaking = 1;
    uv_idle_init(n->tcp.loop, &t->idle);
    t->idle.data = n;
    n->tls = t;
    *made = t;
    return 0;
}

static int tls_go(ig_net *n)
{
    ig_tls_conn *t = n->tls;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    int e = SSL_get_error(t->ssl, r);
    if (r != 1 && e != SSL_ERROR_WANT_READ) {
        fail_with(t, t->ssl, r);
        return UV_EPROTO;
    }
    int rc = flush_out(n, NULL, NULL);
    if (rc)
        return rc;
    rc = uv_read_start((uv_stream_t *)&n->tcp, raw_alloc, raw_read);
    t->raw_reading = rc == 0;
    return rc;
}

int ig_net_tls_connect(ig_net *n, ig_tls_ctx *ctx, const char *host, void **session, ig_net_handshake_cb done)
{
    ig_tls_conn *t;
    int rc = tls_start(n, SSL_new(ctx->ssl), done, &t);
    if (rc)
        return rc;
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(t->ssl, host); /* RFC 6066: no SNI for an address */
    if (!ctx->insecure) {
        if (is_ip)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host);
        else
            SSL_set1_host(t->ssl, host);
    }
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_set_alpn_protos(t->ssl, alpn, sizeof(alpn) - 1);
    t->session = session;
    if (session && *session)
        SSL_set_session(t->ssl, *session);
    SSL_set_connect_state(t->ssl);
    return tls_go(n);
}

int ig_net_tls_accept(ig_net *n, ig_tls_server *srv, ig_net_handshake_cb done)
{
    ig_tls_conn *t;
    int rc = tls_start(n, ig_tls_server_ssl(srv), done, &t);
    if (rc)
        return rc;
    t->server = 1;
    SSL_set_accept_state(t->ssl);
    return tls_go(n);
}

int ig_tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
    ig_tls_conn *t = SSL_get_ex_data(ssl, ig_tls_conn_index());
    if (!t || !t->session)
        return 0; /* OpenSSL frees it */
    if (*t->session)
        SSL_SESSION_free(*t->session);
    *t->session = sess; /* the reference is ours now */
    return 1;
}

const char *ig_net_tls_error(const ig_net *n)
{
    if (!n->tls)
        return "not a TLS connection";
    return n->tls->why[0] ? n->tls->why : "TLS error";
}

int ig_net_tls_plain_http(const ig_net *n)
{
    return n->tls && n->tls->plain;
}

int ig_net_tls_resumed(const ig_net *n)
{
    return n->tls && SSL_session_reused(n->tls->ssl);
}

int ig_net_read_start(ig_net *n, uv_alloc_cb alloc, uv_read_cb read)
{
    ig_tls_conn *t = n->tls;
    if (!t)
        return uv_read_start((uv_stream_t *)&n->tcp, alloc, read);
    t->alloc = alloc;
    t->read = read;
    t->reading = 1;
    if (t->handshaking)
        return 0;
    if (!t->raw_reading && !t->pending_err && !t->failed) {
        int rc = uv_read_start((uv_stream_t *)&n->tcp, raw_alloc, raw_read);
        if (rc)
            return rc;
        t->raw_reading = 1;
    }
    if (SSL_pending(t->ssl) > 0 || t->in_n > 0 || t->pending_err)
        uv_idle_start(&t->idle, idle_cb); /* from the loop, as a socket read would come */
    return 0;
}

int ig_net_read_stop(ig_net *n)
{
    ig_tls_conn *t = n->tls;
    if (!t)
        return uv_read_stop((uv_stream_t *)&n->tcp);
    t->reading = 0;
    uv_idle_stop(&t->idle);
    if (t->handshaking || !t->raw_reading)
        return 0;
    t->raw_reading = 0;
    return uv_read_stop((uv_stream_t *)&n->tcp);
}

/* Encrypt bufs into the write BIO. 0 or a libuv code. */
/* Encrypt bufs into the thread's out buffer; small pieces together, since
 * each SSL_write is a record of its own (an AES-GCM setup, 22 bytes more on
 * the wire). 0 or a libuv code. */
static int encrypt(ig_net *n, const uv_buf_t *bufs, unsigned nbufs)
{
    static _Thread_local char gather[16384];
    ig_tls_conn *t = n->tls;
    if (t->handshaking || t->failed)
        return t->failed ? UV_EPROTO : UV_ENOTCONN;
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    uv_buf_t one;
    if (nbufs > 1 && total <= sizeof(gather)) {
        size_t k = 0;
        for (unsigned i = 0; i < nbufs; i++) {
            memcpy(gather + k, bufs[i].base, bufs[i].len);
            k += bufs[i].len;
        }
        one = uv_buf_init(gather, (unsigned)k);
        bufs = &one;
        nbufs = 1;
    }
    for (unsigned i = 0; i < nbufs; i++) {
        if (!bufs[i].len)
            continue;
        int r = SSL_write(t->ssl, bufs[i].base, (int)bufs[i].len);
        if (r != (int)bufs[i].len) {
            fail_with(t, t->ssl, r);
            return UV_EPROTO;
        }
    }
    return 0;
}

int ig_net_try_write(ig_net *n, const uv_buf_t *bufs, unsigned nbufs)
{
    if (!n->tls)
        return uv_try_write((uv_stream_t *)&n->tcp, bufs, nbufs);
    /* never at once: the owner's write callback is how it learns its bytes
     * left (a close after an answer waits for it, as with plain TCP) */
    return UV_EAGAIN;
}

int ig_net_write(uv_write_t *req, ig_net *n, const uv_buf_t *bufs, unsigned nbufs, uv_write_cb cb)
{
    if (!n->tls)
        return uv_write(req, (uv_stream_t *)&n->tcp, bufs, nbufs, cb);
    int rc = encrypt(n, bufs, nbufs);
    if (rc) {
        out.len = 0; /* half a write is no one's to send */
        return rc;
    }
    return flush_out(n, req, cb);
}

size_t ig_net_write_queue_size(const ig_net *n)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&n->tcp);
}

int ig_net_shutdown(uv_shutdown_t *req, ig_net *n, uv_shutdown_cb cb)
{
    ig_tls_conn *t = n->tls;
    if (t && !t->handshaking && !t->failed) {
        ERR_clear_error();
        SSL_shutdown(t->ssl); /* our close_notify, queued before the FIN */
        flush_out(n, NULL, NULL);
    }
    return uv_shutdown(req, (uv_stream_t *)&n->tcp, cb);
}

static void tls_free_cb(uv_handle_t *h)
{
    ig_tls_conn *t = (ig_tls_conn *)((char *)h - offsetof(ig_tls_conn, idle));
    free(t->held);
    free(t);
}

void ig_net_tls_drop(ig_net *n)
{
    ig_tls_conn *t = n->tls;
    if (!t)
        return;
    n->tls = NULL;
    if (t->raw_reading)
        uv_read_stop((uv_stream_t *)&n->tcp);
    t->reading = 0;
    t->failed = 1;
    SSL_free(t->ssl);
    t->ssl = NULL;
    uv_close((uv_handle_t *)&t->idle, tls_free_cb);
}

void ig_net_close(ig_net *n, uv_close_cb cb)
{
    ig_tls_conn *t = n->tls;
    if (t) {
        /* writes that are out but whose callbacks had not run: now, as
         * libuv runs a closing stream's completed writes */
        while (t->done_head) {
            uv_write_t *req = t->done_head;
            t->done_head = req->reserved[0];
            req->cb(req, 0);
        }
        t->done_tail = NULL;
        n->tls = NULL;
        if (!t->handshaking && !t->failed) {
            /* a close_notify, best effort: OpenSSL would otherwise take the
             * session for a broken one and it could not be resumed */
            ERR_clear_error();
            SSL_shutdown(t->ssl);
            if (out.len && uv_stream_get_write_queue_size((uv_stream_t *)&n->tcp) == 0) {
                uv_buf_t b = uv_buf_init(out.p, (unsigned)out.len);
                uv_try_write((uv_stream_t *)&n->tcp, &b, 1);
            }
            out.len = 0;
        }
        t->reading = 0; /* a delivery under way stops at once */
        t->failed = 1;
        SSL_free(t->ssl); /* and its two BIOs */
        t->ssl = NULL;
        uv_close((uv_handle_t *)&t->idle, tls_free_cb);
    }
    uv_close((uv_handle_t *)&n->tcp, cb);
}
