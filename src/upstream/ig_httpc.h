/* A small HTTP/1.1 client for the control thread: one keep-alive connection
 * per target, one request at a time, its own timeout. Health checks reuse
 * the connection between rounds; many clients run concurrently on one loop,
 * so a fan-out costs the slowest worker's time, not the sum. */
#ifndef IG_HTTPC_H
#define IG_HTTPC_H
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#include "../net/ig_tls.h"

typedef struct ig_httpc ig_httpc;

/* status is the HTTP status, or 0 with err set (a static string). body is
 * valid only during the call. */
typedef void (*ig_httpc_cb)(void *arg, int status, const char *body, size_t len, const char *err);

/** The TLS context https:// targets are reached with (once, at start). */
void ig_httpc_configure_tls(ig_tls_ctx *tls);
/** tls_host: the name to check the target's certificate against (TLS), or NULL (plain). */
ig_httpc *ig_httpc_new(uv_loop_t *loop, const struct sockaddr *addr, const char *host_header,
                       const char *tls_host);
/**
 * Send one request (body may be NULL) on the kept connection, connecting
 * first if needed; cb runs exactly once. -EBUSY while one is in flight.
 * extra_headers: complete "name: value\r\n" lines, or NULL.
 */
int ig_httpc_request(ig_httpc *c, const char *method, const char *path, const char *extra_headers,
                     const char *body, size_t len, double timeout_secs, ig_httpc_cb cb, void *arg);
/* A streamed answer's body, piece by piece as it arrives (status: the
 * answer's). Must not start a request on the same client. */
typedef void (*ig_httpc_data_cb)(void *arg, int status, const char *data, size_t len);
/** As ig_httpc_request, but the body goes to on_data as it comes (not
 * kept), there is no timeout, and cb runs when the answer ends or breaks
 * (body NULL): a long poll or a watch. */
int ig_httpc_stream(ig_httpc *c, const char *method, const char *path, const char *extra_headers,
                    const char *body, size_t len, ig_httpc_data_cb on_data, ig_httpc_cb cb, void *arg);
/** 1 while a request is in flight. */
int ig_httpc_busy(const ig_httpc *c);
/** Cancel (cb runs with err "cancelled") and free once the handles closed. */
void ig_httpc_close(ig_httpc *c);
#endif
