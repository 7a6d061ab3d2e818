/* Probe connections (--upstream-process-header): a new connection to a
 * pre-fork server is sent a GET of the worker's health path before it
 * carries any request, so the process that accepted it is known by the time
 * a request needs it, and no client waits on a connection that landed on a
 * busy process. The pool decides when (ig_pool_take); this runs the
 * exchange and hands the connection back (ig_pool_probe_done).
 *
 * Threads: the connection's loop thread. */
#ifndef IG_PROBE_H
#define IG_PROBE_H
#include "ig_pool.h"

/** Open a probe connection to w; 0, or a negative libuv code. */
int ig_probe_start(ig_upstream_ctx *ctx, ig_worker *w);
#endif
