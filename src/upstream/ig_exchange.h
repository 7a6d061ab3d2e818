/* The seam between the proxy and an upstream client (today HTTP/1.1,
 * ig_h1client; later HTTP/2 or gRPC behind the same callbacks): what the
 * owner hands over and how the client reports. Nothing here names a wire
 * protocol. h2o's httpclient callbacks are the model: the request is asked
 * for once the connection is up, then head, body runs, the end or an error.
 * Callbacks run on the connection's loop thread. */
#ifndef IG_EXCHANGE_H
#define IG_EXCHANGE_H
#include <stddef.h>
#include <uv.h>

#include "../core/ig_block.h"
#include "../http/ig_http.h"
#include "ig_pool.h"

/* What to send, asked for once the connection is up (a head is built only
 * then, so a thousand connects under way hold no heads). The body is the
 * owner's and stays valid until the exchange reports its end or is
 * cancelled (libuv may still be writing it). */
typedef struct ig_exchange_req {
    int method; /* llhttp's */
    const char *target;
    size_t target_len;
    const char *base; /* the client's headers: slices of base, copied minus hop-by-hop */
    const ig_hdr *hdrs;
    int nhdrs;
    const char *rid;
    size_t rid_len;
    const char *body;
    size_t body_len;
    /* a whole body may have bytes put in it, sent without a copy: body[0,
     * ins_at), then ins, then body[ins_at, body_len) (ins_len 0: none) */
    const char *ins;
    size_t ins_len, ins_at;
    /* streams: body is the first piece, more follow with ig_exchange_send_body
     * and each is reported written by on_sent; length is the whole body's
     * (-1: unknown, sent chunked); last: this piece ends it */
    int64_t length;
    unsigned streams : 1, last : 1;
} ig_exchange_req;

/* on_head's answers */
#define IG_X_FORWARD 0
#define IG_X_DISCARD 1 /* read the body to its end and drop it (on_done follows) */

/* on_error's what */
#define IG_X_CONNECT 1u         /* the connection never came up: nothing was sent */
#define IG_X_TIMEDOUT 2u        /* ... because the connect timed out */
#define IG_X_REFUSED 4u         /* ... because it was refused */
#define IG_X_GOT_BYTES 8u       /* some of the answer arrived */
#define IG_X_REUSED 16u         /* the connection came from the pool */
#define IG_X_SENT_ANY 32u       /* some of the request went out */
#define IG_X_HEAD_TOO_LARGE 64u /* the request head would not fit: nothing was sent */
#define IG_X_TLS 128u           /* with IG_X_CONNECT: the TLS handshake failed (why says how) */

typedef struct ig_exchange_cb {
    /** The connection is up: fill in the request to send. */
    void (*on_ready)(void *owner, ig_exchange_req *req);
    /** The final head (informational ones are dropped here). IG_X_FORWARD
     * (*dechunk: give body data without chunk framing), IG_X_DISCARD, or
     * negative to fail the exchange (*why). */
    int (*on_head)(void *owner, const ig_resp_head *h, int *dechunk, const char **why);
    /** Body bytes, spans of blk (referenced by the owner if it keeps them).
     * read_end: the last call for this read, and the answer goes on (n may
     * be 0): the moment to decide on backpressure. */
    void (*on_body)(void *owner, const uv_buf_t *bufs, unsigned n, ig_block *blk, int read_end);
    /** The answer is whole; the connection is the owner's to release. */
    void (*on_done)(void *owner, int reusable);
    /** The exchange broke; the connection is closed already. err: a libuv
     * code, or 0 with why (a malformed answer). what: IG_X_* */
    void (*on_error)(void *owner, int err, const char *why, unsigned what);
    /** A streamed body: the head and the piece last handed over are written
     * (their bytes are the owner's again); the next piece may go. */
    void (*on_sent)(void *owner);
} ig_exchange_cb;

/** Run an exchange on up (taken from the pool: on_ready runs now; or
 * connecting: once it is up). 0, or -E2BIG when the request head is too
 * large (no further callback runs; up is unchanged and the owner's to
 * release; after a connect the same comes as on_error with
 * IG_X_HEAD_TOO_LARGE). A write that fails at once is reported through
 * on_error before this returns. */
int ig_exchange_start(ig_upconn *up, const ig_exchange_cb *cb, void *owner);
/** A streamed body's next piece (after on_sent, never two at once); last
 * ends the body. 0: on_sent follows; 1: nothing needed writing (no
 * on_sent); negative: the exchange failed (on_error has run). */
int ig_exchange_send_body(ig_upconn *up, const char *p, size_t n, int last);
/** A new connection to w, the exchange to start on it with ig_exchange_start.
 * NULL when it cannot even start. */
ig_upconn *ig_exchange_connect(ig_upstream_ctx *ctx, ig_worker *w);
/** Abandon the exchange: no callback runs after this; closing is how the
 * worker learns it can stop generating. */
void ig_exchange_cancel(ig_upconn *up);
/** Stop and restart reading the answer (the client is slow). */
void ig_exchange_pause(ig_upconn *up);
void ig_exchange_resume(ig_upconn *up);
/** 1 while some of the request is still being written (its bytes are in use). */
int ig_exchange_writing(const ig_upconn *up);
#endif
