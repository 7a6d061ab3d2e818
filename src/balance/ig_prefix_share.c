/* The shared prefix index's rings and messages (ig_prefix_share.h). */
#include "ig_prefix_share.h"

#include <endian.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ig_prefix.h"

struct ig_prefix_outbox {
    uint64_t *word;
    size_t mask;
    _Alignas(64) atomic_size_t head; /* the loop thread's: words written */
    atomic_uint_fast64_t dropped;    /* the loop thread's; summed by readers */
    _Alignas(64) atomic_size_t tail; /* the control thread's: words taken */
    _Alignas(64) atomic_int signalled;
};

static ig_prefix_outbox *boxes;
static int nboxes, next_box;
static void (*wake_fn)(void *arg);
static void *wake_arg;

int ig_prefix_share_init(int nthreads, size_t ring_words, void (*wake)(void *arg), void *arg)
{
    if (nthreads <= 0 || !ring_words || (ring_words & (ring_words - 1)) ||
        ring_words < IG_PREFIX_MAX_BLOCKS + 2)
        return -EINVAL;
    boxes = aligned_alloc(64, (size_t)nthreads * sizeof(*boxes));
    if (!boxes)
        return -ENOMEM;
    memset(boxes, 0, (size_t)nthreads * sizeof(*boxes));
    nboxes = nthreads;
    for (int t = 0; t < nthreads; t++) {
        boxes[t].mask = ring_words - 1;
        if (!(boxes[t].word = malloc(ring_words * sizeof(uint64_t)))) {
            ig_prefix_share_free();
            return -ENOMEM;
        }
    }
    wake_fn = wake;
    wake_arg = arg;
    return 0;
}

void ig_prefix_share_free(void)
{
    for (int t = 0; t < nboxes; t++)
        free(boxes[t].word);
    free(boxes);
    boxes = NULL;
    nboxes = next_box = 0;
}

ig_prefix_outbox *ig_prefix_share_outbox(int thread)
{
    return thread >= 0 && thread < nboxes ? &boxes[thread] : NULL;
}

