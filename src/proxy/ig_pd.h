/* Prefill/decode disaggregation, SGLang's protocol: the prefill leg of a
 * request. The decode worker takes the request's own exchange (its answer
 * is the client's); the prefill worker gets the same body at the same time
 * on a second exchange, whose answer is read and dropped. Both bodies carry
 * the prefill's bootstrap host and port and a fresh room (api/ig_pd_body),
 * put in on the way out without copying the body.
 *
 * The proxy decides what a failed leg means (ig_proxy_pd_leg_failed); this
 * file runs the leg: its slot on the prefill worker, its connection, its
 * outcome. A leg lives in a per-thread free list while its request is in
 * the proxy and never outlives it (ig_pd_cancel at every end).
 *
 * Threads: a request's loop thread. */
#ifndef IG_PD_H
#define IG_PD_H
#include "../core/ig_buf.h"
#include "../upstream/ig_exchange.h"
#include "ig_request.h"

typedef struct ig_pd {
    ig_request *r;
    ig_worker *worker; /* the prefill worker: holds one in-flight unit while set */
    ig_upconn *up;
    ig_conn_wait cwait;
    unsigned probe : 1, keyed : 1, running : 1 /* holds its slot: sent, or about to be */, sent : 1,
        vllm : 1,    /* vLLM's protocol: the decode goes once the prefill answered */
        collect : 1, /* the prefill's answer is kept (answer) */
        /* return_logprob (SGLang): the decode's answer is held and rewritten */
        merge : 1, decode_done : 1, client_raw : 1 /* the client wants no chunk framing */,
        logprobs_known : 1, /* the prefill ended: elems holds its logprobs, or nothing to merge */
        raw : 1,            /* merge: too much to hold, the rest goes as it is */
        decode_pending : 1; /* SGLang: this attempt's decode goes right after the prefill */
    int status;             /* the prefill's answer (0: none yet) */
    uint64_t start_ns;      /* sent at */
    ig_buf ins;             /* the fields the prefill's body gets (SGLang: the decode's too) ... */
    size_t at;              /* ... at this offset of the body */
    ig_buf dins;            /* vLLM: the decode's (the prefill's kv_transfer_params) */
    ig_buf answer;          /* the prefill's answer, when collect */
    ig_buf held;            /* merge: the decode's answer not written yet */
    ig_buf elems;           /* merge: the prefill's input_token_logprobs, as array elements */
} ig_pd;

/** The pair's bootstrap fields for r's body (prefill w): r->pd is set up
 * and running, w's slot is its own from here (released by the leg's end or
 * ig_pd_cancel, sent or not). 0,
 * -EINVAL (the body is not an object, or a prompt is malformed), -E2BIG
 * (a batch too large), -ENOMEM. On error w's slot is released. */
int ig_pd_prepare(ig_request *r, ig_worker *w, int probe, int vllm); /* takes r->keyed too */
/** vLLM: the decode's fields from the prefill's answer. 0, or -ENOENT: the
 * answer had no kv_transfer_params (the decode gets the body as it is). */
int ig_pd_vllm_decode(ig_request *r);
/** The fields the decode's body gets, or the prefill's (decode 0). */
static inline const ig_buf *ig_pd_ins(const ig_request *r, int decode)
{
    return decode && r->pd->vllm ? &r->pd->dins : &r->pd->ins;
}
/** Send the prefill leg (after ig_pd_prepare). */
void ig_pd_send(ig_request *r);
/** Stop the prefill leg if it runs: its connection closes, its slot goes back. */
void ig_pd_cancel(ig_request *r);
/** The text of the prefill's error answer (its error.message, message or
 * detail, else its first bytes), in buf ("" when there is none). */
const char *ig_pd_error_text(ig_request *r, char *buf, size_t cap);
/* ---- return_logprob (proxy/ig_pd_merge.c) ---- */

/** The decode's answer starts: it is written chunked, from what the merge makes. */
void ig_pd_merge_start(ig_request *r, int client_raw);
/** The decode's body bytes: held until the prefill's logprobs are known. */
void ig_pd_merge_body(ig_request *r, const uv_buf_t *bufs, unsigned n);
/** The prefill ended (its answer in r->pd->answer, or none): the held events go. */
void ig_pd_merge_prefill_over(ig_request *r);
/** Write what can go; final: the decode's answer is whole (the rest goes, and
 * the chunked end). 1 when the whole answer is written. */
int ig_pd_merge_pump(ig_request *r, int final);

/** The thread ends: the free lists go. */
void ig_pd_thread_done(ig_proxy_ctx *px);
/** The request is over: its leg (cancelled if still running) goes back to the free list. */
void ig_pd_release(ig_request *r);
/** 1 while r's prefill leg runs (its bytes of the request may still be read). */
static inline int ig_pd_running(const ig_request *r)
{
    return r->pd && r->pd->running;
}

/* ---- what the leg reports to the proxy (ig_proxy.c) ---- */

/** The leg failed before answering 2xx: status is the prefill's answer, or
 * 0 with err (a libuv code) / why. connect: it never connected. */
void ig_proxy_pd_leg_failed(ig_request *r, ig_worker *w, int status, int err, const char *why, int connect);
/** The leg ended with a 2xx answer. */
void ig_proxy_pd_leg_done(ig_request *r, ig_worker *w);
/** The request as an exchange sends it (decode: the decode's fields, else the prefill's). */
void ig_proxy_fill_exchange(ig_request *r, ig_exchange_req *rq, int decode);
#endif
