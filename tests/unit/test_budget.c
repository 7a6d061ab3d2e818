/* The shared byte budget: growth within the cap, refusal past it while
 * others hold some, a lone holder always growing, release. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <cmocka.h>

#include "../../src/core/ig_budget.h"

static void grow_and_refuse(void **state)
{
    ig_budget b = {.cap = 100};
    size_t x = 0, y = 0;
    assert_int_equal(ig_budget_grow(&b, &x, 60), 0);
    assert_int_equal(x, 60);
    assert_int_equal(ig_budget_grow(&b, &y, 50), -EAGAIN); /* 110 > 100 */
    assert_int_equal(y, 0);
    assert_int_equal(ig_budget_grow(&b, &y, 40), 0);
    assert_int_equal(atomic_load(&b.used), 100);
    assert_int_equal(ig_budget_grow(&b, &x, 61), -EAGAIN);
    assert_int_equal(ig_budget_grow(&b, &x, 60), 0); /* no growth asked */
    ig_budget_release(&b, &y);
    assert_int_equal(y, 0);
    assert_int_equal(ig_budget_grow(&b, &x, 100), 0);
    ig_budget_release(&b, &x);
    assert_int_equal(atomic_load(&b.used), 0);
}

static void a_lone_holder_may_pass_the_cap(void **state)
{
    ig_budget b = {.cap = 100};
    size_t x = 0, y = 0;
    assert_int_equal(ig_budget_grow(&b, &x, 500), 0); /* nobody else: progress */
    assert_int_equal(ig_budget_grow(&b, &x, 900), 0);
    assert_int_equal(ig_budget_grow(&b, &y, 1), -EAGAIN);
    ig_budget_release(&b, &x);
    assert_int_equal(ig_budget_grow(&b, &y, 1), 0);
}

static void unlimited(void **state)
{
    ig_budget b = {.cap = 0};
    size_t x = 0, y = 0;
    assert_int_equal(ig_budget_grow(&b, &x, 1u << 30), 0);
    assert_int_equal(ig_budget_grow(&b, &y, 1u << 30), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grow_and_refuse),
        cmocka_unit_test(a_lone_holder_may_pass_the_cap),
        cmocka_unit_test(unlimited),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
