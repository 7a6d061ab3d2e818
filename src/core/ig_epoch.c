#include "ig_epoch.h"

#include <stdatomic.h>
#include <stdlib.h>

typedef struct retired {
    struct retired *next;
    void *p;
    void (*free_fn)(void *);
    uint64_t epoch;
} retired;

/* each reader's last quiescent epoch on its own cache line: written by one thread each */
typedef struct reader_slot {
    _Alignas(64) atomic_uint_fast64_t seen;
} reader_slot;

#define OFFLINE UINT64_MAX

static atomic_uint_fast64_t global_epoch = 1;
static reader_slot slots[IG_EPOCH_MAX_READERS];
static int nreaders;
static retired *retired_list; /* writer-owned */

void ig_epoch_init(int readers)
{
    nreaders = readers > IG_EPOCH_MAX_READERS ? IG_EPOCH_MAX_READERS : readers;
    for (int i = 0; i < nreaders; i++)
        atomic_store(&slots[i].seen, atomic_load(&global_epoch));
}

void ig_epoch_quiescent(int reader)
{
    uint64_t e = atomic_load_explicit(&global_epoch, memory_order_acquire);
    atomic_store_explicit(&slots[reader].seen, e, memory_order_release);
}

void ig_epoch_offline(int reader)
{
    atomic_store_explicit(&slots[reader].seen, OFFLINE, memory_order_release);
}

uint64_t ig_epoch_advance(void)
{
    return atomic_fetch_add(&global_epoch, 1) + 1;
}

void ig_epoch_retire(void *p, void (*free_fn)(void *))
{
    retired *r = malloc(sizeof(*r));
    if (!r) {
        /* cannot track it: leaking is safe, freeing early is not */
        return;
    }
    r->p = p;
    r->free_fn = free_fn;
    r->epoch = atomic_load(&global_epoch);
    r->next = retired_list;
    retired_list = r;
}

static uint64_t oldest_seen(void)
{
    uint64_t min = OFFLINE;
    for (int i = 0; i < nreaders; i++) {
        uint64_t s = atomic_load_explicit(&slots[i].seen, memory_order_acquire);
        if (s < min)
            min = s;
    }
    return min;
}

int ig_epoch_reclaim(void)
{
    uint64_t safe = oldest_seen();
    int waiting = 0;
    retired **pp = &retired_list;
    while (*pp) {
        retired *r = *pp;
        /* retired at epoch E (current when retired, before the advance that
         * followed the publish): safe once every reader saw an epoch > E */
        if (safe > r->epoch) {
            *pp = r->next;
            r->free_fn(r->p);
            free(r);
        } else {
            waiting++;
            pp = &r->next;
        }
    }
    return waiting;
}

int ig_epoch_reader_behind(int reader)
{
    return atomic_load_explicit(&slots[reader].seen, memory_order_acquire) <
           atomic_load_explicit(&global_epoch, memory_order_acquire);
}

void ig_epoch_drain(void)
{
    while (retired_list) {
        retired *r = retired_list;
        retired_list = r->next;
        r->free_fn(r->p);
        free(r);
    }
}
