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
 * body (one JSON object) with "bootstrap_host", "bootstrap_port" (port 0:
 * null) and "bootstrap_room" added before its closing brace: scalars when
 * batch is 0, else arrays of batch entries with rooms[0..batch). Appended
 * to out. 0, -EINVAL (not an object), -ENOMEM (out's cap).
 */
int ig_pd_inject(ig_buf *out, const char *body, size_t len, const char *host, int port, const uint64_t *rooms,
                 int batch);
#endif
