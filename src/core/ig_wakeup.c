#include "ig_wakeup.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void on_readable(uv_poll_t *p, int status, int events)
{
    ig_wakeup *w = p->data;
    uint64_t n;
    (void)status;
    (void)events;
    /* reset the counter first: a send that lands after this wakes us again */
    while (read(w->fd, &n, sizeof(n)) < 0 && errno == EINTR)
        ;
    w->cb(w);
}

int ig_wakeup_init(uv_loop_t *loop, ig_wakeup *w, void (*cb)(ig_wakeup *w))
{
    w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->fd < 0)
        return -errno;
    w->cb = cb;
    int rc = uv_poll_init(loop, &w->poll, w->fd);
    if (rc) {
        close(w->fd);
        w->fd = -1;
        return rc;
    }
    w->poll.data = w;
    return uv_poll_start(&w->poll, UV_READABLE, on_readable);
}

void ig_wakeup_send(ig_wakeup *w)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already huge: a wake-up is pending anyway */
    while (write(w->fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

void ig_wakeup_close(ig_wakeup *w)
{
    if (!uv_is_closing((uv_handle_t *)&w->poll))
        uv_close((uv_handle_t *)&w->poll, NULL);
}

void ig_wakeup_release(ig_wakeup *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
}
