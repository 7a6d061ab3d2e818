/* Keep-alive pools of worker connections. Each worker keeps one pool per
 * loop thread, touched only by that thread: take (choosing, among the idle
 * connections, the one whose process answers fastest), connect, release,
 * retire (request count, age, idle time, the worker's own keep-alive
 * timeout, worker removed) and close. The pool knows no policy and no
 * client: the proxy picks the worker, ig_h1client runs the exchange.
 *
 * Threads: everything here runs on the connection's loop thread; the
 * worker's best_ttfb_us and idle_close_ms are relaxed atomics shared by the
 * threads. */
#ifndef IG_POOL_H
#define IG_POOL_H
#include <stdint.h>
#include <uv.h>

#include "../core/ig_buf.h"
#include "../core/ig_freelist.h"
#include "../core/ig_list.h"
#include "../http/ig_h1resp.h"
#include "../http/ig_http.h"
#include "../net/ig_net.h"
#include "../obs/ig_stats.h"
#include "../registry/ig_registry.h"

typedef struct ig_pool_config {
    uint64_t idle_timeout_ms; /* idle this long: closed by the sweep */
    uint64_t max_age_ms;      /* 0: no age limit */
    uint64_t connect_timeout_ms;
    uint32_t max_requests;      /* per connection; 0: unlimited */
    size_t max_request_head;    /* a request head built larger is refused */
    const char *process_header; /* lower-case name of a header naming the serving process; NULL: none */
    int spread;                 /* latency-aware choice among idle connections */
    /* what a probe asks for, per worker group ([0]: the fleet's health path); NULL: "/" */
    const char *probe_paths[IG_MAX_GROUPS];
    ig_tls_ctx *tls; /* for https:// workers */
} ig_pool_config;

/* The last TLS session of a worker, per thread, so a new connection resumes
 * it (one slot per worker id modulo the table; a collision costs a full
 * handshake, nothing else). */
#define IG_TLS_SESSION_SLOTS 64
typedef struct ig_tls_session_slot {
    uint64_t worker_id;
    void *session;
} ig_tls_session_slot;

/* A loop thread's share of the upstream side (embedded in its thread). */
typedef struct ig_upstream_ctx {
    uv_loop_t *loop;
    int idx; /* the thread's index: its pool in each worker */
    const ig_pool_config *cfg;
    ig_freelist *blocks;     /* ig_block: reads */
    ig_freelist *heads;      /* IG_HEAD_SIZE: request heads, response heads spanning reads */
    ig_freelist *hdr_tables; /* ig_hdr[IG_MAX_HEADERS] */
    ig_freelist *wreqs;      /* chunks of at least a uv_write_t: a request write libuv queues (rare) */
    ig_thread_stats *stats;
    ig_list idle_conns; /* every idle connection of this thread, oldest last */
    ig_list probes;     /* probe connections under way (linked by tlink) */
    ig_list waiters;    /* ig_conn_wait, oldest first */
    uv_timer_t pace;    /* paces probes while requests wait; started on the first wait */
    unsigned pace_open : 1, serving : 1, serve_again : 1;
    int draining; /* set by the thread: nothing goes back to a pool */
    ig_tls_session_slot tls_sessions[IG_TLS_SESSION_SLOTS];
} ig_upstream_ctx;

typedef enum { IG_U_CONNECTING, IG_U_BUSY, IG_U_IDLE, IG_U_CLOSING } ig_upconn_state;

struct ig_exchange_cb;

typedef struct ig_upconn {
    ig_net net;       /* the socket, maybe TLS (first: libuv's handle is the connection's) */
    uv_timer_t timer; /* connect timeout */
    ig_upstream_ctx *ctx;
    ig_worker *w;
    ig_list link; /* in the worker's pool for this thread */
    /* next to link: taking from the pool reads these of every idle connection it scans */
    uint32_t ttfb_ewma_us; /* this connection's time to first byte: its process's load */
    uint8_t queued_streak; /* answers in a row that came a queueing delay late */
    uint64_t created_ms;
    ig_list tlink; /* in the thread's list of idle connections */
    ig_upconn_state state;
    int handles_open;
    unsigned reused : 1, timed_out : 1,
        /* the exchange (ig_h1client) */
        got_bytes : 1, head_done : 1, paused : 1, discard : 1, dechunk : 1, head_request : 1,
        writing : 1,   /* the request is not all written yet */
        sent_any : 1,  /* some of the request went out: the worker may have read it */
        probe : 1,     /* carries a probe, not a client's request */
        found_new : 1, /* its answer named a process the worker's table did not know */
        /* a streamed request body (ig_h1client) */
        body_streams : 1, body_chunked : 1, body_open : 1 /* not all written yet */, body_last : 1;
    char chunk_line[20]; /* a streamed chunk's size line, until written */
    uint32_t nreq;
    short proc;                /* index in w->procs of the process it reaches; -1: not known yet */
    unsigned proc_counted : 1; /* the current request is counted in that process's in-flight */
    uint64_t idle_since_ms;
    uint64_t sent_ns; /* when the current request went out */
    /* the owner of the current exchange and how to tell it; NULL when idle or abandoned */
    const struct ig_exchange_cb *cb;
    void *owner;
    ig_h1resp resp;
    ig_buf whead; /* the request head, until written */
    /* response head: parsed in the read block when it is whole in one read,
     * else gathered here across reads */
    ig_buf hbuf;  /* from ctx->heads until the head is taken */
    ig_hdr *hdrs; /* from ctx->hdr_tables, likewise */
    int nhdrs;
} ig_upconn;

