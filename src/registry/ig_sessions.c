#include "ig_sessions.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../core/ig_epoch.h"
#include "../core/ig_hash.h"

#define TOMB ((ig_session *)1)
#define MIN_SLOTS 16u

typedef struct table {
    uint32_t mask;
    uint32_t used_key, used_id; /* entries plus tombstones in each (writer only) */
    _Atomic(ig_session *) *by_key;
    _Atomic(ig_session *) *by_id;
} table;

static _Atomic(table *) current;
static atomic_int live;
/* Set once, before the first table is published: bearer tokens come from
 * clients, so slot positions must not be predictable. */
static uint64_t seed;

static uint64_t hash(const char *s, size_t n)
{
    return ig_hash_keyed(seed, s, n);
}

static const ig_session *find(_Atomic(ig_session *) *slots, uint32_t mask, uint64_t h, const char *s,
                              size_t len, int by_id)
{
    for (uint32_t i = (uint32_t)h & mask, probes = 0; probes <= mask; i = (i + 1) & mask, probes++) {
        ig_session *e = atomic_load_explicit(&slots[i], memory_order_acquire);
        if (!e)
            return NULL;
        if (e == TOMB)
            continue;
        if (by_id ? (e->id_hash == h && e->id_len == len && memcmp(e->id, s, len) == 0)
                  : (e->key_hash == h && e->key_len == len && memcmp(e->key, s, len) == 0))
            return e;
    }
    return NULL;
}

const ig_session *ig_sessions_by_key(const char *key, size_t len)
{
    table *t = atomic_load_explicit(&current, memory_order_acquire);
    if (!t || atomic_load_explicit(&live, memory_order_relaxed) == 0)
        return NULL;
    return find(t->by_key, t->mask, hash(key, len), key, len, 0);
}

const ig_session *ig_sessions_by_id(const char *id, size_t len)
{
    table *t = atomic_load_explicit(&current, memory_order_acquire);
    if (!t)
        return NULL;
    return find(t->by_id, t->mask, hash(id, len), id, len, 1);
}

int ig_sessions_count(void)
{
    return atomic_load_explicit(&live, memory_order_relaxed);
}

/* ---- writer ---- */

static void session_free(void *p)
{
    ig_session *e = p;
    ig_worker_unref(e->w);
    free(e);
}

static void table_free(void *p)
{
    table *t = p;
    if (!t)
        return;
    free(t->by_key);
    free(t->by_id);
    free(t);
}

static table *table_new(uint32_t slots)
{
    table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->mask = slots - 1;
    t->by_key = calloc(slots, sizeof(*t->by_key));
    t->by_id = calloc(slots, sizeof(*t->by_id));
    if (!t->by_key || !t->by_id) {
        table_free(t);
        return NULL;
    }
    return t;
}

/* the slot holding e in slots (found by pointer) */
static _Atomic(ig_session *) *slot_of(_Atomic(ig_session *) *slots, uint32_t mask, uint64_t h,
                                      const ig_session *e)
{
    for (uint32_t i = (uint32_t)h & mask, probes = 0; probes <= mask; i = (i + 1) & mask, probes++) {
        ig_session *x = atomic_load_explicit(&slots[i], memory_order_relaxed);
        if (x == e)
            return &slots[i];
        if (!x)
            break;
    }
    return NULL;
}

static void place(_Atomic(ig_session *) *slots, uint32_t mask, uint64_t h, ig_session *e, uint32_t *used)
{
    uint32_t i = (uint32_t)h & mask;
    for (;;) {
        ig_session *x = atomic_load_explicit(&slots[i], memory_order_relaxed);
        if (!x || x == TOMB) {
            if (!x)
                (*used)++;
            /* release: a reader that sees the pointer sees the whole entry */
            atomic_store_explicit(&slots[i], e, memory_order_release);
            return;
        }
        i = (i + 1) & mask;
    }
}

static void unlink_entry(table *t, const ig_session *e)
{
    _Atomic(ig_session *) *k = slot_of(t->by_key, t->mask, e->key_hash, e);
    _Atomic(ig_session *) *i = slot_of(t->by_id, t->mask, e->id_hash, e);
    if (k)
        atomic_store_explicit(k, TOMB, memory_order_release);
    if (i)
        atomic_store_explicit(i, TOMB, memory_order_release);
    atomic_fetch_sub_explicit(&live, 1, memory_order_relaxed);
    ig_epoch_retire((void *)e, session_free);
}

