#include "ig_ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "ig_registry.h"

uint64_t ig_ring_key(const char *key, size_t len)
{
    return XXH3_64bits_withSeed(key, len, 0x6a09e667f3bcc909ull);
}

void ig_ring_free(ig_ring *r)
{
    free(r->point);
    free(r->idx);
    memset(r, 0, sizeof(*r));
}

typedef struct point {
    uint64_t h;
    uint32_t idx;
} point;

static int by_hash(const void *a, const void *b)
{
    uint64_t x = ((const point *)a)->h, y = ((const point *)b)->h;
    return x < y ? -1 : x > y;
}

int ig_ring_build(ig_ring *r, ig_worker *const *ws, int n, int vnodes)
{
    memset(r, 0, sizeof(*r));
    if (n <= 0 || vnodes <= 0)
        return 0;
    size_t total = (size_t)n * (size_t)vnodes;
    point *p = malloc(sizeof(*p) * total);
    r->point = malloc(sizeof(uint64_t) * total);
    r->idx = malloc(sizeof(uint32_t) * total);
    if (!p || !r->point || !r->idx) {
        free(p);
        ig_ring_free(r);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        uint64_t base = XXH3_64bits(ws[i]->url, strlen(ws[i]->url));
        for (int v = 0; v < vnodes; v++) {
            uint64_t h = XXH3_64bits_withSeed(&v, sizeof(v), base);
            p[(size_t)i * (size_t)vnodes + (size_t)v] = (point){h, (uint32_t)i};
        }
    }
    qsort(p, total, sizeof(*p), by_hash);
    for (size_t k = 0; k < total; k++) {
        r->point[k] = p[k].h;
        r->idx[k] = p[k].idx;
    }
    r->n = (int)total;
    free(p);
    return 0;
}