/* A request waiting for a connection to its worker, embedded in its owner.
 * With --upstream-process-header a request that finds no idle connection
 * does not open one itself (a burst of connections lands on the one process
 * that wins accept()): probe connections go out paced, each learns its
 * process, and a waiter takes one whose process is least loaded. */
typedef struct ig_conn_wait {
    ig_list link; /* in ctx->waiters */
    ig_worker *w; /* NULL: not waiting */
    uint64_t since_ms;
    /** A connection, taken for the owner, or NULL: connect yourself. */
    void (*ready)(struct ig_conn_wait *cw, ig_upconn *up);
} ig_conn_wait;

void ig_pool_ctx_init(ig_upstream_ctx *ctx, uv_loop_t *loop, int idx, const ig_pool_config *cfg,
                      ig_freelist *blocks, ig_freelist *heads, ig_freelist *hdr_tables, ig_freelist *wreqs,
                      ig_thread_stats *stats);
/** An idle connection to w, or NULL: connect (none idle, or the spread
 * wants a fresh connection to re-race accept() on the worker's processes). */
ig_upconn *ig_pool_take(ig_upstream_ctx *ctx, ig_worker *w);
/** No idle connection was fit: wait for one (1; cw->ready runs later,
 * never before this returns) or connect now (0). */
int ig_pool_wait(ig_upstream_ctx *ctx, ig_worker *w, ig_conn_wait *cw);
/** Stop waiting (the owner is leaving); nothing if not waiting. */
void ig_pool_unwait(ig_upstream_ctx *ctx, ig_conn_wait *cw);
/** A probe could not reach its worker: its waiters connect themselves. */
void ig_pool_probe_failed(ig_upstream_ctx *ctx, ig_worker *w);
/** A new connection to w; cb runs when it is up, failed, or timed out
 * (up->timed_out), and frees the uv_connect_t it gets (req->data is the
 * connection): an open connection holds no connect request. NULL when it
 * cannot even start. */
ig_upconn *ig_pool_connect(ig_upstream_ctx *ctx, ig_worker *w, uv_connect_cb cb);
/** The exchange is over: pool up when reusable (and young, and the worker
 * stays), else close it. */
void ig_pool_release(ig_upconn *up, int reusable);
void ig_pool_close(ig_upconn *up);
/** Give the response head's buffer and header table back to the thread. */
void ig_pool_drop_head(ig_upconn *up);
/** The worker closed this idle connection: learn its keep-alive timeout,
 * so later connections are not reused just as it closes them. */
void ig_pool_note_idle_close(ig_upconn *up);
/** The first response byte of a request arrived after us microseconds. */
void ig_pool_note_ttfb(ig_upconn *up, uint64_t us);
/** A request is about to go out on a taken or new connection. */
void ig_pool_count_use(ig_upconn *up);
/** The answer named its process (the --upstream-process-header value). */
void ig_pool_learn_process(ig_upconn *up, const char *value, size_t len);
/** A probe's answer is whole (ig_probe): pool the connection unless its
 * process has spares on this thread already; learn from what it found. */
void ig_pool_probe_done(ig_upconn *up, int reusable);
/** The current request is over: it no longer loads its process. */
void ig_pool_exchange_over(ig_upconn *up);
/** Close idle connections past their idle time or age, or of removed workers. */
void ig_pool_sweep(ig_upstream_ctx *ctx);
void ig_pool_close_all(ig_upstream_ctx *ctx);
/** Where this thread keeps w's last TLS session. */
void **ig_pool_tls_session(ig_upstream_ctx *ctx, const ig_worker *w);
#endif
