/* SGLang's prefill/decode handshake in the request body (what smg's
 * pd_router and sglang's mini_lb add): the prefill worker's bootstrap host
 * and port and a random 63-bit room, sent alike to the prefill and the
 * decode worker so the decode can fetch the KV cache the prefill made.
 * A batch request (several prompts) gets arrays, one room per prompt.
 * Pure functions: no allocation but the output buffer's. */
#ifndef IG_PD_BODY_H
#define IG_PD_BODY_H
#include <stddef.h>
#include <stdint.h>

#include "../core/ig_buf.h"
#include "ig_body_scan.h"

#define IG_PD_MAX_BATCH 4096

/** Prompts in the request: 0 for a single one (a string, one token list,
 * chat messages), n for a batch (a list of strings or of token lists),
 * -EINVAL when a prompt value is malformed, -E2BIG past IG_PD_MAX_BATCH. */
int ig_pd_batch_size(const ig_body_fields *f);
/** A random bootstrap room (0 .. 2^63-1) from the caller's generator state. */
uint64_t ig_pd_room(uint64_t *state);
/**
 * What ig_pd_inject adds, alone: the fields' text appended to out, and *at
 * the offset in body it goes in at (the closing brace), so the body itself
 * need not be copied. 0, -EINVAL, -ENOMEM.
 */
int ig_pd_fields(ig_buf *out, const char *body, size_t len, const char *host, int port, const uint64_t *rooms,
                 int batch, size_t *at);
/**
 * body (one JSON object) with "bootstrap_host", "bootstrap_port" (port 0:
 * null) and "bootstrap_room" added before its closing brace: scalars when
 * batch is 0, else arrays of batch entries with rooms[0..batch). Appended
 * to out. 0, -EINVAL (not an object), -ENOMEM (out's cap).
 */
int ig_pd_inject(ig_buf *out, const char *body, size_t len, const char *host, int port, const uint64_t *rooms,
                 int batch);

/* return_logprob (SGLang): the prompt's logprobs come from the prefill; the
 * client's answer is the decode's with the prefill's
 * meta_info.input_token_logprobs put before its own, as smg does. */

/** The prefill answer's meta_info.input_token_logprobs, written to out as
 * the array's elements (comma-separated, no brackets). 0, -ENOENT (none),
 * -ENOMEM. */
int ig_pd_prefill_logprobs(ig_buf *out, const char *answer, size_t len);
/** A decode answer (one JSON object, or an SSE event's data) with elems
 * (from ig_pd_prefill_logprobs) before its meta_info.input_token_logprobs,
 * written to out. 0, -ENOENT (nothing to merge: out unchanged), -ENOMEM. */
int ig_pd_merge_logprobs(ig_buf *out, const char *json, size_t len, const char *elems, size_t elen);

/* vLLM's protocol (NIXL, as its toy_proxy_server and vllm-project/router run
 * it): first the prefill with max_tokens 1, no stream and
 * kv_transfer_params {do_remote_decode: true, ...}; then the decode with the
 * client's body and the kv_transfer_params the prefill answered. The fields
 * go in before the closing brace after the client's own: a key given twice
 * takes its last value in vLLM's parser (Python's json), so ours win
 * without the body being rewritten. */

/** The prefill's fields (appended to out) and where they go (*at). 0, -EINVAL, -ENOMEM. */
int ig_pd_vllm_prefill_fields(ig_buf *out, const char *body, size_t len, size_t *at);
/** The decode's: "kv_transfer_params" from the prefill's answer (a JSON
 * object). 0; -ENOENT when the answer has none (the decode then runs the
 * whole request: *at is set, out unchanged); -EINVAL, -ENOMEM. */
int ig_pd_vllm_decode_fields(ig_buf *out, const char *body, size_t len, const char *answer, size_t alen,
                             size_t *at);
#endif
