/* Admission control: per-worker in-flight caps, a gateway-wide cap, and a
 * queue instead of refusals when every eligible worker is full.
 *
 * Slots are claimed with a compare-and-swap on the worker's in-flight count
 * (no lock). Waiting requests sit in their own loop thread's FIFO; a thread
 * that frees a slot wakes the thread holding the oldest waiter, which claims
 * the slot itself. A 50 ms poll while anything waits covers lost wake-ups. */
#ifndef IG_ADMISSION_H
#define IG_ADMISSION_H
#include "../core/ig_config.h"
#include "../registry/ig_registry.h"

struct ig_thread;
struct ig_client;

void ig_admission_configure(const ig_config *cfg);
/** Claim a slot on w (and a gateway slot): 1 claimed (w's in-flight unit is
 * held), 0 full. */
int ig_admission_claim(ig_worker *w, uint64_t now_ms);
/** 1 when w has room now (a hint; the claim decides). */
int ig_admission_has_room(const ig_worker *w, uint64_t now_ms);
/** w answered 503/429 with inflight requests on it: lower its cap for a while. */
void ig_admission_overloaded(ig_worker *w, uint32_t inflight, uint64_t now_ms);
/** w's cap now: the configured one, lowered by what its overload answers taught (0: none). */
int ig_admission_effective_cap(const ig_worker *w, uint64_t now_ms);
/** The request left w: release its slot and wake a waiter. May free w. */
void ig_admission_release(struct ig_thread *th, ig_worker *w);
/** 1 when requests are waiting anywhere (new ones queue behind them). */
int ig_admission_waiting(void);
/** Queue c (at the front: a request sent back by an overloaded worker keeps
 * its turn); 0, or -ENOSPC when --queue-size is reached. */
int ig_admission_enqueue(struct ig_client *c, int front);
/** Take c out of the queue (dispatched, timed out, or its client left). */
void ig_admission_leave(struct ig_client *c);
/** Try to start queued requests of th, oldest first. */
void ig_admission_dispatch(struct ig_thread *th);
/** Per-thread set-up and tear-down. */
void ig_admission_thread_init(struct ig_thread *th);
void ig_admission_thread_close(struct ig_thread *th);
/** Requests waiting, all threads. */
int ig_admission_depth(void);
#endif
