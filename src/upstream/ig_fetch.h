/* One-shot HTTP/1.1 requests from the control side (model discovery now,
 * health checks later). Many run concurrently on one loop: a fan-out costs
 * the slowest worker's time, not the sum. */
#ifndef IG_FETCH_H
#define IG_FETCH_H
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

/* status is the HTTP status, or 0 with err set (a static string). */
typedef void (*ig_fetch_cb)(void *arg, int status, const char *body, size_t len, const char *err);

/** Start GET path against addr; cb runs exactly once. 0 or a negative errno code. */
int ig_fetch_get(uv_loop_t *loop, const struct sockaddr *addr, const char *host_header,
                 const char *path, double timeout_secs, ig_fetch_cb cb, void *arg);
#endif
