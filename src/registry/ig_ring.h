/* Consistent-hash rings (--policy consistent_hash): built with each
 * registry snapshot, so only a change of membership rebuilds one; the pick
 * over a ring is a policy (balance/ig_affinity.h). Control thread builds and
 * frees; loop threads only read a published ring. */
#ifndef IG_RING_H
#define IG_RING_H
#include <stddef.h>
#include <stdint.h>

struct ig_worker;

/* A ring over one candidate array: points sorted, each naming its worker by
 * index into that array. */
typedef struct ig_ring {
    uint64_t *point;
    uint32_t *idx;
    int n;
} ig_ring;

/** Build the ring over ws (points per worker from its URL, so the same
 * worker lands on the same points in every snapshot). 0 or -ENOMEM. */
int ig_ring_build(ig_ring *r, struct ig_worker *const *ws, int n, int vnodes);
void ig_ring_free(ig_ring *r);
/** Hash a routing key onto the ring's space. */
uint64_t ig_ring_key(const char *key, size_t len);
#endif