void ig_prefix_share_put(ig_prefix_outbox *o, uint64_t url_key, const uint64_t *key, int n)
{
    if (n <= 0)
        return;
    size_t head = atomic_load_explicit(&o->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&o->tail, memory_order_acquire);
    size_t need = 2 + (size_t)n;
    if (need > o->mask + 1 - (head - tail)) {
        atomic_store_explicit(&o->dropped, atomic_load_explicit(&o->dropped, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        return;
    }
    o->word[head & o->mask] = url_key;
    o->word[(head + 1) & o->mask] = (uint64_t)n;
    for (int i = 0; i < n; i++)
        o->word[(head + 2 + (size_t)i) & o->mask] = key[i];
    atomic_store_explicit(&o->head, head + need, memory_order_release);
    ig_prefix_share_touch(o);
}

void ig_prefix_share_touch(ig_prefix_outbox *o)
{
    /* one wake-up per batch, not per request: the control thread clears it when it starts taking */
    if (wake_fn && !atomic_load_explicit(&o->signalled, memory_order_relaxed) &&
        !atomic_exchange_explicit(&o->signalled, 1, memory_order_acq_rel))
        wake_fn(wake_arg);
}

void ig_prefix_share_take_start(void)
{
    for (int t = 0; t < nboxes; t++)
        atomic_store_explicit(&boxes[t].signalled, 0, memory_order_seq_cst);
}

static void put_word(uint8_t *buf, size_t at, uint64_t v)
{
    v = htole64(v);
    memcpy(buf + at * 8, &v, 8);
}

static uint64_t get_word(const uint8_t *buf, size_t at)
{
    uint64_t v;
    memcpy(&v, buf + at * 8, 8);
    return le64toh(v);
}

size_t ig_prefix_share_take(uint8_t *buf, size_t cap)
{
    size_t words = cap / 8, used = 1;
    if (words < IG_PREFIX_MAX_BLOCKS + 3)
        return 0;
    /* rings in turn, starting where the last message stopped, so no thread starves the others */
    for (int k = 0; k < nboxes; k++) {
        ig_prefix_outbox *o = &boxes[(next_box + k) % nboxes];
        size_t tail = atomic_load_explicit(&o->tail, memory_order_relaxed);
        size_t head = atomic_load_explicit(&o->head, memory_order_acquire);
        while (tail != head) {
            size_t rec = 2 + (size_t)o->word[(tail + 1) & o->mask];
            if (used + rec > words) {
                atomic_store_explicit(&o->tail, tail, memory_order_release);
                next_box = (next_box + k) % nboxes;
                goto full;
            }
            for (size_t i = 0; i < rec; i++)
                put_word(buf, used + i, o->word[(tail + i) & o->mask]);
            used += rec;
            tail += rec;
        }
        atomic_store_explicit(&o->tail, tail, memory_order_release);
    }
    next_box = nboxes ? (next_box + 1) % nboxes : 0;
full:
    if (used == 1)
        return 0;
    put_word(buf, 0, IG_PREFIX_SHARE_MAGIC);
    return used * 8;
}

int ig_prefix_share_apply(const void *msg, size_t len, uint64_t (*resolve)(uint64_t url_key, void *arg),
                          void *arg, uint32_t now)
{
    static uint64_t key[IG_PREFIX_MAX_BLOCKS]; /* the control thread's */
    const uint8_t *b = msg;
    size_t words = len / 8, at = 1;
    int applied = 0;
    if (len % 8 || words < 1 || get_word(b, 0) != IG_PREFIX_SHARE_MAGIC)
        return -EINVAL;
    while (at < words) {
        if (words - at < 2)
            return -EINVAL;
        uint64_t url_key = get_word(b, at), n = get_word(b, at + 1);
        if (n == 0 || n > IG_PREFIX_MAX_BLOCKS || n > words - at - 2)
            return -EINVAL;
        uint64_t id = resolve(url_key, arg);
        if (id) {
            for (uint64_t i = 0; i < n; i++)
                key[i] = get_word(b, at + 2 + i);
            ig_prefix_insert_keys(key, (int)n, id, now);
            applied++;
        }
        at += 2 + n;
    }
    return applied;
}

size_t ig_load_report_encode(uint8_t *buf, size_t cap, uint64_t sender, const uint64_t *url_key,
                             const uint32_t *inflight, int n)
{
    if (n < 0 || (size_t)n > (cap / 8 - 2) / 2 || cap < 16)
        return 0;
    put_word(buf, 0, IG_LOAD_REPORT_MAGIC);
    put_word(buf, 1, sender);
    for (int i = 0; i < n; i++) {
        put_word(buf, 2 + 2 * (size_t)i, url_key[i]);
        put_word(buf, 3 + 2 * (size_t)i, inflight[i]);
    }
    return 8 * (2 + 2 * (size_t)n);
}

int ig_load_report_parse(const void *msg, size_t len, uint64_t *sender, int *n)
{
    if (len % 16 || len < 16 || len > (size_t)INT32_MAX || get_word(msg, 0) != IG_LOAD_REPORT_MAGIC)
        return -EINVAL;
    *sender = get_word(msg, 1);
    *n = (int)((len / 8 - 2) / 2);
    return 0;
}

void ig_load_report_pair(const void *msg, int i, uint64_t *url_key, uint32_t *inflight)
{
    *url_key = get_word(msg, 2 + 2 * (size_t)i);
    uint64_t v = get_word(msg, 3 + 2 * (size_t)i);
    *inflight = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

uint64_t ig_prefix_share_dropped(void)
{
    uint64_t sum = 0;
    for (int t = 0; t < nboxes; t++)
        sum += atomic_load_explicit(&boxes[t].dropped, memory_order_relaxed);
    return sum;
}
