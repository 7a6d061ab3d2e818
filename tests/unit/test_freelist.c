/* Per-thread free lists and buffers that borrow from them. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/core/ig_freelist.h"

static void reuses_then_bounds(void **state)
{
    ig_freelist f;
    ig_freelist_init(&f, 64, 2);
    void *a = ig_freelist_get(&f), *b = ig_freelist_get(&f), *c = ig_freelist_get(&f);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    memset(a, 1, 64);
    ig_freelist_put(&f, a);
    ig_freelist_put(&f, b);
    ig_freelist_put(&f, c); /* past max: freed, not kept */
    ig_freelist_put(&f, NULL);
    assert_int_equal(f.n, 2);
    void *x = ig_freelist_get(&f), *y = ig_freelist_get(&f);
    assert_true((x == a && y == b) || (x == b && y == a)); /* the kept ones come back */
    assert_int_equal(f.n, 0);
    ig_freelist_put(&f, x);
    ig_freelist_put(&f, y);
    ig_freelist_clear(&f);
    assert_int_equal(f.n, 0);
    assert_null(f.head);
}

static void buffers_borrow_and_give_back(void **state)
{
    ig_freelist f;
    ig_freelist_init(&f, 32, 4);
    ig_buf b;
    ig_buf_init(&b, 1024);
    assert_int_equal(ig_buf_take(&b, &f), 0);
    assert_int_equal(b.cap, 32);
    char *first = b.data;
    assert_int_equal(ig_buf_take(&b, &f), 0); /* has storage: unchanged */
    assert_ptr_equal(b.data, first);
    assert_int_equal(ig_buf_puts(&b, "hello"), 0);
    ig_buf_give(&b, &f);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(f.n, 1);
    assert_int_equal(ig_buf_take(&b, &f), 0);
    assert_ptr_equal(b.data, first); /* the same chunk again, empty */
    assert_int_equal(b.len, 0);
    /* grown past the chunk size: realloc'd memory goes back to malloc */
    for (int i = 0; i < 20; i++)
        assert_int_equal(ig_buf_puts(&b, "0123456789"), 0);
    assert_true(b.cap > 32);
    ig_buf_give(&b, &f);
    assert_int_equal(f.n, 0);
    ig_buf_give(&b, &f); /* nothing held: harmless */
    /* a buffer whose cap is below the chunk size takes only its cap */
    ig_buf small;
    ig_buf_init(&small, 16);
    assert_int_equal(ig_buf_take(&small, &f), 0);
    assert_int_equal(small.cap, 16);
    assert_int_equal(ig_buf_append(&small, "0123456789abcdefX", 17), -E2BIG);
    ig_buf_give(&small, &f);
    ig_freelist_clear(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reuses_then_bounds),
        cmocka_unit_test(buffers_borrow_and_give_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
