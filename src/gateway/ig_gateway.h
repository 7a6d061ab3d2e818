/* The gateway's per-thread objects: event-loop threads, client connections,
 * upstream connections and their pools, and the buffers they share. Every
 * object here belongs to exactly one loop thread and is touched only by it. */
#ifndef IG_GATEWAY_H
#define IG_GATEWAY_H
#include <llhttp.h>
#include <stdatomic.h>
#include <uv.h>

#include "../balance/ig_policy.h"
#include "../core/ig_buf.h"
#include "../core/ig_config.h"
#include "../core/ig_list.h"
#include "../http/ig_body_scan.h"
#include "../http/ig_http.h"
#include "../registry/ig_registry.h"

#define IG_BLOCK_SIZE (64 * 1024)
/* Stop reading a worker once this much is queued towards a slow client. */
#define IG_CLIENT_WQ_HIGH (256 * 1024)
#define IG_CLIENT_WQ_LOW (64 * 1024)
#define IG_MAX_TRIES 3

/* Upstream read buffer, recycled through a per-thread free list. A block can
 * be referenced by several pending client writes, hence the count. */
typedef struct ig_block {
    struct ig_block *next;
    uint32_t refs;
    char data[IG_BLOCK_SIZE];
} ig_block;

typedef struct ig_wreq {
    uv_write_t req;
    ig_block *blk;
    struct ig_wreq *next;
} ig_wreq;

typedef struct ig_pool {
    ig_list idle; /* most recently used first */
    int nidle;
} ig_pool;

typedef struct ig_thread {
    int idx;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t wake;
    uv_timer_t sweep;
    uv_timer_t drain_timer;
    uv_thread_t tid;
    int listen_fd;
    const ig_config *cfg;
    ig_policy_state pol;
    ig_block *free_blocks;
    int n_free_blocks;
    ig_wreq *free_wreqs;
    int n_free_wreqs;
    ig_pool *pools; /* indexed by ig_worker.idx */
    int npools;
    ig_list clients;
    int nclients;
    int draining;
    atomic_int stop_requested;
    uint64_t rid_seq;
    char rid_prefix[32];
} ig_thread;

typedef enum { C_READING, C_DISPATCHED, C_FLUSHING } ig_client_state;

struct ig_upconn;

typedef struct ig_client {
    uv_tcp_t tcp;
    uv_timer_t timer; /* idle timeout between requests, request timeout during one */
    uv_shutdown_t shutdown_req;
    ig_thread *th;
    ig_list link;
    llhttp_t parser;
    size_t lingered; /* bytes discarded after an error answered before the request ended */
    ig_client_state state;
    int handles_open;
    unsigned closing : 1, read_paused : 1, in_parse : 1, keep_alive : 1, close_after : 1,
        http10 : 1, head_done : 1, in_value : 1, resp_started : 1, dechunk : 1, resent : 1,
        chunked : 1, in_message : 1, have_rid : 1, last_timeout : 1, lingering : 1;
    /* the request being read: slices of rbuf by offset */
    ig_buf rbuf;
    size_t parsed, msg_start;
    uint32_t url_off, url_len;
    ig_hdr hdrs[IG_MAX_HEADERS];
    int nhdrs;
    /* indexes into hdrs found in one pass at the end of the head, -1 when absent */
    short h_expect, h_request_id, h_authorization;
    size_t body_off, body_len;
    size_t body_hint; /* Content-Length still to arrive: grow rbuf once for it */
    int err_status; /* set by a parser callback that refused the request */
    const char *err_msg;
    char rid[80];
    size_t rid_len;
    ig_body_fields fields;
    /* the exchange with a worker */
    ig_buf obuf;  /* response head or a local response */
    ig_buf uhead; /* request head sent to the worker */
    struct ig_upconn *up;
    ig_worker *worker; /* holds one unit of worker->inflight while set */
    ig_worker *tried[IG_MAX_TRIES];
    int ntried;
    int pending_writes;
    int status;
    uint64_t start_ms;
} ig_client;

typedef enum { U_CONNECTING, U_BUSY, U_IDLE, U_CLOSING } ig_upconn_state;

typedef struct ig_upconn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* connect timeout */
    uv_connect_t creq;
    uv_write_t wreq;
    ig_thread *th;
    ig_worker *w;
    ig_client *c; /* attached client, NULL when idle or abandoned */
    ig_list link; /* in the pool's idle list */
    llhttp_t parser;
    ig_upconn_state state;
    int handles_open;
    unsigned reused : 1, got_bytes : 1, head_done : 1, msg_done : 1, in_value : 1, paused : 1,
        skip_informational : 1, timed_out : 1, pause_at_headers : 1;
    uint32_t nreq;
    uint64_t created_ms, idle_since_ms;
    /* response head, copied out of read blocks (it may span several) */
    ig_buf hbuf;
    ig_hdr hdrs[IG_MAX_HEADERS];
    int nhdrs;
    uint32_t reason_off, reason_len;
    int overflow;
} ig_upconn;

/* ig_thread.c */
ig_block *ig_block_get(ig_thread *th);
void ig_block_put(ig_thread *th, ig_block *b);
ig_wreq *ig_wreq_get(ig_thread *th);
void ig_wreq_put(ig_thread *th, ig_wreq *w);
void ig_thread_client_closed(ig_thread *th);
/** Start the loop threads (listening sockets already bound). 0 or negative errno. */
int ig_threads_start(ig_thread *ths, int n, const ig_config *cfg, const int *fds);
void ig_threads_stop(ig_thread *ths, int n);
void ig_threads_join(ig_thread *ths, int n);

/* ig_client.c */
void ig_client_accept(ig_thread *th, uv_stream_t *server);
/** Queue bytes to the client; hold is referenced until written. 0 or negative errno. */
int ig_client_write(ig_client *c, const uv_buf_t *bufs, unsigned n, ig_block *hold);
/** The response is fully queued: flush, then read the next request or close. */
void ig_client_request_done(ig_client *c);
void ig_client_close(ig_client *c);
/** 1 when so much is queued to the client that the worker should stop being read. */
int ig_client_wants_pause(ig_client *c);
/** Answer with an OpenAI-shaped JSON error and finish the request. */
void ig_client_error(ig_client *c, int status, const char *type, const char *code, const char *msg);
void ig_client_drain(ig_thread *th);

/* ig_proxy.c */
void ig_proxy_start(ig_client *c);
/** Client vanished or timed out: abandon the upstream exchange. */
void ig_proxy_abort(ig_client *c);
void ig_proxy_timeout(ig_client *c);
void ig_proxy_resume_upstream(ig_client *c);

/* ig_upstream.c */
ig_upconn *ig_upstream_take(ig_thread *th, ig_worker *w);
ig_upconn *ig_upstream_connect(ig_thread *th, ig_worker *w, uv_connect_cb cb);
void ig_upstream_release(ig_upconn *up, int reusable);
void ig_upstream_close(ig_upconn *up);
void ig_upstream_sweep(ig_thread *th);
void ig_upstream_close_all(ig_thread *th);
/* in ig_proxy.c: the read side belongs to the exchange */
void ig_upstream_start_reading(ig_upconn *up);
#endif
