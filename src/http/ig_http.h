/* HTTP/1.1 message pieces shared by the client and upstream sides: header
 * slices, hop-by-hop filtering (RFC 9110 7.6.1) and head builders. */
#ifndef IG_HTTP_H
#define IG_HTTP_H
#include <stddef.h>
#include <stdint.h>

#include "../core/ig_buf.h"

#define IG_MAX_HEADERS 100 /* per head, like HAProxy's 101; more is 431 (or a broken answer) */

/* A header as offsets into a base buffer: the buffer may move (realloc) while
 * the message is read, offsets stay valid. */
typedef struct ig_hdr {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
} ig_hdr;

/* A response head as any protocol can say it: how a worker's answer frames
 * its body (the client side frames its own), its status and its headers as
 * slices of base (framing and hop-by-hop ones are dropped when copied). */
typedef enum { IG_RB_NONE, IG_RB_LENGTH, IG_RB_CHUNKED, IG_RB_CLOSE } ig_resp_body;

typedef struct ig_resp_head {
    int status;
    const char *reason; /* NULL: the standard phrase */
    size_t reason_len;
    const char *base; /* the worker's headers: slices of base; framing and hop-by-hop ones are dropped */
    const ig_hdr *hdrs;
    int nhdrs;
    ig_resp_body body;
    uint64_t length; /* IG_RB_LENGTH, or the length a HEAD or 304 answer announced */
    int has_length;  /* ... and whether it announced one */
    long weight_version;
} ig_resp_head;

/* Flags for ig_http_copy_headers: which end-to-end headers the caller replaces itself. */
enum {
    IG_COPY_DROP_HOST = 1u << 0,
    IG_COPY_DROP_LENGTH = 1u << 1, /* Content-Length and Transfer-Encoding */
    IG_COPY_DROP_EXPECT = 1u << 2,
    IG_COPY_DROP_REQUEST_ID = 1u << 3,
    IG_COPY_DROP_GATEWAY = 1u << 4,       /* X-Weight-Version: what infergate sets on a response itself */
    IG_COPY_DROP_AUTHORIZATION = 1u << 5, /* the worker has a key of its own */
};

/* What a header name means to a proxy; most names are IG_H_OTHER. */
typedef enum ig_hkind {
    IG_H_OTHER = 0,
    IG_H_HOP, /* hop-by-hop by definition (Keep-Alive, TE, Upgrade, ...) */
    IG_H_CONNECTION,
    IG_H_TRANSFER_ENCODING, /* hop-by-hop too */
    IG_H_HOST,
    IG_H_CONTENT_LENGTH,
    IG_H_EXPECT,
    IG_H_REQUEST_ID,
    IG_H_AUTHORIZATION,
    IG_H_ROUTING_KEY, /* x-session-id, x-user-id, x-smg-routing-key: consistent_hash */
    IG_H_WEIGHT_VERSION,
    IG_H_FORWARDED, /* Forwarded, X-Forwarded-For, X-Real-IP: the request came through another proxy */
} ig_hkind;

/** Classify a header name with at most one string compare (switch on length first). */
ig_hkind ig_http_header_kind(const char *name, size_t len);

/** Case-insensitive compare of a header name slice with a lowercase literal. */
int ig_http_name_is(const char *name, size_t len, const char *lower);

/** 1 when the comma-separated token list value contains token (case-insensitive). */
int ig_http_list_has(const char *value, size_t vlen, const char *token, size_t tlen);

/**
 * Append every header of hdrs[0..n) to out as "Name: value\r\n", leaving out
 * hop-by-hop headers, headers named by a Connection header, and those that
 * flags say the caller writes itself. 0 or a negative errno code.
 */
int ig_http_copy_headers(ig_buf *out, const char *base, const ig_hdr *hdrs, int n, unsigned flags);

/** Canonical reason phrase for a status code ("" when unknown). */
const char *ig_http_reason(int status);

/**
 * Append a complete OpenAI-shaped JSON error response:
 * {"error":{"message":..,"type":..,"code":..}} with status line, x-request-id,
 * Content-Length and Connection handling. extra_headers may be NULL.
 */
int ig_http_error_response(ig_buf *out, int status, const char *type, const char *code, const char *message,
                           const char *request_id, size_t rid_len, int close_conn, const char *extra_headers);

/** Append s as a JSON string literal (with quotes), escaping as needed. */
int ig_json_append_string(ig_buf *out, const char *s, size_t n);
/** 1 when given (len bytes) equals the NUL-terminated secret, in time that
 * does not depend on where they differ; 0 for a NULL or empty secret. */
int ig_http_secret_is(const char *given, size_t len, const char *secret);
/** in[0..n) with %XX decoded (and '+' as a space when plus: a query) into
 * out, which has room for n bytes; returns the length written. */
size_t ig_http_pct_decode(char *out, const char *in, size_t n, int plus);
#endif
