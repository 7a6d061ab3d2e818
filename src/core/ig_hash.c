#include "ig_hash.h"

#include <string.h>
#include <sys/random.h>

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

uint64_t ig_hash_seed(void)
{
    uint64_t s;
    if (getrandom(&s, sizeof(s), 0) != sizeof(s))
        s = (uint64_t)(uintptr_t)&s ^ 0x5bd1e995;
    return s | 1;
}

uint64_t ig_hash_keyed(uint64_t seed, const char *s, size_t n)
{
    uint64_t h = seed ^ (n * 0x9e3779b97f4a7c15ULL);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = mix(h ^ v);
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    return mix(h ^ v ^ 0xa5);
}
