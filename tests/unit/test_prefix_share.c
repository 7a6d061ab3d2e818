/* The shared prefix index's rings and messages: what one gateway's threads
 * put comes out of take as one message, in order, across threads; apply
 * inserts it into the index under the local worker id; a full ring drops
 * and counts; a malformed message is refused without reading past its end;
 * the wake-up fires once per batch, not once per put. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/balance/ig_prefix.h"
#include "../../src/balance/ig_prefix_share.h"

static int wakes;
static void on_wake(void *arg)
{
    (void)arg;
    wakes++;
}

static uint64_t resolve_plus_one(uint64_t url_key, void *arg)
{
    (void)arg;
    return url_key == 999 ? 0 : url_key + 1; /* 999: not a worker here */
}

static void keys_of(const char *text, ig_prefix_query *q)
{
    ig_span sp = {text, strlen(text)};
    ig_prefix_hash(&sp, 1, "m", 1, q);
}

static uint64_t word(const uint8_t *b, size_t i)
{
    uint64_t v;
    memcpy(&v, b + 8 * i, 8);
    return v;
}

static void put_take_apply_round_trip(void **state)
{
    (void)state;
    static uint8_t msg[64 * 1024];
    static ig_prefix_query q;
    char text[2000];
    memset(text, 'a', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    keys_of(text, &q);
    assert_true(q.n >= 7);
    assert_int_equal(ig_prefix_init(1 << 20), 0);
    assert_int_equal(ig_prefix_share_init(2, 1 << 14, on_wake, NULL), 0);
    wakes = 0;
    ig_prefix_share_put(ig_prefix_share_outbox(0), 4, q.key, q.n);
    ig_prefix_share_put(ig_prefix_share_outbox(0), 5, q.key + 3, q.n - 3);
    ig_prefix_share_put(ig_prefix_share_outbox(1), 999, q.key, 1);
    ig_prefix_share_put(ig_prefix_share_outbox(1), 6, q.key, 0); /* nothing new: nothing sent */
    assert_int_equal(wakes, 2); /* each ring once, until the control thread starts taking */
    assert_null(ig_prefix_share_outbox(2));

    ig_prefix_share_take_start();
    size_t len = ig_prefix_share_take(msg, sizeof(msg));
    assert_int_equal(len, 8 * (1 + 2 + (size_t)q.n + 2 + (size_t)q.n - 3 + 2 + 1));
    assert_int_equal(word(msg, 0), IG_PREFIX_SHARE_MAGIC);
    assert_int_equal(word(msg, 1), 4);
    assert_int_equal(word(msg, 2), (uint64_t)q.n);
    assert_int_equal(word(msg, 3), q.key[0]);
    assert_int_equal(ig_prefix_share_take(msg + 0, sizeof(msg)), 0); /* drained */
    ig_prefix_share_put(ig_prefix_share_outbox(0), 4, q.key, 1);
    assert_int_equal(wakes, 3); /* a new batch wakes again */

    /* applied elsewhere: under the local id, unknown workers skipped */
    ig_prefix_share_take_start();
    assert_int_equal(ig_prefix_share_take(msg, sizeof(msg)), 8 * 4);
    ig_prefix_share_put(ig_prefix_share_outbox(0), 4, q.key, q.n);
    ig_prefix_share_put(ig_prefix_share_outbox(1), 999, q.key, 1);
    len = ig_prefix_share_take(msg, sizeof(msg));
    assert_int_equal(ig_prefix_share_apply(msg, len, resolve_plus_one, NULL, 1), 1); /* 999 skipped */
    ig_holders h;
    assert_int_equal(ig_prefix_match(&q, &h), q.n);
    assert_true(ig_holders_has(&h, 5)); /* url_key 4 is worker 5 here */
    assert_false(ig_holders_has(&h, 4));
    assert_int_equal(ig_prefix_share_dropped(), 0);
    ig_prefix_share_free();
    ig_prefix_free();
}

static void a_full_ring_drops_and_counts(void **state)
{
    (void)state;
    static uint64_t keys[IG_PREFIX_MAX_BLOCKS];
    static uint8_t msg[64 * 1024];
    for (int i = 0; i < IG_PREFIX_MAX_BLOCKS; i++)
        keys[i] = (uint64_t)i + 1;
    assert_int_equal(ig_prefix_share_init(1, 4096, NULL, NULL), 0);
    ig_prefix_outbox *o = ig_prefix_share_outbox(0);
    ig_prefix_share_put(o, 1, keys, IG_PREFIX_MAX_BLOCKS); /* 2050 words of 4096 */
    ig_prefix_share_put(o, 2, keys, IG_PREFIX_MAX_BLOCKS); /* no room: dropped */
    ig_prefix_share_put(o, 3, keys, 100);
    assert_int_equal(ig_prefix_share_dropped(), 1);
    /* a small message holds what fits; the rest comes in the next one, whole records only */
    assert_int_equal(ig_prefix_share_take(msg, 8 * (IG_PREFIX_MAX_BLOCKS + 3)),
                     8 * (1 + 2 + IG_PREFIX_MAX_BLOCKS));
    assert_int_equal(ig_prefix_share_take(msg, 8 * (IG_PREFIX_MAX_BLOCKS + 3)), 8 * (1 + 2 + 100));
    assert_int_equal(word(msg, 1), 3);
    /* the ring wraps: records that straddle its end come out whole */
    for (int round = 0; round < 5; round++) {
        ig_prefix_share_put(o, 7, keys, 1500);
        size_t len = ig_prefix_share_take(msg, sizeof(msg));
        assert_int_equal(len, 8 * (1 + 2 + 1500));
        assert_int_equal(word(msg, 3 + 1499), 1500);
    }
    assert_int_equal(ig_prefix_share_take(msg, 8), 0); /* too small a buffer: nothing taken */
    ig_prefix_share_free();
    assert_int_equal(ig_prefix_share_init(1, 1000, NULL, NULL), -EINVAL); /* not a power of two */
    assert_int_equal(ig_prefix_share_init(1, 1024, NULL, NULL), -EINVAL); /* smaller than one long prompt */
}

static void malformed_messages_are_refused(void **state)
{
    (void)state;
    uint64_t m[8] = {IG_PREFIX_SHARE_MAGIC, 3, 2, 11, 12, 4, 5, 0};
    assert_int_equal(ig_prefix_init(1 << 20), 0);
    assert_int_equal(ig_prefix_share_apply(m, 5 * 8, resolve_plus_one, NULL, 1), 1);
    assert_int_equal(ig_prefix_share_apply(m, 5 * 8 + 3, resolve_plus_one, NULL, 1), -EINVAL); /* not words */
    assert_int_equal(ig_prefix_share_apply(m, 4 * 8, resolve_plus_one, NULL, 1), -EINVAL);     /* cut short */
    assert_int_equal(ig_prefix_share_apply(m, 6 * 8, resolve_plus_one, NULL, 1),
                     -EINVAL); /* a lone url_key */
    assert_int_equal(ig_prefix_share_apply(m, 7 * 8, resolve_plus_one, NULL, 1),
                     -EINVAL); /* 5 keys, none there */
    uint64_t zero[3] = {IG_PREFIX_SHARE_MAGIC, 3, 0};
    assert_int_equal(ig_prefix_share_apply(zero, sizeof(zero), resolve_plus_one, NULL, 1), -EINVAL);
    uint64_t huge[3] = {IG_PREFIX_SHARE_MAGIC, 3, (uint64_t)IG_PREFIX_MAX_BLOCKS + 1};
    assert_int_equal(ig_prefix_share_apply(huge, sizeof(huge), resolve_plus_one, NULL, 1), -EINVAL);
    uint64_t wrong[3] = {0x1234, 3, 1};
    assert_int_equal(ig_prefix_share_apply(wrong, sizeof(wrong), resolve_plus_one, NULL, 1), -EINVAL);
    assert_int_equal(ig_prefix_share_apply(m, 0, resolve_plus_one, NULL, 1), -EINVAL);
    assert_int_equal(ig_prefix_share_apply(m, 8, resolve_plus_one, NULL, 1), 0); /* only the magic: empty */
    ig_prefix_free();
}

static void load_reports_round_trip(void **state)
{
    (void)state;
    uint8_t buf[256];
    uint64_t keys[3] = {11, 22, 33}, sender, k;
    uint32_t loads[3] = {0, 7, UINT32_MAX}, v;
    int n;
    size_t len = ig_load_report_encode(buf, sizeof(buf), 0xabc, keys, loads, 3);
    assert_int_equal(len, 8 * (2 + 6));
    assert_int_equal(ig_load_report_parse(buf, len, &sender, &n), 0);
    assert_int_equal(sender, 0xabc);
    assert_int_equal(n, 3);
    ig_load_report_pair(buf, 1, &k, &v);
    assert_int_equal(k, 22);
    assert_int_equal(v, 7);
    ig_load_report_pair(buf, 2, &k, &v);
    assert_int_equal(v, UINT32_MAX);
    assert_int_equal(ig_load_report_encode(buf, 16, 1, keys, loads, 0), 16);    /* nobody: still "here" */
    assert_int_equal(ig_load_report_encode(buf, 40, 1, keys, loads, 2), 0);     /* does not fit */
    assert_int_equal(ig_load_report_parse(buf, len - 8, &sender, &n), -EINVAL); /* half a pair */
    assert_int_equal(ig_load_report_parse(buf, 8, &sender, &n), -EINVAL);
    buf[0] ^= 1; /* a prefix message, or anything else, is not a report */
    assert_int_equal(ig_load_report_parse(buf, len, &sender, &n), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(put_take_apply_round_trip),
        cmocka_unit_test(a_full_ring_drops_and_counts),
        cmocka_unit_test(malformed_messages_are_refused),
        cmocka_unit_test(load_reports_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