/* Room for one more: rebuild into fresh arrays (dropping tombstones) when
 * entries and tombstones would fill half the slots. Readers of the old
 * arrays finish with them before they are freed. */
static int reserve(void)
{
    table *t = atomic_load_explicit(&current, memory_order_relaxed);
    if (t && ((t->used_key > t->used_id ? t->used_key : t->used_id) + 1) * 2 <= t->mask + 1)
        return 0;
    uint32_t want = MIN_SLOTS, n = (uint32_t)atomic_load(&live) + 1;
    while (want < n * 4)
        want *= 2;
    table *nt = table_new(want);
    if (!nt)
        return -ENOMEM;
    if (t) {
        for (uint32_t i = 0; i <= t->mask; i++) {
            ig_session *e = atomic_load_explicit(&t->by_key[i], memory_order_relaxed);
            if (e && e != TOMB) {
                place(nt->by_key, nt->mask, e->key_hash, e, &nt->used_key);
                place(nt->by_id, nt->mask, e->id_hash, e, &nt->used_id);
            }
        }
    }
    atomic_store_explicit(&current, nt, memory_order_release);
    if (t)
        ig_epoch_retire(t, table_free);
    ig_epoch_advance();
    return 0;
}

int ig_sessions_put(const char *key, size_t klen, const char *id, size_t idlen, ig_worker *w, int persistent)
{
    if (!seed) /* readers hash only after they see a table, published after this */
        seed = ig_hash_seed();
    ig_session *e = malloc(sizeof(*e) + klen + idlen + 2);
    if (!e)
        return -ENOMEM;
    char *k = (char *)(e + 1), *d = k + klen + 1;
    memcpy(k, key, klen);
    k[klen] = '\0';
    memcpy(d, id, idlen);
    d[idlen] = '\0';
    *e = (ig_session){.w = w,
                      .key_hash = hash(key, klen),
                      .id_hash = hash(id, idlen),
                      .key_len = (uint32_t)klen,
                      .id_len = (uint32_t)idlen,
                      .persistent = persistent,
                      .key = k,
                      .id = d};
    /* drop what it replaces first, so neither index ever holds two matches */
    const ig_session *old;
    table *t = atomic_load_explicit(&current, memory_order_relaxed);
    if (t && (old = find(t->by_key, t->mask, e->key_hash, key, klen, 0)))
        unlink_entry(t, old);
    if (t && (old = find(t->by_id, t->mask, e->id_hash, id, idlen, 1)))
        unlink_entry(t, old);
    if (reserve()) {
        free(e);
        return -ENOMEM;
    }
    ig_worker_ref(w);
    t = atomic_load_explicit(&current, memory_order_relaxed);
    place(t->by_id, t->mask, e->id_hash, e, &t->used_id);
    place(t->by_key, t->mask, e->key_hash, e, &t->used_key);
    atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
    return 0;
}

int ig_sessions_remove_id(const char *id, size_t len)
{
    table *t = atomic_load_explicit(&current, memory_order_relaxed);
    const ig_session *e = t ? find(t->by_id, t->mask, hash(id, len), id, len, 1) : NULL;
    if (!e)
        return 0;
    unlink_entry(t, e);
    ig_epoch_advance();
    return 1;
}

int ig_sessions_keep_only(int (*keep)(const ig_session *s, void *arg), void *arg)
{
    table *t = atomic_load_explicit(&current, memory_order_relaxed);
    int n = 0;
    if (!t)
        return 0;
    for (uint32_t i = 0; i <= t->mask; i++) {
        ig_session *e = atomic_load_explicit(&t->by_key[i], memory_order_relaxed);
        if (e && e != TOMB && !keep(e, arg)) {
            unlink_entry(t, e);
            n++;
        }
    }
    if (n)
        ig_epoch_advance();
    return n;
}

static int not_on(const ig_session *s, void *w)
{
    return s->w != w;
}

int ig_sessions_revoke_worker(const ig_worker *w)
{
    return ig_sessions_keep_only(not_on, (void *)w);
}

void ig_sessions_shutdown(void)
{
    table *t = atomic_exchange(&current, NULL);
    if (!t)
        return;
    for (uint32_t i = 0; i <= t->mask; i++) {
        ig_session *e = atomic_load_explicit(&t->by_key[i], memory_order_relaxed);
        if (e && e != TOMB)
            session_free(e);
    }
    atomic_store(&live, 0);
    table_free(t);
}
