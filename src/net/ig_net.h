/* A TCP stream that may carry TLS: what the client side and the upstream
 * side read and write through, so neither the proxy nor the parsers know
 * TLS is there. Plain, every call is the libuv call it wraps (the socket
 * is the first field, its data the owner's, and the owner's libuv
 * callbacks are called as libuv would). With TLS, OpenSSL runs over two
 * memory BIOs (curl's cf-ssl idea): a socket read is fed in and decrypted
 * into the owner's buffer; a write is encrypted into one heap record that
 * one uv_write sends. Nothing per connection is held while it idles but
 * OpenSSL's own state (SSL_MODE_RELEASE_BUFFERS).
 *
 * Threads: one stream belongs to one loop thread; a context (ig_tls.h) is
 * shared by every thread. */
#ifndef IG_NET_H
#define IG_NET_H
#include <stddef.h>
#include <uv.h>

#include "ig_tls.h"

typedef struct ig_tls_conn ig_tls_conn;

typedef struct ig_net {
    uv_tcp_t tcp;     /* connect, accept, options and the handle's data go straight to it */
    ig_tls_conn *tls; /* NULL: plain TCP */
} ig_net;

/** The handshake ended: 0, or a libuv code (ig_net_tls_error says why). */
typedef void (*ig_net_handshake_cb)(ig_net *n, int status);

/** Start TLS as the client on a connected n. host: the name checked
 * against the certificate and sent as SNI (an IP literal is checked as an
 * address, no SNI). session: where this peer's last session is kept (NULL:
 * none); a new connection resumes it and a newer one replaces it. done runs
 * from the loop, never from inside this call. 0 or a libuv code. */
int ig_net_tls_connect(ig_net *n, ig_tls_ctx *ctx, const char *host, void **session,
                       ig_net_handshake_cb done);
/** Start TLS as the server on an accepted n; done as above. A first byte
 * that cannot begin a TLS handshake fails it at once with
 * ig_net_tls_plain_http set (the peer spoke plain HTTP). */
int ig_net_tls_accept(ig_net *n, ig_tls_server *srv, ig_net_handshake_cb done);
/** 1 when the handshake failed because the peer sent plain text. */
int ig_net_tls_plain_http(const ig_net *n);
/** Forget TLS on a failed stream: it is plain TCP from now on (to tell a
 * plain-HTTP peer in words it reads). */
void ig_net_tls_drop(ig_net *n);
/** Why the handshake or the stream failed (static or n's own, valid until it closes). */
const char *ig_net_tls_error(const ig_net *n);
/** 1 when the handshake resumed a session. */
int ig_net_tls_resumed(const ig_net *n);

int ig_net_read_start(ig_net *n, uv_alloc_cb alloc, uv_read_cb read);
int ig_net_read_stop(ig_net *n);
/** As uv_try_write: the bytes written, or UV_EAGAIN, which TLS always
 * answers (the owner then writes with ig_net_write and its callback says
 * when the bytes are out, so a close waits for them as over plain TCP). */
int ig_net_try_write(ig_net *n, const uv_buf_t *bufs, unsigned nbufs);
/** As uv_write: bufs may be reused when cb runs (with TLS, at once). */
int ig_net_write(uv_write_t *req, ig_net *n, const uv_buf_t *bufs, unsigned nbufs, uv_write_cb cb);
/** Bytes queued to the socket and not written yet. */
size_t ig_net_write_queue_size(const ig_net *n);
/** As uv_shutdown; with TLS a close_notify goes first. */
int ig_net_shutdown(uv_shutdown_t *req, ig_net *n, uv_shutdown_cb cb);
/** As uv_close on the socket (cb gets it); the TLS state goes too. */
void ig_net_close(ig_net *n, uv_close_cb cb);
#endif
