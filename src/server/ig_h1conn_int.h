/* What the two halves of an HTTP/1 client connection share:
 * ig_h1conn.c reads (parse, budget, timers, keep-alive, linger) and
 * ig_h1write.c answers (writes with backpressure, heads, local answers,
 * errors, the response ops). server/ only. */
#ifndef IG_H1CONN_INT_H
#define IG_H1CONN_INT_H
#include "../http/ig_h1req.h"
#include "../net/ig_net.h"
#include "ig_h1conn.h"

typedef enum { IG_C_READING, IG_C_DISPATCHED, IG_C_FLUSHING } ig_conn_state;

typedef struct ig_h1conn {
    ig_net net;           /* the socket, maybe TLS (first: libuv's handle is the connection's) */
    uv_timer_t timer;     /* idle timeout between requests, request timeout during one */
    uint64_t deadline_ms; /* loop time the current phase times out (IG_NO_DEADLINE: none) */
    uv_shutdown_t shutdown_req;
    ig_thread *th;
    ig_list link;
    size_t lingered; /* bytes discarded after an error answered before the request ended */
    ig_conn_state state;
    int handles_open;
    int pending_writes;
    unsigned closing : 1, read_paused : 1, in_parse : 1, close_after : 1, dechunk : 1, have_rid : 1,
        lingering : 1, retired : 1, /* the request's memory is given back (its response streams) */
        budget_wait : 1,            /* in th->budget_waiters: its body needs room the budget lacks */
        starved : 1,                /* ... and has not got it since: a deadline now is the gateway's fault */
        head_pending : 1,           /* the response head is in obuf, to go with the first body bytes */
        reparse : 1;                /* a streamed body: more to parse than the parse under way saw */
    /* the request being read: parsed in place in rbuf, slices by offset */
    ig_buf rbuf;
    size_t body_held; /* bytes of rbuf charged to the gateway's body budget */
    ig_h1req rq;
    ig_buf obuf;  /* response head or a local response */
    char *logtag; /* path then model, once the request is retired (access log) */
    /* what the handlers see; its waiter's link is in th->budget_waiters while the body waits for
     * room (a body still arriving is not dispatched, so it cannot be queued for a worker too) */
    ig_request req;
} ig_h1conn;

extern const ig_response_ops ig_h1c_ops;

static inline ig_h1conn *conn_of(ig_request *r)
{
    return ig_container_of(r, ig_h1conn, req);
}

/* ig_h1conn.c */
void ig_h1c_close(ig_h1conn *c);
/** The answer is queued: flush, then the next request or a close. */
void ig_h1c_request_done(ig_h1conn *c);
void ig_h1c_next_request(ig_h1conn *c);
void ig_h1c_make_request_id(ig_h1conn *c);
/** The response streams: give the request's memory back (no retry can follow). */
void ig_h1c_retire(ig_h1conn *c);
/** The current phase times out after secs (lazy: see ig_h1conn.c). */
void ig_h1c_arm_timer(ig_h1conn *c, double secs);
/** A streamed body: its first n bytes were sent (the response op body_consumed). */
void ig_h1c_body_consumed(ig_h1conn *c, size_t n);

/* ig_h1write.c */
/** Queue bytes to the client; hold is referenced until written. 0 or -errno (then closed). */
int ig_h1c_write(ig_h1conn *c, const uv_buf_t *bufs, unsigned n, ig_block *hold);
/** 1 when so much is queued that the worker should stop being read. */
int ig_h1c_wants_pause(ig_h1conn *c);
/** An OpenAI-shaped JSON error that ends the request. */
void ig_h1c_error(ig_h1conn *c, int status, const char *type, const char *code, const char *msg);
void ig_h1c_error_headers(ig_h1conn *c, int status, const char *type, const char *code, const char *msg,
                          const char *extra_headers);
#endif
