/* Where a JSON string's plain run ends (ig_json_stop.h). */
#include "ig_json_stop.h"

#include <stdatomic.h>
#include <stdint.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline int special(unsigned char c)
{
    return c == '"' || c == '\\' || c < 0x20;
}

const char *ig_json_string_stop_scalar(const char *p, const char *end)
{
    while (p < end && !special((unsigned char)*p))
        p++;
    return p;
}

#if defined(__x86_64__)
/* the bytes of v that are '"', '\\' or <= 0x1f (unsigned: max(v, 0x1f) == 0x1f) */
static inline int mask16(__m128i v)
{
    __m128i q = _mm_cmpeq_epi8(v, _mm_set1_epi8('"'));
    __m128i b = _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'));
    __m128i c = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
    return _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(q, b), c));
}

static const char *stop_sse2(const char *p, const char *end)
{
    while (end - p >= 16) {
        int m = mask16(_mm_loadu_si128((const __m128i *)(const void *)p));
        if (m)
            return p + __builtin_ctz((unsigned)m);
        p += 16;
    }
    return ig_json_string_stop_scalar(p, end);
}

__attribute__((target("avx2"))) static const char *stop_avx2(const char *p, const char *end)
{
    const __m256i quote = _mm256_set1_epi8('"'), bs = _mm256_set1_epi8('\\'), ctl = _mm256_set1_epi8(0x1f);
    while (end - p >= 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)p);
        __m256i hit = _mm256_or_si256(_mm256_or_si256(_mm256_cmpeq_epi8(v, quote), _mm256_cmpeq_epi8(v, bs)),
                                      _mm256_cmpeq_epi8(_mm256_max_epu8(v, ctl), ctl));
        unsigned m = (unsigned)_mm256_movemask_epi8(hit);
        if (m)
            return p + __builtin_ctz(m);
        p += 32;
    }
    return stop_sse2(p, end);
}

typedef const char *(*stop_fn)(const char *, const char *);
static _Atomic(stop_fn) chosen;

static const char *stop_first(const char *p, const char *end)
{
    __builtin_cpu_init();
    stop_fn f = __builtin_cpu_supports("avx2") ? stop_avx2 : stop_sse2;
    atomic_store_explicit(&chosen, f, memory_order_relaxed);
    return f(p, end);
}

const char *ig_json_string_stop(const char *p, const char *end)
{
    if (end - p < 16) /* short strings (keys, roles): no call through the pointer */
        return ig_json_string_stop_scalar(p, end);
    stop_fn f = atomic_load_explicit(&chosen, memory_order_relaxed);
    return (f ? f : stop_first)(p, end);
}
#else
const char *ig_json_string_stop(const char *p, const char *end)
{
    return ig_json_string_stop_scalar(p, end);
}
#endif
