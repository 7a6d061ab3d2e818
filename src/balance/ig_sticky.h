/* sgl-model-gateway's manual policy: a routing key (X-SMG-Routing-Key) keeps
 * the worker it was first given while that worker lives; if it does not,
 * the key gets another and goes back to the first when it returns (two
 * candidates, as smg keeps).
 *
 * A fixed-size open-addressing table of worker ids that any loop thread
 * may insert into with one compare-and-swap, so requests with a new key on
 * two threads at once agree on its worker: the second finds the first's
 * entry. No lock; lookups write nothing but an entry's last-use time (at
 * most once a second). Only the control thread removes (idle keys, by
 * tombstones) and rebuilds (when tombstones pile up), freeing through
 * ig_epoch. A full table routes new keys without remembering them.
 *
 * Threads: get/insert/reassign any loop thread; sweep, init, shutdown the
 * control thread (init and shutdown before and after the loops run). */
#ifndef IG_STICKY_H
#define IG_STICKY_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ig_sticky_entry {
    uint64_t hash;
    _Atomic uint64_t cand[2]; /* worker ids, cand[0] first; 0: none */
    _Atomic uint64_t used_ms; /* last request with this key (loop time) */
    size_t len;
    char key[];
} ig_sticky_entry;

/** Room for max_keys keys (at most 3/4 of the slots fill). 0 or -ENOMEM. */
int ig_sticky_init(size_t max_keys);
/** 1 once initialised (the manual policy or --routing-key-override is on). */
int ig_sticky_enabled(void);
/** The entry for key (its used time refreshed), or NULL. Valid until the
 * current callback returns. */
ig_sticky_entry *ig_sticky_get(const char *key, size_t len, uint64_t now_ms);
/** Remember key -> worker id; the entry that holds key afterwards: ours, or
 * the one another thread inserted first (use its worker). NULL: full. */
ig_sticky_entry *ig_sticky_insert(const char *key, size_t len, uint64_t id, uint64_t now_ms);
/** No candidate of e lives: id becomes its newest candidate (the oldest of
 * two is dropped). */
void ig_sticky_reassign(ig_sticky_entry *e, uint64_t id);
/** Forget keys unused for max_idle_ms (0: never); rebuild when tombstones
 * would slow lookups. Control thread. Returns how many were forgotten. */
int ig_sticky_sweep(uint64_t now_ms, uint64_t max_idle_ms);
/** Keys remembered now. */
int ig_sticky_count(void);
/** New keys that found the table full (routed without being remembered). */
uint64_t ig_sticky_full_total(void);
/** Free everything (at exit, after the loop threads are gone). */
void ig_sticky_shutdown(void);
#endif
