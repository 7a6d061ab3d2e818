/* The Prometheus page: sums the loop threads' counters (obs/ig_stats.h)
 * and reads the workers' shared ones. */
#ifndef IG_METRICS_PAGE_H
#define IG_METRICS_PAGE_H
#include "../core/ig_buf.h"
#include "../obs/ig_stats.h"
#include "../registry/ig_registry.h"

struct ig_thread;
/** Render the whole exposition. 0 or a negative errno code. */
int ig_metrics_render(ig_buf *out, struct ig_thread *threads, int nthreads, const ig_snapshot *s);
#endif
