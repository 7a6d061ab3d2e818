/* The client side of HTTP/1.1: requests read from a connection's buffer
 * with llhttp, checked byte for byte on top (ig_framing.h), recorded as
 * slices by offset and de-chunked in place. Pure: no I/O, no allocation;
 * the owner hands in the buffer and two hooks, one ig_h1req per connection,
 * one thread. So the fuzzers run exactly what the gateway runs. */
#ifndef IG_H1REQ_H
#define IG_H1REQ_H
#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/ig_buf.h"
#include "ig_http.h"

/* What every request of one kind of connection shares: the owner's hooks
 * and the limits (one copy, not one per connection). */
typedef struct ig_h1req_ops {
    size_t max_header_size;    /* a larger head is refused (431) */
    uint64_t max_payload_size; /* a larger body, in data bytes, is refused (413) */
    /** A request's first byte: a header table for it (IG_MAX_HEADERS
     * entries), or NULL to refuse it (503, out of memory). */
    ig_hdr *(*begin)(void *owner);
    /** The head is whole and accepted (the owner switches timers, answers
     * `Expect: 100-continue`). 1: its body streams (ig_h1req_parse returns
     * IG_H1REQ_HEAD now, then the body as it arrives); 0: read it whole. */
    int (*head)(void *owner);
} ig_h1req_ops;

typedef struct ig_h1req {
    llhttp_t parser;
    const ig_h1req_ops *ops;
    void *owner;
    ig_buf *buf;              /* the buffer being parsed, during ig_h1req_parse */
    size_t parsed, msg_start; /* offsets in buf: parsed up to here; this request starts here */
    /* the request being read: slices of buf by offset */
    uint32_t url_off, url_len;
    ig_hdr *hdrs; /* from ops->begin while a request is read and sent */
    int nhdrs;
    /* indexes into hdrs, found in one pass at the end of the head; -1 when absent */
    short h_expect, h_request_id, h_authorization, h_routing_key;
    size_t body_off, body_len;
    uint64_t body_total;  /* data bytes of this request so far (a streamed body's are consumed) */
    size_t body_hint;     /* Content-Length still to arrive: the owner grows buf once for it */
    size_t chunk_raw_end; /* chunked: where the framing after the last data byte starts */
    int chunks_seen;      /* chunked: data pieces so far (0: the next gap is the first) */
    int chunk_new;        /* chunked: a chunk header was parsed since the last data */
    int err_status;       /* why a request was refused: status and static message */
    const char *err_msg;
    unsigned head_done : 1, in_value : 1, in_message : 1, chunked : 1, keep_alive : 1, http10 : 1,
        via_proxy : 1, /* Forwarded / X-Forwarded-For / X-Real-IP: the peer is a proxy */
        streams : 1;   /* the owner takes this body in pieces (ops->head said so) */
} ig_h1req;

enum { IG_H1REQ_MORE = 0, IG_H1REQ_MESSAGE = 1, IG_H1REQ_HEAD = 2, IG_H1REQ_ERROR = -1 };

void ig_h1req_init(ig_h1req *r, const ig_h1req_ops *ops, void *owner);

/**
 * Parse buf from r->parsed on. IG_H1REQ_MESSAGE: a whole request, its slices
 * set, r->parsed just past it (a pipelined one may follow); IG_H1REQ_MORE:
 * everything was consumed, the request (if one began) needs more bytes;
 * IG_H1REQ_HEAD: a head whose body streams (ops->head returned 1); its
 * body's data then collects at body_off as later parses read it, MORE until
 * the request ends with MESSAGE; IG_H1REQ_ERROR: refused, with
 * r->err_status (400, 413, 417, 431, 503) and r->err_msg (static, or this
 * thread's buffer until its next parse).
 * Chunked framing consumed so far is moved out of buf as it goes, so only
 * data counts against the buffer's cap.
 */
int ig_h1req_parse(ig_h1req *r, ig_buf *buf);

/** A streamed body: its first n data bytes were handed on and leave buf
 * (everything after them moves down; nothing of buf may be in use). */
void ig_h1req_consume_body(ig_h1req *r, ig_buf *buf, size_t n);
/** The request's method (llhttp_method_t), valid once its request line is read. */
int ig_h1req_method(const ig_h1req *r);
/** Forget the header index (the table was given back). */
void ig_h1req_forget_headers(ig_h1req *r);
/** The `code` of an OpenAI-shaped error for a refusal status. */
const char *ig_h1req_error_code(int status);
#endif
