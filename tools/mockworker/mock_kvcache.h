/* The mock worker's prefix KV cache: an LRU of prompt blocks with a capacity
 * in tokens, so routing for cache hits shows in time to first token. It keys
 * the prompt its own way (the decoded text of the messages or prompt, 128-byte
 * blocks, chained FNV-1a), independently of the gateway's prefix index
 * (raw JSON spans, 256-byte blocks, XXH3): a keying bug in the router shows
 * as misses here instead of agreeing with itself. */
#ifndef MOCK_KVCACHE_H
#define MOCK_KVCACHE_H
#include <stddef.h>
#include <stdint.h>

#define MOCK_BLOCK_BYTES 128
/* a block of prompt is this many tokens (4 bytes a token, roughly) */
#define MOCK_TOKENS_PER_BLOCK (MOCK_BLOCK_BYTES / 4)

/** Capacity in tokens (0: no cache). */
void mock_kv_init(long capacity_tokens);
/** How many leading tokens of the prompt text were cached; then the whole
 * prompt is (least recently used blocks make room). *prompt_tokens: its length. */
long mock_kv_use(const char *text, size_t len, long *prompt_tokens);
#endif
