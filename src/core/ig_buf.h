/* Bounded growable byte buffer: every buffer has a hard maximum (curl's dynbuf idea). */
#ifndef IG_BUF_H
#define IG_BUF_H
#include <stddef.h>
#include <stdint.h>

typedef struct ig_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max; /* hard cap; growing past it fails with -E2BIG */
} ig_buf;

/** Initialise an empty buffer that may grow up to max bytes. */
void ig_buf_init(ig_buf *b, size_t max);
/** The capacity ig_buf_reserve(b, extra, exact) leaves b with (b->cap when it need not grow). */
size_t ig_buf_cap_for(const ig_buf *b, size_t extra, int exact);
/** Room for exactly extra more bytes, no doubling: for a size known in advance. */
int ig_buf_reserve_exact(ig_buf *b, size_t extra);
/** Make room for extra more bytes; 0, -E2BIG past the cap, -ENOMEM. */
int ig_buf_reserve(ig_buf *b, size_t extra);
/** Append bytes; 0 or a negative errno code. */
int ig_buf_append(ig_buf *b, const void *p, size_t n);
/** Append a NUL-terminated string. */
int ig_buf_puts(ig_buf *b, const char *s);
/** Append a decimal unsigned number. */
int ig_buf_putu(ig_buf *b, uint64_t v);
void ig_buf_free(ig_buf *b);
#endif
