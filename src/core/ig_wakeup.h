/* Wake a loop from another thread: an eventfd watched by uv_poll. Unlike
 * uv_async_t it never spins: libuv's async handle busy-waits on the loop
 * side while a sender is mid-send, which burns a whole time slice when the
 * two threads share a core. */
#ifndef IG_WAKEUP_H
#define IG_WAKEUP_H
#include <uv.h>

typedef struct ig_wakeup {
    uv_poll_t poll;
    int fd;
    void (*cb)(struct ig_wakeup *w);
    void *data;
} ig_wakeup;

/** 0 or a negative errno code. cb runs on loop's thread after one or more sends. */
int ig_wakeup_init(uv_loop_t *loop, ig_wakeup *w, void (*cb)(ig_wakeup *w));
/** Any thread; coalesces. */
void ig_wakeup_send(ig_wakeup *w);
/** Loop thread: stop watching. The eventfd stays open, because another
 * thread may still be sending; ig_wakeup_release closes it. */
void ig_wakeup_close(ig_wakeup *w);
/** Close the eventfd, once no thread can send any more (after the joins). */
void ig_wakeup_release(ig_wakeup *w);
#endif
