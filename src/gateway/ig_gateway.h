/* The gateway's per-thread objects: event-loop threads, client connections,
 * upstream connections and their pools, and the buffers they share. Every
 * object here belongs to exactly one loop thread and is touched only by it. */
#ifndef IG_GATEWAY_H
#define IG_GATEWAY_H
#include <llhttp.h>
#include <stdatomic.h>
#include <uv.h>

#include "../balance/ig_policy.h"
#include "../core/ig_block.h"
#include "../core/ig_buf.h"
#include "../core/ig_config.h"
#include "../core/ig_freelist.h"
#include "../core/ig_inbox.h"
#include "../core/ig_list.h"
#include "../core/ig_wakeup.h"
#include "../http/ig_body_scan.h"
#include "../obs/ig_access_log.h"
#include "../http/ig_h1req.h"
#include "../http/ig_h1resp.h"
#include "../http/ig_http.h"
#include "../registry/ig_registry.h"
#include "../admission/ig_admission.h"
#include "../upstream/ig_h1client.h"
#include "ig_control.h"
#include "ig_metrics.h"

/* Stop reading a worker once this much is queued towards a slow client. */
#define IG_CLIENT_WQ_HIGH (256 * 1024)
#define IG_CLIENT_WQ_LOW (64 * 1024)
#define IG_MAX_TRIES 8
/* a request sent back by overloaded workers this often gets their answer */
#define IG_MAX_REQUEUES 5

typedef struct ig_wreq {
    uv_write_t req;
    ig_block *blk;
} ig_wreq;

/* A client's request buffer starts at this size (from the thread's free list). */
#define IG_RBUF_SIZE (16 * 1024)
/* Request and response heads are built in buffers of this size (they grow past it). */
#define IG_HEAD_SIZE 4096

typedef struct ig_thread {
    int idx;
    uv_loop_t loop;
    uv_tcp_t listener;
    ig_wakeup wake; /* stop, admin answers, epoch nudges: from other threads */
    uv_timer_t sweep;
    uv_timer_t drain_timer;
    uv_prepare_t prepare; /* quiescent points for the registry's epochs, log flush */
    uv_check_t check;
    uv_thread_t tid;
    int listen_fd;
    const ig_config *cfg;
    ig_policy_state pol;
    /* Memory a request needs only for a while comes from here and goes back
     * as soon as it is done with, so an open stream or an idle keep-alive
     * connection holds little more than its struct. */
    ig_freelist blocks;          /* ig_block: upstream reads */
    ig_freelist wreqs;           /* ig_wreq: client writes */
    ig_freelist rbufs;           /* IG_RBUF_SIZE: client request buffers */
    ig_freelist heads;           /* IG_HEAD_SIZE: request/response heads being built or parsed */
    ig_freelist hdr_tables;      /* ig_hdr[IG_MAX_HEADERS]: header slices of a head being read */
    char rscratch[IG_RBUF_SIZE]; /* client reads with no request buffer (one read at a time) */
    ig_pool_config pool_cfg;
    ig_upstream_ctx up; /* this thread's worker connections */
    ig_list clients;
    int nclients;
    ig_list budget_waiters; /* clients whose body waits for --max-buffered-body-bytes */
    uv_timer_t budget_timer;
    int draining;
    atomic_int stop_requested;
    uint64_t rid_seq;
    char rid_prefix[32];
    ig_inbox replies; /* admin answers from the control thread */
    ig_alog alog;
    ig_thread_stats stats;
    ig_admq admq; /* requests of this thread waiting for a worker slot */
} ig_thread;

typedef enum { IG_C_READING, IG_C_DISPATCHED, IG_C_FLUSHING } ig_client_state;

