/* Reading the workers' own Prometheus pages (text format 0.0.4): merging
 * several into one page, as sgl-model-gateway's /engine_metrics does, and
 * summing one metric for /get_loads. Pure functions. */
#ifndef IG_PROM_H
#define IG_PROM_H
#include <stddef.h>

#include "../core/ig_buf.h"

/**
 * pages[0..n) as one page: every sample gains label="values[i]" (first among
 * its labels), each family keeps one HELP and one TYPE line and all of its
 * samples together, families in the order first seen. A histogram's or
 * summary's _bucket, _sum, _count and _created samples stay with it.
 * 0, or -ENOMEM (out is then incomplete).
 */
int ig_prom_merge(const char *const *pages, const size_t *lens, const char *label, const char *const *values,
                  int n, ig_buf *out);
/** Samples of metric name in page (any labels); their sum in *sum. */
int ig_prom_sum(const char *page, size_t len, const char *name, double *sum);
#endif
