/* HTTP/1.1 from clients: read and parse requests (http/ig_h1req), hand each
 * to the app's on_request hook as an ig_request, and answer through its
 * ig_response_ops: write with backpressure, keep-alive and pipelining in
 * order, lingering close after an early error, the body budget. Knows no
 * route and no worker. Threads: each connection belongs to one loop thread. */
#ifndef IG_H1CONN_H
#define IG_H1CONN_H
#include <uv.h>

#include "ig_thread.h"

/* Stop reading a worker once this much is queued towards a slow client. */
#define IG_CLIENT_WQ_HIGH (256 * 1024)
#define IG_CLIENT_WQ_LOW (64 * 1024)
#define IG_NO_DEADLINE UINT64_MAX

/* A client write in flight, with the read block it holds (th->wreqs). */
typedef struct ig_wreq {
    uv_write_t req;
    ig_block *blk;
} ig_wreq;

/** Limits and the gateway-wide body budget (--max-buffered-body-bytes). */
void ig_h1conn_configure(const ig_server_config *cfg);
#define IG_H1C_METRICS_ONLY 1u /* --prometheus-port: /metrics and nothing else, plain HTTP */
void ig_h1conn_accept(ig_thread *th, uv_stream_t *server, unsigned flags);
/** Client connections open now, all threads. */
int ig_h1conn_count(void);
/** Draining: idle connections close now, busy ones after their answer. */
void ig_h1conn_drain(ig_thread *th);
/** The drain timed out: close every connection of th. */
void ig_h1conn_close_all(ig_thread *th);
#endif
