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
 * records of url_key, n, and n block keys.
 *
 * Loads go with the hints: a gateway sees only its own share of each
 * worker's requests, too few to keep the load bound of cache_aware and
 * consistent_hash steady, so each gateway reports its in-flight counts and
 * adds the others' (ig_worker.remote_inflight). A load report: words
 * IG_LOAD_REPORT_MAGIC, the sender's id, then pairs of url_key, in flight. */
#ifndef IG_PREFIX_SHARE_H
#define IG_PREFIX_SHARE_H
#include <stddef.h>
#include <stdint.h>

#define IG_PREFIX_SHARE_MAGIC 0x31786670476749ull /* "IgGpfx1" */
#define IG_LOAD_REPORT_MAGIC 0x3164616f6c4749ull  /* "IGload1" */
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

/** Loop thread: a request was routed by affinity with nothing to put
 * (consistent_hash): wake the control thread as a put would, so loads go
 * out at the fast pace. */
void ig_prefix_share_touch(ig_prefix_outbox *o);

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

/** A load report of n workers into buf: its bytes, or 0 when it does not fit. */
size_t ig_load_report_encode(uint8_t *buf, size_t cap, uint64_t sender, const uint64_t *url_key,
                             const uint32_t *inflight, int n);
/** A received report's sender and size (0), or -EINVAL when malformed. */
int ig_load_report_parse(const void *msg, size_t len, uint64_t *sender, int *n);
/** Its pair i (i < n from ig_load_report_parse). */
void ig_load_report_pair(const void *msg, int i, uint64_t *url_key, uint32_t *inflight);

/** Inserts lost to a full ring, since start. */
uint64_t ig_prefix_share_dropped(void);
#endif