typedef struct ig_client {
    uv_tcp_t tcp;
    uv_timer_t timer;     /* idle timeout between requests, request timeout during one */
    uint64_t deadline_ms; /* loop time the current phase times out (IG_NO_DEADLINE: none) */
    uv_shutdown_t shutdown_req;
    ig_thread *th;
    ig_list link;
    size_t lingered; /* bytes discarded after an error answered before the request ended */
    ig_client_state state;
    int handles_open;
    unsigned closing : 1, read_paused : 1, in_parse : 1, close_after : 1, resp_started : 1, dechunk : 1,
        resent : 1, have_rid : 1, last_timeout : 1, lingering : 1, probe : 1, retrying : 1, in_proxy : 1,
        last_refused : 1, /* the last connect was refused: the worker got nothing */
        retired : 1,                  /* the request's memory is given back (its response streams) */
        budget_wait : 1,              /* in th->budget_waiters: its body needs room the budget lacks */
        head_pending : 1,             /* the response head is in obuf, to go with the first body bytes */
        overloaded : 1;               /* the worker answered 503/429: its answer is dropped, then requeued */
    /* the request being read: parsed in place in rbuf, slices by offset */
    ig_buf rbuf;
    size_t body_held; /* bytes of rbuf charged to the gateway's body budget */
    ig_h1req rq;
    char rid[80];
    size_t rid_len;
    ig_body_fields fields;
    /* the exchange with a worker */
    ig_buf obuf;  /* response head or a local response */
    ig_upconn *up;
    ig_worker *worker; /* holds one unit of worker->inflight while set */
    ig_worker *tried[IG_MAX_TRIES];
    int ntried;
    int pending_writes;
    int status;
    ig_route route;
    uint64_t start_ms;
    uint64_t start_ns, first_byte_ns;
    uint64_t bytes_out;
    ig_admin_msg *admin_msg; /* an admin request out at the control thread */
    char worker_label[80];   /* the last worker's URL, for the access log */
    char *logtag;            /* path then model, once the request is retired (access log) */
    ig_waiter wait; /* in th->admq while waiting for a worker slot, or (its link) in
                     * th->budget_waiters while its body waits for room: never both, a
                     * body still arriving is not dispatched */
    int requeues;        /* times an overloaded worker sent it back */
    long weight_version; /* of the worker that serves it, at dispatch */
} ig_client;

/* ig_thread.c */
void ig_thread_client_closed(ig_thread *th);
/** Prepare the loop threads (listening sockets already bound). 0 or negative errno. */
int ig_threads_init(ig_thread *ths, int n, const ig_config *cfg, const int *fds);
/** Run them. */
int ig_threads_run(ig_thread *ths, int n);
/** Every loop thread, for /metrics. */
extern ig_thread *ig_all_threads;
extern int ig_n_threads;
void ig_threads_stop(ig_thread *ths, int n);
void ig_threads_join(ig_thread *ths, int n);
/** Close the loop threads' wake-up descriptors: only once nothing can send
 * to them any more (loop threads joined, control thread stopped). */
void ig_threads_release_wakeups(ig_thread *ths, int n);

/* ig_client.c */
/** The gateway-wide budget of buffered request bytes (--max-buffered-body-bytes). */
void ig_client_configure(const ig_config *cfg);
/** Per-thread timer: clients waiting for the body budget try again. */
void ig_client_budget_retry(uv_timer_t *t);
void ig_client_accept(ig_thread *th, uv_stream_t *server);
/** Client connections open now, all threads. */
int ig_client_count(void);
/** Queue bytes to the client; hold is referenced until written. 0 or negative errno. */
int ig_client_write(ig_client *c, const uv_buf_t *bufs, unsigned n, ig_block *hold);
/** The response is fully queued: flush, then read the next request or close. */
void ig_client_request_done(ig_client *c);
void ig_client_close(ig_client *c);
/** 1 when so much is queued to the client that the worker should stop being read. */
int ig_client_wants_pause(ig_client *c);
/** Answer with an OpenAI-shaped JSON error and finish the request. */
void ig_client_error(ig_client *c, int status, const char *type, const char *code, const char *msg);
/** The same with extra response header lines ("name: value\r\n..."). */
void ig_client_error_headers(ig_client *c, int status, const char *type, const char *code, const char *msg,
                             const char *extra_headers);
#define IG_NO_DEADLINE UINT64_MAX
/** Time the client's current phase (head, body, queue wait, request, idle)
 * out after secs; replaces the previous phase's deadline. */
void ig_client_arm_timer(ig_client *c, double secs);
void ig_client_drain(ig_thread *th);
/** The bearer token of c's request (trimmed): 0, or -1 when absent or not "Bearer". */
int ig_client_bearer(const ig_client *c, const char **tok, size_t *len);
/** 0 when the bearer is key (compared in constant time), -1 missing or malformed, -2 other. */
int ig_client_bearer_is(const ig_client *c, const char *key);
/** The response streams: give the request's memory back to the thread
 * (no retry can follow); the access log keeps its path and model. */
void ig_client_retire_request(ig_client *c);
/** Path of c's request (for the access log), before or after retirement. */
const char *ig_client_path(const ig_client *c, size_t *len);
/** Answer an admin request that came back from the control thread. */
void ig_client_admin_reply(ig_client *c, ig_admin_msg *m);

/* ig_proxy.c */
void ig_proxy_start(ig_client *c);
/** Client vanished or timed out: abandon the upstream exchange. */
void ig_proxy_abort(ig_client *c);
void ig_proxy_timeout(ig_client *c);
void ig_proxy_resume_upstream(ig_client *c);
/** The request is over, however it ended: leave the gateway's in-flight counts. */
void ig_proxy_finish(ig_client *c);

#endif
