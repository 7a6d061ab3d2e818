#include "ig_buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void ig_buf_init(ig_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

size_t ig_buf_cap_for(const ig_buf *b, size_t extra, int exact)
{
    if (b->len + extra <= b->cap || extra > b->max || b->len + extra > b->max)
        return b->cap;
    if (exact)
        return b->len + extra;
    size_t ncap = b->cap ? b->cap : 1024;
    while (ncap < b->len + extra)
        ncap *= 2;
    return ncap > b->max ? b->max : ncap;
}

static int grow(ig_buf *b, size_t extra, int exact)
{
    if (b->len + extra <= b->cap)
        return 0;
    if (extra > b->max || b->len + extra > b->max)
        return -E2BIG;
    size_t ncap = ig_buf_cap_for(b, extra, exact);
    char *p = realloc(b->data, ncap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = ncap;
    return 0;
}

int ig_buf_reserve(ig_buf *b, size_t extra)
{
    return grow(b, extra, 0);
}

int ig_buf_reserve_exact(ig_buf *b, size_t extra)
{
    return grow(b, extra, 1);
}

int ig_buf_append(ig_buf *b, const void *p, size_t n)
{
    int rc = ig_buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int ig_buf_puts(ig_buf *b, const char *s)
{
    return ig_buf_append(b, s, strlen(s));
}

int ig_buf_putu(ig_buf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return ig_buf_append(b, tmp + i, sizeof(tmp) - i);
}

void ig_buf_free(ig_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
