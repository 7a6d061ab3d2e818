/* The prefix index shared between gateways (--nats-servers): what this
 * gateway's loop threads insert goes out to the other gateways, and what
 * they insert comes in, so a conversation's next turn finds its worker
 * whichever gateway it reaches.
 *
 * Each loop thread writes its inserts into its own single-producer ring (no
 * lock, no allocation; a full ring drops the insert: one lost hint,
 * counted); the control thread drains the rings into messages and applies
 * the messages other gateways sent. Workers are named by url_key (a hash of
 * the normalised URL), since worker ids are each gateway's own; block keys
 * are the same everywhere (ig_prefix_hash is pure).
 *
 * A message: little-endian 64-bit words, IG_PREFIX_SHARE_MAGIC first, then
 * records of url_key, n, and n block keys. */
#ifndef IG_PREFIX_SHARE_H
#define IG_PREFIX_SHARE_H
#include <stddef.h>
#include <stdint.h>

#define IG_PREFIX_SHARE_MAGIC 0x31786670476749ull /* "IgGpfx1" */
#define IG_PREFIX_SHARE_RING_WORDS (1u << 16)     /* per loop thread: 512 KiB, ~30 longest prompts' blocks */

typedef struct ig_prefix_outbox ig_prefix_outbox;

/** One ring of ring_words 64-bit words (a power of two) per loop thread;
 * wake(arg) is called, from a loop thread, when a ring gets its first
 * record since the last ig_prefix_share_take_start. 0 or -ENOMEM. */
int ig_prefix_share_init(int nthreads, size_t ring_words, void (*wake)(void *arg), void *arg);
/** After the last loop thread and the control thread are done with it. */
void ig_prefix_share_free(void);
/** Thread t's ring; NULL when sharing is off. */
ig_prefix_outbox *ig_prefix_share_outbox(int thread);

/** Loop thread: the worker named url_key holds these block keys now. */
void ig_prefix_share_put(ig_prefix_outbox *o, uint64_t url_key, const uint64_t *key, int n);

/** Control thread, before a round of takes: the next put wakes again. */
void ig_prefix_share_take_start(void);
/** Control thread: whole records from the rings into buf as one message
 * (cap bytes at least 8 * (IG_PREFIX_MAX_BLOCKS + 3)). The message's bytes,
 * 0 when there is nothing; call again until 0. */
size_t ig_prefix_share_take(uint8_t *buf, size_t cap);

/** Control thread: insert a received message's records into the index;
 * resolve(url_key, arg) gives the local worker id (0: not a worker here,
 * skipped). Records applied, or -EINVAL for a malformed message (records
 * before the fault are applied). */
int ig_prefix_share_apply(const void *msg, size_t len, uint64_t (*resolve)(uint64_t url_key, void *arg),
                          void *arg, uint32_t now);

/** Inserts lost to a full ring, since start. */
uint64_t ig_prefix_share_dropped(void);
#endif
