#include "ig_freelist.h"

#include <errno.h>
#include <stdlib.h>

void ig_freelist_init(ig_freelist *f, size_t size, int max)
{
    f->head = NULL;
    f->n = 0;
    f->max = max;
    f->size = size < sizeof(void *) ? sizeof(void *) : size;
}

void *ig_freelist_get(ig_freelist *f)
{
    void *p = f->head;
    if (!p)
        return malloc(f->size);
    f->head = *(void **)p;
    f->n--;
    return p;
}

void ig_freelist_put(ig_freelist *f, void *p)
{
    if (!p)
        return;
    if (f->n >= f->max) {
        free(p);
        return;
    }
    *(void **)p = f->head;
    f->head = p;
    f->n++;
}

void ig_freelist_clear(ig_freelist *f)
{
    while (f->head) {
        void *p = f->head;
        f->head = *(void **)p;
        free(p);
    }
    f->n = 0;
}

int ig_buf_take(ig_buf *b, ig_freelist *f)
{
    if (b->data)
        return 0;
    if (!(b->data = ig_freelist_get(f)))
        return -ENOMEM;
    b->cap = f->size < b->max ? f->size : b->max;
    b->len = 0;
    return 0;
}

void ig_buf_give(ig_buf *b, ig_freelist *f)
{
    if (b->cap == f->size)
        ig_freelist_put(f, b->data);
    else
        free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
