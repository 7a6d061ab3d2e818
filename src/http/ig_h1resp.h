/* The worker side of HTTP/1.1: a strict, incremental response parser
 * (RFC 9112). Whatever a client's parser might frame differently from us is
 * refused, so the answer a client receives is always framed by what we
 * parsed, never by what the worker claimed. Pure: no I/O, no allocation, the
 * caller owns every buffer; one ig_h1resp per response, one thread. */
#ifndef IG_H1RESP_H
#define IG_H1RESP_H
#include <stddef.h>
#include <stdint.h>

#include "ig_http.h"

/* How the body of a response ends (RFC 9112 §6.3). */
typedef enum ig_h1r_body {
    IG_H1R_NONE = 0, /* HEAD, 1xx, 204, 304, or Content-Length: 0 */
    IG_H1R_LENGTH,   /* Content-Length bytes */
    IG_H1R_CHUNKED,  /* Transfer-Encoding: chunked */
    IG_H1R_CLOSE,    /* neither: the worker's close ends it */
} ig_h1r_body;

/* A run of bytes to forward, inside the caller's input. */
typedef struct ig_h1span {
    const char *p;
    size_t n;
} ig_h1span;

#define IG_H1R_MAX_LINE 4096          /* a chunk-size line, extensions included */
#define IG_H1R_MAX_TRAILER (64 << 10) /* the whole trailer section */

typedef struct ig_h1resp {
    /* the head, once ig_h1resp_head accepted it */
    int status;
    unsigned http10 : 1,
        keep_alive : 1, /* HTTP/1.1 and no "Connection: close": the connection may serve another */
        suspect : 1,    /* a length or coding on a bodiless answer (204 + Content-Length): the worker
                         * frames differently from us, so its connection must not be reused */
        has_length : 1; /* a Content-Length was given (HEAD and 304 pass it on) */
    ig_h1r_body body;
    uint64_t length; /* the Content-Length */
    uint32_t reason_off, reason_len;
    /* scanner state (private) */
    unsigned scan;    /* ig_h1resp_head_scan's progress towards the empty line */
    int st;           /* body state */
    uint64_t left;    /* bytes of the body or of the current chunk still to come */
    uint32_t line;    /* bytes of the current chunk-size line */
    uint32_t trailer; /* bytes of trailer fields so far */
} ig_h1resp;

/** Start a new response (also after a 1xx). */
void ig_h1resp_init(ig_h1resp *r);

/**
 * Look for the end of the head in the next n bytes of the response: the
 * number of bytes up to and including the empty line, or 0 when it is not
 * in them (the progress is kept in r, so a head may arrive a byte at a time).
 * Bare LF line ends count as an end too, so that ig_h1resp_head refuses them
 * instead of waiting for more.
 */
size_t ig_h1resp_head_scan(ig_h1resp *r, const char *p, size_t n);

/**
 * Parse a whole head buf[0..len) (through the empty line) of a response to
 * a request that was HEAD when head_request is set. Accepted:
 * `HTTP/1.0|1.1 SP 3DIGIT [SP reason] CRLF`, status 100 to 599 except 101
 * (infergate never asks to switch protocols), a reason without control bytes,
 * field lines `token ":" value` with CRLF ends only (no bare CR or LF, no
 * obsolete folding), at most one Content-Length (digits only), at most one
 * Transfer-Encoding and only `chunked` (never in HTTP/1.0), not both.
 * Fills hdrs[0..*nhdrs) with offsets into buf and decides r->body.
 * Returns 0, -E2BIG past max fields, or -EINVAL; *why is a static reason.
 */
int ig_h1resp_head(ig_h1resp *r, const char *buf, size_t len, int head_request, ig_hdr *hdrs, int max,
                   int *nhdrs, const char **why);

/**
 * Consume body bytes p[0..n). The bytes to forward go to out[0..*nout)
 * (at most max runs, adjacent bytes merged): with dechunk only the chunks'
 * data, otherwise the body as it came, chunk framing included, less any
 * trailer fields (dropped, RFC 9112 §7.1.2: the client still gets a
 * well-framed `0 CRLF CRLF`; so max >= 2 is enough there). *used is how much was consumed: less than n
 * when out filled up (call again) or when the message ended.
 * Returns 1 when the message ended at p + *used, 0 when it needs more,
 * -EINVAL (with *why) on broken chunk framing.
 */
int ig_h1resp_body(ig_h1resp *r, const char *p, size_t n, int dechunk, ig_h1span *out, int max, int *nout,
                   size_t *used, const char **why);

/** The worker closed the connection: 1 when that ends the message (a
 * close-delimited body, or a message already complete), 0 when it cut it. */
int ig_h1resp_eof(const ig_h1resp *r);

/** 1 once the message is complete. */
int ig_h1resp_done(const ig_h1resp *r);
#endif
