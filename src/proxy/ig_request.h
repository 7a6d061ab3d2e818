/* The request every layer above the wire sees: what a client protocol
 * hands to a handler, with the ops to answer it. The client side (today
 * server/ig_h1conn) embeds one per request in flight, so nothing is
 * allocated per request; the proxy, the routes and the admin hand-off work
 * on it and never learn which protocol the client speaks (h2o's
 * h2o_req_t with its generator is the model).
 *
 * Threads: a request and everything it points at belong to one loop
 * thread. */
#ifndef IG_REQUEST_H
#define IG_REQUEST_H
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "../admission/ig_admission.h"
#include "../balance/ig_policy.h"
#include "../balance/ig_prefix_share.h"
#include "../core/ig_block.h"
#include "../core/ig_freelist.h"
#include "../core/ig_inbox.h"
#include "../core/ig_list.h"
#include "../api/ig_body_scan.h"
#include "../http/ig_http.h"
#include "../obs/ig_stats.h"
#include "../registry/ig_registry.h"
#include "../upstream/ig_pool.h"

#define IG_MAX_TRIES 8
/* a request sent back by overloaded workers this often gets their answer */
#define IG_MAX_REQUEUES 5

typedef struct ig_request ig_request;
struct ig_pd;

/* Implemented by the client side, called by whoever answers. */
typedef struct ig_response_ops {
    /** The answer's head: goes out with the first body bytes (or at done).
     * *dechunk: body bytes must come without chunk framing. 0 or -errno. */
    int (*start)(ig_request *r, const ig_resp_head *h, int *dechunk);
    /** Body bytes; hold is referenced until written. 0 or -errno (the client left). */
    int (*write)(ig_request *r, const uv_buf_t *bufs, unsigned n, ig_block *hold);
    /** A whole local answer. */
    void (*respond)(ig_request *r, int status, const char *ctype, const char *body, size_t len);
    /** An OpenAI-shaped JSON error that ends the request (extra: "name: value\r\n" lines or NULL). */
    void (*respond_error)(ig_request *r, int status, const char *type, const char *code, const char *msg,
                          const char *extra_headers);
    /** The answer is fully queued. */
    void (*done)(ig_request *r);
    /** Abort an answer that has started (the client sees a cut stream). */
    void (*cut)(ig_request *r);
    /** 1 when so much is queued to the client that the worker should stop being read. */
    int (*wants_pause)(ig_request *r);
    /** The current phase (queue wait, request) times out after secs. */
    void (*set_deadline)(ig_request *r, double secs);
    /** The answer streams and no retry can follow: the request's bytes may go. */
    void (*retire)(ig_request *r);
    /** The client's address: 0 or -errno. */
    int (*peer)(ig_request *r, struct sockaddr_storage *ss);
    /** A streamed body: its first n bytes (of r->body) are sent and may go;
     * r->body shrinks to what is left, more is read. */
    void (*body_consumed)(ig_request *r, size_t n);
} ig_response_ops;

#define IG_STOP_TIMEOUT 1 /* the phase's deadline passed */
#define IG_STOP_CLOSED 2  /* the client left */

/* Implemented by whoever took the request (the proxy, the admin hand-off),
 * called by the client side. Any may be NULL. */
typedef struct ig_handler {
    void (*resume)(ig_request *r);        /* the client drained: read the worker again */
    void (*stop)(ig_request *r, int why); /* IG_STOP_*: abandon what is in flight */
    void (*finish)(ig_request *r);        /* the request is over, however it ended */
    void (*body_more)(ig_request *r);     /* a streamed body: r->body grew, or body_done was set */
} ig_handler;

/* A loop thread's share of the proxy (embedded in its thread). */
typedef struct ig_proxy_ctx {
    uv_loop_t *loop;
    ig_upstream_ctx *up;
    ig_admq *admq;
    ig_thread_stats *stats;
    ig_inbox *replies; /* answers from the control thread come back here */
    ig_policy_state pol;
    ig_prefix_outbox *share;     /* this thread's inserts on their way to other gateways (NULL: not shared) */
    ig_list backoff;             /* requests waiting out a retry backoff */
    ig_freelist pd_legs, pd_ins; /* prefill legs and their bootstrap fields (made on the first) */
    uint64_t pd_rooms;           /* the bootstrap rooms' generator */
    int pd_ready;
    uv_timer_t backoff_timer; /* made on the first backoff */
    int backoff_ready;
} ig_proxy_ctx;

struct ig_request {
    const ig_response_ops *res;
    const ig_handler *h;
    ig_proxy_ctx *px;
    void *handoff; /* the handler's own (an admin message out at the control thread) */
    /* parsed once, by the client side and the routes */
    int method;       /* llhttp's */
    const char *base; /* target, headers and body are slices of base */
    const char *target;
    size_t target_len, path_len;
    const ig_hdr *hdrs;
    int nhdrs;
    /* The body, whole; or, when body_streams, what has arrived and is not
     * sent yet: it grows as the client sends (body_more), and its front
     * goes once sent (body_consumed). */
    ig_span body;
    int64_t body_length; /* as the client framed it; -1: chunked, unknown until its end */
    unsigned body_streams : 1, body_done : 1 /* all of it has arrived */,
        body_gone : 1 /* some of it was sent and dropped: it cannot be sent again */,
        /* the proxy's: a streamed body's pieces on the current exchange */
        body_started : 1, body_writing : 1, body_last_sent : 1;
    size_t body_inflight;               /* bytes at the front of body being written */
    ig_span authorization, routing_key; /* header values (p NULL: no such header) */
    ig_span bearer;                     /* the Authorization bearer token, trimmed (routes) */
    unsigned has_bearer : 1, admin_bearer : 1, via_proxy : 1,
        metrics_only : 1, /* came to --prometheus-port: /metrics alone */
        /* the exchange: the proxy's own */
        in_proxy : 1, probe : 1, keyed : 1, retrying : 1, resent : 1, last_timeout : 1, last_refused : 1,
        last_tls : 1, overloaded : 1, resp_started : 1,
        pd_mode : 1,  /* prefill/decode disaggregated: the exchange is the decode's, pd the prefill's */
        pd_retry : 1; /* the decode's answer is dropped: the pair goes again */
    ig_body_fields fields;
    char rid[80];
    size_t rid_len;
    ig_route route;
    int group;         /* -1: an LLM request, routed by model; else forwarded as it is to this worker group */
    ig_worker *worker; /* holds one unit of worker->inflight while set */
    ig_worker *tried[IG_MAX_TRIES];
    int ntried;
    int requeues; /* times an overloaded worker sent it back */
    ig_upconn *up;
    struct ig_pd *pd;     /* the prefill leg (proxy/ig_pd.h), from a per-thread free list */
    ig_waiter wait;       /* in px->admq while waiting for a worker slot */
    ig_conn_wait cwait;   /* holding a worker slot, waiting for a connection to it */
    ig_list backoff_link; /* in px->backoff while backing_off */
    uint64_t retry_at_ms;
    unsigned backing_off : 1, want_backoff : 1;
    uint64_t start_ns, first_byte_ns, bytes_out;
    int status;
    long weight_version;   /* of the worker that serves it, at dispatch */
    char worker_label[80]; /* the last worker's URL, for the access log */
};
#endif
