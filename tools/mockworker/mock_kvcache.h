/* The mock worker's prefix KV cache: an LRU of prompt blocks with a capacity
 * in tokens, so routing for cache hits shows in time to first token. */
#ifndef MOCK_KVCACHE_H
#define MOCK_KVCACHE_H
#include "../../src/balance/ig_prefix.h"

/* a block of prompt is this many tokens (4 bytes a token, roughly) */
#define MOCK_TOKENS_PER_BLOCK (IG_PREFIX_BLOCK / 4)

/** Capacity in tokens (0: no cache). */
void mock_kv_init(long capacity_tokens);
/** How many leading tokens of the prompt were cached; then the whole prompt
 * is (least recently used blocks make room). *prompt_tokens: its length. */
long mock_kv_use(const ig_prefix_query *q, long *prompt_tokens);
#endif
